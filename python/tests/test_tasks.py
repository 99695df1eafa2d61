"""Background tasks (SEP-2663, ``io.modelcontextprotocol/tasks``): a
``tools/call`` answered with a task handle keeps its slot until the task
ends, against a real FastMCP tasks server (``fastmcp[tasks]``: the
``TasksExtension`` on Docket) and FastMCP's own client (``import
fastmcp_tasks`` makes ``Client.call_tool`` take and poll tasks).

The server runs in-process with the in-memory Docket (``memory://``), whose
worker runs the tasks on the test's event loop, and with a Redis Docket whose
workers run in two other processes (a redis-server on a free loopback port).
Every wait has a deadline; the tools wait on events, not on the clock.

Skipped on venvs without ``fastmcp_tasks``, unless ``MCP_BP_TASKS=1``
(``scripts/test-python.sh`` sets it in its tasks venv, where a missing
package must fail the run: ``MCP_BP_REQUIRE_ALL`` alone does not require
them, since the FastMCP 4.2.3 and 2.14.7 venvs have no tasks extra).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import eventually, redis_server
from mcp_backpressure import BackpressureMiddleware, _core

if os.environ.get("MCP_BP_TASKS") == "1":
    import fastmcp_tasks  # noqa: F401 - required here: a missing package fails
else:
    pytest.importorskip("fastmcp_tasks", reason="fastmcp[tasks] is not installed in this venv")

from fastmcp import Client, FastMCP  # noqa: E402
from fastmcp.utilities.tasks import TaskConfig  # noqa: E402
from fastmcp_tasks import TasksExtension, call_tool_task  # noqa: E402

pytestmark = pytest.mark.asyncio

SUPPORT = Path(__file__).parent / "support"
POLL = timedelta(milliseconds=100)
"""The tools' poll interval: the client polls at most this far apart."""


class Probe:
    """What the tools record: how many run at once, the most ever, and an
    event per start; ``gate`` holds the ``gated`` tool until opened."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.finished = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    def enter(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.set()

    def leave(self) -> None:
        self.running -= 1
        self.finished += 1


def tasks_server(probe: Probe, mw: BackpressureMiddleware, *, task: Any = None) -> FastMCP:
    mcp = FastMCP("tasks")
    mcp.add_extension(TasksExtension(url="memory://", name=f"bp-{uuid.uuid4().hex}"))
    config = task if task is not None else TaskConfig(mode="optional", poll_interval=POLL)

    @mcp.tool(task=config)
    async def work(seconds: float = 0.3) -> str:
        probe.enter()
        try:
            await asyncio.sleep(seconds)
        finally:
            probe.leave()
        return "worked"

    @mcp.tool(task=config)
    async def gated() -> str:
        probe.enter()
        try:
            await probe.gate.wait()
        finally:
            probe.leave()
        return "opened"

    mcp.add_middleware(mw)
    return mcp


def overload_code(exc: BaseException) -> int | None:
    """The JSON-RPC code of an error the client raised, wherever it sits."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        error = getattr(current, "error", None)
        code = getattr(error, "code", getattr(current, "code", None))
        if isinstance(code, int):
            return code
        current = current.__cause__ or current.__context__
        seen += 1
    return None


async def test_six_tasks_never_run_more_than_the_limit_and_all_complete() -> None:
    mw = BackpressureMiddleware(max_concurrent=2, queue_size=10)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.call_tool("work", {"seconds": 0.3}) for _ in range(6))), 30
        )
    assert [r.data for r in results] == ["worked"] * 6
    assert probe.finished == 6
    assert probe.peak == 2, f"ran {probe.peak} at once"
    metrics = mw.get_metrics()
    assert metrics.task_holds_created == 6
    assert metrics.task_holds == 0 and metrics.task_hold_slots == 0
    assert sum(metrics.task_holds_ended.values()) == 6
    assert metrics.task_holds_ended["terminal"] == 6
    assert metrics.active == 0 and metrics.queued == 0
    assert metrics.admitted == metrics.completed == 6
    assert metrics.total_rejected == 0


