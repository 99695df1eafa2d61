//! Task holds: slots that outlive the request that took them.
//!
//! MCP runs a long tool as a *background task*: the server answers
//! `tools/call` at once with a task handle and goes on working, and the
//! client polls (`tasks/get`) until the task ends. A limiter that frees the
//! slot when that first answer leaves does not limit the work at all. So an
//! edge that sees a task handle turns the call's [`Permit`] into a *hold*
//! here, keyed by the scope the task id belongs to (a session, a stdio
//! connection, an identified caller) and the task id, and ends the hold when
//! the task ends. The permit keeps everything it charged — the global slots,
//! the tool's and the client's — until then.
//!
//! A hold ends **exactly once**, whichever comes first ([`HoldEnd`] says
//! which, and is counted in [`TaskHoldsSnapshot::ended`]):
//!
//! - a terminal status (`completed`, `failed`, `cancelled`) seen in an
//!   answer or a notification — the edge calls [`TaskHolds::end`];
//! - an acknowledged `tasks/cancel`, or an "unknown task" answer;
//! - the task's TTL, counted on tokio's clock from when the hold was made
//!   ([`TaskHolds::expire`]);
//! - its scope closing (a session ends: [`TaskHolds::end_scope`]);
//! - the cap (below).
//!
//! **The cap.** The table holds at most `max_holds` holds. Every hold keeps a
//! permit, so a table under the cap is also bounded by the limit; the cap
//! bounds memory when the limit is high. Past the cap, the hold *least
//! recently known to be alive* (not asked about, nor confirmed working, for
//! the longest time) is ended with [`HoldEnd::Cap`] to make room: that is the
//! task most likely over already, its end unseen. The new hold is kept: its
//! task has just started and certainly works.
//!
//! **Polling.** A client that stops polling must not keep a slot for the
//! whole TTL. Each hold remembers when it was last known alive
//! ([`TaskHolds::seen`]); [`TaskHolds::due`] lists those not seen for their
//! poll interval, so that the edge asks the server itself.
//!
//! The table is sans-IO: every method that reads the clock takes `now`, a
//! [`tokio::time::Instant`]; [`TaskHolds::next_wake`] tells the edge's timer
//! when to call [`TaskHolds::expire`] and [`TaskHolds::due`] next, and
//! [`TaskHolds::changed`] wakes it when a hold is added.
//!
//! ```
//! use std::time::Duration;
//!
//! use mcp_backpressure::task_holds::{HoldEnd, Lifetime, TaskHolds};
//! use mcp_backpressure::{Limiter, LimiterConfig, Outcome};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
//! let holds = TaskHolds::new(100);
//! let permit = limiter.acquire().await.unwrap();
//! // The server answered with a task handle: the slot stays taken.
//! let lifetime = Lifetime::new(Some(Duration::from_secs(60)), Some(Duration::from_secs(1)));
//! holds.hold("session-1", "task-7", permit, lifetime, Instant::now());
//! assert!(limiter.acquire().await.is_err());
//! // `tasks/get` said `completed`: the slot is free.
//! assert!(holds.end(&"session-1", "task-7", HoldEnd::Terminal, Outcome::Success));
//! assert!(!holds.end(&"session-1", "task-7", HoldEnd::Terminal, Outcome::Success));
//! assert!(limiter.acquire().await.is_ok());
//! # }
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Outcome, Permit};

/// The default cap on holds ([`TaskHolds::new`]'s usual argument).
pub const DEFAULT_MAX_HOLDS: usize = 10_000;

/// The poll interval assumed when the server gives none: how long a hold
/// may go unconfirmed before the edge asks about it itself.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest poll interval honoured: a server asking for faster polls is
/// asked at this pace, so a table of holds cannot become a busy loop.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The longest poll interval honoured: a server asking for slower polls (or
/// none for a task with no TTL) is asked at this pace, so a hold whose
/// client vanished never goes unasked for long.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// Why a hold ended. Each cause is counted ([`TaskHoldsSnapshot::ended`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HoldEnd {
    /// A terminal status (`completed`, `failed`, `cancelled`) seen in an
    /// answer to the client's poll or in a notification.
    Terminal,
    /// An acknowledged `tasks/cancel`.
    Cancel,
    /// The task's TTL ran out.
    Ttl,
    /// The edge's own poll (nobody else asked) found it terminal.
    OwnPoll,
    /// The server said it does not know the task.
    UnknownTask,
    /// Ended to make room past the cap.
    Cap,
    /// Its scope closed (the session ended, the connection went away, the
    /// server shut down).
    Closed,
}

