"""A FastMCP tasks server on a Redis Docket, for ``tests/test_tasks.py``.

Run as a script, it is a *worker process*: it enters the server's lifespan
(the tasks extension starts a Docket worker on ``BP_REDIS_URL``, Docket
``BP_DOCKET_NAME``), prints ``ready`` and runs tasks until killed. Imported,
``build(middleware)`` gives the MCP server the test talks to, which enqueues
tasks on the same Docket but runs none itself: every task runs in a worker
process, as in a deployment with separate workers.

The tools record in Redis (atomically, whichever process runs them) how many
run at once, the most ever, and the pids that ran them; ``gated`` waits until
the test pushes to its gate list.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from fastmcp import FastMCP
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension

REDIS_URL = os.environ["BP_REDIS_URL"]
NAME = os.environ["BP_DOCKET_NAME"]
RUNNING, PEAK, PIDS, FINISHED, GATE = (f"{NAME}:probe:{k}" for k in ("running", "peak", "pids", "finished", "gate"))

_ENTER = """
local c = redis.call('INCR', KEYS[1])
if c > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], c) end
redis.call('SADD', KEYS[3], ARGV[1])
return c
"""


class SubmitOnlyTasks(TasksExtension):
    """The tasks extension without a worker of its own: ``tools/call`` enqueues
    on the Redis Docket and ``tasks/*`` read it; worker processes run the work."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncGenerator[None, None]:
        from docket import Docket

        from fastmcp_tasks.components import register_component_with_docket
        from fastmcp_tasks.dependencies import _current_docket
        from fastmcp_tasks.extension import _install_worker_hooks, _release_worker_hooks

        server = self.server
        settings = self.docket_settings
        _install_worker_hooks()  # also the wire production of task handles
        try:
            async with Docket(name=settings.name, url=settings.url) as docket:
                server._docket = docket
                for component in await server.get_tasks():
                    if component.task_config.supports_tasks():
                        register_component_with_docket(component, docket)
                token = _current_docket.set(docket)
                try:
                    yield
                finally:
                    _current_docket.reset(token)
                    server._docket = None
        finally:
            _release_worker_hooks()


def build(middleware: Any = None, *, worker: bool = False) -> FastMCP:
    mcp = FastMCP("redis-tasks")
    extension = TasksExtension if worker else SubmitOnlyTasks
    mcp.add_extension(extension(url=REDIS_URL, name=NAME, concurrency=10))
    config = TaskConfig(mode="optional", poll_interval=timedelta(milliseconds=100))
    probe = aioredis.from_url(REDIS_URL)

    @mcp.tool(task=config)
    async def work(seconds: float = 0.3) -> str:
        await probe.eval(_ENTER, 3, RUNNING, PEAK, PIDS, str(os.getpid()))
        try:
            await asyncio.sleep(seconds)
        finally:
            await probe.decr(RUNNING)
            await probe.incr(FINISHED)
        return "worked"

    @mcp.tool(task=config)
    async def gated() -> str:
        await probe.eval(_ENTER, 3, RUNNING, PEAK, PIDS, str(os.getpid()))
        try:
            await probe.blpop([GATE], timeout=60)
        finally:
            await probe.decr(RUNNING)
            await probe.incr(FINISHED)
        return "opened"

    if middleware is not None:
        mcp.add_middleware(middleware)
    return mcp


async def _serve_as_worker() -> None:
    mcp = build(worker=True)
    async with mcp._lifespan_manager():
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(_serve_as_worker())
    except KeyboardInterrupt:
        sys.exit(0)
