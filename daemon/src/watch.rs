//! The inotify descriptor: the masks, watch descriptors to what they mean,
//! reading the queue until it is dry, and turning events into [`Change`]s
//! for the index. Also the reader thread's wake-up logic ([`Heartbeat`]).
//!
//! A watch serves two purposes, and one inode may serve both (inotify gives
//! the same descriptor for the same inode reached through two paths):
//! - a *listing* watch on a directory the index lists: every name event
//!   updates that listing ([`Change::Entry`]);
//! - a *searched* watch on a directory some indexed path's resolution looked
//!   a name up in: a namespace event for `dir/name` makes every answer that
//!   depended on `dir/name` stale ([`Change::Location`]). This is what makes
//!   `mv venv venv.old` invalidate the tree below, and keeps ABSENT answers
//!   fresh through their nearest existing ancestor.
//! - a *contents* watch on a directory holding (or being) the target of a
//!   symlink entry of some listing: every name event in it, writes included,
//!   may change that entry's fingerprint ([`Change::Content`]; see
//!   `crate::targets`).
//!
//! The masks never contain `IN_OPEN`, `IN_ACCESS`, `IN_MODIFY` or
//! `IN_CLOSE_NOWRITE`: an import storm must produce zero events.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::LiveLimits;
use crate::genfile::{duration_ns, monotonic_ns};
use crate::policy::quota::Quotas;
use crate::refresh::{as_path, join};
use crate::stats::{bump, Stats};
use crate::walk::Root;

/// Events that change a directory's namespace or an entry's attributes.
fn namespace_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// A listed directory also needs `IN_CLOSE_WRITE`: a file's mtime and size
/// change when a writer closes it.
fn listing_mask() -> WatchMask {
    namespace_mask() | WatchMask::CLOSE_WRITE
}

/// Event bits that mean "the name now refers to something else".
fn namespace_events() -> EventMask {
    EventMask::CREATE
        | EventMask::DELETE
        | EventMask::MOVED_FROM
        | EventMask::MOVED_TO
        | EventMask::ATTRIB
}

/// Events after which a watch no longer describes its paths.
fn gone_events() -> EventMask {
    EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED | EventMask::UNMOUNT
}

/// What an event means for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `name` in the listed directory `key` was created, removed, renamed,
    /// changed attributes or was closed after writing.
    Entry { key: Bytes, name: Bytes },
    /// Answers that looked up this `dir/name` (a real path) are stale.
    Location { path: Vec<u8> },
    /// `dir/name` in a contents-watched directory was created, removed,
    /// renamed, changed attributes or was closed after writing: symlink
    /// entries resolving to it (or into `dir`) need a new `stat()`.
    Content { path: Vec<u8> },
    /// A watched directory itself changed (attributes) or its watch is gone
    /// (deleted, moved, unmounted): the listings `keys` and every answer that
    /// searched one of `dirs` (or whose symlink entries resolve through one)
    /// are stale.
    Stale { keys: Vec<Bytes>, dirs: Vec<Bytes> },
    /// The kernel dropped events: everything is stale.
    Overflow,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch limit reached")]
    Limit,
    #[error("this uid's share of the watches is used (limit max_watches_per_uid)")]
    UidLimit,
    #[error("directory vanished")]
    Vanished,
    #[error("cannot watch: {0}")]
    Io(io::Error),
}

#[derive(Default)]
struct Targets {
    listings: HashSet<Bytes>,
    searched: HashSet<Bytes>,
    contents: HashSet<Bytes>,
}

impl Targets {
    fn is_empty(&self) -> bool {
        self.listings.is_empty() && self.searched.is_empty() && self.contents.is_empty()
    }
}

/// One inotify watch: its descriptor, what it stands for, and the uid whose
/// crawl took it (charged for it until it goes).
struct Watch {
    descriptor: WatchDescriptor,
    targets: Targets,
    owner: Option<u32>,
}

