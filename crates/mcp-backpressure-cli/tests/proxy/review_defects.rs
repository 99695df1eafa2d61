//! Defects found in review, each pinned by a failing test.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::support::{LineSession, Stderr, example, proxy_bin};

/// The README's reload recipe (`mcp-backpressure proxy --config limits.toml
/// ... -- python my_server.py &`, then `kill -HUP %1`) signals the job's
/// process group. The stdio upstream is in the proxy's process group and
/// keeps SIGHUP's default action: it dies, and the proxy exits with it.
#[tokio::test]
async fn sighup_to_the_process_group_reloads_without_killing_the_upstream() {
    let dir = std::env::temp_dir().join(format!("mcp-bp-review-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("limits.toml");
    std::fs::write(&config, "max_concurrent = 2\nqueue_size = 5\n").unwrap();
    let server = example("simple_server");
    let mut child = Command::new(proxy_bin())
        .arg("proxy")
        .args(["--config", config.to_str().unwrap()])
        .arg("--")
        .args([server.to_str().unwrap(), "--transport", "stdio"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A job of its own, as a shell with job control starts it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let mut stderr = Stderr::capture(&mut child, "proxy");
    let pgid = child.id().expect("running");
    let mut s = LineSession::attach(child, "the proxy");
    s.initialize().await;
    s.call(1, "echo", json!({"message": "before"})).await;
    assert!(s.response(1).await.get("result").is_some());

    // `kill -HUP %1`: the signal goes to the whole job.
    let status = std::process::Command::new("kill")
        .args(["-s", "HUP", "--", &format!("-{pgid}")])
        .status()
        .expect("run kill");
    assert!(status.success());
    stderr
        .wait_for("the reload", |l| l.contains("reloaded"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = stderr.all();
    assert!(
        !log.contains("upstream server exited"),
        "the upstream died of the SIGHUP, and the proxy with it:\n{log}"
    );

    s.call(2, "echo", json!({"message": "after"})).await;
    let after = s.response(2).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        after.get("result").is_some(),
        "after SIGHUP: {after}\nproxy log:\n{}",
        stderr.all()
    );
}
