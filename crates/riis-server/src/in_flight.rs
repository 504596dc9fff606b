//! The requests in flight that `riis status` lists, as IIS's `appcmd list
//! requests` does: for each, how long it has run and the notification,
//! module and thing it waits for ("ExecuteRequestHandler, ReverseProxy,
//! waiting_module"), so an operator can tell which module holds a slow
//! request. Between a wait's end and the next wait a request is `running`
//! on its worker, with the stage and module of the wait that ended.
//!
//! Only requests that wait are listed. A request whose modules answer
//! within one turn of its worker thread runs and ends inside that turn, and
//! nothing else on the thread can look at it meanwhile; registering it
//! would cost every request a lock. A request registers when it first
//! waits (a module's Pending, a body read, a send the client has not taken)
//! and moves to a task of its own, and notes where it stands each time it
//! waits again; it leaves the list when its pipeline ends (its last bytes
//! may still be on their way to the client).
//!
//! A worker thread that a module call holds (a blocking call, an endless
//! loop) cannot run its once-a-second sweep: the report names such a worker
//! and how long it has been held. A request that had waited before the
//! call that holds it shows as `running` there, with the hold; one its
//! modules answer without waiting cannot be seen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use riis_pipeline::http::{Method, Uri, Version};
use riis_pipeline::{Activity, Pipeline, RequestExecution, RequestNotification, Waiting};

/// At most this many requests are listed (the longest-running first); the
/// count covers them all.
const LISTED: usize = 1000;

/// Longest URL shown; longer ones are cut with `…`.
const URL_SHOWN: usize = 1024;

/// Longest method shown (a client may send an extension method of any
/// length hyper accepts).
const METHOD_SHOWN: usize = 32;

/// A worker that has not swept for longer than this is reported as held.
const HELD_AFTER_MS: u64 = 3000;

/// [`HELD_AFTER_MS`] as a duration.
pub(crate) const HELD_AFTER: std::time::Duration = std::time::Duration::from_millis(HELD_AFTER_MS);

/// The waiting requests of one worker thread, and when it last swept.
#[derive(Default)]
struct Worker {
    name: String,
    requests: Mutex<BTreeMap<u64, Arc<Entry>>>,
    /// Milliseconds since [`epoch`] of the worker's last sweep; 0 until its
    /// first (threads that serve without a sweeper are never reported).
    swept_ms: AtomicU64,
}

/// Every thread's worker record, for the report.
static WORKERS: Mutex<Vec<Weak<Worker>>> = Mutex::new(Vec::new());

