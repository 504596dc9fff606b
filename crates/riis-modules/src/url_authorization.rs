//! `UrlAuthorization`: allows or denies a location's requests by user, role
//! and method, as IIS's URL authorization module does.
//!
//! Registers for **AuthorizeRequest**: the user the authentication modules
//! set at AuthenticateRequest (or none) is checked against the location's
//! rules. A request the rules refuse ends with 401.2, as in IIS, so a
//! client that sent no credentials (or a user's who may not) gets
//! BasicAuthentication's challenge and can log on as someone who may.
//! Child requests are checked too: their URL may lead into another
//! location. A request a module rewrote into another location (a front
//! controller) must be allowed by the rules of both: the location it was
//! rewritten into and the one the client asked for.
//!
//! Configuration section `authorization` (IIS's `authorization`), per
//! location:
//! - `rules`: a list of `{ access = "Allow" | "Deny", users = "…", roles
//!   = "…", verbs = "…" }`. `users` is a comma-separated list of user
//!   names, `*` (everyone, anonymous included) or `?` (the anonymous
//!   user); `roles` a comma-separated list of roles (BasicAuthentication's
//!   groups); `verbs` a comma-separated list of methods (empty: every
//!   method, compared in any case). A rule names users, roles or both.
//!   User names compare exactly, as the user file tells `admin` and
//!   `Admin` apart; roles compare ASCII case-insensitively (`IsInRole`).
//!
//!   As in IIS, the Deny rules are looked at before the Allow rules, each
//!   kind in order; the first rule that matches decides, and a request no
//!   rule matches is refused. The default is one rule, `{ access =
//!   "Allow", users = "*" }`. A location's `rules` replace the list it
//!   inherits (sections merge key by key), so a location lists all its
//!   rules.

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

/// The `authorization` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// The rules, in order.
    pub rules: Vec<AuthorizationRule>,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        Self {
            rules: vec![AuthorizationRule {
                access: Access::Allow,
                users: vec![UserSpec::Everyone],
                roles: Vec::new(),
                verbs: Vec::new(),
            }],
        }
    }
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Access {
    /// The request may go on.
    #[serde(alias = "allow")]
    Allow,
    /// The request is refused.
    #[serde(alias = "deny")]
    Deny,
}

/// Who a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    /// `*`.
    Everyone,
    /// `?`.
    Anonymous,
    /// A user name.
    Name(String),
}

/// One rule, checked when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RuleFields")]
pub struct AuthorizationRule {
    /// Allow or deny.
    pub access: Access,
    /// The users it names.
    pub users: Vec<UserSpec>,
    /// The roles it names.
    pub roles: Vec<String>,
    /// The methods it applies to (empty: all).
    pub verbs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    access: Access,
    #[serde(default)]
    users: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    verbs: String,
}

/// The items of a comma-separated list, trimmed, empty ones dropped.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl TryFrom<RuleFields> for AuthorizationRule {
    type Error = String;

    fn try_from(fields: RuleFields) -> Result<Self, String> {
        let users: Vec<UserSpec> = items(&fields.users)
            .map(|u| match u {
                "*" => UserSpec::Everyone,
                "?" => UserSpec::Anonymous,
                name => UserSpec::Name(name.to_owned()),
            })
            .collect();
        let roles: Vec<String> = items(&fields.roles).map(str::to_owned).collect();
        if users.is_empty() && roles.is_empty() {
            return Err("a rule names `users`, `roles` or both".into());
        }
        let verbs = items(&fields.verbs)
            .map(|v| {
                if v.bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
                {
                    Ok(v.to_owned())
                } else {
                    Err(format!("`{v}` is not a method"))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            access: fields.access,
            users,
            roles,
            verbs,
        })
    }
}

impl AuthorizationRule {
    fn matches(&self, user: Option<&HttpUser>, method: &str) -> bool {
        // Methods compare in any case: a handler that takes `delete` for
        // DELETE must not get it past a rule about DELETE.
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v.eq_ignore_ascii_case(method)) {
            return false;
        }
        let anonymous = user.is_none_or(|u| u.name().is_empty());
        let named = self.users.iter().any(|spec| match spec {
            UserSpec::Everyone => true,
            UserSpec::Anonymous => anonymous,
            // Exactly, as the user file tells `admin` and `Admin` apart.
            UserSpec::Name(n) => !anonymous && user.is_some_and(|u| u.name() == n),
        });
        named || user.is_some_and(|u| self.roles.iter().any(|r| u.is_in_role(r)))
    }
}

