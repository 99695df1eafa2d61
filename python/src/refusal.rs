//! One refused admission, as a Python object: the core's answers to it.

use mcp_backpressure::{Overload, ToolFailure, jsonrpc};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::json_value::to_python;

/// A refused call (`Pending.poll()` puts it under `"refusal"` in its dict).
/// Its methods are the core's, so every edge answers alike.
#[pyclass(name = "Refusal", module = "mcp_backpressure._core", frozen)]
pub struct PyRefusal {
    overload: Overload,
}

impl PyRefusal {
    pub(crate) fn new(overload: Overload) -> Self {
        Self { overload }
    }
}

#[pymethods]
impl PyRefusal {
    /// The overload `data` the core writes on the wire: the seven fields of
    /// 0.1.2, `retryAfterMs` (the same value as `retry_after_ms`) and
    /// `scope`.
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &jsonrpc::data(&self.overload))
    }

    /// The refusal as an `isError` tool result, made now with a fresh
    /// correlation id: `{"result": {"content": [{"type": "text", "text"}],
    /// "structuredContent", "isError": True, "_meta":
    /// {"io.modelcontextprotocol/toolFailure": {"class", "code",
    /// "retryable", "retryNotBefore", "correlationId"}}}, "correlation_id"}`
    /// (the core's `jsonrpc::tool_result`; each call is a new refusal).
    fn tool_result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let failure = ToolFailure::of(&self.overload);
        let answer = PyDict::new(py);
        answer.set_item(
            "result",
            to_python(py, &jsonrpc::tool_result(&self.overload, &failure))?,
        )?;
        answer.set_item("correlation_id", &failure.correlation_id)?;
        Ok(answer)
    }
}
