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
//!               [--task-tool NAME]... [--task-ttl SECS] [--task-poll-interval MS]
//!               [--overload-response error|tool-result] [--http-overload-status 200|429|503]
//!               [--shared-limit redis://HOST:PORT/DB --shared-key NAME [--lease SECS]
//!                [--shared-fail open|closed] [--shared-replicas N] [--shared-timeout SECS]]
//! ```
//!
//! `--overload-response tool-result` answers a refused `tools/call` with an
//! `isError` tool result (text, `structuredContent`, the SEP-3313 `_meta`)
//! instead of the JSON-RPC error; `--http-overload-status 429|503` (HTTP
//! only) answers a refused POST with that status and `Retry-After`, the same
//! JSON-RPC body, via `mcp_backpressure::rmcp::OverloadStatusLayer`.
//!
//! With `--shared-limit` (feature `redis`), every `simple_server` naming the
//! same Redis and key shares one limit (see `mcp_backpressure::shared`).
//!
//! Tools: `sleep {"ms": integer}` sleeps, then returns text; `echo {"message": string}`
//! returns the message; `db {"ms": integer}` models a database that saturates
//! (a call takes `ms * max(1, n / C)` with `n` calls of it running). Over HTTP
//! it serves Streamable HTTP at `/mcp`. A tool named by `--task-tool` runs as
//! a background task (SEP-2663) for clients that declare the tasks extension,
//! and keeps its slot until its work ends. Logs go to stderr (`RUST_LOG` sets the
//! level; `info` by default).

mod common;

use clap::Parser;
use common::Transport;
use mcp_backpressure::Limiter;
use mcp_backpressure::rmcp::{Backpressure, BackpressureOptions, OverloadResponse, OverloadStatus};

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
    #[command(flatten)]
    tasks: common::TaskArgs,
    #[command(flatten)]
    answers: AnswerArgs,
    #[cfg(feature = "redis")]
    #[command(flatten)]
    shared: SharedArgs,
}

/// How a refusal is answered (the proxy's names).
#[derive(Debug, clap::Args)]
struct AnswerArgs {
    /// How a refused tools/call is answered: `error` (the JSON-RPC error) or
    /// `tool-result` (an isError result a model can read; other guarded
    /// methods keep the error).
    #[arg(long, value_name = "error|tool-result", default_value = "error", value_parser = parse_overload_response)]
    overload_response: OverloadResponse,
    /// With --transport http: the HTTP status of a refused POST, 200, 429 or
    /// 503 (with Retry-After in whole seconds and the same JSON-RPC body).
    #[arg(long, value_name = "200|429|503", default_value = "200")]
    http_overload_status: OverloadStatus,
}

fn parse_overload_response(value: &str) -> Result<OverloadResponse, String> {
    match value {
        "error" => Ok(OverloadResponse::JsonRpcError),
        "tool-result" => Ok(OverloadResponse::ToolResult),
        _ => Err(format!("expected error or tool-result, got {value:?}")),
    }
}

/// The shared limit's flags (the proxy's names).
#[cfg(feature = "redis")]
#[derive(Debug, clap::Args)]
struct SharedArgs {
    /// Share the limit with every server naming the same Redis and
    /// --shared-key: redis://[user:password@]HOST:PORT/DB.
    #[arg(long, value_name = "URL", requires = "shared_key")]
    shared_limit: Option<String>,
    /// The shared limit's name: servers naming the same key share one limit.
    #[arg(long, value_name = "NAME", requires = "shared_limit")]
    shared_key: Option<String>,
    /// Seconds a slot stays held in Redis without renewal (>= 0.2, and >= 4 x the shared timeout) [default: 10].
    #[arg(long, value_name = "SECONDS", requires = "shared_limit")]
    lease: Option<f64>,
    /// While Redis is unreachable: open (local share) or closed (reject) [default: open].
    #[arg(long, value_name = "open|closed", requires = "shared_limit")]
    shared_fail: Option<mcp_backpressure::shared::FailMode>,
    /// The replicas the fail-open share divides max-concurrent by [default: replicas seen].
    #[arg(long, value_name = "N", requires = "shared_limit")]
    shared_replicas: Option<usize>,
    /// Seconds a Redis command may take before Redis counts as unreachable [default: 1].
    #[arg(long, value_name = "SECONDS", requires = "shared_limit")]
    shared_timeout: Option<f64>,
}

#[cfg(feature = "redis")]
impl SharedArgs {
    /// The shared limit asked for, checked; exits with a usage error naming
    /// the flag when a value is invalid.
    fn shared_or_exit(&self) -> Option<mcp_backpressure::shared::SharedLimit> {
        use clap::CommandFactory;
        use std::time::Duration;
        let (url, key) = (self.shared_limit.as_ref()?, self.shared_key.as_ref()?);
        let exit = |flag: &str, why: String| -> ! {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("{why} (flag --{flag})"),
                )
                .exit()
        };
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .unwrap_or_else(|e| exit(flag, format!("invalid {flag}: {e}")))
        };
        let mut shared = mcp_backpressure::shared::SharedLimit::new(url, key);
        if let Some(lease) = self.lease {
            shared = shared.with_lease(seconds("lease", lease));
        }
        if let Some(fail) = self.shared_fail {
            shared = shared.with_fail(fail);
        }
        if let Some(n) = self.shared_replicas {
            shared = shared.with_replicas(n);
        }
        if let Some(timeout) = self.shared_timeout {
            shared = shared.with_timeout(seconds("shared-timeout", timeout));
        }
        if let Err(error) = shared.validate() {
            exit(&error.setting().replace('_', "-"), error.to_string());
        }
        Some(shared)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.saturation.install();
    cli.tasks.install::<Cli>();
    let config = cli.limits.config_or_exit::<Cli>();
    let options = cli
        .limits
        .options()
        .with_overload_response(cli.answers.overload_response);
    let status = cli.answers.http_overload_status;
    #[allow(unused_mut)]
    let mut builder = Limiter::builder(config).on_overload(|o| {
        let s = &o.snapshot;
        tracing::warn!(reason = %o.reason, scope = %o.scope, active = s.active, queued = s.queued, "overloaded");
    });
    #[cfg(feature = "redis")]
    let shared = cli.shared.shared_or_exit();
    #[cfg(feature = "redis")]
    if let Some(shared) = &shared {
        builder = builder.shared(shared.clone());
    }
    // Built on the runtime: a shared limit starts its background tasks there.
    common::run_main(|| async move {
        #[cfg(feature = "redis")]
        if let Some(shared) = &shared {
            tracing::info!(
                key = %shared.key,
                lease = ?shared.lease,
                fail = shared.fail.as_str(),
                "the limit is shared through Redis"
            );
        }
        run(cli.serve, builder.build()?, options, status).await
    })
}

async fn run(
    serve: common::TransportArgs,
    limiter: Limiter,
    options: BackpressureOptions,
    status: OverloadStatus,
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
        overload_response = ?options.overload_response,
        http_overload_status = %status,
        "starting"
    );
    match serve.transport {
        Transport::Stdio => serve_stdio(limiter.clone(), options).await?,
        Transport::Http => {
            let server =
                common::serve_http_with_options(serve.bind, limiter.clone(), options, status)
                    .await?;
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
    let guarded = server.service().clone();
    let reason = server.waiting().await?;
    tracing::info!(?reason, task_holds = ?guarded.task_holds(), "stdio session ended");
    Ok(())
}
