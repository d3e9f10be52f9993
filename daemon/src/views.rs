//! Peer views: a peer in another mount namespace (a container, a Kubernetes
//! pod next to the DaemonSet, a service with `PrivateTmp=`) names other
//! files with the same paths, and the daemon cannot (and, without
//! privilege, may not) reach into that namespace. So the peer brings its
//! own view: at connect, before the HTTP/2 preface, its client passes an
//! `O_PATH` descriptor of its root directory with `SCM_RIGHTS`
//! (`crate::connection::handshake`). That peer's paths are then resolved
//! beneath that descriptor, as `openat2(RESOLVE_IN_ROOT)` would resolve
//! them, watched through it, and kept in an index of their own.
//!
//! - A view is known by the mount and inode of its root (`statx`
//!   `stx_mnt_id`, `st_dev`, `st_ino`): every process of one container
//!   shares the root mount, so they share one view (and one warm index),
//!   while two containers never do, whatever their paths. A view whose root
//!   is the daemon's own `/` is the daemon's view: the host index.
//! - The daemon reads a view with its own credentials, and the gate
//!   (`crate::policy::gate`) decides from the facts of the inodes opened
//!   what the peer may have: a descriptor of a directory the peer cannot
//!   search is screened like any other path.
//! - A view lives while a connection holds it and `view_linger_ms` after
//!   the last one closed (so that the next short interpreter of the same
//!   container finds its index warm); then its index, inotify instance and
//!   watches go. One uid may hold `max_views_per_uid` views; a new one past
//!   that first takes the place of one of that uid's lingering views, else
//!   its connection is answered NOT_SERVED for every path.
//! - One barrier for all: `dry_ns` in the generation file promises that
//!   every change made before it has bumped its slot, in every view. The
//!   inotify descriptors of every index are in one epoll set: the barrier
//!   drains its own index and every other one with events, then publishes.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::config::{LiveLimits, RefreshConfig};
use crate::genfile::{monotonic_ns, GenFile};
use crate::index::Index;
use crate::policy::quota::Quotas;
use crate::stats::{Gauges, Stats};
use crate::walk::{self, Root};

/// What identifies a view: the mount and the inode of its root directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub mount: u64,
    pub dev: u64,
    pub ino: u64,
}

impl ViewKey {
    /// The key of the directory behind `fd`; `ENOTDIR` if it is none.
    pub fn of(fd: &OwnedFd) -> io::Result<ViewKey> {
        let stx = walk::statx(fd, libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID)?;
        if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFDIR {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        if stx.stx_mask & libc::STATX_MNT_ID == 0 {
            // Before Linux 5.8 the mount cannot be told: no sharing by key
            // would be safe, so views are not served.
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok(ViewKey {
            mount: stx.stx_mnt_id,
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
        })
    }
}

/// One peer view: its root and its index.
pub struct View {
    key: ViewKey,
    /// The uid that opened it: it counts against that uid's
    /// `max_views_per_uid` until the view goes.
    owner: Option<u32>,
    pub index: Index,
    views: Weak<Views>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .finish()
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(views) = self.views.upgrade() {
            views.forget(self);
        }
        // Every node refunded, slot released and watch removed before the
        // inotify instance closes with the index.
        self.index.clear();
        tracing::debug!(key = ?self.key, uid = ?self.owner, "view dropped with its last connection");
    }
}

/// What a connection's peer said about its view.
#[derive(Debug, Clone)]
pub enum PeerView {
    /// It passed its root, and that is the daemon's own: the host index.
    Own,
    /// It passed another root: its paths are answered in this view.
    View(Arc<View>),
    /// It passed a root the daemon will not hold (a limit, or not a
    /// directory): every path is NOT_SERVED with this reason.
    Refused(String),
}

/// A connection's view, set once when its first bytes arrive (before any
/// request can): shared between the connection and its requests' peer.
#[derive(Clone, Default)]
pub struct ViewCell(Arc<OnceLock<PeerView>>);

impl ViewCell {
    pub fn set(&self, view: PeerView) {
        let _ = self.0.set(view);
    }

