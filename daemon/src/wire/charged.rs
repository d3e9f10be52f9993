//! Bytes in flight charged to the peer's uid (`max_inflight_bytes_per_uid`,
//! `crate::policy::quota`): a request body as it arrives, before tonic
//! buffers it (so a peer holding many bodies one byte short of complete
//! pins no more than its share), and a reply until its body is dropped
//! (sent, or abandoned by the peer).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

use crate::policy::quota::Inflight;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body whose frames are charged as they arrive.
pub struct ChargedBody<B> {
    inner: Pin<Box<B>>,
    charge: Inflight,
}

impl<B> ChargedBody<B> {
    pub fn new(inner: B, charge: Inflight) -> Self {
        Self {
            inner: Box::pin(inner),
            charge,
        }
    }
}

impl<B> Body for ChargedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let bytes = frame.data_ref().map_or(0, |data| data.remaining() as u64);
        match self.charge.grow(bytes) {
            Ok(()) => Poll::Ready(Some(Ok(frame))),
            Err(over) => {
                let status = Status::resource_exhausted(over.to_string());
                Poll::Ready(Some(Err(Box::new(status))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a handler leaves the charge of its reply for the response body.
pub type Held = Arc<Mutex<Option<Inflight>>>;

/// A response body that keeps its reply charged until it is dropped.
pub struct HeldBody<B> {
    inner: Pin<Box<B>>,
    _charge: Option<Inflight>,
}

impl<B> HeldBody<B> {
    pub fn new(inner: B, held: &Held) -> Self {
        let charge = held.lock().unwrap_or_else(|e| e.into_inner()).take();
        Self {
            inner: Box::pin(inner),
            _charge: charge,
        }
    }
}

impl<B: Body> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
