//! `CustomError`: IIS's custom error pages (`httpErrors`).
//!
//! Registers for:
//! - **SendResponse** at HIGH priority, as IIS does: SendResponse runs in
//!   inverted order, so it runs after the modules of lower priority have had
//!   their say and before the FIRST ones (which see the final headers). On
//!   the send that carries the headers of an error response (status 400 or
//!   above) it replaces the body with a detailed page, a short generic
//!   page, a file, or a redirect; when that send is a flush (a CGI
//!   program's error output larger than `response_buffer_limit`) and
//!   `existing_response` is `Replace`, what follows it is dropped, and an
//!   ExecuteURL rule gives the generic page;
//! - **EndRequest**, for rules with `response_mode = "ExecuteURL"`: a child
//!   request cannot be started from SendResponse (operations started in
//!   nested notifications are ignored), so the error URL runs at EndRequest,
//!   before the final send, as a buffered child request with custom errors
//!   disabled. Its OnAsyncCompletion puts the original status and headers
//!   back, with the child's body, type and language. When the child fails (its status is not
//!   2xx) the body is dropped and the send falls back to the generic page.
//!
//! Only the top-level request is handled: a buffered child's output becomes
//! the parent's, and the parent decides. Requests executed with
//! `ExecuteFlags::disable_custom_error` are left alone.
//!
//! Which page (`error_mode`): `Detailed` always gives the detailed page
//! (status and substatus, reason, the module and notification that set the
//! error, handler, physical path, method and URL, error code and
//! description, all HTML-escaped); `Custom` gives the rule for the status
//! (or the generic page when none matches); `DetailedLocalOnly` (the default)
//! gives the detailed page to loopback clients and the custom one to others.
//!
//! Whether to replace (`existing_response`): `Replace` always, `PassThrough`
//! never, `Auto` (the default) when the body is empty or the module that set
//! the status did not call `set_try_skip_custom_errors(true)`.
//!
//! Configuration section `http_errors`; see `docs/modules/custom-errors.md`.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use riis_pipeline::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    escape_html, CompletionInfo, ExecuteFlags, HttpContext, HttpModule, ModuleError,
    ModuleRegistration, Priority, RequestNotification, RequestNotificationStatus,
    RequestNotifications, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

/// Which error page a client gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ErrorMode {
    /// Detailed for loopback clients, custom for the others.
    #[default]
    DetailedLocalOnly,
    /// The configured page (or the generic one) for everybody.
    Custom,
    /// The detailed page for everybody.
    Detailed,
}

/// What to do with a body the response already has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ExistingResponse {
    /// Replace it unless it is not empty and its module asked to skip
    /// custom errors.
    #[default]
    Auto,
    /// Always replace it.
    Replace,
    /// Never replace: error responses go out as their modules made them.
    PassThrough,
}

/// How a rule answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ResponseMode {
    /// Serve a file relative to the site root, keeping the error status.
    #[default]
    File,
    /// Run a URL of the site as a child request, keeping the error status.
    #[serde(rename = "ExecuteURL")]
    ExecuteUrl,
    /// Answer 302 to the path.
    Redirect,
}

/// An error status, 400 to 999.
fn error_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let status = u16::deserialize(d)?;
    if !(400..=999).contains(&status) {
        return Err(serde::de::Error::custom(format!(
            "{status} is not an error status (400 to 999)"
        )));
    }
    Ok(status)
}

/// One `errors` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RuleFields")]
pub struct ErrorRule {
    /// The status it applies to: 400 to 999, as in IIS (only errors get
    /// custom pages).
    #[serde(deserialize_with = "error_status")]
    pub status: u16,
    /// The substatus it applies to; `-1` for any.
    #[serde(default = "any_substatus")]
    pub substatus: i32,
    /// A file (relative to the site root), a URL of the site, or a redirect
    /// target.
    pub path: String,
    /// How the path is used.
    #[serde(default)]
    pub response_mode: ResponseMode,
}

fn any_substatus() -> i32 {
    -1
}

