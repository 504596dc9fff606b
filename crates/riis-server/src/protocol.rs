//! One accepted connection from its first byte to its close: which HTTP
//! version it speaks (ALPN on TLS, the HTTP/2 preface on cleartext), hyper
//! driving it, and the timeouts and drain that end it.
//!
//! **Parking.** An HTTP/1.x connection that waits for its next request keeps
//! no hyper state. A hyper connection holds a read buffer, a header write
//! buffer and its dispatcher (about 20 KiB) for as long as it lives; with
//! thousands of idle keep-alive clients that would be most of the server's
//! memory. So once a connection has answered everything it was sent (no
//! request in service, every response byte taken by the socket, nothing
//! read since), riis ends hyper's connection, takes back the socket and any
//! bytes hyper had read ahead, and waits for the socket to become readable
//! holding nothing else; the next request gets a fresh hyper connection.
//! nginx gives back its request buffers on keep-alive the same way. HTTP/2
//! connections stay with hyper throughout (their state is per connection
//! anyway, and they multiplex).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::h2_streams::StreamExecutor;
use riis_pipeline::ConnectionInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::ResponseBody;
use crate::config::Limits;
use crate::connection::{
    finish_connection, AbortiveClose, Activity, Admission, ConnectionCounter, ConnectionState,
    Expiry, Flushing, IoState, Lingering, ParserHold, Sendfile, SharedIo, Sweeper, UpgradeSender,
    WaitReadable,
};
use crate::driver::{handle, CurrentGeneration, NoResponse, ReplyFuture};
use crate::strict::{parse_error_response, Refusal};
use crate::upgrade::Lent;

/// What a worker's accept loops share.
pub(crate) struct Serving {
    /// The configuration new requests use.
    pub current: CurrentGeneration,
    /// Open connections, server-wide.
    pub counter: Arc<ConnectionCounter>,
    /// The worker's connection sweeper.
    pub sweeper: Arc<Sweeper>,
}

/// Streams a client may open and cancel before the server has taken them
/// up, on one HTTP/2 connection, before it gets GOAWAY (h2's default).
const RAPID_RESET_LIMIT: usize = 20;

/// Streams the server may reset for a client's protocol errors on one
/// HTTP/2 connection before it ends the connection (h2's default).
const LOCAL_RESET_LIMIT: usize = 1024;

/// hyper's connection settings, made once per worker from `[limits]`.
pub(crate) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
}

impl Builders {
    /// The settings for `limits`.
    pub fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .keep_alive(true)
            // Header and idle timeouts are the sweeper's (one pass a second
            // for all connections), not a hyper timer armed per request.
            .header_read_timeout(None)
            // The queue write strategy passes body slices through unchanged,
            // which the sendfile placeholders rely on.
            .writev(true)
            .max_headers(limits.max_header_count)
            .max_buf_size((limits.max_header_bytes + limits.max_request_line()).max(8192))
            // Not hyper's `pipeline_flush`: with it hyper 1.12 keeps a
            // response in its buffer while unread request bytes remain, and
            // loses it when the connection then ends (every automatic 400,
            // and responses to requests whose body it could not drain). riis
            // gathers the writes of one task turn itself (`IoState`), which
            // batches pipelined responses the same way and never strands
            // bytes.
            .pipeline_flush(false);
        let mut http2 = http2::Builder::new(StreamExecutor);
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .initial_stream_window_size(limits.http2_initial_stream_window_size)
            .initial_connection_window_size(limits.http2_initial_connection_window_size)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            // Rapid reset (CVE-2023-44487): a client that opens streams and
            // cancels them before they are answered gets GOAWAY
            // (ENHANCE_YOUR_CALM); set here so the defence does not depend
            // on a dependency's default.
            .max_pending_accept_reset_streams(RAPID_RESET_LIMIT)
            // What a stream may queue beyond the client's reading: hyper's
            // default of 400 KiB let a client that opens its windows wide
            // and never reads hold that much per stream (128 streams of
            // large files: 50 MiB a connection).
            .max_send_buf_size(H2_MAX_SEND_BUFFER)
            .max_local_error_reset_streams(LOCAL_RESET_LIMIT)
            // WebSockets over HTTP/2 (RFC 8441): browsers open them on a
            // connection they already have when the server says it can.
            .enable_connect_protocol();
        Self { http1, http2 }
    }
}

