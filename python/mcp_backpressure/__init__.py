"""Admission control for FastMCP servers, on the Rust ``mcp-backpressure`` core.

A drop-in for ``mcp-backpressure`` 0.1.2::

    from mcp_backpressure import BackpressureMiddleware, BackpressureMetrics, OverloadError
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import DEFAULT_OVERLOAD_CODE, PYTHON_PACKAGE_OVERLOAD_CODE, OverloadError
from .metrics import BackpressureMetrics
from .middleware import GUARDABLE_METHODS, BackpressureMiddleware, session_client_key

try:
    __version__ = version("mcp-backpressure")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_OVERLOAD_CODE",
    "GUARDABLE_METHODS",
    "PYTHON_PACKAGE_OVERLOAD_CODE",
    "BackpressureMetrics",
    "BackpressureMiddleware",
    "OverloadError",
    "session_client_key",
]
