//! One request's exchange with a server, run as a task on the request's
//! own worker runtime: choosing the server, a kept connection or a new one
//! (hyper's HTTP/1.1 client on it, or its HTTP/2 client with
//! `http_version = "2"`), sending the request, and relaying the answer
//! (its trailers too) through the [`Relay`], or, after a 101, passing
//! bytes through between the two connections ([`tunnel`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::header::{self, HeaderMap, HeaderValue};
use riis_pipeline::http::{Method, Request, Response, StatusCode, Uri};
use riis_pipeline::UpgradedStream;
use tokio::sync::oneshot;

use super::farm::Server;
use super::ReverseProxyConfig;
use crate::backend::{clock_instant, clock_ms, Address, Connection, Pools, Reusable};
use crate::gateway::ResponseHead;
use crate::relay::{End, Relay};
use crate::spooled_body::SpooledBody;

/// How much of the request body hyper is given at a time: each piece it
/// takes counts as the server's activity.
const BODY_PIECE: usize = 64 * 1024;

/// An HTTP/2 stream's receive window (the answer a server may send ahead).
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
/// An HTTP/2 connection's receive window: 1 GiB, so that even 1,000
/// streams stalled at their full window leave room for the others.
const H2_CONNECTION_WINDOW: u32 = 1 << 30;

/// The longest a kept connection is waited for to take the next request.
const POOLED_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// hyper's handle to send on a connection.
enum Sender {
    /// HTTP/1.1: one request at a time; the connection is kept for the
    /// next once the answer has been read.
    Http1(hyper::client::conn::http1::SendRequest<RequestBody>),
    /// HTTP/2: the requests of every exchange of this worker to the server
    /// share the connection, each a stream of its own, up to
    /// `http2_max_concurrent_streams`. `https` gives the requests'
    /// `:scheme`; `streams` counts the exchanges on the connection now.
    Http2 {
        sender: hyper::client::conn::http2::SendRequest<RequestBody>,
        https: bool,
        streams: Arc<AtomicUsize>,
    },
}

impl Sender {
    /// Sends `request`; an error gives the request back when it was not
    /// sent.
    async fn try_send(
        &mut self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
        match self {
            Sender::Http1(sender) => {
                // A streamed body of no declared length goes chunked, as
                // the client sent it. Said outright: hyper takes a GET,
                // HEAD or CONNECT of unknown length for one without a body
                // (and the client, told 100 Continue, would lose it).
                let mut request = request;
                if request.body().streamed == Some(None) {
                    request.headers_mut().insert(
                        header::TRANSFER_ENCODING,
                        HeaderValue::from_static("chunked"),
                    );
                }
                sender.try_send_request(request).await
            }
            Sender::Http2 { sender, https, .. } => {
                let request = for_http2(request, *https);
                sender.try_send_request(request).await
            }
        }
    }
}

/// A connection to a server: hyper's handle to send on it, and when a byte
/// last went either way on it.
pub(super) struct Kept {
    sender: Sender,
    last_io: Arc<AtomicU64>,
    /// The connection's task, ended with the handle: a connection that is
    /// not kept for another request (its server answered before reading
    /// the whole request body, say) is closed, not left writing a body
    /// nobody reads until the server closes it. `None` on HTTP/2, whose
    /// connection ends once every handle to it has gone and its streams
    /// are done (a stream ends when its exchange drops the answer).
    driver: Option<tokio::task::AbortHandle>,
    /// An exchange's handle to an HTTP/2 connection, counted in its
    /// `streams` while it lives (see [`Kept::shared`]).
    counted: bool,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
        if let (true, Sender::Http2 { streams, .. }) = (self.counted, &self.sender) {
            streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Kept {
    /// Sends `request` on the connection and waits for the answer's head.
    pub(super) async fn send(
        &mut self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        self.sender
            .try_send(request)
            .await
            .map_err(|e| e.into_error())
    }

    /// Waits until the connection may take a request.
    async fn ready(&mut self) -> hyper::Result<()> {
        match &mut self.sender {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2 { sender, .. } => sender.ready().await,
        }
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2 { sender, .. } => sender.is_closed(),
        }
    }

    /// Another handle to an HTTP/2 connection, for one more exchange on
    /// it, counted among its streams until dropped; `None` for HTTP/1.1,
    /// which carries one at a time.
    fn shared(&self) -> Option<Kept> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::Http2 {
                sender,
                https,
                streams,
            } => {
                streams.fetch_add(1, Ordering::Relaxed);
                Some(Kept {
                    sender: Sender::Http2 {
                        sender: sender.clone(),
                        https: *https,
                        streams: streams.clone(),
                    },
                    last_io: self.last_io.clone(),
                    driver: None,
                    counted: true,
                })
            }
        }
    }

    /// Whether the connection may take one more exchange: an HTTP/2 one
    /// carries at most `most` at once (an HTTP/1.1 one is idle when kept).
    fn has_room(&self, most: usize) -> bool {
        match &self.sender {
            Sender::Http1(_) => true,
            Sender::Http2 { streams, .. } => streams.load(Ordering::Relaxed) < most,
        }
    }
}

impl Reusable for Kept {
    fn is_reusable(&self) -> bool {
        // The connection's task ends (and closes it) when the server
        // closes it or sends anything unasked for.
        !self.is_closed()
    }

    fn counts_as_idle(&self) -> bool {
        matches!(self.sender, Sender::Http1(_))
    }
}

/// A connection's activity (`last_io`), when it is one exchange's alone
/// (HTTP/1.1); an HTTP/2 connection's is every stream's. (Of the fields,
/// not of a [`Kept`]: the sender is borrowed apart while a request goes.)
fn own_io<'a>(sender: &Sender, last_io: &'a AtomicU64) -> Option<&'a AtomicU64> {
    match sender {
        Sender::Http1(_) => Some(last_io),
        Sender::Http2 { .. } => None,
    }
}

