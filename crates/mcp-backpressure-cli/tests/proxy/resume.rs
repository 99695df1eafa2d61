//! A client that drops a call's event stream, end to end, against an
//! in-test Streamable HTTP upstream with sessions and resumable SSE (see the
//! README, "What is limited, and when a slot is freed", *Disconnection*):
//!
//! - a resumable stream (its events carry ids): the call keeps its slot, is
//!   not cancelled, and its response resumed with `GET` + `Last-Event-ID`
//!   frees the slot; nobody resumes → the grace frees it and cancels it
//!   upstream in its session;
//! - a stream without ids, in a session: cancelled upstream at once, the
//!   slot held until the upstream ends that stream (or the grace);
//! - without a session: the upstream stream is closed (no cancellation
//!   POST), the slot held for the grace.
//!
//! Every wait is bounded by [`PATIENCE`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use crate::http_client::client;
use crate::support::{
    PATIENCE, Stderr, assert_overload, http_proxy, metric, metrics_url, wait_metric,
};

const ACTIVE: &str = "mcp_backpressure_active";
const HELD: &str = "mcp_backpressure_held_after_cancel";
const EXPIRED: &str = "mcp_backpressure_cancel_grace_expired_total";
const IN_FLIGHT: &str = "mcp_backpressure_in_flight";
const ADMITTED: &str = "mcp_backpressure_admitted_total";

// The mock upstream ----------------------------------------------------------------

/// One request the mock received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    session: Option<String>,
    last_event_id: Option<String>,
    body: Value,
}

/// What the mock knows: the requests it got, the event streams it holds
/// open (by label: `POST <session> <id>` or `GET <session>`), and the
/// labels of streams whose body was dropped (the peer went away, or the
/// stream ended).
#[derive(Default)]
struct MockState {
    seen: Vec<Seen>,
    streams: HashMap<String, mpsc::UnboundedSender<Bytes>>,
    closed: Vec<String>,
}

/// A Streamable HTTP upstream at `/mcp` whose behaviour is chosen by the
/// tool name of each `tools/call`:
///
/// - `resumable`: an event stream, primed with `id: e1` and empty data, then
///   held open;
/// - `plain`: an event stream without ids (one progress notification), held
///   open;
/// - anything else: a JSON answer at once.
///
/// A `GET` opens an event stream held open. Open streams get a comment
/// every 100 ms, so that a closed connection is noticed by a failed write.
#[derive(Clone)]
struct Mock {
    state: std::sync::Arc<watch::Sender<MockState>>,
}

impl Mock {
    async fn start() -> (Self, String) {
        let mock = Self {
            state: std::sync::Arc::new(watch::channel(MockState::default()).0),
        };
        let app = axum::Router::new().fallback(serve).with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (mock, format!("http://{addr}/mcp"))
    }

