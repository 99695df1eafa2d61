//! `simple_server --http-overload-status 429|503` over real HTTP (raw
//! requests, no MCP client): a refused POST gets the status, `Retry-After`
//! and the JSON-RPC body; an admitted call, a long one streaming progress,
//! and the unguarded methods are answered as without the layer.
//!
//! Refusals are deterministic: one slot, no queue, a 60 s `sleep` holding it.

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use crate::support::{PATIENCE, http_url, spawn_server};

const LONG_MS: u64 = 60_000;

/// A raw Streamable HTTP session (legacy session mode, as rmcp serves by
/// default): the session id from `initialize`, then plain POSTs.
struct RawHttp {
    http: reqwest::Client,
    url: String,
    session: String,
}

impl RawHttp {
    async fn open(url: &str) -> Self {
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}});
        let response = in_time(Self::post_with(&http, url, None, &init)).await;
        assert_eq!(response.status(), 200);
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        in_time(response.bytes()).await.unwrap();
        let raw = Self {
            http,
            url: url.to_owned(),
            session,
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(in_time(raw.post(&initialized)).await.status(), 202);
        raw
    }

    async fn post_with(
        http: &reqwest::Client,
        url: &str,
        session: Option<&str>,
        message: &Value,
    ) -> reqwest::Response {
        let mut request = http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(message.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send().await.expect("POST")
    }

    /// POSTs `message`; returns once the response's headers are in.
    async fn post(&self, message: &Value) -> reqwest::Response {
        Self::post_with(&self.http, &self.url, Some(&self.session), message).await
    }
}

/// `future`, or a panic after [`PATIENCE`].
async fn in_time<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("in time")
}

fn call(id: u64, tool: &str, arguments: Value, progress: bool) -> Value {
    let mut params = json!({"name": tool, "arguments": arguments});
    if progress {
        params["_meta"] = json!({"progressToken": format!("p{id}")});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// Reads a response's SSE body until an event's data satisfies `wanted`;
/// returns that message.
async fn read_until(response: &mut reqwest::Response, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut seen = String::new();
    in_time(async {
        loop {
            let chunk = response.chunk().await.expect("read").expect("stream open");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
            for line in seen.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(message) = serde_json::from_str::<Value>(data.trim())
                    && wanted(&message)
                {
                    return message;
                }
            }
        }
    })
    .await
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream")
}

/// The refused answer under `status`: its status, Retry-After and body.
async fn check_refused(raw: &RawHttp, id: u64, status: u16, mode: &str) {
    let response = in_time(raw.post(&call(id, "echo", json!({"message": "hi"}), false))).await;
    assert_eq!(response.status(), status, "{mode}");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let retry_after: u64 = response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = in_time(response.json()).await.expect("a JSON body");
    assert_eq!(body["id"], id);
    let data = match mode {
        "error" => {
            assert_eq!(body["error"]["code"], -31429);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("SERVER_OVERLOADED: concurrency_limit"),
                "{body}"
            );
            body["error"]["data"].clone()
        }
        _ => {
            let result = &body["result"];
            assert_eq!(result["isError"], true);
            let failure = &result["_meta"]["io.modelcontextprotocol/toolFailure"];
            assert_eq!(failure["class"], "overload");
            assert_eq!(failure["code"], "concurrency_limit");
            result["structuredContent"].clone()
        }
    };
    assert_eq!(data["reason"], "concurrency_limit");
    let ms = data["retry_after_ms"].as_u64().unwrap();
    assert_eq!(data["retryAfterMs"], ms);
    assert_eq!(
        retry_after,
        ms.div_ceil(1000).max(1),
        "whole seconds, rounded up"
    );
}