impl HoldEnd {
    /// Every cause, in a fixed order.
    pub const ALL: [HoldEnd; 7] = [
        HoldEnd::Terminal,
        HoldEnd::Cancel,
        HoldEnd::Ttl,
        HoldEnd::OwnPoll,
        HoldEnd::UnknownTask,
        HoldEnd::Cap,
        HoldEnd::Closed,
    ];

    /// The cause's label in metrics (`terminal`, `cancel`, `ttl`,
    /// `own_poll`, `unknown_task`, `cap`, `closed`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HoldEnd::Terminal => "terminal",
            HoldEnd::Cancel => "cancel",
            HoldEnd::Ttl => "ttl",
            HoldEnd::OwnPoll => "own_poll",
            HoldEnd::UnknownTask => "unknown_task",
            HoldEnd::Cap => "cap",
            HoldEnd::Closed => "closed",
        }
    }

    const fn index(self) -> usize {
        match self {
            HoldEnd::Terminal => 0,
            HoldEnd::Cancel => 1,
            HoldEnd::Ttl => 2,
            HoldEnd::OwnPoll => 3,
            HoldEnd::UnknownTask => 4,
            HoldEnd::Cap => 5,
            HoldEnd::Closed => 6,
        }
    }
}

impl fmt::Display for HoldEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a task may live, as its server said: its TTL (`None`: the
/// server set none — the hold then ends only by another cause) and its poll
/// interval (`None`: [`DEFAULT_POLL_INTERVAL`]; at least
/// [`MIN_POLL_INTERVAL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    ttl: Option<Duration>,
    poll_interval: Option<Duration>,
}

impl Lifetime {
    /// A lifetime from a task handle's TTL and poll interval.
    pub const fn new(ttl: Option<Duration>, poll_interval: Option<Duration>) -> Self {
        Self { ttl, poll_interval }
    }

    /// From the milliseconds a task handle carries (`ttl`/`ttlMs`,
    /// `pollInterval`/`pollIntervalMs`).
    pub const fn from_millis(ttl_ms: Option<u64>, poll_interval_ms: Option<u64>) -> Self {
        Self {
            ttl: match ttl_ms {
                Some(ms) => Some(Duration::from_millis(ms)),
                None => None,
            },
            poll_interval: match poll_interval_ms {
                Some(ms) => Some(Duration::from_millis(ms)),
                None => None,
            },
        }
    }

    /// The TTL.
    pub const fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The poll interval in force (the default when none was given, never
    /// below [`MIN_POLL_INTERVAL`]).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
            .unwrap_or(DEFAULT_POLL_INTERVAL)
            .clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
    }
}

/// What [`TaskHolds::hold`] did.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Held<S> {
    /// The hold is in the table.
    New,
    /// A hold with this scope and task id was already there: it is kept,
    /// and the new permit was given back (a server does not hand out one
    /// task id twice; a second handle for it is the same task).
    Already,
    /// The hold is in the table; to make room, the hold of this scope and
    /// task id was ended ([`HoldEnd::Cap`]).
    Evicted(S, Arc<str>),
}

/// Holds ended, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HoldsEnded {
    /// [`HoldEnd::Terminal`].
    pub terminal: u64,
    /// [`HoldEnd::Cancel`].
    pub cancel: u64,
    /// [`HoldEnd::Ttl`].
    pub ttl: u64,
    /// [`HoldEnd::OwnPoll`].
    pub own_poll: u64,
    /// [`HoldEnd::UnknownTask`].
    pub unknown_task: u64,
    /// [`HoldEnd::Cap`].
    pub cap: u64,
    /// [`HoldEnd::Closed`].
    pub closed: u64,
}

impl HoldsEnded {
    /// The count for one cause.
    pub fn get(&self, cause: HoldEnd) -> u64 {
        match cause {
            HoldEnd::Terminal => self.terminal,
            HoldEnd::Cancel => self.cancel,
            HoldEnd::Ttl => self.ttl,
            HoldEnd::OwnPoll => self.own_poll,
            HoldEnd::UnknownTask => self.unknown_task,
            HoldEnd::Cap => self.cap,
            HoldEnd::Closed => self.closed,
        }
    }

