//! The `finderd.v1.Finder` gRPC service: validate a request, run the
//! barrier, ask the index, encode the reply.
//!
//! The route table is written here rather than generated because replies
//! are assembled from pre-encoded `Directory` messages (cached per listing
//! version): the reply codec takes bytes, so a warm answer is a copy. The
//! wire format is exactly that of the generated messages (concatenated
//! protobuf fields), so generated clients decode it as usual.
//!
//! A request whose directories are all indexed and watched is answered
//! inline on the async worker (the barrier is one short mutex hold and a
//! non-blocking read of the inotify queue); anything that needs the
//! filesystem (a crawl, a stat check of a polled or degraded directory) is
//! answered on tokio's blocking pool. A request carrying a `grpc-timeout`
//! is answered by `deadline_percent` of it even then: what is not indexed by
//! that time is NOT_SERVED "being indexed" and the crawl goes on in the
//! background (`Mode::Deadline`).
//!
//! Learned plans (Report, and the plan part of a Snapshot) live in
//! [`planned`].

#[cfg(test)]
mod contract;
#[cfg(test)]
mod fuzz;
mod planned;
mod routes;

pub use planned::Learning;
pub use routes::{RouteError, RouteTable};

use std::collections::HashSet;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use finderd_proto::v1 as pb;
use finderd_proto::v1::PROTOCOL_VERSION;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use crate::config::LiveLimits;
use crate::index::{Answer, Index, Listing, Role};
use crate::namespace;
use crate::policy::PeerInfo;
use crate::refresh::{join, Kind};
use crate::stats::{bump, Stats};
use crate::watch::Heartbeat;

/// Linux's PATH_MAX, including the terminating NUL.
const PATH_MAX: usize = 4096;
/// Longest path quoted back in an error message.
const QUOTED_PATH_BYTES: usize = 256;

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
    #[error("peer uid {uid} has {in_flight} requests in flight, over the limit max_requests_per_peer = {limit}")]
    PeerLimit {
        uid: String,
        in_flight: usize,
        limit: usize,
    },
    #[error("program_key is empty; a Report needs the key its Snapshot sent")]
    EmptyProgramKey,
    #[error("{field} is {len} bytes, over the limit {limit} = {value}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: &'static str,
        value: usize,
    },
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
            Error::TooMany { .. } | Error::TooLong { .. } | Error::PeerLimit { .. } => {
                Code::ResourceExhausted
            }
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

/// The state every handler shares.
pub struct Finder {
    index: Arc<Index>,
    stats: Arc<Stats>,
    limits: Arc<LiveLimits>,
    heartbeat: Arc<Heartbeat>,
    generations: pb::GenerationFile,
    peers: Arc<PeerRequests>,
    learning: Learning,
}

impl Finder {
    pub fn new(
        index: Arc<Index>,
        stats: Arc<Stats>,
        limits: Arc<LiveLimits>,
        heartbeat: Arc<Heartbeat>,
        learning: Learning,
    ) -> Self {
        let genfile = index.genfile();
        let generations = pb::GenerationFile {
            path: Bytes::copy_from_slice(genfile.path().as_os_str().as_encoded_bytes()),
            epoch: genfile.epoch(),
            slots: genfile.slot_count(),
            lease_ns: crate::genfile::duration_ns(genfile.lease()),
        };
        Self {
            index,
            stats,
            limits,
            heartbeat,
            generations,
            peers: Arc::default(),
            learning,
        }
    }

    /// The requests in flight, which the shutdown drain waits for.
    pub fn requests(&self) -> Arc<PeerRequests> {
        Arc::clone(&self.peers)
    }

    /// The fields of a Snapshot reply that precede its directories.
    fn snapshot_header(&self) -> pb::SnapshotReply {
        pb::SnapshotReply {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            generations: Some(self.generations.clone()),
            ..Default::default()
        }
    }

