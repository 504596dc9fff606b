//! nginx's `X-Accel-Redirect`, for the modules that relay an application's
//! answer (FastCgi, ReverseProxy, Cgi). An application decides whether the
//! client may have a file, then names it in this header; riis sends the
//! file (ranges, validators, caching, compression), and the application
//! does not have to read it. Files kept in a location marked
//! `request_filtering.internal` are only reachable this way.
//!
//! An answer carrying the header is not passed on: its exchange is stopped,
//! and the request is answered by the URL the header names, run as a child
//! request through the whole pipeline. So the location that URL lies in
//! decides how it is answered (its handlers, authorization, `internal`),
//! and the client's user and request headers (`Range`, `If-None-Match`)
//! go with it. As nginx does:
//! - the value is a path with an optional query, percent-encoded as a
//!   request's URL is (nginx expects escaped URIs since 1.5.9);
//! - the child request is a GET (a HEAD stays a HEAD) and has no body;
//! - of the application's answer only the headers that describe the
//!   content stay: `Content-Type`, `Content-Disposition`, `Set-Cookie`,
//!   `Cache-Control`, `Expires` and `Accept-Ranges`. Its status and body are
//!   dropped. StaticFile answers with the application's `Content-Type`,
//!   whatever the file's extension (see
//!   [`crate::static_file::CONTENT_TYPE_VARIABLE`]);
//! - redirects that lead to each other end at the child request depth
//!   (10) with 500, as nginx ends an internal redirection cycle.
//!
//! riis has no named locations: a value that is not a path (nginx's
//! `@name`) is the application's error, a 502.

use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{ExecuteFlags, HttpContext, ModuleError, RequestNotificationStatus};

use crate::gateway::ResponseHead;

/// The header an application names the URL in.
const X_ACCEL_REDIRECT: &str = "x-accel-redirect";

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

/// What an answer's `X-Accel-Redirect` asks for.
#[derive(Debug)]
pub(crate) struct InternalRedirect {
    /// The URL (path and query) to answer with.
    target: HeaderValue,
    /// The application's headers that stay (see [`KEPT`]).
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

    /// Starts the child request that answers in the application's place:
    /// Pending, and the module's next OnAsyncCompletion is the child's end.
    /// Otherwise the request failed (`who` names the module in the log
    /// and on the error page), and the module returns what this returns.
    pub(crate) fn run(self, ctx: &mut HttpContext, who: &str) -> RequestNotificationStatus {
        match self.start(ctx, who) {
            Ok(()) => RequestNotificationStatus::Pending,
            Err(failed) => failed,
        }
    }

    fn start(self, ctx: &mut HttpContext, who: &str) -> Result<(), RequestNotificationStatus> {
        let shown = String::from_utf8_lossy(self.target.as_bytes()).into_owned();
        let target = match self.target.to_str() {
            Ok(t) if t.starts_with('/') && !t.starts_with("//") => t,
            _ => {
                return Err(crate::gateway::fail(
                    ctx,
                    who,
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "X-Accel-Redirect `{}` is not a URL path (riis has no named locations)",
                        crate::log_excerpt(&shown)
                    ),
                ))
            }
        };
        let mut child = match ctx.clone_context_with_url(target) {
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
                    &format!("X-Accel-Redirect: {}", e.message),
                ));
            }
        };
        let request = child.request_mut();
        if request.method() != Method::HEAD {
            request.set_method(Method::GET);
        }
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::TRANSFER_ENCODING,
            header::EXPECT,
        ] {
            request.delete_header(name);
        }
        if let Some((_, content_type)) = self.kept.iter().find(|(n, _)| n == header::CONTENT_TYPE) {
            if let Ok(content_type) = content_type.to_str() {
                child.set_server_variable(crate::static_file::CONTENT_TYPE_VARIABLE, content_type);
            }
        }
        // The response is shared with the child, which starts from these.
        let response = ctx.response_mut();
        response.clear();
        for (name, value) in self.kept {
            response.append_header(name, value);
        }
        ctx.execute_request(child, ExecuteFlags::default())
            .map_err(|e| {
                crate::gateway::fail(
                    ctx,
                    who,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "the X-Accel-Redirect to {} cannot run: {}",
                        crate::log_excerpt(target),
                        e.message
                    ),
                )
            })
    }
}
