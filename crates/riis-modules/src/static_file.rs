//! `StaticFile`: serves files from the site's physical root.
//!
//! Registers for **ExecuteRequestHandler** only: it runs when a handler
//! mapping lists it (the default static handler does). For a file it answers
//! GET and HEAD with `Content-Type` by extension, `Content-Length`,
//! `Last-Modified`, a strong `ETag` and `Accept-Ranges: bytes`; other methods
//! get 405 with `Allow` (for a directory they are left to the handler's next
//! module: a post to a folder goes to its default document). A directory URL
//! without its trailing slash is
//! redirected (301) to the slash form; a directory URL with it is left to the
//! handler's next module (DefaultDocument). A served file marks the request
//! handled and returns Continue, so ReleaseRequestState and
//! UpdateRequestCache still run; errors finish the request. Like IIS, it
//! refuses extensions it has no MIME type for with 404.3 unless the location
//! sets `default_mime_type`.
//!
//! HTTP semantics (RFC 9110):
//! - conditional requests (§13) in the order of §13.2.2: `If-Match`, then
//!   `If-Unmodified-Since` (only without `If-Match`), then `If-None-Match`
//!   (304 for GET and HEAD, 412 otherwise), then `If-Modified-Since` (only
//!   without `If-None-Match`), then `If-Range`. 304 carries the validators
//!   and the cache headers, 412 nothing;
//! - byte ranges (§14): one range gives a 206 with `Content-Range`, several a
//!   `multipart/byteranges` 206, none satisfiable a 416 with
//!   `Content-Range: bytes */len`. Another unit or an invalid header is
//!   ignored (the whole file is sent). Abuse guard: more than
//!   [`MAX_RANGES`] ranges get the whole file (200); when any two
//!   satisfiable ranges overlap, all ranges are sorted and overlapping or
//!   adjacent ones coalesced (RFC 9110 §15.3.7.2 allows both). HEAD answers
//!   as GET would, without the body.
//!
//! Data is never copied for a range: a file in the server's file cache is
//! sliced, a large file is sent as file ranges the server reads when it
//! sends.
//!
//! Configuration section `static_file`:
//! - `mime_types`: extra or overriding extension → type pairs (`{ "md" = "text/markdown" }`);
//! - `default_mime_type`: type for unknown extensions (unset: 404.3);
//! - `cache_control_mode`: IIS's `clientCache` modes, `NoControl` (default),
//!   `DisableCache` (`Cache-Control: no-cache`), `UseMaxAge`
//!   (`Cache-Control: max-age=<max_age>`), `UseExpires` (`Expires: <expires>`);
//! - `max_age`: seconds for `UseMaxAge`; set without a mode, it means
//!   `UseMaxAge` (the key predates the modes);
//! - `expires`: an HTTP date for `UseExpires`;
//! - `allow_hidden` (default false): when false, a URL with a segment
//!   starting with `.` (file or directory) answers 404.8;
//! - `follow_symlinks` (default true): when false, a path with a symbolic
//!   link below the site root answers 404.
//!
//! In a child request, the module that started it may choose the
//! `Content-Type` through [`CONTENT_TYPE_VARIABLE`] (the gateways do, for
//! an application's `X-Accel-Redirect`).

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use riis_pipeline::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    EntityChunk, HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, ResourceInfo, ResourceKind, Section,
    ServerInfo,
};
use serde::{Deserialize, Deserializer};

/// Files up to this size are read into memory in one call; larger ones are
/// handed to the server as a file range and streamed.
const READ_INTO_MEMORY_LIMIT: u64 = 64 * 1024;

/// Most ranges one `Range` header may ask for; more and the whole file is
/// sent (200).
pub const MAX_RANGES: usize = 100;

/// IIS's `clientCache/@cacheControlMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheControlMode {
    /// No cache header.
    NoControl,
    /// `Cache-Control: no-cache`.
    DisableCache,
    /// `Cache-Control: max-age=<max_age>`.
    UseMaxAge,
    /// `Expires: <expires>`.
    UseExpires,
}

impl<'de> Deserialize<'de> for CacheControlMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        [
            ("NoControl", Self::NoControl),
            ("DisableCache", Self::DisableCache),
            ("UseMaxAge", Self::UseMaxAge),
            ("UseExpires", Self::UseExpires),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&s))
        .map(|(_, m)| m)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a cache control mode (NoControl, DisableCache, UseMaxAge, UseExpires)"
            ))
        })
    }
}

/// An HTTP date from the configuration, checked and kept in its canonical
/// form.
fn http_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderValue>, D::Error> {
    let s = String::deserialize(d)?;
    let date = httpdate::parse_http_date(&s).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an HTTP date (like `Fri, 01 Jan 2100 00:00:00 GMT`)"
        ))
    })?;
    HeaderValue::try_from(httpdate::fmt_http_date(date))
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Whether `t` can go out as a Content-Type: `type/subtype`, and a valid
/// header value (a control character would be refused at every request).
fn is_media_type(t: &str) -> bool {
    HeaderValue::from_str(t).is_ok()
        && t.split_once('/')
            .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
}

/// `mime_types`, each type checked.
fn media_type_map<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    let map = HashMap::<String, String>::deserialize(d)?;
    if let Some((ext, t)) = map.iter().find(|(_, t)| !is_media_type(t)) {
        return Err(serde::de::Error::custom(format!(
            "`{}` (for `{ext}`) is not a media type like `text/plain`",
            t.escape_debug()
        )));
    }
    Ok(map)
}

/// `default_mime_type`, checked.
fn media_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = String::deserialize(d)?;
    if !is_media_type(&t) {
        return Err(serde::de::Error::custom(format!(
            "`{}` is not a media type like `application/octet-stream`",
            t.escape_debug()
        )));
    }
    Ok(Some(t))
}

/// The `static_file` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticFileConfig {
    /// Extension (without dot, any case) → MIME type, consulted first.
    #[serde(deserialize_with = "media_type_map")]
    pub mime_types: HashMap<String, String>,
    /// MIME type for extensions nobody knows; `None` refuses them with 404.3.
    #[serde(deserialize_with = "media_type")]
    pub default_mime_type: Option<String>,
    /// Which cache header to send; `None` is `UseMaxAge` when `max_age` is
    /// set and `NoControl` otherwise.
    pub cache_control_mode: Option<CacheControlMode>,
    /// Seconds for `Cache-Control: max-age`.
    pub max_age: Option<u64>,
    /// The `Expires` date for `UseExpires`.
    #[serde(deserialize_with = "http_date")]
    pub expires: Option<HeaderValue>,
    /// Whether URLs with a segment starting with `.` are served.
    pub allow_hidden: bool,
    /// Whether paths through symbolic links under the site root are served.
    pub follow_symlinks: bool,
}

