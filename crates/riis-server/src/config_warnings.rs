//! Warnings about a valid configuration: things the server runs with but an
//! operator most likely did not mean, found from the folders the
//! configuration names, its handler lists and the modules' registrations.
//! `riis check-config` and `riis reload` print them, `riis serve` logs them
//! at start and at each reload; none stops the server (nginx's `[warn]`
//! lines of `nginx -t`).
//!
//! Two are about a location's configuration not covering all the URLs of
//! its files:
//! - a virtual directory whose folder lies inside the site's root or
//!   another virtual directory's folder is also served at the URL that
//!   folder has there, where the location's configuration does not apply;
//!   one whose folder holds the root (or another's folder) serves those
//!   files at URLs of its own;
//! - locations ignore ASCII case (as IIS's do), so on a file system where
//!   case matters, two folders whose names differ only in case (`public`,
//!   `PUBLIC`) both get the configuration of a location written for one.
//!
//! And three about handlers: a handler listed after one that takes every
//! request it would is never chosen (the first match wins, as in IIS's
//! `<handlers>`); a module that takes part in requests only as a
//! handler (at ExecuteRequestHandler) but that no handler lists never
//! handles one (`modules_never_run`, which needs the built pipeline); and
//! a handler with HttpPlatformHandler or AspNetCoreModule but no
//! ReverseProxy after it never passes a request to the application.
//!
//! And some about modules' sections read from the built pipeline: a
//! UrlRewrite rule that sends requests to a server where no handler runs
//! ReverseProxy (`rewrites_to_servers_never_passed`), default folders
//! another user could have made (`default_folders_refused`), and secrets
//! in a served folder (`secrets_served`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use riis_modules::request_filtering::DEFAULT_HIDDEN_SEGMENTS;
use riis_pipeline::{
    path_below, HandlerDefinition, Pipeline, ResourceType, SectionSource, SiteDefinition,
};

use crate::config::{ConfigError, ServerConfig};

/// Folders with more entries than this are not searched for names that
/// differ only in case (the search reads each folder once per load).
const MOST_ENTRIES_SEARCHED: usize = 10_000;

/// A URL path prefix and the folder it maps to: the site's root at `/`, or
/// a virtual directory.
struct Mapping<'a> {
    url: &'a str,
    folder: &'a Path,
    /// The location's key and place in the site's list; `None` for the
    /// site's root.
    location: Option<(&'a str, usize)>,
}

/// A warning about a site: the place of the location it concerns in the
/// site's list (the order they are reported in), its key, the message.
type SiteWarning = (usize, String, String);

impl ServerConfig {
    /// The module type listed as `name` in `[[modules]]` (its `type`, or
    /// the name itself).
    fn module_type<'a>(&'a self, name: &'a str) -> &'a str {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .map_or(name, |m| m.type_name())
    }

