use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::admission::Shared;
use super::queue::Grant;
use super::state::{LazyNow, WakeList};
use crate::overload::Overload;

/// A request's place in the wait queue. Resolves when a slot is handed to it
/// or it is turned away (evicted by a fair share, shed by CoDel).
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

    /// The deadline passed: keep a slot handed over (or a rejection decided)
    /// in the meantime, or leave the queue rejected with `queue_timeout`.
    pub(crate) fn time_out(&mut self) -> Result<Grant, Box<Overload>> {
        debug_assert!(!self.done, "a resolved waiter cannot time out");
        self.done = true;
        let mut wake = WakeList::default();
        let result =
            self.shared
                .lock()
                .time_out_waiter(self.key, &mut LazyNow::default(), &mut wake);
        wake.wake_all();
        result
    }
}

impl Future for Waiter<'_> {
    /// The rejection is boxed: the output is held in the `acquire` future
    /// while it is polled, and a parked waiter should stay small.
    type Output = Result<Grant, Box<Overload>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
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
            self.shared.cancel_waiter(self.key);
        }
    }
}