/// An `errors` entry as written, before its path is checked against its
/// mode.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(deserialize_with = "error_status")]
    status: u16,
    #[serde(default = "any_substatus")]
    substatus: i32,
    path: String,
    #[serde(default)]
    response_mode: ResponseMode,
}

impl TryFrom<RuleFields> for ErrorRule {
    type Error = String;

    /// Refuses at load what could only ever give the generic page.
    fn try_from(f: RuleFields) -> Result<Self, String> {
        let path = &f.path;
        if !(-1..=999).contains(&f.substatus) {
            // IIS's schema: -1 (any) or 0 to 999; nothing else is ever set.
            return Err(format!(
                "substatus {} can never match: it is -1 (any) or 0 to 999",
                f.substatus
            ));
        }
        let climbs = path.split(['/', '\\']).any(|segment| segment == "..");
        match f.response_mode {
            ResponseMode::File if path.is_empty() || climbs => {
                return Err(format!(
                    "`{path}` is not a file below the site root (no `..`)"
                ))
            }
            ResponseMode::ExecuteUrl if !path.starts_with('/') || path.starts_with("//") || climbs => {
                return Err(format!(
                    "`{path}` is not a URL of the site for ExecuteURL (a path starting with `/`, without `..`)"
                ))
            }
            ResponseMode::ExecuteUrl => {
                // Refused now, not at each error: the request would only
                // ever get the generic page.
                if let Some(why) = child_url_error(path) {
                    return Err(format!("`{path}` cannot be requested for ExecuteURL: {why}"));
                }
            }
            ResponseMode::Redirect
                if HeaderValue::try_from(path.as_str()).is_err()
                    || path.is_empty()
                    || path.chars().any(char::is_whitespace) =>
            {
                return Err(format!(
                    "`{}` is not a usable redirect target (empty, control characters or spaces)",
                    path.escape_debug()
                ))
            }
            // A relative target resolves against each failing URL: from
            // `/a/b` the client is sent to `/a/errors/404.html`, which fails
            // in turn and sends it one folder deeper, without end.
            // `//host/x` is no path: browsers take it as another site.
            ResponseMode::Redirect if path.starts_with("//") => {
                return Err(format!(
                    "`{path}` names another host (`//host/…`), not a path of the site: write \
                     https://… if another site is meant"
                ))
            }
            ResponseMode::Redirect
                if !path.starts_with('/') && !is_absolute_http_url(path) =>
            {
                return Err(format!(
                    "`{path}` is relative: a Redirect target is a path starting with `/` or an \
                     absolute http:// or https:// URL"
                ))
            }
            _ => {}
        }
        let path = match f.response_mode {
            // A `Location` is ASCII.
            ResponseMode::Redirect => crate::encode_non_ascii(&f.path).into_owned(),
            _ => f.path,
        };
        Ok(Self {
            status: f.status,
            substatus: f.substatus,
            path,
            response_mode: f.response_mode,
        })
    }
}

/// The `http_errors` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpErrorsConfig {
    /// Which page a client gets.
    pub error_mode: ErrorMode,
    /// What to do with a body the response already has.
    pub existing_response: ExistingResponse,
    /// Custom pages by status.
    #[serde(deserialize_with = "distinct_rules")]
    pub errors: Vec<ErrorRule>,
}

/// `errors` with one rule per status and substatus: a second would never
/// be used (IIS refuses it as a duplicate collection entry).
fn distinct_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ErrorRule>, D::Error> {
    let rules = Vec::<ErrorRule>::deserialize(d)?;
    for (i, rule) in rules.iter().enumerate() {
        if rules[..i]
            .iter()
            .any(|r| r.status == rule.status && r.substatus == rule.substatus)
        {
            return Err(serde::de::Error::custom(format!(
                "two rules for status {} substatus {}: the second would never be used",
                rule.status, rule.substatus
            )));
        }
    }
    Ok(rules)
}

