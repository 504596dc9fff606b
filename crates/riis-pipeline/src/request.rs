//! The request a module sees (IIS's `IHttpRequest`).

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};

/// Why a request URL was refused before the pipeline started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The URL is not an absolute path (`/…`).
    NotAbsolute,
    /// A `%` is not followed by two hexadecimal digits (nginx and IIS
    /// refuse such a URL with 400 rather than guess what was meant).
    InvalidEscape,
    /// A percent-escape decodes to bytes that are not UTF-8.
    InvalidUtf8,
    /// The decoded path contains a control character (NUL, CR, LF, …), a
    /// backslash or a `..` segment.
    Unsafe,
    /// `set_url` was called after the pipeline started.
    PipelineStarted,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the URL is not an absolute path",
            Self::InvalidEscape => "the URL has a '%' not followed by two hexadecimal digits",
            Self::InvalidUtf8 => "the URL does not decode to UTF-8",
            Self::Unsafe => "the URL contains a control character, a backslash or a '..' segment",
            Self::PipelineStarted => "the URL can be changed only before the pipeline starts",
        })
    }
}

impl std::error::Error for UrlError {}

/// Decodes the path of `uri`, refuses paths that could escape a site root,
/// and normalizes the rest (see [`normalize`]).
///
/// Returns the decoded path; borrowed when there was nothing to decode or
/// normalize, so the common request costs no allocation.
pub(crate) fn decode_path(raw: &str) -> Result<Cow<'_, str>, UrlError> {
    if !raw.starts_with('/') {
        return Err(UrlError::NotAbsolute);
    }
    // The common path has nothing to decode: one pass over its bytes finds
    // both what needs decoding and a slash followed by a dot or another
    // slash (the segment checks run only then).
    let bytes = raw.as_bytes();
    let mut escaped = false;
    let mut segments = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b'\0' => {
                escaped = true;
                break;
            }
            b'/' => segments |= matches!(bytes.get(i + 1), Some(b'/' | b'.')),
            _ => {}
        }
    }
    if !escaped {
        if !segments {
            return Ok(Cow::Borrowed(raw));
        }
        if raw.split('/').any(|s| s == "..") {
            return Err(UrlError::Unsafe);
        }
        return Ok(normalize(raw).map_or(Cow::Borrowed(raw), Cow::Owned));
    }
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        match rest.get(at + 1..at + 3) {
            Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                rest = &rest[at + 3..]
            }
            _ => return Err(UrlError::InvalidEscape),
        }
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| UrlError::InvalidUtf8)?;
    // Control characters are refused as http.sys refuses them: a decoded
    // line feed would let `/admin%0a` slip past a pattern ending in `$`
    // (the `regex` crate's `$` does not match before a final newline, as
    // PCRE's does) and reach an application that trims or ignores it.
    if decoded.bytes().any(|b| b.is_ascii_control() || b == b'\\')
        || decoded.split('/').any(|s| s == "..")
    {
        return Err(UrlError::Unsafe);
    }
    Ok(match normalize(&decoded) {
        Some(n) => Cow::Owned(n),
        None => decoded,
    })
}

/// A URL path as the engine prepares the request's URL before choosing a
/// location: percent-decoded, with runs of `/` collapsed and `.` segments
/// dropped; an error for what a request would be refused for (`..`, a
/// control character, backslash, invalid UTF-8, no leading `/`). For
/// modules that compare
/// a configured path with [`HttpRequest::url`].
pub fn prepare_url_path(raw: &str) -> Result<Cow<'_, str>, UrlError> {
    decode_path(raw)
}

