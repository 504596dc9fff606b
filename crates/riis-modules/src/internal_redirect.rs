//! nginx's `X-Accel-Redirect`, for the modules that relay an application's
//! answer (FastCgi, ReverseProxy, Cgi). An application decides whether the
//! client may have a file, then names it in this header; riis sends the
//! file (ranges, validators, compression), and the application does not
//! have to read it. Files kept in a location marked
//! `request_filtering.internal` are only reachable this way.
//!
//! An answer carrying the header is not passed on: its exchange is stopped,
//! and the request is answered by the URL the header names, run as a child
//! request through the whole pipeline, its answer buffered into this
//! request's (a file is held as a range, not read), so the modules of the
//! client's request (compression, outbound rules, custom error pages)
//! treat it as they treat any answer. The location that URL lies in
//! decides how it is answered (its handlers, authorization, `internal`),
//! and the client's user and request headers (`Range`, `If-None-Match`)
//! go with it. As nginx does:
//! - the value is a path with an optional query, percent-encoded as a
//!   request's URL is (nginx expects escaped URIs since 1.5.9); a space or
//!   a byte that is not ASCII is escaped here, as nginx takes such values
//!   as they are;
//! - the child request is a GET (a HEAD stays a HEAD) and has no body;
//! - of the application's answer only the headers that describe the
//!   content stay: `Content-Type`, `Content-Disposition`, `Set-Cookie`,
//!   `Cache-Control`, `Expires` and `Accept-Ranges`. Its status and body are
//!   dropped. StaticFile answers with the application's `Content-Type`
//!   (see [`crate::static_file::CONTENT_TYPE_VARIABLE`]); an answer from
//!   another application or server gets the kept headers put over its own;
//! - redirects that lead to each other end at the child request depth
//!   (10) with 500, as nginx ends an internal redirection cycle.
//!
//! Unlike nginx, the kept headers go only on an answer that succeeded
//! (2xx; a 304 gets the caching ones), and `Set-Cookie` on any: an error
//! page for a missing file must not be saved as the download.
//!
//! riis has no named locations: a value that is not a path (nginx's
//! `@name`) is the application's error, a 502.

use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{ExecuteFlags, HttpContext, ModuleError, RequestNotificationStatus};

use crate::gateway::ResponseHead;

/// The header an application names the URL in.
pub(crate) const X_ACCEL_REDIRECT: &str = "x-accel-redirect";

/// The application's headers that stay on the answer to the URL it named
/// (the ones nginx keeps).
const KEPT: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_DISPOSITION,
    header::SET_COOKIE,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::ACCEPT_RANGES,
];

/// The child request's server variable holding the kept headers, one
/// `name: value` line each, for a gateway that answers it (see
/// [`put_kept_from_parent`]).
const KEPT_VARIABLE: &str = "X_ACCEL_KEPT_HEADERS";

/// What an answer's `X-Accel-Redirect` asks for.
#[derive(Debug)]
pub(crate) struct InternalRedirect {
    /// The URL (path and query) to answer with.
    target: HeaderValue,
    /// The application's headers that stay (see [`KEPT`]).
    kept: Vec<(HeaderName, HeaderValue)>,
}

/// A redirect whose child request runs: what its end needs.
#[derive(Debug)]
pub(crate) struct Redirected {
    kept: Vec<(HeaderName, HeaderValue)>,
}

impl InternalRedirect {
    /// The redirect `head` asks for, if it carries `X-Accel-Redirect`.
    pub(crate) fn of_head(head: &ResponseHead) -> Option<Self> {
        let target = head
            .headers
            .iter()
            .find(|(name, _)| name == X_ACCEL_REDIRECT)?
            .1
            .clone();
        let kept = head
            .headers
            .iter()
            .filter(|(name, _)| KEPT.contains(name))
            .cloned()
            .collect();
        Some(Self { target, kept })
    }

    /// Starts the child request that answers in the application's place;
    /// the module returns Pending, and its next OnAsyncCompletion is the
    /// child's end ([`Redirected::finish`]). `Err`: the request failed
    /// (`who` names the module in the log and on the error page), and the
    /// module returns what it holds.
    pub(crate) fn run(
        self,
        ctx: &mut HttpContext,
        who: &str,
    ) -> Result<Redirected, RequestNotificationStatus> {
        let shown = String::from_utf8_lossy(self.target.as_bytes()).into_owned();
        let shown = crate::log_excerpt(&shown);
        let target = escaped(self.target.as_bytes());
        if !target.starts_with('/') || target.starts_with("//") {
            return Err(crate::gateway::fail(
                ctx,
                who,
                StatusCode::BAD_GATEWAY,
                &format!(
                    "X-Accel-Redirect `{shown}` is not a URL path (riis has no named locations)"
                ),
            ));
        }
        if target == ctx.request().raw_url() {
            return Err(crate::gateway::fail(
                ctx,
                who,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("X-Accel-Redirect `{shown}` names the URL that answered it"),
            ));
        }
        let mut child = match ctx.clone_context_with_url(&target) {
            Ok(child) => child,
            Err(e) => {
                // A URL the application got wrong is its error (502); too
                // deep a nesting is a cycle of redirects (nginx's 500).
                let status = if e.hresult == ModuleError::E_INVALIDARG {
                    StatusCode::BAD_GATEWAY
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                return Err(crate::gateway::fail(
                    ctx,
                    who,
                    status,
                    &format!("X-Accel-Redirect `{shown}`: {}", e.message),
                ));
            }
        };
        let request = child.request_mut();
        if request.method() != Method::HEAD {
            request.set_method(Method::GET);
        }
        // No body, and no switch of protocols: the client's connection
        // stays the parent's.
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::TRANSFER_ENCODING,
            header::EXPECT,
            header::UPGRADE,
            header::CONNECTION,
        ] {
            request.delete_header(name);
        }
        if let Some((_, content_type)) = self.kept.iter().find(|(n, _)| n == header::CONTENT_TYPE) {
            if let Ok(content_type) = content_type.to_str() {
                child.set_server_variable(crate::static_file::CONTENT_TYPE_VARIABLE, content_type);
            }
        }
        let lines: String = self
            .kept
            .iter()
            .filter_map(|(n, v)| Some(format!("{n}: {}\n", v.to_str().ok()?)))
            .collect();
        if !lines.is_empty() {
            child.set_server_variable(KEPT_VARIABLE, lines);
        }
        ctx.response_mut().clear();
        let flags = ExecuteFlags {
            buffer_response: true,
            stream_past_buffer_limit: true,
            ..ExecuteFlags::default()
        };
        match ctx.execute_request(child, flags) {
            Ok(()) => Ok(Redirected { kept: self.kept }),
            Err(e) => Err(crate::gateway::fail(
                ctx,
                who,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "the X-Accel-Redirect to `{shown}` cannot run: {}",
                    e.message
                ),
            )),
        }
    }
}

