//! The one background thread that drives the core's timers.
//!
//! Admission futures are polled on the asyncio thread inside this runtime's
//! context (so `tokio::time::sleep` registers with its timer); its single
//! worker only parks on the time driver and fires wakers when a queue
//! timeout or a CoDel interval falls due. No future is ever spawned on it.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// The process-wide timer runtime, started on first use.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcp-backpressure-timer")
            .enable_all()
            .build()
            .expect("a one-thread tokio runtime with a timer can be built")
    })
}