impl HttpErrorsConfig {
    /// The rule for `status.substatus`: an exact substatus first, then `-1`.
    pub fn rule_for(&self, status: u16, substatus: u16) -> Option<&ErrorRule> {
        let of_status = || self.errors.iter().filter(move |r| r.status == status);
        of_status()
            .find(|r| r.substatus == i32::from(substatus))
            .or_else(|| of_status().find(|r| r.substatus == -1))
    }
}

/// What the module does for one error response.
enum Action<'a> {
    Detailed,
    Generic,
    Rule(&'a ErrorRule),
}

/// The status an ExecuteURL child request replaced, to put back.
struct Saved {
    /// The page's URL, for the log.
    url: String,
    /// The failed response's status, error (who set it, and its
    /// description: failed-request traces name them) and headers: the
    /// page's child request must not leave its own (validators, caching, a
    /// redirect's `Location`) on the error response.
    head: riis_pipeline::KeptHead,
}

/// A rule that cannot give its page (a missing file, a failing URL): one
/// line a second at most, naming the site and the rule, since a client can
/// make every request hit it.
fn warn_broken_rule(
    ctx: &HttpContext,
    path: &str,
    what: &str,
    error: Option<&dyn std::fmt::Display>,
) {
    static BROKEN_RULE_LOG: crate::LogGate = crate::LogGate::new();
    if let Some(held_back) = BROKEN_RULE_LOG.pass() {
        tracing::warn!(
            site = %ctx.site().site_name,
            path,
            error = error.map(|e| e.to_string()),
            held_back,
            "CustomError: {what}; sending the generic page"
        );
    }
}

/// The module instance.
pub struct CustomError {
    config: Section<HttpErrorsConfig>,
    /// StaticFile's section: whether symbolic links are followed, for the
    /// error pages a location sends as files too.
    static_file: Section<crate::static_file::StaticFileConfig>,
    /// The status under an ExecuteURL child request running now.
    saved: Option<Saved>,
    /// An ExecuteURL child produced the body: the send leaves it alone.
    executed: bool,
    /// The error page replaced a response whose headers went out with a
    /// flush: what the module sends after them is dropped.
    replaced_stream: bool,
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn decide<'a>(ctx: &HttpContext, config: &'a HttpErrorsConfig) -> Option<Action<'a>> {
    if ctx.execute_flags().disable_custom_error {
        return None;
    }
    let resp = ctx.response();
    // A connection being reset gets no page (nothing is sent at all).
    if resp.status().as_u16() < 400 || resp.is_connection_reset() {
        return None;
    }
    let empty = resp.buffered_len() == 0 && resp.bytes_sent() == 0;
    let replace = match config.existing_response {
        ExistingResponse::Replace => true,
        ExistingResponse::PassThrough => false,
        ExistingResponse::Auto => empty || !resp.try_skip_custom_errors(),
    };
    if !replace {
        return None;
    }
    let detailed = match config.error_mode {
        ErrorMode::Detailed => true,
        ErrorMode::Custom => false,
        ErrorMode::DetailedLocalOnly => is_local(ctx.request().remote_address().ip()),
    };
    if detailed {
        return Some(Action::Detailed);
    }
    Some(
        config
            .rule_for(resp.status().as_u16(), resp.substatus())
            .map_or(Action::Generic, Action::Rule),
    )
}

fn status_text(status: StatusCode, substatus: u16) -> String {
    if substatus == 0 {
        status.as_u16().to_string()
    } else {
        format!("{}.{}", status.as_u16(), substatus)
    }
}

