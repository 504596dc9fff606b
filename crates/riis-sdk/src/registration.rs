//! Registration (`RegisterModule`, IIS's `IHttpModuleRegistrationInfo`) and
//! the global-module trampolines.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use riis_abi::{
    self as abi, riis_api, riis_global_module, riis_global_provider, riis_global_status,
    riis_hresult, riis_registration, riis_server,
};

use crate::completion::CallShared;
use crate::context::{CallKind, HttpContext, LogLevel, ReadState, Section};
use crate::error::ModuleError;
use crate::ffi;
use crate::instance::{FactoryHolder, ModuleInfo};
use crate::module::{
    Application, ApplicationInfo, CacheOperation, GlobalModule, HttpModuleFactory, TraceEvent,
    TracePhase,
};
use crate::provider::{CustomNotification, RscaQuery};
use riis_notification::{
    GlobalNotification, GlobalNotificationStatus, GlobalNotifications, Priority,
    RequestNotification, RequestNotifications,
};

/// The entry point a module provides: IIS's `RegisterModule(dwServerVersion,
/// pModuleInfo, pGlobalInfo)`, in Rust. Hand it to
/// [`crate::export_module!`] or [`crate::module_entry!`].
pub type RegisterModuleFn =
    fn(u32, &mut ModuleRegistration, &ServerInfo) -> Result<(), ModuleError>;

/// Writes to the server log, from anywhere and at any time (global modules,
/// factories, background threads). The server tags each line with the
/// module's name.
#[derive(Clone, Copy)]
pub struct Logger {
    api: &'static riis_api,
    /// The server's log source for the module (`registration_log_source`).
    source: u32,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Logger")
    }
}

impl Logger {
    pub(crate) fn new(api: &'static riis_api, source: u32) -> Self {
        Self { api, source }
    }

    /// Writes one line at `level`.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.log_raw(level.raw(), message);
    }

    /// Writes one line at an ABI log level.
    pub(crate) fn log_raw(&self, level: u32, message: &str) {
        let message = ffi::log_cstring(message);
        // SAFETY: the message is NUL-terminated; the table is valid for the
        // life of the process, and has `log_from_source` (the SDK refuses
        // an older one at registration); `log` accepts a NULL context.
        unsafe {
            if self.source != 0 {
                (self.api.log_from_source)(self.source, level, message.as_ptr());
            } else {
                (self.api.log)(std::ptr::null_mut(), level, message.as_ptr());
            }
        }
    }
}

/// What the server tells a module at registration (`riis_server`).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server software, e.g. `riis/0.1.0`.
    pub software: String,
    /// The server's ABI version (major in the high 16 bits).
    pub abi_version: u32,
    logger: Logger,
}

impl ServerInfo {
    /// A logger for the server log.
    pub fn logger(&self) -> Logger {
        self.logger
    }
}

/// The registration of one module (IIS's `IHttpModuleRegistrationInfo`),
/// valid during the entry point.
pub struct ModuleRegistration {
    raw: *mut riis_registration,
    info: Arc<ModuleInfo>,
    id: u32,
}

impl ModuleRegistration {
    fn check(&self, code: riis_hresult, operation: &str) -> Result<(), ModuleError> {
        ModuleError::check(code, operation).map_err(|e| {
            ModuleError::with_hresult(
                format!("module {}: {}", self.info.name, e.message),
                e.hresult,
            )
        })
    }

    /// `GetName`: the module's name in the configuration.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// `GetId`: the module's position in the module list.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A logger for the server log, to keep in global modules, factories
    /// and the module's own threads: its lines name the module.
    pub fn logger(&self) -> Logger {
        self.info.logger()
    }

    /// `SetRequestNotifications`: the factory that makes one instance per
    /// request, the notifications, and those whose post-events are wanted.
    pub fn set_request_notifications(
        &mut self,
        factory: impl HttpModuleFactory,
        notifications: RequestNotifications,
        post_notifications: RequestNotifications,
    ) -> Result<(), ModuleError> {
        self.set_request_notifications_boxed(Box::new(factory), notifications, post_notifications)
    }

