//! The daemon's lifecycle, and the one place that owns process state: take
//! the socket systemd passed or bind one (replacing a stale one, refusing to
//! displace a live daemon), create the generation file, start the inotify
//! reader thread, serve, tell systemd (READY, STATUS, STOPPING), and on
//! SIGTERM/SIGINT or `--idle-exit` stop accepting, drain in-flight requests
//! (bounded), remove the generation file and the socket (only one it bound
//! itself: systemd's socket outlives the daemon).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::future::Future;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::Stream;

use crate::activity::{Activity, CountRequests};
use crate::config::{Config, ConfigSource, LiveLimits};
use crate::connection::{self, PeerStream};
use crate::genfile::{GenFile, GenFileError};
use crate::index::Index;
use crate::logging::LogLevel;
use crate::policy;
use crate::policy::limits::{uid_name, OverLimit, PeerLimits, UidLimiter};
use crate::policy::quota::Quotas;
use crate::stats::Stats;
use crate::systemd;
use crate::views::Views;
use crate::walk::Root;
use crate::watch::{Heartbeat, Wake};
use crate::wire::{Finder, FinderService, Learning, RouteError, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another finderd is already serving on {0}")]
    AlreadyServing(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("socket directory {path} is {problem}; refusing to use it")]
    UnsafeDirectory { path: PathBuf, problem: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    GenFile(#[from] GenFileError),
    #[error("cannot start inotify: {0}")]
    Inotify(io::Error),
    #[error("cannot start the plan keeper thread: {0}")]
    Keeper(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("route table: {0}")]
    Routes(#[from] RouteError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.to_owned();
    move |source| ServerError::Io {
        action,
        path,
        source,
    }
}

/// What a peer may send on one stream before the daemon has read it: a
/// request larger than this flows in as the daemon reads (and charges) it.
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// Runs the daemon until SIGTERM, SIGINT or `--idle-exit`. `activated`: the
/// listening socket systemd passed (socket activation), used instead of
/// binding one.
pub async fn run(
    config: Config,
    source: ConfigSource,
    log_level: LogLevel,
    activated: Option<StdUnixListener>,
) -> Result<(), ServerError> {
    raise_descriptor_limit();
    // Before the socket exists: a SIGHUP sent as soon as it accepts (a
    // reload right after a start) must find its handler, not kill us.
    let signals = Signals::install()?;
    let (listener, files, config) = listen(config, activated)?;
    let stats = Arc::new(Stats::default());
    // The idle clock starts with the daemon, not when it starts serving.
    let activity = Arc::new(Activity::default());
    stats.set_limits(config.limits());
    let limits = Arc::new(LiveLimits::new(&config));
    let peers = PeerLimits::new(Arc::clone(&limits));
    let genfile = Arc::new(GenFile::create(
        &config.generation_file(),
        config.values.generation_slots,
        config.lease(),
    )?);
    let quotas = Arc::new(Quotas::new(
        Arc::clone(&limits),
        config.values.generation_slots,
    ));
    let index = Arc::new(
        Index::new(
            Root::Host,
            Arc::clone(&limits),
            Arc::clone(&quotas),
            &config.refresh,
            Arc::clone(&genfile),
            Arc::clone(&stats),
        )
        .map_err(ServerError::Inotify)?,
    );
    let views = Arc::new(
        Views::new(
            Arc::clone(&index),
            Arc::clone(&limits),
            Arc::clone(&quotas),
            &config.refresh,
            genfile,
            Arc::clone(&stats),
        )
        .map_err(ServerError::Inotify)?,
    );
    let heartbeat = Arc::new(
        Heartbeat::new(config.lease(), Arc::clone(&limits)).map_err(ServerError::Inotify)?,
    );
    let reader =
        spawn_reader(Arc::clone(&views), Arc::clone(&heartbeat)).map_err(ServerError::Inotify)?;
    let (stop_checker, checker_stop) = std::sync::mpsc::channel::<()>();
    let checker = spawn_checker(Arc::clone(&views), Arc::clone(&limits), checker_stop)
        .map_err(ServerError::Inotify)?;
    let learning = Learning::start(&config, &views).map_err(ServerError::Keeper)?;
    let keeper = Arc::clone(&learning.keeper);
    let finder = Finder::new(
        Arc::clone(&views),
        Arc::clone(&stats),
        Arc::clone(&limits),
        quotas,
        Arc::clone(&heartbeat),
        peers.clone(),
        learning,
    );
    let finder = FinderService::new(finder);
    let reload = Reload {
        source,
        log_level,
        limits,
        stats,
    };
    let load = Load { peers, activity };
    let result = serve(config, listener, finder, load, &views, reload, signals).await;
    // Writes the plan state file one last time.
    keeper.stop();
    heartbeat.stop();
    drop(stop_checker);
    if reader.join().is_err() || checker.join().is_err() {
        tracing::error!("a background thread panicked");
    }
    // Nothing reads the change queue any more: expire the lease now, so a
    // running client revalidates at its next question (and, the daemon gone,
    // asks the filesystem) instead of trusting its listings for one more lease.
    index.genfile().set_dry_ns(0);
    drop(files);
    tracing::info!(ok = result.is_ok(), "stopped");
    result
}

/// The listening socket: systemd's, or one bound here. Under socket
/// activation the generation file goes beside the socket systemd bound.
fn listen(
    mut config: Config,
    activated: Option<StdUnixListener>,
) -> Result<(UnixListener, OwnedFiles, Config), ServerError> {
    let Some(listener) = activated else {
        let (listener, files) = bind(&config)?;
        return Ok((listener, files, config));
    };
    match systemd::bound_path(&listener) {
        Some(path) => {
            if path != config.socket {
                tracing::debug!(socket = %path.display(), "using the socket-activated path");
            }
            config.socket = std::path::absolute(&path).unwrap_or(path);
        }
        None => tracing::warn!(
            generation_file = %config.generation_file().display(),
            "the socket-activated socket has no path; generation file at the configured place"
        ),
    }
    if let Some(parent) = config.socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_directory(parent, config.socket_dir_mode())?;
    }
    let files = OwnedFiles {
        socket: None,
        generation_file: config.generation_file(),
    };
    listener
        .set_nonblocking(true)
        .map_err(io_error("configure", &config.socket))?;
    let listener =
        UnixListener::from_std(listener).map_err(io_error("listen on", &config.socket))?;
    Ok((listener, files, config))
}

/// The signals the daemon acts on.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServerError> {
        let install = |kind| signal(kind).map_err(ServerError::Signals);
        Ok(Signals {
            hangup: install(SignalKind::hangup())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }
}

/// Why the daemon stops.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    Signal(&'static str),
    Idle(Duration),
}

/// What SIGHUP needs to apply a new config.
struct Reload {
    source: ConfigSource,
    log_level: LogLevel,
    limits: Arc<LiveLimits>,
    stats: Arc<Stats>,
}

impl Reload {
    /// Re-reads the config file and applies what SIGHUP may change (see
    /// the table in `config.rs`); a bad file is logged and changes nothing.
    fn apply(&self, current: &mut Config) {
        systemd::reloading();
        let values = match self.source.values() {
            Ok(values) => values,
            Err(error) => {
                tracing::error!(%error, "reload failed; keeping the running config");
                systemd::ready("serving (reload failed; see the log)");
                return;
            }
        };
        let (mut new, waiting) = current.reloaded(values);
        if let Err(error) = self.log_level.set(new.values.log_level.as_deref()) {
            tracing::error!(%error, "log level not changed");
            new.values.log_level = current.values.log_level.clone();
        }
        if !waiting.is_empty() {
            tracing::warn!(settings = ?waiting, "changed settings take effect at the next start only");
        }
        self.limits.store(&new);
        self.stats.set_limits(new.limits());
        tracing::info!(config = ?self.source.file, "config reloaded");
        *current = new;
        systemd::ready("serving (config reloaded)");
    }
}

/// Who holds what while serving: places per peer uid (policy) and the idle
/// clock (`--idle-exit`).
struct Load {
    peers: PeerLimits,
    activity: Arc<Activity>,
}

async fn serve(
    mut config: Config,
    listener: UnixListener,
    finder: FinderService,
    load: Load,
    views: &Arc<Views>,
    reload: Reload,
    mut signals: Signals,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FinderService>().await;
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(finderd_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = RouteTable::default()
        .serve(finder, finderd_proto::v1::FILE_DESCRIPTOR_SET)?
        .serve(health_service, tonic_health::pb::FILE_DESCRIPTOR_SET)?
        .serve(
            reflection_builder().build_v1()?,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        )?
        // grpcurl before 1.9 (and other older tools) only ask v1alpha.
        .serve(
            reflection_builder().build_v1alpha()?,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        )?
        .finish();
    let Load { peers, activity } = load;
    let incoming = Incoming::new(
        listener,
        Arc::clone(views),
        Arc::clone(&activity),
        Arc::clone(&peers.connections),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // One interpreter asks one question at a time; more streams per
            // connection only let one peer multiply what it holds.
            .max_concurrent_streams(config.values.max_streams_per_connection)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .layer(CountRequests::layer(Arc::clone(&activity)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let how = if config.activated {
        "socket-activated"
    } else {
        "bound"
    };
    tracing::info!(
        socket = %config.socket.display(),
        how,
        generation_file = %config.generation_file().display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        idle_exit_secs = config.idle_exit().map(|d| d.as_secs()),
        refresh_engine = config.refresh.engine.name(),
        config_file = ?reload.source.file,
        plan_state_dir = ?config.plans.state_dir,
        "serving"
    );
    systemd::ready(&format!("serving on {} ({how})", config.socket.display()));
    let reason = loop {
        tokio::select! {
            _ = signals.terminate.recv() => break StopReason::Signal("SIGTERM"),
            _ = signals.interrupt.recv() => break StopReason::Signal("SIGINT"),
            _ = signals.hangup.recv() => reload.apply(&mut config),
            idle = idle_timeout(config.idle_exit(), &activity) => break StopReason::Idle(idle),
            _ = tokio::time::sleep(STATUS_INTERVAL) => systemd::status(&status_line(views)),
        }
    };
    match reason {
        StopReason::Signal(name) => tracing::info!(
            signal = name,
            drain_timeout_ms = config.values.drain_timeout_ms,
            "stopping"
        ),
        StopReason::Idle(idle) => tracing::info!(idle_secs = idle.as_secs(), "idle; exiting"),
    }
    systemd::stopping("draining");
    health.set_not_serving::<FinderService>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop.send(());
    let drain = tokio::time::timeout(config.drain_timeout(), server);
    tokio::select! {
        drained = drain => match drained {
            Ok(Ok(result)) => result.map_err(ServerError::from),
            Ok(Err(join_error)) => {
                tracing::error!(error = %join_error, "server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!("drain timed out; exiting with requests in flight");
                Ok(())
            }
        },
        () = no_request_in_flight(&peers.requests) => {
            tracing::debug!("no request in flight; closing idle connections");
            Ok(())
        }
    }
}

/// Resolves once no request has been in flight for two checks in a row.
/// The graceful HTTP/2 shutdown alone also waits, for the whole drain
/// timeout, on idle connections whose clients (interpreters between two
/// calls) do not read the GOAWAY and PING it sends; those connections carry
/// nothing to lose.
async fn no_request_in_flight(requests: &UidLimiter) {
    const CHECK: Duration = Duration::from_millis(10);
    let mut idle_checks = 0;
    while idle_checks < 2 {
        tokio::time::sleep(CHECK).await;
        idle_checks = if requests.held_now() == 0 {
            idle_checks + 1
        } else {
            0
        };
    }
}

/// Accepted connections, with a pause after an accept that failed for lack
/// of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): the
/// pending connection stays in the backlog, so the listener stays readable
/// and retrying at once would spin a core until a descriptor is freed.
/// Clients waiting meanwhile time out and run stock CPython.
struct Incoming {
    listener: UnixListener,
    views: Arc<Views>,
    activity: Arc<Activity>,
    /// Connections per peer uid (`max_connections_per_peer`).
    connections: Arc<UidLimiter>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Accepts failed since the last success (logged once per episode).
    failed: u64,
}

/// The pause after an accept failed for lack of resources.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Incoming {
    fn new(
        listener: UnixListener,
        views: Arc<Views>,
        activity: Arc<Activity>,
        connections: Arc<UidLimiter>,
    ) -> Self {
        Self {
            listener,
            views,
            activity,
            connections,
            backoff: None,
            failed: 0,
        }
    }

    /// The accepted stream, counted for its peer; `None` when the peer
    /// holds `max_connections_per_peer` already (the stream is told why
    /// and closed: that peer's interpreters run stock CPython, everyone
    /// else's are still served).
    fn admit(&self, stream: tokio::net::UnixStream) -> Option<PeerStream> {
        let peer = policy::peer_of(&stream);
        let uid = peer.as_ref().map(|peer| peer.uid);
        match self.connections.take(uid) {
            Ok(place) => {
                let open = self.activity.connection();
                let views = Arc::clone(&self.views);
                Some(PeerStream::new(stream, peer, place, open, views))
            }
            Err(over) => {
                refuse(&stream, &over);
                None
            }
        }
    }
}

/// Tells a stream over `max_connections_per_peer` why it is closed (the
/// first refusal of an episode is logged too).
fn refuse(stream: &tokio::net::UnixStream, over: &OverLimit) {
    if over.first {
        tracing::warn!(
            peer_uid = %uid_name(&over.uid),
            open = over.held,
            limit = over.limit,
            "connection refused: max_connections_per_peer reached; this uid's further \
             interpreters run stock CPython until it closes some"
        );
    }
    // A fresh socket's send buffer is empty: this cannot block, and if it
    // fails the close says enough.
    let _ = stream.try_write(&connection::refusal_frames(&over.to_string()));
}

fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Stream for Incoming {
    type Item = io::Result<PeerStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(backoff) = self.backoff.as_mut() {
            if backoff.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.backoff = None;
        }
        loop {
            return match self.listener.poll_accept(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok((stream, _))) => {
                    if self.failed > 0 {
                        tracing::info!(failed_accepts = self.failed, "accepting connections again");
                        self.failed = 0;
                    }
                    match self.admit(stream) {
                        Some(stream) => Poll::Ready(Some(Ok(stream))),
                        None => continue,
                    }
                }
                Poll::Ready(Err(error)) => {
                    if out_of_resources(&error) {
                        if self.failed == 0 {
                            tracing::warn!(
                                %error,
                                backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
                                "cannot accept connections; retrying after a pause (raise LimitNOFILE?)"
                            );
                        }
                        self.failed += 1;
                        self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    }
                    Poll::Ready(Some(Err(error)))
                }
            };
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard one: each running interpreter
/// holds a connection, and the daemon waits with epoll only (no `select`),
/// so the 1024 a shell or a unit gives by default is an accident, not a
/// choice. The hard limit stays what the operator set (`LimitNOFILE=`).
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let soft = limit.rlim_cur;
    if soft >= limit.rlim_max || limit.rlim_max == libc::RLIM_INFINITY {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: a valid rlimit, read just above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::debug!(
            from = soft,
            to = limit.rlim_max,
            "raised the descriptor limit"
        );
    } else {
        let error = io::Error::last_os_error();
        tracing::warn!(%error, soft, hard = limit.rlim_max, "cannot raise the descriptor limit");
    }
}

/// How often systemd's STATUS= line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// One line for `systemctl status`.
fn status_line(views: &Views) -> String {
    let gauges = views.gauges();
    format!(
        "serving: {} roots, {} directories, {} entries, {} peer views",
        gauges.roots,
        gauges.directories,
        gauges.entries,
        views.count()
    )
}

/// Resolves once nothing has happened for `idle_exit` (no request, no
/// connection opened or closed; connections may stay open); never without it.
async fn idle_timeout(idle_exit: Option<Duration>, activity: &Activity) -> Duration {
    let Some(limit) = idle_exit else {
        return std::future::pending().await;
    };
    loop {
        match activity.idle_for() {
            Some(idle) if idle >= limit => return idle,
            Some(idle) => tokio::time::sleep(limit - idle).await,
            // Requests end without telling us; look again soon.
            None => tokio::time::sleep(limit.min(Duration::from_secs(1))).await,
        }
    }
}

/// The thread that reads inotify while no request does: it keeps slots and
/// `dry_ns` current for clients that check the generation file.
fn spawn_reader(views: Arc<Views>, heartbeat: Arc<Heartbeat>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("finderd-inotify".to_string())
        .spawn(move || {
            // Readable when any index (the host's, a view's) has events.
            let fd = views.poll_fd();
            while heartbeat.wait(fd) == Wake::Barrier {
                views.barrier_all();
            }
        })
}

/// The thread that re-checks directories inotify does not cover (polled
/// filesystems) every `poll_interval`: re-listed, which also catches
/// in-place rewrites; and lets go of the peer views that lingered past
/// `view_linger_ms`. It wakes at least every [`CHECKER_TICK`] so that a
/// reloaded interval takes effect at once.
fn spawn_checker(
    views: Arc<Views>,
    limits: Arc<LiveLimits>,
    stop: std::sync::mpsc::Receiver<()>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("finderd-checker".to_string())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            loop {
                let tick = limits.poll_interval().min(CHECKER_TICK);
                match stop.recv_timeout(tick) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                views.expire();
                if last.elapsed() >= limits.poll_interval() {
                    last = std::time::Instant::now();
                    views.recheck();
                }
            }
        })
}

/// Longest sleep of the checker thread.
const CHECKER_TICK: Duration = Duration::from_millis(100);

/// The socket and generation file; removed when dropped, if they are still
/// the ones this daemon created.
/// A socket passed by systemd is not ours to remove (`socket: None`).
struct OwnedFiles {
    /// The socket this daemon bound, and its (dev, inode).
    socket: Option<(PathBuf, (u64, u64))>,
    generation_file: PathBuf,
}

impl Drop for OwnedFiles {
    fn drop(&mut self) {
        let Some((socket, inode)) = &self.socket else {
            let _ = std::fs::remove_file(&self.generation_file);
            return;
        };
        let still_ours =
            std::fs::symlink_metadata(socket).is_ok_and(|m| (m.dev(), m.ino()) == *inode);
        if still_ours {
            let _ = std::fs::remove_file(socket);
            let _ = std::fs::remove_file(&self.generation_file);
        }
    }
}

fn bind(config: &Config) -> Result<(UnixListener, OwnedFiles), ServerError> {
    let socket = &config.socket;
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_directory(parent, config.socket_dir_mode())?;
    }
    remove_stale_socket(socket)?;
    let listener = std::os::unix::net::UnixListener::bind(socket).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServerError::AlreadyServing(socket.clone())
        } else {
            io_error("bind", socket)(source)
        }
    })?;
    let metadata = std::fs::symlink_metadata(socket).map_err(io_error("stat", socket))?;
    let files = OwnedFiles {
        socket: Some((socket.clone(), (metadata.dev(), metadata.ino()))),
        generation_file: config.generation_file(),
    };
    std::fs::set_permissions(
        socket,
        std::fs::Permissions::from_mode(config.effective_socket_mode()),
    )
    .map_err(io_error("chmod", socket))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("configure", socket))?;
    let listener = UnixListener::from_std(listener).map_err(io_error("listen on", socket))?;
    Ok((listener, files))
}

