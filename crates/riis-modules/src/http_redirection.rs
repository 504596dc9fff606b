//! `HttpRedirection`: redirects the requests of a location to another URL,
//! as IIS's `httpRedirect` section does.
//!
//! Registers for **MapRequestHandler** only: the redirect is decided once the
//! URL and its location are final (after PreBeginRequest rewrites and
//! authentication), before a handler is chosen, so it applies to every URL of
//! the location whether or not a file is there. A redirect answers with
//! `HttpResponse::redirect` and returns FinishRequest, which skips the handler
//! and goes straight to LogRequest. Child requests (a default document, for
//! instance) are never redirected: their parent already was, or was not.
//!
//! The location prefix is the path of the location that applies to the
//! request (`ctx.location().path()`, `/` for the site). Without
//! `exact_destination`, the part of the request path below that prefix is
//! appended to the destination (percent-encoded) and the query string is kept
//! (joined with `&` to a query the destination has). With `exact_destination`
//! the destination is used as is; the request's query string is added only
//! when the destination has none. With `child_only` (IIS's "only redirect
//! requests to content in this directory, not subdirectories"), only URLs
//! one segment below the location are redirected: not the location's own
//! URL, nor anything in its subfolders.
//!
//! The destination may hold IIS's redirect variables: `$S` (the path below
//! the location), `$V` (the request's path), `$Q` (`?` and the query
//! string, or nothing) and `$P` (the query string without `?`). A
//! destination that places the path (`$S`, `$V`, before its own `?`) or the
//! query (`$Q`, `$P`) itself does not get it appended as well, so
//! `https://new.example$S$Q` works with and without `exact_destination`.
//! Variables are upper case; `$P` outside the destination's query is
//! percent-encoded, so a query cannot add a user-info `@host`.
//!
//! A local destination (a path starting with `/`) that lies inside the
//! location would redirect its own requests again; requests already at or
//! below such a destination are left alone, so the rule cannot loop.
//!
//! Wildcard rules (IIS's `<add wildcard="*.asp" destination="/"/>`) send
//! only the URLs they match, each to its own destination; the first rule
//! (in configuration order) that matches the request's whole path wins,
//! and a URL no rule matches is served. A `*` stands for any text, `/`
//! included; letters match in any case, as a site's URLs do. In a rule's
//! destination `$0` to `$9` are what the first to tenth `*` stood for
//! (IIS 6's redirect variables, which IIS 7 kept), percent-encoded; right
//! after an absolute destination's host such a text starts the path, and
//! inside the host it is a configuration error (a client would choose the
//! host). IIS reads the rules only while `destination` is empty: riis
//! refuses a section with both instead of ignoring the rules in silence.
//!
//! The rules are matched against the request's path, as IIS "compares the
//! requested URL" with them, so rules a site writes mean the same in every
//! location. *Inferred* (IIS documents neither): the first matching rule
//! wins; and a redirect is followed through the site's own redirects
//! before it is made (at most 10): one that would come back to a URL on
//! the way, or go on for ever (`/p/*` to `/p/x-$0`), is not made, and the
//! URL is served, with a warning. A rule that sends a URL to itself is no
//! redirect.
//!
//! Configuration section `http_redirect`:
//! - `enabled` (default false);
//! - `destination`: an absolute URL (`https://example.com/new`) or a path
//!   (`/new`); empty (the default) redirects nothing but what `wildcards`
//!   match;
//! - `wildcards`: rules `{ wildcard = "*.asp", destination = "/" }`;
//! - `exact_destination` (default false);
//! - `child_only` (default false);
//! - `status`: 301, 302 (default), 307 or 308, or IIS's names `Permanent`,
//!   `Found`, `Temporary`, `PermRedirect`; anything else is a configuration
//!   error.

use std::fmt;
use std::fmt::Write as _;

use riis_pipeline::http::{HeaderValue, StatusCode};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A redirect status: one of 301, 302, 307 and 308.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectStatus(StatusCode);

impl RedirectStatus {
    /// The status code.
    pub fn code(self) -> StatusCode {
        self.0
    }

    fn from_u64(n: u64) -> Option<Self> {
        match n {
            301 => Some(Self(StatusCode::MOVED_PERMANENTLY)),
            302 => Some(Self(StatusCode::FOUND)),
            307 => Some(Self(StatusCode::TEMPORARY_REDIRECT)),
            308 => Some(Self(StatusCode::PERMANENT_REDIRECT)),
            _ => None,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        if let Ok(n) = s.parse::<u64>() {
            return Self::from_u64(n);
        }
        let n = match s.to_ascii_lowercase().as_str() {
            "permanent" => 301,
            "found" => 302,
            "temporary" => 307,
            "permredirect" => 308,
            _ => return None,
        };
        Self::from_u64(n)
    }
}

impl Default for RedirectStatus {
    fn default() -> Self {
        Self(StatusCode::FOUND)
    }
}

const STATUS_HELP: &str = "use 301, 302, 307 or 308 (or Permanent, Found, Temporary, PermRedirect)";

impl<'de> Deserialize<'de> for RedirectStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;