/// HTTP/2 connections to servers open now, for `riis status`.
pub(super) static HTTP2_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// A request as HTTP/2 sends it: its target an absolute URI, whose
/// authority (`:authority`) is the `Host` the request carries (the
/// client's, or the server's), as RFC 9113 §8.3.1 has a proxy send it.
fn for_http2(mut request: Request<RequestBody>, https: bool) -> Request<RequestBody> {
    use riis_pipeline::http::uri::{Authority, PathAndQuery, Scheme};
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(if https { Scheme::HTTPS } else { Scheme::HTTP });
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    if let Some(authority) = authority {
        // `:authority` replaces `Host`; one that is no authority stays a
        // header (the server then has it still).
        request.headers_mut().remove(header::HOST);
        parts.authority = Some(authority);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = riis_pipeline::http::Version::HTTP_2;
    request
}

/// A connection that notes each read and write that moved bytes (on
/// [`clock_ms`]): a server that sends its head a byte at a time, or
/// `102 Processing` now and then, is not silent, though no whole head or
/// body piece came yet; nor is a WebSocket with messages going either way.
struct Watched<T> {
    io: T,
    last_io: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn moved(&self) {
        self.last_io.store(clock_ms(), Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Which kept connections may serve a request: those to its server's
/// address and, over TLS, checked against the same trusted certificates
/// (by identity: a connection one location's `ca_file` let through never
/// serves a location that trusts other certificates).
/// Shared, so that taking a request's route costs a reference count, not
/// a copy of the address.
#[derive(Clone)]
pub(super) struct Route(Arc<RouteKey>);

struct RouteKey {
    address: Address,
    trust: Option<Arc<rustls::ClientConfig>>,
    /// The connections speak HTTP/2.
    http2: bool,
    /// With `http2`, the trust without HTTP/2's ALPN, for the upgrades
    /// that go on HTTP/1.1 (not part of the key: those routes say
    /// `http2: false`).
    http1_trust: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("address", &self.0.address)
            .field("tls", &self.0.trust.is_some())
            .finish()
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&*self.0, &*other.0);
        let same_trust = match (&a.trust, &b.trust) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            (None, None) => true,
            _ => false,
        };
        Arc::ptr_eq(&self.0, &other.0)
            || (a.address == b.address && same_trust && a.http2 == b.http2)
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.address.hash(state);
        self.0.trust.as_ref().map(Arc::as_ptr).hash(state);
        self.0.http2.hash(state);
    }
}

/// One request for the task.
pub(super) struct Job {
    pub(super) method: Method,
    /// Path and query, as the request has them now.
    pub(super) target: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: SpooledBody,
    /// The body streams from the client through the relay as it arrives
    /// (`request_buffering = false`; `body` is then empty), with the length
    /// the client declared, if any.
    pub(super) streamed: Option<Option<u64>>,
    /// The host the client reached riis at (with `https`, its origin), for
    /// `Location` headers that name the server (none: left as they are).
    pub(super) client_host: Option<String>,
    /// Whether the request may be sent again (RFC 9110 §9.2.2) when a kept
    /// connection fails after it was sent.
    pub(super) idempotent: bool,
    /// The servers this request goes to, tried in turn
    /// ([`super::PROXY_SERVER`]), instead of the section's (empty: the
    /// section's).
    pub(super) only: Vec<Server>,
    /// The client's address (for `balance = "client_address"`).
    pub(super) client: std::net::IpAddr,
    /// The client's affinity cookie's value, with `affinity_cookie`.
    pub(super) affinity: Option<String>,
    /// The client reached riis over TLS (the affinity cookie is `Secure`,
    /// and rewritten locations name `https`).
    pub(super) https: bool,
    /// The request asks to switch protocols: where the client's connection
    /// comes from once the server's 101 went out to it.
    pub(super) upgrade: Option<std::sync::Mutex<Option<oneshot::Receiver<UpgradedStream>>>>,
    pub(super) config: Arc<ReverseProxyConfig>,
    pub(super) relay: Arc<Relay>,
    pub(super) pools: Arc<Pools<Kept, Route>>,
    /// Switched connections open, for `riis status`.
    pub(super) tunnels: Arc<std::sync::atomic::AtomicUsize>,
}

/// The request body as hyper takes it: in pieces (read from the body's
/// file as they are taken, for a large one), each one taken marking the
/// server active (a server that reads a large body slowly is not silent).
///
/// A streamed body comes through the relay instead, piece by piece as the
/// client sends it.
pub(super) struct RequestBody {
    body: SpooledBody,
    /// Bytes given to hyper so far.
    offset: u64,
    relay: Option<Arc<Relay>>,
    /// Streamed: the length the client declared, if any.
    streamed: Option<Option<u64>>,
    /// Streamed: the try this body is sent for (see `Relay::poll_upload`).
    attempt: u32,
}

impl RequestBody {
    /// No body (a health check's GET).
    pub(super) fn empty() -> Self {
        Self {
            body: SpooledBody::default(),
            offset: 0,
            relay: None,
            streamed: None,
            attempt: 0,
        }
    }

    /// The next piece of a streamed body.
    fn poll_streamed(
        &mut self,
        relay: &Relay,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if relay.upload_ended() && !relay.body_given() {
            // The exchange is over with the body unsent: the stream (HTTP/2)
            // or the connection is reset rather than left waiting.
            return Poll::Ready(Some(Err(std::io::Error::other(BodyAbandoned(
                h2::Reason::CANCEL.into(),
            )))));
        }
        match relay.poll_upload(cx, self.attempt) {
            // A later try sends the body: this one's stream is over.
            Poll::Ready(Some(Err(()))) => Poll::Ready(Some(Err(std::io::Error::other(
                BodyAbandoned(h2::Reason::CANCEL.into()),
            )))),
            Poll::Ready(Some(Ok(piece))) => {
                self.offset += piece.len() as u64;
                // hyper stops asking once a declared length is reached:
                // the body is whole then, and the connection may be kept.
                if self.streamed == Some(Some(self.offset)) {
                    relay.set_body_given(true);
                }
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(None) => {
                relay.set_body_given(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The rest of a streamed body will not come (see
/// [`RequestBody::poll_streamed`]). An HTTP/2 stream is reset with CANCEL:
/// hyper takes the reason from an `h2::Error` among the causes.
#[derive(Debug)]
struct BodyAbandoned(h2::Error);

impl std::fmt::Display for BodyAbandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the rest of the request body will not come")
    }
}

impl std::error::Error for BodyAbandoned {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.streamed.is_some() {
            let Some(relay) = self.relay.clone() else {
                return Poll::Ready(None);
            };
            return self.poll_streamed(&relay, cx);
        }
        if self.is_end_stream() {
            return Poll::Ready(None);
        }
        if let Some(relay) = &self.relay {
            relay.mark_activity();
        }
        let piece = match self.body.piece(self.offset, BODY_PIECE) {
            Ok(piece) if piece.is_empty() => {
                // The file is shorter than it was written: never sent as
                // whole.
                return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())));
            }
            Ok(piece) => piece,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        self.offset += piece.len() as u64;
        if self.is_end_stream() {
            if let Some(relay) = &self.relay {
                relay.set_body_given(true);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        match self.streamed {
            Some(Some(length)) => self.offset >= length,
            Some(None) => false,
            None => self.offset >= self.body.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.streamed {
            Some(Some(length)) => SizeHint::with_exact(length.saturating_sub(self.offset)),
            Some(None) => SizeHint::default(),
            None => SizeHint::with_exact(self.body.len() - self.offset),
        }
    }
}

/// The next frame of `body`, if it is in reach: what the server sent with
/// the first piece (a small page sent chunked, as Kestrel, Tomcat and Go
/// send them, ends in the same write). hyper's connection task hands body
/// frames over one at a time, so it gets two turns to pass the next one;
/// a body whose next piece is not there yet is left to stream.
async fn end_in_reach(
    body: &mut hyper::body::Incoming,
) -> Option<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
    for _ in 0..2 {
        tokio::task::yield_now().await;
        tokio::select! {
            biased;
            frame = body.frame() => return Some(frame),
            () = std::future::ready(()) => {}
        }
    }
    None
}

/// Why an exchange failed.
enum Failure {
    /// No server could be connected to.
    Unreachable(String),
    /// A server went quiet for `timeout`.
    Quiet(String),
    /// A server broke the protocol or the connection.
    Broken(String),
}

impl Failure {
    fn into_end(self) -> End {
        match self {
            Failure::Unreachable(why) | Failure::Broken(why) => {
                End::Failed(StatusCode::BAD_GATEWAY, why)
            }
            Failure::Quiet(why) => End::Failed(StatusCode::GATEWAY_TIMEOUT, why),
        }
    }
}

/// Runs a request's exchange to its end and tells the request.
pub(super) async fn run(job: Job) {
    let end = tokio::select! {
        result = exchange(&job) => match result {
            Ok(()) => Some(End::Complete),
            Err(failure) => Some(failure.into_end()),
        },
        // The request is gone: nobody reads the end (and dropping the
        // exchange drops its connection mid-answer).
        _ = job.relay.cancelled() => None,
    };
    // A streamed body the client stopped sending ends now: on HTTP/2 the
    // stream lives on in hyper's task while its body does.
    job.relay.end_upload();
    if let Some(end) = end {
        job.relay.finish(end);
    }
}

/// What sending on one connection came to.
enum Attempt {
    /// The server answered.
    Answer(Response<Incoming>),
    /// The request was not sent (the kept connection had closed): any
    /// request may go on another.
    Unsent,
    /// The connection failed after the request went (or may have gone):
    /// only an idempotent one may go again.
    Failed(hyper::Error),
    Quiet,
}

impl Job {
    /// Whether the request may go again on another connection: an
    /// idempotent one (RFC 9110 §9.2.2) whose body is all still here (a
    /// streamed body's pieces that went are gone).
    fn may_send_again(&self) -> bool {
        self.idempotent && self.may_send_unprocessed()
    }

    /// Whether a request that may have run on one server may go on to the
    /// next: a farm's, as nginx's `proxy_next_upstream error`; not a
    /// `PROXY_SERVER` list's, one application's processes, which a
    /// request that crashed one would take down in turn.
    fn may_send_to_another(&self) -> bool {
        self.may_send_again() && self.only.is_empty()
    }

    /// Whether a request the server did not process may go again: its body
    /// is all still here (a streamed body's pieces that went are kept only
    /// up to `REPLAY_LIMIT`, until the answer's head).
    fn may_send_unprocessed(&self) -> bool {
        self.streamed.is_none() || self.relay.can_restart_upload()
    }

    /// The request, made afresh for each connection it is tried on.
    fn request(&self, server: &Server) -> Request<RequestBody> {
        // A body of nothing is given whole from the start.
        self.relay
            .set_body_given(self.streamed.is_none() && self.body.is_empty());
        let attempt = match self.streamed {
            Some(_) => self.relay.restart_upload(),
            None => 0,
        };
        let mut request = Request::new(RequestBody {
            body: self.body.clone(),
            offset: 0,
            relay: Some(self.relay.clone()),
            streamed: self.streamed,
            attempt,
        });
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.clone();
        let mut headers = self.headers.clone();
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, server.host.clone());
        }
        // A body of none is announced for methods that usually carry one,
        // so the server does not wait for it.
        if let Some(declared) = self.streamed {
            // The client's length, or none: hyper then sends the body
            // chunked, as the client did.
            if let Some(length) = declared {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
        } else if !self.body.is_empty()
            || !matches!(
                self.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
            )
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        *request.headers_mut() = headers;
        request
    }

    /// Whether the server has been silent for `timeout`, counting what
    /// moved on its connection.
    fn is_silent(&self, line: &Kept) -> bool {
        self.is_silent_since(own_io(&line.sender, &line.last_io))
    }

    /// [`Job::is_silent`], for a connection's last moment of activity
    /// (`None` on HTTP/2, whose connection's activity is every stream's:
    /// there only this exchange's own frames count).
    fn is_silent_since(&self, last_io: Option<&AtomicU64>) -> bool {
        if let Some(last_io) = last_io {
            let last = last_io.load(Ordering::Relaxed);
            self.relay.note_activity_at(clock_instant(last));
        }
        self.relay.is_silent()
    }

    /// Sends on `line`, waiting while the server is active.
    async fn send(&self, line: &mut Kept, server: &Server) -> Attempt {
        let request = self.request(server);
        let last_io = own_io(&line.sender, &line.last_io);
        let sending = line.sender.try_send(request);
        tokio::pin!(sending);
        loop {
            match tokio::time::timeout_at(self.relay.silence_deadline(), &mut sending).await {
                Ok(Ok(response)) => return Attempt::Answer(response),
                Ok(Err(e)) if e.message().is_some() => return Attempt::Unsent,
                Ok(Err(e)) => return Attempt::Failed(e.into_error()),
                Err(_) if self.is_silent_since(last_io) => return Attempt::Quiet,
                Err(_) => {}
            }
        }
    }

    fn route(&self, server: &Server) -> Result<Route, String> {
        route(&self.config, server)
    }

    async fn connect(&self, server: &Server, route: &Route) -> Result<Kept, String> {
        connect(&self.config, server, route).await
    }

    /// The route of this request: an upgrade goes on HTTP/1.1 whatever
    /// the section's `http_version` (HTTP/2 has no `Upgrade`).
    fn route_for(&self, server: &Server) -> Result<Route, String> {
        let route = self.route(server)?;
        if self.upgrade.is_none() || !route.0.http2 {
            return Ok(route);
        }
        Ok(Route(Arc::new(RouteKey {
            address: route.0.address.clone(),
            trust: route.0.http1_trust.clone(),
            http2: false,
            http1_trust: None,
        })))
    }
}

/// Where `server`'s kept connections are: for an `https://` one, with
/// the certificates it is checked against (`ca_file`, or the system's).
/// The same for every request to `server` from this section: made at
/// the first and kept with the server.
pub(super) fn route(config: &ReverseProxyConfig, server: &Server) -> Result<Route, String> {
    if let Some(route) = server.route.get() {
        return Ok(route.clone());
    }
    let trust = match (&server.tls, &config.ca_file, &config.client_certificate) {
        (None, ..) => None,
        (Some(_), Some(trusted), None) => Some(trusted.config()),
        (Some(_), None, None) => Some(super::tls::system()?),
        // A configuration of this section's own: its connections are
        // never another's, whose servers saw no certificate or another.
        (Some(_), trusted, Some(identity)) => {
            let roots = match trusted {
                Some(trusted) => trusted.roots(),
                None => super::tls::system_roots()?,
            };
            Some(identity.config(roots)?)
        }
    };
    let http2 = config.http_version == super::HttpVersion::Http2;
    // HTTP/2 over TLS is agreed in the handshake (ALPN, RFC 9113 §3.2).
    let (trust, http1_trust) = match trust {
        Some(base) if http2 => {
            let mut config = (*base).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            (Some(Arc::new(config)), Some(base))
        }
        other => (other, None),
    };
    let route = Route(Arc::new(RouteKey {
        address: server.address.clone(),
        trust,
        http2,
        http1_trust,
    }));
    Ok(server.route.get_or_init(|| route).clone())
}

/// Opens a connection to `server` (with TLS for an `https://` one,
/// the handshake within `connect_timeout` too) and starts hyper on it.
pub(super) async fn connect(
    config: &ReverseProxyConfig,
    server: &Server,
    route: &Route,
) -> Result<Kept, String> {
    let opening = async {
        let connection = Connection::open(&server.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", server.name))?;
        let http2 = route.0.http2;
        let (Some(name), Some(trust)) = (&server.tls, &route.0.trust) else {
            return start(connection, server, http2, false).await;
        };
        let stream = tokio_rustls::TlsConnector::from(trust.clone())
            .connect(name.clone(), connection)
            .await
            .map_err(|e| format!("TLS with {} failed: {e}", server.name))?;
        if http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(format!(
                "{} did not agree to HTTP/2 in the TLS handshake (ALPN)",
                server.name
            ));
        }
        start(stream, server, http2, true).await
    };
    let connect_timeout = std::time::Duration::from_secs(config.connect_timeout);
    // Boxed: a TLS handshake's state is large, and every exchange's
    // future (moved into its task at each request) would carry room
    // for it; a new connection is rare beside the requests on kept ones.
    match tokio::time::timeout(connect_timeout, Box::pin(opening)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "cannot connect to {} within proxy.connect_timeout ({} s)",
            server.name, config.connect_timeout
        )),
    }
}

/// Starts hyper's HTTP/1.1 client (or with `http2` its HTTP/2 client) on
/// `io`, a new connection to `server`.
async fn start<T>(io: T, server: &Server, http2: bool, https: bool) -> Result<Kept, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let last_io = Arc::new(AtomicU64::new(clock_ms()));
    let watched = Watched {
        io,
        last_io: last_io.clone(),
    };
    if http2 {
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                // A stream whose client reads slowly holds its window (it
                // is given back as the answer is taken): the connection's
                // is far larger than the streams' together, so stalled
                // streams never hold back the others sharing it.
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .handshake(TokioIo::new(watched))
                .await
                .map_err(|e| format!("{}: {e}", server.name))?;
        // Its own task, on this worker's runtime, until the server closes
        // the connection or every handle to it has gone.
        HTTP2_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("ReverseProxy: HTTP/2 connection ended: {e}");
            }
            HTTP2_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        });
        return Ok(Kept {
            sender: Sender::Http2 {
                sender,
                https,
                streams: Arc::default(),
            },
            last_io,
            driver: None,
            counted: false,
        });
    }
    let (sender, driver) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(watched))
        .await
        .map_err(|e| format!("{}: {e}", server.name))?;
    // The connection's own task, on this worker's runtime: it ends when the
    // connection closes or the last sender is dropped, or hands the
    // connection over after a 101.
    let driver = tokio::spawn(async move {
        if let Err(e) = driver.with_upgrades().await {
            tracing::debug!("ReverseProxy: connection ended: {e}");
        }
    })
    .abort_handle();
    Ok(Kept {
        sender: Sender::Http1(sender),
        last_io,
        driver: Some(driver),
        counted: false,
    })
}

