//! Directories by path: listings, fingerprints, generations, and what makes
//! them stale. Nothing here reads the filesystem except through `refresh`.
//!
//! Each requested path (the *key*, as the client spelled it) has one node:
//! a listing, an absence (ABSENT), a lasting refusal (NOT_SERVED), or a
//! crawl in progress. Nodes are immutable; a change replaces the node.
//!
//! Freshness rests on three rules:
//! 1. A crawl registers every `dir/name` its resolution looks up (a
//!    *dependency*) and watches `dir` *before* reading it; it watches the
//!    listed directory before `getdents`. So every later change produces
//!    an event.
//! 2. The barrier (one mutex around the watcher) reads the queue until it is
//!    dry and applies every event before answering: an event for a name in a
//!    listing re-stats that name (a new listing, a new generation in the
//!    same slot); an event on a dependency drops every node that depended
//!    on it; an overflow drops everything.
//! 3. An event that arrives while its node is still being crawled marks the
//!    crawl dirty; a dirty crawl is repeated instead of kept (checked under
//!    the map's shard lock, so no event slips between check and insert).

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::check::{stamp_of, Check, CheckKind, Stamp};
use crate::config::{LiveLimits, RefreshConfig};
use crate::genfile::{monotonic_ns, GenFile};
use crate::policy::quota::{Cost, Over, Quotas};
use crate::policy::{Access, Facts};
use crate::refresh::engine::{Engines, Used};
use crate::refresh::{self, join, parent_of, Entry, Fingerprint, Observer, Outcome, Refusal};
use crate::stats::{bump, EngineReport, Gauges, Stats};
use crate::targets::{self, EntryId, LinkDependencies, LinkTarget, Unused};
use crate::walk::{self, Root};
use crate::watch::{Change, WatchError, Watcher};

/// Crawls of one path before answering from a read that kept changing.
const CRAWL_ATTEMPTS: usize = 3;

/// A directory's listing at one generation.
#[derive(Debug)]
pub struct Listing {
    /// The path as requested (the key).
    pub path: Bytes,
    /// Where it resolved to, every symlink followed.
    pub real: Bytes,
    pub generation: u64,
    /// 0: not published in the generation file (an answer that was not kept).
    pub slot: u32,
    pub stat: Fingerprint,
    pub entries: Vec<Entry>,
    pub access: Access,
    /// Per symlink entry (by name, sorted), the directories its resolution
    /// searched: who may have its target's fingerprint.
    pub links: Vec<(Bytes, Access)>,
    /// Checked by stat instead of watched (polled filesystems).
    pub check: Option<Check>,
    /// `st_dev` of the listed directory (whether its filesystem is slow).
    pub device: u64,
    /// When it was last answered (ms of CLOCK_MONOTONIC), for eviction.
    last_used: AtomicU64,
    /// Who it is charged to, and what its dependencies cost.
    owner: Owner,
    deps_bytes: u64,
    encoded: OnceLock<Bytes>,
}

impl Listing {
    /// The encoded `Directory` message, built once per listing version so a
    /// warm answer is a copy.
    pub fn encoded(&self, encode: impl FnOnce(&Listing) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(self)).clone()
    }

    /// What the resolution of the symlink entry `name` searched (`None`:
    /// not a resolved symlink entry).
    pub fn link_access(&self, name: &[u8]) -> Option<&Access> {
        self.links
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|at| &self.links[at].1)
    }

    fn touch(&self) {
        self.last_used.store(now_ms(), Ordering::Relaxed);
    }

    /// What keeping it costs its owner.
    fn cost(&self) -> Cost {
        Cost {
            nodes: 1,
            entries: self.entries.len() as u64,
            bytes: u64::try_from(self.approximate_bytes()).unwrap_or(0) + self.deps_bytes,
        }
    }

    fn approximate_bytes(&self) -> i64 {
        let names: usize = self.entries.iter().map(|e| e.name.len()).sum();
        let links: usize = (self.links.iter())
            .map(|(name, access)| name.len() + access.heap_bytes())
            .sum();
        let bytes = std::mem::size_of::<Self>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + names
            + self.links.capacity() * std::mem::size_of::<(Bytes, Access)>()
            + links
            + self.access.heap_bytes()
            + self.path.len()
            + self.real.len();
        i64::try_from(bytes).unwrap_or(i64::MAX)
    }
}

/// A path that does not exist, kept fresh like a listing.
#[derive(Debug)]
pub struct Absence {
    pub errno: i32,
    pub generation: u64,
    pub slot: u32,
    pub access: Access,
    pub check: Option<Check>,
    owner: Owner,
    deps_bytes: u64,
}

/// A path the daemon will not answer for, until something changes.
#[derive(Debug)]
pub struct Refused {
    pub reason: String,
    pub access: Access,
    owner: Owner,
    deps_bytes: u64,
}

/// The uid a kept node is charged to (`crate::policy::quota`): the latest
/// that was served it.
#[derive(Debug)]
struct Owner(AtomicU64);

/// `Owner`'s encoding of a peer without credentials.
const NO_UID: u64 = u64::MAX;

impl Owner {
    fn new(uid: Option<u32>) -> Owner {
        Owner(AtomicU64::new(uid.map_or(NO_UID, u64::from)))
    }

    fn get(&self) -> Option<u32> {
        decode_uid(self.0.load(Ordering::Relaxed))
    }

    /// Becomes `uid`; returns who it was.
    fn swap(&self, uid: Option<u32>) -> Option<u32> {
        decode_uid(
            self.0
                .swap(uid.map_or(NO_UID, u64::from), Ordering::Relaxed),
        )
    }
}

fn decode_uid(raw: u64) -> Option<u32> {
    u32::try_from(raw).ok()
}

/// What a node (not its listing: see `Listing::cost`) costs its owner.
fn small_cost(access: &Access, deps_bytes: u64) -> Cost {
    Cost {
        nodes: 1,
        entries: 0,
        bytes: (std::mem::size_of::<Absence>() + access.heap_bytes()) as u64 + deps_bytes,
    }
}

#[derive(Debug, Clone)]
enum Node {
    Crawling(Arc<Ticket>),
    Listed(Arc<Listing>),
    Absent(Arc<Absence>),
    Refused(Arc<Refused>),
}

impl Node {
    /// Who it is charged to and how much (`None`: a crawl in progress).
    fn charge(&self) -> Option<(Option<u32>, Cost)> {
        let indexed = Indexed::from(self.clone());
        Some((indexed.owner()?.get(), indexed.cost()))
    }