    /// The Snapshot reply. `Inline`: `None` as soon as one directory would
    /// need the filesystem (the caller retries on the blocking pool).
    fn snapshot(
        &self,
        peer: &PeerInfo,
        request: &pb::SnapshotRequest,
        mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        if let Err(error) = self.check_snapshot(request) {
            return Some(Err(error));
        }
        let _view = namespace::enter(namespace::view_of(peer, request.mount_namespace));
        if self.barrier(mode).is_none() {
            return self.unanswered_snapshot(request, mode);
        }
        let slow = self.slow_devices();
        let header = self.snapshot_header();
        let mut reply = Reply::new(&header, SNAPSHOT_DIRECTORIES_FIELD);
        let mut tally = Tally::default();
        let mut answered = HashSet::new();
        let mut served = Vec::new();
        for path in &request.sys_path {
            let answer = self.ask(path, peer, 0, Role::SysPathEntry, mode)?;
            tally.count(&answer);
            if answered.insert(path.clone()) {
                if let Answer::Listed(listing) = &answer {
                    served.push(Arc::clone(listing));
                }
            }
            reply.push(&self.encode(path, &answer, &slow));
        }
        let prefetch = Prefetch {
            budget: request.prefetch_bytes,
            peer,
            mode,
            slow: &slow,
        };
        match self.plan_of(peer, &request.program_key) {
            // The plan replaces the guess.
            Some(plan) => self.add_plan(
                &plan,
                request,
                prefetch,
                &mut reply,
                &mut answered,
                &mut tally,
            )?,
            None => self.prefetch(&served, prefetch, &mut reply, &mut answered, &mut tally)?,
        }
        tally.apply(&self.stats);
        Some(Ok(reply.finish()))
    }

    fn check_snapshot(&self, request: &pb::SnapshotRequest) -> Result<(), Error> {
        check_snapshot(&self.limits, request)
    }

    /// Adds package directories of the served sys.path entries, in sys.path
    /// order then name order, while their encoded size fits the budget.
    /// `None`: inline, and a candidate is not indexed yet.
    fn prefetch(
        &self,
        served: &[Arc<Listing>],
        prefetch: Prefetch<'_>,
        reply: &mut Reply,
        answered: &mut HashSet<Bytes>,
        tally: &mut Tally,
    ) -> Option<()> {
        let mut spent = 0u64;
        let candidates = served.iter().flat_map(|listing| {
            listing
                .entries
                .iter()
                .filter(|e| {
                    matches!(e.kind, Kind::Dir | Kind::SymlinkDir) && is_package_name(&e.name)
                })
                .map(|e| Bytes::from(join(&listing.path, &e.name)))
        });
        for path in candidates {
            if prefetch.budget == 0 {
                return Some(());
            }
            if !answered.insert(path.clone()) {
                continue;
            }
            let answer = self.ask(&path, prefetch.peer, 0, Role::Other, prefetch.mode)?;
            let Answer::Listed(listing) = answer else {
                continue; // absent, refused or not for this peer: simply omitted
            };
            let encoded = self.listing_bytes(&listing, prefetch.slow);
            spent += Reply::framed_len(&encoded) as u64;
            if spent > prefetch.budget {
                return Some(());
            }
            tally.served += 1;
            reply.push(&encoded);
        }
        Some(())
    }

    fn lookup(
        &self,
        peer: &PeerInfo,
        request: &pb::LookupRequest,
        mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        if let Err(error) = self.check_lookup(request) {
            return Some(Err(error));
        }
        let _view = namespace::enter(namespace::view_of(peer, request.mount_namespace));
        if self.barrier(mode).is_none() {
            return self.unanswered_lookup(request, mode);
        }
        let slow = self.slow_devices();
        let header = pb::LookupReply {
            protocol_version: PROTOCOL_VERSION,
            generations: Some(self.generations.clone()),
            directories: Vec::new(),
        };
        let mut reply = Reply::new(&header, LOOKUP_DIRECTORIES_FIELD);
        let mut tally = Tally::default();
        let known = &request.known_generations;
        // Generations of another daemon run (another epoch) mean nothing here.
        let comparable = request.known_epoch == self.generations.epoch;
        for (at, path) in request.paths.iter().enumerate() {
            let known_generation = known.get(at).copied().filter(|_| comparable).unwrap_or(0);
            let answer = self.ask(path, peer, known_generation, Role::Other, mode)?;
            tally.count(&answer);
            reply.push(&self.encode(path, &answer, &slow));
        }
        tally.apply(&self.stats);
        Some(Ok(reply.finish()))
    }

    fn check_lookup(&self, request: &pb::LookupRequest) -> Result<(), Error> {
        check_lookup(&self.limits, request)
    }

