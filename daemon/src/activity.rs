//! Who holds connections: open connections per peer uid, bounded by
//! `max_connections_per_peer`, and the time the last one opened or closed,
//! for `--idle-exit`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::genfile::monotonic_ns;

/// A peer's uid, `None` when its credentials could not be read.
pub type PeerUid = Option<u32>;

/// Open connections and the last moment one opened or closed.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    last_ns: AtomicU64,
    per_uid: Mutex<PerUid>,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct PerUid {
    open: HashMap<PeerUid, usize>,
    /// Uids refused since they last closed a connection: each episode is
    /// logged once, however often the peer tries again.
    refused: HashSet<PeerUid>,
}

/// A connection over `max_connections_per_peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// Connections the uid holds.
    pub open: usize,
    pub limit: usize,
    /// The first refusal since the uid last closed one (log it).
    pub first: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            last_ns: AtomicU64::new(monotonic_ns()),
            per_uid: Mutex::new(PerUid::default()),
            refused: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Counts a new connection of `uid` until the returned guard is dropped,
    /// unless the uid already holds `limit`.
    pub fn connection(
        self: &Arc<Self>,
        uid: PeerUid,
        limit: usize,
    ) -> Result<OpenConnection, OverLimit> {
        let mut per_uid = self.per_uid();
        let open = per_uid.open.entry(uid).or_default();
        if *open >= limit {
            let open = *open;
            self.refused.fetch_add(1, Ordering::Relaxed);
            let first = per_uid.refused.insert(uid);
            return Err(OverLimit { open, limit, first });
        }
        *open += 1;
        drop(per_uid);
        self.open.fetch_add(1, Ordering::SeqCst);
        self.last_ns.store(monotonic_ns(), Ordering::SeqCst);
        Ok(OpenConnection {
            activity: Arc::clone(self),
            uid,
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections refused by `max_connections_per_peer` so far.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How long nothing has been open; `None` while a connection is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open_connections() > 0 {
            return None;
        }
        let last = self.last_ns.load(Ordering::SeqCst);
        Some(Duration::from_nanos(monotonic_ns().saturating_sub(last)))
    }

    fn per_uid(&self) -> MutexGuard<'_, PerUid> {
        self.per_uid.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed(&self, uid: PeerUid) {
        let mut per_uid = self.per_uid();
        if let Some(open) = per_uid.open.get_mut(&uid) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_uid.open.remove(&uid);
            }
        }
        per_uid.refused.remove(&uid);
        drop(per_uid);
        self.last_ns.store(monotonic_ns(), Ordering::SeqCst);
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open connection; closing it (dropping this) frees its place and
/// restarts the idle clock.
#[derive(Debug)]
pub struct OpenConnection {
    activity: Arc<Activity>,
    uid: PeerUid,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.activity.closed(self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_without_connections() {
        let activity = Arc::new(Activity::default());
        let connection = activity.connection(Some(1000), 8).expect("under the limit");
        assert_eq!(activity.idle_for(), None);
        drop(connection);
        assert!(activity
            .idle_for()
            .is_some_and(|idle| idle < Duration::from_secs(5)));
        assert_eq!(activity.open_connections(), 0);
    }

    #[test]
    fn each_uid_is_bounded_alone_and_a_close_frees_a_place() {
        let activity = Arc::new(Activity::default());
        let held: Vec<_> = (0..2)
            .map(|_| activity.connection(Some(1000), 2).expect("under the limit"))
            .collect();
        let refused = activity.connection(Some(1000), 2).expect_err("over");
        assert_eq!(
            refused,
            OverLimit {
                open: 2,
                limit: 2,
                first: true
            }
        );
        let again = activity.connection(Some(1000), 2).expect_err("still over");
        assert!(!again.first, "one log line per episode");
        let other = activity
            .connection(Some(0), 2)
            .expect("another uid is not affected");
        let unknown = activity.connection(None, 2).expect("nor are unknown peers");
        assert_eq!(activity.open_connections(), 4);
        assert_eq!(activity.refused_connections(), 2);
        drop(held);
        let after = activity.connection(Some(1000), 2).expect("places freed");
        drop((after, other, unknown));
        assert_eq!(activity.open_connections(), 0);
        assert!(activity.per_uid().open.is_empty());
    }
}
