//! Which connections make no progress — new ones that have sent nothing
//! or half a head, kept-alive ones between requests, and ones receiving a
//! request's body — and for how long: at the connection cap, the listener
//! closes the one longest without progress to let a new connection in (as
//! nginx reuses its idle connections), so that clients holding connections
//! without using them, or stalling their uploads, cannot keep others out
//! until `header_read_timeout` or `body_stall_timeout`.
//!
//! A connection *waits* from when it is accepted, and again from when a
//! response has been written whole to the socket (its body dropped by
//! hyper, then everything flushed: [`TrackedIo`]). It *receives* from when
//! hyper hands us a request's head with a body to come (the [`Tracked`]
//! service is called), its progress being the head's arrival and then each
//! body byte ([`Upload::received`]), until the body is read whole and the
//! request is dispatched ([`Upload::dispatched`]): nothing of the request
//! has reached the limiter or the upstream before that. It *serves* from
//! then (or from the head, for a request without a body) until its response
//! is written. Waiting and receiving connections are ranked together by
//! the time since their last progress; serving ones are never closed.
//!
//! A waiting connection asked to close closes at once (it is dropped) if it
//! still waits when its task sees the request: if a request started
//! meanwhile, it is served and the listener looks again. A receiving one
//! asked to close is *evicted*: its body read stops
//! ([`Upload::evicted`]), the request is answered 503 with
//! `Connection: close` (nothing of it forwarded or admitted, its bytes given
//! back), and the connection closes once that is written. If its body was
//! read whole before it could be dispatched, it is evicted all the same;
//! once dispatched it is serving and is not asked. All of this happens
//! under the connection's lock, so a request that has been dispatched is
//! never cut, and a response is never lost.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

/// The listener's connections, by whether and since when they made no
/// progress.
#[derive(Debug, Default)]
pub struct Idle {
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
    /// Notified when a connection starts waiting, or keeps serving when it
    /// was asked to close: the listener may look again.
    changed: Notify,
}

#[derive(Debug)]
struct Connection {
    state: Mutex<State>,
    /// Notified when the listener asks the connection to close.
    close: Notify,
    /// Notified when the listener evicts the connection while it receives
    /// a body.
    evict: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a request since then.
    Waiting(Instant),
    /// Receiving a request's body, last progress (the head, or a body
    /// byte) then; the request is not dispatched yet.
    Receiving(Instant),
    /// Serving a request.
    Serving,
    /// Its response is written, perhaps not yet flushed to the socket.
    Answered,
    /// Asked to close; still waiting.
    Closing,
    /// Asked to close while receiving a body: the request is not
    /// dispatched; it is answered 503 and the connection closes.
    Evicted,
}

/// One connection's place in [`Idle`], with its slot under the cap: both
/// are given back when it is dropped (the slot first, so that the listener
/// never sees a free slot and no connection closing).
#[derive(Debug)]
pub struct Entry {
    idle: Arc<Idle>,
    id: u64,
    connection: Arc<Connection>,
    slot: Option<OwnedSemaphorePermit>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Idle {
    /// Registers a connection just accepted, holding `slot`: it waits from
    /// now.
    pub fn register(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            state: Mutex::new(State::Waiting(Instant::now())),
            close: Notify::new(),
            evict: Notify::new(),
        });
        lock(&self.connections).insert(id, Arc::clone(&connection));
        Entry {
            idle: Arc::clone(self),
            id,
            connection,
            slot: Some(slot),
        }
    }

    /// Asks the connection longest without progress — waiting for a
    /// request, or receiving a body — to close, unless one asked before
    /// still closes. Returns whether one closes.
    pub fn close_oldest(&self) -> bool {
        let connections = lock(&self.connections);
        let mut oldest: Option<(Instant, &Arc<Connection>)> = None;
        for connection in connections.values() {
            match *lock(&connection.state) {
                State::Closing | State::Evicted => return true,
                State::Waiting(since) | State::Receiving(since)
                    if oldest.is_none_or(|(at, _)| since < at) =>
                {
                    oldest = Some((since, connection));
                }
                _ => {}
            }
        }
        let Some((since, connection)) = oldest else {
            return false;
        };
        let mut state = lock(&connection.state);
        if matches!(*state, State::Receiving(_)) {
            *state = State::Evicted;
            drop(state);
            connection.evict.notify_one();
            tracing::debug!(
                stalled = ?since.elapsed(),
                "at the connection cap; evicting the connection longest without progress \
                 (its request body stalled)"
            );
        } else {
            *state = State::Closing;
            drop(state);
            connection.close.notify_one();
            tracing::debug!(
                waited = ?since.elapsed(),
                "at the connection cap; closing the connection longest without a request"
            );
        }
        true
    }

    /// Waits until a connection may have started waiting, or kept serving
    /// when asked to close (and right away if one has since the last call).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a notification not taken stays for the next call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Connections registered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.connections).len()
    }
}

