//! `UrlRewrite`: IIS URL Rewrite's inbound and outbound rules. Each
//! inbound rule matches the URL path against a regular expression, checks
//! its conditions (server variables against patterns, whether a path is a
//! file or a folder), and acts: rewrites the URL for the rest of the
//! pipeline, redirects, answers with a status of its own, or aborts the
//! connection. Outbound rules (`outbound.rs`) rewrite the response's
//! headers and the links of its HTML.
//!
//! Registers for two notifications:
//!
//! - **SendResponse** at **Last** priority, which SendResponse's inverted
//!   order makes first, for the outbound rules: on the send that carries
//!   the headers they see the handler's response before compression
//!   encodes it and before the modules that log it; every send of an HTML
//!   body they rewrite goes through the rewriter. A site without outbound
//!   rules pays one configuration lookup per response.
//! - **BeginRequest** at **High** priority: the URL may change until
//!   BeginRequest's modules are done, and every module after this one, as
//!   well as the choice of location (and with it every module's
//!   configuration) and of handler, sees the rewritten URL. The rules are
//!   those of the location the request's original URL falls in, after
//!   those of the levels around it (see `inherit` below). Child
//!   requests (a default document's, for instance) are not rewritten:
//!   their parent was; one whose URL the client may have chosen (a CGI
//!   local redirect: `ExecuteFlags::client_chosen_url`) is.
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
//! `{UrlEncode:…}`, `{UrlDecode:…}`, `{EscapeDataString:…}` and
//! `{HtmlEncode:…}`, and
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
//! `sub_status_code`, `status_reason`, `status_description`,
//! `log_rewritten_url` (default false; a Rewrite's, IIS's
//! `logRewrittenUrl`)); and `maps`, tables by name with `entries`, `default_value` (default empty) and
//! `ignore_case` (default true); and `folder`, the URL path the rules were
//! written for (a ported `web.config`'s folder): they then apply below it,
//! match the path below it, and resolve a relative `url` from it; and
//! `clear_rules`, `clear_outbound_rules`, IIS's `<clear />` of the
//! inherited rules where they are written, and `remove_rules`,
//! `remove_outbound_rules`, its `<remove name="…"/>`. Patterns
//! are regular expressions as ECMAScript writes them, look-around and
//! back-references included (see `pattern`); a pattern that does not
//! compile is a configuration error naming file, line and key.
//!
//! A Rewrite to `http[s]://host[:port]/path` sends the request to that
//! server: the URL becomes `/path` and the `PROXY_SERVER` server variable
//! names the server, for ReverseProxy (which must run in a handler of the new URL's location) to
//! pass it on, as IIS's URL Rewrite does with ARR. The server is written
//! out in the rule; one made of `{…}` values is a configuration error, so
//! no request can choose where it is sent. Other schemes are errors.
//!
//! Outbound rules with neither a `server_variable` nor tags rewrite the
//! whole body of text responses (see `outbound`).

mod outbound;
mod pattern;
mod rule;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use percent_encoding::utf8_percent_encode;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    error_at_key, HttpContext, HttpModule, InheritedSection, ModuleError, ModuleRegistration,
    Priority, RequestNotification, RequestNotificationStatus, RequestNotifications, Section,
    SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

use outbound::{BodyRewriter, OutboundRule, Precondition, RawPrecondition};
use rule::{conditions_hold_tracking, set_variables, yes, Action, Rule};
use template::{
    expand, has_scheme, is_group_letter, is_identifier, FileName, Function, RequestVariables,
    Scheme, Scope, PATH_PART,
};

/// The `rewrite` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawRewriteConfig")]
pub struct RewriteConfig {
    /// The inbound rules, in order: those of the enclosing levels first
    /// (shared with them), then the level's own.
    pub rules: Vec<Arc<Rule>>,
    /// The rewrite maps; templates find theirs by index. In name order,
    /// except that a level keeps the maps of the level around it at their
    /// indices, for the rules it inherits.
    maps: Vec<RewriteMap>,
    /// The outbound rules, in order, inherited ones first.
    outbound_rules: Vec<Arc<OutboundRule>>,
    /// The outbound rules' preconditions, ordered as the maps are; rules
    /// find theirs by index.
    preconditions: Vec<Precondition>,
    /// An outbound rule rewrites bodies (attributes of HTML, or whole
    /// bodies).
    body_rules: bool,
    /// An outbound rule rewrites whole bodies of text.
    whole_body_rules: bool,
    /// The names of the inbound rules, inherited and own, those switched
    /// off too: a level may not repeat one (IIS's collection refuses a
    /// duplicate entry).
    rule_names: Vec<String>,
    /// The same for the outbound rules.
    outbound_rule_names: Vec<String>,
}

