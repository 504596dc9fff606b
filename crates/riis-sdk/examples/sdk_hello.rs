//! `sdk_hello`: a riis module written in Rust and loaded as a shared library.
//!
//! Build: `cargo build -p riis-sdk --example sdk_hello`, which produces
//! `target/debug/examples/libsdk_hello.so` exporting `RegisterModule` and
//! `riis_module_abi`. Load it with `[[global_modules]]` in riis.toml.
//!
//! What it does, on every request of the sites it runs for:
//!
//! - BeginRequest counts the request in a site-scope module context (an
//!   `AtomicU64`) and keeps the request's number in a request-scope context;
//!   SendResponse reads it back when the headers go out and sends it as
//!   `X-Site-Requests`.
//! - `GET /sdk` answers `200`, `text/plain`, `X-Module: sdk_hello`,
//!   "hello from a Rust module library\n".
//! - `POST /sdk/echo` reads the request body asynchronously and answers it
//!   back (`200`, `application/octet-stream`, `X-Module: sdk_hello`).
//! - `GET /sdk/async` returns Pending, and a thread completes the request
//!   through a `CompletionHandle` (`post_completion(7)`);
//!   `on_async_completion` answers "completed on another thread: 7 bytes\n".
//!   The thread logs through the `Logger` kept from registration, whose
//!   lines name the module though no call of it runs.
//! - `GET /sdk/shout` writes "quiet words\n" at BeginRequest; SendResponse
//!   reads the buffered entity back and replaces it in upper case.
//! - A query string of exactly `panic=1` (any URL) makes BeginRequest panic,
//!   to show containment: the request fails with 500.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use riis_sdk::{
    CompletionInfo, ContextScope, HttpContext, HttpModule, LogLevel, Logger, ModuleError,
    ModuleRegistration, RequestNotification, RequestNotificationStatus, RequestNotifications,
    SendResponseProvider, ServerInfo,
};

/// The module's logger, for its own threads.
static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Requests of one site that reached this module (site scope).
#[derive(Default)]
struct SiteRequests(AtomicU64);

/// This request's number in its site (request scope).
struct RequestNumber(u64);

/// What the instance is doing, between its calls.
#[derive(Default)]
enum Work {
    #[default]
    Nothing,
    /// `/sdk/echo`: the body read so far.
    Echo(Vec<u8>),
    /// `/sdk/async`: waiting for the thread.
    Async,
}

#[derive(Default)]
struct SdkHello {
    work: Work,
}

const ECHO_READ: usize = 16 * 1024;
const ECHO_LIMIT: usize = 1024 * 1024;

fn respond(ctx: &mut HttpContext, content_type: &str, body: &[u8]) -> Result<(), ModuleError> {
    let response = ctx.response_mut();
    response.set_status(200, "OK")?;
    response.set_header("Content-Type", content_type)?;
    response.set_header("X-Module", "sdk_hello")?;
    response.write(body)?;
    Ok(())
}

/// The status for the result of an answer: the request is done either way,
/// with a 500 when answering failed.
fn finish(ctx: &mut HttpContext, result: Result<(), ModuleError>) -> RequestNotificationStatus {
    if let Err(e) = result {
        ctx.log(LogLevel::Error, &format!("sdk_hello: {e}"));
        let _ = ctx
            .response_mut()
            .set_error_status(500, "Internal Server Error", 0, e.hresult);
    }
    RequestNotificationStatus::FinishRequest
}

impl SdkHello {
    /// Starts (or continues) reading the body for `/sdk/echo`.
    fn read_more(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        match ctx.read_entity_body(ECHO_READ) {
            Ok(()) => RequestNotificationStatus::Pending,
            Err(e) => finish(ctx, Err(e)),
        }
    }
}

impl HttpModule for SdkHello {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.request().query_string() == "panic=1" {
            // What a failed request wrote (this header) is not sent: it
            // gets an empty 500.
            let _ = ctx.response_mut().set_header("X-Sdk-Partial", "written");
            panic!("sdk_hello: panic requested by the query string");
        }

        // Typed module contexts: a counter shared by the site, and this
        // request's number, read back in SendResponse.
        let number =
            match ctx.module_context_or_insert_with(ContextScope::Site, SiteRequests::default) {
                Ok(site) => site.0.fetch_add(1, Ordering::Relaxed) + 1,
                Err(e) => {
                    ctx.log(LogLevel::Warn, &format!("sdk_hello: site context: {e}"));
                    0
                }
            };
        if let Err(e) = ctx.set_request_context(RequestNumber(number)) {
            ctx.log(LogLevel::Warn, &format!("sdk_hello: request context: {e}"));
        }

        match ctx.request().url() {
            "/sdk" => {
                let result = respond(ctx, "text/plain", b"hello from a Rust module library\n");
                finish(ctx, result)
            }
            "/sdk/shout" => {
                let result = respond(ctx, "text/plain", b"quiet words\n");
                finish(ctx, result)
            }
            "/sdk/echo" => {
                self.work = Work::Echo(Vec::new());
                self.read_more(ctx)
            }
            "/sdk/async" => {
                self.work = Work::Async;
                let handle = ctx.completion_handle();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    if let Some(logger) = LOGGER.get() {
                        logger.log(LogLevel::Info, "sdk_hello: the async thread completes");
                    }
                    // Nothing to do if the request is gone.
                    let _ = handle.post_completion(7);
                });
                RequestNotificationStatus::Pending
            }
            _ => RequestNotificationStatus::Continue,
        }
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match &mut self.work {
            Work::Echo(body) => {
                if completion.status != 0 {
                    return finish(
                        ctx,
                        Err(ModuleError::with_hresult(
                            "reading the body failed",
                            completion.status,
                        )),
                    );
                }
                let data = ctx.read_data();
                if !data.is_empty() && body.len() + data.len() <= ECHO_LIMIT {
                    body.extend_from_slice(data);
                    return self.read_more(ctx);
                }
                if !data.is_empty() {
                    let result =
                        ctx.response_mut()
                            .set_error_status(413, "Payload Too Large", 0, 0);
                    return finish(ctx, result);
                }
                let body = std::mem::take(body);
                let result = respond(ctx, "application/octet-stream", &body);
                finish(ctx, result)
            }
            Work::Async => {
                let text = format!("completed on another thread: {} bytes\n", completion.bytes);
                let result = respond(ctx, "text/plain", text.as_bytes());
                finish(ctx, result)
            }
            Work::Nothing => RequestNotificationStatus::Continue,
        }
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if provider.headers_being_sent() {
            if let Some(RequestNumber(n)) = ctx.request_context::<RequestNumber>() {
                let n = n.to_string();
                let _ = ctx.response_mut().set_header("X-Site-Requests", &n);
            }
        }
        if ctx.request().url() == "/sdk/shout" {
            if let Ok(body) = ctx.response().entity() {
                let _ = ctx.response_mut().set_entity(body.to_ascii_uppercase());
            }
        }
        RequestNotificationStatus::Continue
    }
}

fn register(
    _server_version: u32,
    registration: &mut ModuleRegistration,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    registration.set_request_notifications(
        SdkHello::default,
        RequestNotification::BeginRequest | RequestNotification::SendResponse,
        RequestNotifications::NONE,
    )?;
    let _ = LOGGER.set(registration.logger());
    server.logger().log(
        LogLevel::Info,
        &format!(
            "sdk_hello registered as {} on {}",
            registration.name(),
            server.software
        ),
    );
    Ok(())
}

riis_sdk::export_module!(register);
