//! `HttpPlatformHandler`: starts an application that serves HTTP itself
//! (Node.js, Python, Java, Go, Ruby) and has its requests passed to it, as
//! IIS's HttpPlatformHandler does: riis runs the program, tells it the
//! port to listen on, watches it, and ReverseProxy passes the requests.
//!
//! Registers for **ExecuteRequestHandler**, as a handler module listed
//! before `ReverseProxy` in the handler's `modules`
//! (`["HttpPlatformHandler", "ReverseProxy"]`): it makes sure a process of
//! the location's application listens, then names it in the
//! `PROXY_SERVER` server variable and continues, and ReverseProxy passes
//! the request there with the location's `proxy` settings (its `timeout`,
//! 120 s, is IIS's `requestTimeout` of two minutes; `X-Forwarded-For`,
//! `-Proto` and `-Host` go along). The passing is ReverseProxy's own work,
//! through the same server variable UrlRewrite uses: this module adds the
//! process, not a second proxy. While no process listens yet (the first
//! request, or after a crash), the request waits (Pending, not holding a
//! worker) and resumes through **OnAsyncCompletion** once one does, or
//! gets 503 after `startup_time_limit`. A request that a UrlRewrite rule
//! (or another module) already sent to a server of its own through
//! `PROXY_SERVER` is left to ReverseProxy, as ARR takes over such a request
//! in IIS. The global **ApplicationStart**
//! takes up the applications a configuration names (a reload with the same
//! settings keeps the running processes), **StopListening** ends the
//! requests' waits (503) and makes the server's stop wait for the
//! processes to exit, and **RscaQuery** reports
//! `http_platform_processes` and `http_platform_applications_stopped` (by
//! rapid fail protection) to `riis status`.
//!
//! The processes (see `managed_application`): each gets a free loopback
//! port in the `HTTP_PLATFORM_PORT` environment variable, and wherever
//! `%HTTP_PLATFORM_PORT%` appears in `arguments` or `environment` values.
//! A process that does not listen within `startup_time_limit` seconds is
//! killed and started again; after `startup_retry_count` such starts in a
//! row, or more than `rapid_fails_per_minute` failures in a minute, the
//! application is stopped and its requests get 503 for a minute. A process
//! that exits, however it exits, is started again (on a new port) and
//! counts as a failure. A process is sent requests only once every socket
//! listening on its port is its process group's: another user's program on
//! `[::1]` at that port gets none. Their standard output is
//! logged at `info`, their standard error at `warn`, a line at a time.
//! They stop (SIGTERM, SIGKILL two seconds later) with the server, or when
//! a reload no longer names the application.
//!
//! Configuration section `http_platform`, per location (IIS's
//! `<httpPlatform>` attributes, in riis's spelling):
//! - `process_path`: the program, relative to the
//!   configuration's folder (an interpreter such as `/usr/bin/node` by its
//!   full path); it must be an executable file. A level without it (the
//!   server's, when only a location names an application) names none;
//! - `arguments` (list, default none): its arguments;
//! - `environment` (table, default none): variables added to riis's
//!   environment (IIS's `environmentVariables`);
//! - `working_directory` (default: the configuration's folder): where the
//!   processes start, relative to the configuration's folder;
//! - `processes_per_application` (default 1, 1 to 100): processes run at
//!   once; requests go to those that listen, in turn, and one whose process
//!   refuses the connection (it crashed, and riis has not seen it yet) to
//!   the next;
//! - `startup_time_limit` (seconds, default 10, 1 to 3600);
//! - `startup_retry_count` (default 10, 0 to 100);
//! - `rapid_fails_per_minute` (default 10, 0 to 100);
//! - `preload_enabled` (default false): the processes start with the
//!   configuration (at the server's start, or at a reload that names the
//!   application), not at the first request (IIS's `preloadEnabled` with
//!   an `AlwaysRunning` pool), so that no request waits for them.
//!
//! Not done: IIS's `stdoutLogEnabled` and `stdoutLogFile` (riis's log
//! takes the output instead) and `forwardWindowsAuthToken` (no Windows
//! tokens here; an authenticated user's name reaches the application in no
//! header of its own).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

