#!/usr/bin/env python3
"""The cost of tracking background tasks through the stdio proxy.

Drives `mcp-backpressure proxy -- python3 tasks_2025_server.py` (the proxy
tests' raw 2025-11-25 tasks upstream, standard library) with WINDOW calls in
flight, CALLS calls per run, three configurations interleaved round by
round:

  tracked   task tools (`params.task`, then `tasks/result`), tools/call guarded:
            every task's slot held until its tasks/result answers
  untracked the same task calls with tools/call not guarded (--guard
            resources/read): the proxy forwards, admits and tracks nothing
  plain     the same no-op tool run plainly (no task), guarded

Prints one JSON line per run and a summary of medians (calls/s, where a task
call is its tools/call and its tasks/result).

    python3 bench/tasks.py [--rounds 3] [--calls 2000] [--window 16]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "crates/mcp-backpressure-cli/tests/fixtures/tasks_2025_server.py")

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--calls", type=int, default=2000)
parser.add_argument("--window", type=int, default=16)
parser.add_argument("--proxy", default=os.path.join(ROOT, "target/release/mcp-backpressure"))
args = parser.parse_args()

LIMITS = ["--max-concurrent", "64", "--queue-size", "1024"]
CONFIGS = {
    "tracked": (LIMITS, True),
    "untracked": (LIMITS + ["--guard", "resources/read"], True),
    "plain": (LIMITS, False),
}


def run(name):
    proxy_args, as_task = CONFIGS[name]
    child = subprocess.Popen(
        [args.proxy, "proxy", *proxy_args, "--", sys.executable, FIXTURE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "error"},
    )
    out, inp = child.stdout, child.stdin

    def send(message):
        inp.write((json.dumps(message) + "\n").encode())
        inp.flush()

    def read():
        return json.loads(out.readline())

    send({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"}}})
    read()
    params = {"name": "work", "arguments": {"ms": 0}}
    if as_task:
        params["task"] = {"ttl": 60000}
    sent = done = 0
    start = time.perf_counter()

    def call():
        nonlocal sent
        sent += 1
        send({"jsonrpc": "2.0", "id": sent, "method": "tools/call", "params": params})

    for _ in range(min(args.window, args.calls)):
        call()
    while done < args.calls:
        message = read()
        if "error" in message:
            raise SystemExit(f"{name}: {message}")
        result = message.get("result", {})
        if "task" in result:
            # The handle: ask for the end (blocks until the task is over).
            send({"jsonrpc": "2.0", "id": f"r{message['id']}", "method": "tasks/result",
                  "params": {"taskId": result["task"]["taskId"]}})
            continue
        done += 1
        if sent < args.calls:
            call()
    elapsed = time.perf_counter() - start
    inp.close()
    child.wait(timeout=10)
    return args.calls / elapsed


results = {name: [] for name in CONFIGS}
for round_ in range(args.rounds):
    for name in CONFIGS:
        rate = run(name)
        results[name].append(rate)
        print(json.dumps({"round": round_, "config": name, "calls_per_s": round(rate, 1)}),
              flush=True)
medians = {name: statistics.median(rates) for name, rates in results.items()}
print(json.dumps({
    "medians_calls_per_s": {k: round(v, 1) for k, v in medians.items()},
    "tracked_vs_untracked": round(medians["tracked"] / medians["untracked"], 3),
    "tracked_vs_plain": round(medians["tracked"] / medians["plain"], 3),
}), flush=True)
