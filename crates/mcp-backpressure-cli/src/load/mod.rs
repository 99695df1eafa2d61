//! `mcp-backpressure load`: drive any MCP server (a stdio command or a
//! Streamable HTTP URL) with calls of one tool, open loop at a fixed rate or
//! closed loop with N callers, and report offered rate, goodput, rejections
//! by `data.reason` (and `data.scope`), latency percentiles (HDR histograms)
//! and the server's peak memory. `--json` prints the report as JSON.
//!
//! With `--stream` (Streamable HTTP only), several streams run side by side,
//! each on its own MCP session with its own tool, load and client identity
//! (an HTTP header), and each is reported on its own.
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

use anyhow::Context;

pub use args::LoadArgs;
use args::{Mode, Plan, Stream};
use report::{Header, Record, Recorder, Report, ServerMemory, Sink, StreamsReport};
use tokio::sync::mpsc;
use tokio::time::Instant;

const RSS_INTERVAL: Duration = Duration::from_millis(500);

pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (mut reports, server) = runtime.block_on(load(&plan))?;
    if plan.named_streams {
        let report = StreamsReport {
            target: reports
                .first()
                .map(|r| r.header.target.clone())
                .unwrap_or_default(),
            client_header: plan
                .streams
                .first()
                .and_then(|s| s.client.as_ref())
                .map(|(name, _)| name.to_string())
                .unwrap_or_default(),
            duration_s: plan.duration.as_secs_f64(),
            streams: reports,
            server,
        };
        if plan.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
    } else {
        let mut report = reports.pop().expect("one stream");
        report.server = server;
        if plan.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a stream's tool was given, for errors.
fn tool_flag(stream: &Stream) -> String {
    match &stream.name {
        Some(name) => format!("--stream {name} (tool)"),
        None => "--tool".to_owned(),
    }
}

/// Runs every stream side by side: one report per stream, in the plan's
/// order, and the server's memory when its pid is known.
async fn load(plan: &Plan) -> anyhow::Result<(Vec<Report>, Option<ServerMemory>)> {
    // Every session is open and has its tool before the first call.
    let mut sessions = Vec::with_capacity(plan.streams.len());
    for stream in &plan.streams {
        let connected = target::connect(&plan.target, stream.client.as_ref()).await;
        let session = match &stream.name {
            Some(name) => connected.with_context(|| format!("stream {name}"))?,
            None => connected?,
        };
        for one in &session {
            target::check_tool(one, &stream.tool, &tool_flag(stream)).await?;
        }
        sessions.push(session);
    }
    let server_pid = sessions
        .first()
        .and_then(|s| s.first())
        .and_then(|s| s.child_pid)
        .or(plan.server_pid);
    let sampler = server_pid.map(|pid| rss::Sampler::start(pid, RSS_INTERVAL));

    let started = Instant::now();
    let (records, incoming) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(
        incoming,
        plan.streams.len(),
        started,
        progress::Progress::new(plan.progress, plan.duration),
    ));
    let drivers =
        plan.streams
            .iter()
            .zip(&sessions)
            .enumerate()
            .map(|(index, (stream, session))| {
                let peers: Vec<_> = session.iter().map(|s| s.client.peer().clone()).collect();
                let sink = Sink::new(index, records.clone());
                async move {
                    match stream.mode {
                        Mode::Open { rate } => {
                            open_loop::drive(&peers, plan, stream, rate, started, sink).await
                        }
                        Mode::Closed { concurrency } => {
                            closed_loop::drive(&peers, plan, stream, concurrency, started, sink)
                                .await
                        }
                    }
                }
            });
    let mut sent = futures_util::future::join_all(drivers).await;
    drop(records);
    // Wait for the answers still due, then give up on the rest.
    let drained = tokio::time::timeout(plan.drain_timeout, async {
        for stream in &mut sent {
            while stream.in_flight.join_next().await.is_some() {}
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sent.iter().map(|s| s.in_flight.len()).sum::<usize>(),
            "drain timeout: abandoning the calls still in flight"
        );
        for stream in &mut sent {
            stream.in_flight.shutdown().await;
        }
    }
    let recorders = collector.await?;

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
    let reports = plan
        .streams
        .iter()
        .zip(recorders)
        .zip(&sent)
        .zip(&sessions)
        .map(|(((stream, recorder), sent), session)| {
            let header = Header {
                stream: stream.name.clone(),
                client: stream.client_id(),
                target: session
                    .iter()
                    .map(|s| s.describe.as_str())
                    .collect::<Vec<_>>()
                    .join(" + "),
                tool: stream.tool.clone(),
                mode: match stream.mode {
                    Mode::Open { .. } => "open",
                    Mode::Closed { .. } => "closed",
                },
                rate: match stream.mode {
                    Mode::Open { rate } => Some(rate),
                    Mode::Closed { .. } => None,
                },
                concurrency: match stream.mode {
                    Mode::Open { .. } => None,
                    Mode::Closed { concurrency } => Some(concurrency),
                },
                duration_s: plan.duration.as_secs_f64(),
                count: stream.count,
            };
            recorder.finish(header, sent.sent, sent.window_end, None)
        })
        .collect();
    // Close the sessions (a stdio child is shut down and reaped).
    for session in sessions.into_iter().flatten() {
        if let Err(error) =
            tokio::time::timeout(Duration::from_secs(10), session.client.cancel()).await
        {
            tracing::warn!(%error, "the session did not close in time");
        }
    }
    Ok((reports, server))
}

/// Feeds every record to its stream's histograms and keeps the progress bar
/// moving.
async fn collect(
    mut incoming: mpsc::UnboundedReceiver<(usize, Record)>,
    streams: usize,
    started: Instant,
    progress: progress::Progress,
) -> Vec<Recorder> {
    let mut recorders: Vec<Recorder> = (0..streams).map(|_| Recorder::new(started)).collect();
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            record = incoming.recv() => match record {
                Some((stream, record)) => recorders[stream].record(record),
                None => break,
            },
            _ = ticks.tick() => progress.update(
                started.elapsed(),
                format!(
                    "ok {} rejected {} errors {}",
                    recorders.iter().map(Recorder::ok).sum::<u64>(),
                    recorders.iter().map(Recorder::rejected).sum::<u64>(),
                    recorders.iter().map(Recorder::errors).sum::<u64>(),
                ),
            ),
        }
    }
    progress.finish();
    recorders
}
