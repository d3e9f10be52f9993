//! Which way a directory's entries are stat'ed, per filesystem, by
//! measurement: the first crawl of a directory with enough entries on a
//! mount (keyed by its device) times a slice of entries with `statx` system
//! calls and an equal slice through io_uring, and keeps the faster for that
//! mount. First measurements often meet cold caches, so the next one comes
//! after 10 s, then 20 s, 40 s... up to `recalibrate` (default 1 h). Also which filesystems inotify
//! cannot see (polled), from their `statfs` magic.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use finderd_proto::v1 as pb;

use super::uring::UringStater;
use crate::config::{Engine, RefreshConfig};
use crate::stats::EngineReport;

/// Fewest entries a directory needs for its crawl to calibrate (half are
/// timed each way).
pub const CALIBRATION_MIN_ENTRIES: usize = 32;
/// Most entries timed each way.
const CALIBRATION_MAX_SLICE: usize = 256;

/// `statfs` magics of filesystems whose changes inotify does not report
/// (remote or userspace filesystems): polled.
const POLLED_MAGICS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x6573_5546, "fuse"),
    (0x0102_1997, "9p"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "kafs"),
    (0x00C3_6400, "ceph"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0x7375_7245, "coda"),
    (0x564C, "ncp"),
    (0x0116_1970, "gfs2"),
    (0x5346_4846, "vboxsf"),
];

/// Names of other common filesystems, for reports.
const OTHER_MAGICS: &[(i64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x794C_7630, "overlay"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0x7371_7368, "squashfs"),
    (0x4244, "hfs"),
    (0x5346_544E, "ntfs"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x6265_6572, "sysfs"),
    (0x9FA0, "proc"),
];

/// The filesystem a directory lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    pub device: u64,
    pub magic: i64,
}

impl Filesystem {
    /// `fstat` + `fstatfs` of an open directory.
    pub fn of(dir: &OwnedFd) -> io::Result<Filesystem> {
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: an all-zero statfs is a valid value to be overwritten.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: an open descriptor and valid out pointers.
        let stated = unsafe { libc::fstat(dir.as_raw_fd(), &mut st) };
        // SAFETY: as above.
        if stated < 0 || unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Filesystem {
            device: st.st_dev,
            magic: fs.f_type as i64,
        })
    }

    pub fn name(&self) -> String {
        POLLED_MAGICS
            .iter()
            .chain(OTHER_MAGICS)
            .find(|(magic, _)| *magic == self.magic)
            .map_or_else(
                || format!("0x{:x}", self.magic),
                |(_, name)| name.to_string(),
            )
    }
}

/// The magic of a filesystem type given by name or as a number (`0x6969`).
fn magic_of(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Ok(number) = text.parse() {
        return Some(number);
    }
    POLLED_MAGICS
        .iter()
        .chain(OTHER_MAGICS)
        .find(|(_, name)| name.eq_ignore_ascii_case(text))
        .map(|(magic, _)| *magic)
}

/// The way one crawl stats its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    Sync,
    Uring,
}

impl Used {
    pub fn name(self) -> &'static str {
        match self {
            Used::Sync => "sync",
            Used::Uring => "uring",
        }
    }
}

