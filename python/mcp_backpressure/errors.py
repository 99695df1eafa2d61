"""The overload error."""

from __future__ import annotations

from typing import Any

from . import _core
from ._compat import McpErrorBase, error_data

DEFAULT_OVERLOAD_CODE: int = _core.DEFAULT_OVERLOAD_CODE
"""-31429: outside the range JSON-RPC reserves for the protocol (-32768..-32000)."""

PYTHON_PACKAGE_OVERLOAD_CODE: int = _core.PYTHON_PACKAGE_OVERLOAD_CODE
"""-32001: the code of ``mcp-backpressure`` 0.1.2; pass it as
``overload_error_code`` for clients that match on it."""


class OverloadError(McpErrorBase):  # type: ignore[misc,valid-type]
    """The server is overloaded: the call was not admitted.

    Constructed like the 0.1.2 exception (same positional order, names and
    defaults, except ``code``, whose default is :data:`DEFAULT_OVERLOAD_CODE`),
    with two more keywords, both set by the middleware and left out of
    ``data`` by default, as 0.1.2's errors had neither:

    - ``scope`` (``global``, ``tool:NAME`` or ``client``: the limit that
      refused);
    - ``retry_after_alias``: ``data`` also carries the retry delay as
      ``retryAfterMs`` (the name the SEP-3304 draft gives it), with the same
      value as ``retry_after_ms``.

    It *is* the MCP SDK's error type (``MCPError`` / ``McpError``), so an
    ``OverloadError`` raised anywhere in a FastMCP server reaches the client
    as the JSON-RPC error ``{code, message, data}`` where the SDK allows it.
    """

    def __init__(
        self,
        reason: str,
        active: int,
        max_concurrent: int,
        code: int = DEFAULT_OVERLOAD_CODE,
        message: str = "SERVER_OVERLOADED",
        queued: int = 0,
        queue_size: int = 0,
        queue_timeout_ms: int = 0,
        retry_after_ms: int = 1000,
        *,
        scope: str | None = None,
        retry_after_alias: bool = False,
    ) -> None:
        self._code = code
        self._message = message
        self.reason = reason
        self.active = active
        self.max_concurrent = max_concurrent
        self.queued = queued
        self.queue_size = queue_size
        self.queue_timeout_ms = queue_timeout_ms
        self.retry_after_ms = retry_after_ms
        self.scope = scope
        self.retry_after_alias = retry_after_alias
        # Not the SDK base's __init__: its code/message/data are read-only
        # views of `error`, which here is computed from the fields above.
        Exception.__init__(self, f"{message}: {reason}")

    # --- the SDK's view (`code`, `message`, `data`, `error`) -------------

    @property
    def code(self) -> int:  # type: ignore[override]
        """The JSON-RPC error code."""
        return self._code

    @code.setter
    def code(self, value: int) -> None:
        self._code = value

    @property
    def message(self) -> str:  # type: ignore[override]
        """The JSON-RPC error message (begins with ``SERVER_OVERLOADED``)."""
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        self._message = value

    @property
    def data(self) -> dict[str, Any]:  # type: ignore[override]
        """The ``data`` member: the seven fields of 0.1.2, then ``retryAfterMs``
        and ``scope`` when set (see the class docs)."""
        data = {
            "reason": self.reason,
            "active": self.active,
            "queued": self.queued,
            "max_concurrent": self.max_concurrent,
            "queue_size": self.queue_size,
            "queue_timeout_ms": self.queue_timeout_ms,
            "retry_after_ms": self.retry_after_ms,
        }
        if self.retry_after_alias:
            data["retryAfterMs"] = self.retry_after_ms
        if self.scope is not None:
            data["scope"] = self.scope
        return data

    @property
    def error(self) -> Any:  # type: ignore[override]
        """The SDK's ``ErrorData`` (what the SDK sends on the wire)."""
        return error_data(self.code, self.message, self.data)

    def to_json_rpc(self) -> dict[str, Any]:
        """The JSON-RPC error object ``{"code", "message", "data"}``."""
        return {"code": self.code, "message": self.message, "data": self.data}

    def __str__(self) -> str:
        # 0.1.2 said "SERVER_OVERLOADED: queue_full"; the middleware's own
        # messages already name the reason (and the retry delay).
        if self.reason in self.message:
            return self.message
        return f"{self.message}: {self.reason}"

    def __repr__(self) -> str:
        return f"OverloadError(reason={self.reason!r}, code={self.code}, scope={self.scope!r})"

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (self.reason, self.active, self.max_concurrent, self.code, self.message, self.queued,
             self.queue_size, self.queue_timeout_ms, self.retry_after_ms, self.scope, self.retry_after_alias),
        )


def _rebuild(*args: Any) -> OverloadError:
    *positional, scope, retry_after_alias = args
    return OverloadError(*positional, scope=scope, retry_after_alias=retry_after_alias)
