//! Continuations of multi-round-trip calls (SEP-2322): served ahead of the
//! queue, never refused for want of a queue place, bounded by
//! `max_continuations`, their own tool's and client's limits kept.

use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request, Scope};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};

use crate::support::assert_consistent;

const TIMEOUT: Duration = Duration::from_secs(1);

fn config(max_concurrent: usize, queue_size: usize) -> LimiterConfig {
    LimiterConfig::new(max_concurrent)
        .with_queue_size(queue_size)
        .with_queue_timeout(TIMEOUT)
}

fn limiter(config: LimiterConfig) -> Limiter {
    Limiter::new(config).expect("valid test configuration")
}

const CONTINUATION: Request<'static> = Request::new().continuation();

#[tokio::test(start_paused = true)]
async fn a_free_slot_admits_a_continuation_at_once_as_any_call() {
    let limiter = limiter(config(1, 0));
    let permit = limiter.acquire_with(CONTINUATION).await.unwrap();
    let s = limiter.snapshot();
    assert_eq!((s.admitted, s.active), (1, 1));
    assert_eq!((s.continuations_waiting, s.continuations_ahead), (0, 0));
    drop(permit);
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn a_continuation_is_served_before_earlier_queued_calls() {
    let limiter = limiter(config(1, 5));
    let held = limiter.acquire().await.unwrap();
    let mut first = task::spawn(limiter.acquire());
    let mut second = task::spawn(limiter.acquire());
    assert_pending!(first.poll());
    assert_pending!(second.poll());
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.continuations_waiting), (2, 1), "{s:?}");

    drop(held);
    assert!(continuation.is_woken());
    assert!(!first.is_woken());
    let permit = assert_ready_ok!(continuation.poll());
    assert_pending!(first.poll());
    let s = limiter.snapshot();
    assert_eq!((s.continuations_waiting, s.continuations_ahead), (0, 1));
    assert_eq!(s.queued, 2);
    assert_consistent(&limiter);

    // Then the ordinary queue, in its own order.
    drop(permit);
    let permit = assert_ready_ok!(first.poll());
    assert_pending!(second.poll());
    drop(permit);
    drop(assert_ready_ok!(second.poll()));
    let s = limiter.snapshot();
    assert_eq!((s.admitted, s.continuations_ahead, s.active), (4, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn continuations_are_served_among_themselves_in_arrival_order() {
    let limiter = limiter(config(1, 0));
    let held = limiter.acquire().await.unwrap();
    let mut a = task::spawn(limiter.acquire_with(CONTINUATION));
    let mut b = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    drop(held);
    assert_pending!(b.poll());
    let permit = assert_ready_ok!(a.poll());
    drop(permit);
    drop(assert_ready_ok!(b.poll()));
    assert_eq!(limiter.snapshot().continuations_ahead, 2);
}

#[tokio::test(start_paused = true)]
async fn with_no_queue_a_continuation_waits_up_to_the_queue_timeout() {
    let limiter = limiter(config(1, 0));
    let _held = limiter.acquire().await.unwrap();
    // An ordinary call is refused at once...
    let refused = limiter.acquire().await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
    // ...a continuation waits.
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    assert_eq!(limiter.snapshot().continuations_waiting, 1);
    tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
    assert_pending!(continuation.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    let overload = assert_ready_err!(continuation.poll());
    assert_eq!(overload.reason, OverloadReason::QueueTimeout);
    assert_eq!(overload.scope, Scope::Global);
    let s = limiter.snapshot();
    assert_eq!(s.continuations_waiting, 0);
    assert_eq!(s.rejected_queue_timeout, 1);
    assert_eq!(s.continuations_ahead, 0);
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn with_no_queue_a_waiting_continuation_takes_the_freed_slot() {
    let limiter = limiter(config(1, 0));
    let held = limiter.acquire().await.unwrap();
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    tokio::time::advance(TIMEOUT / 2).await;
    drop(held);
    // A newcomer does not take the slot handed to the continuation.
    let refused = limiter.acquire().await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
    drop(assert_ready_ok!(continuation.poll()));
    assert_eq!(limiter.snapshot().continuations_ahead, 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_does_not_refuse_a_continuation() {
    let limiter = limiter(config(1, 1));
    let held = limiter.acquire().await.unwrap();
    let mut queued = task::spawn(limiter.acquire());
    assert_pending!(queued.poll());
    let refused = limiter.acquire().await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::QueueFull);
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.continuations_waiting), (1, 1));
    assert_consistent(&limiter);
    drop(held);
    let permit = assert_ready_ok!(continuation.poll());
    assert_pending!(queued.poll());
    drop(permit);
    drop(assert_ready_ok!(queued.poll()));
}

#[tokio::test(start_paused = true)]
async fn past_max_continuations_a_continuation_is_an_ordinary_call() {
    let limiter = limiter(config(1, 1).with_max_continuations(1));
    let held = limiter.acquire().await.unwrap();
    let mut first = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(first.poll());
    // The bound is reached: the next one takes the queue's only place...
    let mut second = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(second.poll());
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.continuations_waiting), (1, 1), "{s:?}");
    // ...and the one after is refused as any call would be.
    let refused = limiter.acquire_with(CONTINUATION).await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::QueueFull);
    // An ordinary call arriving now is still behind the queued continuation.
    drop(held);
    let permit = assert_ready_ok!(first.poll());
    drop(permit);
    drop(assert_ready_ok!(second.poll()));
    let s = limiter.snapshot();
    assert_eq!(
        s.continuations_ahead, 1,
        "only the first came from the line"
    );
    assert_eq!(s.admitted, 3);
}

