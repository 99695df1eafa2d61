use std::time::Duration;

use mcp_backpressure::{Limiter, LimiterConfig};

pub fn limiter(max_concurrent: usize, queue_size: usize) -> Limiter {
    limiter_with_timeout(max_concurrent, queue_size, Duration::from_secs(1))
}

pub fn limiter_with_timeout(
    max_concurrent: usize,
    queue_size: usize,
    timeout: Duration,
) -> Limiter {
    Limiter::new(
        LimiterConfig::new(max_concurrent)
            .with_queue_size(queue_size)
            .with_queue_timeout(timeout),
    )
    .expect("valid test configuration")
}

/// Checks the invariants every snapshot must satisfy.
pub fn assert_consistent(limiter: &Limiter) {
    let s = limiter.snapshot();
    assert!(s.active <= s.max_concurrent, "active over the limit: {s:?}");
    assert!(s.queued <= s.queue_size, "queued over the bound: {s:?}");
    assert_eq!(
        s.admitted + s.handed_over as u64,
        s.completed + s.running as u64,
        "{s:?}"
    );
    assert_eq!(
        s.total_rejected,
        s.rejected_concurrency_limit
            + s.rejected_queue_full
            + s.rejected_queue_timeout
            + s.rejected_queue_shed,
        "{s:?}"
    );
    if s.queued > 0 {
        assert_eq!(
            s.active, s.max_concurrent,
            "someone waits beside a free slot: {s:?}"
        );
    }
}

/// Lets spawned tasks run until they all wait on something.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}