/// A few words on the common errors, for pages without a description.
fn explanation(status: u16, substatus: u16) -> &'static str {
    match (status, substatus) {
        (401, 1) => "Logon failed: the user name or password is not valid.",
        (401, 2) => "Logon failed due to server configuration: this resource needs a logon, or a user allowed to see it.",
        (401 | 403 | 404, 501) => "Dynamic IP restriction: too many concurrent requests from this client address.",
        (401 | 403 | 404, 502) => "Dynamic IP restriction: too many requests from this client address in a short time.",
        (401 | 403 | 404, 503) => "IP restriction: requests from this client address are denied.",
        (404, 3) => "The page cannot be served because its file extension has no MIME type configured.",
        (404, 4) => "No handler is configured for this URL and method.",
        (404, 5) => "Request filtering denies a sequence found in the URL.",
        (404, 6) => "Request filtering denies this HTTP method.",
        (404, 7) => "Request filtering denies this file extension.",
        (404, 8) => "Request filtering hides a segment of this URL.",
        (404, 10) => "Request filtering found a request header too long.",
        (404, 11) => "Request filtering denies double-escaped URLs.",
        (404, 12) => "Request filtering denies non-ASCII characters in URLs.",
        (404, 14) => "Request filtering found the URL too long.",
        (404, 15) => "Request filtering found the query string too long.",
        (404, 18) => "Request filtering denies a sequence found in the query string.",
        (404, _) => "The resource you are looking for has been removed, had its name changed, or is temporarily unavailable.",
        (405, _) => "The HTTP method used is not allowed for this resource.",
        (413, _) => "The request body is larger than the server accepts.",
        (431, _) => "A request header is larger than the server accepts.",
        (401, _) | (403, _) => "You do not have permission to view this resource.",
        (500..=599, _) => "The server met an error while processing the request.",
        _ => "The request could not be completed.",
    }
}

fn reason_of(ctx: &HttpContext) -> String {
    let resp = ctx.response();
    resp.reason()
        .map(str::to_owned)
        .or_else(|| resp.status().canonical_reason().map(str::to_owned))
        .unwrap_or_default()
}

const PAGE_STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em;color:#a00}th{text-align:left;padding-right:1em;vertical-align:top}\
td,th{padding:.2em .5em .2em 0}";

/// The detailed error page.
pub fn detailed_page(ctx: &HttpContext) -> String {
    let resp = ctx.response();
    let title = format!(
        "HTTP Error {} - {}",
        status_text(resp.status(), resp.substatus()),
        reason_of(ctx)
    );
    let description = resp
        .error_description()
        .unwrap_or_else(|| explanation(resp.status().as_u16(), resp.substatus()));
    let (module, notification, code) = match resp.error() {
        Some(e) => (
            e.module
                .map_or("(the server)", |m| ctx.pipeline().module_name(m))
                .to_owned(),
            e.notification.to_owned(),
            format!("0x{:08x}", e.hresult),
        ),
        None => (
            "(unknown)".to_owned(),
            "(unknown)".to_owned(),
            "0x00000000".to_owned(),
        ),
    };
    let handler = ctx.handler_name().unwrap_or("(none)").to_owned();
    let physical = ctx
        .mapped_path()
        .map_or_else(|| "(not mapped)".to_owned(), |p| p.display().to_string());
    let req = ctx.request();
    let rows = [
        ("Module", module),
        ("Notification", notification),
        ("Handler", handler),
        ("Error Code", code),
        ("Requested URL", req.raw_url().to_owned()),
        // No method row (IIS's page has none): a HEAD's page must be as
        // long as its GET's, whose Content-Length it reports (RFC 9110
        // §8.6).
        ("Physical Path", physical),
    ];
    let mut table = String::new();
    for (name, value) in rows {
        table.push_str(&format!(
            "<tr><th>{name}</th><td>{}</td></tr>\n",
            escape_html(&value)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{PAGE_STYLE}</style></head>\n<body><h1>{title}</h1>\n<p>{description}</p>\n\
         <h2>Detailed Error Information</h2>\n<table>\n{table}</table>\n\
         <p>This page is shown to local clients (<code>http_errors.error_mode</code>).</p>\n\
         </body></html>\n",
        title = escape_html(&title),
        description = escape_html(description),
    )
}

/// The short page for clients that get no details.
pub fn generic_page(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code} - {reason}</title>\
         <style>{PAGE_STYLE}</style></head>\n<body><h1>{code} - {reason}</h1>\n<p>{text}</p>\n\
         </body></html>\n",
        code = status.as_u16(),
        reason = escape_html(reason),
        text = escape_html(explanation(status.as_u16(), 0)),
    )
}

