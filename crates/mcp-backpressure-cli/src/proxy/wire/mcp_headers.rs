//! The MCP 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`; SEP-2243,
//! extended to tasks by SEP-2663) checked against the body, as the SDKs'
//! own server-side validators check them.
//!
//! Sources: rmcp 3.11.0 `src/transport/common/mcp_headers.rs`
//! (`validate_request_headers`, `extract_name`, `decode_header_value`,
//! `header_str`) and `streamable_http_server/tower.rs`
//! (`validate_standard_headers`); the Python SDK (`mcp` 2.3.0)
//! `mcp/shared/inbound.py` (`classify_inbound_request`,
//! `decode_header_value`, `NAME_BEARING_METHODS`,
//! `find_duplicated_routing_header`) and FastMCP 4.1.8's
//! `fastmcp_tasks/extension.py` (`_require_matching_task_route`).
//!
//! The rules:
//!
//! - **Header names** are case-insensitive: [`HeaderMap`] folds them, as
//!   rmcp's `http::HeaderMap` and Starlette's lowercase keys do.
//! - **Repeated** `Mcp-Method` or `Mcp-Name` never matches (rmcp
//!   `header_str`: "duplicate … header"; Python
//!   `find_duplicated_routing_header`). The exchange refuses them before;
//!   this module refuses them again rather than pick one copy.
//! - **`Mcp-Method`** is compared with the body's `method` verbatim: exact,
//!   case-sensitive, not trimmed, not base64-decoded (rmcp `value != method`
//!   on the `to_str` value; Python `headers.get("mcp-method") != method`). A
//!   value that is not visible ASCII never matches (rmcp `header_str`).
//! - **Which field `Mcp-Name` stands for** ([`name_field`]): `params.name`
//!   for `tools/call` and `prompts/get`; `params.uri` for `resources/read`,
//!   `resources/subscribe` and `resources/unsubscribe`; `params.taskId` for
//!   `tasks/get`, `tasks/update` and `tasks/cancel`. That is rmcp's table
//!   (`NAME_FROM_NAME`, `NAME_FROM_URI`, `NAME_FROM_TASK_ID`); Python's
//!   `NAME_BEARING_METHODS` is its subset `tools/call`, `prompts/get`,
//!   `resources/read`, and FastMCP's tasks extension adds the three `tasks/*`
//!   (`name_param = "taskId"`). For any other method `Mcp-Name` is not
//!   checked, as in both SDKs: an extension may declare its own name-bearing
//!   method (Python's `Request.name_param`) and the proxy must not refuse
//!   what it does not know, which is how `tasks/get` used to be refused.
//! - **Decoding an `Mcp-Name` value** ([`decode_value`]): a value that is
//!   exactly `=?base64?<payload>?=` (prefix and suffix case-sensitive; rmcp
//!   `strip_prefix`/`strip_suffix`, Python `^=\?base64\?(.*)\?=$`) is the
//!   payload decoded as standard-alphabet base64 with canonical padding and
//!   no stray trailing bits (rmcp `BASE64_STANDARD`; Python
//!   `b64decode(validate=True)` plus the re-encode check), then as strict
//!   UTF-8 (rmcp `String::from_utf8`; Python `.decode("utf-8")`); if any
//!   step fails the value never matches. The empty payload `=?base64??=`
//!   decodes, in both SDKs, to the empty string (which no real name equals).
//!   Any other value stands for itself, but only if it is printable ASCII
//!   (`0x20..=0x7E`): both encoders (rmcp `requires_base64`, Python
//!   `_HEADER_SAFE`) wrap everything else, rmcp's decoder refuses bytes
//!   outside visible ASCII, and Python would read them as Latin-1 — a value
//!   the two could read differently never matches. (Tab, which both
//!   decoders would pass through, is refused here for the same reason: no
//!   encoder sends it bare.) A value that merely starts like the sentinel
//!   (`=?base64?abc`, no `?=`) is not one and stands for itself.
//! - **Whitespace**: nothing is trimmed. The HTTP parser already stripped
//!   the optional whitespace around a field value (hyper here, h11 or hyper
//!   upstream); edge spaces in a name travel inside the sentinel (both
//!   encoders wrap them).
//! - **`Mcp-Name` present, body field absent** (or not a string): refused.
//!   Both SDKs skip the `Mcp-Name` check then (rmcp `extract_name` is
//!   `None`; Python `body_value is not None`) and refuse the body later as
//!   invalid params; the proxy refuses it at once, for the reason both SDKs
//!   give for `Mcp-Param-*` headers in the same case (Python
//!   `validate_mcp_param_headers`: "the spec's purpose clause is exactly an
//!   intermediary routing on a value the body never carried"; rmcp
//!   "unexpected … header for absent or null"). No valid request is refused:
//!   every method above requires its field.
//! - **Absent headers are not checked**; each present header is checked on
//!   its own. Both SDKs require the headers only on the 2026-07-28 wire
//!   (rmcp: `MCP-Protocol-Version >= 2026-07-28`, `initialize` exempt;
//!   Python: the modern request path), and they disagree on `tasks/*`: rmcp
//!   requires `Mcp-Name`, FastMCP's extension accepts its absence. Where both
//!   require a header, the upstream refuses its absence itself, before any
//!   handler runs; an absent header gives no intermediary a value to route
//!   on, so nothing runs other than what the proxy admitted.
//!
//! Pure functions, no I/O.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;

