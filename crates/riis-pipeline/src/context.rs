//! The request context (IIS's `IHttpContext`): everything a module reaches
//! while handling a notification.

use std::any::Any;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::completion::{CompletionHandle, CompletionState};
use crate::context_container::{ConnectionInfo, ModuleContextContainer, SharedContextContainer};
use crate::global::{TraceEvent, TracePhase};
use crate::handler::{MappingFailure, ResourceInfo, ResourceKind};
use crate::module::{HttpModule, ModuleError};
use crate::pipeline::{Location, Pipeline, Site, MAX_CHILD_REQUEST_DEPTH};
use crate::provider::{CustomNotificationProvider, MapPathProvider};
use crate::registration::{ModuleIndex, Section};
use crate::request::HttpRequest;
use crate::response::HttpResponse;
use crate::user::HttpUser;
use riis_notification::{RequestNotification, RequestNotificationStatus};

/// Flags of a child request (`EXECUTE_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecuteFlags {
    /// `EXECUTE_FLAG_BUFFER_RESPONSE`: the child's output stays in the shared
    /// response buffer instead of going to the client as it is flushed.
    pub buffer_response: bool,
    /// `EXECUTE_FLAG_DISABLE_CUSTOM_ERROR`: custom error pages leave the
    /// child's errors alone.
    pub disable_custom_error: bool,
    /// `EXECUTE_FLAG_SAME_URL`: allow the child to have the parent's URL
    /// (refused otherwise, as it usually means endless recursion).
    pub same_url: bool,
    /// `EXECUTE_FLAG_NO_HEADERS`: only the child's entity goes into the
    /// response: the status, error and headers are the parent's again when
    /// the child ends, and are what a send during the child sends (an
    /// include that must not turn the page into the included file's 304,
    /// 206 or `text/plain`). Such a send raises the parent's SendResponse
    /// modules, not the child's: the output is part of the parent's
    /// response, which they transform (compress, rewrite) as a whole. [`HttpContext::child_status`] still tells how
    /// the child ended.
    pub no_headers: bool,
    /// With `buffer_response`: from the child's first flush on (its
    /// module's, as an event stream or `response_buffer_limit = 0` asks, or
    /// the server's once the output held in memory outgrows its
    /// `response_buffer_limit`; files held as ranges do not count), its
    /// output goes to the client as it comes, as an unbuffered child's
    /// would. For a module that wants the child's answer whole when it
    /// ends without a flush (a default document, so that it has a
    /// `Content-Length` and may be cached) but must not hold a stream or a
    /// large one (a 10 GB export): it finds the headers sent when the
    /// child ends, and must not write after the child then. Not for a module that
    /// replaces the child's head afterwards (CustomError's pages). Inside
    /// a buffered child that does not allow it, it has no effect. Its
    /// sends raise the SendResponse modules of the request it is buffered
    /// into, as the send of its output would had it stayed buffered (a
    /// folder's default document is compressed as the folder's response,
    /// however long it streams), not its own. A riis extension: IIS has no
    /// such flag.
    pub stream_past_buffer_limit: bool,
    /// The child's URL is one the client may have chosen (a CGI program's
    /// local redirect, whose `Location` is often a `?next=` the client
    /// sent): rules that keep a location for the server's own requests
    /// (RequestFiltering's `internal`) and UrlRewrite's rules judge the
    /// child as the client's own request, and its `REQUEST_URI` and
    /// `UNENCODED_URL` are its own URL. A riis extension: IIS has no such
    /// flag.
    pub client_chosen_url: bool,
}

/// An asynchronous operation a module started during a call; the engine
/// performs it when the call returns.
pub(crate) enum AsyncOp {
    ReadEntity { max: usize },
    Child { child: Box<HttpContext> },
    PostCompletion { bytes: u64 },
}

/// A module instance slot. The instance is taken out while the module is
/// being called (so a notification it raises does not re-enter it) and put
/// back after; the state says whether it was ever created, and whether it
/// failed (a module that panicked or whose factory failed is not called
/// again for this request). Instance and state are separate fields so the
/// per-call take and put are plain pointer moves.
pub(crate) struct Slot {
    pub(crate) instance: Option<Box<dyn HttpModule>>,
    pub(crate) state: SlotState,
    /// The completion state behind this module's completion handles, made
    /// on its first `completion_handle`. One per module, not per request:
    /// a handle a module keeps can only resume that module's own waits,
    /// never the Pending of another module that parks the request later.
    pub(crate) completion: Option<Arc<CompletionState>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The request ends: handles its module kept learn that nobody
        // listens any more.
        if let Some(state) = &self.completion {
            state.detach();
        }
    }
}

/// The module call under way: the event is noted once per walk of an
/// event's list, the module before each call (the engine's hot loop writes
/// one `u16` per call instead of the whole triple).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Running {
    /// The index of the module being called, or [`NO_MODULE`] between
    /// calls (a sentinel rather than an `Option`: one store, not two).
    module: u16,
    /// The notification being raised (meaningful while a module is set).
    pub(crate) notification: RequestNotification,
    /// Whether it is the post-event.
    pub(crate) post: bool,
}

/// [`Running::module`] between calls. The pipeline refuses a module list
/// long enough for an index to reach it.
pub(crate) const NO_MODULE: u16 = u16::MAX;

impl Running {
    /// No call under way.
    pub(crate) const NONE: Running = Running {
        module: NO_MODULE,
        notification: RequestNotification::BeginRequest,
        post: false,
    };

    /// A call of `module` for `notification`.
    pub(crate) fn call(module: ModuleIndex, notification: RequestNotification, post: bool) -> Self {
        Running {
            module: module.0,
            notification,
            post,
        }
    }

    /// The module being called, if any.
    #[inline]
    pub(crate) fn module(self) -> Option<ModuleIndex> {
        (self.module != NO_MODULE).then_some(ModuleIndex(self.module))
    }

    /// Notes that `module` is being called for the current notification.
    #[inline]
    pub(crate) fn set_module(&mut self, module: ModuleIndex) {
        self.module = module.0;
    }

    /// Notes that no module is being called.
    #[inline]
    pub(crate) fn clear_module(&mut self) {
        self.module = NO_MODULE;
    }

    /// The call under way, if any.
    pub(crate) fn get(self) -> Option<(ModuleIndex, RequestNotification, bool)> {
        Some((self.module()?, self.notification, self.post))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    NotCreated,
    Created,
    Failed,
}

impl Slot {
    const NEW: Slot = Slot {
        instance: None,
        state: SlotState::NotCreated,
        completion: None,
    };
}

/// What is running now (`GetCurrentExecutionStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionStats<'a> {
    /// The notification being handled.
    pub notification: RequestNotification,
    /// Whether it is the post-event.
    pub is_post: bool,
    /// The module being called.
    pub module: &'a str,
}

