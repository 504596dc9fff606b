//! Native request modules: a C factory and its instances, adapted to the
//! engine's [`HttpModuleFactory`] and [`HttpModule`].
//!
//! Every notification goes to the module's single `on_notification` callback
//! with the RQ_* bit, the post flag and, for the nondeterministic events, a
//! provider. A status other than the three the ABI defines fails the request
//! with 500, logged with module and notification.

use std::ffi::{c_int, c_void, CString};
use std::ptr;
use std::sync::{Arc, OnceLock};

use riis_abi::{
    hr, riis_completion_info, riis_module_callbacks, riis_module_factory, riis_module_instance,
    riis_provider,
};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletedOperation, CompletionInfo, CustomNotificationProvider, HttpContext, HttpModule,
    HttpModuleFactory, MapPathProvider, ModuleError, ModuleIndex, ReadEntityProvider,
    RequestNotification, RequestNotificationStatus, Section, SendResponseProvider,
};

use crate::frame::{EarlySignal, Frame, RunningGuard};
use crate::provider::{Provider, ProviderHandle};
use crate::registration::{Ending, Hold};

/// What every instance and the global module of one native module share.
pub(crate) struct ModuleShared {
    pub(crate) index: ModuleIndex,
    pub(crate) name: String,
    pub(crate) name_c: CString,
    /// Sections the module declared, by the number `declare_section` gave.
    pub(crate) sections: OnceLock<Vec<Section<toml::Table>>>,
    /// The ABI minor version the module was built for.
    pub(crate) abi_minor: u32,
}

/// The module's factory, copied from what `set_request_notifications` got.
pub(crate) struct NativeFactory {
    pub(crate) shared: Arc<ModuleShared>,
    pub(crate) user_data: *mut c_void,
    pub(crate) get_http_module: unsafe extern "C" fn(
        *mut c_void,
        *mut riis_abi::riis_allocator,
        *mut riis_module_instance,
    ) -> riis_abi::riis_hresult,
    /// Its `terminate` callback, and the configuration's hold on a
    /// registration later configurations share.
    pub(crate) ending: Ending,
}

// SAFETY: the ABI requires factories to be thread-safe (riis_module.h,
// THREADS); the server only passes the user data back to the module.
unsafe impl Send for NativeFactory {}
// SAFETY: as above.
unsafe impl Sync for NativeFactory {}

impl NativeFactory {
    /// Copies a factory the module handed over, reading only the fields its
    /// `size` covers.
    ///
    /// # Safety
    /// `factory` must point at a readable `riis_module_factory` of at least
    /// `size` bytes.
    pub(crate) unsafe fn from_raw(
        shared: Arc<ModuleShared>,
        factory: *const riis_module_factory,
    ) -> Result<Self, &'static str> {
        if factory.is_null() {
            return Err("the factory is NULL");
        }
        // SAFETY: non-null and readable per the contract; fields past `size`
        // are not read.
        let f = unsafe { &*factory };
        let needed = std::mem::offset_of!(riis_module_factory, get_http_module)
            + std::mem::size_of::<usize>();
        if (f.size as usize) < needed {
            return Err("the factory's size field is too small");
        }
        let Some(get_http_module) = f.get_http_module else {
            return Err("the factory has no get_http_module");
        };
        let terminate = if f.size as usize >= std::mem::size_of::<riis_module_factory>() {
            f.terminate
        } else {
            None
        };
        Ok(Self {
            shared,
            user_data: f.user_data,
            get_http_module,
            ending: Ending::new(terminate, f.user_data),
        })
    }

    /// The same factory, for another configuration's pipeline (`hold`), or
    /// as a registration keeps it (no hold).
    pub(crate) fn copy_for(&self, shared: Arc<ModuleShared>, hold: Option<Arc<Hold>>) -> Self {
        Self {
            shared,
            user_data: self.user_data,
            get_http_module: self.get_http_module,
            ending: self.ending.held(hold),
        }
    }
}

