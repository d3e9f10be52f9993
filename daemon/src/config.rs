//! Every setting of `finderd serve`, in one table: its key (the TOML key;
//! the flag is the key with `-` for `_`), type, default, check, whether
//! SIGHUP applies it, and its documentation line. From the table come the
//! flags and file keys ([`Settings`]), the layering (defaults, then the TOML
//! file, then the flags, the later winning) into checked [`Values`], the
//! limits SIGHUP changes at once ([`LiveLimits`]), the restart-only warning
//! ([`Values::reloaded`]), the limits `finderd stats` reports, and the
//! settings table of docs/operating.md (a test fails when it is stale).
//!
//! A new limit is one row: `reload: Limit` makes it a field of
//! [`LiveLimits`] that SIGHUP updates, read with [`LiveLimits::get`].

#[macro_use]
mod table;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;

pub use table::{at_least, between, raised_to, LiveValue, Reload, Reported, Setting};

settings_table! {
    /// The listening socket (ignored under socket activation, which passes
    /// the socket).
    socket: PathBuf {
        shown: "`$FINDERD_SOCKET`, `$XDG_RUNTIME_DIR/finderd/finderd.sock`, `/run/finderd/finderd.sock` as root, else `/tmp/finderd-$UID/finderd.sock`",
        reload: Restart,
        arg: (long, value_name = "PATH"),
    }
    /// A log level or a `RUST_LOG` filter (it overrides `RUST_LOG`).
    log_level: String {
        shown: "`RUST_LOG`, else `info`",
        reload: Live,
        arg: (long, value_name = "LEVEL"),
    }
    /// Mode of the socket file, in octal.
    socket_mode: Mode {
        shown: "666 in `/run/finderd`, else 600",
        reload: Restart,
        arg: (long, value_name = "OCTAL", value_parser = parse_octal),
    }
    /// Mode of a socket directory the daemon creates, in octal; an existing
    /// `/tmp/finderd-$UID` must be ours and not writable by others.
    socket_dir_mode: Mode {
        shown: "755 for `/run/finderd`, else 700",
        reload: Restart,
        arg: (long, value_name = "OCTAL", value_parser = parse_octal),
    }
    /// Largest request body, in bytes; a larger one is RESOURCE_EXHAUSTED
    /// naming the limit.
    max_request_bytes: usize {
        default: 4 << 20,
        reload: Limit,
        arg: (long, value_name = "BYTES"),
    }
    /// Most `sys_path` entries in one Snapshot; more is RESOURCE_EXHAUSTED
    /// naming the limit.
    max_sys_path_entries: usize {
        default: 4096,
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Most paths in one Lookup; more is RESOURCE_EXHAUSTED naming the
    /// limit.
    max_lookup_paths: usize {
        default: 4096,
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Requests one peer uid may have in flight; the next is
    /// RESOURCE_EXHAUSTED naming the limit, other uids are still served.
    max_requests_per_peer: usize {
        default: 128,
        reload: Limit,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Connections one peer uid may hold open (one per running
    /// interpreter); a further one gets a GOAWAY naming the limit and is
    /// closed, so that uid's further interpreters run stock CPython while
    /// others are still served. The daemon raises its soft descriptor limit
    /// to the hard one at start.
    max_connections_per_peer: usize {
        default: 1024,
        reload: Limit,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Most entries in a served directory; a larger one is NOT_SERVED, the
    /// reason naming the limit.
    max_entries_per_directory: usize {
        default: 1_000_000,
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Most entries across the index (about 0.6 GB at the default); past it
    /// the least recently answered listings are evicted down to 90% (clients
    /// revalidate them); a single larger directory is answered, not kept.
    max_indexed_entries: usize {
        default: 4_000_000,
        reload: Limit,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Most inotify watches this daemon holds; past it (or when the kernel
    /// refuses one) a directory is served without being kept: read again
    /// for every request that asks for it.
    max_watches: usize {
        shown: "the kernel's `fs.inotify.max_user_watches`",
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Index nodes (listings and absences, each holding a generation slot)
    /// kept for one peer uid; past it that uid's own least recently used are
    /// evicted. What the index keeps is charged to the uid last served it.
    max_nodes_per_uid: u64 {
        default: 0,
        shown: "a quarter of `generation_slots` (at least 1024)",
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Listing entries kept for one peer uid; past it its own least recently
    /// used listings are evicted.
    max_indexed_entries_per_uid: u64 {
        default: 1_000_000,
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Heap bytes of the index (listings, and the lookups that keep them
    /// fresh) kept for one peer uid; past it its own least recently used
    /// are evicted.
    max_index_bytes_per_uid: u64 {
        default: 64 << 20,
        reload: Limit,
        arg: (long, value_name = "BYTES"),
    }
    /// Inotify watches one peer uid's crawls may hold; past it its crawls
    /// are answered without being kept (read again at every request).
    max_watches_per_uid: u64 {
        default: 0,
        shown: "a quarter of the daemon's watches",
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// Peer views (the root directories container peers pass at connect)
    /// one peer uid may have open at once, each with its own index and
    /// inotify instance (the kernel's `fs.inotify.max_user_instances`
    /// bounds them all); a connection past it is answered NOT_SERVED for
    /// every path, naming the limit. A view goes with its last connection.
    max_views_per_uid: u64 {
        default: 32,
        reload: Limit,
        arg: (long, value_name = "N"),
    }
    /// How long a peer view is kept after its last connection closed, in
    /// milliseconds, so that the next interpreter of the same container
    /// finds its index warm; 0: it goes with its last connection. A
    /// lingering view keeps its container's root mount open, and is the
    /// first to go when its uid needs room for a new view.
    view_linger_ms: u64 {
        default: 10_000,
        reload: Limit,
        arg: (long, value_name = "MS"),
    }
    /// Bytes one peer uid may have in flight (request bodies being
    /// received, requests being answered, replies being sent); more is
    /// RESOURCE_EXHAUSTED naming the limit.
    max_inflight_bytes_per_uid: u64 {
        default: 64 << 20,
        reload: Limit,
        arg: (long, value_name = "BYTES"),
    }
    /// Largest reply; a requested directory that would not fit is
    /// NOT_SERVED, planned and prefetched ones are left out.
    max_reply_bytes: u64 {
        default: 48 << 20,
        reload: Limit,
        arg: (long, value_name = "BYTES"),
    }
    /// Requests one connection may have in flight at once (HTTP/2 streams).
    max_streams_per_connection: u32 {
        default: 16,
        reload: Restart,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Slots in the generation file (8 bytes each); further directories get
    /// no slot and clients revalidate them with a Lookup.
    generation_slots: u32 {
        default: 262_144,
        reload: Restart,
        check: at_least(2),
        arg: (long, value_name = "N"),
    }
    /// How long running clients trust the generation file after the daemon
    /// last read its change queue, in milliseconds.
    lease_ms: u64 {
        default: 200,
        reload: Restart,
        arg: (long, value_name = "MS"),
    }
    /// After a request, how long the daemon keeps the lease fresh, in
    /// seconds.
    active_window_secs: u64 {
        default: 10,
        reload: Limit,
        arg: (long, value_name = "SECS"),
    }
    /// On SIGTERM, how long to wait for requests in flight before exiting
    /// anyway, in milliseconds.
    drain_timeout_ms: u64 {
        default: 5000,
        reload: Live,
        arg: (long, value_name = "MS"),
    }
    /// Exit 0 after this many seconds without requests (connections left
    /// open between requests do not count: their clients reconnect; for
    /// socket-activated daemons, systemd starts it again on the next
    /// connection); 0: never.
    idle_exit: u64 {
        default: 0,
        shown: "0 (never)",
        reload: Live,
        arg: (long, value_name = "SECS"),
    }
    /// How often directories on filesystems inotify cannot see are checked
    /// in the background, in milliseconds (at least 10); requests check
    /// them anyway.
    poll_interval_ms: u64 {
        default: 1000,
        reload: Limit,
        check: raised_to(10),
        arg: (long, value_name = "MS"),
    }
    /// More filesystem types to poll (a name as in /proc/filesystems, e.g.
    /// `overlay`, or a statfs magic such as `0x794c7630`); the flag is
    /// repeatable, the key a list.
    poll_filesystems: Vec<String> {
        default: Vec::new(),
        shown: "nfs, cifs/smb, fuse, 9p, afs, ceph, lustre, gpfs and others",
        reload: Restart,
        arg: (long = "poll-filesystem", value_name = "TYPE"),
    }
    /// How crawls stat directory entries: `auto` measures per filesystem
    /// and keeps the faster, `sync` uses system calls, `uring` io_uring.
    refresh_engine: Engine {
        default: Engine::Auto,
        reload: Restart,
        arg: (long, value_enum, value_name = "ENGINE"),
    }
    /// Entries per io_uring submission.
    uring_batch: usize {
        default: 64,
        reload: Restart,
        check: between(1, 4096),
        arg: (long, value_name = "N"),
    }
    /// Upper bound of the interval after which `auto` measures a filesystem
    /// again (10 s, 20 s, 40 s... up to this), in seconds.
    recalibrate_secs: u64 {
        default: 3600,
        reload: Restart,
        arg: (long, value_name = "SECS"),
    }
    /// Async worker threads serving the wire; 0: one current-thread runtime
    /// (crawls use the blocking pool either way).
    worker_threads: usize {
        default: 0,
        reload: Restart,
        arg: (long, value_name = "N"),
    }
    /// Where `plans.state` (learned plans) is kept; "" keeps plans in
    /// memory only, as does a daemon on a socket of its own by default.
    state_dir: PathBuf {
        shown: "`$STATE_DIRECTORY` (the units set it); else, on the default socket only, `/var/lib/finderd` as root or `$XDG_STATE_HOME/finderd` or `~/.local/state/finderd`",
        reload: Restart,
        arg: (long, value_name = "DIR"),
    }
    /// How often changed plans are written (and at shutdown), in
    /// milliseconds.
    state_write_interval_ms: u64 {
        default: 2000,
        reload: Restart,
        check: raised_to(10),
        arg: (long, value_name = "MS"),
    }
    /// Learned plans kept in total; the least recently used are evicted; 0
    /// learns none.
    max_plans: usize {
        default: 1024,
        reload: Restart,
        arg: (long, value_name = "N"),
    }
    /// Learned plans one peer uid may have; its least recently used go
    /// first.
    max_plans_per_uid: usize {
        default: 256,
        reload: Restart,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Bytes of learned plans one peer uid may have; its least recently
    /// used plans go first, then new entries are not learned.
    max_plan_bytes_per_uid: u64 {
        default: 8 << 20,
        reload: Restart,
        arg: (long, value_name = "BYTES"),
    }
    /// Largest plan state file; past it every uid keeps a fair share of its
    /// most recently used plans.
    max_state_bytes: u64 {
        default: 64 << 20,
        reload: Restart,
        arg: (long, value_name = "BYTES"),
    }
    /// Directories one plan names; new ones past it are not learned.
    max_plan_directories: usize {
        default: 4096,
        reload: Restart,
        arg: (long, value_name = "N"),
    }
    /// Compiled files one plan names; new ones past it are not learned.
    max_plan_files: usize {
        default: 4096,
        reload: Restart,
        arg: (long, value_name = "N"),
    }
    /// A plan entry left out of this many consecutive Reports drops out.
    plan_drop_after: u32 {
        default: 3,
        reload: Restart,
        check: at_least(1),
        arg: (long, value_name = "N"),
    }
    /// Longest program key accepted; a longer one in a Report is
    /// RESOURCE_EXHAUSTED naming the limit.
    max_program_key_bytes: usize {
        default: 64 * 1024,
        reload: Restart,
        check: at_least(1),
        arg: (long, value_name = "BYTES"),
    }
    /// Most directories, and most compiled files, in one Report; more is
    /// RESOURCE_EXHAUSTED naming the limit.
    max_report_paths: usize {
        default: 16 * 1024,
        reload: Restart,
        arg: (long, value_name = "N"),
    }
    /// Bytes of compiled files one Snapshot may carry for a plan.
    max_plan_bytecode_bytes: u64 {
        default: 32 << 20,
        reload: Restart,
        arg: (long, value_name = "BYTES"),
    }
    /// Bytes of compiled files kept in memory in total (the least recently
    /// served are evicted); 0 serves none.
    max_cached_bytes: u64 {
        default: 256 << 20,
        reload: Restart,
        arg: (long, value_name = "BYTES"),
    }
    /// A filesystem whose measured stat costs at least this many
    /// nanoseconds is slow: compiled files there are served from memory
    /// (polled filesystems always are).
    slow_stat_ns: u64 {
        default: 20_000,
        reload: Restart,
        arg: (long, value_name = "NS"),
    }
    /// A request carrying a `grpc-timeout` is answered by this percentage of
    /// it; directories not indexed by then are NOT_SERVED "being indexed"
    /// and their crawl goes on.
    deadline_percent: u32 {
        default: 75,
        reload: Restart,
        check: between(1, 100),
        arg: (long, value_name = "PERCENT"),
    }
}

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
        why: String,
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

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A file mode, given in octal: `600` or `0o600` on the command line; a
/// TOML integer (`0o600`) or string (`"600"`) in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

fn parse_octal(text: &str) -> Result<Mode, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .map(Mode)
        .ok_or_else(|| format!("{text:?} is not an octal file mode (e.g. 600)"))
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(u32),
            Text(String),
        }
        match Given::deserialize(d)? {
            Given::Number(n) if n <= 0o777 => Ok(Mode(n)),
            Given::Number(n) => Err(serde::de::Error::custom(format!("mode {n:o} is over 777"))),
            Given::Text(text) => parse_octal(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Settings {
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
        Ok(Config::from_values(self.values()?))
    }

    /// The file's values under the flags', defaults filled in, checked.
    pub fn values(&self) -> Result<Values, ConfigError> {
        let file = read_file(self.file.as_deref())?;
        Values::resolve(file.layered(self.flags.clone()))
    }
}

/// How directories are read and kept fresh where inotify cannot help (the
/// refresh engines' part of the values).
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
        Values::default().refresh()
    }
}

/// Learned plans, compiled files served from memory, request deadlines (the
/// plans' part of the values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// Where the plan state file lives; `None`: plans are not persisted.
    pub state_dir: Option<PathBuf>,
    pub state_write_interval: Duration,
    /// 0: no plan is learned.
    pub max_plans: usize,
    pub max_plans_per_uid: usize,
    pub max_plan_bytes_per_uid: u64,
    pub max_state_bytes: u64,
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
        Values::default().plans(None)
    }
}

impl Values {
    fn refresh(&self) -> RefreshConfig {
        RefreshConfig {
            engine: self.refresh_engine,
            uring_batch: self.uring_batch,
            recalibrate: Duration::from_secs(self.recalibrate_secs),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            poll_filesystems: self.poll_filesystems.clone(),
        }
    }

    fn plans(&self, state_dir: Option<PathBuf>) -> PlanConfig {
        PlanConfig {
            state_dir,
            state_write_interval: Duration::from_millis(self.state_write_interval_ms),
            max_plans: self.max_plans,
            max_plans_per_uid: self.max_plans_per_uid,
            max_plan_bytes_per_uid: self.max_plan_bytes_per_uid,
            max_state_bytes: self.max_state_bytes,
            max_plan_directories: self.max_plan_directories,
            max_plan_files: self.max_plan_files,
            drop_after: self.plan_drop_after,
            max_program_key_bytes: self.max_program_key_bytes,
            max_report_paths: self.max_report_paths,
            max_plan_bytecode_bytes: self.max_plan_bytecode_bytes,
            max_cached_bytes: self.max_cached_bytes,
            slow_stat_ns: self.slow_stat_ns,
            deadline_percent: self.deadline_percent,
        }
    }

    /// The state directory: the given one ("" for none), else the default.
    fn state_dir(&self, on_default_socket: bool) -> Option<PathBuf> {
        match &self.state_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
            None => default_state_dir_from_env(on_default_socket),
        }
    }
}

/// Everything `finderd serve` needs: the values, and what is derived from
/// them once at start (all from restart-only rows, so a reload keeps them).
#[derive(Clone, Debug)]
pub struct Config {
    pub values: Values,
    /// The socket, absolute (`values.socket` or the default); under socket
    /// activation, the one systemd passed.
    pub socket: PathBuf,
    /// The listening socket came from systemd (socket activation).
    pub activated: bool,
    pub refresh: RefreshConfig,
    pub plans: PlanConfig,
}

impl Config {
    /// Fills what `settings` leaves out with the defaults.
    #[cfg(test)]
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        Ok(Config::from_values(Values::resolve(settings)?))
    }

    /// The config of checked values: the socket and the refresh and plan
    /// settings derived from them.
    pub fn from_values(values: Values) -> Config {
        let default_socket = default_socket_path_from_env();
        let socket = values
            .socket
            .clone()
            .unwrap_or_else(|| default_socket.clone());
        let socket = std::path::absolute(&socket).unwrap_or(socket);
        let plans = values.plans(values.state_dir(socket == default_socket));
        Config {
            refresh: values.refresh(),
            plans,
            socket,
            activated: false,
            values,
        }
    }

    /// The config a SIGHUP with `new` leaves running, and the restart-only
    /// keys whose change waits for the next start (for the reload log).
    pub fn reloaded(&self, new: Values) -> (Config, Vec<&'static str>) {
        let (values, mut waiting) = self.values.reloaded(new);
        if self.activated {
            // Under socket activation the configured socket means nothing.
            waiting.retain(|key| *key != "socket");
        }
        let config = Config {
            values,
            ..self.clone()
        };
        (config, waiting)
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
        let default = if self.is_system_socket() {
            0o666
        } else {
            0o600
        };
        self.values.socket_mode.map_or(default, |mode| mode.0)
    }

    /// Mode for a socket directory the daemon creates.
    pub fn socket_dir_mode(&self) -> u32 {
        let default = if self.is_system_socket() {
            0o755
        } else {
            0o700
        };
        self.values.socket_dir_mode.map_or(default, |mode| mode.0)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.values.lease_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.values.drain_timeout_ms)
    }

    /// Exit (status 0) after this long with no connection open and no
    /// request; `None`: never.
    pub fn idle_exit(&self) -> Option<Duration> {
        Some(self.values.idle_exit)
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs)
    }

    /// Every limit by its config key, as reported in stats (0: no limit).
    pub fn limits(&self) -> Vec<(&'static str, u64)> {
        self.values.limits()
    }
}

impl LiveLimits {
    pub fn new(config: &Config) -> Self {
        let live = Self::default();
        live.store(config);
        live
    }

    /// Publishes the limits of `config`.
    pub fn store(&self, config: &Config) {
        self.store_values(&config.values);
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

    /// How long a view outlives its last connection.
    pub fn view_linger(&self) -> Duration {
        Duration::from_millis(self.view_linger_ms.load(Ordering::Relaxed))
    }

    /// After a request, how long the lease is kept fresh.
    pub fn active_window(&self) -> Duration {
        Duration::from_secs(self.active_window_secs.load(Ordering::Relaxed))
    }
}

/// The settings table of docs/operating.md: every row with its flag, file
/// key, default, what SIGHUP does, and its documentation line.
#[cfg(test)]
pub fn markdown_table() -> String {
    use clap::Args as _;
    let flags = Settings::augment_args(clap::Command::new("serve"));
    let mut out = String::from(
        "| flag / key | default | SIGHUP | what it bounds, what happens past it |\n\
         | --- | --- | --- | --- |\n\
         | `--config PATH` | `/etc/finderd/finderd.toml` when it exists | re-read | the TOML file (flag only) |\n",
    );
    for row in table() {
        let arg = flags
            .get_arguments()
            .find(|arg| arg.get_id() == row.key)
            .expect("every row is a flag");
        let long = arg.get_long().unwrap_or(row.key);
        let flag = match arg.get_value_names() {
            Some([name, ..]) => format!("--{long} {name}"),
            _ => format!("--{long}"),
        };
        let reload = match row.reload {
            Reload::Limit | Reload::Live => "applied",
            Reload::Restart => "restart",
        };
        out.push_str(&format!(
            "| `{flag}` / `{}` | {} | {reload} | {} |\n",
            row.key, row.default, row.doc
        ));
    }
    out
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
        let error =
            Config::resolve(Settings::from_toml("deadline_percent = 101\n", path).expect("parses"))
                .expect_err("out of range");
        assert_eq!(
            error.to_string(),
            "deadline_percent = 101 is out of range: must be between 1 and 100"
        );
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
        assert_eq!(parse_octal("600"), Ok(Mode(0o600)));
        assert_eq!(parse_octal("0666"), Ok(Mode(0o666)));
        assert_eq!(parse_octal("0o640"), Ok(Mode(0o640)));
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
        assert_eq!(config.effective_socket_mode(), 0o640);
        assert_eq!(config.socket_dir_mode(), 0o750);
        assert_eq!(config.values.max_lookup_paths, 9, "the flag wins");
        assert_eq!(config.values.max_requests_per_peer, 3);
        assert_eq!(config.values.max_connections_per_peer, 5);
        assert_eq!(config.refresh.engine, Engine::Sync);
        assert_eq!(config.refresh.poll_filesystems, ["overlay", "0x1234"]);
        assert_eq!(config.idle_exit(), Some(Duration::from_secs(30)));
        assert_eq!(
            config.values.max_sys_path_entries,
            Values::default().max_sys_path_entries,
            "the default"
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

    #[test]
    fn a_reload_applies_live_values_and_names_the_restart_only_ones() {
        let running = Config::resolve(Settings::default()).expect("defaults");
        let changed = Settings::from_toml(
            "max_lookup_paths = 7\nuring_batch = 8\nlease_ms = 9\nidle_exit = 3\n",
            Path::new("f.toml"),
        )
        .expect("parses");
        let (reloaded, waiting) = running.reloaded(Values::resolve(changed).expect("valid"));
        assert_eq!(waiting, ["lease_ms", "uring_batch"], "in table order");
        assert_eq!(reloaded.values.max_lookup_paths, 7, "a limit applies");
        assert_eq!(reloaded.idle_exit(), Some(Duration::from_secs(3)), "live");
        assert_eq!(reloaded.values.uring_batch, running.values.uring_batch);
        assert_eq!(reloaded.lease(), running.lease(), "restart-only: kept");
        assert_eq!(reloaded.refresh, running.refresh);
    }

    #[test]
    fn live_limits_are_the_limit_rows() {
        let settings = Settings::from_toml(
            "max_watches = 5\nactive_window_secs = 2\npoll_interval_ms = 1\n",
            Path::new("f.toml"),
        )
        .expect("parses");
        let limits = LiveLimits::new(&Config::resolve(settings).expect("valid"));
        assert_eq!(limits.max_watches(), Some(5));
        assert_eq!(limits.active_window(), Duration::from_secs(2));
        assert_eq!(limits.poll_interval(), Duration::from_millis(10), "raised");
        let defaults = LiveLimits::new(&Config::resolve(Settings::default()).expect("ok"));
        assert_eq!(defaults.max_watches(), None);
    }

    #[test]
    fn the_flags_help_shows_the_default_and_restart_only() {
        use clap::Args as _;
        let command = Settings::augment_args(clap::Command::new("serve"));
        let help = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id);
            arg.and_then(|a| a.get_help()).map(|h| h.to_string())
        };
        let lease = help("lease_ms").expect("lease_ms");
        assert!(
            lease.ends_with("(restart to change) [default: 200]"),
            "{lease}"
        );
        let requests = help("max_request_bytes").expect("max_request_bytes");
        assert!(
            requests.ends_with("naming the limit. [default: 4194304]"),
            "{requests}"
        );
    }

    /// The repository's copy of `relative`, checked against `fresh`: when
    /// they differ, the fresh text is written and the test fails.
    fn current_or_rewritten(relative: &str, fresh: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        if checked_in != fresh {
            std::fs::write(&path, fresh).expect("rewrite");
            panic!("{relative} did not match the settings table in config.rs; rewritten: review and commit it");
        }
    }

    #[test]
    fn the_docs_settings_table_is_the_tables() {
        const BEGIN: &str = "<!-- settings table: generated from daemon/src/config.rs by `cargo test -p finderd`; do not edit -->\n";
        const END: &str = "<!-- end of the settings table -->\n";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md");
        let docs = std::fs::read_to_string(&path).expect("docs/operating.md");
        let (before, rest) = docs.split_once(BEGIN).expect("the table's begin marker");
        let (_, after) = rest.split_once(END).expect("the table's end marker");
        let fresh = format!("{before}{BEGIN}{}{END}{after}", markdown_table());
        current_or_rewritten("docs/operating.md", &fresh);
    }

    #[test]
    fn the_example_config_file_shows_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/finderd.toml");
        let example = std::fs::read_to_string(path).expect("deploy/systemd/finderd.toml");
        let shown: Vec<&str> = example
            .lines()
            .filter_map(|line| line.strip_prefix("# ")?.split_once(" = "))
            .map(|(key, _)| key)
            .collect();
        let keys: Vec<&str> = table().iter().map(|row| row.key).collect();
        assert_eq!(shown, keys, "every key once, in table order");
        let plain = |row: &&Setting| row.default.chars().all(|c| c.is_ascii_alphanumeric());
        for row in table().iter().filter(plain) {
            let line = example
                .lines()
                .find(|line| line.starts_with(&format!("# {} = ", row.key)))
                .expect("shown");
            assert!(
                line.contains(&row.default),
                "{line} lacks the default {}",
                row.default
            );
        }
    }

    #[test]
    fn every_setting_sighup_applies_has_a_test_that_it_changes_behaviour() {
        let tests = include_str!("../tests/reload.rs");
        for row in table().iter().filter(|row| row.reload != Reload::Restart) {
            let name = format!("fn sighup_changes_{}(", row.key);
            assert!(
                tests.contains(&name),
                "daemon/tests/reload.rs has no `{name}`"
            );
        }
    }
}
