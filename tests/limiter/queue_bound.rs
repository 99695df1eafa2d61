use mcp_backpressure::OverloadReason;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};

use crate::support::{assert_consistent, limiter};

#[tokio::test(start_paused = true)]
async fn queued_never_exceeds_the_bound() {
    let limiter = limiter(1, 3);
    let _held = limiter.acquire().await.unwrap();
    let mut waiting = Vec::new();
    let mut rejected = 0;
    for _ in 0..10 {
        let mut acquire = task::spawn(limiter.acquire());
        match acquire.poll() {
            std::task::Poll::Pending => waiting.push(acquire),
            std::task::Poll::Ready(Err(o)) => {
                assert_eq!(o.reason, OverloadReason::QueueFull);
                assert_eq!(o.snapshot.queued, 3);
                rejected += 1;
            }
            std::task::Poll::Ready(Ok(_)) => panic!("admitted beyond the limit"),
        }
        assert!(limiter.snapshot().queued <= 3);
        assert_consistent(&limiter);
    }
    assert_eq!((waiting.len(), rejected), (3, 7));
}

#[tokio::test(start_paused = true)]
async fn queue_full_is_immediate() {
    let limiter = limiter(1, 1);
    let _held = limiter.acquire().await.unwrap();
    let mut queued = task::spawn(limiter.acquire());
    assert_pending!(queued.poll());
    let start = Instant::now();
    // Resolves on its very first poll: no waiting, no timer.
    let overload = assert_ready_err!(task::spawn(limiter.acquire()).poll());
    assert_eq!(overload.reason, OverloadReason::QueueFull);
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn queue_size_zero_rejects_at_once() {
    let limiter = limiter(1, 0);
    let _held = limiter.acquire().await.unwrap();
    let overload = assert_ready_err!(task::spawn(limiter.acquire()).poll());
    assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(limiter.snapshot().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn the_queue_drains_in_fifo_order() {
    let limiter = limiter(1, 5);
    let mut held = limiter.acquire().await.unwrap();
    let mut waiters: Vec<_> = (0..5).map(|_| task::spawn(limiter.acquire())).collect();
    for w in &mut waiters {
        assert_pending!(w.poll());
    }
    for i in 0..5 {
        drop(held);
        assert!(waiters[i].is_woken(), "the head of the queue is woken");
        for later in &waiters[i + 1..] {
            assert!(!later.is_woken(), "only the head is woken");
        }
        held = assert_ready_ok!(waiters[i].poll());
        assert_eq!(limiter.snapshot().queued, 4 - i);
        assert_consistent(&limiter);
    }
    drop(held);
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.admitted, s.completed), (0, 0, 6, 6));
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_never_overtakes_a_queued_request() {
    let limiter = limiter(1, 2);
    let held = limiter.acquire().await.unwrap();
    let mut first = task::spawn(limiter.acquire());
    assert_pending!(first.poll());
    drop(held);
    // The slot now belongs to `first`, even though it has not run yet.
    let mut newcomer = task::spawn(limiter.acquire());
    assert_pending!(newcomer.poll());
    let permit = assert_ready_ok!(first.poll());
    assert_pending!(newcomer.poll());
    drop(permit);
    let _permit = assert_ready!(newcomer.poll()).unwrap();
}
