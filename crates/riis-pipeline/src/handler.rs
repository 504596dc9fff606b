//! Handler mappings: which modules run at ExecuteRequestHandler for a request.
//!
//! At MapRequestHandler the engine walks the location's handler list in order;
//! the first entry whose path pattern, verbs and resource type match wins.

use std::path::Path;

use http::Method;

use crate::registration::ModuleIndex;

/// What a handler requires the mapped physical path to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceType {
    /// An existing file.
    File,
    /// An existing directory.
    Directory,
    /// An existing file or directory.
    Either,
    /// Anything, existing or not (dynamic handlers).
    #[default]
    Unspecified,
}

impl ResourceType {
    /// Parses IIS's names (`File`, `Directory`, `Either`, `Unspecified`),
    /// case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ("file", Self::File),
            ("directory", Self::Directory),
            ("either", Self::Either),
            ("unspecified", Self::Unspecified),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, t)| t)
    }

    fn accepts(self, kind: Option<ResourceKind>) -> bool {
        match self {
            Self::Unspecified => true,
            Self::Either => kind.is_some(),
            Self::File => kind == Some(ResourceKind::File),
            Self::Directory => kind == Some(ResourceKind::Directory),
        }
    }
}

/// What a physical path turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A regular file (or a link to one).
    File,
    /// A directory.
    Directory,
}

/// What the engine learned about a physical path when it probed it: enough
/// to choose a handler, and for a file the length and modification time, so
/// a static handler needs no second `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// File or directory.
    pub kind: ResourceKind,
    /// Length in bytes (0 for a directory).
    pub len: u64,
    /// Last modification, when the platform reports it.
    pub modified: Option<std::time::SystemTime>,
    /// The file's last status change (`ctime`), in nanoseconds since the
    /// epoch; 0 when unknown. Unlike the modification time, no program can
    /// set it: every write, and the rename that puts a new file in place,
    /// moves it on, so a validator that includes it changes whenever the
    /// bytes may have (a copy made with `cp -p`, an archive, a build with
    /// fixed dates keep the modification time and the length).
    pub changed: u128,
}

impl ResourceInfo {
    /// A file of `len` bytes.
    pub fn file(len: u64, modified: Option<std::time::SystemTime>) -> Self {
        Self {
            kind: ResourceKind::File,
            len,
            modified,
            changed: 0,
        }
    }

    /// A file of `len` bytes, with its status change time (see
    /// [`ResourceInfo::changed`]) from `meta`.
    pub fn of_file(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let changed = u128::try_from(meta.ctime()).unwrap_or(0) * 1_000_000_000
            + u128::try_from(meta.ctime_nsec()).unwrap_or(0);
        Self {
            changed,
            ..Self::file(meta.len(), meta.modified().ok())
        }
    }

    /// A directory.
    pub fn directory() -> Self {
        Self {
            kind: ResourceKind::Directory,
            len: 0,
            modified: None,
            changed: 0,
        }
    }
}

/// The result of probing a physical path.
#[derive(Debug)]
pub struct Probe {
    /// What the path is.
    pub info: ResourceInfo,
    /// The file, open: when the probe opened it to learn what it is, or
    /// when the file system's cache keeps it open (shared by the requests
    /// that send it). A handler takes it with
    /// [`crate::HttpContext::take_opened_file`] instead of resolving the
    /// path again.
    pub file: Option<std::sync::Arc<std::fs::File>>,
    /// The whole content, when the file system holds it in its cache
    /// (validated against the file's current metadata); a handler takes it
    /// with [`crate::HttpContext::take_cached_content`] and reads nothing.
    pub content: Option<bytes::Bytes>,
}

/// The engine's only window on the file system: what a physical path is. The
/// server gives it the real file system; tests give it a fake, so the engine
/// itself does no I/O.
pub trait FileSystem: Send + Sync + 'static {
    /// What `path` is, or `None` when nothing servable is there.
    fn probe(&self, path: &Path) -> Option<Probe>;

    /// Whether `path` is there but the server may not open it (a permission
    /// error). Asked only after [`FileSystem::probe`] found nothing and no
    /// handler took the request, to answer 403 rather than 404, as nginx
    /// does. The default: never.
    fn is_denied(&self, _path: &Path) -> bool {
        false
    }
}

