//! `ReverseProxy`: passes requests on to other HTTP servers and relays
//! their answers, as IIS's Application Request Routing (ARR) and nginx's
//! `proxy_pass` do.
//!
//! Registers for **ExecuteRequestHandler**, as a handler module (map it to
//! the paths to pass on, such as `/api/*`), and for **OnAsyncCompletion**,
//! where the rest of the request happens:
//!
//! 1. The request body is read through the pipeline (ReadEntity modules
//!    see it, RequestFiltering's limit applies; past 64 KiB it waits in a
//!    temporary file, see `spooled_body`), up to `max_request_body`
//!    bytes (413 past it), before the server is asked: as nginx's default
//!    `proxy_request_buffering on`, so a slow client does not hold a
//!    server's worker. With `request_buffering = false` the exchange starts
//!    at once and the body streams to it through the relay as each read
//!    completes (at most `relay::UPLOAD_LIMIT` bytes waiting for the
//!    connection, which holds the client back); the answer is taken once
//!    the body has gone, or, at the client's next piece or when the
//!    connection stops taking the body, once the exchange has ended or its
//!    server answers at length without taking the body (the rest of the
//!    body is then given up, as any body a module leaves unread). A streamed body
//!    is not sent again on another connection once part of it went.
//! 2. The exchange runs as a task on the tokio runtime of the worker thread
//!    the request runs on (see `exchange`), with hyper's HTTP/1.1 client on
//!    a connection that stays on that thread. The request waits (Pending)
//!    and resumes through OnAsyncCompletion each time the task has output
//!    for it, through the same relay FastCgi uses: an answer with a length
//!    is kept until `response_buffer_limit` bytes wait, then streams; one
//!    without (a streaming application's) streams from its head on.
//!
//! A request that UrlRewrite (or another module) sent to a server of its
//! own, through the [`PROXY_SERVER`] server variable, goes there instead
//! (ARR's routing of a URL rewritten to `http://server/…`); for that the
//! module also registers for the **post-MapRequestHandler** event, where it
//! gives such a request a handler that runs it, whatever its new path maps
//! to. A request with
//! neither is left to the handler's next module, so one handler can pass
//! some requests on and serve the others (`["ReverseProxy", "StaticFile"]`).
//!
//! The request goes to one of the servers of `servers`, chosen by
//! `balance` and their weights (ARR's server farm, nginx's `upstream`). A
//! server that cannot be connected
//! to is left out for `fail_timeout` seconds and the next one is tried,
//! whatever the method, since nothing was sent. The request gets **502**
//! when no server can be reached or a server breaks the protocol, and
//! **504** when a server stays silent for `timeout` seconds (nginx's
//! statuses; ARR answers 502.3 to both). After part of the response went
//! out, the connection is reset instead.
//!
//! What the server receives: the method, the URL as it is now (after
//! UrlRewrite), the client's headers without the hop-by-hop ones (RFC 9110
//! §7.6.1: `Connection` and the headers it names, `Keep-Alive`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`) and
//! `Expect` (the body is already here), the client's `Host` (ARR's
//! `preserveHostHeader`) or the server's, and, unless
//! `forwarded_headers = false`, `X-Forwarded-For` (the client's address
//! appended), `X-Forwarded-Proto` and `X-Forwarded-Host` set by riis, and
//! `X-Original-URL` when the URL was rewritten (as ARR sends it), and the
//! headers a module put in [`PROXY_REQUEST_HEADERS`] for it alone. What the
//! client receives: the server's status and headers, without hop-by-hop
//! headers, `Date` and `Server` (riis writes its own), and with the
//! server's own address in `Location` and `Content-Location` replaced by
//! the client's (ARR's `reverseRewriteHostInResponseHeaders`). The server's
//! error pages are its answer (CustomError leaves them).
//!
//! Connections to a server are kept open for later requests, up to
//! `kept_connections` idle ones per worker thread and server (ARR keeps
//! them by default; nginx needs `keepalive`). One that fails before the
//! server answered is replaced by a new one: at once if the request was not
//! sent, and only for idempotent methods if it was.
//!
//! Configuration section `proxy`, per location:
//! - `servers`: a list of `http://host[:port]`, `https://host[:port]` or
//!   `unix:/path/to/socket`, each with ` weight=N` if wanted (at most 64);
//! - `balance`: `round_robin` (default), `least_requests` or
//!   `client_address` (see `farm`);
//! - `affinity_cookie` (default empty): a cookie that keeps a client on the
//!   server that first answered it (ARR's client affinity);
//! - `health_check`: `{ url, interval, timeout }`, active checks that leave
//!   out a server that fails them (see `health`);
//! - `timeout` (seconds, default 120, ARR's): the longest a server may stay
//!   silent, while taking the request or while answering;
//! - `connect_timeout` (seconds, default 60, nginx's);
//! - `fail_timeout` (seconds, default 10, nginx's);
//! - `preserve_host` (default true);
//! - `reverse_rewrite_host` (default true);
//! - `forwarded_headers` (default true);
//! - `response_buffer_limit` (bytes, default 4,194,304, ARR's);
//! - `max_request_body` (bytes, default 30,000,000, RequestFiltering's);
//! - `request_buffering` (default true): read the whole body before the
//!   server is asked (nginx's `proxy_request_buffering`);
//! - `kept_connections` (default 32, at most 1,024; 0 closes each);
//! - `ca_file`: PEM certificates trusted for `https://` servers instead of
//!   the system's (see `tls`), relative to the configuration's folder;
//! - `client_certificate` (`{ certificate, key }`, PEM files relative to
//!   the configuration's folder): shown to `https://` servers that ask for
//!   a certificate (nginx's `proxy_ssl_certificate`);
//! - `upgrade_protocols` (default `["websocket"]`): the protocols a client
//!   may switch to; `[]` passes no upgrade on;
//! - `x_accel_redirect` (default true): an answer's `X-Accel-Redirect` is
//!   followed, as nginx does (see `internal_redirect`); false drops the
//!   header and passes the answer as it is (nginx's
//!   `proxy_ignore_headers X-Accel-Redirect`).
//!
//! **WebSocket** (and the other protocols `upgrade_protocols` lists): a
//! request that asks to switch protocols (`Upgrade` with `Connection:
//! upgrade`, HTTP/1.1, no body) is passed on with both headers, on a
//! connection of its own. Other protocols are not offered to the server
//! (the request goes on as a plain one): a server that takes cleartext
//! HTTP/2 (`h2c`) would otherwise take requests that riis's modules never
//! see. When
//! the server answers `101 Switching Protocols`, the 101 goes to the client
//! at once, and from then on the bytes of both connections are passed
//! through as they are, both ways, until either side closes, or nothing
//! moves either way for `timeout` seconds (ARR passes WebSocket through
//! the same way; nginx needs `proxy_set_header Upgrade` and `Connection`).
//! Any other answer is relayed as usual.
//!
//! Not done: WebSocket over HTTP/2 (RFC 8441), and response caching of
//! its own (OutputCache caches the relayed answer like any other).