thread_local! {
    /// The HTTP/2 connections this worker is opening, by route.
    static OPENING: std::cell::RefCell<std::collections::HashMap<Route, Arc<OpeningState>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A connection being opened, as the exchanges waiting for it see it.
#[derive(Default)]
struct OpeningState {
    /// Wakes them once it is in the pool, or failed.
    done: tokio::sync::Notify,
    /// Why it could not be opened: theirs fail the same way at once,
    /// rather than try again one after another.
    failure: std::sync::OnceLock<String>,
}

/// The connection this worker is opening for `route`, if it is opening one.
fn opening(route: &Route) -> Option<Arc<OpeningState>> {
    OPENING.with_borrow(|opening| opening.get(route).cloned())
}

/// A connection being opened for a route, noted until dropped (once it is
/// in the pool, or failed), which wakes those waiting for it.
struct Opening {
    route: Route,
    state: Arc<OpeningState>,
}

impl Opening {
    fn begin(route: &Route) -> Self {
        let state = Arc::new(OpeningState::default());
        OPENING.with_borrow_mut(|opening| opening.insert(route.clone(), state.clone()));
        Self {
            route: route.clone(),
            state,
        }
    }

    /// Notes why the connection could not be opened.
    fn failed(&self, why: &str) {
        let _ = self.state.failure.set(why.to_owned());
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        OPENING.with_borrow_mut(|opening| {
            if opening
                .get(&self.route)
                .is_some_and(|state| Arc::ptr_eq(state, &self.state))
            {
                opening.remove(&self.route);
            }
        });
        self.state.done.notify_waiters();
    }
}

/// Tries the servers in turn until one answers, then relays its answer.
async fn exchange(job: &Job) -> Result<(), Failure> {
    // A streamed body is kept for another try only where one may come: a
    // stream an HTTP/2 server refuses, or a request that may run twice.
    if job.streamed.is_some() {
        let http2 = job.config.http_version == super::HttpVersion::Http2;
        job.relay.keep_for_replay(http2 || job.idempotent);
    }
    let kept = job.config.kept_connections;
    let fail_timeout = std::time::Duration::from_secs(job.config.fail_timeout);
    let mut failures = Vec::new();
    let farm = job
        .only
        .is_empty()
        .then(|| {
            job.config
                .servers
                .order(job.config.balance, job.client, job.affinity.as_deref())
        })
        .into_iter()
        .flatten();
    'servers: for server in job.only.iter().chain(farm) {
        // Counted (for `least_requests`) until this server is done with
        // the request, its answer relayed.
        let _in_flight = server.begin();
        let route = match job.route_for(server) {
            Ok(route) => route,
            Err(why) => {
                failures.push(format!("{}: {why}", server.name));
                continue;
            }
        };
        // HTTP/2 connections are shared: one this worker is opening for the
        // route is waited for (once), not opened again beside it.
        let shares = route.0.http2 && kept > 0 && job.upgrade.is_none();
        let mut waited = false;
        // The request went on a kept connection that then failed: it may
        // have run there.
        let mut went = false;
        loop {
            // An idle connection first, while there is one that takes the
            // request; not for an upgrade, which gets a connection of its own
            // (the server may switch it to another protocol for good).
            if kept > 0 && job.upgrade.is_none() {
                while let Some(mut line) = job.pools.take(&route) {
                    // An HTTP/2 connection with all the streams it may carry
                    // is let go: it ends once they are done, and a new one
                    // takes its place below.
                    if !line.has_room(job.config.http2_max_concurrent_streams) {
                        continue;
                    }
                    // HTTP/2: the connection goes back to the pool at once, for
                    // the other exchanges (those that come while this one waits
                    // below find it there); this one sends on a handle of its
                    // own, counted among the connection's streams.
                    let shared = line.shared();
                    let multiplexed = shared.is_some();
                    if let Some(shared) = shared {
                        job.pools.put(&route, line, 1);
                        line = shared;
                    }
                    // A connection whose last answer just ended may not be
                    // ready yet (its task has not run since): it is waited for,
                    // not dropped. One that closed meanwhile is dropped.
                    // Within a second: one that is still busy longer (with the
                    // end of a body its server does not read) is dropped rather
                    // than waited on for the whole timeout.
                    let deadline = job
                        .relay
                        .silence_deadline()
                        .min(tokio::time::Instant::now() + POOLED_READY_WAIT);
                    let ready = tokio::time::timeout_at(deadline, line.ready());
                    if !matches!(ready.await, Ok(Ok(()))) {
                        if multiplexed {
                            // Back in the pool: a new connection instead (a
                            // closed one is dropped when next taken).
                            break;
                        }
                        continue;
                    }
                    match job.send(&mut line, server).await {
                        Attempt::Answer(response) => {
                            return relay_answer(job, server, &route, response, line).await;
                        }
                        Attempt::Unsent => continue,
                        // Refused before any processing (RFC 9113 §8.7): as
                        // if unsent, on a new connection.
                        Attempt::Failed(e) if refused_stream(&e) && job.may_send_unprocessed() => {
                            break
                        }
                        Attempt::Quiet => return Err(quiet(job, server)),
                        // It had most likely closed as the request went; but
                        // the server may have run it, so only a request that
                        // may run twice goes again (as nginx and HTTP clients
                        // do).
                        // An answer that is not HTTP is the server's own: 502
                        // at once, as on a new connection.
                        Attempt::Failed(e) if job.may_send_again() && !e.is_parse() => {
                            went = true;
                            break;
                        }
                        Attempt::Failed(e) => {
                            return Err(Failure::Broken(format!(
                                "{} failed on a kept connection: {}",
                                server.name,
                                explained(&e)
                            )))
                        }
                    }
                }
            }
            if shares && !waited {
                if let Some(state) = opening(&route) {
                    let opened = state.done.notified();
                    let patience = std::time::Duration::from_secs(job.config.connect_timeout);
                    let _ = tokio::time::timeout(patience, opened).await;
                    if let Some(why) = state.failure.get() {
                        failures.push(why.clone());
                        continue 'servers;
                    }
                    waited = true;
                    continue;
                }
            }
            break;
        }
        // Noted until the new connection is in the pool (or failed).
        let opening = shares.then(|| Opening::begin(&route));
        let mut line = match job.connect(server, &route).await {
            Ok(line) => line,
            Err(why) => {
                server.mark_down(fail_timeout);
                if let Some(opening) = &opening {
                    opening.failed(&why);
                }
                // A process of a list that failed with the request and is
                // gone now (it crashed on it): the next is not given the
                // request to crash on too.
                if went && !job.may_send_to_another() {
                    return Err(Failure::Broken(format!(
                        "{} failed on a kept connection, then could not be reached: {why}",
                        server.name
                    )));
                }
                failures.push(why);
                continue;
            }
        };
        // One HTTP/2 connection is kept per server and worker: each new one
        // (opened while others were, or when the kept one was full) takes
        // the place of the one before, which ends once its streams are
        // done.
        if kept > 0 {
            if let Some(shared) = line.shared() {
                job.pools.put(&route, line, 1);
                line = shared;
            }
        }
        // Those waiting for it find it in the pool now.
        drop(opening);
        let mut attempt = job.send(&mut line, server).await;
        if matches!(&attempt, Attempt::Failed(e) if refused_stream(e)) && job.may_send_unprocessed()
        {
            // Refused before any processing (RFC 9113 §8.7, a server at
            // its limit of streams): once more, on the same connection.
            attempt = job.send(&mut line, server).await;
        }
        match attempt {
            Attempt::Answer(response) => {
                return relay_answer(job, server, &route, response, line).await
            }
            Attempt::Quiet => return Err(quiet(job, server)),
            // The server took the connection, then failed it before any
            // answer (it reset or closed it): it is left out like one that
            // refused, and a request that may run twice goes on to the next
            // (nginx's `proxy_next_upstream error`).
            // (An answer that is not HTTP is the server's, not a failure of
            // the connection: 502 at once, as nginx does by default.)
            // A stream the server refused (RFC 9113 §8.7) was not
            // processed: the next server gets it, whatever its method.
            // Servers a module listed (`PROXY_SERVER`: the processes of
            // one application) are not farm members: a request that made
            // one fail (a crash it caused) would take every process down in
            // turn, so there only what was never sent goes on.
            Attempt::Failed(e) if refused_stream(&e) && job.may_send_unprocessed() => {
                failures.push(format!(
                    "{} refused the stream: {}",
                    server.name,
                    explained(&e)
                ));
            }
            Attempt::Failed(e) if job.may_send_to_another() && !e.is_parse() => {
                server.mark_down(fail_timeout);
                failures.push(format!(
                    "{} failed before answering: {}",
                    server.name,
                    explained(&e)
                ));
            }
            // A new connection closed as the request went: hyper cannot
            // always tell whether the server read it (a process that exits
            // on it closes its connection the same way), so a list's next
            // process does not get it either.
            Attempt::Unsent if job.may_send_to_another() => {
                server.mark_down(fail_timeout);
                failures.push(format!("{} closed the connection at once", server.name));
            }
            Attempt::Unsent => {
                return Err(Failure::Broken(format!(
                    "{} closed the connection at once",
                    server.name
                )))
            }
            Attempt::Failed(e) => {
                if !e.is_parse() {
                    server.mark_down(fail_timeout);
                }
                return Err(Failure::Broken(format!(
                    "{}: {}",
                    server.name,
                    explained(&e)
                )));
            }
        }
    }
    Err(Failure::Unreachable(failures.join("; ")))
}

