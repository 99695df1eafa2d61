"""A queued call cancelled by its client (``notifications/cancelled``), driven
by the official Python client; prints JSON.

    cancel_client.py --server-python PY [--url URL]

Needs ``mcp`` 2.x: the 1.x client does not tell the server when a call is
cancelled. The server runs with max_concurrent=1, queue_size=4,
queue_timeout=30 (``MW_KWARGS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mcp_compat import call, connect, read_json, read_text  # noqa: E402


async def metrics_until(session, condition, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        metrics = await read_json(session, "metrics://now")
        if condition(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.02)


async def scenario(args: argparse.Namespace) -> dict:
    server = str(Path(__file__).with_name("server.py"))
    target = {"url": args.url} if args.url else {"command": [args.server_python, server], "env": dict(os.environ)}
    async with connect(**target) as session:
        held = asyncio.create_task(call(session, "hold", {"key": "a"}))
        await read_text(session, "entered://1")
        queued = asyncio.create_task(call(session, "echo", {"message": "queued"}))
        before = await metrics_until(session, lambda m: m["queued"] == 1)
        queued.cancel()
        try:
            await queued
        except asyncio.CancelledError:
            pass
        started = time.monotonic()
        after_cancel = await metrics_until(session, lambda m: m["queued"] == 0)
        freed_after = time.monotonic() - started
        await read_text(session, "release://a")
        released = await asyncio.wait_for(held, 10)
        final = await metrics_until(session, lambda m: m["active"] == 0)
        return {"before": before, "after_cancel": after_cancel, "freed_after_s": freed_after,
                "released": released, "final": final}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--url")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(asyncio.wait_for(scenario(args), 60))))


if __name__ == "__main__":
    main()
