//! `UrlRewrite`: IIS URL Rewrite's inbound rules. Each rule matches the
//! URL path against a regular expression, checks its conditions (server
//! variables against patterns, whether a path is a file or a folder), and
//! acts: rewrites the URL for the rest of the pipeline, redirects, answers
//! with a status of its own, or aborts the connection.
//!
//! Registers for **BeginRequest** at **High** priority: the URL may change
//! until BeginRequest's modules are done, and every module after this one,
//! as well as the choice of location (and with it every module's
//! configuration) and of handler, sees the rewritten URL. The rules are the
//! ones of the location the request's original URL falls in. Child
//! requests (a default document's, for instance) are not rewritten: their
//! parent was.
//!
//! The rules run in order. A rule's `pattern` is matched against the URL
//! path without its leading `/`, decoded (`blog/2024/hello world`); the
//! query string is not part of it. After a Rewrite the next rules see the
//! rewritten path. `stop_processing` ends the walk after the rule, and a
//! Redirect, CustomResponse or AbortRequest always does.
//!
//! Templates (a condition's `input`, an action's `url`, a server
//! variable's value) may hold `{R:n}` (the rule pattern's group n; 0 is
//! the whole match), `{C:n}` (the group of the last condition pattern that
//! matched), `{NAME}` for a server variable (`{HTTP_HOST}`,
//! `{QUERY_STRING}`, `{HTTPS}`, …), the functions `{ToLower:…}`,
//! `{UrlEncode:…}`, `{UrlDecode:…}` and `{EscapeDataString:…}`, and
//! `{Map:…}` for a rewrite map's value (`rewrite.maps`, IIS's
//! `rewriteMaps`; a map's values are the configuration's text, so a
//! Redirect made of them may name another site). `{URL}` is
//! the path as rewritten so far and `{REQUEST_FILENAME}` its physical
//! path; a variable the request does not have is empty. In a URL, values
//! from the decoded path (`{R:n}`, `{URL}`, `{REQUEST_FILENAME}`, `{C:n}`
//! of a condition on them) are percent-encoded again, as one query value
//! after the template's `?`; server variables keep their own encoding
//! (spaces, control characters and `#` encoded). A Redirect to a path gets
//! one leading `/`, so a value cannot make it another host.
//!
//! High, not First: RequestFiltering and IpRestriction run at BeginRequest
//! at First priority, so they judge the URL the client sent before any
//! rule rewrites it, wherever the module list puts them, and judge the
//! rewritten URL again at PostBeginRequest.
//!
//! When a rule rewrites the URL, the server variable `REQUEST_URI` (the
//! engine's `client_url`) keeps the URL the client asked for, as Apache and nginx pass it to
//! applications (FastCgi, Cgi): a front controller (`index.php`) reads the
//! route from it.
//!
//! Configuration section `rewrite`, per location: `rules`, a list of
//! tables with `name`, `pattern`, `ignore_case` (default true), `negate`
//! (default false), `conditions` (`input`, `pattern`, `match_type` =
//! `Pattern`, `IsFile` or `IsDirectory`, `ignore_case`, `negate`),
//! `logical_grouping` (`MatchAll`, the default, or `MatchAny`),
//! `stop_processing` (default false), `pattern_syntax` (`ECMAScript`, the
//! default, `Wildcard` or `ExactMatch`), `server_variables` (`name`,
//! `value`, `replace`; `HTTP_*` names are request headers, set before the
//! action) and `action` (`type` = `Rewrite`,
//! `Redirect`, `CustomResponse`, `AbortRequest` or `None`; `url`,
//! `append_query_string` (default true), `redirect_type` (`Permanent`, the
//! default, `Found`, `SeeOther`, `Temporary`), `status_code`,
//! `sub_status_code`, `status_reason`, `status_description`); and `maps`,
//! tables by name with `entries`, `default_value` (default empty) and
//! `ignore_case` (default true). Patterns are Rust regular expressions (IIS's are ECMAScript: look-around and
//! back-references within a pattern are not available); a pattern that does
//! not compile is a configuration error naming file, line and key.
//!
//! A Rewrite to `http[s]://host[:port]/path` sends the request to that
//! server: the URL becomes `/path` and the `PROXY_SERVER` server variable
//! names the server, for ReverseProxy (which must be in the new URL's handler) to
//! pass it on, as IIS's URL Rewrite does with ARR. The server is written
//! out in the rule; one made of `{…}` values is a configuration error, so
//! no request can choose where it is sent. Other schemes are errors.
//!
//! Not done: outbound rules.

use std::collections::{BTreeMap, HashMap};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use regex::{Captures, Regex, RegexBuilder};
use riis_pipeline::http::header::{HeaderName, HeaderValue};
use riis_pipeline::http::{self, StatusCode};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

/// The `rewrite` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawRewriteConfig")]
pub struct RewriteConfig {
    /// The inbound rules, in order.
    pub rules: Vec<Rule>,
    /// The rewrite maps, in name order; templates find theirs by index.
    maps: Vec<RewriteMap>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRewriteConfig {
    rules: Vec<Rule>,
    maps: BTreeMap<String, RawMap>,
}

/// A rewrite map (IIS's `rewriteMap`): a table from keys to values, read
/// by `{Name:…}` in a template.
#[derive(Debug)]
struct RewriteMap {
    name: String,
    /// Keys are compared without case (IIS's default): they are kept
    /// lowercased.
    ignore_case: bool,
    default_value: String,
    entries: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    default_value: String,
    #[serde(default = "yes")]
    ignore_case: bool,
    #[serde(default)]
    entries: BTreeMap<String, String>,
}

impl RewriteMap {
    fn lookup(&self, key: &str) -> &str {
        let value = if self.ignore_case {
            self.entries.get(&key.to_lowercase())
        } else {
            self.entries.get(key)
        };
        value.unwrap_or(&self.default_value)
    }
}

impl TryFrom<RawRewriteConfig> for RewriteConfig {
    type Error = String;

