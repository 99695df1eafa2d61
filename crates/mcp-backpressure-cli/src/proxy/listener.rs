//! The HTTP proxy's listener: the accept loop and hyper's HTTP/1 server, in
//! place of `axum::serve`, so that a client cannot hold the proxy open or
//! fill it:
//!
//! - every accepted socket gets `TCP_NODELAY`: the proxy writes a response
//!   as it comes (an SSE event, then the end of the chunked body), and with
//!   Nagle's algorithm a small write waits for the ACK of the one before it,
//!   which the client delays by up to 40 ms;
//! - at most [`ListenerSettings::max_connections`] connections are open at
//!   once. At the cap the proxy stops accepting until one closes: new
//!   connections wait in the kernel's accept backlog (and are served in
//!   turn, or time out on the client's side) rather than being accepted and
//!   closed at once — the cap bounds memory and file descriptors, and a
//!   burst of clients slows down instead of failing;
//! - a request's headers must arrive within
//!   [`ListenerSettings::header_read_timeout`], counted from when the
//!   connection starts waiting for them: on a new connection, and after
//!   each response on a kept-alive one, so an idle connection is closed
//!   after the same time (hyper's `header_read_timeout`, which covers both;
//!   see the tests). The request *body* is bounded in size and time where it
//!   is read (`body::read_body`);
//! - a connection buffers at most [`MAX_BUF_SIZE`] bytes of what it reads
//!   (headers included) and of what it writes;
//! - on shutdown, the listener closes, open connections finish their
//!   in-flight request (hyper's graceful shutdown: idle ones close at once),
//!   and whatever is still open after [`ListenerSettings::grace`] is dropped.
//!
//! HTTP/1.1 only, no upgrades: MCP's Streamable HTTP needs neither HTTP/2
//! nor WebSockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::limits::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS};

/// The most a connection buffers of what it reads or writes, in bytes: a
/// request's headers must fit (hyper answers 431 otherwise), bodies pass
/// through in chunks of at most this size.
pub const MAX_BUF_SIZE: usize = 64 * 1024;

/// The default [`ListenerSettings::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// At the connection cap, the warning is logged at most this often.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error of the listener itself
/// (out of file descriptors, mostly) before it accepts again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listener's bounds.
#[derive(Clone, Debug)]
pub struct ListenerSettings {
    /// Client connections open at once (at least 1). Default 1024
    /// (`--max-connections`): far above what one MCP server's clients open,
    /// far below the usual file descriptor limit, and at most 1024 ×
    /// [`MAX_BUF_SIZE`] × 2 of connection buffers.
    pub max_connections: usize,
    /// Longest time to receive a request's headers, and the longest a kept
    /// alive connection may stay idle between requests. Default 10 s
    /// (`--header-read-timeout`): any client that means it sends its headers
    /// at once; a slow one on a bad link still gets seconds.
    pub header_read_timeout: Duration,
    /// After shutdown is asked, how long open connections get to finish
    /// before they are dropped. Default [`DEFAULT_GRACE`], 5 s: an answer in
    /// progress passes, an event stream that would stay open for ever does
    /// not hold up the exit.
    pub grace: Duration,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            grace: DEFAULT_GRACE,
        }
    }
}

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` completes, then
/// shuts down gracefully (see the module's documentation). Returns once
/// every connection is closed, at most `settings.grace` after `shutdown`.
///
/// Errors of single connections are logged, not returned; so are errors of
/// `accept` (the loop pauses briefly and goes on). The result is an error
/// only if the listener's address cannot be read.
///
/// # Cancel safety
///
/// Dropping the future closes the listener and every connection at once
/// (their tasks are aborted).
pub async fn serve(
    listener: TcpListener,
    settings: ListenerSettings,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let max_connections = settings.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let builder = builder(&settings);
    let (closing, closing_rx) = watch::channel(false);
    // Dropping the set (when this future is dropped) aborts every connection.
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut last_cap_warning: Option<Instant> = None;
    tracing::debug!(%local, max_connections, ?settings, "accepting connections");
    'accept: loop {
        // A slot first: at the cap, nothing is accepted until one frees.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    tracing::warn!(
                        max_connections,
                        "at the connection cap; not accepting until a connection closes"
                    );
                    last_cap_warning = Some(Instant::now());
                }
                tokio::select! {
                    () = &mut shutdown => break 'accept,
                    permit = Arc::clone(&slots).acquire_owned() => {
                        permit.expect("the connection semaphore is never closed")
                    }
                }
            }
        };
        let (stream, peer) = loop {
            tokio::select! {
                () = &mut shutdown => break 'accept,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(error) if is_connection_error(&error) => {
                        tracing::debug!(%error, "a connection failed before it was accepted");
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot accept connections; pausing");
                        tokio::select! {
                            () = &mut shutdown => break 'accept,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                },
            }
        };
        // Forget the connections that ended (their results are nothing).
        while let Some(ended) = connections.try_join_next() {
            log_panic(ended);
        }
        connections.spawn(connection(
            stream,
            peer,
            builder.clone(),
            app.clone(),
            closing_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let open = connections.len();
    tracing::debug!(open, "listener closed; connections finishing");
    // Tells every connection to finish its request in flight and close.
    let _ = closing.send(true);
    let drained = tokio::time::timeout(settings.grace, async {
        while let Some(ended) = connections.join_next().await {
            log_panic(ended);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?settings.grace,
            "connections still open after the grace; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// hyper's HTTP/1 server with the listener's bounds.
fn builder(settings: &ListenerSettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    builder
}

/// Serves one connection until it closes, or until `closing`: then finishes
/// the request in flight (if any) and closes. Holds `_slot` until then.
///
/// # Cancel safety
///
/// Dropping the future closes the connection at once.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    builder: http1::Builder,
    app: axum::Router,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    tracing::trace!(%peer, "connection accepted");
    let service = TowerToHyperService::new(app);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = closing.wait_for(|closing| *closing) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => tracing::trace!(%peer, "connection closed"),
        Err(error) if error.is_timeout() => {
            tracing::debug!(%peer, "connection closed: no request headers in time");
        }
        Err(error) => tracing::debug!(%peer, %error, "connection closed"),
    }
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(%error, "a connection's task panicked");
    }
}
