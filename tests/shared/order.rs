//! The order the shared queue serves calls in, across replicas.

use std::sync::Arc;
use std::time::Duration;

use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request};
use parking_lot::Mutex;

use crate::redis::RedisServer;
use crate::support::{eventually, replica, shared};

fn config(limit: usize) -> LimiterConfig {
    LimiterConfig::new(limit)
        .with_queue_size(100)
        .with_queue_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn without_client_keys_calls_are_admitted_in_arrival_order_across_replicas() {
    let server = RedisServer::start();
    let replicas: Vec<Limiter> = (0..3)
        .map(|_| replica(&server, "fifo", config(1)))
        .collect();
    let holder = replicas[0].acquire().await.unwrap();
    let calls: Vec<(usize, Option<&str>)> = (0..12).map(|i| ((i * 7) % 3, None)).collect();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, &(r, _)) in calls.iter().enumerate() {
        let limiter = replicas[r].clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire().await.unwrap();
            order.lock().push(i);
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(permit);
        }));
        eventually(
            "the call waits in the shared queue",
            Duration::from_secs(2),
            || replicas.iter().map(|l| shared(l).waiting).sum::<usize>() == i + 1,
        )
        .await;
    }
    drop(holder);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(*order.lock(), (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_client_keys_clients_take_turns_across_replicas() {
    let server = RedisServer::start();
    let replicas: Vec<Limiter> = (0..2)
        .map(|_| replica(&server, "fair", config(1)))
        .collect();
    let holder = replicas[0].acquire().await.unwrap();
    // greedy queues five calls (on both replicas), then polite one.
    let mut calls: Vec<(usize, &str)> = (0..5).map(|i| (i % 2, "greedy")).collect();
    calls.push((1, "polite"));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, &(r, client)) in calls.iter().enumerate() {
        let limiter = replicas[r].clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let permit = limiter
                .acquire_with(Request::new().client(client))
                .await
                .unwrap();
            order.lock().push(client);
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(permit);
        }));
        eventually(
            "the call waits in the shared queue",
            Duration::from_secs(2),
            || replicas.iter().map(|l| shared(l).waiting).sum::<usize>() == i + 1,
        )
        .await;
    }
    drop(holder);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    // polite arrived sixth, but waits behind one greedy call only.
    assert_eq!(order.lock()[..3], ["greedy", "polite", "greedy"]);
}

#[tokio::test]
async fn a_full_shared_queue_rejects_with_queue_full() {
    let server = RedisServer::start();
    let cfg = LimiterConfig::new(1)
        .with_queue_size(2)
        .with_queue_timeout(Duration::from_secs(10));
    let a = replica(&server, "full", cfg.clone());
    let b = replica(&server, "full", cfg);
    let _holder = a.acquire().await.unwrap();
    let w1 = tokio::spawn({
        let a = a.clone();
        async move { a.acquire().await.map(drop) }
    });
    let w2 = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    eventually("two calls wait", Duration::from_secs(2), || {
        shared(&a).waiting + shared(&b).waiting == 2
    })
    .await;
    let overload = b.acquire().await.unwrap_err();
    assert_eq!(overload.reason, OverloadReason::QueueFull);
    assert_eq!(overload.snapshot.queued, 2);
    w1.abort();
    w2.abort();
}
