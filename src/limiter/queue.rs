//! The wait queue: one lane per client key, served round-robin; within a
//! lane, one FIFO list (a *flow*) per tool, so a call blocked by its tool's
//! limit never blocks the same client's calls of other tools.
//!
//! Waiters live in one slab; each flow is a doubly linked list threaded
//! through it (O(1) push, grant and unlink from anywhere). Lanes with waiters
//! sit in a ring; the limiter looks at the lane at the front, serves it or
//! skips it, and rotates it to the back either way. A granted or rejected
//! entry leaves its list but keeps its slab slot until its owner collects it,
//! so the owner can tell "handed a slot", "turned away" and "still waiting"
//! apart under the limiter's lock.
//!
//! Continuations of multi-round-trip calls wait apart, on a *priority line*
//! ahead of every lane: a short list in arrival order (bounded by
//! `max_continuations`), served first. Its entries live in the same slab (the
//! same keys, polls and removals) but in no flow nor lane, and they are not
//! counted in [`WaitQueue::len`] (nor against `queue_size`).
//!
//! Costs: a lane keeps its flows in a small vector (one per tool it has
//! waiters for), so picking a lane's next waiter is O(flows in that lane); the
//! number of distinct flows is bounded by the tracked tool entries.

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use slab::Slab;
use tokio::time::Instant;

use crate::overload::Overload;

/// What a waiter's owner receives when a slot is handed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Handed over from the queue (counted as admitted when taken).
    pub(crate) from_queue: bool,
    /// Handed over from the priority line (a continuation served ahead).
    pub(crate) priority: bool,
    /// When the slot was handed over; `None` when the permit is not timed.
    pub(crate) at: Option<Instant>,
    /// Slots in use right after the hand-over, this call's included (what
    /// the global limit's algorithm compares with the limit).
    pub(crate) inflight: u32,
    /// Calls of its tool running right after the hand-over, this one
    /// included (what the tool's own limit is compared with).
    pub(crate) tool_inflight: u32,
    /// Slots of the global limit it holds.
    pub(crate) cost: usize,
    /// Slots of its client's limit it holds.
    pub(crate) client_cost: usize,
    /// Its tool entry.
    pub(crate) tool: u32,
    /// Its client entry.
    pub(crate) client: u32,
}

/// A link: a slab key, or [`NIL`].
type Link = u32;

/// No entry (the end of a list).
const NIL: Link = Link::MAX;

/// Whether arrival number `a` came after `b` (serial-number arithmetic,
/// RFC 1982: right while the two are less than 2^31 apart).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Slabs emptied after growing past this many entries are given back.
const SHRINK_ABOVE: usize = 1024;

/// A request waiting in the queue.
#[derive(Debug)]
pub(crate) struct Waiting {
    waker: Option<Waker>,
    prev: Link,
    next: Link,
    /// Its flow; [`NIL`] for a waiter on the priority line.
    flow: Link,
    /// Arrival order, across the whole queue: a wrapping counter compared
    /// with serial-number arithmetic ([`newer`]), so 4 bytes suffice while
    /// fewer than 2^31 waiters are queued at once.
    pub(crate) seq: u32,
    /// When it joined the queue: nanoseconds after the queue's epoch (8
    /// bytes instead of an `Instant`'s 16: an entry is 64 bytes).
    since: u64,
    /// The slots it asks for (its tool's weight, saturated to `u32::MAX`).
    cost: u32,
    pub(crate) tool: u32,
    pub(crate) client: u32,
}

impl Waiting {
    /// The slots it asks for.
    pub(crate) fn cost(&self) -> usize {
        self.cost as usize
    }

    /// Whether it waits on the priority line.
    pub(crate) fn is_priority(&self) -> bool {
        self.flow == NIL
    }
}

enum Entry {
    Waiting(Waiting),
    Granted(Grant),
    Rejected(Box<Overload>),
}

