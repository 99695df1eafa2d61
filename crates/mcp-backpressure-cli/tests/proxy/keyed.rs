//! Keyed admission through the proxy, end to end: per-tool limits and
//! weights (stdio and HTTP), per-client limits and round-robin across
//! `--client-key header:x-client-id` keys, and what a client that plays
//! with its key gets (fresh keys, no key, a long key, the header twice).
//!
//! Upstreams: `tests/fixtures/raw_server.py` (stdio) and the in-test
//! [`Recorder`] (HTTP), which records the order calls reach it.

use serde_json::json;

use crate::recorder::{Recorder, call, joined, post_as, spawn_post, text};
use crate::support::{StdioSession, assert_overload, http_proxy, metric, metrics_url, wait_metric};

const ACTIVE: &str = "mcp_backpressure_active";
const RUNNING: &str = "mcp_backpressure_running";
const QUEUED: &str = "mcp_backpressure_queued";
const TRACKED: &str = "mcp_backpressure_tracked_keys";

fn hold(id: u64, tag: &str) -> String {
    call(id, "hold", json!({"tag": tag}))
}

/// `--tool-limit hold=1`: a second `hold` is refused by the tool's own
/// limit (`data.scope = "tool:hold"`) while another tool still runs; the
/// per-tool series count it.
#[tokio::test]
async fn http_a_tool_over_its_limit_is_refused_with_its_scope_while_others_run() {
    let (upstream, upstream_url) = Recorder::start().await;
    let (_proxy, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "4",
            "--tool-limit",
            "hold=1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream_url,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    let held = spawn_post(&url, None, hold(1, "first"));
    upstream.wait_started(1).await;
    let (status, refused) = post_as(&url, None, hold(2, "second")).await;
    assert_eq!(status, 200);
    let data = assert_overload(&refused, 2, -31429, "concurrency_limit");
    assert_eq!(data["scope"], "tool:hold", "{refused}");
    let (_, echoed) = post_as(&url, None, call(3, "echo", json!({"tag": "other"}))).await;
    assert_eq!(text(&echoed), "other");
    for (sample, value) in [
        ("mcp_backpressure_tool_running{tool=\"hold\"}", 1.0),
        ("mcp_backpressure_tool_limit{tool=\"hold\"}", 1.0),
        ("mcp_backpressure_tool_admitted_total{tool=\"hold\"}", 1.0),
        ("mcp_backpressure_tool_rejected_total{tool=\"hold\"}", 1.0),
        ("mcp_backpressure_tool_admitted_total{tool=\"*\"}", 1.0),
        ("mcp_backpressure_tool_rejected_total{tool=\"*\"}", 0.0),
    ] {
        assert_eq!(metric(&metrics, sample).await, value, "{sample}");
    }
    upstream.release(1);
    assert_eq!(text(&joined(held).await), "first");
    assert_eq!(upstream.started(), ["first", "other"]);
}

/// The same over stdio, and a tool's weight: `sleep` takes 3 of 4 slots, so
/// a second `sleep` does not fit (the global limit refuses it) while `echo`
/// (weight 1) does.
#[tokio::test]
async fn stdio_tool_limits_and_weights() {
    let mut s = StdioSession::fixture(&[
        "--max-concurrent",
        "4",
        "--tool-limit",
        "sleep=2",
        "--tool-weight",
        "sleep=3",
        "--metrics",
        "127.0.0.1:0",
    ])
    .await;
    let metrics = metrics_url(&mut s.stderr).await;
    s.call_sleep(1, 60_000).await;
    s.started(1).await;
    wait_metric(&metrics, ACTIVE, 3.0).await;
    assert_eq!(metric(&metrics, RUNNING).await, 1.0);
    // The tool has room (1 of 2), the global limit has not (3 + 3 > 4).
    s.call_sleep(2, 10).await;
    let refused = s.response(2).await;
    let data = assert_overload(&refused, 2, -31429, "concurrency_limit");
    assert_eq!(data["scope"], "global", "{refused}");
    assert_eq!(data["active"], 3, "{refused}");
    s.call(3, "echo", json!({"message": "light"})).await;
    assert_eq!(s.response(3).await["result"]["content"][0]["text"], "light");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// Over stdio a tool's own limit refuses with its scope too.
#[tokio::test]
async fn stdio_a_tool_over_its_limit_is_refused_with_its_scope() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "4", "--tool-limit", "sleep=1"]).await;
    s.call_sleep(1, 60_000).await;
    s.started(1).await;
    s.call_sleep(2, 10).await;
    let refused = s.response(2).await;
    let data = assert_overload(&refused, 2, -31429, "concurrency_limit");
    assert_eq!(data["scope"], "tool:sleep", "{refused}");
    s.call(3, "echo", json!({"message": "still runs"})).await;
    assert_eq!(
        s.response(3).await["result"]["content"][0]["text"],
        "still runs"
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// `--client-limit 1 --client-key header:x-client-id`: each key runs one
/// call at a time (its second is refused, `scope = "client"`), other keys
/// are not held back, and calls without the header share one client — they
/// do not escape the cap.
#[tokio::test]
async fn http_client_limit_caps_each_key_and_keyless_calls_share_one() {
    let (upstream, upstream_url) = Recorder::start().await;
    let (_proxy, _log, url) = http_proxy(
        &[
            "--max-concurrent",
            "8",
            "--client-limit",
            "1",
            "--client-key",
            "header:X-Client-Id",
        ],
        &upstream_url,
    )
    .await;
    let alice = spawn_post(&url, Some("alice"), hold(1, "alice"));
    upstream.wait_started(1).await;
    let (_, refused) = post_as(&url, Some("alice"), hold(2, "alice again")).await;
    let data = assert_overload(&refused, 2, -31429, "concurrency_limit");
    assert_eq!(data["scope"], "client", "{refused}");
    let bob = spawn_post(&url, Some("bob"), hold(3, "bob"));
    upstream.wait_started(2).await;
    let keyless = spawn_post(&url, None, hold(4, "nobody"));
    upstream.wait_started(3).await;
    let (_, refused) = post_as(&url, None, hold(5, "nobody again")).await;
    let data = assert_overload(&refused, 5, -31429, "concurrency_limit");
    assert_eq!(data["scope"], "client", "{refused}");
    upstream.release(3);
    for task in [alice, bob, keyless] {
        joined(task).await;
    }
    assert_eq!(upstream.started(), ["alice", "bob", "nobody"]);
}

/// One slot; client A queues five calls, then client B one: B's call
/// reaches the upstream within one turn of A's, not behind all five (FIFO
/// would put it last).
#[tokio::test]
async fn http_queued_calls_are_served_round_robin_across_client_keys() {
    let (upstream, upstream_url) = Recorder::start().await;
    let (_proxy, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "10",
            "--client-key",
            "header:x-client-id",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream_url,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    let mut tasks = vec![spawn_post(&url, Some("A"), hold(0, "A0"))];
    upstream.wait_started(1).await;
    for i in 1..=5 {
        tasks.push(spawn_post(&url, Some("A"), hold(i, &format!("A{i}"))));
        // One at a time, so that A's calls queue in a known order.
        wait_metric(&metrics, QUEUED, i as f64).await;
    }
    tasks.push(spawn_post(&url, Some("B"), hold(10, "B1")));
    wait_metric(&metrics, QUEUED, 6.0).await;
    upstream.release(7);
    for task in tasks {
        joined(task).await;
    }
    let order = upstream.started();
    assert_eq!(order.len(), 7, "{order:?}");
    let b = order.iter().position(|t| t == "B1").unwrap();
    assert!(
        b <= 2,
        "B waited behind more than one of A's calls: {order:?}"
    );
    let a: Vec<&String> = order.iter().filter(|t| t.starts_with('A')).collect();
    assert_eq!(
        a,
        ["A0", "A1", "A2", "A3", "A4", "A5"],
        "A's own calls stay in order"
    );
}

/// A client that sends a fresh key with every call cannot make the proxy
/// track more than `--max-tracked-keys` (+ one shared overflow entry); the
/// keys beyond share one client (here: its one slot), and once the calls
/// are done nothing is tracked.
#[tokio::test]
async fn http_fresh_keys_per_call_are_tracked_within_the_bound() {
    let (upstream, upstream_url) = Recorder::start().await;
    let (_proxy, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "8",
            "--client-limit",
            "1",
            "--client-key",
            "header:x-client-id",
            "--max-tracked-keys",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream_url,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    let mut running = Vec::new();
    for i in 0..3 {
        running.push(spawn_post(&url, Some(&format!("key-{i}")), hold(i, "held")));
        upstream.wait_started(i as usize + 1).await;
    }
    assert_eq!(metric(&metrics, TRACKED).await, 3.0);
    // key-3 and key-4 are beyond the bound: they share key-2's overflow
    // entry, whose one slot is taken.
    for i in 3..5 {
        let (_, refused) = post_as(&url, Some(&format!("key-{i}")), hold(i, "x")).await;
        let data = assert_overload(&refused, i, -31429, "concurrency_limit");
        assert_eq!(data["scope"], "client", "{refused}");
    }
    assert_eq!(metric(&metrics, TRACKED).await, 3.0);
    upstream.release(3);
    for task in running {
        joined(task).await;
    }
    wait_metric(&metrics, TRACKED, 0.0).await;
    wait_metric(&metrics, ACTIVE, 0.0).await;
}

/// A client key longer than 256 bytes gets -32600 under its request's id
/// and takes no slot; the header given twice is refused like any routing
/// header given twice.
#[tokio::test]
async fn http_a_long_or_repeated_client_key_is_refused() {
    let (upstream, upstream_url) = Recorder::start().await;
    let (_proxy, _log, url) = http_proxy(
        &[
            "--max-concurrent",
            "1",
            "--client-key",
            "header:x-client-id",
        ],
        &upstream_url,
    )
    .await;
    let long = "k".repeat(257);
    let (status, refused) = post_as(&url, Some(&long), hold(1, "x")).await;
    assert_eq!(status, 200);
    assert_eq!(refused["id"], 1, "{refused}");
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the client key (the x-client-id header) is longer than 256 bytes"),
        "{message}"
    );
    let response = crate::http_client::client()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-client-id", "a")
        .header("x-client-id", "b")
        .body(call(2, "echo", json!({"tag": "twice"})))
        .send()
        .await
        .unwrap();
    // Answered under the request's id (a JSON-RPC error about a request the
    // proxy read travels as 200).
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], 2, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("x-client-id header is given more than once"),
        "{message}"
    );
    // At the bound, the call runs: the slot was never taken.
    let fits = "k".repeat(256);
    let (_, echoed) = post_as(&url, Some(&fits), call(3, "echo", json!({"tag": "fits"}))).await;
    assert_eq!(text(&echoed), "fits");
    assert_eq!(upstream.started(), ["fits"]);
}
