//! The heart of the proxy, shared by both transports: the table of in-flight
//! client requests and the slots they hold.
//!
//! A guarded request is registered *before* it waits for a slot, so that a
//! `notifications/cancelled` arriving while it waits takes it out of the queue.
//! Once admitted, it holds its [`Permit`] in the table until one of:
//!
//! - its response passes back from the upstream ([`InFlight::complete`] or,
//!   for a transport that knows which stream carries it, [`InFlight::finish`]);
//! - the client cancels it ([`InFlight::cancel`]);
//! - the session ends: the client left or the upstream died ([`InFlight::drain`]).
//!
//! Requests are keyed by a *scope* (the HTTP session id; empty for stdio) and
//! the JSON-RPC id as sent (`1` and `"1"` are different requests).
//! Unguarded requests can be tracked too ([`InFlight::track`]), without a slot,
//! so that they get an error, not silence, when the upstream dies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use mcp_backpressure::{Limiter, Outcome, Permit, jsonrpc};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::limits::Settings;
use super::metrics::ProxyMetrics;

/// Admission control shared by every session of one proxy.
#[derive(Debug)]
pub struct Gate {
    /// The limiter every guarded request goes through.
    pub limiter: Limiter,
    /// The validated settings.
    pub settings: Settings,
    /// Queue-wait and service-time histograms.
    pub metrics: ProxyMetrics,
}

/// A handle on one tracked request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// How [`Queued::admit`] ended.
#[derive(Debug)]
pub enum Admission {
    /// The request holds a slot: forward it.
    Admitted(Ticket),
    /// The request was turned away: send this overload error to the client.
    Rejected(Value),
    /// The client cancelled the request, or the session ended, while it
    /// waited: send nothing (the upstream never saw it).
    Cancelled,
}

/// What [`InFlight::cancel`] found.
#[derive(Debug)]
pub enum Cancelled {
    /// The request was waiting for a slot; it is leaving the queue, which
    /// [`Left`] tells. Do not forward the cancellation: the upstream never saw
    /// the request.
    Queued(Left),
    /// The request had been forwarded; its slot (if any) is free. Forward the
    /// cancellation.
    Forwarded,
    /// No such request in flight. Forward the cancellation as it is.
    Unknown,
}

/// A request still pending when the session ended (see [`InFlight::drain`]).
#[derive(Debug)]
pub struct Pending {
    /// The request's id, as sent.
    pub id: Value,
    /// Whether it had been forwarded to the upstream (`false`: it was waiting
    /// for a slot).
    pub forwarded: bool,
}

/// The in-flight requests of one proxy (every session of it). Cheap to clone.
#[derive(Clone, Debug)]
pub struct InFlight {
    gate: Arc<Gate>,
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
    by_key: HashMap<String, VecDeque<u64>>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    id: Value,
    state: State,
}

#[derive(Debug)]
enum State {
    Queued {
        wake: oneshot::Sender<()>,
        left: oneshot::Receiver<()>,
    },
    Forwarded {
        slot: Option<Slot>,
    },
}

/// An admitted request's permit; records its service time when dropped.
#[derive(Debug)]
struct Slot {
    permit: Permit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.permit.outcome() == Outcome::Success {
            let held = Instant::now().saturating_duration_since(self.permit.admitted_at());
            self.gate.metrics.observe_service_time(held);
        }
    }
}

fn key(scope: &str, id: &Value) -> String {
    format!("{scope}\u{0}{id}")
}

impl InFlight {
    /// An empty table in front of `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self {
            gate,
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// The shared admission control.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Nothing that can panic runs under this lock.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a guarded request as waiting for a slot. Call this in the
    /// order requests arrive (before anything later from the same client is
    /// read), then [`Queued::admit`] — possibly on another task.
    pub fn enqueue(&self, scope: &str, id: &Value) -> Queued {
        let (wake, woken) = oneshot::channel();
        let (leaving, left) = oneshot::channel();
        let ticket = self.insert(scope, id, State::Queued { wake, left });
        Queued {
            inflight: self.clone(),
            ticket: ticket.0,
            id: id.clone(),
            woken: Some(woken),
            _leaving: leaving,
        }
    }

    /// Registers an unguarded request that is being forwarded, so that it gets
    /// an error if the upstream dies before answering.
    pub fn track(&self, scope: &str, id: &Value) -> Ticket {
        self.insert(scope, id, State::Forwarded { slot: None })
    }

    fn insert(&self, scope: &str, id: &Value, state: State) -> Ticket {
        let key = key(scope, id);
        let mut table = self.lock();
        let ticket = table.next;
        table.next += 1;
        table
            .by_key
            .entry(key.clone())
            .or_default()
            .push_back(ticket);
        table.entries.insert(
            ticket,
            Entry {
                key,
                id: id.clone(),
                state,
            },
        );
        Ticket(ticket)
    }

