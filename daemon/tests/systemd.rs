//! systemd integration against the real binary: socket activation (an
//! inherited listening descriptor with `LISTEN_FDS`/`LISTEN_PID`, as
//! systemd or `systemd-socket-activate` pass it), `sd_notify` READY/STATUS/
//! STOPPING on a test `NOTIFY_SOCKET`, and `--idle-exit`.

mod common;

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `LISTEN_PID` is only known in the child, so the child execs the daemon
/// itself from `pre_exec`, with an environment built before the fork whose
/// `LISTEN_PID` placeholder it overwrites in place (no allocation between
/// fork and exec).
const PID_PLACEHOLDER: &str = "0000000000";

struct ExecImage {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl ExecImage {
    fn new(args: &[&str], notify: &Path) -> ExecImage {
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(key, _)| {
                !matches!(
                    key.to_str(),
                    Some(
                        "FINDERD_SOCKET"
                            | "RUST_LOG"
                            | "LISTEN_FDS"
                            | "LISTEN_PID"
                            | "NOTIFY_SOCKET"
                    )
                )
            })
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                CString::new(entry).expect("no NUL in the environment")
            })
            .collect();
        let mut notify_entry = b"NOTIFY_SOCKET=".to_vec();
        notify_entry.extend(notify.as_os_str().as_bytes());
        env.push(CString::new(notify_entry).expect("no NUL"));
        env.push(CString::new("RUST_LOG=info,finderd=debug").expect("no NUL"));
        env.push(CString::new("LISTEN_FDS=1").expect("no NUL"));
        env.push(CString::new(format!("LISTEN_PID={PID_PLACEHOLDER}")).expect("no NUL"));
        let mut argv = vec![
            CString::new(BINARY).expect("no NUL"),
            CString::new("serve").expect("no NUL"),
        ];
        argv.extend(args.iter().map(|a| CString::new(*a).expect("no NUL")));
        ExecImage {
            program: CString::new(BINARY).expect("no NUL"),
            argv,
            env,
        }
    }
}

/// Writes `getpid()` over the placeholder at the end of `entry`.
///
/// # Safety
/// `entry` points at a NUL-terminated `LISTEN_PID=<placeholder>` string.
unsafe fn patch_pid(entry: *mut u8) {
    let mut digits = [0u8; 10];
    // SAFETY: getpid has no preconditions (and is async-signal-safe).
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (pid % 10) as u8;
        len += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let start = "LISTEN_PID=".len();
    // SAFETY: the caller's placeholder holds at least 10 digits and a NUL
    // after `start`; a u32 has at most 10.
    unsafe {
        for i in 0..len {
            *entry.add(start + i) = digits[len - 1 - i];
        }
        *entry.add(start + len) = 0;
    }
}

/// Starts `finderd serve ARGS` with `fd` as its descriptor 3 and
/// `LISTEN_FDS=1`, `LISTEN_PID=<its pid>`, `NOTIFY_SOCKET=notify`.
fn spawn_activated(fd: RawFd, notify: &Path, args: &[&str], stderr: &Path) -> Child {
    let image = ExecImage::new(args, notify);
    let pid_entry = image.env.last().expect("LISTEN_PID").as_ptr() as usize;
    let argv: Vec<usize> = image
        .argv
        .iter()
        .map(|a| a.as_ptr() as usize)
        .chain([0])
        .collect();
    let envp: Vec<usize> = image
        .env
        .iter()
        .map(|e| e.as_ptr() as usize)
        .chain([0])
        .collect();
    let program = image.program.as_ptr() as usize;
    let mut command = Command::new(BINARY);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr log"));
    // SAFETY: the closure only calls dup2/fcntl/getpid/execve and writes
    // memory the child owns; `image`, `argv` and `envp` outlive the spawn.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            patch_pid(pid_entry as *mut u8);
            libc::execve(
                program as *const libc::c_char,
                argv.as_ptr() as *const *const libc::c_char,
                envp.as_ptr() as *const *const libc::c_char,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    let child = command.spawn().expect("spawn finderd");
    drop(image);
    child
}

/// Notification datagrams until one contains `wanted` (all of them, joined).
fn wait_for_notification(socket: &UnixDatagram, wanted: &str) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains(wanted) {
        let n = socket
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("no {wanted:?} notification (got {seen:?}): {e}"));
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    seen
}

