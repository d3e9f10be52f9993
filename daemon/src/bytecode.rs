//! Compiled files (`.pyc`) served from memory on slow filesystems.
//!
//! A learned plan names the compiled files its runs read under slow
//! filesystems; a Snapshot with that plan carries their bytes
//! (`CachedFile`), so a warm start opens no file for them.
//!
//! Bytes are kept per *identity*: the device, inode, ctime, mtime and size
//! of the file as the current listing of its `__pycache__` names it (from
//! the index, under the request's barrier). A rewritten, replaced,
//! re-permissioned (ctime) or swapped file has another identity, so its old
//! bytes are never served for it; two names of one inode share them.
//!
//! A file is read beneath the descriptor of the directory its listing was
//! read from (checked to be that very inode), with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` and
//! `O_NOFOLLOW`: no symlink anywhere, no path resolved by name with the
//! daemon's privileges. The bytes are kept only when `fstat` of the
//! descriptor read shows a regular file of exactly the wanted identity,
//! before and after the read, together with the file's own facts (owner,
//! mode, ACL). Who may have them is the gate's decision
//! (`crate::policy::gate::may_read`), made when answering.
//!
//! Files are read through io_uring, every file of a batch in flight at once
//! (on FUSE or NFS each operation is a round trip; many in flight win), or
//! with plain system calls where io_uring is unavailable or
//! `refresh_engine = sync`.
//!
//! Memory is bounded by `max_cached_bytes`: past it the least recently
//! served files are evicted down to 90%.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};

use crate::openat2::{openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};
use crate::policy::Facts;
use crate::walk::{self, Root};

/// Files per io_uring submission.
const RING_ENTRIES: u32 = 64;
/// Bookkeeping counted per cached file besides its bytes.
const ENTRY_OVERHEAD: u64 = 128;
const OPEN_FLAGS: i32 =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
const RESOLVE: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/// Whether `name` in the directory `dir` is a file this daemon ever serves:
/// `__pycache__/*.pyc`, nothing else.
pub fn is_compiled_file(dir: &[u8], name: &[u8]) -> bool {
    let in_pycache = dir
        .rsplit(|&b| b == b'/')
        .next()
        .is_some_and(|last| last == b"__pycache__");
    in_pycache && name.ends_with(b".pyc") && name.len() > 4 && !name.contains(&b'/')
}

/// Which version of which inode: the key of the kept bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i64,
    pub mtime_ns: i64,
    pub size: u64,
}

impl Identity {
    fn of_statx(stx: &libc::statx) -> Identity {
        let ns = |t: &libc::statx_timestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        Identity {
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
            ctime_ns: ns(&stx.stx_ctime),
            mtime_ns: ns(&stx.stx_mtime),
            size: stx.stx_size,
        }
    }
}

/// A compiled file wanted at one identity: `name` in the directory whose
/// listing named it (`dir`, its real path beneath `root`, and `dir_id`, the
/// device and inode that listing was read from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub root: Root,
    pub dir: Bytes,
    pub dir_id: (u64, u64),
    pub name: Bytes,
    pub identity: Identity,
}

/// What the cache holds for an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Its bytes, and the facts of the inode they were read from.
    Hit { data: Bytes, facts: Facts },
    /// It could not be read at this identity (too large, not a regular
    /// file, unreadable by the daemon): not tried again until it changes.
    Unreadable,
    /// Not read yet.
    Missing,
}

#[derive(Debug, Clone)]
enum Content {
    Bytes { data: Bytes, facts: Facts },
    Unreadable,
}

#[derive(Debug)]
struct Cached {
    content: Content,
    last_used: u64,
}

