//! `Metrics`: the server's figures in the Prometheus text format, for a
//! scraper (Prometheus, an OpenTelemetry or Grafana agent) to read at a URL
//! the operator maps it to. It is IIS's performance counters (Web Service,
//! W3SVC_W3WP) in the form nginx's and Caddy's exporters give them.
//!
//! Registers for:
//!
//! - **SendResponse** at First priority, which SendResponse's inverted
//!   order makes late (after CustomError and the compression modules, as
//!   for HttpLogging): on the final send of a client's request (a child
//!   request is part of its parent's) it asks to be told when the
//!   response's delivery ends, and then counts the request by site and
//!   status code, its time since it arrived, and the entity bytes each way
//!   (the response's as the connection sent them);
//! - **ExecuteRequestHandler**, as a handler: GET or HEAD gets the figures
//!   (`text/plain; version=0.0.4`, never cached); another method is left
//!   to the next handler module, or the 405 of an unanswered request.
//!
//! What the page holds:
//!
//! - `riis_requests_total{site, code}`: requests answered;
//! - `riis_request_duration_seconds{site}`: a histogram of the time from
//!   the request's arrival to its delivery's end, with Prometheus's default
//!   buckets (5 ms to 10 s);
//! - `riis_request_body_bytes_total{site}` and
//!   `riis_response_body_bytes_total{site}`: entity bytes read and sent;
//! - the answer to the runtime status query `status` (RscaQuery, as for
//!   `riis status`): the server's `uptime_seconds`, `connections_open`,
//!   `requests_started` and `requests_refused_total` (requests answered
//!   with an error before any module saw them, which no access log line
//!   shows), then every line a module answers with a number
//!   (`proxy_connections_idle`, `output_cache_bytes`, …), each as
//!   `riis_<name>` (a counter when the name ends in `_total`);
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_open_fds`, `process_max_fds` (the names Prometheus's client
//!   libraries use) and `riis_build_info{version}`.
//!
//! Counts live for the process: a reload keeps them, and a site is known by
//! its name. Each thread that finishes requests counts into figures of its
//! own (one set per site it served), written with plain loads and stores
//! since no other thread writes them; a scrape adds the threads' figures
//! up. So counting a request takes no lock and no atomic read-modify-write,
//! and the worker threads never write to the same cache line. A status
//! code outside the registered ones (RFC 9110 and the IANA registry) is
//! counted under a small lock of its thread's own, taken only for such
//! codes.
//!
//! The module has no configuration section. The page shows every site's
//! figures, so map it at a location of its own and restrict that location
//! (with `ip_security`, or an authentication module):
//!
//! ```toml
//! [[sites.locations]]
//! path = "/metrics"
//! ip_security = { allow_unlisted = false, rules = [{ address = "127.0.0.1", allowed = true }] }
//! [[sites.locations.handlers]]
//! name = "Metrics"
//! modules = ["Metrics"]
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use riis_pipeline::http::{header, HeaderValue, Method};
use riis_pipeline::{
    ApplicationInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, RscaQuery,
    SendResponseProvider, ServerInfo,
};

/// The status codes counted without a lock: RFC 9110's and the others the
/// IANA registry lists.
const REGISTERED_CODES: [u16; 62] = [
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 306, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414,
    415, 416, 417, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 510, 511,
];

/// `CODE_SLOT[code - 100]`: the code's place in [`REGISTERED_CODES`], or
/// `NO_SLOT`.
const CODE_SLOT: [u8; 500] = {
    let mut table = [NO_SLOT; 500];
    let mut i = 0;
    while i < REGISTERED_CODES.len() {
        table[(REGISTERED_CODES[i] - 100) as usize] = i as u8;
        i += 1;
    }
    table
};
const NO_SLOT: u8 = u8::MAX;

