//! `mcp_backpressure._core`: the Rust limiter of `mcp-backpressure`, exposed
//! to Python for the FastMCP middleware (`mcp_backpressure.BackpressureMiddleware`).
//!
//! The Python side never re-implements admission: it builds a [`PyLimiter`]
//! from its settings, asks it for a [`PyPending`] admission per guarded call,
//! polls that from the asyncio thread, and holds the [`PyPermit`] while the
//! tool runs.
//!
//! # How asyncio drives a Rust future
//!
//! An admission is the core's own acquire future, boxed and kept inside the
//! [`PyPending`] object. Python polls it (`Pending.poll(waker)`) on the event
//! loop's thread; when it is not ready, the Rust waker calls the Python
//! callable it was given (the middleware passes one that schedules the next
//! poll with `loop.call_soon_threadsafe`). The queue timeout is a tokio timer,
//! driven by one background thread ([`runtime`]). Two consequences:
//!
//! - an admission that fits runs without leaving the asyncio thread: one
//!   synchronous poll, no task spawned, no thread hop;
//! - cancelling the awaiting asyncio task drops the future synchronously
//!   (`Pending.close()` in the middleware's `except BaseException`), so the
//!   queue place — or a slot already handed over — is given back before the
//!   `CancelledError` reaches the caller.
#![forbid(unsafe_code)]

mod json_value;
mod limiter;
mod pending;
mod permit;
mod refusal;
mod runtime;
mod settings;
mod task_holds;
mod waker;

use pyo3::prelude::*;

pub use limiter::PyLimiter;
pub use pending::PyPending;
pub use permit::PyPermit;
pub use refusal::PyRefusal;
pub use task_holds::PyTaskHolds;

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLimiter>()?;
    m.add_class::<PyPending>()?;
    m.add_class::<PyPermit>()?;
    m.add_class::<PyRefusal>()?;
    m.add_class::<PyTaskHolds>()?;
    m.add(
        "DEFAULT_OVERLOAD_CODE",
        mcp_backpressure::jsonrpc::DEFAULT_OVERLOAD_CODE,
    )?;
    m.add(
        "PYTHON_PACKAGE_OVERLOAD_CODE",
        mcp_backpressure::jsonrpc::PYTHON_PACKAGE_OVERLOAD_CODE,
    )?;
    m.add(
        "OVERLOAD_SIGNAL_CODES",
        mcp_backpressure::jsonrpc::OVERLOAD_SIGNAL_CODES.to_vec(),
    )?;
    m.add("MESSAGE_PREFIX", mcp_backpressure::jsonrpc::MESSAGE_PREFIX)?;
    Ok(())
}
