//! Partitions: the per-tool and per-client entries the limiter counts calls
//! against, besides the global limit.
//!
//! Semantics (Netflix's partitioned limiter is the reference, with one
//! difference): a partition's limit is a *cap*, never a reservation. Global
//! capacity nobody uses is usable by anyone within their own caps; a tool
//! capped at 2 of 10 slots never holds 8 idle slots back from other tools.
//! Netflix's partitions are percentages that guarantee a share under
//! contention; here the guarantee under contention comes from the queue
//! (round-robin across clients, one flow per tool), so caps stay absolute
//! numbers an operator can reason about ("report: 2 at once").
//!
//! Bounded state: an entry for a client key, or for a tool without a
//! configuration of its own, exists only while that key has a call running or
//! waiting, and is dropped the moment it has neither. At most
//! `max_tracked_keys` such entries exist per kind; keys beyond that share one
//! overflow entry. Configured tools and the anonymous entries (no tool name,
//! no client key) are permanent.

use std::collections::HashMap;

use slab::Slab;

use super::retry::RetryEstimator;
use crate::config::{LimiterConfig, ToolConfig};
use crate::limit::{FixedLimit, Limit, LimitAlgorithm, Sample};

/// The permanent entry of calls with no key (and, for tools, of every tool
/// without a limit of its own when no default tool limit is set).
pub(crate) const ANONYMOUS: u32 = 0;

/// The name the overflow entries and the anonymous tool entry report.
pub(crate) const OTHER: &str = "*";

use crate::config::MAX_KEY_BYTES;

/// `key`, cut to at most [`MAX_KEY_BYTES`] on a character boundary.
pub(crate) fn truncate(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

pub(crate) struct ToolEntry {
    pub(crate) name: Box<str>,
    pub(crate) running: usize,
    pub(crate) queued: usize,
    /// The cap in force, `None` = none.
    pub(crate) cap: Option<usize>,
    limit: Option<Box<dyn Limit>>,
    /// The settings `limit` was built from.
    spec: Option<LimitSpec>,
    pub(crate) weight: usize,
    /// Has a configuration of its own (permanent, own metrics label).
    pub(crate) configured: bool,
    pub(crate) retry: Option<RetryEstimator>,
    pub(crate) admitted: u64,
    pub(crate) rejected: u64,
}

impl ToolEntry {
    fn dynamic(name: Box<str>, cap: Option<usize>) -> Self {
        Self {
            name,
            running: 0,
            queued: 0,
            cap,
            limit: None,
            spec: None,
            weight: 1,
            configured: false,
            retry: None,
            admitted: 0,
            rejected: 0,
        }
    }

    fn configured(name: &str, tool: &ToolConfig, config: &LimiterConfig) -> Self {
        let limit = tool.max_concurrent.map(|max| {
            let upper = tool.max_limit.unwrap_or(max);
            match tool.limit {
                LimitAlgorithm::Fixed => Box::new(FixedLimit::new(max)) as Box<dyn Limit>,
                algorithm => algorithm.build(max, tool.min_limit, upper),
            }
        });
        Self {
            name: name.into(),
            running: 0,
            queued: 0,
            // A tool with a weight but no limit of its own gets the default
            // tool limit, as every tool without a limit of its own does.
            cap: limit
                .as_ref()
                .map(|limit| limit.current().max(1))
                .or(config.default_tool_limit),
            limit,
            spec: Some(LimitSpec::of(tool)),
            weight: tool.weight,
            configured: true,
            retry: Some(RetryEstimator::new(
                config.initial_service_time,
                config.retry_after_min,
                config.retry_after_max,
            )),
            admitted: 0,
            rejected: 0,
        }
    }

    /// Room for one more call.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.cap.is_none_or(|cap| self.running < cap)
    }

    fn idle(&self) -> bool {
        self.running == 0 && self.queued == 0
    }

    /// Feeds this tool's own limit and retry estimate.
    pub(crate) fn observe(&mut self, sample: &Sample, timed: bool) {
        if let Some(retry) = &mut self.retry
            && timed
        {
            retry.observe(sample.rtt);
        }
        if let Some(limit) = &mut self.limit
            && let Some(current) = super::state::feed(limit.as_mut(), sample)
        {
            self.cap = Some(current);
        }
    }
}

/// A client key's entry. Its waiters are counted by its lane in the wait
/// queue, not here.
pub(crate) struct ClientEntry {
    pub(crate) key: Box<str>,
    /// Slots held (a call of weight `w` holds `min(w, client_limit)`).
    pub(crate) used: usize,
}

/// A bounded table of keyed entries with a permanent anonymous entry at 0.
struct Table<E> {
    entries: Slab<E>,
    by_key: HashMap<Box<str>, u32>,
    /// Entries created for keys (not configured, not anonymous).
    dynamic: usize,
    overflow: Option<u32>,
}

