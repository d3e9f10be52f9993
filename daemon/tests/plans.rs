//! Learned plans against the real daemon: Report, the plan in the next
//! Snapshot, freshness of planned directories, adaptation, persistence
//! across restarts, isolation between keys and uids, compiled files served
//! from memory on a FUSE mount (bindfs), request deadlines, bad input.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use finderd_proto::v1 as pb;
use finderd_proto::v1::DirectoryStatus;
use tonic::Code;

fn key(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn planned_request(paths: &[&Path], program: &Bytes, bytecode_bytes: u64) -> pb::SnapshotRequest {
    pb::SnapshotRequest {
        program_key: program.clone(),
        bytecode_bytes,
        ..snapshot_request(paths, 1 << 20)
    }
}

async fn planned_snapshot(
    client: &mut Client,
    paths: &[&Path],
    program: &Bytes,
    bytecode_bytes: u64,
) -> pb::SnapshotReply {
    client
        .snapshot(planned_request(paths, program, bytecode_bytes))
        .await
        .expect("snapshot")
        .into_inner()
}

fn report_request(program: &Bytes, directories: &[&Path], files: &[&Path]) -> pb::ReportRequest {
    pb::ReportRequest {
        protocol_version: finderd_proto::v1::PROTOCOL_VERSION,
        program_key: program.clone(),
        directories: directories.iter().map(|p| bytes_of(p)).collect(),
        bytecode_files: files.iter().map(|p| bytes_of(p)).collect(),
        mount_namespace: 0,
    }
}

async fn report(client: &mut Client, program: &Bytes, directories: &[&Path], files: &[&Path]) {
    client
        .report(report_request(program, directories, files))
        .await
        .expect("report");
}

/// The directories after the sys.path entries that came from the plan.
fn planned(reply: &pb::SnapshotReply, entries: usize) -> Vec<PathBuf> {
    let count = reply.planned_directories as usize;
    reply.directories[entries..entries + count]
        .iter()
        .map(|d| path_of(&d.path))
        .collect()
}

fn find<'a>(reply: &'a pb::SnapshotReply, path: &Path) -> Option<&'a pb::Directory> {
    reply.directories.iter().find(|d| path_of(&d.path) == path)
}

fn mtime_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec()
}

/// The listing matches the directory now: names, kinds and fingerprints.
fn assert_listing_is_the_directory(directory: &pb::Directory, path: &Path) {
    assert_eq!(
        status(directory),
        DirectoryStatus::Served,
        "{}",
        path.display()
    );
    let mut on_disk: Vec<(Vec<u8>, i64, u64)> = std::fs::read_dir(path)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let metadata = std::fs::metadata(e.path()).expect("stat");
            let name = e.file_name().as_encoded_bytes().to_vec();
            (name, mtime_ns(&metadata), metadata.len())
        })
        .collect();
    on_disk.sort();
    let served: Vec<(Vec<u8>, i64, u64)> = directory
        .entries
        .iter()
        .map(|e| (e.name.to_vec(), e.mtime_ns, e.size))
        .collect();
    assert_eq!(served, on_disk, "{}", path.display());
}

/// A sys.path entry with two packages, one with a subpackage, and a
/// directory the prefetch would guess.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pkg: PathBuf,
    sub: PathBuf,
    other: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("site-packages");
    let pkg = root.join("pkg");
    let sub = pkg.join("sub");
    let other = root.join("other");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(pkg.join("__init__.py"), b"").expect("write");
    std::fs::write(pkg.join("mod.py"), b"x = 1\n").expect("write");
    std::fs::write(sub.join("__init__.py"), b"").expect("write");
    Tree {
        _dir: dir,
        root,
        pkg,
        sub,
        other,
    }
}