thread_local! {
    static THIS_WORKER: Arc<Worker> = {
        let worker = Arc::new(Worker {
            name: std::thread::current().name().unwrap_or("unnamed").to_owned(),
            ..Worker::default()
        });
        let mut all = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&worker));
        worker
    };
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch() -> u64 {
    // At least 1: 0 means "never swept".
    u64::try_from(epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Notes that this thread's worker ran its sweep now. Only a worker with a
/// thread of its own (a current-thread runtime, as `riis serve` runs each)
/// is watched: on a multi-thread runtime (riis embedded with
/// `Server::serve`) the sweeper moves between threads, which would each
/// look held once it left them.
pub(crate) fn note_sweep() {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let own_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
    if own_thread {
        let now = millis_since_epoch();
        THIS_WORKER.with(|w| w.swept_ms.store(now, Ordering::Relaxed));
    }
}

/// Notes that this thread's worker no longer sweeps (the server is
/// stopping): it is not reported as held from now on.
pub(crate) fn note_sweeps_end() {
    THIS_WORKER.with(|w| w.swept_ms.store(0, Ordering::Relaxed));
}

/// One waiting request.
struct Entry {
    id: u64,
    started: Instant,
    site_id: u32,
    client: SocketAddr,
    version: Version,
    method: Method,
    uri: Uri,
    pipeline: Arc<Pipeline>,
    /// [`Activity`] packed by [`pack`], with [`RUNNING`] set between a
    /// wait's end and the next.
    activity: AtomicU64,
    bytes_sent: AtomicU64,
    /// The connection switched protocols (a WebSocket): the module owns it.
    upgraded: AtomicBool,
}

/// Set in a packed activity while the request runs on its worker: the
/// stage and module are those of the wait that just ended.
const RUNNING: u64 = 1 << 5;

/// A request's place in the list, for as long as its task holds it.
pub(crate) struct Listed {
    entry: Arc<Entry>,
    worker: Arc<Worker>,
}

impl Listed {
    /// Lists the request `exec` runs (request `id`, on `pipeline`), which
    /// is about to wait for the first time.
    pub(crate) fn new(exec: &RequestExecution, id: u64, pipeline: Arc<Pipeline>) -> Self {
        let ctx = exec.context();
        let request = ctx.request();
        let entry = Arc::new(Entry {
            id,
            started: ctx.start_time(),
            site_id: ctx.site().site_id,
            client: request.remote_address(),
            version: request.http_version(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            pipeline,
            activity: AtomicU64::new(pack(exec.activity())),
            bytes_sent: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        });
        let worker = THIS_WORKER.with(Arc::clone);
        worker
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry.clone());
        Self { entry, worker }
    }

    /// Notes where the request stands before it waits again.
    pub(crate) fn note(&self, exec: &RequestExecution) {
        let activity = exec.activity();
        self.entry.activity.store(pack(activity), Ordering::Relaxed);
        self.entry
            .bytes_sent
            .store(activity.bytes_sent, Ordering::Relaxed);
    }

    /// Notes that the wait ended and the request runs on its worker again,
    /// until it notes its next wait: a module call that holds the worker
    /// then shows on this request, not as the wait it came from.
    pub(crate) fn note_running(&self) {
        self.entry.activity.fetch_or(RUNNING, Ordering::Relaxed);
    }

    /// Notes that the connection switched protocols (a 101).
    pub(crate) fn note_upgraded(&self) {
        self.entry.upgraded.store(true, Ordering::Relaxed);
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.worker
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.entry.id);
    }
}

const NO_MODULE: u64 = 0xFFFF;

/// `[notification bits: 32][module: 16][child depth: 8][running: 1]
/// [waiting: 4][post: 1]`.
fn pack(a: Activity) -> u64 {
    let notification = a.notification.map_or(0, |n| u64::from(n.bit()));
    let module = a.module.map_or(NO_MODULE, |m| m.get().min(0xFFFE) as u64);
    let waiting = match a.waiting {
        Waiting::Module => 0,
        Waiting::RequestBody => 1,
        Waiting::Send => 2,
        Waiting::Nothing => 3,
        Waiting::ModuleOrRequestBody => 4,
    };
    notification << 32
        | module << 16
        | (a.child_depth as u64) << 8
        | waiting << 1
        | a.is_post as u64
}

/// What a packed activity says, in words.
struct Described<'a> {
    stage: String,
    module: Option<&'a str>,
    waiting: &'static str,
    running: bool,
    child_depth: u8,
}

fn describe(packed: u64, pipeline: &Pipeline) -> Described<'_> {
    let notification = RequestNotification::from_bit((packed >> 32) as u32);
    let is_post = packed & 1 == 1;
    let waiting = match (packed >> 1) & 0xF {
        0 => "waiting_module",
        1 => "waiting_request_body",
        2 => "waiting_client",
        4 => "waiting_module_or_request_body",
        _ => "ready",
    };
    let stage = match notification {
        Some(n) if is_post => format!("Post{}", n.name()),
        Some(n) => n.name().to_owned(),
        // The final send: what is left is the client taking the response.
        None => "SendResponse".to_owned(),
    };
    let module = match (packed >> 16) & 0xFFFF {
        NO_MODULE => None,
        index => pipeline.module_names().nth(index as usize),
    };
    Described {
        stage,
        module,
        waiting,
        running: packed & RUNNING != 0,
        child_depth: (packed >> 8) as u8,
    }
}

/// Writes the figures `requests_waiting`, `requests_waiting_oldest_ms`
/// and `workers_held`; with `listing`, then one `request:` line per
/// waiting request (the longest-running first, at most [`LISTED`]) and a
/// `worker_held:` line per worker a module call has held for over
/// [`HELD_AFTER_MS`]. The figures alone cost a look at each worker, not at
/// each request (the Metrics page asks for them on every scrape).
pub(crate) fn report(out: &mut String, listing: bool) {
    let workers: Vec<Arc<Worker>> = WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let now = Instant::now();
    let now_ms = millis_since_epoch();
    let (mut waiting, mut oldest) = (0, None::<Instant>);
    for worker in &workers {
        let requests = worker.requests.lock().unwrap_or_else(|e| e.into_inner());
        waiting += requests.len();
        // Ids are handed out as requests start: each worker's first is its
        // oldest.
        if let Some((_, first)) = requests.first_key_value() {
            oldest = Some(oldest.map_or(first.started, |o| o.min(first.started)));
        }
    }
    let held = workers
        .iter()
        .filter(|w| w.held_ms(now_ms) > HELD_AFTER_MS)
        .count();
    let _ = writeln!(
        out,
        "requests_waiting: {waiting}\nrequests_waiting_oldest_ms: {}\nworkers_held: {held}",
        oldest.map_or(0, |o| now.saturating_duration_since(o).as_millis())
    );
    if !listing {
        return;
    }
    let mut entries: Vec<(Arc<Entry>, &Worker)> = Vec::new();
    for worker in &workers {
        let requests = worker.requests.lock().unwrap_or_else(|e| e.into_inner());
        entries.extend(requests.values().map(|e| (e.clone(), &**worker)));
    }
    entries.sort_by_key(|(e, _)| e.started);
    for (e, worker) in entries.iter().take(LISTED) {
        write_request(out, e, worker, now, now_ms);
    }
    for worker in &workers {
        let held = worker.held_ms(now_ms);
        if held > HELD_AFTER_MS {
            let _ = writeln!(
                out,
                "worker_held: {} held_ms={held} (a module call has not returned)",
                worker.name
            );
        }
    }
}

