//! The modules built into riis.
//!
//! Each module is one file, shaped the same way: a doc comment saying which
//! notifications it registers for and why, its configuration section (if
//! any), the module type, and a `register_module` entry point with the same
//! signature a third-party module exports. Nothing here uses anything a
//! third-party module could not.

#![warn(missing_docs)]

pub mod anonymous_authentication;
pub mod asp_net_core_module;
pub mod async_hello;
mod backend;
mod background;
pub mod basic_authentication;
pub mod cgi;
pub mod client_certificate_mapping_authentication;
pub mod content_encoding;
pub mod cors;
pub mod custom_error;
pub mod default_document;
pub mod directory_listing;
pub mod dynamic_compression;
pub mod event_trace;
pub mod failed_requests_tracing;
pub mod fastcgi;
pub mod forwarded_for;
mod gateway;
pub mod hello_world;
pub mod http_logging;
pub mod http_platform_handler;
pub mod http_redirection;
mod internal_redirect;
pub mod ip_restriction;
mod managed_application;
pub mod metrics;
pub mod noop;
pub mod output_cache;
pub mod protocol_support;
mod relay;
pub mod request_filtering;
pub mod reverse_proxy;
pub mod server_side_include;
mod spooled_body;
pub mod ssl_access;
pub mod static_compression;
pub mod static_file;
pub mod url_authorization;
pub mod url_rewrite;
pub mod webdav;

use std::path::Path;

use riis_pipeline::RegisterModuleFn;

/// The entries of one `X-Forwarded-For` line (or a header like it), in
/// order: separated by commas or spaces, as nginx's realip module reads
/// them, empty ones skipped. IpRestriction and ForwardedFor read the same
/// entries, so an address one module sees the other sees too.
pub(crate) fn forwarded_entries(line: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    line.split(|&b| b == b',' || b.is_ascii_whitespace())
        .filter(|entry| !entry.is_empty())
}

/// One entry of `X-Forwarded-For` (or a header like it) as an address and
/// the port it may carry: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`, spaces around it ignored. An
/// IPv4-mapped IPv6 address is taken as IPv4. `None` for anything else
/// (`unknown`, an obfuscated name, bytes that are not text).
pub(crate) fn forwarded_entry(item: &[u8]) -> Option<(std::net::IpAddr, Option<u16>)> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    // ASCII spaces only: a no-break space is no separator.
    let item = std::str::from_utf8(item.trim_ascii()).ok()?;
    let (address, port) = if let Ok(a) = item.parse::<IpAddr>() {
        (a, None)
    } else if let Ok(s) = item.parse::<SocketAddr>() {
        (s.ip(), Some(s.port()))
    } else {
        let v6 = item.strip_prefix('[')?.strip_suffix(']')?;
        (IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?), None)
    };
    Some((address.to_canonical(), port))
}

/// What a URL built from a decoded path escapes: every byte but RFC 3986's
/// unreserved characters and `/` (`100%.html`, `home page.html`).
pub(crate) const URL_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `name-<uid>` under the system temp dir: a default folder of the
/// user the server runs as. A folder shared by name would be the first
/// user's (riis refuses a folder another user owns), and a server run
/// once as root would leave the service's user without it.
pub(crate) fn per_user_temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}-{}", nix::unistd::getuid()))
}

/// Why the default folder `per_user_temp(name)` cannot be used, when it
/// exists and is not a private folder of this user: in a shared temp dir
/// its name is known in advance, so another user may have made it first.
/// The module then writes nothing there (each use is refused and logged);
/// `riis check-config` warns with this.
fn default_folder_refusal(name: &str) -> Option<String> {
    let path = per_user_temp(name);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_dir() {
        return Some(format!("{} is not a folder", path.display()));
    }
    private_id(&meta)
        .is_none()
        .then(|| not_private(&path, &meta))
}

/// How much of an entity the modules that transform it (compression,
/// outbound rewriting) take per send; the rest they defer to later sends
/// (`SendResponseProvider::defer_after`), so that what they make goes out
/// as the client takes it rather than being held whole for a slow client.
pub(crate) const TRANSFORM_PIECE: u64 = 64 * 1024;

