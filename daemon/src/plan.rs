//! Learned import plans: per (peer uid, program key), the directories and
//! compiled files a program's runs used, so that its next start gets all of
//! them in one Snapshot (docs/architecture.md, "The query flow" 8).
//!
//! A plan names paths only, never fingerprints or listings: every answer
//! built from a plan comes from the index under the request's barrier, so a
//! changed file never yields a stale answer. Plans adapt: a Report keeps
//! what it names (and adds what is new, within the bounds) and counts one
//! miss for every entry it leaves out; an entry missed by `drop_after`
//! consecutive Reports drops out. A plan left empty is forgotten.
//!
//! Bounds: entries per plan (`max_plan_directories`, `max_plan_files`: new
//! entries beyond them are not added), plans and bytes per uid
//! (`max_plans_per_uid`, `max_plan_bytes_per_uid`: the uid's own least
//! recently used plans are evicted first, then new entries are refused) and
//! plans in total (least recently used evicted first). Plans survive a
//! restart through the state file ([`state`]), written by the keeper thread
//! ([`Keeper`]); a state file that would pass its cap keeps a fair share of
//! every uid's most recently used plans.

pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::PlanConfig;
use crate::policy::Peer;
use state::{StateFile, StoredEntry, StoredPlan};

/// Whose plan: the peer's uid and the program key its client sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanKey {
    pub uid: u32,
    pub key: Bytes,
}

/// What a Snapshot needs of a plan: its paths, in byte order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlanView {
    pub directories: Vec<Bytes>,
    pub files: Vec<Bytes>,
}

/// One plan: each path with the number of consecutive Reports that left it out.
#[derive(Debug)]
struct Plan {
    directories: BTreeMap<Bytes, u32>,
    files: BTreeMap<Bytes, u32>,
    last_used: u64,
    view: Arc<PlanView>,
}

/// What one path of a plan keeps on the heap besides its bytes (its map
/// node, its miss count, its copy in the view).
const PATH_OVERHEAD: u64 = 96;

fn path_bytes(path: &[u8]) -> u64 {
    2 * path.len() as u64 + PATH_OVERHEAD
}

impl Plan {
    /// What this plan keeps on the heap, charged to its uid.
    fn bytes(&self) -> u64 {
        let paths = self.directories.keys().chain(self.files.keys());
        paths.map(|path| path_bytes(path)).sum::<u64>() + PATH_OVERHEAD
    }

    fn new(directories: BTreeMap<Bytes, u32>, files: BTreeMap<Bytes, u32>, used: u64) -> Self {
        let mut plan = Plan {
            directories,
            files,
            last_used: used,
            view: Arc::default(),
        };
        plan.refresh_view();
        plan
    }

    fn refresh_view(&mut self) {
        self.view = Arc::new(PlanView {
            directories: self.directories.keys().cloned().collect(),
            files: self.files.keys().cloned().collect(),
        });
    }

    fn is_empty(&self) -> bool {
        self.directories.is_empty() && self.files.is_empty()
    }
}

/// What one Report changed, for logs and stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adapted {
    pub added: usize,
    pub dropped: usize,
    /// New entries left out because the plan is full.
    pub refused: usize,
}

impl Adapted {
    fn plus(self, other: Adapted) -> Adapted {
        Adapted {
            added: self.added + other.added,
            dropped: self.dropped + other.dropped,
            refused: self.refused + other.refused,
        }
    }
}

/// Keeps the entries a Report names (misses back to 0), adds new ones while
/// there is room, and counts a miss for every other entry; those missed
/// `drop_after` times drop out.
fn adapt(
    entries: &mut BTreeMap<Bytes, u32>,
    reported: &[Bytes],
    (max, bytes_left): (usize, &mut u64),
    drop_after: u32,
) -> Adapted {
    let named: HashSet<&[u8]> = reported.iter().map(|p| p.as_ref()).collect();
    let before = entries.len();
    entries.retain(|path, misses| {
        if named.contains(path.as_ref()) {
            *misses = 0;
            return true;
        }
        *misses += 1;
        *misses < drop_after
    });
    let mut adapted = Adapted {
        dropped: before - entries.len(),
        ..Adapted::default()
    };
    for path in reported {
        if entries.contains_key(path) {
            continue;
        }
        if entries.len() >= max || path_bytes(path) > *bytes_left {
            adapted.refused += 1;
            continue;
        }
        *bytes_left -= path_bytes(path);
        entries.insert(path.clone(), 0);
        adapted.added += 1;
    }
    adapted
}