    /// Every cause together.
    pub fn total(&self) -> u64 {
        HoldEnd::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

/// A consistent view of a [`TaskHolds`] table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskHoldsSnapshot {
    /// Holds now (tasks whose calls keep their permits).
    pub held: usize,
    /// Slots of the global limit those permits hold.
    pub slots: usize,
    /// The cap.
    pub max_holds: usize,
    /// Holds ever made.
    pub created: u64,
    /// Holds ended, by cause.
    pub ended: HoldsEnded,
}

/// The table of task holds. Cheap to clone (shared); `S` is the scope a task
/// id is unique in; `T` is what an edge keeps with each hold (how to ask
/// about it, say), gone with the hold whichever way it ends
/// ([`TaskHolds::with_data`], [`TaskHolds::hold_with`], [`TaskHolds::data`]).
pub struct TaskHolds<S, T = ()> {
    inner: Arc<Inner<S, T>>,
}

struct Inner<S, T> {
    table: Mutex<Table<S, T>>,
    changed: Notify,
}

struct Table<S, T> {
    max_holds: usize,
    holds: HashMap<S, HashMap<Arc<str>, Hold<T>>>,
    len: usize,
    slots: usize,
    created: u64,
    /// Orders the times holds were seen (ties broken by it).
    next_seq: u64,
    ended: [u64; HoldEnd::ALL.len()],
}

struct Hold<T> {
    permit: Permit,
    /// The edge's own data.
    data: T,
    /// When its TTL runs out.
    deadline: Option<Instant>,
    poll_interval: Duration,
    /// When it was last known alive (made, asked about, confirmed working).
    seen: Instant,
    /// Orders holds seen at the same instant (older first).
    seq: u64,
}

impl<T> Hold<T> {
    /// When its own poll falls due (`None`: a poll interval past the
    /// clock's range, never).
    fn poll_due(&self) -> Option<Instant> {
        self.seen.checked_add(self.poll_interval)
    }
}

impl<S, T> Clone for TaskHolds<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S, T> fmt::Debug for TaskHolds<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.table.lock();
        f.debug_struct("TaskHolds")
            .field("held", &table.len)
            .field("max_holds", &table.max_holds)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Eq + Hash> TaskHolds<S> {
    /// An empty table of at most `max_holds` holds (0 acts as 1), with no
    /// data of the edge's.
    pub fn new(max_holds: usize) -> Self {
        Self::with_data(max_holds)
    }

    /// Turns `permit` into the hold of task `task_id` in `scope`, made at
    /// `now` (its TTL counts from then).
    pub fn hold(
        &self,
        scope: S,
        task_id: &str,
        permit: Permit,
        lifetime: Lifetime,
        now: Instant,
    ) -> Held<S> {
        self.hold_with(scope, task_id, permit, lifetime, now, ())
    }
}

impl<S: Clone + Eq + Hash, T> TaskHolds<S, T> {
    /// An empty table of at most `max_holds` holds (0 acts as 1), each
    /// keeping a `T` of the edge's.
    pub fn with_data(max_holds: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Mutex::new(Table {
                    max_holds: max_holds.max(1),
                    holds: HashMap::new(),
                    len: 0,
                    slots: 0,
                    created: 0,
                    next_seq: 0,
                    ended: [0; HoldEnd::ALL.len()],
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// Changes the cap. Holds over a lowered cap stay until they end; no new
    /// one is made without ending the stalest.
    pub fn set_max_holds(&self, max_holds: usize) {
        self.inner.table.lock().max_holds = max_holds.max(1);
    }

    /// [`TaskHolds::hold`], keeping `data` with the hold (dropped when the
    /// hold ends; a second hold of a held task drops its own).
    pub fn hold_with(
        &self,
        scope: S,
        task_id: &str,
        permit: Permit,
        lifetime: Lifetime,
        now: Instant,
        data: T,
    ) -> Held<S> {
        let mut table = self.inner.table.lock();
        if table
            .holds
            .get(&scope)
            .is_some_and(|tasks| tasks.contains_key(task_id))
        {
            drop(table);
            drop((permit, data));
            return Held::Already;
        }
        let mut evicted = None;
        if table.len >= table.max_holds {
            evicted = table.stalest();
        }
        let evicted = evicted.map(|(scope, id)| {
            let hold = table.remove(&scope, &id).expect("just found");
            table.ended[HoldEnd::Cap.index()] += 1;
            (scope, id, hold)
        });
        let seq = table.next_seq;
        table.next_seq += 1;
        table.created += 1;
        table.len += 1;
        table.slots += permit.cost();
        let hold = Hold {
            permit,
            data,
            // A TTL past the clock's range never runs out (no panic on a
            // server's absurd number).
            deadline: lifetime.ttl.and_then(|ttl| now.checked_add(ttl)),
            poll_interval: lifetime.poll_interval(),
            seen: now,
            seq,
        };
        table
            .holds
            .entry(scope)
            .or_default()
            .insert(Arc::from(task_id), hold);
        drop(table);
        self.inner.changed.notify_one();
        match evicted {
            Some((scope, id, hold)) => {
                tracing::warn!(task = %id, "task holds at their cap: the stalest hold ended");
                drop(hold);
                Held::Evicted(scope, id)
            }
            None => Held::New,
        }
    }

    /// Ends the hold of `task_id` in `scope`, its permit reporting `outcome`
    /// (use [`Outcome::Ignore`] unless the task ran to its end). Returns
    /// whether there was one: a hold ends once.
    pub fn end<Q>(&self, scope: &Q, task_id: &str, cause: HoldEnd, outcome: Outcome) -> bool
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut table = self.inner.table.lock();
        let Some(mut hold) = table.remove(scope, task_id) else {
            return false;
        };
        table.ended[cause.index()] += 1;
        drop(table);
        hold.permit.set_outcome(outcome);
        // The slot is given back outside the table's lock.
        drop(hold);
        true
    }

    /// Ends every hold of `scope` ([`HoldEnd::Closed`], outcome `Ignore`).
    /// Returns their task ids.
    pub fn end_scope<Q>(&self, scope: &Q) -> Vec<Arc<str>>
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut table = self.inner.table.lock();
        let Some(tasks) = table.holds.remove(scope) else {
            return Vec::new();
        };
        table.len -= tasks.len();
        table.slots -= tasks.values().map(|h| h.permit.cost()).sum::<usize>();
        table.ended[HoldEnd::Closed.index()] += tasks.len() as u64;
        drop(table);
        tasks.into_keys().collect()
    }

    /// Ends every hold ([`HoldEnd::Closed`]): the edge is shutting down.
    pub fn end_all(&self) -> usize {
        let mut table = self.inner.table.lock();
        let holds = std::mem::take(&mut table.holds);
        let n = table.len;
        table.ended[HoldEnd::Closed.index()] += n as u64;
        table.len = 0;
        table.slots = 0;
        drop(table);
        drop(holds);
        n
    }

    /// The data kept with the hold of `task_id` in `scope`, if it is held.
    pub fn data<Q>(&self, scope: &Q, task_id: &str) -> Option<T>
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
        T: Clone,
    {
        self.inner
            .table
            .lock()
            .holds
            .get(scope)
            .and_then(|tasks| tasks.get(task_id))
            .map(|hold| hold.data.clone())
    }

    /// Whether `task_id` in `scope` holds a slot.
    pub fn contains<Q>(&self, scope: &Q, task_id: &str) -> bool
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.inner
            .table
            .lock()
            .holds
            .get(scope)
            .is_some_and(|tasks| tasks.contains_key(task_id))
    }