/// How an entry left the queue when its owner removed it.
#[derive(Debug)]
pub(crate) enum Removed {
    /// It was still waiting.
    Waiting(Waiting),
    /// A slot had been handed to it.
    Granted(Grant),
    /// It had been turned away (evicted or shed).
    Rejected(Box<Overload>),
}

/// One lane's waiters of one tool and cost, in arrival order. Calls of one
/// tool normally share a cost (its weight); a per-request cost override
/// gets a flow of its own, so a costly head never hides lighter calls.
struct Flow {
    tool: u32,
    cost: u32,
    head: Link,
    tail: Link,
}

#[derive(Default)]
struct Lane {
    /// Flows with waiters, in no particular order.
    flows: Vec<Link>,
    queued: usize,
    in_ring: bool,
}

pub(crate) struct WaitQueue {
    /// The time waiters' arrival is counted from.
    epoch: Instant,
    entries: Slab<Entry>,
    flows: Slab<Flow>,
    /// Indexed by client entry.
    lanes: Vec<Lane>,
    /// Lanes with waiters, the next to serve first.
    ring: VecDeque<u32>,
    waiting: usize,
    /// The priority line: keys of waiting continuations, in arrival order.
    priority: VecDeque<Link>,
    next_seq: u32,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            entries: Slab::new(),
            flows: Slab::new(),
            lanes: Vec::new(),
            ring: VecDeque::new(),
            waiting: 0,
            priority: VecDeque::new(),
            next_seq: 0,
        }
    }
}

impl WaitQueue {
    /// When a waiter joined the queue.
    pub(crate) fn since(&self, waiting: &Waiting) -> Instant {
        self.epoch + std::time::Duration::from_nanos(waiting.since)
    }

    /// Entries still waiting (granted and rejected ones not counted).
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    /// Waiters of one client (its lane's; the priority line not counted).
    pub(crate) fn queued_of(&self, client: u32) -> usize {
        self.lanes
            .get(client as usize)
            .map_or(0, |lane| lane.queued)
    }

    /// Waiters of one client, on its lane and on the priority line: its
    /// entry must stay while any waits.
    #[inline]
    pub(crate) fn all_queued_of(&self, client: u32) -> usize {
        let queued = self.queued_of(client);
        if self.priority.is_empty() {
            return queued;
        }
        queued
            + self
                .priority
                .iter()
                .filter(|&&link| self.waiting_ref(link).client == client)
                .count()
    }

    /// Continuations on the priority line.
    pub(crate) fn priority_len(&self) -> usize {
        self.priority.len()
    }

    /// Inserts a waiter at the vacant key, after `prev` in `flow` (`NIL`,
    /// `NIL` for the priority line), with the next sequence number.
    fn insert_waiting(
        &mut self,
        prev: Link,
        flow: Link,
        client: u32,
        tool: u32,
        cost: u32,
        since: Instant,
    ) {
        self.entries.insert(Entry::Waiting(Waiting {
            waker: None,
            prev,
            next: NIL,
            flow,
            seq: self.next_seq,
            since: u64::try_from(since.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX),
            cost,
            tool,
            client,
        }));
        self.next_seq = self.next_seq.wrapping_add(1);
    }

    /// Puts a continuation at the back of the priority line; returns its
    /// key (`None` in the unreachable case that it would not fit a link).
    pub(crate) fn push_priority(
        &mut self,
        client: u32,
        tool: u32,
        cost: usize,
        since: Instant,
    ) -> Option<usize> {
        let key = self.entries.vacant_key();
        let link = Link::try_from(key).ok().filter(|&link| link != NIL)?;
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        self.insert_waiting(NIL, NIL, client, tool, cost, since);
        self.priority.push_back(link);
        Some(key)
    }

    /// The first continuation on the priority line that `ready(tool,
    /// client, cost)` accepts.
    pub(crate) fn priority_candidate(
        &self,
        mut ready: impl FnMut(u32, u32, usize) -> bool,
    ) -> Option<usize> {
        self.priority
            .iter()
            .copied()
            .find(|&link| {
                let waiting = self.waiting_ref(link);
                ready(waiting.tool, waiting.client, waiting.cost())
            })
            .map(|link| link as usize)
    }

