//! The plan state file: learned plans across daemon restarts.
//!
//! `<state_dir>/plans.state`, mode 0600, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FINDPLAN` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | reserved (0) |
//! | 16 | 8 | payload length in bytes |
//! | 24 | 4 | CRC-32 (IEEE 802.3, as zlib's `crc32`) of the payload |
//! | 28 | 4 | reserved (0) |
//! | 32 | n | payload: a protobuf `State` message (below) |
//!
//! The payload names the socket of the daemon that wrote it: a daemon on
//! another socket (a test daemon, a second instance) ignores the file
//! rather than adopt plans learned elsewhere. Plans are stored least
//! recently used first. Written atomically: a temporary file of a random
//! name created exclusively (`O_EXCL | O_NOFOLLOW`) in the same directory,
//! `fsync`, `rename` over the old one, `fsync` of the directory. A state
//! that would pass `max_state_bytes` keeps a fair share of every uid's most
//! recently used plans ([`fair_share`]), never drops everyone's.
//! A missing file is no error; a short, foreign, corrupt (checksum),
//! newer-version or undecodable file is an error the caller logs and
//! ignores.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

pub const FILE_NAME: &str = "plans.state";
pub const MAGIC: &[u8; 8] = b"FINDPLAN";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 32;
/// A state file larger than this is not read (a sane one holds at most
/// `max_plans` x (`max_plan_directories` + `max_plan_files`) paths).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{len} bytes is shorter than the {HEADER_BYTES}-byte header (truncated?)")]
    Short { len: usize },
    #[error("not a finderd plan state file (magic {found:?})")]
    Foreign { found: String },
    #[error("format version {found} is not one this daemon reads (it reads {VERSION})")]
    Version { found: u32 },
    #[error("payload is {found} bytes, the header says {expected} (truncated?)")]
    Truncated { expected: u64, found: u64 },
    #[error("checksum mismatch: header {expected:#010x}, payload {found:#010x} (corrupt)")]
    Checksum { expected: u32, found: u32 },
    #[error("payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{size} bytes is over the {MAX_FILE_BYTES}-byte limit of a state file")]
    TooLarge { size: u64 },
    #[error("written by the daemon of socket {socket}, not this one; its plans are not adopted")]
    OtherSocket { socket: String },
}

/// The payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct State {
    /// The socket path of the daemon that wrote the file.
    #[prost(bytes = "bytes", tag = "1")]
    pub socket: Bytes,
    #[prost(message, repeated, tag = "2")]
    pub plans: Vec<StoredPlan>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredPlan {
    #[prost(uint32, tag = "1")]
    pub uid: u32,
    #[prost(bytes = "bytes", tag = "2")]
    pub key: Bytes,
    #[prost(message, repeated, tag = "3")]
    pub directories: Vec<StoredEntry>,
    #[prost(message, repeated, tag = "4")]
    pub files: Vec<StoredEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub path: Bytes,
    /// Consecutive Reports that left the entry out.
    #[prost(uint32, tag = "2")]
    pub misses: u32,
}

/// The state file in one directory.
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl StateFile {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            path: dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
        let path = path.to_owned();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    }

    /// The plans stored for the daemon of `socket`; `None` when there is no file.
    pub fn read(&self, socket: &[u8]) -> Result<Option<Vec<StoredPlan>>, StateError> {
        let size = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io_error("stat", &self.path)(error)),
        };
        if size > MAX_FILE_BYTES {
            return Err(StateError::TooLarge { size });
        }
        let bytes = std::fs::read(&self.path).map_err(self.io_error("read", &self.path))?;
        let state = decode(&bytes)?;
        if state.socket.as_ref() != socket {
            return Err(StateError::OtherSocket {
                socket: state.socket.escape_ascii().to_string(),
            });
        }
        Ok(Some(state.plans))
    }

    /// Replaces the file with these plans (least recently used first),
    /// within `max_bytes`; returns its size.
    pub fn write(
        &self,
        socket: &[u8],
        plans: Vec<StoredPlan>,
        max_bytes: u64,
    ) -> Result<usize, StateError> {
        let bytes = encode(&State {
            socket: Bytes::copy_from_slice(socket),
            plans: fair_share(plans, max_bytes.saturating_sub(socket.len() as u64 + 64)),
        });
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(self.io_error("create", &self.dir))?;
        let random = crate::genfile::random_u64().map_err(self.io_error("name", &self.dir))?;
        let temporary = self.dir.join(format!("{FILE_NAME}.tmp-{random:016x}"));
        let written = write_synced(&temporary, &bytes);
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(self.io_error("write", &temporary)(error));
        }
        if let Err(error) = std::fs::rename(&temporary, &self.path) {
            let _ = std::fs::remove_file(&temporary);
            return Err(self.io_error("rename over", &self.path)(error));
        }
        // The rename is durable once the directory is: best effort.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(bytes.len())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The plans (least recently used first) that fit `max_bytes` encoded: when
/// all do not, each uid in turn gets its next most recently used plan while
/// it fits, so every uid keeps a fair share of the newest plans and none
/// can crowd the others out. The order is kept.
pub fn fair_share(plans: Vec<StoredPlan>, max_bytes: u64) -> Vec<StoredPlan> {
    let size = |plan: &StoredPlan| plan.encoded_len() as u64 + 8;
    if plans.iter().map(size).sum::<u64>() <= max_bytes {
        return plans;
    }
    let mut by_uid: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (at, plan) in plans.iter().enumerate().rev() {
        by_uid.entry(plan.uid).or_default().push(at);
    }
    let mut keep = vec![false; plans.len()];
    let mut left = max_bytes;
    let mut round = 0;
    loop {
        let mut took = false;
        for newest_first in by_uid.values() {
            let Some(&at) = newest_first.get(round) else {
                continue;
            };
            if size(&plans[at]) <= left {
                left -= size(&plans[at]);
                keep[at] = true;
                took = true;
            }
        }
        if !took && by_uid.values().all(|ats| ats.len() <= round) {
            break;
        }
        round += 1;
    }
    plans
        .into_iter()
        .zip(keep)
        .filter_map(|(plan, keep)| keep.then_some(plan))
        .collect()
}

