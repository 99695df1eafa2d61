use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::fifo::Shared;
use super::waiters::Grant;
use crate::overload::Overload;

/// A request's place in the wait queue. Resolves when a slot is handed to it.
///
/// Dropping it before it resolves takes it out of the queue; if a slot had been
/// handed to it in the meantime, the slot goes to the next in line. Nothing
/// is leaked on any path.
pub(crate) struct Waiter<'a> {
    shared: &'a Shared,
    key: usize,
    /// The entry was removed from the queue (by `poll` or `time_out`).
    done: bool,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(shared: &'a Shared, key: usize) -> Self {
        Self {
            shared,
            key,
            done: false,
        }
    }

    /// The deadline passed: keep a slot handed over in the meantime, or leave
    /// the queue rejected with `queue_timeout`.
    #[allow(clippy::result_large_err)] // See `State::time_out_waiter`.
    pub(crate) fn time_out(mut self) -> Result<Grant, Overload> {
        debug_assert!(!self.done, "a resolved waiter cannot time out");
        self.done = true;
        self.shared.lock().time_out_waiter(self.key)
    }
}

impl Future for Waiter<'_> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        assert!(!self.done, "Waiter polled after it resolved");
        let poll = self.shared.lock().poll_waiter(self.key, cx.waker());
        if poll.is_ready() {
            self.done = true;
        }
        poll
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancel_waiter(self.key, Instant::now());
        }
    }
}