    fn try_from(raw: RawRewriteConfig) -> Result<Self, String> {
        let mut maps = Vec::with_capacity(raw.maps.len());
        for (name, map) in raw.maps {
            if !is_identifier(&name) || Function::named(&name).is_some() || is_group_letter(&name) {
                return Err(format!(
                    "rewrite map `{name}`: a map's name is letters, digits and `_`, and not R, C or a function's (ToLower, UrlEncode, UrlDecode, EscapeDataString)"
                ));
            }
            if let Some(other) = maps
                .iter()
                .find(|m: &&RewriteMap| m.name.eq_ignore_ascii_case(&name))
            {
                return Err(format!(
                    "rewrite maps `{}` and `{name}`: map names are compared without case",
                    other.name
                ));
            }
            let mut entries = HashMap::with_capacity(map.entries.len());
            for (key, value) in map.entries {
                let stored = if map.ignore_case {
                    key.to_lowercase()
                } else {
                    key.clone()
                };
                if entries.insert(stored, value).is_some() {
                    return Err(format!(
                        "rewrite map `{name}`: key `{key}` is there twice (keys are compared without case unless ignore_case = false)"
                    ));
                }
            }
            maps.push(RewriteMap {
                name,
                ignore_case: map.ignore_case,
                default_value: map.default_value,
                entries,
            });
        }
        let mut rules = raw.rules;
        for rule in &mut rules {
            let name = rule.name.clone();
            for template in rule.templates_mut() {
                template
                    .resolve_maps(&maps)
                    .map_err(|e| format!("rule `{name}`: {e}"))?;
            }
        }
        Ok(RewriteConfig { rules, maps })
    }
}

/// One rule, compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    name: String,
    pattern: Regex,
    /// A template uses `{R:n}`: the match's groups are taken, not only
    /// whether it matched.
    uses_groups: bool,
    negate: bool,
    conditions: Vec<Condition>,
    match_any: bool,
    action: Action,
    stop_processing: bool,
    /// Server variables (and, as `HTTP_*`, request headers) the rule sets
    /// when it applies.
    server_variables: Vec<SetVariable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    pattern: String,
    #[serde(default)]
    pattern_syntax: PatternSyntax,
    #[serde(default = "yes")]
    ignore_case: bool,
    #[serde(default)]
    negate: bool,
    #[serde(default)]
    conditions: Vec<RawCondition>,
    #[serde(default)]
    logical_grouping: LogicalGrouping,
    #[serde(default)]
    stop_processing: bool,
    #[serde(default)]
    server_variables: Vec<RawSetVariable>,
    action: RawAction,
}

/// How a rule's patterns (its own and its conditions') are written: IIS's
/// `patternSyntax`.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
enum PatternSyntax {
    /// A regular expression.
    #[default]
    ECMAScript,
    /// The whole value, where each `*` matches any characters (and is a
    /// group, `{R:1}` for the first).
    Wildcard,
    /// The whole value, as written.
    ExactMatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetVariable {
    name: String,
    value: String,
    #[serde(default = "yes")]
    replace: bool,
}

/// A server variable a rule sets, checked once.
#[derive(Debug)]
struct SetVariable {
    /// Upper case, as IIS names them.
    name: String,
    /// For `HTTP_*`: the request header it is.
    header: Option<HeaderName>,
    value: Template,
    /// Whether a value already there is replaced (IIS's `replace`).
    replace: bool,
}

impl TryFrom<RawSetVariable> for SetVariable {
    type Error = String;

    fn try_from(raw: RawSetVariable) -> Result<Self, String> {
        let name = raw.name.to_ascii_uppercase();
        if !is_identifier(&name) {
            return Err(format!(
                "server variable `{}`: a name is letters, digits and `_`",
                raw.name
            ));
        }
        let header = match name.strip_prefix("HTTP_") {
            Some(header) => {
                let header = header.to_ascii_lowercase().replace('_', "-");
                let header = HeaderName::try_from(header.as_str())
                    .map_err(|_| format!("server variable `{name}` names no request header"))?;
                // The body's framing is the client's: a rule that changed it
                // would make the server and a backend disagree on where the
                // body ends.
                if header == http::header::CONTENT_LENGTH
                    || header == http::header::TRANSFER_ENCODING
                {
                    return Err(format!(
                        "server variable `{name}`: the request's framing headers are not set by rules"
                    ));
                }
                Some(header)
            }
            None => None,
        };
        Ok(SetVariable {
            value: Template::parse(&raw.value)?,
            name,
            header,
            replace: raw.replace,
        })
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, PartialEq)]
enum LogicalGrouping {
    #[default]
    MatchAll,
    MatchAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    input: String,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    match_type: MatchType,
    #[serde(default = "yes")]
    ignore_case: bool,
    #[serde(default)]
    negate: bool,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq)]
enum MatchType {
    #[default]
    Pattern,
    IsFile,
    IsDirectory,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: ActionKind,
    #[serde(default)]
    url: Option<String>,
    #[serde(default = "yes")]
    append_query_string: bool,
    #[serde(default)]
    redirect_type: RedirectType,
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    sub_status_code: u16,
    #[serde(default)]
    status_reason: Option<String>,
    #[serde(default)]
    status_description: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
enum ActionKind {
    Rewrite,
    Redirect,
    CustomResponse,
    AbortRequest,
    None,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq)]
enum RedirectType {
    #[default]
    Permanent,
    Found,
    SeeOther,
    Temporary,
}

impl RedirectType {
    fn status(self) -> StatusCode {
        match self {
            RedirectType::Permanent => StatusCode::MOVED_PERMANENTLY,
            RedirectType::Found => StatusCode::FOUND,
            RedirectType::SeeOther => StatusCode::SEE_OTHER,
            RedirectType::Temporary => StatusCode::TEMPORARY_REDIRECT,
        }
    }
}

/// A condition, compiled.
#[derive(Debug)]
struct Condition {
    input: Template,
    test: Test,
    negate: bool,
    /// Its groups come from the decoded path (its input is `{URL}`,
    /// `{REQUEST_FILENAME}` or `{R:n}`).
    decoded: bool,
}

