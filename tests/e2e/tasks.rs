//! Background tasks end to end: `simple_server --task-tool sleep` over stdio,
//! driven by FastMCP's own client with its tasks extension
//! (`tests/e2e/fastmcp_tasks_client.py`, run with `.tools/tasks-venv`, which
//! `scripts/setup-test-deps.sh` installs).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

use crate::built_examples::workspace_root;
use crate::support::{PATIENCE, example, http_url, spawn_server};

/// The tasks venv's Python, or `None` (with a loud message) when it is
/// absent and the run does not require every client (`MCP_BP_REQUIRE_ALL`
/// unset); panics when it is absent and required.
fn tasks_python() -> Option<PathBuf> {
    let python = workspace_root().join(".tools/tasks-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var_os("MCP_BP_REQUIRE_ALL").is_some() {
        panic!(
            "{} is missing and MCP_BP_REQUIRE_ALL is set: run scripts/setup-test-deps.sh",
            python.display()
        );
    }
    eprintln!(
        "\n*** SKIPPED: {} is missing (run scripts/setup-test-deps.sh); \
         the FastMCP tasks test did not run ***\n",
        python.display()
    );
    None
}

/// The server's flags: one slot, no queue, `sleep` as a task tool.
const SERVER_FLAGS: [&str; 8] = [
    "--max-concurrent",
    "1",
    "--queue-size",
    "0",
    "--task-tool",
    "sleep",
    "--task-poll-interval",
    "50",
];

/// Runs the FastMCP tasks client with `args` (bounded; killed on timeout)
/// and checks its report: four task calls at once against one slot and no
/// queue; the server never worked on two tasks at once (each task says how
/// many were working at its start), calls were refused while a task worked,
/// every call ended `completed` with the tool's text, and a call through the
/// transparent `Client.call_tool` worked too.
async fn run_client(python: PathBuf, args: &[std::ffi::OsString]) {
    let script = workspace_root().join("tests/e2e/fastmcp_tasks_client.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(["--calls", "4", "--ms", "300", "--deadline", "60"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the FastMCP tasks client");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
            text
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = match tokio::time::timeout(PATIENCE * 4, child.wait()).await {
        Ok(status) => status.expect("wait for the client"),
        Err(_) => {
            // Killing the client closes a stdio server's stdin (it exits).
            child.kill().await.expect("kill the client");
            panic!("the FastMCP tasks client did not finish in time");
        }
    };
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    assert!(
        status.success(),
        "the FastMCP tasks client failed ({status}):\n{stdout}\n--- stderr (last 40 lines) ---\n{}",
        last_lines(&stderr, 40)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .expect("the client's JSON report");
    assert_eq!(report["completed"], 4, "{report}");
    assert_eq!(report["peak_working"], 1, "{report}");
    assert!(report["refused"].as_u64().unwrap() > 0, "{report}");
}

/// FastMCP's client starts `simple_server` as its stdio child.
#[tokio::test]
async fn fastmcp_tasks_client_is_limited_while_tasks_work() {
    let Some(python) = tasks_python() else {
        return;
    };
    let mut args: Vec<std::ffi::OsString> = vec!["--".into(), example("simple_server").into()];
    args.extend(SERVER_FLAGS.iter().map(Into::into));
    run_client(python, &args).await;
}

/// The same over Streamable HTTP on 127.0.0.1: the 2026-07-28 protocol has
/// no session, so polls arrive over other requests (other handler clones)
/// than the calls; they share one task table.
#[tokio::test]
async fn fastmcp_tasks_client_over_http_is_limited_while_tasks_work() {
    let Some(python) = tasks_python() else {
        return;
    };
    let mut flags = vec!["--transport", "http", "--bind", "127.0.0.1:0"];
    flags.extend(SERVER_FLAGS);
    let mut server = spawn_server(&flags);
    let url = http_url(&mut server).await;
    run_client(python, &["--url".into(), url.into()]).await;
    server.kill().await.expect("stop simple_server");
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A client that does not declare the tasks extension gets a plain result
/// from a `--task-tool`, and the slot is free once it is answered.
#[tokio::test]
async fn a_task_tool_answers_plainly_to_a_client_without_tasks() {
    let mut session = crate::support::RawSession::start(&[
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--task-tool",
        "sleep",
    ])
    .await;
    session.call_sleep(1, 20).await;
    let answer = session.response(1).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "slept 20 ms",
        "{answer}"
    );
    assert!(answer["result"].get("taskId").is_none(), "{answer}");
    session.call_sleep(2, 1).await;
    let answer = session.response(2).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "slept 1 ms",
        "{answer}"
    );
    session.close();
    assert_eq!(session.exit_code().await, Some(0));
}
