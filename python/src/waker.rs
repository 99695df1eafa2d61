//! A [`Waker`](std::task::Waker) that calls a Python callable.
//!
//! The middleware hands `poll` a callable that schedules the next poll on its
//! event loop with `loop.call_soon_threadsafe`, so it may be called from any
//! thread: the timer thread (a queue timeout) or the thread that released a
//! slot (a hand-over). The core wakes waiters only after its lock is dropped,
//! so taking the GIL here never waits while the limiter's lock is held.

use std::sync::Arc;
use std::task::Wake;

use pyo3::prelude::*;

pub(crate) struct PyWaker {
    callback: Py<PyAny>,
}

impl PyWaker {
    pub(crate) fn new(callback: Py<PyAny>) -> Arc<Self> {
        Arc::new(Self { callback })
    }
}

impl Wake for PyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        Python::attach(|py| {
            // An error means the loop is closed: nobody is left to wake, and
            // the admission is dropped with its Pending object.
            if let Err(err) = self.callback.call0(py) {
                err.write_unraisable(py, None);
            }
        });
    }
}
