//! The wrapper's options, in process: a guarded handler served over an
//! in-memory duplex pipe to rmcp's client, with the limiter in reach of the test.
#![cfg(all(not(loom), feature = "rmcp"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::rmcp::{
    Backpressure, BackpressureOptions, CancelPolicy, ClientKey, GuardedMethods, OverloadResponse,
};
use mcp_backpressure::{Limiter, LimiterConfig, MetricsSnapshot};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
    ContentBlock, GetPromptRequestParams, ReadResourceRequestParams, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::{PeerRequestOptions, RequestContext, RunningService};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(20);

/// `hold` runs until cancelled (or for `ms`), `panic` panics, anything else returns at once.
#[derive(Clone)]
struct Probe {
    started: mpsc::UnboundedSender<()>,
    finished: Arc<AtomicUsize>,
    stopped: Arc<AtomicUsize>,
}

/// Counts futures dropped before they finished.
struct DropCounter(Arc<AtomicUsize>, bool);

impl Drop for DropCounter {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ServerHandler for Probe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match request.name.as_ref() {
            "hold" => {
                let ms = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("ms"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(60_000);
                let mut guard = DropCounter(self.stopped.clone(), false);
                let _ = self.started.send(());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.1 = true;
                self.finished.fetch_add(1, Ordering::SeqCst);
            }
            "busy" => {
                // A dependency timed out: an overload signal.
                return Err(ErrorData::new(
                    rmcp::model::ErrorCode(-32001),
                    "the database timed out",
                    None,
                ));
            }
            "tool_error" => {
                return Ok(CallToolResult::error(vec![ContentBlock::text("bad input")]).into());
            }
            "time_out" => {
                // The tool's own timeout: not an overload, and not reported as one.
                return Err(ErrorData::internal_error("upstream API timed out", None));
            }
            "panic" => {
                let _ = self.started.send(());
                panic!("the tool blew up");
            }
            _ => {}
        }
        Ok(CallToolResult::success(vec![ContentBlock::text("done")]).into())
    }
}

struct Harness {
    client: RunningService<RoleClient, ()>,
    limiter: Limiter,
    started: mpsc::UnboundedReceiver<()>,
    finished: Arc<AtomicUsize>,
    stopped: Arc<AtomicUsize>,
}

async fn harness(config: LimiterConfig, options: BackpressureOptions) -> Harness {
    let (tx, started) = mpsc::unbounded_channel();
    let probe = Probe {
        started: tx,
        finished: Arc::default(),
        stopped: Arc::default(),
    };
    let (finished, stopped) = (probe.finished.clone(), probe.stopped.clone());
    let limiter = Limiter::new(config).unwrap();
    let server = Backpressure::with_options(probe, limiter.clone(), options);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = tokio::time::timeout(PATIENCE, ().serve(client_io))
        .await
        .expect("handshake in time")
        .expect("handshake");
    Harness {
        client,
        limiter,
        started,
        finished,
        stopped,
    }
}

fn call(name: &str, ms: Option<u64>) -> ClientRequest {
    let mut params = CallToolRequestParams::new(name.to_string());
    if let Some(ms) = ms {
        params = params.with_arguments(serde_json::json!({"ms": ms}).as_object().cloned().unwrap());
    }
    ClientRequest::CallToolRequest(CallToolRequest::new(params))
}

impl Harness {
    /// Starts a `hold` call and waits until it runs.
    async fn hold(&mut self, ms: Option<u64>) -> rmcp::service::RequestHandle<RoleClient> {
        let handle = self
            .client
            .send_cancellable_request(call("hold", ms), PeerRequestOptions::no_options())
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, self.started.recv())
            .await
            .expect("the call started in time");
        handle
    }

    /// Waits until the snapshot satisfies `done` (bounded).
    async fn until(&self, what: &str, done: impl Fn(&MetricsSnapshot) -> bool) {
        for _ in 0..2000 {
            if done(&self.limiter.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{what}: never happened; last snapshot {:?}",
            self.limiter.snapshot()
        );
    }
}

#[tokio::test]
async fn a_tool_result_can_carry_the_overload_for_hosts_that_hide_errors() {
    let options =
        BackpressureOptions::default().with_overload_response(OverloadResponse::ToolResult);
    let mut h = harness(LimiterConfig::new(1), options).await;
    let _held = h.hold(None).await;
    let result = h
        .client
        .call_tool(CallToolRequestParams::new("quick"))
        .await
        .expect("an ordinary tool result, not a protocol error");
    assert_eq!(result.is_error, Some(true));
    let data = result.structured_content.expect("structured content");
    assert_eq!(data["reason"], "concurrency_limit");
    assert_eq!(data["active"], 1);
    let text = format!("{:?}", result.content);
    assert!(
        text.contains("SERVER_OVERLOADED: concurrency_limit"),
        "{text}"
    );
}

