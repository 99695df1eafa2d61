//! The upstream's response on its way back to the client, watched for the
//! answers to the requests of its exchange.
//!
//! - An event stream is parsed as the HTML standard says (LF, CRLF or a lone
//!   CR end a line) and every `message` event is routed: a response frees
//!   the slot of the request it answers, whichever stream of the session
//!   carries it (a `GET` resumption included). An event too large to hold is
//!   scanned for its id instead.
//! - A JSON body is one message (or a batch), read up to `max_message_bytes`
//!   and routed before it is answered, so that a slot is free once its
//!   response has passed.
//! - The exchange's requests still unanswered when the stream ends are over
//!   — unless the stream carried event ids (it can be resumed): then they
//!   wait, holding their slots, for their responses on another stream of the
//!   session, or for the cancel grace, after which they are cancelled
//!   upstream.
//! - When the client goes away first ([`Watch`] or [`Events`] dropped), its
//!   requests keep their slots until the upstream is done or the cancel
//!   grace passes: a resumable stream waits as above; otherwise the request
//!   is cancelled upstream — with `notifications/cancelled` in its session
//!   (and the upstream's stream read to its end, in the background, to see
//!   when it is done), or, without a session, by closing the upstream stream
//!   (which is how MCP 2026-07-28 cancels).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use mcp_backpressure::Outcome;

use super::exchange::Proxy;
use super::target;
use crate::proxy::error::{ProxyError, to_line};
use crate::proxy::inflight::{Expired, Scope};
use crate::proxy::outcome;
use crate::proxy::router::{FromUpstream, Watched};
use crate::proxy::wire::message::RequestId;
use crate::proxy::wire::sse::{SseData, SseEvent, SseParser};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Why an exchange ended without its response.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// The upstream could not be reached, or broke off.
    Failed,
}

/// The requests of one exchange that still wait for their answers.
#[derive(Debug)]
pub struct Watch {
    proxy: Arc<Proxy>,
    scope: Scope,
    requests: Vec<Watched>,
    /// The client's headers (a cancellation upstream goes in its session).
    headers: HeaderMap,
    /// The status of the upstream's response, once it came.
    status: Option<u16>,
}

impl Watch {
    /// Watches `requests` of an exchange in `scope`.
    pub fn new(
        proxy: Arc<Proxy>,
        scope: Scope,
        requests: Vec<Watched>,
        headers: HeaderMap,
    ) -> Self {
        Self {
            proxy,
            scope,
            requests,
            headers,
            status: None,
        }
    }

    /// The outcome of the requests the upstream's response ended without
    /// answering.
    fn unanswered(&self) -> Outcome {
        self.status.map_or(Outcome::Ignore, outcome::of_unanswered)
    }

    /// Ends every request still waiting; returns the ids of those that were
    /// still in flight (to answer them with an error).
    pub fn end(&mut self, ending: Ending) -> Vec<RequestId> {
        let Ending::Failed = ending;
        std::mem::take(&mut self.requests)
            .into_iter()
            .filter(|w| self.proxy.finish(w, Outcome::Ignore))
            .map(|w| w.key.id)
            .collect()
    }

    /// Routes one upstream message; drops the requests it answered. Returns
    /// the message to pass on instead of the upstream's bytes, if the router
    /// rewrote it (an id written back as the client wrote it, a byte order
    /// mark dropped).
    fn route(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if let FromUpstream::Forward {
            answered,
            bytes,
            rewritten,
        } = self.proxy.router.upstream(&self.scope, bytes, self.status)
        {
            self.requests.retain(|w| !answered.contains(&w.key.id));
            return rewritten.then_some(bytes);
        }
        None
    }

    fn route_event(&mut self, event: &SseEvent) {
        if !event.is_message() {
            return;
        }
        match &event.data {
            // A priming event (an id, empty data) carries no message.
            SseData::Held(data) if data.iter().all(u8::is_ascii_whitespace) => {}
            // An event passes as the upstream wrote it (the proxy streams it).
            SseData::Held(data) => {
                self.route(data);
            }
            SseData::Scanned { scan, .. } => {
                if let Some(id) = self.proxy.router.salvage(&self.scope, scan) {
                    self.requests.retain(|w| w.key.id != id);
                }
            }
        }
    }

    /// The client is gone (or a resumable stream ended) before the answers:
    /// every request still waiting keeps its slot for the cancel grace.
    /// `resumable`: wait for the answer on another stream of the session;
    /// otherwise cancel upstream now. Returns whether the upstream stream
    /// should still be read to its end (to see when the upstream is done).
    fn let_go(&mut self, resumable: bool) -> bool {
        let requests = std::mem::take(&mut self.requests);
        if requests.is_empty() {
            return false;
        }
        let session = matches!(self.scope, Scope::Session(_));
        let resumable = resumable && session;
        let mut drain = false;
        for watched in &requests {
            let proxy = self.proxy.clone();
            let headers = self.headers.clone();
            let id = watched.key.id.clone();
            let on_expiry = move |expired| {
                if expired == Expired::Detached {
                    proxy.cancel_upstream(&id, &headers);
                }
            };
            if !self.proxy.router.abandon(watched, resumable, on_expiry) {
                continue;
            }
            if !resumable && session {
                self.proxy.cancel_upstream(&watched.key.id, &self.headers);
                drain = true;
            }
        }
        self.requests = requests;
        drain
    }

