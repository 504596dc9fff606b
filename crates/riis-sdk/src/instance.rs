//! The request side of the boundary: the factory and instance trampolines
//! the server calls, which turn C calls into [`HttpModule`] method calls and
//! keep panics on this side.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use riis_abi::{
    self as abi, riis_allocator, riis_api, riis_completion_info, riis_context, riis_hresult,
    riis_module_callbacks, riis_module_factory, riis_module_instance, riis_provider, riis_status,
};

use crate::completion::{CallShared, Signal};
use crate::context::{CallKind, HttpContext, ReadState};
use crate::ffi;
use crate::module::{CompletedOperation, CompletionInfo, HttpModule, HttpModuleFactory};
use crate::provider::{
    CustomNotification, MapPathProvider, ReadEntityProvider, SendResponseProvider,
};
use riis_notification::{RequestNotification, RequestNotificationStatus};

/// What every trampoline of one module knows about it.
pub(crate) struct ModuleInfo {
    pub(crate) name: String,
    pub(crate) api: &'static riis_api,
    /// The server's log source for this module (0: none given).
    pub(crate) log_source: u32,
}

impl ModuleInfo {
    /// Logs through the server; `ctx` may be NULL (the line then names the
    /// module through its log source).
    pub(crate) fn log(&self, ctx: *mut riis_context, level: u32, message: &str) {
        if ctx.is_null() {
            self.logger().log_raw(level, message);
            return;
        }
        let message = ffi::log_cstring(message);
        // SAFETY: `ctx` is the live context of the current call; the
        // message is NUL-terminated.
        unsafe { (self.api.log)(ctx, level, message.as_ptr()) };
    }

    /// A logger that names this module.
    pub(crate) fn logger(&self) -> crate::Logger {
        crate::Logger::new(self.api, self.log_source)
    }
}

// ---------------------------------------------------------------- factory

/// A registered factory: the `riis_module_factory` the server holds points
/// into this heap object, which lives until `terminate`.
pub(crate) struct FactoryHolder {
    pub(crate) raw: riis_module_factory,
    factory: Box<dyn HttpModuleFactory>,
    info: Arc<ModuleInfo>,
}

impl FactoryHolder {
    /// A leaked holder whose `raw.user_data` points to itself.
    pub(crate) fn leak(factory: Box<dyn HttpModuleFactory>, info: Arc<ModuleInfo>) -> *mut Self {
        let holder = Box::into_raw(Box::new(FactoryHolder {
            raw: riis_module_factory {
                size: std::mem::size_of::<riis_module_factory>() as u32,
                user_data: std::ptr::null_mut(),
                get_http_module: Some(get_http_module),
                terminate: Some(terminate_factory),
            },
            factory,
            info,
        }));
        // SAFETY: `holder` was just allocated and is not shared yet.
        unsafe { (*holder).raw.user_data = holder.cast() };
        holder
    }
}

unsafe extern "C" fn get_http_module(
    user_data: *mut c_void,
    _allocator: *mut riis_allocator,
    instance: *mut riis_module_instance,
) -> riis_hresult {
    if user_data.is_null() || instance.is_null() {
        return abi::hr::E_INVALIDARG;
    }
    // SAFETY: `user_data` is the holder `FactoryHolder::leak` made, alive
    // until `terminate`; the server calls this only before that. Only shared
    // references to it are made (the factory is `Sync`).
    let holder = unsafe { &*user_data.cast::<FactoryHolder>() };
    let made = catch_unwind(AssertUnwindSafe(|| holder.factory.get_http_module()));
    let module = match made {
        Ok(Ok(module)) => module,
        Ok(Err(e)) => {
            holder.info.log(
                std::ptr::null_mut(),
                abi::LOG_ERROR,
                &format!("module {} could not be created: {e}", holder.info.name),
            );
            return e.failure_code();
        }
        Err(panic) => {
            holder.info.log(
                std::ptr::null_mut(),
                abi::LOG_ERROR,
                &format!(
                    "module {} panicked in its factory: {}",
                    holder.info.name,
                    ffi::panic_message(panic)
                ),
            );
            return abi::hr::E_FAIL;
        }
    };
    let state = Box::new(Instance {
        busy: AtomicBool::new(false),
        info: holder.info.clone(),
        inner: UnsafeCell::new(InstanceInner {
            module,
            failed: false,
            read: ReadState::EMPTY,
            shared: None,
        }),
    });
    // SAFETY: `instance` is a valid out-record (checked non-null above).
    unsafe {
        (*instance).callbacks = &CALLBACKS;
        (*instance).module = Box::into_raw(state).cast();
    }
    abi::hr::S_OK
}

