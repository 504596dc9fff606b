//! `ClientCertificateMappingAuthentication`: logs a client on by the
//! certificate it presented, as IIS's
//! `iisClientCertificateMappingAuthentication` does: one-to-one mappings
//! name a certificate and its user; many-to-one mappings give one user to
//! every certificate whose subject and issuer match their rules, or deny
//! those certificates.
//!
//! Registers for **AuthenticateRequest** at Medium priority: after
//! `SslAccess` (High), so a location that requires a certificate has
//! already refused requests without one, and before `AnonymousAuthentication`
//! (Low), which then sees the mapped user and lets it be. A request that
//! already has a named user (a child request, or a module of the same
//! priority listed earlier) is left alone; so is a request without a
//! certificate, or whose certificate no mapping takes: it goes on as
//! anonymous, and `UrlAuthorization` decides.
//!
//! - A one-to-one mapping matches the certificate's SHA-256 fingerprint
//!   (the `CERT_COOKIE` server variable; `openssl x509 -fingerprint
//!   -sha256` prints it with colons, which may stay).
//! - A many-to-one mapping matches when all its rules do. A rule compares
//!   one attribute of the subject's or the issuer's name (`CN`, `O`, `OU`,
//!   `C`, `L`, `ST`, `DC`, `Email`, …) with a pattern where `*` stands for
//!   any run of characters, case-sensitively unless it says otherwise (as
//!   IIS's `compareCaseSensitive` defaults to true). A rule whose attribute
//!   the name lacks does not match. Mappings are tried in order, and the
//!   first that matches decides: `permission = "allow"` logs the client on
//!   as its user, `"deny"` ends the request with **403.12** (IIS's "mapper
//!   denied access").
//! - One-to-one mappings are tried before many-to-one ones.
//!
//! The user's authentication type is `SSL/PCT` (IIS's `AUTH_TYPE` for a
//! certificate mapping), with the mapping's `roles`.
//!
//! Configuration section `client_certificate_mapping` (site or location):
//! - `enabled` (default false);
//! - `one_to_one`: a list of `{ sha256, user, roles }`;
//! - `many_to_one`: a list of `{ name, user, roles, permission, rules }`,
//!   each rule `{ field = "subject" | "issuer", sub_field, pattern,
//!   case_sensitive }`.

use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    ClientCertificate, HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::{Deserialize, Deserializer};

/// The `client_certificate_mapping` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertificateMappingConfig {
    /// Whether certificates log clients on.
    pub enabled: bool,
    /// Certificates mapped one by one.
    pub one_to_one: Vec<OneToOneMapping>,
    /// Certificates mapped by their names' attributes.
    pub many_to_one: Vec<ManyToOneMapping>,
}

/// One certificate and its user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneToOneMapping {
    /// The certificate's SHA-256 fingerprint, 64 hex digits (colons
    /// allowed), kept lower case without colons.
    #[serde(deserialize_with = "fingerprint")]
    pub sha256: String,
    /// The user it logs on as.
    #[serde(deserialize_with = "user_name")]
    pub user: String,
    /// The user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Whether a many-to-one mapping lets its certificates in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Log on as the mapping's user.
    #[default]
    Allow,
    /// 403.12.
    Deny,
}

/// Certificates that match every rule, and what they get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawManyToOne")]
pub struct ManyToOneMapping {
    /// A name for logs.
    pub name: String,
    /// The user an allowed certificate logs on as (empty for `deny`).
    pub user: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// `allow` (default) or `deny`.
    pub permission: Permission,
    /// What a certificate must match, all of it.
    pub rules: Vec<MappingRule>,
}

impl TryFrom<RawManyToOne> for ManyToOneMapping {
    type Error = String;

    fn try_from(raw: RawManyToOne) -> Result<Self, String> {
        if raw.permission == Permission::Allow && raw.user.is_empty() {
            return Err("an `allow` mapping needs the `user` it logs on as".to_owned());
        }
        if raw.user.chars().any(char::is_control) {
            return Err("a user name holds no control characters".to_owned());
        }
        Ok(Self {
            name: raw.name,
            user: raw.user,
            roles: raw.roles,
            permission: raw.permission,
            rules: raw.rules,
        })
    }
}

/// A many-to-one mapping as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManyToOne {
    /// A name for logs.
    #[serde(default)]
    pub name: String,
    /// The user an allowed certificate logs on as (ignored for `deny`).
    #[serde(default)]
    pub user: String,
    /// The user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub permission: Permission,
    /// What a certificate must match, all of it (at least one rule).
    #[serde(deserialize_with = "some_rules")]
    pub rules: Vec<MappingRule>,
}

/// Which name of the certificate a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateField {
    /// The subject.
    Subject,
    /// The issuer.
    Issuer,
}

