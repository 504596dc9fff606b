//! `RequestFiltering`: IIS's request filtering, refusing requests by their
//! shape before anything else looks at them.
//!
//! Registers for:
//! - **BeginRequest** at FIRST priority, so it runs before every other module:
//!   each rule below is checked in turn and the first one that trips sets the
//!   error status, logs the rule, the URL and the offending value, and returns
//!   FinishRequest;
//! - **PostBeginRequest**: when a BeginRequest module that ran after it
//!   rewrote the URL (`set_url`), the new URL is checked too, in its own
//!   location, so a rewrite cannot lead a request past the rules;
//! - **PostMapRequestHandler**: when the handler took a leading part of
//!   the URL as its script (`allow_path_info`), that script's extension
//!   meets `file_extensions` too (`/uploads/shell.cgi/x` is refused as
//!   `/uploads/shell.cgi` is);
//! - **ReadEntity** at FIRST priority: a body without `Content-Length`
//!   (chunked) is counted as modules read it; once the running total passes
//!   `max_allowed_content_length` the request gets 413 and the module
//!   returns FinishRequest: the reader is not resumed (it never takes part
//!   of a body for the whole of it), the request goes on to LogRequest, and
//!   the connection closes after the response;
//! - **EndRequest** at FIRST priority: keeps that 413 on the response, should
//!   a module have set another status since; the 413 goes back, and its
//!   body goes, before CustomError (EndRequest, MEDIUM) chooses a page for
//!   it. When the headers already went out, the connection was reset
//!   instead.
//! - **SendResponse** (MEDIUM, so inverted it runs before CustomError at
//!   HIGH): the same for a flush before EndRequest that sends the headers;
//!   and, when the headers go, an `Allow` header (a 405's, an OPTIONS
//!   answer's, whichever module wrote it) loses the methods `verbs` refuses
//!   here, so it never offers one that would get 404.6.
//!
//! Rules, in the order they are checked (IIS substatus in brackets):
//!
//! | rule | status |
//! |---|---|
//! | `internal` | 404 |
//! | `verbs` / `allow_unlisted_verbs` | 404.6 |
//! | `max_allowed_content_length` (`Content-Length`) | 413 |
//! | `max_url` (decoded path, bytes) | 404.14 |
//! | `max_query_string` (raw query, bytes) | 404.15 |
//! | `max_header_size` (name + value, bytes) | 431 |
//! | `header_limits` (value bytes of one named header) | 404.10 |
//! | `allow_double_escaping = false` | 404.11 |
//! | `allow_high_bit_characters = false` | 404.12 |
//! | `denied_url_sequences` | 404.5 |
//! | `denied_query_string_sequences` | 404.18 |
//! | `hidden_segments` | 404.8 |
//! | `file_extensions` | 404.7 |
//!
//! A denied method is refused in any case (`delete` for DELETE); an allowed
//! one must match exactly. Entries that could never match (a hidden
//! segment holding `/`, the extension `*.exe`, a method or header name with
//! a space) are configuration errors, not rules that silently do nothing.
//!
//! `internal` (nginx's directive; IIS has none) keeps a location for the
//! requests riis makes itself: child requests (an application's
//! `X-Accel-Redirect`, CustomError's page, DefaultDocument's document) and
//! URLs a module rewrote pass; a client's own request gets 404, and so
//! does a CGI program's local redirect (its `Location` may be the client's
//! choice: `ExecuteFlags::client_chosen_url`).
//!
//! IIS answers an over-long `Content-Length` with 404.13; riis uses 413, the
//! status HTTP has for it. The size checks on bodies do not apply to child
//! requests (they have no body of their own).
//!
//! Configuration section `request_filtering`; see
//! `docs/modules/request-filtering.md` for every key and its default.

use std::collections::HashMap;

use riis_pipeline::http::{header, HeaderValue, StatusCode};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, ReadEntityProvider,
    RequestNotification, RequestNotificationStatus, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

