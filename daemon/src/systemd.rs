//! What systemd hands the daemon and what it is told back: the listening
//! socket of socket activation (`LISTEN_PID`/`LISTEN_FDS`, sd_listen_fds(3))
//! and readiness notifications (`NOTIFY_SOCKET`, sd_notify(3)).
//!
//! The activation socket is taken before the tokio runtime starts (the
//! `LISTEN_*` variables are removed from the environment so that nothing the
//! daemon starts inherits them, which is only sound while single-threaded).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use sd_notify::NotifyState;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{name}={value:?} is not a number")]
    BadVariable { name: &'static str, value: String },
    #[error("LISTEN_FDS=0: socket activation passed no socket")]
    NoSocket,
    #[error("the socket passed by systemd (fd {fd}) is {what}; finderd needs a listening SOCK_STREAM AF_UNIX socket (ListenStream=/path in the .socket unit)")]
    WrongSocket { fd: RawFd, what: String },
    #[error("cannot inspect the socket passed by systemd (fd {fd}): {source}")]
    Inspect { fd: RawFd, source: io::Error },
}

/// The listening socket passed by systemd, if this process was socket
/// activated. Extra descriptors (`LISTEN_FDS` > 1) are left alone and logged.
pub fn take_activation_socket() -> Result<Option<UnixListener>, ActivationError> {
    let Some(pid) = variable("LISTEN_PID")? else {
        return Ok(None);
    };
    if pid != u64::from(std::process::id()) {
        // Meant for another process (an ancestor that did not unset it).
        return Ok(None);
    }
    let count = variable("LISTEN_FDS")?.unwrap_or(0);
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called from `main` before any thread is started.
        unsafe { std::env::remove_var(name) };
    }
    if count == 0 {
        return Err(ActivationError::NoSocket);
    }
    if count > 1 {
        tracing::warn!(
            passed = count,
            "systemd passed more than one socket; using the first (fd 3) only"
        );
    }
    let fd = LISTEN_FDS_START;
    check_listening_unix_stream(fd)?;
    set_cloexec(fd).map_err(|source| ActivationError::Inspect { fd, source })?;
    // SAFETY: systemd passed this descriptor to us and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Some(UnixListener::from(owned)))
}

fn variable(name: &'static str) -> Result<Option<u64>, ActivationError> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ActivationError::BadVariable { name, value }),
        Err(_) => Ok(None),
    }
}

/// SO_TYPE must be SOCK_STREAM, the family AF_UNIX, and the socket listening.
fn check_listening_unix_stream(fd: RawFd) -> Result<(), ActivationError> {
    let inspect = |source| ActivationError::Inspect { fd, source };
    let wrong = |what: String| ActivationError::WrongSocket { fd, what };
    let kind = socket_option(fd, libc::SO_TYPE).map_err(|error| {
        if error.raw_os_error() == Some(libc::ENOTSOCK) {
            wrong("not a socket".to_string())
        } else {
            inspect(error)
        }
    })?;
    if kind != libc::SOCK_STREAM {
        return Err(wrong(format!("of type {kind}, not SOCK_STREAM")));
    }
    let family = socket_family(fd).map_err(inspect)?;
    if family != libc::AF_UNIX {
        return Err(wrong(format!("of address family {family}, not AF_UNIX")));
    }
    if socket_option(fd, libc::SO_ACCEPTCONN).map_err(inspect)? == 0 {
        return Err(wrong("not listening".to_string()));
    }
    Ok(())
}

fn socket_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid out pointer and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: an all-zero sockaddr_storage is valid to be overwritten.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid out pointer and its length.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut address as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(address.ss_family))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The filesystem path the socket is bound to (`None`: abstract or unnamed).
pub fn bound_path(listener: &UnixListener) -> Option<PathBuf> {
    let address = listener.local_addr().ok()?;
    address.as_pathname().map(PathBuf::from)
}

/// Tells systemd, when it asked to be told (`NOTIFY_SOCKET`); a failure is
/// logged, never fatal.
pub fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "sd_notify failed");
    }
}

/// READY=1 with a STATUS= line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS= alone (reloads, periodic summaries).
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// RELOADING=1 (with MONOTONIC_USEC, as `Type=notify-reload` wants) before
/// a config reload; `ready` follows it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1 with a STATUS= line.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}
