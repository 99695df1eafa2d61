use std::time::Duration;

use mcp_backpressure::OverloadReason;
use tokio_test::{assert_pending, assert_ready_err, task};

use crate::support::{assert_consistent, limiter, limiter_with_timeout};

#[tokio::test(start_paused = true)]
async fn metrics_return_to_zero_after_bursts() {
    let limiter = limiter(3, 5);
    for _ in 0..5 {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    if let Ok(_permit) = limiter.acquire().await {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = limiter.snapshot();
        assert_eq!((s.active, s.queued), (0, 0), "{s:?}");
        assert_consistent(&limiter);
    }
    let s = limiter.snapshot();
    assert_eq!(s.admitted + s.total_rejected, 100);
}

#[tokio::test(start_paused = true)]
async fn each_reason_is_counted_separately() {
    let no_queue = limiter(1, 0);
    let _a = no_queue.acquire().await.unwrap();
    for _ in 0..3 {
        no_queue.acquire().await.unwrap_err();
    }
    let s = no_queue.snapshot();
    assert_eq!(
        (
            s.rejected_concurrency_limit,
            s.rejected_queue_full,
            s.rejected_queue_timeout
        ),
        (3, 0, 0)
    );

    let queued = limiter_with_timeout(1, 1, Duration::from_millis(100));
    let _b = queued.acquire().await.unwrap();
    let mut waiting = task::spawn(queued.acquire());
    assert_pending!(waiting.poll());
    assert_ready_err!(task::spawn(queued.acquire()).poll());
    assert_ready_err!(task::spawn(queued.acquire()).poll());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(
        assert_ready_err!(waiting.poll()).reason,
        OverloadReason::QueueTimeout
    );
    let s = queued.snapshot();
    assert_eq!(
        (
            s.rejected_concurrency_limit,
            s.rejected_queue_full,
            s.rejected_queue_timeout
        ),
        (0, 2, 1)
    );
    assert_eq!(s.total_rejected, 3);
    for reason in OverloadReason::ALL {
        assert_eq!(
            s.rejected(reason),
            match reason {
                OverloadReason::QueueFull => 2,
                OverloadReason::QueueTimeout => 1,
                _ => 0,
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn snapshots_stay_consistent_under_churn() {
    let limiter = limiter(3, 4);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 7 % 40)).await;
                if let Ok(_permit) = limiter.acquire().await {
                    tokio::time::sleep(Duration::from_millis(13)).await;
                }
            })
        })
        .collect();
    let checker = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                assert_consistent(&limiter);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    checker.await.unwrap();
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn the_error_snapshot_already_counts_its_rejection() {
    let limiter = limiter(1, 0);
    let _held = limiter.acquire().await.unwrap();
    for n in 1..=3 {
        let overload = limiter.acquire().await.unwrap_err();
        assert_eq!(overload.snapshot.total_rejected, n);
        assert_eq!(overload.snapshot.rejected_concurrency_limit, n);
        assert_eq!(overload.snapshot, limiter.snapshot());
    }
}
