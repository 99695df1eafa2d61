//! Real processes on real pipes and sockets (127.0.0.1 only): the proxy
//! binary, the `simple_server` example as an upstream, a Python fixture for
//! faults. Every wait is bounded by [`PATIENCE`].
#![allow(dead_code)] // Each test module uses part of it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub use crate::line_session::{LineSession, PATIENCE};

/// The proxy under test.
pub fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-backpressure")
}

pub use crate::built_examples::example;

/// A fixture file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The system's `python3` (the raw fixture needs nothing but the standard library).
pub fn python3() -> &'static str {
    "python3"
}

/// A child's stderr, drained line by line so it never blocks; lines can be
/// waited for.
pub struct Stderr {
    lines: watch::Receiver<Vec<String>>,
}

impl Stderr {
    pub fn capture(child: &mut Child, tag: &'static str) -> Self {
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = watch::channel(Vec::new());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if std::env::var_os("PROXY_TEST_VERBOSE").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                tx.send_modify(|lines| lines.push(line));
            }
        });
        Self { lines }
    }

    /// Waits for a line for which `matches` holds; returns it.
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(line) = self.lines.borrow_and_update().iter().find(|l| matches(l)) {
                    return Some(line.clone());
                }
                if self.lines.changed().await.is_err() {
                    return self.lines.borrow().iter().find(|l| matches(l)).cloned();
                }
            }
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no stderr line with {what} in {PATIENCE:?}; got:\n{}",
                self.all()
            ),
        }
    }

    pub fn all(&self) -> String {
        self.lines.borrow().join("\n")
    }
}

/// A JSON-RPC session with the proxy over its stdio; everything but the
/// constructors and the captured stderr is [`LineSession`]'s.
pub struct StdioSession {
    session: LineSession,
    pub stderr: Stderr,
}

impl std::ops::Deref for StdioSession {
    type Target = LineSession;

    fn deref(&self) -> &LineSession {
        &self.session
    }
}

impl std::ops::DerefMut for StdioSession {
    fn deref_mut(&mut self) -> &mut LineSession {
        &mut self.session
    }
}

impl StdioSession {
    /// Starts the proxy with `proxy_args`, in front of `upstream`.
    pub fn spawn(proxy_args: &[&str], upstream: &[&str]) -> Self {
        let (child, stderr) = stdio_proxy(proxy_args, upstream);
        Self {
            session: LineSession::attach(child, "the proxy"),
            stderr,
        }
    }

    /// Starts the proxy in front of `simple_server` (stdio) and initializes.
    pub async fn simple(proxy_args: &[&str], server_args: &[&str]) -> Self {
        let server = example("simple_server");
        let mut upstream = vec![server.to_str().expect("utf-8 path"), "--transport", "stdio"];
        upstream.extend_from_slice(server_args);
        let mut session = Self::spawn(proxy_args, &upstream);
        session.initialize().await;
        session
    }

    /// Starts the proxy in front of the Python raw fixture and initializes.
    pub async fn fixture(proxy_args: &[&str]) -> Self {
        let script = fixture("raw_server.py");
        let mut session = Self::spawn(
            proxy_args,
            &[python3(), script.to_str().expect("utf-8 path")],
        );
        session.initialize().await;
        session
    }
}

/// Asserts that `response` is the overload error for `id` with `reason`;
/// returns its `data`.
pub fn assert_overload(response: &Value, id: impl Into<Value>, code: i64, reason: &str) -> Value {
    assert_eq!(response["id"], id.into(), "{response}");
    assert_overload_error(&response["error"], code, reason)
}

/// The overload error object `{code, message, data}`, every field of `data`
/// (the retry delay under both names, equal); returns `data`.
pub fn assert_overload_error(error: &Value, code: i64, reason: &str) -> Value {
    assert_eq!(error["code"], code, "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!("SERVER_OVERLOADED: {reason}, retry after ")),
        "{message}"
    );
    let data = error["data"].clone();
    assert_eq!(data["reason"], reason, "{error}");
    assert_eq!(data["retryAfterMs"], data["retry_after_ms"], "{error}");
    for field in [
        "active",
        "queued",
        "max_concurrent",
        "queue_size",
        "queue_timeout_ms",
        "retry_after_ms",
    ] {
        assert!(data[field].is_u64(), "{field} missing in {error}");
    }
    data
}

/// A file under the repository's `.tools/` (installed by
/// `scripts/setup-test-deps.sh`); fails the test, saying so, when missing.
pub fn installed_tool(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-deps.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Starts `simple_server` over HTTP on `bind`; returns it, its stderr and its URL.
pub async fn http_server(bind: &str, args: &[&str]) -> (Child, Stderr, String) {
    http_example("simple_server", bind, args).await
}

/// Starts the example `name` (`simple_server` or `bare_server`) over HTTP on
/// `bind`; returns it, its stderr and its URL.
pub async fn http_example(name: &str, bind: &str, args: &[&str]) -> (Child, Stderr, String) {
    let mut child = Command::new(example(name))
        .args(["--transport", "http", "--bind", bind])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start simple_server");
    let mut stderr = Stderr::capture(&mut child, "upstream");
    let line = stderr
        .wait_for("listening on", |l| l.contains("listening on http://"))
        .await;
    let url = line[line.find("http://").unwrap()..].trim().to_owned();
    (child, stderr, url)
}

/// Starts the stdio proxy in front of the `upstream` command, its stdin and
/// stdout piped; returns it and its stderr (the child still holds its pipes).
pub fn stdio_proxy(proxy_args: &[&str], upstream: &[&str]) -> (Child, Stderr) {
    let mut child = Command::new(proxy_bin())
        .arg("proxy")
        .args(proxy_args)
        .arg("--")
        .args(upstream)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let stderr = Stderr::capture(&mut child, "proxy");
    (child, stderr)
}

/// Starts the HTTP proxy in front of `upstream`; returns it, its stderr and its URL.
pub async fn http_proxy(args: &[&str], upstream: &str) -> (Child, Stderr, String) {
    http_proxy_logging(args, upstream, "info").await
}

/// As [`http_proxy`], with the log filter `log` (`RUST_LOG`).
pub async fn http_proxy_logging(
    args: &[&str],
    upstream: &str,
    log: &str,
) -> (Child, Stderr, String) {
    let mut child = Command::new(proxy_bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
        .args(args)
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let mut stderr = Stderr::capture(&mut child, "proxy");
    let line = stderr
        .wait_for("listening on", |l| l.contains("listening on http://"))
        .await;
    let start = line.find("http://").unwrap();
    let url = line[start..].split_whitespace().next().unwrap().to_owned();
    (child, stderr, url)
}

/// The metrics address the proxy logged, as a URL.
pub async fn metrics_url(stderr: &mut Stderr) -> String {
    let line = stderr
        .wait_for("metrics on", |l| l.contains("metrics on http://"))
        .await;
    let start = line.find("http://").unwrap();
    line[start..].split_whitespace().next().unwrap().to_owned()
}

/// Reads one sample (`name` or `name{labels}`) from the metrics endpoint.
pub async fn metric(url: &str, sample: &str) -> f64 {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Polls `sample` until it equals `value` (bounded by [`PATIENCE`]).
pub async fn wait_metric(url: &str, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = metric(url, sample).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} stayed {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
