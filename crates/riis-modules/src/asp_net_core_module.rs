//! `AspNetCoreModule`: runs an ASP.NET Core application (`dotnet
//! MyApp.dll`, or its own executable) and has its requests passed to it,
//! as IIS's ASP.NET Core Module (ANCM) does in its out-of-process hosting
//! model: riis starts the application with the environment its IIS
//! integration (`UseIISIntegration`, part of every web host's defaults)
//! looks for, so the application listens where riis tells it to and takes
//! only the requests riis passes.
//!
//! Registers for **ExecuteRequestHandler**, as a handler module listed
//! before `ReverseProxy` in the handler's `modules`
//! (`["AspNetCoreModule", "ReverseProxy"]`), and for the global
//! **ApplicationStart**, **StopListening** and **RscaQuery**, all for the
//! same reasons as HttpPlatformHandler, whose handler this module shares
//! (`http_platform_handler.rs`): it makes sure a process listens (the
//! request waits as Pending until one does), names it in `PROXY_SERVER`,
//! and ReverseProxy passes the request with the location's `proxy`
//! settings. `riis status` shows `asp_net_core_processes` and
//! `asp_net_core_applications_stopped`.
//!
//! What the application is given, as the ASP.NET Core Module gives it:
//! - `ASPNETCORE_PORT`: a free loopback port, its own (a process started
//!   again gets a new one); the IIS integration makes Kestrel listen on
//!   `http://127.0.0.1:` that port, whatever else the application asks;
//! - `ASPNETCORE_APPL_PATH`: `application_path`, which the integration
//!   takes as the request's `PathBase`;
//! - `ASPNETCORE_TOKEN`: a pairing token, 128 random bits made when the
//!   application is first started (kept across its restarts and reloads
//!   with the same settings). Every request passed carries it in
//!   `MS-ASPNETCORE-TOKEN`; the integration answers 400 to a request
//!   without it, so another local program cannot talk to the application
//!   as riis does. It goes in ReverseProxy's `PROXY_REQUEST_HEADERS`, so
//!   only the request sent to the application carries it, not the request
//!   other modules, logs, traces and child requests see.
//!
//! Every `MS-ASPNETCORE-*` header a client sent is removed before the
//! request is passed: the integration trusts them as riis's own (a client's
//! `MS-ASPNETCORE-EVENT: shutdown` at `/iisintegration` would stop the
//! application; a client's `MS-ASPNETCORE-CLIENTCERT` would stand for a
//! certificate it never presented). The client certificate of a TLS
//! connection that presented one goes along in `MS-ASPNETCORE-CLIENTCERT`
//! (base64 DER), as the ASP.NET Core Module sends it. `X-Forwarded-For`
//! and `X-Forwarded-Proto`, which the integration reads, are ReverseProxy's.
//!
//! An application that cannot take requests (it did not listen within
//! `startup_time_limit`, could not be run, or rapid fail protection stopped
//! it) answers **502.5**, the ASP.NET Core Module's "process failure";
//! while the server stops, 503.
//!
//! Configuration section `asp_net_core`, per location (the attributes of
//! IIS's `<aspNetCore>`, in riis's spelling):
//! - `process_path`: the program, relative to the
//!   configuration's folder (`/usr/bin/dotnet`, or the application's own
//!   executable, `./MyApp`); it must be an executable file. A level
//!   without it names no application;
//! - `arguments` (list, default none): its arguments (`["./MyApp.dll"]`);
//! - `environment` (table, default none): variables added to riis's
//!   environment (`ASPNETCORE_ENVIRONMENT = "Production"`); those above are
//!   riis's and cannot be set here;
//! - `working_directory` (default: the configuration's folder);
//! - `application_path` (default `/`): the URL path the application is
//!   mounted at, IIS's application path (`/shop` for an application at
//!   `[[sites.locations]] path = "/shop"`);
//! - `processes_per_application` (default 1, 1 to 100);
//! - `startup_time_limit` (seconds, default 120, 1 to 3600);
//! - `shutdown_time_limit` (seconds, default 10, 0 to 600): how long a
//!   process has to finish its requests after SIGTERM (the ASP.NET Core
//!   host's graceful stop) before it is killed;
//! - `rapid_fails_per_minute` (default 10, 0 to 100);
//! - `preload_enabled` (default false): the processes start with the
//!   configuration, not at the first request (IIS's `preloadEnabled`).
//!
//! As with HttpPlatformHandler, a process that does not listen in time is
//! killed and started again; after ten such starts in a row (the ASP.NET
//! Core Module has no `startupRetryCount`; HttpPlatformHandler's default is
//! used), or more than `rapid_fails_per_minute` exits in a minute, the
//! application is stopped for a minute. The processes' output goes to
//! riis's log (standard output at `info`, standard error at `warn`).
//!
//! Not done: the in-process hosting model (`hostingModel="inprocess"`
//! loads the .NET runtime into IIS's worker process, which has no
//! equivalent here: such an application runs out of process, as it does
//! under IIS with `hostingModel="outofprocess"`, unchanged); `stdoutLogFile`
//! (riis's log takes the output); `forwardWindowsAuthToken` and
//! `disableStartUpErrorPage` (the 502.5 page is riis's error page, subject
//! to `http_errors`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use base64::Engine as _;
use riis_pipeline::http::{HeaderName, StatusCode};
use riis_pipeline::{HttpContext, ModuleError, ModuleRegistration, ServerInfo};
use serde::Deserialize;

