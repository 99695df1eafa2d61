//! A fresh reviewer's attacks, kept as tests: each one held a slot for
//! nothing before it was fixed.

use std::time::Duration;

use serde_json::json;

use crate::http_client::HttpSession;
use crate::support::{StdioSession, http_proxy, http_server, metric, metrics_url};

/// A GET carrying a `tools/call` body: the upstream treats a GET as its
/// standalone SSE stream and never runs the call, so the proxy must not take
/// a slot for it (it drops the body) — else one client holding such GETs
/// open would turn every other client away from an idle upstream.
#[tokio::test]
async fn a_get_carrying_a_tools_call_takes_no_slot() {
    let (_server, _log, upstream) = http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let (_proxy, mut proxy_log, url) = http_proxy(
        &["--max-concurrent", "1", "--metrics", "127.0.0.1:0"],
        &upstream,
    )
    .await;
    let metrics = metrics_url(&mut proxy_log).await;
    let attacker = HttpSession::initialize(&url).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x"}}});
    let held = attacker
        .client
        .get(&url)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", attacker.session.clone().unwrap())
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .expect("GET");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = HttpSession::initialize(&url).await;
    let mut answer = victim.call(2, "echo", json!({"message": "y"})).await;
    let answer = answer.message_with_id(&json!(2)).await;
    let active = metric(&metrics, "mcp_backpressure_active").await;
    drop(held);
    assert!(
        answer.get("result").is_some(),
        "an idle upstream, yet the victim got {answer} (active = {active})"
    );
}

/// Requests the upstream would not read as requests — `params._meta: 5`
/// (rmcp answers with an id-less error) — are refused by the proxy, so no
/// slot waits for an answer that never comes. (`id: 1.0`, which the Python
/// SDK reads as a notification, goes upstream as `1`: see the wire tests.)
#[tokio::test]
async fn a_request_the_upstream_cannot_read_is_refused_and_takes_no_slot() {
    let mut s =
        StdioSession::simple(&["--max-concurrent", "1"], &["--max-concurrent", "1000"]).await;
    s.send_raw(
        br#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a"},"_meta":5}}
"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.send(json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "b"}}}))
        .await;
    let refused = s.response(11).await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let answer = s.response(12).await;
    assert!(
        answer.get("result").is_some(),
        "slot leaked by id 11: {answer}"
    );
}
