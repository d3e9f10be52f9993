//! Whether anyone is using the daemon: open connections and the time the
//! last one closed, for `--idle-exit`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::genfile::monotonic_ns;

/// Open connections and the last moment one opened or closed.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    last_ns: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            last_ns: AtomicU64::new(monotonic_ns()),
        }
    }
}

impl Activity {
    /// Counts a new connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.last_ns.store(monotonic_ns(), Ordering::SeqCst);
        OpenConnection {
            activity: Arc::clone(self),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How long nothing has been open; `None` while a connection is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open_connections() > 0 {
            return None;
        }
        let last = self.last_ns.load(Ordering::SeqCst);
        Some(Duration::from_nanos(monotonic_ns().saturating_sub(last)))
    }
}

/// One open connection; closing it (dropping this) restarts the idle clock.
#[derive(Debug)]
pub struct OpenConnection {
    activity: Arc<Activity>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.activity
            .last_ns
            .store(monotonic_ns(), Ordering::SeqCst);
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_without_connections() {
        let activity = Arc::new(Activity::default());
        let connection = activity.connection();
        assert_eq!(activity.idle_for(), None);
        drop(connection);
        assert!(activity
            .idle_for()
            .is_some_and(|idle| idle < Duration::from_secs(5)));
        assert_eq!(activity.open_connections(), 0);
    }
}