use crate::http_platform_handler::{
    default_working_directory, folder, one, one_to_100, register_platform, seconds, ten, up_to_100,
    within, PlatformSection,
};
use crate::managed_application::{Application, ApplicationConfig, Endpoint, PortConvention};
use crate::reverse_proxy::PROXY_REQUEST_HEADERS;

/// The header that carries the pairing token.
const TOKEN_HEADER: &str = "ms-aspnetcore-token";

/// The header that carries a client certificate, base64 DER.
const CLIENT_CERTIFICATE_HEADER: &str = "ms-aspnetcore-clientcert";

/// What every header of the ASP.NET Core Module's own begins with.
const OWN_HEADERS: &str = "ms-aspnetcore-";

/// The environment variable naming the application's path.
const APPLICATION_PATH_VARIABLE: &str = "ASPNETCORE_APPL_PATH";

/// Starts in a row that did not listen past which the application is
/// stopped (HttpPlatformHandler's `startup_retry_count` default; the
/// ASP.NET Core Module has no such setting).
const STARTUP_RETRIES: usize = 10;

/// Configurations with AspNetCoreModule that have not retired.
static LIVE_CONFIGURATIONS: AtomicUsize = AtomicUsize::new(0);

/// The `asp_net_core` configuration section: the location's application,
/// if it names one.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "AspNetCoreSection")]
pub struct AspNetCoreConfig {
    application: Option<ApplicationConfig>,
    preload_enabled: bool,
}

/// The section as written; each value is checked as it is read, so that
/// an error names its key's line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AspNetCoreSection {
    /// Optional in each layer, as `http_platform`'s: a level without it
    /// names no application.
    #[serde(default, deserialize_with = "crate::managed_application::some_program")]
    process_path: Option<PathBuf>,
    #[serde(default, deserialize_with = "crate::managed_application::arguments")]
    arguments: Vec<String>,
    #[serde(default, deserialize_with = "riis_own_variables_left_out")]
    environment: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "folder")]
    working_directory: Option<PathBuf>,
    #[serde(default = "root", deserialize_with = "url_path")]
    application_path: String,
    #[serde(default = "one", deserialize_with = "one_to_100")]
    processes_per_application: usize,
    #[serde(default = "two_minutes", deserialize_with = "seconds")]
    startup_time_limit: u64,
    #[serde(default = "ten", deserialize_with = "up_to_600")]
    shutdown_time_limit: u64,
    #[serde(default = "ten", deserialize_with = "up_to_100")]
    rapid_fails_per_minute: usize,
    #[serde(default)]
    preload_enabled: bool,
}