#[derive(Debug)]
enum Test {
    Pattern(Regex),
    IsFile,
    IsDirectory,
}

/// What a matching rule does.
#[derive(Debug)]
enum Action {
    /// A new path (and query) for the request; with `server`
    /// (`http://host[:port]`), to be passed on to that server by
    /// ReverseProxy.
    Rewrite {
        url: Template,
        append_query: bool,
        server: Option<String>,
    },
    /// A redirect to `url`.
    Redirect {
        url: Template,
        append_query: bool,
        status: StatusCode,
    },
    /// A status of the rule's own.
    CustomResponse {
        status: StatusCode,
        substatus: u16,
        reason: Option<String>,
        description: Option<String>,
    },
    /// The connection is reset.
    AbortRequest,
    /// Nothing (the conditions may still stop the walk).
    None,
}

/// A template: literal text and references, parsed once.
#[derive(Debug, Default)]
struct Template {
    pieces: Vec<Piece>,
    /// The first piece of the query: the template's first literal `?`
    /// starts it (values after it are encoded as query components).
    query_at: Option<usize>,
    /// Whether the template is a URL with a scheme (`https://`) rather
    /// than a path on this site.
    scheme: Scheme,
    /// For [`Scheme::Expanded`], the references before the template's own
    /// `://`: what they expand to is checked alone, since a value may hold
    /// a `://` of its own (`X-Forwarded-Proto: https://evil/?`).
    scheme_part: Option<Box<Template>>,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    /// `{R:n}`.
    RuleGroup(usize),
    /// `{C:n}`.
    ConditionGroup(usize),
    /// `{NAME}`.
    Variable(String),
    /// `{ToLower:…}` and the other functions: a value made from the inner
    /// template's.
    Function(Function, Box<Template>),
    /// `{MapName:…}`: the rewrite map's value for the inner template's, by
    /// the map's index in the section (set once the section's maps are
    /// known).
    Map {
        name: String,
        index: usize,
        key: Box<Template>,
    },
}

/// IIS URL Rewrite's template functions.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    /// Lower case (Unicode).
    ToLower,
    /// Encoded as a form value: `+` for a space, `%XX` for all but
    /// letters, digits and `-_.!*()` (.NET's `HttpUtility.UrlEncode`).
    UrlEncode,
    /// `%XX` and `+` decoded.
    UrlDecode,
    /// `%XX` for all but RFC 3986's unreserved characters (.NET's
    /// `Uri.EscapeDataString`).
    EscapeDataString,
}

/// What `{UrlEncode:…}` leaves as it is.
const FORM_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')');
/// What `{EscapeDataString:…}` leaves as it is: RFC 3986's unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Function {
    fn named(name: &str) -> Option<Function> {
        [
            ("ToLower", Function::ToLower),
            ("UrlEncode", Function::UrlEncode),
            ("UrlDecode", Function::UrlDecode),
            ("EscapeDataString", Function::EscapeDataString),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, f)| f)
    }

    fn apply(self, value: String) -> String {
        match self {
            Function::ToLower => value.to_lowercase(),
            Function::UrlEncode => utf8_percent_encode(&value, FORM_VALUE)
                .to_string()
                .replace("%20", "+"),
            Function::UrlDecode => percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
            Function::EscapeDataString => utf8_percent_encode(&value, UNRESERVED).to_string(),
        }
    }
}

impl Piece {
    /// Whether the value comes decoded (from the decoded path): it needs
    /// encoding in a URL, `%` included.
    fn is_decoded(&self) -> bool {
        match self {
            Piece::RuleGroup(_) => true,
            Piece::Variable(name) => name == "URL" || name == "REQUEST_FILENAME",
            Piece::Function(Function::ToLower, inner) => inner.has_decoded_values(),
            Piece::Function(Function::UrlDecode, _) => true,
            // Encoded by the function; a map's values are the
            // configuration's own text.
            Piece::Function(Function::UrlEncode | Function::EscapeDataString, _)
            | Piece::Map { .. }
            | Piece::Text(_)
            | Piece::ConditionGroup(_) => false,
        }
    }

    /// The template inside a function or map lookup.
    fn inner(&self) -> Option<&Template> {
        match self {
            Piece::Function(_, inner) | Piece::Map { key: inner, .. } => Some(inner),
            _ => None,
        }
    }

    /// Parses what stands between a template's braces.
    fn parse(name: &str, depth: u8) -> Result<Piece, String> {
        let group = |prefix: &str| {
            name.strip_prefix(prefix)
                .map(|n| n.parse::<usize>().ok().filter(|&n| n <= 9))
        };
        match (group("R:"), group("C:")) {
            (Some(Some(n)), _) => return Ok(Piece::RuleGroup(n)),
            (_, Some(Some(n))) => return Ok(Piece::ConditionGroup(n)),
            (Some(None), _) | (_, Some(None)) => {
                return Err(format!(
                    "`{{{name}}}`: back-references are {{R:0}} to {{R:9}} and {{C:0}} to {{C:9}}"
                ))
            }
            _ => {}
        }
        if let Some((called, inner)) = name.split_once(':') {
            if is_group_letter(called) {
                return Err(format!(
                    "`{{{name}}}`: back-references are {{R:0}} to {{R:9}} and {{C:0}} to {{C:9}}"
                ));
            }
            if !is_identifier(called) {
                return Err(format!(
                    "`{{{name}}}`: `{called}` is neither a function (ToLower, UrlEncode, UrlDecode, EscapeDataString) nor a rewrite map's name"
                ));
            }
            if inner.is_empty() {
                return Err(format!("`{{{name}}}` has nothing to work on"));
            }
            if depth >= MAX_NESTING {
                return Err(format!(
                    "`{{{name}}}`: functions and maps nest at most {MAX_NESTING} deep"
                ));
            }
            let inner = Box::new(Template::parse_nested(inner, depth + 1)?);
            return Ok(match Function::named(called) {
                Some(function) => Piece::Function(function, inner),
                None => Piece::Map {
                    name: called.to_owned(),
                    index: usize::MAX,
                    key: inner,
                },
            });
        }
        if is_identifier(name) {
            return Ok(Piece::Variable(name.to_ascii_uppercase()));
        }
        Err(format!(
            "`{{{name}}}` is neither a back-reference, a server variable, a function nor a rewrite map lookup"
        ))
    }
}