/// Upper bounds of the duration histogram's buckets, in microseconds
/// (Prometheus's default buckets: 5 ms … 10 s); one more bucket above.
const BUCKET_BOUNDS_MICROS: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
/// The same bounds as the page writes them.
const BUCKET_LABELS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// One thread's figures for one site. Only that thread writes them.
struct ThreadFigures {
    codes: [AtomicU64; REGISTERED_CODES.len()],
    /// Codes not in [`REGISTERED_CODES`], by code.
    other_codes: Mutex<Vec<(u16, u64)>>,
    /// Requests per duration bucket (not cumulative; the page adds up).
    buckets: [AtomicU64; BUCKET_BOUNDS_MICROS.len() + 1],
    duration_micros: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

impl Default for ThreadFigures {
    fn default() -> Self {
        Self {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            other_codes: Mutex::default(),
            buckets: Default::default(),
            duration_micros: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        }
    }
}

/// Adds to a figure only its own thread writes: a load and a store, no
/// read-modify-write, since no other thread can write between them (a
/// scrape only reads).
fn bump(figure: &AtomicU64, by: u64) {
    figure.store(figure.load(Relaxed).wrapping_add(by), Relaxed);
}

impl ThreadFigures {
    fn count(&self, code: u16, micros: u64, request_bytes: u64, response_bytes: u64) {
        let slot = code
            .checked_sub(100)
            .and_then(|i| CODE_SLOT.get(usize::from(i)))
            .copied()
            .unwrap_or(NO_SLOT);
        if slot == NO_SLOT {
            let mut other = self.other_codes.lock().unwrap_or_else(|e| e.into_inner());
            add_code(&mut other, code, 1);
        } else {
            bump(&self.codes[usize::from(slot)], 1);
        }
        let bucket = BUCKET_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        bump(&self.buckets[bucket], 1);
        bump(&self.duration_micros, micros);
        bump(&self.request_bytes, request_bytes);
        bump(&self.response_bytes, response_bytes);
    }
}

/// A site's figures: one set per thread that finished one of its requests.
struct SiteFigures {
    name: String,
    threads: Mutex<Vec<Arc<ThreadFigures>>>,
}

impl SiteFigures {
    /// The threads' figures added up.
    fn total(&self) -> Totals {
        let mut t = Totals::default();
        for figures in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (code, n) in REGISTERED_CODES.iter().zip(&figures.codes) {
                add_code(&mut t.codes, *code, n.load(Relaxed));
            }
            for &(code, n) in figures
                .other_codes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                add_code(&mut t.codes, code, n);
            }
            for (sum, n) in t.buckets.iter_mut().zip(&figures.buckets) {
                *sum += n.load(Relaxed);
            }
            t.duration_micros += figures.duration_micros.load(Relaxed);
            t.request_bytes += figures.request_bytes.load(Relaxed);
            t.response_bytes += figures.response_bytes.load(Relaxed);
        }
        t.codes.sort_unstable();
        t
    }
}

/// Adds `n` requests of `code` to a list of codes and counts.
fn add_code(codes: &mut Vec<(u16, u64)>, code: u16, n: u64) {
    if n == 0 {
        return;
    }
    match codes.iter_mut().find(|(c, _)| *c == code) {
        Some((_, sum)) => *sum += n,
        None => codes.push((code, n)),
    }
}

/// A site's figures over every thread.
#[derive(Default)]
struct Totals {
    codes: Vec<(u16, u64)>,
    buckets: [u64; BUCKET_BOUNDS_MICROS.len() + 1],
    duration_micros: u64,
    request_bytes: u64,
    response_bytes: u64,
}

/// Every site's figures, by name, in the order sites first finished a
/// request; for the process, so a reload keeps the counts.
fn sites() -> &'static Mutex<Vec<Arc<SiteFigures>>> {
    static SITES: OnceLock<Mutex<Vec<Arc<SiteFigures>>>> = OnceLock::new();
    SITES.get_or_init(Mutex::default)
}

/// This thread's figures for `name`, made and listed on first use.
fn thread_figures_for(name: &str) -> Arc<ThreadFigures> {
    let site = {
        let mut all = sites().lock().unwrap_or_else(|e| e.into_inner());
        match all.iter().find(|s| s.name == name) {
            Some(site) => site.clone(),
            None => {
                let site = Arc::new(SiteFigures {
                    name: name.to_owned(),
                    threads: Mutex::default(),
                });
                all.push(site.clone());
                site
            }
        }
    };
    let figures = Arc::new(ThreadFigures::default());
    site.threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(figures.clone());
    figures
}

/// This thread's figures, one entry per site it finished requests of.
#[derive(Default)]
struct ThreadSites {
    /// `(site id, site name, figures)`: a reload may give an id to another
    /// site, so the name is checked too.
    sites: Vec<(u32, String, Arc<ThreadFigures>)>,
    /// Where each site id's entry is, for a thread serving several sites.
    by_id: HashMap<u32, usize>,
    /// The entry the last request used: most requests of a thread are for
    /// the same site as the one before, and find it without hashing.
    last: usize,
}

