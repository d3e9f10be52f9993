//! A gRPC channel to finderd over its Unix socket: the one connector of the
//! CLI (`stats`, `health`), the integration tests and the benchmark, which
//! include this file by path (the daemon crate has no library).

use std::future::Future;
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
        .connect_with_connector(Connector(socket.to_owned()))
        .await
}

/// A channel to the daemon on `socket` that connects at its first call
/// (a refused connection is that call's error).
#[allow(dead_code)] // the tests use it, the CLI does not
pub fn connect_lazy(endpoint: Endpoint, socket: &Path) -> Channel {
    endpoint.connect_with_connector_lazy(Connector(socket.to_owned()))
}

/// Connects to one Unix socket, whatever the URI says.
#[derive(Clone)]
struct Connector(PathBuf);

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let socket = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(socket).await?)) })
    }
}
