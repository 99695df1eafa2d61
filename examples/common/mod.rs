//! The demo MCP server shared by the examples: three tools, `sleep`, `echo`
//! and `db` (a tool whose latency grows with its own concurrency, like a
//! database past its capacity), and the plumbing to serve it over stdio or
//! Streamable HTTP.
#![allow(dead_code)] // Each example uses part of it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use mcp_backpressure::config::seconds;
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::rmcp::{
    Backpressure, BackpressureOptions, ClientKey, OverloadStatus, OverloadStatusLayer, TaskWatch,
};
use mcp_backpressure::{ConfigError, Limiter, LimiterConfig, QueueDiscipline};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, GetTaskParams,
    GetTaskResult, Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig,
    UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// How a demo server talks to its client.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Transport {
    Stdio,
    Http,
}

/// The demo servers' transport flags.
#[derive(Clone, Debug, clap::Args)]
pub struct TransportArgs {
    /// How to talk to the client.
    #[arg(long, value_enum, default_value = "stdio")]
    pub transport: Transport,
    /// Address to listen on with `--transport http` (Streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
}

/// Sets up logging on stderr (`RUST_LOG`, `info` by default), runs `server` on
/// a multi-threaded runtime and turns its result into the exit status.
pub fn run_main<F>(server: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs where `server` listens, then serves until it shuts down or Ctrl-C.
pub async fn serve_until_interrupted(server: HttpServer) -> anyhow::Result<()> {
    tracing::info!("listening on http://{}/mcp", server.addr);
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result?;
            tracing::info!("interrupted, shutting down");
            server.shutdown.cancel();
        }
        () = server.shutdown.cancelled() => {}
    }
    server.task.await??;
    Ok(())
}

/// The limiter's settings as command-line flags (the same names as the
/// proxy's).
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    // Negative numbers are taken as values so that the error names the flag
    // ("invalid value '-1' for '--queue-size'") instead of "unexpected argument".
    /// Slots: tool calls allowed to run at once (>= 1; a call of weight w
    /// takes w). With --limit other than fixed, the starting limit.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub max_concurrent: usize,
    /// Tool calls allowed to wait for a slot (0 = reject at once).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub queue_size: usize,
    /// Longest wait in the queue, in seconds (fractions allowed, > 0).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub queue_timeout: f64,
    /// A tool's own limit, NAME=N (repeatable).
    #[arg(long, value_name = "NAME=N", value_parser = parse_pair)]
    pub tool_limit: Vec<(String, usize)>,
    /// A tool's weight: slots one call takes, NAME=W (repeatable).
    #[arg(long, value_name = "NAME=W", value_parser = parse_pair)]
    pub tool_weight: Vec<(String, usize)>,
    /// The limit of every tool without a --tool-limit (each on its own).
    #[arg(long, value_name = "N")]
    pub default_tool_limit: Option<usize>,
    /// Slots one client key may hold at once.
    #[arg(long, value_name = "N")]
    pub client_limit: Option<usize>,
    /// Where the client key comes from: `session` (Mcp-Session-Id) or
    /// `header:NAME`. Queued calls are served round-robin across keys.
    #[arg(long, value_name = "session|header:NAME", value_parser = parse_client_key)]
    pub client_key: Option<ClientKey>,
    /// The global limit's algorithm: fixed, aimd, gradient2 or vegas.
    #[arg(long, default_value = "fixed")]
    pub limit: LimitAlgorithm,
    /// Lower bound of an adaptive limit.
    #[arg(long, default_value_t = 1)]
    pub min_limit: usize,
    /// Upper bound of an adaptive limit (default: --max-concurrent).
    #[arg(long)]
    pub max_limit: Option<usize>,
    /// The queue discipline: fifo, codel or adaptive-lifo.
    #[arg(long, default_value = "fifo")]
    pub queue_discipline: QueueDiscipline,
    /// Client keys (and unconfigured tool names) tracked at once.
    #[arg(long, default_value_t = mcp_backpressure::config::DEFAULT_MAX_TRACKED_KEYS)]
    pub max_tracked_keys: usize,
}

/// `NAME=N`.
fn parse_pair(value: &str) -> Result<(String, usize), String> {
    let (name, n) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=N, got {value:?}"))?;
    if name.is_empty() {
        return Err(format!("expected NAME=N, got {value:?} (empty name)"));
    }
    let n = n
        .parse()
        .map_err(|_| format!("expected NAME=N with a whole number N, got {value:?}"))?;
    Ok((name.to_string(), n))
}

