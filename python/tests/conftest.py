"""Shared helpers of the package's own tests.

Every test is bounded (pytest-timeout is not assumed: each wait here has its
own deadline), starts servers on 127.0.0.1 only, and kills what it starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

SUPPORT = Path(__file__).parent / "support"
SERVER = SUPPORT / "server.py"


def context(method: str = "tools/call", tool: str = "echo", **extra: Any) -> Any:
    """A FastMCP ``MiddlewareContext`` for ``method`` (and ``tool`` for tools/call)."""
    from fastmcp.server.middleware import MiddlewareContext

    message = SimpleNamespace(name=tool, arguments={})
    ctx = MiddlewareContext(message=message, method=method)
    for key, value in extra.items():
        object.__setattr__(ctx, key, value)
    return ctx


async def until(condition: Callable[[], bool], *, turns: int = 200) -> None:
    """Lets the event loop run until ``condition()`` holds, at most ``turns``
    loop iterations (no wall-clock sleeps: asyncio steps are deterministic)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class Gate:
    """A tool body that waits until opened; counts who entered."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = 0

    async def __call__(self, _context: Any = None) -> str:
        self.entered += 1
        await self.opened.wait()
        return "done"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpServer:
    """``server.py`` over Streamable HTTP on 127.0.0.1, killed on exit."""

    def __init__(self, python: str, mw_kwargs: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        env = dict(os.environ, MW_KWARGS=json.dumps(mw_kwargs))
        self.process = subprocess.Popen(
            [python, str(SERVER), "--transport", "http", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("server did not listen within 30 s") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture
def http_server() -> Iterator[Callable[..., HttpServer]]:
    started: list[HttpServer] = []

    def start(python: str = sys.executable, **mw_kwargs: Any) -> HttpServer:
        server = HttpServer(python, mw_kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def required_env(name: str) -> str:
    """An external tool's path from the environment (``scripts/test-python.sh``
    sets them all). Unset: the test is skipped, unless ``MCP_BP_REQUIRE_ALL=1``
    (as the script sets), where it fails."""
    value = os.environ.get(name)
    if not value:
        if os.environ.get("MCP_BP_REQUIRE_ALL") == "1":
            pytest.fail(f"{name} is not set")
        pytest.skip(f"{name} is not set (scripts/test-python.sh sets it)")
    return value


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own on a free loopback port, killed on exit; yields its URL."""
    binary = os.environ.get("REDIS_SERVER", "redis-server")
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} not found: run scripts/setup-test-deps.sh or set REDIS_SERVER")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.kill()
            server.wait()


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Waits (wall clock, bounded) for a condition that depends on Redis."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
