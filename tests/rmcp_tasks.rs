//! Background tasks (SEP-2663) through the wrapper, in process: a handler
//! with rmcp's `TaskManager`, guarded with one slot and no queue, served over
//! an in-memory duplex pipe to rmcp's client (which declares the tasks
//! extension). A task keeps its call's slot until it ends, by each cause.
#![cfg(all(not(loom), feature = "rmcp"))]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mcp_backpressure::rmcp::{Backpressure, BackpressureOptions, TaskWatch};
use mcp_backpressure::task_holds::TaskHoldsSnapshot;
use mcp_backpressure::{Limiter, LimiterConfig};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, ContentBlock, CreateTaskResult, GetTaskParams, GetTaskResult, Implementation,
    ServerCapabilities, ServerConfig, TaskStatus,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(20);

/// The overload error's code (the wrapper's default).
const OVERLOAD: i32 = mcp_backpressure::jsonrpc::DEFAULT_OVERLOAD_CODE;

/// `work` runs as a task until the test releases it (or it is cancelled);
/// `quick` answers at once. `ttl_ms` is the tasks' TTL.
#[derive(Clone)]
struct TaskServer {
    tasks: TaskManager,
    /// Whether the handler arms the wrapper's `TaskWatch`.
    watch: bool,
    ttl_ms: Option<u64>,
    /// The release of each task's work, by task id.
    releases: Arc<parking_lot::Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl ServerHandler for TaskServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != "work" {
            return Ok(CallToolResult::success(vec![ContentBlock::text("quick")]).into());
        }
        let working = if self.watch {
            Some(
                TaskWatch::of(&context)
                    .expect("a guarded call has a watch")
                    .start(),
            )
        } else {
            None
        };
        let (release, released) = oneshot::channel::<()>();
        let options = TaskOptions::new()
            .with_ttl_ms(self.ttl_ms)
            .with_poll_interval_ms(10);
        let task = self.tasks.spawn(options, move |ctx| {
            Box::pin(async move {
                let _working = working;
                tokio::select! {
                    _ = released => Ok(CallToolResult::success(vec![ContentBlock::text("done")])),
                    () = ctx.cancelled() => Err(TaskExit::Cancelled),
                }
            })
        });
        self.releases.lock().insert(task.task_id.clone(), release);
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        Ok(GetTaskResult::new(self.tasks.get_task(&request.task_id)?))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.tasks.cancel_task(&request.task_id)
    }
}

struct Harness {
    client: RunningService<RoleClient, ClientConfig>,
    limiter: Limiter,
    server: Backpressure<TaskServer>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

async fn harness(watch: bool, ttl_ms: Option<u64>, options: BackpressureOptions) -> Harness {
    harness_polling(watch, ttl_ms, options, false).await
}

/// [`harness`], with the wrapper's own polls on when `own_polls`.
async fn harness_polling(
    watch: bool,
    ttl_ms: Option<u64>,
    options: BackpressureOptions,
    own_polls: bool,
) -> Harness {
    let limiter = Limiter::new(LimiterConfig::new(1).with_queue_size(0)).unwrap();
    let handler = TaskServer {
        tasks: TaskManager::new(),
        watch,
        ttl_ms,
        releases: Arc::default(),
    };
    let mut server = Backpressure::with_options(handler, limiter.clone(), options);
    if own_polls {
        server = server.with_own_task_polls();
    }
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        }
    });
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::from_build_env(),
    );
    let client = tokio::time::timeout(PATIENCE, info.serve(client_io))
        .await
        .expect("handshake in time")
        .expect("handshake");
    Harness {
        client,
        limiter,
        server,
        serving,
    }
}

impl Harness {
    /// Starts a `work` task; returns its id.
    async fn start_task(&self) -> String {
        match self
            .client
            .call_tool_once(CallToolRequestParams::new("work"))
            .await
            .expect("the task call is admitted")
        {
            CallToolResponse::Task(created) => created.task.task_id,
            other => panic!("expected a task handle, got {other:?}"),
        }
    }