    /// [`ModuleRegistration::set_request_notifications`] with a boxed
    /// factory.
    pub fn set_request_notifications_boxed(
        &mut self,
        factory: Box<dyn HttpModuleFactory>,
        notifications: RequestNotifications,
        post_notifications: RequestNotifications,
    ) -> Result<(), ModuleError> {
        let holder = FactoryHolder::leak(factory, self.info.clone());
        // SAFETY: the registration is live during the entry point; the
        // factory record lives in `holder` until its terminate callback.
        let code = unsafe {
            (self.info.api.set_request_notifications)(
                self.raw,
                &(*holder).raw,
                notifications.bits(),
                post_notifications.bits(),
            )
        };
        // On failure the holder is leaked rather than freed: the header does
        // not say whether the server kept the record.
        self.check(code, "set_request_notifications")
    }

    /// `SetPriorityForRequestNotification`.
    pub fn set_priority_for_request_notification(
        &mut self,
        notification: RequestNotification,
        priority: Priority,
    ) -> Result<(), ModuleError> {
        // SAFETY: the registration is live; the alias is a static C string.
        let code = unsafe {
            (self.info.api.set_priority_for_request_notification)(
                self.raw,
                notification.bit(),
                c_alias(priority).as_ptr(),
            )
        };
        self.check(code, "set_priority_for_request_notification")
    }

    /// The priority of a post-event.
    pub fn set_priority_for_post_request_notification(
        &mut self,
        notification: RequestNotification,
        priority: Priority,
    ) -> Result<(), ModuleError> {
        // SAFETY: as in `set_priority_for_request_notification`.
        let code = unsafe {
            (self.info.api.set_priority_for_post_request_notification)(
                self.raw,
                notification.bit(),
                c_alias(priority).as_ptr(),
            )
        };
        self.check(code, "set_priority_for_post_request_notification")
    }

    /// `SetGlobalNotifications`: a global module and the notifications it
    /// wants.
    pub fn set_global_notifications(
        &mut self,
        module: impl GlobalModule,
        notifications: GlobalNotifications,
    ) -> Result<(), ModuleError> {
        self.set_global_notifications_boxed(Box::new(module), notifications)
    }

    /// [`ModuleRegistration::set_global_notifications`] with a boxed module.
    pub fn set_global_notifications_boxed(
        &mut self,
        module: Box<dyn GlobalModule>,
        notifications: GlobalNotifications,
    ) -> Result<(), ModuleError> {
        let holder = GlobalHolder::leak(module, self.info.clone());
        // SAFETY: the registration is live; the record lives in `holder`
        // until its terminate callback.
        let code = unsafe {
            (self.info.api.set_global_notifications)(self.raw, &(*holder).raw, notifications.bits())
        };
        // Leaked on failure, as in `set_request_notifications_boxed`.
        self.check(code, "set_global_notifications")
    }

    /// `SetPriorityForGlobalNotification`.
    pub fn set_priority_for_global_notification(
        &mut self,
        notification: GlobalNotification,
        priority: Priority,
    ) -> Result<(), ModuleError> {
        // SAFETY: the registration is live; the alias is a static C string.
        let code = unsafe {
            (self.info.api.set_priority_for_global_notification)(
                self.raw,
                notification.bit(),
                c_alias(priority).as_ptr(),
            )
        };
        self.check(code, "set_priority_for_global_notification")
    }

    /// Declares a configuration section: riis.toml may then hold `[name]`
    /// at server, site and location level; read it with
    /// [`HttpContext::config_value`].
    pub fn declare_section(&mut self, name: &str) -> Result<Section, ModuleError> {
        let name = ffi::cstring(name, "declare_section")?;
        let mut id = 0u32;
        // SAFETY: the registration is live; the name is NUL-terminated; `id`
        // is a valid out-pointer.
        let code = unsafe { (self.info.api.declare_section)(self.raw, name.as_ptr(), &mut id) };
        self.check(code, "declare_section")?;
        Ok(Section(id))
    }