/// Whether `target` is an absolute `http://` or `https://` URL (any case).
fn is_absolute_http_url(target: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        target
            .get(..scheme.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(scheme))
    })
}

fn replace_body(ctx: &mut HttpContext, content_type: HeaderValue, body: Vec<u8>) {
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.delete_header(header::CONTENT_LENGTH);
    resp.delete_header(header::CONTENT_ENCODING);
    resp.set_header(header::CONTENT_TYPE, content_type);
    resp.write(body);
}

const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// Whether the redirect target `path` is the request's own URL (compared
/// as requests are: decoded and normalized): a local path, or an absolute
/// URL that names this request's scheme, host and port.
fn redirects_to_itself(ctx: &HttpContext, path: &str) -> bool {
    let local = if is_absolute_http_url(path) {
        match path.parse::<riis_pipeline::http::Uri>() {
            Ok(url) if names_this_host(ctx, &url) => url.path().to_owned(),
            _ => return false,
        }
    } else {
        path.to_owned()
    };
    if !local.starts_with('/') || local.starts_with("//") {
        return false;
    }
    let target = local.split(['?', '#']).next().unwrap_or("");
    riis_pipeline::prepare_url_path(target).is_ok_and(|target| {
        target.trim_end_matches('/') == ctx.request().url().trim_end_matches('/')
    })
}

/// Whether absolute `url` names the scheme, host and port this request
/// came to (the host as the client wrote it).
fn names_this_host(ctx: &HttpContext, url: &riis_pipeline::http::Uri) -> bool {
    let request = ctx.request();
    let (scheme, default_port) = if request.is_tls() {
        ("https", 443)
    } else {
        ("http", 80)
    };
    let Some(client) = request
        .client_host()
        .and_then(|h| h.parse::<riis_pipeline::http::uri::Authority>().ok())
    else {
        return false;
    };
    let same_host = |a: &str, b: &str| {
        a.trim_end_matches('.')
            .eq_ignore_ascii_case(b.trim_end_matches('.'))
    };
    url.scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && url.host().is_some_and(|h| same_host(h, client.host()))
        && url.port_u16().unwrap_or(default_port) == client.port_u16().unwrap_or(default_port)
}

/// Whether a child request can be given `path_and_query` as its URL, and
/// why not.
fn child_url_error(path_and_query: &str) -> Option<String> {
    match path_and_query.parse::<riis_pipeline::http::Uri>() {
        Ok(url) if url.scheme().is_none() && url.authority().is_none() => {
            riis_pipeline::prepare_url_path(url.path())
                .err()
                .map(|e| e.to_string())
        }
        _ => Some(
            "not a URL path (percent-encode spaces and other characters a URL cannot hold)"
                .to_owned(),
        ),
    }
}

/// `path` below the site root, or `None` when it climbs out of it.
fn file_under_root(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(root.join(rel))
}

/// The most an error page sent as a file may hold.
const MAX_ERROR_FILE: u64 = 4 * 1024 * 1024;

/// An error page's bytes, read as StaticFile would serve them: a regular
/// file only (not a FIFO, which would stall the worker, nor a device such
/// as `/dev/zero` behind a link), opened non-blocking, through no symbolic
/// link where the location does not follow them, and at most
/// [`MAX_ERROR_FILE`] bytes.
fn read_error_file(root: &Path, path: &Path, follow_symlinks: bool) -> std::io::Result<Vec<u8>> {
    let file = if follow_symlinks {
        crate::open_nonblocking(path)?
    } else {
        crate::static_file::open_without_symlinks(root, path)?
    };
    crate::read_regular(file, MAX_ERROR_FILE)
}

fn content_type_of(path: &Path) -> HeaderValue {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm") => HTML,
        Some(e) => mime_guess::from_ext(e)
            .first_raw()
            .map_or(HeaderValue::from_static("application/octet-stream"), |t| {
                HeaderValue::from_static(t)
            }),
        None => HeaderValue::from_static("application/octet-stream"),
    }
}

