//! The module traits: [`HttpModule`] (IIS's `CHttpModule`), its factory, and
//! [`GlobalModule`] (IIS's `CGlobalModule`), with the method names and
//! defaults of the engine's traits in `riis-pipeline`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::any::Any;
use std::sync::Arc;

use riis_abi::{riis_api, riis_global_provider};

use crate::context::{drop_stored, give_shared, shared_in_slot, with_shared_slots, HttpContext};
use crate::error::ModuleError;
use crate::provider::{
    CustomNotification, MapPathProvider, ReadEntityProvider, RscaQuery, SendResponseProvider,
};
use riis_notification::{GlobalNotificationStatus, RequestNotification, RequestNotificationStatus};

use RequestNotificationStatus::Continue;

/// What an asynchronous operation reports when it completes
/// (`riis_completion_info`, IIS's `IHttpCompletionInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompletionInfo {
    /// `GetCompletionBytes`: bytes written, read, or produced by a child
    /// request; for a posted completion, the number posted.
    pub bytes: u64,
    /// `GetCompletionStatus`: an HRESULT, 0 on success.
    pub status: u32,
    /// `IHttpCompletionInfo2::GetCompletedOperation`: which operation
    /// completed, which a module in full duplex needs to tell its read
    /// from its flush (see [`crate::HttpContext::enable_full_duplex`]).
    pub operation: CompletedOperation,
}

/// The operations a completion reports (`RIIS_OPERATION_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompletedOperation {
    /// A completion the module posted (`post_completion`, from a call or
    /// through its completion handle).
    #[default]
    Posted,
    /// A body read (`read_entity_body`).
    Read,
    /// An asynchronous flush.
    Write,
    /// A child request (`execute_request`).
    ExecuteRequest,
}

impl CompletedOperation {
    /// The operation of a `RIIS_OPERATION_*` value; one this SDK does not
    /// know counts as posted.
    pub(crate) fn from_raw(raw: u32) -> Self {
        match raw {
            crate::abi::OPERATION_READ => Self::Read,
            crate::abi::OPERATION_WRITE => Self::Write,
            crate::abi::OPERATION_EXECUTE_REQUEST => Self::ExecuteRequest,
            _ => Self::Posted,
        }
    }
}

