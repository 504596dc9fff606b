//! `riis import-web-config`: the `system.webServer` settings of an IIS
//! `web.config` as riis configuration, for a site moving from IIS.
//!
//! What has a riis equivalent becomes its section: URL Rewrite's inbound
//! rules and rewrite maps (`rewrite`), `defaultDocument`
//! (`default_document`), `httpProtocol` (`protocol`), `httpRedirect`
//! (`http_redirect`), `staticContent` (`static_file`), `httpErrors`
//! (`http_errors`), `security/requestFiltering` (`request_filtering`) and
//! `security/ipSecurity` (`ip_security`). Everything else
//! is named in comments at the top of the output and on standard error,
//! never dropped without a word. The output is checked by parsing it back
//! before it is printed; `riis check-config` then checks it against the
//! modules.
//!
//! A `web.config` applies to the folder it is in: with `--location`, the
//! output is a `[[sites.locations]]` entry for that folder, and its rewrite
//! rules keep their meaning there through `rewrite.folder` (IIS's
//! distributed rules); without it, top-level sections for the whole
//! server.

use std::fmt::Write as _;

use roxmltree::{Document, Node};
use toml::Value;

/// The converted settings, and what was left out.
pub struct Converted {
    /// The configuration text (TOML).
    pub text: String,
    /// What has no riis equivalent here, one line each.
    pub left_out: Vec<String>,
}

/// Converts the text of a `web.config`; `location` is the URL path of the
/// folder it sits in (`/blog`), if not the site's root.
pub fn convert(xml: &str, location: Option<&str>) -> Result<Converted, String> {
    let document = Document::parse(xml).map_err(|e| format!("not a valid XML file: {e}"))?;
    let root = document.root_element();
    if root.tag_name().name() != "configuration" {
        return Err(format!(
            "the root element is <{}>, not <configuration>",
            root.tag_name().name()
        ));
    }
    let location = match location {
        Some(path) => Some(location_path(path)?),
        None => None,
    };
    let mut out = Output {
        prefix: if location.is_some() {
            "sites.locations."
        } else {
            ""
        },
        body: String::new(),
        left_out: Vec::new(),
    };
    for child in elements(root) {
        match child.tag_name().name() {
            "system.webServer" => web_server(&mut out, child, location.as_deref())?,
            "location" => out.leave(
                child,
                "<location> elements: convert each as its own `--location`",
            ),
            "configSections" => {}
            other => out.left_out.push(format!(
                "<{other}>: not IIS's web server settings (ASP.NET and .NET settings stay with the application)"
            )),
        }
    }
    let mut text = String::new();
    let _ = writeln!(text, "# Converted by `riis import-web-config`.");
    for line in &out.left_out {
        let _ = writeln!(text, "# Not converted: {line}");
    }
    if let Some(path) = &location {
        let _ = writeln!(text, "\n[[sites.locations]]\npath = {}", quoted(path));
    }
    text.push_str(&out.body);
    // What is printed must be TOML a configuration can hold.
    text.parse::<toml::Table>()
        .map_err(|e| format!("the converted text is not valid TOML (a bug): {e}"))?;
    Ok(Converted {
        text,
        left_out: out.left_out,
    })
}

/// A URL path for `--location`: starts with `/`, no trailing `/`.
fn location_path(path: &str) -> Result<String, String> {
    let trimmed = path.trim().trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.contains("//") {
        return Err(format!(
            "--location `{path}` is not a URL path such as `/blog`"
        ));
    }
    Ok(trimmed.to_owned())
}

/// The text being written and the notes on what was left out.
struct Output {
    /// Before each table's name: `sites.locations.` for a location.
    prefix: &'static str,
    body: String,
    left_out: Vec<String>,
}

impl Output {
    /// Notes that `node` was not converted, and why.
    fn leave(&mut self, node: Node, why: &str) {
        self.left_out.push(format!("<{}> ({why})", path_of(node)));
    }

    /// Starts the table `name` (`rewrite`, `[rewrite.rules]`).
    fn table(&mut self, name: &str) {
        let _ = write!(self.body, "\n[{}{name}]\n", self.prefix);
    }

