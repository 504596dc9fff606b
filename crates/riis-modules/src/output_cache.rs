//! `OutputCache`: keeps whole responses in memory and answers later
//! requests for the same URL from there, without running their handler, as
//! IIS's output cache (HttpCacheModule) does.
//!
//! Registers for:
//!
//! - **ResolveRequestCache**: a GET whose location caches (`policy` other
//!   than `DontCache`) is looked up by its key: the site, the path, the
//!   query string (or the parameters `vary_by_query_string` names) and the
//!   request headers `vary_by_headers` names. A hit still valid (not
//!   expired; under `CacheUntilChange`, its file unchanged, checked with
//!   one `stat`) becomes the response, and the request finishes
//!   (FinishRequest): the handler does not run, the SendResponse modules
//!   (compression, custom headers, logging) do. Conditional and range
//!   requests (`If-…`, `Range`), and requests of a logged-on user (unless
//!   `cache_authenticated`), are passed on to the handler.
//! - **UpdateRequestCache**: the response of a request that missed is
//!   stored when the URL is asked for often enough (IIS's frequent-hit
//!   rule: `frequent_hit_threshold` requests within
//!   `frequent_hit_period` seconds) and the response may be shared: a 200
//!   to a GET of the client's request (not a child request), whole in
//!   memory or small file ranges, at most `max_response_size` bytes, not
//!   flushed early, without `Set-Cookie`, without `Cache-Control`
//!   `private`, `no-store` or `no-cache`, and varying (`Vary`) only by
//!   headers `vary_by_headers` names; and not for a logged-on user unless
//!   `cache_authenticated`.
//!
//! Authentication and authorization run before ResolveRequestCache, so a
//! hit is served only to a request they let through. A request that a
//! module finishes early (FinishRequest, as a handler may) skips
//! UpdateRequestCache, as in IIS, so its response is not stored: handlers
//! whose responses should be kept return Continue.
//!
//! Configuration section `output_cache` (IIS's `caching` and its
//! profiles), per location:
//! - `policy`: `"DontCache"` (default), `"CacheUntilChange"` (until the
//!   URL's file changes; a URL that is not a file is kept for `duration`)
//!   or `"CacheForTimePeriod"` (for `duration`);
//! - `duration` (seconds, default 30);
//! - `vary_by_query_string` (default `["*"]`: the whole query string);
//!   a list of parameter names keys on those alone;
//! - `vary_by_headers` (default empty): request headers that key the
//!   response (`Accept-Encoding`, `Accept-Language`, …);
//! - `max_response_size` (bytes, default 262,144, IIS's);
//! - `max_cache_size` (bytes, default 64 MiB): the cache's size, read from
//!   the location of the response being stored; past it the oldest
//!   entries go;
//! - `cache_authenticated` (default false);
//! - `frequent_hit_threshold` (default 2) and `frequent_hit_period`
//!   (seconds, default 10).
//!
//! The cache belongs to one configuration: a reload starts an empty one.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riis_pipeline::bytes::{Bytes, BytesMut};
use riis_pipeline::http::header::{self, HeaderName};
use riis_pipeline::http::{HeaderMap, Method, StatusCode};
use riis_pipeline::{
    EntityChunk, HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, ResourceInfo, ResourceKind, Section,
    ServerInfo,
};
use serde::Deserialize;

/// The `output_cache` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputCacheConfig {
    /// Whether and how long responses are kept.
    pub policy: CachePolicy,
    /// Seconds a response is kept (`CacheForTimePeriod`, or a URL that is
    /// not a file under `CacheUntilChange`).
    #[serde(deserialize_with = "crate::at_least_one")]
    pub duration: u64,
    /// Query string parameters that key the response; `*` for all.
    pub vary_by_query_string: Vec<String>,
    /// Request headers that key the response.
    pub vary_by_headers: Vec<HeaderNameField>,
    /// The largest response kept.
    pub max_response_size: u64,
    /// The cache's size in bytes.
    pub max_cache_size: u64,
    /// Whether responses to logged-on users are kept and served.
    pub cache_authenticated: bool,
    /// Requests within `frequent_hit_period` before a URL is kept.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub frequent_hit_threshold: u32,
    /// Seconds the requests are counted over.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub frequent_hit_period: u64,
}

