//! The methods' work on the file system, done on the module's threads
//! (`riis-webdav`) so that a COPY of a large tree or a PROPFIND of a large
//! folder does not hold up the worker's other connections. What a method
//! needs from the request (its target, the `If` header's verdict, the
//! destination and the user's rights there) is gathered on the worker
//! first, into a [`Work`]. A method that changes files runs only once it
//! has claimed them (see `tree::claim_then` and [`Work::claim_paths`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::locks::{self, IfHeader, Lock, LOCKS};
use super::properties::{self, DeadProperties, Resource};
use super::tree;
use super::xml::{self, Multistatus, PropFind, PropertyChange, PropertyName};
use riis_pipeline::http::header;

use super::{is_hidden_segment, options, Method, WebDavConfig};

/// A method's work, with what it needs from the request.
pub(super) struct Work {
    pub(super) method: Method,
    pub(super) config: Arc<WebDavConfig>,
    /// The request's URL and file.
    pub(super) target: Target,
    /// The lock tokens the request submitted, and whose.
    pub(super) held: Held,
    /// Its `If`, `If-Match`, `If-None-Match` and `If-Unmodified-Since`
    /// conditions, evaluated again once its paths are claimed.
    pub(super) preconditions: Preconditions,
    /// The XML body (PROPFIND, PROPPATCH, LOCK).
    pub(super) body: Vec<u8>,
    pub(super) depth: Option<Depth>,
    /// RequestFiltering's hidden names, left out of listings.
    pub(super) hidden_segments: Vec<String>,
    /// LOCK's `Timeout` header.
    pub(super) timeout: Option<String>,
    /// UNLOCK's `Lock-Token` header.
    pub(super) lock_token: Option<String>,
    /// COPY and MOVE's destination.
    pub(super) transfer: Option<Transfer>,
    /// Locations inside a PROPFIND's tree whose settings refuse the user a
    /// listing: left out, with all below them.
    pub(super) unlisted: Vec<String>,
    /// A PUT's body, whole.
    pub(super) upload: Option<Upload>,
    /// The folders the site's URLs map into, resolved: none is removed,
    /// moved or replaced.
    pub(super) mapped_roots: Vec<PathBuf>,
}

/// Where a COPY or MOVE goes, and how.
pub(super) struct Transfer {
    pub(super) dest: Target,
    pub(super) overwrite: bool,
    /// A COPY with Depth infinity (MOVE always is).
    pub(super) infinite: bool,
}

impl Work {
    /// Does the method's work.
    pub(super) fn run(mut self) -> Outcome {
        // The conditions held when the request was prepared, but another
        // method may have changed the files before this one claimed them:
        // of two PUTs with one `If-Match`, or two `If-None-Match: *` PUTs
        // of a new name, only the first to claim the file may write it.
        if !self.claim_paths().is_empty() {
            self.preconditions.check(self.held.site, &self.target)?;
        }
        match self.method {
            Method::Options => Ok(options(&self.config)),
            Method::PropFind => propfind(&self),
            Method::PropPatch => proppatch(&self),
            Method::MkCol => mkcol(&self.target, &self.held),
            Method::Put => put(&mut self),
            Method::Delete => delete(&self),
            Method::Copy | Method::Move => transfer(&self),
            Method::Lock => lock(&self),
            Method::Unlock => unlock(&self),
        }
    }

    /// The resolved paths the method changes, to claim before it runs:
    /// its target, and a COPY or MOVE's destination. PROPFIND, UNLOCK and
    /// OPTIONS change no file.
    pub(super) fn claim_paths(&self) -> Vec<PathBuf> {
        match self.method {
            Method::PropFind | Method::Unlock | Method::Options => Vec::new(),
            Method::Copy | Method::Move => {
                let mut paths = vec![self.target.path.clone()];
                paths.extend(self.transfer.as_ref().map(|t| t.dest.path.clone()));
                paths
            }
            _ => vec![self.target.path.clone()],
        }
    }

    /// Whether `real` is, or holds, a folder the site's URLs map into.
    fn holds_mapped_root(&self, real: &Path) -> bool {
        self.mapped_roots.iter().any(|root| root.starts_with(real))
    }
}

/// A PUT's bytes, in a file of their own until they are whole.
pub(super) struct Upload {
    pub(super) file: std::fs::File,
}

/// The answer to a request: a status and maybe an XML body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) xml: Option<String>,
    pub(super) headers: Vec<(header::HeaderName, String)>,
    /// A PROPFIND answer longer than one part: the walk still to do. The
    /// part in `xml` goes out first, then the module asks its threads for
    /// the next once the client has taken it.
    pub(super) more: Option<Box<Listing>>,
}

impl Answer {
    pub(super) fn status(status: u16) -> Self {
        Self {
            status,
            xml: None,
            headers: Vec::new(),
            more: None,
        }
    }

    pub(super) fn xml(status: u16, body: String) -> Self {
        Self {
            status,
            xml: Some(body),
            headers: Vec::new(),
            more: None,
        }
    }

