//! The built pipeline: the module list, the dispatch tables computed once per
//! configuration, the sites with their resolved locations, and the global
//! notifications raised at server level.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;

use crate::context_container::SharedContextContainer;
use crate::global::{Application, ApplicationInfo, TraceEvent};
use crate::handler::{FileSystem, HandlerMapping, NoFileSystem, PathPattern, ResourceType};
use crate::module::ModuleError;
use crate::provider::CustomNotificationProvider;
use crate::registration::{
    ModuleEntry, ModuleIndex, ModuleRegistration, SectionDeclaration, ServerInfo, SERVER_VERSION,
};
use riis_notification::{
    GlobalNotification, GlobalNotificationStatus, RequestNotification, RequestNotifications,
};

/// The most nested child requests allowed (IIS's limit).
pub const MAX_CHILD_REQUEST_DEPTH: u8 = 10;

/// Engine settings that are not per location.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Bytes of in-memory entity a response buffers before it is flushed on
    /// its own (IIS's `responseBufferLimit`, 4 MiB by default).
    pub response_buffer_limit: usize,
    /// The `Server` header added to every response that has none when its
    /// headers go out (before SendResponse, so modules may remove it);
    /// `None` adds nothing.
    pub server_header: Option<http::HeaderValue>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            response_buffer_limit: 4 * 1024 * 1024,
            server_header: Some(http::HeaderValue::from_static(concat!(
                "riis/",
                env!("CARGO_PKG_VERSION")
            ))),
        }
    }
}

/// A configuration error found while building the pipeline: the dotted key
/// path it concerns (`sites[0].locations[1].static_file.max_age`), which the
/// configuration loader turns into a file and line, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// Dotted key path in the configuration, empty when the error is not about
    /// one key.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The module the error is about, when it is about one: a loader whose
    /// `key` is in no file (a default the server supplied) can point at
    /// the module's entry instead.
    pub module: Option<String>,
}

impl BuildError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            module: None,
        }
    }

    /// The error is about module `name`.
    fn about_module(mut self, name: &str) -> Self {
        self.module = Some(name.to_owned());
        self
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for BuildError {}

/// One occurrence of a module's configuration section.
#[derive(Clone, Debug)]
pub struct SectionSource {
    /// The section name (a table key).
    pub name: String,
    /// Its value.
    pub value: toml::Value,
    /// The dotted key path of the table, for errors.
    pub key: String,
}

/// A handler mapping as configured.
#[derive(Clone, Debug)]
pub struct HandlerDefinition {
    /// Name shown in traces and error pages.
    pub name: String,
    /// Path pattern (`*`, `*.php`, `/api/*`).
    pub path: String,
    /// Methods, or `["*"]` for all.
    pub verbs: Vec<String>,
    /// `File`, `Directory`, `Either` or `Unspecified`.
    pub resource_type: String,
    /// Names of the modules that run at ExecuteRequestHandler, in order.
    pub modules: Vec<String>,
    /// IIS's `allowPathInfo`: the handler also takes a URL whose leading
    /// part its pattern names (`/index.php/users/7` for `*.php`), the rest
    /// being PATH_INFO.
    pub allow_path_info: bool,
    /// The dotted key path of the entry, for errors.
    pub key: String,
}

/// A `location` block: configuration for URLs under a path prefix.
#[derive(Clone, Debug, Default)]
pub struct LocationDefinition {
    /// The prefix (`/api`); matches `/api` and `/api/…`, not `/apix`.
    pub path: String,
    /// Handlers replacing the inherited list, if given.
    pub handlers: Option<Vec<HandlerDefinition>>,
    /// The folder the location's URLs map to, when it is a virtual
    /// directory (absolute; the loader checks that it is a folder).
    pub physical_path: Option<PathBuf>,
    /// Module sections set here.
    pub sections: Vec<SectionSource>,
    /// The dotted key path of the block, for errors.
    pub key: String,
}

/// A site as configured.
#[derive(Clone, Debug, Default)]
pub struct SiteDefinition {
    /// Site id (IIS's `INSTANCE_ID`).
    pub id: u32,
    /// Site name.
    pub name: String,
    /// Physical root folder.
    pub physical_root: PathBuf,
    /// Handlers replacing the server's list, if given.
    pub handlers: Option<Vec<HandlerDefinition>>,
    /// Module sections set for the whole site.
    pub sections: Vec<SectionSource>,
    /// Locations inside the site.
    pub locations: Vec<LocationDefinition>,
    /// The dotted key path of the site, for errors.
    pub key: String,
}

/// A virtual directory (IIS's `<virtualDirectory>`, nginx's `alias`): the
/// URLs under `path` map into `physical_path` instead of the site's root.
#[derive(Debug)]
pub struct VirtualDirectory {
    /// The URL prefix, without a trailing `/` (`/images`), or `/` for the
    /// site's root.
    pub path: String,
    /// The folder the prefix maps to.
    pub physical_path: PathBuf,
}

impl VirtualDirectory {
    /// The physical path of `url`, a URL under this directory's path.
    pub fn map(&self, url: &str) -> PathBuf {
        let rest = if self.path == "/" {
            url
        } else {
            // The URL may spell the path otherwise (see `path_below`).
            crate::request::path_below(&self.path, url).unwrap_or("")
        };
        join_root(&self.physical_path, rest)
    }
}

/// `root` joined with a URL path (decoded and normalized, so it holds no
/// `..`); the root itself for `/` or an empty path.
fn join_root(root: &Path, url: &str) -> PathBuf {
    let relative = url.trim_start_matches('/');
    if relative.is_empty() {
        root.to_path_buf()
    } else {
        // `root.join(relative)`, with the room for both reserved at once:
        // `join` copies the root and then grows the copy.
        let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + relative.len());
        path.push(root);
        path.push(relative);
        path
    }
}