impl AuthorizationConfig {
    /// Whether `user` may send `method` here: Deny rules first, then Allow
    /// rules; the first that matches decides; none refuses.
    pub fn allows(&self, user: Option<&HttpUser>, method: &str) -> bool {
        let first = |access| {
            self.rules
                .iter()
                .filter(move |r| r.access == access)
                .any(|r| r.matches(user, method))
        };
        !first(Access::Deny) && first(Access::Allow)
    }
}

/// The module instance: one per request.
pub struct UrlAuthorization {
    config: Section<AuthorizationConfig>,
}

impl HttpModule for UrlAuthorization {
    fn on_authorize_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // After a rewrite, the rules of the location the client asked for
        // must allow the request too (the application acts on that URL).
        let (here, asked) = crate::both_configs(ctx, self.config);
        let (user, method) = (ctx.user(), ctx.request().method().as_str());
        if here.allows(user, method) && asked.is_none_or(|asked| asked.allows(user, method)) {
            return RequestNotificationStatus::Continue;
        }
        tracing::info!(
            user = ?ctx.user().map_or("", |u| u.name()),
            method = %ctx.request().method(),
            url = %ctx.request().raw_url(),
            "UrlAuthorization refused the request"
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
    let config = registration.declare_section::<AuthorizationConfig>("authorization")?;
    registration.set_request_notifications(
        move || UrlAuthorization { config },
        RequestNotification::AuthorizeRequest.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(access: Access, users: &str, roles: &str, verbs: &str) -> AuthorizationRule {
        AuthorizationRule::try_from(RuleFields {
            access,
            users: users.into(),
            roles: roles.into(),
            verbs: verbs.into(),
        })
        .unwrap()
    }

    #[test]
    fn deny_rules_come_first_and_nothing_matching_is_refused() {
        let alice = HttpUser::new("alice", "Basic").with_roles(["Admins"]);
        let bob = HttpUser::new("Bob", "Basic");
        let anonymous = HttpUser::new("", "Anonymous");
        let config = AuthorizationConfig {
            rules: vec![
                rule(Access::Allow, "*", "", "GET, head"),
                rule(Access::Allow, "", "admins", ""),
                rule(Access::Deny, "?", "", ""),
            ],
        };
        // The Deny rule, though listed last, refuses anonymous GETs.
        assert!(!config.allows(Some(&anonymous), "GET"));
        assert!(!config.allows(None, "GET"));
        assert!(config.allows(Some(&bob), "GET"));
        assert!(config.allows(Some(&bob), "HEAD"));
        assert!(!config.allows(Some(&bob), "POST"), "no rule matches");
        assert!(config.allows(Some(&alice), "POST"), "by role, any case");

        let named = AuthorizationConfig {
            rules: vec![rule(Access::Allow, "bob, carol", "", "")],
        };
        assert!(!named.allows(Some(&bob), "DELETE"), "names compare exactly");
        let exact = HttpUser::new("bob", "Basic");
        assert!(named.allows(Some(&exact), "DELETE"));
        let deny_delete = AuthorizationConfig {
            rules: vec![
                rule(Access::Deny, "*", "", "DELETE"),
                rule(Access::Allow, "*", "", ""),
            ],
        };
        assert!(
            !deny_delete.allows(Some(&exact), "delete"),
            "methods in any case"
        );
        assert!(deny_delete.allows(Some(&exact), "GET"));
        assert!(!named.allows(Some(&alice), "GET"));
        assert!(!named.allows(Some(&anonymous), "GET"));
        assert!(AuthorizationConfig::default().allows(None, "GET"));
    }

    #[test]
    fn rules_are_checked_when_the_configuration_loads() {
        let fields = |users: &str, roles: &str, verbs: &str| RuleFields {
            access: Access::Allow,
            users: users.into(),
            roles: roles.into(),
            verbs: verbs.into(),
        };
        assert!(AuthorizationRule::try_from(fields("", " , ", ""))
            .unwrap_err()
            .contains("names `users`, `roles` or both"));
        assert!(AuthorizationRule::try_from(fields("*", "", "GET /x"))
            .unwrap_err()
            .contains("not a method"));
    }
}
