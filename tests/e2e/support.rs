use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Forwards the server's start announcements to the test.
pub struct StartWatcher(pub mpsc::UnboundedSender<ProgressToken>);

impl ClientHandler for StartWatcher {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.progress_token);
    }
}

/// Every wait in these tests is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub use crate::built_examples::example;

/// Starts `simple_server` with `args`; stdin/stdout piped, killed on drop.
pub fn spawn_server(args: &[&str]) -> Child {
    Command::new(example("simple_server"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start simple_server")
}

/// Waits for the HTTP server's "listening on" line; returns the URL. Keeps
/// draining stderr afterwards so the child never blocks on a full pipe.
pub async fn http_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Some(at) = line.find("listening on ") {
                return line[at + "listening on ".len()..].trim().to_string();
            }
        }
        panic!("simple_server exited before listening");
    })
    .await
    .expect("simple_server did not start listening in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    url
}

/// A raw JSON-RPC session over a child's stdio.
pub struct RawSession {
    pub child: Child,
    stdin: ChildStdin,
    incoming: mpsc::UnboundedReceiver<Value>,
    early: HashMap<String, Value>,
    started: Vec<Value>,
}

impl RawSession {
    /// Starts the server over stdio and completes the initialize handshake.
    pub async fn start(args: &[&str]) -> Self {
        let mut child = spawn_server(args);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("server wrote a line that is not JSON ({e}): {line}")
                });
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut session = Self {
            child,
            stdin,
            incoming,
            early: HashMap::new(),
            started: Vec::new(),
        };
        session
            .send(
                json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "e2e-raw", "version": "0"}}}),
            )
            .await;
        session.response("init").await;
        session
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        session
    }

    pub async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.expect("write to server");
        self.stdin.flush().await.expect("flush to server");
    }

    /// Calls `sleep`; the server announces the start with a progress
    /// notification whose token is the request id (see [`Self::started`]).
    pub async fn call_sleep(&mut self, id: u64, ms: u64) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": ms}, "_meta": {"progressToken": id}}}))
            .await;
    }

    /// Waits until the `sleep` call `id` was admitted and started.
    pub async fn started(&mut self, id: u64) {
        let token = Value::from(id);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.started.contains(&token) {
            let message = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("call {id} did not start in {PATIENCE:?}"))
                .expect("server closed stdout");
            self.file(message);
        }
    }

    /// Sorts an incoming message: a start announcement or a response.
    fn file(&mut self, message: Value) {
        if message["method"] == "notifications/progress" {
            self.started
                .push(message["params"]["progressToken"].clone());
        } else if let Some(id) = message.get("id") {
            self.early.insert(id.to_string(), message);
        }
    }

    pub async fn cancel(&mut self, id: u64) {
        self.send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "test"}}),
        )
        .await;
    }

    /// The response with `id`, waiting at most [`PATIENCE`].
    pub async fn response(&mut self, id: impl Into<Value>) -> Value {
        let key = id.into().to_string();
        if let Some(found) = self.early.remove(&key) {
            return found;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let message = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("no response to {key} in {PATIENCE:?}"))
                .expect("server closed stdout");
            if message.get("id").map(Value::to_string) == Some(key.clone()) {
                return message;
            }
            self.file(message);
        }
    }

    /// The first response to arrive among `ids`, with its id.
    pub async fn first_response(&mut self, ids: &[u64]) -> (u64, Value) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            for &id in ids {
                if let Some(found) = self.early.remove(&Value::from(id).to_string()) {
                    return (id, found);
                }
            }
            let message = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("no response to any of {ids:?} in {PATIENCE:?}"))
                .expect("server closed stdout");
            self.file(message);
        }
    }

    /// Whether a response with `id` has arrived (after a `ping` round trip,
    /// so that anything sent before it has been processed).
    pub async fn has_response(&mut self, id: impl Into<Value>) -> bool {
        self.send(json!({"jsonrpc": "2.0", "id": "barrier", "method": "ping"}))
            .await;
        self.response("barrier").await;
        self.early.contains_key(&id.into().to_string())
    }
}
