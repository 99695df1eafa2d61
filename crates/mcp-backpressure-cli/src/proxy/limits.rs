//! The proxy's settings: the library's [`LimiterConfig`] plus the options of
//! the proxy itself, from flags and from a TOML file (`--config`), with the
//! same names (dashes in flags, underscores in the file). A flag overrides the
//! file.
//!
//! Every value is checked here, from either source by the same code: an
//! invalid one is an error `invalid <what the user wrote>: <why>` — the flag
//! and its argument (`invalid --tool-weight sleep=heavy: must be a whole
//! number`), or the key as TOML spells it, its value, the file and the line
//! (`invalid tools.sleep.weight = "heavy" in proxy.toml, line 4: must be a
//! whole number`) — with the same words for both. Numeric flags take any text
//! (negative numbers included) so that our check, not clap, refuses a bad
//! value; numbers in the file are read as TOML integers or floats whatever
//! the setting's type, so `queue_size = -3` or `queue_size = "5"` is refused
//! with the setting's name too. Nothing panics.
//!
//! ```toml
//! max_concurrent = 5          # required (here or as --max-concurrent)
//! queue_size = 10             # default 0
//! queue_timeout = 30          # seconds, fractions allowed
//! retry_after_min = 0.01
//! retry_after_max = 60
//! initial_service_time = 1
//! error_code = -31429         # -32001 for clients of the Python package
//! overload_response = "error" # or "tool-result": a refused tools/call as an isError result
//! http_overload_status = 200  # HTTP only: 429 or 503 (with Retry-After) for a refused call
//! guarded = ["tools/call"]
//! max_message_bytes = 16777216
//! cancel_grace = 5            # seconds a cancelled call keeps its slot; 0 frees it at once
//! max_in_flight = 4096        # forwarded, unanswered requests (all sessions)
//! buffer_bytes = 16777216     # bytes held per direction
//! max_connections = 1024      # HTTP only
//! header_read_timeout = 10    # HTTP only, seconds
//! body_read_timeout = 20      # HTTP only, seconds
//! body_stall_timeout = 5      # HTTP only, seconds a body may pause
//! body_min_rate = 1024        # HTTP only, bytes/s a body averages beyond that
//! small_body_bytes = 65536    # HTTP only, bytes of each body outside buffer_bytes
//! limit = "fixed"             # fixed, aimd, gradient2 or vegas
//! min_limit = 1               # adaptive limits only
//! max_limit = 5               # adaptive limits only; default max_concurrent
//! queue_discipline = "fifo"   # fifo, codel or adaptive-lifo
//! default_tool_limit = 2      # each tool not in [tools] on its own
//! client_limit = 2            # slots one client key holds at once
//! client_key = "session"      # HTTP only: session or header:NAME
//! max_tracked_keys = 10000
//! max_continuations = 64      # multi-round-trip retries served ahead of the queue
//! max_task_holds = 10000      # background tasks holding their calls' slots (>= the limit)
//! shared_limit = "redis://127.0.0.1:6379/0"  # one limit across replicas (see `shared`)
//! shared_key = "search-api"   # required with shared_limit
//! lease = 10                  # seconds a dead replica's slots stay taken
//! shared_fail = "open"        # open (local share) or closed (shared_unavailable)
//! shared_replicas = 3         # the fail-open share's divisor; default: replicas seen
//! shared_timeout = 1          # seconds a Redis command may take
//!
//! [tools."report"]            # --tool-limit report=1 --tool-weight report=4
//! max_concurrent = 1
//! weight = 4
//! limit = "fixed"             # and min_limit, max_limit, as above
//! ```
//!
//! Per-tool settings live in [`tools`], the shared limit's in [`shared`]; the
//! client key's meaning in [`client_key`](super::client_key).

use std::fmt;
use std::num::IntErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::shared::SharedLimit;
use mcp_backpressure::{Limiter, LimiterConfig, QueueDiscipline, jsonrpc};
use serde::Deserialize;
use toml::Spanned;

use super::client_key::ClientKey;
use super::refusal::{Dialect, OverloadResponse, OverloadStatus};

pub mod shared;
mod tools;

/// The default bound on one JSON-RPC message (one stdio line, one HTTP body).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The default time a forwarded call keeps its slot after its client
/// cancelled it or went away: rmcp never answers a cancelled request and gives
/// its own handlers 5 s to finish after its input ends; the Python SDK answers
/// once the tool has really stopped, which frees the slot sooner.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);
/// The default bound on requests forwarded and not yet answered (all sessions).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// The default byte budget per direction.
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// The default bound on open HTTP connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default time allowed to receive an HTTP request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time allowed to receive an HTTP request's body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The default longest pause in an HTTP request's body.
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The default least average rate of an HTTP request's body, in bytes/s.
pub const DEFAULT_BODY_MIN_RATE: usize = 1024;
/// The default bytes of each HTTP request body that are its connection's own.
pub const DEFAULT_SMALL_BODY_BYTES: usize = 64 * 1024;

/// The longest duration any setting accepts: 365 days, in seconds. Longer ones
/// are mistakes, and much longer ones overflow a `Duration` or an `Instant`.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

const MAX_CONCURRENT: Count = Count::new("max_concurrent", 1);
const QUEUE_SIZE: Count = Count::new("queue_size", 0);
const MAX_MESSAGE_BYTES: Count = Count::new("max_message_bytes", 1024);
const MAX_IN_FLIGHT: Count = Count::new("max_in_flight", 1);
const BUFFER_BYTES: Count = Count::new("buffer_bytes", 64 * 1024);
const MAX_CONNECTIONS: Count = Count::new("max_connections", 1);
const MIN_LIMIT: Count = Count::new("min_limit", 1);
const MAX_LIMIT: Count = Count::new("max_limit", 1);
const DEFAULT_TOOL_LIMIT: Count = Count::new("default_tool_limit", 1);
const CLIENT_LIMIT: Count = Count::new("client_limit", 1);
const MAX_TRACKED_KEYS: Count = Count::new("max_tracked_keys", 1);
const MAX_CONTINUATIONS: Count = Count::new("max_continuations", 0);
const MAX_TASK_HOLDS: Count = Count::new("max_task_holds", 1);
const BODY_MIN_RATE: Count = Count::new("body_min_rate", 0);
const SMALL_BODY_BYTES: Count = Count::new("small_body_bytes", 0);
const COUNTS: [Count; 15] = [
    MAX_CONCURRENT,
    QUEUE_SIZE,
    MAX_MESSAGE_BYTES,
    MAX_IN_FLIGHT,
    BUFFER_BYTES,
    MAX_CONNECTIONS,
    MIN_LIMIT,
    MAX_LIMIT,
    DEFAULT_TOOL_LIMIT,
    CLIENT_LIMIT,
    MAX_TRACKED_KEYS,
    MAX_CONTINUATIONS,
    MAX_TASK_HOLDS,
    BODY_MIN_RATE,
    SMALL_BODY_BYTES,
];

const QUEUE_TIMEOUT: Seconds = Seconds::positive("queue_timeout");
const RETRY_AFTER_MIN: Seconds = Seconds::non_negative("retry_after_min");
const RETRY_AFTER_MAX: Seconds = Seconds::non_negative("retry_after_max");
const INITIAL_SERVICE_TIME: Seconds = Seconds::positive("initial_service_time");
const CANCEL_GRACE: Seconds = Seconds::non_negative("cancel_grace");
const HEADER_READ_TIMEOUT: Seconds = Seconds::positive("header_read_timeout");
const BODY_READ_TIMEOUT: Seconds = Seconds::positive("body_read_timeout");
const BODY_STALL_TIMEOUT: Seconds = Seconds::positive("body_stall_timeout");
const SECONDS: [Seconds; 8] = [
    QUEUE_TIMEOUT,
    RETRY_AFTER_MIN,
    RETRY_AFTER_MAX,
    INITIAL_SERVICE_TIME,
    CANCEL_GRACE,
    HEADER_READ_TIMEOUT,
    BODY_READ_TIMEOUT,
    BODY_STALL_TIMEOUT,
];

