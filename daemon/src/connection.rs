//! One client connection as the HTTP/2 server sees it: a Unix stream that
//! carries its peer's credentials (read once, at accept), counts itself as
//! open for `max_connections_per_peer`, drops a peer that stalls in the
//! middle of a frame, and gives the requests of standard gRPC clients an
//! `:authority` h2 accepts (`authority.rs`). A connection refused at accept
//! is answered with frames that name the limit. Its first message may be the
//! peer's view (`handshake.rs`, `crate::views`).

mod authority;
mod coalesce;
mod handshake;
mod hpack;

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::activity::OpenConnection;
use crate::policy::limits::Place;
use crate::policy::PeerInfo;
use crate::views::{PeerView, Views};
use authority::AuthorityFix;
use handshake::{First, Handshake};

/// A Unix stream with its peer's credentials read once, at accept, the
/// place it holds (for `max_connections_per_peer`) and the guard that
/// marks its close for `--idle-exit`.
pub struct PeerStream {
    stream: UnixStream,
    peer: PeerInfo,
    _place: Place,
    _open: OpenConnection,
    /// Where the peer is in the HTTP/2 byte stream, and the deadline of the
    /// preface or frame it has started and not finished.
    framing: Framing,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What h2 reads, when the peer's `:authority` needs rewriting.
    authority: AuthorityFix,
    /// The optional view message before the preface, and where views live.
    handshake: Handshake,
    views: Arc<Views>,
    /// What h2 wrote that the socket has not taken yet (see [`coalesce`]).
    out: coalesce::Coalesce,
}

/// Bytes read from the socket at a time while they pass through [`AuthorityFix`].
const REWRITE_READ_BYTES: usize = 16 * 1024;

/// How long a peer may take to finish the connection preface or a frame it
/// has started. A peer idle between frames (a long-lived interpreter) is
/// never timed out; one that stops in the middle of one (a hung or hostile
/// client) would otherwise hold its descriptor and task forever.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP/2 framing seen from the bytes a peer sent: the 24-byte preface,
/// then 9-byte frame headers (24-bit length first) and payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Preface { seen: usize },
    Header { seen: usize, length: u32 },
    Payload { left: u32 },
}

const PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;

impl Framing {
    const BOUNDARY: Framing = Framing::Header { seen: 0, length: 0 };

    /// Advances over bytes the peer sent.
    fn consume(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            *self = match *self {
                Framing::Preface { seen } => {
                    let take = (PREFACE_BYTES - seen).min(bytes.len());
                    bytes = &bytes[take..];
                    if seen + take == PREFACE_BYTES {
                        Self::BOUNDARY
                    } else {
                        Framing::Preface { seen: seen + take }
                    }
                }
                Framing::Header { seen, length } => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    let length = if seen < 3 {
                        length << 8 | u32::from(byte)
                    } else {
                        length
                    };
                    match seen + 1 {
                        FRAME_HEADER_BYTES if length == 0 => Self::BOUNDARY,
                        FRAME_HEADER_BYTES => Framing::Payload { left: length },
                        seen => Framing::Header { seen, length },
                    }
                }
                Framing::Payload { left } => {
                    let take = (left as usize).min(bytes.len());
                    bytes = &bytes[take..];
                    match left - take as u32 {
                        0 => Self::BOUNDARY,
                        left => Framing::Payload { left },
                    }
                }
            };
        }
    }

    /// Whether the peer is in the middle of the preface or of a frame.
    fn mid_frame(&self) -> bool {
        *self != Self::BOUNDARY
    }
}

impl PeerStream {
    /// A stream whose peer is `peer` (from [`peer_of`]), holding `place`,
    /// its opening marked by `open`; a view it passes is opened in `views`.
    pub fn new(
        stream: UnixStream,
        peer: PeerInfo,
        place: Place,
        open: OpenConnection,
        views: Arc<Views>,
    ) -> Self {
        Self {
            stream,
            peer,
            _place: place,
            _open: open,
            framing: Framing::Preface { seen: 0 },
            stall: None,
            authority: AuthorityFix::default(),
            handshake: Handshake::default(),
            views,
            out: coalesce::Coalesce::default(),
        }
    }

