//! The `mcp-backpressure proxy` end to end: the binary, real upstream
//! processes, real pipes and sockets on 127.0.0.1.

#[path = "../../../../tests/support/built_examples.rs"]
mod built_examples;
mod config;
mod conformance;
mod continuations;
mod dialect;
mod faults;
mod hardening;
mod http;
mod http_bodies;
mod http_client;
mod http_faults;
mod http_listener;
mod keyed;
#[path = "../../../../tests/support/line_session.rs"]
mod line_session;
mod odd;
mod outcomes;
mod python;
mod recorder;
#[allow(dead_code)] // The library's tests' helper; this crate uses part of it.
#[path = "../../../../tests/shared/redis.rs"]
mod redis;
mod reload;
mod resume;
mod review;
mod review_defects;
mod shared;
mod shared_review;
mod stdio;
mod support;
mod tasks;
mod tasks_review;
