"""Drives `simple_server --task-tool sleep` with FastMCP's own client and its
tasks extension (`fastmcp_tasks`), and checks that the server's limit covers
the work of background tasks, not only the `tools/call` that starts them.

Usage: fastmcp_tasks_client.py [--calls N] [--ms MS] [--deadline SECS] -- SERVER ARGS...
       fastmcp_tasks_client.py [--calls N] [--ms MS] [--deadline SECS] --url URL

(the server as a stdio child, or a Streamable HTTP server already running).

The server must run with `--max-concurrent 1 --queue-size 0`. Fires N task
calls at once (`fastmcp_tasks.call_tool_task`), retrying each call the server
refuses as overloaded, then drives every task to its end. Checks:

- every call ends, with `completed` and the tool's text;
- the server never worked on more than one task at once: each task's status
  message says how many were working when it started, itself included;
- some calls were refused while another task worked (the slot was held by the
  task, not freed when its handle was returned);
- one more call through the transparent `Client.call_tool` (which takes and
  polls the task itself) returns the tool's result.

Prints one JSON line with the counts, exits 0 on success, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import fastmcp_tasks  # noqa: F401  (turns on the client's task support)
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp_tasks import call_tool_task
from mcp.shared.exceptions import MCPError

#: The JSON-RPC code of mcp-backpressure's overload error.
OVERLOAD_CODE = -31429


def is_overload(error: BaseException) -> bool:
    if isinstance(error, MCPError):
        return error.error.code == OVERLOAD_CODE
    return "overload" in str(error).lower()


async def one_task(client: Client, index: int, ms: int, deadline: float, stats: dict) -> dict:
    """Starts one task (retrying refusals), then waits for its end."""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {index} was never admitted")
        try:
            handle = await call_tool_task(client, "sleep", {"ms": ms})
            break
        except Exception as error:  # noqa: BLE001
            if not is_overload(error):
                raise
            stats["refused"] += 1
            await asyncio.sleep(0.05)
    final = await handle.wait(timeout=max(1.0, deadline - time.monotonic()))
    result = await handle.result()
    message = final.status_message or ""
    match = re.search(r"(\d+) task\(s\) working", message)
    if match is None:
        raise AssertionError(f"task {handle.task_id}: no count in {message!r}")
    return {
        "task": handle.task_id,
        "status": final.status,
        "working": int(match.group(1)),
        "text": result.content[0].text if result.content else None,
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--ms", type=int, default=300)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--url", help="a Streamable HTTP server's URL")
    parser.add_argument("server", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    server = [a for a in args.server if a != "--"]
    if args.url:
        transport = args.url
    elif server:
        transport = StdioTransport(command=server[0], args=server[1:])
    else:
        parser.error("no server command and no --url")
    deadline = time.monotonic() + args.deadline
    stats = {"refused": 0}
    async with Client(transport) as client:
        calls = [one_task(client, i, args.ms, deadline, stats) for i in range(args.calls)]
        ended = await asyncio.wait_for(
            asyncio.gather(*calls), timeout=max(1.0, deadline - time.monotonic())
        )
        # The transparent path: the client takes the task and polls it itself.
        while True:
            try:
                plain = await client.call_tool("sleep", {"ms": 10})
                break
            except Exception as error:  # noqa: BLE001
                if not is_overload(error) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    report = {
        "calls": len(ended),
        "completed": sum(1 for t in ended if t["status"] == "completed"),
        "peak_working": max(t["working"] for t in ended),
        "refused": stats["refused"],
        "texts": sorted({t["text"] for t in ended}),
        "transparent": plain.content[0].text if plain.content else None,
    }
    print(json.dumps(report), flush=True)
    ok = (
        report["completed"] == args.calls
        and report["peak_working"] == 1
        and report["refused"] > 0
        and report["texts"] == [f"slept {args.ms} ms"]
        and report["transparent"] == "slept 10 ms"
    )
    if not ok:
        print(f"FAILED: {report}", file=sys.stderr, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