/// The `file_extensions` table of the section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileExtensionsConfig {
    /// Whether extensions listed in neither list are allowed.
    pub allow_unlisted: bool,
    /// Extensions refused (`.exe`; the dot is optional, case is ignored).
    /// Deny wins over allow.
    #[serde(deserialize_with = "extensions")]
    pub deny: Vec<String>,
    /// Extensions allowed when `allow_unlisted` is false; `.` stands for
    /// URLs whose last segment has no extension.
    #[serde(deserialize_with = "extensions")]
    pub allow: Vec<String>,
}

/// A list of extensions, each one that can match: not empty (`""` would
/// match nothing, silently; `.` is the way to name URLs without one), and
/// no pattern or path (`*.exe`, `.tar.gz`, `bin/.exe`: the extension is
/// what follows the last dot of the last segment, so those never match).
fn extensions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for e in &list {
        let trimmed = e.trim();
        if trimmed.is_empty() {
            return Err(serde::de::Error::custom(
                "an extension cannot be empty (`.` stands for URLs without one)",
            ));
        }
        // As `same_extension` reads it: leading dots dropped.
        let bare = trimmed.trim_start_matches('.');
        if trimmed != "." && (bare.is_empty() || bare.contains(['.', '*', '?', '/', '\\'])) {
            return Err(serde::de::Error::custom(format!(
                "`{e}` is not an extension: write one as `.exe` (what follows the last dot \
                 of a file name; no `*`, `?`, path or second dot)"
            )));
        }
    }
    Ok(list)
}

/// The hidden segments, each one path segment: an entry holding `/` (or
/// `\`, which the server refuses in URLs), an empty one, `.` or `..` (gone
/// once the path is normalized) would never equal a segment, silently.
fn segments<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for s in &list {
        if s.is_empty() {
            return Err(serde::de::Error::custom("a hidden segment cannot be empty"));
        }
        if s == "." || s == ".." {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is not a segment a path holds once normalized"
            )));
        }
        if let Some(at) = s.find(['/', '\\']) {
            let separator = &s[at..at + 1];
            let name = s.rsplit(['/', '\\']).find(|p| !p.is_empty()).unwrap_or("");
            return Err(serde::de::Error::custom(format!(
                "`{s}` holds a `{separator}`: an entry is one path segment (`{name}`), \
                 hidden wherever it appears in a path"
            )));
        }
    }
    Ok(list)
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s): what a method is.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The `verbs` table, every key a method: `" GET"` or `"GET POST"` would
/// never equal a request's method, silently.
fn methods<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, bool>, D::Error> {
    let verbs = HashMap::<String, bool>::deserialize(d)?;
    if let Some(v) = verbs.keys().find(|v| !is_token(v)) {
        return Err(serde::de::Error::custom(format!(
            "`{v}` is not a method (one word, no spaces: list each method as its own key)"
        )));
    }
    Ok(verbs)
}

/// The `header_limits` table, every key a header name of letters, digits
/// and `-`: `"X Big"` is no header name at all, and `"User_Agent"` would
/// limit only a header sent as `User_Agent`, not `User-Agent` (gateways
/// drop such names; see `crate::is_plain_header_name`).
fn header_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, usize>, D::Error> {
    let limits = HashMap::<String, usize>::deserialize(d)?;
    if let Some(name) = limits
        .keys()
        .find(|n| n.is_empty() || !crate::is_plain_header_name(n))
    {
        let hint = if name.contains('_') && is_token(name) {
            // `HTTP_USER_AGENT` is the CGI variable of `User-Agent`.
            let bare = name
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("HTTP_"))
                .map_or(name.as_str(), |_| &name[5..]);
            format!(" (`{}`?)", bare.replace('_', "-"))
        } else {
            String::new()
        };
        return Err(serde::de::Error::custom(format!(
            "`{name}` is not a header name: write names with letters, digits and `-`{hint}"
        )));
    }
    Ok(limits)
}

