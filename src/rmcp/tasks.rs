//! The wrapper's side of background tasks (SEP-2663): a `tools/call` answered
//! with a task handle keeps its permit, as a [`TaskHolds`] hold, until the
//! task ends.
//!
//! See the module docs of [`crate::rmcp`] ("Background tasks") for the
//! scope of a task id and how a hold ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::rmcp::ErrorData;
use ::rmcp::model::{ErrorCode, GetTaskResult, Task};
use ::rmcp::service::{RequestContext, RoleServer};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Outcome;
use crate::limiter::Permit;
use crate::task_holds::{Held, HoldEnd, Lifetime, TaskHolds};

/// The scope key of the wrapper's holds (see the module docs: the wrapped
/// server is the scope).
pub(crate) type Scope = ();

/// Lets a handler tell the [`Backpressure`](super::Backpressure) wrapper when
/// the work of a task really ends, so that its slot is freed then — without
/// anyone polling `tasks/get`.
///
/// The wrapper puts one in the extensions of every guarded `tools/call`'s
/// [`RequestContext`]. A handler that answers with a task calls
/// [`TaskWatch::start`] and moves the [`TaskWorking`] guard into the task's
/// future; the guard's drop is the end of the work (the future finished, or
/// was dropped). A handler that never calls `start` loses nothing: its tasks'
/// slots are freed by what the wrapper sees (`tasks/get`, `tasks/cancel`) and
/// by their TTLs.
///
/// ```no_run
/// use mcp_backpressure::rmcp::TaskWatch;
/// use rmcp::model::{CallToolResult, CallToolResponse, CreateTaskResult};
/// use rmcp::service::{RequestContext, RoleServer};
/// use rmcp::task_manager::{TaskManager, TaskOptions};
///
/// fn start(tasks: &TaskManager, context: &RequestContext<RoleServer>) -> CallToolResponse {
///     let working = TaskWatch::of(context).map(|watch| watch.start());
///     let task = tasks.spawn(TaskOptions::default(), move |_ctx| {
///         Box::pin(async move {
///             let _working = working; // dropped when the work ends
///             Ok(CallToolResult::success(vec![]))
///         })
///     });
///     CallToolResponse::Task(CreateTaskResult::new(task))
/// }
/// ```
#[derive(Clone)]
pub struct TaskWatch {
    inner: Arc<WatchInner>,
}

struct WatchInner {
    /// The handler took a [`TaskWorking`] guard.
    armed: AtomicBool,
    /// Fired when the guard is dropped.
    done: CancellationToken,
    /// An acknowledged `tasks/cancel` reached the task.
    cancel_requested: AtomicBool,
}

/// The guard of a task's work (from [`TaskWatch::start`]): dropping it tells
/// the wrapper the work is over, and frees the task's slot.
#[must_use = "the task's slot is freed when this guard is dropped"]
pub struct TaskWorking {
    done: CancellationToken,
}

impl Drop for TaskWorking {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

impl fmt::Debug for TaskWorking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskWorking").finish_non_exhaustive()
    }
}

impl fmt::Debug for TaskWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskWatch")
            .field("armed", &self.is_armed())
            .field("done", &self.inner.done.is_cancelled())
            .finish()
    }
}

impl TaskWatch {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(WatchInner {
                armed: AtomicBool::new(false),
                done: CancellationToken::new(),
                cancel_requested: AtomicBool::new(false),
            }),
        }
    }

    /// The watch of a guarded `tools/call` (`None`: the call did not come
    /// through a [`Backpressure`](super::Backpressure) that guards
    /// `tools/call`).
    pub fn of(context: &RequestContext<RoleServer>) -> Option<TaskWatch> {
        context.extensions.get::<TaskWatch>().cloned()
    }

    /// Arms the watch: the call's task holds its slot until the returned
    /// guard is dropped (or another end comes first). Call it once, for the
    /// task the call answers with; a later call returns a guard of the same
    /// watch (the first drop ends it).
    pub fn start(&self) -> TaskWorking {
        self.inner.armed.store(true, Ordering::SeqCst);
        TaskWorking {
            done: self.inner.done.clone(),
        }
    }

    fn is_armed(&self) -> bool {
        self.inner.armed.load(Ordering::SeqCst)
    }
}

/// Asks the wrapped handler about a task (`tasks/get`), in the context of
/// the call that made it.
pub(crate) type Poller = Arc<
    dyn Fn(
            String,
            RequestContext<RoleServer>,
        ) -> Pin<Box<dyn Future<Output = Result<GetTaskResult, ErrorData>> + Send>>
        + Send
        + Sync,
>;

