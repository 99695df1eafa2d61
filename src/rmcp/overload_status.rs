//! An HTTP status for refused calls: a tower layer in front of rmcp's
//! Streamable HTTP service that answers a POST whose guarded call was refused
//! with `429 Too Many Requests` or `503 Service Unavailable` and
//! `Retry-After`, instead of `200 OK`, so that an ingress or load balancer in
//! front of several replicas can retry the request elsewhere.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use mcp_backpressure::rmcp::{Backpressure, OverloadStatus, OverloadStatusLayer};
//! use mcp_backpressure::{Limiter, LimiterConfig};
//! use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
//! use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
//! # #[derive(Clone)] struct MyServer;
//! # impl rmcp::ServerHandler for MyServer {}
//!
//! # async fn serve() -> std::io::Result<()> {
//! let guarded = Backpressure::new(MyServer, Limiter::new(LimiterConfig::new(5)).unwrap());
//! let service = StreamableHttpService::new(
//!     move || Ok(guarded.clone()),
//!     Arc::new(LocalSessionManager::default()),
//!     StreamableHttpServerConfig::default(),
//! );
//! let app = axum::Router::new().nest_service(
//!     "/mcp",
//!     tower::ServiceBuilder::new()
//!         .layer(OverloadStatusLayer::new(OverloadStatus::ServiceUnavailable))
//!         .service(service),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # What is changed
//!
//! Only the answer to a POST whose guarded call the [`Backpressure`]
//! wrapper refused as overloaded (either [`OverloadResponse`]: the JSON-RPC
//! error or the `isError` tool result). That answer becomes:
//!
//! - the configured status (429 or 503);
//! - `Retry-After`: the refusal's retry delay in whole seconds, rounded up,
//!   at least 1;
//! - `Content-Type: application/json`, and as body the same JSON-RPC message
//!   rmcp wrote, byte for byte (taken out of its SSE event when rmcp answered
//!   with an event stream);
//! - every other header of rmcp's response (without `Content-Length`).
//!
//! Everything else (other methods, other statuses, notifications, admitted
//! calls, methods the wrapper does not guard, servers without the wrapper)
//! passes with its status, headers and body unchanged.
//!
//! # How it knows
//!
//! The wrapper tells it. The layer puts a one-shot admission signal into
//! each POST's extensions; rmcp hands the request's `http::request::Parts`
//! to the handler, and the wrapper records its decision there the moment
//! admission ends, before it answers. The layer never guesses from the body
//! (a tool that relays a downstream server's overload error is not this
//! server's refusal, and the error code is configurable), and parses
//! nothing of an admitted call's answer.
//!
//! # What it costs a call that is not refused
//!
//! HTTP sends the status first, so the layer holds rmcp's response headers
//! until the status is known:
//!
//! - **a guarded call** (`tools/call` by default): until the wrapper admits
//!   it, that is for as long as it waits in the queue, and not a moment
//!   longer (then the headers and everything rmcp wrote so far go at once,
//!   and the stream flows as it would without the layer);
//! - **any other request** (unguarded methods, or a server without the
//!   wrapper): until the first JSON-RPC message of the POST's event stream
//!   (its answer, or the first notification, such as progress);
//! - **a JSON answer** (`json_response`, or a stateless request that
//!   negotiated its protocol version per request): rmcp has already waited
//!   for the message, so nothing is held.
//!
//! While headers are held, the bytes rmcp writes before the first message
//! (the SSE priming event, keep-alive comments) are kept, at most
//! [`MAX_PEEK_BYTES`]; past that, or at the first message, the response is
//! released unchanged.
//!
//! # Bounds and cancellation
//!
//! At most [`MAX_PEEK_BYTES`] of a response are buffered, once, before its
//! headers are released; afterwards the body streams through without a copy.
//! The response future is cancel safe: dropping it (the client hung up while
//! its headers were held) drops rmcp's response body, which is what rmcp
//! sees when a client disconnects (it cancels the request's handler).
//!
//! [`Backpressure`]: super::Backpressure
//! [`OverloadResponse`]: super::OverloadResponse

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::admission_signal::{AdmissionSignal, Decision};
pub use crate::overload_status::{InvalidOverloadStatus, OverloadStatus, retry_after_seconds};

