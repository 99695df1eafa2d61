//! `mcp-backpressure proxy [LIMITS] --listen ADDR --upstream URL`: a Streamable
//! HTTP reverse proxy.
//!
//! Every request to the proxy goes to the same path on the upstream's origin,
//! with its headers (`Mcp-Session-Id`, `MCP-Protocol-Version`, `Last-Event-ID`,
//! `Authorization`, `Host`, `Origin`, …) untouched but for the hop-by-hop
//! ones, and every
//! response comes back streamed, status and headers as they were. Only the
//! `POST`s to the upstream's MCP path are read:
//!
//! - a guarded request waits for a slot (or gets the overload error, as
//!   `application/json`); once admitted it holds the slot until its response
//!   passes back — on the `text/event-stream` the upstream answers with, which
//!   the proxy scans for it, or at the end of an `application/json` body;
//! - a `notifications/cancelled` frees its request's slot (or takes it out of
//!   the queue, and then goes no further) and is forwarded at once;
//! - a client that disconnects before its guarded request was answered has
//!   it cancelled upstream (`notifications/cancelled`, in its session);
//! - an upstream that cannot be reached or breaks off a stream answers the
//!   request with a JSON-RPC error (an SSE event when the stream had started);
//!   the proxy goes on serving;
//! - a body over `max_message_bytes` gets 413, invalid JSON gets 400 with a
//!   -32700 error; neither reaches the upstream, so the session survives.
//!
//! In-flight requests are keyed by their session (`Mcp-Session-Id`) and id.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use mcp_backpressure::Outcome;
use reqwest::Url;
use serde_json::Value;

use super::framing::{self, CANCELLED, INTERNAL_ERROR, INVALID_REQUEST, Kind, PARSE_ERROR};
use super::session::{Admission, Cancelled, Gate, InFlight, Ticket};
use super::stdio::shutdown_signal;

/// The session header of Streamable HTTP.
const SESSION: &str = "mcp-session-id";

/// Checks the `--upstream` URL: `http://host:port/path`.
pub fn parse_upstream(url: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url).with_context(|| format!("invalid --upstream URL {url:?}"))?;
    if parsed.scheme() != "http" {
        bail!("invalid --upstream URL {url:?}: only http:// upstreams are supported");
    }
    if parsed.host().is_none() {
        bail!("invalid --upstream URL {url:?}: no host");
    }
    Ok(parsed)
}

