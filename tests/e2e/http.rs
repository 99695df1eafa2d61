use mcp_backpressure::{OverloadData, OverloadReason};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, PingRequest, ProgressToken, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestHandle, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{PATIENCE, StartWatcher, http_url, spawn_server};

const LONG_MS: u64 = 60_000;

type Client = RunningService<RoleClient, StartWatcher>;

async fn connect(url: &str) -> (Client, mpsc::UnboundedReceiver<ProgressToken>) {
    let (tx, starts) = mpsc::unbounded_channel();
    let transport = StreamableHttpClientTransport::from_uri(url);
    let client = tokio::time::timeout(PATIENCE, StartWatcher(tx).serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake");
    (client, starts)
}

fn sleep_call(ms: u64) -> ClientRequest {
    ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("sleep")
            .with_arguments(json!({"ms": ms}).as_object().cloned().unwrap()),
    ))
}

/// Starts a long `sleep` and waits until it holds a slot.
async fn start_long(
    client: &Client,
    starts: &mut mpsc::UnboundedReceiver<ProgressToken>,
) -> RequestHandle<RoleClient> {
    let handle = client
        .send_cancellable_request(sleep_call(LONG_MS), PeerRequestOptions::no_options())
        .await
        .unwrap();
    // rmcp's client puts a progress token on every request; this is the only
    // call in flight that can start, so the next announcement is its.
    let started = tokio::time::timeout(PATIENCE, starts.recv())
        .await
        .expect("the call started in time");
    assert!(started.is_some());
    handle
}

async fn overload_of(client: &Client) -> OverloadData {
    match tokio::time::timeout(PATIENCE, client.send_request(sleep_call(1))).await {
        Ok(Err(ServiceError::McpError(error))) => {
            assert_eq!(error.code.0, -31429);
            assert!(
                error.message.starts_with("SERVER_OVERLOADED: "),
                "{}",
                error.message
            );
            serde_json::from_value(error.data.expect("data")).expect("overload data")
        }
        other => panic!("expected the overload error, got {other:?}"),
    }
}

/// Retries a short call until it succeeds; fails if it never does.
async fn eventually_admitted(client: &Client) {
    for _ in 0..200 {
        match tokio::time::timeout(PATIENCE, client.send_request(sleep_call(1))).await {
            Ok(Ok(_)) => return,
            Ok(Err(ServiceError::McpError(e))) if e.code.0 == -31429 => {
                tokio::task::yield_now().await
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    panic!("no slot was ever freed");
}

fn spawn_http(args: &[&str]) -> tokio::process::Child {
    let mut all = vec!["--transport", "http", "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    spawn_server(&all)
}

/// One limit for every session; a new client's initialize, ping and tools/list
/// pass while it is saturated; cancelling a running call frees its slot.
#[tokio::test]
async fn sessions_share_the_limit_and_lists_and_ping_pass() {
    let mut child = spawn_http(&["--max-concurrent", "2", "--queue-size", "0"]);
    let url = http_url(&mut child).await;
    let (first, mut starts) = connect(&url).await;
    let a = start_long(&first, &mut starts).await;
    let _b = start_long(&first, &mut starts).await;

    let (second, _) = connect(&url).await; // initialize is never limited
    let pong = second
        .send_request(ClientRequest::PingRequest(PingRequest::default()))
        .await
        .expect("ping is never limited");
    assert!(matches!(pong, ServerResult::EmptyResult(_)));
    let tools = second
        .list_all_tools()
        .await
        .expect("tools/list is never limited");
    assert_eq!(tools.len(), 3, "sleep, echo and db");

    let data = overload_of(&second).await;
    assert_eq!(data.reason, OverloadReason::ConcurrencyLimit);
    assert_eq!(
        (data.active, data.max_concurrent),
        (2, 2),
        "the first session's calls count"
    );

    a.cancel(Some("stop".into())).await.unwrap();
    eventually_admitted(&second).await;

    first.cancel().await.unwrap();
    second.cancel().await.unwrap();
    child.kill().await.unwrap();
}

/// A queued call cancelled over HTTP leaves the queue: once the running call is
/// cancelled too, a new call runs instead of the cancelled one.
#[tokio::test]
async fn cancelling_a_queued_call_over_http_frees_its_place() {
    let mut child = spawn_http(&["--max-concurrent", "1", "--queue-size", "1"]);
    let url = http_url(&mut child).await;
    let (client, mut starts) = connect(&url).await;
    let running = start_long(&client, &mut starts).await;
    let queued = client
        .send_cancellable_request(sleep_call(LONG_MS), PeerRequestOptions::no_options())
        .await
        .unwrap();
    queued.cancel(None).await.unwrap();
    running.cancel(None).await.unwrap();
    // Had the queued call stayed, it would now hold the slot for 60 s.
    eventually_admitted(&client).await;
    client.cancel().await.unwrap();
    child.kill().await.unwrap();
}

async fn connect_as(
    url: &str,
    client_id: &str,
) -> (Client, mpsc::UnboundedReceiver<ProgressToken>) {
    use std::collections::HashMap;

    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let (tx, starts) = mpsc::unbounded_channel();
    let headers = HashMap::from([(
        http::HeaderName::from_static("x-client-id"),
        http::HeaderValue::from_str(client_id).unwrap(),
    )]);
    let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = tokio::time::timeout(PATIENCE, StartWatcher(tx).serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake");
    (client, starts)
}

/// `--client-key header:x-client-id --client-limit 1`: one identity is capped
/// across its sessions (scope `client`), another identity still runs; a tool
/// limit refuses with scope `tool:sleep` while `echo` runs.
#[tokio::test]
async fn client_keys_from_a_header_and_tool_limits_through_the_wrapper() {
    let mut child = spawn_http(&[
        "--max-concurrent",
        "4",
        "--queue-size",
        "0",
        "--client-key",
        "header:x-client-id",
        "--client-limit",
        "1",
        "--tool-limit",
        "sleep=2",
    ]);
    let url = http_url(&mut child).await;
    let (alice, mut alice_starts) = connect_as(&url, "alice").await;
    let _a = start_long(&alice, &mut alice_starts).await;
    // Alice again, from a second session: her cap is per key, not per session.
    let (alice2, _) = connect_as(&url, "alice").await;
    let data = overload_of(&alice2).await;
    assert_eq!(data.scope, "client");
    let (bob, mut bob_starts) = connect_as(&url, "bob").await;
    let _b = start_long(&bob, &mut bob_starts).await;
    // Two sleeps run: the third is refused by the tool's limit.
    let (carol, _) = connect_as(&url, "carol").await;
    let data = overload_of(&carol).await;
    assert_eq!(data.scope, "tool:sleep");
    let echo = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("echo")
            .with_arguments(json!({"message": "hi"}).as_object().cloned().unwrap()),
    ));
    carol
        .send_request(echo)
        .await
        .expect("another tool still runs");
    for client in [alice, alice2, bob, carol] {
        client.cancel().await.unwrap();
    }
    child.kill().await.unwrap();
}
