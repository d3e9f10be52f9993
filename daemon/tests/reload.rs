//! SIGHUP against the real binary: one test per setting the table in
//! `config.rs` marks as applied while serving (`Limit` and `Live`), each
//! showing that behaviour changes after the reload (a unit test there fails
//! when a row has no `sighup_changes_<key>` here); and restart-only settings
//! are kept, with a warning naming them.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use finderd_proto::v1 as pb;
use pb::DirectoryStatus;
use tonic::Code;

/// A daemon that reads a config file the test rewrites.
struct Reloadable {
    daemon: Daemon,
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Reloadable {
    /// `finderd serve --config FILE` with `before` in the file, and `flags`.
    fn start(before: &str, flags: &[&str]) -> Reloadable {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("finderd.toml");
        std::fs::write(&file, before).expect("write the config file");
        let config = file.display().to_string();
        let mut args = vec!["--config", &config];
        args.extend_from_slice(flags);
        let daemon = Daemon::start(&args);
        Reloadable {
            daemon,
            _dir: dir,
            file,
        }
    }

    /// Writes `after` to the file, sends SIGHUP and waits until the daemon
    /// says it reloaded.
    fn reload(&self, after: &str) {
        let reloads = self.reloads();
        std::fs::write(&self.file, after).expect("rewrite the config file");
        self.daemon.signal(libc::SIGHUP);
        wait_until("the daemon logs the reload", || self.reloads() > reloads);
    }

    fn reloads(&self) -> usize {
        self.daemon.stderr().matches("config reloaded").count()
    }
}

/// A directory holding `files` empty files.
fn directory_with(parent: &Path, name: &str, files: usize) -> PathBuf {
    let path = parent.join(name);
    std::fs::create_dir_all(&path).expect("mkdir");
    for i in 0..files {
        std::fs::write(path.join(format!("m{i}.py")), b"").expect("write");
    }
    path
}

fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, limit: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains(limit), "{status}");
}

#[tokio::test]
async fn sighup_changes_log_level() {
    let served = Reloadable::start("log_level = \"warn\"\n", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    lookup_one(&mut client, tree.path()).await;
    assert!(
        !served.daemon.stderr().contains("answered"),
        "warn: no debug lines"
    );
    served.reload("log_level = \"debug\"\n");
    lookup_one(&mut client, tree.path()).await;
    wait_until("a debug line", || {
        served.daemon.stderr().contains("answered")
    });
}

#[tokio::test]
async fn sighup_changes_max_request_bytes() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let long = directory_with(tree.path(), &"d".repeat(200), 0);
    let paths = [long.as_path(), long.as_path()];
    let mut client = served.daemon.client().await;
    try_lookup(&mut client, &paths)
        .await
        .expect("under the default");
    served.reload("max_request_bytes = 256\n");
    refused(
        try_lookup(&mut client, &paths).await,
        "max_request_bytes = 256",
    );
}

