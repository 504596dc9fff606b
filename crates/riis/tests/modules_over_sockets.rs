//! The server library with test modules compiled in, over real sockets:
//! panic isolation, Pending completed from another thread, body reads through
//! ReadEntity, the request body timeouts, host-name routing, and draining
//! at shutdown.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Connection, InProcessServer};
use riis_pipeline::http::{header, HeaderValue, StatusCode};
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration, ReadEntityProvider,
    RegisterModuleFn, RequestNotification as N, RequestNotificationStatus as Status,
    RequestNotifications, ServerInfo,
};

/// Panics at BeginRequest for `/boom`, and gives `/many-headers` 30,000
/// header fields; passes otherwise.
struct Boom;
impl HttpModule for Boom {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        if ctx.request().url() == "/boom" {
            panic!("boom requested");
        }
        if ctx.request().url() == "/many-headers" {
            let resp = ctx.response_mut();
            for i in 0..30_000 {
                resp.append_header(
                    riis_pipeline::http::HeaderName::from_static("x-many"),
                    riis_pipeline::http::HeaderValue::from(i),
                );
            }
            resp.write("many");
            return Status::FinishRequest;
        }
        Status::Continue
    }
}

fn register_boom(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(|| Boom, N::BeginRequest.into(), RequestNotifications::NONE)
}

/// Answers every request after a background thread signals completion.
struct Later;
impl HttpModule for Later {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let handle = ctx.completion_handle();
        ctx.response_mut().write("done later");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle.indicate_completion(Status::Continue);
        });
        Status::Pending
    }
}

fn register_later(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Later,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Rewrites `/rewrite/...` to `/secret/...` in BeginRequest (FIRST), as a
/// URL rewriting module does.
struct Rewriter;
impl HttpModule for Rewriter {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        let url = ctx.request().url().to_owned();
        if let Some(rest) = url.strip_prefix("/rewrite/") {
            ctx.request_mut()
                .set_url(&format!("/secret/{rest}"))
                .unwrap();
        }
        Status::Continue
    }
}

fn register_rewriter(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Rewriter,
        N::BeginRequest.into(),
        RequestNotifications::NONE,
    )?;
    r.set_priority_for_request_notification(N::BeginRequest, riis_pipeline::Priority::First);
    Ok(())
}

/// Requests that reached [`Forever`], and those of them that ended.
static FOREVER_ENTERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FOREVER_ENDED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// [`Forever`]'s handles, kept so that its waits are never abandoned.
static FOREVER_HANDLES: std::sync::Mutex<Vec<riis_pipeline::CompletionHandle>> =
    std::sync::Mutex::new(Vec::new());

/// Pends in its handler and never completes; counts its requests' ends.
struct Forever;
impl HttpModule for Forever {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        FOREVER_HANDLES
            .lock()
            .unwrap()
            .push(ctx.completion_handle());
        FOREVER_ENTERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Status::Pending
    }
    fn on_end_request(&mut self, _: &mut HttpContext) -> Status {
        FOREVER_ENDED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Status::Continue
    }
}

fn register_forever(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Forever,
        N::ExecuteRequestHandler | N::EndRequest,
        RequestNotifications::NONE,
    )
}

/// Reads the whole body asynchronously and echoes it.
#[derive(Default)]
struct Echo {
    body: Vec<u8>,
}
impl Echo {
    fn read_more(&mut self, ctx: &mut HttpContext) -> Status {
        match ctx.read_entity_body(7) {
            Ok(()) => Status::Pending,
            Err(_) => Status::FinishRequest,
        }
    }
}
impl HttpModule for Echo {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        self.read_more(ctx)
    }
    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        info: &CompletionInfo,
    ) -> Status {
        if info.bytes > 0 {
            self.body.extend_from_slice(ctx.request().read_data());
            return self.read_more(ctx);
        }
        let body = std::mem::take(&mut self.body);
        ctx.response_mut().write(body);
        ctx.set_request_handled();
        Status::Continue
    }
}

fn register_echo(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        Echo::default,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Upper-cases every body byte read.
struct Upper;
impl HttpModule for Upper {
    fn on_read_entity(&mut self, _: &mut HttpContext, p: &mut ReadEntityProvider) -> Status {
        let upper = p.entity().to_ascii_uppercase();
        p.set_entity(upper);
        Status::Continue
    }
}

fn register_upper(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(|| Upper, N::ReadEntity.into(), RequestNotifications::NONE)
}

/// Names the site in a header, to observe host routing.
struct SiteName;
impl HttpModule for SiteName {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        let name = HeaderValue::from_str(&ctx.site().site_name).unwrap();
        let resp = ctx.response_mut();
        resp.set_header(header::HeaderName::from_static("x-site"), name);
        resp.set_status(StatusCode::OK, "OK");
        Status::FinishRequest
    }
}

fn register_site_name(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || SiteName,
        N::BeginRequest.into(),
        RequestNotifications::NONE,
    )
}

/// Requests that reached [`Gate`]; only the shutdown test uses it.
static GATE_ENTERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Like [`Later`], but records that the request reached the handler and
/// takes long enough for a shutdown to start meanwhile.
struct Gate;
impl HttpModule for Gate {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let handle = ctx.completion_handle();
        ctx.response_mut().write("gate passed");
        GATE_ENTERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            handle.indicate_completion(Status::Continue);
        });
        Status::Pending
    }
}