/// What follows `prefix` (a URL path such as `/blog`, with or without its
/// trailing `/`) in URL path `url`, at a segment boundary: `Some("")` for
/// the prefix itself, `Some("/2024/x")` below it, `None` outside it
/// (`/blogs`). The prefix `/` covers every path. How locations, mounts
/// and a folder's rules tell the paths they cover.
///
/// Case is ignored for the prefix's ASCII letters (`/Blog/x` is below
/// `/blog`), as IIS matches `<location path>` and as riis matches handler
/// patterns: a location that guards a path guards it however a client
/// spells it, so a handler, a backend or a file system that ignores case
/// cannot serve it from outside the guard. That includes the four
/// characters outside ASCII that a case mapping takes to an ASCII letter
/// (`ſ` for `s`, `K` (Kelvin) for `k`, `ı` and `İ` for `i`), which Java's
/// `equalsIgnoreCase` and .NET's culture-invariant comparisons take for
/// those letters. The prefix's other characters are compared exactly.
#[inline]
pub fn path_below<'a>(prefix: &str, url: &'a str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = match url.as_bytes().get(..prefix.len()) {
        // The bytes up to here differ from the prefix's at most in ASCII
        // letters, so this is a character boundary as it is in the prefix.
        Some(head) if head.eq_ignore_ascii_case(prefix.as_bytes()) => url.get(prefix.len()..)?,
        // Only a URL with characters outside ASCII can spell the prefix
        // in other bytes.
        _ if url.is_ascii() => return None,
        _ => rest_after_folded(prefix, url)?,
    };
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// What follows `prefix` in `url` when the URL spells it with characters
/// a case mapping takes to the prefix's ASCII letters (see [`path_below`]).
#[cold]
fn rest_after_folded<'a>(prefix: &str, url: &'a str) -> Option<&'a str> {
    let mut chars = url.char_indices();
    for wanted in prefix.chars() {
        let (_, got) = chars.next()?;
        let same = got == wanted
            || (wanted.is_ascii_alphabetic()
                && (got.eq_ignore_ascii_case(&wanted)
                    || ascii_letter_of(got) == Some(wanted.to_ascii_lowercase())));
        if !same {
            return None;
        }
    }
    let at = chars.next().map_or(url.len(), |(at, _)| at);
    url.get(at..)
}

/// The ASCII letter (lower case) a character outside ASCII is taken for
/// by case mappings: the characters whose upper or lower case is an ASCII
/// letter.
fn ascii_letter_of(c: char) -> Option<char> {
    match c {
        '\u{17F}' => Some('s'),  // LATIN SMALL LETTER LONG S: upper case S
        '\u{212A}' => Some('k'), // KELVIN SIGN: lower case k
        '\u{131}' => Some('i'),  // LATIN SMALL LETTER DOTLESS I: upper case I
        '\u{130}' => Some('i'),  // LATIN CAPITAL LETTER I WITH DOT ABOVE: lower case i
        _ => None,
    }
}

/// Collapses runs of `/` and drops `.` segments, keeping a trailing slash;
/// `None` when there is nothing to change. One path then names one location
/// and one file: `//uploads/x` is `/uploads/x` for the location match (its
/// configuration, filters and redirects) as it already was for the file
/// mapping, which joins the path to the root without leading slashes.
/// (Its callers refuse `..` segments first.)
fn normalize(path: &str) -> Option<String> {
    if !(path.contains("//") || path.contains("/./") || path.ends_with("/.")) {
        return None;
    }
    Some(join_segments(path))
}

/// `path`'s segments joined again: runs of `/` collapsed, `.` segments
/// dropped, `..` segments resolved against what comes before them (never
/// above `/`), a trailing `/` kept.
fn join_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    let ends_in_folder = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if out.is_empty() || ends_in_folder {
        out.push('/');
    }
    out
}

/// A URL path a module asks to map (MapPath), in the form the request's own
/// URL has: runs of `/` collapsed, `.` segments dropped, and `..` segments
/// resolved against what comes before them (never above `/`), so that it
/// finds the virtual directory and folder the same URL would as a request,
/// and never a folder outside the one it maps into. It is not decoded: it
/// is already a URL path as [`HttpRequest::url`] gives it. Borrowed when
/// there is nothing to change.
pub(crate) fn normalize_mapped_url(url: &str) -> Cow<'_, str> {
    // One pass: a `/` followed by `/` or `.` is where a segment may need
    // work (a name that starts with a dot, `/.well-known`, only looks so
    // and comes out as it was).
    let bytes = url.as_bytes();
    let clean = bytes.first() == Some(&b'/')
        && !bytes
            .iter()
            .zip(&bytes[1..])
            .any(|(&a, &b)| a == b'/' && (b == b'/' || b == b'.'));
    if clean {
        return Cow::Borrowed(url);
    }
    Cow::Owned(join_segments(url))
}

