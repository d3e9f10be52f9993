//! Every limit and path the daemon uses, with its default; where they come
//! from (defaults, then the TOML file, then command-line flags, the later
//! winning); which of them SIGHUP can change while serving; where the
//! socket lives.
//!
//! [`Settings`] is both the `finderd serve` flags and the file's keys (one
//! struct, so the two never drift): every field is optional, and
//! [`Config::resolve`] fills the gaps with the defaults below.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// Largest request body accepted, in bytes (tonic answers RESOURCE_EXHAUSTED).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;
/// Most `sys_path` entries in one Snapshot.
pub const DEFAULT_MAX_SYS_PATH_ENTRIES: usize = 4096;
/// Most paths in one Lookup.
pub const DEFAULT_MAX_LOOKUP_PATHS: usize = 4096;
/// Requests one peer uid may have in flight at once.
pub const DEFAULT_MAX_REQUESTS_PER_PEER: usize = 128;
/// Connections one peer uid may hold open at once (one per running
/// interpreter): well above any one user's interpreters, well below the
/// descriptors the daemon may open (it raises its soft limit to the hard
/// one; the units set `LimitNOFILE=65536`).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 1024;
/// Most entries in one directory listing; a larger directory is NOT_SERVED.
pub const DEFAULT_MAX_ENTRIES_PER_DIRECTORY: usize = 1_000_000;
/// Most entries across the whole index; past it, least-recently-used
/// listings are evicted.
pub const DEFAULT_MAX_INDEXED_ENTRIES: usize = 4_000_000;
/// Slots in the generation file (8 bytes each: the default maps 2 MiB).
pub const DEFAULT_GENERATION_SLOTS: u32 = 262_144;
/// How long a client may trust its slots after the daemon last read its queue dry.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(200);
/// A daemon that answered a request within this window keeps `dry_ns` fresh.
pub const DEFAULT_ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for in-flight requests before exiting anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often polled directories (filesystems inotify cannot see) are checked
/// in the background; requests check them anyway.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(1000);
/// Entries per io_uring submission when crawling.
pub const DEFAULT_URING_BATCH: usize = 64;
/// How long an engine choice for a filesystem stands before it is measured again.
pub const DEFAULT_RECALIBRATE: Duration = Duration::from_secs(3600);
/// Async worker threads (0: one current-thread runtime; see `main.rs`).
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// Learned plans kept (least recently used ones are evicted past it).
pub const DEFAULT_MAX_PLANS: usize = 1024;
/// Learned plans one peer uid may have (its own least recently used go first).
pub const DEFAULT_MAX_PLANS_PER_UID: usize = 256;
/// Directories one plan names.
pub const DEFAULT_MAX_PLAN_DIRECTORIES: usize = 4096;
/// Compiled files one plan names.
pub const DEFAULT_MAX_PLAN_FILES: usize = 4096;
/// A plan entry that this many consecutive Reports leave out drops out.
pub const DEFAULT_PLAN_DROP_AFTER: u32 = 3;
/// Longest program key accepted in a Snapshot or Report.
pub const DEFAULT_MAX_PROGRAM_KEY_BYTES: usize = 64 * 1024;
/// Most directories (and, apart, compiled files) in one Report.
pub const DEFAULT_MAX_REPORT_PATHS: usize = 16 * 1024;
/// Bytes of compiled files one Snapshot may carry for one plan.
pub const DEFAULT_MAX_PLAN_BYTECODE_BYTES: u64 = 32 << 20;
/// Bytes of compiled files the daemon keeps in memory in total.
pub const DEFAULT_MAX_CACHED_BYTES: u64 = 256 << 20;
/// A filesystem whose measured stat costs at least this much is slow.
pub const DEFAULT_SLOW_STAT_NS: u64 = 20_000;
/// The plan state file is written at most this often.
pub const DEFAULT_STATE_WRITE_INTERVAL: Duration = Duration::from_millis(2000);
/// A request with a grpc-timeout is answered by this share of it.
pub const DEFAULT_DEADLINE_PERCENT: u32 = 75;
/// The configuration file read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/finderd/finderd.toml";

