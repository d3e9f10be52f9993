//! Counters and latency histograms behind the Stats RPC.
//!
//! Everything here is a relaxed atomic: the numbers are for operators, and
//! no decision in the daemon reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use finderd_proto::v1 as pb;

/// Buckets `i` hold latencies in `[2^(i-1), 2^i)` microseconds (bucket 0:
/// below 1 us); the last one also holds everything slower.
const BUCKETS: usize = 32;

/// A fixed-bucket latency histogram (powers of two in microseconds).
/// Quantiles are reported as the upper bound of their bucket, capped by the
/// largest value seen: at most a factor of two pessimistic.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn summary(&self) -> pb::Histogram {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let max_us = self.max_us.load(Ordering::Relaxed);
        pb::Histogram {
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us,
            p50_us: quantile(&counts, 0.50).min(max_us),
            p99_us: quantile(&counts, 0.99).min(max_us),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    let bits = (u64::BITS - us.leading_zeros()) as usize;
    bits.min(BUCKETS - 1)
}

/// Exclusive upper bound of a bucket, in microseconds.
fn bucket_upper_bound(bucket: usize) -> u64 {
    1u64 << bucket.min(63)
}

fn quantile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // The rank of the q-quantile, 1-based: the smallest value with at least
    // q of the observations at or below it.
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_upper_bound(bucket);
        }
    }
    bucket_upper_bound(counts.len() - 1)
}

/// The gauges that the index and watcher know; counters live in [`Stats`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub roots: u64,
    pub directories: u64,
    pub entries: u64,
    pub index_bytes: u64,
    pub degraded_roots: u64,
    pub polled_roots: u64,
}

/// What the refresh engine reports: io_uring availability and the choice
/// per filesystem.
#[derive(Debug, Default, Clone)]
pub struct EngineReport {
    pub io_uring: String,
    pub filesystems: Vec<pb::FilesystemEngine>,
}

/// Counters shared by every part of the daemon.
pub struct Stats {
    started: Instant,
    /// Every limit by its config key (0: none), as last (re)loaded.
    limits: std::sync::Mutex<Vec<(&'static str, u64)>>,
    pub watches: AtomicU64,
    pub inotify_events: AtomicU64,
    pub overflows: AtomicU64,
    pub snapshot_requests: AtomicU64,
    pub lookup_requests: AtomicU64,
    pub directories_served: AtomicU64,
    pub directories_not_served: AtomicU64,
    pub directories_unchanged: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub crawls_sync: AtomicU64,
    pub crawls_uring: AtomicU64,
    pub evictions: AtomicU64,
    pub mtime_checks: AtomicU64,
    pub mtime_recrawls: AtomicU64,
    pub barrier_latency: Histogram,
    pub refresh_latency: Histogram,
    pub request_latency: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            limits: std::sync::Mutex::new(Vec::new()),
            watches: AtomicU64::new(0),
            inotify_events: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            snapshot_requests: AtomicU64::new(0),
            lookup_requests: AtomicU64::new(0),
            directories_served: AtomicU64::new(0),
            directories_not_served: AtomicU64::new(0),
            directories_unchanged: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected_requests: AtomicU64::new(0),
            crawls_sync: AtomicU64::new(0),
            crawls_uring: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            mtime_checks: AtomicU64::new(0),
            mtime_recrawls: AtomicU64::new(0),
            barrier_latency: Histogram::default(),
            refresh_latency: Histogram::default(),
            request_latency: Histogram::default(),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn set_limits(&self, limits: Vec<(&'static str, u64)>) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn limits(&self) -> Vec<(&'static str, u64)> {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reply(&self, gauges: Gauges, engines: EngineReport) -> pb::StatsReply {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        pb::StatsReply {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            pid: std::process::id(),
            roots: gauges.roots,
            directories: gauges.directories,
            entries: gauges.entries,
            index_bytes: gauges.index_bytes,
            watches: load(&self.watches),
            inotify_events: load(&self.inotify_events),
            overflows: load(&self.overflows),
            degraded_roots: gauges.degraded_roots,
            snapshot_requests: load(&self.snapshot_requests),
            lookup_requests: load(&self.lookup_requests),
            directories_served: load(&self.directories_served),
            directories_not_served: load(&self.directories_not_served),
            directories_unchanged: load(&self.directories_unchanged),
            hits: load(&self.hits),
            misses: load(&self.misses),
            rejected_requests: load(&self.rejected_requests),
            crawls_sync: load(&self.crawls_sync),
            crawls_uring: load(&self.crawls_uring),
            barrier_latency: Some(self.barrier_latency.summary()),
            refresh_latency: Some(self.refresh_latency.summary()),
            request_latency: Some(self.request_latency.summary()),
            polled_roots: gauges.polled_roots,
            evictions: load(&self.evictions),
            io_uring: engines.io_uring,
            filesystems: engines.filesystems,
            limits: self
                .limits()
                .into_iter()
                .map(|(name, value)| pb::Limit {
                    name: name.to_string(),
                    value,
                })
                .collect(),
            mtime_checks: load(&self.mtime_checks),
            mtime_recrawls: load(&self.mtime_recrawls),
            // Plans, compiled files, deadlines: `wire::planned` fills them;
            // connections and per-peer refusals: `wire::stats`, from policy.
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 3);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let summary = Histogram::default().summary();
        assert_eq!(
            (
                summary.count,
                summary.p50_us,
                summary.p99_us,
                summary.max_us
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn quantiles_come_from_buckets_and_are_capped_by_max() {
        let histogram = Histogram::default();
        for _ in 0..98 {
            histogram.record(Duration::from_micros(10)); // bucket [8, 16)
        }
        histogram.record(Duration::from_micros(1000)); // bucket [512, 1024)
        histogram.record(Duration::from_micros(1500)); // bucket [1024, 2048)
        let summary = histogram.summary();
        assert_eq!(summary.count, 100);
        assert_eq!(summary.sum_us, 98 * 10 + 2500);
        assert_eq!(summary.max_us, 1500);
        assert_eq!(summary.p50_us, 16);
        assert_eq!(summary.p99_us, 1024);
        let one = Histogram::default();
        one.record(Duration::from_micros(100));
        assert_eq!(one.summary().p99_us, 100, "capped by the maximum");
    }
}
