//! `OutputCache`: keeps whole responses in memory and answers later
//! requests for the same URL from there, without running their handler, as
//! IIS's output cache (HttpCacheModule) does.
//!
//! Registers for:
//!
//! - **ResolveRequestCache**: a GET (or a HEAD, answered from its GET's
//!   entry, which never stores or counts) whose location caches (`policy`
//!   other than `DontCache`) is looked up by its key: the site, the path, the
//!   query string (or the parameters `vary_by_query_string` names,
//!   decoded and in any case) and the request headers `vary_by_headers`
//!   names, with the local port, the host and (with `cache_authenticated`)
//!   the user. A hit still valid (not
//!   expired; under `CacheUntilChange`, its file unchanged, checked with
//!   one `stat`) becomes the response, and the request finishes
//!   (FinishRequest): the handler does not run, the SendResponse modules
//!   (compression, custom headers, logging) do. Conditional and range
//!   requests (`If-…`, `Range`), and requests of a logged-on user (unless
//!   `cache_authenticated`), are passed on to the handler.
//! - **UpdateRequestCache**: the response of a request that missed is
//!   stored when the URL is asked for often enough (IIS's frequent-hit
//!   rule: `frequent_hit_threshold` requests within
//!   `frequent_hit_period` seconds) and the response may be shared: not a
//!   folder URL's (a default document or listing comes from another URL,
//!   through a child request whose location's rules a hit would skip); a 200
//!   to a GET of the client's request (not a child request), whole in
//!   memory or small file ranges, at most `max_response_size` bytes, not
//!   flushed early, without `Set-Cookie`, without `Cache-Control`
//!   `private`, `no-store` or `no-cache`, not stale by its own freshness
//!   (RFC 9111 §4.2: `s-maxage`, else `max-age`, else `Expires`, less its
//!   `Age`; `max-age=0`, an `Expires` past or any that does not parse),
//!   and varying (`Vary`) only by headers `vary_by_headers` names; and
//!   not for a logged-on user unless `cache_authenticated`. It is kept for
//!   `duration` (or until its file changes), or for what is left of its
//!   own lifetime if that is shorter.
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
//! - `duration` (seconds, default 30): the longest a response is kept; its
//!   own shorter lifetime shortens it;
//! - `vary_by_query_string` (default `["*"]`: the whole query string);
//!   a list of parameter names keys on those alone;
//! - `vary_by_headers` (default empty): request headers that key the
//!   response (`Accept-Encoding`, `Accept-Language`, …);
//! - `max_response_size` (bytes, default 262,144, IIS's);
//! - `max_cache_size` (bytes, default 64 MiB): the cache's size, read from
//!   the location of the response being stored; past it the oldest
//!   entries stored under a size no larger go, until those hold it at
//!   most (a location given less neither empties the cache of those
//!   given more nor is kept from caching by theirs);
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
use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
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
    /// Seconds a response is kept at most (`CacheForTimePeriod`, or a URL
    /// that is not a file under `CacheUntilChange`): less when its own
    /// freshness (`s-maxage`, `max-age`, `Expires`) ends sooner.
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
    /// When it was stored, and the age it came with (its `Age`): a hit
    /// says how old it is (RFC 9111 §5.1).
    stored: Instant,
    initial_age: u64,
    /// The URL's file as it was, under `CacheUntilChange`.
    file: Option<FileStamp>,
    /// When it was stored, in the store's count.
    generation: u64,
    /// The `max_cache_size` of the location that stored it.
    limit: u64,
    /// Its handler answered from elsewhere than the URL's file (another
    /// server): a hit says so again, so that no module takes the file at
    /// the path for its source (StaticCompression would send a copy made
    /// of the file, or of another client's answer, for it).
    answered_elsewhere: bool,
    /// It is its file's bytes, validated by the stamp at each hit.
    files_bytes: bool,
}

/// What tells a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: u128,
}

/// How long after its last change a file may change again unseen by its
/// stamp: coarse file-system clocks tick in up to two seconds.
const SETTLE: Duration = Duration::from_secs(2);

impl FileStamp {
    /// Whether the file changed less than [`SETTLE`] ago (or says no
    /// time, or one to come).
    fn is_unsettled(&self) -> bool {
        self.modified.is_none_or(|m| {
            std::time::SystemTime::now()
                .duration_since(m)
                .map_or(true, |age| age < SETTLE)
        })
    }

    fn of(info: &ResourceInfo) -> Option<Self> {
        (info.kind == ResourceKind::File).then_some(Self {
            len: info.len,
            modified: info.modified,
            changed: info.changed,
        })
    }
}

/// The responses kept, and how often URLs are asked for.
struct Store {
    entries: HashMap<Box<str>, Arc<Entry>>,
    /// Keys with the generation they were stored under, oldest first, for
    /// eviction: an item whose entry was stored again since is skipped.
    order: VecDeque<(Box<str>, u64)>,
    next_generation: u64,
    bytes: u64,
    /// The bytes of the entries stored under each `max_cache_size`.
    bytes_by_limit: std::collections::BTreeMap<u64, u64>,
    /// Requests per key in the current period, by a keyed digest of the
    /// key (fixed size, whatever URLs and headers clients make up):
    /// (period start, count).
    hits: HashMap<u64, (Instant, u32)>,
    /// When a URL was last changed by a request (RFC 9111 §4.4), by a
    /// keyed digest of [`url_of`]: its entries stored before then are
    /// stale.
    changed: HashMap<u64, Instant>,
    digests: std::hash::RandomState,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            bytes: 0,
            bytes_by_limit: std::collections::BTreeMap::new(),
            hits: HashMap::new(),
            changed: HashMap::new(),
            digests: std::hash::RandomState::new(),
        }
    }
}