    /// Reads what the peer sent into @buf (after its view message), dropping
    /// a peer stalled mid-frame.
    fn poll_read_peer(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match self.poll_read_raw(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.framing.consume(&buf.filled()[before..]);
                if !self.framing.mid_frame() {
                    self.stall = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.framing.mid_frame() => {
                // One deadline per preface or frame, not reset by a trickle.
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_TIMEOUT)));
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::info!(
                    pid = self.peer.as_ref().and_then(|p| p.pid),
                    timeout_secs = STALL_TIMEOUT.as_secs(),
                    "peer stalled in the middle of a frame; connection dropped"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stalled in the middle of an HTTP/2 frame",
                )))
            }
            other => other,
        }
    }

    /// Reads through [`AuthorityFix`]: what it has ready, else more from the peer.
    fn poll_read_rewritten(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let ready = self.authority.ready_len().min(buf.remaining());
            if ready > 0 {
                let n = self.authority.read_into(buf.initialize_unfilled_to(ready));
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; REWRITE_READ_BYTES];
            let mut raw_buf = ReadBuf::new(&mut raw);
            match self.poll_read_peer(cx, &mut raw_buf) {
                Poll::Ready(Ok(())) if raw_buf.filled().is_empty() => {
                    self.authority.finish();
                    if self.authority.ready_len() == 0 {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                }
                Poll::Ready(Ok(())) => self.authority.feed(raw_buf.filled())?,
                other => return other,
            }
        }
    }

    /// Reads what the peer sent: first the optional view message (the
    /// view is attached to the peer before any request can be read), then
    /// HTTP/2 bytes, those of the first read that were not a view first.
    fn poll_read_raw(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.handshake.done() {
            match self.handshake.poll_first(cx, &self.stream) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(First::Plain)) => {}
                Poll::Ready(Ok(First::View(fd))) => self.attach(fd),
            }
        }
        if let Some(bytes) = self.handshake.take_replay(buf.remaining()) {
            buf.put_slice(bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }

    /// The peer passed `fd` as its view.
    fn attach(&self, fd: Option<OwnedFd>) {
        let Some(peer) = &self.peer else {
            return; // nothing is served to it anyway
        };
        let view = match fd {
            Some(fd) => self.views.attach(fd, Some(peer.uid)),
            None => PeerView::Refused("the view message carried no descriptor".to_string()),
        };
        peer.view.set(view);
    }
}

/// What a connection refused at accept is sent before it is closed: the
/// server preface (an empty SETTINGS frame) and a GOAWAY with
/// ENHANCE_YOUR_CALM whose debug data says why, so that the client's error
/// (and a packet capture) names the limit rather than a bare reset.
pub fn refusal_frames(why: &str) -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    // A frame may carry 16 KiB unless the peer said more; a reason is short.
    let why = &why.as_bytes()[..why.len().min(1024)];
    let mut frames = Vec::with_capacity(2 * FRAME_HEADER_BYTES + 8 + why.len());
    frame_header(&mut frames, SETTINGS, 0);
    frame_header(&mut frames, GOAWAY, 8 + why.len() as u32);
    frames.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none processed
    frames.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frames.extend_from_slice(why);
    frames
}

/// A 9-byte HTTP/2 frame header on stream 0, no flags.
fn frame_header(frames: &mut Vec<u8>, kind: u8, length: u32) {
    frames.extend_from_slice(&length.to_be_bytes()[1..]);
    frames.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
}

/// A connection in a view that closes keeps the view a while longer
/// (`view_linger_ms`), for the next interpreter of the same container.
impl Drop for PeerStream {
    fn drop(&mut self) {
        if let Some(PeerView::View(view)) = self.peer.as_ref().and_then(|peer| peer.view.get()) {
            self.views.linger(view);
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.authority.bypassed() {
            return this.poll_read_peer(cx, buf);
        }
        this.poll_read_rewritten(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.out.poll_flush(&mut this.stream, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.out.poll_write_out(&mut this.stream, cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.out.poll_write(&mut this.stream, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_server_preface_and_a_goaway_naming_the_limit() {
        let why = "peer uid 65534 holds 4 connections, the limit max_connections_per_peer = 4";
        let frames = refusal_frames(why);
        assert_eq!(frames[..9], [0, 0, 0, 4, 0, 0, 0, 0, 0], "empty SETTINGS");
        let goaway = &frames[9..];
        let length = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!(goaway[3..9], [7, 0, 0, 0, 0, 0], "GOAWAY on stream 0");
        assert_eq!(length, goaway.len() - 9);
        assert_eq!(goaway[9..13], [0, 0, 0, 0], "no stream processed");
        assert_eq!(goaway[13..17], [0, 0, 0, 0xb], "ENHANCE_YOUR_CALM");
        assert_eq!(&goaway[17..], why.as_bytes());
        assert_eq!(refusal_frames(&"x".repeat(5000)).len(), 9 + 9 + 8 + 1024);
    }

    #[test]
    fn framing_is_mid_frame_only_inside_the_preface_or_a_frame() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut framing = Framing::Preface { seen: 0 };
        assert!(framing.mid_frame());
        framing.consume(&preface[..16]);
        assert!(framing.mid_frame());
        framing.consume(&preface[16..]);
        assert!(!framing.mid_frame());
        // An empty SETTINGS frame, then a HEADERS frame of 0x000102 bytes
        // fed a byte at a time through its header.
        framing.consume(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(!framing.mid_frame());
        for byte in [0, 1, 2, 1, 4, 0, 0, 0] {
            framing.consume(&[byte]);
            assert!(framing.mid_frame());
        }
        framing.consume(&[1]);
        assert_eq!(framing, Framing::Payload { left: 0x102 });
        framing.consume(&[0; 0x101]);
        assert!(framing.mid_frame());
        // The last payload byte and the next frame's whole header at once.
        framing.consume(&[0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
        assert!(!framing.mid_frame());
    }
}
