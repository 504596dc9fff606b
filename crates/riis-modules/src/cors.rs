//! `Cors`: cross-origin resource sharing (the Fetch standard's CORS
//! protocol), as IIS's CORS module gives it: per location, which origins
//! may read the site's answers from a browser, with which methods, headers
//! and credentials.
//!
//! Registers for:
//!
//! - **BeginRequest** (Medium priority, so IpRestriction and
//!   RequestFiltering, at First, judge the client first): a preflight (an
//!   `OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
//!   answered here, before authentication, since browsers send preflights
//!   without credentials and an authentication module would answer 401. A
//!   request from an origin the rules deny, or list nowhere while
//!   `fail_unlisted_origins` is set, gets 403 here.
//! - **SendResponse**, on the send that carries the headers: a request
//!   from an allowed origin gets `Access-Control-Allow-Origin` (and
//!   `-Credentials`, `-Expose-Headers`) on whatever answer it gets, error
//!   pages included, so the page can read why it failed, and no CORS
//!   header of the application's (for a denied or unlisted origin either);
//!   and every answer where the module is enabled gets `Vary: Origin`.
//!
//! Which rule applies to an origin (inferred; IIS's reference does not say,
//! and list order would make a broad rule hide a narrow one): the most
//! specific that matches, whatever the order of the list: an exact origin,
//! then `scheme://*.domain` (the longest domain first), then `scheme://*`,
//! then `*`. A rule with `allowed = false` decides like any other, so it
//! can carve an origin out of a broader allowed one. `*` does not match the
//! origin `null` (sandboxed frames, `file:` pages, redirects across
//! origins): a rule must name `null` to allow it.
//!
//! Configuration section `cors` (IIS's `cors`), per location:
//! - `enabled` (default false);
//! - `fail_unlisted_origins` (default false; IIS's `failUnlistedOrigins`):
//!   a request whose origin no rule allows gets 403 instead of an answer
//!   without CORS headers (which the browser then keeps from the page);
//! - `origins`: a list of `{ origin = "https://app.example.com",
//!   allowed = true, allow_credentials = false, max_age = 600,
//!   allowed_methods = ["PUT"], allowed_headers = ["X-Requested-With"],
//!   allow_all_requested_headers = false, exposed_headers = ["X-Total"] }`.
//!   `origin` is `*`, `null`, or `scheme://host[:port]` where the host may
//!   start with `*.`; a path, a trailing `/` or an empty host is a
//!   configuration error, since browsers never send one. GET, HEAD and
//!   POST need not be listed (the Fetch standard's simple methods).
//!
//! A preflight the origin's rule allows gets `204 No Content` with the
//! requested method and headers echoed as allowed, `-Credentials` and
//! `-Max-Age` when set, and `Vary` on the three request headers it
//! depends on; one asking for a method or header the rule does not list
//! gets 403 (the detailed error page says which). A denied or unlisted
//! origin gets no CORS headers (403 only with `fail_unlisted_origins`, as
//! in IIS); an `Origin` no browser sends matches no rule. `*` or
//! `scheme://*` with `allow_credentials` is a configuration error.

use std::sync::Arc;

use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

/// The `cors` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Whether the module answers here.
    pub enabled: bool,
    /// Whether a request from an origin no rule allows gets 403.
    pub fail_unlisted_origins: bool,
    /// The rules, by origin.
    #[serde(deserialize_with = "origin_rules")]
    pub origins: Vec<OriginRule>,
}

/// `origins`: no rule for every origin gives credentials; each rule's
/// `Access-Control-Expose-Headers` is made once, here.
fn origin_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OriginRule>, D::Error> {
    let mut rules = Vec::<OriginRule>::deserialize(d)?;
    for (i, rule) in rules.iter_mut().enumerate() {
        // Any page can send `Origin: null` (a sandboxed frame), so `null`
        // is as broad as `*`.
        let broad = match &rule.origin {
            OriginPattern::Any | OriginPattern::AnyHost { .. } => true,
            OriginPattern::Exact(origin) => origin == "null",
            OriginPattern::Below { .. } => false,
        };
        if broad && rule.allow_credentials {
            return Err(serde::de::Error::custom(format!(
                "origins[{i}]: allow_credentials with a rule for every origin (or for `null`, which any page can send from a sandboxed frame) would let any site read the answers a user's cookies get (IIS's reference asks for a named origin): name the origins"
            )));
        }
        let names: Vec<&str> = rule
            .exposed_headers
            .iter()
            .map(HeaderName::as_str)
            .collect();
        rule.expose = (!names.is_empty())
            .then(|| HeaderValue::from_str(&names.join(", ")).ok())
            .flatten();
    }
    Ok(rules)
}