    /// Waits (bounded) until `check` holds of the state; returns what it
    /// returned.
    async fn wait<T>(&self, what: &str, check: impl Fn(&MockState) -> Option<T>) -> T {
        let mut state = self.state.subscribe();
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(found) = check(&state.borrow_and_update()) {
                    return found;
                }
                state.changed().await.expect("the mock lives");
            }
        })
        .await;
        match found {
            Ok(found) => found,
            Err(_) => panic!(
                "the mock upstream never saw {what}; it got:\n{:#?}",
                self.seen()
            ),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.borrow().seen.clone()
    }

    /// The `notifications/cancelled` the mock received.
    fn cancellations(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.body["method"] == "notifications/cancelled")
            .collect()
    }

    /// Waits for a cancellation of `id` in `session`.
    async fn cancellation(&self, session: &str, id: u64) -> Seen {
        self.wait(&format!("a cancellation of {id} in {session}"), |s| {
            s.seen
                .iter()
                .find(|r| {
                    r.body["method"] == "notifications/cancelled"
                        && r.body["params"]["requestId"] == id
                        && r.session.as_deref() == Some(session)
                })
                .cloned()
        })
        .await
    }

    /// Waits until the stream `label` is open; returns its sender.
    async fn stream(&self, label: &str) -> mpsc::UnboundedSender<Bytes> {
        self.wait(&format!("the stream {label}"), |s| {
            s.streams.get(label).cloned()
        })
        .await
    }

    /// Ends the stream `label` (drops the mock's senders).
    fn end(&self, label: &str) {
        self.state.send_modify(|s| {
            s.streams.remove(label);
        });
    }

    /// Waits until the body of the stream `label` is dropped.
    async fn closed(&self, label: &str) {
        self.wait(&format!("the stream {label} closed"), |s| {
            s.closed.iter().any(|l| l == label).then_some(())
        })
        .await;
    }

    fn is_closed(&self, label: &str) -> bool {
        self.state.borrow().closed.iter().any(|l| l == label)
    }

    /// An event stream labelled `label` starting with `first`, held open
    /// until [`Mock::end`].
    fn event_stream(&self, label: String, first: &str) -> Response {
        let (tx, rx) = mpsc::unbounded_channel();
        if !first.is_empty() {
            tx.send(Bytes::from(first.to_owned())).unwrap();
        }
        let pinger = tx.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(tx) = pinger.upgrade() else { return };
                if tx.send(Bytes::from_static(b": ping\n\n")).is_err() {
                    return;
                }
            }
        });
        self.state.send_modify(|s| {
            s.streams.insert(label.clone(), tx);
        });
        let guard = Closed {
            mock: self.clone(),
            label,
        };
        let body = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, Infallible>(chunk), (rx, guard)))
        });
        (
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// Records that a stream's body was dropped.
struct Closed {
    mock: Mock,
    label: String,
}

impl Drop for Closed {
    fn drop(&mut self) {
        let label = std::mem::take(&mut self.label);
        self.mock.state.send_modify(|s| {
            s.streams.remove(&label);
            s.closed.push(label);
        });
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn serve(State(mock): State<Mock>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let session = header(&parts.headers, "mcp-session-id");
    let seen = Seen {
        method: parts.method.clone(),
        session: session.clone(),
        last_event_id: header(&parts.headers, "last-event-id"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    mock.state.send_modify(|s| s.seen.push(seen.clone()));
    let session = session.unwrap_or_else(|| "-".to_owned());
    if parts.method == Method::GET {
        return mock.event_stream(format!("GET {session}"), "");
    }
    if parts.method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let message = seen.body;
    let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let label = format!("POST {session} {id}");
    if method == "tools/call" {
        match message["params"]["name"].as_str().unwrap_or_default() {
            "resumable" => return mock.event_stream(label, "id: e1\ndata: \n\n"),
            "plain" => {
                let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": id, "progress": 1}});
                return mock.event_stream(label, &format!("data: {progress}\n\n"));
            }
            _ => {}
        }
    }
    (
        [("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": id, "result": {"content": [], "isError": false}})
            .to_string(),
    )
        .into_response()
}

// The client --------------------------------------------------------------------------

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}})
}

/// POSTs `message` (in `session`, if any); returns the response, its body
/// unread.
async fn post(url: &str, session: Option<&str>, message: &Value) -> reqwest::Response {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("response headers in time")
        .expect("POST")
}

/// An event stream read event by event.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{response:?}"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event that is not a comment, as its raw text (`None` at the
    /// end of the stream).
    async fn event(&mut self) -> Option<String> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let event = self.buffer[..end].to_owned();
                    self.buffer.drain(..end + 2);
                    if event.lines().all(|l| l.starts_with(':')) {
                        continue;
                    }
                    return Some(event);
                }
                match self.response.chunk().await {
                    Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
        .expect("an event in time")
    }

    /// The data of the next event that carries JSON.
    async fn message(&mut self) -> Value {
        loop {
            let event = self.event().await.expect("a message before the end");
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if let Ok(message) = serde_json::from_str(&data.join("\n")) {
                return message;
            }
        }
    }
}