/// The request: method, URL, headers, addresses and body.
#[derive(Debug)]
pub struct HttpRequest {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    /// The decoded path (IIS's URL); `None` while it equals `uri.path()`.
    pub(crate) decoded_path: Option<Box<str>>,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) local_addr: SocketAddr,
    pub(crate) remote_addr: SocketAddr,
    /// The connection's peer, when a module replaced `remote_addr`
    /// ([`HttpRequest::set_remote_address`]).
    replaced_peer: Option<SocketAddr>,
    pub(crate) is_tls: bool,
    pub(crate) sends_files_without_copy: bool,
    /// See [`HttpRequest::is_websocket_over_http2`].
    websocket_over_http2: bool,
    pub(crate) pipeline_started: bool,
    /// `set_url` changed the URL since the engine last chose the location
    /// (see `HttpContext::sync_url`).
    pub(crate) url_changed: bool,
    /// How many times `set_url` changed the URL.
    pub(crate) url_changes: u32,
    /// The path and query the client sent, once `set_url` changed them (a
    /// rewrite, a child request's own URL); `None` while `raw_url` is it.
    client_url: Option<Box<str>>,
    /// The headers a module set, each with the client's first value (if it
    /// sent one), in the order first set: see
    /// [`HttpRequest::header_set_by_module`] and [`HttpRequest::client_header`].
    set_by_modules: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Body bytes a module inserted, read before the client's body.
    pub(crate) inserted_entity: std::collections::VecDeque<Bytes>,
    /// The tail of the last read its reader had no room for (see
    /// [`Self::return_unread`]): read next, without ReadEntity modules.
    pub(crate) unread: Bytes,
    /// What the last completed body read produced.
    pub(crate) read_data: Bytes,
    /// Whether the client's body has been read to its end.
    pub(crate) body_complete: bool,
    /// Whether a read has completed empty at the end of the body: a read
    /// asked for after that fails at once with [`crate::ModuleError::E_HANDLE_EOF`],
    /// as IIS's `ReadEntityBody` does, instead of completing empty again.
    pub(crate) end_delivered: bool,
    /// Body bytes read so far (after ReadEntity replacement).
    pub(crate) bytes_received: u64,
    /// Body bytes read from the client (not inserted ones), before any
    /// ReadEntity module changed them.
    pub(crate) client_bytes_read: u64,
}

/// A request head [`HttpRequest::new`] refused: why, and what it was given
/// back, so that the refusal can be logged with the method, the target and
/// the host the client sent.
#[derive(Debug)]
pub struct RefusedHead {
    /// Why the target was refused.
    pub error: UrlError,
    /// The request's method.
    pub method: Method,
    /// The request's target.
    pub uri: Uri,
    /// The request's header fields.
    pub headers: HeaderMap,
}

impl std::fmt::Display for RefusedHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RefusedHead {}