#[tokio::test]
async fn a_reported_plan_is_served_in_the_next_snapshot_instead_of_the_prefetch() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    let t = tree();
    let program = key("cpython-311|c:import pkg.sub|site-packages");

    let first = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(first.planned_directories, 0, "no plan yet");
    assert!(
        find(&first, &t.other).is_some(),
        "a first run gets the prefetch"
    );

    report(&mut client, &program, &[&t.pkg, &t.sub], &[]).await;
    let second = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(second.planned_directories, 2);
    assert_eq!(planned(&second, 1), [t.pkg.clone(), t.sub.clone()]);
    assert_eq!(
        second.directories.len(),
        3,
        "the plan replaces the prefetch"
    );
    assert_listing_is_the_directory(&second.directories[1], &t.pkg);
    assert_listing_is_the_directory(&second.directories[2], &t.sub);

    let other_program = key("cpython-311|c:import other|site-packages");
    let unplanned = planned_snapshot(&mut client, &[&t.root], &other_program, 0).await;
    assert_eq!(unplanned.planned_directories, 0, "keys do not share plans");
    let without_key = snapshot(&mut client, &[&t.root], 1 << 20).await;
    assert_eq!(without_key.planned_directories, 0);

    let json = finderd_stats_json(&daemon.socket);
    assert_eq!(json["plans"]["plans"], 1, "{json}");
    assert_eq!(json["plans"]["plan_directories"], 2, "{json}");
    assert_eq!(json["plans"]["reports"], 1, "{json}");
    assert_eq!(json["plans"]["planned_directories_served"], 2, "{json}");
}

#[tokio::test]
async fn each_planned_snapshot_shows_exactly_the_filesystem() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    let t = tree();
    let program = key("p");
    report(&mut client, &program, &[&t.pkg, &t.sub], &[]).await;
    let check = |reply: &pb::SnapshotReply| {
        assert_eq!(reply.planned_directories, 2);
        assert_listing_is_the_directory(find(reply, &t.pkg).expect("pkg"), &t.pkg);
        assert_listing_is_the_directory(find(reply, &t.sub).expect("sub"), &t.sub);
    };
    check(&planned_snapshot(&mut client, &[&t.root], &program, 0).await);

    std::fs::write(t.pkg.join("mod.py"), b"x = 2  # longer now\n").expect("modify");
    check(&planned_snapshot(&mut client, &[&t.root], &program, 0).await);
    std::fs::remove_file(t.pkg.join("mod.py")).expect("remove");
    let removed = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    check(&removed);
    assert!(!names(find(&removed, &t.pkg).expect("pkg")).contains(&b"mod.py".to_vec()));
    std::fs::write(t.sub.join("new.py"), b"").expect("add");
    let added = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    check(&added);
    assert!(names(find(&added, &t.sub).expect("sub")).contains(&b"new.py".to_vec()));

    // A planned directory that is gone is left out, not served stale.
    std::fs::remove_dir_all(&t.sub).expect("rmdir");
    let gone = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(planned(&gone, 1), std::slice::from_ref(&t.pkg));
}

#[tokio::test]
async fn entries_unused_for_n_reports_drop_out() {
    let daemon = Daemon::start(&["--plan-drop-after", "3"]);
    let mut client = daemon.client().await;
    let t = tree();
    let program = key("p");
    report(&mut client, &program, &[&t.pkg, &t.sub], &[]).await;
    for round in 1..=3 {
        let reply = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
        assert_eq!(reply.planned_directories, 2, "round {round}");
        report(&mut client, &program, &[&t.pkg], &[]).await;
    }
    let reply = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(
        planned(&reply, 1),
        std::slice::from_ref(&t.pkg),
        "sub dropped out"
    );
    for _ in 0..3 {
        report(&mut client, &program, &[], &[]).await;
    }
    let reply = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(reply.planned_directories, 0, "an empty plan is forgotten");
    assert!(find(&reply, &t.other).is_some(), "and the prefetch is back");
}

