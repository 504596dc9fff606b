//! `FastCgi`: hands requests to a FastCGI application (PHP's `php-fpm`,
//! or any FastCGI Responder) listening on a socket, as IIS's FastCGI
//! module and nginx's `fastcgi_pass` do.
//!
//! Registers for the global **RscaQuery** (its `riis status` figures) and
//! **StopListening** (the server is stopping, not a reload: its stop then
//! waits until the processes it started are gone), and for
//! **ExecuteRequestHandler**, as a handler module (map it with a path such
//! as `*.php` and `resource_type = "File"`, so the script exists), and for
//! **OnAsyncCompletion**, where the rest of the request happens:
//!
//! 1. The request body is read through the pipeline (ReadEntity modules
//!    see it, RequestFiltering's limit applies; past 64 KiB it waits in a
//!    temporary file, see `spooled_body`), up to `max_request_body`
//!    bytes (413 past it).
//! 2. The exchange with the application runs as a task beside the request,
//!    on the tokio runtime of the worker thread the request runs on, so
//!    that its I/O and the request's wake-ups never cross threads (a
//!    request that runs on no runtime, as in the engine's own tests, uses
//!    one thread of the module's own, `riis-fastcgi`). The request waits
//!    (Pending) without holding its worker and resumes through
//!    OnAsyncCompletion each time the task has output for it.
//! 3. The application's header block (`Status`, `Location`, other headers)
//!    becomes the response's head, and its output the entity. Output is
//!    kept in the response until `response_buffer_limit` bytes wait, then
//!    flushed (IIS's `responseBufferLimit`; 0 sends each piece as it comes,
//!    for applications that stream). A response that ends below the limit
//!    goes out whole, with `Content-Length`.
//!
//! The request gets **502** when the application cannot be reached, breaks
//! the protocol or sends no valid header block, **503** when it answers
//! `FCGI_OVERLOADED`, and **504** when it sends nothing for
//! `activity_timeout` seconds or the exchange outlasts `request_timeout`
//! (not counting the time it waits for a slow client to take the output;
//! nginx's statuses; IIS answers 500 to all of them). After part of the
//! response went out, the connection is reset instead, so the client sees
//! the response is cut short. The application's own error responses pass
//! through untouched (CustomError leaves them, as nginx's
//! `fastcgi_intercept_errors off`). Its error output (`FCGI_STDERR`) goes to
//! the server's log. A request that ends early (the client left,
//! `timeouts.execution`) drops its connection to the application.
//!
//! By default each request has a connection of its own, which the
//! application closes after answering (as nginx's default). With
//! `kept_connections = N`, a connection is asked to stay open
//! (`FCGI_KEEP_CONN`) and up to N idle ones per worker thread and address
//! are kept for later requests. A kept connection is used again only if it
//! is quiet (nothing to read: a stray answer would reach the next request;
//! not closed), idle ones are swept a few times a minute and closed after
//! one, and when one fails before any answer only an idempotent request is
//! sent again on a new one. `php-fpm` gives a kept connection one of its
//! workers for as long as the connection lives, so N must stay below its
//! `pm.max_children` (divided by riis's worker threads), or requests on new
//! connections wait for a worker that never comes free.
//!
//! The parameters are the RFC 3875 meta-variables Cgi passes as its
//! environment (without `HTTP_PROXY`, and without `HTTP_AUTHORIZATION`
//! unless `pass_authorization`), plus the section's `params`, which add to
//! or replace them (as nginx's `fastcgi_param`).
//!
//! Configuration section `fastcgi`, per location:
//! - `address`: `host:port` or `unix:/path/to/socket` (required where the
//!   handler is mapped);
//! - `request_timeout` (seconds, default 90, IIS's `requestTimeout`; 0:
//!   none);
//! - `activity_timeout` (seconds, default 30, IIS's `activityTimeout`);
//! - `response_buffer_limit` (bytes, default 4,194,304, IIS's);
//! - `max_request_body` (bytes, default 30,000,000, RequestFiltering's);
//! - `kept_connections` (idle connections kept per worker thread and
//!   address, default 0, at most 1,024);
//! - `pass_authorization` (default false);
//! - `script_name`: the URL path an application (WSGI, Rack, PSGI) is
//!   mounted at, `""` for the site's root: `SCRIPT_NAME` is it and
//!   `PATH_INFO` the rest of the path, as such applications route (`false`:
//!   none, below a location that sets one);
//! - `params` (a table of names and values);
//! - `x_accel_redirect` (default true): an answer's `X-Accel-Redirect` is
//!   followed, as nginx does (see `internal_redirect`); false drops the
//!   header and sends the answer as it is (nginx's
//!   `fastcgi_ignore_headers X-Accel-Redirect`).
//!
//! Instead of `address`, `application` has riis start the application's
//! processes itself, as IIS does (see `managed_application`): `path`,
//! `arguments`, `environment`, `instances` (default 4), `queue_length`
//! (default 1000), `instance_max_requests` (default 200),
//! `rapid_fails_per_minute` (default 10). Each process takes one request
//! at a time (`PHP_FCGI_CHILDREN` at a time where the environment sets
//! it), the others wait in riis, first come first served; one whose
//! request times out is killed and started again. `kept_connections` is
//! for `address` only.
//!
//! Not done: several requests over one connection at once (multiplexing,
//! which `php-fpm` does not do), and the Authorizer and Filter roles.

