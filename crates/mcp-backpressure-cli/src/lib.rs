//! The transport-neutral parsers of the `mcp-backpressure` proxy, as a
//! library so that the fuzz targets (`fuzz/`) and property tests reach them:
//! one JSON-RPC message, stdio lines, server-sent events, and a streaming
//! scanner for messages too large to hold. The command itself is
//! `src/main.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[path = "proxy/wire/mod.rs"]
pub mod wire;
