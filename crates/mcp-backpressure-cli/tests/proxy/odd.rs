//! Odd input, end to end through the proxy binary (issue 16): every answer
//! the proxy makes itself carries the request's id byte for byte as the
//! client wrote it (stdio and HTTP), the upstream's answers too when the
//! proxy sent the id upstream in another form; a byte order mark, CRLF and
//! blank lines between stdio messages are tolerated in both directions (and
//! not forwarded); an HTTP POST with no message in it is answered by the
//! proxy (-32700, HTTP 400, id null), not by the upstream.
//!
//! The checks read raw bytes: the `"id"` member of an answer is compared, as
//! text, with what was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::http_client::client;
use crate::support::{PATIENCE, Stderr, fixture, http_proxy, python3, stdio_proxy};

/// The proxy over stdio, read and written as raw lines.
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Vec<u8>>,
    stderr: Stderr,
}

impl Raw {
    fn spawn(args: &[&str], upstream: &[&str]) -> Self {
        let (mut child, stderr) = stdio_proxy(args, upstream);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The proxy in front of `raw_server.py`.
    fn raw_server(args: &[&str]) -> Self {
        let script = fixture("raw_server.py");
        Self::spawn(args, &[python3(), script.to_str().unwrap()])
    }

    async fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Sends one message, written exactly as given, and a LF.
    async fn line(&mut self, text: &str) {
        self.send(format!("{text}\n").as_bytes()).await;
    }

    /// The next line the proxy wrote that is not a notification.
    async fn answer(&mut self) -> Vec<u8> {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .expect("an answer in time")
                .expect("the proxy's stdout is open");
            assert!(line.ends_with(b"\n"), "{}", String::from_utf8_lossy(&line));
            // Members read raw: an id such as `1e400` is no `Value`.
            let members: HashMap<String, Box<RawValue>> = serde_json::from_slice(&line)
                .or_else(|_| {
                    serde_json::from_slice::<Vec<Box<RawValue>>>(&line).map(|_| HashMap::new())
                })
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&line)));
            if members.contains_key("method") && !members.contains_key("id") {
                continue;
            }
            return line;
        }
    }

    async fn initialize(&mut self) {
        self.line(
            r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"odd","version":"0"}}}"#,
        )
        .await;
        let answer = self.answer().await;
        assert_eq!(id_text(&answer), r#""init""#);
        self.line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
    }

    /// Waits for the progress notification of the token `token` (a sleep
    /// call has started upstream).
    async fn started(&mut self, token: &str) {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .expect("the call to start")
                .expect("the proxy's stdout is open");
            let value: Value = serde_json::from_slice(&line).unwrap();
            if value["params"]["progressToken"] == token {
                return;
            }
        }
    }
}

/// The `"id"` member of one answer, as the bytes it was written with.
fn id_text(line: &[u8]) -> String {
    let members: HashMap<String, Box<RawValue>> = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
    members
        .get("id")
        .unwrap_or_else(|| panic!("no id in {}", String::from_utf8_lossy(line)))
        .get()
        .to_owned()
}

/// The ids of a batch answer, as written.
fn batch_ids(line: &[u8]) -> Vec<String> {
    let items: Vec<HashMap<String, Box<RawValue>>> = serde_json::from_slice(line).unwrap();
    items.iter().map(|m| m["id"].get().to_owned()).collect()
}

fn code(line: &[u8]) -> i64 {
    let members: HashMap<String, Box<RawValue>> = serde_json::from_slice(line).unwrap();
    let error: Value = members
        .get("error")
        .map_or(Value::Null, |e| serde_json::from_str(e.get()).unwrap());
    error["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(line)))
}

fn sleep_call(id: &str, ms: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"sleep","arguments":{{"ms":{ms}}}}}}}"#
    )
}

/// Ids written in every form JSON allows, and the refusals and answers that
/// carry them back.
const VALID: [&str; 10] = [
    "-5",
    "1e0",
    "1E2",
    "-0",
    "1.0",
    "10e-1",
    r#""\u0041""#,
    r#""a\/b""#,
    "9007199254740991",
    "-9007199254740991",
];
/// Numbers the proxy refuses as ids (a JS peer cannot hold them), still
/// answered under them.
const REFUSED: [&str; 6] = [
    "9007199254740993",
    "-9007199254740993",
    "1.5",
    "1e400",
    "-1e400",
    "123456789012345678901234567890",
];

