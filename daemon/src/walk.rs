//! The one path walker: every path the daemon resolves for a peer (an
//! indexed directory, a symlink entry's target, the directory of a compiled
//! file) is resolved here, the way the kernel would, one component at a
//! time through descriptors.
//!
//! Each directory is opened (`O_PATH | O_NOFOLLOW`) relative to the
//! descriptor of the one before it, and its facts come from `fstat` of that
//! descriptor. So the facts the policy checks are those of the very
//! directories the walk went through: a component swapped for a symlink
//! after it was looked at makes the walk fail or come back `Raced`, never
//! continue under the facts of what was there before.
//!
//! Before each lookup the [`Observer`] is told (with the facts of the
//! directory about to be searched), so that a watch can be in place before
//! the filesystem is read, and so that a walk made for a peer stops at the
//! first directory that peer could not search itself.
//!
//! A walk begins at a [`Root`]: the daemon's own `/`, or a peer's view (the
//! root directory that peer passed at connect, see `crate::views`). In a
//! view, paths resolve as `openat2(RESOLVE_IN_ROOT)` would resolve them:
//! absolute symlinks restart at the view's root and `..` never goes above
//! it, so a peer's paths mean what they mean in its own mount namespace.
//!
//! Kernel interface filesystems are never walked into: `/proc` answers by
//! rules other than mode bits (`hidepid`, ptrace checks), and its symlinks
//! are magic (`/proc/PID/cwd`, `/proc/self`) — followed by the daemon they
//! would resolve with the daemon's privileges and in the daemon's process.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use crate::openat2::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};
use crate::policy::Facts;

/// Symlinks followed in one walk before giving up, as Linux's MAXSYMLINKS.
pub const MAX_SYMLINKS: u32 = 40;
/// Names looked up in one walk, symlink targets included. Bounds what one
/// request can make the daemon do and remember for one path (a chain of
/// 2,000 one-letter directories fits in PATH_MAX).
pub const MAX_LOOKUPS: usize = 256;

/// Filesystems that are kernel interfaces, not files: never walked into.
const INTERFACE_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9FA0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6E73_6673, "nsfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_E0EB, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xCAFE_4A11, "bpf"),
    (0x1CD1, "devpts"),
    (0x6165_676C, "pstore"),
    (0xDE5E_81E4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x4249_4E4D, "binfmt_misc"),
    (0x1980_0202, "mqueue"),
];

/// Told before the filesystem is read. An error stops the walk with that
/// refusal.
pub trait Observer {
    /// `dir` (a real path: no symlinks), whose facts are `facts`, is about
    /// to be searched for `name`.
    fn before_lookup(&self, dir: &[u8], facts: &Facts, name: &[u8]) -> Result<(), Refusal>;
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

/// Where a walk ended.
#[derive(Debug)]
pub struct Walked {
    /// The real path reached (every symlink resolved).
    pub real: Vec<u8>,
    /// Facts of every directory searched on the way (the kernel wants
    /// search permission on each).
    pub searched: Vec<Facts>,
    /// What was reached, opened `O_PATH`: read through this descriptor,
    /// never by path again.
    pub fd: OwnedFd,
    /// `fstat` of `fd`.
    pub stat: libc::stat,
}

impl Walked {
    pub fn is_dir(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// The facts of what was reached.
    pub fn facts(&self) -> Facts {
        Facts::of_stat(&self.stat, has_acl(&self.fd))
    }
}

/// Why a walk stopped short. Each carries the facts of the directories
/// searched so far: whatever the daemon says about the stop reaches only a
/// peer that could have searched there itself.
#[derive(Debug)]
pub enum Stop {
    /// The path does not exist: the errno a `stat()` would give.
    Absent { errno: i32, searched: Vec<Facts> },
    Refused {
        refusal: Refusal,
        searched: Vec<Facts>,
    },
    /// Something changed between two steps: walk again.
    Raced { searched: Vec<Facts> },
}

/// Where absolute paths begin: the daemon's own `/`, or a peer's view (a
/// directory descriptor that peer passed; its paths resolve beneath it).
#[derive(Debug, Clone)]
pub enum Root {
    Host,
    View(Arc<OwnedFd>),
}

/// The same root: the host's, or the same view's descriptor.
impl PartialEq for Root {
    fn eq(&self, other: &Root) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Root {}

impl Root {
    pub fn is_host(&self) -> bool {
        matches!(self, Root::Host)
    }