    /// The task is known alive at `now` (someone asked about it, or an
    /// answer said it still works): its own poll waits another interval.
    /// Returns whether it is held.
    pub fn seen<Q>(&self, scope: &Q, task_id: &str, now: Instant) -> bool
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut table = self.inner.table.lock();
        let seq = table.next_seq;
        table.next_seq += 1;
        match table
            .holds
            .get_mut(scope)
            .and_then(|tasks| tasks.get_mut(task_id))
        {
            Some(hold) => {
                hold.seen = hold.seen.max(now);
                hold.seq = seq;
                true
            }
            None => false,
        }
    }

    /// Ends every hold whose TTL ran out by `now` ([`HoldEnd::Ttl`]).
    /// Returns them.
    pub fn expire(&self, now: Instant) -> Vec<(S, Arc<str>)> {
        let mut table = self.inner.table.lock();
        let due: Vec<(S, Arc<str>)> = table
            .iter()
            .filter(|(_, _, h)| h.deadline.is_some_and(|d| d <= now))
            .map(|(s, id, _)| (s.clone(), id.clone()))
            .collect();
        let mut permits = Vec::with_capacity(due.len());
        for (scope, id) in &due {
            if let Some(hold) = table.remove(scope, id) {
                table.ended[HoldEnd::Ttl.index()] += 1;
                permits.push(hold);
            }
        }
        drop(table);
        drop(permits);
        due
    }