fn register_gate(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Gate,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Sets `X-Tag` at BeginRequest and lets the request go on.
struct Tagger;
impl HttpModule for Tagger {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        ctx.response_mut().set_header(
            header::HeaderName::from_static("x-tag"),
            HeaderValue::from_static("early"),
        );
        Status::Continue
    }
}

fn register_tagger(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Tagger,
        N::BeginRequest.into(),
        RequestNotifications::NONE,
    )
}

/// Reads one piece of the body, then answers without reading the rest.
struct ReadOnce;
impl HttpModule for ReadOnce {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        match ctx.read_entity_body(20) {
            Ok(()) => Status::Pending,
            Err(_) => Status::FinishRequest,
        }
    }
    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        info: &CompletionInfo,
    ) -> Status {
        ctx.response_mut().write(format!("got {}", info.bytes));
        ctx.set_request_handled();
        Status::Continue
    }
}

fn register_read_once(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || ReadOnce,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Flushes part of the entity in ExecuteRequestHandler (except for
/// `/close-early`, which asks for a disconnect there instead, and
/// `/no-content`, a 204 with a body; `/no-content-streamed` flushes its
/// 204), then in
/// ReleaseRequestState panics (`/panic`), asks for a disconnect (`/close`)
/// or resets the connection (`/reset`).
struct FlushThen;
impl HttpModule for FlushThen {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let url = ctx.request().url().to_owned();
        if url.starts_with("/no-content") {
            // A 204 whose module left a body in it.
            ctx.response_mut()
                .set_status(http::StatusCode::NO_CONTENT, "No Content");
        }
        ctx.response_mut().write("part;");
        if url == "/close-early" || url == "/no-content" {
            if url == "/close-early" {
                ctx.response_mut().set_need_disconnect();
            }
        } else {
            ctx.response_mut().flush(Default::default());
        }
        ctx.set_request_handled();
        Status::Continue
    }
    fn on_release_request_state(&mut self, ctx: &mut HttpContext) -> Status {
        match ctx.request().url() {
            "/panic" => panic!("failing after the headers went out"),
            "/close" => ctx.response_mut().set_need_disconnect(),
            "/reset" => ctx.response_mut().reset_connection(),
            "/late-status" => {
                // Too late: the 200 went out with the flush.
                let resp = ctx.response_mut();
                resp.set_status(http::StatusCode::NOT_FOUND, "Not Found");
                resp.write("rest");
            }
            _ => ctx.response_mut().write("rest"),
        }
        Status::Continue
    }
}

fn register_flush_then(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || FlushThen,
        N::ExecuteRequestHandler | N::ReleaseRequestState,
        RequestNotifications::NONE,
    )
}

/// Streams `a.bin` (100 bytes) for `/short` after declaring a
/// `Content-Length` of 10, and all of `b.bin` otherwise, both as file ranges
/// behind an early flush.
struct Declares;
impl HttpModule for Declares {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let short = ctx.request().url() == "/short";
        let name = if short { "a.bin" } else { "b.bin" };
        let path = ctx.map_path(&format!("/{name}"));
        let file = std::sync::Arc::new(std::fs::File::open(path).unwrap());
        let len = file.metadata().unwrap().len();
        let resp = ctx.response_mut();
        if short {
            resp.set_header(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        }
        resp.write("<");
        resp.flush(Default::default());
        resp.write_file_range(file, 0, len);
        ctx.set_request_handled();
        Status::Continue
    }
}

