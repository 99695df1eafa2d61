"""The benchmarks' demo server in Python: FastMCP with the same three tools as
examples/simple_server.rs (`sleep {"ms": int}`, `echo {"message": str}`,
`db {"ms": int}`), guarded by the `mcp-backpressure` package's
BackpressureMiddleware unless `--bare` is given. Same command line as
simple_server:

    server.py [--transport stdio|http] [--bind 127.0.0.1:8000]
              [--max-concurrent 5] [--queue-size 10] [--queue-timeout 30] [--bare]
              [--db-capacity 8] [--db-capacity-after SECS=C2]

`db` models a database: with n `db` calls running at once (counted when a call
starts, itself included) and capacity C, a call takes `ms * max(1, n / C)`;
from SECS seconds after the start, C becomes C2 when --db-capacity-after is
given.

Over HTTP it serves Streamable HTTP at /mcp.
"""

import argparse
import asyncio
import logging
import time

from fastmcp import FastMCP


def capacity_change(text: str) -> tuple[float, int]:
    """`SECS=C2` -> (SECS, C2)."""
    secs, sep, capacity = text.partition("=")
    try:
        after, cap = float(secs), int(capacity)
    except ValueError:
        after, cap = -1.0, 0
    if not sep or not after >= 0 or cap < 1:
        raise argparse.ArgumentTypeError(f"expected SECS=C2 (SECS >= 0, C2 >= 1), got {text!r}")
    return after, cap


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--bind", default="127.0.0.1:8000")
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--queue-size", type=int, default=10)
    parser.add_argument("--queue-timeout", type=float, default=30.0)
    parser.add_argument("--bare", action="store_true", help="no backpressure middleware")
    parser.add_argument("--db-capacity", type=positive, default=8, metavar="C",
                        help="`db` calls that run at once at their base time")
    parser.add_argument("--db-capacity-after", type=capacity_change, metavar="SECS=C2",
                        help="from SECS seconds after the start, the `db` capacity becomes C2")
    args = parser.parse_args()
    started = time.monotonic()
    running = 0

    mcp = FastMCP("mcp-backpressure-bench-python")
    # FastMCP logs every rejected call with its traceback; that is logging,
    # not the limiter's cost (the Rust servers run with RUST_LOG=error too).
    for name in ("", "fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    @mcp.tool
    async def sleep(ms: int) -> str:
        """Sleep for `ms` milliseconds, then say so."""
        await asyncio.sleep(ms / 1000)
        return f"slept {ms} ms"

    @mcp.tool
    async def echo(message: str) -> str:
        """Return `message` unchanged."""
        return message

    @mcp.tool
    async def db(ms: int) -> str:
        """A database query of base time `ms` milliseconds: with n `db` calls
        running at once and capacity C, it takes `ms * max(1, n / C)`."""
        nonlocal running
        running += 1
        try:
            capacity = args.db_capacity
            change = args.db_capacity_after
            if change is not None and time.monotonic() - started >= change[0]:
                capacity = change[1]
            taken = ms * max(1.0, running / capacity)
            await asyncio.sleep(taken / 1000)
            return f"done in {round(taken)} ms"
        finally:
            running -= 1

    if not args.bare:
        from mcp_backpressure import BackpressureMiddleware

        mcp.add_middleware(
            BackpressureMiddleware(
                max_concurrent=args.max_concurrent,
                queue_size=args.queue_size,
                queue_timeout=args.queue_timeout,
            )
        )

    if args.transport == "stdio":
        mcp.run(transport="stdio", show_banner=False)
    else:
        host, port = args.bind.rsplit(":", 1)
        mcp.run(transport="http", host=host, port=int(port), path="/mcp", show_banner=False, log_level="error")


if __name__ == "__main__":
    main()
