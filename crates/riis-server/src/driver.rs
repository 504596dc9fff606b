//! Drives one request's [`RequestExecution`] from hyper.
//!
//! The common request (every module answers synchronously, one final send)
//! runs start to end inside hyper's service call: no task is spawned and the
//! whole response goes out with a `Content-Length`. When the pipeline has to
//! wait (a Pending module, a body read, an early flush), the execution moves
//! into a task of its own, so it runs to its end (LogRequest, EndRequest,
//! module disposal) even if the client goes away, and a flushed response
//! streams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use riis_pipeline::{
    EntityChunk, HttpContext, HttpRequest, Output, Pipeline, RequestExecution, ResponseHead, Site,
    Step,
};
use tokio::sync::{mpsc, oneshot};

use crate::body::{DeliveryShare, RequestBodyHold, ResponseBody, StreamItem, StreamPiece};
use crate::config::{Limits, ServerConfig, Timeouts};
use crate::connection::{ConnectionState, InService};
use crate::in_flight::Listed;
use crate::protocol::Builders;
use crate::server::{site_tls_of, SiteTls};
use crate::strict::{check_head, Refusal};

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Requests the server has started since it began (for `riis status`).
pub fn requests_started() -> u64 {
    REQUEST_IDS.load(Ordering::Relaxed) - 1
}

/// Sends queued for a streaming response before the pipeline waits for the
/// client to take them.
const STREAM_QUEUE: usize = 8;

/// The sites answering on one listener: `(host, site)`, host-specific
/// bindings first, the hostless one (if any) last.
pub type Routes = Arc<[(Option<String>, Arc<Site>)]>;