impl HttpRequest {
    /// A request as it arrived.
    ///
    /// Fails when the path is not an absolute path, does not decode to UTF-8,
    /// or contains a control character, a backslash or a `..` segment once decoded: such a
    /// request is answered with 400 before any module runs.
    pub fn new(
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
        local_addr: SocketAddr,
        remote_addr: SocketAddr,
    ) -> Result<Self, Box<RefusedHead>> {
        let decoded_path = match decode_path(uri.path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(s)) => Some(s.into_boxed_str()),
            Err(error) => {
                return Err(Box::new(RefusedHead {
                    error,
                    method,
                    uri,
                    headers,
                }))
            }
        };
        let body_complete = !has_body(&method, &headers);
        Ok(Self {
            method,
            uri,
            decoded_path,
            version,
            headers,
            local_addr,
            remote_addr,
            replaced_peer: None,
            is_tls: false,
            sends_files_without_copy: false,
            websocket_over_http2: false,
            pipeline_started: false,
            url_changed: false,
            url_changes: 0,
            client_url: None,
            set_by_modules: Vec::new(),
            inserted_entity: std::collections::VecDeque::new(),
            unread: Bytes::new(),
            read_data: Bytes::new(),
            body_complete,
            end_delivered: false,
            bytes_received: 0,
            client_bytes_read: 0,
        })
    }

    /// Marks the request as received over TLS (the `HTTPS` server variable).
    pub fn set_tls(&mut self, is_tls: bool) {
        self.is_tls = is_tls;
    }

    /// Whether the request came over TLS.
    pub fn is_tls(&self) -> bool {
        self.is_tls
    }

    /// Set by the server before the pipeline starts: whether file chunks of
    /// this request's response go from the page cache to the socket without
    /// passing through the server's memory (`sendfile` on plain HTTP/1.x).
    pub fn set_sends_files_without_copy(&mut self, yes: bool) {
        self.sends_files_without_copy = yes;
    }

    /// Whether a file chunk of the response is sent without a copy (see
    /// [`Self::set_sends_files_without_copy`]): a module that holds the same
    /// bytes in memory and in an open file can prefer the file then.
    pub fn sends_files_without_copy(&self) -> bool {
        self.sends_files_without_copy
    }

    /// Set by the server before the pipeline starts: the request opens a
    /// WebSocket over HTTP/2 (RFC 8441's extended CONNECT with `:protocol`
    /// `websocket`). Modules see it as the HTTP/1.1 request for the same
    /// thing: `GET` with `Connection: upgrade`, `Upgrade: websocket` and a
    /// `Sec-WebSocket-Key` of the server's making, and answer it with a
    /// `101`, which the server sends as HTTP/2's `200`.
    pub fn set_websocket_over_http2(&mut self, yes: bool) {
        if !self.pipeline_started {
            self.websocket_over_http2 = yes;
        }
    }

    /// Whether the request opens a WebSocket over HTTP/2 (see
    /// [`Self::set_websocket_over_http2`]): its stream can switch protocols
    /// as an HTTP/1.1 connection does after `101 Switching Protocols`,
    /// though [`Self::http_version`] says HTTP/2.
    pub fn is_websocket_over_http2(&self) -> bool {
        self.websocket_over_http2
    }

    /// Whether the client's connection (or, over HTTP/2, its stream) can
    /// switch protocols for this request: HTTP/1.1, or a WebSocket over
    /// HTTP/2 ([`Self::is_websocket_over_http2`]).
    pub fn can_switch_protocols(&self) -> bool {
        self.version == Version::HTTP_11 || self.websocket_over_http2
    }

    /// `GetHttpMethod`.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// `SetHttpMethod`.
    pub fn set_method(&mut self, method: Method) {
        self.method = method;
    }

    /// The decoded URL path (IIS's URL, without the query string).
    pub fn url(&self) -> &str {
        self.decoded_path
            .as_deref()
            .unwrap_or_else(|| self.uri.path())
    }

    /// The path and query exactly as the client sent them (`UNENCODED_URL`).
    pub fn raw_url(&self) -> &str {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or_else(|| self.uri.path())
    }

    /// The path and query the client sent, whatever `set_url` made of them
    /// since (a rewrite, a child request's URL): the `REQUEST_URI` server
    /// variable, which applications read their route from.
    pub fn client_url(&self) -> &str {
        self.client_url.as_deref().unwrap_or_else(|| self.raw_url())
    }

    /// Makes the current URL the one the client asked for: a child
    /// request whose URL the client may have chosen (a CGI local redirect,
    /// which RFC 3875 §6.2.2 has processed as a new request) has it in
    /// `REQUEST_URI` and `UNENCODED_URL`, so that rules keyed on those
    /// judge it as they would the client's own request for it.
    pub(crate) fn take_url_as_clients(&mut self) {
        self.client_url = None;
    }

    /// The query string without `?`, empty when there is none.
    pub fn query_string(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    /// The request URI as received.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `SetUrl`: replace path and query. Allowed until BeginRequest's
    /// modules are done: in a PreBeginRequest global module, in BeginRequest
    /// (a rewriting module registers there at a high priority, so the
    /// modules after it see the new URL), or on a cloned context before it
    /// is executed as a child request. The request's location, and with it
    /// every module's configuration, follows the new URL at once.
    pub fn set_url(&mut self, path_and_query: &str) -> Result<(), UrlError> {
        if self.pipeline_started {
            return Err(UrlError::PipelineStarted);
        }
        let new: Uri = path_and_query.parse().map_err(|_| UrlError::NotAbsolute)?;
        if new.scheme().is_some() || new.authority().is_some() {
            return Err(UrlError::NotAbsolute);
        }
        // The scheme and authority stay: an HTTP/2 request's `:authority`
        // (or an absolute-form target's host) is still the host it asked.
        let uri = match (
            self.uri.scheme(),
            self.uri.authority(),
            new.path_and_query(),
        ) {
            (Some(scheme), Some(authority), Some(path_and_query)) => Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query(path_and_query.clone())
                .build()
                .map_err(|_| UrlError::NotAbsolute)?,
            _ => new,
        };
        let decoded_path = match decode_path(uri.path())? {
            Cow::Borrowed(_) => None,
            Cow::Owned(s) => Some(s.into_boxed_str()),
        };
        if self.client_url.is_none() {
            self.client_url = Some(self.raw_url().into());
        }
        self.uri = uri;
        self.decoded_path = decoded_path;
        self.url_changed = true;
        self.url_changes += 1;
        Ok(())
    }

    /// How many times `set_url` changed this request's URL (IIS's
    /// `GetUrlChanged`, as a count: a module that noted it can tell whether
    /// another module rewrote the URL since).
    pub fn url_changes(&self) -> u32 {
        self.url_changes
    }

    /// `GetHeader`: the first value of a header.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&HeaderValue> {
        self.headers.get(name)
    }

    /// All headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `SetHeader` with replace: the header gets exactly this value.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.note_set(&name);
        if self.headers.try_insert(name, value).is_err() {
            header_map_full("request");
        }
    }

    /// `SetHeader` without replace: one more value.
    pub fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        // Beside values the client sent, the header is not the module's
        // alone (see `header_set_by_module`).
        if !self.headers.contains_key(&name) {
            self.note_set(&name);
        }
        if self.headers.try_append(name, value).is_err() {
            header_map_full("request");
        }
    }

    /// `DeleteHeader`.
    pub fn delete_header(&mut self, name: impl AsRef<str>) {
        let Ok(name) = HeaderName::from_bytes(name.as_ref().as_bytes()) else {
            return;
        };
        if self.headers.contains_key(&name) {
            self.note_set(&name);
            self.headers.remove(&name);
        }
    }

    /// Keeps the client's value of a header a module is about to change.
    fn note_set(&mut self, name: &HeaderName) {
        if !self.set_by_modules.iter().any(|(n, _)| n == name) {
            let client = self.headers.get(name).cloned();
            self.set_by_modules.push((name.clone(), client));
        }
    }

    /// Whether every present value of the header was set by a module
    /// ([`HttpRequest::set_header`], or [`HttpRequest::append_header`] once
    /// no value of the client's was left: a UrlRewrite rule's `HTTP_*`
    /// server variable, say) rather than sent by the client. What a module
    /// that must not trust the client's value of a header, but honours a
    /// rule's, asks (ReverseProxy's `X-Forwarded-*`).
    pub fn header_set_by_module(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name) && self.set_by_modules.iter().any(|(n, _)| n == name)
    }

    /// The first value of a header as the client sent it, before any module
    /// changed it (the `Host` a rule replaced, say).
    pub fn client_header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        match self.set_by_modules.iter().find(|(n, _)| n == name) {
            Some((_, client)) => client.as_ref(),
            None => self.headers.get(name),
        }
    }

    /// The host the client asked for, as `HTTP_HOST` first had it: an
    /// absolute-form target's authority (HTTP/2's `:authority`), which
    /// overrides `Host` (RFC 9112 §3.2.2), else the client's `Host`,
    /// whatever a module set since.
    pub fn client_host(&self) -> Option<Cow<'_, str>> {
        self.target_host().or_else(|| {
            self.client_header(&http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed)
        })
    }

    /// An absolute-form target's (or HTTP/2's `:authority`) host and port,
    /// without userinfo: the host the request reached, over any `Host`
    /// header.
    pub(crate) fn target_host(&self) -> Option<Cow<'_, str>> {
        let host = self.uri.host()?;
        Some(match self.uri.port_u16() {
            Some(port) => Cow::Owned(format!("{host}:{port}")),
            None => Cow::Borrowed(host),
        })
    }

    /// `GetHttpVersion`.
    pub fn http_version(&self) -> Version {
        self.version
    }

    /// `GetLocalAddress`.
    pub fn local_address(&self) -> SocketAddr {
        self.local_addr
    }

    /// `GetRemoteAddress`.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Replaces the client's address for the rest of the request: the
    /// modules after this call, `REMOTE_ADDR` and `REMOTE_PORT`, the access
    /// log, and the child requests it starts. For a module that learns the
    /// client from a proxy it trusts (`X-Forwarded-For`), as nginx's realip
    /// module does; a riis extension (IIS has no such call). The
    /// connection keeps its own peer ([`HttpRequest::peer_address`]):
    /// limits per connection still count the proxy.
    pub fn set_remote_address(&mut self, address: SocketAddr) {
        if self.replaced_peer.is_none() {
            self.replaced_peer = Some(self.remote_addr);
        }
        self.remote_addr = address;
    }

    /// The address the request's connection came from: the remote address
    /// as the server gave it, before any module replaced it (the proxy a
    /// module took the client from). A gateway appends it to
    /// `X-Forwarded-For`, as the hop it received the request from.
    pub fn peer_address(&self) -> SocketAddr {
        self.replaced_peer.unwrap_or(self.remote_addr)
    }

    /// `InsertEntityBody`: bytes that the next body reads return before the
    /// client's own body (for example a body a module already consumed and
    /// wants handlers to see again).
    pub fn insert_entity_body(&mut self, data: impl Into<Bytes>) {
        let data = data.into();
        if !data.is_empty() {
            self.inserted_entity.push_back(data);
        }
    }

    /// The bytes the last completed [`crate::HttpContext::read_entity_body`]
    /// delivered (after ReadEntity modules had their say). Empty at the end of
    /// the body.
    pub fn read_data(&self) -> &Bytes {
        &self.read_data
    }

    /// Takes the bytes of the last completed body read, leaving it empty.
    pub fn take_read_data(&mut self) -> Bytes {
        std::mem::take(&mut self.read_data)
    }

    /// Gives back the tail of the last read's bytes that the reader had no
    /// room for (a ReadEntity module made more of a read than the reader's
    /// buffer holds): the next read returns it first, as it is, since
    /// ReadEntity modules had their say on it already.
    pub fn return_unread(&mut self, rest: Bytes) {
        if rest.is_empty() {
            return;
        }
        // Counted again when it is read again.
        self.bytes_received = self.bytes_received.saturating_sub(rest.len() as u64);
        self.unread = if self.unread.is_empty() {
            rest
        } else {
            // The last read was served from given-back bytes and left some:
            // what the reader gives back of it comes before them.
            let mut both = Vec::with_capacity(rest.len() + self.unread.len());
            both.extend_from_slice(&rest);
            both.extend_from_slice(&self.unread);
            both.into()
        };
    }

    /// Whether every body byte has been read (always true for a request
    /// without a body).
    pub fn is_body_complete(&self) -> bool {
        self.body_complete && self.inserted_entity.is_empty() && self.unread.is_empty()
    }

    /// `GetRemainingEntityBytes` as far as it is known: the bytes inserted
    /// with [`Self::insert_entity_body`] or given back with
    /// [`Self::return_unread`] and not read yet, and the declared
    /// Content-Length minus what was read from the client; `None` for a
    /// chunked body still coming.
    pub fn remaining_entity_bytes(&self) -> Option<u64> {
        let inserted: u64 = self
            .inserted_entity
            .iter()
            .map(|b| b.len() as u64)
            .sum::<u64>()
            + self.unread.len() as u64;
        if self.body_complete {
            return Some(inserted);
        }
        let declared: u64 = self
            .headers
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        Some(declared.saturating_sub(self.client_bytes_read) + inserted)
    }

    /// Body bytes read so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// A copy for a child request: same method, URL, version, headers and
    /// addresses, no body.
    pub(crate) fn clone_for_child(&self) -> Self {
        Self {
            method: self.method.clone(),
            uri: self.uri.clone(),
            decoded_path: self.decoded_path.clone(),
            version: self.version,
            headers: self.headers.clone(),
            local_addr: self.local_addr,
            remote_addr: self.remote_addr,
            replaced_peer: self.replaced_peer,
            is_tls: self.is_tls,
            sends_files_without_copy: self.sends_files_without_copy,
            // A child request never takes over the client's stream.
            websocket_over_http2: false,
            pipeline_started: false,
            url_changed: false,
            url_changes: 0,
            client_url: Some(self.client_url().into()),
            set_by_modules: self.set_by_modules.clone(),
            inserted_entity: std::collections::VecDeque::new(),
            unread: Bytes::new(),
            read_data: Bytes::new(),
            body_complete: true,
            end_delivered: false,
            bytes_received: 0,
            client_bytes_read: 0,
        }
    }
}

