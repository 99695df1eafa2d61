//! The load simulation: many concurrent tool calls against a guarded server,
//! over a real transport, with a table of what happened.
//!
//! ```text
//! cargo run --release --example load_simulation
//! cargo run --release --example load_simulation -- --transport stdio --calls 60 --queue-timeout 0.8
//! ```
//!
//! By default: 30 concurrent `sleep` calls of 500 ms against a server limited
//! to 5 at once with a queue of 10 (timeout 30 s), over Streamable HTTP on
//! 127.0.0.1. `--transport stdio` runs the server as a child process (this
//! same program, started with `--serve-stdio`).

mod common;

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mcp_backpressure::{Limiter, OverloadData};
use rmcp::model::{CallToolRequestParams, ErrorData};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceError, ServiceExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Stdio,
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "load_simulation",
    about = "Fire concurrent tool calls at a guarded MCP server and report what happened"
)]
struct Cli {
    /// Transport between client and server.
    #[arg(long, value_enum, default_value = "http")]
    transport: Transport,
    /// Concurrent calls to fire.
    #[arg(long, default_value_t = 30)]
    calls: usize,
    /// How long each call's tool runs, in milliseconds.
    #[arg(long, default_value_t = 500)]
    tool_ms: u64,
    /// The server's limits.
    #[command(flatten)]
    limits: common::LimitArgs,
    /// Run as the stdio server (used by `--transport stdio`).
    #[arg(long, hide = true)]
    serve_stdio: bool,
}

impl Cli {
    fn server_args(&self) -> Vec<String> {
        let l = &self.limits;
        vec![
            "--serve-stdio".into(),
            format!("--max-concurrent={}", l.max_concurrent),
            format!("--queue-size={}", l.queue_size),
            format!("--queue-timeout={}", l.queue_timeout),
        ]
    }
}

/// What one call came back with, and when.
enum Outcome {
    Ok,
    Overloaded(OverloadData, ErrorData),
    Failed(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Validates the flags before anything starts.
    let limiter = Limiter::new(cli.limits.config_or_exit::<Cli>())?;
    if cli.serve_stdio {
        return common::serve_stdio(limiter).await;
    }
    let mut http_server = None;
    let (client, where_): (RunningService<RoleClient, ()>, String) = match cli.transport {
        Transport::Http => {
            let server = common::serve_http("127.0.0.1:0".parse()?, limiter.clone()).await?;
            let url = format!("http://{}/mcp", server.addr);
            http_server = Some(server);
            let client = ().serve(StreamableHttpClientTransport::from_uri(url.as_str())).await?;
            (client, format!("Streamable HTTP at {url}"))
        }
        Transport::Stdio => {
            let exe = std::env::current_exe()?;
            let args = cli.server_args();
            let child =
                TokioChildProcess::new(tokio::process::Command::new(&exe).configure(|c| {
                    c.args(&args).env("RUST_LOG", "warn");
                }))?;
            (().serve(child).await?, "stdio (child process)".to_string())
        }
    };

    println!("mcp-backpressure load simulation");
    println!(
        "  server: max_concurrent={} queue_size={} queue_timeout={}s, over {where_}",
        cli.limits.max_concurrent, cli.limits.queue_size, cli.limits.queue_timeout
    );
    println!(
        "  load:   {} concurrent calls of `sleep` ({} ms each)\n",
        cli.calls, cli.tool_ms
    );

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..cli.calls {
        let peer = client.peer().clone();
        let ms = cli.tool_ms;
        calls.spawn(async move {
            let began = Instant::now();
            let outcome = call_sleep(&peer, ms).await;
            (outcome, began.elapsed())
        });
    }
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut results = Vec::with_capacity(cli.calls);
    while let Some(joined) = calls.join_next().await {
        results.push(joined?);
        if progress {
            eprint!("\r  {}/{} calls answered", results.len(), cli.calls);
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    let wall = started.elapsed();

    report(&results, wall);
    // Only the stdio server is out of process; the HTTP one shares our limiter.
    if let Some(server) = http_server {
        let s = limiter.snapshot();
        println!(
            "\nserver metrics: admitted {} completed {} rejected {} (concurrency_limit {}, queue_full {}, queue_timeout {}), active {} queued {}",
            s.admitted,
            s.completed,
            s.total_rejected,
            s.rejected_concurrency_limit,
            s.rejected_queue_full,
            s.rejected_queue_timeout,
            s.active,
            s.queued
        );
        client.cancel().await?;
        server.shutdown.cancel();
        server.task.await??;
    } else {
        client.cancel().await?;
    }
    Ok(())
}

async fn call_sleep(peer: &Peer<RoleClient>, ms: u64) -> Outcome {
    let arguments = serde_json::json!({ "ms": ms });
    let params = CallToolRequestParams::new("sleep")
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    match peer.call_tool(params).await {
        Ok(result) if result.is_error != Some(true) => Outcome::Ok,
        Ok(result) => Outcome::Failed(format!("tool error: {:?}", result.content)),
        Err(ServiceError::McpError(error)) => {
            match error
                .data
                .clone()
                .map(serde_json::from_value::<OverloadData>)
            {
                Some(Ok(data)) => Outcome::Overloaded(data, error),
                _ => Outcome::Failed(format!("{} {}", error.code.0, error.message)),
            }
        }
        Err(other) => Outcome::Failed(other.to_string()),
    }
}

fn report(results: &[(Outcome, Duration)], wall: Duration) {
    let mut ok = Vec::new();
    let mut rejected: Vec<(&'static str, Vec<Duration>)> =
        ["concurrency_limit", "queue_full", "queue_timeout"]
            .map(|r| (r, Vec::new()))
            .into();
    let mut failed = Vec::new();
    let mut example: Option<&ErrorData> = None;
    for (outcome, latency) in results {
        match outcome {
            Outcome::Ok => ok.push(*latency),
            Outcome::Overloaded(data, error) => {
                example.get_or_insert(error);
                if let Some((_, v)) = rejected
                    .iter_mut()
                    .find(|(r, _)| *r == data.reason.as_str())
                {
                    v.push(*latency);
                }
            }
            Outcome::Failed(message) => failed.push(message.clone()),
        }
    }
    println!(
        "  {:<28} {:>6} {:>10} {:>10}",
        "outcome", "calls", "p50", "p99"
    );
    println!("  {:-<28} {:->6} {:->10} {:->10}", "", "", "", "");
    row("succeeded", &mut ok);
    for (reason, latencies) in &mut rejected {
        row(&format!("rejected: {reason}"), latencies);
    }
    println!("  {:<28} {:>6}", "other errors", failed.len());
    println!("\n  wall time: {:.2} s", wall.as_secs_f64());
    for message in failed.iter().take(3) {
        println!("  error: {message}");
    }
    match example {
        Some(error) => println!(
            "\none overload error, as the client received it:\n{}",
            serde_json::to_string_pretty(error).unwrap_or_default()
        ),
        None => println!("\nno call was rejected"),
    }
}

fn row(label: &str, latencies: &mut [Duration]) {
    latencies.sort_unstable();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        format!("{:.1} ms", latencies[i].as_secs_f64() * 1000.0)
    };
    println!(
        "  {label:<28} {:>6} {:>10} {:>10}",
        latencies.len(),
        pct(0.50),
        pct(0.99)
    );
}
