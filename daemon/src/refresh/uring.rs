//! Batched `IORING_OP_STATX`: the entries of one directory stat'ed relative
//! to its open descriptor, many in flight at once.
//!
//! The kernel hands `IORING_OP_STATX` to io-wq worker threads, so on a hot
//! local cache one `statx` system call per entry is usually faster; on
//! FUSE, NFS and other slow filesystems many in flight win. `engine` decides
//! which to use, by measurement.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::Mutex;

use io_uring::{opcode, types, IoUring};

#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("io_uring_setup failed: {0}")]
    Setup(io::Error),
    #[error("io_uring_enter failed: {0}")]
    Submit(io::Error),
    #[error("this kernel's io_uring has no IORING_OP_STATX")]
    NoStatx,
}

/// Rings kept for the next crawl once no crawl uses them.
const IDLE_RINGS: usize = 1;

/// A pool of rings (one per concurrent crawl) and the batch size.
pub struct UringStater {
    rings: Mutex<Vec<IoUring>>,
    batch: usize,
}

/// One `statx` result: the buffer, or the errno.
pub type StatxResult = Result<libc::statx, i32>;

impl UringStater {
    /// A ring, checked for STATX support. The error says why io_uring cannot
    /// be used here (EPERM from seccomp or `kernel.io_uring_disabled`,
    /// ENOSYS on old kernels).
    pub fn probe(batch: usize) -> Result<Self, UringError> {
        let ring = new_ring(batch)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(UringError::Setup)?;
        if !probe.is_supported(opcode::Statx::CODE) {
            return Err(UringError::NoStatx);
        }
        Ok(Self {
            rings: Mutex::new(vec![ring]),
            batch,
        })
    }

    /// `statx(dir, name, AT_STATX_SYNC_AS_STAT | extra_flags)` of every name,
    /// `batch` in flight at a time; results in the order of `names`.
    pub fn statx_all(
        &self,
        dir: RawFd,
        names: &[&CStr],
        extra_flags: i32,
    ) -> Result<Vec<StatxResult>, UringError> {
        let mut ring = self.take_ring()?;
        let mut results = Vec::with_capacity(names.len());
        for chunk in names.chunks(self.batch) {
            match run_batch(&mut ring, dir, chunk, extra_flags) {
                Ok(batch) => results.extend(batch),
                // The ring may still have requests in flight writing into
                // buffers `run_batch` leaked: never reuse it.
                Err(error) => return Err(error),
            }
        }
        self.give_back(ring);
        Ok(results)
    }

    fn take_ring(&self) -> Result<IoUring, UringError> {
        let pooled = self.rings.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(ring) => Ok(ring),
            None => new_ring(self.batch),
        }
    }

    fn give_back(&self, ring: IoUring) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        // Keep one. The others were made for crawls that overlapped (a new
        // view's Snapshot crawls up to 5 directories at once: see
        // `Index::crawl_all`); kept, they would hold a descriptor and locked
        // memory each long after the burst. Making one again costs one
        // io_uring_setup.
        if rings.len() < IDLE_RINGS {
            rings.push(ring);
        }
    }
}

fn new_ring(batch: usize) -> Result<IoUring, UringError> {
    let entries = u32::try_from(batch.next_power_of_two()).unwrap_or(4096);
    IoUring::new(entries.max(8)).map_err(UringError::Setup)
}

/// Submits one batch and waits for all of it.
fn run_batch(
    ring: &mut IoUring,
    dir: RawFd,
    names: &[&CStr],
    extra_flags: i32,
) -> Result<Vec<StatxResult>, UringError> {
    let mut buffers: Vec<MaybeUninit<libc::statx>> = Vec::with_capacity(names.len());
    buffers.resize_with(names.len(), MaybeUninit::zeroed);
    let entries: Vec<_> = names
        .iter()
        .zip(buffers.iter_mut())
        .map(|(name, buffer)| {
            opcode::Statx::new(
                types::Fd(dir),
                name.as_ptr(),
                buffer.as_mut_ptr().cast::<types::statx>(),
            )
            .flags(libc::AT_STATX_SYNC_AS_STAT | extra_flags)
            .mask(libc::STATX_BASIC_STATS)
            .build()
        })
        .collect();
    let results = match crate::uring::submit_all(ring, &entries) {
        Ok(results) => results,
        Err(error) => {
            // Requests may still be writing into them.
            std::mem::forget(buffers);
            return Err(UringError::Submit(error));
        }
    };
    Ok(buffers
        .into_iter()
        .zip(results)
        .map(|(buffer, result)| match result {
            errno if errno < 0 => Err(-errno),
            // SAFETY: the kernel filled the buffer (the request succeeded).
            _ => Ok(unsafe { buffer.assume_init() }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    #[test]
    fn stats_a_directory_in_batches_like_fstatat() {
        let Ok(stater) = UringStater::probe(4) else {
            eprintln!("skipped: io_uring unavailable here");
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..10 {
            std::fs::write(tmp.path().join(format!("f{i}")), vec![0u8; i]).expect("write");
        }
        let dir = std::fs::File::open(tmp.path()).expect("open");
        let mut names: Vec<CString> = (0..10)
            .map(|i| CString::new(format!("f{i}")).expect("name"))
            .collect();
        names.push(CString::new("missing").expect("name"));
        let refs: Vec<&CStr> = names.iter().map(CString::as_c_str).collect();
        let results = stater.statx_all(dir.as_raw_fd(), &refs, 0).expect("statx");
        for (i, result) in results.iter().take(10).enumerate() {
            let st = result.as_ref().expect("exists");
            assert_eq!(st.stx_size, i as u64);
        }
        assert_eq!(results[10].as_ref().err(), Some(&libc::ENOENT));
    }
}