        impl Visitor<'_> for StatusVisitor {
            type Value = RedirectStatus;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a redirect status: {STATUS_HELP}")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RedirectStatus, E> {
                RedirectStatus::from_u64(n).ok_or_else(|| {
                    E::custom(format!("`{n}` is not a redirect status; {STATUS_HELP}"))
                })
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RedirectStatus, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "`{n}` is not a redirect status; {STATUS_HELP}"
                    ))),
                }
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RedirectStatus, E> {
                RedirectStatus::from_name(s).ok_or_else(|| {
                    E::custom(format!("`{s}` is not a redirect status; {STATUS_HELP}"))
                })
            }
        }

        deserializer.deserialize_any(StatusVisitor)
    }
}

/// A destination that can go in a `Location` header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Destination(String);

impl TryFrom<String> for Destination {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if HeaderValue::try_from(s.as_str()).is_err() || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{}` is not a usable destination (control characters or spaces)",
                s.escape_debug()
            ));
        }
        if !s.is_empty() && !s.starts_with('/') && !has_scheme(&s) {
            return Err(format!(
                "`{s}` is not an absolute URL (`https://host/path`) or a path starting with `/`"
            ));
        }
        if let Some((_, after)) = s.split_once("://") {
            // The host must be written out: one made of variables alone
            // (`https://$0`, `https://$S`) would be the client's to choose
            // (`https:///evil.example/`, which browsers read as that host).
            let mut host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            while let [.., b'$', v] = host.as_bytes() {
                if !(v.is_ascii_digit() || matches!(v, b'S' | b'V' | b'Q' | b'P')) {
                    break;
                }
                host = &host[..host.len() - 2];
            }
            if host.is_empty() {
                return Err(format!(
                    "`{s}` names no host before its variables: write the host out \
                     (`https://new.example$S`)"
                ));
            }
            // Inside the host, port or user-info a variable would write
            // them (`https://$S:443/` gives `https:///evil.example:443/`).
            if uses_variable(host, b"SVQP") {
                return Err(format!(
                    "`{s}` places a variable in its host: a client would choose the host; \
                     place `$S`, `$V`, `$Q` and `$P` after it"
                ));
            }
        }
        if s.starts_with("//") || s.starts_with("/\\") {
            // Browsers read it as another host; taken as a path, it would
            // send every client to a URL of this site that does not exist.
            return Err(format!(
                "`{s}` is a URL of another host without its scheme: write it out \
                 (`https:{}`)",
                s.replace('\\', "/")
            ));
        }
        Ok(Self(crate::encode_non_ascii(&s).into_owned()))
    }
}

/// The most `*` a wildcard may hold: `$0` to `$9` name what each stood for.
const MAX_WILDCARD_STARS: usize = 10;

/// A wildcard pattern: text with `*` standing for any text, matched
/// against the path below a location.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Wildcard {
    pattern: String,
    stars: usize,
}

impl TryFrom<String> for Wildcard {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, String> {
        if !pattern.starts_with(['/', '*']) {
            return Err(format!(
                "`{}` is not a wildcard of a path: start it with `/` or `*` \
                 (it is matched against the path below the location, `/a.asp`)",
                pattern.escape_debug()
            ));
        }
        if pattern.contains(['?', '#']) || pattern.chars().any(char::is_control) {
            return Err(format!(
                "`{}` cannot match a path: it holds `?`, `#` or a control character \
                 (the query string is not part of what a wildcard is matched against)",
                pattern.escape_debug()
            ));
        }
        let stars = pattern.bytes().filter(|&b| b == b'*').count();
        if stars > MAX_WILDCARD_STARS {
            return Err(format!(
                "`{pattern}` has {stars} `*`; at most {MAX_WILDCARD_STARS} \
                 (`$0` to `$9` name what they stand for)"
            ));
        }
        Ok(Self { pattern, stars })
    }
}

impl Wildcard {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// What each `*` stood for when the pattern matches all of `subject`
    /// (ASCII letters in any case); `None` when it does not.
    ///
    /// The last `*` met takes one more byte at each mismatch, the earlier
    /// ones keep the least they could: a glob with `*` alone needs no
    /// deeper backtracking to find a match when there is one, so this is
    /// at most `pattern × subject` steps, never exponential.
    fn captures<'s>(&self, subject: &'s str) -> Option<Captures<'s>> {
        let (p, s) = (self.pattern.as_bytes(), subject.as_bytes());
        let mut spans = [(0, 0); MAX_WILDCARD_STARS];
        let (mut pi, mut si, mut star) = (0, 0, 0);
        // The last `*` met: its position in the pattern and its number.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if p.get(pi) == Some(&b'*') {
                spans[star] = (si, si);
                resume = Some((pi, star));
                pi += 1;
                star += 1;
            } else if pi == p.len() && si == s.len() {
                return Some(Captures {
                    subject,
                    spans,
                    count: self.stars,
                });
            } else if pi < p.len() && si < s.len() && p[pi].eq_ignore_ascii_case(&s[si]) {
                pi += 1;
                si += 1;
            } else {
                let (star_pi, k) = resume?;
                if spans[k].1 == s.len() {
                    return None;
                }
                spans[k].1 += 1;
                si = spans[k].1;
                pi = star_pi + 1;
                star = k + 1;
            }
        }
    }
}

