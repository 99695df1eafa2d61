//! The stdio proxy: the overload contract in front of `simple_server` (run
//! with a limit high enough to be unprotected), and faults in front of the
//! Python fixture.

use serde_json::json;

use crate::support::{StdioSession, assert_overload};

const LONG_MS: u64 = 60_000;

/// Two run, one waits, the fourth is turned away at once with the library's
/// error echoing its id; unguarded requests pass while full; a cancellation
/// frees a slot for the one waiting; a response frees a slot.
#[tokio::test]
async fn stdio_overload_contract() {
    let mut s = StdioSession::simple(
        &["--max-concurrent", "2", "--queue-size", "1"],
        &["--max-concurrent", "1000"],
    )
    .await;
    s.call_sleep(1, LONG_MS).await;
    s.call_sleep(2, LONG_MS).await;
    s.started(1).await;
    s.started(2).await;
    s.call_sleep(3, 10).await;
    s.call_sleep(4, 10).await;
    let rejected = s.response(4).await;
    let data = assert_overload(&rejected, 4, -31429, "queue_full");
    assert_eq!(
        (
            data["active"].clone(),
            data["queued"].clone(),
            data["max_concurrent"].clone()
        ),
        (json!(2), json!(1), json!(2))
    );
    assert_eq!(data["queue_size"], 1);
    // Not guarded: passes while every slot is busy.
    s.send(json!({"jsonrpc": "2.0", "id": "list", "method": "tools/list"}))
        .await;
    assert!(s.response("list").await["result"]["tools"].is_array());
    assert!(!s.has_response(3).await, "call 3 must wait for a slot");
    // Cancelling a running call frees its slot: the waiting call runs.
    s.cancel(1).await;
    let done = s.response(3).await;
    assert_eq!(
        done["result"]["content"][0]["text"], "slept 10 ms",
        "{done}"
    );
    // Call 3's response freed its slot again.
    s.call(5, "echo", json!({"message": "hi"})).await;
    assert_eq!(s.response(5).await["result"]["content"][0]["text"], "hi");
    s.call(6, "echo", json!({"message": "again"})).await;
    assert_eq!(s.response(6).await["result"]["content"][0]["text"], "again");
    // The upstream saw the cancellation (rmcp logs it).
    s.stderr
        .wait_for("the upstream's cancellation log", |l| {
            l.contains("cancelled") && l.contains("id=1")
        })
        .await;
    s.cancel(2).await;
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A cancellation of a call still in the queue takes it out of the queue
/// and goes no further; `--error-code` sets the code.
#[tokio::test]
async fn stdio_cancel_while_queued_and_error_code() {
    let mut s = StdioSession::fixture(&[
        "--max-concurrent",
        "1",
        "--queue-size",
        "1",
        "--error-code",
        "-32001",
    ])
    .await;
    s.call_sleep(1, LONG_MS).await;
    s.started(1).await;
    s.call_sleep(2, 10).await;
    s.call_sleep(9, 10).await;
    assert_overload(&s.response(9).await, 9, -32001, "queue_full");
    s.cancel(2).await;
    // The queue is empty again: 3 waits instead of being rejected...
    s.call_sleep(3, 10).await;
    assert!(
        !s.has_response(3).await,
        "call 3 must be queued, not rejected"
    );
    // ...and runs when 1 is cancelled; 2 never reached the upstream.
    s.cancel(1).await;
    assert_eq!(
        s.response(3).await["result"]["content"][0]["text"],
        "slept 10 ms"
    );
    s.stderr
        .wait_for("cancel of 1 upstream", |l| {
            l == "fixture: cancel received 1"
        })
        .await;
    assert!(
        !s.stderr.all().contains("fixture: cancel received 2"),
        "a queued call's cancellation reached the upstream:\n{}",
        s.stderr.all()
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A request from the server to the client passes through, and the client's
/// response to it passes back without touching the slots, even when its id
/// equals the id of the client's own call in flight.
#[tokio::test]
async fn stdio_server_to_client_requests_pass() {
    // The fixture never answers a cancelled call: no cancel grace here.
    let mut s = StdioSession::fixture(&["--max-concurrent", "1", "--cancel-grace", "0"]).await;
    s.call(1, "ask", json!({"ms": LONG_MS})).await;
    let request = s.request_from_server().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(request["id"], 1);
    s.send(json!({"jsonrpc": "2.0", "id": 1, "result": {
        "role": "assistant", "content": {"type": "text", "text": "pong"}, "model": "m"}}))
        .await;
    s.stderr
        .wait_for("the fixture's answer", |l| l == "fixture: answered 1")
        .await;
    // Call 1 still holds the only slot: the client's response freed nothing.
    s.call(2, "echo", json!({"message": "x"})).await;
    assert_overload(&s.response(2).await, 2, -31429, "concurrency_limit");
    s.cancel(1).await;
    s.call(3, "echo", json!({"message": "free"})).await;
    assert_eq!(s.response(3).await["result"]["content"][0]["text"], "free");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}
