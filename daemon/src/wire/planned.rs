//! Learned plans on the wire: the Report RPC, the plan part of a Snapshot
//! (planned directories, compiled files on slow filesystems), request
//! deadlines, and the Stats fields for all of them (`StatsReply` 100-121).
//!
//! A Snapshot whose (peer uid, program key) has a plan lists, after the
//! sys.path entries, every planned directory the peer may list (from the
//! index, under the same barrier), then the `__pycache__` directories of the
//! compiled files it carries; `planned_directories` counts them all. The
//! heuristic prefetch is skipped: the plan replaces it. Directories the
//! peer may not list, absent ones and (at a deadline) ones not indexed yet
//! are left out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use finderd_proto::v1 as pb;
use finderd_proto::v1::PROTOCOL_VERSION;

use super::{
    check_paths, check_version, encode_answer, encode_listing, non_canonical_reason, Error, Finder,
    Mode, Prefetch, Reply, Tally, LOOKUP_DIRECTORIES_FIELD, SNAPSHOT_DIRECTORIES_FIELD,
    SNAPSHOT_FILES_FIELD, SNAPSHOT_PLANNED_FIELD,
};
use crate::bytecode::{CompiledFiles, Lookup, Wanted};
use crate::config::{Config, Engine, PlanConfig};
use crate::index::{Answer, Index, Listing, Role};
use crate::plan::{Keeper, PlanKey, PlanView, Plans};
use crate::policy::{Peer, PeerInfo};
use crate::refresh::{parent_of, Kind};
use crate::stats::bump;

/// `Directory.slow_filesystem = true` (field 11, varint 1), appended to a
/// listing's cached encoding: protobuf concatenation is merging.
pub(super) const SLOW_FILESYSTEM_TRUE: [u8; 2] = [11 << 3, 1];
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
    /// Directories answered (or left out) as "being indexed".
    pub being_indexed: AtomicU64,
}

impl Learning {
    /// Loads the plans of the daemon on `config.socket` from the state file
    /// and starts the keeper thread (stop it with `keeper.stop()`).
    pub fn start(config: &Config, index: &Arc<Index>) -> std::io::Result<Learning> {
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
            let (index, plans, files) = (Arc::clone(index), Arc::clone(&plans), Arc::clone(&files));
            let slow_stat_ns = settings.slow_stat_ns;
            Box::new(move |key: &PlanKey| warm_plan(&index, &plans, &files, slow_stat_ns, key))
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
}

/// One compiled file chosen for a reply.
struct Served {
    parent: Arc<Listing>,
    file: pb::CachedFile,
}

impl Finder {
    /// The plan of this peer's program, if it has one.
    pub(super) fn plan_of(&self, peer: &PeerInfo, key: &Bytes) -> Option<Arc<PlanView>> {
        let peer = peer.as_ref()?;
        let plans = &self.learning.plans;
        if key.is_empty() || key.len() > plans.config().max_program_key_bytes {
            return None;
        }
        plans.get(&PlanKey {
            uid: peer.uid,
            key: key.clone(),
        })
    }

    /// Appends the plan's directories, compiled files and
    /// `planned_directories`. `None`: inline, and something is not indexed
    /// or not read yet.
    pub(super) fn add_plan(
        &self,
        plan: &PlanView,
        request: &pb::SnapshotRequest,
        context: Prefetch<'_>,
        reply: &mut Reply,
        answered: &mut std::collections::HashSet<Bytes>,
        tally: &mut Tally,
    ) -> Option<()> {
        let mut planned = 0u64;
        for path in &plan.directories {
            if non_canonical_reason(path).is_some() || !answered.insert(path.clone()) {
                continue;
            }
            let answer = self.ask(path, context.peer, 0, Role::Other, context.mode)?;
            if let Answer::Listed(listing) = answer {
                reply.push(&self.listing_bytes(&listing, context.slow));
                planned += 1;
            }
        }
        let served = self.plan_files(plan, request.bytecode_bytes, &context)?;
        for chosen in &served {
            if answered.insert(chosen.parent.path.clone()) {
                reply.push(&self.listing_bytes(&chosen.parent, context.slow));
                planned += 1;
            }
        }
        for chosen in &served {
            reply.push_message(SNAPSHOT_FILES_FIELD, &chosen.file);
            self.learning.files.count_served(chosen.file.data.len());
        }
        if planned > 0 {
            reply.push_varint(SNAPSHOT_PLANNED_FIELD, planned);
        }
        tally.served += planned;
        let counters = &self.learning.plans.counters;
        bump(&counters.planned_snapshots);
        counters
            .planned_directories_served
            .fetch_add(planned, Ordering::Relaxed);
        Some(())
    }

