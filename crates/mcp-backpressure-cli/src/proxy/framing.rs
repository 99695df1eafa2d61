//! Raw JSON-RPC, as the proxy sees it: what kind of message a line or a body
//! is, the few fields the proxy reads (`id`, `method`, the `requestId` of a
//! cancellation), its own error responses, and bounded newline framing for
//! stdio. Messages are never re-serialized on their way through: the proxy
//! forwards the bytes it received.

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// JSON-RPC: the message is not valid JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC: the message is not a valid request (here: too large).
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC: internal error (here: the upstream server is gone).
pub const INTERNAL_ERROR: i32 = -32603;

/// The method of a cancellation.
pub const CANCELLED: &str = "notifications/cancelled";

/// What a JSON-RPC message is.
#[derive(Debug, PartialEq)]
pub enum Kind<'a> {
    /// A request: it has a `method` and an `id`.
    Request {
        /// The request id, as sent.
        id: &'a Value,
        /// The method name.
        method: &'a str,
    },
    /// A notification: a `method` and no `id`.
    Notification {
        /// The method name.
        method: &'a str,
    },
    /// A response: an `id` and a `result` or an `error`, no `method`.
    Response {
        /// The id of the request it answers.
        id: &'a Value,
    },
    /// A batch (an array of messages).
    Batch(&'a [Value]),
    /// Valid JSON that is none of the above; passed through as it is.
    Other,
}

impl<'a> Kind<'a> {
    /// Classifies a parsed message.
    pub fn of(message: &'a Value) -> Self {
        match message {
            Value::Array(items) => Kind::Batch(items),
            Value::Object(object) => {
                let id = object.get("id");
                match (object.get("method").and_then(Value::as_str), id) {
                    (Some(method), Some(id)) => Kind::Request { id, method },
                    (Some(method), None) => Kind::Notification { method },
                    (None, Some(id))
                        if object.contains_key("result") || object.contains_key("error") =>
                    {
                        Kind::Response { id }
                    }
                    _ => Kind::Other,
                }
            }
            _ => Kind::Other,
        }
    }
}

/// The ids of the responses in `message` (one, or several in a batch).
pub fn response_ids(message: &Value) -> Vec<&Value> {
    match Kind::of(message) {
        Kind::Response { id } => vec![id],
        Kind::Batch(items) => items
            .iter()
            .filter_map(|item| match Kind::of(item) {
                Kind::Response { id } => Some(id),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The `requestId` of a `notifications/cancelled`.
pub fn cancelled_id(message: &Value) -> Option<&Value> {
    message.get("params")?.get("requestId")
}

/// A JSON-RPC error response written by the proxy itself.
pub fn error_response(id: &Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A `notifications/cancelled` for the request `id`.
pub fn cancellation(id: &Value, reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": CANCELLED, "params": {"requestId": id, "reason": reason}})
}

/// `value` as one line of newline-delimited JSON.
pub fn to_line(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("a JSON value always serializes");
    line.push(b'\n');
    line
}

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline (and without a trailing `\r`).
    Message(Vec<u8>),
    /// A line longer than the bound; its bytes were read and discarded.
    TooLong {
        /// How many bytes it had (at least the bound plus one).
        len: usize,
    },
    /// The end of the input.
    Eof,
}

/// Reads one newline-terminated line, holding at most `max` bytes of it in
/// memory: a longer line is consumed and reported as [`Line::TooLong`]. A last
/// line without a newline still counts as a line.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future mid-line loses the bytes already
/// consumed. Call it from a loop that owns the reader.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if len == 0 {
                Line::Eof
            } else if len > max {
                Line::TooLong { len }
            } else {
                Line::Message(trim_cr(line))
            });
        }
        let (chunk, done) = match memchr(buf) {
            Some(at) => (&buf[..at], at + 1),
            None => (buf, buf.len()),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        } else if !line.is_empty() {
            line = Vec::new();
        }
        let ended = done != chunk.len();
        reader.consume(done);
        if ended {
            return Ok(if len > max {
                Line::TooLong { len }
            } else {
                Line::Message(trim_cr(line))
            });
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"});
        assert_eq!(
            Kind::of(&request),
            Kind::Request {
                id: &json!(1),
                method: "tools/call"
            }
        );
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(
            Kind::of(&note),
            Kind::Notification {
                method: "notifications/initialized"
            }
        );
        let response = json!({"jsonrpc": "2.0", "id": "a", "result": {}});
        assert_eq!(Kind::of(&response), Kind::Response { id: &json!("a") });
        let error = json!({"jsonrpc": "2.0", "id": null, "error": {"code": 1}});
        assert_eq!(Kind::of(&error), Kind::Response { id: &Value::Null });
        assert_eq!(Kind::of(&json!(3)), Kind::Other);
        assert_eq!(Kind::of(&json!({"id": 1})), Kind::Other);
        let batch = json!([response, {"jsonrpc": "2.0", "id": 2, "error": {}}, note]);
        assert_eq!(response_ids(&batch), [&json!("a"), &json!(2)]);
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let input = b"{\"a\":1}\r\n0123456789abcdef\n\nlast".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::Message(b"{\"a\":1}".to_vec())
        );
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::TooLong { len: 16 }
        );
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::Message(Vec::new())
        );
        assert_eq!(
            read_line(&mut reader, 8).await.unwrap(),
            Line::Message(b"last".to_vec())
        );
        assert_eq!(read_line(&mut reader, 8).await.unwrap(), Line::Eof);
    }
}
