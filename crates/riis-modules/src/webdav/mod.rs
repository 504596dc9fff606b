//! `WebDav`: WebDAV authoring (RFC 4918, classes 1 and 2) of a site's
//! files, as IIS's WebDAV module gives it: clients such as Windows
//! Explorer, macOS Finder, davfs2 or cadaver list folders, upload, move,
//! copy and delete files, set properties and take locks.
//!
//! Registers for **ExecuteRequestHandler** only, as a handler module: map
//! the WebDAV methods to it, ahead of the static handler, which goes on
//! serving GET and HEAD:
//!
//! ```toml
//! [[handlers]]
//! name = "WebDAV"
//! path = "*"
//! verbs = ["OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "PUT", "DELETE",
//!          "COPY", "MOVE", "LOCK", "UNLOCK"]
//! modules = ["WebDav"]
//! ```
//!
//! A request body (PUT's file, the XML of PROPFIND, PROPPATCH and LOCK) is
//! read through the pipeline, so ReadEntity modules see it and
//! RequestFiltering's length limit applies; XML bodies are at most 1 MiB
//! (413 past it). A PUT's body goes straight to a hidden temporary file
//! beside its target (`.riis-put-…`), which replaces the target with one
//! rename once the whole body is in: a cut-short upload never leaves a
//! partial file under the target's name, and a reader sees the old file
//! or the new one. The file gets the mode of the one it replaces, or
//! 0644.
//!
//! Configuration section `webdav` (IIS's `webdav/authoring` and
//! `authoringRules`), per location:
//! - `enabled` (default false): off, the methods get 405;
//! - `require_ssl` (false): 403.4 over plain HTTP;
//! - `allow_hidden_files` (false): names starting with `.` are not listed
//!   and cannot be reached or made (404);
//! - `allow_anonymous_propfind` (false): an anonymous PROPFIND gets 401
//!   unless this is set (and a rule grants Read);
//! - `allow_infinite_propfind_depth` (false): `Depth: infinity` on PROPFIND
//!   gets 403 `propfind-finite-depth`, as IIS's default: one request could
//!   otherwise make the server walk the whole tree;
//! - `allow_custom_properties` (true): PROPPATCH may set dead properties;
//! - `locks_enabled` (true): LOCK and UNLOCK; `DAV: 1, 2` (else `DAV: 1`);
//! - `lock_timeout` (seconds, default 3600): the longest a lock is granted
//!   for; a client asking for longer, for `Infinite` or for nothing gets
//!   this;
//! - `default_access` (`"None"`) and `authoring_rules`, a list of `{ users
//!   = "…", roles = "…", access = "Read, Write" }`: who may do what. `users`
//!   lists names, `*` (everyone, anonymous included) or `?` (anonymous);
//!   `roles` lists roles. A user's access is `default_access` joined with
//!   that of every rule naming them. PROPFIND needs Read; COPY Read at
//!   its source and Write at its destination; the other methods (but
//!   OPTIONS) Write. Without it: 401 for an anonymous client (so that an
//!   authentication module's challenge asks for a user), 403 for a user.
//!   Rules are per location: a location's `authoring_rules` replace the
//!   list it inherits.
//!
//! A COPY or MOVE's `Destination` is judged by the section of its own
//! location (enabled, rules, hidden files). The names RequestFiltering
//! hides (`request_filtering.hidden_segments`) are refused (404.8) in the
//! request's URL and in the destination, and left out of listings, whether
//! or not RequestFiltering runs. Nothing is served from or written to outside the
//! folder a URL maps into: a path whose symbolic links lead elsewhere is
//! 404.
//!
//! Locks live in memory (see `locks`) and end with the server, as with
//! IIS's simple lock store; dead properties live in an extended attribute
//! of each file (see `properties`).

mod locks;
mod properties;
mod xml;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::{header, HeaderValue, StatusCode};
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

use locks::{IfHeader, Lock, LOCKS};
use properties::{DeadProperties, Resource};
use xml::{Multistatus, PropFind, PropertyChange, PropertyName};

use crate::request_filtering::RequestFilteringConfig;
use crate::url_authorization::UserSpec;

/// The `webdav` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebDavConfig {
    /// Whether WebDAV authoring is on here.
    pub enabled: bool,
    /// Whether the methods need TLS.
    pub require_ssl: bool,
    /// Whether names starting with `.` may be listed and reached.
    pub allow_hidden_files: bool,
    /// Whether an anonymous client may PROPFIND.
    pub allow_anonymous_propfind: bool,
    /// Whether PROPFIND takes `Depth: infinity`.
    pub allow_infinite_propfind_depth: bool,
    /// Whether PROPPATCH may set dead properties.
    pub allow_custom_properties: bool,
    /// Whether LOCK and UNLOCK are offered.
    pub locks_enabled: bool,
    /// The longest a lock is granted for, in seconds.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub lock_timeout: u64,
    /// What everyone may do without a rule.
    pub default_access: AccessSet,
    /// Who may do more.
    pub authoring_rules: Vec<AuthoringRule>,
}

impl Default for WebDavConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            require_ssl: false,
            allow_hidden_files: false,
            allow_anonymous_propfind: false,
            allow_infinite_propfind_depth: false,
            allow_custom_properties: true,
            locks_enabled: true,
            lock_timeout: 3600,
            default_access: AccessSet::default(),
            authoring_rules: Vec::new(),
        }
    }
}

/// Read, Write, both or neither: `"Read, Write"`, `"None"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AccessSet {
    /// PROPFIND, and the source of a COPY.
    pub read: bool,
    /// Everything that changes a resource.
    pub write: bool,
}