impl HttpModuleFactory for NativeFactory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        let frame = crate::frame::FrameBox::new(self.shared.clone());
        let mut instance = riis_module_instance {
            callbacks: ptr::null(),
            module: ptr::null_mut(),
        };
        let allocator = (&frame.arena as *const crate::frame::Arena)
            .cast_mut()
            .cast::<riis_abi::riis_allocator>();
        // The allocator may be used during this call, as during the
        // instance's own calls.
        let running = RunningGuard::enter(&frame);
        // SAFETY: the function and user data come from the module's
        // registration; the allocator and instance pointers are valid for the
        // call.
        let result = unsafe { (self.get_http_module)(self.user_data, allocator, &mut instance) };
        drop(running);
        if result < 0 {
            return Err(ModuleError::with_hresult(
                format!("get_http_module failed with 0x{:08X}", result as u32),
                result as u32,
            ));
        }
        if instance.callbacks.is_null() {
            return Err(ModuleError::new("get_http_module returned no callbacks"));
        }
        let table = instance.callbacks;
        let field_end = |offset: usize| offset + std::mem::size_of::<usize>();
        // Each field is read on its own once `size` says the module's table
        // has it: a table from an older header may be shorter than ours.
        // SAFETY: non-null, and the ABI requires the table to outlive the
        // instance; `size` is its first field, which every version has.
        let size = unsafe { ptr::addr_of!((*table).size).read() } as usize;
        let on_notification_end =
            field_end(std::mem::offset_of!(riis_module_callbacks, on_notification));
        if size < on_notification_end {
            // Without a size, dispose and on_async_completion would be
            // silently lost: refused, as an undersized factory is.
            return Err(ModuleError::new(
                "the callbacks table's size field is too small (set it to sizeof(riis_module_callbacks))",
            ));
        }
        let dispose = if size >= field_end(std::mem::offset_of!(riis_module_callbacks, dispose)) {
            // SAFETY: within the module's table, per `size`.
            unsafe { ptr::addr_of!((*table).dispose).read() }
        } else {
            None
        };
        // SAFETY: within the `size` bytes checked above.
        let Some(on_notification) = (unsafe { ptr::addr_of!((*table).on_notification).read() })
        else {
            // The module made an instance the server cannot use: handed
            // back to its own dispose, so it is not leaked.
            if let Some(dispose) = dispose {
                let running = RunningGuard::enter(&frame);
                // SAFETY: the instance the factory just returned, disposed
                // once, never called again.
                unsafe { dispose(instance.module) };
                drop(running);
            }
            return Err(ModuleError::new(
                "the module has no on_notification callback",
            ));
        };
        let on_async_completion = if size
            >= field_end(std::mem::offset_of!(
                riis_module_callbacks,
                on_async_completion
            )) {
            // SAFETY: within the module's table, per `size`.
            unsafe { ptr::addr_of!((*table).on_async_completion).read() }
        } else {
            None
        };
        Ok(Box::new(NativeModule {
            frame: std::mem::ManuallyDrop::new(frame),
            module: instance.module,
            on_notification,
            on_async_completion,
            dispose,
            owner: None,
        }))
    }

    fn terminate(&self) {
        self.ending.end(&self.shared);
    }
}

type NotificationFn = unsafe extern "C" fn(
    *mut c_void,
    *mut riis_abi::riis_context,
    u32,
    c_int,
    *mut riis_provider,
) -> riis_abi::riis_status;
type CompletionFn = unsafe extern "C" fn(
    *mut c_void,
    *mut riis_abi::riis_context,
    u32,
    c_int,
    *mut riis_provider,
    *const riis_completion_info,
) -> riis_abi::riis_status;

/// One instance of a native module, for one request.
pub(crate) struct NativeModule {
    /// Dropped with the instance, unless a completion is still outstanding
    /// (see `Drop`).
    frame: std::mem::ManuallyDrop<crate::frame::FrameBox>,
    module: *mut c_void,
    on_notification: NotificationFn,
    on_async_completion: Option<CompletionFn>,
    dispose: Option<unsafe extern "C" fn(*mut c_void)>,
    /// The request's pipeline, taken when the module first goes Pending
    /// with a completion of its own to signal: should the request end
    /// first, the orphaned instance keeps it (and so its factories) until
    /// its dispose has run, so no factory's Terminate comes before it.
    owner: Option<std::sync::Arc<riis_pipeline::Pipeline>>,
}

// SAFETY: the engine moves an instance between threads only between calls;
// the frame's raw pointers are set and used only during a call, on the
// calling thread, and the one cross-thread part (the completion slot) is a
// Mutex.
unsafe impl Send for NativeModule {}