/// The settings as flags. Every flag has the name of its TOML key, with
/// dashes (`--guard` is the file's `guarded`). Numeric flags are read as text
/// and checked by [`Settings::load`], so that a negative or malformed value is
/// refused with the setting's name rather than by the argument parser.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LimitArgs {
    /// A TOML file with any of the settings below (same names, with
    /// underscores); read again on SIGHUP, and the limiter's settings changed
    /// live.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Guarded requests allowed to run at once (>= 1). Required, here or in the file.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_concurrent: Option<String>,
    /// Guarded requests allowed to wait for a slot (>= 0; 0 = reject at once) [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub queue_size: Option<String>,
    /// Longest wait in the queue, in seconds (> 0) [default: 30].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub queue_timeout: Option<String>,
    /// Lower bound of the advertised retry delay, in seconds (>= 0) [default: 0.01].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub retry_after_min: Option<String>,
    /// Upper bound of the advertised retry delay, in seconds (>= --retry-after-min) [default: 60].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub retry_after_max: Option<String>,
    /// Service time assumed until the first request completes, in seconds (> 0) [default: 1].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub initial_service_time: Option<String>,
    /// JSON-RPC code of the overload error, a 32-bit integer
    /// [default: -31429; -32001 is the Python package's].
    #[arg(long, value_name = "CODE", allow_negative_numbers = true)]
    pub error_code: Option<String>,
    /// How a refused tools/call is answered: `error` (the JSON-RPC overload
    /// error) or `tool-result` (a result with isError true, the overload in
    /// its text, structuredContent and _meta); other guarded methods always
    /// get the error. Reloaded on SIGHUP [default: error].
    #[arg(long, value_name = "error|tool-result")]
    pub overload_response: Option<String>,
    /// HTTP only: the status of a request whose guarded call was refused —
    /// 200, or 429 or 503 with Retry-After (whole seconds) and the same
    /// JSON-RPC body. Reloaded on SIGHUP [default: 200].
    #[arg(long, value_name = "200|429|503", allow_negative_numbers = true)]
    pub http_overload_status: Option<String>,
    /// A request method admitted through the limiter; repeat for several
    /// [default: tools/call].
    #[arg(long = "guard", value_name = "METHOD")]
    pub guarded: Vec<String>,
    /// Largest JSON-RPC message accepted in either direction, in bytes (>= 1024)
    /// [default: 16777216 = 16 MiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub max_message_bytes: Option<String>,
    /// How long a forwarded call keeps its slot after the client cancelled it or
    /// disconnected, waiting for the upstream to answer or end its stream, in
    /// seconds (>= 0; 0 frees the slot at once) [default: 5].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub cancel_grace: Option<String>,
    /// Requests forwarded and not yet answered, across all sessions
    /// (>= max-concurrent + queue-size) [default: 4096].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_in_flight: Option<String>,
    /// Messages the proxy holds per direction between the two peers, requests
    /// waiting for admission included, in bytes (>= 65536 and
    /// >= max-message-bytes) [default: 16777216 = 16 MiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub buffer_bytes: Option<String>,
    /// HTTP only: client connections open at once (>= 1) [default: 1024].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_connections: Option<String>,
    /// HTTP only: longest time to receive a request's headers, in seconds (> 0)
    /// [default: 10].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub header_read_timeout: Option<String>,
    /// HTTP only: longest time to receive a request's body, in seconds (> 0)
    /// [default: 20].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub body_read_timeout: Option<String>,
    /// HTTP only: longest pause in a request's body, in seconds (> 0)
    /// [default: 5].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub body_stall_timeout: Option<String>,
    /// HTTP only: least average rate of a request's body over any span
    /// longer than --body-stall-timeout, in bytes per second (>= 0; 0: only
    /// the stall counts) [default: 1024].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub body_min_rate: Option<String>,
    /// HTTP only: how much of each request body, in bytes, is its
    /// connection's own, outside --buffer-bytes: a body this small is never
    /// held up by other clients' uploads (>= 0) [default: 65536 = 64 KiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub small_body_bytes: Option<String>,
    /// The global limit's algorithm: fixed, aimd, gradient2 or vegas. An
    /// adaptive one starts at --max-concurrent and never goes above it unless
    /// --max-limit says so [default: fixed].
    #[arg(long, value_name = "ALGORITHM")]
    pub limit: Option<String>,
    /// Lowest value of an adaptive limit (>= 1, <= max-concurrent) [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub min_limit: Option<String>,
    /// Highest value of an adaptive limit (>= max-concurrent) [default: max-concurrent].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_limit: Option<String>,
    /// The order the queue is served in, within one client: fifo, codel (sheds
    /// waiters while a queue stands) or adaptive-lifo (newest first under a
    /// standing queue) [default: fifo].
    #[arg(long, value_name = "DISCIPLINE")]
    pub queue_discipline: Option<String>,
    /// One tool's own limit: calls of NAME allowed to run at once (N >= 1);
    /// repeat for several tools [default: none].
    #[arg(long = "tool-limit", value_name = "NAME=N")]
    pub tool_limits: Vec<String>,
    /// One tool's weight: slots of the global limit (and of its client's
    /// limit) one call of NAME takes (W >= 1); repeat for several tools
    /// [default: 1].
    #[arg(long = "tool-weight", value_name = "NAME=W")]
    pub tool_weights: Vec<String>,
    /// The limit of every tool without one of its own, each tool on its own
    /// (>= 1) [default: none].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub default_tool_limit: Option<String>,
    /// Slots one client key may hold at once (>= 1); calls without a key
    /// share one client [default: none].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub client_limit: Option<String>,
    /// HTTP only: what names a call's client — `session` (the Mcp-Session-Id
    /// header) or `header:NAME` (that request header). Queued calls are served
    /// round-robin across clients [default: none, every call is one client].
    #[arg(long, value_name = "session|header:NAME")]
    pub client_key: Option<String>,
    /// Client keys (and names of tools without a limit of their own) tracked
    /// at once; more share one entry (>= 1) [default: 10000].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_tracked_keys: Option<String>,
    /// Continuations of multi-round-trip calls (a retry carrying
    /// inputResponses or requestState) that may wait at the head of the
    /// queue at once, beyond queue-size; more queue like any call (>= 0; 0:
    /// no priority) [default: 64].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_continuations: Option<String>,
    /// Background tasks whose calls keep their slots at once; past it, the
    /// hold least recently known alive ends to make room (>= the limit)
    /// [default: 10000, or the limit if higher].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_task_holds: Option<String>,
    /// Share the limit with every proxy naming the same Redis and --shared-key:
    /// redis://[user:password@]HOST:PORT/DB (rediss:// with the redis-tls
    /// feature). Slots are leases in Redis and the wait queue is one queue
    /// across the replicas [default: none, the limit is this process's].
    #[arg(long, value_name = "URL")]
    pub shared_limit: Option<String>,
    /// The shared limit's name: proxies naming the same key share one limit.
    /// Required with --shared-limit.
    #[arg(long, value_name = "NAME")]
    pub shared_key: Option<String>,
    /// How long a slot stays held in Redis without renewal (renewed every
    /// lease/4): the longest a killed replica's slots stay taken, in seconds
    /// (>= 0.2, and >= 4 x --shared-timeout) [default: 10].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub lease: Option<String>,
    /// While Redis is unreachable: `open` admits against a local share
    /// (max-concurrent / replicas), `closed` rejects every call with reason
    /// shared_unavailable [default: open].
    #[arg(long, value_name = "open|closed")]
    pub shared_fail: Option<String>,
    /// The replicas the fail-open share divides max-concurrent by (>= 1)
    /// [default: the replicas last seen joined to the key].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shared_replicas: Option<String>,
    /// Longest time a Redis command may take before Redis counts as
    /// unreachable, in seconds (> 0, <= 60) [default: 1].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub shared_timeout: Option<String>,
}

/// The same settings in a TOML file, as written: [`Settings::merge`] checks
/// the values, so a wrong type is refused with the setting's name, and quotes
/// them as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The file's text, to quote values as written.
    #[serde(skip)]
    text: String,
    /// The file's path, to name it in errors.
    #[serde(skip)]
    path: PathBuf,
    max_concurrent: Option<Spanned<toml::Value>>,
    queue_size: Option<Spanned<toml::Value>>,
    queue_timeout: Option<Spanned<toml::Value>>,
    retry_after_min: Option<Spanned<toml::Value>>,
    retry_after_max: Option<Spanned<toml::Value>>,
    initial_service_time: Option<Spanned<toml::Value>>,
    error_code: Option<Spanned<toml::Value>>,
    overload_response: Option<Spanned<toml::Value>>,
    http_overload_status: Option<Spanned<toml::Value>>,
    guarded: Option<Spanned<toml::Value>>,
    max_message_bytes: Option<Spanned<toml::Value>>,
    cancel_grace: Option<Spanned<toml::Value>>,
    max_in_flight: Option<Spanned<toml::Value>>,
    buffer_bytes: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<toml::Value>>,
    header_read_timeout: Option<Spanned<toml::Value>>,
    body_read_timeout: Option<Spanned<toml::Value>>,
    body_stall_timeout: Option<Spanned<toml::Value>>,
    body_min_rate: Option<Spanned<toml::Value>>,
    small_body_bytes: Option<Spanned<toml::Value>>,
    limit: Option<Spanned<toml::Value>>,
    min_limit: Option<Spanned<toml::Value>>,
    max_limit: Option<Spanned<toml::Value>>,
    queue_discipline: Option<Spanned<toml::Value>>,
    default_tool_limit: Option<Spanned<toml::Value>>,
    client_limit: Option<Spanned<toml::Value>>,
    client_key: Option<Spanned<toml::Value>>,
    max_tracked_keys: Option<Spanned<toml::Value>>,
    max_continuations: Option<Spanned<toml::Value>>,
    max_task_holds: Option<Spanned<toml::Value>>,
    shared_limit: Option<Spanned<toml::Value>>,
    shared_key: Option<Spanned<toml::Value>>,
    lease: Option<Spanned<toml::Value>>,
    shared_fail: Option<Spanned<toml::Value>>,
    shared_replicas: Option<Spanned<toml::Value>>,
    shared_timeout: Option<Spanned<toml::Value>>,
    /// `[tools."NAME"]` tables.
    #[serde(default)]
    tools: BTreeMap<String, tools::ToolFile>,
}

/// Everything the proxy needs to admit requests, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The limiter's configuration (validated by [`Settings::limiter`]). The
    /// one loaded; after a reload, the limiter's own `config()` is the one
    /// in force.
    pub config: LimiterConfig,
    /// HTTP only: what names a call's client.
    pub client_key: ClientKey,
    /// The overload error's code.
    pub error_code: i32,
    /// How a refused `tools/call` is answered (live: the gate's dialect is
    /// the one in force).
    pub overload_response: OverloadResponse,
    /// HTTP only: the status of a refused request (live, likewise).
    pub http_overload_status: OverloadStatus,
    /// The request methods admitted through the limiter.
    pub guarded: Vec<String>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How long a forwarded call keeps its slot after its client cancelled it
    /// or went away, waiting for the upstream to answer or end its stream.
    pub cancel_grace: Duration,
    /// Requests forwarded and not yet answered, across all sessions; at least
    /// `max_concurrent + queue_size`.
    pub max_in_flight: usize,
    /// Byte budget per direction: messages held between the two peers,
    /// requests waiting for admission included; at least `max_message_bytes`.
    pub buffer_bytes: usize,
    /// HTTP only: client connections open at once.
    pub max_connections: usize,
    /// HTTP only: longest time to receive a request's headers.
    pub header_read_timeout: Duration,
    /// HTTP only: longest time to receive a request's body.
    pub body_read_timeout: Duration,
    /// HTTP only: longest pause in a request's body.
    pub body_stall_timeout: Duration,
    /// HTTP only: least average rate of a request's body, in bytes per
    /// second, over spans longer than `body_stall_timeout`; 0 for none.
    pub body_min_rate: u64,
    /// HTTP only: bytes of each request body that are its connection's own,
    /// outside the `buffer_bytes` budget.
    pub small_body_bytes: usize,
    /// The limit shared through Redis, if any (fixed at startup).
    pub shared: Option<SharedLimit>,
    /// Background tasks whose calls keep their slots at once.
    pub max_task_holds: usize,
}

impl Settings {
    /// The bounds of one HTTP body.
    pub fn body_limits(&self) -> super::body::BodyLimits {
        super::body::BodyLimits {
            max_bytes: self.max_message_bytes,
            own_bytes: self.small_body_bytes,
            timeout: self.body_read_timeout,
            stall_timeout: self.body_stall_timeout,
            min_rate: self.body_min_rate,
        }
    }
}

impl Settings {
    /// Merges the file (if any) and the flags; validates everything.
    pub fn load(args: &LimitArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        Self::merge(args, &file)
    }