/// Counters for the Stats RPC.
#[derive(Debug, Default)]
pub struct PlanCounters {
    pub reports: AtomicU64,
    pub planned_snapshots: AtomicU64,
    pub planned_directories_served: AtomicU64,
    pub plans_evicted: AtomicU64,
    pub entries_dropped: AtomicU64,
    pub state_writes: AtomicU64,
    pub state_write_errors: AtomicU64,
    pub plans_loaded: AtomicU64,
}

/// The gauges of the plan store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanGauges {
    pub plans: u64,
    pub directories: u64,
    pub files: u64,
}

#[derive(Default)]
struct Store {
    plans: HashMap<PlanKey, Plan>,
    /// Plans and their bytes per uid, for `max_plans_per_uid` and
    /// `max_plan_bytes_per_uid`.
    per_uid: HashMap<u32, UidPlans>,
    /// Logical time of the last use, for LRU order.
    clock: u64,
}

/// One uid's plans: how many, and their bytes.
#[derive(Debug, Default, Clone, Copy)]
struct UidPlans {
    plans: usize,
    bytes: u64,
}

impl Store {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn insert(&mut self, key: PlanKey, plan: Plan) {
        let bytes = plan.bytes() + key.key.len() as u64;
        let uid = key.uid;
        let key_len = key.key.len() as u64;
        let replaced = (self.plans.insert(key, plan)).map(|old| old.bytes() + key_len);
        let held = self.per_uid.entry(uid).or_default();
        match replaced {
            Some(old) => held.bytes = held.bytes.saturating_sub(old) + bytes,
            None => {
                held.plans += 1;
                held.bytes += bytes;
            }
        }
    }

    fn remove(&mut self, key: &PlanKey) -> bool {
        let Some(plan) = self.plans.remove(key) else {
            return false;
        };
        if let Some(held) = self.per_uid.get_mut(&key.uid) {
            held.plans -= 1;
            held.bytes = held
                .bytes
                .saturating_sub(plan.bytes() + key.key.len() as u64);
            if held.plans == 0 {
                self.per_uid.remove(&key.uid);
            }
        }
        true
    }

    /// The plan `key` changed size from `before` bytes.
    fn resized(&mut self, key: &PlanKey, before: u64) {
        let after = self.plans.get(key).map_or(0, Plan::bytes);
        if let Some(held) = self.per_uid.get_mut(&key.uid) {
            held.bytes = held.bytes.saturating_sub(before) + after;
        }
    }

    fn held(&self, uid: u32) -> UidPlans {
        self.per_uid.get(&uid).copied().unwrap_or_default()
    }

    /// The least recently used plan, among those of `uid` when given.
    fn oldest(&self, uid: Option<u32>) -> Option<PlanKey> {
        self.plans
            .iter()
            .filter(|(key, _)| uid.is_none_or(|uid| key.uid == uid))
            .min_by_key(|(_, plan)| plan.last_used)
            .map(|(key, _)| key.clone())
    }

    /// Makes room for one more plan of `uid`; returns how many were evicted.
    fn make_room(&mut self, uid: u32, config: &PlanConfig) -> u64 {
        let mut evicted = 0;
        while self.held(uid).plans >= config.max_plans_per_uid {
            let Some(oldest) = self.oldest(Some(uid)) else {
                break;
            };
            evicted += u64::from(self.remove(&oldest));
        }
        while self.plans.len() >= config.max_plans {
            let Some(oldest) = self.oldest(None) else {
                break;
            };
            evicted += u64::from(self.remove(&oldest));
        }
        evicted
    }

