//! Request fuzzing without cargo-fuzz: property tests that feed arbitrary
//! bytes, and arbitrary structured requests (any bytes in paths, counts
//! past every limit, deep nesting), through the decode-and-check path the
//! service runs before it asks the index ([`super::decode_and_check`]).
//!
//! Every input must come back `Ok` or as a status of the codes a request
//! can earn, with a message; none may panic. Structured requests are also
//! checked against an oracle of the wire contract (which rule a request
//! breaks first decides its status). More cases: `PROPTEST_CASES=N`.
//! The same kinds of input travel to a real daemon in
//! `tests/reliability/test_hostile.py::test_request_fuzz`.

use bytes::Bytes;
use finderd_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

use super::check::{decode_and_check, non_canonical_reason};
use crate::config::{Config, LiveLimits, PlanConfig};

/// Small limits, so that counts past them are cheap to generate.
const MAX_ENTRIES: usize = 24;
const MAX_KEY: usize = 64;

fn limits() -> &'static (LiveLimits, PlanConfig) {
    static LIMITS: std::sync::OnceLock<(LiveLimits, PlanConfig)> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut config = Config::resolve(Default::default()).expect("defaults");
        config.values.max_sys_path_entries = MAX_ENTRIES;
        config.values.max_lookup_paths = MAX_ENTRIES;
        config.plans.max_report_paths = MAX_ENTRIES;
        config.plans.max_program_key_bytes = MAX_KEY;
        (LiveLimits::new(&config), config.plans.clone())
    })
}

const METHODS: [&str; 4] = ["Snapshot", "Lookup", "Report", "Stats"];

/// The outcome of one body: `Ok`, or a status with a code a request can
/// earn and a message saying what was wrong.
fn outcome(method: &str, body: &[u8]) -> Result<(), (Code, String)> {
    let (limits, plans) = limits();
    match decode_and_check(method, body, limits, plans) {
        Ok(()) => Ok(()),
        Err(status) => {
            let code = status.code();
            assert!(
                matches!(
                    code,
                    Code::InvalidArgument | Code::FailedPrecondition | Code::ResourceExhausted
                ),
                "{method}: unexpected code {code:?}: {}",
                status.message()
            );
            assert!(
                !status.message().is_empty(),
                "{method}: {code:?} without a message"
            );
            Err((code, status.message().to_string()))
        }
    }
}

/// Any bytes, mostly path-like: slashes, dots, NULs, high bytes.
fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(|bytes| {
            bytes
                .into_iter()
                .map(|b| match b % 8 {
                    0 | 1 => b'/',
                    2 => b'.',
                    3 => [0, 0xff, 0x80, b'\n'][usize::from(b >> 6)],
                    4 | 5 => b'a' + b % 26,
                    _ => b,
                })
                .collect()
        }),
        1 => (4090usize..4100).prop_map(|len| {
            let mut p = vec![b'a'; len];
            p[0] = b'/';
            p
        }),
    ]
}

fn paths() -> impl Strategy<Value = Vec<Bytes>> {
    proptest::collection::vec(path().prop_map(Bytes::from), 0..MAX_ENTRIES + 8)
}

fn version() -> impl Strategy<Value = u32> {
    prop_oneof![6 => Just(1u32), 1 => Just(0u32), 1 => any::<u32>()]
}

/// The status the contract gives a request with these fields, in the
/// order the daemon checks them (version, then counts, then each path).
fn expected(version: u32, lists: &[(&str, &[Bytes])]) -> Result<(), (Code, String)> {
    match version {
        0 => return Err((Code::InvalidArgument, "protocol_version is missing".into())),
        1 => {}
        v => {
            return Err((
                Code::FailedPrecondition,
                format!("protocol_version {v} is not supported"),
            ))
        }
    }
    for (field, paths) in lists {
        if paths.len() > MAX_ENTRIES {
            return Err((
                Code::ResourceExhausted,
                format!("{field} has {} entries, over the limit", paths.len()),
            ));
        }
        if let Some(at) = paths.iter().position(|p| !p.starts_with(b"/")) {
            return Err((
                Code::InvalidArgument,
                format!("{field}[{at}] is not an absolute path"),
            ));
        }
    }
    Ok(())
}

fn agrees(got: Result<(), (Code, String)>, want: Result<(), (Code, String)>) {
    match (&got, &want) {
        (Ok(()), Ok(())) => {}
        (Err((code, message)), Err((want_code, want_text))) => {
            assert_eq!(code, want_code, "{message}");
            assert!(
                message.contains(want_text.as_str()),
                "{message:?} lacks {want_text:?}"
            );
        }
        _ => panic!("got {got:?}, the contract says {want:?}"),
    }
}