    /// The next part of `listing`, and the listing itself if more is left.
    pub(super) fn listing_part(mut listing: Box<Listing>) -> Self {
        let part = listing.part();
        let mut answer = Self::xml(207, part);
        // A part made once every resource was described closed the
        // multistatus: it was the last.
        if !listing.is_walked() {
            answer.more = Some(listing);
        }
        answer
    }
}

/// An error status with the reason for the log and the detailed error
/// page.
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) substatus: u16,
    pub(super) why: String,
    /// A `DAV:error` precondition to send as the body.
    pub(super) condition: Option<&'static str>,
}

pub(super) fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        substatus: 0,
        why: why.into(),
        condition: None,
    }
}

impl Refusal {
    /// The refusal with IIS's substatus (403.4, 404.8).
    pub(super) fn with_substatus(mut self, substatus: u16) -> Self {
        self.substatus = substatus;
        self
    }
}

pub(super) type Outcome = Result<Answer, Refusal>;

/// What a request works on: its URL (decoded, no trailing `/` but for `/`)
/// and the file it maps to.
pub(super) struct Target {
    pub(super) url: String,
    /// The file, resolved (it passes no symbolic link: `tree::plain_path`):
    /// the methods work on this path, the one that was checked, and a link
    /// of the site's own switched meanwhile does not lead them elsewhere.
    pub(super) path: PathBuf,
}

impl Target {
    pub(super) fn metadata(&self) -> Option<std::fs::Metadata> {
        std::fs::metadata(&self.path).ok()
    }
}

/// `url` without its trailing `/` (but `/` itself).
pub(super) fn trimmed(url: &str) -> String {
    let t = url.trim_end_matches('/');
    if t.is_empty() {
        "/".to_owned()
    } else {
        t.to_owned()
    }
}

/// The href of `url`: escaped, and with a trailing `/` for a collection.
pub(super) fn href(url: &str, collection: bool) -> String {
    let mut h = crate::canonical_url_path(url);
    if collection && !h.ends_with('/') {
        h.push('/');
    }
    h
}

/// Whether a segment of `url` starts with `.`.
pub(super) fn is_hidden(url: &str) -> bool {
    url.split('/').any(|s| s.starts_with('.'))
}

pub(super) fn io_status(e: &std::io::Error) -> u16 {
    match e.kind() {
        std::io::ErrorKind::NotFound => 404,
        std::io::ErrorKind::PermissionDenied => 403,
        // A file where a folder is wanted, or the other way round.
        std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => 409,
        // A name or path longer than the file system takes: the client's
        // to shorten, not the server's failure.
        std::io::ErrorKind::InvalidFilename => 400,
        _ if properties::is_out_of_room(e) => 507,
        _ => 500,
    }
}

/// The request's `Depth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Depth {
    Zero,
    One,
    Infinity,
}

/// What a request's `If` tokens let it do, and whose they are.
pub(super) struct Held {
    pub(super) site: u32,
    pub(super) principal: String,
    /// The client's network (see [`Lock::client`]).
    pub(super) client: std::net::IpAddr,
    pub(super) tokens: Vec<String>,
}

/// A request's preconditions (RFC 9110 §13.2 and RFC 4918 §10.4), kept
/// to be evaluated against the files as they are when the method runs.
pub(super) struct Preconditions {
    /// `If-Match`, `If-None-Match` and `If-Unmodified-Since`, as sent.
    pub(super) headers: header::HeaderMap,
    pub(super) method: riis_pipeline::http::Method,
    /// The `If` header, if sent.
    pub(super) if_header: Option<IfHeader>,
    /// Each resource the `If` header's lists are tagged with (`None`: the
    /// request's own): its URL and its file, resolved on the worker (an
    /// empty path where the user may not see it, so it has no entity
    /// tag).
    pub(super) resources: Vec<(Option<String>, String, PathBuf)>,
}

impl Preconditions {
    /// `Err(412)` unless the conditions hold now, for `target` in `site`.
    pub(super) fn check(&self, site: u32, target: &Target) -> Result<(), Refusal> {
        let meta = std::fs::symlink_metadata(&target.path)
            .ok()
            .filter(|_| !target.path.as_os_str().is_empty());
        if !crate::static_file::change_preconditions_hold(
            &self.headers,
            &self.method,
            meta.as_ref(),
        ) {
            return Err(refuse(
                412,
                "If-Match, If-None-Match or If-Unmodified-Since does not hold",
            ));
        }
        let Some(if_header) = &self.if_header else {
            return Ok(());
        };
        // Each tagged resource's entity tag, found once.
        let etags: Vec<Option<String>> = self
            .resources
            .iter()
            .map(|(_, _, path)| {
                std::fs::symlink_metadata(path)
                    .ok()
                    .filter(|m| m.is_file() && !path.as_os_str().is_empty())
                    .and_then(|m| crate::static_file::etag_of(&m))
            })
            .collect();
        let holds = if_header.holds(&mut |tag, kind| {
            let Some(i) = self
                .resources
                .iter()
                .position(|(t, _, _)| t.as_deref() == tag)
            else {
                return false;
            };
            match kind {
                locks::ConditionKind::Token(token) => {
                    LOCKS.is_current(site, token, &self.resources[i].1)
                }
                locks::ConditionKind::ETag(tag) => etags[i].as_deref() == Some(tag.as_str()),
            }
        });
        if holds {
            Ok(())
        } else {
            Err(refuse(412, "the If header's conditions do not hold"))
        }
    }
}