impl Default for StaticFileConfig {
    fn default() -> Self {
        Self {
            mime_types: HashMap::new(),
            default_mime_type: None,
            cache_control_mode: None,
            max_age: None,
            expires: None,
            allow_hidden: false,
            follow_symlinks: true,
        }
    }
}

impl StaticFileConfig {
    /// The mode in effect.
    pub fn mode(&self) -> CacheControlMode {
        match (self.cache_control_mode, self.max_age) {
            (Some(m), _) => m,
            (None, Some(_)) => CacheControlMode::UseMaxAge,
            (None, None) => CacheControlMode::NoControl,
        }
    }

    /// The cache header the mode asks for, if any.
    fn cache_header(&self) -> Option<(header::HeaderName, HeaderValue)> {
        match self.mode() {
            CacheControlMode::NoControl => None,
            CacheControlMode::DisableCache => {
                Some((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            }
            CacheControlMode::UseMaxAge => {
                let age = self.max_age?;
                HeaderValue::try_from(format!("max-age={age}"))
                    .ok()
                    .map(|v| (header::CACHE_CONTROL, v))
            }
            CacheControlMode::UseExpires => self.expires.clone().map(|v| (header::EXPIRES, v)),
        }
    }
}

/// The module instance.
pub struct StaticFile {
    config: Section<StaticFileConfig>,
}

fn status(
    ctx: &mut HttpContext,
    code: StatusCode,
    substatus: u16,
    hresult: u32,
) -> RequestNotificationStatus {
    // Headers earlier modules set are kept; the entity is replaced.
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.set_error_status(
        code,
        code.canonical_reason().unwrap_or(""),
        substatus,
        hresult,
    );
    RequestNotificationStatus::FinishRequest
}

/// Content types of the extensions sites serve most, ready as header values,
/// so the common request needs neither a lookup in the full table nor an
/// allocation.
static COMMON_TYPES: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    [
        ("html", "text/html"),
        ("htm", "text/html"),
        ("css", "text/css"),
        ("js", "text/javascript"),
        ("mjs", "text/javascript"),
        ("json", "application/json"),
        ("map", "application/json"),
        ("txt", "text/plain"),
        ("xml", "text/xml"),
        ("csv", "text/csv"),
        ("md", "text/markdown"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
        ("ico", "image/x-icon"),
        ("woff", "font/woff"),
        ("woff2", "font/woff2"),
        ("ttf", "font/ttf"),
        ("otf", "font/otf"),
        ("wasm", "application/wasm"),
        ("pdf", "application/pdf"),
        ("zip", "application/zip"),
        ("gz", "application/gzip"),
        ("mp4", "video/mp4"),
        ("webm", "video/webm"),
        ("mp3", "audio/mpeg"),
        ("ogg", "audio/ogg"),
    ]
    .into_iter()
    .map(|(ext, t)| (ext, HeaderValue::from_static(t)))
    .collect()
});

/// Extensions of server-side code, configuration, keys and data files.
/// The full type table knows many of them (`php`, `config`, `sql` …), and
/// serving one would hand out source or secrets where the handler meant to
/// run it is missing or misconfigured; IIS answers them 404.3, and so does
/// StaticFile unless the location's `mime_types` names them.
const SERVER_SIDE_EXTENSIONS: &[&str] = &[
    "asa",
    "asax",
    "ascx",
    "ashx",
    "asmx",
    "asp",
    "aspx",
    "backup",
    "bak",
    "bash",
    "bk",
    "browser",
    "cgi",
    // nginx's, Apache's and most Linux services' configuration (`app.conf`,
    // `my.cnf`), as likely under a copied site as `web.config` is.
    "cnf",
    "conf",
    "config",
    "cs",
    "csproj",
    "db",
    "db3",
    "dist",
    "env",
    "inc",
    "ini",
    "java",
    "jsp",
    "key",
    "ldb",
    "ldf",
    "licx",
    "log",
    "master",
    "mdb",
    "mdf",
    "old",
    "orig",
    "p12",
    "pem",
    "pfx",
    "phar",
    "php",
    "php3",
    "php4",
    "php5",
    "php7",
    "php8",
    "phps",
    "phtml",
    "pl",
    "pm",
    "py",
    "pyc",
    "pyo",
    "rb",
    "resources",
    "resx",
    // nano's copy of a file it could not save.
    "save",
    "sh",
    "sitemap",
    "skin",
    "sql",
    "sqlite",
    "sqlite3",
    // vim's swap files (a second editor's is `.swo`, a third's `.swn`).
    "swn",
    "swo",
    "swp",
    "tmp",
    "toml",
    "vb",
    "vbproj",
    "webinfo",
    "yaml",
    "yml",
];

/// Whether `ext` (any case) is one of [`SERVER_SIDE_EXTENSIONS`], or ends
/// in `~`: an editor's backup copy (`wp-config.php~`), whatever the file
/// it copies.
fn is_server_side(ext: &str) -> bool {
    ext.ends_with('~')
        || SERVER_SIDE_EXTENSIONS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(ext))
}

/// The server variable a module sets on a child request it starts to have
/// StaticFile answer with that `Content-Type` whatever the file's extension,
/// even a file without one or with one it knows no type for: the module
/// chose the file and knows what it holds. Extensions of server-side code
/// and secrets (`.php`, `.config`, `.pem`, …) are still refused with
/// 404.3 unless the location's `mime_types` names them: a script that
/// names a file from its query must not hand out the site's source. The gateways set it from an application's
/// `Content-Type` when they follow its `X-Accel-Redirect`, as nginx keeps
/// that header. Read in child requests only, so a client's request pays
/// nothing for it.
pub const CONTENT_TYPE_VARIABLE: &str = "STATIC_FILE_CONTENT_TYPE";

/// The `Content-Type` the module that started this child request chose
/// (see [`CONTENT_TYPE_VARIABLE`]).
fn given_content_type(ctx: &HttpContext) -> Option<HeaderValue> {
    if ctx.child_depth() == 0 {
        return None;
    }
    let given = ctx.server_variable(CONTENT_TYPE_VARIABLE)?;
    HeaderValue::try_from(given.as_ref()).ok()
}

impl StaticFile {
    /// The Content-Type for `path`: the location's own map, then the type
    /// the module that started a child request chose, the common table,
    /// the full table (never for [`SERVER_SIDE_EXTENSIONS`], which are
    /// refused whatever type was chosen), then the location's default.
    fn content_type(&self, ctx: &HttpContext, path: &Path) -> Option<HeaderValue> {
        let config = ctx.config(self.config);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !config.mime_types.is_empty() {
            if let Some((_, t)) = config
                .mime_types
                .iter()
                .find(|(k, _)| k.trim_start_matches('.').eq_ignore_ascii_case(ext))
            {
                return HeaderValue::try_from(t.as_str()).ok();
            }
        }
        if let Some(given) = given_content_type(ctx) {
            return (!is_server_side(ext)).then_some(given);
        }
        if ext.is_empty() {
            return config
                .default_mime_type
                .as_deref()
                .and_then(|t| HeaderValue::try_from(t).ok());
        }
        if let Some(t) = COMMON_TYPES.get(ext) {
            return Some(t.clone());
        }
        let lower = ext.to_ascii_lowercase();
        if let Some(t) = COMMON_TYPES.get(lower.as_str()) {
            return Some(t.clone());
        }
        if is_server_side(&lower) {
            return None;
        }
        mime_guess::from_ext(ext)
            .first_raw()
            .map(HeaderValue::from_static)
            .or_else(|| {
                config
                    .default_mime_type
                    .as_deref()
                    .and_then(|t| HeaderValue::try_from(t).ok())
            })
    }
}

