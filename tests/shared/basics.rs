use std::time::Duration;

use mcp_backpressure::shared::{FailMode, SharedLimit};
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request};

use crate::redis::RedisServer;

fn replica(server: &RedisServer, key: &str, config: LimiterConfig) -> Limiter {
    Limiter::builder(config)
        .shared(SharedLimit::new(server.url(), key).with_lease(Duration::from_secs(2)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_replicas_share_one_limit_and_hand_slots_over_in_order() {
    let server = RedisServer::start();
    let config = LimiterConfig::new(2)
        .with_queue_size(10)
        .with_queue_timeout(Duration::from_secs(5));
    let a = replica(&server, "basics", config.clone());
    let b = replica(&server, "basics", config);
    let p1 = a.acquire().await.unwrap();
    let p2 = b.acquire().await.unwrap();
    // Both slots are taken across the two: the third call waits, on either.
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.acquire().await.map(|_p| ()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    assert_eq!(b.snapshot().queued, 0);
    assert_eq!(a.snapshot().queued, 1);
    drop(p2); // freed on b: handed to a's waiter
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the waiter was woken")
        .unwrap()
        .unwrap();
    drop(p1);
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
}

#[tokio::test]
async fn fail_closed_rejects_with_shared_unavailable() {
    let port = crate::redis::free_port();
    let limiter = Limiter::builder(LimiterConfig::new(4))
        .shared(
            SharedLimit::new(format!("redis://127.0.0.1:{port}/0"), "closed")
                .with_fail(FailMode::Closed)
                .with_timeout(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let overload = limiter
        .acquire_with(Request::new().tool("t"))
        .await
        .unwrap_err();
    assert_eq!(overload.reason, OverloadReason::SharedUnavailable);
    assert_eq!(overload.data().reason, OverloadReason::SharedUnavailable);
    assert!(limiter.shared_snapshot().unwrap().fallback);
}
