//! What happens to calls waiting in the queue when their client goes away
//! without cancelling them, in process, with the limiter in reach:
//!
//! - over a byte stream (stdio's case), in paused time: `Backpressure::serve`
//!   empties the queue the moment the input ends; rmcp's own `serve` leaves
//!   queued calls waiting (and admits them) until its 5 s drain ends;
//! - over Streamable HTTP, on 127.0.0.1 with a raw HTTP/1.1 client: stateless,
//!   a dropped response frees the place at once (rmcp cancels the request);
//!   stateful, a dropped response stream does not (the client may resume it),
//!   and DELETE frees it when rmcp's drain ends — at once when the session's
//!   transports are `DisconnectAware`.
#![cfg(all(not(loom), feature = "rmcp"))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcp_backpressure::rmcp::{Backpressure, DisconnectAware};
use mcp_backpressure::{Limiter, LimiterConfig, MetricsSnapshot};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ContentBlock,
    ServerCapabilities, ServerConfig, ServerJsonRpcMessage,
};
use rmcp::service::{QuitReason, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{
    EventStore, EventStream, RestoreOutcome, SessionId, SessionManager,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every wait is bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long rmcp waits for in-flight responses once a transport's input ends.
const RMCP_DRAIN: Duration = Duration::from_secs(5);

/// One tool, `hold {"tag": n, "ms"?: m}`: announces its start with `tag`, then
/// sleeps `ms`, or without `ms` waits for a permit of the `gate`.
#[derive(Clone)]
struct Probe {
    started: mpsc::UnboundedSender<u64>,
    gate: Arc<Semaphore>,
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
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        let tag = arguments.get("tag").and_then(Value::as_u64).unwrap_or(0);
        let mut guard = DropCounter(self.stopped.clone(), false);
        let _ = self.started.send(tag);
        match arguments.get("ms").and_then(Value::as_u64) {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => self.gate.acquire().await.expect("gate open").forget(),
        }
        guard.1 = true;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("held {tag}"))]).into())
    }
}

struct Lab {
    probe: Probe,
    started: mpsc::UnboundedReceiver<u64>,
    limiter: Limiter,
}

fn lab(queue_size: usize) -> Lab {
    let (tx, started) = mpsc::unbounded_channel();
    Lab {
        probe: Probe {
            started: tx,
            gate: Arc::new(Semaphore::new(0)),
            finished: Arc::default(),
            stopped: Arc::default(),
        },
        started,
        limiter: Limiter::new(
            LimiterConfig::new(1)
                .with_queue_size(queue_size)
                .with_queue_timeout(Duration::from_secs(60)),
        )
        .unwrap(),
    }
}

impl Lab {
    fn server(&self) -> Backpressure<Probe> {
        Backpressure::new(self.probe.clone(), self.limiter.clone())
    }

    /// Waits (bounded) until the snapshot satisfies `done`; returns it.
    async fn until(&self, what: &str, done: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let snapshot = self.limiter.snapshot();
            if done(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never happened; last snapshot {snapshot:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until the call tagged `tag` has started.
    async fn started(&mut self, tag: u64) {
        let got = tokio::time::timeout(PATIENCE, self.started.recv())
            .await
            .unwrap_or_else(|_| panic!("call {tag} did not start in time"));
        assert_eq!(got, Some(tag), "calls start in order");
    }
}

fn hold(id: u64, ms: Option<u64>) -> Value {
    let mut arguments = json!({"tag": id});
    if let Some(ms) = ms {
        arguments["ms"] = json!(ms);
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "hold", "arguments": arguments}})
}

// === Over a byte stream, in paused time ===

/// A raw newline-delimited JSON-RPC client over one end of an in-memory pipe.
struct LineClient {
    read: tokio::io::Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
    write: tokio::io::WriteHalf<DuplexStream>,
}

impl LineClient {
    async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.write.write_all(&line).await.unwrap();
    }

    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(PATIENCE, self.read.next_line())
            .await
            .expect("a message or the end in time")
            .expect("read");
        line.map(|l| serde_json::from_str(&l).expect("JSON"))
    }

    async fn initialize(&mut self) {
        self.send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}}),
        )
        .await;
        let answer = self.next().await.expect("the initialize answer");
        assert!(answer.get("result").is_some(), "{answer}");
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }

    /// Closes the client's sending side, as a client closing the server's
    /// stdin does; it keeps reading.
    async fn close_input(&mut self) {
        self.write.shutdown().await.unwrap();
    }
}