/// The validators of the file being served.
#[derive(Debug, Clone, Default)]
struct Validators {
    /// The strong ETag, quotes included.
    etag: Option<HeaderValue>,
    /// Last modification, in whole seconds since the epoch (the precision
    /// of `Last-Modified`).
    modified: Option<u64>,
    /// `modified` is a strong validator (RFC 9110 §8.8.2.2): at least a
    /// second before now, so a later write in the same second cannot share
    /// it. Only then may an `If-Range` date match.
    modified_is_strong: bool,
    /// No resource is there (a PUT that would make one): `If-Match: *`
    /// fails and `If-None-Match: *` holds (RFC 9110 §13.1.1, §13.1.2).
    missing: bool,
}

impl Validators {
    /// From the file's length, modification time and status change time
    /// (0 when unknown).
    fn new(len: u64, modified: Option<SystemTime>, changed: u128) -> Self {
        let Some(m) = modified else {
            return Self::default();
        };
        let nanos = m
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let now = now_secs();
        let secs = http_date_secs(m);
        Self {
            missing: false,
            etag: etag_value(nanos, len, changed),
            // A modification time in the future (a clock set wrong where
            // the file was made, an archive's dates) goes out as now: RFC
            // 9110 §8.8.2.1 forbids a Last-Modified later than the Date.
            modified: secs.map(|secs| secs.min(now)),
            modified_is_strong: secs.is_some_and(|secs| secs < now),
        }
    }
}

impl Validators {
    /// The ETag as text, to compare a request's tags with.
    fn etag(&self) -> Option<&str> {
        self.etag.as_ref()?.to_str().ok()
    }
}

/// Slots of a [`MadeValues`].
const MADE_SLOTS: usize = 64;

/// The last header values a thread made from keys of type `K`, one per
/// slot by the key's hash: making a validator's text costs hundreds of
/// instructions, finding it again a compare and a reference count.
struct MadeValues<K>([Option<(K, HeaderValue)>; MADE_SLOTS]);

impl<K: PartialEq + Copy> MadeValues<K> {
    fn new() -> Self {
        Self(std::array::from_fn(|_| None))
    }

    /// The value made from `key`, kept or made now with `make`.
    fn get_or_make(
        &mut self,
        hash: u64,
        key: K,
        make: impl FnOnce() -> Option<HeaderValue>,
    ) -> Option<HeaderValue> {
        let slot = &mut self.0[hash as usize % MADE_SLOTS];
        if let Some((made_from, value)) = slot {
            if *made_from == key {
                return Some(value.clone());
            }
        }
        let value = make()?;
        *slot = Some((key, value.clone()));
        Some(value)
    }
}

/// The strong ETag header value of a file (formatting its hex digits costs
/// about 600 instructions, 3% of a cached static request), kept per thread
/// by the file's times and length.
fn etag_value(nanos: u128, len: u64, changed: u128) -> Option<HeaderValue> {
    thread_local! {
        static MADE: std::cell::RefCell<MadeValues<(u128, u64, u128)>> =
            std::cell::RefCell::new(MadeValues::new());
    }
    MADE.with_borrow_mut(|made| {
        made.get_or_make((nanos as u64) ^ len, (nanos, len, changed), || {
            HeaderValue::try_from(strong_etag(nanos, len, changed)).ok()
        })
    })
}

/// `Last-Modified` for a time in whole seconds since the epoch (formatting
/// a date costs about 700 instructions), kept per thread by the second: a
/// site's files share few modification times.
fn last_modified(secs: u64) -> Option<HeaderValue> {
    thread_local! {
        static MADE: std::cell::RefCell<MadeValues<u64>> =
            std::cell::RefCell::new(MadeValues::new());
    }
    MADE.with_borrow_mut(|made| {
        made.get_or_make(secs, secs, || {
            let date = UNIX_EPOCH + Duration::from_secs(secs);
            HeaderValue::try_from(httpdate::fmt_http_date(date)).ok()
        })
    })
}

/// The time now, in whole seconds since the epoch, from the coarse clock
/// (a second is all a Last-Modified holds, and it runs on every static
/// response).
fn now_secs() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => u64::try_from(t.tv_sec()).unwrap_or(0),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// `t` in whole seconds since the epoch, when an HTTP date can express it:
/// httpdate formats the years 1970 to 9999 only (and panics outside them).
pub(crate) fn http_date_secs(t: SystemTime) -> Option<u64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < 253_402_300_800).then_some(secs)
}

/// The strong ETag StaticFile gives the file `meta` describes, quotes
/// included: for WebDAV's `getetag` and its `If` conditions, which must
/// match what a GET of the file gets.
pub(crate) fn etag_of(meta: &std::fs::Metadata) -> Option<String> {
    let info = riis_pipeline::ResourceInfo::of_file(meta);
    let nanos = info
        .modified?
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    Some(strong_etag(nanos, info.len, info.changed))
}

/// `"<modified nanoseconds>-<length>"` in lowercase hex, quotes included,
/// with `-<changed nanoseconds>` when the status change time is known: a
/// strong ETag must change whenever the bytes do (RFC 9110 §8.8.3), and a
/// file rewritten with its old length and modification time keeps those
/// two. Written digit by digit: it runs for every static response, and
/// `format!` cost about 300 instructions for it.
fn strong_etag(nanos: u128, len: u64, changed: u128) -> String {
    let mut tag = String::with_capacity(2 + 32 + 1 + 16 + 1 + 32);
    tag.push('"');
    push_hex(&mut tag, nanos);
    tag.push('-');
    push_hex(&mut tag, u128::from(len));
    // Equal to the modification time (a file written and left alone), the
    // change time adds nothing: the tag stays as short as it was.
    if changed != 0 && changed != nanos {
        tag.push('-');
        push_hex(&mut tag, changed);
    }
    tag.push('"');
    tag
}

/// Appends `value` in lowercase hex without leading zeros ("0" for zero).
fn push_hex(out: &mut String, mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = DIGITS[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    for &digit in &buf[start..] {
        out.push(char::from(digit));
    }
}

/// An entity tag from a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    /// The opaque tag, quotes included.
    opaque: &'a str,
}

