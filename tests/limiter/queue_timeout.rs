use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcp_backpressure::OverloadReason;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};

use crate::support::{assert_consistent, limiter_with_timeout};

const TIMEOUT: Duration = Duration::from_millis(1000);

#[tokio::test(start_paused = true)]
async fn times_out_with_the_right_reason_after_exactly_the_timeout() {
    let limiter = limiter_with_timeout(1, 1, TIMEOUT);
    let _held = limiter.acquire().await.unwrap();
    let start = Instant::now();
    let overload = limiter.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::QueueTimeout);
    assert_eq!(start.elapsed(), TIMEOUT);
    assert_eq!(overload.data().queue_timeout_ms, 1000);
    // The snapshot was taken after the waiter left the queue.
    assert_eq!(overload.snapshot.queued, 0);
    assert_eq!(overload.snapshot.rejected_queue_timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_leaves_the_queue() {
    let limiter = limiter_with_timeout(1, 1, TIMEOUT);
    let _held = limiter.acquire().await.unwrap();
    let mut waiter = task::spawn(limiter.acquire());
    assert_pending!(waiter.poll());
    assert_eq!(limiter.snapshot().queued, 1);
    tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
    assert_pending!(waiter.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(waiter.is_woken());
    assert_ready_err!(waiter.poll());
    assert_eq!(limiter.snapshot().queued, 0);
    // Its place is free again.
    let mut next = task::spawn(limiter.acquire());
    assert_pending!(next.poll());
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn each_request_times_out_on_its_own_clock() {
    let limiter = limiter_with_timeout(1, 3, TIMEOUT);
    let _held = limiter.acquire().await.unwrap();
    let mut a = task::spawn(limiter.acquire());
    assert_pending!(a.poll());
    tokio::time::advance(Duration::from_millis(400)).await;
    let mut b = task::spawn(limiter.acquire());
    assert_pending!(b.poll());
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_ready_err!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(limiter.snapshot().queued, 1);
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_ready_err!(b.poll());
    assert_eq!(limiter.snapshot().rejected_queue_timeout, 2);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_never_runs_and_the_others_get_through() {
    let limiter = limiter_with_timeout(1, 2, TIMEOUT);
    let ran = Arc::new(AtomicUsize::new(0));
    let held = limiter.acquire().await.unwrap();
    let spawn = |delay: Duration| {
        let (limiter, ran) = (limiter.clone(), ran.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let permit = limiter.acquire().await?;
            ran.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(permit);
            Ok::<_, mcp_backpressure::Overload>(())
        })
    };
    let doomed = spawn(Duration::ZERO);
    let lucky = spawn(Duration::from_millis(500));
    // `doomed` times out at 1000 ms while the slot is still held; `lucky`
    // (deadline 1500 ms) gets the slot when it is released at 1200 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        doomed.await.unwrap().unwrap_err().reason,
        OverloadReason::QueueTimeout
    );
    drop(held);
    lucky
        .await
        .unwrap()
        .expect("the request behind the timed-out one runs");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the lucky request ran");
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.rejected_queue_timeout), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_over_at_the_deadline_is_kept() {
    let limiter = limiter_with_timeout(1, 1, TIMEOUT);
    let held = limiter.acquire().await.unwrap();
    let mut waiter = task::spawn(limiter.acquire());
    assert_pending!(waiter.poll());
    tokio::time::advance(TIMEOUT).await;
    // The slot is handed over before the waiter notices its deadline passed.
    drop(held);
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(limiter.snapshot().rejected_queue_timeout, 0);
    drop(permit);
    assert_consistent(&limiter);
}
