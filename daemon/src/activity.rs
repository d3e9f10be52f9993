//! Whether anything is happening, for `--idle-exit`: requests in flight
//! and the last moment a connection opened or closed or a request started
//! or ended. A connection that asks nothing (a long-lived interpreter
//! between two imports) keeps the daemon alive no longer than the idle
//! period: its next question finds the daemon gone and reconnects, which
//! socket activation answers with a new one. How many connections and
//! requests each uid may hold is policy (`crate::policy::limits`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::genfile::monotonic_ns;

/// Requests in flight, and the last moment a connection opened or closed or
/// a request started or ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_ns: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_ns: AtomicU64::new(monotonic_ns()),
        }
    }
}

impl Activity {
    /// Marks a connection opened; the returned guard marks it closed.
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.touch();
        OpenConnection {
            activity: Arc::clone(self),
        }
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

/// One open connection; closing it (dropping this) restarts the idle clock.
#[derive(Debug)]
pub struct OpenConnection {
    activity: Arc<Activity>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.activity.touch();
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
        let connection = activity.connection();
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
    }
}
