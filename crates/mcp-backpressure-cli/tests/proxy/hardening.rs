//! Hardening of the reshaped proxy, end to end with real processes: framing
//! that no line reader upstream can split differently, ids compared by value,
//! the cancel grace, the counters at a disconnect, what the upstream sends
//! back (deep, large), every spelling of the MCP path over HTTP, sessionless
//! cancellations, errors that name no address, and memory bounded for a
//! client that stops reading.
//!
//! Upstreams: `tests/fixtures/hardening_server.py` (standard library only;
//! `--splitlines` reads its input as `str.splitlines()` does),
//! `tests/fixtures/sdk_record_server.py` (the official Python SDK, which
//! splits its input at a bare CR), `bare_server` (rmcp), and an in-test HTTP
//! upstream that records what reaches it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::http_client::client;
use crate::python::venv_python;
use crate::support::{
    PATIENCE, Stderr, StdioSession, assert_overload, example, fixture, http_proxy, metric,
    metrics_url, python3, wait_metric,
};

const ACTIVE: &str = "mcp_backpressure_active";
const QUEUED: &str = "mcp_backpressure_queued";
const ADMITTED: &str = "mcp_backpressure_admitted_total";
const CANCELLED_IN_QUEUE: &str = "mcp_backpressure_cancelled_in_queue_total";
const IN_FLIGHT: &str = "mcp_backpressure_in_flight";
const HELD: &str = "mcp_backpressure_held_after_cancel";

fn path(name: &str) -> String {
    fixture(name).to_str().expect("utf-8 path").to_owned()
}

/// The proxy with `args` in front of `hardening_server.py` with
/// `fixture_args`, initialized.
async fn hardening(args: &[&str], fixture_args: &[&str]) -> StdioSession {
    let script = path("hardening_server.py");
    let mut upstream = vec![python3(), script.as_str()];
    upstream.extend_from_slice(fixture_args);
    let mut session = StdioSession::spawn(args, &upstream);
    session.initialize().await;
    session
}

fn text(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result in {response}"))
}

/// A `notifications/x` whose extra member `x` holds `inner`, with a bare CR
/// on each side of it: JSON white space to the proxy, a line break to a
/// reader in universal-newlines mode (Python's `TextIOWrapper`, the SDK's
/// stdio transport) or to `str.splitlines()`. Such a reader sees `inner` as
/// a message of its own.
fn cr_smuggling_line(inner: &Value) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{{}},\"x\":\r{inner}\r}}\n"
    )
    .into_bytes()
}

fn smuggled_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "record", "arguments": {"tag": "smuggled"}}})
}

// 1. Framing -----------------------------------------------------------------

