//! The typed overload error every rejection produces.
//!
//! [`Overload`] carries the reason, a [`MetricsSnapshot`] taken right after the
//! rejection was counted, and the advertised retry delay. It knows nothing of
//! JSON-RPC: the edges (the rmcp wrapper, the proxy) turn it into a wire error
//! with [`Overload::data`], whose fields keep the names and meanings of the
//! Python package's `data` object.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::MetricsSnapshot;

/// Why a request was not admitted.
///
/// A closed set: metric labels and the wire's `data.reason` come from
/// [`OverloadReason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverloadReason {
    /// Every slot was busy and the limiter has no queue (`queue_size = 0`).
    ConcurrencyLimit,
    /// Every slot was busy and the queue was full.
    QueueFull,
    /// The request waited `queue_timeout` in the queue without getting a slot.
    QueueTimeout,
    /// The queue was standing and the request was shed before its deadline
    /// (the CoDel discipline, see [`QueueDiscipline`](crate::config::QueueDiscipline)).
    QueueShed,
    /// The limit is shared through Redis, Redis could not be reached, and
    /// the shared limit fails closed (see [`FailMode`](crate::shared)).
    SharedUnavailable,
}

impl OverloadReason {
    /// All reasons, in a fixed order.
    pub const ALL: [OverloadReason; 5] = [
        OverloadReason::ConcurrencyLimit,
        OverloadReason::QueueFull,
        OverloadReason::QueueTimeout,
        OverloadReason::QueueShed,
        OverloadReason::SharedUnavailable,
    ];

    /// The reason as it appears on the wire and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            OverloadReason::ConcurrencyLimit => "concurrency_limit",
            OverloadReason::QueueFull => "queue_full",
            OverloadReason::QueueTimeout => "queue_timeout",
            OverloadReason::QueueShed => "queue_shed",
            OverloadReason::SharedUnavailable => "shared_unavailable",
        }
    }
}

impl fmt::Display for OverloadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit refused a request.
///
/// On the wire (`data.scope`): `global`, `tool:NAME` or `client`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// The global limit (or the global queue).
    #[default]
    Global,
    /// The limit of the named tool.
    Tool(String),
    /// The caller's per-client limit, or its share of the queue.
    Client,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Tool(name) => write!(f, "tool:{name}"),
            Scope::Client => f.write_str("client"),
        }
    }
}

/// A request was rejected because the server is overloaded.
///
/// Returned by [`Limiter::acquire`](crate::Limiter::acquire). The snapshot was
/// taken under the limiter's lock right after this rejection was counted, so
/// `snapshot.total_rejected` already includes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server overloaded: {reason}")]
#[non_exhaustive]
pub struct Overload {
    /// Why the request was rejected.
    pub reason: OverloadReason,
    /// The limiter's state right after the rejection was counted.
    pub snapshot: MetricsSnapshot,
    /// How long the client should wait before retrying (see
    /// [`Limiter`](crate::Limiter#the-retry-delay) for the formula).
    pub retry_after: Duration,
    /// The configured queue timeout.
    pub queue_timeout: Duration,
    /// The limit that refused the request.
    pub scope: Scope,
}

impl Overload {
    /// Builds an overload error. Limiters produce these; this constructor is
    /// for edges and tests that need one of their own.
    pub fn new(
        reason: OverloadReason,
        snapshot: MetricsSnapshot,
        retry_after: Duration,
        queue_timeout: Duration,
    ) -> Self {
        Self {
            reason,
            snapshot,
            retry_after,
            queue_timeout,
            scope: Scope::Global,
        }
    }

    /// The same error, attributed to `scope`.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The `data` object of the wire error: the Python package's seven fields
    /// with the same names and meanings, and `scope`.
    pub fn data(&self) -> OverloadData {
        OverloadData {
            reason: self.reason,
            active: self.snapshot.active,
            queued: self.snapshot.queued,
            max_concurrent: self.snapshot.max_concurrent,
            queue_size: self.snapshot.queue_size,
            queue_timeout_ms: duration_ms(self.queue_timeout),
            retry_after_ms: duration_ms(self.retry_after),
            scope: self.scope.to_string(),
        }
    }
}