/// `session` or `header:NAME`.
fn parse_client_key(value: &str) -> Result<ClientKey, String> {
    match value.split_once(':') {
        None if value == "session" => Ok(ClientKey::Session),
        Some(("header", name)) if !name.is_empty() => Ok(ClientKey::Header(name.to_string())),
        _ => Err(format!("expected session or header:NAME, got {value:?}")),
    }
}

impl LimitArgs {
    /// The validated configuration; the error names the setting.
    pub fn config(&self) -> Result<LimiterConfig, ConfigError> {
        let mut config = LimiterConfig::new(self.max_concurrent)
            .with_queue_size(self.queue_size)
            .with_queue_timeout(seconds("queue_timeout", self.queue_timeout)?)
            .with_limit(self.limit, self.min_limit, self.max_limit)
            .with_max_tracked_keys(self.max_tracked_keys)
            .with_discipline(self.queue_discipline);
        config.default_tool_limit = self.default_tool_limit;
        config.client_limit = self.client_limit;
        for (name, limit) in &self.tool_limit {
            let tool = config.tools.remove(name).unwrap_or_default();
            config = config.with_tool(name, tool.with_max_concurrent(*limit));
        }
        for (name, weight) in &self.tool_weight {
            let tool = config.tools.remove(name).unwrap_or_default();
            config = config.with_tool(name, tool.with_weight(*weight));
        }
        config.validate()?;
        Ok(config)
    }

    /// The wrapper's options these flags ask for (the client key).
    pub fn options(&self) -> BackpressureOptions {
        BackpressureOptions::default().with_client_key(self.client_key.clone().unwrap_or_default())
    }

    /// Exits with a usage error naming the flag when a setting is invalid.
    pub fn config_or_exit<C: clap::CommandFactory>(&self) -> LimiterConfig {
        self.config().unwrap_or_else(|error| {
            let setting = error.setting();
            let flag = match setting.split_once('.') {
                // tools."NAME".weight → --tool-weight
                Some((_, rest)) => format!("--tool-{}", rest.rsplit('.').next().unwrap_or(rest)),
                None => format!("--{}", setting.replace('_', "-")),
            }
            .replace("max_concurrent", "limit")
            .replace('_', "-");
            C::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("{error} (flag {flag})"),
                )
                .exit()
        })
    }
}

/// The `db` tool's capacity as command-line flags: it models a database that
/// serves `C` calls at once at full speed and slows down past that.
#[derive(Clone, Debug, clap::Args)]
pub struct SaturationArgs {
    /// Calls of the `db` tool that run at once at their base time (>= 1). With
    /// n calls running (counted when a call starts, itself included), a call
    /// takes `ms * max(1, n / C)`.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 8,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub db_capacity: u32,
    /// From SECS seconds after the server started, the `db` capacity becomes
    /// C2 (SECS >= 0, fractions allowed; C2 >= 1), e.g. `10=8` halves a
    /// capacity of 16 ten seconds in.
    #[arg(
        long,
        value_name = "SECS=C2",
        allow_hyphen_values = true,
        value_parser = CapacityChange::parse
    )]
    pub db_capacity_after: Option<CapacityChange>,
    /// How hard contention bites past the capacity: a call takes
    /// `ms * max(1, n / C)^K` (K >= 1; 1 = throughput stays at C calls per
    /// `ms` however many run, above 1 = throughput collapses as more run,
    /// as lock contention does to a real database).
    #[arg(long, value_name = "K", default_value_t = 1.0, value_parser = parse_contention)]
    pub db_contention: f64,
    /// A statement timeout, in milliseconds: a call that would take longer
    /// fails after this long with JSON-RPC error -32001 ("statement
    /// timeout"), as a database with a statement timeout does.
    #[arg(long, value_name = "MS")]
    pub db_timeout: Option<u64>,
}

fn parse_contention(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(k) if k.is_finite() && k >= 1.0 => Ok(k),
        _ => Err(format!("expected a number >= 1, got {value:?}")),
    }
}

impl Default for SaturationArgs {
    fn default() -> Self {
        Self {
            db_capacity: 8,
            db_capacity_after: None,
            db_contention: 1.0,
            db_timeout: None,
        }
    }
}

impl SaturationArgs {
    /// Makes these the settings of the process's one database, shared by
    /// every [`DemoServer`] (every session) created afterwards; its clock for
    /// `--db-capacity-after` starts now. Call it once, first thing in `main`.
    pub fn install(&self) {
        let db = Arc::new(Db::new(self));
        if DB.set(db).is_err() {
            tracing::warn!("the db settings were already in use; ignoring new ones");
        }
    }
}

