//! What the modules that hand a request to an application (Cgi, FastCgi)
//! share: the RFC 3875 request meta-variables, the parsing of the header
//! block the application answers with, and the logging of its error
//! output.

use crate::spooled_body::BodySpool;
use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
use riis_pipeline::http::StatusCode;
use riis_pipeline::HttpContext;

/// The most header lines and bytes an application's header block may have
/// (lines: an application's own headers past a hundred are no attack;
/// bytes bound what is held, as nginx's buffer does).
pub(crate) const MAX_HEADER_LINES: usize = 1000;
/// See [`MAX_HEADER_LINES`].
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Error output lines logged per request.
const ERROR_LINES: usize = 100;

/// Gives the request's meta-variables (RFC 3875 §4.1) to `emit`, name and
/// raw value, for `script` (the physical path of the program or script)
/// under `document_root`, with a body of `body_len` bytes. `Authorization` is passed only with
/// `pass_authorization`.
pub(crate) fn meta_variables(
    ctx: &HttpContext,
    script: &std::path::Path,
    document_root: &std::path::Path,
    body_len: u64,
    pass_authorization: bool,
    mut emit: impl FnMut(&str, &[u8]),
) {
    let req = ctx.request();
    // The variables RFC 3875 shares with IIS's server variables come from
    // them (`SERVER_NAME`: the routed host without its port).
    for name in [
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REQUEST_METHOD",
        "QUERY_STRING",
        "REMOTE_PORT",
        // Host and port as routed: HTTP/2's `:authority`, or an
        // absolute-form target's host over a `Host` header that differs.
        "HTTP_HOST",
    ] {
        if let Some(value) = ctx.server_variable(name) {
            emit(name, value.as_bytes());
        }
    }
    // Only when on, as Apache and nginx pass it: applications test
    // `!empty($_SERVER['HTTPS'])`, which IIS's `off` would pass.
    if ctx.server_variable("HTTPS").as_deref() == Some("on") {
        emit("HTTPS", b"on");
    }
    // The client's certificate, under IIS's names, as IIS's FastCGI passes
    // its server variables (only when there is one).
    if let Some(cert) = ctx.client_certificate() {
        emit("CERT_FLAGS", b"1");
        emit("CERT_SUBJECT", cert.subject.as_bytes());
        emit("CERT_ISSUER", cert.issuer.as_bytes());
        emit("CERT_SERIALNUMBER", cert.serial_number.as_bytes());
        emit("CERT_COOKIE", cert.fingerprint_sha256.as_bytes());
    }
    // The URL the client asked for, also when UrlRewrite changed it.
    let asked = ctx.server_variable("REQUEST_URI");
    emit(
        "REQUEST_URI",
        asked.as_deref().unwrap_or(req.raw_url()).as_bytes(),
    );
    emit("SCRIPT_NAME", ctx.script_name().as_bytes());
    // As IIS's URL Rewrite and ARR say it: the URL the client asked for,
    // when a rule changed it (never a client's own header of that name).
    if req.client_url() != req.raw_url() {
        emit("HTTP_X_ORIGINAL_URL", req.client_url().as_bytes());
    }
    emit("SCRIPT_FILENAME", script.as_os_str().as_encoded_bytes());
    emit(
        "DOCUMENT_ROOT",
        document_root.as_os_str().as_encoded_bytes(),
    );
    // IIS's PATH_INFO is the whole URL; CGI's is what follows the script
    // (a handler with `allow_path_info`), and PATH_TRANSLATED that part
    // under the document root, as nginx's usual
    // `$document_root$fastcgi_path_info` (RFC 3875 §4.1.6: only with one).
    let path_info = ctx.path_info();
    emit("PATH_INFO", path_info.as_bytes());
    if !path_info.is_empty() {
        let mut translated = document_root.as_os_str().as_encoded_bytes().to_vec();
        if translated.last() == Some(&b'/') {
            translated.pop();
        }
        translated.extend_from_slice(path_info.as_bytes());
        emit("PATH_TRANSLATED", &translated);
    }
    let mut address = Vec::with_capacity(16);
    crate::put_address(&mut address, req.remote_address().ip());
    emit("REMOTE_ADDR", &address);
    // php-cgi (`cgi.force_redirect`) refuses to run without it.
    emit("REDIRECT_STATUS", b"200");
    if let Some(user) = ctx.user().filter(|u| !u.name().is_empty()) {
        emit("AUTH_TYPE", user.authentication_type().as_bytes());
        emit("REMOTE_USER", user.name().as_bytes());
    }
    if body_len > 0 || req.header(header::CONTENT_LENGTH).is_some() {
        emit(
            "CONTENT_LENGTH",
            itoa::Buffer::new().format(body_len).as_bytes(),
        );
    }
    // Each header as HTTP_NAME (`keys` gives each name once); several
    // values of one name joined, raw bytes kept.
    let mut variable = String::with_capacity(64);
    let mut joined: Vec<u8> = Vec::new();
    for name in req.headers().keys() {
        // A name with `_`, `.` or another sign would pass for the `-` one
        // (`X_Forwarded_For` as HTTP_X_FORWARDED_FOR): dropped, as nginx
        // and Apache do. `Proxy` as HTTP_PROXY would set the
        // application's outbound proxy ("httpoxy"). `X-Original-URL` and
        // `X-Rewrite-URL` are the server's to say (applications written for
        // IIS route on them): a client's would send the application to a
        // route riis never judged. `Transfer-Encoding` described the
        // client's framing, which riis took off: the program gets the body
        // whole with CONTENT_LENGTH, and a WSGI server told the body is
        // chunked would read none of it (Werkzeug does). `Proxy-Authorization`
        // carries a password as `Authorization` does, and goes with it
        // (Apache's `CGIPassAuth` treats the two alike).
        if *name == header::CONTENT_LENGTH
            || *name == header::TRANSFER_ENCODING
            || *name == header::HOST
            || name.as_str() == "proxy"
            || name.as_str() == "x-original-url"
            || name.as_str() == "x-rewrite-url"
            || !crate::is_plain_header_name(name.as_str())
            || ((*name == header::AUTHORIZATION || *name == header::PROXY_AUTHORIZATION)
                && !pass_authorization)
        {
            continue;
        }
        variable.clear();
        if *name == header::CONTENT_TYPE {
            variable.push_str("CONTENT_TYPE");
        } else {
            variable.push_str("HTTP_");
            variable.extend(name.as_str().chars().map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            }));
        }
        let mut values = req.headers().get_all(name).iter();
        let first = values.next().map_or(&b""[..], |v| v.as_bytes());
        let Some(second) = values.next() else {
            emit(&variable, first);
            continue;
        };
        // Cookies join with `; ` (RFC 9113 §8.2.3), others with `, `.
        let separator: &[u8] = if *name == header::COOKIE {
            b"; "
        } else {
            b", "
        };
        joined.clear();
        joined.extend_from_slice(first);
        for v in std::iter::once(second).chain(values) {
            joined.extend_from_slice(separator);
            joined.extend_from_slice(v.as_bytes());
        }
        emit(&variable, &joined);
    }
}