/// Whole milliseconds, rounded up so that a non-zero delay never reads as 0.
fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The `data` member of the overload error on the wire.
///
/// ```
/// # use mcp_backpressure::{OverloadData, OverloadReason};
/// let data: OverloadData = serde_json::from_str(r#"{
///     "reason": "queue_full", "active": 5, "queued": 10, "max_concurrent": 5,
///     "queue_size": 10, "queue_timeout_ms": 30000, "retry_after_ms": 240,
///     "scope": "tool:report"
/// }"#).unwrap();
/// assert_eq!(data.reason, OverloadReason::QueueFull);
/// assert_eq!(data.scope, "tool:report");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "wire::Data", try_from = "wire::Data")]
#[non_exhaustive]
pub struct OverloadData {
    /// `concurrency_limit`, `queue_full`, `queue_timeout` or `queue_shed`.
    pub reason: OverloadReason,
    /// Slots in use when the rejection was counted (a call of weight `w`
    /// holds `w`; with weights of 1, the requests running).
    pub active: usize,
    /// Requests waiting in the queue when the rejection was counted.
    pub queued: usize,
    /// The concurrency limit in force.
    pub max_concurrent: usize,
    /// The queue bound.
    pub queue_size: usize,
    /// The queue timeout in milliseconds.
    pub queue_timeout_ms: u64,
    /// Suggested delay before retrying, in milliseconds, for the limit that
    /// refused. On the wire twice, with the same value: `retry_after_ms`
    /// (the Python package's name) and `retryAfterMs` (the name the SEP-3304
    /// draft gives it); either one is enough to read it back.
    pub retry_after_ms: u64,
    /// The limit that refused: `global`, `tool:NAME` or `client` (absent in
    /// the Python package's errors; read as `global`).
    pub scope: String,
}

/// The wire form of [`OverloadData`]: the retry delay under both names.
mod wire {
    use serde::{Deserialize, Serialize};

    use super::{OverloadData, OverloadReason};

    #[derive(Serialize, Deserialize)]
    pub(super) struct Data {
        reason: OverloadReason,
        active: usize,
        queued: usize,
        max_concurrent: usize,
        queue_size: usize,
        queue_timeout_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(
            rename = "retryAfterMs",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        retry_after_ms_sep3304: Option<u64>,
        #[serde(default = "global_scope")]
        scope: String,
    }

    fn global_scope() -> String {
        "global".into()
    }

    impl From<OverloadData> for Data {
        fn from(d: OverloadData) -> Self {
            Self {
                reason: d.reason,
                active: d.active,
                queued: d.queued,
                max_concurrent: d.max_concurrent,
                queue_size: d.queue_size,
                queue_timeout_ms: d.queue_timeout_ms,
                retry_after_ms: Some(d.retry_after_ms),
                retry_after_ms_sep3304: Some(d.retry_after_ms),
                scope: d.scope,
            }
        }
    }

    impl TryFrom<Data> for OverloadData {
        type Error = &'static str;