/// The most bytes of one response the layer buffers before it releases the
/// headers (64 KiB): the overload refusal is well under 2 KiB, whatever
/// comes before it in an event stream (the priming event, keep-alive
/// comments) a few bytes.
pub const MAX_PEEK_BYTES: usize = 64 * 1024;

/// A [`tower_layer::Layer`] that answers a refused POST with an
/// [`OverloadStatus`] (see the module docs). Put it directly in front of
/// rmcp's `StreamableHttpService` whose handler is a
/// [`Backpressure`](super::Backpressure).
#[derive(Clone, Copy, Debug, Default)]
pub struct OverloadStatusLayer {
    status: OverloadStatus,
}

impl OverloadStatusLayer {
    /// A layer answering refusals with `status` ([`OverloadStatus::Ok`]
    /// changes nothing).
    pub const fn new(status: OverloadStatus) -> Self {
        Self { status }
    }
}

impl<S> tower_layer::Layer<S> for OverloadStatusLayer {
    type Service = OverloadStatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadStatusService {
            inner,
            status: self.status,
        }
    }
}

/// The service of [`OverloadStatusLayer`].
#[derive(Clone, Debug)]
pub struct OverloadStatusService<S> {
    inner: S,
    status: OverloadStatus,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for OverloadStatusService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send,
{
    type Response = Response<OverloadStatusBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if self.status == OverloadStatus::Ok || request.method() != Method::POST {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(OverloadStatusBody::new)) });
        }
        let signal = AdmissionSignal::default();
        request.extensions_mut().insert(signal.clone());
        let response = self.inner.call(request);
        let status =
            StatusCode::from_u16(self.status.code()).expect("200, 429 and 503 are statuses");
        Box::pin(async move { Ok(peek(response.await?, &signal, status).await) })
    }
}

/// Holds `response` until the status is known (see the module docs).
async fn peek<B>(
    response: Response<B>,
    signal: &AdmissionSignal,
    status: StatusCode,
) -> Response<OverloadStatusBody<B>>
where
    B: Body<Data = Bytes> + Unpin,
{
    if response.status() != StatusCode::OK {
        return response.map(OverloadStatusBody::new);
    }
    let (parts, body) = response.into_parts();
    let media_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        // rmcp writes a JSON answer only once the handler has answered, so
        // the decision, if any, is already recorded.
        Some("application/json") => match signal.get() {
            Some(Decision::Refused { retry_after }) => {
                let mut peeked = Peeked::new(body);
                while !peeked.over() {
                    if !peeked.read().await {
                        break;
                    }
                }
                match peeked.whole_json_message() {
                    Some(message) => refused(parts, message, status, retry_after),
                    None => peeked.release(parts),
                }
            }
            _ => Response::from_parts(parts, OverloadStatusBody::new(body)),
        },
        Some("text/event-stream") => peek_event_stream(parts, body, signal, status).await,
        _ => Response::from_parts(parts, OverloadStatusBody::new(body)),
    }
}

/// An event stream: read until the decision says "pass", or the first
/// JSON-RPC message arrives (the refusal when the decision says so).
async fn peek_event_stream<B>(
    parts: Parts,
    body: B,
    signal: &AdmissionSignal,
    status: StatusCode,
) -> Response<OverloadStatusBody<B>>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut peeked = Peeked::new(body);
    let mut decision = signal.get();
    loop {
        if let Some(message) = first_event_data(&peeked.bytes) {
            // The wrapper records a refusal before it answers: if this
            // message is one, the decision is here by now.
            return match decision.or_else(|| signal.get()) {
                Some(Decision::Refused { retry_after }) if is_answer(&message) => {
                    refused(parts, Bytes::from(message), status, retry_after)
                }
                _ => peeked.release(parts),
            };
        }
        if decision == Some(Decision::Pass) || peeked.over() {
            return peeked.release(parts);
        }
        tokio::select! {
            biased;
            decided = signal.decided(), if decision.is_none() => decision = Some(decided),
            more = peeked.read() => if !more {
                return peeked.release(parts);
            },
        }
    }
}

