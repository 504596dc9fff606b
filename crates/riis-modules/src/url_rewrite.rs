//! `UrlRewrite`: IIS URL Rewrite's inbound rules. Each rule matches the
//! URL path against a regular expression, checks its conditions (server
//! variables against patterns, whether a path is a file or a folder), and
//! acts: rewrites the URL for the rest of the pipeline, redirects, answers
//! with a status of its own, or aborts the connection.
//!
//! Registers for **BeginRequest** at **First** priority: the URL may change
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
//! Templates (a condition's `input`, an action's `url`) may hold `{R:n}`
//! (the rule pattern's group n; 0 is the whole match), `{C:n}` (the group
//! of the last condition pattern that matched), and `{NAME}` for a server
//! variable (`{HTTP_HOST}`, `{QUERY_STRING}`, `{HTTPS}`, …). `{URL}` is
//! the path as rewritten so far and `{REQUEST_FILENAME}` its physical
//! path; a variable the request does not have is empty. `{R:n}` is
//! percent-encoded in a URL (it comes from the decoded path); the others
//! are used as they are, with spaces and control characters encoded.
//!
//! When a rule rewrites the URL, the server variable `REQUEST_URI` keeps
//! the URL the client asked for, as Apache and nginx pass it to
//! applications (FastCgi, Cgi): a front controller (`index.php`) reads the
//! route from it.
//!
//! Configuration section `rewrite`, per location: `rules`, a list of
//! tables with `name`, `pattern`, `ignore_case` (default true), `negate`
//! (default false), `conditions` (`input`, `pattern`, `match_type` =
//! `Pattern`, `IsFile` or `IsDirectory`, `ignore_case`, `negate`),
//! `logical_grouping` (`MatchAll`, the default, or `MatchAny`),
//! `stop_processing` (default false) and `action` (`type` = `Rewrite`,
//! `Redirect`, `CustomResponse`, `AbortRequest` or `None`; `url`,
//! `append_query_string` (default true), `redirect_type` (`Permanent`, the
//! default, `Found`, `SeeOther`, `Temporary`), `status_code`,
//! `sub_status_code`, `status_reason`, `status_description`). Patterns are
//! Rust regular expressions (IIS's are ECMAScript: look-around and
//! back-references within a pattern are not available); a pattern that does
//! not compile is a configuration error naming file, line and key.
//!
//! Not done: outbound rules, rewrite maps, `{ToLower:…}` and the other
//! template functions, wildcard patterns, and rewriting to another server
//! (which needs a proxy: a Rewrite `url` with a scheme is a configuration
//! error; use a Redirect).

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use regex::{Captures, Regex, RegexBuilder};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority, RequestNotification,
    RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

/// The `rewrite` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewriteConfig {
    /// The inbound rules, in order.
    pub rules: Vec<Rule>,
}