async def test_a_task_keeps_its_slot_a_second_call_is_refused() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        first = await call_tool_task(client, "gated")
        await asyncio.wait_for(probe.started.wait(), 10)
        # The first call was answered (a task handle): only the hold keeps the slot.
        metrics = mw.get_metrics()
        assert (metrics.active, metrics.task_holds, metrics.task_hold_slots) == (1, 1, 1)
        with pytest.raises(Exception) as refused:
            await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 10)
        assert overload_code(refused.value) == mw.overload_error_code, repr(refused.value)
        assert "concurrency_limit" in str(refused.value)
        assert mw.get_metrics().rejected_concurrency_limit == 1
        assert probe.peak == 1
        # The task ends: the client's poll sees `completed`, the slot is free.
        probe.gate.set()
        assert (await asyncio.wait_for(first.result(), 10)).data == "opened"
        assert mw.get_metrics().active == 0
        assert (await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 10)).data == "worked"
    assert mw.get_metrics().task_holds_ended["terminal"] == 2


async def test_cancelling_a_task_frees_its_slot() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        task = await call_tool_task(client, "gated")
        await asyncio.wait_for(probe.started.wait(), 10)
        assert mw.get_metrics().task_holds == 1
        await asyncio.wait_for(task.cancel(), 10)
        metrics = mw.get_metrics()
        assert metrics.task_holds == 0 and metrics.active == 0
        assert metrics.task_holds_ended["cancel"] == 1
        assert (await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 10)).data == "worked"
        assert (await asyncio.wait_for(task.status(), 10)).status == "cancelled"
    ended = mw.get_metrics().task_holds_ended
    assert (ended["cancel"], ended["terminal"]) == (1, 1)


async def test_ttl_expiry_frees_the_slot() -> None:
    # The server's TTL is Docket's (15 min); task_ttl caps the hold.
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0, task_ttl=0.2)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        await call_tool_task(client, "gated")  # nobody polls it
        await asyncio.wait_for(probe.started.wait(), 10)
        assert mw.get_metrics().task_holds == 1
        await eventually(lambda: mw.get_metrics().task_holds == 0, seconds=10)
        metrics = mw.get_metrics()
        assert metrics.task_holds_ended["ttl"] == 1 and metrics.active == 0
        assert (await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 10)).data == "worked"
        probe.gate.set()


async def test_a_task_nobody_polls_is_ended_by_the_own_poll() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        await call_tool_task(client, "work", {"seconds": 0.05})  # never polled by the client
        await eventually(lambda: probe.finished == 1, seconds=10)
        # The middleware asks the server itself, one poll interval after the
        # task was last known alive.
        await eventually(lambda: mw.get_metrics().task_holds == 0, seconds=10)
        ended = mw.get_metrics().task_holds_ended
        assert ended["own_poll"] == 1 and mw.get_metrics().active == 0


async def test_a_task_the_server_no_longer_knows_frees_its_slot() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    mcp = tasks_server(probe, mw)
    async with Client(mcp) as client:
        task = await call_tool_task(client, "gated")
        await asyncio.wait_for(probe.started.wait(), 10)
        # The backend loses the task (its metadata expired, Redis was flushed).
        async with mcp._docket.redis() as redis:
            keys = await redis.keys(f"*{task.task_id}*")
            assert keys
            await redis.delete(*keys)
        with pytest.raises(Exception, match="not found"):
            await asyncio.wait_for(task.status(), 10)
        metrics = mw.get_metrics()
        assert metrics.task_holds_ended["unknown_task"] == 1
        assert metrics.task_holds == 0 and metrics.active == 0
        probe.gate.set()