/// The refusal as its own response.
fn refused<B: Body>(
    mut parts: Parts,
    message: Bytes,
    status: StatusCode,
    retry_after: Duration,
) -> Response<OverloadStatusBody<B>> {
    parts.status = status;
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts
        .headers
        .insert(RETRY_AFTER, retry_after_seconds(retry_after).into());
    Response::from_parts(parts, OverloadStatusBody::whole(message))
}

/// What was read of a body while its headers were held.
struct Peeked<B: Body> {
    bytes: BytesMut,
    rest: Rest<B>,
}

impl<B> Peeked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    fn new(body: B) -> Self {
        Self {
            bytes: BytesMut::new(),
            rest: Rest::Body(body),
        }
    }

    /// Whether the buffer is full.
    fn over(&self) -> bool {
        self.bytes.len() > MAX_PEEK_BYTES
    }

    /// Reads the next frame into the buffer; false once the body has ended
    /// (or failed, or sent its trailers). Cancel safe: a frame is either
    /// read whole or not at all.
    async fn read(&mut self) -> bool {
        let Rest::Body(body) = &mut self.rest else {
            return false;
        };
        match body.frame().await {
            None => self.rest = Rest::Done,
            Some(Err(error)) => self.rest = Rest::Error(Box::new(error)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.bytes.extend_from_slice(&data);
                    return true;
                }
                Err(frame) => {
                    self.rest = match frame.into_trailers() {
                        Ok(trailers) => Rest::Trailers(trailers),
                        Err(_) => Rest::Done,
                    }
                }
            },
        }
        false
    }

    /// The whole body, if it ended and is one JSON-RPC answer.
    fn whole_json_message(&self) -> Option<Bytes> {
        let ended = matches!(self.rest, Rest::Done);
        (ended && is_answer(&self.bytes)).then(|| Bytes::copy_from_slice(&self.bytes))
    }

    /// The response as rmcp made it: what was read, then the rest.
    fn release(self, parts: Parts) -> Response<OverloadStatusBody<B>> {
        let prefix = (!self.bytes.is_empty()).then(|| self.bytes.freeze());
        Response::from_parts(
            parts,
            OverloadStatusBody {
                prefix,
                rest: self.rest,
            },
        )
    }
}

/// The data of the first SSE event in `stream` that carries data (a
/// JSON-RPC message), if a whole one has arrived. Events without data (the
/// priming event's empty `data:`, keep-alive comments) are skipped.
fn first_event_data(stream: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    let mut rest = stream;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The end of an event.
            match data.take() {
                Some(payload) if !payload.is_empty() => return Some(payload),
                _ => continue,
            }
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => continue, // a comment
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let payload = data.get_or_insert_with(Vec::new);
            if !payload.is_empty() {
                payload.push(b'\n');
            }
            payload.extend_from_slice(value);
        }
    }
    None
}

/// Whether `message` is a JSON-RPC answer (a result or an error to a
/// request id): the only message a refused POST carries.
fn is_answer(message: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(message) else {
        return false;
    };
    object.contains_key("id") && (object.contains_key("error") || object.contains_key("result"))
}

/// The response body of [`OverloadStatusService`]: rmcp's body as it was
/// (with the bytes read while the headers were held in front), or a refused
/// POST's JSON-RPC message.
pub struct OverloadStatusBody<B: Body> {
    prefix: Option<Bytes>,
    rest: Rest<B>,
}

/// What follows the prefix.
enum Rest<B: Body> {
    Body(B),
    Trailers(HeaderMap),
    /// Boxed: keeps the body `Unpin` whatever the error type.
    Error(Box<B::Error>),
    Done,
}

impl<B: Body> OverloadStatusBody<B> {
    fn new(body: B) -> Self {
        Self {
            prefix: None,
            rest: Rest::Body(body),
        }
    }

    fn whole(bytes: Bytes) -> Self {
        Self {
            prefix: Some(bytes),
            rest: Rest::Done,
        }
    }
}

