//! SIGHUP reloads `--config` live, end to end: the proxy started with a
//! config file, the file changed, `kill -HUP` sent to the proxy process,
//! and the new limits observed through the metrics endpoint and through
//! behaviour. A flag still overrides the file; settings that need a restart
//! keep their value; an invalid file is refused and the old limits stay.

use std::path::{Path, PathBuf};

use crate::support::{StdioSession, assert_overload, metric, metrics_url, wait_metric};

const LIMIT: &str = "mcp_backpressure_limit";
const SLEEP_LIMIT: &str = "mcp_backpressure_tool_limit{tool=\"sleep\"}";

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcp-bp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends SIGHUP to the process `pid`.
fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP {pid}: {status}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn stdio_sighup_reloads_the_limits_and_refuses_a_bad_file() {
    let scratch = Scratch::new("reload");
    let config = scratch.write(
        "limits.toml",
        "max_concurrent = 1\nqueue_size = 3\n[tools.sleep]\nweight = 1\n",
    );
    let mut s = StdioSession::fixture(&[
        "--config",
        path_str(&config),
        "--queue-size",
        "0",
        "--metrics",
        "127.0.0.1:0",
    ])
    .await;
    let metrics = metrics_url(&mut s.stderr).await;
    let pid = s.child.id().expect("the proxy runs");
    s.call_sleep(1, 60_000).await;
    s.started(1).await;
    s.call_sleep(2, 10).await;
    let refused = s.response(2).await;
    let data = assert_overload(&refused, 2, -31429, "concurrency_limit");
    assert_eq!(data["max_concurrent"], 1, "{refused}");

    // Raise the limit, give sleep a limit of its own, and change a setting
    // that needs a restart; the file's queue_size stays overridden by the flag.
    scratch.write(
        "limits.toml",
        "max_concurrent = 2\nqueue_size = 5\nerror_code = -32001\n\
         [tools.sleep]\nmax_concurrent = 2\nweight = 1\n",
    );
    hangup(pid);
    wait_metric(&metrics, LIMIT, 2.0).await;
    assert_eq!(metric(&metrics, SLEEP_LIMIT).await, 2.0);
    s.stderr
        .wait_for("the reload's summary", |l| l.contains("setting(s) changed"))
        .await;
    for change in [
        "reload: max_concurrent: 1 -> 2",
        "reload: tools.\"sleep\".max_concurrent: unset -> 2",
        "reload: error_code: -31429 -> -32001 needs a restart; -31429 stays in force",
    ] {
        s.stderr.wait_for(change, |l| l.contains(change)).await;
    }
    assert!(
        !s.stderr.all().contains("reload: queue_size"),
        "{}",
        s.stderr.all()
    );
    s.call_sleep(3, 60_000).await;
    s.started(3).await;
    s.call_sleep(4, 10).await;
    let refused = s.response(4).await;
    // The old error code, the flag's queue size, the new limits.
    let data = assert_overload(&refused, 4, -31429, "concurrency_limit");
    assert_eq!(data["max_concurrent"], 2, "{refused}");
    assert_eq!(data["queue_size"], 0, "{refused}");
    assert_eq!(data["scope"], "tool:sleep", "{refused}");

    // An invalid file: refused, naming the key; the limits in force stay.
    scratch.write(
        "limits.toml",
        "max_concurrent = 3\n[tools.sleep]\nmax_concurrent = 3\nweight = 0\n",
    );
    hangup(pid);
    let line = s
        .stderr
        .wait_for("the refusal", |l| l.contains("refused"))
        .await;
    // As written: the key, its value, the file and the line.
    assert!(
        line.contains(&format!(
            "invalid tools.sleep.weight = 0 in {}, line 4: must be at least 1",
            config.display()
        )),
        "{line}"
    );
    assert!(line.contains("the settings in force stay"), "{line}");
    assert_eq!(metric(&metrics, LIMIT).await, 2.0);
    assert_eq!(metric(&metrics, SLEEP_LIMIT).await, 2.0);
    s.call_sleep(5, 10).await;
    let refused = s.response(5).await;
    let data = assert_overload(&refused, 5, -31429, "concurrency_limit");
    assert_eq!(data["max_concurrent"], 2, "{refused}");

    // A file that no longer parses is refused the same way.
    scratch.write("limits.toml", "max_concurrent = 3\n[tools.sleep\n");
    hangup(pid);
    s.stderr
        .wait_for("the second refusal", |l| {
            l.contains("refused") && l.contains("invalid config file")
        })
        .await;
    assert_eq!(metric(&metrics, LIMIT).await, 2.0);

    // Still serving: the proxy outlived every SIGHUP.
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
}
