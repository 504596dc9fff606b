//! The module traits: [`HttpModule`] (IIS's `CHttpModule`), its factory, and
//! [`GlobalModule`] (IIS's `CGlobalModule`).

use crate::context::HttpContext;
use crate::global::{Application, CacheOperation, TraceEvent};
use crate::provider::{
    CompletionInfo, CustomNotificationProvider, MapPathProvider, ReadEntityProvider,
    SendResponseProvider,
};
use riis_notification::{GlobalNotificationStatus, RequestNotification, RequestNotificationStatus};

use RequestNotificationStatus::Continue;

/// A request-level module: one instance per request, one method per notification.
///
/// The pipeline calls only the methods for the notifications the module
/// registered for; every method defaults to [`Continue`], so a module implements
/// only what it registered for. The instance is created by the module's
/// [`HttpModuleFactory`] the first time the request reaches one of those
/// notifications, and dropped (IIS's `Dispose`) when the request ends.
///
/// Operations a module starts during a call (a flush, an asynchronous write or
/// body read, a child request, a posted completion) take effect when the call
/// returns, before any other module runs. When the module returned
/// [`RequestNotificationStatus::Pending`], the completion of that operation comes
/// back through [`HttpModule::on_async_completion`].
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
    /// `OnAuthenticateRequest`.
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
    /// `OnExecuteRequestHandler`: runs only for the modules of the handler chosen
    /// at MapRequestHandler, in that handler's order.
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
    /// `OnSendResponse`: response data is about to be sent. Synchronous only:
    /// `Pending` is treated as `Continue`.
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
    /// check [`CustomNotificationProvider::notification_type`].
    fn on_custom_request_notification(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut dyn CustomNotificationProvider,
    ) -> RequestNotificationStatus {
        Continue
    }
    /// `OnAsyncCompletion`: an asynchronous operation this module started while
    /// handling `notification` (a post-event when `is_post`) completed. The
    /// returned status is taken as if the original handler had returned it.
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

/// A failure a factory or registration reports, with an HRESULT-style code
/// for native callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    /// What went wrong.
    pub message: String,
    /// The HRESULT that goes with it (`E_FAIL` unless more is known).
    pub hresult: u32,
}

impl ModuleError {
    /// `E_FAIL`.
    pub const E_FAIL: u32 = 0x8000_4005;
    /// `E_OUTOFMEMORY`.
    pub const E_OUTOFMEMORY: u32 = 0x8007_000E;
    /// `E_INVALIDARG`.
    pub const E_INVALIDARG: u32 = 0x8007_0057;
    /// `HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)`.
    pub const E_NOT_SUPPORTED: u32 = 0x8007_0032;
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_STATE)`: the call is not allowed
    /// now (an operation started from a nested notification).
    pub const E_INVALID_STATE: u32 = 0x8007_139F;
    /// `HRESULT_FROM_WIN32(ERROR_HANDLE_EOF)`: a body read asked for after
    /// a read already completed empty at the end of the body.
    pub const E_HANDLE_EOF: u32 = 0x8007_0026;

    /// An error with `E_FAIL`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hresult: Self::E_FAIL,
        }
    }

    /// An error with a given HRESULT.
    pub fn with_hresult(message: impl Into<String>, hresult: u32) -> Self {
        Self {
            message: message.into(),
            hresult,
        }
    }
}

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:08X})", self.message, self.hresult)
    }
}

impl std::error::Error for ModuleError {}

/// Makes one [`HttpModule`] per request (IIS's `IHttpModuleFactory`).
pub trait HttpModuleFactory: Send + Sync + 'static {
    /// `GetHttpModule`: a new instance for one request. An error fails that
    /// request with 500.
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

/// A server-level module (IIS's `CGlobalModule`): one instance for the life of
/// the server, called for the global notifications it registered for.
///
/// Every method defaults to [`GlobalNotificationStatus::Continue`].
/// Returning [`GlobalNotificationStatus::Handled`] hides the notification from
/// the global modules after this one.
#[allow(unused_variables)]
pub trait GlobalModule: Send + Sync + 'static {
    /// `OnGlobalPreBeginRequest`: before BeginRequest. The request URL may
    /// still be changed here.
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalApplicationStart`: a site's application started. State the
    /// module's requests share can be stored in the site's container here
    /// ([`Application::module_contexts`] at [`Application::module`]).
    fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalApplicationStop`: a site's application is stopping; its
    /// container still holds what was stored.
    fn on_global_application_stop(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalStopListening`: the server stopped accepting new connections
    /// and is draining.
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
    /// `OnGlobalCustomNotification`: a module raised a global custom notification.
    fn on_global_custom_notification(
        &self,
        provider: &mut dyn CustomNotificationProvider,
    ) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalFileChange`: a file the server had cached changed or
    /// disappeared.
    fn on_global_file_change(&self, path: &std::path::Path) -> GlobalNotificationStatus {
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

    /// `OnGlobalRSCAQuery`: a runtime status query (`riis status` asks for
    /// the function `status`); answer by writing to `query`.
    fn on_global_rsca_query(
        &self,
        query: &mut crate::global::RscaQuery<'_>,
    ) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `OnGlobalConfigurationChange`: the server loaded a new configuration
    /// from `path`; raised on the new pipeline before its first request.
    fn on_global_configuration_change(&self, path: &std::path::Path) -> GlobalNotificationStatus {
        GlobalNotificationStatus::Continue
    }
    /// `Terminate`: the server is shutting down.
    fn terminate(&self) {}
}