/// Keys whose requests are counted at most.
const COUNTED_KEYS: usize = 100_000;

impl Store {
    /// Counts a request of `key`; says whether the URL is now asked for
    /// often enough to be kept.
    fn count(&mut self, key: &str, threshold: u32, period_secs: u64, now: Instant) -> bool {
        use std::hash::BuildHasher;
        let period = Duration::from_secs(period_secs);
        let digest = self.digests.hash_one(key);
        if !self.hits.contains_key(&digest) && self.hits.len() >= COUNTED_KEYS {
            self.hits
                .retain(|_, (start, _)| now.duration_since(*start) < period);
            if self.hits.len() >= COUNTED_KEYS {
                // Full of keys counted this period: a new one is not
                // counted (and so not kept), the ones counted keep their
                // counts.
                return false;
            }
        }
        let (start, count) = self.hits.entry(digest).or_insert((now, 0));
        if now.duration_since(*start) >= period {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count >= threshold
    }

    fn insert(&mut self, key: Box<str>, mut entry: Entry, max_bytes: u64) {
        use std::hash::BuildHasher;
        let size = entry_size(&key, &entry);
        self.remove(&key);
        let digest = self.digests.hash_one(&*key);
        self.hits.remove(&digest);
        self.next_generation += 1;
        entry.generation = self.next_generation;
        entry.limit = max_bytes;
        self.bytes += size;
        *self.bytes_by_limit.entry(max_bytes).or_insert(0) += size;
        self.entries.insert(key.clone(), Arc::new(entry));
        self.order.push_back((key, self.next_generation));
        self.evict_within(max_bytes);
        // And the whole cache within the largest size of those it holds
        // (locations storing from the largest size down would otherwise
        // each fill their own).
        if let Some(&largest) = self.bytes_by_limit.keys().next_back() {
            self.evict_within(largest);
        }
        // Items of entries stored again or gone pile up in `order`: drop
        // them when they outnumber the entries.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Drops the oldest entries stored under a `max_cache_size` no larger
    /// than `max_bytes` (the new one among them) until those hold
    /// `max_bytes` at most: a location with a small size makes room among
    /// its own and its like, and neither empties the cache of the
    /// locations given more (which any client could otherwise do by
    /// asking for one of its URLs twice) nor is kept from caching by
    /// theirs. The largest size bounds the whole cache.
    fn evict_within(&mut self, max_bytes: u64) {
        let held: u64 = self
            .bytes_by_limit
            .range(..=max_bytes)
            .map(|(_, b)| b)
            .sum();
        if held <= max_bytes {
            return;
        }
        let mut excess = held - max_bytes;
        let mut dropped = Vec::new();
        let entries = &self.entries;
        // One pass, oldest first; items of entries stored again or gone
        // are dropped on the way.
        self.order.retain(|(key, generation)| {
            let Some(entry) = entries.get(key).filter(|e| e.generation == *generation) else {
                return false;
            };
            if excess == 0 || entry.limit > max_bytes {
                return true;
            }
            excess = excess.saturating_sub(entry_size(key, entry));
            dropped.push(key.clone());
            false
        });
        for key in dropped {
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(gone) = self.entries.remove(key) {
            let size = entry_size(key, &gone);
            self.bytes -= size;
            if let Some(bytes) = self.bytes_by_limit.get_mut(&gone.limit) {
                *bytes -= size;
                if *bytes == 0 {
                    self.bytes_by_limit.remove(&gone.limit);
                }
            }
        }
    }

    /// Notes that a request changed `url` ([`url_of`]) at `now`: its
    /// entries, all of them, are stale. Past [`COUNTED_KEYS`] such notes,
    /// every entry is dropped and the notes with them, which keeps what an
    /// entry is judged by correct without a bound on the notes' memory.
    fn note_changed(&mut self, url: &str, now: Instant) {
        use std::hash::BuildHasher;
        let digest = self.digests.hash_one(url);
        if !self.changed.contains_key(&digest) && self.changed.len() >= COUNTED_KEYS {
            self.entries.clear();
            self.order.clear();
            self.bytes = 0;
            self.bytes_by_limit.clear();
            self.changed.clear();
        }
        self.changed.insert(digest, now);
    }

    /// Whether a request changed the URL ([`url_of`]) of `ctx`'s request
    /// at `since` or later: after an entry found for it was stored, or
    /// after the request that would store one was looked up (it may have
    /// read what the change replaced). Nothing to look up, and no URL to
    /// make, until some request changed one.
    fn changed_since(&self, ctx: &HttpContext, since: Instant) -> bool {
        use std::hash::BuildHasher;
        !self.changed.is_empty()
            && self
                .changed
                .get(&self.digests.hash_one(url_of(ctx)))
                .is_some_and(|at| *at >= since)
    }

    /// Removes `key`'s entry if it is still `stale` (another request may
    /// have stored a fresh one since it was looked up).
    fn remove_if_same(&mut self, key: &str, stale: &Arc<Entry>) {
        if self.entries.get(key).is_some_and(|e| Arc::ptr_eq(e, stale)) {
            self.remove(key);
        }
    }
}

/// What one header of an entry costs besides its name and value: the
/// header map's bucket (name, value, links, index slot) and the value's own
/// allocation with the allocator's rounding.
const HEADER_COST: usize = 128;

/// What an entry costs besides its body, headers and key: the entry
/// itself in its `Arc`, its slots in the map and in the age order, the
/// key's two allocations (the map's and the order's) and the allocator's
/// rounding of each.
const ENTRY_COST: usize = std::mem::size_of::<Entry>() + 160;

/// What an entry costs in memory, so that `max_cache_size` bounds what the
/// cache takes rather than its bodies alone: for small pages the rest is
/// most of it (an operator counted 1.2 KB of memory per 25-byte page, of
/// which an earlier estimate saw 500 bytes).
fn entry_size(key: &str, entry: &Entry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + HEADER_COST)
        .sum();
    (entry.body.len() + headers + 2 * key.len() + ENTRY_COST) as u64
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
/// is not one the cache answers. A HEAD request has its GET's key: it is
/// answered from the GET's entry (the server sends the head only).
fn key_of(ctx: &HttpContext, config: &OutputCacheConfig) -> Option<String> {
    let req = ctx.request();
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        || ctx.child_depth() != 0
        || CONDITIONAL.iter().any(|h| req.headers().contains_key(h))
    {
        return None;
    }
    let user = ctx.user().map_or("", |u| u.name());
    if !config.cache_authenticated && !user.is_empty() {
        return None;
    }
    // Credentials no module of ours checked are the handler's (a proxied
    // application, PHP): its answer may be for that client alone, and a
    // shared cache neither keeps it nor answers such a request from
    // another's (RFC 9111 §3.5).
    if user.is_empty() && req.headers().contains_key(header::AUTHORIZATION) {
        return None;
    }
    // So is a client certificate no module turned into a user: the
    // gateways hand it to the application (`CERT_SUBJECT`), whose answer
    // may be that client's alone.
    if user.is_empty() && ctx.client_certificate().is_some() {
        return None;
    }
    // Nor is a GET with content: the gateways pass it on, and an
    // application that reads it (a search API's query, PHP's
    // `php://input`) answers by what no key holds; content cannot change a
    // GET's meaning to a cache (RFC 9110 §9.3.1), so none is kept or
    // served for such a request.
    if !req.is_body_complete() {
        return None;
    }
    // The URL as a change to it goes (`url_of`): site, port (an https
    // binding's answer is not an http one's), the host the client asked
    // for (a handler may write absolute URLs) and the path. Then the host
    // the handler sees (`HTTP_HOST`) when a rule set another: a proxied
    // application builds links from the first (`X-Forwarded-Host`) and may
    // pick a site by the second, so a request cannot store an answer made
    // for one host under another's key.
    let mut key = url_of(ctx);
    key.push('\0');
    let host = ctx.server_variable("HTTP_HOST").unwrap_or_default();
    if req
        .client_host()
        .is_none_or(|asked| !host.eq_ignore_ascii_case(&asked))
    {
        key.push_str(&host.to_ascii_lowercase());
    }
    key.push('\0');
    // The server a rule sends the request to (a canary's backend by cookie):
    // one server's answer is not another's (nginx keys on the upstream).
    if let Some(server) = ctx.server_variable(crate::reverse_proxy::PROXY_SERVER) {
        key.push_str(&server);
    }
    key.push('\0');
    // Each user's own (with `cache_authenticated`; anonymous is empty).
    key.push_str(user);
    key.push('\0');
    // The path as the client wrote it, too: a proxied backend gets it raw
    // and may tell apart what the server decodes alike (`a%2Fb` and `a/b`,
    // `%61dmin` and `admin`, `a//b`), so one spelling's answer must not be
    // stored for another's. A rewritten URL (UrlRewrite's front controller
    // sends every route to one script) is told apart by it the same way,
    // and by its query through vary_by_query_string as the request's own
    // is.
    let rewritten = req.url_changes() > 0;
    let asked = req.client_url();
    let (asked_path, asked_query) = asked.split_once('?').unwrap_or((asked, ""));
    key.push(if rewritten { 'r' } else { 'n' });
    if asked_path != req.url() {
        key.push_str(asked_path);
    }
    key.push('\0');
    let asked_query = rewritten.then_some(asked_query);
    for query in std::iter::once(req.query_string()).chain(asked_query) {
        if !push_query(&mut key, config, query) {
            return None;
        }
        key.push('\0');
    }
    for name in &config.vary_by_headers {
        key.push('\0');
        for value in req.headers().get_all(&name.0) {
            // `%` escaped too: a raw byte and its escape are two values.
            const ESCAPED: &percent_encoding::AsciiSet =
                &percent_encoding::CONTROLS.add(b'%').add(b',');
            key.extend(percent_encoding::percent_encode(value.as_bytes(), ESCAPED));
            key.push(',');
        }
    }
    Some(key)
}

/// The URL a request is for, as far as a change to it goes: the site,
/// port, the host the client asked for (an absolute-form target's over
/// `Host`, RFC 9112 §3.2.2) and the path, whatever the user, query and
/// headers (RFC 9111 §4.4 makes every stored answer of the target URI
/// stale). Every entry's key starts with it.
fn url_of(ctx: &HttpContext) -> String {
    let req = ctx.request();
    let mut url = String::with_capacity(64);
    url.push_str(itoa::Buffer::new().format(ctx.site().site_id));
    url.push('\0');
    url.push_str(itoa::Buffer::new().format(req.local_address().port()));
    url.push('\0');
    url.push_str(&req.client_host().unwrap_or_default().to_ascii_lowercase());
    url.push('\0');
    url.push_str(req.url());
    url
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
    /// The key of a request that missed and may be stored, and when it
    /// was looked up.
    candidate: Option<(String, Instant)>,
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
        // A HEAD is answered from a GET's entry, but neither counts
        // towards storing one nor stores its own (it has no body to keep).
        let is_head = *ctx.request().method() == Method::HEAD;
        let now = Instant::now();
        let found = {
            let mut store = self.shared.store();
            let found = store.entries.get(key.as_str()).cloned();
            if found.is_none() {
                if !is_head && store.count(&key, threshold, period, now) {
                    drop(store);
                    self.candidate = Some((key, now));
                }
                return RequestNotificationStatus::Continue;
            }
            found
        };
        if let Some(entry) = found {
            let fresh = now < entry.expires
                && !self.shared.store().changed_since(ctx, entry.stored)
                && match entry.file {
                    // One `stat`, which the handler would have made anyway.
                    Some(stamp) => {
                        ctx.resource_info().as_ref().and_then(FileStamp::of) == Some(stamp)
                    }
                    None => true,
                };
            if fresh {
                ctx.raise_trace_event("OutputCache: served from the cache");
                if entry.answered_elsewhere {
                    ctx.set_answered_elsewhere();
                }
                let resp = ctx.response_mut();
                resp.clear();
                resp.set_status(entry.status, entry.status.canonical_reason().unwrap_or(""));
                for (name, value) in &entry.headers {
                    resp.append_header(name.clone(), value.clone());
                }
                // How long it has been kept, on top of the age it came with
                // (RFC 9111 §5.1). An entry that is a file's bytes was
                // validated against the file just now (its stamp), so its
                // time here does not count: clients would otherwise keep it
                // for its `max-age` less that time. A script's output
                // (stamped by the script's file) is not validated by it.
                let kept = if entry.files_bytes {
                    0
                } else {
                    now.saturating_duration_since(entry.stored).as_secs()
                };
                resp.set_header(header::AGE, HeaderValue::from(entry.initial_age + kept));
                resp.write(EntityChunk::Memory(entry.body.clone()));
                return RequestNotificationStatus::FinishRequest;
            }
            let mut store = self.shared.store();
            store.remove_if_same(&key, &entry);
            if !is_head && store.count(&key, threshold, period, now) {
                drop(store);
                self.candidate = Some((key, now));
            }
        }
        RequestNotificationStatus::Continue
    }

    fn on_update_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let Some((key, looked_up)) = self.candidate.take() else {
            // A request that may have changed the resource (a PUT, POST,
            // DELETE, PATCH answered with success or a redirect) makes its
            // URL's entries stale, as RFC 9111 §4.4 asks of a cache; a
            // client reads its own write back at once.
            let status = ctx.response().status();
            if !ctx.request().method().is_safe()
                && (status.is_success() || status.is_redirection())
                && ctx.child_depth() == 0
                && ctx.config(self.config).policy != CachePolicy::DontCache
            {
                let url = url_of(ctx);
                self.shared.store().note_changed(&url, Instant::now());
            }
            return RequestNotificationStatus::Continue;
        };
        // The location may differ from the one the key was made in (a
        // rewrite): its policy decides.
        let policy = ctx.config(self.config).policy;
        if policy == CachePolicy::DontCache {
            return RequestNotificationStatus::Continue;
        }
        // A folder's answer comes from another URL (a default document, a
        // listing), through a child request whose location's rules a hit
        // would skip, and from files this URL's stamp does not cover: such
        // answers are not kept.
        let info = ctx.resource_info();
        if info
            .as_ref()
            .is_some_and(|i| i.kind == ResourceKind::Directory)
        {
            return RequestNotificationStatus::Continue;
        }
        let file = match policy {
            CachePolicy::CacheUntilChange => info.as_ref().and_then(FileStamp::of),
            _ => None,
        };
        // A file changed within the last seconds may change again within
        // its timestamps' tick, the same length, and look the same to the
        // stamp: its answer is not kept yet (the file cache's rule, git's
        // "racy clean").
        if file.as_ref().is_some_and(FileStamp::is_unsettled) {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let Some(entry) = storable(ctx, config, file) else {
            return RequestNotificationStatus::Continue;
        };
        let max = config.max_cache_size;
        let mut store = self.shared.store();
        // A change of the URL while this request ran (a POST beside a slow
        // GET) may have come after the handler read what it replaced: what
        // the handler made is not kept, or a client would not read its
        // own write back (RFC 9111 §4.4).
        if store.changed_since(ctx, looked_up) {
            return RequestNotificationStatus::Continue;
        }
        store.insert(key.into(), entry, max);
        drop(store);
        ctx.raise_trace_event("OutputCache: response stored");
        RequestNotificationStatus::Continue
    }
}

/// The parameters past which PHP (`max_input_vars`) and ASP.NET
/// (`MaxHttpCollectionKeys`) read no more of a query, by default.
const MOST_PARAMETERS_READ: usize = 1000;

/// Appends the query's part of the key: all of it (`*`), or the named
/// parameters (see [`push_parameters`]); `false` when the query is not
/// one the named parameters can key: with more parameters than a handler
/// reads ([`MOST_PARAMETERS_READ`]), a named one past them is in the key
/// but not in the handler's reading (`?a&…&a&id=8` reads as no `id`), and
/// its answer would be stored for `?id=8`.
fn push_query(key: &mut String, config: &OutputCacheConfig, query: &str) -> bool {
    if config.vary_by_query_string.iter().any(|p| p == "*") {
        key.push_str(query);
        return true;
    }
    // Counted as PHP counts them: split at `&`, the empty ones skipped
    // (`?id=1&&&…` is one parameter to it, and is `?id=1`'s entry).
    if !config.vary_by_query_string.is_empty()
        && query
            .split('&')
            .filter(|p| !p.is_empty())
            .nth(MOST_PARAMETERS_READ)
            .is_some()
    {
        return false;
    }
    // The parameters as a handler that splits on `&` reads them (PHP,
    // ASP.NET: `?id=a;b` is `a;b`), and, when the query has a `;`, as one
    // that splits on `;` too (Rack before 3, Python's `parse_qs` before
    // 3.9.2, CGI.pm: `?utm=1;id=x` has an `id`): the key holds both
    // readings, so neither kind of handler has its answer for one value
    // served for another.
    push_parameters(key, config, query, &['&']);
    if query.contains(';') {
        // Values are escaped: no `;` of theirs is in the key.
        key.push(';');
        push_parameters(key, config, query, &['&', ';']);
    }
    true
}

/// Appends the named parameters of `query`, split at `separators`, in the
/// configuration's order: decoded and named in any case (`?%69d=x` is the
/// `id` a handler sees, and so, to a case-insensitive one (ASP.NET), is
/// `?ID=x`), each with its name as sent, since to a case-sensitive handler
/// (PHP) `ID` is not `id`: `?ID=1` and `?id=1` are two entries, and
/// neither answer is served for the other.
fn push_parameters(key: &mut String, config: &OutputCacheConfig, query: &str, separators: &[char]) {
    // Decoded to bytes, not to text: `%FF` and `%FE` are no UTF-8, and
    // lossy decoding would make them one `\u{FFFD}`.
    let decode = |text: &str| -> Vec<u8> {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).collect()
    };
    if query.is_empty() || config.vary_by_query_string.is_empty() {
        return;
    }
    // Each parameter decoded once, whatever the number of names.
    let parameters: Vec<(Vec<u8>, Option<&str>)> = query
        .split(separators)
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), Some(v)),
            None => (decode(pair), None),
        })
        .collect();
    for name in &config.vary_by_query_string {
        for (k, v) in parameters.iter().filter(|(k, _)| reads_as(k, name)) {
            key.extend(percent_encoding::percent_encode(
                k,
                percent_encoding::NON_ALPHANUMERIC,
            ));
            // `?id` and `?id=` are two answers to some handlers (ASP.NET's
            // null and empty).
            if let Some(v) = v {
                key.push('=');
                // Escaped again: a decoded `&` or NUL must not run into the
                // next parameter.
                key.extend(percent_encoding::percent_encode(
                    &decode(v),
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
            key.push('&');
        }
    }
}

/// Whether a handler may read the parameter named `sent` (decoded) as
/// `name`: as sent, in any case, or as PHP names it in `$_GET`
/// (`user.id`, `user id`, `user_id[]` and `user_id%00x` are its `user_id`).
fn reads_as(sent: &[u8], name: &str) -> bool {
    sent.eq_ignore_ascii_case(name.as_bytes())
        || (sent.iter().any(|b| matches!(b, b' ' | b'.' | b'[' | b'\0'))
            && php_name(sent).eq_ignore_ascii_case(name.as_bytes()))
}

/// The name PHP gives a query parameter in `$_GET`: cut at a NUL (its
/// names are C strings), leading spaces dropped, ` ` and `.` made `_`, an
/// array's brackets dropped (`id[]`, `id[x]` are `id`), and a `[` without
/// its `]` made `_`.
fn php_name(name: &[u8]) -> Vec<u8> {
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let start = name.iter().position(|&b| b != b' ').unwrap_or(name.len());
    let name = &name[start..];
    let mut out = Vec::with_capacity(name.len());
    for (i, &b) in name.iter().enumerate() {
        match b {
            b'[' if i > 0 && name[i + 1..].contains(&b']') => break,
            b' ' | b'.' | b'[' => out.push(b'_'),
            _ => out.push(b),
        }
    }
    out
}

/// The response as an entry, when it may be stored.
fn storable(
    ctx: &HttpContext,
    config: &OutputCacheConfig,
    file: Option<FileStamp>,
) -> Option<Entry> {
    let resp = ctx.response();
    if resp.status() != StatusCode::OK
        || resp.headers_sent()
        || resp.headers_suppressed()
        || ctx.is_user_cache_disabled()
    {
        return None;
    }
    if !config.cache_authenticated && ctx.user().is_some_and(|u| !u.name().is_empty()) {
        return None;
    }
    let headers = resp.headers();
    if headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    // A value that is not text cannot be read, so it is not kept.
    let cache_control: Vec<&str> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let vary: Vec<&str> = headers
        .get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let directives = directives(&cache_control);
    let shared = directives.iter().all(|(name, _)| {
        !["private", "no-store", "no-cache"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
    });
    let varies_by_known = vary
        .iter()
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
    // An encoded answer (a backend's gzip) is for clients that accept its
    // encoding: kept only when the key tells them apart, whatever the
    // answer's `Vary` forgot to say.
    // Every line and every coding: `identity` first does not make a later
    // `gzip` readable to all.
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
    });
    if encoded
        && !config
            .vary_by_headers
            .iter()
            .any(|k| k.0 == header::ACCEPT_ENCODING)
    {
        return None;
    }
    if resp.buffered_len() > config.max_response_size {
        return None;
    }
    // The operator's time is the upper bound (until the file changes,
    // under `CacheUntilChange`); the response's own lifetime may shorten
    // it, and a response stale already is not kept at all.
    let year = Duration::from_secs(365 * 24 * 3600);
    let bound = if file.is_some() {
        year
    } else {
        Duration::from_secs(config.duration)
    };
    let now = std::time::SystemTime::now();
    // Hits add the time kept to the age it came with, so a client
    // downstream does not count it fresh for its whole lifetime again.
    let initial_age = age_of(headers, date_of(headers), now).as_secs();
    let keep = match accel_expires(ctx, now) {
        // nginx's `X-Accel-Expires` from a proxied or FastCGI answer: for
        // the server in front alone, over what the answer tells browsers
        // and over `duration` (nginx's `proxy_cache_valid`).
        Some(left) if left.is_zero() => return None,
        Some(left) => left.min(year),
        None => match own_freshness(&directives, headers, now) {
            Some(left) if left.is_zero() => return None,
            Some(left) => left.min(bound),
            None => bound,
        },
    };
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
    // A `duration` past what an Instant holds is a long time.
    let expires = now.checked_add(keep).unwrap_or(now + year);
    // The file's own bytes (StaticFile's answer), which each hit validates
    // by the stamp; not a script's output, which its file stamps too. Read
    // once, at the store.
    let files_bytes = file.is_some_and(|stamp| stamp.len == body.len() as u64)
        && ctx
            .mapped_path()
            .and_then(|path| std::fs::read(path).ok())
            .is_some_and(|bytes| bytes[..] == body[..]);
    Some(Entry {
        status,
        headers: stored,
        body: body.freeze(),
        expires,
        stored: now,
        initial_age,
        file,
        generation: 0,
        limit: 0,
        answered_elsewhere: ctx.is_answered_elsewhere(),
        files_bytes,
    })
}

/// An answer's `X-Accel-Expires` (kept by the relay in
/// [`crate::relay::X_ACCEL_EXPIRES`]): seconds to keep it (`0`: not at
/// all), or `@` and the second since the epoch it expires at, as nginx
/// reads it. `None` without one, or with one that is neither.
fn accel_expires(ctx: &HttpContext, now: std::time::SystemTime) -> Option<Duration> {
    let value = ctx.server_variable(crate::relay::X_ACCEL_EXPIRES)?;
    match value.strip_prefix('@') {
        Some(at) => {
            let at = std::time::UNIX_EPOCH + Duration::from_secs(at.parse().ok()?);
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        }
        None => delta_seconds(Some(&value)),
    }
}

/// The directives of `Cache-Control` field values (RFC 9111 §5.2), from
/// all of its lines: each name as sent, with its argument unquoted
/// (`max-age="5"` is `5`), a comma in quotes splitting nothing. An
/// argument with text after its closing quote is malformed: `None`, as if
/// it had none.
fn directives<'a>(values: &[&'a str]) -> Vec<(&'a str, Option<String>)> {
    let mut found = Vec::new();
    for value in values {
        let mut rest = *value;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            let name = rest[..end].trim();
            rest = &rest[end..];
            let mut argument = None;
            if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start_matches([' ', '\t']);
                if let Some(quoted) = after.strip_prefix('"') {
                    let mut text = String::new();
                    let mut chars = quoted.char_indices();
                    // Unterminated: the quote runs to the end of the line.
                    let mut close = quoted.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '"' => {
                                close = i + 1;
                                break;
                            }
                            '\\' => text.extend(chars.next().map(|(_, c)| c)),
                            c => text.push(c),
                        }
                    }
                    rest = &quoted[close..];
                    let next = rest.find(',').unwrap_or(rest.len());
                    if rest[..next].trim().is_empty() {
                        argument = Some(text);
                    }
                    rest = &rest[next..];
                } else {
                    let next = after.find(',').unwrap_or(after.len());
                    argument = Some(after[..next].trim().to_owned());
                    rest = &after[next..];
                }
            }
            if !name.is_empty() {
                found.push((name, argument));
            }
        }
    }
    found
}

