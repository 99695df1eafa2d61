//! A process's side of a shared limit: its one Redis connection, the calls
//! it holds leases for and waits for, and the two background tasks that keep
//! them right — the *releaser* (frees leases and cancels waiters once their
//! calls are gone) and the *sweeper* (renews leases, notices lost ones,
//! checks on waiters, decides fallback).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ConnectionInfo, FromRedisValue, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    RedisResult, ScriptInvocation, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::fallback::Fallback;
use super::scripts::{Scripts, keys};
use super::{FailMode, LATENCY_BUCKETS_MS, SharedLimit, SharedSnapshot};
use crate::config::ConfigError;

/// What a lease is for, as Redis counts it (kept to count it again if Redis
/// loses it).
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) cost: usize,
    pub(crate) client_cost: usize,
    /// The tool name (`None`: a call without one).
    pub(crate) tool: Option<String>,
    pub(crate) client: String,
    pub(crate) tool_limit: usize,
    pub(crate) client_limit: usize,
    pub(crate) limit: usize,
    pub(crate) queue_size: usize,
    pub(crate) queue_timeout: Duration,
}

impl Ask {
    /// The tool as the scripts count it: `''` without a name, `:NAME`
    /// otherwise (so that no name collides with "no name").
    fn tool_field(&self) -> String {
        self.tool
            .as_ref()
            .map_or_else(String::new, |name| format!(":{name}"))
    }
}

/// The answer of the admission script.
#[derive(Debug)]
pub(crate) enum Reply {
    Granted,
    Queued,
    Rejected { reason: String, scope: String },
}

/// Figures every script answer carries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Figures {
    pub(crate) in_use: usize,
    pub(crate) queued: usize,
}

/// Work for the releaser.
enum Job {
    /// The call holding this lease ended.
    Release(String),
    /// The caller waiting under this id went away (or could not learn its
    /// answer): take it out of the queue, and free the slot if one was
    /// handed to it meanwhile.
    Cancel(String),
}

/// The calls this process holds leases for or waits for.
#[derive(Default)]
pub(crate) struct Book {
    waiters: HashMap<String, Waiter>,
    leases: HashMap<String, Held>,
}

/// A call registered before its admission script is sent.
struct Waiter {
    wake: oneshot::Sender<Wake>,
    /// Redis answered `queued` (only then can the sweep ask about it).
    queued: bool,
}

/// What a waiting call is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A slot was handed to it: it holds the lease.
    Granted,
    /// Redis no longer knows it (Redis lost its data, or a failover lost the
    /// last writes): ask again, with the time left.
    Lost,
}

/// A running call's lease as this process knows it.
#[derive(Clone, Debug)]
struct Held {
    ask: Ask,
    /// Admitted locally in fail-open fallback: not in Redis until the first
    /// sweep that reaches Redis counts it (no warning then).
    local: bool,
}

/// Counters, updated without a lock.
#[derive(Default)]
struct Stats {
    commands: AtomicU64,
    errors: AtomicU64,
    renewals: AtomicU64,
    leases_lost: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_us: AtomicU64,
    in_use: AtomicUsize,
    queued: AtomicUsize,
    replicas: AtomicUsize,
    /// Calls of this process queued in Redis (answered `queued`, not yet
    /// served, timed out or gone).
    waiting: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

/// What the connection, the scripts and the background tasks share.
pub(crate) struct Link {
    conn: ConnectionManager,
    scripts: Scripts,
    keys: [String; 8],
    process: String,
    channel: String,
    settings: SharedLimit,
    /// The limit in force (`max_concurrent`), for the scripts that serve
    /// waiters.
    limit: AtomicUsize,
    /// The local limit used in fail-open fallback (read by the local limiter).
    share: Arc<AtomicUsize>,
    /// Admission follows the fail mode (shared with the push handler: a lost
    /// connection sets it at once).
    fallback: Arc<Fallback>,
    subscribed: AtomicBool,
    stats: Stats,
    /// Wakes the sweeper early (a lost connection, a failed command).
    kick: Arc<Notify>,
    /// True once the first sweep has run (reached Redis or not).
    settled: tokio::sync::watch::Sender<bool>,
}

/// A process's handle on a shared limit.
pub(crate) struct Coordinator {
    link: Arc<Link>,
    book: Arc<Mutex<Book>>,
    jobs: mpsc::UnboundedSender<Job>,
    next: AtomicU64,
}

impl Coordinator {
    /// Connects lazily (the first command, or the sweeper, opens the
    /// connection) and starts the background tasks on the current tokio
    /// runtime.
    pub(crate) fn start(
        settings: SharedLimit,
        limit: usize,
        share: Arc<AtomicUsize>,
    ) -> Result<Arc<Self>, ConfigError> {
        settings.validate()?;
        let invalid = |reason: String| ConfigError::Invalid {
            setting: "shared_limit".into(),
            reason,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| invalid("build the limiter inside a tokio runtime".into()))?;
        let info: ConnectionInfo = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| invalid(e.to_string()))?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| invalid(e.to_string()))?;

