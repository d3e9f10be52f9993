//! Reading a directory: the directory a walk reached (`crate::walk`) is
//! listed with `getdents64`, then each entry is `lstat`'ed synchronously or
//! in io_uring batches ([`uring`]), chosen per filesystem by measurement
//! ([`engine`]).
//!
//! No symlink in a listing is followed here: a symlink entry is listed with
//! no fingerprint, and `crate::targets` resolves it with the walker, which
//! records the facts of every directory its resolution searched, so that the
//! gate gives its target's fingerprint only to a peer that could follow the
//! link itself.

pub mod engine;
pub mod uring;

use std::collections::{BTreeSet, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use crate::policy::{Access, Facts};
pub use crate::walk::Root;
use crate::walk::{self, fstat, fstatat, Start, Stop, Walked};
use engine::{Engines, Filesystem, Plan, Used};

pub use crate::walk::{join, parent_of, Refusal};

/// `getdents64` buffer: large enough that a typical directory is one call.
const GETDENTS_BUFFER: usize = 64 * 1024;

/// The `stat()` values that import machinery uses, and the inode's
/// identity: which inode it is and when its metadata last changed (a
/// compiled file's bytes are kept per identity: `crate::bytecode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub mode: u32,
    /// The object's own device ([`device`](Self::device)): on overlayfs a
    /// file from a lower layer is not on its directory's (the overlay's)
    /// device. 32 bits beside `mode`, so that entries stay as small as they
    /// were without it.
    pub dev: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub ino: u64,
    pub ctime_ns: i64,
}

impl Fingerprint {
    pub fn of(st: &libc::stat) -> Self {
        Self {
            mode: st.st_mode,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            size: st.st_size as u64,
            ino: st.st_ino,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
            dev: compact_device(st.st_dev),
        }
    }

    /// The object's own device, as `st_dev`.
    pub fn device(&self) -> u64 {
        u64::from(self.dev)
    }

    fn of_statx(stx: &libc::statx) -> Self {
        let ns = |t: &libc::statx_timestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        Self {
            mode: u32::from(stx.stx_mode),
            mtime_ns: ns(&stx.stx_mtime),
            size: stx.stx_size,
            ino: stx.stx_ino,
            ctime_ns: ns(&stx.stx_ctime),
            dev: compact_device(libc::makedev(stx.stx_dev_major, stx.stx_dev_minor)),
        }
    }
}

/// `st_dev` in 32 bits. The kernel's own `dev_t` has 32 (a 12-bit major, a
/// 20-bit minor) and `stat` encodes it into the low 32 of the 64 bits
/// (`new_encode_dev`), so every device it reports fits. One that did not
/// would read as `u32::MAX`: a device no file read back ever has, so a
/// compiled file's identity check fails and it is not served.
fn compact_device(dev: u64) -> u32 {
    u32::try_from(dev).unwrap_or(u32::MAX)
}

/// What an entry is after following symlinks, as `EntryKind` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    SymlinkDir,
    Other,
}

/// One name in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Bytes,
    pub kind: Kind,
    pub stat: Fingerprint,
    /// A symlink: `kind` and `stat` are those of its target as the walker
    /// resolved it (see `crate::targets`); until then, OTHER with none.
    pub link: bool,
}

impl Entry {
    /// A symlink entry whose target is not (or cannot be) resolved: what a
    /// dangling link reads as, so the client asks `stat()` itself.
    pub fn unresolved_link(name: Bytes) -> Entry {
        Entry {
            name,
            kind: Kind::Other,
            stat: Fingerprint::default(),
            link: true,
        }
    }
}

/// Told before the filesystem is read, so the reader's watches come first
/// and a crawl made for a peer stops where that peer could not go.
pub trait Observer: walk::Observer {
    /// The directory at the real path `dir` (with `facts`) is about to be
    /// listed; `polled`: it lives on a filesystem inotify cannot see.
    fn before_listing(&self, dir: &[u8], facts: &Facts, polled: bool) -> Result<(), Refusal>;
}

