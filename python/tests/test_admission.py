"""The middleware called as FastMCP calls it, without a server: admission,
cancellation on every path, callbacks, outcomes, scopes, guarded methods."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

import pytest

from conftest import Gate, context, until
from mcp_backpressure import BackpressureMiddleware, OverloadError
from mcp_backpressure._compat import SDK_CARRIES_TOOL_CALL_ERRORS, result_is_error

pytestmark = pytest.mark.asyncio


def consistent(mw: BackpressureMiddleware) -> dataclasses.asdict:
    m = mw.get_metrics()
    assert m.admitted + m.handed_over == m.completed + m.running, m
    assert m.active <= m.max_concurrent and m.queued <= m.queue_size, m
    return m


# --- cancellation: the place or the slot is back before CancelledError is seen ---


async def test_cancel_while_queued_frees_the_place_at_once() -> None:
    mw = BackpressureMiddleware(1, queue_size=1)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    b = asyncio.create_task(mw(context(), gate))
    await until(lambda: mw.queued == 1)
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    m = consistent(mw)  # no loop turn in between
    assert (m.queued, m.cancelled_in_queue, m.active) == (0, 1, 1)
    # The freed place is usable at once.
    c = asyncio.create_task(mw(context(), gate))
    await until(lambda: mw.queued == 1)
    gate.opened.set()
    assert await asyncio.wait_for(asyncio.gather(a, c), 5) == ["done", "done"]
    m = consistent(mw)
    assert (m.active, m.queued, m.total_rejected, gate.entered) == (0, 0, 0, 2)


async def test_cancel_after_the_slot_was_handed_over_but_before_the_tool_ran() -> None:
    mw = BackpressureMiddleware(1, queue_size=1)
    first, second = Gate(), Gate()
    a = asyncio.create_task(mw(context(), first))
    await until(lambda: first.entered == 1)
    b = asyncio.create_task(mw(context(), second))
    await until(lambda: mw.queued == 1)
    # In the same loop turn: A's tool finishes (its slot is handed to B in the
    # core) and B's task is cancelled before it can take the slot.
    first.opened.set()
    b.cancel()
    assert await asyncio.wait_for(a, 5) == "done"
    with pytest.raises(asyncio.CancelledError):
        await b
    m = consistent(mw)
    assert second.entered == 0, "the cancelled call never reached the tool"
    assert (m.active, m.running, m.handed_over, m.queued) == (0, 0, 0, 0)
    # The slot is free: the next call is admitted on its first poll.
    second.opened.set()
    assert await asyncio.wait_for(mw(context(), second), 5) == "done"
    assert consistent(mw).completed == 2


async def test_cancel_while_running_frees_the_slot_at_once() -> None:
    mw = BackpressureMiddleware(1, queue_size=2)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    m = consistent(mw)
    assert (m.active, m.running, m.completed) == (0, 0, 1)


async def test_a_waiter_cancelled_by_its_own_timeout_leaves_the_queue() -> None:
    # asyncio.wait_for around the call (a client-side deadline) cancels it.
    mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=30)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(mw(context(), gate), 0.05)
    m = consistent(mw)
    assert (m.queued, m.cancelled_in_queue, m.total_rejected) == (0, 1, 0)
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_random_bursts_with_cancellations_leave_exact_counts() -> None:
    rng = random.Random(7)
    mw = BackpressureMiddleware(4, queue_size=8, queue_timeout=30, overload_response="error")

    async def tool(_context: object) -> str:
        for _ in range(rng.randrange(0, 5)):
            await asyncio.sleep(0)
        return "ok"

    tasks = [asyncio.create_task(mw(context(), tool)) for _ in range(300)]
    for _ in range(50):
        for task in rng.sample(tasks, 3):
            task.cancel()
        consistent(mw)
        await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    m = consistent(mw)
    assert (m.active, m.queued, m.running, m.handed_over) == (0, 0, 0, 0)
    ok = sum(r == "ok" for r in results)
    rejected = sum(isinstance(r, OverloadError) for r in results)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert ok + rejected + cancelled == 300
    assert m.total_rejected == rejected and m.completed == m.admitted


# --- rejections ----------------------------------------------------------------


async def test_rejection_error_and_async_callback_is_awaited() -> None:
    seen: list[OverloadError] = []

    async def on_overload(error: OverloadError) -> None:
        await asyncio.sleep(0)
        seen.append(error)

    mw = BackpressureMiddleware(1, on_overload=on_overload)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    with pytest.raises(OverloadError) as caught:
        await mw({"direct": "call"}, gate)
    error = caught.value
    assert seen == [error], "the async callback ran to its end before the error was raised"
    assert error.code == -31429
    assert error.message.startswith("SERVER_OVERLOADED: concurrency_limit, retry after ")
    assert error.data == {
        "reason": "concurrency_limit", "active": 1, "queued": 0, "max_concurrent": 1,
        "queue_size": 0, "queue_timeout_ms": 30000, "retry_after_ms": error.retry_after_ms,
        "retryAfterMs": error.retry_after_ms, "scope": "global",
    }
    assert error.to_json_rpc() == {"code": -31429, "message": error.message, "data": error.data}
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_a_failing_callback_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def on_overload(_error: OverloadError) -> None:
        raise RuntimeError("callback bug")

    mw = BackpressureMiddleware(1, overload_error_code=-32001, on_overload=on_overload)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    with caplog.at_level(logging.ERROR, logger="mcp_backpressure"), pytest.raises(OverloadError) as caught:
        await mw({}, gate)
    assert caught.value.code == -32001
    assert "on_overload" in caplog.text
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_queue_timeout_and_retry_delay_from_service_times() -> None:
    mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=0.05, retry_after_min=0.001,
                                overload_response="error")
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    with pytest.raises(OverloadError) as caught:
        await asyncio.wait_for(mw(context(), gate), 5)
    assert caught.value.reason == "queue_timeout" and caught.value.queue_timeout_ms == 50
    # No service time observed yet: the initial 1 s estimate, times (queued + 1).
    assert caught.value.retry_after_ms == 1000
    gate.opened.set()
    await asyncio.wait_for(a, 5)
    m = consistent(mw)
    assert (m.rejected_queue_timeout, m.queued, m.active) == (1, 0, 0)


async def test_the_tools_own_timeout_error_passes_through() -> None:
    mw = BackpressureMiddleware(1, queue_size=1, queue_timeout=0.05)

    async def tool(_context: object) -> str:
        raise TimeoutError("the backend timed out")

    with pytest.raises(TimeoutError, match="backend") as caught:
        await mw(context(), tool)
    assert not isinstance(caught.value, OverloadError)
    m = consistent(mw)
    assert (m.total_rejected, m.rejected_queue_timeout, m.active, m.completed) == (0, 0, 0, 1)


async def test_tool_result_form(caplog: pytest.LogCaptureFixture) -> None:
    mw = BackpressureMiddleware(1, overload_response="tool_result")
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    with caplog.at_level(logging.INFO, logger="mcp_backpressure"):
        result = await mw(context(), gate)
    assert result_is_error(result.to_mcp_result()) if not hasattr(result, "is_error") else result.is_error
    data = result.structured_content
    assert data["reason"] == "concurrency_limit"
    assert data["retryAfterMs"] == data["retry_after_ms"]
    failure = result.meta["io.modelcontextprotocol/toolFailure"]
    assert set(failure) == {"class", "code", "retryable", "retryNotBefore", "correlationId"}
    assert (failure["class"], failure["code"], failure["retryable"]) == ("overload", "concurrency_limit", True)
    assert failure["retryNotBefore"].endswith("Z")
    text = result.content[0].text
    # The core's text: the message, why, and when to come back.
    assert text == (
        f"SERVER_OVERLOADED: concurrency_limit, retry after {data['retry_after_ms']} ms\n"
        "The call was not run: every slot is busy (1 of 1).\n"
        f"It is safe to retry: after {data['retry_after_ms'] / 1000:g} s, not before "
        f"{failure['retryNotBefore']} (correlation id {failure['correlationId']})."
    )
    # The refusal's log line names its correlation id.
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert failure["correlationId"] in record.getMessage()
    # Each refusal has its own.
    again = await mw(context(), gate)
    assert again.meta["io.modelcontextprotocol/toolFailure"]["correlationId"] != failure["correlationId"]
    # A direct call (not a FastMCP context) always raises.
    with pytest.raises(OverloadError):
        await mw({}, gate)
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_auto_form_follows_the_sdk() -> None:
    mw = BackpressureMiddleware(1)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)
    if SDK_CARRIES_TOOL_CALL_ERRORS:
        with pytest.raises(OverloadError):
            await mw(context(), gate)
    else:
        result = await mw(context(), gate)
        assert result.to_mcp_result().isError is True
    gate.opened.set()
    await asyncio.wait_for(a, 5)


# --- what is limited -------------------------------------------------------------


async def test_only_tools_call_is_limited_by_default() -> None:
    mw = BackpressureMiddleware(1)
    gate = Gate()
    a = asyncio.create_task(mw(context(), gate))
    await until(lambda: gate.entered == 1)

    async def answer(_context: object) -> str:
        return "passed"

    for method in ("initialize", "ping", "tools/list", "resources/list", "prompts/list",
                   "resources/templates/list", "resources/read", "prompts/get",
                   "completion/complete", "notifications/initialized", "notifications/cancelled", None):
        assert await mw(context(method), answer) == "passed", method
    assert consistent(mw).total_rejected == 0
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_other_work_methods_can_be_guarded() -> None:
    # Other methods' rejections are always raised (a tool result is for tools/call only).
    mw = BackpressureMiddleware(1, guarded_methods=["tools/call", "resources/read"], overload_response="error")
    gate = Gate()
    a = asyncio.create_task(mw(context("resources/read"), gate))
    await until(lambda: gate.entered == 1)
    with pytest.raises(OverloadError) as caught:
        await mw(context("resources/read"), gate)
    assert caught.value.reason == "concurrency_limit"
    with pytest.raises(OverloadError):
        await mw(context("tools/call"), gate)
    gate.opened.set()
    await asyncio.wait_for(a, 5)


async def test_per_tool_limits_weights_and_scope() -> None:
    mw = BackpressureMiddleware(4, tools={"report": {"max_concurrent": 1, "weight": 2}}, overload_response="error")
    gate = Gate()
    a = asyncio.create_task(mw(context(tool="report"), gate))
    await until(lambda: gate.entered == 1)
    assert mw.active == 2
    with pytest.raises(OverloadError) as caught:
        await mw(context(tool="report"), gate)
    assert caught.value.scope == "tool:report"

    async def quick(_context: object) -> str:
        return "quick"

    assert await mw(context(tool="echo"), quick) == "quick"
    gate.opened.set()
    await asyncio.wait_for(a, 5)
    rows = {row["tool"]: row for row in mw.get_tool_metrics()}
    assert rows["report"]["admitted"] == 1 and rows["report"]["rejected"] == 1


async def test_client_limit_with_a_client_key_function() -> None:
    mw = BackpressureMiddleware(4, client_limit=1, client_key=lambda ctx: ctx.client)
    gate = Gate()
    a = asyncio.create_task(mw(context(client="alice"), gate))
    await until(lambda: gate.entered == 1)
    with pytest.raises(OverloadError) as caught:
        await mw(_Direct("alice"), gate)
    assert caught.value.scope == "client"
    b = asyncio.create_task(mw(context(client="bob"), gate))
    await until(lambda: gate.entered == 2)
    gate.opened.set()
    await asyncio.wait_for(asyncio.gather(a, b), 5)


class _Direct:
    """A request without a ``method`` (a direct call): limited anonymously,
    with a client key."""

    def __init__(self, client: str) -> None:
        self.client = client


# --- outcomes feed adaptive limits as the Rust wrapper does ----------------------


async def test_outcomes_feed_an_adaptive_limit() -> None:
    mw = BackpressureMiddleware(10, limit="aimd", min_limit=1, overload_response="error")

    async def overloaded_downstream(_context: object) -> None:
        raise OverloadError("queue_full", 5, 5, code=-32001)

    async def own_failure(_context: object) -> None:
        raise ValueError("bad input")

    async def error_result(_context: object) -> object:
        return {"isError": True}

    for body in (own_failure, error_result):
        with pytest.raises(ValueError) if body is own_failure else _nothing():
            await mw(context(), body)
        assert mw.get_metrics().max_concurrent == 10, body.__name__
    with pytest.raises(OverloadError):
        await mw(context(), overloaded_downstream)
    assert mw.get_metrics().max_concurrent == 9, "an overload signal backs the limit off"

    async def refused_downstream_as_a_result(_context: object) -> object:
        # A guarded server further down answered in the tool-result dialect.
        return {
            "isError": True,
            "_meta": {"io.modelcontextprotocol/toolFailure": {"class": "overload"}},
        }

    await mw(context(), refused_downstream_as_a_result)
    assert mw.get_metrics().max_concurrent == 8, "so does a refusal relayed as a tool result"
    assert consistent(mw).active == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


async def test_get_metrics_async_and_attributes() -> None:
    mw = BackpressureMiddleware(3, queue_size=2, queue_timeout=4)
    assert await mw.get_metrics_async() == mw.get_metrics()
    assert (mw.active, mw.queued) == (0, 0)
    assert "max_concurrent=3" in repr(mw)
