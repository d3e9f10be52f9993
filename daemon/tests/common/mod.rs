//! Test harness: starts the real `finderd` binary on a temporary socket and
//! talks to it with the generated tonic client over the Unix socket. The
//! one place Rust code starts a daemon: the integration tests use it as
//! `mod common`, the benchmark (bench/daemon) by path.

#![allow(dead_code)] // each test binary uses a different part of this

#[path = "../../src/uds.rs"]
mod uds;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use finderd_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

pub type Client = pb::finder_client::FinderClient<Channel>;

pub const BINARY: &str = env!("CARGO_BIN_EXE_finderd");

/// How long a test waits for what the daemon does on its own (a reload, a
/// poll, a background crawl, a state write) before it fails: a bound for a
/// loaded machine, never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `done` until it holds; panics naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `finderd serve` on a socket in a fresh temporary directory.
    pub fn start(extra_args: &[&str]) -> Daemon {
        Daemon::start_binary(Path::new(BINARY), extra_args)
    }

    /// As [`Daemon::start`] with another build of the daemon (the
    /// benchmark's release binary).
    pub fn start_binary(binary: &Path, extra_args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Daemon::launch(dir, binary, extra_args, |_| {})
    }

    /// As [`Daemon::start`], after `configure` has adjusted the command
    /// (a `pre_exec` hook, the environment).
    pub fn start_configured(extra_args: &[&str], configure: impl FnOnce(&mut Command)) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Daemon::launch(dir, Path::new(BINARY), extra_args, configure)
    }

    /// As [`Daemon::start`] in `dir`, on `dir/finderd.sock`, which the test
    /// may have prepared.
    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Daemon {
        Daemon::launch(dir, Path::new(BINARY), extra_args, |_| {})
    }

    fn launch(
        dir: tempfile::TempDir,
        binary: &Path,
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Daemon {
        let socket = dir.path().join("finderd.sock");
        let mut command = serve_command(binary, &socket, extra_args);
        let log = dir.path().join("stderr.log");
        command.stderr(std::fs::File::create(log).expect("stderr log"));
        configure(&mut command);
        let mut daemon = Daemon {
            child: Some(command.spawn().expect("spawn finderd")),
            dir,
            socket,
        };
        daemon.wait_ready();
        daemon
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("finderd exited early with {status}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("finderd did not start listening:\n{}", self.stderr());
    }

    pub async fn client(&self) -> Client {
        pb::finder_client::FinderClient::new(channel(&self.socket).await)
    }

    /// Starts the daemon again on the same socket and state directory
    /// (SIGTERM first when it runs).
    pub fn restart(&mut self, extra_args: &[&str]) {
        if self.child.is_some() {
            self.terminate();
        }
        let log = self.dir.path().join("stderr.log");
        self.child = Some(spawn_serve(&self.socket, extra_args, &log));
        self.wait_ready();
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The state directory every test daemon gets (see [`spawn_serve`]).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits (at most `timeout`) for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_with_timeout(&mut child, timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `finderd serve` on `socket`, with the plan state in `state` beside it
/// unless `extra_args` name a `--state-dir` (a test daemon never reads or
/// writes the host's state directory).
pub fn spawn_serve(socket: &Path, extra_args: &[&str], stderr: &Path) -> Child {
    serve_command(Path::new(BINARY), socket, extra_args)
        .stderr(std::fs::File::create(stderr).expect("stderr log"))
        .spawn()
        .expect("spawn finderd")
}

fn serve_command(binary: &Path, socket: &Path, extra_args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.arg("serve").arg("--socket").arg(socket);
    if !extra_args.contains(&"--state-dir") {
        let dir = socket.parent().unwrap_or(Path::new("/tmp"));
        command.arg("--state-dir").arg(dir.join("state"));
    }
    command
        .args(extra_args)
        .env("RUST_LOG", "info,finderd=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A channel over the Unix socket, connected.
pub async fn channel(socket: &Path) -> Channel {
    uds::connect(uds::endpoint(), socket)
        .await
        .expect("connect to finderd")
}

/// As [`channel`], passing `root` as the connection's view: its paths are
/// answered as beneath `root`.
pub async fn channel_in_view(socket: &Path, root: &Path) -> Channel {
    uds::connect_in_view(uds::endpoint(), socket, root)
        .await
        .expect("connect to finderd with a view")
}

/// As [`channel`], connecting at the first call: for a connection the
/// daemon may refuse at accept.
pub fn lazy_channel(socket: &Path) -> Channel {
    uds::connect_lazy(uds::endpoint(), socket)
}

pub fn bytes_of(path: &Path) -> Bytes {
    Bytes::copy_from_slice(path.as_os_str().as_bytes())
}

pub fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

pub fn snapshot_request(paths: &[&Path], prefetch_bytes: u64) -> pb::SnapshotRequest {
    pb::SnapshotRequest {
        protocol_version: finderd_proto::v1::PROTOCOL_VERSION,
        sys_path: paths.iter().map(|p| bytes_of(p)).collect(),
        prefetch_bytes,
        ..Default::default()
    }
}

pub async fn snapshot(
    client: &mut Client,
    paths: &[&Path],
    prefetch_bytes: u64,
) -> pb::SnapshotReply {
    client
        .snapshot(snapshot_request(paths, prefetch_bytes))
        .await
        .expect("snapshot")
        .into_inner()
}

pub async fn lookup(client: &mut Client, paths: &[&Path]) -> pb::LookupReply {
    revalidate(client, paths, &[], 0).await
}

/// Lookup with the generations (and their epoch) the client holds.
pub async fn revalidate(
    client: &mut Client,
    paths: &[&Path],
    known: &[u64],
    epoch: u64,
) -> pb::LookupReply {
    let request = pb::LookupRequest {
        known_generations: known.to_vec(),
        known_epoch: epoch,
        ..lookup_request(paths)
    };
    client.lookup(request).await.expect("lookup").into_inner()
}

fn lookup_request(paths: &[&Path]) -> pb::LookupRequest {
    pb::LookupRequest {
        protocol_version: finderd_proto::v1::PROTOCOL_VERSION,
        paths: paths.iter().map(|p| bytes_of(p)).collect(),
        ..Default::default()
    }
}

/// Lookup of one directory.
pub async fn lookup_one(client: &mut Client, path: &Path) -> pb::Directory {
    lookup(client, &[path]).await.directories.remove(0)
}

pub async fn stats(client: &mut Client) -> pb::StatsReply {
    client
        .stats(pb::StatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// A Lookup whose refusal the test expects: the status instead of a panic.
pub async fn try_lookup(
    client: &mut Client,
    paths: &[&Path],
) -> Result<pb::LookupReply, tonic::Status> {
    client
        .lookup(lookup_request(paths))
        .await
        .map(tonic::Response::into_inner)
}

/// The value of the limit `name` in a Stats reply.
pub fn limit(reply: &pb::StatsReply, name: &str) -> u64 {
    reply
        .limits
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no limit {name}"))
        .value
}

/// A directory large enough that crawling it is a slow request: with
/// `--max-indexed-entries` at [`BigDirectory::NOT_KEPT`] it is answered but
/// not kept, so every Lookup of it crawls it again.
pub struct BigDirectory {
    _tree: tempfile::TempDir,
    pub path: PathBuf,
}

impl BigDirectory {
    pub const ENTRIES: usize = 30_000;
    pub const NOT_KEPT: &'static str = "1000";

    pub fn new() -> BigDirectory {
        // Beside the build, not in a /tmp that may be a tmpfs in memory.
        let tree = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let path = tree.path().join("big");
        std::fs::create_dir(&path).expect("mkdir");
        for i in 0..Self::ENTRIES {
            std::fs::File::create(path.join(format!("f{i}"))).expect("create");
        }
        BigDirectory { _tree: tree, path }
    }
}

/// While a Lookup of `big` (a [`BigDirectory`] the daemon does not keep) is
/// in flight, asks for stats on another connection until one is refused;
/// up to five crawls. The refusal, if any: it shows a request in flight
/// made the next one wait its turn.
pub async fn refusal_while_crawling(daemon: &Daemon, big: &Path) -> Option<tonic::Status> {
    let mut other = daemon.client().await;
    for _ in 0..5 {
        let mut slow = daemon.client().await;
        let path = big.to_owned();
        let crawl = tokio::spawn(async move { lookup_one(&mut slow, &path).await });
        let mut refused = None;
        while !crawl.is_finished() {
            if let Err(status) = other.stats(pb::StatsRequest {}).await {
                refused = Some(status);
            }
        }
        let listed = crawl.await.expect("crawl");
        assert_eq!(
            listed.entries.len(),
            BigDirectory::ENTRIES,
            "answered though not kept"
        );
        if refused.is_some() {
            return refused;
        }
    }
    None
}

pub fn names(directory: &pb::Directory) -> Vec<Vec<u8>> {
    directory.entries.iter().map(|e| e.name.to_vec()).collect()
}

pub fn status(directory: &pb::Directory) -> pb::DirectoryStatus {
    directory.status()
}

/// Reads the u64 at `offset` of the generation file.
pub fn read_gen_u64(genfile: &Path, offset: usize) -> u64 {
    let bytes = std::fs::read(genfile).expect("read generation file");
    u64::from_ne_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

pub fn slot_value(genfile: &Path, slot: u32) -> u64 {
    read_gen_u64(genfile, 64 + 8 * slot as usize)
}

/// Sends raw bytes as a request body: for malformed-protobuf tests.
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

pub async fn raw_call(socket: &Path, method: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(socket).await);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}
