//! Submitting a batch of io_uring requests and waiting for all of them: the
//! one place that pushes entries, submits, retries an interrupted wait and
//! collects results. Used by the crawl's `statx` batches, the compiled-file
//! reader and `finderd replay`.

use std::io;

use io_uring::{squeue, IoUring};

/// Runs `entries` through `ring`, as many in flight at once as the ring
/// holds, and waits for every completion. Returns each entry's result
/// (`cqe.res`: a count, a descriptor, or `-errno`) in the order of
/// `entries`; `user_data` is overwritten with the entry's index.
///
/// On `Err`, requests may still be in flight, writing into the buffers the
/// entries point at: the caller must leak those buffers and never use the
/// ring again.
pub fn submit_all(ring: &mut IoUring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    let capacity = ring.params().sq_entries().max(1) as usize;
    let mut results = vec![-libc::ECANCELED; entries.len()];
    for (chunk_at, chunk) in entries.chunks(capacity).enumerate() {
        let first = chunk_at * capacity;
        {
            let mut queue = ring.submission();
            for (offset, entry) in chunk.iter().enumerate() {
                let entry = entry.clone().user_data((first + offset) as u64);
                // SAFETY: the caller keeps every pointer of the entry valid
                // until its completion is collected below (or leaks them).
                if unsafe { queue.push(&entry) }.is_err() {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
            }
        }
        let mut done = 0;
        while done < chunk.len() {
            match ring.submit_and_wait(chunk.len() - done) {
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) => return Err(error),
            }
            for completion in ring.completion() {
                if let Some(slot) = results.get_mut(completion.user_data() as usize) {
                    *slot = completion.result();
                }
                done += 1;
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn more_entries_than_the_ring_holds_all_complete_in_order() {
        let Ok(mut ring) = IoUring::new(4) else {
            eprintln!("skipped: io_uring unavailable here");
            return;
        };
        let entries: Vec<squeue::Entry> = (0..11).map(|_| opcode::Nop::new().build()).collect();
        let results = submit_all(&mut ring, &entries).expect("nops");
        assert_eq!(results, vec![0; 11]);
        let closes: Vec<squeue::Entry> = (0..3)
            .map(|_| opcode::Close::new(io_uring::types::Fd(-1)).build())
            .collect();
        let results = submit_all(&mut ring, &closes).expect("closes");
        assert_eq!(results, vec![-libc::EBADF; 3]);
    }
}