impl<E> Table<E> {
    fn new(anonymous: E) -> Self {
        let mut entries = Slab::new();
        entries.insert(anonymous);
        Self {
            entries,
            by_key: HashMap::new(),
            dynamic: 0,
            overflow: None,
        }
    }

    /// The entry of `key` (its first [`MAX_KEY_BYTES`] bytes), created with
    /// `make` if needed (or the overflow entry when `max` keys are tracked
    /// already).
    fn resolve(&mut self, key: &str, max: usize, make: impl FnOnce(Box<str>) -> E) -> u32 {
        let key = truncate(key);
        if let Some(&id) = self.by_key.get(key) {
            return id;
        }
        if self.dynamic >= max {
            if let Some(id) = self.overflow {
                return id;
            }
            let id = self.entries.insert(make(OTHER.into())) as u32;
            self.overflow = Some(id);
            return id;
        }
        let id = self.entries.insert(make(key.into())) as u32;
        self.by_key.insert(key.into(), id);
        self.dynamic += 1;
        id
    }

    /// Drops a dynamic (or overflow) entry.
    fn drop_entry(&mut self, id: u32, key: impl FnOnce(&E) -> &str) {
        if Some(id) == self.overflow {
            self.overflow = None;
            self.entries.remove(id as usize);
            return;
        }
        let removed = self.entries.remove(id as usize);
        self.by_key.remove(key(&removed));
        self.dynamic -= 1;
        // Give memory back after a burst of keys.
        if self.by_key.capacity() > 64 && self.by_key.len() < self.by_key.capacity() / 4 {
            self.by_key.shrink_to(self.by_key.len() * 2);
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }
}

pub(crate) struct Tools {
    table: Table<ToolEntry>,
    default_cap: Option<usize>,
    max_keys: usize,
}

impl Tools {
    pub(crate) fn new(config: &LimiterConfig) -> Self {
        let mut tools = Self {
            table: Table::new(ToolEntry::dynamic(OTHER.into(), None)),
            default_cap: config.default_tool_limit,
            max_keys: config.max_tracked_keys,
        };
        for (name, tool) in &config.tools {
            let id = tools
                .table
                .entries
                .insert(ToolEntry::configured(name, tool, config)) as u32;
            tools.table.by_key.insert(name.as_str().into(), id);
        }
        tools
    }

    /// Whether requests need a tool lookup at all.
    pub(crate) fn keyed(&self) -> bool {
        !self.table.by_key.is_empty() || self.default_cap.is_some()
    }