/// The file system of a pipeline built without one: nothing exists, so
/// handlers that need a file or directory never match.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoFileSystem;

impl FileSystem for NoFileSystem {
    fn probe(&self, _path: &Path) -> Option<Probe> {
        None
    }
}

/// A path pattern of a handler mapping.
///
/// Without a `/` it matches the last URL segment (`*`, `*.php`, `status.axd`),
/// as IIS's `path` attribute does; with a `/` it matches the whole URL path.
/// `*` matches any run of characters and `?` one character; matching ignores
/// ASCII case, so `*.PHP` and `*.php` are the same pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    pattern: Box<str>,
    whole_path: bool,
}

impl PathPattern {
    /// A pattern from its text.
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.into(),
            whole_path: pattern.contains('/'),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the decoded URL path matches.
    pub fn matches(&self, url_path: &str) -> bool {
        if &*self.pattern == "*" {
            return true;
        }
        let subject = if self.whole_path {
            url_path
        } else {
            url_path.rsplit('/').next().unwrap_or("")
        };
        if &*self.pattern == "*." {
            // IIS's extensionless pattern (ExtensionlessUrlHandler): a last
            // segment with no `.` in it (`/`, `/about`), not one ending in
            // a dot.
            return !subject.contains('.');
        }
        glob(self.pattern.as_bytes(), subject.as_bytes())
    }

    /// Where `url_path` splits into a script this pattern names and
    /// PATH_INFO after it: the end of each leading part whose last segment
    /// matches and that a `/` follows, shortest first (`*.php` splits
    /// `/a/index.php/b/c` at 11). A pattern on the whole path never
    /// splits one (the configuration refuses `allow_path_info` with it).
    pub(crate) fn script_ends<'a>(&'a self, url_path: &'a str) -> impl Iterator<Item = usize> + 'a {
        url_path
            .match_indices('/')
            .map(|(end, _)| end)
            .filter(move |&end| end > 0 && !self.whole_path && self.matches(&url_path[..end]))
    }

    /// Whether `allow_path_info` means anything for this pattern: it names
    /// a last segment, and not every one (`*`) nor every one without a dot
    /// (`*.`), which would split any URL at its first segment.
    pub fn can_split_path_info(&self) -> bool {
        !self.whole_path && !matches!(&*self.pattern, "*" | "*.")
    }
}

/// `*`/`?` wildcard match, ASCII case-insensitive, without recursion blow-up
/// (the classic two-pointer walk that backtracks only to the last `*`).
fn glob(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        // A `*` in the pattern is a wildcard even where the subject has a
        // literal `*`: tested first, it keeps its backtrack point.
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if p < pattern.len()
            && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&subject[s]))
        {
            p += 1;
            s += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A handler mapping as resolved for the pipeline.
#[derive(Clone, Debug)]
pub struct HandlerMapping {
    /// The handler's name (shown in traces and error pages).
    pub name: String,
    /// Which URLs it handles.
    pub path: PathPattern,
    /// Which methods it handles; `None` for all (`*`).
    pub verbs: Option<Vec<Method>>,
    /// What the mapped path must be.
    pub resource_type: ResourceType,
    /// The modules that run at ExecuteRequestHandler, in order.
    pub modules: Vec<ModuleIndex>,
    /// IIS's `allowPathInfo`: the handler also takes URLs whose leading
    /// part names its script, the rest being PATH_INFO
    /// (`/index.php/users/7` for `*.php`).
    pub allow_path_info: bool,
}

/// The handler [`choose_handler`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChosenHandler {
    /// Its index in the list.
    pub index: usize,
    /// Where the script's part of the URL path ends, when the handler took
    /// the rest as PATH_INFO.
    pub script_end: Option<usize>,
}