impl Cached {
    fn cost(&self) -> u64 {
        let data = match &self.content {
            Content::Bytes { data, .. } => data.len() as u64,
            Content::Unreadable => 0,
        };
        data + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Cache {
    files: HashMap<Identity, Cached>,
    bytes: u64,
    clock: u64,
}

/// Counters for the Stats RPC.
#[derive(Debug, Default)]
pub struct FileCounters {
    pub read_uring: AtomicU64,
    pub read_sync: AtomicU64,
    /// Reads whose file was not the wanted identity (changed, vanished,
    /// swapped): nothing kept.
    pub read_changed: AtomicU64,
    pub unreadable: AtomicU64,
    pub evictions: AtomicU64,
    pub served: AtomicU64,
    pub served_bytes: AtomicU64,
}

/// The compiled-file cache.
pub struct CompiledFiles {
    cache: Mutex<Cache>,
    max_bytes: u64,
    /// Larger files are not read (they could never fit a Snapshot).
    max_file_bytes: u64,
    reader: Reader,
    pub counters: FileCounters,
}

impl CompiledFiles {
    /// `use_uring`: false when the configured refresh engine is `sync`.
    pub fn new(max_bytes: u64, max_file_bytes: u64, use_uring: bool) -> Self {
        Self {
            cache: Mutex::new(Cache::default()),
            max_bytes,
            max_file_bytes: max_file_bytes.min(max_bytes),
            reader: Reader::new(use_uring),
            counters: FileCounters::default(),
        }
    }

    /// Whether compiled files are served at all (`max_cached_bytes` > 0).
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the cache holds for `identity`; a hit counts as a use (LRU).
    pub fn lookup(&self, identity: &Identity) -> Lookup {
        let mut cache = self.cache();
        cache.clock += 1;
        let now = cache.clock;
        let Some(cached) = cache.files.get_mut(identity) else {
            return Lookup::Missing;
        };
        cached.last_used = now;
        match &cached.content {
            Content::Bytes { data, facts } => Lookup::Hit {
                data: data.clone(),
                facts: *facts,
            },
            Content::Unreadable => Lookup::Unreadable,
        }
    }

    /// Reads the files of `wanted` that the cache does not hold at their
    /// identity, and keeps what matches.
    pub fn fill(&self, wanted: &[Wanted]) {
        if !self.enabled() {
            return;
        }
        let missing: Vec<&Wanted> = {
            let cache = self.cache();
            wanted
                .iter()
                .filter(|w| !cache.files.contains_key(&w.identity))
                .collect()
        };
        let (refused, readable): (Vec<&Wanted>, Vec<&Wanted>) =
            missing.into_iter().partition(|w| {
                w.identity.size > self.max_file_bytes || !is_compiled_file(&w.dir, &w.name)
            });
        for wanted in refused {
            self.keep(wanted.identity, Content::Unreadable);
        }
        let (results, used_uring) = self.reader.read_all(&readable);
        let counter = if used_uring {
            &self.counters.read_uring
        } else {
            &self.counters.read_sync
        };
        counter.fetch_add(readable.len() as u64, Ordering::Relaxed);
        for (wanted, result) in readable.into_iter().zip(results) {
            match result {
                ReadResult::Read { data, facts } => {
                    self.keep(wanted.identity, Content::Bytes { data, facts })
                }
                ReadResult::Unreadable => {
                    self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    self.keep(wanted.identity, Content::Unreadable);
                }
                ReadResult::Changed => {
                    self.counters.read_changed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn keep(&self, identity: Identity, content: Content) {
        let mut cache = self.cache();
        cache.clock += 1;
        let cached = Cached {
            content,
            last_used: cache.clock,
        };
        let cost = cached.cost();
        if cost > self.max_bytes {
            return;
        }
        if let Some(old) = cache.files.insert(identity, cached) {
            cache.bytes -= old.cost();
        }
        cache.bytes += cost;
        if cache.bytes > self.max_bytes {
            let evicted = evict(&mut cache, self.max_bytes / 10 * 9);
            self.counters
                .evictions
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Files and bytes held (bytes of file contents only).
    pub fn gauges(&self) -> (u64, u64) {
        let cache = self.cache();
        let data: u64 = cache
            .files
            .values()
            .map(|c| match &c.content {
                Content::Bytes { data, .. } => data.len() as u64,
                Content::Unreadable => 0,
            })
            .sum();
        (cache.files.len() as u64, data)
    }

    /// One served file, for stats.
    pub fn count_served(&self, bytes: usize) {
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        self.counters
            .served_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Evicts least recently used files until at most `target` bytes remain.
fn evict(cache: &mut Cache, target: u64) -> u64 {
    let mut order: Vec<(u64, Identity)> = cache
        .files
        .iter()
        .map(|(identity, c)| (c.last_used, *identity))
        .collect();
    order.sort_unstable_by_key(|(used, _)| *used);
    let mut evicted = 0;
    for (_, identity) in order {
        if cache.bytes <= target {
            break;
        }
        if let Some(old) = cache.files.remove(&identity) {
            cache.bytes -= old.cost();
            evicted += 1;
        }
    }
    evicted
}

/// What reading one file gave.
#[derive(Debug, PartialEq, Eq)]
enum ReadResult {
    Read {
        data: Bytes,
        facts: Facts,
    },
    /// Not a file this daemon serves at this identity (not regular, too
    /// large, refused to the daemon): remembered, not tried again.
    Unreadable,
    /// Not the wanted identity (changed, vanished, swapped, its directory
    /// gone): keep nothing.
    Changed,
}

/// The directories of a batch, opened once each and checked to be the
/// inodes their listings were read from.
struct Directories {
    opened: HashMap<(usize, Bytes), Option<OwnedFd>>,
}

impl Directories {
    fn open(wanted: &[&Wanted]) -> Directories {
        let mut opened = HashMap::new();
        for w in wanted {
            opened
                .entry((w.root.id(), w.dir.clone()))
                .or_insert_with(|| open_checked(&w.root, &w.dir, w.dir_id));
        }
        Directories { opened }
    }

    fn fd(&self, wanted: &Wanted) -> Option<RawFd> {
        self.opened
            .get(&(wanted.root.id(), wanted.dir.clone()))
            .and_then(|fd| fd.as_ref().map(AsRawFd::as_raw_fd))
    }
}

/// The directory at the real path `dir` beneath `root` (no symlink
/// followed), when it is still the inode `id`.
fn open_checked(root: &Root, dir: &[u8], id: (u64, u64)) -> Option<OwnedFd> {
    let fd = root.open_directory(dir, libc::O_PATH).ok()?;
    let st = walk::fstat(&fd).ok()?;
    ((st.st_dev, st.st_ino) == id).then_some(fd)
}

/// Reads files through io_uring when it can, else with system calls.
struct Reader {
    ring: Mutex<Option<Ring>>,
}

struct Ring {
    ring: IoUring,
    xattr: bool,
}

impl Reader {
    fn new(use_uring: bool) -> Self {
        let ring = if use_uring {
            match Ring::new() {
                Ok(ring) => Some(ring),
                Err(error) => {
                    tracing::info!(%error, "compiled files are read with system calls");
                    None
                }
            }
        } else {
            None
        };
        Self {
            ring: Mutex::new(ring),
        }
    }

    /// One result per file, in order; whether io_uring was used.
    fn read_all(&self, wanted: &[&Wanted]) -> (Vec<ReadResult>, bool) {
        if wanted.is_empty() {
            return (Vec::new(), false);
        }
        let dirs = Directories::open(wanted);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(uring) = ring.as_mut() {
            let mut results = Vec::with_capacity(wanted.len());
            let mut failed = None;
            for chunk in wanted.chunks(RING_ENTRIES as usize) {
                match uring.read_batch(chunk, &dirs) {
                    Ok(batch) => results.extend(batch),
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            match failed {
                None => return (results, true),
                Some(error) => {
                    // Requests may still be in flight into leaked buffers:
                    // the ring is never used again.
                    tracing::warn!(%error, "io_uring failed reading compiled files; using system calls from now on");
                    if let Some(broken) = ring.take() {
                        std::mem::forget(broken);
                    }
                }
            }
        }
        drop(ring);
        let results = wanted
            .iter()
            .map(|w| match dirs.fd(w) {
                Some(dir) => read_sync(dir, w),
                None => ReadResult::Changed,
            })
            .collect();
        (results, false)
    }
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            opcode::OpenAt2::CODE,
            opcode::Read::CODE,
            opcode::Statx::CODE,
            opcode::Close::CODE,
        ];
        if !needed.iter().all(|&code| probe.is_supported(code)) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let xattr = probe.is_supported(opcode::FGetXattr::CODE);
        Ok(Ring { ring, xattr })
    }

    /// Runs one request per file (`None`: no request for that file);
    /// results in order, `-EBADF` where no request was made.
    fn run(&mut self, requests: Vec<Option<squeue::Entry>>) -> io::Result<Vec<i32>> {
        let (at, entries): (Vec<usize>, Vec<squeue::Entry>) = requests
            .into_iter()
            .enumerate()
            .filter_map(|(at, entry)| Some((at, entry?)))
            .unzip();
        let done = crate::uring::submit_all(&mut self.ring, &entries)?;
        let mut results = vec![-libc::EBADF; at.iter().max().map_or(0, |m| m + 1)];
        for (at, result) in at.into_iter().zip(done) {
            results[at] = result;
        }
        Ok(results)
    }

    /// open, statx, read (only files of the wanted identity), statx again
    /// (and the ACL probe), close: each phase in flight for the whole batch.
    fn read_batch(
        &mut self,
        wanted: &[&Wanted],
        dirs: &Directories,
    ) -> io::Result<Vec<ReadResult>> {
        let names: Vec<Option<CString>> = wanted
            .iter()
            .map(|w| CString::new(w.name.as_ref()).ok())
            .collect();
        let how = Box::new(
            types::OpenHow::new()
                .flags(OPEN_FLAGS as u64)
                .resolve(RESOLVE),
        );
        let opens = wanted
            .iter()
            .zip(&names)
            .map(|(w, name)| {
                let (dir, name) = (dirs.fd(w)?, name.as_ref()?);
                Some(opcode::OpenAt2::new(types::Fd(dir), name.as_ptr(), &*how).build())
            })
            .collect();
        let opened = match self.run(opens) {
            Ok(opened) => pad(opened, wanted.len()),
            Err(error) => {
                // Opens may still be reading them.
                std::mem::forget((names, how));
                return Err(error);
            }
        };
        let fds: Vec<Option<RawFd>> = opened.iter().map(|&r| (r >= 0).then_some(r)).collect();
        let (before, buffers, read, after, acls) = match self.read_open(wanted, &fds) {
            Ok(done) => done,
            Err(error) => {
                close_all(&fds);
                return Err(error);
            }
        };
        let closes = fds
            .iter()
            .map(|fd| Some(opcode::Close::new(types::Fd((*fd)?)).build()))
            .collect();
        if let Err(error) = self.run(closes) {
            close_all(&fds);
            return Err(error);
        }
        Ok(wanted
            .iter()
            .enumerate()
            .zip(buffers)
            .map(|((at, w), buffer)| {
                if opened[at] < 0 {
                    return open_failed(-opened[at]);
                }
                let (Some(before), Some(after)) = (&before[at], &after[at]) else {
                    return ReadResult::Changed;
                };
                checked(w, before, buffer, read[at], after, acls[at])
            })
            .collect())
    }

    /// The middle phases of [`read_batch`](Self::read_batch) on the open
    /// files: their stats before, buffers, read results, stats after, ACLs.
    #[allow(clippy::type_complexity)]
    fn read_open(
        &mut self,
        wanted: &[&Wanted],
        fds: &[Option<RawFd>],
    ) -> io::Result<(
        Vec<Option<libc::statx>>,
        Vec<Vec<u8>>,
        Vec<i32>,
        Vec<Option<libc::statx>>,
        Vec<bool>,
    )> {
        let before = self.stat_all(fds)?;
        let mut buffers: Vec<Vec<u8>> = wanted
            .iter()
            .map(|w| Vec::with_capacity(w.identity.size as usize + 1))
            .collect();
        // Only what is the wanted regular file is read.
        let readable: Vec<Option<RawFd>> = (0..wanted.len())
            .map(|at| {
                let stat = before[at].as_ref()?;
                is_wanted_file(wanted[at], stat).then_some(fds[at]?)
            })
            .collect();
        let reads = readable
            .iter()
            .zip(buffers.iter_mut())
            .map(|(fd, buffer)| {
                let len = u32::try_from(buffer.capacity()).unwrap_or(u32::MAX);
                Some(
                    opcode::Read::new(types::Fd((*fd)?), buffer.as_mut_ptr(), len)
                        .offset(0)
                        .build(),
                )
            })
            .collect();
        let read = match self.run(reads) {
            Ok(read) => pad(read, wanted.len()),
            Err(error) => {
                // Reads may still be writing into them.
                std::mem::forget(buffers);
                return Err(error);
            }
        };
        for (buffer, &n) in buffers.iter_mut().zip(&read) {
            if n >= 0 {
                // SAFETY: the kernel wrote `n` bytes (at most the capacity
                // it was given) into the buffer.
                unsafe { buffer.set_len((n as usize).min(buffer.capacity())) };
            }
        }
        let after = self.stat_all(fds)?;
        let acls = self.acls(fds)?;
        Ok((before, buffers, read, after, acls))
    }

    /// `statx` of every open file.
    fn stat_all(&mut self, fds: &[Option<RawFd>]) -> io::Result<Vec<Option<libc::statx>>> {
        let mut buffers: Vec<libc::statx> = (0..fds.len())
            // SAFETY: an all-zero statx is a valid value to be overwritten.
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let empty = c"";
        let requests = fds
            .iter()
            .zip(buffers.iter_mut())
            .map(|(fd, buffer)| {
                Some(
                    opcode::Statx::new(
                        types::Fd((*fd)?),
                        empty.as_ptr(),
                        (buffer as *mut libc::statx).cast::<types::statx>(),
                    )
                    .flags(libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT)
                    .mask(libc::STATX_BASIC_STATS)
                    .build(),
                )
            })
            .collect();
        let results = match self.run(requests) {
            Ok(results) => pad(results, fds.len()),
            Err(error) => {
                std::mem::forget(buffers);
                return Err(error);
            }
        };
        Ok(buffers
            .into_iter()
            .zip(results)
            .map(|(buffer, result)| (result >= 0).then_some(buffer))
            .collect())
    }

    /// Whether each open file carries a POSIX access ACL.
    fn acls(&mut self, fds: &[Option<RawFd>]) -> io::Result<Vec<bool>> {
        if !self.xattr {
            return Ok(fds.iter().map(|fd| fd.is_some_and(fd_has_acl)).collect());
        }
        let requests = fds
            .iter()
            .map(|fd| {
                Some(
                    opcode::FGetXattr::new(
                        types::Fd((*fd)?),
                        ACL_XATTR.as_ptr(),
                        std::ptr::null_mut(),
                        0,
                    )
                    .build(),
                )
            })
            .collect();
        let results = pad(self.run(requests)?, fds.len());
        Ok(results.into_iter().map(acl_present).collect())
    }
}

const ACL_XATTR: &std::ffi::CStr = c"system.posix_acl_access";

/// Closes descriptors with system calls (after the ring failed).
fn close_all(fds: &[Option<RawFd>]) {
    for fd in fds.iter().flatten() {
        // SAFETY: a descriptor this batch opened and nothing else owns.
        unsafe { libc::close(*fd) };
    }
}

/// `results` extended with `-EBADF` to `len` (the last files had no request).
fn pad(mut results: Vec<i32>, len: usize) -> Vec<i32> {
    results.resize(len.max(results.len()), -libc::EBADF);
    results
}

/// Whether an open file is the regular file of the wanted identity.
fn is_wanted_file(wanted: &Wanted, stat: &libc::statx) -> bool {
    u32::from(stat.stx_mode) & libc::S_IFMT == libc::S_IFREG
        && Identity::of_statx(stat) == wanted.identity
}

/// What a failed open means: gone or swapped (try again later), or a file
/// this daemon will not serve at this identity.
fn open_failed(errno: i32) -> ReadResult {
    match errno {
        libc::EACCES | libc::EPERM | libc::ENXIO | libc::ENODEV | libc::EFBIG => {
            ReadResult::Unreadable
        }
        // ELOOP (a symlink), EXDEV (escapes its directory), ENOENT...: not
        // the file the listing named; the event that changed it follows.
        _ => ReadResult::Changed,
    }
}

/// The bytes of one file, checked against the identity it was wanted at,
/// before the read (`before`) and after it (`after`).
fn checked(
    wanted: &Wanted,
    before: &libc::statx,
    data: Vec<u8>,
    read: i32,
    after: &libc::statx,
    acl: bool,
) -> ReadResult {
    if u32::from(before.stx_mode) & libc::S_IFMT != libc::S_IFREG {
        return ReadResult::Unreadable;
    }
    if !is_wanted_file(wanted, before) || !is_wanted_file(wanted, after) {
        return ReadResult::Changed;
    }
    if read < 0 {
        return match -read {
            libc::EISDIR | libc::EINVAL | libc::EACCES | libc::EPERM => ReadResult::Unreadable,
            _ => ReadResult::Changed,
        };
    }
    if data.len() as u64 != wanted.identity.size {
        // Short (some remote filesystems) or grown: not this version.
        return ReadResult::Changed;
    }
    let facts = Facts {
        dev: wanted.identity.dev,
        ino: wanted.identity.ino,
        mode: u32::from(after.stx_mode),
        uid: after.stx_uid,
        gid: after.stx_gid,
        has_acl: acl,
    };
    ReadResult::Read {
        data: Bytes::from(data),
        facts,
    }
}

/// The same as one file of [`Ring::read_batch`], with system calls.
fn read_sync(dir: RawFd, wanted: &Wanted) -> ReadResult {
    let Ok(name) = CString::new(wanted.name.as_ref()) else {
        return ReadResult::Changed;
    };
    let file = match openat2(dir, &name, OPEN_FLAGS, RESOLVE) {
        Ok(file) => file,
        Err(error) => return open_failed(error.raw_os_error().unwrap_or(libc::EIO)),
    };
    let Some(before) = statx_fd(&file) else {
        return ReadResult::Changed;
    };
    if !is_wanted_file(wanted, &before) {
        return checked(wanted, &before, Vec::new(), 0, &before, false);
    }
    let mut data = Vec::with_capacity(wanted.identity.size as usize + 1);
    let read = match read_to_limit(&file, &mut data, wanted.identity.size as usize + 1) {
        Ok(()) => 0,
        Err(error) => -error.raw_os_error().unwrap_or(libc::EIO),
    };
    let Some(after) = statx_fd(&file) else {
        return ReadResult::Changed;
    };
    checked(
        wanted,
        &before,
        data,
        read,
        &after,
        fd_has_acl(file.as_raw_fd()),
    )
}

fn statx_fd(file: &OwnedFd) -> Option<libc::statx> {
    walk::statx(file, libc::STATX_BASIC_STATS).ok()
}

/// Reads until EOF or `limit` bytes.
fn read_to_limit(file: &OwnedFd, data: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    while data.len() < limit {
        let room = limit - data.len();
        let spare = data.spare_capacity_mut();
        let want = spare.len().min(room);
        // SAFETY: the kernel writes at most `want` bytes into spare capacity.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(error);
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: `n` more bytes were initialised by the read.
        unsafe { data.set_len(data.len() + n as usize) };
    }
    Ok(())
}

fn fd_has_acl(fd: RawFd) -> bool {
    // SAFETY: an open descriptor and a valid C string; size query only.
    let size = unsafe { libc::fgetxattr(fd, ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    walk::acl_present(size)
}

/// Whether an io_uring `FGETXATTR` size query says an ACL is there.
fn acl_present(result: i32) -> bool {
    result >= 0 || !matches!(-result, libc::ENODATA | libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn pycache(tmp: &Path) -> std::path::PathBuf {
        let dir = std::fs::canonicalize(tmp)
            .expect("canonicalize")
            .join("__pycache__");
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    fn wanted(path: &Path) -> Wanted {
        let metadata = std::fs::symlink_metadata(path).expect("stat");
        let dir = path.parent().expect("parent");
        let dir_meta = std::fs::metadata(dir).expect("stat dir");
        Wanted {
            root: Root::Host,
            dir: Bytes::copy_from_slice(dir.as_os_str().as_bytes()),
            dir_id: (dir_meta.dev(), dir_meta.ino()),
            name: Bytes::copy_from_slice(path.file_name().expect("name").as_bytes()),
            identity: Identity {
                dev: metadata.dev(),
                ino: metadata.ino(),
                ctime_ns: metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
                mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
                size: metadata.len(),
            },
        }
    }

    fn hit(files: &CompiledFiles, w: &Wanted) -> Option<Bytes> {
        match files.lookup(&w.identity) {
            Lookup::Hit { data, .. } => Some(data),
            _ => None,
        }
    }

    fn each_reader(check: impl Fn(CompiledFiles)) {
        let uring = CompiledFiles::new(1 << 20, 1 << 16, true);
        assert_eq!(
            uring.reader.ring.lock().expect("lock").is_some(),
            Ring::new().is_ok(),
            "io_uring is used wherever it works"
        );
        check(uring);
        check(CompiledFiles::new(1 << 20, 1 << 16, false));
    }

    #[test]
    fn only_pycache_pyc_files_are_compiled_files() {
        assert!(is_compiled_file(
            b"/v/pkg/__pycache__",
            b"m.cpython-311.pyc"
        ));
        assert!(!is_compiled_file(b"/v/pkg", b"m.pyc"));
        assert!(!is_compiled_file(b"/v/__pycache__", b"m.py"));
        assert!(!is_compiled_file(b"/v/__pycache__", b".pyc"));
        assert!(!is_compiled_file(b"/v/x__pycache__", b"m.pyc"));
    }

    #[test]
    fn bytes_are_kept_at_their_identity_and_read_again_when_it_changes() {
        each_reader(|files| {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = pycache(tmp.path());
            let paths: Vec<_> = (0..100).map(|i| dir.join(format!("m{i}.pyc"))).collect();
            for (i, path) in paths.iter().enumerate() {
                std::fs::write(path, vec![i as u8; i * 10]).expect("write");
            }
            let all: Vec<Wanted> = paths.iter().map(|p| wanted(p)).collect();
            files.fill(&all);
            let counters = &files.counters;
            let reads = counters.read_uring.load(Ordering::Relaxed)
                + counters.read_sync.load(Ordering::Relaxed);
            assert_eq!(reads, 100);
            for (i, w) in all.iter().enumerate() {
                assert_eq!(
                    hit(&files, w).expect("cached").as_ref(),
                    vec![i as u8; i * 10]
                );
                let Lookup::Hit { facts, .. } = files.lookup(&w.identity) else {
                    panic!("hit");
                };
                assert_eq!(facts.mode & libc::S_IFMT, libc::S_IFREG);
            }
            std::fs::write(&paths[3], b"new bytes").expect("rewrite");
            let new = wanted(&paths[3]);
            assert_eq!(files.lookup(&new.identity), Lookup::Missing);
            files.fill(std::slice::from_ref(&new));
            assert_eq!(hit(&files, &new).expect("re-read").as_ref(), b"new bytes");
        });
    }

    #[test]
    fn a_chmod_is_another_identity() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = pycache(tmp.path()).join("m.pyc");
        std::fs::write(&path, b"abc").expect("write");
        let files = CompiledFiles::new(1 << 20, 1 << 16, false);
        let before = wanted(&path);
        files.fill(std::slice::from_ref(&before));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let after = wanted(&path);
        assert_ne!(before.identity, after.identity, "ctime moved");
        assert_eq!(files.lookup(&after.identity), Lookup::Missing);
        files.fill(std::slice::from_ref(&after));
        let Lookup::Hit { facts, .. } = files.lookup(&after.identity) else {
            panic!("re-read");
        };
        assert_eq!(facts.mode & 0o777, 0o600);
    }

    #[test]
    fn swapped_symlinked_fifo_large_and_foreign_files_are_not_served() {
        each_reader(|files| {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = pycache(tmp.path());
            let real = dir.join("real.pyc");
            std::fs::write(&real, b"abc").expect("write");
            let decoy = dir.join("decoy.pyc");
            std::fs::write(&decoy, b"xyz").expect("write");
            let link = dir.join("link.pyc");
            std::os::unix::fs::symlink(&real, &link).expect("symlink");
            let large = dir.join("large.pyc");
            std::fs::write(&large, vec![0u8; 1 << 17]).expect("write");
            let fifo = dir.join("fifo.pyc");
            let c_fifo = CString::new(fifo.as_os_str().as_bytes()).expect("path");
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o644) }, 0);
            let outside = std::fs::canonicalize(tmp.path())
                .expect("canon")
                .join("m.pyc");
            std::fs::write(&outside, b"abc").expect("write");
            // The listing named `real` at its identity; the name is now
            // another file (a rename over it): not the wanted identity.
            let mut swapped = wanted(&real);
            swapped.name = Bytes::from_static(b"decoy.pyc");
            let through_link = Wanted {
                name: Bytes::from_static(b"link.pyc"),
                ..wanted(&real)
            };
            let escaping = Wanted {
                name: Bytes::from_static(b"../m.pyc"),
                ..wanted(&outside)
            };
            let all = [
                swapped.clone(),
                through_link.clone(),
                wanted(&large),
                wanted(&fifo),
                wanted(&outside),
                escaping.clone(),
            ];
            files.fill(&all);
            assert_eq!(files.lookup(&swapped.identity), Lookup::Missing, "a swap");
            assert_eq!(files.lookup(&wanted(&large).identity), Lookup::Unreadable);
            assert!(hit(&files, &wanted(&fifo)).is_none(), "a fifo");
            assert_eq!(
                files.lookup(&wanted(&outside).identity),
                Lookup::Unreadable,
                "not in __pycache__"
            );
            files.fill(std::slice::from_ref(&wanted(&real)));
            assert!(hit(&files, &wanted(&real)).is_some());
        });
    }

    #[test]
    fn a_directory_that_is_not_the_listed_inode_is_not_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = pycache(tmp.path());
        std::fs::write(dir.join("m.pyc"), b"abc").expect("write");
        let mut moved = wanted(&dir.join("m.pyc"));
        moved.dir_id.1 += 1;
        let files = CompiledFiles::new(1 << 20, 1 << 16, false);
        files.fill(std::slice::from_ref(&moved));
        assert_eq!(files.lookup(&moved.identity), Lookup::Missing);
    }

    #[test]
    fn least_recently_served_files_are_evicted_past_the_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = pycache(tmp.path());
        let files = CompiledFiles::new(10_000, 10_000, true);
        let all: Vec<Wanted> = (0..10)
            .map(|i| {
                let path = dir.join(format!("f{i}.pyc"));
                std::fs::write(&path, vec![1u8; 2000]).expect("write");
                wanted(&path)
            })
            .collect();
        files.fill(&all[..4]);
        assert!(hit(&files, &all[0]).is_some(), "touch the first");
        files.fill(&all[4..]);
        let (count, bytes) = files.gauges();
        assert!(
            bytes <= 10_000 && count < 10,
            "{count} files, {bytes} bytes"
        );
        assert!(files.counters.evictions.load(Ordering::Relaxed) > 0);
        assert!(hit(&files, &all[9]).is_some(), "the newest stays");
    }
}
