"""The official Python MCP client (``mcp`` 2.x) against ``simple_server``:
prints, as JSON, what the client surfaces for a refused call.

    overload_client.py --url URL
    overload_client.py --command PROGRAM [ARG...]    (stdio; the rest are the server's)

One ``sleep`` of 60 s takes the server's only slot (its start is announced
by a progress notification, so nothing here waits on time); a second call
is then refused. The output: ``{"refused": OUTCOME, "ping_after": bool}``
where OUTCOME is one of

- ``{"kind": "error", "code", "message", "data"}``: a JSON-RPC error;
- ``{"kind": "result", "result": <the CallToolResult as on the wire>}``;
- ``{"kind": "exception", "type", "message"}``: anything else raised.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[ClientSession]:
    if args.url:
        async with streamable_http_client(args.url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session
    else:
        params = StdioServerParameters(command=args.command[0], args=args.command[1:])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def outcome(session: ClientSession, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        result = await session.call_tool(name, arguments)
    except MCPError as exc:
        return {"kind": "error", "code": exc.error.code, "message": exc.error.message, "data": exc.error.data}
    except Exception as exc:  # what a transport failure looks like to the caller
        return {"kind": "exception", "type": type(exc).__name__, "message": str(exc)}
    return {"kind": "result", "result": result.model_dump(mode="json", by_alias=True, exclude_none=True)}


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    async with connect(args) as session:
        started = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        held = asyncio.create_task(session.call_tool("sleep", {"ms": 60_000}, progress_callback=on_progress))
        await started.wait()
        refused = await outcome(session, "sleep", {"ms": 1})
        try:
            await session.send_ping()
            ping_after = True
        except Exception:
            ping_after = False
        held.cancel()
        with contextlib.suppress(BaseException):
            await held
        return {"refused": refused, "ping_after": ping_after}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(asyncio.wait_for(scenario(args), 60))), flush=True)


if __name__ == "__main__":
    main()