    /// The plan's compiled files this peer may read, on slow filesystems,
    /// at their fingerprints in the index, within the byte budget.
    fn plan_files(
        &self,
        plan: &PlanView,
        requested: u64,
        context: &Prefetch<'_>,
    ) -> Option<Vec<Served>> {
        let files = &self.learning.files;
        let budget = requested.min(self.learning.plans.config().max_plan_bytecode_bytes);
        if plan.files.is_empty() || budget == 0 || !files.enabled() {
            return Some(Vec::new());
        }
        let candidates = self.file_candidates(plan, context)?;
        let mut found: Vec<Lookup> = candidates
            .iter()
            .map(|(_, w)| files.lookup(&w.path, w.mtime_ns, w.size))
            .collect();
        let missing: Vec<Wanted> = candidates
            .iter()
            .zip(&found)
            .filter(|(_, found)| **found == Lookup::Missing)
            .map(|((_, w), _)| w.clone())
            .collect();
        if !missing.is_empty() {
            match context.mode {
                Mode::Inline => return None,
                Mode::Deadline => {}
                Mode::Blocking => {
                    files.fill(&missing);
                    for ((_, w), found) in candidates.iter().zip(found.iter_mut()) {
                        if *found == Lookup::Missing {
                            *found = files.lookup(&w.path, w.mtime_ns, w.size);
                        }
                    }
                }
            }
        }
        Some(choose(candidates, found, context.peer, budget))
    }

    /// Each planned compiled file whose directory this peer may list, on a
    /// slow filesystem, listed as a regular file: with its listing and its
    /// fingerprint there.
    fn file_candidates(
        &self,
        plan: &PlanView,
        context: &Prefetch<'_>,
    ) -> Option<Vec<(Arc<Listing>, Wanted)>> {
        let mut parents: HashMap<Bytes, Option<Arc<Listing>>> = HashMap::new();
        let mut candidates = Vec::new();
        for path in &plan.files {
            if non_canonical_reason(path).is_some() || path.as_ref() == b"/" {
                continue;
            }
            let parent = Bytes::copy_from_slice(parent_of(path));
            let listing = match parents.get(&parent) {
                Some(listing) => listing.clone(),
                None => {
                    let answer = self.ask(&parent, context.peer, 0, Role::Other, context.mode)?;
                    let listing = match answer {
                        Answer::Listed(l) if context.slow.contains(&l.device) => Some(l),
                        _ => None,
                    };
                    parents.insert(parent.clone(), listing.clone());
                    listing
                }
            };
            let Some(listing) = listing else { continue };
            let name = &path[parent.len() + usize::from(parent.as_ref() != b"/")..];
            let Ok(at) = listing
                .entries
                .binary_search_by(|e| e.name.as_ref().cmp(name))
            else {
                continue;
            };
            let entry = &listing.entries[at];
            if entry.kind != Kind::File {
                continue;
            }
            let wanted = Wanted {
                path: path.clone(),
                mtime_ns: entry.stat.mtime_ns,
                size: entry.stat.size,
            };
            candidates.push((listing, wanted));
        }
        Some(candidates)
    }

    /// Report: learn what a run used.
    pub(super) fn report(
        &self,
        peer: &PeerInfo,
        request: &pb::ReportRequest,
        _mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        Some(self.learn(peer, request).map(|()| Bytes::new()))
    }

