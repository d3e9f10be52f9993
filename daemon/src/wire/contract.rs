//! The wire layer's hand-written encodings against the contract: every field
//! number written by hand here matches `finderd.proto`'s descriptor set, and
//! what older daemons sent still decodes.

use finderd_proto::descriptor::{self, field_number};
use finderd_proto::v1 as pb;
use prost::Message;

use super::reply::{
    LOOKUP_DIRECTORIES_FIELD, SLOW_FILESYSTEM_TRUE, SNAPSHOT_DIRECTORIES_FIELD,
    SNAPSHOT_FILES_FIELD, SNAPSHOT_PLANNED_FIELD,
};

fn number(message: &str, field: &str) -> u32 {
    let set = descriptor::finderd().expect("the descriptor set decodes");
    field_number(&set, &format!("finderd.v1.{message}"), field)
        .unwrap_or_else(|| panic!("finderd.v1.{message} has no field {field}"))
}

#[test]
fn reply_field_constants_are_the_protos() {
    assert_eq!(
        SNAPSHOT_DIRECTORIES_FIELD,
        number("SnapshotReply", "directories")
    );
    assert_eq!(SNAPSHOT_FILES_FIELD, number("SnapshotReply", "files"));
    assert_eq!(
        SNAPSHOT_PLANNED_FIELD,
        number("SnapshotReply", "planned_directories")
    );
    assert_eq!(
        LOOKUP_DIRECTORIES_FIELD,
        number("LookupReply", "directories")
    );
}

#[test]
fn directory_fields_have_one_byte_keys() {
    // `Reply::framed_len` counts one byte for the key of a directory.
    for field in [SNAPSHOT_DIRECTORIES_FIELD, LOOKUP_DIRECTORIES_FIELD] {
        assert!(field < 16, "field {field} needs a key of two bytes");
    }
}

#[test]
fn the_slow_filesystem_flag_is_directory_slow_filesystem_true() {
    let generated = pb::Directory {
        slow_filesystem: true,
        ..Default::default()
    };
    assert_eq!(SLOW_FILESYSTEM_TRUE.as_slice(), generated.encode_to_vec());
}

#[test]
fn stats_as_daemons_sent_them_before_the_proto_declared_fields_100_to_121_decode() {
    // `plans = 2` (field 100, varint) and `slow_devices = [7, 9]` (field
    // 116, packed), as the hand-numbered extension of earlier daemons
    // encoded them after the declared fields.
    let earlier = [0xa0, 0x06, 2, 0xa2, 0x07, 2, 7, 9];
    let mut encoded = pb::StatsReply {
        roots: 3,
        ..Default::default()
    }
    .encode_to_vec();
    encoded.extend_from_slice(&earlier);
    let reply = pb::StatsReply::decode(encoded.as_slice()).expect("decodes");
    assert_eq!(reply.roots, 3);
    assert_eq!(reply.plans, 2);
    assert_eq!(reply.slow_devices, [7, 9]);
}
