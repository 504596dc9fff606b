//! `FailedRequestsTracing`: writes a trace of every module call of a request
//! that failed (by status code, or by taking too long) to a file of its own,
//! as IIS's failed request tracing does, so an operator sees which module
//! did what, in which notification, and how long each took.
//!
//! Registers for:
//!
//! - the global **PreBeginRequest** notification: where the location's
//!   section has `enabled`, the module starts following the request before
//!   any module of it runs, so a request that RequestFiltering (or any
//!   BeginRequest module) ends at once is traced too. Only a client's
//!   request is followed: a child request's calls, under the same request
//!   id, go into its parent's trace;
//! - the global **TraceEvent** notification: listening to it turns the
//!   engine's per-call trace events on (for every request, so listing this
//!   module costs each module call two events). Events of requests the
//!   module follows are kept in memory, by request id, until the request
//!   ends; while no request is followed (every location `enabled = false`)
//!   an event costs one atomic load;
//! - **EndRequest** (LAST priority, so every other module's EndRequest is in
//!   the trace): it checks the failure definitions. When the request ends
//!   (the instance is disposed, after the final send, whose SendResponse
//!   calls are in the trace too), a failed request's trace is handed to the
//!   module's writer thread; the events are dropped either way.
//!
//! A trace is a JSON document, `fr000001.json`, `fr000002.json`, … in
//! `directory` (numbering goes on from the highest file there, so it
//! survives restarts); at most `max_log_files` are kept, the oldest numbers
//! deleted first. It holds the request (method, URL, query string, client
//! address, site, headers with `Authorization`, `Cookie` and
//! `Proxy-Authorization` hidden), the response status, substatus and error
//! code, the time taken, the rule that matched, and each event: time since
//! the request arrived, module, notification, post-event or not, start or
//! end, the status the module returned and the time its call took, or the
//! message of a module's own trace event (at most 10,000 events per
//! request; more are counted). A directory the module creates is
//! owner-only (0700), an existing one must belong to the server's user and
//! be writable by it alone, and the files are written owner-only (0600),
//! since traces show URLs and headers; a file is never replaced, even by
//! another process's writer (a number another process took is skipped).
//! Files are written
//! on a thread of the module's own (`riis-trace`), so no response waits
//! for one; at most 256 traces wait there, and past that a trace is
//! dropped with a warning.
//!
//! Configuration section `failed_requests_tracing` (IIS's
//! `traceFailedRequests` failure definitions and `traceFailedRequestsLogging`):
//! - `enabled` (default true);
//! - `status_codes` (default `["500-599"]`): codes (`404`), ranges
//!   (`400-499`) or a code with its substatus (`404.2`);
//! - `time_taken` (seconds, fractions allowed, default 0: off): a request
//!   that took at least this long is traced whatever its status;
//! - `directory` (default: `riis-failed-requests-<uid>` under the system
//!   temp dir, one per user, so one user's folder never stops another's);
//! - `max_log_files` (default 50, at least 1);
//! - `hidden_headers` (default empty): request headers shown as `(hidden)`
//!   besides `Authorization`, `Cookie` and `Proxy-Authorization`;
//! - `hide_query_string` (default false): the query string shown as
//!   `(hidden)`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riis_pipeline::http::header;
use riis_pipeline::{
    GlobalModule, GlobalNotification, GlobalNotificationStatus, HttpContext, HttpModule,
    ModuleError, ModuleRegistration, Priority, RequestNotification, RequestNotificationStatus,
    RequestNotifications, Section, ServerInfo, TraceEvent, TracePhase,
};
use serde::Deserialize;

use crate::background::Background;

/// The `failed_requests_tracing` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailedRequestsTracingConfig {
    /// Whether requests under this location are traced.
    pub enabled: bool,
    /// The statuses that make a request a failure.
    pub status_codes: Vec<StatusRule>,
    /// Seconds after which a request is a failure whatever its status (0:
    /// never); fractions allowed (`0.5`).
    #[serde(deserialize_with = "seconds")]
    pub time_taken: f64,
    /// Where traces are written; empty for the default.
    #[serde(deserialize_with = "trace_directory")]
    pub directory: PathBuf,
    /// How many trace files are kept.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub max_log_files: u32,
    /// Request headers whose values a trace shows as `(hidden)`, besides
    /// `Authorization`, `Cookie` and `Proxy-Authorization` (an
    /// application's API key header, say).
    #[serde(deserialize_with = "header_names")]
    pub hidden_headers: Vec<header::HeaderName>,
    /// Whether a trace shows the query string as `(hidden)` (where tokens
    /// travel in URLs).
    pub hide_query_string: bool,
}