impl Default for FileExtensionsConfig {
    fn default() -> Self {
        Self {
            allow_unlisted: true,
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }
}

/// A length limit that 0 would turn into "refuse everything".
fn positive_length<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "0 would refuse every URL (every path has at least its `/`)",
        ));
    }
    Ok(n)
}

/// The `request_filtering` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestFilteringConfig {
    /// Largest `Content-Length` (and chunked body) accepted, in bytes.
    pub max_allowed_content_length: u64,
    /// Longest decoded URL path, in bytes (at least 1: every path has its
    /// `/`).
    #[serde(deserialize_with = "positive_length")]
    pub max_url: usize,
    /// Longest query string (as sent, without `?`), in bytes.
    pub max_query_string: usize,
    /// Whether methods not in `verbs` are allowed.
    pub allow_unlisted_verbs: bool,
    /// Method → allowed. A denied method is refused in any case (`delete`
    /// too: applications that upper-case the method would act on it as
    /// DELETE); an allowed one matches exactly, so with
    /// `allow_unlisted_verbs = false` an odd-case method is still refused.
    /// Keys are methods (tokens), checked when the configuration loads.
    #[serde(deserialize_with = "methods")]
    pub verbs: HashMap<String, bool>,
    /// Extension rules for the last segment of the URL path.
    pub file_extensions: FileExtensionsConfig,
    /// Path segments that make a URL invisible (compared ignoring ASCII
    /// case); each entry is one segment, without `/`.
    #[serde(deserialize_with = "segments")]
    pub hidden_segments: Vec<String>,
    /// Substrings refused in the URL path (as sent, decoded, and decoded and
    /// normalized), ignoring ASCII case.
    pub denied_url_sequences: Vec<String>,
    /// Substrings refused in the query string (as sent, and decoded),
    /// ignoring ASCII case: IIS's `denyQueryStringSequences`.
    pub denied_query_string_sequences: Vec<String>,
    /// Whether the decoded path may still hold a `%XX` escape.
    pub allow_double_escaping: bool,
    /// Whether the decoded path may hold non-ASCII characters.
    pub allow_high_bit_characters: bool,
    /// Largest request header, name plus value, in bytes; `0` turns the check off.
    pub max_header_size: usize,
    /// Header name (any case; letters, digits and `-`) → largest value, in
    /// bytes (all values of the header together).
    #[serde(deserialize_with = "header_names")]
    pub header_limits: HashMap<String, usize>,
    /// Whether the location answers only the requests riis makes itself
    /// (nginx's `internal`): child requests, such as an application's
    /// `X-Accel-Redirect`, and URLs a module rewrote. A client's own
    /// request for it gets 404.
    pub internal: bool,
}

impl Default for RequestFilteringConfig {
    fn default() -> Self {
        Self {
            max_allowed_content_length: 30_000_000,
            max_url: 4096,
            max_query_string: 2048,
            allow_unlisted_verbs: true,
            verbs: HashMap::new(),
            file_extensions: FileExtensionsConfig::default(),
            hidden_segments: DEFAULT_HIDDEN_SEGMENTS.map(String::from).into(),
            denied_url_sequences: Vec::new(),
            denied_query_string_sequences: Vec::new(),
            allow_double_escaping: false,
            allow_high_bit_characters: true,
            max_header_size: 8192,
            header_limits: HashMap::new(),
            internal: false,
        }
    }
}

/// The default hidden segments: riis's own configuration files, the
/// metadata folders and files of version control and common deployment
/// tools, and IIS's default hidden segments.
pub const DEFAULT_HIDDEN_SEGMENTS: [&str; 17] = [
    "riis.toml",
    "defaults.toml",
    ".git",
    ".svn",
    ".hg",
    ".bzr",
    ".env",
    ".htaccess",
    ".htpasswd",
    // IIS's own defaults: an ASP.NET site copied over keeps its
    // assemblies and data out of reach.
    "web.config",
    "bin",
    "App_Code",
    "App_GlobalResources",
    "App_LocalResources",
    "App_WebReferences",
    "App_Data",
    "App_Browsers",
];

