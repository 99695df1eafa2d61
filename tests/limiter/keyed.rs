//! Per-tool limits, weights, per-client limits and fair queueing.

use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Permit, Request, Scope};
use tokio::sync::mpsc;
use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::support::{assert_consistent, settle};

/// Spawns `n` calls of `client` that report `(label, i)` when admitted and
/// hold their slot until `release` closes.
fn spawn_calls(
    limiter: &Limiter,
    client: &'static str,
    n: usize,
    order: &mpsc::UnboundedSender<(&'static str, usize)>,
    hold: Duration,
) {
    for i in 0..n {
        let (limiter, order) = (limiter.clone(), order.clone());
        tokio::spawn(async move {
            let permit = limiter
                .acquire_with(Request::new().client(client))
                .await
                .expect("admitted");
            order.send((client, i)).unwrap();
            tokio::time::sleep(hold).await;
            drop(permit);
        });
    }
}

/// One client with 300 queued calls delays another client's single call by
/// one turn, not 300 places.
#[tokio::test(start_paused = true)]
async fn a_polite_client_waits_one_turn_behind_a_greedy_one() {
    let limiter = Limiter::new(
        LimiterConfig::new(1)
            .with_queue_size(400)
            .with_queue_timeout(Duration::from_secs(3600)),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_calls(&limiter, "greedy", 300, &tx, Duration::from_millis(10));
    settle().await;
    spawn_calls(&limiter, "polite", 1, &tx, Duration::from_millis(10));
    drop(tx);
    let mut served = Vec::new();
    while let Some(call) = rx.recv().await {
        served.push(call);
    }
    assert_eq!(served.len(), 301);
    let polite = served.iter().position(|&(c, _)| c == "polite").unwrap();
    // The greedy client's running call, then one turn of it, then polite.
    assert!(polite <= 2, "served at place {polite}");
    // FIFO within the greedy client.
    let greedy: Vec<usize> = served
        .iter()
        .filter(|c| c.0 == "greedy")
        .map(|c| c.1)
        .collect();
    assert!(greedy.windows(2).all(|w| w[0] < w[1]), "{greedy:?}");
    assert_consistent(&limiter);
}

/// Without client keys, the same load is plain FIFO: the single call waits
/// behind all 300 (the contrast the fairness exists for).
#[tokio::test(start_paused = true)]
async fn without_keys_the_queue_is_one_fifo() {
    let limiter = Limiter::new(
        LimiterConfig::new(1)
            .with_queue_size(400)
            .with_queue_timeout(Duration::from_secs(3600)),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..31 {
        let (limiter, tx) = (limiter.clone(), tx.clone());
        tokio::spawn(async move {
            let permit = limiter.acquire().await.unwrap();
            tx.send(i).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
        });
        settle().await;
    }
    drop(tx);
    let mut served = Vec::new();
    while let Some(i) = rx.recv().await {
        served.push(i);
    }
    assert_eq!(served, (0..31).collect::<Vec<_>>());
}

/// A tool at its limit holds its own calls back, never the other tools':
/// the fast tool runs beside two slow calls while a third slow one waits.
#[tokio::test(start_paused = true)]
async fn a_tool_limit_holds_back_only_that_tool() {
    let limiter = Limiter::new(
        LimiterConfig::new(4)
            .with_queue_size(10)
            .with_tool("slow", ToolConfig::new().with_max_concurrent(2)),
    )
    .unwrap();
    let slow = Request::new().tool("slow");
    let _s1 = limiter.acquire_with(slow).await.unwrap();
    let _s2 = limiter.acquire_with(slow).await.unwrap();
    let mut s3 = task::spawn(limiter.acquire_with(slow));
    assert_pending!(s3.poll());
    // The queue holds a slow call, yet a fast call runs at once.
    let _fast = limiter
        .acquire_with(Request::new().tool("fast"))
        .await
        .unwrap();
    let tools = limiter.tool_snapshots();
    let slow_tool = tools.iter().find(|t| t.tool == "slow").unwrap();
    assert_eq!(
        (slow_tool.running, slow_tool.queued, slow_tool.limit),
        (2, 1, Some(2))
    );
    let other = tools.iter().find(|t| t.tool == "*").unwrap();
    assert_eq!(other.running, 1);
    drop(_s1);
    assert!(s3.is_woken());
    let _held1 = assert_ready_ok!(s3.poll());
    assert_consistent(&limiter);
}

/// Without a queue, the refusal names the tool's limit, and its retry hint
/// uses that tool's own service time.
#[tokio::test(start_paused = true)]
async fn a_refusal_names_the_tool_and_its_own_retry_hint() {
    let limiter = Limiter::new(
        LimiterConfig::new(10).with_tool("report", ToolConfig::new().with_max_concurrent(1)),
    )
    .unwrap();
    let report = Request::new().tool("report");
    // Teach the report tool a 4 s service time (the first admission is timed).
    let mut p = limiter.acquire_with(report).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    p.set_outcome(mcp_backpressure::Outcome::Success);
    drop(p);
    let _running = limiter.acquire_with(report).await.unwrap();
    let refused = limiter.acquire_with(report).await.unwrap_err();
    assert_eq!(refused.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(refused.scope, Scope::Tool("report".into()));
    let data = refused.data();
    assert_eq!(data.scope, "tool:report");
    // 4 s · (0 + 1) / 1, not the global 4 s · 1 / 10.
    assert_eq!(data.retry_after_ms, 4000);
    // The seven fields are all still there.
    let wire = serde_json::to_value(&data).unwrap();
    for field in [
        "reason",
        "active",
        "queued",
        "max_concurrent",
        "queue_size",
        "queue_timeout_ms",
        "retry_after_ms",
    ] {
        assert!(wire.get(field).is_some(), "{field} missing: {wire}");
    }
}

/// A weight-4 call takes 4 of 8 slots; a fifth slot-holder of weight 4 waits,
/// and lighter calls queued behind it do not overtake it.
#[tokio::test(start_paused = true)]
async fn a_heavy_call_takes_its_weight_and_is_not_starved() {
    let limiter = Limiter::new(
        LimiterConfig::new(8)
            .with_queue_size(10)
            .with_tool("report", ToolConfig::new().with_weight(4)),
    )
    .unwrap();
    let report = Request::new().tool("report");
    let r1 = limiter.acquire_with(report).await.unwrap();
    assert_eq!(r1.cost(), 4);
    let light: Vec<Permit> = futures_collect(&limiter, 3).await;
    assert_eq!(limiter.snapshot().active, 7);
    let mut r2 = task::spawn(limiter.acquire_with(report));
    assert_pending!(r2.poll());
    // One slot is free, but the heavy call waits first: a light newcomer queues.
    let mut l4 = task::spawn(limiter.acquire());
    assert_pending!(l4.poll());
    drop(light);
    let _held2 = assert_ready_ok!(r2.poll());
    // 4 + 4 = 8: the light call still waits.
    assert_pending!(l4.poll());
    drop(r1);
    let _held3 = assert_ready_ok!(l4.poll());
    let s = limiter.snapshot();
    assert_eq!((s.active, s.running), (5, 2), "{s:?}");
}

async fn futures_collect(limiter: &Limiter, n: usize) -> Vec<Permit> {
    let mut permits = Vec::new();
    for _ in 0..n {
        permits.push(limiter.acquire().await.unwrap());
    }
    permits
}

/// A weight above the limit takes the whole limit instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn a_weight_above_the_limit_takes_the_whole_limit() {
    let limiter =
        Limiter::new(LimiterConfig::new(2).with_tool("huge", ToolConfig::new().with_weight(9)))
            .unwrap();
    let p = limiter
        .acquire_with(Request::new().tool("huge"))
        .await
        .unwrap();
    assert_eq!(p.cost(), 2);
    assert!(limiter.acquire().await.is_err());
}

/// Each client key holds at most `client_limit` slots; the refusal says so.
#[tokio::test(start_paused = true)]
async fn a_client_limit_caps_one_key_not_the_others() {
    let limiter = Limiter::new(LimiterConfig::new(10).with_client_limit(2)).unwrap();
    let alice = Request::new().client("alice");
    let _a = [
        limiter.acquire_with(alice).await.unwrap(),
        limiter.acquire_with(alice).await.unwrap(),
    ];
    let refused = limiter.acquire_with(alice).await.unwrap_err();
    assert_eq!(refused.scope, Scope::Client);
    assert_eq!(refused.data().scope, "client");
    assert!(
        limiter
            .acquire_with(Request::new().client("bob"))
            .await
            .is_ok()
    );
}

/// A full queue makes room for a client with fewer places by turning away
/// the newest waiter of the client with the most.
#[tokio::test(start_paused = true)]
async fn a_full_queue_gives_a_newcomer_the_greedy_clients_newest_place() {
    let limiter = Limiter::new(LimiterConfig::new(1).with_queue_size(3)).unwrap();
    let _running = limiter.acquire().await.unwrap();
    let greedy = Request::new().client("greedy");
    let mut g: Vec<_> = (0..3)
        .map(|_| task::spawn(limiter.acquire_with(greedy)))
        .collect();
    for f in &mut g {
        assert_pending!(f.poll());
    }
    // The greedy client itself gets queue_full.
    let refused = limiter.acquire_with(greedy).await.unwrap_err();
    assert_eq!(
        (refused.reason, refused.scope),
        (OverloadReason::QueueFull, Scope::Global)
    );
    let mut polite = task::spawn(limiter.acquire_with(Request::new().client("polite")));
    assert_pending!(polite.poll());
    assert!(g[2].is_woken());
    let evicted = match g[2].poll() {
        std::task::Poll::Ready(Err(o)) => o,
        other => panic!("expected an eviction, got {other:?}"),
    };
    assert_eq!(
        (evicted.reason, evicted.scope),
        (OverloadReason::QueueFull, Scope::Client)
    );
    assert_pending!(g[0].poll());
    assert_eq!(limiter.snapshot().queued, 3);
}

/// Keys are tracked only while they have work, and never beyond
/// `max_tracked_keys`: the rest share one entry (and one cap).
#[tokio::test(start_paused = true)]
async fn client_keys_are_bounded_and_forgotten_when_idle() {
    let limiter = Limiter::new(
        LimiterConfig::new(100)
            .with_client_limit(1)
            .with_max_tracked_keys(3),
    )
    .unwrap();
    let keys: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    let mut held = Vec::new();
    for key in &keys[..3] {
        held.push(
            limiter
                .acquire_with(Request::new().client(key))
                .await
                .unwrap(),
        );
    }
    assert_eq!(limiter.snapshot().tracked_keys, 3);
    // c3 and c4 share the overflow entry, and so its cap of 1.
    held.push(
        limiter
            .acquire_with(Request::new().client(&keys[3]))
            .await
            .unwrap(),
    );
    let refused = limiter
        .acquire_with(Request::new().client(&keys[4]))
        .await
        .unwrap_err();
    assert_eq!(refused.scope, Scope::Client);
    assert_eq!(limiter.snapshot().tracked_keys, 4);
    drop(held);
    assert_eq!(limiter.snapshot().tracked_keys, 0);
}
