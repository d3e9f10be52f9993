//! What a request must be before the index is asked anything: its
//! protocol version, its counts within their limits, its paths absolute.
//! A path that is absolute but not canonical is not an error: it is
//! answered NOT_SERVED (see [`non_canonical_reason`]).

use bytes::Bytes;
use finderd_proto::v1 as pb;
use finderd_proto::v1::PROTOCOL_VERSION;
use prost::Message;
#[cfg(test)]
use tonic::Status;

use super::Error;
use crate::config::{LiveLimits, PlanConfig};

/// Linux's PATH_MAX, including the terminating NUL.
const PATH_MAX: usize = 4096;
/// Longest path quoted back in an error message.
pub const QUOTED_PATH_BYTES: usize = 256;

/// What a Snapshot must be before the index is asked anything.
pub fn check_snapshot(limits: &LiveLimits, request: &pb::SnapshotRequest) -> Result<(), Error> {
    check_version(request.protocol_version)?;
    check_paths(
        "sys_path",
        &request.sys_path,
        LiveLimits::get(&limits.max_sys_path_entries),
        "max_sys_path_entries",
    )
}

/// What a Lookup must be before the index is asked anything.
pub fn check_lookup(limits: &LiveLimits, request: &pb::LookupRequest) -> Result<(), Error> {
    check_version(request.protocol_version)?;
    check_paths(
        "paths",
        &request.paths,
        LiveLimits::get(&limits.max_lookup_paths),
        "max_lookup_paths",
    )?;
    let known = &request.known_generations;
    if !known.is_empty() && known.len() != request.paths.len() {
        return Err(Error::GenerationsMismatch {
            got: known.len(),
            paths: request.paths.len(),
        });
    }
    Ok(())
}

/// One request body as the service takes it, without the index: decoded
/// as the codec decodes it, then checked as its handler checks it before
/// answering. `Err`: the status the peer would get. The entry point of the
/// request fuzzing (`wire/fuzz.rs`); the service itself runs the same
/// functions (the codec's decoder, then each handler's check).
#[cfg(test)]
pub(crate) fn decode_and_check(
    method: &str,
    body: &[u8],
    limits: &LiveLimits,
    plans: &crate::config::PlanConfig,
) -> Result<(), Status> {
    match method {
        "Snapshot" => check_snapshot(limits, &decode_request(body)?),
        "Lookup" => check_lookup(limits, &decode_request(body)?),
        "Report" => check_report(plans, &decode_request(body)?),
        "Stats" => decode_request::<pb::StatsRequest>(body).map(drop),
        _ => return Err(Status::unimplemented("no such method in finderd.v1.Finder")),
    }
    .map_err(Status::from)
}

/// What a Report must be before anything is learned from it.
pub fn check_report(config: &PlanConfig, request: &pb::ReportRequest) -> Result<(), Error> {
    check_version(request.protocol_version)?;
    let key = &request.program_key;
    if key.is_empty() {
        return Err(Error::EmptyProgramKey);
    }
    if key.len() > config.max_program_key_bytes {
        return Err(Error::TooLong {
            field: "program_key",
            len: key.len(),
            limit: "max_program_key_bytes",
            value: config.max_program_key_bytes,
        });
    }
    let max = config.max_report_paths;
    check_paths("directories", &request.directories, max, "max_report_paths")?;
    check_paths(
        "bytecode_files",
        &request.bytecode_files,
        max,
        "max_report_paths",
    )
}

/// A request message from its body; the error names the message and what
/// prost found wrong.
pub fn decode_request<Request: Message + Default>(buf: impl bytes::Buf) -> Result<Request, Error> {
    Request::decode(buf).map_err(|error| Error::Malformed {
        message: std::any::type_name::<Request>()
            .rsplit("::")
            .next()
            .unwrap_or("message"),
        reason: error.to_string(),
    })
}

fn check_version(version: u32) -> Result<(), Error> {
    match version {
        0 => Err(Error::MissingVersion),
        PROTOCOL_VERSION => Ok(()),
        got => Err(Error::UnsupportedVersion {
            got,
            speaks: PROTOCOL_VERSION,
        }),
    }
}

