"""The overload scenario, driven by the official Python client; prints JSON.

    py_client.py --server-python PY [--url URL]

With ``--url``, talks Streamable HTTP to a running server; otherwise starts
``PY tests/support/server.py`` over stdio (``MW_KWARGS`` is passed through).
One ``hold`` fills the single slot; then a second call is rejected, ``ping``,
``tools/list`` and ``resources/read`` still pass; the held call is released.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mcp_compat import call, connect, read_json, read_text  # noqa: E402


async def scenario(args: argparse.Namespace) -> dict:
    server = str(Path(__file__).with_name("server.py"))
    target = (
        {"url": args.url}
        if args.url
        else {"command": [args.server_python, server], "env": dict(os.environ)}
    )
    async with connect(**target) as session:
        held = asyncio.create_task(call(session, "hold", {"key": "a"}))
        await read_text(session, "entered://1")
        overload = await call(session, "echo", {"message": "hi"})
        await session.send_ping()
        tools = await session.list_tools()
        metrics_full = await read_json(session, "metrics://now")
        await read_text(session, "release://a")
        released = await asyncio.wait_for(held, 10)
        own_timeout = await call(session, "boom_timeout", {})
        return {
            "overload": overload,
            "ping": True,
            "tools": sorted(tool.name for tool in tools.tools),
            "metrics_full": metrics_full,
            "released": released,
            "own_timeout": own_timeout,
            "overloads_seen": await read_json(session, "overloads://seen"),
            "metrics_after": await read_json(session, "metrics://now"),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--url")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(asyncio.wait_for(scenario(args), 60))))


if __name__ == "__main__":
    main()
