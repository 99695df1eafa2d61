"""End to end, a queued call whose client gives up.

- The client cancels it (``notifications/cancelled``, sent by the ``mcp`` 2.x
  client): FastMCP cancels the handler's task and the middleware frees the
  place at once, on stdio and Streamable HTTP, under both FastMCP lines.
- Its HTTP connection dies (the process is killed): in a stateful Streamable
  HTTP session neither FastMCP line cancels the handler (the MCP
  specification says a disconnection is not a cancellation), so the place is
  freed by the queue timeout, not before. Pinned here so that a FastMCP
  change shows up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from conftest import SERVER, SUPPORT, required_env
from support.mcp_compat import call, connect, read_json, read_text


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_client_cancel_frees_the_queue_place_at_once(transport: str, http_server: Any) -> None:
    kwargs = {"max_concurrent": 1, "queue_size": 4, "queue_timeout": 30}
    command = [required_env("MCP2_PYTHON"), str(SUPPORT / "cancel_client.py"), "--server-python", sys.executable]
    if transport == "http":
        command += ["--url", http_server(**kwargs).url]
    done = subprocess.run(command, env=dict(os.environ, MW_KWARGS=json.dumps(kwargs)),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"]["queued"] == 1
    after = out["after_cancel"]
    assert (after["queued"], after["cancelled_in_queue"], after["total_rejected"]) == (0, 1, 0), after
    assert out["freed_after_s"] < 5, "freed long before the 30 s queue timeout"
    final = out["final"]
    assert (final["active"], final["admitted"], final["completed"]) == (0, 1, 1)


async def metrics_until(session: Any, condition: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = await read_json(session, "metrics://now")
        if condition(metrics):
            return metrics
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {metrics}"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_an_http_client_that_dies_leaves_by_the_queue_timeout(http_server: Any) -> None:
    server = http_server(max_concurrent=1, queue_size=4, queue_timeout=2)
    async with connect(url=server.url) as session:
        held = asyncio.create_task(call(session, "hold", {"key": "a"}))
        await read_text(session, "entered://1")
        script = (
            "import asyncio, sys; sys.path.insert(0, sys.argv[2])\n"
            "from mcp_compat import connect, call\n"
            "async def main():\n"
            "    async with connect(url=sys.argv[1]) as s:\n"
            "        await call(s, 'echo', {'message': 'doomed'})\n"
            "asyncio.run(main())"
        )
        victim = subprocess.Popen([sys.executable, "-c", script, server.url, str(SUPPORT)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await metrics_until(session, lambda m: m["queued"] == 1, timeout=30)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        metrics = await metrics_until(session, lambda m: m["queued"] == 0, timeout=10)
        assert metrics["cancelled_in_queue"] + metrics["rejected_queue_timeout"] == 1
        await read_text(session, "release://a")
        await asyncio.wait_for(held, 10)
        metrics = await metrics_until(session, lambda m: m["active"] == 0 and m["queued"] == 0, timeout=10)
        assert metrics["admitted"] == metrics["completed"] == 1