/// The system-wide socket directory (served to every user of the host).
pub const SYSTEM_SOCKET_DIR: &str = "/run/finderd";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} = {value} is out of range: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// How directory entries are stat'ed when a directory is crawled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Measure both per filesystem and keep the faster.
    #[default]
    Auto,
    /// One `statx` system call per entry.
    Sync,
    /// Batched `IORING_OP_STATX` (falls back to sync where io_uring is unavailable).
    Uring,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Sync => "sync",
            Engine::Uring => "uring",
        }
    }
}

/// The `finderd serve` flags and the config file's keys. `None`: not given.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Unix socket [default: $FINDERD_SOCKET, $XDG_RUNTIME_DIR/finderd/finderd.sock,
    /// /run/finderd/finderd.sock as root, else /tmp/finderd-$UID/finderd.sock;
    /// under socket activation: the socket systemd passed]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log level or filter (as RUST_LOG; overrides it) [default: RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Socket file mode, octal [default: 666 in /run/finderd, else 600]
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: Option<u32>,
    /// Mode of a socket directory the daemon creates, octal [default: 755 for
    /// /run/finderd, else 700]
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    #[serde(deserialize_with = "octal_mode")]
    pub socket_dir_mode: Option<u32>,
    /// Largest request accepted, in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most sys.path entries in one Snapshot [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_sys_path_entries: Option<usize>,
    /// Most paths in one Lookup [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_lookup_paths: Option<usize>,
    /// Requests one peer uid may have in flight; more are RESOURCE_EXHAUSTED [default: 128]
    #[arg(long, value_name = "N")]
    pub max_requests_per_peer: Option<usize>,
    /// Connections one peer uid may hold open; more are closed at once with
    /// a GOAWAY that names the limit [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
    /// Most entries in a served directory; larger ones are NOT_SERVED [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_entries_per_directory: Option<usize>,
    /// Most entries across the index; least-recently-used listings are evicted
    /// past it [default: 4000000]
    #[arg(long, value_name = "N")]
    pub max_indexed_entries: Option<usize>,
    /// Most inotify watches this daemon holds; past it directories are
    /// checked by mtime [default: the kernel's fs.inotify.max_user_watches]
    #[arg(long, value_name = "N")]
    pub max_watches: Option<usize>,
    /// Slots in the generation file (restart to change) [default: 262144]
    #[arg(long, value_name = "N")]
    pub generation_slots: Option<u32>,
    /// How long clients may trust the generation file after the daemon last
    /// read its change queue, in milliseconds (restart to change) [default: 200]
    #[arg(long, value_name = "MS")]
    pub lease_ms: Option<u64>,
    /// Keep the generation file's lease fresh for this long after a request,
    /// in seconds [default: 10]
    #[arg(long, value_name = "SECS")]
    pub active_window_secs: Option<u64>,
    /// On SIGTERM, wait at most this long for in-flight requests, in
    /// milliseconds [default: 5000]
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Exit 0 after this many seconds without requests (connections left
    /// open between requests do not count: their clients reconnect; for
    /// socket-activated daemons, systemd starts it again on the next
    /// connection); 0: never [default: never]
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<u64>,
    /// Background check interval of polled directories (filesystems
    /// inotify cannot see), in milliseconds [default: 1000]
    #[arg(long, value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// Also poll this filesystem type (a name as in /proc/filesystems, e.g.
    /// `overlay`, or a statfs magic such as 0x794c7630); repeatable [default:
    /// nfs, cifs/smb, fuse, 9p, afs, ceph, lustre, gpfs and others]
    #[arg(long = "poll-filesystem", value_name = "TYPE")]
    pub poll_filesystems: Option<Vec<String>>,
    /// How crawls stat directory entries [default: auto]
    #[arg(long, value_enum)]
    pub refresh_engine: Option<Engine>,
    /// Entries per io_uring submission [default: 64]
    #[arg(long, value_name = "N")]
    pub uring_batch: Option<usize>,
    /// Re-measure a filesystem's engine choice after this many seconds [default: 3600]
    #[arg(long, value_name = "SECS")]
    pub recalibrate_secs: Option<u64>,
    /// Async worker threads serving the wire; 0: one current-thread runtime
    /// (restart to change) [default: 0]
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Directory of the learned-plan state file; "" keeps plans in memory
    /// only [default: $STATE_DIRECTORY; else, on the default socket only,
    /// /var/lib/finderd as root, $XDG_STATE_HOME/finderd or
    /// ~/.local/state/finderd]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Write the plan state file at most this often, in milliseconds [default: 2000]
    #[arg(long, value_name = "MS")]
    pub state_write_interval_ms: Option<u64>,
    /// Learned plans kept; 0: learn none [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_plans: Option<usize>,
    /// Learned plans one peer uid may have [default: 256]
    #[arg(long, value_name = "N")]
    pub max_plans_per_uid: Option<usize>,
    /// Directories one plan names [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_plan_directories: Option<usize>,
    /// Compiled files one plan names [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_plan_files: Option<usize>,
    /// A plan entry left out of this many consecutive Reports drops out [default: 3]
    #[arg(long, value_name = "N")]
    pub plan_drop_after: Option<u32>,
    /// Longest program key accepted [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_program_key_bytes: Option<usize>,
    /// Most directories, and most compiled files, in one Report [default: 16384]
    #[arg(long, value_name = "N")]
    pub max_report_paths: Option<usize>,
    /// Bytes of compiled files one Snapshot may carry for a plan [default: 33554432]
    #[arg(long, value_name = "BYTES")]
    pub max_plan_bytecode_bytes: Option<u64>,
    /// Bytes of compiled files kept in memory in total; 0: none [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub max_cached_bytes: Option<u64>,
    /// A filesystem is slow when a measured stat costs at least this many
    /// nanoseconds (polled filesystems always are) [default: 20000]
    #[arg(long, value_name = "NS")]
    pub slow_stat_ns: Option<u64>,
    /// A request carrying a grpc-timeout is answered by this percentage of
    /// it; what is not indexed by then is NOT_SERVED "being indexed" [default: 75]
    #[arg(long, value_name = "PERCENT")]
    pub deadline_percent: Option<u32>,
}

