"""Our conftest for the test suite of ``mcp-backpressure`` 0.1.2.

The published sdist's tests import ``BarrierTool`` from ``tests.conftest``
but the sdist does not ship that file; ``scripts/test-python.sh`` copies this
one into the extracted ``tests/`` directory. Written from what the tests use:

- ``await tool()`` enters, records how many are inside at once
  (``max_seen``), waits until ``release()``, leaves, returns ``{"ok": True}``;
- ``await tool.wait_entered_at_least(n, timeout)`` returns once ``n`` calls
  have entered (in total), or raises ``TimeoutError``;
- ``release()`` lets every waiting and future call through.
"""

from __future__ import annotations

import asyncio
from typing import Any


class BarrierTool:
    def __init__(self) -> None:
        self.entered = 0
        self.inside = 0
        self.max_seen = 0
        self._released: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None

    def _events(self) -> tuple[asyncio.Event, asyncio.Condition]:
        # Created on first use, inside the test's running loop.
        if self._released is None or self._progress is None:
            self._released = asyncio.Event()
            self._progress = asyncio.Condition()
        return self._released, self._progress

    async def __call__(self) -> dict[str, Any]:
        released, progress = self._events()
        async with progress:
            self.entered += 1
            self.inside += 1
            self.max_seen = max(self.max_seen, self.inside)
            progress.notify_all()
        try:
            await released.wait()
            return {"ok": True}
        finally:
            self.inside -= 1

    async def wait_entered_at_least(self, count: int, timeout: float = 2.0) -> None:
        _, progress = self._events()

        async def entered() -> None:
            async with progress:
                await progress.wait_for(lambda: self.entered >= count)

        await asyncio.wait_for(entered(), timeout)

    def release(self) -> None:
        released, _ = self._events()
        released.set()