    fn learn(&self, peer: &PeerInfo, request: &pb::ReportRequest) -> Result<(), Error> {
        check_report(self.learning.plans.config(), request)?;
        let key = &request.program_key;
        // No credentials: nobody to learn for.
        let Some(peer) = peer else {
            return Ok(());
        };
        let key = PlanKey {
            uid: peer.uid,
            // Copies: a plan must not keep the whole request body alive.
            key: Bytes::copy_from_slice(key),
        };
        let directories = owned_canonical(&request.directories);
        let files = owned_canonical(&request.bytecode_files);
        let adapted = self
            .learning
            .plans
            .report(key.clone(), &directories, &files);
        tracing::debug!(
            uid = peer.uid,
            directories = directories.len(),
            files = files.len(),
            added = adapted.added,
            dropped = adapted.dropped,
            refused = adapted.refused,
            "plan reported"
        );
        if adapted.added > 0 || !files.is_empty() {
            self.learning.keeper.warm(key);
        }
        Ok(())
    }

    /// A listing's encoding, flagged `slow_filesystem` on slow filesystems.
    pub(super) fn listing_bytes(&self, listing: &Listing, slow: &[u64]) -> Bytes {
        let encoded = listing.encoded(encode_listing);
        if !slow.contains(&listing.device) {
            return encoded;
        }
        let mut flagged = BytesMut::with_capacity(encoded.len() + SLOW_FILESYSTEM_TRUE.len());
        flagged.put_slice(&encoded);
        flagged.put_slice(&SLOW_FILESYSTEM_TRUE);
        flagged.freeze()
    }

    /// The encoded `Directory` for one answer.
    pub(super) fn encode(&self, path: &Bytes, answer: &Answer, slow: &[u64]) -> Bytes {
        match answer {
            Answer::Listed(listing) => self.listing_bytes(listing, slow),
            answer => encode_answer(path, answer),
        }
    }

    /// Devices whose filesystems are slow now.
    pub(super) fn slow_devices(&self) -> Vec<u64> {
        self.index
            .engines()
            .slow_devices(self.learning.slow_stat_ns)
    }

    /// The answer for a directory not indexed by the deadline.
    pub(super) fn being_indexed(&self) -> Answer {
        bump(&self.learning.being_indexed);
        Answer::NotServed(BEING_INDEXED.to_string())
    }

    /// A Snapshot at its deadline when even the barrier could not be had
    /// (the watcher busy): every entry "being indexed". `None` otherwise.
    pub(super) fn unanswered_snapshot(
        &self,
        request: &pb::SnapshotRequest,
        mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        if mode != Mode::Deadline {
            return None;
        }
        let header = self.snapshot_header();
        let mut reply = Reply::new(&header, SNAPSHOT_DIRECTORIES_FIELD);
        for path in &request.sys_path {
            reply.push(&encode_answer(path, &self.being_indexed()));
        }
        Some(Ok(reply.finish()))
    }

    /// As [`unanswered_snapshot`](Self::unanswered_snapshot) for a Lookup.
    pub(super) fn unanswered_lookup(
        &self,
        request: &pb::LookupRequest,
        mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        if mode != Mode::Deadline {
            return None;
        }
        let header = pb::LookupReply {
            protocol_version: PROTOCOL_VERSION,
            generations: Some(self.generations.clone()),
            directories: Vec::new(),
        };
        let mut reply = Reply::new(&header, LOOKUP_DIRECTORIES_FIELD);
        for path in &request.paths {
            reply.push(&encode_answer(path, &self.being_indexed()));
        }
        Some(Ok(reply.finish()))
    }

