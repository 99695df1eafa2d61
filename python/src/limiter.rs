//! The limiter, as a Python object.

use mcp_backpressure::{Limiter, MetricsSnapshot, Request};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::pending::{AcquireFuture, PyPending};
use crate::settings::Settings;

/// The core's `Limiter`: one set of slots, one queue, one set of counters,
/// shared by every call admitted through it.
#[pyclass(name = "Limiter", module = "mcp_backpressure._core", frozen)]
pub struct PyLimiter {
    inner: Limiter,
}

#[pymethods]
impl PyLimiter {
    /// Builds a limiter; a `ValueError` names the first invalid setting.
    #[new]
    #[pyo3(signature = (
        max_concurrent, queue_size = 0, queue_timeout = 30.0, *,
        retry_after_min = None, retry_after_max = None, initial_service_time = None,
        limit = "fixed", min_limit = None, max_limit = None,
        tools = None, default_tool_limit = None, client_limit = None, max_tracked_keys = None,
        queue_discipline = "fifo", codel_target = None, codel_interval = None, lifo_interval = None,
        shared_limit = None, shared_key = None, lease = None, shared_fail = "open",
        shared_replicas = None, shared_timeout = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        max_concurrent: usize,
        queue_size: usize,
        queue_timeout: f64,
        retry_after_min: Option<f64>,
        retry_after_max: Option<f64>,
        initial_service_time: Option<f64>,
        limit: &'py str,
        min_limit: Option<usize>,
        max_limit: Option<usize>,
        tools: Option<Bound<'py, PyDict>>,
        default_tool_limit: Option<usize>,
        client_limit: Option<usize>,
        max_tracked_keys: Option<usize>,
        queue_discipline: &'py str,
        codel_target: Option<f64>,
        codel_interval: Option<f64>,
        lifo_interval: Option<f64>,
        shared_limit: Option<String>,
        shared_key: Option<String>,
        lease: Option<f64>,
        shared_fail: &'py str,
        shared_replicas: Option<usize>,
        shared_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let config = Settings {
            max_concurrent,
            queue_size,
            queue_timeout,
            retry_after_min,
            retry_after_max,
            initial_service_time,
            limit,
            min_limit,
            max_limit,
            tools,
            default_tool_limit,
            client_limit,
            max_tracked_keys,
            queue_discipline,
            codel_target,
            codel_interval,
            lifo_interval,
        }
        .config()?;
        let shared = crate::settings::shared(
            shared_limit,
            shared_key,
            lease,
            shared_fail,
            shared_replicas,
            shared_timeout,
        )?;
        let mut builder = Limiter::builder(config);
        if let Some(shared) = shared {
            builder = builder.shared(shared);
        }
        // The shared limit's connection and tasks live on the timer runtime.
        let _runtime = crate::runtime::runtime().enter();
        let inner = builder
            .build()
            .map_err(|err| pyo3::exceptions::PyValueError::new_err(err.to_string()))?;
        Ok(Self { inner })
    }

    /// Starts an admission for a call of `tool` (a tool name, or a method
    /// name for the other guarded methods) from `client` (a client key).
    /// Nothing happens until the returned `Pending` is first polled.
    /// `continuation` marks the continuation of a multi-round-trip call
    /// (a `tools/call` carrying `inputResponses` or `requestState`).
    #[pyo3(signature = (tool = None, client = None, continuation = false))]
    fn acquire(
        &self,
        tool: Option<String>,
        client: Option<String>,
        continuation: bool,
    ) -> PyPending {
        let limiter = self.inner.clone();
        let future: AcquireFuture = Box::pin(async move {
            let mut request = Request::new();
            if let Some(tool) = tool.as_deref() {
                request = request.tool(tool);
            }
            if let Some(client) = client.as_deref() {
                request = request.client(client);
            }
            if continuation {
                request = request.continuation();
            }
            limiter.acquire_with(request).await
        });
        PyPending::new(future)
    }

    /// The limiter's counters and gauges, taken under its lock (the fields
    /// agree with each other), as a dict.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        snapshot_dict(py, &self.inner.snapshot())
    }

    /// The shared limit's own figures (Redis commands, errors, renewals,
    /// fallback, figures across replicas), or `None` without one.
    fn shared_snapshot<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(s) = self.inner.shared_snapshot() else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        dict.set_item("fallback", s.fallback)?;
        dict.set_item("leases", s.leases)?;
        dict.set_item("waiting", s.waiting)?;
        dict.set_item("global_in_use", s.global_in_use)?;
        dict.set_item("global_queued", s.global_queued)?;
        dict.set_item("replicas", s.replicas)?;
        dict.set_item("commands", s.commands)?;
        dict.set_item("errors", s.errors)?;
        dict.set_item("renewals", s.renewals)?;
        dict.set_item("leases_lost", s.leases_lost)?;
        dict.set_item("last_error", s.last_error)?;
        Ok(Some(dict))
    }

    /// One dict per configured tool, and one `*` row for every other tool:
    /// `tool`, `running`, `queued`, `limit`, `admitted`, `rejected`.
    fn tool_snapshots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = PyList::empty(py);
        for row in self.inner.tool_snapshots() {
            let dict = PyDict::new(py);
            dict.set_item("tool", &row.tool)?;
            dict.set_item("running", row.running)?;
            dict.set_item("queued", row.queued)?;
            dict.set_item("limit", row.limit)?;
            dict.set_item("admitted", row.admitted)?;
            dict.set_item("rejected", row.rejected)?;
            rows.append(dict)?;
        }
        Ok(rows)
    }
}

fn snapshot_dict<'py>(py: Python<'py>, s: &MetricsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("active", s.active)?;
    dict.set_item("running", s.running)?;
    dict.set_item("handed_over", s.handed_over)?;
    dict.set_item("queued", s.queued)?;
    dict.set_item("max_concurrent", s.max_concurrent)?;
    dict.set_item("queue_size", s.queue_size)?;
    dict.set_item("admitted", s.admitted)?;
    dict.set_item("completed", s.completed)?;
    dict.set_item("cancelled_in_queue", s.cancelled_in_queue)?;
    dict.set_item("total_rejected", s.total_rejected)?;
    dict.set_item("rejected_concurrency_limit", s.rejected_concurrency_limit)?;
    dict.set_item("rejected_queue_full", s.rejected_queue_full)?;
    dict.set_item("rejected_queue_timeout", s.rejected_queue_timeout)?;
    dict.set_item("rejected_queue_shed", s.rejected_queue_shed)?;
    dict.set_item("rejected_shared_unavailable", s.rejected_shared_unavailable)?;
    dict.set_item("tracked_keys", s.tracked_keys)?;
    dict.set_item("continuations_waiting", s.continuations_waiting)?;
    dict.set_item("continuations_ahead", s.continuations_ahead)?;
    Ok(dict)
}
