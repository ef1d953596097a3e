//! The TCP stream of both ends (client sessions and server connections), written without
//! `writev`.
//!
//! tokio-rustls (and tungstenite) write through `poll_write_vectored` when the stream says it
//! supports it, and tokio's `TcpStream` does it with `writev(2)`, which has no `MSG_NOSIGNAL`:
//! a write to a connection the peer has closed raises SIGPIPE, and a host process that does not
//! ignore SIGPIPE (a Swift app, any C program) is killed by it. Rust's own `write` on a socket is
//! `send(2)` with `MSG_NOSIGNAL` on Linux and Android, and the socket carries `SO_NOSIGPIPE` on
//! Apple platforms, so refusing vectored writes here makes every write of the session return
//! `EPIPE` as an error instead. The server wraps its accepted sockets too, for a server embedded
//! in such a process.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] whose vectored writes are single `send`s of their first non-empty slice.
pub struct NoSigpipe(pub TcpStream);

impl AsyncRead for NoSigpipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for NoSigpipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