impl Default for OutputCacheConfig {
    fn default() -> Self {
        Self {
            policy: CachePolicy::DontCache,
            duration: 30,
            vary_by_query_string: vec!["*".into()],
            vary_by_headers: Vec::new(),
            max_response_size: 256 * 1024,
            max_cache_size: 64 * 1024 * 1024,
            cache_authenticated: false,
            frequent_hit_threshold: 2,
            frequent_hit_period: 10,
        }
    }
}

/// IIS's profile policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CachePolicy {
    /// Nothing is kept.
    DontCache,
    /// Kept until the URL's file changes.
    CacheUntilChange,
    /// Kept for `duration`.
    CacheForTimePeriod,
}

/// A header name, checked when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderNameField(pub HeaderName);

impl TryFrom<String> for HeaderNameField {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        HeaderName::try_from(name.as_str())
            .map(Self)
            .map_err(|_| format!("`{name}` is not a header name"))
    }
}

/// A stored response.
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
    /// The URL's file as it was, under `CacheUntilChange`.
    file: Option<FileStamp>,
}

/// What tells a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: u128,
}

impl FileStamp {
    fn of(info: &ResourceInfo) -> Option<Self> {
        (info.kind == ResourceKind::File).then_some(Self {
            len: info.len,
            modified: info.modified,
            changed: info.changed,
        })
    }
}

/// The responses kept, and how often URLs are asked for.
#[derive(Default)]
struct Store {
    entries: HashMap<Box<str>, Arc<Entry>>,
    /// Keys in the order they were stored, for eviction (a key may be here
    /// after its entry went).
    order: VecDeque<Box<str>>,
    bytes: u64,
    /// Requests per key in the current period: (period start, count).
    hits: HashMap<Box<str>, (Instant, u32)>,
}

/// Keys whose requests are counted at most, so counting cannot grow
/// without bound under URLs an attacker makes up.
const COUNTED_KEYS: usize = 10_000;

impl Store {
    /// Counts a request of `key`; says whether the URL is now asked for
    /// often enough to be kept.
    fn count(&mut self, key: &str, threshold: u32, period_secs: u64, now: Instant) -> bool {
        let period = Duration::from_secs(period_secs);
        if !self.hits.contains_key(key) && self.hits.len() >= COUNTED_KEYS {
            self.hits
                .retain(|_, (start, _)| now.duration_since(*start) < period);
            if self.hits.len() >= COUNTED_KEYS {
                self.hits.clear();
            }
        }
        let (start, count) = self.hits.entry(key.into()).or_insert((now, 0));
        if now.duration_since(*start) >= period {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count >= threshold
    }

    fn insert(&mut self, key: Box<str>, entry: Entry, max_bytes: u64) {
        let size = entry_size(&key, &entry);
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= entry_size(&key, &old);
        }
        self.hits.remove(&key);
        self.bytes += size;
        self.entries.insert(key.clone(), Arc::new(entry));
        self.order.push_back(key);
        while self.bytes > max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= entry_size(&oldest, &gone);
            }
        }
        // Keys of entries replaced or gone pile up in `order`: drop them
        // when they outnumber the entries.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            let mut seen = std::collections::HashSet::new();
            self.order
                .retain(|k| entries.contains_key(k) && seen.insert(k.clone()));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(gone) = self.entries.remove(key) {
            self.bytes -= entry_size(key, &gone);
        }
    }
}

/// What an entry costs: its body, headers and key.
fn entry_size(key: &str, entry: &Entry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum();
    (entry.body.len() + headers + key.len() + 128) as u64
}