    /// Starts an entry of the array of tables `name`.
    fn array_entry(&mut self, name: &str) {
        let _ = write!(self.body, "\n[[{}{name}]]\n", self.prefix);
    }

    /// `key = value` in the current table.
    fn key(&mut self, key: &str, value: impl Into<Value>) {
        let _ = writeln!(self.body, "{} = {}", bare_or_quoted(key), value.into());
    }
}

/// `system.webServer`'s children.
fn web_server(out: &mut Output, node: Node, location: Option<&str>) -> Result<(), String> {
    for child in elements(node) {
        match child.tag_name().name() {
            "rewrite" => rewrite(out, child, location)?,
            "defaultDocument" => default_document(out, child)?,
            "httpProtocol" => http_protocol(out, child)?,
            "httpRedirect" => http_redirect(out, child)?,
            "staticContent" => static_content(out, child)?,
            "httpErrors" => http_errors(out, child)?,
            "security" => security(out, child)?,
            "handlers" => out.leave(
                child,
                "handler mappings are `[[handlers]]` in riis, with modules of their own: \
                 see docs/configuration.md",
            ),
            "modules" => out.leave(child, "the module list is `[[modules]]` in riis"),
            _ => out.leave(child, "no conversion for this section"),
        }
    }
    Ok(())
}

/// URL Rewrite: inbound rules and rewrite maps.
fn rewrite(out: &mut Output, node: Node, location: Option<&str>) -> Result<(), String> {
    let mut wrote_folder = false;
    for child in elements(node) {
        match child.tag_name().name() {
            "rules" => {
                if let Some(folder) = location.filter(|_| !wrote_folder) {
                    // The rules of a folder's web.config match the path
                    // below it, and relative URLs are from it.
                    out.table("rewrite");
                    out.key("folder", folder);
                    wrote_folder = true;
                }
                for rule in elements(child) {
                    match rule.tag_name().name() {
                        "rule" => inbound_rule(out, rule)?,
                        "clear" => out.leave(
                            rule,
                            "a location's rules replace those it inherits in riis",
                        ),
                        _ => out.leave(rule, "only <rule> entries are converted"),
                    }
                }
            }
            "rewriteMaps" => {
                for map in elements(child).filter(|m| m.tag_name().name() == "rewriteMap") {
                    rewrite_map(out, map)?;
                }
            }
            "outboundRules" => out.leave(
                child,
                "outbound rules: write them as `rewrite.outbound_rules`, see docs/modules/url-rewrite.md",
            ),
            _ => out.leave(child, "no conversion for this part of URL Rewrite"),
        }
    }
    Ok(())
}