    /// The holds whose TTL ran out by `now`, without ending them: for an edge
    /// that checks with the server first ([`TaskHolds::extend`] gives one
    /// more time; [`TaskHolds::end`] with [`HoldEnd::Ttl`] ends it).
    pub fn overdue(&self, now: Instant) -> Vec<(S, Arc<str>)> {
        let table = self.inner.table.lock();
        table
            .iter()
            .filter(|(_, _, h)| h.deadline.is_some_and(|d| d <= now))
            .map(|(s, id, _)| (s.clone(), id.clone()))
            .collect()
    }

    /// Moves the TTL deadline of `task_id` in `scope` to `until`. Returns
    /// whether it is held.
    pub fn extend<Q>(&self, scope: &Q, task_id: &str, until: Instant) -> bool
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut table = self.inner.table.lock();
        match table
            .holds
            .get_mut(scope)
            .and_then(|tasks| tasks.get_mut(task_id))
        {
            Some(hold) => {
                hold.deadline = Some(until);
                true
            }
            None => false,
        }
    }

    /// The holds not known alive for their poll interval by `now`: the edge
    /// should ask the server about each. Each counts as seen at `now` (the
    /// next is due an interval later, whether or not the question is
    /// answered).
    pub fn due(&self, now: Instant) -> Vec<(S, Arc<str>)> {
        let mut table = self.inner.table.lock();
        let mut due = Vec::new();
        for (scope, tasks) in &mut table.holds {
            for (id, hold) in tasks.iter_mut() {
                if hold.poll_due().is_some_and(|at| at <= now) {
                    hold.seen = now;
                    due.push((scope.clone(), id.clone()));
                }
            }
        }
        due
    }

    /// The earliest instant a TTL runs out or a poll falls due (`None`: no
    /// hold).
    pub fn next_wake(&self) -> Option<Instant> {
        let table = self.inner.table.lock();
        table
            .iter()
            .filter_map(|(_, _, h)| match (h.deadline, h.poll_due()) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            })
            .min()
    }

    /// Resolves when a hold is added (so a timer sleeping until
    /// [`TaskHolds::next_wake`] looks again).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a hold added while no one waits is remembered (one
    /// permit, as [`Notify::notify_one`]).
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Holds now.
    pub fn len(&self) -> usize {
        self.inner.table.lock().len
    }

    /// Whether there is no hold.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A consistent view of the table.
    pub fn snapshot(&self) -> TaskHoldsSnapshot {
        let table = self.inner.table.lock();
        let ended = |c: HoldEnd| table.ended[c.index()];
        TaskHoldsSnapshot {
            held: table.len,
            slots: table.slots,
            max_holds: table.max_holds,
            created: table.created,
            ended: HoldsEnded {
                terminal: ended(HoldEnd::Terminal),
                cancel: ended(HoldEnd::Cancel),
                ttl: ended(HoldEnd::Ttl),
                own_poll: ended(HoldEnd::OwnPoll),
                unknown_task: ended(HoldEnd::UnknownTask),
                cap: ended(HoldEnd::Cap),
                closed: ended(HoldEnd::Closed),
            },
        }
    }

    /// Drives the TTLs of a table no edge polls for (the rmcp wrapper, the
    /// Python package): ends holds as their TTLs run out, until dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it stops the expiry; nothing is half done.
    pub async fn run_expiry(self) {
        loop {
            let wake = self.next_deadline();
            let changed = self.changed();
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            self.expire(Instant::now());
                        }
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// The earliest TTL deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let table = self.inner.table.lock();
        table.iter().filter_map(|(_, _, h)| h.deadline).min()
    }
}

impl<S: Clone + Eq + Hash, T> Table<S, T> {
    fn iter(&self) -> impl Iterator<Item = (&S, &Arc<str>, &Hold<T>)> {
        self.holds
            .iter()
            .flat_map(|(s, tasks)| tasks.iter().map(move |(id, h)| (s, id, h)))
    }

    fn remove<Q>(&mut self, scope: &Q, task_id: &str) -> Option<Hold<T>>
    where
        S: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let tasks = self.holds.get_mut(scope)?;
        let hold = tasks.remove(task_id)?;
        if tasks.is_empty() {
            self.holds.remove(scope);
        }
        self.len -= 1;
        self.slots -= hold.permit.cost();
        Some(hold)
    }

    /// The hold least recently known alive.
    fn stalest(&self) -> Option<(S, Arc<str>)> {
        self.iter()
            .min_by_key(|(_, _, h)| (h.seen, h.seq))
            .map(|(s, id, _)| (s.clone(), id.clone()))
    }
}
