//! The client's connection after `101 Switching Protocols` (RFC 9110
//! §15.2.2): what a module that upgrades a request (a WebSocket handshake,
//! a reverse proxy passing one on) reads and writes from then on.
//!
//! IIS puts such a connection into opaque mode and lets its WebSocket
//! module read and write it beside the request; riis hands the module the
//! connection itself, as an [`UpgradedStream`], so reads and writes may
//! both be under way at once (a read waiting for the client must not hold
//! back what the other side sends). The engine does no I/O: the server
//! makes the stream and passes it in through
//! [`RequestExecution::set_upgraded_stream`](crate::RequestExecution::set_upgraded_stream)
//! when the 101 head is sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// A byte stream both ways: what an upgraded connection is underneath.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> UpgradedIo for T {}

/// The client's connection after the request's `101 Switching Protocols`
/// went out: the new protocol's bytes, read and written with tokio's
/// [`AsyncRead`] and [`AsyncWrite`].
///
/// The module gets it from [`HttpContext::take_upgraded_stream`]
/// (crate::HttpContext::take_upgraded_stream) once its flush of the 101
/// head completed, and keeps the request Pending while it uses the stream
/// (the request's LogRequest and EndRequest come after it is done).
/// Dropping the stream closes the connection; shutting it down ends what
/// the server sends (the client may still send).
///
/// The connection becomes the stream's once the server has written the
/// head: until then reads and writes wait. If the connection closed
/// before, they fail with [`io::ErrorKind::NotConnected`].
pub struct UpgradedStream {
    state: State,
}

enum State {
    /// The server has not handed the connection over yet.
    Waiting(oneshot::Receiver<Box<dyn UpgradedIo>>),
    Ready(Box<dyn UpgradedIo>),
    /// The connection closed before it was handed over.
    Gone,
}

impl std::fmt::Debug for UpgradedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting",
            State::Ready(_) => "ready",
            State::Gone => "gone",
        };
        f.debug_struct("UpgradedStream")
            .field("state", &state)
            .finish()
    }
}

impl UpgradedStream {
    /// A stream whose connection arrives through `connection` (for servers:
    /// the sender is kept by whatever hands the connection over once the
    /// 101 head is written, and dropped if it never can be).
    pub fn new(connection: oneshot::Receiver<Box<dyn UpgradedIo>>) -> Self {
        Self {
            state: State::Waiting(connection),
        }
    }

    /// The connection, waiting for it if it has not been handed over yet.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut Box<dyn UpgradedIo>>> {
        if let State::Waiting(rx) = &mut self.state {
            self.state = match ready!(Pin::new(rx).poll(cx)) {
                Ok(io) => State::Ready(io),
                Err(_) => State::Gone,
            };
        }
        match &mut self.state {
            State::Ready(io) => Poll::Ready(Ok(io)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection closed before it switched protocols",
            ))),
        }
    }
}

impl AsyncRead for UpgradedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let io = ready!(self.get_mut().poll_io(cx))?;
        Pin::new(io).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpgradedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let io = ready!(self.get_mut().poll_io(cx))?;
        Pin::new(io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = ready!(self.get_mut().poll_io(cx))?;
        Pin::new(io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Ready(io) => io.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = ready!(self.get_mut().poll_io(cx))?;
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = ready!(self.get_mut().poll_io(cx))?;
        Pin::new(io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_and_writes_wait_for_the_connection() {
        let (tx, rx) = oneshot::channel::<Box<dyn UpgradedIo>>();
        let mut stream = UpgradedStream::new(rx);
        let (ours, mut theirs) = tokio::io::duplex(64);
        let handing = tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(Box::new(ours));
        });
        stream.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        theirs.write_all(b"pong").await.unwrap();
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        handing.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_never_handed_over_fails_reads() {
        let (tx, rx) = oneshot::channel::<Box<dyn UpgradedIo>>();
        let mut stream = UpgradedStream::new(rx);
        drop(tx);
        let mut got = [0u8; 1];
        let e = stream.read(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    }
}