/// The `Mcp-Method` header (lowercase: header names are case-insensitive).
pub const MCP_METHOD: &str = "mcp-method";

/// The `Mcp-Name` header (lowercase: header names are case-insensitive).
pub const MCP_NAME: &str = "mcp-name";

/// What opens a base64-wrapped header value (rmcp `BASE64_HEADER_PREFIX`).
pub const SENTINEL_PREFIX: &str = "=?base64?";

/// What closes a base64-wrapped header value (rmcp `BASE64_HEADER_SUFFIX`).
pub const SENTINEL_SUFFIX: &str = "?=";

/// The routing facts of the one parse of a JSON-RPC request (or
/// notification) body: its method and the name-shaped params, each `None`
/// when the body has no such field or it is not a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routing<'a> {
    /// The body's `method`.
    pub method: &'a str,
    /// `params.name`.
    pub name: Option<&'a str>,
    /// `params.uri`.
    pub uri: Option<&'a str>,
    /// `params.taskId`.
    pub task_id: Option<&'a str>,
}

impl<'a> Routing<'a> {
    /// The body's value of `field`.
    #[must_use]
    pub fn get(&self, field: NameField) -> Option<&'a str> {
        match field {
            NameField::Name => self.name,
            NameField::Uri => self.uri,
            NameField::TaskId => self.task_id,
        }
    }
}

/// The params field that `Mcp-Name` stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameField {
    /// `params.name`: a tool or prompt name.
    Name,
    /// `params.uri`: a resource.
    Uri,
    /// `params.taskId`: a task (SEP-2663).
    TaskId,
}

impl NameField {
    /// The field's key in `params`.
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Uri => "uri",
            Self::TaskId => "taskId",
        }
    }
}

/// The params field `Mcp-Name` stands for in a `method` request, or `None`
/// when the method carries no name (then `Mcp-Name` is not checked).
#[must_use]
pub fn name_field(method: &str) -> Option<NameField> {
    match method {
        "tools/call" | "prompts/get" => Some(NameField::Name),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some(NameField::Uri),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some(NameField::TaskId),
        _ => None,
    }
}