fn register_declares(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Declares,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Counts the file cache's events (only the test that lists it does).
static CACHE_ADDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FILE_CHANGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct CacheWatch;
impl riis_pipeline::GlobalModule for CacheWatch {
    fn on_global_cache_operation(
        &self,
        operation: &riis_pipeline::CacheOperation<'_>,
    ) -> riis_pipeline::GlobalNotificationStatus {
        if matches!(operation, riis_pipeline::CacheOperation::Add { .. }) {
            CACHE_ADDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        riis_pipeline::GlobalNotificationStatus::Continue
    }
    fn on_global_file_change(
        &self,
        _: &std::path::Path,
    ) -> riis_pipeline::GlobalNotificationStatus {
        FILE_CHANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        riis_pipeline::GlobalNotificationStatus::Continue
    }
}

fn register_cache_watch(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    use riis_pipeline::GlobalNotification as G;
    r.set_global_notifications(CacheWatch, G::CacheOperation | G::FileChange)
}

/// Counts ApplicationStop and Terminate (only the test that lists it does).
static STOPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static TERMINATES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Lifetimes;
impl riis_pipeline::GlobalModule for Lifetimes {
    fn on_global_application_stop(
        &self,
        _: &riis_pipeline::Application<'_>,
    ) -> riis_pipeline::GlobalNotificationStatus {
        STOPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        riis_pipeline::GlobalNotificationStatus::Continue
    }
    fn terminate(&self) {
        TERMINATES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn register_lifetimes(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_global_notifications(
        Lifetimes,
        riis_pipeline::GlobalNotification::ApplicationStop.into(),
    )
}

/// The body size [`Sized`] answers with (set by the test that uses it).
static SIZED_BODY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Answers with `SIZED_BODY` bytes from memory (no file, so no sendfile).
struct Sized;
impl HttpModule for Sized {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let len = SIZED_BODY.load(std::sync::atomic::Ordering::SeqCst);
        ctx.response_mut().write(vec![b's'; len]);
        Status::Continue
    }
}

fn register_sized(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Sized,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Posts a completion from each of its completions, for ever: it never
/// waits for anything.
struct Spinner;
impl HttpModule for Spinner {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        ctx.post_completion(0).unwrap();
        Status::Pending
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        _: &CompletionInfo,
    ) -> Status {
        ctx.post_completion(0).unwrap();
        Status::Pending
    }
}

fn register_spinner(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Spinner,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// For `/flush`: flushes asynchronously, with nothing to send, from each
/// flush's completion, for ever; answers "fine" otherwise.
struct Flusher;
impl Flusher {
    fn flush_again(ctx: &mut HttpContext) -> Status {
        ctx.response_mut().flush(riis_pipeline::FlushOptions {
            asynchronous: true,
            more_data: true,
        });
        Status::Pending
    }
}
impl HttpModule for Flusher {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        if ctx.request().url() == "/flush" {
            return Self::flush_again(ctx);
        }
        ctx.response_mut().write("fine");
        Status::Continue
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        _: &CompletionInfo,
    ) -> Status {
        Self::flush_again(ctx)
    }
}

fn register_flusher(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Flusher,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[
    ("Flusher", register_flusher),
    ("Spinner", register_spinner),
    ("Sized", register_sized),
    ("Lifetimes", register_lifetimes),
    ("Include", register_include),
    ("CacheWatch", register_cache_watch),
    ("Declares", register_declares),
    ("FlushThen", register_flush_then),
    ("ReadOnce", register_read_once),
    ("Tagger", register_tagger),
    ("Gate", register_gate),
    ("Boom", register_boom),
    ("Later", register_later),
    ("Forever", register_forever),
    ("Rewriter", register_rewriter),
    ("Echo", register_echo),
    ("Upper", register_upper),
    ("SiteName", register_site_name),
];

/// Includes `/part.txt` in every page: writes `<page>`, runs the part as
/// a buffered child request, and writes `</page>` when it completes.
struct Include;
impl HttpModule for Include {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        ctx.response_mut().write("<page>");
        let flags = riis_pipeline::ExecuteFlags {
            buffer_response: true,
            ..Default::default()
        };
        let started = ctx
            .clone_context_with_url("/part.txt")
            .and_then(|child| ctx.execute_request(child, flags));
        match started {
            Ok(()) => Status::Pending,
            Err(e) => {
                ctx.response_mut().set_error_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    0,
                    e.hresult,
                );
                Status::FinishRequest
            }
        }
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        _: &CompletionInfo,
    ) -> Status {
        ctx.response_mut().write("</page>");
        Status::Continue
    }
}

fn register_include(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Include,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

fn handler_config(modules: &[&str], handler: &str) -> String {
    let mut text = String::new();
    for m in modules {
        text.push_str(&format!("[[modules]]\nname = \"{m}\"\n"));
    }
    text.push_str(&format!(
        "[[handlers]]\nname = \"h\"\npath = \"*\"\nmodules = [\"{handler}\"]\n\
         [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n"
    ));
    text
}

/// A status set after the head went out reaches no client: the access log
/// writes the one the client got.
#[test]
fn the_access_log_has_the_status_that_went_out() {
    let server = InProcessServer::start(
        &handler_config(&["HttpLogging", "FlushThen"], "FlushThen"),
        TEST_MODULES,
    );
    let resp = Connection::open(server.addr).get("/late-status");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "part;rest");
    let folder = server.dir().join("logs/W3SVC1");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text: String = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("/late-status")) {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no log line: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let fields: Vec<&str> = line.split(' ').collect();
    // date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username
    // c-ip cs(User-Agent) cs(Referer) sc-status …
    assert_eq!(fields[11], "200", "{line}");
    server.stop();
}

#[test]
fn a_panicking_module_fails_only_its_request() {
    let server = InProcessServer::start(&handler_config(&["Boom", "Later"], "Later"), TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/boom");
    assert_eq!(resp.status, 500);
    // Same connection, same server: the next request is served normally.
    let resp = conn.get("/fine");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "done later");
    // A head no client would take (and hyper could not finish): 500, and
    // the server goes on.
    assert_eq!(conn.get("/many-headers").status, 500);
    assert_eq!(Connection::open(server.addr).get("/fine").status, 200);
    server.stop();
}

/// A client that leaves while a module is pending ends the request (its
/// LogRequest and EndRequest run, its modules are disposed) instead of
/// keeping it until the module completes or `timeouts.execution` runs out.
#[test]
fn a_pending_request_ends_when_its_client_leaves() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = InProcessServer::start(&handler_config(&["Forever"], "Forever"), TEST_MODULES);
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    while FOREVER_ENTERED.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(FOREVER_ENDED.load(SeqCst), 0);
    drop(conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while FOREVER_ENDED.load(SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request still waits for its module after the client left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // A client that only ends its sending side is taken as gone too, as
    // nginx takes one whose request waits on its upstream (its 499): the
    // request ends, and the connection closes without an answer.
    let (entered, ended) = (FOREVER_ENTERED.load(SeqCst), FOREVER_ENDED.load(SeqCst));
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n");
    while FOREVER_ENTERED.load(SeqCst) == entered {
        std::thread::sleep(Duration::from_millis(1));
    }
    conn.shutdown_write();
    while FOREVER_ENDED.load(SeqCst) == ended {
        assert!(
            std::time::Instant::now() < deadline,
            "the request still waits for its module after the client ended its side"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        conn.is_closed_or_reset(),
        "no answer, and the connection closed"
    );
    server.stop();
}

/// A module that keeps completing its own operations, never waiting, meets
/// the execution limit too (it used to run for ever, and past shutdown),
/// while other requests are served.
#[test]
fn a_module_that_never_stops_completing_meets_the_execution_limit() {
    let text = handler_config(&["Spinner"], "Spinner")
        .replace("[[handlers]]", "[timeouts]\nexecution = 1\n[[handlers]]");
    let server = InProcessServer::start(&text, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/spin");
    assert_eq!(resp.status, 503, "{}", resp.text());
    server.stop();
}

/// A module that flushes from each flush's completion with nothing to send
/// (or on a HEAD request, whose body is dropped) gets no wait from its
/// sends: it neither holds its worker (the one worker serves another
/// connection meanwhile) nor runs past the execution limit.
#[test]
fn a_module_that_flushes_from_each_flush_yields_and_meets_the_execution_limit() {
    let text = handler_config(&["Flusher"], "Flusher").replace(
        "[[handlers]]",
        "[server]\nworker_threads = 1\n[timeouts]\nexecution = 1\n[[handlers]]",
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    for method in ["GET", "HEAD"] {
        let mut spinning = std::net::TcpStream::connect(server.addr).unwrap();
        spinning
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(spinning, "{method} /flush HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let resp = Connection::open(server.addr).get("/other");
        assert_eq!(resp.status, 200, "{method}: another connection is served");
        assert_eq!(resp.text(), "fine");
        // The head went out with the first flush; past the limit the
        // request ends, cut short, and so does its connection (with a
        // reset, so the client cannot take it for a whole response).
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match spinning.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{method}: the request did not end: {e}"),
            }
        }
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "{method}: {got}");
    }
    server.stop();
}

/// A URL rewritten in BeginRequest after RequestFiltering looked at it is
/// filtered again, or a rewrite would lead past the rules.
#[test]
fn a_url_rewritten_in_begin_request_is_filtered_too() {
    let text = "[[modules]]\nname = \"RequestFiltering\"\n[[modules]]\nname = \"Rewriter\"\n\
        [[modules]]\nname = \"StaticFile\"\n\
        [[handlers]]\nname = \"h\"\npath = \"*\"\nresource_type = \"File\"\nmodules = [\"StaticFile\"]\n\
        [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n\
        request_filtering = { hidden_segments = [\"secret\"] }\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    std::fs::create_dir_all(server.dir().join("secret")).unwrap();
    std::fs::write(server.dir().join("secret/a.txt"), "s3cret").unwrap();
    let resp = Connection::open(server.addr).get("/rewrite/a.txt");
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert!(!resp.text().contains("s3cret"));
    // Not rewritten, the same rule answers in BeginRequest.
    assert_eq!(
        Connection::open(server.addr).get("/secret/a.txt").status,
        404
    );
}

#[test]
fn pending_is_completed_from_another_thread() {
    let server = InProcessServer::start(&handler_config(&["Later"], "Later"), TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        let resp = conn.get("/x");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "done later");
    }
}

#[test]
fn request_bodies_are_read_through_read_entity() {
    let server = InProcessServer::start(&handler_config(&["Upper", "Echo"], "Echo"), TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let body = "hello body, longer than one read of seven bytes";
    conn.send_raw(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), body.to_ascii_uppercase());
    // Chunked request bodies too.
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab cd\r\n3\r\nefg\r\n0\r\n\r\n");
    assert_eq!(conn.read_response(false).text(), "AB CDEFG");
    // And an empty body ends at once.
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response(false).text(), "");
}

#[test]
fn a_head_with_content_length_and_transfer_encoding_is_refused_after_bodies_that_name_them() {
    let server = InProcessServer::start(&handler_config(&["Echo"], "Echo"), TEST_MODULES);
    // Bodies that contain both field names are data: their requests and
    // the ones after them are served. A head with both fields then gets
    // 400 and the connection closes, however many requests came before it
    // in the same read.
    let data = "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let stream = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n{data}\
         POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {len:x};ext=1\r\n{data}\r\n0\r\nX-Trailer: 1\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok\
         POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
         3\r\nabc\r\n0\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nno",
        len = data.len()
    );
    let mut conn = Connection::open(server.addr);
    conn.send_raw(stream.as_bytes());
    for want in [data, data, "ok"] {
        let resp = conn.read_response(false);
        assert_eq!((resp.status, resp.text()), (200, want.to_string()));
    }
    let refused = conn.read_response(false);
    assert_eq!(refused.status, 400);
    assert!(refused
        .text()
        .contains("Content-Length and Transfer-Encoding"));
    assert!(conn.is_closed());

    // One request at a time on a kept-alive connection, fields in the
    // other order.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(conn.read_response(false).text(), "x");
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 400);
    assert!(conn.is_closed());
}

