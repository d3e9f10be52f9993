//! Who may see what: peer credentials, read once per connection, and the
//! "could this peer list it itself" check (docs/architecture.md "Who may see
//! what").
//!
//! The check is pure: `refresh` gathers the facts (mode, owner, group, ACL
//! presence of every directory a path's resolution searched, and of the
//! directory itself) when it crawls; they are cached with the listing and
//! thrown away with it when inotify reports a change.
//!
//! Per-uid resource policy is in the submodules: `quota` (what a uid's
//! requests make the daemon hold, in nodes, entries, bytes and watches) and
//! `limits` (how many connections and requests in flight a uid holds at once).

pub mod limits;
pub mod quota;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::net::UnixStream;

use crate::views::ViewCell;

/// A connected client's credentials, as the kernel reported them at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (`SO_PEERGROUPS`, else `/proc/PID/status`);
    /// empty when neither could be read, which can only make the check
    /// refuse more.
    pub groups: Vec<u32>,
    /// The view its client passed at connect (`crate::views`), if any.
    pub view: ViewCell,
}

impl Peer {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What tonic hands each request of a connection: the peer, or `None` when
/// the kernel would not tell (every directory is then NOT_SERVED).
pub type PeerInfo = Option<Arc<Peer>>;

/// The credentials of an accepted stream's peer, read once.
pub fn peer_of(stream: &UnixStream) -> PeerInfo {
    match stream.peer_cred() {
        Ok(cred) => Some(Arc::new(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(stream.as_raw_fd())
                .or_else(|| cred.pid().and_then(supplementary_groups))
                .unwrap_or_default(),
            view: ViewCell::default(),
        })),
        Err(error) => {
            tracing::warn!(%error, "cannot read peer credentials; serving nothing to it");
            None
        }
    }
}

/// Supplementary groups of a connected Unix socket's peer, as the kernel
/// recorded them at `connect()` (`SO_PEERGROUPS`, Linux 4.13): one system
/// call, and exactly the credentials of the connecting process even if it
/// has exited or its pid was reused since. `None` when the kernel refuses
/// (older kernels: `ENOPROTOOPT`); the caller then falls back to `/proc`.
pub fn peer_groups(fd: RawFd) -> Option<Vec<u32>> {
    // Most processes have a handful of groups; NGROUPS_MAX is 65536.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: a valid descriptor and a buffer of `len` bytes.
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return Some(groups);
        }
        // ERANGE: `len` now says how much is needed.
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || count <= groups.len()
        {
            return None;
        }
        groups.resize(count, 0);
    }
    None
}

/// Supplementary groups from the `Groups:` line of `/proc/PID/status` (the
/// fallback when `SO_PEERGROUPS` is unavailable).
fn supplementary_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups(&status)
}

fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

/// The permission-relevant facts of one inode, read from the descriptor
/// the daemon actually opened (see `crate::walk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Carries a `system.posix_acl_access` xattr: the mode bits alone do not
    /// tell who may use it, so only its owner (and root) pass.
    pub has_acl: bool,
}

/// Read permission (list a directory's names, read a file's bytes), in the
/// "other" class; `grants` shifts it to the class that applies.
const READ: u32 = 0o4;
/// Search permission on a directory (look a name up in it).
const SEARCH: u32 = 0o1;

impl Facts {
    pub fn of_stat(st: &libc::stat, has_acl: bool) -> Facts {
        Facts {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            has_acl,
        }
    }

    /// The kernel's owner/group/other rule: the first class that matches the
    /// peer decides, even when a later class would grant more.
    fn grants(&self, peer: &Peer, wanted: u32) -> bool {
        if peer.is_root() {
            return true;
        }
        let class_shift = if peer.uid == self.uid {
            6
        } else if self.has_acl {
            return false;
        } else if peer.in_group(self.gid) {
            3
        } else {
            0
        };
        (self.mode >> class_shift) & wanted == wanted
    }
}

/// What the index keeps about how an answer was reached: everything the
/// gate needs to decide, per peer, whether that peer may have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Directories the path's resolution looked names up in (the kernel
    /// wants search permission on each).
    pub searched: Vec<Facts>,
    /// The directory itself when the answer is its listing (read + search).
    pub listed: Option<Facts>,
}

impl Access {
    /// Only the directories searched (an absence, a refusal, a symlink's
    /// resolution).
    pub fn searched(searched: Vec<Facts>) -> Access {
        Access {
            searched,
            listed: None,
        }
    }

    fn permits(&self, peer: &Peer) -> bool {
        self.searched.iter().all(|dir| dir.grants(peer, SEARCH))
            && self
                .listed
                .is_none_or(|dir| dir.grants(peer, READ | SEARCH))
    }

    /// Bytes this keeps on the heap (for the index's accounting).
    pub fn heap_bytes(&self) -> usize {
        self.searched.capacity() * std::mem::size_of::<Facts>()
    }
}

/// The gate: every per-peer verdict of the daemon is made here, from facts
/// the index gathered when it read the filesystem (and threw away when
/// inotify said they changed). The index answers peer-agnostic questions;
/// what of it a peer may have is decided below, when answering, never when
/// caching.
pub mod gate {
    use super::{Access, Facts, PeerInfo, READ, SEARCH};

    /// May `peer` have the answer reached through `access` (a listing, an
    /// absence, a refusal)? The kernel would let it look up every name on
    /// the way, and list the directory itself.
    pub fn may_have(peer: &PeerInfo, access: &Access) -> bool {
        peer.as_ref().is_some_and(|peer| access.permits(peer))
    }

