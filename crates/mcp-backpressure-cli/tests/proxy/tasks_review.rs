//! Review of the task holds (h-review): a client can end its own task's
//! hold while the task still works upstream, with an answer that says
//! nothing about the task being over. Then the upstream works on more than
//! `max_concurrent` tasks at once.
//!
//! Upstream: the FastMCP 4 tasks server of `tasks.rs`
//! (`fixtures/tasks_server.py`, 2026-07-28, records its own peak), spoken to
//! raw over the stdio proxy.

use serde_json::{Value, json};

use crate::support::{StdioSession, fixture, metrics_url};
use crate::tasks::{peak, peak_file, tasks_python};

/// What every 2026-07-28 request carries (FastMCP answers -32602 without it).
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "review", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities":
            {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    })
}

fn work(id: u64, seconds: f64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "work", "arguments": {"seconds": seconds}, "_meta": meta()}})
}

/// The proxy (limit 1, no queue) in front of the FastMCP tasks server; one
/// `work` task of `seconds` started; returns the session and the task id.
async fn one_task(file: &std::path::Path, seconds: f64) -> (StdioSession, String) {
    let python = tasks_python();
    let server = fixture("tasks_server.py");
    let mut s = StdioSession::spawn(
        &[
            "--max-concurrent",
            "1",
            "--queue-size",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[
            python.to_str().unwrap(),
            server.to_str().unwrap(),
            "--peak-file",
            file.to_str().unwrap(),
        ],
    );
    let _ = metrics_url(&mut s.stderr).await;
    s.send(work(1, seconds)).await;
    let handle = s.response(1).await;
    assert_eq!(handle["result"]["resultType"], "task", "{handle}");
    let task = handle["result"]["taskId"].as_str().unwrap().to_owned();
    (s, task)
}

/// The second call must be refused while the first task works; returns
/// what the upstream's peak was.
async fn second_call_while_the_first_works(s: &mut StdioSession, file: &std::path::Path) {
    s.send(work(9, 0.5)).await;
    let second = s.response(9).await;
    // Let the server record the second call if it started it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        second["error"]["data"]["reason"],
        "concurrency_limit",
        "the first task still works, yet a second call was admitted: {second}; \
         the upstream's peak is {} with --max-concurrent 1",
        peak(file)
    );
    assert_eq!(peak(file), 1);
}

/// `tasks/result` does not exist in 2026-07-28: FastMCP answers -32601
/// (method not found). The proxy takes *any* answer to `tasks/result` as the
/// task's end ("terminal") and frees the slot; the task goes on working.
#[tokio::test]
async fn a_method_not_found_to_tasks_result_does_not_end_a_working_task() {
    let file = peak_file("result");
    let (mut s, task) = one_task(&file, 3.0).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/result",
        "params": {"taskId": task, "_meta": meta()}}))
        .await;
    let answer = s.response(2).await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    second_call_while_the_first_works(&mut s, &file).await;
}

/// -32602 is "invalid params" in general, not only "unknown task": a
/// `tasks/get` whose `_meta` lacks the protocol's envelope (or any other
/// invalid params) gets -32602 from FastMCP, and the proxy ends the hold as
/// `unknown_task` while the task works on.
#[tokio::test]
async fn an_invalid_params_answer_to_tasks_get_does_not_end_a_working_task() {
    let file = peak_file("get");
    let (mut s, task) = one_task(&file, 3.0).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get",
        "params": {"taskId": task, "_meta": {}}}))
        .await;
    let answer = s.response(2).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    // The task is known and working: a proper poll says so.
    s.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/get",
        "params": {"taskId": task, "_meta": meta()}}))
        .await;
    assert_eq!(s.response(3).await["result"]["status"], "working");
    second_call_while_the_first_works(&mut s, &file).await;
}