/// `handler_config` for `Echo` with `[timeouts]` set to `timeouts`.
fn echo_with_timeouts(timeouts: &str) -> InProcessServer {
    let text = format!(
        "[timeouts]\n{timeouts}\n{}",
        handler_config(&["Echo"], "Echo")
    );
    InProcessServer::start(&text, TEST_MODULES)
}

#[test]
fn a_request_body_that_stops_coming_gets_408_and_a_close() {
    let server = echo_with_timeouts("body_read = 1\nbody_min_rate = 0");
    let mut conn = Connection::open(server.addr);
    // Ten bytes of twenty, then nothing.
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n0123456789");
    let started = std::time::Instant::now();
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 408);
    assert!(conn.is_closed(), "the connection stayed open after 408");
    assert!(started.elapsed() < Duration::from_secs(15));
    // Others are served meanwhile and after.
    let mut other = Connection::open(server.addr);
    other.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(other.read_response(false).text(), "ok");
}

#[test]
fn a_request_body_trickled_below_the_minimum_rate_gets_408() {
    // A byte every 300 ms beats `body_read` (5 s) forever, but is about 3
    // bytes a second against a floor of 100 after a 1 s grace.
    let server = echo_with_timeouts("body_read = 5\nbody_min_rate = 100\nbody_min_rate_grace = 1");
    let mut client = std::net::TcpStream::connect(server.addr).unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    // Whatever the server answers, read to the close on another thread.
    let mut reader = client.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let answer = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        got
    });
    let mut sent = 0;
    while !answer.is_finished() && sent < 50 {
        if client.write_all(b"x").is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let got = String::from_utf8_lossy(&answer.join().unwrap()).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 408 "),
        "after {sent} bytes: {got}"
    );
    // Cut off after the grace, long before `body_read` could have.
    assert!(sent < 30, "{sent} bytes were accepted at ~3 bytes/s");

    // A body whose bytes cover its pauses is read whole: 300 bytes earn 3 s
    // of waiting at 100 bytes/s, and the pause is 1.5 s.
    let mut fair = Connection::open(server.addr);
    let first = "a".repeat(300);
    fair.send_raw(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 303\r\n\r\n{first}").as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    fair.send_raw(b"def");
    let resp = fair.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), format!("{first}def"));
}