/// Which locks a change must hold the tokens of.
#[derive(Clone, Copy)]
pub(super) enum Scope {
    /// The resource's own content or properties: the locks covering it.
    Resource,
    /// It is made or removed: also a lock on its collection.
    Member,
    /// It and all below it are removed or replaced.
    Tree,
}

impl Held {
    /// `Err(423)` when a lock that applies was not submitted by its owner.
    pub(super) fn check(&self, url: &str, scope: Scope) -> Result<(), Refusal> {
        let parent = locks::parent(url);
        let applies = |l: &Lock| {
            l.covers(url)
                || (!matches!(scope, Scope::Resource) && parent == Some(l.root.as_str()))
                || (matches!(scope, Scope::Tree) && locks::is_below(url, &l.root))
        };
        let applicable = LOCKS.find(self.site, applies);
        let submitted = |l: &Lock| l.principal == self.principal && self.tokens.contains(&l.token);
        // A resource's locks are one exclusive lock or shared ones; of
        // shared ones, holding one is enough (RFC 4918 §6.2).
        let blocking = applicable.iter().find(|l| {
            let one_shared_held = !l.exclusive
                && applicable
                    .iter()
                    .any(|o| o.root == l.root && !o.exclusive && submitted(o));
            !submitted(l) && !one_shared_held
        });
        match blocking {
            None => Ok(()),
            Some(l) => Err(Refusal {
                status: 423,
                substatus: 0,
                why: format!("{} is locked (its lock token was not submitted)", l.root),
                condition: Some("lock-token-submitted"),
            }),
        }
    }
}

/// Whether a name in a folder is shown to clients (listed, copied): not
/// a dot name unless `allow_hidden_files`, nor one RequestFiltering hides.
fn is_shown(config: &WebDavConfig, hidden_segments: &[String], name: &str) -> bool {
    (config.allow_hidden_files || !name.starts_with('.'))
        && !is_hidden_segment(name, hidden_segments)
}

fn activelock(l: &Lock) -> String {
    format!(
        "<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:{}/></D:lockscope><D:depth>{}</D:depth>{}<D:timeout>Second-{}</D:timeout><D:locktoken><D:href>{}</D:href></D:locktoken><D:lockroot><D:href>{}</D:href></D:lockroot></D:activelock>",
        if l.exclusive { "exclusive" } else { "shared" },
        if l.infinite { "infinity" } else { "0" },
        l.owner.as_deref().unwrap_or(""),
        l.seconds_left(),
        xml::escape(&l.token),
        xml::escape(&href(&l.root, l.collection)),
    )
}

/// PROPFIND: its first part (the whole answer, for most folders).
fn propfind(work: &Work) -> Outcome {
    let (config, target, body) = (&*work.config, &work.target, &work.body);
    let asked = xml::propfind(body).map_err(|e| refuse(400, e))?;
    let meta = target
        .metadata()
        .ok_or_else(|| refuse(404, "nothing is there"))?;
    let depth = work.depth.unwrap_or(Depth::Infinity);
    if depth == Depth::Infinity && meta.is_dir() && !config.allow_infinite_propfind_depth {
        return Err(Refusal {
            status: 403,
            substatus: 0,
            why: "PROPFIND with Depth infinity is off here (webdav.allow_infinite_propfind_depth)"
                .into(),
            condition: Some("propfind-finite-depth"),
        });
    }
    let site = work.held.site;
    // The locks that may show in this answer (on the target, above it with
    // depth infinity, or below it), looked up once: per member, the whole
    // process's table under its lock made a folder of many files with many
    // locks held a minute's work for every PROPFIND, each holding a
    // WebDAV thread.
    let locks = LOCKS.find(site, |l| {
        l.covers(&target.url) || locks::is_below(&target.url, &l.root)
    });
    let listing = Box::new(Listing::new(work, target, meta, asked, depth, locks));
    Ok(Answer::listing_part(listing))
}

/// The bytes of a PROPFIND answer made at a time. A folder of 100,000
/// files answers some 70 MB of all its properties: built whole, a few slow
/// clients held gigabytes; in parts, each client holds one part and the names of the
/// folders the walk is in, and the next part is made only once the client
/// has taken the last (Apache's mod_dav streams its multistatus too).
const LISTING_PART: usize = 64 * 1024;

