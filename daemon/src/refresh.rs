//! Reading the filesystem: resolving a path one component at a time and
//! listing a directory with `getdents64` plus one `fstatat` per entry.
//!
//! Resolution is done by hand, not with `realpath`, for two reasons: the
//! peer policy needs the mode and owner of every directory the kernel would
//! search (including those reached through symlinks), and freshness needs to
//! know every `dir/name` the answer depends on. Before each lookup and
//! before listing, the [`Observer`] is told, so that a watch is in place
//! before the filesystem is read: a change made after that point always
//! produces an inotify event.
//!
//! Entries are stat'ed with `statx`-family system calls or batched
//! `IORING_OP_STATX` ([`uring`]), chosen per filesystem by measurement
//! ([`engine`]); resolution stays synchronous.

pub mod engine;
pub mod uring;

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use crate::openat2::{openat2, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};
use crate::policy::{Access, DirFacts};
use engine::{Engines, Filesystem, Plan, Used};

/// Symlinks followed while resolving one path before giving up, as Linux's
/// MAXSYMLINKS.
const MAX_SYMLINKS: u32 = 40;
/// `getdents64` buffer: large enough that a typical directory is one call.
const GETDENTS_BUFFER: usize = 64 * 1024;
const ACL_XATTR: &CStr = c"system.posix_acl_access";

/// The `stat()` values that import machinery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub mode: u32,
    pub mtime_ns: i64,
    pub size: u64,
}

impl Fingerprint {
    fn of(st: &libc::stat) -> Self {
        Self {
            mode: st.st_mode,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            size: st.st_size as u64,
        }
    }
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
}

/// Told before the filesystem is read, so the reader's watches come first.
/// An error aborts the crawl with that refusal.
pub trait Observer {
    /// `dir` (a real path: no symlinks) is about to be searched for `name`.
    fn before_lookup(&self, dir: &[u8], name: &[u8]) -> Result<(), Refusal>;
    /// The directory at the real path `dir` is about to be listed; `polled`:
    /// it lives on a filesystem inotify cannot see.
    fn before_listing(&self, dir: &[u8], polled: bool) -> Result<(), Refusal>;
}

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// The refusal stays true until inotify reports a change, so the index
    /// may keep it; otherwise the next request tries again.
    pub lasting: bool,
}

impl Refusal {
    pub fn lasting(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            lasting: true,
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            lasting: false,
        }
    }
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
    /// Names of the entries that are symlinks: their fingerprints are their
    /// targets' (see `crate::targets`).
    pub links: Vec<Bytes>,
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

/// Resolves `path` (absolute, canonical) and lists the directory it names.
pub fn crawl(
    path: &[u8],
    observer: &dyn Observer,
    max_entries: usize,
    engines: &Engines,
) -> Outcome {
    match resolve(path, observer) {
        Ok(resolved) => list(resolved, observer, max_entries, engines),
        Err(outcome) => outcome,
    }
}

struct Resolved {
    real: Vec<u8>,
    searched: Vec<DirFacts>,
    /// The directory `real` named when it was reached (`O_PATH`): listed
    /// through this descriptor, never by path again.
    dir: OwnedFd,
}

