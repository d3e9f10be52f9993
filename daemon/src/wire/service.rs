//! The `finderd.v1.Finder` service for tonic's router: one route per
//! method, the per-peer limit on requests in flight (a place taken from
//! `policy::limits`), inline first and the
//! blocking pool when the filesystem is needed, the request's deadline,
//! latency and rejections, and the codec (requests decode with prost;
//! replies are already encoded).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use super::charged::{ChargedBody, Held, HeldBody};
use super::check::decode_request;
use super::context::{Handled, Mode, Unanswered};
use super::learning::grpc_timeout;
use super::lookup::lookup;
use super::report::report;
use super::snapshot::snapshot;
use super::stats::stats;
use super::{routes, Error, Finder};
use crate::config::LiveLimits;
use crate::genfile::monotonic_ns;
use crate::policy::quota::Inflight;
use crate::policy::PeerInfo;
use crate::stats::{bump, Stats};

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

type Handler<Request> = fn(&Finder, &PeerInfo, &Request, Mode) -> Handled;

/// One unary method: takes the peer from the connection, enforces the
/// per-peer limit, answers inline when it can and on the blocking pool
/// otherwise, records latency and rejections.
struct Method<Request> {
    name: &'static str,
    finder: Arc<Finder>,
    handler: Handler<Request>,
    /// The reply's charge, for the response body to hold until it goes.
    held: Held,
}

impl<Request: Message + Send + Sync + 'static> UnaryService<Request> for Method<Request> {
    type Response = Bytes;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<Request>) -> Self::Future {
        let finder = Arc::clone(&self.finder);
        let (name, handler, held) = (self.name, self.handler, Arc::clone(&self.held));
        Box::pin(async move {
            let started = Instant::now();
            let arrived_ns = monotonic_ns();
            let peer: PeerInfo = request.extensions().get::<PeerInfo>().cloned().flatten();
            let uid = peer.as_ref().map(|p| p.uid);
            let deadline = deadline(&finder, started, request.metadata());
            finder.count_request(name, uid);
            let result = match finder.peers.requests.take(uid) {
                Ok(_place) => {
                    let message = request.into_inner();
                    let charged = finder.quotas.inflight(uid, message.encoded_len() as u64);
                    match charged {
                        Ok(charge) => {
                            let reply =
                                run(&finder, handler, peer, message, (deadline, arrived_ns)).await;
                            hold_reply(reply, charge, &held)
                        }
                        Err(over) => Err(Error::from(over)),
                    }
                }
                Err(over) => Err(Error::from(over)),
            };
            finder.finish(name, uid, started, result)
        })
    }
}

/// Charges a reply to its peer (with the request it answers) until the
/// response body that carries it is dropped.
fn hold_reply(
    reply: Result<Bytes, Error>,
    mut charge: Inflight,
    held: &Held,
) -> Result<Bytes, Error> {
    let reply = reply?;
    charge.grow(reply.len() as u64)?;
    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(charge);
    Ok(reply)
}

/// Requests larger than this are not tried inline: they would go over the
/// inline budget (`context::INLINE_BUDGET`) anyway, and trying would waste
/// that budget of the async worker. 64 KiB is a thousand typical paths.
const INLINE_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Inline first (when small enough); on the blocking pool when the inline
/// attempt needs the filesystem or goes over its budget. With a
/// `deadline`, a blocking attempt still running then is left to finish in
/// the background (its crawls stay in the index) and the request is
/// answered with what is indexed (`Mode::Deadline`).
async fn run<Request: Message + Send + Sync + 'static>(
    finder: &Arc<Finder>,
    handler: Handler<Request>,
    peer: PeerInfo,
    message: Request,
    (deadline, arrived_ns): (Option<tokio::time::Instant>, u64),
) -> Result<Bytes, Error> {
    if message.encoded_len() <= INLINE_MAX_REQUEST_BYTES {
        match handler(finder, &peer, &message, Mode::Inline) {
            Ok(reply) => return Ok(reply),
            Err(Unanswered::Rejected(error)) => return Err(error),
            Err(Unanswered::NeedsFilesystem | Unanswered::OverInlineBudget) => {}
        }
    }
    let message = Arc::new(message);
    let blocking = on_blocking_pool(finder, handler, &peer, &message, Mode::Blocking);
    let joined = match deadline {
        None => blocking.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, blocking).await {
            Ok(joined) => joined,
            Err(_elapsed) => {
                let mode = Mode::Deadline { arrived_ns };
                return at_deadline(finder, handler, &peer, &message, mode).await;
            }
        },
    };
    answered(joined.map_err(|error| Error::Internal(error.to_string()))?)
}