/// A PROPFIND's walk, made into its answer a part at a time.
pub(super) struct Listing {
    out: Multistatus,
    /// The target, until it is described: its metadata as the request's
    /// checks found it.
    target: Option<(String, PathBuf, std::fs::Metadata)>,
    /// The folders the walk is in, the innermost last: each with the names
    /// of its members still to describe (in name order, the next last).
    /// A member is looked at only when its turn comes, so what is held is
    /// names, not every member's path and metadata, and what is described
    /// is the file system as it is then (a member swapped for a link
    /// meanwhile is left out, not followed).
    folders: Vec<Folder>,
    locks: Vec<Lock>,
    asked: PropFind,
    /// The prefixes of the names asked for, declared on the multistatus.
    prefixes: xml::Prefixes,
    depth: Depth,
    config: Arc<WebDavConfig>,
    hidden_segments: Vec<String>,
    unlisted: Vec<String>,
}

/// A folder of a PROPFIND's walk.
struct Folder {
    url: String,
    path: PathBuf,
    /// Its depth below the target (the target's own members are at 1).
    level: u32,
    /// The members still to describe, the next last.
    names: Vec<String>,
}

impl Listing {
    fn new(
        work: &Work,
        target: &Target,
        meta: std::fs::Metadata,
        asked: PropFind,
        depth: Depth,
        locks: Vec<Lock>,
    ) -> Self {
        let prefixes = match &asked {
            PropFind::Some(names) => xml::Prefixes::of(names),
            PropFind::All | PropFind::Names => xml::Prefixes::default(),
        };
        Self {
            out: Multistatus::declaring(&prefixes),
            target: Some((target.url.clone(), target.path.clone(), meta)),
            folders: Vec::new(),
            locks,
            asked,
            prefixes,
            depth,
            config: work.config.clone(),
            hidden_segments: work.hidden_segments.clone(),
            unlisted: work.unlisted.clone(),
        }
    }

    /// Describes resources until a part's worth is made or none is left;
    /// the last part closes the multistatus.
    fn part(&mut self) -> String {
        while self.out.len() < LISTING_PART {
            let Some((url, path, meta, level)) = self.next_resource() else {
                break;
            };
            let asked = (&self.asked, &self.prefixes);
            describe(&mut self.out, &self.locks, asked, &url, &path, &meta);
            let deeper = match self.depth {
                Depth::Zero => false,
                Depth::One => level == 0,
                Depth::Infinity => true,
            };
            if deeper && meta.is_dir() {
                self.enter(url, path, level + 1);
            }
        }
        if self.is_walked() {
            self.out.finish_into()
        } else {
            self.out.take()
        }
    }

    /// Whether every resource was described.
    fn is_walked(&self) -> bool {
        self.target.is_none() && self.folders.is_empty()
    }

    /// The next resource to describe, with its metadata now and its depth;
    /// `None` when the walk is over.
    fn next_resource(&mut self) -> Option<(String, PathBuf, std::fs::Metadata, u32)> {
        if let Some((url, path, meta)) = self.target.take() {
            return Some((url, path, meta, 0));
        }
        loop {
            let folder = self.folders.last_mut()?;
            let Some(name) = folder.names.pop() else {
                self.folders.pop();
                continue;
            };
            let url = if folder.url == "/" {
                format!("/{name}")
            } else {
                format!("{}/{name}", folder.url)
            };
            if self
                .unlisted
                .iter()
                .any(|p| riis_pipeline::path_below(p, &url).is_some())
            {
                continue;
            }
            let path = folder.path.join(&name);
            // Links are not followed (see `tree::plain_path`): not listed.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            return Some((url, path, meta, folder.level));
        }
    }

    /// Starts on the members of the folder at `url`: their names, shown
    /// ones only, in name order.
    fn enter(&mut self, url: String, path: PathBuf, level: u32) {
        let Ok(entries) = std::fs::read_dir(&path) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| is_shown(&self.config, &self.hidden_segments, name))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        self.folders.push(Folder {
            url,
            path,
            level,
            names,
        });
    }
}

/// One resource's response in a PROPFIND: `asked`, with the prefixes the
/// multistatus declares for the names it holds.
fn describe(
    out: &mut Multistatus,
    locks: &[Lock],
    (asked, prefixes): (&PropFind, &xml::Prefixes),
    url: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) {
    let content_type = (!meta.is_dir()).then(|| {
        mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream")
    });
    let locks: String = locks
        .iter()
        .filter(|l| l.covers(url))
        .map(activelock)
        .collect();
    let resource = Resource {
        metadata: meta,
        content_type,
        active_locks: &locks,
    };
    let dead = DeadProperties::load(path).unwrap_or_else(|e| {
        // Shown without them; a PROPPATCH refuses to write over them.
        tracing::warn!("WebDav: {e}");
        DeadProperties::default()
    });
    let mut found = String::new();
    let mut missing = String::new();
    // The names of this resource's dead properties, declared on its
    // response (each namespace once, however many names share it).
    let mut own_prefixes = xml::Prefixes::default();
    match asked {
        PropFind::All => {
            for local in properties::LIVE {
                if let Some(e) = properties::live(local, &resource) {
                    found.push_str(&e);
                }
            }
            for (_, element) in &dead.items {
                found.push_str(element);
            }
        }
        PropFind::Names => {
            for local in properties::LIVE {
                if properties::live(local, &resource).is_some() {
                    found.push_str(&format!("<D:{local}/>"));
                }
            }
            own_prefixes = xml::Prefixes::of(dead.items.iter().map(|(name, _)| name));
            for (name, _) in &dead.items {
                found.push_str(&own_prefixes.empty_element(name));
            }
        }
        PropFind::Some(names) => {
            for name in names {
                let value = if properties::is_live(name) {
                    properties::live(&name.local, &resource)
                } else {
                    dead.get(name).map(str::to_owned)
                };
                match value {
                    Some(v) => found.push_str(&v),
                    None => missing.push_str(&prefixes.empty_element(name)),
                }
            }
        }
    }
    let mut groups = Vec::new();
    if !found.is_empty() || missing.is_empty() {
        groups.push((200, found));
    }
    if !missing.is_empty() {
        groups.push((404, missing));
    }
    let declarations = own_prefixes.declarations();
    out.propstats(&href(url, meta.is_dir()), &declarations, &groups);
}

