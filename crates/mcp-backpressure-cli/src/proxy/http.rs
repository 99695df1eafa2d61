//! `mcp-backpressure proxy [LIMITS] --listen ADDR --upstream URL`: a Streamable
//! HTTP reverse proxy, in small parts around the transport-neutral
//! [`Router`](super::router::Router):
//!
//! - this file: the server's lifecycle (listen, serve, drain on shutdown);
//! - [`exchange`]: one HTTP exchange — the body read (bounded, timed), the
//!   router's decision, the request sent upstream, the proxy's own answers;
//! - [`watch`]: the upstream's response on its way back — SSE events or a
//!   JSON body routed, slots freed when the response passes, and what
//!   happens when the client goes away first;
//! - [`target`]: which requests reach the MCP endpoint, and the exact URL
//!   and headers sent upstream.
//!
//! Every request that carries a body which is JSON-RPC goes through the
//! router, whatever its path or method: no shape of request reaches the
//! upstream without admission.

mod exchange;
mod target;
mod watch;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::Url;

use self::exchange::Proxy;
pub use self::target::SESSION;
use super::gate::Gate;
use super::stdio::shutdown_signal;

/// Checks the `--upstream` URL: `http://host:port/path`.
pub fn parse_upstream(url: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url).with_context(|| format!("invalid --upstream URL {url:?}"))?;
    if parsed.scheme() != "http" {
        bail!("invalid --upstream URL {url:?}: only http:// upstreams are supported");
    }
    if parsed.host().is_none() {
        bail!("invalid --upstream URL {url:?}: no host");
    }
    Ok(parsed)
}

/// Serves the proxy on `listen` until SIGTERM or SIGINT (then gives open
/// connections [`GRACE`] to finish).
///
/// # Cancel safety
///
/// Dropping the future closes the listener and every connection.
pub async fn run(gate: Arc<Gate>, listen: SocketAddr, upstream: Url) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "listening on a non-loopback address");
    }
    let settings = super::listener::ListenerSettings {
        max_connections: gate.settings.max_connections,
        header_read_timeout: gate.settings.header_read_timeout,
        grace: GRACE,
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // reqwest's default, relied upon: no Nagle delay on requests upstream.
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let proxy = Arc::new(Proxy::new(gate, client, upstream));
    // The task holds' timers: TTLs, and the proxy's own polls.
    let timers = tokio::spawn(proxy.router.tasks().clone().drive({
        let proxy = proxy.clone();
        move |due| proxy.own_poll(&due)
    }));
    // Always said (whatever the log level): with `--listen 0` it is the only
    // way to learn the port.
    eprintln!(
        "mcp-backpressure: listening on http://{bound}{} (upstream {})",
        proxy.upstream().path(),
        proxy.upstream()
    );
    let app = axum::Router::new()
        .fallback(exchange::handle)
        .with_state(proxy);
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    // Event streams may stay open for ever: after the signal, connections
    // get GRACE to finish.
    super::listener::serve(listener, settings, app, shutdown)
        .await
        .context("the HTTP server failed")?;
    timers.abort();
    Ok(ExitCode::SUCCESS)
}

/// How long open connections get after SIGTERM or SIGINT.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        assert!(parse_upstream("http://127.0.0.1:8000/mcp").is_ok());
        assert!(parse_upstream("https://example.invalid/mcp").is_err());
        assert!(parse_upstream("not a url").is_err());
    }
}