use crate::managed_application::{
    Application, ApplicationConfig, ApplicationsGlobal, Endpoint, Holdings, Lease, PortConvention,
};
use crate::reverse_proxy::PROXY_SERVER;

/// The `http_platform` configuration section: the location's application,
/// if it names one.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "HttpPlatformSection")]
pub struct HttpPlatformConfig {
    application: Option<ApplicationConfig>,
    preload_enabled: bool,
}

impl PlatformSection for HttpPlatformConfig {
    const MODULE: &'static str = "HttpPlatformHandler";
    const SECTION: &'static str = "http_platform";
    const STATUS_PREFIX: &'static str = "http_platform";
    const UNAVAILABLE: (StatusCode, u16) = (StatusCode::SERVICE_UNAVAILABLE, 0);

    fn application(&self) -> Option<&ApplicationConfig> {
        self.application.as_ref()
    }

    fn preload_enabled(&self) -> bool {
        self.preload_enabled
    }

    fn live_configurations() -> &'static AtomicUsize {
        &LIVE_CONFIGURATIONS
    }
}

/// What tells the modules that start an HTTP application apart
/// (HttpPlatformHandler, and AspNetCoreModule, which this file's handler
/// also serves): their section, their names, and what each request to the
/// application carries.
pub(crate) trait PlatformSection:
    serde::de::DeserializeOwned + Default + Send + Sync + 'static
{
    /// The module's name, in logs and error pages.
    const MODULE: &'static str;
    /// The configuration section's name.
    const SECTION: &'static str;
    /// How `riis status` lines begin (`…_processes`).
    const STATUS_PREFIX: &'static str;
    /// The status and substatus of a request the application cannot take
    /// (it failed to start, or rapid fail protection stopped it).
    const UNAVAILABLE: (StatusCode, u16);

    /// The location's application, if the section names one.
    fn application(&self) -> Option<&ApplicationConfig>;

    /// Whether the application starts with its configuration (at the
    /// server's start, or a reload's) rather than at its first request.
    fn preload_enabled(&self) -> bool;

    /// The count of this module's configurations that have not retired.
    fn live_configurations() -> &'static AtomicUsize;

    /// Readies the request for the application just chosen, before
    /// ReverseProxy passes it (headers of the application's convention).
    fn prepare(_ctx: &mut HttpContext, _application: &Application) {}

    /// How long a request waits for a process to listen.
    fn startup_time_limit(&self) -> Duration {
        match self.application().map(|a| a.endpoint) {
            Some(Endpoint::Port {
                startup_time_limit, ..
            }) => startup_time_limit,
            _ => Duration::ZERO,
        }
    }
}

/// The section as written.
/// Each value is checked as it is read, so that an error names its key's
/// line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpPlatformSection {
    /// Optional in each layer: a level that sets other keys only (the
    /// server's `startup_time_limit` for all locations), or none (the
    /// site's root when only a location names an application), names no
    /// application.
    #[serde(default, deserialize_with = "crate::managed_application::some_program")]
    process_path: Option<PathBuf>,
    #[serde(default, deserialize_with = "crate::managed_application::arguments")]
    arguments: Vec<String>,
    #[serde(default, deserialize_with = "crate::managed_application::environment")]
    environment: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "folder")]
    working_directory: Option<PathBuf>,
    #[serde(default = "one", deserialize_with = "one_to_100")]
    processes_per_application: usize,
    #[serde(default = "ten", deserialize_with = "seconds")]
    startup_time_limit: u64,
    #[serde(default = "ten", deserialize_with = "up_to_100")]
    startup_retry_count: usize,
    #[serde(default = "ten", deserialize_with = "up_to_100")]
    rapid_fails_per_minute: usize,
    #[serde(default)]
    preload_enabled: bool,
}