/// Logs, at most once a second, an HTTP/2 connection riis ended with a
/// GOAWAY for an error of the client's (a rapid reset, a flood of resets,
/// a broken frame), naming the client. h2 logs these itself, once per
/// connection and without the client, which a log filter of `h2=error`
/// (riis's default) keeps out.
fn log_own_goaway(e: &hyper::Error, peer: SocketAddr) {
    let mut source = std::error::Error::source(e);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            let reason = h2.reason().filter(|r| *r != h2::Reason::NO_ERROR);
            if let (true, false, Some(reason)) = (h2.is_go_away(), h2.is_remote(), reason) {
                use std::sync::atomic::Ordering;
                if crate::server::first_this_second(&GOAWAY_LOGGED) {
                    // How many went unlogged since the last line: a flood
                    // shows as one, with its size.
                    let held_back = GOAWAY_HELD_BACK.swap(0, Ordering::Relaxed);
                    tracing::warn!(%peer, ?reason, held_back, "HTTP/2 connection closed with GOAWAY");
                } else {
                    GOAWAY_HELD_BACK.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, ?reason, "HTTP/2 connection closed with GOAWAY");
                }
            }
            return;
        }
        source = error.source();
    }
}

/// The second (since the epoch) of the last GOAWAY logged at `warn`.
static GOAWAY_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Connections closed with GOAWAY since the last one logged at `warn`.
static GOAWAY_HELD_BACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How much response data an HTTP/2 stream queues for a client that does
/// not read: four of the pieces bodies are handed over in.
const H2_MAX_SEND_BUFFER: usize = 64 * 1024;

/// Which HTTP version a connection speaks, when the transport already says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// Cleartext, or TLS without ALPN: the first bytes decide.
    Unknown,
    /// ALPN chose `http/1.1`.
    Http1,
    /// ALPN chose `h2`.
    Http2,
}

/// The connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The hyper service of one connection.
#[derive(Clone)]
struct Service(Arc<ConnectionState>);

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ResponseBody>;
    type Error = NoResponse;
    type Future = ReplyFuture;

    fn call(&self, req: Request<Incoming>) -> ReplyFuture {
        handle(&self.0, req)
    }
}