mod exchange;
mod protocol;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use riis_pipeline::bytes::{Bytes, BytesMut};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

pub use crate::backend::Address;
use crate::backend::{Connection, Pools};
use crate::gateway::BodyError;
use crate::internal_redirect::Redirected;
pub use crate::managed_application::ApplicationConfig;
use crate::managed_application::{ApplicationsGlobal, Holdings};
use crate::relay::{Receiver, Relay, Step};
use crate::spooled_body::{BodySpool, SpooledBody};
use exchange::{Job, Target};

/// The `fastcgi` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FastCgiConfig {
    /// Where the application listens.
    pub address: Option<Address>,
    /// The application riis starts itself, instead of `address`.
    pub application: Option<ApplicationConfig>,
    /// Seconds the whole exchange may take, not counting the time it waits
    /// for a slow client; 0 for no limit (an event stream, a long
    /// download: `activity_timeout` still ends a silent application).
    pub request_timeout: u64,
    /// Seconds the application may stay silent.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub activity_timeout: u64,
    /// Output kept before the response is flushed.
    pub response_buffer_limit: u64,
    /// The longest request body passed on.
    pub max_request_body: u64,
    /// Idle connections kept per worker thread and address.
    #[serde(deserialize_with = "crate::at_most_1024")]
    pub kept_connections: usize,
    /// Whether `Authorization` is passed as `HTTP_AUTHORIZATION`.
    pub pass_authorization: bool,
    /// Whether `SCRIPT_FILENAME` and `DOCUMENT_ROOT` name the site's root
    /// with its symbolic links resolved (nginx's `$realpath_root`).
    pub realpath_root: bool,
    /// The URL path an application is mounted at (see the module's
    /// documentation).
    #[serde(deserialize_with = "mount_path")]
    pub script_name: Option<String>,
    /// Parameters added to (or replacing) the meta-variables.
    pub params: BTreeMap<String, String>,
    /// Whether an answer's `X-Accel-Redirect` is followed.
    pub x_accel_redirect: bool,
    /// Whether a request whose script is no file here gets 404 before the
    /// application is asked (see `on_execute_request_handler`).
    pub script_must_exist: bool,
}