async def test_a_stopped_task_backend_frees_the_slots() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    async with Client(tasks_server(probe, mw)) as client:
        await call_tool_task(client, "gated")
        await asyncio.wait_for(probe.started.wait(), 10)
    # The server's lifespan ended (its Docket is gone) with the task held.
    await eventually(lambda: mw.get_metrics().task_holds == 0, seconds=10)
    metrics = mw.get_metrics()
    assert metrics.task_holds_ended["closed"] == 1 and metrics.active == 0


async def test_task_true_holds_too_and_a_foreground_call_does_not() -> None:
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = Probe()
    mcp = tasks_server(probe, mw, task=True)

    @mcp.tool
    async def plain() -> str:
        return "plain"

    async with Client(mcp) as client:
        assert (await asyncio.wait_for(client.call_tool("plain"), 10)).data == "plain"
        assert mw.get_metrics().task_holds_created == 0
        task = await call_tool_task(client, "gated")
        await asyncio.wait_for(probe.started.wait(), 10)
        assert mw.get_metrics().task_holds == 1
        with pytest.raises(Exception) as refused:
            await asyncio.wait_for(client.call_tool("plain"), 10)
        assert overload_code(refused.value) == mw.overload_error_code
        probe.gate.set()
        assert (await asyncio.wait_for(task.result(), 30)).data == "opened"
        assert mw.get_metrics().task_holds == 0


async def test_over_stdio_six_tasks_run_two_at_a_time() -> None:
    """The same over a real transport: the server in its own process, the
    JSON-RPC answers (task handles, ``tasks/get``) on the wire."""
    import json

    from fastmcp.client.transports import StdioTransport

    transport = StdioTransport(
        command=sys.executable,
        args=[str(SUPPORT / "tasks_stdio_server.py")],
        env=dict(os.environ, MW_KWARGS=json.dumps({"max_concurrent": 2, "queue_size": 10})),
    )
    async with Client(transport) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.call_tool("work", {"seconds": 0.3}) for _ in range(6))), 60
        )
        peaks = [r.data for r in results]
        metrics = json.loads((await asyncio.wait_for(client.call_tool("metrics"), 10)).data)
    assert max(peaks) == 2, peaks
    assert metrics["task_holds_created"] == 6 and metrics["task_holds"] == 0
    assert metrics["active"] == 1, "only the metrics call itself"
    assert metrics["total_rejected"] == 0


# --- the core's table through PyO3 ------------------------------------------------


async def test_task_holds_end_once_by_cause() -> None:
    limiter = _core.Limiter(2)
    holds = _core.TaskHolds(10)

    def permit() -> Any:
        answer = limiter.acquire().poll()
        assert isinstance(answer, _core.Permit)
        return answer

    a, b = permit(), permit()
    assert holds.hold("s", "a", a, None, 1.0) == "new"
    assert not a.held  # the hold has it now
    a.release()  # does nothing
    assert limiter.snapshot()["active"] == 2
    assert holds.hold("s", "b", b, None, 1.0) == "new"
    assert isinstance(limiter.acquire().poll(), dict)  # both slots held
    assert holds.end("s", "a", "terminal", "success")
    assert not holds.end("s", "a", "cancel")  # once
    assert holds.end_scope("s") == ["b"]
    assert limiter.snapshot()["active"] == 0
    snap = holds.snapshot()
    assert (snap["held"], snap["slots"], snap["created"]) == (0, 0, 2)
    assert snap["ended"] == {
        "terminal": 1, "cancel": 0, "ttl": 0, "own_poll": 0, "unknown_task": 0, "cap": 0, "closed": 1,
    }
    assert _core.TaskHolds.causes() == list(snap["ended"])
    with pytest.raises(ValueError, match="unknown cause"):
        holds.end("s", "a", "finished")
    c = permit()
    holds.hold("s", "c", c)
    with pytest.raises(ValueError, match="already released"):
        holds.hold("s", "d", c)


