//! Outbound rules: IIS URL Rewrite's rules over the response. A rule
//! matches a response header (`server_variable = "RESPONSE_Location"`),
//! the attributes of HTML elements (`filter_by_tags`, `custom_tags`), or,
//! with neither, the whole body of a text response, and rewrites what it
//! matched; a named precondition (the response's `Content-Type`, the
//! request's variables) says which responses a rule applies to at all.
//!
//! A rule over the whole body (IIS's rule without tags) replaces every
//! match of its pattern in the body. The body is held until its end, up to
//! [`WHOLE_BODY_MEMORY`], since a match may span any two sends; a longer
//! one goes out as it is, logged. Only text (`text/*`, JSON, JavaScript,
//! XML) in UTF-8 and not encoded is rewritten, so that no pattern can
//! corrupt an image or a download.
//!
//! Header rules run once, on the send that carries the headers. Attribute
//! rules run over the body as it is sent, through lol_html's streaming HTML
//! rewriter: what a send brings is rewritten and goes out with that send,
//! except the unfinished tag at its end, which goes with the next. A large
//! body (a big HTML file, a proxied page) is taken 64 KiB per send, the rest
//! deferred to later sends, so that it is rewritten as the client takes it
//! and never held whole for a slow one. Their
//! templates read server variables taken when the headers were sent, since
//! the rewriter runs away from the request's context.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lol_html::send::{ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, OutputSink, Selector};
use riis_pipeline::http::header::{self, HeaderName, HeaderValue};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{EntityChunk, HttpContext};
use serde::Deserialize;

use super::pattern::{GaveUp, Pattern, BACKTRACK_LIMIT, BODY_BACKTRACK_LIMIT};
use super::rule::{
    compile_conditions, compile_with_limit, conditions_hold, yes, Condition, LogicalGrouping,
    PatternSyntax, RawCondition,
};
use super::template::{
    expand, variable_of, FileName, Piece, RequestVariables, Scope, Template, Variables,
};
use super::RewriteConfig;

/// The elements and attributes IIS's `filterByTags` names, by tag.
const IIS_TAGS: [(&str, &[&str]); 11] = [
    ("a", &["href"]),
    ("area", &["href"]),
    ("base", &["href"]),
    ("form", &["action"]),
    ("frame", &["src", "longdesc"]),
    ("head", &["profile"]),
    ("iframe", &["src", "longdesc"]),
    ("img", &["src", "longdesc", "usemap"]),
    ("input", &["src", "usemap"]),
    ("link", &["href"]),
    ("script", &["src"]),
];

/// How much memory the HTML rewriter of one response may hold (an
/// unfinished tag that goes on and on): past it the response is cut short.
const REWRITER_MEMORY: usize = 4 * 1024 * 1024;

/// An outbound rule, compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawOutboundRule")]
pub struct OutboundRule {
    pub(super) name: String,
    /// The precondition's name, and its index in the section's list (set
    /// once the section's preconditions are known).
    pub(super) precondition: Option<(String, usize)>,
    target: Target,
    pattern: Pattern,
    negate: bool,
    pub(super) conditions: Vec<Condition>,
    match_any: bool,
    /// The new value (`Rewrite`), or none (`None`: the rule only matches,
    /// to stop the rules after it).
    pub(super) value: Option<Template>,
    stop_processing: bool,
    /// IIS's `enabled`: a rule switched off is checked, then left out.
    pub(super) enabled: bool,
}

/// How much of a body the rules over the whole body hold: a longer body
/// is sent as it is (nginx's `sub_filter` streams instead, but matches only
/// fixed strings; these are patterns, which a match may stretch across any
/// two sends).
pub(super) const WHOLE_BODY_MEMORY: usize = 8 * 1024 * 1024;

/// What all the bodies held for such rules may take together: past it, a
/// body goes out as it is, so that clients that do not read cannot make
/// each of their requests hold 8 MiB.
const WHOLE_BODIES_BUDGET: u64 = 128 * 1024 * 1024;

/// The bytes of [`WHOLE_BODIES_BUDGET`] held now.
static WHOLE_BODIES_HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The longest a rule's rewritten body may grow: a value made of request
/// variables (a long `Host`) times many matches must not make gigabytes.
const WHOLE_BODY_OUTPUT: usize = 2 * WHOLE_BODY_MEMORY;

/// How long the rules over one body may take, all together, on the worker
/// thread (a response's send cannot wait): a pattern whose searches from
/// each match on cost the square of the body (`a*b|a`) is stopped there.
const WHOLE_BODY_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// What an outbound rule matches.
#[derive(Debug)]
enum Target {
    /// A response header.
    Header(HeaderName),
    /// A request header (`HTTP_ACCEPT_ENCODING`), for the modules that
    /// read the request while the response goes out: IIS's recipe that
    /// gives DynamicCompression back the `Accept-Encoding` an inbound rule
    /// kept from a backend.
    RequestHeader(HeaderName),
    /// Attributes of HTML elements, as lol_html selectors
    /// (`a[href]`) with the tag and attribute names.
    Attributes(Vec<Attribute>),
    /// The whole body of a text response: every match is replaced.
    Body,
}

