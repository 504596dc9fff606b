//! `EventTrace`: makes the pipeline's order visible from outside.
//!
//! Registers for **every deterministic event and post-event**, and for
//! **SendResponse**, **MapPath**, **ReadEntity** and **CustomNotification**,
//! all at FIRST priority (so it sees each event before other modules, and —
//! SendResponse being inverted — each send after them). It records the name of
//! each notification it sees (`PostBeginRequest` for a post-event) and, on the
//! send that carries the headers, returns the list in an `X-Riis-Trace`
//! header, comma-separated. A notification that comes several times in a row
//! (a body read in pieces) is one entry, `ReadEntity*12`, and the header is
//! cut at 4 KiB with a last `...`.

use std::fmt::Write as _;

use riis_pipeline::http::header::{HeaderName, HeaderValue};
use riis_pipeline::{
    CustomNotificationProvider, HttpContext, HttpModule, MapPathProvider, ModuleError,
    ModuleRegistration, Priority, ReadEntityProvider, RequestNotification as N,
    RequestNotificationStatus, RequestNotifications, SendResponseProvider, ServerInfo,
};

/// The response header that carries the trace.
pub const TRACE_HEADER: HeaderName = HeaderName::from_static("x-riis-trace");

/// The longest `X-Riis-Trace` value: proxies and clients refuse response
/// heads much larger (nginx's `proxy_buffer_size` is 4 or 8 KiB).
const MAX_TRACE_LEN: usize = 4096;

/// The module instance: the notifications seen so far in this request,
/// each with how many times in a row it came.
#[derive(Debug, Default)]
pub struct EventTrace {
    seen: Vec<(bool, N, u32)>,
}

impl EventTrace {
    fn record(&mut self, post: bool, n: N) -> RequestNotificationStatus {
        match self.seen.last_mut() {
            // A body read in many pieces, a path mapped again: one entry.
            Some((p, last, count)) if *p == post && *last == n => *count += 1,
            _ => self.seen.push((post, n, 1)),
        }
        RequestNotificationStatus::Continue
    }

    /// `BeginRequest,PostBeginRequest,ReadEntity*12,...`, cut at
    /// [`MAX_TRACE_LEN`] with a last `...`.
    fn header_value(&self) -> String {
        let mut text = String::new();
        for (post, n, count) in &self.seen {
            let mark = text.len();
            if !text.is_empty() {
                text.push(',');
            }
            if *post {
                text.push_str("Post");
            }
            text.push_str(n.name());
            if *count > 1 {
                let _ = write!(text, "*{count}");
            }
            if text.len() > MAX_TRACE_LEN - 4 {
                text.truncate(mark);
                text.push_str(",...");
                break;
            }
        }
        text
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
            if let Ok(value) = HeaderValue::from_str(&self.header_value()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_collapse_and_the_header_is_capped() {
        let mut t = EventTrace::default();
        t.record(false, N::BeginRequest);
        t.record(true, N::BeginRequest);
        for _ in 0..12 {
            t.record(false, N::ReadEntity);
        }
        t.record(false, N::SendResponse);
        assert_eq!(
            t.header_value(),
            "BeginRequest,PostBeginRequest,ReadEntity*12,SendResponse"
        );
        // Alternating notifications cannot be collapsed: the cap holds.
        for _ in 0..1000 {
            t.record(false, N::MapPath);
            t.record(false, N::ReadEntity);
        }
        let value = t.header_value();
        assert!(value.len() <= MAX_TRACE_LEN, "{}", value.len());
        assert!(value.ends_with(",..."), "{value}");
    }
}
