//! Learned plans and compiled files as the wire uses them: the state they
//! share ([`Learning`]), the warm-up after a Report, and their figures in
//! Stats.
//!
//! A warm-up reads ahead what a plan will need (its directories, and its
//! compiled files on slow filesystems) so that the program's next Snapshot
//! is answered from memory. It runs for, and with the permissions of, the
//! peer that reported the plan: its crawls stop where that peer could not
//! go, and it reads only files in directories that peer may list. Plans
//! read from the state file at start are not warmed (no peer to act for):
//! their next Snapshot reads what it needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use finderd_proto::v1 as pb;

use super::check::non_canonical_reason;
use super::context::{answer_for, Answer, PeerScreen};
use super::files;
use crate::bytecode::CompiledFiles;
use crate::config::{Config, Engine};
use crate::index::Role;
use crate::namespace;
use crate::plan::{Keeper, PlanKey, Plans};
use crate::policy::{Peer, PeerInfo};
use crate::views::Views;

/// The reason of a directory not indexed by the request's deadline.
pub const BEING_INDEXED: &str = "being indexed";

/// What the wire needs for plans and compiled files.
pub struct Learning {
    pub plans: Arc<Plans>,
    pub files: Arc<CompiledFiles>,
    /// The keeper thread (warm-ups after Reports, the state file).
    pub keeper: Arc<Keeper>,
    pub slow_stat_ns: u64,
    pub deadline_percent: u32,
    /// Requests answered at their deadline with what was indexed.
    pub deadline_replies: AtomicU64,
    /// Directories answered (or left out of a plan) as "being indexed".
    pub being_indexed: AtomicU64,
}

impl Learning {
    /// Loads the plans of the daemon on `config.socket` from the state file
    /// and starts the keeper thread (stop it with `keeper.stop()`).
    pub fn start(config: &Config, views: &Arc<Views>) -> std::io::Result<Learning> {
        let settings = &config.plans;
        let socket = config.socket.as_os_str().as_encoded_bytes().to_vec();
        let plans = Arc::new(Plans::new(settings));
        plans.load(&socket);
        let files = Arc::new(CompiledFiles::new(
            settings.max_cached_bytes,
            settings.max_plan_bytecode_bytes,
            config.refresh.engine != Engine::Sync,
        ));
        let warm = {
            let (views, plans, files) = (Arc::clone(views), Arc::clone(&plans), Arc::clone(&files));
            let slow_stat_ns = settings.slow_stat_ns;
            Box::new(move |key: &PlanKey, peer: &Arc<Peer>| {
                warm_plan(&views, &plans, &files, slow_stat_ns, key, peer)
            })
        };
        let keeper = Arc::new(Keeper::spawn(Arc::clone(&plans), socket, warm)?);
        Ok(Self {
            slow_stat_ns: settings.slow_stat_ns,
            deadline_percent: settings.deadline_percent,
            plans,
            files,
            keeper,
            deadline_replies: AtomicU64::new(0),
            being_indexed: AtomicU64::new(0),
        })
    }

    /// Fills the Stats fields about plans, compiled files and deadlines.
    pub fn fill_stats(&self, reply: &mut pb::StatsReply, slow_devices: Vec<u64>) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let gauges = self.plans.gauges();
        let plans = &self.plans.counters;
        let files = &self.files.counters;
        let (cached_files, cached_bytes) = self.files.gauges();
        *reply = pb::StatsReply {
            plans: gauges.plans,
            plan_directories: gauges.directories,
            plan_files: gauges.files,
            reports: load(&plans.reports),
            planned_snapshots: load(&plans.planned_snapshots),
            planned_directories_served: load(&plans.planned_directories_served),
            plans_evicted: load(&plans.plans_evicted),
            plan_entries_dropped: load(&plans.entries_dropped),
            cached_files,
            cached_bytes,
            cached_files_served: load(&files.served),
            cached_bytes_served: load(&files.served_bytes),
            compiled_reads_uring: load(&files.read_uring),
            compiled_reads_sync: load(&files.read_sync),
            compiled_reads_changed: load(&files.read_changed),
            cached_evictions: load(&files.evictions),
            slow_devices,
            deadline_replies: load(&self.deadline_replies),
            being_indexed: load(&self.being_indexed),
            state_writes: load(&plans.state_writes),
            state_write_errors: load(&plans.state_write_errors),
            plans_loaded: load(&plans.plans_loaded),
            ..std::mem::take(reply)
        };
    }
}

/// Reads ahead what `key`'s plan needs, for and as `peer`, in its view (on
/// the keeper thread, after a Report).
pub fn warm_plan(
    views: &Views,
    plans: &Plans,
    files: &CompiledFiles,
    slow_stat_ns: u64,
    key: &PlanKey,
    peer: &Arc<Peer>,
) {
    let Some(plan) = plans.peek(key) else {
        return;
    };
    let started = Instant::now();
    let peer: PeerInfo = Some(Arc::clone(peer));
    let Ok(index) = namespace::index_for(views, &peer, 0) else {
        return;
    };
    views.barrier(index);
    let screen = PeerScreen(&peer);
    let ask = |path: &Bytes| answer_for(&peer, index.answer(path, Role::Other, &screen), 0);
    for path in &plan.directories {
        if non_canonical_reason(path).is_none() {
            ask(path);
        }
    }
    let slow = index.engines().slow_devices(slow_stat_ns);
    let candidates = files::candidates(index.root(), &plan, |parent| {
        Ok(match ask(parent) {
            Answer::Listed(listing) if slow.contains(&listing.device) => Some(listing),
            _ => None,
        })
    })
    .unwrap_or_default();
    let mut budget = plans.config().max_plan_bytecode_bytes;
    let within: Vec<_> = candidates
        .into_iter()
        .filter(|c| {
            let size = c.wanted.identity.size;
            let fits = size <= budget;
            budget = budget.saturating_sub(if fits { size } else { 0 });
            fits
        })
        .collect();
    let found: Vec<_> = (within.iter())
        .map(|c| files.lookup(&c.wanted.identity))
        .collect();
    files::fill(files, &within, &found);
    tracing::debug!(
        uid = peer.as_ref().map(|p| p.uid),
        directories = plan.directories.len(),
        files = within.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "plan warmed"
    );
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        assert_eq!(grpc_timeout("50m"), Some(Duration::from_millis(50)));
        assert_eq!(grpc_timeout("50000u"), Some(Duration::from_micros(50_000)));
        assert_eq!(grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "5x", "-5m", "5 m", "é"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
