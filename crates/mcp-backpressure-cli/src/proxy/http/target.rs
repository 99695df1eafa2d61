//! Where a request goes upstream, and with which headers.
//!
//! The proxy decides on exactly what it forwards: a request whose path
//! *normalises* to the upstream's MCP path (percent-decoding, `.` and `..`
//! segments, repeated and trailing slashes) is sent to the upstream's MCP
//! path itself, never to the client's spelling of it — so `/mcp/`,
//! `//mcp`, `/./mcp` or `/%6Dcp` reach the endpoint the proxy checked, or
//! nothing. Paths below the MCP path (`/mcp/x`) count as MCP paths too (a
//! mounted app may serve them). Other paths (OAuth metadata, health checks)
//! pass as they are.

use axum::http::{HeaderMap, HeaderName, Uri, header};
use reqwest::Url;

/// What the proxy makes of a request's path.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL the request is sent to.
    pub url: Url,
    /// Whether the path is (or is below) the MCP endpoint.
    pub mcp: bool,
}

/// Resolves `uri` against the upstream URL.
pub fn resolve(upstream: &Url, uri: &Uri) -> Target {
    let endpoint = normalise(upstream.path());
    let path = normalise(uri.path());
    let mut url = upstream.clone();
    url.set_query(uri.query());
    if path == endpoint {
        return Target { url, mcp: true };
    }
    let below = endpoint == "/" || path.starts_with(&format!("{endpoint}/"));
    url.set_path(uri.path());
    Target { url, mcp: below }
}

/// A path with percent-escapes decoded, `.`/`..` resolved, empty segments
/// and a trailing slash dropped: `/a/./b//c/../` → `/a/b`.
fn normalise(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Decodes `%XX` escapes (repeatedly, so `%252F` cannot hide a `/` from one
/// decoder and show it to another); invalid escapes stay as they are.
fn percent_decode(path: &str) -> String {
    let mut current = path.to_owned();
    for _ in 0..4 {
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(hex) = bytes.get(i + 1..i + 3)
                && let Ok(text) = std::str::from_utf8(hex)
                && let Ok(byte) = u8::from_str_radix(text, 16)
            {
                out.push(byte);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        let next = String::from_utf8_lossy(&out).into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// The session header of Streamable HTTP.
pub const SESSION: &str = "mcp-session-id";

/// Headers minus the hop-by-hop ones and the framing ones (the proxy sends
/// the body it checked, with its own length). `Host` passes: an upstream's
/// DNS-rebinding protection judges the host its client asked for.
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed {
        out.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::EXPECT,
    ] {
        out.remove(name);
    }
    out
}

/// The request's session id, if it has a usable one.
pub fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(SESSION)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn target(path: &str) -> Target {
        let upstream = Url::parse("http://127.0.0.1:9/mcp").unwrap();
        resolve(&upstream, &path.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_the_mcp_path_goes_to_the_mcp_path() {
        for path in [
            "/mcp",
            "/mcp/",
            "//mcp",
            "/./mcp",
            "/x/../mcp",
            "/%6Dcp",
            "/%6dcp/",
            "/mcp%2F",
            "/%252Fmcp",
            "/mcp/.",
            "/mcp//",
        ] {
            let t = target(path);
            assert!(t.mcp, "{path}");
            assert_eq!(t.url.as_str(), "http://127.0.0.1:9/mcp", "{path}");
        }
        let t = target("/mcp?x=1");
        assert_eq!(t.url.as_str(), "http://127.0.0.1:9/mcp?x=1");
    }

    #[test]
    fn other_paths_pass_as_they_are() {
        let t = target("/.well-known/oauth-protected-resource");
        assert!(!t.mcp);
        assert_eq!(
            t.url.as_str(),
            "http://127.0.0.1:9/.well-known/oauth-protected-resource"
        );
        assert!(target("/mcp/messages").mcp);
        assert!(!target("/MCP").mcp);
        assert!(!target("/mcpx").mcp);
    }

    #[test]
    fn hop_by_hop_and_framing_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::HOST, HeaderValue::from_static("proxy"));
        headers.insert(SESSION, HeaderValue::from_static("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let out = end_to_end(&headers);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "host", "last-event-id", SESSION]);
    }
}
