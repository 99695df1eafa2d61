//! Criterion benchmarks of the limiter, each next to its natural floor in the
//! same run: `tokio::sync::Semaphore` (the bare primitive) and tower's
//! `ConcurrencyLimit` / `LoadShed` (the nearest competitor in Rust).
//!
//! ```text
//! bench/core.sh                      # this and benches/scale.rs, release mode
//! cargo bench --bench limiter        # this file only
//! cargo bench --bench limiter -- uncontended
//! ```
//!
//! Every measurement runs a tight loop inside one `block_on` (`iter_custom`),
//! so the runtime's entry cost is not part of the figure.
//!
//! - `uncontended`: acquire + release with a free slot, on a current-thread
//!   runtime.
//! - `reject`: the answer when every slot is busy — no queue (`concurrency_limit`)
//!   and a full queue (`queue_full`) — next to `Semaphore::try_acquire` failing
//!   and tower's `LoadShed` shedding, and next to an admission.
//! - `contended`: 32 tasks on a 2-worker runtime share 4 slots; each holds its
//!   slot across a yield, so every release hands the slot to a queued task.
//!   Time per acquire + release; next to the semaphore alone and with a
//!   `tokio::time::timeout` around the wait (the limiter's queue has one).
//! - `dialect`: what each overload dialect costs to write: the JSON-RPC
//!   error response, serialized, next to the `isError` tool result (its text,
//!   `structuredContent`, and the SEP-3313 `_meta` with a fresh correlation
//!   id and an RFC 3339 time), serialized.
#![cfg(not(loom))]

use std::convert::Infallible;
use std::future::{Future, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::{Limiter, LimiterConfig, Outcome, OverloadReason, Request};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::{Service, ServiceExt, service_fn};

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn two_workers() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn limiter(max_concurrent: usize, queue_size: usize) -> Limiter {
    Limiter::new(LimiterConfig::new(max_concurrent).with_queue_size(queue_size)).expect("config")
}

/// A no-op service, as tower wraps it.
fn noop_service() -> impl Service<
    (),
    Response = (),
    Error = Infallible,
    Future = std::future::Ready<Result<(), Infallible>>,
> + Clone {
    service_fn(|()| ready(Ok::<(), Infallible>(())))
}

/// Runs `op` `iters` times inside one `block_on`; the elapsed time.
fn timed_loop<F, Fut>(rt: &Runtime, iters: u64, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        start.elapsed()
    })
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
}

fn uncontended(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("uncontended");
    configure(&mut group);

    let sem = Semaphore::new(64);
    group.bench_function("tokio_semaphore", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                drop(black_box(sem.acquire().await.expect("open")));
            })
        })
    });

    let owned = Arc::new(Semaphore::new(64));
    group.bench_function("tokio_semaphore_owned", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                drop(black_box(
                    owned.clone().acquire_owned().await.expect("open"),
                ));
            })
        })
    });

    let lim = limiter(64, 0);
    group.bench_function("mcp_backpressure", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                drop(black_box(lim.acquire().await.expect("a free slot")));
            })
        })
    });

    // The issue's case: keys compiled in, a limit that takes samples (AIMD),
    // an anonymous request.
    let adaptive =
        Limiter::new(LimiterConfig::new(64).with_limit(LimitAlgorithm::Aimd, 1, Some(128)))
            .expect("config");
    group.bench_function("mcp_backpressure_aimd", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                let mut permit = adaptive.acquire().await.expect("a free slot");
                permit.set_outcome(Outcome::Success);
                drop(black_box(permit));
            })
        })
    });

    // Keyed: a tool with its own limit and weight, a client key under a
    // per-client limit (two hash lookups and the client's entry created and
    // dropped on every call).
    let keyed = Limiter::new(
        LimiterConfig::new(64)
            .with_limit(LimitAlgorithm::Aimd, 1, Some(128))
            .with_tool(
                "search",
                ToolConfig::new().with_max_concurrent(32).with_weight(2),
            )
            .with_client_limit(16),
    )
    .expect("config");
    let request = Request::new().tool("search").client("agent-7");
    group.bench_function("mcp_backpressure_keyed", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                let mut permit = keyed.acquire_with(request).await.expect("a free slot");
                permit.set_outcome(Outcome::Success);
                drop(black_box(permit));
            })
        })
    });

    // Not a limiter: the two clock reads a timed admission pays for its
    // service-time sample (tokio's `Instant::now`, i.e. CLOCK_MONOTONIC).
    group.bench_function("two_clock_reads", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                black_box(tokio::time::Instant::now());
                black_box(tokio::time::Instant::now());
            })
        })
    });

    let mut svc = ConcurrencyLimit::new(noop_service(), 64);
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let ready = svc.ready().await.expect("infallible");
                    ready.call(()).await.expect("infallible");
                    black_box(&svc);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn reject(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("reject");
    configure(&mut group);

    // The floor: a semaphore with no permit left says no.
    let sem = Semaphore::new(1);
    let _held = sem.try_acquire().expect("one permit");
    group.bench_function("tokio_semaphore_try_acquire", |b| {
        b.iter(|| black_box(sem.try_acquire().is_err()))
    });

    // tower: LoadShed over a ConcurrencyLimit whose only slot is taken.
    let mut shed = LoadShed::new(ConcurrencyLimit::new(noop_service(), 1));
    let mut holder = shed.clone();
    rt.block_on(async {
        let _ = holder.ready().await.expect("the only slot");
    });
    group.bench_function("tower_load_shed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let ready = shed.ready().await.expect("load shed is always ready");
                    black_box(ready.call(()).await.expect_err("shed"));
                }
                start.elapsed()
            })
        })
    });

    // An admission, for "the reject path is no slower than an admit".
    let free = limiter(1, 0);
    group.bench_function("mcp_backpressure_admit", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                drop(black_box(free.acquire().await.expect("a free slot")));
            })
        })
    });

    let no_queue = limiter(1, 0);
    let _running = rt.block_on(no_queue.acquire()).expect("the only slot");
    group.bench_function("mcp_backpressure_concurrency_limit", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                let overload = no_queue.acquire().await.expect_err("full");
                debug_assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
                black_box(overload);
            })
        })
    });

    let full_queue = limiter(1, 1);
    let _running2 = rt.block_on(full_queue.acquire()).expect("the only slot");
    let parked = {
        let full_queue = full_queue.clone();
        rt.spawn(async move { full_queue.acquire().await.map(drop) })
    };
    rt.block_on(async {
        while full_queue.snapshot().queued < 1 {
            tokio::task::yield_now().await;
        }
    });
    group.bench_function("mcp_backpressure_queue_full", |b| {
        b.iter_custom(|iters| {
            timed_loop(&rt, iters, || async {
                let overload = full_queue.acquire().await.expect_err("full");
                debug_assert_eq!(overload.reason, OverloadReason::QueueFull);
                black_box(overload);
            })
        })
    });
    parked.abort();
    group.finish();
}