/// The proxy in front of `upstream`, one slot and no queue, with metrics;
/// returns it, its URL and its metrics URL.
async fn proxy(upstream: &str, grace: &str) -> (Child, String, String) {
    let (child, _log, url, metrics) = proxy_with_log(upstream, grace).await;
    // The log is drained on its own task; the handle is not needed.
    (child, url, metrics)
}

/// [`proxy`], with its log.
async fn proxy_with_log(upstream: &str, grace: &str) -> (Child, Stderr, String, String) {
    let (child, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "0",
            "--cancel-grace",
            grace,
            "--metrics",
            "127.0.0.1:0",
        ],
        upstream,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    (child, log, url, metrics)
}

/// Starts call `id` with `tool` in `session`; reads its first event, then
/// drops the connection. Returns that event.
async fn call_and_drop(url: &str, session: Option<&str>, id: u64, tool: &str) -> String {
    let mut stream = Sse::new(post(url, session, &call(id, tool)).await);
    let first = stream.event().await.expect("a first event");
    drop(stream);
    first
}

/// Asserts that the only slot is taken: a `tools/call` in another session
/// is turned away.
async fn assert_slot_taken(url: &str, id: u64) {
    let response = post(url, Some("other"), &call(id, "echo")).await;
    let rejected: Value = response.json().await.unwrap();
    assert_overload(&rejected, id, -31429, "concurrency_limit");
}

/// Asserts that the only slot is free: a `tools/call` is answered.
async fn assert_slot_free(url: &str, id: u64) {
    let response = post(url, Some("other"), &call(id, "echo")).await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["id"], id, "{answer}");
    assert!(answer.get("result").is_some(), "not admitted: {answer}");
}

async fn kill(mut proxy: Child) {
    proxy.kill().await.unwrap();
}

// The tests ----------------------------------------------------------------------------

/// A resumable stream dropped by its client: the call keeps its slot and is
/// not cancelled upstream; the client resumes with `GET` + `Last-Event-ID`,
/// gets its response there, and the slot is free.
#[tokio::test]
async fn http_resumed_call_keeps_its_slot_until_its_response_passes_on_the_get() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "30").await;

    let priming = call_and_drop(&url, Some("s1"), 1, "resumable").await;
    assert_eq!(
        priming, "id: e1\ndata: ",
        "the priming event passes as it is"
    );
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert_slot_taken(&url, 2).await;
    // The proxy let go of the upstream's POST stream (the upstream keeps the
    // events for a resumption).
    mock.closed("POST s1 1").await;

    let get = client()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", "s1")
        .header("last-event-id", "e1")
        .send();
    let mut resumed = Sse::new(
        tokio::time::timeout(PATIENCE, get)
            .await
            .expect("the GET's headers in time")
            .expect("GET"),
    );
    let seen = mock
        .wait("the GET", |s| {
            s.seen.iter().find(|r| r.method == Method::GET).cloned()
        })
        .await;
    assert_eq!(seen.session.as_deref(), Some("s1"), "{seen:?}");
    assert_eq!(seen.last_event_id.as_deref(), Some("e1"), "{seen:?}");
    let result = json!({"jsonrpc": "2.0", "id": 1,
        "result": {"content": [{"type": "text", "text": "done"}], "isError": false}});
    mock.stream("GET s1")
        .await
        .send(Bytes::from(format!("id: e2\ndata: {result}\n\n")))
        .unwrap();
    let message = resumed.message().await;
    assert_eq!(message, result, "the response passes on the GET");

    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, HELD, 0.0).await;
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 0.0);
    assert_eq!(metric(&metrics, EXPIRED).await, 0.0);
    assert_slot_free(&url, 3).await;
    assert_eq!(metric(&metrics, ADMITTED).await, 2.0);
    assert!(
        mock.cancellations().is_empty(),
        "a resumable call was cancelled upstream: {:#?}",
        mock.cancellations()
    );
    drop(resumed);
    kill(proxy).await;
}

