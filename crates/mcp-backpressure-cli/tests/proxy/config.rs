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
            "invalid --max-concurrent 0: must be at least 1",
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
            "invalid --queue-timeout",
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
            "invalid --queue-timeout",
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
            "invalid --retry-after-max 1: must not be below --retry-after-min (2)",
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
        stderr.contains("invalid --max-concurrent x: must be a whole number"),
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
            "invalid max_concurrent = 0 in {path}, line 1: must be at least 1",
        ),
        (
            "timeout.toml",
            "max_concurrent = 1\nqueue_timeout = -1\n",
            "invalid queue_timeout = -1 in {path}, line 2: must be greater than 0",
        ),
        ("typo.toml", "max_concurent = 1\n", "max_concurent"),
        (
            "type.toml",
            "max_concurrent = \"five\"\n",
            "invalid max_concurrent = \"five\" in {path}, line 1: must be a whole number",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let stderr = fails(&["--config", path.to_str().unwrap(), "--", "true"]).await;
        let expected = expected.replace("{path}", &path.display().to_string());
        assert!(
            stderr.contains(&expected),
            "{name}: expected {expected:?} in {stderr}"
        );
        assert!(
            stderr.contains(name),
            "{name}: the file is not named in {stderr}"
        );
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
            "invalid --queue-size -3: must not be negative",
        ),
        (
            &["--max-concurrent", "-1"],
            "invalid --max-concurrent -1: must be at least 1",
        ),
        (
            &["--max-concurrent", "0"],
            "invalid --max-concurrent 0: must be at least 1",
        ),
        (
            &["--max-concurrent", "1", "--cancel-grace", "-1"],
            "invalid --cancel-grace -1: must not be negative",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout", "NaN"],
            "invalid --queue-timeout NaN: must be a number of seconds",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout", "1e30"],
            "invalid --queue-timeout 1e30: must be at most 31536000 seconds (365 days)",
        ),
        (
            &["--max-concurrent", "1", "--queue-timeout=-inf"],
            "invalid --queue-timeout -inf: must be greater than 0",
        ),
        (
            &["--max-concurrent", "1", "--initial-service-time", "inf"],
            "invalid --initial-service-time inf: must be at most 31536000 seconds (365 days)",
        ),
        (
            &["--max-concurrent", "1", "--retry-after-min", "1e400"],
            "invalid --retry-after-min 1e400: must be at most 31536000 seconds (365 days)",
        ),
        (
            &["--max-concurrent", "1", "--queue-size", ""],
            "invalid --queue-size \"\": must be a whole number",
        ),
        (
            &["--max-concurrent", "99999999999999999999"],
            "invalid --max-concurrent 99999999999999999999: must be at most 18446744073709551615",
        ),
        (
            &["--max-concurrent", "1", "--error-code", "2147483648"],
            "invalid --error-code 2147483648: must be a whole number from -2147483648 to \
             2147483647",
        ),
        (
            &["--max-concurrent", "1", "--max-message-bytes", "-1"],
            "invalid --max-message-bytes -1: must be at least 1024",
        ),
        (
            &["--max-concurrent", "1", "--max-in-flight", "-1"],
            "invalid --max-in-flight -1: must be at least 1",
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
            "invalid --max-in-flight 14: must be at least max_concurrent + queue_size \
             (5 + 10 = 15)",
        ),
        (
            &["--max-concurrent", "1", "--buffer-bytes", "1000"],
            "invalid --buffer-bytes 1000: must be at least 65536",
        ),
        (
            &["--max-concurrent", "1", "--max-connections", "0"],
            "invalid --max-connections 0: must be at least 1",
        ),
        (
            &["--max-concurrent", "1", "--header-read-timeout", "0"],
            "invalid --header-read-timeout 0: must be greater than 0",
        ),
        (
            &["--max-concurrent", "1", "--body-read-timeout", "-2.5"],
            "invalid --body-read-timeout -2.5: must be greater than 0",
        ),
        (
            &["--max-concurrent", "1", "--guard", ""],
            "invalid --guard \"\": a method name must not be empty, got \"\"",
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
        stderr.contains("invalid --max-connections -1: must be at least 1"),
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
    // (the file, what it names: the key as written and its value, the line, why)
    let cases = [
        (
            "max_concurrent = 1\nqueue_size = -3\n",
            "queue_size = -3",
            2,
            "must not be negative",
        ),
        (
            "max_concurrent = -1\n",
            "max_concurrent = -1",
            1,
            "must be at least 1",
        ),
        (
            "max_concurrent = 1\ncancel_grace = -1\n",
            "cancel_grace = -1",
            2,
            "must not be negative",
        ),
        (
            "max_concurrent = 1\nqueue_timeout = nan\n",
            "queue_timeout = nan",
            2,
            "must be a number of seconds",
        ),
        (
            "max_concurrent = 1\nqueue_size = 99999999999999999999\n",
            "queue_size = 99999999999999999999",
            2,
            "must be at most 18446744073709551615",
        ),
        (
            "max_concurrent = 1\n\nbody_read_timeout = 1e400\n",
            "body_read_timeout = 1e400",
            3,
            "must be at most 31536000 seconds (365 days)",
        ),
        (
            "max_concurrent = 1\nmax_in_flight = \"many\"\n",
            "max_in_flight = \"many\"",
            2,
            "must be a whole number",
        ),
        (
            "max_concurrent = 1\nerror_code = -2147483649\n",
            "error_code = -2147483649",
            2,
            "must be a whole number from -2147483648 to 2147483647",
        ),
        (
            "max_concurrent = 1\nguarded = \"tools/call\"\n",
            "guarded = \"tools/call\"",
            2,
            "must be a list of method names",
        ),
    ];
    for (i, (text, named, line, why)) in cases.into_iter().enumerate() {
        let path = dir.path(&format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut argv = vec!["--config", path.to_str().unwrap()];
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        let expected = format!("invalid {named} in {}, line {line}: {why}", path.display());
        assert!(
            stderr.contains(&expected),
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
            "invalid --tool-limit report: expected NAME=N (e.g. report=2)",
        ),
        (
            &["--tool-weight", "report=0"],
            "invalid --tool-weight report=0: must be at least 1",
        ),
        (
            &["--limit", "fast"],
            "invalid --limit fast: must be one of fixed, aimd, gradient2, vegas",
        ),
        (
            &["--queue-discipline", "random"],
            "invalid --queue-discipline random: must be one of fifo, codel, adaptive-lifo",
        ),
        (
            &["--client-key", "ip"],
            "invalid --client-key ip: must be session or header:NAME (e.g. header:x-client-id)",
        ),
        (
            &["--client-limit", "-2"],
            "invalid --client-limit -2: must be at least 1",
        ),
        (
            &["--limit", "aimd", "--min-limit", "5"],
            "invalid --min-limit 5: must not be above --max-concurrent (1)",
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
    // A key as written, its value, the file and the line; a flag given with
    // the file is named as the flag.
    let files = [
        (
            "[tools.report]\nweight = 0\n",
            &[][..],
            "tools.report.weight = 0 in {path}, line 3: must be at least 1",
        ),
        (
            "[tools.\"my tool\"]\nweight = \"heavy\"\n",
            &[],
            "tools.\"my tool\".weight = \"heavy\" in {path}, line 3: must be a whole number",
        ),
        (
            "tools.sleep.max_concurrent = 0\n",
            &[],
            "tools.sleep.max_concurrent = 0 in {path}, line 2: must be at least 1",
        ),
        ("[tools.report]\nmax_concurent = 2\n", &[], "max_concurent"),
        (
            "limit = \"vegas\"\nmax_limit = 0\n",
            &[],
            "max_limit = 0 in {path}, line 3: must be at least 1",
        ),
        (
            "limit = \"aimd\"\nmax_limit = 3\n",
            &["--max-concurrent", "5"],
            "max_limit = 3 in {path}, line 3: must not be below --max-concurrent (5)",
        ),
        (
            "\nclient_key = \"header:\"\n",
            &[],
            "client_key = \"header:\" in {path}, line 3: must be session or header:NAME \
             (e.g. header:x-client-id)",
        ),
        (
            "[tools.sleep]\nweight = 2\n",
            &["--tool-weight", "sleep=heavy"],
            "--tool-weight sleep=heavy: must be a whole number",
        ),
    ];
    for (i, (text, flags, expected)) in files.into_iter().enumerate() {
        let path = dir.path(&format!("keyed-{i}.toml"));
        std::fs::write(&path, format!("max_concurrent = 1\n{text}")).unwrap();
        let mut argv = vec!["--config", path.to_str().unwrap()];
        argv.extend_from_slice(flags);
        argv.extend(touching(&marker));
        let stderr = fails(&argv).await;
        let expected = expected.replace("{path}", &path.display().to_string());
        assert!(
            stderr.contains(&expected),
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
