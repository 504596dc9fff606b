//! `riis import-web-config`: the `system.webServer` settings of an IIS
//! `web.config` as riis configuration, for a site moving from IIS.
//!
//! What has a riis equivalent becomes its section: URL Rewrite's inbound
//! rules and rewrite maps (`rewrite`), `defaultDocument`
//! (`default_document`), `httpProtocol` (`protocol`), `httpRedirect`
//! (`http_redirect`), `staticContent` (`static_file`), `httpErrors`
//! (`http_errors`), `security/requestFiltering` (`request_filtering`),
//! `security/ipSecurity` (`ip_security`), `security/authentication`
//! (`anonymous_authentication`, `basic_authentication`),
//! `security/authorization` (`authorization`), `cors` (`cors`), `directoryBrowse`
//! (`directory_listing`), `serverSideInclude` (`server_side_include`), `urlCompression` (`static_compression`,
//! `dynamic_compression`), `httpPlatform` (`http_platform`, its
//! `requestTimeout` as `proxy.timeout`), `aspNetCore` (`asp_net_core`,
//! likewise) and the handler mappings of those two modules (`[[handlers]]`
//! with ReverseProxy after the module). A comment names the modules to
//! list. Every element and attribute not
//! converted is named in comments at the top of the output and on standard
//! error. Attributes left out are written with IIS's defaults where riis's
//! differ. The output is checked by parsing it back before it is printed;
//! `riis check-config` then checks it against the modules.
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

/// The deepest nesting of elements read: the XML parser recurses, and a
/// file nested thousands deep would overflow the stack. Real ones stay
/// under a dozen.
const MAX_DEPTH: usize = 256;

/// Converts the text of a `web.config`; `location` is the URL path of the
/// folder it sits in (`/blog`), if not the site's root.
pub fn convert(xml: &str, location: Option<&str>) -> Result<Converted, String> {
    if riis_modules::xml_nesting_depth(xml) > MAX_DEPTH {
        return Err(format!(
            "elements are nested deeper than {MAX_DEPTH} levels"
        ));
    }
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
        tables: Vec::new(),
        handler_modules: Vec::new(),
        left_out: Vec::new(),
        in_folder: false,
        parent_lists: Vec::new(),
        own_lists: Vec::new(),
        written: Vec::new(),
        rule_groups: None,
        below_root: location.as_deref().is_some_and(|l| l != "/"),
        redirect_parents: Vec::new(),
        folder: None,
    };
    // `<location path=".">` (ASP.NET Core's template, Umbraco) is the file's
    // own folder: its settings are the file's.
    let own_folder = |n: &Node| {
        n.tag_name().name() == "location"
            && matches!(n.attribute("path").map(str::trim), None | Some("" | "."))
    };
    let mut web_servers = Vec::new();
    let mut folders = Vec::new();
    for child in elements(root) {
        match child.tag_name().name() {
            "system.webServer" => web_servers.push(child),
            "location" if own_folder(&child) => {
                web_servers.extend(elements(child).filter(|n| n.tag_name().name() == "system.webServer"));
                for other in elements(child).filter(|n| n.tag_name().name() != "system.webServer") {
                    out.leave(other, "not IIS's web server settings");
                }
            }
            "location" => match (location.as_deref(), child.attribute("path")) {
                // A folder below this one: a location of its own.
                (Some(base), Some(path)) => match below(base, path) {
                    // Two spellings of one folder are one location (riis's
                    // and IIS's locations ignore case): one entry, each
                    // element's settings in the file's order.
                    Some(url) => match folders
                        .iter_mut()
                        .find(|(known, _): &&mut (String, Vec<Node>)| known.eq_ignore_ascii_case(&url))
                    {
                        Some((_, nodes)) => nodes.push(child),
                        None => folders.push((url, vec![child])),
                    },
                    None => out.leave(child, &format!("path \"{path}\" is not a folder below this one")),
                },
                (_, path) => out.leave(
                    child,
                    &format!(
                        "path \"{}\": convert with `--location /` (or the folder's path) to get it as a location of its own",
                        path.unwrap_or_default()
                    ),
                ),
            },
            "configSections" => {}
            _ => out.leave(
                child,
                "not IIS's web server settings (ASP.NET and .NET settings stay with the application)",
            ),
        }
    }
    if let Some(path) = &location {
        out.tables.push((
            "[[sites.locations]]".to_owned(),
            format!("path = {}\n", quoted(path)),
        ));
    }
    let mut seen = Vec::new();
    for node in &web_servers {
        web_server(&mut out, *node, location.as_deref(), &mut seen)?;
    }
    let file_redirects = Redirects {
        rules: redirect_rules_of(out.parent_list_at_file("http_redirect.wildcards")),
        destination: out
            .parent_list_at_file("http_redirect.destination")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    };
    out.redirect_parents = redirect_parents(&file_redirects, &folders);
    // `<location path="wp-admin">`: the next entries, below the file's own
    // (riis merges a location's sections onto those of the locations
    // above it, as IIS merges a folder's onto its parent's).
    for (url, nodes) in folders {
        out.folder = Some(url.clone());
        out.tables.push((
            "[[sites.locations]]".to_owned(),
            format!("path = {}\n", quoted(&url)),
        ));
        let first_path = nodes[0].attribute("path").unwrap_or_default();
        out.in_folder = true;
        for (n, folder) in nodes.iter().enumerate() {
            let mut inner = Vec::new();
            for child in elements(*folder) {
                match child.tag_name().name() {
                    "system.webServer" => inner.push(child),
                    _ => out.leave(child, "not IIS's web server settings"),
                }
            }
            if inner.len() > 1 {
                return Err(format!(
                    "<location path=\"{}\"> has more than one <system.webServer>",
                    one_line(&url)
                ));
            }
            if let Some(node) = inner.first() {
                out.own_lists = list_edits(*node);
                out.written.clear();
                web_server(&mut out, *node, Some(&url), &mut Vec::new())?;
                write_cleared_lists(&mut out);
            }
            // A second spelling of the folder that sets what the first set
            // too: IIS refuses such a file as well (a duplicate section);
            // say so rather than write a table or a key twice.
            if n > 0 {
                let start = out.location_start() - 1;
                let block: String = out.tables[start..]
                    .iter()
                    .map(|(header, lines)| format!("{header}\n{lines}"))
                    .collect();
                if block.parse::<toml::Table>().is_err() {
                    return Err(format!(
                        "<location path=\"{}\"> and <location path=\"{}\"> are one folder (locations ignore case) and set the same settings; merge them into one",
                        one_line(first_path),
                        one_line(folder.attribute("path").unwrap_or_default()),
                    ));
                }
            }
        }
    }
    let mut text = String::new();
    let _ = writeln!(text, "# Converted by `riis import-web-config`.");
    let mut modules: Vec<&str> = Vec::new();
    for (header, _) in &out.tables {
        let section = header
            .trim_matches(['[', ']'])
            .trim_start_matches(out.prefix)
            .split('.')
            .next()
            .unwrap_or_default();
        if let Some(module) = module_of(section).filter(|m| !modules.contains(m)) {
            modules.push(module);
        }
    }
    for module in &out.handler_modules {
        if !modules.contains(module) {
            modules.push(module);
        }
    }
    if !modules.is_empty() {
        let _ = writeln!(
            text,
            "# List these modules in [[modules]] for the sections below: {}.",
            modules.join(", ")
        );
    }
    for line in &out.left_out {
        let _ = writeln!(text, "# Not converted: {line}");
    }
    for (header, lines) in &out.tables {
        let _ = write!(text, "\n{header}\n{lines}");
    }
    // What is printed must be TOML a configuration can hold.
    text.parse::<toml::Table>()
        .map_err(|e| format!("the converted text is not valid TOML (a bug): {e}"))?;
    Ok(Converted {
        text,
        left_out: out.left_out,
    })
}

/// The built-in module that declares `section`.
fn module_of(section: &str) -> Option<&'static str> {
    Some(match section {
        "rewrite" => "UrlRewrite",
        "default_document" => "DefaultDocument",
        "protocol" => "ProtocolSupport",
        "http_redirect" => "HttpRedirection",
        "static_file" => "StaticFile",
        "http_errors" => "CustomError",
        "request_filtering" => "RequestFiltering",
        "ip_security" => "IpRestriction",
        "directory_listing" => "DirectoryListing",
        "static_compression" => "StaticCompression",
        "dynamic_compression" => "DynamicCompression",
        "http_platform" => "HttpPlatformHandler",
        "asp_net_core" => "AspNetCoreModule",
        "proxy" => "ReverseProxy",
        "webdav" => "WebDav",
        "cors" => "Cors",
        "server_side_include" => "ServerSideInclude",
        "authorization" => "UrlAuthorization",
        "basic_authentication" => "BasicAuthentication",
        "anonymous_authentication" => "AnonymousAuthentication",
        _ => return None,
    })
}

/// The URL of `<location path=…>` below the folder at `base`: plain
/// folder names, no `..`, `.`, `~` or control characters.
fn below(base: &str, path: &str) -> Option<String> {
    let path = path.trim().trim_matches('/');
    let plain = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && !matches!(segment, "." | ".." | "~")
                && !segment.contains('\\')
                && !segment.chars().any(char::is_control)
        });
    plain.then(|| format!("{}/{path}", base.trim_end_matches('/')))
}

/// A URL path for `--location`: starts with `/`, no trailing `/` (but the
/// site's root, `/`).
fn location_path(path: &str) -> Result<String, String> {
    if path.trim() == "/" {
        return Ok("/".to_owned());
    }
    let trimmed = path.trim().trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.contains("//") || trimmed.chars().any(char::is_control)
    {
        return Err(format!(
            "--location `{}` is not a URL path such as `/blog`",
            path.escape_debug()
        ));
    }
    Ok(trimmed.to_owned())
}

/// The tables being written and the notes on what was left out.
struct Output {
    /// Before each table's name: `sites.locations.` for a location.
    prefix: &'static str,
    /// Each table's header (`[protocol]`, `[[rewrite.rules]]`) and its
    /// `key = value` lines, the last one being written.
    tables: Vec<(String, String)>,
    /// Modules the converted handlers list, for the comment naming the
    /// modules to list.
    handler_modules: Vec<&'static str>,
    left_out: Vec<String>,
    /// Writing a `<location path=…>` of the file (a folder below the
    /// file's own): its lists add to the file's, as IIS's collections add
    /// to the parent's, where riis's would replace them.
    in_folder: bool,
    /// The file's own lists, by `section.key` (recorded while `in_folder`
    /// is false).
    parent_lists: Vec<(String, Value)>,
    /// The folder's lists (by `section.key`) with a `<clear />` or a
    /// `<remove>` of their own: written as the folder's alone, since what
    /// they take away from the parent's cannot be told apart here.
    own_lists: Vec<(String, ListEdit)>,
    /// The lists the folder wrote (a cleared list it did not write is
    /// written empty, or riis's location would inherit the parent's).
    written: Vec<String>,
    /// While an inbound rule's conditions are written: the groups of its
    /// pattern (`{R:n}` past them are written empty, as IIS reads them).
    rule_groups: Option<usize>,
    /// The file is a folder's below the site's root (`--location /blog`):
    /// its lists replace those of the locations above it in riis, which
    /// this conversion cannot see.
    below_root: bool,
    /// For each folder of the file, the `httpRedirect` it inherits: its
    /// nearest enclosing folder's (in the file, before or after it), or
    /// the file's own.
    redirect_parents: Vec<(String, Redirects)>,
    /// The folder being written.
    folder: Option<String>,
}

/// `httpRedirect`'s wildcard rules (wildcard, destination) and destination,
/// as a folder inherits them.
#[derive(Clone, Default)]
struct Redirects {
    rules: Vec<(String, String)>,
    destination: String,
}

impl Redirects {
    /// What `node` (an `httpRedirect`, if the folder has one) makes of
    /// these, and whether it edits the rules; entries it cannot read go
    /// to `unread`.
    fn under<'a, 'i>(
        &self,
        node: Option<Node<'a, 'i>>,
        unread: &mut Vec<Node<'a, 'i>>,
    ) -> (Self, bool) {
        let mut next = self.clone();
        let mut edited = false;
        let Some(node) = node else {
            return (next, false);
        };
        // In order: `<remove>` takes one out (IIS Manager writes one
        // before an entry it changes).
        for entry in elements(node) {
            let keep = |rules: &mut Vec<(String, String)>, w: &str| {
                rules.retain(|(x, _)| !x.eq_ignore_ascii_case(w));
            };
            match (
                entry.tag_name().name(),
                entry.attribute("wildcard"),
                entry.attribute("destination"),
            ) {
                ("add", Some(w), Some(d)) => {
                    keep(&mut next.rules, w);
                    next.rules.push((w.to_owned(), d.to_owned()));
                }
                ("remove", Some(w), _) => keep(&mut next.rules, w),
                ("clear", _, _) => next.rules.clear(),
                _ => {
                    unread.push(entry);
                    continue;
                }
            }
            edited = true;
        }
        if let Some(d) = node.attribute("destination") {
            next.destination = d.to_owned();
        }
        (next, edited)
    }
}

/// For each of `folders` (URL and elements), the `httpRedirect` it
/// inherits from `file`'s and the folders enclosing it.
fn redirect_parents(file: &Redirects, folders: &[(String, Vec<Node>)]) -> Vec<(String, Redirects)> {
    let own = |url: &str| -> Option<Node> {
        let (_, nodes) = folders.iter().find(|(u, _)| u == url)?;
        nodes
            .iter()
            .flat_map(|n| elements(*n))
            .filter(|n| n.tag_name().name() == "system.webServer")
            .flat_map(elements)
            .find(|n| n.tag_name().name() == "httpRedirect")
    };
    // Each folder's own result, from the top down.
    let mut by_depth: Vec<&str> = folders.iter().map(|(u, _)| u.as_str()).collect();
    by_depth.sort_by_key(|u| u.matches('/').count());
    let mut resolved: Vec<(String, Redirects)> = Vec::new();
    let mut parents = Vec::new();
    for url in by_depth {
        let parent = resolved
            .iter()
            .filter(|(u, _)| {
                // A folder strictly above this one (folders ignore case).
                let u = u.trim_end_matches('/');
                url.get(..u.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(u))
                    && url.as_bytes().get(u.len()) == Some(&b'/')
            })
            .max_by_key(|(u, _)| u.len())
            .map_or(file, |(_, r)| r)
            .clone();
        let (mine, _) = parent.under(own(url), &mut Vec::new());
        parents.push((url.to_owned(), parent));
        resolved.push((url.to_owned(), mine));
    }
    parents
}

/// How a folder's list changes its parent's, besides adding.
#[derive(Clone, Copy, PartialEq)]
enum ListEdit {
    /// `<clear />`: the folder's entries alone.
    Clear,
    /// `<remove>`: some of the parent's entries go.
    Remove,
}