/// What to do for one directory.
pub enum Plan<'a> {
    Sync,
    Uring(&'a UringStater),
    /// Time both (each on its own slice of entries), then record the result.
    Calibrate(&'a UringStater),
}

#[derive(Debug, Clone)]
struct Choice {
    filesystem: String,
    used: Used,
    reason: &'static str,
    sync_ns: u64,
    uring_ns: u64,
    measured: Option<Instant>,
    /// Calibrations so far: the first ones often see cold caches, so the
    /// interval starts short and doubles up to `recalibrate`.
    measurements: u32,
    crawls: u64,
    polled: bool,
}

/// The first re-measurement comes this soon after the first.
const FIRST_RECALIBRATION: Duration = Duration::from_secs(10);

impl Choice {
    fn is_slow(&self, threshold_ns: u64) -> bool {
        self.polled || (self.measured.is_some() && self.sync_ns >= threshold_ns)
    }

    fn due(&self, recalibrate: Duration) -> bool {
        let Some(at) = self.measured else {
            return true;
        };
        let backoff = FIRST_RECALIBRATION.saturating_mul(1 << self.measurements.min(16));
        at.elapsed() >= backoff.min(recalibrate)
    }
}

/// The per-filesystem choices and the io_uring pool.
pub struct Engines {
    mode: Engine,
    uring: Result<UringStater, String>,
    recalibrate: Duration,
    polled_magics: HashSet<i64>,
    choices: Mutex<HashMap<u64, Choice>>,
}

impl Engines {
    pub fn new(config: &RefreshConfig) -> Self {
        let uring = if config.engine == Engine::Sync {
            Err("disabled by refresh_engine = sync".to_string())
        } else {
            UringStater::probe(config.uring_batch).map_err(|error| error.to_string())
        };
        if let Err(reason) = &uring {
            tracing::warn!(%reason, "io_uring unavailable; every crawl uses statx system calls");
        }
        let mut polled_magics: HashSet<i64> = POLLED_MAGICS.iter().map(|(m, _)| *m).collect();
        for name in &config.poll_filesystems {
            match magic_of(name) {
                Some(magic) => {
                    polled_magics.insert(magic);
                }
                None => {
                    tracing::warn!(filesystem = %name, "unknown filesystem type in poll_filesystems; ignored")
                }
            }
        }
        Self {
            mode: config.engine,
            uring,
            recalibrate: config.recalibrate,
            polled_magics,
            choices: Mutex::new(HashMap::new()),
        }
    }

    /// Whether inotify cannot see changes on this filesystem.
    pub fn is_polled(&self, fs: Filesystem) -> bool {
        self.polled_magics.contains(&fs.magic)
    }

    fn choices(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Choice>> {
        self.choices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How to stat `entries` entries of a directory on `fs`.
    pub fn plan(&self, fs: Filesystem, entries: usize) -> Plan<'_> {
        let Ok(uring) = &self.uring else {
            return Plan::Sync;
        };
        match self.mode {
            Engine::Sync => return Plan::Sync,
            Engine::Uring => return Plan::Uring(uring),
            Engine::Auto => {}
        }
        let choice = self.choices().get(&fs.device).cloned();
        let stale = choice.as_ref().is_none_or(|c| c.due(self.recalibrate));
        if stale && entries >= CALIBRATION_MIN_ENTRIES {
            return Plan::Calibrate(uring);
        }
        match choice.map(|c| c.used) {
            Some(Used::Uring) => Plan::Uring(uring),
            _ => Plan::Sync,
        }
    }

    /// How many entries each side of a calibration times.
    pub fn calibration_slice(entries: usize) -> usize {
        (entries / 2).min(CALIBRATION_MAX_SLICE)
    }

    /// Records a calibration: nanoseconds per entry each way.
    pub fn calibrated(&self, fs: Filesystem, sync_ns: u64, uring_ns: u64) {
        let used = if uring_ns < sync_ns {
            Used::Uring
        } else {
            Used::Sync
        };
        let polled = self.is_polled(fs);
        let mut choices = self.choices();
        let choice = choices.entry(fs.device).or_insert_with(|| Choice {
            filesystem: fs.name(),
            used,
            reason: "measured",
            sync_ns,
            uring_ns,
            measured: None,
            measurements: 0,
            crawls: 0,
            polled,
        });
        let changed = choice.measured.is_none() || choice.used != used;
        choice.used = used;
        choice.reason = "measured";
        choice.sync_ns = sync_ns;
        choice.uring_ns = uring_ns;
        choice.measured = Some(Instant::now());
        choice.measurements += 1;
        if changed {
            tracing::info!(
                filesystem = %choice.filesystem,
                device = fs.device,
                engine = used.name(),
                sync_ns_per_entry = sync_ns,
                uring_ns_per_entry = uring_ns,
                "refresh engine chosen by measurement"
            );
        }
    }

    /// Counts a crawl on `fs` (and makes the filesystem appear in reports).
    pub fn crawled(&self, fs: Filesystem, used: Used) {
        let polled = self.is_polled(fs);
        let reason = match (&self.uring, self.mode) {
            (Err(_), _) => "io_uring unavailable",
            (Ok(_), Engine::Auto) => "not measured yet",
            (Ok(_), _) => "configured",
        };
        let mut choices = self.choices();
        let choice = choices.entry(fs.device).or_insert_with(|| Choice {
            filesystem: fs.name(),
            used,
            reason,
            sync_ns: 0,
            uring_ns: 0,
            measured: None,
            measurements: 0,
            crawls: 0,
            polled,
        });
        choice.crawls += 1;
        if choice.measured.is_none() {
            choice.used = used;
        }
    }

    /// The devices whose filesystems are slow, in order (`is_slow_device`).
    pub fn slow_devices(&self, threshold_ns: u64) -> Vec<u64> {
        let mut devices: Vec<u64> = (self.choices().iter())
            .filter(|(_, c)| c.is_slow(threshold_ns))
            .map(|(device, _)| *device)
            .collect();
        devices.sort_unstable();
        devices
    }

    /// Whether `device`'s filesystem is slow: polled (inotify cannot see
    /// it: remote or userspace filesystems), or a measured `statx` costs at
    /// least `threshold_ns`. Compiled files there are worth serving from
    /// memory.
    pub fn is_slow_device(&self, device: u64, threshold_ns: u64) -> bool {
        (self.choices().get(&device)).is_some_and(|c| c.is_slow(threshold_ns))
    }

    pub fn report(&self) -> EngineReport {
        let mut filesystems: Vec<pb::FilesystemEngine> = self
            .choices()
            .iter()
            .map(|(device, c)| pb::FilesystemEngine {
                filesystem: c.filesystem.clone(),
                device: *device,
                engine: c.used.name().to_string(),
                reason: c.reason.to_string(),
                sync_ns_per_entry: c.sync_ns,
                uring_ns_per_entry: c.uring_ns,
                crawls: c.crawls,
                polled: c.polled,
            })
            .collect();
        filesystems.sort_by_key(|f| f.device);
        EngineReport {
            io_uring: match &self.uring {
                Ok(_) => "available".to_string(),
                Err(reason) => reason.clone(),
            },
            filesystems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_types_by_name_or_magic() {
        assert_eq!(magic_of("nfs"), Some(0x6969));
        assert_eq!(magic_of("0x794c7630"), Some(0x794C_7630));
        assert_eq!(magic_of("Overlay"), Some(0x794C_7630));
        assert_eq!(magic_of("nonsense"), None);
        let fuse = Filesystem {
            device: 1,
            magic: 0x6573_5546,
        };
        assert_eq!(fuse.name(), "fuse");
    }

    #[test]
    fn measurement_picks_the_faster_and_configured_modes_win() {
        let fs = Filesystem {
            device: 7,
            magic: 0xEF53,
        };
        let engines = Engines::new(&RefreshConfig::default());
        if engines.uring.is_err() {
            assert!(matches!(engines.plan(fs, 1000), Plan::Sync));
            return;
        }
        assert!(matches!(engines.plan(fs, 1000), Plan::Calibrate(_)));
        assert!(
            matches!(engines.plan(fs, 3), Plan::Sync),
            "too small to measure"
        );
        engines.calibrated(fs, 900, 300);
        assert!(matches!(engines.plan(fs, 1000), Plan::Uring(_)));
        engines.calibrated(fs, 100, 300);
        assert!(matches!(engines.plan(fs, 1000), Plan::Sync));
        let report = engines.report();
        assert_eq!(report.filesystems[0].engine, "sync");
        assert_eq!(report.filesystems[0].filesystem, "ext4");
        let sync_only = Engines::new(&RefreshConfig {
            engine: Engine::Sync,
            ..RefreshConfig::default()
        });
        assert!(matches!(sync_only.plan(fs, 1000), Plan::Sync));
    }
}