/// The socket with bytes already read from it put back in front.
struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(n));
        if self.prefix.is_empty() {
            // Let go of the buffer the bytes came in.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The transports riis serves: plain TCP and TLS over it.
pub(crate) trait Socket:
    AsyncRead + AsyncWrite + Sendfile + WaitReadable + AbortiveClose + Unpin + Send + 'static
{
}

impl<
        T: AsyncRead + AsyncWrite + Sendfile + WaitReadable + AbortiveClose + Unpin + Send + 'static,
    > Socket for T
{
}

type Http1Connection<I> = http1::Connection<TokioIo<Rewind<SharedIo<I>>>, Service>;
type Http2Connection<I> =
    Flushing<http2::Connection<TokioIo<Rewind<SharedIo<I>>>, Service, StreamExecutor>, I>;

/// Why a connection's serving ended.
enum End {
    /// hyper finished the connection (the client closed, `Connection:
    /// close`, an error).
    Hyper(Result<(), hyper::Error>),
    /// The sweeper expired it.
    Expired(Expiry),
    /// The worker drained while the connection was idle.
    Drained,
    /// The client closed, or reading failed, while no request was under way.
    Closed,
}

/// Serves one accepted connection in a task of its own until it ends, a
/// timeout expires it, or the worker drains; then answers what hyper could
/// not and closes gracefully.
pub(crate) fn serve_connection<I: Socket>(
    io: I,
    info: ConnectionInfo,
    listener: SocketAddr,
    admission: Admission,
    negotiated: Negotiated,
    serving: &Arc<Serving>,
) {
    // File bytes go out with sendfile on plain connections (TLS records
    // are built in user space).
    let plain = !info.is_tls;
    let state = Arc::new(ConnectionState::new(
        serving.current.clone(),
        listener,
        Arc::new(info),
        plain,
    ));
    serving.sweeper.track(state.clone());
    let (io, shared) = SharedIo::new(io, state.clone());
    let service = Service(state.clone());
    let generation = serving.current.load();
    let phase = match negotiated {
        Negotiated::Unknown => Phase::Sniff(io, service, BytesMut::new()),
        // A new TLS connection is served at once: rustls may already hold
        // the first request, read together with the handshake.
        Negotiated::Http1 => Phase::Http1(Http1Session::start(
            &generation.builders.http1,
            &serving.sweeper,
            io,
            service,
            Bytes::new(),
        )),
        Negotiated::Http2 => Phase::Http2(
            start_http2(&generation.builders, io, service, Bytes::new(), &shared),
            false,
        ),
    };
    tokio::spawn(ConnectionTask::Open(Open {
        serving: serving.clone(),
        shared,
        state,
        admission,
        phase,
    }));
}

/// A connection's task. Written out by hand rather than as an `async` block
/// so that what every idle connection keeps is exactly the fields below
/// (an `async` block would reserve room for its largest await point).
enum ConnectionTask<I: Socket> {
    /// Serving.
    Open(Open<I>),
    /// Answering what hyper could not, and closing.
    Closing(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// A connection being served.
struct Open<I: Socket> {
    serving: Arc<Serving>,
    shared: Arc<Mutex<IoState<I>>>,
    state: Arc<ConnectionState>,
    admission: Admission,
    phase: Phase<I>,
}

/// Where a connection is in its life.
enum Phase<I: Socket> {
    /// A cleartext connection's first bytes decide its HTTP version.
    Sniff(SharedIo<I>, Service, BytesMut),
    /// HTTP/1.x, with hyper or parked.
    Http1(Http1Session<I>),
    /// HTTP/2 with hyper; the flag is set once the drain began.
    Http2(Pin<Box<Http2Connection<I>>>, bool),
    /// Between phases.
    Moving,
}

impl<I: Socket> Future for ConnectionTask<I> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let end = match this {
            ConnectionTask::Closing(closing) => return closing.as_mut().poll(cx),
            ConnectionTask::Open(open) => ready!(open.poll(cx)),
        };
        let ConnectionTask::Open(open) = std::mem::replace(
            this,
            ConnectionTask::Closing(Box::pin(std::future::ready(()))),
        ) else {
            return Poll::Ready(());
        };
        *this = ConnectionTask::Closing(Box::pin(open.close(end)));
        Pin::new(this).poll(cx)
    }
}

impl<I: Socket> Open<I> {
    /// Serves until the connection ends.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let signal = self.state.activity.poll_signal(cx);
        if let Some(e) = signal.expired {
            return Poll::Ready(End::Expired(e));
        }
        loop {
            match &mut self.phase {
                Phase::Sniff(io, _, got) => {
                    if signal.draining {
                        return Poll::Ready(End::Drained);
                    }
                    let http2 = match ready!(poll_sniff(io, got, cx)) {
                        Ok(Some(http2)) => http2,
                        Ok(None) | Err(_) => return Poll::Ready(End::Closed),
                    };
                    let Phase::Sniff(io, service, got) =
                        std::mem::replace(&mut self.phase, Phase::Moving)
                    else {
                        return Poll::Ready(End::Closed);
                    };
                    let generation = self.serving.current.load();
                    let builders = &generation.builders;
                    self.phase = if http2 {
                        Phase::Http2(
                            start_http2(builders, io, service, got.freeze(), &self.shared),
                            false,
                        )
                    } else {
                        Phase::Http1(Http1Session::start(
                            &builders.http1,
                            &self.serving.sweeper,
                            io,
                            service,
                            got.freeze(),
                        ))
                    };
                }
                Phase::Http1(session) => {
                    if signal.draining && !session.closing && !session.drain() {
                        return Poll::Ready(End::Drained);
                    }
                    let serving = &self.serving;
                    return session.poll(cx, serving, &self.shared, &self.state);
                }
                Phase::Http2(conn, drained) => {
                    if signal.draining && !*drained {
                        // GOAWAY; the streams under way finish.
                        *drained = true;
                        conn.as_mut().get_mut().inner_mut().graceful_shutdown();
                    }
                    return conn.as_mut().poll(cx).map(End::Hyper);
                }
                Phase::Moving => return Poll::Ready(End::Closed),
            }
        }
    }

    /// Answers what hyper could not, then closes gracefully.
    async fn close(self, end: End) {
        let Open {
            shared,
            state,
            admission,
            phase,
            ..
        } = self;
        let activity = &state.activity;
        // Requests still running on it (a module's own thread, a wait being
        // abandoned) learn that the client is gone.
        state.connection.mark_closed();
        // A module waiting for the connection after a 101 hyper never
        // finished learns that it is gone.
        drop(state.take_upgrade());
        // A refusal below is HTTP/1.1 text: never written into HTTP/2.
        let http1 = !matches!(phase, Phase::Http2(..));
        // hyper's handle on the socket goes first. The connection counts
        // against the limits until it is closed, lingering included, so
        // connections closed in a flood cannot pile up beyond them.
        drop(phase);
        // The read that saw a request line over the limit ended the
        // connection (in hyper, or while sniffing the protocol).
        let line_too_long = shared.lock().is_ok_and(|io| io.request_line_refused());
        // Drained while idle (the server stops, or a worker retires): a
        // connection that never had a request has no response to protect
        // (a preconnected socket), and one that had only its last response
        // possibly still in the send buffer: neither may hold the stop for
        // the whole lingering timeout.
        // The same for one the sweeper closes while it drains (an idle
        // HTTP/2 connection whose client never answered the GOAWAY's PING).
        let went_away = match end {
            End::Drained => true,
            // Also one that finished while it drained (an HTTP/2
            // connection whose GOAWAY the client answered).
            End::Expired(_) | End::Hyper(Ok(())) => activity.is_draining(),
            _ => false,
        };
        let lingering = if line_too_long || !went_away {
            Lingering::Full
        } else if activity.requests_started() == 0 {
            Lingering::None
        } else {
            Lingering::Brief
        };
        let refusal = match end {
            _ if line_too_long => Some(Refusal {
                status: http::StatusCode::URI_TOO_LONG,
                reason: "the request target is longer than limits.max_url_length",
            }),
            End::Expired(expiry) => {
                tracing::debug!(?expiry, "connection timed out");
                // Not while the bytes that timed out may be the rest of a
                // request body being discarded rather than a head.
                (expiry == Expiry::HeaderRead
                    && activity.nothing_sent_for_request()
                    && !activity.request_body_unread())
                .then_some(Refusal {
                    status: http::StatusCode::REQUEST_TIMEOUT,
                    reason: "the request head did not arrive within timeouts.header_read",
                })
            }
            End::Hyper(Err(e)) => {
                tracing::debug!(error = %e, "connection ended with an error");
                log_own_goaway(&e, state.connection.remote_addr);
                if let Some(status) = crate::strict::answered_by_hyper(&e) {
                    let reason = format!("a malformed request head ({e})");
                    crate::strict::note_refusal(
                        state.connection.remote_addr,
                        status,
                        &reason,
                        None,
                    );
                }
                // hyper answers a malformed head itself; what it gives up on
                // without a word is answered here, while nothing was sent for
                // the request (a malformed chunked body whose response began
                // cannot be).
                parse_error_response(&e).filter(|_| activity.nothing_sent_for_request())
            }
            End::Hyper(Ok(())) | End::Drained | End::Closed => None,
        };
        if let Some(r) = refusal.as_ref().filter(|_| http1) {
            crate::strict::note_refusal(state.connection.remote_addr, r.status, r.reason, None);
        }
        finish_connection(
            shared,
            refusal.filter(|_| http1),
            activity.aborts(),
            lingering,
        )
        .await;
        drop(admission);
    }
}