    /// What the configuration probably does not mean, each placed at the key
    /// it concerns. Reads the folders the sites name; never fails.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        let mut lists: Vec<&[HandlerDefinition]> = vec![&self.handlers];
        for site in &self.sites {
            lists.extend(site.handlers.as_deref());
            lists.extend(site.locations.iter().filter_map(|l| l.handlers.as_deref()));
        }
        for list in lists {
            for (key, message) in handlers_never_chosen(list) {
                warnings.push(self.error_at(&key, &message));
            }
            for (key, message) in self.platforms_without_proxy(list) {
                warnings.push(self.error_at(&key, &message));
            }
        }
        let mut folders = Folders::default();
        for site in &self.sites {
            let mappings = mappings(site);
            // Refused at `url` and at every location below it: a deeper
            // location may reopen what is hidden above it (its own
            // `hidden_segments`, `internal = false`, `allow_hidden`).
            let refused = |url: &str| {
                self.refuses(site, url)
                    && site
                        .locations
                        .iter()
                        .filter(|l| path_below(url, &l.path).is_some())
                        .all(|l| self.refuses(site, &l.path))
            };
            let mut found = folders_mapped_twice(&mappings, &refused);
            found.extend(case_twins(site, &mappings, &mut folders));
            // By the location they concern, in the file's order.
            found.sort_by_key(|(at, _, _)| *at);
            for (_, key, message) in found {
                warnings.push(self.error_at(&key, &message));
            }
        }
        warnings
    }

    /// Handlers of `list` with HttpPlatformHandler or AspNetCoreModule in
    /// their `modules` and no ReverseProxy after it: those only name the
    /// application's process (in `PROXY_SERVER`), ReverseProxy passes the
    /// request, so without it the application never gets one. And those
    /// that list both: only one application gets the requests.
    fn platforms_without_proxy<'a>(
        &'a self,
        list: &'a [HandlerDefinition],
    ) -> Vec<(String, String)> {
        let kind = |name: &'a str| self.module_type(name);
        let starts_application =
            |k: &&str| matches!(*k, "HttpPlatformHandler" | "AspNetCoreModule");
        list.iter()
            .filter_map(|handler| {
                let kinds: Vec<&str> = handler.modules.iter().map(|m| kind(m)).collect();
                let at = kinds.iter().position(starts_application)?;
                if kinds.iter().filter(|k| starts_application(k)).count() > 1 {
                    // The last names the process; the first's application
                    // starts for nothing, and its request headers (the
                    // ASP.NET Core Module's pairing token) go to the other.
                    return Some((
                        handler.key.clone(),
                        format!(
                            "handler `{}` lists more than one module that starts an application \
                             (HttpPlatformHandler, AspNetCoreModule): list one",
                            handler.name
                        ),
                    ));
                }
                if kinds[at..].contains(&"ReverseProxy") {
                    return None;
                }
                Some((
                    handler.key.clone(),
                    format!(
                        "handler `{}` lists {} without ReverseProxy after it, so \
                         the application's requests are never passed to it: list `ReverseProxy` \
                         after `{}`",
                        handler.name, kinds[at], handler.modules[at]
                    ),
                ))
            })
            .collect()
    }

    /// Whether every request for `url` of `site` is refused whatever it
    /// holds: by RequestFiltering, when a location marked `internal`
    /// covers it or a segment of it is hidden (riis's default hidden
    /// segments, or the list that replaces them where the innermost
    /// `request_filtering` section of the server, the site or a location
    /// covering it names one); or by StaticFile, when a
    /// segment starts with `.` and no `static_file` section there sets
    /// `allow_hidden`.
    fn refuses(&self, site: &SiteDefinition, url: &str) -> bool {
        let listed = |module: &str| self.modules.iter().any(|m| m.type_name() == module);
        let mut covering: Vec<&riis_pipeline::LocationDefinition> = site
            .locations
            .iter()
            .filter(|l| path_below(&l.path, url).is_some())
            .collect();
        // Outer first, as the layers merge: a key's innermost value wins.
        covering.sort_by_key(|l| l.path.trim_end_matches('/').len());
        let layers = |name: &'static str| -> Vec<&toml::Value> {
            self.sections
                .iter()
                .chain(&site.sections)
                .chain(covering.iter().flat_map(|l| &l.sections))
                .filter(|s: &&SectionSource| s.name == name)
                .map(|s| &s.value)
                .collect()
        };
        // A key's value where it is set last (innermost).
        let last = |sections: &[&'_ toml::Value], key: &str| -> Option<toml::Value> {
            sections.iter().rev().find_map(|v| v.get(key)).cloned()
        };
        let dotted = url.split('/').any(|segment| segment.starts_with('.'));
        let hidden_allowed =
            last(&layers("static_file"), "allow_hidden").and_then(|v| v.as_bool()) == Some(true);
        if dotted && !hidden_allowed && listed("StaticFile") {
            return true;
        }
        if !listed("RequestFiltering") {
            return false;
        }
        let sections = layers("request_filtering");
        let internal = last(&sections, "internal").and_then(|v| v.as_bool()) == Some(true);
        // A list of the section's replaces riis's defaults (it does not add
        // to them).
        let hidden: Vec<String> = match last(&sections, "hidden_segments") {
            Some(toml::Value::Array(listed)) => listed
                .iter()
                .filter_map(toml::Value::as_str)
                .map(String::from)
                .collect(),
            _ => DEFAULT_HIDDEN_SEGMENTS.map(String::from).into(),
        };
        internal
            || url
                .split('/')
                .any(|segment| hidden.iter().any(|h| h.eq_ignore_ascii_case(segment)))
    }
}

