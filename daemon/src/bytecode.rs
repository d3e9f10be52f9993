//! Compiled files (`.pyc`) served from memory on slow filesystems.
//!
//! A learned plan names the compiled files its runs read under slow
//! filesystems; a Snapshot with that plan carries their bytes
//! (`CachedFile`), so a warm start opens no file for them. The bytes are
//! kept here keyed by path *and* fingerprint (mtime ns, size): the
//! fingerprint asked for always comes from the index's listing of the
//! file's directory at the request's barrier, so a changed file is read
//! again and its old bytes are never served.
//!
//! A file is read with `openat`, `read`, `statx` and `close` through
//! io_uring, every file of a batch in flight at once (on FUSE or NFS each
//! operation is a round trip; many in flight win), or with plain system
//! calls where io_uring is unavailable or `refresh_engine = sync`. Bytes
//! are kept only when the file's `statx` after the read shows exactly the
//! fingerprint asked for, so they are the bytes of that version. Symlinks
//! are not followed (`O_NOFOLLOW`): a compiled file must be the regular
//! file its directory lists, whose owner and mode decide who may read it.
//!
//! Memory is bounded by `max_cached_bytes`: past it the least recently
//! served files are evicted down to 90%.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};

use crate::policy::DirFacts;

const ACL_XATTR: &CStr = c"system.posix_acl_access";
/// Files per io_uring submission.
const RING_ENTRIES: u32 = 64;
/// Bookkeeping counted per cached file besides its bytes and path.
const ENTRY_OVERHEAD: u64 = 96;

/// A compiled file wanted at one fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub path: Bytes,
    pub mtime_ns: i64,
    pub size: u64,
}

/// What the cache holds for a file at a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Its bytes, and the owner and mode that decide who may read them.
    Hit { data: Bytes, facts: DirFacts },
    /// It could not be read at this fingerprint (too large, not a regular
    /// file, a symlink, unreadable by the daemon): not tried again until
    /// the fingerprint changes.
    Unreadable,
    /// Not read yet (or only at another fingerprint).
    Missing,
}

#[derive(Debug, Clone)]
enum Content {
    Bytes { data: Bytes, facts: DirFacts },
    Unreadable,
}

#[derive(Debug)]
struct Cached {
    mtime_ns: i64,
    size: u64,
    content: Content,
    last_used: u64,
}