    /// `config` with every other setting at its default (for tests).
    #[cfg(test)]
    pub fn with_defaults(config: LimiterConfig) -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT
                .max(config.max_concurrent.saturating_add(config.queue_size)),
            config,
            client_key: ClientKey::None,
            error_code: jsonrpc::DEFAULT_OVERLOAD_CODE,
            overload_response: OverloadResponse::default(),
            http_overload_status: OverloadStatus::default(),
            guarded: vec!["tools/call".to_owned()],
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            body_stall_timeout: DEFAULT_BODY_STALL_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE as u64,
            small_body_bytes: DEFAULT_SMALL_BODY_BYTES,
            shared: None,
            max_task_holds: mcp_backpressure::task_holds::DEFAULT_MAX_HOLDS,
        }
    }

    fn merge<'a>(args: &'a LimitArgs, file: &'a FileSettings) -> anyhow::Result<Self> {
        let pick = |key, flag: &'a Option<String>, value| file.pick(key, flag, value);
        let Some(max_concurrent) =
            pick("max_concurrent", &args.max_concurrent, &file.max_concurrent)
        else {
            bail!(
                "invalid max_concurrent: required; pass --max-concurrent N or set \
                 max_concurrent in the --config file"
            );
        };
        let defaults = LimiterConfig::new(MAX_CONCURRENT.check(max_concurrent)?);
        let queue_size = pick("queue_size", &args.queue_size, &file.queue_size);
        let queue_size = QUEUE_SIZE.get(queue_size)?.unwrap_or(defaults.queue_size);
        let queue_timeout = pick("queue_timeout", &args.queue_timeout, &file.queue_timeout);
        let queue_timeout = QUEUE_TIMEOUT
            .get(queue_timeout)?
            .unwrap_or(defaults.queue_timeout);
        let min_input = pick(
            "retry_after_min",
            &args.retry_after_min,
            &file.retry_after_min,
        );
        let retry_after_min = RETRY_AFTER_MIN
            .get(min_input)?
            .unwrap_or(defaults.retry_after_min);
        let max_input = pick(
            "retry_after_max",
            &args.retry_after_max,
            &file.retry_after_max,
        );
        let retry_after_max = RETRY_AFTER_MAX
            .get(max_input)?
            .unwrap_or(defaults.retry_after_max);
        let initial = pick(
            "initial_service_time",
            &args.initial_service_time,
            &file.initial_service_time,
        );
        let initial_service_time = INITIAL_SERVICE_TIME
            .get(initial)?
            .unwrap_or(defaults.initial_service_time);
        let error_code = pick("error_code", &args.error_code, &file.error_code)
            .map(error_code)
            .transpose()?
            .unwrap_or(jsonrpc::DEFAULT_OVERLOAD_CODE);
        let overload_response = pick(
            "overload_response",
            &args.overload_response,
            &file.overload_response,
        )
        .map(|input| choice("error or tool-result", input, OverloadResponse::parse))
        .transpose()?
        .unwrap_or_default();
        let http_overload_status = pick(
            "http_overload_status",
            &args.http_overload_status,
            &file.http_overload_status,
        )
        .map(http_overload_status)
        .transpose()?
        .unwrap_or_default();
        let guarded = if args.guarded.is_empty() {
            match file.written("guarded", &file.guarded) {
                Some(input) => {
                    let methods = guarded_from_file(input)?;
                    check_methods(&methods, input)?;
                    methods
                }
                None => vec!["tools/call".to_owned()],
            }
        } else {
            for method in &args.guarded {
                let input = Input::Flag {
                    flag: FlagName::Is("--guard"),
                    arg: method,
                    text: method,
                };
                check_methods(std::slice::from_ref(method), input)?;
            }
            args.guarded.clone()
        };
        let max_message_input = pick(
            "max_message_bytes",
            &args.max_message_bytes,
            &file.max_message_bytes,
        );
        let max_message_bytes = MAX_MESSAGE_BYTES
            .get(max_message_input)?
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        let cancel_grace = pick("cancel_grace", &args.cancel_grace, &file.cancel_grace);
        let cancel_grace = CANCEL_GRACE
            .get(cancel_grace)?
            .unwrap_or(DEFAULT_CANCEL_GRACE);
        let in_flight_input = pick("max_in_flight", &args.max_in_flight, &file.max_in_flight);
        let max_in_flight = MAX_IN_FLIGHT
            .get(in_flight_input)?
            // Unset, it grows with the queue: every queued call is tracked.
            .unwrap_or_else(|| {
                DEFAULT_MAX_IN_FLIGHT.max(defaults.max_concurrent.saturating_add(queue_size))
            });
        let buffer_input = pick("buffer_bytes", &args.buffer_bytes, &file.buffer_bytes);
        let buffer_bytes = BUFFER_BYTES
            .get(buffer_input)?
            // Unset, it grows with the largest message: one always fits.
            .unwrap_or_else(|| DEFAULT_BUFFER_BYTES.max(max_message_bytes));
        let max_connections = pick(
            "max_connections",
            &args.max_connections,
            &file.max_connections,
        );
        let max_connections = MAX_CONNECTIONS
            .get(max_connections)?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let header = pick(
            "header_read_timeout",
            &args.header_read_timeout,
            &file.header_read_timeout,
        );
        let header_read_timeout = HEADER_READ_TIMEOUT
            .get(header)?
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
        let body = pick(
            "body_read_timeout",
            &args.body_read_timeout,
            &file.body_read_timeout,
        );
        let body_read_timeout = BODY_READ_TIMEOUT
            .get(body)?
            .unwrap_or(DEFAULT_BODY_READ_TIMEOUT);
        let stall = pick(
            "body_stall_timeout",
            &args.body_stall_timeout,
            &file.body_stall_timeout,
        );
        let body_stall_timeout = BODY_STALL_TIMEOUT
            .get(stall)?
            .unwrap_or(DEFAULT_BODY_STALL_TIMEOUT);
        let rate = pick("body_min_rate", &args.body_min_rate, &file.body_min_rate);
        let body_min_rate = BODY_MIN_RATE.get(rate)?.unwrap_or(DEFAULT_BODY_MIN_RATE) as u64;
        let small = pick(
            "small_body_bytes",
            &args.small_body_bytes,
            &file.small_body_bytes,
        );
        let small_body_bytes = SMALL_BODY_BYTES
            .get(small)?
            .unwrap_or(DEFAULT_SMALL_BODY_BYTES);

        // Settings that bound each other.
        if retry_after_max < retry_after_min {
            bail!(
                "invalid {}: must not be below {}",
                given(max_input, "retry_after_max", secs(retry_after_max)),
                against(min_input, "retry_after_min", secs(retry_after_min)),
            );
        }
        let needed = defaults.max_concurrent as u128 + queue_size as u128;
        if (max_in_flight as u128) < needed {
            bail!(
                "invalid {}: must be at least max_concurrent + queue_size \
                 ({} + {queue_size} = {needed})",
                given(in_flight_input, "max_in_flight", max_in_flight),
                defaults.max_concurrent,
            );
        }
        if buffer_bytes < max_message_bytes {
            bail!(
                "invalid {}: must be at least {}",
                given(buffer_input, "buffer_bytes", buffer_bytes),
                against(max_message_input, "max_message_bytes", max_message_bytes),
            );
        }

        let mut config = defaults
            .with_queue_size(queue_size)
            .with_queue_timeout(queue_timeout)
            .with_retry_after_bounds(retry_after_min, retry_after_max)
            .with_initial_service_time(initial_service_time);
        set_limit(&mut config, args, file)?;
        config.tools = tools::merge(args, file)?;
        if let Some(n) = DEFAULT_TOOL_LIMIT.get(pick(
            "default_tool_limit",
            &args.default_tool_limit,
            &file.default_tool_limit,
        ))? {
            config = config.with_default_tool_limit(n);
        }
        if let Some(n) =
            CLIENT_LIMIT.get(pick("client_limit", &args.client_limit, &file.client_limit))?
        {
            config = config.with_client_limit(n);
        }
        if let Some(n) = MAX_TRACKED_KEYS.get(pick(
            "max_tracked_keys",
            &args.max_tracked_keys,
            &file.max_tracked_keys,
        ))? {
            config = config.with_max_tracked_keys(n);
        }
        if let Some(n) = MAX_CONTINUATIONS.get(pick(
            "max_continuations",
            &args.max_continuations,
            &file.max_continuations,
        ))? {
            config = config.with_max_continuations(n);
        }
        let task_holds_input = pick("max_task_holds", &args.max_task_holds, &file.max_task_holds);
        let max_task_holds = MAX_TASK_HOLDS.get(task_holds_input)?;
        if let Some(input) = pick(
            "queue_discipline",
            &args.queue_discipline,
            &file.queue_discipline,
        ) {
            config = config.with_discipline(choice(
                "one of fifo, codel, adaptive-lifo",
                input,
                |text| text.parse::<QueueDiscipline>().ok(),
            )?);
        }
        let client_key = pick("client_key", &args.client_key, &file.client_key)
            .map(|input| {
                choice(
                    "session or header:NAME (e.g. header:x-client-id)",
                    input,
                    |text| text.parse::<ClientKey>().ok(),
                )
            })
            .transpose()?
            .unwrap_or_default();
        let shared = shared::merge(args, file)?;
        if shared.is_some() {
            let global =
                pick("limit", &args.limit, &file.limit).filter(|_| config.limit.is_adaptive());
            let adaptive = global.or_else(|| {
                let (name, _) = config.tools.iter().find(|(_, t)| t.limit.is_adaptive())?;
                let table = file.tools.get(name)?;
                file.located(
                    FileKey {
                        tool: Some(name),
                        key: "limit",
                    },
                    &table.limit,
                )
            });
            if let Some(input) = adaptive {
                bail!(
                    "invalid {input}: a shared limit is fixed (an adaptive limit learns from \
                     one process); drop shared_limit or use a fixed limit"
                );
            }
        }
        // Every hold keeps a slot: a cap below the limit would end holds of
        // tasks still working to make room for new ones.
        let limit = config.effective_max_limit();
        let max_task_holds = match max_task_holds {
            Some(n) if n < limit => bail!(
                "invalid {}: must be at least the limit ({limit}: max_concurrent, \
                 or max_limit if higher)",
                given(task_holds_input, "max_task_holds", n),
            ),
            Some(n) => n,
            None => mcp_backpressure::task_holds::DEFAULT_MAX_HOLDS.max(limit),
        };
        // Already implied by the checks above; the library's own word is final.
        config.validate()?;
        Ok(Self {
            config,
            client_key,
            error_code,
            overload_response,
            http_overload_status,
            guarded,
            max_message_bytes,
            cancel_grace,
            max_in_flight,
            buffer_bytes,
            max_connections,
            header_read_timeout,
            body_read_timeout,
            body_stall_timeout,
            body_min_rate,
            small_body_bytes,
            shared,
            max_task_holds,
        })
    }

    /// Builds the limiter. With a shared limit, inside a tokio runtime (its
    /// background tasks start here; Redis is not contacted yet). Overloads
    /// are logged where they are answered (see
    /// [`Refusal`](super::refusal::Refusal)), with the request's id.
    pub fn limiter(&self) -> anyhow::Result<Limiter> {
        let mut builder = Limiter::builder(self.config.clone());
        if let Some(shared) = &self.shared {
            builder = builder.shared(shared.clone());
        }
        Ok(builder.build()?)
    }

    /// The dialect these settings ask for.
    pub fn dialect(&self) -> Dialect {
        Dialect {
            response: self.overload_response,
            http_status: self.http_overload_status,
        }
    }

    /// Whether requests of `method` go through the limiter.
    pub fn is_guarded(&self, method: &str) -> bool {
        self.guarded.iter().any(|m| m == method)
    }
}