/// What the wrapper keeps with each hold.
#[derive(Clone)]
pub(crate) enum Kept {
    /// A watched task: its work's end frees the slot (and `tasks/cancel`
    /// marks it).
    Watched(TaskWatch),
    /// An unwatched task the wrapper asks about itself, in this context.
    Polled(RequestContext<RoleServer>),
    /// An unwatched task nobody polls for the wrapper.
    Unwatched,
}

impl Kept {
    fn watch(&self) -> Option<&TaskWatch> {
        match self {
            Kept::Watched(watch) => Some(watch),
            _ => None,
        }
    }
}

/// The wrapper's task holds (one table, whatever the connection).
pub(crate) type Holds = TaskHolds<Scope, Kept>;

/// The wrapper's task state, shared by the clones of one `Backpressure`.
pub(crate) struct Tasks {
    holds: Holds,
    /// Own polls of unwatched tasks (`None`: off).
    poller: Mutex<Option<Poller>>,
    /// The task ending holds at their TTLs, started with the first hold.
    expiry: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("holds", &self.holds)
            .finish_non_exhaustive()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(expiry) = self.expiry.get_mut().take() {
            expiry.abort();
        }
    }
}

impl Tasks {
    pub(crate) fn new(max_holds: usize) -> Self {
        Self {
            holds: TaskHolds::with_data(max_holds),
            poller: Mutex::new(None),
            expiry: Mutex::new(None),
        }
    }

    /// Turns own polls on: unwatched tasks are asked about through `poller`
    /// at their poll intervals.
    pub(crate) fn set_poller(&self, poller: Poller) {
        *self.poller.lock() = Some(poller);
    }