/// Walks `path` from `/`, following symlinks the way the kernel does.
///
/// One component at a time through descriptors: each directory is opened
/// (`O_PATH | O_NOFOLLOW`) relative to the descriptor of the one before it,
/// and its facts come from `fstat` of that descriptor. The facts the peer
/// policy checks are therefore those of the very directories the listing is
/// read through: a component swapped for a symlink (or another directory)
/// after it was looked at makes the walk fail or come back `Raced`, never
/// list what the swap points to under the facts of what was there before.
fn resolve(path: &[u8], observer: &dyn Observer) -> Result<Resolved, Outcome> {
    let mut pending: VecDeque<Vec<u8>> = components(path).collect();
    let mut real = b"/".to_vec();
    let mut searched = Vec::new();
    let (mut dir, mut current) =
        open_root().map_err(|error| refused_by(&error, &real, &searched))?;
    let mut symlinks = 0;
    while let Some(name) = pending.pop_front() {
        if name == b"." {
            continue;
        }
        searched.push(current);
        if name == b".." {
            real = parent_of(&real).to_vec();
            (dir, current) = open_step(&dir, c"..", &real, &searched)?;
            continue;
        }
        observer
            .before_lookup(&real, &name)
            .map_err(|refusal| refused(refusal, &searched))?;
        let location = join(&real, &name);
        // Components come from a canonical path or a symlink target: no
        // NUL byte can be in them, but a name that has one does not exist.
        let Ok(c_name) = CString::new(name) else {
            return Err(Outcome::Absent {
                errno: libc::ENOENT,
                access: only_searched(&searched),
            });
        };
        let st = match fstatat(&dir, &c_name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(error) => return Err(lookup_failed(&error, &real, &searched)),
        };
        if is_symlink(&st) {
            symlinks += 1;
            if symlinks > MAX_SYMLINKS {
                return Err(refused(
                    Refusal::lasting("too many levels of symbolic links"),
                    &searched,
                ));
            }
            let target = match readlinkat(&dir, &c_name) {
                Ok(target) => target,
                // No longer a symlink: it changed since the lstat.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(raced(&searched))
                }
                Err(error) => return Err(lookup_failed(&error, &real, &searched)),
            };
            // A relative target continues from the directory holding the link.
            if target.starts_with(b"/") {
                real = b"/".to_vec();
                (dir, current) = open_root().map_err(|e| refused_by(&e, &real, &searched))?;
            }
            for component in components(&target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(component);
            }
        } else if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            (dir, current) = open_step(&dir, &c_name, &location, &searched)?;
            real = location;
        } else if pending.iter().all(|c| c == b".") {
            return Err(refused(Refusal::lasting("not a directory"), &searched));
        } else {
            return Err(Outcome::Absent {
                errno: libc::ENOTDIR,
                access: only_searched(&searched),
            });
        }
    }
    Ok(Resolved {
        real,
        searched,
        dir,
    })
}

/// `/`, opened `O_PATH`, and its facts.
fn open_root() -> io::Result<(OwnedFd, DirFacts)> {
    // SAFETY: a valid C string; the descriptor is owned right below.
    let fd = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    let root = unsafe { OwnedFd::from_raw_fd(fd) };
    let facts = facts_of_fd(&root, b"/")?;
    Ok((root, facts))
}

/// The directory `name` in `dir` (`O_PATH`, not following a symlink) and
/// its facts, read from the descriptor itself. Whatever is not a directory
/// any more (swapped for a symlink or a file since it was looked at) is
/// `Raced`: the crawl starts again.
fn open_step(
    dir: &OwnedFd,
    name: &CStr,
    location: &[u8],
    searched: &[DirFacts],
) -> Result<(OwnedFd, DirFacts), Outcome> {
    // SAFETY: an open directory descriptor and a valid C string; the
    // descriptor returned is owned right below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => raced(searched),
            _ => refused_by(&error, location, searched),
        });
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    let next = unsafe { OwnedFd::from_raw_fd(fd) };
    match facts_of_fd(&next, location) {
        Ok(facts) if facts.mode & libc::S_IFMT == libc::S_IFDIR => Ok((next, facts)),
        Ok(_) => Err(raced(searched)),
        Err(error) => Err(refused_by(&error, location, searched)),
    }
}

/// The target of the symlink `name` in `dir`.
fn readlinkat(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; 256];
    loop {
        // SAFETY: an open directory descriptor, a valid C string and a
        // buffer of `buffer.len()` bytes.
        let len = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = len as usize;
        if len < buffer.len() {
            buffer.truncate(len);
            return Ok(buffer);
        }
        // Possibly truncated: a larger buffer (PATH_MAX bounds a target).
        if buffer.len() >= 64 * 1024 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buffer.resize(buffer.len() * 4, 0);
    }
}