impl Drop for NativeModule {
    fn drop(&mut self) {
        if self.frame.lock_completion().handle.is_some() {
            // The request ended while the module was Pending (the execution
            // limit, a vanished client). IIS never does that, so the
            // module's own thread may still signal through its context: the
            // instance and the frame stay until it does, and that signal
            // disposes and frees them (`api::context::signal`). Clones are
            // dropped now, on the engine's thread.
            let clones = std::mem::take(&mut *self.frame.clones.borrow_mut());
            drop(clones);
            // SAFETY: taken once; `self.frame` is not used after this.
            let frame = unsafe { std::mem::ManuallyDrop::take(&mut self.frame) }.into_raw();
            let orphan = crate::frame::Orphan {
                frame,
                dispose: self.dispose.map(|d| (d, self.module)),
                _owner: self.owner.take(),
            };
            // SAFETY: `frame` is live until an orphan's signal frees it, and
            // none can run before the orphan is stored below.
            let mut slot = unsafe { &*frame }.lock_completion();
            if slot.handle.is_some() {
                slot.orphan = Some(orphan);
                return;
            }
            // The signal came meanwhile: finish here after all.
            drop(slot);
            // SAFETY: no completion is outstanding: nothing else uses the
            // frame, which `Box::into_raw` gave up above.
            unsafe { release(orphan) };
            return;
        }
        if let Some(dispose) = self.dispose {
            let _running = RunningGuard::enter(&self.frame);
            // SAFETY: the module's dispose callback with its own instance,
            // called exactly once, when the request ends.
            unsafe { dispose(self.module) }
        }
        // SAFETY: the frame is dropped once, here, and nothing uses it after
        // the instance is gone (no completion is outstanding).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.frame) }
    }
}

/// Disposes an orphaned instance and frees its frame.
///
/// # Safety
/// `orphan` came from `NativeModule::drop` and nothing else uses its frame.
pub(crate) unsafe fn release(orphan: crate::frame::Orphan) {
    if let Some((dispose, module)) = orphan.dispose {
        // SAFETY: live until freed below.
        let _running = RunningGuard::enter(unsafe { &*orphan.frame });
        // SAFETY: the module's dispose callback with its own instance,
        // called exactly once.
        unsafe { dispose(module) }
    }
    // SAFETY: the pointer `Box::into_raw` gave; freed once, here.
    unsafe { crate::frame::free_frame(orphan.frame) };
}