/// Why the request body cannot go to the application.
pub(crate) enum BodyError {
    /// Longer than the module's `max_request_body` (413; the connection
    /// closes, the rest is not read).
    TooLarge,
    /// An empty read before the end: the client went away, or a ReadEntity
    /// module ended the body (400).
    EndedEarly,
    /// The client sent the body too slowly: the server's body timeouts
    /// ended the read (408).
    TooSlow,
    /// The temporary file a large body goes to could not be made or written
    /// (500, with the reason), or the bodies in temporary files take their
    /// budget (503).
    Spool(std::io::Error),
}

impl BodyError {
    /// The status and the reason for the log and the detailed error page.
    pub(crate) fn status_and_reason(&self) -> (StatusCode, String) {
        match self {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is longer than max_request_body".to_owned(),
            ),
            BodyError::EndedEarly => (
                StatusCode::BAD_REQUEST,
                "the request body ended early".to_owned(),
            ),
            BodyError::TooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                "the client sent the request body too slowly".to_owned(),
            ),
            BodyError::Spool(e) if e.kind() == std::io::ErrorKind::StorageFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request body could not be kept in a temporary file: {e}"),
            ),
            BodyError::Spool(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request body could not be kept in a temporary file: {e}"),
            ),
        }
    }
}

/// Adds what the last body read brought to `body`, at most `limit` bytes
/// in all. `completion` is the read's: one that failed (the client's
/// connection broke off mid-body, `E_CONNECTION_ABORTED`) ends the body
/// early, whatever it brought, so a cut-short body is never passed on as
/// whole.
pub(crate) fn take_body_piece(
    ctx: &mut HttpContext,
    body: &mut BodySpool,
    limit: u64,
    completion: &riis_pipeline::CompletionInfo,
) -> Result<(), BodyError> {
    if completion.status != 0 {
        close_after_answer(ctx);
        return Err(read_failure(completion));
    }
    let data = ctx.request_mut().take_read_data();
    if body.len() + data.len() as u64 > limit {
        close_after_answer(ctx);
        return Err(BodyError::TooLarge);
    }
    if let Err(e) = body.push(&data) {
        close_after_answer(ctx);
        return Err(BodyError::Spool(e));
    }
    if data.is_empty() && !ctx.request().is_body_complete() {
        return Err(BodyError::EndedEarly);
    }
    Ok(())
}