/// PROPPATCH: all changes or none.
fn proppatch(work: &Work) -> Outcome {
    let (config, target, held, body) = (&*work.config, &work.target, &work.held, &work.body);
    let changes = xml::proppatch(body).map_err(|e| refuse(400, e))?;
    let meta = target
        .metadata()
        .ok_or_else(|| refuse(404, "nothing is there"))?;
    held.check(&target.url, Scope::Resource)?;
    let name_of = |c: &PropertyChange| match c {
        PropertyChange::Set(n, _) | PropertyChange::Remove(n) => n.clone(),
    };
    let refused: Vec<bool> = changes
        .iter()
        .map(|c| properties::is_live(&name_of(c)) || !config.allow_custom_properties)
        .collect();
    let mut results: Vec<(PropertyName, u16)> = Vec::new();
    if refused.iter().any(|r| *r) {
        for (c, r) in changes.iter().zip(&refused) {
            results.push((name_of(c), if *r { 403 } else { 424 }));
        }
    } else {
        let mut dead = DeadProperties::load(&target.path).map_err(|e| {
            refuse(
                500,
                format!("the stored properties cannot be read, so they are not changed: {e}"),
            )
        })?;
        for c in &changes {
            match c {
                PropertyChange::Set(n, element) => dead.set(n.clone(), element.clone()),
                PropertyChange::Remove(n) => dead.remove(n),
            }
        }
        let status = match dead.store(&target.path) {
            Ok(()) => 200,
            Err(e) if properties::is_out_of_room(&e) => 507,
            Err(e) => {
                return Err(refuse(
                    io_status(&e),
                    format!("the properties cannot be stored: {e}"),
                ))
            }
        };
        results.extend(changes.iter().map(|c| (name_of(c), status)));
    }
    // Each name once (a body may set and then remove one), each namespace
    // declared once.
    let mut seen = std::collections::HashSet::new();
    results.retain(|(name, _)| seen.insert(name.clone()));
    let prefixes = xml::Prefixes::of(results.iter().map(|(name, _)| name));
    let mut groups: Vec<(u16, String)> = Vec::new();
    for (name, status) in results {
        match groups.iter_mut().find(|(s, _)| *s == status) {
            Some((_, props)) => props.push_str(&prefixes.empty_element(&name)),
            None => groups.push((status, prefixes.empty_element(&name))),
        }
    }
    let mut out = Multistatus::declaring(&prefixes);
    out.propstats(&href(&target.url, meta.is_dir()), "", &groups);
    Ok(Answer::xml(207, out.finish()))
}

/// MKCOL.
fn mkcol(target: &Target, held: &Held) -> Outcome {
    if std::fs::symlink_metadata(&target.path).is_ok() {
        return Err(refuse(405, "something is there already"));
    }
    held.check(&target.url, Scope::Member)?;
    match std::fs::create_dir(&target.path) {
        Ok(()) => Ok(Answer::status(201)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(refuse(409, "the collection to make it in does not exist"))
        }
        Err(e) => Err(refuse(
            io_status(&e),
            format!("the collection cannot be made: {e}"),
        )),
    }
}

/// PUT: the whole body, put in place with one rename. The locks are
/// looked at again now: one may have been taken while the body came.
fn put(work: &mut Work) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    let target = &work.target;
    let Some(upload) = work.upload.as_mut() else {
        return Err(refuse(500, "a PUT without its body"));
    };
    let meta = std::fs::symlink_metadata(&target.path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(refuse(405, "PUT cannot replace a collection"));
    }
    if !target.path.parent().is_some_and(Path::is_dir) {
        return Err(refuse(409, "the collection to PUT into does not exist"));
    }
    let scope = if meta.is_some() {
        Scope::Resource
    } else {
        Scope::Member
    };
    work.held.check(&target.url, scope)?;
    // Not set-user-ID and the like: new content is not the program that
    // was trusted with them (the kernel drops them on a write too). A new
    // file gets the mode any file the server makes gets (as MKCOL's
    // folder, or Apache's and nginx's uploads): 0666 less the umask.
    let mode = meta
        .as_ref()
        .map_or_else(tree::new_file_mode, |m| m.permissions().mode() & 0o777);
    tree::put_in_place(&mut upload.file, &target.path, mode, meta.is_some()).map_err(|e| {
        refuse(
            io_status(&e).max(500),
            format!("the upload cannot be put in place: {e}"),
        )
    })?;
    Ok(Answer::status(if meta.is_some() { 204 } else { 201 }))
}