#[tokio::test]
async fn plans_survive_a_restart_and_a_crash_through_the_state_file() {
    let mut daemon = Daemon::start(&["--state-write-interval-ms", "50"]);
    let t = tree();
    let program = key("p");
    report(&mut daemon.client().await, &program, &[&t.pkg], &[]).await;
    daemon.restart(&["--state-write-interval-ms", "50"]);
    let reply = planned_snapshot(&mut daemon.client().await, &[&t.root], &program, 0).await;
    assert_eq!(
        planned(&reply, 1),
        std::slice::from_ref(&t.pkg),
        "kept across SIGTERM"
    );
    assert!(
        daemon.stderr().contains("learned plans loaded"),
        "{}",
        daemon.stderr()
    );

    // Written within the interval, not only at shutdown: a crash keeps it.
    // The file is waited for by what it holds (the new directory's path, as
    // the protobuf payload stores it), not by its mtime: a rewrite may land
    // before the test looks, or within one timestamp tick.
    report(&mut daemon.client().await, &program, &[&t.pkg, &t.sub], &[]).await;
    let state = daemon.state_dir().join("plans.state");
    let sub = t.sub.as_os_str().as_bytes().to_vec();
    wait_until("the state file rewritten with the new plan", || {
        std::fs::read(&state).is_ok_and(|bytes| bytes.windows(sub.len()).any(|w| w == sub))
    });
    daemon.kill();
    daemon.restart(&[]);
    let reply = planned_snapshot(&mut daemon.client().await, &[&t.root], &program, 0).await;
    assert_eq!(
        planned(&reply, 1),
        [t.pkg.clone(), t.sub.clone()],
        "kept across SIGKILL"
    );
    assert_eq!(
        std::fs::metadata(&state)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[tokio::test]
async fn a_damaged_or_foreign_state_file_is_ignored_and_logged() {
    let mut daemon = Daemon::start(&[]);
    let t = tree();
    let program = key("p");
    report(&mut daemon.client().await, &program, &[&t.pkg], &[]).await;
    daemon.terminate();
    let state = daemon.state_dir().join("plans.state");
    let good = std::fs::read(&state).expect("state file written at shutdown");
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let damaged: [(&str, Vec<u8>, &str); 4] = [
        ("corrupt", corrupt, "checksum mismatch"),
        ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
        (
            "foreign",
            b"\x7fELF\x02\x01\x01\0 not a plan file at all".to_vec(),
            "not a finderd plan state file",
        ),
        ("empty", Vec::new(), "shorter than"),
    ];
    for (what, bytes, logged) in damaged {
        std::fs::write(&state, &bytes).expect("damage");
        daemon.restart(&[]);
        let mut client = daemon.client().await;
        let reply = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
        assert_eq!(reply.planned_directories, 0, "{what}: no plan adopted");
        assert_eq!(
            status(&reply.directories[0]),
            DirectoryStatus::Served,
            "{what}"
        );
        let log = daemon.stderr();
        assert!(
            log.contains("plan state file ignored") && log.contains(logged),
            "{what}:\n{log}"
        );
        daemon.terminate();
    }
    // Another daemon's file (another socket) is not adopted either.
    std::fs::write(&state, &good).expect("restore");
    let other = Daemon::start(&["--state-dir", daemon.state_dir().to_str().expect("utf-8")]);
    let reply = planned_snapshot(&mut other.client().await, &[&t.root], &program, 0).await;
    assert_eq!(reply.planned_directories, 0);
    assert!(
        other.stderr().contains("not this one"),
        "{}",
        other.stderr()
    );
}

#[tokio::test]
async fn bad_reports_get_clear_statuses_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start(&["--max-program-key-bytes", "16", "--max-report-paths", "2"]);
    let mut client = daemon.client().await;
    let t = tree();
    let program = key("p");
    let cases: Vec<(pb::ReportRequest, Code, &str)> = vec![
        (
            pb::ReportRequest {
                protocol_version: 0,
                ..report_request(&program, &[], &[])
            },
            Code::InvalidArgument,
            "protocol_version is missing",
        ),
        (
            pb::ReportRequest {
                protocol_version: 9,
                ..report_request(&program, &[], &[])
            },
            Code::FailedPrecondition,
            "protocol_version 9 is not supported",
        ),
        (
            report_request(&Bytes::new(), &[&t.pkg], &[]),
            Code::InvalidArgument,
            "program_key is empty",
        ),
        (
            report_request(&key("a key over sixteen bytes"), &[&t.pkg], &[]),
            Code::ResourceExhausted,
            "program_key is 24 bytes, over the limit max_program_key_bytes = 16",
        ),
        (
            report_request(&program, &[&t.pkg, &t.sub, &t.other], &[]),
            Code::ResourceExhausted,
            "directories has 3 entries, over the limit max_report_paths = 2",
        ),
        (
            report_request(&program, &[], &[&t.pkg, &t.sub, &t.other]),
            Code::ResourceExhausted,
            "bytecode_files has 3 entries, over the limit max_report_paths = 2",
        ),
        (
            report_request(&program, &[&t.pkg, Path::new("relative/dir")], &[]),
            Code::InvalidArgument,
            "directories[1] is not an absolute path: \"relative/dir\"",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.report(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(message), "{}", status.message());
    }
    let malformed = raw_call(
        &daemon.socket,
        "/finderd.v1.Finder/Report",
        Bytes::from_static(b"\x0a\xff\xff"),
    )
    .await
    .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);

    // Non-canonical paths are left out, not refused.
    let odd = [t.pkg.join("..").join("pkg"), t.sub.clone()];
    report(&mut client, &program, &[&odd[0], &odd[1]], &[]).await;
    let reply = planned_snapshot(&mut client, &[&t.root], &program, 0).await;
    assert_eq!(planned(&reply, 1), std::slice::from_ref(&t.sub));
    assert!(stats(&mut client).await.rejected_requests >= 8);
}

/// The client's deadline, and the share of it the daemon may use
/// (`--deadline-percent`): the daemon answers 20 ms into a 2 s deadline, so
/// a loaded machine delays its answer by up to 1.98 s before the client
/// gives up, while no crawl of a 100,000-entry directory fits in 20 ms
/// (a statx alone costs more than 200 ns).
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
const DEADLINE_PERCENT: &str = "1";

fn with_deadline(paths: &[&Path]) -> tonic::Request<pb::SnapshotRequest> {
    let mut request = tonic::Request::new(snapshot_request(paths, 0));
    request.set_timeout(CLIENT_DEADLINE);
    request
}

#[tokio::test]
async fn a_snapshot_past_its_deadline_answers_what_is_indexed_and_the_crawl_goes_on() {
    let daemon = Daemon::start(&["--deadline-percent", DEADLINE_PERCENT]);
    let mut client = daemon.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (small, big) = (dir.path().join("small"), dir.path().join("big"));
    std::fs::create_dir(&small).expect("mkdir");
    std::fs::create_dir(&big).expect("mkdir");
    for i in 0..100_000 {
        std::fs::File::create(big.join(format!("module_{i}.py"))).expect("create");
    }
    snapshot(&mut client, &[&small], 0).await;

    let reply = client
        .snapshot(with_deadline(&[&small, &big]))
        .await
        .expect("answered at the daemon's deadline, well before the client's")
        .into_inner();
    let being_indexed =
        |d: &pb::Directory| status(d) == DirectoryStatus::NotServed && d.reason == "being indexed";
    // What is indexed is served, unless the barrier was busy at that
    // instant (the crawl taking its watch): then nothing can be vouched
    // for and every entry is "being indexed". Either way, no waiting.
    let small_answer = &reply.directories[0];
    assert!(
        status(small_answer) == DirectoryStatus::Served || being_indexed(small_answer),
        "{small_answer:?}"
    );
    assert!(
        being_indexed(&reply.directories[1]),
        "{:?}",
        reply.directories[1]
    );

    // The crawl goes on in the background with no further request (Stats
    // crawls nothing); once it is indexed, the same Snapshot serves it.
    let patience = Instant::now() + 4 * PATIENCE;
    while stats(&mut client).await.entries < 100_000 {
        assert!(
            Instant::now() < patience,
            "the background crawl never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = client
        .snapshot(with_deadline(&[&small, &big]))
        .await
        .expect("snapshot")
        .into_inner();
    assert_eq!(status(&reply.directories[1]), DirectoryStatus::Served);
    assert_eq!(reply.directories[1].entries.len(), 100_000);
    let json = finderd_stats_json(&daemon.socket);
    assert!(
        json["plans"]["deadline_replies"].as_u64() >= Some(1),
        "{json}"
    );
}

/// `finderd stats --json` against the daemon.
fn finderd_stats_json(socket: &Path) -> serde_json::Value {
    let output = std::process::Command::new(BINARY)
        .args(["stats", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("finderd stats");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}
