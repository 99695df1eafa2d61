//! Random histories against a real Redis: after every step, once the
//! background releases and cancels have landed, Redis's counts equal what
//! the test holds (no counter lies), no limit is exceeded, and nobody waits
//! who could run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use tokio::sync::oneshot;

use crate::redis::RedisServer;
use crate::support::{replica, shared};

const LIMIT: usize = 3;
const QUEUE: usize = 4;
const TOOL_A_CAP: usize = 1;
const CLIENT_CAP: usize = 2;
const TOOLS: [Option<&str>; 3] = [None, Some("a"), Some("b")];
const CLIENTS: [Option<&str>; 3] = [None, Some("x"), Some("y")];

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        replica: usize,
        tool: usize,
        client: usize,
    },
    Release(Index),
    Cancel(Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..3usize, 0..3usize)
            .prop_map(|(replica, tool, client)| Op::Acquire { replica, tool, client }),
        2 => any::<Index>().prop_map(Op::Release),
        1 => any::<Index>().prop_map(Op::Cancel),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Rejected(OverloadReason),
    Done,
    Cancelled,
}

struct Call {
    tool: usize,
    client: usize,
    status: Arc<Mutex<Status>>,
    release: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Call {
    fn status(&self) -> Status {
        *self.status.lock()
    }
    fn cost(&self) -> usize {
        if self.tool == 2 { 2 } else { 1 }
    }
}

fn config() -> LimiterConfig {
    LimiterConfig::new(LIMIT)
        .with_queue_size(QUEUE)
        .with_queue_timeout(Duration::from_secs(60))
        .with_tool("a", ToolConfig::new().with_max_concurrent(TOOL_A_CAP))
        .with_tool("b", ToolConfig::new().with_weight(2))
        .with_client_limit(CLIENT_CAP)
}

struct Figures {
    in_use: usize,
    held: usize,
    queued: usize,
}

fn redis_figures(server: &RedisServer, key: &str) -> Figures {
    let int = |reply: String| -> usize { reply.trim_start_matches(':').parse().unwrap_or(0) };
    Figures {
        in_use: int(server.command(&["HGET", &format!("{{{key}}}:use"), "n"])),
        held: int(server.command(&["ZCARD", &format!("{{{key}}}:held")])),
        queued: int(server.command(&["ZCARD", &format!("{{{key}}}:queue")])),
    }
}

/// Waits until every call has settled and Redis agrees with the test.
async fn quiesce(
    server: &RedisServer,
    key: &str,
    replicas: &[Limiter],
    calls: &[Call],
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<&Call> = calls
            .iter()
            .filter(|c| c.status() == Status::Running)
            .collect();
        let waiting = calls
            .iter()
            .filter(|c| c.status() == Status::Waiting)
            .count();
        let in_use: usize = running.iter().map(|c| c.cost()).sum();
        let waiting_here: usize = replicas.iter().map(|l| shared(l).waiting).sum();
        let f = redis_figures(server, key);
        let state = (f.in_use, f.held, f.queued, waiting_here);
        let want = (in_use, running.len(), waiting, waiting);
        if state == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Redis/replicas (in use, leases, queued, waiting) = {state:?}, the test holds {want:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn check_limits(calls: &[Call]) -> Result<(), String> {
    let running: Vec<&Call> = calls
        .iter()
        .filter(|c| c.status() == Status::Running)
        .collect();
    let used: usize = running.iter().map(|c| c.cost()).sum();
    let tool_a = running.iter().filter(|c| c.tool == 1).count();
    let mut per_client: HashMap<usize, usize> = HashMap::new();
    for c in &running {
        *per_client.entry(c.client).or_default() += c.cost().min(CLIENT_CAP);
    }
    if used > LIMIT || tool_a > TOOL_A_CAP || per_client.values().any(|&u| u > CLIENT_CAP) {
        return Err(format!(
            "a limit is exceeded: used {used}, tool a {tool_a}, clients {per_client:?}"
        ));
    }
    // Nobody waits who could run, unless someone is stuck on the global
    // limit alone (the stall rule: a heavy call is not overtaken).
    let fits_caps = |c: &Call| {
        (c.tool != 1 || tool_a < TOOL_A_CAP)
            && per_client.get(&c.client).copied().unwrap_or(0) + c.cost().min(CLIENT_CAP)
                <= CLIENT_CAP
    };
    let waiting: Vec<&Call> = calls
        .iter()
        .filter(|c| c.status() == Status::Waiting)
        .collect();
    let stalled = waiting
        .iter()
        .any(|c| fits_caps(c) && used + c.cost() > LIMIT);
    if !stalled
        && let Some(c) = waiting
            .iter()
            .find(|c| fits_caps(c) && used + c.cost() <= LIMIT)
    {
        return Err(format!(
            "a call waits that could run: tool {} client {} (used {used})",
            c.tool, c.client
        ));
    }
    Ok(())
}

async fn run_history(server: &RedisServer, case: usize, ops: Vec<Op>) -> Result<(), String> {
    let key = format!("inv{case}");
    let replicas: Vec<Limiter> = (0..2).map(|_| replica(server, &key, config())).collect();
    let mut calls: Vec<Call> = Vec::new();
    let mut cancelled_waiting = 0u64;
    for op in ops {
        match op {
            Op::Acquire {
                replica,
                tool,
                client,
            } => {
                let limiter = replicas[replica].clone();
                let status = Arc::new(Mutex::new(Status::Waiting));
                let (tx, rx) = oneshot::channel::<()>();
                let before: usize = replicas.iter().map(|l| shared(l).waiting).sum();
                let task = tokio::spawn({
                    let status = status.clone();
                    async move {
                        let mut request = Request::new();
                        if let Some(t) = TOOLS[tool] {
                            request = request.tool(t);
                        }
                        if let Some(c) = CLIENTS[client] {
                            request = request.client(c);
                        }
                        match limiter.acquire_with(request).await {
                            Ok(permit) => {
                                *status.lock() = Status::Running;
                                let _ = rx.await;
                                *status.lock() = Status::Done;
                                drop(permit);
                            }
                            Err(overload) => *status.lock() = Status::Rejected(overload.reason),
                        }
                    }
                });
                // Let it reach a state: answered, or waiting in Redis.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let now: usize = replicas.iter().map(|l| shared(l).waiting).sum();
                    if *status.lock() != Status::Waiting || now == before + 1 {
                        break;
                    }
                    if Instant::now() > deadline {
                        let f = redis_figures(server, &key);
                        return Err(format!(
                            "an acquire neither answered nor queued: status {:?}, waiting {before} -> {now}, redis (in use {}, held {}, queued {}), replicas {:?}",
                            *status.lock(),
                            f.in_use,
                            f.held,
                            f.queued,
                            replicas.iter().map(shared).collect::<Vec<_>>()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                calls.push(Call {
                    tool,
                    client,
                    status,
                    release: Some(tx),
                    task,
                });
            }
            Op::Release(i) => {
                let running: Vec<usize> = (0..calls.len())
                    .filter(|&i| calls[i].status() == Status::Running)
                    .collect();
                if running.is_empty() {
                    continue;
                }
                let c = &mut calls[running[i.index(running.len())]];
                let _ = c.release.take().unwrap().send(());
                let deadline = Instant::now() + Duration::from_secs(5);
                while c.status() != Status::Done {
                    if Instant::now() > deadline {
                        return Err("a released call did not end".into());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Op::Cancel(i) => {
                let waiting: Vec<usize> = (0..calls.len())
                    .filter(|&i| calls[i].status() == Status::Waiting)
                    .collect();
                if waiting.is_empty() {
                    continue;
                }
                let c = &mut calls[waiting[i.index(waiting.len())]];
                c.task.abort();
                let _ = (&mut c.task).await;
                let mut status = c.status.lock();
                if *status == Status::Waiting {
                    *status = Status::Cancelled;
                    cancelled_waiting += 1;
                }
            }
        }
        quiesce(server, &key, &replicas, &calls).await?;
        check_limits(&calls)?;
    }
    // The counters of the replicas add up to what happened.
    let count = |f: fn(&Status) -> bool| calls.iter().filter(|c| f(&c.status())).count() as u64;
    let admitted: u64 = replicas.iter().map(|l| l.snapshot().admitted).sum();
    let rejected: u64 = replicas.iter().map(|l| l.snapshot().total_rejected).sum();
    let cancelled: u64 = replicas
        .iter()
        .map(|l| l.snapshot().cancelled_in_queue)
        .sum();
    let ran = count(|s| matches!(s, Status::Running | Status::Done));
    let refused = count(|s| matches!(s, Status::Rejected(_)));
    if (admitted, rejected, cancelled) != (ran, refused, cancelled_waiting) {
        return Err(format!(
            "replica counters (admitted, rejected, cancelled) {:?} != {:?}",
            (admitted, rejected, cancelled),
            (ran, refused, cancelled_waiting)
        ));
    }
    for c in calls.iter_mut() {
        if let Some(tx) = c.release.take() {
            let _ = tx.send(());
        }
        c.task.abort();
    }
    Ok(())
}

#[test]
fn random_histories_keep_redis_and_the_replicas_consistent() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        // A failing step costs a quiescence timeout (5 s): keep shrinking short.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime
            .block_on(run_history(&server, n, ops))
            .map_err(TestCaseError::fail)
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = result {
        panic!("{e}");
    }
}