/// A `delta-seconds` argument (RFC 9111 §1.2.2): digits only; one too
/// large for the cache is 2^31 seconds.
fn delta_seconds(argument: Option<&str>) -> Option<Duration> {
    let digits = argument?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<u64>().map_or(1 << 31, |n| n.min(1 << 31));
    Some(Duration::from_secs(secs))
}

/// How much longer the response may be reused by its own headers, as a
/// shared cache reads them (RFC 9111 §4.2): its lifetime (`s-maxage`, else
/// `max-age`, else `Expires` minus `Date`, or minus `now` without one)
/// less its age (`Age`, or the time since `Date` if longer). `None` when
/// the response says nothing; zero when it is stale already. Freshness
/// that does not parse (`max-age=soon`, `Expires: 0`) is stale (§4.2.1);
/// a directive or `Expires` given more than once counts at its shortest.
fn own_freshness(
    directives: &[(&str, Option<String>)],
    headers: &HeaderMap,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let stale = Some(Duration::ZERO);
    // One invalid occurrence makes the response stale (`Some(None)`).
    let shortest = |name: &str| -> Option<Option<Duration>> {
        directives
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, argument)| delta_seconds(argument.as_deref()))
            .reduce(|a, b| a.zip(b).map(|(a, b)| a.min(b)))
    };
    let date = date_of(headers);
    let lifetime = match shortest("s-maxage").or_else(|| shortest("max-age")) {
        Some(Some(lifetime)) => lifetime,
        Some(None) => return stale,
        None => {
            let mut expires = None;
            for value in headers.get_all(header::EXPIRES) {
                let Some(at) = value
                    .to_str()
                    .ok()
                    .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
                else {
                    return stale;
                };
                expires = Some(expires.map_or(at, |e: std::time::SystemTime| e.min(at)));
            }
            // An `Expires` before `Date` (or now) is past: zero.
            expires?
                .duration_since(date.unwrap_or(now))
                .unwrap_or_default()
        }
    };
    Some(lifetime.saturating_sub(age_of(headers, date, now)))
}