/// One `<rule>`.
fn inbound_rule(out: &mut Output, rule: Node) -> Result<(), String> {
    let name = rule.attribute("name").unwrap_or("");
    if rule.attribute("enabled").is_some_and(|v| !is_true(v)) {
        out.leave(rule, &format!("rule `{name}` is disabled"));
        return Ok(());
    }
    let Some(matched) = element(rule, "match") else {
        return Err(format!("rule `{name}` has no <match>"));
    };
    out.array_entry("rewrite.rules");
    out.key("name", name);
    let pattern = matched
        .attribute("url")
        .ok_or_else(|| format!("rule `{name}`: <match> has no `url`"))?;
    out.key("pattern", pattern);
    if let Some(syntax) = rule.attribute("patternSyntax") {
        out.key("pattern_syntax", syntax);
    }
    if let Some(v) = matched.attribute("ignoreCase") {
        out.key("ignore_case", is_true(v));
    }
    if let Some(v) = matched.attribute("negate") {
        out.key("negate", is_true(v));
    }
    if let Some(v) = rule.attribute("stopProcessing") {
        out.key("stop_processing", is_true(v));
    }
    if let Some(conditions) = element(rule, "conditions") {
        if let Some(grouping) = conditions.attribute("logicalGrouping") {
            out.key("logical_grouping", grouping);
        }
        if conditions
            .attribute("trackAllCaptures")
            .is_some_and(is_true)
        {
            out.leave(
                conditions,
                &format!("rule `{name}`: trackAllCaptures (the last matching condition's groups are {{C:n}} in riis)"),
            );
        }
        let list: Vec<Value> = elements(conditions)
            .filter(|c| c.tag_name().name() == "add")
            .map(|c| {
                let mut t = toml::Table::new();
                put(&mut t, "input", c.attribute("input"));
                put(&mut t, "match_type", c.attribute("matchType"));
                put(&mut t, "pattern", c.attribute("pattern"));
                put_bool(&mut t, "ignore_case", c.attribute("ignoreCase"));
                put_bool(&mut t, "negate", c.attribute("negate"));
                Value::Table(t)
            })
            .collect();
        if !list.is_empty() {
            out.key("conditions", Value::Array(list));
        }
    }
    if let Some(variables) = element(rule, "serverVariables") {
        let list: Vec<Value> = elements(variables)
            .filter(|v| v.tag_name().name() == "set")
            .map(|v| {
                let mut t = toml::Table::new();
                put(&mut t, "name", v.attribute("name"));
                t.insert(
                    "value".into(),
                    Value::String(v.attribute("value").unwrap_or("").into()),
                );
                put_bool(&mut t, "replace", v.attribute("replace"));
                Value::Table(t)
            })
            .collect();
        if !list.is_empty() {
            out.key("server_variables", Value::Array(list));
        }
    }
    let Some(action) = element(rule, "action") else {
        return Err(format!("rule `{name}` has no <action>"));
    };
    let mut t = toml::Table::new();
    let kind = action.attribute("type").unwrap_or("None");
    t.insert("type".into(), Value::String(kind.into()));
    put(&mut t, "url", action.attribute("url"));
    put_bool(
        &mut t,
        "append_query_string",
        action.attribute("appendQueryString"),
    );
    put(&mut t, "redirect_type", action.attribute("redirectType"));
    for (attribute, key) in [
        ("statusCode", "status_code"),
        ("subStatusCode", "sub_status_code"),
    ] {
        if let Some(v) = action.attribute(attribute) {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("rule `{name}`: {attribute} `{v}` is not a number"))?;
            t.insert(key.into(), Value::Integer(n));
        }
    }
    put(&mut t, "status_reason", action.attribute("statusReason"));
    put(
        &mut t,
        "status_description",
        action.attribute("statusDescription"),
    );
    out.key("action", Value::Table(t));
    Ok(())
}

/// One `<rewriteMap>`.
fn rewrite_map(out: &mut Output, map: Node) -> Result<(), String> {
    let name = map
        .attribute("name")
        .ok_or("a <rewriteMap> has no `name`")?;
    out.table(&format!("rewrite.maps.{}", bare_or_quoted(name)));
    if let Some(v) = map.attribute("defaultValue") {
        out.key("default_value", v);
    }
    if let Some(v) = map.attribute("ignoreCase") {
        out.key("ignore_case", is_true(v));
    }
    let mut entries = toml::Table::new();
    for add in elements(map).filter(|a| a.tag_name().name() == "add") {
        let (Some(key), Some(value)) = (add.attribute("key"), add.attribute("value")) else {
            return Err(format!(
                "rewrite map `{name}`: an <add> needs `key` and `value`"
            ));
        };
        entries.insert(key.into(), Value::String(value.into()));
    }
    out.key("entries", Value::Table(entries));
    Ok(())
}

