//! Smoke test of `mcp-backpressure load` against the `simple_server` example
//! over stdio and Streamable HTTP (127.0.0.1): small, bounded runs whose JSON
//! report must add up, one stream or several side by side (`--stream`).
//!
//! The example is built by `cargo test --workspace` (or `cargo build
//! --examples`) into target/<profile>/examples/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// `simple_server` over Streamable HTTP on a free port of 127.0.0.1, killed
/// when dropped.
struct HttpServer {
    child: Child,
    url: String,
}

impl HttpServer {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(simple_server())
            .args(["--transport", "http", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start simple_server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining so the server never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("simple_server listening within 30 s");
        Self { child, url }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The report of the stream `name` in a `--stream` run.
fn stream<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream"] == name)
        .unwrap_or_else(|| panic!("no stream {name} in {report}"))
}

/// Two streams side by side on two sessions of one HTTP server: an
/// overloading open-loop one and a closed-loop one on another tool, each
/// reported on its own, with its client identity.
#[test]
fn two_streams_over_http_are_reported_apart() {
    let server = HttpServer::start(&[
        "--max-concurrent",
        "2",
        "--queue-size",
        "2",
        "--queue-timeout",
        "0.5",
    ]);
    let report = report(&[
        "--json",
        "--no-progress",
        "--url",
        &server.url,
        "--duration",
        "5",
        "--call-timeout",
        "10",
        "--drain-timeout",
        "10",
        "--stream",
        r#"greedy:rate=200,tool=sleep,args={"ms": 20},count=60"#,
        "--stream",
        r#"polite:concurrency=1,tool=db,args={"ms":5},count=10,client=polite-client"#,
    ]);
    assert_eq!(report["client_header"], "x-client-id", "{report}");
    assert_eq!(
        report["streams"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    let greedy = stream(&report, "greedy");
    assert_adds_up(greedy, 60);
    assert_eq!(greedy["client"], "greedy");
    assert_eq!(greedy["tool"], "sleep");
    assert_eq!(greedy["mode"], "open");
    assert!(n(greedy, "ok") > 0, "{greedy}");
    assert!(n(greedy, "rejected_total") > 0, "{greedy}");
    assert!(
        greedy["success_rate"].as_f64().is_some_and(|r| r < 1.0),
        "{greedy}"
    );
    let polite = stream(&report, "polite");
    assert_adds_up(polite, 10);
    assert_eq!(polite["client"], "polite-client");
    assert_eq!(polite["tool"], "db");
    assert_eq!(polite["mode"], "closed");
    // The server's 2 slots are shared: the polite stream may be turned away
    // too, but it was sent and answered on its own.
    assert_eq!(
        n(polite, "ok") + n(polite, "rejected_total"),
        10,
        "{polite}"
    );
}

/// The table of a `--stream` run names every stream.
#[test]
fn the_streams_table_names_every_stream() {
    let server = HttpServer::start(&["--max-concurrent", "4"]);
    let (ok, stdout, stderr) = load(&[
        "--no-progress",
        "--url",
        &server.url,
        "--tool",
        "echo",
        "--args",
        r#"{"message": "hi"}"#,
        "--rate",
        "50",
        "--count",
        "5",
        "--stream",
        "first",
        "--stream",
        "second:client=someone",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 streams against"), "{stdout}");
    assert!(
        stdout.contains("stream first (client first): open loop, 50 calls/s of `echo`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream second (client someone)"),
        "{stdout}"
    );
}

/// `db` takes `ms * max(1, n / C)` with n calls running: 4 callers of a
/// 50 ms query take ~200 ms each at capacity 1 and ~50 ms at capacity 4;
/// `--db-capacity-after 0=1` brings capacity 4 down to 1 from the start.
#[test]
fn the_db_tool_slows_down_past_its_capacity() {
    let median = |server_args: &[&str]| -> f64 {
        let server = simple_server();
        let mut argv = vec![
            "--json",
            "--no-progress",
            "--tool",
            "db",
            "--args",
            r#"{"ms": 50}"#,
            "--concurrency",
            "4",
            "--count",
            "24",
            "--duration",
            "20",
            "--",
            server.to_str().expect("utf-8 path"),
            "--max-concurrent",
            "10",
        ];
        argv.extend_from_slice(server_args);
        let report = report(&argv);
        assert_adds_up(&report, 24);
        assert_eq!(n(&report, "ok"), 24, "{report}");
        report["latency_ms"]["ok"]["p50"].as_f64().expect("p50")
    };
    let saturated = median(&["--db-capacity", "1"]);
    assert!(saturated >= 150.0, "capacity 1: p50 {saturated} ms");
    let halved = median(&["--db-capacity", "4", "--db-capacity-after", "0=1"]);
    assert!(halved >= 150.0, "capacity 4 then 1: p50 {halved} ms");
    let roomy = median(&["--db-capacity", "4"]);
    assert!((50.0..150.0).contains(&roomy), "capacity 4: p50 {roomy} ms");
}

/// Each stream's `client=` reaches the server as the `--client-header`
/// header of its requests (read here off a bare socket that answers nothing).
#[test]
fn a_stream_sends_its_client_as_a_header() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut socket, _)) = listener.accept() {
            let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = socket.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let (ok, _, stderr) = load(&[
        "--no-progress",
        "--url",
        &url,
        "--client-header",
        "X-Tenant",
        "--duration",
        "1",
        "--stream",
        "a:rate=1,tool=echo,client=alice",
    ]);
    let head = rx.recv_timeout(Duration::from_secs(30)).expect("a request");
    assert!(!ok, "no MCP server there");
    assert!(stderr.contains("stream a"), "{stderr}");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /mcp "), "{head}");
    assert!(head.contains("\r\nx-tenant: alice\r\n"), "{head}");
}

#[test]
fn streams_need_a_streamable_http_server() {
    let (ok, _, stderr) = load(&["--stream", "a:rate=1,tool=echo", "--", "true"]);
    assert!(!ok);
    assert!(
        stderr.contains("--stream needs a Streamable HTTP server (--url)"),
        "{stderr}"
    );
}
