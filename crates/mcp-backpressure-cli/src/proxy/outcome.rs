//! What a finished call says about the upstream's load: the
//! [`Outcome`] its slot reports to the limiter (and so to an adaptive limit
//! and to the retry estimate).
//!
//! Honest, in one table:
//!
//! | the call ended with | outcome |
//! |---|---|
//! | a response with `result` | `Success` (its time is a sample) |
//! | a tool result with `isError: true` | `Ignore` (the tool failed on its own) |
//! | a tool result with `isError: true` classified `overload` (SEP-3313 `_meta`: a guarded server or proxy further down refused in the tool-result dialect) | `Dropped` |
//! | an error whose code says overload or timeout (the library's [`OVERLOAD_SIGNAL_CODES`], shared with the rmcp wrapper) | `Dropped` (the limit backs off) |
//! | an HTTP 429 or 503 from the upstream, whatever its body | `Dropped` |
//! | any other error | `Ignore` |
//! | a cancellation, a disconnect, a stream that ended or broke without its response, a response the proxy could not read | `Ignore` |

use mcp_backpressure::Outcome;
#[cfg(doc)]
use mcp_backpressure::jsonrpc::OVERLOAD_SIGNAL_CODES;
use mcp_backpressure::jsonrpc::signals_overload;

use super::wire::message::Answer;

/// The HTTP statuses that say the upstream is overloaded: 429 Too Many
/// Requests and 503 Service Unavailable.
pub const OVERLOAD_STATUSES: [u16; 2] = [429, 503];

/// The outcome of a call answered with `answer`, carried (over HTTP) in a
/// response of `status`.
/// `own_code`: the proxy's configured overload code (an inner proxy
/// configured alike signals overload with it).
pub fn of_answer(answer: Answer, status: Option<u16>, own_code: i32) -> Outcome {
    if status.is_some_and(overloaded) {
        return Outcome::Dropped;
    }
    match answer {
        Answer::Result { is_error: false } => Outcome::Success,
        Answer::Result { is_error: true } => Outcome::Ignore,
        Answer::Refused => Outcome::Dropped,
        Answer::Error {
            code: Some(code), ..
        } if signals_overload(code, own_code) => Outcome::Dropped,
        Answer::Error { .. } => Outcome::Ignore,
    }
}

/// The outcome of a call whose HTTP response (of `status`) ended without
/// its answer.
pub fn of_unanswered(status: u16) -> Outcome {
    if overloaded(status) {
        Outcome::Dropped
    } else {
        Outcome::Ignore
    }
}

fn overloaded(status: u16) -> bool {
    OVERLOAD_STATUSES.contains(&status)
}

#[cfg(test)]
mod tests {
    use mcp_backpressure::jsonrpc::DEFAULT_OVERLOAD_CODE;

    use super::*;

    #[test]
    fn the_proxys_own_configured_code_is_a_drop() {
        assert_eq!(of_answer(error(-32050), None, -32050), Outcome::Dropped);
        assert_eq!(
            of_answer(error(-32050), None, DEFAULT_OVERLOAD_CODE),
            Outcome::Ignore
        );
    }

    const OK: Answer = Answer::Result { is_error: false };
    const TOOL_ERROR: Answer = Answer::Result { is_error: true };

    /// A refusal further down, answered as a tool result, backs the limit
    /// off like the error would.
    #[test]
    fn a_refusal_in_the_tool_result_dialect_is_a_drop() {
        assert_eq!(
            of_answer(Answer::Refused, None, DEFAULT_OVERLOAD_CODE),
            Outcome::Dropped
        );
        assert_eq!(
            of_answer(Answer::Refused, Some(200), DEFAULT_OVERLOAD_CODE),
            Outcome::Dropped
        );
    }

    fn error(code: i64) -> Answer {
        Answer::Error {
            code: Some(code),
            not_found: false,
        }
    }

    #[test]
    fn results_are_successes_unless_the_tool_failed() {
        assert_eq!(of_answer(OK, None, DEFAULT_OVERLOAD_CODE), Outcome::Success);
        assert_eq!(
            of_answer(OK, Some(200), DEFAULT_OVERLOAD_CODE),
            Outcome::Success
        );
        assert_eq!(
            of_answer(TOOL_ERROR, None, DEFAULT_OVERLOAD_CODE),
            Outcome::Ignore
        );
        assert_eq!(
            of_answer(TOOL_ERROR, Some(200), DEFAULT_OVERLOAD_CODE),
            Outcome::Ignore
        );
    }

    #[test]
    fn overload_and_timeout_codes_are_drops() {
        for code in [-32001, -31429, -32029, -32023] {
            assert_eq!(
                of_answer(error(code), None, DEFAULT_OVERLOAD_CODE),
                Outcome::Dropped,
                "{code}"
            );
            assert_eq!(
                of_answer(error(code), Some(200), DEFAULT_OVERLOAD_CODE),
                Outcome::Dropped,
                "{code}"
            );
        }
    }

    #[test]
    fn other_errors_say_nothing_about_load() {
        for code in [
            -32600, -32601, -32602, -32603, -32700, -32000, -32002, 0, 429, 503,
        ] {
            assert_eq!(
                of_answer(error(code), None, DEFAULT_OVERLOAD_CODE),
                Outcome::Ignore,
                "{code}"
            );
        }
        assert_eq!(
            of_answer(
                Answer::Error {
                    code: None,
                    not_found: false,
                },
                None,
                DEFAULT_OVERLOAD_CODE
            ),
            Outcome::Ignore
        );
    }

    #[test]
    fn an_overloaded_status_drops_whatever_the_body() {
        for status in [429, 503] {
            for answer in [
                OK,
                TOOL_ERROR,
                error(-32603),
                Answer::Error {
                    code: None,
                    not_found: false,
                },
            ] {
                assert_eq!(
                    of_answer(answer, Some(status), DEFAULT_OVERLOAD_CODE),
                    Outcome::Dropped
                );
            }
            assert_eq!(of_unanswered(status), Outcome::Dropped);
        }
        for status in [200, 202, 400, 404, 500, 502, 504] {
            assert_eq!(of_unanswered(status), Outcome::Ignore, "{status}");
        }
        assert_eq!(
            of_answer(OK, Some(500), DEFAULT_OVERLOAD_CODE),
            Outcome::Success
        );
    }
}
