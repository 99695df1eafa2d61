//! `mcp-backpressure proxy [LIMITS] -- COMMAND [ARGS…]`: MCP over stdio to the
//! parent, COMMAND as a child over stdio, newline-delimited JSON both ways.
//!
//! Four tasks move bytes: the client reader (this proxy's stdin), the upstream
//! writer (the child's stdin), the upstream reader (the child's stdout) and the
//! client writer (this proxy's stdout). The writers drain bounded channels, so
//! a peer that stops reading stops the proxy from reading the other side: the
//! memory held is bounded by the channel capacities times `max_message_bytes`.
//! The child's stderr is inherited: its logs land next to the proxy's.
//!
//! The session ends when:
//! - the client closes stdin (or the proxy gets SIGTERM/SIGINT): every request
//!   still in flight is cancelled upstream (`notifications/cancelled`), the
//!   child's stdin is closed, and the child gets a grace period to exit before
//!   it is killed;
//! - the upstream closes its stdout or exits: every pending request gets a
//!   JSON-RPC error, and the proxy exits with a message and status 1.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc};

use super::framing::{self, CANCELLED, INTERNAL_ERROR, INVALID_REQUEST, Kind, Line, PARSE_ERROR};
use super::session::{Admission, Cancelled, Gate, InFlight};

/// Lines buffered towards each peer.
const CHANNEL: usize = 64;
/// Guarded requests that may be waiting for admission or for their overload
/// error to be written, beyond the queue; past that, the proxy stops reading
/// the client until some are done.
const MAX_PENDING_ADMISSIONS: usize = 1024;
/// How long the child gets to exit after its stdin is closed.
const GRACE: Duration = Duration::from_secs(5);
/// How long output still in flight gets to reach the client at the end.
const FLUSH: Duration = Duration::from_secs(2);

type Lines = mpsc::Sender<Vec<u8>>;

/// Runs the stdio proxy until the client or the upstream goes away.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future kills the child (`kill_on_drop`)
/// without cancelling anything upstream. Run it to completion.
pub async fn run(gate: Arc<Gate>, command: &[String]) -> anyhow::Result<ExitCode> {
    let (program, args) = command.split_first().context("no upstream command given")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the upstream server `{program}`"))?;
    let pid = child.id();
    tracing::info!(?pid, command = ?command, "started the upstream server");
    let child_stdin = child.stdin.take().context("the child's stdin")?;
    let child_stdout = child.stdout.take().context("the child's stdout")?;

    let inflight = InFlight::new(gate.clone());
    let max = gate.settings.max_message_bytes;
    let (to_client, client_rx) = mpsc::channel(CHANNEL);
    let (to_upstream, upstream_rx) = mpsc::channel(CHANNEL);
    let client_writer = tokio::spawn(write_lines(client_output(), client_rx));
    tokio::spawn(write_lines(child_stdin, upstream_rx));
    let mut upstream_reader = tokio::spawn(read_upstream(
        child_stdout,
        inflight.clone(),
        to_client.clone(),
        max,
    ));

    let ending = {
        let client = read_client(
            client_input(),
            inflight.clone(),
            to_client.clone(),
            to_upstream.clone(),
        );
        tokio::select! {
            result = client => Ending::Client(result.err()),
            () = shutdown_signal() => Ending::Client(None),
            _ = &mut upstream_reader => Ending::Upstream,
            status = child.wait() => Ending::Exited(status.ok()),
        }
    };

    match ending {
        Ending::Client(error) => {
            match error {
                Some(error) => tracing::warn!(%error, "cannot read from the client; shutting down"),
                None => tracing::info!("the client closed the session; shutting down"),
            }
            for pending in inflight.drain(None).into_iter().filter(|p| p.forwarded) {
                let cancel = framing::cancellation(&pending.id, "the client disconnected");
                if to_upstream.send(framing::to_line(&cancel)).await.is_err() {
                    break;
                }
            }
            // Closing the last sender closes the child's stdin once the
            // cancellations are written.
            drop(to_upstream);
            let status = wait_or_kill(&mut child).await;
            tracing::info!(?status, "the upstream server stopped");
            let _ = tokio::time::timeout(FLUSH, upstream_reader).await;
            drop(to_client);
            let _ = tokio::time::timeout(FLUSH, client_writer).await;
            Ok(ExitCode::SUCCESS)
        }
        Ending::Upstream | Ending::Exited(_) => {
            drop(to_upstream);
            let status = match ending {
                Ending::Exited(status) => {
                    // Whatever the upstream wrote before it exited still reaches the client.
                    let _ = tokio::time::timeout(FLUSH, upstream_reader).await;
                    status
                }
                _ => wait_or_kill(&mut child).await,
            };
            let what = describe(status);
            let message = format!("mcp-backpressure: the upstream server {what} before answering");
            for pending in inflight.drain(None) {
                let error = framing::error_response(&pending.id, INTERNAL_ERROR, &message);
                if to_client.send(framing::to_line(&error)).await.is_err() {
                    break;
                }
            }
            drop(to_client);
            let _ = tokio::time::timeout(FLUSH, client_writer).await;
            anyhow::bail!("the upstream server `{program}` {what}")
        }
    }
}

