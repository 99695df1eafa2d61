//! `mcp-backpressure proxy [LIMITS] -- COMMAND [ARGS…]`: MCP over stdio to the
//! parent, COMMAND as a child over stdio, newline-delimited JSON both ways.
//!
//! Four tasks move bytes: the client reader (this proxy's stdin), the upstream
//! writer (the child's stdin), the upstream reader (the child's stdout) and the
//! client writer (this proxy's stdout). Every decision is the [`Router`]'s;
//! every line forwarded is the router's re-framing of what it parsed.
//!
//! Memory is bounded in bytes: each direction has a [`Budget`] of
//! `buffer_bytes`, and every message held — read and not yet written,
//! waiting for admission, or an answer of the proxy's own — holds a lease on
//! it. A peer that stops reading stops the proxy from reading the other side.
//! The child's stderr is inherited: its logs land next to the proxy's.
//!
//! The session ends when:
//! - the client closes stdin (or the proxy gets SIGTERM/SIGINT): queued calls
//!   leave the queue, every request still in flight is cancelled upstream
//!   (`notifications/cancelled`), the child's stdin is closed, and the child
//!   gets a grace period to exit before it is killed;
//! - the upstream closes its stdout or exits: every pending request gets a
//!   JSON-RPC error, and the proxy exits with a message and status 1.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc};

use mcp_backpressure::Outcome;

use super::budget::{Budget, Lease};
use super::error::{self, ProxyError};
use super::gate::Gate;
use super::inflight::{Admission, Queued, Scope};
use super::refusal::{Asked, Refusal};
use super::router::{FromClient, FromUpstream, Router};
use super::tasks::{Due, OWN_POLL_TIMEOUT};
use super::wire::line::{self, Line};
use super::wire::message::{RequestId, answerable_id};
use super::wire::scan::{ScanResult, TopLevelScanner};

/// Messages queued towards each peer (their bytes are bounded by the budget).
const CHANNEL: usize = 1024;
/// How long the child gets to exit after its stdin is closed.
const GRACE: Duration = Duration::from_secs(5);
/// How long output still in flight gets to reach the client at the end.
const FLUSH: Duration = Duration::from_secs(2);

/// One line on its way to a peer, with the bytes it holds of the budget.
struct Out {
    line: Vec<u8>,
    _lease: Lease,
}

type Lines = mpsc::Sender<Out>;

/// The two directions' budgets and channels.
#[derive(Clone)]
struct Pipes {
    to_client: Lines,
    to_upstream: Lines,
    client_budget: Budget,
    upstream_budget: Budget,
}

/// Sends a message of the proxy's own, once `budget` has room for it.
/// Returns whether the peer's writer is still there.
async fn send_value(to: &Lines, budget: &Budget, value: &(impl serde::Serialize + ?Sized)) -> bool {
    let line = error::to_line(value);
    let lease = budget.reserve(line.len()).await;
    to.send(Out {
        line,
        _lease: lease,
    })
    .await
    .is_ok()
}

impl Pipes {
    /// Sends a line of the proxy's own to the client (waits for budget).
    async fn answer(&self, value: &(impl serde::Serialize + ?Sized)) {
        send_value(&self.to_client, &self.client_budget, value).await;
    }
}

