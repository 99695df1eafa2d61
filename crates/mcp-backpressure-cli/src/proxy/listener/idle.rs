//! Which connections wait for a request — new ones that have sent nothing
//! or half a head, kept-alive ones between requests — and for how long:
//! at the connection cap, the listener closes the one that has waited
//! longest to let a new connection in (as nginx reuses its idle
//! connections), so that clients holding connections without using them
//! cannot keep others out until `header_read_timeout`.
//!
//! A connection waits from when it is accepted, and again from when a
//! response has been written whole to the socket (its body dropped by
//! hyper, then everything flushed: [`TrackedIo`]); it serves from when
//! hyper hands us a request's head (the [`Tracked`] service is called)
//! until then. A connection asked to close closes at once (it is dropped)
//! if it still waits when its task sees the request: if a request started
//! meanwhile, it is served and the listener looks again. Both happen on
//! the connection's own task, under the connection's lock, so a request
//! that has started is never cut, and a response is never lost.

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

/// The listener's connections, by whether and since when they wait for a
/// request.
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a request since then.
    Waiting(Instant),
    /// Serving a request.
    Serving,
    /// Its response is written, perhaps not yet flushed to the socket.
    Answered,
    /// Asked to close; still waiting.
    Closing,
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
        });
        lock(&self.connections).insert(id, Arc::clone(&connection));
        Entry {
            idle: Arc::clone(self),
            id,
            connection,
            slot: Some(slot),
        }
    }

    /// Asks the connection that has waited longest for a request to close,
    /// unless one asked before still closes. Returns whether one closes.
    pub fn close_oldest(&self) -> bool {
        let connections = lock(&self.connections);
        let mut oldest: Option<(Instant, &Arc<Connection>)> = None;
        for connection in connections.values() {
            match *lock(&connection.state) {
                State::Closing => return true,
                State::Waiting(since) if oldest.is_none_or(|(at, _)| since < at) => {
                    oldest = Some((since, connection));
                }
                _ => {}
            }
        }
        let Some((since, connection)) = oldest else {
            return false;
        };
        *lock(&connection.state) = State::Closing;
        connection.close.notify_one();
        tracing::debug!(
            waited = ?since.elapsed(),
            "at the connection cap; closing the connection longest without a request"
        );
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
    /// A request's head arrived: serving. If the connection was asked to
    /// close, it is not any more.
    fn serving(&self) {
        let mut state = lock(&self.connection.state);
        let was = std::mem::replace(&mut *state, State::Serving);
        drop(state);
        if was == State::Closing {
            self.idle.changed.notify_one();
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

/// The app, as hyper's service, marking its connection serving while a
/// request is served.
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

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.entry.serving();
        let response = self.app.call(request);
        let entry = Arc::clone(&self.entry);
        Box::pin(async move {
            let response = response.await?;
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
}
