//! The task holds through the router: what the upstream and the client say,
//! in both protocol generations, and the timers (on paused tokio time).

use std::sync::Arc;
use std::time::Duration;

use mcp_backpressure::LimiterConfig;
use mcp_backpressure::task_holds::HoldEnd;
use serde_json::{Value, json};

use crate::proxy::gate::Gate;
use crate::proxy::inflight::{Admission, Scope};
use crate::proxy::limits::Settings;
use crate::proxy::router::{Caller, FromClient, FromUpstream, Router};
use crate::proxy::tasks::OWN_POLL_TIMEOUT;

fn router(max_concurrent: usize) -> Router {
    let settings = Settings::with_defaults(LimiterConfig::new(max_concurrent));
    let limiter = settings.limiter().unwrap();
    Router::new(Arc::new(Gate::new(limiter, settings)))
}

fn active(router: &Router) -> usize {
    router.gate().limiter.snapshot().active
}

fn ended(router: &Router, cause: HoldEnd) -> u64 {
    router.tasks().snapshot().ended.get(cause)
}

fn line(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

const META: &str = "io.modelcontextprotocol/protocolVersion";

/// A 2026-07-28 `tools/call` (the server decides whether it is a task).
fn call(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "work", "arguments": {},
        "_meta": {META: "2026-07-28", "progressToken": 7}}})
}

/// A 2025-11-25 `tools/call` asking for a task.
fn call_2025(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "work", "task": {"ttl": 60000}}})
}

fn handle_2026(id: i64, task: &str, ttl_ms: u64, poll_ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "resultType": "task", "taskId": task, "status": "working",
        "createdAt": "2026-12-07T00:00:00Z", "lastUpdatedAt": "2026-12-07T00:00:00Z",
        "ttlMs": ttl_ms, "pollIntervalMs": poll_ms}})
}

fn handle_2025(id: i64, task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"task": {
        "taskId": task, "status": "working", "ttl": 60000, "pollInterval": 1000,
        "createdAt": "2025-11-25T00:00:00Z", "lastUpdatedAt": "2025-11-25T00:00:00Z"}}})
}

fn get(id: i64, method: &str, task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"taskId": task}})
}

fn state(id: i64, task: &str, status: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "resultType": "complete", "taskId": task, "status": status,
        "createdAt": "x", "lastUpdatedAt": "x", "ttlMs": 60000}})
}

/// Sends a client message and forwards it (admitting it if guarded).
async fn send(router: &Router, scope: &Scope, caller: &Caller<'_>, message: &Value) {
    match router.client_from(scope, caller, &line(message), |_| None) {
        FromClient::Forward { .. } => {}
        FromClient::Admit { queued, .. } => {
            assert!(matches!(queued.admit().await, Admission::Admitted(_)));
        }
        other => panic!("{message} was not forwarded: {other:?}"),
    }
}

fn upstream(router: &Router, scope: &Scope, message: &Value) -> FromUpstream {
    router.upstream(scope, &line(message), None)
}

/// Starts a 2026-07-28 task `task` over stdio; its slot is held.
async fn start(router: &Router, id: i64, task: &str, ttl_ms: u64, poll_ms: u64) {
    send(router, &Scope::Stdio, &Caller::default(), &call(id)).await;
    upstream(
        router,
        &Scope::Stdio,
        &handle_2026(id, task, ttl_ms, poll_ms),
    );
}

