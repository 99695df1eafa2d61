//! Faults and bad input over stdio, in front of the Python fixture
//! (`tests/fixtures/raw_server.py`), which misbehaves on request.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::support::{PATIENCE, StdioSession};

const LONG_MS: u64 = 60_000;

/// The client closes stdin: every call in flight is cancelled upstream, the
/// upstream's stdin is closed, the proxy exits cleanly.
#[tokio::test]
async fn stdio_client_disconnect_cancels_upstream() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "4"]).await;
    s.call_sleep(1, LONG_MS).await;
    s.call_sleep(2, LONG_MS).await;
    s.started(1).await;
    s.started(2).await;
    s.close();
    for id in [1, 2] {
        s.stderr
            .wait_for(&format!("the fixture's cancel of {id}"), |l| {
                l == format!("fixture: cancel received {id}")
            })
            .await;
    }
    s.stderr
        .wait_for("the fixture's stdin closing", |l| {
            l == "fixture: stdin closed"
        })
        .await;
    assert_eq!(s.exit_code().await, Some(0));
}

/// The upstream crashes: every pending call gets a JSON-RPC error (nothing
/// hangs), and the proxy exits with status 1 and a message naming it.
#[tokio::test]
async fn stdio_upstream_crash() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "1", "--queue-size", "1"]).await;
    s.call_sleep(1, LONG_MS).await;
    s.started(1).await;
    s.call(2, "crash", json!({"code": 3})).await; // queued behind 1
    s.send(json!({"jsonrpc": "2.0", "id": "list", "method": "tools/list"}))
        .await;
    s.response("list").await;
    // 2 is queued; free 1's slot so that 2 runs and crashes the upstream.
    s.cancel(1).await;
    for id in [json!(2)] {
        let error = s.response(id.clone()).await;
        assert_eq!(error["error"]["code"], -32603, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        // Nothing internal (exit status, command) reaches the client.
        assert_eq!(message, "the upstream server is unavailable");
    }
    assert_eq!(s.exit_code().await, Some(1));
    let line = s
        .stderr
        .wait_for("the proxy's error", |l| {
            l.starts_with("mcp-backpressure: error:")
        })
        .await;
    assert!(line.contains("exited") && line.contains('3'), "{line}");
}

/// A call that was running when the upstream died gets an error too.
#[tokio::test]
async fn stdio_upstream_crash_with_calls_running() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "4"]).await;
    s.call_sleep(1, LONG_MS).await;
    s.call_sleep(2, LONG_MS).await;
    s.started(1).await;
    s.started(2).await;
    s.call(3, "crash", json!({"code": 7})).await;
    for id in [1, 2, 3] {
        let error = s.response(id).await;
        assert_eq!(error["error"]["code"], -32603, "{error}");
    }
    assert_eq!(s.exit_code().await, Some(1));
}

/// Malformed JSON from the client gets -32700 and the session goes on; an
/// oversized message gets a clear error and the session goes on.
#[tokio::test]
async fn stdio_bad_client_input() {
    let mut s =
        StdioSession::fixture(&["--max-concurrent", "2", "--max-message-bytes", "2048"]).await;
    s.send_raw(b"this is not json\n").await;
    let error = s.response(json!(null)).await;
    assert_eq!(error["error"]["code"], -32700, "{error}");
    s.call(1, "echo", json!({"message": "still here"})).await;
    assert_eq!(
        s.response(1).await["result"]["content"][0]["text"],
        "still here"
    );

    s.call(2, "echo", json!({"message": "x".repeat(5000)}))
        .await;
    // Answered by the proxy under its own id, found by scanning the line
    // without holding it.
    let error = s.response(2).await;
    assert_eq!(error["error"]["code"], -32600, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_message_bytes") && message.contains("2048"),
        "{message}"
    );
    s.call(3, "echo", json!({"message": "and still"})).await;
    assert_eq!(
        s.response(3).await["result"]["content"][0]["text"],
        "and still"
    );
    assert!(
        !s.has_response(2).await,
        "the oversized call must not reach the upstream (a second answer)"
    );
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A line from the upstream that is not JSON is logged and dropped; the
/// session goes on.
#[tokio::test]
async fn stdio_bad_upstream_output() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "2"]).await;
    s.call(1, "garbage", json!({})).await;
    assert_eq!(
        s.response(1).await["result"]["content"][0]["text"],
        "after garbage"
    );
    s.stderr
        .wait_for("the proxy's warning", |l| l.contains("cannot be passed on"))
        .await;
    s.call(2, "echo", json!({"message": "fine"})).await;
    assert_eq!(s.response(2).await["result"]["content"][0]["text"], "fine");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}

