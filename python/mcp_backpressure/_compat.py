"""What differs between the MCP SDKs and FastMCP versions we run under.

Two things matter to the middleware:

- the SDK's exception for a JSON-RPC error (``mcp.shared.exceptions.MCPError``
  in ``mcp`` 2.x, ``McpError`` in 1.x), which :class:`OverloadError` subclasses
  so that raising it *is* raising an MCP error;
- whether a ``tools/call`` handler lets such an error reach the wire. ``mcp``
  1.x (under FastMCP 2.x) turns every exception a tool call raises into an
  ``isError`` result with only its text, so there the middleware answers a
  rejected call with an ``isError`` result of its own that keeps the ``data``
  as ``structuredContent``. ``mcp`` 2.x (FastMCP 3.x/4.x) sends an ``MCPError``
  raised by middleware as the JSON-RPC error it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:  # mcp 2.x
    from mcp.shared.exceptions import MCPError as McpErrorBase

    SDK_CARRIES_TOOL_CALL_ERRORS = True
except ImportError:  # pragma: no cover - depends on the installed SDK
    try:  # mcp 1.x
        from mcp.shared.exceptions import McpError as McpErrorBase

        SDK_CARRIES_TOOL_CALL_ERRORS = False
    except ImportError:  # no MCP SDK at all: the middleware still works on its own
        McpErrorBase = Exception  # type: ignore[misc,assignment]
        SDK_CARRIES_TOOL_CALL_ERRORS = False


def error_data(code: int, message: str, data: dict[str, Any]) -> Any:
    """The SDK's ``ErrorData`` for an overload error (a plain dict without an SDK)."""
    try:
        from mcp.types import ErrorData
    except ImportError:  # pragma: no cover
        return {"code": code, "message": message, "data": data}
    return ErrorData(code=code, message=message, data=data)


def error_tool_result(text: str, data: dict[str, Any], meta: dict[str, Any]) -> Any:
    """A FastMCP ``ToolResult`` that reaches the client as ``isError: true``,
    ``text`` as text content, ``data`` as ``structuredContent`` and ``meta``
    as ``_meta``."""
    from mcp.types import TextContent

    content = [TextContent(type="text", text=text)]
    try:  # FastMCP 3.x / 4.x: ToolResult knows is_error (and meta)
        from fastmcp.tools.base import ToolResult

        return ToolResult(content=content, structured_content=dict(data), meta=dict(meta), is_error=True)
    except (ImportError, TypeError):
        pass
    # FastMCP 2.x: ToolResult has meta but no is_error; the SDK passes a
    # CallToolResult returned by to_mcp_result() through unchanged (and does
    # not validate it against the tool's output schema).
    from fastmcp.tools.tool import ToolResult as ToolResult2
    from mcp.types import CallToolResult

    class _ErrorToolResult(ToolResult2):  # type: ignore[misc,valid-type]
        def to_mcp_result(self) -> Any:
            return CallToolResult(
                content=list(self.content),
                structuredContent=self.structured_content,
                isError=True,
                _meta=self.meta,
            )

    return _ErrorToolResult(content=content, structured_content=dict(data), meta=dict(meta))


def result_is_error(result: Any) -> bool:
    """Whether a tool call's result says the tool failed (``isError``)."""
    for name in ("is_error", "isError"):
        value = getattr(result, name, None)
        if isinstance(value, bool):
            return value
    if isinstance(result, dict):
        return result.get("isError") is True
    return False


TOOL_FAILURE_META_KEY = "io.modelcontextprotocol/toolFailure"


def result_says_overload(result: Any) -> bool:
    """Whether a tool call's result is a refusal in the tool-result dialect:
    ``isError`` and ``_meta["io.modelcontextprotocol/toolFailure"]["class"]``
    ``== "overload"`` (a guarded server further down, whose answer the tool
    relays, refused the call). Counted as an overload signal, like the
    overload error's code."""
    if not result_is_error(result):
        return False
    meta = None
    for name in ("meta", "_meta"):
        value = getattr(result, name, None)
        if isinstance(value, Mapping):
            meta = value
            break
    if meta is None and isinstance(result, Mapping):
        meta = result.get("_meta")
    if not isinstance(meta, Mapping):
        return False
    failure = meta.get(TOOL_FAILURE_META_KEY)
    return isinstance(failure, Mapping) and failure.get("class") == "overload"


def error_code(exc: BaseException) -> int | None:
    """The JSON-RPC code of an MCP error raised through the middleware."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return code
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None
