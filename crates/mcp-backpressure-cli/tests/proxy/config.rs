//! Bad settings: a clear error naming the setting, no panic, nothing started.

use std::process::Stdio;

use tokio::process::Command;

use crate::support::{PATIENCE, proxy_bin};

async fn fails(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        PATIENCE,
        Command::new(proxy_bin())
            .arg("proxy")
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the proxy exited in time")
    .expect("run the proxy");
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "wrote to stdout: {:?}",
        output.stdout
    );
    stderr
}

#[tokio::test]
async fn bad_settings_name_the_setting() {
    let cases: [(&[&str], &str); 6] = [
        (&["--", "true"], "invalid max_concurrent"),
        (
            &["--max-concurrent", "0", "--", "true"],
            "invalid max_concurrent",
        ),
        (
            &[
                "--max-concurrent",
                "1",
                "--queue-timeout",
                "0",
                "--",
                "true",
            ],
            "invalid queue_timeout",
        ),
        (
            &[
                "--max-concurrent",
                "1",
                "--queue-timeout",
                "-2",
                "--",
                "true",
            ],
            "invalid queue_timeout",
        ),
        (
            &[
                "--max-concurrent",
                "1",
                "--retry-after-min",
                "2",
                "--retry-after-max",
                "1",
                "--",
                "true",
            ],
            "invalid retry_after_max",
        ),
        (&["--max-concurrent", "1"], "nothing to proxy"),
    ];
    for (args, expected) in cases {
        let stderr = fails(args).await;
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
    let stderr = fails(&["--max-concurrent", "x", "--", "true"]).await;
    assert!(stderr.contains("--max-concurrent"), "{stderr}");
}

#[tokio::test]
async fn a_bad_config_file_names_the_setting_and_the_file() {
    let dir = std::env::temp_dir().join(format!("mcp-bp-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "zero.toml",
            "max_concurrent = 0\n",
            "invalid max_concurrent",
        ),
        (
            "timeout.toml",
            "max_concurrent = 1\nqueue_timeout = -1\n",
            "invalid queue_timeout",
        ),
        ("typo.toml", "max_concurent = 1\n", "max_concurent"),
        ("type.toml", "max_concurrent = \"five\"\n", "max_concurrent"),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let stderr = fails(&["--config", path.to_str().unwrap(), "--", "true"]).await;
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr}"
        );
        if expected != "invalid max_concurrent" && expected != "invalid queue_timeout" {
            assert!(
                stderr.contains(name),
                "{name}: the file is not named in {stderr}"
            );
        }
    }
    let missing = dir.join("missing.toml");
    let stderr = fails(&["--config", missing.to_str().unwrap(), "--", "true"]).await;
    assert!(stderr.contains("missing.toml"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The settings of a config file take effect (and a flag overrides one).
#[tokio::test]
async fn a_config_file_sets_the_limits() {
    let dir = std::env::temp_dir().join(format!("mcp-bp-config-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("limits.toml");
    std::fs::write(
        &path,
        "max_concurrent = 1\nqueue_size = 5\nerror_code = -32001\nguarded = [\"tools/call\"]\n",
    )
    .unwrap();
    let mut s = crate::support::StdioSession::fixture(&[
        "--config",
        path.to_str().unwrap(),
        "--queue-size",
        "0",
    ])
    .await;
    s.call_sleep(1, 60_000).await;
    s.started(1).await;
    s.call_sleep(2, 10).await;
    let rejected = s.response(2).await;
    crate::support::assert_overload(&rejected, 2, -32001, "concurrency_limit");
    s.close();
    assert_eq!(s.exit_code().await, Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