    /// The entry a call of `tool` counts against.
    pub(crate) fn resolve(&mut self, tool: Option<&str>) -> u32 {
        let Some(name) = tool else {
            return ANONYMOUS;
        };
        if let Some(&id) = self.table.by_key.get(truncate(name))
            && (self.default_cap.is_some() || self.table.entries[id as usize].configured)
        {
            return id;
        }
        // Without a default limit, an unconfigured tool has no entry of its
        // own (one left from before a reload lives on only for its calls).
        match self.default_cap {
            None => ANONYMOUS,
            Some(cap) => self.table.resolve(name, self.max_keys, |name| {
                ToolEntry::dynamic(name, Some(cap))
            }),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> &ToolEntry {
        &self.table.entries[id as usize]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut ToolEntry {
        &mut self.table.entries[id as usize]
    }

    /// Drops the entry if it is dynamic and idle.
    #[inline]
    pub(crate) fn release_if_idle(&mut self, id: u32) {
        if id == ANONYMOUS {
            return;
        }
        let entry = &self.table.entries[id as usize];
        if !entry.configured && entry.idle() {
            // Its counters live on in the shared `*` figures.
            let (admitted, rejected) = (entry.admitted, entry.rejected);
            self.table.drop_entry(id, |e| &e.name);
            let other = &mut self.table.entries[ANONYMOUS as usize];
            other.admitted += admitted;
            other.rejected += rejected;
        }
    }

    /// Dynamic entries tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.table.dynamic + usize::from(self.table.overflow.is_some())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ToolEntry> {
        self.table.entries.iter().map(|(_, entry)| entry)
    }

    /// Applies a new configuration, keeping every count of calls in flight.
    /// Tools dropped from the configuration become dynamic (they keep their
    /// running calls, and leave once idle).
    pub(crate) fn reconfigure(&mut self, config: &LimiterConfig) {
        self.default_cap = config.default_tool_limit;
        self.max_keys = config.max_tracked_keys;
        let ids: Vec<(Box<str>, u32)> = self
            .table
            .by_key
            .iter()
            .map(|(name, &id)| (name.clone(), id))
            .collect();
        for (name, id) in ids {
            let entry = &mut self.table.entries[id as usize];
            match config.tools.get(&*name) {
                Some(tool) => {
                    let fresh = ToolEntry::configured(&name, tool, config);
                    entry.weight = fresh.weight;
                    if entry.spec != fresh.spec || entry.limit.is_none() {
                        entry.cap = fresh.cap;
                        entry.limit = fresh.limit;
                        entry.spec = fresh.spec;
                    }
                    entry.retry = match entry.retry {
                        Some(retry) => {
                            Some(retry.with_bounds(config.retry_after_min, config.retry_after_max))
                        }
                        None => fresh.retry,
                    };
                    if !entry.configured {
                        entry.configured = true;
                        entry.retry = fresh.retry;
                        self.table.dynamic -= 1;
                        // Its past counts stay in the `*` figures (counters
                        // never go down); its own row starts at zero.
                        let (admitted, rejected) = (entry.admitted, entry.rejected);
                        entry.admitted = 0;
                        entry.rejected = 0;
                        let other = &mut self.table.entries[ANONYMOUS as usize];
                        other.admitted += admitted;
                        other.rejected += rejected;
                    }
                }
                None if entry.configured => {
                    entry.configured = false;
                    entry.limit = None;
                    entry.spec = None;
                    entry.cap = self.default_cap;
                    entry.weight = 1;
                    self.table.dynamic += 1;
                }
                None => entry.cap = self.default_cap,
            }
            self.release_if_idle(id);
        }
        if let Some(id) = self.table.overflow {
            self.table.entries[id as usize].cap = self.default_cap;
        }
        for (name, tool) in &config.tools {
            if !self.table.by_key.contains_key(name.as_str()) {
                let id = self
                    .table
                    .entries
                    .insert(ToolEntry::configured(name, tool, config))
                    as u32;
                self.table.by_key.insert(name.as_str().into(), id);
            }
        }
    }
}

/// The settings a tool's limit is built from: a reload that leaves them
/// unchanged keeps the running limit (an adaptive one keeps what it learned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LimitSpec {
    max_concurrent: Option<usize>,
    algorithm: LimitAlgorithm,
    min_limit: usize,
    max_limit: Option<usize>,
}

impl LimitSpec {
    fn of(tool: &ToolConfig) -> Self {
        Self {
            max_concurrent: tool.max_concurrent,
            algorithm: tool.limit,
            min_limit: tool.min_limit,
            max_limit: tool.max_limit,
        }
    }
}

pub(crate) struct Clients {
    table: Table<ClientEntry>,
    pub(crate) cap: Option<usize>,
    max_keys: usize,
}

impl Clients {
    pub(crate) fn new(config: &LimiterConfig) -> Self {
        Self {
            table: Table::new(ClientEntry {
                key: "".into(),
                used: 0,
            }),
            cap: config.client_limit,
            max_keys: config.max_tracked_keys,
        }
    }

    /// The entry a call from `key` counts against.
    #[inline]
    pub(crate) fn resolve(&mut self, key: Option<&str>) -> u32 {
        match key {
            None => ANONYMOUS,
            Some(key) => self
                .table
                .resolve(key, self.max_keys, |key| ClientEntry { key, used: 0 }),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> &ClientEntry {
        &self.table.entries[id as usize]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut ClientEntry {
        &mut self.table.entries[id as usize]
    }

    /// The slots a call of `cost` takes of its client's cap.
    #[inline]
    pub(crate) fn cost(&self, cost: usize) -> usize {
        self.cap.map_or(cost, |cap| cost.min(cap))
    }

    /// Room for `cost` more slots.
    #[inline]
    pub(crate) fn has_room(&self, id: u32, cost: usize) -> bool {
        self.cap
            .is_none_or(|cap| self.get(id).used + self.cost(cost) <= cap)
    }

    /// Drops the entry if it is dynamic and idle (nothing held, `queued`
    /// waiting).
    #[inline]
    pub(crate) fn release_if_idle(&mut self, id: u32, queued: usize) {
        if id != ANONYMOUS && queued == 0 && self.get(id).used == 0 {
            self.table.drop_entry(id, |e| &e.key);
        }
    }

    /// Dynamic entries tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.table.dynamic + usize::from(self.table.overflow.is_some())
    }

    pub(crate) fn reconfigure(&mut self, config: &LimiterConfig) {
        self.cap = config.client_limit;
        self.max_keys = config.max_tracked_keys;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(200); // 400 bytes
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_KEY_BYTES && cut.len() >= MAX_KEY_BYTES - 1);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn keys_sharing_their_first_bytes_share_an_entry() {
        let mut clients = Clients::new(&LimiterConfig::new(1));
        let a = format!("{}a", "x".repeat(MAX_KEY_BYTES));
        let b = format!("{}b", "x".repeat(MAX_KEY_BYTES));
        assert_eq!(clients.resolve(Some(&a)), clients.resolve(Some(&b)));
        assert_eq!(clients.tracked(), 1);
    }
}
