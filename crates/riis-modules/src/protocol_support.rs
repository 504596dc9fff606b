//! `ProtocolSupport`: custom response headers, header removal, connection
//! keep-alive, and the OPTIONS and TRACE methods, as IIS's protocol support
//! module does.
//!
//! Registers for two notifications:
//!
//! - **SendResponse**, for every request: on the send that carries the
//!   headers (`headers_being_sent`), it removes the headers listed in
//!   `remove_headers` (any case; `Server` drops riis's `Server` header), then
//!   sets each of `custom_headers` (and, on a redirect, `redirect_headers`) that
//!   `remove_headers` does not name, replacing a header of the same name.
//!   Headers the HTTP layer writes (`Content-Length`, `Transfer-Encoding`,
//!   `Connection`, `Date`, …) are configuration errors there. With
//!   `keep_alive = false` it asks for an HTTP/1.x connection to be closed
//!   after the response (`set_need_disconnect`; the response says
//!   `Connection: close`); HTTP/2 connections are left to their idle
//!   timeout, as keep-alive is an HTTP/1.x mechanism.
//!   It runs at First priority, which SendResponse's inverted order makes
//!   late: after the modules of lower priority, and after the First modules
//!   listed after it in the module list, so it sees the headers they add.
//!   Headers the HTTP layer adds after SendResponse (`Date`,
//!   `Content-Length`, `Transfer-Encoding`, `Connection`) cannot be removed.
//! - **ExecuteRequestHandler**, as a handler module: it answers `OPTIONS`
//!   with 200, `Content-Length: 0` and an `Allow` header listing the methods
//!   the location's handlers for that URL accept (a handler for every method
//!   stands for GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH), and `TRACE`
//!   with 405 unless `allow_trace`, in which case it echoes the request head
//!   as `message/http`, without `Cookie`, `Authorization` and
//!   `Proxy-Authorization`. `TRACE` is in `Allow` only when `allow_trace`
//!   is set, in its OPTIONS answers and (at SendResponse) in the server's
//!   405s. Other methods are passed on with Continue.
//!
//! OPTIONS and TRACE reach it through a handler listed before the static
//! handler:
//!
//! ```toml
//! [[handlers]]
//! name = "OPTIONSVerbHandler"
//! path = "*"
//! verbs = ["OPTIONS", "TRACE"]
//! modules = ["ProtocolSupport"]
//! ```
//!
//! Configuration section `protocol`:
//! - `custom_headers`: table of name → value (default empty);
//! - `redirect_headers`: table of name → value, for redirects (301, 302,
//!   303, 307, 308; not 304) (default empty);
//! - `remove_headers`: array of names (default empty);
//! - `allow_trace` (default false);
//! - `keep_alive` (default true).

use std::collections::BTreeMap;
use std::sync::Arc;

use riis_pipeline::http::header::{self, HeaderName};
use riis_pipeline::http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

/// Headers to set on every response, checked when the configuration loads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct CustomHeaders(pub Arc<[(HeaderName, HeaderValue)]>);