/// `script_name`: `""` or a path that starts with `/` and does not end
/// with one; `false` for none (a location below a mounted one that serves
/// scripts).
fn mount_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mount {
        Path(String),
        Off(bool),
    }
    let path = match Mount::deserialize(d)? {
        Mount::Path(path) => path,
        Mount::Off(false) => return Ok(None),
        Mount::Off(true) => {
            return Err(serde::de::Error::custom(
                "a script_name is a path (\"\" for the site's root), or false for none",
            ))
        }
    };
    if !path.is_empty() && (!path.starts_with('/') || path.ends_with('/')) {
        return Err(serde::de::Error::custom(format!(
            "`{path}`: a script_name is \"\" (the site's root) or a path such as \"/app\": a leading `/` and no trailing one"
        )));
    }
    Ok(Some(path))
}

/// `SCRIPT_NAME` and `PATH_INFO` for an application mounted at `mount`:
/// the rest of `path` below it. A path not below the mount (a location
/// whose path differs from it) is the whole `PATH_INFO` under an empty
/// `SCRIPT_NAME`: together they stay the path, and the application builds
/// no links under a mount the URL is not at. The mount is matched as
/// locations are, ignoring ASCII case, and `SCRIPT_NAME` is the path's own
/// spelling of it, so the two still join into the path.
fn mounted<'a>(mount: &str, path: &'a str) -> (&'a str, &'a str) {
    match riis_pipeline::path_below(mount, path) {
        Some(rest) => (&path[..path.len() - rest.len()], rest),
        None => ("", path),
    }
}

impl Default for FastCgiConfig {
    fn default() -> Self {
        Self {
            address: None,
            application: None,
            request_timeout: 90,
            activity_timeout: 30,
            response_buffer_limit: 4_194_304,
            max_request_body: 30_000_000,
            kept_connections: 0,
            pass_authorization: false,
            realpath_root: false,
            script_name: None,
            x_accel_redirect: true,
            script_must_exist: true,
            params: BTreeMap::new(),
        }
    }
}

/// How much of the body one read asks for.
const READ_SIZE: usize = 64 * 1024;

/// What the module's instances share: the idle connections, and a
/// runtime of the module's own for requests that do not run on one (made
/// when first needed).
struct Shared {
    fallback: Mutex<Option<tokio::runtime::Runtime>>,
    fallback_handle: OnceLock<Result<tokio::runtime::Handle, String>>,
    pools: Arc<Pools<Connection>>,
    /// Exchanges running, for `riis status`.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// The applications this configuration holds.
    applications: Arc<Holdings>,
}

/// Configurations with FastCgi that have not retired (see [`Holdings`]).
static LIVE_CONFIGURATIONS: AtomicUsize = AtomicUsize::new(0);

