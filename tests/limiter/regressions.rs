//! Bugs the Python package had, pinned down.

use std::sync::{Arc, Mutex};

use mcp_backpressure::{Limiter, LimiterConfig, Overload, OverloadReason};
use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::support::{assert_consistent, limiter};

/// While a freed slot is on its way to the head of the queue, the queue has a
/// free place: a newcomer must be queued, not turned away with `queue_full`.
#[tokio::test(start_paused = true)]
async fn no_false_queue_full_during_a_hand_over() {
    let limiter = limiter(1, 1);
    let held = limiter.acquire().await.unwrap();
    let mut promoted = task::spawn(limiter.acquire());
    assert_pending!(promoted.poll());
    drop(held);
    // `promoted` was handed the slot but has not run yet.
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued), (1, 0));
    let mut newcomer = task::spawn(limiter.acquire());
    assert_pending!(newcomer.poll());
    assert_eq!(limiter.snapshot().rejected_queue_full, 0);
    drop(assert_ready_ok!(promoted.poll()));
    let _permit = assert_ready_ok!(newcomer.poll());
}

/// A request promoted from the queue whose handler then fails gives its slot back.
#[tokio::test(start_paused = true)]
async fn no_leak_when_a_promoted_request_fails() {
    let limiter = limiter(1, 1);
    let held = limiter.acquire().await.unwrap();
    let handler = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let _permit = limiter.acquire().await.unwrap();
            Err::<(), &str>("tool error")
        }
    });
    crate::support::settle().await;
    drop(held);
    assert_eq!(handler.await.unwrap(), Err("tool error"));
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.admitted, s.completed), (0, 0, 2, 2));
    assert_consistent(&limiter);
}

/// The callback sees the same snapshot as the caller, taken after the counter moved.
#[tokio::test(start_paused = true)]
async fn the_callback_runs_once_per_rejection_with_the_counted_snapshot() {
    let seen: Arc<Mutex<Vec<Overload>>> = Arc::default();
    let limiter = Limiter::builder(LimiterConfig::new(1))
        .on_overload({
            let seen = seen.clone();
            move |o| seen.lock().unwrap().push(o.clone())
        })
        .build()
        .unwrap();
    let _held = limiter.acquire().await.unwrap();
    let returned = limiter.acquire().await.unwrap_err();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0], returned);
    assert_eq!(seen[0].snapshot.total_rejected, 1);
    assert_eq!(seen[0].reason, OverloadReason::ConcurrencyLimit);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_callback_breaks_nothing() {
    let limiter = Limiter::builder(LimiterConfig::new(1))
        .on_overload(|_| panic!("callback bug"))
        .build()
        .unwrap();
    let held = limiter.acquire().await.unwrap();
    for _ in 0..3 {
        let overload = limiter.acquire().await.unwrap_err();
        assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    }
    drop(held);
    let _p = limiter.acquire().await.expect("the limiter still works");
    assert_eq!(limiter.snapshot().total_rejected, 3);
    assert_consistent(&limiter);
}