/// One attribute of one element, its selector parsed once.
#[derive(Debug, Clone)]
struct Attribute {
    tag: String,
    name: String,
    selector: Selector,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutboundRule {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    precondition: Option<String>,
    #[serde(default)]
    server_variable: Option<String>,
    #[serde(default)]
    filter_by_tags: Vec<String>,
    #[serde(default)]
    custom_tags: Vec<RawCustomTag>,
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
    action: RawOutboundAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomTag {
    tag: String,
    attribute: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutboundAction {
    #[serde(rename = "type")]
    kind: OutboundActionKind,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
enum OutboundActionKind {
    Rewrite,
    None,
}

/// Whether `name` can be a tag's or an attribute's name in a selector.
fn is_markup_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn attribute(tag: &str, name: &str) -> Result<Attribute, String> {
    if !is_markup_name(tag) || !is_markup_name(name) {
        return Err(format!(
            "custom tag `{tag}` with attribute `{name}`: names are letters, digits, `-` and `_`"
        ));
    }
    let (tag, name) = (tag.to_ascii_lowercase(), name.to_ascii_lowercase());
    let selector = format!("{tag}[{name}]")
        .parse()
        .map_err(|e| format!("`{tag}[{name}]` is no selector: {e}"))?;
    Ok(Attribute {
        tag,
        name,
        selector,
    })
}

impl TryFrom<RawOutboundRule> for OutboundRule {
    type Error = String;

    fn try_from(raw: RawOutboundRule) -> Result<Self, String> {
        let name = raw.name;
        let in_rule = |e: String| format!("outbound rule `{name}`: {e}");
        let has_tags = !raw.filter_by_tags.is_empty() || !raw.custom_tags.is_empty();
        let target = match (raw.server_variable, has_tags) {
            (Some(_), true) => {
                return Err(in_rule(
                    "a rule matches a `server_variable` or tags (`filter_by_tags`, `custom_tags`), not both".into(),
                ))
            }
            (None, false) if raw.negate => {
                return Err(in_rule(
                    "a rule over the whole body (no `server_variable`, no tags) replaces what its pattern matches, so it cannot be negated".into(),
                ))
            }
            (None, false) => Target::Body,
            (Some(variable), false) => {
                let prefixed = |prefix: &str| {
                    variable
                        .get(..prefix.len())
                        .filter(|p| p.eq_ignore_ascii_case(prefix))
                        .map(|_| &variable[prefix.len()..])
                };
                let (header, request) = match (prefixed("RESPONSE_"), prefixed("HTTP_")) {
                    (Some(header), _) => (header, false),
                    (None, Some(header)) => (header, true),
                    (None, None) => {
                        return Err(in_rule(format!(
                            "server_variable `{variable}`: outbound rules match response headers (`RESPONSE_<Name>`) or request headers (`HTTP_<NAME>`)"
                        )))
                    }
                };
                let header = header.to_ascii_lowercase().replace('_', "-");
                let header = HeaderName::try_from(header.as_str())
                    .map_err(|_| in_rule(format!("`{variable}` names no header")))?;
                if crate::protocol_support::HTTP_LAYER_HEADERS.contains(&header.as_str()) {
                    return Err(in_rule(format!(
                        "`{variable}` is the HTTP layer's (framing, connection or date) and cannot be rewritten"
                    )));
                }
                if request {
                    Target::RequestHeader(header)
                } else {
                    Target::Header(header)
                }
            }
            (None, true) => {
                let mut attributes = Vec::new();
                for tag in &raw.filter_by_tags {
                    let Some((tag, names)) = IIS_TAGS
                        .iter()
                        .find(|(known, _)| known.eq_ignore_ascii_case(tag))
                    else {
                        return Err(in_rule(format!(
                            "filter_by_tags: `{tag}` is none of A, Area, Base, Form, Frame, Head, IFrame, Img, Input, Link, Script (use custom_tags for others)"
                        )));
                    };
                    for name in names.iter() {
                        attributes.push(attribute(tag, name).map_err(in_rule)?);
                    }
                }
                for custom in &raw.custom_tags {
                    attributes.push(attribute(&custom.tag, &custom.attribute).map_err(in_rule)?);
                }
                Target::Attributes(attributes)
            }
        };
        // A body's one search may try every start position of it.
        let limit = match target {
            Target::Body => BODY_BACKTRACK_LIMIT,
            _ => BACKTRACK_LIMIT,
        };
        let syntax = raw.pattern_syntax;
        let pattern =
            compile_with_limit(&raw.pattern, raw.ignore_case, syntax, limit).map_err(in_rule)?;
        let conditions = compile_conditions(raw.conditions, syntax).map_err(in_rule)?;
        let value = match (raw.action.kind, raw.action.value) {
            (OutboundActionKind::Rewrite, Some(value)) => {
                Some(Template::parse(&value).map_err(in_rule)?)
            }
            (OutboundActionKind::Rewrite, None) => {
                return Err(in_rule(
                    "a Rewrite action needs a `value` (empty removes a header)".into(),
                ))
            }
            (OutboundActionKind::None, None) => None,
            (OutboundActionKind::None, Some(_)) => {
                return Err(in_rule("a None action takes no `value`".into()))
            }
        };
        Ok(OutboundRule {
            enabled: raw.enabled,
            precondition: raw.precondition.map(|p| (p, usize::MAX)),
            target,
            pattern,
            negate: raw.negate,
            conditions,
            match_any: raw.logical_grouping == LogicalGrouping::MatchAny,
            value,
            stop_processing: raw.stop_processing,
            name,
        })
    }
}

impl OutboundRule {
    /// Every template of the rule: its conditions' inputs and its value.
    pub(super) fn templates_mut(&mut self) -> impl Iterator<Item = &mut Template> {
        self.conditions
            .iter_mut()
            .map(|c| &mut c.input)
            .chain(self.value.as_mut())
    }

    /// Whether the rule rewrites bodies (attributes of HTML, or the whole
    /// body).
    pub(super) fn is_body_rule(&self) -> bool {
        matches!(self.target, Target::Attributes(_) | Target::Body)
    }

    /// Whether the rule rewrites the whole body of text responses.
    pub(super) fn is_whole_body_rule(&self) -> bool {
        matches!(self.target, Target::Body)
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        self.conditions
            .iter()
            .map(|c| &c.input)
            .chain(self.value.as_ref())
    }

    /// A match's outcome, or `None` when it gave up: the response is under
    /// way, so the rule does not apply to this value (logged, at most once
    /// a second: the value may be a client's).
    fn gave_up<T>(&self, outcome: Result<T, GaveUp>) -> Option<T> {
        static GATE: crate::LogGate = crate::LogGate::new();
        outcome
            .inspect_err(|why| {
                if let Some(held_back) = GATE.pass() {
                    tracing::warn!(rule = %self.name, held_back, "UrlRewrite: {why}; the outbound rule is not applied");
                }
            })
            .ok()
    }

    /// Applies the rule to one value (a header's, an attribute's): the new
    /// value when it rewrote it, and whether it applied at all.
    fn apply(
        &self,
        vars: &mut dyn Variables,
        value: &str,
        url: &str,
        config: &RewriteConfig,
    ) -> (Option<String>, bool) {
        // A negated pattern applies where it does not match, with no groups.
        let Some(captures) = self.gave_up(self.pattern.captures(value)) else {
            return (None, false);
        };
        if captures.is_some() == self.negate {
            return (None, false);
        }
        let mut scope = Scope {
            rule: captures,
            condition: None,
            url,
            maps: &config.maps,
        };
        let holds = conditions_hold(vars, &self.conditions, self.match_any, &mut scope);
        if self.gave_up(holds) != Some(true) {
            return (None, false);
        }
        let rewritten = self
            .value
            .as_ref()
            .map(|template| expand(vars, template, &scope, false));
        (rewritten, true)
    }

    /// Applies a rule over the whole body to `text`: every match is
    /// replaced by the rule's value, expanded with that match's groups, when
    /// the conditions hold for it. The new text when it changed, and whether
    /// the rule applied at all (a match gave up: not at all).
    fn replace_all(
        &self,
        vars: &mut dyn Variables,
        text: &str,
        url: &str,
        config: &RewriteConfig,
        deadline: std::time::Instant,
    ) -> (Option<String>, bool) {
        // Too long or too slow: the rule is not applied (logged, at most
        // once a second: the body may be a client's doing).
        static GATE: crate::LogGate = crate::LogGate::new();
        let give_up = |why: &str| {
            if let Some(held_back) = GATE.pass() {
                tracing::warn!(rule = %self.name, url, held_back, "UrlRewrite: {why}; the outbound rule is not applied to this body");
            }
            (None, false)
        };
        let mut rewritten = String::new();
        // `text[..copied]` is in `rewritten` already.
        let mut copied = 0;
        let mut from = 0;
        let mut applied = false;
        while from <= text.len() {
            let Some(found) = self.gave_up(self.pattern.captures_at(text, from)) else {
                return (None, false);
            };
            let Some(groups) = found else {
                break;
            };
            if std::time::Instant::now() > deadline {
                return give_up(&format!(
                    "the rules over this body took longer than {WHOLE_BODY_TIME:?}"
                ));
            }
            let span = groups.span();
            // Past the match; past one more character after an empty one.
            from = match text[span.end..].chars().next() {
                Some(c) if span.is_empty() => span.end + c.len_utf8(),
                None if span.is_empty() => text.len() + 1,
                _ => span.end,
            };
            let mut scope = Scope {
                rule: Some(groups),
                condition: None,
                url,
                maps: &config.maps,
            };
            let holds = conditions_hold(vars, &self.conditions, self.match_any, &mut scope);
            if self.gave_up(holds) != Some(true) {
                continue;
            }
            applied = true;
            if let Some(template) = &self.value {
                rewritten.push_str(&text[copied..span.start]);
                rewritten.push_str(&expand(vars, template, &scope, false));
                copied = span.end;
                if rewritten.len() > WHOLE_BODY_OUTPUT {
                    return give_up(&format!(
                        "the rewritten body would be longer than {WHOLE_BODY_OUTPUT} bytes"
                    ));
                }
            }
        }
        if copied == 0 && rewritten.is_empty() {
            return (None, applied);
        }
        rewritten.push_str(&text[copied..]);
        (Some(rewritten), applied)
    }
}

/// A named precondition, compiled.
#[derive(Debug)]
pub(super) struct Precondition {
    pub(super) name: String,
    pub(super) conditions: Vec<Condition>,
    match_any: bool,
}

/// A precondition as configured.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrecondition {
    #[serde(default)]
    conditions: Vec<RawCondition>,
    #[serde(default)]
    logical_grouping: LogicalGrouping,
    #[serde(default)]
    pattern_syntax: PatternSyntax,
}

impl Precondition {
    pub(super) fn compile(name: String, raw: RawPrecondition) -> Result<Self, String> {
        let conditions = compile_conditions(raw.conditions, raw.pattern_syntax)
            .map_err(|e| format!("precondition `{name}`: {e}"))?;
        Ok(Precondition {
            name,
            conditions,
            match_any: raw.logical_grouping == LogicalGrouping::MatchAny,
        })
    }
}

/// Applies the header rules to the response whose headers are about to be
/// sent, and starts rewriting its body when attribute rules apply to it.
pub(super) fn on_headers(
    ctx: &mut HttpContext,
    config: &Arc<RewriteConfig>,
) -> Option<BodyRewriter> {
    let url = ctx.request().url().to_owned();
    let mut file = FileName::default();
    let mut holds: Vec<Option<bool>> = vec![None; config.preconditions.len()];
    let mut body_rules = Vec::new();
    let mut whole_rules = Vec::new();
    // Headers (response or request) a rule with `stop_processing` applied
    // to: later rules leave them alone (and only them).
    let mut stopped: Vec<(HeaderName, bool)> = Vec::new();
    for (index, rule) in config.outbound_rules.iter().enumerate() {
        if let Some((_, at)) = &rule.precondition {
            let precondition = &config.preconditions[*at];
            let held = *holds[*at].get_or_insert_with(|| {
                let mut scope = Scope {
                    rule: None,
                    condition: None,
                    url: &url,
                    maps: &config.maps,
                };
                let vars = &mut RequestVariables {
                    ctx,
                    file: &mut file,
                };
                // A precondition that cannot tell does not hold.
                conditions_hold(
                    vars,
                    &precondition.conditions,
                    precondition.match_any,
                    &mut scope,
                )
                .unwrap_or(false)
            });
            if !held {
                continue;
            }
        }
        let (name, request) = match &rule.target {
            Target::Header(name) => (name, false),
            Target::RequestHeader(name) => (name, true),
            Target::Attributes(_) => {
                body_rules.push(index);
                continue;
            }
            Target::Body => {
                whole_rules.push(index);
                continue;
            }
        };
        if stopped.contains(&(name.clone(), request)) {
            continue;
        }
        let headers = if request {
            ctx.request().headers()
        } else {
            ctx.response().headers()
        };
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        // An absent header is matched as empty: IIS's way to add one
        // (`Strict-Transport-Security` with a condition on `{HTTPS}`).
        let values = if values.is_empty() {
            vec![String::new()]
        } else {
            values
        };
        let mut applied = false;
        let mut rewritten = Vec::with_capacity(values.len());
        let mut changed = false;
        for value in values {
            let vars = &mut RequestVariables {
                ctx,
                file: &mut file,
            };
            let (new, matched) = rule.apply(vars, &value, &url, config);
            applied |= matched;
            match new {
                Some(new) => {
                    changed |= new != value;
                    rewritten.push(new);
                }
                None => rewritten.push(value),
            }
        }
        if changed {
            set_header_values(ctx, rule, name, request, rewritten);
        }
        if applied && rule.stop_processing {
            stopped.push((name.clone(), request));
        }
    }
    // A 304 has no type to meet a precondition with: its URL's says
    // whether its 200 would be rewritten.
    let not_modified = ctx.response().status() == StatusCode::NOT_MODIFIED;
    if not_modified && config.may_rewrite_body_of(ctx.request().url()) {
        describe_as_rewritten(ctx);
        return None;
    }
    if body_rules.is_empty() && whole_rules.is_empty() {
        return None;
    }
    let BodyKind::Rewrite { html, text } = body_kind(ctx) else {
        return None;
    };
    // Which rules this body meets: attribute rules HTML, whole-body rules
    // text in UTF-8.
    let html = html.filter(|_| !body_rules.is_empty());
    if !text {
        whole_rules.clear();
    }
    if html.is_none() && whole_rules.is_empty() {
        return None;
    }
    if ctx.request().method() == Method::HEAD
        || ctx.response().status() == StatusCode::PARTIAL_CONTENT
    {
        describe_as_rewritten(ctx);
        return None;
    }
    BodyRewriter::start(
        ctx,
        config,
        html.map(|encoding| (body_rules.as_slice(), encoding)),
        whole_rules,
        &url,
    )
}

/// Whether a URL may answer HTML: one without an extension (a folder, a
/// route), an HTML extension, or a server script's (`.php`, `.aspx`) whose
/// output is HTML. Any other extension, known or not, keeps its ranges: a
/// download (`.tgz`, `.qcow2`) must resume.
pub(super) fn may_be_html(url: &str) -> bool {
    let name = url.rsplit('/').next().unwrap_or("");
    let Some((_, ext)) = name.rsplit_once('.').filter(|(_, ext)| !ext.is_empty()) else {
        return true;
    };
    const PAGES: [&str; 14] = [
        "html", "htm", "xhtml", "shtml", "php", "phtml", "asp", "aspx", "jsp", "cfm", "cgi", "pl",
        "py", "rb",
    ];
    PAGES.iter().any(|page| page.eq_ignore_ascii_case(ext))
}

/// Whether a URL may answer text a rule over the whole body rewrites: one
/// that may be HTML, or of a text type's extension (scripts, styles, data).
pub(super) fn may_be_text(url: &str) -> bool {
    let name = url.rsplit('/').next().unwrap_or("");
    const TEXT: [&str; 22] = [
        "js", "mjs", "css", "json", "xml", "txt", "svg", "csv", "map", "md", "rss", "atom", "log",
        "yaml", "yml", "ini", "conf", "toml", "tsv", "ics", "vtt", "srt",
    ];
    may_be_html(url)
        || name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| TEXT.iter().any(|t| t.eq_ignore_ascii_case(ext)))
}

/// Headers of a response whose 200 would be rewritten, for one that
/// carries none of the body (HEAD, 304) or part of it (206): no validators
/// and no ranges, as the rewritten 200's, so that no client or cache joins
/// unrewritten bytes to rewritten ones.
fn describe_as_rewritten(ctx: &mut HttpContext) {
    let head = ctx.request().method() == Method::HEAD;
    let response = ctx.response_mut();
    let headers = response.headers_mut();
    headers.remove(header::ACCEPT_RANGES);
    // A rewritten page is the file and the rules together: the file's tag
    // and date would keep a copy made under other rules valid after they
    // changed (nginx's sub_filter drops them too).
    headers.remove(header::ETAG);
    headers.remove(header::LAST_MODIFIED);
    if head {
        // The file's length is not what GET sends (RFC 9110 §8.6), and the
        // page's is known only by rewriting it, which §9.3.2 lets a HEAD
        // leave out: no length, as DynamicCompression's HEAD. What a
        // handler wrote for the HEAD goes with it.
        headers.remove(header::CONTENT_LENGTH);
        response.clear_entity();
    }
}

/// Replaces the values of header `name`; empty values are dropped, so a
/// rule that rewrites to nothing removes the header.
fn set_header_values(
    ctx: &mut HttpContext,
    rule: &OutboundRule,
    name: &HeaderName,
    request: bool,
    values: Vec<String>,
) {
    let mut checked = Vec::with_capacity(values.len());
    for value in values.into_iter().filter(|v| !v.is_empty()) {
        match HeaderValue::try_from(value) {
            Ok(v) => checked.push(v),
            Err(_) => {
                tracing::warn!(rule = %rule.name, header = %name, url = %ctx.request().raw_url(), "UrlRewrite: an outbound rule's value is no header value; the header is left as it was");
                return;
            }
        }
    }
    if request {
        let request = ctx.request_mut();
        request.delete_header(name);
        for value in checked {
            request.append_header(name.clone(), value);
        }
        return;
    }
    let headers = ctx.response_mut().headers_mut();
    headers.remove(name);
    for value in checked {
        headers.append(name.clone(), value);
    }
}

/// Server variables taken from the request when its body started, for the
/// templates of attribute rules.
struct Snapshot {
    url: String,
    values: HashMap<String, String>,
    physical_path: String,
}

impl Variables for &Snapshot {
    fn variable(&mut self, name: &str) -> String {
        self.values.get(name).cloned().unwrap_or_default()
    }

    fn physical_path(&mut self, _url: &str) -> String {
        self.physical_path.clone()
    }
}

/// Collects the server variables `template` reads (in functions and map
/// keys too).
fn variables_read(template: &Template, names: &mut Vec<String>) {
    for piece in &template.pieces {
        match piece {
            Piece::Variable(name) if !names.contains(name) => names.push(name.clone()),
            Piece::Function(_, inner) | Piece::Map { key: inner, .. } => {
                variables_read(inner, names)
            }
            _ => {}
        }
    }
}

/// Where the rewriter writes: bytes gathered for the send under way.
struct Output(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Output {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(chunk);
    }
}

/// The rewriter of one response's body: the streaming HTML rewriter of the
/// attribute rules, and the body held for the rules over the whole body.
pub(super) struct BodyRewriter {
    rewriter: Option<HtmlRewriter<'static, Output>>,
    /// What the rewriter wrote since the last send.
    output: Arc<Mutex<Vec<u8>>>,
    /// The rules over the whole body and what they hold of it, until the
    /// final send (or until it proved too long).
    whole: Option<WholeBody>,
}

/// The rules over the whole body of one response, and the body so far.
struct WholeBody {
    /// Indices into the section's outbound rules.
    rules: Vec<usize>,
    config: Arc<RewriteConfig>,
    url: String,
    held: Vec<u8>,
    /// What `held` takes of [`WHOLE_BODIES_BUDGET`].
    reserved: u64,
}

/// A held body going out. Its share of [`WHOLE_BODIES_BUDGET`] goes back
/// when the connection has sent the last of it (the last piece dropped),
/// not when the rules are done: a client that does not read keeps it in
/// memory until then.
struct HeldBody {
    bytes: Vec<u8>,
    reserved: u64,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        WHOLE_BODIES_HELD.fetch_sub(self.reserved, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drop for WholeBody {
    fn drop(&mut self) {
        WHOLE_BODIES_HELD.fetch_sub(self.reserved, std::sync::atomic::Ordering::AcqRel);
    }
}

impl BodyRewriter {
    /// Starts rewriting with the attribute rules `attributes` (indices
    /// into the section's outbound rules, with the HTML's encoding and
    /// whether the `Content-Type` named it), when the response is HTML that
    /// can be rewritten, and with the rules over the whole body `whole`.
    fn start(
        ctx: &mut HttpContext,
        config: &Arc<RewriteConfig>,
        attributes: Option<(&[usize], (AsciiCompatibleEncoding, bool))>,
        whole: Vec<usize>,
        url: &str,
    ) -> Option<BodyRewriter> {
        let output = Arc::new(Mutex::new(Vec::new()));
        let rewriter = attributes.map(|(rules, (encoding, charset_given))| {
            Self::html_rewriter(ctx, config, rules, url, encoding, charset_given, &output)
        });
        // The body changes: its length is not known, ranges of it would
        // not be the file's, nor would its validators describe it.
        ctx.response_mut()
            .headers_mut()
            .remove(header::CONTENT_LENGTH);
        describe_as_rewritten(ctx);
        Some(BodyRewriter {
            rewriter,
            output,
            whole: (!whole.is_empty()).then(|| WholeBody {
                rules: whole,
                config: config.clone(),
                url: url.to_owned(),
                held: Vec::new(),
                reserved: 0,
            }),
        })
    }

    /// The streaming HTML rewriter of the attribute rules `rules`, writing
    /// to `output`.
    fn html_rewriter(
        ctx: &mut HttpContext,
        config: &Arc<RewriteConfig>,
        rules: &[usize],
        url: &str,
        encoding: AsciiCompatibleEncoding,
        charset_given: bool,
        output: &Arc<Mutex<Vec<u8>>>,
    ) -> HtmlRewriter<'static, Output> {
        let mut names = Vec::new();
        for &index in rules {
            for template in config.outbound_rules[index].templates() {
                variables_read(template, &mut names);
            }
        }
        let physical_path = if names.iter().any(|n| n == "REQUEST_FILENAME") {
            ctx.map_path(url).to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let values = names
            .into_iter()
            .map(|name| {
                let value = variable_of(ctx, &name);
                (name, value)
            })
            .collect();
        let snapshot = Arc::new(Snapshot {
            url: url.to_owned(),
            values,
            physical_path,
        });
        // One handler per element and attribute, which runs the rules on
        // that attribute in their order.
        let mut by_attribute: Vec<(Attribute, Vec<usize>)> = Vec::new();
        for &index in rules {
            let Target::Attributes(attributes) = &config.outbound_rules[index].target else {
                continue;
            };
            for attribute in attributes {
                match by_attribute
                    .iter_mut()
                    .find(|(a, _)| a.tag == attribute.tag && a.name == attribute.name)
                {
                    Some((_, list)) => list.push(index),
                    None => by_attribute.push((attribute.clone(), vec![index])),
                }
            }
        }
        let mut settings = Settings::new_send()
            .with_encoding(encoding)
            // A `<meta charset>` counts only when the `Content-Type` named
            // none, as browsers have it.
            .with_adjust_charset_on_meta_tag(!charset_given)
            .with_memory_settings(
                MemorySettings::new().with_max_allowed_memory_usage(REWRITER_MEMORY),
            )
            // Markup whose parse depends on the tree (`<select><xmp>`) is
            // rewritten as best it can be rather than cut short.
            .with_strict(false);
        for (attribute, rules) in by_attribute {
            let config = config.clone();
            let snapshot = snapshot.clone();
            let name = attribute.name;
            let handler = ElementContentHandlers::default().element(
                move |element: &mut lol_html::send::Element<'_, '_>| {
                    let Some(mut value) = element.get_attribute(&name) else {
                        return Ok(());
                    };
                    let mut changed = false;
                    for &index in &rules {
                        let rule = &config.outbound_rules[index];
                        let (new, applied) =
                            rule.apply(&mut &*snapshot, &value, &snapshot.url, &config);
                        if let Some(new) = new {
                            changed |= new != value;
                            value = new;
                        }
                        if applied && rule.stop_processing {
                            break;
                        }
                    }
                    if changed {
                        element.set_attribute(&name, &value)?;
                    }
                    Ok(())
                },
            );
            settings =
                settings.append_element_content_handler((Cow::Owned(attribute.selector), handler));
        }
        HtmlRewriter::new(settings, Output(output.clone()))
    }

    /// Whether the body is still being rewritten.
    pub(super) fn rewrites(&self) -> bool {
        self.rewriter.is_some() || self.whole.is_some()
    }

    /// Rewrites what this send carries; on the final send, the rest.
    /// `Err` when the body cannot be rewritten (a file range cannot be read,
    /// the rewriter gave up): the response is to be cut short.
    pub(super) fn send(&mut self, ctx: &mut HttpContext, final_send: bool) -> Result<(), String> {
        if !self.rewrites() {
            return Ok(());
        }
        let (rewriter, output) = (&mut self.rewriter, &self.output);
        let mut failed = None;
        crate::read_entity(ctx.response().entity_chunks(), |block| match rewriter {
            Some(rewriter) => {
                if failed.is_none() {
                    if let Err(e) = rewriter.write(block) {
                        failed = Some(e.to_string());
                    }
                }
            }
            // Only the rules over the whole body: the bytes as they are.
            None => output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(block),
        })
        .map_err(|e| format!("a file range could not be read: {e}"))?;
        if let Some(e) = failed {
            self.rewriter = None;
            return Err(e);
        }
        if final_send {
            if let Some(rewriter) = self.rewriter.take() {
                rewriter.end().map_err(|e| e.to_string())?;
            }
        }
        let mut output =
            std::mem::take(&mut *self.output.lock().unwrap_or_else(|e| e.into_inner()));
        // What `output` carries of the budget, once held bytes go out.
        let mut reserved = 0;
        if let Some(whole) = self.whole.as_mut() {
            let more = output.len() as u64;
            let fits = whole.held.len() + output.len() <= WHOLE_BODY_MEMORY
                && crate::take_from_budget(&WHOLE_BODIES_HELD, more, WHOLE_BODIES_BUDGET);
            if fits {
                whole.reserved += more;
            }
            whole.held.append(&mut output);
            if !fits {
                static GATE: crate::LogGate = crate::LogGate::new();
                if let Some(held_back) = GATE.pass() {
                    tracing::warn!(url = %ctx.request().raw_url(), held_back, "UrlRewrite: the body is longer than the {WHOLE_BODY_MEMORY} bytes the outbound rules over the whole body may hold, or the bodies held reached {WHOLE_BODIES_BUDGET} bytes; it is sent as it is");
                }
                output = std::mem::take(&mut whole.held);
                reserved = std::mem::take(&mut whole.reserved);
                self.whole = None;
            } else if final_send {
                if let Some(mut whole) = self.whole.take() {
                    reserved = std::mem::take(&mut whole.reserved);
                    output = whole.finish(ctx);
                }
            }
        }
        let chunks = if reserved > 0 {
            // An empty one gives its share back at once, dropped here.
            let held = HeldBody {
                bytes: output,
                reserved,
            };
            if held.bytes.is_empty() {
                Vec::new()
            } else {
                vec![EntityChunk::Memory(Bytes::from_owner(held))]
            }
        } else if output.is_empty() {
            Vec::new()
        } else {
            vec![EntityChunk::Memory(Bytes::from(output))]
        };
        ctx.response_mut().set_entity_chunks(chunks);
        Ok(())
    }
}

impl WholeBody {
    /// Runs the rules over the body held, in their order: the body to send.
    /// One that is not UTF-8 after all goes out as it is.
    fn finish(mut self, ctx: &mut HttpContext) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        // An empty body stays empty, as IIS leaves a response without an
        // entity alone.
        if held.is_empty() {
            return held;
        }
        let mut text = match String::from_utf8(held) {
            Ok(text) => text,
            Err(not_text) => return not_text.into_bytes(),
        };
        let deadline = std::time::Instant::now() + WHOLE_BODY_TIME;
        let mut file = FileName::default();
        for &index in &self.rules {
            let rule = &self.config.outbound_rules[index];
            let vars = &mut RequestVariables {
                ctx,
                file: &mut file,
            };
            let (new, applied) = rule.replace_all(vars, &text, &self.url, &self.config, deadline);
            if let Some(new) = new {
                text = new;
            }
            if applied && rule.stop_processing {
                break;
            }
        }
        text.into_bytes()
    }
}

/// What body rules do with a response.
enum BodyKind {
    /// Rewrite its body (or, for HEAD and 206, describe it as rewritten):
    /// with attribute rules when it is HTML in this encoding (and whether
    /// the `Content-Type` named the charset), with rules over the whole
    /// body when it is text in UTF-8.
    Rewrite {
        html: Option<(AsciiCompatibleEncoding, bool)>,
        text: bool,
    },
    /// Nothing.
    Leave,
}

/// Body rules rewrite the response to the client's request, not encoded
/// (IIS refuses those with 500.52; riis passes them on as they are), with
/// a body to come: attribute rules HTML (`text/html`,
/// `application/xhtml+xml`) in an ASCII-compatible charset (UTF-8 unless
/// the `Content-Type` names another), rules over the whole body text in
/// UTF-8.
fn body_kind(ctx: &HttpContext) -> BodyKind {
    let status = ctx.response().status();
    if ctx.child_depth() > 0
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodyKind::Leave;
    }
    let headers = ctx.response().headers();
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return BodyKind::Leave;
    }
    let html = html_encoding(ctx);
    let text = is_utf8_text(ctx);
    if html.is_none() && !text {
        return BodyKind::Leave;
    }
    BodyKind::Rewrite { html, text }
}

/// Whether the response's `Content-Type` is text (`text/*`, JSON,
/// JavaScript, XML, `+json` and `+xml` types) in UTF-8 (or US-ASCII, or no
/// charset named).
fn is_utf8_text(ctx: &HttpContext) -> bool {
    let Some((essence, charset)) = content_type(ctx) else {
        return false;
    };
    let essence = essence.to_ascii_lowercase();
    // An event stream is answered as it comes, never held to its end.
    let textual = (essence.starts_with("text/") && essence != "text/event-stream")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || [
            "application/json",
            "application/javascript",
            "application/x-javascript",
            "application/ecmascript",
            "application/xml",
        ]
        .contains(&essence.as_str());
    let utf8 = charset.is_none_or(|label| {
        ["utf-8", "utf8", "us-ascii"]
            .iter()
            .any(|known| label.eq_ignore_ascii_case(known))
    });
    textual && utf8
}

/// The response's media type (`text/html`) and the charset its
/// `Content-Type` names, if any.
fn content_type(ctx: &HttpContext) -> Option<(&str, Option<&str>)> {
    let content_type = ctx
        .response()
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let mut parameters = content_type.split(';');
    let essence = parameters.next()?.trim();
    let charset = parameters
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"'));
    Some((essence, charset))
}

/// The encoding of an HTML response, and whether its `Content-Type` named
/// it; none for other types or charsets lol_html cannot read.
fn html_encoding(ctx: &HttpContext) -> Option<(AsciiCompatibleEncoding, bool)> {
    let (essence, charset) = content_type(ctx)?;
    if !essence.eq_ignore_ascii_case("text/html")
        && !essence.eq_ignore_ascii_case("application/xhtml+xml")
    {
        return None;
    }
    let encoding = match charset {
        Some(label) => encoding_rs::Encoding::for_label(label.as_bytes())?,
        None => encoding_rs::UTF_8,
    };
    Some((AsciiCompatibleEncoding::new(encoding)?, charset.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_scripts_may_be_html_media_and_data_are_not() {
        for url in [
            "/",
            "/a/",
            "/route",
            "/index.html",
            "/x.htm",
            "/p.php",
            "/d.aspx",
            "/q.jsp",
        ] {
            assert!(may_be_html(url), "{url}");
        }
        for url in [
            "/a.png", "/v.mp4", "/f.woff2", "/s.css", "/app.js", "/d.json", "/r.txt", "/z.zip",
            "/doc.pdf",
        ] {
            assert!(!may_be_html(url), "{url}");
        }
    }

    /// A rule over the whole body from its TOML.
    fn body_rule(toml_text: &str) -> OutboundRule {
        let table: riis_pipeline::toml::Table = toml_text.parse().expect("test TOML");
        OutboundRule::deserialize(riis_pipeline::toml::Value::Table(table)).expect("a valid rule")
    }

    /// `rule` over `text`, with no server variables.
    fn replaced(rule: &OutboundRule, text: &str) -> (Option<String>, bool) {
        let snapshot = Snapshot {
            url: "/".into(),
            values: HashMap::new(),
            physical_path: String::new(),
        };
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        rule.replace_all(&mut &snapshot, text, "/", &RewriteConfig::default(), later)
    }

    #[test]
    fn a_rule_over_the_whole_body_replaces_every_match_once() {
        let groups = body_rule(
            r#"name = "r"
pattern = "id=(\\d+)"
action = { type = "Rewrite", value = "id=#{R:1}" }"#,
        );
        assert_eq!(
            replaced(&groups, "a id=1 b id=22 ü id=3"),
            (Some("a id=#1 b id=#22 ü id=#3".into()), true)
        );
        assert_eq!(replaced(&groups, "none here"), (None, false));
        // Empty matches: one at each position, through multi-byte text,
        // and none replaced twice.
        let empty = body_rule(
            r#"name = "e"
pattern = "x*"
action = { type = "Rewrite", value = "-" }"#,
        );
        assert_eq!(replaced(&empty, "aéxxb"), (Some("-a-é--b-".into()), true));
        // A match whose conditions do not hold stays as it is.
        let conditional = body_rule(
            r#"name = "c"
pattern = "(\\w+)@old"
conditions = [{ input = "{R:1}", pattern = "^keep$", negate = true }]
action = { type = "Rewrite", value = "{R:1}@new" }"#,
        );
        assert_eq!(
            replaced(&conditional, "ann@old keep@old bob@old"),
            (Some("ann@new keep@old bob@new".into()), true)
        );
        // None: it applies (for stop_processing) without changing a byte.
        let shield = body_rule(
            r#"name = "s"
pattern = "secret"
action = { type = "None" }"#,
        );
        assert_eq!(replaced(&shield, "a secret"), (None, true));
    }
}