unsafe extern "C" fn terminate_factory(user_data: *mut c_void) {
    if user_data.is_null() {
        return;
    }
    // SAFETY: `user_data` is the leaked holder; terminate is its last use,
    // so ownership comes back here.
    let holder = unsafe { Box::from_raw(user_data.cast::<FactoryHolder>()) };
    let name = holder.info.name.clone();
    let info = holder.info.clone();
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        holder.factory.terminate();
        drop(holder);
    }));
    if let Err(panic) = outcome {
        info.log(
            std::ptr::null_mut(),
            abi::LOG_ERROR,
            &format!(
                "module {name} panicked in its factory's terminate: {}",
                ffi::panic_message(panic)
            ),
        );
    }
}

// --------------------------------------------------------------- instance

/// The callbacks of every SDK module instance.
pub(crate) static CALLBACKS: riis_module_callbacks = riis_module_callbacks {
    size: std::mem::size_of::<riis_module_callbacks>() as u32,
    on_notification: Some(on_notification),
    on_async_completion: Some(on_async_completion),
    dispose: Some(dispose),
};

/// One module instance: the heap object behind `riis_module_instance.module`.
struct Instance {
    /// Set while a call runs: a re-entrant call (the server must not make
    /// one) is refused instead of aliasing `inner`.
    busy: AtomicBool,
    info: Arc<ModuleInfo>,
    inner: UnsafeCell<InstanceInner>,
}

struct InstanceInner {
    module: Box<dyn HttpModule>,
    /// The module panicked: it is not called again for this request.
    failed: bool,
    /// The body-read buffer, kept between calls.
    read: ReadState,
    /// Shared with completion handles; made at the first call, which brings
    /// the context (the same for every call of the instance).
    shared: Option<Arc<CallShared>>,
}

/// What the server asked for.
enum Call {
    Notification(*mut riis_provider),
    Completion(CompletionInfo),
}

unsafe extern "C" fn on_notification(
    module: *mut c_void,
    context: *mut riis_context,
    notification: u32,
    is_post: c_int,
    provider: *mut riis_provider,
) -> riis_status {
    if module.is_null() {
        return abi::STATUS_CONTINUE;
    }
    // SAFETY: `module` is the `Box<Instance>` made by `get_http_module`,
    // alive until `dispose`. Only shared references to `Instance` are made;
    // `inner` is reached through `enter`.
    let instance = unsafe { &*module.cast::<Instance>() };
    instance.enter(
        context,
        notification,
        is_post != 0,
        Call::Notification(provider),
    )
}

unsafe extern "C" fn on_async_completion(
    module: *mut c_void,
    context: *mut riis_context,
    notification: u32,
    is_post: c_int,
    _provider: *mut riis_provider,
    completion: *const riis_completion_info,
) -> riis_status {
    if module.is_null() {
        return abi::STATUS_CONTINUE;
    }
    let info = if completion.is_null() {
        CompletionInfo::default()
    } else {
        // SAFETY: non-null and valid during this call (header: completion
        // info lives for the call that received it).
        let c = unsafe { &*completion };
        let covers_operation = c.size as usize
            >= std::mem::offset_of!(riis_completion_info, operation) + std::mem::size_of::<u32>();
        CompletionInfo {
            bytes: c.bytes,
            status: c.status as u32,
            operation: if covers_operation {
                CompletedOperation::from_raw(c.operation)
            } else {
                CompletedOperation::Posted
            },
        }
    };
    // SAFETY: as in `on_notification`.
    let instance = unsafe { &*module.cast::<Instance>() };
    instance.enter(context, notification, is_post != 0, Call::Completion(info))
}