/// What the `*`s of a matched wildcard stood for.
struct Captures<'s> {
    subject: &'s str,
    spans: [(usize, usize); MAX_WILDCARD_STARS],
    count: usize,
}

impl Captures<'_> {
    /// The text the `n`th `*` (from 0) stood for.
    fn get(&self, n: usize) -> Option<&str> {
        let &(from, to) = self.spans[..self.count].get(n)?;
        // A literal byte of the pattern matched at `to`, or it is the end:
        // both are character boundaries (see `Wildcard::captures`).
        self.subject.get(from..to)
    }
}

/// One wildcard rule: IIS's `<add wildcard="…" destination="…"/>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "WildcardRuleFields")]
pub struct WildcardRule {
    /// What the path below the location must match.
    pub wildcard: Wildcard,
    /// Where a matching request goes; may use `$0` to `$9`.
    pub destination: Destination,
}

/// A `wildcards` entry as written, before its destination is checked
/// against its wildcard.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WildcardRuleFields {
    wildcard: Wildcard,
    destination: Destination,
}

impl TryFrom<WildcardRuleFields> for WildcardRule {
    type Error = String;

    fn try_from(fields: WildcardRuleFields) -> Result<Self, String> {
        let WildcardRuleFields {
            wildcard,
            destination,
        } = fields;
        if destination.0.is_empty() {
            return Err(format!(
                "the wildcard rule `{}` has an empty destination",
                wildcard.as_str()
            ));
        }
        let named = destination
            .0
            .as_bytes()
            .windows(2)
            .filter(|w| w[0] == b'$' && w[1].is_ascii_digit())
            .map(|w| usize::from(w[1] - b'0'))
            .find(|&n| n >= wildcard.stars);
        // A `*`'s text inside the host would let the client choose it
        // (`https://$0.example.com/` with `evil.com/`); at the host's end
        // it starts the path (see `Carried::push_capture`).
        if let Some((_, after)) = destination.0.split_once("://") {
            let mut host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            while let [.., b'$', d] = host.as_bytes() {
                if !d.is_ascii_digit() {
                    break;
                }
                host = &host[..host.len() - 2];
            }
            if uses_variable(host, b"0123456789") {
                return Err(format!(
                    "destination `{}` places what a `*` stood for in its host, which would let \
                     a client choose the host; place it in the path",
                    destination.0
                ));
            }
        }
        if let Some(n) = named {
            return Err(format!(
                "destination `{}` uses `${n}`, but the wildcard `{}` has {} `*` \
                 (`$0` is what the first stood for)",
                destination.0,
                wildcard.as_str(),
                wildcard.stars
            ));
        }
        Ok(Self {
            wildcard,
            destination,
        })
    }
}

/// The `http_redirect` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "HttpRedirectFields")]
pub struct HttpRedirectConfig {
    /// Whether requests of the location are redirected.
    pub enabled: bool,
    /// Where to: an absolute URL or a path.
    pub destination: Destination,
    /// Rules for some URLs of the location, each with its destination;
    /// read only when `destination` is empty.
    pub wildcards: Vec<WildcardRule>,
    /// Use the destination as is, without the request's path.
    pub exact_destination: bool,
    /// Redirect only the URLs directly in the location (one segment below
    /// it), not the location itself nor its subfolders.
    pub child_only: bool,
    /// 301, 302, 307 or 308.
    pub status: RedirectStatus,
}

/// The section as written, before `destination` and `wildcards` are
/// checked against each other.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HttpRedirectFields {
    enabled: bool,
    destination: Destination,
    wildcards: Vec<WildcardRule>,
    exact_destination: bool,
    child_only: bool,
    status: RedirectStatus,
}

impl TryFrom<HttpRedirectFields> for HttpRedirectConfig {
    type Error = String;

    fn try_from(f: HttpRedirectFields) -> Result<Self, String> {
        if !f.destination.0.is_empty() && !f.wildcards.is_empty() {
            // IIS sends everything to the destination and never reads the
            // rules; a rule that silently does nothing is worse than an
            // error. An inherited destination counts too.
            return Err(format!(
                "`wildcards` with a `destination` (`{}`): the destination takes every \
                 request and the rules are never read; set `destination = \"\"` \
                 where the rules apply",
                f.destination.0
            ));
        }
        Ok(Self {
            enabled: f.enabled,
            destination: f.destination,
            wildcards: f.wildcards,
            exact_destination: f.exact_destination,
            child_only: f.child_only,
            status: f.status,
        })
    }
}

/// The module instance.
pub struct HttpRedirection {
    config: Section<HttpRedirectConfig>,
}

/// Whether `url` is `prefix` or below it, at a segment boundary.
fn covers(prefix: &str, url: &str) -> bool {
    riis_pipeline::path_below(prefix, url).is_some()
}