#[tokio::test]
async fn sighup_changes_max_sys_path_entries() {
    let served = Reloadable::start("max_sys_path_entries = 1\n", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let request = snapshot_request(&[tree.path(), tree.path()], 0);
    let mut client = served.daemon.client().await;
    refused(
        client.snapshot(request.clone()).await,
        "max_sys_path_entries = 1",
    );
    served.reload("max_sys_path_entries = 2\n");
    let reply = client
        .snapshot(request)
        .await
        .expect("two now")
        .into_inner();
    assert_eq!(reply.directories.len(), 2);
}

#[tokio::test]
async fn sighup_changes_max_lookup_paths() {
    let served = Reloadable::start(
        "max_lookup_paths = 2\nmax_sys_path_entries = 10\n",
        &["--max-sys-path-entries", "1"],
    );
    let mut client = served.daemon.client().await;
    let counters = stats(&mut client).await;
    assert_eq!(limit(&counters, "max_lookup_paths"), 2, "from the file");
    assert_eq!(limit(&counters, "max_sys_path_entries"), 1, "the flag wins");
    let tree = tempfile::tempdir().expect("tempdir");
    let three = [tree.path(), tree.path(), tree.path()];
    refused(
        try_lookup(&mut client, &three).await,
        "max_lookup_paths = 2",
    );

    served.reload("max_lookup_paths = 5\n");
    let reply = try_lookup(&mut client, &three).await.expect("five now");
    assert_eq!(reply.directories.len(), 3);
    let counters = stats(&mut client).await;
    assert_eq!(limit(&counters, "max_lookup_paths"), 5);
    assert_eq!(
        limit(&counters, "max_sys_path_entries"),
        1,
        "flags still win"
    );

    std::fs::write(&served.file, "max_lookup_pathz = 7\n").expect("break it");
    served.daemon.signal(libc::SIGHUP);
    wait_until("the failed reload is logged", || {
        served.daemon.stderr().contains("reload failed")
    });
    assert_eq!(
        limit(&stats(&mut client).await, "max_lookup_paths"),
        5,
        "a bad file changes nothing, and the connection still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_max_requests_per_peer() {
    let big = BigDirectory::new();
    let not_kept = format!("max_indexed_entries = {}\n", BigDirectory::NOT_KEPT);
    let served = Reloadable::start(&not_kept, &[]);
    served.reload(&format!("{not_kept}max_requests_per_peer = 1\n"));
    let status = refusal_while_crawling(&served.daemon, &big.path)
        .await
        .expect("a request in flight made the next one wait its turn");
    refused(Err::<(), _>(status), "max_requests_per_peer = 1");
}

#[tokio::test]
async fn sighup_changes_max_connections_per_peer() {
    let served = Reloadable::start("", &[]);
    let mut held = served.daemon.client().await;
    stats(&mut held).await;
    stats(&mut served.daemon.client().await).await;
    served.reload("max_connections_per_peer = 1\n");
    // Refused at accept: the client sees a GOAWAY naming the limit, or the
    // close, depending on what it had read; the daemon counts it.
    let mut another = Client::new(lazy_channel(&served.daemon.socket));
    another
        .stats(pb::StatsRequest {})
        .await
        .expect_err("one connection is held already");
    assert!(stats(&mut held).await.connection_limit_rejections >= 1);
}

#[tokio::test]
async fn sighup_changes_max_entries_per_directory() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    let before = lookup_one(&mut client, &directory_with(tree.path(), "a", 5)).await;
    assert_eq!(status(&before), DirectoryStatus::Served);
    served.reload("max_entries_per_directory = 3\n");
    let after = lookup_one(&mut client, &directory_with(tree.path(), "b", 5)).await;
    assert_eq!(status(&after), DirectoryStatus::NotServed);
    assert!(
        after.reason.contains("max_entries_per_directory"),
        "{}",
        after.reason
    );
}

#[tokio::test]
async fn sighup_changes_max_indexed_entries() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    let three = |prefix: &str| -> Vec<PathBuf> {
        (0..3)
            .map(|i| directory_with(tree.path(), &format!("{prefix}{i}"), 6))
            .collect()
    };
    for dir in three("before") {
        lookup_one(&mut client, &dir).await;
    }
    assert_eq!(stats(&mut client).await.evictions, 0);
    served.reload("max_indexed_entries = 10\n");
    for dir in three("after") {
        lookup_one(&mut client, &dir).await;
    }
    assert!(stats(&mut client).await.evictions > 0);
}

#[tokio::test]
async fn sighup_changes_max_watches() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    lookup_one(&mut client, &directory_with(tree.path(), "a/b/c", 1)).await;
    assert_eq!(stats(&mut client).await.degraded_roots, 0);
    served.reload("max_watches = 1\n");
    let deep = directory_with(tree.path(), "d/e/f", 1);
    let unwatched = lookup_one(&mut client, &deep).await;
    assert_eq!(
        status(&unwatched),
        DirectoryStatus::Served,
        "served, not kept"
    );
    assert_eq!(unwatched.slot, 0);
    assert!(stats(&mut client).await.degraded_roots >= 1);
}

/// Looks up three fresh directories of six entries each under `prefix`.
async fn three_directories(client: &mut Client, tree: &Path, prefix: &str) {
    for i in 0..3 {
        lookup_one(client, &directory_with(tree, &format!("{prefix}{i}"), 6)).await;
    }
}

/// Before the reload nothing of this uid is evicted; after, its own least
/// recently used nodes are.
async fn evicts_after(setting: &str) {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    three_directories(&mut client, tree.path(), "before").await;
    assert_eq!(stats(&mut client).await.evictions, 0);
    served.reload(setting);
    three_directories(&mut client, tree.path(), "after").await;
    assert!(stats(&mut client).await.evictions > 0, "{setting}");
}

#[tokio::test]
async fn sighup_changes_max_nodes_per_uid() {
    evicts_after("max_nodes_per_uid = 2\n").await;
}

