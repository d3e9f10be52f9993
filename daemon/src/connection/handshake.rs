//! The optional first message of a connection, before the HTTP/2 preface:
//! a client passes its view (an `O_PATH` descriptor of its root directory,
//! see `crate::views`) with `SCM_RIGHTS`, on the 8 bytes [`MAGIC`] sent in
//! one `sendmsg`. A standard gRPC client sends the preface at once; its
//! first byte (`P`) is not [`MAGIC`]'s, so whatever the first read took is
//! handed to HTTP/2 as if nothing had happened, and that peer has no view.
//!
//! The first read is a `recvmsg` of exactly 8 bytes: the kernel hands a
//! descriptor over with the bytes it came with, so a view message is always
//! read whole with its descriptor. Any descriptors beyond the first are
//! closed; descriptors sent later (with HTTP/2 bytes, which are read with
//! `read`) are closed by the kernel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::UnixStream;

/// The view message: "FDVIEW", a zero byte, the message version.
pub use crate::uds::VIEW_MAGIC as MAGIC;

/// What the first message said.
#[derive(Debug)]
pub enum First {
    /// A view message, with its descriptor (`None`: it carried none).
    View(Option<OwnedFd>),
    /// Not a view message: the peer speaks HTTP/2 from its first byte.
    Plain,
}

/// Where a connection is in its first message.
#[derive(Debug, Default)]
pub struct Handshake {
    done: bool,
    /// Bytes the first read took that belong to HTTP/2, and how many of
    /// them were handed on.
    replay: [u8; 8],
    replay_len: usize,
    replayed: usize,
}

impl Handshake {
    pub fn done(&self) -> bool {
        self.done
    }

    /// Reads the first message. Ready once it is read (or the stream ended).
    pub fn poll_first(
        &mut self,
        cx: &mut Context<'_>,
        stream: &UnixStream,
    ) -> Poll<io::Result<First>> {
        loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            let mut bytes = [0u8; 8];
            let received = stream.try_io(Interest::READABLE, || {
                receive(stream.as_raw_fd(), &mut bytes)
            });
            let (len, fd) = match received {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            };
            self.done = true;
            if len > 0 && bytes[0] == MAGIC[0] {
                if bytes[..len] != MAGIC {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a first message that is neither a view nor HTTP/2",
                    )));
                }
                return Poll::Ready(Ok(First::View(fd)));
            }
            // Not ours: any descriptor that came with it is closed (dropped).
            drop(fd);
            self.replay = bytes;
            self.replay_len = len;
            return Poll::Ready(Ok(First::Plain));
        }
    }

    /// The bytes of the first read that HTTP/2 has not had yet, at most
    /// `room` of them.
    pub fn take_replay(&mut self, room: usize) -> Option<&[u8]> {
        let left = self.replay_len - self.replayed;
        if left == 0 || room == 0 {
            return None;
        }
        let take = left.min(room);
        let start = self.replayed;
        self.replayed += take;
        Some(&self.replay[start..start + take])
    }
}

/// One `recvmsg` of up to `bytes.len()` bytes, with room for one
/// descriptor (close-on-exec). Returns the byte count and the descriptor.
fn receive(fd: RawFd, bytes: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    // Room for one int of SCM_RIGHTS, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: a valid socket and a msghdr whose buffers outlive the call.
    let len = unsafe { libc::recvmsg(fd, &mut message, libc::MSG_CMSG_CLOEXEC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = None;
    // SAFETY: the msghdr was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk
    // within msg_control and msg_controllen.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    while !header.is_null() {
        // SAFETY: a non-null header within the control buffer.
        let cmsg = unsafe { &*header };
        if cmsg.cmsg_level == libc::SOL_SOCKET && cmsg.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure computation.
            let empty = unsafe { libc::CMSG_LEN(0) } as usize;
            let count =
                (cmsg.cmsg_len as usize).saturating_sub(empty) / std::mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: the data holds `count` descriptors (possibly
                // unaligned), each now ours to own.
                let raw = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>().add(i))
                };
                // SAFETY: a descriptor the kernel just installed for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        header = unsafe { libc::CMSG_NXTHDR(&message, header) };
    }
    Ok((len as usize, received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdStream;

    /// A connected pair: the client's end, and the daemon's as tokio has it.
    fn pair() -> (StdStream, UnixStream) {
        let (client, server) = StdStream::pair().expect("pair");
        server.set_nonblocking(true).expect("nonblocking");
        (client, UnixStream::from_std(server).expect("tokio"))
    }

    async fn first_of(stream: &UnixStream, handshake: &mut Handshake) -> io::Result<First> {
        std::future::poll_fn(|cx| handshake.poll_first(cx, stream)).await
    }

    #[tokio::test]
    async fn a_view_message_brings_its_descriptor() {
        let (client, server) = pair();
        let root = std::fs::File::open("/").expect("open /");
        crate::uds::send_view(client.as_raw_fd(), root.as_raw_fd()).expect("send");
        std::io::Write::write_all(&mut &client, b"PRI * HTTP/2.0").expect("write");
        let mut handshake = Handshake::default();
        let First::View(Some(fd)) = first_of(&server, &mut handshake).await.expect("read") else {
            panic!("no view");
        };
        let (a, b) = (
            std::fs::metadata("/").expect("stat"),
            crate::walk::fstat(&fd).expect("fstat"),
        );
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&a), b.st_ino);
        assert!(
            handshake.take_replay(100).is_none(),
            "the magic is not HTTP/2"
        );
    }

    #[tokio::test]
    async fn a_plain_preface_is_handed_on_whole() {
        let (client, server) = pair();
        std::io::Write::write_all(&mut &client, b"PRI * HTTP/2.0\r\n").expect("write");
        let mut handshake = Handshake::default();
        assert!(matches!(
            first_of(&server, &mut handshake).await.expect("read"),
            First::Plain
        ));
        assert_eq!(handshake.take_replay(3), Some(&b"PRI"[..]));
        assert_eq!(handshake.take_replay(100), Some(&b" * HT"[..]));
        assert_eq!(handshake.take_replay(100), None);
    }

    #[tokio::test]
    async fn a_wrong_message_is_an_error() {
        let (client, server) = pair();
        std::io::Write::write_all(&mut &client, b"FDVIEWxx").expect("write");
        let mut handshake = Handshake::default();
        assert!(first_of(&server, &mut handshake).await.is_err());
    }
}
