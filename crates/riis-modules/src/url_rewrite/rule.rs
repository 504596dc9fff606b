//! Inbound rules: their configuration, compiled once, and how a rule's
//! conditions and server variables are applied to a request.

use riis_pipeline::http::header::{HeaderName, HeaderValue};
use riis_pipeline::http::{self, StatusCode};
use riis_pipeline::HttpContext;
use serde::Deserialize;

use super::pattern::{GaveUp, Pattern};
use super::template::{
    expand, is_identifier, scheme_of, ConditionGroups, FileName, Piece, RequestVariables, Scheme,
    Scope, Template, Variables,
};

/// One rule, compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    pub(super) name: String,
    pub(super) pattern: Pattern,
    /// A template uses `{R:n}`: the match's groups are taken, not only
    /// whether it matched.
    pub(super) uses_groups: bool,
    pub(super) negate: bool,
    pub(super) conditions: Vec<Condition>,
    pub(super) match_any: bool,
    /// IIS's `trackAllCaptures`.
    pub(super) track_all_captures: bool,
    pub(super) action: Action,
    pub(super) stop_processing: bool,
    /// Server variables (and, as `HTTP_*`, request headers) the rule sets
    /// when it applies.
    pub(super) server_variables: Vec<SetVariable>,
    /// IIS's `enabled`: a rule switched off is checked, then left out.
    pub(super) enabled: bool,
    /// The folder the rule was written for (its section's `folder`, a
    /// ported `web.config`'s): it matches the path below it, and its
    /// relative URLs are from it. `None`: the site's root.
    pub(super) folder: Option<String>,
}

impl Rule {
    /// A Rewrite to another server, or a rule that names one in
    /// `PROXY_SERVER`.
    pub(super) fn sends_to_server(&self) -> bool {
        matches!(
            self.action,
            Action::Rewrite {
                server: Some(_),
                ..
            }
        ) || self
            .server_variables
            .iter()
            .any(|v| v.name == crate::reverse_proxy::PROXY_SERVER)
    }

    /// For a Rewrite to another server, the written-out start of the path
    /// it gives the request (`/app/` of `http://backend/app/{R:1}`, `/` of
    /// `http://backend/{R:1}`): the request's URL becomes that path, and
    /// the location it falls in chooses the handler. `None` when the path
    /// starts with a value, or the rule only sets `PROXY_SERVER` (the URL
    /// stays the request's own).
    pub(super) fn server_path_start(&self) -> Option<String> {
        let Action::Rewrite {
            url,
            server: Some(_),
            ..
        } = &self.action
        else {
            return None;
        };
        let mut start = String::new();
        let mut whole = true;
        for piece in &url.pieces {
            match piece {
                Piece::Text(text) => start.push_str(text),
                _ => {
                    whole = false;
                    break;
                }
            }
        }
        // The path ends at the query or fragment: written out to there,
        // it is whole (`/api?x={R:1}` is `/api`; no path at all is `/`, as
        // the request then gets).
        let path = match start.find(['?', '#']) {
            Some(at) => {
                whole = true;
                &start[..at]
            }
            None => start.as_str(),
        };
        let path = if path.is_empty() && whole { "/" } else { path };
        // Otherwise up to the last `/`: what follows may go on in a value.
        let known = if whole {
            path
        } else {
            &path[..path.rfind('/')? + 1]
        };
        // As the request's URL will be: decoded, `.` and `..` folded.
        Some(
            riis_pipeline::prepare_url_path(known)
                .map_or_else(|_| known.to_owned(), |p| p.into_owned()),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) pattern: String,
    #[serde(default)]
    pub(super) pattern_syntax: PatternSyntax,
    #[serde(default = "yes")]
    pub(super) ignore_case: bool,
    #[serde(default)]
    pub(super) negate: bool,
    #[serde(default)]
    pub(super) conditions: Vec<RawCondition>,
    #[serde(default)]
    pub(super) logical_grouping: LogicalGrouping,
    #[serde(default)]
    pub(super) track_all_captures: bool,
    #[serde(default)]
    pub(super) stop_processing: bool,
    #[serde(default)]
    pub(super) server_variables: Vec<RawSetVariable>,
    /// IIS's schema makes a rule's action `None` when it has none (a rule
    /// that only sets server variables, or only stops processing).
    #[serde(default)]
    pub(super) action: RawAction,
}

/// How a rule's patterns (its own and its conditions') are written: IIS's
/// `patternSyntax`.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
pub(super) enum PatternSyntax {
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
pub(super) struct RawSetVariable {
    pub(super) name: String,
    pub(super) value: String,
    #[serde(default = "yes")]
    pub(super) replace: bool,
}

/// A server variable a rule sets, checked once.
#[derive(Debug)]
pub(super) struct SetVariable {
    /// Upper case, as IIS names them.
    pub(super) name: String,
    /// For `HTTP_*`: the request header it is.
    pub(super) header: Option<HeaderName>,
    pub(super) value: Template,
    /// Whether a value already there is replaced (IIS's `replace`).
    pub(super) replace: bool,
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
        // Where ReverseProxy sends the request: as for a Rewrite to another
        // server, written out, so that no request can choose it.
        if name == crate::reverse_proxy::PROXY_SERVER {
            if raw.value.contains(['{', '}']) {
                return Err(format!(
                    "server variable `{name}`: `{}` is made of {{…}} values; the server is written out, so that no request chooses it",
                    raw.value
                ));
            }
            crate::reverse_proxy::check_server(&raw.value)
                .map_err(|why| format!("server variable `{name}`: {why}"))?;
        }
        Ok(SetVariable {
            value: Template::parse(&raw.value)?,
            name,
            header,
            replace: raw.replace,
        })
    }
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, PartialEq)]
pub(super) enum LogicalGrouping {
    #[default]
    MatchAll,
    MatchAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
    pub(super) input: String,
    #[serde(default)]
    pub(super) pattern: Option<String>,
    #[serde(default)]
    pub(super) match_type: MatchType,
    #[serde(default = "yes")]
    pub(super) ignore_case: bool,
    #[serde(default)]
    pub(super) negate: bool,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq)]