    /// When a request with this metadata must be answered: `deadline_percent`
    /// of its `grpc-timeout` after it started. `None`: no timeout given.
    pub(super) fn deadline(
        &self,
        started: Instant,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Option<tokio::time::Instant> {
        let timeout = grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
        let share = timeout.checked_mul(self.learning.deadline_percent)? / 100;
        Some(tokio::time::Instant::from_std(started.checked_add(share)?))
    }

    /// Fills the Stats fields about plans, compiled files and deadlines.
    pub(super) fn learning_stats(&self, reply: &mut pb::StatsReply) {
        let learning = &self.learning;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let gauges = learning.plans.gauges();
        let plans = &learning.plans.counters;
        let files = &learning.files.counters;
        let (cached_files, cached_bytes) = learning.files.gauges();
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
            slow_devices: self.slow_devices(),
            deadline_replies: load(&learning.deadline_replies),
            being_indexed: load(&learning.being_indexed),
            state_writes: load(&plans.state_writes),
            state_write_errors: load(&plans.state_write_errors),
            plans_loaded: load(&plans.plans_loaded),
            ..std::mem::take(reply)
        };
    }
}

/// What a Report must be before anything is learned from it.
pub(super) fn check_report(config: &PlanConfig, request: &pb::ReportRequest) -> Result<(), Error> {
    check_version(request.protocol_version)?;
    let key = &request.program_key;
    if key.is_empty() {
        return Err(Error::EmptyProgramKey);
    }
    if key.len() > config.max_program_key_bytes {
        return Err(Error::TooLong {
            field: "program_key",
            len: key.len(),
            limit: "max_program_key_bytes",
            value: config.max_program_key_bytes,
        });
    }
    let max = config.max_report_paths;
    check_paths("directories", &request.directories, max, "max_report_paths")?;
    check_paths(
        "bytecode_files",
        &request.bytecode_files,
        max,
        "max_report_paths",
    )
}

/// The files this peer may read, in plan order, while they fit `budget`
/// (a file that does not fit is skipped; smaller ones after it may fit).
fn choose(
    candidates: Vec<(Arc<Listing>, Wanted)>,
    found: Vec<Lookup>,
    peer: &PeerInfo,
    budget: u64,
) -> Vec<Served> {
    let Some(peer) = peer else {
        return Vec::new();
    };
    let mut spent = 0u64;
    let mut served = Vec::new();
    for ((parent, wanted), found) in candidates.into_iter().zip(found) {
        let Lookup::Hit { data, facts } = found else {
            continue;
        };
        let size = data.len() as u64;
        if !facts.grants_read(peer) || spent + size > budget {
            continue;
        }
        spent += size;
        served.push(Served {
            parent,
            file: pb::CachedFile {
                path: wanted.path,
                data,
                mtime_ns: wanted.mtime_ns,
                size: wanted.size,
            },
        });
    }
    served
}

/// The canonical paths of a request, copied out of its buffer.
fn owned_canonical(paths: &[Bytes]) -> Vec<Bytes> {
    paths
        .iter()
        .filter(|p| non_canonical_reason(p).is_none())
        .map(|p| Bytes::copy_from_slice(p))
        .collect()
}

/// The peer that background warm-ups act as: nothing is answered to it,
/// it only makes the index crawl and the compiled files be read.
fn warm_up_peer() -> PeerInfo {
    Some(Arc::new(Peer {
        uid: 0,
        gid: 0,
        pid: None,
        groups: Vec::new(),
    }))
}

/// Reads ahead what `key`'s plan needs (on the keeper thread, after a
/// Report): crawls its directories and reads its compiled files on slow
/// filesystems, so that the program's next Snapshot is answered from memory.
pub fn warm_plan(
    index: &Index,
    plans: &Plans,
    files: &CompiledFiles,
    slow_stat_ns: u64,
    key: &PlanKey,
) {
    let Some(plan) = plans.peek(key) else {
        return;
    };
    let started = Instant::now();
    index.barrier();
    let peer = warm_up_peer();
    for path in &plan.directories {
        if non_canonical_reason(path).is_none() {
            index.answer(path, &peer, 0, Role::Other);
        }
    }
    let slow = index.engines().slow_devices(slow_stat_ns);
    let mut wanted = Vec::new();
    let mut budget = plans.config().max_plan_bytecode_bytes;
    for path in &plan.files {
        if non_canonical_reason(path).is_some() || path.as_ref() == b"/" {
            continue;
        }
        let parent = Bytes::copy_from_slice(parent_of(path));
        let Answer::Listed(listing) = index.answer(&parent, &peer, 0, Role::Other) else {
            continue;
        };
        let name = &path[parent.len() + usize::from(parent.as_ref() != b"/")..];
        let entry = listing
            .entries
            .binary_search_by(|e| e.name.as_ref().cmp(name))
            .ok()
            .map(|at| &listing.entries[at]);
        let Some(entry) = entry.filter(|e| e.kind == Kind::File) else {
            continue;
        };
        if !slow.contains(&listing.device) || entry.stat.size > budget {
            continue;
        }
        budget -= entry.stat.size;
        wanted.push(Wanted {
            path: path.clone(),
            mtime_ns: entry.stat.mtime_ns,
            size: entry.stat.size,
        });
    }
    files.fill(&wanted);
    tracing::debug!(
        directories = plan.directories.len(),
        files = wanted.len(),
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
