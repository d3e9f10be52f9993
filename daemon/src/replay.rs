//! `finderd replay STRACE_LOG`: the experiment this project started from.
//! The stat-family calls (stat, lstat, newfstatat, statx) and the opens of
//! an strace log are replayed against this machine's filesystem, with
//! system calls one by one and through io_uring at batch sizes 1, 8, 32 and
//! 128 (`IORING_OP_STATX`; `IORING_OP_OPENAT` then `IORING_OP_CLOSE`), and
//! the per-call cost of each way is printed. Nothing is written; opens are
//! read-only and non-blocking, and nothing under /dev, /proc or /sys is
//! opened.

use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

use crate::strace::{self, LookupKind};

/// io_uring batch sizes compared.
pub const BATCHES: [usize; 4] = [1, 8, 32, 128];

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read strace log {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no stat-family or open calls with a resolvable path (was it written by `strace -f -o FILE`? relative paths need -y)")]
    Empty { path: String },
}

/// One call to replay.
#[derive(Debug)]
pub struct Op {
    path: CString,
    kind: OpKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Stat { nofollow: bool },
    Open { directory: bool },
}

/// The replayable calls of a log, and how many were found in it.
#[derive(Debug, Default)]
pub struct Workload {
    pub stats: Vec<Op>,
    pub opens: Vec<Op>,
    pub stat_enoent: usize,
    pub skipped: usize,
}

/// Paths never opened: device nodes and kernel files can have side effects.
fn unsafe_to_open(path: &[u8]) -> bool {
    ["/dev/", "/proc/", "/sys/"]
        .iter()
        .any(|prefix| path.starts_with(prefix.as_bytes()))
}

impl Workload {
    pub fn from_log(text: &str) -> Workload {
        let mut workload = Workload::default();
        for call in strace::parse(text) {
            let Some(lookup) = call.lookup() else {
                continue;
            };
            let Ok(path) = CString::new(lookup.path.clone()) else {
                workload.skipped += 1;
                continue;
            };
            match lookup.kind {
                LookupKind::Stat => {
                    workload.stat_enoent += usize::from(call.is_enoent());
                    workload.stats.push(Op {
                        path,
                        kind: OpKind::Stat {
                            nofollow: lookup.nofollow,
                        },
                    });
                }
                LookupKind::Open if !unsafe_to_open(&lookup.path) => workload.opens.push(Op {
                    path,
                    kind: OpKind::Open {
                        directory: lookup.directory,
                    },
                }),
                LookupKind::Open => workload.skipped += 1,
                _ => {}
            }
        }
        workload
    }
}

/// How a set of calls is replayed.
#[derive(Debug, Clone, Copy)]
enum Way {
    Sync,
    Uring(usize),
}

impl Way {
    fn label(self) -> (String, String) {
        match self {
            Way::Sync => ("syscalls".to_string(), "-".to_string()),
            Way::Uring(batch) => ("io_uring".to_string(), batch.to_string()),
        }
    }
}

/// What the lookups of a log cost on this machine now, with plain system
/// calls (median of `rounds` after a warm-up): calls replayed and time.
pub fn sync_cost(text: &str, rounds: usize) -> (usize, Duration) {
    let workload = Workload::from_log(text);
    let all: Vec<&Op> = workload.stats.iter().chain(&workload.opens).collect();
    let once = || {
        let started = Instant::now();
        all.iter().for_each(|op| sync_call(op));
        Ok(started.elapsed())
    };
    let _ = once();
    (all.len(), median(rounds, once).unwrap_or_default())
}

/// Replays the log `rounds` times each way and returns the report table.
pub fn run(log: &Path, rounds: usize) -> Result<String, ReplayError> {
    let shown = log.display().to_string();
    let text = std::fs::read(log).map_err(|source| ReplayError::Read {
        path: shown.clone(),
        source,
    })?;
    let workload = Workload::from_log(&String::from_utf8_lossy(&text));
    if workload.stats.is_empty() && workload.opens.is_empty() {
        return Err(ReplayError::Empty { path: shown });
    }
    // Warm the caches once, so every way sees the same state.
    let _ = replay(&workload.stats, Way::Sync);
    let _ = replay(&workload.opens, Way::Sync);
    let mut rows = Vec::new();
    for way in std::iter::once(Way::Sync).chain(BATCHES.iter().map(|&b| Way::Uring(b))) {
        let stats = median(rounds, || replay(&workload.stats, way));
        let opens = median(rounds, || replay(&workload.opens, way));
        rows.push((way, stats, opens));
    }
    Ok(report(&shown, &workload, rounds, &rows))
}

type Timing = Result<Duration, String>;

