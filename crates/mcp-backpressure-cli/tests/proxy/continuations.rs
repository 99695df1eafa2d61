//! Multi-round-trip calls (SEP-2322) through the proxy: a retry carrying
//! `inputResponses` or `requestState` continues a call whose first round
//! already ran. It is never refused for want of a queue place, and it is
//! served before calls that arrived after it.

use serde_json::{Value, json};

use crate::support::{StdioSession, fixture, metrics_url, python3, wait_metric};

fn plain(id: u64, ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "work", "arguments": {"ms": ms}}})
}

fn retry(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 10},
        "inputResponses": {"confirm": {"action": "accept", "content": {"ok": true}}},
        "requestState": "opaque-state-from-round-one"}})
}

async fn proxy(limits: &[&str]) -> (StdioSession, String) {
    let script = fixture("tasks_2025_server.py");
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(limits);
    let mut session = StdioSession::spawn(&args, &[python3(), script.to_str().unwrap()]);
    session.initialize().await;
    let metrics = metrics_url(&mut session.stderr).await;
    (session, metrics)
}

#[tokio::test]
async fn with_no_queue_a_continuation_waits_for_the_slot_instead_of_being_refused() {
    let (mut s, metrics) = proxy(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    s.send(plain(1, 300)).await;
    wait_metric(&metrics, "mcp_backpressure_active", 1.0).await;
    // An ordinary call is refused at once; the person's answer is not.
    s.send(plain(2, 10)).await;
    assert_eq!(
        s.response(2).await["error"]["data"]["reason"],
        "concurrency_limit"
    );
    s.send(retry(3)).await;
    let answered = s.response(3).await;
    assert!(answered.get("result").is_some(), "{answered}");
    wait_metric(&metrics, "mcp_backpressure_continuations_ahead_total", 1.0).await;
}

#[tokio::test]
async fn a_continuation_is_served_before_calls_that_queued_before_it() {
    let (mut s, metrics) = proxy(&["--max-concurrent", "1", "--queue-size", "5"]).await;
    s.send(plain(1, 300)).await;
    wait_metric(&metrics, "mcp_backpressure_active", 1.0).await;
    s.send(plain(2, 10)).await;
    wait_metric(&metrics, "mcp_backpressure_queued", 1.0).await;
    s.send(retry(3)).await;
    wait_metric(&metrics, "mcp_backpressure_continuations_waiting", 1.0).await;
    let (first, _) = s.first_response(&[2, 3]).await;
    assert_eq!(first, 3, "the continuation goes first");
    assert!(s.response(2).await.get("result").is_some());
}