#[tokio::test]
async fn sighup_changes_max_indexed_entries_per_uid() {
    evicts_after("max_indexed_entries_per_uid = 10\n").await;
}

#[tokio::test]
async fn sighup_changes_max_index_bytes_per_uid() {
    evicts_after("max_index_bytes_per_uid = 3000\n").await;
}

#[tokio::test]
async fn sighup_changes_max_watches_per_uid() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    let kept = lookup_one(&mut client, &directory_with(tree.path(), "a/b/c", 1)).await;
    assert_ne!(kept.slot, 0);
    served.reload("max_watches_per_uid = 1\n");
    let deep = lookup_one(&mut client, &directory_with(tree.path(), "d/e/f", 1)).await;
    assert_eq!(status(&deep), DirectoryStatus::Served);
    assert_eq!(deep.slot, 0, "answered, not kept");
    assert!(stats(&mut client).await.degraded_roots >= 1);
}

#[tokio::test]
async fn sighup_changes_max_views_per_uid() {
    let served = Reloadable::start("", &[]);
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let in_view = |root: &Path| {
        let (socket, root) = (served.daemon.socket.clone(), root.to_owned());
        async move { pb::finder_client::FinderClient::new(channel_in_view(&socket, &root).await) }
    };
    let mut in_a = in_view(a.path()).await;
    let seen = lookup_one(&mut in_a, Path::new("/")).await;
    assert_eq!(status(&seen), DirectoryStatus::Served);
    served.reload("max_views_per_uid = 1\n");
    let mut in_b = in_view(b.path()).await;
    let refused = lookup_one(&mut in_b, Path::new("/")).await;
    assert_eq!(status(&refused), DirectoryStatus::NotServed);
    assert!(
        refused.reason.contains("max_views_per_uid"),
        "{}",
        refused.reason
    );
}

