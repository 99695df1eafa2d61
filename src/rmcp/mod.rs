//! Admission control for servers built on [`rmcp`], the official Rust MCP SDK.
//!
//! Wrap any [`ServerHandler`](::rmcp::ServerHandler) in a [`Backpressure`]:
//! `tools/call` (by default) is admitted through a shared [`Limiter`](crate::Limiter);
//! `initialize`, `ping`, the list methods and notifications never are. A
//! rejected request gets the overload error of [`crate::jsonrpc`].
//!
//! Each guarded request is admitted as a [`Request`](crate::Request) naming
//! its tool (`tools/call`) or its method (the other guarded methods), and its
//! client key ([`ClientKey`]), so the limiter's per-tool limits and weights
//! ([`LimiterConfig::tools`](crate::LimiterConfig::tools)) and per-client
//! limits apply. Its outcome feeds adaptive limits honestly: a result is a
//! success, a tool result with `isError` or an error is ignored, except an
//! error that says a dependency timed out or is overloaded (-32001, -32023,
//! -32029, -31429), which is a drop.
//!
//! Serve it with [`Backpressure::serve`]: its transport is wrapped in a
//! [`DisconnectAware`], so that calls still queued when the client
//! disconnects leave the queue at once (see [`DisconnectAware`] for the other
//! ways of serving, Streamable HTTP among them).

mod disconnect;
mod handler;
mod options;
mod tasks;
pub mod wire;

pub use disconnect::DisconnectAware;
pub use handler::Backpressure;
pub use options::{
    BackpressureOptions, CancelPolicy, ClientKey, GuardedMethods, KeyFn, MAX_HEADER_KEY_BYTES,
    OverloadResponse,
};
pub use tasks::{TaskWatch, TaskWorking};
