//! Shared by benches/scale.rs and benches/memory.rs: the two ways of parking
//! a bounded wait on a taken slot, side by side.
//!
//! - `mcp_backpressure`: `Limiter::acquire` with one slot and a queue.
//! - the floor: `tokio::time::timeout(d, Semaphore::acquire())`, the same
//!   bounded FIFO wait built from tokio's parts.
#![allow(dead_code)] // Each bench uses part of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use mcp_backpressure::{Limiter, LimiterConfig};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, Semaphore};

pub const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
pub const NEVER: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Which {
    Limiter,
    TokioFloor,
}

impl Which {
    pub const BOTH: [Which; 2] = [Which::Limiter, Which::TokioFloor];

    pub fn name(self) -> &'static str {
        match self {
            Which::Limiter => "mcp_backpressure",
            Which::TokioFloor => "tokio timeout(semaphore)",
        }
    }
}

/// One slot, and a bounded wait for it.
#[derive(Clone)]
pub enum Gate {
    Limiter(Limiter),
    Tokio(Arc<Semaphore>, Duration),
}

impl Gate {
    pub fn new(which: Which, n: usize, timeout: Duration) -> Self {
        match which {
            Which::Limiter => Gate::Limiter(
                Limiter::new(
                    LimiterConfig::new(1)
                        .with_queue_size(n)
                        .with_queue_timeout(timeout),
                )
                .expect("config"),
            ),
            Which::TokioFloor => Gate::Tokio(Arc::new(Semaphore::new(1)), timeout),
        }
    }

    /// Waits for the slot; `true` when it was granted (and is given back).
    pub async fn wait(self) -> bool {
        match self {
            Gate::Limiter(l) => l.acquire().await.is_ok(),
            Gate::Tokio(s, t) => matches!(tokio::time::timeout(t, s.acquire()).await, Ok(Ok(_))),
        }
    }

    /// Takes the only slot; it is held until the returned guard is dropped.
    pub async fn hold(&self) -> Box<dyn Send> {
        match self {
            Gate::Limiter(l) => Box::new(l.acquire().await.expect("the only slot")),
            Gate::Tokio(s, _) => Box::new(s.clone().acquire_owned().await.expect("open")),
        }
    }
}

/// `n` boxed futures from `make`, each polled once with a no-op waker (so it
/// is queued and its timer registered). Must run inside a runtime context.
pub fn park_boxed<F: Future>(
    n: usize,
    futures: &mut Vec<Pin<Box<F>>>,
    mut make: impl FnMut() -> F,
) {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        let mut future = Box::pin(make());
        assert!(future.as_mut().poll(&mut cx).is_pending(), "parks");
        futures.push(future);
    }
}

/// Counts finished tasks; wakes the waiter when all are done.
pub struct Countdown {
    left: AtomicUsize,
    done: Notify,
}

impl Countdown {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(n),
            done: Notify::new(),
        })
    }

    pub fn tick(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    pub async fn wait(&self) {
        while self.left.load(Ordering::Acquire) > 0 {
            let notified = self.done.notified();
            if self.left.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    }
}

/// Spawns `n` tasks waiting on `gate` and runs them until every one is
/// parked; they tick the returned countdown when done.
pub fn park_tasks(rt: &Runtime, gate: &Gate, n: usize, expect_granted: bool) -> Arc<Countdown> {
    let countdown = Countdown::new(n);
    let parked = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        for _ in 0..n {
            let wait = gate.clone().wait();
            let countdown = countdown.clone();
            let parked = parked.clone();
            tokio::spawn(async move {
                let mut wait = std::pin::pin!(wait);
                let mut first = true;
                let granted = std::future::poll_fn(|cx| {
                    let poll = wait.as_mut().poll(cx);
                    if std::mem::take(&mut first) && poll.is_pending() {
                        parked.fetch_add(1, Ordering::Release);
                    }
                    poll
                })
                .await;
                assert_eq!(granted, expect_granted);
                countdown.tick();
            });
        }
        while parked.load(Ordering::Acquire) < n {
            tokio::task::yield_now().await;
        }
    });
    countdown
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo bench` passes `--bench`; the numbers among the arguments are the
/// largest size and the number of rounds.
pub fn sizes_and_rounds() -> (Vec<usize>, usize) {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let max = numbers.first().copied().unwrap_or(1_000_000);
    let rounds = numbers.get(1).copied().unwrap_or(3).max(1);
    (SIZES.into_iter().filter(|&n| n <= max).collect(), rounds)
}
