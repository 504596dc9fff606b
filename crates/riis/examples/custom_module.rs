//! Embedding riis with a module compiled into the program.
//!
//! `RequestTimer` measures how long riis takes to produce each response and
//! reports it, in microseconds, in a response header whose name comes from
//! the module's `request_timer` configuration section.
//!
//! With no argument the program serves the repository's example site on
//! http://127.0.0.1:8090 with the configuration embedded below:
//!
//! ```sh
//! cargo run -p riis --example custom_module
//! curl -i http://127.0.0.1:8090/            # X-Elapsed-Micros: …
//! curl -i http://127.0.0.1:8090/hello.txt   # X-Hello-Micros: …
//! ```
//!
//! With an argument it loads that `riis.toml` instead; the file enables the
//! module by listing `RequestTimer` in `[[modules]]`, like a built-in one:
//!
//! ```sh
//! cargo run -p riis --example custom_module -- path/to/riis.toml
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use riis_pipeline::http::header::{HeaderName, HeaderValue};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, SendResponseProvider, ServerInfo,
};
use riis_server::{ConfigError, Server, ServerConfig};
use serde::Deserialize;

/// The `request_timer` section. Every key has a default, so the section may
/// be left out, or set partly at server, site or location level.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RequestTimerConfig {
    /// The response header that carries the elapsed time.
    header: Header,
}

impl Default for RequestTimerConfig {
    fn default() -> Self {
        Self {
            header: Header(HeaderName::from_static("x-elapsed-micros")),
        }
    }
}

/// A header name, checked when the configuration is loaded: a bad name is a
/// configuration error with file, line and key, not a failure at request time.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct Header(HeaderName);

impl TryFrom<String> for Header {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        HeaderName::from_bytes(name.as_bytes())
            .map(Header)
            .map_err(|_| format!("`{name}` is not a valid header name"))
    }
}

/// The module instance: one per request, dropped when the request ends, so a
/// plain field is enough to carry the start time from BeginRequest to
/// SendResponse.
struct RequestTimer {
    config: Section<RequestTimerConfig>,
    started: Option<Instant>,
}

impl HttpModule for RequestTimer {
    fn on_begin_request(&mut self, _ctx: &mut HttpContext) -> RequestNotificationStatus {
        self.started = Some(Instant::now());
        RequestNotificationStatus::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        // A response may be sent in several parts; only the first one
        // carries the headers.
        if !provider.headers_being_sent() {
            return RequestNotificationStatus::Continue;
        }
        // BeginRequest did not reach this module if a module before it
        // finished the request there; fall back to the arrival time.
        let started = self.started.unwrap_or_else(|| ctx.start_time());
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let name = ctx.config(self.config).header.0.clone();
        ctx.response_mut()
            .set_header(name, HeaderValue::from(micros));
        RequestNotificationStatus::Continue
    }
}

/// The module's entry point: the same signature as the built-in modules'.
fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<RequestTimerConfig>("request_timer")?;
    registration.set_request_notifications(
        move || RequestTimer {
            config,
            started: None,
        },
        RequestNotification::BeginRequest | RequestNotification::SendResponse,
        RequestNotifications::NONE,
    )?;
    // FIRST on BeginRequest: start the clock before any other module runs.
    // FIRST on SendResponse: that order is inverted, so this module runs
    // after the modules of lower priority and times the response as it
    // leaves.
    registration
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::First);
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::First);
    Ok(())
}

/// The configuration used when no file is given. Site roots are relative to
/// the repository's `examples` folder.
const EMBEDDED_CONFIG: &str = r#"
[server]
worker_threads = 2

[[modules]]
name = "RequestTimer"

[[modules]]
name = "StaticFile"

[[modules]]
name = "DefaultDocument"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[[sites]]
name = "Example"
root = "site"
bindings = ["127.0.0.1:8090"]
request_timer = { header = "X-Elapsed-Micros" }

# One URL reports under another header name: the location's value of the
# section overrides the site's, key by key.
[[sites.locations]]
path = "/hello.txt"
request_timer = { header = "X-Hello-Micros" }
"#;

fn load_config() -> Result<ServerConfig, ConfigError> {
    match std::env::args_os().nth(1) {
        Some(path) => ServerConfig::load(Path::new(&path)),
        None => {
            let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
            ServerConfig::parse(EMBEDDED_CONFIG, Path::new("<example>"), &examples)
        }
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("custom_module: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The compiled-in modules, by the name the configuration uses. They are
    // looked up before the built-in ones.
    let server = match Server::with_modules(config, &[("RequestTimer", register_module)]) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("custom_module: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Serves until SIGTERM or SIGINT (Ctrl-C), then drains.
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_module: {e}");
            ExitCode::FAILURE
        }
    }
}