/// One comparison of a name's attribute with a pattern.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// The subject's or the issuer's name.
    pub field: CertificateField,
    /// The attribute (`CN`, `O`, `OU`, …), as Windows names it (see
    /// [`riis_pipeline::canonical_attribute`]; an unknown name is refused
    /// when the configuration loads, since it could never match).
    #[serde(deserialize_with = "attribute")]
    pub sub_field: String,
    /// The pattern; `*` stands for any run of characters.
    pub pattern: String,
    /// Compare case-sensitively (default true, as in IIS).
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

fn yes() -> bool {
    true
}

fn fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let hex: String = text
        .chars()
        .filter(|&c| c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(serde::de::Error::custom(
            "a SHA-256 fingerprint is 64 hex digits (colons allowed)",
        ));
    }
    Ok(hex)
}

fn attribute<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    riis_pipeline::canonical_attribute(&name)
        .map(|c| c.into_owned())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{name}` is not an attribute of a name (known: {}, or OID.1.2.3)",
                riis_pipeline::ATTRIBUTE_NAMES
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn user_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(serde::de::Error::custom(
            "a user name is not empty and holds no control characters",
        ));
    }
    Ok(name)
}

fn some_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MappingRule>, D::Error> {
    let rules = Vec::<MappingRule>::deserialize(d)?;
    if rules.is_empty() {
        return Err(serde::de::Error::custom(
            "a mapping needs at least one rule (one that matched every certificate would be a mistake)",
        ));
    }
    Ok(rules)
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters.
fn wildcard_match(pattern: &str, text: &str, case_sensitive: bool) -> bool {
    use std::borrow::Cow;
    let (pattern, text): (Cow<'_, str>, Cow<'_, str>) = if case_sensitive {
        (Cow::Borrowed(pattern), Cow::Borrowed(text))
    } else {
        (pattern.to_lowercase().into(), text.to_lowercase().into())
    };
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl MappingRule {
    /// Whether any value of the attribute matches: a name may hold several
    /// (`OU=Engineering, OU=Partners`), and a deny rule must not be dodged
    /// by putting another value first (`CN=ok, CN=laptop-0042`).
    fn matches(&self, certificate: &ClientCertificate) -> bool {
        let mut values: Box<dyn Iterator<Item = _>> = match self.field {
            CertificateField::Subject => Box::new(certificate.subject_fields(&self.sub_field)),
            CertificateField::Issuer => Box::new(certificate.issuer_fields(&self.sub_field)),
        };
        values.any(|v| wildcard_match(&self.pattern, &v, self.case_sensitive))
    }
}

/// What the mappings make of a certificate.
enum Mapped<'a> {
    User(&'a str, &'a [String]),
    Denied(&'a str),
    Unmapped,
}

fn map<'a>(config: &'a ClientCertificateMappingConfig, cert: &ClientCertificate) -> Mapped<'a> {
    if let Some(m) = config
        .one_to_one
        .iter()
        .find(|m| m.sha256 == cert.fingerprint_sha256)
    {
        return Mapped::User(&m.user, &m.roles);
    }
    match config
        .many_to_one
        .iter()
        .find(|m| m.rules.iter().all(|r| r.matches(cert)))
    {
        Some(m) if m.permission == Permission::Deny => Mapped::Denied(&m.name),
        Some(m) => Mapped::User(&m.user, &m.roles),
        None => Mapped::Unmapped,
    }
}

/// The name of the mapping of `config` that denies the request's
/// certificate, if one does. WebDav judges a COPY or MOVE's destination
/// by it too.
pub(crate) fn denying_mapping<'a>(
    ctx: &HttpContext,
    config: &'a ClientCertificateMappingConfig,
) -> Option<&'a str> {
    let cert = ctx.client_certificate().filter(|_| config.enabled)?;
    match map(config, cert) {
        Mapped::Denied(name) => Some(name),
        _ => None,
    }
}

/// The module instance.
pub struct ClientCertificateMappingAuthentication {
    config: Section<ClientCertificateMappingConfig>,
}

impl HttpModule for ClientCertificateMappingAuthentication {
    fn on_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let Some(cert) = ctx.client_certificate() else {
            return RequestNotificationStatus::Continue;
        };
        // A module that ran before this one (Basic, at the same priority)
        // may have logged a user on already. The certificate's mappings are
        // read all the same: a deny refuses the certificate whoever else
        // vouches for the client, whatever the order of the module list.
        let logged_on = ctx.user().is_some_and(|u| !u.name().is_empty());
        // After a rewrite, the mappings of the location the client asked
        // for and of this one: a deny in either denies, and a location
        // whose mappings do not know the certificate logs nobody on, so a
        // rewrite cannot lend one location's users to another. The user is
        // the one the client's location maps.
        let (here, asked) = crate::both_configs(ctx, self.config);
        let mut user = None;
        let mut unknown = false;
        for config in asked
            .into_iter()
            .chain(std::iter::once(here))
            .filter(|c| c.enabled)
        {
            match map(config, cert) {
                Mapped::User(name, roles) => {
                    user.get_or_insert_with(|| {
                        HttpUser::new(name, "SSL/PCT").with_roles(roles.iter().cloned())
                    });
                }
                Mapped::Denied(mapping) => {
                    tracing::info!(
                        subject = %cert.subject,
                        mapping,
                        "ClientCertificateMappingAuthentication: a certificate denied by its mapping"
                    );
                    return crate::end_with_error(
                        ctx,
                        StatusCode::FORBIDDEN,
                        12,
                        crate::E_ACCESS_DENIED,
                    );
                }
                Mapped::Unmapped => unknown = true,
            }
        }
        if let Some(user) = user.filter(|_| !unknown && !logged_on) {
            ctx.set_user(user);
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
    let config = registration
        .declare_section::<ClientCertificateMappingConfig>("client_certificate_mapping")?;
    registration.set_request_notifications(
        move || ClientCertificateMappingAuthentication { config },
        RequestNotification::AuthenticateRequest.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard_match("Fabrikam*", "Fabrikam Inc", true));
        assert!(wildcard_match("*", "", true));
        assert!(wildcard_match("a*c*e", "abcde", true));
        assert!(wildcard_match("exact", "exact", true));
        assert!(!wildcard_match("exact", "exactly", true));
        assert!(!wildcard_match("a*b", "a", true));
        assert!(!wildcard_match("ab*ba", "aba", true));
        assert!(!wildcard_match("fabrikam*", "Fabrikam Inc", true));
        assert!(wildcard_match("fabrikam*", "Fabrikam Inc", false));
    }

    fn cert(subject: &str, issuer: &str, fingerprint: &str) -> ClientCertificate {
        ClientCertificate {
            der: Vec::new(),
            subject: subject.to_owned(),
            issuer: issuer.to_owned(),
            serial_number: "01".to_owned(),
            fingerprint_sha256: fingerprint.to_owned(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn one_to_one_first_then_many_to_one_in_order() {
        let config: ClientCertificateMappingConfig = toml::from_str(&format!(
            r#"
enabled = true
one_to_one = [{{ sha256 = "{}", user = "alice", roles = ["admins"] }}]
[[many_to_one]]
name = "revoked"
permission = "deny"
rules = [{{ field = "subject", sub_field = "CN", pattern = "mallory" }}]
[[many_to_one]]
user = "partner"
rules = [
  {{ field = "subject", sub_field = "O", pattern = "fabrikam*", case_sensitive = false }},
  {{ field = "issuer", sub_field = "CN", pattern = "Partner CA" }},
]
"#,
            "AB:".repeat(31) + "AB"
        ))
        .unwrap();
        let alice = cert("CN=mallory", "CN=x", &"ab".repeat(32));
        assert!(matches!(map(&config, &alice), Mapped::User("alice", r) if r == ["admins"]));
        let mallory = cert("O=Fabrikam, CN=mallory", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &mallory), Mapped::Denied("revoked")));
        let bob = cert("O=Fabrikam Inc, CN=bob", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &bob), Mapped::User("partner", _)));
        let other_issuer = cert("O=Fabrikam Inc, CN=bob", "CN=Other CA", "00");
        assert!(matches!(map(&config, &other_issuer), Mapped::Unmapped));
        let no_o = cert("CN=bob", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &no_o), Mapped::Unmapped));
        // Any value of an attribute counts: a second CN cannot hide the
        // denied one, and a second O still matches.
        let hidden = cert("O=Fabrikam, CN=ok-user, CN=mallory", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &hidden), Mapped::Denied("revoked")));
        let plus = cert("O=Fabrikam, CN=ok-user + CN=mallory", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &plus), Mapped::Denied("revoked")));
        let two_o = cert("O=Other, O=Fabrikam Inc, CN=bob", "CN=Partner CA", "00");
        assert!(matches!(map(&config, &two_o), Mapped::User("partner", _)));
    }

    #[test]
    fn bad_mappings_are_refused() {
        for text in [
            "one_to_one = [{ sha256 = \"abc\", user = \"a\" }]",
            "one_to_one = [{ sha256 = \"{64}\", user = \"\" }]",
            "many_to_one = [{ user = \"a\", rules = [] }]",
            "many_to_one = [{ user = \"a\", permission = \"maybe\", rules = [{ field = \"subject\", sub_field = \"CN\", pattern = \"*\" }] }]",
            "many_to_one = [{ user = \"a\", rules = [{ field = \"serial\", sub_field = \"CN\", pattern = \"*\" }] }]",
            "many_to_one = [{ rules = [{ field = \"subject\", sub_field = \"CN\", pattern = \"*\" }] }]",
            "many_to_one = [{ user = \"a\", rules = [{ field = \"subject\", sub_field = \"XYZ\", pattern = \"*\" }] }]",
            "many_to_one = [{ user = \"a\", rules = [{ field = \"subject\", sub_field = \"\", pattern = \"*\" }] }]",
        ] {
            let text = text.replace("{64}", &"0".repeat(64));
            assert!(
                toml::from_str::<ClientCertificateMappingConfig>(&text).is_err(),
                "{text}"
            );
        }
    }
}
