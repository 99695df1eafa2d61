//! Background tasks through the proxy: a `tools/call` answered with a task
//! handle keeps its slot until the task ends.
//!
//! Both protocol generations are recognised (see [`TaskState`]):
//!
//! | | 2025-11-25 (experimental tasks) | 2026-07-28 (`io.modelcontextprotocol/tasks`) |
//! |---|---|---|
//! | the handle | `result.task: {taskId, status, ttl, pollInterval}` | `result: {resultType: "task", taskId, status, ttlMs, pollIntervalMs}` |
//! | the state | `tasks/get`, `tasks/cancel` answers | `tasks/get` answers (with the result when done) |
//! | the end | `tasks/result` answers | — |
//! | pushed | `notifications/tasks/status` | `notifications/tasks` |
//!
//! A held slot is freed on the first of ([`HoldEnd`] counts which):
//! a terminal status (`completed`, `failed`, `cancelled`) in a `tasks/get`
//! answer or a status notification; any answer to `tasks/result`; an
//! acknowledged `tasks/cancel`; "unknown task" (`-32602`) to any of them;
//! the task's TTL; the end of its session (stdio: the connection).
//!
//! **Own polls.** A hold not asked about for its poll interval is asked
//! about by the proxy itself: a `tasks/get` with an id of the proxy's own
//! (a string no client uses: a random per-process prefix and a counter),
//! whose answer never reaches the client. Over stdio it goes down the same
//! pipe; over HTTP it is a POST to the upstream with the creating request's
//! headers (see [`Origin`]).
//!
//! **Scopes.** A task id means something only to whoever created the task:
//! holds are keyed by [`TaskScope`] — the stdio connection, the HTTP session,
//! or, without a session, the caller's identity (its client key when
//! `client_key = "header:…"` is set, else its `Authorization` header). A
//! caller cannot end another's hold: its polls and cancels name its own
//! scope. Callers with neither a session nor an identity share one scope.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use mcp_backpressure::Outcome;
use mcp_backpressure::Permit;
use mcp_backpressure::task_holds::{Held, HoldEnd, Lifetime, TaskHolds, TaskHoldsSnapshot};
use tokio::time::Instant;

use super::wire::message::{Answer, RequestId, TaskState, TaskStatus};

/// Where a task id is unique.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskScope {
    /// The stdio connection.
    Stdio,
    /// An HTTP session.
    Session(Arc<str>),
    /// An HTTP caller without a session, by its identity.
    Caller(Arc<str>),
    /// HTTP callers with neither a session nor an identity.
    Anonymous,
}

/// The task methods whose answers say how a task is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskMethod {
    /// `tasks/get`.
    Get,
    /// `tasks/result` (2025-11-25: blocks until the task ends).
    Result,
    /// `tasks/cancel`.
    Cancel,
    /// `tasks/update` (2026-07-28: input for a task that asked).
    Update,
}

impl TaskMethod {
    /// The method of a request, if it is one of these.
    pub fn of(method: &str) -> Option<Self> {
        match method {
            "tasks/get" => Some(Self::Get),
            "tasks/result" => Some(Self::Result),
            "tasks/cancel" => Some(Self::Cancel),
            "tasks/update" => Some(Self::Update),
            _ => None,
        }
    }
}

/// What the HTTP proxy needs to ask the upstream about a task itself: the
/// creating request's URL and its routing and authorisation headers
/// (`Authorization`, `Cookie`, `Host`, `Mcp-Session-Id`,
/// `Mcp-Protocol-Version`, the client key's header).
#[derive(Clone, Debug)]
pub struct Origin {
    /// Where the call went.
    pub url: reqwest::Url,
    /// The headers to send again.
    pub headers: HeaderMap,
}

/// A request about a task, in flight.
#[derive(Clone, Debug)]
pub struct TaskAsk {
    /// The task's scope.
    pub scope: TaskScope,
    /// What it asks.
    pub method: TaskMethod,
    /// The task.
    pub task_id: Arc<str>,
    /// The proxy's own poll (its answer is not forwarded).
    pub own: bool,
}