    /// Tells roots apart (0: the host's); equal while both are alive.
    pub fn id(&self) -> usize {
        match self {
            Root::Host => 0,
            Root::View(fd) => Arc::as_ptr(fd) as usize,
        }
    }

    /// A fresh `O_PATH` descriptor of this root.
    fn open(&self) -> io::Result<OwnedFd> {
        match self {
            Root::Host => open_raw(libc::AT_FDCWD, c"/", libc::O_PATH | libc::O_DIRECTORY),
            Root::View(fd) => open_raw(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY),
        }
    }

    /// `real` (absolute, canonical, no symlink in it) opened beneath this
    /// root with `flags` (`O_DIRECTORY` added), following no symlink:
    /// `open_directory` for the host, `openat2(RESOLVE_IN_ROOT |
    /// RESOLVE_NO_SYMLINKS)` below a view's root (no fallback: views need
    /// Linux 5.6).
    pub fn open_directory(&self, real: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        match self {
            Root::Host => open_directory(real, flags),
            Root::View(root) => {
                let flags = flags | libc::O_DIRECTORY | libc::O_CLOEXEC;
                let resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
                openat2(root.as_raw_fd(), &relative(real)?, flags, resolve)
            }
        }
    }

    /// `stat(path)` as a process whose root this is would see it (symlinks
    /// followed, absolute ones from this root).
    pub fn stat(&self, path: &[u8]) -> io::Result<libc::stat> {
        match self {
            Root::Host => {
                let c_path =
                    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: an all-zero stat is valid to be overwritten.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: a valid C string and out pointer.
                if unsafe { libc::stat(c_path.as_ptr(), &mut st) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(st)
            }
            Root::View(root) => {
                let flags = libc::O_PATH | libc::O_CLOEXEC;
                let resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
                let fd = openat2(root.as_raw_fd(), &relative(path)?, flags, resolve)?;
                fstat(&fd)
            }
        }
    }
}

/// An absolute path as one relative to the root it is resolved beneath
/// (`.` for `/`).
fn relative(path: &[u8]) -> io::Result<CString> {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    let rest = if rest.is_empty() {
        b".".as_slice()
    } else {
        rest
    };
    CString::new(rest).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Where a walk begins: a directory, its real path and its facts.
pub struct Start {
    root: Root,
    fd: OwnedFd,
    real: Vec<u8>,
    facts: Facts,
}

impl Start {
    /// `/` of `root`.
    pub fn root(root: &Root) -> io::Result<Start> {
        let fd = root.open()?;
        let stat = fstat(&fd)?;
        let facts = Facts::of_stat(&stat, has_acl(&fd));
        Ok(Start {
            root: root.clone(),
            fd,
            real: b"/".to_vec(),
            facts,
        })
    }

    /// The directory at the real path `real` (no symlink may be in it: one
    /// swapped in since `real` was resolved fails with `ELOOP`). Its own
    /// facts count as searched by the walks that start here; those of its
    /// ancestors do not (the caller holds them).
    pub fn directory(root: &Root, real: &[u8]) -> io::Result<Start> {
        let fd = root.open_directory(real, libc::O_PATH)?;
        let stat = fstat(&fd)?;
        let facts = Facts::of_stat(&stat, has_acl(&fd));
        Ok(Start {
            root: root.clone(),
            fd,
            real: real.to_vec(),
            facts,
        })
    }
}

/// Resolves `path` from `start` (`path` relative to it; a leading `/` or an
/// absolute symlink target goes back to the root's `/`).
pub fn walk(start: Start, path: &[u8], observer: &dyn Observer) -> Result<Walked, Stop> {
    let mut walker = Walker {
        root: start.root,
        pending: components(path).collect(),
        real: start.real,
        dir: start.fd,
        current: start.facts,
        searched: Vec::new(),
        symlinks: 0,
        lookups: 0,
    };
    if path.starts_with(b"/") && walker.real.as_slice() != b"/" {
        walker.restart_at_root()?;
    }
    walker.run(observer)
}

struct Walker {
    root: Root,
    pending: VecDeque<Vec<u8>>,
    real: Vec<u8>,
    /// The directory `real` names, as reached.
    dir: OwnedFd,
    current: Facts,
    searched: Vec<Facts>,
    symlinks: u32,
    lookups: usize,
}

impl Walker {
    fn run(mut self, observer: &dyn Observer) -> Result<Walked, Stop> {
        while let Some(name) = self.pending.pop_front() {
            if name == b"." {
                continue;
            }
            self.searched.push(self.current);
            if name == b".." {
                self.up()?;
                continue;
            }
            self.lookups += 1;
            if self.lookups > MAX_LOOKUPS {
                return Err(self.refused(Refusal::lasting(format!(
                    "more than {MAX_LOOKUPS} names to look up (a chain of symlinks or directories that deep is not served)"
                ))));
            }
            observer
                .before_lookup(&self.real, &self.current, &name)
                .map_err(|refusal| self.refused(refusal))?;
            if let Some(walked) = self.lookup(name)? {
                return Ok(walked);
            }
        }
        let stat = fstat(&self.dir).map_err(|e| self.refused_by(&e))?;
        Ok(Walked {
            real: self.real,
            searched: self.searched,
            fd: self.dir,
            stat,
        })
    }

    /// Looks `name` up in the current directory and moves on; `Some` when
    /// it is the end of the walk (a file).
    fn lookup(&mut self, name: Vec<u8>) -> Result<Option<Walked>, Stop> {
        let location = join(&self.real, &name);
        // Components come from a canonical path or a symlink target: no NUL
        // byte can be in them, but a name that has one does not exist.
        let Ok(c_name) = CString::new(name) else {
            return Err(self.absent(libc::ENOENT));
        };
        let st = match fstatat(&self.dir, &c_name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(error) => return Err(self.lookup_failed(&error)),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => self.follow(&c_name).map(|()| None),
            libc::S_IFDIR => self.step(&c_name, location).map(|()| None),
            _ if self.pending.iter().all(|c| c == b".") => self.reach_file(&c_name, location),
            _ => Err(self.absent(libc::ENOTDIR)),
        }
    }

    /// Continues with the target of the symlink `name`.
    fn follow(&mut self, name: &CStr) -> Result<(), Stop> {
        self.symlinks += 1;
        if self.symlinks > MAX_SYMLINKS {
            return Err(self.refused(Refusal::lasting("too many levels of symbolic links")));
        }
        let target = match readlinkat(&self.dir, name) {
            Ok(target) => target,
            // No longer a symlink: it changed since the lstat.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Err(self.raced()),
            Err(error) => return Err(self.lookup_failed(&error)),
        };
        if target.starts_with(b"/") {
            self.restart_at_root()?;
        }
        for component in components(&target).collect::<Vec<_>>().into_iter().rev() {
            self.pending.push_front(component);
        }
        Ok(())
    }

    /// `..`: the lexical parent (the real path has no symlink in it). At
    /// the root it stays there. In a view the parent is opened again
    /// beneath the view's root, so that a directory moved out of the view
    /// during the walk cannot lead the walk out with it.
    fn up(&mut self) -> Result<(), Stop> {
        if self.real.as_slice() == b"/" {
            return Ok(());
        }
        let parent = parent_of(&self.real).to_vec();
        if self.root.is_host() {
            self.real = parent.clone();
            return self.step(c"..", parent);
        }
        match self.root.open_directory(&parent, libc::O_PATH) {
            Ok(next) => self.enter(next, parent),
            Err(error) if vanished(&error) => Err(self.raced()),
            Err(error) => Err(self.refused_by(&error)),
        }
    }

    fn restart_at_root(&mut self) -> Result<(), Stop> {
        let root = Start::root(&self.root).map_err(|e| self.refused_by(&e))?;
        self.real = root.real;
        self.dir = root.fd;
        self.current = root.facts;
        Ok(())
    }

    /// Into the directory `name` (now at `location`). Whatever is not a
    /// directory any more (swapped since it was looked at) is `Raced`.
    fn step(&mut self, name: &CStr, location: Vec<u8>) -> Result<(), Stop> {
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let next = match open_raw(self.dir.as_raw_fd(), name, flags) {
            Ok(next) => next,
            Err(error) => {
                return Err(match error.raw_os_error() {
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => self.raced(),
                    _ => self.refused_by(&error),
                })
            }
        };
        self.enter(next, location)
    }

    /// Makes the directory `next` (opened `O_PATH`, now at `location`) the
    /// current one, with its facts. Whatever is not a directory any more
    /// is `Raced`; a kernel interface filesystem is refused.
    fn enter(&mut self, next: OwnedFd, location: Vec<u8>) -> Result<(), Stop> {
        let st = fstat(&next).map_err(|e| self.refused_by(&e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(self.raced());
        }
        let facts = Facts::of_stat(&st, has_acl(&next));
        if facts.dev != self.current.dev {
            refuse_interface_filesystem(&next).map_err(|refusal| self.refused(refusal))?;
        }
        self.dir = next;
        self.current = facts;
        self.real = location;
        Ok(())
    }

    /// The walk ends on a file (or fifo, socket, device): opened `O_PATH`
    /// without following, so its facts are those of what was looked up.
    fn reach_file(&mut self, name: &CStr, location: Vec<u8>) -> Result<Option<Walked>, Stop> {
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let fd = match open_raw(self.dir.as_raw_fd(), name, flags) {
            Ok(fd) => fd,
            Err(error) if vanished(&error) => return Err(self.raced()),
            Err(error) => return Err(self.refused_by(&error)),
        };
        let stat = fstat(&fd).map_err(|e| self.refused_by(&e))?;
        if stat.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(self.raced());
        }
        Ok(Some(Walked {
            real: location,
            searched: std::mem::take(&mut self.searched),
            fd,
            stat,
        }))
    }

    fn refused(&self, refusal: Refusal) -> Stop {
        Stop::Refused {
            refusal,
            searched: self.searched.clone(),
        }
    }

    fn raced(&self) -> Stop {
        Stop::Raced {
            searched: self.searched.clone(),
        }
    }

    fn absent(&self, errno: i32) -> Stop {
        Stop::Absent {
            errno,
            searched: self.searched.clone(),
        }
    }

    /// A refusal for an unexpected error while reading the current path.
    fn refused_by(&self, error: &io::Error) -> Stop {
        self.refused(refusal_for(error, &self.real))
    }

    /// `lstat` (or `readlink`) of a name in the current directory failed.
    fn lookup_failed(&self, error: &io::Error) -> Stop {
        match error.raw_os_error() {
            Some(errno @ (libc::ENOENT | libc::ENOTDIR)) => self.absent(errno),
            _ => self.refused_by(error),
        }
    }
}

/// A refusal for an unexpected error while reading `path`: lasting when
/// only a change (that inotify reports) can lift it.
pub fn refusal_for(error: &io::Error, path: &[u8]) -> Refusal {
    let reason = format!("cannot read {}: {error}", path.escape_ascii());
    let lasting = matches!(
        error.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::ENAMETOOLONG | libc::ELOOP)
    );
    Refusal { reason, lasting }
}

/// Refuses a directory on a kernel interface filesystem (checked when a walk
/// crosses into another mount, so it costs one `fstatfs` per crossing).
fn refuse_interface_filesystem(dir: &OwnedFd) -> Result<(), Refusal> {
    // SAFETY: an all-zero statfs is valid to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a valid out pointer.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) } < 0 {
        return Err(refusal_for(&io::Error::last_os_error(), b"a mount point"));
    }
    match INTERFACE_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == fs.f_type as i64)
    {
        Some((_, name)) => Err(Refusal::lasting(format!(
            "{name} is a kernel interface, not files: not served"
        ))),
        None => Ok(()),
    }
}

/// `openat(dir, name, flags | O_CLOEXEC)`.
fn open_raw(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a descriptor (or AT_FDCWD) and a valid C string; the
    // descriptor returned is owned right below.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory at the real path `real` (no symlink in it, by
/// construction), opened with `flags` without following any symlink: a
/// component swapped for one since `real` was resolved fails (`ELOOP`)
/// instead of reaching whatever it points to. Kernels without openat2
/// (before 5.6) refuse a symlink in the last component only.
pub fn open_directory(real: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = CString::new(real).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = flags | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    match openat2(libc::AT_FDCWD, &c_path, flags, resolve) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            open_raw(libc::AT_FDCWD, &c_path, flags | libc::O_NOFOLLOW)
        }
        opened => opened,
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

pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// `statx` of an open descriptor (`O_PATH` ones included) for `mask`.
pub fn statx(fd: &OwnedFd, mask: libc::c_uint) -> io::Result<libc::statx> {
    // SAFETY: an all-zero statx is valid to be overwritten.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, an empty C string with AT_EMPTY_PATH (the
    // descriptor itself) and an out pointer.
    let stated = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            mask,
            &mut stat,
        )
    };
    if stated < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

pub fn fstatat(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory descriptor, a valid C string, an out pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

const ACL_XATTR: &CStr = c"system.posix_acl_access";

/// Whether the inode behind a descriptor (`O_PATH` ones included) carries a
/// POSIX access ACL. `fgetxattr` refuses `O_PATH` descriptors, so it is
/// asked through the descriptor's `/proc/self/fd` link, which names that
/// very inode. Any doubt counts as an ACL: that only refuses more.
pub fn has_acl(fd: &OwnedFd) -> bool {
    // SAFETY: an open descriptor and a valid C string; size query only.
    let size =
        unsafe { libc::fgetxattr(fd.as_raw_fd(), ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    if size >= 0 || !matches!(last_errno(), libc::EBADF) {
        return acl_present(size);
    }
    let Ok(link) = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return true;
    };
    // SAFETY: valid C strings; a NULL buffer of size 0 asks for the size only.
    let size =
        unsafe { libc::getxattr(link.as_ptr(), ACL_XATTR.as_ptr(), std::ptr::null_mut(), 0) };
    acl_present(size)
}

/// Whether an xattr size query says an ACL is there: a size, or an error
/// other than "none" or "not supported" (which only refuses more).
pub fn acl_present(getxattr_result: isize) -> bool {
    if getxattr_result >= 0 {
        return true;
    }
    !matches!(last_errno(), libc::ENODATA | libc::ENOTSUP)
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub fn vanished(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    /// Records every lookup, refusing nothing.
    #[derive(Default)]
    struct Recorder {
        lookups: RefCell<Vec<Vec<u8>>>,
    }

    impl Observer for Recorder {
        fn before_lookup(&self, dir: &[u8], _: &Facts, name: &[u8]) -> Result<(), Refusal> {
            self.lookups.borrow_mut().push(join(dir, name));
            Ok(())
        }
    }

    fn bytes_of(path: &std::path::Path) -> Vec<u8> {
        path.as_os_str().as_bytes().to_vec()
    }

    fn walk_path(path: &[u8], observer: &dyn Observer) -> Result<Walked, Stop> {
        walk(Start::root(&Root::Host).expect("root"), path, observer)
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
    fn symlinks_are_followed_like_the_kernel_and_every_lookup_is_told() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir_all(root.join("real/pkg")).expect("mkdir");
        std::fs::write(root.join("real/pkg/mod.py"), b"x = 1\n").expect("write");
        symlink("real", root.join("via")).expect("symlink");
        symlink("../via/pkg/mod.py", root.join("real/link.py")).expect("symlink");
        let recorder = Recorder::default();
        let walked = walk_path(&bytes_of(&root.join("real/link.py")), &recorder).expect("walk");
        assert_eq!(walked.real, bytes_of(&root.join("real/pkg/mod.py")));
        assert!(!walked.is_dir());
        assert_eq!(walked.stat.st_size, 6);
        let lookups = recorder.lookups.borrow();
        for expected in ["real/link.py", "via", "real/pkg", "real/pkg/mod.py"] {
            assert!(
                lookups.contains(&bytes_of(&root.join(expected))),
                "{expected}"
            );
        }
        let dir = walk_path(&bytes_of(&root.join("via/pkg")), &Recorder::default()).expect("dir");
        assert!(dir.is_dir());
        assert_eq!(dir.real, bytes_of(&root.join("real/pkg")));
    }

    #[test]
    fn missing_loops_and_deep_chains_stop_with_the_facts_searched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::write(root.join("file"), b"").expect("write");
        symlink("loop", root.join("loop")).expect("symlink");
        let missing = walk_path(&bytes_of(&root.join("nope/deeper")), &Recorder::default());
        match missing {
            Err(Stop::Absent { errno, searched }) => {
                assert_eq!(errno, libc::ENOENT);
                assert_eq!(searched.len(), root.components().count());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            walk_path(&bytes_of(&root.join("file/x")), &Recorder::default()),
            Err(Stop::Absent {
                errno: libc::ENOTDIR,
                ..
            })
        ));
        assert!(matches!(
            walk_path(&bytes_of(&root.join("loop")), &Recorder::default()),
            Err(Stop::Refused { refusal, .. }) if refusal.lasting
        ));
        let deep = "d/".repeat(MAX_LOOKUPS + 1);
        std::fs::create_dir_all(root.join(&deep)).expect("mkdir");
        assert!(matches!(
            walk_path(&bytes_of(&root.join(&deep)), &Recorder::default()),
            Err(Stop::Refused { refusal, .. }) if refusal.reason.contains("more than")
        ));
    }

    #[test]
    fn proc_and_its_magic_links_are_never_walked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        symlink("/proc/self/cwd", tmp.path().join("magic")).expect("symlink");
        for path in [
            b"/proc/self/cwd".to_vec(),
            b"/proc/1".to_vec(),
            b"/dev/fd".to_vec(),
            bytes_of(&tmp.path().join("magic")),
        ] {
            match walk_path(&path, &Recorder::default()) {
                Err(Stop::Refused { refusal, .. }) => {
                    assert!(refusal.reason.contains("proc"), "{}", refusal.reason)
                }
                other => panic!("{}: {other:?}", path.escape_ascii()),
            }
        }
    }

    #[test]
    fn an_observer_refusal_stops_before_the_lookup() {
        struct RefuseInside(Vec<u8>);
        impl Observer for RefuseInside {
            fn before_lookup(&self, dir: &[u8], _: &Facts, _: &[u8]) -> Result<(), Refusal> {
                if dir == self.0.as_slice() {
                    return Err(Refusal::transient("no"));
                }
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir(root.join("inner")).expect("mkdir");
        let stop = walk_path(
            &bytes_of(&root.join("inner/x")),
            &RefuseInside(bytes_of(&root.join("inner"))),
        );
        assert!(matches!(stop, Err(Stop::Refused { refusal, .. }) if refusal.reason == "no"));
    }

    #[test]
    fn in_a_view_absolute_links_restart_at_its_root_and_dot_dot_stops_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        std::fs::write(root.join("usr/lib/m.py"), b"x").expect("write");
        symlink("/usr/lib", root.join("abs")).expect("symlink");
        symlink("../../../../../usr", root.join("usr/lib/up")).expect("symlink");
        let fd = open_directory(&bytes_of(&root), libc::O_PATH).expect("open");
        let view = Root::View(Arc::new(fd));
        for path in [
            &b"/abs/m.py"[..],
            b"/usr/lib/up/lib/m.py",
            b"/../../usr/lib/m.py",
        ] {
            let start = Start::root(&view).expect("root");
            let walked = walk(start, path, &Recorder::default()).expect("walk");
            assert_eq!(walked.real, b"/usr/lib/m.py", "{}", path.escape_ascii());
            assert_eq!(walked.stat.st_size, 1);
        }
        assert!(
            view.stat(b"/abs/m.py").is_ok(),
            "stat follows links in the view"
        );
        assert!(
            view.open_directory(b"/abs", libc::O_PATH).is_err(),
            "no symlink in a real path"
        );
        assert_eq!(
            view.open_directory(b"/usr/lib", libc::O_PATH)
                .map(|_| ())
                .ok(),
            Some(())
        );
    }

    #[test]
    fn a_walk_can_start_at_a_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir(root.join("a")).expect("mkdir");
        std::fs::write(root.join("a/f"), b"abc").expect("write");
        let start = Start::directory(&Root::Host, &bytes_of(&root)).expect("start");
        let walked = walk(start, b"a/f", &Recorder::default()).expect("walk");
        assert_eq!(walked.real, bytes_of(&root.join("a/f")));
        assert_eq!(walked.searched.len(), 2, "the start and a");
        symlink(root.join("a"), root.join("l")).expect("symlink");
        let through_link = Start::directory(&Root::Host, &bytes_of(&root.join("l")));
        assert!(through_link.is_err(), "a start path has no symlinks");
    }
}