/// The `Sec-WebSocket-Accept` a server must answer to `key` (RFC 6455
/// §4.2.2): the SHA-1 of the key and the protocol's GUID, in base64.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut hash = sha1::Sha1::new();
    hash.update(key);
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

/// hyper's error, with what its terse "message head is too large" means,
/// and what lies under it ("http2 error: stream error received: …").
fn explained(e: &hyper::Error) -> String {
    if e.is_parse_too_large() {
        return format!("{e} (more than 100 header fields, or a head over hyper's size limit)");
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Whether an HTTP/2 server refused the stream (`REFUSED_STREAM`): it did
/// not process the request (RFC 9113 §8.7), which may go again whatever
/// its method.
fn refused_stream(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM)
}

fn quiet(job: &Job, server: &Server) -> Failure {
    Failure::Quiet(format!(
        "{} sent nothing for proxy.timeout ({} s)",
        server.name, job.config.timeout
    ))
}

/// Passes the answer's head and body on; keeps the connection if it may
/// carry another request.
async fn relay_answer(
    job: &Job,
    server: &Server,
    route: &Route,
    response: Response<Incoming>,
    line: Kept,
) -> Result<(), Failure> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(upgrade) = &job.upgrade {
            let client = upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
            // Boxed, as the handshake: a switch's state is room every
            // exchange's future would otherwise carry.
            return Box::pin(switch(job, server, response, client)).await;
        }
    }
    // Informational answers (100, 102, 103) hyper passes over; a 101 to a
    // request that did not ask to switch is not HTTP any more.
    if response.status().is_informational() {
        return Err(Failure::Broken(format!(
            "{} answered {}, which riis did not ask for",
            server.name,
            response.status()
        )));
    }
    // Statuses are three digits from 100 to 599 (RFC 9110 §15); hyper
    // takes up to 999.
    if response.status().as_u16() >= 600 {
        return Err(Failure::Broken(format!(
            "{} answered with the status {}, which HTTP does not have",
            server.name,
            response.status().as_u16()
        )));
    }
    // hyper decodes `chunked` alone. Another transfer coding (`gzip,
    // chunked`) would reach the client undecoded and unlabelled, since
    // transfer codings are hop-by-hop: 502, as nginx answers ("unknown
    // Transfer-Encoding").
    if let Some(coding) = other_transfer_coding(response.headers()) {
        return Err(Failure::Broken(format!(
            "{} sent the transfer coding `{coding}`, which riis does not decode",
            server.name
        )));
    }
    server.mark_up();
    job.relay.mark_activity();
    // An answer without a length streams from its first body piece on
    // (see `relay::Passing::FromBody`), unless its end comes with it.
    let mut unsized_first_piece = !response.headers().contains_key(header::CONTENT_LENGTH);
    let (parts, mut body) = response.into_parts();
    job.relay.deliver_head(response_head(job, server, parts));
    // The frame after the one in hand, when it was looked for already.
    let mut next = None;
    loop {
        let polled = match next.take() {
            Some(frame) => Ok(frame),
            None => tokio::time::timeout_at(job.relay.silence_deadline(), body.frame()).await,
        };
        let frame = match polled {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Failure::Broken(format!(
                    "{}: the answer broke off: {e}",
                    server.name
                )))
            }
            Err(_) if job.is_silent(&line) => return Err(quiet(job, server)),
            Err(_) => continue,
        };
        job.relay.mark_activity();
        match frame.into_data() {
            Ok(data) => {
                if std::mem::take(&mut unsized_first_piece) {
                    next = end_in_reach(&mut body).await;
                }
                // Whole: the end is delivered in this same turn, with the
                // piece (the request is not woken in between), so the
                // answer goes out whole, with a length.
                job.relay.deliver_body(data).await;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    job.relay.deliver_trailers(trailers);
                }
            }
        }
    }
    // A connection that carried an upgrade request is not kept: the server
    // may still mean to switch it. Nor is one still sending the request's
    // body (a server that answered early, without reading it): the next
    // request would wait behind a body nobody reads.
    if job.config.kept_connections > 0
        && job.upgrade.is_none()
        && job.relay.body_given()
        && matches!(line.sender, Sender::Http1(_))
        && !line.is_closed()
    {
        job.pools.put(route, line, job.config.kept_connections);
    }
    Ok(())
}

