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

use clap::Parser;
use common::Transport;

#[derive(Debug, Parser)]
#[command(
    name = "bare_server",
    about = "The demo MCP server (tools `sleep` and `echo`) without backpressure"
)]
struct Cli {
    #[command(flatten)]
    serve: common::TransportArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    common::run_main(|| run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let serve = cli.serve;
    tracing::info!(transport = ?serve.transport, "starting (no backpressure)");
    match serve.transport {
        Transport::Stdio => common::serve_stdio_bare().await?,
        Transport::Http => {
            common::serve_until_interrupted(common::serve_http_bare(serve.bind).await?).await?
        }
    }
    tracing::info!("stopped");
    Ok(())
}
