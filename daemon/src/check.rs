//! Freshness without inotify: directories on filesystems inotify cannot see
//! (polled) are checked by a `stat` of their path, at each request and in
//! the background, and re-crawled when the directory's identity, mtime or
//! ctime moved. They are also re-listed in the background every
//! `poll_interval`, which catches a file rewritten in place (that changes
//! no directory mtime). A directory that got no watch (the watch limit) is
//! not kept at all: it is read again for every request that asks for it, so
//! running out of watches never makes an answer stale.
//!
//! The stamp is taken *before* the crawl reads anything, so a change made
//! during the crawl is either in the listing or moves the stamp.

use crate::walk::Root;

/// Why a directory is checked instead of watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Its filesystem does not report changes to inotify.
    Polled,
}

/// What `stat(path)` (following symlinks) said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Found {
        dev: u64,
        ino: u64,
        mode: u32,
        mtime_ns: i64,
        ctime_ns: i64,
        size: i64,
    },
    Missing(i32),
}

/// A checked node's kind and stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    pub stamp: Stamp,
}

/// `stat(path)` now, `path` resolved beneath `root`.
pub fn stamp_of(root: &Root, path: &[u8]) -> Stamp {
    let st = match root.stat(path) {
        Ok(st) => st,
        Err(error) => return Stamp::Missing(error.raw_os_error().unwrap_or(libc::EIO)),
    };
    Stamp::Found {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        size: st.st_size,
    }
}

impl Check {
    /// Whether the path still looks as it did when the node was crawled.
    pub fn holds(&self, root: &Root, path: &[u8]) -> bool {
        stamp_of(root, path) == self.stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_new_name_moves_the_stamp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().as_os_str().as_bytes();
        let check = Check {
            kind: CheckKind::Polled,
            stamp: stamp_of(&Root::Host, path),
        };
        assert!(check.holds(&Root::Host, path));
        // Directory timestamps move with the kernel's coarse clock.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(tmp.path().join("new.py"), b"").expect("write");
        assert!(!check.holds(&Root::Host, path));
        assert!(matches!(
            stamp_of(&Root::Host, b"/no/such/dir"),
            Stamp::Missing(libc::ENOENT)
        ));
    }
}
