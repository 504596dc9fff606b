//! `AnonymousAuthentication`: lets requests without credentials in as the
//! anonymous user, or, where it is turned off, refuses them with 401.2, as
//! IIS's anonymous authentication module and server do.
//!
//! Registers for **AuthenticateRequest** at Low priority, so the modules
//! that check credentials (BasicAuthentication, Medium) have gone first: a
//! request that still has no user is the anonymous user's
//! (`HttpUser::new("", "Anonymous")`: an empty name, as IIS's
//! `GetUserName`), or, with `enabled = false`, ends with 401.2 ("logon
//! failed due to server configuration"), to which BasicAuthentication adds
//! its challenge. A child request keeps its parent's user; when that is
//! the anonymous user, the child's location decides again, so a default
//! document or error page in a location that requires a logon is not
//! served to an anonymous parent. A request a module rewrote (UrlRewrite's
//! front controller) is anonymous only where both the location it asked
//! for and the one it was rewritten into allow it. Turning anonymous access off where no
//! module sends a challenge (BasicAuthentication not enabled there) leaves
//! clients no way to log on: 401.2 is all they get.
//!
//! Configuration section `anonymous_authentication` (IIS's
//! `anonymousAuthentication`), per location:
//! - `enabled` (default true). Turning it off in a location is how a
//!   location requires a logon.

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

/// The `anonymous_authentication` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousAuthenticationConfig {
    /// Whether requests without credentials are let in.
    pub enabled: bool,
}

impl Default for AnonymousAuthenticationConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The module instance: one per request.
pub struct AnonymousAuthentication {
    config: Section<AnonymousAuthenticationConfig>,
}

impl HttpModule for AnonymousAuthentication {
    fn on_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A user with a name logged on. One without is the anonymous user,
        // which a child request may have from its parent: where anonymous
        // access is off, a child request needs a logon as much as its
        // parent would.
        let anonymous = match ctx.user() {
            Some(user) if !user.name().is_empty() => return RequestNotificationStatus::Continue,
            Some(_) => true,
            None => false,
        };
        // Off in the location the client asked for, before a rewrite, is
        // off: a front controller's rewrite must not open a location that
        // requires a logon.
        let (here, asked) = crate::both_configs(ctx, self.config);
        if here.enabled && asked.is_none_or(|asked| asked.enabled) {
            if !anonymous {
                ctx.set_user(HttpUser::new("", "Anonymous"));
            }
            return RequestNotificationStatus::Continue;
        }
        // Every browser's first request for a protected page: the
        // challenge is the normal course (the access log has the 401), not
        // worth a line per request at the default level.
        tracing::debug!(
            url = %ctx.request().raw_url(),
            "AnonymousAuthentication: a request without credentials where anonymous access is off"
        );
        crate::end_with_error(ctx, StatusCode::UNAUTHORIZED, 2, crate::E_ACCESS_DENIED)
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration
        .declare_section::<AnonymousAuthenticationConfig>("anonymous_authentication")?;
    registration.set_request_notifications(
        move || AnonymousAuthentication { config },
        RequestNotification::AuthenticateRequest.into(),
        RequestNotifications::NONE,
    )?;
    // After the modules that check credentials.
    registration.set_priority_for_request_notification(
        RequestNotification::AuthenticateRequest,
        Priority::Low,
    );
    Ok(())
}