    fn last_used(&self) -> u64 {
        match self {
            Node::Listed(listing) => listing.last_used.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    fn check(&self) -> Option<&Check> {
        match self {
            Node::Listed(listing) => listing.check.as_ref(),
            Node::Absent(absence) => absence.check.as_ref(),
            Node::Crawling(_) | Node::Refused(_) => None,
        }
    }
}

/// One crawl in progress; others asking for the same path wait for it.
#[derive(Debug, Default)]
struct Ticket {
    dirty: AtomicBool,
    done: Mutex<bool>,
    finished: Condvar,
}

impl Ticket {
    fn wait(&self) {
        let mut done = lock(&self.done);
        while !*done {
            done = self.finished.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self) {
        *lock(&self.done) = true;
        self.finished.notify_all();
    }
}

/// What the index holds for one path: the same for every peer. What of it
/// a peer may have is the gate's decision (`crate::policy::gate`).
#[derive(Debug, Clone)]
pub enum Indexed {
    Listed(Arc<Listing>),
    Absent(Arc<Absence>),
    Refused(Arc<Refused>),
    /// The crawl made for this asker stopped at a directory the asker may
    /// not search or list: nothing past it was read, kept or counted.
    Screened,
}

impl Indexed {
    /// The facts that decide who may have this answer.
    pub fn access(&self) -> Option<&Access> {
        match self {
            Indexed::Listed(listing) => Some(&listing.access),
            Indexed::Absent(absence) => Some(&absence.access),
            Indexed::Refused(refused) => Some(&refused.access),
            Indexed::Screened => None,
        }
    }
}

impl Indexed {
    /// Who it is charged to (`None`: nothing kept).
    fn owner(&self) -> Option<&Owner> {
        match self {
            Indexed::Listed(listing) => Some(&listing.owner),
            Indexed::Absent(absence) => Some(&absence.owner),
            Indexed::Refused(refused) => Some(&refused.owner),
            Indexed::Screened => None,
        }
    }

    /// What keeping it costs its owner.
    fn cost(&self) -> Cost {
        match self {
            Indexed::Listed(listing) => listing.cost(),
            Indexed::Absent(absence) => small_cost(&absence.access, absence.deps_bytes),
            Indexed::Refused(refused) => small_cost(&refused.access, refused.deps_bytes),
            Indexed::Screened => Cost::default(),
        }
    }

    fn check(&self) -> Option<&Check> {
        match self {
            Indexed::Listed(listing) => listing.check.as_ref(),
            Indexed::Absent(absence) => absence.check.as_ref(),
            Indexed::Refused(_) | Indexed::Screened => None,
        }
    }
}

impl From<Node> for Indexed {
    fn from(node: Node) -> Indexed {
        match node {
            Node::Listed(listing) => Indexed::Listed(listing),
            Node::Absent(absence) => Indexed::Absent(absence),
            Node::Refused(refused) => Indexed::Refused(refused),
            // Never returned: a crawl in progress is waited for.
            Node::Crawling(_) => Indexed::Screened,
        }
    }
}

/// Where a crawl made for one asker may go: the asker's own permissions
/// (`crate::policy::gate`), so that the daemon never reads, keeps or
/// counts anything beyond what that asker could reach itself.
pub trait Screen {
    fn may_search(&self, dir: &Facts) -> bool;
    fn may_list(&self, dir: &Facts) -> bool;
    /// Who asks: what the crawl keeps is charged to this uid.
    fn uid(&self) -> Option<u32>;
}

/// Threads the whole daemon may run as helpers of [`Index::crawl_all`] at
/// any time. Daemon-wide, not per request: a peer flooding requests that
/// name unindexed paths gets no more parallelism than this in total, on top
/// of the blocking pool's threads.
pub const CRAWL_HELPERS: usize = 4;

static CRAWL_HELPERS_LENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Helper threads taken from [`CRAWL_HELPERS`], given back on drop.
struct CrawlHelpers {
    count: usize,
}

impl CrawlHelpers {
    /// Up to `wanted` helpers, as many as the allowance has left.
    fn borrow(wanted: usize) -> Self {
        let lent = &CRAWL_HELPERS_LENT;
        let mut count = 0;
        let _ = lent.fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
            count = wanted.min(CRAWL_HELPERS.saturating_sub(in_use));
            Some(in_use + count)
        });
        Self { count }
    }
}

impl Drop for CrawlHelpers {
    fn drop(&mut self) {
        CRAWL_HELPERS_LENT.fetch_sub(self.count, Ordering::AcqRel);
    }
}

/// Why a path is asked for (sys.path entries are counted as roots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    SysPathEntry,
    Other,
}

/// Which paths depend on which `dir/name` lookups.
#[derive(Default)]
struct Dependencies {
    keys_at: HashMap<Vec<u8>, HashSet<Bytes>>,
    keys_searching: HashMap<Bytes, HashMap<Bytes, usize>>,
    of_key: HashMap<Bytes, HashSet<(Bytes, Vec<u8>)>>,
    /// What the symlink entries of listings resolve through.
    links: LinkDependencies,
}

impl Dependencies {
    fn add(&mut self, key: &Bytes, dir: &[u8], location: Vec<u8>) {
        let dir = Bytes::copy_from_slice(dir);
        let pairs = self.of_key.entry(key.clone()).or_default();
        if !pairs.insert((dir.clone(), location.clone())) {
            return;
        }
        self.keys_at
            .entry(location)
            .or_default()
            .insert(key.clone());
        *self
            .keys_searching
            .entry(dir)
            .or_default()
            .entry(key.clone())
            .or_default() += 1;
    }

    /// Forgets a key's dependencies; returns the directories nobody searches
    /// any more (their watches may go).
    fn remove_key(&mut self, key: &Bytes) -> Vec<Bytes> {
        let mut unsearched = Vec::new();
        for (dir, location) in self.of_key.remove(key).unwrap_or_default() {
            if let Some(keys) = self.keys_at.get_mut(&location) {
                keys.remove(key);
                if keys.is_empty() {
                    self.keys_at.remove(&location);
                }
            }
            if let Some(keys) = self.keys_searching.get_mut(&dir) {
                if let Some(count) = keys.get_mut(key) {
                    *count -= 1;
                    if *count == 0 {
                        keys.remove(key);
                    }
                }
                if keys.is_empty() {
                    self.keys_searching.remove(&dir);
                    unsearched.push(dir);
                }
            }
        }
        unsearched
    }

    /// Roughly what `key`'s dependencies keep on the heap (each lookup is
    /// held in three maps).
    fn bytes_of(&self, key: &Bytes) -> u64 {
        const PER_LOOKUP: u64 = 128;
        let own: u64 = (self.of_key.get(key).into_iter().flatten())
            .map(|(dir, location)| 2 * (dir.len() + location.len()) as u64 + PER_LOOKUP)
            .sum();
        own + self.links.bytes_of_key(key)
    }