/// Header and payload of `state`.
pub fn encode(state: &State) -> Vec<u8> {
    let payload = state.encode_to_vec();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32(&payload).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Checks the header and checksum, then decodes the payload.
pub fn decode(bytes: &[u8]) -> Result<State, StateError> {
    // The magic first: a short foreign file is foreign, not truncated.
    let magic = &bytes[..bytes.len().min(MAGIC.len())];
    if !MAGIC.starts_with(magic) {
        return Err(StateError::Foreign {
            found: magic.escape_ascii().to_string(),
        });
    }
    if bytes.len() < HEADER_BYTES {
        return Err(StateError::Short { len: bytes.len() });
    }
    let (header, payload) = bytes.split_at(HEADER_BYTES);
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(StateError::Version { found: version });
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[16..24]);
    let expected = u64::from_le_bytes(length);
    if expected != payload.len() as u64 {
        return Err(StateError::Truncated {
            expected,
            found: payload.len() as u64,
        });
    }
    let (expected, found) = (u32_at(24), crc32(payload));
    if expected != found {
        return Err(StateError::Checksum { expected, found });
    }
    Ok(State::decode(payload)?)
}

/// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            socket: Bytes::from_static(b"/run/finderd/finderd.sock"),
            plans: vec![StoredPlan {
                uid: 1000,
                key: Bytes::from_static(b"cpython-311|c:import json|/usr/lib/python3.11"),
                directories: vec![StoredEntry {
                    path: Bytes::from_static(b"/usr/lib/python3.11/json"),
                    misses: 1,
                }],
                files: vec![StoredEntry {
                    path: Bytes::from_static(b"/x/__pycache__/\xff.pyc"),
                    misses: 0,
                }],
            }],
        }
    }

    fn plan_of(uid: u32, key: &str, paths: usize) -> StoredPlan {
        StoredPlan {
            uid,
            key: Bytes::copy_from_slice(key.as_bytes()),
            directories: (0..paths)
                .map(|i| StoredEntry {
                    path: Bytes::from(format!("/{key}/{i:04}")),
                    misses: 0,
                })
                .collect(),
            files: Vec::new(),
        }
    }

    #[test]
    fn over_its_cap_every_uid_keeps_its_newest_plans() {
        // uid 1 floods (100 plans, the newest last); uid 2 has 3.
        let mut plans: Vec<StoredPlan> = (0..3).map(|i| plan_of(2, &format!("v{i}"), 10)).collect();
        plans.extend((0..100).map(|i| plan_of(1, &format!("h{i}"), 10)));
        let one = plans[0].encoded_len() as u64 + 8;
        assert_eq!(
            fair_share(plans.clone(), u64::MAX),
            plans,
            "under the cap: all"
        );
        let kept = fair_share(plans, 10 * one);
        let victim: Vec<_> = kept
            .iter()
            .filter(|p| p.uid == 2)
            .map(|p| p.key.clone())
            .collect();
        assert_eq!(victim.len(), 3, "the small user keeps all of its plans");
        let hostile: Vec<_> = kept
            .iter()
            .filter(|p| p.uid == 1)
            .map(|p| p.key.clone())
            .collect();
        assert!((6..=7).contains(&hostile.len()), "{}", hostile.len());
        assert_eq!(
            hostile.last().map(|k| k.as_ref()),
            Some(&b"h99"[..]),
            "its newest"
        );
        let encoded = encode(&State {
            socket: Bytes::new(),
            plans: kept,
        });
        assert!(encoded.len() as u64 <= 10 * one + HEADER_BYTES as u64);
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).expect("decodes"), sample());
        assert!(matches!(
            decode(&bytes[..10]),
            Err(StateError::Short { len: 10 })
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(StateError::Truncated { .. })
        ));
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        assert!(matches!(decode(&corrupt), Err(StateError::Checksum { .. })));
        let mut foreign = bytes.clone();
        foreign[..8].copy_from_slice(b"GIF89a\0\0");
        assert!(matches!(decode(&foreign), Err(StateError::Foreign { .. })));
        let mut newer = bytes.clone();
        newer[8] = 2;
        assert!(matches!(
            decode(&newer),
            Err(StateError::Version { found: 2 })
        ));
        // A checksum that matches garbage: the payload itself is refused.
        let garbage = [0xFFu8; 7];
        let mut undecodable = bytes[..HEADER_BYTES].to_vec();
        undecodable[16..24].copy_from_slice(&7u64.to_le_bytes());
        undecodable[24..28].copy_from_slice(&crc32(&garbage).to_le_bytes());
        undecodable.extend_from_slice(&garbage);
        assert!(matches!(decode(&undecodable), Err(StateError::Decode(_))));
    }

    #[test]
    fn written_atomically_private_and_bound_to_the_socket() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = StateFile::in_dir(&tmp.path().join("state"));
        assert!(file.read(b"/s").expect("no file is fine").is_none());
        let plans = sample().plans;
        file.write(b"/s", plans.clone(), 1 << 20).expect("write");
        let mode = std::fs::metadata(file.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(file.read(b"/s").expect("read"), Some(plans));
        assert!(matches!(
            file.read(b"/other"),
            Err(StateError::OtherSocket { .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("state"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, [FILE_NAME], "no temporary file left behind");
    }
}
