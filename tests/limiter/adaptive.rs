//! Adaptive limits driven through the limiter: outcomes feed them honestly,
//! and a changed limit takes effect at once.

use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::{Limiter, LimiterConfig, Outcome, Request};
use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::support::assert_consistent;

fn aimd(max_concurrent: usize, max_limit: usize) -> Limiter {
    Limiter::new(
        LimiterConfig::new(max_concurrent)
            .with_queue_size(10)
            .with_limit(LimitAlgorithm::Aimd, 1, Some(max_limit)),
    )
    .unwrap()
}

/// An overload outcome backs the limit off; running calls keep their slots,
/// and nobody new is admitted until the count is under the new limit.
#[tokio::test(start_paused = true)]
async fn a_dropped_outcome_lowers_the_limit_without_dropping_calls() {
    let limiter = aimd(4, 4);
    let mut first = limiter.acquire().await.unwrap(); // timed
    let others = [
        limiter.acquire().await.unwrap(),
        limiter.acquire().await.unwrap(),
        limiter.acquire().await.unwrap(),
    ];
    first.set_outcome(Outcome::Dropped);
    drop(first);
    // 4 · 0.9 → 3, with 3 still running: full, none dropped.
    let s = limiter.snapshot();
    assert_eq!((s.max_concurrent, s.running), (3, 3), "{s:?}");
    let mut waiting = task::spawn(limiter.acquire());
    assert_pending!(waiting.poll());
    drop(others);
    let _held1 = assert_ready_ok!(waiting.poll());
    assert_consistent(&limiter);
}

/// A permit dropped without an outcome teaches the limit nothing (it used
/// to count as a success).
#[tokio::test(start_paused = true)]
async fn no_outcome_means_no_sample() {
    let limiter = aimd(2, 8);
    for _ in 0..20 {
        let held = [
            limiter.acquire().await.unwrap(),
            limiter.acquire().await.unwrap(),
        ];
        drop(held);
    }
    assert_eq!(limiter.snapshot().max_concurrent, 2);
}

/// A raised limit is pushed: the release that raises it serves one more
/// waiter on the spot, not at the next release.
#[tokio::test(start_paused = true)]
async fn a_raised_limit_serves_waiters_at_once() {
    let limiter = aimd(2, 8);
    let held = [
        limiter.acquire().await.unwrap(),
        limiter.acquire().await.unwrap(),
    ];
    let mut w: Vec<_> = (0..3).map(|_| task::spawn(limiter.acquire())).collect();
    for f in &mut w {
        assert_pending!(f.poll());
    }
    drop(held); // untimed: no sample; two waiters take the two slots
    let mut p0 = assert_ready_ok!(w[0].poll());
    let _p1 = assert_ready_ok!(w[1].poll());
    assert_pending!(w[2].poll());
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Timed (it waited), a success at full use: AIMD 2 → 3, and the freed
    // slot plus the new one serve the last waiter and leave one free.
    p0.set_outcome(Outcome::Success);
    drop(p0);
    let _held2 = assert_ready_ok!(w[2].poll());
    let s = limiter.snapshot();
    assert_eq!((s.max_concurrent, s.running), (3, 2), "{s:?}");
    assert!(limiter.acquire().await.is_ok());
}

/// A tool can have its own adaptive limit; its current value is reported.
#[tokio::test(start_paused = true)]
async fn a_tool_limit_can_adapt_on_its_own() {
    let limiter = Limiter::new(
        LimiterConfig::new(10).with_tool(
            "db",
            ToolConfig::new()
                .with_max_concurrent(4)
                .with_limit(LimitAlgorithm::Aimd, 1, Some(4)),
        ),
    )
    .unwrap();
    let db = Request::new().tool("db");
    let mut p = limiter.acquire_with(db).await.unwrap(); // timed
    p.set_outcome(Outcome::Dropped);
    drop(p);
    let tools = limiter.tool_snapshots();
    assert_eq!(tools[0].tool, "db");
    assert_eq!(tools[0].limit, Some(3));
    // The global limit did not move.
    assert_eq!(limiter.snapshot().max_concurrent, 10);
}

/// Unless `max_limit` is set, an adaptive limit never exceeds the configured
/// `max_concurrent`.
#[tokio::test(start_paused = true)]
async fn the_configured_limit_is_a_ceiling_by_default() {
    let limiter = Limiter::new(LimiterConfig::new(2).with_queue_size(4).with_limit(
        LimitAlgorithm::Aimd,
        1,
        None,
    ))
    .unwrap();
    for _ in 0..40 {
        let mut a = limiter.acquire().await.unwrap();
        let mut b = limiter.acquire().await.unwrap();
        a.set_outcome(Outcome::Success);
        b.set_outcome(Outcome::Success);
    }
    assert_eq!(limiter.snapshot().max_concurrent, 2);
}