/// The site's root and its virtual directories, most specific first.
fn mappings(site: &SiteDefinition) -> Vec<Mapping<'_>> {
    let mut mappings: Vec<Mapping<'_>> = site
        .locations
        .iter()
        .enumerate()
        .filter_map(|(at, l)| {
            Some(Mapping {
                url: l.path.trim_end_matches('/'),
                folder: l.physical_path.as_deref()?,
                location: Some((&l.key, at)),
            })
        })
        .collect();
    mappings.sort_by_key(|m| std::cmp::Reverse(m.url.chars().count()));
    mappings.push(Mapping {
        url: "",
        folder: &site.physical_root,
        location: None,
    });
    mappings
}

/// The mapping that serves `url`: the most specific one that covers it.
fn serving<'m, 'a>(mappings: &'m [Mapping<'a>], url: &str) -> &'m Mapping<'a> {
    mappings
        .iter()
        .find(|m| path_below(m.url, url).is_some())
        .unwrap_or(&mappings[mappings.len() - 1])
}

/// Where `inner` lies below `outer`: compared as written (a virtual
/// directory reached through a link inside the root, as a deploy links
/// `shared/uploads` into `current/public`) and resolved (one reached
/// through a link that is the root); `None` when it does not.
fn relative_to(inner: &Path, outer: &Path) -> Option<PathBuf> {
    if let Ok(relative) = inner.strip_prefix(outer) {
        return Some(relative.to_path_buf());
    }
    let (inner, outer) = (
        std::fs::canonicalize(inner).ok()?,
        std::fs::canonicalize(outer).ok()?,
    );
    inner.strip_prefix(outer).ok().map(Path::to_path_buf)
}