/// How deep `{ToLower:{Map:{…}}}` may nest.
const MAX_NESTING: u8 = 8;

/// Whether `name` is letters, digits and `_` (a server variable's or a
/// map's name).
fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `R` or `C`, the back-references' letters.
fn is_group_letter(name: &str) -> bool {
    name.eq_ignore_ascii_case("R") || name.eq_ignore_ascii_case("C")
}

/// The offset of the `}` that closes the `{` `text` starts with.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => {}
        }
    }
    None
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        Template::parse_nested(text, 0)
    }

    /// A template `depth` functions or maps deep.
    fn parse_nested(text: &str, depth: u8) -> Result<Self, String> {
        let mut template = Template {
            scheme: scheme_of(text),
            ..Template::default()
        };
        if template.scheme == Scheme::Expanded {
            let (before, _) = text.split_once("://").unwrap_or_default();
            template.scheme_part = Some(Box::new(Template::parse(before)?));
        }
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                template.push_text(&rest[..open]);
            }
            let Some(close) = closing_brace(&rest[open..]) else {
                return Err(format!("`{text}`: a `{{` has no closing `}}`"));
            };
            let name = &rest[open + 1..open + close];
            template.pieces.push(Piece::parse(name, depth)?);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            template.push_text(rest);
        }
        Ok(template)
    }

    /// Literal text; its first `?` (the first of the template) starts the
    /// query.
    fn push_text(&mut self, text: &str) {
        match text.find('?').filter(|_| self.query_at.is_none()) {
            Some(at) => {
                if at > 0 {
                    self.pieces.push(Piece::Text(text[..at].to_owned()));
                }
                self.query_at = Some(self.pieces.len());
                self.pieces.push(Piece::Text(text[at..].to_owned()));
            }
            None => self.pieces.push(Piece::Text(text.to_owned())),
        }
    }

    /// Whether any value comes from the decoded path.
    fn has_decoded_values(&self) -> bool {
        self.pieces.iter().any(Piece::is_decoded)
    }

    /// Whether any piece, at any depth, is one `is` picks.
    fn any_piece(&self, is: &impl Fn(&Piece) -> bool) -> bool {
        self.pieces
            .iter()
            .any(|p| is(p) || p.inner().is_some_and(|inner| inner.any_piece(is)))
    }

    fn uses_condition_groups(&self) -> bool {
        self.any_piece(&|p| matches!(p, Piece::ConditionGroup(_)))
    }

    fn uses_rule_groups(&self) -> bool {
        self.any_piece(&|p| matches!(p, Piece::RuleGroup(_)))
    }

    /// Whether what the template gives is the configuration's own text:
    /// literal text, map values, and condition groups when the condition's
    /// input was (`groups_from_config`).
    fn is_from_config(&self, groups_from_config: bool) -> bool {
        self.pieces.iter().all(|p| match p {
            Piece::Text(_) | Piece::Map { .. } => true,
            Piece::ConditionGroup(_) => groups_from_config,
            _ => false,
        })
    }

    /// Finds the maps the template reads, by name.
    fn resolve_maps(&mut self, maps: &[RewriteMap]) -> Result<(), String> {
        for piece in &mut self.pieces {
            match piece {
                Piece::Map { name, index, key } => {
                    *index = maps
                        .iter()
                        .position(|m| m.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| {
                            format!("`{{{name}:…}}` names no function and no rewrite map in `rewrite.maps`")
                        })?;
                    key.resolve_maps(maps)?;
                }
                Piece::Function(_, inner) => inner.resolve_maps(maps)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Where a template's scheme comes from.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Scheme {
    /// None: the template is a path on this site.
    #[default]
    None,
    /// Literal text (`https://…`).
    Literal,
    /// Server variables or condition groups (`{C:1}://…`,
    /// `{HTTP_X_FORWARDED_PROTO}://…`): the expanded value must be `http`
    /// or `https`, so a header cannot pick another host's form.
    Expanded,
}

/// The scheme of a template's `text`: its part before the first `://` (if
/// that comes before any `?`) is a literal scheme, or references only
/// (server variables and condition groups, never a back-reference from the
/// path).
fn scheme_of(text: &str) -> Scheme {
    let Some((before, _)) = text.split_once("://") else {
        return Scheme::None;
    };
    if before.contains('?') {
        return Scheme::None;
    }
    let literal = before.starts_with(|c: char| c.is_ascii_alphabetic())
        && before
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if literal {
        return Scheme::Literal;
    }
    let references_only = !before.is_empty()
        && before.split_inclusive('}').all(|part| {
            part.strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .is_some_and(|name| {
                    let group = name
                        .strip_prefix("C:")
                        .is_some_and(|n| n.parse::<u8>().is_ok());
                    let variable = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !name.eq_ignore_ascii_case("URL")
                        && !name.eq_ignore_ascii_case("REQUEST_FILENAME");
                    group || variable
                })
        });
    if references_only {
        Scheme::Expanded
    } else {
        Scheme::None
    }
}

fn compile(pattern: &str, ignore_case: bool, syntax: PatternSyntax) -> Result<Regex, String> {
    let expression = match syntax {
        PatternSyntax::ECMAScript => pattern.to_owned(),
        PatternSyntax::Wildcard => {
            let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
            // `*` is any characters, line breaks (a decoded `%0a`) too.
            format!("(?s)^{}$", parts.join("(.*)"))
        }
        PatternSyntax::ExactMatch => format!("^{}$", regex::escape(pattern)),
    };
    RegexBuilder::new(&expression)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.name;
        let in_rule = |e: String| format!("rule `{name}`: {e}");
        let syntax = raw.pattern_syntax;
        let pattern = compile(&raw.pattern, raw.ignore_case, syntax).map_err(in_rule)?;
        let mut conditions = Vec::with_capacity(raw.conditions.len());
        for c in raw.conditions {
            let test = match (c.match_type, c.pattern) {
                (MatchType::Pattern, Some(p)) => {
                    Test::Pattern(compile(&p, c.ignore_case, syntax).map_err(in_rule)?)
                }
                (MatchType::Pattern, None) => {
                    return Err(in_rule(format!(
                        "the condition on `{}` has match_type Pattern but no pattern",
                        c.input
                    )))
                }
                (MatchType::IsFile, None) => Test::IsFile,
                (MatchType::IsDirectory, None) => Test::IsDirectory,
                (kind, Some(_)) => {
                    return Err(in_rule(format!(
                        "the condition on `{}` has match_type {kind:?}, which takes no pattern",
                        c.input
                    )))
                }
            };
            let input = Template::parse(&c.input).map_err(in_rule)?;
            conditions.push(Condition {
                decoded: input.has_decoded_values(),
                input,
                test,
                negate: c.negate,
            });
        }
        let a = raw.action;
        let url = |kind: &str| -> Result<Template, String> {
            let url = a
                .url
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| in_rule(format!("a {kind} action needs a `url`")))?;
            Template::parse(url).map_err(in_rule)
        };
        let action = match a.kind {
            ActionKind::Rewrite => {
                let target = a.url.as_deref().unwrap_or("");
                // `http[s]://host[:port]/path`: the server is literal text,
                // so no request can choose where it is sent.
                let scheme_length = ["http://", "https://"]
                    .into_iter()
                    .find(|scheme| target.starts_with(scheme))
                    .map(str::len);
                let (server, path) = match scheme_length {
                    Some(at) => {
                        let rest = &target[at..];
                        let end = rest.find(['/', '?']).unwrap_or(rest.len());
                        let server = &target[..at + end];
                        if server.contains(['{', '}']) {
                            return Err(in_rule(format!(
                                "`{target}`: the server of a Rewrite to another server is written out, not made of {{…}} values"
                            )));
                        }
                        crate::reverse_proxy::check_server(server).map_err(in_rule)?;
                        let path = &rest[end..];
                        (
                            Some(server.to_owned()),
                            if path.is_empty() { "/" } else { path },
                        )
                    }
                    None if scheme_of(target) != Scheme::None || target.starts_with("//") => {
                        return Err(in_rule(format!(
                            "`{target}`: a Rewrite to another server is to `http://host[:port]/…` or `https://host[:port]/…`"
                        )));
                    }
                    None => (None, target),
                };
                let url = if server.is_some() {
                    Template::parse(path).map_err(in_rule)?
                } else {
                    url("Rewrite")?
                };
                Action::Rewrite {
                    url,
                    append_query: a.append_query_string,
                    server,
                }
            }
            ActionKind::Redirect if a.url.as_deref().is_some_and(|u| u.starts_with("//")) => {
                return Err(in_rule(format!(
                    "`{}`: write the scheme (`https://…`); a protocol-relative url is not taken",
                    a.url.as_deref().unwrap_or("")
                )))
            }
            ActionKind::Redirect => Action::Redirect {
                url: url("Redirect")?,
                append_query: a.append_query_string,
                status: a.redirect_type.status(),
            },
            ActionKind::CustomResponse => {
                let code = a.status_code.ok_or_else(|| {
                    in_rule("a CustomResponse action needs a `status_code`".into())
                })?;
                let status = StatusCode::from_u16(code)
                    .ok()
                    .filter(|s| (200..=599).contains(&s.as_u16()))
                    .ok_or_else(|| in_rule(format!("status_code {code} is not 200 to 599")))?;
                // A reason phrase is text on the status line (RFC 9112
                // §4): a line break would end it.
                if a.status_reason
                    .as_deref()
                    .is_some_and(|r| r.chars().any(|c| c.is_control() && c != '\t'))
                {
                    return Err(in_rule(
                        "status_reason cannot hold line breaks or other control characters".into(),
                    ));
                }
                Action::CustomResponse {
                    status,
                    substatus: a.sub_status_code,
                    reason: a.status_reason,
                    description: a.status_description,
                }
            }
            ActionKind::AbortRequest => Action::AbortRequest,
            ActionKind::None => Action::None,
        };
        let server_variables = raw
            .server_variables
            .into_iter()
            .map(SetVariable::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_rule)?;
        let uses_groups = conditions.iter().any(|c| c.input.uses_rule_groups())
            || server_variables.iter().any(|v| v.value.uses_rule_groups())
            || match &action {
                Action::Rewrite { url, .. } | Action::Redirect { url, .. } => {
                    url.uses_rule_groups()
                }
                _ => false,
            };
        Ok(Rule {
            server_variables,
            uses_groups,
            pattern,
            negate: raw.negate,
            conditions,
            match_any: raw.logical_grouping == LogicalGrouping::MatchAny,
            action,
            stop_processing: raw.stop_processing,
            name,
        })
    }
}

