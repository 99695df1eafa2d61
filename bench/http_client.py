"""One client of bench/http.sh: sequential `echo` calls, one at a time, in
one session; writes each measured call's latency (ms) to OUT as a JSON list.

    python http_client.py sdk URL CALLS WARMUP OUT
    python http_client.py raw URL CALLS WARMUP OUT

sdk: the official MCP Python client (PyPI `mcp`, Streamable HTTP). It ends
each call's response as soon as the result event arrived (and so opens a
new connection for the next call).
raw: Python's `http.client` on one kept-alive connection, every response
read to its end, the request sent in one write; Nagle on, as by default.

The WARMUP calls before the measured ones are not recorded.
"""
import asyncio
import http.client
import json
import sys
import time
import urllib.parse

VERSION = "2025-06-18"


async def sdk(url, calls, warmup):
    from mcp import Client

    latencies = []
    async with Client(url) as client:
        for i in range(warmup + calls):
            started = time.perf_counter_ns()
            result = await client.call_tool("echo", {"message": "hi"})
            if i >= warmup:
                latencies.append((time.perf_counter_ns() - started) / 1e6)
            if result.is_error or result.content[0].text != "hi":
                raise SystemExit("unexpected answer from %s: %r" % (url, result))
    return latencies


def raw(url, calls, warmup):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
    }

    def post(message):
        conn.request("POST", parts.path, json.dumps(message), headers)
        response = conn.getresponse()
        body = response.read()
        if response.status >= 300:
            raise SystemExit("HTTP %d from %s: %r" % (response.status, url, body))
        return response, body

    response, _ = post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {},
        "clientInfo": {"name": "bench-raw", "version": "0"}}})
    session = response.getheader("mcp-session-id")
    if session:
        headers["mcp-session-id"] = session
    headers["mcp-protocol-version"] = VERSION
    post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    latencies = []
    for i in range(warmup + calls):
        call = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "hi"}}}
        started = time.perf_counter_ns()
        _, body = post(call)
        if i >= warmup:
            latencies.append((time.perf_counter_ns() - started) / 1e6)
        if b'"text":"hi"' not in body.replace(b" ", b""):
            raise SystemExit("unexpected answer from %s: %r" % (url, body))
    conn.close()
    return latencies


if __name__ == "__main__":
    mode, url, calls, warmup, out = sys.argv[1:6]
    if mode == "sdk":
        latencies = asyncio.run(sdk(url, int(calls), int(warmup)))
    else:
        latencies = raw(url, int(calls), int(warmup))
    with open(out, "w") as file:
        json.dump(latencies, file)
