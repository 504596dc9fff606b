//! Warnings about a valid configuration: things the server runs with but an
//! operator most likely did not mean, found by looking at the folders the
//! configuration names. `riis check-config` prints them, `riis serve` logs
//! them at start and at each reload; none stops the server (nginx's `[warn]`
//! lines of `nginx -t`).
//!
//! Both are about a location's configuration not covering all the URLs of
//! its files:
//! - a virtual directory whose folder lies inside the site's root (or
//!   inside another virtual directory's folder) is also served at the URL
//!   that folder has there, where the location's configuration does not
//!   apply;
//! - locations ignore ASCII case (as IIS's do), so on a file system where
//!   case matters, two folders whose names differ only in case (`public`,
//!   `PUBLIC`) both get the configuration of a location written for one.
//!
//! And one about a handler list: a handler listed after one that takes
//! every request it would is never chosen (the first match wins, as in
//! IIS's `<handlers>`).

use std::path::{Path, PathBuf};

use riis_pipeline::{path_below, HandlerDefinition, ResourceType, SiteDefinition};

use crate::config::{ConfigError, ServerConfig};

/// Folders with more entries than this are not searched for names that
/// differ only in case (the search reads the whole folder at each start).
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

impl ServerConfig {
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
        }
        for site in &self.sites {
            let mappings = mappings(site);
            // By the location they concern, in the file's order.
            let mut found = folders_mapped_twice(&mappings);
            for (at, location) in site.locations.iter().enumerate() {
                if location.physical_path.is_some() {
                    // Every spelling of a virtual directory's path maps into
                    // its one folder.
                    continue;
                }
                let path = location.path.trim_end_matches('/');
                if path.is_empty() {
                    continue;
                }
                let twins = folders_of(&mappings, path);
                if twins.len() > 1 {
                    let mut names: Vec<String> =
                        twins.iter().map(|f| format!("`{}`", f.display())).collect();
                    let last = names.pop().unwrap_or_default();
                    found.push((
                        at,
                        format!("{}.path", location.key),
                        format!(
                            "locations ignore case, so {} and {last} all get the configuration of location `{}`; \
                             rename one if they should not",
                            names.join(", "),
                            location.path
                        ),
                    ));
                }
            }
            found.sort_by_key(|(at, _, _)| *at);
            for (_, key, message) in found {
                warnings.push(self.error_at(&key, &message));
            }
        }
        warnings
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
    mappings.sort_by_key(|m| std::cmp::Reverse(m.url.len()));
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

/// Virtual directories whose folder another mapping also serves, at another
/// URL: `(location's place, key, message)` for each. Of two virtual
/// directories with one folder, the later in the file is named.
fn folders_mapped_twice(mappings: &[Mapping<'_>]) -> Vec<(usize, String, String)> {
    let canonical: Vec<Option<PathBuf>> = mappings
        .iter()
        .map(|m| std::fs::canonicalize(m.folder).ok())
        .collect();
    let mut found = Vec::new();
    for (v, directory) in mappings.iter().enumerate() {
        let (Some((key, at)), Some(folder)) = (directory.location, &canonical[v]) else {
            continue;
        };
        for (o, other) in mappings.iter().enumerate() {
            let Some(outer) = canonical[o].as_ref().filter(|_| o != v) else {
                continue;
            };
            let Ok(relative) = folder.strip_prefix(outer) else {
                continue;
            };
            let same = relative.as_os_str().is_empty();
            if same && other.location.is_some_and(|(_, other_at)| other_at > at) {
                continue;
            }
            let Some(url) = url_of(other.url, relative) else {
                continue;
            };
            // The same URL (a nested location mapped where its parent would
            // map it anyway), or a URL another virtual directory serves
            // instead: no second way in.
            if url.eq_ignore_ascii_case(directory.url)
                || !std::ptr::eq(serving(mappings, &url), other)
            {
                continue;
            }
            let whose = match (other.location, same) {
                (None, false) => "is inside the site's root".to_owned(),
                (None, true) => "is the site's root".to_owned(),
                (Some(_), false) => format!("is inside the folder of location `{}`", other.url),
                (Some(_), true) => format!("is also the folder of location `{}`", other.url),
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

/// The existing folders that URL path `path` reaches in any ASCII case,
/// through the mapping that serves it.
fn folders_of(mappings: &[Mapping<'_>], path: &str) -> Vec<PathBuf> {
    let mapping = serving(mappings, path);
    let below = path_below(mapping.url, path).unwrap_or(path);
    let mut reached = vec![mapping.folder.to_path_buf()];
    for segment in below.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for folder in &reached {
            next.extend(spellings_in(folder, segment));
        }
        if next.is_empty() {
            // The location names no folder here.
            return Vec::new();
        }
        reached = next;
    }
    if reached.len() < 2 {
        return Vec::new();
    }
    reached
}

/// The subfolders of `folder` named `name` in any ASCII case.
fn spellings_in(folder: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .take(MOST_ENTRIES_SEARCHED)
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
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
