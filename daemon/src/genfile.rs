//! The shared generation file: a header and an array of 64-bit slots that
//! clients map read-only to tell, without a system call, whether a listing
//! they hold is still current (see `GenerationFile` in the proto and
//! docs/architecture.md "Freshness").
//!
//! Layout (native endianness): magic at 0, layout version at 8, slot count at
//! 12, epoch at 16, `dry_ns` at 24, `lease_ns` at 32, slots from 64. Slot 0 is
//! never handed out: it means "no slot". Every store is a release store on
//! an `AtomicU64` over the shared mapping, so a client that reads a slot with
//! acquire ordering sees the listing state the daemon had when it wrote it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// "FINDGEN1" read as a little-endian u64.
pub const MAGIC: u64 = 0x314E_4547_444E_4946;
pub const LAYOUT_VERSION: u32 = 1;
/// Byte offset of slot 0.
pub const HEADER_BYTES: usize = 64;

const OFFSET_VERSION_AND_COUNT: usize = 8;
const OFFSET_EPOCH: usize = 16;
const OFFSET_DRY_NS: usize = 24;
const OFFSET_LEASE_NS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum GenFileError {
    #[error("cannot create generation file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot map generation file {path}: {source}")]
    Map { path: PathBuf, source: io::Error },
    #[error("generation file needs at least 2 slots (slot 0 means none), got {0}")]
    TooFewSlots(u32),
    #[error("cannot read random bytes for the epoch: {0}")]
    Random(io::Error),
}

/// The mapped generation file and the allocator of its slots.
pub struct GenFile {
    path: PathBuf,
    map: NonNull<u8>,
    map_len: usize,
    slots: u32,
    epoch: u64,
    lease: Duration,
    free: Mutex<SlotPool>,
    /// The one daemon-wide generation counter: every index (the host's and
    /// each view's) publishes into these slots, so a reused slot must never
    /// see a value again.
    generations: AtomicU64,
}

// SAFETY: the mapping is only accessed through atomics (slots, dry_ns) or
// written once before the value is shared (the rest of the header).
unsafe impl Send for GenFile {}
// SAFETY: as for Send: shared access goes through atomics only.
unsafe impl Sync for GenFile {}

struct SlotPool {
    next_unused: u32,
    released: Vec<u32>,
}

impl GenFile {
    /// Creates the file fresh (replacing any old one, so a client mapping the
    /// old file keeps its stale epoch and revalidates), maps it shared and
    /// writes the header with a random epoch.
    pub fn create(path: &Path, slots: u32, lease: Duration) -> Result<Self, GenFileError> {
        if slots < 2 {
            return Err(GenFileError::TooFewSlots(slots));
        }
        let map_len = HEADER_BYTES + 8 * slots as usize;
        let file = create_fresh(path, map_len).map_err(|source| GenFileError::Create {
            path: path.to_owned(),
            source,
        })?;
        let map = map_shared(&file, map_len).map_err(|source| GenFileError::Map {
            path: path.to_owned(),
            source,
        })?;
        let genfile = Self {
            path: path.to_owned(),
            map,
            map_len,
            slots,
            epoch: random_epoch().map_err(GenFileError::Random)?,
            lease,
            free: Mutex::new(SlotPool {
                next_unused: 1,
                released: Vec::new(),
            }),
            generations: AtomicU64::new(1),
        };
        genfile.write_header();
        Ok(genfile)
    }