/// One rule, compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    name: String,
    pattern: Regex,
    negate: bool,
    conditions: Vec<Condition>,
    match_any: bool,
    action: Action,
    stop_processing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    pattern: String,
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
    action: RawAction,
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
    /// A new path (and query) for the request.
    Rewrite { url: Template, append_query: bool },
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
struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Text(String),
    /// `{R:n}`.
    RuleGroup(usize),
    /// `{C:n}`.
    ConditionGroup(usize),
    /// `{NAME}`.
    Variable(String),
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}`: a `{{` has no closing `}}`"));
            };
            let name = &rest[open + 1..open + close];
            let group = |prefix: &str| {
                name.strip_prefix(prefix)
                    .map(|n| n.parse::<usize>().ok().filter(|&n| n <= 9))
            };
            pieces.push(match (group("R:"), group("C:")) {
                (Some(Some(n)), _) => Piece::RuleGroup(n),
                (_, Some(Some(n))) => Piece::ConditionGroup(n),
                (Some(None), _) | (_, Some(None)) => {
                    return Err(format!("`{{{name}}}`: back-references are {{R:0}} to {{R:9}} and {{C:0}} to {{C:9}}"))
                }
                _ if !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    Piece::Variable(name.to_ascii_uppercase())
                }
                _ => {
                    return Err(format!(
                        "`{{{name}}}` is neither a back-reference nor a server variable name (template functions such as {{ToLower:…}} are not available)"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }
}

fn compile(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.name;
        let in_rule = |e: String| format!("rule `{name}`: {e}");
        let pattern = compile(&raw.pattern, raw.ignore_case).map_err(in_rule)?;
        let mut conditions = Vec::with_capacity(raw.conditions.len());
        for c in raw.conditions {
            let test = match (c.match_type, c.pattern) {
                (MatchType::Pattern, Some(p)) => {
                    Test::Pattern(compile(&p, c.ignore_case).map_err(in_rule)?)
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
            conditions.push(Condition {
                input: Template::parse(&c.input).map_err(in_rule)?,
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
                if target.contains("://") {
                    return Err(in_rule(format!(
                        "`{target}`: a Rewrite to another server needs a proxy, which riis does not have (use a Redirect)"
                    )));
                }
                Action::Rewrite {
                    url: url("Rewrite")?,
                    append_query: a.append_query_string,
                }
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
        Ok(Rule {
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

/// What `{R:n}` encodes in a URL path: it comes from the decoded path.
const PATH_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// What other values encode: only what no URL may hold.
const ANY_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a walk over the rules has to expand templates with.
struct Scope<'a> {
    rule: Option<Captures<'a>>,
    condition: Option<Vec<Option<String>>>,
    /// The path as rewritten so far (with its leading `/`).
    url: &'a str,
}

/// Expands `template`; `in_url` encodes the values for a URL.
fn expand(ctx: &mut HttpContext, template: &Template, scope: &Scope<'_>, in_url: bool) -> String {
    let mut out = String::new();
    for piece in &template.0 {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::RuleGroup(n) => {
                let value = scope
                    .rule
                    .as_ref()
                    .and_then(|c| c.get(*n))
                    .map_or("", |m| m.as_str());
                if in_url {
                    out.extend(utf8_percent_encode(value, PATH_PART));
                } else {
                    out.push_str(value);
                }
            }
            Piece::ConditionGroup(n) => {
                let value = scope
                    .condition
                    .as_ref()
                    .and_then(|c| c.get(*n).cloned().flatten())
                    .unwrap_or_default();
                push_value(&mut out, &value, in_url);
            }
            Piece::Variable(name) => {
                let value: Cow<'_, str> = match name.as_str() {
                    "URL" => Cow::Borrowed(scope.url),
                    "REQUEST_FILENAME" => Cow::Owned(
                        physical_path(ctx, scope.url)
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Cow::Owned(
                        ctx.server_variable(name)
                            .map(|v| v.into_owned())
                            .unwrap_or_default(),
                    ),
                };
                push_value(&mut out, &value, in_url);
            }
        }
    }
    out
}

fn push_value(out: &mut String, value: &str, in_url: bool) {
    if in_url {
        out.extend(utf8_percent_encode(value, ANY_PART));
    } else {
        out.push_str(value);
    }
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
    /// Go on, with this path and query when it changed.
    Continue(Option<String>),
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
        let mut query: Option<String> = None;
        let mut changed = false;
        for rule in &rules.rules {
            let subject = url.trim_start_matches('/').to_owned();
            let captures = rule.pattern.captures(&subject);
            if captures.is_some() == rule.negate {
                continue;
            }
            let mut scope = Scope {
                rule: captures,
                condition: None,
                url: &url,
            };
            if !conditions_hold(ctx, rule, &mut scope) {
                continue;
            }
            tracing::debug!(rule = %rule.name, url = %url, "UrlRewrite: rule matched");
            match &rule.action {
                Action::Rewrite {
                    url: to,
                    append_query,
                } => {
                    let target = expand(ctx, to, &scope, true);
                    let (path, own_query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                        None => (target, None),
                    };
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        format!("/{path}")
                    };
                    query = join_query(own_query, *append_query, &original_query);
                    url = decoded(&path);
                    changed = true;
                }
                Action::Redirect {
                    url: to,
                    append_query,
                    status,
                } => {
                    let mut target = expand(ctx, to, &scope, true);
                    if *append_query && !original_query.is_empty() {
                        target.push(if target.contains('?') { '&' } else { '?' });
                        target.push_str(&original_query);
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
        if !changed {
            return Outcome::Continue(None);
        }
        // The decoded path encoded again (`/` stays).
        let mut target: String = utf8_percent_encode(&url, PATH_PART).collect();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(&q);
        }
        Outcome::Continue(Some(target))
    }
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
        (Some(own), _) => Some(own),
        (None, true) => Some(original.to_owned()),
        (None, false) => None,
    }
}

/// Whether the rule's conditions hold; the last matching pattern's groups
/// go into `scope`.
fn conditions_hold(ctx: &mut HttpContext, rule: &Rule, scope: &mut Scope<'_>) -> bool {
    if rule.conditions.is_empty() {
        return true;
    }
    for condition in &rule.conditions {
        let input = expand(ctx, &condition.input, scope, false);
        let matched = match &condition.test {
            Test::Pattern(regex) => match regex.captures(&input) {
                Some(groups) => {
                    if !condition.negate {
                        scope.condition = Some(
                            groups
                                .iter()
                                .map(|g| g.map(|m| m.as_str().to_owned()))
                                .collect(),
                        );
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
            Outcome::Continue(Some(target)) => {
                let original = ctx.request().raw_url().to_owned();
                if let Err(e) = ctx.request_mut().set_url(&target) {
                    fail(
                        ctx,
                        "(rewrite)",
                        &format!("`{target}` is not a usable URL: {e}"),
                    );
                    return RequestNotificationStatus::FinishRequest;
                }
                // Applications read the URL the client asked for here.
                ctx.set_server_variable("REQUEST_URI", original);
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
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::First);
    Ok(())
}