async def test_task_holds_ttl_runs_on_the_core_timer() -> None:
    limiter = _core.Limiter(1)
    holds = _core.TaskHolds()
    holds.hold("", "t", limiter.acquire().poll(), 0.05, None)
    await eventually(lambda: len(holds) == 0, seconds=5)
    assert holds.snapshot()["ended"]["ttl"] == 1
    assert limiter.snapshot()["active"] == 0


async def test_task_holds_cap_ends_the_stalest() -> None:
    limiter = _core.Limiter(3)
    holds = _core.TaskHolds(2)
    for task_id in ("a", "b"):
        holds.hold("", task_id, limiter.acquire().poll())
    holds.seen("", "a")
    assert holds.hold("", "c", limiter.acquire().poll()) == "evicted"
    assert not holds.contains("", "b") and holds.contains("", "a")
    assert holds.snapshot()["ended"]["cap"] == 1
    assert limiter.snapshot()["active"] == 2


async def test_a_continuation_is_admitted_as_one() -> None:
    """A ``tools/call`` retried with the answers of an ``InputRequiredResult``
    (SEP-2322: ``inputResponses``, ``requestState``) reaches the core as
    ``Request::continuation()``; a first call does not."""
    from fastmcp.server.middleware import MiddlewareContext
    from mcp_types import CallToolRequestParams

    from mcp_backpressure.middleware import _is_continuation

    class Spy:
        def __init__(self, limiter: Any) -> None:
            self.limiter = limiter
            self.calls: list[tuple[Any, ...]] = []

        def acquire(self, *args: Any) -> Any:
            self.calls.append(args)
            return self.limiter.acquire(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.limiter, name)

    mw = BackpressureMiddleware(1)
    spy = Spy(mw._limiter)
    mw._limiter = spy

    async def tool(_context: Any) -> str:
        return "ok"

    messages = [
        CallToolRequestParams(name="t", arguments={}),
        CallToolRequestParams(name="t", arguments={}, input_responses={"confirm": {"action": "accept"}}),
        CallToolRequestParams(name="t", arguments={}, request_state="opaque"),
    ]
    for message in messages:
        assert await mw(MiddlewareContext(message=message, method="tools/call"), tool) == "ok"
    assert [call[2] for call in spy.calls] == [False, True, True]
    assert mw.get_metrics().completed == 3
    assert _is_continuation({"inputResponses": {}}) and not _is_continuation({"name": "t"})


async def test_with_no_queue_a_continuation_waits_for_the_slot_and_goes_first() -> None:
    """Behind ``queue_size=0`` an ordinary call is refused while the slot is
    taken, but the retry that brings a person's answer waits at the head of
    the queue and runs as soon as the slot frees."""
    from fastmcp.server.middleware import MiddlewareContext
    from mcp_types import CallToolRequestParams

    mw = BackpressureMiddleware(1, queue_size=0, queue_timeout=30.0)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(_context: Any) -> str:
        started.set()
        await release.wait()
        return "slow"

    async def quick(_context: Any) -> str:
        return "quick"

    def context(**extra: Any) -> Any:
        return MiddlewareContext(
            message=CallToolRequestParams(name="t", arguments={}, **extra), method="tools/call"
        )

    occupant = asyncio.create_task(mw(context(), slow))
    await asyncio.wait_for(started.wait(), 10)
    with pytest.raises(Exception) as refused:
        await mw(context(), quick)
    assert "concurrency_limit" in str(refused.value)
    retry = asyncio.create_task(mw(context(request_state="opaque"), quick))
    async def waiting() -> bool:
        return mw.get_metrics().continuations_waiting == 1
    for _ in range(1000):
        if await waiting():
            break
        await asyncio.sleep(0.001)
    assert await waiting()
    release.set()
    assert await asyncio.wait_for(occupant, 10) == "slow"
    assert await asyncio.wait_for(retry, 10) == "quick"
    metrics = mw.get_metrics()
    assert (metrics.continuations_ahead, metrics.continuations_waiting) == (1, 0)


# --- a Redis Docket whose workers run in other processes ---------------------------


