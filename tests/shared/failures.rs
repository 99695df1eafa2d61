//! Timeouts, cancellation, dead replicas, Redis restarts and an unreachable
//! Redis.

use std::time::{Duration, Instant};

use mcp_backpressure::shared::{FailMode, SharedLimit};
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request};

use crate::redis::{RedisServer, free_port};
use crate::support::{eventually, replica, replica_with, shared};

fn queued(limit: usize, timeout: Duration) -> LimiterConfig {
    LimiterConfig::new(limit)
        .with_queue_size(10)
        .with_queue_timeout(timeout)
}

#[tokio::test]
async fn a_queue_timeout_leaves_the_shared_queue() {
    let server = RedisServer::start();
    let a = replica(&server, "timeout", queued(1, Duration::from_millis(300)));
    let b = replica(&server, "timeout", queued(1, Duration::from_millis(300)));
    let _holder = a.acquire().await.unwrap();
    let started = Instant::now();
    let overload = b.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::QueueTimeout);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.command(&["ZCARD", "{timeout}:queue"]), ":0");
    assert_eq!(b.snapshot().rejected_queue_timeout, 1);
    assert_eq!(shared(&b).waiting, 0);
}

#[tokio::test]
async fn a_caller_that_goes_away_while_queued_frees_its_place_and_never_takes_a_slot() {
    let server = RedisServer::start();
    let a = replica(&server, "cancel", queued(1, Duration::from_secs(30)));
    let b = replica(&server, "cancel", queued(1, Duration::from_secs(30)));
    let holder = a.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    eventually("b's call waits", Duration::from_secs(2), || {
        shared(&b).waiting == 1
    })
    .await;
    waiter.abort();
    eventually(
        "its place is gone from Redis",
        Duration::from_secs(2),
        || server.command(&["ZCARD", "{cancel}:queue"]) == ":0",
    )
    .await;
    assert_eq!(b.snapshot().cancelled_in_queue, 1);
    drop(holder);
    // The freed slot went to nobody: the next call runs at once.
    let started = Instant::now();
    let _next = a.acquire().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_slot_handed_to_a_caller_that_just_left_goes_back() {
    // The waiter is handed the slot and dropped at once, before it can take
    // it: the background cancel finds the lease granted and frees it.
    let server = RedisServer::start();
    let a = replica(&server, "handed", queued(1, Duration::from_secs(30)));
    let b = replica(&server, "handed", queued(1, Duration::from_secs(30)));
    for _ in 0..20 {
        let holder = a.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        eventually("b's call waits", Duration::from_secs(2), || {
            shared(&b).waiting == 1
        })
        .await;
        drop(holder);
        waiter.abort();
        let _ = waiter.await;
        eventually("the slot is free again", Duration::from_secs(2), || {
            server.command(&["HGET", "{handed}:use", "n"]) == "$-1"
        })
        .await;
    }
}

/// A replica on its own runtime, holding `n` slots when the runtime is shut
/// down: like a process killed with its calls running (no release, no more
/// renewals).
fn dead_replica(server: &RedisServer, key: &str, lease: Duration, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limiter = replica_with(server, key, queued(n, Duration::from_secs(1)), lease);
        for _ in 0..n {
            std::mem::forget(limiter.acquire().await.unwrap());
        }
    });
    runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_of_a_killed_replica_come_back_within_the_lease() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(1000);
    let key = "dead";
    std::thread::scope(|scope| {
        scope.spawn(|| dead_replica(&server, key, lease, 2));
    });
    let died = Instant::now();
    assert_eq!(server.command(&["HGET", "{dead}:use", "n"]), "2");
    let alive = replica_with(&server, key, queued(2, Duration::from_secs(10)), lease);
    let permit = alive.acquire().await.unwrap();
    let recovered = died.elapsed();
    // It waited for the dead replica's leases to expire: at most the lease
    // after its last renewal, plus one sweep (lease / 4) to be served.
    assert!(
        recovered <= lease + lease / 4 + Duration::from_millis(400),
        "{recovered:?}"
    );
    assert!(
        recovered >= lease / 2,
        "served before the lease ran out: {recovered:?}"
    );
    drop(permit);
}