fn check_paths(
    field: &'static str,
    paths: &[Bytes],
    max: usize,
    limit: &'static str,
) -> Result<(), Error> {
    if paths.len() > max {
        return Err(Error::TooMany {
            field,
            count: paths.len(),
            limit,
            value: max,
        });
    }
    match paths.iter().position(|path| !path.starts_with(b"/")) {
        Some(index) => Err(Error::RelativePath {
            field,
            index,
            path: quote(&paths[index]),
        }),
        None => Ok(()),
    }
}

/// A path for a message: escaped (not UTF-8 safe otherwise) and truncated.
pub fn quote(path: &[u8]) -> String {
    let shown = &path[..path.len().min(QUOTED_PATH_BYTES)];
    let ellipsis = if path.len() > QUOTED_PATH_BYTES {
        "..."
    } else {
        ""
    };
    format!("{}{ellipsis}", shown.escape_ascii())
}

/// Why an absolute path is not in canonical form (see the proto's
/// conventions), or `None` when it is.
pub fn non_canonical_reason(path: &[u8]) -> Option<&'static str> {
    if path.contains(&0) {
        return Some("contains a NUL byte");
    }
    if path.len() >= PATH_MAX {
        return Some("longer than PATH_MAX");
    }
    if path == b"/" {
        return None;
    }
    if path.ends_with(b"/") {
        return Some("trailing '/'");
    }
    path.get(1..)?
        .split(|&b| b == b'/')
        .find_map(|component| match component {
            b"" => Some("empty component"),
            b"." => Some("'.' component"),
            b".." => Some("'..' component"),
            _ => None,
        })
}

/// Why a canonical path is not walked at all: it has more components than
/// a walk may look up (`crate::walk::MAX_LOOKUPS`), so its answer could only
/// be a refusal, and asking would cost a walk of that depth.
pub fn too_deep(path: &[u8]) -> Option<String> {
    let components = path.iter().filter(|&&b| b == b'/').count();
    (components > crate::walk::MAX_LOOKUPS).then(|| {
        format!(
            "more than {} components (a chain of directories that deep is not served)",
            crate::walk::MAX_LOOKUPS
        )
    })
}

/// An ASCII Python identifier other than `__pycache__`: a directory an
/// `import` could name.
pub fn is_package_name(name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    (first == b'_' || first.is_ascii_alphabetic())
        && rest.iter().all(|&b| b == b'_' || b.is_ascii_alphanumeric())
        && name != b"__pycache__"
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn canonical_paths() {
        assert_eq!(non_canonical_reason(b"/"), None);
        assert_eq!(non_canonical_reason(b"/usr/lib/python3.11"), None);
        assert_eq!(non_canonical_reason(b"/a/.hidden/..x"), None);
        assert_eq!(non_canonical_reason(b"/usr/"), Some("trailing '/'"));
        assert_eq!(non_canonical_reason(b"//usr"), Some("empty component"));
        assert_eq!(non_canonical_reason(b"/a//b"), Some("empty component"));
        assert_eq!(non_canonical_reason(b"/a/./b"), Some("'.' component"));
        assert_eq!(non_canonical_reason(b"/a/.."), Some("'..' component"));
        assert_eq!(non_canonical_reason(b"/a\0b"), Some("contains a NUL byte"));
        assert_eq!(
            non_canonical_reason(&[b'/'; 5000]),
            Some("longer than PATH_MAX")
        );
    }

    #[test]
    fn package_names() {
        assert!(is_package_name(b"requests"));
        assert!(is_package_name(b"_private2"));
        assert!(!is_package_name(b"__pycache__"));
        assert!(!is_package_name(b"requests-2.31.0.dist-info"));
        assert!(!is_package_name(b"2to3"));
        assert!(!is_package_name(b""));
        assert!(!is_package_name("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn limits_and_paths_are_checked() {
        let too_many = check_paths(
            "sys_path",
            &vec![Bytes::from_static(b"/"); 3],
            2,
            "max_sys_path_entries",
        );
        let status = Status::from(too_many.expect_err("over the limit"));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "sys_path has 3 entries, over the limit max_sys_path_entries = 2"
        );
        let relative = check_paths(
            "paths",
            &[Bytes::from_static(b"/ok"), Bytes::from_static(b"x\xff")],
            9,
            "l",
        );
        assert_eq!(
            Status::from(relative.expect_err("relative")).message(),
            "paths[1] is not an absolute path: \"x\\xff\""
        );
    }
}