    /// Evicts `uid`'s least recently used plans other than `keep` until its
    /// plans fit `max_plan_bytes_per_uid` with `wanted` more bytes; returns
    /// how many were evicted.
    fn make_bytes(&mut self, keep: &PlanKey, wanted: u64, config: &PlanConfig) -> u64 {
        let mut evicted = 0;
        while self.held(keep.uid).bytes + wanted > config.max_plan_bytes_per_uid {
            let oldest = (self.plans.iter())
                .filter(|(key, _)| key.uid == keep.uid && *key != keep)
                .min_by_key(|(_, plan)| plan.last_used)
                .map(|(key, _)| key.clone());
            let Some(oldest) = oldest else {
                break;
            };
            evicted += u64::from(self.remove(&oldest));
        }
        evicted
    }
}

/// Every learned plan.
pub struct Plans {
    config: PlanConfig,
    store: Mutex<Store>,
    /// Changed since the state file was last written.
    dirty: AtomicBool,
    pub counters: PlanCounters,
}

impl Plans {
    pub fn new(config: &PlanConfig) -> Self {
        Self {
            config: config.clone(),
            store: Mutex::new(Store::default()),
            dirty: AtomicBool::new(false),
            counters: PlanCounters::default(),
        }
    }

    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // Every step leaves the store consistent: a panic elsewhere must
        // not take plans down with it.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plan of `key`, marked as used (for LRU order).
    pub fn get(&self, key: &PlanKey) -> Option<Arc<PlanView>> {
        let mut store = self.store();
        let now = store.tick();
        let plan = store.plans.get_mut(key)?;
        plan.last_used = now;
        Some(Arc::clone(&plan.view))
    }

    /// The plan of `key` without changing its LRU place (background work).
    pub fn peek(&self, key: &PlanKey) -> Option<Arc<PlanView>> {
        self.store()
            .plans
            .get(key)
            .map(|plan| Arc::clone(&plan.view))
    }

    /// Applies one Report: the directories and compiled files a run of the
    /// program used (paths already checked absolute and canonical).
    pub fn report(&self, key: PlanKey, directories: &[Bytes], files: &[Bytes]) -> Adapted {
        self.counters.reports.fetch_add(1, Ordering::Relaxed);
        if self.config.max_plans == 0 {
            return Adapted::default();
        }
        let mut store = self.store();
        let now = store.tick();
        let mut evicted = 0;
        if !store.plans.contains_key(&key) {
            if directories.is_empty() && files.is_empty() {
                return Adapted::default();
            }
            evicted = store.make_room(key.uid, &self.config);
            store.insert(
                key.clone(),
                Plan::new(BTreeMap::new(), BTreeMap::new(), now),
            );
        }
        let config = &self.config;
        let wanted: u64 = (directories.iter().chain(files))
            .map(|path| path_bytes(path))
            .sum();
        evicted += store.make_bytes(&key, wanted, config);
        let held = store.held(key.uid).bytes;
        let mut bytes_left = config.max_plan_bytes_per_uid.saturating_sub(held);
        let Some(plan) = store.plans.get_mut(&key) else {
            return Adapted::default();
        };
        let before = plan.bytes();
        let adapted = adapt(
            &mut plan.directories,
            directories,
            (config.max_plan_directories, &mut bytes_left),
            config.drop_after,
        )
        .plus(adapt(
            &mut plan.files,
            files,
            (config.max_plan_files, &mut bytes_left),
            config.drop_after,
        ));
        plan.last_used = now;
        plan.refresh_view();
        if plan.is_empty() {
            store.remove(&key);
        } else {
            store.resized(&key, before);
        }
        drop(store);
        let counters = &self.counters;
        counters.plans_evicted.fetch_add(evicted, Ordering::Relaxed);
        counters
            .entries_dropped
            .fetch_add(adapted.dropped as u64, Ordering::Relaxed);
        if evicted > 0 {
            tracing::info!(
                evicted,
                max_plans = config.max_plans,
                max_plans_per_uid = config.max_plans_per_uid,
                max_plan_bytes_per_uid = config.max_plan_bytes_per_uid,
                "plans evicted (least recently used) to make room"
            );
        }
        self.dirty.store(true, Ordering::Relaxed);
        adapted
    }

