//! Watching against the real binary on real trees: directories removed,
//! renamed or replaced by a file, roots created later, bind mounts,
//! symlinked directories, FUSE mounts (polled), a large directory crawled
//! off the request path, eviction, and the io_uring engine choice.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use finderd_proto::v1 as pb;
use pb::DirectoryStatus;

fn has(directory: &pb::Directory, name: &str) -> bool {
    names(directory).contains(&name.as_bytes().to_vec())
}

/// Directory timestamps move with the kernel's coarse clock: wait a tick
/// before a change that only an mtime check can see.
fn next_tick() {
    std::thread::sleep(Duration::from_millis(15));
}

#[tokio::test]
async fn a_watched_directory_removed_renamed_or_replaced_by_a_file() {
    let daemon = Daemon::start(&[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let dir = tree.path().join("pkg");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("a.py"), b"").expect("write");
    let mut client = daemon.client().await;
    assert!(has(&lookup_one(&mut client, &dir).await, "a.py"));

    std::fs::rename(&dir, tree.path().join("moved")).expect("rename");
    let gone = lookup_one(&mut client, &dir).await;
    assert_eq!(status(&gone), DirectoryStatus::Absent);
    assert_eq!(gone.error, libc::ENOENT);

    std::fs::write(&dir, b"now a file").expect("write");
    let file = lookup_one(&mut client, &dir).await;
    assert_eq!(status(&file), DirectoryStatus::NotServed);
    assert_eq!(file.reason, "not a directory");

    std::fs::remove_file(&dir).expect("rm");
    std::fs::create_dir(&dir).expect("mkdir again");
    std::fs::write(dir.join("b.py"), b"").expect("write");
    let back = lookup_one(&mut client, &dir).await;
    assert_eq!(status(&back), DirectoryStatus::Served);
    assert_eq!(names(&back), vec![b"b.py".to_vec()]);

    std::fs::remove_dir_all(&dir).expect("rm -r");
    assert_eq!(
        status(&lookup_one(&mut client, &dir).await),
        DirectoryStatus::Absent
    );
}

#[tokio::test]
async fn a_root_created_later_is_served_once_it_exists() {
    let daemon = Daemon::start(&[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path().join("not/yet/there");
    let mut client = daemon.client().await;
    let reply = snapshot(&mut client, &[&root], 0).await;
    assert_eq!(status(&reply.directories[0]), DirectoryStatus::Absent);
    std::fs::create_dir_all(&root).expect("mkdir -p");
    std::fs::write(root.join("m.py"), b"").expect("write");
    let reply = snapshot(&mut client, &[&root], 0).await;
    assert_eq!(status(&reply.directories[0]), DirectoryStatus::Served);
    assert!(has(&reply.directories[0], "m.py"));
}

#[tokio::test]
async fn symlinked_directories_and_loops() {
    let daemon = Daemon::start(&[]);
    let tree = tempfile::tempdir().expect("tempdir");
    let real = tree.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    symlink(&real, tree.path().join("link")).expect("symlink");
    symlink("loop_b", tree.path().join("loop_a")).expect("symlink");
    symlink("loop_a", tree.path().join("loop_b")).expect("symlink");
    let mut client = daemon.client().await;
    let through_link = tree.path().join("link");
    assert_eq!(
        status(&lookup_one(&mut client, &through_link).await),
        DirectoryStatus::Served
    );
    std::fs::write(real.join("x.py"), b"").expect("write");
    assert!(
        has(&lookup_one(&mut client, &through_link).await, "x.py"),
        "a change in the target shows through the link"
    );
    let looping = lookup_one(&mut client, &tree.path().join("loop_a")).await;
    assert_eq!(status(&looping), DirectoryStatus::NotServed);
    assert!(
        looping.reason.contains("symbolic links"),
        "{}",
        looping.reason
    );
}

/// Runs a command, `false` when it is missing or fails.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_bind_mount_sees_changes_made_through_the_original_path() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: bind mounts need root");
        return;
    }
    let tree = tempfile::tempdir().expect("tempdir");
    let (source, target) = (tree.path().join("source"), tree.path().join("target"));
    std::fs::create_dir(&source).expect("mkdir");
    std::fs::create_dir(&target).expect("mkdir");
    if !run(
        "mount",
        &["--bind".as_ref(), source.as_os_str(), target.as_os_str()],
    ) {
        eprintln!("skipped: mount --bind failed here");
        return;
    }
    let _mount = Mount(target.clone());
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    assert_eq!(
        status(&lookup_one(&mut client, &target).await),
        DirectoryStatus::Served
    );
    std::fs::write(source.join("via_source.py"), b"").expect("write");
    assert!(has(
        &lookup_one(&mut client, &target).await,
        "via_source.py"
    ));
}

fn fuse_available() -> Result<(), &'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing");
    }
    if !run("bindfs", &["--version".as_ref()]) {
        return Err("bindfs is not installed (apt-get install bindfs)");
    }
    Ok(())
}