/// A list of header names; one that is not a header name is an error.
fn header_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<header::HeaderName>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|name| {
            header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| serde::de::Error::custom(format!("`{name}` is not a header name")))
        })
        .collect()
}

/// `time_taken`: seconds, whole or not, from 0 to a day.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !(0.0..=86_400.0).contains(&value) {
        return Err(serde::de::Error::custom(format!(
            "{value} is not a number of seconds from 0 to 86400"
        )));
    }
    Ok(value)
}

impl Default for FailedRequestsTracingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            status_codes: vec![StatusRule {
                from: 500,
                to: 599,
                substatus: None,
            }],
            time_taken: 0.0,
            directory: PathBuf::new(),
            max_log_files: 50,
            hidden_headers: Vec::new(),
            hide_query_string: false,
        }
    }
}

impl FailedRequestsTracingConfig {
    /// The failure definition that a request ending with
    /// `status`.`substatus` after `taken` matches, described for the
    /// trace; `None` when the request did not fail.
    fn failure(&self, status: u16, substatus: u16, taken: Duration) -> Option<String> {
        if let Some(rule) = self
            .status_codes
            .iter()
            .find(|r| r.matches(status, substatus))
        {
            return Some(describe_rule(rule));
        }
        (self.time_taken > 0.0 && taken >= Duration::from_secs_f64(self.time_taken))
            .then(|| format!("time taken at least {} s", self.time_taken))
    }
}

/// One entry of `status_codes`: `404`, `400-499` or `404.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRule {
    /// First status of the range.
    pub from: u16,
    /// Last status of the range (`from` for one code).
    pub to: u16,
    /// The substatus it must also have, if given.
    pub substatus: Option<u16>,
}

impl StatusRule {
    fn matches(&self, status: u16, substatus: u16) -> bool {
        (self.from..=self.to).contains(&status) && self.substatus.is_none_or(|s| s == substatus)
    }
}

impl std::str::FromStr for StatusRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| format!("`{text}` is not a status code (100 to 999)"))
        };
        if let Some((from, to)) = text.split_once('-') {
            let (from, to) = (code(from)?, code(to)?);
            if from > to {
                return Err(format!("`{text}`: the range ends before it starts"));
            }
            return Ok(Self {
                from,
                to,
                substatus: None,
            });
        }
        if let Some((status, sub)) = text.split_once('.') {
            let substatus = sub
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("`{text}`: `{sub}` is not a substatus"))?;
            let status = code(status)?;
            return Ok(Self {
                from: status,
                to: status,
                substatus: Some(substatus),
            });
        }
        let status = code(text)?;
        Ok(Self {
            from: status,
            to: status,
            substatus: None,
        })
    }
}

impl<'de> Deserialize<'de> for StatusRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One trace event, as kept until the request ends.
struct Event {
    /// Since the request arrived.
    at: Duration,
    module: Box<str>,
    notification: RequestNotification,
    post: bool,
    phase: TracePhase,
}

/// What the module shares between its global and request parts: the
/// events of each request followed, by request id.
#[derive(Default)]
struct Traces {
    open: Mutex<HashMap<u64, Followed>>,
    /// How many requests `open` holds, read without the lock: events of
    /// requests nobody follows cost no lock.
    followed: AtomicUsize,
    /// The configuration's folder: a relative `directory` is taken from it.
    folder: PathBuf,
}

/// The events of one request followed.
struct Followed {
    /// When the request arrived.
    arrived: Instant,
    /// At most [`MAX_EVENTS`].
    events: Vec<Event>,
    /// Events past [`MAX_EVENTS`], counted only: a request that reads a
    /// long body or streams for hours must not grow without bound.
    dropped: u64,
    /// Its share of [`HELD`]: one per event kept.
    held: Held,
}

/// Events kept per request.
const MAX_EVENTS: usize = 10_000;

