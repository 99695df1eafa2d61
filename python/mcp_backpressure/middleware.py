"""The FastMCP middleware."""

from __future__ import annotations

import asyncio
import contextvars
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
    result_says_overload,
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


TASK_METHODS = frozenset({"tasks/get", "tasks/cancel"})
"""The tasks extension's methods the middleware watches (never limits): their
answers say when a task that holds a slot ends."""

_TERMINAL_STATUSES = {"completed": "success", "failed": "ignore", "cancelled": "ignore"}
"""A task's terminal statuses, and the outcome each reports to the limit."""

_INVALID_PARAMS = -32602
"""The code of the tasks extension's "Task ... not found" error."""


def _task_not_found(exc: BaseException) -> bool:
    """Whether an MCP error is the tasks extension's "Task <id> not found"."""
    if error_code(exc) != _INVALID_PARAMS:
        return False
    message = getattr(getattr(exc, "error", None), "message", None) or str(exc)
    return "not found" in str(message).lower()


def _field(obj: Any, *names: str) -> Any:
    """The first of ``names`` that ``obj`` has, as an attribute or a key."""
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        else:
            value = getattr(obj, name, None)
            if value is not None:
                return value
    return None


def _task_handle(result: Any) -> tuple[str, float | None, float | None] | None:
    """``(task_id, ttl, poll_interval)`` (seconds) if a ``tools/call`` result is
    a task handle (``resultType: "task"``, SEP-2663): the call became a
    background task whose work goes on after this answer."""
    if _field(result, "result_type", "resultType") != "task":
        return None
    task_id = _field(result, "task_id", "taskId")
    if not isinstance(task_id, str) or not task_id:
        return None
    ttl_ms = _field(result, "ttl_ms", "ttlMs")
    poll_ms = _field(result, "poll_interval_ms", "pollIntervalMs")
    ttl = ttl_ms / 1000 if isinstance(ttl_ms, (int, float)) and ttl_ms >= 0 else None
    poll = poll_ms / 1000 if isinstance(poll_ms, (int, float)) and poll_ms > 0 else None
    return task_id, ttl, poll


def _task_status(result: Any) -> str | None:
    status = _field(result, "status")
    return status if isinstance(status, str) else None


def _is_continuation(message: Any) -> bool:
    """Whether a ``tools/call`` carries the answers of an earlier round trip
    (``inputResponses`` or ``requestState``, SEP-2322)."""
    return (
        _field(message, "input_responses", "inputResponses") is not None
        or _field(message, "request_state", "requestState") is not None
    )


def _task_scope() -> str:
    """The scope task ids are unique in: the tasks extension's authorization
    scope of the current request (``""`` when anonymous or without it)."""
    try:
        from fastmcp_tasks.context import get_task_scope
    except ImportError:
        return ""
    try:
        scope = get_task_scope()
    except Exception:  # no request bound
        return ""
    return scope if isinstance(scope, str) else ""