mod exchange;
mod farm;
mod health;
mod tls;

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use riis_pipeline::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{
    CompletedOperation, CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, Section, ServerInfo, UpgradedStream,
};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::backend::Pools;
use crate::gateway::BodyError;
use crate::relay::{Receiver, Relay, Step};
use crate::spooled_body::{BodySpool, SpooledBody};
use exchange::{Job, Kept};
use farm::Server;
pub use farm::{Balance, Farm};

/// The server variable that sends one request to a server of its own
/// (`http[s]://host[:port]` or `unix:/path`; or several, separated by
/// spaces, tried in turn as a farm's are) instead of the section's
/// `servers`: UrlRewrite sets it for a Rewrite to another server, and any
/// module may, before ExecuteRequestHandler (IIS ARR's routing of a URL
/// rewritten to another server). A client cannot: it is no `HTTP_` name.
pub const PROXY_SERVER: &str = "PROXY_SERVER";

/// The server variable with headers for the server alone: `Name: value`
/// lines, which the request sent to the server gets (replacing any of the
/// client's of those names), while the request itself, which later modules,
/// logs, traces and child requests (an `X-Accel-Redirect`'s, a custom
/// error page's) see, does not: ReverseProxy empties it once read.
/// AspNetCoreModule sends its pairing token this way; any module may,
/// before ExecuteRequestHandler. A client cannot set it: it is no `HTTP_`
/// name. Child requests start without it.
pub const PROXY_REQUEST_HEADERS: &str = "PROXY_REQUEST_HEADERS";

/// The most servers a [`PROXY_SERVER`] value names (an application's
/// processes: HttpPlatformHandler's `processes_per_application` goes to
/// 100).
const MOST_PROXY_SERVERS: usize = 100;

/// Checks a [`PROXY_SERVER`] value.
pub(crate) fn check_server(text: &str) -> Result<(), String> {
    proxy_servers(text).map(|_| ())
}

/// The servers a [`PROXY_SERVER`] value names, in the order they are
/// tried: one, or several separated by spaces (HttpPlatformHandler names
/// every process of an application that listens, the next in turn first).
/// A Unix socket's path may hold spaces: a space begins another server only
/// before `http://`, `https://` (in any case) or `unix:`, as a server is
/// written. At most [`MOST_PROXY_SERVERS`].
fn proxy_servers(text: &str) -> Result<Vec<Server>, String> {
    fn begins_server(text: &str) -> bool {
        text.starts_with("unix:")
            || ["http://", "https://"].iter().any(|scheme| {
                text.get(..scheme.len())
                    .is_some_and(|t| t.eq_ignore_ascii_case(scheme))
            })
    }
    let mut servers = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest
            .char_indices()
            .find(|&(at, c)| c.is_whitespace() && begins_server(rest[at..].trim_start()))
            .map_or(rest.len(), |(at, _)| at);
        if servers.len() == MOST_PROXY_SERVERS {
            return Err(format!("names more than {MOST_PROXY_SERVERS} servers"));
        }
        servers.push(Server::parse(&rest[..end])?);
        rest = rest[end..].trim_start();
    }
    if servers.is_empty() {
        return Err("names no server".to_owned());
    }
    Ok(servers)
}

