//! Everything the proxy itself answers, as one typed error; it becomes a
//! JSON-RPC error (and, over HTTP, a status) here and nowhere else. Messages
//! tell the client what it can act on and nothing internal: the upstream's
//! address, an OS error or an exit status go to the log only.

use mcp_backpressure::{Overload, jsonrpc};
use serde_json::{Value, json};

use super::inflight::Refused;
use super::wire::message::{Malformed, RequestId};

/// JSON-RPC: the message is not valid JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC: the message is not a valid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC: internal error (here: the upstream is unavailable or misbehaved).
pub const INTERNAL_ERROR: i32 = -32603;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The message could not be read (not JSON, not JSON-RPC, a bad id).
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The table refused the request (a duplicate id, or full).
    #[error("invalid request: {0}")]
    Refused(#[from] Refused),
    /// The limiter turned the request away.
    #[error("{}", jsonrpc::message(.0))]
    Overloaded(Box<Overload>),
    /// The message is larger than `max_message_bytes`.
    #[error("invalid request: a message of {} bytes exceeds the proxy's max_message_bytes ({max} bytes)", len.map_or_else(|| "more than max".to_owned(), |l| l.to_string()))]
    TooLarge {
        /// Its size, when known.
        len: Option<usize>,
        /// The bound.
        max: usize,
    },
    /// A batch holds a guarded request or a cancellation.
    #[error(
        "invalid request: a batch may not contain {method} requests behind this proxy; send them one by one"
    )]
    GuardedBatch {
        /// The guarded method found.
        method: String,
    },
    /// The proxy is stopping (SIGTERM or SIGINT) before the request was answered.
    #[error("the proxy is shutting down")]
    ShuttingDown,
    /// The upstream cannot be reached, died, or broke off the response.
    #[error("the upstream server is unavailable")]
    UpstreamUnavailable,
    /// The upstream's response could not be passed on (too large, or not JSON).
    #[error("the upstream server's response could not be passed on: {0}")]
    UpstreamResponse(&'static str),
    /// The upstream's response exceeded `max_message_bytes`.
    #[error(
        "the upstream server's response of {len} bytes exceeds the proxy's max_message_bytes ({max} bytes)"
    )]
    ResponseTooLarge {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl From<Overload> for ProxyError {
    fn from(overload: Overload) -> Self {
        Self::Overloaded(Box::new(overload))
    }
}

impl ProxyError {
    /// The JSON-RPC error code (`overload_code` for overloads).
    pub fn code(&self, overload_code: i32) -> i32 {
        match self {
            Self::Malformed(Malformed::NotJson(_)) => PARSE_ERROR,
            Self::Malformed(_)
            | Self::Refused(_)
            | Self::TooLarge { .. }
            | Self::GuardedBatch { .. } => INVALID_REQUEST,
            Self::Overloaded(_) => overload_code,
            Self::UpstreamUnavailable
            | Self::UpstreamResponse(_)
            | Self::ResponseTooLarge { .. }
            | Self::ShuttingDown => INTERNAL_ERROR,
        }
    }

    /// Whether the answer must carry id null whatever the request said
    /// (JSON-RPC: when the id could not be determined).
    fn id_unknown(&self) -> bool {
        matches!(self, Self::Malformed(m) if !matches!(m, Malformed::Request { .. }))
    }

    /// The JSON-RPC error object.
    pub fn to_error_object(&self, overload_code: i32) -> Value {
        match self {
            Self::Overloaded(overload) => jsonrpc::error_object(overload, overload_code),
            other => json!({"code": other.code(overload_code), "message": other.to_string()}),
        }
    }

    /// A whole error response to `id` (null when unknown).
    pub fn to_response(&self, id: Option<&RequestId>, overload_code: i32) -> Value {
        let id = match id {
            Some(id) if !self.id_unknown() => id.to_value(),
            _ => Value::Null,
        };
        json!({"jsonrpc": "2.0", "id": id, "error": self.to_error_object(overload_code)})
    }

    /// The HTTP status of the proxy's own answer: JSON-RPC errors about a
    /// request the proxy understood travel as 200 (clients such as the
    /// TypeScript SDK drop the body of any other status); unreadable messages
    /// get 400, oversized ones 413.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Malformed(Malformed::Request { .. }) => 200,
            Self::Malformed(_) => 400,
            Self::TooLarge { .. } => 413,
            _ => 200,
        }
    }
}

/// A result response of the proxy's own (a refusal answered as a tool
/// result) to `id`.
pub fn result_response(id: &RequestId, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.to_value(), "result": result})
}

/// One answer for a message: a single error response, or (for a batch) one
/// per request in it.
pub fn answer(
    error: &ProxyError,
    ids: &[Option<RequestId>],
    batch: bool,
    overload_code: i32,
) -> Value {
    if batch {
        Value::Array(
            ids.iter()
                .map(|id| error.to_response(id.as_ref(), overload_code))
                .collect(),
        )
    } else {
        error.to_response(ids.first().and_then(Option::as_ref), overload_code)
    }
}

/// A `notifications/cancelled` for the request `id`, from the proxy.
pub fn cancellation(id: &RequestId, reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": super::wire::message::CANCELLED,
           "params": {"requestId": id.to_value(), "reason": reason}})
}

/// `value` as one line of newline-delimited JSON.
pub fn to_line(value: &Value) -> Vec<u8> {
    let mut line = super::wire::message::escape_separators(
        serde_json::to_vec(value).expect("a JSON value always serializes"),
    );
    line.push(b'\n');
    line
}