/// Protobuf-ish garbage: valid keys with any wire type, lengths past the
/// end, nested groups, packed fields of junk.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<Vec<u8>>(),
        (1u32..12, 0u32..8, any::<u64>()).prop_map(|(field, wire, value)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(u64::from(field << 3 | wire), &mut out);
            prost::encoding::encode_varint(value, &mut out);
            out
        }),
        (1u32..12, 0usize..2000).prop_map(|(field, depth)| {
            let mut out = Vec::new();
            for _ in 0..depth {
                prost::encoding::encode_varint(u64::from(field << 3 | 3), &mut out);
            }
            for _ in 0..depth {
                prost::encoding::encode_varint(u64::from(field << 3 | 4), &mut out);
            }
            out
        }),
        (0usize..200).prop_map(|depth| {
            // Interpreter (field 2) inside itself, as length-delimited.
            let mut out = Vec::new();
            for _ in 0..depth {
                let mut outer = Vec::new();
                prost::encoding::encode_varint(2 << 3 | 2, &mut outer);
                prost::encoding::encode_varint(out.len() as u64, &mut outer);
                outer.extend_from_slice(&out);
                out = outer;
            }
            out
        }),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_ok_or_a_clear_status(body in any::<Vec<u8>>(), at in 0usize..4) {
        let _ = outcome(METHODS[at], &body);
    }

    #[test]
    fn protobuf_garbage_and_deep_nesting_get_ok_or_a_clear_status(
        body in garbage(), at in 0usize..4,
    ) {
        let _ = outcome(METHODS[at], &body);
    }

    #[test]
    fn snapshots_follow_the_contract(
        version in version(),
        sys_path in paths(),
        key in proptest::collection::vec(any::<u8>(), 0..MAX_KEY * 2),
        prefetch in any::<u64>(),
        namespace in any::<u64>(),
    ) {
        let request = pb::SnapshotRequest {
            protocol_version: version,
            interpreter: Some(pb::Interpreter::default()),
            sys_path: sys_path.clone(),
            program_key: Bytes::from(key),
            prefetch_bytes: prefetch,
            bytecode_bytes: prefetch,
            mount_namespace: namespace,
        };
        agrees(
            outcome("Snapshot", &request.encode_to_vec()),
            expected(version, &[("sys_path", &sys_path)]),
        );
    }

    #[test]
    fn lookups_follow_the_contract(
        version in version(),
        paths in paths(),
        generations in proptest::collection::vec(any::<u64>(), 0..4),
        epoch in any::<u64>(),
    ) {
        let mismatched = !generations.is_empty() && generations.len() != paths.len();
        let request = pb::LookupRequest {
            protocol_version: version,
            paths: paths.clone(),
            known_generations: generations.clone(),
            known_epoch: epoch,
            mount_namespace: 0,
        };
        let mut want = expected(version, &[("paths", &paths)]);
        if want.is_ok() && mismatched {
            want = Err((Code::InvalidArgument, format!(
                "known_generations has {} entries but paths has {}",
                generations.len(), paths.len())));
        }
        agrees(outcome("Lookup", &request.encode_to_vec()), want);
    }

    #[test]
    fn reports_follow_the_contract(
        version in version(),
        key in proptest::collection::vec(any::<u8>(), 0..MAX_KEY * 2),
        directories in paths(),
        files in paths(),
    ) {
        let request = pb::ReportRequest {
            protocol_version: version,
            program_key: Bytes::from(key.clone()),
            directories: directories.clone(),
            bytecode_files: files.clone(),
            mount_namespace: 0,
        };
        let mut want = expected(version, &[]);
        if want.is_ok() && key.is_empty() {
            want = Err((Code::InvalidArgument, "program_key is empty".into()));
        } else if want.is_ok() && key.len() > MAX_KEY {
            want = Err((Code::ResourceExhausted, format!(
                "program_key is {} bytes, over the limit max_program_key_bytes = {MAX_KEY}",
                key.len())));
        } else if want.is_ok() {
            want = expected(1, &[("directories", &directories), ("bytecode_files", &files)]);
        }
        agrees(outcome("Report", &request.encode_to_vec()), want);
    }

    #[test]
    fn mutated_valid_requests_get_ok_or_a_clear_status(
        sys_path in paths(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
        at in 0usize..4,
    ) {
        let mut body = pb::SnapshotRequest {
            protocol_version: 1,
            interpreter: Some(pb::Interpreter {
                implementation: "cpython".into(),
                version: "3.11.7".into(),
                ..Default::default()
            }),
            sys_path,
            ..Default::default()
        }
        .encode_to_vec();
        for (position, byte, how) in edits {
            let position = position % (body.len() + 1);
            match how {
                0 if position < body.len() => body[position] ^= byte | 1,
                1 => body.insert(position, byte),
                2 if position < body.len() => { body.remove(position); }
                _ => body.truncate(position),
            }
        }
        let _ = outcome(METHODS[at], &body);
    }

    /// Canonical form: any bytes are judged without panicking, and a path
    /// built from plain components is canonical.
    #[test]
    fn canonical_form_is_judged_for_any_bytes(
        any_path in path(),
        components in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,12}", 0..12),
    ) {
        let _ = non_canonical_reason(&any_path);
        let joined = format!("/{}", components.join("/"));
        if components.iter().all(|c| c != "." && c != "..") {
            prop_assert_eq!(non_canonical_reason(joined.as_bytes()), None, "{}", joined);
        }
    }
}

#[test]
fn unknown_methods_are_unimplemented() {
    let (limits, plans) = limits();
    let status = decode_and_check("Delete", b"", limits, plans).expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "no such method in finderd.v1.Finder");
}