/// Gives a response's entity chunks to `take` in order, the files' ranges
/// read in blocks of 64 KiB: for the modules that transform the bytes
/// (compression, outbound rewriting).
pub(crate) fn read_entity(
    chunks: &[riis_pipeline::EntityChunk],
    mut take: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 64 * 1024;
    let mut block = Vec::new();
    for chunk in chunks {
        match chunk {
            riis_pipeline::EntityChunk::Memory(bytes) => take(bytes),
            riis_pipeline::EntityChunk::File {
                file,
                offset,
                length,
            } => {
                let mut done = 0;
                while done < *length {
                    let n = (*length - done).min(BLOCK) as usize;
                    block.resize(n, 0);
                    file.read_exact_at(&mut block, offset + done)?;
                    take(&block);
                    done += n as u64;
                }
            }
        }
    }
    Ok(())
}

/// The request's decoded, normalized path escaped again, with one leading
/// slash: the form to build URLs under it from (the path as sent may hold
/// `/.`, `%2e` or `%2F`, which a name appended to it would go wrong with;
/// `//host` would make a link protocol-relative).
pub(crate) fn canonical_url_path(decoded: &str) -> String {
    let mut out = String::from("/");
    out.extend(percent_encoding::utf8_percent_encode(
        decoded.trim_start_matches('/'),
        URL_PATH,
    ));
    out
}

/// 128 bits that do not repeat: the system's randomness, or without it the
/// clock and a counter, which still never repeat within this process. For
/// tokens and nonces (WebDAV lock tokens, a WebSocket key), not secrets.
pub fn nonce() -> [u8; 16] {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&now.to_le_bytes());
        b[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    b
}

/// How deep elements nest in `xml`, by a scan that skips comments, CDATA,
/// declarations and quoted attribute values (the parser reports any other
/// error itself). roxmltree parses nested elements by recursion, so a
/// document from outside (a request's body, a file to convert) is measured
/// first: a few kilobytes of `<a><a><a>…` would otherwise overflow the
/// parsing thread's stack.
pub fn xml_nesting_depth(xml: &str) -> usize {
    let bytes = xml.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    let skip_to = |from: usize, end: &[u8]| {
        memchr::memmem::find(&bytes[from..], end).map_or(bytes.len(), |at| from + at + end.len())
    };
    while let Some(at) = memchr::memchr(b'<', &bytes[i..]) {
        let start = i + at;
        let rest = &bytes[start..];
        if rest.starts_with(b"<!--") {
            i = skip_to(start, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(start, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_to(start, b"?>");
        } else if rest.starts_with(b"<!") {
            i = skip_to(start, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_to(start, b">");
        } else {
            // The tag's end, past quoted values that may hold `>`.
            let mut j = start + 1;
            let mut quote = None;
            while j < bytes.len() {
                match (quote, bytes[j]) {
                    (None, b'"' | b'\'') => quote = Some(bytes[j]),
                    (Some(q), b) if b == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j > start + 1 && bytes[j - 1] != b'/' {
                depth += 1;
                deepest = deepest.max(depth);
            }
            i = (j + 1).min(bytes.len());
        }
    }
    deepest
}

/// The proleptic Gregorian date of a day counted from 1970-01-01: the
/// calendar repeats every 400 years (146,097 days), and counting years from
/// March puts the leap day at the end of each year.
pub(crate) fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `text` with each byte outside ASCII percent-encoded (`é` is `%C3%A9`):
/// a `Location` holds a URI reference, which is ASCII (RFC 3986), though a
/// raw request line or a configured path may carry UTF-8.
pub(crate) fn encode_non_ascii(text: &str) -> std::borrow::Cow<'_, str> {
    // Controls cannot reach here (a configuration refuses them, and a
    // request with one gets 400), so CONTROLS leaves what a Location holds.
    percent_encoding::utf8_percent_encode(text, percent_encoding::CONTROLS).into()
}

/// Opens a file for reading without blocking on it: a FIFO put where a
/// file was expected opens at once (and is then refused as not a file)
/// instead of stalling the thread until a writer comes.
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

/// Reads `file` whole if it is a regular file of at most `max` bytes: a
/// device (`/dev/zero` behind a link) or a file that keeps growing cannot
/// fill memory, and a FIFO is refused.
pub(crate) fn read_regular(file: std::fs::File, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = file.metadata()?;
    let too_large = || std::io::Error::other(format!("larger than {max} bytes"));
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(too_large());
    }
    Ok(data)
}

/// A directory's identity: its device and inode.
pub(crate) type DirectoryId = (u64, u64);

/// Creates `dir` owner-only if it is missing, and checks that it is ours and
/// that nobody else may write to it; gives its identity, for
/// [`private_directory_id`] to tell later that it is still the same one.
pub(crate) fn private_directory(dir: &Path) -> Result<DirectoryId, String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    private_id(&meta).ok_or_else(|| not_private(dir, &meta))
}

/// Why `dir` (its metadata `meta`) is not a private directory of this
/// user: which of the two it is.
pub(crate) fn not_private(dir: &Path, meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        format!(
            "{} belongs to another user (uid {}), not to the user riis runs as",
            dir.display(),
            meta.uid()
        )
    } else {
        format!(
            "{} may be written by others (mode {:o}; chmod go-w, or 700)",
            dir.display(),
            meta.mode() & 0o7777
        )
    }
}

/// The identity of `dir` while it is a private directory of this user (as
/// [`private_directory`] requires), without creating it: one `stat`.
pub(crate) fn private_directory_id(dir: &Path) -> Option<DirectoryId> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    meta.is_dir().then(|| private_id(&meta)).flatten()
}

