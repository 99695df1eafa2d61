//! The in-flight table: every client request the proxy forwarded and has not
//! seen answered, and the slots the guarded ones hold. Shared by both
//! transports; every operation returns a typed outcome (never JSON).
//!
//! A request is identified by [`Key`]: its [`Scope`] (the stdio session, an
//! HTTP session, or — without a session — its own HTTP exchange) and its id
//! *by value*. One key, one entry: a request reusing an id still in flight is
//! refused ([`Refused::Duplicate`]), so a response or a cancellation always
//! names exactly one request. The table holds at most `max_in_flight`
//! entries ([`Refused::Full`]).
//!
//! A guarded request is entered *before* it waits for a slot
//! ([`InFlight::begin`] → [`Queued`]), so that a cancellation arriving while it
//! waits takes it out of the queue. Then it moves through:
//!
//! ```text
//! Queued ──admit──> Forwarded ──response passes──────────────> gone (slot free)
//!   │                 │  └─client cancels / disconnects──> Cancelling ──┐
//!   │                 └──stream resumable, client gone───> Detached ────┤
//!   │                                   response, stream end, or grace ─┘
//!   └──cancel / session end / timeout / rejection────────────> gone
//! ```
//!
//! `Cancelling` and `Detached` keep the slot: the upstream may still be
//! working. The transport starts the grace timer ([`InFlight::expire_after`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mcp_backpressure::{Outcome, Overload, Permit, Request};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::gate::Gate;
use super::tasks::{Follow, Origin, TaskAsk, TaskScope, Tasks};
use super::wire::message::{Answer, RequestId, TaskState};

/// Where a request id is unique.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The one stdio session.
    Stdio,
    /// An HTTP session (`Mcp-Session-Id`).
    Session(Arc<str>),
    /// One HTTP exchange without a session: nobody else can reach its requests.
    Exchange(u64),
}

/// A request in the table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Its scope.
    pub scope: Scope,
    /// Its id.
    pub id: RequestId,
}

/// One entry's generation: an operation by ticket never touches a newer
/// request that reuses the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// What a guarded request asks the limiter for: its tool (or method) and
/// its client's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The tool's name (`params.name` of a `tools/call`), or the method.
    pub tool: Arc<str>,
    /// The client's key; `None`: the one keyless client.
    pub client: Option<Arc<str>>,
    /// It continues a multi-round-trip call (it carries `inputResponses` or
    /// `requestState`): admitted ahead of the queue.
    pub continuation: bool,
}

/// What a request is, as far as tasks go.
#[derive(Clone, Debug, Default)]
pub enum Purpose {
    /// Nothing to do with tasks.
    #[default]
    Plain,
    /// A guarded call, which the upstream may answer with a task handle:
    /// then its slot is held until the task ends.
    Call {
        /// The scope its task would belong to.
        tasks: TaskScope,
        /// Over HTTP: how to ask the upstream about its task.
        origin: Option<Arc<Origin>>,
        /// Its `params._meta`, as sent.
        meta: Option<Box<str>>,
        /// It asked for a task (2025-11-25 `params.task`): a `result.task`
        /// in its answer is a handle. (A 2026-07-28 `resultType: "task"`
        /// is one whatever was asked.)
        wants_task: bool,
    },
    /// A request about a task.
    Task(TaskAsk),
}

/// What [`InFlight::answered`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// No request in flight had the id.
    Nothing,
    /// A client's request, whose id (as its client wrote it) this is:
    /// forward the answer.
    Client(RequestId),
    /// The proxy's own poll: do not forward it.
    Own,
}

impl Answered {
    /// A forwarded request was waiting for the answer.
    #[cfg(test)]
    pub fn was_waiting(&self) -> bool {
        *self != Self::Nothing
    }
}

/// Why [`InFlight::begin`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its id is still in flight in its scope.
    #[error("the request id {0} is already in flight in this session")]
    Duplicate(RequestId),
    /// The table is full.
    #[error("the proxy already tracks {max} requests in flight (max_in_flight)")]
    Full {
        /// The bound.
        max: usize,
    },
}

/// What [`InFlight::begin`] entered.
#[derive(Debug)]
pub enum Begun {
    /// A guarded request, waiting for a slot: call [`Queued::admit`].
    Queued(Queued),
    /// An unguarded request, forwarded without a slot.
    Tracked(Ticket),
}