fn root() -> String {
    "/".to_owned()
}

fn two_minutes() -> u64 {
    120
}

fn up_to_600<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    within(d, 0..=600)
}

/// `application_path`: a URL path.
fn url_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if path.starts_with('/') && !path.chars().any(|c| c.is_control() || c == '?' || c == '#') {
        Ok(path)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{}` is not a URL path such as `/` or `/shop`",
            path.escape_debug()
        )))
    }
}

/// `environment`, without the variables riis sets itself: a configuration
/// that sets one is told so, rather than having it overridden in silence.
fn riis_own_variables_left_out<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let environment = crate::managed_application::environment(d)?;
    let own = [
        "ASPNETCORE_PORT",
        "ASPNETCORE_TOKEN",
        APPLICATION_PATH_VARIABLE,
    ];
    match environment.keys().find(|k| own.contains(&k.as_str())) {
        Some(name) => Err(serde::de::Error::custom(format!(
            "{name} is set by riis for each process (see docs/modules/asp-net-core-module.md); \
             `application_path` sets ASPNETCORE_APPL_PATH"
        ))),
        None => Ok(environment),
    }
}

impl From<AspNetCoreSection> for AspNetCoreConfig {
    fn from(section: AspNetCoreSection) -> Self {
        let Some(path) = section.process_path else {
            return Self::default();
        };
        let mut environment = section.environment;
        environment.insert(
            APPLICATION_PATH_VARIABLE.to_owned(),
            section.application_path,
        );
        Self {
            application: Some(ApplicationConfig {
                path,
                arguments: section.arguments,
                environment,
                instances: section.processes_per_application,
                // FastCGI's alone: no request waits in riis for an HTTP process, nor
                // is one counted.
                queue_length: crate::managed_application::default_queue_length(),
                instance_max_requests: crate::managed_application::default_instance_max_requests(),
                rapid_fails_per_minute: section.rapid_fails_per_minute,
                monitor_changes_to: None,
                endpoint: Endpoint::Port {
                    startup_time_limit: Duration::from_secs(section.startup_time_limit),
                    startup_retry_count: STARTUP_RETRIES,
                    convention: PortConvention::AspNetCore,
                },
                working_directory: Some(
                    section
                        .working_directory
                        .unwrap_or_else(default_working_directory),
                ),
                stop_grace: Duration::from_secs(section.shutdown_time_limit),
            }),
            preload_enabled: section.preload_enabled,
        }
    }
}

impl PlatformSection for AspNetCoreConfig {
    const MODULE: &'static str = "AspNetCoreModule";
    const SECTION: &'static str = "asp_net_core";
    const STATUS_PREFIX: &'static str = "asp_net_core";
    /// The ASP.NET Core Module's "502.5 Process Failure".
    const UNAVAILABLE: (StatusCode, u16) = (StatusCode::BAD_GATEWAY, 5);

    fn application(&self) -> Option<&ApplicationConfig> {
        self.application.as_ref()
    }

    fn preload_enabled(&self) -> bool {
        self.preload_enabled
    }

    fn live_configurations() -> &'static AtomicUsize {
        &LIVE_CONFIGURATIONS
    }

    /// The client's `MS-ASPNETCORE-*` headers out of the request; the
    /// pairing token and the client certificate into the request sent to
    /// the application alone (ReverseProxy's `PROXY_REQUEST_HEADERS`): in
    /// the request itself they would reach child requests (an
    /// `X-Accel-Redirect`'s, a custom error page's) and whatever server
    /// those go to, logs and traces.
    fn prepare(ctx: &mut HttpContext, application: &Application) {
        let request = ctx.request_mut();
        let forged: Vec<HeaderName> = request
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with(OWN_HEADERS))
            .cloned()
            .collect();
        for name in forged {
            request.delete_header(name);
        }
        // After those a rule or module put there (later lines win), less
        // any of the module's own names: a rule may pass on what a client
        // sent (`{HTTP_X_EXTRA}`).
        let mut lines = String::new();
        if let Some(set) = ctx.server_variable(PROXY_REQUEST_HEADERS) {
            for line in set.lines() {
                let name = line.split_once(':').map_or(line, |(name, _)| name);
                if !name.trim().to_ascii_lowercase().starts_with(OWN_HEADERS) {
                    lines.push_str(line);
                    lines.push('\n');
                }
            }
        }
        if let Some(token) = application.pairing_token() {
            lines.push_str(TOKEN_HEADER);
            lines.push_str(": ");
            lines.push_str(token);
            lines.push('\n');
        }
        if let Some(certificate) = ctx.client_certificate() {
            lines.push_str(CLIENT_CERTIFICATE_HEADER);
            lines.push_str(": ");
            base64::engine::general_purpose::STANDARD.encode_string(&certificate.der, &mut lines);
            lines.push('\n');
        }
        ctx.set_server_variable(PROXY_REQUEST_HEADERS, lines);
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    register_platform::<AspNetCoreConfig>(registration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AspNetCoreConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_has_the_asp_net_core_modules_defaults() {
        let config = parse("process_path = \"/bin/sh\"").unwrap();
        let application = config.application.unwrap();
        assert_eq!(application.instances, 1);
        assert_eq!(application.rapid_fails_per_minute, 10);
        assert_eq!(application.stop_grace, Duration::from_secs(10));
        assert_eq!(
            application.endpoint,
            Endpoint::Port {
                startup_time_limit: Duration::from_secs(120),
                startup_retry_count: 10,
                convention: PortConvention::AspNetCore,
            }
        );
        assert_eq!(application.environment[APPLICATION_PATH_VARIABLE], "/");
        let config = parse(
            "process_path = \"/bin/sh\"\napplication_path = \"/shop\"\nshutdown_time_limit = 0",
        )
        .unwrap();
        let application = config.application.unwrap();
        assert_eq!(application.environment[APPLICATION_PATH_VARIABLE], "/shop");
        assert_eq!(application.stop_grace, Duration::ZERO);
    }

    /// A level without `process_path` names no application: the server's
    /// when only a location does, or one that sets defaults for the
    /// locations below it.
    #[test]
    fn a_section_without_a_program_names_no_application() {
        assert!(parse("").unwrap().application.is_none());
        assert!(parse("shutdown_time_limit = 30")
            .unwrap()
            .application
            .is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let errors = [
            (
                "process_path = \"/bin/sh\"\nstartup_time_limit = 0",
                "0 is not from 1 to 3600",
            ),
            (
                "process_path = \"/bin/sh\"\nshutdown_time_limit = 601",
                "601 is not from 0 to 600",
            ),
            (
                "process_path = \"/bin/sh\"\napplication_path = \"shop\"",
                "not a URL path",
            ),
            (
                "process_path = \"/bin/sh\"\nenvironment = { ASPNETCORE_TOKEN = \"x\" }",
                "ASPNETCORE_TOKEN is set by riis",
            ),
            (
                "process_path = \"/bin/sh\"\nenvironment = { \"ASPNETCORE_TOKEN=\" = \"x\" }",
                "cannot be an environment variable's name",
            ),
            (
                "process_path = \"/bin/sh\"\nenvironment = { A = \"x\\u0000y\" }",
                "holds a NUL character",
            ),
            (
                "process_path = \"/bin/sh\"\narguments = [\"a\", \"b\\u0000\"]",
                "argument 2 holds a NUL character",
            ),
            (
                "process_path = \"/bin/sh\"\nhosting_model = \"inprocess\"",
                "unknown field",
            ),
        ];
        for (text, expected) in errors {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