/// The identity behind `meta` when this user owns it and nobody else may
/// write to it.
pub(crate) fn private_id(meta: &std::fs::Metadata) -> Option<DirectoryId> {
    use std::os::unix::fs::MetadataExt;
    (meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0)
        .then(|| (meta.dev(), meta.ino()))
}

/// A fixed instant early in the process (its first use), from which the
/// modules' coarse clocks count.
pub(crate) fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// Takes `bytes` of a process-wide `budget` that `held` counts, if they
/// are there (give them back with a `fetch_sub`).
pub(crate) fn take_from_budget(
    held: &std::sync::atomic::AtomicU64,
    bytes: u64,
    budget: u64,
) -> bool {
    use std::sync::atomic::Ordering;
    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
        now.checked_add(bytes).filter(|&total| total <= budget)
    })
    .is_ok()
}

/// Lets one line a second through for each kind of refusal, counting the
/// ones held back: a flood of refused requests must not become a flood of
/// log lines.
pub(crate) struct LogGate {
    second: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
}

impl LogGate {
    pub(crate) const fn new() -> Self {
        Self {
            second: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may go out.
    pub(crate) fn pass(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = process_start().elapsed().as_secs() + 1;
        let last = self.second.load(Relaxed);
        if last != now
            && self
                .second
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.held_back.swap(0, Relaxed))
        } else {
            self.held_back.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Locks `mutex`, taking it as it is when a thread panicked holding it:
/// for data whose every change is one step, which a panic cannot leave
/// half made.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How much of a value from a request (a URL, a header) a log line shows.
const LOG_EXCERPT: usize = 256;

/// `text` for a log line: whole when short, else its first 256 bytes (at a
/// character boundary) and how long it was, so a request of 8 KiB of URL
/// does not make a line of 8 KiB.
pub(crate) fn log_excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= LOG_EXCERPT {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = LOG_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// The request headers that make an answer a part of the entity or none
/// of it (a range, a 304, a 412): removed from a child request whose
/// whole answer a module needs (an error page, an include).
pub(crate) const RANGE_AND_CONDITIONAL_HEADERS: [riis_pipeline::http::HeaderName; 6] = [
    riis_pipeline::http::header::RANGE,
    riis_pipeline::http::header::IF_RANGE,
    riis_pipeline::http::header::IF_MATCH,
    riis_pipeline::http::header::IF_NONE_MATCH,
    riis_pipeline::http::header::IF_MODIFIED_SINCE,
    riis_pipeline::http::header::IF_UNMODIFIED_SINCE,
];

/// `E_ACCESSDENIED` as a Win32 HRESULT (`HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)`),
/// the error code of the modules that refuse requests.
pub(crate) const E_ACCESS_DENIED: u32 = 0x8007_0005;
/// Whether a header name holds only letters, digits and `-`: the names
/// gateways pass on. Others (`X_Forwarded_For`, `X.Forwarded.For`) would
/// pass for the `-` one with applications that read headers as CGI
/// variables (PHP turns `.`, `_` and more into `_`, and the later value
/// wins), so a client could stand in for a header a proxy in front set:
/// they are dropped, as nginx's `ignore_invalid_headers` does.
pub(crate) fn is_plain_header_name(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A section for this request's location, and for the location of the URL
/// the client asked for when a rewrite led the request elsewhere and that
/// location's section differs. Access modules apply the stricter of the
/// two (see [`riis_pipeline::HttpContext::client_config`]).
pub(crate) fn both_configs<T: std::any::Any + Send + Sync>(
    ctx: &riis_pipeline::HttpContext,
    section: riis_pipeline::Section<T>,
) -> (&T, Option<&T>) {
    let here = ctx.config(section);
    let asked = ctx.client_config(section);
    (here, (!std::ptr::eq(here, asked)).then_some(asked))
}

/// Writes an address as `192.0.2.7` or `2001:db8::1`, an IPv4-mapped one
/// (a dual-stack socket's IPv4 client) as IPv4. IPv4 addresses are
/// written digit by digit: `Display` costs about 1,300 instructions, a
/// tenth of the proxy's own work per request.
pub(crate) fn put_address(out: &mut Vec<u8>, address: std::net::IpAddr) {
    match address.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            let [a, b, c, d] = v4.octets();
            out.extend_from_slice(digits.format(a).as_bytes());
            for octet in [b, c, d] {
                out.push(b'.');
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        v6 => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)`.
pub(crate) const E_FILE_NOT_FOUND: u32 = 0x8007_0002;

/// Ends the request with an error status: the entity so far dropped, the
/// status with its standard reason, `substatus` and `hresult` recorded
/// (for CustomError's pages and the logs), FinishRequest returned.
pub(crate) fn end_with_error(
    ctx: &mut riis_pipeline::HttpContext,
    status: riis_pipeline::http::StatusCode,
    substatus: u16,
    hresult: u32,
) -> riis_pipeline::RequestNotificationStatus {
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.set_error_status(
        status,
        status.canonical_reason().unwrap_or(""),
        substatus,
        hresult,
    );
    riis_pipeline::RequestNotificationStatus::FinishRequest
}

/// IIS's courtesy redirect: a folder's URL without its trailing slash
/// gets `301` to the URL with it, so that the relative links of what the
/// folder's URL answers (its default document, its listing) resolve inside
/// the folder. Given by whichever of the folder handlers (StaticFile,
/// DefaultDocument, DirectoryListing) meets the URL first, so a handler
/// without StaticFile gives it too. The path goes back as the client sent
/// it (its escapes kept), with its query.
pub(crate) fn add_trailing_slash(
    ctx: &mut riis_pipeline::HttpContext,
) -> riis_pipeline::RequestNotificationStatus {
    // One leading slash: `//host` would be a protocol-relative URL to
    // another host.
    let sent = ctx.request().uri().path().trim_start_matches('/');
    let mut location = String::with_capacity(sent.len() + 2);
    location.push('/');
    location.push_str(sent);
    location.push('/');
    if let Some(q) = ctx.request().uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let moved = riis_pipeline::http::StatusCode::MOVED_PERMANENTLY;
    if ctx.response_mut().redirect(&location, moved).is_err() {
        return end_with_error(
            ctx,
            riis_pipeline::http::StatusCode::BAD_REQUEST,
            0,
            riis_pipeline::ModuleError::E_INVALIDARG,
        );
    }
    riis_pipeline::RequestNotificationStatus::FinishRequest
}

/// Whether the request is for a folder's URL without its trailing slash,
/// by a method that reads it (see [`add_trailing_slash`]).
pub(crate) fn needs_trailing_slash(ctx: &mut riis_pipeline::HttpContext) -> bool {
    let method = ctx.request().method();
    (method == riis_pipeline::http::Method::GET || method == riis_pipeline::http::Method::HEAD)
        && !ctx.request().url().ends_with('/')
        && ctx.resource_kind() == Some(riis_pipeline::ResourceKind::Directory)
}

/// Adds `token` (a request header's name) to `Vary` unless it is listed
/// there in any case, or `Vary: *` already covers it.
pub(crate) fn add_vary_token(headers: &mut riis_pipeline::http::HeaderMap, token: &'static str) {
    use riis_pipeline::http::header::{HeaderValue, VARY};
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(token))
        })
    });
    // `try_`: a module may have filled the map to its limit.
    if !present {
        let _ = headers.try_append(VARY, HeaderValue::from_static(token));
    }
}