/// Percent-encodes a decoded path for a URL: everything but unreserved
/// characters, sub-delimiters, `:`, `@` and `/` (RFC 3986 `pchar` and `/`).
fn encode_path(path: &str, out: &mut String) {
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            )
        {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The parts of the request a redirect can carry to its destination.
struct Carried<'a> {
    /// The path below the location: decoded (escaped when written out) or,
    /// when `rest_is_raw`, the request's own escaped text (kept, so `%3B`
    /// stays `%3B`).
    rest: &'a str,
    rest_is_raw: bool,
    /// The request's path as sent (`$V`).
    path: &'a str,
    /// The query string as sent, without `?`.
    query: &'a str,
    /// A wildcard rule's `*`s: `$0` to `$9` (for the section's own
    /// destination, where `$5` is text, `None`).
    captures: Option<Captures<'a>>,
}

/// What a wildcard's `*` stood for, in a destination's query: all but
/// unreserved characters and `/` escaped, so it adds no parameter.
const CAPTURE_IN_QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

impl Carried<'_> {
    fn push_rest(&self, rest: &str, out: &mut String) {
        if self.rest_is_raw {
            out.push_str(rest);
        } else {
            encode_path(rest, out);
        }
    }

    /// The variables that place the path in a destination: `$S` and `$V`,
    /// and a wildcard rule's `$0` to `$9`.
    fn path_variables(&self) -> &'static [u8] {
        if self.captures.is_some() {
            b"SV0123456789"
        } else {
            b"SV"
        }
    }

    /// Writes what the `n`th `*` stood for; whether there is such a
    /// variable (a section's own destination has none).
    fn push_capture(&self, n: usize, part: Part, out: &mut String) -> bool {
        let Some(text) = self.captures.as_ref().and_then(|c| c.get(n)) else {
            return false;
        };
        match part {
            Part::Path => {
                // Right after the host (`https://new.example$0`), what a
                // `*` stood for starts the path: it never adds to the host
                // (`.evil.example`, `@evil.example`).
                if in_authority(out) && !text.starts_with('/') {
                    out.push('/');
                }
                // Decoded text: a `;` it holds was `%3B`, or a parameter
                // the rule's destination does not place; escaped either way.
                let from = out.len();
                encode_path(text, out);
                if out[from..].contains(';') {
                    let escaped = out[from..].replace(';', "%3B");
                    out.truncate(from);
                    out.push_str(&escaped);
                }
            }
            Part::Query => out.extend(percent_encoding::utf8_percent_encode(
                text,
                CAPTURE_IN_QUERY,
            )),
        }
        true
    }
}

/// Whether `out`, an absolute URL being written, has not reached its path:
/// what comes next would be part of the host.
fn in_authority(out: &str) -> bool {
    out.find("://")
        .is_some_and(|at| !out[at + 3..].contains(['/', '?', '#']))
}

/// Whether `text` starts with a URL scheme and `://` (`https://`).
fn has_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

/// Whether `text` holds one of the redirect variables named by `letters`
/// (`$S`, `$V`, `$Q`, `$P`; either case).
fn uses_variable(text: &str, letters: &[u8]) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'$' && letters.contains(&w[1]))
}

/// The part of a destination before its query and fragment: where `$S` or
/// `$V` places the request's path.
fn path_part(destination: &str) -> &str {
    destination.split(['?', '#']).next().unwrap_or("")
}

/// Where in the destination a variable is replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Scheme, host and path: the query string without its `?` (`$P`) is
    /// escaped there, so it can add neither a user-info `@host` nor a path
    /// a browser reads as another host (`/\evil.example`).
    Path,
    /// The destination's own query: the request's goes in as sent.
    Query,
}

