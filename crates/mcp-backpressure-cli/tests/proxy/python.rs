//! A server in another language, unchanged: the official Python SDK's server
//! behind the proxy, driven by the official Python client, over stdio and
//! Streamable HTTP. The overload contract holds as it does for the Rust
//! example wrapped with the library: two run, one waits, the next is turned
//! away at once with code -31429 and the seven `data` fields.
//!
//! Needs `.tools/venv` (PyPI `mcp`), which `scripts/setup-test-deps.sh`
//! installs; the tests fail, naming that script, when it is missing.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::{PATIENCE, Stderr, fixture, http_proxy, metrics_url, proxy_bin};

/// The venv's Python, with the `mcp` package.
pub fn venv_python() -> PathBuf {
    crate::support::installed_tool("venv/bin/python")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the Python client with `args`; returns its report.
async fn run_client(args: &[&str]) -> Value {
    let python = venv_python();
    let output = tokio::time::timeout(
        PATIENCE * 3,
        Command::new(&python)
            .arg(fixture("python_client.py"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finished in time")
    .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"))
}

fn assert_contract(report: &Value) {
    assert_eq!(report["code"], -31429, "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.starts_with("SERVER_OVERLOADED: queue_full, retry after "),
        "{message}"
    );
    let data = &report["data"];
    assert_eq!(data["reason"], "queue_full", "{report}");
    assert_eq!(
        (
            &data["active"],
            &data["queued"],
            &data["max_concurrent"],
            &data["queue_size"]
        ),
        (&json!(2), &json!(1), &json!(2), &json!(1)),
        "{report}"
    );
    assert_eq!(data["queue_timeout_ms"], 30_000, "{report}");
    assert!(
        data["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{report}"
    );
    assert_eq!(report["tools"], json!(["echo", "hold"]), "{report}");
    assert_eq!(report["holds"], json!(["held", "held"]), "{report}");
    assert_eq!(report["queued"], "queued", "{report}");
    assert_eq!(report["after"], "after", "{report}");
}

#[tokio::test]
async fn python_server_behind_the_stdio_proxy() {
    let python = venv_python();
    let port = free_port().to_string();
    let report = run_client(&[
        "stdio",
        proxy_bin(),
        &port,
        python.to_str().unwrap(),
        fixture("python_server.py").to_str().unwrap(),
    ])
    .await;
    assert_contract(&report);
}

#[tokio::test]
async fn python_server_behind_the_http_proxy() {
    let python = venv_python();
    let port = free_port();
    let mut server = Command::new(&python)
        .arg(fixture("python_server.py"))
        .args(["http", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python server");
    let mut server_log = Stderr::capture(&mut server, "python");
    server_log
        .wait_for("uvicorn's start", |l| l.contains("Uvicorn running on"))
        .await;
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let (_proxy, mut proxy_log, url) = http_proxy(
        &[
            "--max-concurrent",
            "2",
            "--queue-size",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream,
    )
    .await;
    let metrics = metrics_url(&mut proxy_log).await;
    let report = run_client(&["http", &url, &metrics]).await;
    assert_contract(&report);
}