/// Which tools run as background tasks (SEP-2663), as command-line flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TaskArgs {
    /// Run tool NAME as a background task (repeatable): a client that
    /// declares the tasks extension (`io.modelcontextprotocol/tasks`) gets a
    /// task handle at once and polls `tasks/get`; other clients get a plain
    /// result. The task keeps its slot until its work ends.
    #[arg(long, value_name = "NAME")]
    pub task_tool: Vec<String>,
    /// A task's time to live, in seconds (fractions allowed, > 0): past it the
    /// task fails and its slot is freed [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub task_ttl: Option<f64>,
    /// The poll interval suggested to task clients, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub task_poll_interval: u64,
}

impl TaskArgs {
    /// Makes these the task settings of every [`DemoServer`] created
    /// afterwards (every session shares one task store). Call it once, first
    /// thing in `main`; exits with a usage error when --task-ttl is invalid.
    pub fn install<C: clap::CommandFactory>(&self) {
        let ttl_ms = self
            .task_ttl
            .map(|secs| match Duration::try_from_secs_f64(secs) {
                Ok(ttl) if !ttl.is_zero() => u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                _ => C::command()
                    .error(
                        clap::error::ErrorKind::ValueValidation,
                        format!("--task-ttl must be a number of seconds > 0, got {secs}"),
                    )
                    .exit(),
            });
        let tasks = self.to_tasks(ttl_ms.unwrap_or(rmcp::task_manager::DEFAULT_TASK_TTL_MS));
        if TASKS.set(Arc::new(tasks)).is_err() {
            tracing::warn!("the task settings were already in use; ignoring new ones");
        }
    }
}

/// The process's task settings and store (see [`TaskArgs::install`]).
static TASKS: OnceLock<Arc<DemoTasks>> = OnceLock::new();

/// The tools run as tasks, and the one task store every session shares (the
/// 2026-07-28 protocol lets a client poll a task from any connection).
pub struct DemoTasks {
    tools: BTreeSet<String>,
    ttl_ms: u64,
    poll_interval_ms: u64,
    manager: TaskManager,
    /// Tasks whose work runs now.
    working: Arc<AtomicUsize>,
}

impl DemoTasks {
    fn shared() -> Arc<Self> {
        TASKS
            .get_or_init(|| {
                let args = TaskArgs {
                    task_poll_interval: rmcp::task_manager::DEFAULT_POLL_INTERVAL_MS,
                    ..TaskArgs::default()
                };
                Arc::new(args.to_tasks(rmcp::task_manager::DEFAULT_TASK_TTL_MS))
            })
            .clone()
    }
}

impl TaskArgs {
    fn to_tasks(&self, ttl_ms: u64) -> DemoTasks {
        DemoTasks {
            tools: self.task_tool.iter().cloned().collect(),
            ttl_ms,
            poll_interval_ms: self.task_poll_interval,
            manager: TaskManager::new(),
            working: Arc::default(),
        }
    }
}