/// A response's `Date`, when it has one that parses.
fn date_of(headers: &HeaderMap) -> Option<std::time::SystemTime> {
    headers
        .get(header::DATE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?.trim()).ok())
}

/// How old a response is at `now` (RFC 9111 §4.2.3): its `Age` from a
/// cache before us (the first member, ignored when it is not a number,
/// §5.1), or the time since its `Date` when longer.
fn age_of(
    headers: &HeaderMap,
    date: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
) -> Duration {
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(Some(v.split(',').next().unwrap_or("").trim())))
        .unwrap_or_default();
    let since_date = date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    age.max(since_date)
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<OutputCacheConfig>("output_cache")?;
    let shared = Arc::new(Shared::default());
    let report = shared.clone();
    registration.set_global_notifications(
        crate::StatusLines(move || {
            let store = report.store();
            format!(
                "output_cache_entries: {}\noutput_cache_bytes: {}\n",
                store.entries.len(),
                store.bytes
            )
        }),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
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

    #[test]
    fn php_names_parameters_as_its_get_array_does() {
        for (sent, php) in [
            ("user.id", "user_id"),
            ("user id", "user_id"),
            ("  id", "id"),
            ("id[]", "id"),
            ("id[x][y]", "id"),
            ("a[b", "a_b"),
            ("[x]", "_x]"),
            ("id\0x", "id"),
            ("user.id\0", "user_id"),
        ] {
            assert_eq!(php_name(sent.as_bytes()), php.as_bytes(), "{sent}");
        }
    }

    fn entry(body: &'static str) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            expires: Instant::now() + Duration::from_secs(60),
            stored: Instant::now(),
            initial_age: 0,
            file: None,
            generation: 0,
            limit: 0,
            answered_elsewhere: false,
            files_bytes: false,
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

    /// An entry counts what holding it takes, not its body alone: each
    /// header its map bucket and value, the key twice, the entry itself.
    #[test]
    fn an_entry_counts_what_holding_it_takes() {
        let bare = entry_size("key", &entry("x"));
        assert!(bare >= (std::mem::size_of::<Entry>() + 1 + 2 * 3) as u64);
        let mut with_headers = entry("x");
        with_headers
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        with_headers
            .headers
            .insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        let grown = entry_size("key", &with_headers) - bare;
        assert_eq!(
            grown,
            ("content-type".len() + 9 + "etag".len() + 5 + 2 * HEADER_COST) as u64
        );
        // A small page with the headers a file has costs about a kilobyte,
        // as measured, not the few hundred bytes of its text.
        assert!(entry_size("site/guide/intro.html?x=1", &with_headers) > 600);
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
        // Stored again, an entry is the newest: k3 (older) goes first.
        store.insert("k2".into(), entry("x"), 2 * size);
        store.insert("k3".into(), entry("x"), 2 * size);
        store.insert("k4".into(), entry("x"), 2 * size);
        assert!(store.entries.contains_key("k3"));
        assert!(store.entries.contains_key("k4"));
        assert!(!store.entries.contains_key("k2"));
    }

    /// A location given a small `max_cache_size` makes room among the
    /// entries of locations given no more, never by emptying the cache of
    /// those given more, nor kept from caching by theirs.
    #[test]
    fn a_small_size_does_not_empty_the_cache_of_larger_ones() {
        let mut store = Store::default();
        let size = entry_size("k1", &entry("x"));
        for key in ["k1", "k2", "k3", "k4"] {
            store.insert(key.into(), entry("x"), 8 * size);
        }
        // Larger than its size alone: not kept, and nothing else goes.
        store.insert("s1".into(), entry("x"), 1);
        assert_eq!(store.entries.len(), 4);
        assert!(!store.entries.contains_key("s1"));
        assert_eq!(store.bytes, 4 * size);
        // Kept though the others hold more than its size; then the first
        // to go for its like, before the larger ones' entries.
        store.insert("s2".into(), entry("x"), 2 * size);
        store.insert("s3".into(), entry("x"), 2 * size);
        assert_eq!(store.entries.len(), 6);
        store.insert("s4".into(), entry("x"), 2 * size);
        assert!(!store.entries.contains_key("s2"));
        assert!(store.entries.contains_key("s3") && store.entries.contains_key("s4"));
        assert!(["k1", "k2", "k3", "k4"]
            .iter()
            .all(|k| store.entries.contains_key(*k)));
        assert_eq!(store.bytes, 6 * size);
        // A larger size makes room among all of them, oldest first: the
        // largest bounds the whole cache.
        store.insert("k5".into(), entry("x"), 8 * size);
        store.insert("k6".into(), entry("x"), 8 * size);
        assert_eq!(store.entries.len(), 8);
        store.insert("k7".into(), entry("x"), 8 * size);
        assert!(!store.entries.contains_key("k1"));
        assert_eq!(store.bytes, 8 * size);
        // Its books balance as entries go.
        for key in ["k2", "k3", "k4", "k5", "k6", "k7", "s3", "s4"] {
            store.remove(key);
        }
        assert_eq!(store.bytes, 0);
        assert!(store.bytes_by_limit.is_empty());
        // Stores from the largest size down keep the whole cache within
        // the largest.
        for (i, limit) in [6, 5, 4, 3].into_iter().enumerate() {
            for n in 0..3 {
                store.insert(format!("d{i}-{n}").into(), entry("x"), limit * size);
            }
        }
        assert!(store.bytes <= 6 * size, "{} > {}", store.bytes, 6 * size);
    }

    #[test]
    fn cache_control_is_read_with_quotes_and_several_lines() {
        let found = directives(&[
            "Public, MAX-AGE=\"60\", no-cache=\"Set-Cookie, X-A\"",
            "s-maxage = 5 ,,private=\"a\\\"b\"",
            "max-age=\"1\"junk, no-store=\"open",
        ]);
        let found: Vec<(&str, Option<&str>)> =
            found.iter().map(|(n, a)| (*n, a.as_deref())).collect();
        assert_eq!(
            found,
            [
                ("Public", None),
                ("MAX-AGE", Some("60")),
                ("no-cache", Some("Set-Cookie, X-A")),
                ("s-maxage", Some("5")),
                ("private", Some("a\"b")),
                ("max-age", None),
                ("no-store", Some("open")),
            ]
        );
    }

    #[test]
    fn a_response_says_how_long_it_stays_fresh() {
        use std::time::UNIX_EPOCH;
        let t = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(t);
        let date = |secs: u64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        let fresh = |cc: &[&str], more: &[(HeaderName, String)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in more {
                headers.append(name.clone(), value.parse().unwrap());
            }
            own_freshness(&directives(cc), &headers, now).map(|d| d.as_secs())
        };
        assert_eq!(fresh(&[], &[]), None);
        assert_eq!(fresh(&["public"], &[]), None);
        assert_eq!(fresh(&["max-age=60"], &[]), Some(60));
        assert_eq!(fresh(&["Max-Age=\"0\""], &[]), Some(0));
        // s-maxage first, for a shared cache, either way.
        assert_eq!(fresh(&["max-age=60, s-maxage=0"], &[]), Some(0));
        assert_eq!(fresh(&["max-age=0", "s-maxage=30"], &[]), Some(30));
        // Invalid is stale; twice counts at the shortest.
        for bad in [
            "max-age=soon",
            "max-age=-1",
            "max-age",
            "max-age=",
            "s-maxage=1.5",
        ] {
            assert_eq!(fresh(&[bad], &[]), Some(0), "{bad}");
        }
        assert_eq!(fresh(&["max-age=60", "max-age=x"], &[]), Some(0));
        assert_eq!(fresh(&["max-age=60, max-age=5"], &[]), Some(5));
        // Too large to hold is 2^31 seconds.
        assert_eq!(
            fresh(&["max-age=99999999999999999999999"], &[]),
            Some(1 << 31)
        );
        // Age (from a cache before us) is spent; one not a number is
        // ignored.
        let age = |v: &str| (header::AGE, v.to_owned());
        assert_eq!(fresh(&["max-age=60"], &[age("50")]), Some(10));
        assert_eq!(fresh(&["max-age=60"], &[age("90")]), Some(0));
        assert_eq!(fresh(&["max-age=60"], &[age("x")]), Some(60));
        // Expires, from Date or now; ignored under max-age.
        let expires = |s: u64| (header::EXPIRES, date(s));
        assert_eq!(fresh(&[], &[expires(t + 30)]), Some(30));
        assert_eq!(fresh(&[], &[expires(t - 30)]), Some(0));
        assert_eq!(fresh(&[], &[expires(t)]), Some(0));
        assert_eq!(fresh(&[], &[(header::EXPIRES, "0".into())]), Some(0));
        assert_eq!(fresh(&[], &[expires(t + 30), expires(t + 10)]), Some(10));
        assert_eq!(fresh(&["max-age=60"], &[expires(t - 30)]), Some(60));
        assert_eq!(
            fresh(&["max-age=60"], &[(header::EXPIRES, "0".into())]),
            Some(60)
        );
        let dated = |s: u64| (header::DATE, date(s));
        // Expires minus Date, less the time since Date.
        assert_eq!(fresh(&[], &[dated(t - 10), expires(t + 30)]), Some(30));
        // A Date ahead of us: Expires minus Date.
        assert_eq!(fresh(&[], &[dated(t + 10), expires(t + 30)]), Some(20));
        // A Date long gone ages the response.
        assert_eq!(fresh(&["max-age=60"], &[dated(t - 3600)]), Some(0));
        assert_eq!(
            fresh(&[], &[(header::DATE, "x".into()), expires(t + 30)]),
            Some(30)
        );
    }

    #[test]
    fn counting_takes_no_new_keys_when_full() {
        let mut store = Store::default();
        let now = Instant::now();
        assert!(!store.count("real", 2, 10, now));
        for i in 0..COUNTED_KEYS {
            store.count(&format!("made-up-{i}"), 2, 10, now);
        }
        // The table is full of this period's keys: a new key goes
        // uncounted, the real URL keeps its count.
        assert!(!store.count("another", 1, 10, now));
        assert!(store.count("real", 2, 10, now));
    }
}