/// Request headers that make a response the client's own: such requests
/// are passed on to the handler.
const CONDITIONAL: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Response headers not stored: the HTTP layer writes them for each
/// response.
const NOT_STORED: [HeaderName; 5] = [
    header::DATE,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::SERVER,
];

/// The cache key of a request under `config`, or `None` when the request
/// is not one the cache answers.
fn key_of(ctx: &HttpContext, config: &OutputCacheConfig) -> Option<String> {
    let req = ctx.request();
    if *req.method() != Method::GET
        || ctx.child_depth() != 0
        || CONDITIONAL.iter().any(|h| req.headers().contains_key(h))
    {
        return None;
    }
    if !config.cache_authenticated && ctx.user().is_some_and(|u| !u.name().is_empty()) {
        return None;
    }
    let mut key = String::with_capacity(64);
    key.push_str(itoa::Buffer::new().format(ctx.site().site_id));
    key.push('\0');
    key.push_str(req.url());
    key.push('\0');
    let query = req.query_string();
    if config.vary_by_query_string.iter().any(|p| p == "*") {
        key.push_str(query);
    } else {
        // The named parameters, in the configuration's order.
        for name in &config.vary_by_query_string {
            for pair in query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if k == name {
                    key.push_str(k);
                    key.push('=');
                    key.push_str(v);
                    key.push('&');
                }
            }
        }
    }
    for name in &config.vary_by_headers {
        key.push('\0');
        for value in req.headers().get_all(&name.0) {
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            key.push(',');
        }
    }
    Some(key)
}

/// What the module shares between its instances.
#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The module instance: one per request.
pub struct OutputCache {
    config: Section<OutputCacheConfig>,
    shared: Arc<Shared>,
    /// The key of a request that missed and may be stored.
    candidate: Option<String>,
}

impl HttpModule for OutputCache {
    fn on_resolve_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        if config.policy == CachePolicy::DontCache {
            return RequestNotificationStatus::Continue;
        }
        let Some(key) = key_of(ctx, config) else {
            return RequestNotificationStatus::Continue;
        };
        let (threshold, period) = (config.frequent_hit_threshold, config.frequent_hit_period);
        let now = Instant::now();
        let found = self.shared.store().entries.get(key.as_str()).cloned();
        if let Some(entry) = found {
            let fresh = now < entry.expires
                && match entry.file {
                    // One `stat`, which the handler would have made anyway.
                    Some(stamp) => {
                        ctx.resource_info().as_ref().and_then(FileStamp::of) == Some(stamp)
                    }
                    None => true,
                };
            if fresh {
                ctx.raise_trace_event("OutputCache: served from the cache");
                let resp = ctx.response_mut();
                resp.clear();
                resp.set_status(entry.status, entry.status.canonical_reason().unwrap_or(""));
                for (name, value) in &entry.headers {
                    resp.append_header(name.clone(), value.clone());
                }
                resp.write(EntityChunk::Memory(entry.body.clone()));
                return RequestNotificationStatus::FinishRequest;
            }
            self.shared.store().remove(&key);
        }
        if self.shared.store().count(&key, threshold, period, now) {
            self.candidate = Some(key);
        }
        RequestNotificationStatus::Continue
    }

    fn on_update_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let Some(key) = self.candidate.take() else {
            return RequestNotificationStatus::Continue;
        };
        // The location may differ from the one the key was made in (a
        // rewrite): its policy decides.
        let policy = ctx.config(self.config).policy;
        if policy == CachePolicy::DontCache {
            return RequestNotificationStatus::Continue;
        }
        let file = match policy {
            CachePolicy::CacheUntilChange => ctx.resource_info().as_ref().and_then(FileStamp::of),
            _ => None,
        };
        let config = ctx.config(self.config);
        let Some(entry) = storable(ctx, config, file) else {
            return RequestNotificationStatus::Continue;
        };
        let max = config.max_cache_size;
        ctx.raise_trace_event("OutputCache: response stored");
        self.shared.store().insert(key.into(), entry, max);
        RequestNotificationStatus::Continue
    }
}