/// A request-level module: one instance per request, one method per
/// notification.
///
/// The server calls only the methods for the notifications the module
/// registered for ([`crate::ModuleRegistration::set_request_notifications`]);
/// every method defaults to [`Continue`]. The instance is made by the
/// module's [`HttpModuleFactory`] the first time the request reaches one of
/// those notifications and dropped when the request ends.
///
/// Operations started during a call (an asynchronous flush or body read, a
/// child request, a posted completion) take effect when the call returns;
/// after returning [`RequestNotificationStatus::Pending`] their completion
/// arrives in [`HttpModule::on_async_completion`].
///
/// A panic in a method is caught: the request fails with 500 and an error
/// description naming the module and notification, and the instance is not
/// called again.
#[allow(unused_variables)]
pub trait HttpModule: Send + 'static {
    /// `OnBeginRequest`.
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostBeginRequest`.
    fn on_post_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnAuthenticateRequest`: set the user with [`HttpContext::set_user`].
    fn on_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostAuthenticateRequest`.
    fn on_post_authenticate_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnAuthorizeRequest`.
    fn on_authorize_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostAuthorizeRequest`.
    fn on_post_authorize_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnResolveRequestCache`.
    fn on_resolve_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostResolveRequestCache`.
    fn on_post_resolve_request_cache(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnMapRequestHandler`.
    fn on_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostMapRequestHandler`.
    fn on_post_map_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnAcquireRequestState`.
    fn on_acquire_request_state(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostAcquireRequestState`.
    fn on_post_acquire_request_state(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPreExecuteRequestHandler`.
    fn on_pre_execute_request_handler(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostPreExecuteRequestHandler`.
    fn on_post_pre_execute_request_handler(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnExecuteRequestHandler`: runs only for the modules of the handler
    /// chosen at MapRequestHandler.
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostExecuteRequestHandler`.
    fn on_post_execute_request_handler(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnReleaseRequestState`.
    fn on_release_request_state(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostReleaseRequestState`.
    fn on_post_release_request_state(
        &mut self,
        ctx: &mut HttpContext,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnUpdateRequestCache`.
    fn on_update_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostUpdateRequestCache`.
    fn on_post_update_request_cache(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnLogRequest`.
    fn on_log_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostLogRequest`.
    fn on_post_log_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnEndRequest`.
    fn on_end_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnPostEndRequest`.
    fn on_post_end_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        Continue
    }
    /// `OnSendResponse`: response data is about to be sent; the headers may
    /// still change while [`SendResponseProvider::headers_being_sent`].
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnReadEntity`: request body bytes were read; the provider lets the
    /// module replace them.
    fn on_read_entity(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut ReadEntityProvider,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnMapPath`: a URL was mapped to a physical path; the provider lets the
    /// module replace it.
    fn on_map_path(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut MapPathProvider,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnCustomRequestNotification`: a module raised a custom notification;
    /// check [`CustomNotification::notification_type`].
    fn on_custom_request_notification(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut CustomNotification,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnAsyncCompletion`: an asynchronous operation this module started
    /// while handling `notification` (its post-event when `is_post`)
    /// completed. The returned status is taken as if the original call had
    /// returned it. After [`HttpContext::read_entity_body`], the bytes read
    /// are in [`HttpContext::read_data`].
    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        Continue
    }
}

/// Makes one [`HttpModule`] per request (IIS's `IHttpModuleFactory`).
///
/// Called from several threads at once. A panic or an error fails the
/// request that asked with 500.
pub trait HttpModuleFactory: Send + Sync + 'static {
    /// `GetHttpModule`: a new instance for one request.
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError>;

    /// `Terminate`: the server is shutting down; no request will ask for an
    /// instance again.
    fn terminate(&self) {}
}

/// Any `Fn() -> M` where `M: HttpModule` is a factory, so
/// `|| MyModule::default()` registers a module.
impl<F, M> HttpModuleFactory for F
where
    F: Fn() -> M + Send + Sync + 'static,
    M: HttpModule,
{
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(self()))
    }
}

/// A site's application, as ApplicationStart and ApplicationStop describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationInfo {
    /// The site id.
    pub site_id: u32,
    /// The site name.
    pub site_name: String,
    /// The physical root folder.
    pub physical_root: PathBuf,
}

/// A site's application during ApplicationStart and ApplicationStop: its
/// description (through `Deref`, so `app.site_name` reads as on
/// [`ApplicationInfo`]) and this module's slot in the site's container (C ABI
/// 1.9), where IIS modules keep application-wide state
/// (`GetApplication()->GetModuleContextContainer()`). The site's requests
/// read it with [`HttpContext::module_context`] at
/// [`ContextScope::Site`](crate::ContextScope::Site). A reload starts the
/// sites again with empty containers.
pub struct Application<'a> {
    info: ApplicationInfo,
    provider: *mut riis_global_provider,
    api: &'a riis_api,
}

impl<'a> Application<'a> {
    /// The application of a global notification's provider.
    pub(crate) fn new(
        info: ApplicationInfo,
        provider: *mut riis_global_provider,
        api: &'a riis_api,
    ) -> Self {
        Self {
            info,
            provider,
            api,
        }
    }

    /// Id, name and physical root of the site.
    pub fn info(&self) -> &ApplicationInfo {
        &self.info
    }

    /// This module's value in the site's container, when one of type `T`
    /// is there.
    pub fn module_context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        with_shared_slots(|| {
            // SAFETY: the provider of the running ApplicationStart or
            // ApplicationStop call (an `Application` lives only in it).
            shared_in_slot(unsafe { (self.api.global_application_module_context)(self.provider) })
        })
    }

    /// Stores `value` as this module's value in the site's container. One
    /// is stored once: a second store fails with `ERROR_ALREADY_ASSIGNED`,
    /// as in IIS. Returns the stored value; use interior mutability to
    /// change it.
    pub fn set_module_context<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> Result<Arc<T>, ModuleError> {
        let value = Arc::new(value);
        let code = with_shared_slots(|| {
            give_shared(value.clone(), |data| {
                // SAFETY: as in `module_context`; the server owns `data` from
                // now on and releases it through `drop_stored`.
                unsafe {
                    (self.api.global_application_set_module_context)(
                        self.provider,
                        data,
                        Some(drop_stored),
                    )
                }
            })
        });
        ModuleError::check(code, "global_application_set_module_context").map(|()| value)
    }
}

impl std::ops::Deref for Application<'_> {
    type Target = ApplicationInfo;

    fn deref(&self) -> &ApplicationInfo {
        &self.info
    }
}

impl std::fmt::Debug for Application<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.info.fmt(f)
    }
}

/// What happened, in a trace event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePhase {
    /// A module is about to handle a notification.
    ModuleStart,
    /// A module finished handling a notification, after `elapsed`.
    ModuleEnd {
        /// How long the call took.
        elapsed: Duration,
    },
    /// A module raised a trace event of its own.
    Custom,
}

/// A trace event (`RIIS_GL_TRACE_EVENT`): one module × notification of one
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent<'a> {
    /// The request URL.
    pub url: &'a str,
    /// The module.
    pub module: &'a str,
    /// The notification (`None` for a bit this SDK does not know).
    pub notification: Option<RequestNotification>,
    /// Whether it is the post-event.
    pub is_post: bool,
    /// Start, end, or a module's own event.
    pub phase: TracePhase,
}

/// What happened in a server cache (`RIIS_GL_CACHE_OPERATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOperation<'a> {
    /// An entry was added.
    Add {
        /// The entry's key (a physical path for the file cache).
        key: &'a str,
        /// Bytes it holds.
        bytes: u64,
    },
    /// An entry was removed.
    Remove {
        /// The entry's key.
        key: &'a str,
    },
}

/// A server-level module (IIS's `CGlobalModule`): one instance for the life
/// of the server, called for the global notifications it registered for
/// ([`crate::ModuleRegistration::set_global_notifications`]), from any
/// thread.
///
/// Every method defaults to [`GlobalNotificationStatus::Continue`];
/// [`GlobalNotificationStatus::Handled`] hides the notification from the
/// global modules after this one. A panic is caught, logged, and counts as
/// `Continue`.
#[allow(unused_variables)]
pub trait GlobalModule: Send + Sync + 'static {
    /// `OnGlobalPreBeginRequest`: before BeginRequest, with the request's
    /// context. The URL may still be changed here
    /// ([`crate::HttpRequest::set_url`]).
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalApplicationStart`: a site's application started. State the
    /// module's requests share can be stored in the site's container here
    /// ([`Application::set_module_context`]).
    fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalApplicationStop`: a site's application is stopping; its
    /// container still holds what was stored.
    fn on_global_application_stop(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalStopListening`: the server stopped accepting connections.
    fn on_global_stop_listening(&self) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalHealthCheck`: the periodic health check.
    fn on_global_health_check(&self) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalTraceEvent`: a module started or finished handling a
    /// notification, or raised a trace event of its own.
    fn on_global_trace_event(&self, event: &TraceEvent<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalCustomNotification`: a module raised a global custom
    /// notification.
    fn on_global_custom_notification(
        &self,
        provider: &mut CustomNotification,
    ) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalFileChange`: a file the server had cached changed or
    /// disappeared.
    fn on_global_file_change(&self, path: &Path) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalCacheOperation`: an entry was added to or removed from a
    /// server cache.
    fn on_global_cache_operation(
        &self,
        operation: &CacheOperation<'_>,
    ) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalCacheCleanup`: a cache is dropping entries nobody used lately.
    fn on_global_cache_cleanup(&self) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalRSCAQuery`: a runtime status query (`riis status`); what the
    /// module writes to `query` goes into the status report.
    fn on_global_rsca_query(&self, query: &mut RscaQuery<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalConfigurationChange`: the configuration was reloaded from
    /// `path`.
    fn on_global_configuration_change(&self, path: &Path) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `Terminate`: the server is shutting down.
    fn terminate(&self) {}
}