const TASKS: u64 = 32;
const SLOTS: usize = 4;

/// Spreads `iters` operations over [`TASKS`] tasks on `rt`; each operation is
/// `op(task)`. Returns the wall time until all are done.
fn spread<F, Fut>(rt: &Runtime, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let n = iters / TASKS + u64::from(t < iters % TASKS);
            let op = op.clone();
            tasks.spawn(async move {
                for _ in 0..n {
                    op().await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let rt = two_workers();
    let mut group = c.benchmark_group("contended");
    configure(&mut group);

    let sem = Arc::new(Semaphore::new(SLOTS));
    group.bench_function("tokio_semaphore", |b| {
        b.iter_custom(|iters| {
            let sem = sem.clone();
            spread(&rt, iters, move || {
                let sem = sem.clone();
                async move {
                    let permit = sem.acquire().await.expect("open");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
    });

    // The like-for-like floor: a queued wait bounded by a timeout, as the
    // limiter's queue is (queue_timeout), built from tokio's parts.
    let sem_t = Arc::new(Semaphore::new(SLOTS));
    group.bench_function("tokio_semaphore_timeout", |b| {
        b.iter_custom(|iters| {
            let sem = sem_t.clone();
            spread(&rt, iters, move || {
                let sem = sem.clone();
                async move {
                    let permit = tokio::time::timeout(Duration::from_secs(30), sem.acquire())
                        .await
                        .expect("in time")
                        .expect("open");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
    });

    let lim = limiter(SLOTS, TASKS as usize);
    group.bench_function("mcp_backpressure", |b| {
        b.iter_custom(|iters| {
            let lim = lim.clone();
            spread(&rt, iters, move || {
                let lim = lim.clone();
                async move {
                    let permit = lim.acquire().await.expect("room in the queue");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
    });

    let svc = ConcurrencyLimit::new(
        service_fn(|()| async {
            tokio::task::yield_now().await;
            Ok::<(), Infallible>(())
        }),
        SLOTS,
    );
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| {
            let svc = svc.clone();
            spread(&rt, iters, move || {
                let mut svc = svc.clone();
                async move {
                    let ready = svc.ready().await.expect("infallible");
                    ready.call(()).await.expect("infallible");
                }
            })
        })
    });
    group.finish();
}

/// The refusal written as the error and as the tool result, each serialized
/// to the bytes a transport sends.
fn dialect(c: &mut Criterion) {
    let rt = current_thread();
    let full = limiter(1, 0);
    let overload = rt.block_on(async {
        let _held = full.acquire().await.expect("the only slot");
        full.acquire().await.expect_err("no slot, no queue")
    });
    let id = serde_json::json!(7);
    let mut group = c.benchmark_group("dialect");
    configure(&mut group);
    group.bench_function("error_response", |b| {
        b.iter(|| {
            let response =
                mcp_backpressure::jsonrpc::error_response(&id, black_box(&overload), -31429);
            serde_json::to_vec(&response).unwrap()
        });
    });
    group.bench_function("tool_result", |b| {
        b.iter(|| {
            let overload = black_box(&overload);
            let failure = mcp_backpressure::ToolFailure::of(overload);
            let result = mcp_backpressure::jsonrpc::tool_result(overload, &failure);
            let response = serde_json::json!({"jsonrpc": "2.0", "id": &id, "result": result});
            serde_json::to_vec(&response).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, uncontended, reject, contended, dialect);
criterion_main!(benches);