impl Shared {
    /// Where the exchange runs: the runtime the request runs on, when it
    /// runs on one (riis's workers do), so that the exchange's I/O and the
    /// request's wake-ups stay on one thread; else the module's own thread.
    fn handle(&self) -> Result<tokio::runtime::Handle, String> {
        if let Ok(current) = tokio::runtime::Handle::try_current() {
            return Ok(current);
        }
        self.fallback_handle
            .get_or_init(|| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("riis-fastcgi")
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("cannot start the FastCGI thread: {e}"))?;
                let handle = runtime.handle().clone();
                *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = Some(runtime);
                Ok(handle)
            })
            .clone()
    }

    /// Closes the idle connections, lets the applications go (see
    /// [`Holdings::release_all`]) and stops the module's own runtime (this
    /// may run on one of the server's own threads).
    fn stop(&self) {
        self.pools.clear();
        self.applications.release_all();
        if let Some(runtime) = self
            .fallback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the instance is.
enum State {
    Idle,
    /// Reading the request body.
    Reading(BodySpool),
    /// The exchange runs; its output arrives through the relay.
    Answering(Arc<Relay>),
    /// The application's `X-Accel-Redirect` runs as a child request.
    Redirected(Redirected),
}

/// The module instance: one per request.
pub struct FastCgi {
    config: Section<FastCgiConfig>,
    shared: Arc<Shared>,
    state: State,
    receiver: Receiver,
}

impl Drop for FastCgi {
    /// The request ended: its exchange, if still running, is dropped with
    /// its connection.
    fn drop(&mut self) {
        if let State::Answering(relay) = &self.state {
            relay.cancel();
        }
    }
}

impl FastCgi {
    /// Reads the next piece of the body, or starts the exchange once it is
    /// all here.
    fn go_on(&mut self, ctx: &mut HttpContext, body: BodySpool) -> RequestNotificationStatus {
        if !ctx.request().is_body_complete() {
            if let Err(e) = ctx.read_entity_body(READ_SIZE) {
                return fail(ctx, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
            self.state = State::Reading(body);
            return RequestNotificationStatus::Pending;
        }
        self.start(ctx, body.finish())
    }

    fn start(&mut self, ctx: &mut HttpContext, body: SpooledBody) -> RequestNotificationStatus {
        let handle = match self.shared.handle() {
            Ok(handle) => handle,
            Err(why) => return fail(ctx, StatusCode::INTERNAL_SERVER_ERROR, &why),
        };
        let config = ctx.config(self.config);
        let (target, taken) = match (&config.application, &config.address) {
            // The exchange's task finds a free process (and waits for one).
            (Some(application), _) => {
                let application = self.shared.applications.application(application);
                let taken = Some(application.taken());
                (Target::Application(application), taken)
            }
            (None, Some(address)) => (Target::Address(address.clone()), None),
            (None, None) => {
                return fail(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "neither fastcgi.address nor fastcgi.application is set for this location",
                )
            }
        };
        // riis's own processes take one connection per request: a kept
        // one would hold its `php-cgi` (which honours FCGI_KEEP_CONN) from
        // requests handed to it on other worker threads.
        let kept_connections = if config.application.is_some() {
            0
        } else {
            config.kept_connections
        };
        let activity_timeout = Duration::from_secs(config.activity_timeout);
        let request_timeout = Duration::from_secs(config.request_timeout);
        let mut script_path = ctx.physical_path().to_path_buf();
        let config = ctx.config(self.config);
        // The folder the URL maps into: the site's root, or a location's
        // `physical_path` (a virtual directory).
        let root = &ctx.virtual_directory().physical_path;
        // A deploy that switches a `current` link to a new release: the
        // application (its opcode cache keyed by path) sees the release's
        // own paths, so it moves to the new release at the next request.
        let real_root = config
            .realpath_root
            .then(|| std::fs::canonicalize(root).ok())
            .flatten();
        if let Some(real_root) = &real_root {
            if let Ok(below) = script_path.strip_prefix(root) {
                script_path = real_root.join(below);
            }
        }
        let mut pairs = protocol::Pairs::default();
        // The section's `params` replace the server's values of their names.
        crate::gateway::meta_variables(
            ctx,
            &script_path,
            real_root.as_deref().unwrap_or(root),
            body.len(),
            config.pass_authorization,
            |name, value| {
                let mounted_away = config.script_name.is_some()
                    && matches!(name, "SCRIPT_NAME" | "PATH_INFO" | "PATH_TRANSLATED");
                if !mounted_away && !config.params.contains_key(name) {
                    pairs.add(name.as_bytes(), value);
                }
            },
        );
        if let Some(mount) = &config.script_name {
            let (script_name, path_info) = mounted(mount, ctx.request().url());
            for (name, value) in [("SCRIPT_NAME", script_name), ("PATH_INFO", path_info)] {
                if !config.params.contains_key(name) {
                    pairs.add(name.as_bytes(), value.as_bytes());
                }
            }
        }
        for (name, value) in &config.params {
            pairs.add(name.as_bytes(), value.as_bytes());
        }
        // A body up to one read's size goes in the same write.
        let whole = body.len() <= READ_SIZE as u64;
        let small = if whole {
            match body.piece(0, READ_SIZE) {
                Ok(small) => small,
                Err(e) => {
                    return fail(
                        ctx,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("the request body could not be read back: {e}"),
                    )
                }
            }
        } else {
            Bytes::new()
        };
        let mut head = BytesMut::with_capacity(pairs.len() + 64 + small.len() + 24);
        protocol::begin_request(&mut head, kept_connections > 0);
        protocol::params(&mut head, &pairs);
        if whole {
            protocol::input(&mut head, &small);
            protocol::end_of_input(&mut head);
        }
        let relay = Arc::new(Relay::new(ctx.completion_handle(), activity_timeout));
        let job = Job {
            target,
            head: head.freeze(),
            body: (!whole).then_some(body),
            kept_connections,
            request_timeout,
            script: script_path.display().to_string(),
            idempotent: matches!(
                *ctx.request().method(),
                Method::GET
                    | Method::HEAD
                    | Method::PUT
                    | Method::DELETE
                    | Method::OPTIONS
                    | Method::TRACE
            ),
            relay: relay.clone(),
            handed_over: std::sync::atomic::AtomicBool::new(false),
            sent_again: std::sync::atomic::AtomicBool::new(false),
            pools: self.shared.pools.clone(),
            taken,
            lease: None,
        };
        // From here `request_timeout` and `activity_timeout` end every wait:
        // the server's `timeouts.execution` would otherwise answer 503 to an
        // application given longer than it.
        ctx.set_own_timeout();
        self.receiver
            .follow_accel_redirect(ctx.config(self.config).x_accel_redirect);
        let running = self.shared.running.clone();
        running.fetch_add(1, Ordering::Relaxed);
        // Boxed, as the driver's request tasks are: the exchange's future is
        // large, and tokio moves it by value into its task and out again.
        handle.spawn(Box::pin(async move {
            exchange::run(job).await;
            running.fetch_sub(1, Ordering::Relaxed);
        }));
        self.state = State::Answering(relay);
        RequestNotificationStatus::Pending
    }

    /// Takes what the exchange left into the response.
    fn answer(&mut self, ctx: &mut HttpContext, relay: Arc<Relay>) -> RequestNotificationStatus {
        let limit = ctx.config(self.config).response_buffer_limit;
        match self.receiver.take(ctx, &relay, limit) {
            Step::Wait | Step::Flushing => {
                self.state = State::Answering(relay);
                RequestNotificationStatus::Pending
            }
            Step::Done => {
                // The answer is whole: the handler's other modules, if any,
                // are not asked.
                ctx.set_request_handled();
                RequestNotificationStatus::Continue
            }
            Step::Failed(status, why) => fail(ctx, status, &why),
            Step::Redirect(redirect) => match redirect.run(ctx, "FastCGI") {
                Ok(redirected) => {
                    self.state = State::Redirected(redirected);
                    RequestNotificationStatus::Pending
                }
                Err(failed) => failed,
            },
        }
    }
}

fn too_large(ctx: &mut HttpContext, limit: u64) -> RequestNotificationStatus {
    crate::gateway::too_large(ctx, "FastCGI", "fastcgi.max_request_body", limit)
}

fn fail(ctx: &mut HttpContext, status: StatusCode, why: &str) -> RequestNotificationStatus {
    crate::gateway::fail(ctx, "FastCGI", status, why)
}

impl HttpModule for FastCgi {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A script must be a file, whatever the handler's `resource_type`
        // (nginx users write `try_files $uri =404` for this; Caddy's
        // php_fastcgi checks too): `php-cgi` and php-fpm with `cgi.fix_pathinfo`
        // would otherwise run `/up/pic.jpg` for `/up/pic.jpg/x.php`, an
        // upload as PHP, wherever `security.limit_extensions` lets them.
        // Not for an application mounted at a path (`script_name`), which
        // answers URLs, not scripts; `script_must_exist = false` for a
        // php-fpm that has files this machine does not.
        let config = ctx.config(self.config);
        if config.script_must_exist
            && config.script_name.is_none()
            && ctx.resource_kind() != Some(riis_pipeline::ResourceKind::File)
        {
            return crate::end_with_error(ctx, StatusCode::NOT_FOUND, 0, crate::E_FILE_NOT_FOUND);
        }
        let limit = ctx.config(self.config).max_request_body;
        if crate::gateway::declared_over(ctx, limit) {
            return too_large(ctx, limit);
        }
        self.go_on(ctx, BodySpool::default())
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => RequestNotificationStatus::Continue,
            State::Reading(mut body) => {
                let limit = ctx.config(self.config).max_request_body;
                match crate::gateway::take_body_piece(ctx, &mut body, limit, completion) {
                    Ok(()) => self.go_on(ctx, body),
                    Err(BodyError::TooLarge) => too_large(ctx, limit),
                    Err(other) => {
                        let (status, why) = other.status_and_reason();
                        fail(ctx, status, &why)
                    }
                }
            }
            State::Answering(relay) => self.answer(ctx, relay),
            State::Redirected(redirected) => redirected.finish(ctx),
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<FastCgiConfig>("fastcgi")?;
    let shared = Arc::new(Shared {
        fallback: Mutex::new(None),
        fallback_handle: OnceLock::new(),
        pools: Arc::default(),
        running: Arc::default(),
        applications: Arc::new(Holdings::new(&LIVE_CONFIGURATIONS)),
    });
    let counted = shared.clone();
    ApplicationsGlobal {
        section: config,
        application_of: |config: &FastCgiConfig| config.application.as_ref(),
        // As IIS, FastCGI processes start at their first request.
        preload: |_| false,
        holdings: shared.applications.clone(),
        status: move || {
            format!(
                "fastcgi_requests_running: {}\nfastcgi_requests_waiting: {}\nfastcgi_connections_idle: {}\nfastcgi_processes: {}\nfastcgi_applications_stopped: {}\n",
                counted.running.load(Ordering::Relaxed),
                counted.applications.waiting(),
                counted.pools.idle_count(),
                counted.applications.processes(),
                counted.applications.stopped_for_failures()
            )
        },
    }
    .register(registration)?;
    registration.set_request_notifications(
        Factory { config, shared },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Makes the instances; at shutdown (and once a reload's replaced
/// configuration has no requests left) closes the idle connections, stops
/// the applications' processes (at shutdown waiting until they are gone)
/// and stops the runtime.
struct Factory {
    config: Section<FastCgiConfig>,
    shared: Arc<Shared>,
}

impl riis_pipeline::HttpModuleFactory for Factory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(FastCgi {
            config: self.config,
            shared: self.shared.clone(),
            state: State::Idle,
            receiver: Receiver::default(),
        }))
    }

    fn terminate(&self) {
        self.shared.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mounted_application_gets_the_rest_of_the_path() {
        assert_eq!(mounted("", "/hello/world"), ("", "/hello/world"));
        assert_eq!(mounted("", "/"), ("", "/"));
        assert_eq!(mounted("/app", "/app/hello"), ("/app", "/hello"));
        assert_eq!(mounted("/app", "/app"), ("/app", ""));
        assert_eq!(mounted("/app", "/APP/x"), ("/APP", "/x"));
        // Not below the mount (a segment that only starts the same).
        assert_eq!(mounted("/app", "/application"), ("", "/application"));
        let parse = |text: &str| toml::from_str::<FastCgiConfig>(text).map(|c| c.script_name);
        assert_eq!(parse(r#"script_name = """#).unwrap(), Some(String::new()));
        assert_eq!(
            parse(r#"script_name = "/app""#).unwrap(),
            Some("/app".into())
        );
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("script_name = false").unwrap(), None);
        assert!(parse("script_name = true").is_err());
        assert!(parse(r#"script_name = "/app/""#).is_err());
        assert!(parse(r#"script_name = "app""#).is_err());
    }
}