/// The `proxy` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReverseProxyConfig {
    /// The servers requests go to.
    pub servers: Farm,
    /// How a request's server is chosen.
    pub balance: Balance,
    /// The cookie that keeps a client on its server (empty: none).
    #[serde(deserialize_with = "cookie_name")]
    pub affinity_cookie: String,
    /// Seconds a server may stay silent.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub timeout: u64,
    /// Seconds a connection may take to open.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub connect_timeout: u64,
    /// Seconds a server that could not be reached is left out.
    pub fail_timeout: u64,
    /// Whether the server gets the client's `Host`.
    pub preserve_host: bool,
    /// Whether the server's address in `Location` becomes the client's.
    pub reverse_rewrite_host: bool,
    /// Whether `X-Forwarded-For`, `-Proto` and `-Host` are sent.
    pub forwarded_headers: bool,
    /// Output kept before the response is flushed.
    pub response_buffer_limit: u64,
    /// The longest request body passed on.
    pub max_request_body: u64,
    /// Read the whole body before the server is asked (nginx's
    /// `proxy_request_buffering`); `false` streams it as it arrives.
    pub request_buffering: bool,
    /// Idle connections kept per worker thread and server.
    #[serde(deserialize_with = "crate::at_most_1024")]
    pub kept_connections: usize,
    /// The HTTP version spoken to the servers.
    pub http_version: HttpVersion,
    /// Requests a worker sends at once on one HTTP/2 connection to a
    /// server before it opens another.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub http2_max_concurrent_streams: usize,
    /// Certificates trusted for `https://` servers instead of the system's.
    pub ca_file: Option<tls::TrustedCertificates>,
    /// The certificate shown to `https://` servers that ask for one.
    pub client_certificate: Option<tls::ClientCertificate>,
    /// The protocols a client may switch to through the proxy (`Upgrade`).
    pub upgrade_protocols: Vec<String>,
    /// Active health checks of the servers.
    pub health_check: Option<health::HealthCheck>,
    /// Whether an answer's `X-Accel-Redirect` is followed.
    pub x_accel_redirect: bool,
}

impl Default for ReverseProxyConfig {
    fn default() -> Self {
        Self {
            servers: Farm::default(),
            balance: Balance::default(),
            affinity_cookie: String::new(),
            timeout: 120,
            connect_timeout: 60,
            fail_timeout: 10,
            preserve_host: true,
            reverse_rewrite_host: true,
            forwarded_headers: true,
            response_buffer_limit: 4_194_304,
            max_request_body: 30_000_000,
            request_buffering: true,
            kept_connections: 32,
            http_version: HttpVersion::Http11,
            http2_max_concurrent_streams: 100,
            ca_file: None,
            client_certificate: None,
            upgrade_protocols: vec!["websocket".to_owned()],
            health_check: None,
            x_accel_redirect: true,
        }
    }
}

/// The HTTP version spoken to the servers (`http_version`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HttpVersion {
    /// `"1.1"`: a connection per request in flight, kept for the next.
    #[default]
    Http11,
    /// `"2"`: HTTP/2, with prior knowledge on `http://` servers (h2c) and
    /// by ALPN on `https://` ones; one connection per worker and server
    /// carries every request in flight. Trailers pass on (gRPC).
    Http2,
}

impl TryFrom<String> for HttpVersion {
    type Error = String;

    fn try_from(version: String) -> Result<Self, String> {
        match version.as_str() {
            "1.1" => Ok(Self::Http11),
            "2" => Ok(Self::Http2),
            other => Err(format!(
                "`{other}` is not a version riis speaks to servers: \"1.1\" or \"2\""
            )),
        }
    }
}

/// How much of the body one read asks for.
const READ_SIZE: usize = 64 * 1024;

