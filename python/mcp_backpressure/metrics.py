"""The metrics snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackpressureMetrics:
    """A snapshot of the limiter, taken under its lock: the fields agree with
    each other. The first six fields are those of 0.1.2, in its order."""

    active: int = 0
    """Slots in use (a call of weight ``w`` holds ``w``; with weights of 1,
    the calls running)."""
    queued: int = 0
    """Calls waiting for a slot."""
    total_rejected: int = 0
    """Rejections, every reason."""
    rejected_concurrency_limit: int = 0
    """Rejected at once: every slot busy, no queue configured."""
    rejected_queue_full: int = 0
    """Rejected at once: every slot busy and the queue full."""
    rejected_queue_timeout: int = 0
    """Rejected after waiting ``queue_timeout`` in the queue."""
    # --- additions (the Rust core's snapshot) -------------------------------
    rejected_queue_shed: int = 0
    """Shed from a standing queue by the CoDel discipline."""
    rejected_shared_unavailable: int = 0
    """Rejected because the shared limit's Redis was unreachable (fail closed)."""
    running: int = 0
    """Calls holding slots."""
    handed_over: int = 0
    """Slots handed to waiters that have not taken them yet."""
    max_concurrent: int = 0
    """The limit in force (an adaptive limit's current value)."""
    queue_size: int = 0
    """The queue bound."""
    admitted: int = 0
    """Calls that took slots (never decreases)."""
    completed: int = 0
    """Calls that gave their slots back (``admitted + handed_over == completed + running``)."""
    cancelled_in_queue: int = 0
    """Calls whose caller left the queue (cancelled, disconnected)."""
    tracked_keys: int = 0
    """Client keys and unconfigured tool names tracked now."""
    continuations_waiting: int = 0
    """Retries of multi-round-trip calls (``inputResponses`` or
    ``requestState``) waiting at the head of the queue now."""
    continuations_ahead: int = 0
    """Retries of multi-round-trip calls admitted ahead of the queue."""
    # --- background tasks (a call answered with a task handle keeps its slot) --
    task_holds: int = 0
    """Background tasks keeping slots now."""
    task_hold_slots: int = 0
    """Global slots those tasks keep (part of ``active``)."""
    task_holds_created: int = 0
    """Tasks that ever kept a slot."""
    task_holds_ended: dict[str, int] = field(default_factory=dict)
    """Holds ended, by cause: ``terminal`` (a ``tasks/get`` answer said
    completed, failed or cancelled), ``cancel`` (an acknowledged
    ``tasks/cancel``), ``ttl`` (the task's TTL, or ``task_ttl``, ran out),
    ``own_poll`` (the middleware's own poll found the task over),
    ``unknown_task`` (the server no longer knows it), ``cap``
    (``max_task_holds`` reached: the stalest hold ended), ``closed`` (the
    task backend stopped)."""