/// The request context handed to every module call.
pub struct HttpContext {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) site: Arc<Site>,
    pub(crate) location: usize,
    pub(crate) connection: Arc<ConnectionInfo>,
    pub(crate) request: HttpRequest,
    pub(crate) response: HttpResponse,
    pub(crate) user: Option<HttpUser>,
    /// Before `slots`: a context dropped without `end_request` (a runtime
    /// shut down under it) cleans up its stored values before the modules
    /// that stored them are disposed, as `end_request` does.
    pub(crate) contexts: ModuleContextContainer,
    pub(crate) slots: Vec<Slot>,
    pub(crate) handler: Option<usize>,
    pub(crate) mapping_failure: Option<MappingFailure>,
    pub(crate) mapped: bool,
    pub(crate) request_handled: bool,
    /// A module failed in a nested notification (MapPath, ReadEntity,
    /// SendResponse, a custom notification): the request finishes when the
    /// current call returns.
    pub(crate) finish_requested: bool,
    /// The module that keeps a timeout of its own for what it waits on
    /// ([`HttpContext::set_own_timeout`]), `u16::MAX` for none.
    pub(crate) own_timeout: u16,
    pub(crate) physical_path: Option<PathBuf>,
    /// Where the script's part of the URL path ends, when the handler took
    /// the rest as PATH_INFO (`allow_path_info`): the physical path, and
    /// the probe of it, are the script's.
    pub(crate) script_end: Option<u32>,
    /// `physical_path` was mapped for a MapPath module, without its rewrite.
    pub(crate) physical_path_partial: bool,
    pub(crate) resource: Option<Option<ResourceInfo>>,
    /// [`HttpContext::set_answered_elsewhere`] was called.
    answered_elsewhere: bool,
    /// [`HttpContext::disable_user_cache`] was called.
    user_cache_disabled: bool,
    pub(crate) opened_file: Option<Arc<std::fs::File>>,
    pub(crate) cached_content: Option<bytes::Bytes>,
    pub(crate) op: Option<AsyncOp>,
    /// [`HttpContext::enable_full_duplex`] was called.
    pub(crate) full_duplex: bool,
    /// The client can no longer take this request's response (a send or
    /// body read failed for that, or its wait was abandoned); see
    /// [`HttpContext::is_client_connected`].
    pub(crate) client_gone: bool,
    /// A body read under way while its module waits for other news too
    /// (full duplex): the most bytes it asked for.
    pub(crate) duplex_read: Option<std::num::NonZeroUsize>,
    /// The module call under way, if any.
    pub(crate) current: Running,
    pub(crate) depth: u8,
    /// The location of the URL the client asked for, once a module
    /// rewrote the URL into another ([`NOT_REWRITTEN`] until then, and
    /// always in child requests).
    pub(crate) client_location: u32,
    pub(crate) execute_flags: ExecuteFlags,
    /// How the last child request this request ran ended (status,
    /// substatus); see [`HttpContext::child_status`].
    pub(crate) child_status: Option<(http::StatusCode, u16)>,
    pub(crate) skip_authentication: bool,
    pub(crate) server_variables: Vec<(Box<str>, String)>,
    pub(crate) request_id: u64,
    pub(crate) started: Instant,
    /// Values that live until the request ends ([`HttpContext::keep_until_request_end`]).
    pub(crate) kept: Vec<Box<dyn Any + Send>>,
    /// The client's connection after a 101, until a module takes it.
    pub(crate) upgraded: Option<crate::UpgradedStream>,
}

/// [`HttpContext::client_location`]'s value while the URL is the client's.
const NOT_REWRITTEN: u32 = u32::MAX;

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("request", &self.request)
            .field("status", &self.response.status)
            .field("depth", &self.depth)
            .finish()
    }
}

