"""A FastMCP tasks server (in-memory Docket) guarded by BackpressureMiddleware,
over stdio, for ``tests/test_tasks.py``.

The middleware's keyword arguments come as JSON in ``MW_KWARGS``. The task
tool ``work(seconds)`` answers with the most tools this process ever ran at
once (so the client learns it from any answer); ``metrics()`` (a plain tool,
never a task) answers with the middleware's task metrics as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from datetime import timedelta

from fastmcp import FastMCP
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension

from mcp_backpressure import BackpressureMiddleware

for name in ("", "fastmcp", "mcp", "docket"):
    logging.getLogger(name).setLevel(logging.CRITICAL)

middleware = BackpressureMiddleware(**json.loads(os.environ.get("MW_KWARGS", '{"max_concurrent": 1}')))
mcp = FastMCP("tasks-stdio")
mcp.add_extension(TasksExtension(url="memory://"))
state = {"running": 0, "peak": 0}


@mcp.tool(task=TaskConfig(mode="optional", poll_interval=timedelta(milliseconds=100)))
async def work(seconds: float = 0.3) -> int:
    state["running"] += 1
    state["peak"] = max(state["peak"], state["running"])
    try:
        await asyncio.sleep(seconds)
    finally:
        state["running"] -= 1
    return state["peak"]


@mcp.tool
def metrics() -> str:
    return json.dumps(dataclasses.asdict(middleware.get_metrics()))


mcp.add_middleware(middleware)

if __name__ == "__main__":
    mcp.run(show_banner=False)