/// Owns the inotify descriptor and what each watch stands for. Lives behind
/// the index's barrier mutex. Paths are real paths beneath `root`: in a
/// peer's view (`crate::views`) each watch is added on the directory opened
/// beneath the view's root, through its `/proc/self/fd` link, since the
/// daemon's own paths name other files.
pub struct Watcher {
    root: Root,
    inotify: Inotify,
    by_wd: HashMap<i32, Watch>,
    /// Per listing key: its watch and the real path it was taken on.
    wd_of_listing: HashMap<Bytes, (i32, Bytes)>,
    wd_of_searched: HashMap<Bytes, i32>,
    wd_of_contents: HashMap<Bytes, i32>,
    limits: Arc<LiveLimits>,
    quotas: Arc<Quotas>,
    /// The kernel's `fs.inotify.max_user_watches` at start.
    kernel_max: u64,
    buffer: Vec<u8>,
    stats: Arc<Stats>,
}

impl Watcher {
    pub fn new(
        root: Root,
        limits: Arc<LiveLimits>,
        quotas: Arc<Quotas>,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        Ok(Self {
            root,
            inotify: Inotify::init()?,
            by_wd: HashMap::new(),
            wd_of_listing: HashMap::new(),
            wd_of_searched: HashMap::new(),
            wd_of_contents: HashMap::new(),
            limits,
            quotas,
            kernel_max: kernel_max_watches(),
            buffer: vec![0; 64 * 1024],
            stats,
        })
    }

    /// The watches this daemon may hold: `max_watches`, else the kernel's.
    fn daemon_max(&self) -> u64 {
        self.limits
            .max_watches()
            .map_or(self.kernel_max, |max| max as u64)
    }

    /// The descriptor the reader thread polls.
    pub fn raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Watches a directory for namespace events on behalf of resolutions
    /// that search it (a crawl for `owner`). Cheap when it is already
    /// watched.
    pub fn watch_searched(&mut self, dir: &[u8], owner: Option<u32>) -> Result<(), WatchError> {
        if self.wd_of_searched.contains_key(dir) {
            return Ok(());
        }
        let dir = Bytes::copy_from_slice(dir);
        let wd = self.add(&dir, namespace_mask(), owner)?;
        if let Some(targets) = self.targets_mut(wd) {
            targets.searched.insert(dir.clone());
        }
        self.wd_of_searched.insert(dir, wd);
        Ok(())
    }

    /// Watches a directory for every name event, writes included, on behalf
    /// of symlink entries that resolve to a file in it (or to it).
    pub fn watch_contents(&mut self, dir: &[u8], owner: Option<u32>) -> Result<(), WatchError> {
        if self.wd_of_contents.contains_key(dir) {
            return Ok(());
        }
        let dir = Bytes::copy_from_slice(dir);
        let wd = self.add(&dir, listing_mask(), owner)?;
        if let Some(targets) = self.targets_mut(wd) {
            targets.contents.insert(dir.clone());
        }
        self.wd_of_contents.insert(dir, wd);
        Ok(())
    }

    pub fn unwatch_contents(&mut self, dir: &[u8]) {
        if let Some(wd) = self.wd_of_contents.remove(dir) {
            if let Some(targets) = self.targets_mut(wd) {
                targets.contents.remove(dir);
            }
            self.remove_if_unused(wd);
        }
    }

    /// Watches the directory at `real` for every change to the listing `key`.
    /// A key that now resolves elsewhere (a retargeted symlink) moves its
    /// watch.
    pub fn watch_listing(
        &mut self,
        key: &Bytes,
        real: &[u8],
        owner: Option<u32>,
    ) -> Result<(), WatchError> {
        match self.wd_of_listing.get(key) {
            Some((_, watched)) if watched.as_ref() == real => return Ok(()),
            Some(_) => self.unwatch_listing(key),
            None => {}
        }
        let wd = self.add(real, listing_mask(), owner)?;
        if let Some(targets) = self.targets_mut(wd) {
            targets.listings.insert(key.clone());
        }
        self.wd_of_listing
            .insert(key.clone(), (wd, Bytes::copy_from_slice(real)));
        Ok(())
    }

    pub fn unwatch_listing(&mut self, key: &[u8]) {
        if let Some((wd, _)) = self.wd_of_listing.remove(key) {
            if let Some(targets) = self.targets_mut(wd) {
                targets.listings.remove(key);
            }
            self.remove_if_unused(wd);
        }
    }

    pub fn unwatch_searched(&mut self, dir: &[u8]) {
        if let Some(wd) = self.wd_of_searched.remove(dir) {
            if let Some(targets) = self.targets_mut(wd) {
                targets.searched.remove(dir);
            }
            self.remove_if_unused(wd);
        }
    }