/// Ends a request to an application or server (`who` names the module in
/// the log and on the detailed error page) with an error; once part of the
/// response went out, resets the connection instead, so the client sees
/// the response cut short.
pub(crate) fn fail(
    ctx: &mut HttpContext,
    who: &str,
    status: StatusCode,
    why: &str,
) -> riis_pipeline::RequestNotificationStatus {
    fail_with_substatus(ctx, who, status, 0, why)
}

/// The error code a gateway's failure carries (an access log's
/// `sc-win32-status`): for a 504, always a server or application that went
/// quiet, ARR's WinHTTP `ERROR_WINHTTP_TIMEOUT` (12002) as an HRESULT;
/// E_FAIL otherwise (one status has several causes, a 400 or a 502).
fn failure_code(status: StatusCode) -> u32 {
    match status {
        StatusCode::GATEWAY_TIMEOUT => 0x8007_0000 | 12002,
        _ => riis_pipeline::ModuleError::E_FAIL,
    }
}

/// `HRESULT_FROM_WIN32(ERROR_NETNAME_DELETED)`: the code of a request
/// whose client left, as the access log writes it for a response that did
/// not go whole.
const ERROR_NETNAME_DELETED: u32 = 0x8007_0000 | 64;

/// Gateway failures' log lines (see [`fail_with_substatus`]).
static FAILURE_LOG: crate::LogGate = crate::LogGate::new();

