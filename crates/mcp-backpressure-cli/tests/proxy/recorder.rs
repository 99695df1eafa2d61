//! An in-test Streamable HTTP upstream (sessionless, JSON bodies, on
//! 127.0.0.1) that records the order tool calls reach it and answers each
//! as its tool says:
//!
//! - `hold {"tag"}`: recorded, then waits for a release ([`Recorder::release`]);
//! - `echo {"tag"}`: recorded, answered at once;
//! - `sleep {"tag", "ms"}`: recorded, answered after `ms` milliseconds;
//! - `fail {"code"}`: a JSON-RPC error with that code;
//! - `tool_error`: a result with `isError: true`;
//! - `status {"code"}`: an HTTP response of that status with a plain body.
//!
//! It counts the `hold`, `echo` and `sleep` calls running at once (until
//! answered, or until their connection is dropped) and the most ever seen:
//! the concurrency the upstream really sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::http_client::client;
use crate::support::PATIENCE;

/// The upstream's shared state.
#[derive(Clone)]
pub struct Recorder {
    /// Tags of the calls, in the order they reached the upstream.
    started: Arc<watch::Sender<Vec<String>>>,
    /// One permit per `hold` call allowed to finish.
    releases: Arc<Semaphore>,
    /// Calls running now, and the most seen at once.
    running: Arc<(AtomicUsize, AtomicUsize)>,
}

/// One running call, counted until dropped.
struct Running(Arc<(AtomicUsize, AtomicUsize)>);

impl Running {
    fn start(counts: &Arc<(AtomicUsize, AtomicUsize)>) -> Self {
        let now = counts.0.fetch_add(1, Ordering::SeqCst) + 1;
        counts.1.fetch_max(now, Ordering::SeqCst);
        Self(counts.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Recorder {
    /// Starts the upstream; returns it and its URL.
    pub async fn start() -> (Self, String) {
        let recorder = Self {
            started: Arc::new(watch::channel(Vec::new()).0),
            releases: Arc::new(Semaphore::new(0)),
            running: Arc::new((AtomicUsize::new(0), AtomicUsize::new(0))),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (recorder, format!("http://{addr}/mcp"))
    }

    /// Lets `n` more `hold` calls finish (running ones first, then those
    /// still to come).
    pub fn release(&self, n: usize) {
        self.releases.add_permits(n);
    }

    /// Calls (`hold`, `echo`, `sleep`) running at the upstream now.
    pub fn running(&self) -> usize {
        self.running.0.load(Ordering::SeqCst)
    }

    /// The most calls that ever ran at once.
    pub fn max_running(&self) -> usize {
        self.running.1.load(Ordering::SeqCst)
    }

    /// Starts counting the most calls at once again from those running now.
    pub fn reset_max_running(&self) {
        self.running.1.store(self.running(), Ordering::SeqCst);
    }

    /// The tags recorded so far, in order.
    pub fn started(&self) -> Vec<String> {
        self.started.borrow().clone()
    }

    /// Waits (bounded by [`PATIENCE`]) until `n` calls were recorded.
    pub async fn wait_started(&self, n: usize) -> Vec<String> {
        let mut seen = self.started.subscribe();
        let waited = tokio::time::timeout(PATIENCE, seen.wait_for(|s| s.len() >= n)).await;
        match waited {
            Ok(Ok(started)) => started.clone(),
            _ => panic!(
                "{n} calls did not reach the upstream; got {:?}",
                self.started()
            ),
        }
    }
}

async fn answer(State(recorder): State<Recorder>, request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let respond =
        |body: Value| ([("content-type", "application/json")], body.to_string()).into_response();
    if method != "tools/call" {
        return respond(json!({"jsonrpc": "2.0", "id": id, "result": {}}));
    }
    let name = message["params"]["name"].as_str().unwrap_or_default();
    let arguments = &message["params"]["arguments"];
    let text = |text: &str| {
        json!({"jsonrpc": "2.0", "id": id,
            "result": {"content": [{"type": "text", "text": text}], "isError": false}})
    };
    match name {
        "hold" | "echo" | "sleep" => {
            let _running = Running::start(&recorder.running);
            let tag = arguments["tag"].as_str().unwrap_or_default().to_owned();
            recorder.started.send_modify(|s| s.push(tag.clone()));
            if name == "hold" {
                recorder.releases.acquire().await.unwrap().forget();
            }
            if name == "sleep" {
                let ms = arguments["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            respond(text(&tag))
        }
        "fail" => respond(json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": arguments["code"], "message": "failed as asked"}})),
        "tool_error" => respond(json!({"jsonrpc": "2.0", "id": id,
            "result": {"content": [{"type": "text", "text": "no"}], "isError": true}})),
        "status" => {
            let code = arguments["code"].as_u64().unwrap_or(500);
            let status = StatusCode::from_u16(u16::try_from(code).unwrap()).unwrap();
            (status, "as asked\n").into_response()
        }
        other => respond(json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32602, "message": format!("unknown tool {other}")}})),
    }
}

/// A `tools/call` of `tool` with `arguments`.
pub fn call(id: u64, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

/// POSTs `body` to the proxy at `url` as the client `key` (the
/// `x-client-id` header; none for `None`); returns the status and the JSON
/// body (`Null` when it is not JSON).
pub async fn post_as(url: &str, key: Option<&str>, body: String) -> (u16, Value) {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(key) = key {
        request = request.header("x-client-id", key);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("a response in time")
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// [`post_as`] on a task of its own.
pub fn spawn_post(
    url: &str,
    key: Option<&str>,
    body: String,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = url.to_owned();
    let key = key.map(str::to_owned);
    tokio::spawn(async move { post_as(&url, key.as_deref(), body).await })
}

/// The answer of a spawned POST, bounded by [`PATIENCE`].
pub async fn joined(task: tokio::task::JoinHandle<(u16, Value)>) -> Value {
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the answer in time")
        .unwrap()
        .1
}

/// The text of a tool result.
pub fn text(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"))
}
