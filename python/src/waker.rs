//! A [`Waker`](std::task::Waker) that calls a Python callable.
//!
//! The middleware hands `poll` a callable that schedules the next poll on its
//! event loop with `loop.call_soon_threadsafe`, so it may be called from any
//! thread: the timer thread (a queue timeout) or the thread that released a
//! slot (a hand-over). The core wakes waiters only after its lock is dropped,
//! so taking the GIL here never waits while the limiter's lock is held.

use std::sync::{Arc, Weak};
use std::task::Wake;

use pyo3::prelude::*;

use crate::pending::Slot;

pub(crate) struct PyWaker {
    callback: Py<PyAny>,
    /// The admission to abandon if the callback cannot schedule a poll.
    admission: Weak<Slot>,
}

impl PyWaker {
    pub(crate) fn new(callback: Py<PyAny>, admission: Weak<Slot>) -> Arc<Self> {
        Arc::new(Self {
            callback,
            admission,
        })
    }
}

impl Wake for PyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let failed = Python::attach(|py| self.callback.call0(py).is_err());
        if failed {
            // The event loop is closed: nobody is left to poll the admission
            // or to close it (the task holding it may never be collected: the
            // limiter holds this waker). Abandon it here, so a queued call
            // leaves the queue and a slot handed to it goes to the next in
            // line. `try_lock`: if it is being polled right now, the poller
            // is alive and decides.
            let future = self
                .admission
                .upgrade()
                .and_then(|slot| slot.try_lock().ok().and_then(|mut f| f.take()));
            drop(future);
        }
    }
}