/// How the proxy asks the upstream about a task itself: over HTTP, where
/// and with which headers; on both transports, the `_meta` of the creating
/// call's protocol (2026-07-28 requests each carry the protocol version and
/// the client's capabilities, and a server answers a request without them
/// as if the method did not exist).
#[derive(Clone, Debug, Default)]
pub struct Follow {
    /// Over HTTP: where and how to ask.
    pub origin: Option<Arc<Origin>>,
    /// The `io.modelcontextprotocol/…` entries of the creating call's
    /// `params._meta`.
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Follow {
    /// From the creating call's origin and raw `params._meta`.
    pub fn new(origin: Option<Arc<Origin>>, meta: Option<&str>) -> Self {
        let meta = meta
            .and_then(|raw| serde_json::from_str::<serde_json::Map<_, _>>(raw).ok())
            .map(|mut meta| {
                // What says which protocol and which client: not the call's
                // progress token, nor anything else of the call's own.
                meta.retain(|key, _| {
                    key.starts_with("io.modelcontextprotocol/") && !key.ends_with("/logLevel")
                });
                meta
            })
            .filter(|meta| !meta.is_empty());
        Self { origin, meta }
    }
}

/// A hold whose own poll is due.
#[derive(Debug)]
pub struct Due {
    /// The task's scope.
    pub scope: TaskScope,
    /// The task.
    pub task_id: Arc<str>,
    /// How to ask.
    pub follow: Arc<Follow>,
}

/// What the proxy keeps with each hold.
#[derive(Debug)]
struct Tracked {
    /// How to ask about the task.
    follow: Arc<Follow>,
    /// Past its TTL, and being checked with the upstream.
    checking: AtomicBool,
}

/// The proxy's task holds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tasks {
    holds: TaskHolds<TaskScope, Arc<Tracked>>,
    prefix: Arc<str>,
    polls: Arc<AtomicU64>,
}

impl Tasks {
    /// An empty table of at most `max_holds` holds.
    pub fn new(max_holds: usize) -> Self {
        let nonce = {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            hasher.finish()
        };
        Self {
            holds: TaskHolds::with_data(max_holds),
            prefix: format!("mcp-backpressure-poll-{nonce:016x}-").into(),
            polls: Arc::default(),
        }
    }

    /// A consistent view of the holds.
    pub fn snapshot(&self) -> TaskHoldsSnapshot {
        self.holds.snapshot()
    }

    /// A guarded call's answer carried a task handle: its permit becomes the
    /// task's hold (or is given back at once if the task is already over).
    pub fn hold(&self, scope: TaskScope, task: &TaskState, permit: Permit, follow: Follow) {
        if task.status.is_terminal() {
            // Done before the answer left: nothing to hold.
            drop(permit);
            return;
        }
        // The proxy asks when nobody asked for two poll intervals: a client
        // polling at the pace the server asked for is never doubled.
        let lifetime = Lifetime::from_millis(
            task.ttl_ms,
            task.poll_interval_ms.map(|ms| ms.saturating_mul(2)),
        );
        let id: &str = &task.task_id;
        let tracked = Arc::new(Tracked {
            follow: Arc::new(follow),
            checking: AtomicBool::new(false),
        });
        let held = self
            .holds
            .hold_with(scope, id, permit, lifetime, Instant::now(), tracked);
        if held == Held::New {
            tracing::debug!(task = id, "the call runs as a task; its slot is held");
        }
    }

    /// A client asks about a task: it is known alive now.
    pub fn asked(&self, ask: &TaskAsk) {
        self.holds.seen(&ask.scope, &ask.task_id, Instant::now());
    }

