"""The shared Redis limit from Python: two middlewares (as two replicas
would) naming one Redis key share one limit, against a real redis-server
started on a free loopback port (``scripts/setup-test-deps.sh`` installs
it; ``REDIS_SERVER`` names another binary)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Gate, context, eventually, free_port
from mcp_backpressure import BackpressureMiddleware, OverloadError

pytestmark = pytest.mark.asyncio


async def test_two_middlewares_naming_one_key_share_its_limit(redis_url: str) -> None:
    a = BackpressureMiddleware(1, shared_limit=redis_url, shared_key="py")
    b = BackpressureMiddleware(1, shared_limit=redis_url, shared_key="py")
    gate = Gate()
    held = asyncio.create_task(a(context(), gate))
    await eventually(lambda: gate.entered == 1)
    with pytest.raises(OverloadError) as caught:
        await b({"direct": "call"}, gate)
    assert caught.value.data["reason"] == "concurrency_limit"
    assert caught.value.data["active"] == 1  # across both
    assert b.get_metrics().rejected_concurrency_limit == 1
    gate.opened.set()
    assert await asyncio.wait_for(held, 5) == "done"
    await eventually(lambda: a.get_shared_metrics()["leases"] == 0)
    # The slot is back in Redis once the release landed: b's call runs.
    for _ in range(200):
        try:
            assert await b({"direct": "call"}, gate) == "done"
            break
        except OverloadError:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError("the freed slot never reached b")
    shared = b.get_shared_metrics()
    assert shared is not None and not shared["fallback"] and shared["commands"] >= 2


async def test_a_caller_cancelled_in_the_shared_queue_leaves_it(redis_url: str) -> None:
    a = BackpressureMiddleware(1, queue_size=5, shared_limit=redis_url, shared_key="q")
    b = BackpressureMiddleware(1, queue_size=5, shared_limit=redis_url, shared_key="q")
    gate = Gate()
    held = asyncio.create_task(a(context(), gate))
    await eventually(lambda: gate.entered == 1)
    waiting = asyncio.create_task(b(context(), gate))
    await eventually(lambda: b.get_shared_metrics()["waiting"] == 1)
    assert b.get_metrics().queued == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert b.get_shared_metrics()["waiting"] == 0
    assert b.get_metrics().cancelled_in_queue == 1
    gate.opened.set()
    await asyncio.wait_for(held, 5)
    assert gate.entered == 1, "the cancelled call never ran"


async def test_fail_closed_without_redis_rejects_with_shared_unavailable() -> None:
    mw = BackpressureMiddleware(
        4, shared_limit=f"redis://127.0.0.1:{free_port()}/0", shared_key="down",
        shared_fail="closed", shared_timeout=0.2,
    )
    with pytest.raises(OverloadError) as caught:
        await mw({"direct": "call"}, Gate())
    assert caught.value.data["reason"] == "shared_unavailable"
    assert mw.get_metrics().rejected_shared_unavailable == 1
    assert mw.get_shared_metrics()["fallback"] is True


async def test_bad_shared_settings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="need shared_limit"):
        BackpressureMiddleware(1, shared_key="k")
    with pytest.raises(ValueError, match="needs shared_key"):
        BackpressureMiddleware(1, shared_limit="redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="lease"):
        BackpressureMiddleware(1, shared_limit="redis://127.0.0.1:1/0", shared_key="k", lease=0.1)
    with pytest.raises(ValueError, match="shared_fail"):
        BackpressureMiddleware(1, shared_limit="redis://127.0.0.1:1/0", shared_key="k", shared_fail="maybe")
    with pytest.raises(ValueError, match="shared_limit"):
        BackpressureMiddleware(1, shared_limit="http://x", shared_key="k")
    with pytest.raises(ValueError, match="limit"):
        BackpressureMiddleware(1, shared_limit="redis://127.0.0.1:1/0", shared_key="k", limit="aimd")
    assert BackpressureMiddleware(1).get_shared_metrics() is None