#[tokio::test]
async fn a_2026_task_keeps_its_slot_until_tasks_get_says_it_is_done() {
    let router = router(1);
    let s = Scope::Stdio;
    start(&router, 1, "t1", 60_000, 1000).await;
    assert_eq!(active(&router), 1, "the task works: its slot stays taken");
    assert_eq!(router.tasks().snapshot().held, 1);
    // A second call is refused while the task works.
    let FromClient::Admit { queued, .. } = router.client(&s, None, &line(&call(2))) else {
        panic!("admitted through the limiter");
    };
    assert!(matches!(queued.admit().await, Admission::Rejected(_)));
    // Polls pass (never guarded) and a working status keeps the slot.
    send(&router, &s, &Caller::default(), &get(3, "tasks/get", "t1")).await;
    upstream(&router, &s, &state(3, "t1", "working"));
    assert_eq!(active(&router), 1);
    send(&router, &s, &Caller::default(), &get(4, "tasks/get", "t1")).await;
    let FromUpstream::Forward { answered, .. } =
        upstream(&router, &s, &state(4, "t1", "completed"))
    else {
        panic!("the client's poll is answered");
    };
    assert_eq!(answered.len(), 1);
    assert_eq!(active(&router), 0, "completed: the slot is free");
    assert_eq!(ended(&router, HoldEnd::Terminal), 1);
    // A hold ends once: another terminal answer changes nothing.
    send(&router, &s, &Caller::default(), &get(5, "tasks/get", "t1")).await;
    upstream(&router, &s, &state(5, "t1", "completed"));
    assert_eq!(router.tasks().snapshot().ended.total(), 1);
}

#[tokio::test]
async fn a_2025_task_is_held_only_when_the_call_asked_for_one_and_ends_with_tasks_result() {
    let router = router(2);
    let s = Scope::Stdio;
    // A result that merely has a `task` field, for a call that asked none:
    // an ordinary answer, the slot is free.
    send(&router, &s, &Caller::default(), &call(1)).await;
    upstream(&router, &s, &handle_2025(1, "x"));
    assert_eq!(active(&router), 0);
    // Asked for: a handle.
    send(&router, &s, &Caller::default(), &call_2025(2)).await;
    upstream(&router, &s, &handle_2025(2, "t2"));
    assert_eq!(active(&router), 1);
    // tasks/result answers when the task is over, with the call's result.
    send(
        &router,
        &s,
        &Caller::default(),
        &get(3, "tasks/result", "t2"),
    )
    .await;
    upstream(
        &router,
        &s,
        &json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [], "isError": false}}),
    );
    assert_eq!(active(&router), 0);
    assert_eq!(ended(&router, HoldEnd::Terminal), 1);
}

#[tokio::test]
async fn status_notifications_of_both_generations_end_holds() {
    let router = router(2);
    let s = Scope::Stdio;
    start(&router, 1, "a", 60_000, 1000).await;
    start(&router, 2, "b", 60_000, 1000).await;
    assert_eq!(active(&router), 2);
    // 2025-11-25: the Task's fields as params; working keeps it.
    let status = |method: &str, task: &str, status: &str| {
        json!({"jsonrpc": "2.0", "method": method, "params": {
            "taskId": task, "status": status, "createdAt": "x", "lastUpdatedAt": "x"}})
    };
    upstream(
        &router,
        &s,
        &status("notifications/tasks/status", "a", "working"),
    );
    assert_eq!(active(&router), 2);
    upstream(
        &router,
        &s,
        &status("notifications/tasks/status", "a", "failed"),
    );
    assert_eq!(active(&router), 1);
    upstream(
        &router,
        &s,
        &status("notifications/tasks", "b", "cancelled"),
    );
    assert_eq!(active(&router), 0);
    assert_eq!(ended(&router, HoldEnd::Terminal), 2);
}

#[tokio::test]
async fn an_acknowledged_cancel_and_an_unknown_task_end_holds() {
    let router = router(2);
    let s = Scope::Stdio;
    start(&router, 1, "a", 60_000, 1000).await;
    start(&router, 2, "b", 60_000, 1000).await;
    send(
        &router,
        &s,
        &Caller::default(),
        &get(3, "tasks/cancel", "a"),
    )
    .await;
    // 2026-07-28 acknowledges with an empty result.
    upstream(
        &router,
        &s,
        &json!({"jsonrpc": "2.0", "id": 3, "result": {"resultType": "complete"}}),
    );
    assert_eq!(ended(&router, HoldEnd::Cancel), 1);
    send(&router, &s, &Caller::default(), &get(4, "tasks/get", "b")).await;
    upstream(
        &router,
        &s,
        &json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "Task b not found"}}),
    );
    assert_eq!(ended(&router, HoldEnd::UnknownTask), 1);
    assert_eq!(active(&router), 0);
}