/// One setting's value as written, and where: a flag's argument or a value
/// in the file. Both are checked by the same code, and an error names the
/// value as the user wrote it — the flag and its argument
/// (`invalid --tool-weight sleep=heavy: …`), or the key, its value, the file
/// and the line (`invalid tools.sleep.weight = "heavy" in proxy.toml, line
/// 4: …`).
#[derive(Clone, Copy, Debug)]
enum Input<'a> {
    /// A flag's argument.
    Flag {
        /// The flag, e.g. `--tool-weight`.
        flag: FlagName<'a>,
        /// Its whole argument, e.g. `sleep=heavy`.
        arg: &'a str,
        /// The value in it, e.g. `heavy`.
        text: &'a str,
    },
    /// A value in the file.
    Toml {
        /// The value, `None` when the TOML parser itself refused it (then
        /// `text` is read as a flag's would be).
        value: Option<&'a toml::Value>,
        /// Its text in the file.
        text: &'a str,
        /// Its key.
        key: FileKey<'a>,
        /// The file.
        path: &'a Path,
        /// The line the value is on (from 1).
        line: usize,
    },
}

/// A flag's name.
#[derive(Clone, Copy, Debug)]
pub(super) enum FlagName<'a> {
    /// The flag of the setting `key`: `--max-concurrent` for `max_concurrent`.
    Of(&'a str),
    /// A flag named otherwise (`--tool-weight`).
    Is(&'a str),
}

impl fmt::Display for FlagName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagName::Of(key) => write!(f, "--{}", key.replace('_', "-")),
            FlagName::Is(flag) => f.write_str(flag),
        }
    }
}

/// A key of the file: a top-level one, or one of a `[tools."NAME"]` table.
#[derive(Clone, Copy, Debug)]
pub(super) struct FileKey<'a> {
    tool: Option<&'a str>,
    key: &'a str,
}

impl fmt::Display for FileKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tool {
            Some(tool) => write!(f, "tools.{}.{}", toml_key(tool), self.key),
            None => f.write_str(self.key),
        }
    }
}

/// A TOML key as the user would write it: bare when it can be.
pub(super) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// A command-line argument as the user would type it: quoted when it is
/// empty or holds white space or quotes.
pub(super) fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\'' | '\\'));
    if plain {
        arg.to_owned()
    } else {
        format!("{arg:?}")
    }
}

/// The line (from 1) of the byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).unwrap_or(text).matches('\n').count() + 1
}

impl FileSettings {
    /// The top-level `key`'s value, if the file sets it.
    fn written<'a>(
        &'a self,
        key: &'a str,
        value: &'a Option<Spanned<toml::Value>>,
    ) -> Option<Input<'a>> {
        self.located(FileKey { tool: None, key }, value)
    }

    /// `value` under `key`, located in the file.
    fn located<'a>(
        &'a self,
        key: FileKey<'a>,
        value: &'a Option<Spanned<toml::Value>>,
    ) -> Option<Input<'a>> {
        let value = value.as_ref()?;
        let text = self.text.get(value.span()).unwrap_or_default().trim();
        Some(Input::Toml {
            value: Some(value.get_ref()),
            text,
            key,
            path: &self.path,
            line: line_of(&self.text, value.span().start),
        })
    }
}

impl FileSettings {
    /// The setting `key`: its flag's value if given (a flag overrides the
    /// file), else the file's.
    fn pick<'a>(
        &'a self,
        key: &'a str,
        flag: &'a Option<String>,
        value: &'a Option<Spanned<toml::Value>>,
    ) -> Option<Input<'a>> {
        match flag {
            Some(text) => Some(Input::Flag {
                flag: FlagName::Of(key),
                arg: text,
                text,
            }),
            None => self.written(key, value),
        }
    }
}

/// An [`Input`] read as a number.
enum Number {
    /// A whole number; out of the range of `i128` as `i128::MIN`/`MAX`.
    Int(i128),
    Float(f64),
    /// Not a number at all (other text, a string, a boolean, a table...).
    Not,
}

fn number_of_text(text: &str) -> Number {
    match text.parse::<i128>() {
        Ok(i) => Number::Int(i),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Number::Int(i128::MAX),
        Err(e) if *e.kind() == IntErrorKind::NegOverflow => Number::Int(i128::MIN),
        Err(_) => text.parse::<f64>().map_or(Number::Not, Number::Float),
    }
}

impl Input<'_> {
    fn number(self) -> Number {
        match self {
            Input::Flag { text, .. }
            | Input::Toml {
                value: None, text, ..
            } => number_of_text(text),
            Input::Toml {
                value: Some(toml::Value::Integer(i)),
                ..
            } => Number::Int(i128::from(*i)),
            Input::Toml {
                value: Some(toml::Value::Float(f)),
                ..
            } => Number::Float(*f),
            Input::Toml { .. } => Number::Not,
        }
    }

    /// How the user named the setting: the flag, or the file's key.
    fn name(&self) -> String {
        match self {
            Input::Flag { flag, .. } => flag.to_string(),
            Input::Toml { key, .. } => key.to_string(),
        }
    }
}

impl<'a> Input<'a> {
    /// The value as text, when it is (a flag's, or a TOML string).
    fn text(self) -> Option<&'a str> {
        match self {
            Input::Flag { text, .. } => Some(text),
            Input::Toml {
                value: Some(toml::Value::String(text)),
                ..
            } => Some(text.as_str()),
            Input::Toml { .. } => None,
        }
    }
}

/// What the user wrote, for an error's `invalid …:` — the flag with its
/// argument, or the key with its value, the file and the line.
impl fmt::Display for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Flag { flag, arg, .. } => write!(f, "{flag} {}", shell_word(arg)),
            Input::Toml {
                text,
                key,
                path,
                line,
                ..
            } => {
                let text = if text.is_empty() { "\"\"" } else { text };
                write!(f, "{key} = {text} in {}, line {line}", path.display())
            }
        }
    }
}

/// The setting that was given, or its default, for an error's `invalid …:`.
fn given(input: Option<Input<'_>>, key: &str, value: impl fmt::Display) -> String {
    match input {
        Some(input) => input.to_string(),
        None => format!("{key} = {value} (the default)"),
    }
}

/// Another setting a value is checked against, named as the user gave it,
/// with its value: `--retry-after-min (5)`, `retry_after_min (5)`,
/// `retry_after_min (0.01, the default)`.
fn against(input: Option<Input<'_>>, key: &str, value: impl fmt::Display) -> String {
    match input {
        Some(input) => format!("{} ({value})", input.name()),
        None => format!("{key} ({value}, the default)"),
    }
}

/// A duration as a number of seconds, as the settings are written.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// A whole-number setting in `min..=usize::MAX`.
#[derive(Clone, Copy, Debug)]
struct Count {
    name: &'static str,
    min: usize,
}

impl Count {
    const fn new(name: &'static str, min: usize) -> Self {
        Self { name, min }
    }

    fn get(self, input: Option<Input<'_>>) -> anyhow::Result<Option<usize>> {
        input.map(|input| self.check(input)).transpose()
    }

    fn check(self, input: Input<'_>) -> anyhow::Result<usize> {
        count(self.min, input)
    }
}

/// A whole number in `min..=usize::MAX`.
fn count(min: usize, input: Input<'_>) -> anyhow::Result<usize> {
    let why = match input.number() {
        Number::Int(i) => match usize::try_from(i) {
            Ok(n) if n >= min => return Ok(n),
            Err(_) if i > 0 => format!("must be at most {}", usize::MAX),
            _ if min == 0 => "must not be negative".to_owned(),
            _ => format!("must be at least {min}"),
        },
        Number::Float(_) | Number::Not => "must be a whole number".to_owned(),
    };
    bail!("invalid {input}: {why}")
}

/// A duration setting, in seconds (fractions allowed), at most
/// [`MAX_SECONDS`]; zero only if `zero_ok`.
#[derive(Clone, Copy, Debug)]
struct Seconds {
    name: &'static str,
    zero_ok: bool,
}

impl Seconds {
    const fn positive(name: &'static str) -> Self {
        Self {
            name,
            zero_ok: false,
        }
    }

    const fn non_negative(name: &'static str) -> Self {
        Self {
            name,
            zero_ok: true,
        }
    }

    fn get(self, input: Option<Input<'_>>) -> anyhow::Result<Option<Duration>> {
        input.map(|input| self.check(input)).transpose()
    }

    fn check(self, input: Input<'_>) -> anyhow::Result<Duration> {
        let value = match input.number() {
            // Precision loss above 2^53 s is irrelevant: such values are refused.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
            Number::Not => f64::NAN,
        };
        let why = if value.is_nan() {
            "must be a number of seconds".to_owned()
        } else if value < 0.0 && self.zero_ok {
            "must not be negative".to_owned()
        } else if value <= 0.0 && !self.zero_ok {
            "must be greater than 0".to_owned()
        } else if value > MAX_SECONDS as f64 {
            format!("must be at most {MAX_SECONDS} seconds (365 days)")
        } else {
            match Duration::try_from_secs_f64(value) {
                Ok(duration) if duration.is_zero() && !self.zero_ok => {
                    "must be at least 1 nanosecond".to_owned()
                }
                Ok(duration) => return Ok(duration),
                Err(e) => e.to_string(),
            }
        };
        bail!("invalid {input}: {why}")
    }
}

/// A setting with a few named values: `parse` reads the text (a TOML
/// string); anything else is refused with `expected` listed.
fn choice<T>(
    expected: &str,
    input: Input<'_>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> anyhow::Result<T> {
    match input.text().and_then(parse) {
        Some(value) => Ok(value),
        None => bail!("invalid {input}: must be {expected}"),
    }
}

