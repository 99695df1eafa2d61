//! What the upstream's answers tell an adaptive limit, end to end: with
//! `--limit aimd`, answers that say the upstream is overloaded (an error
//! -32001, an HTTP 503) make the limit back off; a tool's own failure
//! (`isError: true`) or an ordinary error do not.
//!
//! The limiter samples one admission in four, so each phase sends eight
//! calls, one after the other.

use serde_json::{Value, json};

use crate::recorder::{Recorder, call, post_as};
use crate::support::{http_proxy, metric, metrics_url};

const LIMIT: &str = "mcp_backpressure_limit";
const ACTIVE: &str = "mcp_backpressure_active";

/// Eight calls of `tool` with `arguments`, one at a time; returns the HTTP
/// status and body of the last.
async fn eight(url: &str, first_id: u64, tool: &str, arguments: Value) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for id in first_id..first_id + 8 {
        last = post_as(url, None, call(id, tool, arguments.clone())).await;
    }
    last
}

#[tokio::test]
async fn http_overload_answers_lower_an_adaptive_limit_and_tool_errors_do_not() {
    let (_upstream, upstream_url) = Recorder::start().await;
    let (_proxy, mut log, url) = http_proxy(
        &[
            "--max-concurrent",
            "10",
            "--limit",
            "aimd",
            "--metrics",
            "127.0.0.1:0",
        ],
        &upstream_url,
    )
    .await;
    let metrics = metrics_url(&mut log).await;
    assert_eq!(metric(&metrics, LIMIT).await, 10.0);

    // A tool's own failure, and an ordinary error: nothing about load.
    let (_, last) = eight(&url, 0, "tool_error", json!({})).await;
    assert_eq!(last["result"]["isError"], true, "{last}");
    let (_, last) = eight(&url, 10, "fail", json!({"code": -32602})).await;
    assert_eq!(last["error"]["code"], -32602, "{last}");
    assert_eq!(metric(&metrics, LIMIT).await, 10.0);

    // The upstream's request timeout: the limit backs off.
    let (_, last) = eight(&url, 20, "fail", json!({"code": -32001})).await;
    assert_eq!(last["error"]["code"], -32001, "{last}");
    let after_timeouts = metric(&metrics, LIMIT).await;
    assert!(after_timeouts < 10.0, "{after_timeouts}");

    // An HTTP 503, whatever its body: it backs off further.
    let (status, _) = eight(&url, 30, "status", json!({"code": 503})).await;
    assert_eq!(status, 503);
    let after_503 = metric(&metrics, LIMIT).await;
    assert!(
        after_503 < after_timeouts,
        "{after_503} !< {after_timeouts}"
    );

    // Another status says nothing.
    let (status, _) = eight(&url, 40, "status", json!({"code": 500})).await;
    assert_eq!(status, 500);
    assert_eq!(metric(&metrics, LIMIT).await, after_503);
    assert_eq!(metric(&metrics, ACTIVE).await, 0.0);
}