fn parse_octal(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode (e.g. 600)"))
}

/// A mode as a TOML integer (`0o600`) or an octal string (`"600"`).
fn octal_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Text(String),
    }
    let mode = match Mode::deserialize(d)? {
        Mode::Number(n) if n <= 0o777 => n,
        Mode::Number(n) => return Err(serde::de::Error::custom(format!("mode {n:o} is over 777"))),
        Mode::Text(text) => parse_octal(&text).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(mode))
}

macro_rules! layer_fields {
    ($base:ident, $over:ident; $($field:ident),*) => {
        Settings { $($field: $over.$field.or($base.$field)),* }
    };
}

impl Settings {
    /// `over`'s values where given, else these.
    pub fn layered(self, over: Settings) -> Settings {
        let base = self;
        layer_fields!(base, over; socket, log_level, socket_mode, socket_dir_mode,
            max_request_bytes, max_sys_path_entries, max_lookup_paths, max_requests_per_peer,
            max_connections_per_peer,
            max_entries_per_directory, max_indexed_entries, max_watches, generation_slots,
            lease_ms, active_window_secs, drain_timeout_ms, idle_exit, poll_interval_ms,
            poll_filesystems, refresh_engine, uring_batch, recalibrate_secs, worker_threads,
            state_dir, state_write_interval_ms, max_plans, max_plans_per_uid,
            max_plan_directories, max_plan_files, plan_drop_after, max_program_key_bytes,
            max_report_paths, max_plan_bytecode_bytes, max_cached_bytes, slow_stat_ns,
            deadline_percent)
    }

    /// Parses the TOML text of a config file.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_string(),
        })
    }
}

/// Which config file to read: `--config PATH` (must exist), else the default
/// file when it exists, else none.
pub fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    }
}

/// The file's settings (empty without a file).
pub fn read_file(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let Some(path) = path else {
        return Ok(Settings::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Settings::from_toml(&text, path)
}

/// Where a config comes from: the file (re-read on SIGHUP) and the flags,
/// which win over it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub flags: Settings,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = read_file(self.file.as_deref())?;
        Config::resolve(file.layered(self.flags.clone()))
    }
}

/// Limits on what a request or a peer may ask, enforced at the wire and at
/// accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_request_bytes: usize,
    pub max_sys_path_entries: usize,
    pub max_lookup_paths: usize,
    pub max_requests_per_peer: usize,
    pub max_connections_per_peer: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_sys_path_entries: DEFAULT_MAX_SYS_PATH_ENTRIES,
            max_lookup_paths: DEFAULT_MAX_LOOKUP_PATHS,
            max_requests_per_peer: DEFAULT_MAX_REQUESTS_PER_PEER,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
        }
    }
}

