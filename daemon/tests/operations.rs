//! What an operator relies on, against the real binary: the config file and
//! SIGHUP reload, the per-peer request limit, io_uring refused by seccomp,
//! gRPC reflection, and `finderd stats --json`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use finderd_proto::v1 as pb;
use tonic::Code;

async fn lookup_paths(
    client: &mut Client,
    paths: &[&Path],
) -> Result<pb::LookupReply, tonic::Status> {
    client
        .lookup(pb::LookupRequest {
            protocol_version: finderd_proto::v1::PROTOCOL_VERSION,
            paths: paths.iter().map(|p| bytes_of(p)).collect(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn limit(reply: &pb::StatsReply, name: &str) -> u64 {
    reply
        .limits
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no limit {name}"))
        .value
}

#[tokio::test]
async fn the_config_file_sets_limits_flags_win_and_sighup_reloads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("finderd.toml");
    std::fs::write(&config, "max_lookup_paths = 2\nmax_sys_path_entries = 10\n").expect("write");
    let config_arg = config.display().to_string();
    let daemon = Daemon::start(&["--config", &config_arg, "--max-sys-path-entries", "1"]);
    let mut client = daemon.client().await;
    let counters = stats(&mut client).await;
    assert_eq!(limit(&counters, "max_lookup_paths"), 2, "from the file");
    assert_eq!(limit(&counters, "max_sys_path_entries"), 1, "the flag wins");

    let three = [dir.path(), dir.path(), dir.path()];
    let refused = lookup_paths(&mut client, &three)
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("max_lookup_paths = 2"),
        "{}",
        refused.message()
    );

    std::fs::write(&config, "max_lookup_paths = 5\nlog_level = \"debug\"\n").expect("rewrite");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lookup_paths(&mut client, &three).await {
            Ok(reply) => {
                assert_eq!(reply.directories.len(), 3);
                break;
            }
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(status) => panic!("not reloaded: {status}"),
        }
    }
    assert_eq!(limit(&stats(&mut client).await, "max_lookup_paths"), 5);
    assert!(
        daemon.stderr().contains("config reloaded"),
        "{}",
        daemon.stderr()
    );

    std::fs::write(&config, "max_lookup_pathz = 7\n").expect("break it");
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.stderr().contains("reload failed"),
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        limit(&stats(&mut client).await, "max_lookup_paths"),
        5,
        "a bad file changes nothing, and the connection still works"
    );
}

#[test]
fn a_bad_config_file_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("finderd.toml");
    std::fs::write(&config, "max_requests_per_peer = \"many\"\n").expect("write");
    let output = Command::new(BINARY)
        .args(["serve", "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("finderd.toml") && stderr.contains("max_requests_per_peer"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_per_peer_limit_are_refused_naming_it() {
    let tree = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let big = tree.path().join("big");
    std::fs::create_dir(&big).expect("mkdir");
    for i in 0..30_000 {
        std::fs::File::create(big.join(format!("f{i}"))).expect("create");
    }
    // Too large to keep: every lookup of it crawls again (a slow request).
    let daemon = Daemon::start(&[
        "--max-requests-per-peer",
        "1",
        "--max-indexed-entries",
        "1000",
    ]);
    let mut other = daemon.client().await;
    let mut refused = None;
    for _ in 0..5 {
        let mut slow = daemon.client().await;
        let path = big.clone();
        let crawl = tokio::spawn(async move { lookup_one(&mut slow, &path).await });
        while !crawl.is_finished() {
            if let Err(status) = other.stats(pb::StatsRequest {}).await {
                refused = Some(status);
            }
        }
        let listed = crawl.await.expect("crawl");
        assert_eq!(listed.entries.len(), 30_000, "answered though not kept");
        if refused.is_some() {
            break;
        }
    }
    let status = refused.expect("a request in flight made the next one wait its turn");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("max_requests_per_peer = 1"),
        "{}",
        status.message()
    );
    let counters = stats(&mut other).await;
    assert!(counters.peer_limit_rejections >= 1);
}

/// Makes `io_uring_setup` fail with EPERM in the child, as a container's
/// seccomp profile does.
fn deny_io_uring() -> std::io::Result<()> {
    let filter = [
        // Load the syscall number.
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const _,
            ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[tokio::test]
async fn io_uring_refused_by_seccomp_falls_back_to_sync_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    let log = dir.path().join("stderr.log");
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--refresh-engine", "uring", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    // SAFETY: prctl only, between fork and exec.
    unsafe { command.pre_exec(deny_io_uring) };
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = pb::finder_client::FinderClient::new(channel(&socket).await);
    let tree = tempfile::tempdir().expect("tempdir");
    for i in 0..50 {
        std::fs::write(tree.path().join(format!("m{i}.py")), b"").expect("write");
    }
    let listed = lookup_one(&mut client, tree.path()).await;
    assert_eq!(listed.entries.len(), 50);
    let counters = stats(&mut client).await;
    assert!(
        counters.io_uring.contains("Operation not permitted"),
        "{}",
        counters.io_uring
    );
    assert_eq!(counters.crawls_uring, 0);
    assert!(counters.crawls_sync >= 1);
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        stderr.matches("io_uring unavailable").count(),
        1,
        "logged once:\n{stderr}"
    );
}

#[tokio::test]
async fn grpc_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let daemon = Daemon::start(&[]);
    let mut client = ServerReflectionClient::new(channel(&daemon.socket).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["finderd.v1.Finder", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == wanted), "{names:?}");
    }
}

#[tokio::test]
async fn stats_json_reports_every_new_counter() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    lookup_one(&mut client, daemon.dir.path()).await;
    let output = Command::new(BINARY)
        .args(["stats", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("run stats");
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for key in [
        "polled_roots",
        "degraded_roots",
        "overflows",
        "evictions",
        "io_uring",
        "filesystems",
        "limits",
        "uptime_ms",
        "crawls_uring",
        "crawls_sync",
        "peer_limit_rejections",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(json["limits"]["max_requests_per_peer"], 128);
    let table = Command::new(BINARY)
        .args(["stats", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("run stats");
    let table = String::from_utf8_lossy(&table.stdout);
    for word in [
        "polled roots",
        "evictions",
        "io_uring",
        "max_indexed_entries",
        "filesystem",
    ] {
        assert!(table.contains(word), "{word} missing from\n{table}");
    }
}

#[test]
fn under_journald_lines_carry_a_syslog_priority_and_no_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY)
        .args([
            "serve",
            "--idle-exit",
            "1",
            "--log-level",
            "info",
            "--socket",
        ])
        .arg(dir.path().join("s.sock"))
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("<6> INFO serving"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colours: {stderr:?}");
}
