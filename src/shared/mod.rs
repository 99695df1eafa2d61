//! One concurrency limit shared by every process that names the same Redis
//! key (feature `redis`).
//!
//! Give [`LimiterBuilder::shared`](crate::LimiterBuilder::shared) a
//! [`SharedLimit`] and the limiter's global limit (`max_concurrent`), its
//! tools' limits and its client limit count every call of every process
//! joined to the key, and its wait queue is one queue across them.
//!
//! ```no_run
//! use std::time::Duration;
//! use mcp_backpressure::shared::{FailMode, SharedLimit};
//! use mcp_backpressure::{Limiter, LimiterConfig};
//!
//! # #[tokio::main] async fn main() {
//! let limiter = Limiter::builder(LimiterConfig::new(10).with_queue_size(100))
//!     .shared(
//!         SharedLimit::new("redis://127.0.0.1:6379/0", "search-api")
//!             .with_lease(Duration::from_secs(10))
//!             .with_fail(FailMode::Open),
//!     )
//!     .build()
//!     .unwrap();
//! let permit = limiter.acquire().await; // one round trip to Redis when a slot is free
//! # }
//! ```
//!
//! # How it works
//!
//! - **Slots are leases** held in Redis (a sorted set of lease ids by expiry),
//!   granted and freed by server-side Lua scripts that read Redis's own clock
//!   (`TIME`): no process's clock matters. A process renews all its leases in
//!   one script call every `lease / 4` (before anything is swept), with its
//!   membership; a process that dies stops renewing, and its slots come back
//!   when its leases expire (at most `lease` after its last renewal, handed
//!   out at the next admission, release or sweep); its queued calls are
//!   skipped once its membership lapses. Every renewal also recounts the
//!   slots in use from the lease records (an evicted key, or a failover's
//!   lost writes, is repaired within `lease / 4`).
//! - **The wait queue is in Redis**, one for every process, ordered by a
//!   fair tag (start-time fair queueing): calls without a client key are
//!   served in arrival order at Redis; with client keys, clients take turns
//!   call by call, as in the local limiter. A freed slot is handed to the
//!   head of that queue inside the release script, under Redis's atomicity,
//!   and its process is told by a pub/sub message on its own channel — no
//!   polling. A sweep every `lease / 4` also asks about this process's
//!   waiters, so a message lost while the connection was down delays a
//!   waiter by at most that.
//! - **One connection per process**: a multiplexed RESP3 connection carries
//!   the commands and the wake-up messages, reconnected by redis-rs's
//!   connection manager.
//! - **Costs**: an admission is one script call (`ACQUIRE`, one round trip);
//!   a release is one more, sent after the call ended (not on any caller's
//!   path), batched with other releases when several are pending.
//!
//! # When Redis is unreachable
//!
//! A command that fails (connection refused, reset, or no answer within
//! [`SharedLimit::with_timeout`]) puts the process in fallback until a sweep
//! reaches Redis again (a sweep every 250 ms while in fallback; admission
//! goes back to Redis at the second sweep in a row that reached it, once
//! every process back in touch has counted its running calls again):
//!
//! - [`FailMode::Open`] (the default): admission continues against a local
//!   limit of `max_concurrent / replicas` (at least 1 — so with more replicas
//!   than slots, the replicas together may run more than the limit), where
//!   `replicas` is
//!   [`SharedLimit::with_replicas`], or the number of processes last seen
//!   joined to the key (1 if none was ever seen). Logged once at warn level,
//!   and [`SharedSnapshot::fallback`] is true.
//! - [`FailMode::Closed`]: every call is rejected with reason
//!   `shared_unavailable` (the same overload error as any other).
//!
//! Calls running when Redis comes back keep running; leases Redis lost
//! (expired during a long outage, or a restarted Redis without persistence)
//! are counted again by the next sweep (`ADOPT`), so running calls keep
//! holding back new ones.
//!
//! # Limits
//!
//! Every process must use the same `max_concurrent`, tool limits and client
//! limit for a key: each call is checked against the limits of the process
//! that asks. The shared limit is a fixed limit (an adaptive algorithm is
//! refused: its signal is per process); the queue discipline applies to the
//! fallback queue only. The queue bound is global, and a full queue rejects
//! the newcomer (the local limiter's eviction of the longest lane's newest
//! waiter is not done across processes).

mod acquire;
pub(crate) mod coordinator;
mod fallback;
mod lease;
mod scripts;

use std::time::Duration;

pub(crate) use acquire::acquire;
pub(crate) use coordinator::Coordinator;
pub(crate) use lease::Lease;