/// The official Python SDK splits its stdin at a bare CR: a `tools/call`
/// hidden between two CRs inside one JSON value must not reach it, while the
/// only slot is busy — nor ever (the proxy removes white space between
/// tokens before forwarding).
#[tokio::test]
async fn stdio_bare_cr_in_a_value_smuggles_no_call_into_the_python_sdk() {
    let python = venv_python();
    let python = python.to_str().unwrap();
    let script = path("sdk_record_server.py");
    let mut s = StdioSession::spawn(
        &["--max-concurrent", "1", "--queue-size", "0"],
        &[python, script.as_str()],
    );
    s.initialize().await;
    s.call(1, "hold", json!({})).await;
    s.stderr
        .wait_for("the hold to start", |l| l == "fixture: hold started")
        .await;
    s.send_raw(&cr_smuggling_line(&smuggled_call(2))).await;
    // Release the hold (a resource read: not guarded, handled in order after
    // the line above), then run a call through the limiter.
    s.send(
        json!({"jsonrpc": "2.0", "id": "release", "method": "resources/read",
        "params": {"uri": "state://release"}}),
    )
    .await;
    s.response("release").await;
    assert_eq!(text(&s.response(1).await), "held");
    s.call(3, "record", json!({"tag": "admitted"})).await;
    let done = s.response(3).await;
    assert!(done.get("result").is_some(), "{done}");
    s.stderr
        .wait_for("the admitted record", |l| l == "fixture: record admitted")
        .await;
    assert!(
        !s.stderr.all().contains("fixture: record smuggled"),
        "a call hidden behind a bare CR ran upstream without admission:\n{}",
        s.stderr.all()
    );
    assert!(
        !s.has_response(2).await,
        "the upstream answered the smuggled call"
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// An upstream that reads lines as `str.splitlines()` does (CR, U+0085,
/// U+2028, U+2029 all end a line): the smuggled call never runs, and a call
/// whose string holds those characters raw reaches it whole (escaped),
/// is answered with the same string, and gives its slot back.
#[tokio::test]
async fn stdio_line_separators_cannot_split_a_message_for_a_splitlines_upstream() {
    let mut s = hardening(
        &["--max-concurrent", "1", "--queue-size", "0"],
        &["--splitlines"],
    )
    .await;
    s.send_raw(&cr_smuggling_line(&smuggled_call(2))).await;
    let tricky = "a\u{2028}b\u{2029}c\u{85}d\re";
    s.call(1, "echo", json!({"message": tricky})).await;
    let echoed = s.response(1).await;
    assert_eq!(text(&echoed), tricky, "{echoed}");
    // The slot came back: the next call is admitted.
    s.call(3, "record", json!({"tag": "admitted"})).await;
    assert_eq!(text(&s.response(3).await), "recorded");
    assert!(!s.has_response(2).await, "the smuggled call was answered");
    let log = s.stderr.all();
    assert!(!log.contains("fixture: record smuggled"), "{log}");
    assert!(
        !log.contains("not JSON"),
        "the upstream got a broken line:\n{log}"
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

// 2. Ids ------------------------------------------------------------------------

/// The proxy in front of `bare_server` (rmcp, no limits of its own) over
/// stdio, with metrics.
async fn bare(args: &[&str]) -> (StdioSession, String) {
    let server = example("bare_server");
    let mut s = StdioSession::spawn(args, &[server.to_str().unwrap(), "--transport", "stdio"]);
    let metrics = metrics_url(&mut s.stderr).await;
    s.initialize().await;
    (s, metrics)
}

const ONE_SLOT: [&str; 6] = [
    "--max-concurrent",
    "1",
    "--queue-size",
    "0",
    "--metrics",
    "127.0.0.1:0",
];

/// `"id": 1.0` is the id 1 to rmcp, which answers `"id": 1`: the answer
/// frees the call's slot, and reaches the client as `"id": 1.0`, the id as it
/// wrote it.
#[tokio::test]
async fn stdio_call_with_id_1_0_gets_its_slot_back_when_answered_as_1() {
    let (mut s, metrics) = bare(&ONE_SLOT).await;
    s.send_raw(
        b"{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"one\"}}}\n",
    )
    .await;
    assert_eq!(text(&s.response(1.0).await), "one");
    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, IN_FLIGHT, 0.0).await;
    s.call(2, "echo", json!({"message": "two"})).await;
    assert_eq!(text(&s.response(2).await), "two");
    assert_eq!(metric(&metrics, ADMITTED).await, 2.0);
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// Ids that are not strings or exactly representable integers are refused
/// with -32600 — under the id as written when it is a number, else with id
/// null — and take no slot.
#[tokio::test]
async fn stdio_null_fractional_and_unsafe_integer_ids_are_refused_without_a_slot() {
    let (mut s, metrics) = bare(&ONE_SLOT).await;
    for (id, answered) in [
        ("null", Value::Null),
        ("1.5", json!(1.5)),
        ("9007199254740993", json!(9_007_199_254_740_993_u64)),
    ] {
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"sleep\",\"arguments\":{{\"ms\":60000}}}}}}\n"
        );
        s.send_raw(line.as_bytes()).await;
        let error = s.response(answered).await;
        assert_eq!(error["error"]["code"], -32600, "id {id}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains("id"),
            "id {id}: {error}"
        );
    }
    assert_eq!(metric(&metrics, ADMITTED).await, 0.0);
    assert_eq!(metric(&metrics, ACTIVE).await, 0.0);
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 0.0);
    // The only slot is free.
    s.call(1, "echo", json!({"message": "free"})).await;
    assert_eq!(text(&s.response(1).await), "free");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A `ping` reusing the id of a running `tools/call` is refused (-32600) and
/// not forwarded — the upstream's answer to it would have freed the call's
/// slot — so the call keeps its slot.
#[tokio::test]
async fn stdio_request_reusing_a_running_calls_id_is_refused_and_the_call_keeps_its_slot() {
    let (mut s, metrics) = bare(&ONE_SLOT).await;
    s.call_sleep(1, 60_000).await;
    s.started(1).await;
    s.send(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await;
    let refused = s.response(1).await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    s.call(2, "echo", json!({"message": "x"})).await;
    assert_overload(&s.response(2).await, 2, -31429, "concurrency_limit");
    assert_eq!(metric(&metrics, ACTIVE).await, 1.0);
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 1.0);
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

// 3. Cancel grace -----------------------------------------------------------------

/// The `start TAG`/`end TAG` lines of the fixture, in order.
fn work_log(stderr: &Stderr) -> Vec<String> {
    stderr
        .all()
        .lines()
        .filter_map(|l| l.strip_prefix("fixture: "))
        .filter(|l| l.starts_with("start ") || l.starts_with("end "))
        .map(str::to_owned)
        .collect()
}

/// A call cancelled by its client keeps its slot until the upstream (which
/// does not stop) answers: four calls each cancelled right after it started
/// never run two at a time upstream.
#[tokio::test]
async fn stdio_cancelled_calls_keep_their_slot_until_the_upstream_finishes() {
    let mut s = hardening(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "4",
            "--cancel-grace",
            "5",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let metrics = metrics_url(&mut s.stderr).await;
    for id in 1..=4u64 {
        s.call(id, "work", json!({"ms": 700, "tag": id.to_string()}))
            .await;
        s.stderr
            .wait_for(&format!("work {id} to start"), |l| {
                l.starts_with(&format!("fixture: start {id} "))
            })
            .await;
        s.cancel(id).await;
        if id == 1 {
            wait_metric(&metrics, HELD, 1.0).await;
        }
    }
    s.stderr
        .wait_for("work 4 to end", |l| l == "fixture: end 4")
        .await;
    wait_metric(&metrics, ACTIVE, 0.0).await;
    wait_metric(&metrics, HELD, 0.0).await;
    let log = work_log(&s.stderr);
    let expected: Vec<String> = (1..=4)
        .flat_map(|id| [format!("start {id} running=1"), format!("end {id}")])
        .collect();
    assert_eq!(log, expected, "calls overlapped upstream");
    assert_eq!(
        metric(&metrics, "mcp_backpressure_cancel_grace_expired_total").await,
        0.0
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// With `--cancel-grace 0` a cancellation frees the slot at once, while the
/// upstream still works.
#[tokio::test]
async fn stdio_cancel_grace_zero_frees_the_slot_at_once() {
    let mut s = hardening(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "0",
            "--cancel-grace",
            "0",
        ],
        &[],
    )
    .await;
    s.call(1, "work", json!({"ms": 3000, "tag": "1"})).await;
    s.stderr
        .wait_for("work 1 to start", |l| l.starts_with("fixture: start 1 "))
        .await;
    s.cancel(1).await;
    s.call(2, "echo", json!({"message": "in"})).await;
    let admitted = s.response(2).await;
    assert_eq!(text(&admitted), "in", "{admitted}");
    assert!(
        !s.stderr.all().contains("fixture: end 1"),
        "the test was too slow to tell"
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

// 4. Counters at a disconnect --------------------------------------------------------

/// The client disconnects with one call running and five queued: the
/// counters say one admitted, five cancelled in the queue (scraped while the
/// upstream takes its time to exit).
#[tokio::test]
async fn stdio_disconnect_counts_one_admitted_and_five_cancelled_in_queue() {
    let mut s = hardening(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "5",
            "--metrics",
            "127.0.0.1:0",
        ],
        &["--linger-ms", "4000"],
    )
    .await;
    let metrics = metrics_url(&mut s.stderr).await;
    s.call(1, "work", json!({"ms": 60_000, "tag": "1"})).await;
    s.stderr
        .wait_for("work 1 to start", |l| l.starts_with("fixture: start 1 "))
        .await;
    for id in 2..=6 {
        s.call(id, "work", json!({"ms": 10, "tag": id.to_string()}))
            .await;
    }
    wait_metric(&metrics, QUEUED, 5.0).await;
    s.close();
    s.stderr
        .wait_for("the upstream's stdin to close", |l| {
            l == "fixture: stdin closed"
        })
        .await;
    wait_metric(&metrics, CANCELLED_IN_QUEUE, 5.0).await;
    assert_eq!(metric(&metrics, ADMITTED).await, 1.0);
    assert_eq!(metric(&metrics, QUEUED).await, 0.0);
    assert_eq!(metric(&metrics, ACTIVE).await, 0.0);
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 0.0);
    let log = s.stderr.all();
    assert!(log.contains("fixture: cancel received 1"), "{log}");
    for id in 2..=6 {
        assert!(
            !log.contains(&format!("fixture: cancel received {id}"))
                && !log.contains(&format!("fixture: start {id} ")),
            "queued call {id} reached the upstream:\n{log}"
        );
    }
    assert_eq!(s.exit_code().await, Some(0));
}

// 5. What the upstream sends back ------------------------------------------------------

/// A raw session with the proxy: lines as text (the answers may be nested
/// deeper than `serde_json` reads by default).
struct Raw {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Stderr,
}

impl Raw {
    fn spawn(args: &[&str], upstream: &[&str]) -> Self {
        let (mut child, stderr) = crate::support::stdio_proxy(args, upstream);
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    async fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a line from the proxy in time")
            .expect("read the proxy's stdout")
            .unwrap_or_else(|| panic!("the proxy closed its stdout:\n{}", self.stderr.all()))
    }

    async fn initialize(&mut self) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        )
        .await;
        let line = self.line().await;
        assert!(line.contains("\"result\""), "{line}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }
}

/// A response nested 200 levels deep (deeper than a client message may be,
/// which is fine for a response) passes whole and frees its call's slot.
#[tokio::test]
async fn stdio_response_nested_200_levels_passes_and_frees_its_slot() {
    let script = path("hardening_server.py");
    let mut s = Raw::spawn(
        &["--max-concurrent", "1", "--queue-size", "0"],
        &[python3(), script.as_str()],
    );
    s.initialize().await;
    s.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nest", "arguments": {"depth": 200}}}))
        .await;
    let line = s.line().await;
    assert!(
        line.starts_with("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":")
            && line.contains(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
        "the deep response did not pass: {line}\n{}",
        s.stderr.all()
    );
    s.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "next"}}}))
        .await;
    let next: Value = serde_json::from_str(&s.line().await).unwrap();
    assert_eq!(text(&next), "next", "{next}");
    drop(s.stdin);
    let status = tokio::time::timeout(PATIENCE, s.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A response larger than `--max-message-bytes` is replaced by an error that
/// names the setting, and the call's slot is free.
#[tokio::test]
async fn stdio_oversized_response_becomes_an_error_naming_max_message_bytes_and_frees_its_slot() {
    let mut s = hardening(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "0",
            "--max-message-bytes",
            "4096",
        ],
        &[],
    )
    .await;
    s.call(1, "big", json!({"bytes": 10_000})).await;
    let error = s.response(1).await;
    assert_eq!(error["error"]["code"], -32603, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_message_bytes") && message.contains("4096"),
        "{message}"
    );
    s.call(2, "echo", json!({"message": "next"})).await;
    assert_eq!(text(&s.response(2).await), "next");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

// 6–7. HTTP -------------------------------------------------------------------------

/// What the in-test upstream received: every POST body, as text.
#[derive(Clone, Default)]
struct Upstream {
    bodies: Arc<Mutex<Vec<String>>>,
    release: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Upstream {
    /// A sessionless Streamable HTTP upstream at `/mcp`: `hold` answers once
    /// released, anything else at once (`echo`: its message).
    async fn start() -> (Self, String) {
        let upstream = Self {
            bodies: Arc::default(),
            release: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (upstream, format!("http://{addr}/mcp"))
    }

    fn calls(&self) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("tools/call"))
            .count()
    }
}

async fn answer(State(upstream): State<Upstream>, request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    upstream
        .bodies
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = if method == "tools/call" {
        let name = message["params"]["name"].as_str().unwrap_or_default();
        if name == "hold" {
            let mut released = upstream.release.subscribe();
            let _ = released.wait_for(|r| *r).await;
        }
        let text = message["params"]["arguments"]["message"]
            .as_str()
            .unwrap_or(name);
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    } else {
        json!({})
    };
    (
        [("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
    )
        .into_response()
}

fn call_body(id: u64, tool: &str, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"message": message}}})
    .to_string()
}

async fn post(url: &str, body: String) -> reqwest::Response {
    tokio::time::timeout(
        PATIENCE,
        client()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send(),
    )
    .await
    .expect("a response in time")
    .expect("POST")
}

/// A POST that waits for its answer on a task of its own.
fn post_in_background(url: &str, body: String) -> tokio::task::JoinHandle<Value> {
    let url = url.to_owned();
    tokio::spawn(async move { post(&url, body).await.json::<Value>().await.unwrap() })
}

async fn joined(task: tokio::task::JoinHandle<Value>) -> Value {
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the answer in time")
        .unwrap()
}

/// With the only slot busy, a `tools/call` POSTed to `/mcp/`, `//mcp` or
/// `/%6Dcp` is turned away by the limiter like one to `/mcp`; a batch of
/// calls is refused element by element; none of them reaches the upstream.
#[tokio::test]
async fn http_every_spelling_of_the_mcp_path_and_batches_go_through_the_limiter() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (_proxy, mut log, url) = http_proxy(&ONE_SLOT[..], &upstream_url).await;
    let metrics = metrics_url(&mut log).await;
    let held = post_in_background(&url, call_body(1, "hold", "held"));
    wait_metric(&metrics, ACTIVE, 1.0).await;
    let base = url.strip_suffix("/mcp").unwrap();
    for (id, spelling) in [(2, "/mcp/"), (3, "//mcp"), (4, "/%6Dcp"), (5, "/%6dcp/")] {
        let response = post(&format!("{base}{spelling}"), call_body(id, "echo", "x")).await;
        assert_eq!(response.status(), 200, "{spelling}");
        let rejected: Value = response.json().await.unwrap();
        assert_overload(&rejected, id, -31429, "concurrency_limit");
    }
    let batch = format!(
        "[{},{},{}]",
        call_body(10, "echo", "a"),
        call_body(11, "echo", "b"),
        call_body(12, "echo", "c")
    );
    let response = post(&url, batch).await;
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.unwrap();
    let answers = answers.as_array().expect("one answer per element");
    assert_eq!(answers.len(), 3, "{answers:?}");
    for (answer, id) in answers.iter().zip(10..) {
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
    }
    assert_eq!(upstream.calls(), 1, "{:?}", upstream.bodies.lock().unwrap());
    upstream.release.send_replace(true);
    assert_eq!(text(&joined(held).await), "held");
    wait_metric(&metrics, ACTIVE, 0.0).await;
    assert_eq!(metric(&metrics, ADMITTED).await, 1.0);
}

/// Without `Mcp-Session-Id`, each exchange is its own scope: client A's
/// `notifications/cancelled` for id 1 does not take client B's queued id 1
/// out of the queue; B gets its answer.
#[tokio::test]
async fn http_sessionless_cancel_does_not_cancel_another_clients_queued_call() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (_proxy, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream_url,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    let held = post_in_background(&url, call_body(0, "hold", "held"));
    wait_metric(&metrics, ACTIVE, 1.0).await;
    let b = post_in_background(&url, call_body(1, "echo", "for B"));
    wait_metric(&metrics, QUEUED, 1.0).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "reason": "A gives up"}});
    let response = post(&url, cancel.to_string()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(metric(&metrics, QUEUED).await, 1.0);
    assert_eq!(metric(&metrics, CANCELLED_IN_QUEUE).await, 0.0);
    upstream.release.send_replace(true);
    assert_eq!(text(&joined(held).await), "held");
    let answered = joined(b).await;
    assert_eq!(text(&answered), "for B", "{answered}");
}

