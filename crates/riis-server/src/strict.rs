//! HTTP/1.1 as strictly as RFC 9112 asks, where hyper is lenient, and the
//! request limits of `[limits]`.
//!
//! hyper already refuses malformed request lines, invalid bytes in header
//! names and values, obs-fold, invalid chunk sizes, differing duplicate
//! Content-Length values and Transfer-Encoding on HTTP/1.0, and answers
//! those itself with 400, 414 or 431; riis closes after them, and answers
//! what hyper gives up on without a word ([`parse_error_response`]).
//! What hyper lets through is checked on the parsed head ([`check_head`]):
//! a missing, duplicated or malformed Host, Content-Length together with
//! Transfer-Encoding (a request-smuggling shape, seen in the raw bytes since
//! hyper drops the Content-Length), a Transfer-Encoding other than one
//! `chunked`, and the configured URL and header limits. Every refusal closes the connection: after a framing error
//! the server cannot know where the next request starts.

use http::header::HOST;
use http::{Request, StatusCode, Version};

use crate::config::Limits;

/// Why a request is refused before the pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub status: StatusCode,
    /// What was wrong, for the log and the response body.
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }

    /// The `text/plain` body that explains it.
    pub fn body(&self) -> String {
        format!("{}\n", self.reason)
    }
}