    /// Whether the wrapper polls unwatched tasks itself.
    pub(crate) fn polls(&self) -> bool {
        self.poller.lock().is_some()
    }

    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }

    /// Starts the TTL driver on the current runtime unless it runs.
    fn ensure_expiry(&self) {
        let mut expiry = self.expiry.lock();
        if expiry.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(_) => {
                tracing::warn!("no tokio runtime: task TTLs are not enforced");
                return;
            }
        };
        let holds = self.holds.clone();
        *expiry = Some(match self.poller.lock().clone() {
            Some(poller) => runtime.spawn(run_polls(holds, poller)),
            None => runtime.spawn(holds.run_expiry()),
        });
    }

    /// The call's answer was `task`: its permit becomes the task's hold.
    ///
    /// `context`: the context to poll it in (own polls on, and not watched).
    pub(crate) fn hold(
        &self,
        mut permit: Permit,
        task: &Task,
        watch: TaskWatch,
        context: Option<RequestContext<RoleServer>>,
    ) {
        permit.set_outcome(Outcome::Ignore);
        self.ensure_expiry();
        let id: Arc<str> = Arc::from(task.task_id.as_str());
        let lifetime = Lifetime::from_millis(task.ttl_ms, task.poll_interval_ms);
        let armed = watch.is_armed();
        let kept = match context {
            _ if armed => Kept::Watched(watch.clone()),
            Some(context) => Kept::Polled(context),
            None => Kept::Unwatched,
        };
        let now = Instant::now();
        if self.holds.hold_with((), &id, permit, lifetime, now, kept) == Held::Already {
            tracing::debug!(task = %id, "a second handle for a held task");
            return;
        }
        tracing::debug!(task = %id, ttl_ms = ?task.ttl_ms, watched = armed, "task holds its slot");
        if !armed {
            return;
        }
        let holds = self.holds.clone();
        tokio::spawn(async move {
            watch.inner.done.cancelled().await;
            let cause = if watch.inner.cancel_requested.load(Ordering::SeqCst) {
                HoldEnd::Cancel
            } else {
                HoldEnd::Terminal
            };
            if holds.end(&(), &id, cause, Outcome::Ignore) {
                tracing::debug!(task = %id, %cause, "task work ended: slot freed");
            }
        });
    }

    /// The handler answered `tasks/get` for `task_id` with `answer`.
    pub(crate) fn observe_get(&self, task_id: &str, answer: Result<bool, &ErrorData>) {
        match answer {
            Ok(true) => {
                // A watched task stopped after a cancel counts as cancelled,
                // whether the poll or the work's end is seen first.
                let cancelled = self.holds.data(&(), task_id).is_some_and(|kept| {
                    kept.watch()
                        .is_some_and(|watch| watch.inner.cancel_requested.load(Ordering::SeqCst))
                });
                let cause = if cancelled {
                    HoldEnd::Cancel
                } else {
                    HoldEnd::Terminal
                };
                self.end(task_id, cause);
            }
            Ok(false) => {
                self.holds.seen(&(), task_id, Instant::now());
            }
            Err(error) => self.observe_error(task_id, error),
        }
    }

    /// A `tasks/cancel` of `task_id` reaches the handler: a watched task is
    /// marked first, so that a work that stops at once is counted as
    /// cancelled. Returns whether the task is watched.
    pub(crate) fn cancel_requested(&self, task_id: &str) -> bool {
        match self.holds.data(&(), task_id).as_ref().and_then(Kept::watch) {
            Some(watch) => {
                watch.inner.cancel_requested.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The handler answered `tasks/cancel` for `task_id` with `answer`
    /// (`watched`: what [`Self::cancel_requested`] said).
    pub(crate) fn observe_cancel(
        &self,
        task_id: &str,
        watched: bool,
        answer: Result<(), &ErrorData>,
    ) {
        match answer {
            // A watched task's slot is freed when its work stops (counted
            // as a cancel): rmcp's cancellation is cooperative.
            Ok(()) if watched => {}
            Ok(()) => self.end(task_id, HoldEnd::Cancel),
            Err(error) => {
                if let Some(kept) = self.holds.data(&(), task_id)
                    && let Some(watch) = kept.watch()
                {
                    watch.inner.cancel_requested.store(false, Ordering::SeqCst);
                }
                self.observe_error(task_id, error);
            }
        }
    }

    fn observe_error(&self, task_id: &str, error: &ErrorData) {
        if unknown_task(error) {
            self.end(task_id, HoldEnd::UnknownTask);
        }
    }

    fn end(&self, task_id: &str, cause: HoldEnd) {
        if self.holds.end(&(), task_id, cause, Outcome::Ignore) {
            tracing::debug!(task = %task_id, %cause, "task ended: slot freed");
        }
    }
}

/// The context of an own poll of a task made by the call of `context`: the
/// same peer, request id and extensions, and a cancellation token of its own.
pub(crate) fn poll_context(context: &RequestContext<RoleServer>) -> RequestContext<RoleServer> {
    let mut poll = RequestContext::new(context.id.clone(), context.peer.clone());
    poll.extensions = context.extensions.clone();
    poll
}

/// Ends holds at their TTLs and asks the handler about each unwatched task
/// not known alive for its poll interval; until dropped.
async fn run_polls(holds: Holds, poller: Poller) {
    loop {
        let changed = holds.changed();
        match holds.next_wake() {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = changed => continue,
            },
            None => {
                changed.await;
                continue;
            }
        }
        let now = Instant::now();
        holds.expire(now);
        for ((), id) in holds.due(now) {
            let Some(Kept::Polled(context)) = holds.data(&(), &id) else {
                continue; // watched: its end is known without asking
            };
            let (holds, poll) = (holds.clone(), poller(id.to_string(), context));
            tokio::spawn(async move {
                let cause = match poll.await {
                    Ok(answer) if answer.task.status().is_terminal() => HoldEnd::OwnPoll,
                    Ok(_) => {
                        holds.seen(&(), &id, Instant::now());
                        return;
                    }
                    Err(error) if unknown_task(&error) => HoldEnd::UnknownTask,
                    Err(error) => {
                        tracing::debug!(task = %id, %error, "own poll of a task failed");
                        return;
                    }
                };
                if holds.end(&(), &id, cause, Outcome::Ignore) {
                    tracing::debug!(task = %id, %cause, "task ended (own poll): slot freed");
                }
            });
        }
    }
}

/// An error that says the task is not known: invalid params (-32602) with a
/// message saying so ("unknown task", rmcp's `TaskManager`; "not found",
/// FastMCP's). Other invalid params (a malformed request) say nothing about
/// the task.
fn unknown_task(error: &ErrorData) -> bool {
    if error.code != ErrorCode::INVALID_PARAMS {
        return false;
    }
    let message = error.message.to_ascii_lowercase();
    message.contains("unknown task") || message.contains("not found")
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ErrorCode, ErrorData};

    use super::unknown_task;

    #[test]
    fn only_a_not_found_invalid_params_is_an_unknown_task() {
        let error = |code, message: &str| ErrorData::new(code, message.to_owned(), None);
        assert!(unknown_task(&error(
            ErrorCode::INVALID_PARAMS,
            "unknown task: 7"
        )));
        assert!(unknown_task(&error(
            ErrorCode::INVALID_PARAMS,
            "Task 7 not found"
        )));
        assert!(!unknown_task(&error(
            ErrorCode::INVALID_PARAMS,
            "missing taskId"
        )));
        assert!(!unknown_task(&error(
            ErrorCode::METHOD_NOT_FOUND,
            "not found"
        )));
    }
}