/// Lets the refusals' log lines through at one a second.
static REFUSAL_LOG: crate::LogGate = crate::LogGate::new();

/// A tripped rule: what to answer and what to log.
struct Rejection {
    rule: &'static str,
    status: StatusCode,
    substatus: u16,
    value: String,
}

impl Rejection {
    fn new(
        rule: &'static str,
        status: StatusCode,
        substatus: u16,
        value: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            status,
            substatus,
            value: value.into(),
        }
    }
}

/// The module instance.
pub struct RequestFiltering {
    config: Section<RequestFilteringConfig>,
    /// Body bytes seen through ReadEntity.
    received: u64,
    /// The body went past the limit while being read.
    body_too_large: bool,
    /// The 413 was put back at EndRequest; later sends carry the page
    /// CustomError chose for it.
    too_large_restored: bool,
    /// `url_changes()` when the URL was last checked.
    checked_url: u32,
}

fn has_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `.ext` of the last path segment, lower-cased; `.` when it has none.
fn extension_of(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rfind('.') {
        Some(i) if i + 1 < last.len() => last[i..].to_ascii_lowercase(),
        _ => ".".to_owned(),
    }
}

fn same_extension(listed: &str, ext: &str) -> bool {
    let listed = listed.trim();
    if listed == "." {
        return ext == ".";
    }
    listed
        .trim_start_matches('.')
        .eq_ignore_ascii_case(&ext[1..])
        && ext != "."
}

/// Whether `verbs` and `allow_unlisted_verbs` let `method` through. A deny
/// entry matches in any case: `delete` reaches a CGI program as
/// `REQUEST_METHOD=delete`, and frameworks that upper-case it act on a
/// DELETE (UrlAuthorization compares methods the same way). An allow entry
/// matches exactly, so that an allow list fails closed for `get`; deny
/// wins over allow.
pub(crate) fn verb_allowed(config: &RequestFilteringConfig, method: &str) -> bool {
    if config
        .verbs
        .iter()
        .any(|(verb, allowed)| !allowed && verb.eq_ignore_ascii_case(method))
    {
        return false;
    }
    config
        .verbs
        .get(method)
        .copied()
        .unwrap_or(config.allow_unlisted_verbs)
}

/// Takes the methods the location's `verbs` refuse out of the response's
/// `Allow` (RFC 9110 §10.2.1: the methods the resource supports, which a
/// client may try next). What is left may be empty, which says no method
/// is allowed.
fn without_refused_verbs(ctx: &mut HttpContext, section: Section<RequestFilteringConfig>) {
    let config = ctx.config(section);
    if config.verbs.is_empty() && config.allow_unlisted_verbs {
        return;
    }
    // Every `Allow` line: RFC 9110 §5.3 reads them as one list (a
    // backend's answer may have several).
    let mut listed: Vec<&str> = Vec::new();
    let mut lines = 0;
    for line in ctx.response().headers().get_all(header::ALLOW) {
        let Ok(line) = line.to_str() else {
            return;
        };
        lines += 1;
        listed.extend(line.split(',').map(str::trim).filter(|m| !m.is_empty()));
    }
    if lines == 1 && listed.iter().all(|m| verb_allowed(config, m)) {
        return;
    }
    let kept = listed
        .into_iter()
        .filter(|m| verb_allowed(config, m))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::try_from(kept) {
        ctx.response_mut().set_header(header::ALLOW, value);
    }
}