/// `text` with its redirect variables (upper case, as IIS writes them)
/// replaced; any other `$` is kept.
fn substitute(text: &str, part: Part, carried: &Carried<'_>, out: &mut String) {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.as_bytes().first() {
            Some(b'S') => carried.push_rest(carried.rest, out),
            Some(b'V') => out.push_str(carried.path),
            // `?` first: the query starts here, whatever it holds.
            Some(b'Q') if !carried.query.is_empty() => {
                out.push('?');
                out.push_str(carried.query);
            }
            Some(b'Q') => {}
            Some(b'P') if part == Part::Path => {
                // Right after the host it starts the path: a browser
                // decodes escapes in a host (`%2Eevil%2Ecom`: review O).
                if in_authority(out) && !carried.query.is_empty() {
                    out.push('/');
                }
                out.extend(percent_encoding::utf8_percent_encode(
                    carried.query,
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
            Some(b'P') => out.push_str(carried.query),
            Some(&d @ b'0'..=b'9') if carried.push_capture(usize::from(d - b'0'), part, out) => {}
            _ => {
                out.push('$');
                rest = after;
                continue;
            }
        }
        rest = &after[1..];
    }
    out.push_str(rest);
}

/// The redirect target for a request (see the module's documentation). A
/// `#fragment` of the destination stays at the end.
fn target(destination: &str, exact: bool, carried: &Carried<'_>) -> String {
    let (destination, fragment) = match destination.split_once('#') {
        Some((d, f)) => (d, Some(f)),
        None => (destination, None),
    };
    let (dest_path, dest_query) = match destination.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (destination, None),
    };
    let places_path = exact || uses_variable(path_part(destination), carried.path_variables());
    let places_query = uses_variable(destination, b"QP");
    let mut out = String::with_capacity(
        destination.len() + carried.rest.len() + carried.path.len() + carried.query.len() + 2,
    );
    substitute(dest_path, Part::Path, carried, &mut out);
    if !places_path {
        // Every leading slash goes: `/` + `//evil.example` would be a
        // protocol-relative URL to another host.
        let rest = if out.ends_with('/') {
            carried.rest.trim_start_matches('/')
        } else {
            carried.rest
        };
        carried.push_rest(rest, &mut out);
    }
    let mut query = String::new();
    if let Some(q) = dest_query {
        substitute(q, Part::Query, carried, &mut query);
    }
    // An exact destination keeps its own query, or else takes the
    // request's; a path-carrying one joins the two.
    let add_request_query =
        !places_query && !carried.query.is_empty() && (!exact || dest_query.is_none());
    if add_request_query {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(carried.query);
    }
    if !query.is_empty() {
        if !query.starts_with('?') {
            out.push('?');
        }
        out.push_str(&query);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    // A local destination never becomes protocol-relative (`//host`, or
    // `/\host`, which browsers read the same), whatever a variable put at
    // its start.
    if destination.starts_with('/') && (out.starts_with("//") || out.starts_with("/\\")) {
        let path = out.trim_start_matches(['/', '\\']);
        out = format!("/{path}");
    }
    out
}

/// What follows `prefix` (a decoded, normalized location path) in the raw
/// request path: its segments are skipped as the request's URL was made,
/// decoded and with empty and `.` segments dropped, so `/my%20docs/a` and
/// `//old/a` give `/a` for `/my docs` and `/old` (and `/OLD/a` for `/old`).
fn raw_suffix<'a>(raw: &'a str, prefix: &str) -> Option<&'a str> {
    let mut at = 0;
    for wanted in prefix.split('/').filter(|s| !s.is_empty()) {
        loop {
            let rest = &raw[at..];
            let rest_trimmed = rest.trim_start_matches('/');
            let start = at + (rest.len() - rest_trimmed.len());
            let end = rest_trimmed.find('/').map_or(raw.len(), |i| start + i);
            let segment = &raw[start..end];
            at = end;
            if segment.is_empty() {
                return None;
            }
            if segment == "." {
                continue;
            }
            // Compared as locations are (in any case: see `path_below`).
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            if riis_pipeline::path_below(wanted, &decoded) != Some("") {
                return None;
            }
            break;
        }
    }
    Some(&raw[at..])
}

impl HttpModule for HttpRedirection {
    fn on_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.child_depth() > 0 {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let asked = Asked {
            url: ctx.request().url(),
            raw_path: ctx.request().uri().path(),
            query: ctx.request().query_string(),
        };
        let Some(location) = redirect_target(config, ctx.location().path(), &asked) else {
            return RequestNotificationStatus::Continue;
        };
        if let Some(hops) = leads_back(ctx, self.config, &location) {
            static LOOP_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = LOOP_LOG.pass() {
                tracing::warn!(
                    url = %crate::log_excerpt(asked.url),
                    location = %crate::log_excerpt(&location),
                    hops,
                    held_back,
                    "http_redirect: the redirects lead back here; not redirected"
                );
            }
            return RequestNotificationStatus::Continue;
        }
        // A raw request line may carry UTF-8 into the path or query.
        let location = crate::encode_non_ascii(&location);
        let status = config.status.code();
        if let Err(e) = ctx.response_mut().redirect(&location, status) {
            tracing::error!(error = %e, location = %location, "http_redirect: invalid redirect target");
            ctx.response_mut().set_error_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                0,
                ModuleError::E_INVALIDARG,
            );
        }
        RequestNotificationStatus::FinishRequest
    }
}

/// What HttpRedirection reads of a request, or of a URL a redirect leads
/// to.
struct Asked<'a> {
    /// The path, decoded and normalized (the request's URL).
    url: &'a str,
    /// The path as sent, escaped.
    raw_path: &'a str,
    /// The query string, without `?`.
    query: &'a str,
}

/// `path` (escaped) as a request's URL is: decoded and normalized, so that
/// `/a%20b` is the request `/a b` and `/app//v2` the request `/app/v2`.
fn as_url(path: &str) -> String {
    riis_pipeline::prepare_url_path(path)
        .unwrap_or_else(|_| percent_encoding::percent_decode_str(path).decode_utf8_lossy())
        .into_owned()
}