/// The server switched protocols: its 101 goes to the client, and once the
/// client's connection switched too, the bytes pass through both ways.
async fn switch(
    job: &Job,
    server: &Server,
    mut response: Response<Incoming>,
    client: Option<oneshot::Receiver<UpgradedStream>>,
) -> Result<(), Failure> {
    let upgraded = hyper::upgrade::on(&mut response);
    // The server must name the protocol it switched to (RFC 9110 §7.8),
    // one the request offered.
    let protocol = response
        .headers()
        .get(header::UPGRADE)
        .filter(|p| {
            p.to_str()
                .is_ok_and(|p| super::protocol_allowed(p, &job.config.upgrade_protocols))
        })
        .cloned();
    let Some(protocol) = protocol else {
        return Err(Failure::Broken(format!(
            "{} answered 101 without switching to a protocol the request offered",
            server.name
        )));
    };
    // A WebSocket switch proves the server read this request's key (RFC
    // 6455 §4.2.2): any other 101 (a status a URL echoes back) would open
    // a raw tunnel to the server past every module. By the protocol's
    // name, whatever version follows it (`websocket/13`), as
    // `protocol_allowed` let it through.
    let name = protocol
        .to_str()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    if name.trim().eq_ignore_ascii_case("websocket") {
        let expected = job
            .headers
            .get("sec-websocket-key")
            .map(|key| websocket_accept(key.as_bytes()));
        let accepted = response
            .headers()
            .get("sec-websocket-accept")
            .map(|v| v.as_bytes());
        if expected.is_none() || expected.as_deref().map(str::as_bytes) != accepted {
            return Err(Failure::Broken(format!(
                "{} answered 101 for a WebSocket without the request key's Sec-WebSocket-Accept",
                server.name
            )));
        }
    }
    server.mark_up();
    job.relay.mark_activity();
    let (parts, _) = response.into_parts();
    let mut head = response_head(job, server, parts);
    // The hop-by-hop headers that make it a switch, for this hop.
    head.headers
        .push((header::CONNECTION, HeaderValue::from_static("upgrade")));
    head.headers.push((header::UPGRADE, protocol));
    let backend = match upgraded.await {
        Ok(backend) => backend,
        Err(e) => {
            return Err(Failure::Broken(format!(
                "{}: switching protocols failed: {e}",
                server.name
            )))
        }
    };
    job.relay.deliver_head(head);
    // The request's module hands the client's connection over after the
    // 101 went out; without one (the client left, or riis could not
    // switch it) the exchange ends.
    let Some(Ok(client)) = (match client {
        Some(client) => Some(client.await),
        None => None,
    }) else {
        return Ok(());
    };
    let _open = Counted::new(&job.tunnels);
    tunnel(job, server, TokioIo::new(backend), client).await;
    Ok(())
}