/// Every refusal over stdio carries the id as written, byte for byte.
#[tokio::test]
async fn stdio_answers_carry_the_id_as_the_client_wrote_it() {
    let mut s = Raw::raw_server(&[
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--max-message-bytes",
        "1024",
    ]);
    s.initialize().await;
    // The one slot is taken, by a call whose id is written with an escape.
    s.line(r#"{"jsonrpc":"2.0","id":"\u0068old","method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000},"_meta":{"progressToken":"hold"}}}"#)
        .await;
    s.started("hold").await;

    // Overload refusals.
    for id in VALID {
        s.line(&sleep_call(id, 1)).await;
        let answer = s.answer().await;
        assert_eq!(id_text(&answer), id);
        assert_eq!(
            code(&answer),
            -31429,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Ids the proxy refuses, and malformed params.
    for id in REFUSED {
        s.line(&sleep_call(id, 1)).await;
        let answer = s.answer().await;
        assert_eq!(id_text(&answer), id);
        assert_eq!(code(&answer), -32600);
    }
    for (message, id) in [
        (
            r#"{"jsonrpc":"2.0","id":1E2,"method":"tools/call","params":[]}"#,
            "1E2",
        ),
        (
            r#"{"jsonrpc":"2.0","id":-0,"method":"tools/call","params":{"name":"sleep","arguments":{"x":1e400}}}"#,
            "-0",
        ),
        (
            r#"{"jsonrpc":"2.0","id":"\ud83d\ude00","method":"tools/call","params":{"name":"sleep","arguments":{"x":"\ud800"}}}"#,
            r#""\ud83d\ude00""#,
        ),
        // A duplicate of the call in flight.
        (
            r#"{"jsonrpc":"2.0","id":"ho\u006cd","method":"ping"}"#,
            r#""ho\u006cd""#,
        ),
        // Too large (over 1024 bytes), the id still readable.
        (
            &format!(
                r#"{{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{{"name":"sleep","arguments":{{"pad":"{}"}}}}}}"#,
                "x".repeat(2000)
            ),
            "1.0",
        ),
    ] {
        s.line(message).await;
        let answer = s.answer().await;
        assert_eq!(id_text(&answer), id, "{message}");
        assert_eq!(
            code(&answer),
            -32600,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Ids that are no number or string, and messages that are no JSON: null.
    for (message, error) in [
        (r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1.0,"method":"ping""#, -32700),
    ] {
        s.line(message).await;
        let answer = s.answer().await;
        assert_eq!(id_text(&answer), "null", "{message}");
        assert_eq!(code(&answer), error, "{message}");
    }
    // A refused batch: one answer per request, each under its id as written.
    s.line(&format!(
        r#"[{},{{"jsonrpc":"2.0","id":"\u0042","method":"ping"}}]"#,
        sleep_call("1.0", 1)
    ))
    .await;
    let answer = s.answer().await;
    assert_eq!(batch_ids(&answer), ["1.0", r#""\u0042""#]);
    // The upstream's own answers, to ids it was sent in another form (`1`,
    // `"C"`), come back as the client wrote them.
    for id in ["1.0", "1e0", "-0", r#""\u0043""#] {
        s.line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#))
            .await;
        let answer = s.answer().await;
        assert_eq!(id_text(&answer), id);
        assert!(String::from_utf8_lossy(&answer).contains(r#""result""#));
    }
    // Shutting down: the call in flight is answered under its id as written.
    let pid = s.child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let answer = s.answer().await;
    assert_eq!(id_text(&answer), r#""\u0068old""#);
    assert_eq!(code(&answer), -32603);
}

/// The upstream dies: every call pending is answered under its id as written.
#[tokio::test]
async fn stdio_upstream_unavailable_carries_the_id_as_written() {
    let mut s = Raw::raw_server(&["--max-concurrent", "2"]);
    s.initialize().await;
    s.line(r#"{"jsonrpc":"2.0","id":1E0,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000},"_meta":{"progressToken":"a"}}}"#)
        .await;
    s.started("a").await;
    s.line(r#"{"jsonrpc":"2.0","id":2.00,"method":"tools/call","params":{"name":"crash","arguments":{"code":3}}}"#)
        .await;
    let mut ids = vec![id_text(&s.answer().await), id_text(&s.answer().await)];
    ids.sort();
    assert_eq!(ids, ["1E0", "2.00"]);
}

/// A client that writes a byte order mark before its messages (Codex CLI on
/// Windows), CRLF line ends, and blank lines between messages: the proxy
/// reads what rmcp reads, answers no blank line, and forwards every message
/// clean — the strict upstream (Python's `json.loads` of a `str` refuses a
/// mark) parses each one.
#[tokio::test]
async fn stdio_a_byte_order_mark_and_crlf_from_the_client_are_tolerated() {
    let mut s = Raw::raw_server(&["--max-concurrent", "1"]);
    let bom = "\u{feff}";
    s.send(format!("{bom}{}\r\n", r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"odd","version":"0"}}}"#).as_bytes())
        .await;
    assert_eq!(id_text(&s.answer().await), r#""init""#);
    s.send(
        format!(
            "\r\n   \r\n\t\n{bom}\n{bom}\r\n{bom}  \r\n{bom}{}\r\n{}\r\n{bom}{}\n",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(id_text(&s.answer().await), r#""a""#);
    let echo = s.answer().await;
    assert_eq!(id_text(&echo), r#""b""#);
    assert!(
        String::from_utf8_lossy(&echo).contains(r#""hi""#),
        "{echo:?}"
    );
    // Nothing else was answered, and the upstream parsed every line.
    s.line(r#"{"jsonrpc":"2.0","id":"c","method":"ping"}"#)
        .await;
    assert_eq!(id_text(&s.answer().await), r#""c""#);
    s.stdin = None;
    let _ = tokio::time::timeout(PATIENCE, s.child.wait()).await;
    let log = s.stderr.all();
    assert!(!log.contains("not JSON"), "{log}");
}

/// An upstream that writes a byte order mark before every message, CRLF
/// line ends and blank lines: its answers are routed (the slot comes back)
/// and reach the client clean.
#[tokio::test]
async fn stdio_a_byte_order_mark_and_crlf_from_the_upstream_are_tolerated() {
    let script = r#"
import json, sys
for line in sys.stdin:
    message = json.loads(line)  # a str: a byte order mark would be refused
    if "id" in message and "method" in message:
        result = {}
        if message["method"] == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "bom", "version": "0"}}
        elif message["method"] == "tools/call":
            result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
        out = "\ufeff" + json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
        sys.stdout.buffer.write(out.encode() + b"\r\n\r\n\xef\xbb\xbf\r\n")
        sys.stdout.buffer.flush()
"#;
    let mut s = Raw::spawn(
        &["--max-concurrent", "1", "--queue-size", "0"],
        &[python3(), "-c", script],
    );
    s.initialize().await;
    // One slot: each call must free it for the next to run.
    for id in ["1", "2", "3.0"] {
        s.line(&sleep_call(id, 1)).await;
        let answer = s.answer().await;
        assert!(!answer.starts_with(b"\xef\xbb\xbf"), "{answer:?}");
        assert!(!answer.ends_with(b"\r\n"), "{answer:?}");
        assert_eq!(id_text(&answer), id);
        assert!(String::from_utf8_lossy(&answer).contains(r#""ok""#));
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), s.lines.recv())
            .await
            .is_err(),
        "blank lines were passed on"
    );
}

// HTTP ------------------------------------------------------------------------

/// An in-test Streamable HTTP upstream: records every POST body; `hold`
/// answers once released, anything else at once, as JSON (the id written by
/// serde_json from its parsed value).
#[derive(Clone, Default)]
struct Upstream {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Upstream {
    async fn start() -> (Self, String) {
        let upstream = Self::default();
        let app = axum::Router::new()
            .fallback(upstream_answer)
            .with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (upstream, format!("http://{addr}/mcp"))
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn upstream_answer(State(upstream): State<Upstream>, request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    upstream.bodies.lock().unwrap().push(body.to_vec());
    // Strict, as rmcp's server: a byte order mark is not JSON.
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the upstream's own words",
        )
            .into_response();
    };
    let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
        return StatusCode::ACCEPTED.into_response();
    };
    if method == "tools/call" && message["params"]["name"] == "hold" {
        upstream.release.notified().await;
    }
    (
        [("content-type", "application/json")],
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": {}})).unwrap(),
    )
        .into_response()
}

async fn post(
    url: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let mut request = client()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("an answer in time")
        .expect("the proxy answers");
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Every answer of the HTTP proxy's own carries the id as written; the
/// upstream's JSON answer to an id sent upstream in another form carries it
/// back as written; a POST with no message in it is answered by the proxy.
#[tokio::test]
async fn http_answers_carry_the_id_as_the_client_wrote_it() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (_proxy, _stderr, url) = http_proxy(
        &["--max-concurrent", "1", "--queue-size", "0"],
        &upstream_url,
    )
    .await;

    // No message: refused by the proxy, not passed on.
    for body in [&b""[..], b"  \r\n\t", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"] {
        let (status, answer) = post(&url, body.to_vec(), &[]).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(id_text(&answer), "null");
        assert_eq!(code(&answer), -32700, "{body:?}");
    }
    assert!(upstream.bodies().is_empty(), "{:?}", upstream.bodies());
    // A byte order mark before a message: read, and forwarded without it.
    let ping = br#"{"jsonrpc":"2.0","id":"bom","method":"ping"}"#;
    let (status, answer) = post(&url, [&b"\xef\xbb\xbf"[..], ping].concat(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(id_text(&answer), r#""bom""#);
    assert_eq!(upstream.bodies().last().unwrap(), ping);

    // The proxy's own refusals.
    for (body, headers, status, id, error) in [
        (
            r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":[]}"#.to_owned(),
            &[][..],
            200,
            "1.0",
            -32600,
        ),
        (
            sleep_call("9007199254740993", 1),
            &[],
            400,
            "9007199254740993",
            -32600,
        ),
        (sleep_call("1e400", 1), &[], 400, "1e400", -32600),
        (
            sleep_call(r#""\u0041""#, 1),
            &[("mcp-method", "tools/list")],
            200,
            r#""\u0041""#,
            -32600,
        ),
        (sleep_call("true", 1), &[], 400, "null", -32600),
        // A routing header given twice.
        (
            sleep_call("1e0", 1),
            &[("mcp-method", "tools/call"), ("mcp-method", "tools/call")],
            200,
            "1e0",
            -32600,
        ),
    ] {
        let (got, answer) = post(&url, body.clone(), headers).await;
        assert_eq!(got, status, "{body}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(id_text(&answer), id, "{body}");
        assert_eq!(code(&answer), error, "{body}");
    }
    // Overload, with the one slot held.
    let held = {
        let url = url.clone();
        tokio::spawn(async move {
            post(
                &url,
                r#"{"jsonrpc":"2.0","id":"hold","method":"tools/call","params":{"name":"hold"}}"#,
                &[],
            )
            .await
        })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !upstream
        .bodies()
        .iter()
        .any(|b| String::from_utf8_lossy(b).contains("hold"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for id in ["-0", "1E2", r#""\u0042""#] {
        let (status, answer) = post(&url, sleep_call(id, 1), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(id_text(&answer), id);
        assert_eq!(code(&answer), -31429);
    }
    upstream.release.notify_one();
    let (status, answer) = held.await.unwrap();
    assert_eq!((status, id_text(&answer)), (200, r#""hold""#.to_owned()));
    // The upstream's JSON answers, to ids it was sent as `1` and `"C"`.
    for id in ["1.0", "1e0", r#""\u0043""#] {
        let (status, answer) = post(
            &url,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
            &[],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(id_text(&answer), id);
    }
    let sent: Vec<String> = upstream
        .bodies()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(sent.iter().any(|b| b.contains(r#""id":1,"#)), "{sent:?}");
}

/// The upstream is unreachable: the call is answered under its id as written.
#[tokio::test]
async fn http_upstream_unavailable_carries_the_id_as_written() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_proxy, _stderr, url) = http_proxy(
        &["--max-concurrent", "1"],
        &format!("http://127.0.0.1:{port}/mcp"),
    )
    .await;
    let (status, answer) = post(&url, sleep_call("1E2", 1), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(id_text(&answer), "1E2");
    assert_eq!(code(&answer), -32603);
}