/// A directory as read.
#[derive(Debug)]
pub struct Listed {
    /// The directory's real path (every symlink resolved).
    pub real: Bytes,
    pub stat: Fingerprint,
    /// Sorted by name in unsigned byte order.
    pub entries: Vec<Entry>,
    pub access: Access,
    /// How the entries were stat'ed.
    pub used: Used,
    /// `st_dev` of the directory.
    pub device: u64,
    /// Names of the entries that are symlinks (listed unresolved).
    pub links: Vec<Bytes>,
    /// Once `crate::targets` resolved them (by the index, its watches in
    /// place): per symlink entry, the directories its resolution searched.
    pub resolved: Vec<(Bytes, Access)>,
}

/// What a crawl of one path found.
#[derive(Debug)]
pub enum Outcome {
    Listed(Box<Listed>),
    /// The path does not exist: the errno a `stat()` would give.
    Absent {
        errno: i32,
        access: Access,
    },
    Refused {
        refusal: Refusal,
        access: Access,
    },
    /// A directory vanished between two steps: try again. `access`: the
    /// directories resolved before it, so that "kept changing" (the answer
    /// once the attempts are used up) reaches only a peer that could look
    /// there itself.
    Raced {
        access: Access,
    },
}

impl Outcome {
    /// One word for logs.
    pub fn summary(&self) -> &'static str {
        match self {
            Outcome::Listed(_) => "listed",
            Outcome::Absent { .. } => "absent",
            Outcome::Refused { .. } => "refused",
            Outcome::Raced { .. } => "raced",
        }
    }
}

impl From<Stop> for Outcome {
    fn from(stop: Stop) -> Outcome {
        match stop {
            Stop::Absent { errno, searched } => Outcome::Absent {
                errno,
                access: Access::searched(searched),
            },
            Stop::Refused { refusal, searched } => refused(refusal, searched),
            Stop::Raced { searched } => raced(searched),
        }
    }
}

/// Resolves `path` (absolute, canonical) and lists the directory it names.
pub fn crawl(
    root: &Root,
    path: &[u8],
    observer: &dyn Observer,
    max_entries: usize,
    engines: &Engines,
) -> Outcome {
    let start = match Start::root(root) {
        Ok(start) => start,
        Err(error) => return refused(walk::refusal_for(&error, b"/"), Vec::new()),
    };
    match walk::walk(start, path, observer) {
        Ok(walked) if walked.is_dir() => list(walked, observer, max_entries, engines),
        Ok(walked) => refused(Refusal::lasting("not a directory"), walked.searched),
        Err(stop) => stop.into(),
    }
}

/// Lists the directory a walk reached.
fn list(walked: Walked, observer: &dyn Observer, max_entries: usize, engines: &Engines) -> Outcome {
    let facts = walked.facts();
    let Walked {
        real,
        searched,
        fd: reached,
        ..
    } = walked;
    let polled = fstatfs_magic(&reached)
        .is_ok_and(|magic| engines.is_polled(Filesystem { device: 0, magic }));
    if let Err(refusal) = observer.before_listing(&real, &facts, polled) {
        return refused(refusal, searched);
    }
    // The directory the walk reached, whatever `real` names by now: its
    // facts (checked above, kept below) are those of the inode listed.
    let dir = match reopen_for_reading(&reached) {
        Ok(dir) => dir,
        Err(error) if walk::vanished(&error) => return raced(searched),
        Err(error) => return refused(walk::refusal_for(&error, &real), searched),
    };
    let filesystem = match Filesystem::of(&dir) {
        Ok(filesystem) => filesystem,
        Err(error) => return refused(walk::refusal_for(&error, &real), searched),
    };
    let st = match fstat(&dir) {
        Ok(st) => st,
        Err(error) => return refused(walk::refusal_for(&error, &real), searched),
    };
    let (entries, used, links) = match read_entries(&dir, max_entries, engines, filesystem) {
        Ok(read) => read,
        Err(ReadError::TooMany) => {
            return refused(
                Refusal::lasting(format!(
                "directory has more than {max_entries} entries (limit max_entries_per_directory)"
            )),
                searched,
            )
        }
        // Removed since it was opened: the next attempt finds it absent.
        Err(ReadError::Io(error)) if walk::vanished(&error) => return raced(searched),
        Err(ReadError::Io(error)) => return refused(walk::refusal_for(&error, &real), searched),
    };
    Outcome::Listed(Box::new(Listed {
        real: Bytes::from(real),
        stat: Fingerprint::of(&st),
        entries,
        access: Access {
            searched,
            listed: Some(Facts::of_stat(&st, walk::has_acl(&dir))),
        },
        used,
        links,
        resolved: Vec::new(),
        device: filesystem.device,
    }))
}

