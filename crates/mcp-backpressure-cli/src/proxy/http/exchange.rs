//! One HTTP exchange: the body read (bounded in size, time and the shared
//! byte budget), the router's decision, the request sent upstream, and the
//! proxy's own answers — the only place where a [`ProxyError`] becomes an
//! HTTP response.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mcp_backpressure::Outcome;
use reqwest::Url;
use serde_json::Value;

use super::target::{self, SESSION, Target};
use super::watch::{Ending, Watch};
use crate::proxy::body::{self, BodyError};
use crate::proxy::budget::Budget;
use crate::proxy::error::{self, ProxyError};
use crate::proxy::gate::Gate;
use crate::proxy::inflight::{Admission, Scope};
use crate::proxy::router::{FromClient, Router, Watched};
use crate::proxy::wire::message::{Malformed, RequestId};

/// The HTTP proxy's shared state.
#[derive(Debug)]
pub struct Proxy {
    /// The router.
    pub router: Router,
    client: reqwest::Client,
    upstream: Url,
    /// Numbers the exchanges that have no session.
    exchanges: AtomicU64,
    /// Request bodies being read, in bytes.
    bodies: Budget,
}

impl Proxy {
    /// The proxy in front of `upstream`.
    pub fn new(gate: Arc<Gate>, client: reqwest::Client, upstream: Url) -> Self {
        let bodies = Budget::new(gate.settings.buffer_bytes);
        Self {
            router: Router::new(gate),
            client,
            upstream,
            exchanges: AtomicU64::new(0),
            bodies,
        }
    }

    /// The upstream URL.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    fn settings(&self) -> &crate::proxy::limits::Settings {
        &self.router.gate().settings
    }
}

/// One request's way through the proxy.
///
/// # Cancel safety
///
/// Cancel safe: hyper drops this future when the client disconnects; a
/// queued request then leaves the queue, and a forwarded one is handed to
/// [`Watch`], which keeps its slot until the upstream is done (or the cancel
/// grace passes).
pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = target::resolve(&proxy.upstream, &parts.uri);
    let settings = proxy.settings();
    let read = body::read_body(
        body,
        settings.max_message_bytes,
        settings.body_read_timeout,
        &proxy.bodies,
    )
    .await;
    let (bytes, _lease) = match read {
        Ok(read) => read,
        Err(BodyError::TooLarge { max }) => {
            tracing::warn!(max, "message from the client too large; refused");
            let error = ProxyError::TooLarge { len: None, max };
            return proxy.error_response(&error, &[None], false);
        }
        Err(error) => {
            tracing::debug!(%error, "the client's request body was not read");
            return error_status(&error);
        }
    };
    let client_key = &settings.client_key;
    if let Some(name) = repeated_header(&parts.headers, client_key.header()) {
        let why = format!("the {name} header is given more than once");
        let error = ProxyError::Malformed(Malformed::Invalid(why));
        return proxy.error_response(&error, &[None], false);
    }
    // Only a POST carries a message. A body on GET, HEAD, DELETE or OPTIONS
    // means nothing to an MCP server and is not forwarded (a `tools/call` in
    // a GET would take a slot for a call the upstream never runs); other
    // methods with a message in them are refused.
    let bytes = match parts.method {
        Method::POST => bytes,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS => Bytes::new(),
        _ if !bytes.is_empty() && (target.mcp || looks_like_json(&parts.headers, &bytes)) => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, POST, DELETE")],
                "a message is sent with POST\n",
            )
                .into_response();
        }
        _ => bytes,
    };
    let scope = match target::session(&parts.headers) {
        Some(session) => Scope::Session(Arc::from(session)),
        None => Scope::Exchange(proxy.exchanges.fetch_add(1, Ordering::Relaxed)),
    };
    if bytes.is_empty() || !(target.mcp || looks_like_json(&parts.headers, &bytes)) {
        // No message in it (GET, DELETE, OAuth forms…): passes as it is. A
        // GET's event stream is still routed: responses resumed on it free
        // their slots.
        let delete = target.mcp && parts.method == Method::DELETE;
        let response = proxy
            .forward(&parts, &target, bytes, scope.clone(), Vec::new())
            .await;
        if delete && response.status().is_success() {
            let ended = proxy.router.inflight().drain(Some(&scope)).await;
            tracing::debug!(requests = ended.len(), "session deleted");
        }
        return response;
    }
    if let Some(mismatch) = header_mismatch(&parts.headers, &bytes) {
        return proxy.error_response(
            &ProxyError::Malformed(Malformed::Invalid(mismatch)),
            &[None],
            false,
        );
    }
    let client = client_key.of(&parts.headers);
    match proxy.router.client(&scope, client.as_deref(), &bytes) {
        FromClient::Forward { bytes, requests } => {
            proxy
                .forward(&parts, &target, Bytes::from(bytes), scope, requests)
                .await
        }
        FromClient::Admit { bytes, queued } => {
            let key = queued.key().clone();
            // Dropped if the client disconnects: the request leaves the queue.
            match queued.admit().await {
                Admission::Admitted(ticket) => {
                    let requests = vec![Watched { key, ticket }];
                    proxy
                        .forward(&parts, &target, Bytes::from(bytes), scope, requests)
                        .await
                }
                Admission::Rejected(overload) => {
                    proxy.error_response(&ProxyError::from(overload), &[Some(key.id)], false)
                }
                Admission::Cancelled => StatusCode::ACCEPTED.into_response(),
            }
        }
        FromClient::Drop => StatusCode::ACCEPTED.into_response(),
        FromClient::Swallow(left) => {
            // Answer once it has left the limiter's queue.
            left.wait().await;
            StatusCode::ACCEPTED.into_response()
        }
        FromClient::Answer { error, ids, batch } => {
            tracing::debug!(%error, "answered by the proxy");
            proxy.error_response(&error, &ids, batch)
        }
    }
}