impl Rule {
    /// Every template of the rule: its conditions' inputs, its server
    /// variables' values and its action's URL.
    fn templates_mut(&mut self) -> impl Iterator<Item = &mut Template> {
        let url = match &mut self.action {
            Action::Rewrite { url, .. } | Action::Redirect { url, .. } => Some(url),
            _ => None,
        };
        self.conditions
            .iter_mut()
            .map(|c| &mut c.input)
            .chain(self.server_variables.iter_mut().map(|v| &mut v.value))
            .chain(url)
    }
}

/// What a decoded value (`{R:n}`, `{URL}`) encodes in a URL path. `@`
/// too: right after a template's host (`https://example.com{R:1}`) a value
/// starting with `@` would turn that host into user information.
const PATH_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\\')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// What a decoded value encodes in a query: also what separates
/// parameters, so a value stays one value.
const QUERY_PART: &AsciiSet = &PATH_PART.add(b'&').add(b'=').add(b'+').add(b';');
/// What other values (server variables, already encoded) encode: only
/// what no URL may hold.
const ANY_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'\\')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a template's literal text encodes in a URL.
const LITERAL_PART: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// What a walk over the rules has to expand templates with.
struct Scope<'a> {
    rule: Option<Captures<'a>>,
    /// The last matching condition's groups.
    condition: Option<ConditionGroups>,
    /// The path as rewritten so far (with its leading `/`), decoded.
    url: &'a str,
    /// The section's rewrite maps.
    maps: &'a [RewriteMap],
}