/// Configuration resolved for one location of one site.
pub struct Location {
    pub(crate) path: String,
    pub(crate) handlers: Arc<[HandlerMapping]>,
    /// A handler of the list has `allow_path_info`: choosing one may look
    /// at several paths.
    pub(crate) splits_paths: bool,
    pub(crate) sections: Box<[Arc<dyn Any + Send + Sync>]>,
    /// The virtual directory the location's URLs map into: its own, or the
    /// nearest enclosing location's; `None` for the site's root.
    pub(crate) virtual_directory: Option<Arc<VirtualDirectory>>,
}

impl Location {
    /// The location's path prefix (`/` for the site itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The virtual directory this location's URLs map into, if it is not
    /// the site's root.
    pub fn virtual_directory(&self) -> Option<&VirtualDirectory> {
        self.virtual_directory.as_deref()
    }

    /// The handler list that applies here.
    pub fn handlers(&self) -> &[HandlerMapping] {
        &self.handlers
    }

    fn covers(&self, url: &str) -> bool {
        covers(&self.path, url)
    }
}

fn covers(prefix: &str, url: &str) -> bool {
    // The site's root covers every request's path: asked for every
    // request, so answered without looking at the path.
    prefix == "/" || crate::request::path_below(prefix, url).is_some()
}

/// A site: its root, its locations (most specific first) and its module
/// context container.
pub struct Site {
    pub(crate) info: ApplicationInfo,
    /// Most specific first; the last one is the site root `/`.
    pub(crate) locations: Vec<Location>,
    pub(crate) contexts: SharedContextContainer,
    /// The site's root as a virtual directory (`/`), for
    /// [`Site::virtual_directory`].
    pub(crate) root_directory: VirtualDirectory,
    /// Whether any location is a virtual directory: if none is, a URL
    /// maps without looking for its location.
    pub(crate) has_virtual_directories: bool,
}

impl Site {
    /// Id, name and physical root.
    pub fn info(&self) -> &ApplicationInfo {
        &self.info
    }

    /// The index of the location that applies to `url`.
    pub fn location_index(&self, url: &str) -> usize {
        self.locations
            .iter()
            .position(|l| l.covers(url))
            .unwrap_or(self.locations.len() - 1)
    }

    /// The locations, most specific first; the last is the site's root.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// A location by index.
    pub fn location(&self, index: usize) -> &Location {
        &self.locations[index]
    }

    /// The virtual directory of the location at `index`: a location's
    /// `physical_path`, or the site's root (path `/`).
    pub fn virtual_directory(&self, index: usize) -> &VirtualDirectory {
        self.locations[index]
            .virtual_directory
            .as_deref()
            .unwrap_or(&self.root_directory)
    }

    /// The physical path of `url` (decoded and normalized), before MapPath
    /// modules: under the virtual directory that holds it, else under the
    /// site's root.
    pub fn map_url(&self, url: &str) -> PathBuf {
        if !self.has_virtual_directories {
            return join_root(&self.info.physical_root, url);
        }
        self.virtual_directory(self.location_index(url)).map(url)
    }
}

/// `path` with each `%` that does not start an escape (two hexadecimal
/// digits) written as `%25`, so decoding gives it back.
fn escape_lone_percents(path: &str) -> std::borrow::Cow<'_, str> {
    let bytes = path.as_bytes();
    let starts_escape = |i: usize| {
        bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit()
    };
    if !(0..bytes.len()).any(|i| bytes[i] == b'%' && !starts_escape(i)) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for (i, c) in path.char_indices() {
        if c == '%' && !starts_escape(i) {
            out.push_str("%25");
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The per-configuration pipeline: modules, dispatch tables, sites.
///
/// Built once per configuration by [`PipelineBuilder`]; shared by every
/// request through an `Arc`. Nothing in it changes while requests run.
pub struct Pipeline {
    pub(crate) modules: Box<[ModuleEntry]>,
    /// `[stage][post]`: modules in dispatch order.
    pub(crate) events: [[Box<[ModuleIndex]>; 2]; 12],
    /// For each event position (`stage * 2 + post`, 24 is the final send),
    /// the first position at or after it with work: modules to call, or
    /// the engine's own work at MapRequestHandler (choosing the handler)
    /// and ExecuteRequestHandler (the handler's modules). The engine jumps
    /// over the events in between instead of entering each.
    pub(crate) next_busy: [u8; 25],
    /// SendResponse order: inverted priority.
    pub(crate) send_response: Box<[ModuleIndex]>,
    pub(crate) read_entity: Box<[ModuleIndex]>,
    pub(crate) map_path: Box<[ModuleIndex]>,
    pub(crate) custom: Box<[ModuleIndex]>,
    /// Global modules per global notification, in dispatch order.
    pub(crate) global: [Box<[ModuleIndex]>; 15],
    pub(crate) sections: Vec<SectionDeclaration>,
    pub(crate) sites: Vec<Arc<Site>>,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) settings: PipelineSettings,
    /// Whether any global module listens for TraceEvent; timing is taken only then.
    pub(crate) tracing: bool,
    /// The server's figures, first in a `status` query's answer.
    pub(crate) server_status: Option<Arc<dyn crate::global::ServerStatus>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("modules", &self.module_names().collect::<Vec<_>>())
            .field("sites", &self.sites.len())
            .finish()
    }
}

