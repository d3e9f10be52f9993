//! Peers in another mount namespace (a container, a Kubernetes pod next to a
//! DaemonSet, a service with `PrivateTmp=`): the same path names other
//! files there, so the daemon must not answer a peer's paths from its own
//! view (DESIGN contract 1: finderd never makes an import fail that stock
//! CPython would satisfy; contract 4: nobody learns what they may not).
//!
//! Per request, the peer's namespace is found out: from
//! `/proc/PID/ns/mnt` when the daemon may read it (same uid, or
//! `CAP_SYS_PTRACE`; a fact beats the client's claim), else from the
//! request's `mount_namespace` (the client's own `st_ino` of
//! `/proc/self/ns/mnt`; 0 from clients that do not send it).
//!
//! - Same namespace (read, or claimed and unverifiable): served as usual.
//! - Another namespace, and `/proc/PID/root` usable: each path is resolved
//!   in the peer's view (`openat2(RESOLVE_IN_ROOT)` below the peer's root,
//!   so absolute symlinks resolve as the peer's kernel would) and in ours;
//!   only the same directory (same `st_dev` and `st_ino`), or a path absent
//!   in both views, is answered. Anything else is NOT_SERVED with the
//!   reason [`REASON`], and the client asks its own filesystem.
//! - Another namespace that cannot be verified: every path NOT_SERVED.
//! - Unknown (the peer's namespace unreadable and the client sent 0: an old
//!   client of another uid): served as before this check existed.
//!
//! The verification needs the filesystem, so it runs on the blocking pool.
//! The view is part of each request's context (`crate::wire`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::openat2::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use crate::policy::PeerInfo;

/// The NOT_SERVED reason for a path that cannot be shown to be the same in
/// the peer's view.
pub const REASON: &str = "peer in another mount namespace";

/// How a request's paths relate to the daemon's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The daemon's own namespace (or unknown: see the module comment).
    Same,
    /// Another namespace; paths are verified through `/proc/PID/root`.
    Other { pid: i32 },
    /// Another namespace the daemon cannot look into.
    Unverifiable,
}

/// The daemon's own mount namespace (`st_ino` of `/proc/self/ns/mnt`; 0 when
/// unreadable).
pub fn own() -> u64 {
    static OWN: OnceLock<u64> = OnceLock::new();
    *OWN.get_or_init(|| namespace_of("/proc/self/ns/mnt").unwrap_or(0))
}

fn namespace_of(path: &str) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// The view of a request from `peer` whose client said `claimed`.
pub fn view_of(peer: &PeerInfo, claimed: u64) -> View {
    let own = own();
    let Some(peer) = peer else {
        return View::Same; // served nothing anyway (policy)
    };
    let actual = peer
        .pid
        .filter(|pid| *pid > 0)
        .and_then(|pid| namespace_of(&format!("/proc/{pid}/ns/mnt")).map(|ns| (pid, ns)));
    match actual {
        Some((_, ns)) if ns == own || own == 0 => View::Same,
        Some((pid, _)) => View::Other { pid },
        None if claimed == 0 || claimed == own => View::Same,
        None => View::Unverifiable,
    }
}

/// What to do with one path of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Screen {
    Pass,
    Refuse,
    /// Verifying needs the filesystem: not on the async worker.
    Later,
}

/// Whether `path` may be answered from the daemon's view for a request in
/// `view`. `may_block`: running on the blocking pool.
pub fn screen(view: View, path: &[u8], may_block: bool) -> Screen {
    match view {
        View::Same => Screen::Pass,
        View::Unverifiable => Screen::Refuse,
        View::Other { .. } if !may_block => Screen::Later,
        View::Other { pid } => {
            if same_in_both_views(pid, path) {
                Screen::Pass
            } else {
                Screen::Refuse
            }
        }
    }
}

/// What `path` is: its device and inode, or why it cannot be stat'ed.
type Identity = Result<(u64, u64), i32>;

