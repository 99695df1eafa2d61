//! The JSON-RPC edge shared by every transport: an [`Overload`] becomes the
//! wire error (or an error tool result) here and nowhere else. The rmcp wrapper
//! wraps these values in rmcp's types; the proxy writes them as they are.
//!
//! ```json
//! {"code": -31429,
//!  "message": "SERVER_OVERLOADED: queue_full, retry after 240 ms",
//!  "data": {"reason": "queue_full", "active": 5, "queued": 10,
//!           "max_concurrent": 5, "queue_size": 10,
//!           "queue_timeout_ms": 30000, "retry_after_ms": 240}}
//! ```
//!
//! # The error code
//!
//! The default, [`DEFAULT_OVERLOAD_CODE`] = -31429, lies outside the range
//! -32768..=-32000 that JSON-RPC reserves for the protocol and its
//! implementations: -32001 (the Python package's code) is what the official
//! TypeScript and Python SDKs raise for their *own* client-side request
//! timeout, so a client could not tell "the server is overloaded, retry later"
//! from "I gave up waiting", and the 2026-07-28 MCP specification marks
//! -32000..-32019 legacy and reserves -32020..-32099. The digits recall HTTP
//! 429 Too Many Requests. [`PYTHON_PACKAGE_OVERLOAD_CODE`] keeps -32001 one
//! setting away for clients that already match on it.

use serde_json::{Value, json};

use crate::overload::{Overload, OverloadReason, Scope};
use crate::tool_failure::ToolFailure;

/// The default JSON-RPC code of the overload error (see the module docs).
pub const DEFAULT_OVERLOAD_CODE: i32 = -31429;

/// JSON-RPC error codes that say a dependency is overloaded or timed out, so
/// the call's [`Outcome`](crate::Outcome) is `Dropped` (an adaptive limit
/// backs off): -32001 (the MCP SDKs' request timeout, and the Python
/// package's overload code), -32023 (SEP-3304's proposed RateLimited),
/// -32029 (ToolHive's rate limit) and -31429 (this project's overload
/// error, from a guarded server further down). The wrapper and the proxy
/// classify by this one list (see [`signals_overload`]).
pub const OVERLOAD_SIGNAL_CODES: [i32; 4] = [-32001, -32023, -32029, DEFAULT_OVERLOAD_CODE];

/// Whether an error of `code` says a dependency is overloaded: one of
/// [`OVERLOAD_SIGNAL_CODES`], or `own_code`, the overload code this edge is
/// configured with (a guarded server or proxy further down configured alike).
pub fn signals_overload(code: i64, own_code: i32) -> bool {
    code == i64::from(own_code) || OVERLOAD_SIGNAL_CODES.iter().any(|&c| i64::from(c) == code)
}

/// The Python package's code, -32001, kept for compatibility.
pub const PYTHON_PACKAGE_OVERLOAD_CODE: i32 = -32001;

/// What every overload error's message begins with.
pub const MESSAGE_PREFIX: &str = "SERVER_OVERLOADED";

/// The one-line message: `SERVER_OVERLOADED: <reason>, retry after <n> ms`.
pub fn message(overload: &Overload) -> String {
    format!(
        "{MESSAGE_PREFIX}: {}, retry after {} ms",
        overload.reason,
        overload.data().retry_after_ms
    )
}

/// The overload `data` as a JSON value.
pub fn data(overload: &Overload) -> Value {
    serde_json::to_value(overload.data()).expect("overload data is plain JSON")
}

/// The JSON-RPC error object `{code, message, data}`.
pub fn error_object(overload: &Overload, code: i32) -> Value {
    json!({ "code": code, "message": message(overload), "data": data(overload) })
}

/// A whole JSON-RPC error response to the request `id`.
pub fn error_response(id: &Value, overload: &Overload, code: i32) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error_object(overload, code) })
}

/// A `tools/call` result with `isError: true`: [`tool_result_text`] as text
/// content, the overload `data` as `structuredContent`, and `failure` under
/// `_meta["io.modelcontextprotocol/toolFailure"]` (see
/// [`tool_failure`](crate::tool_failure)).
pub fn tool_result(overload: &Overload, failure: &ToolFailure) -> Value {
    json!({
        "content": [{ "type": "text", "text": tool_result_text(overload, failure) }],
        "structuredContent": data(overload),
        "isError": true,
        "_meta": failure.to_meta(),
    })
}