/// Limits on what the index holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexLimits {
    pub max_entries_per_directory: usize,
    pub max_indexed_entries: usize,
    /// Inotify watches this daemon may hold; `None`: only the kernel's
    /// `fs.inotify.max_user_watches` limits it.
    pub max_watches: Option<usize>,
}

impl Default for IndexLimits {
    fn default() -> Self {
        Self {
            max_entries_per_directory: DEFAULT_MAX_ENTRIES_PER_DIRECTORY,
            max_indexed_entries: DEFAULT_MAX_INDEXED_ENTRIES,
            max_watches: None,
        }
    }
}

/// How directories are read and kept fresh where inotify cannot help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshConfig {
    pub engine: Engine,
    pub uring_batch: usize,
    pub recalibrate: Duration,
    pub poll_interval: Duration,
    /// Filesystem types to poll besides the built-in list: names or magics.
    pub poll_filesystems: Vec<String>,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            engine: Engine::Auto,
            uring_batch: DEFAULT_URING_BATCH,
            recalibrate: DEFAULT_RECALIBRATE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            poll_filesystems: Vec::new(),
        }
    }
}

/// The shared generation file and how clients may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Learned plans, compiled files served from memory, request deadlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// Where the plan state file lives; `None`: plans are not persisted.
    pub state_dir: Option<PathBuf>,
    pub state_write_interval: Duration,
    /// 0: no plan is learned.
    pub max_plans: usize,
    pub max_plans_per_uid: usize,
    pub max_plan_directories: usize,
    pub max_plan_files: usize,
    pub drop_after: u32,
    pub max_program_key_bytes: usize,
    pub max_report_paths: usize,
    pub max_plan_bytecode_bytes: u64,
    pub max_cached_bytes: u64,
    pub slow_stat_ns: u64,
    pub deadline_percent: u32,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            state_write_interval: DEFAULT_STATE_WRITE_INTERVAL,
            max_plans: DEFAULT_MAX_PLANS,
            max_plans_per_uid: DEFAULT_MAX_PLANS_PER_UID,
            max_plan_directories: DEFAULT_MAX_PLAN_DIRECTORIES,
            max_plan_files: DEFAULT_MAX_PLAN_FILES,
            drop_after: DEFAULT_PLAN_DROP_AFTER,
            max_program_key_bytes: DEFAULT_MAX_PROGRAM_KEY_BYTES,
            max_report_paths: DEFAULT_MAX_REPORT_PATHS,
            max_plan_bytecode_bytes: DEFAULT_MAX_PLAN_BYTECODE_BYTES,
            max_cached_bytes: DEFAULT_MAX_CACHED_BYTES,
            slow_stat_ns: DEFAULT_SLOW_STAT_NS,
            deadline_percent: DEFAULT_DEADLINE_PERCENT,
        }
    }
}

