//! Admission control for MCP servers: a hard concurrency limit, a bounded FIFO
//! wait queue with a timeout, and a structured overload error that clients and
//! models can act on.
//!
//! # Quickstart (rmcp)
//!
//! Wrap any rmcp [`ServerHandler`](::rmcp::ServerHandler) in
//! [`rmcp::Backpressure`]: `tools/call` is admitted through a [`Limiter`];
//! `initialize`, `ping`, the list methods and notifications never are.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use mcp_backpressure::rmcp::Backpressure;
//! use mcp_backpressure::{Limiter, LimiterConfig};
//! use rmcp::model::{ServerCapabilities, ServerConfig};
//! use rmcp::ServerHandler;
//!
//! #[derive(Clone)]
//! struct MyServer;
//!
//! impl ServerHandler for MyServer {
//!     fn get_info(&self) -> ServerConfig {
//!         ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(
//!     LimiterConfig::new(5)
//!         .with_queue_size(10)
//!         .with_queue_timeout(Duration::from_secs(30)),
//! )?;
//! let server = Backpressure::new(MyServer, limiter.clone())
//!     .serve(rmcp::transport::stdio())
//!     .await?;
//! server.waiting().await?;
//! println!("{:?}", limiter.snapshot());
//! # Ok(())
//! # }
//! ```
//!
//! # Without rmcp
//!
//! The [`Limiter`] is transport-agnostic: [`Limiter::acquire`] returns a
//! [`Permit`] that holds a slot until dropped, or an [`Overload`] saying why
//! not. [`jsonrpc`] turns an `Overload` into the wire error.
//!
//! ```
//! use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, jsonrpc};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
//! let _running = limiter.acquire().await.unwrap();
//! let overload = limiter.acquire().await.unwrap_err();
//! assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
//! let error = jsonrpc::error_object(&overload, jsonrpc::DEFAULT_OVERLOAD_CODE);
//! assert_eq!(error["data"]["reason"], "concurrency_limit");
//! # }
//! ```
//!
//! # Features
//!
//! - `rmcp` (default): the [`rmcp::Backpressure`] wrapper for the official
//!   Rust MCP SDK (rmcp 3.11).
//!
//! # Layout
//!
//! The limit *algorithm* ([`limit`]) is separate from the *limiter* that
//! enforces it ([`Limiter`]); errors are typed ([`Overload`], [`ConfigError`])
//! and become JSON-RPC only at the edge ([`jsonrpc`], [`rmcp`]).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod jsonrpc;
pub mod limit;
mod limiter;
pub mod metrics;
mod overload;
pub mod overload_status;
mod sync;
pub mod task_holds;
pub mod tool_failure;

#[cfg(feature = "rmcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "rmcp")))]
pub mod rmcp;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod shared;

pub use config::{ConfigError, LimiterConfig, QueueDiscipline, ToolConfig};
pub use limiter::{Limiter, LimiterBuilder, OnOverload, Outcome, Permit, Request};
pub use metrics::{MetricsSnapshot, ToolSnapshot};
pub use overload::{Overload, OverloadData, OverloadReason, Scope};
pub use overload_status::OverloadStatus;
pub use task_holds::TaskHolds;
pub use tool_failure::ToolFailure;

/// The README's code blocks, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "rmcp", feature = "redis"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