        let book = Arc::new(Mutex::new(Book::default()));
        let kick = Arc::new(Notify::new());
        let fallback = Arc::new(Fallback::new(&settings));
        let process = process_id();
        let channel = format!("{{{}}}:wake:{process}", settings.key);
        let on_push = {
            let book = Arc::downgrade(&book);
            let kick = kick.clone();
            let fallback = fallback.clone();
            let channel = channel.clone().into_bytes();
            move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                deliver(&book, &kick, &fallback, &channel, push);
                Ok(())
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_push_sender(on_push)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| invalid(e.to_string()))?;

        let link = Arc::new(Link {
            conn,
            scripts: Scripts::new(),
            keys: keys(&settings.key),
            process,
            channel,
            settings,
            limit: AtomicUsize::new(limit),
            share,
            fallback,
            subscribed: AtomicBool::new(false),
            stats: Stats::default(),
            kick,
            settled: tokio::sync::watch::Sender::new(false),
        });
        let (jobs, rx) = mpsc::unbounded_channel();
        runtime.spawn(releaser(link.clone(), book.clone(), rx));
        runtime.spawn(sweeper(Arc::downgrade(&link), Arc::downgrade(&book)));
        let coordinator = Arc::new(Self {
            link,
            book,
            jobs,
            next: AtomicU64::new(0),
        });
        coordinator.link.update_share();
        Ok(coordinator)
    }

    /// A new waiter or lease id, `PROCESS:N` (the scripts read the process
    /// part).
    fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n:x}", self.link.process)
    }

    /// Calls of this process waiting in the shared queue now.
    pub(crate) fn waiting(&self) -> usize {
        self.link.stats.waiting.load(Ordering::Relaxed)
    }

    /// The fail mode.
    pub(crate) fn fail(&self) -> FailMode {
        self.link.settings.fail
    }

    /// Waits (at most the command timeout, twice) until the first sweep has
    /// run, so that the first calls of a new process see Redis rather than
    /// the fallback.
    pub(crate) async fn settled(&self) {
        if *self.link.settled.borrow() {
            return;
        }
        let mut rx = self.link.settled.subscribe();
        let _ = tokio::time::timeout(self.link.settings.timeout * 2, rx.wait_for(|s| *s)).await;
    }

    /// Whether admission follows the fail mode now.
    pub(crate) fn in_fallback(&self) -> bool {
        self.link.fallback.is_on()
    }

    /// Changes every time admission goes back to Redis after a fallback.
    pub(crate) fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.link.fallback.recoveries()
    }

    /// The limit in force changed (a reload).
    pub(crate) fn set_limit(&self, limit: usize) {
        self.link.limit.store(limit, Ordering::Relaxed);
        self.link.update_share();
    }

    /// The last figures Redis gave.
    pub(crate) fn figures(&self) -> Figures {
        Figures {
            in_use: self.link.stats.in_use.load(Ordering::Relaxed),
            queued: self.link.stats.queued.load(Ordering::Relaxed),
        }
    }

    /// Registers a waiter before asking (a wake-up can never arrive before
    /// its waiter is known). The returned guard cancels it when dropped.
    pub(crate) fn register(self: &Arc<Self>) -> (Pending, oneshot::Receiver<Wake>) {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.book.lock().waiters.insert(
            id.clone(),
            Waiter {
                wake: tx,
                queued: false,
            },
        );
        (
            Pending {
                coordinator: self.clone(),
                id,
                armed: true,
            },
            rx,
        )
    }

    /// Runs the admission script.
    pub(crate) async fn ask(&self, id: &str, ask: &Ask) -> RedisResult<(Reply, Figures)> {
        let mut inv = self.link.invocation(|s| &s.acquire);
        inv.arg(id)
            .arg(ask.cost)
            .arg(ask.client_cost)
            .arg(ask.tool_field())
            .arg(&ask.client)
            .arg(ask.limit)
            .arg(ask.tool_limit)
            .arg(ask.client_limit)
            .arg(ask.queue_size)
            .arg(duration_ms(ask.queue_timeout))
            .arg(duration_ms(self.link.settings.lease))
            .arg(&self.link.channel);
        let (status, reason, scope, in_use, queued): (i64, String, String, usize, usize) =
            self.link.run(&inv).await?;
        let figures = Figures { in_use, queued };
        self.link.note(figures);
        let reply = match status {
            1 => Reply::Granted,
            2 => Reply::Queued,
            _ => Reply::Rejected { reason, scope },
        };
        Ok((reply, figures))
    }

    /// Takes a waiter out of the shared queue: `Ok(true)` when a slot was
    /// handed to it meanwhile (its caller now holds the lease).
    pub(crate) async fn cancel(&self, id: &str) -> RedisResult<bool> {
        let granted = self.link.cancel(&[id.to_string()]).await?;
        Ok(granted.first().copied().unwrap_or(false))
    }

    /// A call of this process entered the shared queue as `id`.
    pub(crate) fn waiting_started(&self, id: &str) {
        if let Some(waiter) = self.book.lock().waiters.get_mut(id) {
            waiter.queued = true;
        }
        self.link.stats.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// A call of this process left the shared queue (served or not).
    pub(crate) fn waiting_ended(&self) {
        self.link.stats.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// A lease for a call admitted locally in fail-open fallback: counted in
    /// Redis by the first sweep that reaches it, while the call still runs.
    pub(crate) fn local_lease(&self, ask: Ask) -> String {
        let id = self.next_id();
        self.book
            .lock()
            .leases
            .insert(id.clone(), Held { ask, local: true });
        id
    }

    /// The call holding `id` ended: its lease is freed in the background.
    pub(crate) fn release(&self, id: String) {
        self.book.lock().leases.remove(&id);
        // The releaser lives as long as any sender: it cannot be gone.
        let _ = self.jobs.send(Job::Release(id));
    }

    /// The shared limit's figures.
    pub(crate) fn snapshot(&self) -> SharedSnapshot {
        let leases = self.book.lock().leases.len();
        let stats = &self.link.stats;
        SharedSnapshot {
            fallback: self.in_fallback(),
            leases,
            waiting: self.waiting(),
            global_in_use: stats.in_use.load(Ordering::Relaxed),
            global_queued: stats.queued.load(Ordering::Relaxed),
            replicas: stats.replicas.load(Ordering::Relaxed),
            commands: stats.commands.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            renewals: stats.renewals.load(Ordering::Relaxed),
            leases_lost: stats.leases_lost.load(Ordering::Relaxed),
            latency_buckets: stats
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            latency_sum_us: stats.latency_sum_us.load(Ordering::Relaxed),
            last_error: stats.last_error.lock().clone(),
        }
    }
}

/// A call registered as waiting: cancelled in Redis when dropped armed.
pub(crate) struct Pending {
    coordinator: Arc<Coordinator>,
    id: String,
    armed: bool,
}

impl Pending {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The call holds a lease now: the guard becomes the lease's id.
    pub(crate) fn granted(mut self, ask: Ask) -> String {
        self.armed = false;
        let id = std::mem::take(&mut self.id);
        let mut book = self.coordinator.book.lock();
        book.waiters.remove(&id);
        book.leases.insert(id.clone(), Held { ask, local: false });
        id
    }

    /// Redis answered with no lease and no place: nothing to undo.
    pub(crate) fn settled(mut self) {
        self.armed = false;
        self.coordinator.book.lock().waiters.remove(&self.id);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed {
            self.coordinator.book.lock().waiters.remove(&self.id);
            let _ = self
                .coordinator
                .jobs
                .send(Job::Cancel(std::mem::take(&mut self.id)));
        }
    }
}

impl Link {
    /// Recomputes the fail-open share from the limit and the replicas.
    fn update_share(&self) {
        let replicas = self
            .settings
            .replicas
            .unwrap_or_else(|| self.stats.replicas.load(Ordering::Relaxed))
            .max(1);
        let limit = self.limit.load(Ordering::Relaxed);
        self.share
            .store((limit / replicas).max(1), Ordering::Relaxed);
    }

    fn invocation<'a>(
        &'a self,
        script: impl Fn(&'a Scripts) -> &'a redis::Script,
    ) -> ScriptInvocation<'a> {
        let mut inv = script(&self.scripts).prepare_invoke();
        for key in &self.keys {
            inv.key(key);
        }
        inv
    }

    /// Runs a script with the command timeout, timing and counting it; a
    /// failure enters fallback.
    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        let mut conn = self.conn.clone();
        self.timed(async move { inv.invoke_async(&mut conn).await })
            .await
    }

    async fn timed<T>(&self, op: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        let start = Instant::now();
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.settings.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer within the shared limit's timeout",
            ))),
        };
        let elapsed = start.elapsed();
        let ms = elapsed.as_secs_f64() * 1e3;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.stats.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.stats.latency_sum_us.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Err(e) = &result {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "shared limit: Redis command failed");
            let cause = e.to_string();
            *self.stats.last_error.lock() = Some(cause.clone());
            if self.fallback.enter(&cause) {
                self.kick.notify_one();
            }
        }
        result
    }

    fn note(&self, figures: Figures) {
        self.stats.in_use.store(figures.in_use, Ordering::Relaxed);
        self.stats.queued.store(figures.queued, Ordering::Relaxed);
    }

    /// Takes waiters out of the queue; for each, whether a slot was handed
    /// to it meanwhile.
    async fn cancel(&self, ids: &[String]) -> RedisResult<Vec<bool>> {
        let mut inv = self.invocation(|s| &s.cancel);
        inv.arg(self.limit.load(Ordering::Relaxed));
        for id in ids {
            inv.arg(id);
        }
        let answer: Vec<i64> = self.run(&inv).await?;
        Ok(answer.into_iter().map(|state| state == 1).collect())
    }

    async fn release(&self, ids: &[String]) -> RedisResult<()> {
        let mut inv = self.invocation(|s| &s.release);
        inv.arg(self.limit.load(Ordering::Relaxed));
        for id in ids {
            inv.arg(id);
        }
        let (_freed, in_use, queued): (usize, usize, usize) = self.run(&inv).await?;
        self.note(Figures { in_use, queued });
        Ok(())
    }
}

