//! What each uid may make the daemon hold: every resource a peer's
//! requests cost is charged to that peer's uid, against a named limit, so
//! that one uid can neither starve the others nor grow the daemon without
//! bound.
//!
//! | resource | charged when | limit |
//! | --- | --- | --- |
//! | index nodes (each holds a generation slot) | a crawl's answer is kept | `max_nodes_per_uid` |
//! | listing entries | likewise | `max_indexed_entries_per_uid` |
//! | index bytes (listings, dependencies) | likewise | `max_index_bytes_per_uid` |
//! | inotify watches | a crawl takes a new watch | `max_watches_per_uid` |
//! | bytes in flight (request bodies, messages, replies) | received / built | `max_inflight_bytes_per_uid` |
//!
//! What the index keeps is charged to the uid that last was served it
//! (`Index::claim`): a directory everyone uses is charged to its latest
//! user, not to whoever crawled it first, so a uid evicting its own
//! least-recently-used nodes does not take another user's working set.
//! A uid over an index limit gets its own least-recently-used nodes
//! evicted; past a per-uid watch limit its crawls are answered without
//! being kept; past its in-flight bytes its requests get
//! RESOURCE_EXHAUSTED naming the limit. Connections and requests in flight
//! are counted in places, not bytes: `limits.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::LiveLimits;

/// The share of the daemon's watches one uid may hold when
/// `max_watches_per_uid` is 0.
pub const DEFAULT_UID_SHARE: u64 = 4;
/// The fewest index nodes the default `max_nodes_per_uid` allows.
pub const MIN_DEFAULT_NODES: u64 = 1024;

fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// What the index keeps for one answer, charged to one uid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub nodes: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// One uid's usage and the figures its own Stats shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub nodes: u64,
    pub entries: u64,
    pub index_bytes: u64,
    pub watches: u64,
    pub inflight_bytes: u64,
    pub requests: u64,
    pub rejected: u64,
    pub served: u64,
    pub not_served: u64,
    pub unchanged: u64,
    pub evicted: u64,
    pub over_limit: u64,
}

impl Usage {
    fn is_idle(&self) -> bool {
        self.nodes == 0 && self.watches == 0 && self.inflight_bytes == 0
    }
}

/// Which index limit a uid is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Nodes,
    Entries,
    Bytes,
}

impl Over {
    pub fn limit(self) -> &'static str {
        match self {
            Over::Nodes => "max_nodes_per_uid",
            Over::Entries => "max_indexed_entries_per_uid",
            Over::Bytes => "max_index_bytes_per_uid",
        }
    }
}

/// Every uid's usage, and the limits (live: SIGHUP changes them).
#[derive(Debug)]
pub struct Quotas {
    pub limits: Arc<LiveLimits>,
    /// Slots in the generation file: `max_nodes_per_uid` 0 means a quarter.
    slots: u64,
    usage: Mutex<HashMap<Option<u32>, Usage>>,
}

/// Bytes in flight for one uid; released when dropped.
#[derive(Debug)]
pub struct Inflight {
    quotas: Arc<Quotas>,
    uid: Option<u32>,
    bytes: u64,
}

/// A uid's in-flight bytes would pass its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer uid {uid} has {held} bytes in flight, {wanted} more would pass the limit max_inflight_bytes_per_uid = {limit}")]
pub struct InflightLimit {
    pub uid: String,
    pub held: u64,
    pub wanted: u64,
    pub limit: u64,
}

impl Default for Quotas {
    /// With the default configuration's limits.
    fn default() -> Quotas {
        let limits = LiveLimits::default();
        let values = crate::config::Values::default();
        limits.store_values(&values);
        Quotas::new(Arc::new(limits), values.generation_slots)
    }
}

impl Quotas {
    pub fn new(limits: Arc<LiveLimits>, slots: u32) -> Quotas {
        Quotas {
            limits,
            slots: u64::from(slots),
            usage: Mutex::default(),
        }
    }