/// How the byte-stream tests serve the guarded probe.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// `Backpressure::serve`: the transport is disconnect-aware.
    Backpressure,
    /// rmcp's `ServiceExt::serve`, called explicitly: a plain transport.
    Rmcp,
}

/// Serves `server` over one end of a pipe, one call running (`hold`, 1 s) and
/// five queued (`hold` until released, which never happens); returns the
/// client and the server's quit reason to come.
async fn busy_stdio_like_session(
    lab: &mut Lab,
    serve: Serve,
) -> (LineClient, tokio::task::JoinHandle<QuitReason>) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = lab.server();
    let running = tokio::spawn(async move {
        let running = match serve {
            Serve::Backpressure => server.serve(server_io).await,
            Serve::Rmcp => ServiceExt::serve(server, server_io).await,
        };
        running.expect("handshake").waiting().await.expect("join")
    });
    let (read, write) = tokio::io::split(client_io);
    let mut client = LineClient {
        read: BufReader::new(read).lines(),
        write,
    };
    client.initialize().await;
    client.send(hold(1, Some(1_000))).await;
    lab.started(1).await;
    for id in 2..=6 {
        client.send(hold(id, None)).await;
    }
    lab.until("five calls are queued", |s| s.queued == 5).await;
    (client, running)
}

/// The stdio scenario: the client closes its end while one call runs and five
/// wait. With `Backpressure::serve` the five leave the queue at once (no time
/// passes), each answered with an error; the running call is left alone, ends
/// and is answered; the session ends with it, long before rmcp's 5 s drain.
#[tokio::test(start_paused = true)]
async fn backpressure_serve_empties_the_queue_the_moment_the_input_ends() {
    let mut lab = lab(5);
    let (mut client, running) = busy_stdio_like_session(&mut lab, Serve::Backpressure).await;

    let closed_at = Instant::now();
    client.close_input().await;
    let s = lab.until("the queue is empty", |s| s.queued == 0).await;
    assert!(
        closed_at.elapsed() < Duration::from_millis(100),
        "the queue emptied only {:?} after the input ended",
        closed_at.elapsed()
    );
    assert_eq!(
        (s.active, s.admitted, s.cancelled_in_queue),
        (1, 1, 5),
        "queued calls are cancelled, never admitted; the running one keeps its slot: {s:?}"
    );

    let mut refused = Vec::new();
    let mut answered = None;
    while let Some(message) = client.next().await {
        match message["id"].as_u64() {
            Some(1) => answered = Some(message),
            Some(id) => {
                assert_eq!(
                    message["error"]["message"],
                    "request not started: the client disconnected while it waited for a slot",
                    "{message}"
                );
                refused.push(id);
            }
            None => {}
        }
    }
    refused.sort_unstable();
    assert_eq!(refused, [2, 3, 4, 5, 6]);
    let answered = answered.expect("the running call is answered");
    assert_eq!(answered["result"]["content"][0]["text"], "held 1");

    let reason = tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(reason, QuitReason::Closed), "{reason:?}");
    let took = closed_at.elapsed();
    assert!(
        took < RMCP_DRAIN,
        "the session ended {took:?} after the input did: it should end once the running \
         call (1 s) is answered"
    );
    assert_eq!(lab.probe.finished.load(Ordering::SeqCst), 1);
    assert_eq!(lab.probe.stopped.load(Ordering::SeqCst), 0);
    let s = lab.limiter.snapshot();
    assert_eq!((s.active, s.admitted, s.completed), (0, 1, 1), "{s:?}");
}