impl Entry {
    /// A request's head arrived: receiving its body (`body` is true) or
    /// serving. If the connection was asked to close, it is not any more.
    fn started(&self, body: bool) {
        let mut state = lock(&self.connection.state);
        let now = if body {
            State::Receiving(Instant::now())
        } else {
            State::Serving
        };
        let was = std::mem::replace(&mut *state, now);
        drop(state);
        if was == State::Closing {
            self.idle.changed.notify_one();
        }
    }

    /// A request's head without a body arrived: serving.
    #[cfg(test)]
    fn serving(&self) {
        self.started(false);
    }

    /// The response is ready: a request still receiving is serving now (its
    /// handler answered without dispatching it). Returns whether the
    /// connection was evicted (then it must close after the response).
    fn responding(&self) -> bool {
        let mut state = lock(&self.connection.state);
        match *state {
            State::Receiving(_) => {
                *state = State::Serving;
                false
            }
            State::Evicted => true,
            _ => false,
        }
    }

    /// hyper is done with a response's body (written, or given up).
    fn answered(&self) {
        let mut state = lock(&self.connection.state);
        if *state == State::Serving {
            *state = State::Answered;
        }
    }

    /// Everything written is flushed to the socket: after a response,
    /// waiting from now.
    fn flushed(&self) {
        let mut state = lock(&self.connection.state);
        if *state == State::Answered {
            *state = State::Waiting(Instant::now());
            drop(state);
            self.idle.changed.notify_one();
        }
    }

    /// Resolves when the listener asks this connection to close and it
    /// still waits for a request (then it must close); a request that
    /// started since keeps it open, and this waits again.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a request to close not yet taken stays.
    pub async fn asked_to_close(&self) {
        loop {
            self.connection.close.notified().await;
            if *lock(&self.connection.state) == State::Closing {
                return;
            }
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        drop(self.slot.take());
        lock(&self.idle.connections).remove(&self.id);
        self.idle.changed.notify_one();
    }
}

/// The handle on a connection receiving a request's body, in the request's
/// extensions (put there by [`Tracked`]): the body read tells it of
/// progress and of the request's dispatch, and stops when the connection is
/// evicted.
#[derive(Clone, Debug)]
pub struct Upload {
    entry: Arc<Entry>,
}

impl Upload {
    /// Body bytes arrived: progress, now.
    pub fn received(&self) {
        let mut state = lock(&self.entry.connection.state);
        if let State::Receiving(_) = *state {
            *state = State::Receiving(Instant::now());
        }
    }

    /// The body is read whole (or refused): the request is dispatched and
    /// the connection serving, unless it was evicted first (then returns
    /// false, and nothing of the request may go on).
    pub fn dispatched(&self) -> bool {
        let mut state = lock(&self.entry.connection.state);
        match *state {
            State::Evicted => false,
            State::Receiving(_) => {
                *state = State::Serving;
                true
            }
            _ => true,
        }
    }

