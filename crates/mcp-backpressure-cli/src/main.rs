//! `mcp-backpressure`: protect any MCP server with a proxy, and measure MCP
//! servers with an open-loop load generator.
#![forbid(unsafe_code)]

mod load;
mod proxy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mcp-backpressure", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Put admission control in front of any MCP server (stdio or Streamable HTTP).
    Proxy(proxy::ProxyArgs),
    /// Drive an MCP server with tool calls and report goodput and latency.
    Load(Box<load::LoadArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, never to stdout: stdout may be an MCP channel.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Load(args) => load::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mcp-backpressure: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