/// One more in a count until dropped (also when the exchange is dropped
/// mid-way, its request gone).
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Passes bytes through between the client's connection and the server's,
/// both ways, until both sides are done (each side's end is passed on as a
/// shutdown of the other), either fails, or nothing moves either way for
/// `timeout`.
async fn tunnel<B>(job: &Job, server: &Server, backend: B, client: UpgradedStream)
where
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let last_io = Arc::new(AtomicU64::new(clock_ms()));
    let mut backend = Watched {
        io: backend,
        last_io: last_io.clone(),
    };
    let mut client = Watched {
        io: client,
        last_io: last_io.clone(),
    };
    let passing = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(passing);
    loop {
        match tokio::time::timeout_at(job.relay.silence_deadline(), &mut passing).await {
            Ok(Ok((up, down))) => {
                tracing::debug!(
                    "ReverseProxy: {} switched connection ended ({up} bytes up, {down} down)",
                    server.name
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(
                    "ReverseProxy: {} switched connection failed: {e}",
                    server.name
                );
                return;
            }
            Err(_) => {
                job.relay
                    .note_activity_at(clock_instant(last_io.load(Ordering::Relaxed)));
                if job.relay.is_silent() {
                    tracing::debug!(
                        "ReverseProxy: {} switched connection closed after proxy.timeout ({} s) without a byte either way",
                        server.name,
                        job.config.timeout
                    );
                    return;
                }
            }
        }
    }
}