impl PlanConfig {
    fn resolve(s: &Settings, on_default_socket: bool) -> Result<PlanConfig, ConfigError> {
        let state_dir = match &s.state_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
            None => default_state_dir_from_env(on_default_socket),
        };
        let drop_after = s.plan_drop_after.unwrap_or(DEFAULT_PLAN_DROP_AFTER);
        if drop_after == 0 {
            return Err(ConfigError::Invalid {
                key: "plan_drop_after",
                value: "0".to_string(),
                why: "must be at least 1",
            });
        }
        let deadline_percent = s.deadline_percent.unwrap_or(DEFAULT_DEADLINE_PERCENT);
        if !(1..=100).contains(&deadline_percent) {
            return Err(ConfigError::Invalid {
                key: "deadline_percent",
                value: deadline_percent.to_string(),
                why: "must be between 1 and 100",
            });
        }
        Ok(PlanConfig {
            state_dir,
            state_write_interval: s
                .state_write_interval_ms
                .map_or(DEFAULT_STATE_WRITE_INTERVAL, Duration::from_millis)
                .max(Duration::from_millis(10)),
            max_plans: s.max_plans.unwrap_or(DEFAULT_MAX_PLANS),
            max_plans_per_uid: at_least(
                "max_plans_per_uid",
                s.max_plans_per_uid.unwrap_or(DEFAULT_MAX_PLANS_PER_UID),
                1,
            )?,
            max_plan_directories: s
                .max_plan_directories
                .unwrap_or(DEFAULT_MAX_PLAN_DIRECTORIES),
            max_plan_files: s.max_plan_files.unwrap_or(DEFAULT_MAX_PLAN_FILES),
            drop_after,
            max_program_key_bytes: at_least(
                "max_program_key_bytes",
                s.max_program_key_bytes
                    .unwrap_or(DEFAULT_MAX_PROGRAM_KEY_BYTES),
                1,
            )?,
            max_report_paths: s.max_report_paths.unwrap_or(DEFAULT_MAX_REPORT_PATHS),
            max_plan_bytecode_bytes: s
                .max_plan_bytecode_bytes
                .unwrap_or(DEFAULT_MAX_PLAN_BYTECODE_BYTES),
            max_cached_bytes: s.max_cached_bytes.unwrap_or(DEFAULT_MAX_CACHED_BYTES),
            slow_stat_ns: s.slow_stat_ns.unwrap_or(DEFAULT_SLOW_STAT_NS),
            deadline_percent,
        })
    }
}

/// Everything `finderd serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub socket: PathBuf,
    /// The listening socket came from systemd (socket activation).
    pub activated: bool,
    /// Mode of the socket file; `None`: 0666 in the system directory, else 0600.
    pub socket_mode: Option<u32>,
    pub socket_dir_mode: Option<u32>,
    pub log_level: Option<String>,
    pub requests: RequestLimits,
    pub index: IndexLimits,
    pub refresh: RefreshConfig,
    pub freshness: Freshness,
    pub drain_timeout: Duration,
    /// Exit (status 0) after this long with no connection open and no
    /// request; `None`: never. For socket-activated per-user daemons.
    pub idle_exit: Option<Duration>,
    /// Async worker threads; 0: a current-thread runtime.
    pub worker_threads: usize,
    pub plans: PlanConfig,
}

fn at_least(key: &'static str, value: usize, min: usize) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            why: "must be at least 1",
        });
    }
    Ok(value)
}

