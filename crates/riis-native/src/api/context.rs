//! Context functions: the request as a whole, module contexts, custom
//! notifications, child requests, completion, configuration and logging.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use riis_abi::{hr, riis_allocator, riis_context, riis_execution_stats, riis_hresult, riis_status};
use riis_pipeline::{
    Application, ExecuteFlags, HttpContext, ModuleIndex, RequestNotificationStatus,
    SharedContextContainer,
};

use super::{context_hr, no_unwind, text, with_context};
use crate::frame::{
    running_frame_of, running_module_name, with_live_frame, Arena, ClonedContext, EarlySignal,
};
use crate::provider::NativeNotification;

pub(super) unsafe extern "C" fn allocator_allocate(
    allocator: *mut riis_allocator,
    bytes: usize,
) -> *mut c_void {
    no_unwind("allocator_allocate", ptr::null_mut(), || {
        // Only during a call of the allocator's own request, on its thread:
        // the arena is neither thread-safe nor alive after the request.
        match crate::frame::running_arena(allocator.cast_const().cast::<Arena>()) {
            Some(arena) => arena.allocate(bytes).cast(),
            None => ptr::null_mut(),
        }
    })
}

pub(super) unsafe extern "C" fn context_allocate(
    ctx: *mut riis_context,
    bytes: usize,
) -> *mut c_void {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_allocate", ctx, ptr::null_mut(), |frame, _| {
            Ok(frame.arena.allocate(bytes).cast())
        })
    }
}

pub(super) unsafe extern "C" fn site_name(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_site_name", ctx, ptr::null(), |frame, ctx| {
            Ok(frame.arena.string(&ctx.site().site_name))
        })
    }
}

pub(super) unsafe extern "C" fn site_id(ctx: *mut riis_context) -> u32 {
    // SAFETY: the handle is checked by with_context.
    unsafe { with_context("context_site_id", ctx, 0, |_, ctx| Ok(ctx.site().site_id)) }
}

pub(super) unsafe extern "C" fn request_id(ctx: *mut riis_context) -> u64 {
    // SAFETY: the handle is checked by with_context.
    unsafe { with_context("context_request_id", ctx, 0, |_, ctx| Ok(ctx.request_id())) }
}

pub(super) unsafe extern "C" fn physical_path(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_physical_path", ctx, ptr::null(), |frame, ctx| {
            let path = ctx.physical_path().to_str().ok_or(hr::E_FAIL)?;
            Ok(frame.arena.string(path))
        })
    }
}

pub(super) unsafe extern "C" fn map_path(
    ctx: *mut riis_context,
    url: *const c_char,
) -> *const c_char {
    // SAFETY: the handle is checked by with_context; `url` is a C string.
    unsafe {
        with_context("context_map_path", ctx, ptr::null(), |frame, ctx| {
            let url = text(url)?;
            let path = ctx.map_path(url);
            Ok(frame.arena.string(path.to_str().ok_or(hr::E_FAIL)?))
        })
    }
}

pub(super) unsafe extern "C" fn virtual_directory(
    ctx: *mut riis_context,
    path: *mut *const c_char,
    physical_path: *mut *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the outputs are NULL or
    // writable, as the header says.
    unsafe {
        context_hr("context_virtual_directory", ctx, |frame, ctx| {
            let directory = ctx.virtual_directory();
            let folder = directory.physical_path.to_str().ok_or(hr::E_FAIL)?;
            if !path.is_null() {
                *path = frame.arena.string(&directory.path);
            }
            if !physical_path.is_null() {
                *physical_path = frame.arena.string(folder);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn location_path(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_location_path", ctx, ptr::null(), |frame, ctx| {
            Ok(frame.arena.string(ctx.location().path()))
        })
    }
}

pub(super) unsafe extern "C" fn handler_name(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_handler_name", ctx, ptr::null(), |frame, ctx| {
            Ok(ctx
                .handler_name()
                .map_or(ptr::null(), |name| frame.arena.string(name)))
        })
    }
}