impl RewriteConfig {
    /// The rules (switched on) that send a request to a server of its own
    /// for ReverseProxy to pass on (a Rewrite to `http://server/…`, or a
    /// rule setting `PROXY_SERVER`), with their names and, for a Rewrite,
    /// the written-out start of the path the request gets (`/app/` of
    /// `http://backend/app/{R:1}`; `None` when a value starts it, or for
    /// `PROXY_SERVER`, which leaves the URL as it is). Such a request fails where no
    /// handler runs ReverseProxy; `riis check-config` warns about it.
    pub fn rules_sending_to_servers(
        &self,
    ) -> impl Iterator<Item = (&Arc<Rule>, &str, Option<String>)> {
        self.rules
            .iter()
            .filter(|rule| rule.enabled && rule.sends_to_server())
            .map(|rule| (rule, rule.name.as_str(), rule.server_path_start()))
    }

    /// Whether a body rule may rewrite the response to `url` (judged by
    /// its extension, before the response is known): its ranges and
    /// validators would then not be the file's.
    fn may_rewrite_body_of(&self, url: &str) -> bool {
        (self.body_rules && outbound::may_be_html(url))
            || (self.whole_body_rules && outbound::may_be_text(url))
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRewriteConfig {
    rules: Vec<Rule>,
    maps: BTreeMap<String, RawMap>,
    outbound_rules: Vec<OutboundRule>,
    preconditions: BTreeMap<String, RawPrecondition>,
    folder: Option<String>,
    // Read from the level that writes them (see `inherit`), not from
    // what a level inherits; parsed here so that a wrong type is an error
    // like any other key's.
    #[serde(rename = "clear_rules")]
    _clear_rules: bool,
    #[serde(rename = "clear_outbound_rules")]
    _clear_outbound_rules: bool,
    #[serde(rename = "remove_rules")]
    _remove_rules: Vec<String>,
    #[serde(rename = "remove_outbound_rules")]
    _remove_outbound_rules: Vec<String>,
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
            let key = format!("maps.{name}");
            if !is_identifier(&name) || Function::named(&name).is_some() || is_group_letter(&name) {
                return Err(error_at_key(&key, format!(
                    "rewrite map `{name}`: a map's name is letters, digits and `_`, and not R, C or a function's (ToLower, UrlEncode, UrlDecode, EscapeDataString, HtmlEncode)"
                )));
            }
            if let Some(other) = maps
                .iter()
                .find(|m: &&RewriteMap| m.name.eq_ignore_ascii_case(&name))
            {
                return Err(error_at_key(
                    &key,
                    format!(
                        "rewrite maps `{}` and `{name}`: map names are compared without case",
                        other.name
                    ),
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
                    return Err(error_at_key(
                        &format!("maps.{name}.entries"),
                        format!(
                            "rewrite map `{name}`: key `{key}` is there twice (keys are compared without case unless ignore_case = false)"
                        ),
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
        // Errors name the rule's (or precondition's) own key and line.
        let rule_names = distinct_names(&raw.rules, "rules", |rule| &rule.name)?;
        let outbound_rule_names =
            distinct_names(&raw.outbound_rules, "outbound_rules", |rule| &rule.name)?;
        let mut rules = raw.rules;
        for (i, rule) in rules.iter_mut().enumerate() {
            let name = rule.name.clone();
            for template in rule.templates_mut() {
                template.resolve_maps(&maps).map_err(|e| {
                    error_at_key(&format!("rules[{i}]"), format!("rule `{name}`: {e}"))
                })?;
            }
        }
        let mut preconditions = Vec::with_capacity(raw.preconditions.len());
        for (name, raw) in raw.preconditions {
            let key = format!("preconditions.{name}");
            let mut precondition =
                Precondition::compile(name, raw).map_err(|e| error_at_key(&key, e))?;
            for condition in &mut precondition.conditions {
                condition.input.resolve_maps(&maps).map_err(|e| {
                    error_at_key(&key, format!("precondition `{}`: {e}", precondition.name))
                })?;
            }
            preconditions.push(precondition);
        }
        let mut outbound_rules = raw.outbound_rules;
        for (i, rule) in outbound_rules.iter_mut().enumerate() {
            let name = rule.name.clone();
            if let Some((wanted, index)) = &mut rule.precondition {
                *index = preconditions
                    .iter()
                    .position(|p| p.name == *wanted)
                    .ok_or_else(|| {
                        error_at_key(
                            &format!("outbound_rules[{i}].precondition"),
                            format!("outbound rule `{name}`: no precondition `{wanted}` in `rewrite.preconditions`"),
                        )
                    })?;
            }
            for template in rule.templates_mut() {
                template.resolve_maps(&maps).map_err(|e| {
                    error_at_key(
                        &format!("outbound_rules[{i}]"),
                        format!("outbound rule `{name}`: {e}"),
                    )
                })?;
            }
        }
        let folder = match raw.folder.as_deref() {
            None | Some("/") => None,
            Some(folder) if folder.starts_with('/') && !folder.ends_with('/') => {
                Some(folder.to_owned())
            }
            Some(folder) => {
                return Err(error_at_key(
                    "folder",
                    format!("`{folder}`: a folder is a URL path such as \"/blog\": a leading `/` and no trailing one"),
                ))
            }
        };
        // Rules switched off were checked like the others; they are left
        // out now.
        let rules = rules
            .into_iter()
            .filter(|rule| rule.enabled)
            .map(|mut rule| {
                rule.folder.clone_from(&folder);
                Arc::new(rule)
            })
            .collect();
        let outbound_rules: Vec<_> = outbound_rules
            .into_iter()
            .filter(|rule| rule.enabled)
            .map(Arc::new)
            .collect();
        Ok(RewriteConfig {
            rules,
            maps,
            body_rules: outbound_rules.iter().any(|rule| rule.is_body_rule()),
            whole_body_rules: outbound_rules.iter().any(|rule| rule.is_whole_body_rule()),
            outbound_rules,
            preconditions,
            rule_names,
            outbound_rule_names,
        })
    }
}

/// The names of a level's rules (`key`), each once without regard to case
/// (IIS refuses a duplicate entry, switched off or not).
fn distinct_names<T>(
    rules: &[T],
    key: &str,
    name: impl Fn(&T) -> &String,
) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let this = name(rule);
        if let Some(first) = names.iter().position(|n| n.eq_ignore_ascii_case(this)) {
            return Err(error_at_key(
                &format!("{key}[{i}].name"),
                format!(
                    "`{this}` names {key}[{first}] already: rule names are compared without case"
                ),
            ));
        }
        names.push(this.clone());
    }
    Ok(names)
}

/// IIS's rule collections add up from the site's root to a folder: a
/// location runs the rules of the levels around it (server, site,
/// enclosing locations) first, each matching below the folder it was
/// written for, then its own; outbound rules likewise. `clear_rules` and
/// `clear_outbound_rules` (IIS's `<clear />`) drop the inherited ones at
/// the level that writes them, and for the levels below it;
/// `remove_rules` and `remove_outbound_rules` (its `<remove />`) drop
/// those named. A rule's name
/// may not repeat an inherited one's (IIS refuses a duplicate entry), so a
/// configuration that copied the site's rules into a location, as riis
/// once required, is told so instead of running them twice. Maps and
/// preconditions are tables, merged key by key as any section's.
impl InheritedSection for RewriteConfig {
    fn inherit(
        &mut self,
        outer: &Self,
        written: &riis_pipeline::toml::Table,
    ) -> Result<(), String> {
        let cleared = |key: &str| {
            written
                .get(key)
                .and_then(riis_pipeline::toml::Value::as_bool)
                == Some(true)
        };
        // The inherited rules find the outer level's maps and
        // preconditions by index: keep them there, and find this level's
        // references again.
        let moved = keep_order(&mut self.maps, &outer.maps, |m| &m.name)
            | keep_order(&mut self.preconditions, &outer.preconditions, |p| &p.name);
        if moved {
            self.find_references()?;
        }
        add_up(
            (&outer.rules, &outer.rule_names),
            (&mut self.rules, &mut self.rule_names),
            written,
            "rules",
            cleared("clear_rules"),
            |rule| &rule.name,
        )?;
        add_up(
            (&outer.outbound_rules, &outer.outbound_rule_names),
            (&mut self.outbound_rules, &mut self.outbound_rule_names),
            written,
            "outbound_rules",
            cleared("clear_outbound_rules"),
            |rule| &rule.name,
        )?;
        self.body_rules = self.outbound_rules.iter().any(|rule| rule.is_body_rule());
        self.whole_body_rules = self
            .outbound_rules
            .iter()
            .any(|rule| rule.is_whole_body_rule());
        Ok(())
    }
}

impl RewriteConfig {
    /// Resolves again, after the maps or preconditions moved, the map and
    /// precondition references of the rules this level parsed (shared
    /// rules are the outer level's, whose references stay valid).
    fn find_references(&mut self) -> Result<(), String> {
        const SHARED: &str = "internal error: a rule to resolve again is shared";
        for rule in &mut self.rules {
            let rule = Arc::get_mut(rule).ok_or(SHARED)?;
            for template in rule.templates_mut() {
                template.resolve_maps(&self.maps)?;
            }
        }
        for precondition in &mut self.preconditions {
            for condition in &mut precondition.conditions {
                condition.input.resolve_maps(&self.maps)?;
            }
        }
        for rule in &mut self.outbound_rules {
            let rule = Arc::get_mut(rule).ok_or(SHARED)?;
            if let Some((wanted, index)) = &mut rule.precondition {
                *index = self
                    .preconditions
                    .iter()
                    .position(|p| p.name == *wanted)
                    .ok_or(SHARED)?;
            }
            for template in rule.templates_mut() {
                template.resolve_maps(&self.maps)?;
            }
        }
        Ok(())
    }
}

/// Reorders `items` so that those named as in `outer` come first, at
/// `outer`'s indices (a level's tables hold every name of the level around
/// it); whether anything moved.
fn keep_order<T>(items: &mut Vec<T>, outer: &[T], name: impl Fn(&T) -> &String) -> bool {
    let in_place = outer
        .iter()
        .zip(items.iter())
        .all(|(o, i)| name(o) == name(i));
    if in_place {
        return false;
    }
    let mut rest: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    for wanted in outer {
        if let Some(slot) = rest
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|item| name(item) == name(wanted)))
        {
            items.extend(slot.take());
        }
    }
    items.extend(rest.into_iter().flatten());
    true
}

/// Makes a level's list of rules (and of their names, switched off ones
/// included): the inherited ones (unless cleared, but those named in
/// `remove_<key>`), then those the level wrote under `key`. A level that
/// does not write `key` parsed the array an outer level wrote, which the
/// outer value holds already.
fn add_up<T>(
    (outer, outer_names): (&[Arc<T>], &[String]),
    (rules, names): (&mut Vec<Arc<T>>, &mut Vec<String>),
    written: &riis_pipeline::toml::Table,
    key: &str,
    cleared: bool,
    name_of: impl Fn(&T) -> &str,
) -> Result<(), String> {
    if !written.contains_key(key) {
        rules.clear();
        names.clear();
    }
    if cleared {
        return Ok(());
    }
    // IIS's `<remove name="…"/>`: inherited rules this level takes out
    // (to write its own of that name, say).
    let remove_key = format!("remove_{key}");
    let removed: Vec<&str> = written
        .get(&remove_key)
        .and_then(riis_pipeline::toml::Value::as_array)
        .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    for (i, gone) in removed.iter().enumerate() {
        if !outer_names.iter().any(|n| n.eq_ignore_ascii_case(gone)) {
            return Err(error_at_key(
                &format!("{remove_key}[{i}]"),
                format!("no rule named `{gone}` is inherited here"),
            ));
        }
    }
    let kept = |name: &str| !removed.iter().any(|gone| gone.eq_ignore_ascii_case(name));
    // Same index as the array as written (switched off rules are in
    // `names`), so that the error's line is the rule's.
    if let Some((i, name)) = names.iter().enumerate().find(|(_, name)| {
        outer_names
            .iter()
            .any(|outer| outer.eq_ignore_ascii_case(name) && kept(outer))
    }) {
        return Err(error_at_key(
            &format!("{key}[{i}].name"),
            format!("a rule named `{name}` is inherited from an enclosing level: rules add up from the site's root to a location, as in IIS; give this one another name, take the inherited one out with `{remove_key} = [\"{name}\"]`, or drop them all with `clear_{key} = true`"),
        ));
    }
    rules.splice(0..0, outer.iter().filter(|r| kept(name_of(r))).cloned());
    names.splice(0..0, outer_names.iter().filter(|n| kept(n)).cloned());
    Ok(())
}

/// The module instance: one per request.
pub struct UrlRewrite {
    config: Section<RewriteConfig>,
    /// The rewriter of this response's body, when outbound rules apply to
    /// its HTML. Boxed: lol_html's rewriter is about 1 KB, which every
    /// request's instance would otherwise carry.
    body: Option<Box<BodyRewriter>>,
}

/// What the walk decided.
enum Outcome {
    /// Go on, with the URL the rules made when they changed it.
    Continue(Option<Rewritten>),
    /// The rule answered: FinishRequest.
    Finished,
}

impl UrlRewrite {
    fn walk(&self, ctx: &mut HttpContext) -> Outcome {
        let rules = ctx.config_shared(self.config);
        if rules.rules.is_empty() {
            return Outcome::Continue(None);
        }
        // IIS's "query string of the current URL": the request's, then the
        // one each Rewrite leaves, for the next rules that append it.
        let mut current_query = ctx.request().query_string().to_owned();
        let mut url = ctx.request().url().to_owned();
        // What the rules match: the path below their folder, made again
        // when a rule's folder is not the last one's or the URL changed.
        let mut subject = String::new();
        let mut subject_below: Option<Option<&str>> = None;
        let mut query: Option<String> = None;
        let mut rewritten_by: Option<&str> = None;
        // A Rewrite with `log_rewritten_url` ran: the log writes the URL
        // the rules end with.
        let mut log_rewritten = false;
        let mut proxy_to: Option<&str> = None;
        // A Rewrite to a server: its path as the template made it, encoded
        // (URL Rewrite 2.1's `useOriginalURLEncoding`): a `%2F` the client
        // sent in `{UNENCODED_URL}` reaches the server as `%2F`, not `/`.
        let mut proxy_path: Option<String> = None;
        let mut file = FileName::default();
        for rule in &rules.rules {
            let folder = rule.folder.as_deref();
            if subject_below != Some(folder) {
                // Rules written for a folder apply below it only, also
                // once a rule rewrote the URL out of it (*inferred*: IIS
                // leaves this unsaid; a folder's catch-all rule must not
                // pull the site's URLs into the folder).
                let Some(below) = subject_of(&url, folder) else {
                    continue;
                };
                subject = below;
                subject_below = Some(folder);
            }
            // Groups are taken only when a template uses them (a negated
            // pattern has none).
            let outcome = if rule.uses_groups && !rule.negate {
                rule.pattern
                    .captures(&subject)
                    .map(|captures| (captures.is_some(), captures))
            } else {
                rule.pattern.is_match(&subject).map(|m| (m, None))
            };
            // A match that gave up cannot say whether the rule applies (a
            // rule that denies must not be got past by such a URL): the
            // request ends with URL Rewrite's error.
            let (matched, captures) = match outcome {
                Ok(outcome) => outcome,
                Err(why) => {
                    fail(ctx, &rule.name, &why.to_string());
                    return Outcome::Finished;
                }
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
            let vars = &mut RequestVariables {
                ctx,
                file: &mut file,
            };
            match conditions_hold_tracking(
                vars,
                &rule.conditions,
                rule.match_any,
                rule.track_all_captures,
                &mut scope,
            ) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    fail(ctx, &rule.name, &format!("a condition: {why}"));
                    return Outcome::Finished;
                }
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
                    log_rewritten_url,
                } => {
                    proxy_to = server.as_deref();
                    log_rewritten |= *log_rewritten_url;
                    let vars = &mut RequestVariables {
                        ctx,
                        file: &mut file,
                    };
                    let target = expand(vars, to, &scope, true);
                    let (path, own_query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                        None => (target, None),
                    };
                    proxy_path = server
                        .is_some()
                        .then(|| format!("/{}", path.trim_start_matches('/')));
                    query = join_query(own_query, *append_query, &current_query);
                    current_query.clone_from(query.as_ref().unwrap_or(&String::new()));
                    // Relative paths are from the rules' folder (the
                    // site's root unless `folder` says another).
                    url = from_folder(&decoded(&path), folder);
                    subject_below = None;
                    rewritten_by = Some(&rule.name);
                }
                Action::Redirect {
                    url: to,
                    append_query,
                    status,
                } => {
                    let vars = &mut RequestVariables {
                        ctx,
                        file: &mut file,
                    };
                    let mut target = expand(vars, to, &scope, true);
                    let mut absolute = to.scheme != Scheme::None;
                    if let Some(part) = &to.scheme_part {
                        let vars = &mut RequestVariables {
                            ctx,
                            file: &mut file,
                        };
                        let scheme = expand(vars, part, &scope, false);
                        // A leading map's value: a URL only when it is the
                        // scheme and its `://`, alone.
                        let from_map = to.scheme == Scheme::FromMap;
                        absolute = !from_map
                            || scheme.eq_ignore_ascii_case("http://")
                            || scheme.eq_ignore_ascii_case("https://");
                        // What the scheme's references give, on its own:
                        // exactly `http` or `https`, so the target's first
                        // `://` is the template's.
                        if !from_map
                            && !scheme.eq_ignore_ascii_case("http")
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
                    // A URL without a host (`https:///evil.test`, an empty
                    // map value where the host goes): browsers take what
                    // follows for the host.
                    let hostless = target.split_once("://").is_some_and(|(_, rest)| {
                        rest.is_empty() || rest.starts_with(['/', '\\', '?', '#'])
                    });
                    if absolute && hostless {
                        fail(
                            ctx,
                            &rule.name,
                            &format!("the redirect `{target}` names no host"),
                        );
                        return Outcome::Finished;
                    }
                    if !(absolute || from_config && has_scheme(&target)) {
                        // A path on this site: one leading slash, whatever
                        // the values were (`a/b`, `https:evil`, `//evil`).
                        // Only the configuration's own text (a rewrite
                        // map's value) may name another site. Relative,
                        // it is from the rules' folder.
                        target = from_folder(&target, folder);
                    }
                    if *append_query && !current_query.is_empty() {
                        // Before the template's `#fragment`, if it has one
                        // (RFC 3986 §3: the query comes first); values
                        // cannot bring a `#`, they encode it.
                        let fragment = target.find('#').map(|at| target.split_off(at));
                        if !target.ends_with('?') {
                            target.push(if target.contains('?') { '&' } else { '?' });
                        }
                        target.push_str(&current_query);
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
        // The decoded path encoded again (`/` stays); a server's path as
        // the rule wrote it.
        let mut target: String = match proxy_path {
            Some(path) => path,
            None => utf8_percent_encode(&url, PATH_PART).collect(),
        };
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(&q);
        }
        Outcome::Continue(Some(Rewritten {
            target,
            rule: rule.to_owned(),
            server: proxy_to.map(str::to_owned),
            logged: log_rewritten,
        }))
    }
}

/// The URL inbound rules made.
struct Rewritten {
    /// The path and query.
    target: String,
    /// The last rule that rewrote it.
    rule: String,
    /// The server to pass the request on to.
    server: Option<String>,
    /// A Rewrite with `log_rewritten_url` ran.
    logged: bool,
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

/// What rules match: the path without its leading `/`, below `folder` when
/// the rules have one (IIS matches a folder's `web.config` rules against
/// the path below that folder); `None` when the path is not below it.
fn subject_of(url: &str, folder: Option<&str>) -> Option<String> {
    let below = match folder {
        None => url,
        Some(folder) => riis_pipeline::path_below(folder, url)?,
    };
    Some(below.trim_start_matches('/').to_owned())
}

/// A rule's path made a path of the site, with one leading `/`: a relative
/// one (`index.php`) from the rules' folder, as IIS resolves a folder's
/// `web.config` rules.
fn from_folder(path: &str, folder: Option<&str>) -> String {
    let relative = !path.starts_with('/');
    let path = path.trim_start_matches('/');
    match folder {
        Some(folder) if relative => format!("{folder}/{path}"),
        _ => format!("/{path}"),
    }
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

impl UrlRewrite {
    /// Runs the inbound rules and takes their URL.
    fn inbound(&self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        match self.walk(ctx) {
            Outcome::Finished => RequestNotificationStatus::FinishRequest,
            Outcome::Continue(None) => RequestNotificationStatus::Continue,
            Outcome::Continue(Some(Rewritten {
                target,
                rule,
                server,
                logged,
            })) => {
                if let Err(e) = ctx.request_mut().set_url(&target) {
                    fail(ctx, &rule, &format!("`{target}` is not a usable URL: {e}"));
                    return RequestNotificationStatus::FinishRequest;
                }
                if let Some(server) = server {
                    ctx.set_server_variable(crate::reverse_proxy::PROXY_SERVER, server);
                }
                if logged {
                    ctx.set_server_variable(crate::http_logging::LOG_REWRITTEN_URL, "1");
                }
                RequestNotificationStatus::Continue
            }
        }
    }
}

impl HttpModule for UrlRewrite {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // A child request is the server's own, its URL chosen by a module
        // (a default document, an error page), and the rules ran for its
        // parent; but one whose URL the client may have chosen (a CGI
        // script's local redirect of `?next=/admin/`) meets them as the
        // client's own request would, as nginx runs its rewrite phases
        // again after an internal redirect: a rule that blocks `/admin`
        // would otherwise be one redirect away.
        if ctx.child_depth() > 0 && !ctx.execute_flags().client_chosen_url {
            return RequestNotificationStatus::Continue;
        }
        let status = self.inbound(ctx);
        // A range of a page that attribute rules rewrite would be a range
        // of the file, not of the page the client was sent, and a copy
        // validated by the file's tag or date may have been made under
        // other rules: such a URL is answered whole and fresh (downloads
        // and other types keep ranges and validators).
        if status == RequestNotificationStatus::Continue
            && ctx
                .config(self.config)
                .may_rewrite_body_of(ctx.request().url())
        {
            use riis_pipeline::http::header;
            let request = ctx.request_mut();
            for name in [
                header::RANGE,
                header::IF_RANGE,
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
            ] {
                request.delete_header(name);
            }
        }
        status
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if provider.headers_being_sent()
            && ctx.child_depth() == 0
            && !ctx.config(self.config).outbound_rules.is_empty()
        {
            let config = ctx.config_shared(self.config);
            self.body = outbound::on_headers(ctx, &config).map(Box::new);
        }
        let Some(body) = self.body.as_mut() else {
            return RequestNotificationStatus::Continue;
        };
        if body.rewrites() {
            // A large body is rewritten a piece at a time, the rest
            // deferred to later sends, as the client takes it.
            provider.defer_after(ctx.response_mut(), crate::TRANSFORM_PIECE);
        }
        if let Err(why) = body.send(ctx, provider.is_final_send()) {
            tracing::error!(url = %ctx.request().raw_url(), "UrlRewrite: the response's body cannot be rewritten ({why}); it is cut short");
            self.body = None;
            let response = ctx.response_mut();
            response.set_entity_chunks(Vec::new());
            response.reset_connection();
        }
        RequestNotificationStatus::Continue
    }
}

/// The groups (`{R:1}` on) a rule's `pattern` has under `syntax` (IIS's
/// `patternSyntax`: `ECMAScript`, `Wildcard` or `ExactMatch`, any case);
/// `None` when the pattern does not compile. For converting IIS rules,
/// whose back-references past a pattern's groups riis refuses.
pub fn pattern_group_count(pattern: &str, syntax: &str) -> Option<usize> {
    let syntax = match syntax.to_ascii_lowercase().as_str() {
        "ecmascript" => rule::PatternSyntax::ECMAScript,
        "wildcard" => rule::PatternSyntax::Wildcard,
        "exactmatch" => rule::PatternSyntax::ExactMatch,
        _ => return None,
    };
    rule::compile(pattern, true, syntax)
        .ok()
        .map(|p| p.group_count())
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_inherited_section::<RewriteConfig>("rewrite")?;
    registration.set_request_notifications(
        move || UrlRewrite { config, body: None },
        RequestNotification::BeginRequest | RequestNotification::SendResponse,
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::BeginRequest, Priority::High);
    // Last, which SendResponse's inverted order makes first: the outbound
    // rules see the handler's response before compression encodes it and
    // before the modules that log or finish it.
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::Last);
    Ok(())
}
