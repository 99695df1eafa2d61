"""The official Python MCP client, 1.x or 2.x: the few calls the tests need."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

try:  # mcp 2.x
    from mcp.shared.exceptions import MCPError as ClientError
except ImportError:  # mcp 1.x
    from mcp.shared.exceptions import McpError as ClientError

try:  # mcp 2.x
    from mcp.client.streamable_http import streamable_http_client as _http_client

    _HTTP_YIELDS_SESSION_ID = False
except ImportError:  # mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client as _http_client

    _HTTP_YIELDS_SESSION_ID = True


@contextlib.asynccontextmanager
async def connect(
    *, command: list[str] | None = None, env: dict[str, str] | None = None, url: str | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized session with a stdio server (``command``) or a
    Streamable HTTP one (``url``)."""
    if url is not None:
        async with _http_client(url) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    else:
        assert command is not None
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def read_text(session: ClientSession, uri: str) -> str:
    result = await session.read_resource(uri)  # type: ignore[arg-type]
    return result.contents[0].text  # type: ignore[union-attr]


async def read_json(session: ClientSession, uri: str) -> Any:
    return json.loads(await read_text(session, uri))


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call's answer as plain data: ``{"kind": "error", "code",
    "message", "data"}`` for a JSON-RPC error, or ``{"kind": "result",
    "isError", "text", "structuredContent", "meta"}`` (``meta``: ``_meta``)."""
    try:
        result = await session.call_tool(tool, arguments)
    except ClientError as exc:
        error = exc.error
        return {"kind": "error", "code": error.code, "message": error.message, "data": error.data}
    text = "".join(getattr(block, "text", "") for block in result.content)
    structured = getattr(result, "structured_content", None)
    if structured is None:
        structured = getattr(result, "structuredContent", None)
    is_error = getattr(result, "is_error", None)
    if is_error is None:
        is_error = getattr(result, "isError", False)
    meta = getattr(result, "meta", None)
    return {"kind": "result", "isError": bool(is_error), "text": text, "structuredContent": structured,
            "meta": meta}