impl Tag<'_> {
    /// RFC 9110 §8.8.3.2 strong comparison against our (strong) tag.
    fn strong_eq(&self, ours: &str) -> bool {
        !self.weak && self.opaque == ours
    }

    /// Weak comparison: the opaque tags match, weak or not.
    fn weak_eq(&self, ours: &str) -> bool {
        self.opaque == ours
    }
}

/// The value of `If-Match` or `If-None-Match`.
#[derive(Debug, PartialEq, Eq)]
enum TagList<'a> {
    /// `*`.
    Any,
    /// The tags that parsed; malformed members are dropped (they can match
    /// nothing).
    Tags(Vec<Tag<'a>>),
}

/// Parses one entity tag at the start of `s`; returns it and the rest.
fn parse_tag(s: &str) -> Option<(Tag<'_>, &str)> {
    let (weak, rest) = match s.strip_prefix("W/") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let body = rest.strip_prefix('"')?;
    let end = body.find('"')?;
    let opaque = &rest[..end + 2];
    // etagc: %x21 / %x23-7E / obs-text.
    if !body[..end].bytes().all(|b| b == 0x21 || b >= 0x23) || body[..end].contains('\x7f') {
        return None;
    }
    Some((Tag { weak, opaque }, &rest[end + 2..]))
}

/// Parses `*` or `1#entity-tag` from every line of a header.
fn parse_tag_list<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> TagList<'a> {
    let mut tags = Vec::new();
    for value in values {
        let Ok(mut s) = value.to_str() else { continue };
        loop {
            s = s.trim_start_matches([' ', '\t', ',']);
            if s.is_empty() {
                break;
            }
            if let Some(rest) = s.strip_prefix('*') {
                if rest.trim_start_matches([' ', '\t']).is_empty()
                    || rest.trim_start_matches([' ', '\t']).starts_with(',')
                {
                    return TagList::Any;
                }
            }
            if let Some((tag, rest)) = parse_tag(s) {
                tags.push(tag);
                s = rest;
            }
            // Skip to the next member (after a malformed one, or junk
            // after a tag).
            let rest = s.trim_start_matches([' ', '\t']);
            if rest.starts_with(',') || rest.is_empty() {
                s = rest;
            } else {
                // Skip the malformed member up to the next comma outside quotes.
                let mut quoted = false;
                let mut cut = rest.len();
                for (i, c) in rest.char_indices() {
                    match c {
                        '"' => quoted = !quoted,
                        ',' if !quoted => {
                            cut = i;
                            break;
                        }
                        _ => {}
                    }
                }
                s = &rest[cut..];
            }
        }
    }
    TagList::Tags(tags)
}

/// The single HTTP date of a header, or `None` when it is missing, repeated
/// or not a valid date (RFC 9110 §13.1.3, §13.1.4: such a header is
/// ignored).
fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let date = httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()?;
    date.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What the preconditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precondition {
    /// Go on; `range` says whether a `Range` header may be honoured (false
    /// when `If-Range` failed).
    Proceed { range: bool },
    /// 304.
    NotModified,
    /// 412.
    Failed,
}

/// RFC 9110 §13.2.2 for a method that changes a resource on disk
/// (WebDav's PUT, DELETE, MOVE, PROPPATCH, …): `false` when `If-Match`,
/// `If-Unmodified-Since` or `If-None-Match` says not to perform it (412).
/// `meta`: the resource as it is now, `None` when there is none. A file's
/// ETag is the one StaticFile and WebDav's `getetag` give it; a folder
/// has none, only its modification time.
pub(crate) fn change_preconditions_hold(
    headers: &HeaderMap,
    method: &Method,
    meta: Option<&std::fs::Metadata>,
) -> bool {
    if !headers.contains_key(header::IF_MATCH)
        && !headers.contains_key(header::IF_NONE_MATCH)
        && !headers.contains_key(header::IF_UNMODIFIED_SINCE)
    {
        return true;
    }
    let v = match meta {
        None => Validators {
            missing: true,
            ..Validators::default()
        },
        Some(meta) => {
            let info = riis_pipeline::ResourceInfo::of_file(meta);
            let mut v = Validators::new(info.len, info.modified, info.changed);
            if !meta.is_file() {
                v.etag = None;
            }
            v
        }
    };
    evaluate_preconditions(headers, method, &v) != Precondition::Failed
}

/// What a request's preconditions (RFC 9110 §13.2) decide for a
/// representation that has neither an ETag nor a modification date, such
/// as a generated page: `If-Match` with tags fails (412), `If-None-Match: *`
/// matches it (304 for GET and HEAD, 412 otherwise); `None` to go on.
pub(crate) fn preconditions_without_validators(
    headers: &HeaderMap,
    method: &Method,
) -> Option<StatusCode> {
    match evaluate_preconditions(headers, method, &Validators::default()) {
        Precondition::Proceed { .. } => None,
        Precondition::NotModified => Some(StatusCode::NOT_MODIFIED),
        Precondition::Failed => Some(StatusCode::PRECONDITION_FAILED),
    }
}

/// RFC 9110 §13.2.2, steps 1 to 5.
fn evaluate_preconditions(headers: &HeaderMap, method: &Method, v: &Validators) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    // 1. If-Match.
    if headers.contains_key(header::IF_MATCH) {
        let ok = match parse_tag_list(headers.get_all(header::IF_MATCH).iter()) {
            TagList::Any => !v.missing,
            TagList::Tags(tags) => v
                .etag()
                .is_some_and(|ours| tags.iter().any(|t| t.strong_eq(ours))),
        };
        if !ok {
            return Precondition::Failed;
        }
    } else if let (Some(date), Some(modified)) =
        // 2. If-Unmodified-Since, only without If-Match.
        (
            header_date(headers, header::IF_UNMODIFIED_SINCE),
            v.modified,
        )
    {
        if modified > date {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match.
    if headers.contains_key(header::IF_NONE_MATCH) {
        let matched = match parse_tag_list(headers.get_all(header::IF_NONE_MATCH).iter()) {
            TagList::Any => !v.missing,
            TagList::Tags(tags) => v
                .etag()
                .is_some_and(|ours| tags.iter().any(|t| t.weak_eq(ours))),
        };
        if matched {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        // 4. If-Modified-Since, only for GET/HEAD without If-None-Match.
        if let (Some(date), Some(modified)) =
            (header_date(headers, header::IF_MODIFIED_SINCE), v.modified)
        {
            if modified <= date {
                return Precondition::NotModified;
            }
        }
    }
    // 5. If-Range, when there is a Range to condition.
    let range = if get_or_head && headers.contains_key(header::RANGE) {
        match headers.get(header::IF_RANGE) {
            None => true,
            Some(value) => if_range_holds(value, v),
        }
    } else {
        true
    };
    Precondition::Proceed { range }
}

/// RFC 9110 §13.1.5: a strong ETag match, or a date equal to Last-Modified.
fn if_range_holds(value: &HeaderValue, v: &Validators) -> bool {
    let Ok(s) = value.to_str() else { return false };
    let s = s.trim_matches([' ', '\t']);
    if s.starts_with('"') || s.starts_with("W/") {
        return match (parse_tag(s), v.etag()) {
            (Some((tag, rest)), Some(ours)) => rest.trim().is_empty() && tag.strong_eq(ours),
            _ => false,
        };
    }
    // A date is a validator only when it is a strong one (RFC 9110
    // §13.1.5): a file written in the second it was sent in may have been
    // written again within that second.
    match (httpdate::parse_http_date(s), v.modified) {
        (Ok(date), Some(modified)) if v.modified_is_strong => date
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() == modified),
        _ => false,
    }
}

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable `Range`: send the whole representation (200).
    Ignore,
    /// No range is satisfiable (416).
    Unsatisfiable,
    /// Satisfiable ranges as inclusive `(first, last)` byte positions.
    Ranges(Vec<(u64, u64)>),
}