/// The answer's head as the client gets it.
/// A transfer coding of `headers` other than `chunked`, if any.
fn other_transfer_coding(headers: &riis_pipeline::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|c| String::from_utf8_lossy(c).trim().to_owned())
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
}

fn response_head(
    job: &Job,
    server: &Server,
    parts: riis_pipeline::http::response::Parts,
) -> ResponseHead {
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
        // One the parser could not keep (beyond ASCII, which it reads as
        // empty), or an empty one, gives way to the status's own.
        .filter(|r| !r.is_empty() && r.is_ascii() && Some(*r) != parts.status.canonical_reason())
        .map(str::to_owned);
    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut content_length = None;
    let hop_by_hop = super::HopByHop::of(&parts.headers);
    for (next, value) in parts.headers.iter() {
        if *next == header::CONTENT_LENGTH {
            // hyper took it as one length; `2, 2` (a list of the same
            // length) is sent on as the number it is.
            content_length = value
                .to_str()
                .ok()
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(HeaderValue::from);
            continue;
        }
        // The server's `Date` stays: it says when the answer was made, and
        // a cache (OutputCache, a browser's) counts the answer's age from
        // it (RFC 9111 §4.2.3), as ARR and Caddy pass it on.
        if hop_by_hop.contains(next) || *next == header::SERVER {
            continue;
        }
        let value = if *next == header::LOCATION || *next == header::CONTENT_LOCATION {
            reverse_rewrite(job, server, value).unwrap_or_else(|| value.clone())
        } else if *next == header::REFRESH {
            rewrite_refresh(job, server, value).unwrap_or_else(|| value.clone())
        } else {
            value.clone()
        };
        headers.push((next.clone(), value));
    }
    // A client new to this server (or whose server was left out) is told
    // which one answered, to come back to it (ARR's client affinity).
    let name = &job.config.affinity_cookie;
    if !name.is_empty() && job.affinity.as_deref() != Some(server.affinity.as_str()) {
        let secure = if job.https { "; Secure" } else { "" };
        let cookie = format!("{name}={}; Path=/; HttpOnly{secure}", server.affinity);
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            headers.push((header::SET_COOKIE, cookie));
        }
    }
    // With a transfer coding, hyper decoded the body whatever the length
    // said (RFC 9112 §6.3): that length is not the body's.
    let length_is_exact = !parts.headers.contains_key(header::TRANSFER_ENCODING);
    ResponseHead {
        status: parts.status,
        reason,
        headers,
        content_length,
        length_is_exact,
        local_redirect: None,
    }
}

