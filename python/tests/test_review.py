"""Defects a fresh review found in the package. Each test asserts the
behaviour the package documents or the issue asks for, and failed before its
fix (the names say what is checked)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from mcp_backpressure import BackpressureMiddleware, OverloadError

FASTMCP_MAJOR = int(version("fastmcp").split(".")[0])
README = Path(__file__).resolve().parents[1] / "README.md"


def run_script(source: str, timeout: float = 60) -> dict:
    """Runs ``source`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 1. an event loop closed with a call waiting: the slot or place is never given back ---


def test_review_a_closed_loops_waiter_does_not_keep_a_handed_over_slot_forever() -> None:
    out = run_script("""
        import asyncio, gc, json, time
        from mcp_backpressure import BackpressureMiddleware
        mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=0.2)

        async def hold(_):
            await asyncio.sleep(3600)

        async def quick(_):
            return "ok"

        loop = asyncio.new_event_loop()
        holder = loop.create_task(mw({}, hold))
        waiter = loop.create_task(mw({}, quick))
        loop.run_until_complete(asyncio.sleep(0.01))   # holder runs, waiter queued
        loop.close()                                    # abandoned, not cancelled
        del holder, waiter
        for _ in range(3):
            gc.collect()
            time.sleep(0.3)                             # past the queue timeout

        async def later():
            try:
                return await mw({}, quick)
            except Exception as exc:
                return repr(exc)
        result = asyncio.run(later())
        m = mw.get_metrics()
        print(json.dumps({"result": result, "active": m.active, "handed_over": m.handed_over}))
    """)
    # Nothing runs any more: the next call must be admitted, and no slot held.
    assert out == {"result": "ok", "active": 0, "handed_over": 0}, out


def test_review_a_closed_loops_waiter_leaves_the_queue_by_its_timeout() -> None:
    out = run_script("""
        import asyncio, gc, json, time
        from mcp_backpressure import BackpressureMiddleware
        mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=0.2)

        async def quick(_):
            return "ok"

        l1 = asyncio.new_event_loop()
        async def make():
            return asyncio.Event()
        release = l1.run_until_complete(make())
        async def hold(_):
            await release.wait()
        holder = l1.create_task(mw({}, hold))          # l1 stays open
        l1.run_until_complete(asyncio.sleep(0.01))
        l2 = asyncio.new_event_loop()
        waiter = l2.create_task(mw({}, quick))
        l2.run_until_complete(asyncio.sleep(0.01))     # queued
        l2.close()
        del waiter
        gc.collect()
        time.sleep(0.6)                                # 3 x the queue timeout
        gc.collect()
        m = mw.get_metrics()
        print(json.dumps({"queued": m.queued}))
    """)
    assert out == {"queued": 0}, "the place is still taken long after queue_timeout"


# --- 2. adaptive limits never back off on a downstream overload under FastMCP ---


async def test_review_a_downstream_overload_through_a_fastmcp_tool_backs_the_limit_off() -> None:
    from fastmcp import Client, FastMCP

    mcp = FastMCP("review")

    @mcp.tool
    async def downstream() -> str:
        """A tool proxying a guarded server that answered 'overloaded'."""
        raise OverloadError("queue_full", 5, 5, code=-31429,
                            message="SERVER_OVERLOADED: queue_full, retry after 10 ms")

    mw = BackpressureMiddleware(10, limit="aimd", min_limit=1, overload_response="error")
    mcp.add_middleware(mw)
    async with Client(mcp) as client:
        for _ in range(3):
            try:
                await client.call_tool("downstream", {}, raise_on_error=False)
            except Exception:
                pass
    # README: "an MCP error raised through the middleware with an overload code
    # ... (a guarded server further down) makes the limit back off".
    assert mw.get_metrics().max_concurrent < 10


# --- 3. FastMCP 4.x calls check_resource_access on every middleware ---


async def test_review_skills_list_still_lists_skills_with_the_middleware(tmp_path: Path) -> None:
    pytest.importorskip("fastmcp.skills.provider")  # FastMCP 4.x only
    from fastmcp import Client, FastMCP
    from fastmcp.skills.models import ListSkillsResult
    from fastmcp.skills.provider import SkillsDirectoryProvider
    from mcp import types

    skill = tmp_path / "deploy"
    skill.mkdir()
    (skill / "SKILL.md").write_text("---\nname: deploy\ndescription: Deploys things.\n---\n# Deploy\n")
    mcp = FastMCP("review")
    mcp.add_provider(SkillsDirectoryProvider(tmp_path))
    mcp.add_middleware(BackpressureMiddleware(5))
    async with Client(mcp) as client:
        listed = await client.session.send_request(types.Request(method="skills/list", params={}),
                                                   ListSkillsResult)
    assert [s.uri for s in listed.skills] == ["skill://deploy/SKILL.md"]


# --- 4. the README quickstart writes to stdout on the stdio transport ---


def _quickstart() -> str:
    text = README.read_text()
    match = re.search(r"```python\n(# server\.py.*?)```", text, re.S)
    assert match, "the quickstart block"
    return match.group(1)


def test_review_readme_quickstart_keeps_the_stdio_stream_clean(tmp_path: Path) -> None:
    server = tmp_path / "server.py"
    server.write_text(_quickstart())
    messages = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "review", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ] + [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "report", "arguments": {"days": 5}}}
        for i in range(1, 18)  # 5 run, 10 wait, 2 are turned away
    ]
    process = subprocess.Popen([sys.executable, str(server)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdin and process.stdout
        process.stdin.write(json.dumps(messages[0]) + "\n")
        process.stdin.flush()
        first = process.stdout.readline()
        process.stdin.write("".join(json.dumps(m) + "\n" for m in messages[1:]))
        process.stdin.flush()
        lines, answered = [first], set()
        while len(answered) < 17:
            line = process.stdout.readline()
            assert line, "the server closed stdout"
            lines.append(line)
            try:
                answered.add(json.loads(line).get("id"))
            except json.JSONDecodeError:
                pass
        # End the session (stdin closed): what the server buffered comes out too.
        process.stdin.close()
        lines += process.stdout.read().splitlines(keepends=True)
        garbage = [line for line in lines if not line.startswith("{")]
        assert garbage == [], garbage
    finally:
        process.kill()
        process.wait(timeout=10)


# --- 5. 0.1.2 accepted an infinite queue timeout ---


def test_review_an_infinite_queue_timeout_is_accepted_as_in_0_1_2() -> None:
    mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=math.inf)
    assert mw.queue_timeout == math.inf
