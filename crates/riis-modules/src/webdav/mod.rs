//! `WebDav`: WebDAV authoring (RFC 4918, classes 1 and 2) of a site's
//! files, as IIS's WebDAV module gives it: clients such as Windows
//! Explorer, macOS Finder, davfs2 or cadaver list folders, upload, move,
//! copy and delete files, set properties and take locks.
//!
//! Registers for **ExecuteRequestHandler**, as a handler module (and for
//! the global RscaQuery, for its line in `riis status`): map
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
//! (413 past it). A PUT's body goes to an unnamed file in the target's
//! folder, linked in with one rename once the whole body is in (see
//! `tree::put_in_place`): a cut-short upload leaves nothing, and a reader
//! sees the old file or the new one. The file gets the mode of the one it
//! replaces (less set-user-ID and the like), or 0666 less the umask.
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
//! A COPY or MOVE's `Destination` is judged by the settings of its own
//! location (this section, and the access modules' sections there), and
//! a method on a tree by those of each location inside it (see
//! `WebDav::may`). Source and destination are compared as the file
//! system resolves them, so no COPY or MOVE removes what it comes from. The names RequestFiltering
//! hides (`request_filtering.hidden_segments`) are refused (404.8) in the
//! request's URL and in the destination, and left out of listings, whether
//! or not RequestFiltering runs. No symbolic link inside the folder a URL
//! maps into is followed (404), listed, copied or moved: locations guard
//! URLs, and a link would lead a URL of one location into another's files.
//!
//! `riis status` shows `webdav_locks`, the locks held now (a global
//! module for RscaQuery).
//!
//! The methods' file-system work runs on threads of the module's own
//! (see `methods`). Locks live in memory (see `locks`) and end with the
//! server, as with IIS's simple lock store; dead properties live in an
//! extended attribute of each file (see `properties`).

mod locks;
mod methods;
mod properties;
mod tree;
mod xml;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::{header, HeaderValue, StatusCode};
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, HttpUser, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

use locks::{IfHeader, LOCKS};
use methods::{
    io_status, is_hidden, refuse, trimmed, Answer, Depth, Held, Listing, Outcome, Preconditions,
    Refusal, Scope, Target, Transfer, Upload, Work,
};

use crate::background::Background;

use crate::anonymous_authentication::AnonymousAuthenticationConfig;
use crate::basic_authentication::BasicAuthenticationConfig;
use crate::client_certificate_mapping_authentication::{
    denying_mapping, ClientCertificateMappingConfig,
};
use crate::ip_restriction::IpSecurityConfig;
use crate::request_filtering::{url_refusal, RequestFilteringConfig};
use crate::ssl_access::AccessConfig;
use crate::url_authorization::{AuthorizationConfig, UserSpec};

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
    /// Whether `user` has what `need` asks for here.
    fn grants(&self, user: Option<&HttpUser>, need: Need) -> bool {
        let anonymous = user.is_none_or(|u| u.name().is_empty());
        let access = self.access(user);
        match need {
            Need::List => access.read && (!anonymous || self.allow_anonymous_propfind),
            Need::Read => access.read,
            Need::Write => access.write,
        }
    }

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

    /// What the method needs at the request's URL (OPTIONS: nothing).
    fn need(self) -> Option<Need> {
        match self {
            Self::Options => None,
            Self::PropFind => Some(Need::List),
            Self::Copy => Some(Need::Read),
            _ => Some(Need::Write),
        }
    }
}

/// What a method needs at a URL (see [`WebDav::may`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// PROPFIND's listing: Read, and for an anonymous client
    /// `allow_anonymous_propfind`.
    List,
    Read,
    Write,
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