/// A `Refresh` value (`5; url=http://server/next`, in the forms HTML reads:
/// the delay then a space, `;` or `,`, `url=` or not, spaces around `=`,
/// the URL in quotes) with the server's origin in its URL replaced by the
/// client's, as [`reverse_rewrite`] does for `Location` (nginx's
/// `proxy_redirect` rewrites both).
fn rewrite_refresh(job: &Job, server: &Server, value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let delay = text.trim_start();
    let after_delay = delay.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if after_delay.len() == delay.len() {
        return None;
    }
    let mut rest = after_delay.trim_start();
    if let Some(separated) = rest.strip_prefix([';', ',']) {
        rest = separated.trim_start();
    } else if rest.len() == after_delay.len() {
        // Neither a space nor `;` or `,` after the delay.
        return None;
    }
    // `url =` before the URL, or the URL alone.
    if rest.get(..3).is_some_and(|u| u.eq_ignore_ascii_case("url")) {
        if let Some(after) = rest[3..].trim_start().strip_prefix('=') {
            rest = after;
        }
    }
    let value_text = rest.trim_start();
    let quote = value_text
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"');
    let url_text = match quote {
        Some(q) => value_text[1..].split(q).next()?,
        None => value_text.trim_end(),
    };
    if url_text.is_empty() {
        return None;
    }
    let start = text.len() - value_text.len() + usize::from(quote.is_some());
    let end = start + url_text.len();
    let rewritten = reverse_rewrite(job, server, &HeaderValue::from_str(url_text).ok()?)?;
    let rewritten = rewritten.to_str().ok()?;
    HeaderValue::from_str(&format!("{}{rewritten}{}", &text[..start], &text[end..])).ok()
}

/// `value` with the server's origin (its scheme and its `Host`, or its host
/// with the scheme's port written out) replaced by the client's, when it
/// starts with it.
fn reverse_rewrite(job: &Job, server: &Server, value: &HeaderValue) -> Option<HeaderValue> {
    let client = job.client_host.as_deref()?;
    let text = value.to_str().ok()?;
    let (scheme, default_port) = if server.tls.is_some() {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let rest = text
        .get(..scheme.len())
        .filter(|written| written.eq_ignore_ascii_case(scheme))
        .map(|_| &text[scheme.len()..])?;
    let host = server.host.to_str().ok()?;
    let starts = |prefix: &str| {
        rest.get(..prefix.len())
            .filter(|h| h.eq_ignore_ascii_case(prefix))
            .map(|_| &rest[prefix.len()..])
    };
    let with_port =
        (!host.contains(':') || host.ends_with(']')).then(|| format!("{host}:{default_port}"));
    let after = with_port
        .as_deref()
        .and_then(starts)
        .or_else(|| starts(host))?;
    if !(after.is_empty() || after.starts_with(['/', '?', '#'])) {
        return None;
    }
    let client_scheme = if job.https { "https://" } else { "http://" };
    HeaderValue::from_str(&format!("{client_scheme}{client}{after}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_accept_value_is_rfc_6455s() {
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