/// Frees leases and cancels waiters, batching the releases that are pending
/// together into one script call. Ends when every sender is gone (the
/// coordinator and every lease), after the last job.
async fn releaser(link: Arc<Link>, book: Arc<Mutex<Book>>, mut rx: mpsc::UnboundedReceiver<Job>) {
    const BATCH: usize = 256;
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let mut release = Vec::new();
        let mut cancel = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Release(id) => release.push(id),
                Job::Cancel(id) => cancel.push(id),
            }
        }
        // One script call for every pending cancel; a slot already handed
        // to a waiter that left is freed with the releases. If Redis is
        // unreachable, the waiters give up by themselves at their deadline
        // (or when this process stops renewing), and a slot handed to one
        // expires with its lease.
        if !cancel.is_empty()
            && let Ok(granted) = link.cancel(&cancel).await
        {
            for (id, granted) in cancel.into_iter().zip(granted) {
                if granted {
                    book.lock().leases.remove(&id);
                    release.push(id);
                }
            }
        }
        if !release.is_empty() && link.release(&release).await.is_err() {
            // Not renewed any more, the leases expire by themselves.
            tracing::debug!(
                leases = release.len(),
                "shared limit: release failed; the leases expire by themselves"
            );
        }
    }
}

/// How often a process in fallback tries Redis again.
const FALLBACK_SWEEP: Duration = Duration::from_millis(250);