        fn try_from(d: Data) -> Result<Self, Self::Error> {
            let retry_after_ms = match (d.retry_after_ms, d.retry_after_ms_sep3304) {
                (Some(a), Some(b)) if a != b => {
                    return Err("retry_after_ms and retryAfterMs disagree");
                }
                (Some(ms), _) | (None, Some(ms)) => ms,
                (None, None) => return Err("missing field `retry_after_ms`"),
            };
            Ok(OverloadData {
                reason: d.reason,
                active: d.active,
                queued: d.queued,
                max_concurrent: d.max_concurrent,
                queue_size: d.queue_size,
                queue_timeout_ms: d.queue_timeout_ms,
                retry_after_ms,
                scope: d.scope,
            })
        }
    }
}

/// The overload used by unit tests across the crate: `queue_full` with 5
/// active of 5 and 10 queued of 10, 30 s queue timeout, the given retry delay.
#[cfg(test)]
pub(crate) fn test_overload(retry_after: Duration) -> Overload {
    let snapshot = MetricsSnapshot {
        active: 5,
        queued: 10,
        max_concurrent: 5,
        queue_size: 10,
        ..MetricsSnapshot::default()
    };
    Overload::new(
        OverloadReason::QueueFull,
        snapshot,
        retry_after,
        Duration::from_secs(30),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overload() -> Overload {
        test_overload(Duration::from_micros(2_200_001))
    }

    #[test]
    fn data_serializes_every_field_with_the_python_names() {
        let value = serde_json::to_value(overload().data()).unwrap();
        let object = value.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "active",
                "max_concurrent",
                "queue_size",
                "queue_timeout_ms",
                "queued",
                "reason",
                "retryAfterMs",
                "retry_after_ms",
                "scope"
            ]
        );
        assert_eq!(value["reason"], "queue_full");
        assert_eq!(value["active"], 5);
        assert_eq!(value["queued"], 10);
        assert_eq!(value["max_concurrent"], 5);
        assert_eq!(value["queue_size"], 10);
        assert_eq!(value["queue_timeout_ms"], 30_000);
        // Rounded up, never down to a shorter delay than advised.
        assert_eq!(value["retry_after_ms"], 2201);
        assert_eq!(
            value["retryAfterMs"], 2201,
            "SEP-3304's name, the same value"
        );
        assert_eq!(value["scope"], "global");
    }

    #[test]
    fn scopes_name_the_limit() {
        let tool = overload().with_scope(Scope::Tool("report".into()));
        assert_eq!(tool.data().scope, "tool:report");
        assert_eq!(overload().with_scope(Scope::Client).data().scope, "client");
    }

    #[test]
    fn a_python_payload_without_scope_reads_as_global() {
        let data: OverloadData = serde_json::from_str(
            r#"{"reason": "queue_full", "active": 5, "queued": 10, "max_concurrent": 5,
                "queue_size": 10, "queue_timeout_ms": 30000, "retry_after_ms": 240}"#,
        )
        .unwrap();
        assert_eq!(data.scope, "global");
    }

    #[test]
    fn either_name_of_the_retry_delay_reads_back_and_they_must_agree() {
        let base = r#""reason": "queue_full", "active": 5, "queued": 10, "max_concurrent": 5,
                "queue_size": 10, "queue_timeout_ms": 30000"#;
        let read = |tail: &str| serde_json::from_str::<OverloadData>(&format!("{{{base}{tail}}}"));
        assert_eq!(
            read(r#", "retryAfterMs": 240"#).unwrap().retry_after_ms,
            240
        );
        assert_eq!(
            read(r#", "retry_after_ms": 240"#).unwrap().retry_after_ms,
            240
        );
        let both = read(r#", "retry_after_ms": 240, "retryAfterMs": 240"#).unwrap();
        assert_eq!(both.retry_after_ms, 240);
        let error = read(r#", "retry_after_ms": 240, "retryAfterMs": 1"#).unwrap_err();
        assert!(error.to_string().contains("disagree"), "{error}");
        assert!(read("").unwrap_err().to_string().contains("retry_after_ms"));
    }

    #[test]
    fn data_round_trips() {
        let data = overload().data();
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(serde_json::from_str::<OverloadData>(&text).unwrap(), data);
    }

    #[test]
    fn reasons_serialize_as_their_wire_names() {
        for reason in OverloadReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::Value::from(reason.as_str())
            );
        }
    }

    #[test]
    fn display_is_lowercase_and_names_the_reason() {
        assert_eq!(overload().to_string(), "server overloaded: queue_full");
    }

    #[test]
    fn sub_millisecond_delays_round_up() {
        assert_eq!(duration_ms(Duration::from_nanos(1)), 1);
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }
}