    fn add(&mut self, path: &[u8], mask: WatchMask, owner: Option<u32>) -> Result<i32, WatchError> {
        // MASK_ADD: one inode may be both searched and listed; never narrow
        // a mask another target needs.
        let added = match &self.root {
            Root::Host => self
                .inotify
                .watches()
                .add(as_path(path), mask | WatchMask::MASK_ADD),
            Root::View(_) => {
                let dir = match self.root.open_directory(path, libc::O_PATH) {
                    Ok(dir) => dir,
                    Err(error) => return Err(classify_add_error(error)),
                };
                let link = format!("/proc/self/fd/{}", dir.as_raw_fd());
                self.inotify
                    .watches()
                    .add(&link, mask | WatchMask::MASK_ADD)
            }
        };
        let wd = match added {
            Ok(wd) => wd,
            Err(error) => return Err(classify_add_error(error)),
        };
        let id = wd.get_watch_descriptor_id();
        if !self.by_wd.contains_key(&id) {
            if self.stats.watches.load(Ordering::Relaxed) >= self.daemon_max() {
                // Undo: this daemon's own limit is reached.
                let _ = self.inotify.watches().remove(wd);
                return Err(WatchError::Limit);
            }
            if !self.quotas.try_watch(owner, self.daemon_max()) {
                let _ = self.inotify.watches().remove(wd);
                return Err(WatchError::UidLimit);
            }
            let watch = Watch {
                descriptor: wd,
                targets: Targets::default(),
                owner,
            };
            self.by_wd.insert(id, watch);
            self.stats.watches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(id)
    }

    fn targets_mut(&mut self, wd: i32) -> Option<&mut Targets> {
        self.by_wd.get_mut(&wd).map(|watch| &mut watch.targets)
    }

    fn remove_if_unused(&mut self, wd: i32) {
        if self
            .by_wd
            .get(&wd)
            .is_some_and(|watch| watch.targets.is_empty())
        {
            if let Some(watch) = self.by_wd.remove(&wd) {
                // Fails only when the kernel already dropped the watch.
                let _ = self.inotify.watches().remove(watch.descriptor);
                self.quotas.unwatch(watch.owner);
                self.stats.watches.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets a watch the kernel dropped or that no longer means its paths.
    fn forget(&mut self, wd: i32) -> Option<Targets> {
        let Watch {
            descriptor,
            targets,
            owner,
        } = self.by_wd.remove(&wd)?;
        self.quotas.unwatch(owner);
        for key in &targets.listings {
            self.wd_of_listing.remove(key);
        }
        for dir in &targets.searched {
            self.wd_of_searched.remove(dir);
        }
        for dir in &targets.contents {
            self.wd_of_contents.remove(dir);
        }
        // After IN_MOVE_SELF the watch lives on at the new place; drop it.
        let _ = self.inotify.watches().remove(descriptor);
        self.stats.watches.fetch_sub(1, Ordering::Relaxed);
        Some(targets)
    }

    /// Whether events wait in the queue (`FIONREAD`); an error says yes.
    pub fn events_queued(&self) -> bool {
        let mut bytes: libc::c_int = 0;
        // SAFETY: FIONREAD on an inotify descriptor writes one int.
        let rc = unsafe { libc::ioctl(self.raw_fd(), libc::FIONREAD, &mut bytes) };
        rc != 0 || bytes > 0
    }

    /// Reads once from the queue. `Ok(None)`: the queue is dry.
    pub fn read(&mut self) -> io::Result<Option<Vec<Change>>> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = self.read_into(&mut buffer);
        self.buffer = buffer;
        result
    }

    fn read_into(&mut self, buffer: &mut [u8]) -> io::Result<Option<Vec<Change>>> {
        let events = match self.inotify.read_events(buffer) {
            Ok(events) => events,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut changes = Vec::new();
        for event in events {
            bump(&self.stats.inotify_events);
            self.translate(
                event.wd.get_watch_descriptor_id(),
                event.mask,
                event.name,
                &mut changes,
            );
        }
        Ok(Some(changes))
    }

    fn translate(&mut self, wd: i32, mask: EventMask, name: Option<&OsStr>, out: &mut Vec<Change>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            bump(&self.stats.overflows);
            out.push(Change::Overflow);
            return;
        }
        if mask.intersects(gone_events()) {
            if let Some(targets) = self.forget(wd) {
                out.push(stale(&targets));
            }
            return;
        }
        let Some(Watch { targets, .. }) = self.by_wd.get(&wd) else {
            return; // a watch already removed; its last events still arrive
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            let dirs: Vec<_> = (targets.listings.iter().chain(targets.searched.iter()))
                .map(|dir| String::from_utf8_lossy(dir).into_owned())
                .collect();
            tracing::trace!(?mask, ?name, ?dirs, "inotify event");
        }
        match name {
            Some(name) => {
                let name = Bytes::copy_from_slice(name.as_encoded_bytes());
                for key in &targets.listings {
                    out.push(Change::Entry {
                        key: key.clone(),
                        name: name.clone(),
                    });
                }
                if mask.intersects(namespace_events()) {
                    for dir in &targets.searched {
                        out.push(Change::Location {
                            path: join(dir, &name),
                        });
                    }
                }
                for dir in &targets.contents {
                    out.push(Change::Content {
                        path: join(dir, &name),
                    });
                }
            }
            // The directory's own attributes (mode, owner, ACL) changed.
            None if mask.contains(EventMask::ATTRIB) => out.push(stale(targets)),
            None => {}
        }
    }
}

/// The daemon's watch count (`Stats::watches`, shared by every view's
/// watcher) and each owner's share lose what a dropped watcher held.
impl Drop for Watcher {
    fn drop(&mut self) {
        for (_, watch) in self.by_wd.drain() {
            self.quotas.unwatch(watch.owner);
            self.stats.watches.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn stale(targets: &Targets) -> Change {
    Change::Stale {
        keys: targets.listings.iter().cloned().collect(),
        dirs: (targets.searched.iter())
            .chain(targets.contents.iter())
            .cloned()
            .collect(),
    }
}

/// `fs.inotify.max_user_watches` (a generous guess when unreadable).
fn kernel_max_watches() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(8192)
}

fn classify_add_error(error: io::Error) -> WatchError {
    match error.raw_os_error() {
        Some(libc::ENOSPC) => WatchError::Limit,
        Some(libc::ENOENT | libc::ENOTDIR) => WatchError::Vanished,
        _ => WatchError::Io(error),
    }
}

/// When the reader thread wakes: on inotify readiness always; every
/// `lease/4` while a client asked within the active window (to keep
/// `dry_ns` fresh); never on a timer while idle.
pub struct Heartbeat {
    wake: OwnedFd,
    last_request_ns: AtomicU64,
    sleeping_idle: AtomicBool,
    stopping: AtomicBool,
    tick: Duration,
    /// `active_window_secs`, which SIGHUP may change.
    limits: Arc<LiveLimits>,
}

/// Why the reader woke.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Read the queue (events, or the heartbeat tick).
    Barrier,
    Stop,
}

impl Heartbeat {
    pub fn new(lease: Duration, limits: Arc<LiveLimits>) -> io::Result<Self> {
        // SAFETY: plain eventfd creation; the descriptor is owned right below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is fresh and owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            last_request_ns: AtomicU64::new(0),
            sleeping_idle: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            tick: (lease / 4).max(Duration::from_millis(1)),
            limits,
        })
    }

    /// A request arrived: the daemon is active; wake an idle reader.
    pub fn note_request(&self) {
        self.last_request_ns.store(monotonic_ns(), Ordering::SeqCst);
        if self.sleeping_idle.load(Ordering::SeqCst) {
            self.signal();
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal();
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full
        // counter (EAGAIN) still leaves the reader woken.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether a client asked within the active window.
    pub fn is_active(&self) -> bool {
        let last = self.last_request_ns.load(Ordering::SeqCst);
        let window = duration_ns(self.limits.active_window());
        last != 0 && monotonic_ns().saturating_sub(last) < window
    }

    /// Blocks until the reader should run a barrier, or stop.
    pub fn wait(&self, inotify_fd: RawFd) -> Wake {
        // Announce idleness before the last activity check, so a request
        // that arrives in between either is seen here or sends a wake-up.
        self.sleeping_idle.store(true, Ordering::SeqCst);
        let timeout_ms = if self.is_active() {
            self.sleeping_idle.store(false, Ordering::SeqCst);
            i32::try_from(self.tick.as_millis()).unwrap_or(i32::MAX)
        } else {
            -1
        };
        let mut fds = [
            libc::pollfd {
                fd: inotify_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd structures. EINTR is just an early wake.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        self.sleeping_idle.store(false, Ordering::SeqCst);
        if fds[1].revents != 0 {
            self.drain_wake();
        }
        if self.stopping.load(Ordering::SeqCst) {
            Wake::Stop
        } else {
            Wake::Barrier
        }
    }

    fn drain_wake(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_never_ask_for_reads() {
        let forbidden =
            WatchMask::OPEN | WatchMask::ACCESS | WatchMask::MODIFY | WatchMask::CLOSE_NOWRITE;
        assert!(!listing_mask().intersects(forbidden));
        assert!(!namespace_mask().intersects(forbidden));
        assert!(listing_mask().contains(WatchMask::CLOSE_WRITE | WatchMask::ONLYDIR));
    }

    fn test_limits(max_watches: Option<usize>) -> Arc<LiveLimits> {
        let mut config = crate::config::Config::resolve(Default::default()).expect("defaults");
        config.values.max_watches = max_watches;
        Arc::new(LiveLimits::new(&config))
    }

    fn drain(watcher: &mut Watcher) -> Vec<Change> {
        let mut all = Vec::new();
        while let Some(changes) = watcher.read().expect("read") {
            all.extend(changes);
        }
        all
    }

    #[test]
    fn events_become_changes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().as_os_str().as_encoded_bytes().to_vec();
        let mut watcher = Watcher::new(
            Root::Host,
            test_limits(None),
            Arc::default(),
            Arc::default(),
        )
        .expect("inotify");
        let key = Bytes::from_static(b"/some/key");
        watcher.watch_listing(&key, &dir, Some(0)).expect("watch");
        watcher.watch_searched(&dir, Some(0)).expect("watch");
        assert_eq!(watcher.by_wd.len(), 1, "one inode, one descriptor");
        std::fs::write(tmp.path().join("new.py"), b"").expect("write");
        let _ = std::fs::read(tmp.path().join("new.py")).expect("read");
        let changes = drain(&mut watcher);
        assert!(changes.contains(&Change::Entry {
            key: key.clone(),
            name: Bytes::from_static(b"new.py")
        }));
        assert!(changes.contains(&Change::Location {
            path: join(&dir, b"new.py")
        }));
        watcher.unwatch_listing(&key);
        watcher.unwatch_searched(&dir);
        assert_eq!(watcher.by_wd.len(), 0);
    }

    #[test]
    fn own_watch_limit_is_enforced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("a")).expect("mkdir");
        let mut watcher = Watcher::new(
            Root::Host,
            test_limits(Some(1)),
            Arc::default(),
            Arc::default(),
        )
        .expect("inotify");
        let root = tmp.path().as_os_str().as_encoded_bytes().to_vec();
        watcher.watch_searched(&root, Some(0)).expect("first fits");
        let second = watcher.watch_searched(&join(&root, b"a"), Some(0));
        assert!(matches!(second, Err(WatchError::Limit)));
    }

    #[test]
    fn one_uid_gets_its_share_of_the_watches_and_the_others_theirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().as_os_str().as_encoded_bytes().to_vec();
        let dirs: Vec<Vec<u8>> = (0..12)
            .map(|i| join(&root, format!("d{i}").as_bytes()))
            .collect();
        for dir in &dirs {
            std::fs::create_dir(as_path(dir)).expect("mkdir");
        }
        let quotas: Arc<Quotas> = Arc::default();
        let mut watcher = Watcher::new(
            Root::Host,
            test_limits(Some(8)),
            Arc::clone(&quotas),
            Arc::default(),
        )
        .expect("inotify");
        let hostile: Vec<_> = (dirs[..4].iter())
            .map(|dir| watcher.watch_searched(dir, Some(1000)))
            .collect();
        assert!(hostile[..2].iter().all(Result::is_ok), "a quarter of 8");
        assert!(hostile[2..]
            .iter()
            .all(|r| matches!(r, Err(WatchError::UidLimit))));
        for dir in &dirs[4..6] {
            watcher
                .watch_searched(dir, Some(2000))
                .expect("the victim's share");
        }
        assert_eq!(quotas.of(Some(1000)).watches, 2);
        watcher.unwatch_searched(&dirs[0]);
        assert_eq!(
            quotas.of(Some(1000)).watches,
            1,
            "refunded when the watch goes"
        );
    }
}