impl Config {
    /// Fills what `settings` leaves out with the defaults.
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        let s = settings;
        let default_socket = default_socket_path_from_env();
        let socket = s.socket.clone().unwrap_or_else(|| default_socket.clone());
        let socket = std::path::absolute(&socket).unwrap_or(socket);
        let plans = PlanConfig::resolve(&s, socket == default_socket)?;
        let slots = s.generation_slots.unwrap_or(DEFAULT_GENERATION_SLOTS);
        if slots < 2 {
            return Err(ConfigError::Invalid {
                key: "generation_slots",
                value: slots.to_string(),
                why: "must be at least 2 (slot 0 means none)",
            });
        }
        Ok(Config {
            socket,
            activated: false,
            socket_mode: s.socket_mode,
            socket_dir_mode: s.socket_dir_mode,
            log_level: s.log_level,
            requests: RequestLimits {
                max_request_bytes: s.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
                max_sys_path_entries: s
                    .max_sys_path_entries
                    .unwrap_or(DEFAULT_MAX_SYS_PATH_ENTRIES),
                max_lookup_paths: s.max_lookup_paths.unwrap_or(DEFAULT_MAX_LOOKUP_PATHS),
                max_requests_per_peer: at_least(
                    "max_requests_per_peer",
                    s.max_requests_per_peer
                        .unwrap_or(DEFAULT_MAX_REQUESTS_PER_PEER),
                    1,
                )?,
                max_connections_per_peer: at_least(
                    "max_connections_per_peer",
                    s.max_connections_per_peer
                        .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_PEER),
                    1,
                )?,
            },
            index: IndexLimits {
                max_entries_per_directory: s
                    .max_entries_per_directory
                    .unwrap_or(DEFAULT_MAX_ENTRIES_PER_DIRECTORY),
                max_indexed_entries: at_least(
                    "max_indexed_entries",
                    s.max_indexed_entries.unwrap_or(DEFAULT_MAX_INDEXED_ENTRIES),
                    1,
                )?,
                max_watches: s.max_watches,
            },
            refresh: RefreshConfig {
                engine: s.refresh_engine.unwrap_or_default(),
                uring_batch: at_least(
                    "uring_batch",
                    s.uring_batch.unwrap_or(DEFAULT_URING_BATCH),
                    1,
                )?
                .min(4096),
                recalibrate: s
                    .recalibrate_secs
                    .map_or(DEFAULT_RECALIBRATE, Duration::from_secs),
                poll_interval: s
                    .poll_interval_ms
                    .map_or(DEFAULT_POLL_INTERVAL, Duration::from_millis)
                    .max(Duration::from_millis(10)),
                poll_filesystems: s.poll_filesystems.unwrap_or_default(),
            },
            freshness: Freshness {
                slots,
                lease: s.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis),
                active_window: s
                    .active_window_secs
                    .map_or(DEFAULT_ACTIVE_WINDOW, Duration::from_secs),
            },
            drain_timeout: s
                .drain_timeout_ms
                .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_millis),
            idle_exit: s
                .idle_exit
                .filter(|&secs| secs > 0)
                .map(Duration::from_secs),
            worker_threads: s.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS),
            plans,
        })
    }

    /// The settings a running daemon cannot change without a restart, that
    /// differ between `self` and `new` (for the reload log).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if !self.activated && self.socket != new.socket {
            changed.push("socket");
        }
        if self.socket_mode != new.socket_mode {
            changed.push("socket_mode");
        }
        if self.socket_dir_mode != new.socket_dir_mode {
            changed.push("socket_dir_mode");
        }
        if self.freshness.slots != new.freshness.slots {
            changed.push("generation_slots");
        }
        if self.freshness.lease != new.freshness.lease {
            changed.push("lease_ms");
        }
        if self.worker_threads != new.worker_threads {
            changed.push("worker_threads");
        }
        if self.plans != new.plans {
            changed.push("plan settings (state_dir, max_plans, ...)");
        }
        changed
    }

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
        self.socket_dir_mode.unwrap_or(if self.is_system_socket() {
            0o755
        } else {
            0o700
        })
    }

    /// Every limit by its config key, as reported in stats (0: no limit).
    pub fn limits(&self) -> Vec<(&'static str, u64)> {
        let n = |v: usize| v as u64;
        vec![
            ("max_request_bytes", n(self.requests.max_request_bytes)),
            (
                "max_sys_path_entries",
                n(self.requests.max_sys_path_entries),
            ),
            ("max_lookup_paths", n(self.requests.max_lookup_paths)),
            (
                "max_requests_per_peer",
                n(self.requests.max_requests_per_peer),
            ),
            (
                "max_connections_per_peer",
                n(self.requests.max_connections_per_peer),
            ),
            (
                "max_entries_per_directory",
                n(self.index.max_entries_per_directory),
            ),
            ("max_indexed_entries", n(self.index.max_indexed_entries)),
            ("max_watches", self.index.max_watches.map_or(0, n)),
            ("generation_slots", u64::from(self.freshness.slots)),
            ("lease_ms", self.freshness.lease.as_millis() as u64),
            ("active_window_secs", self.freshness.active_window.as_secs()),
            ("drain_timeout_ms", self.drain_timeout.as_millis() as u64),
            ("idle_exit", self.idle_exit.map_or(0, |d| d.as_secs())),
            (
                "poll_interval_ms",
                self.refresh.poll_interval.as_millis() as u64,
            ),
            ("uring_batch", n(self.refresh.uring_batch)),
            ("recalibrate_secs", self.refresh.recalibrate.as_secs()),
            ("worker_threads", n(self.worker_threads)),
            ("max_plans", n(self.plans.max_plans)),
            ("max_plans_per_uid", n(self.plans.max_plans_per_uid)),
            ("max_plan_directories", n(self.plans.max_plan_directories)),
            ("max_plan_files", n(self.plans.max_plan_files)),
            ("plan_drop_after", u64::from(self.plans.drop_after)),
            ("max_program_key_bytes", n(self.plans.max_program_key_bytes)),
            ("max_report_paths", n(self.plans.max_report_paths)),
            (
                "max_plan_bytecode_bytes",
                self.plans.max_plan_bytecode_bytes,
            ),
            ("max_cached_bytes", self.plans.max_cached_bytes),
            ("slow_stat_ns", self.plans.slow_stat_ns),
            (
                "state_write_interval_ms",
                self.plans.state_write_interval.as_millis() as u64,
            ),
            ("deadline_percent", u64::from(self.plans.deadline_percent)),
        ]
    }
}

