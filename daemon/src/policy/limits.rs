//! How many places each uid may hold at once, for the two per-uid limits
//! counted in places rather than bytes (those are `quota.rs`):
//!
//! | places | taken when | limit | past it |
//! | --- | --- | --- | --- |
//! | open connections | accept | `max_connections_per_peer` | refusal frames naming the limit, then close |
//! | requests in flight | a request's handler starts | `max_requests_per_peer` | RESOURCE_EXHAUSTED naming the limit |
//!
//! One limiter type serves both: a place is taken under the uid's live
//! limit (SIGHUP changes it) and freed when its guard drops, so one uid can
//! neither take every descriptor nor every worker while the others are
//! still served. The limiters also keep the figures Stats shows (places
//! held, places refused): nothing else counts them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::LiveLimits;

/// A peer's uid, `None` when its credentials could not be read.
pub type PeerUid = Option<u32>;

/// What a limiter counts places of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Open connections, against `max_connections_per_peer`.
    Connections,
    /// Requests in flight, against `max_requests_per_peer`.
    Requests,
}

impl Counted {
    /// The config key of its limit.
    pub fn limit_name(self) -> &'static str {
        match self {
            Counted::Connections => "max_connections_per_peer",
            Counted::Requests => "max_requests_per_peer",
        }
    }

    /// Its limit now.
    fn limit(self, limits: &LiveLimits) -> usize {
        match self {
            Counted::Connections => LiveLimits::get(&limits.max_connections_per_peer),
            Counted::Requests => LiveLimits::get(&limits.max_requests_per_peer),
        }
    }

    /// What a uid holding `held` places is doing, for the refusal message.
    fn holding(self, held: usize) -> String {
        match self {
            Counted::Connections => format!("holds {held} connections, the limit"),
            Counted::Requests => format!("has {held} requests in flight, over the limit"),
        }
    }
}

/// A uid as messages name it.
pub fn uid_name(uid: &PeerUid) -> String {
    uid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string())
}

/// A place refused: the uid holds its limit already. The message names the
/// uid and the limit (the peer sees it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer uid {} {} {} = {limit}", uid_name(.uid), .counted.holding(*.held), .counted.limit_name())]
pub struct OverLimit {
    pub counted: Counted,
    pub uid: PeerUid,
    /// Places the uid holds.
    pub held: usize,
    pub limit: usize,
    /// The first refusal since the uid last freed a place (log it).
    pub first: bool,
}

/// Places per uid of one kind, under its live limit.
#[derive(Debug)]
pub struct UidLimiter {
    counted: Counted,
    limits: Arc<LiveLimits>,
    held: Mutex<Held>,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    /// Only uids holding a place: a freed uid is forgotten.
    per_uid: HashMap<PeerUid, usize>,
    /// Uids refused since they last freed a place: each episode is logged
    /// once, however often the peer tries again.
    refused: HashSet<PeerUid>,
}

/// One place a uid holds; dropping it frees the place.
#[derive(Debug)]
pub struct Place {
    limiter: Arc<UidLimiter>,
    uid: PeerUid,
}

impl UidLimiter {
    pub fn new(counted: Counted, limits: Arc<LiveLimits>) -> Self {
        Self {
            counted,
            limits,
            held: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes a place for `uid` until the returned guard is dropped, unless
    /// the uid holds its limit already.
    pub fn take(self: &Arc<Self>, uid: PeerUid) -> Result<Place, OverLimit> {
        let limit = self.counted.limit(&self.limits);
        let mut held = self.held();
        let count = held.per_uid.entry(uid).or_default();
        if *count >= limit {
            let count = *count;
            self.refused.fetch_add(1, Ordering::Relaxed);
            let first = held.refused.insert(uid);
            return Err(OverLimit {
                counted: self.counted,
                uid,
                held: count,
                limit,
                first,
            });
        }
        *count += 1;
        Ok(Place {
            limiter: Arc::clone(self),
            uid,
        })
    }

    /// Places held now, all uids together.
    pub fn held_now(&self) -> usize {
        self.held().per_uid.values().sum()
    }

    /// Places refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self, uid: PeerUid) {
        let mut held = self.held();
        if let Some(count) = held.per_uid.get_mut(&uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.per_uid.remove(&uid);
            }
        }
        held.refused.remove(&uid);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.limiter.free(self.uid);
    }
}