/// Requests answered with an error before any pipeline saw them.
static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The second of the last refusal logged at `info`.
static REFUSAL_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Refusals since the last one logged at `info`.
static REFUSALS_HELD_BACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests refused before the pipeline since the server began: counted
/// in `riis status` and by Metrics as `requests_refused_total`.
pub fn requests_refused() -> u64 {
    REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Notes a request the server answered with an error before any module
/// saw it (a malformed or oversized head, an unknown host, a head that
/// did not arrive in time), which no access log line shows: counted, and
/// logged at `info` at most once a second with how many were held back,
/// as IIS writes these to HTTP.sys's error log and nginx to its access
/// log. A broken load balancer or a smuggling probe shows this way.
///
/// `asked` is what the request asked for, when its head was parsed: the
/// method, the target and the host, cut at 1 KiB (the log writes string
/// fields quoted and escaped, so a control character cannot forge a
/// line), as HTTP.sys's error log records them, so that a probe
/// (`/a/../../etc/passwd`) can be told from a broken client.
pub(crate) fn note_refusal(
    remote: std::net::SocketAddr,
    status: StatusCode,
    reason: &str,
    asked: Option<Asked<'_>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    REFUSED.fetch_add(1, Relaxed);
    let (method, target, host) = match &asked {
        Some(asked) => (
            logged(asked.method.as_str().to_owned()),
            logged(asked.target()),
            logged(asked.host()),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    if crate::server::first_this_second(&REFUSAL_LOGGED) {
        let held_back = REFUSALS_HELD_BACK.swap(0, Relaxed);
        tracing::info!(%remote, status = status.as_u16(), reason, method = &*method, target = &*target, host = &*host, held_back, "request refused before the pipeline");
    } else {
        REFUSALS_HELD_BACK.fetch_add(1, Relaxed);
        tracing::debug!(%remote, status = status.as_u16(), reason, method = &*method, target = &*target, host = &*host, "request refused before the pipeline");
    }
}

/// What a refused request asked for (see [`note_refusal`]).
pub(crate) struct Asked<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a http::Uri,
    pub(crate) host: Option<&'a http::HeaderValue>,
}

impl<'a> Asked<'a> {
    /// The method, target and `Host` of a parsed head.
    pub(crate) fn of(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> Self {
        Self {
            method,
            uri,
            host: headers.get(HOST),
        }
    }

    /// The target as the client wrote it: the whole URI when it names a
    /// scheme or an authority (an absolute form; HTTP/2's `:scheme` and
    /// `:authority`), else the path and query.
    fn target(&self) -> String {
        match self.uri.path_and_query() {
            // HTTP/2's asterisk form names an authority too.
            _ if self.uri.path() == "*" => "*".to_owned(),
            _ if self.uri.scheme().is_some() || self.uri.authority().is_some() => {
                self.uri.to_string()
            }
            Some(p) => p.as_str().to_owned(),
            None => self.uri.path().to_owned(),
        }
    }

    /// The `Host` header, or the target's authority without one; bytes
    /// that are not text shown as `\u{fffd}`.
    fn host(&self) -> String {
        match self.host {
            Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
            None => self
                .uri
                .authority()
                .map_or_else(String::new, |a| a.as_str().to_owned()),
        }
    }
}

/// The most of a client's value a refusal's log line holds.
const MOST_LOGGED: usize = 1024;

/// `value` as a refusal's log line holds it: cut at [`MOST_LOGGED`] bytes
/// (with `…`).
fn logged(mut value: String) -> String {
    if value.len() > MOST_LOGGED {
        let mut end = MOST_LOGGED;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

/// Checks a parsed request head against RFC 9112 and `limits`.
/// `framing_conflict`: the raw head had both Content-Length and
/// Transfer-Encoding, which the parsed head no longer shows (see
/// `framing.rs`).
pub fn check_head<B>(
    req: &Request<B>,
    limits: &Limits,
    framing_conflict: bool,
    has_body: bool,
) -> Result<(), Refusal> {
    let uri = req.uri();
    // An absolute-form target's authority is part of what HTTP/1.1 sent as
    // the target; HTTP/2's `:authority` is a field of its own (`Host`), as
    // an origin-form target's host is.
    let http2 = req.version() == Version::HTTP_2 || req.version() == Version::HTTP_3;
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + if http2 {
            0
        } else {
            uri.authority().map_or(0, |a| a.as_str().len())
        };
    if target_len > limits.max_url_length {
        return Err(Refusal::new(
            StatusCode::URI_TOO_LONG,
            "the request target is longer than limits.max_url_length",
        ));
    }
    let headers = req.headers();
    // An HTTP/2 client sends its cookies as crumbs, one field each, that
    // are one field (RFC 9113 §8.2.3): they count once, as the single
    // `Cookie` line of HTTP/1.1 does.
    let crumbs = if http2 {
        headers.get_all(http::header::COOKIE).iter().count()
    } else {
        0
    };
    if headers.len() - crumbs.saturating_sub(1) > limits.max_header_count {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "more header fields than limits.max_header_count",
        ));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the header fields are larger than limits.max_header_bytes",
        ));
    }
    // An absolute-form target (or HTTP/2's :scheme) names the scheme: a
    // URI of another (`ftp://host/…`) is no resource of this server
    // (RFC 9110 §4.2, §7.4).
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "a request target whose scheme is not http or https",
            ));
        }
    }
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error (a
            // way to show one host and name another, `http://good@evil/`).
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "userinfo in the request target's authority",
            ));
        }
        // The absolute form's (or :authority's) host overrides Host and
        // routes the request: it is held to what Host is (`a:x` is no
        // host and port; a proxy would have dropped the port).
        if !valid_host(authority.as_str().as_bytes()) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "the request target's authority is not a host[:port]",
            ));
        }
    }
    let mut hosts = headers.get_all(HOST).iter();
    let refusal = match (hosts.next(), hosts.next()) {
        // HTTP/2 names the host in :authority or Host; a request with
        // neither is malformed (RFC 9113 §8.3.1).
        (None, _) if http2 && uri.authority().is_none() => {
            Some("an HTTP/2 request without :authority or Host")
        }
        (None, _) if req.version() == Version::HTTP_11 => {
            Some("an HTTP/1.1 request without a Host header")
        }
        (Some(_), Some(_)) => Some("more than one Host header"),
        // Host is what modules read (`HTTP_HOST`, `{HTTP_HOST}`), over
        // every version. An empty one names no host: the target URI would
        // be an `http` URI with an empty host, which RFC 9110 §4.2.1 says
        // to reject (as nginx does).
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Some("the Host header is not a host[:port]")
        }
        // Over HTTP/2 one that differs from :authority is malformed (RFC
        // 9113 §8.3.1); HTTP/1.1's absolute form overrides Host instead.
        (Some(host), None)
            if http2
                && uri.authority().is_some_and(|authority| {
                    let default_port = if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    };
                    !same_origin(authority, host.to_str().unwrap_or(""), default_port)
                }) =>
        {
            Some("the Host header differs from :authority")
        }
        _ => None,
    };
    if let Some(reason) = refusal {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, reason));
    }
    if http2 {
        // A field value that starts or ends with whitespace makes the
        // request malformed (RFC 9113 §8.2.1); HTTP/1.1's parser trims it,
        // so modules would otherwise see one header two ways by version.
        let padded = |v: &http::HeaderValue| {
            let bytes = v.as_bytes();
            matches!(bytes.first(), Some(b' ' | b'\t'))
                || matches!(bytes.last(), Some(b' ' | b'\t'))
        };
        if headers.values().any(padded) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "an HTTP/2 field value that starts or ends with whitespace",
            ));
        }
        // Framing is the HTTP/2 layer's business.
        return Ok(());
    }
    if framing_conflict {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // A Transfer-Encoding means a body, so requests without one skip the
    // lookup.
    if has_body {
        transfer_coding(headers)?;
    }
    Ok(())
}