#[tokio::test]
async fn a_fuse_mount_is_polled_and_stays_fresh() {
    if let Err(reason) = fuse_available() {
        eprintln!("skipped: {reason}");
        return;
    }
    let tree = tempfile::tempdir().expect("tempdir");
    let (source, mnt) = (tree.path().join("source"), tree.path().join("mnt"));
    std::fs::create_dir(&source).expect("mkdir");
    std::fs::create_dir(&mnt).expect("mkdir");
    std::fs::write(source.join("a.py"), b"1").expect("write");
    let options = "attr_timeout=0,entry_timeout=0";
    if !run(
        "bindfs",
        &[
            "-o".as_ref(),
            options.as_ref(),
            source.as_os_str(),
            mnt.as_os_str(),
        ],
    ) {
        eprintln!("skipped: bindfs could not mount");
        return;
    }
    let _mount = Mount(mnt.clone());
    let daemon = Daemon::start(&["--poll-interval-ms", "100"]);
    let mut client = daemon.client().await;
    let first = snapshot(&mut client, &[&mnt], 0).await;
    assert_eq!(status(&first.directories[0]), DirectoryStatus::Served);
    let counters = stats(&mut client).await;
    assert_eq!(counters.polled_roots, 1);
    assert!(
        counters
            .filesystems
            .iter()
            .any(|f| f.filesystem == "fuse" && f.polled),
        "{:?}",
        counters.filesystems
    );

    // A change behind the mount's back: inotify on the mount sees nothing.
    next_tick();
    std::fs::write(source.join("b.py"), b"").expect("write");
    assert!(
        has(&lookup_one(&mut client, &mnt).await, "b.py"),
        "the request-time mtime check found it"
    );

    // A rewrite in place moves no directory mtime: the poller finds it and
    // the slot changes, so a running client revalidates.
    let slot_before = lookup_one(&mut client, &mnt).await;
    let genfile = daemon.socket.with_extension("sock.gen");
    std::fs::write(source.join("a.py"), b"longer").expect("rewrite");
    let mut seen = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        if slot_value(&genfile, slot_before.slot) != slot_before.generation {
            seen = true;
            break;
        }
    }
    assert!(seen, "the poller did not notice the rewrite");
    let after = lookup_one(&mut client, &mnt).await;
    let a = after
        .entries
        .iter()
        .find(|e| e.name.as_ref() == b"a.py")
        .expect("a.py");
    assert_eq!(a.size, 6);
}

/// `count` empty files named `f0000000`... in `dir`.
fn fill(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for i in 0..count {
        std::fs::File::create(dir.join(format!("f{i:07}"))).expect("create");
    }
}