/// Every `lease / 4` (every 250 ms while in fallback, at once when kicked):
/// subscribes if needed, renews this process's leases, counts lost ones
/// again, and asks about waiters whose wake-up may have been lost. Ends
/// when the limiter is gone.
async fn sweeper(link: Weak<Link>, book: Weak<Mutex<Book>>) {
    loop {
        let (Some(l), Some(b)) = (link.upgrade(), book.upgrade()) else {
            return;
        };
        sweep(&l, &b).await;
        l.settled.send_replace(true);
        let period = if l.fallback.is_on() {
            (l.settings.lease / 4).min(FALLBACK_SWEEP)
        } else {
            l.settings.lease / 4
        };
        let kick = l.kick.clone();
        drop((l, b));
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = kick.notified() => {}
        }
    }
}

/// One sweep; true when Redis answered everything.
async fn sweep(link: &Link, book: &Mutex<Book>) -> bool {
    if !link.subscribed.load(Ordering::Acquire) {
        let mut conn = link.conn.clone();
        let channel = link.channel.clone();
        if link
            .timed(async move { conn.subscribe(&channel).await })
            .await
            .is_err()
        {
            return false;
        }
        link.subscribed.store(true, Ordering::Release);
    }
    // Renew.
    let held: Vec<String> = book.lock().leases.keys().cloned().collect();
    let mut inv = link.invocation(|s| &s.renew);
    inv.arg(&link.process)
        .arg(duration_ms(link.settings.lease))
        .arg(link.limit.load(Ordering::Relaxed));
    for id in &held {
        inv.arg(id);
    }
    let Ok(answer) = link.run::<Vec<Value>>(&inv).await else {
        return false;
    };
    link.stats.renewals.fetch_add(1, Ordering::Relaxed);
    let mut answer = answer.into_iter();
    let mut int = || {
        answer
            .next()
            .and_then(|v| usize::from_redis_value(v).ok())
            .unwrap_or(0)
    };
    let (replicas, in_use, queued) = (int().max(1), int(), int());
    link.note(Figures { in_use, queued });
    // While recovering, the members Redis knows are only those back so far:
    // the fail-open share keeps the count seen before the outage.
    if !link.fallback.is_on() {
        link.stats.replicas.store(replicas, Ordering::Relaxed);
        link.update_share();
    }
    // Count again the calls that still run but Redis does not count: leases
    // lost, and calls admitted locally in fallback.
    let lost: Vec<(String, Held)> = {
        let book = book.lock();
        answer
            .filter_map(|v| String::from_redis_value(v).ok())
            .filter_map(|id| book.leases.get(&id).cloned().map(|held| (id, held)))
            .collect()
    };
    if !lost.is_empty() {
        let unexpected = lost.iter().filter(|(_, held)| !held.local).count();
        if unexpected > 0 {
            link.stats
                .leases_lost
                .fetch_add(unexpected as u64, Ordering::Relaxed);
            tracing::warn!(
                leases = unexpected,
                "shared limit: leases lost (not renewed in time, or Redis lost its data); counting their running calls again"
            );
        }
        let lost: Vec<(String, Ask)> = lost.into_iter().map(|(id, held)| (id, held.ask)).collect();
        if !adopt(link, book, &lost).await {
            return false;
        }
    }
    // Back to shared admission (if this is the second sweep in a row that
    // reached Redis) before the waiters are told: a waiter Redis lost asks
    // again then; while still in fallback, it waits for the next sweep.
    let left = link.fallback.sweep_succeeded();
    let shared_again = !link.fallback.is_on();
    if left && !adopt_local(link, book).await {
        return false;
    }
    // Waiters whose wake-up may have been lost while the connection was
    // down, or that have waited a whole sweep.
    let waiting: Vec<String> = book
        .lock()
        .waiters
        .iter()
        .filter(|(_, w)| w.queued)
        .map(|(id, _)| id.clone())
        .collect();
    if !waiting.is_empty() {
        let mut inv = link.invocation(|s| &s.poll);
        for id in &waiting {
            inv.arg(id);
        }
        let Ok(states) = link.run::<Vec<i64>>(&inv).await else {
            return false;
        };
        let mut book = book.lock();
        for (id, state) in waiting.iter().zip(states) {
            let wake = match state {
                1 => Wake::Granted,
                -1 if shared_again => Wake::Lost,
                _ => continue,
            };
            if let Some(waiter) = book.waiters.remove(id) {
                let _ = waiter.wake.send(wake);
            }
        }
    }
    true
}

