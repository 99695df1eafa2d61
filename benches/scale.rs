//! The limiter at scale: 10k, 100k and 1M parked waiters, next to the floor
//! (`tokio::time::timeout(d, Semaphore::acquire())`, the same bounded wait
//! built from tokio's parts) in the same run. Bytes per waiter are measured
//! by benches/memory.rs (a counting allocator would slow these timings).
//!
//! ```text
//! bench/core.sh                          # with the criterion and memory benches
//! cargo bench --bench scale              # this file: 10k, 100k, 1M, 3 rounds
//! cargo bench --bench scale -- 100000 5  # sizes up to 100k, 5 rounds
//! ```
//!
//! For each size N and each round (the two implementations interleaved), on a
//! current-thread runtime:
//!
//! - **time out**: N tasks parked on a paused clock, all with the same
//!   deadline; the wall time from the moment the clock reaches it until the
//!   last of them has returned its rejection (`queue_timeout`, or tokio's
//!   `Elapsed`). Spawning and parking them is not timed.
//! - **drain**: N tasks parked behind one held slot; the wall time from
//!   releasing it until every task has been handed the slot in turn and
//!   released it again.
//! - **cancel**: N boxed waiters, polled once, then dropped: the time to drop
//!   them all (every one leaves the queue).
#![cfg(not(loom))]

mod common;

use std::pin::Pin;
use std::time::{Duration, Instant};

use common::{Gate, NEVER, Which, median, park_boxed, park_tasks, sizes_and_rounds};
use tokio::runtime::Builder;

const TIMEOUT: Duration = Duration::from_secs(1);

/// Time for `n` parked waiters with one deadline to time out, on a paused clock.
fn time_out_all(which: Which, n: usize) -> Duration {
    let rt = Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let gate = Gate::new(which, n, TIMEOUT);
    let held = rt.block_on(gate.hold());
    let countdown = park_tasks(&rt, &gate, n, false);
    let elapsed = rt.block_on(async {
        // The clock is paused: it jumps to the shared deadline as soon as the
        // runtime is idle, so the wall time from here is the time-out work.
        let started = Instant::now();
        countdown.wait().await;
        started.elapsed()
    });
    drop(held);
    elapsed
}

/// Time for `n` parked waiters to be handed one slot in turn.
fn drain_all(which: Which, n: usize) -> Duration {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::new(which, n, NEVER);
    let held = rt.block_on(gate.hold());
    let countdown = park_tasks(&rt, &gate, n, true);
    rt.block_on(async {
        let started = Instant::now();
        drop(held);
        countdown.wait().await;
        started.elapsed()
    })
}

/// Time to drop `n` parked boxed waiters.
fn cancel_all(which: Which, n: usize) -> Duration {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::new(which, n, NEVER);
    let _held = rt.block_on(gate.hold());
    let _enter = rt.enter();
    fn timed_drop<T>(futures: Vec<T>) -> Duration {
        let started = Instant::now();
        drop(futures);
        started.elapsed()
    }
    match &gate {
        Gate::Limiter(l) => {
            let mut futures = Vec::with_capacity(n);
            park_boxed(n, &mut futures, || l.acquire());
            timed_drop::<Pin<Box<_>>>(futures)
        }
        Gate::Tokio(s, t) => {
            let mut futures = Vec::with_capacity(n);
            park_boxed(n, &mut futures, || tokio::time::timeout(*t, s.acquire()));
            timed_drop::<Pin<Box<_>>>(futures)
        }
    }
}

fn main() {
    let (sizes, rounds) = sizes_and_rounds();
    println!("scale: parked waiters, median of {rounds} rounds (implementations interleaved)");
    println!(
        "{:>9}  {:<26} {:>12} {:>12} {:>12}",
        "waiters", "implementation", "time out", "drain", "cancel"
    );
    for &n in &sizes {
        let mut samples: Vec<[Vec<f64>; 3]> =
            Which::BOTH.iter().map(|_| Default::default()).collect();
        for _ in 0..rounds {
            for (which, s) in Which::BOTH.into_iter().zip(&mut samples) {
                s[0].push(time_out_all(which, n).as_secs_f64() * 1e3);
                s[1].push(drain_all(which, n).as_secs_f64() * 1e3);
                s[2].push(cancel_all(which, n).as_secs_f64() * 1e3);
            }
        }
        for (which, s) in Which::BOTH.into_iter().zip(samples) {
            let [timeout, drain, cancel] = s.map(median);
            println!(
                "{n:>9}  {:<26} {timeout:>9.1} ms {drain:>9.1} ms {cancel:>9.1} ms",
                which.name()
            );
        }
    }
}