/// One loaded configuration: its pipeline, the sites answering on each
/// listening address, and the limits and timeouts. A reload replaces it;
/// requests already running keep the one they started with.
pub struct Generation {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Sites by listening address (as configured, before port 0 is bound).
    pub routes: BTreeMap<SocketAddr, Routes>,
    /// `hsts` and `client_certificate_ca` by site id, for the sites that
    /// set either: one lookup per TLS request.
    pub site_tls: BTreeMap<u32, SiteTls>,
    /// Some site sets `client_certificate_ca`: TLS requests check that
    /// their connection was made under their site's policy.
    pub asks_client_certificates: bool,
    /// `[limits]`.
    pub limits: Limits,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[proxy_protocol]`.
    pub proxy_protocol: crate::proxy_protocol::ProxyProtocol,
    /// hyper's settings from `limits`, for connections started (or resumed
    /// after parking) under this configuration.
    pub(crate) builders: Builders,
}

impl Generation {
    /// The generation of `config`, whose pipeline is `pipeline` and whose
    /// listeners answer with `routes`.
    pub(crate) fn new(
        config: &ServerConfig,
        pipeline: Arc<Pipeline>,
        routes: BTreeMap<SocketAddr, Routes>,
    ) -> Self {
        let site_tls = site_tls_of(config, &pipeline);
        let asks_client_certificates = site_tls.values().any(|t| t.client_ca.is_some());
        Self {
            site_tls,
            asks_client_certificates,
            pipeline,
            routes,
            builders: Builders::new(&config.limits),
            limits: config.limits.clone(),
            timeouts: config.timeouts.clone(),
            proxy_protocol: config.proxy_protocol.clone(),
        }
    }
}

/// The configuration new requests use.
pub type CurrentGeneration = Arc<ArcSwap<Generation>>;

/// The site of `routes` that answers `req`'s host.
fn site_for<'r>(routes: &'r Routes, req: &Request<Incoming>) -> Option<&'r Arc<Site>> {
    if let [(None, site)] = &**routes {
        return Some(site);
    }
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .map(strip_port);
    routes
        .iter()
        .find(|(h, _)| match (h, host) {
            (Some(h), Some(host)) => host_matches(h, host),
            (None, _) => true,
            _ => false,
        })
        .map(|(_, s)| s)
}

/// Whether a request's `host` is the name a binding gives (lower case),
/// or below it for a wildcard `*.example.com`: one name or more before
/// `.example.com`, as IIS 10's wildcard host answers `a.example.com` and
/// `a.b.example.com` but not `example.com`.
pub(crate) fn host_matches(bound: &str, host: &str) -> bool {
    match bound.strip_prefix('*') {
        Some(suffix) => {
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && are_labels(&host[..host.len() - suffix.len()])
        }
        None => bound.eq_ignore_ascii_case(host),
    }
}

/// Whether `name` is one or more host name labels joined by dots: what a
/// wildcard's `*` stands for. A `Host` may hold more (an empty label,
/// `%2e`, `!`, `*`), which names no host below the wildcard.
fn are_labels(name: &[u8]) -> bool {
    name.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The order routes of one address are tried in, as http.sys tries them:
/// host names first, then wildcard hosts (the longest, most particular
/// first), then the binding without a host, which catches the rest.
pub(crate) fn route_rank(host: Option<&str>) -> (u8, std::cmp::Reverse<usize>) {
    match host {
        Some(h) if h.starts_with('*') => (1, std::cmp::Reverse(h.len())),
        Some(_) => (0, std::cmp::Reverse(0)),
        None => (2, std::cmp::Reverse(0)),
    }
}

/// The host name of a `Host` value: without its port, and without the one
/// trailing dot of a fully qualified name (`example.com.` is `example.com`,
/// as TLS's SNI already has it).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether an HTTP/1.x client asked to keep its connection after this
/// request (RFC 9112 §9.3: 1.1 unless it says `close`, 1.0 only if it says
/// `keep-alive`).
fn client_keeps_alive<B>(req: &Request<B>) -> bool {
    let says = |option| has_connection_option(req.headers(), option);
    match req.version() {
        http::Version::HTTP_11 => !says("close"),
        http::Version::HTTP_10 => says("keep-alive"),
        _ => false,
    }
}

/// Whether a message's `Connection` header lists `option` (RFC 9110
/// §7.6.1: comma-separated, case-insensitive, in any of its lines).
fn has_connection_option(headers: &http::HeaderMap, option: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(option)))
    })
}

/// Whether a message's `Connection` header has the `close` option.
fn says_close(headers: &http::HeaderMap) -> bool {
    has_connection_option(headers, "close")
}

fn plain_status(status: StatusCode, close: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    resp.extensions_mut().insert(ServerMade);
    if close {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Marks a response the server made itself, outside the pipeline (a
/// refused request, a failed module): [`Finish`] gives it the configured
/// `Server` header, which the pipeline gives the responses it makes (and
/// which a module may remove from those, so it is not added to every
/// response on the way out).
#[derive(Debug, Clone, Copy)]
struct ServerMade;

/// Why a request gets no response.
#[derive(Debug, Clone, Copy)]
pub enum NoResponse {
    /// A module asked for the connection to be reset: hyper closes it
    /// without a response (HTTP/2 resets the stream).
    Reset,
    /// An HTTP/2 stream opened after the connection began to close (its
    /// GOAWAY went out): refused unprocessed with REFUSED_STREAM, which
    /// tells the client it may send the request again on another
    /// connection (RFC 9113 §8.7). hyper's GOAWAY becomes final only once
    /// the client answers a PING; until then it would serve new streams.
    Refused,
    /// A WebSocket over HTTP/2 answered with a success that is not a
    /// switch: its stream is cancelled (CANCEL), which fails the
    /// WebSocket; nothing failed on the server's side.
    NotSwitched,
}

/// REFUSED_STREAM as hyper finds it ([`NoResponse::Refused`]'s source):
/// made once, so that a [`NoResponse`] holds nothing to drop and a reply
/// stays as cheap to move as before.
static REFUSED_STREAM: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Reason::REFUSED_STREAM.into());

/// CANCEL, [`NoResponse::NotSwitched`]'s source.
static CANCEL: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Reason::CANCEL.into());

impl std::fmt::Display for NoResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoResponse::Reset => f.write_str("the connection was reset by a module"),
            NoResponse::Refused => f.write_str("a stream opened after GOAWAY was refused"),
            NoResponse::NotSwitched => {
                f.write_str("a WebSocket over HTTP/2 was answered without a switch")
            }
        }
    }
}

impl std::error::Error for NoResponse {
    /// hyper resets a failed HTTP/2 stream with the reason it finds here.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NoResponse::Reset => None,
            NoResponse::Refused => Some(&*REFUSED_STREAM),
            NoResponse::NotSwitched => Some(&*CANCEL),
        }
    }
}

type Reply = Result<Response<ResponseBody>, NoResponse>;

/// A stream opened on an HTTP/2 connection that went away: refused
/// ([`NoResponse::Refused`]). Out of line: it is rare, and kept out of
/// [`handle`]'s body.
#[cold]
#[inline(never)]
fn refuse_stream(state: &Arc<ConnectionState>, mut finish: Finish) -> ReplyFuture {
    state.activity.stream_refused();
    ReplyFuture::ready(finish.apply(Err(NoResponse::Refused)))
}

/// The hyper service: one request on `state`'s connection. The request
/// counts as in service from this call (made by hyper as soon as the head is
/// parsed) until hyper drops the response body.
///
/// The common request (every module answers synchronously, one final send)
/// is answered within this call: the returned future is ready at once, and
/// nothing is boxed or spawned for it.
pub fn handle(state: &Arc<ConnectionState>, mut req: Request<Incoming>) -> ReplyFuture {
    let has_body = !http_body::Body::is_end_stream(req.body());
    let mut finish = Finish {
        in_service: Some(state.request_started(has_body)),
        last: false,
        hsts: None,
        http10: req.version() == http::Version::HTTP_10,
    };
    let generation = state.current.load();
    if req.version() == http::Version::HTTP_2
        && state.activity.is_draining()
        && !state
            .activity
            .serves_after_goaway(generation.limits.http2_max_concurrent_streams)
    {
        return refuse_stream(state, finish);
    }
    if let Err(refusal) = check_head(
        &req,
        &generation.limits,
        state.activity.framing_conflict(),
        has_body,
    ) {
        note_refused_request(state.connection.remote_addr, &refusal, &req);
        return ReplyFuture::ready(finish.apply(Ok(refusal_response(refusal))));
    }
    if req.version() == http::Version::HTTP_2 {
        http2_fields_as_http1(&mut req);
    }
    finish.last = state.is_last_request(&generation.limits);
    if finish.last && req.version() == http::Version::HTTP_2 {
        // HTTP/2 has no `Connection: close` (RFC 9113 §8.2.2): GOAWAY, and
        // the connection ends once its open streams are done.
        state.activity.close_after_exchange();
        finish.last = false;
    }
    // A request body no module reads to its end is read and dropped after
    // the response, so the connection serves the next request (HTTP/1.x).
    // Not after `Expect: 100-continue`: the client waits for a 100 before
    // it sends the body, and reading would make hyper send that 100 after
    // the final response. The connection then closes, as it does when the
    // body is too long to discard.
    let discard_body = has_body
        && !finish.last
        && client_keeps_alive(&req)
        && !req.headers().contains_key(http::header::EXPECT);
    match serve(state, &generation, req, discard_body, &mut finish) {
        Answer::Now(reply) => ReplyFuture::ready(finish.apply(reply)),
        Answer::Later(rx) => ReplyFuture(ReplyState::Waiting(rx, finish)),
    }
}

/// Gives an HTTP/2 request the header fields an HTTP/1.1 request of the same
/// meaning has, as IIS and nginx present them to what runs behind them:
///
/// - `Host` from `:authority` when the client sent no `Host` (modules that
///   route or redirect by `Host` read it the same over either version;
///   `check_head` has already refused a `Host` that differs);
/// - the cookie crumbs a browser sends one per field, joined into one
///   `Cookie` with `; ` (RFC 9113 §8.2.3), so a module or backend that reads
///   the one `Cookie` field of HTTP/1.1 sees every cookie.
fn http2_fields_as_http1(req: &mut Request<Incoming>) {
    if !req.headers().contains_key(HOST) {
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(HOST, host);
        }
    }
    let headers = req.headers_mut();
    let mut crumbs = headers.get_all(http::header::COOKIE).iter();
    if let (Some(first), Some(_)) = (crumbs.next(), crumbs.next()) {
        let mut joined = Vec::with_capacity(64);
        // Empty crumbs carry no cookie: no `; ` for them.
        for crumb in std::iter::once(first)
            .chain(headers.get_all(http::header::COOKIE).iter().skip(1))
            .filter(|c| !c.is_empty())
        {
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(crumb.as_bytes());
        }
        if let Ok(cookie) = HeaderValue::from_bytes(&joined) {
            headers.insert(http::header::COOKIE, cookie);
        }
    }
}

/// An HTTP/2 extended CONNECT (RFC 8441): one for a WebSocket becomes the
/// request HTTP/1.1 makes for it, `GET` with `Connection: upgrade`,
/// `Upgrade: websocket` and a `Sec-WebSocket-Key` of the server's making
/// (RFC 8441 §5 leaves the key out; modules and the servers behind them
/// expect one), so every
/// module that answers a WebSocket handshake answers this one too. Returns
/// where the stream comes from after the answer; another `:protocol` gets
/// 501. A plain CONNECT is left as it is.
fn extended_connect(
    req: &mut Request<Incoming>,
) -> Result<Option<hyper::upgrade::OnUpgrade>, StatusCode> {
    if req.method() != Method::CONNECT {
        return Ok(None);
    }
    let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
        return Ok(None);
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        tracing::debug!(
            protocol = protocol.as_str(),
            "an HTTP/2 extended CONNECT for a protocol riis does not carry"
        );
        return Err(StatusCode::NOT_IMPLEMENTED);
    }
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    // Always the server's: HTTP/2 has no use for a client's key (RFC 8441
    // §5), and one the server made is what proves that the module (or the
    // server behind it) read this request.
    headers.insert(http::header::SEC_WEBSOCKET_KEY, websocket_key());
    Ok(Some(hyper::upgrade::on(req)))
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(riis_modules::nonce());
    HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// A reply, or where it will come from.
// `Now` is the common case and moves once, straight into the reply future:
// boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Answer {
    /// Known now.
    Now(Reply),
    /// Sent by the request's own task.
    Later(oneshot::Receiver<Reply>),
}

/// What every reply gets on its way out.
struct Finish {
    /// Moved into the response body (see [`handle`]).
    in_service: Option<InService>,
    /// The connection's last request: `Connection: close`.
    last: bool,
    /// The site's `Strict-Transport-Security`, on TLS.
    hsts: Option<HeaderValue>,
    /// The client speaks HTTP/1.0 (see [`Finish::apply`]).
    http10: bool,
}

impl Finish {
    /// Whether the client ended its side of the connection
    /// ([`crate::connection::Activity::peer_closed`]).
    fn peer_closed(&self) -> bool {
        self.in_service.as_ref().is_some_and(InService::peer_closed)
    }

    fn apply(&mut self, reply: Reply) -> Reply {
        let mut r = reply?;
        if r.extensions().get::<ServerMade>().is_some() {
            if let Some(server) = self.in_service.as_ref().and_then(InService::server_header) {
                let _ = r.headers_mut().try_insert(http::header::SERVER, server);
            }
        }
        // `try_`: a module may have filled the header map to its limit; the
        // response then goes without these rather than panic.
        if let Some(value) = self.hsts.take() {
            if let Ok(entry) = r
                .headers_mut()
                .try_entry(http::header::STRICT_TRANSPORT_SECURITY)
            {
                entry.or_insert(value);
            }
        }
        // A 101 hands the connection over (hyper adds no close to it).
        if self.last && r.status() != StatusCode::SWITCHING_PROTOCOLS {
            let _ = r
                .headers_mut()
                .try_insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // hyper promises an HTTP/1.0 client that asked for keep-alive
        // `Connection: keep-alive` on every response it calls HTTP/1.1, and
        // writes it after our `close` too (`close, keep-alive`), even when
        // it then closes: after a `close`, or after a body without a length,
        // which HTTP/1.0 can only end by closing (RFC 9112 §6.3, Appendix
        // C.2.2). A response it is told is HTTP/1.0 gets no such promise.
        if self.http10
            && (says_close(r.headers())
                || !(r.headers().contains_key(http::header::CONTENT_LENGTH)
                    || http_body::Body::size_hint(r.body()).exact().is_some()))
        {
            *r.version_mut() = http::Version::HTTP_10;
        }
        if let Some(guard) = self.in_service.take() {
            r.body_mut().in_service(guard);
        }
        Ok(r)
    }
}

/// The future of one request's reply: ready at once for the common request,
/// else waiting for the request's task. `Unpin`, so hyper can be driven
/// without shutting the connection down (parking needs that).
pub struct ReplyFuture(ReplyState);

enum ReplyState {
    Ready(Option<Reply>),
    Waiting(oneshot::Receiver<Reply>, Finish),
}

impl ReplyFuture {
    fn ready(reply: Reply) -> Self {
        Self(ReplyState::Ready(Some(reply)))
    }
}

impl std::future::Future for ReplyFuture {
    type Output = Reply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Reply> {
        match &mut self.0 {
            ReplyState::Ready(reply) => {
                std::task::Poll::Ready(reply.take().unwrap_or(Err(NoResponse::Reset)))
            }
            ReplyState::Waiting(rx, finish) => {
                let reply = match std::pin::Pin::new(rx).poll(cx) {
                    std::task::Poll::Ready(reply) => reply.unwrap_or(Err(NoResponse::Reset)),
                    // The client ended its side of the connection while
                    // the request waits: given up as if it had left (the
                    // request's task sees its reply dropped), and the
                    // connection closes without an answer.
                    std::task::Poll::Pending if finish.peer_closed() => Err(NoResponse::Reset),
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                };
                std::task::Poll::Ready(finish.apply(reply))
            }
        }
    }
}

/// A refusal as a response that closes the connection.
fn refusal_response(refusal: Refusal) -> Response<ResponseBody> {
    let mut resp = plain_status(refusal.status, true);
    *resp.body_mut() =
        ResponseBody::from_chunks(vec![EntityChunk::Memory(Bytes::from(refusal.body()))]);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

fn serve(
    state: &Arc<ConnectionState>,
    generation: &Generation,
    req: Request<Incoming>,
    discard_body: bool,
    finish: &mut Finish,
) -> Answer {
    let site = generation
        .routes
        .get(&state.listener)
        .and_then(|routes| site_for(routes, &req))
        .cloned();
    let Some(site) = site else {
        // No site answers this host name: http.sys's 400 with its reason,
        // and the connection closes as there (a client that sends a wrong
        // name is more likely lost than about to send a right one).
        let refusal = Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "Bad Request - Invalid Hostname (no site of this address and port has this host name)",
        };
        note_refused_request(state.connection.remote_addr, &refusal, &req);
        return Answer::Now(Ok(refusal_response(refusal)));
    };
    // HSTS goes out on TLS connections only (RFC 6797 §7.2).
    if state.connection.is_tls {
        let tls = generation.site_tls.get(&site.info().site_id);
        finish.hsts = tls.and_then(|t| t.hsts.clone());
        let asked = state.connection.client_certificate_ca.as_deref();
        if (asked.is_some() || generation.asks_client_certificates)
            && (asked != tls.and_then(|t| t.client_ca.as_deref())
                || state.connection.client_certificate_crl.as_deref()
                    != tls.and_then(|t| t.client_crl.as_deref()))
        {
            // The handshake was made for another site's host name, whose
            // client certificate policy differs (a connection reused for
            // a second host name, or SNI and Host that disagree): 421,
            // and the client retries on a connection of its own
            // (RFC 9110 §15.5.20), as nginx answers.
            return Answer::Now(Ok(plain_status(StatusCode::MISDIRECTED_REQUEST, false)));
        }
    }
    serve_site(state, generation, site, req, discard_body)
}

fn serve_site(
    state: &Arc<ConnectionState>,
    generation: &Generation,
    site: Arc<Site>,
    mut req: Request<Incoming>,
    discard_body: bool,
) -> Answer {
    let http2_websocket = match extended_connect(&mut req) {
        Ok(upgrade) => upgrade,
        Err(status) => return Answer::Now(Ok(plain_status(status, false))),
    };
    let (parts, body) = req.into_parts();
    let conn = &state.connection;
    let shape = ResponseShape {
        is_head: parts.method == Method::HEAD,
        // File bytes go out with sendfile on plain HTTP/1.x connections
        // (HTTP/2 frames and TLS records are built in user space).
        files: (parts.version != http::Version::HTTP_2 && state.sends_files())
            .then(|| state.clone()),
        discard_request_body: discard_body.then(|| state.clone()),
        http2: (parts.version == http::Version::HTTP_2).then(|| state.clone()),
        http2_websocket,
        expects_continue: parts.version != http::Version::HTTP_2
            && parts.headers.contains_key(http::header::EXPECT),
    };
    // (An HTTP/2 request names its authority even with `:path *`.)
    if parts.method == Method::OPTIONS
        && parts.uri.path() == "*"
        && (parts.uri.authority().is_none() || parts.version == http::Version::HTTP_2)
    {
        // `OPTIONS *` asks about the server itself (RFC 9110 §9.3.7, the
        // asterisk form of RFC 9112 §3.2.4): there is no resource for the
        // pipeline to map, and the answer is a plain 200, as Apache and
        // Go's server give. Any other method with `*` is refused below.
        return Answer::Now(Ok(plain_status(StatusCode::OK, false)));
    }
    let request = match HttpRequest::new(
        parts.method,
        parts.uri,
        parts.version,
        parts.headers,
        conn.local_addr,
        conn.remote_addr,
    ) {
        Ok(mut r) => {
            r.set_body_expected(!http_body::Body::is_end_stream(&body));
            r.set_tls(conn.is_tls || conn.tls_ended_at_balancer);
            r.set_sends_files_without_copy(shape.files.is_some());
            r.set_websocket_over_http2(shape.http2_websocket.is_some());
            r
        }
        Err(refused) => {
            let asked = crate::strict::Asked::of(&refused.method, &refused.uri, &refused.headers);
            crate::strict::note_refusal(
                conn.remote_addr,
                StatusCode::BAD_REQUEST,
                &refused.to_string(),
                Some(asked),
            );
            return Answer::Now(Ok(plain_status(StatusCode::BAD_REQUEST, true)));
        }
    };
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let ctx = HttpContext::new(generation.pipeline.clone(), site, conn.clone(), request, id);
    let mut exec = RequestExecution::new(ctx);

    let first = match exec.resume() {
        Step::Send => {
            let out = exec.take_output().expect("Step::Send carries output");
            if out.is_final {
                // The fast path: one send, the whole response known.
                let switching = is_switch(&out).then(|| can_switch(&mut exec, &body));
                exec.complete_send(Ok(out.len()));
                // Only the disposal is left after the final send (it comes
                // after EndRequest): nothing there waits.
                while !matches!(exec.resume(), Step::Done) {}
                let reply = match switching {
                    // Nobody is left to use the connection: it closes
                    // after the head.
                    Some(can) => match switching_response(out, can, &shape) {
                        Switching::Switch(reply) | Switching::Refused(reply) => reply,
                    },
                    None if unswitched_websocket(&out, &shape) => Err(NoResponse::NotSwitched),
                    None => final_response(out, &shape),
                };
                if shape.discard_request_body.is_none() {
                    return Answer::Now(reply);
                }
                let hold = RequestBodyHold::default();
                let reply = hold_request_body(reply, &hold, &shape, &body, false, false);
                hold.put(body);
                return Answer::Now(reply);
            }
            Event::Send(out)
        }
        Step::Done => {
            return Answer::Now(Ok(plain_status(StatusCode::INTERNAL_SERVER_ERROR, true)))
        }
        step => Event::Other(step),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let timeouts = &generation.timeouts;
    let execution = (timeouts.execution > 0).then(|| Duration::from_secs(timeouts.execution));
    let body = BodyReader::new(body, timeouts, state.clone());
    // Boxed: the future holds the whole execution (several KB), and tokio
    // moves a task's future by value into its cell and again when it
    // finishes; a box makes each of those moves a pointer's.
    let listed = Listed::new(&exec, id, generation.pipeline.clone());
    tokio::spawn(Box::pin(drive(
        exec, listed, first, body, execution, shape, reply_tx,
    )));
    Answer::Later(reply_rx)
}

enum Event {
    Send(Output),
    Other(Step),
}

/// Runs a request that waits or streams, in its own task.
async fn drive(
    mut exec: RequestExecution,
    listed: Listed,
    first: Event,
    mut reader: BodyReader,
    execution: Option<Duration>,
    mut shape: ResponseShape,
    reply: oneshot::Sender<Reply>,
) {
    let mut reply = Some(reply);
    let hold = RequestBodyHold::default();
    let mut stream: Option<mpsc::Sender<StreamItem>> = None;
    // Where the final send's delivery calls go when the head went first.
    let mut delivery_share: Option<Arc<DeliveryShare>> = None;
    // The response has no body (HEAD, 1xx, 204, 304) and went out whole.
    let mut discarding = false;
    // The response was a 101: the connection is the module's stream.
    let mut switched = false;
    let mut next = Some(first);
    // Since when the request has neither waited for anything nor sent a
    // byte (see `Step::Yield` below).
    let mut busy_since = None;
    loop {
        // Its modules run again (the wait ended) until it notes its next
        // wait, for `riis status`.
        listed.note_running();
        let event = next.take().unwrap_or_else(|| match exec.resume() {
            Step::Send => Event::Send(exec.take_output().expect("Step::Send carries output")),
            step => Event::Other(step),
        });
        if matches!(
            event,
            Event::Other(Step::Wait(_) | Step::WaitWhileReading { .. } | Step::ReadEntity { .. })
        ) {
            busy_since = None;
        }
        // Where it stands, for `riis status`, before it waits.
        listed.note(&exec);
        match event {
            Event::Send(mut out) => {
                let len = out.len();
                if let Some(share) = &delivery_share {
                    // (Empty but for the final send.)
                    share.watch(std::mem::take(&mut out.delivery));
                }
                // Whether something went to the client: a send that did not
                // (nothing to send, nowhere to send it) completes at once,
                // and a module flushing from each flush's completion would
                // spin; the engine's yields then meet the limits below.
                let mut passed = true;
                let sent = if let Some(reply) = reply.take() {
                    // In full duplex the head goes out while the module
                    // still reads the body: what is left of it now says
                    // nothing about what will be left at the end.
                    let reading_on = !out.is_final && exec.context().is_full_duplex();
                    let is_final = out.is_final;
                    let mut response = if unswitched_websocket(&out, &shape) {
                        Err(NoResponse::NotSwitched)
                    } else if is_switch(&out) {
                        let can = can_switch(&mut exec, &reader.body);
                        match switching_response(out, can, &shape) {
                            Switching::Switch(response) => {
                                if response.is_ok() {
                                    let stream = match shape.http2_websocket.take() {
                                        Some(upgrade) => crate::upgrade::http2_stream(
                                            upgrade,
                                            reader.state.hold_in_service(),
                                        ),
                                        None => reader.state.expect_upgrade(),
                                    };
                                    exec.set_upgraded_stream(stream);
                                    listed.note_upgraded();
                                }
                                switched = true;
                                response
                            }
                            Switching::Refused(refused) => {
                                discarding = true;
                                refused
                            }
                        }
                    } else if out.is_final {
                        final_response(out, &shape)
                    } else {
                        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                        let (response, bodiless) = streaming_response(out, rx, &shape);
                        if bodiless {
                            // The head went out with no body: what the
                            // module sends later is dropped here, as
                            // sent (it must not fail the module's sends).
                            discarding = true;
                        } else {
                            stream = Some(tx);
                        }
                        response
                    };
                    if !is_final {
                        if let Ok(r) = &mut response {
                            // The final send comes later, with its calls.
                            let share = Arc::new(DeliveryShare::default());
                            delivery_share = Some(share.clone());
                            r.body_mut().share_delivery(share);
                        }
                    }
                    let response = hold_request_body(
                        response,
                        &hold,
                        &shape,
                        &reader.body,
                        reading_on,
                        reader.ended,
                    );
                    match reply.send(response) {
                        Ok(()) => true,
                        Err(Ok(mut unsent)) => {
                            // The client left before the head went.
                            unsent.body_mut().not_sent();
                            false
                        }
                        Err(Err(_)) => false,
                    }
                } else if switched {
                    passed = false;
                    // After a 101 the module writes to its stream; the
                    // response has nothing more to send.
                    if !out.chunks.is_empty() {
                        tracing::warn!(
                            "a module wrote to the response after 101 Switching Protocols; \
                             after a 101 the connection is written through its upgraded stream"
                        );
                    }
                    out.chunks.is_empty()
                } else if discarding {
                    passed = false;
                    if out.disconnect || out.reset {
                        reader.state.activity.close_after_exchange();
                    }
                    if out.paced {
                        // Pieces nobody will read still take turns.
                        tokio::task::consume_budget().await;
                    }
                    true
                } else if let Some(tx) = &stream {
                    let is_final = out.is_final;
                    // (The engine never paces an abort.)
                    let paced = out.paced;
                    let empty = out.chunks.is_empty() && out.trailers.is_none();
                    passed = !empty;
                    // (An empty send does not ask the channel: after a
                    // body of declared length went out whole, its receiver
                    // is gone with the client still there.)
                    let ok = out.reset
                        || empty
                        || tx
                            .send(Ok(StreamPiece {
                                chunks: out.chunks,
                                trailers: out.trailers,
                            }))
                            .await
                            .is_ok();
                    if ok && paced {
                        // The next send is made from what a module
                        // deferred: made once the client has taken what is
                        // queued, it is never held whole for a slow client.
                        let _ = tx.reserve_many(STREAM_QUEUE).await;
                        // Pieces that make nothing to send wait for nobody:
                        // the worker's other tasks get their turn anyway.
                        tokio::task::consume_budget().await;
                    }
                    if out.reset || out.truncated || out.disconnect {
                        // The connection ends: the rest of the request body
                        // is not worth reading.
                        hold.discard_on(None);
                    }
                    if out.reset || out.truncated {
                        // The message must not end as if it were whole: the
                        // body fails, and hyper drops the connection without
                        // the last chunk (HTTP/1.1) or resets the stream
                        // (HTTP/2); an HTTP/1.x connection then ends with a
                        // reset, which HTTP/1.0 clients and responses without
                        // a length need to tell it from the end.
                        reader.state.activity.abort_on_close();
                        let why = if out.reset {
                            "a module reset the connection"
                        } else {
                            "the request failed after the response headers were sent"
                        };
                        let _ = tx.send(Err(std::io::Error::other(why))).await;
                        stream = None;
                    } else {
                        if out.disconnect {
                            // Asked for after the head went out without
                            // `Connection: close`: the connection ends once
                            // this exchange is done.
                            reader.state.activity.close_after_exchange();
                        }
                        if is_final {
                            stream = None;
                        }
                    }
                    ok
                } else {
                    passed = false;
                    false
                };
                if passed && sent {
                    busy_since = None;
                }
                exec.complete_send(if sent { Ok(len) } else { Err(()) });
            }
            Event::Other(Step::ReadEntity { max }) => {
                let read = reader.read(max).await;
                report_read(&mut exec, read);
            }
            Event::Other(Step::Wait(waiter)) => {
                // No read is under way (a full-duplex module that stopped
                // reading): the client's silence from here is not its own.
                reader.alongside_since = None;
                let limit = execution.filter(|_| !switched && exec.wait_has_execution_limit());
                let (exec, reader) = (&mut exec, &mut reader);
                wait_for_module(waiter, None, limit, exec, reader, &mut reply, &stream).await;
            }
            Event::Other(Step::WaitWhileReading { waiter, max }) => {
                let limit = execution.filter(|_| exec.wait_has_execution_limit());
                let (exec, reader) = (&mut exec, &mut reader);
                wait_for_module(waiter, Some(max), limit, exec, reader, &mut reply, &stream).await;
            }
            // Long enough on this thread: other connections' turn. A
            // module that keeps completing its own operations never waits,
            // so the execution limit and the client's leaving are checked
            // here too, or it would run on for ever, shutdown included.
            Event::Other(Step::Yield) => {
                let since = *busy_since.get_or_insert_with(tokio::time::Instant::now);
                let gone = match (&reply, &stream) {
                    (Some(reply), _) => reply.is_closed(),
                    (None, Some(stream)) => stream.is_closed() && !exec.response_sent_whole(),
                    (None, None) => false,
                };
                // After a 101 too: a connection's own protocol waits
                // (Step::Wait), it does not spin. (Nor can the client's
                // leaving be seen then, or when the response went out
                // bodiless: the limit is what ends those.)
                let over = execution.is_some_and(|limit| since.elapsed() > limit);
                let expired = (gone && exec.abandon_busy())
                    || (over
                        && exec.expire_busy(
                            "a module kept completing its own operations past timeouts.execution",
                        ));
                // Not at a completion (a body read's pieces): its turn is
                // given up all the same, or the task would never return to
                // the runtime.
                if !expired {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Event::Other(Step::Done) => break,
            Event::Other(Step::Send) => unreachable!("sends are turned into Event::Send"),
        }
    }
    if let Some(reply) = reply {
        let _ = reply.send(Ok(plain_status(StatusCode::INTERNAL_SERVER_ERROR, true)));
    }
    // What is left of the request body goes with the response (see
    // `RequestBodyHold`).
    hold.put(reader.body);
}

/// Waits for a module's news ([`Step::Wait`]), its execution `limit`, or
/// the client's leaving; in full duplex ([`Step::WaitWhileReading`]) reads
/// up to `reading` body bytes meanwhile. The read is dropped unfinished
/// when something else comes first, which loses nothing: a body frame is
/// taken only once it is whole.
///
/// The limit does not apply to a connection that switched protocols (it
/// lasts as long as its new protocol does; ASP.NET's does not apply to
/// WebSockets either) nor to a module that keeps a timeout of its own
/// (ReverseProxy, FastCgi): the caller leaves it out then.
async fn wait_for_module(
    waiter: riis_pipeline::CompletionWaiter,
    reading: Option<usize>,
    limit: Option<Duration>,
    exec: &mut RequestExecution,
    reader: &mut BodyReader,
    reply: &mut Option<oneshot::Sender<Reply>>,
    stream: &Option<mpsc::Sender<StreamItem>>,
) {
    let limit = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    // A body that went whole by its length lets its receiver go with the
    // client still there: only the head's reply tells of a client leaving.
    let stream = if exec.response_sent_whole() {
        &None
    } else {
        stream
    };
    tokio::select! {
        () = waiter.wait() => {}
        read = reader.read_alongside(reading.unwrap_or(1)), if reading.is_some() => {
            report_read(exec, read);
        }
        () = limit => {
            exec.expire_wait("a module did not complete within timeouts.execution");
        }
        () = client_gone(reply, stream) => {
            // Nobody will read the answer (the client left, or the server
            // closed the connection at its drain deadline): end the request
            // rather than keep its modules until they complete.
            exec.abandon_wait();
        }
    }
}

/// Hands a body read's outcome to the request.
fn report_read(exec: &mut RequestExecution, read: Result<Bytes, BodyError>) {
    match read {
        Ok(data) => exec.complete_read(Ok(data)),
        Err(BodyError::Failed) => exec.complete_read(Err(())),
        Err(BodyError::TooSlow(why)) => {
            exec.expire_read(why);
        }
        Err(BodyError::Malformed) => {
            exec.reject_read("the request body is not valid chunked encoding");
        }
    }
}

/// Resolves once the connection can no longer take this request's
/// response: hyper dropped the request (the connection closed) before the
/// response went out, or the receiver of a streamed body went away. Never
/// resolves when neither is held.
async fn client_gone(
    reply: &mut Option<oneshot::Sender<Reply>>,
    stream: &Option<mpsc::Sender<StreamItem>>,
) {
    match (reply, stream) {
        (Some(reply), _) => reply.closed().await,
        (None, Some(stream)) => stream.closed().await,
        (None, None) => std::future::pending().await,
    }
}

/// Reads request body bytes for `Step::ReadEntity`, holding the client to
/// the body timeouts while a module waits.
struct BodyReader {
    body: Incoming,
    leftover: Bytes,
    ended: bool,
    /// `timeouts.body_read`: the longest wait for the next body bytes.
    between_reads: Option<Duration>,
    /// `timeouts.body_min_rate` in bytes per second (0: no floor).
    min_rate: u64,
    /// `timeouts.body_min_rate_grace`.
    grace: Duration,
    /// Time spent waiting for body bytes so far. Only waits count: while
    /// the module works on what it read, a slow client is not its fault.
    waited: Duration,
    /// Body bytes received so far.
    received: u64,
    /// The length the request declared (`Content-Length`), if any.
    declared: Option<u64>,
    /// Since when a read made alongside a module's wait (full duplex) has
    /// waited for bytes, across the waits it is dropped from.
    alongside_since: Option<Instant>,
    /// Told when the body was read to its end.
    state: Arc<ConnectionState>,
}

/// Why a body read ended without bytes.
/// Whether a body error is hyper's refusal of the bytes (it reports a
/// malformed chunk as invalid data) rather than the client going away.
fn is_malformed_body(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        source = e.source();
    }
    false
}

enum BodyError {
    /// The client went away.
    Failed,
    /// The client sent a body that is not valid HTTP (a malformed chunk).
    Malformed,
    /// The client is too slow: which timeout ran out.
    TooSlow(&'static str),
}

impl BodyReader {
    fn new(body: Incoming, timeouts: &Timeouts, state: Arc<ConnectionState>) -> Self {
        use http_body::Body as _;
        let declared = body.size_hint().exact();
        Self {
            declared,
            body,
            leftover: Bytes::new(),
            ended: false,
            between_reads: (timeouts.body_read > 0)
                .then(|| Duration::from_secs(timeouts.body_read)),
            min_rate: timeouts.body_min_rate,
            grace: Duration::from_secs(timeouts.body_min_rate_grace),
            waited: Duration::ZERO,
            received: 0,
            alongside_since: None,
            state,
        }
    }

    /// When a wait that starts at `start` gives up, and which timeout that
    /// is. The rate floor is met as long as the bytes received cover the
    /// time waited (after the grace), so the wait may last until
    /// `max(grace, received / rate)` of waiting in all.
    fn deadline(&self, start: Instant) -> Option<(Instant, &'static str)> {
        let between = self
            .between_reads
            .map(|d| (start + d, "no request body bytes within timeouts.body_read"));
        [between, self.rate_deadline(start)]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// The `body_min_rate` part of [`BodyReader::deadline`]; none without a
    /// floor, or when it lies beyond what `Instant` can hold (an enormous
    /// body at a tiny rate).
    fn rate_deadline(&self, start: Instant) -> Option<(Instant, &'static str)> {
        if self.min_rate == 0 {
            return None;
        }
        let earned =
            Duration::try_from_secs_f64(self.received as f64 / self.min_rate as f64).ok()?;
        let allowed = earned.max(self.grace).saturating_sub(self.waited);
        Some((
            start.checked_add(allowed)?,
            "the request body arrived slower than timeouts.body_min_rate",
        ))
    }

    async fn read(&mut self, max: usize) -> Result<Bytes, BodyError> {
        self.alongside_since = None;
        while self.leftover.is_empty() && !self.ended {
            let start = Instant::now();
            let next = match self.deadline(start) {
                Some((at, why)) => {
                    match tokio::time::timeout_at(at.into(), self.body.frame()).await {
                        Ok(next) => next,
                        Err(_) => {
                            self.ended = true;
                            return Err(BodyError::TooSlow(why));
                        }
                    }
                }
                None => self.body.frame().await,
            };
            self.waited += start.elapsed();
            self.take(next)?;
        }
        let n = max.min(self.leftover.len());
        Ok(self.leftover.split_to(n))
    }

    /// A read made while the module also waits for other news (full
    /// duplex), and dropped whenever that comes first: nothing is lost,
    /// and the wait goes on counting from where it began. Only
    /// `timeouts.body_read` applies, between two pieces of the body, as
    /// nginx's `client_body_timeout` does: such a client may rightly send
    /// little while it takes the answer, so `body_min_rate` does not.
    async fn read_alongside(&mut self, max: usize) -> Result<Bytes, BodyError> {
        while self.leftover.is_empty() && !self.ended {
            let since = *self.alongside_since.get_or_insert_with(Instant::now);
            let next = match self.between_reads {
                Some(limit) => {
                    match tokio::time::timeout_at((since + limit).into(), self.body.frame()).await {
                        Ok(next) => next,
                        Err(_) => {
                            self.ended = true;
                            return Err(BodyError::TooSlow(
                                "no request body bytes within timeouts.body_read",
                            ));
                        }
                    }
                }
                None => self.body.frame().await,
            };
            self.alongside_since = None;
            self.take(next)?;
        }
        let n = max.min(self.leftover.len());
        Ok(self.leftover.split_to(n))
    }

    /// Takes the next frame of the body: its bytes, or the body's end.
    fn take(
        &mut self,
        next: Option<Result<http_body::Frame<Bytes>, hyper::Error>>,
    ) -> Result<(), BodyError> {
        match next {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.received += data.len() as u64;
                    self.leftover = data;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body read failed");
                self.ended = true;
                return Err(if is_malformed_body(&e) {
                    BodyError::Malformed
                } else {
                    BodyError::Failed
                });
            }
            None => {
                self.ended = true;
                // An HTTP/2 stream the client reset with NO_ERROR ends
                // without an error, whatever it declared: short of its
                // declared length, the body was cut off, not whole (an
                // upload must not be taken as complete). HTTP/1.1 framing
                // reports this as an error already.
                if self.declared.is_some_and(|n| self.received < n) {
                    tracing::debug!(
                        received = self.received,
                        declared = ?self.declared,
                        "request body ended short of its Content-Length"
                    );
                    return Err(BodyError::Failed);
                }
                self.state.activity.request_body_read();
            }
        }
        Ok(())
    }
}

/// Status line and headers for hyper; a reason phrase a module set goes out
/// on HTTP/1 when it differs from the standard one.
fn with_head(head: ResponseHead, body: ResponseBody, disconnect: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers;
    if let Some(reason) = head.reason {
        if Some(&*reason) != head.status.canonical_reason() {
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()) {
                resp.extensions_mut().insert(phrase);
            }
        }
    }
    if disconnect {
        let _ = resp
            .headers_mut()
            .try_insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The most header fields a response may carry (modules set them; far
/// above what any client accepts, below what the header map holds).
const MAX_RESPONSE_HEADERS: usize = 10_000;

/// Notes a parsed request refused before the pipeline, with what it asked
/// for (see `strict::note_refusal`).
fn note_refused_request<B>(
    remote: std::net::SocketAddr,
    refusal: &Refusal,
    req: &http::Request<B>,
) {
    let asked = crate::strict::Asked::of(req.method(), req.uri(), req.headers());
    crate::strict::note_refusal(remote, refusal.status, refusal.reason, Some(asked));
}

/// The head of an output, or the one a module wrote into the entity itself
/// after suppressing headers (`HTTP/1.1 200 OK\r\nName: value\r\n\r\n…`).
fn head_of(out: &mut Output) -> Result<ResponseHead, StatusCode> {
    if let Some(head) = out.head.take() {
        if head.headers.len() > MAX_RESPONSE_HEADERS {
            // No client takes such a head, and hyper cannot add its own
            // fields to a map that full (it panics): a module's bug.
            tracing::error!(
                headers = head.headers.len(),
                "a response has more than {MAX_RESPONSE_HEADERS} header fields; it is answered with 500"
            );
            return Err(StatusCode::INTERNAL_SERVER_ERROR);
        }
        return Ok(head);
    }
    let mut raw = Vec::new();
    for chunk in &out.chunks {
        match chunk {
            EntityChunk::Memory(b) => raw.extend_from_slice(b),
            EntityChunk::File { .. } => break,
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let consumed = match parsed.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            tracing::error!("headers were suppressed but the entity does not start with a complete response head");
            return Err(StatusCode::BAD_GATEWAY);
        }
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(StatusCode::BAD_GATEWAY)?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| StatusCode::BAD_GATEWAY)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| StatusCode::BAD_GATEWAY)?;
        map.append(name, value);
    }
    let reason = parsed.reason.map(|r| std::borrow::Cow::Owned(r.to_owned()));
    // Drop the head bytes from the entity.
    let mut skip = consumed;
    out.chunks.retain_mut(|chunk| {
        if skip == 0 {
            return true;
        }
        if let EntityChunk::Memory(b) = chunk {
            let n = skip.min(b.len());
            skip -= n;
            bytes::Buf::advance(b, n);
            return !b.is_empty();
        }
        true
    });
    Ok(ResponseHead {
        status,
        reason,
        headers: map,
    })
}

/// How a response's body goes out.
struct ResponseShape {
    is_head: bool,
    /// The connection, when file ranges may use its sendfile queue.
    files: Option<Arc<ConnectionState>>,
    /// The connection, when what is left of the request body is to be
    /// discarded after the response (see `handle`).
    discard_request_body: Option<Arc<ConnectionState>>,
    /// The connection, when it speaks HTTP/2 (see [`Self::connection_close`]).
    http2: Option<Arc<ConnectionState>>,
    /// A WebSocket over HTTP/2 ([`extended_connect`]): where its stream
    /// comes from once the `200` that stands for the module's `101` went
    /// out.
    http2_websocket: Option<hyper::upgrade::OnUpgrade>,
    /// An HTTP/1.1 request with `Expect: 100-continue`, whose body is never
    /// discarded (see `handle`).
    expects_continue: bool,
}

impl ResponseShape {
    /// Whether the response carries `Connection: close`: on HTTP/1.x when a
    /// module asked for a disconnect. HTTP/2 has no such header (RFC 9113
    /// §8.2.2), and one stream cannot close the connection under the
    /// others: there the connection gets GOAWAY and ends once its open
    /// streams are done, this one included, as Go's server does for a
    /// handler's `Connection: close`.
    fn connection_close(&self, disconnect: bool) -> bool {
        match &self.http2 {
            Some(state) if disconnect => {
                state.activity.close_after_exchange();
                false
            }
            _ => disconnect,
        }
    }
}

/// Gives a response the request body to hold until the response is sent;
/// the hold discards the rest of it when `shape` says so and the response
/// keeps the connection open.
///
/// `body` is what is left of the request body. When more of it is
/// announced than the server discards ([`crate::body::DISCARD_LIMIT`]), the
/// connection cannot be kept, and the response says so (`Connection:
/// close`, RFC 9112 §9.6), so that a proxy in front does not send its next
/// request down a connection about to close. Not when the module reads on
/// (`reading_on`, full duplex): it will most likely read the body to its
/// end, and if it does not, the connection closes after the response all
/// the same, without the warning.
fn hold_request_body(
    reply: Reply,
    hold: &RequestBodyHold,
    shape: &ResponseShape,
    body: &Incoming,
    reading_on: bool,
    read_to_end: bool,
) -> Reply {
    reply.map(|mut resp| {
        let too_long = !reading_on
            && shape.discard_request_body.is_some()
            && http_body::Body::size_hint(body)
                .exact()
                .is_some_and(|left| left > crate::body::DISCARD_LIMIT);
        // After `Expect: 100-continue` what is left of the body is not
        // discarded, so the connection closes after the response: said
        // so, even while a module reads on (RFC 9110 §10.1.1), or a client
        // that had its 100 (a module began to read) sends the body and its
        // next request down a connection about to close (review M).
        // (A chunked body read to its end does not say so itself: hyper
        // knows the end of a `Content-Length` only. Review Q.)
        let undiscarded =
            shape.expects_continue && !read_to_end && !http_body::Body::is_end_stream(body);
        if too_long || undiscarded {
            let _ = resp
                .headers_mut()
                .try_insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if !says_close(resp.headers()) {
            hold.discard_on(shape.discard_request_body.clone());
        }
        resp.map(|body| body.holding(hold.clone()))
    })
}

/// The reply to the final send of a response not sent before. Its body
/// makes the send's delivery calls (a reply that goes nowhere drops them,
/// which tells them so).
fn final_response(mut out: Output, shape: &ResponseShape) -> Reply {
    if out.reset {
        return Err(NoResponse::Reset);
    }
    let delivery = std::mem::take(&mut out.delivery);
    let mut head = match head_of(&mut out) {
        Ok(h) => h,
        Err(status) => {
            let mut resp = plain_status(status, true);
            resp.body_mut().deliver_to(delivery);
            return Ok(resp);
        }
    };
    if shape.is_head {
        // Nothing is sent for HEAD; a Content-Length a module set stays,
        // but for a status that has none (RFC 9110 §8.6).
        // A module that wrote no body and gave no length leaves it out
        // (RFC 9110 §9.3.2: known only by producing the body, such as the
        // length of a body DynamicCompression would encode): a 0 would be
        // a false length.
        if head.status.is_informational() || head.status == StatusCode::NO_CONTENT {
            head.headers.remove(CONTENT_LENGTH);
        } else if head.status != StatusCode::NOT_MODIFIED
            && !head.headers.contains_key(CONTENT_LENGTH)
            && !out.is_empty()
        {
            head.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
        }
        let close = shape.connection_close(out.disconnect);
        let mut body = ResponseBody::empty();
        body.deliver_to(delivery);
        return Ok(with_head(head, body, close));
    }
    // hyper derives Content-Length from the body, which is exactly known.
    head.headers.remove(CONTENT_LENGTH);
    let mut body = if has_no_content(head.status) {
        // A body a module left in a 204 or 304 is not sent: hyper drops it
        // on HTTP/1 but would frame it on HTTP/2 (RFC 9110 §15.3.5,
        // §15.4.5).
        ResponseBody::empty()
    } else {
        ResponseBody::from_chunks(out.chunks)
            .with_files(shape.files.clone())
            .with_trailers(out.trailers)
    };
    body.deliver_to(delivery);
    Ok(with_head(
        head,
        body,
        shape.connection_close(out.disconnect),
    ))
}

/// Whether a send's head is `101 Switching Protocols`.
fn is_switch(out: &Output) -> bool {
    out.head
        .as_ref()
        .is_some_and(|head| head.status == StatusCode::SWITCHING_PROTOCOLS)
}

/// Whether `out` answers a WebSocket over HTTP/2 with a success that is
/// not a switch (a file, say, from a handler that ignores the handshake).
/// Over HTTP/1.1 such an answer fails the handshake; over HTTP/2 a 2xx
/// would tell the client its WebSocket is open (RFC 8441 §5), so the
/// stream is cancelled instead (RST_STREAM with CANCEL), which fails it.
fn unswitched_websocket(out: &Output, shape: &ResponseShape) -> bool {
    shape.http2_websocket.is_some()
        && out.head.as_ref().is_some_and(|head| {
            head.status.is_success() && head.status != StatusCode::SWITCHING_PROTOCOLS
        })
}

/// What a module's 101 comes to.
enum Switching {
    /// The head alone goes out; hyper then hands the connection over (see
    /// [`crate::upgrade`]).
    Switch(Reply),
    /// The request cannot switch (the client did not ask, or cannot be
    /// answered so on HTTP/2 or after a request body): a 500 goes out
    /// instead, the module's mistake logged.
    Refused(Reply),
}

/// Whether the request a module answered 101 may switch protocols: the
/// client asked (RFC 9110 §7.8) on HTTP/1.1 (hyper hands over such a
/// connection) and no body is left to come (the connection's next bytes are
/// the new protocol's). Judged only then, so other requests pay nothing.
/// One that may not is the module's mistake: logged, and the response
/// recorded as the 500 that goes out instead (LogRequest comes after).
fn can_switch(exec: &mut RequestExecution, body: &Incoming) -> bool {
    let request = exec.context().request();
    let can = request.can_switch_protocols()
        && request.headers().contains_key(http::header::UPGRADE)
        && http_body::Body::is_end_stream(body);
    if !can {
        tracing::error!(
            url = request.raw_url(),
            "a module answered 101 Switching Protocols to a request that cannot switch \
             (it needs HTTP/1.1, an Upgrade header and no body left unread); answered 500 instead"
        );
        exec.context_mut()
            .response_mut()
            .set_status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    can
}

/// The reply to a module's 101 (`can`: [`can_switch`]). For a WebSocket
/// over HTTP/2 it is a `200` (RFC 8441 §5), without the fields of
/// HTTP/1.1's handshake: `Connection` and `Upgrade` (hyper leaves those
/// out of HTTP/2 anyway) and `Sec-WebSocket-Accept`, which answered the
/// key the server made.
fn switching_response(mut out: Output, can: bool, shape: &ResponseShape) -> Switching {
    let refused = || Switching::Refused(Ok(plain_status(StatusCode::INTERNAL_SERVER_ERROR, false)));
    if out.reset {
        return Switching::Switch(Err(NoResponse::Reset));
    }
    let Some(mut head) = out.head.take() else {
        return refused();
    };
    if !can {
        return refused();
    }
    head.headers.remove(CONTENT_LENGTH);
    head.headers.remove(http::header::TRANSFER_ENCODING);
    if shape.http2_websocket.is_some() {
        head.status = StatusCode::OK;
        head.reason = None;
        for name in [
            CONNECTION,
            http::header::UPGRADE,
            http::header::SEC_WEBSOCKET_ACCEPT,
        ] {
            head.headers.remove(name);
        }
    }
    let mut body = ResponseBody::empty();
    body.deliver_to(std::mem::take(&mut out.delivery));
    Switching::Switch(Ok(with_head(head, body, false)))
}

/// Statuses whose responses have no content (RFC 9110 §6.4.1).
fn has_no_content(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The head of a response whose body follows in later sends, and whether
/// it has no body at all (HEAD, or a status without content): then it goes
/// out whole now, and the later sends are the caller's to drop.
fn streaming_response(
    mut out: Output,
    rx: mpsc::Receiver<StreamItem>,
    shape: &ResponseShape,
) -> (Reply, bool) {
    if out.reset {
        return (Err(NoResponse::Reset), false);
    }
    let mut head = match head_of(&mut out) {
        Ok(h) => h,
        Err(status) => return (Ok(plain_status(status, true)), false),
    };
    if shape.is_head || has_no_content(head.status) {
        // No body: hyper would drop it on HTTP/1 (and the module's next
        // send would then fail as if the client had left) and frame it on
        // HTTP/2. A HEAD keeps a length the module declared; a status
        // without content has none (RFC 9110 §8.6).
        if has_no_content(head.status) {
            head.headers.remove(CONTENT_LENGTH);
        }
        let close = shape.connection_close(out.disconnect);
        return (Ok(with_head(head, ResponseBody::empty(), close)), true);
    }
    // A length the module declared is kept (the entity is not known yet),
    // and the body ends there.
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let response = with_head(
        head,
        ResponseBody::streaming(out.chunks, rx)
            .with_files(shape.files.clone())
            .declared_length(declared),
        shape.connection_close(out.disconnect),
    );
    (Ok(response), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: http::Version, connection: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version);
        for v in connection {
            b = b.header(CONNECTION, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn wildcard_hosts_match_the_names_below_them() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "A.B.Example.COM"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        // What `*` stands for is names, not anything a Host may hold.
        for not_a_name in [
            "..example.com",
            "a..example.com",
            "*.example.com",
            "a%2e.example.com",
            "a!.example.com",
        ] {
            assert!(!host_matches("*.example.com", not_a_name), "{not_a_name}");
        }
        // Bytes, not characters: a name that is not ASCII neither matches
        // nor breaks the comparison.
        assert!(!host_matches("*.example.com", "é.example.com"));
        assert!(host_matches("*.example.com", "xn--9ca.example.com"));
        assert!(!host_matches("*.example.com", "a.exampleé.com"));
        assert!(host_matches("example.com", "Example.Com"));
        assert!(!host_matches("example.com", "a.example.com"));
        let mut hosts = vec![
            None,
            Some("*.a.b"),
            Some("x.a.b"),
            Some("*.b"),
            Some("*.longer.b"),
        ];
        hosts.sort_by_key(|h| route_rank(*h));
        assert_eq!(
            hosts,
            [
                Some("x.a.b"),
                Some("*.longer.b"),
                Some("*.a.b"),
                Some("*.b"),
                None
            ]
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_tokens() {
        use http::Version;
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        assert!(client_keeps_alive(&request(HTTP_11, &[])));
        assert!(client_keeps_alive(&request(HTTP_11, &["keep-alive"])));
        assert!(!client_keeps_alive(&request(HTTP_11, &["Close"])));
        assert!(!client_keeps_alive(&request(HTTP_11, &["te, close"])));
        assert!(!client_keeps_alive(&request(HTTP_11, &["te", "close"])));
        assert!(!client_keeps_alive(&request(HTTP_10, &[])));
        assert!(client_keeps_alive(&request(HTTP_10, &["Keep-Alive"])));
        // HTTP/2 streams end on their own; nothing to keep alive.
        assert!(!client_keeps_alive(&request(HTTP_2, &[])));
    }
}