/// What rmcp does behind a plain transport (its own `ServiceExt::serve`): the
/// queued calls stay queued through its 5 s drain, and the first of them is
/// admitted and started as soon as the running call ends; the drain's end
/// cancels everything left. If this test fails, rmcp changed its shutdown and
/// the README's "Cancellation in rmcp" paragraph needs another look.
#[tokio::test(start_paused = true)]
async fn rmcps_own_serve_keeps_queued_calls_until_its_drain_ends() {
    let mut lab = lab(5);
    let (mut client, running) = busy_stdio_like_session(&mut lab, Serve::Rmcp).await;

    let closed_at = Instant::now();
    client.close_input().await;
    // When call 1 ends, after the input did, the first queued call is
    // admitted and starts.
    let first = tokio::time::timeout(PATIENCE, lab.started.recv()).await;
    assert!(
        matches!(first, Ok(Some(2..=6))),
        "a queued call starts: {first:?}"
    );
    lab.until("the queue is empty", |s| s.queued == 0).await;
    assert!(
        closed_at.elapsed() >= RMCP_DRAIN,
        "the queue emptied {:?} after the input ended",
        closed_at.elapsed()
    );
    let reason = tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(reason, QuitReason::Closed), "{reason:?}");
    let s = lab
        .until("the started call is stopped", |s| s.active == 0)
        .await;
    assert_eq!((s.admitted, s.cancelled_in_queue), (2, 4), "{s:?}");
    assert_eq!(lab.probe.stopped.load(Ordering::SeqCst), 1);
}

// === Over Streamable HTTP, on 127.0.0.1 ===

/// A session manager whose sessions' transports are [`DisconnectAware`]:
/// everything else is `M`'s.
struct DisconnectAwareSessions<M>(M);

impl<M: SessionManager> SessionManager for DisconnectAwareSessions<M> {
    type Error = M::Error;
    type Transport = DisconnectAware<M::Transport>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.0.create_session().await?;
        Ok((id, DisconnectAware::new(transport)))
    }

    fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<ServerJsonRpcMessage, Self::Error>> + Send {
        self.0.initialize_session(id, message)
    }

    fn has_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        self.0.has_session(id)
    }

    fn close_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.0.close_session(id)
    }

    #[allow(refining_impl_trait)] // a boxed stream: `Stream` cannot be named here
    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<EventStream, Self::Error> {
        Ok(Box::pin(self.0.create_stream(id, message).await?))
    }

    fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.0.accept_message(id, message)
    }

    #[allow(refining_impl_trait)] // a boxed stream: `Stream` cannot be named here
    async fn create_standalone_stream(&self, id: &SessionId) -> Result<EventStream, Self::Error> {
        Ok(Box::pin(self.0.create_standalone_stream(id).await?))
    }

    #[allow(refining_impl_trait)] // a boxed stream: `Stream` cannot be named here
    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<EventStream, Self::Error> {
        Ok(Box::pin(self.0.resume(id, last_event_id).await?))
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(match self.0.restore_session(id).await? {
            RestoreOutcome::Restored(transport) => {
                RestoreOutcome::Restored(DisconnectAware::new(transport))
            }
            RestoreOutcome::AlreadyPresent => RestoreOutcome::AlreadyPresent,
            _ => RestoreOutcome::NotSupported,
        })
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.0.event_store()
    }
}