impl Pipeline {
    /// Module names in list order.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|m| &*m.name)
    }

    /// The name of a module.
    pub fn module_name(&self, index: ModuleIndex) -> &str {
        &self.modules[index.get()].name
    }

    /// The modules that run for a deterministic notification, in order.
    pub fn dispatch_order(&self, notification: RequestNotification, post: bool) -> Vec<&str> {
        let list: &[ModuleIndex] = match (notification.stage(), notification) {
            (Some(stage), _) => &self.events[stage][post as usize],
            (None, RequestNotification::SendResponse) => &self.send_response,
            (None, RequestNotification::ReadEntity) => &self.read_entity,
            (None, RequestNotification::MapPath) => &self.map_path,
            (None, _) => &self.custom,
        };
        list.iter().map(|m| self.module_name(*m)).collect()
    }

    /// The configuration sections modules declared, with the declaring module.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sections
            .iter()
            .map(|s| (s.name.as_str(), s.module.as_str()))
    }

    /// The value of section `name` resolved for `location`, when a module
    /// declared it with type `T`: what a request there reads through the
    /// declaring module's [`crate::Section`]. For checks of a whole
    /// configuration (`riis check-config`'s warnings), not for requests.
    pub fn section_at<'a, T: 'static>(&self, location: &'a Location, name: &str) -> Option<&'a T> {
        let id = self.sections.iter().position(|s| s.name == name)?;
        location.sections.get(id)?.downcast_ref::<T>()
    }

    /// The sites, in configuration order.
    pub fn sites(&self) -> &[Arc<Site>] {
        &self.sites
    }

    /// Engine settings.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Calls global modules in order until one returns Handled. A module
    /// that panics is logged and skipped (the next one still runs); the
    /// first one that panicked is returned.
    pub(crate) fn raise_global(
        &self,
        n: GlobalNotification,
        mut call: impl FnMut(&dyn crate::module::GlobalModule) -> GlobalNotificationStatus,
    ) -> Option<ModuleIndex> {
        self.raise_global_indexed(n, |_, m| call(m))
    }

    /// [`Pipeline::raise_global`], telling each call which module it is.
    fn raise_global_indexed(
        &self,
        n: GlobalNotification,
        mut call: impl FnMut(ModuleIndex, &dyn crate::module::GlobalModule) -> GlobalNotificationStatus,
    ) -> Option<ModuleIndex> {
        let mut panicked = None;
        for &index in self.global[n.index()].iter() {
            let Some(module) = self.modules[index.get()].global.as_ref() else {
                continue;
            };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(index, &**module)));
            match outcome {
                Ok(GlobalNotificationStatus::Handled) => break,
                Ok(GlobalNotificationStatus::Continue) => {}
                Err(panic) => {
                    let message = crate::context::panic_message(&*panic);
                    tracing::error!(
                        module = %self.module_name(index),
                        notification = n.name(),
                        panic = %message,
                        "global module panicked"
                    );
                    panicked.get_or_insert(index);
                }
            }
        }
        panicked
    }

    /// Raises ApplicationStart for every site.
    pub fn raise_application_start(&self) {
        for site in &self.sites {
            self.raise_global_indexed(GlobalNotification::ApplicationStart, |index, m| {
                m.on_global_application_start(&Application::of_site(site, index))
            });
        }
    }

    /// Raises ApplicationStop for every site, then lets go of each site's
    /// module contexts, as IIS cleans up an application's container when
    /// the application stops: before the modules' `terminate`, so a value's
    /// cleanup never runs after its module has let go of what it uses.
    pub fn raise_application_stop(&self) {
        for site in &self.sites {
            self.raise_global_indexed(GlobalNotification::ApplicationStop, |index, m| {
                let _named = LifecycleCall::enter(&self.modules[index.get()].name);
                m.on_global_application_stop(&Application::of_site(site, index))
            });
            site.contexts.clear();
        }
    }

    /// The module whose ApplicationStop or Terminate runs now, if any: a
    /// stop that stops waiting for it names it.
    pub fn module_in_lifecycle_call() -> Option<String> {
        LIFECYCLE_CALL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .map(str::to_owned)
    }

    /// Raises ConfigurationChange: this pipeline was built from a reloaded
    /// configuration file.
    pub fn raise_configuration_change(&self, path: &std::path::Path) {
        self.raise_global(GlobalNotification::ConfigurationChange, |m| {
            m.on_global_configuration_change(path)
        });
    }

    /// Raises StopListening.
    pub fn raise_stop_listening(&self) {
        self.raise_global(GlobalNotification::StopListening, |m| {
            m.on_global_stop_listening()
        });
    }

    /// Raises RscaQuery (a runtime status query) with `query`. A `status`
    /// query gets the server's figures first.
    pub fn raise_rsca_query(&self, query: &mut crate::global::RscaQuery<'_>) {
        if let (Some(server), "status") = (&self.server_status, query.function()) {
            server.write_status(query);
        }
        self.raise_global(GlobalNotification::RscaQuery, |m| {
            m.on_global_rsca_query(query)
        });
    }

    /// Raises HealthCheck.
    pub fn raise_health_check(&self) {
        self.raise_global(GlobalNotification::HealthCheck, |m| {
            m.on_global_health_check()
        });
    }

    /// Raises a global custom notification (`IHttpServer::NotifyCustomNotification`).
    pub fn raise_global_custom_notification(&self, provider: &mut dyn CustomNotificationProvider) {
        self.raise_global(GlobalNotification::CustomNotification, |m| {
            m.on_global_custom_notification(provider)
        });
    }

    /// Raises FileChange for a path.
    pub fn raise_file_change(&self, path: &std::path::Path) {
        self.raise_global(GlobalNotification::FileChange, |m| {
            m.on_global_file_change(path)
        });
    }

    /// Raises CacheOperation.
    pub fn raise_cache_operation(&self, operation: &crate::global::CacheOperation<'_>) {
        self.raise_global(GlobalNotification::CacheOperation, |m| {
            m.on_global_cache_operation(operation)
        });
    }

    /// Raises CacheCleanup.
    pub fn raise_cache_cleanup(&self) {
        self.raise_global(GlobalNotification::CacheCleanup, |m| {
            m.on_global_cache_cleanup()
        });
    }

    pub(crate) fn raise_trace(&self, event: &TraceEvent<'_>) {
        self.raise_global(GlobalNotification::TraceEvent, |m| {
            m.on_global_trace_event(event)
        });
    }

    /// Whether any module listens for a global notification.
    pub fn has_global_listeners(&self, n: GlobalNotification) -> bool {
        !self.global[n.index()].is_empty()
    }

    /// Calls every factory's and global module's `terminate`: the server is
    /// shutting down.
    pub fn terminate(&self) {
        terminate_modules(&self.modules);
    }
}