/// Runs the stdio proxy until the client or the upstream goes away.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future kills the child (`kill_on_drop`)
/// without cancelling anything upstream. Run it to completion.
pub async fn run(gate: Arc<Gate>, command: &[String]) -> anyhow::Result<ExitCode> {
    let (program, args) = command.split_first().context("no upstream command given")?;
    let mut command_line = Command::new(program);
    command_line
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // Its own process group: a signal sent to the proxy's group (a shell's
    // `kill -HUP %1`, Ctrl-C in a terminal) reaches the proxy alone, which
    // reloads on SIGHUP and, on SIGINT or SIGTERM, cancels what is in flight
    // and closes the upstream's stdin — instead of the upstream dying of a
    // signal meant for the proxy. If it does not exit within the grace, its
    // whole group is killed. (A proxy killed with SIGKILL cannot do that:
    // the upstream then sees its stdin close, as before.)
    #[cfg(unix)]
    command_line.process_group(0);
    let mut child = command_line
        .spawn()
        .with_context(|| format!("cannot start the upstream server `{program}`"))?;
    let pid = child.id();
    tracing::info!(?pid, command = ?command, "started the upstream server");
    let child_stdin = child.stdin.take().context("the child's stdin")?;
    let child_stdout = child.stdout.take().context("the child's stdout")?;

    let router = Router::new(gate.clone());
    let (to_client, client_rx) = mpsc::channel(CHANNEL);
    let (to_upstream, upstream_rx) = mpsc::channel(CHANNEL);
    let pipes = Pipes {
        to_client,
        to_upstream,
        client_budget: Budget::new(gate.settings.buffer_bytes),
        upstream_budget: Budget::new(gate.settings.buffer_bytes),
    };
    let client_writer = tokio::spawn(write_lines(client_output(), client_rx));
    tokio::spawn(write_lines(child_stdin, upstream_rx));
    // The upstream reader answers the upstream's own oversized requests, but
    // must not keep the child's stdin open: it holds a weak sender.
    let mut upstream_reader = tokio::spawn(read_upstream(
        child_stdout,
        router.clone(),
        pipes.clone(),
        pipes.to_upstream.downgrade(),
    ));

    // The task holds' timers: TTLs, and the proxy's own polls of tasks
    // nobody asked about for their poll interval.
    let task_timers = tokio::spawn(router.tasks().clone().drive({
        let router = router.clone();
        let to_upstream = pipes.to_upstream.downgrade();
        let budget = pipes.upstream_budget.clone();
        move |due| own_poll(&router, &to_upstream, &budget, &due)
    }));

    let ending = {
        let client = read_client(client_input(), router.clone(), pipes.clone());
        tokio::select! {
            result = client => Ending::Client(result.err()),
            () = shutdown_signal() => Ending::Signal,
            _ = &mut upstream_reader => Ending::Upstream,
            status = child.wait() => Ending::Exited(status.ok()),
        }
    };
    task_timers.abort();
    let Pipes {
        to_client,
        to_upstream,
        upstream_budget,
        client_budget,
    } = pipes;

    match ending {
        Ending::Client(_) | Ending::Signal => {
            let signalled = matches!(ending, Ending::Signal);
            match ending {
                Ending::Client(Some(error)) => {
                    tracing::warn!(%error, "cannot read from the client; shutting down");
                }
                Ending::Signal => tracing::info!("stopped by a signal; shutting down"),
                _ => tracing::info!("the client closed the session; shutting down"),
            }
            let code = gate.settings.error_code;
            let reason = if signalled {
                "the proxy is shutting down"
            } else {
                "the client disconnected"
            };
            for pending in router.inflight().drain(None).await {
                if signalled {
                    // The client is still there: nothing it sent goes unanswered.
                    let error = ProxyError::ShuttingDown.to_response(Some(&pending.key.id), code);
                    send_value(&to_client, &client_budget, &error).await;
                }
                if !pending.forwarded {
                    continue;
                }
                let cancel = error::cancellation(&pending.key.id, reason);
                if !send_value(&to_upstream, &upstream_budget, &cancel).await {
                    break;
                }
            }
            router.tasks().close_all();
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
            router.tasks().close_all();
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
            tracing::error!("the upstream server {what}");
            let code = gate.settings.error_code;
            for pending in router.inflight().drain(None).await {
                let error =
                    ProxyError::UpstreamUnavailable.to_response(Some(&pending.key.id), code);
                if !send_value(&to_client, &client_budget, &error).await {
                    break;
                }
            }
            drop(to_client);
            let _ = tokio::time::timeout(FLUSH, client_writer).await;
            anyhow::bail!("the upstream server `{program}` {what}")
        }
    }
}