impl CustomError {
    fn serve_rule(&self, ctx: &mut HttpContext, rule: &ErrorRule) {
        let status = ctx.response().status();
        match rule.response_mode {
            ResponseMode::File => {
                let root = ctx.site().physical_root.clone();
                let follow_symlinks = ctx.config(self.static_file).follow_symlinks;
                let read = file_under_root(&root, &rule.path)
                    .ok_or_else(|| std::io::Error::other("the path leaves the site root"))
                    .and_then(|p| {
                        read_error_file(&root, &p, follow_symlinks).map(|data| (p, data))
                    });
                match read {
                    Ok((p, data)) => replace_body(ctx, content_type_of(&p), data),
                    Err(e) => {
                        warn_broken_rule(
                            ctx,
                            &rule.path,
                            "the error page file is unreadable",
                            Some(&e),
                        );
                        replace_body(ctx, HTML, generic_page(status).into_bytes());
                    }
                }
            }
            // The page's own URL failing too would send the client back to
            // it forever.
            ResponseMode::Redirect if redirects_to_itself(ctx, &rule.path) => {
                warn_broken_rule(
                    ctx,
                    &rule.path,
                    "the error page redirects to the failing URL itself",
                    None,
                );
                replace_body(ctx, HTML, generic_page(status).into_bytes());
            }
            ResponseMode::Redirect => {
                let resp = ctx.response_mut();
                resp.delete_header(header::CONTENT_LENGTH);
                resp.delete_header(header::CONTENT_ENCODING);
                // A 405's `Allow` names the refusing resource's methods,
                // not the page's the client is sent to.
                resp.delete_header(header::ALLOW);
                if let Err(e) = resp.redirect(&rule.path, StatusCode::FOUND) {
                    warn_broken_rule(
                        ctx,
                        &rule.path,
                        "the error page redirect was refused",
                        Some(&e),
                    );
                    replace_body(ctx, HTML, generic_page(status).into_bytes());
                }
            }
            // The child request did not run or failed (see on_end_request).
            ResponseMode::ExecuteUrl => replace_body(ctx, HTML, generic_page(status).into_bytes()),
        }
    }

    /// Puts the failed response's head back, `headers` on it.
    fn restore(ctx: &mut HttpContext, mut saved: Saved, headers: HeaderMap) {
        *saved.head.headers_mut() = headers;
        ctx.response_mut().restore_head(saved.head);
    }
}