    pub fn gauges(&self) -> PlanGauges {
        let store = self.store();
        let mut gauges = PlanGauges {
            plans: store.plans.len() as u64,
            ..PlanGauges::default()
        };
        for plan in store.plans.values() {
            gauges.directories += plan.directories.len() as u64;
            gauges.files += plan.files.len() as u64;
        }
        gauges
    }

    /// Every plan, least recently used first (so that loading them in order
    /// restores the LRU order).
    fn stored(&self) -> Vec<StoredPlan> {
        let store = self.store();
        let mut plans: Vec<(&PlanKey, &Plan)> = store.plans.iter().collect();
        plans.sort_by_key(|(_, plan)| plan.last_used);
        let entries = |map: &BTreeMap<Bytes, u32>| {
            map.iter()
                .map(|(path, misses)| StoredEntry {
                    path: path.clone(),
                    misses: *misses,
                })
                .collect()
        };
        plans
            .into_iter()
            .map(|(key, plan)| StoredPlan {
                uid: key.uid,
                key: key.key.clone(),
                directories: entries(&plan.directories),
                files: entries(&plan.files),
            })
            .collect()
    }

    /// Adds plans read from the state file, within today's bounds.
    fn restore(&self, plans: Vec<StoredPlan>) -> usize {
        let config = &self.config;
        let mut restored = 0;
        for stored in plans {
            if config.max_plans == 0 {
                break;
            }
            let bounded = |entries: Vec<StoredEntry>, max: usize| -> BTreeMap<Bytes, u32> {
                entries
                    .into_iter()
                    .filter(|e| e.misses < config.drop_after && is_plan_path(&e.path))
                    .take(max)
                    .map(|e| (e.path, e.misses))
                    .collect()
            };
            let directories = bounded(stored.directories, config.max_plan_directories);
            let files = bounded(stored.files, config.max_plan_files);
            if stored.key.is_empty() || stored.key.len() > config.max_program_key_bytes {
                continue;
            }
            let mut store = self.store();
            let now = store.tick();
            let plan = Plan::new(directories, files, now);
            if plan.is_empty() {
                continue;
            }
            let key = PlanKey {
                uid: stored.uid,
                key: stored.key,
            };
            if !store.plans.contains_key(&key) {
                store.make_room(key.uid, config);
            }
            let bytes = plan.bytes() + key.key.len() as u64;
            store.make_bytes(&key, bytes, config);
            if store.held(key.uid).bytes + bytes > config.max_plan_bytes_per_uid {
                continue;
            }
            store.insert(key, plan);
            restored += 1;
        }
        restored
    }

    /// Reads the state file of `socket`'s daemon from the state directory.
    /// Anything wrong with it is logged and ignored: the daemon starts with
    /// no plans rather than not at all.
    pub fn load(&self, socket: &[u8]) {
        let Some(dir) = &self.config.state_dir else {
            tracing::debug!("no state directory; learned plans are kept in memory only");
            return;
        };
        let file = StateFile::in_dir(dir);
        match file.read(socket) {
            Ok(Some(plans)) => {
                let restored = self.restore(plans);
                self.counters
                    .plans_loaded
                    .store(restored as u64, Ordering::Relaxed);
                tracing::info!(path = %file.path().display(), plans = restored, "learned plans loaded");
            }
            Ok(None) => {
                tracing::debug!(path = %file.path().display(), "no plan state file yet");
            }
            Err(error) => {
                tracing::warn!(path = %file.path().display(), %error, "plan state file ignored; starting with no plans");
            }
        }
    }

    /// Writes the state file when plans changed since the last write.
    pub fn save_if_dirty(&self, socket: &[u8]) {
        let Some(dir) = &self.config.state_dir else {
            return;
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let file = StateFile::in_dir(dir);
        match file.write(socket, self.stored(), self.config.max_state_bytes) {
            Ok(bytes) => {
                self.counters.state_writes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %file.path().display(), bytes, "plan state file written");
            }
            Err(error) => {
                // Try again at the next change or at shutdown.
                self.dirty.store(true, Ordering::Relaxed);
                self.counters
                    .state_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %file.path().display(), %error, "cannot write the plan state file");
            }
        }
    }
}

/// Whether a stored path can be part of a plan (absolute, no NUL); the
/// wire checks canonical form before a Report reaches the store.
fn is_plan_path(path: &[u8]) -> bool {
    path.starts_with(b"/") && !path.contains(&0)
}