pub(crate) fn one() -> usize {
    1
}

pub(crate) fn ten<T: From<u8>>() -> T {
    T::from(10)
}

/// A number of `range`.
pub(crate) fn within<'de, D, T>(d: D, range: std::ops::RangeInclusive<T>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + std::fmt::Display,
{
    let value = T::deserialize(d)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} is not from {} to {}",
            range.start(),
            range.end()
        )))
    }
}

pub(crate) fn one_to_100<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    within(d, 1..=100)
}

pub(crate) fn up_to_100<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    within(d, 0..=100)
}

pub(crate) fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    within(d, 1..=3600)
}

/// The configuration's folder (`.` for a section read outside a
/// configuration file, in tests).
fn configuration_folder() -> PathBuf {
    Some(riis_pipeline::configuration_folder())
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or_else(|| ".".into())
}

/// A folder, relative to the configuration's; it must be one.
pub(crate) fn folder<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let joined = configuration_folder().join(String::deserialize(d)?);
    let folder = std::path::absolute(&joined).unwrap_or(joined);
    if folder.is_dir() {
        Ok(Some(folder))
    } else {
        Err(serde::de::Error::custom(format!(
            "{} is not a folder",
            folder.display()
        )))
    }
}

impl From<HttpPlatformSection> for HttpPlatformConfig {
    fn from(section: HttpPlatformSection) -> Self {
        let Some(path) = section.process_path else {
            return Self::default();
        };
        let working_directory = section
            .working_directory
            .unwrap_or_else(default_working_directory);
        Self {
            application: Some(ApplicationConfig {
                path,
                arguments: section.arguments,
                environment: section.environment,
                instances: section.processes_per_application,
                // FastCGI's alone: no request waits in riis for an HTTP process, nor
                // is one counted.
                queue_length: crate::managed_application::default_queue_length(),
                instance_max_requests: crate::managed_application::default_instance_max_requests(),
                rapid_fails_per_minute: section.rapid_fails_per_minute,
                monitor_changes_to: None,
                endpoint: Endpoint::Port {
                    startup_time_limit: Duration::from_secs(section.startup_time_limit),
                    startup_retry_count: section.startup_retry_count,
                    convention: PortConvention::HttpPlatform,
                },
                working_directory: Some(working_directory),
                stop_grace: crate::managed_application::STOP_GRACE,
            }),
            preload_enabled: section.preload_enabled,
        }
    }
}

/// The folder processes start in by default: the configuration's.
pub(crate) fn default_working_directory() -> PathBuf {
    let folder = configuration_folder();
    std::path::absolute(&folder).unwrap_or(folder)
}

/// How often a waiting request looks whether a process listens, without
/// a runtime to be woken on (an engine test's thread).
const WAIT_STEP: Duration = Duration::from_millis(20);

/// How often a waiting request looks whether its client is still there;
/// a change of the application wakes it at once.
const WAIT_LOOK: Duration = Duration::from_secs(1);

/// Configurations with HttpPlatformHandler that have not retired (see
/// [`Holdings`]).
static LIVE_CONFIGURATIONS: AtomicUsize = AtomicUsize::new(0);

/// The module instance: one per request. `C` is the module's section
/// (HttpPlatformHandler's, or AspNetCoreModule's).
pub(crate) struct HttpPlatformHandler<C: PlatformSection = HttpPlatformConfig> {
    config: Section<C>,
    holdings: Arc<Holdings>,
    /// The application the request waits for (until a process listens),
    /// and until when.
    waiting_for: Option<(Arc<Application>, Instant)>,
    /// Keeps the processes of the start the request was sent to until the
    /// request ends (a recycled start's processes finish their requests).
    _lease: Option<Lease>,
}

