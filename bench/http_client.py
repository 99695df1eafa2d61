"""One client of bench/http.sh: the official MCP Python client (PyPI `mcp`,
Streamable HTTP) making sequential `echo` calls, one at a time, in one
session; writes each measured call's latency (ms) to OUT as a JSON list.

    python http_client.py URL CALLS WARMUP OUT

The WARMUP calls before the measured ones are not recorded.
"""
import asyncio
import json
import sys
import time

from mcp import Client


async def main(url, calls, warmup, out):
    latencies = []
    async with Client(url) as client:
        for _ in range(warmup):
            await client.call_tool("echo", {"message": "hi"})
        for _ in range(calls):
            started = time.perf_counter_ns()
            result = await client.call_tool("echo", {"message": "hi"})
            latencies.append((time.perf_counter_ns() - started) / 1e6)
            if result.is_error or result.content[0].text != "hi":
                raise SystemExit("unexpected answer from %s: %r" % (url, result))
    with open(out, "w") as file:
        json.dump(latencies, file)


if __name__ == "__main__":
    url, calls, warmup, out = sys.argv[1:5]
    asyncio.run(main(url, int(calls), int(warmup), out))