impl ThreadSites {
    fn figures(&mut self, site: &ApplicationInfo) -> &Arc<ThreadFigures> {
        let same = |(id, name, _): &(u32, String, Arc<ThreadFigures>)| {
            *id == site.site_id && *name == site.site_name
        };
        if !self.sites.get(self.last).is_some_and(same) {
            self.last = match self.by_id.get(&site.site_id) {
                Some(&i) if same(&self.sites[i]) => i,
                found => {
                    let entry = (
                        site.site_id,
                        site.site_name.clone(),
                        thread_figures_for(&site.site_name),
                    );
                    match found {
                        // The id now names another site.
                        Some(&i) => {
                            self.sites[i] = entry;
                            i
                        }
                        None => {
                            self.sites.push(entry);
                            self.by_id.insert(site.site_id, self.sites.len() - 1);
                            self.sites.len() - 1
                        }
                    }
                }
            };
        }
        &self.sites[self.last].2
    }
}

thread_local! {
    static THREAD_SITES: RefCell<ThreadSites> = RefCell::default();
}

/// Counts a request into this thread's figures for its site once its
/// response was delivered: its duration runs to the delivery's end (a slow
/// download's includes the download) and its response bytes are those the
/// connection took (an abandoned download counts what went), as an access
/// log's `time-taken` and `sc-bytes` are. The call comes on the request's
/// connection's thread, the one whose figures these are, so the counting
/// stays free of locks.
fn count_when_delivered(ctx: &mut HttpContext) {
    let started = ctx.start_time();
    let code = ctx.response().status().as_u16();
    let request_bytes = ctx.request().bytes_received();
    let figures = THREAD_SITES.with_borrow_mut(|sites| sites.figures(ctx.site()).clone());
    ctx.on_response_delivered(move |delivery| {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        figures.count(code, micros, request_bytes, delivery.body_bytes);
    });
}

