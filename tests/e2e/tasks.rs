//! Background tasks end to end: `simple_server --task-tool sleep` over stdio,
//! driven by FastMCP's own client with its tasks extension
//! (`tests/e2e/fastmcp_tasks_client.py`, run with `.tools/tasks-venv`, which
//! `scripts/setup-test-deps.sh` installs).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

use crate::built_examples::workspace_root;
use crate::support::{PATIENCE, example};

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

/// Four task calls at once against one slot and no queue: the server never
/// works on two tasks at once (each task says how many were working at its
/// start), calls are refused while a task works, and every call ends
/// `completed` with the tool's text; a call through the transparent
/// `Client.call_tool` works too.
#[tokio::test]
async fn fastmcp_tasks_client_is_limited_while_tasks_work() {
    let Some(python) = tasks_python() else {
        return;
    };
    let script = workspace_root().join("tests/e2e/fastmcp_tasks_client.py");
    let server = example("simple_server");
    let mut child = Command::new(python)
        .arg(script)
        .args(["--calls", "4", "--ms", "300", "--deadline", "60", "--"])
        .arg(server)
        .args([
            "--max-concurrent",
            "1",
            "--queue-size",
            "0",
            "--task-tool",
            "sleep",
            "--task-poll-interval",
            "50",
        ])
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
            // Kills the client, whose exit closes the server's stdin.
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