unsafe extern "C" fn dispose(module: *mut c_void) {
    if module.is_null() {
        return;
    }
    let instance = module.cast::<Instance>();
    // SAFETY: the instance is alive until this call; a shared reference to
    // read the flag.
    if unsafe { &*instance }.busy.load(Ordering::Acquire) {
        // Disposed from inside one of its own calls: freeing it now would
        // pull the module out from under that call. Leak it instead.
        // SAFETY: as above.
        let info = unsafe { &*instance }.info.clone();
        info.log(
            std::ptr::null_mut(),
            abi::LOG_ERROR,
            &format!(
                "module {} was disposed during its own call; leaked",
                info.name
            ),
        );
        return;
    }
    // SAFETY: dispose is the instance's last use: ownership comes back here.
    let Instance { info, inner, .. } = *unsafe { Box::from_raw(instance) };
    let inner = inner.into_inner();
    if let Some(shared) = &inner.shared {
        // Handles fail from now on (waits for one that is mid-call).
        shared.kill();
    }
    let outcome = catch_unwind(AssertUnwindSafe(move || drop(inner)));
    if let Err(panic) = outcome {
        info.log(
            std::ptr::null_mut(),
            abi::LOG_ERROR,
            &format!(
                "module {} panicked while being dropped: {}",
                info.name,
                ffi::panic_message(panic)
            ),
        );
    }
}

impl Instance {
    fn enter(
        &self,
        context: *mut riis_context,
        notification: u32,
        is_post: bool,
        call: Call,
    ) -> riis_status {
        if context.is_null() {
            return abi::STATUS_CONTINUE;
        }
        let Some(notification) = RequestNotification::from_bit(notification) else {
            self.info.log(
                context,
                abi::LOG_WARN,
                &format!(
                    "module {}: unknown notification 0x{notification:08X} ignored",
                    self.info.name
                ),
            );
            return abi::STATUS_CONTINUE;
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            self.info.log(
                context,
                abi::LOG_ERROR,
                &format!(
                    "module {} was called for {notification} during another of its calls; ignored",
                    self.info.name
                ),
            );
            return abi::STATUS_CONTINUE;
        }
        // SAFETY: `busy` was false and is now true: this is the only code
        // reaching `inner` until it is cleared below.
        let inner = unsafe { &mut *self.inner.get() };
        let status = inner.call(&self.info, context, notification, is_post, call);
        self.busy.store(false, Ordering::Release);
        status
    }
}

impl InstanceInner {
    /// Fails the request (see [`fail_request`]); the instance is not called
    /// again and reads nothing more.
    fn fail(
        &mut self,
        info: &ModuleInfo,
        context: *mut riis_context,
        description: &str,
    ) -> riis_status {
        self.failed = true;
        self.read.pending = None;
        fail_request(info, context, description);
        abi::STATUS_FINISH_REQUEST
    }

