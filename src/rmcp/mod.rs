//! Admission control for servers built on [`rmcp`], the official Rust MCP SDK.
//!
//! Wrap any [`ServerHandler`](::rmcp::ServerHandler) in a [`Backpressure`]:
//! `tools/call` (by default) is admitted through a shared [`Limiter`](crate::Limiter);
//! `initialize`, `ping`, the list methods and notifications never are. A
//! rejected request gets the overload error of [`crate::jsonrpc`].

mod handler;
mod options;
pub mod wire;

pub use handler::Backpressure;
pub use options::{BackpressureOptions, CancelPolicy, GuardedMethods, OverloadResponse};