impl HttpContext {
    /// A context for a request that arrived on `connection` for `site`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        site: Arc<Site>,
        connection: Arc<ConnectionInfo>,
        request: HttpRequest,
        request_id: u64,
    ) -> Self {
        let location = site.location_index(request.url());
        let buffer_limit = pipeline.settings.response_buffer_limit;
        let slots = std::iter::repeat_with(|| Slot::NEW)
            .take(pipeline.modules.len())
            .collect();
        Self {
            pipeline,
            site,
            location,
            connection,
            request,
            response: HttpResponse::with_buffer_limit(buffer_limit),
            user: None,
            slots,
            contexts: ModuleContextContainer::default(),
            handler: None,
            mapping_failure: None,
            mapped: false,
            request_handled: false,
            finish_requested: false,
            own_timeout: u16::MAX,
            physical_path: None,
            script_end: None,
            physical_path_partial: false,
            resource: None,
            answered_elsewhere: false,
            user_cache_disabled: false,
            opened_file: None,
            cached_content: None,
            op: None,
            full_duplex: false,
            client_gone: false,
            duplex_read: None,
            current: Running::NONE,
            depth: 0,
            client_location: NOT_REWRITTEN,
            execute_flags: ExecuteFlags::default(),
            child_status: None,
            skip_authentication: false,
            server_variables: Vec::new(),
            request_id,
            started: Instant::now(),
            kept: Vec::new(),
            upgraded: None,
        }
    }

    /// `GetRequest`.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// `GetRequest`, mutable.
    pub fn request_mut(&mut self) -> &mut HttpRequest {
        &mut self.request
    }

    /// `GetResponse`.
    pub fn response(&self) -> &HttpResponse {
        &self.response
    }

    /// `GetResponse`, mutable.
    pub fn response_mut(&mut self) -> &mut HttpResponse {
        // An error status records the module and notification that set it;
        // they are noted here, when a module takes the response, rather
        // than before every module call.
        if let Some((module, notification, _)) = self.current.get() {
            self.response.current = (Some(module), notification.name());
        }
        &mut self.response
    }

    /// `GetUser`: the user an authentication module set, if any.
    pub fn user(&self) -> Option<&HttpUser> {
        self.user.as_ref()
    }

    /// Sets the request's user (authentication modules, at AuthenticateRequest).
    pub fn set_user(&mut self, user: HttpUser) {
        if let Some(replaced) = self.user.replace(user) {
            if replaced.role_check().is_some() {
                // A module's own user object: whoever read it during this
                // request may still use it (IIS releases users when the
                // request ends).
                self.keep_until_request_end(replaced);
            }
        }
    }

    /// The site's id, name and physical root (`GetSite`, `GetApplication`).
    pub fn site(&self) -> &crate::global::ApplicationInfo {
        self.site.info()
    }

    /// The location whose configuration applies to this request.
    #[inline]
    pub fn location(&self) -> &Location {
        if self.request.url_changed {
            // A BeginRequest module rewrote the URL during this event: the
            // new URL's location, before the engine records it.
            return self
                .site
                .location(self.site.location_index(self.request.url()));
        }
        self.site.location(self.location)
    }

    /// The virtual directory the request's URL maps into (IIS's
    /// `IMetadataInfo::GetVrPath`): a location's `physical_path`, or the
    /// site's root with path `/`. A module that keeps what it serves inside
    /// the folder the URL was mapped into (refusing links out of it, say)
    /// starts from here rather than from the site's root.
    pub fn virtual_directory(&self) -> &crate::VirtualDirectory {
        self.location()
            .virtual_directory()
            .unwrap_or(&self.site.root_directory)
    }

    /// Takes in a URL changed with `set_url`: the location is chosen again
    /// and what was found for the old URL (physical path, probe, open file)
    /// is forgotten.
    #[inline]
    pub(crate) fn sync_url(&mut self) {
        if self.request.url_changed {
            self.take_new_url();
        }
    }

    /// The pipeline starts (BeginRequest's modules are done, or the request
    /// skipped past them): a URL rewritten until now is taken in, and the
    /// URL is fixed from here on.
    #[inline]
    pub(crate) fn start_pipeline(&mut self) {
        if !self.request.pipeline_started {
            self.sync_url();
            self.request.pipeline_started = true;
        }
    }

    #[cold]
    fn take_new_url(&mut self) {
        self.request.url_changed = false;
        if self.client_location == NOT_REWRITTEN && self.url_is_clients() {
            // Only a client's request (or a child whose URL the client may
            // have chosen): another child's URL is a module's choice.
            self.client_location = u32::try_from(self.location).unwrap_or(NOT_REWRITTEN);
        }
        self.location = self.site.location_index(self.request.url());
        self.physical_path = None;
        self.script_end = None;
        self.physical_path_partial = false;
        self.resource = None;
        self.opened_file = None;
        self.cached_content = None;
    }

    /// Whether the request's first URL is the client's choice: a client's
    /// request, or a child whose URL the client may have chosen (a CGI
    /// local redirect's), which a rewrite must not lead past the settings
    /// of the location it asked for either.
    fn url_is_clients(&self) -> bool {
        self.depth == 0 || self.execute_flags.client_chosen_url
    }

    /// A module's configuration section resolved for this request's location.
    #[inline]
    pub fn config<T: Any + Send + Sync>(&self, section: Section<T>) -> &T {
        self.location().sections[section.id]
            .downcast_ref()
            .expect("a Section<T> handle always names a section of type T")
    }

    /// A module's configuration section resolved for the location of the
    /// URL the client asked for, before any module rewrote it; the same as
    /// [`HttpContext::config`] when nothing did (or in a child request).
    ///
    /// Access modules judge both and apply the stricter: a rewrite (a front
    /// controller's `/members/x` → `/index.php`) must not lead a client past
    /// the logon or the rules of the location it asked for, since the
    /// application then acts on the client's URL (`REQUEST_URI`).
    pub fn client_config<T: Any + Send + Sync>(&self, section: Section<T>) -> &T {
        let location = match self.client_location {
            // Until the engine takes a rewrite in (during BeginRequest), the
            // recorded location is still the client's.
            NOT_REWRITTEN if self.url_is_clients() => self.site.location(self.location),
            NOT_REWRITTEN => self.location(),
            index => self.site.location(index as usize),
        };
        location.sections[section.id]
            .downcast_ref()
            .expect("a Section<T> handle always names a section of type T")
    }

    /// A module's configuration section resolved for the location of
    /// another URL of this site (a decoded path such as
    /// [`crate::prepare_url_path`] gives): for a module that acts on a
    /// second URL besides the request's, as WebDAV's COPY and MOVE act on
    /// their `Destination`, and must judge it by that URL's settings.
    pub fn config_for_url<T: Any + Send + Sync>(&self, section: Section<T>, url: &str) -> &T {
        let url = crate::request::normalize_mapped_url(url);
        self.site.location(self.site.location_index(&url)).sections[section.id]
            .downcast_ref()
            .expect("a Section<T> handle always names a section of type T")
    }

    /// The path of the location another URL of this site falls in (`/`
    /// for the site itself; see [`HttpContext::config_for_url`]): for a
    /// module that reads a second URL relative to its location, as
    /// HttpRedirection follows where its redirects lead.
    pub fn location_path_for_url(&self, url: &str) -> &str {
        let url = crate::request::normalize_mapped_url(url);
        self.site.location(self.site.location_index(&url)).path()
    }

    /// The virtual directory another URL of this site maps into (see
    /// [`HttpContext::virtual_directory`] and
    /// [`HttpContext::config_for_url`]).
    pub fn virtual_directory_for_url(&self, url: &str) -> &crate::VirtualDirectory {
        let url = crate::request::normalize_mapped_url(url);
        self.site.virtual_directory(self.site.location_index(&url))
    }

    /// The paths of this site's locations that lie strictly below `url` (a
    /// decoded path): for a module that acts on a whole tree (WebDAV's
    /// DELETE, COPY and MOVE of a folder), which must judge each of them by
    /// its own settings too (see [`HttpContext::config_for_url`]).
    pub fn location_paths_below<'a>(&'a self, url: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.site
            .locations()
            .iter()
            .map(Location::path)
            .filter(move |path| {
                crate::request::path_below(url, path)
                    .is_some_and(|rest| !rest.is_empty() && rest != "/")
            })
    }

    /// The folders this site's URLs map into: its root and each virtual
    /// directory's (for a module that must not remove or replace one, as
    /// WebDAV's DELETE and MOVE must not).
    pub fn virtual_directories(&self) -> impl Iterator<Item = &crate::VirtualDirectory> + '_ {
        std::iter::once(&self.site.root_directory).chain(
            self.site
                .locations()
                .iter()
                .filter_map(Location::virtual_directory),
        )
    }

    /// [`HttpContext::config`] as a shared handle, for a module that goes on
    /// changing the context while it reads its configuration (one reference
    /// count, no copy).
    pub fn config_shared<T: Any + Send + Sync>(&self, section: Section<T>) -> Arc<T> {
        self.location().sections[section.id]
            .clone()
            .downcast()
            .unwrap_or_else(|_| {
                unreachable!("a Section<T> handle always names a section of type T")
            })
    }

    /// A unique id for the request, for logs and traces.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// When the request arrived (for time-taken).
    pub fn start_time(&self) -> Instant {
        self.started
    }

    /// Request-level module contexts (`GetModuleContextContainer`).
    pub fn module_contexts(&self) -> &ModuleContextContainer {
        &self.contexts
    }

    /// Request-level module contexts, mutable.
    pub fn module_contexts_mut(&mut self) -> &mut ModuleContextContainer {
        &mut self.contexts
    }

    /// Connection-level module contexts (`GetConnection()->GetModuleContextContainer`).
    pub fn connection_contexts(&self) -> &SharedContextContainer {
        &self.connection.contexts
    }

    /// Site-level module contexts (`GetSite()->GetModuleContextContainer`).
    pub fn site_contexts(&self) -> &SharedContextContainer {
        &self.site.contexts
    }

    /// The connection the request came on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// `IHttpConnection::IsConnected`: whether the client may still take
    /// this request's response. False once its connection closed, or once
    /// the server learned that the client left this request (a send or a
    /// body read failed for that, or the request was abandoned while a
    /// module waited; for HTTP/2 that is the stream's reset). A client that
    /// left unnoticed between two such moments still counts as connected,
    /// as IIS's answer is only as fresh as HTTP.sys's knowledge.
    pub fn is_client_connected(&self) -> bool {
        !self.client_gone && self.connection.is_connected()
    }

    /// The certificate the client presented in the connection's TLS
    /// handshake, verified against the site's `client_certificate_ca`
    /// (IIS's `IHttpRequest::GetClientCertificate`; the `CERT_*` server
    /// variables). Held by the connection: every request on it, child
    /// requests too, sees the same one.
    pub fn client_certificate(&self) -> Option<&crate::ClientCertificate> {
        self.connection.client_certificate.as_deref()
    }

    /// The handler chosen at MapRequestHandler, if any (`GetScriptMap` name).
    pub fn handler_name(&self) -> Option<&str> {
        let h = self.handler?;
        Some(&self.location().handlers[h].name)
    }

    /// Replaces the chosen handler by name; allowed during MapRequestHandler
    /// and its post-event. Returns false when the location has no such handler
    /// or it is too late.
    pub fn set_handler(&mut self, name: &str) -> bool {
        let in_map = matches!(
            self.current.get(),
            Some((_, RequestNotification::MapRequestHandler, _))
        );
        if !in_map {
            return false;
        }
        match self.location().handlers.iter().position(|h| h.name == name) {
            Some(i) => {
                self.handler = Some(i);
                self.mapping_failure = None;
                // A split into script and PATH_INFO stays only for a handler
                // that would have made it.
                let h = &self.location().handlers[i];
                let keeps = self.script_end.is_some()
                    && h.allow_path_info
                    && h.path.matches(self.script_name());
                if !keeps {
                    self.set_script_end(None);
                }
                true
            }
            None => false,
        }
    }

    /// `SetRequestHandled`: the handler produced the response; the handler's
    /// remaining modules are skipped at ExecuteRequestHandler, and the rest of
    /// the pipeline (state, cache, log) runs as usual. This is how a handler
    /// module ends handler execution without FinishRequest's skip to
    /// LogRequest.
    pub fn set_request_handled(&mut self) {
        self.request_handled = true;
    }

    /// Whether a handler module called [`HttpContext::set_request_handled`].
    pub fn is_request_handled(&self) -> bool {
        self.request_handled
    }

    /// The physical path of the request URL (`PATH_TRANSLATED`), mapped once
    /// and then remembered; MapPath modules may have changed it.
    pub fn physical_path(&mut self) -> &std::path::Path {
        self.sync_url();
        // A MapPath module that asks for the path itself is not re-entered
        // for it: what it gets lacks its own rewrite, and is mapped again
        // for everyone else (the handler's probe included).
        let partial = self.physical_path_partial && !self.caller_maps_paths();
        if self.physical_path.is_none() || partial {
            if partial {
                self.resource = None;
                self.opened_file = None;
                self.cached_content = None;
            }
            let path = match (self.pipeline.map_path.is_empty(), self.script_end) {
                // Nobody rewrites paths: no provider, no copy of the URL,
                // and the location is the request's own.
                (true, None) => self
                    .site
                    .virtual_directory(self.location)
                    .map(self.request.url()),
                // The script's part may lie in another location (and its
                // virtual directory).
                (true, Some(_)) => self.site.map_url(self.script_name()),
                (false, _) => {
                    let url = self.script_name().to_owned();
                    self.map_normalized_path(url)
                }
            };
            self.physical_path = Some(path);
            self.physical_path_partial = self.caller_maps_paths();
        }
        self.physical_path
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
    }

    /// The part of the URL path that names what the handler runs
    /// (`SCRIPT_NAME`): the whole path, unless the handler was chosen with
    /// `allow_path_info` for a leading part of it (`/index.php` of
    /// `/index.php/users/7`). The physical path is this part's.
    pub fn script_name(&self) -> &str {
        let url = self.request.url();
        match self.script_end {
            Some(end) => url.get(..end as usize).unwrap_or(url),
            None => url,
        }
    }

    /// What follows the script's part of the URL path (CGI's
    /// `PATH_INFO`, `/users/7` of `/index.php/users/7`), empty when the
    /// handler took the whole path. IIS's `PATH_INFO` server variable is
    /// the whole path then; see [`HttpContext::server_variable`].
    pub fn path_info(&self) -> &str {
        match self.script_end {
            Some(end) => self.request.url().get(end as usize..).unwrap_or(""),
            None => "",
        }
    }

    /// Makes the script's part of the URL end at `end` (`None`: the whole
    /// path), forgetting what was found for another part.
    pub(crate) fn set_script_end(&mut self, end: Option<usize>) {
        let end = end.and_then(|end| u32::try_from(end).ok());
        if end != self.script_end {
            self.script_end = end;
            self.physical_path = None;
            self.physical_path_partial = false;
            self.resource = None;
            self.opened_file = None;
            self.cached_content = None;
        }
    }

    /// What the physical path of the script ending at `end` (`None`: the
    /// whole URL path) is; the handler's choice asks.
    pub(crate) fn probe_script(&mut self, end: Option<usize>) -> Option<ResourceKind> {
        self.set_script_end(end);
        self.resource_kind()
    }

    /// Whether the module being called is one of MapPath's (and so skipped
    /// by the MapPath it raises).
    fn caller_maps_paths(&self) -> bool {
        self.current
            .module()
            .is_some_and(|m| self.pipeline.map_path.contains(&m))
    }

    /// The physical path of the request URL if it was mapped already (by
    /// [`HttpContext::physical_path`], or by the engine while choosing the
    /// handler); readable without a mutable borrow.
    pub fn mapped_path(&self) -> Option<&std::path::Path> {
        self.physical_path.as_deref()
    }

    /// What the request's physical path is (file with length and time, or
    /// directory), as the engine found it while choosing the handler; probed
    /// now if the handler did not need it. `None` when nothing is there.
    pub fn resource_info(&mut self) -> Option<ResourceInfo> {
        if self.answered_elsewhere {
            return None;
        }
        // Maps the path first: one mapped for a MapPath module alone is
        // mapped again here, and its probe forgotten.
        self.physical_path();
        if let Some(info) = self.resource {
            return info;
        }
        let path = self
            .physical_path
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        let probe = self.pipeline.fs.probe(path);
        let info = probe.as_ref().map(|p| p.info);
        if let Some(p) = probe {
            self.opened_file = p.file;
            self.cached_content = p.content;
        }
        self.resource = Some(info);
        info
    }

    /// For a handler that answers from elsewhere than the URL's physical
    /// path (another server, as ReverseProxy does): from now on
    /// [`Self::resource_info`] says nothing is there, so the modules that
    /// judge the response by the URL's file (OutputCache's
    /// `CacheUntilChange` and its folder rule, compression's file checks)
    /// do not take a file that happens to lie at that path for the
    /// answer's source.
    pub fn set_answered_elsewhere(&mut self) {
        self.answered_elsewhere = true;
    }

    /// Whether [`Self::set_answered_elsewhere`] was called: an output
    /// cache keeps it with the answer, and sets it again when it serves it.
    pub fn is_answered_elsewhere(&self) -> bool {
        self.answered_elsewhere
    }

    /// `IHttpCachePolicy::DisableUserCache`: this response must not be
    /// stored by an output cache, whatever its headers say. For an answer
    /// that a check decided for this client alone, which the response does
    /// not show (a file an application let this client download with
    /// `X-Accel-Redirect`: served from a cache, the next client would skip
    /// the check). A request that ran a child request has its user cache
    /// disabled when the child ends: its response holds the child's
    /// output, and a copy would skip the child's pipeline (the access rules
    /// of the child's location) and the changes of its file.
    pub fn disable_user_cache(&mut self) {
        self.user_cache_disabled = true;
    }

    /// Whether [`Self::disable_user_cache`] was called.
    pub fn is_user_cache_disabled(&self) -> bool {
        self.user_cache_disabled
    }

    /// Whether the request's physical path is there but the server may not
    /// open it (a permission error): a handler that found no resource then
    /// answers 403 rather than 404. Asks the file system each time.
    pub fn is_resource_denied(&mut self) -> bool {
        self.physical_path();
        let path = self
            .physical_path
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        self.pipeline.fs.is_denied(path)
    }

    /// The file the engine opened while probing the request's physical path,
    /// if no module took it yet: a static handler reads it without resolving
    /// the path a second time.
    pub fn take_opened_file(&mut self) -> Option<Arc<std::fs::File>> {
        self.opened_file.take()
    }

    /// The content of the request's file from the file system's cache, if
    /// the probe found it there and no module took it yet.
    pub fn take_cached_content(&mut self) -> Option<bytes::Bytes> {
        self.cached_content.take()
    }

    /// Whether the request's physical path is a file or a directory
    /// (see [`HttpContext::resource_info`]).
    pub fn resource_kind(&mut self) -> Option<ResourceKind> {
        self.resource_info().map(|i| i.kind)
    }

    /// `MapPath`: the physical path for a URL of this site. Modules registered
    /// for MapPath may replace it. The calling module is not re-entered for
    /// the MapPath it raises itself.
    pub fn map_path(&mut self, url: &str) -> PathBuf {
        // A URL a module built (a rewrite's intermediate result, say) may
        // hold `//`, `.` or `..`: mapped as the same URL of a request is.
        let url = crate::request::normalize_mapped_url(url);
        self.map_normalized_path(url.into_owned())
    }

    /// [`HttpContext::map_path`] of a URL already normalized (the
    /// request's own).
    fn map_normalized_path(&mut self, url: String) -> PathBuf {
        let mut provider = MapPathProvider {
            physical_path: self.site.map_url(&url),
            url,
        };
        let status = self.call_nested_list(
            |p| &p.map_path,
            RequestNotification::MapPath,
            true,
            0,
            |module, ctx, _| module.on_map_path(ctx, &mut provider),
        );
        self.finish_after_nested(status);
        provider.physical_path
    }

    /// *Inferred:* FinishRequest from a MapPath or custom notification
    /// (nothing waits there) ends the request once the call that raised it
    /// returns, with the response as the module left it, as a module's
    /// failure there does; the modules after it in that notification are not
    /// called. A native module whose layer caught a panic returns it so.
    fn finish_after_nested(&mut self, status: Option<RequestNotificationStatus>) {
        if status == Some(RequestNotificationStatus::FinishRequest) {
            self.finish_requested = true;
            self.response.attention = true;
        }
    }

    /// `NotifyCustomNotification`: every module registered for custom
    /// notifications receives `provider` and checks its type name. The
    /// calling module is not re-entered.
    pub fn raise_custom_notification(&mut self, provider: &mut dyn CustomNotificationProvider) {
        let status = self.call_nested_list(
            |p| &p.custom,
            RequestNotification::CustomNotification,
            true,
            0,
            |module, ctx, _| module.on_custom_request_notification(ctx, provider),
        );
        self.finish_after_nested(status);
    }

    /// `IHttpServer::NotifyCustomNotification`: the global counterpart.
    pub fn raise_global_custom_notification(&self, provider: &mut dyn CustomNotificationProvider) {
        self.pipeline.raise_global_custom_notification(provider);
    }

    /// Raises RscaQuery (a runtime status query) to the global modules
    /// registered for it, as `riis status` does: with the function
    /// `status`, the answer holds the server's figures and then each
    /// module's, one `name: value` line each. For a module that reports the
    /// server's state (the built-in `Metrics`).
    pub fn raise_rsca_query(&self, query: &mut crate::global::RscaQuery<'_>) {
        self.pipeline.raise_rsca_query(query);
    }

    /// `IHttpTraceContext::RaiseTraceEvent`: a module's own trace event, seen by
    /// global modules registered for TraceEvent.
    pub fn raise_trace_event(&self, message: &'static str) {
        if !self.pipeline.tracing {
            return;
        }
        if let Some((m, n, post)) = self.current.get() {
            self.pipeline.raise_trace(&TraceEvent {
                request_id: self.request_id,
                url: self.request.url(),
                module: self.pipeline.module_name(m),
                notification: n,
                is_post: post,
                phase: TracePhase::Custom { message },
            });
        }
    }

    /// Calls every module of a nondeterministic notification's list, raised
    /// from inside another call (a module that is busy, the caller, or
    /// failed is skipped), with one panic guard and one save of the
    /// caller's state for the whole list. What a nested call starts is
    /// refused; what the outer call started is kept for it. `list` picks the list
    /// from the pipeline (read again at each step, so no `Arc` is cloned to
    /// hold it). With `stop_at_finish`, a FinishRequest ends the walk.
    /// Returns the last module's status, if any module ran.
    pub(crate) fn call_nested_list(
        &mut self,
        list: impl Fn(&Pipeline) -> &[ModuleIndex],
        notification: RequestNotification,
        stop_at_finish: bool,
        start: usize,
        mut call: impl FnMut(&mut dyn HttpModule, &mut HttpContext, usize) -> RequestNotificationStatus,
    ) -> Option<RequestNotificationStatus> {
        if list(&self.pipeline).len() <= start {
            return None;
        }
        let saved = self.current;
        let outer = (self.op.is_some() || self.response.flush.is_some())
            .then(|| (self.op.take(), self.response.flush.take()));
        let mut running: Option<ModuleIndex> = None;
        // The running instance lives out here, so a panic does not drop it
        // while unwinding (a second panic in its Drop would abort).
        let mut held: Option<Box<dyn HttpModule>> = None;
        let mut last = None;
        let tracing = self.pipeline.tracing;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut i = start;
            while let Some(&m) = list(&self.pipeline).get(i) {
                let position = i;
                i += 1;
                let Some(module) = self.take_instance(m) else {
                    continue;
                };
                let module = held.insert(module);
                running = Some(m);
                self.current = Running::call(m, notification, false);
                let started = tracing.then(|| {
                    self.trace_call(m, notification, TracePhase::ModuleStart);
                    Instant::now()
                });
                let status = call(&mut **module, self, position);
                if let Some(started) = started {
                    let elapsed = started.elapsed();
                    self.trace_call(m, notification, TracePhase::ModuleEnd { status, elapsed });
                }
                if status == RequestNotificationStatus::Pending {
                    // Nothing waits in a nested notification (IIS's
                    // SendResponse, ReadEntity and MapPath never pend).
                    tracing::warn!(
                        module = %self.pipeline.module_name(m),
                        notification = notification.name(),
                        "Pending is not an answer this notification takes; taken as Continue"
                    );
                }
                // Empty while its module ran (see `walk_list`).
                std::mem::forget(
                    self.slots[m.get()]
                        .instance
                        .replace(held.take().expect("held")),
                );
                running = None;
                if self.op.is_some() || self.response.flush.is_some() {
                    self.refuse_nested_operation(m, notification);
                }
                last = Some(status);
                if stop_at_finish && status == RequestNotificationStatus::FinishRequest {
                    break;
                }
            }
        }));
        self.current = saved;
        if let (Err(_), Some(m)) = (&outcome, running) {
            if self.op.is_some() || self.response.flush.is_some() {
                self.refuse_nested_operation(m, notification);
            }
        }
        if let Some((op, flush)) = outer {
            self.op = op;
            self.response.flush = flush;
        }
        match outcome {
            Ok(()) => last,
            Err(panic) => {
                let m = running.expect("a panic in a nested walk comes from a module call");
                if let Some(instance) = held.take() {
                    let name = self.pipeline.module_name(m).to_owned();
                    drop_guarded(instance, || format!("module {name}'s instance"));
                }
                self.module_panicked(m, notification, false, false, &*panic);
                self.finish_requested = true;
                self.response.attention = true;
                Some(RequestNotificationStatus::FinishRequest)
            }
        }
    }

    /// A trace event for module `m`'s call in a nondeterministic
    /// notification (the deterministic ones are traced in `execution`).
    #[cold]
    fn trace_call(&self, m: ModuleIndex, notification: RequestNotification, phase: TracePhase) {
        self.pipeline.raise_trace(&TraceEvent {
            request_id: self.request_id,
            url: self.request.url(),
            module: self.pipeline.module_name(m),
            notification,
            is_post: false,
            phase,
        });
    }

    /// What a nested call started is not run: operations belong to the
    /// deterministic calls.
    #[cold]
    fn refuse_nested_operation(&mut self, m: ModuleIndex, notification: RequestNotification) {
        tracing::warn!(
            module = %self.pipeline.module_name(m),
            notification = %notification,
            "an operation started during a nested notification is ignored"
        );
        self.op = None;
        self.response.flush = None;
    }

    /// Takes module `m`'s instance out of its slot, creating it on first use.
    /// `None` when it is busy (being called) or failed.
    #[inline]
    pub(crate) fn take_instance(&mut self, m: ModuleIndex) -> Option<Box<dyn HttpModule>> {
        match self.slots[m.get()].instance.take() {
            Some(module) => Some(module),
            None => self.create_instance(m),
        }
    }

    /// [`HttpContext::take_instance`] for a slot with no instance: the
    /// module's first call in the request (made here), or a module busy or
    /// failed. Out of line, so the nested notifications' walks take an
    /// instance as cheaply as the events' walk does.
    #[cold]
    fn create_instance(&mut self, m: ModuleIndex) -> Option<Box<dyn HttpModule>> {
        let slot = &mut self.slots[m.get()];
        if slot.state != SlotState::NotCreated {
            // Busy (being called) or failed.
            return None;
        }
        let factory = self.pipeline.modules[m.get()].factory.as_ref()?;
        // A factory that panics fails the request like one that returns an
        // error, wherever the module is first called (a nested notification
        // included), instead of unwinding out of the engine.
        let created =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory.get_http_module()));
        let (hresult, why) = match created {
            Ok(Ok(module)) => {
                self.slots[m.get()].state = SlotState::Created;
                return Some(module);
            }
            Ok(Err(e)) => (e.hresult, e.message),
            Err(panic) => (
                ModuleError::E_FAIL,
                format!("its factory panicked: {}", panic_message(&*panic)),
            ),
        };
        self.slots[m.get()].state = SlotState::Failed;
        let name = self.pipeline.module_name(m).to_owned();
        tracing::error!(module = %name, error = %why, "module factory failed");
        self.fail_request(
            Some(m),
            "GetHttpModule",
            hresult,
            &format!("module {name} could not be created: {why}"),
        );
        // Also when the first call is a nested notification (MapPath,
        // ReadEntity, SendResponse, custom): the request finishes when the
        // current call returns.
        self.finish_requested = true;
        self.response.attention = true;
        None
    }

    pub(crate) fn module_panicked(
        &mut self,
        m: ModuleIndex,
        notification: RequestNotification,
        post: bool,
        in_completion: bool,
        panic: &(dyn Any + Send),
    ) {
        let mut failed = std::mem::replace(
            &mut self.slots[m.get()],
            Slot {
                instance: None,
                state: SlotState::Failed,
                completion: None,
            },
        );
        let message = panic_message(panic);
        let name = self.pipeline.module_name(m).to_owned();
        // An instance still in its slot (the panic came from changes its
        // thread sent, not from a call) goes with its Drop guarded too.
        if let Some(instance) = failed.instance.take() {
            drop_guarded(instance, || format!("module {name}'s instance"));
        }
        drop(failed);
        let event = if post {
            format!("Post{}", notification.name())
        } else {
            notification.name().to_owned()
        };
        // A completion is delivered for the event that pended.
        let when = if in_completion {
            format!("OnAsyncCompletion (of {event})")
        } else {
            event
        };
        tracing::error!(
            module = %name,
            notification = %when,
            url = %self.request.url(),
            panic = %message,
            "module panicked; the request fails with 500"
        );
        self.fail_request(
            Some(m),
            notification.name(),
            ModuleError::E_FAIL,
            &format!("module {name} panicked in {when}: {message}"),
        );
    }

    /// Replaces the response with a 500 naming the module, unless headers are
    /// already out (then the connection is closed after what was sent).
    pub(crate) fn fail_request(
        &mut self,
        module: Option<ModuleIndex>,
        notification: &'static str,
        hresult: u32,
        description: &str,
    ) {
        if self.response.headers_sent {
            self.response.cut_short();
            return;
        }
        self.response.clear();
        // The head the final send had given a Server header is gone with
        // the rest (a panic in SendResponse comes after it was added).
        if let Some(server) = &self.pipeline.settings.server_header {
            self.response
                .headers
                .insert(http::header::SERVER, server.clone());
        }
        self.response.status = http::StatusCode::INTERNAL_SERVER_ERROR;
        self.response.error = Some(crate::response::ResponseError {
            hresult,
            module,
            notification,
        });
        self.response.error_description = Some(description.to_owned());
    }

    /// The client's connection after this request's `101 Switching
    /// Protocols` went out, for the module that switched it: taken once,
    /// `None` before the 101 head was sent, after it was taken, and for
    /// requests that did not switch (see [`crate::UpgradedStream`]).
    ///
    /// The server switches a request only if it can: an HTTP/1.1 request
    /// with an `Upgrade` header and no body left unread (the connection's
    /// next bytes are the new protocol's). A 101 to any other request is
    /// refused by the server (a 500, logged), since the client did not ask
    /// for it (HTTP/2 has no 101 at all, RFC 9113 §8.6).
    pub fn take_upgraded_stream(&mut self) -> Option<crate::UpgradedStream> {
        self.upgraded.take()
    }

    /// Calls `watch` once the connection is done with this request's
    /// response: with the entity bytes it took and whether all of it went
    /// (see [`ResponseDelivery`](crate::ResponseDelivery)). The pipeline is
    /// over by then (the call comes after the final send, often after the
    /// request's module instances are disposed), so `watch` owns what it
    /// needs. It is called exactly once, on the connection's thread, also
    /// when the response never reached a connection (not whole, nothing
    /// sent); it should be quick and must not block. From a child request,
    /// the call is for the client's response.
    ///
    /// An access log uses it for the bytes and time of the delivery, as
    /// IIS logs them once HTTP.sys has sent the response, so that a
    /// download the client abandons is logged with what it got.
    pub fn on_response_delivered(
        &mut self,
        watch: impl FnOnce(crate::ResponseDelivery) + Send + 'static,
    ) {
        self.response.delivery.push(Box::new(watch));
    }

    /// Keeps `value` until the request ends (the lifetime of IIS's
    /// `IModuleAllocator` memory, for any owned value). It is dropped after
    /// the request's module contexts are cleaned up and its module instances
    /// disposed, so a stored context may point into it.
    pub fn keep_until_request_end(&mut self, value: impl Any + Send) {
        self.kept.push(Box::new(value));
    }

    /// The request ended. Request-scope module contexts are cleaned up
    /// first, while what they may point into still exists (memory a native
    /// module's instance allocated, values kept until the request end);
    /// then the module instances are disposed; then the kept values go.
    pub(crate) fn end_request(&mut self) {
        let pipeline = &self.pipeline;
        // Only asked for when a drop panicked; an index of another
        // pipeline's (a context moved between requests) must not panic here.
        let name = |i: usize| pipeline.module_names().nth(i).unwrap_or("?").to_owned();
        for (i, value) in self.contexts.drain() {
            drop_guarded(value, || format!("module {}'s request context", name(i)));
        }
        // One guard for all the instances (not one each: most drop nothing
        // but a zero-sized box); a drop that panics is named and the rest
        // are dropped after it.
        let mut slots = std::mem::take(&mut self.slots).into_iter().enumerate();
        let mut dropping = 0;
        while let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (i, slot) in &mut slots {
                dropping = i;
                drop(slot);
            }
        })) {
            tracing::error!(
                what = %format!("module {}'s instance", name(dropping)),
                panic = %panic_message(&*panic),
                "a module's value panicked while it was dropped"
            );
            // A payload may panic when dropped too: it is let go of unread.
            std::mem::forget(panic);
        }
        for value in std::mem::take(&mut self.kept) {
            drop_guarded(value, || "a value kept until the request end".to_owned());
        }
    }

    /// `CloneContext`: a context for a child request with the same method,
    /// URL, headers and user. Change its URL with
    /// [`HttpRequest::set_url`] before executing it.
    pub fn clone_context(&self) -> Result<HttpContext, ModuleError> {
        if self.depth >= MAX_CHILD_REQUEST_DEPTH {
            return Err(ModuleError::with_hresult(
                format!("child requests nest at most {MAX_CHILD_REQUEST_DEPTH} deep"),
                ModuleError::E_NOT_SUPPORTED,
            ));
        }
        let mut child = HttpContext::new(
            self.pipeline.clone(),
            self.site.clone(),
            self.connection.clone(),
            self.request.clone_for_child(),
            self.request_id,
        );
        child.depth = self.depth + 1;
        child.user = self.user.clone();
        child.client_gone = self.client_gone;
        Ok(child)
    }

    /// [`HttpContext::clone_context`] with the child's URL (path and query)
    /// set: the usual start of a child request for another URL.
    pub fn clone_context_with_url(&self, path_and_query: &str) -> Result<HttpContext, ModuleError> {
        let mut child = self.clone_context()?;
        child.request.set_url(path_and_query).map_err(|e| {
            ModuleError::with_hresult(
                format!("`{path_and_query}`: {e}"),
                ModuleError::E_INVALIDARG,
            )
        })?;
        Ok(child)
    }

    /// `ExecuteRequest`: run `child` through the whole pipeline when the calling
    /// module returns. With a Pending return, the module's OnAsyncCompletion
    /// follows the child's end. The child runs its AuthenticateRequest
    /// (starting from the user the clone copied); see
    /// [`HttpContext::execute_request_as`] to skip it.
    pub fn execute_request(
        &mut self,
        child: HttpContext,
        flags: ExecuteFlags,
    ) -> Result<(), ModuleError> {
        self.start_child(child, flags, None)
    }

    /// `ExecuteRequest` with `pHttpUser`: the child runs as `user`, and its
    /// AuthenticateRequest and PostAuthenticateRequest are skipped, as IIS
    /// skips authentication for a child given a user.
    pub fn execute_request_as(
        &mut self,
        child: HttpContext,
        flags: ExecuteFlags,
        user: HttpUser,
    ) -> Result<(), ModuleError> {
        self.start_child(child, flags, Some(user))
    }

    fn start_child(
        &mut self,
        mut child: HttpContext,
        flags: ExecuteFlags,
        user: Option<HttpUser>,
    ) -> Result<(), ModuleError> {
        self.not_nested()?;
        if child.depth == 0 {
            return Err(ModuleError::with_hresult(
                "only a context from clone_context can run as a child request",
                ModuleError::E_INVALIDARG,
            ));
        }
        if !Arc::ptr_eq(&child.pipeline, &self.pipeline) || child.request_id != self.request_id {
            // A clone of another request (kept by a module from an earlier
            // one, or from before a reload): its module slots and site are
            // not this request's.
            return Err(ModuleError::with_hresult(
                "only a clone of this request's context can run as its child request",
                ModuleError::E_INVALIDARG,
            ));
        }
        if child.op.is_some() || child.finish_requested || child.response.flush.is_some() {
            // Started on the clone before it ran (a body read, a flush, a
            // failed MapPath): nothing of the child's own pipeline could own
            // it.
            return Err(ModuleError::with_hresult(
                "an operation was started on the clone before it was executed",
                ModuleError::E_INVALIDARG,
            ));
        }
        // The depth is this request's, not the one the clone was made at: a
        // clone kept from a shallower request must not reset the count.
        if self.depth >= MAX_CHILD_REQUEST_DEPTH {
            return Err(ModuleError::with_hresult(
                format!("child requests nest at most {MAX_CHILD_REQUEST_DEPTH} deep"),
                ModuleError::E_NOT_SUPPORTED,
            ));
        }
        child.depth = self.depth + 1;
        if !flags.same_url && child.request.raw_url() == self.request.raw_url() {
            return Err(ModuleError::with_hresult(
                "a child request with the parent's URL needs ExecuteFlags::same_url",
                ModuleError::E_INVALIDARG,
            ));
        }
        self.no_operation_started()?;
        child.location = child.site.location_index(child.request.url());
        // The child's URL is the module's, not the client's; one the client
        // may have chosen is its, as a new request's would be.
        child.client_location = NOT_REWRITTEN;
        if flags.client_chosen_url {
            child.request.take_url_as_clients();
        }
        if let Some(user) = user {
            child.user = Some(user);
            child.skip_authentication = true;
        }
        child.execute_flags = flags;
        self.op = Some(AsyncOp::Child {
            child: Box::new(child),
        });
        self.response.attention = true;
        Ok(())
    }

    /// One asynchronous operation per call: a second one (or one after an
    /// asynchronous flush, whose completion would be taken for it) is
    /// refused.
    fn no_operation_started(&self) -> Result<(), ModuleError> {
        self.not_nested()?;
        if self.op.is_some() || self.response.flush.is_some_and(|f| f.asynchronous) {
            return Err(ModuleError::with_hresult(
                "another asynchronous operation is already started in this call",
                ModuleError::E_INVALIDARG,
            ));
        }
        Ok(())
    }

    /// Whether the module being called is in a nondeterministic
    /// notification (SendResponse, ReadEntity, MapPath, a custom one),
    /// raised from inside the pipeline's work rather than as a step of it.
    /// Nothing waits there, so no asynchronous operation (body read, post,
    /// child request, flush) can be started from it.
    pub fn in_nested_notification(&self) -> bool {
        self.current
            .get()
            .is_some_and(|(_, notification, _)| notification.stage().is_none())
    }

    /// Refuses an operation started from a nested notification, up front:
    /// accepted and dropped later, it would leave the module waiting for a
    /// completion that never comes (or, for a native read, write the bytes
    /// of the read already under way into the wrong buffer).
    fn not_nested(&self) -> Result<(), ModuleError> {
        if self.in_nested_notification() {
            return Err(ModuleError::with_hresult(
                "no asynchronous operation can be started in a nested notification (SendResponse, ReadEntity, MapPath, custom)",
                ModuleError::E_INVALID_STATE,
            ));
        }
        Ok(())
    }

    /// `ReadEntityBody` (asynchronous): read up to `max` body bytes when the
    /// calling module returns. Return Pending; OnAsyncCompletion then gets the
    /// byte count and [`HttpRequest::read_data`] the bytes (0 at the end of the
    /// body). ReadEntity modules see the bytes first. A read asked for after
    /// one completed empty fails with [`ModuleError::E_HANDLE_EOF`] (unless
    /// a module inserted bytes since), as in IIS.
    ///
    /// In full duplex ([`HttpContext::enable_full_duplex`]) the read may go
    /// with an asynchronous flush of the same call, and fails only while an
    /// earlier read is still under way.
    pub fn read_entity_body(&mut self, max: usize) -> Result<(), ModuleError> {
        if self.full_duplex {
            self.not_nested()?;
            if self.op.is_some() || self.duplex_read.is_some() {
                return Err(ModuleError::with_hresult(
                    "a body read is already under way",
                    ModuleError::E_INVALIDARG,
                ));
            }
        } else {
            self.no_operation_started()?;
        }
        if self.request.end_delivered && self.request.is_body_complete() {
            // A reader that missed the empty completion (or ignores it)
            // would otherwise read empty for ever, one completion at a
            // time; IIS fails such a read at once.
            return Err(ModuleError::with_hresult(
                "the request body has been read to its end",
                ModuleError::E_HANDLE_EOF,
            ));
        }
        self.op = Some(AsyncOp::ReadEntity { max: max.max(1) });
        self.response.attention = true;
        Ok(())
    }

    /// `PostCompletion`: re-enter this module through OnAsyncCompletion with
    /// `bytes` once it returns Pending.
    pub fn post_completion(&mut self, bytes: u64) -> Result<(), ModuleError> {
        self.no_operation_started()?;
        self.op = Some(AsyncOp::PostCompletion { bytes });
        self.response.attention = true;
        Ok(())
    }

    /// A handle to resume this request from another thread after returning
    /// Pending (`IndicateCompletion`, or `PostCompletion` from any thread).
    ///
    /// The handle belongs to the module being called: it resumes only a
    /// wait of that module. A handle taken outside a module's call (in a
    /// global notification) belongs to no module and resumes nothing.
    pub fn completion_handle(&mut self) -> CompletionHandle {
        let state = match self.current.module() {
            Some(m) => self.slots[m.get()]
                .completion
                .get_or_insert_with(|| {
                    Arc::new(CompletionState::new(self.connection.liveness().clone()))
                })
                .clone(),
            None => Arc::default(),
        };
        CompletionHandle::new(state)
    }

    /// `GetCurrentExecutionStats`: the notification and module running now.
    pub fn current_execution_stats(&self) -> Option<ExecutionStats<'_>> {
        let (m, notification, is_post) = self.current.get()?;
        Some(ExecutionStats {
            notification,
            is_post,
            module: self.pipeline.module_name(m),
        })
    }

    /// The id of the module being called, for its module contexts.
    pub fn current_module(&self) -> Option<ModuleIndex> {
        self.current.module()
    }

    /// `GetIsLastNotification`: whether, if the current module returns
    /// `status`, no module is left to run for any later deterministic
    /// notification of this request.
    pub fn is_last_notification(&self, status: RequestNotificationStatus) -> bool {
        let Some((_, n, post)) = self.current.get() else {
            return true;
        };
        let Some(stage) = n.stage() else {
            return false;
        };
        let log = RequestNotification::LogRequest.stage().unwrap_or(10);
        let next = if post {
            (stage + 1, false)
        } else {
            (stage, true)
        };
        let from = if status == RequestNotificationStatus::FinishRequest && stage < log {
            (log, false)
        } else {
            next
        };
        let execute = RequestNotification::ExecuteRequestHandler
            .stage()
            .unwrap_or(7);
        let map = RequestNotification::MapRequestHandler.stage().unwrap_or(4);
        (from.0..12).all(|s| {
            let lists = &self.pipeline.events[s];
            // At ExecuteRequestHandler only the chosen handler's modules run;
            // before MapRequestHandler chose one, any of the location's may.
            let main_list_empty = if s == execute {
                let handlers = &self.location().handlers;
                self.request_handled
                    || match self.handler {
                        Some(h) => handlers[h].modules.is_empty(),
                        None if stage < map => handlers.iter().all(|h| h.modules.is_empty()),
                        None => true,
                    }
            } else {
                lists[0].is_empty()
            };
            let main_empty = (s, false) < from || main_list_empty;
            main_empty && lists[1].is_empty()
        })
    }

    /// Says that the module being called keeps a timeout of its own
    /// (ReverseProxy's `timeout`, FastCgi's `request_timeout`) and ends
    /// its waits itself: the server's `timeouts.execution` then no longer
    /// applies to this module's waits in this request (other modules'
    /// still get it), as ASP.NET's `executionTimeout` does not apply to
    /// ARR. A module that calls this must end every wait it starts.
    pub fn set_own_timeout(&mut self) {
        if let Some(module) = self.current_module() {
            self.own_timeout = module.0;
        }
    }

    /// `IHttpContext3::EnableFullDuplex`: from now on a module of this
    /// request may keep one body read under way while it sends and waits
    /// for other news, as a proxy of a bidirectional stream (gRPC) or of
    /// any body that the server answers while it still arrives must.
    ///
    /// The module returns Pending with the read started and its completion
    /// handle taken ([`HttpContext::completion_handle`]); the read then
    /// completes on its own, through OnAsyncCompletion with
    /// [`CompletedOperation::Read`](crate::CompletedOperation::Read),
    /// while the module's handle, its flushes
    /// ([`CompletedOperation::Write`](crate::CompletedOperation::Write))
    /// and its other operations complete in between. A read and an
    /// asynchronous flush may be started in the same call: the flush's
    /// completion comes first. Returning anything but Pending gives up a
    /// read still under way (its bytes stay for the next reader).
    ///
    /// Without a completion handle a Pending module waits for its read
    /// alone, as without full duplex.
    pub fn enable_full_duplex(&mut self) {
        self.full_duplex = true;
    }

    /// Whether [`HttpContext::enable_full_duplex`] was called.
    pub fn is_full_duplex(&self) -> bool {
        self.full_duplex
    }

    /// The nesting depth: 0 for a client's request, 1 for its child, ….
    pub fn child_depth(&self) -> u8 {
        self.depth
    }

    /// The flags the request was executed with (child requests).
    pub fn execute_flags(&self) -> ExecuteFlags {
        self.execute_flags
    }

    /// The status and substatus the last child request this request ran
    /// ([`HttpContext::execute_request`]) ended with, once it completed;
    /// with [`ExecuteFlags::no_headers`] too, where the response's own
    /// status is the parent's again.
    pub fn child_status(&self) -> Option<(http::StatusCode, u16)> {
        self.child_status
    }

    /// `GetServerVariable`, under the IIS names.
    pub fn server_variable(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some((_, v)) = self
            .server_variables
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return Some(Cow::Borrowed(v));
        }
        crate::server_variables::lookup(self, name)
    }

    /// `SetServerVariable`: set or override a variable for later modules.
    pub fn set_server_variable(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .server_variables
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.server_variables.push((name.into(), value)),
        }
    }

    /// The pipeline this request runs in.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The pipeline this request runs in, shared: a value that holds it
    /// keeps the configuration's modules from being stopped (a reload stops
    /// a replaced configuration once nothing holds its pipeline).
    pub fn pipeline_handle(&self) -> Arc<Pipeline> {
        self.pipeline.clone()
    }
}

/// Drops `value` (a module's instance, one of its stored contexts, a value
/// it kept until the request end), catching a panic in its `Drop`: one
/// module's bad `Drop` must not end the connection, nor, while another
/// panic unwinds, the process. The panic is logged with `what` names.
pub(crate) fn drop_guarded<T>(value: T, what: impl FnOnce() -> String) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
    {
        tracing::error!(
            what = %what(),
            panic = %panic_message(&*panic),
            "a module's value panicked while it was dropped"
        );
        // A payload may panic when dropped too: it is let go of unread.
        std::mem::forget(panic);
    }
}

/// The text a panic carried, for logs and error pages.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}
