//! HTTP/1.1 connections that switch protocols: after a module's `101
//! Switching Protocols` (RFC 9110 §15.2.2, RFC 9112 §9.9), the connection
//! is lent to that module as its request's
//! [`UpgradedStream`](riis_pipeline::UpgradedStream).
//!
//! How a connection gets there:
//! 1. The driver sees the 101 head of a request that may switch (HTTP/1.1,
//!    an `Upgrade` header, no body) and registers the stream's end with
//!    the connection ([`ConnectionState::expect_upgrade`]).
//! 2. hyper writes the head and, as the request asked for an upgrade, ends
//!    its part of the connection without shutting it down.
//! 3. The connection's task then lends the socket, with the bytes hyper
//!    read past the request (the client may send at once), as a [`Lent`],
//!    and waits until the module drops it; then it closes the connection as
//!    it closes any other.
//!
//! A lent connection counts as in service: the keep-alive and header
//! timeouts do not apply, the send timeout does (a client that stops
//! reading), and so do the worker's drain and its deadline, which shut the
//! socket down under the module.
//!
//! Over HTTP/2 only a WebSocket switches, and only its stream does (RFC
//! 8441): the driver shows the module the HTTP/1.1 handshake, sends its
//! `101` as a `200`, and hyper hands over the stream ([`http2_stream`]),
//! which counts its connection in service while it is open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::connection::{ConnectionState, InService, IoState};

/// A connection lent to the module that switched it.
pub(crate) struct Lent<T> {
    io: Arc<Mutex<IoState<T>>>,
    /// Bytes read from the socket before the connection was lent.
    prefix: Bytes,
    conn: Arc<ConnectionState>,
    /// Keeps the connection counted in service while it is lent.
    _in_service: InService,
    /// Dropped with the stream: the connection's task then closes it.
    _returned: oneshot::Sender<()>,
}

impl<T> Lent<T> {
    /// Lends the connection of `io`, after the bytes of `prefix`; the
    /// returned receiver resolves once the stream is dropped.
    pub(crate) fn new(
        io: Arc<Mutex<IoState<T>>>,
        prefix: Bytes,
        conn: Arc<ConnectionState>,
    ) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let lent = Self {
            io,
            prefix,
            _in_service: conn.hold_in_service(),
            conn,
            _returned: tx,
        };
        (lent, rx)
    }

    fn state(&self) -> MutexGuard<'_, IoState<T>> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lent<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let mut state = this.state();
        if state.has_pending() {
            // The 101 head found the socket full: it goes before anything
            // the module writes, and a module that only reads must not
            // keep it back.
            let _ = state.poll_send_pending(cx, &this.conn.activity);
        }
        Pin::new(state.io_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> Lent<T> {
    /// Writes with `write` once the head has gone out.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let activity = &self.conn.activity;
        let mut state = self.state();
        if state.has_pending() {
            ready!(state.poll_send_pending(cx, activity))?;
        }
        let written = write(Pin::new(state.io_mut()), cx);
        match &written {
            Poll::Ready(Ok(n)) => activity.lent_write(Some(*n)),
            Poll::Pending => activity.lent_write(None),
            Poll::Ready(Err(_)) => {}
        }
        written
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lent<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.state().io_mut().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        ready!(state.poll_send_pending(cx, &self.conn.activity))?;
        Pin::new(state.io_mut()).poll_flush(cx)
    }

    /// Ends what the server sends (TCP's FIN, TLS's close_notify first);
    /// the client may still send.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        ready!(state.poll_send_pending(cx, &self.conn.activity))?;
        Pin::new(state.io_mut()).poll_shutdown(cx)
    }
}

/// The stream of a WebSocket over HTTP/2, once hyper has sent the `200`
/// that answers its extended CONNECT: the request's
/// [`UpgradedStream`](riis_pipeline::UpgradedStream). The connection counts
/// in service (`in_service`) as long as the module holds the stream, so an
/// open WebSocket is not taken for an idle connection.
pub(crate) fn http2_stream(
    upgrade: hyper::upgrade::OnUpgrade,
    in_service: InService,
) -> riis_pipeline::UpgradedStream {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        // An error: the stream was reset, or the 200 never went out; the
        // module's stream then reports the connection gone.
        if let Ok(upgraded) = upgrade.await {
            let _ = tx.send(Box::new(Http2Upgraded {
                io: hyper_util::rt::TokioIo::new(upgraded),
                send_timeout: in_service.send_timeout(),
                stalled: None,
                _in_service: in_service,
            }) as Box<dyn riis_pipeline::UpgradedIo>);
        }
    });
    riis_pipeline::UpgradedStream::new(rx)
}

/// A WebSocket's HTTP/2 stream, as tokio's reads and writes.
///
/// A client that gives the stream no flow-control window for
/// `timeouts.send` fails the write that waits for it (`TimedOut`), as a
/// lent HTTP/1.1 connection's client that stops reading meets the send
/// timeout: the module then ends its side (ReverseProxy closes the
/// server's connection) rather than hold it for its own idle timeout.
struct Http2Upgraded {
    io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    /// `timeouts.send`.
    send_timeout: Option<std::time::Duration>,
    /// Since a write first waited for window, the deadline it meets.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Keeps the connection counted in service while the stream is open.
    _in_service: InService,
}

impl Http2Upgraded {
    /// `written`, a write's (or flush's) outcome, held to the send
    /// timeout: waiting starts the clock, progress stops it.
    fn held_to_send_timeout<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !written.is_pending() {
            self.stalled = None;
            return written;
        }
        let Some(limit) = self.send_timeout else {
            return written;
        };
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client gave the stream no window for timeouts.send",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Http2Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Http2Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.held_to_send_timeout(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        self.held_to_send_timeout(cx, flushed)
    }

    /// Ends the stream's sending half (END_STREAM); the client may still
    /// send.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