/// Reads a new cleartext connection's first bytes into `got`: the HTTP/2
/// preface selects HTTP/2, anything else HTTP/1.x. `None`: the client
/// closed before sending a byte.
fn poll_sniff<I: Socket>(
    io: &mut SharedIo<I>,
    got: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<bool>>> {
    loop {
        let mut buf = [0u8; 2048];
        let mut rb = ReadBuf::new(&mut buf);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
        if rb.filled().is_empty() {
            return Poll::Ready(Ok((!got.is_empty()).then_some(false)));
        }
        got.extend_from_slice(rb.filled());
        let n = got.len().min(HTTP2_PREFACE.len());
        if got[..n] != HTTP2_PREFACE[..n] {
            return Poll::Ready(Ok(Some(false)));
        }
        if n == HTTP2_PREFACE.len() {
            return Poll::Ready(Ok(Some(true)));
        }
    }
}

/// hyper's HTTP/2 connection on `io`, after the bytes of `prefix`.
fn start_http2<I: Socket>(
    builders: &Builders,
    io: SharedIo<I>,
    service: Service,
    prefix: Bytes,
    shared: &Arc<Mutex<IoState<I>>>,
) -> Pin<Box<Http2Connection<I>>> {
    let state = service.0.clone();
    state.activity.set_http2();
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stop_framing_watch(&prefix);
    let conn = builders
        .http2
        .serve_connection(TokioIo::new(Rewind { prefix, inner: io }), service);
    Box::pin(Flushing::new(conn, shared.clone(), state))
}

/// [`Http1Session::hold`] when nothing holds parking back.
const NO_HOLD: u64 = u64::MAX;

/// An HTTP/1.x connection: hyper serving it, or parked between requests.
struct Http1Session<I: Socket> {
    stage: Stage<I>,
    /// Bytes read from the socket that hyper has not seen yet.
    prefix: Bytes,
    /// No parking until a request starts after this count: hyper was handed
    /// read-ahead bytes (a partial request head) it has to finish first.
    /// [`NO_HOLD`] when there is none. (A plain `u64`, and `ended` below in
    /// two fields, so that the task every connection keeps fits in a
    /// 256-byte allocation: with an `Option` each it took 384.)
    hold: u64,
    /// hyper ends the connection after the exchange under way.
    closing: bool,
    /// hyper is done, with this result, and the bytes it wrote last are
    /// still going out: the session ends once they are sent (the sweeper's
    /// `timeouts.send` watches a client that does not take them).
    ended: bool,
    /// The error hyper ended with, when `ended`.
    ended_with: Option<hyper::Error>,
}

enum Stage<I: Socket> {
    /// Waiting for the next request with the socket and the service only.
    Parked(SharedIo<I>, Service),
    /// hyper serves the connection (counted among the worker's parsers).
    Serving {
        conn: Box<Http1Connection<I>>,
        /// Given back when the stage ends.
        _parser: ParserHold,
    },
    /// Lent to the module that switched it with a 101 (see
    /// [`crate::upgrade`]), until the module drops it.
    Lent(tokio::sync::oneshot::Receiver<()>),
    /// Between stages.
    Moving,
}

impl<I: Socket> Http1Session<I> {
    /// hyper serving `io`, after the bytes of `prefix`.
    fn start(
        builder: &http1::Builder,
        sweeper: &Arc<Sweeper>,
        io: SharedIo<I>,
        service: Service,
        prefix: Bytes,
    ) -> Self {
        let mut session = Self {
            stage: Stage::Parked(io, service),
            prefix,
            hold: NO_HOLD,
            closing: false,
            ended: false,
            ended_with: None,
        };
        session.resume(builder, sweeper);
        session
    }

    /// The worker drains: `false` if the connection is parked (it can close
    /// at once); otherwise hyper closes after the exchange under way, and a
    /// lent connection when its module is done with it (or at the drain's
    /// deadline).
    fn drain(&mut self) -> bool {
        match &mut self.stage {
            Stage::Serving { conn, .. } => {
                Pin::new(&mut **conn).graceful_shutdown();
                self.closing = true;
                true
            }
            Stage::Lent(_) => {
                self.closing = true;
                true
            }
            _ => false,
        }
    }

    /// Serves until the connection ends.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        serving: &Serving,
        shared: &Arc<Mutex<IoState<I>>>,
        state: &Arc<ConnectionState>,
    ) -> Poll<End> {
        let activity = &state.activity;
        loop {
            if self.ended {
                // Sent, or the client is gone: either way the session ends.
                let _ = ready!(shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .poll_send_pending(cx, activity));
                self.ended = false;
                return Poll::Ready(End::Hyper(self.ended_with.take().map_or(Ok(()), Err)));
            }
            let conn = match &mut self.stage {
                Stage::Serving { conn, .. } => conn,
                Stage::Parked(io, _) => {
                    if self.prefix.is_empty() && ready!(io.poll_wait_readable(cx)).is_err() {
                        return Poll::Ready(End::Closed);
                    }
                    activity.set_parked(false);
                    // The configuration of the moment: a reload's limits
                    // apply to kept-alive connections from their next
                    // request.
                    self.resume(&serving.current.load().builders.http1, &serving.sweeper);
                    continue;
                }
                Stage::Lent(returned) => {
                    let _ = ready!(Pin::new(returned).poll(cx));
                    return Poll::Ready(End::Hyper(Ok(())));
                }
                Stage::Moving => return Poll::Ready(End::Closed),
            };
            let served = conn.poll_without_shutdown(cx);
            if matches!(served, Poll::Ready(Ok(()))) {
                // hyper is done after a 101 it was asked to switch with.
                if let Some(to) = state.take_upgrade() {
                    self.lend(to, shared, state);
                    continue;
                }
            }
            // The responses of this turn leave in one send.
            let sent = shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .poll_send_pending(cx, activity);
            if let Poll::Ready(r) = served {
                if sent.is_pending() {
                    // A closing response's last bytes: not cut short by the
                    // moment finish_connection gives what is left.
                    self.ended = true;
                    self.ended_with = r.err();
                    return Poll::Pending;
                }
                return Poll::Ready(End::Hyper(r));
            }
            // hyper may be let go once the connection is idle (at once when
            // many connections hold a parser, else when the sweeper found
            // it idle for a while), unless it was handed a partial request
            // head it still has to complete.
            let may_park = activity.is_idle()
                && (self.hold == NO_HOLD || activity.requests_started() > self.hold)
                && (activity.park_requested() || serving.sweeper.parsers_crowded());
            if sent.is_pending() || self.closing || !may_park {
                return Poll::Pending;
            }
            // hyper is idle: it closes at once, handing back the socket.
            Pin::new(&mut **conn).graceful_shutdown();
            match conn.poll_without_shutdown(cx) {
                Poll::Ready(Ok(())) => self.park(activity),
                Poll::Ready(Err(e)) => return Poll::Ready(End::Hyper(Err(e))),
                Poll::Pending => {
                    // Not idle after all: hyper finishes the exchange under
                    // way and closes.
                    tracing::debug!("connection could not park; closing after its response");
                    self.closing = true;
                    return Poll::Pending;
                }
            }
        }
    }

    /// Gives the socket (and any bytes read ahead) to a new hyper connection.
    fn resume(&mut self, builder: &http1::Builder, sweeper: &Arc<Sweeper>) {
        if let Stage::Parked(io, service) = std::mem::replace(&mut self.stage, Stage::Moving) {
            let prefix = std::mem::take(&mut self.prefix);
            let io = TokioIo::new(Rewind { prefix, inner: io });
            let conn = Box::new(builder.serve_connection(io, service));
            self.stage = Stage::Serving {
                conn,
                _parser: sweeper.hold_parser(),
            };
        }
    }

    /// Ends hyper's connection and keeps only the socket.
    fn park(&mut self, activity: &Activity) {
        let Stage::Serving { conn, .. } = std::mem::replace(&mut self.stage, Stage::Moving) else {
            return;
        };
        let parts = conn.into_parts();
        let (rest, io) = parts.io.into_inner().into_parts();
        self.prefix = read_ahead(parts.read_buf, rest);
        if !self.prefix.is_empty() {
            self.hold = activity.requests_started();
        }
        io.release_buffers();
        activity.set_parked(true);
        self.stage = Stage::Parked(io, parts.service);
    }

    /// Lends the socket hyper is done with, after a 101, to the module that
    /// switched it (through `to`), with the bytes read past the request.
    fn lend(
        &mut self,
        to: UpgradeSender,
        shared: &Arc<Mutex<IoState<I>>>,
        state: &Arc<ConnectionState>,
    ) {
        let Stage::Serving { conn, .. } = std::mem::replace(&mut self.stage, Stage::Moving) else {
            return;
        };
        let parts = conn.into_parts();
        let (rest, io) = parts.io.into_inner().into_parts();
        let prefix = read_ahead(parts.read_buf, rest);
        drop(io);
        let (lent, returned) = Lent::new(shared.clone(), prefix, state.clone());
        // A module already gone drops the stream here: the connection
        // closes at once.
        let _ = to.send(Box::new(lent));
        self.stage = Stage::Lent(returned);
    }
}