impl TryFrom<String> for AccessSet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let mut access = AccessSet::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "read" => access.read = true,
                "write" => access.write = true,
                "none" => {}
                "source" => {
                    return Err("`Source` is IIS's access to scripts' source; riis's WebDav serves no GET (the static handler does), so it has no meaning here: use Read and Write".into())
                }
                _ => return Err(format!("`{item}` is not an access (Read, Write or None)")),
            }
        }
        Ok(access)
    }
}

/// One authoring rule.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RuleFields")]
pub struct AuthoringRule {
    /// The users it names.
    pub users: Vec<UserSpec>,
    /// The roles it names.
    pub roles: Vec<String>,
    /// What they may do.
    pub access: AccessSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(default)]
    users: String,
    #[serde(default)]
    roles: String,
    access: AccessSet,
}

impl TryFrom<RuleFields> for AuthoringRule {
    type Error = String;

    fn try_from(fields: RuleFields) -> Result<Self, String> {
        let items = |list: &str| -> Vec<String> {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let users: Vec<UserSpec> = items(&fields.users)
            .into_iter()
            .map(|u| match u.as_str() {
                "*" => UserSpec::Everyone,
                "?" => UserSpec::Anonymous,
                _ => UserSpec::Name(u),
            })
            .collect();
        let roles = items(&fields.roles);
        if users.is_empty() && roles.is_empty() {
            return Err("an authoring rule names `users`, `roles` or both".into());
        }
        Ok(Self {
            users,
            roles,
            access: fields.access,
        })
    }
}

impl WebDavConfig {
    /// What `user` may do here.
    fn access(&self, user: Option<&HttpUser>) -> AccessSet {
        let anonymous = user.is_none_or(|u| u.name().is_empty());
        let mut access = self.default_access;
        for rule in &self.authoring_rules {
            let named = rule.users.iter().any(|spec| match spec {
                UserSpec::Everyone => true,
                UserSpec::Anonymous => anonymous,
                UserSpec::Name(n) => !anonymous && user.is_some_and(|u| u.name() == n),
            }) || user.is_some_and(|u| rule.roles.iter().any(|r| u.is_in_role(r)));
            if named {
                access.read |= rule.access.read;
                access.write |= rule.access.write;
            }
        }
        access
    }
}

/// The methods the module answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Options,
    PropFind,
    PropPatch,
    MkCol,
    Put,
    Delete,
    Copy,
    Move,
    Lock,
    Unlock,
}

impl Method {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "OPTIONS" => Self::Options,
            "PROPFIND" => Self::PropFind,
            "PROPPATCH" => Self::PropPatch,
            "MKCOL" => Self::MkCol,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "COPY" => Self::Copy,
            "MOVE" => Self::Move,
            "LOCK" => Self::Lock,
            "UNLOCK" => Self::Unlock,
            _ => return None,
        })
    }

    /// Whether the method changes what is at the request's URL.
    fn writes(self) -> bool {
        !matches!(self, Self::Options | Self::PropFind | Self::Copy)
    }
}

/// `Allow` with locks, and without.
const ALLOW_WITH_LOCKS: &str =
    "OPTIONS, GET, HEAD, PROPFIND, PROPPATCH, MKCOL, PUT, DELETE, COPY, MOVE, LOCK, UNLOCK";
const ALLOW_WITHOUT_LOCKS: &str =
    "OPTIONS, GET, HEAD, PROPFIND, PROPPATCH, MKCOL, PUT, DELETE, COPY, MOVE";

/// The largest XML body taken (PROPFIND, PROPPATCH, LOCK).
const XML_LIMIT: usize = 1024 * 1024;
/// Bytes asked for per body read.
const READ_SIZE: usize = 64 * 1024;

/// A body being received.
enum Body {
    Xml(Vec<u8>),
    Upload(Upload),
}

/// A PUT's file, written beside its target until it is whole.
struct Upload {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
    /// The target existed (204), else it is made (201).
    existed: bool,
}

/// The module instance: one per request.
pub struct WebDav {
    config: Section<WebDavConfig>,
    /// RequestFiltering's section, for the names it hides.
    request_filtering: Section<RequestFilteringConfig>,
    /// The method and its body, while it is read.
    receiving: Option<(Method, Body)>,
}

/// The answer to a request: a status and maybe an XML body.
struct Answer {
    status: u16,
    xml: Option<String>,
    headers: Vec<(header::HeaderName, String)>,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self {
            status,
            xml: None,
            headers: Vec::new(),
        }
    }

    fn xml(status: u16, body: String) -> Self {
        Self {
            status,
            xml: Some(body),
            headers: Vec::new(),
        }
    }
}

/// An error status with the reason for the log and the detailed error
/// page.
struct Refusal {
    status: u16,
    substatus: u16,
    why: String,
    /// A `DAV:error` precondition to send as the body.
    condition: Option<&'static str>,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        substatus: 0,
        why: why.into(),
        condition: None,
    }
}

type Outcome = Result<Answer, Refusal>;

/// What a request works on: its URL (decoded, no trailing `/` but for `/`)
/// and the file it maps to.
struct Target {
    url: String,
    path: PathBuf,
    /// The folder the URL maps into, resolved.
    root: PathBuf,
}

impl Target {
    fn metadata(&self) -> Option<std::fs::Metadata> {
        std::fs::metadata(&self.path).ok()
    }
}

/// `url` without its trailing `/` (but `/` itself).
fn trimmed(url: &str) -> String {
    let t = url.trim_end_matches('/');
    if t.is_empty() {
        "/".to_owned()
    } else {
        t.to_owned()
    }
}

/// The href of `url`: escaped, and with a trailing `/` for a collection.
fn href(url: &str, collection: bool) -> String {
    let mut h = crate::canonical_url_path(url);
    if collection && !h.ends_with('/') {
        h.push('/');
    }
    h
}

/// Whether a segment of `url` starts with `.`.
fn is_hidden(url: &str) -> bool {
    url.split('/').any(|s| s.starts_with('.'))
}

