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

use crate::overload::Overload;

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

/// A `tools/call` result with `isError: true`, the message as text content and
/// the overload `data` as `structuredContent`.
pub fn tool_result(overload: &Overload) -> Value {
    json!({
        "content": [{ "type": "text", "text": message(overload) }],
        "structuredContent": data(overload),
        "isError": true,
    })
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
                    "scope": "global"
                }
            }})
        );
    }

    #[test]
    fn the_tool_result_carries_the_same_data() {
        let result = tool_result(&overload());
        assert_eq!(result["isError"], true);
        assert_eq!(result["structuredContent"], data(&overload()));
        assert_eq!(
            result["content"][0]["text"],
            "SERVER_OVERLOADED: queue_full, retry after 240 ms"
        );
    }
}