/// A resumable stream dropped, nobody resumes: after the grace the slot is
/// free, and the call is cancelled upstream in its session.
#[tokio::test]
async fn http_unresumed_call_is_freed_and_cancelled_after_the_grace() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "1").await;

    call_and_drop(&url, Some("s1"), 1, "resumable").await;
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert!(
        mock.cancellations().is_empty(),
        "cancelled before the grace: {:#?}",
        mock.cancellations()
    );

    wait_metric(&metrics, EXPIRED, 1.0).await;
    wait_metric(&metrics, ACTIVE, 0.0).await;
    assert_eq!(metric(&metrics, HELD).await, 0.0);
    let cancel = mock.cancellation("s1", 1).await;
    assert_eq!(cancel.method, Method::POST);
    assert_eq!(cancel.body["jsonrpc"], "2.0", "{cancel:?}");
    assert_eq!(cancel.body.get("id"), None, "a notification: {cancel:?}");
    assert_slot_free(&url, 2).await;
    assert_eq!(mock.cancellations().len(), 1, "{:#?}", mock.cancellations());
    kill(proxy).await;
}

/// A stream without event ids, in a session, dropped by its client: the
/// call is cancelled upstream at once and keeps its slot until the upstream
/// ends that stream.
#[tokio::test]
async fn http_unresumable_call_is_cancelled_at_once_and_held_until_its_stream_ends() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "30").await;

    let first = call_and_drop(&url, Some("s2"), 1, "plain").await;
    assert!(first.contains("notifications/progress"), "{first}");
    let cancel = mock.cancellation("s2", 1).await;
    assert_eq!(cancel.body["params"]["requestId"], 1, "{cancel:?}");
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert_slot_taken(&url, 2).await;
    // The proxy still reads the upstream's stream, to see when it is done.
    assert!(!mock.is_closed("POST s2 1"));

    mock.end("POST s2 1");
    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, HELD, 0.0).await;
    assert_eq!(metric(&metrics, EXPIRED).await, 0.0);
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 0.0);
    assert_slot_free(&url, 3).await;
    assert_eq!(mock.cancellations().len(), 1, "{:#?}", mock.cancellations());
    kill(proxy).await;
}

/// As above, but the upstream answers the cancelled call on its stream
/// (as the Python SDK does once the tool has stopped): the slot is free.
#[tokio::test]
async fn http_unresumable_call_is_held_until_the_upstream_answers_it() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "30").await;

    call_and_drop(&url, Some("s2"), 1, "plain").await;
    mock.cancellation("s2", 1).await;
    wait_metric(&metrics, HELD, 1.0).await;
    let answer = json!({"jsonrpc": "2.0", "id": 1,
        "error": {"code": -32800, "message": "cancelled"}});
    mock.stream("POST s2 1")
        .await
        .send(Bytes::from(format!("data: {answer}\n\n")))
        .unwrap();
    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, HELD, 0.0).await;
    assert_eq!(metric(&metrics, EXPIRED).await, 0.0);
    assert_slot_free(&url, 2).await;
    // Done with the calls it watched, the proxy stops reading the stream.
    mock.closed("POST s2 1").await;
    kill(proxy).await;
}

/// A stream without event ids, in a session, that the upstream never ends:
/// the grace frees the slot, and counts as an expiry.
#[tokio::test]
async fn http_unresumable_call_is_freed_by_the_grace() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "1").await;

    call_and_drop(&url, Some("s2"), 1, "plain").await;
    mock.cancellation("s2", 1).await;
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    wait_metric(&metrics, ACTIVE, 0.0).await;
    assert_eq!(metric(&metrics, HELD).await, 0.0);
    assert_slot_free(&url, 2).await;
    assert_eq!(
        metric(&metrics, EXPIRED).await,
        1.0,
        "the slot was freed by the grace, but not counted as such"
    );
    // The background read of the upstream's stream ended with the grace.
    mock.closed("POST s2 1").await;
    assert_eq!(mock.cancellations().len(), 1, "{:#?}", mock.cancellations());
    kill(proxy).await;
}