    /// Declares the section `name` as [`Self::declare_section`] does, with
    /// the only keys it may hold: any other key in the configuration is an
    /// error naming its file, line and key (ABI 1.12's
    /// `declare_section_keys`). Without it a misspelt key reads as missing
    /// and `riis check-config` lets it pass.
    pub fn declare_section_with_keys(
        &mut self,
        name: &str,
        keys: &[&str],
    ) -> Result<Section, ModuleError> {
        let section = self.declare_section(name)?;
        let owned = keys
            .iter()
            .map(|k| ffi::cstring(k, "declare_section_keys"))
            .collect::<Result<Vec<_>, _>>()?;
        let pointers: Vec<*const std::ffi::c_char> = owned.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: the registration is live; `pointers` holds `keys.len()`
        // NUL-terminated strings that outlive the call.
        let code = unsafe {
            (self.info.api.declare_section_keys)(
                self.raw,
                section.0,
                pointers.as_ptr(),
                pointers.len(),
            )
        };
        self.check(code, "declare_section_keys")?;
        Ok(section)
    }
}

/// Implements `RegisterModule` for `register`: validates what the server
/// passed, calls `register` with safe wrappers, and turns its error or panic
/// into a failure HRESULT. [`crate::export_module!`] and
/// [`crate::module_entry!`] expand to a call of this.
///
/// # Safety
///
/// The arguments must be those the server passes to a `RegisterModule`
/// entry point (`riis_register_module_fn`): `registration` and `server`
/// valid for the duration of the call, `server->api` valid for the life of
/// the process.
pub unsafe fn register_module(
    server_version: u32,
    registration: *mut riis_registration,
    server: *const riis_server,
    register: RegisterModuleFn,
) -> riis_hresult {
    if registration.is_null() || server.is_null() {
        return abi::hr::E_INVALIDARG;
    }
    // SAFETY: non-null and valid during this call (the caller's promise).
    let server = unsafe { &*server };
    let api_end = std::mem::offset_of!(riis_server, api) + std::mem::size_of::<*const riis_api>();
    if (server.size as usize) < api_end || server.api.is_null() {
        return abi::hr::E_INVALIDARG;
    }
    if server.abi_version >> 16 != abi::ABI_MAJOR {
        return abi::hr::E_REVISION_MISMATCH;
    }
    // SAFETY: the table is valid for the life of the process (header).
    let api: &'static riis_api = unsafe { &*server.api };
    if (api.size as usize) < std::mem::size_of::<riis_api>() {
        // An older table lacks functions the SDK calls.
        return abi::hr::E_REVISION_MISMATCH;
    }
    // SAFETY: the registration is live during the entry point.
    let name_ptr = unsafe { (api.registration_name)(registration) };
    // SAFETY: NULL or a server string valid during the entry point.
    let name = unsafe { ffi::str_from(name_ptr) }.unwrap_or("?").to_owned();
    // SAFETY: as above.
    let id = unsafe { (api.registration_id)(registration) };
    // SAFETY: `software` is NULL or a server string valid during the call.
    let software = unsafe { ffi::str_from(server.software) }
        .unwrap_or("")
        .to_owned();
    // SAFETY: as above.
    let log_source = unsafe { (api.registration_log_source)(registration) };
    let info = Arc::new(ModuleInfo {
        name,
        api,
        log_source,
    });
    let server_info = ServerInfo {
        software,
        abi_version: server.abi_version,
        logger: info.logger(),
    };
    let mut reg = ModuleRegistration {
        raw: registration,
        info: info.clone(),
        id,
    };
    match catch_unwind(AssertUnwindSafe(|| {
        register(server_version, &mut reg, &server_info)
    })) {
        Ok(Ok(())) => abi::hr::S_OK,
        Ok(Err(e)) => {
            info.log(
                std::ptr::null_mut(),
                abi::LOG_ERROR,
                &format!("module {} failed to register: {e}", info.name),
            );
            e.failure_code()
        }
        Err(panic) => {
            info.log(
                std::ptr::null_mut(),
                abi::LOG_ERROR,
                &format!(
                    "module {} panicked while registering: {}",
                    info.name,
                    ffi::panic_message(panic)
                ),
            );
            abi::hr::E_FAIL
        }
    }
}

// ---------------------------------------------------------- global module

/// A registered global module: the `riis_global_module` the server holds
/// points into this heap object, which lives until `terminate`.
struct GlobalHolder {
    raw: riis_global_module,
    module: Box<dyn GlobalModule>,
    info: Arc<ModuleInfo>,
}

