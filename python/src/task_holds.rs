//! The core's task holds, as a Python object.
//!
//! A FastMCP background task answers `tools/call` at once with a task handle
//! while its work goes on; the middleware turns the call's [`PyPermit`] into
//! a hold here and ends it when the task ends. The table, the causes and
//! their counts are the core's own ([`TaskHolds`]), so every surface of
//! `mcp-backpressure` ends holds the same way.

use std::time::Duration;

use mcp_backpressure::Outcome;
use mcp_backpressure::task_holds::{Held, HoldEnd, Lifetime, TaskHolds};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::permit::PyPermit;
use crate::runtime::runtime;

/// Task holds keyed by scope (the task's authorization scope, `""` when
/// anonymous) and task id. TTLs run on the timer thread: a hold whose TTL
/// runs out ends there ([`HoldEnd::Ttl`]) without Python's help.
#[pyclass(name = "TaskHolds", module = "mcp_backpressure._core", frozen)]
pub struct PyTaskHolds {
    inner: TaskHolds<String>,
    expiry: AbortHandle,
}

impl Drop for PyTaskHolds {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

fn cause(name: &str) -> PyResult<HoldEnd> {
    HoldEnd::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown cause {name:?}: expected one of {}",
                HoldEnd::ALL.map(HoldEnd::as_str).join(", ")
            ))
        })
}

fn outcome(name: &str) -> PyResult<Outcome> {
    match name {
        "success" => Ok(Outcome::Success),
        "ignore" => Ok(Outcome::Ignore),
        "dropped" => Ok(Outcome::Dropped),
        other => Err(PyValueError::new_err(format!(
            "unknown outcome {other:?}: expected success, ignore or dropped"
        ))),
    }
}

fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| PyValueError::new_err(format!("invalid {name}: {s} s")))
        })
        .transpose()
}

#[pymethods]
impl PyTaskHolds {
    /// An empty table of at most `max_holds` holds (the core's default when
    /// `None`).
    #[new]
    #[pyo3(signature = (max_holds = None))]
    fn new(max_holds: Option<usize>) -> Self {
        let inner =
            TaskHolds::new(max_holds.unwrap_or(mcp_backpressure::task_holds::DEFAULT_MAX_HOLDS));
        let expiry = runtime().spawn(inner.clone().run_expiry()).abort_handle();
        Self { inner, expiry }
    }

    /// Turns `permit` into the hold of `task_id` in `scope`; `ttl` and
    /// `poll_interval` in seconds (`None`: no TTL, the core's default
    /// interval). The permit is taken (its own `release()` then does
    /// nothing). Returns `"new"`, `"already"` (the task was held: the permit
    /// is given back) or `"evicted"` (the stalest hold ended to make room).
    #[pyo3(signature = (scope, task_id, permit, ttl = None, poll_interval = None))]
    fn hold(
        &self,
        scope: String,
        task_id: &str,
        permit: &PyPermit,
        ttl: Option<f64>,
        poll_interval: Option<f64>,
    ) -> PyResult<&'static str> {
        let lifetime = Lifetime::new(
            seconds("ttl", ttl)?,
            seconds("poll_interval", poll_interval)?,
        );
        let Some(permit) = permit.take() else {
            return Err(PyValueError::new_err("the permit was already released"));
        };
        let now = {
            let _rt = runtime().enter();
            Instant::now()
        };
        Ok(
            match self.inner.hold(scope, task_id, permit, lifetime, now) {
                Held::New => "new",
                Held::Already => "already",
                _ => "evicted",
            },
        )
    }

    /// Ends the hold of `task_id` in `scope` by `cause` (`terminal`,
    /// `cancel`, `ttl`, `own_poll`, `unknown_task`, `cap`, `closed`), its
    /// permit reporting `outcome`. Returns whether there was one (a hold
    /// ends once).
    #[pyo3(signature = (scope, task_id, cause_name, outcome_name = "ignore"))]
    fn end(
        &self,
        scope: &str,
        task_id: &str,
        cause_name: &str,
        outcome_name: &str,
    ) -> PyResult<bool> {
        let (cause, outcome) = (cause(cause_name)?, outcome(outcome_name)?);
        Ok(self.inner.end(scope, task_id, cause, outcome))
    }

    /// Ends every hold of `scope` (`closed`); returns their task ids.
    fn end_scope(&self, scope: &str) -> Vec<String> {
        self.inner
            .end_scope(scope)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Ends every hold (`closed`); returns how many there were.
    fn end_all(&self) -> usize {
        self.inner.end_all()
    }

    /// Whether `task_id` in `scope` holds a slot.
    fn contains(&self, scope: &str, task_id: &str) -> bool {
        self.inner.contains(scope, task_id)
    }

    /// The task is known alive now; returns whether it is held.
    fn seen(&self, scope: &str, task_id: &str) -> bool {
        let _rt = runtime().enter();
        self.inner.seen(scope, task_id, Instant::now())
    }

    /// The holds not known alive for their poll interval: `(scope, task_id)`
    /// pairs to ask the server about (each counts as seen now).
    fn due(&self) -> Vec<(String, String)> {
        let _rt = runtime().enter();
        self.inner
            .due(Instant::now())
            .into_iter()
            .map(|(scope, id)| (scope, id.to_string()))
            .collect()
    }

    /// Seconds until a TTL runs out or a poll falls due (`0.0` if already),
    /// or `None` without holds.
    fn next_wake(&self) -> Option<f64> {
        let _rt = runtime().enter();
        self.inner
            .next_wake()
            .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64())
    }

    /// Holds now.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// `held`, `slots`, `max_holds`, `created` and `ended` (a dict by cause),
    /// taken under the table's lock.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.snapshot();
        let dict = PyDict::new(py);
        dict.set_item("held", s.held)?;
        dict.set_item("slots", s.slots)?;
        dict.set_item("max_holds", s.max_holds)?;
        dict.set_item("created", s.created)?;
        let ended = PyDict::new(py);
        for c in HoldEnd::ALL {
            ended.set_item(c.as_str(), s.ended.get(c))?;
        }
        dict.set_item("ended", ended)?;
        Ok(dict)
    }

    /// The names of the causes, in the core's order.
    #[staticmethod]
    fn causes() -> Vec<&'static str> {
        HoldEnd::ALL.map(HoldEnd::as_str).to_vec()
    }
}