/// The lists IIS's collections add to a parent's, by `section.key`, and
/// where each is in a `<system.webServer>` (the element path of its
/// collection). Written in a folder's location, they are joined with the
/// file's own (riis's location lists replace the ones they inherit). Each
/// entry is kept once; one the folder gives again (a status's page, an
/// address's rule) replaces the parent's.
const LIST_ELEMENTS: &[(&str, &[&str])] = &[
    (
        "request_filtering.hidden_segments",
        &["security", "requestFiltering", "hiddenSegments"],
    ),
    (
        "request_filtering.file_extensions",
        &["security", "requestFiltering", "fileExtensions"],
    ),
    (
        "request_filtering.verbs",
        &["security", "requestFiltering", "verbs"],
    ),
    (
        "request_filtering.header_limits",
        &[
            "security",
            "requestFiltering",
            "requestLimits",
            "headerLimits",
        ],
    ),
    (
        "request_filtering.denied_url_sequences",
        &["security", "requestFiltering", "denyUrlSequences"],
    ),
    (
        "request_filtering.denied_query_string_sequences",
        &["security", "requestFiltering", "denyQueryStringSequences"],
    ),
    ("ip_security.rules", &["security", "ipSecurity"]),
    ("authorization.rules", &["security", "authorization"]),
    ("http_errors.errors", &["httpErrors"]),
    ("cors.origins", &["cors"]),
];

/// Writes empty each list the folder cleared and left empty: unwritten,
/// riis's location would inherit the parent's whole list.
fn write_cleared_lists(out: &mut Output) {
    let cleared: Vec<String> = out
        .own_lists
        .iter()
        .filter(|(path, edit)| *edit == ListEdit::Clear && !out.written.contains(path))
        .map(|(path, _)| path.clone())
        .collect();
    for path in cleared {
        let Some((section, key)) = path.split_once('.') else {
            continue;
        };
        let empty = match key {
            // `key` gives a cleared one both of its arrays.
            "file_extensions" => Value::Table(toml::Table::new()),
            // Tables by name merge key by key in riis: nothing written
            // here takes the parent's entries away.
            "verbs" | "header_limits" => {
                out.left_out.push(format!(
                    "{path}: the folder clears the list, which a riis location cannot (its entries merge with the parent's): repeat the parent's with the values you want here"
                ));
                continue;
            }
            _ => Value::Array(Vec::new()),
        };
        out.table(section);
        out.key(key, empty);
    }
}

/// The folder's lists that clear or remove entries, under `web_server`.
fn list_edits(web_server: Node) -> Vec<(String, ListEdit)> {
    let mut edits = Vec::new();
    for (path, elements_path) in LIST_ELEMENTS {
        let mut node = Some(web_server);
        for name in *elements_path {
            node = node.and_then(|n| element(n, name));
        }
        let Some(list) = node else { continue };
        let entries: Vec<Node> = elements(list).collect();
        if entries.iter().any(|e| e.tag_name().name() == "clear") {
            edits.push(((*path).to_owned(), ListEdit::Clear));
            continue;
        }
        // IIS Manager writes `<remove …/>` before each entry it changes:
        // a removal that is added again is a replacement, which joining
        // does already.
        let takes_away = entries.iter().enumerate().any(|(i, e)| {
            e.tag_name().name() == "remove"
                && !entries[i + 1..].iter().any(|later| {
                    later.tag_name().name() != "remove"
                        && e.attributes().all(|a| {
                            later
                                .attribute(a.name())
                                .is_some_and(|v| v.eq_ignore_ascii_case(a.value()))
                        })
                })
        });
        if takes_away {
            edits.push(((*path).to_owned(), ListEdit::Remove));
        }
    }
    edits
}

/// The entry of a list `item` stands for, for joining a folder's list with
/// its parent's: a string in any case, or a table by the keys IIS's
/// collections are keyed by.
fn identity(item: &Value) -> String {
    match item {
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Table(t) => [
            "status",
            "substatus",
            "address",
            "subnet_mask",
            "origin",
            "access",
            "users",
            "roles",
            "verbs",
        ]
        .iter()
        .filter_map(|k| {
            t.get(*k)
                .map(|v| format!("{k}={}", v.to_string().to_ascii_lowercase()))
        })
        .collect::<Vec<_>>()
        .join(","),
        other => other.to_string(),
    }
}

/// `parent` with `own` added: arrays joined (the parent's entries first,
/// each entry once, the folder's replacing an equal one), tables joined
/// key by key, anything else the folder's.
fn joined(parent: &Value, own: Value) -> Value {
    match (parent, own) {
        (Value::Array(p), Value::Array(o)) => {
            let mut out = p.clone();
            for item in o {
                let id = identity(&item);
                match out.iter().position(|e| identity(e) == id) {
                    Some(at) => out[at] = item,
                    None => out.push(item),
                }
            }
            Value::Array(out)
        }
        (Value::Table(p), Value::Table(o)) => {
            let mut out = p.clone();
            for (k, v) in o {
                let merged = match out.get(&k) {
                    Some(pv) => joined(pv, v),
                    None => v,
                };
                out.insert(k, merged);
            }
            Value::Table(out)
        }
        (_, own) => own,
    }
}

impl Output {
    /// Notes that `node` was not converted, and why. The note is one line
    /// whatever the file holds (it goes into a comment).
    fn leave(&mut self, node: Node, why: &str) {
        self.left_out
            .push(one_line(&format!("<{}> ({why})", path_of(node))));
    }

    /// Notes the attributes of `node` that are not `handled`.
    fn leave_attributes(&mut self, node: Node, handled: &[&str]) {
        for attribute in node.attributes() {
            let name = attribute.name();
            if handled.contains(&name) || attribute.namespace().is_some() {
                continue;
            }
            if name == "configSource" {
                // The section's entries are in another file, which is not
                // read: everything it holds is missing from the output.
                self.leave(
                    node,
                    &format!(
                        "its entries are in `{}`, which is not read: paste that file's element in place of this one and convert again",
                        attribute.value()
                    ),
                );
            } else {
                self.leave(node, &format!("attribute `{name}` has no conversion"));
            }
        }
    }

    /// Notes the child elements of `node` that are not `handled`.
    fn leave_children(&mut self, node: Node, handled: &[&str]) {
        for child in elements(node) {
            if !handled.contains(&child.tag_name().name()) {
                self.leave(child, "no conversion");
            }
        }
    }

    /// Goes on with the table `name` (`rewrite`, `protocol`): a new one,
    /// or the one of that name already begun (two IIS sections may write
    /// to one riis section: `removeServerHeader` to `protocol`).
    fn table(&mut self, name: &str) {
        let header = format!("[{}{name}]", self.prefix);
        let from = self.location_start();
        match self.tables[from..]
            .iter()
            .position(|(h, _)| *h == header)
            .map(|i| from + i)
        {
            Some(i) => {
                let begun = self.tables.remove(i);
                self.tables.push(begun);
            }
            None => self.tables.push((header, String::new())),
        }
    }

    /// Whether the table `name` is begun for the location being written.
    fn has_table(&self, name: &str) -> bool {
        let header = format!("[{}{name}]", self.prefix);
        self.tables[self.location_start()..]
            .iter()
            .any(|(h, _)| *h == header)
    }

    /// Where the tables of the location being written begin.
    fn location_start(&self) -> usize {
        self.tables
            .iter()
            .rposition(|(h, _)| h == "[[sites.locations]]")
            .map_or(0, |i| i + 1)
    }

    /// Drops the entries of the array of tables `name` written so far for
    /// this location (a `<clear />` after some `<add>`s).
    fn drop_entries(&mut self, name: &str) {
        let header = format!("[[{}{name}]]", self.prefix);
        let from = self.location_start();
        let mut index = 0;
        self.tables.retain(|(h, _)| {
            index += 1;
            index <= from || *h != header
        });
    }

    /// Drops the entry of the array of tables `name` written for this
    /// location whose `name` key is `entry`; whether there was one.
    fn drop_entry_named(&mut self, name: &str, entry: &str) -> bool {
        let header = format!("[[{}{name}]]", self.prefix);
        let line = format!("name = {}", Value::String(entry.into()));
        let from = self.location_start();
        let found = self.tables[from..]
            .iter()
            .position(|(h, lines)| *h == header && lines.lines().any(|l| l == line));
        if let Some(at) = found {
            self.tables.remove(from + at);
        }
        found.is_some()
    }

    /// Starts an entry of the array of tables `name`.
    fn array_entry(&mut self, name: &str) {
        self.tables
            .push((format!("[[{}{name}]]", self.prefix), String::new()));
    }

    /// `key = value` in the current table.
    fn key(&mut self, key: &str, value: impl Into<Value>) {
        let mut value = value.into();
        if let Some(path) = self.list_path(key) {
            if !self.in_folder {
                if self.below_root {
                    self.left_out.push(format!(
                        "{path}: in riis a location's list replaces the one it inherits, where IIS adds a folder's entries to its parent's: add the parent's entries here"
                    ));
                }
                self.parent_lists.push((path, value.clone()));
            } else {
                self.written.push(path.clone());
                match self.own_lists.iter().find(|(p, _)| *p == path).map(|(_, e)| *e) {
                    None => {
                        if let Some(parent) = self.parent_list(&path) {
                            value = joined(parent, value);
                        }
                    }
                    Some(_) if path.ends_with(".verbs") || path.ends_with(".header_limits") => {
                        self.left_out.push(format!(
                            "{path}: the folder clears or removes entries, which a riis location cannot (its entries merge with the parent's by name): repeat the parent's with the values you want here"
                        ));
                    }
                    Some(ListEdit::Clear) => {
                        // Both arrays, or the other one is inherited.
                        if let Value::Table(t) = &mut value {
                            if path.ends_with(".file_extensions") {
                                for key in ["allow", "deny"] {
                                    t.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                                }
                            }
                        }
                    }
                    Some(ListEdit::Remove) => self.left_out.push(format!(
                        "{path}: the folder's list takes entries of its parent's away (<remove>): it is written as the folder's own, without the parent's other entries; add those it should keep"
                    )),
                }
            }
        }
        if let Some((_, lines)) = self.tables.last_mut() {
            let _ = writeln!(lines, "{} = {}", bare_or_quoted(key), value);
        }
    }

    /// `section.key` when `key` of the current table is one of
    /// [`LIST_ELEMENTS`].
    fn list_path(&self, key: &str) -> Option<String> {
        let (header, _) = self.tables.last()?;
        let table = header
            .strip_prefix('[')?
            .strip_suffix(']')?
            .strip_prefix(self.prefix)?;
        let path = format!("{table}.{key}");
        LIST_ELEMENTS
            .iter()
            .any(|(p, _)| *p == path)
            .then_some(path)
    }

    /// The file's own `section.key` list, whatever is being written.
    fn parent_list_at_file(&self, path: &str) -> Option<&Value> {
        self.parent_lists
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v)
    }

    /// The file's own `section.key` list, while a folder is written.
    fn parent_list(&self, path: &str) -> Option<&Value> {
        self.in_folder
            .then(|| self.parent_lists.iter().find(|(p, _)| p == path))
            .flatten()
            .map(|(_, v)| v)
    }
}

/// `text` with its control characters (line breaks) escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `system.webServer`'s children.
fn web_server(
    out: &mut Output,
    node: Node,
    location: Option<&str>,
    seen: &mut Vec<String>,
) -> Result<(), String> {
    for child in elements(node) {
        let name = child.tag_name().name();
        // Two blocks of one folder (ASP.NET Core's `<location path=".">`
        // and the file's own) may each set sections, but not the same one,
        // as IIS reads them. `<security>` only groups sections
        // (requestFiltering, ipSecurity): those are what count.
        let sections: Vec<String> = if name == "security" {
            elements(child)
                .map(|c| format!("security/{}", c.tag_name().name()))
                .collect()
        } else {
            vec![name.to_owned()]
        };
        if let Some(twice) = sections.iter().find(|s| seen.contains(s)) {
            return Err(format!(
                "<{}> is set twice for one folder (in one <system.webServer>, or in two of them)",
                one_line(twice)
            ));
        }
        seen.extend(sections);
        match name {
            "rewrite" => rewrite(out, child, location)?,
            "defaultDocument" => default_document(out, child),
            "httpProtocol" => http_protocol(out, child),
            "httpRedirect" => http_redirect(out, child),
            "staticContent" => static_content(out, child)?,
            "httpErrors" => http_errors(out, child)?,
            "security" => security(out, child)?,
            "directoryBrowse" => {
                out.leave_attributes(child, &["enabled"]);
                out.table("directory_listing");
                if let Some(v) = child.attribute("enabled") {
                    out.key("enabled", is_true(v));
                }
            }
            "urlCompression" => {
                out.leave_attributes(child, &["doStaticCompression", "doDynamicCompression"]);
                for (attribute, section) in [
                    ("doStaticCompression", "static_compression"),
                    ("doDynamicCompression", "dynamic_compression"),
                ] {
                    if let Some(v) = child.attribute(attribute) {
                        out.table(section);
                        out.key("enabled", is_true(v));
                    }
                }
            }
            "serverSideInclude" => {
                out.leave_attributes(child, &["ssiExecDisable"]);
                out.table("server_side_include");
                if let Some(v) = child.attribute("ssiExecDisable") {
                    out.key("exec_disabled", is_true(v));
                }
            }
            "httpPlatform" => http_platform(out, child)?,
            "aspNetCore" => asp_net_core(out, child, location)?,
            "handlers" => handlers(out, child),
            "webdav" => webdav(out, child),
            "cors" => cors(out, child)?,
            "modules" => out.leave(child, "the module list is `[[modules]]` in riis"),
            _ => out.leave(child, "no conversion for this section"),
        }
    }
    Ok(())
}

/// URL Rewrite: inbound and outbound rules, rewrite maps and
/// preconditions.
fn rewrite(out: &mut Output, node: Node, location: Option<&str>) -> Result<(), String> {
    let mut wrote_folder = false;
    for child in elements(node) {
        match child.tag_name().name() {
            "rules" => {
                out.leave_attributes(child, &[]);
                if let Some(folder) = location.filter(|_| !wrote_folder) {
                    // The rules of a folder's web.config match the path
                    // below it, and relative URLs are from it.
                    out.table("rewrite");
                    out.key("folder", folder);
                    wrote_folder = true;
                }
                let mut removed = Vec::new();
                for rule in elements(child) {
                    match rule.tag_name().name() {
                        "rule" => inbound_rule(out, rule)?,
                        "clear" => {
                            // The inherited rules do not run here (nor
                            // below, as in IIS), and neither do the ones
                            // the file added before it.
                            out.drop_entries("rewrite.rules");
                            removed.clear();
                            out.table("rewrite");
                            out.key("clear_rules", true);
                        }
                        "remove" => removed.extend(remove_rule(out, rule, "rules")?),
                        _ => out.leave(rule, "only <rule> entries are converted"),
                    }
                }
                write_removed(out, "remove_rules", removed);
            }
            "rewriteMaps" => {
                out.leave_attributes(child, &[]);
                for map in elements(child) {
                    match map.tag_name().name() {
                        "rewriteMap" => rewrite_map(out, map)?,
                        _ => out.leave(map, "only <rewriteMap> entries are converted"),
                    }
                }
            }
            "outboundRules" => outbound_rules(out, child)?,
            _ => out.leave(child, "no conversion for this part of URL Rewrite"),
        }
    }
    Ok(())
}