#[test]
fn host_names_choose_the_site() {
    let text = "[[modules]]\nname = \"SiteName\"\n\
        [[sites]]\nname = \"alpha\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0:alpha.test\"]\n\
        [[sites]]\nname = \"fallback\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET / HTTP/1.1\r\nHost: Alpha.Test:1234\r\n\r\n");
    assert_eq!(conn.read_response(false).header("x-site"), Some("alpha"));
    // A fully qualified name (trailing dot) is the same host.
    conn.send_raw(b"GET / HTTP/1.1\r\nHost: alpha.test.\r\n\r\n");
    assert_eq!(conn.read_response(false).header("x-site"), Some("alpha"));
    conn.send_raw(b"GET / HTTP/1.1\r\nHost: alpha.test.:80\r\n\r\n");
    assert_eq!(conn.read_response(false).header("x-site"), Some("alpha"));
    conn.send_raw(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert_eq!(conn.read_response(false).header("x-site"), Some("fallback"));

    // Without a fallback, a name no site has is http.sys's 400 with its
    // reason, and the connection closes.
    let text = "[[modules]]\nname = \"SiteName\"\n\
        [[sites]]\nname = \"alpha\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0:alpha.test\"]\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\nGET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n",
    );
    let refused = conn.read_response(false);
    assert_eq!(refused.status, 400);
    assert!(
        refused.text().contains("Invalid Hostname"),
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(
        conn.is_closed_or_reset(),
        "the pipelined request was not answered"
    );
}

/// IIS 10's wildcard hosts: `*.example.test` answers every name below
/// `example.test` (one label or more) but not `example.test` itself; a
/// host name bound exactly wins over a wildcard, the longer wildcard over
/// the shorter whatever the order they are listed in, and the binding
/// without a host takes the rest.
#[test]
fn wildcard_hosts_answer_the_names_below_them() {
    let text = "[[modules]]\nname = \"SiteName\"\n\
        [[sites]]\nname = \"tenants\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0:*.example.test\"]\n\
        [[sites]]\nname = \"www\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0:www.example.test\"]\n\
        [[sites]]\nname = \"eu\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0:*.EU.example.test\"]\n\
        [[sites]]\nname = \"fallback\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    for (host, site) in [
        ("shop.example.test", "tenants"),
        ("Shop.Example.Test.:8080", "tenants"),
        ("a.b.example.test", "tenants"),
        ("www.example.test", "www"),
        ("paris.eu.example.test", "eu"),
        ("eu.example.test", "tenants"),
        ("example.test", "fallback"),
        ("xexample.test", "fallback"),
        (".example.test", "fallback"),
        ("other.test", "fallback"),
    ] {
        conn.send_raw(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let resp = conn.read_response(false);
        assert_eq!(resp.header("x-site"), Some(site), "{host}: {}", resp.status);
    }
}