/// Lists the resolved directory.
fn list(
    resolved: Resolved,
    observer: &dyn Observer,
    max_entries: usize,
    engines: &Engines,
) -> Outcome {
    let Resolved {
        real,
        searched,
        dir: reached,
    } = resolved;
    let polled =
        statfs_magic(&real).is_ok_and(|magic| engines.is_polled(Filesystem { device: 0, magic }));
    if let Err(refusal) = observer.before_listing(&real, polled) {
        return refused(refusal, &searched);
    }
    // The directory the walk reached, whatever `real` names by now: its
    // facts (below) are read from the descriptor that is listed.
    let dir = match reopen_for_reading(&reached) {
        Ok(dir) => dir,
        Err(error) => return open_failed(&error, &real, &searched),
    };
    let filesystem = match Filesystem::of(&dir) {
        Ok(filesystem) => filesystem,
        Err(error) => return refused_by(&error, &real, &searched),
    };
    let st = match fstat(&dir) {
        Ok(st) => st,
        Err(error) => return refused_by(&error, &real, &searched),
    };
    let listed_facts = DirFacts {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        has_acl: fd_has_acl(&dir),
    };
    let (entries, used, links) = match read_entries(&dir, max_entries, engines, filesystem) {
        Ok(read) => read,
        Err(ReadError::TooMany) => {
            return refused(
                Refusal::lasting(format!(
                "directory has more than {max_entries} entries (limit max_entries_per_directory)"
            )),
                &searched,
            )
        }
        // Removed since it was opened: the next attempt finds it absent.
        Err(ReadError::Io(error)) if vanished(&error) => return raced(&searched),
        Err(ReadError::Io(error)) => return refused_by(&error, &real, &searched),
    };
    Outcome::Listed(Box::new(Listed {
        real: Bytes::from(real),
        stat: Fingerprint::of(&st),
        entries,
        access: Access {
            searched,
            listed: Some(listed_facts),
        },
        used,
        links,
        device: filesystem.device,
    }))
}

/// `statfs` of a path: its filesystem's magic.
fn statfs_magic(path: &[u8]) -> io::Result<i64> {
    let c_path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero statfs is valid to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and out pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } < 0 {
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
    /// Per name, its entry, or `None` when it is gone.
    pub names: Vec<(Bytes, Option<Entry>)>,
    /// Those of `names` that are symlinks now.
    pub links: Vec<Bytes>,
}

