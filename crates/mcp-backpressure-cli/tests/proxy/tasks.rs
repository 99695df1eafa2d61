//! Background tasks through the proxy, end to end: a `tools/call` answered
//! with a task handle keeps its slot until the task ends, so the upstream
//! never works on more than the limit.
//!
//! - The 2025-11-25 shape: `fixtures/tasks_2025_server.py` (raw JSON-RPC,
//!   standard library), driven line by line.
//! - The 2026-07-28 shape: a FastMCP 4 server with `fastmcp[tasks]`
//!   (`fixtures/tasks_server.py`) and FastMCP's own client
//!   (`fixtures/tasks_client.py`), over stdio and Streamable HTTP. Needs
//!   `.tools/tasks-venv`, which `scripts/setup-test-deps.sh` installs.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::{
    PATIENCE, StdioSession, fixture, http_proxy, metrics_url, proxy_bin, python3, wait_metric,
};

const ENDED: &str = "mcp_backpressure_task_holds_ended_total";

/// A 2025-11-25 `tools/call` of `work` asking for a task.
fn task_call(id: u64, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "work", "arguments": arguments, "task": {"ttl": 60000}}})
}

fn task_request(id: u64, method: &str, task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"taskId": task}})
}

/// The proxy (with a metrics endpoint) in front of the 2025 fixture.
async fn raw(limits: &[&str]) -> (StdioSession, String) {
    let script = fixture("tasks_2025_server.py");
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(limits);
    let mut session = StdioSession::spawn(&args, &[python3(), script.to_str().unwrap()]);
    session.initialize().await;
    let metrics = metrics_url(&mut session.stderr).await;
    (session, metrics)
}

async fn stats(session: &mut StdioSession, id: &str) -> Value {
    session
        .send(json!({"jsonrpc": "2.0", "id": id, "method": "fixture/stats"}))
        .await;
    session.response(id).await["result"].clone()
}

fn task_id(response: &Value) -> String {
    response["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a task handle: {response}"))
        .to_owned()
}

#[tokio::test]
async fn a_task_keeps_its_slot_until_tasks_result_answers() {
    let (mut s, _) = raw(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    s.send(task_call(1, json!({"ms": 300}))).await;
    let task = task_id(&s.response(1).await);
    // The answer left, the work goes on: a second call is refused.
    s.send(task_call(2, json!({"ms": 300}))).await;
    let refused = s.response(2).await;
    assert_eq!(
        refused["error"]["data"]["reason"], "concurrency_limit",
        "{refused}"
    );
    // tasks/result answers when the task is over; the slot is free then.
    s.send(task_request(3, "tasks/result", &task)).await;
    assert_eq!(s.response(3).await["result"]["content"][0]["text"], "done");
    s.send(task_call(4, json!({"ms": 10}))).await;
    task_id(&s.response(4).await);
    assert_eq!(stats(&mut s, "stats").await["peak"], 1);
}

#[tokio::test]
async fn the_upstream_never_works_on_more_than_the_limit() {
    let (mut s, metrics) = raw(&["--max-concurrent", "2", "--queue-size", "10"]).await;
    // Six tasks that announce their end: nobody polls.
    for id in 1..=6 {
        s.send(task_call(id, json!({"ms": 150, "notify": true})))
            .await;
    }
    for id in 1..=6 {
        task_id(&s.response(id).await);
    }
    wait_metric(&metrics, &format!("{ENDED}{{cause=\"terminal\"}}"), 6.0).await;
    let stats = stats(&mut s, "stats").await;
    assert_eq!(
        (&stats["peak"], &stats["working"]),
        (&json!(2), &json!(0)),
        "{stats}"
    );
    wait_metric(&metrics, "mcp_backpressure_task_holds", 0.0).await;
    wait_metric(&metrics, "mcp_backpressure_active", 0.0).await;
}

#[tokio::test]
async fn a_client_that_stops_polling_holds_no_slot_past_the_task() {
    let (mut s, metrics) = raw(&["--max-concurrent", "1", "--queue-size", "1"]).await;
    // No notification, no poll from the client: the proxy asks itself.
    s.send(task_call(1, json!({"ms": 100, "poll_ms": 100})))
        .await;
    task_id(&s.response(1).await);
    s.send(task_call(2, json!({"ms": 10}))).await;
    // Queued until the proxy's own poll finds task 1 completed.
    task_id(&s.response(2).await);
    wait_metric(&metrics, &format!("{ENDED}{{cause=\"own_poll\"}}"), 1.0).await;
    let stats = stats(&mut s, "stats").await;
    assert!(stats["own_polls"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["peak"], 1, "{stats}");
}

/// Past its TTL a hold is checked with the upstream at once (no poll is
/// otherwise due for a minute): the upstream forgot the finished task, so
/// the slot is free.
#[tokio::test]
async fn a_task_past_its_ttl_is_asked_about_and_freed() {
    let (mut s, metrics) = raw(&["--max-concurrent", "1", "--queue-size", "1"]).await;
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 50}, "task": {"ttl": 300}}}),
    )
    .await;
    task_id(&s.response(1).await);
    s.send(task_call(2, json!({"ms": 10}))).await;
    task_id(&s.response(2).await);
    wait_metric(&metrics, &format!("{ENDED}{{cause=\"unknown_task\"}}"), 1.0).await;
    let stats = stats(&mut s, "stats").await;
    assert_eq!(stats["peak"], 1, "{stats}");
}