/// The same through `tasks/update` without its input (a client's mistake):
/// -32602, the hold ends, the task works on.
#[tokio::test]
async fn an_invalid_tasks_update_does_not_end_a_working_task() {
    let file = peak_file("update");
    let (mut s, task) = one_task(&file, 3.0).await;
    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/update",
        "params": {"taskId": task, "_meta": meta()}}))
        .await;
    let answer = s.response(2).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    second_call_while_the_first_works(&mut s, &file).await;
}

/// The proxy in front of the raw 2025-11-25 fixture (`tasks_2025_server.py`).
async fn raw_2025(limits: &[&str]) -> StdioSession {
    let script = fixture("tasks_2025_server.py");
    let mut session = StdioSession::spawn(
        limits,
        &[crate::support::python3(), script.to_str().unwrap()],
    );
    session.initialize().await;
    session
}

async fn fixture_stats(s: &mut StdioSession) -> Value {
    s.send(json!({"jsonrpc": "2.0", "id": "stats", "method": "fixture/stats"}))
        .await;
    s.response("stats").await["result"].clone()
}

/// In 2025-11-25 the *client* asks for the TTL (`params.task.ttl`) and a
/// server may grant it as asked (the fixture does, as the TypeScript SDK's
/// task store does). The TTL says when the task's record may be deleted, not
/// that its work stopped: a client asking for `ttl: 1` has its hold freed at
/// once by `ttl`, and its next call is admitted beside the task still
/// working. Expected: a TTL that runs out while the task works does not
/// free the slot on its own say-so (e.g. ask the upstream first).
#[tokio::test]
async fn a_client_chosen_tiny_ttl_does_not_free_a_working_task_slot() {
    let mut s = raw_2025(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 1500}, "task": {"ttl": 1}}}),
    )
    .await;
    let handle = s.response(1).await;
    assert_eq!(handle["result"]["task"]["status"], "working", "{handle}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 1500}, "task": {"ttl": 60000}}}),
    )
    .await;
    let second = s.response(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats = fixture_stats(&mut s).await;
    assert_eq!(
        second["error"]["data"]["reason"], "concurrency_limit",
        "admitted while task 1 still works: {second}; fixture stats {stats}"
    );
    assert_eq!(stats["peak"], 1, "{stats}");
}

/// `--max-task-holds` below `--max-concurrent` is accepted, and the cap then
/// ends the hold of a task that still works: with a limit of 2, three tasks
/// work upstream at once. Expected: the setting is refused (it must be at
/// least the largest number of slots), or the cap never frees a slot of a
/// working task.
#[tokio::test]
async fn a_task_hold_cap_below_the_limit_is_refused_at_start() {
    // Every hold keeps a slot: a cap below the limit would end holds of
    // tasks still working to make room for new ones.
    let output = tokio::process::Command::new(crate::support::proxy_bin())
        .args([
            "proxy",
            "--max-concurrent",
            "2",
            "--max-task-holds",
            "1",
            "--",
        ])
        .arg(crate::support::python3())
        .arg(fixture("tasks_2025_server.py"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid --max-task-holds 1: must be at least the limit (2"),
        "{stderr}"
    );
}

/// The control: with only proper polls, the second call is refused while
/// the first task works (passes; the tests above differ by one request).
#[tokio::test]
async fn control_a_working_task_keeps_its_slot() {
    let file = peak_file("control");
    let (mut s, task) = one_task(&file, 3.0).await;
    s.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/get",
        "params": {"taskId": task, "_meta": meta()}}))
        .await;
    assert_eq!(s.response(3).await["result"]["status"], "working");
    second_call_while_the_first_works(&mut s, &file).await;
}