/// The module whose ApplicationStop or Terminate runs now (see
/// [`Pipeline::module_in_lifecycle_call`]).
static LIFECYCLE_CALL: std::sync::Mutex<Option<Box<str>>> = std::sync::Mutex::new(None);

/// Notes a module's ApplicationStop or Terminate while it runs.
struct LifecycleCall;

impl LifecycleCall {
    fn enter(name: &str) -> Self {
        *LIFECYCLE_CALL.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.into());
        Self
    }
}

impl Drop for LifecycleCall {
    fn drop(&mut self) {
        *LIFECYCLE_CALL.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Terminates every factory and global module of `modules`.
fn terminate_modules(modules: &[ModuleEntry]) {
    // Each module's `terminate` on its own: one that panics is logged and
    // the others still run (at a reload or at shutdown).
    let guarded = |name: &str, terminate: &dyn Fn()| {
        let _named = LifecycleCall::enter(name);
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(terminate)) {
            tracing::error!(
                module = %name,
                panic = %crate::context::panic_message(&*panic),
                "module panicked in Terminate"
            );
            std::mem::forget(panic);
        }
    };
    for m in modules {
        if let Some(f) = &m.factory {
            guarded(&m.name, &|| f.terminate());
        }
        if let Some(g) = &m.global {
            guarded(&m.name, &|| g.terminate());
        }
    }
}

/// Builds a [`Pipeline`]: register modules in list order, describe the server
/// defaults and the sites, then [`PipelineBuilder::build`]. Modules that
/// registered are terminated if no pipeline is built after all (a later
/// module or the build failed), as a pipeline terminates them at its end.
pub struct PipelineBuilder {
    modules: Vec<ModuleEntry>,
    sections: Vec<SectionDeclaration>,
    server_handlers: Vec<HandlerDefinition>,
    server_sections: Vec<SectionSource>,
    sites: Vec<SiteDefinition>,
    fs: Arc<dyn FileSystem>,
    settings: PipelineSettings,
    server_info: ServerInfo,
    server_status: Option<Arc<dyn crate::global::ServerStatus>>,
}

impl Drop for PipelineBuilder {
    fn drop(&mut self) {
        terminate_modules(&self.modules);
    }
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineBuilder {
    /// An empty builder. Give it the file system the engine probes at
    /// MapRequestHandler with [`PipelineBuilder::file_system`]; without one,
    /// nothing exists.
    pub fn new() -> Self {
        Self {
            modules: Vec::new(),
            sections: Vec::new(),
            server_handlers: Vec::new(),
            server_sections: Vec::new(),
            sites: Vec::new(),
            fs: Arc::new(NoFileSystem),
            settings: PipelineSettings::default(),
            server_info: ServerInfo::default(),
            server_status: None,
        }
    }

    /// The folder relative paths of the configuration are taken from
    /// ([`ServerInfo::configuration_folder`]), for the modules registered
    /// after this call.
    pub fn configuration_folder(&mut self, folder: std::path::PathBuf) -> &mut Self {
        self.server_info.configuration_folder = folder;
        self
    }

    /// Adds a module at the end of the module list and calls its entry point.
    pub fn register_module<F>(&mut self, name: &str, register: F) -> Result<ModuleIndex, BuildError>
    where
        F: FnOnce(u32, &mut ModuleRegistration<'_>, &ServerInfo) -> Result<(), ModuleError>,
    {
        if self.modules.iter().any(|m| &*m.name == name) {
            return Err(BuildError::new(
                "modules",
                format!("module `{name}` is listed twice"),
            ));
        }
        // u16::MAX stays free: it marks "no module" in the running-call note.
        let index = u16::try_from(self.modules.len())
            .ok()
            .filter(|&i| i != crate::context::NO_MODULE)
            .map(ModuleIndex)
            .ok_or_else(|| BuildError::new("modules", "too many modules"))?;
        let mut entry = ModuleEntry::new(name);
        let mut registration = ModuleRegistration {
            index,
            entry: &mut entry,
            sections: &mut self.sections,
        };
        let server_info = &self.server_info;
        let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            register(SERVER_VERSION, &mut registration, server_info)
        }));
        match registered {
            Ok(Ok(())) => {}
            // What it registered before it failed is dropped, not
            // terminated: riis_module.h promises Terminate only after a
            // RegisterModule that succeeded, and a module may free its
            // factory itself before it returns a failure.
            Ok(Err(e)) => {
                return Err(BuildError::new(
                    "modules",
                    format!("module `{name}` failed to register: {e}"),
                ));
            }
            Err(panic) => {
                let message = crate::context::panic_message(&*panic);
                std::mem::forget(panic);
                // What it registered before the panic is let go of with it.
                crate::context::drop_guarded(entry, || format!("module {name}'s registration"));
                return Err(BuildError::new(
                    "modules",
                    format!("module `{name}` panicked while registering: {message}"),
                ));
            }
        }
        self.modules.push(entry);
        Ok(index)
    }

    /// The server-wide handler list (sites and locations inherit it).
    pub fn server_handlers(&mut self, handlers: Vec<HandlerDefinition>) -> &mut Self {
        self.server_handlers = handlers;
        self
    }

    /// A module section set at server level.
    pub fn server_section(&mut self, section: SectionSource) -> &mut Self {
        self.server_sections.push(section);
        self
    }

    /// Adds a site.
    pub fn site(&mut self, site: SiteDefinition) -> &mut Self {
        self.sites.push(site);
        self
    }

