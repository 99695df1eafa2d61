//! The metrics snapshot and the names metrics are exported under.
//!
//! A [`MetricsSnapshot`] is taken under the limiter's lock, so its fields are
//! consistent with each other: at every instant
//! `admitted == completed + active`, `active <= max_concurrent` (unless an
//! adaptive limit was just lowered below the number already running) and
//! `queued <= queue_size`.

use serde::{Deserialize, Serialize};

use crate::overload::OverloadReason;

/// A consistent view of a limiter's global counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Slots in use now (a call of weight `w` holds `w`; with weights of 1,
    /// the requests running or handed a slot and about to run).
    pub active: usize,
    /// Requests holding slots now, whatever their weight (those handed a
    /// slot from the queue whose callers have not taken it yet included).
    pub running: usize,
    /// Slots handed to queued requests whose callers have not taken them
    /// yet (a moment, normally; they count as admitted once taken).
    pub handed_over: usize,
    /// Requests waiting in the queue now (continuations waiting ahead of it
    /// not counted: see `continuations_waiting`).
    pub queued: usize,
    /// Continuations of multi-round-trip calls
    /// ([`Request::continuation`](crate::Request::continuation)) waiting now
    /// on the priority line, ahead of the queue (bounded by
    /// `max_continuations`, not by `queue_size`).
    pub continuations_waiting: usize,
    /// Continuations ever admitted from the priority line (served ahead of
    /// ordinary calls, or waiting where an ordinary call would have been
    /// refused); counted, like `admitted`, when the caller takes the slot.
    pub continuations_ahead: u64,
    /// The concurrency limit in force (the current value of an adaptive limit).
    pub max_concurrent: usize,
    /// The queue bound.
    pub queue_size: usize,
    /// Requests that took a slot (never decreases: a request handed a slot
    /// but gone before taking it counts in `cancelled_in_queue` instead).
    pub admitted: u64,
    /// Slots ever given back (successful, failed, cancelled or panicked requests).
    pub completed: u64,
    /// Requests that left the queue because their caller gave up (cancellation).
    pub cancelled_in_queue: u64,
    /// Rejections of every reason.
    pub total_rejected: u64,
    /// Rejections with reason `concurrency_limit`.
    pub rejected_concurrency_limit: u64,
    /// Rejections with reason `queue_full`.
    pub rejected_queue_full: u64,
    /// Rejections with reason `queue_timeout`.
    pub rejected_queue_timeout: u64,
    /// Rejections with reason `queue_shed`.
    pub rejected_queue_shed: u64,
    /// Requests rejected because the shared limit's Redis was unreachable
    /// (fail closed).
    pub rejected_shared_unavailable: u64,
    /// Client keys (and unconfigured tool names) tracked now.
    pub tracked_keys: usize,
}

/// A consistent view of one tool's partition (see
/// [`Limiter::tool_snapshots`](crate::Limiter::tool_snapshots)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSnapshot {
    /// The tool's name; `*` for every tool without a configuration of its own.
    pub tool: String,
    /// Calls of this tool holding a slot now.
    pub running: usize,
    /// Calls of this tool waiting now.
    pub queued: usize,
    /// The tool's limit in force (current value if adaptive); `None` = none.
    pub limit: Option<usize>,
    /// Calls of this tool ever given a slot.
    pub admitted: u64,
    /// Calls of this tool rejected, for any reason and by any limit.
    pub rejected: u64,
}

impl MetricsSnapshot {
    /// Rejections with the given reason.
    pub fn rejected(&self, reason: OverloadReason) -> u64 {
        match reason {
            OverloadReason::ConcurrencyLimit => self.rejected_concurrency_limit,
            OverloadReason::QueueFull => self.rejected_queue_full,
            OverloadReason::QueueTimeout => self.rejected_queue_timeout,
            OverloadReason::QueueShed => self.rejected_queue_shed,
            OverloadReason::SharedUnavailable => self.rejected_shared_unavailable,
        }
    }
}

/// Metric names, for exporters. Labels of the rejection counter come from
/// [`OverloadReason::as_str`].
pub mod names {
    /// Gauge: requests holding a slot.
    pub const ACTIVE: &str = "mcp_backpressure_active";
    /// Gauge: requests waiting in the queue.
    pub const QUEUED: &str = "mcp_backpressure_queued";
    /// Gauge: the concurrency limit in force.
    pub const LIMIT: &str = "mcp_backpressure_limit";
    /// Counter: requests given a slot.
    pub const ADMITTED: &str = "mcp_backpressure_admitted_total";
    /// Counter: slots given back.
    pub const COMPLETED: &str = "mcp_backpressure_completed_total";
    /// Counter: requests whose caller left the queue.
    pub const CANCELLED_IN_QUEUE: &str = "mcp_backpressure_cancelled_in_queue_total";
    /// Counter: rejections, labelled `reason`.
    pub const REJECTED: &str = "mcp_backpressure_rejected_total";
    /// The label of [`REJECTED`].
    pub const REASON_LABEL: &str = "reason";
    /// Gauge: background tasks whose calls keep their slots
    /// ([`TaskHolds`](crate::TaskHolds)).
    pub const TASK_HOLDS: &str = "mcp_backpressure_task_holds";
    /// Gauge: slots of the global limit held by background tasks.
    pub const TASK_HOLD_SLOTS: &str = "mcp_backpressure_task_hold_slots";
    /// Counter: task holds ended, labelled `cause` (`terminal`, `cancel`,
    /// `ttl`, `own_poll`, `unknown_task`, `cap`, `closed`).
    pub const TASK_HOLDS_ENDED: &str = "mcp_backpressure_task_holds_ended_total";
    /// The label of [`TASK_HOLDS_ENDED`].
    pub const CAUSE_LABEL: &str = "cause";
    /// Counter: continuations of multi-round-trip calls admitted ahead of
    /// the queue.
    pub const CONTINUATIONS_AHEAD: &str = "mcp_backpressure_continuations_ahead_total";
    /// Gauge: continuations of multi-round-trip calls waiting at the head of
    /// the queue.
    pub const CONTINUATIONS_WAITING: &str = "mcp_backpressure_continuations_waiting";
}