impl NativeModule {
    /// Calls the module for `notification` and turns its answer into a status.
    fn call(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        is_post: bool,
        provider: Provider<'_>,
        completion: Option<&CompletionInfo>,
    ) -> RequestNotificationStatus {
        let frame = &*self.frame;
        if completion.is_none() && frame.lock_completion().handle.is_some() {
            // The request stopped waiting for this module (the execution
            // limit, a vanished client) while its operation still runs on
            // a thread of its own: it is not called again (IIS never calls
            // a pending module), as its members may be in use there.
            return RequestNotificationStatus::Continue;
        }
        // A read reports the bytes that went into the module's buffer.
        let delivered = match completion {
            Some(c) if c.operation == CompletedOperation::Read => deliver_read(frame, ctx),
            _ => None,
        };
        if completion.is_some_and(|c| c.operation == CompletedOperation::ExecuteRequest) {
            note_finished_children(frame, ctx);
        }
        frame.ctx.set(ctx);
        frame
            .connection
            .get_or_init(|| ctx.connection().liveness().clone());
        frame.op_started.set(false);
        let mut provider = ProviderHandle::new(frame, provider);
        let nested = provider.is_nested();
        // A nested call's frame is the call it runs inside: that call's
        // thread stays the one another thread's writes wait for.
        let outer_call;
        let written_while_parked = {
            let mut slot = frame.lock_completion();
            // A signal left from an earlier call (sent when the module had
            // not returned Pending) must not end this call's Pending early.
            slot.early = None;
            outer_call = slot.in_call.replace(crate::frame::this_thread());
            if completion.is_none() && !nested {
                // A new event: the module's earlier call ended, and with it
                // any read (and full-duplex wait) it left under way.
                frame.read_buffer.set(None);
                slot.duplex_handle = None;
            }
            // Written while the request was parked, which an operation's
            // completion (not the thread's signal) resumed.
            slot.take_parked()
        };
        for change in written_while_parked {
            change(ctx);
        }
        let provider_ptr = if provider.is_event() {
            ptr::null_mut()
        } else {
            provider.as_raw()
        };
        let raw = {
            let _running = RunningGuard::enter(frame);
            let _provider = crate::provider::ProviderGuard::enter(provider_ptr);
            match completion {
                None => {
                    // SAFETY: the module's callback with its own instance, a
                    // context handle valid for the whole request, and a
                    // provider valid for this call.
                    unsafe {
                        (self.on_notification)(
                            self.module,
                            frame.context_pointer(),
                            notification.bit(),
                            c_int::from(is_post),
                            provider_ptr,
                        )
                    }
                }
                Some(info) => match self.on_async_completion {
                    Some(on_async_completion) => {
                        let info = riis_completion_info {
                            size: std::mem::size_of::<riis_completion_info>() as u32,
                            status: info.status as i32,
                            bytes: delivered.unwrap_or(info.bytes),
                            operation: info.operation as u32,
                        };
                        // SAFETY: as above, with completion info valid for
                        // the call.
                        unsafe {
                            on_async_completion(
                                self.module,
                                frame.context_pointer(),
                                notification.bit(),
                                c_int::from(is_post),
                                provider_ptr,
                                &info,
                            )
                        }
                    }
                    None => riis_abi::STATUS_CONTINUE,
                },
            }
        };
        frame.ctx.set(ptr::null_mut());
        if raw != riis_abi::STATUS_PENDING || nested {
            // Nothing waits for the module's own signal: what its thread
            // wrote meanwhile is made now, as if the call had made it last
            // (a nested call leaves it to the call it runs in).
            let written = {
                let mut slot = frame.lock_completion();
                slot.in_call = outer_call;
                if nested {
                    Vec::new()
                } else {
                    slot.take_parked()
                }
            };
            for change in written {
                change(ctx);
            }
        }
        if raw != riis_abi::STATUS_PENDING && !nested {
            // A read started in a call that did not return Pending completes
            // without the module (in full duplex, is given up): its buffer
            // must not be written later, at some other operation's
            // completion. (A nested call's status is not the module's: a
            // read of its own call stays under way.)
            frame.read_buffer.set(None);
        }
        let Some(status) = RequestNotificationStatus::from_raw(raw) else {
            let when = if is_post {
                format!("Post{}", notification.name())
            } else {
                notification.name().to_owned()
            };
            tracing::error!(
                module = %frame.module.name,
                notification = %when,
                status = raw,
                "native module returned an invalid status; the request fails with 500"
            );
            fail(
                ctx,
                &format!(
                    "module {} returned the invalid status {raw} from {when}",
                    frame.module.name
                ),
            );
            return RequestNotificationStatus::FinishRequest;
        };
        // Pending from a nested notification (SendResponse, ReadEntity,
        // MapPath, a custom one) counts as Continue in the engine: no handle
        // is kept for it, or nothing would ever take it and the module would
        // be skipped for the rest of the request as if still pending.
        let pending = status == RequestNotificationStatus::Pending && !nested;
        // Pending without an operation: the module completes from its own
        // thread. In full duplex it may do so with an operation too, or with
        // a body read still under way from an earlier call, without owing
        // it (the read completes it otherwise).
        let owed = !frame.op_started.get() && frame.read_buffer.get().is_none();
        if pending && !(owed || ctx.is_full_duplex()) {
            // An operation completes this Pending: what the module's thread
            // wrote is made at its next call.
            frame.lock_completion().in_call = outer_call;
        }
        if pending && (owed || ctx.is_full_duplex()) {
            // Take a handle now, and apply a signal that beat us here; the
            // call ends in the same step, so a write of the module's thread
            // is either this call's or waits for the signal.
            let mut slot = frame.lock_completion();
            slot.in_call = outer_call;
            match slot.early.take() {
                // The signal beat us here: it completes this round now, and
                // no handle stays behind (a kept handle means a completion
                // still outstanding when the request ends, and the frame is
                // then leaked for it).
                Some(early) => {
                    // Made before the signal is acted on.
                    for change in slot.take_parked() {
                        change(ctx);
                    }
                    let handle = slot
                        .handle
                        .take()
                        .or_else(|| slot.duplex_handle.take())
                        .unwrap_or_else(|| ctx.completion_handle());
                    match early {
                        EarlySignal::Indicate(s) => handle.indicate_completion(s),
                        EarlySignal::Post(bytes) => handle.post_completion(bytes),
                    }
                    if !owed {
                        // Full duplex: the read stays under way beside the
                        // signal only while a handle lives (the engine
                        // would otherwise make it a plain read, first).
                        slot.duplex_handle = Some(handle);
                    }
                }
                None if owed => {
                    slot.handle.get_or_insert_with(|| ctx.completion_handle());
                    drop(slot);
                    if self.owner.is_none() {
                        self.owner = Some(ctx.pipeline_handle());
                    }
                }
                None => {
                    slot.duplex_handle
                        .get_or_insert_with(|| ctx.completion_handle());
                }
            }
        }
        status
    }
}

