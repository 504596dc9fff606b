//! `AsyncHello`: the seed's OnAsyncCompletion scenario.
//!
//! Registers for **BeginRequest** and **MapRequestHandler**:
//! - BeginRequest clears the response, sets `text/plain`, writes
//!   `Hello World!` asynchronously and returns Pending; OnAsyncCompletion
//!   receives the write's completion (bytes and status) and records it in an
//!   `X-Async-Completion` header, since headers have not gone out yet.
//! - MapRequestHandler flushes asynchronously and returns Pending; the flush's
//!   completion is logged (the seed writes it to the event log) and finishes
//!   the request, as nothing else should answer it.

use riis_pipeline::http::{header, HeaderValue};
use riis_pipeline::{
    CompletionInfo, FlushOptions, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ServerInfo,
};

const GREETING: &str = "Hello World!";

/// The module instance (stateless).
#[derive(Debug, Default)]
pub struct AsyncHello;

impl HttpModule for AsyncHello {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let response = ctx.response_mut();
        response.clear();
        response.set_header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response.write(GREETING);
        // An asynchronous write into the buffer completes at once; the
        // completion still arrives through OnAsyncCompletion, as in IIS.
        match ctx.post_completion(GREETING.len() as u64) {
            Ok(()) => RequestNotificationStatus::Pending,
            Err(e) => {
                ctx.response_mut().set_error_status(
                    riis_pipeline::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Server Error",
                    0,
                    e.hresult,
                );
                RequestNotificationStatus::FinishRequest
            }
        }
    }

    fn on_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        ctx.response_mut().flush(FlushOptions {
            asynchronous: true,
            more_data: false,
        });
        RequestNotificationStatus::Pending
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match notification {
            RequestNotification::BeginRequest => {
                let note = format!(
                    "BeginRequest bytes={} status=0x{:08X}",
                    completion.bytes, completion.status
                );
                if let Ok(v) = HeaderValue::try_from(note) {
                    ctx.response_mut()
                        .set_header(header::HeaderName::from_static("x-async-completion"), v);
                }
                RequestNotificationStatus::Continue
            }
            _ => {
                tracing::info!(
                    notification = %notification,
                    bytes = completion.bytes,
                    status = completion.status,
                    "AsyncHello: asynchronous flush completed"
                );
                RequestNotificationStatus::FinishRequest
            }
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    registration.set_request_notifications(
        || AsyncHello,
        RequestNotification::BeginRequest | RequestNotification::MapRequestHandler,
        RequestNotifications::NONE,
    )
}