    /// Resolves when the connection is evicted (at once if it was).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an eviction not yet taken stays.
    pub async fn evicted(&self) {
        loop {
            if *lock(&self.entry.connection.state) == State::Evicted {
                return;
            }
            self.entry.connection.evict.notified().await;
        }
    }
}

/// The app, as hyper's service, marking its connection receiving while a
/// request's body is read (with an [`Upload`] in the request's extensions)
/// and serving while the request is served.
#[derive(Debug)]
pub struct Tracked {
    app: TowerToHyperService<axum::Router>,
    entry: Arc<Entry>,
}

impl Tracked {
    /// `app` on the connection of `entry`.
    pub fn new(app: axum::Router, entry: Arc<Entry>) -> Self {
        Self {
            app: TowerToHyperService::new(app),
            entry,
        }
    }
}

type Served = Result<Response<TrackedBody>, std::convert::Infallible>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Served> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.entry.started(!request.body().is_end_stream());
        request.extensions_mut().insert(Upload {
            entry: Arc::clone(&self.entry),
        });
        let response = self.app.call(request);
        let entry = Arc::clone(&self.entry);
        Box::pin(async move {
            let mut response = response.await?;
            if entry.responding() {
                // Evicted: whatever the answer, the connection closes after.
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok(response.map(|body| TrackedBody { body, entry }))
        })
    }
}

/// A response's body: when hyper drops it (written, or given up), its
/// connection waits for the next request.
#[derive(Debug)]
pub struct TrackedBody {
    body: Body,
    entry: Arc<Entry>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.entry.answered();
    }
}

/// A connection's socket, telling its [`Entry`] when what was written is
/// flushed (hyper flushes its own buffer, then the socket's).
#[derive(Debug)]
pub struct TrackedIo {
    stream: TcpStream,
    entry: Arc<Entry>,
}

