//! `EventTrace`: makes the pipeline's order visible from outside.
//!
//! Registers for **every deterministic event and post-event**, and for
//! **SendResponse**, **MapPath**, **ReadEntity** and **CustomNotification**,
//! all at FIRST priority (so it sees each event before other modules, and —
//! SendResponse being inverted — each send after them). It records the name of
//! each notification it sees (`PostBeginRequest` for a post-event) and, on the
//! send that carries the headers, returns the list in an `X-Riis-Trace`
//! header, comma-separated.

use riis_pipeline::http::header::{HeaderName, HeaderValue};
use riis_pipeline::{
    CustomNotificationProvider, HttpContext, HttpModule, MapPathProvider, ModuleError,
    ModuleRegistration, Priority, ReadEntityProvider, RequestNotification as N,
    RequestNotificationStatus, RequestNotifications, SendResponseProvider, ServerInfo,
};

/// The response header that carries the trace.
pub const TRACE_HEADER: HeaderName = HeaderName::from_static("x-riis-trace");

/// The module instance: the notifications seen so far in this request.
#[derive(Debug, Default)]
pub struct EventTrace {
    seen: String,
}

impl EventTrace {
    fn record(&mut self, post: bool, n: N) -> RequestNotificationStatus {
        if !self.seen.is_empty() {
            self.seen.push(',');
        }
        if post {
            self.seen.push_str("Post");
        }
        self.seen.push_str(n.name());
        RequestNotificationStatus::Continue
    }
}

macro_rules! trace_events {
    ($($method:ident => $post:expr, $n:ident;)*) => {
        $(fn $method(&mut self, _ctx: &mut HttpContext) -> RequestNotificationStatus {
            self.record($post, N::$n)
        })*
    };
}

impl HttpModule for EventTrace {
    trace_events! {
        on_begin_request => false, BeginRequest;
        on_post_begin_request => true, BeginRequest;
        on_authenticate_request => false, AuthenticateRequest;
        on_post_authenticate_request => true, AuthenticateRequest;
        on_authorize_request => false, AuthorizeRequest;
        on_post_authorize_request => true, AuthorizeRequest;
        on_resolve_request_cache => false, ResolveRequestCache;
        on_post_resolve_request_cache => true, ResolveRequestCache;
        on_map_request_handler => false, MapRequestHandler;
        on_post_map_request_handler => true, MapRequestHandler;
        on_acquire_request_state => false, AcquireRequestState;
        on_post_acquire_request_state => true, AcquireRequestState;
        on_pre_execute_request_handler => false, PreExecuteRequestHandler;
        on_post_pre_execute_request_handler => true, PreExecuteRequestHandler;
        on_execute_request_handler => false, ExecuteRequestHandler;
        on_post_execute_request_handler => true, ExecuteRequestHandler;
        on_release_request_state => false, ReleaseRequestState;
        on_post_release_request_state => true, ReleaseRequestState;
        on_update_request_cache => false, UpdateRequestCache;
        on_post_update_request_cache => true, UpdateRequestCache;
        on_log_request => false, LogRequest;
        on_post_log_request => true, LogRequest;
        on_end_request => false, EndRequest;
        on_post_end_request => true, EndRequest;
    }

    fn on_map_path(
        &mut self,
        _ctx: &mut HttpContext,
        _p: &mut MapPathProvider,
    ) -> RequestNotificationStatus {
        self.record(false, N::MapPath)
    }

    fn on_read_entity(
        &mut self,
        _ctx: &mut HttpContext,
        _p: &mut ReadEntityProvider,
    ) -> RequestNotificationStatus {
        self.record(false, N::ReadEntity)
    }

    fn on_custom_request_notification(
        &mut self,
        _ctx: &mut HttpContext,
        _p: &mut dyn CustomNotificationProvider,
    ) -> RequestNotificationStatus {
        self.record(false, N::CustomNotification)
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        self.record(false, N::SendResponse);
        if provider.headers_being_sent() {
            if let Ok(value) = HeaderValue::from_str(&self.seen) {
                ctx.response_mut().set_header(TRACE_HEADER, value);
            }
        }
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let wanted = RequestNotifications::ALL;
    registration.set_request_notifications(
        EventTrace::default,
        wanted,
        RequestNotifications::ALL_DETERMINISTIC,
    )?;
    for n in N::DETERMINISTIC {
        registration.set_priority_for_request_notification(n, Priority::First);
        registration.set_priority_for_post_request_notification(n, Priority::First)?;
    }
    for n in N::NONDETERMINISTIC {
        registration.set_priority_for_request_notification(n, Priority::First);
    }
    Ok(())
}
