//! One tool call and how its answer is classified.
//!
//! A rejection is recognised however the server chose to send it:
//! - a JSON-RPC error whose `data.reason` is a string (mcp-backpressure's
//!   default, and any server following the Python package's `data` object);
//! - a tool result with `isError: true` whose `structuredContent.reason` is a
//!   string (mcp-backpressure's `OverloadResponse::ToolResult`);
//! - an error or error result whose message starts with `SERVER_OVERLOADED`,
//!   the reason following the colon (the Python package under FastMCP, which
//!   turns the exception into an error tool result);
//! - an HTTP 429 or 503 with a `Retry-After` header (the proxy's
//!   `--http-overload-status`, an ingress's rate limit), whose body the
//!   client did not surface: reason `http_429` or `http_503`. (rmcp drops
//!   the body of every 429, and of a 503 whose body is not a JSON-RPC
//!   error; a 503 carrying the overload error arrives as that error.)
//!
//! The limit that turned a call away, `data.scope` (or
//! `structuredContent.scope`), is kept when present: a string as is, any
//! other JSON value as compact JSON.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::Peer;
use rmcp::transport::streamable_http_client::{HttpStatusError, StreamableHttpError};
use rmcp::{RoleClient, ServiceError};
use serde_json::{Map, Value};

/// What a call came back with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A result that is not an error.
    Ok,
    /// An overload rejection, with its `reason` and, when the server named
    /// it, the `scope` of the limit that turned the call away.
    Rejected {
        reason: String,
        scope: Option<String>,
    },
    /// Anything else, by kind (`tool_error`, `mcp_error -32603`, `transport`, `timeout`).
    Error { kind: String, message: String },
}

/// Calls `tool` once; never fails, every failure is an [`Outcome`].
pub async fn call(
    peer: &Peer<RoleClient>,
    tool: &str,
    arguments: &Map<String, Value>,
    timeout: Duration,
) -> Outcome {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone());
    match tokio::time::timeout(timeout, peer.call_tool(params)).await {
        Err(_) => Outcome::Error {
            kind: "timeout".into(),
            message: format!("no answer in {timeout:?}"),
        },
        Ok(Ok(result)) => classify_result(&result),
        Ok(Err(ServiceError::McpError(error))) => {
            let reason = error
                .data
                .as_ref()
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| overload_reason(&error.message));
            match reason {
                Some(reason) => Outcome::Rejected {
                    reason,
                    scope: scope(error.data.as_ref()),
                },
                None => Outcome::Error {
                    kind: format!("mcp_error {}", error.code.0),
                    message: error.message.into_owned(),
                },
            }
        }
        Ok(Err(other)) => match overload_status(&other) {
            Some(status) => Outcome::Rejected {
                reason: format!("http_{status}"),
                scope: None,
            },
            None => Outcome::Error {
                kind: "transport".into(),
                message: other.to_string(),
            },
        },
    }
}

/// The status of an HTTP 429 or 503 that came with `Retry-After`, if that
/// is why the request failed.
fn overload_status(error: &ServiceError) -> Option<u16> {
    let ServiceError::TransportSend(error) = error else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.error.as_ref());
    while let Some(current) = source {
        // rmcp's HTTP error wraps the status transparently: its `source()`
        // skips it.
        let http =
            current.downcast_ref::<HttpStatusError>().or_else(|| {
                match current.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
                    Some(StreamableHttpError::HttpStatus(http)) => Some(http),
                    _ => None,
                }
            });
        if let Some(http) = http {
            return (matches!(http.status, 429 | 503) && http.retry_after.is_some())
                .then_some(http.status);
        }
        source = current.source();
    }
    None
}

fn classify_result(result: &CallToolResult) -> Outcome {
    if result.is_error != Some(true) {
        return Outcome::Ok;
    }
    let structured = result
        .structured_content
        .as_ref()
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let text = result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.as_str()))
        .unwrap_or_default();
    match structured.or_else(|| overload_reason(text)) {
        Some(reason) => Outcome::Rejected {
            reason,
            scope: scope(result.structured_content.as_ref()),
        },
        None => Outcome::Error {
            kind: "tool_error".into(),
            message: text.chars().take(200).collect(),
        },
    }
}

