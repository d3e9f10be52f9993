//! `client-c/src/finderd_fields.h`: the field numbers and enum values of
//! every message libfinderd encodes or decodes by hand, generated from the
//! descriptor sets of `finderd/v1/finderd.proto` and `grpc.health.v1`.
//!
//! The header is checked in (the C library builds with make alone, without
//! cargo). This test renders it again and fails when the checked-in copy
//! differs, after writing the fresh one: rerun, review and commit it.

use std::path::{Path, PathBuf};

use finderd_proto::descriptor::{self, enums, messages};
use prost::Message;
use prost_types::FileDescriptorSet;

const HEADER: &str = "client-c/src/finderd_fields.h";

const PREAMBLE: &str = "\
/*
 * finderd_fields.h - field numbers and enum values of the messages libfinderd
 * encodes and decodes by hand: finderd/v1/finderd.proto and grpc.health.v1.
 *
 * GENERATED from their descriptor sets by proto/tests/c_header.rs: do not
 * edit. `cargo test -p finderd-proto` fails when this file is stale (and
 * writes the fresh one: review and commit it).
 *
 * FDI_FIELD_<MESSAGE>_<FIELD> is a field number, FDI_VALUE_<VALUE> an enum
 * value (prefixed with its enum's name where the value is not).
 */
#ifndef FINDERD_FIELDS_H
#define FINDERD_FIELDS_H
";

#[test]
fn the_c_header_of_field_numbers_is_current() {
    let fresh = render(&[finderd(), health()]);
    let path = repository().join(HEADER);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        std::fs::write(&path, &fresh).expect("write the fresh header");
        panic!(
            "{HEADER} was stale and has been regenerated from the descriptor sets: \
             review and commit it"
        );
    }
}

#[test]
fn names_become_c_macros() {
    assert_eq!(upper_snake("SnapshotReply"), "SNAPSHOT_REPLY");
    assert_eq!(upper_snake("mtime_ns"), "MTIME_NS");
    assert_eq!(upper_snake("HealthCheckResponse"), "HEALTH_CHECK_RESPONSE");
    assert_eq!(
        value_macro("EntryKind", "ENTRY_KIND_FILE"),
        "FDI_VALUE_ENTRY_KIND_FILE"
    );
    assert_eq!(
        value_macro("ServingStatus", "SERVING"),
        "FDI_VALUE_SERVING_STATUS_SERVING"
    );
}

fn finderd() -> FileDescriptorSet {
    descriptor::finderd().expect("finderd's descriptor set decodes")
}

fn health() -> FileDescriptorSet {
    FileDescriptorSet::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("grpc.health.v1's descriptor set decodes")
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proto/ is inside the repository")
        .to_owned()
}

/// The header for `sets`: one block per message, then one per enum.
fn render(sets: &[FileDescriptorSet]) -> String {
    let mut out = String::from(PREAMBLE);
    for set in sets {
        for (name, message) in messages(set) {
            let rows = message.field.iter().map(|field| {
                let name = format!(
                    "{}_{}",
                    upper_snake(message.name()),
                    upper_snake(field.name())
                );
                (format!("FDI_FIELD_{name}"), i64::from(field.number()))
            });
            block(&mut out, &name, rows);
        }
    }
    for set in sets {
        for (name, enumeration) in enums(set) {
            let rows = enumeration.value.iter().map(|value| {
                (
                    value_macro(enumeration.name(), value.name()),
                    i64::from(value.number()),
                )
            });
            block(&mut out, &name, rows);
        }
    }
    out.push_str("\n#endif /* FINDERD_FIELDS_H */\n");
    out
}

/// `/* full.Name */` and one aligned `#define` per row; nothing without rows.
fn block(out: &mut String, title: &str, rows: impl Iterator<Item = (String, i64)>) {
    let rows: Vec<(String, i64)> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    out.push_str(&format!("\n/* {title} */\n"));
    for (name, number) in rows {
        out.push_str(&format!("#define {name:<width$} {number}\n"));
    }
}

/// An enum value's macro: the value's name carries its enum's name as a
/// prefix (the proto style guide) or is given it.
fn value_macro(enumeration: &str, value: &str) -> String {
    let prefix = upper_snake(enumeration);
    if value.starts_with(&format!("{prefix}_")) {
        format!("FDI_VALUE_{value}")
    } else {
        format!("FDI_VALUE_{prefix}_{value}")
    }
}

/// `CamelCase` or `snake_case` as `UPPER_SNAKE`.
fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    for (at, c) in name.char_indices() {
        if c.is_ascii_uppercase() && at > 0 && !name[..at].ends_with('_') {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