/// `defaultDocument`: `enabled`, and `files`. Without `<clear/>`, the
/// names it adds come before the inherited ones (IIS's collection puts a
/// folder's own first), and `<remove>` takes inherited ones out.
fn default_document(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("default_document");
    if let Some(v) = node.attribute("enabled") {
        out.key("enabled", is_true(v));
    }
    if let Some(files) = element(node, "files") {
        let defaults = riis_modules::default_document::DefaultDocumentConfig::default().files;
        let mut added = Vec::new();
        let mut inherited: Vec<&str> = defaults.iter().map(String::as_str).collect();
        for entry in elements(files) {
            let value = entry.attribute("value");
            match (entry.tag_name().name(), value) {
                ("clear", _) => {
                    inherited.clear();
                    added.clear();
                }
                ("add", Some(v)) => added.push(v),
                ("remove", Some(v)) => {
                    inherited.retain(|f| !f.eq_ignore_ascii_case(v));
                    added.retain(|f: &&str| !f.eq_ignore_ascii_case(v));
                }
                _ => out.leave(entry, "an entry without `value`"),
            }
        }
        let inherited: Vec<&str> = inherited
            .into_iter()
            .filter(|f| !list_has(&added, f))
            .collect();
        let mut list = added;
        list.extend(inherited);
        out.key(
            "files",
            Value::Array(list.into_iter().map(|f| Value::String(f.into())).collect()),
        );
    }
    Ok(())
}

fn list_has(list: &[&str], name: &str) -> bool {
    list.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// `httpProtocol`: custom and redirect headers, headers removed,
/// keep-alive.
fn http_protocol(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("protocol");
    if let Some(v) = node.attribute("allowKeepAlive") {
        out.key("keep_alive", is_true(v));
    }
    let mut removed = Vec::new();
    for (element_name, key) in [
        ("customHeaders", "custom_headers"),
        ("redirectHeaders", "redirect_headers"),
    ] {
        let Some(list) = element(node, element_name) else {
            continue;
        };
        let mut headers = toml::Table::new();
        for entry in elements(list) {
            match (entry.tag_name().name(), entry.attribute("name")) {
                ("add", Some(name)) => {
                    headers.insert(
                        name.into(),
                        Value::String(entry.attribute("value").unwrap_or("").into()),
                    );
                }
                // IIS's own `X-Powered-By: ASP.NET` is the usual one;
                // whatever the name, riis then sends none of it.
                ("remove", Some(name)) => removed.push(Value::String(name.into())),
                ("clear", _) => {}
                _ => out.leave(entry, "an entry without `name`"),
            }
        }
        if !headers.is_empty() {
            out.key(key, Value::Table(headers));
        }
    }
    if !removed.is_empty() {
        out.key("remove_headers", Value::Array(removed));
    }
    Ok(())
}

/// `httpRedirect`.
fn http_redirect(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("http_redirect");
    if let Some(v) = node.attribute("enabled") {
        out.key("enabled", is_true(v));
    }
    if let Some(v) = node.attribute("destination") {
        out.key("destination", v);
    }
    if let Some(v) = node.attribute("exactDestination") {
        out.key("exact_destination", is_true(v));
    }
    if let Some(v) = node.attribute("childOnly") {
        out.key("child_only", is_true(v));
    }
    if let Some(v) = node.attribute("httpResponseStatus") {
        out.key("status", v);
    }
    Ok(())
}

/// `httpErrors`: the error mode and the custom pages. A page whose path is
/// a Windows one (`%SystemDrive%\inetpub\custerr`, `C:\…`) has no
/// meaning here and is left out.
fn http_errors(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("http_errors");
    if let Some(v) = node.attribute("errorMode") {
        out.key("error_mode", v);
    }
    if let Some(v) = node.attribute("existingResponse") {
        out.key("existing_response", v);
    }
    if node.attribute("defaultPath").is_some() {
        out.leave(node, "defaultPath: give each status its page in `errors`");
    }
    let mut pages = Vec::new();
    for entry in elements(node) {
        match entry.tag_name().name() {
            "error" => {
                let number = |attribute: &str| -> Result<Option<i64>, String> {
                    entry
                        .attribute(attribute)
                        .map(|v| {
                            v.trim().parse::<i64>().map_err(|_| {
                                format!("httpErrors: {attribute} `{v}` is not a number")
                            })
                        })
                        .transpose()
                };
                let (Some(status), Some(path)) = (number("statusCode")?, entry.attribute("path"))
                else {
                    out.leave(entry, "an <error> needs statusCode and path");
                    continue;
                };
                let windows = path.contains('%')
                    || path.contains('\\')
                    || (path.contains(':') && !path.contains("://"));
                if windows {
                    out.leave(
                        entry,
                        &format!("the page for {status} is the Windows path `{path}`"),
                    );
                    continue;
                }
                let mut t = toml::Table::new();
                t.insert("status".into(), Value::Integer(status));
                if let Some(sub) = number("subStatusCode")? {
                    t.insert("substatus".into(), Value::Integer(sub));
                }
                t.insert("path".into(), Value::String(path.into()));
                put(&mut t, "response_mode", entry.attribute("responseMode"));
                pages.push(Value::Table(t));
            }
            // Before an <error> of the same status, as IIS's own examples
            // write it: the list here is the whole list.
            "remove" | "clear" => {}
            _ => out.leave(entry, "no conversion for this part of httpErrors"),
        }
    }
    if !pages.is_empty() {
        out.key("errors", Value::Array(pages));
    }
    Ok(())
}

/// `security`: request filtering and IP restrictions; authentication and
/// authorization are named as left out.
fn security(out: &mut Output, node: Node) -> Result<(), String> {
    for child in elements(node) {
        match child.tag_name().name() {
            "requestFiltering" => request_filtering(out, child)?,
            "ipSecurity" => ip_security(out, child),
            "authentication" | "authorization" => out.leave(
                child,
                "see the authentication modules and `authorization` in docs/modules/authentication.md",
            ),
            _ => out.leave(child, "no conversion for this security section"),
        }
    }
    Ok(())
}

/// The `<add …>` entries of `node`'s child `list`, by their `attribute`,
/// with `<remove>` taking out earlier ones and `<clear/>` all.
fn listed<'a>(node: Node<'a, '_>, list: &str, attribute: &str) -> Vec<Node<'a, 'a>> {
    let mut kept: Vec<Node> = Vec::new();
    let Some(list) = element(node, list) else {
        return kept;
    };
    for entry in elements(list) {
        match entry.tag_name().name() {
            "add" => kept.push(entry),
            "remove" => {
                let gone = entry.attribute(attribute);
                kept.retain(|k| k.attribute(attribute) != gone);
            }
            "clear" => kept.clear(),
            _ => {}
        }
    }
    kept
}

