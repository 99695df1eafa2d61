//! Whether admission follows the fail mode (Redis unreachable), and the way
//! back: admission returns to Redis only at the second sweep in a row that
//! reached it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::watch;

use super::{FailMode, SharedLimit};

/// The fallback state of one process's shared limit.
pub(crate) struct Fallback {
    on: AtomicBool,
    /// Sweeps in a row that reached Redis while on.
    recovering: AtomicU32,
    /// Bumped every time admission goes back to Redis (calls waiting in the
    /// local fallback queue then ask Redis instead).
    recovered: watch::Sender<u64>,
    key: String,
    fail: FailMode,
}

impl Fallback {
    pub(crate) fn new(settings: &SharedLimit) -> Self {
        Self {
            on: AtomicBool::new(false),
            recovering: AtomicU32::new(0),
            recovered: watch::Sender::new(0),
            key: settings.key.clone(),
            fail: settings.fail,
        }
    }

    /// Whether admission follows the fail mode now.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Redis could not be reached (`why`): admission follows the fail mode
    /// until sweeps reach it again. True (and logged at warn, with the cause)
    /// when it was not on.
    pub(crate) fn enter(&self, why: &str) -> bool {
        self.recovering.store(0, Ordering::Release);
        let entered = !self.on.swap(true, Ordering::AcqRel);
        if entered {
            tracing::warn!(
                key = %self.key,
                fail = self.fail.as_str(),
                cause = why,
                "shared limit: Redis unreachable or refusing; admission falls back to {}",
                match self.fail {
                    FailMode::Open => "a local share of the limit",
                    FailMode::Closed => "rejecting with shared_unavailable",
                }
            );
        }
        entered
    }

    /// A sweep reached Redis. After an outage, admission goes back to Redis
    /// only at the second sweep in a row that reached it (one fallback sweep
    /// period later): by then every other process back in touch has counted
    /// its running calls again too (at its own first sweep), so newcomers
    /// do not run beside calls nobody counts. True when it just left.
    pub(crate) fn sweep_succeeded(&self) -> bool {
        if !self.is_on() || self.recovering.fetch_add(1, Ordering::AcqRel) + 1 < 2 {
            return false;
        }
        self.recovering.store(0, Ordering::Release);
        if !self.on.swap(false, Ordering::AcqRel) {
            return false;
        }
        tracing::info!(key = %self.key, "shared limit: Redis reachable; admission is shared again");
        self.recovered.send_modify(|n| *n += 1);
        true
    }

    /// Resolves the next time admission goes back to Redis.
    pub(crate) fn recoveries(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }
}
