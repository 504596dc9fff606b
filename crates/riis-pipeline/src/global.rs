//! What global modules receive: application information, trace events,
//! cache operations and runtime status queries.

use std::path::PathBuf;
use std::time::Duration;

use riis_notification::{RequestNotification, RequestNotificationStatus};

use crate::context_container::SharedContextContainer;
use crate::registration::ModuleIndex;

/// A site's application, as ApplicationStart and ApplicationStop describe it
/// (riis runs one application per site, rooted at `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationInfo {
    /// The site id (`INSTANCE_ID`).
    pub site_id: u32,
    /// The site name.
    pub site_name: String,
    /// The physical root folder (`APPL_PHYSICAL_PATH`).
    pub physical_root: PathBuf,
}

/// A site's application during ApplicationStart and ApplicationStop, as the
/// called module sees it: the site's description (through `Deref`, so
/// `app.site_name` reads as on [`ApplicationInfo`]) and the site's module
/// context container with the module's own slot in it.
///
/// IIS modules keep application-wide state in the application's container
/// from `OnGlobalApplicationStart` and read it in their requests
/// (`GetApplication()->GetModuleContextContainer()`); here that container is
/// the one [`HttpContext::site_contexts`](crate::HttpContext::site_contexts)
/// gives the site's requests, and the module's slot is the index its requests
/// see as [`HttpContext::current_module`](crate::HttpContext::current_module).
/// A reload builds new sites with empty containers and raises
/// ApplicationStart for them; ApplicationStop sees the container of the
/// sites that stop.
#[derive(Clone, Copy)]
pub struct Application<'a> {
    info: &'a ApplicationInfo,
    contexts: &'a SharedContextContainer,
    module: ModuleIndex,
    /// The site's locations, for [`Application::configs`] (none when made
    /// with [`Application::new`]).
    locations: &'a [crate::pipeline::Location],
}

impl<'a> Application<'a> {
    /// The application of a site, as `module` is called for it.
    pub fn new(
        info: &'a ApplicationInfo,
        contexts: &'a SharedContextContainer,
        module: ModuleIndex,
    ) -> Self {
        Self {
            info,
            contexts,
            module,
            locations: &[],
        }
    }

    /// The application of `site`, as `module` is called for it: the
    /// engine's, with the site's configuration readable.
    pub(crate) fn of_site(site: &'a crate::pipeline::Site, module: ModuleIndex) -> Self {
        Self {
            info: &site.info,
            contexts: &site.contexts,
            module,
            locations: &site.locations,
        }
    }

    /// `section` as each of the site's locations resolves it, the most
    /// specific first and the site's root last (a location that sets
    /// nothing gives the value it inherits). For a module that prepares,
    /// when the configuration starts, what its requests will use:
    /// processes to take over or start, servers to watch. A riis
    /// extension; IIS modules read their configuration through the admin
    /// manager.
    pub fn configs<T: std::any::Any + Send + Sync>(
        &self,
        section: crate::Section<T>,
    ) -> impl Iterator<Item = &'a T> + 'a {
        self.locations
            .iter()
            .map(move |location| section_of(location, section))
    }

    /// [`Application::configs`], of the locations only whose handler list
    /// names the called module: those where it can handle a request. For
    /// a handler module that starts something ahead of its requests (an
    /// application to preload), so that it starts nothing no request can
    /// reach. A riis extension, as `configs` is.
    pub fn handled_configs<T: std::any::Any + Send + Sync>(
        &self,
        section: crate::Section<T>,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let module = self.module;
        self.locations
            .iter()
            .filter(move |location| {
                location
                    .handlers()
                    .iter()
                    .any(|handler| handler.modules.contains(&module))
            })
            .map(move |location| section_of(location, section))
    }

    /// Id, name and physical root of the site.
    pub fn info(&self) -> &'a ApplicationInfo {
        self.info
    }

    /// The site's module context container, shared with its requests.
    pub fn module_contexts(&self) -> &'a SharedContextContainer {
        self.contexts
    }

    /// The called module's slot in [`Application::module_contexts`].
    pub fn module(&self) -> ModuleIndex {
        self.module
    }
}

