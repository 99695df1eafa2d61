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
use mcp_backpressure::{Outcome, Overload};
use reqwest::Url;

use super::target::{self, SESSION, Target};
use super::watch::{Ending, Watch};
use crate::proxy::body::{self, BodyError};
use crate::proxy::budget::Budget;
use crate::proxy::error::{self, ProxyError};
use crate::proxy::gate::Gate;
use crate::proxy::inflight::{Admission, Scope};
use crate::proxy::listener::idle::Upload;
use crate::proxy::refusal::{Asked, Refusal};
use crate::proxy::router::{Caller, FromClient, Router, Watched};
use crate::proxy::tasks::{Due, OWN_POLL_TIMEOUT, Origin, TaskScope};
use crate::proxy::wire::mcp_headers::{self, Routing};
use crate::proxy::wire::message::{Kind, Malformed, RequestId, Shape};
use crate::proxy::wire::sse::{SseData, SseParser};

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
    // The connection's handle (absent only if served outside the listener).
    let upload = parts.extensions.get::<Upload>();
    let read = body::read_body(body, settings.body_limits(), &proxy.bodies, upload).await;
    let (bytes, _lease) = match read {
        Ok(read) => read,
        Err(BodyError::TooLarge { max }) => {
            tracing::warn!(max, "message from the client too large; refused");
            let error = ProxyError::TooLarge { len: None, max };
            return proxy.error_response(&error, &[None], false);
        }
        Err(error @ BodyError::Evicted { .. }) => {
            tracing::info!(
                "request body stalled at the connection cap; evicted with 503, nothing forwarded"
            );
            return error_status(&error);
        }
        Err(error @ BodyError::BudgetSpent { .. }) => {
            tracing::warn!(%error, "the request body budget is spent; refused with 503");
            return error_status(&error);
        }
        Err(error) => {
            tracing::debug!(%error, "the client's request body was not read");
            return error_status(&error);
        }
    };
    let client_key = &settings.client_key;
    if let Some(name) = repeated_header(&parts.headers, client_key.header()) {
        let why = format!("the {name} header is given more than once");
        // Answered under the request's id as written, when the body is one.
        let id = match crate::proxy::wire::message::parse(
            &bytes,
            crate::proxy::wire::message::From::Client,
        ) {
            Ok(parsed) => match parsed.kinds {
                Shape::One(Kind::Request { id, .. }) => Some(id),
                _ => None,
            },
            Err(_) => None,
        };
        let error = match &id {
            Some(id) => Malformed::Request {
                id: id.clone(),
                why,
            },
            None => Malformed::Invalid(why),
        };
        return proxy.error_response(&ProxyError::Malformed(error), &[id], false);
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
    // A POST to the MCP endpoint carries a message: one with nothing in it
    // (no body, white space, a byte order mark) is refused here, as any other
    // unreadable body, rather than passed for the upstream to refuse in its
    // own words.
    if parts.method == Method::POST && target.mcp && is_blank_body(&bytes) {
        let error = ProxyError::Malformed(Malformed::NotJson("the request body is empty".into()));
        return proxy.error_response(&error, &[None], false);
    }
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
            // Its tasks' holds stay: a task may outlive its session. The
            // proxy's own polls, in the deleted session, end them when the
            // upstream says it no longer knows the session (404), or they
            // end as any hold does.
            tracing::debug!(requests = ended.len(), "session deleted");
        }
        return response;
    }
    let client = client_key.of(&parts.headers);
    let caller = Caller {
        client: client.as_deref(),
        identity: identity(client.as_deref(), &parts.headers),
        origin: Some(Arc::new(Origin {
            url: target.url.clone(),
            headers: origin_headers(&parts.headers, client_key.header()),
        })),
    };
    match proxy.router.client_from(&scope, &caller, &bytes, |shape| {
        header_mismatch(&parts.headers, shape)
    }) {
        FromClient::Forward { bytes, requests } => {
            proxy
                .forward(&parts, &target, Bytes::from(bytes), scope, requests)
                .await
        }
        FromClient::Admit {
            bytes,
            queued,
            asked,
        } => {
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
                    let version = parts
                        .headers
                        .get("mcp-protocol-version")
                        .and_then(|v| v.to_str().ok());
                    let asked = asked.with_protocol_header(version);
                    proxy.refusal_response(&overload, &key.id, asked)
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

/// Who a caller without a session is, for the scope of its tasks: its
/// client key, else its `Authorization` header (`None`: nobody in
/// particular).
fn identity(client: Option<&str>, headers: &HeaderMap) -> Option<Arc<str>> {
    if let Some(client) = client {
        return Some(format!("key:{client}").into());
    }
    let auth = headers.get(header::AUTHORIZATION)?;
    let auth = String::from_utf8_lossy(auth.as_bytes());
    Some(format!("auth:{auth}").into())
}

/// The headers the proxy's own task polls carry again: what routes the
/// request to the caller's session and authorises it as the caller.
fn origin_headers(headers: &HeaderMap, client_key: Option<&str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    let names = [
        header::AUTHORIZATION.as_str(),
        header::COOKIE.as_str(),
        header::HOST.as_str(),
        SESSION,
        "mcp-protocol-version",
    ];
    for name in names.into_iter().chain(client_key) {
        if let Some(value) = headers.get(name)
            && let Ok(name) = axum::http::HeaderName::try_from(name)
        {
            out.insert(name, value.clone());
        }
    }
    out
}

/// A body with no message in it: empty, white space, or a byte order mark
/// and white space.
fn is_blank_body(bytes: &[u8]) -> bool {
    let bytes = bytes
        .strip_prefix(crate::proxy::wire::message::BOM)
        .unwrap_or(bytes);
    bytes.iter().all(u8::is_ascii_whitespace)
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
            .strip_prefix(crate::proxy::wire::message::BOM)
            .unwrap_or(bytes)
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

/// MCP 2026-07-28 carries the method (and tool name, resource or task) in
/// `Mcp-Method` / `Mcp-Name` headers that must match the body; a server may
/// route on either, so the proxy refuses a request where they differ (the
/// rules: [`mcp_headers`]). Checked against the router's one parse of the
/// body.
fn header_mismatch(headers: &HeaderMap, shape: &Shape) -> Option<String> {
    let routing = match shape {
        Shape::One(Kind::Request {
            method,
            name,
            params,
            ..
        }) => Routing {
            method,
            name: name.as_deref(),
            uri: params.uri.as_deref(),
            task_id: params.task_id.as_deref(),
        },
        Shape::One(Kind::Notification { method, .. }) => Routing {
            method,
            ..Routing::default()
        },
        // A response or a batch names no method: any routing header is
        // a mismatch.
        _ => Routing::default(),
    };
    mcp_headers::mismatch(headers, &routing)
}

/// The headers of a message the proxy sends the upstream itself (a
/// cancellation, a task poll): JSON in, JSON or SSE out, and its method.
fn own_message_headers(headers: &mut HeaderMap, method: &'static str) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert("mcp-method", HeaderValue::from_static(method));
}

/// An `Mcp-Name` value: the task id itself when it is plain printable
/// ASCII, else the base64 sentinel `=?base64?…?=`.
fn mcp_name(value: &str) -> Option<HeaderValue> {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(mcp_headers::SENTINEL_PREFIX)
        && value.trim() == value
    {
        return HeaderValue::from_str(value).ok();
    }
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    HeaderValue::from_str(&format!(
        "{}{encoded}{}",
        mcp_headers::SENTINEL_PREFIX,
        mcp_headers::SENTINEL_SUFFIX
    ))
    .ok()
}

fn error_status(error: &BodyError) -> Response {
    let status = match error {
        BodyError::TimedOut { .. } | BodyError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::BudgetSpent { retry_after } | BodyError::Evicted { retry_after } => {
            let seconds = mcp_backpressure::overload_status::retry_after_seconds(*retry_after);
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, seconds.to_string())],
                format!("{error}\n"),
            )
                .into_response();
            if matches!(error, BodyError::Evicted { .. }) {
                // The rest of its body is not read: the connection closes.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, format!("{error}\n")).into_response()
}

fn json_response(status: StatusCode, message: &(impl serde::Serialize + ?Sized)) -> Response {
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

    /// The answer to a refused guarded request, in the dialect in force: a
    /// JSON-RPC error or tool result, with 200 or (`http_overload_status`)
    /// 429/503 and `Retry-After`.
    fn refusal_response(&self, overload: &Overload, id: &RequestId, asked: Asked) -> Response {
        let gate = self.router.gate();
        let dialect = gate.dialect.get();
        let refusal = Refusal::render(overload, id, asked, dialect, gate.settings.error_code);
        let (status, retry_after) = refusal.http_status(dialect.http_status);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut response = json_response(status, &refusal.response);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
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
        own_message_headers(&mut headers, crate::proxy::wire::message::CANCELLED);
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

    /// Asks the upstream about a task nobody asked about for its poll
    /// interval, with the creating call's headers; the answer is routed (and
    /// swallowed) like any other, on a task of its own. Given up after
    /// [`OWN_POLL_TIMEOUT`].
    pub fn own_poll(self: &Arc<Self>, due: &Due) {
        let Some(origin) = due.follow.origin.clone() else {
            return;
        };
        let scope = match target::session(&origin.headers) {
            Some(session) => Scope::Session(Arc::from(session)),
            None => Scope::Exchange(self.exchanges.fetch_add(1, Ordering::Relaxed)),
        };
        let Some((key, ticket, body)) = self.router.own_poll(&scope, due) else {
            return;
        };
        tracing::debug!(task = %due.task_id, "nobody asked about the task for its poll interval; asking");
        let mut headers = origin.headers.clone();
        own_message_headers(&mut headers, "tasks/get");
        if let Some(name) = mcp_name(&due.task_id) {
            headers.insert("mcp-name", name);
        }
        let request = self
            .client
            .post(origin.url.clone())
            .headers(headers)
            .body(body);
        let proxy = self.clone();
        let max = self.settings().max_message_bytes;
        tokio::spawn(async move {
            let read = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let sse = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("event-stream"));
                // At most one message's worth is held.
                let mut response = response;
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > max {
                        break;
                    }
                }
                reqwest::Result::Ok((status, sse, bytes))
            };
            match tokio::time::timeout(OWN_POLL_TIMEOUT, read).await {
                // The session is gone (Streamable HTTP answers 404 to a
                // request of a session it no longer knows): so are its tasks.
                Ok(Ok((404, _, _))) if matches!(scope, Scope::Session(_)) => {
                    if let Scope::Session(session) = &scope {
                        tracing::debug!(
                            "the upstream no longer knows the session; its tasks' slots are free"
                        );
                        proxy
                            .router
                            .tasks()
                            .close(&TaskScope::Session(session.clone()));
                    }
                }
                Ok(Ok((status, true, bytes))) if bytes.len() <= max => {
                    let mut events = Vec::new();
                    let mut parser = SseParser::new(max);
                    parser.push(&bytes, &mut |event| events.push(event));
                    parser.finish();
                    for event in events.iter().filter(|e| e.is_message()) {
                        if let SseData::Held(data) = &event.data {
                            proxy.router.upstream(&scope, data, Some(status));
                        }
                    }
                }
                Ok(Ok((status, false, bytes))) if bytes.len() <= max => {
                    proxy.router.upstream(&scope, &bytes, Some(status));
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::debug!(%error, "the proxy's own task poll failed"),
                Err(_) => tracing::debug!("the proxy's own task poll timed out"),
            }
            proxy
                .router
                .inflight()
                .finish(&key, ticket, Outcome::Ignore);
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
    use crate::proxy::wire::message::{From, Shape, parse};

    const CALL: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;

    fn shape(bytes: &[u8]) -> Shape {
        parse(bytes, From::Client).unwrap().kinds
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn each_routing_header_is_checked_on_its_own() {
        let call = shape(CALL);
        assert_eq!(header_mismatch(&headers(&[]), &call), None);
        assert_eq!(
            header_mismatch(
                &headers(&[("mcp-method", "tools/call"), ("mcp-name", "search")]),
                &call
            ),
            None
        );
        // An `Mcp-Name` without `Mcp-Method` naming another tool than the body.
        assert!(header_mismatch(&headers(&[("mcp-name", "report")]), &call).is_some());
        assert!(header_mismatch(&headers(&[("mcp-method", "tools/list")]), &call).is_some());
    }
}