fn parse_pos(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64: as large as it gets (beyond any file).
    Some(s.parse().unwrap_or(u64::MAX))
}

/// RFC 9110 §14.1: parses `bytes=…` against a representation of `len`
/// bytes and applies the abuse guard described in the module docs.
fn parse_range(headers: &HeaderMap, len: u64) -> RangeRequest {
    let mut values = headers.get_all(header::RANGE).iter();
    let Some(value) = values.next() else {
        return RangeRequest::Ignore;
    };
    if values.next().is_some() {
        return RangeRequest::Ignore;
    }
    let Ok(value) = value.to_str() else {
        return RangeRequest::Ignore;
    };
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Ignore;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeRequest::Ignore;
    }
    let mut specs = 0usize;
    let mut ranges = Vec::new();
    for spec in set.split(',') {
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return RangeRequest::Ignore;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return RangeRequest::Ignore;
        };
        if first.is_empty() {
            // suffix-range
            let Some(n) = parse_pos(last) else {
                return RangeRequest::Ignore;
            };
            if n > 0 && len == 0 {
                // Satisfiable on an empty file (RFC 9110 §14.1.1), but no
                // 206 can carry zero bytes: the whole (empty) file, 200.
                return RangeRequest::Ignore;
            }
            if n > 0 {
                ranges.push((len - n.min(len), len - 1));
            }
            continue;
        }
        let Some(first) = parse_pos(first) else {
            return RangeRequest::Ignore;
        };
        let last = if last.is_empty() {
            None
        } else {
            match parse_pos(last) {
                Some(l) if l >= first => Some(l),
                _ => return RangeRequest::Ignore,
            }
        };
        if first < len {
            ranges.push((first, last.map_or(len - 1, |l| l.min(len - 1))));
        }
    }
    if specs == 0 {
        return RangeRequest::Ignore;
    }
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
        // Overlap: sort and coalesce overlapping and adjacent ranges, so the
        // response is never larger than the file plus part headers.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
        for (a, b) in sorted {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        ranges = merged;
    }
    RangeRequest::Ranges(ranges)
}

/// A random multipart boundary.
fn boundary() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new().hash_one(n);
    // Fixed width: a HEAD must announce the length its GET will have, and
    // the two get different boundaries.
    format!("riis-{random:016x}{n:016x}")
}

/// A piece of a range response body.
enum Piece {
    Bytes(Bytes),
    /// `(offset, length)` of the file.
    Data(u64, u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::Data(_, l) => *l,
        }
    }
}

/// The body of a `multipart/byteranges` response (RFC 9110 §14.6).
fn multipart(boundary: &str, content_type: &[u8], ranges: &[(u64, u64)], len: u64) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let mut head = Vec::with_capacity(96 + boundary.len() + content_type.len());
        if i > 0 {
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"--");
        head.extend_from_slice(boundary.as_bytes());
        head.extend_from_slice(b"\r\nContent-Type: ");
        head.extend_from_slice(content_type);
        head.extend_from_slice(
            format!("\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n").as_bytes(),
        );
        pieces.push(Piece::Bytes(Bytes::from(head)));
        pieces.push(Piece::Data(a, b - a + 1));
    }
    pieces.push(Piece::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    pieces
}

/// The answer to a file that cannot be opened: missing (404: no such name,
/// a file where a folder is, a name too long, a link not followed), not
/// the server's to read (403), or the server's own failure (500: out of
/// descriptors or memory, an I/O error), which must not tell a client, or
/// a cache in front, that an existing file is gone. nginx answers the
/// same three.
pub(crate) fn open_failure(ctx: &mut HttpContext, e: &std::io::Error) -> RequestNotificationStatus {
    use std::io::ErrorKind;
    let missing = matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::InvalidFilename
    ) || e.raw_os_error() == Some(nix::libc::ELOOP)
        // `open_without_symlinks`' refusal of a `..` or root component.
        || e.kind() == ErrorKind::InvalidInput;
    if missing {
        return status(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002);
    }
    if e.kind() == ErrorKind::PermissionDenied {
        return status(ctx, StatusCode::FORBIDDEN, 0, 0x8007_0005);
    }
    static OPEN_FAILURES: crate::LogGate = crate::LogGate::new();
    if let Some(held_back) = OPEN_FAILURES.pass() {
        tracing::error!(path = %ctx.physical_path().display(), error = %e, held_back, "StaticFile: cannot open the file");
    }
    // The Win32 errors IIS would report; errno values are not theirs.
    let hresult = match e.raw_os_error() {
        Some(nix::libc::EMFILE | nix::libc::ENFILE) => 0x8007_0004, // ERROR_TOO_MANY_OPEN_FILES
        Some(nix::libc::ENOMEM) => 0x8007_000E,                     // E_OUTOFMEMORY
        _ => ModuleError::E_FAIL,
    };
    status(ctx, StatusCode::INTERNAL_SERVER_ERROR, 0, hresult)
}

/// Opens `path` without following a symbolic link anywhere below `root`:
/// each component is opened relative to the directory before it with
/// `O_NOFOLLOW`, so a link swapped in while the walk runs is refused as well
/// (there is no window between a check and the open). A path outside the
/// root (a MapPath module put it there) has only its last component held to
/// this. The last component is opened non-blocking, so a FIFO cannot stall
/// the worker.
pub(crate) fn open_without_symlinks(root: &Path, path: &Path) -> std::io::Result<File> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::Mode;
    let through = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let last = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let (start, relative) = match path.strip_prefix(root) {
        Ok(relative) => (root, relative),
        Err(_) => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let name = path.file_name().map(Path::new).unwrap_or(Path::new(""));
            (parent, name)
        }
    };
    let names = relative
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((final_name, dirs)) = names.split_last() else {
        // The root itself.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        return Ok(File::from(open(start, flags, Mode::empty())?));
    };
    // Where the walk starts is trusted as configured (or as MapPath chose).
    let mut dir = open(start, through - OFlag::O_NOFOLLOW, Mode::empty())?;
    for name in dirs {
        dir = openat(&dir, *name, through, Mode::empty())?;
    }
    Ok(File::from(openat(&dir, *final_name, last, Mode::empty())?))
}

