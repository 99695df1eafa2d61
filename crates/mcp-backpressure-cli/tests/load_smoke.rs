//! Smoke test of `mcp-backpressure load` against the `simple_server` example
//! over stdio: small, bounded runs whose JSON report must add up.
//!
//! The example is built by `cargo test --workspace` (or `cargo build
//! --examples`) into target/<profile>/examples/.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[path = "../../../tests/support/built_examples.rs"]
mod built_examples;

fn simple_server() -> PathBuf {
    built_examples::example("simple_server")
}

fn load(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-backpressure"))
        .arg("load")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run mcp-backpressure load");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn report(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = load(args);
    assert!(ok, "load failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report}"))
}

/// Every call is accounted for exactly once, and the per-reason counts and
/// histograms agree with the totals.
fn assert_adds_up(report: &Value, sent: u64) {
    assert_eq!(n(report, "sent"), sent, "{report}");
    assert_eq!(n(report, "unfinished"), 0, "{report}");
    assert_eq!(n(report, "answered"), sent, "{report}");
    assert_eq!(
        n(report, "ok") + n(report, "rejected_total") + n(report, "errors_total"),
        n(report, "answered"),
        "{report}"
    );
    let by_reason: u64 = report["rejected"]
        .as_object()
        .expect("rejected")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by_reason, n(report, "rejected_total"), "{report}");
    assert_eq!(
        report["latency_ms"]["ok"]["count"].as_u64(),
        Some(n(report, "ok")),
        "{report}"
    );
    assert_eq!(
        report["latency_ms"]["rejected"]["count"].as_u64(),
        Some(n(report, "rejected_total")),
        "{report}"
    );
    assert_eq!(
        n(report, "errors_total"),
        0,
        "no other errors expected: {report}"
    );
}

#[test]
fn open_loop_overload_is_counted_by_reason() {
    let server = simple_server();
    // 200 calls/s of a 20 ms tool against 2 slots (capacity 100/s) and a
    // queue of 2: some calls run, some are turned away.
    let report = report(&[
        "--json",
        "--no-progress",
        "--tool",
        "sleep",
        "--args",
        r#"{"ms": 20}"#,
        "--rate",
        "200",
        "--count",
        "60",
        "--duration",
        "5",
        "--call-timeout",
        "10",
        "--drain-timeout",
        "10",
        "--",
        server.to_str().expect("utf-8 path"),
        "--max-concurrent",
        "2",
        "--queue-size",
        "2",
        "--queue-timeout",
        "0.5",
    ]);
    assert_adds_up(&report, 60);
    assert!(n(&report, "ok") > 0, "{report}");
    assert!(n(&report, "rejected_total") > 0, "{report}");
    assert_eq!(report["mode"], "open");
    assert!(
        report["server"]["peak_rss_kb"]
            .as_u64()
            .is_some_and(|kb| kb > 0),
        "{report}"
    );
}

#[test]
fn closed_loop_runs_every_call() {
    let server = simple_server();
    let report = report(&[
        "--json",
        "--no-progress",
        "--tool",
        "echo",
        "--args",
        r#"{"message": "hi"}"#,
        "--concurrency",
        "4",
        "--count",
        "50",
        "--duration",
        "10",
        "--",
        server.to_str().expect("utf-8 path"),
        "--max-concurrent",
        "4",
        "--queue-size",
        "4",
    ]);
    assert_adds_up(&report, 50);
    assert_eq!(n(&report, "ok"), 50, "{report}");
    assert_eq!(report["mode"], "closed");
}

#[test]
fn bad_input_names_the_flag() {
    let (ok, _, stderr) = load(&["--tool", "echo", "--rate", "0", "--", "true"]);
    assert!(!ok);
    assert!(stderr.contains("--rate"), "{stderr}");
    let (ok, _, stderr) = load(&[
        "--tool", "echo", "--rate", "1", "--args", "[]", "--", "true",
    ]);
    assert!(!ok);
    assert!(stderr.contains("--args"), "{stderr}");
    let (ok, _, stderr) = load(&[
        "--tool",
        "nope",
        "--rate",
        "1",
        "--count",
        "1",
        "--",
        simple_server().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--tool") && stderr.contains("echo"),
        "{stderr}"
    );
}
