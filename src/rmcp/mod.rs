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
//!
//! # An HTTP status for refusals
//!
//! Over Streamable HTTP a refusal travels as JSON-RPC in a `200 OK` answer.
//! [`OverloadStatusLayer`], a tower layer in front of rmcp's
//! `StreamableHttpService`, turns the answer to a refused POST into `429` or
//! `503` with `Retry-After` (see [`overload_status`]).
//!
//! # Background tasks
//!
//! A `tools/call` the handler answers with a task handle (SEP-2663,
//! `CallToolResponse::Task`) keeps its slot while the task works: its permit
//! becomes a hold in the wrapper's [`TaskHolds`](crate::TaskHolds) table
//! ([`Backpressure::task_holds`] for metrics, capped by
//! [`BackpressureOptions::max_task_holds`]). A handler that arms the call's
//! [`TaskWatch`] frees the slot exactly when the work ends.
//!
//! A `tools/call` that carries `inputResponses` or `requestState` (the retry
//! of a multi-round-trip call, SEP-2322) is admitted as a continuation
//! ([`Request::continuation`](crate::Request::continuation)).
//!
//! ## The scope of a task id
//!
//! rmcp's [`TaskManager`](::rmcp::task_manager::TaskManager) mints each task
//! id as a random (v4) UUID and keys its tasks by that id alone; and under the
//! 2026-07-28 protocol a client may poll (`tasks/get`) or cancel a task over
//! another connection or HTTP request than the `tools/call` that made it (the
//! protocol is stateless: there may be no session at all). A per-connection
//! or per-session scope would miss those polls, so the scope is the wrapped
//! server: one table per [`Backpressure`], shared by its
//! clones (a Streamable HTTP factory that clones one `Backpressure` shares
//! one table, as it shares one task store). The scope key is therefore `()`.
//!
//! ## How a hold ends
//!
//! Exactly once, at the first of:
//!
//! - **the work ending** ([`HoldEnd::Terminal`], or [`HoldEnd::Cancel`] after
//!   an acknowledged `tasks/cancel`): when the handler arms the request's
//!   [`TaskWatch`] and keeps its [`TaskWorking`] guard in the task's future,
//!   the guard's drop (the future finished, or was dropped: aborted by rmcp's
//!   TTL sweep or shutdown) frees the slot — nobody needs to poll;
//! - **a terminal status** in an answer to the client's `tasks/get`
//!   ([`HoldEnd::Terminal`]);
//! - **an acknowledged `tasks/cancel`** ([`HoldEnd::Cancel`]) for a task whose
//!   end is not watched; a watched task keeps its slot until its work really
//!   stops (rmcp's cancellation is cooperative: an operation may finish
//!   anyway), and the end is then counted as a cancel;
//! - **an "unknown task" answer** (-32602) to `tasks/get` or `tasks/cancel`
//!   ([`HoldEnd::UnknownTask`]);
//! - **the task's TTL** (`ttlMs` of the handle), counted on tokio's clock from
//!   the handle ([`HoldEnd::Ttl`]); a handle without a TTL is bounded only by
//!   the other causes;
//! - **the wrapper's own poll** of an unwatched task nobody asked about for
//!   its poll interval, when turned on
//!   ([`Backpressure::with_own_task_polls`]): a terminal answer
//!   ([`HoldEnd::OwnPoll`]), or an "unknown task" one;
//! - **the cap** ([`HoldEnd::Cap`], see [`TaskHolds`](crate::TaskHolds)).
//!
//! The permit reports [`Outcome::Ignore`](crate::Outcome::Ignore): a task's
//! lifetime (polls, input rounds) is not a latency sample for adaptive limits.
//!
//! ## What the wrapper cannot see
//!
//! - An unwatched task whose client never polls again keeps its slot until
//!   its TTL (a handle without a TTL: until the cap ends it), unless the
//!   wrapper polls the handler itself ([`Backpressure::with_own_task_polls`],
//!   ended as [`HoldEnd::OwnPoll`]) — or arm the [`TaskWatch`].
//! - The TTL frees the slot on time, but rmcp's `TaskManager` aborts an
//!   overdue operation only at its next call (it has no sweeper of its own),
//!   so the work may briefly outlive its slot.
//! - A `tools/call` cancelled by its client after the handler made the task
//!   but before the handle was returned: the handle is never seen, and that
//!   task is not limited.
//! - A closed connection ends no hold: a task outlives the connection that
//!   made it (the client may poll from another one).
//!
//! [`HoldEnd::Terminal`]: crate::task_holds::HoldEnd::Terminal
//! [`HoldEnd::Cancel`]: crate::task_holds::HoldEnd::Cancel
//! [`HoldEnd::UnknownTask`]: crate::task_holds::HoldEnd::UnknownTask
//! [`HoldEnd::Ttl`]: crate::task_holds::HoldEnd::Ttl
//! [`HoldEnd::OwnPoll`]: crate::task_holds::HoldEnd::OwnPoll
//! [`HoldEnd::Cap`]: crate::task_holds::HoldEnd::Cap

mod admission_signal;
mod disconnect;
mod handler;
mod options;
pub mod overload_status;
mod tasks;
pub mod wire;

pub use disconnect::DisconnectAware;
pub use handler::Backpressure;
pub use options::{
    BackpressureOptions, CancelPolicy, ClientKey, GuardedMethods, KeyFn, MAX_HEADER_KEY_BYTES,
    OverloadResponse,
};
pub use overload_status::{OverloadStatus, OverloadStatusLayer};
pub use tasks::{TaskWatch, TaskWorking};