    /// `max_nodes_per_uid` in effect: 0 means a quarter of the slots, and
    /// never fewer than [`MIN_DEFAULT_NODES`] (or all slots, when fewer): a
    /// generation file of a handful of slots is a test's, not a host's.
    pub fn max_nodes_per_uid(&self) -> u64 {
        match get(&self.limits.max_nodes_per_uid) {
            0 => (self.slots / DEFAULT_UID_SHARE).max(self.slots.min(MIN_DEFAULT_NODES)),
            limit => limit,
        }
    }

    fn usage(&self) -> MutexGuard<'_, HashMap<Option<u32>, Usage>> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `uid`'s usage and figures now.
    pub fn of(&self, uid: Option<u32>) -> Usage {
        self.usage().get(&uid).copied().unwrap_or_default()
    }

    /// Changes `uid`'s figures.
    pub fn count(&self, uid: Option<u32>, change: impl FnOnce(&mut Usage)) {
        change(self.usage().entry(uid).or_default());
    }

    /// Charges what a kept answer costs to `uid`; returns the index limit
    /// the uid is over now, if any.
    pub fn charge(&self, uid: Option<u32>, cost: Cost) -> Option<Over> {
        let mut usage = self.usage();
        let usage = usage.entry(uid).or_default();
        usage.nodes += cost.nodes;
        usage.entries += cost.entries;
        usage.index_bytes += cost.bytes;
        self.over(usage)
    }

    /// Gives back what a dropped answer cost.
    pub fn refund(&self, uid: Option<u32>, cost: Cost) {
        let mut usage = self.usage();
        if let Some(held) = usage.get_mut(&uid) {
            held.nodes = held.nodes.saturating_sub(cost.nodes);
            held.entries = held.entries.saturating_sub(cost.entries);
            held.index_bytes = held.index_bytes.saturating_sub(cost.bytes);
        }
        Self::forget_if_idle(&mut usage, uid);
    }

    /// Moves what an answer costs from `from` to `to` (its latest user);
    /// returns the index limit `to` is over now, if any.
    pub fn transfer(&self, from: Option<u32>, to: Option<u32>, cost: Cost) -> Option<Over> {
        if from == to {
            return None;
        }
        self.refund(from, cost);
        self.charge(to, cost)
    }

    fn over(&self, usage: &Usage) -> Option<Over> {
        let limits = &self.limits;
        if usage.nodes > self.max_nodes_per_uid() {
            Some(Over::Nodes)
        } else if usage.entries > get(&limits.max_indexed_entries_per_uid) {
            Some(Over::Entries)
        } else if usage.index_bytes > get(&limits.max_index_bytes_per_uid) {
            Some(Over::Bytes)
        } else {
            None
        }
    }

    /// The index limit `uid` is over now, if any.
    pub fn over_index_limit(&self, uid: Option<u32>) -> Option<Over> {
        self.over(&self.of(uid))
    }

    /// Counts a new watch for `uid`, unless it holds its share of
    /// `daemon_max` already.
    pub fn try_watch(&self, uid: Option<u32>, daemon_max: u64) -> bool {
        let configured = get(&self.limits.max_watches_per_uid);
        let limit = match configured {
            0 => (daemon_max / DEFAULT_UID_SHARE).max(1),
            limit => limit,
        };
        let mut usage = self.usage();
        let usage = usage.entry(uid).or_default();
        if usage.watches >= limit {
            usage.over_limit += 1;
            return false;
        }
        usage.watches += 1;
        true
    }

    /// A watch charged to `uid` is gone.
    pub fn unwatch(&self, uid: Option<u32>) {
        let mut usage = self.usage();
        if let Some(held) = usage.get_mut(&uid) {
            held.watches = held.watches.saturating_sub(1);
        }
        Self::forget_if_idle(&mut usage, uid);
    }