/// The groups of the last condition pattern that matched.
struct ConditionGroups {
    groups: Vec<Option<String>>,
    /// They come from the decoded path.
    decoded: bool,
    /// They are the configuration's own text (map values).
    from_config: bool,
}

/// `{REQUEST_FILENAME}` for the walk's current URL, found once.
#[derive(Default)]
struct FileName {
    url: String,
    path: Option<String>,
}

impl FileName {
    fn of(&mut self, ctx: &mut HttpContext, url: &str) -> &str {
        if self.path.is_none() || self.url != url {
            self.url = url.to_owned();
            self.path = Some(
                physical_path(ctx, url)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        self.path.as_deref().unwrap_or("")
    }
}

/// Expands `template`; `in_url` encodes the values for a URL (as path or
/// query, by where they stand).
fn expand(
    ctx: &mut HttpContext,
    template: &Template,
    scope: &Scope<'_>,
    file: &mut FileName,
    in_url: bool,
) -> String {
    let mut out = String::new();
    for (i, piece) in template.pieces.iter().enumerate() {
        let in_query = template.query_at.is_some_and(|q| i >= q);
        let push = |out: &mut String, value: &str, decoded: bool| {
            if !in_url {
                out.push_str(value);
                return;
            }
            let set = match (decoded, in_query) {
                (true, false) => PATH_PART,
                (true, true) => QUERY_PART,
                // Server variables keep their own encoding, `?` included:
                // `https://{HTTP_HOST}{REQUEST_URI}` carries the query.
                (false, _) => ANY_PART,
            };
            out.extend(utf8_percent_encode(value, set));
        };
        match piece {
            // The rule's own text: only what no URL may hold is encoded
            // (spaces, non-ASCII), its `%` escapes kept.
            Piece::Text(text) if in_url => out.extend(utf8_percent_encode(text, LITERAL_PART)),
            Piece::Text(text) => out.push_str(text),
            Piece::RuleGroup(n) => {
                let value = scope
                    .rule
                    .as_ref()
                    .and_then(|c| c.get(*n))
                    .map_or("", |m| m.as_str());
                push(&mut out, value, true);
            }
            Piece::ConditionGroup(n) => {
                let (value, decoded) = scope
                    .condition
                    .as_ref()
                    .map(|c| {
                        (
                            c.groups.get(*n).cloned().flatten().unwrap_or_default(),
                            c.decoded,
                        )
                    })
                    .unwrap_or_default();
                push(&mut out, &value, decoded);
            }
            Piece::Function(function, inner) => {
                let value = function.apply(expand(ctx, inner, scope, file, false));
                push(&mut out, &value, piece.is_decoded());
            }
            Piece::Map { index, key, .. } => {
                let key = expand(ctx, key, scope, file, false);
                let value = scope.maps[*index].lookup(&key);
                push(&mut out, value, false);
            }
            Piece::Variable(name) => match name.as_str() {
                "URL" => push(&mut out, scope.url, true),
                "REQUEST_FILENAME" => {
                    let path = file.of(ctx, scope.url).to_owned();
                    push(&mut out, &path, true);
                }
                _ => {
                    let value = ctx
                        .server_variable(name)
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    push(&mut out, &value, false);
                }
            },
        }
    }
    out
}

/// The physical path of a URL path, unless it has a `..` segment.
fn physical_path(ctx: &mut HttpContext, url: &str) -> Option<std::path::PathBuf> {
    if url.split('/').any(|segment| segment == "..") {
        return None;
    }
    Some(ctx.map_path(url))
}

/// The module instance: one per request.
pub struct UrlRewrite {
    config: Section<RewriteConfig>,
}

/// What the walk decided.
enum Outcome {
    /// Go on, with this path and query (and the rule that made it, and
    /// the server to pass the request on to) when it changed.
    Continue(Option<(String, String, Option<String>)>),
    /// The rule answered: FinishRequest.
    Finished,
}

impl UrlRewrite {
    fn walk(&self, ctx: &mut HttpContext) -> Outcome {
        let rules = ctx.config_shared(self.config);
        if rules.rules.is_empty() {
            return Outcome::Continue(None);
        }
        let original_query = ctx.request().query_string().to_owned();
        let mut url = ctx.request().url().to_owned();
        let mut subject = url.trim_start_matches('/').to_owned();
        let mut query: Option<String> = None;
        let mut rewritten_by: Option<&str> = None;
        let mut proxy_to: Option<&str> = None;
        let mut file = FileName::default();
        for rule in &rules.rules {
            // Groups are taken only when a template uses them (a negated
            // pattern has none).
            let (matched, captures) = if rule.uses_groups && !rule.negate {
                let captures = rule.pattern.captures(&subject);
                (captures.is_some(), captures)
            } else {
                (rule.pattern.is_match(&subject), None)
            };
            if matched == rule.negate {
                continue;
            }
            let mut scope = Scope {
                rule: captures,
                condition: None,
                url: &url,
                maps: &rules.maps,
            };
            if !conditions_hold(ctx, rule, &mut scope, &mut file) {
                continue;
            }
            tracing::debug!(rule = %rule.name, url = %url, "UrlRewrite: rule matched");
            if let Err(why) = set_variables(ctx, rule, &scope, &mut file) {
                fail(ctx, &rule.name, &why);
                return Outcome::Finished;
            }
            match &rule.action {
                Action::Rewrite {
                    url: to,
                    append_query,
                    server,
                } => {
                    proxy_to = server.as_deref();
                    let target = expand(ctx, to, &scope, &mut file, true);
                    let (path, own_query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                        None => (target, None),
                    };
                    query = join_query(own_query, *append_query, &original_query);
                    // Relative paths are from the site's root.
                    url = format!("/{}", decoded(path.trim_start_matches('/')));
                    subject = url.trim_start_matches('/').to_owned();
                    rewritten_by = Some(&rule.name);
                }
                Action::Redirect {
                    url: to,
                    append_query,
                    status,
                } => {
                    let mut target = expand(ctx, to, &scope, &mut file, true);
                    if let Some(part) = &to.scheme_part {
                        // What the scheme's references give, on its own:
                        // exactly `http` or `https`, so the target's first
                        // `://` is the template's.
                        let scheme = expand(ctx, part, &scope, &mut file, false);
                        if !scheme.eq_ignore_ascii_case("http")
                            && !scheme.eq_ignore_ascii_case("https")
                        {
                            fail(
                                ctx,
                                &rule.name,
                                &format!("the redirect's scheme `{scheme}` is not http or https"),
                            );
                            return Outcome::Finished;
                        }
                    }
                    let from_config =
                        to.is_from_config(scope.condition.as_ref().is_some_and(|c| c.from_config));
                    if to.scheme == Scheme::None && !(from_config && has_scheme(&target)) {
                        // A path on this site: one leading slash, whatever
                        // the values were (`a/b`, `https:evil`, `//evil`).
                        // Only the configuration's own text (a rewrite
                        // map's value) may name another site.
                        target = format!("/{}", target.trim_start_matches('/'));
                    }
                    if *append_query && !original_query.is_empty() {
                        // Before the template's `#fragment`, if it has one
                        // (RFC 3986 §3: the query comes first); values
                        // cannot bring a `#`, they encode it.
                        let fragment = target.find('#').map(|at| target.split_off(at));
                        if !target.ends_with('?') {
                            target.push(if target.contains('?') { '&' } else { '?' });
                        }
                        target.push_str(&original_query);
                        target.push_str(fragment.as_deref().unwrap_or(""));
                    }
                    if ctx.response_mut().redirect(&target, *status).is_err() {
                        fail(
                            ctx,
                            &rule.name,
                            &format!("`{target}` is not a valid Location"),
                        );
                    }
                    return Outcome::Finished;
                }
                Action::CustomResponse {
                    status,
                    substatus,
                    reason,
                    description,
                } => {
                    let resp = ctx.response_mut();
                    resp.clear();
                    let reason = reason
                        .clone()
                        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
                    resp.set_error_status(*status, reason, *substatus, 0);
                    if let Some(text) = description {
                        resp.set_error_description(text.clone());
                    }
                    return Outcome::Finished;
                }
                Action::AbortRequest => {
                    ctx.response_mut().reset_connection();
                    return Outcome::Finished;
                }
                Action::None => {}
            }
            if rule.stop_processing {
                break;
            }
        }
        let Some(rule) = rewritten_by else {
            return Outcome::Continue(None);
        };
        // The decoded path encoded again (`/` stays).
        let mut target: String = utf8_percent_encode(&url, PATH_PART).collect();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(&q);
        }
        Outcome::Continue(Some((target, rule.to_owned(), proxy_to.map(str::to_owned))))
    }
}

/// Whether `url` starts with a scheme and `://`.
fn has_scheme(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// Sets the server variables and request headers of a rule that applies
/// (IIS's `serverVariables`), before its action. An `HTTP_*` variable is
/// the request header: an empty value removes it.
fn set_variables(
    ctx: &mut HttpContext,
    rule: &Rule,
    scope: &Scope<'_>,
    file: &mut FileName,
) -> Result<(), String> {
    for variable in &rule.server_variables {
        let value = expand(ctx, &variable.value, scope, file, false);
        if value.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "the value for server variable {} holds a line break or NUL",
                variable.name
            ));
        }
        match &variable.header {
            Some(header) => {
                if !variable.replace && ctx.request().header(header).is_some() {
                    continue;
                }
                if value.is_empty() {
                    ctx.request_mut().delete_header(header);
                    continue;
                }
                let value = HeaderValue::try_from(value).map_err(|_| {
                    format!(
                        "the value for server variable {} is no header value",
                        variable.name
                    )
                })?;
                ctx.request_mut().set_header(header.clone(), value);
            }
            None => {
                if !variable.replace
                    && ctx
                        .server_variable(&variable.name)
                        .is_some_and(|v| !v.is_empty())
                {
                    continue;
                }
                ctx.set_server_variable(&variable.name, value);
            }
        }
    }
    Ok(())
}