/// A body that a server might read as JSON: a JSON content type, or bytes
/// that start like a JSON object or array.
fn looks_like_json(headers: &HeaderMap, bytes: &[u8]) -> bool {
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    typed
        || bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['))
}

/// A header that decides routing (or names the client), given twice: the
/// proxy would check one value and an upstream might act on the other (or
/// on both, joined).
fn repeated_header<'a>(headers: &HeaderMap, client_key: Option<&'a str>) -> Option<&'a str> {
    [
        "mcp-method",
        "mcp-name",
        SESSION,
        "mcp-protocol-version",
        "content-type",
    ]
    .into_iter()
    .chain(client_key)
    .find(|name| headers.get_all(*name).iter().count() > 1)
}

/// MCP 2026-07-28 carries the method (and tool name) in `Mcp-Method` /
/// `Mcp-Name` headers that must match the body; a server may route on
/// either, so the proxy refuses a request where they differ.
fn header_mismatch(headers: &HeaderMap, bytes: &[u8]) -> Option<String> {
    // Each header present is checked on its own: an upstream that routes on
    // `Mcp-Name` alone must not run another tool than the one admitted.
    if !headers.contains_key("mcp-method") && !headers.contains_key("mcp-name") {
        return None;
    }
    let body: Value = serde_json::from_slice(bytes).ok()?;
    if let Some(method_header) = headers.get("mcp-method") {
        let method = body.get("method").and_then(Value::as_str);
        if method_header.to_str().ok() != method {
            return Some("the Mcp-Method header does not match the body's method".into());
        }
    }
    if let Some(name_header) = headers.get("mcp-name") {
        let params = body.get("params");
        let name = params
            .and_then(|p| p.get("name").or_else(|| p.get("uri")))
            .and_then(Value::as_str);
        if name_header.to_str().ok() != name {
            return Some("the Mcp-Name header does not match the body".into());
        }
    }
    None
}

fn error_status(error: &BodyError) -> Response {
    let status = match error {
        BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, format!("{error}\n")).into_response()
}

fn json_response(status: StatusCode, message: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(message).expect("a JSON value always serializes"),
    )
        .into_response()
}

impl Proxy {
    /// The proxy's own answer, as JSON-RPC in an HTTP response.
    fn error_response(
        &self,
        error: &ProxyError,
        ids: &[Option<RequestId>],
        batch: bool,
    ) -> Response {
        let code = self.settings().error_code;
        let body = error::answer(error, ids, batch, code);
        let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::OK);
        json_response(status, &body)
    }

    /// Sends the request upstream and streams the response back, watching it
    /// for the answers to `requests`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the watch, dropped before the answers passed, hands the
    /// requests to the cancel grace (and cancels them upstream).
    async fn forward(
        self: &Arc<Self>,
        parts: &Parts,
        target: &Target,
        body: Bytes,
        scope: Scope,
        requests: Vec<Watched>,
    ) -> Response {
        let request = self
            .client
            .request(parts.method.clone(), target.url.clone())
            .headers(target::end_to_end(&parts.headers))
            .body(body);
        // If the client disconnects while this waits, the watch lets go.
        let mut watch = Watch::new(self.clone(), scope, requests, parts.headers.clone());
        let upstream = match request.send().await {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::warn!(%error, url = %target.url, "the upstream server is unreachable");
                let ids = watch.end(Ending::Failed);
                return if ids.is_empty() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "the upstream server is unavailable\n",
                    )
                        .into_response()
                } else {
                    let batch = ids.len() > 1;
                    let ids: Vec<_> = ids.into_iter().map(Some).collect();
                    self.error_response(&ProxyError::UpstreamUnavailable, &ids, batch)
                };
            }
        };
        watch.respond(upstream).await
    }

    /// Cancels `id` upstream, in `session`, on a task of its own.
    pub fn cancel_upstream(self: &Arc<Self>, id: &RequestId, client_headers: &HeaderMap) {
        let cancel = error::cancellation(id, "the client disconnected");
        let mut headers = HeaderMap::new();
        for name in [
            header::AUTHORIZATION,
            header::HOST,
            axum::http::HeaderName::from_static(SESSION),
            axum::http::HeaderName::from_static("mcp-protocol-version"),
        ] {
            if let Some(value) = client_headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            "mcp-method",
            HeaderValue::from_static(crate::proxy::wire::message::CANCELLED),
        );
        let request = self
            .client
            .post(self.upstream.clone())
            .headers(headers)
            .body(serde_json::to_vec(&cancel).expect("a JSON value always serializes"));
        let id = id.clone();
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) => {
                    tracing::info!(%id, status = %response.status(), "cancelled upstream");
                }
                Err(error) => tracing::warn!(%id, %error, "could not cancel upstream"),
            }
        });
    }

    /// Finishes `watched` as over (used when a response could not be read).
    pub fn finish(&self, watched: &Watched, outcome: Outcome) -> bool {
        self.router
            .inflight()
            .finish(&watched.key, watched.ticket, outcome)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::header_mismatch;

    const CALL: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn each_routing_header_is_checked_on_its_own() {
        assert_eq!(header_mismatch(&headers(&[]), CALL), None);
        assert_eq!(
            header_mismatch(
                &headers(&[("mcp-method", "tools/call"), ("mcp-name", "search")]),
                CALL
            ),
            None
        );
        // An `Mcp-Name` without `Mcp-Method` naming another tool than the body.
        assert!(header_mismatch(&headers(&[("mcp-name", "report")]), CALL).is_some());
        assert!(header_mismatch(&headers(&[("mcp-method", "tools/list")]), CALL).is_some());
    }
}