/// Whether `path` names the same directory (or nothing) in the daemon's
/// view and in that of process `pid`.
pub fn same_in_both_views(pid: i32, path: &[u8]) -> bool {
    let ours = identity_here(path);
    let theirs = identity_in_root_of(pid, path);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a == b,
        // Absent in both: the daemon's ABSENT answer is the peer's truth.
        (Err(a), Err(b)) => absent(a) && absent(b),
        _ => false,
    }
}

fn absent(errno: i32) -> bool {
    matches!(errno, libc::ENOENT | libc::ENOTDIR)
}

fn identity_here(path: &[u8]) -> Identity {
    let c_path = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: an all-zero stat is valid to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and out pointer.
    if unsafe { libc::stat(c_path.as_ptr(), &mut st) } < 0 {
        return Err(errno());
    }
    Ok((st.st_dev, st.st_ino))
}

/// `path` resolved below process `pid`'s root, as that process would.
/// `EPERM`-like errors (no access to its root, openat2 unavailable) are not
/// "absent": they make the check fail.
fn identity_in_root_of(pid: i32, path: &[u8]) -> Identity {
    let root_path = CString::new(format!("/proc/{pid}/root")).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid C string; the descriptor is owned right below.
    let root = unsafe {
        libc::open(
            root_path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root < 0 {
        return Err(not_absent(errno()));
    }
    // SAFETY: `root` is fresh and owned by nothing else.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let relative = match path.strip_prefix(b"/") {
        Some(b"") | None => b".".as_slice(),
        Some(rest) => rest,
    };
    let c_relative = CString::new(relative).map_err(|_| libc::EINVAL)?;
    let fd = openat2(
        root.as_raw_fd(),
        &c_relative,
        libc::O_PATH | libc::O_CLOEXEC,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| match e.raw_os_error().unwrap_or(libc::EIO) {
        libc::ENOSYS => not_absent(libc::ENOSYS),
        error => error,
    })?;
    // SAFETY: an all-zero stat is valid to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(not_absent(errno()));
    }
    Ok((st.st_dev, st.st_ino))
}

/// An errno that must never count as "absent in the peer's view".
fn not_absent(errno: i32) -> i32 {
    if absent(errno) {
        libc::EIO
    } else {
        errno
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Peer;
    use std::sync::Arc;

    fn me() -> PeerInfo {
        Some(Arc::new(Peer {
            uid: 0,
            gid: 0,
            pid: Some(std::process::id() as i32),
            groups: Vec::new(),
        }))
    }

    #[test]
    fn a_process_is_in_its_own_namespace() {
        assert_ne!(own(), 0);
        assert_eq!(view_of(&me(), 0), View::Same);
        // A fact beats a claim.
        assert_eq!(view_of(&me(), own() + 1), View::Same);
        let unknown_pid = Some(Arc::new(Peer {
            uid: 0,
            gid: 0,
            pid: None,
            groups: Vec::new(),
        }));
        assert_eq!(view_of(&unknown_pid, 0), View::Same);
        assert_eq!(view_of(&unknown_pid, own()), View::Same);
        assert_eq!(view_of(&unknown_pid, own() + 1), View::Unverifiable);
    }

    #[test]
    fn the_same_directory_is_verified_through_the_peer_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().as_os_str().as_encoded_bytes().to_vec();
        let pid = std::process::id() as i32;
        assert!(same_in_both_views(pid, &path));
        assert!(same_in_both_views(pid, b"/"));
        let mut missing = path.clone();
        missing.extend_from_slice(b"/missing");
        assert!(same_in_both_views(pid, &missing), "absent in both");
        assert!(!same_in_both_views(i32::MAX, &path), "no such process");
    }

    #[test]
    fn views_screen_paths() {
        assert_eq!(screen(View::Same, b"/", false), Screen::Pass);
        assert_eq!(screen(View::Unverifiable, b"/", true), Screen::Refuse);
        let other = View::Other {
            pid: std::process::id() as i32,
        };
        assert_eq!(screen(other, b"/", false), Screen::Later);
        assert_eq!(screen(other, b"/", true), Screen::Pass);
    }
}