    fn stats(
        &self,
        _peer: &PeerInfo,
        _request: &pb::StatsRequest,
        _mode: Mode,
    ) -> Option<Result<Bytes, Error>> {
        let mut reply = self
            .stats
            .reply(self.index.gauges(), self.index.engine_report());
        self.learning_stats(&mut reply);
        Some(Ok(reply.encode_to_vec().into()))
    }

    /// Runs the barrier; `None` when `Inline` and the watcher is busy.
    fn barrier(&self, mode: Mode) -> Option<()> {
        self.heartbeat.note_request();
        let elapsed = match mode {
            Mode::Inline | Mode::Deadline => self.index.try_barrier()?,
            Mode::Blocking => self.index.barrier(),
        };
        self.stats.barrier_latency.record(elapsed);
        Some(())
    }

    /// The answer for one requested path; `None` when `Inline` and it needs
    /// the filesystem.
    fn ask(
        &self,
        path: &Bytes,
        peer: &PeerInfo,
        known_generation: u64,
        role: Role,
        mode: Mode,
    ) -> Option<Answer> {
        if let Some(reason) = non_canonical_reason(path) {
            return Some(Answer::NotServed(format!(
                "path is not canonical: {reason}"
            )));
        }
        // A peer in another mount namespace (see `crate::namespace`).
        match namespace::screen(path, mode == Mode::Blocking) {
            namespace::Screen::Pass => {}
            namespace::Screen::Refuse => {
                return Some(Answer::NotServed(namespace::REASON.to_string()))
            }
            namespace::Screen::Later if mode == Mode::Inline => return None,
            namespace::Screen::Later => {
                return Some(Answer::NotServed(namespace::REASON.to_string()))
            }
        }
        match mode {
            Mode::Inline => self.index.peek(path, peer, known_generation, role),
            Mode::Blocking => Some(self.index.answer(path, peer, known_generation, role)),
            Mode::Deadline => Some(
                self.index
                    .peek(path, peer, known_generation, role)
                    .unwrap_or_else(|| self.being_indexed()),
            ),
        }
    }
}

/// Where a handler runs: on the async worker (only what needs no
/// filesystem access), or on the blocking pool (crawls, stat checks); or,
/// once the request's deadline passed with the blocking attempt still
/// running, on the async worker again answering only what is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inline,
    Blocking,
    Deadline,
}

struct Prefetch<'a> {
    budget: u64,
    peer: &'a PeerInfo,
    mode: Mode,
    /// Devices of slow filesystems (`Directory.slow_filesystem`).
    slow: &'a [u64],
}

/// Per-answer counters, applied once a reply is complete (an inline
/// attempt that gives up counts nothing).
#[derive(Default)]
struct Tally {
    served: u64,
    not_served: u64,
    unchanged: u64,
}

impl Tally {
    fn count(&mut self, answer: &Answer) {
        match answer {
            Answer::Listed(_) => self.served += 1,
            Answer::NotServed(_) => self.not_served += 1,
            Answer::Unchanged { .. } => self.unchanged += 1,
            Answer::Absent { .. } => {}
        }
    }

    fn apply(&self, stats: &Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        stats.directories_served.fetch_add(self.served, Relaxed);
        stats
            .directories_not_served
            .fetch_add(self.not_served, Relaxed);
        stats
            .directories_unchanged
            .fetch_add(self.unchanged, Relaxed);
    }
}

/// What a Snapshot must be before the index is asked anything.
fn check_snapshot(limits: &LiveLimits, request: &pb::SnapshotRequest) -> Result<(), Error> {
    check_version(request.protocol_version)?;
    check_paths(
        "sys_path",
        &request.sys_path,
        LiveLimits::get(&limits.max_sys_path_entries),
        "max_sys_path_entries",
    )
}

/// What a Lookup must be before the index is asked anything.
fn check_lookup(limits: &LiveLimits, request: &pb::LookupRequest) -> Result<(), Error> {
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
        "Report" => planned::check_report(plans, &decode_request(body)?),
        "Stats" => decode_request::<pb::StatsRequest>(body).map(drop),
        _ => return Err(Status::unimplemented("no such method in finderd.v1.Finder")),
    }
    .map_err(Status::from)
}