#[tokio::test]
async fn the_python_packages_code_is_one_call_away() {
    let options = BackpressureOptions::default().with_python_package_error_code();
    let mut h = harness(LimiterConfig::new(1), options).await;
    let _held = h.hold(None).await;
    match h.client.send_request(call("quick", None)).await {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code.0, -32001),
        other => panic!("expected the overload error, got {other:?}"),
    }
}

#[tokio::test]
async fn only_the_guarded_methods_are_limited() {
    // Default: resources/read and prompts/get are not guarded; the handler answers
    // (with rmcp's default "method not found", not the overload error).
    let mut h = harness(LimiterConfig::new(1), BackpressureOptions::default()).await;
    let _held = h.hold(None).await;
    let read = h
        .client
        .read_resource(ReadResourceRequestParams::new("mem://x"))
        .await;
    assert!(
        matches!(read, Err(ServiceError::McpError(ref e)) if e.code.0 != -31429),
        "{read:?}"
    );

    let options = BackpressureOptions::default().with_guarded(GuardedMethods::ALL_WORK);
    let mut h = harness(LimiterConfig::new(1), options).await;
    let _held = h.hold(None).await;
    let read = h
        .client
        .read_resource(ReadResourceRequestParams::new("mem://x"))
        .await;
    assert!(
        matches!(read, Err(ServiceError::McpError(ref e)) if e.code.0 == -31429),
        "{read:?}"
    );
    let prompt = h
        .client
        .get_prompt_once(GetPromptRequestParams::new("p"))
        .await;
    assert!(
        matches!(prompt, Err(ServiceError::McpError(ref e)) if e.code.0 == -31429),
        "{prompt:?}"
    );
    assert_eq!(h.limiter.snapshot().rejected_concurrency_limit, 2);
}

#[tokio::test]
async fn tools_call_can_be_left_unguarded() {
    let guarded = GuardedMethods::ALL_WORK.with_tools_call(false);
    let mut h = harness(
        LimiterConfig::new(1),
        BackpressureOptions::default().with_guarded(guarded),
    )
    .await;
    let _a = h.hold(None).await;
    let _b = h.hold(None).await; // both run: tools/call is not limited
    assert_eq!(h.limiter.snapshot().admitted, 0);
}

#[tokio::test]
async fn a_cancelled_call_is_stopped_and_its_slot_freed_at_once() {
    let mut h = harness(LimiterConfig::new(1), BackpressureOptions::default()).await;
    let held = h.hold(None).await;
    held.cancel(None).await.unwrap();
    h.until("the slot is freed", |s| s.active == 0 && s.completed == 1)
        .await;
    assert_eq!(
        h.stopped.load(Ordering::SeqCst),
        1,
        "the handler's future was dropped"
    );
    assert_eq!(h.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn run_to_completion_keeps_the_slot_until_the_handler_ends() {
    let options = BackpressureOptions::default().with_cancel_policy(CancelPolicy::RunToCompletion);
    let mut h = harness(LimiterConfig::new(1), options).await;
    let held = h.hold(Some(300)).await;
    held.cancel(None).await.unwrap();
    // Still running: the next call is turned away.
    match h.client.send_request(call("quick", None)).await {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code.0, -31429),
        other => panic!("the slot should still be held, got {other:?}"),
    }
    h.until("the handler ran to its end", |s| s.active == 0)
        .await;
    assert_eq!(h.finished.load(Ordering::SeqCst), 1);
    assert_eq!(h.stopped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_queued_call_leaves_the_queue_when_cancelled() {
    let mut h = harness(
        LimiterConfig::new(1).with_queue_size(1),
        BackpressureOptions::default(),
    )
    .await;
    let _held = h.hold(None).await;
    let queued = h
        .client
        .send_cancellable_request(call("quick", None), PeerRequestOptions::no_options())
        .await
        .unwrap();
    h.until("the call is queued", |s| s.queued == 1).await;
    queued.cancel(None).await.unwrap();
    h.until("the call left the queue", |s| {
        s.queued == 0 && s.cancelled_in_queue == 1
    })
    .await;
}

#[tokio::test]
async fn a_panicking_tool_gives_its_slot_back() {
    let mut h = harness(LimiterConfig::new(1), BackpressureOptions::default()).await;
    let _doomed = h
        .client
        .send_cancellable_request(call("panic", None), PeerRequestOptions::no_options())
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, h.started.recv())
        .await
        .unwrap();
    h.until("the panicked call's slot is back", |s| {
        s.active == 0 && s.completed == 1
    })
    .await;
    let ok = h.client.send_request(call("quick", None)).await;
    assert!(ok.is_ok(), "the server still serves: {ok:?}");
}

/// The Python package reported a tool's own `TimeoutError` as `queue_timeout`.
/// Here whatever the tool returns passes through; only admission rejects.
#[tokio::test]
async fn a_tools_own_timeout_is_not_an_overload() {
    let h = harness(LimiterConfig::new(1), BackpressureOptions::default()).await;
    match h.client.send_request(call("time_out", None)).await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code.0, -32603);
            assert_eq!(e.message, "upstream API timed out");
            assert!(e.data.is_none());
        }
        other => panic!("expected the tool's own error, got {other:?}"),
    }
    let s = h.limiter.snapshot();
    assert_eq!((s.total_rejected, s.admitted, s.completed), (0, 1, 1));
}