/// `*:P` and `127.0.0.1:P` together (IIS's "All Unassigned" beside an
/// address of its own): one socket on the wildcard, and each connection
/// routed by the address it arrived at. Host names bound to the wildcard
/// still win over the address's catch-all, as in http.sys.
#[test]
fn an_address_binding_beside_a_wildcard_on_the_same_port_gets_its_own_connections() {
    let port = common::free_port();
    let text = format!(
        "[[modules]]\nname = \"SiteName\"\n\
        [[sites]]\nname = \"any\"\nroot = 'ROOT'\nbindings = [\"*:{port}\"]\n\
        [[sites]]\nname = \"local\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:{port}\"]\n\
        [[sites]]\nname = \"named\"\nroot = 'ROOT'\nbindings = [\"*:{port}:named.test\"]\n"
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    assert_eq!(
        server.addr,
        std::net::SocketAddr::from(([0, 0, 0, 0], port))
    );
    let site_at = |ip: [u8; 4], host: &str| {
        let mut conn = Connection::open(std::net::SocketAddr::from((ip, port)));
        conn.send_raw(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        conn.read_response(false)
            .header("x-site")
            .map(str::to_owned)
    };
    assert_eq!(site_at([127, 0, 0, 1], "x.test").as_deref(), Some("local"));
    assert_eq!(site_at([127, 0, 0, 2], "x.test").as_deref(), Some("any"));
    assert_eq!(
        site_at([127, 0, 0, 1], "named.test").as_deref(),
        Some("named")
    );
    assert_eq!(
        site_at([127, 0, 0, 2], "named.test").as_deref(),
        Some("named")
    );
}

#[test]
fn shutdown_lets_in_flight_requests_finish() {
    let server = InProcessServer::start(&handler_config(&["Gate"], "Gate"), TEST_MODULES);
    let addr = server.addr;
    let client = std::thread::spawn(move || Connection::open(addr).get("/slow"));
    while GATE_ENTERED.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The request is parked in the pipeline: stop the server now.
    server.stop();
    let resp = client.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "gate passed");
}

#[test]
fn static_files_keep_headers_earlier_modules_set() {
    let text = "[[modules]]\nname = \"Tagger\"\n[[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"DefaultDocument\"\n\
        [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nverbs = [\"GET\", \"HEAD\"]\nresource_type = \"Either\"\nmodules = [\"StaticFile\", \"DefaultDocument\"]\n\
        [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    std::fs::write(server.dir().join("index.html"), "home").unwrap();
    std::fs::write(server.dir().join("a.txt"), "alpha").unwrap();
    let mut conn = Connection::open(server.addr);
    for path in ["/a.txt", "/"] {
        let resp = conn.get(path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("x-tag"), Some("early"), "{path}");
    }
    let resp = conn.get("/missing.txt");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-tag"), Some("early"));
}

#[test]
fn an_answer_before_the_body_is_read_still_reaches_the_client() {
    let server = InProcessServer::start(&handler_config(&["ReadOnce"], "ReadOnce"), TEST_MODULES);
    for request in [
        &b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n4\r\nmore\r\n0\r\n\r\n"[..],
        &b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789"[..],
    ] {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(request);
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "got 20");
    }
}

#[test]
fn the_rest_of_a_body_a_module_did_not_read_is_discarded() {
    let server = InProcessServer::start(&handler_config(&["ReadOnce"], "ReadOnce"), TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 50020\r\n\r\n01234567890123456789",
    );
    assert_eq!(conn.read_response(false).text(), "got 20");
    // The module answered after 20 bytes; the rest, sent after the answer,
    // is read and dropped, and the connection serves the next request.
    for _ in 0..5 {
        conn.send_raw(&[b'z'; 10_000]);
    }
    conn.send_raw(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nabcdefghijabcdefghij");
    assert_eq!(conn.read_response(false).text(), "got 20");
}

/// Sends `request` on a new connection and reads until the server closes it
/// (or 5 s pass): everything the server sent, and whether it closed.
fn exchange_until_close(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn a_streamed_response_that_fails_after_its_headers_is_cut_short_not_finished() {
    let server = InProcessServer::start(&handler_config(&["FlushThen"], "FlushThen"), TEST_MODULES);
    // A whole streamed response: chunked, finished, the connection kept.
    let mut conn = Connection::open(server.addr);
    for _ in 0..2 {
        let resp = conn.get("/fine");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "part;rest");
    }

    for path in ["/panic", "/reset"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let (got, closed) = exchange_until_close(server.addr, request.as_bytes());
        assert!(closed, "{path}: the connection closes");
        // hyper may drop what it had not written yet when the body fails:
        // the client sees the start of the response, or nothing.
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
        assert!(
            !got.ends_with("0\r\n\r\n"),
            "{path}: the chunked body must not end as if it were whole: {got:?}"
        );
    }

    // A disconnect the module asks for after the head went out: the
    // response ends whole, then the connection closes.
    let (got, closed) =
        exchange_until_close(server.addr, b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(closed, "the connection closes after the response");
    assert!(got.contains("part;"), "{got:?}");
    assert!(
        got.ends_with("0\r\n\r\n"),
        "the response is finished: {got:?}"
    );
}

#[test]
fn a_declared_length_ends_a_streamed_file_without_leaking_into_the_next_response() {
    let server = InProcessServer::start(&handler_config(&["Declares"], "Declares"), TEST_MODULES);
    std::fs::write(server.dir().join("a.bin"), [b'a'; 100]).unwrap();
    std::fs::write(server.dir().join("b.bin"), [b'b'; 50]).unwrap();
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        let short = conn.get("/short");
        assert_eq!(short.status, 200);
        assert_eq!(short.text(), "<aaaaaaaaa", "the declared 10 bytes");
        let whole = conn.get("/whole");
        assert_eq!(whole.status, 200);
        assert_eq!(whole.text(), format!("<{}", "b".repeat(50)), "b.bin, whole");
    }
}

/// A request body of unknown length (no size hint, so the client sends no
/// `Content-Length`): one piece, then the end, or with `stall` nothing
/// more and no end.
struct StallingBody {
    piece: Option<bytes::Bytes>,
    stall: bool,
}

impl hyper::body::Body for StallingBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.piece.take() {
            Some(piece) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece)))),
            None if self.stall => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }
}