#[tokio::test]
async fn a_task_already_over_in_its_handle_holds_nothing() {
    let router = router(1);
    let s = Scope::Stdio;
    send(&router, &s, &Caller::default(), &call(1)).await;
    let mut done = handle_2026(1, "t", 1000, 1000);
    done["result"]["status"] = json!("completed");
    upstream(&router, &s, &done);
    assert_eq!(active(&router), 0);
    assert_eq!(router.tasks().snapshot().held, 0);
}

#[tokio::test(start_paused = true)]
async fn past_its_ttl_a_hold_is_checked_and_ends_unless_confirmed() {
    let router = router(2);
    let s = Scope::Stdio;
    start(&router, 1, "quiet", 2_000, 60_000).await;
    start(&router, 2, "alive", 2_000, 60_000).await;
    let t0 = tokio::time::Instant::now();
    assert!(
        router
            .tasks()
            .tick(t0 + Duration::from_millis(1_999))
            .is_empty()
    );
    // The TTL ran out: both are asked about at once, neither ends yet.
    let due = router.tasks().tick(t0 + Duration::from_millis(2_000));
    assert_eq!(due.len(), 2);
    assert_eq!(active(&router), 2);
    // The upstream says "alive" still works; nobody answers for "quiet".
    tokio::time::advance(Duration::from_millis(2_000)).await;
    let alive = due.iter().find(|d| &*d.task_id == "alive").unwrap();
    let (key, _, _) = router.own_poll(&s, alive).unwrap();
    let mut working = state(0, "alive", "working");
    working["id"] = key.id.to_value();
    assert!(matches!(
        upstream(&router, &s, &working),
        FromUpstream::Swallow
    ));
    // Unconfirmed within the own poll's timeout: the quiet one ends (ttl).
    tokio::time::advance(OWN_POLL_TIMEOUT).await;
    router.tasks().tick(tokio::time::Instant::now());
    assert_eq!(ended(&router, HoldEnd::Ttl), 1);
    assert_eq!(active(&router), 1, "the confirmed task keeps its slot");
    assert_eq!(router.tasks().snapshot().held, 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_polling_at_the_interval_gets_no_own_poll_beside_it() {
    let router = router(1);
    let s = Scope::Stdio;
    start(&router, 1, "t", 600_000, 300).await;
    let t0 = tokio::time::Instant::now();
    for n in 1..=20_i64 {
        // A little late each time, as a real client is.
        tokio::time::advance(Duration::from_millis(320)).await;
        assert!(
            router.tasks().tick(tokio::time::Instant::now()).is_empty(),
            "an own poll beside a client polling every interval (poll {n})"
        );
        send(
            &router,
            &s,
            &Caller::default(),
            &get(100 + n, "tasks/get", "t"),
        )
        .await;
        upstream(&router, &s, &state(100 + n, "t", "working"));
    }
    // Once the client stops, the proxy asks within two intervals.
    let last = tokio::time::Instant::now();
    assert!(
        router
            .tasks()
            .tick(last + Duration::from_millis(599))
            .is_empty()
    );
    assert_eq!(
        router.tasks().tick(last + Duration::from_millis(600)).len(),
        1
    );
    assert!(t0 < last);
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_is_not_about_the_task_ends_nothing() {
    let router = router(1);
    let s = Scope::Stdio;
    start(&router, 1, "t", 60_000, 1000).await;
    for (id, method, error) in [
        (
            2,
            "tasks/result",
            json!({"code": -32601, "message": "Method not found"}),
        ),
        (
            3,
            "tasks/get",
            json!({"code": -32602, "message": "missing envelope"}),
        ),
        (
            4,
            "tasks/update",
            json!({"code": -32602, "message": "inputResponses required"}),
        ),
        (
            5,
            "tasks/result",
            json!({"code": -31429, "message": "SERVER_OVERLOADED"}),
        ),
    ] {
        send(&router, &s, &Caller::default(), &get(id, method, "t")).await;
        upstream(
            &router,
            &s,
            &json!({"jsonrpc": "2.0", "id": id, "error": error}),
        );
        assert_eq!(active(&router), 1, "{method} {error}");
    }
    // The task's own failure, as tasks/result returns it, ends it.
    send(
        &router,
        &s,
        &Caller::default(),
        &get(6, "tasks/result", "t"),
    )
    .await;
    upstream(
        &router,
        &s,
        &json!({"jsonrpc": "2.0", "id": 6, "error": {"code": -32603, "message": "boom"}}),
    );
    assert_eq!(active(&router), 0);
}

#[tokio::test]
async fn a_call_cancelled_before_its_handle_still_holds_its_task() {
    let router = router(1);
    let s = Scope::Stdio;
    send(&router, &s, &Caller::default(), &call_2025(1)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1}});
    router.client(&s, None, &line(&cancel));
    upstream(&router, &s, &handle_2025(1, "t"));
    assert_eq!(router.tasks().snapshot().held, 1);
    assert_eq!(active(&router), 1);
}

#[tokio::test(start_paused = true)]
async fn nobody_polling_makes_the_proxy_ask_with_the_calls_protocol_meta() {
    let router = router(1);
    let s = Scope::Stdio;
    start(&router, 1, "t", 60_000, 500).await;
    let t0 = tokio::time::Instant::now();
    // The client asks at 400 ms: the next own poll is due two intervals
    // (1 s) after that.
    tokio::time::advance(Duration::from_millis(400)).await;
    send(&router, &s, &Caller::default(), &get(2, "tasks/get", "t")).await;
    upstream(&router, &s, &state(2, "t", "working"));
    assert!(
        router
            .tasks()
            .tick(t0 + Duration::from_millis(1_399))
            .is_empty()
    );
    let due = router.tasks().tick(t0 + Duration::from_millis(1_400));
    assert_eq!(due.len(), 1);
    let (key, _ticket, message) = router.own_poll(&s, &due[0]).unwrap();
    let message: Value = serde_json::from_slice(&message).unwrap();
    assert_eq!(message["method"], "tasks/get");
    assert_eq!(message["params"]["taskId"], "t");
    // The protocol's own entries go along; the call's progress token does not.
    assert_eq!(message["params"]["_meta"][META], "2026-07-28");
    assert!(message["params"]["_meta"].get("progressToken").is_none());
    assert_eq!(message["id"], key.id.to_value());
    // Its answer is the proxy's: swallowed, and it ends the hold.
    let answer = state(0, "t", "completed");
    let mut answer = answer;
    answer["id"] = message["id"].clone();
    assert!(matches!(
        upstream(&router, &s, &answer),
        FromUpstream::Swallow
    ));
    assert_eq!(ended(&router, HoldEnd::OwnPoll), 1);
    assert_eq!(active(&router), 0);
}

#[tokio::test]
async fn callers_without_a_session_cannot_end_each_others_holds() {
    let router = router(2);
    let alice = Caller {
        identity: Some("auth:alice".into()),
        ..Caller::default()
    };
    let bob = Caller {
        identity: Some("auth:bob".into()),
        ..Caller::default()
    };
    // Each exchange is its own scope; tasks are the caller's.
    send(&router, &Scope::Exchange(1), &alice, &call(1)).await;
    upstream(
        &router,
        &Scope::Exchange(1),
        &handle_2026(1, "t", 60_000, 1000),
    );
    assert_eq!(active(&router), 1);
    // Bob names Alice's task: the upstream does not know it in his scope.
    send(
        &router,
        &Scope::Exchange(2),
        &bob,
        &get(2, "tasks/cancel", "t"),
    )
    .await;
    upstream(
        &router,
        &Scope::Exchange(2),
        &json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "not found"}}),
    );
    send(
        &router,
        &Scope::Exchange(3),
        &bob,
        &get(3, "tasks/get", "t"),
    )
    .await;
    upstream(&router, &Scope::Exchange(3), &state(3, "t", "completed"));
    assert_eq!(active(&router), 1, "Bob ended nothing of Alice's");
    // Alice's own poll, on another exchange, does.
    send(
        &router,
        &Scope::Exchange(4),
        &alice,
        &get(4, "tasks/get", "t"),
    )
    .await;
    upstream(&router, &Scope::Exchange(4), &state(4, "t", "completed"));
    assert_eq!(active(&router), 0);
}