/// While a large directory is crawled, requests for other directories keep
/// being answered: the crawl holds no lock that they need.
async fn large_directory_does_not_block_others(entries: usize) {
    let tree = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let big = tree.path().join("big");
    fill(&big, entries);
    let small = tree.path().join("small");
    fill(&small, 3);
    let daemon = Daemon::start(&[]);
    let mut warm = daemon.client().await;
    lookup_one(&mut warm, &small).await;

    // A million entries encode to about 26 MB: above tonic's default 4 MB.
    let mut crawler = daemon.client().await.max_decoding_message_size(64 << 20);
    let big_path = big.clone();
    let crawl = tokio::spawn(async move { lookup_one(&mut crawler, &big_path).await });
    let mut answered_meanwhile = 0;
    while !crawl.is_finished() {
        let reply = lookup_one(&mut warm, &small).await;
        assert_eq!(status(&reply), DirectoryStatus::Served);
        answered_meanwhile += 1;
    }
    let listed = crawl.await.expect("crawl task");
    assert_eq!(
        status(&listed),
        DirectoryStatus::Served,
        "{}",
        listed.reason
    );
    assert_eq!(listed.entries.len(), entries);
    assert!(
        answered_meanwhile > 0,
        "no other request was answered during the crawl"
    );
    let counters = stats(&mut warm).await;
    assert!(counters.entries >= entries as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_directory_is_crawled_off_the_request_path() {
    large_directory_does_not_block_others(100_000).await;
}

/// Slow (creating a million files): `cargo test -p finderd -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_million_entry_directory_is_served_without_blocking_others() {
    large_directory_does_not_block_others(1_000_000).await;
}

#[tokio::test]
async fn least_recently_used_listings_are_evicted_past_the_entry_limit() {
    let daemon = Daemon::start(&["--max-indexed-entries", "10"]);
    let tree = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|d| tree.path().join(d))
        .collect();
    for dir in &dirs {
        fill(dir, 4);
    }
    let mut client = daemon.client().await;
    let first = lookup_one(&mut client, &dirs[0]).await;
    lookup_one(&mut client, &dirs[1]).await;
    lookup_one(&mut client, &dirs[2]).await;
    let counters = stats(&mut client).await;
    assert!(counters.evictions >= 1, "{counters:?}");
    assert!(counters.entries <= 10);
    let genfile = daemon.socket.with_extension("sock.gen");
    assert_eq!(
        slot_value(&genfile, first.slot),
        0,
        "the least recently used listing went, and its slot says so"
    );
    let again = lookup_one(&mut client, &dirs[0]).await;
    assert_eq!(status(&again), DirectoryStatus::Served, "still answered");
    assert!(counters
        .limits
        .iter()
        .any(|l| l.name == "max_indexed_entries" && l.value == 10));
}

#[tokio::test]
async fn the_refresh_engine_is_chosen_per_filesystem_and_reported() {
    let tree = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir = tree.path().join("many");
    fill(&dir, 300);
    for (engine, expect_uring) in [("uring", true), ("sync", false), ("auto", false)] {
        let daemon = Daemon::start(&["--refresh-engine", engine]);
        let mut client = daemon.client().await;
        let listed = lookup_one(&mut client, &dir).await;
        assert_eq!(listed.entries.len(), 300);
        let counters = stats(&mut client).await;
        if counters.io_uring != "available" {
            eprintln!(
                "io_uring unavailable here ({}): sync only",
                counters.io_uring
            );
            assert_eq!(counters.crawls_uring, 0);
            continue;
        }
        if engine == "auto" {
            let fs = counters
                .filesystems
                .iter()
                .find(|f| f.reason == "measured")
                .unwrap_or_else(|| panic!("no measured filesystem: {:?}", counters.filesystems));
            assert!(fs.sync_ns_per_entry > 0 && fs.uring_ns_per_entry > 0);
            assert!(daemon
                .stderr()
                .contains("refresh engine chosen by measurement"));
        } else {
            assert_eq!(
                counters.crawls_uring > 0,
                expect_uring,
                "{engine}: {counters:?}"
            );
        }
    }
}