/// With the upstream down, nothing the client gets names the upstream's
/// address or port.
#[tokio::test]
async fn http_upstream_down_errors_do_not_name_the_upstream() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let (_proxy, _log, url) = http_proxy(&["--max-concurrent", "1"], &upstream).await;
    let port = port.to_string();
    let check =
        |what: &str, status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str| {
            let headers = format!("{headers:?}");
            for secret in [port.as_str(), "127.0.0.1", "Connection refused", "os error"] {
                assert!(
                    !body.contains(secret) && !headers.contains(secret),
                    "{what} ({status}) names {secret:?}: {headers} {body}"
                );
            }
        };
    let initialize = json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "x", "version": "0"}}});
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    for (what, body) in [
        ("a call", call_body(1, "echo", "x")),
        ("an initialize", initialize.to_string()),
        ("a notification", notification.to_string()),
    ] {
        let response = post(&url, body).await;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.text().await.unwrap();
        check(what, status, &headers, &body);
        if what == "a call" {
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["code"], -32603, "{error}");
            assert_eq!(
                error["error"]["message"], "the upstream server is unavailable",
                "{error}"
            );
        }
    }
    let response = client()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.text().await.unwrap();
    check("a GET", status, &headers, &body);
}

// 8. Memory ------------------------------------------------------------------------

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A client that floods calls and stops reading while they time out in the
/// queue or are turned away: the proxy stops reading it instead of holding
/// every answer; its memory stays bounded; once the client reads, every
/// call has its answer and the proxy still serves.
#[tokio::test]
async fn stdio_client_flooding_without_reading_keeps_the_proxy_memory_bounded() {
    const CALLS: u64 = 50_000;
    const BOUND_KIB: u64 = 64 * 1024;
    let script = path("hardening_server.py");
    let mut s = Raw::spawn(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "50",
            "--queue-timeout",
            "0.01",
            "--buffer-bytes",
            "1048576",
            // The budget must hold the largest message (16 MiB by default).
            "--max-message-bytes",
            "65536",
        ],
        &[python3(), script.as_str()],
    );
    let pid = s.child.id().unwrap();
    s.initialize().await;
    s.send(&json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call",
        "params": {"name": "work", "arguments": {"ms": 600_000, "tag": "0"}}}))
        .await;
    s.stderr
        .wait_for("work 0 to start", |l| l.starts_with("fixture: start 0 "))
        .await;
    let before = vm_rss_kib(pid);
    // Flood from a task; stop reading stdout.
    let written = Arc::new(AtomicU64::new(0));
    let Raw {
        mut child,
        mut stdin,
        mut lines,
        stderr,
    } = s;
    let writer = {
        let written = written.clone();
        tokio::spawn(async move {
            for id in 1..=CALLS {
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"x\"}}}}}}\n"
                );
                stdin.write_all(line.as_bytes()).await.unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
            stdin.flush().await.unwrap();
            stdin
        })
    };
    // Wait until the proxy stops reading: nothing written for 1 s.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mut last, mut since) = (0, tokio::time::Instant::now());
    let mut peak = before;
    loop {
        peak = peak.max(vm_rss_kib(pid));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) || now == CALLS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not stall: {now} written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled = written.load(Ordering::Relaxed);
    peak = peak.max(vm_rss_kib(pid));
    eprintln!(
        "VmRSS {before} kB before, {peak} kB at most; {stalled} of {CALLS} calls written when the flood stalled"
    );
    assert!(
        stalled < CALLS,
        "the proxy read all {CALLS} calls from a client that does not read"
    );
    assert!(peak < BOUND_KIB, "VmRSS {peak} kB");
    // The client reads: every call has its answer (an overload error).
    let mut answered = 0u64;
    tokio::time::timeout(PATIENCE * 3, async {
        while answered < CALLS {
            let line = lines.next_line().await.unwrap().expect("stdout open");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"].as_u64().is_some_and(|id| id >= 1) {
                assert_eq!(message["error"]["code"], -31429, "{message}");
                answered += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {answered} of {CALLS} answers"));
    peak = peak.max(vm_rss_kib(pid));
    assert!(peak < BOUND_KIB, "VmRSS {peak} kB");
    let mut stdin = tokio::time::timeout(PATIENCE, writer)
        .await
        .unwrap()
        .unwrap();
    // Still serving.
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"ping\",\"method\":\"ping\"}\n")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let pong = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("stdout open");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == "ping" {
                return message;
            }
        }
    })
    .await
    .expect("the ping's answer in time");
    assert!(pong.get("result").is_some(), "{pong}");
    drop(stdin);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the proxy exited in time")
        .unwrap();
    assert!(status.success(), "{status}\n{}", stderr.all());
}

