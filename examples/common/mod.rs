//! The demo MCP server shared by the examples: two tools, `sleep` and `echo`,
//! and the plumbing to serve it over stdio or Streamable HTTP.
#![allow(dead_code)] // Each example uses part of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use mcp_backpressure::config::seconds;
use mcp_backpressure::rmcp::Backpressure;
use mcp_backpressure::{ConfigError, Limiter, LimiterConfig};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
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

/// The limiter's settings as command-line flags.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    // Negative numbers are taken as values so that the error names the flag
    // ("invalid value '-1' for '--queue-size'") instead of "unexpected argument".
    /// Tool calls allowed to run at once (>= 1).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub max_concurrent: usize,
    /// Tool calls allowed to wait for a slot (0 = reject at once).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub queue_size: usize,
    /// Longest wait in the queue, in seconds (fractions allowed, > 0).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub queue_timeout: f64,
}

impl LimitArgs {
    /// The validated configuration; the error names the setting.
    pub fn config(&self) -> Result<LimiterConfig, ConfigError> {
        let config = LimiterConfig::new(self.max_concurrent)
            .with_queue_size(self.queue_size)
            .with_queue_timeout(seconds("queue_timeout", self.queue_timeout)?);
        config.validate()?;
        Ok(config)
    }

    /// Exits with a usage error naming the flag when a setting is invalid.
    pub fn config_or_exit<C: clap::CommandFactory>(&self) -> LimiterConfig {
        self.config().unwrap_or_else(|error| {
            let flag = format!("--{}", error.setting().replace('_', "-"));
            C::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("{error} (flag {flag})"),
                )
                .exit()
        })
    }
}

/// A server with a slow tool and a fast one.
#[derive(Clone)]
pub struct DemoServer {
    tool_router: ToolRouter<Self>,
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

#[tool_router]
impl DemoServer {
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
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
}

#[tool_handler]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-backpressure-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Demo server guarded by mcp-backpressure: `sleep` and `echo`.")
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
    serve_http_with(bind, move || {
        Backpressure::new(DemoServer::new(), limiter.clone())
    })
    .await
}

/// Binds `bind` and serves the demo server *without* backpressure as
/// Streamable HTTP at `/mcp` (the unwrapped baseline of the benchmarks).
pub async fn serve_http_bare(bind: SocketAddr) -> anyhow::Result<HttpServer> {
    serve_http_with(bind, DemoServer::new).await
}

/// Serves Streamable HTTP at `/mcp`, one handler from `new_session` per session.
async fn serve_http_with<H, F>(bind: SocketAddr, new_session: F) -> anyhow::Result<HttpServer>
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