/// Whether `path` resolves to a place inside `root`: the path itself, or,
/// when it does not exist (yet), the nearest folder above it that does.
fn is_confined(root: &Path, path: &Path) -> bool {
    let mut existing = path;
    loop {
        match std::fs::canonicalize(existing) {
            Ok(resolved) => return resolved.starts_with(root),
            // A link that leads nowhere is judged by where it leads, so it
            // cannot be made to lead out later: refused.
            Err(_) if std::fs::symlink_metadata(existing).is_ok() => return false,
            Err(_) => match existing.parent() {
                Some(parent) => existing = parent,
                None => return false,
            },
        }
    }
}

fn io_status(e: &std::io::Error) -> u16 {
    match e.kind() {
        std::io::ErrorKind::NotFound => 404,
        std::io::ErrorKind::PermissionDenied => 403,
        _ if properties::is_out_of_room(e) => 507,
        _ => 500,
    }
}

impl WebDav {
    /// The request's own target, checked: confined and not hidden.
    fn target(&self, ctx: &mut HttpContext, config: &WebDavConfig) -> Result<Target, Refusal> {
        let url = trimmed(ctx.request().url());
        let path = ctx.physical_path().to_path_buf();
        let root = std::fs::canonicalize(&ctx.virtual_directory().physical_path)
            .map_err(|e| refuse(500, format!("the site's folder cannot be resolved: {e}")))?;
        let hidden = &ctx.config(self.request_filtering).hidden_segments;
        check_target(&url, &path, &root, config, hidden)?;
        Ok(Target { url, path, root })
    }

    fn start(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let config = ctx.config_shared(self.config);
        let Some(method) = Method::of(ctx.request().method().as_str()) else {
            let answer = Err(refuse(
                405,
                format!(
                    "WebDav does not answer {}: map GET and HEAD to the static handler",
                    ctx.request().method()
                ),
            ));
            return self.finish(ctx, &config, answer);
        };
        if !config.enabled {
            let answer = if method == Method::Options {
                Ok(Answer {
                    status: 200,
                    xml: None,
                    headers: vec![(header::ALLOW, "OPTIONS, GET, HEAD".into())],
                })
            } else {
                Err(refuse(405, "WebDAV authoring is off here (webdav.enabled)"))
            };
            return self.finish(ctx, &config, answer);
        }
        if config.require_ssl && !ctx.request().is_tls() {
            let mut r = refuse(403, "WebDAV needs TLS here (webdav.require_ssl)");
            r.substatus = 4;
            return self.finish(ctx, &config, Err(r));
        }
        if let Err(r) = self.authorize(ctx, &config, method) {
            return self.finish(ctx, &config, Err(r));
        }
        let body = match method {
            Method::PropFind | Method::PropPatch | Method::Lock => Body::Xml(Vec::new()),
            Method::Put => match self.begin_upload(ctx, &config) {
                Ok(upload) => Body::Upload(upload),
                Err(r) => return self.finish(ctx, &config, Err(r)),
            },
            _ => {
                if !ctx.request().is_body_complete() {
                    crate::gateway::close_after_answer(ctx);
                    let r = refuse(415, format!("{method:?} takes no body"));
                    return self.finish(ctx, &config, Err(r));
                }
                let answer = self.run(ctx, &config, method, Vec::new());
                return self.finish(ctx, &config, answer);
            }
        };
        self.receiving = Some((method, body));
        self.receive(ctx, &config)
    }

    /// Whether the user may use `method` on the request's URL.
    fn authorize(
        &self,
        ctx: &HttpContext,
        config: &WebDavConfig,
        method: Method,
    ) -> Result<(), Refusal> {
        let user = ctx.user();
        let anonymous = user.is_none_or(|u| u.name().is_empty());
        let access = config.access(user);
        let allowed = match method {
            Method::Options => true,
            Method::PropFind => access.read && (!anonymous || config.allow_anonymous_propfind),
            Method::Copy => access.read,
            _ => access.write,
        };
        if allowed {
            return Ok(());
        }
        let why = format!(
            "no authoring rule gives {} {} access here",
            if anonymous {
                "an anonymous client".to_owned()
            } else {
                format!("user {}", user.map_or("", |u| u.name()))
            },
            if method.writes() { "Write" } else { "Read" }
        );
        Err(refuse(if anonymous { 401 } else { 403 }, why))
    }

    /// Reads the next piece of the body, or runs the method once it is in.
    fn receive(
        &mut self,
        ctx: &mut HttpContext,
        config: &WebDavConfig,
    ) -> RequestNotificationStatus {
        if !ctx.request().is_body_complete() {
            if let Err(e) = ctx.read_entity_body(READ_SIZE) {
                self.receiving = None;
                let r = refuse(500, format!("the body cannot be read: {e}"));
                return self.finish(ctx, config, Err(r));
            }
            return RequestNotificationStatus::Pending;
        }
        let Some((method, body)) = self.receiving.take() else {
            return RequestNotificationStatus::Continue;
        };
        let answer = match body {
            Body::Xml(bytes) => self.run(ctx, config, method, bytes),
            Body::Upload(upload) => finish_upload(upload),
        };
        self.finish(ctx, config, answer)
    }

    /// Takes what a body read brought.
    fn take_piece(
        &mut self,
        ctx: &mut HttpContext,
        completion: &CompletionInfo,
    ) -> Result<(), Refusal> {
        if completion.status != 0 {
            crate::gateway::close_after_answer(ctx);
            let (status, why) = crate::gateway::read_failure(completion).status_and_reason();
            return Err(refuse(status.as_u16(), why));
        }
        let data = ctx.request_mut().take_read_data();
        let ended_early = data.is_empty() && !ctx.request().is_body_complete();
        match self.receiving.as_mut().map(|(_, b)| b) {
            Some(Body::Xml(bytes)) => {
                if bytes.len() + data.len() > XML_LIMIT {
                    crate::gateway::close_after_answer(ctx);
                    return Err(refuse(413, "a WebDAV XML body is longer than 1 MiB"));
                }
                bytes.extend_from_slice(&data);
            }
            Some(Body::Upload(upload)) => {
                use std::io::Write;
                if let Err(e) = upload.temp.write_all(&data) {
                    crate::gateway::close_after_answer(ctx);
                    return Err(refuse(
                        io_status(&e).max(500),
                        format!("the upload cannot be written: {e}"),
                    ));
                }
            }
            None => {}
        }
        if ended_early {
            return Err(refuse(400, "the request body ended early"));
        }
        Ok(())
    }