/// Advertises tools only and implements nothing else.
#[derive(Clone)]
struct ToolsOnly;

impl ServerHandler for ToolsOnly {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Since rmcp 3.11 its default `prompts/list`, `resources/list`,
/// `resources/templates/list` and `completion/complete` answer "method not
/// found" unless the handler's `get_info` advertises the capability (before,
/// an empty list). The wrapper forwards these methods and `get_info`, so the
/// wrapped handler's capabilities decide, as without the wrapper.
#[tokio::test]
async fn unadvertised_capabilities_answer_method_not_found_through_the_wrapper() {
    let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
    let server = Backpressure::with_options(
        ToolsOnly,
        limiter.clone(),
        BackpressureOptions::default().with_guarded(GuardedMethods::ALL_WORK),
    );
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = tokio::time::timeout(PATIENCE, ().serve(client_io))
        .await
        .expect("handshake in time")
        .expect("handshake");

    let tools = client.list_tools(None).await.expect("tools are advertised");
    assert!(tools.tools.is_empty());
    let prompts = client.list_prompts(None).await;
    assert!(
        matches!(prompts, Err(ServiceError::McpError(ref e)) if e.code.0 == -32601),
        "{prompts:?}"
    );
    let resources = client.list_resources(None).await;
    assert!(
        matches!(resources, Err(ServiceError::McpError(ref e)) if e.code.0 == -32601),
        "{resources:?}"
    );
}

/// Each guarded call is admitted under its tool's name: a tool at its own
/// limit is refused with `scope: "tool:NAME"` while other tools still run.
#[tokio::test]
async fn a_tools_own_limit_applies_through_the_wrapper() {
    let config = LimiterConfig::new(4).with_tool("hold", ToolConfig::new().with_max_concurrent(1));
    let mut h = harness(config, BackpressureOptions::default()).await;
    let _running = h.hold(None).await;
    match h.client.send_request(call("hold", Some(1))).await {
        Err(ServiceError::McpError(e)) => {
            let data = e.data.expect("overload data");
            assert_eq!(data["scope"], "tool:hold");
            assert_eq!(data["reason"], "concurrency_limit");
        }
        other => panic!("expected the tool's limit to refuse, got {other:?}"),
    }
    h.client
        .send_request(call("other", None))
        .await
        .expect("another tool still runs");
}

/// The client key comes from the request context: with a per-client limit
/// of 1, a second call of the same identity is refused, scope `client`.
#[tokio::test]
async fn a_client_key_function_selects_the_per_client_limit() {
    let options = BackpressureOptions::default()
        .with_client_key(ClientKey::from_fn(|_ctx| Some("alice".to_string())));
    let mut h = harness(LimiterConfig::new(4).with_client_limit(1), options).await;
    let _running = h.hold(None).await;
    match h.client.send_request(call("other", None)).await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.data.expect("overload data")["scope"], "client");
        }
        other => panic!("expected the client limit to refuse, got {other:?}"),
    }
}

/// Outcomes feed an adaptive limit honestly: a dependency timeout (-32001)
/// backs it off; a tool's own error (`isError`, or another error code)
/// teaches it nothing.
#[tokio::test]
async fn outcomes_are_classified_for_adaptive_limits() {
    let config = LimiterConfig::new(4).with_limit(LimitAlgorithm::Aimd, 1, Some(4));
    let h = harness(config, BackpressureOptions::default()).await;
    // The first admission is timed: its drop counts.
    assert!(h.client.send_request(call("busy", None)).await.is_err());
    assert_eq!(h.limiter.snapshot().max_concurrent, 3);
    for _ in 0..8 {
        h.client
            .send_request(call("tool_error", None))
            .await
            .unwrap();
        assert!(h.client.send_request(call("time_out", None)).await.is_err());
    }
    assert_eq!(h.limiter.snapshot().max_concurrent, 3);
}
