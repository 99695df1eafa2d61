//! Everything the proxy itself answers, as one typed error; it becomes a
//! JSON-RPC error (and, over HTTP, a status) here and nowhere else. Messages
//! tell the client what it can act on and nothing internal: the upstream's
//! address, an OS error or an exit status go to the log only.

use mcp_backpressure::{Overload, jsonrpc};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::inflight::Refused;
use super::wire::message::{Malformed, RequestId, answerable_id};

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
    #[error("invalid request: a message {} exceeds the proxy's max_message_bytes ({max} bytes)", len.map_or_else(String::new, |l| format!("of {l} bytes")).trim_end())]
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

    /// The id the answer carries, as JSON text: the request's id exactly as
    /// its client wrote it (`id`, or the bad id a [`Malformed::BadId`]
    /// holds, when it is a number or a string); `None` (null) when the id
    /// could not be determined (JSON-RPC).
    fn answer_id<'a>(&'a self, id: Option<&'a str>) -> Option<&'a str> {
        match self {
            Self::Malformed(Malformed::BadId(raw)) => answerable_id(raw).then_some(raw.as_str()),
            Self::Malformed(Malformed::Request { .. }) => id,
            Self::Malformed(_) => None,
            _ => id,
        }
    }

    /// The JSON-RPC error object.
    pub fn to_error_object(&self, overload_code: i32) -> Value {
        match self {
            Self::Overloaded(overload) => jsonrpc::error_object(overload, overload_code),
            other => json!({"code": other.code(overload_code), "message": other.to_string()}),
        }
    }

    /// A whole error response to `id` (null when unknown), which it carries
    /// as its client wrote it.
    pub fn to_response(&self, id: Option<&RequestId>, overload_code: i32) -> Reply {
        let written = id.map(RequestId::written);
        self.to_response_written(written.as_deref(), overload_code)
    }

    /// A whole error response to the id written `id` (the JSON text of a
    /// number or a string, exactly as the client sent it; null when `None`
    /// or unknown).
    pub fn to_response_written(&self, id: Option<&str>, overload_code: i32) -> Reply {
        with_id(
            self.answer_id(id),
            &json!({"jsonrpc": "2.0", "error": self.to_error_object(overload_code)}),
        )
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

/// A message of the proxy's own, serialized: its id is written exactly as
/// the client wrote it, which a [`Value`] cannot hold (`1.0`, `1e0`, `-0`,
/// `"\u0041"`, a number beyond 64 bits).
pub type Reply = Box<RawValue>;

/// `message` (an object without an `id`) with the member `"id": id` first,
/// `id` written as given (null for `None`).
fn with_id(id: Option<&str>, message: &Value) -> Reply {
    let rest = serde_json::to_string(message).expect("a JSON value always serializes");
    let id = id.unwrap_or("null");
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    let separator = if rest == "}" { "" } else { "," };
    RawValue::from_string(format!("{{\"id\":{id}{separator}{rest}"))
        // Unreachable for ids read from a message: the id as null.
        .unwrap_or_else(|_| {
            RawValue::from_string(format!("{{\"id\":null{separator}{rest}"))
                .expect("the message is JSON")
        })
}

/// A result response of the proxy's own (a refusal answered as a tool
/// result) to `id`, the id written as the client wrote it.
pub fn result_response(id: &RequestId, result: Value) -> Reply {
    with_id(
        Some(&id.written()),
        &json!({"jsonrpc": "2.0", "result": result}),
    )
}

/// One answer for a message: a single error response, or (for a batch) one
/// per request in it.
pub fn answer(
    error: &ProxyError,
    ids: &[Option<RequestId>],
    batch: bool,
    overload_code: i32,
) -> Reply {
    if batch {
        let responses: Vec<Reply> = ids
            .iter()
            .map(|id| error.to_response(id.as_ref(), overload_code))
            .collect();
        serde_json::value::to_raw_value(&responses).expect("JSON always serializes")
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
pub fn to_line(value: &(impl serde::Serialize + ?Sized)) -> Vec<u8> {
    let mut line = super::wire::message::escape_separators(
        serde_json::to_vec(value).expect("a JSON value always serializes"),
    );
    line.push(b'\n');
    line
}
