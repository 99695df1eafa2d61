use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcp_backpressure::{ConfigError, Limiter, LimiterConfig, OverloadReason};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};

use crate::support::{assert_consistent, limiter};

#[tokio::test(start_paused = true)]
async fn active_never_exceeds_the_limit() {
    let limiter = limiter(5, 100);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (limiter, running, peak) = (limiter.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                let _permit = limiter.acquire().await.expect("queue is large enough");
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                assert!(limiter.snapshot().active <= 5);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        5,
        "the limit was reached, never passed"
    );
    assert_eq!(limiter.snapshot().completed, 50);
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn rejection_carries_the_right_error() {
    let limiter = limiter(2, 0);
    let _a = limiter.acquire().await.unwrap();
    let _b = limiter.acquire().await.unwrap();
    let overload = limiter.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    let data = overload.data();
    assert_eq!(data.active, 2);
    assert_eq!(data.queued, 0);
    assert_eq!(data.max_concurrent, 2);
    assert_eq!(data.queue_size, 0);
    assert_eq!(data.queue_timeout_ms, 1000);
    assert!(data.retry_after_ms > 0);
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_all_succeed() {
    let limiter = limiter(1, 0);
    for _ in 0..100 {
        let permit = limiter.acquire().await.expect("nothing else runs");
        drop(permit);
    }
    let s = limiter.snapshot();
    assert_eq!((s.admitted, s.completed, s.total_rejected), (100, 100, 0));
}

#[tokio::test(start_paused = true)]
async fn a_burst_under_the_limit_all_run_at_once() {
    let limiter = limiter(5, 0);
    let mut acquires: Vec<_> = (0..5).map(|_| task::spawn(limiter.acquire())).collect();
    let permits: Vec<_> = acquires
        .iter_mut()
        .map(|a| assert_ready_ok!(a.poll()))
        .collect();
    assert_eq!(limiter.snapshot().active, 5);
    drop(permits);
    assert_eq!(limiter.snapshot().active, 0);
}

#[test]
fn invalid_configurations_are_typed_errors_naming_the_setting() {
    let err = Limiter::new(LimiterConfig::new(0)).unwrap_err();
    assert!(matches!(err, ConfigError::MaxConcurrent { value: 0 }));
    assert_eq!(err.setting(), "max_concurrent");

    let err = Limiter::new(LimiterConfig::new(1).with_queue_timeout(Duration::ZERO)).unwrap_err();
    assert_eq!(err.setting(), "queue_timeout");

    let err = mcp_backpressure::config::seconds("queue_timeout", -1.0).unwrap_err();
    assert_eq!(err.setting(), "queue_timeout");

    assert!(Limiter::new(LimiterConfig::new(1).with_queue_size(0)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn active_count_is_exact() {
    let limiter = limiter(4, 0);
    let mut held = Vec::new();
    for k in 0..4 {
        assert_eq!(limiter.snapshot().active, k);
        held.push(limiter.acquire().await.unwrap());
    }
    assert_eq!(limiter.snapshot().active, 4);
    assert_ready_err!(task::spawn(limiter.acquire()).poll());
    while let Some(permit) = held.pop() {
        drop(permit);
        assert_eq!(limiter.snapshot().active, held.len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_is_pending_not_rejected() {
    let limiter = limiter(1, 1);
    let _held = limiter.acquire().await.unwrap();
    let mut queued = task::spawn(limiter.acquire());
    assert_pending!(queued.poll());
    assert_eq!(limiter.snapshot().queued, 1);
}

/// The handle, the permit and the acquire future can cross threads and tasks.
#[test]
fn limiter_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Limiter>();
    send_sync::<mcp_backpressure::Permit>();
    send_sync::<mcp_backpressure::Overload>();
    let limiter = limiter(1, 0);
    send(&limiter.acquire());
}
