//! `SslAccess`: requires TLS, and a client certificate, per location, as
//! IIS's SSL Settings (the `access` section's `sslFlags`) do.
//!
//! Registers for **AuthenticateRequest** at High priority: a client
//! certificate is the first thing a client proves, so a location that
//! requires one answers 403.7 before an authentication scheme asks for a
//! password (401). UrlRewrite's rules run earlier (BeginRequest), so a rule
//! that sends plain HTTP to `https://` still works on a location that
//! requires TLS (IIS answers 403.4 first, which makes such rules useless
//! there). HttpRedirection decides later (MapRequestHandler) and cannot.
//!
//! - A request over plain HTTP to a location with `require_ssl` or
//!   `require_client_certificate` gets **403.4** (SSL required).
//! - A TLS request without a certificate to a location with
//!   `require_client_certificate` gets **403.7** (client certificate
//!   required). The handshake asks for certificates only on the host names
//!   of sites that set `client_certificate_ca`, and verifies the chain
//!   against it; a certificate that does not verify fails the handshake.
//!
//! A request a module rewrote into another location must meet what both
//! locations require.
//!
//! Configuration section `access` (site or location):
//! - `require_ssl` (default false);
//! - `require_client_certificate` (default false).

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

/// The `access` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Plain HTTP requests get 403.4.
    pub require_ssl: bool,
    /// Requests without a client certificate get 403.7 (403.4 on plain
    /// HTTP).
    pub require_client_certificate: bool,
}

/// The module instance.
pub struct SslAccess {
    config: Section<AccessConfig>,
}

impl HttpModule for SslAccess {
    fn on_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // What the location the client asked for requires holds after a
        // rewrite too.
        let (here, asked) = crate::both_configs(ctx, self.config);
        let ssl = here.require_ssl || asked.is_some_and(|a| a.require_ssl);
        let certificate =
            here.require_client_certificate || asked.is_some_and(|a| a.require_client_certificate);
        match refusal(ctx, ssl, certificate) {
            Some(substatus) => crate::end_with_error(
                ctx,
                StatusCode::FORBIDDEN,
                substatus,
                crate::E_ACCESS_DENIED,
            ),
            None => RequestNotificationStatus::Continue,
        }
    }
}

/// The substatus of the 403 a request gets where TLS (`ssl`) or a client
/// certificate is required: 4 over plain HTTP, 7 over TLS without the
/// certificate. WebDav judges a COPY or MOVE's destination by it too.
pub(crate) fn refusal(ctx: &HttpContext, ssl: bool, certificate: bool) -> Option<u16> {
    if (ssl || certificate) && !ctx.request().is_tls() {
        return Some(4);
    }
    (certificate && ctx.client_certificate().is_none()).then_some(7)
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<AccessConfig>("access")?;
    registration.set_request_notifications(
        move || SslAccess { config },
        RequestNotification::AuthenticateRequest.into(),
        RequestNotifications::NONE,
    )?;
    registration.set_priority_for_request_notification(
        RequestNotification::AuthenticateRequest,
        Priority::High,
    );
    Ok(())
}