/// What hyper read ahead, then what it never took: the bytes after the last
/// request it parsed.
fn read_ahead(read_buf: Bytes, rest: Bytes) -> Bytes {
    match (read_buf.is_empty(), rest.is_empty()) {
        (true, _) => rest,
        (false, true) => read_buf,
        (false, false) => {
            let mut joined = BytesMut::from(&read_buf[..]);
            joined.extend_from_slice(&rest);
            joined.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    /// What every connection keeps, parked or not, and so what 10,000 idle
    /// connections cost (`bench/transport.sh idle`): the connection's task
    /// and its shared state. Past these sizes each crosses into the next
    /// allocation size (the task from 256 to 384 bytes with tokio's header,
    /// the state from 256 to 320 with the `Arc`'s counts, the description
    /// from 160 to 192), as they had by the thirtieth session: keep rarely
    /// used fields boxed.
    #[test]
    fn what_an_idle_connection_keeps_stays_within_its_allocation_sizes() {
        type Socket = tokio::net::TcpStream;
        assert!(std::mem::size_of::<super::ConnectionTask<Socket>>() <= 144);
        assert!(std::mem::size_of::<crate::connection::ConnectionState>() <= 240);
        // The connection's description, 160 with the `Arc`'s counts.
        assert!(std::mem::size_of::<riis_pipeline::ConnectionInfo>() <= 144);
    }
}