/// A rule's result could not be used: 500.50 (IIS's URL Rewrite error),
/// logged and described.
fn fail(ctx: &mut HttpContext, rule: &str, why: &str) {
    tracing::warn!(rule, url = %ctx.request().raw_url(), "UrlRewrite: {why}");
    crate::end_with_error(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        50,
        ModuleError::E_FAIL,
    );
    ctx.response_mut()
        .set_error_description(format!("URL Rewrite rule `{rule}`: {why}"));
}

/// The decoded form of a rewritten path, for the next rules to match.
fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query a Rewrite leaves: its own, and the request's appended when
/// asked for.
fn join_query(own: Option<String>, append: bool, original: &str) -> Option<String> {
    match (own, append && !original.is_empty()) {
        (Some(own), true) if !own.is_empty() => Some(format!("{own}&{original}")),
        (Some(_), true) | (None, true) => Some(original.to_owned()),
        (own, false) => own,
    }
}

/// Whether the rule's conditions hold; the last matching pattern's groups
/// go into `scope`.
fn conditions_hold(
    ctx: &mut HttpContext,
    rule: &Rule,
    scope: &mut Scope<'_>,
    file: &mut FileName,
) -> bool {
    if rule.conditions.is_empty() {
        return true;
    }
    for condition in &rule.conditions {
        let input = expand(ctx, &condition.input, scope, file, false);
        // Groups of `{C:n}` from a decoded condition stay decoded.
        let decoded = condition.decoded
            || (condition.input.uses_condition_groups()
                && scope.condition.as_ref().is_some_and(|c| c.decoded));
        let from_config = condition
            .input
            .is_from_config(scope.condition.as_ref().is_some_and(|c| c.from_config));
        let matched = match &condition.test {
            Test::Pattern(regex) => match regex.captures(&input) {
                Some(groups) => {
                    if !condition.negate {
                        scope.condition = Some(ConditionGroups {
                            groups: groups
                                .iter()
                                .map(|g| g.map(|m| m.as_str().to_owned()))
                                .collect(),
                            decoded,
                            from_config,
                        });
                    }
                    true
                }
                None => false,
            },
            Test::IsFile => std::fs::metadata(&input).is_ok_and(|m| m.is_file()),
            Test::IsDirectory => std::fs::metadata(&input).is_ok_and(|m| m.is_dir()),
        };
        let holds = matched != condition.negate;
        if rule.match_any && holds {
            return true;
        }
        if !rule.match_any && !holds {
            return false;
        }
    }
    !rule.match_any
}

