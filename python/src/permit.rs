//! A slot held by one call, as a Python object.

use std::sync::Mutex;

use mcp_backpressure::{Outcome, Permit};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::pending::lock;

/// A slot held by one call. `release()` gives it back (exactly once; later
/// calls do nothing); so does garbage collection of the object.
#[pyclass(name = "Permit", module = "mcp_backpressure._core", frozen)]
pub struct PyPermit {
    inner: Mutex<Option<Permit>>,
    cost: usize,
}

impl PyPermit {
    pub(crate) fn new(permit: Permit) -> Self {
        Self {
            cost: permit.cost(),
            inner: Mutex::new(Some(permit)),
        }
    }

    /// Takes the slot out (a task hold keeps it from now on): `release()`
    /// then does nothing. `None` if it was already given back or taken.
    pub(crate) fn take(&self) -> Option<Permit> {
        lock(&self.inner).take()
    }
}

#[pymethods]
impl PyPermit {
    /// Slots of the global limit this permit holds.
    #[getter]
    fn cost(&self) -> usize {
        self.cost
    }

    /// Whether the slot is still held.
    #[getter]
    fn held(&self) -> bool {
        lock(&self.inner).is_some()
    }

    /// Sets what the call's end says about load: `"success"` (its service
    /// time is a sample), `"ignore"` (no sample: the tool failed on its own,
    /// it was cancelled) or `"dropped"` (it signalled overload further down:
    /// an adaptive limit backs off).
    fn set_outcome(&self, outcome: &str) -> PyResult<()> {
        let outcome = match outcome {
            "success" => Outcome::Success,
            "ignore" => Outcome::Ignore,
            "dropped" => Outcome::Dropped,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown outcome {other:?}: expected success, ignore or dropped"
                )));
            }
        };
        if let Some(permit) = lock(&self.inner).as_mut() {
            permit.set_outcome(outcome);
        }
        Ok(())
    }

    /// Gives the slot back — to the head of the queue if anyone waits.
    fn release(&self) {
        let permit = lock(&self.inner).take();
        // Dropped outside the lock: the release may wake a waiter, whose
        // waker calls back into Python.
        drop(permit);
    }

    fn __repr__(&self) -> String {
        format!("Permit(cost={}, held={})", self.cost, self.held())
    }
}