fn check(ctx: &HttpContext, config: &RequestFilteringConfig) -> Option<Rejection> {
    let req = ctx.request();
    // As nginx's `internal`: a plain 404, as if there were nothing here.
    // A child whose URL the client may have chosen (a CGI local redirect)
    // is judged as the client's own request, its URL as the client's: an
    // open redirect must not open the location.
    if config.internal
        && ((ctx.child_depth() == 0 && req.url_changes() == 0)
            || ctx.execute_flags().client_chosen_url)
    {
        return Some(Rejection::new(
            "internal",
            StatusCode::NOT_FOUND,
            0,
            req.url(),
        ));
    }
    let method = req.method().as_str();
    if !verb_allowed(config, method) {
        return Some(Rejection::new("verbs", StatusCode::NOT_FOUND, 6, method));
    }

    if ctx.child_depth() == 0 {
        if let Some(len) = req.header(riis_pipeline::http::header::CONTENT_LENGTH) {
            let n = len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
            if n.is_none_or(|n| n > config.max_allowed_content_length) {
                return Some(Rejection::new(
                    "max_allowed_content_length",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    0,
                    String::from_utf8_lossy(len.as_bytes()),
                ));
            }
        }
    }

    let url = req.url();
    if url.len() > config.max_url {
        return Some(Rejection::new(
            "max_url",
            StatusCode::NOT_FOUND,
            14,
            format!("{} bytes", url.len()),
        ));
    }
    let query = req.query_string();
    if query.len() > config.max_query_string {
        return Some(Rejection::new(
            "max_query_string",
            StatusCode::NOT_FOUND,
            15,
            format!("{} bytes", query.len()),
        ));
    }

    for (name, value) in req.headers() {
        let size = name.as_str().len() + value.len();
        if config.max_header_size != 0 && size > config.max_header_size {
            return Some(Rejection::new(
                "max_header_size",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                0,
                format!("{name}: {size} bytes"),
            ));
        }
    }
    for (name, limit) in &config.header_limits {
        let values = req.headers().get_all(name.to_ascii_lowercase().as_str());
        let size: usize = values.iter().map(|v| v.len()).sum();
        if size > *limit {
            return Some(Rejection::new(
                "header_limits",
                StatusCode::NOT_FOUND,
                10,
                format!("{name}: {size} bytes"),
            ));
        }
    }

    if !config.allow_double_escaping && has_escape(url) {
        return Some(Rejection::new(
            "allow_double_escaping",
            StatusCode::NOT_FOUND,
            11,
            url,
        ));
    }
    if !config.allow_high_bit_characters && !url.is_ascii() {
        return Some(Rejection::new(
            "allow_high_bit_characters",
            StatusCode::NOT_FOUND,
            12,
            url,
        ));
    }

    if !config.denied_url_sequences.is_empty() {
        // The path as sent, decoded, and decoded and normalized: `%2e/`
        // must not pass for `./`, nor `/./` (gone once normalized) either.
        let raw_path = req.uri().path();
        let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        if let Some(seq) = config.denied_url_sequences.iter().find(|s| {
            contains_ignore_case(url, s)
                || contains_ignore_case(raw_path, s)
                || contains_ignore_case(&decoded, s)
        }) {
            return Some(Rejection::new(
                "denied_url_sequences",
                StatusCode::NOT_FOUND,
                5,
                seq.as_str(),
            ));
        }
    }
    if !config.denied_query_string_sequences.is_empty() && !query.is_empty() {
        // The query as sent and as an application reads it (escapes
        // decoded, `+` a space): `%2e%2e` must not pass for `..`.
        let plus_as_space = query.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy();
        if let Some(seq) = config
            .denied_query_string_sequences
            .iter()
            .find(|s| contains_ignore_case(query, s) || contains_ignore_case(&decoded, s))
        {
            return Some(Rejection::new(
                "denied_query_string_sequences",
                StatusCode::NOT_FOUND,
                18,
                seq.as_str(),
            ));
        }
    }

    if let Some(segment) = hidden_segment(config, url) {
        return Some(Rejection::new(
            "hidden_segments",
            StatusCode::NOT_FOUND,
            8,
            segment,
        ));
    }

    check_extension(config, url)
}

/// The first segment of `url` that `hidden_segments` hides.
fn hidden_segment<'u>(config: &RequestFilteringConfig, url: &'u str) -> Option<&'u str> {
    url.split('/').find(|seg| {
        !seg.is_empty()
            && config
                .hidden_segments
                .iter()
                .any(|h| h.eq_ignore_ascii_case(seg))
    })
}