/// [`fail`] with IIS's substatus (Cgi's 502.1 and 502.2).
pub(crate) fn fail_with_substatus(
    ctx: &mut HttpContext,
    who: &str,
    status: StatusCode,
    substatus: u16,
    why: &str,
) -> riis_pipeline::RequestNotificationStatus {
    // A client that left (mid-upload, say) is its own doing, not the
    // backend's: noted at debug level, and logged with the code of a
    // connection that went away (as IIS logs a dropped connection).
    let client_left = !ctx.is_client_connected();
    if client_left {
        tracing::debug!(
            url = %crate::log_excerpt(ctx.request().raw_url()),
            "{who}: {why} (the client left)"
        );
    } else if let Some(held_back) = FAILURE_LOG.pass() {
        // At most a line a second, with how many were held back: a
        // backend that is down (or an application stopped) would
        // otherwise write a line for every request, as fast as clients
        // can ask.
        tracing::warn!(
            url = %crate::log_excerpt(ctx.request().raw_url()),
            held_back,
            "{who}: {why}"
        );
    }
    if ctx.response().headers_sent() {
        ctx.response_mut().reset_connection();
        return riis_pipeline::RequestNotificationStatus::FinishRequest;
    }
    // An answer's head, if it came, goes with its entity.
    ctx.response_mut().clear();
    let code = if client_left {
        ERROR_NETNAME_DELETED
    } else {
        failure_code(status)
    };
    let finished = crate::end_with_error(ctx, status, substatus, code);
    ctx.response_mut()
        .set_error_description(format!("{who}: {why}"));
    finished
}

/// 413: the body is longer than `limit`, the module's `key`; the
/// connection closes (the rest of the body is not read).
/// Why a body read failed: too slow (the server's body timeouts), or
/// anything else that ended it early.
pub(crate) fn read_failure(completion: &riis_pipeline::CompletionInfo) -> BodyError {
    if completion.status == riis_pipeline::E_TIMEOUT {
        BodyError::TooSlow
    } else {
        BodyError::EndedEarly
    }
}

/// The request's body is left partly unread: on HTTP/1.x its connection
/// closes after the answer. Not on HTTP/2, where an unread body ends only
/// its own stream: closing would end every other stream of the
/// connection too (a GOAWAY instead of the answer).
pub(crate) fn close_after_answer(ctx: &mut HttpContext) {
    if ctx.request().http_version() != riis_pipeline::http::Version::HTTP_2 {
        ctx.response_mut().set_need_disconnect();
    }
}

pub(crate) fn too_large(
    ctx: &mut HttpContext,
    who: &str,
    key: &str,
    limit: u64,
) -> riis_pipeline::RequestNotificationStatus {
    close_after_answer(ctx);
    fail(
        ctx,
        who,
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is longer than {key} ({limit} bytes)"),
    )
}

/// Whether the request declares a body longer than `limit`
/// (`Content-Length`): refused before any of it is read.
pub(crate) fn declared_over(ctx: &HttpContext, limit: u64) -> bool {
    ctx.request()
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

/// An application's response head, parsed.
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) reason: Option<String>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// The application's `Content-Length`: riis frames the body itself,
    /// but a response to HEAD has none to count, and keeps this one.
    pub(crate) content_length: Option<HeaderValue>,
    /// `content_length` is exactly the body that follows (ReverseProxy's
    /// hyper client reads that many bytes or fails): a response that
    /// streams keeps it, so clients see the size of a large download.
    /// Not an application's own header (FastCgi), which may be wrong.
    pub(crate) length_is_exact: bool,
    /// The head was a CGI local redirect (RFC 3875 §6.2.2): a `Location`
    /// that is a path (and query), with no `Status` and no other header
    /// line. The server answers that path instead; see Cgi.
    pub(crate) local_redirect: Option<String>,
}

impl ResponseHead {
    /// Puts the head on the response: what was there (status, headers,
    /// entity) is replaced.
    pub(crate) fn apply(self, ctx: &mut HttpContext) {
        let resp = ctx.response_mut();
        resp.clear();
        let reason = self
            .reason
            .unwrap_or_else(|| self.status.canonical_reason().unwrap_or("").to_owned());
        resp.set_status(self.status, reason);
        for (name, value) in self.headers {
            if is_for_the_server(&name) {
                continue;
            }
            resp.append_header(name, value);
        }
        if let Some(length) = self.content_length {
            if ctx.request().method() == riis_pipeline::http::Method::HEAD {
                ctx.response_mut()
                    .set_header(header::CONTENT_LENGTH, length);
            }
        }
    }
}

