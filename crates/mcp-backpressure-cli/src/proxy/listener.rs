//! The HTTP proxy's listener: the accept loop and hyper's HTTP/1 server, in
//! place of `axum::serve`, so that a client cannot hold the proxy open or
//! fill it:
//!
//! - every accepted socket gets `TCP_NODELAY`: the proxy writes a response
//!   as it comes (an SSE event, then the end of the chunked body), and with
//!   Nagle's algorithm a small write waits for the ACK of the one before it,
//!   which the client delays by up to 40 ms;
//! - at most [`ListenerSettings::max_connections`] connections are served
//!   at once. At the cap, the next connection is accepted and held (not
//!   read) while the connection longest without progress — one that has
//!   sent nothing, or half a head, or is kept alive between requests
//!   (since then), or is receiving a request's body (since its last body
//!   byte) — is closed to make room ([`idle`]): clients that open
//!   connections and do not use them, or stall their uploads, cannot keep
//!   others out. A connection receiving a body is evicted with 503 and
//!   `Connection: close`, before anything of its request is admitted or
//!   forwarded; once a request's body is read whole and the request
//!   dispatched, its connection is serving and is never closed for
//!   another. If every connection is serving a request, the held one waits
//!   until one closes or stops serving, and further ones wait in the kernel's accept
//!   backlog (and are served in turn, or time out on the client's side)
//!   rather than being accepted and closed at once — the cap bounds memory
//!   and file descriptors (`max_connections` + 1 sockets), and a burst of
//!   clients slows down instead of failing;
//! - a request's headers must arrive within
//!   [`ListenerSettings::header_read_timeout`], counted from when the
//!   connection starts waiting for them: on a new connection, and after
//!   each response on a kept-alive one, so an idle connection is closed
//!   after the same time (hyper's `header_read_timeout`, which covers both;
//!   see the tests). The request *body* is bounded in size and time where it
//!   is read (`body::read_body`): its size, its pace and its total time;
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::idle::{Entry, Idle, Tracked, TrackedIo};
use super::limits::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS};

pub mod idle;

/// The most a connection buffers of what it reads or writes, in bytes: a
/// request's headers must fit (hyper answers 431 otherwise: 32 KiB is about
/// what nginx allows, and room for any bearer token), bodies pass through
/// in chunks of at most this size. Memory for connections is then at most
/// about `max_connections` × 2 × 32 KiB (64 MiB at the default cap), on top
/// of the request bodies' (`body`: each connection's own `small_body_bytes`
/// and the shared `budget::Budget`).
pub const MAX_BUF_SIZE: usize = 32 * 1024;

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
    /// Client connections served at once (at least 1; one more may be
    /// accepted and held at the cap, see the module's documentation).
    /// Default 1024
    /// (`--max-connections`): far above what one MCP server's clients open
    /// at once, and at most 64 MiB of connection buffers (see
    /// [`MAX_BUF_SIZE`]). Each connection is a file descriptor: where the
    /// soft limit on open files is 1024 too (`ulimit -n`), raise it or lower
    /// the cap; when `accept` fails for want of descriptors the loop pauses
    /// briefly and retries.
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
    let idle = Arc::new(Idle::default());
    let builder = builder(&settings);
    let (closing, closing_rx) = watch::channel(false);
    // Dropping the set (when this future is dropped) aborts every connection.
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut last_cap_warning: Option<Instant> = None;
    tracing::debug!(%local, max_connections, ?settings, "accepting connections");
    'accept: loop {
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
        // A slot: at the cap, the connection longest without a request
        // makes room; if none waits for one, this one waits (and the next
        // ones in the backlog) until a slot frees.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => loop {
                // A slot may have freed meanwhile (the wait below may have
                // ended on `changed` first): take it rather than close
                // another connection.
                if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                    break permit;
                }
                if !idle.close_oldest()
                    && last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY)
                {
                    tracing::warn!(
                        max_connections,
                        "at the connection cap, every connection serving a request; \
                         not accepting until one closes or is idle"
                    );
                    last_cap_warning = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'accept,
                    permit = Arc::clone(&slots).acquire_owned() => {
                        break permit.expect("the connection semaphore is never closed");
                    }
                    () = idle.changed() => {}
                }
            },
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
            idle.register(permit),
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
        .max_header_size(MAX_BUF_SIZE)
        .keep_alive(true);
    builder
}

