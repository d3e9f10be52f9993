//! Which index answers a request: peers in another mount namespace (a
//! container, a Kubernetes pod next to a DaemonSet, a service with
//! `PrivateTmp=`) name other files with the same paths, so the daemon must
//! not answer a peer's paths from its own view (docs/design.md, contract 1:
//! finderd never makes an import fail that stock CPython would satisfy;
//! contract 4: nobody learns what they may not).
//!
//! - A peer that passed its root at connect (`crate::views`) is answered in
//!   that view: the host index when its root is the daemon's own, the
//!   view's index otherwise, or NOT_SERVED for every path when the view was
//!   refused (a limit).
//! - A peer that passed nothing (a standard gRPC client, an older client)
//!   is answered from the daemon's view when it is in the daemon's mount
//!   namespace: read from `/proc/PID/ns/mnt` when the daemon may (same uid;
//!   a fact beats the client's claim), else the request's
//!   `mount_namespace` (the client's own `st_ino` of `/proc/self/ns/mnt`;
//!   0 from clients that do not send it, which are served as before this
//!   check existed). A peer known to be in another namespace that passed no
//!   view is NOT_SERVED with the reason [`REASON`]: the daemon never
//!   reaches into another namespace (no `/proc/PID/root`, no privilege).

use std::sync::OnceLock;

use crate::index::Index;
use crate::policy::PeerInfo;
use crate::views::{PeerView, Views};

/// The NOT_SERVED reason for a peer in another mount namespace that passed
/// no view of its root.
pub const REASON: &str =
    "peer in another mount namespace passed no view of its root (a client older than views?)";

/// How a request's paths relate to the daemon's view, for a peer that
/// passed no view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The daemon's own namespace (or unknown: see the module comment).
    Same,
    /// Another namespace: its paths cannot be answered here.
    Other,
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

/// The namespace of a request from `peer`, which passed no view, whose
/// client said `claimed`.
pub fn view_of(peer: &PeerInfo, claimed: u64) -> View {
    let own = own();
    let Some(peer) = peer else {
        return View::Same; // served nothing anyway (policy)
    };
    let actual = peer
        .pid
        .filter(|pid| *pid > 0)
        .and_then(|pid| namespace_of(&format!("/proc/{pid}/ns/mnt")));
    match actual {
        Some(ns) if ns == own || own == 0 => View::Same,
        Some(_) => View::Other,
        None if claimed == 0 || claimed == own => View::Same,
        None => View::Other,
    }
}

/// The index that answers `peer`'s paths (its client said `claimed` of its
/// mount namespace), or why none does.
pub fn index_for<'a>(
    views: &'a Views,
    peer: &'a PeerInfo,
    claimed: u64,
) -> Result<&'a Index, String> {
    match peer.as_ref().and_then(|peer| peer.view.get()) {
        Some(PeerView::View(view)) => Ok(&view.index),
        Some(PeerView::Refused(reason)) => Err(reason.clone()),
        Some(PeerView::Own) => Ok(views.host()),
        None => match view_of(peer, claimed) {
            View::Same => Ok(views.host()),
            View::Other => Err(REASON.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Peer;
    use std::sync::Arc;

    fn peer(pid: Option<i32>) -> PeerInfo {
        Some(Arc::new(Peer {
            uid: 0,
            gid: 0,
            pid,
            groups: Vec::new(),
            view: Default::default(),
        }))
    }

    #[test]
    fn a_process_is_in_its_own_namespace() {
        assert_ne!(own(), 0);
        let me = peer(Some(std::process::id() as i32));
        assert_eq!(view_of(&me, 0), View::Same);
        // A fact beats a claim.
        assert_eq!(view_of(&me, own() + 1), View::Same);
        let unknown_pid = peer(None);
        assert_eq!(view_of(&unknown_pid, 0), View::Same);
        assert_eq!(view_of(&unknown_pid, own()), View::Same);
        assert_eq!(view_of(&unknown_pid, own() + 1), View::Other);
    }
}