/// One `<rule>`.
fn inbound_rule(out: &mut Output, rule: Node) -> Result<(), String> {
    let name = rule.attribute("name").unwrap_or("");
    let named = one_line(name);
    out.leave_attributes(
        rule,
        &["name", "enabled", "stopProcessing", "patternSyntax"],
    );
    out.leave_children(rule, &["match", "conditions", "serverVariables", "action"]);
    let Some(matched) = element(rule, "match") else {
        return Err(format!("rule `{named}` has no <match>"));
    };
    out.leave_attributes(matched, &["url", "ignoreCase", "negate"]);
    out.array_entry("rewrite.rules");
    out.key("name", name);
    if rule.attribute("enabled").is_some_and(|v| !is_true(v)) {
        out.key("enabled", false);
    }
    let pattern = matched
        .attribute("url")
        .ok_or_else(|| format!("rule `{named}`: <match> has no `url`"))?;
    out.key("pattern", pattern);
    // IIS gives `{R:n}` past the pattern's groups as empty; riis refuses
    // such a rule, so they are written empty here, and named.
    let groups = riis_modules::url_rewrite::pattern_group_count(
        pattern,
        rule.attribute("patternSyntax").unwrap_or("ECMAScript"),
    );
    out.rule_groups = groups;
    rule_switches(out, rule, matched, &named);
    out.rule_groups = None;
    let without_missing_groups = |out: &mut Output, text: &str| -> String {
        let Some(groups) = groups else {
            return text.to_owned();
        };
        let (kept, dropped) = drop_missing_groups(text, groups);
        for n in dropped {
            out.left_out.push(format!(
                "rule `{named}`: {{R:{n}}} is past its pattern's {groups} group(s): IIS gives it empty, and so it is written here"
            ));
        }
        kept
    };
    if let Some(variables) = element(rule, "serverVariables") {
        let mut list = Vec::new();
        for v in elements(variables) {
            if v.tag_name().name() != "set" {
                out.leave(v, "only <set> entries are converted");
                continue;
            }
            out.leave_attributes(v, &["name", "value", "replace"]);
            let mut t = toml::Table::new();
            put(&mut t, "name", v.attribute("name"));
            let value = without_missing_groups(out, v.attribute("value").unwrap_or(""));
            t.insert("value".into(), Value::String(value));
            put_bool(&mut t, "replace", v.attribute("replace"));
            list.push(Value::Table(t));
        }
        if !list.is_empty() {
            out.key("server_variables", Value::Array(list));
        }
    }
    // No <action>: IIS's `None`, riis's default too.
    let Some(action) = element(rule, "action") else {
        return Ok(());
    };
    out.leave_attributes(
        action,
        &[
            "type",
            "url",
            "appendQueryString",
            "redirectType",
            "statusCode",
            "subStatusCode",
            "statusReason",
            "statusDescription",
            "logRewrittenUrl",
        ],
    );
    let mut t = toml::Table::new();
    let kind = canonical(
        action.attribute("type").unwrap_or("None"),
        &[
            "Rewrite",
            "Redirect",
            "CustomResponse",
            "AbortRequest",
            "None",
        ],
    );
    t.insert("type".into(), Value::String(kind.clone()));
    if let Some(url) = action.attribute("url").filter(|_| kind != "None") {
        let url = &without_missing_groups(out, url);
        let to_server = ["http://", "https://"]
            .iter()
            .any(|s| url.trim_start().to_ascii_lowercase().starts_with(s));
        if kind == "Rewrite" && to_server {
            out.leave(
                action,
                &format!(
                    "rule `{named}` rewrites to another server: list ReverseProxy, which sends it there"
                ),
            );
        }
        // `index.php/{R:1}` (CodeIgniter, Yii, Slim): a script with a path
        // after it, which riis's handler for `*.php` takes only with
        // `allow_path_info = true` (404 otherwise).
        let path = url.split(['?', '#']).next().unwrap_or("");
        let script = path.split('/').rev().skip(1).find(|segment| {
            // An extension as scripts have (`php`, `aspx`), not a version
            // (`v1.2`).
            segment.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && (1..=5).contains(&ext.len())
                    && ext.bytes().all(|b| b.is_ascii_alphabetic())
            })
        });
        if kind == "Rewrite" && !to_server {
            if let Some(script) = script {
                out.leave(
                    action,
                    &format!(
                        "rule `{named}` rewrites to `{script}` with a path after it: its handler needs `allow_path_info = true` in [[handlers]] (IIS's allowPathInfo), or the rewritten URL gets 404"
                    ),
                );
            }
        }
        t.insert("url".into(), Value::String(url.into()));
    }
    put_bool(
        &mut t,
        "append_query_string",
        action.attribute("appendQueryString"),
    );
    if let Some(v) = action.attribute("redirectType") {
        // IIS's configuration takes an enumeration's value as well as its
        // name (`redirectType="302"`).
        let v = match v.trim() {
            "301" => "Permanent",
            "302" => "Found",
            "303" => "SeeOther",
            "307" => "Temporary",
            named => named,
        };
        t.insert(
            "redirect_type".into(),
            Value::String(canonical(
                v,
                &["Permanent", "Found", "SeeOther", "Temporary"],
            )),
        );
    }
    for (attribute, key) in [
        ("statusCode", "status_code"),
        ("subStatusCode", "sub_status_code"),
    ] {
        if let Some(n) = number(action, attribute, &format!("rule `{named}`"))? {
            // IIS's -1 means none.
            if n >= 0 {
                t.insert(key.into(), Value::Integer(n));
            }
        }
    }
    // Meaningful for a Rewrite only (riis refuses it on another action).
    if kind == "Rewrite" {
        put_bool(
            &mut t,
            "log_rewritten_url",
            action.attribute("logRewrittenUrl"),
        );
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

/// `text` with each `{R:n}` past `groups` written as nothing, and the
/// numbers dropped.
fn drop_missing_groups(text: &str, groups: usize) -> (String, Vec<usize>) {
    let mut kept = String::with_capacity(text.len());
    let mut dropped = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("{R:") {
        kept.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let number = after[..digits].parse::<usize>().ok();
        match (number, after[digits..].starts_with('}')) {
            (Some(n), true) if n > groups => {
                dropped.push(n);
                rest = &after[digits + 1..];
            }
            _ => {
                kept.push_str("{R:");
                rest = after;
            }
        }
    }
    kept.push_str(rest);
    (kept, dropped)
}

/// A `<remove name="…"/>` among the rules (`key`: `rules` or
/// `outbound_rules`): one the file added before it is dropped; the name of
/// an inherited one is given back, for `remove_<key>`.
fn remove_rule<'a>(
    out: &mut Output,
    node: Node<'a, '_>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    let name = node
        .attribute("name")
        .ok_or_else(|| format!("a <remove> among the {key} has no `name`"))?;
    Ok((!out.drop_entry_named(&format!("rewrite.{key}"), name)).then_some(name))
}

/// `key = [names]` in the `rewrite` table, when there are names.
fn write_removed(out: &mut Output, key: &str, names: Vec<&str>) {
    if names.is_empty() {
        return;
    }
    out.table("rewrite");
    let names = names.into_iter().map(|n| Value::String(n.into())).collect();
    out.key(key, Value::Array(names));
}

/// What inbound and outbound rules write alike, after their pattern:
/// `rule`'s and its `<match>`'s switches, and its conditions.
fn rule_switches(out: &mut Output, rule: Node, matched: Node, named: &str) {
    if let Some(syntax) = rule.attribute("patternSyntax") {
        out.key(
            "pattern_syntax",
            canonical(syntax, &["ECMAScript", "Wildcard", "ExactMatch"]),
        );
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
        out.leave_attributes(conditions, &["logicalGrouping", "trackAllCaptures"]);
        conditions_of(out, conditions, named);
    }
}

/// `<outboundRules>`: the rules, their preconditions and custom tags.
fn outbound_rules(out: &mut Output, node: Node) -> Result<(), String> {
    // `rewriteBeforeCache` (the kernel cache's) has no riis equivalent.
    out.leave_attributes(node, &[]);
    let tag_groups = element(node, "customTags");
    let mut removed = Vec::new();
    for child in elements(node) {
        match child.tag_name().name() {
            "rule" => outbound_rule(out, child, tag_groups)?,
            "preConditions" => {
                for precondition in elements(child) {
                    match precondition.tag_name().name() {
                        "preCondition" => precondition_of(out, precondition)?,
                        _ => out.leave(precondition, "only <preCondition> entries are converted"),
                    }
                }
            }
            // Read by the rules that name them.
            "customTags" => {}
            "clear" => {
                out.drop_entries("rewrite.outbound_rules");
                removed.clear();
                out.table("rewrite");
                out.key("clear_outbound_rules", true);
            }
            "remove" => removed.extend(remove_rule(out, child, "outbound_rules")?),
            _ => out.leave(child, "no conversion for this part of the outbound rules"),
        }
    }
    write_removed(out, "remove_outbound_rules", removed);
    Ok(())
}

/// One outbound `<rule>`; `tag_groups` is `<customTags>`, for a
/// `filterByTags` that names `CustomTags`.
fn outbound_rule(out: &mut Output, rule: Node, tag_groups: Option<Node>) -> Result<(), String> {
    let name = rule.attribute("name").unwrap_or("");
    let named = one_line(name);
    out.leave_attributes(
        rule,
        &[
            "name",
            "enabled",
            "stopProcessing",
            "patternSyntax",
            "preCondition",
        ],
    );
    out.leave_children(rule, &["match", "conditions", "action"]);
    let Some(matched) = element(rule, "match") else {
        return Err(format!("outbound rule `{named}` has no <match>"));
    };
    out.leave_attributes(
        matched,
        &[
            "serverVariable",
            "filterByTags",
            "customTags",
            "pattern",
            "ignoreCase",
            "negate",
        ],
    );
    let no_tags = matched
        .attribute("filterByTags")
        .unwrap_or("")
        .split(',')
        .all(|tag| tag.trim().is_empty() || tag.trim().eq_ignore_ascii_case("None"));
    let whole_body = no_tags
        && matched
            .attribute("serverVariable")
            .is_none_or(str::is_empty);
    if whole_body && matched.attribute("negate").is_some_and(is_true) {
        out.leave(
            rule,
            &format!("outbound rule `{named}` over the whole body is negated, which riis refuses: such a rule replaces what it matches"),
        );
        return Ok(());
    }
    out.array_entry("rewrite.outbound_rules");
    out.key("name", name);
    if rule.attribute("enabled").is_some_and(|v| !is_true(v)) {
        out.key("enabled", false);
    }
    if let Some(precondition) = rule.attribute("preCondition").filter(|p| !p.is_empty()) {
        out.key("precondition", precondition);
    }
    if let Some(variable) = matched
        .attribute("serverVariable")
        .filter(|v| !v.is_empty())
    {
        out.key("server_variable", variable);
    }
    let mut tags = Vec::new();
    let mut custom = Vec::new();
    for tag in matched
        .attribute("filterByTags")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
    {
        if tag.is_empty() || tag.eq_ignore_ascii_case("None") {
            continue;
        }
        if !tag.eq_ignore_ascii_case("CustomTags") {
            tags.push(Value::String(tag.into()));
            continue;
        }
        let wanted = matched.attribute("customTags").unwrap_or("");
        let group = tag_groups.and_then(|groups| {
            elements(groups)
                .find(|g| g.tag_name().name() == "tags" && g.attribute("name") == Some(wanted))
        });
        let Some(group) = group else {
            return Err(format!(
                "outbound rule `{named}`: custom tags `{}` are not in <customTags>",
                one_line(wanted)
            ));
        };
        for tag in elements(group).filter(|t| t.tag_name().name() == "tag") {
            let mut t = toml::Table::new();
            put(&mut t, "tag", tag.attribute("name"));
            put(&mut t, "attribute", tag.attribute("attribute"));
            custom.push(Value::Table(t));
        }
    }
    if !tags.is_empty() {
        out.key("filter_by_tags", Value::Array(tags));
    }
    if !custom.is_empty() {
        out.key("custom_tags", Value::Array(custom));
    }
    let pattern = matched
        .attribute("pattern")
        .ok_or_else(|| format!("outbound rule `{named}`: <match> has no `pattern`"))?;
    out.key("pattern", pattern);
    rule_switches(out, rule, matched, &named);
    let Some(action) = element(rule, "action") else {
        return Err(format!("outbound rule `{named}` has no <action>"));
    };
    out.leave_attributes(action, &["type", "value", "replace"]);
    if action.attribute("replace").is_some_and(|v| !is_true(v)) {
        out.leave(
            action,
            &format!("outbound rule `{named}`: replace=\"false\" (riis replaces the value)"),
        );
    }
    let mut t = toml::Table::new();
    let kind = canonical(
        action.attribute("type").unwrap_or("None"),
        &["Rewrite", "None"],
    );
    // IIS's value defaults to empty (a header removed).
    let value = action
        .attribute("value")
        .or((kind == "Rewrite").then_some(""));
    t.insert("type".into(), Value::String(kind));
    put(&mut t, "value", value);
    out.key("action", Value::Table(t));
    Ok(())
}

/// One `<preCondition>`.
fn precondition_of(out: &mut Output, node: Node) -> Result<(), String> {
    let name = node
        .attribute("name")
        .ok_or("a <preCondition> has no `name`")?;
    out.leave_attributes(node, &["name", "logicalGrouping", "patternSyntax"]);
    let table = format!("rewrite.preconditions.{}", bare_or_quoted(name));
    if out.has_table(&table) {
        return Err(format!(
            "two <preCondition> elements are named `{}`",
            one_line(name)
        ));
    }
    out.table(&table);
    if let Some(syntax) = node.attribute("patternSyntax") {
        out.key(
            "pattern_syntax",
            canonical(syntax, &["ECMAScript", "Wildcard", "ExactMatch"]),
        );
    }
    conditions_of(out, node, &format!("precondition `{}`", one_line(name)));
    Ok(())
}