impl HttpModule for CustomError {
    fn on_end_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.child_depth() != 0 || ctx.response().headers_sent() {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let Some(Action::Rule(rule)) = decide(ctx, config) else {
            return RequestNotificationStatus::Continue;
        };
        if rule.response_mode != ResponseMode::ExecuteUrl {
            return RequestNotificationStatus::Continue;
        }
        let url = rule.path.clone();
        let saved = Saved {
            url: url.clone(),
            head: ctx.response().keep_head(),
        };
        let started = ctx.clone_context_with_url(&url).and_then(|mut child| {
            // The error page is fetched, whatever the request's method was,
            // and whole: the client's range and validators were about the
            // resource that failed, not about the page (a 404 must not come
            // as a 206 slice or an empty 304 of it).
            if child.request().method() != Method::HEAD {
                child.request_mut().set_method(Method::GET);
            }
            for name in crate::RANGE_AND_CONDITIONAL_HEADERS {
                child.request_mut().delete_header(name);
            }
            // The page is the request now: an application behind it (a
            // front controller that routes on `REQUEST_URI`) must not run
            // the route of a URL that was just refused (an IP restriction's
            // or a filter's 404, a 403, a 401).
            child.set_server_variable("REQUEST_URI", url.as_str());
            ctx.execute_request(
                child,
                ExecuteFlags {
                    buffer_response: true,
                    disable_custom_error: true,
                    ..ExecuteFlags::default()
                },
            )
        });
        match started {
            Ok(()) => {
                ctx.response_mut().clear_entity();
                self.saved = Some(saved);
                RequestNotificationStatus::Pending
            }
            Err(e) => {
                warn_broken_rule(
                    ctx,
                    &url,
                    "the error page URL could not be requested",
                    Some(&e),
                );
                RequestNotificationStatus::Continue
            }
        }
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        _completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        let Some(mut saved) = self.saved.take() else {
            return RequestNotificationStatus::Continue;
        };
        let child_status = ctx.response().status();
        let mut headers = std::mem::take(saved.head.headers_mut());
        if child_status.is_success() {
            self.executed = true;
            // The error response's own headers, with the page's type and
            // language; its length is the server's to count, except for
            // HEAD, whose page came without a body to count (the page's
            // own Content-Length says what a GET would get).
            let is_head = ctx.request().method() == riis_pipeline::http::Method::HEAD;
            // What described the failed entity no longer does: the page is
            // not compressed (a `Content-Encoding: gzip` left on it made
            // browsers fail to decode it), not a range of it, and has
            // neither its validators nor its disposition.
            // A 416's `Content-Range: bytes */length` stays: it tells the
            // client the resource's length (RFC 9110 §15.5.17), not the
            // page's.
            let unsatisfied_range = saved.head.status() == StatusCode::RANGE_NOT_SATISFIABLE
                && headers
                    .get(header::CONTENT_RANGE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"bytes */"));
            if !unsatisfied_range {
                headers.remove(header::CONTENT_RANGE);
            }
            for name in [
                header::CONTENT_ENCODING,
                header::CONTENT_DISPOSITION,
                header::ACCEPT_RANGES,
                header::ETAG,
                header::LAST_MODIFIED,
            ] {
                headers.remove(name);
            }
            let page = ctx.response().headers();
            for name in [
                header::CONTENT_TYPE,
                header::CONTENT_LANGUAGE,
                header::CONTENT_LENGTH,
            ] {
                headers.remove(&name);
                if name != header::CONTENT_LENGTH || is_head {
                    if let Some(v) = page.get(&name) {
                        headers.insert(name, v.clone());
                    }
                }
            }
        } else {
            let what = format!("the error page URL answered {}", child_status.as_u16());
            warn_broken_rule(ctx, &saved.url, &what, None);
            ctx.response_mut().clear_entity();
        }
        Self::restore(ctx, saved, headers);
        RequestNotificationStatus::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if self.replaced_stream {
            // The rest of the body the error page replaced.
            ctx.response_mut().clear_entity();
            return RequestNotificationStatus::Continue;
        }
        // The send that carries the headers: the final send's first, even
        // when a module before this one took the body a piece at a time
        // (UrlRewrite's outbound rules), or a flush of the client's request
        // (a CGI program's error output past response_buffer_limit). The
        // error page replaces the response, and the rest is dropped.
        if self.executed || !provider.headers_being_sent() {
            return RequestNotificationStatus::Continue;
        }
        let flushed = provider.is_flush();
        if flushed && ctx.child_depth() > 0 {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        // A flushed body's size is not known yet: only `Replace` replaces
        // it (`Auto` would take a streamed answer for an empty one).
        if flushed && config.existing_response != ExistingResponse::Replace {
            return RequestNotificationStatus::Continue;
        }
        let action = decide(ctx, config);
        self.replaced_stream = flushed && action.is_some();
        match action {
            None => {}
            Some(Action::Detailed) => {
                let page = detailed_page(ctx);
                replace_body(ctx, HTML, page.into_bytes());
            }
            Some(Action::Generic) => {
                let page = generic_page(ctx.response().status());
                replace_body(ctx, HTML, page.into_bytes());
            }
            Some(Action::Rule(rule)) => {
                let rule = rule.clone();
                self.serve_rule(ctx, &rule);
            }
        }
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<HttpErrorsConfig>("http_errors")?;
    let static_file =
        registration.share_section::<crate::static_file::StaticFileConfig>("static_file")?;
    registration.set_request_notifications(
        move || CustomError {
            config,
            static_file,
            saved: None,
            executed: false,
            replaced_stream: false,
        },
        RequestNotification::SendResponse | RequestNotification::EndRequest,
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::High);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_cannot_work_in_their_mode_are_refused() {
        let parse = |rule: &str| {
            serde_json::from_str::<HttpErrorsConfig>(&format!("{{\"errors\": [{rule}]}}"))
        };
        for bad in [
            r#"{"status": 405, "path": "errors/404.html", "response_mode": "ExecuteURL"}"#,
            r#"{"status": 404, "path": "/errors/../x.html", "response_mode": "ExecuteURL"}"#,
            r#"{"status": 404, "path": "/errors/../index.html"}"#,
            r#"{"status": 404, "path": ""}"#,
            r#"{"status": 404, "path": "/a b", "response_mode": "Redirect"}"#,
            // Relative: each failing URL would send the client one folder
            // deeper.
            r#"{"status": 404, "path": "errors/404.html", "response_mode": "Redirect"}"#,
            r#"{"status": 404, "path": "ftp://x.example/e", "response_mode": "Redirect"}"#,
            // What a child request could never be given: the generic page
            // each time.
            r#"{"status": 404, "path": "/errors/my page.html", "response_mode": "ExecuteURL"}"#,
            r#"{"status": 404, "path": "/errors/100%.html", "response_mode": "ExecuteURL"}"#,
            r#"{"status": 404, "path": "/errors/%0a.html", "response_mode": "ExecuteURL"}"#,
            // Another host, written as a path.
            r#"{"status": 404, "path": "//evil.example/x", "response_mode": "Redirect"}"#,
            // Substatuses no response has.
            r#"{"status": 404, "substatus": -2, "path": "errors/404.html"}"#,
            r#"{"status": 404, "substatus": 70000, "path": "errors/404.html"}"#,
            // A second rule for one status and substatus.
            r#"{"status": 404, "path": "a.html"}, {"status": 404, "path": "b.html"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(
            r#"{"status": 404, "path": "a.html"}, {"status": 404, "substatus": 3, "path": "b.html"}"#
        )
        .is_ok());
        for good in [
            r#"{"status": 404, "path": "errors/404.html"}"#,
            r#"{"status": 404, "path": "/errors/404.html", "response_mode": "ExecuteURL"}"#,
            r#"{"status": 404, "path": "https://x.example/e", "response_mode": "Redirect"}"#,
            r#"{"status": 404, "path": "HTTP://x.example/e", "response_mode": "Redirect"}"#,
            r#"{"status": 404, "path": "/errors/404.html", "response_mode": "Redirect"}"#,
            r#"{"status": 404, "path": "/errors/my%20page.html?x=1", "response_mode": "ExecuteURL"}"#,
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        let rule =
            parse(r#"{"status": 404, "path": "/errors/é.html", "response_mode": "Redirect"}"#);
        assert_eq!(rule.unwrap().errors[0].path, "/errors/%C3%A9.html");
    }

    #[test]
    fn rules_prefer_the_exact_substatus() {
        let config: HttpErrorsConfig = HttpErrorsConfig {
            errors: vec![
                ErrorRule {
                    status: 404,
                    substatus: -1,
                    path: "/any".into(),
                    response_mode: ResponseMode::File,
                },
                ErrorRule {
                    status: 404,
                    substatus: 3,
                    path: "/three".into(),
                    response_mode: ResponseMode::File,
                },
            ],
            ..HttpErrorsConfig::default()
        };
        assert_eq!(config.rule_for(404, 3).unwrap().path, "/three");
        assert_eq!(config.rule_for(404, 0).unwrap().path, "/any");
        assert!(config.rule_for(500, 0).is_none());
    }

    #[test]
    fn files_stay_under_the_root() {
        let root = Path::new("/srv/site");
        assert_eq!(
            file_under_root(root, "/errors/404.html"),
            Some(PathBuf::from("/srv/site/errors/404.html"))
        );
        assert_eq!(file_under_root(root, "/../etc/passwd"), None);
    }

    #[test]
    fn loopback_includes_mapped_addresses() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("::1".parse().unwrap()));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.1".parse().unwrap()));
    }
}