/// The text a model reads in an overload tool result: the error's
/// [`message`] on the first line (clients that match on the
/// `SERVER_OVERLOADED` prefix keep working), then, in words, that the call
/// was not run, why, and when to come back.
///
/// ```text
/// SERVER_OVERLOADED: queue_full, retry after 2200 ms
/// The call was not run: every slot is busy (5 of 5) and the queue is full (10 of 10).
/// It is safe to retry: after 2.2 s, not before 2026-12-07T23:30:01.200Z (correlation id bp-…).
/// ```
pub fn tool_result_text(overload: &Overload, failure: &ToolFailure) -> String {
    let d = overload.data();
    let limit = match &overload.scope {
        Scope::Global => String::new(),
        Scope::Tool(name) => format!(" for the tool {name:?}"),
        Scope::Client => " for this client".to_owned(),
        #[allow(unreachable_patterns)]
        _ => String::new(),
    };
    let why = match overload.reason {
        OverloadReason::ConcurrencyLimit => {
            format!(
                "every slot{limit} is busy ({} of {})",
                d.active, d.max_concurrent
            )
        }
        OverloadReason::QueueFull => format!(
            "every slot{limit} is busy ({} of {}) and the queue is full ({} of {})",
            d.active, d.max_concurrent, d.queued, d.queue_size
        ),
        OverloadReason::QueueTimeout => format!(
            "it waited {} for a slot{limit} without getting one",
            seconds(d.queue_timeout_ms)
        ),
        OverloadReason::QueueShed => {
            format!("the queue{limit} is standing, and the call was shed from it")
        }
        OverloadReason::SharedUnavailable => {
            "the limit is shared between replicas and its store cannot be reached".to_owned()
        }
        #[allow(unreachable_patterns)]
        _ => format!("the server is overloaded ({})", overload.reason),
    };
    format!(
        "{}\nThe call was not run: {why}.\nIt is safe to retry: after {}, not before {} (correlation id {}).",
        message(overload),
        seconds(d.retry_after_ms),
        failure.retry_not_before_rfc3339(),
        failure.correlation_id,
    )
}

/// `ms` in seconds for people: `2.2 s`, `30 s`, `0.01 s`.
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        return format!("{} s", ms / 1000);
    }
    let text = format!("{:.3}", ms as f64 / 1000.0);
    format!("{} s", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn overload() -> Overload {
        crate::overload::test_overload(Duration::from_millis(240))
    }

    #[test]
    fn the_default_code_is_outside_the_reserved_range() {
        assert!(!(-32768..=-32000).contains(&DEFAULT_OVERLOAD_CODE));
        assert!((-32768..=-32000).contains(&PYTHON_PACKAGE_OVERLOAD_CODE));
    }

    #[test]
    fn the_error_response_has_code_message_and_every_data_field() {
        let wire = error_response(&json!(7), &overload(), DEFAULT_OVERLOAD_CODE);
        assert_eq!(
            wire,
            json!({"jsonrpc": "2.0", "id": 7, "error": {
                "code": -31429,
                "message": "SERVER_OVERLOADED: queue_full, retry after 240 ms",
                "data": {
                    "reason": "queue_full", "active": 5, "queued": 10,
                    "max_concurrent": 5, "queue_size": 10,
                    "queue_timeout_ms": 30000, "retry_after_ms": 240,
                    "retryAfterMs": 240, "scope": "global"
                }
            }})
        );
    }

    fn failure() -> ToolFailure {
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_686_199_000);
        ToolFailure::at(&overload(), at, "bp-test-7".into())
    }

    #[test]
    fn the_tool_result_carries_the_same_data_and_the_classification() {
        let result = tool_result(&overload(), &failure());
        assert_eq!(result["isError"], true);
        assert_eq!(result["structuredContent"], data(&overload()));
        assert_eq!(result["_meta"], failure().to_meta());
        assert_eq!(
            result["content"][0]["text"],
            "SERVER_OVERLOADED: queue_full, retry after 240 ms\n\
             The call was not run: every slot is busy (5 of 5) and the queue is full (10 of 10).\n\
             It is safe to retry: after 0.24 s, not before 2026-12-07T23:29:59.240Z \
             (correlation id bp-test-7)."
        );
    }

    #[test]
    fn the_text_names_every_reason_and_the_limit_that_refused() {
        let base = overload();
        for reason in OverloadReason::ALL {
            let mut o = base.clone();
            o.reason = reason;
            let text = tool_result_text(&o, &failure());
            assert!(text.starts_with(&message(&o)), "{text}");
            assert!(text.contains("The call was not run: "), "{text}");
        }
        let tool = base.clone().with_scope(Scope::Tool("report".into()));
        assert!(tool_result_text(&tool, &failure()).contains("for the tool \"report\""));
        let client = base.with_scope(Scope::Client);
        assert!(tool_result_text(&client, &failure()).contains("for this client"));
    }

    #[test]
    fn seconds_read_as_people_write_them() {
        assert_eq!(seconds(2_200), "2.2 s");
        assert_eq!(seconds(30_000), "30 s");
        assert_eq!(seconds(10), "0.01 s");
        assert_eq!(seconds(1_001), "1.001 s");
    }
}
