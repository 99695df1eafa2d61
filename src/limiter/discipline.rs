//! The queue discipline's running state: when to serve newest first
//! (adaptive LIFO) and when to shed instead of serve (CoDel).
//!
//! Both act only when a waiter is about to be served; neither touches
//! deadlines, which stay exact per waiter.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::QueueDiscipline;

#[derive(Debug)]
pub(crate) struct Discipline {
    kind: QueueDiscipline,
    /// Since when the queue has been non-empty.
    nonempty_since: Option<Instant>,
    codel: CoDel,
}

#[derive(Debug, Default)]
struct CoDel {
    /// When the served waiters' wait first went above target, plus interval.
    first_above: Option<Instant>,
    dropping: bool,
    drop_next: Option<Instant>,
    count: u32,
}

impl Discipline {
    pub(crate) fn new(kind: QueueDiscipline) -> Self {
        Self {
            kind,
            nonempty_since: None,
            codel: CoDel::default(),
        }
    }

    /// A new discipline, keeping what is known about the queue.
    pub(crate) fn set_kind(&mut self, kind: QueueDiscipline) {
        if kind != self.kind {
            self.kind = kind;
            self.codel = CoDel::default();
        }
    }

    /// Whether serving needs the clock.
    pub(crate) fn needs_clock(&self) -> bool {
        !matches!(self.kind, QueueDiscipline::Fifo)
    }

    /// The queue went from empty to non-empty at `now`.
    pub(crate) fn on_nonempty(&mut self, now: Instant) {
        self.nonempty_since.get_or_insert(now);
    }

    /// The queue emptied.
    pub(crate) fn on_empty(&mut self) {
        self.nonempty_since = None;
        self.codel.dropping = false;
        self.codel.first_above = None;
    }

    /// Serve newest first now?
    pub(crate) fn lifo(&self, now: Instant) -> bool {
        match self.kind {
            QueueDiscipline::AdaptiveLifo { interval } => self
                .nonempty_since
                .is_some_and(|since| now.saturating_duration_since(since) >= interval),
            _ => false,
        }
    }

    /// A waiter that waited `sojourn` is about to be served at `now`: shed it
    /// instead? (CoDel's dequeue step; a no-op for the other disciplines.)
    pub(crate) fn shed(&mut self, sojourn: Duration, now: Instant) -> bool {
        let QueueDiscipline::CoDel { target, interval } = self.kind else {
            return false;
        };
        let codel = &mut self.codel;
        let above_for_interval = if sojourn < target {
            codel.first_above = None;
            false
        } else {
            match codel.first_above {
                None => {
                    codel.first_above = Some(now + interval);
                    false
                }
                Some(at) => now >= at,
            }
        };
        if codel.dropping {
            if !above_for_interval {
                codel.dropping = false;
                return false;
            }
            if let Some(next) = codel.drop_next
                && now >= next
            {
                codel.count = codel.count.saturating_add(1);
                codel.drop_next = Some(control_law(next, interval, codel.count));
                return true;
            }
            false
        } else if above_for_interval {
            codel.dropping = true;
            codel.count = 1;
            codel.drop_next = Some(control_law(now, interval, codel.count));
            true
        } else {
            false
        }
    }
}

/// CoDel's control law: the next shed `interval / sqrt(count)` after `t`.
fn control_law(t: Instant, interval: Duration, count: u32) -> Instant {
    t + interval.div_f64(f64::from(count.max(1)).sqrt())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(100);
    const INTERVAL: Duration = Duration::from_secs(1);

    fn codel() -> Discipline {
        Discipline::new(QueueDiscipline::CoDel {
            target: TARGET,
            interval: INTERVAL,
        })
    }

    #[test]
    fn codel_sheds_only_after_a_whole_interval_above_target() {
        let mut d = codel();
        let t0 = Instant::now();
        let above = Duration::from_millis(150);
        assert!(!d.shed(above, t0));
        assert!(!d.shed(above, t0 + Duration::from_millis(999)));
        assert!(d.shed(above, t0 + INTERVAL));
        // The next after interval / sqrt(1), then interval / sqrt(2) (707 ms).
        let t1 = t0 + INTERVAL;
        assert!(!d.shed(above, t1 + Duration::from_millis(999)));
        assert!(d.shed(above, t1 + INTERVAL));
        let t2 = t1 + INTERVAL;
        assert!(!d.shed(above, t2 + Duration::from_millis(700)));
        assert!(d.shed(above, t2 + Duration::from_millis(708)));
        // A served waiter below target ends the dropping state.
        assert!(!d.shed(Duration::from_millis(10), t2 + Duration::from_secs(2)));
        assert!(!d.shed(above, t2 + Duration::from_secs(2)));
    }

    #[test]
    fn codel_never_sheds_below_target() {
        let mut d = codel();
        let t0 = Instant::now();
        for s in 0..100 {
            assert!(!d.shed(Duration::from_millis(99), t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn adaptive_lifo_turns_on_once_the_queue_stands() {
        let mut d = Discipline::new(QueueDiscipline::ADAPTIVE_LIFO);
        let t0 = Instant::now();
        assert!(!d.lifo(t0));
        d.on_nonempty(t0);
        assert!(!d.lifo(t0 + Duration::from_millis(99)));
        assert!(d.lifo(t0 + Duration::from_millis(100)));
        d.on_empty();
        assert!(!d.lifo(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn fifo_never_sheds_nor_reverses() {
        let mut d = Discipline::new(QueueDiscipline::Fifo);
        let t0 = Instant::now();
        d.on_nonempty(t0);
        assert!(!d.lifo(t0 + Duration::from_secs(60)));
        assert!(!d.shed(Duration::from_secs(60), t0 + Duration::from_secs(60)));
    }
}