/// One `request:` line.
fn write_request(out: &mut String, e: &Entry, worker: &Worker, now: Instant, now_ms: u64) {
    let d = describe(e.activity.load(Ordering::Relaxed), &e.pipeline);
    let proto = if e.upgraded.load(Ordering::Relaxed) {
        "upgraded"
    } else {
        match e.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
    };
    let _ = write!(
        out,
        "request: id={} site={} worker={} elapsed_ms={} client={} proto={proto} stage={}",
        e.id,
        e.site_id,
        worker.name,
        now.saturating_duration_since(e.started).as_millis(),
        e.client,
        d.stage,
    );
    if let Some(module) = d.module {
        let _ = write!(out, " module={module}");
    }
    if d.running {
        let _ = write!(out, " state=running");
        // The wait ended and its worker is held: this request's module
        // call is likely the one holding it.
        let held = worker.held_ms(now_ms);
        if held > HELD_AFTER_MS {
            let _ = write!(out, " held_ms={held}");
        }
    } else {
        let _ = write!(out, " state={}", d.waiting);
    }
    if d.child_depth > 0 {
        let _ = write!(out, " child_depth={}", d.child_depth);
    }
    let bytes_sent = e.bytes_sent.load(Ordering::Relaxed);
    let _ = write!(out, " bytes_sent={bytes_sent} method=");
    push_cut(out, e.method.as_str(), METHOD_SHOWN);
    out.push_str(" url=");
    push_cut(
        out,
        e.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        URL_SHOWN,
    );
    out.push('\n');
}

impl Worker {
    /// How long the worker has gone without its sweep, at `now_ms` (0 for
    /// a thread that does not sweep).
    fn held_ms(&self, now_ms: u64) -> u64 {
        match self.swept_ms.load(Ordering::Relaxed) {
            0 => 0,
            swept => now_ms.saturating_sub(swept),
        }
    }
}

/// The longest time any worker thread has gone without its sweep (zero
/// when none sweeps).
pub(crate) fn longest_held() -> std::time::Duration {
    let now = millis_since_epoch();
    let longest = WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .map(|w| w.held_ms(now))
        .max()
        .unwrap_or(0);
    std::time::Duration::from_millis(longest)
}

/// Appends `text`, cut to at most `max` bytes on a character boundary.
fn push_cut(out: &mut String, text: &str, max: usize) {
    if text.len() <= max {
        out.push_str(text);
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    out.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_survives_its_packing() {
        let packed = pack(Activity {
            notification: Some(RequestNotification::AuthorizeRequest),
            is_post: true,
            module: None,
            waiting: Waiting::RequestBody,
            child_depth: 2,
            bytes_sent: 0,
        });
        let pipeline = riis_pipeline::PipelineBuilder::new().build().unwrap();
        let d = describe(packed, &pipeline);
        assert_eq!(d.stage, "PostAuthorizeRequest");
        assert_eq!(d.module, None);
        assert_eq!(d.waiting, "waiting_request_body");
        assert_eq!(d.child_depth, 2);

        let sending = pack(Activity {
            notification: None,
            is_post: false,
            module: None,
            waiting: Waiting::Send,
            child_depth: 0,
            bytes_sent: 0,
        });
        let d = describe(sending, &pipeline);
        assert_eq!(
            (d.stage.as_str(), d.waiting),
            ("SendResponse", "waiting_client")
        );
        assert!(!d.running);
        assert!(describe(sending | RUNNING, &pipeline).running);

        let duplex = pack(Activity {
            notification: Some(RequestNotification::ExecuteRequestHandler),
            is_post: false,
            module: None,
            waiting: Waiting::ModuleOrRequestBody,
            child_depth: 0,
            bytes_sent: 0,
        });
        assert_eq!(
            describe(duplex, &pipeline).waiting,
            "waiting_module_or_request_body"
        );
    }

    #[test]
    fn a_long_url_is_cut_on_a_character() {
        let mut out = String::new();
        push_cut(&mut out, "/ééé", 4);
        assert_eq!(out, "/é…");
    }
}
