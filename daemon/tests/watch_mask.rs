//! An import storm against a watched tree must produce zero inotify events
//! at the daemon. In its own test binary so that no other test's temporary
//! directories generate events meanwhile.

mod common;

use std::path::Path;

use common::*;

/// Every regular file below `dir`.
fn files_below(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if entry.file_type().expect("type").is_dir() {
            files_below(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// What an import does to a tree: stat, list, open and read.
fn import_storm(site: &Path) {
    let mut files = Vec::new();
    files_below(site, &mut files);
    for _ in 0..3 {
        for file in &files {
            std::fs::metadata(file).expect("stat");
            std::fs::read(file).expect("read");
        }
        for dir in ["", "pkg_a", "pkg_b", "pkg_b/__pycache__"] {
            std::fs::read_dir(site.join(dir))
                .expect("list")
                .for_each(drop);
        }
    }
}

#[tokio::test]
async fn reading_a_watched_tree_produces_no_events() {
    // Outside /tmp, whose churn from other processes reaches the daemon
    // through its watch on /tmp as an ancestor.
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let site = base.path().join("site-packages");
    for dir in ["pkg_a", "pkg_b/__pycache__"] {
        std::fs::create_dir_all(site.join(dir)).expect("mkdir");
    }
    for file in [
        "six.py",
        "pkg_a/__init__.py",
        "pkg_a/core.py",
        "pkg_b/__init__.py",
        "pkg_b/__pycache__/__init__.cpython-311.pyc",
    ] {
        std::fs::write(site.join(file), b"x = 1\n").expect("write");
    }
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    let reply = snapshot(&mut client, &[&site], 1 << 20).await;
    assert_eq!(
        reply.directories.len(),
        3,
        "site-packages and both packages"
    );
    lookup(&mut client, &[&site.join("pkg_b/__pycache__")]).await;

    // Unrelated activity near the tree (a compiler writing in target/) can
    // reach the ancestors' watches; a real subscription to reads would count
    // dozens of events every time, so retry a noisy round a few times.
    let mut deltas = Vec::new();
    for _ in 0..5 {
        lookup(&mut client, &[&site]).await;
        let before = stats(&mut client).await.inotify_events;
        import_storm(&site);
        lookup(&mut client, &[&site]).await;
        let delta = stats(&mut client).await.inotify_events - before;
        deltas.push(delta);
        if delta == 0 {
            break;
        }
    }
    assert_eq!(
        deltas.last(),
        Some(&0),
        "events per import storm: {deltas:?}"
    );
    assert!(stats(&mut client).await.watches >= 4);
}