class _HoldInfo:
    """What the middleware's own poll needs to ask the server about a task:
    the server (its Docket) and the request's context (its auth scope)."""

    __slots__ = ("context", "server")

    def __init__(self, server: Any, context: contextvars.Context) -> None:
        self.server = server
        self.context = context


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

    A ``tools/call`` answered with a background-task handle (FastMCP 4 with
    ``fastmcp[tasks]``) keeps its slot until the task ends: a terminal
    ``tasks/get`` answer, an acknowledged ``tasks/cancel``, "not found", the
    middleware's own poll, the TTL (``task_ttl`` caps it) or ``max_task_holds``.

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
        task_ttl: float | None = None,
        max_task_holds: int | None = None,
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
        if task_ttl is not None and (
            isinstance(task_ttl, bool) or not isinstance(task_ttl, (int, float)) or not 0 < task_ttl < math.inf
        ):
            raise ValueError(f"invalid task_ttl: must be a finite number of seconds > 0, got {task_ttl!r}")
        if max_task_holds is not None:
            _check_int("max_task_holds", max_task_holds)
            if max_task_holds < 1:
                raise ValueError(f"invalid max_task_holds: must be at least 1, got {max_task_holds}")
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
        self.task_ttl = task_ttl
        # Background tasks: a call answered with a task handle keeps its slot
        # here until the task ends (the core's table: TTLs run on its timer).
        self._holds = _core.TaskHolds(max_task_holds)
        self._hold_info: dict[tuple[str, str], _HoldInfo] = {}
        self._poller: asyncio.Task[None] | None = None
        self._poll_wakeup: asyncio.Event | None = None

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
            continuations_waiting=snapshot["continuations_waiting"],
            continuations_ahead=snapshot["continuations_ahead"],
            **self._task_metrics(),
        )

    def _task_metrics(self) -> dict[str, Any]:
        holds = self._holds.snapshot()
        return {
            "task_holds": holds["held"],
            "task_hold_slots": holds["slots"],
            "task_holds_created": holds["created"],
            "task_holds_ended": dict(holds["ended"]),
        }

    def get_task_metrics(self) -> dict[str, Any]:
        """The task holds alone: ``held`` (tasks keeping slots), ``slots``
        (global slots they keep), ``max_holds``, ``created`` and ``ended``
        (by cause: ``terminal``, ``cancel``, ``ttl``, ``own_poll``,
        ``unknown_task``, ``cap``, ``closed``)."""
        return dict(self._holds.snapshot())

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
        continuation = False
        if method is _DIRECT:
            tool = None
        elif method in self.guarded_methods:
            tool = self._tool_name(context, method)
            continuation = method == "tools/call" and _is_continuation(getattr(context, "message", None))
        elif method in TASK_METHODS:
            return await self._watch_task_method(context, call_next, method)
        else:
            return await call_next(context)
        client = self.client_key(context) if self.client_key is not None else None

        pending = self._limiter.acquire(tool, client, continuation)
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
            handle = _task_handle(result) if method == "tools/call" else None
            if handle is not None:
                # The call became a background task: its work goes on, so the
                # slot stays taken until the task ends (the permit moves into
                # the hold; the release below then does nothing).
                try:
                    self._hold(context, handle, permit)
                except Exception:  # never lose the call's answer over it
                    logger.exception("mcp_backpressure: could not hold the slot of task %s", handle[0])
            else:
                if result_says_overload(result):
                    permit.set_outcome("dropped")  # a refusal further down, as a tool result
                else:
                    permit.set_outcome("ignore" if result_is_error(result) else "success")
            return result
        finally:
            permit.release()

    # --- background tasks -------------------------------------------------------

    def _hold(self, context: Any, handle: tuple[str, float | None, float | None], permit: Any) -> None:
        task_id, ttl, poll_interval = handle
        if self.task_ttl is not None:
            ttl = self.task_ttl if ttl is None else min(ttl, self.task_ttl)
        if ttl is not None:
            ttl = min(ttl, _LONGEST_QUEUE_TIMEOUT)
        if poll_interval is not None:
            poll_interval = min(poll_interval, _LONGEST_QUEUE_TIMEOUT)
        scope = _task_scope()
        # The own poll asks only about a task nobody asked about for two of its
        # poll intervals: a client polling at the pace the server asked for
        # is never doubled by it.
        own_poll = None if poll_interval is None else 2 * poll_interval
        self._holds.hold(scope, task_id, permit, ttl, own_poll)
        server = getattr(getattr(context, "fastmcp_context", None), "fastmcp", None)
        if server is not None:
            self._hold_info[(scope, task_id)] = _HoldInfo(server, contextvars.copy_context())
            self._start_poller()

    def _end(self, scope: str, task_id: str, cause: str, outcome: str = "ignore") -> bool:
        self._hold_info.pop((scope, task_id), None)
        if not self._hold_info and self._poll_wakeup is not None:
            self._poll_wakeup.set()  # nothing left to poll: the poller ends
        return bool(self._holds.end(scope, task_id, cause, outcome))

    async def _watch_task_method(self, context: Any, call_next: Callable[[Any], Awaitable[Any]], method: str) -> Any:
        """``tasks/get`` and ``tasks/cancel`` pass; their answers end holds: a
        terminal status (``terminal``), an acknowledged cancel (``cancel``), a
        "not found" error (``unknown_task``). A ``working`` answer tells the
        own poll that the task is alive."""
        task_id = _field(getattr(context, "message", None), "taskId", "task_id")
        if not isinstance(task_id, str) or len(self._holds) == 0:
            return await call_next(context)
        scope = _task_scope()
        if not self._holds.contains(scope, task_id):
            return await call_next(context)
        try:
            result = await call_next(context)
        except McpErrorBase as exc:
            if _task_not_found(exc):
                self._end(scope, task_id, "unknown_task")
            raise
        if method == "tasks/cancel":
            self._end(scope, task_id, "cancel")
        else:
            status = _task_status(result)
            if status in _TERMINAL_STATUSES:
                self._end(scope, task_id, "terminal", _TERMINAL_STATUSES[status])
            else:
                self._holds.seen(scope, task_id)
        return result

    def _start_poller(self) -> None:
        if self._poll_wakeup is not None:
            self._poll_wakeup.set()
        loop = asyncio.get_running_loop()
        if self._poller is not None and not self._poller.done() and self._poller.get_loop() is loop:
            return
        self._poll_wakeup = asyncio.Event()
        self._poller = loop.create_task(self._own_poll(), name="mcp-backpressure-task-poll")

    async def _own_poll(self) -> None:
        """Asks the server itself about tasks nobody asked about for two of
        their poll intervals (a client that went away), so that a finished
        task does not keep its slot until its TTL. Runs while there are holds."""
        wakeup = self._poll_wakeup
        assert wakeup is not None
        try:
            await self._own_poll_loop(wakeup)
        except Exception:  # the next hold starts another
            logger.exception("mcp_backpressure: the task poll stopped")

    async def _own_poll_loop(self, wakeup: asyncio.Event) -> None:
        while True:
            # Forget what the core's TTL (or anything else) already ended.
            for key in [k for k in self._hold_info if not self._holds.contains(*k)]:
                del self._hold_info[key]
            if not self._hold_info:
                return
            wait = self._holds.next_wake()
            wakeup.clear()
            if wait is None or wait > 0:
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass
            for scope, task_id in self._holds.due():
                info = self._hold_info.get((scope, task_id))
                if info is not None:
                    await self._ask(scope, task_id, info)

    async def _ask(self, scope: str, task_id: str, info: _HoldInfo) -> None:
        if getattr(info.server, "_docket", None) is None:
            # The server's task backend has stopped: its tasks are gone.
            self._end(scope, task_id, "closed")
            return
        try:
            from fastmcp_tasks.handlers import tasks_get
        except ImportError:  # pragma: no cover - a task handle implies the package
            return
        try:
            # In the context of the call that made the task: its auth scope.
            answer = await info.context.run(asyncio.ensure_future, tasks_get(info.server, task_id))
        except McpErrorBase as exc:
            if _task_not_found(exc):
                self._end(scope, task_id, "unknown_task")
            return
        except Exception:
            logger.exception("mcp_backpressure: asking about task %s failed", task_id)
            return
        status = _task_status(answer)
        if status in _TERMINAL_STATUSES:
            self._end(scope, task_id, "own_poll", _TERMINAL_STATUSES[status])

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
            retry_after_alias=True,
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
            # The core's answer (the same text, data and _meta as the rmcp
            # wrapper's and the proxy's), under a fresh correlation id.
            made = answer["refusal"].tool_result()
            result = made["result"]
            logger.info(
                "mcp_backpressure: tools/call refused (%s, scope %s, retry after %d ms), "
                "answered as an isError tool result; correlation id %s",
                error.reason, error.scope, error.retry_after_ms, made["correlation_id"],
            )
            return error_tool_result(result["content"][0]["text"], result["structuredContent"], result["_meta"])
        raise error

    def __repr__(self) -> str:
        return (
            f"BackpressureMiddleware(max_concurrent={self.max_concurrent}, queue_size={self.queue_size}, "
            f"queue_timeout={self.queue_timeout})"
        )
