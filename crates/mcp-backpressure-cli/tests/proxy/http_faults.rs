//! The HTTP proxy's transparency and faults: headers and bodies pass
//! untouched (checked against an in-test upstream that records what it gets),
//! bad input stops at the proxy, a dead upstream answers with errors while the
//! proxy goes on serving.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::http_client::{HttpSession, client};
use crate::support::{http_proxy, http_server};

type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, Bytes)>>>;

/// An upstream that records every request and answers simply.
async fn recording_upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

async fn record(State(seen): State<Seen>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    seen.lock().unwrap().push((
        parts.method.clone(),
        path,
        parts.headers.clone(),
        body.clone(),
    ));
    match parts.method {
        Method::POST => {
            let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match message.get("id") {
                Some(id) if message.get("method").is_some() => (
                    [
                        ("content-type", "application/json"),
                        ("mcp-session-id", "mock-session"),
                        ("x-upstream", "yes"),
                    ],
                    json!({"jsonrpc": "2.0", "id": id, "result": {"echo": message["method"]}})
                        .to_string(),
                )
                    .into_response(),
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }
        Method::GET => {
            let last = parts
                .headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let event = json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": last}});
            (
                [("content-type", "text/event-stream")],
                format!("id: 43\ndata: {event}\n\n"),
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such session").into_response(),
    }
}

fn last_seen(seen: &Seen) -> (Method, String, HeaderMap, Bytes) {
    seen.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the upstream saw a request")
}

#[tokio::test]
async fn http_headers_and_bodies_pass_untouched() {
    let (upstream, seen) = recording_upstream().await;
    let (_proxy, _log, url) = http_proxy(
        &["--max-concurrent", "1", "--max-message-bytes", "2048"],
        &upstream,
    )
    .await;
    let proxy_host = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let http = client();
    let body =
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{}}}"#;
    let response = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("authorization", "Bearer secret")
        .header("mcp-session-id", "client-session")
        .header("mcp-protocol-version", "2026-07-28")
        .header("x-custom", "kept")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["mcp-session-id"], "mock-session");
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(
        response.json::<Value>().await.unwrap()["result"]["echo"],
        "tools/call"
    );
    let (method, path, headers, received) = last_seen(&seen);
    assert_eq!((method, path.as_str()), (Method::POST, "/mcp"));
    assert_eq!(
        received,
        body.as_bytes(),
        "a compact body is forwarded byte for byte"
    );
    for (name, value) in [
        ("authorization", "Bearer secret"),
        ("mcp-session-id", "client-session"),
        ("mcp-protocol-version", "2026-07-28"),
        ("x-custom", "kept"),
        ("accept", "application/json, text/event-stream"),
        // The client's Host, for the upstream's DNS rebinding protection.
        ("host", proxy_host.as_str()),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name}"
        );
    }
    // The slot was freed by the JSON response: the next call is admitted too.
    let second = http
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(second.json::<Value>().await.unwrap()["id"], 8);

    // A batch without guarded requests passes (re-framed: white space
    // between tokens removed).
    let batch = r#"[{"jsonrpc":"2.0","id":9,"method":"ping"}, {"jsonrpc":"2.0","method":"x"}]"#;
    let response = http.post(&url).body(batch).send().await.unwrap();
    assert!(response.status().is_success());
    assert_eq!(last_seen(&seen).3, batch.replace(", ", ",").as_bytes());
    // A batch with a guarded request in it never reaches the upstream: each
    // request in it is answered with an error.
    let guarded = r#"[{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"x"}},{"jsonrpc":"2.0","id":11,"method":"ping"}]"#;
    let response = http.post(&url).body(guarded).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answers = response.json::<Value>().await.unwrap();
    assert_eq!(answers[0]["id"], 10, "{answers}");
    assert_eq!(answers[1]["id"], 11, "{answers}");
    assert_eq!(answers[0]["error"]["code"], -32600, "{answers}");
    assert_eq!(last_seen(&seen).3, batch.replace(", ", ",").as_bytes());

    // GET (the server's stream) with Last-Event-ID and a query, streamed back.
    let response = http
        .get(format!("{url}?x=1"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("id: 43\ndata: ") && text.contains("\"data\":\"42\""),
        "{text}"
    );
    assert_eq!(last_seen(&seen).1, "/mcp?x=1");

    // Statuses pass back as they are.
    let response = http
        .delete(&url)
        .header("mcp-session-id", "gone")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(last_seen(&seen).2["mcp-session-id"], "gone");

    // Bad input stops at the proxy, with a clear JSON-RPC error.
    let before = seen.lock().unwrap().len();
    let response = http.post(&url).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32700, "{error}");
    assert_eq!(error["id"], Value::Null);
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "x", "arguments": {"blob": "x".repeat(5000)}}});
    let response = http.post(&url).body(huge.to_string()).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32600, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_message_bytes"),
        "{error}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "bad input reached the upstream"
    );
    // Calls answered in full were never taken for abandoned ones.
    let cancels = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(.., body)| String::from_utf8_lossy(body).contains("notifications/cancelled"))
        .count();
    assert_eq!(cancels, 0, "a call answered in full was cancelled upstream");
}