pub(super) unsafe extern "C" fn set_request_handled(ctx: *mut riis_context) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("context_set_request_handled", ctx, |_, ctx| {
            ctx.set_request_handled();
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn enable_full_duplex(ctx: *mut riis_context) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("context_enable_full_duplex", ctx, |_, ctx| {
            ctx.enable_full_duplex();
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn connection_is_connected(ctx: *mut riis_context) -> c_int {
    no_unwind("connection_is_connected", 0, || {
        if running_frame_of(ctx).is_none() {
            // From the module's own thread: the completion handle it holds
            // knows whether the request still waits for it. A frame no
            // longer live is a request that ended.
            let answer = with_live_frame(ctx, |frame| {
                // SAFETY: live while `with_live_frame` runs this; only its
                // completion slot (a Mutex) and its connection state (a
                // OnceLock) are touched, both made for other threads.
                let frame = unsafe { &*frame };
                let slot = frame.lock_completion();
                // Neither held (the module's call runs, or it waits for a
                // read of its own, or it signalled already): the
                // connection's state, set at its first call.
                match slot.handle.as_ref().or(slot.duplex_handle.as_ref()) {
                    Some(handle) => handle.is_client_connected(),
                    None => frame
                        .connection
                        .get()
                        .is_some_and(riis_pipeline::ConnectionLiveness::is_connected),
                }
            });
            if let Some(answer) = answer {
                return c_int::from(answer);
            }
            if crate::frame::running_frame().is_none() {
                // Asked outside any call, through a handle whose request
                // ended: quietly no (a thread polling it is not an error).
                return 0;
            }
        }
        // SAFETY: the handle is checked by with_context.
        unsafe {
            with_context("connection_is_connected", ctx, 0, |_, ctx| {
                Ok(c_int::from(ctx.is_client_connected()))
            })
        }
    })
}

pub(super) unsafe extern "C" fn is_last_notification(
    ctx: *mut riis_context,
    status: riis_status,
) -> c_int {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_is_last_notification", ctx, 0, |_, ctx| {
            let status = RequestNotificationStatus::from_raw(status).ok_or(hr::E_INVALIDARG)?;
            Ok(c_int::from(ctx.is_last_notification(status)))
        })
    }
}

pub(super) unsafe extern "C" fn execution_stats(
    ctx: *mut riis_context,
    stats: *mut riis_execution_stats,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `stats` is writable for
    // the size it declares.
    unsafe {
        context_hr("context_execution_stats", ctx, |frame, ctx| {
            if stats.is_null()
                || ((*stats).size as usize) < std::mem::size_of::<riis_execution_stats>()
            {
                return Err(hr::E_INVALIDARG);
            }
            let current = ctx.current_execution_stats().ok_or(hr::E_INVALID_STATE)?;
            let out = &mut *stats;
            out.notification = current.notification.bit();
            out.is_post = c_int::from(current.is_post);
            out.module = frame.arena.string(current.module);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn server_variable(
    ctx: *mut riis_context,
    name: *const c_char,
    length: *mut usize,
) -> *const c_char {
    // SAFETY: the handle is checked by with_context; `name` is a C string and
    // `length` NULL or writable.
    unsafe {
        with_context("server_variable", ctx, ptr::null(), |frame, ctx| {
            let name = text(name)?;
            let Some(value) = ctx.server_variable(name) else {
                return Ok(ptr::null());
            };
            if !length.is_null() {
                *length = value.len();
            }
            Ok(frame.arena.string(&value))
        })
    }
}

pub(super) unsafe extern "C" fn set_server_variable(
    ctx: *mut riis_context,
    name: *const c_char,
    value: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; both are C strings.
    unsafe {
        context_hr("set_server_variable", ctx, |_, ctx| {
            let name = text(name)?;
            let value = text(value)?;
            ctx.set_server_variable(name, value.to_owned());
            Ok(())
        })
    }
}

/// A pointer a native module stored as a module context, released through
/// its cleanup callback exactly once (when dropped).
struct StoredContext {
    data: *mut c_void,
    cleanup: Option<unsafe extern "C" fn(*mut c_void)>,
    /// At connection scope, the configuration whose request stored it: the
    /// connection outlives configurations, and module indexes mean another
    /// module in the next one. Held, so that configuration's modules are
    /// not stopped before the cleanup runs (a field drops after `drop`).
    owner: Option<Arc<riis_pipeline::Pipeline>>,
}

// SAFETY: the server never dereferences `data`; the ABI makes the module
// responsible for the thread safety of what it stores at connection and site
// scope, which concurrent requests share.
unsafe impl Send for StoredContext {}
// SAFETY: as above.
unsafe impl Sync for StoredContext {}

impl Drop for StoredContext {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup {
            // SAFETY: the module's own cleanup for its own pointer, once.
            unsafe { cleanup(self.data) }
        }
    }
}

pub(super) unsafe extern "C" fn module_context(ctx: *mut riis_context, scope: u32) -> *mut c_void {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("module_context", ctx, ptr::null_mut(), |frame, ctx| {
            let m = frame.module_index();
            Ok(match scope {
                riis_abi::SCOPE_REQUEST => ctx
                    .module_contexts()
                    .get::<StoredContext>(m)
                    .map_or(ptr::null_mut(), |s| s.data),
                riis_abi::SCOPE_CONNECTION => ctx
                    .connection_contexts()
                    .get::<StoredContext>(m)
                    .filter(|s| {
                        s.owner
                            .as_ref()
                            .is_some_and(|o| std::ptr::eq(&**o, ctx.pipeline()))
                    })
                    .map_or(ptr::null_mut(), |s| s.data),
                riis_abi::SCOPE_SITE => ctx
                    .site_contexts()
                    .get::<StoredContext>(m)
                    .map_or(ptr::null_mut(), |s| s.data),
                _ => return Err(hr::E_INVALIDARG),
            })
        })
    }
}

pub(super) unsafe extern "C" fn set_module_context(
    ctx: *mut riis_context,
    scope: u32,
    data: *mut c_void,
    cleanup: Option<unsafe extern "C" fn(*mut c_void)>,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("set_module_context", ctx, |frame, ctx| {
            let m = frame.module_index();
            let mut stored = StoredContext {
                data,
                cleanup,
                owner: None,
            };
            // Shared scopes never replace a value: another request may be
            // using the pointer it read (IIS answers ERROR_ALREADY_ASSIGNED).
            let shared = match scope {
                riis_abi::SCOPE_REQUEST => {
                    let contexts = ctx.module_contexts_mut();
                    // Storing the pointer that is stored already (a module
                    // that stores its state on every notification) replaces
                    // nothing: the old record's cleanup would free what
                    // stays stored, and the request's end free it again.
                    if let Some(old) = contexts.get_mut::<StoredContext>(m) {
                        if old.data == data {
                            old.cleanup = None;
                        }
                    }
                    contexts.set(m, stored);
                    return Ok(());
                }
                // A shared value is never removed (another request may use
                // it), so storing NULL there could only block the slot.
                riis_abi::SCOPE_CONNECTION | riis_abi::SCOPE_SITE if data.is_null() => {
                    stored.cleanup = None;
                    return Err(hr::E_INVALIDARG);
                }
                riis_abi::SCOPE_CONNECTION => {
                    stored.owner = Some(ctx.pipeline_handle());
                    ctx.connection_contexts()
                }
                riis_abi::SCOPE_SITE => ctx.site_contexts(),
                _ => {
                    // Not stored: the module keeps ownership, so no cleanup.
                    stored.cleanup = None;
                    return Err(hr::E_INVALIDARG);
                }
            };
            store_shared(shared, m, stored)
        })
    }
}

/// Stores a module's pointer in a container that concurrent requests share
/// (a connection's or a site's): only into an empty slot, so a pointer once
/// read stays valid. On failure the module keeps ownership: no cleanup.
fn store_shared(
    shared: &SharedContextContainer,
    m: ModuleIndex,
    stored: StoredContext,
) -> Result<(), riis_hresult> {
    let Err(refused) = shared.insert_if_absent(m, Arc::new(stored)) else {
        return Ok(());
    };
    // The value came back whole: nothing else ever held it.
    if let Ok(mut refused) = Arc::try_unwrap(refused) {
        refused.cleanup = None;
    }
    Err(hr::E_ALREADY_ASSIGNED)
}

/// A module's pointer in a site's container (ApplicationStart and
/// ApplicationStop), or NULL.
pub(super) fn site_module_context(app: &Application<'_>) -> *mut c_void {
    app.module_contexts()
        .get::<StoredContext>(app.module())
        .map_or(ptr::null_mut(), |s| s.data)
}

/// Stores a module's pointer in a site's container, as a request's store at
/// `RIIS_SCOPE_SITE` does.
pub(super) fn set_site_module_context(
    app: &Application<'_>,
    data: *mut c_void,
    cleanup: Option<unsafe extern "C" fn(*mut c_void)>,
) -> Result<(), riis_hresult> {
    if data.is_null() {
        return Err(hr::E_INVALIDARG);
    }
    let stored = StoredContext {
        data,
        cleanup,
        owner: None,
    };
    store_shared(app.module_contexts(), app.module(), stored)
}

pub(super) unsafe extern "C" fn raise_custom_notification(
    ctx: *mut riis_context,
    type_name: *const c_char,
    data: *mut c_void,
) -> riis_hresult {
    let flags = undeclared_flags(ctx);
    // SAFETY: forwarded.
    unsafe { raise_custom_notification_with_flags(ctx, type_name, data, flags) }
}

/// The flags of a raise that said none: [`riis_abi::CUSTOM_UNDECLARED`]
/// for a module built for an ABI before 1.7, which could not say.
fn undeclared_flags(ctx: *mut riis_context) -> u32 {
    match running_frame_of(ctx) {
        Some(frame) if frame.module.abi_minor < 7 => riis_abi::CUSTOM_UNDECLARED,
        _ => 0,
    }
}

pub(super) unsafe extern "C" fn raise_custom_notification_with_flags(
    ctx: *mut riis_context,
    type_name: *const c_char,
    data: *mut c_void,
    flags: u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `type_name` is a C string.
    unsafe {
        context_hr("raise_custom_notification", ctx, |_, ctx| {
            let type_name = text(type_name)?.to_owned();
            let mut provider = NativeNotification::new(type_name, data, flags);
            ctx.raise_custom_notification(&mut provider);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn raise_global_custom_notification(
    ctx: *mut riis_context,
    type_name: *const c_char,
    data: *mut c_void,
) -> riis_hresult {
    let flags = undeclared_flags(ctx);
    // SAFETY: forwarded.
    unsafe { raise_global_custom_notification_with_flags(ctx, type_name, data, flags) }
}

pub(super) unsafe extern "C" fn raise_global_custom_notification_with_flags(
    ctx: *mut riis_context,
    type_name: *const c_char,
    data: *mut c_void,
    flags: u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `type_name` is a C string.
    unsafe {
        context_hr("raise_global_custom_notification", ctx, |_, ctx| {
            let type_name = text(type_name)?.to_owned();
            let mut provider = NativeNotification::new(type_name, data, flags);
            ctx.raise_global_custom_notification(&mut provider);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn clone(ctx: *mut riis_context) -> *mut riis_context {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("context_clone", ctx, ptr::null_mut(), |frame, ctx| {
            let child = ctx.clone_context().map_err(|e| e.hresult as i32)?;
            let mut clone = Box::new(ClonedContext {
                context: RefCell::new(Some(Box::new(child))),
                finished: std::cell::Cell::new(None),
            });
            let p = (&mut *clone as *mut ClonedContext).cast::<riis_context>();
            frame.clones.borrow_mut().push(clone);
            Ok(p)
        })
    }
}

/// Finds `child` among the frame's clones.
fn clone_index(frame: &crate::frame::Frame, child: *mut riis_context) -> Option<usize> {
    frame
        .clones
        .try_borrow()
        .ok()?
        .iter()
        .position(|c| c.is(child))
}

pub(super) unsafe extern "C" fn release_clone(ctx: *mut riis_context, child: *mut riis_context) {
    // A clone cannot release itself: its context would be freed while the
    // call borrows it.
    if ptr::eq(ctx, child) {
        return;
    }
    // SAFETY: the handle is checked by with_context; `child` is only compared
    // with the frame's own clones.
    unsafe {
        with_context("context_release_clone", ctx, (), |frame, _| {
            let i = clone_index(frame, child).ok_or(hr::E_INVALIDARG)?;
            // Dropped once the list is no longer borrowed: its cleanup runs
            // module code, which may call the server back.
            let released = frame.clones.borrow_mut().remove(i);
            drop(released);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn execute_request(
    ctx: *mut riis_context,
    child: *mut riis_context,
    flags: u32,
) -> riis_hresult {
    // A clone cannot run itself: it would be moved out while the call
    // borrows it.
    if ptr::eq(ctx, child) {
        return hr::E_INVALIDARG;
    }
    // SAFETY: the handle is checked by context_hr; `child` is only used once
    // found among the frame's own clones.
    unsafe {
        context_hr("context_execute_request", ctx, |frame, ctx| {
            let i = clone_index(frame, child).ok_or(hr::E_INVALIDARG)?;
            let taken = frame.clones.borrow()[i].context.borrow_mut().take();
            let child: Box<HttpContext> = taken.ok_or(hr::E_INVALID_STATE)?;
            let execute = ExecuteFlags {
                buffer_response: flags & riis_abi::EXECUTE_FLAG_BUFFER_RESPONSE != 0,
                disable_custom_error: flags & riis_abi::EXECUTE_FLAG_DISABLE_CUSTOM_ERROR != 0,
                same_url: flags & riis_abi::EXECUTE_FLAG_SAME_URL != 0,
                // A bit an older module's flags never meant.
                no_headers: frame.module.abi_minor >= 9
                    && flags & riis_abi::EXECUTE_FLAG_NO_HEADERS != 0,
                // Not in the C ABI: a native module's buffered child is
                // held whole, as IIS holds it.
                stream_past_buffer_limit: false,
                // Not in the C ABI: a native module's child is its own.
                client_chosen_url: false,
            };
            let started = if flags & riis_abi::EXECUTE_FLAG_AS_USER != 0 {
                // The user set on the clone (set_user), as IIS's pHttpUser.
                let user = child.user().cloned().ok_or(hr::E_INVALIDARG)?;
                ctx.execute_request_as(*child, execute, user)
            } else {
                ctx.execute_request(*child, execute)
            };
            started.map_err(|e| e.hresult as i32)?;
            frame.op_started.set(true);
            Ok(())
        })
    }
}

/// Signals the frame's completion from any thread: hands `signal` to the
/// module's completion handle of the current Pending round, or keeps it for
/// the Pending it comes before. A second signal before that Pending is
/// refused with `RIIS_E_BUSY` (one signal per Pending). Takes the
/// frame as a pointer, not a reference: it may free the frame (an orphaned
/// module's last signal).
///
/// # Safety
/// `frame` points at a live frame.
unsafe fn signal(frame: *const crate::frame::Frame, signal: EarlySignal) -> riis_hresult {
    let (orphan, result) = {
        // SAFETY: live, as the caller promises; the reference ends with
        // this block.
        let mut slot = unsafe { &*frame }.lock_completion();
        let result = match slot.handle.take().or_else(|| slot.duplex_handle.take()) {
            Some(handle) => {
                let changes = slot.take_parked();
                match (signal, changes.is_empty()) {
                    (EarlySignal::Indicate(status), true) => handle.indicate_completion(status),
                    (EarlySignal::Post(bytes), true) => handle.post_completion(bytes),
                    (EarlySignal::Indicate(status), false) => {
                        handle.indicate_completion_with(status, all_changes(changes))
                    }
                    (EarlySignal::Post(bytes), false) => {
                        handle.post_completion_with(bytes, all_changes(changes))
                    }
                }
                hr::S_OK
            }
            None if slot.early.is_some() => hr::E_BUSY,
            // Outside the module's call nothing is owed: the signal that
            // was owed has come already (a second one for the same
            // Pending), or the call returned without Pending, or an
            // operation completes its Pending. Kept, it would end the
            // module's next Pending before its work is done.
            None if slot.in_call.is_none() => {
                // SAFETY: as above; the reference ends with this arm.
                let module = &unsafe { &*frame }.module.name;
                tracing::debug!(
                    %module,
                    "completion signal refused: the module owes none (signalled twice, or without returning Pending)"
                );
                hr::E_INVALID_STATE
            }
            None => {
                slot.early = Some(signal);
                hr::S_OK
            }
        };
        (slot.orphan.take(), result)
    };
    if let Some(orphan) = orphan {
        // The request ended while the module was pending, and this was the
        // signal it still owed: dispose it and free its frame, on a thread
        // of their own, since the module is inside its own API call now
        // (holding its locks, returning into the context being freed).
        std::thread::spawn(move || {
            // SAFETY: the orphan's frame is used by nothing else: the
            // instance is gone from the engine, and the module makes no
            // call with this context after its completion signal (one per
            // Pending, as in IIS).
            unsafe { crate::module::release(orphan) }
        });
    }
    result
}

/// The changes a module's thread made, in their order, as one.
fn all_changes(changes: Vec<riis_pipeline::ParkedChanges>) -> riis_pipeline::ParkedChanges {
    Box::new(move |ctx: &mut HttpContext| {
        for change in changes {
            change(ctx);
        }
    })
}

pub(super) unsafe extern "C" fn indicate_completion(
    ctx: *mut riis_context,
    status: riis_status,
) -> riis_hresult {
    no_unwind("indicate_completion", hr::E_FAIL, || {
        let Some(status) = RequestNotificationStatus::from_raw(status) else {
            return hr::E_INVALIDARG;
        };
        if status == RequestNotificationStatus::Pending {
            return hr::E_INVALIDARG;
        }
        with_live_frame(ctx, |frame| {
            // SAFETY: the frame is live while `with_live_frame` runs this;
            // only its completion slot (a Mutex) is touched.
            unsafe { signal(frame, EarlySignal::Indicate(status)) }
        })
        // Not a live request's context: a signal after its request ended,
        // or no context at all.
        .unwrap_or(hr::E_INVALID_STATE)
    })
}

pub(super) unsafe extern "C" fn post_completion(
    ctx: *mut riis_context,
    bytes: u64,
) -> riis_hresult {
    no_unwind("post_completion", hr::E_FAIL, || {
        if running_frame_of(ctx).is_some_and(|frame| !frame.ctx.get().is_null()) {
            // During the module's own call: an operation the engine runs
            // when the call returns.
            // SAFETY: the handle is checked by context_hr.
            return unsafe {
                context_hr("post_completion", ctx, |frame, ctx| {
                    ctx.post_completion(bytes).map_err(|e| e.hresult as i32)?;
                    frame.op_started.set(true);
                    Ok(())
                })
            };
        }
        with_live_frame(ctx, |frame| {
            // SAFETY: as in indicate_completion.
            unsafe { signal(frame, EarlySignal::Post(bytes)) }
        })
        .unwrap_or(hr::E_INVALID_STATE)
    })
}

pub(super) unsafe extern "C" fn config_value(
    ctx: *mut riis_context,
    section: u32,
    key: *const c_char,
) -> *const c_char {
    // SAFETY: the handle is checked by with_context; `key` is a C string.
    unsafe {
        with_context("config_value", ctx, ptr::null(), |frame, ctx| {
            let key = text(key)?;
            let sections = frame.module.sections.get().ok_or(hr::E_INVALID_STATE)?;
            let section = *sections.get(section as usize).ok_or(hr::E_INVALIDARG)?;
            let table = ctx.config(section);
            let mut parts = key.split('.');
            let first = parts.next().ok_or(hr::E_INVALIDARG)?;
            let mut value = match table.get(first) {
                Some(v) => v,
                None => return Ok(ptr::null()),
            };
            for part in parts {
                value = match value.get(part) {
                    Some(v) => v,
                    None => return Ok(ptr::null()),
                };
            }
            Ok(match value {
                toml::Value::String(s) => frame.arena.string(s),
                other => frame.arena.string(&other.to_string()),
            })
        })
    }
}

pub(super) unsafe extern "C" fn log(ctx: *mut riis_context, level: u32, message: *const c_char) {
    no_unwind("log", (), || {
        // SAFETY: `message` is a C string per the ABI.
        let Ok(message) = (unsafe { text(message) }) else {
            return;
        };
        // Logging is allowed from any thread: only the module's name (fixed
        // for the life of the pipeline) is read from the frame.
        let named = match running_frame_of(ctx) {
            Some(frame) => Some(frame.module.name.clone()),
            None => with_live_frame(ctx, |frame| {
                // SAFETY: the frame is live while `with_live_frame` runs this.
                unsafe { &*frame }.module.name.clone()
            })
            .or_else(running_module_name),
        };
        write_log(named.as_deref().unwrap_or("native module"), level, message);
    })
}

/// One line of a module's in the server log, at `level`. Control
/// characters are escaped, as in the lines of a FastCGI application's
/// standard error: a message that carries request data (a body, a header
/// value) cannot start a forged line of its own.
fn write_log(module: &str, level: u32, message: &str) {
    // A line, not a dump: a message of megabytes (a module logging a
    // buffer by mistake) held a worker thread for a minute in the
    // subscriber's escaping, and filled the disk.
    let cut = cut_log_message(message);
    let message = &*cut;
    let escaped;
    let message = if message.chars().any(char::is_control) {
        escaped = message.escape_debug().to_string();
        escaped.as_str()
    } else {
        message
    };
    match level {
        riis_abi::LOG_ERROR => tracing::error!(module, "{message}"),
        riis_abi::LOG_WARN => tracing::warn!(module, "{message}"),
        riis_abi::LOG_INFO => tracing::info!(module, "{message}"),
        _ => tracing::debug!(module, "{message}"),
    }
}

/// The most of a module's log message a line shows.
const LOG_MESSAGE_LIMIT: usize = 16 * 1024;

/// `message` whole, or its first [`LOG_MESSAGE_LIMIT`] bytes (at a
/// character boundary) and how long it was.
fn cut_log_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= LOG_MESSAGE_LIMIT {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut end = LOG_MESSAGE_LIMIT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… ({} bytes in all)",
        &message[..end],
        message.len()
    ))
}

/// The module names log sources stand for: source `n` is entry `n - 1`.
/// A name is entered once and kept for the life of the process (a module's
/// threads may log after its configuration is gone).
static LOG_SOURCES: std::sync::Mutex<Vec<std::sync::Arc<str>>> = std::sync::Mutex::new(Vec::new());

/// The log source of the module named `name`.
pub(super) fn log_source_of(name: &str) -> u32 {
    let mut sources = LOG_SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    let at = match sources.iter().position(|n| &**n == name) {
        Some(at) => at,
        None => {
            sources.push(name.into());
            sources.len() - 1
        }
    };
    at as u32 + 1
}

pub(super) unsafe extern "C" fn log_from_source(source: u32, level: u32, message: *const c_char) {
    no_unwind("log_from_source", (), || {
        // SAFETY: `message` is a C string per the ABI.
        let Ok(message) = (unsafe { text(message) }) else {
            return;
        };
        let name = source.checked_sub(1).and_then(|at| {
            let sources = LOG_SOURCES.lock().unwrap_or_else(|e| e.into_inner());
            sources.get(at as usize).cloned()
        });
        write_log(name.as_deref().unwrap_or("native module"), level, message);
    })
}

/// A module's data for its delivery call, sent to the thread that makes
/// it.
struct DeliveryData(*mut c_void);

// SAFETY: the header's contract for context_on_response_delivered: the
// module gives data that may be used from another thread, once.
unsafe impl Send for DeliveryData {}

impl DeliveryData {
    /// The pointer (a method, so that a closure captures the whole
    /// `Send` wrapper rather than the raw pointer field).
    fn get(&self) -> *mut c_void {
        self.0
    }
}

pub(super) unsafe extern "C" fn on_response_delivered(
    ctx: *mut riis_context,
    delivered: Option<riis_abi::riis_delivered_fn>,
    data: *mut c_void,
) -> riis_hresult {
    let Some(delivered) = delivered else {
        return hr::E_INVALIDARG;
    };
    let data = DeliveryData(data);
    let watch = move |delivery: riis_pipeline::ResponseDelivery| {
        // SAFETY: the module gave this function and its data for this one
        // call, made from any thread (the header's contract); the module's
        // library stays loaded while the server runs.
        unsafe { delivered(data.get(), delivery.body_bytes, c_int::from(delivery.whole)) }
    };
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("context_on_response_delivered", ctx, move |_, ctx| {
            ctx.on_response_delivered(watch);
            Ok(())
        })
    }
}

#[cfg(test)]
mod log_tests {
    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(super::cut_log_message("short"), "short");
        let long = "é".repeat(20_000);
        let cut = super::cut_log_message(&long);
        assert!(cut.len() < super::LOG_MESSAGE_LIMIT + 40);
        assert!(
            cut.ends_with("… (40000 bytes in all)"),
            "{}",
            &cut[cut.len() - 40..]
        );
    }
}