/// The local limit in fail-open fallback: `max_concurrent / replicas`, kept
/// current by the coordinator.
pub(crate) struct FallbackShare(pub(crate) std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl crate::limit::Limit for FallbackShare {
    fn current(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    fn on_sample(&mut self, _: &crate::limit::Sample) {}
}

/// Where the shared limit lives and how a process holds its slots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedLimit {
    /// The Redis URL: `redis://[user:password@]host:port/db`, or
    /// `rediss://…` for TLS (feature `redis-tls`), or
    /// `redis+unix:///path/to/socket`.
    pub url: String,
    /// The name of the limit: processes naming the same key share one limit.
    /// Every Redis key of the limit is `{KEY}:…`, so a Redis Cluster keeps
    /// them in one hash slot.
    pub key: String,
    /// How long a slot stays held without renewal: the longest a dead
    /// process's slots stay taken. Renewed every `lease / 4`. Default 10 s;
    /// at least 0.2 s and at least 4 × `timeout`.
    pub lease: Duration,
    /// What to do while Redis is unreachable. Default [`FailMode::Open`].
    pub fail: FailMode,
    /// The replicas to divide `max_concurrent` by in fail-open fallback.
    /// Default: the number of processes last seen joined to the key.
    pub replicas: Option<usize>,
    /// How long a Redis command may take before the process counts Redis as
    /// unreachable. Default 1 s.
    pub timeout: Duration,
}

/// What a process does while Redis is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Admit against a local share of the limit (`max_concurrent / replicas`).
    #[default]
    Open,
    /// Reject every call with reason `shared_unavailable`.
    Closed,
}

impl FailMode {
    /// `open` or `closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

impl std::str::FromStr for FailMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            other => Err(format!("expected `open` or `closed`, got `{other}`")),
        }
    }
}

/// The default lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The default Redis command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest lease accepted (renewals run every `lease / 4`).
pub const MIN_LEASE: Duration = Duration::from_millis(200);
/// The longest key accepted, in bytes.
pub const MAX_SHARED_KEY_BYTES: usize = 128;

impl SharedLimit {
    /// A shared limit at `url` named `key`, with the default lease (10 s),
    /// fail mode (open) and command timeout (1 s).
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: key.into(),
            lease: DEFAULT_LEASE,
            fail: FailMode::Open,
            replicas: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the lease (at least 200 ms).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the fail mode.
    pub fn with_fail(mut self, fail: FailMode) -> Self {
        self.fail = fail;
        self
    }

    /// Sets the replica count used for the fail-open share.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets the Redis command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings (not Redis: an unreachable Redis is a runtime
    /// condition, handled by the fail mode).
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let invalid = |setting: &str, reason: &str| {
            Err(crate::ConfigError::Invalid {
                setting: setting.to_string(),
                reason: reason.to_string(),
            })
        };
        let Some(url) = redis::parse_redis_url(&self.url) else {
            return invalid(
                "shared_limit",
                "not a redis://, rediss:// or redis+unix:// URL",
            );
        };
        if matches!(url.scheme(), "rediss" | "valkeys") && !cfg!(feature = "redis-tls") {
            return invalid("shared_limit", "rediss:// needs the `redis-tls` feature");
        }
        if self.key.is_empty()
            || self.key.len() > MAX_SHARED_KEY_BYTES
            || self.key.contains(['{', '}'])
        {
            return invalid("shared_key", "1 to 128 bytes, without `{` or `}`");
        }
        if self.lease < MIN_LEASE || self.lease > Duration::from_secs(24 * 3600) {
            return invalid("lease", "between 0.2 s and 24 h");
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return invalid("shared_timeout", "above 0 and at most 60 s");
        }
        if self.lease < self.timeout * 4 {
            // A renewal every lease / 4 that may take up to `timeout`: a
            // stalled Redis must fail commands before live leases expire.
            return invalid(
                "lease",
                "at least 4 x the shared timeout (lease / 4 >= timeout)",
            );
        }
        if self.replicas == Some(0) {
            return invalid("shared_replicas", "at least 1");
        }
        Ok(())
    }
}

/// The shared limit's own figures, from this process's point of view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedSnapshot {
    /// The process could not reach Redis at its last attempt: admission
    /// follows the fail mode.
    pub fallback: bool,
    /// Leases this process holds now: in Redis, or — for calls admitted
    /// locally in fail-open fallback — to be counted there at the first sweep
    /// that reaches it.
    pub leases: usize,
    /// Calls of this process waiting in the shared queue now.
    pub waiting: usize,
    /// Slots in use across all processes, at this process's last command.
    pub global_in_use: usize,
    /// Calls queued across all processes, at this process's last command.
    pub global_queued: usize,
    /// Processes joined to the key, at the last renewal.
    pub replicas: usize,
    /// Redis commands sent (scripts, pings, subscriptions).
    pub commands: u64,
    /// Redis commands that failed (connection errors, timeouts, script errors).
    pub errors: u64,
    /// Renewal rounds that reached Redis.
    pub renewals: u64,
    /// Leases found lost at a renewal (and counted again).
    pub leases_lost: u64,
    /// Command latencies: counts per bucket of [`LATENCY_BUCKETS_MS`] (the
    /// last entry counts the slower ones), and their sum in microseconds.
    pub latency_buckets: Vec<u64>,
    /// Sum of command latencies, in microseconds.
    pub latency_sum_us: u64,
    /// The last failed command's error (connection refused, timeout,
    /// `NOAUTH`, an unknown `HELLO`…): why the process is in fallback.
    pub last_error: Option<String>,
}

/// Upper bounds (ms) of the latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [f64; 10] =
    [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0];