/// `fstatfs` of an open descriptor: its filesystem's magic.
fn fstatfs_magic(fd: &OwnedFd) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is valid to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a valid out pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fs.f_type as i64)
}

/// The current state of some names in a directory (the incremental update
/// after inotify events).
#[derive(Debug)]
pub struct Restat {
    /// The directory's own fingerprint.
    pub stat: Fingerprint,
    /// Per name, its entry, or `None` when it is gone (symlinks unresolved).
    pub names: Vec<(Bytes, Option<Entry>)>,
    /// Those of `names` that are symlinks now.
    pub links: Vec<Bytes>,
}

/// The directory at the real path `real`, listed again synchronously (the
/// background check of polled directories); symlinks unresolved.
pub fn relist(
    root: &Root,
    real: &[u8],
    max_entries: usize,
) -> io::Result<(Fingerprint, Vec<Entry>)> {
    let dir = root.open_directory(real, libc::O_RDONLY)?;
    let st = fstat(&dir)?;
    let names = read_names(&dir, max_entries).map_err(|error| match error {
        ReadError::TooMany => io::Error::from_raw_os_error(libc::EFBIG),
        ReadError::Io(error) => error,
    })?;
    let stats = stat_sync(&dir, &names, &names.records)?;
    let arena = Bytes::from(names.arena);
    let mut entries = entries_of(&arena, &names.records, stats);
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok((Fingerprint::of(&st), entries))
}

/// Re-reads, in the directory at the real path `real` whose last listing
/// was `listed` (sorted by name), the `changed` names (those the inotify
/// events just read name), and returns them with the directory's
/// fingerprint.
///
/// The listing must be at least as new as that fingerprint: `FileFinder`
/// keys its cache on the directory's mtime, and a listing that lacks a name
/// the mtime already reflects stays cached, without it, until the directory
/// changes again (an import of a module another thread had just written
/// failed that way). The `fstat` sees a change that may have happened after
/// the events were read. So after it, a `getdents` waits for the
/// directory's lock (held by a namespace change until its event is queued),
/// and `queue_empty` says whether any event came since the read; if one did,
/// every name that appeared or vanished is re-read too, by listing the
/// directory (which is at least as new as the `fstat` by itself).
pub fn restat(
    root: &Root,
    real: &[u8],
    changed: &[Bytes],
    listed: &[Entry],
    max_entries: usize,
    queue_empty: impl FnOnce() -> bool,
) -> io::Result<Restat> {
    let dir = root.open_directory(real, libc::O_RDONLY)?;
    let st = fstat(&dir)?;
    wait_for_namespace_changes(&dir)?;
    let names = if queue_empty() {
        changed.iter().cloned().collect()
    } else {
        // SAFETY: an open directory; rewinding it changes no memory.
        if unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let current = read_names(&dir, max_entries).map_err(|error| match error {
            ReadError::TooMany => io::Error::from_raw_os_error(libc::EFBIG),
            ReadError::Io(error) => error,
        })?;
        names_to_restat(changed, listed, &current)
    };
    let mut found = Vec::with_capacity(names.len());
    let mut links = Vec::new();
    for name in names {
        // A name with a NUL byte cannot exist.
        let entry = match CString::new(name.as_ref()) {
            Ok(c_name) => lstat_entry(&dir, &c_name)?.map(|stat| entry_of(name.clone(), stat)),
            Err(_) => None,
        };
        if entry.as_ref().is_some_and(|e| e.link) {
            links.push(name.clone());
        }
        found.push((name, entry));
    }
    Ok(Restat {
        stat: Fingerprint::of(&st),
        names: found,
        links,
    })
}