/// The `logicalGrouping` of `conditions` and its `<add>` entries (a
/// rule's `<conditions>`, or a `<preCondition>`).
fn conditions_of(out: &mut Output, conditions: Node, rule: &str) {
    if let Some(grouping) = conditions.attribute("logicalGrouping") {
        out.key(
            "logical_grouping",
            canonical(grouping, &["MatchAll", "MatchAny"]),
        );
    }
    if conditions
        .attribute("trackAllCaptures")
        .is_some_and(is_true)
    {
        // An inbound rule's (`<rules><rule><conditions>`); outbound rules
        // and preconditions have no such key in riis.
        let inbound = conditions
            .parent()
            .and_then(|rule| rule.parent())
            .is_some_and(|rules| rules.tag_name().name() == "rules");
        if inbound {
            out.key("track_all_captures", true);
        } else {
            out.leave(
                conditions,
                &format!("rule `{rule}`: trackAllCaptures (the last matching condition's groups are {{C:n}} in riis's outbound rules)"),
            );
        }
    }
    let mut list = Vec::new();
    for c in elements(conditions) {
        if c.tag_name().name() != "add" {
            out.leave(c, "only <add> conditions are converted");
            continue;
        }
        out.leave_attributes(
            c,
            &["input", "matchType", "pattern", "ignoreCase", "negate"],
        );
        let mut t = toml::Table::new();
        match (c.attribute("input"), out.rule_groups) {
            (Some(input), Some(groups)) => {
                let (kept, dropped) = drop_missing_groups(input, groups);
                for n in dropped {
                    out.left_out.push(format!(
                        "{rule}: {{R:{n}}} in a condition is past its pattern's {groups} group(s): IIS gives it empty, and so it is written here"
                    ));
                }
                t.insert("input".into(), Value::String(kept));
            }
            (input, _) => put(&mut t, "input", input),
        }
        let match_type = c
            .attribute("matchType")
            .map(|v| canonical(v, &["Pattern", "IsFile", "IsDirectory"]));
        let tests_a_file = matches!(match_type.as_deref(), Some("IsFile" | "IsDirectory"));
        if let Some(v) = match_type {
            t.insert("match_type".into(), Value::String(v));
        }
        match c.attribute("pattern") {
            // IIS ignores a file test's pattern (IIS's import of Apache
            // rules writes `pattern=""` on every one); riis refuses one.
            Some(p) if tests_a_file => {
                if !p.is_empty() {
                    out.left_out.push(format!(
                        "{rule}: the pattern `{}` of a condition that tests for a file or folder, which IIS ignores, is left out",
                        one_line(p)
                    ));
                }
            }
            p => put(&mut t, "pattern", p),
        }
        put_bool(&mut t, "ignore_case", c.attribute("ignoreCase"));
        put_bool(&mut t, "negate", c.attribute("negate"));
        list.push(Value::Table(t));
    }
    if !list.is_empty() {
        out.key("conditions", Value::Array(list));
    }
}

/// One `<rewriteMap>`.
fn rewrite_map(out: &mut Output, map: Node) -> Result<(), String> {
    let name = map
        .attribute("name")
        .ok_or("a <rewriteMap> has no `name`")?;
    out.leave_attributes(map, &["name", "defaultValue", "ignoreCase"]);
    out.table(&format!("rewrite.maps.{}", bare_or_quoted(name)));
    if let Some(v) = map.attribute("defaultValue") {
        out.key("default_value", v);
    }
    if let Some(v) = map.attribute("ignoreCase") {
        out.key("ignore_case", is_true(v));
    }
    let mut entries = toml::Table::new();
    for add in elements(map) {
        if add.tag_name().name() != "add" {
            out.leave(add, "only <add> entries are converted");
            continue;
        }
        let (Some(key), Some(value)) = (add.attribute("key"), add.attribute("value")) else {
            return Err(format!(
                "rewrite map `{}`: an <add> needs `key` and `value`",
                one_line(name)
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
fn default_document(out: &mut Output, node: Node) {
    out.leave_attributes(node, &["enabled"]);
    out.leave_children(node, &["files"]);
    out.table("default_document");
    if let Some(v) = node.attribute("enabled") {
        out.key("enabled", is_true(v));
    }
    let Some(files) = element(node, "files") else {
        return;
    };
    // What the folder inherits: riis's defaults at the file's level (what
    // a web.config inherits there), the file's own list in a folder.
    let defaults: Vec<String> = match out.parent_list("default_document.files") {
        Some(Value::Array(parent)) => parent
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => riis_modules::default_document::DefaultDocumentConfig::default().files,
    };
    let mut added: Vec<&str> = Vec::new();
    let mut inherited: Vec<&str> = defaults.iter().map(String::as_str).collect();
    for entry in elements(files) {
        match (entry.tag_name().name(), entry.attribute("value")) {
            ("clear", _) => {
                inherited.clear();
                added.clear();
            }
            ("add", Some(v)) if !added.contains(&v) => added.push(v),
            ("add", Some(_)) => {}
            // A name IIS would find in any case: it names the one file.
            ("remove", Some(v)) => {
                inherited.retain(|f| !f.eq_ignore_ascii_case(v));
                added.retain(|f| !f.eq_ignore_ascii_case(v));
            }
            _ => out.leave(entry, "an entry without `value`"),
        }
    }
    // riis matches names exactly, as the file system does: `Default.htm`
    // added leaves the inherited `default.htm` in.
    inherited.retain(|f| !added.contains(f));
    added.extend(inherited);
    let files = Value::Array(added.into_iter().map(|f| Value::String(f.into())).collect());
    if !out.in_folder {
        out.parent_lists
            .push(("default_document.files".to_owned(), files.clone()));
    }
    out.key("files", files);
}

/// `httpProtocol`: custom and redirect headers, keep-alive. A `<remove>`
/// drops an inherited entry of the same list in IIS, not a header an
/// application sends: it only takes back an earlier `<add>` here.
fn http_protocol(out: &mut Output, node: Node) {
    out.leave_attributes(node, &["allowKeepAlive"]);
    out.leave_children(node, &["customHeaders", "redirectHeaders"]);
    out.table("protocol");
    if let Some(v) = node.attribute("allowKeepAlive") {
        out.key("keep_alive", is_true(v));
    }
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
                    if name.to_ascii_lowercase().starts_with("access-control-") {
                        out.leave(
                            entry,
                            &format!("{name} is converted as a fixed header on every answer, whatever the origin: riis's Cors module (section `cors`, IIS's CORS module) answers per origin"),
                        );
                    }
                    headers.insert(
                        name.into(),
                        Value::String(entry.attribute("value").unwrap_or("").into()),
                    );
                }
                ("remove", Some(name)) => {
                    let before = headers.len();
                    headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
                    if headers.len() == before {
                        // An inherited header (IIS's own `X-Powered-By`):
                        // riis adds none, and an application's own stays,
                        // as with IIS.
                        out.leave(
                            entry,
                            "riis adds no such header of its own; a location cannot take back one an enclosing location's custom_headers adds, and protocol.remove_headers strips an application's",
                        );
                    }
                }
                ("clear", _) => headers.clear(),
                _ => out.leave(entry, "an entry without `name`"),
            }
        }
        if !headers.is_empty() {
            out.key(key, Value::Table(headers));
        }
    }
}

/// `httpRedirect`.
fn http_redirect(out: &mut Output, node: Node) {
    out.leave_attributes(
        node,
        &[
            "enabled",
            "destination",
            "exactDestination",
            "childOnly",
            "httpResponseStatus",
        ],
    );
    out.leave_children(node, &["add", "remove", "clear"]);
    // What a folder inherits: its enclosing folder's, or the file's.
    let inherited = match (&out.folder, out.in_folder) {
        (Some(url), true) => out
            .redirect_parents
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, r)| r.clone())
            .unwrap_or_default(),
        _ => Redirects::default(),
    };
    let mut unread = Vec::new();
    let (resolved, edited) = inherited.under(Some(node), &mut unread);
    for entry in unread {
        out.leave(entry, "an entry without `wildcard` or `destination`");
    }
    // The rules IIS reads here: all of them, unless a destination applies.
    // A folder that empties an inherited destination reads them again, so
    // it writes them (what it inherits in riis may be an emptied list).
    let rules_apply = resolved.destination.is_empty();
    let written: &[(String, String)] = if rules_apply { &resolved.rules } else { &[] };
    let write_rules = if rules_apply {
        edited || (node.attribute("destination").is_some() && !resolved.rules.is_empty())
    } else {
        if edited {
            out.leave(
                node,
                &format!(
                    "its wildcard rules: IIS reads none while the destination `{}` applies (a folder that empties the destination reads them)",
                    resolved.destination
                ),
            );
        }
        // riis refuses a section with both: a list the location would
        // inherit is written empty.
        out.in_folder && !resolved.rules.is_empty()
    };
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
        out.key(
            "status",
            canonical(v, &["Permanent", "Found", "Temporary", "PermRedirect"]),
        );
    }
    let as_value = |rules: &[(String, String)]| {
        Value::Array(
            rules
                .iter()
                .map(|(w, d)| {
                    let mut rule = toml::Table::new();
                    rule.insert("wildcard".into(), w.as_str().into());
                    rule.insert("destination".into(), d.as_str().into());
                    Value::Table(rule)
                })
                .collect(),
        )
    };
    if write_rules {
        out.key("wildcards", as_value(written));
    }
    if !out.in_folder {
        // IIS keeps the rules under a destination, for folders that empty
        // it.
        out.parent_lists.push((
            "http_redirect.wildcards".to_owned(),
            as_value(&resolved.rules),
        ));
        out.parent_lists.push((
            "http_redirect.destination".to_owned(),
            Value::String(resolved.destination),
        ));
    }
}