/// The request's Transfer-Encoding, if any, is one `chunked` and nothing
/// else, the only transfer coding riis decodes (as nginx: 501 for another,
/// RFC 9112 §6.1). hyper checks only that the last coding is chunked and
/// removes that one: with `gzip, chunked` modules would read gzip, and with
/// `chunked, chunked` chunk framing (which RFC 9112 §7 forbids).
fn transfer_coding(headers: &http::HeaderMap) -> Result<(), Refusal> {
    let mut chunked = 0;
    for value in headers.get_all(http::header::TRANSFER_ENCODING) {
        let value = value.to_str().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "a Transfer-Encoding that is not text",
            )
        })?;
        for coding in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
            if coding.is_empty() {
                continue;
            }
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(Refusal::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "a transfer coding other than chunked",
                ));
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "chunked applied more than once",
        ));
    }
    Ok(())
}

/// `uri-host [ ":" port ]` without user information (RFC 9110 §7.2): a
/// bracketed IPv6 address, or a reg-name / IPv4 address of unreserved,
/// sub-delim and percent-encoded characters; an optional numeric port.
/// Checked in place, without allocating (it runs on every request).
#[inline]
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &rest[..end];
        let ok = std::str::from_utf8(inside).is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(at) => (&value[..at], &value[at + 1..]),
            None => (value, &b"0"[..]),
        }
    };
    // RFC 3986's `port = *DIGIT`: `host:` (an empty port) is the default
    // one. Past 65535 it names no port (`b.test:99999`, which
    // `Host: b.test:abc` is refused for too).
    let port_ok = port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX);
    let host_ok = value.starts_with(b"[") || (!host.is_empty() && reg_name(host));
    port_ok && host_ok
}

/// The bytes a reg-name may hold as they are: unreserved and sub-delims.
const REG_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // unreserved: ALPHA DIGIT - . _ ~; sub-delims: ! $ & ' ( ) * + , ; =
        // (`&` to `,` are one run of ASCII).
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&'..=b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// unreserved / pct-encoded / sub-delims (one table lookup per byte: it
/// runs on every request's Host).
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if REG_NAME_BYTES[b as usize] {
            i += 1;
            continue;
        }
        if b != b'%' {
            return false;
        }
        let hex = |k: usize| host.get(k).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return false;
        }
        i += 3;
    }
    true
}

/// The response riis owes a client whose request hyper could not parse and
/// did not answer itself: status and reason, from hyper's error. hyper
/// answers a malformed head itself (400, 414 or 431, with no body) and
/// riis must not answer it a second time; it gives up without a word on
/// an HTTP/2 preface after HTTP/1.1 requests and on a malformed chunked
/// body. `None` for the errors hyper answered and for those that are not
/// the client's malformed request (I/O errors, the client going away).
pub fn parse_error_response(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut source = Some(error);
    let mut hyper_error = None;
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            hyper_error = Some(h);
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // hyper reports a malformed chunked body (bad chunk size, bad
            // line ending) as invalid input while reading the body.
            if hyper_error.is_some()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                )
            {
                return Some(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "the request body is not valid chunked encoding",
                ));
            }
        }
        source = e.source();
    }
    // Only the first bytes of a connection may choose HTTP/2.
    hyper_error?.is_parse_version_h2().then_some(Refusal::new(
        StatusCode::BAD_REQUEST,
        "the HTTP/2 connection preface comes only at the start of a connection",
    ))
}