/// One small `getdents64`: it takes the directory's lock, so a create,
/// unlink or rename in it that had begun has queued its inotify event (the
/// kernel queues it before the lock is released) by the time this returns.
fn wait_for_namespace_changes(dir: &OwnedFd) -> io::Result<()> {
    getdents(dir, &mut [0u8; 1024]).map(drop)
}

/// One `getdents64` into `buffer`: the bytes it filled (0 at the end).
fn getdents(dir: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buffer.len()` bytes into it.
    let read = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buffer.as_mut_ptr(),
            buffer.len(),
        )
    };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(read as usize)
}

/// `changed`, and the names that are in one of `listed` (sorted) and
/// `current` but not in the other; sorted, each once.
fn names_to_restat(changed: &[Bytes], listed: &[Entry], current: &Names) -> BTreeSet<Bytes> {
    let mut names: BTreeSet<Bytes> = changed.iter().cloned().collect();
    let mut present = HashSet::with_capacity(current.records.len());
    for record in &current.records {
        let name = &current.arena[record.start..record.start + record.len];
        present.insert(name);
        let known = listed
            .binary_search_by(|e| e.name.as_ref().cmp(name))
            .is_ok();
        if !known {
            names.insert(Bytes::copy_from_slice(name));
        }
    }
    for entry in listed {
        if !present.contains(entry.name.as_ref()) {
            names.insert(entry.name.clone());
        }
    }
    names
}

enum ReadError {
    TooMany,
    Io(io::Error),
}

/// Every entry of an open directory, `lstat`'ed and sorted, and the names
/// of those that are symlinks (listed unresolved).
fn read_entries(
    dir: &OwnedFd,
    max_entries: usize,
    engines: &Engines,
    filesystem: Filesystem,
) -> Result<(Vec<Entry>, Used, Vec<Bytes>), ReadError> {
    let names = read_names(dir, max_entries)?;
    let (stats, used) = stat_records(dir, &names, engines, filesystem).map_err(ReadError::Io)?;
    engines.crawled(filesystem, used);
    let arena = Bytes::from(names.arena);
    let mut entries = entries_of(&arena, &names.records, stats);
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let links = entries
        .iter()
        .filter(|e| e.link)
        .map(|e| e.name.clone())
        .collect();
    Ok((entries, used, links))
}

/// The entries of `records` (names in `arena`) with their `lstat`s. A name
/// that vanished since getdents is simply not listed: its deletion event
/// follows and removes nothing.
fn entries_of(arena: &Bytes, records: &[NameRecord], stats: Vec<EntryStat>) -> Vec<Entry> {
    records
        .iter()
        .zip(stats)
        .filter_map(|(record, stat)| {
            let name = arena.slice(record.start..record.start + record.len);
            stat.map(|stat| entry_of(name, stat))
        })
        .collect()
}

/// An entry from its `lstat`: a symlink is listed unresolved.
fn entry_of(name: Bytes, stat: Fingerprint) -> Entry {
    let kind = match stat.mode & libc::S_IFMT {
        libc::S_IFLNK => return Entry::unresolved_link(name),
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::Other,
    };
    Entry {
        name,
        kind,
        stat,
        link: false,
    }
}

/// One entry's `lstat`, `None` when it vanished.
type EntryStat = Option<Fingerprint>;

/// Stats every record the way `engines` plans for this filesystem.
fn stat_records(
    dir: &OwnedFd,
    names: &Names,
    engines: &Engines,
    filesystem: Filesystem,
) -> io::Result<(Vec<EntryStat>, Used)> {
    let all = &names.records[..];
    match engines.plan(filesystem, all.len()) {
        Plan::Sync => Ok((stat_sync(dir, names, all)?, Used::Sync)),
        Plan::Uring(uring) => match stat_uring(dir, names, all, uring) {
            Ok(stats) => Ok((stats, Used::Uring)),
            Err(_) => Ok((stat_sync(dir, names, all)?, Used::Sync)),
        },
        Plan::Calibrate(uring) => {
            let slice = Engines::calibration_slice(all.len());
            let started = Instant::now();
            let mut stats = stat_sync(dir, names, &all[..slice])?;
            let sync_ns = per_entry_ns(started.elapsed(), slice);
            let started = Instant::now();
            let Ok(timed) = stat_uring(dir, names, &all[slice..2 * slice], uring) else {
                stats.extend(stat_sync(dir, names, &all[slice..])?);
                return Ok((stats, Used::Sync));
            };
            let uring_ns = per_entry_ns(started.elapsed(), slice);
            stats.extend(timed);
            engines.calibrated(filesystem, sync_ns, uring_ns);
            let rest = &all[2 * slice..];
            let used = if uring_ns < sync_ns {
                stats.extend(
                    stat_uring(dir, names, rest, uring).or_else(|_| stat_sync(dir, names, rest))?,
                );
                Used::Uring
            } else {
                stats.extend(stat_sync(dir, names, rest)?);
                Used::Sync
            };
            Ok((stats, used))
        }
    }
}

fn per_entry_ns(elapsed: std::time::Duration, entries: usize) -> u64 {
    u64::try_from(elapsed.as_nanos() / entries.max(1) as u128).unwrap_or(u64::MAX)
}

fn name_of<'a>(names: &'a Names, record: &NameRecord) -> io::Result<&'a CStr> {
    CStr::from_bytes_with_nul(&names.arena[record.start..=record.start + record.len])
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn stat_sync(dir: &OwnedFd, names: &Names, records: &[NameRecord]) -> io::Result<Vec<EntryStat>> {
    records
        .iter()
        .map(|record| lstat_entry(dir, name_of(names, record)?))
        .collect()
}

/// The same as [`stat_sync`] through io_uring: one `statx` (not following
/// symlinks) per entry.
fn stat_uring(
    dir: &OwnedFd,
    names: &Names,
    records: &[NameRecord],
    uring: &uring::UringStater,
) -> Result<Vec<EntryStat>, uring::UringError> {
    let c_names: Vec<&CStr> = records
        .iter()
        .map(|record| name_of(names, record))
        .collect::<io::Result<_>>()
        .map_err(uring::UringError::Submit)?;
    let results = uring.statx_all(dir.as_raw_fd(), &c_names, libc::AT_SYMLINK_NOFOLLOW)?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(stx) => Ok(Some(Fingerprint::of_statx(&stx))),
            Err(libc::ENOENT | libc::ENOTDIR) => Ok(None),
            Err(errno) => Err(io::Error::from_raw_os_error(errno)),
        })
        .collect::<io::Result<_>>()
        .map_err(uring::UringError::Submit)
}

/// Names from `getdents64`, kept NUL-terminated in one arena so that each
/// `fstatat` needs no allocation and the listing shares one buffer.
struct Names {
    arena: Vec<u8>,
    records: Vec<NameRecord>,
}

struct NameRecord {
    start: usize,
    len: usize,
}

fn read_names(dir: &OwnedFd, max_entries: usize) -> Result<Names, ReadError> {
    let mut names = Names {
        arena: Vec::new(),
        records: Vec::new(),
    };
    let mut buffer = vec![0u8; GETDENTS_BUFFER];
    loop {
        let read = getdents(dir, &mut buffer).map_err(ReadError::Io)?;
        if read == 0 {
            return Ok(names);
        }
        parse_dirents(&buffer[..read], &mut names);
        if names.records.len() > max_entries {
            return Err(ReadError::TooMany);
        }
    }
}

/// Appends the records of one `getdents64` buffer (`struct linux_dirent64`:
/// u64 ino, i64 off, u16 reclen, u8 type, NUL-terminated name; the type is
/// not trusted: every entry is `lstat`'ed), skipping
/// `.` and `..`.
fn parse_dirents(buffer: &[u8], names: &mut Names) {
    const NAME_OFFSET: usize = 19;
    let mut offset = 0;
    while offset + NAME_OFFSET <= buffer.len() {
        let reclen = usize::from(u16::from_ne_bytes([
            buffer[offset + 16],
            buffer[offset + 17],
        ]));
        if reclen == 0 || offset + reclen > buffer.len() {
            break;
        }
        let raw_name = &buffer[offset + NAME_OFFSET..offset + reclen];
        let len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        let name = &raw_name[..len];
        if name != b"." && name != b".." && !name.is_empty() {
            names.records.push(NameRecord {
                start: names.arena.len(),
                len,
            });
            names.arena.extend_from_slice(name);
            names.arena.push(0);
        }
        offset += reclen;
    }
}

/// `lstat()` of one entry; `None` when the name no longer exists.
fn lstat_entry(dir: &OwnedFd, name: &CStr) -> io::Result<Option<Fingerprint>> {
    match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Fingerprint::of(&st))),
        Err(error) if walk::vanished(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

fn refused(refusal: Refusal, searched: Vec<Facts>) -> Outcome {
    Outcome::Refused {
        refusal,
        access: Access::searched(searched),
    }
}

fn raced(searched: Vec<Facts>) -> Outcome {
    Outcome::Raced {
        access: Access::searched(searched),
    }
}

/// An `O_PATH` directory descriptor opened again for reading (`getdents64`
/// and `fgetxattr` need a real open): the same directory, by descriptor.
fn reopen_for_reading(dir: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: an open directory descriptor and a valid C string; the
    // descriptor returned is owned right below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn as_path(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::symlink;

    /// Records what the crawl announced, refusing nothing.
    #[derive(Default)]
    struct Recorder {
        lookups: RefCell<Vec<Vec<u8>>>,
        listings: RefCell<Vec<Vec<u8>>>,
    }

    /// An index holds one `Entry` per name (S6's budget: 200 bytes of RSS
    /// per indexed entry, everything included): its device costs no room.
    #[test]
    fn an_entry_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Fingerprint>(), 40);
        assert_eq!(std::mem::size_of::<Entry>(), 80);
    }

    #[test]
    fn a_device_reads_back_as_stat_gave_it() {
        let st = std::fs::metadata("/").expect("stat /");
        // SAFETY: `libc::stat` is plain data, for which all zeroes is a value.
        let mut raw: libc::stat = unsafe { std::mem::zeroed() };
        raw.st_dev = std::os::unix::fs::MetadataExt::dev(&st);
        assert_eq!(Fingerprint::of(&raw).device(), raw.st_dev);
        assert_eq!(compact_device(u64::MAX), u32::MAX);
    }

    impl walk::Observer for Recorder {
        fn before_lookup(&self, dir: &[u8], _: &Facts, name: &[u8]) -> Result<(), Refusal> {
            self.lookups.borrow_mut().push(join(dir, name));
            Ok(())
        }
    }

    impl Observer for Recorder {
        fn before_listing(&self, dir: &[u8], _: &Facts, _polled: bool) -> Result<(), Refusal> {
            self.listings.borrow_mut().push(dir.to_vec());
            Ok(())
        }
    }

    fn engines() -> Engines {
        Engines::new(&crate::config::RefreshConfig::default())
    }

    fn bytes_of(path: &Path) -> Vec<u8> {
        path.as_os_str().as_bytes().to_vec()
    }

    /// Swaps `victim` (a directory) for a symlink to `target` at one point
    /// of the crawl: the race a hostile peer runs between the permission
    /// facts being read and the directory being listed.
    struct Swapper {
        victim: std::path::PathBuf,
        target: std::path::PathBuf,
        /// Swap before looking up this name (`None`: before listing).
        at_lookup_of: Option<&'static [u8]>,
    }

    impl Swapper {
        fn swap(&self) {
            let away = self.victim.with_extension("away");
            if !away.exists() {
                std::fs::rename(&self.victim, &away).expect("rename");
                symlink(&self.target, &self.victim).expect("symlink");
            }
        }
    }

    impl walk::Observer for Swapper {
        fn before_lookup(&self, _dir: &[u8], _: &Facts, name: &[u8]) -> Result<(), Refusal> {
            if self.at_lookup_of == Some(name) {
                self.swap();
            }
            Ok(())
        }
    }

    impl Observer for Swapper {
        fn before_listing(&self, _dir: &[u8], _: &Facts, _polled: bool) -> Result<(), Refusal> {
            if self.at_lookup_of.is_none() {
                self.swap();
            }
            Ok(())
        }
    }

    /// Removes the directory about to be listed.
    struct Remover;

    impl walk::Observer for Remover {
        fn before_lookup(&self, _dir: &[u8], _: &Facts, _name: &[u8]) -> Result<(), Refusal> {
            Ok(())
        }
    }

    impl Observer for Remover {
        fn before_listing(&self, dir: &[u8], _: &Facts, _polled: bool) -> Result<(), Refusal> {
            std::fs::remove_dir(std::ffi::OsStr::from_bytes(dir)).expect("rmdir");
            Ok(())
        }
    }

    /// A directory that goes between its lookup and its listing is a race,
    /// and the race carries the facts of every directory searched to reach
    /// it: "kept changing" must reach only a peer that could look there.
    #[test]
    fn a_race_carries_the_facts_of_the_walk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let gone = tmp.path().join("gone");
        std::fs::create_dir(&gone).expect("mkdir");
        let path = bytes_of(&gone);
        match crawl(&Root::Host, &path, &Remover, 100, &engines()) {
            Outcome::Raced { access } => {
                let depth = path.iter().filter(|&&byte| byte == b'/').count();
                assert_eq!(access.searched.len(), depth, "{access:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// `pub/inner` is crawled; meanwhile `pub` becomes a symlink to
    /// `private` (whose own `inner` is 0755). The listing and its facts
    /// must be those of one directory: never `private/inner`'s names under
    /// `pub`'s facts.
    #[test]
    fn a_component_swapped_for_a_symlink_never_lists_its_target() {
        for at_lookup_of in [None, Some(&b"inner"[..])] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let public = tmp.path().join("pub");
            let private = tmp.path().join("private");
            std::fs::create_dir_all(public.join("inner")).expect("mkdir");
            std::fs::write(public.join("inner").join("public.py"), b"").expect("write");
            std::fs::create_dir_all(private.join("inner")).expect("mkdir");
            std::fs::write(private.join("inner").join("secret.py"), b"").expect("write");
            let swapper = Swapper {
                victim: public.clone(),
                target: private.clone(),
                at_lookup_of,
            };
            let outcome = crawl(
                &Root::Host,
                &bytes_of(&public.join("inner")),
                &swapper,
                100,
                &engines(),
            );
            match outcome {
                Outcome::Listed(listed) => {
                    let names: Vec<&[u8]> = listed.entries.iter().map(|e| &e.name[..]).collect();
                    assert_eq!(names, [&b"public.py"[..]], "{at_lookup_of:?}");
                }
                // "Kept changing" reaches only peers that may search
                // where the walk was when the swap was seen.
                Outcome::Raced { access } => {
                    assert!(!access.searched.is_empty(), "{at_lookup_of:?}");
                }
                other => panic!("{at_lookup_of:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn crawl_lists_sorted_entries_and_leaves_symlinks_unresolved() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("b.py"), b"x = 1\n").expect("write");
        std::fs::create_dir(real.join("a")).expect("mkdir");
        symlink(tmp.path().join("missing"), real.join("c")).expect("symlink");
        symlink("real", tmp.path().join("link")).expect("symlink");
        let recorder = Recorder::default();
        let Outcome::Listed(listed) = crawl(
            &Root::Host,
            &bytes_of(&tmp.path().join("link")),
            &recorder,
            100,
            &engines(),
        ) else {
            panic!("not listed");
        };
        let real_bytes = bytes_of(&std::fs::canonicalize(&real).expect("canonicalize"));
        assert_eq!(listed.real, real_bytes);
        let names: Vec<&[u8]> = listed.entries.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(names, [b"a".as_ref(), b"b.py", b"c"]);
        assert_eq!(listed.entries[0].kind, Kind::Dir);
        assert_eq!(listed.entries[1].kind, Kind::File);
        assert_eq!(listed.entries[1].stat.size, 6);
        assert_eq!(
            listed.entries[2],
            Entry::unresolved_link(Bytes::from_static(b"c"))
        );
        assert_eq!(listed.links, [Bytes::from_static(b"c")]);
        assert!(!listed.entries[1].link);
        assert_eq!(*recorder.listings.borrow(), vec![real_bytes.clone()]);
        assert!(recorder
            .lookups
            .borrow()
            .contains(&bytes_of(&tmp.path().join("link"))));
        assert!(recorder.lookups.borrow().contains(&real_bytes));
    }

    #[test]
    fn missing_paths_are_absent_and_files_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("file"), b"").expect("write");
        let recorder = Recorder::default();
        let absent = crawl(
            &Root::Host,
            &bytes_of(&tmp.path().join("nope/deeper")),
            &recorder,
            100,
            &engines(),
        );
        assert!(
            matches!(
                absent,
                Outcome::Absent {
                    errno: libc::ENOENT,
                    ..
                }
            ),
            "{absent:?}"
        );
        let through_file = crawl(
            &Root::Host,
            &bytes_of(&tmp.path().join("file/x")),
            &recorder,
            100,
            &engines(),
        );
        assert!(matches!(
            through_file,
            Outcome::Absent {
                errno: libc::ENOTDIR,
                ..
            }
        ));
        let file = crawl(
            &Root::Host,
            &bytes_of(&tmp.path().join("file")),
            &recorder,
            100,
            &engines(),
        );
        assert!(
            matches!(&file, Outcome::Refused { refusal, .. } if refusal.reason == "not a directory")
        );
    }

    #[test]
    fn symlink_loops_and_entry_limits_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        symlink("loop", tmp.path().join("loop")).expect("symlink");
        let recorder = Recorder::default();
        let looping = crawl(
            &Root::Host,
            &bytes_of(&tmp.path().join("loop")),
            &recorder,
            100,
            &engines(),
        );
        assert!(matches!(&looping, Outcome::Refused { refusal, .. } if refusal.lasting));
        for name in ["a", "b", "c"] {
            std::fs::write(tmp.path().join(name), b"").expect("write");
        }
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).expect("mkdir");
        for name in ["a", "b", "c"] {
            std::fs::write(dir.join(name), b"").expect("write");
        }
        let limited = crawl(&Root::Host, &bytes_of(&dir), &recorder, 2, &engines());
        assert!(
            matches!(&limited, Outcome::Refused { refusal, .. } if refusal.reason.contains("more than 2 entries"))
        );
    }

    /// Events came after the read (the queue is not empty): the names that
    /// appeared or vanished since the listing are re-read too, so that the
    /// listing is as new as the fingerprint taken with it.
    #[test]
    fn restat_reads_unreported_names_when_events_came_after_the_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for name in ["kept", "reported", "gone"] {
            std::fs::write(tmp.path().join(name), b"").expect("write");
        }
        let real = bytes_of(tmp.path());
        let (_, listed) = relist(&Root::Host, &real, 100).expect("relist");
        std::fs::write(tmp.path().join("reported"), b"longer").expect("write");
        std::fs::write(tmp.path().join("unreported"), b"").expect("write");
        std::fs::remove_file(tmp.path().join("gone")).expect("rm");
        let changed = [Bytes::from_static(b"reported")];
        let names = |restat: Restat| -> Vec<(Vec<u8>, bool)> {
            (restat.names.into_iter())
                .map(|(name, entry)| (name.to_vec(), entry.is_some()))
                .collect()
        };
        let quiet = restat(&Root::Host, &real, &changed, &listed, 100, || true).expect("restat");
        assert_eq!(names(quiet), [(b"reported".to_vec(), true)]);
        let busy = restat(&Root::Host, &real, &changed, &listed, 100, || false).expect("restat");
        assert_eq!(
            names(busy),
            [
                (b"gone".to_vec(), false),
                (b"reported".to_vec(), true),
                (b"unreported".to_vec(), true)
            ]
        );
    }
}