/// A request message from its body; the error names the message and what
/// prost found wrong.
fn decode_request<Request: Message + Default>(buf: impl bytes::Buf) -> Result<Request, Error> {
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
fn quote(path: &[u8]) -> String {
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

/// An ASCII Python identifier other than `__pycache__`: a directory an
/// `import` could name.
fn is_package_name(name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    (first == b'_' || first.is_ascii_alphabetic())
        && rest.iter().all(|&b| b == b'_' || b.is_ascii_alphanumeric())
        && name != b"__pycache__"
}

fn proto_kind(kind: Kind) -> pb::EntryKind {
    match kind {
        Kind::File => pb::EntryKind::File,
        Kind::Dir => pb::EntryKind::Dir,
        Kind::SymlinkDir => pb::EntryKind::SymlinkDir,
        Kind::Other => pb::EntryKind::Other,
    }
}

/// The `Directory` message of a listing.
fn encode_listing(listing: &Listing) -> Bytes {
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
            .map(|entry| pb::Entry {
                name: entry.name.clone(),
                kind: proto_kind(entry.kind).into(),
                mode: entry.stat.mode,
                mtime_ns: entry.stat.mtime_ns,
                size: entry.stat.size,
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn encode_answer(path: &Bytes, answer: &Answer) -> Bytes {
    let directory = match answer {
        Answer::Listed(listing) => return listing.encoded(encode_listing),
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

/// `SnapshotReply.directories`.
const SNAPSHOT_DIRECTORIES_FIELD: u32 = 4;
/// `SnapshotReply.files`.
const SNAPSHOT_FILES_FIELD: u32 = 5;
/// `SnapshotReply.planned_directories`.
const SNAPSHOT_PLANNED_FIELD: u32 = 6;
/// `LookupReply.directories`.
const LOOKUP_DIRECTORIES_FIELD: u32 = 3;

/// A reply message: its scalar fields encoded by prost, then each
/// `Directory` appended as one more occurrence of the repeated field
/// (protobuf concatenation is merging).
struct Reply {
    buffer: BytesMut,
    field: u32,
}

impl Reply {
    fn new(header: &impl Message, field: u32) -> Self {
        let mut buffer = BytesMut::with_capacity(4096);
        // BytesMut grows as needed: encoding into it cannot fail.
        let _ = header.encode(&mut buffer);
        Self { buffer, field }
    }

    fn push(&mut self, directory: &[u8]) {
        encode_key(self.field, WireType::LengthDelimited, &mut self.buffer);
        encode_varint(directory.len() as u64, &mut self.buffer);
        self.buffer.put_slice(directory);
    }

    /// One more occurrence of a message field (another than `self.field`).
    fn push_message(&mut self, field: u32, message: &impl Message) {
        encode_key(field, WireType::LengthDelimited, &mut self.buffer);
        // BytesMut grows as needed: encoding into it cannot fail.
        let _ = message.encode_length_delimited(&mut self.buffer);
    }

    /// A varint field.
    fn push_varint(&mut self, field: u32, value: u64) {
        encode_key(field, WireType::Varint, &mut self.buffer);
        encode_varint(value, &mut self.buffer);
    }

    /// Bytes one directory adds to a reply (key, length, message).
    fn framed_len(directory: &[u8]) -> usize {
        1 + encoded_len_varint(directory.len() as u64) + directory.len()
    }

    fn finish(self) -> Bytes {
        self.buffer.freeze()
    }
}

/// Requests decode with prost; replies are already encoded.
struct WireCodec<Request> {
    stats: Arc<Stats>,
    request: PhantomData<fn() -> Request>,
}

impl<Request: Message + Default + Send + 'static> Codec for WireCodec<Request> {
    type Encode = Bytes;
    type Decode = Request;
    type Encoder = PreEncoded;
    type Decoder = RequestDecoder<Request>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            stats: Arc::clone(&self.stats),
            request: PhantomData,
        }
    }
}

struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct RequestDecoder<Request> {
    stats: Arc<Stats>,
    request: PhantomData<fn() -> Request>,
}

impl<Request: Message + Default> Decoder for RequestDecoder<Request> {
    type Item = Request;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Request>, Status> {
        decode_request(buf).map(Some).map_err(|error| {
            bump(&self.stats.rejected_requests);
            error.into()
        })
    }
}

type Handler<Request> = fn(&Finder, &PeerInfo, &Request, Mode) -> Option<Result<Bytes, Error>>;

/// One unary method: takes the peer from the connection, enforces the
/// per-peer limit, answers inline when it can and on the blocking pool
/// otherwise, records latency and rejections.
struct Method<Request> {
    name: &'static str,
    finder: Arc<Finder>,
    handler: Handler<Request>,
}

impl<Request: Send + Sync + 'static> UnaryService<Request> for Method<Request> {
    type Response = Bytes;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<Request>) -> Self::Future {
        let finder = Arc::clone(&self.finder);
        let (name, handler) = (self.name, self.handler);
        Box::pin(async move {
            let started = Instant::now();
            let peer: PeerInfo = request.extensions().get::<PeerInfo>().cloned().flatten();
            let uid = peer.as_ref().map(|p| p.uid);
            let deadline = finder.deadline(started, request.metadata());
            finder.count_request(name);
            let result = match finder.peers.admit(uid, &finder.limits) {
                Ok(_permit) => run(&finder, handler, peer, request.into_inner(), deadline).await,
                Err(error) => {
                    bump(&finder.stats.peer_limit_rejections);
                    Err(error)
                }
            };
            finder.finish(name, uid, started, result)
        })
    }
}

/// Inline first; on the blocking pool when the inline attempt gives up.
/// With a `deadline`, a blocking attempt still running then is left to
/// finish in the background (its crawls stay in the index) and the request
/// is answered with what is indexed (`Mode::Deadline`).
async fn run<Request: Send + Sync + 'static>(
    finder: &Arc<Finder>,
    handler: Handler<Request>,
    peer: PeerInfo,
    message: Request,
    deadline: Option<tokio::time::Instant>,
) -> Result<Bytes, Error> {
    if let Some(result) = handler(finder, &peer, &message, Mode::Inline) {
        return result;
    }
    let message = Arc::new(message);
    let (worker, worker_peer, worker_message) =
        (Arc::clone(finder), peer.clone(), Arc::clone(&message));
    let blocking = tokio::task::spawn_blocking(move || {
        handler(&worker, &worker_peer, &worker_message, Mode::Blocking)
    });
    let joined = match deadline {
        None => blocking.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, blocking).await {
            Ok(joined) => joined,
            Err(_elapsed) => return finder.at_deadline(handler, &peer, &message),
        },
    };
    joined
        .map_err(|error| Error::Internal(error.to_string()))?
        .unwrap_or_else(|| {
            Err(Error::Internal(
                "blocking handler gave no answer".to_string(),
            ))
        })
}