/// The module instance: one per request.
pub struct WebDav {
    config: Section<WebDavConfig>,
    /// RequestFiltering's section, for the names it hides.
    request_filtering: Section<RequestFilteringConfig>,
    /// The access modules' sections, to judge URLs besides the request's.
    authorization: Section<AuthorizationConfig>,
    anonymous: Section<AnonymousAuthenticationConfig>,
    basic: Section<BasicAuthenticationConfig>,
    ssl_access: Section<AccessConfig>,
    ip_security: Section<IpSecurityConfig>,
    certificate_mapping: Section<ClientCertificateMappingConfig>,
    /// The method and its body, while it is read.
    receiving: Option<(Method, Body)>,
    /// The module's threads.
    threads: Arc<Background<Job>>,
    /// What the threads answer for this request, once they have.
    answered: Option<Answered>,
    /// A PROPFIND answer going out in parts: the rest of its walk, while
    /// the part before it is flushed to the client.
    listing: Option<Box<Listing>>,
    /// Whether the answer's head went out with its first part.
    in_parts: bool,
}

/// Where a method's outcome goes from the thread that made it.
type Answered = Arc<Mutex<Option<Outcome>>>;

/// What a job does on the module's threads.
enum Task {
    /// A method's work.
    Method(Box<Work>),
    /// The next part of a PROPFIND answer.
    Listing(Box<Listing>),
}

/// Work queued for the module's threads.
struct Job {
    task: Task,
    answered: Answered,
    done: riis_pipeline::CompletionHandle,
    /// The threads, to queue the job again once the paths it waits for
    /// are free.
    threads: Arc<Background<Job>>,
    /// The paths it changes, once claimed.
    claim: Option<tree::Claim>,
}

impl Job {
    /// Claims the job's paths, then does its work: at once, or queued
    /// again when the method that holds them lets go (no thread waits).
    fn run(mut self) {
        // A request whose client left (or whose time ran out) while the job
        // waited is not done: a DELETE nobody waits for is not wanted.
        if !self.done.is_client_connected() {
            return;
        }
        if self.claim.is_some() {
            return self.carry_out();
        }
        let paths = match &self.task {
            Task::Method(work) => work.claim_paths(),
            Task::Listing(_) => Vec::new(),
        };
        if paths.is_empty() {
            return self.carry_out();
        }
        tree::claim_then(
            paths,
            Box::new(move |claim, granted| {
                self.claim = Some(claim);
                match granted {
                    tree::Granted::Now => {
                        self.carry_out();
                        None
                    }
                    tree::Granted::Later => {
                        // Back to the queue; when it is full, done on this
                        // thread (one of the module's) once the methods
                        // freed with it were handed their paths.
                        let threads = self.threads.clone();
                        match threads.queue(self) {
                            Ok(()) => None,
                            Err(job) => Some(Box::new(move || job.carry_out()) as tree::Deferred),
                        }
                    }
                    tree::Granted::Refused => {
                        let why = format!(
                            "{} WebDAV requests wait for files others work on",
                            tree::MOST_WAITING
                        );
                        post(&self.answered, &self.done, Err(refuse(503, why)));
                        None
                    }
                }
            }),
        );
    }

    fn carry_out(self) {
        if !self.done.is_client_connected() {
            return;
        }
        let Job {
            task,
            answered,
            done,
            claim,
            ..
        } = self;
        // A panic is this request's failure, caught here: the claim is then
        // let go of normally, not while unwinding.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match task {
            Task::Method(work) => (*work).run(),
            Task::Listing(listing) => Ok(Answer::listing_part(listing)),
        }))
        .unwrap_or_else(|_| {
            tracing::error!("WebDav: a method's work panicked");
            Err(refuse(500, "the method's work failed"))
        });
        // Answered first, then the paths let go of: the next method on
        // them may be done on this thread, and this client must not wait
        // for it.
        post(&answered, &done, outcome);
        drop(claim);
    }
}

/// Hands a method's outcome to its request and wakes it.
fn post(answered: &Answered, done: &riis_pipeline::CompletionHandle, outcome: Outcome) {
    *answered.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    done.post_completion(0);
}

/// Threads doing methods' work; a file system that is slow (a network
/// mount) or a large COPY holds these, not the workers.
const THREADS: usize = 4;
/// Jobs that may wait for them; past that, 503.
const QUEUED_JOBS: usize = 256;