/// The page: every figure, in the Prometheus text exposition format.
fn page(ctx: &HttpContext) -> String {
    let mut out = String::with_capacity(4096);
    let sites: Vec<(String, Totals)> = {
        let all = sites().lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.iter()
            .map(|s| (label_value(&s.name), s.total()))
            .collect()
    };
    family(
        &mut out,
        "riis_requests_total",
        "counter",
        "Requests answered, by site and status code.",
    );
    for (site, t) in &sites {
        for (code, n) in &t.codes {
            let _ = writeln!(
                out,
                "riis_requests_total{{site=\"{site}\",code=\"{code}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "riis_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response's delivery, by site.",
    );
    for (site, t) in &sites {
        let mut cumulative = 0;
        for (label, n) in BUCKET_LABELS.iter().zip(&t.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "riis_request_duration_seconds_bucket{{site=\"{site}\",le=\"{label}\"}} {cumulative}"
            );
        }
        let count: u64 = t.buckets.iter().sum();
        let _ = writeln!(
            out,
            "riis_request_duration_seconds_bucket{{site=\"{site}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "riis_request_duration_seconds_sum{{site=\"{site}\"}} {}",
            seconds(t.duration_micros)
        );
        let _ = writeln!(
            out,
            "riis_request_duration_seconds_count{{site=\"{site}\"}} {count}"
        );
    }
    for (name, help, pick) in [
        (
            "riis_request_body_bytes_total",
            "Request entity bytes read, by site.",
            (|t: &Totals| t.request_bytes) as fn(&Totals) -> u64,
        ),
        (
            "riis_response_body_bytes_total",
            "Response entity bytes the connection took to send, by site (after compression; a download the client abandons counts what went).",
            |t: &Totals| t.response_bytes,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (site, t) in &sites {
            let _ = writeln!(out, "{name}{{site=\"{site}\"}} {}", pick(t));
        }
    }
    status_figures(ctx, &mut out);
    process_figures(&mut out);
    family(
        &mut out,
        "riis_build_info",
        "gauge",
        "The riis version serving, as a label.",
    );
    let _ = writeln!(
        out,
        "riis_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// The page's own families, without the `riis_` prefix, and the series
/// names a histogram adds.
const OWN_FAMILIES: [&str; 8] = [
    "requests_total",
    "request_duration_seconds",
    "request_duration_seconds_bucket",
    "request_duration_seconds_sum",
    "request_duration_seconds_count",
    "request_body_bytes_total",
    "response_body_bytes_total",
    "build_info",
];

/// The numeric lines of the runtime status query, as `riis_<name>`.
fn status_figures(ctx: &HttpContext, out: &mut String) {
    // `figures`: the numbers only (the server leaves out its list of the
    // requests in flight).
    let mut query = RscaQuery::new("status", "figures");
    ctx.raise_rsca_query(&mut query);
    let mut seen: Vec<String> = Vec::new();
    for line in query.output().lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        // A number Prometheus reads too (`1e500` parses as infinity here).
        if !value.parse::<f64>().is_ok_and(f64::is_finite) {
            continue;
        }
        let name = metric_name(name.trim());
        // Two modules answering with the same name: the first one stands;
        // and none may take the name of a family of the page's own, whose
        // second `# TYPE` would make Prometheus refuse the whole page.
        if name.is_empty() || seen.contains(&name) || OWN_FAMILIES.contains(&name.as_str()) {
            continue;
        }
        // Prometheus's naming: a `_total` only ever goes up.
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "untyped"
        };
        let _ = writeln!(out, "# TYPE riis_{name} {kind}\nriis_{name} {value}");
        seen.push(name);
    }
}

/// What the operating system says of the process: CPU time, memory, file
/// descriptors.
fn process_figures(out: &mut String) {
    use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};
    use nix::sys::time::TimeValLike;
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
        let (user, system) = (usage.user_time(), usage.system_time());
        let micros = user.num_microseconds() + system.num_microseconds();
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            seconds(u64::try_from(micros).unwrap_or(0))
        );
    }
    // statm: size, resident, … in pages.
    let resident_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok());
    if let (Some(pages), Some(page_size)) = (resident_pages, page_size) {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", pages * page_size);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        // The directory's own descriptor is one of them.
        let _ = writeln!(out, "process_open_fds {}", fds.count().saturating_sub(1));
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        family(
            out,
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {soft}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Microseconds as seconds, exactly (`1.5`, `0.000001`).
fn seconds(micros: u64) -> String {
    let (whole, fraction) = (micros / 1_000_000, micros % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A label value with `\`, `"` and line feeds escaped, as the format
/// requires.
fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A status line's name as a metric name: letters, digits and `_`, every
/// other character `_`.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The module instance; it keeps nothing per request.
#[derive(Debug, Default)]
pub struct Metrics;

impl HttpModule for Metrics {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let method = ctx.request().method();
        if method != Method::GET && method != Method::HEAD {
            return RequestNotificationStatus::Continue;
        }
        let head = method == Method::HEAD;
        let body = page(ctx);
        let response = ctx.response_mut();
        response.clear();
        response.set_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if head {
            // The length the page would have; no entity, so none is
            // counted as sent either.
            response.set_header(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        } else {
            response.write(body);
        }
        RequestNotificationStatus::FinishRequest
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if provider.is_final_send() && ctx.child_depth() == 0 {
            count_when_delivered(ctx);
        }
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    registration.set_request_notifications(
        || Metrics,
        RequestNotification::ExecuteRequestHandler | RequestNotification::SendResponse,
        RequestNotifications::NONE,
    )?;
    // Inverted in SendResponse: First runs after the modules that change
    // the status or the entity.
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::First);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_code_has_its_slot() {
        for (i, code) in REGISTERED_CODES.iter().enumerate() {
            assert_eq!(usize::from(CODE_SLOT[usize::from(code - 100)]), i, "{code}");
        }
        assert_eq!(CODE_SLOT[(299 - 100) as usize], NO_SLOT);
    }

    #[test]
    fn figures_of_one_thread_add_up() {
        let figures = ThreadFigures::default();
        figures.count(200, 4_000, 10, 100);
        figures.count(200, 5_000, 0, 50);
        figures.count(404, 5_001, 0, 7);
        figures.count(299, 11_000_000, 0, 0);
        figures.count(299, 1, 0, 0);
        figures.count(1000, 1, 0, 0);
        let site = SiteFigures {
            name: "s".into(),
            threads: Mutex::new(vec![Arc::new(figures)]),
        };
        let t = site.total();
        assert_eq!(t.codes, vec![(200, 2), (299, 2), (404, 1), (1000, 1)]);
        // 4 ms and 5 ms are in the 5 ms bucket (its bound included); 5.001
        // ms in the 10 ms one; 11 s above every bound.
        assert_eq!(t.buckets[0], 4);
        assert_eq!(t.buckets[1], 1);
        assert_eq!(t.buckets[11], 1);
        assert_eq!(t.duration_micros, 11_014_003);
        assert_eq!((t.request_bytes, t.response_bytes), (10, 157));
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_500_000), "1.5");
        assert_eq!(seconds(1), "0.000001");
        assert_eq!(seconds(12_345_678), "12.345678");
    }

    #[test]
    fn label_values_and_names_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            metric_name("proxy-connections.idle"),
            "proxy_connections_idle"
        );
    }
}