/// Work for the keeper thread.
enum Job {
    /// Read ahead what the plan of this key will need (crawls, compiled
    /// files), for and as the peer that reported it.
    Warm(PlanKey, Arc<Peer>),
    /// Write the state file if needed, and end.
    Stop,
}

/// Background work a request should not wait for, run on one thread, with
/// the permissions of the peer it is for.
pub type Warmer = Box<dyn Fn(&PlanKey, &Arc<Peer>) + Send>;

/// The keeper thread: warms plans after Reports, writes the state file at
/// most every `state_write_interval` while plans change, and once more when
/// stopped.
pub struct Keeper {
    jobs: SyncSender<Job>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Warm-ups waiting at most; more are dropped (the next Snapshot reads
/// what it needs itself).
const QUEUED_WARMUPS: usize = 64;

impl Keeper {
    pub fn spawn(plans: Arc<Plans>, socket: Vec<u8>, warm: Warmer) -> std::io::Result<Keeper> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUED_WARMUPS);
        let thread = std::thread::Builder::new()
            .name("finderd-plans".to_string())
            .spawn(move || keep(&plans, &socket, &queue, &warm))?;
        Ok(Keeper {
            jobs,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a warm-up of `key`'s plan for `peer`, who reported it;
    /// dropped when the queue is full.
    pub fn warm(&self, key: PlanKey, peer: Arc<Peer>) {
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(Job::Warm(key, peer)) {
            tracing::debug!("plan warm-up queue full; skipped");
        }
    }

    /// Stops the thread after a last write of the state file (waits for a
    /// warm-up in progress).
    pub fn stop(&self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(thread) = thread else {
            return;
        };
        let _ = self.jobs.send(Job::Stop);
        if thread.join().is_err() {
            tracing::error!("the plan keeper thread panicked");
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keep(plans: &Plans, socket: &[u8], queue: &Receiver<Job>, warm: &Warmer) {
    let interval = plans.config.state_write_interval;
    let mut last_write = Instant::now();
    loop {
        let wait = interval.saturating_sub(last_write.elapsed());
        match queue.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Job::Warm(key, peer)) => warm(&key, &peer),
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_write.elapsed() >= interval {
            plans.save_if_dirty(socket);
            last_write = Instant::now();
        }
    }
    plans.save_if_dirty(socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(path: &str) -> Bytes {
        Bytes::copy_from_slice(path.as_bytes())
    }

    fn key(uid: u32, name: &str) -> PlanKey {
        PlanKey { uid, key: b(name) }
    }

    fn config() -> PlanConfig {
        PlanConfig {
            max_plans: 3,
            max_plans_per_uid: 2,
            max_plan_directories: 3,
            max_plan_files: 2,
            ..PlanConfig::default()
        }
    }

    #[test]
    fn reported_entries_stay_and_unreported_drop_after_n_reports() {
        let plans = Plans::new(&config());
        let k = key(1000, "p");
        plans.report(k.clone(), &[b("/a"), b("/b")], &[]);
        assert_eq!(plans.get(&k).expect("plan").directories, [b("/a"), b("/b")]);
        for round in 1..=3 {
            let adapted = plans.report(k.clone(), &[b("/a"), b("/c")], &[]);
            let view = plans.get(&k).expect("plan");
            if round < 3 {
                assert!(view.directories.contains(&b("/b")), "round {round}");
            } else {
                assert_eq!(adapted.dropped, 1);
                assert_eq!(view.directories, [b("/a"), b("/c")]);
            }
        }
        // Named again: its misses start over.
        plans.report(k.clone(), &[b("/c")], &[]);
        plans.report(k.clone(), &[b("/c")], &[]);
        plans.report(k.clone(), &[b("/a"), b("/c")], &[]);
        plans.report(k.clone(), &[b("/c")], &[]);
        assert!(plans.get(&k).expect("plan").directories.contains(&b("/a")));
    }

    #[test]
    fn a_full_plan_refuses_new_entries_and_an_empty_one_is_forgotten() {
        let plans = Plans::new(&config());
        let k = key(1, "p");
        let adapted = plans.report(k.clone(), &[b("/a"), b("/b"), b("/c"), b("/d")], &[]);
        assert_eq!((adapted.added, adapted.refused), (3, 1));
        plans.report(k.clone(), &[], &[b("/x.pyc"), b("/y.pyc"), b("/z.pyc")]);
        assert_eq!(plans.get(&k).expect("plan").files.len(), 2);
        for _ in 0..3 {
            plans.report(k.clone(), &[], &[]);
        }
        assert!(plans.get(&k).is_none(), "every entry dropped out");
        assert!(plans.report(key(1, "q"), &[], &[]) == Adapted::default());
        assert!(
            plans.get(&key(1, "q")).is_none(),
            "an empty report makes no plan"
        );
    }

    #[test]
    fn plans_are_per_uid_and_key_and_evicted_least_recently_used() {
        let plans = Plans::new(&config());
        plans.report(key(1, "a"), &[b("/1a")], &[]);
        plans.report(key(1, "b"), &[b("/1b")], &[]);
        plans.report(key(2, "a"), &[b("/2a")], &[]);
        assert_eq!(plans.get(&key(2, "a")).expect("2a").directories, [b("/2a")]);
        assert_eq!(plans.get(&key(1, "a")).expect("1a").directories, [b("/1a")]);
        // uid 1 is at max_plans_per_uid: its least recently used (b) goes.
        plans.report(key(1, "c"), &[b("/1c")], &[]);
        assert!(plans.get(&key(1, "b")).is_none());
        assert!(plans.get(&key(1, "a")).is_some());
        // Three plans in all: the oldest of everyone (2a) goes.
        plans.report(key(3, "a"), &[b("/3a")], &[]);
        assert!(plans.get(&key(2, "a")).is_none());
        assert_eq!(plans.gauges().plans, 3);
        assert_eq!(plans.counters.plans_evicted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_uid_over_its_plan_bytes_loses_its_own_oldest_plans_only() {
        let tight = PlanConfig {
            max_plan_bytes_per_uid: 2_000,
            max_plans_per_uid: 100,
            max_plans: 100,
            ..config()
        };
        let plans = Plans::new(&tight);
        plans.report(key(2, "victim"), &[b("/v")], &[]);
        for i in 0..20 {
            plans.report(
                key(1, &format!("p{i}")),
                &[b(&format!("/hostile/{i:0100}"))],
                &[],
            );
        }
        assert!(
            plans.peek(&key(2, "victim")).is_some(),
            "another uid is untouched"
        );
        assert!(plans.peek(&key(1, "p19")).is_some(), "the newest stays");
        assert!(plans.peek(&key(1, "p0")).is_none(), "the oldest went");
        let held = plans.store().held(1).bytes;
        assert!(held <= 2_000, "{held} bytes held");
        let huge: Vec<Bytes> = (0..100).map(|i| b(&format!("/huge/{i:0100}"))).collect();
        let adapted = plans.report(key(3, "huge"), &huge, &[]);
        assert!(adapted.refused > 0 && adapted.added > 0, "{adapted:?}");
        assert!(plans.store().held(3).bytes <= 2_000);
    }

    #[test]
    fn stored_plans_restore_in_lru_order_within_bounds() {
        let plans = Plans::new(&config());
        plans.report(key(1, "a"), &[b("/a")], &[b("/a/__pycache__/m.pyc")]);
        plans.report(key(2, "b"), &[b("/b")], &[]);
        plans.get(&key(1, "a"));
        let stored = plans.stored();
        assert_eq!(stored[0].uid, 2, "least recently used first");
        let again = Plans::new(&config());
        assert_eq!(again.restore(stored), 2);
        assert_eq!(again.gauges(), plans.gauges());
        assert_eq!(again.peek(&key(1, "a")), plans.peek(&key(1, "a")));
        let tight = Plans::new(&PlanConfig {
            max_plans: 1,
            ..config()
        });
        tight.restore(plans.stored());
        assert!(
            tight.peek(&key(1, "a")).is_some(),
            "the most recent survives"
        );
        assert!(tight.peek(&key(2, "b")).is_none());
    }
}