/// The directory at the real path `real`, listed again synchronously (the
/// background check of polled directories).
pub fn relist(real: &[u8], max_entries: usize) -> io::Result<(Fingerprint, Vec<Entry>)> {
    let dir = open_directory(real)?;
    let st = fstat(&dir)?;
    let names = read_names(&dir, max_entries).map_err(|error| match error {
        ReadError::TooMany => io::Error::from_raw_os_error(libc::EFBIG),
        ReadError::Io(error) => error,
    })?;
    let stats = stat_sync(&dir, &names, &names.records)?;
    let mut entries: Vec<Entry> = names
        .records
        .iter()
        .zip(stats)
        .filter_map(|(record, stat)| {
            stat.map(|(kind, stat)| Entry {
                name: Bytes::copy_from_slice(&names.arena[record.start..record.start + record.len]),
                kind,
                stat,
            })
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok((Fingerprint::of(&st), entries))
}

/// Re-reads `names` in the directory at the real path `real`.
pub fn restat(real: &[u8], names: &[Bytes]) -> io::Result<Restat> {
    let dir = open_directory(real)?;
    let st = fstat(&dir)?;
    let mut found = Vec::with_capacity(names.len());
    let mut links = Vec::new();
    for name in names {
        // A name with a NUL byte cannot exist.
        let entry = match CString::new(name.as_ref()) {
            Ok(c_name) => stat_entry_and_link(&dir, &c_name, libc::DT_UNKNOWN)?.map(
                |(kind, stat, is_link)| {
                    if is_link {
                        links.push(name.clone());
                    }
                    Entry {
                        name: name.clone(),
                        kind,
                        stat,
                    }
                },
            ),
            Err(_) => None,
        };
        found.push((name.clone(), entry));
    }
    Ok(Restat {
        stat: Fingerprint::of(&st),
        names: found,
        links,
    })
}

enum ReadError {
    TooMany,
    Io(io::Error),
}

/// Every entry of an open directory, stat'ed and sorted, and the names of
/// those that are symlinks.
fn read_entries(
    dir: &OwnedFd,
    max_entries: usize,
    engines: &Engines,
    filesystem: Filesystem,
) -> Result<(Vec<Entry>, Used, Vec<Bytes>), ReadError> {
    let names = read_names(dir, max_entries)?;
    let (stats, used) = stat_records(dir, &names, engines, filesystem).map_err(ReadError::Io)?;
    engines.crawled(filesystem, used);
    let is_link: Vec<bool> = names
        .records
        .iter()
        .map(|record| match record.d_type {
            libc::DT_LNK => true,
            // Filesystems that do not fill d_type: one lstat more.
            libc::DT_UNKNOWN => name_of(&names, record)
                .and_then(|name| fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW))
                .is_ok_and(|st| is_symlink(&st)),
            _ => false,
        })
        .collect();
    let arena = Bytes::from(names.arena);
    let links: Vec<Bytes> = names
        .records
        .iter()
        .zip(&is_link)
        .zip(&stats)
        .filter(|((_, link), stat)| **link && stat.is_some())
        .map(|((record, _), _)| arena.slice(record.start..record.start + record.len))
        .collect();
    let mut entries: Vec<Entry> = names
        .records
        .iter()
        .zip(stats)
        // A name that vanished since getdents is simply not listed: its
        // deletion event follows and removes nothing.
        .filter_map(|(record, stat)| {
            stat.map(|(kind, stat)| Entry {
                name: arena.slice(record.start..record.start + record.len),
                kind,
                stat,
            })
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok((entries, used, links))
}

/// One entry's kind and fingerprint, `None` when it vanished.
type EntryStat = Option<(Kind, Fingerprint)>;

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
        .map(|record| stat_entry(dir, name_of(names, record)?, record.d_type))
        .collect()
}

/// The same as [`stat_sync`] through io_uring: one `statx` (following
/// symlinks) per entry; entries whose `d_type` is unknown are finished
/// synchronously (they need an `lstat` first).
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
    let results = uring.statx_all(dir.as_raw_fd(), &c_names, 0)?;
    records
        .iter()
        .zip(results)
        .zip(&c_names)
        .map(|((record, result), name)| {
            let is_link = match record.d_type {
                libc::DT_LNK => true,
                libc::DT_UNKNOWN => return stat_entry(dir, name, record.d_type),
                _ => false,
            };
            match result {
                Ok(stx) => Ok(Some(classify_mode(
                    stx.stx_mode.into(),
                    fingerprint_of_statx(&stx),
                    is_link,
                ))),
                Err(_) if is_link => Ok(Some((Kind::Other, Fingerprint::default()))),
                Err(libc::ENOENT | libc::ENOTDIR) => Ok(None),
                Err(errno) => Err(io::Error::from_raw_os_error(errno)),
            }
        })
        .collect::<io::Result<_>>()
        .map_err(uring::UringError::Submit)
}

fn fingerprint_of_statx(stx: &libc::statx) -> Fingerprint {
    Fingerprint {
        mode: u32::from(stx.stx_mode),
        mtime_ns: stx.stx_mtime.tv_sec * 1_000_000_000 + i64::from(stx.stx_mtime.tv_nsec),
        size: stx.stx_size,
    }
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
    d_type: u8,
}

fn read_names(dir: &OwnedFd, max_entries: usize) -> Result<Names, ReadError> {
    let mut names = Names {
        arena: Vec::new(),
        records: Vec::new(),
    };
    let mut buffer = vec![0u8; GETDENTS_BUFFER];
    loop {
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
            return Err(ReadError::Io(io::Error::last_os_error()));
        }
        if read == 0 {
            return Ok(names);
        }
        parse_dirents(&buffer[..read as usize], &mut names);
        if names.records.len() > max_entries {
            return Err(ReadError::TooMany);
        }
    }
}

/// Appends the records of one `getdents64` buffer (`struct linux_dirent64`:
/// u64 ino, i64 off, u16 reclen, u8 type, NUL-terminated name), skipping
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
        let d_type = buffer[offset + 18];
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
                d_type,
            });
            names.arena.extend_from_slice(name);
            names.arena.push(0);
        }
        offset += reclen;
    }
}