/// Serves the proxy on `listen` until SIGTERM or SIGINT (then gives open
/// connections [`GRACE`] to finish).
///
/// # Cancel safety
///
/// Dropping the future closes the listener and every connection.
pub async fn run(gate: Arc<Gate>, listen: SocketAddr, upstream: Url) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "listening on a non-loopback address");
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let proxy = Arc::new(Proxy {
        inflight: InFlight::new(gate),
        client,
        upstream,
    });
    tracing::info!(
        "listening on http://{bound}{} (upstream {})",
        proxy.upstream.path(),
        proxy.upstream
    );
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    // Event streams may stay open for ever: after the signal, connections
    // get GRACE to finish.
    let deadline = async move {
        let _ = stopping.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = deadline => tracing::warn!(?GRACE, "connections still open; closing them"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How long open connections get after SIGTERM or SIGINT.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
struct Proxy {
    inflight: InFlight,
    client: reqwest::Client,
    upstream: Url,
}

/// One request's way through the proxy.
///
/// # Cancel safety
///
/// Cancel safe: hyper drops this future when the client disconnects; a
/// queued request then leaves the queue and a forwarded one is cancelled
/// upstream (see [`WatchGuard`]).
async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mcp_post = parts.method == Method::POST && parts.uri.path() == proxy.upstream.path();
    if mcp_post {
        return proxy.post(parts, body).await;
    }
    let delete = parts.method == Method::DELETE && parts.uri.path() == proxy.upstream.path();
    let scope = session(&parts.headers);
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let response = proxy.forward(&parts, body, None).await;
    if delete && response.status().is_success() {
        // The session is over: whatever it still had in flight is done.
        let ended = proxy.inflight.drain(Some(&scope));
        tracing::debug!(session = %scope, requests = ended.len(), "session deleted");
    }
    response
}

fn session(headers: &HeaderMap) -> String {
    headers
        .get(SESSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn json_response(status: StatusCode, message: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(message).expect("a JSON value always serializes"),
    )
        .into_response()
}

/// What a forwarded request's response is watched for.
#[derive(Debug)]
struct Watch {
    id: Value,
    /// The slot of a guarded request.
    ticket: Option<Ticket>,
}

impl Proxy {
    /// A POST to the MCP endpoint: read, checked, admitted, forwarded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`handle`].
    async fn post(self: Arc<Self>, parts: axum::http::request::Parts, body: Body) -> Response {
        let max = self.inflight.gate().settings.max_message_bytes;
        let bytes = match http_body_util::Limited::new(body, max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                tracing::warn!(max, "message from the client too large; rejected");
                let message =
                    format!("message exceeds the proxy's max_message_bytes ({max} bytes)");
                let error = framing::error_response(&Value::Null, INVALID_REQUEST, &message);
                return json_response(StatusCode::PAYLOAD_TOO_LARGE, &error);
            }
            Err(error) => {
                tracing::debug!(%error, "the client's request body broke off");
                return StatusCode::BAD_REQUEST.into_response();
            }
        };
        let message: Value = match serde_json::from_slice(&bytes) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "message from the client is not JSON; answered -32700");
                let text = format!("Parse error: {error}");
                let error = framing::error_response(&Value::Null, PARSE_ERROR, &text);
                return json_response(StatusCode::BAD_REQUEST, &error);
            }
        };
        let scope = session(&parts.headers);
        let settings = &self.inflight.gate().settings;
        let watch = match Kind::of(&message) {
            Kind::Request { id, method } if settings.is_guarded(method) => {
                // Dropped if the client disconnects: the request leaves the queue.
                match self.inflight.enqueue(&scope, id).admit().await {
                    Admission::Admitted(ticket) => Some(Watch {
                        id: id.clone(),
                        ticket: Some(ticket),
                    }),
                    Admission::Rejected(error) => return json_response(StatusCode::OK, &error),
                    Admission::Cancelled => return StatusCode::ACCEPTED.into_response(),
                }
            }
            Kind::Request { id, .. } => Some(Watch {
                id: id.clone(),
                ticket: None,
            }),
            Kind::Notification { method } if method == CANCELLED => {
                if let Some(id) = framing::cancelled_id(&message)
                    && let Cancelled::Queued(left) = self.inflight.cancel(&scope, id)
                {
                    // Answer once it has left the limiter's queue.
                    left.wait().await;
                    return StatusCode::ACCEPTED.into_response();
                }
                None
            }
            _ => None,
        };
        self.forward(&parts, reqwest::Body::from(bytes), watch)
            .await
    }

    fn target(&self, uri: &axum::http::Uri) -> Url {
        let mut target = self.upstream.clone();
        target.set_path(uri.path());
        target.set_query(uri.query());
        target
    }

    /// Sends the request upstream and streams the response back.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the watched request's guard frees its slot and cancels
    /// it upstream when dropped before its response passed.
    async fn forward(
        self: &Arc<Self>,
        parts: &axum::http::request::Parts,
        body: reqwest::Body,
        watch: Option<Watch>,
    ) -> Response {
        let request = self
            .client
            .request(parts.method.clone(), self.target(&parts.uri))
            .headers(end_to_end(&parts.headers))
            .body(body);
        // If the client disconnects while this waits, the guard cancels upstream.
        let mut guard = WatchGuard {
            proxy: self.clone(),
            watch,
            headers: parts.headers.clone(),
        };
        let upstream = match request.send().await {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::warn!(%error, "the upstream server is unreachable");
                return match guard.settle(Outcome::Ignore) {
                    Some(watch) => {
                        let message = format!(
                            "mcp-backpressure: the upstream server is unreachable: {error}"
                        );
                        let error = framing::error_response(&watch.id, INTERNAL_ERROR, &message);
                        json_response(StatusCode::OK, &error)
                    }
                    None => (
                        StatusCode::BAD_GATEWAY,
                        "the upstream server is unreachable\n",
                    )
                        .into_response(),
                };
            }
        };
        let status = upstream.status();
        let mut headers = end_to_end(upstream.headers());
        let sse = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut stream: ByteStream = Box::pin(upstream.bytes_stream());
        let respond = |body: Body, headers: HeaderMap| {
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        };
        if guard.watch.is_none() {
            return respond(Body::from_stream(stream), headers);
        }
        let max = self.inflight.gate().settings.max_message_bytes;
        if sse {
            headers.remove(header::CONTENT_LENGTH);
            let tracked = Tracked {
                inner: stream,
                guard,
                events: SseScanner::new(max),
                ended: false,
            };
            return respond(Body::from_stream(tracked), headers);
        }
        // A JSON body is one message: read it (up to the bound) before
        // answering, so that the slot is free once the response has passed.
        let mut body = BytesMut::new();
        let overflow = loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > max {
                        break true;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the upstream broke off a response");
                    let watch = guard.settle(Outcome::Ignore).expect("a watched request");
                    let message = format!(
                        "mcp-backpressure: the upstream server broke off the response: {error}"
                    );
                    let error = framing::error_response(&watch.id, INTERNAL_ERROR, &message);
                    return json_response(StatusCode::OK, &error);
                }
                None => break false,
            }
        };
        guard.settle(if status.is_success() {
            Outcome::Success
        } else {
            Outcome::Ignore
        });
        let body = if overflow {
            let head = futures_util::stream::once(async move { Ok(body.freeze()) });
            Body::from_stream(head.chain(stream))
        } else {
            Body::from(body.freeze())
        };
        respond(body, headers)
    }

    /// Cancels `watch` upstream, in its session, on a task of its own.
    fn cancel_upstream(self: &Arc<Self>, watch: &Watch, client_headers: &HeaderMap) {
        let cancel = framing::cancellation(&watch.id, "the client disconnected");
        let mut headers = HeaderMap::new();
        for name in [
            header::AUTHORIZATION,
            HeaderName::from_static(SESSION),
            HeaderName::from_static("mcp-protocol-version"),
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
        let request = self
            .client
            .post(self.upstream.clone())
            .headers(headers)
            .body(serde_json::to_vec(&cancel).expect("a JSON value always serializes"));
        let id = watch.id.clone();
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) => {
                    tracing::info!(%id, status = %response.status(), "cancelled upstream: the client disconnected")
                }
                Err(error) => tracing::warn!(%id, %error, "could not cancel upstream"),
            }
        });
    }
}