impl<C: PlatformSection> HttpPlatformHandler<C> {
    /// Sends the request to a listening process, or waits for one.
    fn route(
        &mut self,
        ctx: &mut HttpContext,
        application: Arc<Application>,
        deadline: Option<Instant>,
    ) -> RequestNotificationStatus {
        match application.listening_addresses() {
            Ok(Some((addresses, lease))) => {
                C::prepare(ctx, &application);
                // The others after the next in turn: one that crashed since
                // it last listened refuses the connection, and the request
                // goes on to the next (nginx's `proxy_next_upstream error`)
                // instead of failing with 502.
                let mut servers = String::with_capacity(addresses.len() * 24);
                for address in &addresses {
                    if !servers.is_empty() {
                        servers.push(' ');
                    }
                    let _ = write!(servers, "http://{address}");
                }
                ctx.set_server_variable(PROXY_SERVER, servers);
                self._lease = Some(lease);
                RequestNotificationStatus::Continue
            }
            Ok(None) if self.holdings.stopping() => stopping::<C>(ctx),
            Ok(None) => match deadline {
                Some(deadline) if Instant::now() >= deadline => {
                    let limit = ctx.config(self.config).startup_time_limit().as_secs();
                    fail::<C>(
                        ctx,
                        &format!(
                            "the application {} did not listen on its port within {limit} s (startup_time_limit)",
                            application.program().display()
                        ),
                    )
                }
                // The process that listened is gone again: the wait goes
                // on until the same deadline.
                Some(deadline) => self.wait(ctx, application, deadline),
                None => {
                    let limit = ctx.config(self.config).startup_time_limit();
                    self.wait(ctx, application, Instant::now() + limit)
                }
            },
            Err(why) => fail::<C>(ctx, &why),
        }
    }

    /// Parks the request until a process listens, the application fails,
    /// `deadline` passes, the server stops or the client leaves.
    fn wait(
        &mut self,
        ctx: &mut HttpContext,
        application: Arc<Application>,
        deadline: Instant,
    ) -> RequestNotificationStatus {
        // The wait ends by `deadline`, which may lie past the server's
        // `timeouts.execution` (`startup_time_limit` goes to an hour).
        ctx.set_own_timeout();
        let handle = ctx.completion_handle();
        let (watched, holdings) = (application.clone(), self.holdings.clone());
        let over = move || !watched.starting() || holdings.stopping() || Instant::now() >= deadline;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Woken by the application's changes (subscribed before the
                // first look, so none is missed), and once a `WAIT_LOOK` to
                // see whether the client is still there.
                let mut changes = application.changes();
                runtime.spawn(async move {
                    while !over() && handle.is_client_connected() {
                        let look = deadline.min(Instant::now() + WAIT_LOOK);
                        let _ = tokio::time::timeout_at(look.into(), changes.changed()).await;
                    }
                    handle.post_completion(0);
                });
            }
            Err(_) => {
                let started = std::thread::Builder::new()
                    .name("riis-http-platform-wait".to_owned())
                    .spawn(move || {
                        while !over() && handle.is_client_connected() {
                            std::thread::sleep(WAIT_STEP);
                        }
                        handle.post_completion(0);
                    });
                if let Err(e) = started {
                    return fail::<C>(ctx, &format!("cannot wait for the application: {e}"));
                }
            }
        }
        self.waiting_for = Some((application, deadline));
        RequestNotificationStatus::Pending
    }
}

/// The module's [`PlatformSection::UNAVAILABLE`] status, logged with why:
/// the application cannot take the request.
fn fail<C: PlatformSection>(ctx: &mut HttpContext, why: &str) -> RequestNotificationStatus {
    let (status, substatus) = C::UNAVAILABLE;
    crate::gateway::fail_with_substatus(ctx, C::MODULE, status, substatus, why)
}

