use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::shared::SharedLimit;
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request};

use crate::redis::RedisServer;
use crate::support::{eventually, replica, shared};

#[tokio::test]
async fn two_replicas_share_one_limit_and_a_freed_slot_goes_to_the_other_replicas_waiter() {
    let server = RedisServer::start();
    let config = LimiterConfig::new(2)
        .with_queue_size(10)
        .with_queue_timeout(Duration::from_secs(5));
    let a = replica(&server, "basics", config.clone());
    let b = replica(&server, "basics", config);
    let p1 = a.acquire().await.unwrap();
    let p2 = b.acquire().await.unwrap();
    // Both slots are taken across the two: the third call waits.
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.acquire().await.map(drop) }
    });
    eventually(
        "a's call waits in the shared queue",
        Duration::from_secs(2),
        || shared(&a).waiting == 1,
    )
    .await;
    assert_eq!(a.snapshot().queued, 1);
    assert_eq!(b.snapshot().queued, 0);
    assert_eq!(server.command(&["ZCARD", "{basics}:queue"]), ":1");
    drop(p2); // freed on b: handed to a's waiter by the release script
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the waiter was woken by its notification")
        .unwrap()
        .unwrap();
    drop(p1);
    eventually(
        "every slot is back in Redis",
        Duration::from_secs(2),
        || server.command(&["HGET", "{basics}:use", "n"]) == "$-1",
    )
    .await;
    assert_eq!(a.snapshot().admitted, 2);
    assert_eq!(b.snapshot().admitted, 1);
}

#[tokio::test]
async fn no_queue_rejects_at_once_with_the_shared_figures() {
    let server = RedisServer::start();
    let a = replica(&server, "reject", LimiterConfig::new(1));
    let b = replica(&server, "reject", LimiterConfig::new(1));
    let _p = a.acquire().await.unwrap();
    let overload = b.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(overload.snapshot.active, 1);
    assert_eq!(overload.snapshot.max_concurrent, 1);
    assert_eq!(b.snapshot().rejected_concurrency_limit, 1);
    assert_eq!(b.snapshot().total_rejected, 1);
}

#[tokio::test]
async fn the_uncontended_path_is_one_redis_round_trip() {
    let server = RedisServer::start();
    let a = replica(&server, "trips", LimiterConfig::new(4));
    drop(a.acquire().await.unwrap()); // the first sweep has run by now
    eventually("the first release is sent", Duration::from_secs(2), || {
        server.command(&["HGET", "{trips}:use", "n"]) == "$-1"
    })
    .await;
    let before = shared(&a).commands;
    let permit = a.acquire().await.unwrap();
    assert_eq!(
        shared(&a).commands - before,
        1,
        "admission: one script call"
    );
    drop(permit);
    eventually("the release is sent", Duration::from_secs(2), || {
        shared(&a).commands - before == 2
    })
    .await;
}

#[tokio::test]
async fn tool_and_client_limits_and_weights_hold_across_replicas() {
    let server = RedisServer::start();
    let config = LimiterConfig::new(4)
        .with_tool("report", ToolConfig::new().with_max_concurrent(1))
        .with_tool("heavy", ToolConfig::new().with_weight(3))
        .with_client_limit(2);
    let a = replica(&server, "keyed", config.clone());
    let b = replica(&server, "keyed", config);
    let _report = a.acquire_with(Request::new().tool("report")).await.unwrap();
    let refused = b
        .acquire_with(Request::new().tool("report"))
        .await
        .unwrap_err();
    assert_eq!(refused.data().scope, "tool:report");
    // Client alice: 2 slots across both replicas.
    let _a1 = a
        .acquire_with(Request::new().tool("x").client("alice"))
        .await
        .unwrap();
    let _a2 = b
        .acquire_with(Request::new().tool("x").client("alice"))
        .await
        .unwrap();
    let refused = a
        .acquire_with(Request::new().tool("x").client("alice"))
        .await
        .unwrap_err();
    assert_eq!(refused.data().scope, "client");
    // 3 of 4 slots in use: a weight-3 call does not fit, a light one does.
    let refused = b
        .acquire_with(Request::new().tool("heavy").client("bob"))
        .await
        .unwrap_err();
    assert_eq!(refused.data().scope, "global");
    assert_eq!(refused.snapshot.active, 3);
    let _light = b.acquire_with(Request::new().tool("y")).await.unwrap();
}

#[tokio::test]
async fn bad_settings_are_refused_at_build() {
    let server = RedisServer::start();
    let build = |shared: SharedLimit, config: LimiterConfig| {
        Limiter::builder(config).shared(shared).build().unwrap_err()
    };
    let config = LimiterConfig::new(2);
    let e = build(SharedLimit::new("http://x", "k"), config.clone());
    assert_eq!(e.setting(), "shared_limit");
    let e = build(SharedLimit::new(server.url(), "a{b}"), config.clone());
    assert_eq!(e.setting(), "shared_key");
    let e = build(SharedLimit::new(server.url(), ""), config.clone());
    assert_eq!(e.setting(), "shared_key");
    let e = build(
        SharedLimit::new(server.url(), "k").with_lease(Duration::from_millis(10)),
        config.clone(),
    );
    assert_eq!(e.setting(), "lease");
    let e = build(
        SharedLimit::new(server.url(), "k"),
        config.clone().with_limit(LimitAlgorithm::Aimd, 1, None),
    );
    assert_eq!(e.setting(), "limit");
    // A reload to an adaptive limit is refused too, and the old one stays.
    let limiter = Limiter::builder(config.clone())
        .shared(SharedLimit::new(server.url(), "k"))
        .build()
        .unwrap();
    assert!(
        limiter
            .reconfigure(config.with_limit(LimitAlgorithm::Gradient2, 1, None))
            .is_err()
    );
    assert_eq!(limiter.config().limit, LimitAlgorithm::Fixed);
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let e = Limiter::builder(LimiterConfig::new(1))
        .shared(SharedLimit::new("redis://127.0.0.1:1/0", "k"))
        .build()
        .unwrap_err();
    assert_eq!(e.setting(), "shared_limit");
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_and_300_calls_never_exceed_the_limit_and_every_call_is_answered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = RedisServer::start();
    let config = LimiterConfig::new(5)
        .with_queue_size(200)
        .with_queue_timeout(Duration::from_secs(20));
    let replicas: Vec<Limiter> = (0..3)
        .map(|_| replica(&server, "stress", config.clone()))
        .collect();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let limiter = replicas[i % 3].clone();
            let (running, peak) = (running.clone(), peak.clone());
            tokio::spawn(async move {
                let permit = limiter.acquire().await?;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                Ok::<_, mcp_backpressure::Overload>(())
            })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
        {
            Ok(()) => ok += 1,
            Err(overload) => {
                assert_eq!(overload.reason, OverloadReason::QueueFull);
                full += 1;
            }
        }
    }
    assert_eq!(ok + full, 300);
    assert!(ok >= 200, "{ok} admitted");
    assert!(
        peak.load(Ordering::SeqCst) <= 5,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(peak.load(Ordering::SeqCst), 5, "the limit was used");
    let admitted: u64 = replicas.iter().map(|l| l.snapshot().admitted).sum();
    let rejected: u64 = replicas.iter().map(|l| l.snapshot().total_rejected).sum();
    assert_eq!((admitted, rejected), (ok, full));
    eventually("every slot is back", Duration::from_secs(5), || {
        server.command(&["HGET", "{stress}:use", "n"]) == "$-1"
            && server.command(&["ZCARD", "{stress}:queue"]) == ":0"
    })
    .await;
}