/// Where a file's bytes come from.
enum Source {
    Memory(Bytes),
    File(Arc<File>),
}

impl Source {
    fn chunk(&self, offset: u64, length: u64) -> EntityChunk {
        match self {
            Self::Memory(b) => {
                EntityChunk::Memory(b.slice(offset as usize..(offset + length) as usize))
            }
            Self::File(f) => EntityChunk::File {
                file: f.clone(),
                offset,
                length,
            },
        }
    }
}

impl StaticFile {
    /// The file's bytes: the server's cached copy, a read of a small file,
    /// or the open file.
    /// `own`: a file this module opened itself (the probe's descriptor and
    /// cached copy were then set aside), used instead.
    fn source(
        ctx: &mut HttpContext,
        len: u64,
        own: Option<File>,
    ) -> Result<Source, RequestNotificationStatus> {
        if let Some(content) = ctx.take_cached_content() {
            // The server's file cache already holds this version of the file.
            if content.len() as u64 == len {
                // It may hold it open too: where file chunks are sent
                // without a copy (sendfile), a large one goes from there.
                if len > READ_INTO_MEMORY_LIMIT && ctx.request().sends_files_without_copy() {
                    if let Some(file) = ctx.take_opened_file() {
                        return Ok(Source::File(file));
                    }
                }
                return Ok(Source::Memory(content));
            }
        }
        let opened = match own.map(Arc::new).or_else(|| ctx.take_opened_file()) {
            Some(f) => Ok(f),
            // Another module took the probe's descriptor (or the probe
            // could not open it): open the path again, without waiting on
            // a FIFO swapped in meanwhile, as the probe opens.
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(ctx.physical_path())
                    .map(Arc::new)
            }
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) => return Err(open_failure(ctx, &e)),
        };
        if len <= READ_INTO_MEMORY_LIMIT {
            // One positioned read of the length the probe saw: no seek, no
            // extra read to find the end.
            let mut data = vec![0; len as usize];
            if file.read_exact_at(&mut data, 0).is_err() {
                return Err(status(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    ModuleError::E_FAIL,
                ));
            }
            return Ok(Source::Memory(Bytes::from(data)));
        }
        Ok(Source::File(file))
    }
}

/// Whether a decoded URL path has a segment starting with `.`.
pub(crate) fn is_hidden(url: &str) -> bool {
    url.split('/').any(|s| s.starts_with('.'))
}