/// The limits a SIGHUP may change, read by request handlers and the index
/// without a lock.
#[derive(Debug, Default)]
pub struct LiveLimits {
    pub max_request_bytes: AtomicUsize,
    pub max_sys_path_entries: AtomicUsize,
    pub max_lookup_paths: AtomicUsize,
    pub max_requests_per_peer: AtomicUsize,
    pub max_connections_per_peer: AtomicUsize,
    pub max_entries_per_directory: AtomicUsize,
    pub max_indexed_entries: AtomicUsize,
    /// `usize::MAX`: no limit of our own.
    pub max_watches: AtomicUsize,
    pub poll_interval_ms: AtomicU64,
    pub active_window_ms: AtomicU64,
}

impl LiveLimits {
    pub fn new(config: &Config) -> Self {
        let live = Self::default();
        live.store(config);
        live
    }

    /// Publishes the limits of `config`.
    pub fn store(&self, config: &Config) {
        let set = |a: &AtomicUsize, v: usize| a.store(v, Ordering::Relaxed);
        set(&self.max_request_bytes, config.requests.max_request_bytes);
        set(
            &self.max_sys_path_entries,
            config.requests.max_sys_path_entries,
        );
        set(&self.max_lookup_paths, config.requests.max_lookup_paths);
        set(
            &self.max_requests_per_peer,
            config.requests.max_requests_per_peer,
        );
        set(
            &self.max_connections_per_peer,
            config.requests.max_connections_per_peer,
        );
        set(
            &self.max_entries_per_directory,
            config.index.max_entries_per_directory,
        );
        set(&self.max_indexed_entries, config.index.max_indexed_entries);
        set(
            &self.max_watches,
            config.index.max_watches.unwrap_or(usize::MAX),
        );
        self.poll_interval_ms.store(
            config.refresh.poll_interval.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.active_window_ms.store(
            config.freshness.active_window.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    pub fn get(value: &AtomicUsize) -> usize {
        value.load(Ordering::Relaxed)
    }

    pub fn max_watches(&self) -> Option<usize> {
        Some(Self::get(&self.max_watches)).filter(|&v| v != usize::MAX)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.load(Ordering::Relaxed))
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

/// The default directory of the plan state file: `$STATE_DIRECTORY` (set by
/// systemd's `StateDirectory=`; the first of a `:`-separated list); else,
/// for a daemon on the default socket only, `/var/lib/finderd` for root,
/// `$XDG_STATE_HOME/finderd`, or `$HOME/.local/state/finderd`; else none.
/// A daemon on a socket of its own (a test, a CI job, a second instance)
/// keeps its plans in memory unless given a directory: it must not replace
/// the host daemon's file. Empty variables count as unset.
pub fn default_state_dir(
    env: impl Fn(&str) -> Option<OsString>,
    euid: u32,
    on_default_socket: bool,
) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(dirs) = set("STATE_DIRECTORY") {
        let first = dirs
            .as_encoded_bytes()
            .split(|&b| b == b':')
            .find(|d| !d.is_empty())
            .map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)));
        if first.is_some() {
            return first;
        }
    }
    if !on_default_socket {
        return None;
    }
    if euid == 0 {
        return Some(PathBuf::from("/var/lib/finderd"));
    }
    if let Some(state) = set("XDG_STATE_HOME") {
        return Some(Path::new(&state).join("finderd"));
    }
    set("HOME").map(|home| Path::new(&home).join(".local/state/finderd"))
}

