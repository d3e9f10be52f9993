//! What an operator relies on, against the real binary: a bad config file,
//! the per-peer request limit, io_uring refused by seccomp, gRPC reflection,
//! and `finderd stats --json`. The config file and SIGHUP: `reload.rs`.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use finderd_proto::v1 as pb;
use tonic::Code;

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
    let big = BigDirectory::new();
    let daemon = Daemon::start(&[
        "--max-requests-per-peer",
        "1",
        "--max-indexed-entries",
        BigDirectory::NOT_KEPT,
    ]);
    let status = refusal_while_crawling(&daemon, &big.path)
        .await
        .expect("a request in flight made the next one wait its turn");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("max_requests_per_peer = 1"),
        "{}",
        status.message()
    );
    let counters = stats(&mut daemon.client().await).await;
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