/// DELETE.
fn delete(work: &Work) -> Outcome {
    let (target, held) = (&work.target, &work.held);
    let meta =
        std::fs::symlink_metadata(&target.path).map_err(|_| refuse(404, "nothing is there"))?;
    if meta.is_dir() && !matches!(work.depth, None | Some(Depth::Infinity)) {
        return Err(refuse(400, "DELETE of a collection takes Depth infinity"));
    }
    if work.holds_mapped_root(&target.path) {
        return Err(mapped_root_refusal());
    }
    held.check(&target.url, Scope::Tree)?;
    let failed = tree::remove_reporting(&target.path, &target.url, &href, &tree::remove_one);
    if failed.is_empty() {
        LOCKS.forget(held.site, &target.url);
        return Ok(Answer::status(204));
    }
    // The target itself failed (a file, or a folder whose members all
    // went): its status is the answer, as RFC 4918 §9.6.1 keeps 207 for
    // members.
    if let [(failed_href, status)] = failed.as_slice() {
        if *failed_href == href(&target.url, meta.is_dir()) {
            return Err(refuse(*status, "it cannot be deleted"));
        }
    }
    // Some members went: their locks go with them; those of what stays
    // (the members that failed and the folders holding them) stay.
    let below = LOCKS.find(held.site, |l| {
        l.root == target.url || locks::is_below(&target.url, &l.root)
    });
    for lock in below {
        let relative = lock.root[target.url.len()..].trim_start_matches('/');
        if std::fs::symlink_metadata(target.path.join(relative)).is_err() {
            LOCKS.forget(held.site, &lock.root);
        }
    }
    Ok(failures(failed))
}

/// 403 for the folder a site or a virtual directory maps to, or one that
/// holds such a folder: removing, moving or replacing it would break every
/// URL below it until someone makes it again.
fn mapped_root_refusal() -> Refusal {
    refuse(
        403,
        "it is or holds the folder a site or a virtual directory maps to",
    )
}

/// A 207 listing what failed.
fn failures(failed: Vec<(String, u16)>) -> Answer {
    let mut out = Multistatus::new();
    for (href, status) in failed {
        out.status(&href, status);
    }
    Answer::xml(207, out.finish())
}

/// LOCK: a new lock, or a refresh (no body).
fn lock(work: &Work) -> Outcome {
    let (config, target, held, body) = (&*work.config, &work.target, &work.held, &work.body);
    if !config.locks_enabled {
        return Err(refuse(405, "locks are off here (webdav.locks_enabled)"));
    }
    let timeout = locks::timeout(
        work.timeout.as_deref(),
        Duration::from_secs(config.lock_timeout),
    );
    let info = xml::lockinfo(body).map_err(|e| refuse(400, e))?;
    let Some(info) = info else {
        let refreshed = held
            .tokens
            .iter()
            .find_map(|t| LOCKS.refresh(held.site, t, &target.url, &held.principal, timeout));
        return match refreshed {
            Some(l) => Ok(lock_answer(200, &l, false)),
            None => Err(refuse(412, "a LOCK refresh names no lock of this resource")),
        };
    };
    let infinite = match work.depth {
        None | Some(Depth::Infinity) => true,
        Some(Depth::Zero) => false,
        Some(Depth::One) => return Err(refuse(400, "LOCK takes Depth 0 or infinity")),
    };
    let exists = std::fs::symlink_metadata(&target.path).is_ok();
    if !exists {
        held.check(&target.url, Scope::Member)?;
        if !target.path.parent().is_some_and(Path::is_dir) {
            return Err(refuse(
                409,
                "the collection to lock a new resource in does not exist",
            ));
        }
    }
    let granted = LOCKS
        .grant(Lock {
            token: locks::new_token(),
            site: held.site,
            root: target.url.clone(),
            infinite,
            exclusive: info.exclusive,
            owner: info.owner.map(Arc::from),
            principal: held.principal.clone(),
            client: held.client,
            collection: target.metadata().is_some_and(|m| m.is_dir()),
            timeout,
            expires: Instant::now() + timeout,
        })
        .map_err(|refused| match refused {
            locks::LockRefused::Conflict => Refusal {
                status: 423,
                substatus: 0,
                why: format!("{} has a lock in the way", target.url),
                condition: Some("no-conflicting-lock"),
            },
            locks::LockRefused::TooMany(why) => refuse(503, why),
        })?;
    if !exists {
        // RFC 4918 §7.3: a lock on an unmapped URL makes an empty resource.
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target.path);
        if let Err(e) = made {
            let _ = LOCKS.release(held.site, &granted.token, &target.url, &held.principal);
            return Err(refuse(
                io_status(&e),
                format!("the locked resource cannot be made: {e}"),
            ));
        }
    }
    Ok(lock_answer(if exists { 200 } else { 201 }, &granted, true))
}