impl Finder {
    fn count_request(&self, name: &str) {
        match name {
            "Snapshot" => bump(&self.stats.snapshot_requests),
            "Lookup" => bump(&self.stats.lookup_requests),
            _ => {}
        }
    }

    /// Answers `message` in `Mode::Deadline`: only what is indexed.
    fn at_deadline<Request>(
        &self,
        handler: Handler<Request>,
        peer: &PeerInfo,
        message: &Request,
    ) -> Result<Bytes, Error> {
        bump(&self.learning.deadline_replies);
        handler(self, peer, message, Mode::Deadline).unwrap_or_else(|| {
            Err(Error::Internal(
                "deadline handler gave no answer".to_string(),
            ))
        })
    }

    fn finish(
        &self,
        name: &'static str,
        uid: Option<u32>,
        started: Instant,
        result: Result<Bytes, Error>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        let elapsed_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(reply) => {
                self.stats.request_latency.record(started.elapsed());
                tracing::debug!(
                    method = name,
                    ?uid,
                    reply_bytes = reply.len(),
                    elapsed_us,
                    "answered"
                );
                Ok(tonic::Response::new(reply))
            }
            Err(error) => {
                bump(&self.stats.rejected_requests);
                tracing::debug!(method = name, ?uid, %error, "rejected");
                Err(error.into())
            }
        }
    }
}

/// Requests in flight per peer uid, for `max_requests_per_peer`.
#[derive(Default)]
pub struct PeerRequests {
    in_flight: std::sync::Mutex<std::collections::HashMap<Option<u32>, usize>>,
}

/// One admitted request; dropping it frees its place.
pub struct PeerPermit<'a> {
    requests: &'a PeerRequests,
    uid: Option<u32>,
}

impl PeerRequests {
    /// Requests in flight, all peers together.
    pub fn in_flight(&self) -> usize {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.values().sum()
    }

