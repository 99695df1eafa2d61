use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::support::{assert_consistent, limiter, settle};

#[tokio::test(start_paused = true)]
async fn cancelling_a_queued_request_frees_its_place() {
    let limiter = limiter(1, 1);
    let held = limiter.acquire().await.unwrap();
    let mut queued = task::spawn(limiter.acquire());
    assert_pending!(queued.poll());
    drop(queued);
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.cancelled_in_queue), (0, 1));
    // The slot released later is not given to the departed request.
    drop(held);
    assert_eq!(limiter.snapshot().active, 0);
    let _p = limiter.acquire().await.unwrap();
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn cancelling_an_active_request_frees_its_slot() {
    let limiter = limiter(1, 0);
    let task = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let _permit = limiter.acquire().await.unwrap();
            std::future::pending::<()>().await;
        }
    });
    settle().await;
    assert_eq!(limiter.snapshot().active, 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(limiter.snapshot().active, 0);
    let _p = limiter.acquire().await.expect("the slot is free again");
}

#[tokio::test(start_paused = true)]
async fn cancelling_before_the_first_poll_changes_nothing() {
    let limiter = limiter(1, 1);
    let before = limiter.snapshot();
    drop(limiter.acquire());
    let held = limiter.acquire().await.unwrap();
    drop(task::spawn(limiter.acquire()));
    assert_eq!(limiter.snapshot().queued, 0);
    drop(held);
    assert_eq!(limiter.snapshot().admitted, before.admitted + 1);
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn cancelling_after_a_hand_over_passes_the_slot_on() {
    let limiter = limiter(1, 2);
    let held = limiter.acquire().await.unwrap();
    let mut promoted = task::spawn(limiter.acquire());
    let mut next = task::spawn(limiter.acquire());
    assert_pending!(promoted.poll());
    assert_pending!(next.poll());
    drop(held);
    assert!(promoted.is_woken());
    // Its caller goes away before it runs: the slot goes to the next in line.
    drop(promoted);
    assert!(next.is_woken());
    let permit = assert_ready_ok!(next.poll());
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued), (1, 0));
    drop(permit);
    assert_consistent(&limiter);
    assert_eq!(limiter.snapshot().active, 0);
}

#[tokio::test(start_paused = true)]
async fn many_cancellations_at_once_leak_nothing() {
    let limiter = limiter(4, 200);
    let held: Vec<_> = futures_hold(&limiter, 4).await;
    let mut queued: Vec<_> = (0..200).map(|_| task::spawn(limiter.acquire())).collect();
    for q in &mut queued {
        assert_pending!(q.poll());
    }
    // Cancel every other one, then release the slots, then cancel the rest.
    let mut survivors = Vec::new();
    for (i, q) in queued.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(q);
        } else {
            survivors.push(q);
        }
    }
    assert_eq!(limiter.snapshot().queued, 100);
    drop(held);
    drop(survivors);
    // Each survivor in turn was handed the slot its predecessor gave up, then
    // gave it up unclaimed: none of them ever ran, so all 200 count as
    // cancelled in the queue and only the 4 holders as admitted.
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.cancelled_in_queue), (0, 0, 200));
    assert_eq!((s.admitted, s.completed), (4, 4));
    assert_consistent(&limiter);
    // Full capacity is there.
    let again = futures_hold(&limiter, 4).await;
    assert_eq!(limiter.snapshot().active, again.len());
}

/// The Python package died after a few abrupt disconnects: each left a waiter
/// behind that later took a slot forever. Here, repeat the pattern many times.
#[tokio::test(start_paused = true)]
async fn abrupt_disconnects_never_kill_the_limiter() {
    let limiter = limiter(2, 4);
    for _ in 0..50 {
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                })
            })
            .collect();
        settle().await;
        assert_eq!(limiter.snapshot().queued, 4);
        clients.iter().for_each(|c| c.abort());
        for c in clients {
            let _ = c.await;
        }
        assert_eq!(limiter.snapshot().active, 0);
        assert_eq!(limiter.snapshot().queued, 0);
    }
    assert_consistent(&limiter);
    let _a = limiter.acquire().await.unwrap();
    let _b = limiter.acquire().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_frees_its_slot() {
    let limiter = limiter(1, 0);
    let handler = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let _permit = limiter.acquire().await.unwrap();
            panic!("tool failed hard");
        }
    });
    assert!(handler.await.unwrap_err().is_panic());
    let s = limiter.snapshot();
    assert_eq!((s.active, s.completed), (0, 1));
    let _p = limiter.acquire().await.expect("the slot came back");
}

async fn futures_hold(
    limiter: &mcp_backpressure::Limiter,
    n: usize,
) -> Vec<mcp_backpressure::Permit> {
    let mut permits = Vec::new();
    for _ in 0..n {
        permits.push(limiter.acquire().await.unwrap());
    }
    permits
}
