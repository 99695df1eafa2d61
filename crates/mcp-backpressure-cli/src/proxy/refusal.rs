//! A refusal: how the proxy answers a guarded request the limiter turned
//! away, on both transports. Two settings choose the dialect, both reloaded
//! on SIGHUP:
//!
//! - `overload_response` — `error` (the default): the JSON-RPC overload
//!   error, `data` and all. `tool-result`: a refused `tools/call` becomes a
//!   result with `isError: true`, the overload explained in its text (what a
//!   model reads), the same `data` as `structuredContent`, and the SEP-3313
//!   classification under `_meta["io.modelcontextprotocol/toolFailure"]`
//!   (see [`ToolFailure`]). Any other guarded method (`resources/read`,
//!   `prompts/get`…) keeps the error: it has no tool result to carry it.
//!   A result answering a request of the per-request-envelope protocol
//!   (2026-07-28: its `params._meta` names the protocol version) carries
//!   `resultType: "complete"`, which that revision requires of servers.
//! - `http_overload_status` — HTTP only: `200` (the default) answers as every
//!   other JSON-RPC answer travels; `429` or `503` gives an HTTP request
//!   whose guarded call was refused that status, with `Retry-After` (whole
//!   seconds, rounded up, at least 1) and the same JSON body. A load balancer
//!   in front of replicas retries a 503 elsewhere.
//!
//! Which requests "every guarded call was refused" covers: a batch may not
//! carry a guarded request behind this proxy (it is refused whole, -32600),
//! so a refused guarded call is always the only request of its HTTP request.
//! And a refusal always precedes the response: a queued call's HTTP
//! response is held, no byte written, until the call is admitted or refused
//! (`queue_timeout`, `queue_shed` included), so the status can always be
//! chosen. Upstream SSE streams start only once a call is admitted.
//!
//! Every refusal is logged here, once, at warn: the request id, the reason,
//! the limit that refused, and the tool result's correlation id.

use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use mcp_backpressure::overload_status::retry_after_seconds;
use mcp_backpressure::{Overload, ToolFailure, jsonrpc};
use serde_json::json;

use super::error::{self, ProxyError};
use super::wire::message::RequestId;

/// The `_meta` key in which a request of the per-request-envelope protocol
/// names its protocol version.
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// The first protocol revision whose results must carry `resultType`.
const RESULT_TYPE_SINCE: &str = "2026-07-28";

/// How a refused `tools/call` is answered (`overload_response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverloadResponse {
    /// The JSON-RPC overload error.
    #[default]
    Error,
    /// A tool result with `isError: true` (other guarded methods: the error).
    ToolResult,
}

impl OverloadResponse {
    /// The value as written in a flag or the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::ToolResult => "tool-result",
        }
    }

    /// Reads `error` or `tool-result`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "error" => Some(Self::Error),
            // The Python package's spelling is taken too.
            "tool-result" | "tool_result" => Some(Self::ToolResult),
            _ => None,
        }
    }
}

/// The HTTP status of a request whose guarded call was refused
/// (`http_overload_status`): the core's, shared with the rmcp wrapper's layer.
pub use mcp_backpressure::OverloadStatus;

/// Both settings of the dialect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dialect {
    /// How a refused `tools/call` is answered.
    pub response: OverloadResponse,
    /// HTTP only: the status of a refused request.
    pub http_status: OverloadStatus,
}

/// The dialect in force: read at each refusal, replaced by a reload. One
/// word: the status code shifted left, the tool-result bit at the bottom.
#[derive(Debug)]
pub struct LiveDialect(AtomicU32);