    fn write_header(&self) {
        let version_and_count = u64::from(LAYOUT_VERSION) | (u64::from(self.slots) << 32);
        // Native endianness: the u32 version at 8 and the count at 12 are the
        // low and high halves of this u64 on little-endian machines only.
        let version_and_count = if cfg!(target_endian = "little") {
            version_and_count
        } else {
            (u64::from(LAYOUT_VERSION) << 32) | u64::from(self.slots)
        };
        self.word(OFFSET_VERSION_AND_COUNT)
            .store(version_and_count, Ordering::Relaxed);
        self.word(OFFSET_EPOCH).store(self.epoch, Ordering::Relaxed);
        self.word(OFFSET_LEASE_NS)
            .store(duration_ns(self.lease), Ordering::Relaxed);
        self.word(OFFSET_DRY_NS).store(0, Ordering::Relaxed);
        // The magic last: a reader that sees it sees the whole header.
        self.word(0).store(MAGIC, Ordering::Release);
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.map_len);
        // SAFETY: the mapping is page-aligned, `offset` is a multiple of 8
        // inside it, and it lives as long as `self`.
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(offset).cast::<u64>()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn slot_count(&self) -> u32 {
        self.slots
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Publishes that every change made before `ns` (CLOCK_MONOTONIC) has
    /// bumped its slot.
    pub fn set_dry_ns(&self, ns: u64) {
        self.word(OFFSET_DRY_NS).store(ns, Ordering::Release);
    }

    /// Stores a directory's current generation in its slot (0 is a no-op).
    pub fn publish(&self, slot: u32, generation: u64) {
        if slot != 0 && slot < self.slots {
            self.word(HEADER_BYTES + 8 * slot as usize)
                .store(generation, Ordering::Release);
        }
    }

    /// A generation never handed out before (by any index).
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::SeqCst)
    }

    /// Hands out an unused slot, or 0 when all are taken (the client then
    /// revalidates that directory with Lookup instead).
    pub fn allocate_slot(&self) -> u32 {
        let mut pool = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = pool.released.pop() {
            return slot;
        }
        if pool.next_unused < self.slots {
            pool.next_unused += 1;
            return pool.next_unused - 1;
        }
        0
    }

    /// Marks a slot's listing as gone (0 is no generation) and returns the
    /// slot for reuse. The next owner writes a fresh generation, so a client
    /// holding the old one never sees its value again.
    pub fn release_slot(&self, slot: u32) {
        if slot == 0 || slot >= self.slots {
            return;
        }
        self.publish(slot, 0);
        let mut pool = self.free.lock().unwrap_or_else(|e| e.into_inner());
        pool.released.push(slot);
    }
}

impl Drop for GenFile {
    fn drop(&mut self) {
        // SAFETY: `map` and `map_len` come from a successful mmap.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

fn create_fresh(path: &Path, len: usize) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    // The umask must not make the file unreadable for clients of other
    // users; set on the descriptor, never again by path (which could name
    // another file by now).
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.set_len(len as u64)?;
    Ok(file)
}

fn map_shared(file: &File, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: mapping a regular file we just sized to `len`.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// A nonzero random epoch from the kernel's CSPRNG.
/// A random non-zero u64 (`getrandom`).
pub fn random_u64() -> io::Result<u64> {
    random_epoch()
}

fn random_epoch() -> io::Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        // SAFETY: writes at most 8 bytes into `bytes`.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let epoch = u64::from_ne_bytes(bytes);
        if n == 8 && epoch != 0 {
            return Ok(epoch);
        }
    }
}

/// Whole nanoseconds of a duration, saturating.
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// CLOCK_MONOTONIC now, in nanoseconds (what clients compare `dry_ns` with).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u64(bytes: &[u8], offset: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[offset..offset + 8]);
        u64::from_ne_bytes(word)
    }

    #[test]
    fn header_and_slots_are_visible_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.sock.gen");
        let genfile = GenFile::create(&path, 16, Duration::from_millis(200)).expect("create");
        let slot = genfile.allocate_slot();
        assert_eq!(slot, 1, "slot 0 is never handed out");
        genfile.publish(slot, 42);
        genfile.set_dry_ns(7);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), HEADER_BYTES + 16 * 8);
        assert_eq!(&bytes[0..8], b"FINDGEN1");
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 16);
        assert_eq!(read_u64(&bytes, 16), genfile.epoch());
        assert_eq!(read_u64(&bytes, 24), 7);
        assert_eq!(read_u64(&bytes, 32), 200_000_000);
        assert_eq!(read_u64(&bytes, HEADER_BYTES + 8), 42);
        let mode = std::fs::metadata(&path).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
    }

    #[test]
    fn slots_run_out_and_are_reused_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genfile =
            GenFile::create(&dir.path().join("g"), 3, Duration::from_millis(1)).expect("create");
        assert_eq!((genfile.allocate_slot(), genfile.allocate_slot()), (1, 2));
        assert_eq!(genfile.allocate_slot(), 0, "exhausted");
        genfile.publish(2, 9);
        genfile.release_slot(2);
        let bytes = std::fs::read(dir.path().join("g")).expect("read");
        assert_eq!(
            read_u64(&bytes, HEADER_BYTES + 16),
            0,
            "released slot reads 0"
        );
        assert_eq!(genfile.allocate_slot(), 2);
    }
}