impl HttpModule for UrlRewrite {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        if ctx.child_depth() > 0 {
            return RequestNotificationStatus::Continue;
        }
        match self.walk(ctx) {
            Outcome::Finished => RequestNotificationStatus::FinishRequest,
            Outcome::Continue(None) => RequestNotificationStatus::Continue,
            Outcome::Continue(Some((target, rule, server))) => {
                if let Err(e) = ctx.request_mut().set_url(&target) {
                    fail(ctx, &rule, &format!("`{target}` is not a usable URL: {e}"));
                    return RequestNotificationStatus::FinishRequest;
                }
                if let Some(server) = server {
                    ctx.set_server_variable(crate::reverse_proxy::PROXY_SERVER, server);
                }
                RequestNotificationStatus::Continue
            }
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<RewriteConfig>("rewrite")?;
    registration.set_request_notifications(
        move || UrlRewrite { config },
        RequestNotification::BeginRequest.into(),
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::High);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_url_is_absolute_only_with_a_scheme() {
        assert_eq!(
            scheme_of("https://{HTTP_HOST}{REQUEST_URI}"),
            Scheme::Literal
        );
        assert_eq!(
            scheme_of("{HTTP_X_FORWARDED_PROTO}://{HTTP_HOST}/x"),
            Scheme::Expanded
        );
        assert_eq!(scheme_of("{C:1}://www.example.com/{R:1}"), Scheme::Expanded);
        assert_eq!(scheme_of("{R:1}"), Scheme::None);
        assert_eq!(scheme_of("{R:1}://evil.test/"), Scheme::None);
        assert_eq!(scheme_of("{URL}://evil.test/"), Scheme::None);
        assert_eq!(scheme_of("/go/{R:1}"), Scheme::None);
        assert_eq!(
            scheme_of("/index.cgi?next=https://example.com/"),
            Scheme::None
        );
        assert_eq!(scheme_of("a b://x"), Scheme::None);
    }

    #[test]
    fn a_template_knows_where_its_query_starts() {
        let t = Template::parse("index.php?route={R:1}&x=1").unwrap();
        assert_eq!(t.query_at, Some(1));
        assert!(matches!(&t.pieces[1], Piece::Text(q) if q == "?route="));
        assert!(matches!(t.pieces[2], Piece::RuleGroup(1)));
        let t = Template::parse("/new/{R:1}").unwrap();
        assert_eq!(t.query_at, None);
        assert!(Template::parse("{R:10}").is_err());
        assert!(Template::parse("{R:1").is_err());
    }

    #[test]
    fn functions_and_maps_nest_in_templates() {
        let t = Template::parse("/{ToLower:{R:1}}/{Legacy:{UrlDecode:{QUERY_STRING}}}").unwrap();
        assert!(
            matches!(&t.pieces[1], Piece::Function(Function::ToLower, inner)
            if matches!(inner.pieces[..], [Piece::RuleGroup(1)]))
        );
        assert!(matches!(&t.pieces[3], Piece::Map { name, key, .. }
            if name == "Legacy" && matches!(key.pieces[..], [Piece::Function(Function::UrlDecode, _)])));
        assert!(t.uses_rule_groups());
        // A lower-cased capture is still decoded; a map's value is the
        // configuration's text.
        assert!(t.pieces[1].is_decoded());
        assert!(!t.pieces[3].is_decoded());
        assert!(Template::parse("{ToLower:}").is_err());
        assert!(Template::parse("{r:x}").is_err());
        assert!(Template::parse("{To Lower:{URL}}").is_err());
        let deep = format!("{}{{URL}}{}", "{ToLower:".repeat(9), "}".repeat(9));
        assert!(Template::parse(&deep).is_err());
        let ok = format!("{}{{URL}}{}", "{ToLower:".repeat(8), "}".repeat(8));
        assert!(Template::parse(&ok).is_ok());
    }

    #[test]
    fn functions_work_as_iis_documents_them() {
        let value = || "A b&c=d/é~*".to_owned();
        assert_eq!(Function::ToLower.apply(value()), "a b&c=d/é~*");
        assert_eq!(
            Function::UrlEncode.apply(value()),
            "A+b%26c%3Dd%2F%C3%A9%7E*"
        );
        assert_eq!(
            Function::EscapeDataString.apply(value()),
            "A%20b%26c%3Dd%2F%C3%A9~%2A"
        );
        assert_eq!(Function::UrlDecode.apply("a+b%26c%C3%A9".into()), "a b&cé");
    }

    #[test]
    fn wildcard_and_exact_patterns_match_the_whole_path() {
        let wild = compile("wild/*/file-*.txt", true, PatternSyntax::Wildcard).unwrap();
        let groups = wild.captures("wild/x/y/file-9.TXT").unwrap();
        assert_eq!((&groups[1], &groups[2]), ("x/y", "9"));
        assert!(!wild.is_match("wild/x/file-9.txtz"));
        assert!(!wild.is_match("a/wild/x/file-9.txt"));
        let exact = compile("a.b(c)", false, PatternSyntax::ExactMatch).unwrap();
        assert!(exact.is_match("a.b(c)"));
        assert!(!exact.is_match("axb(c)") && !exact.is_match("A.b(c)"));
    }
}
