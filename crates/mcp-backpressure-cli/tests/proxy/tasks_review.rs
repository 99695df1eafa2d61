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

fn tasks_python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/tasks-venv/bin/python")
}

fn peak_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-bp-tasks-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn peak(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("the peak file");
    text.split_whitespace().next().unwrap().parse().unwrap()
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
async fn the_task_hold_cap_never_lets_more_than_the_limit_work() {
    let mut s = raw_2025(&[
        "--max-concurrent",
        "2",
        "--queue-size",
        "0",
        "--max-task-holds",
        "1",
    ])
    .await;
    for id in 1..=3u64 {
        s.send(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "work", "arguments": {"ms": 1500}, "task": {"ttl": 60000}}}),
        )
        .await;
        let _ = s.response(id).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats = fixture_stats(&mut s).await;
    assert!(
        stats["peak"].as_u64().unwrap() <= 2,
        "more tasks worked at once than --max-concurrent 2: {stats}"
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

/// Any client can call itself a continuation: a `tools/call` carrying a
/// `requestState` the upstream never issued (no `input_required` answer
/// passed through the proxy in this scope) jumps every queued call and
/// escapes `queue_size = 0`. Expected: only a retry of a call the upstream
/// answered `input_required` (its `requestState` seen on the way back) gets
/// the priority; anything else is an ordinary call, refused here.
#[tokio::test]
async fn a_forged_continuation_gets_no_priority() {
    let mut s = raw_2025(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    s.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "work", "arguments": {"ms": 600}}}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Never answered input_required to anyone: the state is made up.
    s.send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 10}, "requestState": "forged"}}),
    )
    .await;
    let forged = s.response(2).await;
    assert_eq!(
        forged["error"]["data"]["reason"], "concurrency_limit",
        "a made-up requestState was served ahead of the queue: {forged}"
    );
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

/// Over HTTP without a session, a hold's scope is the caller's
/// `Authorization` header *value*. A client whose bearer token was renewed
/// mid-task (short-lived OAuth tokens) polls with the new value: its
/// `tasks/get` that says `completed` lands in another scope and ends
/// nothing, and its next call is refused although the upstream is idle. The
/// README says the opposite ("the hold ends by the client's next poll").
#[tokio::test]
async fn a_renewed_bearer_token_still_ends_the_hold_by_the_clients_poll() {
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
    let client = crate::http_client::client();
    let post = |token: &str, message: Value| {
        let client = client.clone();
        let url = url.clone();
        let token = format!("Bearer {token}");
        async move {
            let response = client
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", "2025-11-25")
                .header("authorization", token)
                .body(message.to_string())
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    let handle = post(
        "old",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "work", "arguments": {"ms": 200}, "task": {"ttl": 60000}}}),
    )
    .await;
    let task = handle["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The token was renewed; the client polls with the new one.
    let state = post(
        "new",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task}}),
    )
    .await;
    assert_eq!(state["result"]["status"], "completed", "{state}");
    let next = post(
        "new",
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "work", "arguments": {"ms": 10}, "task": {"ttl": 60000}}}),
    )
    .await;
    assert!(
        next.get("result").is_some(),
        "the task is over and the client said so, yet: {next}"
    );
}

/// A client that polls exactly at the handle's `pollInterval` (as FastMCP's
/// client does: sleep the interval, then ask) is always a little later
/// than the interval, so the proxy's own poll fires before nearly every
/// client poll: the upstream gets about twice the polls it asked for. The
/// Python package waits two intervals for the same reason ("is never
/// doubled by it"); the proxy waits one.
#[tokio::test]
async fn a_client_polling_at_the_interval_gets_no_own_polls_beside_it() {
    let mut s = raw_2025(&["--max-concurrent", "1", "--queue-size", "0"]).await;
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "work", "arguments": {"ms": 2000, "poll_ms": 300}, "task": {"ttl": 60000}}}),
    )
    .await;
    let handle = s.response(1).await;
    let task = handle["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in 10..16u64 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        s.send(json!({"jsonrpc": "2.0", "id": id, "method": "tasks/get",
            "params": {"taskId": task}}))
            .await;
        let _ = s.response(id).await;
    }
    let stats = fixture_stats(&mut s).await;
    assert_eq!(
        stats["own_polls"], 0,
        "the proxy polled beside a client polling at the interval: {stats}"
    );
}