/// Serves the lab's guarded probe as Streamable HTTP at `/mcp` on 127.0.0.1,
/// one `Backpressure` clone per session (or per stateless request).
async fn serve_http<M: SessionManager>(
    lab: &Lab,
    sessions: M,
    config: StreamableHttpServerConfig,
) -> (SocketAddr, CancellationToken) {
    let shutdown = CancellationToken::new();
    let server = lab.server();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(sessions),
        config.with_cancellation_token(shutdown.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    (addr, shutdown)
}

/// One HTTP/1.1 request on its own connection; dropping it closes the
/// connection.
struct Exchange {
    stream: TcpStream,
    received: Vec<u8>,
}

async fn http(
    addr: SocketAddr,
    method: &str,
    session: Option<&str>,
    body: Option<&Value>,
) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut head = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         MCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(id) = session {
        head.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    Exchange {
        stream,
        received: Vec::new(),
    }
}

impl Exchange {
    /// Reads until what was received contains `needle`; returns all of it.
    async fn read_until(&mut self, needle: &str) -> String {
        let read = async {
            loop {
                let text = String::from_utf8_lossy(&self.received).into_owned();
                if text.contains(needle) {
                    return text;
                }
                let mut buf = [0u8; 4096];
                let n = self.stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the connection closed before `{needle}`: {text}");
                self.received.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in time"))
    }

    /// The response's status code and the value of header `name`.
    async fn head(&mut self, name: &str) -> (u16, Option<String>) {
        let text = self.read_until("\r\n\r\n").await;
        let head = &text[..text.find("\r\n\r\n").unwrap()];
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let value = lines.find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        });
        (status.parse().unwrap(), value)
    }
}

/// Opens a stateful session (initialize, then notifications/initialized);
/// returns its id.
async fn open_session(addr: SocketAddr) -> String {
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}});
    let mut init = http(addr, "POST", None, Some(&initialize)).await;
    let (status, session) = init.head("mcp-session-id").await;
    assert_eq!(status, 200);
    init.read_until("\"result\"").await;
    let session = session.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _) = http(addr, "POST", Some(&session), Some(&initialized))
        .await
        .head("")
        .await;
    assert_eq!(status, 202);
    session
}

