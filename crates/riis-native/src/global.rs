//! Native global modules: a `riis_global_module` adapted to the engine's
//! [`GlobalModule`].

use std::cell::Cell;
use std::ffi::c_void;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use riis_abi::{riis_global_module, riis_global_provider};
use riis_pipeline::{
    Application, CacheOperation, CustomNotificationProvider, GlobalModule, GlobalNotification,
    GlobalNotificationStatus, HttpContext, RscaQuery, TraceEvent,
};

use crate::frame::{Arena, Frame, RunningGuard};
use crate::module::ModuleShared;
use crate::registration::{Ending, Hold};

thread_local! {
    /// The global provider of the global notification running on this thread.
    static RUNNING_GLOBAL: Cell<*const c_void> = const { Cell::new(ptr::null()) };
}

/// What a global notification hands over.
pub(crate) enum GlobalEvent<'a> {
    Plain,
    PreBeginRequest(&'a Frame),
    Application(&'a Application<'a>),
    Trace(&'a TraceEvent<'a>),
    Custom(&'a mut dyn CustomNotificationProvider),
    FileChange(&'a Path),
    Cache(&'a CacheOperation<'a>),
    /// RscaQuery: the function, its parameters, and what the module wrote.
    Rsca {
        function: &'a str,
        parameters: &'a str,
        output: &'a mut String,
    },
}

/// The object behind a `riis_global_provider*`, valid for one call.
pub(crate) struct GlobalProviderHandle<'a> {
    pub(crate) event: GlobalEvent<'a>,
    /// Strings handed out during the call.
    pub(crate) arena: Arena,
}

/// Resolves a global provider during its call.
///
/// # Safety
/// `p` must be NULL or a pointer the server passed to a global callback.
pub(crate) unsafe fn resolve_global<'a>(
    p: *mut riis_global_provider,
) -> Option<&'a mut GlobalProviderHandle<'a>> {
    if p.is_null() || RUNNING_GLOBAL.with(|r| r.get()) != p.cast_const().cast() {
        return None;
    }
    // SAFETY: the pointer is the handle of the global call running on this
    // thread (checked above), which lives on that call's stack.
    Some(unsafe { &mut *p.cast::<GlobalProviderHandle<'a>>() })
}

/// A module's global part, copied from what `set_global_notifications` got.
pub(crate) struct NativeGlobal {
    pub(crate) shared: Arc<ModuleShared>,
    pub(crate) user_data: *mut c_void,
    pub(crate) on_global_notification: unsafe extern "C" fn(
        *mut c_void,
        u32,
        *mut riis_global_provider,
    ) -> riis_abi::riis_global_status,
    /// Its `terminate` callback, and the configuration's hold on a
    /// registration later configurations share.
    pub(crate) ending: Ending,
}

// SAFETY: the ABI requires global modules to be thread-safe; the server only
// passes the user data back to the module.
unsafe impl Send for NativeGlobal {}
// SAFETY: as above.
unsafe impl Sync for NativeGlobal {}

impl NativeGlobal {
    /// Copies a global module the module handed over.
    ///
    /// # Safety
    /// `module` must point at a readable `riis_global_module` of at least
    /// `size` bytes.
    pub(crate) unsafe fn from_raw(
        shared: Arc<ModuleShared>,
        module: *const riis_global_module,
    ) -> Result<Self, &'static str> {
        if module.is_null() {
            return Err("the global module is NULL");
        }
        // SAFETY: non-null and readable per the contract.
        let m = unsafe { &*module };
        let needed = std::mem::offset_of!(riis_global_module, on_global_notification)
            + std::mem::size_of::<usize>();
        if (m.size as usize) < needed {
            return Err("the global module's size field is too small");
        }
        let Some(on_global_notification) = m.on_global_notification else {
            return Err("the global module has no on_global_notification");
        };
        let terminate = if m.size as usize >= std::mem::size_of::<riis_global_module>() {
            m.terminate
        } else {
            None
        };
        Ok(Self {
            shared,
            user_data: m.user_data,
            on_global_notification,
            ending: Ending::new(terminate, m.user_data),
        })
    }

    /// As [`crate::module::NativeFactory::copy_for`].
    pub(crate) fn copy_for(&self, shared: Arc<ModuleShared>, hold: Option<Arc<Hold>>) -> Self {
        Self {
            shared,
            user_data: self.user_data,
            on_global_notification: self.on_global_notification,
            ending: self.ending.held(hold),
        }
    }

    fn raise(
        &self,
        notification: GlobalNotification,
        event: GlobalEvent<'_>,
    ) -> GlobalNotificationStatus {
        let mut handle = GlobalProviderHandle {
            event,
            arena: Arena::default(),
        };
        let running_frame = match &handle.event {
            GlobalEvent::PreBeginRequest(frame) => RunningGuard::enter(frame),
            _ => RunningGuard::none(),
        };
        let p: *mut riis_global_provider = (&mut handle as *mut GlobalProviderHandle<'_>).cast();
        let previous = RUNNING_GLOBAL.with(|r| r.replace(p.cast_const().cast()));
        let named = crate::frame::ModuleGuard::enter(&self.shared);
        // SAFETY: the module's callback with its user data and a provider
        // valid for the call.
        let raw = unsafe { (self.on_global_notification)(self.user_data, notification.bit(), p) };
        RUNNING_GLOBAL.with(|r| r.set(previous));
        drop(named);
        drop(running_frame);
        match raw {
            riis_abi::GLOBAL_CONTINUE => GlobalNotificationStatus::Continue,
            riis_abi::GLOBAL_HANDLED => GlobalNotificationStatus::Handled,
            other => {
                tracing::error!(
                    module = %self.shared.name,
                    notification = %notification.name(),
                    status = other,
                    "native global module returned an invalid status; treated as continue"
                );
                GlobalNotificationStatus::Continue
            }
        }
    }
}

impl GlobalModule for NativeGlobal {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        let mut frame = crate::frame::FrameBox::new(self.shared.clone());
        frame.ctx.set(ctx);
        let status = self.raise(
            GlobalNotification::PreBeginRequest,
            GlobalEvent::PreBeginRequest(&frame),
        );
        frame.ctx.set(std::ptr::null_mut());
        // What the module allocated or was handed lives until the request
        // ends, as riis_module.h promises (it may have stored a pointer to
        // it as a request context).
        ctx.keep_until_request_end(frame.take_arena());
        status
    }

    fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::ApplicationStart,
            GlobalEvent::Application(app),
        )
    }

    fn on_global_application_stop(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::ApplicationStop,
            GlobalEvent::Application(app),
        )
    }

    fn on_global_stop_listening(&self) -> GlobalNotificationStatus {
        self.raise(GlobalNotification::StopListening, GlobalEvent::Plain)
    }

    fn on_global_health_check(&self) -> GlobalNotificationStatus {
        self.raise(GlobalNotification::HealthCheck, GlobalEvent::Plain)
    }

    fn on_global_trace_event(&self, event: &TraceEvent<'_>) -> GlobalNotificationStatus {
        self.raise(GlobalNotification::TraceEvent, GlobalEvent::Trace(event))
    }

    fn on_global_custom_notification(
        &self,
        provider: &mut dyn CustomNotificationProvider,
    ) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::CustomNotification,
            GlobalEvent::Custom(provider),
        )
    }

    fn on_global_file_change(&self, path: &Path) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::FileChange,
            GlobalEvent::FileChange(path),
        )
    }

    fn on_global_cache_operation(
        &self,
        operation: &CacheOperation<'_>,
    ) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::CacheOperation,
            GlobalEvent::Cache(operation),
        )
    }

    fn on_global_cache_cleanup(&self) -> GlobalNotificationStatus {
        self.raise(GlobalNotification::CacheCleanup, GlobalEvent::Plain)
    }

    fn on_global_rsca_query(&self, query: &mut RscaQuery<'_>) -> GlobalNotificationStatus {
        // The module writes into a string of its own, appended when it
        // returns: the query's function and parameters stay borrowed
        // meanwhile.
        let mut output = String::new();
        let status = self.raise(
            GlobalNotification::RscaQuery,
            GlobalEvent::Rsca {
                function: query.function(),
                parameters: query.parameters(),
                output: &mut output,
            },
        );
        query.write(&output);
        status
    }

    fn on_global_configuration_change(&self, path: &Path) -> GlobalNotificationStatus {
        self.raise(
            GlobalNotification::ConfigurationChange,
            GlobalEvent::FileChange(path),
        )
    }

    fn terminate(&self) {
        self.ending.end(&self.shared);
    }
}