impl HttpModule for StaticFile {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        let (allow_hidden, follow_symlinks) = (config.allow_hidden, config.follow_symlinks);
        if !allow_hidden && is_hidden(ctx.request().url()) {
            // IIS's hidden namespace substatus.
            return status(ctx, StatusCode::NOT_FOUND, 8, 0x8007_0002);
        }
        let method = ctx.request().method().clone();
        if method != Method::GET && method != Method::HEAD {
            // A folder's URL is the handler's next modules' to answer: a
            // form's post to `./` goes to its default document (`index.php`
            // takes it), as on IIS.
            if ctx.resource_kind() == Some(ResourceKind::Directory) {
                return RequestNotificationStatus::Continue;
            }
            let code = status(
                ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                0,
                ModuleError::E_NOT_SUPPORTED,
            );
            ctx.response_mut()
                .set_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return code;
        }
        // The engine probed the path while choosing the handler; no second stat.
        let mut info = match ctx.resource_info() {
            Some(info) => info,
            // There but not ours to read: 403, as nginx answers.
            None if ctx.is_resource_denied() => {
                return status(ctx, StatusCode::FORBIDDEN, 0, 0x8007_0005)
            }
            None => return status(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
        };
        let mut own_file = None;
        if !follow_symlinks {
            // What is served is what this walk opens: the probe's
            // descriptor and the cached copy may have come through a link.
            let root = ctx.virtual_directory().physical_path.clone();
            let opened = open_without_symlinks(&root, ctx.physical_path())
                .and_then(|file| file.metadata().map(|meta| (file, meta)));
            match opened {
                Ok((file, meta)) if meta.is_file() || meta.is_dir() => {
                    drop(ctx.take_opened_file());
                    drop(ctx.take_cached_content());
                    info = if meta.is_dir() {
                        ResourceInfo::directory()
                    } else {
                        ResourceInfo::of_file(&meta)
                    };
                    own_file = Some(file);
                }
                Err(e) => return open_failure(ctx, &e),
                // A FIFO, a device: no file to serve.
                Ok(_) => return status(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
            }
        }
        if info.kind == ResourceKind::Directory {
            if ctx.request().url().ends_with('/') {
                // Left to the handler's next module (default document, listing).
                return RequestNotificationStatus::Continue;
            }
            return crate::add_trailing_slash(ctx);
        }
        let path = ctx.mapped_path().unwrap_or(Path::new(""));
        let Some(content_type) = self.content_type(ctx, path) else {
            return status(ctx, StatusCode::NOT_FOUND, 3, 0x8007_0032);
        };
        let len = info.len;
        let validators = Validators::new(len, info.modified, info.changed);
        let cache_header = ctx.config(self.config).cache_header();
        let precondition = evaluate_preconditions(ctx.request().headers(), &method, &validators);
        if precondition == Precondition::Failed {
            // Not a failure of the server's: IIS logs it with Win32 status 0.
            return status(ctx, StatusCode::PRECONDITION_FAILED, 0, 0);
        }
        let ranges = match precondition {
            Precondition::Proceed { range: true } => parse_range(ctx.request().headers(), len),
            _ => RangeRequest::Ignore,
        };
        if ranges == RangeRequest::Unsatisfiable {
            let code = status(
                ctx,
                StatusCode::RANGE_NOT_SATISFIABLE,
                0,
                ModuleError::E_INVALIDARG,
            );
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                ctx.response_mut().set_header(header::CONTENT_RANGE, v);
            }
            return code;
        }

        // The file is read (or taken from the cache) before anything about
        // it goes on the response, so one that cannot be read as probed
        // (it shrank while being rewritten) gets an error that carries
        // none of it: no validators, no range, no cache lifetime. HEAD and
        // a 304 send no body and read nothing.
        let source = if method == Method::HEAD || precondition == Precondition::NotModified {
            None
        } else {
            match Self::source(ctx, len, own_file) {
                Ok(s) => Some(s),
                Err(code) => return code,
            }
        };
        let resp = ctx.response_mut();
        resp.clear_entity();
        if let Some(v) = validators.modified.and_then(last_modified) {
            resp.set_header(header::LAST_MODIFIED, v);
        }
        if let Some(etag) = validators.etag.clone() {
            resp.set_header(header::ETAG, etag);
        }
        if let Some((name, value)) = cache_header {
            resp.set_header(name, value);
        }
        if precondition == Precondition::NotModified {
            resp.set_status(StatusCode::NOT_MODIFIED, "Not Modified");
            if method == Method::HEAD {
                // What a 200 would have carried (RFC 9110 §8.6), rather than
                // the 0 the server would put on an empty HEAD response.
                resp.set_header(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            ctx.set_request_handled();
            return RequestNotificationStatus::Continue;
        }
        // Built at compile time: the per-request call would check the bytes.
        const BYTES: HeaderValue = HeaderValue::from_static("bytes");
        resp.set_header(header::ACCEPT_RANGES, BYTES);

        // The body as pieces, so HEAD can count it without reading anything.
        let pieces = match ranges {
            RangeRequest::Ranges(r) if r.len() == 1 => {
                let (a, b) = r[0];
                resp.set_status(StatusCode::PARTIAL_CONTENT, "Partial Content");
                resp.set_header(header::CONTENT_TYPE, content_type);
                if let Ok(v) = HeaderValue::try_from(format!("bytes {a}-{b}/{len}")) {
                    resp.set_header(header::CONTENT_RANGE, v);
                }
                vec![Piece::Data(a, b - a + 1)]
            }
            RangeRequest::Ranges(r) => {
                let boundary = boundary();
                resp.set_status(StatusCode::PARTIAL_CONTENT, "Partial Content");
                if let Ok(v) =
                    HeaderValue::try_from(format!("multipart/byteranges; boundary={boundary}"))
                {
                    resp.set_header(header::CONTENT_TYPE, v);
                }
                multipart(&boundary, content_type.as_bytes(), &r, len)
            }
            _ => {
                resp.set_status(StatusCode::OK, "OK");
                resp.set_header(header::CONTENT_TYPE, content_type);
                vec![Piece::Data(0, len)]
            }
        };
        let Some(source) = source else {
            // HEAD (a 304 returned above): the body is counted, not read.
            let total: u64 = pieces.iter().map(Piece::len).sum();
            resp.set_header(header::CONTENT_LENGTH, HeaderValue::from(total));
            ctx.set_request_handled();
            return RequestNotificationStatus::Continue;
        };
        for piece in pieces {
            match piece {
                Piece::Bytes(b) => resp.write(b),
                Piece::Data(offset, length) => resp.write(source.chunk(offset, length)),
            }
        }
        // Handled: the static handler's next modules do not run, but the rest
        // of the pipeline (caching, logging) does.
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<StaticFileConfig>("static_file")?;
    registration.set_request_notifications(
        move || StaticFile { config },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_backups_of_server_side_files_count_as_server_side() {
        for ext in [
            "php", "PHP", "php~", "html~", "bak", "swp", "swo", "save", "dist", "sqlite3",
            "backup", "bk", "tmp",
        ] {
            assert!(is_server_side(ext), "{ext}");
        }
        for ext in ["html", "css", "js", "txt", "png", "dis"] {
            assert!(!is_server_side(ext), "{ext}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn range(value: &str, len: u64) -> RangeRequest {
        parse_range(&headers(&[("range", value)]), len)
    }

    #[test]
    fn range_headers_parse_per_rfc_9110() {
        use RangeRequest::*;
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-4", 10, Ranges(vec![(0, 4)])),
            ("bytes=5-", 10, Ranges(vec![(5, 9)])),
            ("bytes=-3", 10, Ranges(vec![(7, 9)])),
            ("bytes=-30", 10, Ranges(vec![(0, 9)])),
            ("bytes=8-100", 10, Ranges(vec![(8, 9)])),
            ("BYTES=0-0", 10, Ranges(vec![(0, 0)])),
            ("bytes=0-0, -1", 10, Ranges(vec![(0, 0), (9, 9)])),
            ("bytes=5-6,0-1", 10, Ranges(vec![(5, 6), (0, 1)])),
            ("bytes=0-4,3-6,8-", 10, Ranges(vec![(0, 6), (8, 9)])),
            ("bytes=0-4,5-6,2-2", 10, Ranges(vec![(0, 6)])),
            ("bytes=, 0-1 ,", 10, Ranges(vec![(0, 1)])),
            ("bytes=0-1,20-30", 10, Ranges(vec![(0, 1)])),
            ("bytes=99999999999999999999999-", 10, Unsatisfiable),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            // A suffix of an empty file is satisfiable but has no bytes: 200.
            ("bytes=-5", 0, Ignore),
            ("bytes=0-0, -5", 0, Ignore),
            ("bytes=5-4", 10, Ignore),
            ("bytes=a-b", 10, Ignore),
            ("bytes=1", 10, Ignore),
            ("bytes=", 10, Ignore),
            ("bytes=--1", 10, Ignore),
            ("bytes=0x1-2", 10, Ignore),
            ("items=0-1", 10, Ignore),
            ("bytes 0-1", 10, Ignore),
        ];
        for (value, len, expected) in cases {
            assert_eq!(&range(value, *len), expected, "{value} of {len}");
        }
        let many = format!(
            "bytes={}",
            (0..101)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(range(&many, 1000), Ignore);
        let hundred = format!(
            "bytes={}",
            (0..100)
                .map(|i| format!("{}-{}", i * 2, i * 2))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(matches!(range(&hundred, 1000), Ranges(r) if r.len() == 100));
    }

    #[test]
    fn tag_lists_keep_quoted_commas_and_skip_junk() {
        let h = headers(&[
            ("if-match", "W/\"a,b\", junk, \"c\""),
            ("if-match", "\"d\""),
        ]);
        let tags = parse_tag_list(h.get_all("if-match").iter());
        assert_eq!(
            tags,
            TagList::Tags(vec![
                Tag {
                    weak: true,
                    opaque: "\"a,b\""
                },
                Tag {
                    weak: false,
                    opaque: "\"c\""
                },
                Tag {
                    weak: false,
                    opaque: "\"d\""
                },
            ])
        );
        let h = headers(&[("if-none-match", " * ")]);
        assert_eq!(
            parse_tag_list(h.get_all("if-none-match").iter()),
            TagList::Any
        );
    }

    #[test]
    fn preconditions_follow_the_rfc_order() {
        let v = Validators {
            etag: Some(HeaderValue::from_static("\"x\"")),
            modified: Some(1_000_000),
            modified_is_strong: true,
            missing: false,
        };
        let date = |s: u64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s));
        let (old, now, new) = (date(999_999), date(1_000_000), date(1_000_001));
        use Precondition::*;
        type Row<'a> = (Vec<(&'a str, &'a str)>, Method, Precondition);
        let cases: Vec<Row> = vec![
            (
                vec![("if-match", "\"y\""), ("if-none-match", "\"x\"")],
                Method::GET,
                Failed,
            ),
            (vec![("if-match", "W/\"x\"")], Method::GET, Failed),
            (
                vec![("if-match", "\"x\""), ("if-unmodified-since", &old)],
                Method::GET,
                Proceed { range: true },
            ),
            (vec![("if-unmodified-since", &old)], Method::GET, Failed),
            (
                vec![("if-unmodified-since", &now)],
                Method::GET,
                Proceed { range: true },
            ),
            (
                vec![("if-none-match", "W/\"x\"")],
                Method::HEAD,
                NotModified,
            ),
            (vec![("if-none-match", "*")], Method::POST, Failed),
            (
                vec![("if-none-match", "\"y\""), ("if-modified-since", &new)],
                Method::GET,
                Proceed { range: true },
            ),
            (vec![("if-modified-since", &now)], Method::GET, NotModified),
            (
                vec![("if-modified-since", &old)],
                Method::GET,
                Proceed { range: true },
            ),
            (
                vec![("if-modified-since", "garbage")],
                Method::GET,
                Proceed { range: true },
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "\"x\"")],
                Method::GET,
                Proceed { range: true },
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", "W/\"x\"")],
                Method::GET,
                Proceed { range: false },
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", &now)],
                Method::GET,
                Proceed { range: true },
            ),
            (
                vec![("range", "bytes=0-1"), ("if-range", &new)],
                Method::GET,
                Proceed { range: false },
            ),
        ];
        for (h, method, expected) in cases {
            assert_eq!(
                evaluate_preconditions(&headers(&h), &method, &v),
                expected,
                "{h:?} {method}"
            );
        }
    }

    #[test]
    fn cache_modes_pick_their_header() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let de = |s: &'static str| -> StrDeserializer<'static, Error> { s.into_deserializer() };
        let config = |mode: Option<&'static str>, max_age, expires: Option<&'static str>| {
            StaticFileConfig {
                cache_control_mode: mode.map(|m| CacheControlMode::deserialize(de(m)).unwrap()),
                max_age,
                expires: expires.and_then(|e| http_date(de(e)).unwrap()),
                ..StaticFileConfig::default()
            }
            .cache_header()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        };
        assert_eq!(config(None, None, None), None);
        assert_eq!(
            config(None, Some(60), None).unwrap(),
            "cache-control: max-age=60"
        );
        assert_eq!(config(Some("NoControl"), Some(60), None), None);
        assert_eq!(
            config(Some("usemaxage"), Some(5), None).unwrap(),
            "cache-control: max-age=5"
        );
        assert_eq!(config(Some("UseMaxAge"), None, None), None);
        assert_eq!(
            config(Some("DisableCache"), Some(60), None).unwrap(),
            "cache-control: no-cache"
        );
        assert_eq!(
            config(
                Some("UseExpires"),
                None,
                Some("Fri, 01 Jan 2100 00:00:00 GMT")
            )
            .unwrap(),
            "expires: Fri, 01 Jan 2100 00:00:00 GMT"
        );
        assert!(http_date(de("soon")).is_err());
        assert!(CacheControlMode::deserialize(de("Sometimes")).is_err());
        assert!(StaticFileConfig::default().follow_symlinks);
        assert!(!StaticFileConfig::default().allow_hidden);
    }