/// One `origins` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginRule {
    /// The origins the rule is for.
    pub origin: OriginPattern,
    /// Whether those origins are allowed (`false` carves them out of a
    /// broader rule).
    #[serde(default = "yes")]
    pub allowed: bool,
    /// `Access-Control-Allow-Credentials: true` (the origin is then named,
    /// never `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age`, in seconds, on preflight answers.
    #[serde(default)]
    pub max_age: Option<u32>,
    /// Methods besides GET, HEAD and POST a preflight may ask for.
    #[serde(default, deserialize_with = "methods")]
    pub allowed_methods: Vec<Method>,
    /// Request headers a preflight may ask for.
    #[serde(default, deserialize_with = "header_names")]
    pub allowed_headers: Vec<HeaderName>,
    /// Whether a preflight may ask for any request header.
    #[serde(default)]
    pub allow_all_requested_headers: bool,
    /// `Access-Control-Expose-Headers`: response headers the page may read
    /// besides the safelisted ones.
    #[serde(default, deserialize_with = "header_names")]
    pub exposed_headers: Vec<HeaderName>,
    /// `exposed_headers` as the header's value (made with the section).
    #[serde(skip)]
    expose: Option<HeaderValue>,
}

fn yes() -> bool {
    true
}

/// An `origin` of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin but `null`.
    Any,
    /// `scheme://*`: every origin of the scheme.
    AnyHost {
        /// `http` or `https`, lower case.
        scheme: String,
    },
    /// `scheme://*.domain[:port]`: every origin below the domain.
    Below {
        /// `scheme://`, lower case.
        scheme: String,
        /// `.domain`, lower case.
        domain: String,
        /// `:port`, or empty.
        port: String,
    },
    /// One origin (`null` too), lower case.
    Exact(String),
}

impl<'de> Deserialize<'de> for OriginPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        OriginPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl OriginPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if lower == "*" {
            return Ok(Self::Any);
        }
        if lower == "null" {
            return Ok(Self::Exact(lower));
        }
        let problem = |why: &str| {
            format!("`{text}` is not an origin ({why}): write `*`, `null` or `https://host[:port]`, whose host may start with `*.`")
        };
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(problem("no scheme"));
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(problem("the scheme"));
        }
        if rest.contains('/') {
            return Err(problem("browsers send no path, not even `/`"));
        }
        if rest == "*" {
            return Ok(Self::AnyHost {
                scheme: scheme.to_owned(),
            });
        }
        // The port follows the host's last `:` outside an IPv6 literal's
        // brackets.
        let after_literal = rest.rfind(']').map_or(0, |i| i + 1);
        let (host, port) = match rest[after_literal..].find(':') {
            Some(i) => {
                let (host, port) = rest.split_at(after_literal + i);
                let digits = &port[1..];
                let number = digits.parse::<u16>().ok().filter(|_| {
                    !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
                });
                let Some(number) = number else {
                    return Err(problem("the port"));
                };
                // Browsers leave the scheme's own port out of an origin.
                if (scheme == "https" && number == 443) || (scheme == "http" && number == 80) {
                    return Err(problem(
                        "browsers leave the default port out: write it without",
                    ));
                }
                (host, port.to_owned())
            }
            None => (rest, String::new()),
        };
        let name_ok = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        };
        if let Some(domain) = host.strip_prefix("*.") {
            if !name_ok(domain) || domain.contains('*') {
                return Err(problem("the host"));
            }
            return Ok(Self::Below {
                scheme: format!("{scheme}://"),
                domain: format!(".{domain}"),
                port,
            });
        }
        if !name_ok(host) {
            return Err(problem("the host"));
        }
        Ok(Self::Exact(format!("{scheme}://{host}{port}")))
    }

    /// How specific the pattern is when it matches `origin` (lower case):
    /// higher wins; `None` when it does not match.
    fn specificity(&self, origin: &str) -> Option<usize> {
        match self {
            Self::Any => (origin != "null").then_some(0),
            Self::AnyHost { scheme } => origin
                .strip_prefix(scheme.as_str())
                .is_some_and(|rest| rest.starts_with("://"))
                .then_some(1),
            Self::Below {
                scheme,
                domain,
                port,
            } => {
                let rest = origin.strip_prefix(scheme.as_str())?;
                let host = rest.strip_suffix(port.as_str())?;
                // A port the pattern does not name is another origin.
                let below = host.strip_suffix(domain.as_str())?;
                (!below.is_empty() && !below.contains(':') && !below.ends_with('.'))
                    .then_some(2 + domain.len())
            }
            Self::Exact(exact) => (exact == origin).then_some(usize::MAX),
        }
    }
}