/// Where `asked` is redirected by `config`, the section of its location
/// at `prefix`; `None` when it is served.
fn redirect_target(config: &HttpRedirectConfig, prefix: &str, asked: &Asked<'_>) -> Option<String> {
    if !config.enabled || (config.destination.0.is_empty() && config.wildcards.is_empty()) {
        return None;
    }
    let prefix = prefix.trim_end_matches('/');
    let url = asked.url;
    // The location covers the URL, so the prefix is there (in any case:
    // locations ignore ASCII case).
    let rest = riis_pipeline::path_below(prefix, url).unwrap_or(url);
    // `child_only`: content directly in the location only (`/old/a`), not
    // the location itself nor its subfolders.
    let directly_in = rest
        .strip_prefix('/')
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if config.child_only && !directly_in {
        return None;
    }
    // The section's destination, or the first wildcard rule that matches
    // the URL (IIS compares the requested URL with the rules, so a rule
    // means the same in every location that inherits it).
    let (destination, captures) = if config.destination.0.is_empty() {
        let (rule, captures) = config
            .wildcards
            .iter()
            .find_map(|rule| Some((rule, rule.wildcard.captures(url)?)))?;
        (rule.destination.0.as_str(), Some(captures))
    } else {
        (config.destination.0.as_str(), None)
    };
    let by_rule = captures.is_some();
    // The request's own escaping of the carried path, when it is the same
    // path (`%3B` must not become a `;` path parameter).
    let raw_rest = raw_suffix(asked.raw_path, prefix)
        .filter(|r| percent_encoding::percent_decode_str(r).decode_utf8_lossy() == rest);
    let carried = Carried {
        rest: raw_rest.unwrap_or(rest),
        rest_is_raw: raw_rest.is_some(),
        path: asked.raw_path,
        query: asked.query,
        captures,
    };
    let location = target(destination, config.exact_destination, &carried);
    if !location.starts_with('/') {
        return Some(location);
    }
    // A URL sent to itself is served.
    if as_url(path_part(&location)) == url {
        return None;
    }
    if !by_rule {
        // The section's destination takes every URL of the location: one
        // inside the location would take its own URLs on and on.
        // Appending the path, any URL below the destination would be sent
        // further below; to an exact destination, only the destination
        // itself would be sent to itself. (A rule takes the URLs it
        // matches only: where they lead is followed instead; see
        // `leads_back`.)
        let dest_path = as_url(path_part(destination).split('$').next().unwrap_or(""));
        let places_path = uses_variable(path_part(destination), carried.path_variables());
        let dest_in_location = prefix.is_empty() || covers(prefix, &dest_path);
        let already_there = if config.exact_destination && !places_path {
            url.trim_end_matches('/') == dest_path.trim_end_matches('/')
        } else {
            covers(&dest_path, url)
        };
        if dest_in_location && already_there {
            return None;
        }
    }
    Some(location)
}

/// The most redirects of this site a redirect is followed through.
const MAX_HOPS: usize = 10;

/// The longest URL a redirect is followed to: longer than any client may
/// ask for under the default `limits.max_url_length`. A rule that repeats
/// what a `*` stood for (`/q/$0$0`) doubles the URL at each step: past
/// this it goes on for ever as far as a client can tell (review Q: 11
/// steps of `$0$0$0$0` took seconds and hundreds of MB).
const MAX_FOLLOWED_URL: usize = 8192;