/// How [`Queued::admit`] ended.
#[derive(Debug)]
pub enum Admission {
    /// The request holds a slot: forward it.
    Admitted(Ticket),
    /// The request was turned away: answer it with this.
    Rejected(Overload),
    /// The client cancelled it, or its session ended, while it waited:
    /// answer nothing (the upstream never saw it).
    Cancelled,
}

/// What [`InFlight::cancel`] found.
#[derive(Debug)]
pub enum Cancel {
    /// It was waiting for a slot and is leaving the queue ([`Left`] tells
    /// when it is out). Do not forward the cancellation.
    Queued(Left),
    /// It had been forwarded: forward the cancellation; it keeps its slot
    /// (if any) until the upstream answers or the grace passes — start the
    /// timer with this ticket.
    Forwarded(Ticket),
    /// Not in flight (or already cancelled): forward the cancellation as it is.
    Unknown,
}

/// What [`InFlight::expire`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// A cancelled request's grace passed: its slot is free.
    Cancelling,
    /// A detached request was not picked up in time: its slot is free;
    /// cancel it upstream now.
    Detached,
}

/// A request still pending when its session ended (see [`InFlight::drain`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    /// Its key.
    pub key: Key,
    /// Whether the upstream had seen it (`false`: it was waiting for a slot).
    pub forwarded: bool,
}

/// The table. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct InFlight {
    gate: Arc<Gate>,
    table: Arc<Mutex<Table>>,
    tasks: Tasks,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    entries: HashMap<Key, Entry>,
}

#[derive(Debug)]
struct Entry {
    ticket: u64,
    state: State,
    purpose: Purpose,
}

#[derive(Debug)]
enum State {
    Queued {
        wake: oneshot::Sender<()>,
        left: oneshot::Receiver<()>,
    },
    Forwarded(Option<Slot>),
    Cancelling(Option<Slot>),
    Detached(Option<Slot>),
}

impl State {
    /// Cancelled or detached.
    fn held(&self) -> bool {
        matches!(self, State::Cancelling(_) | State::Detached(_))
    }

    /// Cancelled or detached, and holding a slot (what the gauge counts).
    fn holds_slot_after_cancel(&self) -> bool {
        matches!(self, State::Cancelling(Some(_)) | State::Detached(Some(_)))
    }
}

/// An admitted request's permit. Dropped, it gives the slot back with the
/// outcome set last (`Ignore` unless the call was classified).
#[derive(Debug)]
struct Slot {
    permit: Permit,
    /// When the slot was handed over (the limiter times only some permits).
    admitted_at: Instant,
}

impl Slot {
    /// The upstream answered the call: its time held is a service time,
    /// whatever the answer said.
    fn answered(&mut self, gate: &Gate, outcome: Outcome) {
        let held = Instant::now().saturating_duration_since(self.admitted_at);
        gate.metrics.observe_service_time(held);
        self.permit.set_outcome(outcome);
    }
}

fn set_outcome(slot: &mut Option<Slot>, outcome: Outcome) {
    if let Some(slot) = slot {
        slot.permit.set_outcome(outcome);
    }
}