fn methods<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|m| {
            // The Fetch standard sends these six in upper case whatever
            // the page wrote; other methods are case-sensitive.
            const NORMALISED: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
            let m = match NORMALISED.iter().find(|n| n.eq_ignore_ascii_case(&m)) {
                Some(n) => (*n).to_owned(),
                None => m,
            };
            Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| !m.is_empty() && m != "*")
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{m}` is not a method (each is listed; there is no `*`)"
                    ))
                })
        })
        .collect()
}

fn header_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{h}` is not a header name (for every requested header, allow_all_requested_headers)"
                ))
            })
        })
        .collect()
}

/// Whether `origin` (lower case) is one a browser sends: `null`, or
/// `scheme://host[:port]` whose host is DNS labels or an IP literal. Any
/// other value matches no rule (it is not echoed back).
fn is_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let after_literal = rest.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match rest[after_literal..].find(':') {
        Some(i) => rest.split_at(after_literal + i),
        None => (rest, ""),
    };
    let port_ok =
        port.is_empty() || (port.len() > 1 && port[1..].bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(literal) = host.strip_prefix('[') {
        literal
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    scheme_ok && port_ok && host_ok
}

/// The rule that decides for `origin` (lower case): the most specific that
/// matches.
fn rule_for<'a>(config: &'a CorsConfig, origin: &str) -> Option<(usize, &'a OriginRule)> {
    config
        .origins
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| rule.origin.specificity(origin).map(|s| (s, i, rule)))
        // The first of equally specific rules wins (`max_by_key` keeps the
        // last).
        .fold(
            None,
            |best: Option<(usize, usize, &OriginRule)>, candidate| match best {
                Some(b) if b.0 >= candidate.0 => Some(b),
                _ => Some(candidate),
            },
        )
        .map(|(_, i, rule)| (i, rule))
}

/// What BeginRequest decided for a request from an allowed origin.
struct Allowed {
    config: Arc<CorsConfig>,
    rule: usize,
    origin: HeaderValue,
}

/// The module instance: one per request.
pub struct Cors {
    config: Section<CorsConfig>,
    allowed: Option<Allowed>,
    /// The module is enabled here: the answer carries `Vary: Origin`.
    varies: bool,
    /// The request came from an origin no rule allows.
    refused: bool,
    /// The request is a preflight: its answer, allowed or refused, depends
    /// on the two request headers that ask, as well as the origin.
    preflight: bool,
}