#[tokio::test]
async fn an_acknowledged_cancel_frees_the_slot() {
    let (mut s, metrics) = raw(&["--max-concurrent", "1", "--queue-size", "1"]).await;
    s.send(task_call(1, json!({}))).await;
    let task = task_id(&s.response(1).await);
    s.send(task_call(2, json!({"ms": 10}))).await;
    // Cancels pass even when every slot is taken and the queue is full.
    s.send(task_request(3, "tasks/cancel", &task)).await;
    assert_eq!(s.response(3).await["result"]["status"], "cancelled");
    task_id(&s.response(2).await);
    wait_metric(&metrics, &format!("{ENDED}{{cause=\"cancel\"}}"), 1.0).await;
}

/// The venv's Python, with FastMCP and its tasks extra.
pub fn tasks_python() -> PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/tasks-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-deps.sh (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs FastMCP's client with `args`; returns its report.
async fn fastmcp_client(args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        PATIENCE * 3,
        Command::new(tasks_python())
            .arg(fixture("tasks_client.py"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the FastMCP client finished in time")
    .expect("run the FastMCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the FastMCP client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"))
}

/// The peak of `work` calls at once the FastMCP server recorded.
pub fn peak(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("the peak file");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

pub fn peak_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-bp-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn fastmcp_tasks_through_the_stdio_proxy_run_at_most_the_limit() {
    let file = peak_file("stdio");
    let python = tasks_python();
    let server = fixture("tasks_server.py");
    let report = fastmcp_client(&[
        "--calls",
        "6",
        "--seconds",
        "0.4",
        "--",
        proxy_bin(),
        "proxy",
        "--max-concurrent",
        "2",
        "--queue-size",
        "10",
        "--",
        python.to_str().unwrap(),
        server.to_str().unwrap(),
        "--peak-file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(report["ok"], 6, "{report}");
    assert_eq!(
        peak(&file),
        2,
        "the upstream worked on more tasks than the limit"
    );
}

#[tokio::test]
async fn with_no_queue_a_task_call_is_refused_while_another_works() {
    let file = peak_file("refused");
    let python = tasks_python();
    let server = fixture("tasks_server.py");
    let report = fastmcp_client(&[
        "--calls",
        "2",
        "--seconds",
        "2",
        "--stagger",
        "0.5",
        "--",
        proxy_bin(),
        "proxy",
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--",
        python.to_str().unwrap(),
        server.to_str().unwrap(),
        "--peak-file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(report["ok"], 1, "{report}");
    let error = &report["errors"][0];
    assert_eq!(error["code"], -31429, "{report}");
    assert_eq!(error["data"]["reason"], "concurrency_limit", "{report}");
    assert_eq!(peak(&file), 1);
}

/// A FastMCP tasks server on a free port, over Streamable HTTP; killed on drop.
async fn fastmcp_http(file: &std::path::Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new(tasks_python())
        .arg(fixture("tasks_server.py"))
        .args([
            "--peak-file",
            file.to_str().unwrap(),
            "--http",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the FastMCP server");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the FastMCP server did not listen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

#[tokio::test]
async fn fastmcp_tasks_through_the_http_proxy_run_at_most_the_limit() {
    let file = peak_file("http");
    let (_server, upstream) = fastmcp_http(&file).await;
    let (_proxy, _stderr, url) =
        http_proxy(&["--max-concurrent", "2", "--queue-size", "10"], &upstream).await;
    let report = fastmcp_client(&["--calls", "6", "--seconds", "0.4", "--url", &url]).await;
    assert_eq!(report["ok"], 6, "{report}");
    assert_eq!(
        peak(&file),
        2,
        "the upstream worked on more tasks than the limit"
    );
}

/// 2026-07-28 routing headers through the HTTP proxy: `Mcp-Name` stands for
/// `params.taskId` on a task poll and for a non-ASCII tool name as a base64
/// sentinel; both pass. A sentinel that names another tool is refused under
/// the request's own id, and takes no slot.
#[tokio::test]
async fn routing_headers_name_tasks_and_non_ascii_tools() {
    use crate::http_client::{Events, HttpSession};
    use crate::support::http_server;

    let (_server, _log, upstream) = http_server("127.0.0.1:0", &["--max-concurrent", "100"]).await;
    let (_proxy, _stderr, url) = http_proxy(&["--max-concurrent", "1"], &upstream).await;
    let session = HttpSession::initialize(&url).await;
    let post = |message: Value, name: &str, method: &str| {
        session
            .post(&message)
            .header("mcp-method", method)
            .header("mcp-name", name)
    };
    // A poll of a task the upstream does not know: the upstream answers it
    // (the proxy passed it), not the proxy.
    let poll = task_request(1, "tasks/get", "t-1");
    let mut answer = Events::new(post(poll, "t-1", "tasks/get").send().await.unwrap());
    let answer = answer.message_with_id(&json!(1)).await;
    assert_ne!(answer["error"]["code"], -32600, "{answer}");
    // "héllo" as the sentinel SDKs send: passes (the upstream knows no such tool).
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "héllo", "arguments": {}}});
    let mut answer = Events::new(
        post(call.clone(), "=?base64?aMOpbGxv?=", "tools/call")
            .send()
            .await
            .unwrap(),
    );
    let answer = answer.message_with_id(&json!(2)).await;
    assert_ne!(answer["error"]["code"], -32600, "{answer}");
    // The sentinel of another name ("hello"): refused, under id 2.
    let mut refused = Events::new(
        post(call, "=?base64?aGVsbG8=?=", "tools/call")
            .send()
            .await
            .unwrap(),
    );
    let refused = refused.message_with_id(&json!(2)).await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Name"),
        "{refused}"
    );
}