impl TryFrom<BTreeMap<String, String>> for CustomHeaders {
    type Error = String;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        map.into_iter()
            .map(|(name, value)| {
                let n = HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                if HTTP_LAYER_HEADERS.contains(&n.as_str()) {
                    return Err(format!(
                        "`{name}` is the HTTP layer's (framing, connection or date) and cannot be set here"
                    ));
                }
                let v = HeaderValue::try_from(value.as_str()).map_err(|_| {
                    format!(
                        "`{}` is not a valid value for `{name}`",
                        value.escape_debug()
                    )
                })?;
                Ok((n, v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Self(v.into()))
    }
}

/// Headers the HTTP layer writes from what it does (framing, the
/// connection, the date): set by a module they would contradict it
/// (`Transfer-Encoding: gzip` on a body that is not).
pub(crate) const HTTP_LAYER_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "date",
];

/// Header names to remove from every response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct HeaderNames(pub Arc<[HeaderName]>);

impl TryFrom<Vec<String>> for HeaderNames {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<Self, String> {
        names
            .iter()
            .map(|name| {
                let n = HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                // Written by the HTTP layer after every module: a removal
                // here would never take effect.
                if HTTP_LAYER_HEADERS.contains(&n.as_str()) {
                    return Err(format!(
                        "`{name}` is the HTTP layer's (framing, connection or date), written after the modules, and cannot be removed here"
                    ));
                }
                Ok(n)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Self(v.into()))
    }
}

/// The `protocol` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Name → value, set on every response.
    pub custom_headers: CustomHeaders,
    /// Name → value, set on redirects (3xx) only: IIS's `redirectHeaders`.
    pub redirect_headers: CustomHeaders,
    /// Names removed from every response.
    pub remove_headers: HeaderNames,
    /// Whether TRACE is echoed (405 otherwise).
    pub allow_trace: bool,
    /// Whether connections stay open after a response.
    pub keep_alive: bool,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            custom_headers: CustomHeaders::default(),
            redirect_headers: CustomHeaders::default(),
            remove_headers: HeaderNames::default(),
            allow_trace: false,
            keep_alive: true,
        }
    }
}

/// The module instance.
pub struct ProtocolSupport {
    config: Section<ProtocolConfig>,
}

/// What a handler accepting every method stands for in `Allow`, and the
/// order methods are listed in.
const COMMON_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];

/// The `Allow` value for the request's URL: the methods of the location's
/// handlers whose path matches, OPTIONS always, TRACE only if allowed.
/// Takes `TRACE` out of an `Allow` header.
fn without_trace(headers: &mut HeaderMap) {
    let Some(allow) = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !allow.split(',').any(|m| m.trim() == "TRACE") {
        return;
    }
    let kept: Vec<&str> = allow
        .split(',')
        .map(str::trim)
        .filter(|m| *m != "TRACE" && !m.is_empty())
        .collect();
    if let Ok(value) = HeaderValue::try_from(kept.join(", ")) {
        headers.insert(header::ALLOW, value);
    }
}

