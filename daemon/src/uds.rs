//! A gRPC channel to finderd over its Unix socket: the one connector of the
//! CLI (`stats`, `health`), the integration tests and the benchmark, which
//! include this file by path (the daemon crate has no library).

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The endpoint every channel starts from: its URI only names the
/// `:authority`, `localhost`, as the C client sends it (the daemon's
/// HTTP/2 server wants one; a socket path is not a host).
pub fn endpoint() -> Endpoint {
    Endpoint::from_static("http://localhost")
}

/// A channel to the daemon on `socket`, connected before it returns.
pub async fn connect(
    endpoint: Endpoint,
    socket: &Path,
) -> Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(Connector(socket.to_owned(), None))
        .await
}

/// A channel to the daemon on `socket` whose connections pass `root` as
/// their view (`crate::views`): paths are answered as beneath `root`.
#[allow(dead_code)] // the tests use it, the CLI does not
pub async fn connect_in_view(
    endpoint: Endpoint,
    socket: &Path,
    root: &Path,
) -> Result<Channel, tonic::transport::Error> {
    let connector = Connector(socket.to_owned(), Some(root.to_owned()));
    endpoint.connect_with_connector(connector).await
}

/// The view message (`crate::connection::handshake`): these 8 bytes, sent
/// with an `O_PATH` descriptor of the peer's root in `SCM_RIGHTS` before
/// the HTTP/2 preface.
pub const VIEW_MAGIC: [u8; 8] = *b"FDVIEW\x00\x01";

/// Sends the view message with `root` (a directory descriptor) on `socket`.
pub fn send_view(socket: RawFd, root: RawFd) -> std::io::Result<()> {
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: VIEW_MAGIC.as_ptr() as *mut libc::c_void,
        iov_len: VIEW_MAGIC.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    let size = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE is a pure computation.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(size) } as _;
    // SAFETY: the control buffer holds one header with room for one
    // descriptor (CMSG_SPACE above); CMSG_FIRSTHDR points into it.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(size) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), root);
    }
    // SAFETY: a socket and a msghdr whose buffers outlive the call.
    let sent = unsafe { libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) };
    match usize::try_from(sent) {
        Ok(n) if n == VIEW_MAGIC.len() => Ok(()),
        Ok(_) => Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
        Err(_) => Err(std::io::Error::last_os_error()),
    }
}

/// A channel to the daemon on `socket` that connects at its first call
/// (a refused connection is that call's error).
#[allow(dead_code)] // the tests use it, the CLI does not
pub fn connect_lazy(endpoint: Endpoint, socket: &Path) -> Channel {
    endpoint.connect_with_connector_lazy(Connector(socket.to_owned(), None))
}

/// Connects to one Unix socket, whatever the URI says; with a view, passes
/// it first.
#[derive(Clone)]
struct Connector(PathBuf, Option<PathBuf>);

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (socket, view) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let stream = UnixStream::connect(socket).await?;
            if let Some(root) = view {
                let root = std::fs::File::open(root)?;
                send_view(stream.as_raw_fd(), root.as_raw_fd())?;
            }
            Ok(TokioIo::new(stream))
        })
    }
}