/// `limit`, `min_limit`, `max_limit`: the global limit's algorithm and bounds.
fn set_limit<'a>(
    config: &mut LimiterConfig,
    args: &'a LimitArgs,
    file: &'a FileSettings,
) -> anyhow::Result<()> {
    let pick = |key, flag: &'a Option<String>, value| file.pick(key, flag, value);
    let algorithm_input = pick("limit", &args.limit, &file.limit);
    let algorithm = algorithm_input
        .map(algorithm)
        .transpose()?
        .unwrap_or_default();
    let min_input = pick("min_limit", &args.min_limit, &file.min_limit);
    let max_input = pick("max_limit", &args.max_limit, &file.max_limit);
    let start = Start {
        max_concurrent: config.max_concurrent,
        named: against(
            pick("max_concurrent", &args.max_concurrent, &file.max_concurrent),
            "max_concurrent",
            config.max_concurrent,
        ),
        limit: algorithm_input
            .map_or_else(|| "--limit (limit in the file)".to_owned(), |i| i.name()),
    };
    let (min_limit, max_limit) = bounds(&start, algorithm, min_input, max_input)?;
    *config = config
        .clone()
        .with_limit(algorithm, min_limit.unwrap_or(1), max_limit);
    Ok(())
}

/// A limit algorithm's name (`limit`, `tools."NAME".limit`).
fn algorithm(input: Input<'_>) -> anyhow::Result<LimitAlgorithm> {
    choice("one of fixed, aimd, gradient2, vegas", input, |text| {
        text.parse().ok()
    })
}

/// Where a limit starts, for the messages about its bounds: its
/// `max_concurrent` (and how the user gave it), and how the user names its
/// algorithm's setting.
pub(super) struct Start {
    pub(super) max_concurrent: usize,
    /// `--max-concurrent (5)`, `tools.sleep.max_concurrent (2)`, …
    pub(super) named: String,
    /// `--limit`, `limit`, `tools.sleep.limit`.
    pub(super) limit: String,
}

/// `min_limit` and `max_limit` of a limit starting at `start`: only with an
/// adaptive algorithm, and `min_limit <= max_concurrent <= max_limit`.
fn bounds(
    start: &Start,
    algorithm: LimitAlgorithm,
    min_input: Option<Input<'_>>,
    max_input: Option<Input<'_>>,
) -> anyhow::Result<(Option<usize>, Option<usize>)> {
    let min_limit = min_input.map(|i| count(1, i)).transpose()?;
    let max_limit = max_input.map(|i| count(1, i)).transpose()?;
    for input in [min_input, max_input].into_iter().flatten() {
        if !algorithm.is_adaptive() {
            bail!(
                "invalid {input}: only an adaptive limit has bounds \
                 (set {} to aimd, gradient2 or vegas; it is {algorithm})",
                start.limit
            );
        }
    }
    let max_concurrent = start.max_concurrent;
    if let (Some(min), Some(input)) = (min_limit, min_input)
        && min > max_concurrent
    {
        bail!("invalid {input}: must not be above {}", start.named);
    }
    if let (Some(max), Some(input)) = (max_limit, max_input)
        && max < max_concurrent
    {
        bail!("invalid {input}: must not be below {}", start.named);
    }
    Ok((min_limit, max_limit))
}

/// `error_code`: a JSON-RPC error code, a 32-bit integer.
fn error_code(input: Input<'_>) -> anyhow::Result<i32> {
    if let Number::Int(i) = input.number()
        && let Ok(code) = i32::try_from(i)
    {
        return Ok(code);
    }
    bail!(
        "invalid {input}: must be a whole number from {} to {}",
        i32::MIN,
        i32::MAX
    )
}

/// `http_overload_status`: 200, 429 or 503 (a number, or its text).
fn http_overload_status(input: Input<'_>) -> anyhow::Result<OverloadStatus> {
    let code = match input {
        Input::Toml {
            value: Some(toml::Value::String(text)),
            ..
        } => text.parse().ok(),
        _ => match input.number() {
            Number::Int(i) => Some(i),
            _ => None,
        },
    };
    match code.and_then(OverloadStatus::from_code) {
        Some(status) => Ok(status),
        None => bail!("invalid {input}: must be 200, 429 or 503"),
    }
}