    fn call(
        &mut self,
        info: &ModuleInfo,
        context: *mut riis_context,
        notification: RequestNotification,
        is_post: bool,
        call: Call,
    ) -> riis_status {
        if self.failed {
            return abi::STATUS_CONTINUE;
        }
        let api = info.api;
        let shared = match &self.shared {
            Some(shared) if shared.context() == context => shared.clone(),
            _ => {
                // First call (or, against the header, a new context): handles
                // of an older context must stop reaching it.
                if let Some(old) = self.shared.take() {
                    old.kill();
                }
                self.shared.insert(CallShared::new(context, api)).clone()
            }
        };
        // Kept past the call, which consumes `call` (for a panic's line).
        let completion = matches!(call, Call::Completion(_));
        if completion && shared.take_abandoned() {
            // Posted when the last completion handle went without a signal.
            return self.fail(
                info,
                context,
                &format!(
                    "module {} dropped every completion handle without signalling",
                    info.name
                ),
            );
        }
        // SendResponse, ReadEntity, MapPath and custom notifications come
        // inside another module's call (or this one's own flush): they
        // neither end nor start a wait of this module.
        let nested = matches!(call, Call::Notification(_))
            && RequestNotification::NONDETERMINISTIC.contains(&notification);
        if matches!(call, Call::Notification(_)) && !nested {
            // A new event: any read of an earlier call was given up.
            self.read.pending = None;
        }
        let mut read = self.read;
        if let Call::Completion(c) = &call {
            // In full duplex a flush or a post completes while the read is
            // still under way. (The SDK loads only in servers of its own ABI
            // or newer, whose completions say which operation they are.)
            if let Some(asked) = read
                .pending
                .filter(|_| c.operation == CompletedOperation::Read)
            {
                read.pending = None;
                read.length = usize::try_from(c.bytes).unwrap_or(usize::MAX).min(asked);
            }
        }
        let mut ctx = HttpContext::new(context, api, CallKind::Request, shared.clone(), read);
        shared.enter_call();
        let module = &mut *self.module;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            dispatch(module, &mut ctx, api, notification, is_post, call)
        }));
        let pending = matches!(outcome, Ok(RequestNotificationStatus::Pending));
        self.read = ctx.read_state();
        // A nested call cannot wait (its Pending is Continue): a handle it
        // keeps must not make a later drop fail the request.
        let end = shared.leave_call(pending && !nested, self.read.pending.is_some());
        let deferred = end.deferred;
        drop(ctx);
        let status = match outcome {
            Ok(status) => status,
            Err(panic) => {
                let event = if is_post {
                    format!("Post{}", notification.name())
                } else {
                    notification.name().to_owned()
                };
                // A completion comes for the event that pended, as the
                // server words it for a module of its own.
                let when = if completion {
                    format!("OnAsyncCompletion (of {event})")
                } else {
                    event
                };
                let description = format!(
                    "module {} panicked in {when}: {}",
                    info.name,
                    ffi::panic_message(panic)
                );
                return self.fail(info, context, &description);
            }
        };
        if status != RequestNotificationStatus::Pending {
            // Nothing is read unless the module pends (a nested call's
            // status is not the module's: its read stays under way).
            if !nested {
                self.read.pending = None;
            }
            if deferred.is_some() {
                info.log(
                    context,
                    abi::LOG_WARN,
                    &format!(
                        "module {} signalled a completion handle during {notification} but did not return Pending; the signal is dropped",
                        info.name
                    ),
                );
            }
            return status.raw();
        }
        match deferred {
            // An operation of this call, or (full duplex) a body read under
            // way since an earlier one.
            None if end.operation || self.read.pending.is_some() => abi::STATUS_PENDING,
            // SendResponse and the other notifications that come inside
            // another call cannot wait: the server takes Pending there as
            // Continue, and so does the SDK (it failed the request).
            None if nested => abi::STATUS_CONTINUE,
            None if end.handles == 0 => {
                // Nothing can resume the request: no operation, no handle.
                self.fail(
                    info,
                    context,
                    &format!(
                        "module {} returned Pending from {notification} without starting an operation or keeping a completion handle",
                        info.name
                    ),
                )
            }
            // Waiting for a handle's signal (see `leave_call`).
            None => abi::STATUS_PENDING,
            // Completed before the module even returned: the same as
            // returning that status.
            Some(Signal::Indicate(status)) => {
                self.read.pending = None;
                status.raw()
            }
            Some(Signal::Post(bytes)) => {
                // SAFETY: the context is live and this is its calling thread,
                // during the call (allowed by the header).
                let code = unsafe { (api.post_completion)(context, bytes) };
                if code < 0 {
                    fail_request(
                        info,
                        context,
                        &format!(
                            "module {}: post_completion failed (0x{:08X})",
                            info.name, code as u32
                        ),
                    );
                    return abi::STATUS_FINISH_REQUEST;
                }
                abi::STATUS_PENDING
            }
        }
    }
}

/// Fails the request with an empty 500 (what the module wrote, headers
/// included, is dropped, as the in-process engine does), naming what
/// happened; closes the connection instead when the headers are already
/// out.
pub(crate) fn fail_request(info: &ModuleInfo, context: *mut riis_context, description: &str) {
    info.log(context, abi::LOG_ERROR, description);
    let api = info.api;
    let text = ffi::log_cstring(description);
    // SAFETY: the context is live during the call; the strings are
    // NUL-terminated and copied.
    unsafe {
        if (api.response_headers_sent)(context) != 0 {
            // Part of the response went out: it must not end as if whole
            // (a disconnect after it would), so the connection is reset,
            // as the server cuts short a failure of its own modules then.
            (api.response_reset_connection)(context);
        } else {
            (api.response_clear)(context);
            (api.response_set_status)(
                context,
                500,
                c"Internal Server Error".as_ptr(),
                0,
                abi::hr::E_FAIL,
            );
            (api.response_set_error_description)(context, text.as_ptr());
        }
    }
}

