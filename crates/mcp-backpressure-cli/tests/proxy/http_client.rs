//! A raw Streamable HTTP client for the tests: plain POSTs, the session header,
//! responses read as JSON or as a stream of SSE events.

use std::collections::VecDeque;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::support::PATIENCE;

/// The protocol version the tests speak.
pub const VERSION: &str = "2025-11-25";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One MCP session over Streamable HTTP.
pub struct HttpSession {
    pub client: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
}

impl HttpSession {
    /// Initializes a session at `url`.
    pub async fn initialize(url: &str) -> Self {
        let mut session = Self {
            client: client(),
            url: url.to_owned(),
            session: None,
        };
        let mut response = session
            .send(
                json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": VERSION, "capabilities": {},
                "clientInfo": {"name": "proxy-test", "version": "0"}}}),
            )
            .await;
        assert!(
            response.status.is_success(),
            "initialize: {}",
            response.status
        );
        session.session = response.header("mcp-session-id");
        let result = response.message_with_id(&json!("init")).await;
        assert!(result.get("result").is_some(), "{result}");
        let ack = session
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ack.status, reqwest::StatusCode::ACCEPTED);
        session
    }

    pub fn post(&self, message: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(&self.url)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", VERSION)
            .body(serde_json::to_vec(message).unwrap());
        if let Some(id) = &self.session {
            request = request.header("mcp-session-id", id);
        }
        request
    }

    /// POSTs `message`; returns the response, its body still streaming.
    pub async fn send(&self, message: Value) -> Events {
        let response = tokio::time::timeout(PATIENCE, self.post(&message).send())
            .await
            .expect("response headers in time")
            .expect("POST");
        Events::new(response)
    }

    /// Calls `tool`; the progress token is the id.
    pub async fn call(&self, id: u64, tool: &str, arguments: Value) -> Events {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": id}}}))
            .await
    }

    pub async fn cancel(&self, id: u64) {
        let response = self
            .send(
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "test"}}),
            )
            .await;
        assert_eq!(response.status, reqwest::StatusCode::ACCEPTED);
    }
}

/// A response: a JSON body, or a stream of SSE events.
pub struct Events {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    response: Option<reqwest::Response>,
    sse: bool,
    buffer: Vec<u8>,
    ready: VecDeque<Value>,
}

impl Events {
    pub fn new(response: reqwest::Response) -> Self {
        let sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            response: Some(response),
            sse,
            buffer: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// The next JSON-RPC message, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(PATIENCE, self.next_inner())
            .await
            .expect("a message or the end of the response in time")
    }

    async fn next_inner(&mut self) -> Option<Value> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some(message);
            }
            let response = self.response.as_mut()?;
            match response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => {
                    self.response = None;
                    if !self.sse && !self.buffer.is_empty() {
                        let body = std::mem::take(&mut self.buffer);
                        return Some(serde_json::from_slice(&body).expect("a JSON body"));
                    }
                    return None;
                }
            }
            if self.sse {
                self.parse_events();
            }
        }
    }

    fn parse_events(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer).replace("\r\n", "\n");
        let mut consumed = 0;
        while let Some(end) = text[consumed..].find("\n\n") {
            let event = &text[consumed..consumed + end];
            consumed += end + 2;
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if let Ok(message) = serde_json::from_str(&data.join("\n")) {
                self.ready.push_back(message);
            }
        }
        self.buffer = text.as_bytes()[consumed..].to_vec();
    }

    /// The message with `id`, skipping others (progress, logs).
    pub async fn message_with_id(&mut self, id: &Value) -> Value {
        while let Some(message) = self.next().await {
            if message.get("id") == Some(id) && message.get("method").is_none() {
                return message;
            }
        }
        panic!("the response ended without a message with id {id}");
    }

    /// Waits for the progress notification announcing that call `id` started.
    pub async fn started(&mut self, id: u64) {
        while let Some(message) = self.next().await {
            if message["method"] == "notifications/progress"
                && message["params"]["progressToken"] == id
            {
                return;
            }
        }
        panic!("the response ended before call {id} started");
    }
}