    /// May `peer` have what `stat()` of a symlink entry gives (its target's
    /// kind, mode, mtime and size)? The kernel would let it follow the link:
    /// search permission on every directory the link's resolution searched.
    /// Otherwise the entry must read as the peer's own `stat()` would.
    pub fn may_follow(peer: &PeerInfo, link: &Access) -> bool {
        may_have(peer, link)
    }

    /// May `peer` have a compiled file's bytes? It may have the listing of
    /// the file's directory (`listing`), and the file's own facts (read from
    /// the inode whose bytes were read) grant it read permission.
    pub fn may_read(peer: &PeerInfo, listing: &Access, file: &Facts) -> bool {
        peer.as_ref()
            .is_some_and(|peer| listing.permits(peer) && file.grants(peer, READ))
    }

    /// Whether a walk made for `peer` may look a name up in `dir`: a walk
    /// stops at the first directory its peer could not search, so nothing
    /// beyond it is read, kept or counted on that peer's behalf.
    pub fn may_search(peer: &PeerInfo, dir: &Facts) -> bool {
        peer.as_ref().is_some_and(|peer| dir.grants(peer, SEARCH))
    }

    /// Whether a walk made for `peer` may list the directory `dir`.
    pub fn may_list(peer: &PeerInfo, dir: &Facts) -> bool {
        peer.as_ref()
            .is_some_and(|peer| dir.grants(peer, READ | SEARCH))
    }

    /// Whether `peer` sees every figure of the daemon (Stats): root and the
    /// daemon's own user. Every other peer sees only its own.
    pub fn sees_everything(peer: &PeerInfo) -> bool {
        // SAFETY: geteuid cannot fail.
        let daemon = unsafe { libc::geteuid() };
        peer.as_ref()
            .is_some_and(|peer| peer.is_root() || peer.uid == daemon)
    }

    /// The NOT_SERVED reason for a peer that may not see a path.
    pub fn denied_reason(peer: &PeerInfo) -> String {
        match peer {
            Some(peer) => format!("permission denied for peer uid {}", peer.uid),
            None => "peer credentials unavailable".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
            view: ViewCell::default(),
        }
    }

    fn dir(mode: u32, uid: u32, gid: u32) -> Facts {
        Facts {
            mode,
            uid,
            gid,
            ..Facts::default()
        }
    }

    #[test]
    fn owner_group_other_classes() {
        let private = dir(0o700, 1000, 100);
        assert!(private.grants(&peer(1000, 1, &[]), READ | SEARCH));
        assert!(!private.grants(&peer(1001, 100, &[]), SEARCH));
        assert!(
            private.grants(&peer(0, 0, &[]), READ | SEARCH),
            "root passes"
        );
        let group = dir(0o750, 1000, 100);
        assert!(group.grants(&peer(1001, 5, &[100]), READ | SEARCH));
        assert!(!group.grants(&peer(1001, 5, &[7]), SEARCH));
        let search_only = dir(0o711, 1000, 100);
        assert!(search_only.grants(&peer(2000, 5, &[]), SEARCH));
        assert!(!search_only.grants(&peer(2000, 5, &[]), READ | SEARCH));
    }

    #[test]
    fn first_matching_class_decides() {
        // Owner bits deny even though "other" would allow: as the kernel does.
        let odd = dir(0o077, 1000, 100);
        assert!(!odd.grants(&peer(1000, 100, &[]), SEARCH));
        assert!(odd.grants(&peer(2000, 5, &[]), SEARCH));
    }

    #[test]
    fn acl_directories_are_owner_and_root_only() {
        let with_acl = Facts {
            has_acl: true,
            ..dir(0o755, 1000, 100)
        };
        assert!(with_acl.grants(&peer(1000, 1, &[]), READ | SEARCH));
        assert!(with_acl.grants(&peer(0, 0, &[]), READ | SEARCH));
        assert!(!with_acl.grants(&peer(2000, 100, &[]), SEARCH));
    }

    #[test]
    fn access_needs_search_everywhere_and_read_on_the_directory() {
        let access = Access {
            searched: vec![dir(0o755, 0, 0), dir(0o711, 0, 0)],
            listed: Some(dir(0o755, 0, 0)),
        };
        assert!(access.permits(&peer(65534, 65534, &[])));
        let hidden = Access {
            searched: vec![dir(0o755, 0, 0), dir(0o700, 12345, 12345)],
            listed: Some(dir(0o755, 0, 0)),
        };
        assert!(!hidden.permits(&peer(65534, 65534, &[])));
        let unreadable = Access {
            listed: Some(dir(0o711, 0, 0)),
            ..access
        };
        assert!(!unreadable.permits(&peer(65534, 65534, &[])));
    }

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // SAFETY: getgroups with a buffer of the size it reports.
        let mut expected = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut groups = vec![0; n.max(0) as usize];
            let n = libc::getgroups(n, groups.as_mut_ptr());
            groups.truncate(n.max(0) as usize);
            groups
        };
        let mut got = peer_groups(ours.as_raw_fd()).expect("SO_PEERGROUPS");
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        drop(theirs);
    }

    #[test]
    fn groups_line_is_parsed() {
        let status = "Name:\tpython3\nUid:\t1000\nGroups:\t4 24 1000 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(status), Some(vec![4, 24, 1000]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }
}
