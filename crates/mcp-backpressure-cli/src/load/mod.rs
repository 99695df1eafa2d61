//! `mcp-backpressure load`: drive any MCP server (a stdio command or a
//! Streamable HTTP URL) with calls of one tool, open loop at a fixed rate or
//! closed loop with N callers, and report offered rate, goodput, rejections
//! by `data.reason`, latency percentiles (HDR histograms) and the server's
//! peak memory. `--json` prints the report as JSON.
//!
//! - [`args`]: the command line, checked into a plan;
//! - [`target`]: connecting (child process or HTTP);
//! - [`call`]: one call and how its answer is classified;
//! - [`open_loop`], [`closed_loop`]: the two drivers;
//! - [`report`]: histograms, table and JSON;
//! - [`rss`]: the server's resident memory from /proc;
//! - [`progress`]: the progress bar.

mod args;
mod call;
mod closed_loop;
mod open_loop;
mod progress;
mod report;
mod rss;
mod target;

use std::process::ExitCode;
use std::time::Duration;

pub use args::LoadArgs;
use args::{Mode, Plan};
use report::{Header, Record, Recorder, ServerMemory};
use tokio::sync::mpsc;
use tokio::time::Instant;

const RSS_INTERVAL: Duration = Duration::from_millis(500);

pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(load(&plan))?;
    if plan.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(plan: &Plan) -> anyhow::Result<report::Report> {
    let session = target::connect(&plan.target).await?;
    target::check_tool(&session, &plan.tool).await?;
    let peer = session.client.peer().clone();
    let server_pid = session.child_pid.or(plan.server_pid);
    let sampler = server_pid.map(|pid| rss::Sampler::start(pid, RSS_INTERVAL));

    let started = Instant::now();
    let (records, incoming) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(
        incoming,
        started,
        progress::Progress::new(plan.progress, plan.duration),
    ));
    let mut sent = match plan.mode {
        Mode::Open { rate } => open_loop::drive(&peer, plan, rate, started, records).await,
        Mode::Closed { concurrency } => {
            closed_loop::drive(&peer, plan, concurrency, started, records).await
        }
    };
    // Wait for the answers still due, then give up on the rest.
    let drained = tokio::time::timeout(plan.drain_timeout, async {
        while sent.in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sent.in_flight.len(),
            "drain timeout: abandoning the calls still in flight"
        );
        sent.in_flight.shutdown().await;
    }
    let recorder = collector.await?;

    let server = match (server_pid, sampler) {
        (Some(pid), Some(sampler)) => {
            let peak_rss_kb = rss::peak_kb(pid);
            Some(ServerMemory {
                pid,
                peak_rss_kb,
                rss_kb_samples: sampler.finish().await,
                sample_interval_s: RSS_INTERVAL.as_secs_f64(),
            })
        }
        _ => None,
    };
    let header = Header {
        target: session.describe.clone(),
        tool: plan.tool.clone(),
        mode: match plan.mode {
            Mode::Open { .. } => "open",
            Mode::Closed { .. } => "closed",
        },
        rate: match plan.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed { .. } => None,
        },
        concurrency: match plan.mode {
            Mode::Open { .. } => None,
            Mode::Closed { concurrency } => Some(concurrency),
        },
        duration_s: plan.duration.as_secs_f64(),
        count: plan.count,
    };
    let report = recorder.finish(header, sent.sent, sent.window_end, server);
    // Close the session (a stdio child is shut down and reaped).
    if let Err(error) = tokio::time::timeout(Duration::from_secs(10), session.client.cancel()).await
    {
        tracing::warn!(%error, "the session did not close in time");
    }
    Ok(report)
}

/// Feeds every record to the histograms and keeps the progress bar moving.
async fn collect(
    mut incoming: mpsc::UnboundedReceiver<Record>,
    started: Instant,
    progress: progress::Progress,
) -> Recorder {
    let mut recorder = Recorder::new(started);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            record = incoming.recv() => match record {
                Some(record) => recorder.record(record),
                None => break,
            },
            _ = ticks.tick() => progress.update(
                started.elapsed(),
                format!("ok {} rejected {} errors {}", recorder.ok(), recorder.rejected(), recorder.errors()),
            ),
        }
    }
    progress.finish();
    recorder
}