    fn keys_at(&self, location: &[u8]) -> Vec<Bytes> {
        self.keys_at
            .get(location)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn keys_searching(&self, dir: &[u8]) -> Vec<Bytes> {
        self.keys_searching
            .get(dir)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn is_searched(&self, dir: &[u8]) -> bool {
        self.keys_searching.contains_key(dir) || self.links.is_searched(dir)
    }

    /// Forgets everything `key` registered: its own lookups and those of its
    /// symlink entries.
    fn remove_all(&mut self, key: &Bytes, released: &mut Released) {
        released.dirs.extend(self.remove_key(key));
        let mut unused = Unused::default();
        self.links.remove_key(key, &mut unused);
        released.add(unused);
    }
}

/// Watches that may have lost their last user.
#[derive(Default)]
struct Released {
    listings: Vec<Bytes>,
    dirs: Vec<Bytes>,
    /// Contents watches of symlink targets.
    contents: Vec<Bytes>,
}

impl Released {
    fn add(&mut self, unused: Unused) {
        self.dirs.extend(unused.searched);
        self.contents.extend(unused.contents);
    }
}

/// The index and the watcher that keeps it fresh: of the daemon's own view
/// (`Root::Host`), or of one peer view (`crate::views`), whose keys and
/// real paths are paths beneath that view's root.
pub struct Index {
    root: Root,
    nodes: DashMap<Bytes, Node>,
    dependencies: Mutex<Dependencies>,
    /// Also the barrier: reading the queue and applying it happen under it.
    watcher: Mutex<Watcher>,
    /// When the last drain that left the queue dry began.
    drained_ns: AtomicU64,
    inotify_fd: RawFd,
    genfile: Arc<GenFile>,
    limits: Arc<LiveLimits>,
    quotas: Arc<Quotas>,
    stats: Arc<Stats>,
    listed: AtomicI64,
    entries: AtomicI64,
    bytes: AtomicI64,
    roots: Mutex<HashSet<Bytes>>,
    /// Keys checked by stat instead of watched, and why.
    checked: Mutex<HashMap<Bytes, CheckKind>>,
    warned_watch_limit: AtomicBool,
    /// Answers read but not kept because a watch could not be had.
    unwatched: AtomicU64,
    engines: Engines,
}

/// Whether a watch is in place (or its directory vanished, which the
/// repeated resolution notices).
fn watched(result: Result<(), WatchError>) -> bool {
    matches!(result, Ok(()) | Err(WatchError::Vanished))
}

fn now_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the daemon down with it: the guarded
    // state is kept consistent at every step.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Index {
    /// An empty index of the paths beneath `root`.
    pub fn new(
        root: Root,
        limits: Arc<LiveLimits>,
        quotas: Arc<Quotas>,
        refresh: &RefreshConfig,
        genfile: Arc<GenFile>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self> {
        let watcher = Watcher::new(
            root.clone(),
            Arc::clone(&limits),
            Arc::clone(&quotas),
            Arc::clone(&stats),
        )?;
        Ok(Self {
            root,
            nodes: DashMap::new(),
            dependencies: Mutex::new(Dependencies::default()),
            inotify_fd: watcher.raw_fd(),
            watcher: Mutex::new(watcher),
            drained_ns: AtomicU64::new(0),
            genfile,
            limits,
            quotas,
            stats,
            listed: AtomicI64::new(0),
            entries: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            roots: Mutex::new(HashSet::new()),
            checked: Mutex::new(HashMap::new()),
            warned_watch_limit: AtomicBool::new(false),
            unwatched: AtomicU64::new(0),
            engines: Engines::new(refresh),
        })
    }

    /// The inotify descriptor, for the reader thread's poll (valid as long
    /// as the index lives).
    pub fn inotify_fd(&self) -> RawFd {
        self.inotify_fd
    }

    pub fn genfile(&self) -> &GenFile {
        &self.genfile
    }

    /// Where this index's paths begin.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Drops everything (a view whose last connection closed): every node
    /// refunded to its owner, every slot released, every watch removed.
    pub fn clear(&self) {
        let mut watcher = lock(&self.watcher);
        let keys: Vec<Bytes> = self.nodes.iter().map(|n| n.key().clone()).collect();
        let mut released = Released::default();
        self.invalidate_all_of(&keys, &mut released);
        self.release_unused(&mut watcher, released);
    }

    pub fn gauges(&self) -> Gauges {
        let count = |n: &AtomicI64| u64::try_from(n.load(Ordering::Relaxed)).unwrap_or(0);
        Gauges {
            roots: lock(&self.roots).len() as u64,
            directories: count(&self.listed),
            entries: count(&self.entries),
            index_bytes: count(&self.bytes),
            degraded_roots: self.unwatched.load(Ordering::Relaxed),
            polled_roots: self.checked_count(CheckKind::Polled),
        }
    }

    fn checked_count(&self, kind: CheckKind) -> u64 {
        lock(&self.checked).values().filter(|k| **k == kind).count() as u64
    }

    /// The per-filesystem refresh engines (which filesystems are slow).
    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// The refresh engines' report for Stats.
    pub fn engine_report(&self) -> EngineReport {
        self.engines.report()
    }

    /// Reads this index's queue until it is dry, applying it (waiting for
    /// the watcher). False: reading failed, so `dry_ns` must stay old. The
    /// barrier (`crate::views::Views::barrier`) publishes `dry_ns` once
    /// every index with events is drained.
    pub fn drain(&self) -> bool {
        let mut watcher = lock(&self.watcher);
        self.drain_locked(&mut watcher)
    }

    /// When the last drain that left the queue dry began (`monotonic_ns`):
    /// every change made before then is applied.
    pub fn drained_since_ns(&self) -> u64 {
        self.drained_ns.load(Ordering::SeqCst)
    }

    /// [`drain`](Self::drain) when nobody else holds the watcher (the
    /// reader thread applying a burst of events, a crawl taking a watch);
    /// `None` otherwise, so the async thread never waits on that mutex.
    pub fn try_drain(&self) -> Option<bool> {
        let mut watcher = match self.watcher.try_lock() {
            Ok(watcher) => watcher,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.drain_locked(&mut watcher))
    }

    /// Reads the queue until it is dry, applying it.
    fn drain_locked(&self, watcher: &mut Watcher) -> bool {
        let started_ns = monotonic_ns();
        loop {
            match watcher.read() {
                Ok(None) => {
                    self.drained_ns.fetch_max(started_ns, Ordering::SeqCst);
                    return true;
                }
                Ok(Some(changes)) => self.apply(changes, watcher),
                Err(error) => {
                    // Not knowing what changed is an overflow; dry_ns stays
                    // old so clients revalidate.
                    tracing::error!(%error, "reading inotify failed; dropping the index");
                    self.apply(vec![Change::Overflow], watcher);
                    return false;
                }
            }
        }
    }

    /// What the index holds for `key` (absolute and canonical), crawled
    /// for an asker whose permissions are `screen` when it is not indexed.
    pub fn answer(&self, key: &Bytes, role: Role, screen: &dyn Screen) -> Indexed {
        let indexed = self.checked_current(key, screen);
        self.note_use(key, &indexed, role);
        indexed
    }

    /// Crawls every key of `keys` the index holds nothing for, several at
    /// once: this thread and up to `helpers` more, taken from a daemon-wide
    /// allowance ([`CRAWL_HELPERS`]; none left: this thread alone). A
    /// request naming many directories of a new view (a job's first start
    /// on a slow filesystem) then waits about as long as its slowest crawl,
    /// not their sum. The answers are not returned: the request asks for
    /// them again and finds them indexed.
    pub fn crawl_all(&self, keys: &[&Bytes], screen: &(dyn Screen + Sync), helpers: usize) {
        let unknown: Vec<&Bytes> = (keys.iter().copied())
            .filter(|key| !self.nodes.contains_key(*key))
            .collect();
        if unknown.len() < 2 {
            return; // nothing to overlap: the request's own ask crawls it
        }
        let lent = CrawlHelpers::borrow(helpers.min(unknown.len() - 1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            while let Some(key) = unknown.get(next.fetch_add(1, Ordering::Relaxed)) {
                self.answer(key, Role::Other, screen);
            }
        };
        std::thread::scope(|scope| {
            for _ in 0..lent.count {
                // A thread that cannot start leaves its share to the others.
                let spawned = std::thread::Builder::new()
                    .name("finderd-crawl".to_string())
                    .spawn_scoped(scope, work);
                if let Err(error) = spawned {
                    tracing::debug!(%error, "no crawl helper thread");
                }
            }
            work();
        });
    }

    /// [`answer`](Self::answer) when it needs no filesystem access: `key`
    /// is indexed, not being crawled, and not checked by stat. `None`: ask
    /// [`answer`](Self::answer) on a thread that may block.
    pub fn peek(&self, key: &Bytes, role: Role) -> Option<Indexed> {
        let node = self.nodes.get(key).map(|node| node.clone())?;
        if matches!(node, Node::Crawling(_)) || node.check().is_some() {
            return None;
        }
        bump(&self.stats.hits);
        let indexed = Indexed::from(node);
        self.note_use(key, &indexed, role);
        Some(indexed)
    }

    /// The current node, re-crawled first when its stat check fails.
    fn checked_current(&self, key: &Bytes, screen: &dyn Screen) -> Indexed {
        for _ in 0..CRAWL_ATTEMPTS {
            let indexed = self.current(key, screen);
            let Some(check) = indexed.check() else {
                return indexed;
            };
            bump(&self.stats.mtime_checks);
            if check.holds(&self.root, key) {
                return indexed;
            }
            bump(&self.stats.mtime_recrawls);
            self.drop_keys(std::slice::from_ref(key));
        }
        self.current(key, screen)
    }

    /// Roots and LRU order.
    fn note_use(&self, key: &Bytes, indexed: &Indexed, role: Role) {
        if role == Role::SysPathEntry && self.nodes.contains_key(key) {
            lock(&self.roots).insert(key.clone());
        }
        if let Indexed::Listed(listing) = indexed {
            listing.touch();
        }
    }

    /// The node for `key`, crawled for an asker limited by `screen` if
    /// needed.
    fn current(&self, key: &Bytes, screen: &dyn Screen) -> Indexed {
        loop {
            let existing = self.nodes.get(key).map(|node| node.clone());
            match existing {
                Some(Node::Crawling(ticket)) => ticket.wait(),
                Some(node) => {
                    bump(&self.stats.hits);
                    return Indexed::from(node);
                }
                None => {
                    let ticket = Arc::new(Ticket::default());
                    if let MapEntry::Vacant(vacant) = self.nodes.entry(key.clone()) {
                        vacant.insert(Node::Crawling(Arc::clone(&ticket)));
                        bump(&self.stats.misses);
                        let guard = CrawlGuard {
                            index: self,
                            key,
                            ticket: &ticket,
                            screen,
                            screened: Cell::new(false),
                            unwatched: Cell::new(false),
                            polled: Cell::new(false),
                        };
                        return guard.crawl();
                    }
                }
            }
        }
    }

    /// Makes a crawl's result the node of `key`, unless an event arrived
    /// since the crawl began (`Err`: crawl again).
    fn install(
        &self,
        key: &Bytes,
        ticket: &Arc<Ticket>,
        outcome: Outcome,
        check: Option<Check>,
        owner: Option<u32>,
    ) -> Result<Node, Outcome> {
        let MapEntry::Occupied(mut occupied) = self.nodes.entry(key.clone()) else {
            return Ok(self.unkept(key, outcome));
        };
        match occupied.get() {
            Node::Crawling(current) if Arc::ptr_eq(current, ticket) => {
                if ticket.dirty.load(Ordering::SeqCst) {
                    return Err(outcome);
                }
                let node = self.kept(key, outcome, check, owner);
                occupied.insert(node.clone());
                Ok(node)
            }
            _ => Ok(self.unkept(key, outcome)),
        }
    }

    /// A node for the index: with a generation and a published slot,
    /// charged to `owner` (`Index::enforce_limits` evicts what is over).
    fn kept(
        &self,
        key: &Bytes,
        outcome: Outcome,
        check: Option<Check>,
        owner: Option<u32>,
    ) -> Node {
        let needs_slot = matches!(outcome, Outcome::Listed(_) | Outcome::Absent { .. });
        let slot = if needs_slot {
            self.genfile.allocate_slot()
        } else {
            0
        };
        let deps_bytes = self.dependencies().bytes_of(key);
        let node = self.node_from(key, outcome, slot, check, (owner, deps_bytes));
        if let Some((_, cost)) = node.charge() {
            self.quotas.charge(owner, cost);
        }
        if let Some(check) = node.check() {
            lock(&self.checked).insert(key.clone(), check.kind);
        }
        match &node {
            Node::Listed(listing) => {
                self.genfile.publish(listing.slot, listing.generation);
                self.count_listing(listing, 1);
            }
            Node::Absent(absence) => self.genfile.publish(absence.slot, absence.generation),
            Node::Refused(_) | Node::Crawling(_) => {}
        }
        node
    }

    /// A node only for this answer (slot 0: the client must revalidate),
    /// charged to nobody.
    fn unkept(&self, key: &Bytes, outcome: Outcome) -> Node {
        self.node_from(key, outcome, 0, None, (None, 0))
    }

    /// `charge`: the owner and what the key's dependencies cost.
    fn node_from(
        &self,
        key: &Bytes,
        outcome: Outcome,
        slot: u32,
        check: Option<Check>,
        charge: (Option<u32>, u64),
    ) -> Node {
        let generation = self.genfile.next_generation();
        let (owner, deps_bytes) = (Owner::new(charge.0), charge.1);
        match outcome {
            Outcome::Listed(listed) => Node::Listed(Arc::new(Listing {
                path: key.clone(),
                real: listed.real,
                generation,
                slot,
                stat: listed.stat,
                entries: listed.entries,
                access: listed.access,
                links: listed.resolved,
                check,
                device: listed.device,
                last_used: AtomicU64::new(now_ms()),
                owner,
                deps_bytes,
                encoded: OnceLock::new(),
            })),
            Outcome::Absent { errno, access } => Node::Absent(Arc::new(Absence {
                errno,
                generation,
                slot,
                access,
                check,
                owner,
                deps_bytes,
            })),
            Outcome::Refused { refusal, access } => Node::Refused(Arc::new(Refused {
                reason: refusal.reason,
                access,
                owner,
                deps_bytes,
            })),
            Outcome::Raced { access } => Node::Refused(Arc::new(Refused {
                reason: "directory kept changing while being read".to_string(),
                access,
                owner,
                deps_bytes,
            })),
        }
    }

    fn count_listing(&self, listing: &Listing, sign: i64) {
        self.listed.fetch_add(sign, Ordering::Relaxed);
        self.entries
            .fetch_add(sign * listing.entries.len() as i64, Ordering::Relaxed);
        self.bytes
            .fetch_add(sign * listing.approximate_bytes(), Ordering::Relaxed);
    }

    fn dependencies(&self) -> MutexGuard<'_, Dependencies> {
        lock(&self.dependencies)
    }

    /// Turns a watch failure into a refusal; `Ok(true)`: no watch could be
    /// had (the watch limit), so the crawl's result must not be kept.
    fn watch_result(&self, key: &Bytes, result: Result<(), WatchError>) -> Result<bool, Refusal> {
        match result {
            Ok(()) => Ok(false),
            // The lookup or open that follows finds out, and the event
            // in the (watched) parent makes the crawl dirty.
            Err(WatchError::Vanished) => Ok(false),
            Err(WatchError::UidLimit) => {
                tracing::debug!(path = %key.escape_ascii(), "a uid's share of the watches is used; answered without keeping");
                Ok(true)
            }
            Err(WatchError::Limit) => {
                if !self.warned_watch_limit.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %key.escape_ascii(),
                        max_watches = ?self.limits.max_watches(),
                        "inotify watch limit reached; directories without a watch are read again \
                         for every request (raise fs.inotify.max_user_watches or --max-watches)"
                    );
                }
                Ok(true)
            }
            Err(WatchError::Io(error)) => Err(Refusal::transient(format!("cannot watch: {error}"))),
        }
    }