/// The (wildcard, destination) pairs of a converted `wildcards` list.
fn redirect_rules_of(value: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Array(rules)) = value else {
        return Vec::new();
    };
    rules
        .iter()
        .filter_map(|r| {
            Some((
                r.get("wildcard")?.as_str()?.to_owned(),
                r.get("destination")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// `httpPlatform`: the application HttpPlatformHandler starts. Its
/// `requestTimeout` is ReverseProxy's `timeout` (ReverseProxy passes the
/// requests); `processPath`'s backslashes become slashes; `arguments` is
/// cut into words as a command line is (double quotes hold spaces).
fn http_platform(out: &mut Output, node: Node) -> Result<(), String> {
    const NUMBERS: [(&str, &str); 4] = [
        ("startupTimeLimit", "startup_time_limit"),
        ("startupRetryCount", "startup_retry_count"),
        ("rapidFailsPerMinute", "rapid_fails_per_minute"),
        ("processesPerApplication", "processes_per_application"),
    ];
    let mut handled = vec!["processPath", "arguments", "requestTimeout"];
    handled.extend(NUMBERS.iter().map(|(attribute, _)| *attribute));
    out.leave_attributes(node, &handled);
    out.leave_children(node, &["environmentVariables"]);
    out.table("http_platform");
    if let Some(path) = node.attribute("processPath") {
        out.key("process_path", path.trim().replace('\\', "/"));
    }
    if let Some(line) = node.attribute("arguments") {
        let words = command_line_words(line).into_iter().map(Value::String);
        out.key("arguments", Value::Array(words.collect()));
    }
    for (attribute, key) in NUMBERS {
        if let Some(n) = number(node, attribute, "httpPlatform")? {
            out.key(key, n);
        }
    }
    environment_variables(out, node, &[]);
    request_timeout(out, node);
    Ok(())
}

/// `environmentVariables` as the `environment` key of the current table,
/// without those named in `riis_own` (riis sets them; each is noted).
fn environment_variables(out: &mut Output, node: Node, riis_own: &[&str]) {
    let Some(variables) = element(node, "environmentVariables") else {
        return;
    };
    out.leave_children(variables, &["environmentVariable"]);
    let mut table = toml::Table::new();
    for variable in elements(variables).filter(|v| v.tag_name().name() == "environmentVariable") {
        match variable.attribute("name").map(str::trim) {
            Some(name) if riis_own.iter().any(|own| own.eq_ignore_ascii_case(name)) => {
                out.leave(variable, &format!("{name}: riis sets this variable itself"));
            }
            Some(name) if name.contains(['=', '\0']) => {
                out.leave(
                    variable,
                    &format!("{name}: not a name an environment can hold"),
                );
            }
            Some(name) if !name.is_empty() => {
                let value = variable.attribute("value").unwrap_or("");
                table.insert(name.to_owned(), Value::String(value.to_owned()));
            }
            _ => out.leave(variable, "an environment variable without a name"),
        }
    }
    if !table.is_empty() {
        out.key("environment", Value::Table(table));
    }
}

/// `requestTimeout` (of `httpPlatform` or `aspNetCore`) as ReverseProxy's
/// `timeout`: ReverseProxy passes the requests.
fn request_timeout(out: &mut Output, node: Node) {
    if let Some(timeout) = node.attribute("requestTimeout") {
        match time_span(timeout) {
            Some(seconds) if seconds > 0 => {
                out.table("proxy");
                out.key("timeout", seconds);
            }
            _ => out.leave(
                node,
                "requestTimeout is not a time span of at least a second",
            ),
        }
    }
}

/// `aspNetCore`: the ASP.NET Core application AspNetCoreModule starts.
/// `dotnet`, which IIS looks for on the `PATH`, becomes `/usr/bin/dotnet`
/// (where the .NET packages put it); an application's own `.exe` becomes
/// its Linux executable's name, without the suffix; backslashes in paths
/// become slashes. The folder given with `--location` is the application's
/// path. The hosting model and the standard output log have no
/// counterpart (the application runs out of process; riis's log takes its
/// output) and are noted.
fn asp_net_core(out: &mut Output, node: Node, location: Option<&str>) -> Result<(), String> {
    const NUMBERS: [(&str, &str); 4] = [
        ("startupTimeLimit", "startup_time_limit"),
        ("shutdownTimeLimit", "shutdown_time_limit"),
        ("rapidFailsPerMinute", "rapid_fails_per_minute"),
        ("processesPerApplication", "processes_per_application"),
    ];
    let mut handled = vec![
        "processPath",
        "arguments",
        "requestTimeout",
        "hostingModel",
        "stdoutLogEnabled",
        "stdoutLogFile",
    ];
    handled.extend(NUMBERS.iter().map(|(attribute, _)| *attribute));
    out.leave_attributes(node, &handled);
    out.leave_children(node, &["environmentVariables"]);
    if node.attribute("stdoutLogEnabled").is_some() || node.attribute("stdoutLogFile").is_some() {
        out.leave(
            node,
            "stdoutLogEnabled, stdoutLogFile: riis's log takes the application's output \
             (standard output at info, standard error at warn)",
        );
    }
    if node
        .attribute("hostingModel")
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("inprocess"))
    {
        out.leave(
            node,
            "hostingModel \"inprocess\": riis runs the application out of process, \
             as IIS does with hostingModel=\"outofprocess\"; the application needs no change",
        );
    }
    out.table("asp_net_core");
    match node.attribute("processPath").map(str::trim) {
        Some(path) if path.contains('%') => out.leave(
            node,
            &format!(
                "processPath \"{path}\" is a placeholder of Visual Studio's: give the program"
            ),
        ),
        // `dotnet`, or its Windows installation's full path.
        Some(path)
            if path.rsplit(['\\', '/']).next().is_some_and(|name| {
                name.eq_ignore_ascii_case("dotnet") || name.eq_ignore_ascii_case("dotnet.exe")
            }) =>
        {
            out.key("process_path", "/usr/bin/dotnet");
        }
        Some(path) => {
            let mut path = path.replace('\\', "/");
            if path.len() > 4 && path[path.len() - 4..].eq_ignore_ascii_case(".exe") {
                path.truncate(path.len() - 4);
                out.leave(
                    node,
                    "processPath names a Windows executable: publish the application for Linux \
                     (`dotnet publish -r linux-x64`), whose executable has no `.exe`, or run its \
                     .dll with /usr/bin/dotnet",
                );
            }
            out.key("process_path", path);
        }
        None => {}
    }
    if let Some(line) = node.attribute("arguments") {
        // Visual Studio's `%LAUNCHER_ARGS%` (and `%LAUNCHER_PATH%`) have
        // values only when it starts the application itself.
        let (placeholders, words): (Vec<String>, Vec<String>) = command_line_words(line)
            .into_iter()
            .partition(|word| word.contains("%LAUNCHER_"));
        for placeholder in placeholders {
            out.leave(
                node,
                &format!(
                    "argument \"{placeholder}\" is a placeholder of Visual Studio's, left out"
                ),
            );
        }
        let words = words.into_iter().map(|word| {
            let relative = word.starts_with(".\\") || word.starts_with("..\\");
            let assembly = word.len() > 4 && word[word.len() - 4..].eq_ignore_ascii_case(".dll");
            Value::String(if relative || assembly {
                word.replace('\\', "/")
            } else {
                word
            })
        });
        out.key("arguments", Value::Array(words.collect()));
    }
    if let Some(path) = location.filter(|path| *path != "/") {
        out.key("application_path", path);
    }
    for (attribute, key) in NUMBERS {
        if let Some(n) = number(node, attribute, "aspNetCore")? {
            out.key(key, n);
        }
    }
    environment_variables(
        out,
        node,
        &[
            "ASPNETCORE_PORT",
            "ASPNETCORE_TOKEN",
            "ASPNETCORE_APPL_PATH",
        ],
    );
    request_timeout(out, node);
    Ok(())
}

/// `handlers`: the mappings of the modules that start an application
/// (httpPlatformHandler, AspNetCoreModule), each becoming a handler of the
/// riis module with ReverseProxy after it, and WebDAV's and
/// ServerSideIncludeModule's, handlers of WebDav and ServerSideInclude. Other mappings name IIS's own modules or processors (ISAPI,
/// FastCGI's `scriptProcessor`) and are left out with a note, as are
/// `<remove>` and `<clear>`.
fn handlers(out: &mut Output, node: Node) {
    out.leave_attributes(node, &[]);
    for add in elements(node) {
        let modules = match add.tag_name().name() {
            "add" => add.attribute("modules").and_then(handler_modules),
            _ => None,
        };
        let Some(modules) = modules else {
            let named = match (add.attribute("name"), add.attribute("modules")) {
                (Some(name), Some(modules)) => format!("\"{name}\" (modules \"{modules}\"): "),
                (Some(name), None) => format!("\"{name}\": "),
                _ => String::new(),
            };
            out.leave(
                add,
                &format!(
                    "{named}handler mappings are `[[handlers]]` in riis, with modules of their own: \
                     see docs/configuration.md"
                ),
            );
            continue;
        };
        out.leave_attributes(add, &["name", "path", "verb", "modules", "resourceType"]);
        out.array_entry("handlers");
        out.key("name", add.attribute("name").unwrap_or(modules[0]).trim());
        out.key("path", add.attribute("path").unwrap_or("*").trim());
        let verbs = add.attribute("verb").unwrap_or("*").split(',');
        let mut verbs: Vec<&str> = verbs.map(str::trim).filter(|v| !v.is_empty()).collect();
        // IIS's WebDAV module answers OPTIONS (with `DAV`) whatever handler
        // has it; riis's answers what its handler gets.
        if modules[0] == "WebDav" && !verbs.iter().any(|v| *v == "OPTIONS" || *v == "*") {
            verbs.insert(0, "OPTIONS");
        }
        out.key(
            "verbs",
            Value::Array(
                verbs
                    .iter()
                    .map(|v| Value::String((*v).to_owned()))
                    .collect(),
            ),
        );
        if let Some(kind) = add.attribute("resourceType") {
            out.key(
                "resource_type",
                canonical(kind, &["File", "Directory", "Either", "Unspecified"]),
            );
        }
        out.key(
            "modules",
            Value::Array(
                modules
                    .iter()
                    .map(|m| Value::String((*m).to_owned()))
                    .collect(),
            ),
        );
        for &listed in modules {
            if !out.handler_modules.contains(&listed) {
                out.handler_modules.push(listed);
            }
        }
    }
}

/// The riis handler modules of a handler mapping's `modules`, when it is
/// one that starts an application (with ReverseProxy after it) or WebDAV.
fn handler_modules(modules: &str) -> Option<&'static [&'static str]> {
    match modules.trim().to_ascii_lowercase().as_str() {
        "httpplatformhandler" => Some(&["HttpPlatformHandler", "ReverseProxy"]),
        "aspnetcoremodule" | "aspnetcoremodulev2" => Some(&["AspNetCoreModule", "ReverseProxy"]),
        "webdavmodule" => Some(&["WebDav"]),
        "serversideincludemodule" => Some(&["ServerSideInclude"]),
        _ => None,
    }
}

/// `webdav`: `authoring` (its `fileSystem`, `properties` and `locks`) and
/// `authoringRules`, as the `webdav` section. A rule for a `path` other
/// than `*` is left out (a riis location holds it), as is `Source` access
/// (GET goes to the static handler) and the lock store's settings.
fn webdav(out: &mut Output, node: Node) {
    out.leave_attributes(node, &[]);
    out.leave_children(node, &["authoring", "authoringRules"]);
    out.table("webdav");
    if let Some(authoring) = element(node, "authoring") {
        out.leave_attributes(authoring, &["enabled", "requireSsl"]);
        out.leave_children(authoring, &["fileSystem", "properties", "locks"]);
        put_webdav_flags(
            out,
            Some(authoring),
            &[("enabled", "enabled"), ("requireSsl", "require_ssl")],
        );
        let file_system = element(authoring, "fileSystem");
        if let Some(f) = file_system {
            out.leave_attributes(f, &["allowHiddenFiles"]);
        }
        put_webdav_flags(
            out,
            file_system,
            &[("allowHiddenFiles", "allow_hidden_files")],
        );
        let properties = element(authoring, "properties");
        if let Some(p) = properties {
            out.leave_attributes(
                p,
                &[
                    "allowAnonymousPropfind",
                    "allowInfinitePropfindDepth",
                    "allowCustomProperties",
                ],
            );
            out.leave_children(p, &[]);
        }
        put_webdav_flags(
            out,
            properties,
            &[
                ("allowAnonymousPropfind", "allow_anonymous_propfind"),
                (
                    "allowInfinitePropfindDepth",
                    "allow_infinite_propfind_depth",
                ),
                ("allowCustomProperties", "allow_custom_properties"),
            ],
        );
        let locks = element(authoring, "locks");
        if let Some(l) = locks {
            out.leave_attributes(l, &["enabled", "lockStore"]);
        }
        put_webdav_flags(out, locks, &[("enabled", "locks_enabled")]);
    }
    let Some(rules) = element(node, "authoringRules") else {
        return;
    };
    out.leave_attributes(rules, &["defaultAccess"]);
    if let Some(access) = rules.attribute("defaultAccess") {
        let access = webdav_access(out, rules, access);
        out.key("default_access", access);
    }
    let mut converted = Vec::new();
    for rule in elements(rules) {
        if rule.tag_name().name() != "add" {
            out.leave(rule, "riis's `authoring_rules` list is written whole");
            continue;
        }
        let path = rule.attribute("path").unwrap_or("*").trim();
        if path != "*" {
            out.leave(
                rule,
                &format!(
                    "a rule for path \"{path}\" belongs in a [[sites.locations]] of that path"
                ),
            );
            continue;
        }
        out.leave_attributes(rule, &["users", "roles", "path", "access"]);
        let mut table = toml::Table::new();
        for key in ["users", "roles"] {
            if let Some(v) = rule.attribute(key).filter(|v| !v.trim().is_empty()) {
                table.insert(key.into(), Value::String(v.trim().to_owned()));
            }
        }
        let access = webdav_access(out, rule, rule.attribute("access").unwrap_or("None"));
        table.insert("access".into(), Value::String(access));
        converted.push(Value::Table(table));
    }
    if !converted.is_empty() {
        out.key("authoring_rules", Value::Array(converted));
    }
}

/// IIS's boolean attributes of a `webdav` element as the section's keys.
fn put_webdav_flags(out: &mut Output, node: Option<Node>, names: &[(&str, &str)]) {
    let Some(node) = node else {
        return;
    };
    for (attribute, key) in names {
        if let Some(v) = node.attribute(*attribute) {
            out.key(key, is_true(v));
        }
    }
}

/// An access list without `Source`, which is noted as left out.
fn webdav_access(out: &mut Output, node: Node, access: &str) -> String {
    let mut kept = Vec::new();
    for item in access.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.eq_ignore_ascii_case("source") {
            out.leave(
                node,
                "`Source` access: riis's WebDav serves no GET (the static handler does)",
            );
        } else {
            kept.push(item);
        }
    }
    if kept.is_empty() {
        "None".to_owned()
    } else {
        kept.join(", ")
    }
}

/// The words of a command line: cut at spaces and tabs, except between
/// double quotes, which are dropped (`a "b c"` is `a` and `b c`).
fn command_line_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut begun) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                begun = true;
            }
            ' ' | '\t' if !quoted => {
                if begun {
                    words.push(std::mem::take(&mut word));
                    begun = false;
                }
            }
            _ => {
                word.push(c);
                begun = true;
            }
        }
    }
    if begun {
        words.push(word);
    }
    words
}

/// `httpErrors`: the error mode and the custom pages. A page of IIS's own
/// (`prefixLanguageFilePath`) or at a Windows path (`%SystemDrive%\…`,
/// `C:\…`) has no meaning here and is left out; a relative path's
/// backslashes become slashes.
fn http_errors(out: &mut Output, node: Node) -> Result<(), String> {
    out.leave_attributes(node, &["errorMode", "existingResponse", "defaultPath"]);
    out.table("http_errors");
    if let Some(v) = node.attribute("errorMode") {
        out.key(
            "error_mode",
            canonical(v, &["DetailedLocalOnly", "Custom", "Detailed"]),
        );
    }
    if let Some(v) = node.attribute("existingResponse") {
        out.key(
            "existing_response",
            canonical(v, &["Auto", "Replace", "PassThrough"]),
        );
    }
    if node.attribute("defaultPath").is_some() {
        out.leave(node, "defaultPath: give each status its page in `errors`");
    }
    let mut pages: Vec<(i64, i64, Value)> = Vec::new();
    for entry in elements(node) {
        let status = number(entry, "statusCode", "httpErrors")?;
        let sub = number(entry, "subStatusCode", "httpErrors")?.unwrap_or(-1);
        match entry.tag_name().name() {
            "error" => {
                out.leave_attributes(
                    entry,
                    &[
                        "statusCode",
                        "subStatusCode",
                        "path",
                        "responseMode",
                        "prefixLanguageFilePath",
                    ],
                );
                let (Some(status), Some(path)) = (status, entry.attribute("path")) else {
                    out.leave(entry, "an <error> needs statusCode and path");
                    continue;
                };
                let own = entry
                    .attribute("prefixLanguageFilePath")
                    .is_some_and(|p| !p.trim().is_empty());
                let windows = path.contains('%')
                    || path.starts_with("\\\\")
                    || path.as_bytes().get(1) == Some(&b':');
                if own || windows {
                    out.leave(
                        entry,
                        &format!(
                            "the page for {status} is IIS's own or at the Windows path `{path}`"
                        ),
                    );
                    continue;
                }
                let mut t = toml::Table::new();
                t.insert("status".into(), Value::Integer(status));
                if sub >= 0 {
                    t.insert("substatus".into(), Value::Integer(sub));
                }
                t.insert("path".into(), Value::String(path.replace('\\', "/")));
                if let Some(mode) = entry.attribute("responseMode") {
                    t.insert(
                        "response_mode".into(),
                        Value::String(canonical(mode, &["File", "ExecuteURL", "Redirect"])),
                    );
                }
                pages.retain(|(s, u, _)| (*s, *u) != (status, sub));
                pages.push((status, sub, Value::Table(t)));
            }
            // What the file's own list says: a remove before an error of the
            // same status, as IIS's examples write it, or of an inherited
            // page (riis has none).
            "remove" => pages.retain(|(s, u, _)| Some(*s) != status || *u != sub),
            "clear" => pages.clear(),
            _ => out.leave(entry, "no conversion for this part of httpErrors"),
        }
    }
    if !pages.is_empty() {
        out.key(
            "errors",
            Value::Array(pages.into_iter().map(|(_, _, page)| page).collect()),
        );
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
            "authorization" => authorization(out, child),
            "authentication" => authentication(out, child),
            _ => out.leave(child, "no conversion for this security section"),
        }
    }
    Ok(())
}

/// URL Authorization's rules. IIS's server-wide list allows everyone
/// (`<add accessType="Allow" users="*" />` in applicationHost.config), and
/// a file's rules add to it: unless the file clears the list or removes
/// that rule (IIS Manager writes `<remove users="*" roles="" verbs="" />`),
/// it is written first. A folder's rules add to the file's as the other
/// lists do (see [`LIST_ELEMENTS`]). The order of the rules does not
/// matter: any Deny that matches refuses, then any Allow lets in.
fn authorization(out: &mut Output, node: Node) {
    out.leave_attributes(node, &[]);
    let mut rules: Vec<(AuthorizationKey, Value)> = Vec::new();
    if !out.in_folder {
        let everyone = AuthorizationKey {
            access: Some("allow".into()),
            users: "*".into(),
            roles: String::new(),
            verbs: String::new(),
        };
        let mut t = toml::Table::new();
        t.insert("access".into(), Value::String("Allow".into()));
        t.insert("users".into(), Value::String("*".into()));
        rules.push((everyone, Value::Table(t)));
    }
    for entry in elements(node) {
        let key = AuthorizationKey::of(entry);
        match entry.tag_name().name() {
            "add" => {
                out.leave_attributes(entry, &["accessType", "users", "roles", "verbs"]);
                let access = canonical(
                    entry.attribute("accessType").unwrap_or(""),
                    &["Allow", "Deny"],
                );
                if access != "Allow" && access != "Deny" {
                    out.leave(entry, "accessType is neither Allow nor Deny");
                    continue;
                }
                if key.users.is_empty() && key.roles.is_empty() {
                    out.leave(
                        entry,
                        "a rule that names no users and no roles matches nobody",
                    );
                    continue;
                }
                let mut t = toml::Table::new();
                t.insert("access".into(), Value::String(access));
                for (attribute, name) in
                    [("users", "users"), ("roles", "roles"), ("verbs", "verbs")]
                {
                    let value = entry.attribute(attribute).map_or("", str::trim);
                    if !value.is_empty() {
                        t.insert(name.into(), Value::String(value.into()));
                    }
                }
                if key.users.contains('\\') || key.roles.contains('\\') {
                    out.leave(
                        entry,
                        "written as it is, but DOMAIN\\name is a Windows account or group: riis's users and roles are those of BasicAuthentication's user and group files",
                    );
                }
                rules.retain(|(k, _)| !key.same_rule(k));
                rules.push((key, Value::Table(t)));
            }
            "remove" => rules.retain(|(k, _)| !key.same_rule(k)),
            "clear" => rules.clear(),
            _ => out.leave(entry, "no conversion"),
        }
    }
    out.table("authorization");
    out.key(
        "rules",
        Value::Array(rules.into_iter().map(|(_, rule)| rule).collect()),
    );
}