    /// Runs a method whose body (if any) is in.
    fn run(
        &mut self,
        ctx: &mut HttpContext,
        config: &WebDavConfig,
        method: Method,
        body: Vec<u8>,
    ) -> Outcome {
        if method == Method::Options {
            return Ok(options(config));
        }
        let target = self.target(ctx, config)?;
        let site = ctx.site().site_id;
        let principal = ctx.user().map_or("", |u| u.name()).to_owned();
        let if_header = match ctx.request().header("if").map(|v| v.to_str()) {
            None => None,
            Some(Ok(text)) => Some(IfHeader::parse(text).map_err(|e| refuse(400, e))?),
            Some(Err(_)) => return Err(refuse(400, "the If header is not text")),
        };
        if let Some(h) = &if_header {
            if !if_holds(ctx, h, &target, site) {
                return Err(refuse(412, "the If header's conditions do not hold"));
            }
        }
        let held = Held {
            site,
            principal: &principal,
            tokens: if_header
                .as_ref()
                .map(|h| h.tokens().map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        match method {
            Method::Options => Ok(options(config)),
            Method::PropFind => {
                let hidden = &ctx.config(self.request_filtering).hidden_segments;
                propfind(ctx, config, hidden, &target, &body)
            }
            Method::PropPatch => proppatch(config, &target, &held, &body),
            Method::MkCol => mkcol(&target, &held),
            Method::Delete => delete(ctx, &target, &held),
            Method::Copy | Method::Move => self.copy_or_move(ctx, method, &target, &held),
            Method::Lock => lock(ctx, config, &target, &held, &body),
            Method::Unlock => unlock(ctx, &target, &held),
            Method::Put => Err(refuse(500, "PUT ran without its body")),
        }
    }

    /// Checks a PUT's target and opens the temporary file its body goes to.
    fn begin_upload(
        &self,
        ctx: &mut HttpContext,
        config: &WebDavConfig,
    ) -> Result<Upload, Refusal> {
        if ctx.request().header(header::CONTENT_RANGE).is_some() {
            // RFC 9110 §14.5: a server that does not apply partial PUTs
            // answers 400 rather than write the range as the whole.
            return Err(refuse(400, "a PUT with Content-Range is not applied"));
        }
        let target = self.target(ctx, config)?;
        let site = ctx.site().site_id;
        if let Some(text) = ctx.request().header("if").and_then(|v| v.to_str().ok()) {
            let h = IfHeader::parse(text).map_err(|e| refuse(400, e))?;
            if !if_holds(ctx, &h, &target, site) {
                return Err(refuse(412, "the If header's conditions do not hold"));
            }
            let principal = ctx.user().map_or("", |u| u.name()).to_owned();
            let held = Held {
                site,
                principal: &principal,
                tokens: h.tokens().map(str::to_owned).collect(),
            };
            held.check(&target.url, Scope::Member)?;
        } else {
            let held = Held {
                site,
                principal: "",
                tokens: Vec::new(),
            };
            held.check(&target.url, Scope::Member)?;
        }
        let meta = std::fs::symlink_metadata(&target.path).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(refuse(405, "PUT cannot replace a collection"));
        }
        let parent = target.path.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            return Err(refuse(409, "the collection to PUT into does not exist"));
        }
        let temp = tempfile::Builder::new()
            .prefix(".riis-put-")
            .tempfile_in(parent)
            .map_err(|e| {
                refuse(
                    io_status(&e).max(500),
                    format!("the upload cannot start: {e}"),
                )
            })?;
        Ok(Upload {
            temp,
            target: target.path,
            existed: meta.is_some(),
        })
    }