/// `scope` of an overload's data: a string as is, another value as JSON.
fn scope(data: Option<&Value>) -> Option<String> {
    match data?.get("scope")? {
        Value::Null => None,
        Value::String(scope) => Some(scope.clone()),
        other => Some(other.to_string()),
    }
}

/// `SERVER_OVERLOADED: queue_full, retry after 40 ms` → `queue_full`;
/// `SERVER_OVERLOADED` alone → `unknown`.
fn overload_reason(message: &str) -> Option<String> {
    let rest = message.trim_start().strip_prefix("SERVER_OVERLOADED")?;
    let reason: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(if reason.is_empty() {
        "unknown".into()
    } else {
        reason
    })
}

#[cfg(test)]
mod tests {
    use rmcp::model::ContentBlock as Content;
    use serde_json::json;

    use super::*;

    #[test]
    fn reasons_are_read_from_messages() {
        assert_eq!(
            overload_reason("SERVER_OVERLOADED: queue_full, retry after 4 ms").as_deref(),
            Some("queue_full")
        );
        assert_eq!(
            overload_reason("SERVER_OVERLOADED: queue_timeout").as_deref(),
            Some("queue_timeout")
        );
        assert_eq!(
            overload_reason("SERVER_OVERLOADED").as_deref(),
            Some("unknown")
        );
        assert_eq!(overload_reason("boom"), None);
    }

    #[test]
    fn scopes_are_strings_or_json() {
        assert_eq!(
            scope(Some(&json!({"scope": "tool"}))).as_deref(),
            Some("tool")
        );
        assert_eq!(
            scope(Some(&json!({"scope": {"tool": "db"}}))).as_deref(),
            Some(r#"{"tool":"db"}"#)
        );
        assert_eq!(scope(Some(&json!({"scope": null}))), None);
        assert_eq!(scope(Some(&json!({"reason": "queue_full"}))), None);
        assert_eq!(scope(None), None);
    }

    #[test]
    fn error_results_are_rejections_or_tool_errors() {
        let mut rejected =
            CallToolResult::error(vec![Content::text("SERVER_OVERLOADED: concurrency_limit")]);
        assert_eq!(
            classify_result(&rejected),
            Outcome::Rejected {
                reason: "concurrency_limit".into(),
                scope: None
            }
        );
        rejected.structured_content = Some(json!({"reason": "queue_full"}));
        assert_eq!(
            classify_result(&rejected),
            Outcome::Rejected {
                reason: "queue_full".into(),
                scope: None
            }
        );
        rejected.structured_content = Some(json!({"reason": "queue_full", "scope": "client"}));
        assert_eq!(
            classify_result(&rejected),
            Outcome::Rejected {
                reason: "queue_full".into(),
                scope: Some("client".into())
            }
        );
        let failed = CallToolResult::error(vec![Content::text("division by zero")]);
        assert!(
            matches!(classify_result(&failed), Outcome::Error { ref kind, .. } if kind == "tool_error")
        );
        assert_eq!(
            classify_result(&CallToolResult::success(vec![Content::text("ok")])),
            Outcome::Ok
        );
    }

    fn status_error(status: u16, retry_after: Option<&str>) -> ServiceError {
        let inner: StreamableHttpError<reqwest::Error> =
            HttpStatusError::new(status, retry_after.map(str::to_owned)).into();
        ServiceError::TransportSend(rmcp::transport::DynamicTransportError::from_parts(
            "test",
            std::any::TypeId::of::<()>(),
            Box::new(inner),
        ))
    }

    #[test]
    fn an_overloaded_status_with_retry_after_is_a_rejection() {
        assert_eq!(overload_status(&status_error(503, Some("2"))), Some(503));
        assert_eq!(overload_status(&status_error(429, Some("1"))), Some(429));
        // Without Retry-After, or another status: not an overload.
        assert_eq!(overload_status(&status_error(503, None)), None);
        assert_eq!(overload_status(&status_error(500, Some("2"))), None);
        assert_eq!(overload_status(&ServiceError::TransportClosed), None);
    }
}