/// What tells URL Authorization's rules apart, for `<remove>`: the users,
/// roles and verbs (in any case), and the access type when given.
struct AuthorizationKey {
    access: Option<String>,
    users: String,
    roles: String,
    verbs: String,
}

impl AuthorizationKey {
    fn of(entry: Node) -> Self {
        let text = |attribute: &str| {
            entry
                .attribute(attribute)
                .map_or(String::new(), |v| v.trim().to_ascii_lowercase())
        };
        Self {
            access: entry
                .attribute("accessType")
                .map(|a| a.trim().to_ascii_lowercase()),
            users: text("users"),
            roles: text("roles"),
            verbs: text("verbs"),
        }
    }

    /// Whether `self` (an entry's key) names the rule keyed `other`.
    fn same_rule(&self, other: &Self) -> bool {
        self.users == other.users
            && self.roles == other.roles
            && self.verbs == other.verbs
            && (self.access.is_none() || other.access.is_none() || self.access == other.access)
    }
}

/// `authentication`: anonymous and Basic authentication, riis's two of
/// IIS's methods besides client certificates. Basic checks Windows
/// accounts in IIS and an htpasswd file in riis, which is named as left
/// to write.
fn authentication(out: &mut Output, node: Node) {
    out.leave_attributes(node, &[]);
    for child in elements(node) {
        match child.tag_name().name() {
            "anonymousAuthentication" => {
                // The Windows account anonymous requests run as: riis runs
                // every request as its own user, IIS's default (IUSR) too.
                let own_account = child
                    .attribute("userName")
                    .is_none_or(|u| u.trim().is_empty() || u.trim().eq_ignore_ascii_case("IUSR"));
                if own_account {
                    out.leave_attributes(child, &["enabled", "userName", "password"]);
                } else {
                    out.leave_attributes(child, &["enabled"]);
                }
                out.table("anonymous_authentication");
                if let Some(v) = child.attribute("enabled") {
                    out.key("enabled", is_true(v));
                }
            }
            "basicAuthentication" => {
                out.leave_attributes(child, &["enabled", "realm"]);
                out.table("basic_authentication");
                if let Some(v) = child.attribute("enabled") {
                    out.key("enabled", is_true(v));
                    if is_true(v) {
                        out.left_out.push(
                            "basic_authentication.user_file: IIS checks Windows accounts, riis an htpasswd file (docs/modules/authentication.md): set `user_file` (and `group_file` for roles)".into(),
                        );
                    }
                }
                // IIS's empty realm is the host name, riis's default too.
                if let Some(realm) = child.attribute("realm").filter(|r| !r.trim().is_empty()) {
                    out.key("realm", realm);
                }
            }
            // A method riis does not have, turned off, is what riis does.
            _ if child.attribute("enabled").is_some_and(|v| !is_true(v))
                && child.attributes().count() == 1
                && elements(child).next().is_none() => {}
            _ => out.leave(
                child,
                "no conversion: riis authenticates with Basic, anonymous and client certificates (docs/modules/authentication.md, docs/modules/client-certificates.md)",
            ),
        }
    }
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
    out.leave_attributes(
        node,
        &[
            "allowDoubleEscaping",
            "allowHighBitCharacters",
            "removeServerHeader",
        ],
    );
    out.leave_children(
        node,
        &[
            "requestLimits",
            "verbs",
            "fileExtensions",
            "hiddenSegments",
            "denyUrlSequences",
            "denyQueryStringSequences",
        ],
    );
    if node.attribute("removeServerHeader").is_some_and(is_true) {
        out.table("protocol");
        out.key(
            "remove_headers",
            Value::Array(vec![Value::String("Server".into())]),
        );
    }
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
        out.leave_attributes(
            limits,
            &["maxAllowedContentLength", "maxUrl", "maxQueryString"],
        );
        out.leave_children(limits, &["headerLimits"]);
        for (attribute, key) in [
            ("maxAllowedContentLength", "max_allowed_content_length"),
            ("maxUrl", "max_url"),
            ("maxQueryString", "max_query_string"),
        ] {
            if let Some(n) = number(limits, attribute, "requestLimits")? {
                out.key(key, Value::Integer(n));
                if attribute == "maxAllowedContentLength" && n > 30_000_000 {
                    // IIS's gateways (FastCGI's, ARR's) take what request
                    // filtering lets through; riis's have limits of their
                    // own.
                    out.leave(
                        limits,
                        &format!(
                            "maxAllowedContentLength=\"{n}\" is request_filtering's; uploads that large also need `fastcgi.max_request_body` or `proxy.max_request_body` (30000000 by default) raised where they go"
                        ),
                    );
                }
            }
        }
        let mut headers = toml::Table::new();
        for h in listed(limits, "headerLimits", "header") {
            let Some(header) = h.attribute("header") else {
                continue;
            };
            let size = number(h, "sizeLimit", "headerLimits")?
                .ok_or_else(|| format!("headerLimits: `{}` has no sizeLimit", one_line(header)))?;
            headers.insert(header.to_owned(), Value::Integer(size));
        }
        if !headers.is_empty() {
            out.key("header_limits", Value::Table(headers));
        }
    }
    if let Some(verbs) = element(node, "verbs") {
        out.leave_attributes(verbs, &["allowUnlisted", "applyToWebDAV"]);
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
        out.leave_attributes(extensions, &["allowUnlisted", "applyToWebDAV"]);
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
        out.leave_attributes(list, &["applyToWebDAV"]);
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
    Ok(())
}

/// `ipSecurity`: the address rules, in order.
fn ip_security(out: &mut Output, node: Node) {
    out.leave_attributes(node, &["allowUnlisted", "denyAction", "enableProxyMode"]);
    out.table("ip_security");
    if let Some(v) = node.attribute("allowUnlisted") {
        out.key("allow_unlisted", is_true(v));
    }
    if let Some(v) = node.attribute("denyAction") {
        out.key(
            "deny_action",
            canonical(
                v,
                &["Forbidden", "Unauthorized", "NotFound", "AbortRequest"],
            ),
        );
    }
    if let Some(v) = node.attribute("enableProxyMode") {
        out.key("proxy_mode", is_true(v));
    }
    let mut rules: Vec<(String, Value)> = Vec::new();
    for entry in elements(node) {
        let address = entry.attribute("ipAddress").map(str::trim);
        // IIS Manager writes an IPv6 network's mask as a prefix length.
        let mask = entry.attribute("subnetMask").map(str::trim);
        let key = format!("{}/{}", address.unwrap_or(""), mask.unwrap_or(""));
        match (entry.tag_name().name(), address) {
            ("add", Some(address)) => {
                out.leave_attributes(entry, &["ipAddress", "subnetMask", "allowed"]);
                let mut t = toml::Table::new();
                match mask {
                    Some(length) if length.bytes().all(|b| b.is_ascii_digit()) => {
                        t.insert(
                            "address".into(),
                            Value::String(format!("{address}/{length}")),
                        );
                    }
                    _ => {
                        t.insert("address".into(), Value::String(address.into()));
                        put(&mut t, "subnet_mask", mask);
                    }
                }
                put_bool(&mut t, "allowed", entry.attribute("allowed"));
                rules.push((key, Value::Table(t)));
            }
            ("remove", Some(_)) => rules.retain(|(k, _)| *k != key),
            ("clear", _) => rules.clear(),
            _ => out.leave(entry, "an entry by domain name, or without ipAddress"),
        }
    }
    if !rules.is_empty() {
        out.key(
            "rules",
            Value::Array(rules.into_iter().map(|(_, rule)| rule).collect()),
        );
    }
}

/// IIS's CORS module: `cors` and its origin rules, each with the
/// methods, headers and exposed headers it lists.
fn cors(out: &mut Output, node: Node) -> Result<(), String> {
    out.leave_attributes(node, &["enabled", "failUnlistedOrigins"]);
    out.table("cors");
    if let Some(v) = node.attribute("enabled") {
        out.key("enabled", is_true(v));
    }
    if let Some(v) = node.attribute("failUnlistedOrigins") {
        out.key("fail_unlisted_origins", is_true(v));
    }
    let mut rules: Vec<(String, Value)> = Vec::new();
    for entry in elements(node) {
        let origin = entry.attribute("origin").map(str::trim);
        match (entry.tag_name().name(), origin) {
            ("add", Some(origin)) => {
                out.leave_attributes(entry, &["origin", "allowed", "allowCredentials", "maxAge"]);
                out.leave_children(entry, &["allowHeaders", "allowMethods", "exposeHeaders"]);
                let mut t = toml::Table::new();
                t.insert("origin".into(), Value::String(origin.into()));
                put_bool(&mut t, "allowed", entry.attribute("allowed"));
                put_bool(
                    &mut t,
                    "allow_credentials",
                    entry.attribute("allowCredentials"),
                );
                // IIS's -1 (its default) sends no Access-Control-Max-Age.
                if let Some(age) = number(entry, "maxAge", "<cors> <add>")?.filter(|a| *a >= 0) {
                    t.insert("max_age".into(), Value::Integer(age));
                }
                for (list, attribute, key) in [
                    ("allowMethods", "method", "allowed_methods"),
                    ("allowHeaders", "header", "allowed_headers"),
                    ("exposeHeaders", "header", "exposed_headers"),
                ] {
                    let Some(list_node) = element(entry, list) else {
                        continue;
                    };
                    if list == "allowHeaders" {
                        out.leave_attributes(list_node, &["allowAllRequestedHeaders"]);
                        put_bool(
                            &mut t,
                            "allow_all_requested_headers",
                            list_node.attribute("allowAllRequestedHeaders"),
                        );
                    } else {
                        out.leave_attributes(list_node, &[]);
                    }
                    let values: Vec<Value> = listed(entry, list, attribute)
                        .into_iter()
                        .filter_map(|n| n.attribute(attribute))
                        .map(|v| Value::String(v.trim().to_owned()))
                        .collect();
                    if !values.is_empty() {
                        t.insert(key.into(), Value::Array(values));
                    }
                }
                rules.retain(|(o, _)| !o.eq_ignore_ascii_case(origin));
                rules.push((origin.to_owned(), Value::Table(t)));
            }
            ("remove", Some(origin)) => rules.retain(|(o, _)| !o.eq_ignore_ascii_case(origin)),
            ("clear", _) => rules.clear(),
            _ => out.leave(entry, "an entry without origin"),
        }
    }
    if !rules.is_empty() {
        out.key(
            "origins",
            Value::Array(rules.into_iter().map(|(_, rule)| rule).collect()),
        );
    }
    Ok(())
}

/// `staticContent`: MIME types and the client cache.
fn static_content(out: &mut Output, node: Node) -> Result<(), String> {
    out.leave_attributes(node, &[]);
    out.table("static_file");
    let mut types = toml::Table::new();
    // Types taken away and not given again: riis's own table still serves
    // them, which IIS would not (404.3).
    let mut removed: Vec<(Node, String)> = Vec::new();
    for entry in elements(node) {
        match entry.tag_name().name() {
            "mimeMap" => {
                out.leave_attributes(entry, &["fileExtension", "mimeType"]);
                let (Some(extension), Some(mime)) = (
                    entry.attribute("fileExtension"),
                    entry.attribute("mimeType"),
                ) else {
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
            // Before a <mimeMap> of the same extension, as IIS needs; riis's
            // own table gives way to `mime_types` anyway.
            "remove" => {
                if let Some(extension) = entry.attribute("fileExtension") {
                    let extension = extension
                        .trim()
                        .trim_start_matches('.')
                        .to_ascii_lowercase();
                    types.remove(&extension);
                    removed.push((entry, extension));
                }
            }
            "clear" => {
                types.clear();
                out.leave(
                    entry,
                    "riis's own types stay; to refuse files by extension, list them in request_filtering.file_extensions with allowed = false",
                );
            }
            _ => out.leave(entry, "no conversion for this part of staticContent"),
        }
    }
    for (entry, extension) in removed {
        if !types.contains_key(&extension) {
            out.leave(
                entry,
                &format!(
                    "riis still serves .{extension} with its own type; to refuse it, list it in request_filtering.file_extensions with allowed = false"
                ),
            );
        }
    }
    if !types.is_empty() {
        out.key("mime_types", Value::Table(types));
    }
    Ok(())
}

/// `clientCache`: the cache header of static files. IIS's mode is
/// `NoControl` unless said otherwise, where riis takes a `max_age` alone
/// for `UseMaxAge`: the mode is always written.
fn client_cache(out: &mut Output, node: Node) -> Result<(), String> {
    out.leave_attributes(
        node,
        &[
            "cacheControlMode",
            "cacheControlMaxAge",
            "httpExpires",
            "cacheControlCustom",
            "sendCacheControlHeader",
        ],
    );
    let sends = node.attribute("sendCacheControlHeader").is_none_or(is_true);
    let mode = match node.attribute("cacheControlMode") {
        Some(mode) if sends => canonical(
            mode,
            &["NoControl", "DisableCache", "UseMaxAge", "UseExpires"],
        ),
        _ => "NoControl".to_owned(),
    };
    out.key("cache_control_mode", mode.as_str());
    match node.attribute("cacheControlMaxAge") {
        Some(age) => {
            let seconds = time_span(age).ok_or_else(|| {
                format!(
                    "clientCache: cacheControlMaxAge `{}` is not d.hh:mm:ss",
                    one_line(age)
                )
            })?;
            out.key("max_age", Value::Integer(seconds));
        }
        // IIS's default `cacheControlMaxAge` is a day: `UseMaxAge` alone
        // sends `max-age=86400`.
        None if mode == "UseMaxAge" => out.key("max_age", Value::Integer(86_400)),
        None => {}
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
/// seconds; `None` for anything else, or past what a number holds.
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
    days.checked_mul(86_400)?
        .checked_add(h * 3_600 + m * 60 + s)
}

/// `attribute` of `node` as a number; an error naming `what` when it is not
/// one.
fn number(node: Node, attribute: &str, what: &str) -> Result<Option<i64>, String> {
    node.attribute(attribute)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("{what}: {attribute} `{}` is not a number", one_line(v)))
        })
        .transpose()
}

/// `value` as one of IIS's names for it, whatever its case (riis reads
/// some without regard to case and some not); as written when it is none
/// of them, for `riis check-config` to name.
fn canonical(value: &str, names: &[&str]) -> String {
    let value = value.trim();
    names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(value))
        .map_or(value, |n| n)
        .to_owned()
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