/// `requestFiltering`: limits, verbs, extensions, hidden segments, denied
/// sequences. Lists riis has defaults for (hidden segments) keep them, as
/// IIS's inherited entries stay.
fn request_filtering(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("request_filtering");
    for (attribute, key) in [
        ("allowDoubleEscaping", "allow_double_escaping"),
        ("allowHighBitCharacters", "allow_high_bit_characters"),
    ] {
        if let Some(v) = node.attribute(attribute) {
            out.key(key, is_true(v));
        }
    }
    if let Some(limits) = element(node, "requestLimits") {
        for (attribute, key) in [
            ("maxAllowedContentLength", "max_allowed_content_length"),
            ("maxUrl", "max_url"),
            ("maxQueryString", "max_query_string"),
        ] {
            if let Some(v) = limits.attribute(attribute) {
                let n: i64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("requestLimits: {attribute} `{v}` is not a number"))?;
                out.key(key, Value::Integer(n));
            }
        }
        let headers: toml::Table = listed(limits, "headerLimits", "header")
            .into_iter()
            .filter_map(|h| {
                let size = h.attribute("sizeLimit")?.trim().parse::<i64>().ok()?;
                Some((h.attribute("header")?.to_owned(), Value::Integer(size)))
            })
            .collect();
        if !headers.is_empty() {
            out.key("header_limits", Value::Table(headers));
        }
    }
    if let Some(verbs) = element(node, "verbs") {
        if let Some(v) = verbs.attribute("allowUnlisted") {
            out.key("allow_unlisted_verbs", is_true(v));
        }
        let listed: toml::Table = listed(node, "verbs", "verb")
            .into_iter()
            .filter_map(|e| {
                let allowed = e.attribute("allowed").is_none_or(is_true);
                Some((e.attribute("verb")?.to_owned(), Value::Boolean(allowed)))
            })
            .collect();
        if !listed.is_empty() {
            out.key("verbs", Value::Table(listed));
        }
    }
    if let Some(extensions) = element(node, "fileExtensions") {
        let mut table = toml::Table::new();
        if let Some(v) = extensions.attribute("allowUnlisted") {
            table.insert("allow_unlisted".into(), Value::Boolean(is_true(v)));
        }
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for e in listed(node, "fileExtensions", "fileExtension") {
            let Some(extension) = e.attribute("fileExtension") else {
                continue;
            };
            let name = Value::String(extension.to_owned());
            if e.attribute("allowed").is_none_or(is_true) {
                allow.push(name);
            } else {
                deny.push(name);
            }
        }
        if !allow.is_empty() {
            table.insert("allow".into(), Value::Array(allow));
        }
        if !deny.is_empty() {
            table.insert("deny".into(), Value::Array(deny));
        }
        if !table.is_empty() {
            out.key("file_extensions", Value::Table(table));
        }
    }
    if let Some(list) = element(node, "hiddenSegments") {
        // riis's defaults are what a web.config inherits.
        let mut segments: Vec<String> = riis_modules::request_filtering::DEFAULT_HIDDEN_SEGMENTS
            .map(String::from)
            .into();
        for entry in elements(list) {
            let segment = entry.attribute("segment").map(str::to_owned);
            match (entry.tag_name().name(), segment) {
                ("add", Some(s)) if !segments.iter().any(|k| k.eq_ignore_ascii_case(&s)) => {
                    segments.push(s)
                }
                ("remove", Some(s)) => segments.retain(|k| !k.eq_ignore_ascii_case(&s)),
                ("clear", _) => segments.clear(),
                _ => {}
            }
        }
        out.key(
            "hidden_segments",
            Value::Array(segments.into_iter().map(Value::String).collect()),
        );
    }
    for (list, key) in [
        ("denyUrlSequences", "denied_url_sequences"),
        ("denyQueryStringSequences", "denied_query_string_sequences"),
    ] {
        let sequences: Vec<Value> = listed(node, list, "sequence")
            .into_iter()
            .filter_map(|e| Some(Value::String(e.attribute("sequence")?.to_owned())))
            .collect();
        if !sequences.is_empty() {
            out.key(key, Value::Array(sequences));
        }
    }
    for child in elements(node) {
        if !matches!(
            child.tag_name().name(),
            "requestLimits"
                | "verbs"
                | "fileExtensions"
                | "hiddenSegments"
                | "denyUrlSequences"
                | "denyQueryStringSequences"
        ) {
            out.leave(child, "no conversion for this part of requestFiltering");
        }
    }
    Ok(())
}

