//! Replies assembled from pre-encoded `Directory` messages.
//!
//! The reply codec takes bytes: a listing's encoding is built once per
//! listing version and a warm answer copies it. The wire format is exactly
//! that of the generated messages (a message's scalar fields, then each
//! `Directory` appended as one more occurrence of its repeated field:
//! protobuf concatenation is merging), so generated clients decode it as
//! usual.

use bytes::{BufMut, Bytes, BytesMut};
use finderd_proto::v1 as pb;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::context::Answer;
use crate::index::Listing;
use crate::refresh::Kind;

/// `SnapshotReply.directories`.
pub const SNAPSHOT_DIRECTORIES_FIELD: u32 = 4;
/// `SnapshotReply.files`.
pub const SNAPSHOT_FILES_FIELD: u32 = 5;
/// `SnapshotReply.planned_directories`.
pub const SNAPSHOT_PLANNED_FIELD: u32 = 6;
/// `LookupReply.directories`.
pub const LOOKUP_DIRECTORIES_FIELD: u32 = 3;
/// `Directory.slow_filesystem = true` (field 11, varint 1), appended to a
/// listing's cached encoding: protobuf concatenation is merging.
pub const SLOW_FILESYSTEM_TRUE: [u8; 2] = [11 << 3, 1];

/// A reply message being assembled.
pub struct Reply {
    buffer: BytesMut,
    field: u32,
}

impl Reply {
    /// A reply whose scalar fields are `header`'s and whose directories go
    /// to the repeated field `field`.
    pub fn new(header: &impl Message, field: u32) -> Self {
        let mut buffer = BytesMut::with_capacity(4096);
        // BytesMut grows as needed: encoding into it cannot fail.
        let _ = header.encode(&mut buffer);
        Self { buffer, field }
    }

    pub fn push(&mut self, directory: &[u8]) {
        encode_key(self.field, WireType::LengthDelimited, &mut self.buffer);
        encode_varint(directory.len() as u64, &mut self.buffer);
        self.buffer.put_slice(directory);
    }

    /// One more occurrence of a message field (another than `self.field`).
    pub fn push_message(&mut self, field: u32, message: &impl Message) {
        encode_key(field, WireType::LengthDelimited, &mut self.buffer);
        // BytesMut grows as needed: encoding into it cannot fail.
        let _ = message.encode_length_delimited(&mut self.buffer);
    }

    /// A varint field.
    pub fn push_varint(&mut self, field: u32, value: u64) {
        encode_key(field, WireType::Varint, &mut self.buffer);
        encode_varint(value, &mut self.buffer);
    }

    /// Bytes one directory adds to a reply (key, length, message).
    pub fn framed_len(directory: &[u8]) -> usize {
        1 + encoded_len_varint(directory.len() as u64) + directory.len()
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn finish(self) -> Bytes {
        self.buffer.freeze()
    }
}

fn proto_kind(kind: Kind) -> pb::EntryKind {
    match kind {
        Kind::File => pb::EntryKind::File,
        Kind::Dir => pb::EntryKind::Dir,
        Kind::SymlinkDir => pb::EntryKind::SymlinkDir,
        Kind::Other => pb::EntryKind::Other,
    }
}

/// The `Directory` message of a listing. The symlink entries for which
/// `hidden` is true are encoded as a dangling link reads (OTHER, no
/// fingerprint), so that the client asks `stat()` itself.
pub fn encode_listing(listing: &Listing, hidden: impl Fn(&[u8]) -> bool) -> Bytes {
    pb::Directory {
        path: listing.path.clone(),
        status: pb::DirectoryStatus::Served.into(),
        generation: listing.generation,
        slot: listing.slot,
        mode: listing.stat.mode,
        mtime_ns: listing.stat.mtime_ns,
        size: listing.stat.size,
        entries: listing
            .entries
            .iter()
            .map(|entry| {
                if entry.link && hidden(&entry.name) {
                    return pb::Entry {
                        name: entry.name.clone(),
                        kind: pb::EntryKind::Other.into(),
                        ..Default::default()
                    };
                }
                pb::Entry {
                    name: entry.name.clone(),
                    kind: proto_kind(entry.kind).into(),
                    mode: entry.stat.mode,
                    mtime_ns: entry.stat.mtime_ns,
                    size: entry.stat.size,
                }
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// The `Directory` message of any answer but a listing.
pub fn encode_answer(path: &Bytes, answer: &Answer) -> Bytes {
    let directory = match answer {
        Answer::Listed(listing) => return encode_listing(listing, |_| false),
        Answer::Unchanged { generation, slot } => pb::Directory {
            status: pb::DirectoryStatus::Unchanged.into(),
            generation: *generation,
            slot: *slot,
            ..Default::default()
        },
        Answer::Absent {
            errno,
            generation,
            slot,
        } => pb::Directory {
            status: pb::DirectoryStatus::Absent.into(),
            error: *errno,
            generation: *generation,
            slot: *slot,
            ..Default::default()
        },
        Answer::NotServed(reason) => pb::Directory {
            status: pb::DirectoryStatus::NotServed.into(),
            reason: reason.clone(),
            ..Default::default()
        },
    };
    pb::Directory {
        path: path.clone(),
        ..directory
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_concatenation_decodes_as_the_generated_message() {
        let header = pb::LookupReply {
            protocol_version: 1,
            generations: Some(pb::GenerationFile {
                epoch: 5,
                ..Default::default()
            }),
            directories: Vec::new(),
        };
        let mut reply = Reply::new(&header, LOOKUP_DIRECTORIES_FIELD);
        let first = pb::Directory {
            path: Bytes::from_static(b"/a"),
            generation: 3,
            ..Default::default()
        };
        reply.push(&first.encode_to_vec());
        reply.push(&encode_answer(
            &Bytes::from_static(b"/b"),
            &Answer::NotServed("no".into()),
        ));
        let decoded = pb::LookupReply::decode(reply.finish()).expect("decodes");
        assert_eq!(decoded.protocol_version, 1);
        assert_eq!(decoded.directories.len(), 2);
        assert_eq!(decoded.directories[0], first);
        assert_eq!(decoded.directories[1].reason, "no");
        assert_eq!(decoded.directories[1].path.as_ref(), b"/b");
    }
}
