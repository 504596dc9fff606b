//! The authenticated user of a request (IIS's `IHttpUser`).

use std::sync::Arc;

/// A module's own answer to `IsInRole`, for a user whose roles it knows
/// and does not list (IIS asks the module's `IHttpUser` itself: roles from
/// a token's claims, a directory lookup). Asked on any thread, while anything
/// holds the user.
pub trait RoleCheck: std::any::Any + Send + Sync {
    /// Whether the user is in `role`.
    fn is_in_role(&self, role: &str) -> bool;
}

/// A user set by an authentication module at AuthenticateRequest.
#[derive(Clone, Default)]
pub struct HttpUser {
    name: String,
    authentication_type: String,
    roles: Vec<String>,
    role_check: Option<Arc<dyn RoleCheck>>,
    issuer: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUser")
            .field("name", &self.name)
            .field("authentication_type", &self.authentication_type)
            .field("roles", &self.roles)
            .field("role_check", &self.role_check.is_some())
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// Users are equal when all they say is: the same role check too.
impl PartialEq for HttpUser {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.authentication_type == other.authentication_type
            && self.roles == other.roles
            && self.issuer == other.issuer
            && match (&self.role_check, &other.role_check) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for HttpUser {}

impl HttpUser {
    /// A user with a name and the scheme that authenticated it (`Basic`,
    /// `Anonymous`, …).
    pub fn new(name: impl Into<String>, authentication_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            authentication_type: authentication_type.into(),
            roles: Vec::new(),
            role_check: None,
            issuer: None,
        }
    }

    /// The same user with roles.
    pub fn with_roles(mut self, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// `GetUserName`; empty for the anonymous user.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `GetAuthenticationType`.
    pub fn authentication_type(&self) -> &str {
        &self.authentication_type
    }

    /// The same user, whose module answers `IsInRole` for roles the list
    /// does not name.
    pub fn with_role_check(mut self, check: Arc<dyn RoleCheck>) -> Self {
        self.role_check = Some(check);
        self
    }

    /// The same user, vouched for by `issuer`: the authenticating module's
    /// own words for the settings it checked the user against
    /// (BasicAuthentication: its user and group files). A child request
    /// keeps its parent's user; in a location whose settings would vouch
    /// for users otherwise (another user file, whose `admin` is someone
    /// else), that module logs the request on again rather than take the
    /// user as it is.
    pub fn with_issuer(mut self, issuer: impl Into<Arc<str>>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// What vouched for the user (see [`HttpUser::with_issuer`]), if its
    /// module said.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The module's role check, if the user has one.
    pub fn role_check(&self) -> Option<&Arc<dyn RoleCheck>> {
        self.role_check.as_ref()
    }

    /// `IsInRole`: the roles listed, compared ASCII case-insensitively as
    /// Windows roles are, then the module's role check.
    pub fn is_in_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
            || self.role_check.as_ref().is_some_and(|c| c.is_in_role(role))
    }

    /// All roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
}