impl Cors {
    /// Answers a preflight from an origin `rule` allows.
    fn preflight(&self, ctx: &mut HttpContext, allowed: &Allowed) -> RequestNotificationStatus {
        let rule = &allowed.config.origins[allowed.rule];
        let request = ctx.request();
        let method = request
            .header("access-control-request-method")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let simple = matches!(method.as_slice(), b"GET" | b"HEAD" | b"POST");
        let method_ok = simple
            || rule
                .allowed_methods
                .iter()
                .any(|m| m.as_str().as_bytes() == method);
        let asked_headers: Vec<String> = request
            .headers()
            .get_all("access-control-request-headers")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let refused_header = asked_headers.iter().find(|h| {
            !rule.allow_all_requested_headers
                && !rule
                    .allowed_headers
                    .iter()
                    .any(|a| a.as_str() == h.as_str())
        });
        let method_text = String::from_utf8_lossy(&method).into_owned();
        if !method_ok || refused_header.is_some() {
            let why = match refused_header {
                Some(h) if method_ok => format!(
                    "Cors: the rule for this origin does not allow the request header `{h}`"
                ),
                _ => format!(
                    "Cors: the rule for this origin does not allow the method `{method_text}`"
                ),
            };
            let finished =
                crate::end_with_error(ctx, StatusCode::FORBIDDEN, 0, crate::E_ACCESS_DENIED);
            ctx.response_mut().set_error_description(why);
            return finished;
        }
        let resp = ctx.response_mut();
        resp.clear();
        resp.set_status(StatusCode::NO_CONTENT, "No Content");
        set_origin_headers(resp, rule, &allowed.origin);
        if let Ok(v) = HeaderValue::from_bytes(&method) {
            resp.set_header(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if !asked_headers.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&asked_headers.join(", ")) {
                resp.set_header(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if let Some(age) = rule.max_age {
            resp.set_header(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
        }
        resp.append_header(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        ctx.set_request_handled();
        RequestNotificationStatus::FinishRequest
    }
}

/// `Access-Control-Allow-Origin` and `-Credentials`: the origin named, or
/// `*` for a `*` rule without credentials.
fn set_origin_headers(
    resp: &mut riis_pipeline::HttpResponse,
    rule: &OriginRule,
    origin: &HeaderValue,
) {
    let named = rule.allow_credentials || rule.origin != OriginPattern::Any;
    let value = if named {
        origin.clone()
    } else {
        HeaderValue::from_static("*")
    };
    resp.set_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if rule.allow_credentials {
        resp.set_header(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

impl HttpModule for Cors {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        if !config.enabled {
            return RequestNotificationStatus::Continue;
        }
        // Every answer here depends on the request's `Origin` (even a lone
        // `*` answers `null` otherwise than the rest), also one to a
        // request without it: a cache must not hand one origin's answer
        // to another.
        self.varies = true;
        let mut origins = ctx.request().headers().get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next().cloned() else {
            return RequestNotificationStatus::Continue;
        };
        let config = ctx.config_shared(self.config);
        // Two `Origin` headers, or a value no browser sends, match no rule.
        let lower = origin
            .to_str()
            .ok()
            .filter(|_| origins.next().is_none())
            .map(str::to_ascii_lowercase)
            .filter(|o| is_origin(o))
            .unwrap_or_default();
        let decided = Some(&lower)
            .filter(|o| !o.is_empty())
            .and_then(|o| rule_for(&config, o))
            .filter(|(_, rule)| rule.allowed);
        let Some((rule, _)) = decided else {
            // Denied or unlisted: no CORS headers (an application's
            // neither), which the browser takes as a refusal; a 403 only
            // with `fail_unlisted_origins`, as in IIS (a site's own POST
            // carries its `Origin` too).
            self.refused = true;
            if config.fail_unlisted_origins {
                let finished =
                    crate::end_with_error(ctx, StatusCode::FORBIDDEN, 0, crate::E_ACCESS_DENIED);
                ctx.response_mut()
                    .set_error_description("Cors: no rule allows this origin");
                return finished;
            }
            return RequestNotificationStatus::Continue;
        };
        let allowed = Allowed {
            config,
            rule,
            origin,
        };
        let request = ctx.request();
        if request.method() == Method::OPTIONS
            && request.header("access-control-request-method").is_some()
        {
            self.preflight = true;
            return self.preflight(ctx, &allowed);
        }
        self.allowed = Some(allowed);
        RequestNotificationStatus::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if !provider.headers_being_sent() {
            return RequestNotificationStatus::Continue;
        }
        // Where the module decides for an origin, the CORS headers are all
        // its own: an application's `-Allow-Credentials: true` beside the
        // module's `-Allow-Origin` would give an origin the rule gives none
        // the user's cookies, and an application's `-Allow-Origin` would
        // open the site to an origin the rules deny.
        if self.allowed.is_some() || self.refused {
            let resp = ctx.response_mut();
            for name in [
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                header::ACCESS_CONTROL_ALLOW_METHODS,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                header::ACCESS_CONTROL_MAX_AGE,
            ] {
                resp.delete_header(name);
            }
        }
        // Set whenever the module is enabled, which it is for any origin
        // it answers.
        if self.varies {
            crate::add_vary_token(ctx.response_mut().headers_mut(), "Origin");
        }
        // A refused preflight (403) too, whatever made its answer.
        if self.preflight {
            let headers = ctx.response_mut().headers_mut();
            crate::add_vary_token(headers, "Access-Control-Request-Method");
            crate::add_vary_token(headers, "Access-Control-Request-Headers");
        }
        if let Some(allowed) = &self.allowed {
            let rule = &allowed.config.origins[allowed.rule];
            let resp = ctx.response_mut();
            set_origin_headers(resp, rule, &allowed.origin);
            if let Some(expose) = &rule.expose {
                resp.set_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
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
    let config = registration.declare_section::<CorsConfig>("cors")?;
    registration.set_request_notifications(
        move || Cors {
            config,
            allowed: None,
            varies: false,
            preflight: false,
            refused: false,
        },
        RequestNotification::BeginRequest | RequestNotification::SendResponse,
        riis_pipeline::RequestNotifications::NONE,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origin: &str, allowed: bool) -> OriginRule {
        OriginRule {
            origin: OriginPattern::parse(origin).unwrap(),
            allowed,
            allow_credentials: false,
            max_age: None,
            allowed_methods: Vec::new(),
            allowed_headers: Vec::new(),
            allow_all_requested_headers: false,
            exposed_headers: Vec::new(),
            expose: None,
        }
    }

    #[test]
    fn origins_parse_as_browsers_send_them() {
        assert_eq!(OriginPattern::parse("*").unwrap(), OriginPattern::Any);
        assert_eq!(
            OriginPattern::parse("HTTPS://App.Example.com").unwrap(),
            OriginPattern::Exact("https://app.example.com".into())
        );
        assert_eq!(
            OriginPattern::parse("http://localhost:3000").unwrap(),
            OriginPattern::Exact("http://localhost:3000".into())
        );
        for bad in [
            "https://a.test/",
            "https://a.test/x",
            "a.test",
            "https://",
            "https://a.test:",
            "https://*.",
            "https://a.*.test",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_origins_browsers_send_are_matched() {
        for ok in [
            "null",
            "https://a.test",
            "http://localhost:3000",
            "https://[::1]:8443",
            "app://x",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "https://a b.test",
            "https://u@a.test",
            "https://a.test/x",
            "https://a..test",
            "a.test",
            "https://[zz]",
            "https://a.test:x",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let config = CorsConfig {
            enabled: true,
            fail_unlisted_origins: false,
            origins: vec![
                rule("*", true),
                rule("https://*", true),
                rule("https://*.example.com", true),
                rule("https://*.evil.example.com", false),
                rule("https://admin.example.com", false),
            ],
        };
        let decide = |o: &str| rule_for(&config, o).map(|(i, _)| i);
        assert_eq!(decide("http://other.test"), Some(0));
        assert_eq!(decide("https://other.test"), Some(1));
        assert_eq!(decide("https://shop.example.com"), Some(2));
        assert_eq!(decide("https://a.evil.example.com"), Some(3));
        assert_eq!(decide("https://admin.example.com"), Some(4));
        // The domain itself is not below it; a port it does not name is
        // another origin; `*` is not `null`.
        assert_eq!(decide("https://example.com"), Some(1));
        assert_eq!(decide("https://shop.example.com:8443"), Some(1));
        assert_eq!(decide("https://shopexample.com"), Some(1));
        assert_eq!(decide("null"), None);
    }
}