/// `text` as a TOML basic string on one line (valid as a key too): a line
/// break in a name must not make the multi-line string `toml` would write.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

    /// What a review of real web.config files found lost or broken: rules
    /// in another file, `UseMaxAge` without its age, a name with a line
    /// break, types taken away, inherited headers removed, and ASP.NET
    /// Core's `<location path=".">` beside the file's own block.
    #[test]
    fn what_does_not_convert_is_named_and_the_rest_holds() {
        let xml = r#"<configuration>
          <location path="." inheritInChildApplications="false"><system.webServer>
            <handlers><add name="aspNetCore" path="*" verb="*" modules="AspNetCoreModuleV2" /></handlers>
          </system.webServer></location>
          <system.webServer>
            <rewrite>
              <rules configSource="rewriteRules.config" />
              <rewriteMaps><rewriteMap name="a&#10;b"><add key="x" value="y" /></rewriteMap></rewriteMaps>
            </rewrite>
            <staticContent>
              <remove fileExtension=".exe" />
              <remove fileExtension=".json" /><mimeMap fileExtension=".json" mimeType="application/json" />
              <clientCache cacheControlMode="UseMaxAge" />
            </staticContent>
            <httpProtocol><customHeaders><remove name="X-Powered-By" /></customHeaders></httpProtocol>
          </system.webServer>
        </configuration>"#;
        let converted = convert(xml, None).unwrap();
        let notes = converted.left_out.join("\n");
        assert!(notes.contains("rewriteRules.config"), "{notes}");
        assert!(notes.contains("riis still serves .exe"), "{notes}");
        assert!(!notes.contains(".json"), "{notes}");
        assert!(
            notes.contains("X-Powered-By") || notes.contains("remove_headers"),
            "{notes}"
        );
        let table: toml::Table = converted.text.parse().unwrap();
        assert_eq!(table["static_file"]["max_age"].as_integer(), Some(86_400));
        assert!(
            table["rewrite"]["maps"].get("a\nb").is_some(),
            "{}",
            converted.text
        );
        // A section set in both blocks is refused, as IIS refuses it.
        let twice = r#"<configuration>
          <location path="."><system.webServer><defaultDocument enabled="true" /></system.webServer></location>
          <system.webServer><defaultDocument enabled="false" /></system.webServer>
        </configuration>"#;
        let Err(err) = convert(twice, None) else {
            panic!("a section set twice was converted");
        };
        assert!(err.contains("<defaultDocument> is set twice"), "{err}");
    }

    /// A folder's lists add to the file's, as IIS's collections add to the
    /// parent's (riis's location lists replace what they inherit): the
    /// root's denials still hold below it.
    #[test]
    fn a_folders_lists_add_to_the_files() {
        let xml = r#"<configuration>
          <system.webServer>
            <defaultDocument><files><clear /><add value="home.htm" /></files></defaultDocument>
            <httpErrors errorMode="Custom"><error statusCode="404" path="/404.html" responseMode="ExecuteURL" /></httpErrors>
            <security>
              <requestFiltering>
                <fileExtensions><add fileExtension=".txt" allowed="false" /></fileExtensions>
                <hiddenSegments><add segment="secret" /></hiddenSegments>
                <denyUrlSequences><add sequence="xmlrpc" /></denyUrlSequences>
              </requestFiltering>
              <ipSecurity><add ipAddress="127.0.0.1" allowed="false" /></ipSecurity>
            </security>
          </system.webServer>
          <location path="blog"><system.webServer>
            <defaultDocument><files><add value="index.php" /></files></defaultDocument>
            <httpErrors><error statusCode="500" path="/500.html" responseMode="ExecuteURL" /></httpErrors>
            <security>
              <requestFiltering>
                <hiddenSegments><add segment="private" /></hiddenSegments>
                <denyUrlSequences><add sequence="wp-config" /></denyUrlSequences>
              </requestFiltering>
              <ipSecurity><add ipAddress="10.9.9.9" allowed="false" /></ipSecurity>
            </security>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let blog = &table["sites"]["locations"].as_array().unwrap()[1];
        assert_eq!(blog["path"].as_str(), Some("/blog"), "{}", converted.text);
        let strings = |v: &toml::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let filtering = &blog["request_filtering"];
        let hidden = strings(&filtering["hidden_segments"]);
        assert!(hidden.contains(&"secret".into()) && hidden.contains(&"private".into()));
        // Not set in the folder: riis's location inherits the key whole.
        assert!(filtering.get("file_extensions").is_none());
        assert_eq!(
            strings(&filtering["denied_url_sequences"]),
            ["xmlrpc", "wp-config"]
        );
        let rules = blog["ip_security"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        let errors = blog["http_errors"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            strings(&blog["default_document"]["files"]),
            ["index.php", "home.htm"]
        );
    }

    /// IIS rules as they are written: no <action> (None), a None action
    /// with a url, and `{R:1}` of a pattern without groups (IIS gives it
    /// empty) convert to rules riis loads.
    #[test]
    fn iis_rules_riis_would_refuse_are_written_as_iis_reads_them() {
        let xml = r#"<configuration><system.webServer><rewrite><rules>
            <rule name="stop" stopProcessing="true"><match url="^health$" /></rule>
            <rule name="none"><match url="^x$" /><action type="None" url="/ignored" /></rule>
            <rule name="https"><match url=".*" /><action type="Redirect" url="https://{HTTP_HOST}/{R:1}" redirectType="302" /></rule>
            <rule name="cond"><match url="^a$" /><conditions><add input="{R:1}" pattern="x" /></conditions><action type="None" /></rule>
            <rule name="files"><match url="^(.*)$" /><conditions logicalGrouping="MatchAny">
              <add input="{REQUEST_FILENAME}" matchType="IsFile" pattern="" ignoreCase="false" />
              <add input="{REQUEST_FILENAME}" matchType="IsDirectory" pattern="^/.well-known/*" negate="true" />
            </conditions><action type="None" /></rule>
            <rule name="ci"><match url="^(.*)$" /><action type="Rewrite" url="index.php/{R:1}" /></rule>
        </rules></rewrite></system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let rules = table["rewrite"]["rules"].as_array().unwrap();
        assert!(rules[0].get("action").is_none());
        assert!(rules[1]["action"].get("url").is_none());
        assert_eq!(
            rules[2]["action"]["url"].as_str(),
            Some("https://{HTTP_HOST}/")
        );
        // An enumeration's value stands for its name, as IIS reads it.
        assert_eq!(rules[2]["action"]["redirect_type"].as_str(), Some("Found"));
        let notes = converted.left_out.join("\n");
        assert!(
            notes.contains("{R:1} is past its pattern's 0 group"),
            "{notes}"
        );
        assert!(notes.contains("{R:1} in a condition is past"), "{notes}");
        assert!(
            notes.contains("rule `ci` rewrites to `index.php` with a path after it: its handler needs `allow_path_info = true`"),
            "{notes}"
        );
        assert_eq!(rules[3]["conditions"][0]["input"].as_str(), Some(""));
        // A file test's pattern, which IIS ignores, is left out (riis
        // refuses one), named when it said something.
        let files = rules[4]["conditions"].as_array().unwrap();
        assert!(
            files.iter().all(|c| c.get("pattern").is_none()),
            "{files:?}"
        );
        assert!(notes.contains("the pattern `^/.well-known/*`"), "{notes}");
        assert!(!notes.contains("the pattern ``"), "{notes}");
        assert_eq!(
            drop_missing_groups("/{R:0}/{R:2}{R:1}{R:x}", 1),
            ("/{R:0}/{R:1}{R:x}".to_owned(), vec![2])
        );
    }

    /// A folder list that takes the parent's entries away is the folder's
    /// own (a `<clear />` left empty is written empty); one `<clear />`
    /// touches only its own list; `<security>`'s sections may come from
    /// two blocks of the file's folder.
    #[test]
    fn a_folder_that_clears_or_removes_keeps_its_own_list() {
        let xml = r#"<configuration>
          <location path="."><system.webServer><security>
            <ipSecurity allowUnlisted="false"><add ipAddress="10.0.0.0" subnetMask="255.0.0.0" allowed="true" /></ipSecurity>
          </security></system.webServer></location>
          <system.webServer><security><requestFiltering>
            <hiddenSegments><add segment="secret" /></hiddenSegments>
            <denyUrlSequences><add sequence="xmlrpc" /></denyUrlSequences>
          </requestFiltering></security></system.webServer>
          <location path="admin"><system.webServer><security>
            <ipSecurity><clear /></ipSecurity>
            <requestFiltering>
              <denyUrlSequences><add sequence="wp-config" /></denyUrlSequences>
              <fileExtensions><clear /></fileExtensions>
            </requestFiltering>
          </security></system.webServer></location>
          <location path="ops"><system.webServer><security>
            <ipSecurity><remove ipAddress="10.0.0.0" subnetMask="255.0.0.0" /><add ipAddress="10.1.2.3" allowed="true" /></ipSecurity>
          </security></system.webServer></location>
          <location path="pages"><system.webServer>
            <httpErrors><remove statusCode="404" /><error statusCode="404" path="/folder-404.html" responseMode="ExecuteURL" /></httpErrors>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let locations = table["sites"]["locations"].as_array().unwrap();
        let admin = &locations[1];
        assert_eq!(
            admin["ip_security"]["rules"].as_array().map(Vec::len),
            Some(0)
        );
        // The clear of one list leaves the others joined.
        let sequences = admin["request_filtering"]["denied_url_sequences"]
            .as_array()
            .unwrap();
        assert_eq!(sequences.len(), 2, "{}", converted.text);
        let ops = &locations[2];
        let rules = ops["ip_security"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{}", converted.text);
        let notes = converted.left_out.join("\n");
        assert!(
            notes.contains("ip_security.rules: the folder's list takes entries"),
            "{notes}"
        );
        // IIS Manager's `<remove>` before an entry it sets again is a
        // replacement: joined, not flagged.
        assert!(!notes.contains("http_errors.errors"), "{notes}");
    }

    /// URL Authorization's rules follow IIS's server-wide rule (allow
    /// everyone) unless the file removes or clears it; a `<remove>` names
    /// a rule by its users, roles and verbs in any case; a rule that names
    /// nobody is named and left out.
    #[test]
    fn authorization_rules_add_to_iis_s_allow_everyone() {
        let rules = |xml: &str| {
            let xml = format!(
                "<configuration><system.webServer><security><authorization>{xml}</authorization></security></system.webServer></configuration>"
            );
            let converted = convert(&xml, None).unwrap();
            let table: toml::Table = converted.text.parse().unwrap();
            let rules: Vec<String> = table["authorization"]["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let t = r.as_table().unwrap();
                    ["access", "users", "roles", "verbs"]
                        .iter()
                        .filter_map(|k| t.get(*k).map(|v| format!("{k}={}", v.as_str().unwrap())))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            (rules, converted.left_out.join("\n"))
        };
        let (kept, _) = rules(r#"<add accessType="Deny" users="?" />"#);
        assert_eq!(kept, ["access=Allow users=*", "access=Deny users=?"]);
        let (removed, _) = rules(
            r#"<remove users="*" roles="" verbs="" /><add accessType="allow" roles="Admins" verbs="GET" />"#,
        );
        assert_eq!(removed, ["access=Allow roles=Admins verbs=GET"]);
        let (cleared, _) = rules(
            r#"<add accessType="Allow" users="ann" /><clear /><add accessType="Allow" users="bo" />"#,
        );
        assert_eq!(cleared, ["access=Allow users=bo"]);
        let (by_key, notes) = rules(
            r#"<clear /><add accessType="Allow" users="Ann" verbs="GET" /><add accessType="Deny" users="ann" />
               <remove users="ann" verbs="get" /><add accessType="Allow" users="" />"#,
        );
        assert_eq!(by_key, ["access=Deny users=ann"]);
        assert!(notes.contains("names no users and no roles"), "{notes}");
    }

    /// `httpRedirect`'s wildcard rules become `wildcards`, in order, a
    /// folder's after the file's; with a destination IIS reads none, and
    /// they are left out with a note.
    #[test]
    fn http_redirect_wildcards_are_converted() {
        let xml = r#"<configuration><system.webServer>
            <httpRedirect enabled="true" exactDestination="true" httpResponseStatus="Permanent">
              <add wildcard="*.asp" destination="/$0.aspx" />
              <add wildcard="/old.html" destination="/gone.html" />
              <remove wildcard="/OLD.html" />
              <add wildcard="/old.html" destination="/index.html" />
            </httpRedirect>
          </system.webServer>
          <location path="shop"><system.webServer>
            <httpRedirect><add wildcard="*.php" destination="/shop/" /></httpRedirect>
          </system.webServer></location>
          <location path="blog"><system.webServer>
            <httpRedirect destination="https://blog.example/"><add wildcard="*" destination="/" /></httpRedirect>
          </system.webServer></location>
          <location path="old"><system.webServer>
            <httpRedirect><remove wildcard="*.ASP" /></httpRedirect>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let wildcards = |t: &toml::Value| -> Vec<String> {
            t["http_redirect"]["wildcards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["wildcard"].as_str().unwrap(),
                        r["destination"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let locations = table["sites"]["locations"].as_array().unwrap();
        let site = locations
            .iter()
            .find(|l| l["path"].as_str() == Some("/"))
            .unwrap();
        assert_eq!(
            wildcards(site),
            ["*.asp /$0.aspx", "/old.html /index.html"],
            "{}",
            converted.text
        );
        let shop = locations
            .iter()
            .find(|l| l["path"].as_str() == Some("/shop"))
            .unwrap();
        assert_eq!(
            wildcards(shop),
            ["*.asp /$0.aspx", "/old.html /index.html", "*.php /shop/"],
            "{}",
            converted.text
        );
        let blog = locations
            .iter()
            .find(|l| l["path"].as_str() == Some("/blog"))
            .unwrap();
        // The folder's destination applies: IIS reads neither its rule nor
        // the inherited ones, which are written empty (riis refuses both).
        assert!(wildcards(blog).is_empty(), "{}", converted.text);
        // A `<remove>` alone takes an inherited rule out.
        let old = locations
            .iter()
            .find(|l| l["path"].as_str() == Some("/old"))
            .unwrap();
        assert_eq!(
            wildcards(old),
            ["/old.html /index.html"],
            "{}",
            converted.text
        );
        let notes = converted.left_out.join("\n");
        assert!(
            notes.contains("IIS reads none while the destination `https://blog.example/` applies"),
            "{notes}"
        );

        // A file's destination applies in its folders too: a folder's rules
        // are left out, with a note.
        let xml = r#"<configuration><system.webServer>
            <httpRedirect enabled="true" destination="https://new.example/" />
          </system.webServer>
          <location path="shop"><system.webServer>
            <httpRedirect><add wildcard="*.php" destination="/shop/" /></httpRedirect>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        assert!(
            converted.text.contains("wildcards = []"),
            "{}",
            converted.text
        );
        let notes = converted.left_out.join("\n");
        assert!(
            notes.contains("IIS reads none while the destination `https://new.example/` applies"),
            "{notes}"
        );
    }

    /// The wildcards of the converted location at `path`.
    fn wildcards_of(text: &str, path: &str) -> Vec<String> {
        let table: toml::Table = text.parse().unwrap();
        let location = table["sites"]["locations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("no location {path} in:\n{text}"))
            .clone();
        location["http_redirect"]["wildcards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["wildcard"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A request filtering limit past the gateways' own says that those
    /// need raising too (review V: a 31 MB upload still got 413).
    #[test]
    fn a_large_upload_limit_names_the_gateways_limits() {
        let xml = r#"<configuration><system.webServer><security><requestFiltering>
            <requestLimits maxAllowedContentLength="104857600" />
          </requestFiltering></security></system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        assert!(
            converted
                .text
                .contains("max_allowed_content_length = 104857600"),
            "{}",
            converted.text
        );
        let notes = converted.left_out.join("\n");
        assert!(notes.contains("fastcgi.max_request_body"), "{notes}");
        let small = r#"<configuration><system.webServer><security><requestFiltering>
            <requestLimits maxAllowedContentLength="1000000" />
          </requestFiltering></security></system.webServer></configuration>"#;
        assert!(convert(small, None).unwrap().left_out.is_empty());
    }

    /// A folder inside another inherits that folder's `httpRedirect`, as
    /// IIS's nested folders do, whichever comes first in the file.
    #[test]
    fn http_redirect_folders_inherit_their_enclosing_folders() {
        let xml = r#"<configuration><system.webServer>
            <httpRedirect enabled="true" exactDestination="true">
              <add wildcard="*.asp" destination="/$0.aspx" />
            </httpRedirect>
          </system.webServer>
          <location path="a/b"><system.webServer>
            <httpRedirect><add wildcard="*.php" destination="/b.html" /></httpRedirect>
          </system.webServer></location>
          <location path="a"><system.webServer>
            <httpRedirect enabled="true" destination="https://x.example/" />
          </system.webServer></location>
          <location path="c"><system.webServer>
            <httpRedirect><remove wildcard="*.asp" /></httpRedirect>
          </system.webServer></location>
          <location path="c/d"><system.webServer>
            <httpRedirect><add wildcard="*.jsp" destination="/d.html" /></httpRedirect>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let rules = |path: &str| wildcards_of(&converted.text, path);
        // `/a`'s destination applies in `/a/b` too: IIS reads no rule there.
        assert!(rules("/a/b").is_empty(), "{}", converted.text);
        assert!(converted.left_out.iter().any(
            |n| n.contains("IIS reads none while the destination `https://x.example/` applies")
        ));
        // `/c` took `*.asp` out for `/c/d` as well.
        assert_eq!(rules("/c/d"), ["*.jsp"], "{}", converted.text);

        // A folder that empties the destination it inherits reads the
        // rules again (review Q), the file's own included.
        let xml = r#"<configuration><system.webServer>
            <httpRedirect enabled="true" destination="https://all.example/">
              <add wildcard="*.asp" destination="/$0.aspx" />
            </httpRedirect>
          </system.webServer>
          <location path="a"><system.webServer>
            <httpRedirect destination="" />
          </system.webServer></location>
          <location path="a/b/c"><system.webServer>
            <httpRedirect destination="https://x.example/" />
          </system.webServer></location>
          <location path="a/b/c/d"><system.webServer>
            <httpRedirect destination="" />
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let rules = |path: &str| wildcards_of(&converted.text, path);
        assert_eq!(rules("/a"), ["*.asp"], "{}", converted.text);
        assert!(rules("/a/b/c").is_empty(), "{}", converted.text);
        assert_eq!(rules("/a/b/c/d"), ["*.asp"], "{}", converted.text);
    }

    /// Two `<location>`s for one folder in two cases are one location, as
    /// riis's (and IIS's) locations ignore case.
    #[test]
    fn locations_spelled_in_two_cases_become_one() {
        let xml = r#"<configuration>
          <location path="Admin"><system.webServer>
            <httpRedirect enabled="true" destination="https://new.example/" />
          </system.webServer></location>
          <location path="admin"><system.webServer>
            <defaultDocument><files><clear /><add value="admin.html" /></files></defaultDocument>
          </system.webServer></location>
        </configuration>"#;
        let converted = convert(xml, Some("/")).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let locations = table["sites"]["locations"].as_array().unwrap();
        let admin: Vec<&toml::Value> = locations
            .iter()
            .filter(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case("/admin"))
            })
            .collect();
        assert_eq!(admin.len(), 1, "{}", converted.text);
        assert!(
            admin[0].get("http_redirect").is_some(),
            "{}",
            converted.text
        );
        assert!(
            admin[0].get("default_document").is_some(),
            "{}",
            converted.text
        );
    }

    /// Two spellings of one folder that set one section are refused, with
    /// the section named.
    #[test]
    fn locations_spelled_in_two_cases_may_not_set_one_section_twice() {
        let xml = r#"<configuration>
          <location path="Admin"><system.webServer>
            <httpRedirect enabled="true" destination="https://a.example/" />
          </system.webServer></location>
          <location path="admin"><system.webServer>
            <httpRedirect enabled="true" destination="https://b.example/" />
          </system.webServer></location>
        </configuration>"#;
        let error = convert(xml, Some("/")).err().unwrap();
        assert!(
            error
                .contains("<location path=\"Admin\"> and <location path=\"admin\"> are one folder")
                && error.contains("set the same settings"),
            "{error}"
        );
    }

    #[test]
    fn http_platform_becomes_its_section_and_the_proxys_timeout() {
        let xml = r#"<configuration><system.webServer>
            <httpPlatform processPath="bin\node" arguments="server.js --port %HTTP_PLATFORM_PORT% &quot;a b&quot;"
                startupTimeLimit="20" processesPerApplication="2" requestTimeout="00:05:00"
                stdoutLogEnabled="true">
              <environmentVariables>
                <environmentVariable name="NODE_ENV" value="production" />
              </environmentVariables>
            </httpPlatform>
          </system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let platform = &table["http_platform"];
        assert_eq!(platform["process_path"].as_str(), Some("bin/node"));
        let arguments: Vec<&str> = platform["arguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            arguments,
            ["server.js", "--port", "%HTTP_PLATFORM_PORT%", "a b"]
        );
        assert_eq!(platform["startup_time_limit"].as_integer(), Some(20));
        assert_eq!(platform["processes_per_application"].as_integer(), Some(2));
        assert_eq!(
            platform["environment"]["NODE_ENV"].as_str(),
            Some("production")
        );
        assert_eq!(table["proxy"]["timeout"].as_integer(), Some(300));
        assert!(
            converted.text.contains("HttpPlatformHandler")
                && converted.text.contains("ReverseProxy"),
            "{}",
            converted.text
        );
        let xml = xml.replace(
            "<httpPlatform ",
            r#"<handlers><add name="p" path="*" verb="*" modules="httpPlatformHandler" /></handlers><httpPlatform "#,
        );
        let converted = convert(&xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let handler = &table["handlers"][0];
        assert_eq!(handler["name"].as_str(), Some("p"));
        assert_eq!(handler["path"].as_str(), Some("*"));
        assert_eq!(handler["verbs"].as_array().unwrap().len(), 1);
        assert_eq!(
            handler["modules"].as_array().unwrap(),
            &vec![
                Value::String("HttpPlatformHandler".into()),
                Value::String("ReverseProxy".into())
            ]
        );
        assert!(
            converted
                .left_out
                .iter()
                .any(|l| l.contains("stdoutLogEnabled")),
            "{:?}",
            converted.left_out
        );
    }

    /// The `web.config` `dotnet publish` writes, in a folder below the
    /// site's root.
    #[test]
    fn asp_net_core_becomes_its_section_and_its_handler() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <location path="." inheritInChildApplications="false">
    <system.webServer>
      <handlers>
        <add name="aspNetCore" path="*" verb="*" modules="AspNetCoreModuleV2" resourceType="Unspecified" />
        <add name="php" path="*.php" verb="GET,POST" modules="FastCgiModule" scriptProcessor="C:\php\php-cgi.exe" />
      </handlers>
      <aspNetCore processPath="dotnet" arguments=".\Shop.dll --urls-ignored" stdoutLogEnabled="false"
          stdoutLogFile=".\logs\stdout" hostingModel="inprocess" shutdownTimeLimit="30">
        <environmentVariables>
          <environmentVariable name="ASPNETCORE_ENVIRONMENT" value="Staging" />
          <environmentVariable name="ASPNETCORE_PORT" value="5000" />
        </environmentVariables>
      </aspNetCore>
    </system.webServer>
  </location>
</configuration>"#;
        let converted = convert(xml, Some("/shop")).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let location = &table["sites"]["locations"][0];
        assert_eq!(location["path"].as_str(), Some("/shop"));
        let handlers = location["handlers"].as_array().unwrap();
        assert_eq!(handlers.len(), 1, "{}", converted.text);
        assert_eq!(handlers[0]["name"].as_str(), Some("aspNetCore"));
        assert_eq!(
            handlers[0]["modules"].as_array().unwrap(),
            &vec![
                Value::String("AspNetCoreModule".into()),
                Value::String("ReverseProxy".into())
            ]
        );
        let section = &location["asp_net_core"];
        assert_eq!(section["process_path"].as_str(), Some("/usr/bin/dotnet"));
        let arguments: Vec<&str> = section["arguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(arguments, ["./Shop.dll", "--urls-ignored"]);
        assert_eq!(section["application_path"].as_str(), Some("/shop"));
        assert_eq!(section["shutdown_time_limit"].as_integer(), Some(30));
        assert_eq!(
            section["environment"].as_table().unwrap().len(),
            1,
            "ASPNETCORE_PORT is riis's: {}",
            converted.text
        );
        let notes = converted.left_out.join("\n");
        for expected in [
            "\"php\" (modules \"FastCgiModule\")",
            "ASPNETCORE_PORT: riis sets",
            "inprocess",
            "stdoutLogEnabled",
            "stdoutLogFile",
        ] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
        assert!(
            converted
                .text
                .contains("modules]] for the sections below: AspNetCoreModule, ReverseProxy."),
            "{}",
            converted.text
        );
        // The Windows installation's `dotnet`; Visual Studio's placeholders.
        let xml2 = xml.replace(
            r#"processPath="dotnet" arguments=".\Shop.dll --urls-ignored""#,
            r#"processPath="C:\Program Files\dotnet\dotnet.exe" arguments="%LAUNCHER_ARGS%""#,
        );
        let converted = convert(&xml2, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        assert_eq!(
            table["asp_net_core"]["process_path"].as_str(),
            Some("/usr/bin/dotnet")
        );
        assert!(table["asp_net_core"]
            .get("arguments")
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty());
        assert!(converted.left_out.join("\n").contains("%LAUNCHER_ARGS%"));
        let xml3 = xml.replace(".\\Shop.dll --urls-ignored", ".\\Shop.dll %LAUNCHER_ARGS%");
        let converted = convert(&xml3, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        assert_eq!(
            table["asp_net_core"]["arguments"].as_array().unwrap(),
            &vec![Value::String("./Shop.dll".into())]
        );
        // The application's own executable, published for Windows.
        let xml = xml.replace(r#"processPath="dotnet""#, r#"processPath=".\Shop.exe""#);
        let converted = convert(&xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        assert_eq!(
            table["asp_net_core"]["process_path"].as_str(),
            Some("./Shop")
        );
        assert!(table["asp_net_core"].get("application_path").is_none());
        assert!(converted.left_out.join("\n").contains("linux-x64"));
    }

    #[test]
    fn webdav_becomes_its_section_and_its_handler() {
        let xml = r#"<configuration><system.webServer>
          <webdav>
            <authoring enabled="true" requireSsl="true">
              <fileSystem allowHiddenFiles="false" />
              <properties allowAnonymousPropfind="true" allowInfinitePropfindDepth="false" />
              <locks enabled="false" lockStore="webdav_simple_lock" />
            </authoring>
            <authoringRules defaultAccess="Read" defaultMimeType="text/plain">
              <add users="alice, bob" path="*" access="Read, Write, Source" />
              <add roles="Editors" path="docs" access="Write" />
              <add users="?" access="Source" />
            </authoringRules>
          </webdav>
          <handlers>
            <add name="WebDAV" path="*" verb="PROPFIND,PUT,LOCK" modules="WebDAVModule" resourceType="Unspecified" />
          </handlers>
        </system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        let dav = table["webdav"].as_table().unwrap();
        assert_eq!(dav["enabled"].as_bool(), Some(true));
        assert_eq!(dav["require_ssl"].as_bool(), Some(true));
        assert_eq!(dav["allow_anonymous_propfind"].as_bool(), Some(true));
        assert_eq!(dav["locks_enabled"].as_bool(), Some(false));
        assert_eq!(dav["default_access"].as_str(), Some("Read"));
        let rules = dav["authoring_rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0]["users"].as_str(), Some("alice, bob"));
        assert_eq!(rules[0]["access"].as_str(), Some("Read, Write"));
        assert_eq!(rules[1]["access"].as_str(), Some("None"));
        let handler = &table["handlers"][0];
        assert_eq!(handler["modules"].as_array().unwrap().len(), 1);
        assert_eq!(handler["modules"][0].as_str(), Some("WebDav"));
        let verbs: Vec<&str> = handler["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(verbs, ["OPTIONS", "PROPFIND", "PUT", "LOCK"]);
        let notes = converted.left_out.join("\n");
        assert!(notes.contains("`Source` access"), "{notes}");
        assert!(notes.contains("path \"docs\""), "{notes}");
        assert!(notes.contains("defaultMimeType"), "{notes}");
        assert!(converted
            .text
            .contains("List these modules in [[modules]] for the sections below: WebDav"));
    }

    #[test]
    fn server_side_includes_become_their_section_and_handlers() {
        let xml = r#"<configuration><system.webServer>
          <serverSideInclude ssiExecDisable="true" />
          <handlers>
            <add name="SSINC-shtml" path="*.shtml" verb="GET,HEAD,POST" modules="ServerSideIncludeModule" resourceType="File" />
          </handlers>
        </system.webServer></configuration>"#;
        let converted = convert(xml, None).unwrap();
        let table: toml::Table = converted.text.parse().unwrap();
        assert_eq!(
            table["server_side_include"]["exec_disabled"].as_bool(),
            Some(true)
        );
        let handler = &table["handlers"][0];
        assert_eq!(handler["name"].as_str(), Some("SSINC-shtml"));
        assert_eq!(handler["path"].as_str(), Some("*.shtml"));
        assert_eq!(handler["resource_type"].as_str(), Some("File"));
        assert_eq!(handler["modules"][0].as_str(), Some("ServerSideInclude"));
        assert_eq!(handler["verbs"].as_array().unwrap().len(), 3);
        assert!(converted.left_out.is_empty(), "{:?}", converted.left_out);
        assert!(converted.text.contains(
            "List these modules in [[modules]] for the sections below: ServerSideInclude"
        ));
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