/// The status hyper answered a malformed HTTP/1.x head with itself, when
/// `error` ended a connection that way: 431 for a head past its buffer,
/// 400 for the rest (an HTTP/2 preface mid-connection is answered by
/// [`parse_error_response`] instead).
pub fn answered_by_hyper(error: &hyper::Error) -> Option<StatusCode> {
    if !error.is_parse() || error.is_parse_version_h2() {
        return None;
    }
    Some(if error.is_parse_too_large() {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    })
}

/// The answer to plain HTTP sent to a port that expects TLS: a client
/// that wrote `http://` for an `https://` site reads why, as nginx's and
/// Caddy's users do, instead of a connection closed without a word.
pub const PLAIN_HTTP_TO_TLS_PORT: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "this port expects HTTPS (TLS); the request came as plain HTTP",
);

/// Whether `first`, the first byte a client sent to a TLS port, starts
/// plain HTTP: a method name's first letter, in either case. A TLS record starts with its
/// content type (22 for a handshake, 21 for an alert), and an SSL 2
/// compatible hello with a byte of 128 or more: no letter begins either.
pub fn starts_plain_http(first: u8) -> bool {
    // `get` is no method a server knows, but it is no TLS either.
    first.is_ascii_alphabetic()
}

/// The bytes of a refusal sent on a raw connection (parse errors, connection
/// limits), closing it.
pub fn raw_response(refusal: Refusal) -> Vec<u8> {
    let body = refusal.body();
    // `Date`: an origin server with a clock sends it on every answer but
    // 1xx and most 5xx (RFC 9110 §6.6.1), as hyper does on its own.
    format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status.as_str(),
        refusal.status.canonical_reason().unwrap_or(""),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len()
    )
    .into_bytes()
}

/// Whether `host` (a `Host` field) names the origin `authority` names:
/// the host in any case and without a final dot, the port the scheme's
/// `default_port` when left out (RFC 9113 §8.3.1 refuses only another
/// origin: `example.com:80` and `example.com.` are `example.com`).
fn same_origin(authority: &http::uri::Authority, host: &str, default_port: u16) -> bool {
    let Ok(other) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = |a: &http::uri::Authority| a.host().trim_end_matches('.').to_ascii_lowercase();
    name(authority) == name(&other)
        && authority.port_u16().unwrap_or(default_port) == other.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_authority_of_one_origin_agree() {
        let a = |s: &str| s.parse::<http::uri::Authority>().unwrap();
        assert!(same_origin(&a("example.com"), "Example.COM", 80));
        assert!(same_origin(&a("example.com:80"), "example.com", 80));
        assert!(same_origin(&a("example.com"), "example.com.", 80));
        assert!(same_origin(&a("[::1]"), "[::1]:80", 80));
        assert!(same_origin(&a("example.com"), "example.com:443", 443));
        assert!(!same_origin(&a("example.com"), "example.com:8080", 80));
        assert!(!same_origin(&a("example.com"), "example.com:443", 80));
        assert!(!same_origin(&a("example.com"), "evil.example", 80));
        assert!(!same_origin(&a("example.com"), "", 80));
    }

    #[test]
    fn hosts() {
        for ok in [
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "a:65535",
            "[::1]",
            "[::1]:80",
            "a:",
            "[::1]:",
            "a%20b",
            "x~y_-.!$&'()*+,;=",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "a b",
            "u@a",
            "a/b",
            "a:b",
            "[::1",
            "a\"b",
            ":80",
            "[zz]",
            "a%zz",
            "a:123456",
            "a:65536",
            "a:99999",
            "[::1]:99999",
            "a%2",
            "\u{e9}t\u{e9}",
            "a\tb",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
