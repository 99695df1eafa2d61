//! What the proxy reads off the wire, independent of the transport: one
//! JSON-RPC message ([`message`]), stdio lines ([`mod@line`]), server-sent events
//! ([`sse`]) and a streaming scanner for messages too large to hold
//! ([`scan`]). Every parser here is bounded in memory, never panics, and is
//! property-tested (and fuzzed: `crates/mcp-backpressure-cli/fuzz/`). Beside
//! them, [`mcp_headers`] checks the MCP routing headers against the facts of
//! the one parse of the body (pure; property-tested, not fuzzed).

pub mod line;
pub mod mcp_headers;
pub mod message;
pub mod scan;
pub mod sse;

/// The fuzz entry point for message classification: parses `bytes` both as a
/// client and as an upstream message and checks the re-framing invariants.
///
/// # Panics
///
/// When an invariant breaks (that is the point of fuzzing it).
pub fn fuzz_classify(bytes: &[u8]) {
    for from in [message::From::Client, message::From::Upstream] {
        if let Ok(parsed) = message::parse(bytes, from) {
            assert!(!parsed.bytes.contains(&b'\n') && !parsed.bytes.contains(&b'\r'));
            let again = message::parse(&parsed.bytes, from).expect("re-framed bytes parse");
            assert_eq!(again, parsed);
        }
    }
}