/// The string a header value stands for: printable ASCII stands for itself,
/// a `=?base64?…?=` sentinel for its payload decoded as UTF-8. `None` — the
/// value never matches — for a malformed sentinel (bad alphabet, padding
/// missing or not canonical, stray trailing bits, not UTF-8) or any byte
/// outside `0x20..=0x7E` outside a sentinel.
#[must_use]
pub fn decode_value(value: &HeaderValue) -> Option<Cow<'_, str>> {
    let bytes = value.as_bytes();
    if !bytes.iter().all(|b| (0x20..=0x7E).contains(b)) {
        return None;
    }
    // Printable ASCII is UTF-8.
    let text = std::str::from_utf8(bytes).ok()?;
    let Some(payload) = text
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(SENTINEL_SUFFIX))
    else {
        return Some(Cow::Borrowed(text));
    };
    let decoded = BASE64_STANDARD.decode(payload).ok()?;
    // The engine already requires canonical padding and zero trailing bits;
    // the re-encode is Python's own canonicity check, kept to the letter.
    if BASE64_STANDARD.encode(&decoded) != payload {
        return None;
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// Why the `Mcp-Method` / `Mcp-Name` headers disagree with the body whose
/// routing facts are `routing`, or `None` when every header present agrees
/// (an absent header is not checked: see the module documentation).
#[must_use]
pub fn mismatch(headers: &HeaderMap, routing: &Routing<'_>) -> Option<String> {
    let method = match single(headers, MCP_METHOD, "Mcp-Method") {
        Ok(method) => method,
        Err(repeated) => return Some(repeated),
    };
    if let Some(method) = method
        && method.to_str().ok() != Some(routing.method)
    {
        return Some("the Mcp-Method header does not match the body's method".into());
    }
    let name = match single(headers, MCP_NAME, "Mcp-Name") {
        Ok(name) => name?,
        Err(repeated) => return Some(repeated),
    };
    let field = name_field(routing.method)?;
    let key = field.key();
    let Some(expected) = routing.get(field) else {
        return Some(format!(
            "the Mcp-Name header is set but the body has no params.{key}"
        ));
    };
    match decode_value(name) {
        None => Some(
            "the Mcp-Name header is neither printable ASCII nor a well-formed =?base64?…?= value"
                .into(),
        ),
        Some(decoded) if decoded != expected => Some(format!(
            "the Mcp-Name header does not match the body's params.{key}"
        )),
        Some(_) => None,
    }
}

/// The one value of the header `name` (`None` if absent), or the reason
/// to refuse a repeated one.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &str,
    display: &str,
) -> Result<Option<&'h HeaderValue>, String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(format!("the {display} header is given more than once"));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use base64::Engine as _;
    use base64::prelude::BASE64_STANDARD;
    use proptest::prelude::*;

    use super::{MCP_NAME, NameField, Routing, decode_value, mismatch, name_field};

    /// Headers from raw `(name, value)` pairs, appended (so repeats stay).
    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        map
    }

    /// The SDKs' encoders (rmcp `encode_header_value`, Python
    /// `encode_header_value`): wrap anything that is not printable ASCII
    /// without edge whitespace, or that looks like the sentinel.
    fn encode(value: &str) -> String {
        let plain = value.bytes().all(|b| (0x20..=0x7E).contains(&b))
            && value.trim_matches([' ', '\t']) == value
            && !(value.starts_with("=?base64?") && value.ends_with("?="));
        if plain {
            value.to_owned()
        } else {
            format!("=?base64?{}?=", BASE64_STANDARD.encode(value))
        }
    }

    fn decode(raw: &[u8]) -> Option<String> {
        decode_value(&HeaderValue::from_bytes(raw).expect("a header value")).map(Cow::into_owned)
    }

    #[test]
    fn header_values_decode_as_the_sdks_decode_them() {
        // (raw header value, what it stands for; None: never matches)
        let table: &[(&[u8], Option<&str>)] = &[
            // Printable ASCII stands for itself, spaces inside included.
            (b"search", Some("search")),
            (b"a b c", Some("a b c")),
            (b"file:///tmp/x.txt", Some("file:///tmp/x.txt")),
            (b"", Some("")),
            // Non-ASCII names travel base64-wrapped (both encoders).
            (b"=?base64?aMOpbGxv?=", Some("h\u{e9}llo")),
            (b"=?base64?8J+agA==?=", Some("\u{1f680}")),
            (b"=?base64?Y2Fmw6kv4piV?=", Some("caf\u{e9}/\u{2615}")),
            // Edge whitespace and control characters travel wrapped.
            (b"=?base64?IHBhZGRlZA==?=", Some(" padded")),
            (b"=?base64?YQli?=", Some("a\tb")),
            // A value that looks like the sentinel travels wrapped too.
            (b"=?base64?PT9iYXNlNjQ/ZUE9PT89?=", Some("=?base64?eA==?=")),
            // The empty payload is the empty string in both SDKs.
            (b"=?base64??=", Some("")),
            // Not a sentinel (no `?=`, wrong case, too short): itself.
            (b"=?base64?aGk=", Some("=?base64?aGk=")),
            (b"=?BASE64?aGk=?=", Some("=?BASE64?aGk=?=")),
            (b"=?base64?=", Some("=?base64?=")),
            (b"aGk=?=", Some("aGk=?=")),
            // Malformed sentinels never match.
            (b"=?base64?!!!not-base64!!!?=", None), // rmcp's own test row
            (b"=?base64?8J-agA==?=", None),         // URL-safe alphabet
            (b"=?base64?8J+agA?=", None),           // padding missing
            (b"=?base64?aGk==?=", None),            // padding too long
            (b"=?base64?aGl=?=", None),             // stray trailing bits
            (b"=?base64?aG k=?=", None),            // whitespace in payload
            (b"=?base64?=aGk?=", None),             // padding first
            (b"=?base64?/w==?=", None),             // 0xFF: not UTF-8
            (b"=?base64?7aCA?=", None),             // a UTF-16 surrogate
            (b"=?base64?aGk=?=?=", None),           // `?=` inside the payload
            // Bytes outside printable ASCII, outside a sentinel.
            (b"h\xc3\xa9llo", None), // raw UTF-8 (Python would read Latin-1)
            (b"h\xe9llo", None),     // Latin-1
            (b"a\tb", None),         // tab: no encoder sends it bare
            (b"=?base64?aGk=?=\t", None),
        ];
        for (raw, expected) in table {
            assert_eq!(
                decode(raw).as_deref(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn name_fields_are_the_union_of_both_sdks_tables() {
        let table = [
            ("tools/call", Some(NameField::Name)),
            ("prompts/get", Some(NameField::Name)),
            ("resources/read", Some(NameField::Uri)),
            ("resources/subscribe", Some(NameField::Uri)),
            ("resources/unsubscribe", Some(NameField::Uri)),
            ("tasks/get", Some(NameField::TaskId)),
            ("tasks/update", Some(NameField::TaskId)),
            ("tasks/cancel", Some(NameField::TaskId)),
            ("tools/list", None),
            ("prompts/list", None),
            ("resources/list", None),
            ("resources/templates/list", None),
            ("tasks/list", None),
            ("initialize", None),
            ("ping", None),
            ("notifications/cancelled", None),
            ("Tools/Call", None),
            ("", None),
        ];
        for (method, field) in table {
            assert_eq!(name_field(method), field, "{method}");
        }
        assert_eq!(NameField::Name.key(), "name");
        assert_eq!(NameField::Uri.key(), "uri");
        assert_eq!(NameField::TaskId.key(), "taskId");
    }

    /// How a check comes out: passes, or refused with a reason containing
    /// the text.
    #[derive(Debug)]
    enum Expect {
        Pass,
        Refuse(&'static str),
    }

    /// A row: label, raw `(name, value)` headers, the body's facts, outcome.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], Routing<'a>, Expect);

    const CALL: Routing<'static> = Routing {
        method: "tools/call",
        name: Some("search"),
        uri: None,
        task_id: None,
    };

    const HELLO: Routing<'static> = Routing {
        method: "tools/call",
        name: Some("h\u{e9}llo"),
        uri: None,
        task_id: None,
    };

    const ROCKET: Routing<'static> = Routing {
        method: "prompts/get",
        name: Some("\u{1f680}"),
        uri: None,
        task_id: None,
    };

    const READ: Routing<'static> = Routing {
        method: "resources/read",
        name: None,
        uri: Some("file:///tmp/\u{e9}t\u{e9}.txt"),
        task_id: None,
    };

    const SUBSCRIBE: Routing<'static> = Routing {
        method: "resources/subscribe",
        name: None,
        uri: Some("file:///logs"),
        task_id: None,
    };

    const TASK: Routing<'static> = Routing {
        method: "tasks/get",
        name: None,
        uri: None,
        task_id: Some("7f3c9e2a-task"),
    };

    const CANCEL: Routing<'static> = Routing {
        method: "tasks/cancel",
        name: None,
        uri: None,
        task_id: Some("t\u{e2}che-42"),
    };

    const LIST: Routing<'static> = Routing {
        method: "tools/list",
        name: None,
        uri: None,
        task_id: None,
    };

    #[test]
    fn routing_headers_are_checked_by_the_rules_of_both_validators() {
        use Expect::{Pass, Refuse};
        let m = "mcp-method";
        let n = "mcp-name";
        #[rustfmt::skip]
        let table: &[Case<'_>] = &[
            // Matching headers pass (rmcp accepts_matching_method_and_name).
            ("both match", &[(m, b"tools/call"), (n, b"search")], CALL, Pass),
            // Absent headers are not checked; each present one on its own.
            ("none", &[], CALL, Pass),
            ("method only", &[(m, b"tools/call")], CALL, Pass),
            ("name only", &[(n, b"search")], CALL, Pass),
            ("task poll, no Mcp-Name", &[(m, b"tasks/get")], TASK, Pass),
            ("name only, other tool", &[(n, b"report")], CALL, Refuse("params.name")),
            ("method only, other method", &[(m, b"tools/list")], CALL, Refuse("method")),
            // Mcp-Method: exact, case-sensitive, not decoded, not trimmed.
            ("method mismatch", &[(m, b"tools/list"), (n, b"search")], CALL, Refuse("Mcp-Method")),
            ("method case", &[(m, b"Tools/Call")], CALL, Refuse("Mcp-Method")),
            ("method trailing space", &[(m, b"tools/call ")], CALL, Refuse("Mcp-Method")),
            ("method base64", &[(m, b"=?base64?dG9vbHMvY2FsbA==?=")], CALL, Refuse("Mcp-Method")),
            ("method not ASCII", &[(m, b"tools/call\xc3\xa9")], CALL, Refuse("Mcp-Method")),
            ("method empty", &[(m, b"")], CALL, Refuse("Mcp-Method")),
            ("method, no name", &[(m, b"tools/list")], LIST, Pass),
            ("ping", &[(m, b"ping")], Routing { method: "ping", ..LIST }, Pass),
            // Header names are case-insensitive.
            ("names in capitals", &[("MCP-METHOD", b"tools/call"), ("MCP-NAME", b"search")], CALL, Pass),
            ("names mixed", &[("Mcp-Method", b"tools/call"), ("Mcp-Name", b"report")], CALL, Refuse("Mcp-Name")),
            // Repeated headers never match, even with equal values.
            ("method twice", &[(m, b"tools/call"), (m, b"tools/list")], CALL, Refuse("more than once")),
            ("method twice, equal", &[(m, b"tools/call"), (m, b"tools/call")], CALL, Refuse("more than once")),
            ("name twice", &[(n, b"search"), (n, b"report")], CALL, Refuse("more than once")),
            ("name twice, equal", &[(n, b"search"), ("Mcp-Name", b"search")], CALL, Refuse("more than once")),
            // Mcp-Name: exact and case-sensitive.
            ("name mismatch", &[(m, b"tools/call"), (n, b"other")], CALL, Refuse("params.name")),
            ("name case", &[(n, b"Search")], CALL, Refuse("params.name")),
            ("name prefix", &[(n, b"sear")], CALL, Refuse("params.name")),
            ("name empty", &[(n, b"")], CALL, Refuse("params.name")),
            // Non-ASCII names, base64-wrapped.
            ("h\u{e9}llo wrapped", &[(m, b"tools/call"), (n, b"=?base64?aMOpbGxv?=")], HELLO, Pass),
            ("emoji wrapped", &[(m, b"prompts/get"), (n, b"=?base64?8J+agA==?=")], ROCKET, Pass),
            ("wrapped, other name", &[(n, b"=?base64?aGk=?=")], HELLO, Refuse("params.name")),
            ("plain name wrapped", &[(n, b"=?base64?c2VhcmNo?=")], CALL, Pass),
            ("h\u{e9}llo raw UTF-8", &[(n, b"h\xc3\xa9llo")], HELLO, Refuse("well-formed")),
            ("h\u{e9}llo Latin-1", &[(n, b"h\xe9llo")], HELLO, Refuse("well-formed")),
            // Malformed sentinels never match.
            ("bad alphabet", &[(n, b"=?base64?!!!not-base64!!!?=")], CALL, Refuse("well-formed")),
            ("URL-safe alphabet", &[(n, b"=?base64?8J-agA==?=")], ROCKET, Refuse("well-formed")),
            ("no padding", &[(n, b"=?base64?8J+agA?=")], ROCKET, Refuse("well-formed")),
            ("trailing bits", &[(n, b"=?base64?aGl=?=")], Routing { name: Some("hi"), ..CALL }, Refuse("well-formed")),
            ("canonical bits", &[(n, b"=?base64?aGk=?=")], Routing { name: Some("hi"), ..CALL }, Pass),
            ("not UTF-8", &[(n, b"=?base64?/w==?=")], CALL, Refuse("well-formed")),
            ("missing ?=", &[(n, b"=?base64?aMOpbGxv")], HELLO, Refuse("params.name")),
            ("empty payload", &[(n, b"=?base64??=")], CALL, Refuse("params.name")),
            ("empty payload, empty name", &[(n, b"=?base64??=")], Routing { name: Some(""), ..CALL }, Pass),
            ("tab", &[(n, b"a\tb")], Routing { name: Some("a\tb"), ..CALL }, Refuse("well-formed")),
            ("tab wrapped", &[(n, b"=?base64?YQli?=")], Routing { name: Some("a\tb"), ..CALL }, Pass),
            // URIs.
            ("uri wrapped", &[(m, b"resources/read"), (n, b"=?base64?ZmlsZTovLy90bXAvw6l0w6kudHh0?=")], READ, Pass),
            ("uri other", &[(n, b"file:///tmp/x.txt")], READ, Refuse("params.uri")),
            ("subscribe uri", &[(m, b"resources/subscribe"), (n, b"file:///logs")], SUBSCRIBE, Pass),
            ("unsubscribe other", &[(n, b"file:///etc")], Routing { method: "resources/unsubscribe", ..SUBSCRIBE }, Refuse("params.uri")),
            ("read checks uri, not name", &[(n, b"x")], Routing { name: Some("x"), ..READ }, Refuse("params.uri")),
            // Task ids (SEP-2663; FastMCP's tasks/get polls).
            ("task poll", &[(m, b"tasks/get"), (n, b"7f3c9e2a-task")], TASK, Pass),
            ("task other", &[(m, b"tasks/get"), (n, b"another-task")], TASK, Refuse("params.taskId")),
            ("task update", &[(n, b"7f3c9e2a-task")], Routing { method: "tasks/update", ..TASK }, Pass),
            ("task cancel wrapped", &[(m, b"tasks/cancel"), (n, b"=?base64?dMOiY2hlLTQy?=")], CANCEL, Pass),
            ("task checks taskId, not name", &[(n, b"x")], Routing { name: Some("x"), ..TASK }, Refuse("params.taskId")),
            // Header present, body field absent (or not a string): refused.
            ("call without name", &[(n, b"search")], Routing { name: None, ..CALL }, Refuse("no params.name")),
            ("read without uri", &[(n, b"file:///x")], Routing { uri: None, ..READ }, Refuse("no params.uri")),
            ("task without id", &[(n, b"t")], Routing { task_id: None, ..TASK }, Refuse("no params.taskId")),
            ("absent field, absent header", &[(m, b"tools/call")], Routing { name: None, ..CALL }, Pass),
            // Methods without a name: Mcp-Name is not checked (both SDKs).
            ("list with Mcp-Name", &[(m, b"tools/list"), (n, b"anything")], LIST, Pass),
            ("custom method", &[(n, b"x")], Routing { method: "example/get", name: Some("y"), ..LIST }, Pass),
            ("method refused first", &[(m, b"tools/call"), (n, b"x")], LIST, Refuse("Mcp-Method")),
        ];
        for (label, pairs, routing, expect) in table {
            let got = mismatch(&headers(pairs), routing);
            match (expect, &got) {
                (Pass, None) => {}
                (Refuse(text), Some(reason)) if reason.contains(text) => {}
                _ => panic!("{label}: expected {expect:?}, got {got:?}"),
            }
        }
    }

    proptest! {
        /// What either SDK's encoder sends decodes back to the name, and
        /// matches the body it came from.
        #[test]
        fn encoded_names_match(name in any::<String>()) {
            let wire = encode(&name);
            let value = HeaderValue::from_str(&wire).expect("encoded values are header values");
            let decoded = decode_value(&value);
            prop_assert_eq!(decoded.as_deref(), Some(name.as_str()));
            let mut map = HeaderMap::new();
            map.insert(MCP_NAME, value);
            let routing = Routing { name: Some(&name), ..CALL };
            prop_assert_eq!(mismatch(&map, &routing), None);
        }

        /// Any value decodes without panicking; a plain one to itself, a
        /// sentinel only from the canonical base64 of what it decodes to.
        #[test]
        fn only_canonical_values_decode(
            raw in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..48),
                "(=\\?base64\\?)?[A-Za-z0-9+/=_ -]{0,16}(\\?=)?".prop_map(String::into_bytes),
            ]
        ) {
            let Ok(value) = HeaderValue::from_bytes(&raw) else {
                return Ok(());
            };
            let Some(decoded) = decode_value(&value) else {
                return Ok(());
            };
            let payload = raw
                .strip_prefix(b"=?base64?")
                .and_then(|rest| rest.strip_suffix(b"?="));
            match payload {
                Some(payload) => {
                    let canonical = BASE64_STANDARD.encode(decoded.as_bytes());
                    prop_assert_eq!(canonical.as_bytes(), payload);
                }
                None => prop_assert_eq!(decoded.as_bytes(), raw.as_slice()),
            }
        }
    }
}
