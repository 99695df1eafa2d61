//! Admission control for MCP servers.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod jsonrpc;
pub mod limit;
mod limiter;
pub mod metrics;
mod overload;
mod sync;

#[cfg(feature = "rmcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "rmcp")))]
pub mod rmcp;

pub use config::{ConfigError, LimiterConfig};
pub use limiter::{Limiter, LimiterBuilder, OnOverload, Outcome, Permit};
pub use metrics::MetricsSnapshot;
pub use overload::{Overload, OverloadData, OverloadReason};