/// Both limiters: accept takes connection places, the service request
/// places; Stats reads their figures.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    pub connections: Arc<UidLimiter>,
    pub requests: Arc<UidLimiter>,
}

/// What Stats shows of the per-uid places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaceFigures {
    pub open_connections: u64,
    pub connections_refused: u64,
    pub requests_refused: u64,
}

impl PeerLimits {
    pub fn new(limits: Arc<LiveLimits>) -> Self {
        Self {
            connections: Arc::new(UidLimiter::new(Counted::Connections, Arc::clone(&limits))),
            requests: Arc::new(UidLimiter::new(Counted::Requests, limits)),
        }
    }

    pub fn figures(&self) -> PlaceFigures {
        PlaceFigures {
            open_connections: self.connections.held_now() as u64,
            connections_refused: self.connections.refused(),
            requests_refused: self.requests.refused(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, requests: usize) -> PeerLimits {
        let values = crate::config::Values {
            max_connections_per_peer: connections,
            max_requests_per_peer: requests,
            ..Default::default()
        };
        let limits = LiveLimits::default();
        limits.store_values(&values);
        PeerLimits::new(Arc::new(limits))
    }

    #[test]
    fn each_uid_is_bounded_alone_and_a_close_frees_a_place() {
        let peers = limits(2, 1);
        let connections = &peers.connections;
        let held: Vec<_> = (0..2)
            .map(|_| connections.take(Some(1000)).expect("under the limit"))
            .collect();
        let refused = connections.take(Some(1000)).expect_err("over");
        assert_eq!(
            refused,
            OverLimit {
                counted: Counted::Connections,
                uid: Some(1000),
                held: 2,
                limit: 2,
                first: true
            }
        );
        assert_eq!(
            refused.to_string(),
            "peer uid 1000 holds 2 connections, the limit max_connections_per_peer = 2"
        );
        let again = connections.take(Some(1000)).expect_err("still over");
        assert!(!again.first, "one log line per episode");
        let other = connections
            .take(Some(0))
            .expect("another uid is not affected");
        let unknown = connections.take(None).expect("nor are unknown peers");
        assert_eq!(connections.held_now(), 4);
        assert_eq!(connections.refused(), 2);
        drop(held);
        let after: Vec<_> = (0..2)
            .map(|_| connections.take(Some(1000)).expect("places freed"))
            .collect();
        assert!(
            connections.take(Some(1000)).expect_err("over again").first,
            "a close ends the episode"
        );
        drop((after, other, unknown));
        assert_eq!(connections.held_now(), 0);
        assert!(connections.held().per_uid.is_empty());
    }

    #[test]
    fn requests_in_flight_are_counted_apart_from_connections() {
        let peers = limits(8, 1);
        let _connection = peers.connections.take(Some(1000)).expect("a connection");
        let first = peers.requests.take(Some(1000)).expect("first");
        let refused = peers.requests.take(Some(1000)).expect_err("second");
        assert_eq!(
            refused.to_string(),
            "peer uid 1000 has 1 requests in flight, over the limit max_requests_per_peer = 1"
        );
        let _other = peers.requests.take(Some(1001)).expect("another uid");
        assert_eq!(
            peers.figures(),
            PlaceFigures {
                open_connections: 1,
                connections_refused: 0,
                requests_refused: 1,
            }
        );
        drop(first);
        let _again = peers.requests.take(Some(1000)).expect("freed");
        assert_eq!(peers.requests.held_now(), 2);
    }

    #[test]
    fn an_unknown_peer_is_named_so_and_limits_are_live() {
        let peers = limits(1, 1);
        let _held = peers.connections.take(None).expect("first");
        let refused = peers.connections.take(None).expect_err("over");
        assert_eq!(
            refused.to_string(),
            "peer uid unknown holds 1 connections, the limit max_connections_per_peer = 1"
        );
        let live = &peers.connections.limits.max_connections_per_peer;
        live.store(2, Ordering::Relaxed);
        let _more = peers.connections.take(None).expect("a reload raised it");
    }
}