impl InFlight {
    /// An empty table in front of `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        let tasks = gate.tasks.clone();
        Self {
            gate,
            table: Arc::new(Mutex::new(Table::default())),
            tasks,
        }
    }

    /// The shared admission control.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The task holds.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing that can panic runs under this lock.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a request about to be forwarded (`guarded`: after a slot, as
    /// it asks). Call it in the order requests arrive, before reading the
    /// next one.
    ///
    /// # Errors
    ///
    /// [`Refused`] if its id is in flight in its scope, or the table is full.
    ///
    /// A request about a task ([`Purpose::Task`]) is never refused for a
    /// full table: task polls and cancels always pass (they hold no slot).
    pub fn begin(
        &self,
        key: Key,
        guarded: Option<Ask>,
        purpose: Purpose,
    ) -> Result<Begun, Refused> {
        let mut table = self.lock();
        if table.entries.contains_key(&key) {
            return Err(Refused::Duplicate(key.id));
        }
        let max = self.gate.settings.max_in_flight;
        if table.entries.len() >= max && !matches!(purpose, Purpose::Task(_)) {
            return Err(Refused::Full { max });
        }
        let ticket = table.next;
        table.next += 1;
        self.gate.metrics.in_flight.inc();
        let Some(ask) = guarded else {
            let state = State::Forwarded(None);
            table.entries.insert(
                key,
                Entry {
                    ticket,
                    state,
                    purpose,
                },
            );
            return Ok(Begun::Tracked(Ticket(ticket)));
        };
        let (wake, woken) = oneshot::channel();
        let (leaving, left) = oneshot::channel();
        let state = State::Queued { wake, left };
        table.entries.insert(
            key.clone(),
            Entry {
                ticket,
                state,
                purpose,
            },
        );
        Ok(Begun::Queued(Queued {
            inflight: self.clone(),
            key,
            ask,
            ticket,
            woken: Some(woken),
            _leaving: leaving,
        }))
    }

    /// Removes `key` if `keep` says so; accounts for it. Returns the entry
    /// and its key as entered (its id as the client wrote it).
    fn remove_if(&self, key: &Key, keep: impl FnOnce(&Entry) -> bool) -> Option<(Key, Entry)> {
        let mut table = self.lock();
        let entry = table.entries.get(key)?;
        if !keep(entry) {
            return None;
        }
        let (key, entry) = table.entries.remove_entry(key)?;
        drop(table);
        self.gate.metrics.in_flight.dec();
        if entry.state.holds_slot_after_cancel() {
            self.gate.metrics.held_after_cancel.dec();
        }
        Some((key, entry))
    }

    /// A response to `key` passed back: the request is over and its slot
    /// free, with `outcome` (`Ignore` if the client had cancelled it or gone
    /// away) — unless `reply` (what the response said, when the proxy read
    /// it) is a task handle answering a guarded call: then the slot is held
    /// until the task ends (see [`Tasks`]). A reply to a request about a task
    /// goes to the task holds too.
    pub fn answered(
        &self,
        key: &Key,
        outcome: Outcome,
        reply: Option<(Answer, Option<&TaskState>)>,
    ) -> Answered {
        let entry = self.remove_if(key, |e| !matches!(e.state, State::Queued { .. }));
        let Some((entered, mut entry)) = entry else {
            return Answered::Nothing;
        };
        let handle = reply.and_then(|(_, task)| task).filter(|t| {
            t.handle
                && matches!(
                    &entry.purpose,
                    Purpose::Call { wants_task, .. } if *wants_task || t.flattened
                )
        });
        match (&mut entry.state, handle, &entry.purpose) {
            (
                State::Forwarded(slot @ Some(_))
                | State::Detached(slot @ Some(_))
                // Cancelled, but answered with a handle anyway (a 2025-11-25
                // cancellation does not cancel a task): the task works.
                | State::Cancelling(slot @ Some(_)),
                Some(task),
                Purpose::Call {
                    tasks,
                    origin,
                    meta,
                    ..
                },
            ) => {
                let slot = slot.take().expect("matched Some");
                let follow = Follow::new(origin.clone(), meta.as_deref());
                self.tasks.hold(tasks.clone(), task, slot.permit, follow);
            }
            (State::Forwarded(Some(slot)), _, _) => slot.answered(&self.gate, outcome),
            (State::Cancelling(slot) | State::Detached(slot), _, _) => {
                set_outcome(slot, Outcome::Ignore);
            }
            _ => {}
        }
        let answered = match &entry.purpose {
            Purpose::Task(ask) => {
                if let Some((answer, task)) = reply {
                    self.tasks.answered(ask, answer, task);
                }
                if ask.own {
                    Answered::Own
                } else {
                    Answered::Client(entered.id)
                }
            }
            _ => Answered::Client(entered.id),
        };
        // The slot is dropped (and the next waiter woken) outside the lock.
        drop(entry);
        answered
    }

    /// The request `ticket` is over without a response the proxy saw (its
    /// stream ended or broke); `outcome` says whether its time counts.
    /// Returns whether it was still in flight.
    pub fn finish(&self, key: &Key, ticket: Ticket, outcome: Outcome) -> bool {
        let entry = self.remove_if(key, |e| {
            e.ticket == ticket.0 && !matches!(e.state, State::Queued { .. })
        });
        match entry {
            Some((_, mut entry)) => {
                if let State::Forwarded(slot) = &mut entry.state {
                    set_outcome(slot, outcome);
                } else if let State::Cancelling(slot) | State::Detached(slot) = &mut entry.state {
                    set_outcome(slot, Outcome::Ignore);
                }
                true
            }
            None => false,
        }
    }

    /// The client cancelled `key`.
    pub fn cancel(&self, key: &Key) -> Cancel {
        let mut table = self.lock();
        let Some(entry) = table.entries.get_mut(key) else {
            return Cancel::Unknown;
        };
        let ticket = Ticket(entry.ticket);
        match &mut entry.state {
            State::Forwarded(slot) => {
                let slot = slot.take();
                if slot.is_some() {
                    self.gate.metrics.held_after_cancel.inc();
                }
                entry.state = State::Cancelling(slot);
                Cancel::Forwarded(ticket)
            }
            State::Detached(slot) => {
                let slot = slot.take();
                entry.state = State::Cancelling(slot);
                Cancel::Forwarded(ticket)
            }
            State::Cancelling(_) => Cancel::Unknown,
            State::Queued { .. } => {
                let entry = table.entries.remove(key).expect("just found");
                drop(table);
                self.gate.metrics.in_flight.dec();
                let State::Queued { wake, left } = entry.state else {
                    unreachable!("matched above")
                };
                let _ = wake.send(());
                Cancel::Queued(Left(left))
            }
        }
    }

    /// The client went away from the forwarded request `ticket` before its
    /// response passed. `resumable`: its stream can be resumed elsewhere, so
    /// it waits for its response on any stream ([`Expired::Detached`] if it
    /// never comes); else the caller cancels it upstream and it waits for the
    /// upstream to finish. Returns whether it was still in flight (then start
    /// the grace timer).
    ///
    /// A request without a slot is simply over: holding it would protect no
    /// capacity, and would let a client that abandons requests fill the table
    /// that every client shares.
    pub fn abandon(&self, key: &Key, ticket: Ticket, resumable: bool) -> bool {
        let mut table = self.lock();
        let Some(entry) = table.entries.get_mut(key) else {
            return false;
        };
        if entry.ticket != ticket.0 {
            return false;
        }
        let State::Forwarded(slot) = &mut entry.state else {
            return false;
        };
        if slot.is_none() {
            table.entries.remove(key);
            drop(table);
            self.gate.metrics.in_flight.dec();
            return true;
        }
        let slot = slot.take();
        entry.state = if resumable {
            State::Detached(slot)
        } else {
            State::Cancelling(slot)
        };
        self.gate.metrics.held_after_cancel.inc();
        true
    }

    /// The grace of a cancelled or detached request passed: frees its slot.
    pub fn expire(&self, key: &Key, ticket: Ticket) -> Option<Expired> {
        let (_, mut entry) = self.remove_if(key, |e| e.ticket == ticket.0 && e.state.held())?;
        if entry.state.holds_slot_after_cancel() {
            self.gate.metrics.cancel_grace_expired.inc();
        }
        match &mut entry.state {
            State::Cancelling(slot) => {
                set_outcome(slot, Outcome::Ignore);
                Some(Expired::Cancelling)
            }
            State::Detached(slot) => {
                set_outcome(slot, Outcome::Ignore);
                Some(Expired::Detached)
            }
            _ => None,
        }
    }

    /// Calls [`InFlight::expire`] after `grace` (at once for zero), then
    /// `then` with what expired, if anything did.
    pub fn expire_after(
        &self,
        key: Key,
        ticket: Ticket,
        grace: Duration,
        then: impl FnOnce(Expired) + Send + 'static,
    ) {
        if grace.is_zero() {
            if let Some(expired) = self.expire(&key, ticket) {
                then(expired);
            }
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(expired) = this.expire(&key, ticket) {
                tracing::debug!(id = %key.id, ?expired, "cancel grace passed; slot freed");
                then(expired);
            }
        });
    }

    /// Ends every request of `scope` (every request, for `None`): waiting
    /// ones leave the queue first (so no freed slot is handed to them), then
    /// forwarded ones free their slots. Returns them, oldest first, so that
    /// the caller can answer or cancel them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the requests are out of the table as soon as it is first
    /// polled; dropping it only stops waiting for queued ones to leave.
    pub async fn drain(&self, scope: Option<&Scope>) -> Vec<Pending> {
        let mut entries: Vec<(Key, Entry)> = {
            let mut table = self.lock();
            let keys: Vec<Key> = table
                .entries
                .keys()
                .filter(|k| scope.is_none_or(|s| &k.scope == s))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| table.entries.remove(&k).map(|e| (k, e)))
                .collect()
        };
        entries.sort_by_key(|(_, e)| e.ticket);
        let mut lefts = Vec::new();
        let mut slots = Vec::new();
        let mut pending = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            self.gate.metrics.in_flight.dec();
            if entry.state.holds_slot_after_cancel() {
                self.gate.metrics.held_after_cancel.dec();
            }
            let forwarded = match entry.state {
                State::Queued { wake, left } => {
                    let _ = wake.send(());
                    lefts.push(Left(left));
                    false
                }
                State::Forwarded(mut slot)
                | State::Cancelling(mut slot)
                | State::Detached(mut slot) => {
                    set_outcome(&mut slot, Outcome::Ignore);
                    slots.push(slot);
                    true
                }
            };
            pending.push(Pending { key, forwarded });
        }
        for left in lefts {
            left.wait().await;
        }
        drop(slots);
        pending
    }

    /// How many requests are in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// A guarded request entered as waiting; [`Queued::admit`] waits for its