impl GlobalHolder {
    fn leak(module: Box<dyn GlobalModule>, info: Arc<ModuleInfo>) -> *mut Self {
        let holder = Box::into_raw(Box::new(GlobalHolder {
            raw: riis_global_module {
                size: std::mem::size_of::<riis_global_module>() as u32,
                user_data: std::ptr::null_mut(),
                on_global_notification: Some(on_global_notification),
                terminate: Some(terminate_global),
            },
            module,
            info,
        }));
        // SAFETY: just allocated, not shared yet.
        unsafe { (*holder).raw.user_data = holder.cast() };
        holder
    }
}

unsafe extern "C" fn on_global_notification(
    user_data: *mut c_void,
    notification: u32,
    provider: *mut riis_global_provider,
) -> riis_global_status {
    if user_data.is_null() {
        return abi::GLOBAL_CONTINUE;
    }
    // SAFETY: the holder made by `GlobalHolder::leak`, alive until
    // `terminate`; only shared references are made (the module is `Sync`).
    let holder = unsafe { &*user_data.cast::<GlobalHolder>() };
    let Some(notification) = GlobalNotification::from_bit(notification) else {
        return abi::GLOBAL_CONTINUE;
    };
    let api = holder.info.api;
    let module = &*holder.module;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        dispatch_global(module, api, notification, provider)
    }));
    match outcome {
        Ok(status) => status.raw(),
        Err(panic) => {
            holder.info.log(
                std::ptr::null_mut(),
                abi::LOG_ERROR,
                &format!(
                    "global module {} panicked in {notification}: {}",
                    holder.info.name,
                    ffi::panic_message(panic)
                ),
            );
            abi::GLOBAL_CONTINUE
        }
    }
}

unsafe extern "C" fn terminate_global(user_data: *mut c_void) {
    if user_data.is_null() {
        return;
    }
    // SAFETY: the leaked holder; terminate is its last use.
    let holder = unsafe { Box::from_raw(user_data.cast::<GlobalHolder>()) };
    let info = holder.info.clone();
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        holder.module.terminate();
        drop(holder);
    }));
    if let Err(panic) = outcome {
        info.log(
            std::ptr::null_mut(),
            abi::LOG_ERROR,
            &format!(
                "global module {} panicked in terminate: {}",
                info.name,
                ffi::panic_message(panic)
            ),
        );
    }
}

/// A global provider string: valid until the notification returns.
///
/// # Safety
///
/// `ptr` is NULL or a string the server returned for the current global
/// notification.
unsafe fn global_str<'a>(ptr: *const c_char) -> &'a str {
    // SAFETY: the caller's promise.
    unsafe { ffi::str_from(ptr) }.unwrap_or("")
}

