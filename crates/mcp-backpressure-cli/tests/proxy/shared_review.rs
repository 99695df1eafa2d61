//! Defects a fresh review found in the proxy's shared limit, each pinned by
//! the test that failed before its fix.

use crate::recorder::Recorder;
use crate::support::http_proxy;

#[tokio::test]
async fn review_a_unix_socket_password_is_not_logged() {
    let (_upstream, upstream_url) = Recorder::start().await;
    let url = "redis+unix:///tmp/mcpbp-review-nowhere.sock?db=0&pass=hunter2";
    let (_child, mut log, _url) = http_proxy(
        &[
            "--max-concurrent",
            "2",
            "--shared-limit",
            url,
            "--shared-key",
            "k",
        ],
        &upstream_url,
    )
    .await;
    let line = log
        .wait_for("the shared-limit line", |l| {
            l.contains("the limit is shared through Redis")
        })
        .await;
    assert!(!line.contains("hunter2"), "the password is logged: {line}");
}
