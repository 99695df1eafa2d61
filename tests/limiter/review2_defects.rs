//! Defects found in the second review, each pinned by a test that failed before its fix.

use mcp_backpressure::{Limiter, LimiterConfig, Request};
use tokio_test::{assert_pending, task};

/// The lane candidate checks the client cap on each flow's *head* only. With
/// a per-request cost (`Request::cost`), a heavy head over the client's room
/// hides a light call of the same client and tool behind it; a newer light
/// call of that tool is then admitted at once, overtaking the queued one
/// ("within a lane a tool's calls are served in arrival order; nobody
/// overtakes a waiter that could run") — the lane-blocking defect fixed for
/// weights, still there for costs.
#[tokio::test(start_paused = true)]
async fn a_costly_head_does_not_let_newer_calls_overtake_its_flow() {
    let limiter = Limiter::new(
        LimiterConfig::new(100)
            .with_queue_size(10)
            .with_client_limit(4),
    )
    .unwrap();
    let light = Request::new().tool("search").client("a");
    let heavy = Request::new().tool("search").client("a").cost(4);
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(limiter.acquire_with(light).await.unwrap());
    }
    // The client is at its cap: a costly call, then a light one, of one tool.
    let mut queued_heavy = task::spawn(limiter.acquire_with(heavy));
    assert_pending!(queued_heavy.poll());
    let mut queued_light = task::spawn(limiter.acquire_with(light));
    assert_pending!(queued_light.poll());
    // One light call ends: 3 of 4 client slots in use.
    drop(running.pop());
    let queued_ready = queued_light.poll().is_ready();
    // A newer light call of the same client and tool.
    let mut newer = task::spawn(limiter.acquire_with(light));
    let newer_ready = newer.poll().is_ready();
    assert!(
        queued_ready || !newer_ready,
        "a newer call ran at once (ready: {newer_ready}) ahead of a queued call of the same \
         client and tool (ready: {queued_ready})"
    );
}