    /// Resolves the symlink entries `links` of the listing `key` (at the real
    /// path `real`), records what each resolves through and watches it
    /// (`crate::targets`). The resolution is repeated once the watches are
    /// in place, so nothing can change unseen in between. False: a watch
    /// could not be had, or the targets kept changing; the listing then
    /// cannot be kept fresh and must not be kept.
    fn watch_link_targets(
        &self,
        key: &Bytes,
        (real, owner): (&[u8], Option<u32>),
        links: &[Bytes],
        watcher: &mut Watcher,
        released: &mut Released,
    ) -> Option<Vec<(Bytes, LinkTarget)>> {
        let mut resolved = Vec::with_capacity(links.len());
        'links: for name in links {
            let id: EntryId = (key.clone(), name.clone());
            let mut target = targets::resolve(&self.root, real, name);
            for _ in 0..CRAWL_ATTEMPTS {
                let mut unused = Unused::default();
                self.dependencies()
                    .links
                    .set(&id, target.clone(), &mut unused);
                released.add(unused);
                for dir in target.searched_dirs() {
                    if !watched(watcher.watch_searched(dir, owner)) {
                        return self.link_watch_failed(key);
                    }
                }
                if let Some(contents) = &target.contents {
                    if !watched(watcher.watch_contents(contents, owner)) {
                        return self.link_watch_failed(key);
                    }
                }
                let again = targets::resolve(&self.root, real, name);
                if again == target {
                    resolved.push((name.clone(), target));
                    continue 'links;
                }
                target = again;
            }
            return None;
        }
        Some(resolved)
    }

    fn link_watch_failed(&self, key: &Bytes) -> Option<Vec<(Bytes, LinkTarget)>> {
        if !self.warned_watch_limit.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %key.escape_ascii(),
                max_watches = ?self.limits.max_watches(),
                "no watch for a symlink entry's target; its directory is answered but not kept \
                 (raise fs.inotify.max_user_watches or --max-watches)"
            );
        }
        None
    }

    /// Drops the nodes of `keys` (a stat check failed, or eviction) and the
    /// watches nobody needs any more.
    fn drop_keys(&self, keys: &[Bytes]) {
        let mut released = Released::default();
        let mut watcher = lock(&self.watcher);
        self.invalidate_all_of(keys, &mut released);
        self.release_unused(&mut watcher, released);
    }

    /// `uid` was served the answer `indexed` for `key`: keeping it is
    /// charged to `uid` from now on (`crate::policy::quota`).
    pub fn claim(&self, key: &Bytes, indexed: &Indexed, uid: Option<u32>) {
        let Some(owner) = indexed.owner() else {
            return;
        };
        if owner.get() == uid || !self.is_current(key, indexed) {
            return;
        }
        let cost = indexed.cost();
        let previous = owner.swap(uid);
        if self.quotas.transfer(previous, uid, cost).is_some() {
            self.enforce_limits(key, uid);
        }
    }

    /// Whether `indexed` is what the index holds for `key` now.
    fn is_current(&self, key: &Bytes, indexed: &Indexed) -> bool {
        let Some(node) = self.nodes.get(key) else {
            return false;
        };
        match (node.value(), indexed) {
            (Node::Listed(a), Indexed::Listed(b)) => Arc::ptr_eq(a, b),
            (Node::Absent(a), Indexed::Absent(b)) => Arc::ptr_eq(a, b),
            (Node::Refused(a), Indexed::Refused(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Keeps the index within its limits after `keep` was charged to
    /// `owner`: the owner's own least-recently-used nodes go while it is
    /// over its share; everyone's while the index is over
    /// `max_indexed_entries`.
    fn enforce_limits(&self, keep: &Bytes, owner: Option<u32>) {
        if let Some(over) = self.quotas.over_index_limit(owner) {
            self.evict_own(keep, owner, over);
        }
        self.enforce_entry_limit(keep);
    }

    /// Evicts `owner`'s least-recently-used nodes (absences first) until it
    /// is at 90% of each of its index limits (but never `keep`).
    fn evict_own(&self, keep: &Bytes, owner: Option<u32>, over: Over) {
        let usage = self.quotas.of(owner);
        let limits = &self.quotas.limits;
        let target = |limit: &AtomicU64| limit.load(Ordering::Relaxed) / 10 * 9;
        let (max_nodes, max_entries, max_bytes) = (
            self.quotas.max_nodes_per_uid() / 10 * 9,
            target(&limits.max_indexed_entries_per_uid),
            target(&limits.max_index_bytes_per_uid),
        );
        let mut owned: Vec<(u64, Bytes, Cost)> = (self.nodes.iter())
            .filter(|node| node.key() != keep)
            .filter_map(|node| {
                let (node_owner, cost) = node.value().charge()?;
                (node_owner == owner).then(|| (node.value().last_used(), node.key().clone(), cost))
            })
            .collect();
        owned.sort_unstable_by_key(|(used, _, _)| *used);
        let (mut nodes, mut entries, mut bytes) = (usage.nodes, usage.entries, usage.index_bytes);
        let mut evicted = Vec::new();
        for (_, key, cost) in owned {
            if nodes <= max_nodes && entries <= max_entries && bytes <= max_bytes {
                break;
            }
            nodes = nodes.saturating_sub(cost.nodes);
            entries = entries.saturating_sub(cost.entries);
            bytes = bytes.saturating_sub(cost.bytes);
            evicted.push(key);
        }
        self.quotas
            .count(owner, |usage| usage.evicted += evicted.len() as u64);
        self.stats
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        tracing::info!(
            uid = ?owner,
            evicted = evicted.len(),
            limit = over.limit(),
            "a uid is over its share of the index; evicted its least-recently-used nodes"
        );
        self.drop_keys(&evicted);
    }

    /// Evicts least-recently-used listings until the index holds at most
    /// 90% of `max_indexed_entries` (but never `keep`).
    fn enforce_entry_limit(&self, keep: &Bytes) {
        let max = LiveLimits::get(&self.limits.max_indexed_entries);
        let total = self.entries.load(Ordering::Relaxed).max(0) as usize;
        if total <= max {
            return;
        }
        let mut listings: Vec<(u64, Bytes, usize)> = self
            .nodes
            .iter()
            .filter_map(|node| match node.value() {
                Node::Listed(l) if node.key() != keep => Some((
                    l.last_used.load(Ordering::Relaxed),
                    node.key().clone(),
                    l.entries.len(),
                )),
                _ => None,
            })
            .collect();
        listings.sort_unstable_by_key(|(used, _, _)| *used);
        let target = max / 10 * 9;
        let mut remaining = total;
        let mut evicted = Vec::new();
        for (_, key, entries) in listings {
            if remaining <= target {
                break;
            }
            remaining = remaining.saturating_sub(entries);
            evicted.push(key);
        }
        self.stats
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        tracing::info!(
            evicted = evicted.len(),
            entries = total,
            max_indexed_entries = max,
            "index over its entry limit; evicted least-recently-used listings"
        );
        self.drop_keys(&evicted);
    }

    /// Re-checks the polled nodes (filesystems inotify cannot see) and
    /// drops those that moved: by stat, and by a re-listing entry by entry
    /// (which catches a file rewritten in place).
    pub fn recheck(&self) {
        let keys: Vec<Bytes> = lock(&self.checked).keys().cloned().collect();
        let mut moved = Vec::new();
        for key in keys {
            let Some(node) = self.nodes.get(&key).map(|n| Indexed::from(n.clone())) else {
                continue;
            };
            let Some(check) = node.check() else { continue };
            bump(&self.stats.mtime_checks);
            let same = check.holds(&self.root, &key)
                && !matches!(&node, Indexed::Listed(listing) if self.listing_moved(listing));
            if !same {
                bump(&self.stats.mtime_recrawls);
                moved.push(key);
            }
        }
        if !moved.is_empty() {
            tracing::debug!(count = moved.len(), "checked directories changed; dropped");
            self.drop_keys(&moved);
        }
    }

    /// Whether a listing's entries differ from the directory now.
    fn listing_moved(&self, listing: &Listing) -> bool {
        let max = LiveLimits::get(&self.limits.max_entries_per_directory);
        let Ok((stat, entries)) = refresh::relist(&self.root, &listing.real, max) else {
            return true;
        };
        let links: Vec<Bytes> = (entries.iter().filter(|e| e.link))
            .map(|e| e.name.clone())
            .collect();
        let (updates, resolved) = link_entries(resolve_links(&self.root, &listing.real, &links));
        stat != listing.stat
            || merge(&entries, updates) != listing.entries
            || resolved != listing.links
    }

    /// Applies one read's worth of changes (under the barrier).
    fn apply(&self, changes: Vec<Change>, watcher: &mut Watcher) {
        let mut names_by_key: HashMap<Bytes, BTreeSet<Bytes>> = HashMap::new();
        let mut released = Released::default();
        // Symlink entries whose targets changed: re-stat'ed like names.
        let mut links: Vec<EntryId> = Vec::new();
        for change in changes {
            match change {
                Change::Entry { key, name } => links.push((key, name)),
                Change::Location { path } => {
                    let keys = self.dependencies().keys_at(&path);
                    self.invalidate_all_of(&keys, &mut released);
                    self.dependencies().links.affected_by(&path, &mut links);
                }
                Change::Content { path } => {
                    self.dependencies().links.affected_by(&path, &mut links);
                }
                Change::Stale { keys, dirs } => {
                    self.invalidate_all_of(&keys, &mut released);
                    for dir in dirs {
                        let keys = self.dependencies().keys_searching(&dir);
                        self.invalidate_all_of(&keys, &mut released);
                        self.dependencies().links.affected_by_dir(&dir, &mut links);
                    }
                }
                Change::Overflow => {
                    tracing::warn!("inotify queue overflowed; recrawling everything");
                    let keys: Vec<Bytes> = self.nodes.iter().map(|n| n.key().clone()).collect();
                    self.invalidate_all_of(&keys, &mut released);
                }
            }
        }
        for (key, name) in links {
            match self.nodes.get(&key).map(|n| n.clone()) {
                Some(Node::Listed(_)) => {
                    names_by_key.entry(key).or_default().insert(name);
                }
                Some(_) => self.invalidate(&key, &mut released),
                None => {}
            }
        }
        let mut changed = Vec::new();
        for (key, names) in names_by_key {
            if self.refresh_names(&key, names, &mut released, watcher) {
                changed.push(key);
            }
        }
        // A directory's entry in its parent's listing carries its mtime.
        for key in changed {
            if key.as_ref() != b"/" {
                let parent = Bytes::copy_from_slice(parent_of(&key));
                let name = key.slice(parent.len() + usize::from(parent.as_ref() != b"/")..);
                self.refresh_names(&parent, BTreeSet::from([name]), &mut released, watcher);
            }
        }
        self.release_unused(watcher, released);
    }

    fn invalidate_all_of(&self, keys: &[Bytes], released: &mut Released) {
        for key in keys {
            self.invalidate(key, released);
        }
    }

    /// Drops the node of `key`; a crawl in progress is marked dirty instead.
    fn invalidate(&self, key: &Bytes, released: &mut Released) {
        if let Some(node) = self.nodes.get(key) {
            // Marked while the shard is locked: `install` cannot slip between.
            if let Node::Crawling(ticket) = &*node {
                ticket.dirty.store(true, Ordering::SeqCst);
                return;
            }
        } else {
            return;
        }
        // Dependencies first: once the node is gone a new crawl may register
        // its own, which must survive.
        self.dependencies().remove_all(key, released);
        if let Some((_, node)) = self
            .nodes
            .remove_if(key, |_, n| !matches!(n, Node::Crawling(_)))
        {
            self.retire(key, &node, released);
        }
    }

    fn retire(&self, key: &Bytes, node: &Node, released: &mut Released) {
        if let Some((owner, cost)) = node.charge() {
            self.quotas.refund(owner, cost);
        }
        match node {
            Node::Listed(listing) => {
                self.genfile.release_slot(listing.slot);
                self.count_listing(listing, -1);
                released.listings.push(key.clone());
            }
            Node::Absent(absence) => self.genfile.release_slot(absence.slot),
            Node::Refused(_) | Node::Crawling(_) => {}
        }
        lock(&self.roots).remove(key);
        lock(&self.checked).remove(key);
    }

    /// Re-stats `names` in the listing of `key` and publishes a new
    /// generation if anything differs. Returns whether it did.
    fn refresh_names(
        &self,
        key: &Bytes,
        names: BTreeSet<Bytes>,
        released: &mut Released,
        watcher: &mut Watcher,
    ) -> bool {
        let Some(Node::Listed(old)) = self.nodes.get(key).map(|n| n.clone()) else {
            return false;
        };
        let changed: Vec<Bytes> = names.into_iter().collect();
        let max_entries = LiveLimits::get(&self.limits.max_entries_per_directory);
        let Ok(refresh::Restat {
            stat,
            names: mut found,
            links,
        }) = refresh::restat(
            &self.root,
            &old.real,
            &changed,
            &old.entries,
            max_entries,
            || !watcher.events_queued(),
        )
        else {
            self.invalidate(key, released);
            return false;
        };
        // The reported names, and those that appeared or vanished since.
        let names: Vec<Bytes> = found.iter().map(|(name, _)| name.clone()).collect();
        // Names that stopped being symlinks lose their target watches; the
        // symlinks are resolved again (they may go elsewhere now) and
        // re-stat'ed once their watches are in place.
        for name in &names {
            let id = (key.clone(), name.clone());
            if !links.contains(name) && self.dependencies().links.contains(&id) {
                let mut unused = Unused::default();
                self.dependencies().links.remove(&id, &mut unused);
                released.add(unused);
            }
        }
        let mut link_access: Vec<(Bytes, Access)> = (old.links.iter())
            .filter(|(name, _)| !names.contains(name))
            .cloned()
            .collect();
        if !links.is_empty() {
            let owner = (&old.real[..], old.owner.get());
            let Some(targets) = self.watch_link_targets(key, owner, &links, watcher, released)
            else {
                self.invalidate(key, released);
                return false;
            };
            let (updates, resolved) = link_entries(targets);
            found = merge_updates(found, updates);
            link_access.extend(resolved);
            link_access.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let entries = merge(&old.entries, found);
        if stat == old.stat && entries == old.entries && link_access == old.links {
            return false;
        }
        if entries.len() > LiveLimits::get(&self.limits.max_entries_per_directory) {
            self.invalidate(key, released);
            return false;
        }
        let listing = Arc::new(Listing {
            path: old.path.clone(),
            real: old.real.clone(),
            generation: self.genfile.next_generation(),
            slot: old.slot,
            stat,
            entries,
            access: old.access.clone(),
            links: link_access,
            check: old.check,
            device: old.device,
            last_used: AtomicU64::new(old.last_used.load(Ordering::Relaxed)),
            owner: Owner::new(old.owner.get()),
            deps_bytes: old.deps_bytes,
            encoded: OnceLock::new(),
        });
        self.count_listing(&old, -1);
        self.count_listing(&listing, 1);
        self.quotas.refund(old.owner.get(), old.cost());
        self.quotas.charge(listing.owner.get(), listing.cost());
        self.genfile.publish(listing.slot, listing.generation);
        self.nodes.insert(key.clone(), Node::Listed(listing));
        true
    }

    /// Removes watches whose last user is gone. Checked here, under the
    /// barrier, because a crawl may have taken a watch up again: crawls
    /// register their node and dependencies before they ask for a watch.
    fn release_unused(&self, watcher: &mut Watcher, released: Released) {
        for key in released.listings {
            if !self.nodes.contains_key(&key) {
                watcher.unwatch_listing(&key);
            }
        }
        for dir in released.dirs {
            if !self.dependencies().is_searched(&dir) {
                watcher.unwatch_searched(&dir);
            }
        }
        for dir in released.contents {
            if !self.dependencies().links.is_contents(&dir) {
                watcher.unwatch_contents(&dir);
            }
        }
    }
}

/// `old` with each `(name, entry)` applied: replaced, inserted or removed.
fn merge(old: &[Entry], updates: Vec<(Bytes, Option<Entry>)>) -> Vec<Entry> {
    let mut entries = old.to_vec();
    for (name, entry) in updates {
        match (
            entries.binary_search_by(|e| e.name.as_ref().cmp(name.as_ref())),
            entry,
        ) {
            (Ok(at), Some(entry)) => entries[at] = entry,
            (Ok(at), None) => {
                entries.remove(at);
            }
            (Err(at), Some(entry)) => entries.insert(at, entry),
            (Err(_), None) => {}
        }
    }
    entries
}

/// `updates` with the entries of `newer` replacing those of the same name.
fn merge_updates(
    mut updates: Vec<(Bytes, Option<Entry>)>,
    newer: Vec<(Bytes, Option<Entry>)>,
) -> Vec<(Bytes, Option<Entry>)> {
    for (name, entry) in newer {
        match updates.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = entry,
            None => updates.push((name, entry)),
        }
    }
    updates
}

/// Runs one crawl and guarantees that its ticket is finished and a
/// `Crawling` node never outlives it, whatever happens.
struct CrawlGuard<'a> {
    index: &'a Index,
    key: &'a Bytes,
    ticket: &'a Arc<Ticket>,
    /// Where the asker may go.
    screen: &'a dyn Screen,
    /// The crawl stopped where the asker may not go.
    screened: Cell<bool>,
    /// Some watch this crawl needed could not be had.
    unwatched: Cell<bool>,
    /// The listed directory is on a filesystem inotify cannot see.
    polled: Cell<bool>,
}

impl CrawlGuard<'_> {
    fn crawl(&self) -> Indexed {
        let index = self.index;
        let mut last = None;
        for _ in 0..CRAWL_ATTEMPTS {
            self.ticket.dirty.store(false, Ordering::SeqCst);
            self.unwatched.set(false);
            self.polled.set(false);
            let stamp = stamp_of(&index.root, self.key);
            let outcome = self.crawl_once();
            if self.screened.get() {
                return Indexed::Screened;
            }
            let (outcome, keepable) = self.watch_links(outcome);
            if !keepable || self.unwatched.get() {
                index.unwatched.fetch_add(1, Ordering::Relaxed);
                // Answered as read, not kept (slot 0: the client asks the
                // filesystem next time); the next request reads it again.
                return index.unkept(self.key, outcome).into();
            }
            match outcome {
                raced @ Outcome::Raced { .. } => last = Some(raced),
                Outcome::Refused { refusal, access } if !refusal.lasting => {
                    return index
                        .unkept(self.key, Outcome::Refused { refusal, access })
                        .into();
                }
                Outcome::Listed(listed)
                    if listed.entries.len()
                        > LiveLimits::get(&index.limits.max_indexed_entries) =>
                {
                    // Larger than the whole index may be: answered, not kept.
                    return index.unkept(self.key, Outcome::Listed(listed)).into();
                }
                outcome => {
                    let owner = self.screen.uid();
                    match index.install(self.key, self.ticket, outcome, self.check(stamp), owner) {
                        Ok(node) => {
                            index.enforce_limits(self.key, owner);
                            return node.into();
                        }
                        Err(dirty) => last = Some(dirty),
                    }
                }
            }
        }
        // Still changing: answer the last read without keeping it.
        let raced_at_root = Outcome::Raced {
            access: Access::default(),
        };
        index.unkept(self.key, last.unwrap_or(raced_at_root)).into()
    }

    fn crawl_once(&self) -> Outcome {
        let index = self.index;
        let started = Instant::now();
        let max_entries = LiveLimits::get(&index.limits.max_entries_per_directory);
        let outcome = refresh::crawl(&index.root, self.key, self, max_entries, &index.engines);
        if let Outcome::Listed(listed) = &outcome {
            match listed.used {
                Used::Sync => bump(&index.stats.crawls_sync),
                Used::Uring => bump(&index.stats.crawls_uring),
            }
        }
        index.stats.refresh_latency.record(started.elapsed());
        tracing::debug!(
            path = %self.key.escape_ascii(),
            outcome = outcome.summary(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "crawled"
        );
        outcome
    }

    /// Resolves the listing's symlink entries once what they resolve
    /// through is watched (see `crate::targets`). False: they cannot be
    /// watched, so the listing must not be kept.
    fn watch_links(&self, outcome: Outcome) -> (Outcome, bool) {
        let Outcome::Listed(mut listed) = outcome else {
            return (outcome, true);
        };
        if listed.links.is_empty() {
            return (Outcome::Listed(listed), true);
        }
        let index = self.index;
        let mut watcher = lock(&index.watcher);
        let mut released = Released::default();
        let targets = index.watch_link_targets(
            self.key,
            (&listed.real, self.screen.uid()),
            &listed.links,
            &mut watcher,
            &mut released,
        );
        index.release_unused(&mut watcher, released);
        drop(watcher);
        let keepable = targets.is_some();
        let targets =
            targets.unwrap_or_else(|| resolve_links(&index.root, &listed.real, &listed.links));
        let (updates, resolved) = link_entries(targets);
        listed.entries = merge(&listed.entries, updates);
        listed.resolved = resolved;
        (Outcome::Listed(listed), keepable)
    }

    /// How the crawl's result is kept fresh when inotify cannot see it.
    fn check(&self, stamp: Stamp) -> Option<Check> {
        self.polled.get().then_some(Check {
            kind: CheckKind::Polled,
            stamp,
        })
    }

    /// Records that a watch this crawl needed could not be had.
    fn watched(&self, result: Result<(), WatchError>) -> Result<(), Refusal> {
        let unwatched = self.index.watch_result(self.key, result)?;
        self.unwatched.set(self.unwatched.get() || unwatched);
        Ok(())
    }
}

impl walk::Observer for CrawlGuard<'_> {
    fn before_lookup(&self, dir: &[u8], facts: &Facts, name: &[u8]) -> Result<(), Refusal> {
        if !self.screen.may_search(facts) {
            self.screened.set(true);
            return Err(Refusal::transient("screened"));
        }
        // The dependency before the watch: see `Index::release_unused`.
        self.index
            .dependencies()
            .add(self.key, dir, join(dir, name));
        let result = lock(&self.index.watcher).watch_searched(dir, self.screen.uid());
        self.watched(result)
    }
}

impl Observer for CrawlGuard<'_> {
    fn before_listing(&self, dir: &[u8], facts: &Facts, polled: bool) -> Result<(), Refusal> {
        if !self.screen.may_list(facts) {
            self.screened.set(true);
            return Err(Refusal::transient("screened"));
        }
        if polled {
            self.polled.set(true);
            return Ok(());
        }
        let result = lock(&self.index.watcher).watch_listing(self.key, dir, self.screen.uid());
        self.watched(result)
    }
}