/// Events held by all the traces of the process, of requests followed and
/// of traces waiting to be written: past [`MAX_EVENTS_HELD`] a request's
/// events are counted only, as past [`MAX_EVENTS`]. Many slow requests
/// followed at once (a body sent a byte at a time makes events at each
/// piece) must not take the memory: 200 such uploads held 1 GB before
/// (review K). About 100 bytes an event kept, a few hundred as a trace's
/// JSON.
static HELD: AtomicU64 = AtomicU64::new(0);

/// See [`HELD`].
const MAX_EVENTS_HELD: u64 = 100_000;

/// A share of a pool of events ([`HELD`]), given back when dropped (with
/// the request's events, or once its trace is written or dropped).
struct Held {
    count: usize,
    pool: &'static AtomicU64,
    limit: u64,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            count: 0,
            pool: &HELD,
            limit: MAX_EVENTS_HELD,
        }
    }
}

/// Events a request's trace may hold out of the pool's second half: a few
/// long requests (slow uploads) fill the first half at most, and the other
/// requests' traces, of a hundred events or so, keep theirs (review O: ten
/// slow uploads left every other trace without events).
const LARGE_TRACE: usize = 1_000;

impl Held {
    /// One more event, if the pool holds fewer than its limit, and, past
    /// half of it, if this trace holds fewer than [`LARGE_TRACE`].
    fn take_one(&mut self) -> bool {
        let budget = if self.count >= LARGE_TRACE {
            self.limit / 2
        } else {
            self.limit
        };
        let taken = crate::take_from_budget(self.pool, 1, budget);
        if taken {
            self.count += 1;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.count as u64, Ordering::Relaxed);
    }
}

/// A failed request's trace, on its way to the writer thread.
struct Report {
    dir: PathBuf,
    max_files: u32,
    trace: serde_json::Value,
    /// The trace's events' share of [`HELD`], until it is written.
    held: Held,
}

/// Traces that may wait for the writer thread.
const QUEUED_TRACES: usize = 256;

/// The trace files of one directory.
struct Numbering {
    next: u64,
    kept: VecDeque<u64>,
}