/// 503: the server stops, and no process is left to take the request.
fn stopping<C: PlatformSection>(ctx: &mut HttpContext) -> RequestNotificationStatus {
    crate::gateway::fail(
        ctx,
        C::MODULE,
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is stopping",
    )
}

impl<C: PlatformSection> HttpModule for HttpPlatformHandler<C> {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A rule (or a module) sent the request to a server of its own:
        // ReverseProxy takes it there, as IIS's ARR takes over a request
        // URL Rewrite sent to another server. The application is not
        // started for it, and gets none of its headers.
        if ctx
            .server_variable(PROXY_SERVER)
            .is_some_and(|server| !server.is_empty())
        {
            return RequestNotificationStatus::Continue;
        }
        let Some(config) = ctx.config(self.config).application() else {
            return crate::gateway::fail(
                ctx,
                C::MODULE,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("{}.process_path is not set for this location", C::SECTION),
            );
        };
        let application = self.holdings.application(config);
        self.route(ctx, application, None)
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        _completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match self.waiting_for.take() {
            Some((application, deadline)) => self.route(ctx, application, Some(deadline)),
            None => RequestNotificationStatus::Continue,
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    register_platform::<HttpPlatformConfig>(registration)
}

/// Registers the module of section `C`: the handler at
/// ExecuteRequestHandler, and the global module that starts, stops and
/// reports the applications.
pub(crate) fn register_platform<C: PlatformSection>(
    registration: &mut ModuleRegistration<'_>,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<C>(C::SECTION)?;
    let holdings = Arc::new(Holdings::new(C::live_configurations()));
    let counted = holdings.clone();
    ApplicationsGlobal {
        section: config,
        application_of: |config: &C| config.application(),
        preload: |config: &C| config.preload_enabled(),
        holdings: holdings.clone(),
        status: move || {
            format!(
                "{prefix}_processes: {}\n{prefix}_applications_stopped: {}\n",
                counted.processes(),
                counted.stopped_for_failures(),
                prefix = C::STATUS_PREFIX,
            )
        },
    }
    .register(registration)?;
    registration.set_request_notifications(
        Factory { config, holdings },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Makes the instances; when its configuration retires (the server stops,
/// or a reload replaced it), lets the applications go.
struct Factory<C: PlatformSection> {
    config: Section<C>,
    holdings: Arc<Holdings>,
}

impl<C: PlatformSection> riis_pipeline::HttpModuleFactory for Factory<C> {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(HttpPlatformHandler::<C> {
            config: self.config,
            holdings: self.holdings.clone(),
            waiting_for: None,
            _lease: None,
        }))
    }

    fn terminate(&self) {
        self.holdings.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpPlatformConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_is_checked_as_it_loads() {
        let config = parse("process_path = \"/bin/sh\"\narguments = [\"-c\", \"true\"]").unwrap();
        let application = config.application.unwrap();
        assert_eq!(application.instances, 1);
        assert_eq!(application.rapid_fails_per_minute, 10);
        assert_eq!(
            application.endpoint,
            Endpoint::Port {
                startup_time_limit: Duration::from_secs(10),
                startup_retry_count: 10,
                convention: PortConvention::HttpPlatform,
            }
        );
        let errors = [
            ("process_path = \"/etc\"", "not an executable file"),
            (
                "process_path = \"/bin/sh\"\nstartup_time_limit = 0",
                "0 is not from 1 to 3600",
            ),
            (
                "process_path = \"/bin/sh\"\nprocesses_per_application = 101",
                "101 is not from 1 to 100",
            ),
            (
                "process_path = \"/bin/sh\"\nworking_directory = \"/no/such/folder\"",
                "is not a folder",
            ),
            (
                "process_path = \"/bin/sh\"\nstdout_log_file = \"x\"",
                "unknown field",
            ),
        ];
        for (text, expected) in errors {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        // A level without `process_path` names no application.
        assert!(parse("arguments = []").unwrap().application.is_none());
    }
}