#[tokio::test]
async fn after_a_redis_restart_running_calls_are_counted_again() {
    let mut server = RedisServer::start();
    let config = LimiterConfig::new(1);
    let a = replica_with(
        &server,
        "restart",
        config.clone(),
        Duration::from_millis(800),
    );
    let holder = a.acquire().await.unwrap();
    server.restart(); // empty: the lease is gone
    eventually(
        "a's sweep counted its running call again",
        Duration::from_secs(5),
        || server.command(&["HGET", "{restart}:use", "n"]) == "1",
    )
    .await;
    eventually("a is out of fallback", Duration::from_secs(5), || {
        !shared(&a).fallback
    })
    .await;
    assert!(shared(&a).leases_lost >= 1);
    let b = replica(&server, "restart", config);
    let overload = b.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    drop(holder);
    eventually("the slot is freed", Duration::from_secs(2), || {
        server.command(&["HGET", "{restart}:use", "n"]) == "$-1"
    })
    .await;
    let _again = b.acquire().await.unwrap();
}

fn unreachable(fail: FailMode, replicas: usize, port: u16) -> SharedLimit {
    SharedLimit::new(format!("redis://127.0.0.1:{port}/0"), "down")
        .with_fail(fail)
        .with_replicas(replicas)
        .with_timeout(Duration::from_millis(200))
}

#[tokio::test]
async fn fail_closed_rejects_with_shared_unavailable() {
    let limiter = Limiter::builder(LimiterConfig::new(4))
        .shared(unreachable(FailMode::Closed, 1, free_port()))
        .build()
        .unwrap();
    let overload = limiter
        .acquire_with(Request::new().tool("t"))
        .await
        .unwrap_err();
    assert_eq!(overload.reason, OverloadReason::SharedUnavailable);
    assert_eq!(overload.data().reason, OverloadReason::SharedUnavailable);
    assert!(overload.retry_after >= Duration::from_millis(10));
    assert!(shared(&limiter).fallback);
    assert!(shared(&limiter).errors >= 1);
    assert_eq!(limiter.snapshot().rejected_shared_unavailable, 1);
}

#[tokio::test]
async fn fail_open_admits_against_a_local_share_and_redis_counts_those_calls_once_back() {
    let port = free_port();
    let limiter = Limiter::builder(LimiterConfig::new(4))
        .shared(unreachable(FailMode::Open, 2, port).with_lease(Duration::from_millis(800)))
        .build()
        .unwrap();
    // 4 / 2 replicas: two calls at once here.
    let p1 = limiter.acquire().await.unwrap();
    let _p2 = limiter.acquire().await.unwrap();
    let overload = limiter.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(limiter.snapshot().max_concurrent, 2);
    assert!(shared(&limiter).fallback);
    // Redis comes up: the two running calls are counted there.
    let server = RedisServer::start_on(port);
    eventually(
        "the fallback calls are counted in Redis",
        Duration::from_secs(5),
        || server.command(&["ZCARD", "{down}:held"]) == ":2",
    )
    .await;
    eventually("out of fallback", Duration::from_secs(5), || {
        !shared(&limiter).fallback
    })
    .await;
    assert_eq!(
        shared(&limiter).leases_lost,
        0,
        "adopting fallback calls is no loss"
    );
    assert_eq!(limiter.snapshot().max_concurrent, 4);
    drop(p1);
    eventually("its release reaches Redis", Duration::from_secs(2), || {
        server.command(&["ZCARD", "{down}:held"]) == ":1"
    })
    .await;
}

#[tokio::test]
async fn a_call_waiting_when_redis_loses_its_data_asks_again_instead_of_timing_out() {
    let mut server = RedisServer::start();
    let config = queued(1, Duration::from_secs(20));
    let a = replica_with(&server, "lost", config.clone(), Duration::from_millis(800));
    let b = replica_with(&server, "lost", config, Duration::from_millis(800));
    let holder = a.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    eventually("b waits", Duration::from_secs(2), || {
        shared(&b).waiting == 1
    })
    .await;
    let started = Instant::now();
    server.restart();
    drop(holder);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("served long before its 20 s queue timeout")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
