//! `client_key`: what names the client of an HTTP request, for the per-client
//! limit (`client_limit`) and the round-robin turns of the queue.
//!
//! - `session`: the `Mcp-Session-Id` header;
//! - `header:NAME`: the request header NAME (case-insensitive), e.g. one an
//!   authenticating gateway in front sets;
//! - unset: no key.
//!
//! A request without the header (or with it empty) has no key: all such
//! requests share **one** client — one `client_limit`, one turn — so leaving
//! the header out never escapes the cap, it only joins everyone else who
//! left it out. Over stdio there is one client and no key. A key longer
//! than [`MAX_NAME_BYTES`] refuses the request (-32600, see the router), and
//! the limiter tracks at most `max_tracked_keys` keys at once (beyond that
//! they share one entry), so fresh keys per request cannot grow memory.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName};

#[cfg(doc)]
use super::router::MAX_NAME_BYTES;

/// What names a request's client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientKey {
    /// No key: every request is one client.
    #[default]
    None,
    /// The `Mcp-Session-Id` header.
    Session,
    /// This header.
    Header(HeaderName),
}

impl ClientKey {
    /// The header the key is read from, if any.
    pub fn header(&self) -> Option<&str> {
        match self {
            ClientKey::None => None,
            ClientKey::Session => Some(super::http::SESSION),
            ClientKey::Header(name) => Some(name.as_str()),
        }
    }

    /// The key of a request with `headers`: the header's value (bytes that
    /// are not UTF-8 replaced), `None` when it is missing or empty.
    pub fn of<'a>(&self, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
        let value = headers.get(self.header()?)?.as_bytes();
        (!value.is_empty()).then(|| String::from_utf8_lossy(value))
    }
}

impl FromStr for ClientKey {
    type Err = ();

    /// `session` or `header:NAME` (a valid header name, any case).
    fn from_str(text: &str) -> Result<Self, ()> {
        if text == "session" {
            return Ok(ClientKey::Session);
        }
        let name = text.strip_prefix("header:").ok_or(())?;
        HeaderName::from_bytes(name.as_bytes())
            .map(ClientKey::Header)
            .map_err(|_| ())
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::None => f.write_str("none"),
            ClientKey::Session => f.write_str("session"),
            ClientKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("session".parse(), Ok(ClientKey::Session));
        let key: ClientKey = "header:X-Client-Id".parse().unwrap();
        assert_eq!(key.to_string(), "header:x-client-id");
        for bad in [
            "",
            "Session",
            "header:",
            "header:a b",
            "header",
            "x-client-id",
        ] {
            assert_eq!(bad.parse::<ClientKey>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn the_key_is_the_headers_value() {
        let mut headers = HeaderMap::new();
        headers.insert("x-client-id", HeaderValue::from_static("alice"));
        headers.insert("mcp-session-id", HeaderValue::from_static("s1"));
        let by_header: ClientKey = "header:X-CLIENT-ID".parse().unwrap();
        assert_eq!(by_header.of(&headers).as_deref(), Some("alice"));
        assert_eq!(ClientKey::Session.of(&headers).as_deref(), Some("s1"));
        assert_eq!(ClientKey::None.of(&headers), None);
        headers.insert("x-client-id", HeaderValue::from_static(""));
        assert_eq!(by_header.of(&headers), None, "empty is no key");
        headers.remove("x-client-id");
        assert_eq!(by_header.of(&headers), None);
        headers.insert("x-client-id", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(by_header.of(&headers).as_deref(), Some("caf\u{fffd}"));
    }
}
