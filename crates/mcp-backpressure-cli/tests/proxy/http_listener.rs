//! The HTTP proxy's listener, end to end with raw sockets on 127.0.0.1: half
//! a header line, a stalled body and too many connections are cut or held
//! back by the documented bounds (`--header-read-timeout`,
//! `--body-read-timeout`, `--max-connections`); and sequential calls do not
//! wait for delayed ACKs (TCP_NODELAY on the proxy's sockets and on the
//! demo servers'). What uploads can do to each other is `http_bodies`'.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::{Instant, timeout};

use crate::http_client::HttpSession;
use crate::support::{PATIENCE, Stderr, http_example, http_server};

/// Slack on top of a timeout for the proxy to act on it (a loaded machine,
/// a debug build).
pub(crate) const SLACK: Duration = Duration::from_secs(4);

/// Starts the proxy with `args` in front of `upstream`, logging at `log`
/// (`RUST_LOG`); returns it, its stderr and its address.
pub(crate) async fn proxy(args: &[&str], upstream: &str, log: &str) -> (Child, Stderr, SocketAddr) {
    let args = [&["--max-concurrent", "8"], args].concat();
    let (child, stderr, url) = crate::support::http_proxy_logging(&args, upstream, log).await;
    let addr = url["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, stderr, addr)
}

/// An upstream URL nothing listens on (the proxy answers for it).
pub(crate) fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/mcp")
}

pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads until the proxy closes the connection (or resets it); returns what
/// came before.
pub(crate) async fn until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = timeout(PATIENCE, async {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    });
    read.await
        .unwrap_or_else(|_| panic!("the proxy did not close the connection in {PATIENCE:?}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the status line of a response.
pub(crate) async fn status_line(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = timeout(PATIENCE, async {
        let mut byte = [0; 1];
        while !out.ends_with(b"\r\n") {
            let n = stream.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "closed before a response: {out:?}");
            out.push(byte[0]);
        }
    });
    read.await.expect("a response in time");
    String::from_utf8(out).unwrap()
}

pub(crate) fn post_head(content_length: usize) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn http_half_header_lines_are_closed_at_the_header_timeout() {
    let (_proxy, _log, addr) = proxy(&["--header-read-timeout", "1"], &nowhere(), "info").await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..150 {
        let mut client = connect(addr).await;
        client
            .write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty")
            .await
            .unwrap();
        clients.push(client);
    }
    for client in &mut clients {
        assert_eq!(until_closed(client).await, "", "no answer, only the close");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(1) + SLACK,
        "closed after {elapsed:?}"
    );
}

/// Connections that send nothing, or half a head, hold every slot under
/// `--max-connections` (for up to `--header-read-timeout`, here 600 s): a
/// client that comes next is still served, because at the cap the
/// connection longest without a request is closed to make room. (Before,
/// the client waited in the accept backlog until one timed out.)
#[tokio::test]
async fn http_connections_that_send_nothing_do_not_keep_a_client_out() {
    let (_server, _server_log, upstream) =
        http_server("127.0.0.1:0", &["--max-concurrent", "10"]).await;
    let (_proxy, mut log, addr) = proxy(
        &["--max-connections", "4", "--header-read-timeout", "600"],
        &upstream,
        "info,mcp_backpressure::proxy::listener=trace",
    )
    .await;
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut client = connect(addr).await;
        if i % 2 == 1 {
            client
                .write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty")
                .await
                .unwrap();
        }
        idle.push(client);
    }
    // All four accepted: they hold every slot.
    for client in &idle {
        let peer = format!("peer={}", client.local_addr().unwrap());
        log.wait_for("an idle connection accepted", |l| {
            l.contains("connection accepted") && l.contains(&peer)
        })
        .await;
    }
    let session = HttpSession::initialize(&format!("http://{addr}/mcp")).await;
    let mut echo = session.call(1, "echo", json!({"message": "let in"})).await;
    let answer = echo.message_with_id(&json!(1)).await;
    assert_eq!(answer["result"]["content"][0]["text"], "let in", "{answer}");
    // Some of them were closed for it, without a word.
    let mut closed = 0;
    for client in &mut idle {
        let mut byte = [0; 1];
        match client.try_read(&mut byte) {
            Ok(0) => closed += 1,
            Ok(_) => panic!("an idle connection got an answer"),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
}

#[tokio::test]
async fn http_a_stalled_body_is_cut_at_the_body_timeout() {
    let (_proxy, _log, addr) = proxy(&["--body-read-timeout", "1"], &nowhere(), "info").await;
    let mut client = connect(addr).await;
    let started = Instant::now();
    client.write_all(post_head(1000).as_bytes()).await.unwrap();
    client.write_all(&[b' '; 100]).await.unwrap();
    let answer = until_closed(&mut client).await;
    let elapsed = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(1) + SLACK,
        "cut after {elapsed:?}"
    );
}

/// One HTTP/1.1 exchange on a kept-alive connection: the request written in
/// one piece (so the client's own Nagle does not delay it), the response
/// read to its end (`Content-Length` or chunked). Returns the status, the
/// session header and the body.
async fn exchange(
    stream: &mut BufReader<TcpStream>,
    session: Option<&str>,
    message: &Value,
) -> (u16, Option<String>, String) {
    let body = message.to_string();
    let mut head = post_head(body.len());
    head.truncate(head.len() - 2);
    if let Some(session) = session {
        head.push_str(&format!(
            "mcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\n"
        ));
    }
    let request = format!("{head}\r\n{body}");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut length, mut chunked, mut session) = (0, false, None);
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "mcp-session-id" => session = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        stream.read_exact(&mut body).await.unwrap();
    }
    (status, session, String::from_utf8(body).unwrap())
}

/// A client that reads every response to its end on one kept-alive
/// connection, with Nagle on (as Python's `http.client`): 40 ms per call
/// when the proxy, or the demo server behind it, writes a response in parts
/// without TCP_NODELAY (the last part waits for the client's delayed ACK).
#[tokio::test]
async fn http_sequential_calls_do_not_wait_for_delayed_acks() {
    let (_server, _server_log, upstream) = http_example("bare_server", "127.0.0.1:0", &[]).await;
    let (_proxy, _log, addr) = proxy(&[], &upstream, "info").await;
    let mut stream = BufReader::new(connect(addr).await);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "nagle-test", "version": "0"}}});
    let run = async {
        let (status, session, _) = exchange(&mut stream, None, &init).await;
        assert_eq!(status, 200);
        let session = session.expect("a session id");
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, _) = exchange(&mut stream, Some(&session), &initialized).await;
        assert_eq!(status, 202);
        let mut latencies = Vec::new();
        for id in 1..=25 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "hi"}}});
            let started = Instant::now();
            let (status, _, body) = exchange(&mut stream, Some(&session), &call).await;
            latencies.push(started.elapsed());
            assert_eq!(status, 200);
            assert!(body.contains(r#""text":"hi""#), "{body}");
        }
        latencies
    };
    let mut latencies = timeout(PATIENCE, run).await.expect("25 calls in time");
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median {median:?} per call (sorted: {latencies:?})"
    );
}