/// Copies the bytes of a finished body read into the module's buffer and
/// returns how many went in.
fn deliver_read(frame: &Frame, ctx: &mut HttpContext) -> Option<u64> {
    let (buffer, capacity) = frame.read_buffer.take()?;
    let data = ctx.request_mut().take_read_data();
    let n = data.len().min(capacity);
    // SAFETY: the module passed `buffer` with room for `capacity` bytes and
    // must keep it valid until this completion (riis_module.h,
    // request_read_entity_body).
    unsafe { ptr::copy_nonoverlapping(data.as_ptr(), buffer, n) };
    if n < data.len() {
        // A ReadEntity module grew the bytes past the buffer: the rest is
        // read next, as it is (not filtered a second time).
        ctx.request_mut().return_unread(data.slice(n..));
    }
    Some(n as u64)
}

/// Fails the request with 500 from inside the adapter.
pub(crate) fn fail(ctx: &mut HttpContext, description: &str) {
    let response = ctx.response_mut();
    if response.headers_sent() {
        // Cut short, not a clean end: the client must not take what it got
        // for the whole response.
        response.cut_short();
        return;
    }
    response.clear();
    response.set_error_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        0,
        hr::E_FAIL as u32,
    );
    response.set_error_description(description);
}

macro_rules! deterministic {
    ($($method:ident => $notification:ident, $post:expr;)*) => {
        $(
            fn $method(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
                let provider = if matches!(RequestNotification::$notification, RequestNotification::AuthenticateRequest) && !$post {
                    Provider::Authentication
                } else {
                    Provider::Event
                };
                self.call(ctx, RequestNotification::$notification, $post, provider, None)
            }
        )*
    };
}

impl HttpModule for NativeModule {
    deterministic! {
        on_begin_request => BeginRequest, false;
        on_post_begin_request => BeginRequest, true;
        on_authenticate_request => AuthenticateRequest, false;
        on_post_authenticate_request => AuthenticateRequest, true;
        on_authorize_request => AuthorizeRequest, false;
        on_post_authorize_request => AuthorizeRequest, true;
        on_resolve_request_cache => ResolveRequestCache, false;
        on_post_resolve_request_cache => ResolveRequestCache, true;
        on_map_request_handler => MapRequestHandler, false;
        on_post_map_request_handler => MapRequestHandler, true;
        on_acquire_request_state => AcquireRequestState, false;
        on_post_acquire_request_state => AcquireRequestState, true;
        on_pre_execute_request_handler => PreExecuteRequestHandler, false;
        on_post_pre_execute_request_handler => PreExecuteRequestHandler, true;
        on_execute_request_handler => ExecuteRequestHandler, false;
        on_post_execute_request_handler => ExecuteRequestHandler, true;
        on_release_request_state => ReleaseRequestState, false;
        on_post_release_request_state => ReleaseRequestState, true;
        on_update_request_cache => UpdateRequestCache, false;
        on_post_update_request_cache => UpdateRequestCache, true;
        on_log_request => LogRequest, false;
        on_post_log_request => LogRequest, true;
        on_end_request => EndRequest, false;
        on_post_end_request => EndRequest, true;
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        let p = Provider::SendResponse(provider);
        self.call(ctx, RequestNotification::SendResponse, false, p, None)
    }

    fn on_read_entity(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut ReadEntityProvider,
    ) -> RequestNotificationStatus {
        let p = Provider::ReadEntity(provider);
        self.call(ctx, RequestNotification::ReadEntity, false, p, None)
    }

    fn on_map_path(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut MapPathProvider,
    ) -> RequestNotificationStatus {
        let p = Provider::MapPath(provider);
        self.call(ctx, RequestNotification::MapPath, false, p, None)
    }

    fn on_custom_request_notification(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut dyn CustomNotificationProvider,
    ) -> RequestNotificationStatus {
        let p = Provider::Custom(provider);
        self.call(ctx, RequestNotification::CustomNotification, false, p, None)
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        self.call(
            ctx,
            notification,
            is_post,
            Provider::Event,
            Some(completion),
        )
    }
}

/// Notes, on each clone executed since, the status its child ended with
/// (the engine's note of it: the shared response holds the parent's again
/// after a child without headers).
fn note_finished_children(frame: &Frame, ctx: &HttpContext) {
    let Ok(clones) = frame.clones.try_borrow() else {
        return;
    };
    let Some((status, substatus)) = ctx.child_status() else {
        return;
    };
    let status = (status.as_u16(), substatus);
    for clone in clones.iter() {
        let executed = clone.context.try_borrow().is_ok_and(|c| c.is_none());
        if executed && clone.finished.get().is_none() {
            clone.finished.set(Some(status));
        }
    }
}
