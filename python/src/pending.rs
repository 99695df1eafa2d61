//! One admission in progress, polled from Python.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use mcp_backpressure::{Overload, Permit, jsonrpc};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::permit::PyPermit;
use crate::refusal::PyRefusal;
use crate::runtime::runtime;
use crate::waker::PyWaker;

pub(crate) type AcquireFuture = Pin<Box<dyn Future<Output = Result<Permit, Overload>> + Send>>;

/// Locks a mutex, ignoring poisoning: every critical section here only moves
/// an `Option` in or out, so a panic cannot leave it half-updated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The core's acquire future for one call.
///
/// `poll(waker)` returns a `Permit` (admitted), a `dict` (rejected: the
/// overload `data` fields, `message`, and the [`PyRefusal`] under
/// `refusal`), or `None` (waiting: `waker()` will
/// be called, from any thread, when it is worth polling again). `close()`
/// drops the future: a queued call leaves the queue, and a slot already
/// handed to it goes to the next in line. Dropping the object does the same.
#[pyclass(name = "Pending", module = "mcp_backpressure._core", frozen)]
pub struct PyPending {
    /// Shared (weakly) with the wakers: a waker whose event loop is gone
    /// abandons the admission itself (nobody is left to poll or close it).
    future: Arc<Mutex<Option<AcquireFuture>>>,
}

/// The admission a waker belongs to.
pub(crate) type Slot = Mutex<Option<AcquireFuture>>;

impl PyPending {
    pub(crate) fn new(future: AcquireFuture) -> Self {
        Self {
            future: Arc::new(Mutex::new(Some(future))),
        }
    }
}

#[pymethods]
impl PyPending {
    /// Polls the admission once; see the type's docs. Without a `waker`
    /// (the first poll), a wake-up is not delivered: a caller that gets
    /// `None` must poll again with one before it waits (the core keeps the
    /// waker of the latest poll).
    #[pyo3(signature = (waker = None))]
    fn poll(&self, py: Python<'_>, waker: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let mut slot = lock(&self.future);
        let Some(future) = slot.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "this admission has already finished or was closed",
            ));
        };
        let waker = match waker {
            Some(callback) => Waker::from(PyWaker::new(callback, Arc::downgrade(&self.future))),
            None => Waker::noop().clone(),
        };
        let mut cx = Context::from_waker(&waker);
        let polled = {
            let _timers = runtime().enter();
            future.as_mut().poll(&mut cx)
        };
        match polled {
            Poll::Pending => Ok(py.None()),
            Poll::Ready(result) => {
                // The finished future is dropped outside the lock.
                let finished = slot.take();
                drop(slot);
                drop(finished);
                match result {
                    Ok(permit) => Ok(Py::new(py, PyPermit::new(permit))?.into_any()),
                    Err(overload) => Ok(overload_dict(py, overload)?.into_any().unbind()),
                }
            }
        }
    }

    /// Abandons the admission (see the type's docs). Idempotent.
    fn close(&self) {
        let future = lock(&self.future).take();
        drop(future);
    }

    /// Whether the admission is still in progress.
    #[getter]
    fn pending(&self) -> bool {
        lock(&self.future).is_some()
    }
}

/// The overload `data` fields (the Python package's seven and `scope`), the
/// wire `message`, and the refusal itself (`refusal`: the core's answers).
fn overload_dict(py: Python<'_>, overload: Overload) -> PyResult<Bound<'_, PyDict>> {
    let data = overload.data();
    let dict = PyDict::new(py);
    dict.set_item("reason", data.reason.as_str())?;
    dict.set_item("active", data.active)?;
    dict.set_item("queued", data.queued)?;
    dict.set_item("max_concurrent", data.max_concurrent)?;
    dict.set_item("queue_size", data.queue_size)?;
    dict.set_item("queue_timeout_ms", data.queue_timeout_ms)?;
    dict.set_item("retry_after_ms", data.retry_after_ms)?;
    dict.set_item("scope", data.scope)?;
    dict.set_item("message", jsonrpc::message(&overload))?;
    dict.set_item("refusal", Py::new(py, PyRefusal::new(overload))?)?;
    Ok(dict)
}