impl TrackedIo {
    /// `stream`, the socket of the connection of `entry`.
    pub fn new(stream: TcpStream, entry: Arc<Entry>) -> Self {
        Self { stream, entry }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.entry.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    fn slot(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        Arc::clone(slots).try_acquire_owned().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_waiting_longest_is_asked_to_close_once() {
        let idle = Arc::new(Idle::default());
        let slots = Arc::new(Semaphore::new(3));
        let a = idle.register(slot(&slots));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let b = idle.register(slot(&slots));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let c = idle.register(slot(&slots));
        a.serving();
        // a serves: b has waited longest.
        assert!(idle.close_oldest());
        assert!(idle.close_oldest(), "b still closes");
        tokio_test::assert_ready!(tokio_test::task::spawn(b.asked_to_close()).poll());
        let mut c_asked = tokio_test::task::spawn(c.asked_to_close());
        tokio_test::assert_pending!(c_asked.poll());
        // Gone: its slot is free and nothing closes.
        drop(b);
        assert_eq!((idle.len(), slots.available_permits()), (2, 1));
        assert!(idle.close_oldest(), "c is asked now");
        assert!(c_asked.is_woken());
        tokio_test::assert_ready!(c_asked.poll());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_started_keeps_its_connection_open() {
        let idle = Arc::new(Idle::default());
        let slots = Arc::new(Semaphore::new(1));
        let a = idle.register(slot(&slots));
        assert!(idle.close_oldest());
        // The head arrived before the connection's task saw the request.
        a.serving();
        let mut asked = tokio_test::task::spawn(a.asked_to_close());
        tokio_test::assert_pending!(asked.poll());
        // The listener is told to look again: nothing waits now.
        tokio_test::assert_ready!(tokio_test::task::spawn(idle.changed()).poll());
        assert!(!idle.close_oldest());
        // Answered, it waits again once the answer is flushed; then it may
        // be closed.
        a.answered();
        assert!(!idle.close_oldest());
        a.flushed();
        assert!(idle.close_oldest());
        tokio_test::assert_ready!(asked.poll());
    }

    /// Receiving with a body read on: its upload handle.
    fn receiving(entry: Entry) -> (Arc<Entry>, Upload) {
        let entry = Arc::new(entry);
        entry.started(true);
        let upload = Upload {
            entry: Arc::clone(&entry),
        };
        (entry, upload)
    }

    /// Waiting and receiving connections are ranked together, by the time
    /// since their last progress: a body byte is progress.
    #[tokio::test(start_paused = true)]
    async fn the_connection_longest_without_progress_goes_first_waiting_or_receiving() {
        let idle = Arc::new(Idle::default());
        let slots = Arc::new(Semaphore::new(4));
        let second = std::time::Duration::from_secs(1);
        // 0 s: a waits; b sends a head, its body to come.
        let a = idle.register(slot(&slots));
        let (b, b_upload) = receiving(idle.register(slot(&slots)));
        tokio::time::advance(second).await;
        // 1 s: c sends a head and stalls its body.
        let (c, c_upload) = receiving(idle.register(slot(&slots)));
        tokio::time::advance(second).await;
        // 2 s: d waits.
        let d = idle.register(slot(&slots));
        tokio::time::advance(second).await;
        // 3 s: a body byte of b.
        b_upload.received();
        tokio::time::advance(second).await;
        let mut b_evicted = tokio_test::task::spawn(b_upload.evicted());
        let mut c_evicted = tokio_test::task::spawn(c_upload.evicted());
        let mut c_asked = tokio_test::task::spawn(c.asked_to_close());
        let mut d_asked = tokio_test::task::spawn(d.asked_to_close());
        tokio_test::assert_pending!(c_evicted.poll());
        tokio_test::assert_pending!(c_asked.poll());
        // a (0 s) first: closed as a waiting connection.
        assert!(idle.close_oldest());
        tokio_test::assert_ready!(tokio_test::task::spawn(a.asked_to_close()).poll());
        drop(a);
        // Then c (1 s): evicted, its body read stops; its connection's task
        // is not closed (it answers first), and c still closes.
        assert!(idle.close_oldest());
        assert!(c_evicted.is_woken());
        tokio_test::assert_ready!(c_evicted.poll());
        tokio_test::assert_pending!(c_asked.poll());
        tokio_test::assert_pending!(d_asked.poll());
        tokio_test::assert_pending!(b_evicted.poll());
        assert!(idle.close_oldest(), "c still closes");
        // Its body, read whole meanwhile, is not dispatched; its response
        // closes the connection.
        assert!(
            !c_upload.dispatched(),
            "an evicted request is not dispatched"
        );
        assert!(c.responding());
        drop(c_evicted);
        drop(c_asked);
        drop(c_upload);
        drop(c);
        // Then d (2 s), then b (3 s).
        assert!(idle.close_oldest());
        tokio_test::assert_ready!(d_asked.poll());
        tokio_test::assert_pending!(b_evicted.poll());
        drop(d_asked);
        drop(d);
        assert!(idle.close_oldest());
        tokio_test::assert_ready!(b_evicted.poll());
        assert!(!b_upload.dispatched());
        drop(b_evicted);
        drop(b_upload);
        drop(b);
        assert_eq!((idle.len(), slots.available_permits()), (0, 4));
        assert!(!idle.close_oldest());
    }

    /// A body read whole is dispatched: its connection serves and is never
    /// evicted; a request without a body serves from its head.
    #[tokio::test(start_paused = true)]
    async fn a_dispatched_request_keeps_its_connection_open() {
        let idle = Arc::new(Idle::default());
        let slots = Arc::new(Semaphore::new(2));
        let (a, a_upload) = receiving(idle.register(slot(&slots)));
        let b = idle.register(slot(&slots));
        b.serving();
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        a_upload.received();
        assert!(a_upload.dispatched());
        assert!(!idle.close_oldest(), "both serve");
        tokio_test::assert_pending!(tokio_test::task::spawn(a_upload.evicted()).poll());
        assert!(!a.responding());
        // Answered and flushed, it waits: then it may be closed, not evicted.
        a.answered();
        a.flushed();
        assert!(idle.close_oldest());
        tokio_test::assert_ready!(tokio_test::task::spawn(a.asked_to_close()).poll());
        tokio_test::assert_pending!(tokio_test::task::spawn(a_upload.evicted()).poll());
    }

    /// A handler that answers without reading the body leaves no connection
    /// receiving: it serves once its response is ready.
    #[tokio::test(start_paused = true)]
    async fn a_response_ends_receiving() {
        let idle = Arc::new(Idle::default());
        let slots = Arc::new(Semaphore::new(1));
        let (a, _upload) = receiving(idle.register(slot(&slots)));
        assert!(!a.responding());
        assert!(!idle.close_oldest());
    }
}
