//! A demo MCP server guarded by mcp-backpressure.
//!
//! ```text
//! simple_server [--transport stdio|http] [--bind 127.0.0.1:8000] [--max-concurrent 5]
//!               [--queue-size 10] [--queue-timeout 30]
//!               [--tool-limit NAME=N]... [--tool-weight NAME=W]... [--default-tool-limit N]
//!               [--client-limit N] [--client-key session|header:NAME]
//!               [--limit fixed|aimd|gradient2|vegas] [--min-limit N] [--max-limit N]
//!               [--queue-discipline fifo|codel|adaptive-lifo] [--max-tracked-keys N]
//!               [--db-capacity C] [--db-capacity-after SECS=C2]
//! ```
//!
//! Tools: `sleep {"ms": integer}` sleeps, then returns text; `echo {"message": string}`
//! returns the message; `db {"ms": integer}` models a database that saturates
//! (a call takes `ms * max(1, n / C)` with `n` calls of it running). Over HTTP
//! it serves Streamable HTTP at `/mcp`. Logs go to stderr (`RUST_LOG` sets the
//! level; `info` by default).

mod common;

use clap::Parser;
use common::Transport;
use mcp_backpressure::Limiter;
use mcp_backpressure::rmcp::{Backpressure, BackpressureOptions};

#[derive(Debug, Parser)]
#[command(
    name = "simple_server",
    about = "A demo MCP server (tools `sleep`, `echo` and `db`) guarded by mcp-backpressure"
)]
struct Cli {
    #[command(flatten)]
    serve: common::TransportArgs,
    #[command(flatten)]
    limits: common::LimitArgs,
    #[command(flatten)]
    saturation: common::SaturationArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.saturation.install();
    let config = cli.limits.config_or_exit::<Cli>();
    let options = cli.limits.options();
    let limiter = Limiter::builder(config)
        .on_overload(|o| {
            let s = &o.snapshot;
            tracing::warn!(reason = %o.reason, scope = %o.scope, active = s.active, queued = s.queued, "overloaded");
        })
        .build()
        .expect("validated above");
    common::run_main(|| run(cli.serve, limiter, options))
}

async fn run(
    serve: common::TransportArgs,
    limiter: Limiter,
    options: BackpressureOptions,
) -> anyhow::Result<()> {
    let config = limiter.config();
    tracing::info!(
        max_concurrent = config.max_concurrent,
        queue_size = config.queue_size,
        queue_timeout = ?config.queue_timeout,
        limit = %config.limit,
        tools = config.tools.len(),
        client_limit = ?config.client_limit,
        discipline = config.discipline.as_str(),
        transport = ?serve.transport,
        "starting"
    );
    match serve.transport {
        Transport::Stdio => serve_stdio(limiter.clone(), options).await?,
        Transport::Http => {
            let server =
                common::serve_http_with_options(serve.bind, limiter.clone(), options).await?;
            common::serve_until_interrupted(server).await?
        }
    }
    tracing::info!(metrics = ?limiter.snapshot(), "stopped");
    Ok(())
}

/// Serves the guarded demo server over stdio until the client closes stdin.
/// `Backpressure::serve` (not rmcp's `ServiceExt::serve`) makes the transport
/// disconnect-aware: calls still queued when stdin closes leave the queue at
/// once instead of being started during rmcp's 5 s shutdown drain.
async fn serve_stdio(limiter: Limiter, options: BackpressureOptions) -> anyhow::Result<()> {
    let server = Backpressure::with_options(common::DemoServer::new(), limiter, options)
        .serve(rmcp::transport::stdio())
        .await?;
    let reason = server.waiting().await?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}