/// `ipSecurity`: the address rules, in order.
fn ip_security(out: &mut Output, node: Node) {
    out.table("ip_security");
    if let Some(v) = node.attribute("allowUnlisted") {
        out.key("allow_unlisted", is_true(v));
    }
    if let Some(v) = node.attribute("denyAction") {
        out.key("deny_action", v);
    }
    if let Some(v) = node.attribute("enableProxyMode") {
        out.key("proxy_mode", is_true(v));
    }
    let mut rules = Vec::new();
    for entry in elements(node) {
        match (entry.tag_name().name(), entry.attribute("ipAddress")) {
            ("add", Some(address)) => {
                let mut t = toml::Table::new();
                t.insert("address".into(), Value::String(address.into()));
                put(&mut t, "subnet_mask", entry.attribute("subnetMask"));
                put_bool(&mut t, "allowed", entry.attribute("allowed"));
                rules.push(Value::Table(t));
            }
            ("clear", _) => rules.clear(),
            _ => out.leave(
                entry,
                "an ipSecurity entry by domain name, or without ipAddress",
            ),
        }
    }
    if !rules.is_empty() {
        out.key("rules", Value::Array(rules));
    }
}

/// `staticContent`: MIME types and the client cache.
fn static_content(out: &mut Output, node: Node) -> Result<(), String> {
    out.table("static_file");
    let mut types = toml::Table::new();
    for entry in elements(node) {
        match entry.tag_name().name() {
            "mimeMap" => {
                let (Some(extension), Some(mime)) =
                    (entry.attribute("fileExtension"), entry.attribute("mimeType"))
                else {
                    out.leave(entry, "a <mimeMap> needs fileExtension and mimeType");
                    continue;
                };
                let extension = extension.trim().trim_start_matches('.');
                if extension == "*" {
                    out.key("default_mime_type", mime);
                } else {
                    types.insert(extension.to_ascii_lowercase(), Value::String(mime.into()));
                }
            }
            "clientCache" => client_cache(out, entry)?,
            "remove" => out.leave(
                entry,
                "riis has no inherited MIME map to remove from (its types come from the extension table)",
            ),
            _ => out.leave(entry, "no conversion for this part of staticContent"),
        }
    }
    if !types.is_empty() {
        out.key("mime_types", Value::Table(types));
    }
    Ok(())
}