#[tokio::test]
async fn task_requests_are_never_guarded_nor_refused_for_a_full_table() {
    let mut settings = Settings::with_defaults(LimiterConfig::new(1));
    settings.guarded = vec![
        "tools/call".into(),
        "tasks/get".into(),
        "tasks/cancel".into(),
    ];
    settings.max_in_flight = 1;
    let limiter = settings.limiter().unwrap();
    let router = Router::new(Arc::new(Gate::new(limiter, settings)));
    let s = Scope::Stdio;
    start(&router, 1, "t", 60_000, 1000).await;
    // A ping fills the table; a poll and a cancel still pass, unadmitted.
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    assert!(matches!(
        router.client(&s, None, &line(&ping)),
        FromClient::Forward { .. }
    ));
    for (id, method) in [(3, "tasks/get"), (4, "tasks/cancel")] {
        assert!(
            matches!(
                router.client(&s, None, &line(&get(id, method, "t"))),
                FromClient::Forward { .. }
            ),
            "{method}"
        );
    }
    let refused = json!({"jsonrpc": "2.0", "id": 5, "method": "resources/list"});
    assert!(matches!(
        router.client(&s, None, &line(&refused)),
        FromClient::Answer { .. }
    ));
}

#[tokio::test]
async fn past_the_cap_the_stalest_hold_ends() {
    let mut settings = Settings::with_defaults(LimiterConfig::new(3));
    settings.max_task_holds = 2;
    let limiter = settings.limiter().unwrap();
    let router = Router::new(Arc::new(Gate::new(limiter, settings)));
    start(&router, 1, "a", 60_000, 1000).await;
    start(&router, 2, "b", 60_000, 1000).await;
    start(&router, 3, "c", 60_000, 1000).await;
    let snapshot = router.tasks().snapshot();
    assert_eq!((snapshot.held, snapshot.ended.cap), (2, 1));
    assert_eq!(active(&router), 2);
}