/// A queue longer than the proxy's internal limit on admissions waiting at
/// once (1024): with the only slot busy and 1100 calls queued, the client's
/// next messages (a `ping`, a cancellation) are still read and handled —
/// the client is not blocked until a queued call times out.
#[tokio::test]
async fn stdio_a_long_queue_does_not_stop_the_proxy_reading_the_client() {
    const QUEUED_CALLS: u64 = 1100;
    let mut s = hardening(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "2000",
            "--queue-timeout",
            "120",
            "--cancel-grace",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let metrics = metrics_url(&mut s.stderr).await;
    s.call(1, "work", json!({"ms": 600_000, "tag": "1"})).await;
    s.stderr
        .wait_for("work 1 to start", |l| l.starts_with("fixture: start 1 "))
        .await;
    let mut flood = Vec::new();
    for id in 2..2 + QUEUED_CALLS {
        flood.extend_from_slice(
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"{id}\"}}}}}}\n"
            )
            .as_bytes(),
        );
    }
    s.send_raw(&flood).await;
    s.send(json!({"jsonrpc": "2.0", "id": "ping", "method": "ping"}))
        .await;
    let pong = s.response("ping").await;
    assert!(pong.get("result").is_some(), "{pong}");
    assert_eq!(metric(&metrics, QUEUED).await, QUEUED_CALLS as f64);
    // Cancelling the running call frees its slot (no grace): the queue drains.
    s.cancel(1).await;
    let last = 1 + QUEUED_CALLS;
    assert_eq!(text(&s.response(last).await), last.to_string());
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}