fn lock_answer(status: u16, l: &Lock, with_token: bool) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:prop xmlns:D=\"DAV:\"><D:lockdiscovery>{}</D:lockdiscovery></D:prop>\n",
        activelock(l)
    );
    let mut answer = Answer::xml(status, body);
    if with_token {
        answer.headers.push((
            header::HeaderName::from_static("lock-token"),
            format!("<{}>", l.token),
        ));
    }
    answer
}

/// UNLOCK.
fn unlock(work: &Work) -> Outcome {
    let (target, held) = (&work.target, &work.held);
    let token = work
        .lock_token
        .as_deref()
        .map(str::trim)
        .and_then(|t| t.strip_prefix('<')?.strip_suffix('>'))
        .ok_or_else(|| refuse(400, "UNLOCK needs a Lock-Token"))?;
    match LOCKS.release(held.site, token, &target.url, &held.principal) {
        Ok(()) => Ok(Answer::status(204)),
        Err(true) => Err(refuse(403, "the lock is another user's")),
        Err(false) => Err(Refusal {
            status: 409,
            substatus: 0,
            why: "the Lock-Token names no lock of this resource".into(),
            condition: Some("lock-token-matches-request-uri"),
        }),
    }
}

/// COPY and MOVE, their destination checked and resolved on the worker.
///
/// The source and destination are compared as resolved paths, not only as
/// URLs (a virtual directory can reach one folder by two URLs): a
/// destination that is the source, lies inside it or holds it is refused
/// (403) before anything changes. A COPY is made under a hidden name
/// beside the destination (`.riis-copy-…`) and put in its place only when
/// it is whole; what it replaces is moved aside (`.riis-replaced-…`) for
/// that moment and removed after. A MOVE on one file system is a rename;
/// across file systems a copy like COPY's, then the source's removal.
fn transfer(work: &Work) -> Outcome {
    let (method, source, held) = (work.method, &work.target, &work.held);
    let Some(Transfer {
        dest,
        overwrite,
        infinite,
    }) = &work.transfer
    else {
        return Err(refuse(500, "COPY or MOVE without its destination"));
    };
    if std::fs::symlink_metadata(&source.path).is_err() {
        return Err(refuse(404, "the source does not exist"));
    }
    if !dest.path.parent().is_some_and(Path::is_dir) {
        return Err(refuse(409, "the destination's collection does not exist"));
    }
    if dest.path.starts_with(&source.path)
        || source.path.starts_with(&dest.path)
        || locks::is_below(&dest.url, &source.url)
        || locks::is_below(&source.url, &dest.url)
        || dest.url == source.url
    {
        return Err(refuse(
            403,
            "the destination is the source, lies inside it or holds it",
        ));
    }
    if work.holds_mapped_root(&dest.path)
        || (method == Method::Move && work.holds_mapped_root(&source.path))
    {
        return Err(mapped_root_refusal());
    }
    if method == Method::Move {
        held.check(&source.url, Scope::Tree)?;
        match tree::holds_link(&source.path) {
            Ok(false) => {}
            Ok(true) => {
                return Err(refuse(
                    403,
                    "it is or holds a symbolic link, which a move would carry under other rules",
                ))
            }
            // Not looked through (a folder it may not read, a tree deeper
            // than a path may be long): not moved, for the reason it had.
            // A member's path past the system's length is this server's
            // limit, not a name the client could shorten.
            Err(e) => {
                let status = match e.kind() {
                    std::io::ErrorKind::InvalidFilename => 500,
                    _ => io_status(&e),
                };
                return Err(refuse(
                    status,
                    format!("the source cannot be looked through: {e}"),
                ));
            }
        }
    }
    held.check(&dest.url, Scope::Tree)?;
    let existed = std::fs::symlink_metadata(&dest.path).is_ok();
    if existed && !overwrite {
        return Err(refuse(412, "the destination exists and Overwrite is F"));
    }
    if method == Method::Move && !existed {
        match std::fs::rename(&source.path, &dest.path) {
            Ok(()) => {
                LOCKS.forget(held.site, &source.url);
                return Ok(Answer::status(201));
            }
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
            Err(e) => return Err(refuse(io_status(&e), format!("the move failed: {e}"))),
        }
    }
    // The new one is made whole under a hidden name, then swapped in.
    let staging = tree::hidden_beside(&dest.path, "copy");
    let renamed = method == Method::Move
        && match std::fs::rename(&source.path, &staging) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => false,
            Err(e) => return Err(refuse(io_status(&e), format!("the move failed: {e}"))),
        };
    if !renamed {
        let config = &work.config;
        let shown =
            |name: &str| method == Method::Move || is_shown(config, &work.hidden_segments, name);
        let failed = tree::copy_tree(
            &source.path,
            &staging,
            &dest.url,
            method == Method::Move || *infinite,
            &shown,
            &href,
        );
        if !failed.is_empty() {
            let _ = tree::remove(&staging);
            // The destination itself failed (a file, or a folder that could
            // not be made), so nothing else was tried: its status is the
            // answer, as RFC 4918 §9.8.5 keeps 207 for errors on members.
            if let [(failed_href, status)] = failed.as_slice() {
                if *failed_href == href(&dest.url, false) || *failed_href == href(&dest.url, true) {
                    return Err(refuse(*status, "the copy failed"));
                }
            }
            return Ok(failures(failed));
        }
    }
    if let Err(e) = swap_in(&staging, &dest.path, existed) {
        // Undone: a MOVE's source goes back where it was.
        if renamed {
            let _ = std::fs::rename(&staging, &source.path);
        } else {
            let _ = tree::remove(&staging);
        }
        return Err(refuse(
            io_status(&e),
            format!("the destination cannot be replaced: {e}"),
        ));
    }
    if method == Method::Move && !renamed {
        // A copy across file systems is whole: it stays, even if the
        // source cannot all go (logged; the client sees it still there).
        if let Err(e) = tree::remove(&source.path) {
            tracing::warn!(
                "WebDav: MOVE copied {} across file systems but could not remove it: {e}",
                source.path.display()
            );
        }
    }
    if existed {
        LOCKS.forget(held.site, &dest.url);
    }
    if method == Method::Move {
        LOCKS.forget(held.site, &source.url);
    }
    Ok(Answer::status(if existed { 204 } else { 201 }))
}