    /// Appends a waiter to its client's flow for its tool; returns its key,
    /// or `None` in the unreachable case that the key would not fit a link.
    pub(crate) fn push(
        &mut self,
        client: u32,
        tool: u32,
        cost: usize,
        since: Instant,
    ) -> Option<usize> {
        let key = self.entries.vacant_key();
        let link = Link::try_from(key).ok().filter(|&link| link != NIL)?;
        let lane_index = client as usize;
        if self.lanes.len() <= lane_index {
            self.lanes.resize_with(lane_index + 1, Lane::default);
        }
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let flows = &self.flows;
        let existing = self.lanes[lane_index]
            .flows
            .iter()
            .copied()
            .find(|&f| flows[f as usize].tool == tool && flows[f as usize].cost == cost);
        let flow = match existing {
            Some(flow) => flow,
            None => {
                let flow = Link::try_from(self.flows.vacant_key())
                    .ok()
                    .filter(|&f| f != NIL)?;
                self.flows.insert(Flow {
                    tool,
                    cost,
                    head: NIL,
                    tail: NIL,
                });
                self.lanes[lane_index].flows.push(flow);
                flow
            }
        };
        let tail = self.flows[flow as usize].tail;
        self.insert_waiting(tail, flow, client, tool, cost, since);
        if tail == NIL {
            self.flows[flow as usize].head = link;
        } else {
            self.waiting_mut(tail).next = link;
        }
        self.flows[flow as usize].tail = link;
        let lane = &mut self.lanes[lane_index];
        lane.queued += 1;
        if !lane.in_ring {
            lane.in_ring = true;
            self.ring.push_back(client);
        }
        self.waiting += 1;
        Some(key)
    }

    /// Lanes in the ring.
    pub(crate) fn lanes_waiting(&self) -> usize {
        self.ring.len()
    }

    /// The lane whose turn it is.
    pub(crate) fn front(&self) -> Option<u32> {
        self.ring.front().copied()
    }

    /// Moves the front lane to the back of the ring (its turn is over).
    pub(crate) fn rotate(&mut self) {
        if let Some(client) = self.ring.pop_front() {
            self.ring.push_back(client);
        }
    }

    /// The next waiter of `client` among those `ready(tool, cost)` accepts
    /// (the head of each flow, or its tail with `lifo`): the oldest one, or
    /// the newest with `lifo`.
    pub(crate) fn candidate(
        &self,
        client: u32,
        lifo: bool,
        mut ready: impl FnMut(u32, usize) -> bool,
    ) -> Option<usize> {
        let lane = self.lanes.get(client as usize)?;
        let mut best: Option<(u32, Link)> = None;
        for &flow in &lane.flows {
            let flow = &self.flows[flow as usize];
            let link = if lifo { flow.tail } else { flow.head };
            let waiting = self.waiting_ref(link);
            if !ready(flow.tool, waiting.cost()) {
                continue;
            }
            let seq = waiting.seq;
            let better = match best {
                None => true,
                Some((best_seq, _)) => newer(seq, best_seq) == lifo,
            };
            if better {
                best = Some((seq, link));
            }
        }
        best.map(|(_, link)| link as usize)
    }

    /// The newest waiter of `client`, whatever its tool.
    pub(crate) fn newest_of(&self, client: u32) -> Option<usize> {
        let lane = self.lanes.get(client as usize)?;
        let mut newest: Option<Link> = None;
        for &flow in &lane.flows {
            let tail = self.flows[flow as usize].tail;
            if newest.is_none_or(|n| newer(self.waiting_ref(tail).seq, self.waiting_ref(n).seq)) {
                newest = Some(tail);
            }
        }
        newest.map(|link| link as usize)
    }

    /// The lane with the most waiters; among equals, the one whose turn is
    /// nearest.
    pub(crate) fn longest_lane(&self) -> Option<u32> {
        let mut longest: Option<(usize, u32)> = None;
        for &client in &self.ring {
            let queued = self.lanes[client as usize].queued;
            if longest.is_none_or(|(most, _)| queued > most) {
                longest = Some((queued, client));
            }
        }
        longest.map(|(_, client)| client)
    }

