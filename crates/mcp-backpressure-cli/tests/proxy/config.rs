//! Bad settings: a clear error naming the setting, no panic, nothing started.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::support::{PATIENCE, proxy_bin};

async fn fails(args: &[&str]) -> String {
    fails_with("proxy", args).await
}

/// Runs `mcp-backpressure <subcommand> <args>`, which must fail without a
/// panic and without writing to stdout; returns its stderr.
async fn fails_with(subcommand: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        PATIENCE,
        Command::new(proxy_bin())
            .arg(subcommand)
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
    assert!(
        stderr.contains("invalid max_concurrent: must be a whole number, got \"x\""),
        "{stderr}"
    );
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
        (
            "type.toml",
            "max_concurrent = \"five\"\n",
            "invalid max_concurrent: must be a whole number, got \"five\"",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let stderr = fails(&["--config", path.to_str().unwrap(), "--", "true"]).await;
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr}"
        );
        if !expected.starts_with("invalid ") {
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

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcp-bp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An upstream command that leaves `marker` behind if it is ever started.
fn touching(marker: &Path) -> [&str; 3] {
    ["--", "touch", marker.to_str().unwrap()]
}

/// Negative, non-numeric, non-finite and out-of-range values of every kind of
/// numeric flag reach our check (not clap's "unexpected argument"), which
/// names the setting; the upstream is never started.
#[tokio::test]
async fn bad_numbers_name_the_setting_and_start_nothing() {
    let dir = Scratch::new("bad-numbers");
    let marker = dir.path("upstream-started");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-concurrent", "1", "--queue-size", "-3"],
            "invalid queue_size: must not be negative, got -3",
        ),
        (
            &["--max-concurrent", "-1"],
            "invalid max_concurrent: must be at least 1, got -1",
        ),
        (
            &["--max-concurrent", "0"],
            "invalid max_concurrent: must be at least 1, got 0",
        ),
        (
            &["--max-concurrent", "1", "--cancel-grace", "-1"],
            "invalid cancel_grace: must not be negative, got -1",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout", "NaN"],
            "invalid queue_timeout: must be a number of seconds, got NaN",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout", "1e30"],
            "invalid queue_timeout: must be at most 31536000 seconds (365 days), got 1e30",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout=-inf"],
            "invalid queue_timeout: must be greater than 0, got -inf",
        ),
        (
            &["--max-concurrent", "1", "--initial-service-time", "inf"],
            "invalid initial_service_time: must be at most 31536000 seconds (365 days), got inf",
        ),
        (
            &["--max-concurrent", "1", "--retry-after-min", "1e400"],
            "invalid retry_after_min: must be at most 31536000 seconds (365 days), got 1e400",
        ),
        (
            &["--max-concurrent", "1", "--queue-size", ""],
            "invalid queue_size: must be a whole number, got \"\"",
        ),
        (
            &["--max-concurrent", "99999999999999999999"],
            "invalid max_concurrent: must be at most 18446744073709551615, got 99999999999999999999",
        ),
        (
            &["--max-concurrent", "1", "--error-code", "2147483648"],
            "invalid error_code: must be a whole number from -2147483648 to 2147483647, \
             got 2147483648",
        ),
        (
            &["--max-concurrent", "1", "--max-message-bytes", "-1"],
            "invalid max_message_bytes: must be at least 1024, got -1",
        ),
        (
            &["--max-concurrent", "1", "--max-in-flight", "-1"],
            "invalid max_in_flight: must be at least 1, got -1",
        ),
        (
            &[
                "--max-concurrent",
                "5",
                "--queue-size",
                "10",
                "--max-in-flight",
                "14",
            ],
            "invalid max_in_flight: must be at least max_concurrent + queue_size \
             (5 + 10 = 15), got 14",
        ),
        (
            &["--max-concurrent", "1", "--buffer-bytes", "1000"],
            "invalid buffer_bytes: must be at least 65536, got 1000",
        ),
        (
            &["--max-concurrent", "1", "--max-connections", "0"],
            "invalid max_connections: must be at least 1, got 0",
        ),
        (
            &["--max-concurrent", "1", "--header-read-timeout", "0"],
            "invalid header_read_timeout: must be greater than 0, got 0",
        ),
        (
            &["--max-concurrent", "1", "--body-read-timeout", "-2.5"],
            "invalid body_read_timeout: must be greater than 0, got -2.5",
        ),
        (
            &["--max-concurrent", "1", "--guard", ""],
            "invalid guarded: a method name must not be empty, got \"\"",
        ),
    ];
    for (args, expected) in cases {
        let mut argv = args.to_vec();
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(!marker.exists(), "{args:?}: the upstream was started");
    }
    // The HTTP transport checks them too, before it listens.
    let stderr = fails(&[
        "--max-concurrent",
        "1",
        "--max-connections",
        "-1",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1/mcp",
    ])
    .await;
    assert!(
        stderr.contains("invalid max_connections: must be at least 1, got -1"),
        "{stderr}"
    );
    // The control: valid settings do start this upstream (the client's
    // stdin stays open until it has).
    let mut proxy = Command::new(proxy_bin())
        .args(["proxy", "--max-concurrent", "1"])
        .args(touching(&marker))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run the proxy");
    tokio::time::timeout(PATIENCE, async {
        while !marker.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the control started the upstream");
    drop(proxy.stdin.take());
    let _ = tokio::time::timeout(PATIENCE, proxy.wait()).await;
}

/// Numbers in the file are checked the same way, with the same words, even
/// when TOML itself cannot hold them.
#[tokio::test]
async fn bad_numbers_in_the_file_name_the_setting_and_start_nothing() {
    let dir = Scratch::new("bad-file-numbers");
    let marker = dir.path("upstream-started");
    let cases = [
        (
            "max_concurrent = 1\nqueue_size = -3\n",
            "invalid queue_size: must not be negative, got -3",
        ),
        (
            "max_concurrent = -1\n",
            "invalid max_concurrent: must be at least 1, got -1",
        ),
        (
            "max_concurrent = 1\ncancel_grace = -1\n",
            "invalid cancel_grace: must not be negative, got -1",
        ),
        (
            "max_concurrent = 1\nqueue_timeout = nan\n",
            "invalid queue_timeout: must be a number of seconds, got nan",
        ),
        (
            "max_concurrent = 1\nqueue_size = 99999999999999999999\n",
            "invalid queue_size: must be at most 18446744073709551615, got 99999999999999999999",
        ),
        (
            "max_concurrent = 1\nbody_read_timeout = 1e400\n",
            "invalid body_read_timeout: must be at most 31536000 seconds (365 days), got 1e400",
        ),
        (
            "max_concurrent = 1\nmax_in_flight = \"many\"\n",
            "invalid max_in_flight: must be a whole number, got \"many\"",
        ),
        (
            "max_concurrent = 1\nerror_code = -2147483649\n",
            "invalid error_code: must be a whole number from -2147483648 to 2147483647, \
             got -2147483649",
        ),
        (
            "max_concurrent = 1\nguarded = \"tools/call\"\n",
            "invalid guarded: must be a list of method names",
        ),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let path = dir.path(&format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut argv = vec!["--config", path.to_str().unwrap()];
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        assert!(
            stderr.contains(expected),
            "{text:?}: expected {expected:?} in {stderr}"
        );
        assert!(!marker.exists(), "{text:?}: the upstream was started");
    }
}

/// Per-tool, per-client and adaptive-limit settings, as flags and as keys
/// of the file: a bad one names the flag or the key; nothing starts.
#[tokio::test]
async fn bad_tool_client_and_limit_settings_name_the_flag_or_key_and_start_nothing() {
    let dir = Scratch::new("bad-keyed");
    let marker = dir.path("upstream-started");
    let flags: &[(&[&str], &str)] = &[
        (
            &["--tool-limit", "report"],
            "invalid --tool-limit: expected NAME=N (e.g. report=2), got \"report\"",
        ),
        (
            &["--tool-weight", "report=0"],
            "invalid tools.\"report\".weight: must be at least 1, got 0",
        ),
        (
            &["--limit", "fast"],
            "invalid limit: must be one of fixed, aimd, gradient2, vegas, got \"fast\"",
        ),
        (
            &["--queue-discipline", "random"],
            "invalid queue_discipline: must be one of fifo, codel, adaptive-lifo, got \"random\"",
        ),
        (
            &["--client-key", "ip"],
            "invalid client_key: must be session or header:NAME (e.g. header:x-client-id), got \"ip\"",
        ),
        (
            &["--client-limit", "-2"],
            "invalid client_limit: must be at least 1, got -2",
        ),
        (
            &["--limit", "aimd", "--min-limit", "5"],
            "invalid min_limit: must not be above max_concurrent (1), got 5",
        ),
    ];
    for (args, expected) in flags {
        let mut argv = vec!["--max-concurrent", "1"];
        argv.extend_from_slice(args);
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(!marker.exists(), "{args:?}: the upstream was started");
    }
    let files = [
        (
            "[tools.report]\nweight = 0\n",
            "invalid tools.\"report\".weight: must be at least 1, got 0",
        ),
        ("[tools.report]\nmax_concurent = 2\n", "max_concurent"),
        (
            "limit = \"vegas\"\nmax_limit = 0\n",
            "invalid max_limit: must be at least 1, got 0",
        ),
        (
            "client_key = \"header:\"\n",
            "invalid client_key: must be session or header:NAME (e.g. header:x-client-id), \
             got \"header:\"",
        ),
    ];
    for (i, (text, expected)) in files.into_iter().enumerate() {
        let path = dir.path(&format!("keyed-{i}.toml"));
        std::fs::write(&path, format!("max_concurrent = 1\n{text}")).unwrap();
        let mut argv = vec!["--config", path.to_str().unwrap()];
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        assert!(
            stderr.contains(expected),
            "{text:?}: expected {expected:?} in {stderr}"
        );
        assert!(!marker.exists(), "{text:?}: the upstream was started");
    }
}

/// `mcp-backpressure load`: the same for its numeric flags; the server is
/// never started.
#[tokio::test]
async fn load_bad_numbers_name_the_flag_and_start_nothing() {
    let dir = Scratch::new("load-bad-numbers");
    let marker = dir.path("server-started");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--concurrency", "-1"],
            "invalid --concurrency: must be at least 1, got -1",
        ),
        (
            &["--concurrency", "0"],
            "invalid --concurrency: must be at least 1, got 0",
        ),
        (
            &["--concurrency", ""],
            "invalid --concurrency: must be a whole number, got \"\"",
        ),
        (
            &["--rate", "-5"],
            "invalid --rate: must be a number of calls per second from 0.001 to 1000000, got -5",
        ),
        (
            &["--rate", "NaN"],
            "invalid --rate: must be a number of calls per second from 0.001 to 1000000, got NaN",
        ),
        (
            &["--rate", "1", "--count", "-1"],
            "invalid --count: must be at least 1, got -1",
        ),
        (
            &["--rate", "1", "--duration", "-1"],
            "invalid --duration: must be greater than 0, got -1",
        ),
        (
            &["--rate", "1", "--duration", "1e19"],
            "invalid --duration: must be at most 31536000 seconds (365 days), got 1e19",
        ),
        (
            &["--rate", "1", "--call-timeout", "inf"],
            "invalid --call-timeout: must be at most 31536000 seconds (365 days), got inf",
        ),
        (
            &["--rate", "1", "--drain-timeout", "NaN"],
            "invalid --drain-timeout: must be a number of seconds, got NaN",
        ),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["--tool", "echo"];
        argv.extend_from_slice(args);
        argv.extend(touching(&marker));
        let stderr = fails_with("load", &argv).await;
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(!marker.exists(), "{args:?}: the server was started");
    }
    for (flag, value, expected) in [
        (
            "--http-max-requests",
            "-1",
            "invalid --http-max-requests: must be at least 1, got -1",
        ),
        (
            "--server-pid",
            "-1",
            "invalid --server-pid: must be at least 1, got -1",
        ),
    ] {
        let stderr = fails_with(
            "load",
            &[
                "--tool",
                "echo",
                "--rate",
                "1",
                "--url",
                "http://127.0.0.1:1/mcp",
                flag,
                value,
            ],
        )
        .await;
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}

/// The transport flags name themselves too.
#[tokio::test]
async fn bad_addresses_name_the_flag() {
    for (args, expected) in [
        (
            &["--listen", "", "--upstream", "http://127.0.0.1:1/mcp"][..],
            "--listen",
        ),
        (
            &[
                "--listen",
                "nowhere",
                "--upstream",
                "http://127.0.0.1:1/mcp",
            ],
            "--listen",
        ),
        (&["--metrics", "70000", "--", "true"], "--metrics"),
        (
            &["--listen", "127.0.0.1:0", "--upstream", ""],
            "invalid --upstream URL",
        ),
        (
            &["--listen", "127.0.0.1:0", "--upstream", "ftp://x/mcp"],
            "invalid --upstream URL",
        ),
    ] {
        let mut argv = vec!["--max-concurrent", "1"];
        argv.extend_from_slice(args);
        let stderr = fails(&argv).await;
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