/// slot. Dropping it (or the `admit` future) takes it out of the table.
#[derive(Debug)]
pub struct Queued {
    inflight: InFlight,
    key: Key,
    ask: Ask,
    ticket: u64,
    woken: Option<oneshot::Receiver<()>>,
    /// Dropped with the request, after its `acquire` future: tells [`Left`].
    _leaving: oneshot::Sender<()>,
}

/// Resolves once a cancelled request has left the limiter's queue.
#[derive(Debug)]
pub struct Left(oneshot::Receiver<()>);

impl Left {
    /// Waits until the request is out of the limiter's queue.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops the wait.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

impl Queued {
    /// The request's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Whether it continues a multi-round-trip call (admitted ahead).
    #[cfg(test)]
    pub fn is_continuation(&self) -> bool {
        self.ask.continuation
    }

    /// Waits for a slot, unless the client cancels first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the queue (the limiter's
    /// `acquire` is cancel safe) and removes the request from the table.
    pub async fn admit(mut self) -> Admission {
        let gate = self.inflight.gate.clone();
        let started = Instant::now();
        let woken = self.woken.take().expect("admit consumes the request once");
        let mut request = Request::new().tool(&self.ask.tool);
        if let Some(client) = &self.ask.client {
            request = request.client(client);
        }
        if self.ask.continuation {
            request = request.continuation();
        }
        let result = tokio::select! {
            biased;
            _ = woken => return Admission::Cancelled,
            result = gate.limiter.acquire_with(request) => result,
        };
        match result {
            Ok(mut permit) => {
                let mut table = self.inflight.lock();
                match table.entries.get_mut(&self.key) {
                    Some(entry) if entry.ticket == self.ticket => {
                        let admitted_at = Instant::now();
                        gate.metrics
                            .observe_queue_wait(admitted_at.saturating_duration_since(started));
                        entry.state = State::Forwarded(Some(Slot {
                            permit,
                            admitted_at,
                        }));
                        Admission::Admitted(Ticket(self.ticket))
                    }
                    // Cancelled while the slot was being handed over.
                    _ => {
                        drop(table);
                        permit.set_outcome(Outcome::Ignore);
                        Admission::Cancelled
                    }
                }
            }
            Err(overload) => {
                let still_queued = self
                    .inflight
                    .remove_if(&self.key, |e| e.ticket == self.ticket)
                    .is_some();
                if still_queued {
                    Admission::Rejected(overload)
                } else {
                    Admission::Cancelled
                }
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Still waiting (the admit future was dropped, or never polled): leave.
        self.inflight.remove_if(&self.key, |e| {
            e.ticket == self.ticket && matches!(e.state, State::Queued { .. })
        });
    }
}

#[cfg(test)]
mod tests;