    #[test]
    fn hidden_segments_and_symlinks() {
        assert!(is_hidden("/.git/config"));
        assert!(is_hidden("/a/.env"));
        assert!(is_hidden("/a/./b"));
        assert!(!is_hidden("/a.b/c.d"));
        let dir = std::env::temp_dir().join(format!("riis-sf-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/f.txt"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("real/f.txt"), dir.join("real/g.txt")).unwrap();
        let opened = |p: &str| open_without_symlinks(&dir, &dir.join(p));
        assert!(opened("real/f.txt").is_ok());
        assert!(opened("./real/f.txt").is_ok());
        assert!(opened("").unwrap().metadata().unwrap().is_dir());
        assert!(opened("real").unwrap().metadata().unwrap().is_dir());
        // A link as a directory on the way, or as the file itself.
        assert!(opened("link/f.txt").is_err());
        assert!(opened("real/g.txt").is_err());
        assert!(opened("link").is_err());
        assert!(opened("real/../real/f.txt").is_err());
        assert_eq!(
            opened("missing").unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        // Outside the root only the last component is held to the rule.
        let other = std::env::temp_dir().join(format!("riis-sf-other-{}", std::process::id()));
        assert!(open_without_symlinks(&other, &dir.join("real/f.txt")).is_ok());
        assert!(open_without_symlinks(&other, &dir.join("link/f.txt")).is_ok());
        assert!(open_without_symlinks(&other, &dir.join("real/g.txt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strong_etags_are_the_hex_of_times_and_length() {
        for (nanos, len) in [
            (0u128, 0u64),
            (1, 15),
            (16, 16),
            (1_764_769_431_123_456_789, 1024),
            (u128::MAX, u64::MAX),
        ] {
            assert_eq!(strong_etag(nanos, len, 0), format!("\"{nanos:x}-{len:x}\""));
            if nanos != 255 {
                assert_eq!(
                    strong_etag(nanos, len, 255),
                    format!("\"{nanos:x}-{len:x}-ff\"")
                );
            }
            assert_eq!(
                strong_etag(nanos, len, nanos),
                format!("\"{nanos:x}-{len:x}\"")
            );
        }
    }

    #[test]
    fn multipart_bodies_are_laid_out_per_rfc() {
        let pieces = multipart("B", b"text/plain", &[(0, 1), (5, 5)], 10);
        let mut body = Vec::new();
        for p in &pieces {
            match p {
                Piece::Bytes(b) => body.extend_from_slice(b),
                Piece::Data(o, l) => body.extend_from_slice(format!("<{o}+{l}>").as_bytes()),
            }
        }
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n<0+2>\
             \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-5/10\r\n\r\n<5+1>\
             \r\n--B--\r\n"
        );
        assert_ne!(boundary(), boundary());
    }

    #[test]
    fn etag_values_are_the_tags_of_their_files() {
        // The first two share a slot.
        for key in [
            (0u128, 0u64, 0u128),
            (64, 0, 0),
            (0, 0, 0),
            (1 << 70, 5, 9),
            (1 << 70, 5, 10),
        ] {
            let (nanos, len, changed) = key;
            let value = etag_value(nanos, len, changed).unwrap();
            assert_eq!(value, strong_etag(nanos, len, changed).as_str());
        }
    }

    #[test]
    fn last_modified_values_are_the_dates_of_their_seconds() {
        // 0 and 64 share a slot; each comes back as its own date.
        for secs in [0, 64, 0, 1_796_399_999, 1_796_399_999 + 64, 1_796_399_999] {
            let expected = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(last_modified(secs).unwrap(), expected.as_str());
        }
    }
}
