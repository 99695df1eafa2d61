//! The machine-readable classification of a refused `tools/call` answered as
//! an `isError` tool result.
//!
//! The SEP-3313 draft puts it under
//! `_meta["io.modelcontextprotocol/toolFailure"]` of the `CallToolResult`:
//!
//! ```json
//! {"class": "overload", "code": "queue_full", "retryable": true,
//!  "retryNotBefore": "2026-12-07T23:30:01.200Z",
//!  "correlationId": "bp-5c1e0a77d2f94b31-0000002a"}
//! ```
//!
//! - `class` is always `overload` and `retryable` always `true`: the call was
//!   not run, so running it again is safe whatever the tool does;
//! - `code` is the overload reason (`data.reason`);
//! - `retryNotBefore` is the refusal's time plus the advertised retry delay,
//!   RFC 3339 in UTC with milliseconds;
//! - `correlationId` is unique per refusal (a random per-process prefix and a
//!   counter); the edges write it into their log line for the refusal, so an
//!   operator can find the refusal a user reports.
//!
//! The draft is a draft: the field names follow it as of 2026-08 and may
//! change with it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::overload::Overload;

/// The `_meta` key of the classification.
pub const META_KEY: &str = "io.modelcontextprotocol/toolFailure";

/// The `class` of every refusal.
pub const OVERLOAD_CLASS: &str = "overload";

/// The classification of one refused call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolFailure {
    /// The overload reason (`code` on the wire).
    pub code: &'static str,
    /// When the client may retry: the refusal's time plus the retry delay.
    pub retry_not_before: SystemTime,
    /// Unique per refusal (see [`correlation_id`]).
    pub correlation_id: String,
}

impl ToolFailure {
    /// The classification of `overload`, refused now, with a fresh
    /// correlation id.
    pub fn of(overload: &Overload) -> Self {
        Self::at(overload, SystemTime::now(), correlation_id())
    }

    /// The classification of `overload` refused at `now`, under
    /// `correlation_id` (for tests and edges that make their own ids).
    pub fn at(overload: &Overload, now: SystemTime, correlation_id: String) -> Self {
        let retry_not_before = now.checked_add(overload.retry_after).unwrap_or(now);
        Self {
            code: overload.reason.as_str(),
            retry_not_before,
            correlation_id,
        }
    }

    /// `retryNotBefore` as written on the wire: RFC 3339, UTC, milliseconds.
    pub fn retry_not_before_rfc3339(&self) -> String {
        let at: chrono::DateTime<chrono::Utc> = self.retry_not_before.into();
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The value under [`META_KEY`].
    pub fn to_value(&self) -> Value {
        json!({
            "class": OVERLOAD_CLASS,
            "code": self.code,
            "retryable": true,
            "retryNotBefore": self.retry_not_before_rfc3339(),
            "correlationId": self.correlation_id,
        })
    }

    /// The whole `_meta` object: `{META_KEY: self.to_value()}`.
    pub fn to_meta(&self) -> Value {
        json!({ META_KEY: self.to_value() })
    }
}

/// Whether a result's `_meta` classifies its failure as an overload
/// (`_meta[META_KEY].class == "overload"`): a guarded server further down
/// refused the call in the tool-result dialect. The edges count such a result
/// as an overload signal, like the overload error's code.
pub fn says_overload(meta: &serde_json::Map<String, Value>) -> bool {
    meta.get(META_KEY)
        .and_then(|failure| failure.get("class"))
        .and_then(Value::as_str)
        == Some(OVERLOAD_CLASS)
}

/// A fresh correlation id: `bp-<16 hex digits, random per process>-<8+ hex
/// digits, a counter>`. Unique within a process; across processes the random
/// prefix makes a clash unlikely (64 bits).
pub fn correlation_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS's randomness.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("bp-{prefix:016x}-{n:08x}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_value_has_the_draft_fields() {
        let overload = crate::overload::test_overload(Duration::from_millis(2_200));
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_686_199_000);
        let failure = ToolFailure::at(&overload, epoch, "bp-test-1".into());
        assert_eq!(
            failure.to_meta(),
            json!({ "io.modelcontextprotocol/toolFailure": {
                "class": "overload",
                "code": "queue_full",
                "retryable": true,
                "retryNotBefore": "2026-12-07T23:30:01.200Z",
                "correlationId": "bp-test-1",
            }})
        );
    }

    #[test]
    fn correlation_ids_are_unique_and_share_the_process_prefix() {
        let ids: Vec<String> = (0..1000).map(|_| correlation_id()).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        let prefix = |id: &str| id.rsplit_once('-').unwrap().0.to_owned();
        assert!(ids.iter().all(|id| prefix(id) == prefix(&ids[0])));
        assert!(ids[0].starts_with("bp-") && ids[0].len() >= 3 + 16 + 1 + 8);
    }

    #[test]
    fn the_classification_is_recognised_and_nothing_else_is() {
        let overload = crate::overload::test_overload(Duration::from_millis(5));
        let Value::Object(meta) = ToolFailure::of(&overload).to_meta() else {
            unreachable!()
        };
        assert!(says_overload(&meta));
        for other in [
            json!({}),
            json!({ META_KEY: {"class": "capability"} }),
            json!({ META_KEY: {"class": 5} }),
            json!({ "toolFailure": {"class": "overload"} }),
        ] {
            let Value::Object(meta) = other else {
                unreachable!()
            };
            assert!(!says_overload(&meta), "{meta:?}");
        }
    }

    #[test]
    fn an_absurd_delay_cannot_overflow_the_time() {
        let overload = crate::overload::test_overload(Duration::MAX);
        let failure = ToolFailure::of(&overload);
        assert!(failure.retry_not_before <= SystemTime::now());
        assert!(!failure.retry_not_before_rfc3339().is_empty());
    }
}