impl WebDav {
    /// The request's own target, checked: confined and not hidden.
    fn target(&self, ctx: &mut HttpContext, config: &WebDavConfig) -> Result<Target, Refusal> {
        let url = canonical(ctx, trimmed(ctx.request().url()));
        let path = ctx.physical_path().to_path_buf();
        let hidden = &ctx.config(self.request_filtering).hidden_segments;
        let folder = ctx.virtual_directory();
        let path = check_target(&url, &path, &folder.physical_path, config, hidden)?;
        Ok(Target { url, path })
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
                let mut answer = Answer::status(200);
                answer
                    .headers
                    .push((header::ALLOW, "OPTIONS, GET, HEAD".into()));
                Ok(answer)
            } else {
                Err(refuse(405, "WebDAV authoring is off here (webdav.enabled)"))
            };
            return self.finish(ctx, &config, answer);
        }
        if config.require_ssl && !ctx.request().is_tls() {
            return self.finish(
                ctx,
                &config,
                Err(refuse(403, "WebDAV needs TLS here (webdav.require_ssl)").with_substatus(4)),
            );
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
                return self.go(ctx, &config, method, Vec::new(), None);
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
        let Some(need) = method.need() else {
            return Ok(());
        };
        if config.grants(user, need) {
            return Ok(());
        }
        let why = format!(
            "no authoring rule gives {} {} access here",
            if anonymous {
                "an anonymous client".to_owned()
            } else {
                format!("user {}", user.map_or("", |u| u.name()))
            },
            if need == Need::Write { "Write" } else { "Read" }
        );
        Err(refuse(if anonymous { 401 } else { 403 }, why))
    }

    /// Reads the next piece of the body, or runs the method once it is in.
    fn receive(
        &mut self,
        ctx: &mut HttpContext,
        config: &Arc<WebDavConfig>,
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
        match body {
            Body::Xml(bytes) => self.go(ctx, config, method, bytes, None),
            Body::Upload(upload) => self.go(ctx, config, method, Vec::new(), Some(upload)),
        }
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
                if let Err(e) = upload.file.write_all(&data) {
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

    /// Runs a method whose body (if any) is in; waits for the module's
    /// threads unless it is answered at once.
    fn go(
        &mut self,
        ctx: &mut HttpContext,
        config: &Arc<WebDavConfig>,
        method: Method,
        body: Vec<u8>,
        upload: Option<Upload>,
    ) -> RequestNotificationStatus {
        if method == Method::Options {
            return self.finish(ctx, config, Ok(options(config)));
        }
        match self.run(ctx, config, method, body, upload) {
            Ok(()) => RequestNotificationStatus::Pending,
            Err(r) => self.finish(ctx, config, Err(r)),
        }
    }

    /// Runs a method whose body (if any) is in, on the module's threads,
    /// once what it needs of the request is gathered. (An upload's last
    /// steps, done at once on the worker when nobody else worked on its
    /// file, measured slower: the rename over the old file waits on the
    /// file system's journal, and the worker's other requests with it.)
    fn run(
        &mut self,
        ctx: &mut HttpContext,
        config: &Arc<WebDavConfig>,
        method: Method,
        body: Vec<u8>,
        upload: Option<Upload>,
    ) -> Result<(), Refusal> {
        let mut work = self.prepare(ctx, config, method, body)?;
        work.upload = upload;
        self.queue(ctx, Task::Method(Box::new(work)))
    }

    /// Queues `task` for the module's threads; its outcome comes back
    /// through `self.answered` and a posted completion.
    fn queue(&mut self, ctx: &mut HttpContext, task: Task) -> Result<(), Refusal> {
        let answered = Answered::default();
        let job = Job {
            task,
            answered: answered.clone(),
            done: ctx.completion_handle(),
            threads: self.threads.clone(),
            claim: None,
        };
        // The next part of a listing whose head went out is never refused
        // for a queue new requests filled: it would cut the answer short.
        let queued = match job.task {
            Task::Listing(_) => self.threads.queue_admitted(job),
            Task::Method(_) => self.threads.queue(job),
        };
        if queued.is_err() {
            static BUSY_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = BUSY_LOG.pass() {
                tracing::warn!(
                    held_back,
                    "WebDav: too many requests waiting for its threads"
                );
            }
            return Err(refuse(503, "too many WebDAV requests are waiting"));
        }
        self.answered = Some(answered);
        Ok(())
    }

    /// What `method` needs of the request, checked: the target, the `If`
    /// header's verdict and tokens, the destination of COPY and MOVE.
    fn prepare(
        &self,
        ctx: &mut HttpContext,
        config: &Arc<WebDavConfig>,
        method: Method,
        body: Vec<u8>,
    ) -> Result<Work, Refusal> {
        let target = self.target(ctx, config)?;
        let (held, preconditions) = self.submitted(ctx, &target)?;
        let transfer = match method {
            Method::Copy | Method::Move => Some(self.prepare_transfer(ctx, method)?),
            _ => None,
        };
        if method == Method::Lock && ctx.request().url().ends_with('/') && !target.path.is_dir() {
            return Err(refuse(
                409,
                "a URL ending in / names a collection; a LOCK there makes a file",
            ));
        }
        // A method on a tree meets the locations inside it: DELETE and
        // MOVE need Write in each, COPY Read; PROPFIND leaves out those
        // that would refuse the user a listing.
        let mut unlisted = Vec::new();
        match method {
            Method::Delete | Method::Move => self.may_below(ctx, &target.url, Need::Write)?,
            // A lock on a tree keeps others out of each location inside it.
            Method::Lock if matches!(depth(ctx)?, None | Some(Depth::Infinity)) => {
                self.may_below(ctx, &target.url, Need::Write)?
            }
            Method::Copy => self.may_below(ctx, &target.url, Need::Read)?,
            Method::PropFind => {
                let below: Vec<String> = ctx
                    .location_paths_below(&target.url)
                    .map(str::to_owned)
                    .collect();
                unlisted = below
                    .into_iter()
                    .filter(|path| self.may(ctx, path, Need::List).is_err())
                    .collect();
            }
            _ => {}
        }
        let header = |name: &str| {
            ctx.request()
                .header(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Work {
            method,
            config: config.clone(),
            target,
            held,
            preconditions,
            body,
            depth: depth(ctx)?,
            hidden_segments: ctx.config(self.request_filtering).hidden_segments.clone(),
            timeout: header("timeout"),
            lock_token: header("lock-token"),
            transfer,
            unlisted,
            upload: None,
            // Only what removes or replaces folders needs them.
            mapped_roots: if matches!(method, Method::Delete | Method::Copy | Method::Move) {
                ctx.virtual_directories()
                    .filter_map(|v| tree::real_folder(&v.physical_path).ok())
                    .collect()
            } else {
                Vec::new()
            },
        })
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
        if ctx.request().url().ends_with('/') && !target.path.is_dir() {
            return Err(refuse(
                409,
                "a URL ending in / names a collection; PUT makes files",
            ));
        }
        // Over a file, only the locks on it apply; a new file also changes
        // its collection's members.
        let scope = if std::fs::symlink_metadata(&target.path).is_ok() {
            Scope::Resource
        } else {
            Scope::Member
        };
        // Refused before the body is read; looked at again once it is in.
        self.submitted(ctx, &target)?.0.check(&target.url, scope)?;
        let meta = std::fs::symlink_metadata(&target.path).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(refuse(405, "PUT cannot replace a collection"));
        }
        let parent = target.path.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            return Err(refuse(409, "the collection to PUT into does not exist"));
        }
        let file = tree::upload_file(parent).map_err(|e| {
            refuse(
                io_status(&e).max(500),
                format!("the upload cannot start: {e}"),
            )
        })?;
        Ok(Upload { file })
    }

    /// A COPY or MOVE's destination, judged by its own location's settings.
    fn prepare_transfer(&self, ctx: &mut HttpContext, method: Method) -> Result<Transfer, Refusal> {
        let destination = destination(ctx)?;
        let dest_path = ctx.map_path(&destination);
        // The destination is judged by its own location's settings, and
        // so is each location inside it (a replaced folder goes whole).
        self.may(ctx, &destination, Need::Write)?;
        self.may_below(ctx, &destination, Need::Write)?;
        let dest_config = ctx.config_for_url(self.config, &destination);
        let hidden = &ctx
            .config_for_url(self.request_filtering, &destination)
            .hidden_segments;
        let folder = &ctx.virtual_directory_for_url(&destination).physical_path;
        let path = check_target(&destination, &dest_path, folder, dest_config, hidden)?;
        let dest = Target {
            url: destination,
            path,
        };
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
        Ok(Transfer {
            dest,
            overwrite,
            infinite,
        })
    }

    /// Whether the request's user may `need` at `url`, a URL besides the
    /// request's own (a COPY or MOVE's destination, a location inside a
    /// tree a method acts on), by the settings of that URL's location: this
    /// module's own (on, TLS where it requires it, and a rule giving the
    /// access), and those of the access modules a request for that URL
    /// would meet, whether or not they run: SslAccess's `require_ssl` and
    /// `require_client_certificate`, IpRestriction's address rules,
    /// ClientCertificateMappingAuthentication's denials, RequestFiltering's
    /// rules about the path (`internal`, hidden segments, denied sequences,
    /// file extensions: IIS's `applyToWebDAV`), AnonymousAuthentication's
    /// `enabled`, BasicAuthentication's files (a Basic user vouched for by
    /// others), UrlAuthorization's rules (for the request's method).
    /// Without them a client could COPY into a folder it may not write,
    /// MOVE an upload to a name the site runs as a script, or DELETE a
    /// folder kept to an office's addresses inside one it may.
    fn may(&self, ctx: &HttpContext, url: &str, need: Need) -> Result<(), Refusal> {
        let user = ctx.user();
        let anonymous = user.is_none_or(|u| u.name().is_empty());
        let access = ctx.config_for_url(self.ssl_access, url);
        if let Some(substatus) =
            crate::ssl_access::refusal(ctx, access.require_ssl, access.require_client_certificate)
        {
            return Err(refuse(
                403,
                format!("{url} needs TLS or a client certificate this request lacks (access)"),
            )
            .with_substatus(substatus));
        }
        let ip_security = ctx.config_for_url(self.ip_security, url);
        if let Some(address) = ip_security.refused_address(ctx) {
            return Err(refuse(
                ip_security.deny_action.status().as_u16(),
                format!("{url} refuses the address {address} (ip_security)"),
            )
            .with_substatus(503));
        }
        let mapping = ctx.config_for_url(self.certificate_mapping, url);
        if let Some(name) = denying_mapping(ctx, mapping) {
            return Err(refuse(
                403,
                format!("the certificate mapping `{name}` denies this certificate at {url}"),
            )
            .with_substatus(12));
        }
        let filtering = ctx.config_for_url(self.request_filtering, url);
        let method = ctx.request().method().as_str();
        if let Some((status, substatus, rule)) = url_refusal(filtering, url, method) {
            return Err(refuse(
                status.as_u16(),
                format!("RequestFiltering refuses {url} (request_filtering.{rule})"),
            )
            .with_substatus(substatus));
        }
        if anonymous && !ctx.config_for_url(self.anonymous, url).enabled {
            return Err(refuse(
                401,
                format!("{url} is closed to anonymous clients (anonymous_authentication.enabled)"),
            ));
        }
        // A Basic user of other files than the destination's (another
        // `admin`, other groups): a request there would log on again, and
        // the rules below would judge someone else (BasicAuthentication's
        // re-logon of a child request).
        let basic = ctx.config_for_url(self.basic, url);
        if basic.enabled
            && user.is_some_and(|u| {
                u.authentication_type() == "Basic"
                    && u.issuer().is_some_and(|i| i != &**basic.issuer())
            })
        {
            return Err(refuse(
                401,
                format!("{url} logs on against other users than the request's (basic_authentication.user_file)"),
            ));
        }
        let denied = |why: String| refuse(if anonymous { 401 } else { 403 }, why);
        if !ctx
            .config_for_url(self.authorization, url)
            .allows(user, method)
        {
            return Err(denied(format!(
                "UrlAuthorization's rules for {url} refuse it"
            )));
        }
        let config = ctx.config_for_url(self.config, url);
        if !config.enabled {
            return Err(refuse(
                403,
                format!("WebDAV authoring is off at {url} (webdav.enabled)"),
            ));
        }
        if config.require_ssl && !ctx.request().is_tls() {
            return Err(refuse(
                403,
                format!("WebDAV needs TLS at {url} (webdav.require_ssl)"),
            )
            .with_substatus(4));
        }
        if !config.grants(user, need) {
            return Err(denied(format!(
                "no authoring rule gives {} access at {url}",
                if need == Need::Write { "Write" } else { "Read" }
            )));
        }
        Ok(())
    }

    /// [`WebDav::may`] for each location inside `url`. A location inside
    /// that hides itself (404: `internal`, a denied name) refuses the
    /// method with 403: `url` itself is there.
    fn may_below(&self, ctx: &HttpContext, url: &str, need: Need) -> Result<(), Refusal> {
        for path in ctx.location_paths_below(url) {
            self.may(ctx, path, need).map_err(|mut r| {
                if r.status == 404 {
                    r.status = 403;
                    r.substatus = 0;
                }
                r
            })?;
        }
        Ok(())
    }

    /// Sends `answer` (or the refusal) and ends the handler's work.
    fn finish(
        &mut self,
        ctx: &mut HttpContext,
        config: &WebDavConfig,
        answer: Outcome,
    ) -> RequestNotificationStatus {
        if self.in_parts {
            return self.next_part(ctx, answer);
        }
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
        if let Some(rest) = answer.more {
            self.in_parts = true;
            return self.flush_part(ctx, rest);
        }
        RequestNotificationStatus::Continue
    }

    /// Sends the part written so far and keeps the rest of the listing for
    /// when the client has taken it (see [`WebDav::on_async_completion`]).
    fn flush_part(
        &mut self,
        ctx: &mut HttpContext,
        rest: Box<Listing>,
    ) -> RequestNotificationStatus {
        self.listing = Some(rest);
        ctx.response_mut().flush(riis_pipeline::FlushOptions {
            asynchronous: true,
            more_data: true,
        });
        RequestNotificationStatus::Pending
    }

    /// A later part of an answer in parts, from the module's threads.
    fn next_part(&mut self, ctx: &mut HttpContext, outcome: Outcome) -> RequestNotificationStatus {
        match outcome {
            Ok(answer) => {
                if let Some(part) = answer.xml {
                    ctx.response_mut().write(Bytes::from(part));
                }
                match answer.more {
                    Some(rest) => self.flush_part(ctx, rest),
                    None => RequestNotificationStatus::Continue,
                }
            }
            // The head went out: the answer can only end short.
            Err(r) => {
                tracing::warn!(url = %crate::log_excerpt(ctx.request().raw_url()), "WebDav: {}", r.why);
                ctx.response_mut().cut_short();
                RequestNotificationStatus::Continue
            }
        }
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

/// Refuses a target that is hidden, passes a symbolic link or leads outside
/// the folder its URL maps into (`folder`); gives its resolved path. The names
/// RequestFiltering hides (`hidden_segments`: `bin`, `.git`, `riis.toml`,
/// …) are refused whether or not RequestFiltering runs, and at a COPY or
/// MOVE's destination too, which RequestFiltering does not see: with them,
/// a client could put a file where the site hides its own (404.8).
fn check_target(
    url: &str,
    path: &Path,
    folder: &Path,
    config: &WebDavConfig,
    hidden_segments: &[String],
) -> Result<PathBuf, Refusal> {
    if url
        .split('/')
        .any(|s| is_hidden_segment(s, hidden_segments))
    {
        return Err(refuse(
            404,
            format!(
                "{url} holds a name RequestFiltering hides (request_filtering.hidden_segments)"
            ),
        )
        .with_substatus(8));
    }
    // Linux file systems take names of up to 255 bytes: a longer one is
    // refused now, before a PUT's body is read, not after (a 500 then).
    if url.split('/').any(|name| name.len() > 255) {
        return Err(refuse(
            400,
            format!("{url} has a name longer than 255 bytes, more than the file system takes"),
        ));
    }
    if !config.allow_hidden_files && is_hidden(url) {
        return Err(refuse(
            404,
            format!("{url} is hidden (webdav.allow_hidden_files)"),
        ));
    }
    let real_folder = tree::real_folder(folder)
        .map_err(|e| refuse(500, format!("{} cannot be resolved: {e}", folder.display())))?;
    tree::plain_path(folder, &real_folder, path).ok_or_else(|| {
        refuse(
            404,
            format!(
                "{} passes a symbolic link or lies outside the folder its URL maps into",
                path.display()
            ),
        )
    })
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
        more: None,
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
            // Host and port compared, each side's missing port its
            // scheme's default (`h` and `h:80` are one server over HTTP).
            let default_port = |https: bool| if https { 443 } else { 80 };
            let theirs = host_and_port(
                authority,
                default_port(scheme.eq_ignore_ascii_case("https")),
            );
            let ours = ctx
                .request()
                .client_host()
                .and_then(|h| host_and_port(&h, default_port(ctx.request().is_tls())));
            let same = theirs.is_some() && theirs == ours;
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
    Ok(canonical(ctx, trimmed(&decoded)))
}

/// `url` with its virtual directory's part spelt as the configuration
/// spells it. Locations and virtual directories ignore ASCII case, so
/// `/VD1/a.txt` is `/vd1/a.txt`'s file; locks are kept by URL, and one
/// spelling must not get past a lock taken under another.
fn canonical(ctx: &HttpContext, url: String) -> String {
    let prefix = &ctx.virtual_directory_for_url(&url).path;
    match url.get(..prefix.len()) {
        Some(head) if prefix != "/" && head != prefix && head.eq_ignore_ascii_case(prefix) => {
            format!("{prefix}{}", &url[prefix.len()..])
        }
        _ => url,
    }
}

/// An authority's host (lowercase) and port (`default` when it has none);
/// `None` when the port is not a number.
fn host_and_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rfind(':') {
        // `[::1]` has colons of its own; a port follows its `]`.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl WebDav {
    /// The lock tokens the request submits in its `If` header, and whose they
    /// are, and its preconditions; 412 when these do not hold now, 400 when
    /// the `If` header does not parse.
    fn submitted(
        &self,
        ctx: &mut HttpContext,
        target: &Target,
    ) -> Result<(Held, Preconditions), Refusal> {
        // RFC 9110's own preconditions (§13.2.2) are evaluated with the
        // `If` header's, against the resource as it is now, and again when
        // the method runs: a client that read a file's ETag and writes it
        // back with `If-Match` must not overwrite a newer one, and
        // `If-None-Match: *` must not overwrite at all.
        let request = ctx.request();
        let mut headers = header::HeaderMap::new();
        for name in [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ] {
            for value in request.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let method = request.method().clone();
        let site = ctx.site().site_id;
        let principal = ctx.user().map_or("", |u| u.name()).to_owned();
        let if_header = match ctx.request().header("if").map(|v| v.to_str()) {
            None => None,
            Some(Ok(text)) => Some(IfHeader::parse(text).map_err(|e| refuse(400, e))?),
            Some(Err(_)) => return Err(refuse(400, "the If header is not text")),
        };
        let resources = match &if_header {
            Some(h) => self.if_resources(ctx, h, target),
            None => Vec::new(),
        };
        let tokens = if_header
            .as_ref()
            .map(|h| h.tokens().map(str::to_owned).collect())
            .unwrap_or_default();
        let preconditions = Preconditions {
            headers,
            method,
            if_header,
            resources,
        };
        preconditions.check(site, target)?;
        Ok((
            Held {
                site,
                principal,
                client: crate::ip_restriction::client_network(ctx.request().remote_address().ip()),
                tokens,
            },
            preconditions,
        ))
    }

    /// The resources an `If` header's lists are tagged with (`None`: the
    /// request's own), each once: its URL and its file.
    fn if_resources(
        &self,
        ctx: &mut HttpContext,
        h: &IfHeader,
        target: &Target,
    ) -> Vec<(Option<String>, String, PathBuf)> {
        let mut resources: Vec<(Option<String>, String, PathBuf)> = Vec::new();
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
                        .map_or_else(|_| path.to_owned(), |d| canonical(ctx, trimmed(&d)));
                    // Another resource is looked at as a request for it would
                    // be: through no link, and only where the user may read;
                    // else it has no entity tag here (its conditions fail).
                    let mapped = ctx.map_path(&url);
                    let folder = ctx.virtual_directory_for_url(&url).physical_path.clone();
                    let readable = self.may(ctx, &url, Need::Read).is_ok();
                    let plain = tree::real_folder(&folder)
                        .ok()
                        .and_then(|real| tree::plain_path(&folder, &real, &mapped))
                        .filter(|_| readable);
                    (url, plain.unwrap_or_default())
                }
            };
            resources.push((tag.clone(), url, path));
        }
        resources
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
        let config = ctx.config_shared(self.config);
        if let Some(rest) = self.listing.take() {
            // A part was flushed. A client that left gets no more, and the
            // answer ends short, never as a whole 207.
            if completion.status != 0 {
                ctx.response_mut().cut_short();
                return RequestNotificationStatus::Continue;
            }
            return match self.queue(ctx, Task::Listing(rest)) {
                Ok(()) => RequestNotificationStatus::Pending,
                Err(r) => self.next_part(ctx, Err(r)),
            };
        }
        if let Some(answered) = self.answered.take() {
            let outcome = answered.lock().unwrap_or_else(|e| e.into_inner()).take();
            // No outcome: the job was lost (a panic, logged by the thread).
            let outcome = outcome.unwrap_or_else(|| Err(refuse(500, "the method's work failed")));
            return self.finish(ctx, &config, outcome);
        }
        if self.receiving.is_none() {
            return RequestNotificationStatus::Continue;
        }
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
    registration.set_global_notifications(
        crate::StatusLines(|| format!("webdav_locks: {}\n", LOCKS.count())),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
    let threads = Arc::new(Background::with_threads(
        "riis-webdav",
        THREADS,
        QUEUED_JOBS,
        Job::run,
    ));
    let request_filtering =
        registration.share_section::<RequestFilteringConfig>("request_filtering")?;
    let authorization = registration.share_section::<AuthorizationConfig>("authorization")?;
    let anonymous =
        registration.share_section::<AnonymousAuthenticationConfig>("anonymous_authentication")?;
    let basic = registration.share_section::<BasicAuthenticationConfig>("basic_authentication")?;
    let ssl_access = registration.share_section::<AccessConfig>("access")?;
    let ip_security = registration.share_section::<IpSecurityConfig>("ip_security")?;
    let certificate_mapping = registration
        .share_section::<ClientCertificateMappingConfig>("client_certificate_mapping")?;
    registration.set_request_notifications(
        move || WebDav {
            config,
            request_filtering,
            authorization,
            anonymous,
            basic,
            ssl_access,
            ip_security,
            certificate_mapping,
            receiving: None,
            threads: threads.clone(),
            answered: None,
            listing: None,
            in_parts: false,
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
        assert_eq!(methods::href("/a b/c", true), "/a%20b/c/");
        assert_eq!(methods::href("/", true), "/");
        assert!(is_hidden("/a/.git/x"));
        assert!(!is_hidden("/a/b.c"));
    }
}