#[tokio::test]
async fn sighup_changes_view_linger_ms() {
    let served = Reloadable::start("view_linger_ms = 600000\n", &[]);
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir(root.path().join("lib")).expect("mkdir");
    let lib = Path::new("/lib");
    let mut host = served.daemon.client().await;
    let baseline = stats(&mut host).await.watches;
    let socket = served.daemon.socket.clone();
    let connect = || async {
        pb::finder_client::FinderClient::new(channel_in_view(&socket, root.path()).await)
    };
    let mut in_view = connect().await;
    let first = lookup_one(&mut in_view, lib).await;
    assert_ne!(first.slot, 0);
    drop(in_view);
    // Once the daemon saw the connection close, the view lingers: a new
    // connection finds its index as it was.
    wait_for_connections(&mut host, 1).await;
    let mut in_view = connect().await;
    let again = lookup_one(&mut in_view, lib).await;
    assert_eq!(
        again.generation, first.generation,
        "kept after its last connection"
    );
    drop(in_view);
    wait_for_connections(&mut host, 1).await;
    served.reload("view_linger_ms = 0\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats(&mut host).await.watches != baseline {
        assert!(
            Instant::now() < deadline,
            "the view lingered past the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon counts `open` connections.
async fn wait_for_connections(client: &mut Client, open: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats(client).await.open_connections != open {
        assert!(Instant::now() < deadline, "connections did not close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_changes_max_inflight_bytes_per_uid() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let long = directory_with(tree.path(), &"d".repeat(200), 0);
    let mut client = served.daemon.client().await;
    try_lookup(&mut client, &[long.as_path()])
        .await
        .expect("under the default");
    served.reload("max_inflight_bytes_per_uid = 100\n");
    refused(
        try_lookup(&mut client, &[long.as_path()]).await,
        "max_inflight_bytes_per_uid = 100",
    );
}

#[tokio::test]
async fn sighup_changes_max_reply_bytes() {
    let served = Reloadable::start("", &[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    let before = lookup_one(&mut client, &directory_with(tree.path(), "a", 50)).await;
    assert_eq!(status(&before), DirectoryStatus::Served);
    served.reload("max_reply_bytes = 200\n");
    let after = lookup_one(&mut client, &directory_with(tree.path(), "b", 50)).await;
    assert_eq!(status(&after), DirectoryStatus::NotServed);
    assert!(
        after.reason.contains("max_reply_bytes = 200"),
        "{}",
        after.reason
    );
}

/// The generation file's `dry_ns` moves while the daemon keeps the lease
/// fresh, and stops once the active window has passed.
#[tokio::test]
async fn sighup_changes_active_window_secs() {
    let served = Reloadable::start("active_window_secs = 3600\n", &[]);
    let genfile = served.daemon.socket.with_extension("sock.gen");
    let dry_ns = || read_gen_u64(&genfile, 24);
    let tree = tempfile::tempdir().expect("tempdir");
    let mut client = served.daemon.client().await;
    lookup_one(&mut client, tree.path()).await;
    let first = dry_ns();
    wait_until("the lease kept fresh", || dry_ns() != first);
    served.reload("active_window_secs = 1\n");
    lookup_one(&mut client, tree.path()).await;
    wait_until("the lease left to expire", || {
        let seen = dry_ns();
        std::thread::sleep(Duration::from_millis(500));
        dry_ns() == seen
    });
}

/// The drain ends at `drain_timeout_ms` with a request still in flight.
/// A daemon that finished the request before SIGTERM came shows nothing
/// either way: then it is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_drain_timeout_ms() {
    let big = BigDirectory::new();
    let before = format!(
        "max_indexed_entries = {}\ndrain_timeout_ms = 600000\n",
        BigDirectory::NOT_KEPT
    );
    for _ in 0..5 {
        let mut served = Reloadable::start(&before, &[]);
        served.reload(&before.replace("600000", "1"));
        let mut slow = served.daemon.client().await;
        let path = big.path.clone();
        let crawl = tokio::spawn(async move { try_lookup(&mut slow, &[path.as_path()]).await });
        let mut watcher = served.daemon.client().await;
        while stats(&mut watcher).await.lookup_requests == 0 {
            tokio::task::yield_now().await;
        }
        served.daemon.signal(libc::SIGTERM);
        let status = served.daemon.wait_exit(PATIENCE);
        assert!(status.success(), "{status}");
        let _ = crawl.await.expect("join");
        if served.daemon.stderr().contains("drain timed out") {
            return;
        }
    }
    panic!("no SIGTERM came while the crawl was in flight, in five tries");
}

#[test]
fn sighup_changes_idle_exit() {
    let mut served = Reloadable::start("idle_exit = 0\n", &[]);
    served.reload("idle_exit = 1\n");
    let status = served.daemon.wait_exit(PATIENCE);
    assert!(status.success(), "{status}");
    assert!(served.daemon.stderr().contains("idle"));
}

/// The background check of polled directories runs at the new interval
/// (`mtime_checks` counts them; a Stats request checks nothing).
#[tokio::test]
async fn sighup_changes_poll_interval_ms() {
    let tree = tempfile::tempdir().expect("tempdir");
    let polled = format!("--poll-filesystem=0x{:x}", filesystem_magic(tree.path()));
    let served = Reloadable::start("poll_interval_ms = 3600000\n", &[&polled]);
    let mut client = served.daemon.client().await;
    let listed = lookup_one(&mut client, tree.path()).await;
    assert_eq!(status(&listed), DirectoryStatus::Served);
    assert!(
        stats(&mut client).await.polled_roots >= 1,
        "the tree is polled"
    );
    let checks = stats(&mut client).await.mtime_checks;
    served.reload("poll_interval_ms = 10\n");
    let deadline = Instant::now() + PATIENCE;
    while stats(&mut client).await.mtime_checks < checks + 2 {
        assert!(Instant::now() < deadline, "no background check");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn filesystem_magic(path: &Path) -> u64 {
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated path and a zeroed statfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both outlive the call.
    let rc = unsafe { libc::statfs(name.as_ptr(), &mut fs) };
    assert_eq!(rc, 0, "statfs {}", path.display());
    fs.f_type as u64
}

#[tokio::test]
async fn sighup_keeps_restart_only_settings_and_names_them() {
    let served = Reloadable::start("uring_batch = 64\n", &[]);
    served.reload("uring_batch = 8\nlease_ms = 100\nmax_lookup_paths = 9\n");
    let stderr = served.daemon.stderr();
    let warning = stderr
        .lines()
        .find(|line| line.contains("take effect at the next start only"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(
        warning.contains("lease_ms") && warning.contains("uring_batch"),
        "{warning}"
    );
    let counters = stats(&mut served.daemon.client().await).await;
    assert_eq!(limit(&counters, "uring_batch"), 64, "kept until a restart");
    assert_eq!(limit(&counters, "lease_ms"), 200);
    assert_eq!(limit(&counters, "max_lookup_paths"), 9, "a limit applies");
}