/// Calls the module method for a notification.
fn dispatch(
    m: &mut dyn HttpModule,
    ctx: &mut HttpContext,
    api: &'static riis_api,
    notification: RequestNotification,
    post: bool,
    call: Call,
) -> RequestNotificationStatus {
    use RequestNotification as N;
    let provider = match call {
        Call::Completion(info) => return m.on_async_completion(ctx, notification, post, &info),
        Call::Notification(provider) => provider,
    };
    let kind = |expected: u32| {
        // SAFETY: a non-null provider is valid during this call.
        !provider.is_null() && unsafe { (api.provider_kind)(provider) } == expected
    };
    match (notification, post) {
        (N::BeginRequest, false) => m.on_begin_request(ctx),
        (N::BeginRequest, true) => m.on_post_begin_request(ctx),
        (N::AuthenticateRequest, false) => m.on_authenticate_request(ctx),
        (N::AuthenticateRequest, true) => m.on_post_authenticate_request(ctx),
        (N::AuthorizeRequest, false) => m.on_authorize_request(ctx),
        (N::AuthorizeRequest, true) => m.on_post_authorize_request(ctx),
        (N::ResolveRequestCache, false) => m.on_resolve_request_cache(ctx),
        (N::ResolveRequestCache, true) => m.on_post_resolve_request_cache(ctx),
        (N::MapRequestHandler, false) => m.on_map_request_handler(ctx),
        (N::MapRequestHandler, true) => m.on_post_map_request_handler(ctx),
        (N::AcquireRequestState, false) => m.on_acquire_request_state(ctx),
        (N::AcquireRequestState, true) => m.on_post_acquire_request_state(ctx),
        (N::PreExecuteRequestHandler, false) => m.on_pre_execute_request_handler(ctx),
        (N::PreExecuteRequestHandler, true) => m.on_post_pre_execute_request_handler(ctx),
        (N::ExecuteRequestHandler, false) => m.on_execute_request_handler(ctx),
        (N::ExecuteRequestHandler, true) => m.on_post_execute_request_handler(ctx),
        (N::ReleaseRequestState, false) => m.on_release_request_state(ctx),
        (N::ReleaseRequestState, true) => m.on_post_release_request_state(ctx),
        (N::UpdateRequestCache, false) => m.on_update_request_cache(ctx),
        (N::UpdateRequestCache, true) => m.on_post_update_request_cache(ctx),
        (N::LogRequest, false) => m.on_log_request(ctx),
        (N::LogRequest, true) => m.on_post_log_request(ctx),
        (N::EndRequest, false) => m.on_end_request(ctx),
        (N::EndRequest, true) => m.on_post_end_request(ctx),
        (N::SendResponse, _) if kind(abi::PROVIDER_SEND_RESPONSE) => {
            m.on_send_response(ctx, &mut SendResponseProvider::new(provider, api))
        }
        (N::ReadEntity, _) if kind(abi::PROVIDER_READ_ENTITY) => {
            m.on_read_entity(ctx, &mut ReadEntityProvider::new(provider, api))
        }
        (N::MapPath, _) if kind(abi::PROVIDER_MAP_PATH) => {
            m.on_map_path(ctx, &mut MapPathProvider::new(provider, api))
        }
        (N::CustomNotification, _) if kind(abi::PROVIDER_CUSTOM) => {
            // SAFETY: a custom provider, valid during this call.
            let type_name = unsafe { ffi::str_from((api.custom_type)(provider)) }.unwrap_or("");
            // SAFETY: as above.
            let data = unsafe { (api.custom_data)(provider) };
            m.on_custom_request_notification(ctx, &mut CustomNotification::new(type_name, data))
        }
        // A provider notification without its provider: nothing to hand
        // the module.
        (N::SendResponse | N::ReadEntity | N::MapPath | N::CustomNotification, _) => {
            ctx.log(
                crate::LogLevel::Warn,
                &format!("{notification} arrived without its provider; the module was not called"),
            );
            RequestNotificationStatus::Continue
        }
    }
}
