//! The Streamable HTTP proxy in front of `simple_server --transport http`
//! (run with a limit high enough to be unprotected), with `--metrics`.

use serde_json::json;

use crate::http_client::HttpSession;
use crate::support::{assert_overload, http_proxy, http_server, metric, metrics_url, wait_metric};

const LONG_MS: u64 = 60_000;

/// The overload contract over HTTP, across sessions, with the metrics that
/// count it: two run, one waits, the fourth is turned away at once; other
/// sessions still initialize and list; a cancellation (in its session)
/// reaches the upstream and frees a slot; a client that disconnects has its
/// call cancelled upstream and its slot freed.
#[tokio::test]
async fn http_overload_contract_and_metrics() {
    let (_server, mut upstream_log, upstream) =
        http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let (_proxy, mut proxy_log, url) = http_proxy(
        &[
            "--max-concurrent",
            "2",
            "--queue-size",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream,
    )
    .await;
    let metrics = metrics_url(&mut proxy_log).await;
    let a = HttpSession::initialize(&url).await;
    assert!(a.session.is_some(), "the session id passes back");
    let mut one = a.call(1, "sleep", json!({"ms": LONG_MS})).await;
    let mut two = a.call(2, "sleep", json!({"ms": LONG_MS})).await;
    assert!(one.is_sse(), "the upstream's event stream passes through");
    one.started(1).await;
    two.started(2).await;
    wait_metric(&metrics, "mcp_backpressure_active", 2.0).await;

    let queued = {
        let a = HttpSession {
            client: a.client.clone(),
            url: a.url.clone(),
            session: a.session.clone(),
        };
        tokio::spawn(async move {
            let mut three = a.call(3, "sleep", json!({"ms": 10})).await;
            three.message_with_id(&json!(3)).await
        })
    };
    wait_metric(&metrics, "mcp_backpressure_queued", 1.0).await;

    let mut four = a.call(4, "sleep", json!({"ms": 10})).await;
    assert_eq!(four.status, 200);
    assert_eq!(
        four.header("content-type").as_deref(),
        Some("application/json")
    );
    let rejected = four.next().await.expect("the overload error");
    let data = assert_overload(&rejected, 4, -31429, "queue_full");
    assert_eq!(
        (data["active"].as_u64(), data["queued"].as_u64()),
        (Some(2), Some(1))
    );

    // Another session initializes and lists while every slot is busy.
    let b = HttpSession::initialize(&url).await;
    assert_ne!(a.session, b.session);
    let mut list = b
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert!(list.message_with_id(&json!(1)).await["result"]["tools"].is_array());

    // Cancelling 1 in session A: forwarded in A's session, and 3 runs.
    a.cancel(1).await;
    let three = tokio::time::timeout(crate::support::PATIENCE, queued)
        .await
        .expect("call 3 ran in time")
        .unwrap();
    assert_eq!(
        three["result"]["content"][0]["text"], "slept 10 ms",
        "{three}"
    );
    upstream_log
        .wait_for("the upstream's cancellation of 1", |l| {
            l.contains("cancelled") && l.contains("id=1")
        })
        .await;

    // The client of call 2 disconnects: cancelled upstream, slot freed.
    drop(two);
    upstream_log
        .wait_for("the upstream's cancellation of 2", |l| {
            l.contains("cancelled") && l.contains("id=2")
        })
        .await;
    wait_metric(&metrics, "mcp_backpressure_active", 0.0).await;
    drop(one);

    assert_eq!(
        metric(&metrics, "mcp_backpressure_admitted_total").await,
        3.0
    );
    assert_eq!(
        metric(&metrics, "mcp_backpressure_completed_total").await,
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "mcp_backpressure_rejected_total{reason=\"queue_full\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "mcp_backpressure_rejected_total{reason=\"queue_timeout\"}"
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(&metrics, "mcp_backpressure_queue_wait_seconds_count").await,
        3.0
    );
    // Only call 3 completed; cancelled calls are not service-time samples.
    assert_eq!(
        metric(&metrics, "mcp_backpressure_service_time_seconds_count").await,
        1.0
    );
}

/// A client that gives up while its call waits in the queue leaves the queue.
#[tokio::test]
async fn http_client_leaving_the_queue() {
    let (_server, _upstream_log, upstream) =
        http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let (_proxy, mut proxy_log, url) = http_proxy(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream,
    )
    .await;
    let metrics = metrics_url(&mut proxy_log).await;
    let a = HttpSession::initialize(&url).await;
    let mut one = a.call(1, "sleep", json!({"ms": LONG_MS})).await;
    one.started(1).await;
    let waiting = {
        let request = a.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": 10}}}));
        tokio::spawn(async move { request.send().await })
    };
    wait_metric(&metrics, "mcp_backpressure_queued", 1.0).await;
    waiting.abort();
    wait_metric(&metrics, "mcp_backpressure_queued", 0.0).await;
    assert_eq!(
        metric(&metrics, "mcp_backpressure_cancelled_in_queue_total").await,
        1.0
    );
    // The queue has room again: this one waits (it is not rejected)...
    let next = {
        let request = a.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "after"}}}));
        tokio::spawn(async move { request.send().await })
    };
    wait_metric(&metrics, "mcp_backpressure_queued", 1.0).await;
    // ...and runs once 1 is cancelled.
    a.cancel(1).await;
    let response = tokio::time::timeout(crate::support::PATIENCE, next)
        .await
        .expect("call 3 in time")
        .unwrap()
        .unwrap();
    let mut events = crate::http_client::Events::new(response);
    assert_eq!(
        events.message_with_id(&json!(3)).await["result"]["content"][0]["text"],
        "after"
    );
}