impl Cached {
    fn cost(&self, path: &[u8]) -> u64 {
        let data = match &self.content {
            Content::Bytes { data, .. } => data.len() as u64,
            Content::Unreadable => 0,
        };
        data + path.len() as u64 + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Cache {
    files: HashMap<Bytes, Cached>,
    bytes: u64,
    clock: u64,
}

/// Counters for the Stats RPC.
#[derive(Debug, Default)]
pub struct FileCounters {
    pub read_uring: AtomicU64,
    pub read_sync: AtomicU64,
    /// Reads whose file changed or vanished meanwhile (nothing kept).
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

    /// What the cache holds for `path` at this fingerprint; a hit counts as
    /// a use (LRU).
    pub fn lookup(&self, path: &[u8], mtime_ns: i64, size: u64) -> Lookup {
        let mut cache = self.cache();
        cache.clock += 1;
        let now = cache.clock;
        let Some(cached) = cache.files.get_mut(path) else {
            return Lookup::Missing;
        };
        if cached.mtime_ns != mtime_ns || cached.size != size {
            return Lookup::Missing;
        }
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
    /// fingerprint, and keeps what matches.
    pub fn fill(&self, wanted: &[Wanted]) {
        if !self.enabled() {
            return;
        }
        let missing: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| self.peek(w) == Lookup::Missing)
            .collect();
        if missing.is_empty() {
            return;
        }
        let (too_large, readable): (Vec<&Wanted>, Vec<&Wanted>) = missing
            .into_iter()
            .partition(|w| w.size > self.max_file_bytes);
        for wanted in too_large {
            self.keep(wanted, Content::Unreadable);
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
                    self.keep(wanted, Content::Bytes { data, facts })
                }
                ReadResult::Unreadable => {
                    self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    self.keep(wanted, Content::Unreadable);
                }
                ReadResult::Changed | ReadResult::Short => {
                    self.counters.read_changed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// [`lookup`](Self::lookup) without counting a use.
    fn peek(&self, wanted: &Wanted) -> Lookup {
        let cache = self.cache();
        match cache.files.get(&wanted.path) {
            Some(c) if c.mtime_ns == wanted.mtime_ns && c.size == wanted.size => match &c.content {
                Content::Bytes { data, facts } => Lookup::Hit {
                    data: data.clone(),
                    facts: *facts,
                },
                Content::Unreadable => Lookup::Unreadable,
            },
            _ => Lookup::Missing,
        }
    }

    fn keep(&self, wanted: &Wanted, content: Content) {
        let mut cache = self.cache();
        cache.clock += 1;
        let cached = Cached {
            mtime_ns: wanted.mtime_ns,
            size: wanted.size,
            content,
            last_used: cache.clock,
        };
        let cost = cached.cost(&wanted.path);
        if cost > self.max_bytes {
            return;
        }
        if let Some(old) = cache.files.insert(wanted.path.clone(), cached) {
            cache.bytes -= old.cost(&wanted.path);
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
    let mut order: Vec<(u64, Bytes)> = cache
        .files
        .iter()
        .map(|(path, c)| (c.last_used, path.clone()))
        .collect();
    order.sort_unstable_by_key(|(used, _)| *used);
    let mut evicted = 0;
    for (_, path) in order {
        if cache.bytes <= target {
            break;
        }
        if let Some(old) = cache.files.remove(&path) {
            cache.bytes -= old.cost(&path);
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
        facts: DirFacts,
    },
    Unreadable,
    /// The file is not at the wanted fingerprint (changed, vanished): keep nothing.
    Changed,
    /// Fewer bytes than its size came back from one read.
    Short,
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
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(uring) = ring.as_mut() {
            let mut results = Vec::with_capacity(wanted.len());
            let mut failed = None;
            for chunk in wanted.chunks(RING_ENTRIES as usize) {
                match uring.read_batch(chunk) {
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
        (wanted.iter().map(|w| read_sync(w)).collect(), false)
    }
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            opcode::OpenAt::CODE,
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

    /// Submits `requests` (each for one file: its index in the batch) and
    /// waits for all of them; returns one result per file of `files`
    /// (-EBADF where no request was made).
    fn run(&mut self, requests: Vec<(usize, squeue::Entry)>, files: usize) -> io::Result<Vec<i32>> {
        let mut results = vec![-libc::EBADF; files];
        for chunk in requests.chunks(RING_ENTRIES as usize) {
            {
                let mut queue = self.ring.submission();
                for (file, entry) in chunk {
                    let entry = entry.clone().user_data(*file as u64);
                    // SAFETY: every pointer in the entry outlives the request:
                    // we wait for every completion below, or the caller leaks
                    // the buffers and the ring on error.
                    if unsafe { queue.push(&entry) }.is_err() {
                        return Err(io::Error::from_raw_os_error(libc::EBUSY));
                    }
                }
            }
            let mut done = 0;
            while done < chunk.len() {
                match self.ring.submit_and_wait(chunk.len() - done) {
                    Ok(_) => {}
                    Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(error) => return Err(error),
                }
                for completion in self.ring.completion() {
                    if let Some(slot) = results.get_mut(completion.user_data() as usize) {
                        *slot = completion.result();
                    }
                    done += 1;
                }
            }
        }
        Ok(results)
    }

    /// open, read, statx (and the ACL probe), close: each phase in flight
    /// for the whole batch at once.
    fn read_batch(&mut self, wanted: &[&Wanted]) -> io::Result<Vec<ReadResult>> {
        let paths: Vec<Option<CString>> = wanted
            .iter()
            .map(|w| CString::new(w.path.as_ref()).ok())
            .collect();
        let opened = self.open_all(&paths)?;
        let fds: Vec<Option<RawFd>> = opened.iter().map(|&r| (r >= 0).then_some(r)).collect();
        let mut buffers: Vec<Vec<u8>> = wanted
            .iter()
            .map(|w| Vec::with_capacity(w.size as usize + 1))
            .collect();
        let phases = self
            .read_into(&fds, &mut buffers)
            .and_then(|read| Ok((read, self.stat_all(&fds)?)));
        let closed = self.close_all(&fds);
        let (read, (stats, acls)) = match phases.and_then(|done| closed.map(|()| done)) {
            Ok(done) => done,
            Err(error) => {
                std::mem::forget(buffers);
                return Err(error);
            }
        };
        Ok(wanted
            .iter()
            .zip(buffers)
            .enumerate()
            .map(|(at, (w, mut buffer))| {
                if opened[at] < 0 {
                    return open_failed(-opened[at]);
                }
                if read[at] >= 0 {
                    // SAFETY: the kernel wrote `read[at]` bytes (at most the
                    // capacity it was given) into the buffer.
                    unsafe { buffer.set_len((read[at] as usize).min(buffer.capacity())) };
                }
                let Some(stat) = &stats[at] else {
                    return ReadResult::Changed;
                };
                match checked(w, buffer, read[at], stat, acls[at]) {
                    // A short read (some remote filesystems): once more, plainly.
                    ReadResult::Short => read_sync(w),
                    result => result,
                }
            })
            .collect())
    }

    /// One `openat` per file: descriptors, or -errno.
    fn open_all(&mut self, paths: &[Option<CString>]) -> io::Result<Vec<i32>> {
        let requests = paths
            .iter()
            .enumerate()
            .filter_map(|(at, path)| {
                let path = path.as_ref()?;
                let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                    .flags(OPEN_FLAGS)
                    .build();
                Some((at, open))
            })
            .collect();
        let mut results = self.run(requests, paths.len())?;
        for (result, path) in results.iter_mut().zip(paths) {
            if path.is_none() {
                *result = -libc::ENOENT; // a NUL byte: no such file
            }
        }
        Ok(results)
    }

    /// One read of size + 1 bytes per open file (the extra byte tells a
    /// file that grew); results are byte counts or -errno.
    fn read_into(
        &mut self,
        fds: &[Option<RawFd>],
        buffers: &mut [Vec<u8>],
    ) -> io::Result<Vec<i32>> {
        let requests = fds
            .iter()
            .zip(buffers.iter_mut())
            .enumerate()
            .filter_map(|(at, (fd, buffer))| {
                let len = u32::try_from(buffer.capacity()).unwrap_or(u32::MAX);
                let read = opcode::Read::new(types::Fd((*fd)?), buffer.as_mut_ptr(), len)
                    .offset(0)
                    .build();
                Some((at, read))
            })
            .collect();
        self.run(requests, fds.len())
    }

    /// `statx` of every open file (after its read), and whether it carries an ACL.
    fn stat_all(
        &mut self,
        fds: &[Option<RawFd>],
    ) -> io::Result<(Vec<Option<libc::statx>>, Vec<bool>)> {
        let mut buffers: Vec<libc::statx> = (0..fds.len())
            // SAFETY: an all-zero statx is a valid value to be overwritten.
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let empty = c"";
        let requests = fds
            .iter()
            .zip(buffers.iter_mut())
            .enumerate()
            .filter_map(|(at, (fd, buffer))| {
                let statx = opcode::Statx::new(
                    types::Fd((*fd)?),
                    empty.as_ptr(),
                    (buffer as *mut libc::statx).cast::<types::statx>(),
                )
                .flags(libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT)
                .mask(libc::STATX_BASIC_STATS)
                .build();
                Some((at, statx))
            })
            .collect();
        let results = self.run(requests, fds.len())?;
        let acls = self.acls(fds)?;
        let stats = buffers
            .into_iter()
            .zip(results)
            .map(|(buffer, result)| (result >= 0).then_some(buffer))
            .collect();
        Ok((stats, acls))
    }

    /// Whether each open file carries a POSIX access ACL.
    fn acls(&mut self, fds: &[Option<RawFd>]) -> io::Result<Vec<bool>> {
        if !self.xattr {
            return Ok(fds.iter().map(|fd| fd.is_some_and(fd_has_acl)).collect());
        }
        let requests = fds
            .iter()
            .enumerate()
            .filter_map(|(at, fd)| {
                let get = opcode::FGetXattr::new(
                    types::Fd((*fd)?),
                    ACL_XATTR.as_ptr(),
                    std::ptr::null_mut(),
                    0,
                )
                .build();
                Some((at, get))
            })
            .collect();
        let results = self.run(requests, fds.len())?;
        Ok(results.into_iter().map(|r| acl_present(r, -r)).collect())
    }

    fn close_all(&mut self, fds: &[Option<RawFd>]) -> io::Result<()> {
        let requests = fds
            .iter()
            .enumerate()
            .filter_map(|(at, fd)| Some((at, opcode::Close::new(types::Fd((*fd)?)).build())))
            .collect();
        self.run(requests, fds.len()).map(|_| ())
    }
}

const OPEN_FLAGS: i32 =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

/// What a failed open means: gone or busy (try again later), or a file
/// this daemon will not serve at this fingerprint.
fn open_failed(errno: i32) -> ReadResult {
    match errno {
        libc::ELOOP | libc::EACCES | libc::EPERM | libc::ENXIO | libc::ENODEV | libc::EFBIG => {
            ReadResult::Unreadable
        }
        _ => ReadResult::Changed,
    }
}

/// The bytes of one file, checked against the fingerprint it was wanted at.
fn checked(wanted: &Wanted, data: Vec<u8>, read: i32, stat: &libc::statx, acl: bool) -> ReadResult {
    if u32::from(stat.stx_mode) & libc::S_IFMT != libc::S_IFREG {
        return ReadResult::Unreadable;
    }
    let mtime_ns = stat.stx_mtime.tv_sec * 1_000_000_000 + i64::from(stat.stx_mtime.tv_nsec);
    if mtime_ns != wanted.mtime_ns || stat.stx_size != wanted.size {
        return ReadResult::Changed;
    }
    if read < 0 {
        return match -read {
            libc::EISDIR | libc::EINVAL | libc::EACCES | libc::EPERM => ReadResult::Unreadable,
            _ => ReadResult::Changed,
        };
    }
    match (data.len() as u64).cmp(&wanted.size) {
        std::cmp::Ordering::Less => ReadResult::Short,
        std::cmp::Ordering::Greater => ReadResult::Changed,
        std::cmp::Ordering::Equal => ReadResult::Read {
            data: Bytes::from(data),
            facts: DirFacts {
                mode: u32::from(stat.stx_mode),
                uid: stat.stx_uid,
                gid: stat.stx_gid,
                has_acl: acl,
            },
        },
    }
}

/// The same as one file of [`Ring::read_batch`], with system calls.
fn read_sync(wanted: &Wanted) -> ReadResult {
    let Ok(path) = CString::new(wanted.path.as_ref()) else {
        return ReadResult::Changed;
    };
    // SAFETY: a valid C string; the descriptor is owned right below.
    let fd = unsafe { libc::open(path.as_ptr(), OPEN_FLAGS) };
    if fd < 0 {
        return open_failed(errno());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut data = Vec::with_capacity(wanted.size as usize + 1);
    let read = match read_to_limit(&file, &mut data, wanted.size as usize + 1) {
        Ok(()) => 0,
        Err(error) => -error.raw_os_error().unwrap_or(libc::EIO),
    };
    // SAFETY: an all-zero statx is valid to be overwritten.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, an empty C string with AT_EMPTY_PATH, an out pointer.
    let stated = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            &mut stat,
        )
    };
    if stated < 0 {
        return ReadResult::Changed;
    }
    match checked(wanted, data, read, &stat, fd_has_acl(file.as_raw_fd())) {
        // Read until EOF already: the file is shorter than listed.
        ReadResult::Short => ReadResult::Changed,
        result => result,
    }
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

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fd_has_acl(fd: RawFd) -> bool {
    // SAFETY: an open descriptor and a valid C string; size query only.
    let size = unsafe { libc::fgetxattr(fd, ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    acl_present(i32::try_from(size).unwrap_or(0), errno())
}

/// Whether an xattr size query says an ACL is there: a size, or an error
/// other than "none" or "not supported" (which only refuses more).
fn acl_present(result: i32, errno: i32) -> bool {
    result >= 0 || !matches!(errno, libc::ENODATA | libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    fn wanted(path: &std::path::Path) -> Wanted {
        let metadata = std::fs::metadata(path).expect("stat");
        Wanted {
            path: Bytes::copy_from_slice(path.as_os_str().as_bytes()),
            mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
            size: metadata.len(),
        }
    }

    fn hit(files: &CompiledFiles, w: &Wanted) -> Option<Bytes> {
        match files.lookup(&w.path, w.mtime_ns, w.size) {
            Lookup::Hit { data, .. } => Some(data),
            _ => None,
        }
    }

    fn each_reader(check: impl Fn(CompiledFiles)) {
        let uring = CompiledFiles::new(1 << 20, 1 << 16, true);
        assert_eq!(
            lock_ring(&uring).is_some(),
            Ring::new().is_ok(),
            "io_uring is used wherever it works"
        );
        check(uring);
        check(CompiledFiles::new(1 << 20, 1 << 16, false));
    }

    fn lock_ring(files: &CompiledFiles) -> Option<bool> {
        let ring = files.reader.ring.lock().expect("lock");
        ring.as_ref().map(|r| r.xattr)
    }

    #[test]
    fn bytes_are_kept_at_their_fingerprint_and_read_again_when_it_changes() {
        each_reader(|files| {
            let tmp = tempfile::tempdir().expect("tempdir");
            let paths: Vec<_> = (0..100)
                .map(|i| tmp.path().join(format!("m{i}.pyc")))
                .collect();
            for (i, path) in paths.iter().enumerate() {
                std::fs::write(path, vec![i as u8; i * 10]).expect("write");
            }
            let all: Vec<Wanted> = paths.iter().map(|p| wanted(p)).collect();
            files.fill(&all);
            let counters = &files.counters;
            let reads = counters.read_uring.load(Ordering::Relaxed)
                + counters.read_sync.load(Ordering::Relaxed);
            assert_eq!(reads, 100);
            let uring_works = Ring::new().is_ok();
            let uring_used = counters.read_uring.load(Ordering::Relaxed) == 100;
            assert!(!uring_used || uring_works);
            for (i, w) in all.iter().enumerate() {
                assert_eq!(
                    hit(&files, w).expect("cached").as_ref(),
                    vec![i as u8; i * 10]
                );
                let Lookup::Hit { facts, .. } = files.lookup(&w.path, w.mtime_ns, w.size) else {
                    panic!("hit");
                };
                assert_eq!(facts.mode & libc::S_IFMT, libc::S_IFREG);
            }
            std::fs::write(&paths[3], b"new bytes").expect("rewrite");
            let new = wanted(&paths[3]);
            assert_eq!(
                files.lookup(&new.path, new.mtime_ns, new.size),
                Lookup::Missing
            );
            files.fill(std::slice::from_ref(&new));
            assert_eq!(hit(&files, &new).expect("re-read").as_ref(), b"new bytes");
        });
    }

    #[test]
    fn changed_symlinked_large_and_missing_files_are_not_served() {
        each_reader(|files| {
            let tmp = tempfile::tempdir().expect("tempdir");
            let real = tmp.path().join("real.pyc");
            std::fs::write(&real, b"abc").expect("write");
            let link = tmp.path().join("link.pyc");
            std::os::unix::fs::symlink(&real, &link).expect("symlink");
            let large = tmp.path().join("large.pyc");
            std::fs::write(&large, vec![0u8; 1 << 17]).expect("write");
            // Listed at another fingerprint than the file has now.
            let stale = Wanted {
                size: 2,
                ..wanted(&real)
            };
            let gone = Wanted {
                path: Bytes::copy_from_slice(tmp.path().join("gone.pyc").as_os_str().as_bytes()),
                ..wanted(&real)
            };
            let through_link = Wanted {
                path: Bytes::copy_from_slice(link.as_os_str().as_bytes()),
                ..wanted(&real)
            };
            let all = [
                stale.clone(),
                gone.clone(),
                through_link.clone(),
                wanted(&large),
            ];
            files.fill(&all);
            assert_eq!(
                files.lookup(&stale.path, stale.mtime_ns, 2),
                Lookup::Missing
            );
            assert_eq!(
                files.lookup(&gone.path, gone.mtime_ns, gone.size),
                Lookup::Missing
            );
            let link_lookup =
                files.lookup(&through_link.path, through_link.mtime_ns, through_link.size);
            assert_eq!(link_lookup, Lookup::Unreadable, "symlinks are not followed");
            let large = wanted(&large);
            assert_eq!(
                files.lookup(&large.path, large.mtime_ns, large.size),
                Lookup::Unreadable
            );
        });
    }

    #[test]
    fn least_recently_served_files_are_evicted_past_the_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = CompiledFiles::new(10_000, 10_000, true);
        let all: Vec<Wanted> = (0..10)
            .map(|i| {
                let path = tmp.path().join(format!("f{i}.pyc"));
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