/// Whether an application's response header asks the server in front of
/// it to send a file in the answer's place, and is not passed on (it may
/// name a path on the server). `X-Accel-Redirect` comes here only when the
/// module's `x_accel_redirect` is off (see `internal_redirect`), and goes
/// quietly. The `X-Sendfile` of Apache and lighttpd names a file by its
/// path, which riis does not send: the first of each second is logged, so
/// an application that relies on it is found out. nginx's other
/// `X-Accel-*` headers pass (a server in front of riis may act on them).
fn is_for_the_server(name: &HeaderName) -> bool {
    static GATE: crate::LogGate = crate::LogGate::new();
    let name = name.as_str();
    if name == crate::internal_redirect::X_ACCEL_REDIRECT {
        return true;
    }
    if !matches!(name, "x-sendfile" | "x-lighttpd-send-file") {
        return false;
    }
    if let Some(held_back) = GATE.pass() {
        tracing::warn!(
            header = name,
            held_back,
            "an application asked the server to send a file by its path, which riis does not do (it follows X-Accel-Redirect, which names a URL); the header is dropped and its answer goes as it is"
        );
    }
    true
}

/// The longest reason phrase taken from a `Status` line; a longer one
/// gives way to the status's own (a 60 KB status line is no answer).
const MAX_REASON: usize = 256;

/// Parses the header block at the start of `output` (RFC 3875 §6): lines
/// ending with LF or CRLF, up to an empty line. `Ok(None)` while the block
/// is incomplete; otherwise the head and how many bytes it took.
pub(crate) fn parse_head(output: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut status = None;
    let mut reason = None;
    let mut headers = Vec::new();
    let mut location = false;
    let mut content_type = false;
    let mut accel_redirect = false;
    let mut content_length = None;
    // Content-Length values that differ make none (RFC 9110 §8.6).
    let mut lengths_differ = false;
    // The names the application's `Connection` lists are hop-by-hop too.
    let mut connection_names: Vec<HeaderValue> = Vec::new();
    let mut lines = 0;
    let mut at = 0;
    loop {
        if lines > MAX_HEADER_LINES || at > MAX_HEADER_BYTES {
            return Err(format!(
                "the header block is longer than {MAX_HEADER_LINES} lines or {MAX_HEADER_BYTES} bytes"
            ));
        }
        let Some(end) = output[at..].iter().position(|&b| b == b'\n') else {
            if output.len() - at > MAX_HEADER_BYTES {
                return Err(format!(
                    "the header block is longer than {MAX_HEADER_LINES} lines or {MAX_HEADER_BYTES} bytes"
                ));
            }
            return Ok(None);
        };
        let line = &output[at..at + end];
        at += end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines += 1;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "`{}` is not a header line",
                String::from_utf8_lossy(line).escape_debug()
            ));
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"status") {
            let text = std::str::from_utf8(value).map_err(|_| "the Status line is not text")?;
            let (code, phrase) = text.split_once(' ').unwrap_or((text, ""));
            let code = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| (200..=599).contains(&c.as_u16()))
                .ok_or_else(|| format!("`Status: {text}` has no valid status code"))?;
            status = Some(code);
            let phrase = phrase.trim();
            reason = (!phrase.is_empty() && phrase.len() <= MAX_REASON).then(|| phrase.to_owned());
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| {
            format!(
                "`{}` is not a header name",
                String::from_utf8_lossy(name).escape_debug()
            )
        })?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("the value of {name} is not a valid header value"))?;
        location |= name == header::LOCATION;
        content_type |= name == header::CONTENT_TYPE;
        accel_redirect |= name == crate::internal_redirect::X_ACCEL_REDIRECT;
        if name == header::CONTENT_LENGTH {
            // A number a length can be: one past `u64` (a HEAD's
            // `99999999999999999999999`) would go out to a client as is.
            // Written as a number is (`005` goes out as `5`, to HEAD as to
            // GET).
            let this = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .map(HeaderValue::from);
            lengths_differ |= content_length.is_some() && content_length != this;
            content_length = this;
        }
        if name == header::CONNECTION {
            connection_names.push(value.clone());
        }
        // What the HTTP layer writes itself (framing, the connection, the
        // date; an application's trailers are not sent): dropped.
        if !crate::protocol_support::HTTP_LAYER_HEADERS.contains(&name.as_str()) {
            headers.push((name, value));
        }
    }
    if lengths_differ {
        content_length = None;
    }
    if !connection_names.is_empty() {
        let listed = |name: &HeaderName| {
            connection_names.iter().any(|v| {
                v.as_bytes().split(|&b| b == b',').any(|token| {
                    token
                        .trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
            })
        };
        headers.retain(|(name, _)| !listed(name));
    }
    // An answer that only names a URL for the server (nginx serves it).
    if !location && !content_type && status.is_none() && !accel_redirect {
        return Err(
            "the output has none of Content-Type, Location, Status and X-Accel-Redirect".into(),
        );
    }
    let local_redirect = match headers.as_slice() {
        [(name, value)] if status.is_none() && *name == header::LOCATION => value
            .to_str()
            .ok()
            .filter(|v| v.starts_with('/') && !v.starts_with("//"))
            .map(str::to_owned),
        _ => None,
    };
    // A `Location` without a status redirects (RFC 3875 §6.2.3/§6.2.4).
    let status = status.unwrap_or(if location {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(Some((
        ResponseHead {
            status,
            reason,
            headers,
            content_length,
            length_is_exact: false,
            local_redirect,
        },
        at,
    )))
}

/// An application's error output (standard error, FastCGI's `FCGI_STDERR`),
/// logged as it comes: at most 100 lines of at most 1 KiB each, the rest
/// dropped, so a chatty application cannot flood the server's log.
pub(crate) struct ErrorLog<'a> {
    source: &'static str,
    program: &'a str,
    line: Vec<u8>,
    logged: usize,
}

impl<'a> ErrorLog<'a> {
    /// A log for `program`, its lines prefixed with `source` (`CGI`).
    pub(crate) fn new(source: &'static str, program: &'a str) -> Self {
        Self {
            source,
            program,
            line: Vec::new(),
            logged: 0,
        }
    }

    /// Takes more of the error output.
    pub(crate) fn take(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < 1024 {
                self.line.push(b);
            }
        }
    }

    fn emit(&mut self) {
        if self.logged < ERROR_LINES && !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            tracing::warn!(program = %self.program, "{}: {}", self.source, text.escape_debug());
            self.logged += 1;
        }
        self.line.clear();
    }
}