impl HttpRequest {
    /// Whether a body follows, as the transport says, for a server to set
    /// before the pipeline starts. The headers alone cannot tell on HTTP/2,
    /// where a body may come without `Content-Length` (the stream simply
    /// stays open after HEADERS).
    pub fn set_body_expected(&mut self, expected: bool) {
        if !self.pipeline_started && self.bytes_received == 0 {
            self.body_complete = !expected;
        }
    }
}

/// Whether a request carries a body, per RFC 9112 §6.3.
fn has_body(_method: &Method, headers: &HeaderMap) -> bool {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => v.as_bytes() != b"0",
        None => false,
    }
}

/// A module set more headers than a header map holds (about 24,000
/// fields; the http crate panics past it): the header was dropped. Logged
/// at most once a second, since a module in a loop would call this for
/// every one.
pub(crate) fn header_map_full(which: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LOGGED.swap(second, Ordering::Relaxed) != second {
        tracing::warn!(
            which,
            "a module set more headers than a header map holds; the header is dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_remote_address_keeps_the_peer_and_goes_to_children() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut request = HttpRequest::new(
            Method::GET,
            Uri::from_static("/"),
            Version::HTTP_11,
            HeaderMap::new(),
            "127.0.0.1:80".parse().unwrap(),
            peer,
        )
        .unwrap();
        assert_eq!(request.peer_address(), peer);
        request.set_remote_address("203.0.113.7:0".parse().unwrap());
        request.set_remote_address("203.0.113.8:0".parse().unwrap());
        assert_eq!(request.remote_address(), "203.0.113.8:0".parse().unwrap());
        assert_eq!(request.peer_address(), peer);
        let child = request.clone_for_child();
        assert_eq!(child.remote_address(), "203.0.113.8:0".parse().unwrap());
        assert_eq!(child.peer_address(), peer);
    }

    #[test]
    fn a_url_to_map_is_normalized_as_a_request_url_and_stays_under_the_root() {
        assert!(matches!(
            normalize_mapped_url("/a/b.txt"),
            Cow::Borrowed("/a/b.txt")
        ));
        for (url, mapped) in [
            ("//pictures/a.txt", "/pictures/a.txt"),
            ("/pictures/./nested/b.txt", "/pictures/nested/b.txt"),
            ("/pictures//nested/b.txt", "/pictures/nested/b.txt"),
            ("/pictures/nested/../b.txt", "/pictures/b.txt"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("a/b", "/a/b"),
            ("", "/"),
            ("/", "/"),
        ] {
            assert_eq!(normalize_mapped_url(url), mapped, "{url}");
        }
    }

    #[test]
    fn decoding_borrows_when_plain_and_refuses_escapes_from_the_root() {
        assert!(matches!(
            decode_path("/a/b.txt"),
            Ok(Cow::Borrowed("/a/b.txt"))
        ));
        assert_eq!(decode_path("/a%20b").unwrap(), "/a b");
        for bad in [
            "/../x",
            "/a/%2e%2e/x",
            "/a%5c..%5cx",
            "/a%00b",
            "/admin%0a",
            "/a%0d%0ab",
            "/a%09b",
            "/a%7f",
            "/a/..",
            "x",
        ] {
            assert!(decode_path(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(decode_path("/%ff"), Err(UrlError::InvalidUtf8));
        for bad in ["/%zz", "/a%", "/a%2", "/a%2g/b", "/%%41", "/%e9%"] {
            assert_eq!(decode_path(bad), Err(UrlError::InvalidEscape), "{bad}");
        }
        assert_eq!(decode_path("/100%25.html").unwrap(), "/100%.html");
        assert_eq!(decode_path("/%41%42").unwrap(), "/AB");
    }

    #[test]
    fn repeated_slashes_and_dot_segments_are_normalized() {
        for (raw, want) in [
            ("//uploads/x.html", "/uploads/x.html"),
            ("/a//b/", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("//", "/"),
            ("/.", "/"),
            ("/%2f%2fuploads/x", "/uploads/x"),
            ("/a/%2e/b", "/a/b"),
        ] {
            assert_eq!(decode_path(raw).unwrap(), want, "{raw}");
        }
        for plain in ["/", "/a/b/", "/.well-known/x", "/a.b/c."] {
            assert!(
                matches!(decode_path(plain), Ok(Cow::Borrowed(p)) if p == plain),
                "{plain} is left as it is"
            );
        }
        assert!(decode_path("//..//x").is_err());
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        HttpRequest::new(
            Method::GET,
            target.parse().unwrap(),
            Version::HTTP_11,
            map,
            addr,
            addr,
        )
        .unwrap()
    }

    #[test]
    fn a_header_is_the_modules_only_when_no_value_of_the_clients_is_left() {
        let proto = HeaderName::from_static("x-forwarded-proto");
        let mut req = request("/", &[("x-forwarded-proto", "https")]);
        assert!(!req.header_set_by_module(&proto));
        // Appended beside the client's value: still not trusted.
        req.append_header(proto.clone(), HeaderValue::from_static("http"));
        assert!(!req.header_set_by_module(&proto));
        // Replaced: the module's.
        req.set_header(proto.clone(), HeaderValue::from_static("http"));
        assert!(req.header_set_by_module(&proto));
        assert_eq!(req.client_header(&proto).unwrap(), "https");
        // Deleted, then appended: the module's, and the client's value is
        // still known.
        let mut req = request("/", &[("host", "public.example")]);
        req.delete_header("host");
        assert!(!req.header_set_by_module(&http::header::HOST));
        req.append_header(http::header::HOST, HeaderValue::from_static("backend"));
        assert!(req.header_set_by_module(&http::header::HOST));
        assert_eq!(
            req.client_header(&http::header::HOST).unwrap(),
            "public.example"
        );
        assert_eq!(req.client_host().as_deref(), Some("public.example"));
        // A child request knows the same.
        let child = req.clone_for_child();
        assert_eq!(child.client_host().as_deref(), Some("public.example"));
        // An absolute-form target's authority is the host asked for.
        let req = request("http://good.example:8080/x", &[("host", "evil.example")]);
        assert_eq!(req.client_host().as_deref(), Some("good.example:8080"));
    }
}