#[tokio::test]
async fn a_closed_session_ends_its_holds_only() {
    let router = router(2);
    let (a, b) = (Scope::Session("a".into()), Scope::Session("b".into()));
    for (id, scope) in [(1, &a), (2, &b)] {
        send(&router, scope, &Caller::default(), &call(id)).await;
        upstream(&router, scope, &handle_2026(id, "t", 60_000, 1000));
    }
    assert_eq!(active(&router), 2);
    router.tasks().close(&super::TaskScope::Session("a".into()));
    assert_eq!(active(&router), 1);
    assert_eq!(ended(&router, HoldEnd::Closed), 1);
}

#[tokio::test]
async fn a_continuation_is_admitted_as_one() {
    let router = router(1);
    let s = Scope::Stdio;
    let retry = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "ask", "inputResponses": {"q": {"action": "accept"}}, "requestState": "abc"}});
    let FromClient::Admit { queued, .. } = router.client(&s, None, &line(&retry)) else {
        panic!("guarded");
    };
    assert!(queued.is_continuation());
}

/// Review (h-review): an upstream handle with no TTL (`ttl: null`, which
/// 2025-11-25 defines as unlimited) and a huge `pollInterval` leaves a hold
/// that nothing but the client can end: the own poll waits the handle's
/// whole `pollInterval` (no ceiling; past `Instant`'s range `checked_add`
/// gives `None` and it is never due at all). A client that vanished
/// (stateless HTTP: no session to close) keeps the slot for ever. Expected:
/// the own poll's interval has a ceiling, so the hold is asked about within
/// a bounded time.
#[tokio::test(start_paused = true)]
async fn a_hold_without_ttl_is_asked_about_even_with_a_huge_poll_interval() {
    let router = router(1);
    let s = Scope::Stdio;
    send(&router, &s, &Caller::default(), &call_2025(1)).await;
    upstream(
        &router,
        &s,
        &json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {
            "taskId": "forever", "status": "working", "ttl": null,
            "pollInterval": 1.0e15,
            "createdAt": "x", "lastUpdatedAt": "x"}}}),
    );
    assert_eq!(active(&router), 1);
    let t0 = tokio::time::Instant::now();
    let due = router.tasks().tick(t0 + Duration::from_secs(7 * 24 * 3600));
    assert!(
        !due.is_empty() || router.tasks().snapshot().held == 0,
        "a week on, the hold was never asked about and still holds its slot"
    );
}