/// Counts a task's work while it runs.
struct Working(Arc<AtomicUsize>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `--db-capacity-after SECS=C2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityChange {
    /// When the change happens, counted from the server's start.
    pub after: Duration,
    /// The capacity from then on.
    pub capacity: u32,
}

impl CapacityChange {
    fn parse(text: &str) -> Result<Self, String> {
        let (secs, capacity) = text
            .split_once('=')
            .ok_or_else(|| format!("expected SECS=C2, e.g. 10=8, got {text:?}"))?;
        let after = secs
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| {
                (s >= 0.0)
                    .then(|| Duration::try_from_secs_f64(s).ok())
                    .flatten()
            })
            .ok_or_else(|| format!("SECS must be a number of seconds >= 0, got {secs:?}"))?;
        let capacity = capacity
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&c| c >= 1)
            .ok_or_else(|| format!("C2 must be a whole number >= 1, got {capacity:?}"))?;
        Ok(Self { after, capacity })
    }
}

/// The process's one database (see [`SaturationArgs::install`]).
static DB: OnceLock<Arc<Db>> = OnceLock::new();

/// The state behind the `db` tool: how many calls run now, and the capacity.
#[derive(Debug)]
pub struct Db {
    running: AtomicUsize,
    capacity: u32,
    change: Option<CapacityChange>,
    contention: f64,
    timeout: Option<Duration>,
    started: Instant,
}

impl Db {
    fn new(args: &SaturationArgs) -> Self {
        Self {
            running: AtomicUsize::new(0),
            capacity: args.db_capacity.max(1),
            change: args.db_capacity_after,
            contention: args.db_contention,
            timeout: args.db_timeout.map(Duration::from_millis),
            started: Instant::now(),
        }
    }

    /// The process's database: the installed one, or the default settings.
    fn shared() -> Arc<Self> {
        DB.get_or_init(|| Arc::new(Self::new(&SaturationArgs::default())))
            .clone()
    }

    /// The capacity now.
    pub fn capacity(&self) -> u32 {
        match self.change {
            Some(change) if self.started.elapsed() >= change.after => change.capacity,
            _ => self.capacity,
        }
    }

    /// Starts a call of base time `base`: counts it (until the guard drops)
    /// and returns how long it takes, `base * max(1, n / C)^K`.
    fn enter(self: &Arc<Self>, base: Duration) -> (Duration, DbCall) {
        let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = DbCall(self.clone());
        let factor = (n as f64 / f64::from(self.capacity()))
            .max(1.0)
            .powf(self.contention);
        let time =
            Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX);
        (time, guard)
    }
}

/// One running `db` call: uncounted when dropped, whether the call completed
/// or was cancelled (its future dropped).
struct DbCall(Arc<Db>);

impl Drop for DbCall {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server with a slow tool, a fast one and a saturating one.
#[derive(Clone)]
pub struct DemoServer {
    tool_router: ToolRouter<Self>,
    db: Arc<Db>,
    tasks: Arc<DemoTasks>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SleepArgs {
    /// How long to sleep, in milliseconds.
    pub ms: u64,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to send back.
    pub message: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct DbArgs {
    /// The base service time, in milliseconds (when at most the capacity runs at once).
    pub ms: u64,
}

#[tool_router]
impl DemoServer {
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
            db: Db::shared(),
            tasks: DemoTasks::shared(),
        }
    }

    /// When the request carries a progress token, a `notifications/progress`
    /// (progress 0) announces that the call was admitted and started: tests
    /// use it to know the order in which calls took their slots.
    #[tool(description = "Sleep for `ms` milliseconds, then say so.")]
    async fn sleep(
        &self,
        Parameters(SleepArgs { ms }): Parameters<SleepArgs>,
        context: RequestContext<RoleServer>,
    ) -> String {
        if let Some(token) = context.meta.get_progress_token() {
            let started = ProgressNotificationParam::new(token, 0.0).with_message("started");
            // Not awaited by the call: once its input has ended, rmcp no
            // longer confirms a notification as sent, and a call waiting for
            // that would never reach its work.
            let peer = context.peer.clone();
            tokio::spawn(async move {
                if let Err(error) = peer.notify_progress(started).await {
                    tracing::debug!(%error, "could not announce the start");
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(description = "Return `message` unchanged.")]
    async fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        message
    }

    /// The process's database is shared by every session.
    #[tool(
        description = "A database query of base time `ms` milliseconds: with n `db` calls \
        running at once and the server's capacity C (--db-capacity), it takes \
        `ms * max(1, n / C)^K` (--db-contention K), or fails with -32001 after \
        --db-timeout."
    )]
    async fn db(&self, Parameters(DbArgs { ms }): Parameters<DbArgs>) -> Result<String, ErrorData> {
        let (time, _running) = self.db.enter(Duration::from_millis(ms));
        if let Some(timeout) = self.db.timeout
            && time > timeout
        {
            tokio::time::sleep(timeout).await;
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(-32001),
                "statement timeout",
                None,
            ));
        }
        tokio::time::sleep(time).await;
        Ok(format!("done in {} ms", time.as_millis()))
    }
}

impl DemoServer {
    /// Runs the call as a task of the shared store: its work (the tool, as a
    /// plain call would run it) goes on after the handle is returned. The
    /// task's status message says how many tasks were working when it
    /// started, itself included (tests read it to check the limit).
    fn start_task(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> CallToolResponse {
        // Tell the wrapper when the work really ends: the slot is freed then,
        // whether or not anyone polls.
        let working = TaskWatch::of(&context).map(|watch| watch.start());
        let this = self.clone();
        let options = TaskOptions::new()
            .with_ttl_ms(self.tasks.ttl_ms)
            .with_poll_interval_ms(self.tasks.poll_interval_ms);
        let task = self.tasks.manager.spawn(options, move |task| {
            Box::pin(async move {
                let _working = working;
                let counter = this.tasks.working.clone();
                let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let _count = Working(counter);
                task.set_status_message(format!("working; {now} task(s) working at its start"));
                let call = ToolCallContext::new(&this, request, context);
                let response = tokio::select! {
                    response = this.tool_router.call(call) => response,
                    () = task.cancelled() => return Err(TaskExit::Cancelled),
                };
                match response {
                    Ok(CallToolResponse::Complete(result)) => Ok(result),
                    Ok(_) => Err(TaskExit::Error(ErrorData::internal_error(
                        "the tool did not complete",
                        None,
                    ))),
                    Err(error) => Err(TaskExit::Error(error)),
                }
            })
        });
        tracing::debug!(task = %task.task_id, "started a task");
        CallToolResponse::Task(CreateTaskResult::new(task))
    }
}

#[tool_handler]
impl ServerHandler for DemoServer {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let takes_tasks = context
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        if takes_tasks && self.tasks.tools.contains(request.name.as_ref()) {
            return Ok(self.start_task(request, context));
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        Ok(GetTaskResult::new(
            self.tasks.manager.get_task(&request.task_id)?,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.tasks
            .manager
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.tasks.manager.cancel_task(&request.task_id)
    }

    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools();
        let capabilities = if self.tasks.tools.is_empty() {
            capabilities.build()
        } else {
            capabilities.enable_tasks().build()
        };
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcp-backpressure-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Demo server guarded by mcp-backpressure: `sleep`, `echo` and `db`.")
    }
}

/// Serves the guarded demo server over stdio until the client closes stdin.
pub async fn serve_stdio(limiter: Limiter) -> anyhow::Result<()> {
    serve_stdio_with(Backpressure::new(DemoServer::new(), limiter)).await
}

/// Serves the demo server *without* backpressure over stdio until the client
/// closes stdin (the unwrapped baseline of the benchmarks).
pub async fn serve_stdio_bare() -> anyhow::Result<()> {
    serve_stdio_with(DemoServer::new()).await
}

async fn serve_stdio_with<H: ServerHandler>(handler: H) -> anyhow::Result<()> {
    let server = handler.serve(rmcp::transport::stdio()).await?;
    let reason = server.waiting().await?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}

/// A running Streamable HTTP server.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds `bind` and serves the guarded demo server as Streamable HTTP at `/mcp`.
/// Every session shares `limiter`.
pub async fn serve_http(bind: SocketAddr, limiter: Limiter) -> anyhow::Result<HttpServer> {
    serve_http_with_options(
        bind,
        limiter,
        BackpressureOptions::default(),
        OverloadStatus::Ok,
    )
    .await
}

/// As [`serve_http`], with the wrapper's `options` (e.g. a client key) and
/// the HTTP status of a refused POST (`OverloadStatusLayer`).
pub async fn serve_http_with_options(
    bind: SocketAddr,
    limiter: Limiter,
    options: BackpressureOptions,
    status: OverloadStatus,
) -> anyhow::Result<HttpServer> {
    // One wrapper cloned into every session: they share its task table, as
    // they share the task store.
    let guarded = Backpressure::with_options(DemoServer::new(), limiter, options);
    serve_http_with(bind, move || guarded.clone(), status).await
}

/// Binds `bind` and serves the demo server *without* backpressure as
/// Streamable HTTP at `/mcp` (the unwrapped baseline of the benchmarks).
pub async fn serve_http_bare(bind: SocketAddr) -> anyhow::Result<HttpServer> {
    serve_http_with(bind, DemoServer::new, OverloadStatus::Ok).await
}

/// Serves Streamable HTTP at `/mcp`, one handler from `new_session` per
/// session, behind an `OverloadStatusLayer` answering refusals with `status`.
async fn serve_http_with<H, F>(
    bind: SocketAddr,
    new_session: F,
    status: OverloadStatus,
) -> anyhow::Result<HttpServer>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let shutdown = CancellationToken::new();
    let config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    let service: StreamableHttpService<H, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(new_session()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let service = tower::Layer::layer(&OverloadStatusLayer::new(status), service);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    // rmcp writes a response in parts (the SSE event, then the end of the
    // chunked body): without TCP_NODELAY, Nagle's algorithm holds the last
    // part until the client ACKs the first, which it delays by up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled_owned().await })
            .await
    });
    Ok(HttpServer {
        addr,
        shutdown,
        task,
    })
}