/// A client cancels its `tools/call` (`notifications/cancelled`) right
/// after sending it. The upstream had already made it a task (2025-11-25:
/// `notifications/cancelled` does not cancel tasks; `tasks/cancel` does) and
/// answers with the handle. The proxy, the call being "cancelling", frees
/// the slot on that answer instead of holding it for the task: the task
/// works on, and the next call is admitted beside it.
#[tokio::test]
async fn a_call_cancelled_before_its_task_handle_still_holds_the_task_slot() {
    let mut s = raw_2025(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 1500}, "task": {"ttl": 60000}}});
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1}});
    // One write: the cancel reaches the proxy before the handle comes back.
    s.send_raw(format!("{call}\n{cancel}\n").as_bytes()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 1500}, "task": {"ttl": 60000}}}),
    )
    .await;
    let second = s.response(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats = fixture_stats(&mut s).await;
    assert_eq!(
        second["error"]["data"]["reason"], "concurrency_limit",
        "admitted while task 1 still works: {second}; fixture stats {stats}"
    );
    assert_eq!(stats["peak"], 1, "{stats}");
}

/// Over Streamable HTTP, a client `DELETE`s its session: the proxy ends its
/// task holds (`closed`). But a task is not the session's work: a 2025-11-25
/// server with a shared task store (this fixture; the spec only says a
/// receiver *may* delete a task after its TTL) keeps working on it. The
/// client opens a new session and is admitted beside its own task.
/// Expected: a session's end does not free a task's slot on its own say-so
/// (poll the task, or keep the hold to its poll/TTL).
#[tokio::test]
async fn deleting_the_session_does_not_free_the_slot_of_a_task_still_working() {
    use crate::http_client::HttpSession;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let script = fixture("tasks_2025_http_server.py");
    let _server = tokio::process::Command::new(crate::support::python3())
        .arg(&script)
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "fixture listens");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let (_proxy, _stderr, url) =
        crate::support::http_proxy(&["--max-concurrent", "1", "--queue-size", "0"], &upstream)
            .await;
    let task_call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "work", "arguments": {"ms": 2000}, "task": {"ttl": 60000}}})
    };
    let first = HttpSession::initialize(&url).await;
    let handle = first
        .send(task_call(1))
        .await
        .message_with_id(&json!(1))
        .await;
    assert_eq!(handle["result"]["task"]["status"], "working", "{handle}");
    let deleted = first
        .client
        .delete(&url)
        .header("mcp-session-id", first.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let second = HttpSession::initialize(&url).await;
    let answer = second
        .send(task_call(2))
        .await
        .message_with_id(&json!(2))
        .await;
    let stats = second
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "fixture/stats"}))
        .await
        .message_with_id(&json!(3))
        .await;
    assert_eq!(
        answer["error"]["data"]["reason"], "concurrency_limit",
        "admitted while the first session's task still works: {answer}; {stats}"
    );
}

/// The control of the test above, without the DELETE (passes).
#[tokio::test]
async fn control_without_delete_the_http_task_keeps_its_slot() {
    use crate::http_client::HttpSession;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let script = fixture("tasks_2025_http_server.py");
    let _server = tokio::process::Command::new(crate::support::python3())
        .arg(&script)
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "fixture listens");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let (_proxy, _stderr, url) =
        crate::support::http_proxy(&["--max-concurrent", "1", "--queue-size", "0"], &upstream)
            .await;
    let task_call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "work", "arguments": {"ms": 2000}, "task": {"ttl": 60000}}})
    };
    let first = HttpSession::initialize(&url).await;
    let handle = first
        .send(task_call(1))
        .await
        .message_with_id(&json!(1))
        .await;
    assert_eq!(handle["result"]["task"]["status"], "working", "{handle}");
    let second = HttpSession::initialize(&url).await;
    let answer = second
        .send(task_call(2))
        .await
        .message_with_id(&json!(2))
        .await;
    let stats = second
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "fixture/stats"}))
        .await
        .message_with_id(&json!(3))
        .await;
    assert_eq!(
        answer["error"]["data"]["reason"], "concurrency_limit",
        "admitted while the first session's task still works: {answer}; {stats}"
    );
}
