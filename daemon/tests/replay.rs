//! `finderd replay` and `finderd profile` on real strace logs of
//! `python3 -c "import json"` (skipped with a reason when strace or python3
//! is missing).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::BINARY;

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The interpreter these tests trace: the real executable behind `python3`
/// (`sys.executable`), never a wrapper such as a pyenv shim, whose every
/// exec searches the library path cargo sets and crowds the stdlib
/// directory out of the profile's top ten.
fn python() -> Option<String> {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let path = String::from_utf8(output.stdout).ok()?.trim().to_string();
    Path::new(&path).is_absolute().then_some(path)
}

fn finderd(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run finderd")
}

fn record(log: &Path, flags: &[&str]) {
    let status = Command::new("strace")
        .args(flags)
        .arg("-o")
        .arg(log)
        .args([python().expect("python3").as_str(), "-c", "import json"])
        .status()
        .expect("run strace");
    assert!(status.success());
}

#[test]
fn replay_reads_strace_logs_in_every_form() {
    if !available("strace") || python().is_none() {
        eprintln!("skipped: needs strace and python3");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, flags) in [
        ("plain", &["-f"][..]),
        ("timed", &["-f", "-tt", "-T", "-y"][..]),
        ("epoch", &["-f", "-ttt"][..]),
    ] {
        let log = dir.path().join(format!("{name}.log"));
        record(&log, flags);
        let output = finderd(&["replay", "--rounds", "1", &log.display().to_string()]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name}: {output:?}");
        let stats: usize = stdout
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {stdout}"));
        assert!(stats > 20, "{name}: only {stats} stat calls:\n{stdout}");
        for row in [
            "| syscalls | - |",
            "| io_uring | 1 |",
            "| io_uring | 8 |",
            "| io_uring | 32 |",
            "| io_uring | 128 |",
        ] {
            assert!(stdout.contains(row), "{name}: {row} missing:\n{stdout}");
        }
    }
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "1 getpid() = 1\n").expect("write");
    let output = finderd(&["replay", &empty.display().to_string()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no stat-family"));
}

#[test]
fn profile_tells_which_case_a_command_is_in() {
    let (true, Some(python)) = (available("strace"), python()) else {
        eprintln!("skipped: needs strace and python3");
        return;
    };
    let output = finderd(&["profile", "--", &python, "-c", "import json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for word in [
        "newfstatat",
        "openat",
        "ENOENT",
        "directories stat'ed most",
        "untraced:",
        "verdict: ",
    ] {
        assert!(stdout.contains(word), "{word} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("python3."),
        "the stdlib directory is among the top: {stdout}"
    );
}

#[test]
fn profile_without_strace_says_so() {
    let output = Command::new(BINARY)
        .args(["profile", "--", "true"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("strace is not installed"), "{stderr}");
}
