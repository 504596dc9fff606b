//! Shared helpers for the engine's integration tests: an in-memory driver for
//! [`RequestExecution`], a fake [`FileSystem`], scripted modules built from a
//! closure, and a small builder that turns a list of test modules and handlers
//! into a [`Pipeline`].
//!
//! Nothing here opens a socket or touches the disk: the driver plays the
//! network server's part (sending output, feeding the request body, awaiting
//! completion waiters), which is exactly the contract of [`Step`].

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use riis_pipeline::*;

/// Short name for the status every notification handler returns.
pub type Status = RequestNotificationStatus;

/// The physical root of the single test site.
pub const SITE_ROOT: &str = "/site";

/// How long the driver waits for a completion before declaring the request
/// hung. A guard against engine bugs, not a timing assertion: every test that
/// waits signals within milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Most steps one request may take before the driver declares a busy loop.
const STEP_LIMIT: usize = 100_000;

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

/// A shared, append-only list of strings that modules write what happened to,
/// and tests read back in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Takes every entry so far, leaving the log empty.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// How many entries equal `entry`.
    pub fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }
}

/// The IIS name of an event or post-event: `BeginRequest`, `PostBeginRequest`.
pub fn event_name(notification: RequestNotification, is_post: bool) -> String {
    if is_post {
        format!("Post{}", notification.name())
    } else {
        notification.name().to_owned()
    }
}

/// Every deterministic event and post-event in pipeline order, as
/// `(notification, is_post)`.
pub fn all_events() -> Vec<(RequestNotification, bool)> {
    RequestNotification::DETERMINISTIC
        .iter()
        .flat_map(|&n| [(n, false), (n, true)])
        .collect()
}

// ---------------------------------------------------------------------------
// Scripted modules
// ---------------------------------------------------------------------------

