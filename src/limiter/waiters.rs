//! The FIFO wait queue: a doubly linked list threaded through a slab.
//!
//! Every operation is O(1): push at the tail, grant at the head, and unlink
//! from anywhere (a waiter that times out or is cancelled). A granted entry
//! leaves the list but keeps its slab slot until its owner collects it, so the
//! owner can tell "I was handed a slot" from "I am still waiting" under the
//! limiter's lock.
//!
//! Links are `u32` slab keys, so an entry is 32 bytes instead of 48 — most of
//! a parked waiter's share of the queue. A queue cannot hold 2^32 - 1 entries
//! (that many parked futures would take terabytes), and `push_back` refuses
//! one whose key would not fit rather than ever panicking.

use std::task::{Poll, Waker};

use slab::Slab;
use tokio::time::Instant;

/// What a waiter's owner receives when a slot is handed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// When the slot was handed over; the permit's service time starts here.
    pub(crate) at: Instant,
    /// Requests holding a slot right after the hand-over, this one included.
    pub(crate) inflight: usize,
}

/// A link in the list: a slab key, or [`NIL`].
type Link = u32;

/// No entry (the end of the list).
const NIL: Link = Link::MAX;

enum Entry {
    Waiting {
        waker: Option<Waker>,
        prev: Link,
        next: Link,
    },
    Granted(Grant),
}

/// How an entry left the queue when its owner removed it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// It was still waiting.
    Waiting,
    /// A slot had been handed to it.
    Granted(Grant),
}

pub(crate) struct WaiterQueue {
    entries: Slab<Entry>,
    head: Link,
    tail: Link,
    waiting: usize,
}

impl Default for WaiterQueue {
    fn default() -> Self {
        Self {
            entries: Slab::new(),
            head: NIL,
            tail: NIL,
            waiting: 0,
        }
    }
}

impl WaiterQueue {
    /// Entries still waiting (granted ones not counted).
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    /// Appends a waiting entry; returns its key, or `None` in the
    /// unreachable case that its key would not fit in a [`Link`].
    pub(crate) fn push_back(&mut self) -> Option<usize> {
        let key = self.entries.vacant_key();
        let link = Link::try_from(key).ok().filter(|&link| link != NIL)?;
        self.entries.insert(Entry::Waiting {
            waker: None,
            prev: self.tail,
            next: NIL,
        });
        if self.tail == NIL {
            self.head = link;
        } else {
            self.set_next(self.tail, link);
        }
        self.tail = link;
        self.waiting += 1;
        Some(key)
    }

    /// Hands a slot to the head of the queue. Returns its waker (if it was
    /// polled yet), or `None` when nobody waits.
    pub(crate) fn grant_front(&mut self, grant: Grant) -> Option<Option<Waker>> {
        if self.head == NIL {
            return None;
        }
        let key = self.head as usize;
        let waker = self.unlink(key);
        self.entries[key] = Entry::Granted(grant);
        Some(waker)
    }

    /// Checks whether the entry was granted; if so, removes it. Otherwise
    /// stores the waker for the hand-over.
    ///
    /// Panics if `key` is not an entry of this queue: only its owner, who got
    /// the key from `push_back`, may poll it, once it has removed it no more.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> Poll<Grant> {
        match &mut self.entries[key] {
            Entry::Granted(grant) => {
                let grant = *grant;
                self.entries.remove(key);
                Poll::Ready(grant)
            }
            Entry::Waiting { waker: slot, .. } => {
                match slot {
                    Some(stored) if stored.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Removes the entry, whatever its state. Same contract on `key` as `poll`.
    pub(crate) fn remove(&mut self, key: usize) -> Removed {
        match self.entries[key] {
            Entry::Granted(grant) => {
                self.entries.remove(key);
                Removed::Granted(grant)
            }
            Entry::Waiting { .. } => {
                drop(self.unlink(key));
                self.entries.remove(key);
                Removed::Waiting
            }
        }
    }

    /// Unlinks a waiting entry from the list, leaving its slab slot in place.
    fn unlink(&mut self, key: usize) -> Option<Waker> {
        let Entry::Waiting { waker, prev, next } = &mut self.entries[key] else {
            unreachable!("only waiting entries are linked");
        };
        let (waker, prev, next) = (waker.take(), *prev, *next);
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
        self.waiting -= 1;
        waker
    }

    fn set_next(&mut self, key: Link, to: Link) {
        if let Entry::Waiting { next, .. } = &mut self.entries[key as usize] {
            *next = to;
        }
    }

    fn set_prev(&mut self, key: Link, to: Link) {
        if let Entry::Waiting { prev, .. } = &mut self.entries[key as usize] {
            *prev = to;
        }
    }

    /// Keys of the waiting entries, head first (tests only).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn keys(&self) -> Vec<usize> {
        let mut keys = Vec::new();
        let mut cursor = self.head;
        while cursor != NIL {
            let key = cursor as usize;
            keys.push(key);
            cursor = match &self.entries[key] {
                Entry::Waiting { next, .. } => *next,
                Entry::Granted(_) => unreachable!("granted entries are unlinked"),
            };
        }
        keys
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::task::Waker;

    use super::*;

    fn grant() -> Grant {
        Grant {
            at: Instant::now(),
            inflight: 1,
        }
    }

    #[test]
    fn grants_in_fifo_order() {
        let mut queue = WaiterQueue::default();
        let a = queue.push_back().unwrap();
        let b = queue.push_back().unwrap();
        let c = queue.push_back().unwrap();
        assert_eq!(queue.keys(), [a, b, c]);
        assert!(queue.grant_front(grant()).is_some());
        assert_eq!(queue.keys(), [b, c]);
        assert_eq!(queue.len(), 2);
        assert!(queue.poll(a, Waker::noop()).is_ready());
        assert!(queue.poll(b, Waker::noop()).is_pending());
    }

    #[test]
    fn removes_from_the_middle_head_and_tail() {
        let mut queue = WaiterQueue::default();
        let keys: Vec<usize> = (0..5).map(|_| queue.push_back().unwrap()).collect();
        assert_eq!(queue.remove(keys[2]), Removed::Waiting);
        assert_eq!(queue.keys(), [keys[0], keys[1], keys[3], keys[4]]);
        assert_eq!(queue.remove(keys[0]), Removed::Waiting);
        assert_eq!(queue.remove(keys[4]), Removed::Waiting);
        assert_eq!(queue.keys(), [keys[1], keys[3]]);
        assert_eq!(queue.len(), 2);
        let k = queue.push_back().unwrap();
        assert_eq!(queue.keys(), [keys[1], keys[3], k]);
    }

    #[test]
    fn removing_a_granted_entry_reports_the_grant() {
        let mut queue = WaiterQueue::default();
        let a = queue.push_back().unwrap();
        let g = grant();
        queue.grant_front(g);
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.remove(a), Removed::Granted(g));
        assert!(queue.grant_front(grant()).is_none());
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }
}