    /// COPY and MOVE.
    fn copy_or_move(
        &self,
        ctx: &mut HttpContext,
        method: Method,
        source: &Target,
        held: &Held<'_>,
    ) -> Outcome {
        let source_meta = source
            .metadata()
            .ok_or_else(|| refuse(404, "the source does not exist"))?;
        let destination = destination(ctx)?;
        let dest_path = ctx.map_path(&destination);
        let dest_root =
            std::fs::canonicalize(&ctx.virtual_directory_for_url(&destination).physical_path)
                .map_err(|e| {
                    refuse(
                        500,
                        format!("the destination's folder cannot be resolved: {e}"),
                    )
                })?;
        // The destination is judged by its own location's settings.
        let dest_config = ctx.config_for_url(self.config, &destination);
        if !dest_config.enabled {
            return Err(refuse(
                403,
                "WebDAV authoring is off at the destination (webdav.enabled)",
            ));
        }
        if !dest_config.access(ctx.user()).write {
            return Err(refuse(
                403,
                "no authoring rule gives Write access at the destination",
            ));
        }
        let hidden = &ctx
            .config_for_url(self.request_filtering, &destination)
            .hidden_segments;
        check_target(&destination, &dest_path, &dest_root, dest_config, hidden)?;
        let dest = Target {
            url: destination,
            path: dest_path,
            root: dest_root,
        };
        if dest.url == source.url
            || (source_meta.is_dir() && locks::is_below(&source.url, &dest.url))
        {
            return Err(refuse(
                403,
                "the destination is the source or lies inside it",
            ));
        }
        let overwrite = match ctx.request().header("overwrite").map(|v| v.as_bytes()) {
            None | Some(b"T") | Some(b"t") => true,
            Some(b"F") | Some(b"f") => false,
            Some(_) => return Err(refuse(400, "Overwrite is T or F")),
        };
        let depth = depth(ctx)?;
        let infinite = match (method, depth) {
            (_, None | Some(Depth::Infinity)) => true,
            (Method::Copy, Some(Depth::Zero)) => false,
            _ => {
                return Err(refuse(
                    400,
                    format!("{method:?} takes Depth 0 or infinity (MOVE: infinity)"),
                ))
            }
        };
        if method == Method::Move {
            held.check(&source.url, Scope::Tree)?;
        }
        held.check(&dest.url, Scope::Tree)?;
        let dest_parent = dest.path.parent().unwrap_or(Path::new("/"));
        if !dest_parent.is_dir() {
            return Err(refuse(409, "the destination's collection does not exist"));
        }
        let existed = std::fs::symlink_metadata(&dest.path).is_ok();
        if existed {
            if !overwrite {
                return Err(refuse(412, "the destination exists and Overwrite is F"));
            }
            remove(&dest.path).map_err(|e| {
                refuse(
                    io_status(&e),
                    format!("the destination cannot be removed: {e}"),
                )
            })?;
            LOCKS.forget(held.site, &dest.url);
        }
        let created = if existed { 204 } else { 201 };
        if method == Method::Move {
            match std::fs::rename(&source.path, &dest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    let failed = copy_tree(&source.path, &dest.path, &dest.url, true);
                    if !failed.is_empty() {
                        return Ok(failures(failed));
                    }
                    remove(&source.path).map_err(|e| {
                        refuse(io_status(&e), format!("the source cannot be removed: {e}"))
                    })?;
                }
                Err(e) => return Err(refuse(io_status(&e), format!("the move failed: {e}"))),
            }
            LOCKS.forget(held.site, &source.url);
            return Ok(Answer::status(created));
        }
        let failed = copy_tree(&source.path, &dest.path, &dest.url, infinite);
        if !failed.is_empty() {
            return Ok(failures(failed));
        }
        Ok(Answer::status(created))
    }

    /// Sends `answer` (or the refusal) and ends the handler's work.
    fn finish(
        &mut self,
        ctx: &mut HttpContext,
        config: &WebDavConfig,
        answer: Outcome,
    ) -> RequestNotificationStatus {
        let answer = match answer {
            Ok(a) => a,
            Err(r) => {
                if r.status >= 500 {
                    tracing::warn!(url = %crate::log_excerpt(ctx.request().raw_url()), "WebDav: {}", r.why);
                }
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if let Some(condition) = r.condition {
                    let resp = ctx.response_mut();
                    resp.clear();
                    resp.set_status(status, xml::status_line(r.status)[4..].to_owned());
                    resp.set_error_description(format!("WebDav: {}", r.why));
                    resp.set_try_skip_custom_errors(true);
                    put_xml(ctx, xml::error_body(condition));
                    ctx.set_request_handled();
                    return RequestNotificationStatus::FinishRequest;
                }
                let code = if r.status == 401 || r.status == 403 {
                    crate::E_ACCESS_DENIED
                } else {
                    ModuleError::E_FAIL
                };
                let finished = crate::end_with_error(ctx, status, r.substatus, code);
                if r.status == 405 {
                    let allow = if config.locks_enabled {
                        ALLOW_WITH_LOCKS
                    } else {
                        ALLOW_WITHOUT_LOCKS
                    };
                    ctx.response_mut()
                        .set_header(header::ALLOW, HeaderValue::from_static(allow));
                }
                ctx.response_mut()
                    .set_error_description(format!("WebDav: {}", r.why));
                return finished;
            }
        };
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        let resp = ctx.response_mut();
        resp.clear();
        resp.set_status(status, xml::status_line(answer.status)[4..].to_owned());
        for (name, value) in answer.headers {
            if let Ok(v) = HeaderValue::try_from(value) {
                resp.set_header(name, v);
            }
        }
        if let Some(body) = answer.xml {
            put_xml(ctx, body);
        }
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

fn put_xml(ctx: &mut HttpContext, body: String) {
    let resp = ctx.response_mut();
    resp.set_header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp.write(Bytes::from(body));
}

/// Whether `name` is one of RequestFiltering's `hidden_segments` (ASCII
/// case ignored, as RequestFiltering compares them).
fn is_hidden_segment(name: &str, hidden_segments: &[String]) -> bool {
    hidden_segments.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Refuses a target that is hidden or leads outside its folder. The names
/// RequestFiltering hides (`hidden_segments`: `bin`, `.git`, `riis.toml`,
/// …) are refused whether or not RequestFiltering runs, and at a COPY or
/// MOVE's destination too, which RequestFiltering does not see: with them,
/// a client could put a file where the site hides its own (404.8).
fn check_target(
    url: &str,
    path: &Path,
    root: &Path,
    config: &WebDavConfig,
    hidden_segments: &[String],
) -> Result<(), Refusal> {
    if url
        .split('/')
        .any(|s| is_hidden_segment(s, hidden_segments))
    {
        let mut r = refuse(
            404,
            format!(
                "{url} holds a name RequestFiltering hides (request_filtering.hidden_segments)"
            ),
        );
        r.substatus = 8;
        return Err(r);
    }
    if !config.allow_hidden_files && is_hidden(url) {
        return Err(refuse(
            404,
            format!("{url} is hidden (webdav.allow_hidden_files)"),
        ));
    }
    if !is_confined(root, path) {
        return Err(refuse(
            404,
            format!(
                "{} leads outside the folder its URL maps into",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// OPTIONS: what the server offers.
fn options(config: &WebDavConfig) -> Answer {
    let (dav, allow) = if config.locks_enabled {
        ("1, 2", ALLOW_WITH_LOCKS)
    } else {
        ("1", ALLOW_WITHOUT_LOCKS)
    };
    Answer {
        status: 200,
        xml: None,
        headers: vec![
            (header::HeaderName::from_static("dav"), dav.into()),
            (
                header::HeaderName::from_static("ms-author-via"),
                "DAV".into(),
            ),
            (header::ALLOW, allow.into()),
        ],
    }
}

/// The request's `Depth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    Zero,
    One,
    Infinity,
}

fn depth(ctx: &HttpContext) -> Result<Option<Depth>, Refusal> {
    match ctx.request().header("depth").map(|v| v.as_bytes()) {
        None => Ok(None),
        Some(b"0") => Ok(Some(Depth::Zero)),
        Some(b"1") => Ok(Some(Depth::One)),
        Some(v) if v.eq_ignore_ascii_case(b"infinity") => Ok(Some(Depth::Infinity)),
        Some(_) => Err(refuse(400, "Depth is 0, 1 or infinity")),
    }
}

/// The `Destination` header's URL path, decoded; a URL of another host is
/// 502 (RFC 4918 §9.8.5: this server cannot write there).
fn destination(ctx: &HttpContext) -> Result<String, Refusal> {
    let value = ctx
        .request()
        .header("destination")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse(400, "COPY and MOVE need a Destination"))?;
    let path = match value.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let host = ctx.request().client_host();
            let same = host.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case(authority)
                    || authority
                        .rsplit_once(':')
                        .is_some_and(|(name, _)| h.eq_ignore_ascii_case(name))
                    || h.rsplit_once(':')
                        .is_some_and(|(name, _)| name.eq_ignore_ascii_case(authority))
            });
            if !same {
                return Err(refuse(
                    502,
                    format!("the Destination {value} is on another server"),
                ));
            }
            path
        }
        Some(_) => return Err(refuse(400, "the Destination is not an http or https URL")),
        None => value,
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let decoded = riis_pipeline::prepare_url_path(path)
        .map_err(|_| refuse(400, format!("the Destination {value} is not a usable path")))?;
    Ok(trimmed(&decoded))
}

/// What a request's `If` tokens let it do, and whose they are.
struct Held<'a> {
    site: u32,
    principal: &'a str,
    tokens: Vec<String>,
}

/// Which locks a change must hold the tokens of.
#[derive(Clone, Copy)]
enum Scope {
    /// The resource's own content or properties: the locks covering it.
    Resource,
    /// It is made or removed: also a lock on its collection.
    Member,
    /// It and all below it are removed or replaced.
    Tree,
}

impl Held<'_> {
    /// `Err(423)` when a lock that applies was not submitted by its owner.
    fn check(&self, url: &str, scope: Scope) -> Result<(), Refusal> {
        let parent = locks::parent(url);
        let applies = |l: &Lock| {
            l.covers(url)
                || (!matches!(scope, Scope::Resource) && parent == Some(l.root.as_str()))
                || (matches!(scope, Scope::Tree) && locks::is_below(url, &l.root))
        };
        let blocking = LOCKS
            .find(self.site, applies)
            .into_iter()
            .find(|l| l.principal != self.principal || !self.tokens.contains(&l.token));
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

/// Evaluates an `If` header against the locks and entity tags.
fn if_holds(ctx: &mut HttpContext, h: &IfHeader, target: &Target, site: u32) -> bool {
    // Each tagged resource's URL and entity tag, found once.
    let mut resources: Vec<(Option<String>, String, Option<String>)> = Vec::new();
    for (tag, _) in &h.lists {
        if resources.iter().any(|(t, _, _)| t == tag) {
            continue;
        }
        let (url, path) = match tag {
            None => (target.url.clone(), target.path.clone()),
            Some(t) => {
                let path = match t.split_once("://") {
                    Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
                    None => t.as_str(),
                };
                let url = riis_pipeline::prepare_url_path(path)
                    .map_or_else(|_| path.to_owned(), |d| trimmed(&d));
                let mapped = ctx.map_path(&url);
                (url, mapped)
            }
        };
        let etag = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| crate::static_file::etag_of(&m));
        resources.push((tag.clone(), url, etag));
    }
    h.holds(&mut |tag, kind| {
        let Some((_, url, etag)) = resources.iter().find(|(t, _, _)| t.as_deref() == tag) else {
            return false;
        };
        match kind {
            locks::ConditionKind::Token(token) => LOCKS.is_current(site, token, url),
            locks::ConditionKind::ETag(tag) => etag.as_deref() == Some(tag.as_str()),
        }
    })
}

/// The `DAV:activelock` elements of the locks covering `url`.
fn active_locks(site: u32, url: &str) -> String {
    LOCKS.covering(site, url).iter().map(activelock).collect()
}

fn activelock(l: &Lock) -> String {
    format!(
        "<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:{}/></D:lockscope><D:depth>{}</D:depth>{}<D:timeout>Second-{}</D:timeout><D:locktoken><D:href>{}</D:href></D:locktoken><D:lockroot><D:href>{}</D:href></D:lockroot></D:activelock>",
        if l.exclusive { "exclusive" } else { "shared" },
        if l.infinite { "infinity" } else { "0" },
        l.owner.as_deref().unwrap_or(""),
        l.seconds_left(),
        xml::escape(&l.token),
        xml::escape(&href(&l.root, false)),
    )
}

/// PROPFIND.
fn propfind(
    ctx: &HttpContext,
    config: &WebDavConfig,
    hidden_segments: &[String],
    target: &Target,
    body: &[u8],
) -> Outcome {
    let asked = xml::propfind(body).map_err(|e| refuse(400, e))?;
    let meta = target
        .metadata()
        .ok_or_else(|| refuse(404, "nothing is there"))?;
    let depth = depth(ctx)?.unwrap_or(Depth::Infinity);
    if depth == Depth::Infinity && meta.is_dir() && !config.allow_infinite_propfind_depth {
        return Err(Refusal {
            status: 403,
            substatus: 0,
            why: "PROPFIND with Depth infinity is off here (webdav.allow_infinite_propfind_depth)"
                .into(),
            condition: Some("propfind-finite-depth"),
        });
    }
    let site = ctx.site().site_id;
    let mut out = Multistatus::new();
    let mut pending = vec![(target.url.clone(), target.path.clone(), meta, 0u32)];
    while let Some((url, path, meta, level)) = pending.pop() {
        describe(&mut out, site, &asked, &url, &path, &meta);
        let deeper = match depth {
            Depth::Zero => false,
            Depth::One => level == 0,
            Depth::Infinity => true,
        };
        if !(deeper && meta.is_dir()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        let mut children: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let shown = (config.allow_hidden_files || !name.starts_with('.'))
                    && !is_hidden_segment(&name, hidden_segments);
                shown.then(|| (name, e.path()))
            })
            .collect();
        children.sort();
        for (name, child) in children.into_iter().rev() {
            let is_link =
                std::fs::symlink_metadata(&child).is_ok_and(|m| m.file_type().is_symlink());
            if is_link && !is_confined(&target.root, &child) {
                continue;
            }
            let Ok(child_meta) = std::fs::metadata(&child) else {
                continue;
            };
            let child_url = if url == "/" {
                format!("/{name}")
            } else {
                format!("{url}/{name}")
            };
            pending.push((child_url, child, child_meta, level + 1));
        }
    }
    Ok(Answer::xml(207, out.finish()))
}

