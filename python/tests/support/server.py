"""A FastMCP server guarded by BackpressureMiddleware, for the end-to-end tests.

    server.py --transport stdio|http [--port N]

The middleware's keyword arguments come as JSON in ``MW_KWARGS``
(``overload_error_code``, ``queue_size``, ...; ``max_concurrent`` defaults to 1).

Tools (limited): ``hold(key)`` waits until ``release://{key}`` is read;
``echo(message)``; ``boom_timeout()`` raises the tool's own TimeoutError.
Resources (never limited): ``release://{key}``, ``entered://{n}`` (waits until
n ``hold`` calls have entered, 10 s at most), ``metrics://now`` (the
middleware's metrics as JSON), ``overloads://seen`` (what the async
on_overload callback recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os

from fastmcp import FastMCP

from mcp_backpressure import BackpressureMiddleware


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    for name in ("", "fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access", "docket"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    kwargs = json.loads(os.environ.get("MW_KWARGS", "{}"))
    kwargs.setdefault("max_concurrent", 1)
    seen: list[dict] = []

    async def on_overload(error) -> None:
        await asyncio.sleep(0)  # a real await: proves the callback is awaited
        seen.append(error.data)

    middleware = BackpressureMiddleware(on_overload=on_overload, **kwargs)
    mcp = FastMCP("mcp-backpressure-e2e")
    events: dict[str, asyncio.Event] = {}
    entered = 0
    progress = asyncio.Condition()

    def event(key: str) -> asyncio.Event:
        return events.setdefault(key, asyncio.Event())

    @mcp.tool
    async def hold(key: str) -> str:
        """Waits until release://{key} is read."""
        nonlocal entered
        async with progress:
            entered += 1
            progress.notify_all()
        await event(key).wait()
        return f"released {key}"

    @mcp.tool
    async def echo(message: str) -> str:
        """Returns the message."""
        return message

    @mcp.tool
    async def boom_timeout() -> str:
        """Fails with the tool's own TimeoutError."""
        raise TimeoutError("the tool's own backend timed out")

    @mcp.resource("release://{key}")
    async def release(key: str) -> str:
        event(key).set()
        return "ok"

    @mcp.resource("entered://{n}")
    async def wait_entered(n: str) -> str:
        async def reached() -> None:
            async with progress:
                await progress.wait_for(lambda: entered >= int(n))

        await asyncio.wait_for(reached(), 10)
        return str(entered)

    @mcp.resource("metrics://now")
    async def metrics() -> str:
        return json.dumps(dataclasses.asdict(middleware.get_metrics()))

    @mcp.resource("overloads://seen")
    async def overloads() -> str:
        return json.dumps(seen)

    mcp.add_middleware(middleware)
    if args.transport == "stdio":
        mcp.run(transport="stdio", show_banner=False)
    else:
        mcp.run(transport="http", host="127.0.0.1", port=args.port, path="/mcp", show_banner=False,
                log_level="error")


if __name__ == "__main__":
    main()