/// Stateless (no session, no event store): rmcp cancels a request whose
/// response its client drops, so a queued call leaves the queue at once —
/// and a running one is stopped.
async fn stateless_dropped_response(json_response: bool) {
    let mut lab = lab(1);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(json_response);
    let (addr, _shutdown) = serve_http(&lab, LocalSessionManager::default(), config).await;
    let running = http(addr, "POST", None, Some(&hold(1, None))).await;
    lab.started(1).await;
    let queued = http(addr, "POST", None, Some(&hold(2, None))).await;
    lab.until("call 2 is queued", |s| s.queued == 1).await;

    drop(queued);
    let s = lab.until("call 2 left the queue", |s| s.queued == 0).await;
    assert_eq!(
        (s.active, s.admitted, s.cancelled_in_queue),
        (1, 1, 1),
        "{s:?}"
    );

    drop(running);
    lab.until("call 1 is stopped", |s| s.active == 0).await;
    assert_eq!(lab.probe.stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stateless_a_dropped_sse_response_frees_the_queue_place() {
    stateless_dropped_response(false).await;
}

#[tokio::test]
async fn stateless_a_dropped_json_response_frees_the_queue_place() {
    stateless_dropped_response(true).await;
}

/// Stateful: dropping a call's response stream does not cancel the call (the
/// Streamable HTTP specification says a disconnection is not a cancellation;
/// the client may resume the stream). The call keeps its queue place and
/// runs when a slot frees.
#[tokio::test]
async fn stateful_a_dropped_response_stream_keeps_the_queue_place() {
    let mut lab = lab(1);
    let config = StreamableHttpServerConfig::default();
    let (addr, _shutdown) = serve_http(&lab, LocalSessionManager::default(), config).await;
    let session = open_session(addr).await;
    let _running = http(addr, "POST", Some(&session), Some(&hold(1, None))).await;
    lab.started(1).await;
    let mut queued = http(addr, "POST", Some(&session), Some(&hold(2, None))).await;
    lab.until("call 2 is queued", |s| s.queued == 1).await;
    assert_eq!(queued.head("").await.0, 200, "its response stream is open");

    drop(queued);
    // Nothing is expected to happen, so there is nothing to wait for: give
    // the server time enough to notice the closed connection (it takes
    // microseconds), then check that the call is still queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = lab.limiter.snapshot();
    assert_eq!((s.queued, s.cancelled_in_queue), (1, 0), "{s:?}");

    lab.probe.gate.add_permits(1); // call 1 ends
    lab.started(2).await;
    let s = lab.limiter.snapshot();
    assert_eq!((s.admitted, s.cancelled_in_queue), (2, 0), "{s:?}");
    lab.probe.gate.add_permits(1);
    lab.until("call 2 ends", |s| s.completed == 2).await;
}

/// Stateful, a plain `LocalSessionManager`: DELETE ends the session's input
/// and rmcp drains for 5 s before cancelling, so a queued call keeps its place
/// for those 5 s (and would be admitted if a slot freed meanwhile).
#[tokio::test]
async fn stateful_delete_frees_the_queue_place_only_when_rmcps_drain_ends() {
    let mut lab = lab(1);
    let config = StreamableHttpServerConfig::default();
    let (addr, _shutdown) = serve_http(&lab, LocalSessionManager::default(), config).await;
    let session = open_session(addr).await;
    let _running = http(addr, "POST", Some(&session), Some(&hold(1, None))).await;
    lab.started(1).await;
    let _queued = http(addr, "POST", Some(&session), Some(&hold(2, None))).await;
    lab.until("call 2 is queued", |s| s.queued == 1).await;

    let deleted_at = Instant::now();
    let (status, _) = http(addr, "DELETE", Some(&session), None)
        .await
        .head("")
        .await;
    assert_eq!(status, 202);
    let s = lab.until("call 2 left the queue", |s| s.queued == 0).await;
    let took = deleted_at.elapsed();
    assert!(
        took >= RMCP_DRAIN - Duration::from_millis(100),
        "the queue place was freed {took:?} after DELETE"
    );
    assert_eq!((s.admitted, s.cancelled_in_queue), (1, 1), "{s:?}");
    lab.until("call 1 is stopped", |s| s.active == 0).await;
    assert_eq!(lab.probe.stopped.load(Ordering::SeqCst), 1);
}

/// Stateful, sessions whose transports are `DisconnectAware`: DELETE frees the
/// queue place at once. The running call is stopped when rmcp's drain ends —
/// here at once too: the queued call's refusal cannot be written to the
/// deleted session, and rmcp gives up its drain at the first failed write.
#[tokio::test]
async fn stateful_delete_frees_the_queue_place_at_once_with_disconnect_aware_sessions() {
    let mut lab = lab(1);
    let config = StreamableHttpServerConfig::default();
    let sessions = DisconnectAwareSessions(LocalSessionManager::default());
    let (addr, _shutdown) = serve_http(&lab, sessions, config).await;
    let session = open_session(addr).await;
    let _running = http(addr, "POST", Some(&session), Some(&hold(1, None))).await;
    lab.started(1).await;
    let _queued = http(addr, "POST", Some(&session), Some(&hold(2, None))).await;
    lab.until("call 2 is queued", |s| s.queued == 1).await;

    let deleted_at = Instant::now();
    let (status, _) = http(addr, "DELETE", Some(&session), None)
        .await
        .head("")
        .await;
    assert_eq!(status, 202);
    let s = lab.until("call 2 left the queue", |s| s.queued == 0).await;
    let took = deleted_at.elapsed();
    assert!(
        took < RMCP_DRAIN - Duration::from_secs(1),
        "the queue place was freed {took:?} after DELETE: not before rmcp's drain ended"
    );
    assert_eq!((s.admitted, s.cancelled_in_queue), (1, 1), "{s:?}");
    let s = lab.until("call 1 is stopped", |s| s.active == 0).await;
    assert!(
        deleted_at.elapsed() < RMCP_DRAIN,
        "{:?}",
        deleted_at.elapsed()
    );
    assert_eq!((s.admitted, s.completed), (1, 1), "{s:?}");
    assert_eq!(lab.probe.stopped.load(Ordering::SeqCst), 1);
}