/// A body too slow on one HTTP/2 stream gets that stream its 408; the
/// connection's other streams go on (on HTTP/1.x the connection closes,
/// as its unread body is in the way).
#[test]
fn over_http2_a_slow_body_ends_only_its_stream() {
    use http_body_util::BodyExt;
    let server = echo_with_timeouts("body_read = 1\nbody_min_rate = 0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut sender, conn) = common::http2_connection(server.addr).await;
        let post = |piece: &'static [u8], stall: bool| {
            http::Request::post(format!("http://{}/echo", server.addr))
                .body(StallingBody {
                    piece: Some(bytes::Bytes::from_static(piece)),
                    stall,
                })
                .unwrap()
        };
        let slow = sender
            .send_request(post(b"0123456789", true))
            .await
            .unwrap();
        assert_eq!(slow.status(), 408);
        let next = sender.send_request(post(b"ok", false)).await.unwrap();
        assert_eq!(next.status(), 200);
        let body = next.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert!(!conn.is_finished(), "the connection ended");
    });
}

/// HTTP/2 needs no `Content-Length` for a body; the module still reads it.
#[test]
fn over_http2_a_body_without_content_length_is_read() {
    use http_body_util::BodyExt;
    let server = InProcessServer::start(&handler_config(&["Echo"], "Echo"), TEST_MODULES);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sender = common::http2_client(server.addr).await;
        let request = http::Request::post(format!("http://{}/echo", server.addr))
            .body(StallingBody {
                piece: Some(bytes::Bytes::from_static(b"streamed body")),
                stall: false,
            })
            .unwrap();
        assert!(request.headers().get("content-length").is_none());
        let resp = sender.send_request(request).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"streamed body");
    });
}

#[test]
fn over_http2_a_failure_after_the_headers_resets_the_stream() {
    use http_body_util::{BodyExt, Empty};
    let server = InProcessServer::start(&handler_config(&["FlushThen"], "FlushThen"), TEST_MODULES);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sender = common::http2_client(server.addr).await;
        let request = |path: &str| {
            http::Request::get(format!("http://{}{path}", server.addr))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        // Whole.
        let resp = sender.send_request(request("/fine")).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"part;rest");
        // Cut short: the stream is reset, before or after its head.
        if let Ok(resp) = sender.send_request(request("/panic")).await {
            assert!(
                resp.into_body().collect().await.is_err(),
                "the body must not end as if it were whole"
            );
        }
        // The connection serves the next stream.
        let resp = sender.send_request(request("/fine")).await.unwrap();
        assert_eq!(resp.status(), 200);
    });
}

/// HTTP/2 has no `Connection: close`: a disconnect a module asks for,
/// before the head went out or after, ends the connection with GOAWAY once
/// its streams are done.
#[test]
fn over_http2_a_disconnect_ends_the_connection_with_goaway() {
    use http_body_util::{BodyExt, Empty};
    let server = InProcessServer::start(&handler_config(&["FlushThen"], "FlushThen"), TEST_MODULES);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (path, whole) in [("/close-early", "part;rest"), ("/close", "part;")] {
        rt.block_on(async {
            let (mut sender, conn) = common::http2_connection(server.addr).await;
            let request = http::Request::get(format!("http://{}{path}", server.addr))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(request).await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert!(resp.headers().get("connection").is_none(), "{path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], whole.as_bytes(), "{path}: the response is whole");
            tokio::time::timeout(std::time::Duration::from_secs(20), conn)
                .await
                .unwrap_or_else(|_| panic!("{path}: the connection stays open"))
                .unwrap()
                .ok();
        });
    }
}

/// Responses without content (HEAD, 204) carry none, on HTTP/1.1 and
/// HTTP/2, whether the module flushed early or left bytes in a 204; the
/// module's later sends still succeed (the connection goes on).
#[test]
fn responses_without_content_send_none_on_either_protocol() {
    use http_body_util::{BodyExt, Empty};
    let server = InProcessServer::start(&handler_config(&["FlushThen"], "FlushThen"), TEST_MODULES);
    // HTTP/1.1, one connection throughout.
    let mut conn = Connection::open(server.addr);
    for _ in 0..2 {
        conn.send_raw(b"HEAD /fine HTTP/1.1\r\nHost: t\r\n\r\n");
        let head = conn.read_response(true);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        for path in ["/no-content", "/no-content-streamed"] {
            let resp = conn.get(path);
            assert_eq!(resp.status, 204, "{path}");
            assert!(resp.body.is_empty(), "{path}");
            assert_eq!(resp.header("content-length"), None, "{path}");
            assert_eq!(resp.header("transfer-encoding"), None, "{path}");
        }
        assert_eq!(conn.get("/fine").text(), "part;rest");
    }
    // HTTP/2.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sender = common::http2_client(server.addr).await;
        let request = |method: http::Method, path: &str| {
            http::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", server.addr))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        for (method, path, status) in [
            (http::Method::HEAD, "/fine", 200),
            (http::Method::GET, "/no-content", 204),
            (http::Method::GET, "/no-content-streamed", 204),
        ] {
            sender.ready().await.unwrap();
            let resp = sender
                .send_request(request(method.clone(), path))
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{method} {path}");
            if status == 204 {
                assert!(resp.headers().get("content-length").is_none(), "{path}");
            }
            let body = resp.into_body().collect().await;
            let body = body
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
                .to_bytes();
            assert!(body.is_empty(), "{method} {path}: {body:?}");
        }
        sender.ready().await.unwrap();
        let resp = sender
            .send_request(request(http::Method::GET, "/fine"))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"part;rest");
    });
}

