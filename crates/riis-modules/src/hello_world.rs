//! `HelloWorld`: the seed's CHelloWorld module.
//!
//! Registers for **BeginRequest** only: it clears the response, sets
//! `text/plain`, writes `Hello World!` and finishes the request, so every URL
//! of a site that enables it answers the same way. LogRequest and EndRequest
//! still run for it, and the response is sent through SendResponse.

use riis_pipeline::http::{header, HeaderValue};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, ServerInfo,
};

/// The module instance; it keeps no state, so making one per request costs
/// nothing (a zero-sized box does not allocate).
#[derive(Debug, Default)]
pub struct HelloWorld;

impl HttpModule for HelloWorld {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let response = ctx.response_mut();
        response.clear();
        response.set_header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response.write("Hello World!");
        RequestNotificationStatus::FinishRequest
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    registration.set_request_notifications(
        || HelloWorld,
        RequestNotification::BeginRequest.into(),
        RequestNotifications::NONE,
    )
}