/// What a [`ScriptedModule`] is being called for: one variant per kind of
/// `HttpModule` method, with that method's arguments.
pub enum Call<'a> {
    /// A deterministic event or post-event.
    Event {
        /// The event.
        notification: RequestNotification,
        /// Whether it is the post-event.
        is_post: bool,
    },
    /// `OnSendResponse`.
    SendResponse(&'a mut SendResponseProvider),
    /// `OnReadEntity`.
    ReadEntity(&'a mut ReadEntityProvider),
    /// `OnMapPath`.
    MapPath(&'a mut MapPathProvider),
    /// `OnCustomRequestNotification`.
    Custom(&'a mut dyn CustomNotificationProvider),
    /// `OnAsyncCompletion`.
    AsyncCompletion {
        /// The notification the operation was started in.
        notification: RequestNotification,
        /// Whether that was the post-event.
        is_post: bool,
        /// What the operation reported.
        info: CompletionInfo,
    },
}

impl Call<'_> {
    /// A short description for logs: the event name, `SendResponse`,
    /// `ReadEntity`, `MapPath`, `Custom`, or `AsyncCompletion(<event>)`.
    pub fn describe(&self) -> String {
        match self {
            Call::Event {
                notification,
                is_post,
            } => event_name(*notification, *is_post),
            Call::SendResponse(_) => "SendResponse".into(),
            Call::ReadEntity(_) => "ReadEntity".into(),
            Call::MapPath(_) => "MapPath".into(),
            Call::Custom(_) => "Custom".into(),
            Call::AsyncCompletion {
                notification,
                is_post,
                ..
            } => format!("AsyncCompletion({})", event_name(*notification, *is_post)),
        }
    }

    /// Whether this is the deterministic event `n` (not its post-event).
    pub fn is_event(&self, n: RequestNotification) -> bool {
        matches!(self, Call::Event { notification, is_post: false } if *notification == n)
    }

    /// Whether this is the post-event of `n`.
    pub fn is_post_event(&self, n: RequestNotification) -> bool {
        matches!(self, Call::Event { notification, is_post: true } if *notification == n)
    }
}

/// The behaviour of a scripted module: called for every notification the
/// module is dispatched, it returns the module's status.
pub type Script = Arc<dyn Fn(&mut HttpContext, Call<'_>) -> Status + Send + Sync>;

/// Wraps a closure as a [`Script`].
pub fn script(f: impl Fn(&mut HttpContext, Call<'_>) -> Status + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

/// A script that records every call as [`Call::describe`] into `log` and
/// continues.
pub fn recorder(log: &Log) -> Script {
    let log = log.clone();
    script(move |_, call| {
        log.push(call.describe());
        Status::Continue
    })
}

/// An [`HttpModule`] whose every method forwards to one [`Script`]. Shared
/// state lives in what the script captures; each request still gets its own
/// instance from the factory, so lifetime rules apply as for any module.
pub struct ScriptedModule {
    script: Script,
}

impl ScriptedModule {
    /// A module running `script`, for tests that register their own factory.
    pub fn new(script: Script) -> Self {
        Self { script }
    }

    fn event(&self, ctx: &mut HttpContext, n: RequestNotification, post: bool) -> Status {
        (self.script)(
            ctx,
            Call::Event {
                notification: n,
                is_post: post,
            },
        )
    }
}

macro_rules! forward_events {
    ($($method:ident => $n:ident, $post:expr;)*) => {
        $(
            fn $method(&mut self, ctx: &mut HttpContext) -> Status {
                self.event(ctx, RequestNotification::$n, $post)
            }
        )*
    };
}

impl HttpModule for ScriptedModule {
    forward_events! {
        on_begin_request => BeginRequest, false;
        on_post_begin_request => BeginRequest, true;
        on_authenticate_request => AuthenticateRequest, false;
        on_post_authenticate_request => AuthenticateRequest, true;
        on_authorize_request => AuthorizeRequest, false;
        on_post_authorize_request => AuthorizeRequest, true;
        on_resolve_request_cache => ResolveRequestCache, false;
        on_post_resolve_request_cache => ResolveRequestCache, true;
        on_map_request_handler => MapRequestHandler, false;
        on_post_map_request_handler => MapRequestHandler, true;
        on_acquire_request_state => AcquireRequestState, false;
        on_post_acquire_request_state => AcquireRequestState, true;
        on_pre_execute_request_handler => PreExecuteRequestHandler, false;
        on_post_pre_execute_request_handler => PreExecuteRequestHandler, true;
        on_execute_request_handler => ExecuteRequestHandler, false;
        on_post_execute_request_handler => ExecuteRequestHandler, true;
        on_release_request_state => ReleaseRequestState, false;
        on_post_release_request_state => ReleaseRequestState, true;
        on_update_request_cache => UpdateRequestCache, false;
        on_post_update_request_cache => UpdateRequestCache, true;
        on_log_request => LogRequest, false;
        on_post_log_request => LogRequest, true;
        on_end_request => EndRequest, false;
        on_post_end_request => EndRequest, true;
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> Status {
        (self.script)(ctx, Call::SendResponse(provider))
    }

    fn on_read_entity(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut ReadEntityProvider,
    ) -> Status {
        (self.script)(ctx, Call::ReadEntity(provider))
    }

    fn on_map_path(&mut self, ctx: &mut HttpContext, provider: &mut MapPathProvider) -> Status {
        (self.script)(ctx, Call::MapPath(provider))
    }

    fn on_custom_request_notification(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut dyn CustomNotificationProvider,
    ) -> Status {
        (self.script)(ctx, Call::Custom(provider))
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        is_post: bool,
        completion: &CompletionInfo,
    ) -> Status {
        (self.script)(
            ctx,
            Call::AsyncCompletion {
                notification,
                is_post,
                info: *completion,
            },
        )
    }
}

/// How a scripted module registers: notifications, post-notifications and
/// priorities (everything MEDIUM unless set).
#[derive(Clone, Default)]
pub struct Registration {
    /// Notifications (`RQ_*`).
    pub notifications: RequestNotifications,
    /// Post-event notifications.
    pub post: RequestNotifications,
    /// Priorities of events and nondeterministic notifications.
    pub priorities: Vec<(RequestNotification, Priority)>,
    /// Priorities of post-events.
    pub post_priorities: Vec<(RequestNotification, Priority)>,
}

impl Registration {
    /// Registered for `notifications` and no post-event.
    pub fn events(notifications: impl Into<RequestNotifications>) -> Self {
        Self {
            notifications: notifications.into(),
            ..Self::default()
        }
    }

    /// Registered for every deterministic event and every post-event.
    pub fn everything() -> Self {
        Self {
            notifications: RequestNotifications::ALL_DETERMINISTIC,
            post: RequestNotifications::ALL_DETERMINISTIC,
            ..Self::default()
        }
    }

    /// Adds post-events.
    pub fn with_post(mut self, post: impl Into<RequestNotifications>) -> Self {
        self.post = self.post | post.into();
        self
    }

    /// Sets the priority of an event (or nondeterministic notification).
    pub fn priority(mut self, n: RequestNotification, p: Priority) -> Self {
        self.priorities.push((n, p));
        self
    }

    /// Sets the priority of a post-event.
    pub fn post_priority(mut self, n: RequestNotification, p: Priority) -> Self {
        self.post_priorities.push((n, p));
        self
    }
}

// ---------------------------------------------------------------------------
// Fake file system
// ---------------------------------------------------------------------------

/// A file system made of a set of paths, recording every probe the engine
/// makes.
#[derive(Default)]
pub struct FakeFs {
    entries: Mutex<HashMap<PathBuf, ResourceKind>>,
    probes: Mutex<Vec<PathBuf>>,
    /// Paths that are there but may not be opened.
    denied: Mutex<Vec<PathBuf>>,
}

impl FakeFs {
    /// Adds a file.
    pub fn add_file(&self, path: impl Into<PathBuf>) {
        self.entries
            .lock()
            .unwrap()
            .insert(path.into(), ResourceKind::File);
    }

    /// Adds a directory.
    pub fn add_dir(&self, path: impl Into<PathBuf>) {
        self.entries
            .lock()
            .unwrap()
            .insert(path.into(), ResourceKind::Directory);
    }

    /// Adds a file the server may not open (the probe finds nothing).
    #[allow(dead_code)]
    pub fn add_denied(&self, path: impl Into<PathBuf>) {
        self.denied.lock().unwrap().push(path.into());
    }

    /// Every path probed so far, in order.
    pub fn probes(&self) -> Vec<PathBuf> {
        self.probes.lock().unwrap().clone()
    }
}

impl FileSystem for FakeFs {
    fn probe(&self, path: &Path) -> Option<Probe> {
        self.probes.lock().unwrap().push(path.to_owned());
        self.entries.lock().unwrap().get(path).map(|kind| Probe {
            info: match kind {
                ResourceKind::File => ResourceInfo::file(0, None),
                ResourceKind::Directory => ResourceInfo::directory(),
            },
            file: None,
            content: None,
        })
    }

    fn is_denied(&self, path: &Path) -> bool {
        self.denied.lock().unwrap().iter().any(|p| p == path)
    }
}

// ---------------------------------------------------------------------------
// Building pipelines
// ---------------------------------------------------------------------------

/// A handler mapping for the test site.
pub fn handler(
    name: &str,
    path: &str,
    verbs: &[&str],
    resource_type: &str,
    modules: &[&str],
) -> HandlerDefinition {
    HandlerDefinition {
        name: name.to_owned(),
        path: path.to_owned(),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resource_type: resource_type.to_owned(),
        modules: modules.iter().map(|m| (*m).to_owned()).collect(),
        allow_path_info: false,
        key: format!("handlers.{name}"),
    }
}

/// `Handler`, the handler of every path for the existing file
/// `/site/a.txt`: records its ExecuteRequestHandler and LogRequest calls in
/// `log`, and writes "should not be sent" when it handles (for tests where
/// the request must fail before it does).
pub fn file_handler_that_must_not_run(t: &mut TestPipeline, log: &Log) {
    let log = log.clone();
    t.module(
        "Handler",
        Registration::events(
            RequestNotification::ExecuteRequestHandler | RequestNotification::LogRequest,
        ),
        script(move |ctx, call| {
            log.push(call.describe());
            if call.is_event(RequestNotification::ExecuteRequestHandler) {
                write(ctx, "should not be sent");
            }
            RequestNotificationStatus::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "File", &["Handler"]))
        .file("/site/a.txt");
}

/// A handler for every path and verb, with no resource requirement, that runs
/// `modules`.
pub fn catch_all(modules: &[&str]) -> HandlerDefinition {
    handler("CatchAll", "*", &["*"], "Unspecified", modules)
}

/// Builds a pipeline with one site rooted at [`SITE_ROOT`] from a list of test
/// modules (in module-list order), handlers and fake files.
pub struct TestPipeline {
    builder: PipelineBuilder,
    fs: Arc<FakeFs>,
    site: SiteDefinition,
    handlers: Vec<HandlerDefinition>,
}

impl Default for TestPipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPipeline {
    /// No modules, no handlers, an empty fake file system.
    pub fn new() -> Self {
        Self {
            builder: PipelineBuilder::new(),
            fs: Arc::new(FakeFs::default()),
            site: SiteDefinition {
                id: 1,
                name: "Test".to_owned(),
                physical_root: PathBuf::from(SITE_ROOT),
                key: "sites[0]".to_owned(),
                ..SiteDefinition::default()
            },
            handlers: Vec::new(),
        }
    }

    /// Adds a [`ScriptedModule`] at the end of the module list.
    pub fn module(&mut self, name: &str, registration: Registration, script: Script) -> &mut Self {
        self.register(name, move |_, reg, _| {
            let factory = move || ScriptedModule {
                script: script.clone(),
            };
            reg.set_request_notifications(factory, registration.notifications, registration.post)?;
            for (n, p) in registration.priorities {
                reg.set_priority_for_request_notification(n, p);
            }
            for (n, p) in registration.post_priorities {
                reg.set_priority_for_post_request_notification(n, p)?;
            }
            Ok(())
        })
    }

    /// Adds a module through its own registration entry point.
    pub fn register(
        &mut self,
        name: &str,
        register: impl FnOnce(u32, &mut ModuleRegistration<'_>, &ServerInfo) -> Result<(), ModuleError>,
    ) -> &mut Self {
        self.builder
            .register_module(name, register)
            .unwrap_or_else(|e| panic!("module {name} failed to register: {e}"));
        self
    }

    /// Adds a handler to the site's handler list.
    pub fn handler(&mut self, definition: HandlerDefinition) -> &mut Self {
        self.handlers.push(definition);
        self
    }

    /// Adds a file to the fake file system.
    pub fn file(&mut self, path: &str) -> &mut Self {
        self.fs.add_file(path);
        self
    }

    /// The fake file system, to inspect probes after requests ran.
    pub fn fs(&self) -> Arc<FakeFs> {
        self.fs.clone()
    }

    /// The site definition, for locations and sections.
    pub fn site_mut(&mut self) -> &mut SiteDefinition {
        &mut self.site
    }

    /// The underlying builder, for server-level settings.
    pub fn builder_mut(&mut self) -> &mut PipelineBuilder {
        &mut self.builder
    }

    /// Builds the pipeline, or the configuration error.
    pub fn try_build(mut self) -> Result<Pipeline, BuildError> {
        if !self.handlers.is_empty() {
            self.site.handlers = Some(self.handlers);
        }
        self.builder.file_system(self.fs);
        self.builder.site(self.site);
        self.builder.build()
    }

    /// Builds the pipeline; panics on a configuration error.
    pub fn build(self) -> Arc<Pipeline> {
        Arc::new(self.try_build().expect("the test pipeline builds"))
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn local_addr() -> SocketAddr {
    "127.0.0.1:80".parse().unwrap()
}

fn remote_addr() -> SocketAddr {
    "192.0.2.7:50000".parse().unwrap()
}

/// A request without a body.
pub fn request(method: Method, url: &str) -> HttpRequest {
    let uri: Uri = url.parse().expect("a valid test URL");
    HttpRequest::new(
        method,
        uri,
        Version::HTTP_11,
        HeaderMap::new(),
        local_addr(),
        remote_addr(),
    )
    .expect("a valid test request")
}

/// A POST whose body arrives in `chunks` (with the matching Content-Length);
/// returns the request and the body for [`run_with_body`].
pub fn post_request(url: &str, chunks: &[&str]) -> (HttpRequest, Vec<Bytes>) {
    let body: Vec<Bytes> = chunks
        .iter()
        .map(|c| Bytes::copy_from_slice(c.as_bytes()))
        .collect();
    let length: usize = body.iter().map(Bytes::len).sum();
    let mut headers = HeaderMap::new();
    headers.insert(
        riis_pipeline::http::header::CONTENT_LENGTH,
        HeaderValue::from(length),
    );
    let uri: Uri = url.parse().expect("a valid test URL");
    let req = HttpRequest::new(
        Method::POST,
        uri,
        Version::HTTP_11,
        headers,
        local_addr(),
        remote_addr(),
    )
    .expect("a valid test request");
    (req, body)
}

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A context for `request` on the pipeline's first site, on a fresh connection.
pub fn context(pipeline: &Arc<Pipeline>, request: HttpRequest) -> HttpContext {
    let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let connection = Arc::new(ConnectionInfo::new(id, local_addr(), remote_addr()));
    HttpContext::new(
        pipeline.clone(),
        pipeline.sites()[0].clone(),
        connection,
        request,
        id,
    )
}

// ---------------------------------------------------------------------------
// The in-memory driver
// ---------------------------------------------------------------------------

/// One send the engine asked for.
#[derive(Debug)]
pub struct Sent {
    /// Status line and headers, when they went out with this send.
    pub head: Option<ResponseHead>,
    /// The entity bytes of this send.
    pub body: Vec<u8>,
    /// Whether the engine marked it as the final send.
    pub is_final: bool,
    /// The connection is to close after the response.
    pub disconnect: bool,
    /// The request failed after its headers went out (see `Output`).
    pub truncated: bool,
    /// The trailer fields (on the final send).
    pub trailers: Option<Box<http::HeaderMap>>,
    /// The next send is made from a deferred rest (see `Output`).
    pub paced: bool,
    /// The calls waiting for the delivery (on the final send); dropped
    /// with the outcome, they are told the response was not sent.
    pub delivery: riis_pipeline::DeliveryWatchers,
}

/// Everything a request produced, and its finished execution (whose context
/// still holds the final response state and request data).
pub struct Outcome {
    /// Every send, in order.
    pub sends: Vec<Sent>,
    /// The execution after [`Step::Done`].
    pub execution: RequestExecution,
}

impl Outcome {
    /// The status line and headers (from the send that carried them).
    pub fn head(&self) -> &ResponseHead {
        self.sends
            .iter()
            .find_map(|s| s.head.as_ref())
            .expect("the response sent its headers")
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.head().status
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head()
            .headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII test header"))
    }

    /// The whole entity, every send concatenated, as text.
    pub fn body(&self) -> String {
        let bytes: Vec<u8> = self.sends.iter().flat_map(|s| s.body.clone()).collect();
        String::from_utf8(bytes).expect("UTF-8 test body")
    }

    /// How many sends were marked final.
    pub fn final_sends(&self) -> usize {
        self.sends.iter().filter(|s| s.is_final).count()
    }

    /// The client request's context after the request ended.
    pub fn context(&self) -> &HttpContext {
        self.execution.context()
    }

    /// Asserts the usual end of a response: exactly one final send, and it is
    /// the last one.
    pub fn assert_completed(&self) {
        assert_eq!(
            self.final_sends(),
            1,
            "exactly one final send: {:?}",
            self.sends
        );
        assert!(
            self.sends.last().is_some_and(|s| s.is_final),
            "the final send is the last one"
        );
    }
}

/// Drives `execution` to [`Step::Done`]: records and acknowledges every send,
/// feeds `body` to body reads (at most `max` bytes at a time, then empty
/// reads), and awaits completion waiters.
pub async fn drive(mut execution: RequestExecution, body: Vec<Bytes>) -> Outcome {
    let mut body: std::collections::VecDeque<Bytes> = body.into();
    let mut sends = Vec::new();
    for _ in 0..STEP_LIMIT {
        match execution.resume() {
            Step::Send => {
                let output = execution
                    .take_output()
                    .expect("Step::Send comes with output");
                let mut bytes = Vec::new();
                for chunk in &output.chunks {
                    match chunk {
                        EntityChunk::Memory(b) => bytes.extend_from_slice(b),
                        EntityChunk::File { .. } => panic!("test modules write memory chunks only"),
                    }
                }
                let len = bytes.len() as u64;
                sends.push(Sent {
                    head: output.head,
                    body: bytes,
                    is_final: output.is_final,
                    disconnect: output.disconnect,
                    truncated: output.truncated,
                    trailers: output.trailers,
                    paced: output.paced,
                    delivery: output.delivery,
                });
                execution.complete_send(Ok(len));
            }
            Step::ReadEntity { max } => {
                execution.complete_read(Ok(next_piece(&mut body, max)));
            }
            Step::WaitWhileReading { waiter, max } => {
                // The whole body is here: a completion already signalled
                // goes first, else the read.
                tokio::select! {
                    biased;
                    () = waiter.wait() => {}
                    () = std::future::ready(()) => {
                        execution.complete_read(Ok(next_piece(&mut body, max)));
                    }
                }
            }
            Step::Wait(waiter) => {
                tokio::time::timeout(HANG_GUARD, waiter.wait())
                    .await
                    .expect("the request hung waiting for a completion that never came");
            }
            Step::Yield => tokio::task::yield_now().await,
            Step::Done => return Outcome { sends, execution },
        }
    }
    panic!("the request did not finish within {STEP_LIMIT} steps");
}

/// The next body read's bytes: at most `max` of the next piece (the rest
/// stays for the next read), empty at the end.
fn next_piece(body: &mut std::collections::VecDeque<Bytes>, max: usize) -> Bytes {
    match body.pop_front() {
        Some(mut chunk) => {
            if chunk.len() > max {
                let rest = chunk.split_off(max);
                body.push_front(rest);
            }
            chunk
        }
        None => Bytes::new(),
    }
}

/// Runs `request` through `pipeline` with no body.
pub async fn run(pipeline: &Arc<Pipeline>, request: HttpRequest) -> Outcome {
    drive(
        RequestExecution::new(context(pipeline, request)),
        Vec::new(),
    )
    .await
}

/// Runs `request` through `pipeline`, feeding `body` to body reads.
pub async fn run_with_body(
    pipeline: &Arc<Pipeline>,
    request: HttpRequest,
    body: Vec<Bytes>,
) -> Outcome {
    drive(RequestExecution::new(context(pipeline, request)), body).await
}

/// Runs `GET url` through `pipeline`.
pub async fn get(pipeline: &Arc<Pipeline>, url: &str) -> Outcome {
    run(pipeline, request(Method::GET, url)).await
}

// ---------------------------------------------------------------------------
// Small response helpers for scripts
// ---------------------------------------------------------------------------

/// Writes `text` to the response entity.
pub fn write(ctx: &mut HttpContext, text: impl Into<String>) {
    ctx.response_mut().write(text.into());
}

/// Sets a response header (name and value are test literals).
pub fn set_header(ctx: &mut HttpContext, name: &'static str, value: &str) {
    ctx.response_mut().set_header(
        riis_pipeline::http::HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("a valid header value"),
    );
}

/// A response header as text, if set.
pub fn response_header(ctx: &HttpContext, name: &str) -> Option<String> {
    ctx.response()
        .header(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}
