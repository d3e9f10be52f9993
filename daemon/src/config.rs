//! Every limit and path the daemon uses, with its default, and where the
//! socket lives.
//!
//! Defaults are constants here so that `finderd serve --help`, the docs and
//! the code agree. A later config file (issue 3) layers between these
//! defaults and the command-line flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest request body accepted, in bytes (tonic answers RESOURCE_EXHAUSTED).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;
/// Most `sys_path` entries in one Snapshot.
pub const DEFAULT_MAX_SYS_PATH_ENTRIES: usize = 4096;
/// Most paths in one Lookup.
pub const DEFAULT_MAX_LOOKUP_PATHS: usize = 4096;
/// Most entries in one directory listing; a larger directory is NOT_SERVED.
/// A listing costs about 60 bytes per entry plus its name, so the default
/// bounds one directory at roughly 100 MB of index.
pub const DEFAULT_MAX_ENTRIES_PER_DIRECTORY: usize = 1_000_000;
/// Slots in the generation file (8 bytes each: the default maps 2 MiB).
pub const DEFAULT_GENERATION_SLOTS: u32 = 262_144;
/// How long a client may trust its slots after the daemon last read its queue dry.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(200);
/// A daemon that answered a request within this window keeps `dry_ns` fresh.
pub const DEFAULT_ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for in-flight requests before exiting anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The system-wide socket directory (served to every user of the host).
pub const SYSTEM_SOCKET_DIR: &str = "/run/finderd";

/// Limits on what one request may ask, enforced at the wire.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_request_bytes: usize,
    pub max_sys_path_entries: usize,
    pub max_lookup_paths: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_sys_path_entries: DEFAULT_MAX_SYS_PATH_ENTRIES,
            max_lookup_paths: DEFAULT_MAX_LOOKUP_PATHS,
        }
    }
}

/// Limits on what the index holds.
#[derive(Clone, Debug)]
pub struct IndexLimits {
    pub max_entries_per_directory: usize,
    /// Inotify watches this daemon may hold; `None`: only the kernel's
    /// `fs.inotify.max_user_watches` limits it.
    pub max_watches: Option<usize>,
}

impl Default for IndexLimits {
    fn default() -> Self {
        Self {
            max_entries_per_directory: DEFAULT_MAX_ENTRIES_PER_DIRECTORY,
            max_watches: None,
        }
    }
}

/// The shared generation file and how clients may use it.
#[derive(Clone, Debug)]
pub struct Freshness {
    pub slots: u32,
    pub lease: Duration,
    pub active_window: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            slots: DEFAULT_GENERATION_SLOTS,
            lease: DEFAULT_LEASE,
            active_window: DEFAULT_ACTIVE_WINDOW,
        }
    }
}

/// Everything `finderd serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub socket: PathBuf,
    /// Mode of the socket file; `None`: 0666 in the system directory, else 0600.
    pub socket_mode: Option<u32>,
    pub requests: RequestLimits,
    pub index: IndexLimits,
    pub freshness: Freshness,
    pub drain_timeout: Duration,
}

impl Config {
    /// The generation file lives beside the socket: `<socket>.gen`.
    pub fn generation_file(&self) -> PathBuf {
        generation_file_for(&self.socket)
    }

    /// Whether the socket is the host-wide one that every user connects to.
    pub fn is_system_socket(&self) -> bool {
        self.socket.parent() == Some(Path::new(SYSTEM_SOCKET_DIR))
    }

    /// Mode for the socket file: the system socket is open to all (the
    /// per-peer policy protects what it answers), any other is private.
    pub fn effective_socket_mode(&self) -> u32 {
        self.socket_mode.unwrap_or(if self.is_system_socket() {
            0o666
        } else {
            0o600
        })
    }

    /// Mode for a socket directory the daemon creates.
    pub fn socket_dir_mode(&self) -> u32 {
        if self.is_system_socket() {
            0o755
        } else {
            0o700
        }
    }
}

/// `<socket>.gen`.
pub fn generation_file_for(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".gen");
    PathBuf::from(name)
}

/// The default socket path, shared by daemon and clients:
/// `$FINDERD_SOCKET`; else `$XDG_RUNTIME_DIR/finderd/finderd.sock`; else
/// `/run/finderd/finderd.sock` for root; else `/tmp/finderd-$UID/finderd.sock`.
/// Empty variables count as unset.
pub fn default_socket_path(env: impl Fn(&str) -> Option<OsString>, euid: u32) -> PathBuf {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(path) = set("FINDERD_SOCKET") {
        return PathBuf::from(path);
    }
    if let Some(runtime) = set("XDG_RUNTIME_DIR") {
        return Path::new(&runtime).join("finderd").join("finderd.sock");
    }
    if euid == 0 {
        return Path::new(SYSTEM_SOCKET_DIR).join("finderd.sock");
    }
    PathBuf::from(format!("/tmp/finderd-{euid}/finderd.sock"))
}

/// The default socket path for this process.
pub fn default_socket_path_from_env() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    default_socket_path(|name| std::env::var_os(name), euid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)], euid: u32) -> PathBuf {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        default_socket_path(|name| vars.get(name).cloned(), euid)
    }

    #[test]
    fn socket_path_precedence() {
        let all = [
            ("FINDERD_SOCKET", "/x/f.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ];
        assert_eq!(resolve(&all, 1000), PathBuf::from("/x/f.sock"));
        assert_eq!(
            resolve(&all[1..], 1000),
            PathBuf::from("/run/user/1000/finderd/finderd.sock")
        );
        assert_eq!(resolve(&[], 0), PathBuf::from("/run/finderd/finderd.sock"));
        assert_eq!(
            resolve(&[], 1000),
            PathBuf::from("/tmp/finderd-1000/finderd.sock")
        );
        assert_eq!(
            resolve(&[("FINDERD_SOCKET", ""), ("XDG_RUNTIME_DIR", "")], 7),
            PathBuf::from("/tmp/finderd-7/finderd.sock")
        );
    }

    #[test]
    fn generation_file_is_beside_the_socket() {
        assert_eq!(
            generation_file_for(Path::new("/run/finderd/finderd.sock")),
            PathBuf::from("/run/finderd/finderd.sock.gen")
        );
    }
}