pub(super) enum MatchType {
    #[default]
    Pattern,
    IsFile,
    IsDirectory,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAction {
    /// IIS's default action type is `None` (absent here).
    #[serde(rename = "type", default)]
    pub(super) kind: Option<ActionKind>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default = "yes")]
    pub(super) append_query_string: bool,
    #[serde(default)]
    pub(super) redirect_type: RedirectType,
    #[serde(default)]
    pub(super) status_code: Option<u16>,
    #[serde(default)]
    pub(super) sub_status_code: u16,
    #[serde(default)]
    pub(super) status_reason: Option<String>,
    #[serde(default)]
    pub(super) status_description: Option<String>,
    /// IIS's `logRewrittenUrl`.
    #[serde(default)]
    pub(super) log_rewritten_url: bool,
}

impl Default for RawAction {
    fn default() -> Self {
        Self {
            kind: None,
            url: None,
            append_query_string: true,
            redirect_type: RedirectType::default(),
            status_code: None,
            sub_status_code: 0,
            status_reason: None,
            status_description: None,
            log_rewritten_url: false,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) enum ActionKind {
    Rewrite,
    Redirect,
    CustomResponse,
    AbortRequest,
    None,
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq)]
pub(super) enum RedirectType {
    #[default]
    Permanent,
    Found,
    SeeOther,
    Temporary,
}

impl RedirectType {
    pub(super) fn status(self) -> StatusCode {
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
pub(super) struct Condition {
    pub(super) input: Template,
    pub(super) test: Test,
    pub(super) negate: bool,
    /// Its groups come from the decoded path (its input is `{URL}`,
    /// `{REQUEST_FILENAME}` or `{R:n}`).
    pub(super) decoded: bool,
}

#[derive(Debug)]
pub(super) enum Test {
    Pattern(Pattern),
    IsFile,
    IsDirectory,
}

/// What a matching rule does.
#[derive(Debug)]
pub(super) enum Action {
    /// A new path (and query) for the request; with `server`
    /// (`http://host[:port]`), to be passed on to that server by
    /// ReverseProxy.
    Rewrite {
        url: Template,
        append_query: bool,
        server: Option<String>,
        /// The access log writes the rewritten URL (IIS's
        /// `logRewrittenUrl`), through HttpLogging's `LOG_REWRITTEN_URL`.
        log_rewritten_url: bool,
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

pub(super) fn compile(
    pattern: &str,
    ignore_case: bool,
    syntax: PatternSyntax,
) -> Result<Pattern, String> {
    compile_with_limit(
        pattern,
        ignore_case,
        syntax,
        super::pattern::BACKTRACK_LIMIT,
    )
}

/// [`compile`], with another limit on a match's backtracking steps.
pub(super) fn compile_with_limit(
    pattern: &str,
    ignore_case: bool,
    syntax: PatternSyntax,
    backtrack_limit: usize,
) -> Result<Pattern, String> {
    let expression = match syntax {
        PatternSyntax::ECMAScript => pattern.to_owned(),
        PatternSyntax::Wildcard => {
            // IIS's wildcards: `*` is any characters (a back-reference),
            // `?` exactly one (none); line breaks (a decoded `%0a`) count.
            let mut expression = String::from("(?s)^");
            let mut literal = [0u8; 4];
            for c in pattern.chars() {
                match c {
                    '*' => expression.push_str("(.*)"),
                    '?' => expression.push('.'),
                    c => expression.push_str(&regex::escape(c.encode_utf8(&mut literal))),
                }
            }
            expression.push('$');
            expression
        }
        PatternSyntax::ExactMatch => format!("^{}$", regex::escape(pattern)),
    };
    Pattern::with_backtrack_limit(&expression, ignore_case, backtrack_limit)
        .map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))
}

/// Compiles a rule's (or precondition's) conditions.
pub(super) fn compile_conditions(
    raw: Vec<RawCondition>,
    syntax: PatternSyntax,
) -> Result<Vec<Condition>, String> {
    let mut conditions = Vec::with_capacity(raw.len());
    for c in raw {
        let test = match (c.match_type, c.pattern) {
            (MatchType::Pattern, Some(p)) => Test::Pattern(compile(&p, c.ignore_case, syntax)?),
            (MatchType::Pattern, None) => {
                return Err(format!(
                    "the condition on `{}` has match_type Pattern but no pattern",
                    c.input
                ))
            }
            (MatchType::IsFile, None) => Test::IsFile,
            (MatchType::IsDirectory, None) => Test::IsDirectory,
            (kind, Some(_)) => {
                return Err(format!(
                    "the condition on `{}` has match_type {kind:?}, which takes no pattern",
                    c.input
                ))
            }
        };
        let input = Template::parse(&c.input)?;
        conditions.push(Condition {
            decoded: input.has_decoded_values(),
            input,
            test,
            negate: c.negate,
        });
    }
    Ok(conditions)
}

/// Server variables whose value is a URL path (with its leading `/`): one
/// may follow a Rewrite's server directly (`http://backend{UNENCODED_URL}`,
/// ARR's way to pass the client's URL on as it was sent).
const PATH_VALUES: [&str; 5] = [
    "UNENCODED_URL",
    "REQUEST_URI",
    "URL",
    "HTTP_URL",
    "SCRIPT_NAME",
];

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.name;
        let in_rule = |e: String| format!("rule `{name}`: {e}");
        let syntax = raw.pattern_syntax;
        let pattern = compile(&raw.pattern, raw.ignore_case, syntax)
            .map_err(|e| riis_pipeline::error_at_key("pattern", in_rule(e)))?;
        let conditions = compile_conditions(raw.conditions, syntax)
            .map_err(|e| riis_pipeline::error_at_key("conditions", in_rule(e)))?;
        let a = raw.action;
        let url = |kind: &str| -> Result<Template, String> {
            let url = a
                .url
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| in_rule(format!("a {kind} action needs a `url`")))?;
            Template::parse(url).map_err(in_rule)
        };
        let kind = a.kind.unwrap_or(ActionKind::None);
        if a.log_rewritten_url && kind != ActionKind::Rewrite {
            return Err(in_rule(format!(
                "log_rewritten_url is for a Rewrite action, not {kind:?}"
            )));
        }
        let action = match kind {
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
                        // The server ends where the path does, or where a
                        // value that is a path begins
                        // (`http://backend{UNENCODED_URL}`).
                        let end = rest.find(['/', '?', '{']).unwrap_or(rest.len());
                        let server = &target[..at + end];
                        let path_value = rest[end..].strip_prefix('{').is_some_and(|value| {
                            PATH_VALUES.iter().any(|name| {
                                value.get(..name.len() + 1).is_some_and(|v| {
                                    v[..name.len()].eq_ignore_ascii_case(name) && v.ends_with('}')
                                })
                            })
                        });
                        if server.contains(['{', '}'])
                            || (rest[end..].starts_with('{') && !path_value)
                        {
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
                    log_rewritten_url: a.log_rewritten_url,
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
            // A url with no type (IIS's default, None) would be ignored:
            // most likely the type was left out by mistake.
            ActionKind::None if a.url.is_some() && a.kind.is_none() => {
                return Err(in_rule(
                    "the action has a url but no type: write `type = \"Rewrite\"` or `\"Redirect\"` (without one it is None, which uses no url)".into(),
                ))
            }
            ActionKind::None => Action::None,
        };
        let server_variables = raw
            .server_variables
            .into_iter()
            .map(SetVariable::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_rule)?;
        // `{R:5}` of a pattern with two groups is always empty: a typo,
        // caught here rather than found as an empty piece of a URL.
        let groups = pattern.group_count();
        let highest = conditions
            .iter()
            .map(|c| &c.input)
            .chain(server_variables.iter().map(|v| &v.value))
            .chain(match &action {
                Action::Rewrite { url, .. } | Action::Redirect { url, .. } => Some(url),
                _ => None,
            })
            .filter_map(Template::highest_rule_group)
            .max();
        if let Some(n) = highest.filter(|&n| n > groups) {
            return Err(in_rule(format!(
                "{{R:{n}}}: the rule's pattern has {groups} group{} ({{R:0}} is the whole match)",
                if groups == 1 { "" } else { "s" }
            )));
        }
        let uses_groups = highest.is_some();
        Ok(Rule {
            enabled: raw.enabled,
            folder: None,
            server_variables,
            uses_groups,
            pattern,
            negate: raw.negate,
            conditions,
            match_any: raw.logical_grouping == LogicalGrouping::MatchAny,
            track_all_captures: raw.track_all_captures,
            action,
            stop_processing: raw.stop_processing,
            name,
        })
    }
}

impl Rule {
    /// Every template of the rule: its conditions' inputs, its server
    /// variables' values and its action's URL.
    pub(super) fn templates_mut(&mut self) -> impl Iterator<Item = &mut Template> {
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

/// Sets the server variables and request headers of a rule that applies
/// (IIS's `serverVariables`), before its action. An `HTTP_*` variable is
/// the request header: an empty value removes it.
pub(super) fn set_variables(
    ctx: &mut HttpContext,
    rule: &Rule,
    scope: &Scope<'_>,
    file: &mut FileName,
) -> Result<(), String> {
    for variable in &rule.server_variables {
        let value = expand(
            &mut RequestVariables { ctx, file },
            &variable.value,
            scope,
            false,
        );
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

/// Whether `conditions` hold (all of them, or one with `match_any`); the
/// last matching pattern's groups go into `scope`. An error when a
/// pattern's match gave up: nobody can tell.
pub(super) fn conditions_hold(
    vars: &mut dyn Variables,
    conditions: &[Condition],
    match_any: bool,
    scope: &mut Scope<'_>,
) -> Result<bool, GaveUp> {
    conditions_hold_tracking(vars, conditions, match_any, false, scope)
}

/// [`conditions_hold`]; with `track_all` (IIS's `trackAllCaptures`), the
/// `{C:n}` of the conditions that matched are numbered on from one to the
/// next (`{C:0}` is the first one's whole match, then each one's groups),
/// instead of being the last one's.
pub(super) fn conditions_hold_tracking(
    vars: &mut dyn Variables,
    conditions: &[Condition],
    match_any: bool,
    track_all: bool,
    scope: &mut Scope<'_>,
) -> Result<bool, GaveUp> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let mut tracking = false;
    for condition in conditions {
        let input = expand(vars, &condition.input, scope, false);
        // Groups of `{C:n}` from a decoded condition stay decoded.
        let decoded = condition.decoded
            || (condition.input.uses_condition_groups()
                && scope.condition.as_ref().is_some_and(|c| c.decoded));
        let from_config = condition
            .input
            .is_from_config(scope.condition.as_ref().is_some_and(|c| c.from_config));
        let matched = match &condition.test {
            Test::Pattern(pattern) => match pattern.captures(&input)? {
                Some(groups) => {
                    if !condition.negate {
                        let groups = groups.to_vec();
                        match scope.condition.as_mut().filter(|_| tracking) {
                            Some(kept) => {
                                kept.groups.extend(groups.into_iter().skip(1));
                                kept.decoded |= decoded;
                                kept.from_config &= from_config;
                            }
                            None => {
                                scope.condition = Some(ConditionGroups {
                                    groups,
                                    decoded,
                                    from_config,
                                });
                                tracking = track_all;
                            }
                        }
                    }
                    true
                }
                None => false,
            },
            Test::IsFile => std::fs::metadata(&input).is_ok_and(|m| m.is_file()),
            Test::IsDirectory => std::fs::metadata(&input).is_ok_and(|m| m.is_dir()),
        };
        let holds = matched != condition.negate;
        if match_any && holds {
            return Ok(true);
        }
        if !match_any && !holds {
            return Ok(false);
        }
    }
    Ok(!match_any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_exact_patterns_match_the_whole_path() {
        let wild = compile("wild/*/file-*.txt", true, PatternSyntax::Wildcard).unwrap();
        let groups = wild.captures("wild/x/y/file-9.TXT").unwrap().unwrap();
        assert_eq!((groups.get(1), groups.get(2)), (Some("x/y"), Some("9")));
        assert!(!wild.is_match("wild/x/file-9.txtz").unwrap());
        assert!(!wild.is_match("a/wild/x/file-9.txt").unwrap());
        // `?` is one character, not a group of its own.
        let one = compile("Scripts/*_in.???", false, PatternSyntax::Wildcard).unwrap();
        let groups = one.captures("Scripts/foo_in.asp").unwrap().unwrap();
        assert_eq!(
            groups.to_vec(),
            [Some("Scripts/foo_in.asp".into()), Some("foo".into())]
        );
        assert!(!one.is_match("Scripts/foo_in.aspx").unwrap());
        assert!(!one.is_match("Scripts/foo_in.as").unwrap());
        let exact = compile("a.b(c)", false, PatternSyntax::ExactMatch).unwrap();
        assert!(exact.is_match("a.b(c)").unwrap());
        assert!(!exact.is_match("axb(c)").unwrap() && !exact.is_match("A.b(c)").unwrap());
    }

    fn rule(text: &str) -> Result<Rule, String> {
        let raw: RawRule = toml::from_str(text).map_err(|e| e.to_string())?;
        Rule::try_from(raw)
    }

    /// As IIS's schema has it, a rule without an action (or an action
    /// without a type) is `None`; a url without a type is a mistake.
    #[test]
    fn an_action_without_a_type_is_none() {
        let none = rule("name = \"n\"\npattern = \"^x$\"\nstop_processing = true").unwrap();
        assert!(matches!(none.action, Action::None));
        let none = rule("name = \"n\"\npattern = \"^x$\"\naction = {}").unwrap();
        assert!(matches!(none.action, Action::None));
        let err = rule("name = \"n\"\npattern = \"^x$\"\naction = { url = \"/b\" }").unwrap_err();
        assert!(err.contains("has a url but no type"), "{err}");
    }

    /// A back-reference past the pattern's groups is always empty: refused.
    #[test]
    fn a_group_the_pattern_does_not_have_is_refused() {
        let action = "action = { type = \"Rewrite\", url = \"/b/{R:2}\" }";
        assert!(rule(&format!("name = \"n\"\npattern = \"^(a)/(b)$\"\n{action}")).is_ok());
        let err = rule(&format!("name = \"n\"\npattern = \"^(a)$\"\n{action}")).unwrap_err();
        assert!(
            err.contains("{R:2}: the rule's pattern has 1 group"),
            "{err}"
        );
        // A wildcard's `*` is a group; in a condition's input too.
        let wild = "name = \"n\"\npattern = \"a/*\"\npattern_syntax = \"Wildcard\"\n\
            conditions = [{ input = \"{R:2}\", pattern = \"x\" }]";
        assert!(rule(wild).unwrap_err().contains("{R:2}"));
    }
}