/// Creates the socket directory if needed. A per-user directory in a shared
/// place (`/tmp/finderd-UID`) must be ours and closed to others, or anyone
/// could have pre-created it.
fn prepare_directory(dir: &Path, mode: u32) -> Result<(), ServerError> {
    match std::fs::symlink_metadata(dir) {
        Ok(metadata) => check_directory(dir, &metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(io_error("create", dir))?;
            // The umask may have narrowed the mode; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(io_error("chmod", dir))
        }
        Err(error) => Err(io_error("stat", dir)(error)),
    }
}

fn check_directory(dir: &Path, metadata: &std::fs::Metadata) -> Result<(), ServerError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let shared_tmp = dir.parent() == Some(Path::new("/tmp"))
        && dir.file_name().and_then(|n| n.to_str()) == Some(&format!("finderd-{euid}"));
    let unsafe_because = if !metadata.is_dir() {
        Some("not a directory".to_string())
    } else if shared_tmp && metadata.uid() != euid {
        Some(format!("owned by uid {}, not {euid}", metadata.uid()))
    } else if shared_tmp && metadata.mode() & 0o022 != 0 {
        Some(format!(
            "writable by others (mode {:o})",
            metadata.mode() & 0o7777
        ))
    } else {
        None
    };
    match unsafe_because {
        Some(problem) => Err(ServerError::UnsafeDirectory {
            path: dir.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Removes a socket file nobody listens on; refuses when a daemon answers.
fn remove_stale_socket(socket: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error("stat", socket)(error)),
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::NotASocket(socket.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(ServerError::AlreadyServing(socket.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %socket.display(), "replacing stale socket");
            std::fs::remove_file(socket).map_err(io_error("remove stale socket", socket))
        }
        Err(error) => Err(io_error("probe existing socket", socket)(error)),
    }
}
