//! `mcp-backpressure proxy`: the library's admission control in front of any
//! MCP server, over stdio or Streamable HTTP.
//!
//! The proxy works on JSON-RPC messages and never re-terminates MCP: any
//! protocol version and any extension passes through. Only requests of the
//! guarded methods (`tools/call` by default) go through the limiter.
//!
//! The shape: [`wire`] reads messages (transport-neutral, bounded, fuzzed);
//! `router` decides what happens to each (admit, track, swallow, answer,
//! forward) over the `inflight` table; `stdio` and `http` only move bytes
//! and act on the decision; `error` turns the proxy's typed errors into
//! JSON-RPC and HTTP at the edge, and `refusal` renders a refused guarded
//! request in the configured dialect (an error or a tool result, an HTTP
//! status). Around them: `limits` (the settings),
//! `client_key` (who a request's client is), `outcome` (what an answer says
//! about load), `metrics` and `reload` (SIGHUP).

mod body;
mod budget;
mod client_key;
mod error;
mod gate;
mod http;
mod inflight;
mod limits;
mod listener;

mod metrics;
mod outcome;
mod refusal;
mod reload;
mod router;
mod stdio;
mod tasks;
pub use mcp_backpressure_cli::wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use self::client_key::ClientKey;
use self::gate::Gate;
use self::limits::{LimitArgs, Settings};

/// Arguments of `mcp-backpressure proxy`.
#[derive(Debug, clap::Args)]
#[command(after_help = "EXAMPLES:
  mcp-backpressure proxy --max-concurrent 5 --queue-size 10 -- python server.py
  mcp-backpressure proxy --config limits.toml --listen 9000 --upstream http://127.0.0.1:8000/mcp")]
pub struct ProxyArgs {
    #[command(flatten)]
    limits: Box<LimitArgs>,
    /// Serve Streamable HTTP on this address, or on this port of 127.0.0.1; needs --upstream.
    #[arg(long, value_name = "ADDR|PORT", requires = "upstream", value_parser = address, allow_negative_numbers = true)]
    listen: Option<SocketAddr>,
    /// The upstream Streamable HTTP endpoint, e.g. http://127.0.0.1:8000/mcp.
    #[arg(long, value_name = "URL", requires = "listen")]
    upstream: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a bare PORT means 127.0.0.1:PORT).
    #[arg(long, value_name = "ADDR|PORT", value_parser = address, allow_negative_numbers = true)]
    metrics: Option<SocketAddr>,
    /// The upstream server to run over stdio: COMMAND [ARGS...], after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `127.0.0.1:9000`, `[::1]:9000`, or `9000` for loopback.
fn address(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value
        .parse()
        .map_err(|_| format!("expected ADDRESS:PORT (e.g. 127.0.0.1:9000) or PORT, got {value:?}"))
}

/// Runs the proxy.
pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.limits)?;
    let transport = match (&args.command[..], &args.upstream) {
        ([], None) => bail!(
            "nothing to proxy: give an upstream command after `--` (stdio) \
             or --listen ADDR --upstream URL (Streamable HTTP)"
        ),
        ([_, ..], Some(_)) => {
            bail!("give either an upstream command after `--` or --upstream URL, not both")
        }
        ([], Some(url)) => Transport::Http {
            listen: args.listen.context("--upstream needs --listen ADDR")?,
            upstream: http::parse_upstream(url)?,
        },
        (command, None) => Transport::Stdio(command.to_vec()),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    // A shared limit starts its background tasks on the runtime.
    let limiter = {
        let _runtime = runtime.enter();
        settings.limiter()?
    };
    let gate = Arc::new(Gate::new(limiter, settings));
    let result = runtime.block_on(serve(gate, transport, args.metrics, *args.limits));
    // A read of the client's stdin may still block a runtime thread: don't wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

enum Transport {
    Stdio(Vec<String>),
    Http {
        listen: SocketAddr,
        upstream: reqwest::Url,
    },
}

/// Starts the metrics endpoint and the reload on SIGHUP, then the transport.
///
/// # Cancel safety
///
/// As the transport's `run`.
async fn serve(
    gate: Arc<Gate>,
    transport: Transport,
    metrics_addr: Option<SocketAddr>,
    limits: LimitArgs,
) -> anyhow::Result<ExitCode> {
    reload::listen(gate.clone(), limits);
    if let Some(addr) = metrics_addr {
        let (bound, server) =
            metrics::bind(addr, &gate.limiter, &gate.metrics, &gate.tasks).await?;
        tracing::info!("metrics on http://{bound}/metrics");
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        });
    }
    let settings = &gate.settings;
    let config = &settings.config;
    tracing::info!(
        max_concurrent = config.max_concurrent,
        queue_size = config.queue_size,
        queue_timeout = ?config.queue_timeout,
        limit = %config.limit,
        tools = config.tools.len(),
        client_key = %settings.client_key,
        guarded = ?settings.guarded,
        overload_response = settings.overload_response.as_str(),
        http_overload_status = settings.http_overload_status.code(),
        "admission control"
    );
    if let Some(shared) = &settings.shared {
        tracing::info!(
            url = %limits::shared::redacted(&shared.url),
            key = %shared.key,
            lease = ?shared.lease,
            fail = shared.fail.as_str(),
            replicas = ?shared.replicas,
            timeout = ?shared.timeout,
            "the limit is shared through Redis: max_concurrent, the tool and client limits \
             and the queue count every replica naming this key"
        );
    }
    let http = matches!(transport, Transport::Http { .. });
    if !http && settings.client_key != ClientKey::None {
        tracing::warn!(
            "--client-key (client_key) has no effect over stdio: its one client has no key"
        );
    }
    if !http && settings.http_overload_status != refusal::OverloadStatus::Ok {
        tracing::warn!(
            "--http-overload-status (http_overload_status) has no effect over stdio: there is no HTTP status"
        );
    }
    if http && settings.client_key == ClientKey::None && config.client_limit.is_some() {
        tracing::warn!(
            "client_limit without client_key: every request is the same client, so \
             client_limit caps them all together"
        );
    }
    match transport {
        Transport::Stdio(command) => stdio::run(gate, &command).await,
        Transport::Http { listen, upstream } => http::run(gate, listen, upstream).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback() {
        assert_eq!(address("9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            address("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(address("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(address("localhost").unwrap_err().contains("localhost"));
    }
}