    /// Charges `bytes` in flight to `uid` until the returned guard drops.
    pub fn inflight(
        self: &Arc<Self>,
        uid: Option<u32>,
        bytes: u64,
    ) -> Result<Inflight, InflightLimit> {
        let mut guard = Inflight {
            quotas: Arc::clone(self),
            uid,
            bytes: 0,
        };
        guard.grow(bytes)?;
        Ok(guard)
    }

    fn forget_if_idle(usage: &mut HashMap<Option<u32>, Usage>, uid: Option<u32>) {
        // Figures of a uid that holds nothing are kept (its own Stats), but
        // a map of every uid ever seen must not grow without bound.
        const KEEP_IDLE: usize = 4096;
        if usage.len() > KEEP_IDLE && usage.get(&uid).is_some_and(Usage::is_idle) {
            usage.remove(&uid);
        }
    }
}

impl Inflight {
    /// Charges `bytes` more.
    pub fn grow(&mut self, bytes: u64) -> Result<(), InflightLimit> {
        let limit = get(&self.quotas.limits.max_inflight_bytes_per_uid);
        let mut usage = self.quotas.usage();
        let usage = usage.entry(self.uid).or_default();
        if usage.inflight_bytes.saturating_add(bytes) > limit {
            usage.over_limit += 1;
            return Err(InflightLimit {
                uid: self
                    .uid
                    .map_or_else(|| "unknown".to_string(), |uid| uid.to_string()),
                held: usage.inflight_bytes,
                wanted: bytes,
                limit,
            });
        }
        usage.inflight_bytes += bytes;
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut usage = self.quotas.usage();
        if let Some(held) = usage.get_mut(&self.uid) {
            held.inflight_bytes = held.inflight_bytes.saturating_sub(self.bytes);
        }
        Quotas::forget_if_idle(&mut usage, self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Quotas {
        Quotas::default()
    }

    #[test]
    fn charges_are_per_uid_and_name_the_limit_passed() {
        let quotas = quotas();
        quotas.limits.max_nodes_per_uid.store(2, Ordering::Relaxed);
        let one = Cost {
            nodes: 1,
            entries: 10,
            bytes: 100,
        };
        assert_eq!(quotas.charge(Some(1), one), None);
        assert_eq!(quotas.charge(Some(1), one), None);
        assert_eq!(quotas.charge(Some(1), one), Some(Over::Nodes));
        assert_eq!(
            quotas.charge(Some(2), one),
            None,
            "another uid is not affected"
        );
        quotas.refund(Some(1), one);
        assert_eq!(quotas.over_index_limit(Some(1)), None);
        assert_eq!(quotas.transfer(Some(2), Some(1), one), Some(Over::Nodes));
        assert_eq!(quotas.of(Some(2)).nodes, 0);
        assert_eq!(Over::Bytes.limit(), "max_index_bytes_per_uid");
    }

    #[test]
    fn watches_default_to_a_share_of_the_daemon_limit() {
        let quotas = quotas();
        for _ in 0..25 {
            assert!(quotas.try_watch(Some(7), 100));
        }
        assert!(!quotas.try_watch(Some(7), 100), "a quarter of 100");
        assert!(quotas.try_watch(Some(8), 100));
        quotas.unwatch(Some(7));
        assert!(quotas.try_watch(Some(7), 100));
    }

    #[test]
    fn inflight_bytes_are_bounded_and_released() {
        let quotas = Arc::new(quotas());
        quotas
            .limits
            .max_inflight_bytes_per_uid
            .store(1000, Ordering::Relaxed);
        let mut held = quotas.inflight(Some(1), 600).expect("fits");
        let refused = quotas.inflight(Some(1), 500).expect_err("over");
        assert_eq!(
            refused.to_string(),
            "peer uid 1 has 600 bytes in flight, 500 more would pass the limit \
             max_inflight_bytes_per_uid = 1000"
        );
        assert!(quotas.inflight(Some(2), 1000).is_ok(), "another uid");
        held.grow(400).expect("exactly the limit");
        drop(held);
        assert_eq!(quotas.of(Some(1)).inflight_bytes, 0);
    }
}
