"""The benchmarks' demo server in Python: FastMCP with the same two tools as
examples/simple_server.rs (`sleep {"ms": int}`, `echo {"message": str}`),
guarded by the `mcp-backpressure` package's BackpressureMiddleware unless
`--bare` is given. Same command line as simple_server:

    server.py [--transport stdio|http] [--bind 127.0.0.1:8000]
              [--max-concurrent 5] [--queue-size 10] [--queue-timeout 30] [--bare]

Over HTTP it serves Streamable HTTP at /mcp.
"""

import argparse
import asyncio
import logging

from fastmcp import FastMCP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--bind", default="127.0.0.1:8000")
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--queue-size", type=int, default=10)
    parser.add_argument("--queue-timeout", type=float, default=30.0)
    parser.add_argument("--bare", action="store_true", help="no backpressure middleware")
    args = parser.parse_args()

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