impl LiveDialect {
    /// Starts with `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self(AtomicU32::new(Self::pack(dialect)))
    }

    /// The dialect in force.
    pub fn get(&self) -> Dialect {
        let bits = self.0.load(Ordering::Relaxed);
        Dialect {
            response: if bits & 1 == 0 {
                OverloadResponse::Error
            } else {
                OverloadResponse::ToolResult
            },
            http_status: OverloadStatus::from_code((bits >> 1).into()).unwrap_or_default(),
        }
    }

    /// Puts `dialect` in force for every refusal from now on.
    pub fn set(&self, dialect: Dialect) {
        self.0.store(Self::pack(dialect), Ordering::Relaxed);
    }

    fn pack(dialect: Dialect) -> u32 {
        let response = u32::from(dialect.response == OverloadResponse::ToolResult);
        u32::from(dialect.http_status.code()) << 1 | response
    }
}

/// What the shape of a guarded request's refusal depends on, noted when the
/// request is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// It is a `tools/call` (only those may be answered with a tool result).
    pub tool_call: bool,
    /// It speaks the per-request-envelope protocol (2026-07-28 or later): a
    /// result must carry `resultType`.
    pub result_type: bool,
}

impl Asked {
    /// A request of `method` whose `params._meta` is `meta` (raw JSON, as
    /// sent; only a `tools/call`'s matters).
    pub fn of(method: &str, meta: Option<&str>) -> Self {
        let tool_call = method == "tools/call";
        // Read on every guarded call: only the one key, borrowed, not the
        // client's whole `_meta` (its capabilities) built as values.
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
            version: Option<std::borrow::Cow<'a, str>>,
        }
        let result_type = tool_call
            && meta
                .filter(|raw| raw.contains(PROTOCOL_VERSION_META))
                .and_then(|raw| serde_json::from_str::<Probe<'_>>(raw).ok())
                .and_then(|probe| probe.version)
                .is_some_and(|version| envelope_era(&version));
        Self {
            tool_call,
            result_type,
        }
    }

    /// Over HTTP: the request's `MCP-Protocol-Version` header, if any, may
    /// name the per-request-envelope protocol too.
    pub fn with_protocol_header(mut self, version: Option<&str>) -> Self {
        self.result_type |= self.tool_call && version.is_some_and(envelope_era);
        self
    }
}

/// Whether a protocol version is of the per-request-envelope era: any
/// version but a dated one before [`RESULT_TYPE_SINCE`] (the handshake era:
/// 2024-11-05 … 2025-11-25).
fn envelope_era(version: &str) -> bool {
    let dated = version.len() == RESULT_TYPE_SINCE.len()
        && version.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    !dated || version >= RESULT_TYPE_SINCE
}

/// One refusal, rendered.
#[derive(Debug)]
pub struct Refusal {
    /// The whole JSON-RPC response (an error, or a tool result), its id
    /// written as the client wrote it.
    pub response: error::Reply,
    /// The tool result's correlation id (`None` for an error).
    pub correlation_id: Option<String>,
    /// The advertised retry delay, in milliseconds.
    retry_after_ms: u64,
}

impl Refusal {
    /// Renders the refusal of the request `id` (what it is: `asked`) in
    /// `dialect`; an error carries `code`. Logs it.
    pub fn render(
        overload: &Overload,
        id: &RequestId,
        asked: Asked,
        dialect: Dialect,
        code: i32,
    ) -> Self {
        let retry_after_ms = overload.data().retry_after_ms;
        let refusal = if asked.tool_call && dialect.response == OverloadResponse::ToolResult {
            let failure = ToolFailure::of(overload);
            let mut result = jsonrpc::tool_result(overload, &failure);
            if asked.result_type {
                result["resultType"] = json!("complete");
            }
            Self {
                response: error::result_response(id, result),
                correlation_id: Some(failure.correlation_id),
                retry_after_ms,
            }
        } else {
            let error = ProxyError::Overloaded(Box::new(overload.clone()));
            Self {
                response: error.to_response(Some(id), code),
                correlation_id: None,
                retry_after_ms,
            }
        };
        tracing::warn!(
            %id,
            reason = %overload.reason,
            scope = %overload.scope,
            active = overload.snapshot.active,
            queued = overload.snapshot.queued,
            retry_after_ms,
            correlation_id = refusal.correlation_id.as_deref(),
            "overloaded: request rejected"
        );
        refusal
    }

