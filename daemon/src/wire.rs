//! The `finderd.v1.Finder` gRPC service: validate a request, run the
//! barrier, ask the index, let the gate decide what the peer may have,
//! encode the reply.
//!
//! One module per request, around one explicit request context
//! ([`context::Context`]: the peer, its mount-namespace view, where the
//! handler runs, the slow filesystems):
//!
//! | module | what |
//! | --- | --- |
//! | [`service`] | the tonic service: routing, the per-peer limit, inline first and the blocking pool when the filesystem is needed, deadlines, the codec |
//! | [`context`] | asking the index for one path and turning what it holds into this peer's answer (`crate::policy::gate`) |
//! | [`check`] | what a request must be before the index is asked anything |
//! | [`reply`] | replies assembled from pre-encoded `Directory` messages |
//! | [`snapshot`], [`lookup`], [`report`], [`stats`] | the four methods |
//! | [`files`] | compiled files a plan names, chosen for a Snapshot |
//! | [`learning`] | plans and compiled files: start-up, warm-ups, their figures |
//!
//! A request whose directories are all indexed and watched is answered
//! inline on the async worker (the barrier is one short mutex hold and a
//! non-blocking read of the inotify queue); anything that needs the
//! filesystem (a crawl, a stat check of a polled directory) is answered on
//! tokio's blocking pool, and so is a request that takes longer inline than
//! `context::INLINE_BUDGET` (1 ms) or is larger than 64 KiB: the async
//! worker is one thread every peer's requests wait for, so no one request
//! may hold it for long (one uid's deep-chain Lookups took it for 8 ms each). A request carrying a `grpc-timeout` is answered by
//! `deadline_percent` of it even then: what is not indexed by that time is
//! NOT_SERVED "being indexed" and the crawl goes on in the background.

mod charged;
mod check;
mod context;
#[cfg(test)]
mod contract;
mod files;
#[cfg(test)]
mod fuzz;
mod learning;
mod lookup;
mod reply;
mod report;
mod routes;
mod service;
mod snapshot;
mod stats;

pub use learning::Learning;
pub use routes::{RouteError, RouteTable};
pub use service::FinderService;

use std::sync::Arc;

use finderd_proto::v1 as pb;
use tonic::{Code, Status};

use crate::config::LiveLimits;
use crate::policy::limits::{OverLimit, PeerLimits};
use crate::policy::quota::{InflightLimit, Quotas};
use crate::stats::Stats;
use crate::views::Views;
use crate::watch::Heartbeat;

/// Everything a request can do wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("protocol_version is missing; an empty request?")]
    MissingVersion,
    #[error("protocol_version {got} is not supported; this daemon speaks version {speaks}")]
    UnsupportedVersion { got: u32, speaks: u32 },
    #[error("{field}[{index}] is not an absolute path: \"{path}\"")]
    RelativePath {
        field: &'static str,
        index: usize,
        path: String,
    },
    #[error("{field} has {count} entries, over the limit {limit} = {value}")]
    TooMany {
        field: &'static str,
        count: usize,
        limit: &'static str,
        value: usize,
    },
    #[error(
        "known_generations has {got} entries but paths has {paths}; send one per path or none"
    )]
    GenerationsMismatch { got: usize, paths: usize },
    #[error("request body is not a valid {message}: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    #[error(transparent)]
    PeerLimit(#[from] OverLimit),
    #[error("program_key is empty; a Report needs the key its Snapshot sent")]
    EmptyProgramKey,
    #[error("{field} is {len} bytes, over the limit {limit} = {value}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: &'static str,
        value: usize,
    },
    #[error(transparent)]
    Inflight(#[from] InflightLimit),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::MissingVersion
            | Error::RelativePath { .. }
            | Error::GenerationsMismatch { .. }
            | Error::EmptyProgramKey
            | Error::Malformed { .. } => Code::InvalidArgument,
            Error::UnsupportedVersion { .. } => Code::FailedPrecondition,
            Error::TooMany { .. }
            | Error::TooLong { .. }
            | Error::PeerLimit(_)
            | Error::Inflight(_) => Code::ResourceExhausted,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

/// The state every handler shares.
pub struct Finder {
    /// Every index: the daemon's own view and the peers' (`crate::views`).
    views: Arc<Views>,
    stats: Arc<Stats>,
    limits: Arc<LiveLimits>,
    quotas: Arc<Quotas>,
    heartbeat: Arc<Heartbeat>,
    generations: pb::GenerationFile,
    /// Places per peer uid: a request takes one of `requests`; Stats
    /// shows the figures of both limiters.
    peers: PeerLimits,
    learning: Learning,
}

impl Finder {
    pub fn new(
        views: Arc<Views>,
        stats: Arc<Stats>,
        limits: Arc<LiveLimits>,
        quotas: Arc<Quotas>,
        heartbeat: Arc<Heartbeat>,
        peers: PeerLimits,
        learning: Learning,
    ) -> Self {
        let genfile = views.host().genfile();
        let generations = pb::GenerationFile {
            path: bytes::Bytes::copy_from_slice(genfile.path().as_os_str().as_encoded_bytes()),
            epoch: genfile.epoch(),
            slots: genfile.slot_count(),
            lease_ns: crate::genfile::duration_ns(genfile.lease()),
        };
        Self {
            views,
            stats,
            limits,
            quotas,
            heartbeat,
            generations,
            peers,
            learning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes() {
        let status = Status::from(Error::MissingVersion);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "protocol_version is missing; an empty request?"
        );
        let status = Status::from(Error::UnsupportedVersion { got: 2, speaks: 1 });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains('2') && status.message().contains('1'));
        let status = Status::from(Error::PeerLimit(OverLimit {
            counted: crate::policy::limits::Counted::Requests,
            uid: Some(7),
            held: 3,
            limit: 3,
            first: true,
        }));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "peer uid 7 has 3 requests in flight, over the limit max_requests_per_peer = 3"
        );
    }
}