    /// A `quick` call: `Ok` when admitted, the error code when refused.
    async fn quick(&self) -> Result<(), i32> {
        match self
            .client
            .call_tool_once(CallToolRequestParams::new("quick"))
            .await
        {
            Ok(_) => Ok(()),
            Err(ServiceError::McpError(error)) => Err(error.code.0),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }

    fn release(&self, task_id: &str) {
        let release = self.server.get_ref().releases.lock().remove(task_id);
        release.expect("a running task").send(()).unwrap();
    }

    fn holds(&self) -> TaskHoldsSnapshot {
        self.server.task_holds()
    }

    /// Waits (bounded) until the task table satisfies `done`: the hold's end
    /// may come from a task the wrapper spawned, after the event the test
    /// caused.
    async fn until(&self, what: &str, done: impl Fn(&TaskHoldsSnapshot) -> bool) {
        let wait = async {
            while !done(&self.holds()) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        if tokio::time::timeout(PATIENCE, wait).await.is_err() {
            panic!("{what}: never happened; last {:?}", self.holds());
        }
    }

    /// Polls `tasks/get` as a client would, until the task is terminal.
    async fn poll_to_end(&self, task_id: &str) -> TaskStatus {
        let poll = async {
            loop {
                let got = self
                    .client
                    .peer()
                    .get_task(GetTaskParams::new(task_id.to_string()))
                    .await
                    .expect("tasks/get");
                if got.task.status().is_terminal() {
                    return got.task.status();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(PATIENCE, poll)
            .await
            .expect("the task ended in time")
    }
}

/// The handler watches its tasks' work: while a task works, the one slot is
/// taken (a second call is refused); when the work ends the slot is free,
/// though nobody polled `tasks/get`; the end is counted as terminal.
#[tokio::test]
async fn a_task_keeps_its_slot_until_its_work_ends_without_polls() {
    let h = harness(true, None, BackpressureOptions::default()).await;
    let task = h.start_task().await;
    assert_eq!(h.quick().await, Err(OVERLOAD), "the task holds the slot");
    assert_eq!(h.limiter.snapshot().active, 1);
    let holds = h.holds();
    assert_eq!((holds.held, holds.slots, holds.created), (1, 1, 1));

    h.release(&task);
    h.until("the work's end frees the slot", |s| s.held == 0)
        .await;
    assert_eq!(h.limiter.snapshot().active, 0);
    assert_eq!(h.quick().await, Ok(()), "the slot is free again");
    let holds = h.holds();
    assert_eq!(holds.ended.terminal, 1, "{holds:?}");
    assert_eq!(holds.ended.total(), 1, "ended once: {holds:?}");
    // A later poll of the finished task ends nothing more.
    assert_eq!(h.poll_to_end(&task).await, TaskStatus::Completed);
    assert_eq!(h.holds().ended.total(), 1);
}

/// A handler that does not watch its tasks: the slot stays taken after the
/// work ends until a `tasks/get` answer says the task is terminal.
#[tokio::test]
async fn an_unwatched_task_is_freed_by_a_terminal_poll() {
    let h = harness(false, None, BackpressureOptions::default()).await;
    let task = h.start_task().await;
    assert_eq!(h.quick().await, Err(OVERLOAD));
    h.release(&task);
    assert_eq!(h.poll_to_end(&task).await, TaskStatus::Completed);
    // The hold ended before the terminal answer was sent.
    assert_eq!(h.limiter.snapshot().active, 0);
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!(
        (holds.held, holds.ended.terminal, holds.ended.total()),
        (0, 1, 1)
    );
}

/// An unwatched task nobody polls: with own polls on, the wrapper asks the
/// handler at the task's poll interval (10 ms asked, 50 ms honoured) and a
/// terminal answer frees the slot.
#[tokio::test]
async fn own_polls_free_an_unwatched_task_nobody_polls() {
    let h = harness_polling(false, None, BackpressureOptions::default(), true).await;
    let task = h.start_task().await;
    assert_eq!(h.quick().await, Err(OVERLOAD));
    h.release(&task);
    h.until("an own poll frees the slot", |s| s.held == 0).await;
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!(
        (holds.ended.own_poll, holds.ended.total()),
        (1, 1),
        "{holds:?}"
    );
}

/// With own polls on, a task still working keeps its slot through the polls.
#[tokio::test(start_paused = true)]
async fn own_polls_keep_the_slot_of_a_working_task() {
    let h = harness_polling(false, None, BackpressureOptions::default(), true).await;
    let task = h.start_task().await;
    // Many poll intervals of 50 ms on the paused clock.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.holds().held, 1);
    assert_eq!(h.quick().await, Err(OVERLOAD));
    h.release(&task);
    h.until("an own poll frees the slot", |s| s.held == 0).await;
    assert_eq!(h.holds().ended.own_poll, 1);
}

/// `tasks/cancel` of an unwatched task frees its slot when acknowledged.
#[tokio::test]
async fn tasks_cancel_frees_the_slot() {
    let h = harness(false, None, BackpressureOptions::default()).await;
    let task = h.start_task().await;
    assert_eq!(h.quick().await, Err(OVERLOAD));
    h.client
        .peer()
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("tasks/cancel acknowledged");
    assert_eq!(h.limiter.snapshot().active, 0);
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!(
        (holds.held, holds.ended.cancel, holds.ended.total()),
        (0, 1, 1)
    );
    // The cancelled task's terminal poll ends nothing more.
    assert_eq!(h.poll_to_end(&task).await, TaskStatus::Cancelled);
    assert_eq!(h.holds().ended.total(), 1);
}

/// `tasks/cancel` of a watched task: the slot is freed when the work stops
/// (here at once: the operation honours the cancel), counted as a cancel.
#[tokio::test]
async fn tasks_cancel_of_a_watched_task_frees_the_slot_when_the_work_stops() {
    let h = harness(true, None, BackpressureOptions::default()).await;
    let task = h.start_task().await;
    h.client
        .peer()
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("tasks/cancel acknowledged");
    h.until("the cancelled work's end frees the slot", |s| s.held == 0)
        .await;
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!(
        (holds.ended.cancel, holds.ended.total()),
        (1, 1),
        "{holds:?}"
    );
}

/// A task the server no longer knows (its store was cleared): the "unknown
/// task" answer to `tasks/get` frees the slot.
#[tokio::test]
async fn an_unknown_task_answer_frees_the_slot() {
    let h = harness(false, None, BackpressureOptions::default()).await;
    let task = h.start_task().await;
    h.server.get_ref().tasks.shutdown();
    let error = h
        .client
        .peer()
        .get_task(GetTaskParams::new(task))
        .await
        .expect_err("the task is unknown");
    assert!(matches!(error, ServiceError::McpError(_)), "{error:?}");
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!((holds.held, holds.ended.unknown_task), (0, 1), "{holds:?}");
}

/// A task that never ends and is never polled: its TTL (60 s, on tokio's
/// paused clock) frees the slot.
#[tokio::test(start_paused = true)]
async fn the_ttl_frees_the_slot_of_a_task_nobody_polls() {
    let h = harness(false, Some(60_000), BackpressureOptions::default()).await;
    let _task = h.start_task().await;
    assert_eq!(h.quick().await, Err(OVERLOAD));
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(h.holds().held, 1, "still held before its TTL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.until("the TTL frees the slot", |s| s.held == 0).await;
    assert_eq!(h.quick().await, Ok(()));
    let holds = h.holds();
    assert_eq!((holds.ended.ttl, holds.ended.total()), (1, 1), "{holds:?}");
}

/// With room for one hold and two slots, a second task's hold ends the
/// first's (the cap), which gives its slot back.
#[tokio::test]
async fn the_cap_ends_the_stalest_hold() {
    let limiter = Limiter::new(LimiterConfig::new(2).with_queue_size(0)).unwrap();
    let handler = TaskServer {
        tasks: TaskManager::new(),
        watch: false,
        ttl_ms: None,
        releases: Arc::default(),
    };
    let options = BackpressureOptions::default().with_max_task_holds(1);
    let server = Backpressure::with_options(handler, limiter.clone(), options);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        }
    });
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::from_build_env(),
    );
    let client = info.serve(client_io).await.expect("handshake");
    let h = Harness {
        client,
        limiter,
        server,
        serving,
    };
    let _first = h.start_task().await;
    let _second = h.start_task().await;
    let holds = h.holds();
    assert_eq!(
        (holds.held, holds.max_holds, holds.ended.cap),
        (1, 1, 1),
        "{holds:?}"
    );
    assert_eq!(h.limiter.snapshot().active, 1);
}