    /// A response to `id` passed back: the oldest forwarded request with that
    /// id is done and its slot (if any) free. Returns whether one was found.
    pub fn complete(&self, scope: &str, id: &Value) -> bool {
        let key = key(scope, id);
        let entry = {
            let mut table = self.lock();
            let Some(tickets) = table.by_key.get(&key) else {
                return false;
            };
            let Some(ticket) = tickets.iter().copied().find(|t| {
                matches!(
                    table.entries.get(t).map(|e| &e.state),
                    Some(State::Forwarded { .. })
                )
            }) else {
                return false;
            };
            table.remove(ticket)
        };
        // The slot is dropped (and the next waiter woken) outside the lock.
        drop(entry);
        true
    }

    /// The request `ticket` is over (its response passed, or its stream ended);
    /// `outcome` says whether its service time counts. Idempotent: returns
    /// whether the request was still in flight (not already finished,
    /// cancelled or drained).
    pub fn finish(&self, ticket: Ticket, outcome: Outcome) -> bool {
        let mut entry = self.lock().remove(ticket.0);
        if let Some(Entry {
            state: State::Forwarded { slot: Some(slot) },
            ..
        }) = &mut entry
        {
            slot.permit.set_outcome(outcome);
        }
        entry.is_some()
    }

    /// The client cancelled `id`: it leaves the queue, or its slot is freed.
    pub fn cancel(&self, scope: &str, id: &Value) -> Cancelled {
        let key = key(scope, id);
        let entry = {
            let mut table = self.lock();
            let newest = table.by_key.get(&key).and_then(|t| t.back().copied());
            match newest {
                Some(ticket) => table.remove(ticket),
                None => None,
            }
        };
        match entry.map(|e| e.state) {
            Some(State::Queued { wake, left }) => {
                let _ = wake.send(());
                Cancelled::Queued(Left(left))
            }
            Some(State::Forwarded { slot }) => {
                if let Some(mut slot) = slot {
                    slot.permit.set_outcome(Outcome::Ignore);
                }
                Cancelled::Forwarded
            }
            None => Cancelled::Unknown,
        }
    }

    /// Ends every request of `scope` (every request, for `None`): waiting ones
    /// leave the queue, forwarded ones free their slots. Returns them, so that
    /// the caller can answer or cancel them.
    pub fn drain(&self, scope: Option<&str>) -> Vec<Pending> {
        let entries: Vec<Entry> = {
            let mut table = self.lock();
            let prefix = scope.map(|s| format!("{s}\u{0}"));
            let mut tickets: Vec<u64> = table
                .entries
                .iter()
                .filter(|(_, e)| {
                    prefix
                        .as_ref()
                        .is_none_or(|p| e.key.starts_with(p.as_str()))
                })
                .map(|(t, _)| *t)
                .collect();
            tickets.sort_unstable();
            tickets
                .into_iter()
                .filter_map(|t| table.remove(t))
                .collect()
        };
        entries
            .into_iter()
            .map(|entry| match entry.state {
                State::Queued { wake, .. } => {
                    let _ = wake.send(());
                    Pending {
                        id: entry.id,
                        forwarded: false,
                    }
                }
                State::Forwarded { slot } => {
                    if let Some(mut slot) = slot {
                        slot.permit.set_outcome(Outcome::Ignore);
                    }
                    Pending {
                        id: entry.id,
                        forwarded: true,
                    }
                }
            })
            .collect()
    }

    /// How many requests are tracked (waiting or forwarded).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Table {
    fn remove(&mut self, ticket: u64) -> Option<Entry> {
        let entry = self.entries.remove(&ticket)?;
        if let Some(tickets) = self.by_key.get_mut(&entry.key) {
            tickets.retain(|t| *t != ticket);
            if tickets.is_empty() {
                self.by_key.remove(&entry.key);
            }
        }
        Some(entry)
    }
}