struct Activated {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    notify: UnixDatagram,
    stderr: std::path::PathBuf,
    child: Child,
}

impl Activated {
    fn start(args: &[&str]) -> Activated {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("activated.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        let stderr = dir.path().join("stderr.log");
        let child = spawn_activated(listener.as_raw_fd(), &notify_path, args, &stderr);
        drop(listener); // the child holds its own copy
        Activated {
            _dir: dir,
            socket,
            notify,
            stderr,
            child,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn socket_activation_serves_notifies_and_leaves_the_socket() {
    let mut daemon = Activated::start(&[]);
    let ready = wait_for_notification(&daemon.notify, "READY=1");
    assert!(ready.contains("STATUS=serving on"), "{ready:?}");
    assert!(ready.contains("socket-activated"), "{ready:?}");

    let mut client = pb_client(&daemon.socket).await;
    let reply = stats(&mut client).await;
    assert_eq!(reply.pid, daemon.child.id());
    let tree = tempfile::tempdir().expect("tempdir");
    let answer = snapshot(&mut client, &[tree.path()], 0).await;
    let generations = answer.generations.expect("generation file");
    assert_eq!(
        path_of(&generations.path),
        daemon.socket.with_extension("sock.gen"),
        "the generation file goes beside the socket systemd bound"
    );
    let health = Command::new(BINARY)
        .args(["health", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("run finderd health");
    assert!(health.status.success(), "{health:?}");
    drop(client);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let stopping = wait_for_notification(&daemon.notify, "STOPPING=1");
    assert!(stopping.contains("STOPPING=1"));
    let status = wait_with_timeout(&mut daemon.child, Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    assert!(
        daemon.socket.exists(),
        "a socket systemd passed is not removed"
    );
    assert!(
        !daemon.socket.with_extension("sock.gen").exists(),
        "the generation file is"
    );
}

async fn pb_client(socket: &Path) -> Client {
    finderd_proto::v1::finder_client::FinderClient::new(channel(socket).await)
}

#[test]
fn a_passed_socket_of_the_wrong_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datagram = UnixDatagram::bind(dir.path().join("dgram.sock")).expect("bind");
    let notify_path = dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).expect("bind");
    let stderr = dir.path().join("stderr.log");
    let mut child = spawn_activated(datagram.as_raw_fd(), &notify_path, &[], &stderr);
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    let message = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!status.success());
    assert!(message.contains("SOCK_STREAM"), "{message}");
}

#[test]
fn idle_exit_waits_for_open_connections_then_exits_zero() {
    let mut daemon = Activated::start(&["--idle-exit", "1"]);
    wait_for_notification(&daemon.notify, "READY=1");
    let connection = UnixStream::connect(&daemon.socket).expect("connect");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "an open connection keeps the daemon alive:\n{}",
        daemon.stderr()
    );
    drop(connection);
    let closed = Instant::now();
    let status = wait_with_timeout(&mut daemon.child, Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    assert!(closed.elapsed() >= Duration::from_millis(900));
    wait_for_notification(&daemon.notify, "STOPPING=1");
    assert!(daemon.stderr().contains("idle"), "{}", daemon.stderr());
}

#[test]
fn idle_exit_without_activation_removes_its_own_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("own.sock");
    let mut child = spawn_serve(
        &socket,
        &["--idle-exit", "1"],
        &dir.path().join("stderr.log"),
    );
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "a socket the daemon bound is removed");
}