impl std::fmt::Debug for Application<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("info", self.info)
            .field("module", &self.module)
            .field("locations", &self.locations.len())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Application<'_> {
    type Target = ApplicationInfo;

    fn deref(&self) -> &ApplicationInfo {
        self.info
    }
}

/// What happened, in a trace event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePhase {
    /// A module is about to handle a notification.
    ModuleStart,
    /// A module finished handling a notification, with its status and the
    /// time it took.
    ModuleEnd {
        /// What the module returned.
        status: RequestNotificationStatus,
        /// How long the call took.
        elapsed: Duration,
    },
    /// A module raised a trace event of its own.
    Custom {
        /// The module's message.
        message: &'static str,
    },
}

/// A trace event (`GL_TRACE_EVENT`): one module × notification of one request.
#[derive(Debug, Clone, Copy)]
pub struct TraceEvent<'a> {
    /// The request's id, unique for the life of the server.
    pub request_id: u64,
    /// The request URL.
    pub url: &'a str,
    /// The module.
    pub module: &'a str,
    /// The notification.
    pub notification: RequestNotification,
    /// Whether it is the post-event.
    pub is_post: bool,
    /// Start, end, or a module's own event.
    pub phase: TracePhase,
}

/// What happened in a server cache (`GL_CACHE_OPERATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOperation<'a> {
    /// An entry was added: the key (a physical path for the file cache) and
    /// its size.
    Add {
        /// The entry's key.
        key: &'a str,
        /// Bytes it holds.
        bytes: u64,
    },
    /// An entry was removed (its file changed or disappeared, or a sweep
    /// found it unused).
    Remove {
        /// The entry's key.
        key: &'a str,
    },
}

/// `GL_RSCA_QUERY`'s provider (IIS's `IGlobalRSCAQueryProvider`): a runtime
/// status query, by function name with its parameters, that modules answer
/// by appending to the output. riis raises it for `riis status` with the
/// function `status`, and a module may raise it from a request
/// ([`HttpContext::raise_rsca_query`](crate::HttpContext::raise_rsca_query)).
/// The answer to `status` starts with the server's own figures
/// ([`ServerStatus`]), one `name: value` line each, as the modules' are.
#[derive(Debug)]
pub struct RscaQuery<'a> {
    function: &'a str,
    parameters: &'a str,
    output: String,
}

impl<'a> RscaQuery<'a> {
    /// A query of `function` with `parameters`.
    pub fn new(function: &'a str, parameters: &'a str) -> Self {
        Self {
            function,
            parameters,
            output: String::new(),
        }
    }

    /// `GetFunctionName`.
    pub fn function(&self) -> &str {
        self.function
    }

    /// `GetFunctionParameters`.
    pub fn parameters(&self) -> &str {
        self.parameters
    }

    /// Appends text to the answer (`GetOutputBuffer`, `ResizeOutputBuffer`).
    pub fn write(&mut self, text: &str) {
        self.output.push_str(text);
    }

    /// The answer so far.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// The answer.
    pub fn into_output(self) -> String {
        self.output
    }
}

/// The server's own runtime figures (uptime, connections open, requests
/// started), written at the head of every RscaQuery `status` answer, so
/// `riis status` and a module that raises the query see the same lines.
/// The server gives one to the pipeline
/// ([`PipelineBuilder::server_status`](crate::PipelineBuilder::server_status));
/// the engine counts nothing itself.
pub trait ServerStatus: Send + Sync {
    /// Appends the figures to a `status` query, one `name: value` line each.
    fn write_status(&self, query: &mut RscaQuery<'_>);
}

/// A location's resolved value of `section`.
fn section_of<T: std::any::Any + Send + Sync>(
    location: &crate::pipeline::Location,
    section: crate::Section<T>,
) -> &T {
    location.sections[section.id]
        .downcast_ref::<T>()
        .expect("a Section<T> handle always names a section of type T")
}