/// `clientCache`: the cache header of static files.
fn client_cache(out: &mut Output, node: Node) -> Result<(), String> {
    if let Some(mode) = node.attribute("cacheControlMode") {
        out.key("cache_control_mode", mode);
    }
    if let Some(age) = node.attribute("cacheControlMaxAge") {
        let seconds = time_span(age)
            .ok_or_else(|| format!("clientCache: cacheControlMaxAge `{age}` is not d.hh:mm:ss"))?;
        out.key("max_age", Value::Integer(seconds));
    }
    if let Some(expires) = node.attribute("httpExpires") {
        out.key("expires", expires);
    }
    if node.attribute("cacheControlCustom").is_some() {
        out.leave(
            node,
            "cacheControlCustom: set `Cache-Control` with protocol.custom_headers",
        );
    }
    Ok(())
}

/// A .NET `TimeSpan` as IIS writes it (`7.00:00:00`, `01:30:00`), in
/// seconds.
fn time_span(text: &str) -> Option<i64> {
    let text = text.trim();
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') => (d.parse::<i64>().ok()?, rest),
        _ => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return None;
    };
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    // Seconds may carry a fraction (`00:00:30.5`), dropped.
    let s: i64 = s.split('.').next()?.parse().ok()?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&s) || days < 0 {
        return None;
    }
    Some(((days * 24 + h) * 60 + m) * 60 + s)
}

/// The element children of `node`.
fn elements<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(|n| n.is_element())
}

/// The first child element of `node` named `name`.
fn element<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    elements(node).find(|n| n.tag_name().name() == name)
}

/// `system.webServer/rewrite/rules`, for notes.
fn path_of(node: Node) -> String {
    let mut names: Vec<&str> = node
        .ancestors()
        .filter(|n| n.is_element() && n.tag_name().name() != "configuration")
        .map(|n| n.tag_name().name())
        .collect();
    names.reverse();
    names.join("/")
}

/// IIS's booleans: `true`/`false` in any case.
fn is_true(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

fn put(t: &mut toml::Table, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        t.insert(key.into(), Value::String(v.into()));
    }
}

fn put_bool(t: &mut toml::Table, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        t.insert(key.into(), Value::Boolean(is_true(v)));
    }
}

/// A TOML string.
fn quoted(text: &str) -> String {
    Value::String(text.into()).to_string()
}

/// A key as TOML writes it: bare when it can be.
fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans_are_seconds() {
        assert_eq!(time_span("7.00:00:00"), Some(604_800));
        assert_eq!(time_span("01:30:00"), Some(5_400));
        assert_eq!(time_span("00:00:30.5"), Some(30));
        assert_eq!(time_span("365.00:00:00"), Some(31_536_000));
        assert_eq!(time_span("25:00:00"), None);
        assert_eq!(time_span("soon"), None);
    }

    #[test]
    fn default_documents_put_the_folders_own_first() {
        let xml = r#"<configuration><system.webServer>
            <defaultDocument><files>
              <remove value="iisstart.htm" /><add value="index.php" />
            </files></defaultDocument>
          </system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let files = table["default_document"]["files"].as_array().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "index.php",
                "index.html",
                "index.htm",
                "default.htm",
                "default.html"
            ]
        );
    }
}