/// The response as an entry, when it may be stored.
fn storable(
    ctx: &HttpContext,
    config: &OutputCacheConfig,
    file: Option<FileStamp>,
) -> Option<Entry> {
    let resp = ctx.response();
    if resp.status() != StatusCode::OK || resp.headers_sent() || resp.headers_suppressed() {
        return None;
    }
    if !config.cache_authenticated && ctx.user().is_some_and(|u| !u.name().is_empty()) {
        return None;
    }
    let headers = resp.headers();
    if headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let shared = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .all(|d| {
            let d = d.trim();
            let name = d.split('=').next().unwrap_or("").trim();
            !["private", "no-store", "no-cache"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        });
    let varies_by_known = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .all(|h| {
            h != "*"
                && config
                    .vary_by_headers
                    .iter()
                    .any(|k| k.0.as_str().eq_ignore_ascii_case(h))
        });
    if !shared || !varies_by_known {
        return None;
    }
    if resp.buffered_len() > config.max_response_size {
        return None;
    }
    let mut body = BytesMut::with_capacity(resp.buffered_len() as usize);
    for chunk in resp.entity_chunks() {
        match chunk {
            EntityChunk::Memory(bytes) => body.extend_from_slice(bytes),
            EntityChunk::File {
                file,
                offset,
                length,
            } => {
                let start = body.len();
                body.resize(start + *length as usize, 0);
                file.read_exact_at(&mut body[start..], *offset).ok()?;
            }
        }
    }
    let mut stored = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !NOT_STORED.contains(name) {
            stored.append(name.clone(), value.clone());
        }
    }
    let status = resp.status();
    let now = Instant::now();
    // Until the file changes; a URL that is not a file for `duration`.
    let expires = if file.is_some() {
        now + Duration::from_secs(365 * 24 * 3600)
    } else {
        now + Duration::from_secs(config.duration)
    };
    Some(Entry {
        status,
        headers: stored,
        body: body.freeze(),
        expires,
        file,
    })
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<OutputCacheConfig>("output_cache")?;
    let shared = Arc::new(Shared::default());
    registration.set_request_notifications(
        move || OutputCache {
            config,
            shared: shared.clone(),
            candidate: None,
        },
        RequestNotification::ResolveRequestCache | RequestNotification::UpdateRequestCache,
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            expires: Instant::now() + Duration::from_secs(60),
            file: None,
        }
    }

    #[test]
    fn a_url_is_kept_once_asked_for_often_enough() {
        let mut store = Store::default();
        let config = OutputCacheConfig::default();
        let now = Instant::now();
        let (t, p) = (config.frequent_hit_threshold, config.frequent_hit_period);
        assert!(!store.count("a", t, p, now));
        assert!(store.count("a", t, p, now + Duration::from_secs(1)));
        // A new period starts the count again.
        assert!(!store.count("b", t, p, now));
        assert!(!store.count("b", t, p, now + Duration::from_secs(11)));
    }

    #[test]
    fn the_oldest_entries_go_past_the_size() {
        let mut store = Store::default();
        let size = entry_size("k1", &entry("x"));
        store.insert("k1".into(), entry("x"), 2 * size);
        store.insert("k2".into(), entry("x"), 2 * size);
        assert_eq!(store.entries.len(), 2);
        store.insert("k3".into(), entry("x"), 2 * size);
        assert!(!store.entries.contains_key("k1"));
        assert!(store.entries.contains_key("k3"));
        assert_eq!(store.bytes, 2 * size);
        // Replacing an entry counts it once.
        store.insert("k3".into(), entry("x"), 2 * size);
        assert_eq!(store.bytes, 2 * size);
        assert_eq!(store.entries.len(), 2);
        store.remove("k2");
        assert_eq!(store.bytes, size);
    }
}
