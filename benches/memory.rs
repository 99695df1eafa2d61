//! Bytes per parked waiter at 10k, 100k and 1M, counted by a counting global
//! allocator (`stats_alloc`: no `unsafe` needed here), next to the floor
//! (`tokio::time::timeout(d, Semaphore::acquire())`).
//!
//! ```text
//! bench/core.sh                 # with the other benches
//! cargo bench --bench memory    # 10k, 100k, 1M
//! ```
//!
//! - **B/waiter**: N `acquire()` futures, each boxed and polled once (queued,
//!   timer registered): heap bytes / N. That is the future itself (its size is
//!   shown) plus its share of the limiter's queue (the floor's waiter node is
//!   inside its future, so it has no share).
//! - **B/task**: the same as N spawned tokio tasks, tokio's task header
//!   included (the same for both).
//!
//! - **client keys**: 100 000 waiters, each from a distinct client key
//!   (`Request::client`): heap bytes per key while they wait (future, queue
//!   entry, client entry, key string, lane) minus the same without keys, and
//!   the heap the limiter still holds once every one of them left (idle keys
//!   are forgotten).
//!
//! Deterministic: one round.
#![cfg(not(loom))]

mod common;

use std::alloc::System;

use common::{Gate, NEVER, Which, park_boxed, park_tasks, sizes_and_rounds};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::runtime::Builder;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not freed since `region` began (stats_alloc
/// already counts a reallocation's growth in `bytes_allocated`).
fn live_bytes(region: &Region<'_, System>) -> f64 {
    let s = region.change();
    s.bytes_allocated as f64 - s.bytes_deallocated as f64
}

/// Bytes per parked boxed waiter, and the size of its future.
fn per_waiter(which: Which, n: usize) -> (f64, usize) {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::new(which, n, NEVER);
    let _held = rt.block_on(gate.hold());
    let _enter = rt.enter();
    fn measure<F: std::future::Future>(n: usize, make: impl FnMut() -> F) -> (f64, usize) {
        let mut futures = Vec::with_capacity(n);
        let region = Region::new(GLOBAL);
        park_boxed(n, &mut futures, make);
        (live_bytes(&region) / n as f64, std::mem::size_of::<F>())
    }
    match &gate {
        Gate::Limiter(l) => measure(n, || l.acquire()),
        Gate::Tokio(s, t) => measure(n, || tokio::time::timeout(*t, s.acquire())),
    }
}

/// Bytes per parked spawned task.
fn per_task(which: Which, n: usize) -> f64 {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::new(which, n, NEVER);
    let _held = rt.block_on(gate.hold());
    let region = Region::new(GLOBAL);
    let _countdown = park_tasks(&rt, &gate, n, true);
    // The countdown's one allocation is shared by all; negligible.
    live_bytes(&region) / n as f64
}

/// Bytes per waiting client key (over an anonymous waiter), and bytes the
/// limiter keeps once every key is idle. Each phase on a fresh limiter.
fn per_client_key(n: usize) -> (f64, f64, f64) {
    use mcp_backpressure::{Limiter, LimiterConfig, Request};

    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let limiter = || {
        let limiter = Limiter::new(
            LimiterConfig::new(1)
                .with_queue_size(n)
                .with_max_tracked_keys(n)
                .with_queue_timeout(NEVER),
        )
        .expect("config");
        let held = rt.block_on(limiter.acquire()).expect("the only slot");
        (limiter, held)
    };
    let keys: Vec<String> = (0..n).map(|i| format!("client-{i:06}")).collect();
    let anonymous = {
        let (limiter, _held) = limiter();
        let mut futures = Vec::with_capacity(n);
        let region = Region::new(GLOBAL);
        park_boxed(n, &mut futures, || limiter.acquire());
        live_bytes(&region) / n as f64
    };
    let (limiter, _held) = limiter();
    let mut futures = Vec::with_capacity(n);
    let region = Region::new(GLOBAL);
    let mut next = keys.iter();
    park_boxed(n, &mut futures, || {
        limiter.acquire_with(Request::new().client(next.next().expect("a key")))
    });
    let keyed = live_bytes(&region) / n as f64;
    assert_eq!(limiter.snapshot().tracked_keys, n);
    futures.clear();
    assert_eq!(limiter.snapshot().tracked_keys, 0);
    let kept = live_bytes(&region);
    (keyed, keyed - anonymous, kept)
}

fn main() {
    let (sizes, _) = sizes_and_rounds();
    println!("memory: heap bytes per parked waiter");
    println!(
        "{:>9}  {:<26} {:>10} {:>8} {:>10}",
        "waiters", "implementation", "B/waiter", "future", "B/task"
    );
    for &n in &sizes {
        for which in Which::BOTH {
            let (bytes, size) = per_waiter(which, n);
            let task = per_task(which, n);
            println!(
                "{n:>9}  {:<26} {bytes:>10.1} {size:>8} {task:>10.1}",
                which.name()
            );
        }
    }
    let n = 100_000;
    let (keyed, per_key, kept) = per_client_key(n);
    println!("client keys: {n} waiters with distinct keys");
    println!(
        "  B/waiter with a key {keyed:.1}, of which the key {per_key:.1}; heap kept once all idle: {kept:.0} B"
    );
}