/// `stat()` of one entry: its kind after following symlinks and its
/// fingerprint. `None` when the name no longer exists. The extra
/// `AT_SYMLINK_NOFOLLOW` call is made only when `d_type` does not already
/// say whether the entry is a symlink.
fn stat_entry(dir: &OwnedFd, name: &CStr, d_type: u8) -> io::Result<Option<(Kind, Fingerprint)>> {
    Ok(stat_entry_and_link(dir, name, d_type)?.map(|(kind, stat, _)| (kind, stat)))
}

/// [`stat_entry`], also telling whether the entry is a symlink.
fn stat_entry_and_link(
    dir: &OwnedFd,
    name: &CStr,
    d_type: u8,
) -> io::Result<Option<(Kind, Fingerprint, bool)>> {
    let is_link = match d_type {
        libc::DT_LNK => true,
        libc::DT_UNKNOWN => match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if !is_symlink(&st) => {
                let (kind, stat) = classify(&st, false);
                return Ok(Some((kind, stat, false)));
            }
            Ok(_) => true,
            Err(error) if vanished(&error) => return Ok(None),
            Err(error) => return Err(error),
        },
        _ => false,
    };
    match fstatat(dir, name, 0) {
        Ok(st) => {
            let (kind, stat) = classify(&st, is_link);
            Ok(Some((kind, stat, is_link)))
        }
        // A dangling or looping symlink (or one we may not follow): OTHER.
        Err(_) if is_link => Ok(Some((Kind::Other, Fingerprint::default(), true))),
        Err(error) if vanished(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

fn classify(st: &libc::stat, through_link: bool) -> (Kind, Fingerprint) {
    classify_mode(st.st_mode, Fingerprint::of(st), through_link)
}

fn classify_mode(mode: u32, fingerprint: Fingerprint, through_link: bool) -> (Kind, Fingerprint) {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR if through_link => Kind::SymlinkDir,
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::Other,
    };
    (kind, fingerprint)
}

fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn vanished(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

fn refused(refusal: Refusal, searched: &[DirFacts]) -> Outcome {
    Outcome::Refused {
        refusal,
        access: only_searched(searched),
    }
}

fn raced(searched: &[DirFacts]) -> Outcome {
    Outcome::Raced {
        access: only_searched(searched),
    }
}

fn only_searched(searched: &[DirFacts]) -> Access {
    Access {
        searched: searched.to_vec(),
        listed: None,
    }
}

/// A refusal for an unexpected error while reading `path`.
fn refused_by(error: &io::Error, path: &[u8], searched: &[DirFacts]) -> Outcome {
    let reason = format!("cannot read {}: {error}", path.escape_ascii());
    let lasting = matches!(
        error.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::ENAMETOOLONG | libc::ELOOP)
    );
    refused(Refusal { reason, lasting }, searched)
}

/// `lstat` of a name in `dir` failed.
fn lookup_failed(error: &io::Error, dir: &[u8], searched: &[DirFacts]) -> Outcome {
    match error.raw_os_error() {
        Some(errno @ (libc::ENOENT | libc::ENOTDIR)) => Outcome::Absent {
            errno,
            access: only_searched(searched),
        },
        _ => refused_by(error, dir, searched),
    }
}

/// Opening the resolved directory failed.
fn open_failed(error: &io::Error, real: &[u8], searched: &[DirFacts]) -> Outcome {
    if vanished(error) {
        raced(searched)
    } else {
        refused_by(error, real, searched)
    }
}

/// Mode, owner and ACL presence of an open directory (`O_PATH` is enough);
/// `real` is its path, for the ACL when `/proc` is not mounted.
fn facts_of_fd(dir: &OwnedFd, real: &[u8]) -> io::Result<DirFacts> {
    let st = fstat(dir)?;
    Ok(DirFacts {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        has_acl: path_fd_has_acl(dir, real),
    })
}

/// [`fd_has_acl`] for an `O_PATH` descriptor, which `fgetxattr` refuses:
/// through its `/proc/self/fd` link (the descriptor's own inode). Without
/// `/proc`, by path.
fn path_fd_has_acl(dir: &OwnedFd, real: &[u8]) -> bool {
    let Ok(link) = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return true;
    };
    // SAFETY: valid C strings; a NULL buffer of size 0 asks for the size only.
    let size =
        unsafe { libc::getxattr(link.as_ptr(), ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        return has_acl(real);
    }
    acl_present(size)
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

/// Whether a path carries a POSIX access ACL. An error other than "no such
/// attribute" or "not supported" counts as an ACL: that only refuses more.
fn has_acl(path: &[u8]) -> bool {
    let Ok(c_path) = CString::new(path) else {
        return true;
    };
    // SAFETY: valid C strings; a NULL buffer of size 0 asks for the size only.
    let size =
        unsafe { libc::lgetxattr(c_path.as_ptr(), ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    acl_present(size)
}

fn fd_has_acl(dir: &OwnedFd) -> bool {
    // SAFETY: an open descriptor and a valid C string; size query only.
    let size =
        unsafe { libc::fgetxattr(dir.as_raw_fd(), ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    acl_present(size)
}

fn acl_present(getxattr_result: isize) -> bool {
    if getxattr_result >= 0 {
        return true;
    }
    !matches!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA | libc::ENOTSUP)
    )
}

/// The directory at the real path `real` (no symlink in it, by
/// construction), opened for reading without following any symlink: a
/// component swapped for one since `real` was resolved fails (`ELOOP`)
/// instead of reading whatever it points to. Kernels without openat2
/// (before 5.6) refuse a symlink in the last component only.
fn open_directory(real: &[u8]) -> io::Result<OwnedFd> {
    let c_path = CString::new(real).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    match openat2(libc::AT_FDCWD, &c_path, flags, resolve) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            // SAFETY: a valid C string; the descriptor is owned right below.
            let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_NOFOLLOW) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is fresh and owned by nothing else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        opened => opened,
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory descriptor, a valid C string, an out pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Path components, without empty ones (`a//b`, a leading or trailing `/`).
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

/// `dir/name`, with no doubled slash after `/`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// The lexical parent of a canonical absolute path (`/` for `/`).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(slash) => &path[..slash],
    }
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

    impl Observer for Recorder {
        fn before_lookup(&self, dir: &[u8], name: &[u8]) -> Result<(), Refusal> {
            self.lookups.borrow_mut().push(join(dir, name));
            Ok(())
        }
        fn before_listing(&self, dir: &[u8], _polled: bool) -> Result<(), Refusal> {
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

    impl Observer for Swapper {
        fn before_lookup(&self, _dir: &[u8], name: &[u8]) -> Result<(), Refusal> {
            if self.at_lookup_of == Some(name) {
                self.swap();
            }
            Ok(())
        }
        fn before_listing(&self, _dir: &[u8], _polled: bool) -> Result<(), Refusal> {
            if self.at_lookup_of.is_none() {
                self.swap();
            }
            Ok(())
        }
    }

    /// Removes the directory about to be listed.
    struct Remover;

    impl Observer for Remover {
        fn before_lookup(&self, _dir: &[u8], _name: &[u8]) -> Result<(), Refusal> {
            Ok(())
        }
        fn before_listing(&self, dir: &[u8], _polled: bool) -> Result<(), Refusal> {
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
        match crawl(&path, &Remover, 100, &engines()) {
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
            let outcome = crawl(&bytes_of(&public.join("inner")), &swapper, 100, &engines());
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
    fn join_and_parent() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/a", b"b"), b"/a/b");
        assert_eq!(parent_of(b"/a/b"), b"/a");
        assert_eq!(parent_of(b"/a"), b"/");
        assert_eq!(parent_of(b"/"), b"/");
    }

    #[test]
    fn crawl_lists_sorted_entries_through_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("b.py"), b"x = 1\n").expect("write");
        std::fs::create_dir(real.join("a")).expect("mkdir");
        symlink(tmp.path().join("missing"), real.join("c")).expect("symlink");
        symlink("real", tmp.path().join("link")).expect("symlink");
        let recorder = Recorder::default();
        let Outcome::Listed(listed) = crawl(
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
        assert_eq!(listed.entries[2].kind, Kind::Other);
        assert_eq!(listed.entries[2].stat.mode, 0);
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
        let limited = crawl(&bytes_of(&dir), &recorder, 2, &engines());
        assert!(
            matches!(&limited, Outcome::Refused { refusal, .. } if refusal.reason.contains("more than 2 entries"))
        );
    }
}