    /// Replaces the file system the engine probes at MapRequestHandler.
    pub fn file_system(&mut self, fs: Arc<dyn FileSystem>) -> &mut Self {
        self.fs = fs;
        self
    }

    /// What answers for the server at the head of a `status` RscaQuery
    /// (without one, only the modules answer).
    pub fn server_status(&mut self, status: Arc<dyn crate::global::ServerStatus>) -> &mut Self {
        self.server_status = Some(status);
        self
    }

    /// Engine settings.
    pub fn settings(&mut self, settings: PipelineSettings) -> &mut Self {
        self.settings = settings;
        self
    }

    fn module_index(&self, name: &str) -> Option<ModuleIndex> {
        self.modules
            .iter()
            .position(|m| &*m.name == name)
            .map(|i| ModuleIndex(i as u16))
    }

    fn resolve_handlers(
        &self,
        defs: &[HandlerDefinition],
    ) -> Result<Arc<[HandlerMapping]>, BuildError> {
        for (i, d) in defs.iter().enumerate() {
            if defs[..i].iter().any(|o| o.name == d.name) {
                return Err(BuildError::new(
                    format!("{}.name", d.key),
                    format!("handler `{}` is listed twice", d.name),
                ));
            }
        }
        defs.iter()
            .map(|d| {
                let verbs = if d.verbs.iter().any(|v| v.trim() == "*") || d.verbs.is_empty() {
                    None
                } else {
                    Some(
                        d.verbs
                            .iter()
                            .map(|v| {
                                let v = v.trim();
                                let upper = v.to_ascii_uppercase();
                                const STANDARD: [&str; 9] = [
                                    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
                                    "CONNECT",
                                ];
                                if upper != v && STANDARD.contains(&upper.as_str()) {
                                    return Err(BuildError::new(
                                        format!("{}.verbs", d.key),
                                        format!("`{v}` is not `{upper}`: HTTP methods are case-sensitive"),
                                    ));
                                }
                                Method::from_bytes(v.as_bytes()).map_err(|_| {
                                    BuildError::new(
                                        format!("{}.verbs", d.key),
                                        format!("`{v}` is not an HTTP method"),
                                    )
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                };
                let resource_type = ResourceType::parse(&d.resource_type).ok_or_else(|| {
                    BuildError::new(
                        format!("{}.resource_type", d.key),
                        format!(
                            "`{}` is not one of File, Directory, Either, Unspecified",
                            d.resource_type
                        ),
                    )
                })?;
                if d.modules.is_empty() {
                    return Err(BuildError::new(
                        format!("{}.modules", d.key),
                        format!(
                            "handler `{}` names no module, so it could answer nothing",
                            d.name
                        ),
                    ));
                }
                let modules = d
                    .modules
                    .iter()
                    .map(|name| {
                        let index = self.module_index(name).ok_or_else(|| {
                            BuildError::new(
                                format!("{}.modules", d.key),
                                format!("handler `{}` names module `{name}`, which is not in the module list", d.name),
                            )
                        })?;
                        let module = &self.modules[index.get()];
                        if module.factory.is_none()
                            || !module.notifications.contains(RequestNotification::ExecuteRequestHandler)
                        {
                            // IIS refuses such a handler at run time (500.21);
                            // riis refuses the configuration.
                            return Err(BuildError::new(
                                format!("{}.modules", d.key),
                                format!(
                                    "module `{name}` did not register for ExecuteRequestHandler, so handler `{}` cannot use it (a module loaded from an image under a built-in module's name replaces the built-in one)",
                                    d.name
                                ),
                            )
                            .about_module(name));
                        }
                        Ok(index)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if d.path.is_empty() {
                    return Err(BuildError::new(format!("{}.path", d.key), "the path pattern is empty"));
                }
                // A pattern with `/` is matched against the whole path,
                // which starts with `/`: one that starts otherwise (and
                // not with a wildcard) could never be chosen.
                if d.path.contains('/') && !d.path.starts_with(['/', '*', '?']) {
                    return Err(BuildError::new(
                        format!("{}.path", d.key),
                        format!(
                            "`{0}` has a `/`, so it is matched against the whole path, which starts with `/`: write `/{0}`",
                            d.path
                        ),
                    ));
                }
                let path = PathPattern::new(&d.path);
                if d.allow_path_info && !path.can_split_path_info() {
                    return Err(BuildError::new(
                        format!("{}.allow_path_info", d.key),
                        format!(
                            "handler `{}` has path `{}`: allow_path_info needs a pattern for the script's own segment, such as `*.php`",
                            d.name, d.path
                        ),
                    ));
                }
                Ok(HandlerMapping {
                    name: d.name.clone(),
                    path,
                    verbs,
                    resource_type,
                    modules,
                    allow_path_info: d.allow_path_info,
                })
            })
            .collect()
    }

    /// Checks every section occurrence names a declared section and parses
    /// layered onto what it inherits (`inherited`, outermost level first),
    /// so errors point at the occurrence that is wrong, and a key may rely
    /// on one an enclosing level gives (a location's rewrite rule on a
    /// server-wide rewrite map). Outer levels are checked first, so an
    /// error of theirs is theirs.
    fn validate_sections(
        &self,
        sources: &[SectionSource],
        inherited: &[&[SectionSource]],
    ) -> Result<(), BuildError> {
        for s in sources {
            let decl = self
                .sections
                .iter()
                .find(|d| d.name == s.name)
                .ok_or_else(|| {
                    BuildError::new(
                        s.key.clone(),
                        format!(
                            "no module in the module list declares a section named `{}`",
                            s.name
                        ),
                    )
                })?;
            // serde reads a struct from an array as well, field by field
            // (`static_file = [{}]` was accepted and did nothing).
            if !s.value.is_table() {
                return Err(BuildError::new(
                    s.key.clone(),
                    format!(
                        "expected a table (`[{0}]` or `{0} = {{ … }}`), found {1}",
                        s.name,
                        s.value.type_str()
                    ),
                ));
            }
            let mut layered = toml::Value::Table(toml::Table::new());
            for outer in inherited.iter().flat_map(|level| level.iter()) {
                if outer.name == s.name {
                    merge(&mut layered, &outer.value);
                }
            }
            merge(&mut layered, &s.value);
            (decl.parse)(layered).map_err(|(path, msg)| section_error(&s.key, &path, &msg))?;
            if let (Some(keys), Some(table)) = (&decl.keys, s.value.as_table()) {
                if let Some(unknown) = table.keys().find(|k| !keys.contains(k)) {
                    return Err(section_error(
                        &s.key,
                        unknown,
                        &format!(
                            "module `{}` reads no key `{unknown}` here (it reads: {})",
                            decl.module,
                            keys.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds the dispatch tables and resolves every location.
    pub fn build(mut self) -> Result<Pipeline, BuildError> {
        let dispatch = |n: RequestNotification, post: bool| -> Box<[ModuleIndex]> {
            let mut list: Vec<ModuleIndex> = self
                .modules
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    let set: RequestNotifications = if post {
                        m.post_notifications
                    } else {
                        m.notifications
                    };
                    m.factory.is_some() && set.contains(n)
                })
                .map(|(i, _)| ModuleIndex(i as u16))
                .collect();
            // Stable sort: equal priorities keep module-list order.
            list.sort_by_key(|m| std::cmp::Reverse(self.modules[m.get()].priority(n, post)));
            list.into_boxed_slice()
        };
        let events = std::array::from_fn(|stage| {
            let n = RequestNotification::DETERMINISTIC[stage];
            [dispatch(n, false), dispatch(n, true)]
        });
        // SendResponse runs in inverted order: LAST modules first, and within a
        // priority the module list inverts too, so the outermost module (first
        // in the list) sees the response last — an onion, as for the request.
        let mut send_response = dispatch(RequestNotification::SendResponse, false).into_vec();
        send_response.reverse();
        let global = std::array::from_fn(|i| {
            let n = GlobalNotification::ALL[i];
            let mut list: Vec<ModuleIndex> = self
                .modules
                .iter()
                .enumerate()
                .filter(|(_, m)| m.global.is_some() && m.global_notifications.contains(n))
                .map(|(i, _)| ModuleIndex(i as u16))
                .collect();
            list.sort_by_key(|m| std::cmp::Reverse(self.modules[m.get()].global_priorities[i]));
            list.into_boxed_slice()
        });

        // Relative paths in sections are the configuration file's.
        let _folder =
            crate::registration::ParsingFolder::set(&self.server_info.configuration_folder);
        self.validate_sections(&self.server_sections, &[])?;
        let server_handlers = self.resolve_handlers(&self.server_handlers)?;
        let mut sites = Vec::with_capacity(self.sites.len());
        for site in &self.sites {
            sites.push(Arc::new(self.build_site(site, &server_handlers)?));
        }
        let tracing = self.modules.iter().any(|m| {
            m.global.is_some()
                && m.global_notifications
                    .contains(GlobalNotification::TraceEvent)
        });
        let next_busy = next_busy_events(&events);
        let read_entity = dispatch(RequestNotification::ReadEntity, false);
        let map_path = dispatch(RequestNotification::MapPath, false);
        let custom = dispatch(RequestNotification::CustomNotification, false);
        // The modules move to the pipeline, which terminates them; an error
        // above left them here, for `Drop` to terminate.
        Ok(Pipeline {
            events,
            next_busy,
            send_response: send_response.into_boxed_slice(),
            read_entity,
            map_path,
            custom,
            global,
            modules: std::mem::take(&mut self.modules).into_boxed_slice(),
            sections: std::mem::take(&mut self.sections),
            sites,
            fs: self.fs.clone(),
            settings: self.settings.clone(),
            tracing,
            server_status: self.server_status.take(),
        })
    }

    fn build_site(
        &self,
        site: &SiteDefinition,
        server_handlers: &Arc<[HandlerMapping]>,
    ) -> Result<Site, BuildError> {
        self.validate_sections(&site.sections, &[&self.server_sections])?;
        let site_handlers = match &site.handlers {
            Some(defs) => self.resolve_handlers(defs)?,
            None => server_handlers.clone(),
        };
        // The site root is a location too; then each location, resolved by
        // layering every enclosing location from the outermost in.
        let mut defs: Vec<&LocationDefinition> = Vec::new();
        for loc in &site.locations {
            if !loc.path.starts_with('/') {
                return Err(BuildError::new(
                    format!("{}.path", loc.key),
                    format!("location path `{}` must start with `/`", loc.path),
                ));
            }
            // A location is a path prefix, as IIS's `<location path>` and
            // nginx's `location /admin/`: `/admin/*`, written the way
            // handler paths are, would be taken literally and never apply
            // (an access rule on it would protect nothing); a query or a
            // fragment is never part of the path matched.
            if let Some(c) = loc.path.chars().find(|c| matches!(c, '*' | '?' | '#')) {
                let prefix = loc.path[..loc.path.find(c).unwrap_or(0)].trim_end_matches('/');
                return Err(BuildError::new(
                    format!("{}.path", loc.key),
                    format!(
                        "location path `{}` holds `{c}`: a location is a path prefix, not a pattern; write `{}`",
                        loc.path,
                        if prefix.is_empty() { "/" } else { prefix }
                    ),
                ));
            }
            // Requests are matched decoded and normalized: a path that is
            // not in that form could never match one. A `%` that starts no
            // escape is a literal one (`/100%` matches a request for
            // `/100%25`); one that does (`/a%20b`) is taken as an escape,
            // and the error says to write it decoded.
            match crate::request::prepare_url_path(&escape_lone_percents(&loc.path)) {
                Ok(prepared) if prepared.trim_end_matches('/') == loc.path.trim_end_matches('/') => {}
                Ok(prepared) => {
                    return Err(BuildError::new(
                        format!("{}.path", loc.key),
                        format!(
                            "location path `{}` never matches a request: requests are matched decoded and normalized; write `{prepared}`",
                            loc.path
                        ),
                    ))
                }
                Err(e) => {
                    return Err(BuildError::new(
                        format!("{}.path", loc.key),
                        format!("location path `{}` never matches a request: {e}", loc.path),
                    ))
                }
            }
            if loc.physical_path.is_some() && loc.path.trim_end_matches('/').is_empty() {
                return Err(BuildError::new(
                    format!("{}.physical_path", loc.key),
                    "the location `/` is the site's own folder: set the site's `root` instead",
                ));
            }
            // Locations ignore ASCII case (see `path_below`): `/Docs` and
            // `/docs` are one location.
            let trimmed = |p: &str| p.trim_end_matches('/').to_ascii_lowercase();
            if let Some(first) = defs.iter().find(|d| trimmed(&d.path) == trimmed(&loc.path)) {
                let why = if first.path.trim_end_matches('/') == loc.path.trim_end_matches('/') {
                    String::new()
                } else {
                    format!(" (as `{}`: locations ignore case)", first.path)
                };
                return Err(BuildError::new(
                    format!("{}.path", loc.key),
                    format!("location `{}` is defined twice in this site{why}", loc.path),
                ));
            }
            defs.push(loc);
        }
        // Outermost first, each on what encloses it.
        // By the length of the path without its trailing `/`s, which make
        // no difference to what a location covers (`/pub//` must not come
        // before `/pub/a`).
        let specificity = |d: &&LocationDefinition| d.path.trim_end_matches('/').len();
        defs.sort_by_key(specificity);
        for (at, loc) in defs.iter().enumerate() {
            let mut inherited: Vec<&[SectionSource]> = vec![&self.server_sections, &site.sections];
            inherited.extend(
                defs[..at]
                    .iter()
                    .filter(|outer| covers(&outer.path, &loc.path))
                    .map(|outer| outer.sections.as_slice()),
            );
            self.validate_sections(&loc.sections, &inherited)?;
        }
        defs.sort_by_key(|d| std::cmp::Reverse(specificity(d)));

        let mut locations = Vec::with_capacity(defs.len() + 1);
        let mut directories: HashMap<String, Arc<VirtualDirectory>> = HashMap::new();
        // An inherited section's value at a level, by section and the keys
        // of the levels down to it: parsed once for all the locations
        // below (a site's hundred rules are not compiled again for each).
        let mut by_levels: HashMap<(usize, String), Arc<dyn std::any::Any + Send + Sync>> =
            HashMap::new();
        for def in defs.iter().map(|d| Some(*d)).chain(std::iter::once(None)) {
            let path = def.map_or("/", |d| d.path.as_str());
            // Enclosing locations, outermost first.
            let mut chain: Vec<&LocationDefinition> = defs
                .iter()
                .copied()
                .filter(|d| covers(&d.path, path))
                .collect();
            chain.sort_by_key(specificity);
            let mut handlers = site_handlers.clone();
            for d in &chain {
                if let Some(h) = &d.handlers {
                    handlers = self.resolve_handlers(h)?;
                }
            }
            let mut sections = Vec::with_capacity(self.sections.len());
            for (section, decl) in self.sections.iter().enumerate() {
                let layers = self
                    .server_sections
                    .iter()
                    .chain(site.sections.iter())
                    .chain(chain.iter().flat_map(|d| d.sections.iter()))
                    .filter(|s| s.name == decl.name);
                let mut merged = toml::Value::Table(toml::Table::new());
                let mut last_key = String::new();
                // An inherited section's value at each level that writes
                // it, each completed from the one around it.
                let mut inherited: Option<Arc<dyn std::any::Any + Send + Sync>> = None;
                let mut levels = String::new();
                for layer in layers {
                    merge(&mut merged, &layer.value);
                    last_key.clone_from(&layer.key);
                    if let (Some(inherit), Some(written)) = (decl.inherit, layer.value.as_table()) {
                        // Keys are unique in the configuration.
                        levels.push_str(&layer.key);
                        levels.push('\n');
                        if let Some(done) = by_levels.get(&(section, levels.clone())) {
                            inherited = Some(done.clone());
                            continue;
                        }
                        let at_layer = |(p, m): (String, String)| section_error(&layer.key, &p, &m);
                        let mut value = (decl.parse)(merged.clone()).map_err(at_layer)?;
                        if let Some(outer) = &inherited {
                            inherit(&mut value, outer, written).map_err(at_layer)?;
                        }
                        by_levels.insert((section, levels.clone()), value.clone());
                        inherited = Some(value);
                    }
                }
                let value = match inherited {
                    Some(value) => value,
                    None => (decl.parse)(merged).map_err(|(p, m)| {
                        let key = if last_key.is_empty() {
                            decl.name.clone()
                        } else {
                            last_key.clone()
                        };
                        section_error(&key, &p, &m)
                    })?,
                };
                sections.push(value);
            }
            // The innermost enclosing location that is a virtual
            // directory (made once, shared by the locations inside it).
            let virtual_directory =
                chain
                    .iter()
                    .rev()
                    .find(|d| d.physical_path.is_some())
                    .map(|d| {
                        let path = d.path.trim_end_matches('/');
                        directories
                            .entry(path.to_owned())
                            .or_insert_with(|| {
                                Arc::new(VirtualDirectory {
                                    path: path.to_owned(),
                                    physical_path: d.physical_path.clone().unwrap_or_default(),
                                })
                            })
                            .clone()
                    });
            locations.push(Location {
                path: path.to_owned(),
                splits_paths: handlers.iter().any(|h| h.allow_path_info),
                handlers,
                sections: sections.into_boxed_slice(),
                virtual_directory,
            });
        }
        Ok(Site {
            info: ApplicationInfo {
                site_id: site.id,
                site_name: site.name.clone(),
                physical_root: site.physical_root.clone(),
            },
            has_virtual_directories: !directories.is_empty(),
            locations,
            contexts: SharedContextContainer::default(),
            root_directory: VirtualDirectory {
                path: "/".to_owned(),
                physical_path: site.physical_root.clone(),
            },
        })
    }
}

fn section_error(key: &str, path: &str, message: &str) -> BuildError {
    let key = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{key}.{path}")
    };
    BuildError::new(key, message)
}

/// Layers `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: &toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// [`Pipeline::next_busy`] for a configuration's event lists.
fn next_busy_events(events: &[[Box<[ModuleIndex]>; 2]; 12]) -> [u8; 25] {
    let map_handler = RequestNotification::MapRequestHandler.stage().unwrap_or(4) * 2;
    let execute = RequestNotification::ExecuteRequestHandler
        .stage()
        .unwrap_or(7)
        * 2;
    let mut next = [24u8; 25];
    for position in (0..24).rev() {
        let busy = !events[position / 2][position % 2].is_empty()
            || position == map_handler
            || position == execute;
        next[position] = if busy {
            position as u8
        } else {
            next[position + 1]
        };
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_prefixes_respect_segments() {
        assert!(covers("/api", "/api"));
        assert!(covers("/api", "/api/x"));
        assert!(covers("/api/", "/api/x"));
        assert!(!covers("/api", "/apix"));
        assert!(covers("/", "/anything"));
    }

    /// Locations ignore ASCII case, as IIS's do and as handler patterns
    /// do; other characters must be equal.
    #[test]
    fn location_prefixes_ignore_ascii_case() {
        assert!(covers("/api", "/API"));
        assert!(covers("/Api/", "/aPI/private"));
        assert!(!covers("/api", "/APIX"));
        assert!(covers("/é", "/é/x"));
        assert!(!covers("/é", "/É/x"), "only ASCII case is ignored");
        assert_eq!(
            crate::request::path_below("/Blog", "/BLOG/2024"),
            Some("/2024")
        );
        assert_eq!(crate::request::path_below("/blog", "/bl"), None);
        assert_eq!(crate::request::path_below("/a", "/A\u{e9}"), None);
        // Characters that case mappings take to the prefix's ASCII letters.
        let below = crate::request::path_below;
        assert_eq!(below("/api/secret", "/api/\u{17F}ecret/x"), Some("/x"));
        assert_eq!(below("/api/private", "/API/PR\u{131}VATE"), Some(""));
        assert_eq!(below("/api/private", "/api/pr\u{130}vate/a"), Some("/a"));
        assert_eq!(below("/keys", "/\u{212A}eys/k"), Some("/k"));
        assert_eq!(below("/keys", "/\u{212A}eysx"), None);
        assert_eq!(below("/api", "/\u{17F}pi"), None, "not a case of `a`");
        assert_eq!(below("/\u{e9}t\u{e9}", "/\u{e9}T\u{e9}/x"), Some("/x"));
    }

    /// Trailing `/`s on a location's path make no difference to its rank:
    /// `/pub//` is less specific than `/pub/a`.
    #[test]
    fn locations_rank_by_their_path_without_trailing_slashes() {
        let loc = |path: &str| LocationDefinition {
            path: path.to_owned(),
            key: format!("locations[{path}]"),
            ..Default::default()
        };
        let mut builder = PipelineBuilder::new();
        builder.site(SiteDefinition {
            id: 1,
            name: "s".into(),
            physical_root: std::env::temp_dir(),
            handlers: None,
            sections: Vec::new(),
            locations: vec![loc("/pub//"), loc("/pub/a")],
            key: "sites[0]".into(),
        });
        let pipeline = builder.build().unwrap();
        let site = &pipeline.sites()[0];
        assert_eq!(
            site.location(site.location_index("/pub/a/s.txt")).path(),
            "/pub/a"
        );
        assert_eq!(
            site.location(site.location_index("/pub/b")).path(),
            "/pub//"
        );
    }

    #[test]
    fn merge_overrides_key_by_key() {
        let mut a: toml::Value = toml::from_str("x = 1\n[t]\na = 1\nb = 2").unwrap();
        let b: toml::Value = toml::from_str("y = 2\n[t]\nb = 3").unwrap();
        merge(&mut a, &b);
        assert_eq!(a["x"].as_integer(), Some(1));
        assert_eq!(a["y"].as_integer(), Some(2));
        assert_eq!(a["t"]["a"].as_integer(), Some(1));
        assert_eq!(a["t"]["b"].as_integer(), Some(3));
    }

    #[test]
    fn next_busy_skips_events_without_work() {
        let one = || -> Box<[ModuleIndex]> { vec![ModuleIndex(0)].into_boxed_slice() };
        let mut events: [[Box<[ModuleIndex]>; 2]; 12] = Default::default();
        events[0][0] = one(); // BeginRequest
        events[2][1] = one(); // PostAuthorizeRequest
        events[11][0] = one(); // EndRequest
        let next = next_busy_events(&events);
        assert_eq!(next[0], 0);
        assert_eq!(
            next[1], 5,
            "PostBeginRequest goes on to PostAuthorizeRequest"
        );
        assert_eq!(
            next[6], 8,
            "MapRequestHandler always has the handler to choose"
        );
        assert_eq!(next[9], 14, "ExecuteRequestHandler always runs the handler");
        assert_eq!(next[15], 22, "on to EndRequest");
        assert_eq!(next[20], 22, "LogRequest is empty");
        assert_eq!(next[23], 24, "then the final send");
        assert_eq!(next[24], 24);
    }
}
