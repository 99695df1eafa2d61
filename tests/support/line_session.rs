//! A raw JSON-RPC session over a child process's stdio (newline-delimited
//! JSON), for tests that check exact bytes. Shared by the workspace's test
//! crates (`#[path]`-included); each adds its own constructors.
#![allow(dead_code)] // Each includer uses part of it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// Every wait of a session is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One client's session with a child speaking MCP over its stdin and stdout.
pub struct LineSession {
    pub child: Child,
    peer: &'static str,
    stdin: Option<ChildStdin>,
    incoming: mpsc::UnboundedReceiver<Value>,
    early: HashMap<String, Value>,
    started: Vec<Value>,
}

impl LineSession {
    /// Takes over `child`'s piped stdin and stdout; `peer` names it in
    /// failure messages. Every line it writes must be JSON.
    pub fn attach(mut child: Child, peer: &'static str) -> Self {
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("{peer} wrote a line that is not JSON ({e}): {line}")
                });
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            peer,
            stdin: Some(stdin),
            incoming,
            early: HashMap::new(),
            started: Vec::new(),
        }
    }

    /// The initialize handshake (protocol 2025-06-18).
    pub async fn initialize(&mut self) {
        self.send(
            json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test-client", "version": "0"}}}),
        )
        .await;
        let response = self.response("init").await;
        assert!(response.get("result").is_some(), "{response}");
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let peer = self.peer;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("write to {peer}: {e}"));
        stdin
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush to {peer}: {e}"));
    }

    pub async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// Closes the child's stdin: the client disconnects.
    pub fn close(&mut self) {
        self.stdin = None;
    }

    /// Calls `tool` with `arguments`; the progress token is the id, so the
    /// demo servers announce the start (see [`Self::started`]).
    pub async fn call(&mut self, id: u64, tool: &str, arguments: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": id}}}))
            .await;
    }

    pub async fn call_sleep(&mut self, id: u64, ms: u64) {
        self.call(id, "sleep", json!({"ms": ms})).await;
    }

    pub async fn cancel(&mut self, id: u64) {
        self.send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "test"}}),
        )
        .await;
    }

    /// The next message, waiting at most until `deadline`.
    async fn next(&mut self, deadline: tokio::time::Instant, waiting_for: &str) -> Value {
        let peer = self.peer;
        tokio::time::timeout_at(deadline, self.incoming.recv())
            .await
            .unwrap_or_else(|_| panic!("{waiting_for}: nothing from {peer} in {PATIENCE:?}"))
            .unwrap_or_else(|| panic!("{waiting_for}: {peer} closed its stdout"))
    }

    /// Waits until the `sleep` call `id` was admitted and started (its
    /// progress notification arrived).
    pub async fn started(&mut self, id: u64) {
        let token = Value::from(id);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.started.contains(&token) {
            let message = self.next(deadline, &format!("call {id} to start")).await;
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

    /// The next request from the server (a message with a `method` and an `id`).
    pub async fn request_from_server(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let message = self.next(deadline, "a request from the server").await;
            if message.get("method").is_some() && message.get("id").is_some() {
                return message;
            }
            self.file(message);
        }
    }

    /// The response with `id`, waiting at most [`PATIENCE`].
    pub async fn response(&mut self, id: impl Into<Value>) -> Value {
        let key = id.into().to_string();
        if let Some(found) = self.early.remove(&key) {
            return found;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let message = self.next(deadline, &format!("the response to {key}")).await;
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
            let message = self.next(deadline, &format!("a response to {ids:?}")).await;
            self.file(message);
        }
    }

    /// Whether a response with `id` has arrived, after a `ping` round trip
    /// (so that anything answered before it has arrived).
    pub async fn has_response(&mut self, id: impl Into<Value>) -> bool {
        self.send(json!({"jsonrpc": "2.0", "id": "barrier", "method": "ping"}))
            .await;
        self.response("barrier").await;
        self.early.contains_key(&id.into().to_string())
    }

    /// Waits for the child to exit; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit in {PATIENCE:?}", self.peer))
            .expect("wait for the child");
        status.code()
    }
}