/// Whether following `location` through the site's own redirects comes
/// back to a URL on the way (`/a/x` to `/b/x` and back), or goes on past
/// [`MAX_HOPS`] (a rule whose destination matches it again, growing):
/// `Some(redirects followed)`. A browser would follow such redirects until
/// it gives up; riis serves the URL instead, as the section's guard serves
/// a URL already at its destination.
fn leads_back(
    ctx: &HttpContext,
    section: Section<HttpRedirectConfig>,
    location: &str,
) -> Option<usize> {
    let mut seen = vec![ctx.request().url().to_owned()];
    let mut next = location.to_owned();
    while seen.len() <= MAX_HOPS {
        // Another host's URL (absolute): not this site's to follow.
        if !next.starts_with('/') {
            return None;
        }
        let before_fragment = next.split('#').next().unwrap_or("");
        let (raw_path, query) = before_fragment
            .split_once('?')
            .unwrap_or((before_fragment, ""));
        if next.len() > MAX_FOLLOWED_URL {
            return Some(seen.len());
        }
        let url = as_url(raw_path);
        if seen.contains(&url) {
            return Some(seen.len());
        }
        let asked = Asked {
            url: &url,
            raw_path,
            query,
        };
        let config = ctx.config_for_url(section, &url);
        let after = redirect_target(config, ctx.location_path_for_url(&url), &asked)?;
        seen.push(url);
        next = after;
    }
    Some(seen.len())
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<HttpRedirectConfig>("http_redirect")?;
    registration.set_request_notifications(
        move || HttpRedirection { config },
        RequestNotification::MapRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried<'a>(rest: &'a str, rest_is_raw: bool, query: &'a str) -> Carried<'a> {
        Carried {
            rest,
            rest_is_raw,
            path: "/old/a/b",
            query,
            captures: None,
        }
    }

    fn wildcard(pattern: &str) -> Wildcard {
        Wildcard::try_from(pattern.to_owned()).unwrap()
    }

    fn captured(pattern: &str, subject: &str) -> Option<Vec<String>> {
        let c = wildcard(pattern).captures(subject)?;
        Some((0..c.count).map(|n| c.get(n).unwrap().to_owned()).collect())
    }

    #[test]
    fn wildcards_match_whole_paths_and_capture_each_star() {
        assert_eq!(
            captured("*.asp", "/shop/cart.asp"),
            Some(vec!["/shop/cart".into()])
        );
        assert_eq!(
            captured("*.asp", "/shop/cart.ASP"),
            Some(vec!["/shop/cart".into()])
        );
        assert_eq!(captured("*.asp", "/shop/cart.aspx"), None);
        assert_eq!(captured("/old.html", "/old.html"), Some(vec![]));
        assert_eq!(captured("/old.html", "/old.html/x"), None);
        assert_eq!(
            captured("/*/*.asp", "/a/b/c.asp"),
            Some(vec!["a".into(), "b/c".into()])
        );
        assert_eq!(captured("*", "/"), Some(vec!["/".into()]));
        assert_eq!(captured("/a*", "/a"), Some(vec!["".into()]));
        // Backtracking past a false start of the literal.
        assert_eq!(captured("*.a.b", "/x.a.a.b"), Some(vec!["/x.a".into()]));
        // Characters outside ASCII are whole in what a `*` stood for.
        assert_eq!(captured("/*é.txt", "/ééé.txt"), Some(vec!["éé".into()]));
        // Many stars against a long subject that does not match end in
        // time (no exponential backtracking).
        let long = format!("/{}", "a".repeat(4000));
        assert_eq!(captured("*a*a*a*a*a*a*a*a*a*b", &long), None);
    }

    #[test]
    fn wildcards_and_rules_are_checked_when_loaded() {
        for bad in [
            "a.asp",
            "*.asp?x=1",
            "/a#b",
            "/a\nb",
            "/*/*/*/*/*/*/*/*/*/*/*",
        ] {
            assert!(Wildcard::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        let rule = |w: &str, d: &str| {
            WildcardRule::try_from(WildcardRuleFields {
                wildcard: wildcard(w),
                destination: Destination::try_from(d.to_owned()).unwrap(),
            })
        };
        assert!(rule("*.asp", "/$0.aspx").is_ok());
        assert!(rule("/*/*", "/$1/$0").is_ok());
        let err = rule("*.asp", "/$1.aspx").unwrap_err();
        assert!(err.contains("`$1`"), "{err}");
        assert!(rule("*.asp", "").is_err());
        // What a `*` stood for may not write a host.
        assert!(rule("/sub/*", "https://$0.example.com/").is_err());
        assert!(rule("/sub/*/*", "https://a$0b/$1").is_err());
        assert!(rule("/old*", "https://new.example$0").is_ok());
        assert!(rule("/old*", "https://new.example$0/x").is_ok());
        // An absolute destination starts with its scheme.
        for bad in ["$0?u=https://x", "x:https://y"] {
            assert!(Destination::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(Destination::try_from("svn+ssh://h/x".to_owned()).is_ok());
        // A host of variables alone is the client's to choose.
        for bad in [
            "https://$0",
            "https://$0/x",
            "https://$S",
            "http://$V$Q",
            "https://$S:443/",
            "https://$S.example.com/",
            "https://$V@new.example/",
        ] {
            assert!(Destination::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_destinations_place_what_the_stars_stood_for() {
        let t = |pattern: &str, dest: &str, exact: bool, subject: &str, query: &str| {
            let w = wildcard(pattern);
            let carried = Carried {
                rest: subject,
                rest_is_raw: false,
                path: subject,
                query,
                captures: w.captures(subject),
            };
            assert!(carried.captures.is_some(), "{pattern} {subject}");
            target(dest, exact, &carried)
        };
        // `$0` places the path: nothing is appended, the query is kept.
        assert_eq!(
            t("*.asp", "/new$0.aspx", false, "/a/b.asp", "x=1"),
            "/new/a/b.aspx?x=1"
        );
        // Without a variable the path below the location is appended, as
        // with the section's destination; exact drops it.
        assert_eq!(t("*.asp", "/home", false, "/a.asp", ""), "/home/a.asp");
        assert_eq!(t("*.asp", "/home", true, "/a.asp", "x=1"), "/home?x=1");
        // Escaped in the path (`;` too, so no path parameter appears) and
        // in the destination's query (no parameter added).
        assert_eq!(t("/*.asp", "/n/$0", true, "/a b;c.asp", ""), "/n/a%20b%3Bc");
        assert_eq!(
            t("/*.asp", "/n?page=$0", true, "/a&b=c.asp", ""),
            "/n?page=a%26b%3Dc"
        );
        // `$5` of a rule with fewer stars cannot be loaded; in a section's
        // own destination digits stay text (see `redirect_variables`).
        assert_eq!(t("/*/*", "/$1/$0", true, "/x/y", ""), "/y/x");
        // Right after the host, a `*`'s text starts the path.
        assert_eq!(
            t("/old*", "https://new.example$0", true, "/old.evil.com", ""),
            "https://new.example/.evil.com"
        );
        assert_eq!(
            t("/old*", "https://new.example$0", true, "/old@evil.com", ""),
            "https://new.example/@evil.com"
        );
        assert_eq!(
            t("*", "https://new.example$0", true, "/a/b", ""),
            "https://new.example/a/b"
        );
    }

    #[test]
    fn targets() {
        let t = |dest: &str, exact: bool, rest: &str, raw: bool, query: &str| {
            target(dest, exact, &carried(rest, raw, query))
        };
        assert_eq!(t("/new", false, "/a/b", false, "x=1"), "/new/a/b?x=1");
        assert_eq!(t("/new/", false, "/a", false, ""), "/new/a");
        // Never a protocol-relative URL to another host.
        assert_eq!(t("/", false, "//evil.example", false, ""), "/evil.example");
        assert_eq!(
            t("https://h/n?k=v", false, "/a b", false, "x=1"),
            "https://h/n/a%20b?k=v&x=1"
        );
        assert_eq!(t("/n", false, "", false, ""), "/n");
        assert_eq!(t("/n", true, "/a", false, "x=1"), "/n?x=1");
        assert_eq!(t("/n?k=v", true, "/a", false, "x=1"), "/n?k=v");
        // A fragment stays at the end.
        assert_eq!(
            t("https://h/doc#top", false, "/a", false, "x=1"),
            "https://h/doc/a?x=1#top"
        );
        assert_eq!(t("/doc#top", true, "/a", false, "x=1"), "/doc?x=1#top");
        // The request's own escaping is kept when given raw.
        assert_eq!(t("/new", false, "/a%3Bb", true, ""), "/new/a%3Bb");
        assert_eq!(raw_suffix("/old/a%3Bb", "/old"), Some("/a%3Bb"));
        assert_eq!(raw_suffix("/my%20docs/a%3Bb", "/my docs"), Some("/a%3Bb"));
        assert_eq!(raw_suffix("//old/./a", "/old"), Some("/./a"));
        assert_eq!(raw_suffix("/old", "/old"), Some(""));
        assert_eq!(raw_suffix("/OLD/a%3Bb", "/old"), Some("/a%3Bb"));
        assert_eq!(raw_suffix("/%4FLD/a%2Fb", "/old"), Some("/a%2Fb"));
        assert_eq!(raw_suffix("/other/a", "/old"), None);
        assert_eq!(raw_suffix("/anything", ""), Some("/anything"));
    }

    #[test]
    fn redirect_variables() {
        let t = |dest: &str, exact: bool, rest: &str, query: &str| {
            target(dest, exact, &carried(rest, false, query))
        };
        // IIS's recipe, with and without exact_destination: nothing twice.
        for exact in [true, false] {
            assert_eq!(
                t("https://n$S$Q", exact, "/a b", "q=1"),
                "https://n/a%20b?q=1"
            );
            assert_eq!(t("https://n$S$Q", exact, "/a", ""), "https://n/a");
        }
        assert_eq!(t("https://n$V", true, "/b", "q=1"), "https://n/old/a/b?q=1");
        assert_eq!(t("/new?from=$P", true, "/a", "q=1"), "/new?from=q=1");
        // Upper case only, as documented: `$p` is text.
        assert_eq!(t("/x/$pricing", true, "/a", "q=1"), "/x/$pricing?q=1");
        // `$P` outside the query is escaped: no user-info host, no `/\`.
        assert_eq!(
            t("https://n.example$P", true, "/a", "@evil.example"),
            "https://n.example/%40evil%2Eexample"
        );
        // Browsers decode escapes in a host: `$P` right after it starts the
        // path.
        assert_eq!(
            t("https://n.example$P", true, "/a", ".evil.com"),
            "https://n.example/%2Eevil%2Ecom"
        );
        assert_eq!(
            t("/$P", true, "/a", "/\\evil.example"),
            "/%2F%5Cevil%2Eexample"
        );
        // `$S`/`$V` in the destination's query do not make it path-placing.
        assert_eq!(t("/shop/?from=$V", true, "/a", ""), "/shop/?from=/old/a/b");
        // Other dollars are kept; a variable cannot make a local
        // destination protocol-relative.
        assert_eq!(t("/pay$5$S", true, "/a", ""), "/pay$5/a");
        assert_eq!(t("/$S", true, "//evil.example", ""), "/evil.example");
        assert!(uses_variable("x$Q", b"QP"));
        assert!(!uses_variable("x$q", b"QP"));
        assert!(!uses_variable("x$", b"QP"));
    }

    #[test]
    fn statuses() {
        assert_eq!(RedirectStatus::from_u64(308).unwrap().code().as_u16(), 308);
        assert_eq!(
            RedirectStatus::from_name("Permanent")
                .unwrap()
                .code()
                .as_u16(),
            301
        );
        assert!(RedirectStatus::from_u64(303).is_none());
        assert!(RedirectStatus::from_name("See Other").is_none());
    }
}