/// Headers minus the hop-by-hop ones. `Host` passes too: an upstream's DNS
/// rebinding protection judges the host its client asked for, not the proxy's.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed {
        out.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        out.remove(name);
    }
    out
}

/// Ends a watched request exactly once. Dropped before that — the client went
/// away before the response passed — it cancels the request upstream.
#[derive(Debug)]
struct WatchGuard {
    proxy: Arc<Proxy>,
    watch: Option<Watch>,
    headers: HeaderMap,
}

impl WatchGuard {
    /// The request is over: frees its slot; returns it (once).
    fn settle(&mut self, outcome: Outcome) -> Option<Watch> {
        let watch = self.watch.take()?;
        if let Some(ticket) = watch.ticket {
            self.proxy.inflight.finish(ticket, outcome);
        }
        Some(watch)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        // Cancelled upstream only if still in flight (not already cancelled
        // by the client, nor ended with its session).
        if let Some(ticket) = watch.ticket
            && self.proxy.inflight.finish(ticket, Outcome::Ignore)
        {
            self.proxy.cancel_upstream(&watch, &self.headers);
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The upstream's event stream answering a watched request, on its way to
/// the client.
struct Tracked {
    inner: ByteStream,
    guard: WatchGuard,
    events: SseScanner,
    ended: bool,
}

impl Stream for Tracked {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(watch) = &this.guard.watch {
                    let answered = this
                        .events
                        .push(&chunk)
                        .iter()
                        .any(|data| answers(data, &watch.id));
                    if answered {
                        this.guard.settle(Outcome::Success);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.ended = true;
                tracing::warn!(%error, "the upstream broke off a response");
                match this.guard.settle(Outcome::Ignore) {
                    Some(watch) => {
                        let message = format!(
                            "mcp-backpressure: the upstream server broke off the response: {error}"
                        );
                        let error = framing::error_response(&watch.id, INTERNAL_ERROR, &message);
                        let event = format!("\n\nevent: message\ndata: {error}\n\n");
                        Poll::Ready(Some(Ok(Bytes::from(event))))
                    }
                    None => Poll::Ready(Some(Err(std::io::Error::other(error)))),
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                // A stream that ended without the response may be resumed
                // elsewhere (GET with Last-Event-ID), but its slot cannot wait
                // for that.
                this.guard.settle(Outcome::Ignore);
                Poll::Ready(None)
            }
        }
    }
}

/// Whether the SSE `data` is a response (or a batch with one) to `id`.
fn answers(data: &[u8], id: &Value) -> bool {
    serde_json::from_slice::<Value>(data)
        .is_ok_and(|message| framing::response_ids(&message).contains(&id))
}

/// An incremental `text/event-stream` parser that yields each event's `data`.
/// It holds at most `max` bytes of an unfinished event; past that it gives up
/// on that event (the bytes still pass through).
#[derive(Debug)]
struct SseScanner {
    max: usize,
    line: BytesMut,
    data: Vec<u8>,
    has_data: bool,
    overflow: bool,
}

impl SseScanner {
    fn new(max: usize) -> Self {
        Self {
            max,
            line: BytesMut::new(),
            data: Vec::new(),
            has_data: false,
            overflow: false,
        }
    }

    /// Feeds a chunk; returns the data of every event it completed.
    fn push(&mut self, chunk: &[u8]) -> VecDeque<Vec<u8>> {
        let mut events = VecDeque::new();
        for &byte in chunk {
            if byte != b'\n' {
                if self.line.len() + self.data.len() < self.max {
                    self.line.extend_from_slice(&[byte]);
                } else {
                    self.overflow = true;
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if self.has_data && !self.overflow {
                    events.push_back(std::mem::take(&mut self.data));
                }
                self.data.clear();
                self.has_data = false;
                self.overflow = false;
            } else if let Some(value) = line.strip_prefix(b"data") {
                let value = match value {
                    [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
                    [] => &[][..],
                    _ => continue, // another field whose name starts with "data"
                };
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_scanner_finds_events_across_chunks() {
        let mut scanner = SseScanner::new(1024);
        assert!(scanner.push(b"id: 1\nretry: 5\ndata").is_empty());
        let events = scanner.push(b": {\"a\":\r\ndata:1}\r\n\r\n: comment\n\ndata: x\n\n");
        assert_eq!(events, [b"{\"a\":\n1}".to_vec(), b"x".to_vec()]);
        assert!(answers(
            br#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
            &json!(4)
        ));
        assert!(!answers(
            br#"{"jsonrpc":"2.0","id":"4","result":{}}"#,
            &json!(4)
        ));
        assert!(!answers(
            br#"{"jsonrpc":"2.0","method":"x","id":4}"#,
            &json!(4)
        ));
    }

    #[test]
    fn the_scanner_is_bounded() {
        let mut scanner = SseScanner::new(8);
        assert!(scanner.push(b"data: 0123456789\n\n").is_empty());
        assert_eq!(scanner.push(b"data: 1\n\n"), [b"1".to_vec()]);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::HOST, HeaderValue::from_static("proxy"));
        headers.insert(SESSION, HeaderValue::from_static("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        let out = end_to_end(&headers);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "host", "last-event-id", SESSION]);
    }

    #[test]
    fn upstream_urls_are_checked() {
        assert!(parse_upstream("http://127.0.0.1:8000/mcp").is_ok());
        assert!(parse_upstream("https://example.invalid/mcp").is_err());
        assert!(parse_upstream("not a url").is_err());
    }
}