/// A guarded request registered as waiting; [`Queued::admit`] waits for its
/// slot. Dropping it (or the `admit` future) takes it out of the table.
#[derive(Debug)]
pub struct Queued {
    inflight: InFlight,
    ticket: u64,
    id: Value,
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
        let result = tokio::select! {
            biased;
            _ = woken => return Admission::Cancelled,
            result = gate.limiter.acquire() => result,
        };
        match result {
            Ok(mut permit) => {
                let mut table = self.inflight.lock();
                match table.entries.get_mut(&self.ticket) {
                    Some(entry) => {
                        gate.metrics.observe_queue_wait(
                            permit.admitted_at().saturating_duration_since(started),
                        );
                        entry.state = State::Forwarded {
                            slot: Some(Slot {
                                permit,
                                gate: gate.clone(),
                            }),
                        };
                        Admission::Admitted(Ticket(self.ticket))
                    }
                    // Cancelled while the slot was being handed over.
                    None => {
                        drop(table);
                        permit.set_outcome(Outcome::Ignore);
                        Admission::Cancelled
                    }
                }
            }
            Err(overload) => {
                let entry = self.inflight.lock().remove(self.ticket);
                if entry.is_none() {
                    return Admission::Cancelled;
                }
                Admission::Rejected(jsonrpc::error_response(
                    &self.id,
                    &overload,
                    gate.settings.error_code,
                ))
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Still waiting (the admit future was dropped, or never polled): leave.
        let mut table = self.inflight.lock();
        if matches!(
            table.entries.get(&self.ticket).map(|e| &e.state),
            Some(State::Queued { .. })
        ) {
            table.remove(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use mcp_backpressure::LimiterConfig;
    use serde_json::json;

    use super::*;

    fn inflight(max: usize, queue: usize) -> InFlight {
        let settings = Settings {
            config: LimiterConfig::new(max).with_queue_size(queue),
            error_code: jsonrpc::DEFAULT_OVERLOAD_CODE,
            guarded: vec!["tools/call".into()],
            max_message_bytes: 1 << 20,
        };
        let limiter = settings.limiter().unwrap();
        InFlight::new(Arc::new(Gate {
            limiter,
            settings,
            metrics: ProxyMetrics::default(),
        }))
    }

    fn admitted(admission: Admission) -> Ticket {
        match admission {
            Admission::Admitted(ticket) => ticket,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_frees_the_slot_for_the_next_in_line() {
        let table = inflight(1, 1);
        admitted(table.enqueue("", &json!(1)).admit().await);
        let waiting = tokio::spawn(table.enqueue("", &json!(2)).admit());
        tokio::task::yield_now().await;
        assert_eq!(table.gate().limiter.snapshot().queued, 1);
        let rejected = table.enqueue("", &json!(3)).admit().await;
        let Admission::Rejected(error) = rejected else {
            panic!("expected a rejection, got {rejected:?}");
        };
        assert_eq!(error["id"], 3);
        assert_eq!(error["error"]["code"], -31429);
        assert_eq!(error["error"]["data"]["reason"], "queue_full");
        assert!(table.complete("", &json!(1)));
        admitted(waiting.await.unwrap());
        assert!(!table.complete("", &json!(1)), "completed twice");
        assert!(table.complete("", &json!(2)));
        let snapshot = table.gate().limiter.snapshot();
        assert_eq!((snapshot.active, snapshot.completed), (0, 2));
        assert_eq!(table.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue_and_a_cancelled_call_frees_its_slot() {
        let table = inflight(1, 4);
        admitted(table.enqueue("s", &json!(1)).admit().await);
        let waiting = tokio::spawn(table.enqueue("s", &json!(2)).admit());
        tokio::task::yield_now().await;
        let Cancelled::Queued(left) = table.cancel("s", &json!(2)) else {
            panic!("2 was queued");
        };
        left.wait().await;
        assert_eq!(table.gate().limiter.snapshot().queued, 0);
        assert!(matches!(waiting.await.unwrap(), Admission::Cancelled));
        assert_eq!(table.gate().limiter.snapshot().queued, 0);
        // Another scope's id 1 is another request.
        assert!(matches!(table.cancel("t", &json!(1)), Cancelled::Unknown));
        assert!(matches!(table.cancel("s", &json!(1)), Cancelled::Forwarded));
        assert_eq!(table.gate().limiter.snapshot().active, 0);
        assert!(matches!(table.cancel("s", &json!(1)), Cancelled::Unknown));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_admit_future_leaves_nothing_behind() {
        let table = inflight(1, 4);
        admitted(table.enqueue("", &json!(1)).admit().await);
        let waiting = tokio::spawn(table.enqueue("", &json!(2)).admit());
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(table.len(), 1);
        assert_eq!(table.gate().limiter.snapshot().queued, 0);
        drop(table.enqueue("", &json!(3)));
        assert_eq!(table.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_everything_in_its_scope() {
        let table = inflight(1, 4);
        admitted(table.enqueue("a", &json!(1)).admit().await);
        let waiting = tokio::spawn(table.enqueue("a", &json!(2)).admit());
        tokio::task::yield_now().await;
        table.track("a", &json!("list"));
        table.track("b", &json!(1));
        let pending = table.drain(Some("a"));
        let ids: Vec<(Value, bool)> = pending.into_iter().map(|p| (p.id, p.forwarded)).collect();
        assert_eq!(
            ids,
            [(json!(1), true), (json!(2), false), (json!("list"), true)]
        );
        assert!(matches!(waiting.await.unwrap(), Admission::Cancelled));
        let snapshot = table.gate().limiter.snapshot();
        assert_eq!((snapshot.active, snapshot.queued), (0, 0));
        assert_eq!(table.len(), 1);
        assert_eq!(table.drain(None).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_ticket_frees_its_slot_once() {
        let table = inflight(1, 0);
        let ticket = admitted(table.enqueue("", &json!(1)).admit().await);
        assert!(table.finish(ticket, Outcome::Success));
        assert!(!table.finish(ticket, Outcome::Success));
        let snapshot = table.gate().limiter.snapshot();
        assert_eq!((snapshot.active, snapshot.completed), (0, 1));
    }
}