/// One resource's response in a PROPFIND.
fn describe(
    out: &mut Multistatus,
    site: u32,
    asked: &PropFind,
    url: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) {
    let content_type = (!meta.is_dir()).then(|| {
        mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream")
    });
    let locks = active_locks(site, url);
    let resource = Resource {
        metadata: meta,
        content_type,
        active_locks: &locks,
    };
    let dead = DeadProperties::load(path);
    let mut found = String::new();
    let mut missing = String::new();
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
            for (name, _) in &dead.items {
                found.push_str(&name.empty_element());
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
                    None => missing.push_str(&name.empty_element()),
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
    out.propstats(&href(url, meta.is_dir()), &groups);
}

/// PROPPATCH: all changes or none.
fn proppatch(config: &WebDavConfig, target: &Target, held: &Held<'_>, body: &[u8]) -> Outcome {
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
        let mut dead = DeadProperties::load(&target.path);
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
    let mut groups: Vec<(u16, String)> = Vec::new();
    for (name, status) in results {
        match groups.iter_mut().find(|(s, _)| *s == status) {
            Some((_, props)) => props.push_str(&name.empty_element()),
            None => groups.push((status, name.empty_element())),
        }
    }
    let mut out = Multistatus::new();
    out.propstats(&href(&target.url, meta.is_dir()), &groups);
    Ok(Answer::xml(207, out.finish()))
}

/// MKCOL.
fn mkcol(target: &Target, held: &Held<'_>) -> Outcome {
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

/// DELETE.
fn delete(ctx: &HttpContext, target: &Target, held: &Held<'_>) -> Outcome {
    let meta =
        std::fs::symlink_metadata(&target.path).map_err(|_| refuse(404, "nothing is there"))?;
    if meta.is_dir() && !matches!(depth(ctx)?, None | Some(Depth::Infinity)) {
        return Err(refuse(400, "DELETE of a collection takes Depth infinity"));
    }
    if target.url == "/" {
        return Err(refuse(
            403,
            "the folder a site's root maps to is not deleted",
        ));
    }
    held.check(&target.url, Scope::Tree)?;
    remove(&target.path)
        .map_err(|e| refuse(io_status(&e), format!("it cannot be deleted: {e}")))?;
    LOCKS.forget(held.site, &target.url);
    Ok(Answer::status(204))
}

/// Removes a file, a link or a whole folder.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path)? {
        m if m.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// Copies `from` to `to` (a folder with what is in it when `infinite`),
/// dead properties included; gives the hrefs that failed and why.
fn copy_tree(from: &Path, to: &Path, url: &str, infinite: bool) -> Vec<(String, u16)> {
    let mut failed = Vec::new();
    let meta = match std::fs::symlink_metadata(from) {
        Ok(m) => m,
        Err(e) => return vec![(href(url, false), io_status(&e))],
    };
    if meta.file_type().is_symlink() {
        let made = std::fs::read_link(from).and_then(|link| std::os::unix::fs::symlink(link, to));
        if let Err(e) = made {
            failed.push((href(url, false), io_status(&e)));
        }
        return failed;
    }
    if !meta.is_dir() {
        if let Err(e) = std::fs::copy(from, to).and_then(|_| properties::copy_dead(from, to)) {
            failed.push((href(url, false), io_status(&e)));
        }
        return failed;
    }
    if let Err(e) = std::fs::create_dir(to).and_then(|()| properties::copy_dead(from, to)) {
        return vec![(href(url, true), io_status(&e))];
    }
    if !infinite {
        return failed;
    }
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) => return vec![(href(url, true), io_status(&e))],
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let child_url = format!("{}/{}", url.trim_end_matches('/'), name.to_string_lossy());
        failed.extend(copy_tree(&entry.path(), &to.join(&name), &child_url, true));
    }
    failed
}