/// A configuration number that must be at least 1 (`#[serde(deserialize_with
/// = "crate::at_least_one")]`).
pub(crate) fn at_least_one<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default + PartialEq,
{
    let n = T::deserialize(d)?;
    if n == T::default() {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

/// A count of kept connections, at most 1,024 (`#[serde(deserialize_with
/// = "crate::at_most_1024")]`).
pub(crate) fn at_most_1024<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    use serde::Deserialize;
    let n = usize::deserialize(d)?;
    if n > 1024 {
        return Err(serde::de::Error::custom("must be at most 1024"));
    }
    Ok(n)
}

/// A global module that answers `riis status` (RscaQuery `status`) with
/// the `name: value` lines its function makes: how the modules that hold
/// state report it.
pub(crate) struct StatusLines<F>(pub(crate) F);

impl<F: Fn() -> String + Send + Sync + 'static> riis_pipeline::GlobalModule for StatusLines<F> {
    fn on_global_rsca_query(
        &self,
        query: &mut riis_pipeline::RscaQuery<'_>,
    ) -> riis_pipeline::GlobalNotificationStatus {
        if query.function() == "status" {
            query.write(&(self.0)());
        }
        riis_pipeline::GlobalNotificationStatus::Continue
    }
}

/// The built-in modules by the name configuration uses.
pub const BUILTIN_MODULES: &[(&str, RegisterModuleFn)] = &[
    ("StaticFile", static_file::register_module),
    ("ServerSideInclude", server_side_include::register_module),
    ("DefaultDocument", default_document::register_module),
    ("HelloWorld", hello_world::register_module),
    ("AsyncHello", async_hello::register_module),
    ("EventTrace", event_trace::register_module),
    ("NoOp", noop::register_module),
    ("UrlRewrite", url_rewrite::register_module),
    ("RequestFiltering", request_filtering::register_module),
    ("IpRestriction", ip_restriction::register_module),
    ("ForwardedFor", forwarded_for::register_module),
    ("SslAccess", ssl_access::register_module),
    ("Cors", cors::register_module),
    ("BasicAuthentication", basic_authentication::register_module),
    (
        "AnonymousAuthentication",
        anonymous_authentication::register_module,
    ),
    (
        "ClientCertificateMappingAuthentication",
        client_certificate_mapping_authentication::register_module,
    ),
    ("UrlAuthorization", url_authorization::register_module),
    ("CustomError", custom_error::register_module),
    ("DirectoryListing", directory_listing::register_module),
    ("HttpRedirection", http_redirection::register_module),
    ("ProtocolSupport", protocol_support::register_module),
    ("StaticCompression", static_compression::register_module),
    ("DynamicCompression", dynamic_compression::register_module),
    (
        "FailedRequestsTracing",
        failed_requests_tracing::register_module,
    ),
    ("HttpLogging", http_logging::register_module),
    ("OutputCache", output_cache::register_module),
    ("Cgi", cgi::register_module),
    ("FastCgi", fastcgi::register_module),
    ("ReverseProxy", reverse_proxy::register_module),
    (
        "HttpPlatformHandler",
        http_platform_handler::register_module,
    ),
    ("AspNetCoreModule", asp_net_core_module::register_module),
    ("Metrics", metrics::register_module),
    ("WebDav", webdav::register_module),
];