/// Runs the scenario against `simple_server` with `flags`; `status` is what
/// a refused POST must get.
async fn scenario(flags: &[&str], status: u16, mode: &str) {
    let mut args = vec![
        "--transport",
        "http",
        "--bind",
        "127.0.0.1:0",
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--overload-response",
        mode,
    ];
    args.extend_from_slice(flags);
    let mut child = spawn_server(&args);
    let url = http_url(&mut child).await;
    let raw = RawHttp::open(&url).await;

    // A long call: its headers come at admission, while it runs (a second
    // call is refused below, so it still holds the slot), and its progress
    // streams through.
    let mut long = in_time(raw.post(&call(1, "sleep", json!({"ms": LONG_MS}), true))).await;
    assert_eq!(long.status(), 200);
    assert!(is_event_stream(&long));
    let progress = read_until(&mut long, |m| m["method"] == "notifications/progress").await;
    assert_eq!(progress["params"]["progressToken"], "p1");

    check_refused(&raw, 2, status, mode).await;

    // Unguarded methods pass as they are.
    for (id, method) in [(3, "tools/list"), (4, "ping")] {
        let mut response =
            in_time(raw.post(&json!({"jsonrpc": "2.0", "id": id, "method": method}))).await;
        assert_eq!(response.status(), 200, "{method}");
        assert!(is_event_stream(&response), "{method}");
        let answer = read_until(&mut response, |m| m["id"] == id).await;
        assert!(answer.get("result").is_some(), "{method}: {answer}");
    }

    // A call the server admits is answered as without the layer: free the
    // slot (cancel the long call), then retry until admitted.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "reason": "done"}});
    assert_eq!(in_time(raw.post(&cancel)).await.status(), 202);
    let mut admitted = None;
    for id in 100..300 {
        let response = in_time(raw.post(&call(id, "echo", json!({"message": "hi"}), false))).await;
        if response.status() == 200 && is_event_stream(&response) {
            admitted = Some((id, response));
            break;
        }
        in_time(response.bytes()).await.unwrap(); // refused: the slot is not free yet
        tokio::task::yield_now().await;
    }
    let (id, mut response) = admitted.expect("the slot was freed");
    let answer = read_until(&mut response, |m| m["id"] == id).await;
    assert_eq!(answer["result"]["content"][0]["text"], "hi");
    child.kill().await.unwrap();
}

/// 503 and 429, for the JSON-RPC error and for the isError tool result.
#[tokio::test]
async fn a_refused_post_gets_the_status_retry_after_and_the_same_body() {
    for mode in ["error", "tool-result"] {
        scenario(&["--http-overload-status", "503"], 503, mode).await;
    }
    scenario(&["--http-overload-status", "429"], 429, "error").await;
}

/// Without the option a refusal travels in a 200 event stream (the control:
/// the status above comes from the layer).
#[tokio::test]
async fn without_the_option_a_refusal_is_a_200_event_stream() {
    let mut child = spawn_server(&[
        "--transport",
        "http",
        "--bind",
        "127.0.0.1:0",
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
    ]);
    let url = http_url(&mut child).await;
    let raw = RawHttp::open(&url).await;
    let mut long = in_time(raw.post(&call(1, "sleep", json!({"ms": LONG_MS}), true))).await;
    read_until(&mut long, |m| m["method"] == "notifications/progress").await;
    let mut refused = in_time(raw.post(&call(2, "echo", json!({"message": "hi"}), false))).await;
    assert_eq!(refused.status(), 200);
    assert!(refused.headers().get(RETRY_AFTER).is_none());
    assert!(is_event_stream(&refused));
    let answer = read_until(&mut refused, |m| m["id"] == 2).await;
    assert_eq!(answer["error"]["code"], -31429);
    child.kill().await.unwrap();
}

/// A long call that sends nothing until it ends (no progress token) gets its
/// headers at admission, not at its answer.
#[tokio::test]
async fn an_admitted_call_gets_its_headers_before_it_answers() {
    let mut child = spawn_server(&[
        "--transport",
        "http",
        "--bind",
        "127.0.0.1:0",
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--http-overload-status",
        "503",
    ]);
    let url = http_url(&mut child).await;
    let raw = RawHttp::open(&url).await;
    // Had the layer waited for the first message, the headers would take
    // 60 s, past PATIENCE.
    let long = in_time(raw.post(&call(1, "sleep", json!({"ms": LONG_MS}), false))).await;
    assert_eq!(long.status(), 200);
    // ...and the call still runs: it holds the only slot.
    check_refused(&raw, 2, 503, "error").await;
    drop(long);
    child.kill().await.unwrap();
}