    /// A waiting entry. Panics if `key` is not waiting.
    pub(crate) fn waiting(&self, key: usize) -> &Waiting {
        match &self.entries[key] {
            Entry::Waiting(waiting) => waiting,
            _ => unreachable!("not a waiting entry"),
        }
    }

    /// Hands a slot to a waiting entry; returns its waker, if it was polled.
    pub(crate) fn grant(&mut self, key: usize, grant: Grant) -> Option<Waker> {
        let waiting = self.unlink(key);
        self.entries[key] = Entry::Granted(grant);
        waiting.waker
    }

    /// Turns a waiting entry away; returns its waker, if it was polled.
    pub(crate) fn reject(&mut self, key: usize, overload: Overload) -> Option<Waker> {
        let waiting = self.unlink(key);
        self.entries[key] = Entry::Rejected(Box::new(overload));
        waiting.waker
    }

    /// Checks whether the entry was decided; if so, removes it. Otherwise
    /// stores the waker for the hand-over.
    ///
    /// Panics if `key` is not an entry of this queue: only its owner, who got
    /// the key from `push`, may poll it, and only until it removed it.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> Poll<Result<Grant, Box<Overload>>> {
        match &mut self.entries[key] {
            Entry::Waiting(waiting) => {
                match &waiting.waker {
                    Some(stored) if stored.will_wake(waker) => {}
                    _ => waiting.waker = Some(waker.clone()),
                }
                Poll::Pending
            }
            Entry::Granted(grant) => {
                let grant = *grant;
                self.entries.remove(key);
                self.shrink_if_empty();
                Poll::Ready(Ok(grant))
            }
            Entry::Rejected(_) => match self.entries.remove(key) {
                Entry::Rejected(overload) => {
                    self.shrink_if_empty();
                    Poll::Ready(Err(overload))
                }
                _ => unreachable!("checked above"),
            },
        }
    }

    /// Removes the entry, whatever its state. Same contract on `key` as `poll`.
    /// Gives back the entries' memory once a burst has passed.
    fn shrink_if_empty(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > SHRINK_ABOVE {
            self.entries = Slab::new();
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Removed {
        let removed = if let Entry::Waiting(_) = self.entries[key] {
            let waiting = self.unlink(key);
            self.entries.remove(key);
            Removed::Waiting(waiting)
        } else {
            match self.entries.remove(key) {
                Entry::Granted(grant) => Removed::Granted(grant),
                Entry::Rejected(overload) => Removed::Rejected(overload),
                Entry::Waiting(_) => unreachable!("handled above"),
            }
        };
        self.shrink_if_empty();
        removed
    }

    /// Unlinks a waiting entry from its flow, its lane and maybe the ring,
    /// leaving a placeholder in its slab slot; returns what it was.
    fn unlink(&mut self, key: usize) -> Waiting {
        let placeholder = Entry::Granted(Grant {
            from_queue: false,
            priority: false,
            at: None,
            inflight: 0,
            tool_inflight: 0,
            cost: 0,
            client_cost: 0,
            tool: 0,
            client: 0,
        });
        let Entry::Waiting(waiting) = std::mem::replace(&mut self.entries[key], placeholder) else {
            unreachable!("only waiting entries are linked");
        };
        if waiting.is_priority() {
            if let Some(at) = self.priority.iter().position(|&l| l as usize == key) {
                self.priority.remove(at);
            }
            if self.priority.is_empty() {
                self.priority.shrink_to(16);
            }
            return waiting;
        }
        let flow_key = waiting.flow as usize;
        if waiting.prev == NIL {
            self.flows[flow_key].head = waiting.next;
        } else {
            self.waiting_mut(waiting.prev).next = waiting.next;
        }
        if waiting.next == NIL {
            self.flows[flow_key].tail = waiting.prev;
        } else {
            self.waiting_mut(waiting.next).prev = waiting.prev;
        }
        let lane_index = waiting.client as usize;
        let lane = &mut self.lanes[lane_index];
        lane.queued -= 1;
        if self.flows[flow_key].head == NIL {
            self.flows.remove(flow_key);
            lane.flows.retain(|&f| f as usize != flow_key);
        }
        if lane.queued == 0 {
            lane.in_ring = false;
            // Cleared, not freed: a lane that empties and refills (the
            // anonymous lane under steady load) must not allocate each time.
            lane.flows.clear();
            if let Some(at) = self.ring.iter().position(|&c| c == waiting.client) {
                self.ring.remove(at);
            }
        }
        self.waiting -= 1;
        if self.waiting == 0 {
            // Give back what a burst of client keys allocated (their lanes
            // are dropped; a few stay, so steady traffic does not allocate).
            if self.lanes.len() > SHRINK_ABOVE {
                self.lanes.truncate(16);
                self.lanes.shrink_to(16);
            }
            self.ring.shrink_to(16);
            if self.flows.is_empty() && self.flows.capacity() > SHRINK_ABOVE {
                self.flows = Slab::new();
            }
        }
        waiting
    }

    fn waiting_ref(&self, link: Link) -> &Waiting {
        self.waiting(link as usize)
    }

    fn waiting_mut(&mut self, link: Link) -> &mut Waiting {
        match &mut self.entries[link as usize] {
            Entry::Waiting(waiting) => waiting,
            _ => unreachable!("only waiting entries are linked"),
        }
    }

    /// Keys of one client's waiters in service order (FIFO), tests only.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn keys_of(&self, client: u32) -> Vec<usize> {
        let Some(lane) = self.lanes.get(client as usize) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for &flow in &lane.flows {
            let mut cursor = self.flows[flow as usize].head;
            while cursor != NIL {
                keys.push(cursor as usize);
                cursor = self.waiting_ref(cursor).next;
            }
        }
        keys.sort_by(|&a, &b| {
            let (a, b) = (self.waiting(a).seq, self.waiting(b).seq);
            (a.wrapping_sub(b) as i32).cmp(&0)
        });
        keys
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::task::Waker;

    use super::*;

    fn grant() -> Grant {
        Grant {
            from_queue: true,
            priority: false,
            at: None,
            inflight: 1,
            tool_inflight: 1,
            cost: 1,
            client_cost: 1,
            tool: 0,
            client: 0,
        }
    }

    #[test]
    fn one_lane_is_fifo_and_lifo_on_request() {
        let mut queue = WaitQueue::default();
        let now = Instant::now();
        let a = queue.push(0, 0, 1, now).unwrap();
        let b = queue.push(0, 1, 1, now).unwrap();
        let c = queue.push(0, 0, 1, now).unwrap();
        assert_eq!(queue.keys_of(0), [a, b, c]);
        assert_eq!(queue.candidate(0, false, |_, _| true), Some(a));
        assert_eq!(queue.candidate(0, true, |_, _| true), Some(c));
        // Tool 0 blocked: the same client's call of tool 1 is next.
        assert_eq!(queue.candidate(0, false, |tool, _| tool != 0), Some(b));
        assert_eq!(queue.newest_of(0), Some(c));
    }

    #[test]
    fn lanes_take_turns_and_leave_the_ring_when_empty() {
        let mut queue = WaitQueue::default();
        let now = Instant::now();
        let a1 = queue.push(3, 0, 1, now).unwrap();
        let _a2 = queue.push(3, 0, 1, now).unwrap();
        let b1 = queue.push(5, 0, 1, now).unwrap();
        assert_eq!(queue.front(), Some(3));
        assert_eq!(queue.longest_lane(), Some(3));
        queue.grant(a1, grant());
        queue.rotate();
        assert_eq!(queue.front(), Some(5));
        queue.grant(b1, grant());
        assert_eq!(queue.lanes_waiting(), 1);
        assert_eq!(queue.front(), Some(3));
        assert_eq!(queue.len(), 1);
        assert!(matches!(queue.poll(a1, Waker::noop()), Poll::Ready(Ok(_))));
    }

    #[test]
    fn removes_from_the_middle_head_and_tail() {
        let mut queue = WaitQueue::default();
        let now = Instant::now();
        let keys: Vec<usize> = (0..5).map(|_| queue.push(0, 0, 1, now).unwrap()).collect();
        assert!(matches!(queue.remove(keys[2]), Removed::Waiting(_)));
        assert_eq!(queue.keys_of(0), [keys[0], keys[1], keys[3], keys[4]]);
        assert!(matches!(queue.remove(keys[0]), Removed::Waiting(_)));
        assert!(matches!(queue.remove(keys[4]), Removed::Waiting(_)));
        assert_eq!(queue.keys_of(0), [keys[1], keys[3]]);
        assert_eq!(queue.len(), 2);
        let k = queue.push(0, 0, 1, now).unwrap();
        assert_eq!(queue.keys_of(0), [keys[1], keys[3], k]);
    }

    #[test]
    fn an_entry_is_64_bytes() {
        // A parked waiter's share of the queue (72 with an `Instant` and a
        // 64-bit arrival number in it).
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn arrival_order_survives_the_counter_wrapping() {
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(u32::MAX, 0));
        let mut queue = WaitQueue {
            next_seq: u32::MAX - 1,
            ..WaitQueue::default()
        };
        let now = Instant::now();
        let keys: Vec<usize> = (0..4).map(|_| queue.push(0, 0, 1, now).unwrap()).collect();
        assert_eq!(queue.keys_of(0), keys);
        assert_eq!(queue.candidate(0, false, |_, _| true), Some(keys[0]));
        assert_eq!(queue.candidate(0, true, |_, _| true), Some(keys[3]));
        assert_eq!(queue.newest_of(0), Some(keys[3]));
    }

    #[test]
    fn the_priority_line_is_apart_from_the_lanes() {
        let mut queue = WaitQueue::default();
        let now = Instant::now();
        let ordinary = queue.push(0, 0, 1, now).unwrap();
        let first = queue.push_priority(0, 0, 1, now).unwrap();
        let second = queue.push_priority(1, 1, 2, now).unwrap();
        assert_eq!((queue.len(), queue.priority_len()), (1, 2));
        assert_eq!(queue.keys_of(0), [ordinary]);
        assert_eq!((queue.queued_of(0), queue.all_queued_of(0)), (1, 2));
        assert_eq!(queue.all_queued_of(1), 1);
        assert!(queue.waiting(first).is_priority());
        assert!(!queue.waiting(ordinary).is_priority());
        // In arrival order, skipping those not ready.
        assert_eq!(queue.priority_candidate(|_, _, _| true), Some(first));
        assert_eq!(
            queue.priority_candidate(|tool, _, _| tool == 1),
            Some(second)
        );
        assert_eq!(queue.priority_candidate(|_, _, _| false), None);
        assert!(matches!(queue.remove(first), Removed::Waiting(_)));
        assert_eq!(queue.priority_candidate(|_, _, _| true), Some(second));
        queue.grant(second, grant());
        assert_eq!((queue.len(), queue.priority_len()), (1, 0));
        assert!(matches!(
            queue.poll(second, Waker::noop()),
            Poll::Ready(Ok(_))
        ));
        // Never a lane's candidate, never evicted.
        assert_eq!(queue.lanes_waiting(), 1);
        assert_eq!(queue.newest_of(0), Some(ordinary));
    }

    #[test]
    fn a_rejected_entry_reports_its_overload_once() {
        let mut queue = WaitQueue::default();
        let a = queue.push(0, 0, 1, Instant::now()).unwrap();
        queue.reject(a, crate::overload::test_overload(std::time::Duration::ZERO));
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.lanes_waiting(), 0);
        assert!(matches!(queue.poll(a, Waker::noop()), Poll::Ready(Err(_))));
    }
}