    /// `None`: the peer passed no view (a standard gRPC client, an older
    /// client).
    pub fn get(&self) -> Option<&PeerView> {
        self.0.get()
    }
}

/// The same cell (the same connection), not the same contents.
impl PartialEq for ViewCell {
    fn eq(&self, other: &ViewCell) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ViewCell {}

impl std::fmt::Debug for ViewCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            None => f.write_str("no view"),
            Some(PeerView::Own) => f.write_str("the daemon's view"),
            Some(PeerView::View(view)) => write!(f, "{:?}", view.key),
            Some(PeerView::Refused(reason)) => write!(f, "refused view: {reason}"),
        }
    }
}

/// What a view's index is made with.
struct Parts {
    limits: Arc<LiveLimits>,
    quotas: Arc<Quotas>,
    refresh: RefreshConfig,
    genfile: Arc<GenFile>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Live {
    by_key: HashMap<ViewKey, Weak<View>>,
    /// Views by the inotify descriptor of their index (the epoll set's data).
    by_inotify: HashMap<RawFd, Weak<View>>,
    per_uid: HashMap<Option<u32>, u64>,
}

/// A view whose connection closed, kept for `view_linger_ms` from `since`.
struct Lingering {
    since: Instant,
    view: Arc<View>,
}

/// Every index: the host's and the live views'.
pub struct Views {
    host: Arc<Index>,
    host_key: Option<ViewKey>,
    epoll: OwnedFd,
    live: Mutex<Live>,
    lingering: Mutex<Vec<Lingering>>,
    parts: Parts,
}

/// Events taken from the epoll set at once.
const EPOLL_BATCH: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Views {
    pub fn new(
        host: Arc<Index>,
        limits: Arc<LiveLimits>,
        quotas: Arc<Quotas>,
        refresh: &RefreshConfig,
        genfile: Arc<GenFile>,
        stats: Arc<Stats>,
    ) -> io::Result<Views> {
        // SAFETY: no pointer arguments; the descriptor is owned right below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epoll` is fresh and owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        epoll_add(&epoll, host.inotify_fd())?;
        let host_key = Root::Host
            .open_directory(b"/", libc::O_PATH)
            .and_then(|root| ViewKey::of(&root))
            .ok();
        Ok(Views {
            host,
            host_key,
            epoll,
            live: Mutex::default(),
            lingering: Mutex::default(),
            parts: Parts {
                limits,
                quotas,
                refresh: refresh.clone(),
                genfile,
                stats,
            },
        })
    }

    /// The daemon's own index.
    pub fn host(&self) -> &Arc<Index> {
        &self.host
    }

    /// The descriptor the reader thread polls: readable when any index has
    /// events queued.
    pub fn poll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The view of the root directory `root` that a peer of `uid` passed.
    pub fn attach(self: &Arc<Self>, root: OwnedFd, uid: Option<u32>) -> PeerView {
        let key = match ViewKey::of(&root) {
            Ok(key) => key,
            Err(error) => {
                return PeerView::Refused(format!("the view passed at connect: {error}"));
            }
        };
        if Some(key) == self.host_key {
            return PeerView::Own;
        }
        let limit =
            (self.parts.limits.max_views_per_uid).load(std::sync::atomic::Ordering::Relaxed);
        let open = lock(&self.live).by_key.contains_key(&key);
        if !open && self.held_by(uid) >= limit {
            // Room first from this uid's views that no connection holds.
            self.release_lingering(|l| l.view.owner == uid);
        }
        let mut live = lock(&self.live);
        if let Some(view) = live.by_key.get(&key).and_then(Weak::upgrade) {
            return PeerView::View(view);
        }
        let held = live.per_uid.get(&uid).copied().unwrap_or(0);
        if held >= limit {
            tracing::info!(uid = ?uid, held, limit, "a view refused: max_views_per_uid");
            return PeerView::Refused(format!(
                "peer uid {} holds {held} views, the limit max_views_per_uid = {limit}",
                uid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string())
            ));
        }
        let parts = &self.parts;
        let index = Index::new(
            Root::View(Arc::new(root)),
            Arc::clone(&parts.limits),
            Arc::clone(&parts.quotas),
            &parts.refresh,
            Arc::clone(&parts.genfile),
            Arc::clone(&parts.stats),
        );
        let index = match index {
            Ok(index) => index,
            Err(error) => {
                tracing::warn!(%error, "cannot watch a view (fs.inotify.max_user_instances?)");
                return PeerView::Refused(format!("cannot watch the view: {error}"));
            }
        };
        let inotify = index.inotify_fd();
        if let Err(error) = epoll_add(&self.epoll, inotify) {
            return PeerView::Refused(format!("cannot watch the view: {error}"));
        }
        let view = Arc::new(View {
            key,
            owner: uid,
            index,
            views: Arc::downgrade(self),
        });
        live.by_key.insert(key, Arc::downgrade(&view));
        live.by_inotify.insert(inotify, Arc::downgrade(&view));
        *live.per_uid.entry(uid).or_default() += 1;
        tracing::debug!(key = ?key, uid = ?uid, "view opened");
        PeerView::View(view)
    }