#[test]
fn the_file_cache_raises_its_global_notifications() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = InProcessServer::start(
        &handler_config(&["CacheWatch", "StaticFile"], "StaticFile"),
        TEST_MODULES,
    );
    let file = server.dir().join("a.txt");
    std::fs::write(&file, "one").unwrap();
    // Dated back: the cache keeps only files that have settled.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").text(), "one");
    assert!(
        CACHE_ADDS.load(SeqCst) >= 1,
        "CacheOperation (add) on the fill"
    );
    std::fs::write(&file, "three").unwrap();
    assert_eq!(conn.get("/a.txt").text(), "three");
    assert!(
        FILE_CHANGES.load(SeqCst) >= 1,
        "FileChange when the file changed"
    );
}

#[test]
fn a_reload_stops_the_modules_of_the_configuration_it_replaces() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = common::TempDir::new("lifetimes");
    let text = handler_config(&["Lifetimes", "Echo"], "Echo")
        .replace("ROOT", &dir.path().display().to_string());
    let path = dir.write("riis.toml", text);
    let config = riis_server::ServerConfig::load(&path).unwrap();
    let mut server = riis_server::Server::with_modules(config, TEST_MODULES).unwrap();
    let source_path = path;
    server.set_config_source(std::sync::Arc::new(move || {
        riis_server::ServerConfig::load(&source_path)
    }));
    let reloader = server.reloader();
    let running = InProcessServer::run(server, dir);
    let addr = running.addr;
    assert_eq!(common::get(addr, "/x").status, 200);
    // The reload runs on the server's runtime, as SIGHUP's handler does.
    running
        .runtime
        .block_on(async { reloader.reload() })
        .unwrap();
    assert_eq!(common::get(addr, "/x").status, 200);
    // The first configuration's modules stop once no request uses them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while STOPS.load(SeqCst) < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        STOPS.load(SeqCst),
        1,
        "the replaced configuration got ApplicationStop"
    );
    assert_eq!(TERMINATES.load(SeqCst), 1, "and Terminate");
    // A reload outside any runtime cannot watch the configuration it
    // replaces; that one is still retiring when the server stops, and is
    // stopped then, with the one in force.
    reloader.reload().unwrap();
    assert_eq!(common::get(addr, "/x").status, 200);
    assert_eq!(STOPS.load(SeqCst), 1);
    running.stop();
    assert_eq!(
        STOPS.load(SeqCst),
        3,
        "the retiring configuration and the one in force stop at shutdown"
    );
    assert_eq!(TERMINATES.load(SeqCst), 3);
    // Once stopped, a late reload (a SIGHUP racing the shutdown) is refused
    // and stops nothing a second time.
    assert!(matches!(
        reloader.reload(),
        Err(riis_server::reload::ReloadError::Stopping)
    ));
    assert_eq!(STOPS.load(SeqCst), 3);
    assert_eq!(TERMINATES.load(SeqCst), 3);
}

/// The last response of a connection (`Connection: close`) reaches a client
/// that does not read for a while (a stalled link) whole: the bytes the
/// server wrote last wait for the socket as long as `timeouts.send` allows.
/// They were given one second once the response had ended, and a body just
/// larger than the kernel's buffers ended while they were full.
#[test]
fn a_closing_response_reaches_a_stalled_reader_whole() {
    use std::sync::atomic::Ordering::SeqCst;
    // What a loopback connection's kernel buffers hold while the reader
    // does not read: the body is that and 32 KiB more, so the response ends
    // with its last bytes gathered in the server, the socket full.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _reader = std::net::TcpStream::connect(probe.local_addr().unwrap()).unwrap();
    let (mut writer, _) = probe.accept().unwrap();
    writer.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut capacity = 0;
    loop {
        match writer.write(&chunk) {
            Ok(n) => capacity += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let len = capacity + 32 * 1024;
    SIZED_BODY.store(len, SeqCst);

    // The body goes out in one piece with its length, however large the
    // kernel's buffers make it (past the 4 MiB default limit the response
    // would stream, chunked).
    let config = format!(
        "[server]\nresponse_buffer_limit = {}\n{}",
        len.max(4 << 20) * 2,
        handler_config(&["Sized"], "Sized")
    );
    let server = InProcessServer::start(&config, TEST_MODULES);
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    assert!(got.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(got.len() - at - 4, len, "the body was cut short");
    // Closed, so the server's lingering close ends at once.
    drop(conn);
    server.stop();
}

/// A chunked body hyper cannot decode, met while a module reads it, ends
/// the request with 400 and a closed connection (as a malformed head does),
/// not as if the client had gone away.
#[test]
fn a_malformed_chunked_body_gets_400() {
    let server = InProcessServer::start(&handler_config(&["Echo"], "Echo"), TEST_MODULES);
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.write_all(
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    drop(conn);
    server.stop();
}

/// A page that includes a static file keeps what it wrote before the file:
/// StaticFile, handling the child, clears the entity before it writes the
/// file, and clears only the child's own output.
#[test]
fn a_static_file_included_by_a_child_request_goes_between_the_page_parts() {
    let text = "[[modules]]\nname = \"Include\"\n[[modules]]\nname = \"StaticFile\"\n\
        [[handlers]]\nname = \"page\"\npath = \"*.page\"\nmodules = [\"Include\"]\n\
        [[handlers]]\nname = \"file\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\
        [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n";
    let server = InProcessServer::start(text, TEST_MODULES);
    std::fs::write(server.dir().join("part.txt"), "the part").unwrap();
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/index.page");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "<page>the part</page>");
    // Twice: the second time the file comes from the file cache.
    let resp = conn.get("/index.page");
    assert_eq!(resp.text(), "<page>the part</page>");
    drop(conn);
    server.stop();
}
