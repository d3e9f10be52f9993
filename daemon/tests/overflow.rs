//! `IN_Q_OVERFLOW`: every listing is dropped and recrawled, and the overflow
//! is counted. The kernel's queue is made tiny for the daemon's inotify
//! instance (`fs.inotify.max_queued_events` is read at `inotify_init`, so
//! it is restored right after the daemon started). Needs root; in its own
//! test binary so that no other test's daemon starts meanwhile.

mod common;

use std::time::Duration;

use common::*;

const MAX_QUEUED: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Restores the sysctl when dropped.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_QUEUED, &self.0);
    }
}

/// Waits until every thread of `pid` is stopped: `kill` returns before the
/// signal takes effect, and a reader thread still running would drain the
/// queue as it fills.
fn wait_stopped(pid: i32) {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat.rsplit_once(") ")?.1.chars().next()?;
                    Some(state == 'T' || state == 't')
                })
                .unwrap_or(true)
        })
    };
    for _ in 0..1000 {
        if stopped() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("finderd {pid} did not stop within 5 s");
}

#[tokio::test]
async fn an_overflowed_queue_recrawls_everything_and_is_counted() {
    let Ok(old) = std::fs::read_to_string(MAX_QUEUED) else {
        eprintln!("skipped: {MAX_QUEUED} unreadable");
        return;
    };
    let restore = Restore(old.trim().to_string());
    if std::fs::write(MAX_QUEUED, "16").is_err() {
        eprintln!("skipped: cannot lower {MAX_QUEUED} (needs root)");
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut client = daemon.client().await;
    // Answered: the inotify instance exists (it is made before serving).
    stats(&mut client).await;
    drop(restore);

    let tree = tempfile::tempdir().expect("tempdir");
    let first = snapshot(&mut client, &[tree.path()], 0).await;
    assert!(first.directories[0].entries.is_empty());
    // Stopped, the daemon reads nothing: 200 creations overflow 16 slots.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGSTOP) };
    wait_stopped(daemon.pid());
    for i in 0..200 {
        std::fs::write(tree.path().join(format!("m{i}.py")), b"").expect("write");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGCONT) };
    let after = lookup_one(&mut client, tree.path()).await;
    assert_eq!(after.entries.len(), 200, "recrawled after the overflow");
    assert!(after.generation > first.directories[0].generation);
    let counters = stats(&mut client).await;
    assert!(counters.overflows >= 1, "{counters:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        daemon.stderr().contains("overflowed"),
        "{}",
        daemon.stderr()
    );
}