/// A client that stops reading: the proxy stops reading the upstream after a
/// bounded amount instead of buffering without bound, and everything flows
/// again when the client reads. The fixture floods 40 MB of notifications;
/// while the client does not read, at most a few hundred kB get through (two
/// pipe buffers and the proxy's bounded channel).
#[tokio::test]
async fn stdio_slow_client_is_bounded() {
    const SIZE: u64 = 1000;
    const COUNT: u64 = 40_000;
    const BOUND: u64 = 5_000; // lines: 5 MB, an eighth of the flood
    let script = crate::support::fixture("raw_server.py");
    let mut child = Command::new(crate::support::proxy_bin())
        .args(["proxy", "--max-concurrent", "2", "--", "python3"])
        .arg(script)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap(); // not read until the end
    let stderr = crate::support::Stderr::capture(&mut child, "proxy");
    let messages = [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "slow", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "flood", "arguments": {"count": COUNT, "size": SIZE}}}),
    ];
    for message in messages {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        stdin.write_all(&line).await.unwrap();
    }
    stdin.flush().await.unwrap();
    let flooded = || -> u64 {
        stderr
            .all()
            .lines()
            .filter_map(|l| l.strip_prefix("fixture: flooded "))
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    };
    // Wait until the flood has started and then stalled: unchanged for 1 s.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mut last, mut stable_since) = (0, tokio::time::Instant::now());
    loop {
        let now = flooded();
        assert!(
            now < BOUND,
            "the proxy let {now} lines through to a client that does not read"
        );
        if now != last || now == 0 {
            (last, stable_since) = (now, tokio::time::Instant::now());
        } else if stable_since.elapsed() >= Duration::from_secs(1) {
            eprintln!("the upstream stalled after {now} lines of {SIZE} bytes");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not stall: {now} lines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client reads again: the whole flood and the response come through.
    let mut lines = BufReader::new(stdout).lines();
    let mut notifications = 0u64;
    let response = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let message: serde_json::Value = serde_json::from_str(&line).unwrap();
            if message["method"] == "notifications/message" {
                notifications += 1;
            } else if message["id"] == 1 {
                return message;
            }
        }
        panic!("the proxy closed stdout");
    })
    .await
    .expect("the flood ended in time");
    assert_eq!(notifications, COUNT);
    assert_eq!(
        response["result"]["content"][0]["text"],
        format!("flooded {COUNT}")
    );
    drop(stdin);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// SIGTERM: every call in flight is cancelled upstream, and — the client
/// being still there — every call running or queued is answered with an
/// error before the proxy exits cleanly.
#[tokio::test]
async fn stdio_sigterm_cancels_upstream_and_answers_every_pending_call() {
    let mut s = StdioSession::fixture(&["--max-concurrent", "1", "--queue-size", "1"]).await;
    s.call_sleep(1, LONG_MS).await;
    s.started(1).await;
    s.call_sleep(2, LONG_MS).await; // queued behind 1
    s.send(json!({"jsonrpc": "2.0", "id": "barrier", "method": "ping"}))
        .await;
    s.response("barrier").await;
    let pid = s.child.id().expect("the proxy runs").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    s.stderr
        .wait_for("the fixture's cancel of 1", |l| {
            l == "fixture: cancel received 1"
        })
        .await;
    for id in [1, 2] {
        let error = s.response(id).await;
        assert_eq!(error["error"]["code"], -32603, "{error}");
        assert_eq!(error["error"]["message"], "the proxy is shutting down");
    }
    assert_eq!(s.exit_code().await, Some(0));
}
