//! The daemon's lifecycle, and the one place that owns process state: bind
//! the socket (replacing a stale one, refusing to displace a live daemon),
//! create the generation file, start the inotify reader thread, serve,
//! tell systemd, and on SIGTERM/SIGINT stop accepting, drain in-flight
//! requests (bounded), remove the socket and generation file.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use sd_notify::NotifyState;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

use crate::config::Config;
use crate::genfile::{GenFile, GenFileError};
use crate::index::Index;
use crate::policy::PeerStream;
use crate::stats::Stats;
use crate::watch::{Heartbeat, Wake};
use crate::wire::{Finder, FinderService};

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
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.to_owned();
    move |source| ServerError::Io {
        action,
        path,
        source,
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let (listener, files) = bind(&config)?;
    let stats = Arc::new(Stats::default());
    let genfile = Arc::new(GenFile::create(
        &config.generation_file(),
        config.freshness.slots,
        config.freshness.lease,
    )?);
    let index = Arc::new(
        Index::new(config.index.clone(), genfile, Arc::clone(&stats))
            .map_err(ServerError::Inotify)?,
    );
    let heartbeat = Arc::new(
        Heartbeat::new(config.freshness.lease, config.freshness.active_window)
            .map_err(ServerError::Inotify)?,
    );
    let reader =
        spawn_reader(Arc::clone(&index), Arc::clone(&heartbeat)).map_err(ServerError::Inotify)?;
    let finder = FinderService::new(Finder::new(
        index,
        stats,
        config.requests.clone(),
        Arc::clone(&heartbeat),
    ));
    let result = serve(&config, listener, finder).await;
    heartbeat.stop();
    if reader.join().is_err() {
        tracing::error!("inotify reader thread panicked");
    }
    drop(files);
    tracing::info!(ok = result.is_ok(), "stopped");
    result
}

async fn serve(
    config: &Config,
    listener: UnixListener,
    finder: FinderService,
) -> Result<(), ServerError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FinderService>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(finderd_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming =
        UnixListenerStream::new(listener).map(|accepted| accepted.map(PeerStream::accept));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(finder)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(
        socket = %config.socket.display(),
        generation_file = %config.generation_file().display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "serving"
    );
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let signal_name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(
        signal = signal_name,
        drain_timeout_ms = config.drain_timeout.as_millis() as u64,
        "stopping"
    );
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    health.set_not_serving::<FinderService>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop.send(());
    match tokio::time::timeout(config.drain_timeout, server).await {
        Ok(Ok(result)) => result.map_err(ServerError::from),
        Ok(Err(join_error)) => {
            tracing::error!(error = %join_error, "server task failed");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("drain timed out; exiting with requests in flight");
            Ok(())
        }
    }
}

/// Tells systemd, when it asked to be told (`NOTIFY_SOCKET`).
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "sd_notify failed");
    }
}

/// The thread that reads inotify while no request does: it keeps slots and
/// `dry_ns` current for clients that check the generation file.
fn spawn_reader(index: Arc<Index>, heartbeat: Arc<Heartbeat>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("finderd-inotify".to_string())
        .spawn(move || {
            let fd = index.inotify_fd();
            while heartbeat.wait(fd) == Wake::Barrier {
                index.barrier();
            }
        })
}

/// The socket and generation file; removed when dropped, if they are still
/// the ones this daemon created.
struct OwnedFiles {
    socket: PathBuf,
    socket_inode: (u64, u64),
    generation_file: PathBuf,
}

impl Drop for OwnedFiles {
    fn drop(&mut self) {
        let still_ours = std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.socket_inode);
        if still_ours {
            let _ = std::fs::remove_file(&self.socket);
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
        socket: socket.clone(),
        socket_inode: (metadata.dev(), metadata.ino()),
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