impl Redirected {
    /// The child request ended: its answer is this request's, with the
    /// application's kept headers on it (unless it went out already, past
    /// the response buffer: then a gateway that answered it put them).
    pub(crate) fn finish(self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        ctx.set_request_handled();
        // No cache keeps this answer: the application decided this client
        // may have the file, for reasons not in the answer (nginx never
        // caches an `X-Accel-Redirect` answer either), and the engine
        // disables the user cache of every request that ran a child.
        if !ctx.response().headers_sent() {
            put_kept(ctx, &self.kept);
        }
        RequestNotificationStatus::Continue
    }
}

/// Passes on to `child`, a request that `ctx` runs in its place (a
/// folder's default document, a CGI program's local redirect), what an
/// `X-Accel-Redirect` left `ctx` for the request that answers it: the kept
/// headers and the application's `Content-Type`. Without them a folder
/// named by `X-Accel-Redirect` answered without the application's
/// `Set-Cookie` and `Cache-Control` once its document streamed.
pub(crate) fn pass_on(ctx: &HttpContext, child: &mut HttpContext) {
    if ctx.child_depth() == 0 {
        return;
    }
    for name in [KEPT_VARIABLE, crate::static_file::CONTENT_TYPE_VARIABLE] {
        if let Some(value) = ctx.server_variable(name) {
            child.set_server_variable(name, value.into_owned());
        }
    }
}

/// For a gateway answering a child request: puts the kept headers of the
/// `X-Accel-Redirect` that started it on its answer's head, which replaced
/// the response (a large answer may go out before the parent sees it).
pub(crate) fn put_kept_from_parent(ctx: &mut HttpContext) {
    if ctx.child_depth() == 0 {
        return;
    }
    let Some(lines) = ctx.server_variable(KEPT_VARIABLE) else {
        return;
    };
    let kept: Vec<(HeaderName, HeaderValue)> = lines
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.parse().ok()?, value.parse().ok()?))
        })
        .collect();
    put_kept(ctx, &kept);
}

/// Puts the kept headers on the response as its status allows: all on a
/// success, the caching ones on a 304, `Set-Cookie` on any. Idempotent: a
/// header already there with the value is left as it is.
fn put_kept(ctx: &mut HttpContext, kept: &[(HeaderName, HeaderValue)]) {
    let response = ctx.response_mut();
    let status = response.status();
    let multipart = response.header(header::CONTENT_TYPE).is_some_and(|t| {
        t.as_bytes()
            .get(..20)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/byteranges"))
    });
    for (name, value) in kept {
        let wanted = if *name == header::SET_COOKIE {
            true
        } else if status == StatusCode::NOT_MODIFIED {
            *name == header::CACHE_CONTROL || *name == header::EXPIRES
        } else {
            // A multi-range answer's type is its parts' envelope.
            status.is_success() && !(*name == header::CONTENT_TYPE && multipart)
        };
        if !wanted
            || response
                .headers()
                .get_all(name)
                .iter()
                .any(|there| there == value)
        {
            continue;
        }
        if *name == header::SET_COOKIE {
            response.append_header(name.clone(), value.clone());
        } else {
            response.set_header(name.clone(), value.clone());
        }
    }
}

/// The value as a URL: a space, a control or a byte that is not ASCII is
/// percent-escaped (nginx takes such values as they are); escapes already
/// there stay as they are.
fn escaped(value: &[u8]) -> String {
    let mut url = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_graphic() {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn values_are_escaped_as_urls() {
        assert_eq!(escaped(b"/p/a b.txt"), "/p/a%20b.txt");
        assert_eq!(escaped("/p/é.txt".as_bytes()), "/p/%C3%A9.txt");
        assert_eq!(escaped(b"/p/a%20b.txt?x=1"), "/p/a%20b.txt?x=1");
        // A control becomes an escape the URL's decoding then refuses.
        assert_eq!(escaped(b"/p/a\x01"), "/p/a%01");
    }
}