/// Serves one connection until it closes, until the listener asks it to
/// close while it waits for a request (then it closes at once; one evicted
/// while receiving a body answers 503 and closes, see [`idle`]), or until
/// `closing` (then it finishes the request in flight, if any, and closes).
/// Holds its `entry` (and slot) until then.
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
    entry: Entry,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    tracing::trace!(%peer, "connection accepted");
    let entry = Arc::new(entry);
    let service = Tracked::new(app, Arc::clone(&entry));
    let io = TokioIo::new(TrackedIo::new(stream, Arc::clone(&entry)));
    let mut conn = pin!(builder.serve_connection(io, service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = async {
            // Also when the sender is gone: the server is going away.
            let _ = closing.wait_for(|closing| *closing).await;
        } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = entry.asked_to_close() => {
            tracing::debug!(%peer, "connection closed to make room under the cap");
            return;
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

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1, paused time: hyper's timer is tokio's, so
    //! the timeouts pass in virtual time, and every wait is bounded by it.

    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{Notify, mpsc, oneshot};
    use tokio::task::JoinHandle;
    use tokio::time::{Instant, timeout};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    /// Virtual time: passes at once when nothing else can happen.
    const PATIENCE: Duration = Duration::from_secs(600);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<io::Result<()>>,
        /// `/hold` tells here that it started, then waits for `release`.
        held: mpsc::UnboundedReceiver<()>,
        release: Arc<Notify>,
    }

    impl Server {
        async fn start(settings: ListenerSettings) -> Self {
            let (started, held) = mpsc::unbounded_channel();
            let release = Arc::new(Notify::new());
            let hold = {
                let release = Arc::clone(&release);
                move || async move {
                    let _ = started.send(());
                    release.notified().await;
                    "released"
                }
            };
            let app = axum::Router::new()
                .route("/", get(|| async { "ok" }))
                .route("/hold", get(hold))
                .route("/never", get(std::future::pending::<&str>));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, settings, app, async move {
                let _ = stopped.await;
            }));
            Self {
                addr,
                stop: Some(stop),
                task,
                held,
                release,
            }
        }

        async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).await.unwrap()
        }

        fn shut_down(&mut self) {
            self.stop.take().unwrap().send(()).unwrap();
        }
    }

    fn settings(max_connections: usize, header_read_timeout: Duration) -> ListenerSettings {
        ListenerSettings {
            max_connections,
            header_read_timeout,
            ..ListenerSettings::default()
        }
    }

    /// Reads until the peer closes (or resets); returns what came.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = timeout(PATIENCE, async {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                out.extend_from_slice(&buf[..n]);
            }
        });
        read.await.expect("the server closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads one response with a short body (`ok`, `released`).
    async fn response(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0; 4096];
        timeout(PATIENCE, async {
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before a response: {out:?}");
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if text.ends_with("\r\n\r\nok") || text.ends_with("\r\n\r\nreleased") {
                    return;
                }
            }
        })
        .await
        .expect("a response");
        String::from_utf8(out).unwrap()
    }

    fn within(elapsed: Duration, low: Duration, high: Duration) {
        assert!(
            low <= elapsed && elapsed <= high,
            "{elapsed:?} not in {low:?}..={high:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_header_line_is_closed_at_the_header_timeout() {
        let server = Server::start(settings(64, 10 * SECOND)).await;
        let started = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..20 {
            let mut client = server.connect().await;
            client
                .write_all(b"POST /mcp HTTP/1.1\r\nhost: te")
                .await
                .unwrap();
            clients.push(client);
        }
        for client in &mut clients {
            assert_eq!(until_closed(client).await, "");
        }
        within(started.elapsed(), 10 * SECOND, 10 * SECOND + SECOND / 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_is_total_not_per_byte() {
        let server = Server::start(settings(64, 10 * SECOND)).await;
        let mut client = server.connect().await;
        let started = Instant::now();
        // A byte a second: never quite a request.
        for byte in b"GET / HTTP/1.1\r\nhost: a-very-slow-client\r\n".iter() {
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(SECOND).await;
            if started.elapsed() > 10 * SECOND {
                break;
            }
        }
        assert_eq!(until_closed(&mut client).await, "");
        within(started.elapsed(), 10 * SECOND, 11 * SECOND + SECOND / 10);
    }

    /// hyper's `header_read_timeout` starts whenever the connection waits
    /// for a request's head, after a response too: an idle kept-alive
    /// connection cannot hold a slot for longer (no idle timeout of our own
    /// is needed).
    #[tokio::test(start_paused = true)]
    async fn an_idle_kept_alive_connection_is_closed_at_the_header_timeout() {
        let server = Server::start(settings(64, 10 * SECOND)).await;
        let mut client = server.connect().await;
        for _ in 0..3 {
            client.write_all(GET).await.unwrap();
            assert!(response(&mut client).await.starts_with("HTTP/1.1 200 OK"));
            tokio::time::sleep(9 * SECOND).await;
        }
        let idle = Instant::now();
        assert_eq!(until_closed(&mut client).await, "");
        within(idle.elapsed(), SECOND, SECOND + SECOND / 10);
    }

    /// Connections that send nothing, or half a head, or sit idle between
    /// requests, hold the cap only until a new connection needs a slot:
    /// the one that has waited longest is closed for it.
    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_connection_longest_without_a_request_makes_room() {
        let server = Server::start(settings(3, 600 * SECOND)).await;
        let mut silent = server.connect().await;
        tokio::time::sleep(SECOND).await;
        let mut half = server.connect().await;
        half.write_all(b"POST /mcp HTTP/1.1\r\nhost: te")
            .await
            .unwrap();
        tokio::time::sleep(SECOND).await;
        let mut kept = server.connect().await;
        kept.write_all(GET).await.unwrap();
        assert!(response(&mut kept).await.starts_with("HTTP/1.1 200 OK"));
        tokio::time::sleep(SECOND).await;
        // At the cap: each new connection closes the oldest waiting one.
        let mut new = server.connect().await;
        new.write_all(GET).await.unwrap();
        assert!(response(&mut new).await.starts_with("HTTP/1.1 200 OK"));
        assert_eq!(until_closed(&mut silent).await, "");
        let mut newer = server.connect().await;
        newer.write_all(GET).await.unwrap();
        assert!(response(&mut newer).await.starts_with("HTTP/1.1 200 OK"));
        assert_eq!(until_closed(&mut half).await, "");
        // Then the kept-alive one (idle since its response), not the new
        // ones (idle since theirs, later).
        let mut newest = server.connect().await;
        newest.write_all(GET).await.unwrap();
        assert!(response(&mut newest).await.starts_with("HTTP/1.1 200 OK"));
        assert_eq!(until_closed(&mut kept).await, "");
        newer.write_all(GET).await.unwrap();
        assert!(response(&mut newer).await.starts_with("HTTP/1.1 200 OK"));
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_with_every_connection_serving_the_next_waits() {
        let mut server = Server::start(settings(2, 600 * SECOND)).await;
        let mut a = server.connect().await;
        let mut b = server.connect().await;
        for client in [&mut a, &mut b] {
            client
                .write_all(b"GET /hold HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .unwrap();
            server.held.recv().await.unwrap();
        }
        // The third is held, not read: a and b are serving.
        let mut c = server.connect().await;
        c.write_all(GET).await.unwrap();
        let mut buf = [0; 64];
        assert!(
            timeout(30 * SECOND, c.read(&mut buf)).await.is_err(),
            "the third connection was served while two were serving"
        );
        // One answers: its connection, idle again, makes room for c (the
        // answer is delivered whole first).
        server.release.notify_one();
        let released = if let Ok(answer) = timeout(PATIENCE, response(&mut a)).await {
            (answer, &mut a)
        } else {
            (response(&mut b).await, &mut b)
        };
        assert!(released.0.ends_with("released"), "{:?}", released.0);
        assert!(response(&mut c).await.starts_with("HTTP/1.1 200 OK"));
        assert_eq!(until_closed(released.1).await, "");
    }

    #[tokio::test(start_paused = true)]
    async fn headers_over_the_buffer_are_refused() {
        let server = Server::start(settings(64, 10 * SECOND)).await;
        let mut client = server.connect().await;
        let half = "x".repeat(MAX_BUF_SIZE / 2);
        let request = format!("GET / HTTP/1.1\r\nhost: test\r\nx-half: {half}\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        assert!(response(&mut client).await.starts_with("HTTP/1.1 200 OK"));
        let big = "x".repeat(MAX_BUF_SIZE);
        let request = format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {big}\r\n\r\n");
        // The server may close before it has read everything.
        let _ = client.write_all(request.as_bytes()).await;
        let answer = until_closed(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_finishes_requests_in_flight_and_stops_accepting() {
        let mut server = Server::start(settings(64, 10 * SECOND)).await;
        let mut idle = server.connect().await;
        idle.write_all(GET).await.unwrap();
        assert!(response(&mut idle).await.starts_with("HTTP/1.1 200 OK"));
        let mut busy = server.connect().await;
        busy.write_all(b"GET /hold HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        server.held.recv().await.unwrap();
        let started = Instant::now();
        server.shut_down();
        // The idle connection closes at once; new ones are refused.
        assert_eq!(until_closed(&mut idle).await, "");
        assert!(started.elapsed() < SECOND / 10);
        let refused = timeout(PATIENCE, async {
            while TcpStream::connect(server.addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        refused.await.expect("the listener was closed");
        // The request in flight is answered, then its connection closes.
        server.release.notify_one();
        let answer = until_closed(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        assert!(answer.ends_with("released"), "{answer:?}");
        timeout(PATIENCE, server.task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < DEFAULT_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_still_open_after_the_grace_are_dropped() {
        let mut server = Server::start(settings(64, 10 * SECOND)).await;
        let mut stuck = server.connect().await;
        stuck
            .write_all(b"GET /never HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        // Nothing comes back: the handler never answers.
        let mut buf = [0; 64];
        assert!(timeout(SECOND, stuck.read(&mut buf)).await.is_err());
        let started = Instant::now();
        server.shut_down();
        timeout(PATIENCE, server.task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        within(
            started.elapsed(),
            DEFAULT_GRACE,
            DEFAULT_GRACE + SECOND / 10,
        );
        assert_eq!(until_closed(&mut stuck).await, "");
    }
}