/// Why no handler was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingFailure {
    /// No mapping's path matched: 404.4 (no handler).
    NoHandler,
    /// A mapping's path matched but not the method: 405.
    VerbNotAllowed,
    /// A mapping's path and method matched but the resource does not exist
    /// (or has the wrong type): 404.0.
    ResourceNotFound,
}

impl HandlerMapping {
    fn verb_matches(&self, method: &Method) -> bool {
        self.verbs
            .as_ref()
            .is_none_or(|verbs| verbs.iter().any(|v| v == method))
    }

    /// Whether the handler takes a request of `method` for a path it
    /// matched, whose resource `kind` tells; `failure` is raised to the
    /// reason if not.
    #[inline]
    fn accepts(
        &self,
        method: &Method,
        failure: &mut MappingFailure,
        kind: impl FnOnce() -> Option<ResourceKind>,
    ) -> bool {
        if !self.verb_matches(method) {
            if *failure == MappingFailure::NoHandler {
                *failure = MappingFailure::VerbNotAllowed;
            }
            return false;
        }
        if self.resource_type != ResourceType::Unspecified && !self.resource_type.accepts(kind()) {
            *failure = MappingFailure::ResourceNotFound;
            return false;
        }
        true
    }

    /// Whether the path matches, whole or (with `allow_path_info`) as a
    /// script followed by PATH_INFO.
    fn path_matches(&self, url_path: &str) -> bool {
        self.path.matches(url_path)
            || (self.allow_path_info && self.path.script_ends(url_path).next().is_some())
    }
}

/// Whether choosing among `handlers` will need to know what the path is:
/// the first handler whose path and verb match requires a resource type
/// (one that requires none wins without a look at the disk, and so does
/// every request it takes).
pub(crate) fn needs_probe(handlers: &[HandlerMapping], url_path: &str, method: &Method) -> bool {
    handlers
        .iter()
        .find(|h| h.path.matches(url_path) && h.verb_matches(method))
        .is_some_and(|h| h.resource_type != ResourceType::Unspecified)
}

/// The methods the handlers for `url_path` accept, for the `Allow` header of
/// a 405 (RFC 9110 §15.5.6), in [`allow_rank`] order; `None` when one of
/// them accepts every method.
pub(crate) fn allowed_methods(handlers: &[HandlerMapping], url_path: &str) -> Option<String> {
    let mut allowed: Vec<&str> = Vec::new();
    for h in handlers.iter().filter(|h| h.path_matches(url_path)) {
        for v in h.verbs.as_ref()? {
            if !allowed.contains(&v.as_str()) {
                allowed.push(v.as_str());
            }
        }
    }
    allowed.sort_by_key(|m| allow_rank(m));
    Some(allowed.join(", "))
}

/// Where a method goes in an `Allow` list, so that every answer that lists
/// methods lists them alike: the common methods in their usual order
/// (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE), then the others
/// in the order found (a stable sort keeps it).
pub fn allow_rank(method: &str) -> usize {
    const ORDER: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
    ];
    ORDER
        .iter()
        .position(|m| *m == method)
        .unwrap_or(ORDER.len())
}

/// Chooses the first matching handler. `probe` tells what the physical
/// path is of the whole URL (`None`) or of the script ending at an offset
/// (a handler with `allow_path_info`); it is asked only when a candidate
/// needs the resource type, and for the whole URL at most once.
pub(crate) fn choose_handler(
    handlers: &[HandlerMapping],
    url_path: &str,
    method: &Method,
    mut probe: impl FnMut(Option<usize>) -> Option<ResourceKind>,
) -> Result<ChosenHandler, MappingFailure> {
    let mut failure = MappingFailure::NoHandler;
    let mut kind: Option<Option<ResourceKind>> = None;
    for (index, h) in handlers.iter().enumerate() {
        if h.path.matches(url_path) {
            let k = &mut kind;
            let chosen = h.accepts(method, &mut failure, || {
                *k.get_or_insert_with(|| probe(None))
            });
            if chosen {
                return Ok(ChosenHandler {
                    index,
                    script_end: None,
                });
            }
        }
        if h.allow_path_info {
            if let Some(end) = choose_split(h, url_path, method, &mut failure, &mut probe) {
                return Ok(ChosenHandler {
                    index,
                    script_end: Some(end),
                });
            }
        }
    }
    Err(failure)
}

