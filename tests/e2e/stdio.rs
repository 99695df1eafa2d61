//! Over stdio. rmcp runs each request on its own task, so two requests sent
//! back to back may reach the limiter in either order: the tests wait for a
//! call's start announcement before the next step, and where two calls race
//! on purpose they accept either winner.

use mcp_backpressure::{OverloadData, OverloadReason};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::PeerRequestOptions;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ServiceError, ServiceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{PATIENCE, RawSession, StartWatcher, example};

const LONG_MS: u64 = 60_000;

/// The exact bytes of the error, and ping/tools/list while saturated.
#[tokio::test]
async fn the_wire_error_is_exact_and_ping_and_list_are_never_limited() {
    let args = [
        "--max-concurrent",
        "2",
        "--queue-size",
        "1",
        "--queue-timeout",
        "30",
    ];
    let mut s = RawSession::start(&args).await;
    s.call_sleep(1, LONG_MS).await;
    s.call_sleep(2, LONG_MS).await;
    s.started(1).await;
    s.started(2).await;
    // Two more: one takes the queue's only place, the other is turned away.
    s.call_sleep(3, LONG_MS).await;
    s.call_sleep(4, LONG_MS).await;
    let (rejected_id, error) = s.first_response(&[3, 4]).await;
    assert_eq!(
        error,
        json!({"jsonrpc": "2.0", "id": rejected_id, "error": {
            "code": -31429,
            // No request has completed yet: S̄ = 1 s, so 1 s · (1 + 1) / 2.
            "message": "SERVER_OVERLOADED: queue_full, retry after 1000 ms",
            "data": {"reason": "queue_full", "active": 2, "queued": 1, "max_concurrent": 2,
                     "queue_size": 1, "queue_timeout_ms": 30000, "retry_after_ms": 1000}}})
    );

    s.send(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        .await;
    assert_eq!(
        s.response(5).await,
        json!({"jsonrpc": "2.0", "id": 5, "result": {}})
    );
    s.send(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}))
        .await;
    let tools = s.response(6).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"sleep") && names.contains(&"echo"),
        "{tools}"
    );
    s.send(json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hi"}}}))
        .await;
    assert_eq!(s.response(8).await["error"]["data"]["reason"], "queue_full");
    s.child.kill().await.unwrap();
}

/// notifications/cancelled takes a queued request out of the queue and stops a
/// running one: both places are free again long before the 60 s calls would end.
#[tokio::test]
async fn cancellation_frees_queue_places_and_slots() {
    let args = [
        "--max-concurrent",
        "1",
        "--queue-size",
        "1",
        "--queue-timeout",
        "30",
    ];
    let mut s = RawSession::start(&args).await;
    s.call_sleep(1, LONG_MS).await;
    s.started(1).await;
    s.call_sleep(2, LONG_MS).await; // the only contender: it waits in the queue
    s.cancel(2).await;
    s.cancel(1).await;
    // Were either still there, every call below would be turned away or wait 60 s.
    let mut attempts = 0;
    let id = loop {
        attempts += 1;
        assert!(
            attempts <= 200,
            "the slot and the queue place were never freed"
        );
        let id = 100 + attempts;
        s.call_sleep(id, 1).await;
        let answer = s.response(id).await;
        if answer.get("result").is_some() {
            break id;
        }
        assert_eq!(answer["error"]["code"], -31429, "{answer}");
    };
    s.started(id).await;
    assert!(
        !s.has_response(1).await,
        "a cancelled request gets no response"
    );
    assert!(
        !s.has_response(2).await,
        "a cancelled request gets no response"
    );
    s.child.kill().await.unwrap();
}

fn sleep_call(ms: u64) -> ClientRequest {
    ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("sleep")
            .with_arguments(json!({"ms": ms}).as_object().cloned().unwrap()),
    ))
}

/// rmcp's own client sees code, message and data intact, and its cancellation
/// (`RequestHandle::cancel`) frees the slot.
#[tokio::test]
async fn the_rmcp_client_gets_a_structured_error_and_can_cancel() {
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(example("simple_server")).configure(|c| {
            c.args(["--max-concurrent", "1", "--queue-size", "0"])
                .stderr(std::process::Stdio::null());
        }),
    )
    .unwrap();
    let (tx, mut starts) = mpsc::unbounded_channel();
    let client = tokio::time::timeout(PATIENCE, StartWatcher(tx).serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake");

    let running = client
        .send_cancellable_request(sleep_call(LONG_MS), PeerRequestOptions::no_options())
        .await
        .unwrap();
    // rmcp's client puts a progress token on every request; this is the only
    // call in flight, so the announcement is its.
    let started = tokio::time::timeout(PATIENCE, starts.recv())
        .await
        .expect("start in time");
    assert!(started.is_some());

    let Err(ServiceError::McpError(rejected)) = client.send_request(sleep_call(1)).await else {
        panic!("the only slot is taken: the call must be rejected");
    };
    assert_eq!(rejected.code.0, -31429);
    assert!(
        rejected
            .message
            .starts_with("SERVER_OVERLOADED: concurrency_limit")
    );
    let data: OverloadData = serde_json::from_value(rejected.data.unwrap()).unwrap();
    assert_eq!(data.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(
        (
            data.active,
            data.queued,
            data.max_concurrent,
            data.queue_size
        ),
        (1, 0, 1, 0)
    );

    running
        .cancel(Some("changed my mind".into()))
        .await
        .unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 200,
            "the cancelled call never gave its slot back"
        );
        match tokio::time::timeout(PATIENCE, client.send_request(sleep_call(1))).await {
            Ok(Ok(_)) => break,
            Ok(Err(ServiceError::McpError(e))) if e.code.0 == -31429 => {
                tokio::task::yield_now().await
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    client.cancel().await.unwrap();
}