#[tokio::test(start_paused = true)]
async fn past_max_continuations_with_no_queue_a_continuation_is_refused() {
    let limiter = limiter(config(1, 0).with_max_continuations(1));
    let _held = limiter.acquire().await.unwrap();
    let mut first = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(first.poll());
    let refused = limiter.acquire_with(CONTINUATION).await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
}

#[tokio::test(start_paused = true)]
async fn max_continuations_zero_gives_no_priority() {
    let limiter = limiter(config(1, 0).with_max_continuations(0));
    let held = limiter.acquire().await.unwrap();
    let refused = limiter.acquire_with(CONTINUATION).await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
    drop(held);

    let limiter = self::limiter(config(1, 2).with_max_continuations(0));
    let held = limiter.acquire().await.unwrap();
    let mut ordinary = task::spawn(limiter.acquire());
    assert_pending!(ordinary.poll());
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.continuations_waiting), (2, 0));
    drop(held);
    let permit = assert_ready_ok!(ordinary.poll());
    assert_pending!(continuation.poll());
    drop(permit);
    drop(assert_ready_ok!(continuation.poll()));
    assert_eq!(limiter.snapshot().continuations_ahead, 0);
}

#[tokio::test(start_paused = true)]
async fn a_continuation_keeps_its_tool_limit_and_holds_nobody_back() {
    let limiter = limiter(config(3, 0).with_tool("t", ToolConfig::new().with_max_concurrent(1)));
    let running_t = limiter
        .acquire_with(Request::new().tool("t"))
        .await
        .unwrap();
    let mut continuation =
        task::spawn(limiter.acquire_with(Request::new().tool("t").continuation()));
    assert_pending!(continuation.poll());
    assert_eq!(limiter.snapshot().continuations_waiting, 1);
    let tool = limiter
        .tool_snapshots()
        .into_iter()
        .find(|t| t.tool == "t")
        .unwrap();
    assert_eq!((tool.running, tool.queued), (1, 1));
    // Other calls still run beside it.
    let other = limiter
        .acquire_with(Request::new().tool("u"))
        .await
        .expect("not held back by a continuation waiting on its own tool");
    drop(other);
    // Its deadline passes: the tool's limit held it back.
    tokio::time::advance(TIMEOUT).await;
    let overload = assert_ready_err!(continuation.poll());
    assert_eq!(overload.reason, OverloadReason::QueueTimeout);
    assert_eq!(overload.scope, Scope::Tool("t".into()));
    drop(running_t);
    let s = limiter.snapshot();
    assert_eq!(
        (s.active, s.continuations_waiting, s.tracked_keys),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_continuation_held_by_its_tool_limit_runs_when_the_tool_frees() {
    let limiter = limiter(config(3, 0).with_tool("t", ToolConfig::new().with_max_concurrent(1)));
    let running_t = limiter
        .acquire_with(Request::new().tool("t"))
        .await
        .unwrap();
    let mut continuation =
        task::spawn(limiter.acquire_with(Request::new().tool("t").continuation()));
    assert_pending!(continuation.poll());
    drop(running_t);
    drop(assert_ready_ok!(continuation.poll()));
    assert_eq!(limiter.snapshot().continuations_ahead, 1);
}

#[tokio::test(start_paused = true)]
async fn a_continuation_keeps_its_client_limit_and_holds_nobody_back() {
    let limiter = limiter(config(3, 0).with_client_limit(1));
    let alice = limiter
        .acquire_with(Request::new().client("alice"))
        .await
        .unwrap();
    let mut continuation =
        task::spawn(limiter.acquire_with(Request::new().client("alice").continuation()));
    assert_pending!(continuation.poll());
    let bob = limiter
        .acquire_with(Request::new().client("bob"))
        .await
        .expect("another client runs beside it");
    tokio::time::advance(TIMEOUT).await;
    let overload = assert_ready_err!(continuation.poll());
    assert_eq!(overload.reason, OverloadReason::QueueTimeout);
    assert_eq!(overload.scope, Scope::Client);
    drop((alice, bob));
    let s = limiter.snapshot();
    assert_eq!((s.active, s.tracked_keys), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_continuation_held_back_by_the_global_limit_holds_newcomers_back() {
    let limiter = limiter(config(3, 2).with_tool("heavy", ToolConfig::new().with_weight(3)));
    let light = limiter.acquire().await.unwrap();
    let mut heavy = task::spawn(limiter.acquire_with(Request::new().tool("heavy").continuation()));
    assert_pending!(heavy.poll());
    // Two slots are free, but the continuation waits for three: a light
    // newcomer queues behind it rather than starve it.
    let mut newcomer = task::spawn(limiter.acquire());
    assert_pending!(newcomer.poll());
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.continuations_waiting), (1, 1, 1));
    drop(light);
    let permit = assert_ready_ok!(heavy.poll());
    assert_pending!(newcomer.poll());
    drop(permit);
    drop(assert_ready_ok!(newcomer.poll()));
}

#[tokio::test(start_paused = true)]
async fn a_continuation_arriving_behind_a_stalled_call_goes_first() {
    let limiter = limiter(config(3, 2).with_tool("heavy", ToolConfig::new().with_weight(3)));
    let light = limiter.acquire().await.unwrap();
    // An ordinary heavy call stalls the queue...
    let mut heavy = task::spawn(limiter.acquire_with(Request::new().tool("heavy")));
    assert_pending!(heavy.poll());
    // ...a light continuation is served ahead of it, in a free slot.
    let continuation = limiter.acquire_with(CONTINUATION).await.unwrap();
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued, s.continuations_ahead), (2, 1, 1));
    drop((light, continuation));
    drop(assert_ready_ok!(heavy.poll()));
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiting_continuation_frees_its_place() {
    let limiter = limiter(config(1, 0).with_max_continuations(1));
    let held = limiter.acquire().await.unwrap();
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    drop(continuation);
    let s = limiter.snapshot();
    assert_eq!((s.continuations_waiting, s.cancelled_in_queue), (0, 1));
    // Its place on the line is free again.
    let mut next = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(next.poll());
    assert_eq!(limiter.snapshot().continuations_waiting, 1);
    drop(held);
    drop(assert_ready_ok!(next.poll()));
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn a_continuation_cancelled_after_its_hand_over_passes_the_slot_on() {
    let limiter = limiter(config(1, 1));
    let held = limiter.acquire().await.unwrap();
    let mut ordinary = task::spawn(limiter.acquire());
    assert_pending!(ordinary.poll());
    let mut continuation = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(continuation.poll());
    drop(held);
    // Handed the slot, gone before taking it.
    assert_eq!(limiter.snapshot().handed_over, 1);
    drop(continuation);
    drop(assert_ready_ok!(ordinary.poll()));
    let s = limiter.snapshot();
    assert_eq!(s.continuations_ahead, 0, "never taken");
    assert_eq!((s.cancelled_in_queue, s.admitted, s.active), (1, 2, 0));
    assert_consistent(&limiter);
}

#[tokio::test(start_paused = true)]
async fn codel_never_sheds_a_continuation() {
    let limiter = limiter(
        config(1, 0)
            .with_queue_timeout(Duration::from_secs(60))
            .with_discipline(mcp_backpressure::config::QueueDiscipline::CoDel {
                target: Duration::from_millis(1),
                interval: Duration::from_millis(10),
            }),
    );
    let mut held = limiter.acquire().await.unwrap();
    let mut waiting: Vec<_> = (0..3)
        .map(|_| task::spawn(limiter.acquire_with(CONTINUATION)))
        .collect();
    for w in &mut waiting {
        assert_pending!(w.poll());
    }
    for w in &mut waiting {
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(held);
        held = assert_ready_ok!(w.poll());
    }
    assert_eq!(limiter.snapshot().rejected_queue_shed, 0);
}

#[tokio::test(start_paused = true)]
async fn reconfigure_keeps_waiting_continuations() {
    let limiter = limiter(config(1, 0).with_max_continuations(2));
    let held = limiter.acquire().await.unwrap();
    let mut a = task::spawn(limiter.acquire_with(CONTINUATION));
    let mut b = task::spawn(limiter.acquire_with(CONTINUATION));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    limiter
        .reconfigure(config(1, 0).with_max_continuations(1))
        .unwrap();
    // Both keep their place; no new one joins past the lowered bound.
    assert_eq!(limiter.snapshot().continuations_waiting, 2);
    let refused = limiter.acquire_with(CONTINUATION).await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
    // A raised limit serves them at once.
    limiter
        .reconfigure(config(3, 0).with_max_continuations(1))
        .unwrap();
    drop(assert_ready_ok!(a.poll()));
    drop(assert_ready_ok!(b.poll()));
    drop(held);
    let s = limiter.snapshot();
    assert_eq!(
        (s.active, s.continuations_waiting, s.continuations_ahead),
        (0, 0, 2)
    );
}