/// An `affinity_cookie`: empty, or a cookie name (RFC 6265's token).
fn cookie_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let separator = |b: u8| b"()<>@,;:\\\"/[]?={} \t".contains(&b);
    if name.bytes().all(|b| b.is_ascii_graphic() && !separator(b)) {
        Ok(name)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{name}` is not a cookie name"
        )))
    }
}

/// The value of the cookie `name` the request carries, if any.
fn cookie_value(ctx: &HttpContext, name: &str) -> Option<String> {
    ctx.request()
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// What the module's instances share.
struct Shared {
    pools: Arc<Pools<Kept, exchange::Route>>,
    /// Exchanges running, for `riis status`.
    running: Arc<AtomicUsize>,
    /// Connections switched to another protocol (WebSockets) open.
    tunnels: Arc<AtomicUsize>,
}

/// Where the instance is.
enum State {
    Idle,
    /// Reading the request body.
    Reading(BodySpool),
    /// The exchange runs, and the body streams to it as the client sends
    /// it, in full duplex: the answer goes to the client meanwhile.
    Streaming(Arc<Relay>, Duplex),
    /// The exchange runs; its output arrives through the relay.
    Answering(Arc<Relay>),
    /// The server's `X-Accel-Redirect` runs as a child request.
    Redirected(crate::internal_redirect::Redirected),
}

/// Where a request in full duplex stands (see [`State::Streaming`]).
#[derive(Clone, Copy, Default)]
struct Duplex {
    /// Body bytes read so far.
    read: u64,
    /// A body read is under way.
    reading: bool,
    /// The whole body went to the exchange, or was given up.
    body_done: bool,
    /// A flush of the answer is under way.
    flushing: bool,
}

/// The module instance: one per request.
pub struct ReverseProxy {
    config: Section<ReverseProxyConfig>,
    shared: Arc<Shared>,
    state: State,
    receiver: Receiver,
    /// Where the client's connection goes once it switched protocols (the
    /// exchange passes bytes through between it and the server's).
    upgraded_to: Option<oneshot::Sender<UpgradedStream>>,
}

impl Drop for ReverseProxy {
    /// The request ended: its exchange, if still running, is dropped with
    /// its connection.
    fn drop(&mut self) {
        if let State::Answering(relay) | State::Streaming(relay, _) = &self.state {
            relay.cancel();
        }
    }
}

/// Headers that are about one connection, not the message (RFC 9110
/// §7.6.1), and `Proxy-Connection`, which old clients send: never passed
/// on, either way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    // The client's credentials for a proxy on its way, consumed by the
    // first that asked (RFC 9110 §11.7.2): no application's business.
    header::PROXY_AUTHORIZATION,
    // HTTP/2's cleartext upgrade's settings are for this connection only
    // (RFC 7540 §3.2.1).
    HeaderName::from_static("http2-settings"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `protocol` (`name` or `name/version`, of an `Upgrade` header)
/// is one of `allowed` (names, any case).
pub(crate) fn protocol_allowed(protocol: &str, allowed: &[String]) -> bool {
    let name = protocol.split('/').next().unwrap_or("").trim();
    !name.is_empty() && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The hop-by-hop headers of one message: [`HOP_BY_HOP`] and those its
/// `Connection` header names, looked up once for all its headers.
pub(crate) struct HopByHop<'a> {
    /// The names the `Connection` header lists that [`HOP_BY_HOP`] does not
    /// hold already: none in most messages (`keep-alive` is one of them),
    /// so most headers cost only the fixed list's comparisons.
    named: Vec<&'a str>,
}

impl<'a> HopByHop<'a> {
    pub(crate) fn of(headers: &'a HeaderMap) -> Self {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|token| {
                !token.is_empty()
                    && !HOP_BY_HOP
                        .iter()
                        .any(|known| token.eq_ignore_ascii_case(known.as_str()))
            })
            .collect();
        Self { named }
    }

    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        HOP_BY_HOP.contains(name)
            || self
                .named
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name.as_str()))
    }
}

impl ReverseProxy {
    /// Reads the next piece of the body, or starts the exchange once it is
    /// all here.
    fn go_on(&mut self, ctx: &mut HttpContext, body: BodySpool) -> RequestNotificationStatus {
        if !ctx.request().is_body_complete() {
            if let Err(e) = ctx.read_entity_body(READ_SIZE) {
                return fail(ctx, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
            self.state = State::Reading(body);
            return RequestNotificationStatus::Pending;
        }
        self.start(ctx, body.finish(), None)
    }

    /// A completion of a request in full duplex: a body read, a flush of
    /// the answer, or news from the exchange (output, its end, or room for
    /// more body).
    fn streaming(
        &mut self,
        ctx: &mut HttpContext,
        relay: Arc<Relay>,
        mut duplex: Duplex,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match completion.operation {
            CompletedOperation::Read => {
                duplex.reading = false;
                if let Err(status) = self.uploaded(ctx, &relay, &mut duplex, completion) {
                    return status;
                }
            }
            CompletedOperation::Write => duplex.flushing = false,
            _ => {}
        }
        self.stream(ctx, relay, duplex)
    }

    /// A read of the streamed body completed: its bytes go to the exchange.
    fn uploaded(
        &mut self,
        ctx: &mut HttpContext,
        relay: &Relay,
        duplex: &mut Duplex,
        completion: &CompletionInfo,
    ) -> Result<(), RequestNotificationStatus> {
        let limit = ctx.config(self.config).max_request_body;
        let data = ctx.request_mut().take_read_data();
        duplex.read += data.len() as u64;
        let end = ctx.request().is_body_complete();
        let broken = if completion.status != 0 {
            Some(crate::gateway::read_failure(completion))
        } else if data.is_empty() && !end {
            Some(BodyError::EndedEarly)
        } else if duplex.read > limit {
            Some(BodyError::TooLarge)
        } else {
            None
        };
        if let Some(error) = broken {
            // Part of the body went: the exchange cannot be finished.
            relay.cancel();
            return Err(match error {
                BodyError::TooLarge => too_large(ctx, limit),
                other => {
                    crate::gateway::close_after_answer(ctx);
                    let (status, why) = other.status_and_reason();
                    fail(ctx, status, &why)
                }
            });
        }
        relay.send_upload(data, end);
        duplex.body_done = end;
        Ok(())
    }

    /// Goes on in full duplex: takes the exchange's output into the
    /// response unless a flush of it is under way, and reads more of the
    /// body while the connection has room for it. The handler is done once
    /// the answer is whole; what the client has not sent of the body by
    /// then is given up, as the server did not wait for it.
    fn stream(
        &mut self,
        ctx: &mut HttpContext,
        relay: Arc<Relay>,
        mut duplex: Duplex,
    ) -> RequestNotificationStatus {
        if !duplex.flushing {
            let limit = ctx.config(self.config).response_buffer_limit;
            match self.receiver.take(ctx, &relay, limit) {
                Step::Wait => {}
                Step::Flushing => duplex.flushing = true,
                Step::Done => {
                    if !duplex.body_done {
                        relay.abandon_upload();
                    }
                    ctx.set_request_handled();
                    return RequestNotificationStatus::Continue;
                }
                Step::Failed(status, why) => return fail(ctx, status, &why),
                Step::Redirect(redirect) => {
                    if !duplex.body_done {
                        relay.abandon_upload();
                    }
                    return self.redirect(ctx, redirect);
                }
            }
        }
        if !duplex.body_done && !duplex.reading && relay.has_upload_room() {
            if let Err(e) = ctx.read_entity_body(READ_SIZE) {
                relay.cancel();
                return fail(ctx, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
            duplex.reading = true;
        }
        self.state = State::Streaming(relay, duplex);
        RequestNotificationStatus::Pending
    }

    /// The protocols the client asks to switch to (its `Upgrade` header,
    /// without those `upgrade_protocols` does not list), when the request
    /// may pass that on: HTTP/1.1 (or a WebSocket over HTTP/2, which riis
    /// shows as the HTTP/1.1 request), with `Connection: upgrade` (RFC 9110
    /// §7.8) and no body, as riis switches a client's connection only then.
    /// `None`: the request goes on as a plain one.
    fn upgrade_of(ctx: &HttpContext, allowed: &[String]) -> Option<HeaderValue> {
        let req = ctx.request();
        // Most requests ask for nothing: one lookup.
        req.header(header::UPGRADE)?;
        let has_body = req.header(header::TRANSFER_ENCODING).is_some()
            || req
                .header(header::CONTENT_LENGTH)
                .is_some_and(|length| length.as_bytes() != b"0");
        let asked = req.can_switch_protocols()
            && !has_body
            && req
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .any(|value| {
                    value.to_str().is_ok_and(|list| {
                        list.split(',')
                            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
                    })
                });
        if !asked {
            return None;
        }
        let mut offered = Vec::new();
        for value in req.headers().get_all(header::UPGRADE) {
            let Ok(list) = value.to_str() else { continue };
            for protocol in list.split(',').map(str::trim) {
                if protocol_allowed(protocol, allowed) {
                    offered.push(protocol);
                }
            }
        }
        HeaderValue::from_str(&offered.join(", "))
            .ok()
            .filter(|_| !offered.is_empty())
    }

    /// The request's headers as the server gets them, and whether a module
    /// gave some in [`PROXY_REQUEST_HEADERS`] (the caller empties it).
    fn request_headers(
        ctx: &HttpContext,
        config: &ReverseProxyConfig,
        client_host: Option<&str>,
        https: bool,
    ) -> (HeaderMap, bool) {
        let req = ctx.request();
        let client = req.headers();
        // (An HTTP/2 client's cookie crumbs reach modules already joined
        // into one `Cookie`, as an HTTP/1.1 server expects them: the server
        // joins them for every module, RFC 9113 §8.2.3.)
        let mut headers = HeaderMap::with_capacity(client.len() + 4);
        let hop_by_hop = HopByHop::of(client);
        for (name, value) in client {
            // A name the client's `Connection` lists is the client's hop's:
            // not a header a module set (a rule's `X-Forwarded-For`), which
            // the client must not be able to take away.
            if (hop_by_hop.contains(name)
                && (HOP_BY_HOP.contains(name) || !req.header_set_by_module(name)))
                || matches!(
                    *name,
                    header::HOST | header::CONTENT_LENGTH | header::EXPECT
                )
                // riis's own, never the client's (and its twin, which
                // applications written for IIS also route on).
                || name == "x-original-url"
                || name == "x-rewrite-url"
                // The client's are not to be trusted; a module's (a rule's
                // server variable, ARR's recipe behind a load balancer)
                // go as set. RFC 7239's `Forwarded` says the same as the
                // three riis writes, and servers that read it first
                // (Spring, Jetty) would take the client's word for them.
                || (config.forwarded_headers
                    && (name == "x-forwarded-proto"
                        || name == "x-forwarded-host"
                        || name == "x-forwarded-for"
                        || name == "forwarded")
                    && !req.header_set_by_module(name))
                // `X_Forwarded_For` or `X.Forwarded.For` would pass for
                // `X-Forwarded-For` with servers that read headers as CGI
                // variables: dropped, as nginx does by default. So is
                // `Proxy`, which such servers take for their own outbound
                // proxy (HTTP_PROXY, "httpoxy").
                || !crate::is_plain_header_name(name.as_str())
                || name == "proxy"
            {
                continue;
            }
            headers.append(name, value.clone());
        }
        // `TE: trailers` says the client takes trailers; HTTP/2 lets it
        // through (RFC 9113 §8.2.2), and gRPC servers ask for it.
        if config.http_version == HttpVersion::Http2
            && client.get_all(header::TE).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            })
        {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if config.preserve_host {
            if let Some(host) = client_host.and_then(|h| HeaderValue::from_str(h).ok()) {
                headers.insert(header::HOST, host);
            }
        }
        if config.forwarded_headers {
            let forwarded_for = HeaderName::from_static("x-forwarded-for");
            if !req.header_set_by_module(&forwarded_for) {
                // Every earlier hop's, in order, then the address this
                // request came from. Where a module (ForwardedFor) took
                // the client from the proxy that connected, that proxy is
                // the hop to add, after the client unless the client is
                // already the last entry (read from `X-Forwarded-For`
                // itself, not `X-Real-IP`).
                let mut list = Vec::with_capacity(32);
                let mut last = None;
                for hop in client.get_all(&forwarded_for) {
                    if !hop.is_empty() {
                        list.extend_from_slice(hop.as_bytes());
                        list.extend_from_slice(b", ");
                        last = hop.as_bytes().rsplit(|&b| b == b',').next();
                    }
                }
                let (remote, peer) = (req.remote_address().ip(), req.peer_address().ip());
                if remote != peer {
                    let listed = last
                        .and_then(crate::forwarded_entry)
                        .is_some_and(|(address, _)| address == remote.to_canonical());
                    if !listed {
                        crate::put_address(&mut list, remote);
                        list.extend_from_slice(b", ");
                    }
                }
                crate::put_address(&mut list, peer);
                if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(list)) {
                    headers.insert(forwarded_for, value);
                }
            }
            let forwarded_proto = HeaderName::from_static("x-forwarded-proto");
            if !req.header_set_by_module(&forwarded_proto) {
                headers.insert(
                    forwarded_proto,
                    HeaderValue::from_static(if https { "https" } else { "http" }),
                );
            }
            // The host the client asked for, even when a rule set another
            // `Host` for the server.
            let forwarded_host = HeaderName::from_static("x-forwarded-host");
            if !req.header_set_by_module(&forwarded_host) {
                if let Some(host) = req
                    .client_host()
                    .and_then(|h| HeaderValue::from_str(&h).ok())
                {
                    headers.insert(forwarded_host, host);
                }
            }
        }
        let module_headers = ctx.server_variable(PROXY_REQUEST_HEADERS);
        let handed_on = module_headers.is_some();
        if let Some(lines) = module_headers {
            for line in lines.lines().filter(|l| !l.trim().is_empty()) {
                let parsed = line.split_once(':').and_then(|(name, value)| {
                    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
                    Some((name, HeaderValue::from_str(value.trim()).ok()?))
                });
                match parsed {
                    Some((name, value)) => {
                        headers.insert(name, value);
                    }
                    None => tracing::warn!(
                        "ReverseProxy: a line of {PROXY_REQUEST_HEADERS} is not a header (`Name: value`); left out"
                    ),
                }
            }
        }
        // A rule's rewrite of the client's request; a child request's URL
        // (an X-Accel-Redirect's, a default document's) is the server's
        // own, and the client's URL, tokens in its query and all, is none
        // of the server's business there.
        if ctx.child_depth() == 0 && req.client_url() != req.raw_url() {
            if let Ok(original) = HeaderValue::from_str(req.client_url()) {
                headers.insert(HeaderName::from_static("x-original-url"), original);
            }
        }
        (headers, handed_on)
    }

    /// Starts the exchange with `body`, or, with `streamed` (the length
    /// the client declared, if any), with the body streaming to it as the
    /// client sends it.
    fn start(
        &mut self,
        ctx: &mut HttpContext,
        body: SpooledBody,
        streamed: Option<Option<u64>>,
    ) -> RequestNotificationStatus {
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => {
                return fail(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the request runs on no tokio runtime",
                )
            }
        };
        let config = ctx.config_shared(self.config);
        if config.health_check.is_some() && config.servers.begin_health_checks() {
            handle.spawn(health::watch(Arc::downgrade(&config)));
        }
        let only = match ctx.server_variable(PROXY_SERVER) {
            Some(servers) => match proxy_servers(&servers) {
                Ok(servers) => servers,
                Err(why) => {
                    return fail(
                        ctx,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("{PROXY_SERVER}: {why}"),
                    )
                }
            },
            None => Vec::new(),
        };
        let target = match ctx.request().raw_url().parse() {
            Ok(target) => target,
            Err(e) => return fail(ctx, StatusCode::BAD_REQUEST, &format!("bad URL: {e}")),
        };
        // A file at the URL's path (a rewrite's target may have one) is
        // not where the answer comes from.
        ctx.set_answered_elsewhere();
        // The routed host: HTTP/2's `:authority`, or the `Host` header.
        let client_host = ctx.server_variable("HTTP_HOST");
        let https = ctx.request().is_tls();
        let (mut headers, handed_on) =
            Self::request_headers(ctx, &config, client_host.as_deref(), https);
        drop(client_host);
        // Read once, for this request's server alone: the modules after,
        // and the logs (`var(PROXY_REQUEST_HEADERS)`), find it empty.
        if handed_on {
            ctx.set_server_variable(PROXY_REQUEST_HEADERS, String::new());
        }
        let upgrade = Self::upgrade_of(ctx, &config.upgrade_protocols).map(|protocol| {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
            let (to, from) = oneshot::channel();
            self.upgraded_to = Some(to);
            std::sync::Mutex::new(Some(from))
        });
        // The origin is written only for the few answers that need it: the
        // host the client asked for, even when a rule set another `Host`.
        let client_host = ctx
            .request()
            .client_host()
            .filter(|_| config.reverse_rewrite_host)
            .map(Cow::into_owned);
        let timeout = Duration::from_secs(config.timeout);
        let relay = Arc::new(Relay::new(ctx.completion_handle(), timeout));
        let job = Job {
            method: ctx.request().method().clone(),
            target,
            headers,
            body,
            streamed,
            client_host,
            idempotent: matches!(
                *ctx.request().method(),
                Method::GET
                    | Method::HEAD
                    | Method::PUT
                    | Method::DELETE
                    | Method::OPTIONS
                    | Method::TRACE
            ),
            only,
            client: ctx.request().remote_address().ip(),
            affinity: (!config.affinity_cookie.is_empty())
                .then(|| cookie_value(ctx, &config.affinity_cookie))
                .flatten(),
            https,
            upgrade,
            config,
            relay: relay.clone(),
            pools: self.shared.pools.clone(),
            tunnels: self.shared.tunnels.clone(),
        };
        // From here the exchange's own timeouts (`connect_timeout`, and
        // `timeout` for a silent server) end every wait: the server's
        // `timeouts.execution` would otherwise cut a long poll or an event
        // stream that `timeout` lets through, or turn a 504 into a 503.
        ctx.set_own_timeout();
        self.receiver
            .follow_accel_redirect(ctx.config(self.config).x_accel_redirect);
        let running = self.shared.running.clone();
        running.fetch_add(1, Ordering::Relaxed);
        // Boxed, as the driver's request tasks are: the exchange's future is
        // large, and tokio moves it by value into its task and out again.
        handle.spawn(Box::pin(async move {
            exchange::run(job).await;
            running.fetch_sub(1, Ordering::Relaxed);
        }));
        if streamed.is_some() {
            // The answer may come while the body still does (gRPC's
            // bidirectional calls, a server that answers as it reads).
            ctx.enable_full_duplex();
            return self.stream(ctx, relay, Duplex::default());
        }
        self.state = State::Answering(relay);
        RequestNotificationStatus::Pending
    }

    /// Takes what the exchange left into the response.
    fn answer(&mut self, ctx: &mut HttpContext, relay: Arc<Relay>) -> RequestNotificationStatus {
        if ctx.response().headers_sent() {
            // The server's 101 went out: the client's connection goes to
            // the exchange (or, if it could not switch, the exchange learns
            // that and ends).
            if let (Some(to), Some(stream)) = (self.upgraded_to.take(), ctx.take_upgraded_stream())
            {
                let _ = to.send(stream);
            }
        }
        let limit = ctx.config(self.config).response_buffer_limit;
        match self.receiver.take(ctx, &relay, limit) {
            Step::Wait | Step::Flushing => {
                self.state = State::Answering(relay);
                RequestNotificationStatus::Pending
            }
            Step::Done => {
                // The answer is whole: the handler's other modules, if any,
                // are not asked.
                ctx.set_request_handled();
                RequestNotificationStatus::Continue
            }
            Step::Failed(status, why) => fail(ctx, status, &why),
            Step::Redirect(redirect) => self.redirect(ctx, redirect),
        }
    }

    /// Runs the server's `X-Accel-Redirect` in its answer's place.
    fn redirect(
        &mut self,
        ctx: &mut HttpContext,
        redirect: crate::internal_redirect::InternalRedirect,
    ) -> RequestNotificationStatus {
        match redirect.run(ctx, "ReverseProxy") {
            Ok(redirected) => {
                self.state = State::Redirected(redirected);
                RequestNotificationStatus::Pending
            }
            Err(failed) => failed,
        }
    }
}

fn too_large(ctx: &mut HttpContext, limit: u64) -> RequestNotificationStatus {
    crate::gateway::too_large(ctx, "ReverseProxy", "proxy.max_request_body", limit)
}

fn fail(ctx: &mut HttpContext, status: StatusCode, why: &str) -> RequestNotificationStatus {
    // A 502 is ARR's 502.3, "forwarder connection error": no server could
    // be reached, or one broke the connection or the protocol (IIS's
    // ASP.NET Core Module out of process gives it for an application that
    // crashed mid-request too). Failed-request rules and log queries
    // written for IIS look for it.
    let substatus = if status == StatusCode::BAD_GATEWAY {
        3
    } else {
        0
    };
    crate::gateway::fail_with_substatus(ctx, "ReverseProxy", status, substatus, why)
}

impl HttpModule for ReverseProxy {
    /// A request that a module sent to a server of its own before the
    /// handler was chosen (UrlRewrite's Rewrite to `http://server/…`) goes
    /// there whatever its new path maps to, as ARR takes every such
    /// request: a handler that does not run this module (the `*.php` or
    /// `*.cgi` mapping of `/api/x.php` rewritten to `http://backend/x.php`)
    /// gives way to the first of the location's that does and takes the
    /// method. When those do not take the method, 405; with none at all,
    /// the request fails (500), rather than run a local script with
    /// headers meant for the server.
    fn on_post_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.server_variable(PROXY_SERVER).is_none() {
            return RequestNotificationStatus::Continue;
        }
        let Some(me) = ctx.current_module() else {
            return RequestNotificationStatus::Continue;
        };
        let method = ctx.request().method().clone();
        let handlers = ctx.location().handlers();
        let runs_me = |name: &str| {
            handlers
                .iter()
                .find(|h| h.name == name)
                .is_some_and(|h| h.modules.contains(&me))
        };
        if ctx.handler_name().is_some_and(runs_me) {
            return RequestNotificationStatus::Continue;
        }
        let mine = || handlers.iter().filter(|h| h.modules.contains(&me));
        let proxying = mine()
            .find(|h| h.verbs.as_ref().is_none_or(|verbs| verbs.contains(&method)))
            .map(|h| h.name.to_owned());
        // The methods of the handlers that pass requests on, when none
        // takes this one (each lists its verbs then).
        let allow = if proxying.is_none() {
            let mut allowed: Vec<&str> = Vec::new();
            for verb in mine().flat_map(|h| h.verbs.iter().flatten().map(Method::as_str)) {
                if !allowed.contains(&verb) {
                    allowed.push(verb);
                }
            }
            // Listed as every other answer lists methods.
            allowed.sort_by_key(|m| riis_pipeline::allow_rank(m));
            allowed.join(", ")
        } else {
            String::new()
        };
        match proxying {
            Some(name) if ctx.set_handler(&name) => RequestNotificationStatus::Continue,
            // The handlers that pass requests on do not take this method.
            _ if !allow.is_empty() => {
                let status = crate::end_with_error(
                    ctx,
                    StatusCode::METHOD_NOT_ALLOWED,
                    0,
                    riis_pipeline::ModuleError::E_FAIL,
                );
                if let Ok(allow) = HeaderValue::try_from(allow) {
                    ctx.response_mut().set_header(header::ALLOW, allow);
                }
                status
            }
            _ => crate::gateway::fail(
                ctx,
                "ReverseProxy",
                StatusCode::INTERNAL_SERVER_ERROR,
                "PROXY_SERVER names a server, but no handler of this location runs ReverseProxy",
            ),
        }
    }

    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // Nowhere to send it: the handler's next module answers (a location
        // whose rules send some requests on and serve the others here).
        if ctx.config(self.config).servers.is_empty() && ctx.server_variable(PROXY_SERVER).is_none()
        {
            return RequestNotificationStatus::Continue;
        }
        // A tunnel is not a request to pass on: a server's 2xx would open
        // one that carries nothing (nginx answers 405 too).
        // A server that echoes TRACE would hand a page the client's
        // cookies and credentials (cross-site tracing): nginx answers 405
        // too, and IIS's request filtering refuses the verb by default.
        let method = ctx.request().method();
        if *method == riis_pipeline::http::Method::CONNECT
            || *method == riis_pipeline::http::Method::TRACE
        {
            let why = format!("{method} is not passed on to servers");
            let status = fail(ctx, StatusCode::METHOD_NOT_ALLOWED, &why);
            // A 405 names the methods that are (RFC 9110 §15.5.6): the
            // server's, which riis does not know, so the usual ones.
            ctx.response_mut().set_header(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return status;
        }
        let limit = ctx.config(self.config).max_request_body;
        if crate::gateway::declared_over(ctx, limit) {
            return too_large(ctx, limit);
        }
        if !ctx.config(self.config).request_buffering && !ctx.request().is_body_complete() {
            let declared = ctx
                .request()
                .header(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            return self.start(ctx, SpooledBody::default(), Some(declared));
        }
        self.go_on(ctx, BodySpool::default())
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => RequestNotificationStatus::Continue,
            State::Reading(mut body) => {
                let limit = ctx.config(self.config).max_request_body;
                match crate::gateway::take_body_piece(ctx, &mut body, limit, completion) {
                    Ok(()) => self.go_on(ctx, body),
                    Err(BodyError::TooLarge) => too_large(ctx, limit),
                    Err(other) => {
                        let (status, why) = other.status_and_reason();
                        fail(ctx, status, &why)
                    }
                }
            }
            State::Streaming(relay, duplex) => self.streaming(ctx, relay, duplex, completion),
            State::Answering(relay) => self.answer(ctx, relay),
            State::Redirected(redirected) => redirected.finish(ctx),
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<ReverseProxyConfig>("proxy")?;
    // Exchanges and tunnels are counted for the whole process: those of a
    // configuration a reload replaced still run (a WebSocket may for
    // hours), and `riis status` asks the new one.
    static RUNNING: std::sync::LazyLock<Arc<AtomicUsize>> = std::sync::LazyLock::new(Arc::default);
    static TUNNELS: std::sync::LazyLock<Arc<AtomicUsize>> = std::sync::LazyLock::new(Arc::default);
    let shared = Arc::new(Shared {
        pools: Arc::default(),
        running: RUNNING.clone(),
        tunnels: TUNNELS.clone(),
    });
    let (pools, running) = (shared.pools.clone(), shared.running.clone());
    let tunnels = shared.tunnels.clone();
    registration.set_global_notifications(
        crate::StatusLines(move || {
            format!(
                "proxy_requests_running: {}\nproxy_connections_idle: {}\nproxy_http2_connections: {}\nproxy_tunnels_open: {}\n",
                running.load(Ordering::Relaxed),
                pools.idle_count(),
                exchange::HTTP2_CONNECTIONS.load(Ordering::Relaxed),
                tunnels.load(Ordering::Relaxed)
            )
        }),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
    registration.set_request_notifications(
        Factory { config, shared },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotification::MapRequestHandler.into(),
    )
}

/// Makes the instances; at shutdown closes the idle connections.
struct Factory {
    config: Section<ReverseProxyConfig>,
    shared: Arc<Shared>,
}

impl riis_pipeline::HttpModuleFactory for Factory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(ReverseProxy {
            config: self.config,
            shared: self.shared.clone(),
            state: State::Idle,
            receiver: Receiver::streaming_unsized_answers(),
            upgraded_to: None,
        }))
    }

    fn terminate(&self) {
        self.shared.pools.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        proxy_servers(text)
            .unwrap()
            .into_iter()
            .map(|server| server.address.to_string())
            .collect()
    }

    #[test]
    fn proxy_server_names_one_server_or_several_in_turn() {
        assert_eq!(names("http://127.0.0.1:8001"), ["127.0.0.1:8001"]);
        assert_eq!(
            names(" http://127.0.0.1:8001  HTTP://127.0.0.1:8002\tunix:/run/a b.sock "),
            ["127.0.0.1:8001", "127.0.0.1:8002", "unix:/run/a b.sock"]
        );
        // A space inside a Unix socket's path begins no other server.
        assert_eq!(names("unix:/run/my app/s"), ["unix:/run/my app/s"]);
        assert!(proxy_servers("  ").is_err());
        assert!(proxy_servers("http://a:1 ftp://b").is_err());
        assert!(check_server("http://a:1 http://b/path").is_err());
        // `unix:` is written in lower case: `UNIX:` begins no server.
        assert!(proxy_servers("unix:/a UNIX:/b").is_ok_and(|s| s.len() == 1));
        let many: Vec<String> = (0..101).map(|p| format!("http://a:{}", p + 1)).collect();
        assert!(proxy_servers(&many[..100].join(" ")).is_ok());
        assert!(proxy_servers(&many.join(" ")).is_err());
    }
}
