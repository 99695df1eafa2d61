//! A demo MCP server guarded by mcp-backpressure.
//!
//! ```text
//! simple_server [--transport stdio|http] [--bind 127.0.0.1:8000] [--max-concurrent 5]
//!               [--queue-size 10] [--queue-timeout 30]
//! ```
//!
//! Tools: `sleep {"ms": integer}` sleeps, then returns text; `echo {"message": string}`
//! returns the message. Over HTTP it serves Streamable HTTP at `/mcp`. Logs go to
//! stderr (`RUST_LOG` sets the level; `info` by default).

mod common;

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use mcp_backpressure::Limiter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Stdio,
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "simple_server",
    about = "A demo MCP server (tools `sleep` and `echo`) guarded by mcp-backpressure"
)]
struct Cli {
    /// How to talk to the client.
    #[arg(long, value_enum, default_value = "stdio")]
    transport: Transport,
    /// Address to listen on with `--transport http` (Streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    #[command(flatten)]
    limits: common::LimitArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = cli.limits.config_or_exit::<Cli>();
    let limiter = Limiter::builder(config)
        .on_overload(|o| {
            let s = &o.snapshot;
            tracing::warn!(reason = %o.reason, active = s.active, queued = s.queued, "overloaded");
        })
        .build()
        .expect("validated above");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, limiter)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, limiter: Limiter) -> anyhow::Result<()> {
    let config = limiter.config();
    tracing::info!(
        max_concurrent = config.max_concurrent,
        queue_size = config.queue_size,
        queue_timeout = ?config.queue_timeout,
        transport = ?cli.transport,
        "starting"
    );
    match cli.transport {
        Transport::Stdio => common::serve_stdio(limiter.clone()).await?,
        Transport::Http => {
            let server = common::serve_http(cli.bind, limiter.clone()).await?;
            tracing::info!("listening on http://{}/mcp", server.addr);
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    result?;
                    tracing::info!("interrupted, shutting down");
                    server.shutdown.cancel();
                }
                () = server.shutdown.cancelled() => {}
            }
            server.task.await??;
        }
    }
    tracing::info!(metrics = ?limiter.snapshot(), "stopped");
    Ok(())
}