fn median(rounds: usize, mut once: impl FnMut() -> Timing) -> Timing {
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        times.push(once()?);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn replay(ops: &[Op], way: Way) -> Timing {
    let started = Instant::now();
    match way {
        Way::Sync => ops.iter().for_each(sync_call),
        Way::Uring(batch) => {
            let mut ring = IoUring::new(batch.next_power_of_two().max(2) as u32 * 2)
                .map_err(|error| format!("io_uring unavailable: {error}"))?;
            for chunk in ops.chunks(batch) {
                uring_batch(&mut ring, chunk)
                    .map_err(|error| format!("io_uring failed: {error}"))?;
            }
        }
    }
    Ok(started.elapsed())
}

fn sync_call(op: &Op) {
    match op.kind {
        OpKind::Stat { nofollow } => {
            let mut buffer = MaybeUninit::<libc::statx>::uninit();
            let flags = libc::AT_STATX_SYNC_AS_STAT
                | if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
            // SAFETY: a valid C string and an out buffer of the right size.
            unsafe {
                libc::statx(
                    libc::AT_FDCWD,
                    op.path.as_ptr(),
                    flags,
                    libc::STATX_BASIC_STATS,
                    buffer.as_mut_ptr(),
                )
            };
        }
        OpKind::Open { directory } => {
            // SAFETY: a valid C string; the descriptor is closed right away.
            let fd = unsafe { libc::open(op.path.as_ptr(), open_flags(directory)) };
            if fd >= 0 {
                // SAFETY: closing the descriptor we just opened.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn open_flags(directory: bool) -> i32 {
    libc::O_RDONLY
        | libc::O_CLOEXEC
        | libc::O_NONBLOCK
        | libc::O_NOCTTY
        | if directory { libc::O_DIRECTORY } else { 0 }
}

/// One batch through the ring: every stat or open, then the closes.
fn uring_batch(ring: &mut IoUring, ops: &[Op]) -> io::Result<()> {
    let mut buffers: Vec<MaybeUninit<libc::statx>> = Vec::with_capacity(ops.len());
    buffers.resize_with(ops.len(), MaybeUninit::uninit);
    let entries: Vec<io_uring::squeue::Entry> = ops
        .iter()
        .zip(buffers.iter_mut())
        .map(|(op, buffer)| match op.kind {
            OpKind::Stat { nofollow } => opcode::Statx::new(
                types::Fd(libc::AT_FDCWD),
                op.path.as_ptr(),
                buffer.as_mut_ptr().cast::<types::statx>(),
            )
            .flags(
                libc::AT_STATX_SYNC_AS_STAT
                    | if nofollow {
                        libc::AT_SYMLINK_NOFOLLOW
                    } else {
                        0
                    },
            )
            .mask(libc::STATX_BASIC_STATS)
            .build(),
            OpKind::Open { directory } => {
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), op.path.as_ptr())
                    .flags(open_flags(directory))
                    .build()
            }
        })
        .collect();
    let results = match crate::uring::submit_all(ring, &entries) {
        Ok(results) => results,
        Err(error) => {
            // Requests may still be writing into them.
            std::mem::forget(buffers);
            return Err(error);
        }
    };
    let closes: Vec<io_uring::squeue::Entry> = ops
        .iter()
        .zip(&results)
        .filter(|(op, fd)| matches!(op.kind, OpKind::Open { .. }) && **fd >= 0)
        .map(|(_, fd)| opcode::Close::new(types::Fd(*fd)).build())
        .collect();
    crate::uring::submit_all(ring, &closes)?;
    drop(buffers);
    Ok(())
}

fn per_call_ns(timing: &Timing, calls: usize) -> String {
    match timing {
        Ok(elapsed) if calls > 0 => format!("{}", elapsed.as_nanos() / calls as u128),
        Ok(_) => "-".to_string(),
        Err(_) => "n/a".to_string(),
    }
}

fn millis(timing: &Timing) -> String {
    match timing {
        Ok(elapsed) => format!("{:.3}", elapsed.as_secs_f64() * 1000.0),
        Err(_) => "n/a".to_string(),
    }
}

fn report(log: &str, workload: &Workload, rounds: usize, rows: &[(Way, Timing, Timing)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replayed {log}: {} stat-family calls ({} ENOENT in the log), {} opens (each then closed); {} skipped; median of {rounds} rounds after one warm-up",
        workload.stats.len(),
        workload.stat_enoent,
        workload.opens.len(),
        workload.skipped
    );
    let _ = writeln!(
        out,
        "\n| way | batch | stat ns/call | stat total ms | open+close ns/call | open+close total ms |\n|---|---|---|---|---|---|"
    );
    for (way, stats, opens) in rows {
        let (name, batch) = way.label();
        let _ = writeln!(
            out,
            "| {name} | {batch} | {} | {} | {} | {} |",
            per_call_ns(stats, workload.stats.len()),
            millis(stats),
            per_call_ns(opens, workload.opens.len()),
            millis(opens)
        );
    }
    if let Some(error) = rows.iter().find_map(|(_, s, _)| s.as_ref().err()) {
        let _ = writeln!(out, "\n{error}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_log_replays_every_way() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("m.py");
        std::fs::write(&file, b"").expect("write");
        let log = format!(
            "1 newfstatat(AT_FDCWD, \"{0}\", {{st_mode=S_IFREG|0644}}, 0) = 0\n\
             1 newfstatat(AT_FDCWD, \"{0}x\", 0x1, 0) = -1 ENOENT (No such file)\n\
             1 openat(AT_FDCWD, \"{0}\", O_RDONLY|O_CLOEXEC) = 3\n\
             1 openat(AT_FDCWD, \"/dev/watchdog\", O_RDONLY) = -1 EACCES (Permission denied)\n",
            file.display()
        );
        let path = tmp.path().join("log");
        std::fs::write(&path, log).expect("write log");
        let table = run(&path, 2).expect("replay");
        assert!(
            table.contains("2 stat-family calls (1 ENOENT in the log), 1 opens"),
            "{table}"
        );
        assert!(table.contains("1 skipped"), "never opens /dev: {table}");
        for batch in ["| 1 |", "| 8 |", "| 32 |", "| 128 |", "| syscalls | - |"] {
            assert!(table.contains(batch), "{batch} missing: {table}");
        }
    }
}
