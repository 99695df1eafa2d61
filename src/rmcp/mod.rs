//! Admission control for servers built on [`rmcp`], the official Rust MCP SDK.
//!
//! Wrap any [`ServerHandler`](::rmcp::ServerHandler) in a [`Backpressure`]:
//! `tools/call` (by default) is admitted through a shared [`Limiter`](crate::Limiter);
//! `initialize`, `ping`, the list methods and notifications never are. A
//! rejected request gets the overload error of [`crate::jsonrpc`].
//!
//! Serve it with [`Backpressure::serve`]: its transport is wrapped in a
//! [`DisconnectAware`], so that calls still queued when the client
//! disconnects leave the queue at once (see [`DisconnectAware`] for the other
//! ways of serving, Streamable HTTP among them).

mod disconnect;
mod handler;
mod options;
pub mod wire;

pub use disconnect::DisconnectAware;
pub use handler::Backpressure;
pub use options::{BackpressureOptions, CancelPolicy, GuardedMethods, OverloadResponse};