/// The first leading part of `url_path` that names a script `h` takes
/// (shortest first), for a handler with `allow_path_info`. A part with
/// nothing at its path ends the search: nothing can be below it either,
/// so a URL of many `x.php/` segments costs one look, not one per segment.
#[cold]
fn choose_split(
    h: &HandlerMapping,
    url_path: &str,
    method: &Method,
    failure: &mut MappingFailure,
    probe: &mut impl FnMut(Option<usize>) -> Option<ResourceKind>,
) -> Option<usize> {
    for end in h.path.script_ends(url_path) {
        let mut missing = false;
        let chosen = h.accepts(method, failure, || {
            let kind = probe(Some(end));
            missing = kind.is_none();
            kind
        });
        if chosen {
            return Some(end);
        }
        if missing || !h.verb_matches(method) {
            // Nothing below a missing part; the verbs are the same for
            // every split.
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(path: &str, verbs: Option<Vec<Method>>, rt: ResourceType) -> HandlerMapping {
        HandlerMapping {
            name: path.into(),
            path: PathPattern::new(path),
            verbs,
            resource_type: rt,
            modules: vec![],
            allow_path_info: false,
        }
    }

    fn chosen(index: usize, script_end: Option<usize>) -> Result<ChosenHandler, MappingFailure> {
        Ok(ChosenHandler { index, script_end })
    }

    #[test]
    fn patterns_match_last_segment_or_whole_path() {
        assert!(PathPattern::new("*.php").matches("/a/index.PHP"));
        assert!(!PathPattern::new("*.php").matches("/a.php/x"));
        assert!(PathPattern::new("status.axd").matches("/x/status.axd"));
        assert!(PathPattern::new("/api/*").matches("/api/v1/users"));
        assert!(!PathPattern::new("/api/*").matches("/apiv1"));
        assert!(PathPattern::new("a?c").matches("/abc"));
        assert!(PathPattern::new("*").matches("/"));
        // A literal `*` in the URL does not eat the pattern's wildcard.
        assert!(PathPattern::new("*.php").matches("/x/*a.php"));
        assert!(PathPattern::new("a*b").matches("/a*xb"));
        // IIS's extensionless pattern.
        assert!(PathPattern::new("*.").matches("/about"));
        assert!(PathPattern::new("*.").matches("/"));
        assert!(PathPattern::new("*.").matches("/a.b/about"));
        assert!(!PathPattern::new("*.").matches("/about.html"));
    }

    #[test]
    fn the_disk_is_probed_only_when_the_winning_handler_needs_it() {
        let handlers = vec![
            mapping("*.php", None, ResourceType::Unspecified),
            mapping("*", None, ResourceType::Either),
        ];
        assert!(!needs_probe(&handlers, "/x.php", &Method::GET));
        assert!(needs_probe(&handlers, "/x.txt", &Method::GET));
        let handlers = vec![
            mapping("*.php", Some(vec![Method::POST]), ResourceType::Unspecified),
            mapping("*", None, ResourceType::Either),
        ];
        // The first one's verb does not match: the second decides.
        assert!(needs_probe(&handlers, "/x.php", &Method::GET));
    }

    #[test]
    fn first_match_wins_and_failures_are_ranked() {
        let handlers = vec![
            mapping("*.php", Some(vec![Method::POST]), ResourceType::Unspecified),
            mapping("*", None, ResourceType::File),
        ];
        assert_eq!(
            choose_handler(&handlers, "/x.php", &Method::POST, |_| None),
            chosen(0, None)
        );
        assert_eq!(
            choose_handler(&handlers, "/x.php", &Method::GET, |_| Some(
                ResourceKind::File
            )),
            chosen(1, None)
        );
        assert_eq!(
            choose_handler(&handlers, "/x.txt", &Method::GET, |_| None),
            Err(MappingFailure::ResourceNotFound)
        );
        let only_php = &handlers[..1];
        assert_eq!(
            choose_handler(only_php, "/x.php", &Method::GET, |_| None),
            Err(MappingFailure::VerbNotAllowed)
        );
        assert_eq!(
            choose_handler(only_php, "/x.txt", &Method::GET, |_| None),
            Err(MappingFailure::NoHandler)
        );
    }

    #[test]
    fn a_pattern_splits_a_url_after_each_segment_it_names() {
        let php = PathPattern::new("*.php");
        let ends = |url: &str| php.script_ends(url).collect::<Vec<_>>();
        assert_eq!(ends("/index.php/users/7"), [10]);
        assert_eq!(ends("/a/INDEX.PHP/b"), [12]);
        assert_eq!(ends("/a.php/b.php/c"), [6, 12]);
        // The whole URL is no split, nor is a segment that only starts so.
        assert!(ends("/index.php").is_empty());
        assert!(ends("/index.phpx/y").is_empty());
        assert!(ends("/").is_empty());
        assert!(PathPattern::new("/api/*.php")
            .script_ends("/api/a.php/b")
            .next()
            .is_none());
        assert!(php.can_split_path_info());
        for every in ["*", "*.", "/api/*"] {
            assert!(!PathPattern::new(every).can_split_path_info(), "{every}");
        }
    }

    #[test]
    fn a_handler_with_path_info_takes_the_first_script_that_is_there() {
        let mut php = mapping("*.php", Some(vec![Method::GET]), ResourceType::File);
        php.allow_path_info = true;
        let handlers = vec![php, mapping("*", None, ResourceType::Either)];
        let mut asked = Vec::new();
        // `/a.php` is a folder; `/a.php/b.php` a file.
        let found = choose_handler(&handlers, "/a.php/b.php/c", &Method::GET, |end| {
            asked.push(end);
            match end {
                Some(6) => Some(ResourceKind::Directory),
                Some(12) => Some(ResourceKind::File),
                _ => None,
            }
        });
        assert_eq!(found, chosen(0, Some(12)));
        assert_eq!(asked, [Some(6), Some(12)]);
        // The whole URL comes first.
        let found = choose_handler(&handlers, "/a.php", &Method::GET, |end| {
            (end.is_none()).then_some(ResourceKind::File)
        });
        assert_eq!(found, chosen(0, None));
        // The whole URL names a script that is not there: a leading part
        // that is one takes it.
        let found = choose_handler(&handlers, "/index.php/x.php", &Method::GET, |end| {
            (end == Some(10)).then_some(ResourceKind::File)
        });
        assert_eq!(found, chosen(0, Some(10)));
        // A missing part ends the search: one look for many segments.
        let mut looks = 0;
        let url = "/x.php".repeat(50) + "/tail";
        let found = choose_handler(&handlers[..1], &url, &Method::GET, |_| {
            looks += 1;
            None
        });
        assert_eq!(found, Err(MappingFailure::ResourceNotFound));
        assert_eq!(looks, 1);
        // No script there: the next handler, on the whole URL.
        let found = choose_handler(&handlers, "/x.php/y", &Method::GET, |end| {
            (end.is_none()).then_some(ResourceKind::File)
        });
        assert_eq!(found, chosen(1, None));
        // Another method: the split counts for 405 and `Allow`.
        let only_php = &handlers[..1];
        assert_eq!(
            choose_handler(only_php, "/x.php/y", &Method::POST, |_| None),
            Err(MappingFailure::VerbNotAllowed)
        );
        assert_eq!(
            allowed_methods(only_php, "/x.php/y").as_deref(),
            Some("GET")
        );
        assert_eq!(allowed_methods(only_php, "/x.txt/y").as_deref(), Some(""));
    }
}