/// Runs the handler in `mode` on tokio's blocking pool.
fn on_blocking_pool<Request: Send + Sync + 'static>(
    finder: &Arc<Finder>,
    handler: Handler<Request>,
    peer: &PeerInfo,
    message: &Arc<Request>,
    mode: Mode,
) -> tokio::task::JoinHandle<Handled> {
    let (finder, peer, message) = (Arc::clone(finder), peer.clone(), Arc::clone(message));
    tokio::task::spawn_blocking(move || handler(&finder, &peer, &message, mode))
}

/// A handler's outcome where it may not ask for the filesystem again.
fn answered(handled: Handled) -> Result<Bytes, Error> {
    handled.map_err(|unanswered| match unanswered {
        Unanswered::Rejected(error) => error,
        Unanswered::NeedsFilesystem | Unanswered::OverInlineBudget => Error::Internal(
            "a handler off the async worker asked for the blocking pool".to_string(),
        ),
    })
}

/// Answers `message` in `Mode::Deadline`: only what is indexed. Inline
/// when it is small, so that a deadline is met even with every thread of
/// the blocking pool stuck on a hung filesystem; a large one on the pool, as
/// answering it from the index alone can still take longer than the async
/// worker may be held (`INLINE_BUDGET`).
async fn at_deadline<Request: Message + Send + Sync + 'static>(
    finder: &Arc<Finder>,
    handler: Handler<Request>,
    peer: &PeerInfo,
    message: &Arc<Request>,
    mode: Mode,
) -> Result<Bytes, Error> {
    bump(&finder.learning.deadline_replies);
    if message.encoded_len() <= INLINE_MAX_REQUEST_BYTES {
        return answered(handler(finder, peer, message, mode));
    }
    let joined = on_blocking_pool(finder, handler, peer, message, mode).await;
    answered(joined.map_err(|error| Error::Internal(error.to_string()))?)
}

/// When a request with this metadata must be answered: `deadline_percent`
/// of its `grpc-timeout` after it started. `None`: no timeout given.
fn deadline(
    finder: &Finder,
    started: Instant,
    metadata: &tonic::metadata::MetadataMap,
) -> Option<tokio::time::Instant> {
    let timeout = grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    let share = timeout.checked_mul(finder.learning.deadline_percent)? / 100;
    Some(tokio::time::Instant::from_std(started.checked_add(share)?))
}

impl Finder {
    fn count_request(&self, name: &str, uid: Option<u32>) {
        self.quotas.count(uid, |usage| usage.requests += 1);
        match name {
            "Snapshot" => bump(&self.stats.snapshot_requests),
            "Lookup" => bump(&self.stats.lookup_requests),
            _ => {}
        }
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
                self.quotas.count(uid, |usage| usage.rejected += 1);
                tracing::debug!(method = name, ?uid, %error, "rejected");
                Err(error.into())
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
        let uid = (request.extensions().get::<PeerInfo>())
            .and_then(|peer| peer.as_ref().map(|peer| peer.uid));
        let charge = match self.finder.quotas.inflight(uid, 0) {
            Ok(charge) => charge,
            Err(over) => {
                bump(&stats.rejected_requests);
                return Status::resource_exhausted(over.to_string()).into_http();
            }
        };
        let request = request.map(|body| ChargedBody::new(body, charge));
        let held = Held::default();
        let method = Method {
            name,
            finder: Arc::clone(&self.finder),
            handler,
            held: Arc::clone(&held),
        };
        let response = grpc.unary(method, request).await;
        match self.over_size_limit(&response) {
            Some(status) => {
                bump(&stats.rejected_requests);
                status.into_http()
            }
            None => response.map(|body| tonic::body::Body::new(HeldBody::new(body, &held))),
        }
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
                Box::pin(async move { Ok(service.unary("Snapshot", snapshot, request).await) })
            }
            "/finderd.v1.Finder/Lookup" => {
                Box::pin(async move { Ok(service.unary("Lookup", lookup, request).await) })
            }
            "/finderd.v1.Finder/Stats" => {
                Box::pin(async move { Ok(service.unary("Stats", stats, request).await) })
            }
            "/finderd.v1.Finder/Report" => {
                Box::pin(async move { Ok(service.unary("Report", report, request).await) })
            }
            // Any other path gets what the route table gives an unknown
            // one (the table itself routes only the four above here).
            unknown => {
                let status = routes::unknown_method(unknown, Self::NAME);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
