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
                     "queue_size": 1, "queue_timeout_ms": 30000, "retry_after_ms": 1000,
                     "retryAfterMs": 1000, "scope": "global"}}})
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

/// The counter `name` of the metrics the server logs when it stops
/// (`stopped metrics=MetricsSnapshot { active: 0, ... }`).
fn logged_counter(log: &[String], name: &str) -> u64 {
    let line = log
        .iter()
        .find(|l| l.contains("stopped") && l.contains("MetricsSnapshot {"))
        .unwrap_or_else(|| panic!("no `stopped` metrics line in the log: {log:#?}"));
    let fields = &line[line.find("MetricsSnapshot {").unwrap()..];
    fields
        .split(['{', ',', '}'])
        .filter_map(|field| field.trim().split_once(": "))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter `{name}` in: {line}"))
}

/// A client that closes stdin while calls wait in the queue: the queued calls
/// leave it at once and never start (each is answered with an error on
/// stdout, which the client may still read); the running call finishes and is
/// answered; the server exits as soon as it has. Before the fix, rmcp's 5 s
/// shutdown drain admitted a queued call as soon as the running one ended and
/// kept the process alive for the full 5 s.
#[tokio::test]
async fn closing_stdin_frees_the_queue_at_once_and_starts_nothing() {
    const RUNNING_MS: u64 = 2_500;
    let args = [
        "--max-concurrent",
        "1",
        "--queue-size",
        "5",
        "--queue-timeout",
        "30",
    ];
    let (mut s, log) = RawSession::start_logged(&args).await;
    s.call_sleep(1, RUNNING_MS).await;
    s.started(1).await;
    let contenders = [2, 3, 4, 5, 6, 7];
    for id in contenders {
        s.call_sleep(id, LONG_MS).await;
    }
    // Six contenders for five places: one is turned away, so five are queued.
    let (rejected, error) = s.first_response(&contenders).await;
    assert_eq!(error["error"]["data"]["reason"], "queue_full", "{error}");
    let queued: Vec<u64> = contenders
        .into_iter()
        .filter(|&id| id != rejected)
        .collect();

    let closed_at = tokio::time::Instant::now();
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
    let took = closed_at.elapsed();

    let log = tokio::time::timeout(PATIENCE, log)
        .await
        .expect("stderr closed in time")
        .expect("the log task");
    assert_eq!(
        logged_counter(&log, "admitted"),
        1,
        "a queued call was started after stdin closed"
    );
    assert_eq!(logged_counter(&log, "cancelled_in_queue"), 5);
    assert_eq!(logged_counter(&log, "rejected_queue_full"), 1);
    assert_eq!(logged_counter(&log, "active"), 0, "{log:#?}");
    assert_eq!(logged_counter(&log, "queued"), 0);
    assert!(
        took < std::time::Duration::from_millis(4_500),
        "the server took {took:?} to exit after stdin closed: it should exit once the \
         running call ({RUNNING_MS} ms) is answered, not after rmcp's 5 s drain"
    );

    let done = s.response(1).await;
    assert_eq!(
        done["result"]["content"][0]["text"],
        format!("slept {RUNNING_MS} ms"),
        "the running call is still answered: {done}"
    );
    for id in queued {
        let refused = s.response(id).await;
        assert_eq!(
            refused["error"]["message"],
            "request not started: the client disconnected while it waited for a slot",
            "{refused}"
        );
    }
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