/// Without a session, a client that drops a call's stream: the proxy
/// closes the upstream's stream (how MCP 2026-07-28 cancels), sends no
/// cancellation, and holds the slot for the grace.
#[tokio::test]
async fn http_sessionless_drop_closes_the_upstream_stream_and_holds_the_slot_for_the_grace() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "1").await;

    call_and_drop(&url, None, 1, "plain").await;
    mock.closed("POST - 1").await;
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert_slot_taken(&url, 2).await;

    wait_metric(&metrics, EXPIRED, 1.0).await;
    wait_metric(&metrics, ACTIVE, 0.0).await;
    assert_eq!(metric(&metrics, HELD).await, 0.0);
    assert_slot_free(&url, 3).await;
    assert!(
        mock.cancellations().is_empty(),
        "a sessionless call was cancelled with a POST: {:#?}",
        mock.cancellations()
    );
    kill(proxy).await;
}

/// Also resumable in a sessionless exchange? No: without a session there is
/// no `GET` to resume on, so ids on the stream change nothing — the
/// upstream stream is closed, no cancellation is sent, the grace frees the
/// slot.
#[tokio::test]
async fn http_sessionless_resumable_stream_is_closed_like_any_other() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "1").await;

    call_and_drop(&url, None, 1, "resumable").await;
    mock.closed("POST - 1").await;
    wait_metric(&metrics, HELD, 1.0).await;
    wait_metric(&metrics, EXPIRED, 1.0).await;
    wait_metric(&metrics, ACTIVE, 0.0).await;
    assert_slot_free(&url, 2).await;
    assert!(
        mock.cancellations().is_empty(),
        "{:#?}",
        mock.cancellations()
    );
    kill(proxy).await;
}

/// The upstream closes a resumable stream itself (to have the client poll):
/// the call keeps its slot, and its response on the resumed `GET` frees it.
#[tokio::test]
async fn http_upstream_closing_a_resumable_stream_keeps_the_slot_until_the_get() {
    let (mock, upstream) = Mock::start().await;
    let (proxy, url, metrics) = proxy(&upstream, "30").await;

    let mut stream = Sse::new(post(&url, Some("s1"), &call(1, "resumable")).await);
    assert_eq!(stream.event().await.as_deref(), Some("id: e1\ndata: "));
    mock.stream("POST s1 1").await;
    mock.end("POST s1 1");
    assert_eq!(stream.event().await, None, "the stream ends");
    wait_metric(&metrics, HELD, 1.0).await;
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert_slot_taken(&url, 2).await;

    let get = client()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", "s1")
        .header("last-event-id", "e1")
        .send();
    let mut resumed = Sse::new(
        tokio::time::timeout(PATIENCE, get)
            .await
            .expect("the GET's headers in time")
            .expect("GET"),
    );
    let result = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}});
    mock.stream("GET s1")
        .await
        .send(Bytes::from(format!("id: e2\ndata: {result}\n\n")))
        .unwrap();
    assert_eq!(resumed.message().await, result);
    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, HELD, 0.0).await;
    assert_eq!(metric(&metrics, EXPIRED).await, 0.0);
    assert_slot_free(&url, 3).await;
    assert!(
        mock.cancellations().is_empty(),
        "{:#?}",
        mock.cancellations()
    );
    kill(proxy).await;
}

/// The priming event (an id and empty data, which MCP servers send so that
/// the client can resume) is not a malformed message: the proxy passes it
/// without warning that it "cannot be passed on".
#[tokio::test]
async fn http_priming_event_is_not_taken_for_a_malformed_message() {
    let (_mock, upstream) = Mock::start().await;
    let (proxy, mut log, url, metrics) = proxy_with_log(&upstream, "30").await;

    let mut stream = Sse::new(post(&url, Some("s1"), &call(1, "resumable")).await);
    assert_eq!(stream.event().await.as_deref(), Some("id: e1\ndata: "));
    assert_slot_taken(&url, 2).await;
    // The rejection is logged after the priming event was routed.
    log.wait_for("the rejection", |l| l.contains("request rejected"))
        .await;
    let all = log.all();
    assert!(
        !all.contains("cannot be passed on"),
        "a priming event was taken for a malformed message:\n{all}"
    );
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    drop(stream);
    kill(proxy).await;
}