    fn admit<'a>(&'a self, uid: Option<u32>, limits: &LiveLimits) -> Result<PeerPermit<'a>, Error> {
        let limit = LiveLimits::get(&limits.max_requests_per_peer);
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let count = in_flight.entry(uid).or_default();
        if *count >= limit {
            return Err(Error::PeerLimit {
                uid: uid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string()),
                in_flight: *count,
                limit,
            });
        }
        *count += 1;
        Ok(PeerPermit {
            requests: self,
            uid,
        })
    }
}

impl Drop for PeerPermit<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .requests
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = in_flight.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.uid);
            }
        }
    }
}

/// The `finderd.v1.Finder` service for tonic's router.
#[derive(Clone)]
pub struct FinderService {
    finder: Arc<Finder>,
}

impl FinderService {
    pub fn new(finder: Finder) -> Self {
        Self {
            finder: Arc::new(finder),
        }
    }

    fn max_request_bytes(&self) -> usize {
        LiveLimits::get(&self.finder.limits.max_request_bytes)
    }

    async fn unary<Request, Body>(
        self,
        name: &'static str,
        handler: Handler<Request>,
        request: http::Request<Body>,
    ) -> http::Response<tonic::body::Body>
    where
        Request: Message + Default + Send + 'static,
        Body: http_body::Body + Send + 'static,
        Body::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let codec = WireCodec {
            stats: Arc::clone(&self.finder.stats),
            request: PhantomData,
        };
        let mut grpc =
            Grpc::new(codec).apply_max_message_size_config(Some(self.max_request_bytes()), None);
        let stats = Arc::clone(&self.finder.stats);
        let method = Method {
            name,
            finder: Arc::clone(&self.finder),
            handler,
        };
        let response = grpc.unary(method, request).await;
        self.over_size_limit(&response)
            .map(|status| {
                bump(&stats.rejected_requests);
                status.into_http()
            })
            .unwrap_or(response)
    }

    /// tonic refuses an over-long request with OUT_OF_RANGE; gRPC's
    /// convention (and every other limit here) is RESOURCE_EXHAUSTED, with a
    /// message naming the limit.
    fn over_size_limit(&self, response: &http::Response<tonic::body::Body>) -> Option<Status> {
        let status = Status::from_header_map(response.headers())?;
        (status.code() == Code::OutOfRange && status.message().contains("message length too large"))
            .then(|| {
                Status::resource_exhausted(format!(
                    "request body is over the limit max_request_bytes = {} ({})",
                    self.max_request_bytes(),
                    status.message()
                ))
            })
    }
}

impl NamedService for FinderService {
    const NAME: &'static str = "finderd.v1.Finder";
}

impl<Body> tower::Service<http::Request<Body>> for FinderService
where
    Body: http_body::Body + Send + 'static,
    Body::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.clone();
        match request.uri().path() {
            "/finderd.v1.Finder/Snapshot" => {
                Box::pin(
                    async move { Ok(service.unary("Snapshot", Finder::snapshot, request).await) },
                )
            }
            "/finderd.v1.Finder/Lookup" => {
                Box::pin(async move { Ok(service.unary("Lookup", Finder::lookup, request).await) })
            }
            "/finderd.v1.Finder/Stats" => {
                Box::pin(async move { Ok(service.unary("Stats", Finder::stats, request).await) })
            }
            "/finderd.v1.Finder/Report" => {
                Box::pin(async move { Ok(service.unary("Report", Finder::report, request).await) })
            }
            // Not reached through the route table, which routes declared
            // methods only; kept for a caller that serves this service alone.
            unknown => {
                let status = routes::unknown_method(unknown, Self::NAME);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_per_peer_limit_counts_each_uid_apart() {
        let mut config = crate::config::Config::resolve(Default::default()).expect("defaults");
        config.values.max_requests_per_peer = 1;
        let limits = LiveLimits::new(&config);
        let requests = PeerRequests::default();
        let first = requests.admit(Some(1000), &limits).expect("first");
        let refused = requests
            .admit(Some(1000), &limits)
            .err()
            .expect("second refused");
        let status = Status::from(refused);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "peer uid 1000 has 1 requests in flight, over the limit max_requests_per_peer = 1"
        );
        let _other = requests
            .admit(Some(1001), &limits)
            .expect("another uid is served");
        drop(first);
        let _again = requests.admit(Some(1000), &limits).expect("freed");
    }

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
