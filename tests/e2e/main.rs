//! End to end: the `simple_server` example as a child process, driven over
//! stdio and Streamable HTTP on 127.0.0.1, by raw JSON-RPC and by rmcp's client.
//!
//! The examples are built by `cargo test` before the tests run.
#![cfg(all(not(loom), feature = "rmcp"))]

#[path = "../support/built_examples.rs"]
mod built_examples;
mod cli;
mod clients;
mod http;
#[path = "../support/line_session.rs"]
mod line_session;
mod overload_status;
#[cfg(feature = "redis")]
#[allow(dead_code)] // The shared tests' helper; used in part here.
#[path = "../shared/redis.rs"]
mod redis;
#[cfg(feature = "redis")]
mod shared;
mod stdio;
mod support;
mod tasks;