/// This process's stdin: read from the event loop when it is a pipe (as it
/// is under an MCP host), else through tokio's blocking-thread `stdin`.
fn client_input() -> Box<dyn AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned()
            && let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        {
            return Box::new(pipe);
        }
    }
    Box::new(tokio::io::stdin())
}

/// This process's stdout, likewise.
fn client_output() -> Box<dyn AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned()
            && let Ok(pipe) = tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        {
            return Box::new(pipe);
        }
    }
    Box::new(tokio::io::stdout())
}

enum Ending {
    /// The client went away (or the read failed, with the error).
    Client(Option<std::io::Error>),
    /// The upstream closed its stdout.
    Upstream,
    /// The upstream exited.
    Exited(Option<ExitStatus>),
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("exited ({status})"),
        None => "closed its output".to_owned(),
    }
}

/// Waits up to [`GRACE`] for the child to exit, then kills it.
///
/// # Cancel safety
///
/// Cancel safe (the child is left as it is).
async fn wait_or_kill(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(?GRACE, "the upstream server did not exit; killing it");
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
///
/// # Cancel safety
///
/// Cancel safe.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes lines from `rx` until every sender is gone, then flushes and drops
/// the writer (closing the pipe). Ends early if a write fails.
///
/// # Cancel safety
///
/// Not cancel safe: a line may be half written. Run it as a task.
async fn write_lines<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        let written = async {
            writer.write_all(&line).await?;
            if rx.is_empty() {
                writer.flush().await?;
            }
            std::io::Result::Ok(())
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "the reader of this pipe went away");
            return;
        }
    }
    let _ = writer.flush().await;
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Reads the client's messages until EOF: admits guarded requests, answers
/// rejections and bad input itself, forwards everything else in order.
///
/// # Cancel safety
///
/// Not cancel safe (see [`framing::read_line`]): dropping it loses a
/// partly read line, which is fine only when the session is ending.
async fn read_client<R: AsyncRead + Unpin>(
    input: R,
    inflight: InFlight,
    to_client: Lines,
    to_upstream: Lines,
) -> std::io::Result<()> {
    let gate = inflight.gate().clone();
    let max = gate.settings.max_message_bytes;
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_ADMISSIONS));
    loop {
        let mut line = match framing::read_line(&mut reader, max).await? {
            Line::Eof => return Ok(()),
            Line::TooLong { len } => {
                tracing::warn!(len, max, "message from the client too large; rejected");
                let message = format!(
                    "message of {len} bytes exceeds the proxy's max_message_bytes ({max} bytes)"
                );
                let error = framing::error_response(&Value::Null, INVALID_REQUEST, &message);
                let _ = to_client.send(framing::to_line(&error)).await;
                continue;
            }
            Line::Message(line) if is_blank(&line) => continue,
            Line::Message(line) => line,
        };
        let message: Value = match serde_json::from_slice(&line) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "message from the client is not JSON; answered -32700");
                let text = format!("Parse error: {error}");
                let error = framing::error_response(&Value::Null, PARSE_ERROR, &text);
                let _ = to_client.send(framing::to_line(&error)).await;
                continue;
            }
        };
        line.push(b'\n');
        match Kind::of(&message) {
            Kind::Request { id, method } if gate.settings.is_guarded(method) => {
                let admission = Box::pin(inflight.enqueue("", id).admit());
                admit(admission, line, &pending, &to_client, &to_upstream).await;
                continue;
            }
            Kind::Request { id, .. } => {
                inflight.track("", id);
            }
            Kind::Notification { method } if method == CANCELLED => {
                if let Some(id) = framing::cancelled_id(&message)
                    && let Cancelled::Queued(left) = inflight.cancel("", id)
                {
                    tracing::debug!(%id, "cancelled while queued; not forwarded");
                    // Read on only once it has left the limiter's queue.
                    left.wait().await;
                    continue;
                }
            }
            _ => {}
        }
        if to_upstream.send(line).await.is_err() {
            // The upstream is gone; the main task is ending the session.
            std::future::pending::<()>().await;
        }
    }
}

