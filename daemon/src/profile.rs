//! `finderd profile -- CMD ARGS...`: runs a command under `strace -f` and
//! prints what an operator needs to decide whether finderd helps: lookup
//! system calls per kind, the ENOENT share, the directories stat'ed most,
//! the time spent in them, and a one-line verdict.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::strace::{self, Call, LookupKind};

/// Mean cost of a lookup above which the filesystem counts as slow (a hot
/// local disk answers in 1-5 us).
const SLOW_LOOKUP: Duration = Duration::from_micros(20);
/// Distinct directories searched from which a search path counts as long.
const LONG_PATH_DIRECTORIES: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("strace is not installed or not on PATH; finderd profile needs it (Debian: apt-get install strace)")]
    NoStrace,
    #[error("cannot run strace: {0}")]
    Spawn(io::Error),
    #[error("cannot create a temporary file for the strace log: {0}")]
    TempFile(io::Error),
    #[error("cannot read the strace log: {0}")]
    Read(io::Error),
    #[error("strace failed ({status}); is ptrace allowed here (containers may need CAP_SYS_PTRACE)?\n{stderr}")]
    Strace { status: String, stderr: String },
}

fn find_strace() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("strace"))
        .find(|candidate| candidate.is_file())
}

/// Runs `command` under strace and returns the report.
pub fn run(command: &[OsString]) -> Result<String, ProfileError> {
    let strace = find_strace().ok_or(ProfileError::NoStrace)?;
    let dir = tempfile_dir().map_err(ProfileError::TempFile)?;
    let log = dir.join("strace.log");
    let started = Instant::now();
    let output = std::process::Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-T",
            "-y",
            "-e",
            "trace=%file,getdents64",
            "-o",
        ])
        .arg(&log)
        .arg("--")
        .args(command)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(ProfileError::Spawn)?;
    let wall = started.elapsed();
    let text = std::fs::read(&log);
    let _ = std::fs::remove_dir_all(&dir);
    let text = match text {
        Ok(text) => text,
        Err(_) if !output.status.success() => {
            return Err(ProfileError::Strace {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
        Err(error) => return Err(ProfileError::Read(error)),
    };
    let text = String::from_utf8_lossy(&text);
    let calls = strace::parse(&text);
    let mut summary = Summary::of(&calls);
    summary.replayed = Some(crate::replay::sync_cost(&text, 3));
    let shown: Vec<String> = command
        .iter()
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    Ok(report(
        &shown.join(" "),
        &output.status.to_string(),
        wall,
        &summary,
    ))
}

/// An argument as a shell would need it typed (for the report's header).
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn tempfile_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("finderd-profile-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

/// Counts per syscall name.
#[derive(Default)]
struct Tally {
    calls: u64,
    enoent: u64,
    time: Duration,
}

/// What the log says about lookups.
#[derive(Default)]
pub struct Summary {
    by_syscall: BTreeMap<String, Tally>,
    by_directory: HashMap<Vec<u8>, u64>,
    lookups: u64,
    enoent: u64,
    /// In-kernel time from `-T` (inflated by tracing).
    time: Duration,
    /// The same lookups replayed untraced: calls and time.
    replayed: Option<(usize, Duration)>,
}

impl Summary {
    pub fn of(calls: &[Call]) -> Summary {
        let mut summary = Summary::default();
        for call in calls {
            let Some(lookup) = call.lookup() else {
                continue;
            };
            let tally = summary.by_syscall.entry(call.name.clone()).or_default();
            tally.calls += 1;
            tally.enoent += u64::from(call.is_enoent());
            summary.lookups += 1;
            summary.enoent += u64::from(call.is_enoent());
            if let Some(duration) = call.duration {
                tally.time += duration;
                summary.time += duration;
            }
            if lookup.kind == LookupKind::Stat {
                let directory = if lookup.is_dir {
                    lookup.path.clone()
                } else {
                    parent(&lookup.path).to_vec()
                };
                *summary.by_directory.entry(directory).or_default() += 1;
            }
        }
        summary
    }

    /// The untraced cost of one lookup, when it was replayed.
    fn mean(&self) -> Option<Duration> {
        let (calls, time) = self.replayed?;
        Some(time / u32::try_from(calls.max(1)).unwrap_or(u32::MAX))
    }

    /// Milliseconds the run's lookups cost untraced (estimated from the
    /// replay's mean for every lookup in the log).
    fn cost_ms(&self) -> f64 {
        self.mean().map_or(0.0, |mean| {
            mean.as_secs_f64() * 1000.0 * self.lookups as f64
        })
    }

    fn enoent_share(&self) -> f64 {
        self.enoent as f64 / self.lookups.max(1) as f64
    }

    /// Which case the run is in, and what finderd could save.
    pub fn verdict(&self) -> String {
        let spent = self.cost_ms();
        let directories = self.by_directory.len();
        let mean = self.mean().unwrap_or_default();
        if mean >= SLOW_LOOKUP {
            format!(
                "slow filesystem: lookups average {:.1} us (a hot local disk: 1-5 us); finderd answers them from memory, expected saving up to {spent:.1} ms per run, more with .pyc bytes served",
                mean.as_secs_f64() * 1e6
            )
        } else if directories >= LONG_PATH_DIRECTORIES || self.enoent_share() >= 0.6 {
            format!(
                "long search path: {directories} directories searched, {:.0}% of lookups fail with ENOENT; finderd's one-dictionary name index saves most of the {spent:.1} ms spent in lookups",
                self.enoent_share() * 100.0
            )
        } else {
            format!(
                "hot local disk: {} lookups cost about {spent:.1} ms ({:.1} us each); little to gain from finderd here (it pays on slow filesystems, long search paths and many short runs)",
                self.lookups,
                mean.as_secs_f64() * 1e6
            )
        }
    }
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(at) => &path[..at],
        None => b".",
    }
}

fn report(command: &str, status: &str, wall: Duration, summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "finderd profile: {command}\n{status}; {:.1} ms wall under strace (tracing slows every call: the times in the table are strace's -T)\n",
        wall.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        "| syscall | calls | ENOENT | traced ms |\n|---|---|---|---|"
    );
    for (name, tally) in &summary.by_syscall {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.3} |",
            tally.calls,
            tally.enoent,
            tally.time.as_secs_f64() * 1000.0
        );
    }
    let _ = writeln!(
        out,
        "| all lookups | {} | {} ({:.0}%) | {:.3} |\n",
        summary.lookups,
        summary.enoent,
        summary.enoent_share() * 100.0,
        summary.time.as_secs_f64() * 1000.0
    );
    let mut top: Vec<(&Vec<u8>, &u64)> = summary.by_directory.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(out, "directories stat'ed most (a stat of a directory, or of a name in it):\n| directory | stats |\n|---|---|");
    for (directory, count) in top.into_iter().take(10) {
        let _ = writeln!(out, "| {} | {count} |", String::from_utf8_lossy(directory));
    }
    if let (Some((calls, time)), Some(mean)) = (summary.replayed, summary.mean()) {
        let _ = writeln!(
            out,
            "\nuntraced: {calls} of these lookups replayed now with plain system calls took {:.3} ms ({:.2} us each; about {:.1} ms for the whole run)",
            time.as_secs_f64() * 1000.0,
            mean.as_secs_f64() * 1e6,
            summary.cost_ms()
        );
    }
    let _ = writeln!(out, "\nverdict: {}", summary.verdict());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_numbers() {
        let line = |path: &str, errno: &str, us: u32| {
            format!(
                "1 newfstatat(AT_FDCWD, \"{path}\", 0x1, 0) = {} <0.{us:06}>\n",
                if errno.is_empty() {
                    "0".to_string()
                } else {
                    format!("-1 {errno} (x)")
                }
            )
        };
        let hot: String = (0..50)
            .map(|i| line(&format!("/usr/lib/p/m{i}.py"), "", 2))
            .collect();
        let mut summary = Summary::of(&strace::parse(&hot));
        summary.replayed = Some((50, Duration::from_micros(100)));
        assert!(
            summary.verdict().starts_with("hot local disk"),
            "{}",
            summary.verdict()
        );
        let slow: String = (0..50)
            .map(|i| line(&format!("/mnt/nfs/m{i}.py"), "", 300))
            .collect();
        let mut summary = Summary::of(&strace::parse(&slow));
        summary.replayed = Some((50, Duration::from_millis(15)));
        assert!(
            summary.verdict().starts_with("slow filesystem"),
            "{}",
            summary.verdict()
        );
        let long: String = (0..100)
            .map(|i| line(&format!("/nix/store/p{i}/json.py"), "ENOENT", 2))
            .collect();
        let summary = Summary::of(&strace::parse(&long));
        assert!(
            summary.verdict().starts_with("long search path"),
            "{}",
            summary.verdict()
        );
        assert_eq!(summary.by_directory.len(), 100);
    }
}