/// Puts `staging` at `dest`: what is there (when `existed`) is moved aside
/// for the moment of the rename, put back if it fails, removed after.
fn swap_in(staging: &Path, dest: &Path, existed: bool) -> std::io::Result<()> {
    if !existed {
        return std::fs::rename(staging, dest);
    }
    let aside = tree::hidden_beside(dest, "replaced");
    std::fs::rename(dest, &aside)?;
    if let Err(e) = std::fs::rename(staging, dest) {
        if let Err(back) = std::fs::rename(&aside, dest) {
            tracing::warn!(
                "WebDav: {} could not be put back from {}: {back}",
                dest.display(),
                aside.display()
            );
        }
        return Err(e);
    }
    if let Err(e) = tree::remove(&aside) {
        tracing::warn!("WebDav: {} could not be removed: {e}", aside.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A PUT of `content` to `name` in `dir`, prepared: its conditions
    /// held then (as each of two racing PUTs' did), and its body is in.
    fn prepared_put(dir: &Path, name: &str, conditions: &[(&str, &str)], content: &str) -> Work {
        let target = Target {
            url: format!("/{name}"),
            path: dir.join(name),
        };
        let mut headers = header::HeaderMap::new();
        let mut if_header = None;
        for (name, value) in conditions {
            if *name == "if" {
                if_header = Some(IfHeader::parse(value).unwrap());
            } else {
                headers.append(
                    header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
        }
        let preconditions = Preconditions {
            headers,
            method: riis_pipeline::http::Method::PUT,
            if_header,
            resources: vec![(None, target.url.clone(), target.path.clone())],
        };
        let held = Held {
            site: 0xdead,
            principal: String::new(),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            tokens: Vec::new(),
        };
        preconditions
            .check(held.site, &target)
            .unwrap_or_else(|r| panic!("{}", r.why));
        let mut file = tree::upload_file(dir).unwrap();
        file.write_all(content.as_bytes()).unwrap();
        Work {
            method: Method::Put,
            config: Arc::new(WebDavConfig::default()),
            target,
            held,
            preconditions,
            body: Vec::new(),
            depth: None,
            hidden_segments: Vec::new(),
            timeout: None,
            lock_token: None,
            transfer: None,
            unlisted: Vec::new(),
            upload: Some(Upload { file }),
            mapped_roots: Vec::new(),
        }
    }

    fn status(outcome: Outcome) -> u16 {
        match outcome {
            Ok(answer) => answer.status,
            Err(refusal) => refusal.status,
        }
    }

    #[test]
    fn of_two_conditional_writers_prepared_at_once_only_the_first_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "old").unwrap();
        let etag = crate::static_file::etag_of(&std::fs::metadata(&file).unwrap()).unwrap();

        let first = prepared_put(dir.path(), "f.txt", &[("if-match", &etag)], "first");
        let second = prepared_put(dir.path(), "f.txt", &[("if-match", &etag)], "second");
        assert_eq!(status(first.run()), 204);
        assert_eq!(status(second.run()), 412);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "first");

        let etag = crate::static_file::etag_of(&std::fs::metadata(&file).unwrap()).unwrap();
        let tagged = format!("([{etag}])");
        let first = prepared_put(dir.path(), "f.txt", &[("if", &tagged)], "third");
        let second = prepared_put(dir.path(), "f.txt", &[("if", &tagged)], "fourth");
        assert_eq!(status(first.run()), 204);
        assert_eq!(status(second.run()), 412);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "third");

        let first = prepared_put(dir.path(), "new.txt", &[("if-none-match", "*")], "one");
        let second = prepared_put(dir.path(), "new.txt", &[("if-none-match", "*")], "two");
        assert_eq!(status(first.run()), 201);
        assert_eq!(status(second.run()), 412);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
            "one"
        );
    }
}
