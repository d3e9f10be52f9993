//! Who holds connections and who is asking: open connections per peer uid,
//! bounded by `max_connections_per_peer`; requests in flight and the last
//! moment anything happened, for `--idle-exit`. A connection that asks
//! nothing (a long-lived interpreter between two imports) keeps the daemon
//! alive no longer than the idle period: its next question finds the daemon
//! gone and reconnects, which socket activation answers with a new one.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::genfile::monotonic_ns;

/// A peer's uid, `None` when its credentials could not be read.
pub type PeerUid = Option<u32>;

/// Open connections, requests in flight, and the last moment a connection
/// opened or closed or a request started or ended.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    in_flight: AtomicUsize,
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
            in_flight: AtomicUsize::new(0),
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
        self.touch();
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

    /// Counts a request in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestInFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        RequestInFlight {
            activity: Arc::clone(self),
        }
    }

    /// How long nothing has happened: no request in flight, none started or
    /// ended, no connection opened or closed. `None` while a request is in
    /// flight. Connections left open between requests do not count.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = self.last_ns.load(Ordering::SeqCst);
        Some(Duration::from_nanos(monotonic_ns().saturating_sub(last)))
    }

    fn touch(&self) {
        self.last_ns.store(monotonic_ns(), Ordering::SeqCst);
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
        self.touch();
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request in flight; its end (dropping this) restarts the idle clock.
#[derive(Debug)]
pub struct RequestInFlight {
    activity: Arc<Activity>,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
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

/// The server's outermost layer: every request counts as in flight from its
/// headers until its response is ready (a unary reply is assembled by then;
/// only streaming its body remains).
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> CountRequests<S> {
    pub fn layer(activity: Arc<Activity>) -> impl tower::Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| CountRequests {
            inner,
            activity: Arc::clone(&activity),
        })
    }
}

impl<S, B> tower::Service<http::Request<B>> for CountRequests<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let in_flight = self.activity.request();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_only_while_a_request_is_in_flight() {
        let activity = Arc::new(Activity::default());
        let connection = activity.connection(Some(1000), 8).expect("under the limit");
        let request = activity.request();
        assert_eq!(activity.idle_for(), None);
        std::thread::sleep(Duration::from_millis(2));
        let started = activity.last_ns.load(Ordering::SeqCst);
        drop(request);
        assert!(
            activity.last_ns.load(Ordering::SeqCst) > started,
            "its end restarts the clock"
        );
        std::thread::sleep(Duration::from_millis(20));
        let idle = activity
            .idle_for()
            .expect("a connection between requests is idle");
        assert!(idle >= Duration::from_millis(20));
        let ended = activity.last_ns.load(Ordering::SeqCst);
        drop(connection);
        assert!(
            activity.last_ns.load(Ordering::SeqCst) > ended,
            "a close restarts it too"
        );
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