/// A 207 listing what failed.
fn failures(failed: Vec<(String, u16)>) -> Answer {
    let mut out = Multistatus::new();
    for (href, status) in failed {
        out.status(&href, status);
    }
    Answer::xml(207, out.finish())
}

/// Puts a finished upload in its target's place.
fn finish_upload(upload: Upload) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    let Upload {
        temp,
        target,
        existed,
    } = upload;
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let set = std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode));
    if let Err(e) = set {
        return Err(refuse(500, format!("the upload's mode cannot be set: {e}")));
    }
    if existed {
        // The new file replaces the old one's inode: its properties go
        // along (a file system without them has none to lose).
        let _ = properties::copy_dead(&target, temp.path());
    }
    temp.persist(&target).map_err(|e| {
        refuse(
            io_status(&e.error).max(500),
            format!("the upload cannot be put in place: {}", e.error),
        )
    })?;
    Ok(Answer::status(if existed { 204 } else { 201 }))
}

/// LOCK: a new lock, or a refresh (no body).
fn lock(
    ctx: &HttpContext,
    config: &WebDavConfig,
    target: &Target,
    held: &Held<'_>,
    body: &[u8],
) -> Outcome {
    if !config.locks_enabled {
        return Err(refuse(405, "locks are off here (webdav.locks_enabled)"));
    }
    let timeout = locks::timeout(
        ctx.request()
            .header("timeout")
            .and_then(|v| v.to_str().ok()),
        Duration::from_secs(config.lock_timeout),
    );
    let info = xml::lockinfo(body).map_err(|e| refuse(400, e))?;
    let Some(info) = info else {
        let refreshed = held
            .tokens
            .iter()
            .find_map(|t| LOCKS.refresh(held.site, t, &target.url, held.principal, timeout));
        return match refreshed {
            Some(l) => Ok(lock_answer(200, &l, false)),
            None => Err(refuse(412, "a LOCK refresh names no lock of this resource")),
        };
    };
    let infinite = match depth(ctx)? {
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
            owner: info.owner,
            principal: held.principal.to_owned(),
            timeout,
            expires: Instant::now() + timeout,
        })
        .map_err(|_| Refusal {
            status: 423,
            substatus: 0,
            why: format!("{} has a lock in the way", target.url),
            condition: Some("no-conflicting-lock"),
        })?;
    if !exists {
        // RFC 4918 §7.3: a lock on an unmapped URL makes an empty resource.
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target.path);
        if let Err(e) = made {
            let _ = LOCKS.release(held.site, &granted.token, &target.url, held.principal);
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
fn unlock(ctx: &HttpContext, target: &Target, held: &Held<'_>) -> Outcome {
    let token = ctx
        .request()
        .header("lock-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|t| t.strip_prefix('<')?.strip_suffix('>'))
        .ok_or_else(|| refuse(400, "UNLOCK needs a Lock-Token"))?;
    match LOCKS.release(held.site, token, &target.url, held.principal) {
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

impl HttpModule for WebDav {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        self.start(ctx)
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        if self.receiving.is_none() {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config_shared(self.config);
        if let Err(r) = self.take_piece(ctx, completion) {
            // Dropping the upload removes its temporary file.
            self.receiving = None;
            return self.finish(ctx, &config, Err(r));
        }
        self.receive(ctx, &config)
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<WebDavConfig>("webdav")?;
    let request_filtering =
        registration.share_section::<RequestFilteringConfig>("request_filtering")?;
    registration.set_request_notifications(
        move || WebDav {
            config,
            request_filtering,
            receiving: None,
        },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &str, roles: &str, access: &str) -> AuthoringRule {
        AuthoringRule::try_from(RuleFields {
            users: users.into(),
            roles: roles.into(),
            access: AccessSet::try_from(access.to_owned()).unwrap(),
        })
        .unwrap()
    }

    #[test]
    fn access_joins_the_default_and_every_rule_naming_the_user() {
        let config = WebDavConfig {
            default_access: AccessSet::try_from("Read".to_owned()).unwrap(),
            authoring_rules: vec![
                rule("alice", "", "Write"),
                rule("", "Editors", "Read, Write"),
            ],
            ..WebDavConfig::default()
        };
        let alice = HttpUser::new("alice", "Basic");
        let bob = HttpUser::new("bob", "Basic").with_roles(["editors"]);
        let carol = HttpUser::new("carol", "Basic");
        assert_eq!(
            config.access(Some(&alice)),
            AccessSet {
                read: true,
                write: true
            }
        );
        assert_eq!(
            config.access(Some(&bob)),
            AccessSet {
                read: true,
                write: true
            }
        );
        assert_eq!(
            config.access(Some(&carol)),
            AccessSet {
                read: true,
                write: false
            }
        );
        assert_eq!(
            config.access(None),
            AccessSet {
                read: true,
                write: false
            }
        );
        let anonymous = WebDavConfig {
            authoring_rules: vec![rule("?", "", "Write")],
            ..WebDavConfig::default()
        };
        assert!(anonymous.access(None).write);
        assert!(!anonymous.access(Some(&alice)).write);
        assert_eq!(
            WebDavConfig::default().access(Some(&alice)),
            AccessSet::default()
        );
    }

    #[test]
    fn access_and_rules_are_checked_when_the_configuration_loads() {
        assert!(AccessSet::try_from("Read, Source".to_owned())
            .unwrap_err()
            .contains("Source"));
        assert!(AccessSet::try_from("Execute".to_owned())
            .unwrap_err()
            .contains("not an access"));
        assert_eq!(
            AccessSet::try_from("none".to_owned()).unwrap(),
            AccessSet::default()
        );
        let fields = RuleFields {
            users: " , ".into(),
            roles: String::new(),
            access: AccessSet::default(),
        };
        assert!(AuthoringRule::try_from(fields)
            .unwrap_err()
            .contains("names `users`"));
    }

    #[test]
    fn urls_and_hrefs() {
        assert_eq!(trimmed("/a/b/"), "/a/b");
        assert_eq!(trimmed("/"), "/");
        assert_eq!(href("/a b/c", true), "/a%20b/c/");
        assert_eq!(href("/", true), "/");
        assert!(is_hidden("/a/.git/x"));
        assert!(!is_hidden("/a/b.c"));
    }
}
