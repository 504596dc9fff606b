//! The authenticated user of a request (IIS's `IHttpUser`).

/// A user set by an authentication module at AuthenticateRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpUser {
    name: String,
    authentication_type: String,
    roles: Vec<String>,
}

impl HttpUser {
    /// A user with a name and the scheme that authenticated it (`Basic`,
    /// `Anonymous`, …).
    pub fn new(name: impl Into<String>, authentication_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            authentication_type: authentication_type.into(),
            roles: Vec::new(),
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

    /// `IsInRole`, compared ASCII case-insensitively as Windows roles are.
    pub fn is_in_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// All roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
}
