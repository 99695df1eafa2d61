//! Connecting to the server under load: a stdio child process or a
//! Streamable HTTP endpoint, as one rmcp client session.

use std::collections::HashMap;
use std::process::Stdio;

use anyhow::Context;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};

use super::args::Target;

/// A connected client session, and the server's pid when it is our child.
pub struct Session {
    pub client: RunningService<RoleClient, ()>,
    pub child_pid: Option<u32>,
    pub describe: String,
}

/// Starts (stdio) or reaches (HTTP) the server and completes `initialize`:
/// one session, or one per URL of an HTTP target with several. Over HTTP,
/// `client` is a header sent on every request of the session (rmcp's
/// `custom_headers`); a stdio session has no headers to send it in.
pub async fn connect(
    target: &Target,
    client: Option<&(HeaderName, HeaderValue)>,
) -> anyhow::Result<Vec<Session>> {
    match target {
        Target::Http { urls, max_requests } => {
            let mut sessions = Vec::with_capacity(urls.len());
            for url in urls {
                sessions.push(connect_http(url, *max_requests, client).await?);
            }
            Ok(sessions)
        }
        Target::Stdio { .. } => Ok(vec![connect_one(target, client).await?]),
    }
}

async fn connect_one(
    target: &Target,
    client: Option<&(HeaderName, HeaderValue)>,
) -> anyhow::Result<Session> {
    match target {
        Target::Stdio { program, args, log } => {
            anyhow::ensure!(
                client.is_none(),
                "a client header needs a Streamable HTTP server"
            );
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            let stderr =
                match log {
                    Some(path) => Stdio::from(std::fs::File::create(path).with_context(|| {
                        format!("--server-log: cannot create {}", path.display())
                    })?),
                    None => Stdio::null(),
                };
            let (child, _) = TokioChildProcess::builder(command)
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("cannot start the server command {program:?}"))?;
            let child_pid = child.id();
            let client = ().serve(child).await.with_context(|| {
                format!("the server {program:?} did not complete the MCP handshake")
            })?;
            Ok(Session {
                client,
                child_pid,
                describe: format!(
                    "stdio: {}",
                    std::iter::once(program)
                        .chain(args)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            })
        }
        Target::Http { urls, max_requests } => connect_http(&urls[0], *max_requests, client).await,
    }
}

async fn connect_http(
    url: &str,
    max_requests: usize,
    client: Option<&(HeaderName, HeaderValue)>,
) -> anyhow::Result<Session> {
    let headers: HashMap<HeaderName, HeaderValue> = client.cloned().into_iter().collect();
    let config = StreamableHttpClientTransportConfig::with_uri(url)
        .max_concurrent_requests(max_requests)
        .custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ()
        .serve(transport)
        .await
        .with_context(|| format!("cannot open an MCP session at {url}"))?;
    Ok(Session {
        client,
        child_pid: None,
        describe: format!("Streamable HTTP: {url}"),
    })
}

/// Fails with the list of the server's tools when `tool` is not among them;
/// `flag` names where the tool was given (`--tool`, `--stream NAME (tool)`).
pub async fn check_tool(session: &Session, tool: &str, flag: &str) -> anyhow::Result<()> {
    let tools = session
        .client
        .peer()
        .list_all_tools()
        .await
        .context("tools/list failed")?;
    if tools.iter().any(|t| t.name == tool) {
        return Ok(());
    }
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    anyhow::bail!(
        "invalid {flag}: the server has no tool {tool:?} (it has: {})",
        names.join(", ")
    )
}