/// The upstream dies mid-call: the call gets a JSON-RPC error on its stream
/// (nothing hangs); the proxy answers new requests with errors while the
/// upstream is down, and serves new sessions once it is back.
#[tokio::test]
async fn http_upstream_crash() {
    let (mut server, _log, upstream) =
        http_server("127.0.0.1:0", &["--max-concurrent", "1000"]).await;
    let (mut proxy, _proxy_log, url) =
        http_proxy(&["--max-concurrent", "1", "--queue-size", "1"], &upstream).await;
    let a = HttpSession::initialize(&url).await;
    let mut one = a.call(1, "sleep", json!({"ms": 60_000})).await;
    one.started(1).await;
    server.kill().await.unwrap();
    let error = one.message_with_id(&json!(1)).await;
    assert_eq!(error["error"]["code"], -32603, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{error}"
    );
    // Down: a request gets a generic JSON-RPC error (the upstream's address
    // and the OS error go to the log only); the slot is free.
    let mut two = a.call(2, "echo", json!({"message": "x"})).await;
    let error = two.message_with_id(&json!(2)).await;
    assert_eq!(error["error"]["code"], -32603, "{error}");
    assert_eq!(
        error["error"]["message"], "the upstream server is unavailable",
        "{error}"
    );
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
    assert!(
        proxy.try_wait().unwrap().is_none(),
        "the proxy died with its upstream"
    );

    // Back on the same address: a new session works through the same proxy.
    let addr = upstream
        .trim_start_matches("http://")
        .trim_end_matches("/mcp");
    let (_server, _log, _) = http_server(addr, &["--max-concurrent", "1000"]).await;
    let b = HttpSession::initialize(&url).await;
    let mut echo = b.call(3, "echo", json!({"message": "back"})).await;
    let done = echo.message_with_id(&json!(3)).await;
    assert_eq!(done["result"]["content"][0]["text"], "back", "{done}");
    // Every slot was given back: the limit of 1 admits this call at once.
    let mut again = b.call(4, "echo", json!({"message": "again"})).await;
    let done = again.message_with_id(&json!(4)).await;
    assert!(done.get("result").is_some(), "{done}");
}

/// A client that stops reading an event stream: the proxy stops reading the
/// upstream instead of buffering without bound. The upstream offers 96 MB of
/// events and counts what is taken from it; while the client does not read,
/// what gets taken stalls at what the sockets' buffers hold.
#[tokio::test]
async fn http_slow_client_is_bounded() {
    const EVENT: usize = 1024;
    const TOTAL: u64 = 96 * 1024; // events: 96 MB
    const BOUND: u64 = 32 * 1024; // events: 32 MB (~10 MB seen: socket buffers)
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = {
        let taken = taken.clone();
        axum::Router::new().fallback(move || {
            let taken = taken.clone();
            async move {
                let event = Bytes::from(format!("data: {}\n\n", "x".repeat(EVENT - 8)));
                let events = futures_util::stream::iter(0..TOTAL).map(move |_| {
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, std::io::Error>(event.clone())
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(events),
                )
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_proxy, _log, url) = http_proxy(&["--max-concurrent", "1"], &upstream).await;
    let response = client()
        .post(&url)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"flood"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // Not reading the body: wait until the upstream stops being read.
    let count = || taken.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let (mut last, mut stable_since) = (0, tokio::time::Instant::now());
    loop {
        let now = count();
        assert!(
            now < BOUND,
            "{now} events taken for a client that does not read"
        );
        if now != last || now == 0 {
            (last, stable_since) = (now, tokio::time::Instant::now());
        } else if stable_since.elapsed() >= std::time::Duration::from_secs(1) {
            eprintln!("the upstream stalled after {now} events of {EVENT} bytes");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not stall: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Reading again, everything comes through.
    let mut body = response;
    let mut received = 0u64;
    tokio::time::timeout(crate::support::PATIENCE, async {
        while let Some(chunk) = body.chunk().await.unwrap() {
            received += chunk.len() as u64;
        }
    })
    .await
    .expect("the flood ended in time");
    assert_eq!(received, TOTAL * EVENT as u64);
}

/// SIGTERM: the HTTP proxy stops serving and exits cleanly.
#[tokio::test]
async fn http_sigterm_exits() {
    let (_server, _log, upstream) = http_server("127.0.0.1:0", &["--max-concurrent", "10"]).await;
    let (mut proxy, mut log, url) = http_proxy(&["--max-concurrent", "1"], &upstream).await;
    let session = HttpSession::initialize(&url).await;
    let mut echo = session.call(1, "echo", json!({"message": "hi"})).await;
    assert!(
        echo.message_with_id(&json!(1))
            .await
            .get("result")
            .is_some()
    );
    drop(echo);
    let pid = proxy.id().expect("the proxy runs").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    log.wait_for("the shutdown", |l| l.contains("shutting down"))
        .await;
    let status = tokio::time::timeout(crate::support::PATIENCE, proxy.wait())
        .await
        .expect("the proxy exited in time")
        .unwrap();
    assert!(status.success(), "{status}");
}