fn default_state_dir_from_env(on_default_socket: bool) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    default_state_dir(|name| std::env::var_os(name), euid, on_default_socket)
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
    fn state_dir_precedence() {
        let state = |vars: &[(&str, &str)], euid: u32| {
            let vars: HashMap<String, OsString> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            default_state_dir(|name| vars.get(name).cloned(), euid, true)
        };
        let all = [
            ("STATE_DIRECTORY", "/var/lib/finderd-unit:/other"),
            ("XDG_STATE_HOME", "/home/u/.state"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            state(&all, 1000),
            Some(PathBuf::from("/var/lib/finderd-unit"))
        );
        assert_eq!(state(&all[1..], 0), Some(PathBuf::from("/var/lib/finderd")));
        assert_eq!(
            state(&all[1..], 1000),
            Some(PathBuf::from("/home/u/.state/finderd"))
        );
        assert_eq!(
            state(&all[2..], 1000),
            Some(PathBuf::from("/home/u/.local/state/finderd"))
        );
        assert_eq!(state(&[("STATE_DIRECTORY", "")], 1000), None);
        let env = |name: &str| {
            all.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        assert_eq!(
            default_state_dir(env, 0, false),
            Some(PathBuf::from("/var/lib/finderd-unit")),
            "systemd's StateDirectory= holds on any socket"
        );
        let env = |name: &str| {
            all[1..]
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        assert_eq!(
            default_state_dir(env, 0, false),
            None,
            "a socket of its own: memory only"
        );
    }

    #[test]
    fn plan_settings_resolve_and_are_checked() {
        let path = Path::new("f.toml");
        let file = Settings::from_toml(
            "state_dir = \"\"\nmax_plans = 7\nplan_drop_after = 2\nslow_stat_ns = 5\n",
            path,
        )
        .expect("parses");
        let config = Config::resolve(file).expect("valid");
        assert_eq!(config.plans.state_dir, None, "\"\" disables the state file");
        assert_eq!(config.plans.max_plans, 7);
        assert_eq!(config.plans.drop_after, 2);
        assert_eq!(config.plans.slow_stat_ns, 5);
        for bad in [
            "plan_drop_after = 0\n",
            "deadline_percent = 0\n",
            "deadline_percent = 101\n",
        ] {
            let settings = Settings::from_toml(bad, path).expect("parses");
            assert!(Config::resolve(settings).is_err(), "{bad}");
        }
    }

    #[test]
    fn generation_file_is_beside_the_socket() {
        assert_eq!(
            generation_file_for(Path::new("/run/finderd/finderd.sock")),
            PathBuf::from("/run/finderd/finderd.sock.gen")
        );
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal("600"), Ok(0o600));
        assert_eq!(parse_octal("0666"), Ok(0o666));
        assert_eq!(parse_octal("0o640"), Ok(0o640));
        assert!(parse_octal("888").is_err());
        assert!(parse_octal("7777").is_err());
    }

    #[test]
    fn file_keys_parse_and_flags_win() {
        let path = Path::new("/etc/finderd/finderd.toml");
        let file = Settings::from_toml(
            "socket_mode = 0o640\nsocket_dir_mode = \"750\"\nmax_lookup_paths = 7\n\
             max_requests_per_peer = 3\nmax_connections_per_peer = 5\npoll_filesystems = [\"overlay\", \"0x1234\"]\n\
             refresh_engine = \"sync\"\nidle_exit = 30\n",
            path,
        )
        .expect("parses");
        let flags = Settings {
            max_lookup_paths: Some(9),
            ..Settings::default()
        };
        let config = Config::resolve(file.layered(flags)).expect("valid");
        assert_eq!(config.socket_mode, Some(0o640));
        assert_eq!(config.socket_dir_mode(), 0o750);
        assert_eq!(config.requests.max_lookup_paths, 9, "the flag wins");
        assert_eq!(config.requests.max_requests_per_peer, 3);
        assert_eq!(config.requests.max_connections_per_peer, 5);
        assert_eq!(config.refresh.engine, Engine::Sync);
        assert_eq!(config.refresh.poll_filesystems, ["overlay", "0x1234"]);
        assert_eq!(config.idle_exit, Some(Duration::from_secs(30)));
        assert_eq!(
            config.requests.max_sys_path_entries,
            DEFAULT_MAX_SYS_PATH_ENTRIES
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let path = Path::new("f.toml");
        let unknown = Settings::from_toml("max_lookup_pathz = 3\n", path).expect_err("unknown");
        assert!(
            unknown.to_string().contains("max_lookup_pathz"),
            "{unknown}"
        );
        let zero = Settings::from_toml("max_requests_per_peer = 0\n", path).expect("parses");
        let error = Config::resolve(zero).expect_err("zero");
        assert!(
            error.to_string().contains("max_requests_per_peer"),
            "{error}"
        );
    }
}