    /// How many views `uid` holds.
    fn held_by(&self, uid: Option<u32>) -> u64 {
        lock(&self.live).per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// A connection in `view` closed: the view is kept for `view_linger_ms`
    /// from now (beyond its last connection).
    pub fn linger(&self, view: &Arc<View>) {
        let mut lingering = lock(&self.lingering);
        match lingering.iter_mut().find(|l| Arc::ptr_eq(&l.view, view)) {
            Some(kept) => kept.since = Instant::now(),
            None => lingering.push(Lingering {
                since: Instant::now(),
                view: Arc::clone(view),
            }),
        }
    }

    /// Lets go of the lingering views that `which` picks (a view still
    /// held by a connection stays until that one closes).
    fn release_lingering(&self, which: impl Fn(&Lingering) -> bool) {
        let released: Vec<Lingering> = {
            let mut lingering = lock(&self.lingering);
            let (gone, kept) = std::mem::take(&mut *lingering)
                .into_iter()
                .partition(|l| which(l));
            *lingering = kept;
            gone
        };
        // Dropped here, with no lock held: `View::drop` takes them.
        drop(released);
    }

    /// Lets go of the views that lingered `view_linger_ms` (the checker
    /// thread, at every tick: a reloaded value applies at once).
    pub fn expire(&self) {
        let linger = self.parts.limits.view_linger();
        self.release_lingering(|l| l.since.elapsed() >= linger);
    }

    /// Forgets a view being dropped (its last connection closed).
    fn forget(&self, view: &View) {
        let mut live = lock(&self.live);
        let ours = |weak: &Weak<View>| std::ptr::eq(weak.as_ptr(), view);
        if live.by_key.get(&view.key).is_some_and(ours) {
            live.by_key.remove(&view.key);
        }
        let inotify = view.index.inotify_fd();
        if live.by_inotify.get(&inotify).is_some_and(ours) {
            live.by_inotify.remove(&inotify);
            // SAFETY: a valid epoll descriptor and one it holds; a null
            // event is allowed for EPOLL_CTL_DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    inotify,
                    std::ptr::null_mut(),
                )
            };
        }
        if let Some(count) = live.per_uid.get_mut(&view.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.per_uid.remove(&view.owner);
            }
        }
    }

    /// Every live view (upgraded once the lock is released: dropping the
    /// last reference to a view takes it).
    pub fn live(&self) -> Vec<Arc<View>> {
        let weak: Vec<Weak<View>> = lock(&self.live).by_key.values().cloned().collect();
        weak.iter().filter_map(Weak::upgrade).collect()
    }

    /// How many views are open.
    pub fn count(&self) -> u64 {
        lock(&self.live).by_key.len() as u64
    }

    /// The views whose queues have events, and whether the host's has.
    fn ready(&self) -> (bool, Vec<Arc<View>>) {
        let mut host = false;
        let mut views = Vec::new();
        let empty = libc::epoll_event { events: 0, u64: 0 };
        let mut events = [empty; EPOLL_BATCH];
        // Bounded: at most this many batches per barrier (a full batch
        // means more may be ready).
        for _ in 0..64 {
            // SAFETY: a valid epoll descriptor and a buffer of
            // `EPOLL_BATCH` events; a zero timeout never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EPOLL_BATCH as libc::c_int,
                    0,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                break;
            };
            // Upgraded once the lock is released: dropping the last
            // reference to a view takes the lock (`View::drop`).
            let mut weak: Vec<Weak<View>> = Vec::new();
            {
                let live = lock(&self.live);
                for event in &events[..n] {
                    let fd = event.u64 as RawFd;
                    if fd == self.host.inotify_fd() {
                        host = true;
                    } else if let Some(view) = live.by_inotify.get(&fd) {
                        weak.push(view.clone());
                    }
                }
            }
            for view in weak.iter().filter_map(Weak::upgrade) {
                if !views.iter().any(|v: &Arc<View>| Arc::ptr_eq(v, &view)) {
                    views.push(view);
                }
            }
            if n < EPOLL_BATCH {
                break;
            }
        }
        (host, views)
    }

    /// Applies every change queued before now to `own` (waiting for its
    /// watcher) and to every other index with events, then publishes
    /// `dry_ns`. Returns how long it took.
    pub fn barrier(&self, own: &Index) -> Duration {
        let started = Instant::now();
        let before = monotonic_ns();
        let mut dry = own.drain();
        let (host, views) = self.ready();
        if host && !std::ptr::eq(own, &*self.host) {
            dry &= self.host.drain();
        }
        for view in views {
            if !std::ptr::eq(own, &view.index) {
                dry &= view.index.drain();
            }
        }
        if dry {
            self.parts.genfile.set_dry_ns(before);
        }
        started.elapsed()
    }

    /// [`barrier`](Self::barrier) when no index it needs is busy; `None`
    /// otherwise (the async thread never waits on a watcher).
    pub fn try_barrier(&self, own: &Index) -> Option<Duration> {
        let started = Instant::now();
        let before = monotonic_ns();
        let mut dry = own.try_drain()?;
        let (host, views) = self.ready();
        if host && !std::ptr::eq(own, &*self.host) {
            dry &= self.host.try_drain()?;
        }
        for view in views {
            if !std::ptr::eq(own, &view.index) {
                dry &= view.index.try_drain()?;
            }
        }
        if dry {
            self.parts.genfile.set_dry_ns(before);
        }
        Some(started.elapsed())
    }

    /// The reader thread's barrier: every index with events.
    pub fn barrier_all(&self) {
        self.barrier(&self.host);
    }

    /// Re-checks the polled directories of every index.
    pub fn recheck(&self) {
        self.host.recheck();
        for view in self.live() {
            view.index.recheck();
        }
    }

    /// The gauges of every index, summed.
    pub fn gauges(&self) -> Gauges {
        let mut total = self.host.gauges();
        for view in self.live() {
            let gauges = view.index.gauges();
            total.roots += gauges.roots;
            total.directories += gauges.directories;
            total.entries += gauges.entries;
            total.index_bytes += gauges.index_bytes;
            total.degraded_roots += gauges.degraded_roots;
            total.polled_roots += gauges.polled_roots;
        }
        total
    }
}

/// Adds `fd` to the epoll set, readable-level-triggered, its number as data.
fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: valid descriptors and a valid event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