/// The rule of `config` that refuses a URL the client names besides its
/// own (a WebDAV COPY or MOVE's destination, a location inside the tree a
/// method acts on) for `method`: `internal`, `verbs`, `max_url`,
/// `allow_high_bit_characters`, `hidden_segments`, `denied_url_sequences`
/// and `file_extensions`, the rules about the method and the path alone,
/// with the status and substatus a request for it would get (IIS's
/// `applyToWebDAV`, on by default). `url` is decoded.
pub fn url_refusal(
    config: &RequestFilteringConfig,
    url: &str,
    method: &str,
) -> Option<(StatusCode, u16, &'static str)> {
    let rejection = if config.internal {
        Rejection::new("internal", StatusCode::NOT_FOUND, 0, url)
    } else if !verb_allowed(config, method) {
        Rejection::new("verbs", StatusCode::NOT_FOUND, 6, method)
    } else if url.len() > config.max_url {
        Rejection::new("max_url", StatusCode::NOT_FOUND, 14, url)
    } else if !config.allow_high_bit_characters && !url.is_ascii() {
        Rejection::new("allow_high_bit_characters", StatusCode::NOT_FOUND, 12, url)
    } else if hidden_segment(config, url).is_some() {
        Rejection::new("hidden_segments", StatusCode::NOT_FOUND, 8, url)
    } else if config
        .denied_url_sequences
        .iter()
        .any(|s| contains_ignore_case(url, s))
    {
        Rejection::new("denied_url_sequences", StatusCode::NOT_FOUND, 5, url)
    } else {
        check_extension(config, url)?
    };
    Some((rejection.status, rejection.substatus, rejection.rule))
}

/// The `file_extensions` rule for the last segment of `path`.
fn check_extension(config: &RequestFilteringConfig, path: &str) -> Option<Rejection> {
    let rules = &config.file_extensions;
    if !rules.deny.is_empty() || !rules.allow_unlisted {
        let ext = extension_of(path);
        let denied = rules.deny.iter().any(|d| same_extension(d, &ext));
        let allowed = rules.allow_unlisted || rules.allow.iter().any(|a| same_extension(a, &ext));
        if denied || !allowed {
            return Some(Rejection::new(
                "file_extensions",
                StatusCode::NOT_FOUND,
                7,
                ext,
            ));
        }
    }
    None
}

/// The 413 of a body that went past the limit, over whatever the module
/// that was reading it answered.
fn restore_too_large(ctx: &mut HttpContext) {
    let resp = ctx.response();
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE || resp.buffered_len() != 0 {
        body_too_large_status(ctx);
    }
}

fn body_too_large_status(ctx: &mut HttpContext) {
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.set_error_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload Too Large",
        0,
        crate::E_ACCESS_DENIED,
    );
    crate::gateway::close_after_answer(ctx);
}

impl RequestFiltering {
    /// Checks the request against the rules; the first that trips answers.
    fn filter(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        let rejection = check(ctx, config);
        self.refuse(ctx, rejection)
    }

    /// Answers a request a rule refused (`None`: none did).
    fn refuse(
        &mut self,
        ctx: &mut HttpContext,
        rejection: Option<Rejection>,
    ) -> RequestNotificationStatus {
        let Some(rejection) = rejection else {
            return RequestNotificationStatus::Continue;
        };
        // One line a second, cut short: refusals come in floods (a
        // scanner, an attack), and each carries what the client sent.
        if let Some(held_back) = REFUSAL_LOG.pass() {
            tracing::info!(
                rule = rejection.rule,
                url = %crate::log_excerpt(ctx.request().raw_url()),
                // Quoted and escaped: the value comes from the request, and a
                // decoded CR or LF must not start a line of its own in the log.
                value = ?crate::log_excerpt(&rejection.value),
                status = rejection.status.as_u16(),
                substatus = rejection.substatus,
                held_back,
                "request filtering refused the request"
            );
        }
        let status = rejection.status;
        let resp = ctx.response_mut();
        resp.clear_entity();
        resp.set_error_status(
            status,
            status.canonical_reason().unwrap_or(""),
            rejection.substatus,
            crate::E_ACCESS_DENIED,
        );
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body is not read: an HTTP/1.x connection cannot be
            // reused (an HTTP/2 stream ends alone).
            crate::gateway::close_after_answer(ctx);
        }
        RequestNotificationStatus::FinishRequest
    }
}