/// Admits one guarded request: at once, in order, when a slot is free or the
/// answer is immediate; otherwise on its own task, while the client reader
/// goes on.
///
/// # Cancel safety
///
/// Cancel safe as far as the slots go (the admission leaves the queue when
/// dropped); the request is then neither forwarded nor answered.
async fn admit(
    mut admission: std::pin::Pin<Box<impl Future<Output = Admission> + Send + 'static>>,
    line: Vec<u8>,
    pending: &Arc<Semaphore>,
    to_client: &Lines,
    to_upstream: &Lines,
) {
    async fn settle(admission: Admission, line: Vec<u8>, to_client: &Lines, to_upstream: &Lines) {
        match admission {
            Admission::Admitted(_) => {
                let _ = to_upstream.send(line).await;
            }
            Admission::Rejected(error) => {
                let _ = to_client.send(framing::to_line(&error)).await;
            }
            Admission::Cancelled => {}
        }
    }
    if let Some(now) = futures_util::future::poll_immediate(&mut admission).await {
        settle(now, line, to_client, to_upstream).await;
        return;
    }
    let Ok(slot) = pending.clone().acquire_owned().await else {
        return;
    };
    let (to_client, to_upstream) = (to_client.clone(), to_upstream.clone());
    tokio::spawn(async move {
        let _slot = slot;
        settle(admission.await, line, &to_client, &to_upstream).await;
    });
}

/// Reads the upstream's messages until EOF: frees the slots of the responses
/// that pass, drops (and logs) lines that are not JSON, forwards the rest.
///
/// # Cancel safety
///
/// Not cancel safe (see [`framing::read_line`]). Run it as a task.
async fn read_upstream<R: AsyncRead + Unpin>(
    output: R,
    inflight: InFlight,
    to_client: Lines,
    max: usize,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, output);
    loop {
        let mut line = match framing::read_line(&mut reader, max).await {
            Ok(Line::Eof) => return,
            Err(error) => {
                tracing::error!(%error, "cannot read from the upstream server");
                return;
            }
            Ok(Line::TooLong { len }) => {
                tracing::error!(len, max, "message from the upstream too large; dropped");
                continue;
            }
            Ok(Line::Message(line)) if is_blank(&line) => continue,
            Ok(Line::Message(line)) => line,
        };
        match serde_json::from_slice::<Value>(&line) {
            Ok(message) => {
                for id in framing::response_ids(&message) {
                    inflight.complete("", id);
                }
            }
            Err(error) => {
                let start = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                tracing::warn!(%error, line = %start, "the upstream wrote a line that is not JSON; dropped");
                continue;
            }
        }
        line.push(b'\n');
        if to_client.send(line).await.is_err() {
            // The client is gone: keep reading so the upstream never blocks
            // while it shuts down.
            while let Ok(n) = reader.fill_buf().await.map(|b| b.len()) {
                if n == 0 {
                    return;
                }
                reader.consume(n);
            }
            return;
        }
    }
}
