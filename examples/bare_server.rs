//! The demo MCP server of `simple_server` *without* mcp-backpressure: the
//! baseline the benchmarks compare the wrapper against.
//!
//! ```text
//! bare_server [--transport stdio|http] [--bind 127.0.0.1:8000]
//! ```
//!
//! Same tools (`sleep {"ms": integer}`, `echo {"message": string}`), same
//! transports, same runtime and logging as `simple_server`; only the
//! `Backpressure` wrapper is missing, so every call runs at once.

mod common;

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Stdio,
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "bare_server",
    about = "The demo MCP server (tools `sleep` and `echo`) without backpressure"
)]
struct Cli {
    /// How to talk to the client.
    #[arg(long, value_enum, default_value = "stdio")]
    transport: Transport,
    /// Address to listen on with `--transport http` (Streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing::info!(transport = ?cli.transport, "starting (no backpressure)");
    match cli.transport {
        Transport::Stdio => common::serve_stdio_bare().await?,
        Transport::Http => {
            let server = common::serve_http_bare(cli.bind).await?;
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
    tracing::info!("stopped");
    Ok(())
}
