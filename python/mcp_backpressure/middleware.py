"""The FastMCP middleware."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from . import _core
from ._compat import (
    SDK_CARRIES_TOOL_CALL_ERRORS,
    McpErrorBase,
    error_code,
    error_tool_result,
    result_is_error,
)
from .errors import DEFAULT_OVERLOAD_CODE, OverloadError
from .metrics import BackpressureMetrics

logger = logging.getLogger("mcp_backpressure")

GUARDABLE_METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
"""The methods that do work and may be limited. ``initialize``, ``ping``, the
list methods and notifications always pass."""

OVERLOAD_RESPONSES = ("auto", "error", "tool_result")

_OVERLOAD_SIGNAL_CODES = frozenset(_core.OVERLOAD_SIGNAL_CODES)

_DIRECT = object()
"""The method of a request that is not a FastMCP ``MiddlewareContext`` (the
middleware called directly, as 0.1.2's tests do): limited, anonymously."""


def session_client_key(context: Any) -> str | None:
    """A client key function: the MCP session id of the call (Streamable
    HTTP's ``Mcp-Session-Id``; stdio has one session), or ``None``."""
    fastmcp_context = getattr(context, "fastmcp_context", None)
    if fastmcp_context is None:
        return None
    try:
        session_id = fastmcp_context.session_id
    except Exception:  # no session bound to this request
        return None
    return session_id if isinstance(session_id, str) else None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# The longest queue timeout the core takes (its durations' bound); an
# infinite one (0.1.2 accepted it: wait without limit) maps to it.
_LONGEST_QUEUE_TIMEOUT = 365 * 24 * 3600.0


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


class BackpressureMiddleware:
    """Admission control for a FastMCP server, on the Rust ``mcp-backpressure`` core.

    At most ``max_concurrent`` guarded calls (``tools/call`` by default) run at
    once; up to ``queue_size`` more wait in a FIFO queue for at most
    ``queue_timeout`` seconds; every other call is turned away at once with an
    :class:`OverloadError`. ``initialize``, ``ping``, the list methods and
    notifications always pass.

    The first five parameters are those of ``mcp-backpressure`` 0.1.2, with
    the same defaults and validation errors, except ``overload_error_code``
    (-31429; pass ``PYTHON_PACKAGE_OVERLOAD_CODE`` for 0.1.2's -32001). The
    keyword-only ones expose the core (see the package README for each).

    Example::

        mcp = FastMCP("server")
        mcp.add_middleware(BackpressureMiddleware(max_concurrent=5, queue_size=10))
    """

    def __init__(
        self,
        max_concurrent: int,
        queue_size: int = 0,
        queue_timeout: float = 30.0,
        overload_error_code: int = DEFAULT_OVERLOAD_CODE,
        on_overload: Callable[[OverloadError], Awaitable[None] | None] | None = None,
        *,
        retry_after_min: float | None = None,
        retry_after_max: float | None = None,
        initial_service_time: float | None = None,
        limit: str = "fixed",
        min_limit: int | None = None,
        max_limit: int | None = None,
        tools: Mapping[str, Mapping[str, Any]] | None = None,
        default_tool_limit: int | None = None,
        client_limit: int | None = None,
        client_key: Callable[[Any], str | None] | str | None = None,
        max_tracked_keys: int | None = None,
        queue_discipline: str = "fifo",
        codel_target: float | None = None,
        codel_interval: float | None = None,
        lifo_interval: float | None = None,
        guarded_methods: Iterable[str] = ("tools/call",),
        overload_response: str = "auto",
        shared_limit: str | None = None,
        shared_key: str | None = None,
        lease: float | None = None,
        shared_fail: str = "open",
        shared_replicas: int | None = None,
        shared_timeout: float | None = None,
    ) -> None:
        # The three checks and messages of 0.1.2, first and in its order.
        _check_int("max_concurrent", max_concurrent)
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        _check_int("queue_size", queue_size)
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        if isinstance(queue_timeout, bool) or not isinstance(queue_timeout, (int, float)):
            raise TypeError(f"queue_timeout must be a number of seconds, got {type(queue_timeout).__name__}")
        if not queue_timeout > 0:
            raise ValueError(f"queue_timeout must be > 0, got {queue_timeout}")
        # math.inf waits without limit, as in 0.1.2 (the core's bound: 365 days).
        _check_int("overload_error_code", overload_error_code)
        if on_overload is not None and not callable(on_overload):
            raise TypeError("on_overload must be callable or None")

        guarded = frozenset(guarded_methods if not isinstance(guarded_methods, str) else (guarded_methods,))
        unknown = sorted(guarded - GUARDABLE_METHODS)
        if unknown:
            raise ValueError(
                f"invalid guarded_methods: {', '.join(unknown)} cannot be limited "
                f"(choose from {', '.join(sorted(GUARDABLE_METHODS))}; initialize, ping, "
                "the list methods and notifications always pass)"
            )
        if overload_response not in OVERLOAD_RESPONSES:
            raise ValueError(
                f"invalid overload_response: {overload_response!r} (expected auto, error or tool_result)"
            )
        if client_key == "session":
            client_key = session_client_key
        elif client_key is not None and not callable(client_key):
            raise TypeError('client_key must be a callable, "session" or None')

        self._limiter = _core.Limiter(
            max_concurrent,
            queue_size,
            min(float(queue_timeout), _LONGEST_QUEUE_TIMEOUT),
            retry_after_min=retry_after_min,
            retry_after_max=retry_after_max,
            initial_service_time=initial_service_time,
            limit=limit,
            min_limit=min_limit,
            max_limit=max_limit,
            tools=None
            if tools is None
            else {name: dict(spec) if isinstance(spec, Mapping) else spec for name, spec in tools.items()},
            default_tool_limit=default_tool_limit,
            client_limit=client_limit,
            max_tracked_keys=max_tracked_keys,
            queue_discipline=queue_discipline,
            codel_target=codel_target,
            codel_interval=codel_interval,
            lifo_interval=lifo_interval,
            shared_limit=shared_limit,
            shared_key=shared_key,
            lease=lease,
            shared_fail=shared_fail,
            shared_replicas=shared_replicas,
            shared_timeout=shared_timeout,
        )
        self.max_concurrent = max_concurrent
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.overload_error_code = overload_error_code
        self.on_overload = on_overload
        self.guarded_methods = guarded
        self.overload_response = overload_response
        self.client_key = client_key

    # --- metrics --------------------------------------------------------------

    @property
    def active(self) -> int:
        """Slots in use now."""
        return int(self._limiter.snapshot()["active"])

    @property
    def queued(self) -> int:
        """Calls waiting now."""
        return int(self._limiter.snapshot()["queued"])

    def get_metrics(self) -> BackpressureMetrics:
        """A snapshot taken under the limiter's lock (its fields agree)."""
        snapshot = self._limiter.snapshot()
        return BackpressureMetrics(
            active=snapshot["active"],
            queued=snapshot["queued"],
            total_rejected=snapshot["total_rejected"],
            rejected_concurrency_limit=snapshot["rejected_concurrency_limit"],
            rejected_queue_full=snapshot["rejected_queue_full"],
            rejected_queue_timeout=snapshot["rejected_queue_timeout"],
            rejected_queue_shed=snapshot["rejected_queue_shed"],
            rejected_shared_unavailable=snapshot["rejected_shared_unavailable"],
            running=snapshot["running"],
            handed_over=snapshot["handed_over"],
            max_concurrent=snapshot["max_concurrent"],
            queue_size=snapshot["queue_size"],
            admitted=snapshot["admitted"],
            completed=snapshot["completed"],
            cancelled_in_queue=snapshot["cancelled_in_queue"],
            tracked_keys=snapshot["tracked_keys"],
        )

    def get_shared_metrics(self) -> dict[str, Any] | None:
        """The shared Redis limit's own figures (``fallback``, ``leases``,
        ``waiting``, ``global_in_use``, ``global_queued``, ``replicas``,
        ``commands``, ``errors``, ``renewals``, ``leases_lost``, ``last_error``), or ``None``
        without ``shared_limit``."""
        return self._limiter.shared_snapshot()

    async def get_metrics_async(self) -> BackpressureMetrics:
        """The same as :meth:`get_metrics` (kept from 0.1.2; it never waits)."""
        return self.get_metrics()

    def get_tool_metrics(self) -> list[dict[str, Any]]:
        """One row per configured tool and a ``*`` row for every other tool:
        ``tool``, ``running``, ``queued``, ``limit``, ``admitted``, ``rejected``."""
        return list(self._limiter.tool_snapshots())

    # --- the middleware ---------------------------------------------------------

    async def __call__(self, context: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        method = getattr(context, "method", _DIRECT)
        if method is _DIRECT:
            tool = None
        elif method in self.guarded_methods:
            tool = self._tool_name(context, method)
        else:
            return await call_next(context)
        client = self.client_key(context) if self.client_key is not None else None

        pending = self._limiter.acquire(tool, client)
        # The first poll needs no waker: an admission that fits is answered
        # here, synchronously, without an event-loop round trip.
        answer = pending.poll()
        if answer is None:
            answer = await self._wait(pending)
        if isinstance(answer, dict):
            return await self._reject(method, answer)

        # Admitted. No await between the admission and this `try`, so nothing
        # can cancel the task in between: the slot is given back on every path.
        permit = answer
        try:
            result = await call_next(context)
        except BaseException as exc:
            if self._signals_overload(exc):
                permit.set_outcome("dropped")
            raise
        else:
            permit.set_outcome("ignore" if result_is_error(result) else "success")
            return result
        finally:
            permit.release()

    def _signals_overload(self, exc: BaseException) -> bool:
        """Whether an MCP error with an overload code is in ``exc``'s chain:
        FastMCP wraps a tool's exception (a proxied server's overload error)
        in its own ``ToolError`` before middleware sees it."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen and len(seen) < 16:
            seen.add(id(current))
            if isinstance(current, McpErrorBase):
                code = error_code(current)
                if code is not None and (code in _OVERLOAD_SIGNAL_CODES or code == self.overload_error_code):
                    return True
            current = current.__cause__ or current.__context__
        return False

    async def check_resource_access(self, context: Any) -> None:
        """FastMCP 4.x asks every middleware whether a resource may be listed
        (skills discovery); admission control has no say in that."""
        return None

    @staticmethod
    def _tool_name(context: Any, method: str) -> str:
        if method == "tools/call":
            name = getattr(getattr(context, "message", None), "name", None)
            if isinstance(name, str):
                return name
        return method

    @staticmethod
    async def _wait(pending: Any) -> Any:
        """Waits for the admission; any exception (a cancellation above all)
        abandons it at once: the queue place, or a slot already handed over, is
        given back before the exception leaves."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                woken: asyncio.Future[None] = loop.create_future()
                answer = pending.poll(functools.partial(loop.call_soon_threadsafe, _wake, woken))
                if answer is not None:
                    return answer
                await woken
        except BaseException:
            pending.close()
            raise

    async def _reject(self, method: Any, answer: dict[str, Any]) -> Any:
        error = OverloadError(
            reason=answer["reason"],
            active=answer["active"],
            max_concurrent=answer["max_concurrent"],
            code=self.overload_error_code,
            message=answer["message"],
            queued=answer["queued"],
            queue_size=answer["queue_size"],
            queue_timeout_ms=answer["queue_timeout_ms"],
            retry_after_ms=answer["retry_after_ms"],
            scope=answer["scope"],
        )
        callback = self.on_overload
        if callback is not None:
            try:
                outcome = callback(error)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("mcp_backpressure: the on_overload callback raised")
        if method == "tools/call" and (
            self.overload_response == "tool_result"
            or (self.overload_response == "auto" and not SDK_CARRIES_TOOL_CALL_ERRORS)
        ):
            return error_tool_result(error.message, error.data)
        raise error

    def __repr__(self) -> str:
        return (
            f"BackpressureMiddleware(max_concurrent={self.max_concurrent}, queue_size={self.queue_size}, "
            f"queue_timeout={self.queue_timeout})"
        )