/// Counts in Redis the calls admitted locally in fallback that the sweep's
/// renewal did not see (admitted while it ran). Run right after admission
/// went back to Redis, when no more such calls can start.
async fn adopt_local(link: &Link, book: &Mutex<Book>) -> bool {
    let local: Vec<(String, Ask)> = book
        .lock()
        .leases
        .iter()
        .filter(|(_, held)| held.local)
        .map(|(id, held)| (id.clone(), held.ask.clone()))
        .collect();
    local.is_empty() || adopt(link, book, &local).await
}

/// Counts `calls` in Redis again (`ADOPT`); a call that ended meanwhile
/// (its release may have reached Redis before the adoption) is freed again.
async fn adopt(link: &Link, book: &Mutex<Book>, calls: &[(String, Ask)]) -> bool {
    let mut inv = link.invocation(|s| &s.adopt);
    inv.arg(duration_ms(link.settings.lease));
    for (id, ask) in calls {
        inv.arg(id)
            .arg(ask.cost)
            .arg(ask.client_cost)
            .arg(ask.tool_field())
            .arg(&ask.client);
    }
    if link.run::<i64>(&inv).await.is_err() {
        return false;
    }
    let ended: Vec<String> = {
        let mut book = book.lock();
        calls
            .iter()
            .filter_map(|(id, _)| match book.leases.get_mut(id) {
                Some(held) => {
                    held.local = false;
                    None
                }
                None => Some(id.clone()),
            })
            .collect()
    };
    ended.is_empty() || link.release(&ended).await.is_ok()
}

/// The connection's push messages: a wake-up on this process's channel
/// completes its waiter; a lost connection asks the sweeper to check on
/// every waiter once it is back.
fn deliver(
    book: &Weak<Mutex<Book>>,
    kick: &Notify,
    fallback: &Fallback,
    channel: &[u8],
    push: PushInfo,
) {
    match push.kind {
        PushKind::Message => {
            let mut data = push.data.into_iter();
            let (Some(Value::BulkString(on)), Some(Value::BulkString(id))) =
                (data.next(), data.next())
            else {
                return;
            };
            if on != channel {
                return;
            }
            let Some(book) = book.upgrade() else { return };
            let Ok(id) = String::from_utf8(id) else {
                return;
            };
            if let Some(waiter) = book.lock().waiters.remove(&id) {
                let _ = waiter.wake.send(Wake::Granted);
            }
        }
        PushKind::Disconnection => {
            // Until sweeps have renewed (and, after a Redis restart, counted
            // again) this process's leases, admission does not go to Redis.
            fallback.enter("the connection to Redis was lost");
            kick.notify_one();
        }
        _ => {}
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A process id unique enough to tell processes apart (64 random bits from
/// the standard library's per-process hasher keys, mixed with the pid and
/// the clock).
fn process_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}