/// The entry point of a built-in module.
pub fn builtin(name: &str) -> Option<RegisterModuleFn> {
    BUILTIN_MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_what_it_has_and_no_more() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let held = AtomicU64::new(0);
        assert!(take_from_budget(&held, 60, 100));
        assert!(!take_from_budget(&held, 41, 100));
        assert!(take_from_budget(&held, 40, 100));
        assert_eq!(held.load(Ordering::Relaxed), 100);
        held.fetch_sub(60, Ordering::Relaxed);
        assert!(take_from_budget(&held, 60, 100));
        assert!(!take_from_budget(&held, u64::MAX, u64::MAX));
    }

    #[test]
    fn log_excerpts_cut_long_values_at_a_character_boundary() {
        assert_eq!(log_excerpt("/short"), "/short");
        let long = format!("/{}", "a".repeat(300));
        assert_eq!(
            log_excerpt(&long),
            format!("/{}… (301 bytes)", "a".repeat(255))
        );
        // A two-byte character across the cut is left out whole.
        let accents = format!("/{}", "é".repeat(200));
        let cut = log_excerpt(&accents);
        assert!(cut.starts_with(&format!("/{}", "é".repeat(127))), "{cut}");
        assert!(cut.ends_with("… (401 bytes)"), "{cut}");
    }

    #[test]
    fn a_log_gate_lets_one_line_a_second_through_and_counts_the_rest() {
        let gate = LogGate::new();
        assert_eq!(gate.pass(), Some(0));
        // A burst lets through one line for each second it spans (a few
        // microseconds: one, or two across a second's turn).
        let passed: Vec<u64> = (0..1000).filter_map(|_| gate.pass()).collect();
        assert!(passed.len() <= 1, "{passed:?}");
        // The next second's line says how many were held back.
        gate.second.store(0, std::sync::atomic::Ordering::Relaxed);
        let held_back = 1000 - passed.len() as u64 - passed.iter().sum::<u64>();
        assert_eq!(gate.pass(), Some(held_back));
    }
}