class RedisWorkers:
    """Two worker processes of ``support/tasks_server.py`` on one Redis Docket,
    and the submit-only server module the test's in-process MCP server uses."""

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.name = f"bp-{uuid.uuid4().hex[:12]}"
        self.env = dict(os.environ, BP_REDIS_URL=redis_url, BP_DOCKET_NAME=self.name)
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, str(SUPPORT / "tasks_server.py")],
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        deadline = time.monotonic() + 60
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()  # "ready", or "" if it died
            assert line.strip() == "ready", f"worker {process.pid} did not start"
            assert time.monotonic() < deadline

    def module(self) -> Any:
        import importlib

        saved = {k: os.environ.get(k) for k in ("BP_REDIS_URL", "BP_DOCKET_NAME")}
        os.environ.update(BP_REDIS_URL=self.url, BP_DOCKET_NAME=self.name)
        sys.path.insert(0, str(SUPPORT))
        try:
            sys.modules.pop("tasks_server", None)
            return importlib.import_module("tasks_server")
        finally:
            sys.path.remove(str(SUPPORT))
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()


@pytest.fixture(scope="module")
def redis_workers_once() -> Iterator[RedisWorkers]:
    """Started once for the module (a worker process takes seconds to import
    FastMCP); each test gets fresh probe keys."""
    with redis_server() as url:
        workers = RedisWorkers(url)
        try:
            workers.start(2)
            yield workers
        finally:
            workers.close()


@pytest.fixture
def redis_workers(redis_workers_once: RedisWorkers) -> RedisWorkers:
    import redis

    client = redis.Redis.from_url(redis_workers_once.url)
    try:
        keys = client.keys(f"{redis_workers_once.name}:probe:*")
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    return redis_workers_once


async def test_redis_workers_in_other_processes_never_run_more_than_the_limit(
    redis_workers: RedisWorkers,
) -> None:
    import redis.asyncio as aioredis

    support = redis_workers.module()
    mw = BackpressureMiddleware(max_concurrent=2, queue_size=10)
    probe = aioredis.from_url(redis_workers.url)
    try:
        async with Client(support.build(mw)) as client:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.call_tool("work", {"seconds": 0.3}) for _ in range(6))), 60
            )
        assert [r.data for r in results] == ["worked"] * 6
        assert int(await probe.get(support.FINISHED)) == 6
        assert int(await probe.get(support.PEAK)) == 2
        pids = {int(p) for p in await probe.smembers(support.PIDS)}
        assert pids and os.getpid() not in pids  # all ran in the worker processes
        assert pids <= {p.pid for p in redis_workers.processes}
        metrics = mw.get_metrics()
        assert metrics.task_holds_created == 6 and metrics.task_holds == 0 and metrics.active == 0
        ended = metrics.task_holds_ended
        assert ended["terminal"] + ended["own_poll"] == 6, ended
    finally:
        await probe.aclose()


async def test_redis_workers_a_held_slot_refuses_then_frees_on_completion(
    redis_workers: RedisWorkers,
) -> None:
    import redis.asyncio as aioredis

    support = redis_workers.module()
    mw = BackpressureMiddleware(max_concurrent=1, queue_size=0)
    probe = aioredis.from_url(redis_workers.url)
    try:
        async with Client(support.build(mw)) as client:
            task = await call_tool_task(client, "gated")
            await eventually(lambda: mw.get_metrics().task_holds == 1, seconds=10)
            with pytest.raises(Exception) as refused:
                await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 10)
            assert overload_code(refused.value) == mw.overload_error_code
            await probe.rpush(support.GATE, "open")
            assert (await asyncio.wait_for(task.result(), 30)).data == "opened"
            assert mw.get_metrics().active == 0
            assert (await asyncio.wait_for(client.call_tool("work", {"seconds": 0.01}), 30)).data == "worked"
        assert int(await probe.get(support.PEAK)) == 1
    finally:
        await probe.aclose()