impl<B: Body> fmt::Debug for OverloadStatusBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverloadStatusBody")
            .field("prefix", &self.prefix.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl<B> Body for OverloadStatusBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match std::mem::replace(&mut this.rest, Rest::Done) {
            Rest::Body(mut body) => {
                let polled = Pin::new(&mut body).poll_frame(cx);
                this.rest = Rest::Body(body);
                polled
            }
            Rest::Trailers(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Rest::Error(error) => Poll::Ready(Some(Err(*error))),
            Rest::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && match &self.rest {
                Rest::Body(body) => body.is_end_stream(),
                Rest::Done => true,
                Rest::Trailers(_) | Rest::Error(_) => false,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            Rest::Body(body) => {
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + prefix);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
            Rest::Done | Rest::Trailers(_) | Rest::Error(_) => SizeHint::with_exact(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
    use tokio::sync::mpsc;

    use super::*;

    const REFUSAL: &str = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-31429,"message":"SERVER_OVERLOADED: concurrency_limit, retry after 1200 ms","data":{"reason":"concurrency_limit"}}}"#;

    #[test]
    fn the_first_event_with_data_is_the_message() {
        let priming = "id: 0\nretry: 3000\ndata:\n\n";
        let stream = format!("{priming}:\n\ndata: {REFUSAL}\nid: 1\n\ndata: {{}}\n\n");
        assert_eq!(
            first_event_data(stream.as_bytes()).unwrap(),
            REFUSAL.as_bytes()
        );
        // Not yet whole: the blank line that ends the event is missing.
        assert_eq!(
            first_event_data(format!("{priming}data: {{}}\n").as_bytes()),
            None
        );
        // CRLF line ends, and data split over lines.
        let crlf = "data: {\"a\":\r\ndata: 1}\r\n\r\n";
        assert_eq!(first_event_data(crlf.as_bytes()).unwrap(), b"{\"a\":\n1}");
        assert!(is_answer(REFUSAL.as_bytes()));
        assert!(!is_answer(
            br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#
        ));
    }

    /// A response body fed by the test, one frame per message.
    struct Fed(mpsc::UnboundedReceiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }
    }

    fn event_stream() -> (mpsc::UnboundedSender<Bytes>, Response<Fed>) {
        let (feed, body) = mpsc::unbounded_channel();
        let response = Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Fed(body))
            .unwrap();
        (feed, response)
    }

    fn json(text: &'static str) -> Response<Full<Bytes>> {
        Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .unwrap()
    }

    const PRIMING: &str = "id: 0\nretry: 3000\ndata:\n\n";

    fn refused_after(ms: u64) -> Decision {
        Decision::Refused {
            retry_after: Duration::from_millis(ms),
        }
    }

    async fn text<B>(body: OverloadStatusBody<B>) -> String
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: fmt::Debug,
    {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_refused_event_stream_becomes_the_status_with_retry_after_and_the_message() {
        let (feed, response) = event_stream();
        let signal = AdmissionSignal::default();
        let mut peeking =
            tokio_test::task::spawn(peek(response, &signal, StatusCode::SERVICE_UNAVAILABLE));
        feed.send(Bytes::from_static(PRIMING.as_bytes())).unwrap();
        tokio_test::assert_pending!(peeking.poll());
        signal.decide(refused_after(1_200));
        tokio_test::assert_pending!(peeking.poll(), "held until the message is whole");
        let event = format!("data: {REFUSAL}\nid: 0/1\n\n");
        let (head, tail) = event.split_at(20);
        feed.send(Bytes::copy_from_slice(head.as_bytes())).unwrap();
        tokio_test::assert_pending!(peeking.poll());
        feed.send(Bytes::copy_from_slice(tail.as_bytes())).unwrap();
        let response = tokio_test::assert_ready!(peeking.poll());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(text(response.into_body()).await, REFUSAL);
    }

    #[tokio::test]
    async fn an_admitted_call_is_released_at_admission_with_what_came_before() {
        let (feed, response) = event_stream();
        let signal = AdmissionSignal::default();
        let mut peeking =
            tokio_test::task::spawn(peek(response, &signal, StatusCode::TOO_MANY_REQUESTS));
        feed.send(Bytes::from_static(PRIMING.as_bytes())).unwrap();
        tokio_test::assert_pending!(peeking.poll());
        signal.decide(Decision::Pass);
        assert!(peeking.is_woken());
        let response = tokio_test::assert_ready!(peeking.poll());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        // The body goes on streaming after the release.
        feed.send(Bytes::from_static(b"data: {\"later\":1}\n\n"))
            .unwrap();
        drop(feed);
        assert_eq!(
            text(response.into_body()).await,
            format!("{PRIMING}data: {{\"later\":1}}\n\n")
        );
    }

    #[tokio::test]
    async fn without_a_decision_the_first_message_releases_the_stream_unchanged() {
        let (feed, response) = event_stream();
        let signal = AdmissionSignal::default();
        let mut peeking =
            tokio_test::task::spawn(peek(response, &signal, StatusCode::SERVICE_UNAVAILABLE));
        feed.send(Bytes::from_static(PRIMING.as_bytes())).unwrap();
        feed.send(Bytes::from_static(b":\n\n")).unwrap(); // a keep-alive
        tokio_test::assert_pending!(peeking.poll());
        // An overload error that is not this server's refusal (no decision).
        let event = format!("data: {REFUSAL}\n\n");
        feed.send(Bytes::from(event.clone())).unwrap();
        let response = tokio_test::assert_ready!(peeking.poll());
        assert_eq!(response.status(), StatusCode::OK);
        drop(feed);
        assert_eq!(
            text(response.into_body()).await,
            format!("{PRIMING}:\n\n{event}")
        );
    }

    #[tokio::test]
    async fn a_stream_is_released_once_the_buffer_is_full() {
        let (feed, response) = event_stream();
        let signal = AdmissionSignal::default();
        let mut peeking =
            tokio_test::task::spawn(peek(response, &signal, StatusCode::SERVICE_UNAVAILABLE));
        let comment = Bytes::from(format!(":{}\n\n", "x".repeat(1021)));
        for _ in 0..MAX_PEEK_BYTES / comment.len() {
            feed.send(comment.clone()).unwrap();
        }
        tokio_test::assert_pending!(peeking.poll(), "{MAX_PEEK_BYTES} bytes fit");
        feed.send(comment.clone()).unwrap();
        let response = tokio_test::assert_ready!(peeking.poll());
        assert_eq!(response.status(), StatusCode::OK);
        drop(feed);
        let body = text(response.into_body()).await;
        assert_eq!(
            body.len(),
            comment.len() * (MAX_PEEK_BYTES / comment.len() + 1)
        );
    }

    #[tokio::test]
    async fn a_json_answer_is_changed_only_when_refused() {
        let signal = AdmissionSignal::default();
        let untouched = peek(json(REFUSAL), &signal, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(untouched.status(), StatusCode::OK);
        assert_eq!(
            untouched.body().size_hint().exact(),
            Some(REFUSAL.len() as u64)
        );
        signal.decide(refused_after(0));
        let refused = peek(json(REFUSAL), &signal, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], "1");
        assert_eq!(text(refused.into_body()).await, REFUSAL);
    }

    #[tokio::test]
    async fn only_posts_get_a_signal_and_other_statuses_pass() {
        use tower_layer::Layer;
        use tower_service::Service;

        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let record = seen.clone();
        let inner = tower::service_fn(move |request: Request<()>| {
            let signal = request.extensions().get::<AdmissionSignal>().cloned();
            record.lock().push(signal.is_some());
            if let Some(signal) = signal {
                signal.decide(refused_after(5_000));
            }
            async move {
                let mut response = json(REFUSAL);
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut service = OverloadStatusLayer::new(OverloadStatus::ServiceUnavailable).layer(inner);
        let get = Request::get("/mcp").body(()).unwrap();
        let post = Request::post("/mcp").body(()).unwrap();
        assert_eq!(
            service.call(get).await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            service.call(post).await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(*seen.lock(), [false, true]);
    }
}