    /// HTTP: the status, and the `Retry-After` value (whole seconds) when
    /// the status is not 200.
    pub fn http_status(&self, status: OverloadStatus) -> (u16, Option<u64>) {
        match status {
            OverloadStatus::Ok => (200, None),
            other => (
                other.code(),
                Some(retry_after_seconds(Duration::from_millis(
                    self.retry_after_ms,
                ))),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The rendered response, parsed back.
    fn response_of(refusal: &super::Refusal) -> serde_json::Value {
        serde_json::from_str(refusal.response.get()).expect("the response is JSON")
    }

    use std::time::Duration;

    use mcp_backpressure::{MetricsSnapshot, OverloadReason};

    use super::*;

    fn overload(retry_after: Duration) -> Overload {
        let mut snapshot = MetricsSnapshot::default();
        snapshot.active = 1;
        snapshot.max_concurrent = 1;
        Overload::new(
            OverloadReason::ConcurrencyLimit,
            snapshot,
            retry_after,
            Duration::from_secs(30),
        )
    }

    const CALL: Asked = Asked {
        tool_call: true,
        result_type: false,
    };

    fn dialect(response: OverloadResponse) -> Dialect {
        Dialect {
            response,
            http_status: OverloadStatus::Ok,
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        for (ms, secs) in [
            (0, 1),
            (1, 1),
            (999, 1),
            (1000, 1),
            (1001, 2),
            (2200, 3),
            (60_000, 60),
            (u64::MAX, u64::MAX / 1000 + 1),
        ] {
            assert_eq!(
                retry_after_seconds(Duration::from_millis(ms)),
                secs,
                "{ms} ms"
            );
        }
    }

    #[test]
    fn the_error_is_the_overload_error_under_the_requests_id() {
        let o = overload(Duration::from_millis(1500));
        let id = RequestId::string("a");
        let refusal = Refusal::render(&o, &id, CALL, dialect(OverloadResponse::Error), -32023);
        assert_eq!(
            response_of(&refusal),
            jsonrpc::error_response(&json!("a"), &o, -32023)
        );
        assert_eq!(refusal.correlation_id, None);
    }

    #[test]
    fn a_tool_call_becomes_a_tool_result_in_tool_result_mode() {
        let o = overload(Duration::from_millis(1500));
        let refusal = Refusal::render(
            &o,
            &RequestId::int(7),
            CALL,
            dialect(OverloadResponse::ToolResult),
            -31429,
        );
        let response = &response_of(&refusal);
        assert_eq!(response["jsonrpc"], "2.0");
        assert_eq!(response["id"], 7);
        assert!(response.get("error").is_none(), "{response}");
        let result = &response["result"];
        assert_eq!(result["isError"], true);
        assert_eq!(result["structuredContent"], jsonrpc::data(&o));
        assert_eq!(result["structuredContent"]["retryAfterMs"], 1500);
        let failure = &result["_meta"]["io.modelcontextprotocol/toolFailure"];
        assert_eq!(failure["class"], "overload");
        assert_eq!(failure["code"], "concurrency_limit");
        assert_eq!(failure["retryable"], true);
        assert!(failure["retryNotBefore"].as_str().unwrap().ends_with('Z'));
        let correlation = refusal.correlation_id.as_deref().unwrap();
        assert_eq!(failure["correlationId"], correlation);
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(
            text.starts_with("SERVER_OVERLOADED: concurrency_limit, retry after 1500 ms\n"),
            "{text}"
        );
        assert!(text.contains(correlation), "{text}");
        // Not a 2026-07-28 request: no resultType.
        assert!(result.get("resultType").is_none(), "{result}");
    }

    #[test]
    fn other_guarded_methods_keep_the_error_in_tool_result_mode() {
        let o = overload(Duration::from_millis(10));
        let read = Asked::of("resources/read", None);
        assert!(!read.tool_call);
        let refusal = Refusal::render(
            &o,
            &RequestId::int(1),
            read,
            dialect(OverloadResponse::ToolResult),
            -31429,
        );
        assert_eq!(response_of(&refusal)["error"]["code"], -31429);
        assert_eq!(refusal.correlation_id, None);
    }

    #[test]
    fn a_per_request_envelope_call_gets_result_type_complete() {
        let modern =
            r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":1}"#;
        let legacy = r#"{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}"#;
        assert!(Asked::of("tools/call", Some(modern)).result_type);
        assert!(!Asked::of("tools/call", Some(legacy)).result_type);
        assert!(!Asked::of("tools/call", Some(r#"{"progressToken":1}"#)).result_type);
        assert!(!Asked::of("tools/call", Some("not json")).result_type);
        assert!(!Asked::of("tools/call", None).result_type);
        // A later or undated revision is of the envelope era too.
        assert!(
            Asked::of("tools/call", None)
                .with_protocol_header(Some("2027-01-01"))
                .result_type
        );
        assert!(
            Asked::of("tools/call", None)
                .with_protocol_header(Some("DRAFT-2026-v1"))
                .result_type
        );
        assert!(
            !Asked::of("tools/call", None)
                .with_protocol_header(Some("2025-06-18"))
                .result_type
        );
        assert!(!Asked::of("resources/read", Some(modern)).result_type);
        let o = overload(Duration::from_millis(10));
        let refusal = Refusal::render(
            &o,
            &RequestId::int(1),
            Asked::of("tools/call", Some(modern)),
            dialect(OverloadResponse::ToolResult),
            -31429,
        );
        assert_eq!(response_of(&refusal)["result"]["resultType"], "complete");
    }

    #[test]
    fn the_http_status_carries_retry_after_unless_200() {
        let refusal = Refusal::render(
            &overload(Duration::from_millis(2200)),
            &RequestId::int(1),
            CALL,
            dialect(OverloadResponse::Error),
            -31429,
        );
        assert_eq!(refusal.http_status(OverloadStatus::Ok), (200, None));
        assert_eq!(
            refusal.http_status(OverloadStatus::TooManyRequests),
            (429, Some(3))
        );
        assert_eq!(
            refusal.http_status(OverloadStatus::ServiceUnavailable),
            (503, Some(3))
        );
    }

    #[test]
    fn the_live_dialect_round_trips_every_combination() {
        let live = LiveDialect::new(Dialect::default());
        assert_eq!(live.get(), Dialect::default());
        for response in [OverloadResponse::Error, OverloadResponse::ToolResult] {
            for http_status in [
                OverloadStatus::Ok,
                OverloadStatus::TooManyRequests,
                OverloadStatus::ServiceUnavailable,
            ] {
                let dialect = Dialect {
                    response,
                    http_status,
                };
                live.set(dialect);
                assert_eq!(live.get(), dialect);
            }
        }
    }

    #[test]
    fn the_settings_read_their_values() {
        assert_eq!(
            OverloadResponse::parse("tool-result"),
            Some(OverloadResponse::ToolResult)
        );
        assert_eq!(
            OverloadResponse::parse("error"),
            Some(OverloadResponse::Error)
        );
        assert_eq!(
            OverloadResponse::parse("tool_result"),
            Some(OverloadResponse::ToolResult),
            "the Python package's spelling"
        );
        assert_eq!(OverloadResponse::parse("toolresult"), None);
        for code in [200, 429, 503] {
            assert_eq!(
                OverloadStatus::from_code(code).unwrap().code() as i128,
                code
            );
        }
        for code in [0, 201, 500, 502, -503] {
            assert_eq!(OverloadStatus::from_code(code), None);
        }
    }
}