/// `guarded` from the file: a list of strings.
fn guarded_from_file(input: Input<'_>) -> anyhow::Result<Vec<String>> {
    let list = match input {
        Input::Toml {
            value: Some(value), ..
        } => value.as_array(),
        _ => None,
    };
    let methods = list.and_then(|methods| {
        methods
            .iter()
            .map(|m| m.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    });
    match methods {
        Some(methods) => Ok(methods),
        None => bail!("invalid {input}: must be a list of method names, e.g. [\"tools/call\"]"),
    }
}

/// The guarded methods, from `input` (the file's list, or one `--guard`).
fn check_methods(methods: &[String], input: Input<'_>) -> anyhow::Result<()> {
    if methods.is_empty() {
        bail!("invalid {input}: must name at least one method");
    }
    for method in methods {
        if method.trim().is_empty() {
            bail!("invalid {input}: a method name must not be empty, got {method:?}");
        }
        if method.trim() != method {
            bail!(
                "invalid {input}: a method name must not begin or end with white space, \
                 got {method:?}"
            );
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> anyhow::Result<FileSettings> {
    let mut file: FileSettings =
        toml::from_str(text).map_err(|error| match refused_value(text, &error, path) {
            Some(named) => named,
            None => {
                anyhow::Error::new(error).context(format!("invalid config file {}", path.display()))
            }
        })?;
    file.text = text.to_owned();
    file.path = path.to_owned();
    Ok(file)
}

/// A value the TOML parser itself refused (an integer beyond 64 bits, a float
/// beyond `f64`, a missing value) on a `key = value` line of one of our
/// numeric settings: checked as if given as a flag, so that the error names
/// the setting in the same words. `None` for any other parse error.
fn refused_value(text: &str, error: &toml::de::Error, path: &Path) -> Option<anyhow::Error> {
    let span = error.span()?;
    let before = text.get(..span.start)?;
    // Only top-level keys: in a `[tools."NAME"]` table the same key names
    // another setting.
    if before.lines().any(|l| l.trim_start().starts_with('[')) {
        return None;
    }
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    let input = |key| Input::Toml {
        value: None,
        text: text.get(span.clone()).unwrap_or_default().trim(),
        key: FileKey { tool: None, key },
        path,
        line: line_of(text, span.start),
    };
    if let Some(count) = COUNTS.iter().find(|c| c.name == key) {
        count.check(input(count.name)).err()
    } else if let Some(seconds) = SECONDS.iter().find(|s| s.name == key) {
        seconds.check(input(seconds.name)).err()
    } else if key == "error_code" {
        error_code(input("error_code")).err()
    } else if key == "http_overload_status" {
        http_overload_status(input("http_overload_status")).err()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mcp_backpressure::ToolConfig;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    /// The flags, parsed by clap as on the command line.
    fn flags(argv: &[&str]) -> LimitArgs {
        Cli::try_parse_from(std::iter::once("proxy").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .limits
    }

    fn file(text: &str) -> FileSettings {
        parse_file(text, Path::new("test.toml")).unwrap()
    }

    fn error(args: &LimitArgs, text: &str) -> String {
        format!("{:#}", Settings::merge(args, &file(text)).unwrap_err())
    }

    /// The error for `argv` (with `--max-concurrent 1` unless it sets it).
    fn flag_error(argv: &[&str]) -> String {
        let mut all = argv.to_vec();
        if !argv.contains(&"--max-concurrent") {
            all.extend(["--max-concurrent", "1"]);
        }
        match Settings::merge(&flags(&all), &FileSettings::default()) {
            Ok(settings) => panic!("{argv:?} accepted: {settings:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// The error for the file `text` (with `max_concurrent = 1` unless it sets
    /// it), whether the TOML parser or our check refuses it.
    fn file_error(text: &str) -> String {
        let text = if text.contains("max_concurrent") {
            text.to_owned()
        } else {
            format!("max_concurrent = 1\n{text}")
        };
        match parse_file(&text, Path::new("test.toml"))
            .and_then(|file| Settings::merge(&LimitArgs::default(), &file))
        {
            Ok(settings) => panic!("{text:?} accepted: {settings:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn the_file_sets_every_setting() {
        let settings = Settings::merge(
            &LimitArgs::default(),
            &file(
                "max_concurrent = 3\nqueue_size = 7\nqueue_timeout = 0.5\nretry_after_min = 1\n\
                 retry_after_max = 2\ninitial_service_time = 0.25\nerror_code = -32001\n\
                 guarded = [\"tools/call\", \"resources/read\"]\nmax_message_bytes = 4096\n\
                 cancel_grace = 0\nmax_in_flight = 10\nbuffer_bytes = 65536\n\
                 max_connections = 2\nheader_read_timeout = 1.5\nbody_read_timeout = 3\n\
                 body_stall_timeout = 0.5\nbody_min_rate = 0\nsmall_body_bytes = 100\n",
            ),
        )
        .unwrap();
        assert_eq!(settings.config.max_concurrent, 3);
        assert_eq!(settings.config.queue_size, 7);
        assert_eq!(settings.config.queue_timeout, Duration::from_millis(500));
        assert_eq!(settings.config.retry_after_min, Duration::from_secs(1));
        assert_eq!(settings.config.retry_after_max, Duration::from_secs(2));
        assert_eq!(
            settings.config.initial_service_time,
            Duration::from_millis(250)
        );
        assert_eq!(settings.error_code, -32001);
        assert!(settings.is_guarded("resources/read"));
        assert!(!settings.is_guarded("ping"));
        assert_eq!(settings.max_message_bytes, 4096);
        assert_eq!(settings.cancel_grace, Duration::ZERO);
        assert_eq!(settings.max_in_flight, 10);
        assert_eq!(settings.buffer_bytes, 65536);
        assert_eq!(settings.max_connections, 2);
        assert_eq!(settings.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(settings.body_read_timeout, Duration::from_secs(3));
        assert_eq!(settings.body_stall_timeout, Duration::from_millis(500));
        assert_eq!(settings.body_min_rate, 0);
        assert_eq!(settings.small_body_bytes, 100);
    }

    #[test]
    fn the_flags_set_every_setting() {
        let args = flags(&[
            "--max-concurrent",
            "3",
            "--queue-size",
            "7",
            "--queue-timeout",
            "0.5",
            "--retry-after-min",
            "1",
            "--retry-after-max",
            "2",
            "--initial-service-time",
            "0.25",
            "--error-code",
            "-32001",
            "--guard",
            "tools/call",
            "--guard",
            "resources/read",
            "--max-message-bytes",
            "4096",
            "--cancel-grace",
            "0.75",
            "--max-in-flight",
            "10",
            "--buffer-bytes",
            "65536",
            "--max-connections",
            "2",
            "--header-read-timeout",
            "1.5",
            "--body-read-timeout",
            "3",
            "--body-stall-timeout",
            "0.5",
            "--body-min-rate",
            "0",
            "--small-body-bytes",
            "100",
        ]);
        let settings = Settings::merge(&args, &FileSettings::default()).unwrap();
        assert_eq!(settings.config.max_concurrent, 3);
        assert_eq!(settings.config.queue_size, 7);
        assert_eq!(settings.config.queue_timeout, Duration::from_millis(500));
        assert_eq!(settings.config.retry_after_min, Duration::from_secs(1));
        assert_eq!(settings.config.retry_after_max, Duration::from_secs(2));
        assert_eq!(
            settings.config.initial_service_time,
            Duration::from_millis(250)
        );
        assert_eq!(settings.error_code, -32001);
        assert_eq!(settings.guarded, ["tools/call", "resources/read"]);
        assert_eq!(settings.max_message_bytes, 4096);
        assert_eq!(settings.cancel_grace, Duration::from_millis(750));
        assert_eq!(settings.max_in_flight, 10);
        assert_eq!(settings.buffer_bytes, 65536);
        assert_eq!(settings.max_connections, 2);
        assert_eq!(settings.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(settings.body_read_timeout, Duration::from_secs(3));
        assert_eq!(settings.body_stall_timeout, Duration::from_millis(500));
        assert_eq!(settings.body_min_rate, 0);
        assert_eq!(settings.small_body_bytes, 100);
    }

    #[test]
    fn flags_override_the_file() {
        let args = flags(&[
            "--max-concurrent",
            "9",
            "--queue-timeout",
            "2",
            "--guard",
            "prompts/get",
            "--cancel-grace",
            "1",
        ]);
        let settings = Settings::merge(
            &args,
            &file("max_concurrent = 3\nqueue_timeout = 5\ncancel_grace = 7\nmax_connections = 8"),
        )
        .unwrap();
        assert_eq!(settings.config.max_concurrent, 9);
        assert_eq!(settings.config.queue_timeout, Duration::from_secs(2));
        assert_eq!(settings.guarded, ["prompts/get"]);
        assert_eq!(settings.cancel_grace, Duration::from_secs(1));
        assert_eq!(settings.max_connections, 8);
    }

    #[test]
    fn defaults() {
        // Unset bounds grow with what they bound.
        let grown = Settings::merge(
            &LimitArgs::default(),
            &file("max_concurrent = 2\nqueue_size = 5000\nmax_message_bytes = 33554432"),
        )
        .unwrap();
        assert_eq!(
            (grown.max_in_flight, grown.buffer_bytes),
            (5002, 33_554_432)
        );
        let settings = Settings::merge(&LimitArgs::default(), &file("max_concurrent = 1")).unwrap();
        assert_eq!(settings.config, LimiterConfig::new(1));
        assert_eq!(settings.error_code, jsonrpc::DEFAULT_OVERLOAD_CODE);
        assert_eq!(settings.guarded, ["tools/call"]);
        assert_eq!(settings.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(settings.cancel_grace, DEFAULT_CANCEL_GRACE);
        assert_eq!(settings.max_in_flight, 4096);
        assert_eq!(settings.buffer_bytes, 16 * 1024 * 1024);
        assert_eq!(settings.max_connections, 1024);
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.body_read_timeout, Duration::from_secs(20));
        assert_eq!(settings.body_stall_timeout, Duration::from_secs(5));
        assert_eq!(settings.body_min_rate, 1024);
        assert_eq!(settings.small_body_bytes, 64 * 1024);
        let with = Settings::with_defaults(LimiterConfig::new(1));
        assert_eq!(
            (with.max_in_flight, with.buffer_bytes, with.cancel_grace),
            (
                settings.max_in_flight,
                settings.buffer_bytes,
                settings.cancel_grace
            )
        );
    }

    /// Every numeric setting refuses every kind of bad value, from the flag and
    /// from the file, with the same words, naming what the user wrote:
    /// `invalid --flag VALUE: <why>`, `invalid key = VALUE in FILE, line N: <why>`.
    #[test]
    fn every_bad_number_is_refused_with_the_setting_named() {
        // (value as a flag, the same in TOML, why)
        let counts = |min: usize| {
            let below = if min == 0 {
                "must not be negative".to_owned()
            } else {
                format!("must be at least {min}")
            };
            let below_value = min as i128 - 1;
            vec![
                (
                    below_value.to_string(),
                    below_value.to_string(),
                    below.clone(),
                ),
                ("-3".to_owned(), "-3".to_owned(), below.clone()),
                (
                    "-99999999999999999999999999999999999999999".to_owned(),
                    "-99999999999999999999999999999999999999999".to_owned(),
                    below,
                ),
                (
                    "18446744073709551616".to_owned(),
                    "18446744073709551616".to_owned(),
                    "must be at most 18446744073709551615".to_owned(),
                ),
                (
                    "99999999999999999999999999999999999999999".to_owned(),
                    "99999999999999999999999999999999999999999".to_owned(),
                    "must be at most 18446744073709551615".to_owned(),
                ),
                ("1.5".into(), "1.5".into(), "must be a whole number".into()),
                ("NaN".into(), "nan".into(), "must be a whole number".into()),
                ("inf".into(), "inf".into(), "must be a whole number".into()),
                (
                    "1e400".into(),
                    "1e400".into(),
                    "must be a whole number".into(),
                ),
                ("".into(), "\"\"".into(), "must be a whole number".into()),
                (
                    "five".into(),
                    "\"five\"".into(),
                    "must be a whole number".into(),
                ),
                (
                    "0x10".into(),
                    "true".into(),
                    "must be a whole number".into(),
                ),
            ]
        };
        let seconds = |zero_ok: bool| {
            let negative = if zero_ok {
                "must not be negative"
            } else {
                "must be greater than 0"
            };
            let mut cases: Vec<(String, String, String)> = vec![
                ("-1".into(), "-1".into(), negative.into()),
                ("-0.5".into(), "-0.5".into(), negative.into()),
                (
                    "NaN".into(),
                    "nan".into(),
                    "must be a number of seconds".into(),
                ),
                (
                    "".into(),
                    "\"\"".into(),
                    "must be a number of seconds".into(),
                ),
                (
                    "30s".into(),
                    "\"30s\"".into(),
                    "must be a number of seconds".into(),
                ),
                (
                    "x".into(),
                    "[1]".into(),
                    "must be a number of seconds".into(),
                ),
            ];
            for huge in [
                "inf",
                "1e400",
                "1e30",
                "31536001",
                "99999999999999999999999",
            ] {
                cases.push((
                    huge.into(),
                    huge.into(),
                    "must be at most 31536000 seconds (365 days)".into(),
                ));
            }
            if !zero_ok {
                cases.push(("0".into(), "0".into(), negative.into()));
                cases.push((
                    "1e-12".into(),
                    "1e-12".into(),
                    "must be at least 1 nanosecond".into(),
                ));
            }
            cases
        };
        let mut all = Vec::new();
        for count in COUNTS {
            all.push((count.name, counts(count.min)));
        }
        for s in SECONDS {
            all.push((s.name, seconds(s.zero_ok)));
        }
        let code_why = "must be a whole number from -2147483648 to 2147483647";
        all.push((
            "error_code",
            ["2147483648", "-2147483649", "1.5", "NaN"]
                .into_iter()
                .map(|v| (v.to_owned(), v.replace("NaN", "nan"), code_why.to_owned()))
                .chain([("".into(), "\"\"".into(), code_why.into())])
                .collect(),
        ));
        for (name, cases) in all {
            let flag = format!("--{}", name.replace('_', "-"));
            for (text, toml, why) in cases {
                let from_flag = flag_error(&[flag.as_str(), text.as_str()]);
                let shown = if text.is_empty() {
                    "\"\"".to_owned()
                } else {
                    text.clone()
                };
                assert_eq!(
                    from_flag,
                    format!("invalid {flag} {shown}: {why}"),
                    "{flag} {text:?}"
                );
                let line = if name == "max_concurrent" { 1 } else { 2 };
                let from_file = file_error(&format!("{name} = {toml}\n"));
                assert_eq!(
                    from_file,
                    format!("invalid {name} = {toml} in test.toml, line {line}: {why}"),
                    "{name} = {toml}"
                );
            }
        }
    }

    /// Values that clap would take for options (`-inf`) need `--flag=value`.
    #[test]
    fn negative_values_reach_the_check() {
        for (argv, expected) in [
            (
                &["--queue-size", "-3"][..],
                "invalid --queue-size -3: must not be negative",
            ),
            (
                &["--max-concurrent", "-1"],
                "invalid --max-concurrent -1: must be at least 1",
            ),
            (
                &["--cancel-grace", "-1"],
                "invalid --cancel-grace -1: must not be negative",
            ),
            (
                &["--cancel-grace", "-1e400"],
                "invalid --cancel-grace -1e400: must not be negative",
            ),
            (
                &["--queue-timeout=-inf"],
                "invalid --queue-timeout -inf: must be greater than 0",
            ),
            (
                &["--error-code", "-2147483649"],
                "invalid --error-code -2147483649",
            ),
        ] {
            let message = flag_error(argv);
            assert!(message.starts_with(expected), "{argv:?}: {message}");
        }
    }

    #[test]
    fn settings_that_bound_each_other() {
        for (argv, expected) in [
            (
                &["--retry-after-min", "5", "--retry-after-max", "1"][..],
                "invalid --retry-after-max 1: must not be below --retry-after-min (5)",
            ),
            (
                &["--retry-after-min", "100"],
                "invalid retry_after_max = 60 (the default): must not be below --retry-after-min (100)",
            ),
            (
                &[
                    "--max-concurrent",
                    "5",
                    "--queue-size",
                    "10",
                    "--max-in-flight",
                    "14",
                ],
                "invalid --max-in-flight 14: must be at least max_concurrent + queue_size (5 + 10 = 15)",
            ),
            (
                &["--max-message-bytes", "100000", "--buffer-bytes", "65536"],
                "invalid --buffer-bytes 65536: must be at least --max-message-bytes (100000)",
            ),
        ] {
            assert_eq!(flag_error(argv), expected, "{argv:?}");
        }
        // Exactly at the bound is fine.
        let args = flags(&[
            "--max-concurrent",
            "5",
            "--queue-size",
            "10",
            "--max-in-flight",
            "15",
            "--retry-after-min",
            "1",
            "--retry-after-max",
            "1",
        ]);
        assert!(Settings::merge(&args, &FileSettings::default()).is_ok());
        // Huge values do not overflow the sum.
        let max = usize::MAX.to_string();
        let message = flag_error(&["--max-concurrent", &max, "--queue-size", &max]);
        assert!(
            message.starts_with(&format!("invalid max_in_flight = {max} (the default)")),
            "{message}"
        );
    }

    #[test]
    fn max_concurrent_is_required() {
        let none = LimitArgs::default();
        assert!(error(&none, "").starts_with("invalid max_concurrent: required"));
        assert_eq!(
            error(&none, "max_concurrent = 0"),
            "invalid max_concurrent = 0 in test.toml, line 1: must be at least 1"
        );
    }

    #[test]
    fn guarded_methods_are_checked() {
        for argv in [
            &["--guard", ""][..],
            &["--guard", "tools/call", "--guard", " "],
        ] {
            let message = flag_error(argv);
            assert!(
                message.starts_with("invalid --guard "),
                "{argv:?}: {message}"
            );
            assert!(
                message.contains(": a method name must not be empty, got "),
                "{argv:?}: {message}"
            );
        }
        assert_eq!(
            flag_error(&["--guard", " tools/call"]),
            "invalid --guard \" tools/call\": a method name must not begin or end with white space, \
             got \" tools/call\""
        );
        for (toml, expected) in [
            (
                "guarded = \"tools/call\"",
                "invalid guarded = \"tools/call\" in test.toml, line 2: must be a list of method \
                 names, e.g. [\"tools/call\"]",
            ),
            (
                "guarded = [1]",
                "invalid guarded = [1] in test.toml, line 2: must be a list of method names, \
                 e.g. [\"tools/call\"]",
            ),
            (
                "guarded = []",
                "invalid guarded = [] in test.toml, line 2: must name at least one method",
            ),
            (
                "guarded = [\"\"]",
                "invalid guarded = [\"\"] in test.toml, line 2: a method name must not be empty, \
                 got \"\"",
            ),
        ] {
            assert_eq!(file_error(toml), expected, "{toml}");
        }
    }

    /// Values the TOML parser refuses before our check sees them are named too.
    #[test]
    fn values_the_toml_parser_refuses_name_the_setting() {
        for (toml, expected) in [
            (
                "queue_size = 99999999999999999999",
                "invalid queue_size = 99999999999999999999 in test.toml, line 2: must be at most \
                 18446744073709551615",
            ),
            (
                "max_connections = -99999999999999999999",
                "invalid max_connections = -99999999999999999999 in test.toml, line 2: must be at \
                 least 1",
            ),
            (
                "queue_timeout = 1e400",
                "invalid queue_timeout = 1e400 in test.toml, line 2: must be at most 31536000 \
                 seconds (365 days)",
            ),
            (
                "error_code = 99999999999999999999",
                "invalid error_code = 99999999999999999999 in test.toml, line 2: must be a whole \
                 number from -2147483648 to 2147483647",
            ),
            (
                "cancel_grace = ",
                "invalid cancel_grace = \"\" in test.toml, line 2: must be a number of seconds",
            ),
        ] {
            assert_eq!(file_error(toml), expected, "{toml}");
        }
        // Anything else is the parser's error, with the file named.
        let message = file_error("queue_size = 5\nqueue_size = 6");
        assert!(
            message.starts_with("invalid config file test.toml"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_named() {
        let message = file_error("max_concurent = 1");
        assert!(message.contains("max_concurent"), "{message}");
        assert!(message.contains("test.toml"), "{message}");
    }

    /// Every flag's help gives its default (or says it is required) and, for
    /// a quantity, its unit.
    #[test]
    fn every_help_gives_the_default_and_the_unit() {
        use clap::CommandFactory;
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "config" | "help") {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains("[default: ") || help.contains("Required"),
                "--{id}: {help}"
            );
            let value = arg
                .get_value_names()
                .map(|names| names.join(" "))
                .unwrap_or_default();
            if value == "SECONDS" {
                assert!(help.contains("in seconds"), "--{id}: {help}");
            }
            if value == "BYTES" {
                assert!(help.contains("in bytes"), "--{id}: {help}");
            }
        }
    }

    #[test]
    fn the_file_sets_limits_tools_and_clients() {
        let settings = Settings::merge(
            &LimitArgs::default(),
            &file(
                "max_concurrent = 8\nlimit = \"aimd\"\nmin_limit = 2\nmax_limit = 16\n\
                 queue_discipline = \"codel\"\ndefault_tool_limit = 3\nclient_limit = 4\n\
                 client_key = \"header:X-Client-Id\"\nmax_tracked_keys = 50\n\
                 [tools.report]\nmax_concurrent = 2\nweight = 4\nlimit = \"vegas\"\n\
                 min_limit = 1\nmax_limit = 6\n\
                 [tools.\"search.v2\"]\nweight = 2\n",
            ),
        )
        .unwrap();
        let config = &settings.config;
        assert_eq!(config.limit, LimitAlgorithm::Aimd);
        assert_eq!((config.min_limit, config.max_limit), (2, Some(16)));
        assert_eq!(config.discipline, QueueDiscipline::CODEL);
        assert_eq!(config.default_tool_limit, Some(3));
        assert_eq!(config.client_limit, Some(4));
        assert_eq!(config.max_tracked_keys, 50);
        assert_eq!(settings.client_key.to_string(), "header:x-client-id");
        assert_eq!(
            config.tools["report"],
            ToolConfig::new()
                .with_max_concurrent(2)
                .with_weight(4)
                .with_limit(LimitAlgorithm::Vegas, 1, Some(6))
        );
        assert_eq!(config.tools["search.v2"], ToolConfig::new().with_weight(2));
        assert_eq!(config.tools.len(), 2);
    }

    #[test]
    fn tool_flags_override_the_files_keys_of_that_tool() {
        let args = flags(&[
            "--tool-limit",
            "report=1",
            "--tool-weight",
            "search=3",
            "--tool-limit",
            "a=b=2",
            "--limit",
            "gradient2",
            "--queue-discipline",
            "adaptive-lifo",
            "--client-key",
            "session",
            "--client-limit",
            "1",
        ]);
        let settings = Settings::merge(
            &args,
            &file(
                "max_concurrent = 4\nlimit = \"fixed\"\nclient_limit = 9\n\
                 [tools.report]\nmax_concurrent = 3\nweight = 2\n",
            ),
        )
        .unwrap();
        let tools = &settings.config.tools;
        assert_eq!(
            tools["report"],
            ToolConfig::new().with_max_concurrent(1).with_weight(2)
        );
        assert_eq!(tools["search"], ToolConfig::new().with_weight(3));
        assert_eq!(tools["a=b"], ToolConfig::new().with_max_concurrent(2));
        assert_eq!(settings.config.limit, LimitAlgorithm::Gradient2);
        assert_eq!(settings.config.discipline, QueueDiscipline::ADAPTIVE_LIFO);
        assert_eq!(settings.config.client_limit, Some(1));
        assert_eq!(settings.client_key, ClientKey::Session);
        // Unset: nothing of the kind.
        let plain = Settings::merge(&LimitArgs::default(), &file("max_concurrent = 4")).unwrap();
        assert_eq!(plain.config, LimiterConfig::new(4));
        assert_eq!(plain.client_key, ClientKey::None);
    }

    /// Each new setting refuses a bad value naming the flag or the key.
    #[test]
    fn bad_tool_client_and_limit_settings_are_named() {
        for (argv, expected) in [
            (
                &["--tool-limit", "report"][..],
                "invalid --tool-limit report: expected NAME=N (e.g. report=2)",
            ),
            (
                &["--tool-weight", "report:2"],
                "invalid --tool-weight report:2: expected NAME=W (e.g. report=2)",
            ),
            (
                &["--tool-limit", "=2"],
                "invalid --tool-limit =2: a tool name must not be empty",
            ),
            (
                &["--tool-limit", "*=2"],
                "invalid --tool-limit *=2: \"*\" stands for every tool without a limit of its own; \
                 use default_tool_limit",
            ),
            (
                &["--tool-limit", "a=1", "--tool-limit", "a=2"],
                "invalid --tool-limit a=2: the tool \"a\" is given twice",
            ),
            (
                &["--tool-limit", "report=0"],
                "invalid --tool-limit report=0: must be at least 1",
            ),
            (
                &["--tool-limit", "report=x"],
                "invalid --tool-limit report=x: must be a whole number",
            ),
            (
                &["--tool-weight", "report=0"],
                "invalid --tool-weight report=0: must be at least 1",
            ),
            (
                &["--tool-weight", "report=-1"],
                "invalid --tool-weight report=-1: must be at least 1",
            ),
            (
                &["--limit", "fast"],
                "invalid --limit fast: must be one of fixed, aimd, gradient2, vegas",
            ),
            (
                &["--min-limit", "2"],
                "invalid --min-limit 2: only an adaptive limit has bounds \
                 (set --limit (limit in the file) to aimd, gradient2 or vegas; it is fixed)",
            ),
            (
                &["--limit", "aimd", "--min-limit", "2"],
                "invalid --min-limit 2: must not be above --max-concurrent (1)",
            ),
            (
                &[
                    "--limit",
                    "aimd",
                    "--max-concurrent",
                    "4",
                    "--max-limit",
                    "3",
                ],
                "invalid --max-limit 3: must not be below --max-concurrent (4)",
            ),
            (
                &["--limit", "vegas", "--max-limit", "0"],
                "invalid --max-limit 0: must be at least 1",
            ),
            (
                &["--queue-discipline", "lifo"],
                "invalid --queue-discipline lifo: must be one of fifo, codel, adaptive-lifo",
            ),
            (
                &["--client-key", "cookie"],
                "invalid --client-key cookie: must be session or header:NAME \
                 (e.g. header:x-client-id)",
            ),
            (
                &["--client-key", "header:"],
                "invalid --client-key header:: must be session or header:NAME \
                 (e.g. header:x-client-id)",
            ),
            (
                &["--client-limit", "0"],
                "invalid --client-limit 0: must be at least 1",
            ),
            (
                &["--default-tool-limit", "-1"],
                "invalid --default-tool-limit -1: must be at least 1",
            ),
            (
                &["--max-tracked-keys", "0"],
                "invalid --max-tracked-keys 0: must be at least 1",
            ),
        ] {
            assert_eq!(flag_error(argv), expected, "{argv:?}");
        }
        let long = format!("{}=1", "t".repeat(257));
        assert_eq!(
            flag_error(&["--tool-limit", &long]),
            format!("invalid --tool-limit {long}: a tool name is at most 256 bytes, got 257 bytes")
        );
        for (toml, expected) in [
            (
                "[tools.report]\nweight = 0",
                "invalid tools.report.weight = 0 in test.toml, line 3: must be at least 1",
            ),
            (
                "[tools.report]\nmax_concurrent = \"2\"",
                "invalid tools.report.max_concurrent = \"2\" in test.toml, line 3: \
                 must be a whole number",
            ),
            (
                "[tools.report]\nmax_concurrent = 2\nlimit = \"turbo\"",
                "invalid tools.report.limit = \"turbo\" in test.toml, line 4: must be one of \
                 fixed, aimd, gradient2, vegas",
            ),
            (
                "[tools.report]\nlimit = \"aimd\"",
                "invalid tools.report.limit = \"aimd\" in test.toml, line 3: needs \
                 tools.report.max_concurrent (the limit starts there); set it, or \
                 --tool-limit report=N",
            ),
            (
                "[tools.report]\nmax_concurrent = 2\nmin_limit = 1",
                "invalid tools.report.min_limit = 1 in test.toml, line 4: only an adaptive limit \
                 has bounds (set tools.report.limit to aimd, gradient2 or vegas; it is fixed)",
            ),
            (
                "[tools.report]\nmax_concurrent = 2\nlimit = \"aimd\"\nmax_limit = 1",
                "invalid tools.report.max_limit = 1 in test.toml, line 5: must not be below \
                 tools.report.max_concurrent (2)",
            ),
            (
                "[tools.\"*\"]\nweight = 2",
                "invalid [tools.\"*\"] in test.toml: \"*\" stands for every tool without a limit \
                 of its own; use default_tool_limit",
            ),
            (
                "[tools.\"\"]\nweight = 2",
                "invalid [tools.\"\"] in test.toml: a tool name must not be empty",
            ),
            (
                "limit = 3",
                "invalid limit = 3 in test.toml, line 2: must be one of fixed, aimd, gradient2, vegas",
            ),
            (
                "queue_discipline = \"LIFO\"",
                "invalid queue_discipline = \"LIFO\" in test.toml, line 2: must be one of fifo, \
                 codel, adaptive-lifo",
            ),
            (
                "client_key = [\"session\"]",
                "invalid client_key = [\"session\"] in test.toml, line 2: must be session or \
                 header:NAME (e.g. header:x-client-id)",
            ),
            (
                "client_limit = 99999999999999999999",
                "invalid client_limit = 99999999999999999999 in test.toml, line 2: must be at \
                 most 18446744073709551615",
            ),
        ] {
            let text = format!("max_concurrent = 1\n{toml}");
            assert_eq!(file_error(&text), expected, "{toml}");
        }
        // Unknown keys in a tool's table are named, with the file.
        let message = file_error("[tools.report]\nmax_concurent = 2");
        assert!(message.contains("max_concurent"), "{message}");
        assert!(message.contains("test.toml"), "{message}");
        // A value the TOML parser refuses inside a tool's table is the
        // parser's error (naming the line), not another setting's.
        let message =
            file_error("max_concurrent = 1\n[tools.report]\nmax_concurrent = 99999999999999999999");
        assert!(
            message.starts_with("invalid config file test.toml"),
            "{message}"
        );
        let message = file_error("tools = 5");
        assert!(message.contains("test.toml"), "{message}");
    }

    /// Every error names what the user wrote, whichever way: the flag with
    /// its argument, or the key (as TOML spells it) with its value, the file
    /// and the line — also when a flag and the file meet.
    #[test]
    fn every_setting_names_what_the_user_wrote() {
        let both = |argv: &[&str], text: &str| {
            let mut all = argv.to_vec();
            if !argv.contains(&"--max-concurrent") && !text.starts_with("max_concurrent") {
                all.extend(["--max-concurrent", "1"]);
            }
            format!(
                "{:#}",
                Settings::merge(&flags(&all), &file(text)).expect_err("refused")
            )
        };
        for (argv, text, expected) in [
            (
                &["--tool-weight", "sleep=heavy"][..],
                "",
                "invalid --tool-weight sleep=heavy: must be a whole number",
            ),
            (
                &[],
                "[tools.sleep]\nweight = \"heavy\"",
                "invalid tools.sleep.weight = \"heavy\" in test.toml, line 2: must be a whole number",
            ),
            (
                &[],
                "\ntools.sleep.weight = \"heavy\"",
                "invalid tools.sleep.weight = \"heavy\" in test.toml, line 2: must be a whole number",
            ),
            (
                &[],
                "tools = { sleep = { weight = 0 } }",
                "invalid tools.sleep.weight = 0 in test.toml, line 1: must be at least 1",
            ),
            (
                &[],
                "[tools.\"my.tool\"]\n\nmax_concurrent = -2",
                "invalid tools.\"my.tool\".max_concurrent = -2 in test.toml, line 3: must be at least 1",
            ),
            (
                &["--tool-limit", "my tool=x"],
                "",
                "invalid --tool-limit \"my tool=x\": must be a whole number",
            ),
            // A flag overrides the file's value of the same setting, and is
            // named as the flag.
            (
                &["--tool-weight", "sleep=0"],
                "[tools.sleep]\nweight = 2",
                "invalid --tool-weight sleep=0: must be at least 1",
            ),
            (
                &["--queue-size", "x"],
                "queue_size = 2",
                "invalid --queue-size x: must be a whole number",
            ),
            // One from each side.
            (
                &["--max-concurrent", "5", "--limit", "aimd"],
                "max_limit = 3",
                "invalid max_limit = 3 in test.toml, line 1: must not be below --max-concurrent (5)",
            ),
            (
                &["--retry-after-min", "9"],
                "retry_after_max = 2",
                "invalid retry_after_max = 2 in test.toml, line 1: must not be below \
                 --retry-after-min (9)",
            ),
            (
                &["--max-message-bytes", "100000"],
                "buffer_bytes = 65536",
                "invalid buffer_bytes = 65536 in test.toml, line 1: must be at least \
                 --max-message-bytes (100000)",
            ),
            (
                &[],
                "limit = \"aimd\"\n[tools.report]\nlimit = \"vegas\"",
                "invalid tools.report.limit = \"vegas\" in test.toml, line 3: needs \
                 tools.report.max_concurrent (the limit starts there); set it, or \
                 --tool-limit report=N",
            ),
            (
                &["--guard", "tools/call", "--guard", "ping "],
                "guarded = [\"x\"]",
                "invalid --guard \"ping \": a method name must not begin or end with white space",
            ),
            (
                &["--client-key", "header"],
                "client_key = \"session\"",
                "invalid --client-key header: must be session or header:NAME",
            ),
            (
                &[],
                "\n\nqueue_discipline = 5",
                "invalid queue_discipline = 5 in test.toml, line 3: must be one of fifo, codel, \
                 adaptive-lifo",
            ),
            (
                &["--max-concurrent", "3", "--max-task-holds", "2"],
                "",
                "invalid --max-task-holds 2: must be at least the limit (3",
            ),
            (
                &["--shared-limit", "redis://127.0.0.1:1/0"],
                "shared_key = \"k\"\nlimit = \"gradient2\"",
                "invalid limit = \"gradient2\" in test.toml, line 2: a shared limit is fixed",
            ),
        ] {
            let message = both(argv, text);
            assert!(
                message.starts_with(expected),
                "{argv:?} {text:?}:\n{message}\nexpected\n{expected}"
            );
        }
    }

    /// `overload_response` and `http_overload_status`: from a flag or the
    /// file (a flag wins), defaults, and bad values refused naming the
    /// setting (as the flag or the key) and quoting what was written.
    #[test]
    fn the_overload_dialect_is_read_from_flags_and_the_file() {
        let defaults = Settings::merge(&flags(&["--max-concurrent", "1"]), &file("")).unwrap();
        assert_eq!(defaults.dialect(), Dialect::default());
        assert_eq!(defaults.overload_response, OverloadResponse::Error);
        assert_eq!(defaults.http_overload_status.code(), 200);
        let from_file = Settings::merge(
            &LimitArgs::default(),
            &file(
                "max_concurrent = 1\noverload_response = \"tool-result\"\n\
                 http_overload_status = 503\n",
            ),
        )
        .unwrap();
        assert_eq!(
            from_file.dialect(),
            Dialect {
                response: OverloadResponse::ToolResult,
                http_status: OverloadStatus::ServiceUnavailable,
            }
        );
        let from_flags = Settings::merge(
            &flags(&[
                "--max-concurrent",
                "1",
                "--overload-response",
                "error",
                "--http-overload-status",
                "429",
            ]),
            &file("overload_response = \"tool-result\"\nhttp_overload_status = 503\n"),
        )
        .unwrap();
        assert_eq!(
            from_flags.dialect(),
            Dialect {
                response: OverloadResponse::Error,
                http_status: OverloadStatus::TooManyRequests,
            }
        );
        // The status may be written as a string in the file.
        let quoted = Settings::merge(
            &LimitArgs::default(),
            &file("max_concurrent = 1\nhttp_overload_status = \"200\"\n"),
        )
        .unwrap();
        assert_eq!(quoted.http_overload_status, OverloadStatus::Ok);

        let named = |message: &str, key: &str| {
            message.contains(key) || message.contains(&format!("--{}", key.replace('_', "-")))
        };
        for (argv, why) in [
            (
                ["--overload-response", "toolresult"],
                "must be error or tool-result",
            ),
            (["--overload-response", ""], "must be error or tool-result"),
            (["--http-overload-status", "500"], "must be 200, 429 or 503"),
            (
                ["--http-overload-status", "-503"],
                "must be 200, 429 or 503",
            ),
            (
                ["--http-overload-status", "busy"],
                "must be 200, 429 or 503",
            ),
        ] {
            let message = flag_error(&argv);
            let key = argv[0].trim_start_matches("--").replace('-', "_");
            assert!(named(&message, &key), "{argv:?}: {message}");
            assert!(
                message.contains(&format!("{} {}", argv[0], argv[1])),
                "{message}"
            );
            assert!(message.ends_with(why), "{argv:?}: {message}");
        }
        for (toml, key, why) in [
            (
                "overload_response = \"TOOL-RESULT\"",
                "overload_response",
                "must be error or tool-result",
            ),
            (
                "overload_response = true",
                "overload_response",
                "must be error or tool-result",
            ),
            (
                "http_overload_status = 503.0",
                "http_overload_status",
                "must be 200, 429 or 503",
            ),
            (
                "http_overload_status = \"503 \"",
                "http_overload_status",
                "must be 200, 429 or 503",
            ),
            (
                "http_overload_status = 99999999999999999999",
                "http_overload_status",
                "must be 200, 429 or 503",
            ),
        ] {
            let message = file_error(toml);
            assert!(named(&message, key), "{toml}: {message}");
            assert!(message.contains(toml), "the key as written: {message}");
            assert!(message.ends_with(why), "{toml}: {message}");
        }
    }
}
