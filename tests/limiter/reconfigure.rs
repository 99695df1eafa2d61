//! Live reconfiguration: nothing dropped, nothing counted twice.

use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, Request};
use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::support::assert_consistent;

#[tokio::test(start_paused = true)]
async fn raising_the_limit_serves_waiters_at_once() {
    let limiter = Limiter::new(LimiterConfig::new(1).with_queue_size(5)).unwrap();
    let _running = limiter.acquire().await.unwrap();
    let mut w: Vec<_> = (0..3).map(|_| task::spawn(limiter.acquire())).collect();
    for f in &mut w {
        assert_pending!(f.poll());
    }
    limiter
        .reconfigure(LimiterConfig::new(3).with_queue_size(5))
        .unwrap();
    let _held1 = assert_ready_ok!(w[0].poll());
    let _held2 = assert_ready_ok!(w[1].poll());
    assert_pending!(w[2].poll());
    let s = limiter.snapshot();
    assert_eq!(
        (s.max_concurrent, s.running, s.queued, s.admitted),
        (3, 3, 1, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_drops_nothing_and_admits_nothing_until_under_it() {
    let limiter = Limiter::new(LimiterConfig::new(3).with_queue_size(5)).unwrap();
    let mut held: Vec<_> = Vec::new();
    for _ in 0..3 {
        held.push(limiter.acquire().await.unwrap());
    }
    limiter
        .reconfigure(LimiterConfig::new(1).with_queue_size(5))
        .unwrap();
    let s = limiter.snapshot();
    assert_eq!((s.max_concurrent, s.running), (1, 3));
    let mut w = task::spawn(limiter.acquire());
    assert_pending!(w.poll());
    held.pop();
    held.pop();
    assert_pending!(w.poll()); // 1 running = the new limit
    held.pop();
    let _held3 = assert_ready_ok!(w.poll());
    let s = limiter.snapshot();
    assert_eq!((s.admitted, s.completed, s.running), (4, 3, 1));
}

/// A tool's weight changes for new calls only: a running call gives back
/// exactly the slots it took.
#[tokio::test(start_paused = true)]
async fn a_new_weight_applies_to_new_calls_only() {
    let config = |w| {
        LimiterConfig::new(8)
            .with_queue_size(5)
            .with_tool("report", ToolConfig::new().with_weight(w))
    };
    let limiter = Limiter::new(config(4)).unwrap();
    let report = Request::new().tool("report");
    let old = limiter.acquire_with(report).await.unwrap();
    limiter.reconfigure(config(2)).unwrap();
    let new = limiter.acquire_with(report).await.unwrap();
    assert_eq!((old.cost(), new.cost()), (4, 2));
    assert_eq!(limiter.snapshot().active, 6);
    drop(old);
    assert_eq!(limiter.snapshot().active, 2);
    drop(new);
    assert_eq!(limiter.snapshot().active, 0);
    assert_consistent(&limiter);
}

/// Removing a tool's limit while its calls run keeps their counts; adding
/// one while calls of it run applies to new calls.
#[tokio::test(start_paused = true)]
async fn tool_limits_come_and_go_with_calls_in_flight() {
    let with = LimiterConfig::new(8)
        .with_queue_size(5)
        .with_tool("db", ToolConfig::new().with_max_concurrent(1));
    let without = LimiterConfig::new(8).with_queue_size(5);
    let limiter = Limiter::new(without.clone()).unwrap();
    let db = Request::new().tool("db");
    let a = limiter.acquire_with(db).await.unwrap();
    limiter.reconfigure(with.clone()).unwrap();
    let b = limiter.acquire_with(db).await.unwrap(); // the old call counts as "*"
    let mut c = task::spawn(limiter.acquire_with(db));
    assert_pending!(c.poll());
    limiter.reconfigure(without).unwrap();
    let c = assert_ready_ok!(c.poll());
    drop((a, b));
    let s = limiter.snapshot();
    // `db` is an unconfigured tool again, tracked while `c` runs.
    assert_eq!(
        (s.running, s.admitted, s.completed, s.tracked_keys),
        (1, 3, 2, 1)
    );
    drop(c);
    assert_eq!(limiter.snapshot().tracked_keys, 0);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_configuration_is_refused_and_the_old_one_stays() {
    let limiter = Limiter::new(LimiterConfig::new(2)).unwrap();
    let err = limiter
        .reconfigure(LimiterConfig::new(2).with_tool("x", ToolConfig::new().with_weight(0)))
        .unwrap_err();
    assert_eq!(err.setting(), "tools.\"x\".weight");
    assert!(limiter.config().tools.is_empty());
    // Deadlines of waiters are kept across a reload that shortens the timeout.
    let limiter = Limiter::new(
        LimiterConfig::new(1)
            .with_queue_size(2)
            .with_queue_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let _held = limiter.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let start = tokio::time::Instant::now();
            let _ = limiter.acquire().await;
            start.elapsed()
        }
    });
    crate::support::settle().await;
    limiter
        .reconfigure(
            LimiterConfig::new(1)
                .with_queue_size(2)
                .with_queue_timeout(Duration::from_secs(1)),
        )
        .unwrap();
    assert_eq!(waiter.await.unwrap(), Duration::from_secs(10));
}
