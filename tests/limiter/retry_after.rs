use std::time::Duration;

use mcp_backpressure::{Limiter, LimiterConfig, Outcome};
use tokio_test::{assert_pending, task};

/// `retry_after` follows observed service times and the queue, it is not a constant.
#[tokio::test(start_paused = true)]
async fn retry_after_follows_service_time_and_queue_length() {
    let limiter = Limiter::new(LimiterConfig::new(2).with_queue_size(4)).unwrap();
    // Teach it a 200 ms service time (the first admission is timed; a
    // permit dropped without an outcome would teach nothing).
    for _ in 0..2 {
        let mut p = limiter.acquire().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.set_outcome(Outcome::Success);
        drop(p);
    }
    let _held = [
        limiter.acquire().await.unwrap(),
        limiter.acquire().await.unwrap(),
    ];
    let mut queued: Vec<_> = (0..4).map(|_| task::spawn(limiter.acquire())).collect();
    for q in &mut queued {
        assert_pending!(q.poll());
    }
    let full = limiter.acquire().await.unwrap_err();
    // 200 ms · (4 + 1) / 2 = 500 ms
    assert_eq!(full.data().retry_after_ms, 500);
    drop(queued.pop());
    drop(queued.pop());
    queued.push(task::spawn(limiter.acquire()));
    assert_pending!(queued.last_mut().unwrap().poll());
    queued.push(task::spawn(limiter.acquire()));
    assert_pending!(queued.last_mut().unwrap().poll());
    let again = limiter.acquire().await.unwrap_err();
    assert_eq!(again.data().retry_after_ms, 500);
}

#[tokio::test(start_paused = true)]
async fn retry_after_uses_the_prior_until_a_request_completes_and_is_bounded() {
    let config = LimiterConfig::new(1)
        .with_initial_service_time(Duration::from_millis(300))
        .with_retry_after_bounds(Duration::from_millis(50), Duration::from_millis(250));
    let limiter = Limiter::new(config).unwrap();
    let mut held = limiter.acquire().await.unwrap();
    assert!(held.admitted_at().is_some(), "the first admission is timed");
    // 300 ms · 1 / 1 = 300 ms, capped at 250 ms.
    assert_eq!(
        limiter.acquire().await.unwrap_err().data().retry_after_ms,
        250
    );
    held.set_outcome(Outcome::Success);
    drop(held); // served in 0 ms
    let _held = limiter.acquire().await.unwrap();
    assert_eq!(
        limiter.acquire().await.unwrap_err().data().retry_after_ms,
        50
    );
}