impl Drop for ErrorLog<'_> {
    /// Logs what is left of the last line, however the run ended.
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn failures_carry_the_win32_codes_iis_logs_for_them() {
        // What `sc-win32-status` shows: ARR's gateway timeout.
        assert_eq!(failure_code(StatusCode::GATEWAY_TIMEOUT) & 0xFFFF, 12002);
        assert_eq!(
            failure_code(StatusCode::BAD_REQUEST),
            riis_pipeline::ModuleError::E_FAIL
        );
        assert_eq!(
            failure_code(StatusCode::BAD_GATEWAY),
            riis_pipeline::ModuleError::E_FAIL
        );
    }

    use super::*;
    use riis_pipeline::bytes::Bytes;

    /// Splits an application's whole output into its head and body.
    fn parse_output(output: Vec<u8>) -> Result<(ResponseHead, Bytes), String> {
        match parse_head(&output)? {
            Some((head, used)) => {
                let mut body = Bytes::from(output);
                Ok((head, body.split_off(used)))
            }
            None => Err("the output has no complete header block".into()),
        }
    }

    #[test]
    fn output_is_split_into_status_headers_and_body() {
        let (head, body) = parse_output(
            b"Content-Type: text/plain\r\nX-A: 1\nStatus: 404 Gone Away\n\nbody\n".to_vec(),
        )
        .unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.reason.as_deref(), Some("Gone Away"));
        assert_eq!(head.headers.len(), 2);
        assert_eq!(&body[..], b"body\n");
        let (redirect, _) = parse_output(b"Location: /elsewhere\n\n".to_vec()).unwrap();
        assert_eq!(redirect.status, StatusCode::FOUND);
        // A path alone is a local redirect; with a status, another header,
        // a URL or a scheme-relative `//host` it is the client's.
        assert_eq!(redirect.local_redirect.as_deref(), Some("/elsewhere"));
        for output in [
            &b"Status: 302\nLocation: /elsewhere\n\n"[..],
            b"Location: /elsewhere\nContent-Type: text/html\n\n",
            b"Location: http://example.test/\n\n",
            b"Location: //example.test/\n\n",
        ] {
            let (head, _) = parse_output(output.to_vec()).unwrap();
            assert_eq!(
                head.local_redirect,
                None,
                "{}",
                String::from_utf8_lossy(output)
            );
        }
        // The HTTP layer's own headers are dropped.
        let (framed, _) = parse_output(
            b"Content-Type: text/plain\nContent-Length: 99\nTransfer-Encoding: chunked\n\nx"
                .to_vec(),
        )
        .unwrap();
        assert_eq!(framed.headers.len(), 1);
    }

    #[test]
    fn hop_by_hop_names_lengths_that_differ_and_long_reasons_are_dropped() {
        let (head, _) = parse_output(
            b"Status: 200 Fine\nContent-Type: text/plain\nConnection: close, X-Secret\n\
              X-Secret: 1\nProxy-Connection: x\nTrailer: X-T\nTE: trailers\nX-Kept: 1\n\
              Content-Length: 5\nContent-Length: 10\n\nhello"
                .to_vec(),
        )
        .unwrap();
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kept"]);
        assert_eq!(head.content_length, None);
        assert_eq!(head.reason.as_deref(), Some("Fine"));
        // The same length twice is one length.
        let (head, _) = parse_output(
            b"Content-Type: text/plain\nContent-Length: 5\nContent-Length: 5\n\nhello".to_vec(),
        )
        .unwrap();
        assert_eq!(
            head.content_length.as_ref().map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let long = format!(
            "Status: 200 {}\nContent-Type: text/plain\n\n",
            "A".repeat(300)
        );
        let (head, _) = parse_output(long.into_bytes()).unwrap();
        assert_eq!(head.reason, None);
    }

    #[test]
    fn a_head_in_pieces_is_incomplete_until_its_empty_line() {
        let whole = b"Content-Type: text/plain\r\n\r\nbody";
        for cut in 0..whole.len() - 4 {
            assert!(parse_head(&whole[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (_, used) = parse_head(whole).unwrap().unwrap();
        assert_eq!(&whole[used..], b"body");
        // An endless first line is refused rather than waited for.
        assert!(parse_head(&vec![b'a'; MAX_HEADER_BYTES + 1]).is_err());
    }

    #[test]
    fn bad_output_says_what_is_wrong() {
        let err = |o: &[u8]| parse_output(o.to_vec()).err().unwrap();
        assert!(err(b"Content-Type: text/plain").contains("no complete header block"));
        assert!(err(b"hello world\n\n").contains("not a header line"));
        assert!(err(b"X-A: 1\n\n").contains("none of Content-Type"));
        assert!(err(b"Status: abc\n\n").contains("no valid status code"));
        assert!(err(b"Status: 100 Continue\n\n").contains("no valid status code"));
        assert!(err(b"Bad Name: x\n\n").contains("not a header name"));
        assert!(err(b"Status: 999 Odd\n\n").contains("no valid status code"));
        let many: Vec<u8> = (0..1200)
            .flat_map(|i| format!("X-H{i}: 1\n").into_bytes())
            .collect();
        assert!(err(&many).contains("longer than 1000 lines"));
    }
}