    /// The upstream answered a request about a task.
    pub fn answered(&self, ask: &TaskAsk, answer: Answer, task: Option<&TaskState>) {
        let cause = |c: HoldEnd| if ask.own { HoldEnd::OwnPoll } else { c };
        let end = match (ask.method, answer) {
            (
                _,
                Answer::Error {
                    not_found: true, ..
                },
            ) => Some((HoldEnd::UnknownTask, Outcome::Ignore)),
            // It ran to its end: the answer is the call's own.
            (TaskMethod::Result, Answer::Result { is_error }) => Some((
                cause(HoldEnd::Terminal),
                if is_error {
                    Outcome::Ignore
                } else {
                    Outcome::Success
                },
            )),
            // The call's own error, as the task ended with it — not an
            // error about the request for it (no such method, bad params,
            // a refusal on the way).
            (TaskMethod::Result, Answer::Error { code, .. })
                if code.is_some_and(|code| !about_the_request(code)) =>
            {
                Some((cause(HoldEnd::Terminal), Outcome::Ignore))
            }
            (TaskMethod::Cancel, Answer::Result { .. }) => Some((HoldEnd::Cancel, Outcome::Ignore)),
            (TaskMethod::Get | TaskMethod::Update, Answer::Result { .. }) => {
                match task.filter(|t| *t.task_id == *ask.task_id) {
                    Some(state) if state.status.is_terminal() => {
                        Some((cause(HoldEnd::Terminal), outcome_of(&state.status)))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match end {
            Some((cause, outcome)) => self.end(&ask.scope, &ask.task_id, cause, outcome),
            None => {
                // Said alive only by an answer that describes the task.
                if task.is_some_and(|t| *t.task_id == *ask.task_id) {
                    self.alive(&ask.scope, &ask.task_id);
                }
            }
        }
    }

    /// A task status notification from the upstream, in `scope`.
    pub fn notified(&self, scope: &TaskScope, task: &TaskState) {
        if task.status.is_terminal() {
            self.end(
                scope,
                &task.task_id,
                HoldEnd::Terminal,
                outcome_of(&task.status),
            );
        } else {
            self.alive(scope, &task.task_id);
        }
    }

    /// The upstream said the task still works: its own poll waits, and a
    /// TTL check in progress is answered (the hold lives on, checked again
    /// [`OWN_POLL_TIMEOUT`] later).
    fn alive(&self, scope: &TaskScope, task_id: &str) {
        let now = Instant::now();
        self.holds.seen(scope, task_id, now);
        if let Some(tracked) = self.holds.data(scope, task_id)
            && tracked.checking.swap(false, Ordering::Relaxed)
        {
            self.holds.extend(scope, task_id, now + OWN_POLL_TIMEOUT);
        }
    }

    fn end(&self, scope: &TaskScope, task_id: &str, cause: HoldEnd, outcome: Outcome) {
        if self.holds.end(scope, task_id, cause, outcome) {
            tracing::debug!(task = task_id, %cause, "task over; its slot is free");
        }
    }

    /// Ends every hold of `scope` (its session or connection ended).
    pub fn close(&self, scope: &TaskScope) {
        let ended = self.holds.end_scope(scope);
        if !ended.is_empty() {
            tracing::debug!(
                holds = ended.len(),
                "session over; its tasks' slots are free"
            );
        }
    }

    /// Ends every hold (the proxy is stopping).
    pub fn close_all(&self) {
        self.holds.end_all();
    }

    /// A fresh id for an own poll.
    pub fn poll_id(&self) -> RequestId {
        let n = self.polls.fetch_add(1, Ordering::Relaxed);
        RequestId::string(format!("{}{n}", self.prefix))
    }

    /// The `tasks/get` of an own poll, as one line of JSON (no newline).
    pub fn poll_message(id: &RequestId, task_id: &str, follow: &Follow) -> Vec<u8> {
        let mut params = serde_json::json!({"taskId": task_id});
        if let Some(meta) = &follow.meta {
            params["_meta"] = serde_json::Value::Object(meta.clone());
        }
        let message = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id.to_value(),
            "method": "tasks/get",
            "params": params,
        });
        super::wire::message::escape_separators(
            serde_json::to_vec(&message).expect("a JSON value always serializes"),
        )
    }

    /// Checks the holds whose TTL ran out, and returns those whose own poll
    /// is due.
    ///
    /// A TTL says when the server may forget the task, not that its work
    /// stopped (a 2025-11-25 client even chooses it). So a hold past its TTL
    /// is asked about at once: an answer that it still works keeps it (and
    /// it is checked again [`OWN_POLL_TIMEOUT`] later); "unknown task" or a
    /// terminal status ends it as usual; no answer within
    /// [`OWN_POLL_TIMEOUT`] ends it ([`HoldEnd::Ttl`]).
    pub fn tick(&self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        for (scope, task_id) in self.holds.overdue(now) {
            let Some(tracked) = self.holds.data(&scope, &task_id) else {
                continue;
            };
            if tracked.checking.swap(true, Ordering::Relaxed) {
                tracing::debug!(task = %task_id, "task TTL over, unconfirmed; its slot is free");
                self.end(&scope, &task_id, HoldEnd::Ttl, Outcome::Ignore);
            } else {
                self.holds.extend(&scope, &task_id, now + OWN_POLL_TIMEOUT);
                due.push((scope, task_id));
            }
        }
        for key in self.holds.due(now) {
            if !due.contains(&key) {
                due.push(key);
            }
        }
        due.into_iter()
            .filter_map(|(scope, task_id)| {
                let follow = self.holds.data(&scope, &task_id)?.follow.clone();
                Some(Due {
                    scope,
                    task_id,
                    follow,
                })
            })
            .collect()
    }

    /// Runs the timers of the holds: TTLs, and own polls through `poll`,
    /// until dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it stops the timers (nothing is half done).
    pub async fn drive(self, mut poll: impl FnMut(Due) + Send) {
        loop {
            let changed = self.holds.changed();
            match self.holds.next_wake() {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            for due in self.tick(Instant::now()) {
                                poll(due);
                            }
                        }
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// An error about the request itself (unparsable, invalid, no such method,
/// invalid params) or a refusal on its way (an overload): it says nothing
/// of the task.
fn about_the_request(code: i64) -> bool {
    matches!(code, -32700 | -32600 | -32601 | -32602)
        || mcp_backpressure::jsonrpc::signals_overload(
            code,
            mcp_backpressure::jsonrpc::DEFAULT_OVERLOAD_CODE,
        )
}

/// What a terminal status says about load: a completed task's time is a
/// service time; a failed or cancelled one says nothing.
fn outcome_of(status: &TaskStatus) -> Outcome {
    match status {
        TaskStatus::Completed => Outcome::Success,
        _ => Outcome::Ignore,
    }
}

/// The longest a proxy's own poll may take before it is given up.
pub const OWN_POLL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
