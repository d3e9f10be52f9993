//! Peer views against the real binary: a client that passes a root
//! directory at connect is answered as beneath it (`crate::views`). A
//! directory stands in for a container's root here (the namespace tests in
//! `deploy/tests/test_views.py` use real mount namespaces and overlayfs).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use finderd_proto::v1 as pb;
use pb::DirectoryStatus;

/// A client whose connection passes `root` as its view.
async fn client_in(daemon: &Daemon, root: &Path) -> Client {
    pb::finder_client::FinderClient::new(channel_in_view(&daemon.socket, root).await)
}

/// A path that exists in no view but the test's (and not on the host).
fn unique() -> PathBuf {
    PathBuf::from(format!("/finderd-view-test-{}", std::process::id()))
}

/// A root whose `<unique>/lib` holds `names`.
fn root_with(names: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let lib = root
        .path()
        .join(unique().strip_prefix("/").expect("absolute"))
        .join("lib");
    std::fs::create_dir_all(&lib).expect("mkdir");
    for name in names {
        std::fs::write(lib.join(name), name.as_bytes()).expect("write");
    }
    root
}

fn names(directory: &pb::Directory) -> Vec<String> {
    (directory.entries.iter())
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

#[tokio::test]
async fn two_views_naming_one_path_are_each_answered_as_they_see_it() {
    let daemon = Daemon::start(&[]);
    let (a, b) = (root_with(&["a.py"]), root_with(&["b.py", "c.py"]));
    let lib = unique().join("lib");
    let mut in_a = client_in(&daemon, a.path()).await;
    let mut in_b = client_in(&daemon, b.path()).await;
    let mut host = daemon.client().await;
    let seen_a = lookup_one(&mut in_a, &lib).await;
    let seen_b = lookup_one(&mut in_b, &lib).await;
    assert_eq!(status(&seen_a), DirectoryStatus::Served, "{seen_a:?}");
    assert_eq!(names(&seen_a), ["a.py"]);
    assert_eq!(names(&seen_b), ["b.py", "c.py"]);
    assert_eq!(seen_a.path, seen_b.path, "the path as the peer named it");
    let on_host = lookup_one(&mut host, &lib).await;
    assert_eq!(status(&on_host), DirectoryStatus::Absent);
    // A second connection in view A shares its index.
    let mut again = client_in(&daemon, a.path()).await;
    let shared = lookup_one(&mut again, &lib).await;
    assert_eq!(names(&shared), ["a.py"]);
    assert_eq!(shared.generation, seen_a.generation, "kept, not read again");
}

#[tokio::test]
async fn symlinks_and_dot_dot_stay_in_the_view() {
    let daemon = Daemon::start(&[]);
    let a = root_with(&["a.py"]);
    let top = unique();
    let inner = a.path().join(top.strip_prefix("/").expect("absolute"));
    // Absolute: from the view's root, not the daemon's.
    std::os::unix::fs::symlink(&top, a.path().join("absolute")).expect("symlink");
    // `..` past the view's root stays at it.
    std::os::unix::fs::symlink("../../../../..", inner.join("up")).expect("symlink");
    let mut in_a = client_in(&daemon, a.path()).await;
    for path in [
        PathBuf::from("/absolute/lib"),
        top.join("up")
            .join(top.strip_prefix("/").expect("absolute"))
            .join("lib"),
    ] {
        let seen = lookup_one(&mut in_a, &path).await;
        assert_eq!(status(&seen), DirectoryStatus::Served, "{path:?}: {seen:?}");
        assert_eq!(names(&seen), ["a.py"], "{path:?}");
    }
    let listing = lookup_one(&mut in_a, &top).await;
    let up = (listing.entries.iter())
        .find(|e| e.name.as_ref() == b"up")
        .expect("the up link");
    assert_eq!(
        up.kind(),
        pb::EntryKind::SymlinkDir,
        "a directory in the view"
    );
}

#[tokio::test]
async fn a_change_in_a_view_is_in_the_next_answer() {
    let daemon = Daemon::start(&[]);
    let a = root_with(&["a.py"]);
    let lib = unique().join("lib");
    let mut in_a = client_in(&daemon, a.path()).await;
    let before = lookup_one(&mut in_a, &lib).await;
    assert_ne!(before.slot, 0, "kept: watched through the view");
    let real = a.path().join(lib.strip_prefix("/").expect("absolute"));
    std::fs::write(real.join("new.py"), b"").expect("write");
    let after = lookup_one(&mut in_a, &lib).await;
    assert_eq!(names(&after), ["a.py", "new.py"]);
    assert!(after.generation > before.generation);
    assert_eq!(
        read_gen_u64(
            Path::new(&format!("{}.gen", daemon.socket.display())),
            generation_offset(after.slot)
        ),
        after.generation,
        "published in the shared generation file"
    );
}

fn generation_offset(slot: u32) -> usize {
    64 + 8 * slot as usize
}

#[tokio::test]
async fn views_are_bounded_per_uid_and_a_closed_view_makes_room() {
    let daemon = Daemon::start(&["--max-views-per-uid", "1"]);
    let (a, b) = (root_with(&["a.py"]), root_with(&["b.py"]));
    let lib = unique().join("lib");
    let mut in_a = client_in(&daemon, a.path()).await;
    assert_eq!(names(&lookup_one(&mut in_a, &lib).await), ["a.py"]);
    let mut in_b = client_in(&daemon, b.path()).await;
    let refused = lookup_one(&mut in_b, &lib).await;
    assert_eq!(status(&refused), DirectoryStatus::NotServed);
    assert!(
        refused.reason.contains("max_views_per_uid"),
        "{}",
        refused.reason
    );
    drop(in_a);
    // The daemon sees the connection close on its own time: a new
    // connection in view B is served once view A, lingering without a
    // connection, gave up its place.
    let mut served = None;
    for _ in 0..200 {
        let mut in_b = client_in(&daemon, b.path()).await;
        let seen = lookup_one(&mut in_b, &lib).await;
        if status(&seen) == DirectoryStatus::Served {
            served = Some(seen);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let served = served.expect("view B served once view A's connection closed");
    assert_eq!(names(&served), ["b.py"]);
}

#[tokio::test]
async fn a_view_of_the_daemons_own_root_is_the_host_index() {
    let daemon = Daemon::start(&[]);
    let tree = tempfile::tempdir().expect("tempdir");
    std::fs::write(tree.path().join("x.py"), b"").expect("write");
    let mut host = daemon.client().await;
    let mut own = client_in(&daemon, Path::new("/")).await;
    let first = lookup_one(&mut host, tree.path()).await;
    let second = lookup_one(&mut own, tree.path()).await;
    assert_eq!(status(&second), DirectoryStatus::Served);
    assert_eq!(second.generation, first.generation, "one index");
}

#[tokio::test]
async fn a_plan_learned_in_one_view_serves_the_next_view_of_the_same_image() {
    let daemon = Daemon::start(&[]);
    let lib = unique().join("lib");
    let deep = lib.join("pkg/sub/deep");
    let image = |marker: &str| {
        let root = root_with(&["a.py"]);
        let real = root.path().join(deep.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&real).expect("mkdir");
        std::fs::write(real.join(marker), b"").expect("write");
        root
    };
    let (a, b) = (image("first_pod.py"), image("second_pod.py"));
    let program = bytes::Bytes::from_static(b"python -m app");
    let request = pb::SnapshotRequest {
        program_key: program.clone(),
        ..snapshot_request(&[&lib], 0)
    };
    let mut in_a = client_in(&daemon, a.path()).await;
    in_a.snapshot(request.clone()).await.expect("snapshot");
    in_a.report(pb::ReportRequest {
        protocol_version: finderd_proto::v1::PROTOCOL_VERSION,
        program_key: program.clone(),
        directories: vec![bytes_of(&deep)],
        ..Default::default()
    })
    .await
    .expect("report");
    drop(in_a);
    // A new pod of the same image: one Snapshot brings the planned
    // directory, read in this pod's view.
    let mut in_b = client_in(&daemon, b.path()).await;
    let reply = in_b.snapshot(request).await.expect("snapshot").into_inner();
    assert_eq!(reply.planned_directories, 1, "{reply:?}");
    let planned = (reply.directories.iter())
        .find(|d| d.path == bytes_of(&deep))
        .expect("the planned directory");
    assert_eq!(status(planned), DirectoryStatus::Served);
    assert_eq!(names(planned), ["second_pod.py"]);
}

#[tokio::test]
async fn a_view_gives_back_its_watches_and_slots_when_its_last_connection_closes() {
    let daemon = Daemon::start(&["--view-linger-ms", "0"]);
    let a = root_with(&["a.py"]);
    let mut host = daemon.client().await;
    let before = stats(&mut host).await;
    let mut in_a = client_in(&daemon, a.path()).await;
    let kept = lookup_one(&mut in_a, &unique().join("lib")).await;
    assert_ne!(kept.slot, 0);
    let held = stats(&mut host).await;
    assert!(held.watches > before.watches, "{held:?}");
    assert!(held.directories > before.directories);
    drop(in_a);
    let mut after = stats(&mut host).await;
    for _ in 0..200 {
        if after.watches == before.watches {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = stats(&mut host).await;
    }
    assert_eq!(after.watches, before.watches, "{after:?}");
    assert_eq!(after.directories, before.directories);
    let genfile = format!("{}.gen", daemon.socket.display());
    assert_eq!(
        read_gen_u64(Path::new(&genfile), generation_offset(kept.slot)),
        0,
        "slot released"
    );
}