impl HttpModule for RequestFiltering {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        self.checked_url = ctx.request().url_changes();
        self.filter(ctx)
    }

    fn on_post_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A BeginRequest module after this one rewrote the URL: the new one
        // is checked too (in the new URL's location), so a rewrite cannot
        // lead past the rules.
        if ctx.request().url_changes() == self.checked_url {
            return RequestNotificationStatus::Continue;
        }
        self.checked_url = ctx.request().url_changes();
        self.filter(ctx)
    }

    fn on_post_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A handler that took a leading part of the URL as its script
        // (`allow_path_info`) runs a file whose extension the last segment
        // did not show: `/uploads/shell.cgi/x` must meet a rule that
        // refuses `.cgi` as `/uploads/shell.cgi` does.
        if ctx.path_info().is_empty() {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let rejection = check_extension(config, ctx.script_name());
        self.refuse(ctx, rejection)
    }

    fn on_read_entity(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut ReadEntityProvider,
    ) -> RequestNotificationStatus {
        if self.body_too_large {
            provider.set_entity(riis_pipeline::bytes::Bytes::new());
            return RequestNotificationStatus::FinishRequest;
        }
        self.received += provider.entity().len() as u64;
        let limit = ctx.config(self.config).max_allowed_content_length;
        if self.received > limit {
            self.body_too_large = true;
            if let Some(held_back) = REFUSAL_LOG.pass() {
                tracing::info!(
                    rule = "max_allowed_content_length",
                    url = %crate::log_excerpt(ctx.request().raw_url()),
                    value = %format!("more than {limit} bytes read"),
                    status = 413,
                    held_back,
                    "request filtering refused the request body"
                );
            }
            provider.set_entity(riis_pipeline::bytes::Bytes::new());
            if ctx.response().headers_sent() {
                ctx.response_mut().reset_connection();
            } else {
                body_too_large_status(ctx);
            }
            // The reader is not resumed: a handler must not go on with a
            // body cut short as if it were whole (a CGI program or an
            // application would act on part of an upload while the client
            // is told 413), as nginx never passes such a body on.
            return RequestNotificationStatus::FinishRequest;
        }
        RequestNotificationStatus::Continue
    }

    fn on_end_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // The reader ran on after the 413 and may have answered in its own
        // way: the 413 goes back now, before CustomError (EndRequest,
        // Medium) picks the page for it, so that page is kept.
        if self.body_too_large && !ctx.response().headers_sent() {
            restore_too_large(ctx);
            self.too_large_restored = true;
        }
        RequestNotificationStatus::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        // A send before EndRequest (a flush) that carries the headers.
        if !provider.headers_being_sent() {
            return RequestNotificationStatus::Continue;
        }
        if self.body_too_large && !self.too_large_restored {
            restore_too_large(ctx);
        }
        if ctx.response().headers().contains_key(header::ALLOW) {
            without_refused_verbs(ctx, self.config);
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
    let config = registration.declare_section::<RequestFilteringConfig>("request_filtering")?;
    registration.set_request_notifications(
        move || RequestFiltering {
            config,
            received: 0,
            body_too_large: false,
            too_large_restored: false,
            checked_url: 0,
        },
        RequestNotification::BeginRequest
            | RequestNotification::ReadEntity
            | RequestNotification::EndRequest
            | RequestNotification::SendResponse,
        RequestNotification::BeginRequest | RequestNotification::MapRequestHandler,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::First);
    registration
        .set_priority_for_request_notification(RequestNotification::EndRequest, Priority::First);
    // The re-check of a rewritten URL comes before other PostBeginRequest
    // modules act on it.
    registration.set_priority_for_post_request_notification(
        RequestNotification::BeginRequest,
        Priority::First,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::ReadEntity, Priority::First);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(extension_of("/a/b.EXE"), ".exe");
        assert_eq!(extension_of("/a.d/b"), ".");
        assert_eq!(extension_of("/"), ".");
        assert_eq!(extension_of("/x."), ".");
        assert!(same_extension(".exe", ".exe"));
        assert!(same_extension("EXE", ".exe"));
        assert!(same_extension(".", "."));
        assert!(!same_extension("exe", "."));
    }

    fn parse(text: &str) -> Result<RequestFilteringConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_that_never_match_are_refused() {
        let good = parse(
            r#"
            hidden_segments = [".git", "bin", "App_Data"]
            file_extensions = { deny = [".exe", "BAT", " .cmd "], allow = [".", ".txt"] }
            header_limits = { "Content-Type" = 100, "X-Api-Key2" = 64 }
            verbs = { "GET" = true, "M-SEARCH" = false, "delete" = false }
            "#,
        )
        .unwrap();
        assert_eq!(good.hidden_segments.len(), 3);
        for (text, message) in [
            (r#"hidden_segments = ["files/setup.exe"]"#, "(`setup.exe`)"),
            (r#"hidden_segments = ["/admin"]"#, "(`admin`)"),
            (r#"hidden_segments = ['bin\x.dll']"#, "holds a `\\`"),
            (r#"hidden_segments = [".."]"#, "once normalized"),
            (r#"hidden_segments = [""]"#, "cannot be empty"),
            (
                r#"file_extensions = { deny = ["*.exe"] }"#,
                "`*.exe` is not an extension",
            ),
            (r#"file_extensions = { deny = [".*"] }"#, "not an extension"),
            (r#"file_extensions = { deny = [".."] }"#, "not an extension"),
            (
                r#"file_extensions = { allow = [".tar.gz"] }"#,
                "not an extension",
            ),
            (
                r#"file_extensions = { deny = ["bin/.exe"] }"#,
                "not an extension",
            ),
            (
                r#"header_limits = { "X Big" = 1 }"#,
                "`X Big` is not a header name",
            ),
            (r#"header_limits = { "User_Agent" = 3 }"#, "(`User-Agent`?)"),
            (
                r#"header_limits = { "HTTP_USER_AGENT" = 3 }"#,
                "(`USER-AGENT`?)",
            ),
            (r#"header_limits = { "" = 3 }"#, "is not a header name"),
            (r#"verbs = { " GET" = false }"#, "` GET` is not a method"),
            (
                r#"verbs = { "GET POST" = false }"#,
                "`GET POST` is not a method",
            ),
            (r#"verbs = { "" = true }"#, "is not a method"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn denied_verbs_match_in_any_case_allowed_ones_exactly() {
        let config = parse(r#"verbs = { "DELETE" = false, "trace" = false }"#).unwrap();
        for method in ["DELETE", "delete", "Delete", "TRACE", "trace", "tRaCe"] {
            assert!(!verb_allowed(&config, method), "{method}");
        }
        assert!(verb_allowed(&config, "GET"));
        assert!(verb_allowed(&config, "get"), "unlisted verbs are allowed");

        let strict = parse(
            r#"
            allow_unlisted_verbs = false
            verbs = { "GET" = true, "POST" = true, "post" = false }
            "#,
        )
        .unwrap();
        assert!(verb_allowed(&strict, "GET"));
        assert!(
            !verb_allowed(&strict, "get"),
            "an allow entry matches exactly"
        );
        assert!(!verb_allowed(&strict, "POST"), "deny wins over allow");
        assert!(!verb_allowed(&strict, "PUT"));
    }

    #[test]
    fn escapes_and_sequences() {
        assert!(has_escape("/a%2e"));
        assert!(!has_escape("/100%"));
        assert!(!has_escape("/%zz"));
        assert!(contains_ignore_case("/A/.GIT", ".git"));
        assert!(!contains_ignore_case("/a", ""));
    }
}