fn dispatch_global(
    m: &dyn GlobalModule,
    api: &'static riis_api,
    notification: GlobalNotification,
    provider: *mut riis_global_provider,
) -> GlobalNotificationStatus {
    use GlobalNotification as G;
    const CONTINUE: GlobalNotificationStatus = GlobalNotificationStatus::Continue;
    let needs_provider = matches!(
        notification,
        G::PreBeginRequest
            | G::ApplicationStart
            | G::ApplicationStop
            | G::TraceEvent
            | G::CustomNotification
            | G::FileChange
            | G::CacheOperation
            | G::RscaQuery
    );
    if needs_provider && provider.is_null() {
        return CONTINUE;
    }
    // Every `unsafe` call below passes the provider of the current global
    // notification, valid until it returns, to an accessor of its kind.
    match notification {
        G::PreBeginRequest => {
            // SAFETY: see above.
            let ctx = unsafe { (api.global_context)(provider) };
            if ctx.is_null() {
                return CONTINUE;
            }
            let shared = CallShared::dead(ctx, api);
            let mut ctx = HttpContext::new(ctx, api, CallKind::Global, shared, ReadState::EMPTY);
            m.on_global_pre_begin_request(&mut ctx)
        }
        G::ApplicationStart | G::ApplicationStop => {
            let (mut name, mut id, mut root) = (std::ptr::null(), 0u32, std::ptr::null());
            // SAFETY: see above; the out-pointers are valid locals.
            let code = unsafe { (api.global_application)(provider, &mut name, &mut id, &mut root) };
            if code < 0 {
                return CONTINUE;
            }
            let app = ApplicationInfo {
                site_id: id,
                // SAFETY: strings of this notification.
                site_name: unsafe { global_str(name) }.to_owned(),
                // SAFETY: as above.
                physical_root: unsafe { ffi::path_from(root) }
                    .map(ToOwned::to_owned)
                    .unwrap_or_default(),
            };
            let app = Application::new(app, provider, api);
            if notification == G::ApplicationStart {
                m.on_global_application_start(&app)
            } else {
                m.on_global_application_stop(&app)
            }
        }
        G::StopListening => m.on_global_stop_listening(),
        G::HealthCheck => m.on_global_health_check(),
        G::CacheCleanup => m.on_global_cache_cleanup(),
        G::ConfigurationChange => {
            // SAFETY: see above.
            let path = unsafe { ffi::path_from((api.global_file_path)(provider)) };
            m.on_global_configuration_change(path.unwrap_or(std::path::Path::new("")))
        }
        G::TraceEvent => {
            let (mut module, mut bit, mut post, mut url) =
                (std::ptr::null(), 0u32, 0, std::ptr::null());
            let (mut phase, mut elapsed) = (0u32, 0u64);
            // SAFETY: see above; the out-pointers are valid locals.
            let code = unsafe {
                (api.global_trace_event)(
                    provider,
                    &mut module,
                    &mut bit,
                    &mut post,
                    &mut url,
                    &mut phase,
                    &mut elapsed,
                )
            };
            if code < 0 {
                return CONTINUE;
            }
            let event = TraceEvent {
                // SAFETY: strings of this notification.
                url: unsafe { global_str(url) },
                // SAFETY: as above.
                module: unsafe { global_str(module) },
                notification: RequestNotification::from_bit(bit),
                is_post: post != 0,
                phase: match phase {
                    0 => TracePhase::ModuleStart,
                    1 => TracePhase::ModuleEnd {
                        elapsed: Duration::from_micros(elapsed),
                    },
                    _ => TracePhase::Custom,
                },
            };
            m.on_global_trace_event(&event)
        }
        G::CustomNotification => {
            // SAFETY: see above.
            let type_name = unsafe { global_str((api.global_custom_type)(provider)) };
            // SAFETY: see above.
            let data = unsafe { (api.global_custom_data)(provider) };
            m.on_global_custom_notification(&mut CustomNotification::new(type_name, data))
        }
        G::FileChange => {
            // SAFETY: see above.
            let path = unsafe { ffi::path_from((api.global_file_path)(provider)) };
            match path {
                Some(path) => m.on_global_file_change(path),
                None => CONTINUE,
            }
        }
        G::CacheOperation => {
            let (mut op, mut key, mut bytes) = (0u32, std::ptr::null(), 0u64);
            // SAFETY: see above; the out-pointers are valid locals.
            let code =
                unsafe { (api.global_cache_operation)(provider, &mut op, &mut key, &mut bytes) };
            if code < 0 {
                return CONTINUE;
            }
            // SAFETY: a string of this notification.
            let key = unsafe { global_str(key) };
            match op {
                abi::CACHE_ADD => m.on_global_cache_operation(&CacheOperation::Add { key, bytes }),
                abi::CACHE_REMOVE => m.on_global_cache_operation(&CacheOperation::Remove { key }),
                _ => CONTINUE,
            }
        }
        G::RscaQuery => {
            let (mut function, mut parameters) = (std::ptr::null(), std::ptr::null());
            // SAFETY: see above; the out-pointers are valid locals.
            let code = unsafe { (api.global_rsca_query)(provider, &mut function, &mut parameters) };
            if code < 0 {
                return CONTINUE;
            }
            // SAFETY: strings of this notification.
            let (function, parameters) = unsafe { (global_str(function), global_str(parameters)) };
            m.on_global_rsca_query(&mut RscaQuery::new(function, parameters, api, provider))
        }
        G::ApplicationResolveModules | G::ThreadCleanup | G::ApplicationPreload => CONTINUE,
    }
}

/// A priority's alias as the C string the ABI's `set_priority_*` functions take.
pub(crate) const fn c_alias(priority: Priority) -> &'static CStr {
    match priority {
        Priority::First => c"FIRST",
        Priority::High => c"HIGH",
        Priority::Medium => c"MEDIUM",
        Priority::Low => c"LOW",
        Priority::Last => c"LAST",
    }
}
