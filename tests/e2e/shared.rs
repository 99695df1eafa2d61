//! `simple_server --shared-limit`: two servers (stdio) naming the same Redis
//! key share one limit; the flags are checked like the others.

use std::process::Command;

use serde_json::json;

use crate::redis::RedisServer;
use crate::support::{RawSession, example};

#[test]
fn bad_shared_flags_exit_non_zero_naming_the_flag() {
    let url = "redis://127.0.0.1:1/0";
    let cases: &[(&[&str], &str)] = &[
        (&["--shared-limit", url], "--shared-key"),
        (&["--shared-key", "k"], "--shared-limit"),
        (
            &["--shared-limit", "http://x/", "--shared-key", "k"],
            "--shared-limit",
        ),
        (
            &["--shared-limit", url, "--shared-key", "k", "--lease", "0.1"],
            "--lease",
        ),
        (
            &[
                "--shared-limit",
                url,
                "--shared-key",
                "k",
                "--shared-fail",
                "maybe",
            ],
            "--shared-fail",
        ),
    ];
    for (args, flag) in cases {
        let out = Command::new(example("simple_server"))
            .args(*args)
            .output()
            .expect("run simple_server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_naming_one_key_share_its_limit() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--transport",
        "stdio",
        "--max-concurrent",
        "1",
        "--queue-size",
        "0",
        "--shared-limit",
        url.as_str(),
        "--shared-key",
        "demo",
        "--lease",
        "1",
        "--shared-timeout",
        "0.25",
    ];
    let mut a = RawSession::start(&args).await;
    let mut b = RawSession::start(&args).await;
    a.call_sleep(1, 2_000).await;
    a.started(1).await;
    // The one slot is A's: B refuses at once (no queue).
    b.call(2, "echo", json!({"message": "hi"})).await;
    let refused = b.response(2).await;
    assert_eq!(
        refused["error"]["data"]["reason"], "concurrency_limit",
        "{refused}"
    );
    assert_eq!(refused["error"]["data"]["max_concurrent"], 1, "{refused}");
    let done = a.response(1).await;
    assert!(done.get("result").is_some(), "{done}");
    // Freed (A's release reaches Redis just after its answer): B's next
    // call runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for id in 3.. {
        b.call(id, "echo", json!({"message": "hi"})).await;
        let echoed = b.response(id).await;
        if echoed.get("result").is_some() {
            break;
        }
        assert_eq!(
            echoed["error"]["data"]["reason"], "concurrency_limit",
            "{echoed}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