/// Asks the upstream about a task nobody asked about for its poll interval:
/// a `tasks/get` with an id of the proxy's own, whose answer the router
/// swallows. Given up (its entry removed) if unanswered within
/// [`OWN_POLL_TIMEOUT`].
fn own_poll(router: &Router, to_upstream: &mpsc::WeakSender<Out>, budget: &Budget, due: &Due) {
    let Some(to_upstream) = to_upstream.upgrade() else {
        return;
    };
    let Some((key, ticket, mut line)) = router.own_poll(&Scope::Stdio, due) else {
        return;
    };
    tracing::debug!(task = %due.task_id, "nobody asked about the task for its poll interval; asking");
    line.push(b'\n');
    let router = router.clone();
    let budget = budget.clone();
    tokio::spawn(async move {
        let lease = budget.reserve(line.len()).await;
        let sent = to_upstream
            .send(Out {
                line,
                _lease: lease,
            })
            .await;
        drop(to_upstream);
        if sent.is_ok() {
            tokio::time::sleep(OWN_POLL_TIMEOUT).await;
        }
        router.inflight().finish(&key, ticket, Outcome::Ignore);
    });
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
    /// SIGTERM or SIGINT.
    Signal,
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
            kill_group(child);
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Kills the upstream's process group (it runs in its own, see `run`), so
/// that what it started (a shell shim's child, `npx`'s server) goes with it.
fn kill_group(child: &Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        if let Err(error) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
            tracing::debug!(%error, "cannot kill the upstream's process group");
        }
    }
    #[cfg(not(unix))]
    let _ = child;
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
/// the writer (closing the pipe). Ends early if a write fails. A line's
/// budget lease is returned once it is written.
///
/// # Cancel safety
///
/// Not cancel safe: a line may be half written. Run it as a task.
async fn write_lines<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        let written = async {
            writer.write_all(&out.line).await?;
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

/// The id of an oversized message as its sender wrote it (a number or a
/// string), as far as a streaming scan found one, and whether it is a
/// request.
fn scanned_id(scan: &ScanResult) -> Option<&str> {
    let super::wire::scan::IdScan::Raw(raw) = &scan.id else {
        return None;
    };
    let raw = std::str::from_utf8(raw).ok()?;
    let request = scan.is_object && scan.has_method && !scan.has_result && !scan.has_error;
    (request && answerable_id(raw)).then_some(raw)
}

/// Reads the client's messages until EOF and acts on the router's decision
/// for each.
///
/// # Cancel safety
///
/// Not cancel safe (see [`line::read_line`]): dropping it loses a partly
/// read line, which is fine only when the session is ending.
async fn read_client<R: AsyncRead + Unpin>(
    input: R,
    router: Router,
    pipes: Pipes,
) -> std::io::Result<()> {
    let gate = router.gate().clone();
    let max = gate.settings.max_message_bytes;
    let code = gate.settings.error_code;
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    // Guarded requests waiting for admission, or for their overload error to
    // be written: as many as the table holds (at least max_concurrent +
    // queue_size, so a full queue never stops the reader — a ping or a
    // cancellation still gets through); past that, the proxy stops reading
    // the client until some are done.
    let pending = Arc::new(Semaphore::new(gate.settings.max_in_flight));
    loop {
        let mut scanner = TopLevelScanner::new();
        let line = match line::read_line(&mut reader, max, |b| scanner.push(b)).await? {
            Line::Eof => return Ok(()),
            Line::TooLong { len } => {
                tracing::warn!(len, max, "message from the client too large; refused");
                // Answer a request by its id, as written; anything else
                // cannot be answered but with id null.
                let scan = scanner.finish();
                let error = ProxyError::TooLarge {
                    len: Some(len),
                    max,
                };
                pipes
                    .answer(&error.to_response_written(scanned_id(&scan), code))
                    .await;
                continue;
            }
            Line::Message(line) if line::is_blank(&line) => continue,
            Line::Message(line) => line,
        };
        let lease = pipes.upstream_budget.reserve(line.len()).await;
        // One client over stdio: no key.
        match router.client(&Scope::Stdio, None, &line) {
            FromClient::Forward { mut bytes, .. } => {
                bytes.push(b'\n');
                let out = Out {
                    line: bytes,
                    _lease: lease,
                };
                if pipes.to_upstream.send(out).await.is_err() {
                    // The upstream is gone; the main task is ending the session.
                    std::future::pending::<()>().await;
                }
            }
            FromClient::Admit {
                mut bytes,
                queued,
                asked,
            } => {
                bytes.push(b'\n');
                let out = Out {
                    line: bytes,
                    _lease: lease,
                };
                admit(queued, asked, out, &pending, &pipes, &gate).await;
            }
            FromClient::Swallow(left) => left.wait().await,
            FromClient::Drop => {}
            FromClient::Answer { error, ids, batch } => {
                tracing::debug!(%error, "answered by the proxy");
                pipes
                    .answer(&error::answer(&error, &ids, batch, code))
                    .await;
            }
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
    queued: Queued,
    asked: Asked,
    out: Out,
    pending: &Arc<Semaphore>,
    pipes: &Pipes,
    gate: &Arc<Gate>,
) {
    async fn settle(
        admission: Admission,
        (id, asked): (RequestId, Asked),
        out: Out,
        pipes: &Pipes,
        gate: &Gate,
    ) {
        match admission {
            Admission::Admitted(_) => {
                let _ = pipes.to_upstream.send(out).await;
            }
            Admission::Rejected(overload) => {
                drop(out);
                let dialect = gate.dialect.get();
                let code = gate.settings.error_code;
                let refusal = Refusal::render(&overload, &id, asked, dialect, code);
                pipes.answer(&refusal.response).await;
            }
            Admission::Cancelled => {}
        }
    }
    let id = queued.key().id.clone();
    let mut admission = Box::pin(queued.admit());
    if let Some(now) = futures_util::future::poll_immediate(&mut admission).await {
        settle(now, (id, asked), out, pipes, gate).await;
        return;
    }
    let Ok(slot) = pending.clone().acquire_owned().await else {
        return;
    };
    let pipes = pipes.clone();
    let gate = gate.clone();
    tokio::spawn(async move {
        let _slot = slot;
        settle(admission.await, (id, asked), out, &pipes, &gate).await;
    });
}

/// Reads the upstream's messages until EOF: routes each (freeing the slots
/// of the responses that pass), forwards the re-framed line, and answers a
/// call whose response cannot be passed on (too large, not JSON) with an
/// error instead.
///
/// # Cancel safety
///
/// Not cancel safe (see [`line::read_line`]). Run it as a task.
async fn read_upstream<R: AsyncRead + Unpin>(
    output: R,
    router: Router,
    pipes: Pipes,
    to_upstream: mpsc::WeakSender<Out>,
) {
    let Pipes {
        to_client,
        client_budget,
        upstream_budget,
        to_upstream: strong,
    } = pipes;
    drop(strong);
    let gate = router.gate().clone();
    let max = gate.settings.max_message_bytes;
    let code = gate.settings.error_code;
    let mut reader = BufReader::with_capacity(64 * 1024, output);
    loop {
        let mut scanner = TopLevelScanner::new();
        let line = match line::read_line(&mut reader, max, |b| scanner.push(b)).await {
            Ok(Line::Eof) => return,
            Err(error) => {
                tracing::error!(%error, "cannot read from the upstream server");
                return;
            }
            Ok(Line::TooLong { len }) => {
                let scan = scanner.finish();
                tracing::error!(
                    len,
                    max,
                    "message from the upstream too large; not passed on"
                );
                if let Some(id) = router.salvage(&Scope::Stdio, &scan) {
                    let error = ProxyError::ResponseTooLarge { len, max };
                    send_value(
                        &to_client,
                        &client_budget,
                        &error.to_response(Some(&id), code),
                    )
                    .await;
                } else if let Some(id) = scanned_id(&scan) {
                    // A request from the upstream: answer it so it does not wait.
                    let error = ProxyError::TooLarge {
                        len: Some(len),
                        max,
                    };
                    if let Some(to_upstream) = to_upstream.upgrade() {
                        let answer = error.to_response_written(Some(id), code);
                        send_value(&to_upstream, &upstream_budget, &answer).await;
                    }
                }
                continue;
            }
            Ok(Line::Message(line)) if line::is_blank(&line) => continue,
            Ok(Line::Message(line)) => line,
        };
        let lease = client_budget.reserve(line.len()).await;
        let out = match router.upstream(&Scope::Stdio, &line, None) {
            FromUpstream::Forward { mut bytes, .. } => {
                bytes.push(b'\n');
                Out {
                    line: bytes,
                    _lease: lease,
                }
            }
            FromUpstream::Replace { id: None, .. } | FromUpstream::Swallow => continue,
            FromUpstream::Replace {
                id: Some(id),
                error,
            } => {
                let line = error::to_line(&error.to_response(Some(&id), code));
                Out {
                    line,
                    _lease: lease,
                }
            }
        };
        if to_client.send(out).await.is_err() {
            // The client is gone: keep reading so the upstream never blocks
            // while it shuts down.
            while let Ok(n) = reader.fill_buf().await.map(<[u8]>::len) {
                if n == 0 {
                    return;
                }
                reader.consume(n);
            }
            return;
        }
    }
}