    /// Streams the upstream's response back.
    pub async fn respond(mut self, upstream: reqwest::Response) -> Response {
        let status = upstream.status();
        self.status = Some(status.as_u16());
        let mut headers = target::end_to_end(upstream.headers());
        let sse = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let mut stream: ByteStream = Box::pin(upstream.bytes_stream());
        let respond = |body: Body, headers: HeaderMap| {
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        };
        let max = self.proxy.router.gate().settings.max_message_bytes;
        if sse {
            let events = Events {
                inner: Some(stream),
                parser: SseParser::new(max),
                watch: self,
                resumable: false,
                ended: false,
            };
            return respond(Body::from_stream(events), headers);
        }
        if self.requests.is_empty() {
            return respond(Body::from_stream(stream), headers);
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
                    let ids = self.end(Ending::Failed);
                    let code = self.proxy.router.gate().settings.error_code;
                    let batch = ids.len() > 1;
                    let ids: Vec<_> = ids.into_iter().map(Some).collect();
                    let answer = crate::proxy::error::answer(
                        &ProxyError::UpstreamUnavailable,
                        &ids,
                        batch,
                        code,
                    );
                    return (
                        axum::http::StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        serde_json::to_vec(&answer).expect("a JSON value always serializes"),
                    )
                        .into_response();
                }
                None => break false,
            }
        };
        let rewritten = if overflow { None } else { self.route(&body) };
        // The exchange is over: whatever was not answered in it is done.
        let outcome = self.unanswered();
        for watched in std::mem::take(&mut self.requests) {
            self.proxy.finish(&watched, outcome);
        }
        let body = if overflow {
            tracing::warn!(
                max,
                "a JSON response over max_message_bytes passed unrouted"
            );
            let head = futures_util::stream::once(async move { Ok(body.freeze()) });
            Body::from_stream(head.chain(stream))
        } else {
            headers.remove(header::CONTENT_LENGTH);
            match rewritten {
                Some(bytes) => Body::from(bytes),
                None => Body::from(body.freeze()),
            }
        };
        respond(body, headers)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Dropped before the upstream answered at all: the client left.
        self.let_go(false);
    }
}

/// The upstream's event stream, on its way to the client.
struct Events {
    inner: Option<ByteStream>,
    parser: SseParser,
    watch: Watch,
    /// The stream carried event ids: a client can resume it.
    resumable: bool,
    ended: bool,
}

impl Events {
    fn push(&mut self, chunk: &[u8]) {
        let mut events = Vec::new();
        self.parser.push(chunk, &mut |event| events.push(event));
        for event in events {
            if !event.last_event_id.is_empty() {
                self.resumable = true;
            }
            self.watch.route_event(&event);
        }
    }
}

impl Stream for Events {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.push(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.ended = true;
                tracing::warn!(%error, "the upstream broke off an event stream");
                let ids = this.watch.end(Ending::Failed);
                if ids.is_empty() {
                    return Poll::Ready(Some(Err(std::io::Error::other(error))));
                }
                let code = this.watch.proxy.router.gate().settings.error_code;
                let mut events = String::new();
                for id in ids {
                    let error = ProxyError::UpstreamUnavailable.to_response(Some(&id), code);
                    let line = to_line(&error);
                    let data = String::from_utf8_lossy(&line);
                    events.push_str(&format!(
                        "\n\nevent: message\ndata: {}\n\n",
                        data.trim_end()
                    ));
                }
                Poll::Ready(Some(Ok(Bytes::from(events))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.parser.finish();
                if this.resumable {
                    // The upstream ended a stream the client can resume: the
                    // calls go on; their answers may come on another stream.
                    this.watch.let_go(true);
                } else {
                    let outcome = this.watch.unanswered();
                    for watched in std::mem::take(&mut this.watch.requests) {
                        this.watch.proxy.finish(&watched, outcome);
                    }
                }
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // The client went away mid-stream.
        let drain = self.watch.let_go(self.resumable);
        let inner = self.inner.take();
        if !drain {
            return;
        }
        let Some(mut inner) = inner else {
            return;
        };
        // Read the upstream's stream to its end (bounded by the grace) to see
        // when the upstream is done with the cancelled requests.
        let mut watch = Watch::new(
            self.watch.proxy.clone(),
            self.watch.scope.clone(),
            std::mem::take(&mut self.watch.requests),
            HeaderMap::new(),
        );
        watch.status = self.watch.status;
        let mut parser = std::mem::replace(&mut self.parser, SseParser::new(0));
        let grace = watch.proxy.router.gate().settings.cancel_grace;
        tokio::spawn(async move {
            let read = async {
                while let Some(Ok(chunk)) = inner.next().await {
                    let mut events = Vec::new();
                    parser.push(&chunk, &mut |event| events.push(event));
                    for event in &events {
                        watch.route_event(event);
                    }
                    if watch.requests.is_empty() {
                        return;
                    }
                }
            };
            let ended = tokio::time::timeout(grace, read).await.is_ok();
            let left = std::mem::take(&mut watch.requests);
            if ended {
                // The upstream ended the stream: whatever is left is over.
                for watched in left {
                    watch.proxy.finish(&watched, Outcome::Ignore);
                }
            }
            // Otherwise the grace passed: the grace timer frees (and counts) them.
        });
    }
}