fn allowed_methods(ctx: &HttpContext, allow_trace: bool) -> String {
    let url = ctx.request().url();
    let mut methods: Vec<Method> = Vec::new();
    let mut add = |m: &Method| {
        if !methods.contains(m) {
            methods.push(m.clone());
        }
    };
    for h in ctx
        .location()
        .handlers()
        .iter()
        .filter(|h| h.path.matches(url))
    {
        match &h.verbs {
            Some(verbs) => verbs.iter().for_each(&mut add),
            None => COMMON_METHODS.iter().for_each(&mut add),
        }
    }
    add(&Method::OPTIONS);
    if allow_trace {
        add(&Method::TRACE);
    } else {
        methods.retain(|m| *m != Method::TRACE);
    }
    methods.sort_by_key(|m| riis_pipeline::allow_rank(m.as_str()));
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request head as received, for TRACE (RFC 9110 §9.3.8), without the
/// headers that carry credentials.
fn trace_echo(ctx: &HttpContext) -> Vec<u8> {
    let req = ctx.request();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.raw_url().as_bytes());
    out.extend_from_slice(format!(" {:?}\r\n", req.http_version()).as_bytes());
    for (name, value) in req.headers() {
        if name == header::COOKIE
            || name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl HttpModule for ProtocolSupport {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let method = ctx.request().method().clone();
        let allow_trace = ctx.config(self.config).allow_trace;
        if method == Method::OPTIONS {
            let allow = allowed_methods(ctx, allow_trace);
            let resp = ctx.response_mut();
            resp.clear_entity();
            resp.set_status(StatusCode::OK, "OK");
            if let Ok(v) = HeaderValue::try_from(allow) {
                resp.set_header(header::ALLOW, v);
            }
            resp.set_header(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            ctx.set_request_handled();
            RequestNotificationStatus::Continue
        } else if method == Method::TRACE {
            if !allow_trace {
                let allow = allowed_methods(ctx, false);
                let resp = ctx.response_mut();
                resp.clear_entity();
                resp.set_error_status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method Not Allowed",
                    0,
                    ModuleError::E_NOT_SUPPORTED,
                );
                if let Ok(v) = HeaderValue::try_from(allow) {
                    resp.set_header(header::ALLOW, v);
                }
                ctx.set_request_handled();
                return RequestNotificationStatus::FinishRequest;
            }
            let echo = trace_echo(ctx);
            let resp = ctx.response_mut();
            resp.clear_entity();
            resp.set_status(StatusCode::OK, "OK");
            resp.set_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/http"),
            );
            resp.write(echo);
            ctx.set_request_handled();
            RequestNotificationStatus::Continue
        } else {
            RequestNotificationStatus::Continue
        }
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if !provider.headers_being_sent() {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        if !config.allow_trace && ctx.response().status() == StatusCode::METHOD_NOT_ALLOWED {
            // The server's 405 lists what the URL's handlers accept, TRACE
            // among them when this module's handler takes it; refused here,
            // it is not allowed.
            without_trace(ctx.response_mut().headers_mut());
        }
        let config = ctx.config(self.config);
        if config.remove_headers.0.is_empty()
            && config.custom_headers.0.is_empty()
            && config.redirect_headers.0.is_empty()
            && config.keep_alive
        {
            return RequestNotificationStatus::Continue;
        }
        // Shared lists: cloning the `Arc`s frees the borrow of the context.
        let remove = config.remove_headers.0.clone();
        let add = config.custom_headers.0.clone();
        let redirect = config.redirect_headers.0.clone();
        // Redirects only: not a 304 (whose headers a cache takes into the
        // page it keeps), nor 300 or 305, which send nobody elsewhere.
        let is_redirect = matches!(
            ctx.response().status().as_u16(),
            301 | 302 | 303 | 307 | 308
        );
        // Keep-alive is HTTP/1.x's: an HTTP/2 connection carries many
        // streams at once and ends by its idle timeout, not per response.
        let keep_alive = config.keep_alive || ctx.request().http_version() >= Version::HTTP_2;
        let resp = ctx.response_mut();
        for name in remove.iter() {
            resp.delete_header(name);
        }
        let added = add
            .iter()
            .chain(redirect.iter().filter(|_| is_redirect))
            // Removal wins: a location drops a custom header it inherits
            // by listing it in `remove_headers` (IIS's `<remove>`).
            .filter(|(name, _)| !remove.contains(name));
        for (name, value) in added {
            if name == header::VARY {
                // `Vary` lists what the response depends on: the module's
                // tokens join those already there (a compression module's
                // `Accept-Encoding`), which replacing would hide from
                // caches.
                add_vary_tokens(resp.headers_mut(), value);
            } else {
                resp.set_header(name.clone(), value.clone());
            }
        }
        if !keep_alive {
            resp.set_need_disconnect();
        }
        RequestNotificationStatus::Continue
    }
}

/// Appends to `Vary` each token of `value` not already listed (any case);
/// `Vary: *` already covers everything.
fn add_vary_tokens(headers: &mut HeaderMap, value: &HeaderValue) {
    let listed: Vec<String> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if listed.iter().any(|t| t == "*") {
        return;
    }
    let Ok(value) = value.to_str() else {
        headers.append(header::VARY, value.clone());
        return;
    };
    let missing: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !listed.contains(&t.to_ascii_lowercase()))
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&missing.join(", ")) {
        headers.append(header::VARY, v);
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<ProtocolConfig>("protocol")?;
    registration.set_request_notifications(
        move || ProtocolSupport { config },
        RequestNotification::ExecuteRequestHandler | RequestNotification::SendResponse,
        RequestNotifications::NONE,
    )?;
    // SendResponse runs in inverted order: First runs after the modules of
    // lower priority, so the headers are edited as they leave.
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::First);
    Ok(())
}