/// Virtual directories whose files another mapping also serves at other
/// URLs: a folder inside the root or inside another virtual directory's
/// folder, and a folder that holds the root or another virtual
/// directory's folder. Of two virtual directories with one folder, the
/// later in the file is named. URLs RequestFiltering refuses (`refused`:
/// hidden segments, internal locations) are no second way in.
fn folders_mapped_twice(
    mappings: &[Mapping<'_>],
    refused: &dyn Fn(&str) -> bool,
) -> Vec<SiteWarning> {
    let mut found = Vec::new();
    for directory in mappings {
        let Some((key, at)) = directory.location else {
            continue;
        };
        // The root first: the warning names one reason, the broadest.
        for other in mappings
            .iter()
            .rev()
            .filter(|o| !std::ptr::eq(*o, directory))
        {
            let name = |what: &str| match other.location {
                None => format!("the site's root{what}"),
                Some(_) => format!("the folder of location `{}`{what}", other.url),
            };
            // Its files under the other's URL.
            if let Some(relative) = relative_to(directory.folder, other.folder) {
                let same = relative.as_os_str().is_empty();
                if same && other.location.is_some_and(|(_, other_at)| other_at > at) {
                    continue;
                }
                let Some(url) = url_of(other.url, &relative) else {
                    continue;
                };
                // The same URL (a nested location mapped where its parent
                // would map it anyway), a URL another virtual directory
                // serves instead, or one refused: no second way in.
                if path_below(directory.url, &url) == Some("")
                    || !std::ptr::eq(serving(mappings, &url), other)
                    || refused(&url)
                {
                    continue;
                }
                let whose = if same {
                    format!("is also {}", name(""))
                } else {
                    format!("is inside {}", name(""))
                };
                found.push((
                    at,
                    format!("{key}.physical_path"),
                    format!(
                        "`{}` {whose}, so its files are also served as `{}/…`, \
                         where this location's configuration does not apply",
                        directory.folder.display(),
                        url.trim_end_matches('/')
                    ),
                ));
                break;
            }
            // The other's files under this directory's URL.
            if let Some(relative) = relative_to(other.folder, directory.folder) {
                let Some(url) = url_of(directory.url, &relative) else {
                    continue;
                };
                if relative.as_os_str().is_empty()
                    || !std::ptr::eq(serving(mappings, &url), directory)
                    || refused(&url)
                {
                    continue;
                }
                found.push((
                    at,
                    format!("{key}.physical_path"),
                    format!(
                        "`{}` holds {}, so those files are also served as `{}/…`, \
                         where the configuration of their own URLs does not apply",
                        directory.folder.display(),
                        name(&format!(" (`{}`)", other.folder.display())),
                        url.trim_end_matches('/')
                    ),
                ));
                break;
            }
        }
    }
    found
}

/// Locations (not virtual directories) whose path names folders or files
/// in more than one case.
fn case_twins(
    site: &SiteDefinition,
    mappings: &[Mapping<'_>],
    folders: &mut Folders,
) -> Vec<SiteWarning> {
    let mut found = Vec::new();
    for (at, location) in site.locations.iter().enumerate() {
        // Every spelling of a virtual directory's path maps into its one
        // folder.
        let path = location.path.trim_end_matches('/');
        if location.physical_path.is_some() || path.is_empty() {
            continue;
        }
        let twins = folders.spellings_of(mappings, path);
        if twins.len() < 2 {
            continue;
        }
        let mut names: Vec<String> = twins.iter().map(|f| format!("`{}`", f.display())).collect();
        let last = names.pop().unwrap_or_default();
        let all = if names.len() == 1 { "both" } else { "all" };
        found.push((
            at,
            format!("{}.path", location.key),
            format!(
                "locations ignore case, so {} and {last} {all} get the configuration of location `{}`; \
                 rename one if they should not",
                names.join(", "),
                location.path
            ),
        ));
    }
    found
}

/// The entries of the folders looked at, each folder read once per load.
#[derive(Default)]
struct Folders {
    /// Name and path of each entry; `None` for a folder that cannot be
    /// read or holds more than [`MOST_ENTRIES_SEARCHED`] entries.
    entries: HashMap<PathBuf, Option<Vec<(String, PathBuf)>>>,
}

impl Folders {
    /// The files and folders that URL path `path` reaches in any case,
    /// through the mapping that serves it; two spellings of one folder (a
    /// link to it) count once.
    fn spellings_of(&mut self, mappings: &[Mapping<'_>], path: &str) -> Vec<PathBuf> {
        let mapping = serving(mappings, path);
        let below = path_below(mapping.url, path).unwrap_or(path);
        let mut reached = vec![mapping.folder.to_path_buf()];
        for segment in below.split('/').filter(|s| !s.is_empty()) {
            let mut next = Vec::new();
            for folder in &reached {
                next.extend(self.named(folder, segment));
            }
            if next.is_empty() {
                // The location names nothing here.
                return Vec::new();
            }
            // Two names of one folder count once, at each step: links back
            // to a folder named in two cases would otherwise double the
            // paths followed at every segment.
            next.sort();
            let mut seen = Vec::new();
            next.retain(|p| {
                let id = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                let new = !seen.contains(&id);
                seen.push(id);
                new
            });
            reached = next;
        }
        reached
    }

    /// The entries of `folder` named `name` as locations compare names.
    fn named(&mut self, folder: &Path, name: &str) -> Vec<PathBuf> {
        let entries = self
            .entries
            .entry(folder.to_path_buf())
            .or_insert_with(|| read_folder(folder));
        let Some(entries) = entries else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|(n, _)| path_below(name, n) == Some(""))
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// A folder's entries with names that are text; `None` when it cannot be
/// read or holds more than [`MOST_ENTRIES_SEARCHED`] entries.
fn read_folder(folder: &Path) -> Option<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for (n, entry) in std::fs::read_dir(folder).ok()?.enumerate() {
        if n >= MOST_ENTRIES_SEARCHED {
            return None;
        }
        let Ok(entry) = entry else { continue };
        if let Ok(name) = entry.file_name().into_string() {
            entries.push((name, entry.path()));
        }
    }
    Some(entries)
}

/// Every warning about `config` as built into `pipeline`: those of
/// [`ServerConfig::warnings`], then [`modules_never_run`]. What
/// `Server::warnings` reports and a reload logs.
pub(crate) fn warnings_of(config: &ServerConfig, pipeline: &Pipeline) -> Vec<ConfigError> {
    let mut warnings = config.warnings();
    warnings.extend(modules_never_run(config, pipeline));
    warnings.extend(rewrites_to_servers_never_passed(config, pipeline));
    warnings.extend(default_folders_refused(config, pipeline));
    warnings.extend(secrets_served(config, pipeline));
    warnings
}

/// Files the configuration keeps secrets in (BasicAuthentication's user and
/// group files, a site's certificate key) that lie in a folder a site (any
/// site, not only the one that uses them) serves, at a URL nothing
/// refuses: a client may download the password hashes or the key
/// (StaticFile serves a name without an extension once `default_mime_type`
/// is set, as a WebDAV site sets it; DirectoryListing and WebDav's
/// PROPFIND name it). `.htpasswd` is hidden by default, so a file of that
/// name is not named, nor one RequestFiltering refuses by its extension or
/// a denied sequence. Placed at the key that names the file.
fn secrets_served(config: &ServerConfig, pipeline: &Pipeline) -> Vec<ConfigError> {
    use riis_modules::basic_authentication::BasicAuthenticationConfig;
    use riis_modules::request_filtering::{url_refusal, RequestFilteringConfig};
    // The section is read only with its module listed.
    let filtering_help = if config
        .modules
        .iter()
        .any(|m| m.type_name() == "RequestFiltering")
    {
        ""
    } else {
        ", with RequestFiltering in [[modules]]"
    };
    let mut secrets: Vec<(PathBuf, String)> = Vec::new();
    for (site, definition) in pipeline.sites().iter().zip(&config.sites) {
        for location in site.locations() {
            let Some(basic) =
                pipeline.section_at::<BasicAuthenticationConfig>(location, "basic_authentication")
            else {
                continue;
            };
            for (file, key) in [
                (&basic.user_file, "user_file"),
                (&basic.group_file, "group_file"),
            ] {
                let path = config.folder.join(file);
                if !file.as_os_str().is_empty() && !secrets.iter().any(|(p, _)| *p == path) {
                    let at = section_key(
                        config,
                        definition,
                        location.path(),
                        "basic_authentication",
                        key,
                    );
                    secrets.push((path, at));
                }
            }
        }
    }
    for bindings in &config.bindings {
        if let Some(tls) = &bindings.tls {
            let key = format!("{}.certificate_key", config.sites[bindings.site].key);
            if !secrets.iter().any(|(p, _)| *p == tls.key) {
                secrets.push((tls.key.clone(), key));
            }
        }
    }
    let mut found = Vec::new();
    for (file, key) in secrets {
        let served = pipeline
            .sites()
            .iter()
            .zip(&config.sites)
            .find_map(|(site, definition)| {
                let maps = mappings(definition);
                let refused = |url: &str| {
                    config.refuses(definition, url)
                        || pipeline
                            .section_at::<RequestFilteringConfig>(
                                site.location(site.location_index(url)),
                                "request_filtering",
                            )
                            .is_some_and(|filtering| url_refusal(filtering, url, "GET").is_some())
                };
                let url = maps.iter().find_map(|m| {
                    let url = url_of(m.url, &relative_to(&file, m.folder)?)?;
                    (std::ptr::eq(serving(&maps, &url), m) && !refused(&url)).then_some(url)
                })?;
                Some((site.info().site_name.clone(), url))
            });
        let Some((site, url)) = served else {
            continue;
        };
        found.push(config.error_at(
            &key,
            &format!(
                "`{}` is inside a folder site `{site}` serves, as `{url}`: keep secrets outside the sites' folders, or hide the name (request_filtering.hidden_segments{})",
                file.display(),
                filtering_help
            ),
        ));
    }
    found
}

/// The key `key` of the `section` table nearest the location at `path` of
/// `site` (the location's own, else the site's, else the server's) that
/// sets it; the server's table's when none does.
fn section_key(
    config: &ServerConfig,
    site: &SiteDefinition,
    path: &str,
    section: &str,
    key: &str,
) -> String {
    nearest_key(config, site, path, |sections| {
        let table = sections.iter().find(|s| s.name == section)?;
        table.value.get(key)?;
        Some(format!("{}.{key}", table.key))
    })
    .unwrap_or_else(|| format!("{section}.{key}"))
}

/// The default folders under the system temp dir (FailedRequestsTracing's
/// traces, StaticCompression's copies) that a location in force would use
/// but that are not this user's private folders: their names are known in
/// advance, so another user may have made them first, and then no trace
/// is written, no copy kept. Once each, at the module's entry.
fn default_folders_refused(config: &ServerConfig, pipeline: &Pipeline) -> Vec<ConfigError> {
    use riis_modules::failed_requests_tracing::FailedRequestsTracingConfig;
    use riis_modules::static_compression::StaticCompressionConfig;
    let locations = || {
        pipeline
            .sites()
            .iter()
            .flat_map(|site| site.locations().iter())
    };
    let traces = locations().find_map(|l| {
        pipeline
            .section_at::<FailedRequestsTracingConfig>(l, "failed_requests_tracing")?
            .default_directory_refusal()
    });
    let copies = locations().find_map(|l| {
        pipeline
            .section_at::<StaticCompressionConfig>(l, "static_compression")?
            .default_directory_refusal()
    });
    let mut found = Vec::new();
    for (module, why, what) in [
        ("FailedRequestsTracing", traces, "no trace is written"),
        ("StaticCompression", copies, "no compressed copy is kept"),
    ] {
        let Some(why) = why else { continue };
        let key = config
            .modules
            .iter()
            .position(|m| m.type_name() == module)
            .filter(|_| config.line_of_key("modules[0]").is_some())
            .map_or_else(|| "modules".to_owned(), |i| format!("modules[{i}].name"));
        found.push(config.error_at(
            &key,
            &format!(
                "{module}'s default directory cannot be used ({why}): {what}; set `directory` to a folder of this user's"
            ),
        ));
    }
    found
}

/// UrlRewrite rules that send requests to a server of their own (a
/// Rewrite to `http://server/…`, or `PROXY_SERVER` set) that will fail
/// (500), since no handler passes them on: the handler comes from the
/// location of the request's new URL, which for a Rewrite to a server is
/// the path the rule gives (`/app/…` of `http://backend/app/{R:1}`; the
/// site's root for `/{R:1}`), and for a rule that only sets
/// `PROXY_SERVER` the request's own. A rule is named when the location its
/// written-out path falls in has no handler running ReverseProxy, or, when
/// that path is not known before requests come (it starts with a value, or
/// the URL stays the request's), when no location it applies in has one.
/// Placed at the rule.
fn rewrites_to_servers_never_passed(
    config: &ServerConfig,
    pipeline: &Pipeline,
) -> Vec<ConfigError> {
    use riis_modules::url_rewrite::RewriteConfig;
    let is_proxy = |index: &riis_pipeline::ModuleIndex| {
        config.module_type(pipeline.module_name(*index)) == "ReverseProxy"
    };
    let passes_on = |location: &riis_pipeline::Location| {
        location
            .handlers()
            .iter()
            .any(|h| h.modules.iter().any(is_proxy))
    };
    let mut found = Vec::new();
    for (site, definition) in pipeline.sites().iter().zip(&config.sites) {
        fn rules_at<'a>(
            pipeline: &Pipeline,
            location: &'a riis_pipeline::Location,
        ) -> Option<&'a RewriteConfig> {
            pipeline.section_at::<RewriteConfig>(location, "rewrite")
        }
        // Outermost first (the site's root is the last location), so that a
        // rule is met first where it was written.
        let mut named: Vec<*const ()> = Vec::new();
        for location in site.locations().iter().rev() {
            let Some(rules) = rules_at(pipeline, location) else {
                continue;
            };
            for (rule, name, path_start) in rules.rules_sending_to_servers() {
                let id = std::sync::Arc::as_ptr(rule).cast::<()>();
                if named.contains(&id) {
                    continue;
                }
                named.push(id);
                let failing = match &path_start {
                    Some(path) => {
                        let lands = site.location(site.location_index(path));
                        (!passes_on(lands)).then(|| {
                            format!(
                                "rule `{name}` (site `{}`) sends requests to a server as `{path}…`, a path of location `{}`, where no handler runs ReverseProxy",
                                site.info().site_name,
                                lands.path()
                            )
                        })
                    }
                    None => {
                        let applies = |other: &riis_pipeline::Location| {
                            rules_at(pipeline, other).is_some_and(|r| {
                                r.rules.iter().any(|o| std::sync::Arc::ptr_eq(o, rule))
                            })
                        };
                        let passed = site
                            .locations()
                            .iter()
                            .any(|other| applies(other) && passes_on(other));
                        (!passed).then(|| {
                            format!(
                                "rule `{name}` (site `{}`) sends requests to a server, but no handler where it applies runs ReverseProxy",
                                site.info().site_name
                            )
                        })
                    }
                };
                let Some(what) = failing else {
                    continue;
                };
                let key = rewrite_rule_key(config, definition, location.path(), name);
                found.push(config.error_at(
                    &key,
                    &format!(
                        "{what}, so each of them fails with 500: list ReverseProxy in a handler's \
                         `modules` there (and in `[[modules]]`)"
                    ),
                ));
            }
        }
    }
    found
}

/// The key of rule `rule` in the `rewrite` table nearest the location at
/// `path` of `site` (the location's own, else the site's, else the
/// server's), or of the table when it names no such rule.
fn rewrite_rule_key(
    config: &ServerConfig,
    site: &SiteDefinition,
    path: &str,
    rule: &str,
) -> String {
    nearest_key(config, site, path, |sections| {
        let table = sections.iter().find(|s| s.name == "rewrite")?;
        let named = |r: &toml::Value| r.get("name").and_then(toml::Value::as_str) == Some(rule);
        let at = table
            .value
            .get("rules")
            .and_then(toml::Value::as_array)
            .and_then(|rules| rules.iter().position(named));
        Some(match at {
            Some(i) => format!("{}.rules[{i}]", table.key),
            None => table.key.clone(),
        })
    })
    .unwrap_or_else(|| site.key.clone())
}

/// What `written` finds in the sections nearest the location at `path` of
/// `site`: the location's own, else the site's, else the server's.
fn nearest_key(
    config: &ServerConfig,
    site: &SiteDefinition,
    path: &str,
    written: impl Fn(&[riis_pipeline::SectionSource]) -> Option<String>,
) -> Option<String> {
    site.locations
        .iter()
        .filter(|l| l.path == path)
        .find_map(|l| written(&l.sections))
        .or_else(|| written(&site.sections))
        .or_else(|| written(&config.sections))
}

/// Modules of `pipeline` that take part in requests only as handlers
/// (registered for ExecuteRequestHandler and for no other request
/// notification) but that no handler of any site or location lists: they
/// never handle a request (their global notifications still come).
/// Placed at the module's entry in `[[modules]]`.
fn modules_never_run(config: &ServerConfig, pipeline: &Pipeline) -> Vec<ConfigError> {
    use riis_pipeline::RequestNotification as N;
    let listed: Vec<&str> = pipeline
        .sites()
        .iter()
        .flat_map(|site| site.locations())
        .flat_map(|location| location.handlers())
        .flat_map(|handler| &handler.modules)
        .map(|m| pipeline.module_name(*m))
        .collect();
    let mut found = Vec::new();
    for name in pipeline.module_names() {
        let in_event = |n: N, post: bool| pipeline.dispatch_order(n, post).contains(&name);
        let other_events = N::DETERMINISTIC
            .iter()
            .flat_map(|n| [(*n, false), (*n, true)])
            .chain(N::NONDETERMINISTIC.iter().map(|n| (*n, false)))
            .filter(|(n, post)| *n != N::ExecuteRequestHandler || *post)
            .any(|(n, post)| in_event(n, post));
        let handler_only = in_event(N::ExecuteRequestHandler, false) && !other_events;
        if !handler_only || listed.contains(&name) {
            continue;
        }
        // Without `[[modules]]` the list is the embedded default one: its
        // keys are in no file.
        let in_file = config.line_of_key("modules[0]").is_some();
        let (key, whose) = match config.modules.iter().position(|m| m.name == name) {
            Some(i) if in_file => (format!("modules[{i}].name"), format!("module `{name}`")),
            None if in_file => ("modules".to_owned(), format!("module `{name}`")),
            _ => (
                "modules".to_owned(),
                format!(
                    "module `{name}` of the default module list (the file has no `[[modules]]`)"
                ),
            ),
        };
        found.push(config.error_at(
            &key,
            &format!(
                "{whose} takes part in requests only as a handler (at ExecuteRequestHandler) \
                 and no handler lists it, so it never handles one: name it in a handler's `modules`"
            ),
        ));
    }
    found
}

/// Handlers of `list` that an earlier one always takes the place of:
/// `(key, message)` for each.
fn handlers_never_chosen(list: &[HandlerDefinition]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (j, later) in list.iter().enumerate() {
        if let Some(earlier) = list[..j].iter().find(|earlier| shadows(earlier, later)) {
            let verbs = if all_verbs(&earlier.verbs) {
                "every method".to_owned()
            } else {
                earlier.verbs.join(", ")
            };
            found.push((
                later.key.clone(),
                format!(
                    "handler `{}` is never chosen: handler `{}` before it (`{}`, {verbs}) \
                     takes every request it would; list it earlier",
                    later.name, earlier.name, earlier.path
                ),
            ));
        }
    }
    found
}

/// Whether handler `earlier`, listed before `later`, is chosen for every
/// request `later` would be: its pattern covers `later`'s, its methods
/// include `later`'s, and the resources it takes include `later`'s.
fn shadows(earlier: &HandlerDefinition, later: &HandlerDefinition) -> bool {
    let resource = |h: &HandlerDefinition| ResourceType::parse(&h.resource_type);
    let (Some(first), Some(second)) = (resource(earlier), resource(later)) else {
        return false;
    };
    let takes_any_path = matches!(earlier.path.as_str(), "*" | "/*");
    let same_path = earlier.path.eq_ignore_ascii_case(&later.path);
    let verbs = all_verbs(&earlier.verbs)
        || (!all_verbs(&later.verbs)
            && later
                .verbs
                .iter()
                .all(|v| earlier.verbs.iter().any(|e| e == v)));
    let resources = first == ResourceType::Unspecified
        || first == second
        || (first == ResourceType::Either
            && matches!(second, ResourceType::File | ResourceType::Directory));
    // A handler that splits path info off also takes URLs its pattern
    // does not match whole (`/index.php/users` for `*.php`); only an
    // earlier one that takes any path and resource, or splits the same
    // way, takes those first.
    let path_info = !later.allow_path_info
        || (takes_any_path && first == ResourceType::Unspecified)
        || (earlier.allow_path_info && same_path);
    (takes_any_path || same_path) && verbs && resources && path_info
}

/// Whether a handler's `verbs` list means every method (`*` in it, or empty).
fn all_verbs(verbs: &[String]) -> bool {
    verbs.is_empty() || verbs.iter().any(|v| v == "*")
}

/// The URL path of `relative` (a folder below a mapping's folder) under the
/// mapping's URL; `None` when a name is not text.
fn url_of(base: &str, relative: &Path) -> Option<String> {
    let mut url = base.to_owned();
    for part in relative.components() {
        url.push('/');
        url.push_str(part.as_os_str().to_str()?);
    }
    if url.is_empty() {
        url.push('/');
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(path: &str, verbs: &[&str], resource_type: &str) -> HandlerDefinition {
        HandlerDefinition {
            name: path.to_owned(),
            path: path.to_owned(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            resource_type: resource_type.to_owned(),
            modules: Vec::new(),
            allow_path_info: false,
            key: String::new(),
        }
    }

    #[test]
    fn a_handler_after_one_that_takes_its_requests_is_never_chosen() {
        let all = handler("*", &["*"], "Unspecified");
        let php = handler("*.php", &["GET", "POST"], "File");
        assert!(shadows(&all, &php));
        assert!(shadows(&handler("*.PHP", &[], "Either"), &php));
        // Fewer methods, another resource type, another pattern: no.
        assert!(!shadows(&handler("*", &["GET"], "Unspecified"), &php));
        assert!(!shadows(&handler("*", &["*"], "Directory"), &php));
        assert!(!shadows(&handler("*.html", &["*"], "Unspecified"), &php));
        // StaticFile's usual entry (files and folders) leaves dynamic
        // handlers of any path their requests for what does not exist.
        let static_file = handler("*", &["GET", "HEAD"], "Either");
        assert!(!shadows(
            &static_file,
            &handler("*.php", &["GET"], "Unspecified")
        ));
        assert!(shadows(&static_file, &handler("*.txt", &["GET"], "File")));
        // Path info: `*.php` whole does not take `/index.php/users`.
        let mut split = php.clone();
        split.allow_path_info = true;
        assert!(!shadows(&handler("*.php", &["*"], "Unspecified"), &split));
        assert!(shadows(&all, &split));
        let list = [all, php];
        let found = handlers_never_chosen(&list);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].1.contains(
                "handler `*.php` is never chosen: handler `*` before it (`*`, every method)"
            ),
            "{}",
            found[0].1
        );
    }

    #[test]
    fn a_url_is_built_from_a_relative_folder() {
        assert_eq!(
            url_of("", Path::new("assets/media")).as_deref(),
            Some("/assets/media")
        );
        assert_eq!(
            url_of("/files", Path::new("x")).as_deref(),
            Some("/files/x")
        );
        assert_eq!(url_of("", Path::new("")).as_deref(), Some("/"));
    }
}