impl Traces {
    fn events(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Followed>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn follow(&self, id: u64, arrived: Instant) {
        let mut open = self.events();
        let fresh = Followed {
            arrived,
            events: Vec::new(),
            dropped: 0,
            held: Held::default(),
        };
        if open.insert(id, fresh).is_none() {
            self.followed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_followed(&self, id: u64) -> bool {
        self.events().contains_key(&id)
    }

    fn take(&self, id: u64) -> Option<Followed> {
        let taken = self.events().remove(&id);
        if taken.is_some() {
            self.followed.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    }
}

/// For each trace directory written to, the next file number and the
/// numbers of the files kept there: one table for the process, so the
/// writers of a configuration and of the one a reload replaced (both alive
/// while old requests finish) never take the same number.
fn numbering() -> &'static Mutex<HashMap<PathBuf, Numbering>> {
    static TABLE: std::sync::OnceLock<Mutex<HashMap<PathBuf, Numbering>>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// `directory`: a folder that already exists must be one the module
/// would write in (this user's, and nobody else's to write to: traces show
/// URLs and headers), or `check-config` says so instead of every failing
/// request's trace being lost. A missing one is made at the first trace.
fn trace_directory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if path.as_os_str().is_empty() {
        return Ok(path);
    }
    let full = riis_pipeline::configuration_folder().join(&path);
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if !meta.is_dir() => Err(serde::de::Error::custom(format!(
            "{} is not a folder",
            full.display()
        ))),
        Ok(meta) if crate::private_id(&meta).is_none() => Err(serde::de::Error::custom(format!(
            "{}: traces show URLs and headers, so they go only to a folder of \
                 this user's that nobody else may write to",
            crate::not_private(&full, &meta)
        ))),
        _ => Ok(path),
    }
}

impl FailedRequestsTracingConfig {
    /// Why traces of this section are not written, when it is on and takes
    /// the default directory, and that directory is not a private folder
    /// of this user's (another user made it first in the shared temp dir):
    /// for `riis check-config`'s warnings.
    pub fn default_directory_refusal(&self) -> Option<String> {
        (self.enabled && self.directory.as_os_str().is_empty())
            .then(|| crate::default_folder_refusal(DEFAULT_DIRECTORY))
            .flatten()
    }
}

/// The default directory's name under the system temp dir (with the uid).
const DEFAULT_DIRECTORY: &str = "riis-failed-requests";

/// Writes a report as the next trace file of its directory, logging what
/// happened: at most a line a second of each kind, with how many were held
/// back (a flood of failing requests must not be a flood of lines).
fn write_report(report: Report) {
    static TRACED: crate::LogGate = crate::LogGate::new();
    static FAILED: crate::LogGate = crate::LogGate::new();
    match write_trace(&report.dir, &report.trace, report.max_files) {
        Ok(path) => {
            if let Some(held_back) = TRACED.pass() {
                tracing::info!(
                    request_id = report.trace["request_id"].as_u64(),
                    status = report.trace["status"].as_u64(),
                    trace = %path.display(),
                    held_back,
                    "FailedRequestsTracing: request traced"
                );
            }
        }
        Err(why) => {
            if let Some(held_back) = FAILED.pass() {
                tracing::warn!(held_back, "FailedRequestsTracing: {why}");
            }
        }
    }
}

/// Writes `trace` as the next file of `dir` (owner-only) and deletes the
/// oldest past `max_files`; returns the file written. A file is never
/// replaced: when the number is taken (another process writes traces
/// there too), the directory is counted again and a later number is used.
fn write_trace(dir: &Path, trace: &serde_json::Value, max_files: u32) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    /// Numbers tried before giving up: each one another writer took first.
    const ATTEMPTS: usize = 100;
    /// Temporary names of this process's writers.
    static STAGED: AtomicU64 = AtomicU64::new(0);
    crate::private_directory(dir)?;
    let text = serde_json::to_vec_pretty(trace).map_err(|e| e.to_string())?;
    // Whole or not at all: a reader never sees half a trace. The name is
    // this process's and this write's alone (two containers' servers may
    // both be process 1).
    let temporary = dir.join(format!(
        ".fr.{}.{}.{}.tmp",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    /// Removes the temporary file however the write ends (a panic too).
    struct Staged<'a>(&'a Path);
    impl Drop for Staged<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let staged = Staged(&temporary);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut f| f.write_all(&text))
        .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
    let mut table = numbering().lock().unwrap_or_else(|e| e.into_inner());
    let mut result = Err(format!(
        "cannot find a free trace file name in {}",
        dir.display()
    ));
    for _ in 0..ATTEMPTS {
        let numbering = table.entry(dir.to_owned()).or_insert_with(|| scan(dir));
        let number = numbering.next;
        let path = dir.join(file_name(number));
        // A link does not replace an existing file, as a rename would.
        match std::fs::hard_link(&temporary, &path) {
            Ok(()) => {
                numbering.next = numbering.next.saturating_add(1);
                numbering.kept.push_back(number);
                while numbering.kept.len() > max_files as usize {
                    if let Some(old) = numbering.kept.pop_front() {
                        let _ = std::fs::remove_file(dir.join(file_name(old)));
                    }
                }
                result = Ok(path);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Count the directory again (the other writer's files are
                // kept and pruned too), and never retry the number taken.
                let mut fresh = scan(dir);
                fresh.next = fresh.next.max(number.saturating_add(1));
                table.insert(dir.to_owned(), fresh);
            }
            Err(e) => {
                result = Err(format!("cannot write {}: {e}", path.display()));
                break;
            }
        }
    }
    drop(table);
    drop(staged);
    result
}

fn file_name(number: u64) -> String {
    format!("fr{number:06}.json")
}

/// The trace files already in `dir`, oldest number first.
fn scan(dir: &Path) -> Numbering {
    let mut kept: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let digits = name.to_str()?.strip_prefix("fr")?.strip_suffix(".json")?;
            (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    kept.sort_unstable();
    Numbering {
        // A planted `fr18446744073709551615.json` leaves no number past
        // it: writes then fail (logged), they do not overflow.
        next: kept.last().map_or(1, |n| n.saturating_add(1)),
        kept: kept.into(),
    }
}

/// The global part: starts following requests and collects their events.
struct Collector {
    config: Section<FailedRequestsTracingConfig>,
    traces: Arc<Traces>,
}

impl GlobalModule for Collector {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        if ctx.child_depth() == 0 && ctx.config(self.config).enabled {
            self.traces.follow(ctx.request_id(), ctx.start_time());
        }
        GlobalNotificationStatus::Continue
    }

    fn on_global_trace_event(&self, event: &TraceEvent<'_>) -> GlobalNotificationStatus {
        if self.traces.followed.load(Ordering::Relaxed) == 0 {
            return GlobalNotificationStatus::Continue;
        }
        let mut open = self.traces.events();
        if let Some(followed) = open.get_mut(&event.request_id) {
            if followed.events.len() == MAX_EVENTS || !followed.held.take_one() {
                followed.dropped += 1;
            } else {
                followed.events.push(Event {
                    at: followed.arrived.elapsed(),
                    module: event.module.into(),
                    notification: event.notification,
                    post: event.is_post,
                    phase: event.phase,
                });
            }
        }
        GlobalNotificationStatus::Continue
    }
}

/// The module instance: one per request.
pub struct FailedRequestsTracing {
    config: Section<FailedRequestsTracingConfig>,
    traces: Arc<Traces>,
    writer: Arc<Background<Report>>,
    /// The request followed, until its events are taken.
    following: Option<u64>,
    /// The trace of a failed request, without its events, from EndRequest.
    report: Option<Report>,
}

impl HttpModule for FailedRequestsTracing {
    fn on_end_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A child request's calls belong to its parent's trace, which the
        // parent's instance alone writes.
        if ctx.child_depth() != 0 {
            return RequestNotificationStatus::Continue;
        }
        // Nothing followed anywhere (tracing off in every location): no
        // lock, no work.
        if self.traces.followed.load(Ordering::Relaxed) == 0 {
            return RequestNotificationStatus::Continue;
        }
        let id = ctx.request_id();
        let config = ctx.config(self.config);
        if !config.enabled {
            // Followed from where it began, but rewritten (or mapped) into a
            // location left out of tracing: its trace is that location's
            // to write, and it writes none.
            self.traces.take(id);
            return RequestNotificationStatus::Continue;
        }
        let taken = ctx.start_time().elapsed();
        let (status, substatus) = (ctx.response().status().as_u16(), ctx.response().substatus());
        let failure = config.failure(status, substatus, taken);
        // One lock: a request that did not fail has its events (if any)
        // dropped now, its final send's are not wanted; a failed one that
        // is followed keeps them for its final send, and the instance takes
        // them when it is disposed.
        let Some(failure) = failure else {
            self.traces.take(id);
            return RequestNotificationStatus::Continue;
        };
        if !self.traces.is_followed(id) {
            return RequestNotificationStatus::Continue;
        }
        self.following = Some(id);
        let dir = if config.directory.as_os_str().is_empty() {
            crate::per_user_temp(DEFAULT_DIRECTORY)
        } else {
            // Relative to the configuration's folder.
            self.traces.folder.join(&config.directory)
        };
        let max_files = config.max_log_files;
        self.report = Some(Report {
            dir,
            max_files,
            trace: trace_document(ctx, config, &failure, taken),
            held: Held::default(),
        });
        RequestNotificationStatus::Continue
    }
}

impl Drop for FailedRequestsTracing {
    /// The request has ended (its final send included): its events are
    /// dropped, or, if it failed, added to its trace for the writer thread.
    fn drop(&mut self) {
        let Some(id) = self.following.take() else {
            return;
        };
        let events = self.traces.take(id);
        let (Some(mut report), Some(mut followed)) = (self.report.take(), events) else {
            return;
        };
        report.held = std::mem::take(&mut followed.held);
        report.trace["events"] = followed.events.iter().map(event_document).collect();
        report.trace["events_dropped"] = followed.dropped.into();
        if self.writer.queue(report).is_err() {
            // A flood of failing requests must not become a flood of lines.
            static DROPPED_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = DROPPED_LOG.pass() {
                tracing::warn!(
                    request_id = id,
                    held_back,
                    "FailedRequestsTracing: too many traces waiting to be written; one was dropped"
                );
            }
        }
    }
}

fn describe_rule(rule: &StatusRule) -> String {
    match (rule.from == rule.to, rule.substatus) {
        (true, Some(sub)) => format!("status {}.{sub}", rule.from),
        (true, None) => format!("status {}", rule.from),
        (false, _) => format!("status {}-{}", rule.from, rule.to),
    }
}

/// Headers whose values a trace does not show.
const HIDDEN_HEADERS: [header::HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

fn milliseconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The trace file's document.
fn trace_document(
    ctx: &HttpContext,
    config: &FailedRequestsTracingConfig,
    failure: &str,
    taken: Duration,
) -> serde_json::Value {
    use serde_json::json;
    let request = ctx.request();
    let headers: Vec<serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let shown = if HIDDEN_HEADERS.contains(name) || config.hidden_headers.contains(name) {
                "(hidden)".into()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            json!([name.as_str(), shown])
        })
        .collect();
    let response = ctx.response();
    // What IIS's trace shows as the error: the code, which module set it
    // and in which notification, and its description.
    let error = response.error().map(|e| {
        json!({
            "code": format!("0x{:08X}", e.hresult),
            "module": e.module.map(|m| ctx.pipeline().module_name(m)),
            "notification": e.notification,
            "description": response.error_description(),
        })
    });
    json!({
        "request_id": ctx.request_id(),
        "site": ctx.site().site_name,
        "method": request.method().as_str(),
        "url": request.url(),
        "query": match config.hide_query_string {
            true if !request.query_string().is_empty() => "(hidden)",
            _ => request.query_string(),
        },
        "client": request.remote_address().to_string(),
        "headers": headers,
        "status": response.status().as_u16(),
        "substatus": response.substatus(),
        "error": error,
        "time_taken_ms": milliseconds(taken),
        "failure": failure,
        "events": [],
    })
}

/// One event, as the trace file shows it.
fn event_document(e: &Event) -> serde_json::Value {
    let mut event = serde_json::json!({
        "at_ms": milliseconds(e.at),
        "module": &*e.module,
        "notification": format!("{:?}", e.notification),
        "post": e.post,
    });
    match e.phase {
        TracePhase::ModuleStart => event["phase"] = "start".into(),
        TracePhase::ModuleEnd { status, elapsed } => {
            event["phase"] = "end".into();
            event["status"] = format!("{status:?}").into();
            event["elapsed_ms"] = milliseconds(elapsed).into();
        }
        TracePhase::Custom { message } => {
            event["phase"] = "message".into();
            event["message"] = message.into();
        }
    }
    event
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config =
        registration.declare_section::<FailedRequestsTracingConfig>("failed_requests_tracing")?;
    let traces = Arc::new(Traces {
        folder: server.configuration_folder.clone(),
        ..Traces::default()
    });
    let writer = Arc::new(Background::new("riis-trace", QUEUED_TRACES, write_report));
    registration.set_global_notifications(
        Collector {
            config,
            traces: traces.clone(),
        },
        GlobalNotification::PreBeginRequest | GlobalNotification::TraceEvent,
    )?;
    registration.set_request_notifications(
        move || FailedRequestsTracing {
            config,
            traces: traces.clone(),
            writer: writer.clone(),
            following: None,
            report: None,
        },
        RequestNotification::EndRequest.into(),
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::EndRequest, Priority::Last);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{write_trace, FailedRequestsTracingConfig, Held, Ordering, StatusRule};
    use std::sync::atomic::AtomicU64;

    /// The events all traces hold are bounded together: past the pool's
    /// limit none is kept, and what a trace held goes back when it goes.
    #[test]
    fn a_few_large_traces_leave_half_the_pool_to_the_others() {
        static POOL: AtomicU64 = AtomicU64::new(0);
        let held = || Held {
            count: 0,
            pool: &POOL,
            limit: 4 * super::LARGE_TRACE as u64,
        };
        // Two long requests: the first fills half the pool past its own
        // 1,000, the second stops at 1,000 too since half is taken.
        let (mut long, mut other_long) = (held(), held());
        while long.take_one() {}
        while other_long.take_one() {}
        assert_eq!(long.count, 2 * super::LARGE_TRACE);
        assert_eq!(other_long.count, super::LARGE_TRACE);
        // Small traces still get theirs, up to the whole pool.
        let mut small: Vec<Held> = (0..20).map(|_| held()).collect();
        for h in &mut small {
            for _ in 0..50 {
                assert!(h.take_one());
            }
        }
        drop((long, other_long, small));
        assert_eq!(POOL.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn traces_share_a_bounded_pool_of_events() {
        static POOL: AtomicU64 = AtomicU64::new(0);
        let held = || Held {
            count: 0,
            pool: &POOL,
            limit: 3,
        };
        let (mut a, mut b) = (held(), held());
        assert!(a.take_one() && a.take_one() && b.take_one());
        assert!(!b.take_one() && !a.take_one());
        assert_eq!(POOL.load(Ordering::Relaxed), 3);
        // A trace moved on (to its report) keeps its share until dropped.
        let moved = std::mem::replace(&mut a, held());
        assert!(!b.take_one());
        drop(moved);
        assert_eq!(POOL.load(Ordering::Relaxed), 1);
        assert!(b.take_one());
        drop(b);
        drop(a);
        assert_eq!(POOL.load(Ordering::Relaxed), 0);
    }

    /// Numbers go on from the files there, and a number another writer
    /// took meanwhile is not overwritten: the next free one is used.
    #[test]
    fn trace_files_are_numbered_on_and_never_replaced() {
        let dir = std::env::temp_dir().join(format!("riis-fr-numbers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fr000004.json"), "old").unwrap();
        let trace = serde_json::json!({ "n": 1 });
        let first = write_trace(&dir, &trace, 10).unwrap();
        // Another process takes the next number.
        std::fs::write(dir.join("fr000006.json"), "theirs").unwrap();
        let second = write_trace(&dir, &trace, 10).unwrap();
        let theirs = std::fs::read_to_string(dir.join("fr000006.json")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(first.file_name().unwrap(), "fr000005.json");
        assert_eq!(second.file_name().unwrap(), "fr000007.json");
        assert_eq!(theirs, "theirs");
    }

    /// A file with the last number there is leaves no number after it:
    /// the write fails, without overflowing, and leaves no temporary file.
    #[test]
    fn the_last_number_ends_numbering_without_overflow() {
        let dir = std::env::temp_dir().join(format!("riis-fr-last-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("fr{}.json", u64::MAX)), "planted").unwrap();
        let trace = serde_json::json!({ "n": 1 });
        assert!(write_trace(&dir, &trace, 10).is_err());
        assert!(write_trace(&dir, &trace, 10).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(left.len(), 1, "{left:?}");
    }

    use std::time::Duration;

    #[test]
    fn time_taken_takes_fractions_of_a_second() {
        let parse = |text: &str| toml::from_str::<FailedRequestsTracingConfig>(text);
        let half = parse("time_taken = 0.5").unwrap();
        assert!(half.failure(200, 0, Duration::from_millis(600)).is_some());
        assert!(half.failure(200, 0, Duration::from_millis(400)).is_none());
        assert_eq!(parse("time_taken = 3").unwrap().time_taken, 3.0);
        assert!(parse("time_taken = -1").is_err());
    }

    #[test]
    fn a_request_fails_by_its_status_or_by_the_time_it_took() {
        let config = FailedRequestsTracingConfig {
            status_codes: vec!["404.2".parse().unwrap(), "500-599".parse().unwrap()],
            time_taken: 5.0,
            ..FailedRequestsTracingConfig::default()
        };
        let quick = Duration::from_millis(3);
        assert_eq!(config.failure(200, 0, quick), None);
        assert_eq!(config.failure(404, 0, quick), None);
        assert_eq!(
            config.failure(404, 2, quick).as_deref(),
            Some("status 404.2")
        );
        assert_eq!(
            config.failure(502, 3, quick).as_deref(),
            Some("status 500-599")
        );
        assert_eq!(
            config.failure(200, 0, Duration::from_secs(5)).as_deref(),
            Some("time taken at least 5 s")
        );
        let no_time_rule = FailedRequestsTracingConfig::default();
        assert_eq!(
            no_time_rule.failure(200, 0, Duration::from_secs(3600)),
            None
        );
        assert_eq!(
            no_time_rule.failure(500, 0, quick).as_deref(),
            Some("status 500-599")
        );
    }

    #[test]
    fn status_rules_parse_as_iis_writes_them() {
        let rule = |s: &str| s.parse::<StatusRule>();
        assert_eq!(
            rule("404"),
            Ok(StatusRule {
                from: 404,
                to: 404,
                substatus: None
            })
        );
        assert_eq!(
            rule("400-499"),
            Ok(StatusRule {
                from: 400,
                to: 499,
                substatus: None
            })
        );
        let sub = rule("404.2").unwrap();
        assert!(sub.matches(404, 2));
        assert!(!sub.matches(404, 0));
        assert!(rule("500-599").unwrap().matches(503, 7));
        for bad in ["", "abc", "99", "1000", "500-400", "404.x", "4o4"] {
            assert!(rule(bad).is_err(), "{bad}");
        }
    }
}