/// The symlink entries `names` of the directory at `real`, resolved without
/// watches (for an answer that is not kept, or a background comparison).
fn resolve_links(root: &Root, real: &[u8], names: &[Bytes]) -> Vec<(Bytes, LinkTarget)> {
    names
        .iter()
        .map(|name| (name.clone(), targets::resolve(root, real, name)))
        .collect()
}

/// Listing updates: per name, its new entry or `None` when it is gone.
type Updates = Vec<(Bytes, Option<Entry>)>;

/// Each resolved symlink entry as a listing update, and who may follow it.
fn link_entries(targets: Vec<(Bytes, LinkTarget)>) -> (Updates, Vec<(Bytes, Access)>) {
    let mut updates = Vec::with_capacity(targets.len());
    let mut resolved = Vec::with_capacity(targets.len());
    for (name, target) in targets {
        let entry = match target.reached {
            Some((kind, stat)) => Entry {
                name: name.clone(),
                kind,
                stat,
                link: true,
            },
            None => Entry::unresolved_link(name.clone()),
        };
        updates.push((name.clone(), Some(entry)));
        resolved.push((name, target.access));
    }
    resolved.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    (updates, resolved)
}

impl Drop for CrawlGuard<'_> {
    fn drop(&mut self) {
        let index = self.index;
        let ours = |_: &Bytes, node: &Node| matches!(node, Node::Crawling(t) if Arc::ptr_eq(t, self.ticket));
        if index
            .nodes
            .get(self.key)
            .is_some_and(|node| ours(self.key, &node))
        {
            // Not kept: forget what the crawl registered. Its watches are
            // released when they next report an event nobody needs.
            let mut released = Released {
                listings: vec![self.key.clone()],
                ..Released::default()
            };
            index.dependencies().remove_all(self.key, &mut released);
            index.nodes.remove_if(self.key, ours);
            let mut watcher = lock(&index.watcher);
            index.release_unused(&mut watcher, released);
        }
        self.ticket.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::Kind;
    use std::os::unix::ffi::OsStrExt;

    /// Goes everywhere (a root peer).
    struct Everywhere;

    impl Screen for Everywhere {
        fn may_search(&self, _: &Facts) -> bool {
            true
        }
        fn may_list(&self, _: &Facts) -> bool {
            true
        }
        fn uid(&self) -> Option<u32> {
            Some(0)
        }
    }

    fn slot_value(genfile: &std::path::Path, slot: u32) -> u64 {
        let bytes = std::fs::read(genfile).expect("read");
        let at = crate::genfile::HEADER_BYTES + 8 * slot as usize;
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// A host index whose generation file is `dir`/gen.
    fn host_index(dir: &std::path::Path, stats: &Arc<Stats>) -> Index {
        let genfile = Arc::new(
            GenFile::create(&dir.join("gen"), 64, std::time::Duration::from_millis(200))
                .expect("genfile"),
        );
        Index::new(
            Root::Host,
            Arc::new(LiveLimits::new(
                &crate::config::Config::resolve(Default::default()).expect("defaults"),
            )),
            Arc::default(),
            &RefreshConfig::default(),
            genfile,
            Arc::clone(stats),
        )
        .expect("index")
    }

    fn key_of(path: &std::path::Path) -> Bytes {
        Bytes::copy_from_slice(path.as_os_str().as_bytes())
    }

    /// The tests that borrow crawl helpers, one at a time: the allowance is
    /// daemon-wide, shared by the test threads.
    static HELPER_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn crawl_all_indexes_every_unknown_key_and_returns_its_helpers() {
        let _one = lock(&HELPER_TESTS);
        let tmp = tempfile::tempdir().expect("tempdir");
        let stats = Arc::new(Stats::default());
        let index = host_index(tmp.path(), &stats);
        let mut keys = Vec::new();
        for n in 0..12 {
            let dir = tmp.path().join(format!("d{n}"));
            std::fs::create_dir(&dir).expect("mkdir");
            std::fs::write(dir.join("m.py"), b"").expect("write");
            keys.push(key_of(&dir));
        }
        keys.push(key_of(&tmp.path().join("missing")));
        let asked: Vec<&Bytes> = keys.iter().chain(keys.iter()).collect(); // twice each
        index.crawl_all(&asked, &Everywhere, CRAWL_HELPERS);
        for key in &keys {
            assert!(
                index.peek(key, Role::Other).is_some(),
                "{key:?} not indexed"
            );
        }
        let Some(Indexed::Listed(listing)) = index.peek(&keys[0], Role::Other) else {
            panic!("not listed");
        };
        assert_eq!(listing.entries.len(), 1);
        assert!(matches!(
            index.peek(&keys[12], Role::Other),
            Some(Indexed::Absent(_))
        ));
        assert_eq!(
            CRAWL_HELPERS_LENT.load(Ordering::Acquire),
            0,
            "helpers given back"
        );
        let misses = stats.misses.load(Ordering::Relaxed);
        assert_eq!(misses, keys.len() as u64, "each key crawled once");
        index.crawl_all(&asked, &Everywhere, CRAWL_HELPERS); // all known: no crawl
        assert_eq!(stats.misses.load(Ordering::Relaxed), misses);
    }

    #[test]
    fn a_dry_drain_records_when_it_began() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let index = host_index(tmp.path(), &Arc::new(Stats::default()));
        assert_eq!(index.drained_since_ns(), 0);
        let before = monotonic_ns();
        assert!(index.drain());
        let drained = index.drained_since_ns();
        assert!(drained >= before);
        assert!(index.drain());
        assert!(index.drained_since_ns() >= drained);
    }

    #[test]
    fn crawl_helpers_are_bounded_daemon_wide() {
        let _one = lock(&HELPER_TESTS);
        let all = CrawlHelpers::borrow(CRAWL_HELPERS + 3);
        assert!(all.count <= CRAWL_HELPERS);
        let more = CrawlHelpers::borrow(2);
        assert!(all.count + more.count <= CRAWL_HELPERS);
    }

    #[test]
    fn overflow_drops_every_node_and_its_slot_and_watches() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tree = tmp.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        let genfile_path = tmp.path().join("gen");
        let stats = Arc::new(Stats::default());
        let index = host_index(tmp.path(), &stats);
        let key = key_of(&tree);
        let Indexed::Listed(listing) = index.answer(&key, Role::SysPathEntry, &Everywhere) else {
            panic!("not listed");
        };
        assert_eq!(slot_value(&genfile_path, listing.slot), listing.generation);
        assert_eq!((index.gauges().roots, index.gauges().directories), (1, 1));
        assert!(stats.watches.load(Ordering::Relaxed) > 0);

        index.apply(vec![Change::Overflow], &mut lock(&index.watcher));
        assert!(index.nodes.is_empty());
        assert_eq!(
            slot_value(&genfile_path, listing.slot),
            0,
            "clients must revalidate"
        );
        assert_eq!(
            (
                index.gauges().roots,
                index.gauges().directories,
                index.gauges().entries
            ),
            (0, 0, 0)
        );
        assert_eq!(
            stats.watches.load(Ordering::Relaxed),
            0,
            "every watch released"
        );

        let Indexed::Listed(again) = index.answer(&key, Role::Other, &Everywhere) else {
            panic!("not listed after the recrawl");
        };
        assert!(again.generation > listing.generation);
    }

    fn entry(name: &'static [u8], size: u64) -> Entry {
        Entry {
            name: Bytes::from_static(name),
            kind: Kind::File,
            stat: Fingerprint {
                mode: 0o100644,
                mtime_ns: 1,
                size,
                ..Fingerprint::default()
            },
            link: false,
        }
    }

    #[test]
    fn merge_replaces_inserts_and_removes_in_order() {
        let old = vec![entry(b"a", 1), entry(b"c", 1), entry(b"e", 1)];
        let merged = merge(
            &old,
            vec![
                (Bytes::from_static(b"c"), Some(entry(b"c", 2))),
                (Bytes::from_static(b"b"), Some(entry(b"b", 1))),
                (Bytes::from_static(b"e"), None),
                (Bytes::from_static(b"z"), None),
            ],
        );
        assert_eq!(merged, vec![entry(b"a", 1), entry(b"b", 1), entry(b"c", 2)]);
    }

    #[test]
    fn dependencies_track_locations_and_searched_dirs() {
        let mut deps = Dependencies::default();
        let key = Bytes::from_static(b"/a/b");
        deps.add(&key, b"/", b"/a".to_vec());
        deps.add(&key, b"/a", b"/a/b".to_vec());
        deps.add(&key, b"/a", b"/a/b".to_vec());
        let other = Bytes::from_static(b"/a/c");
        deps.add(&other, b"/a", b"/a/c".to_vec());
        assert_eq!(deps.keys_at(b"/a/b"), vec![key.clone()]);
        assert_eq!(deps.keys_searching(b"/a").len(), 2);
        let mut unsearched = deps.remove_key(&key);
        unsearched.sort();
        assert_eq!(unsearched, vec![Bytes::from_static(b"/")]);
        assert!(deps.is_searched(b"/a"));
        assert!(deps.keys_at(b"/a/b").is_empty());
    }
}
