//! The server's side of `riis_api`: every function a native module calls.
//!
//! Each function resolves its handle (refusing one used off its call's
//! thread), converts C strings (UTF-8, NUL-terminated), calls the engine, and
//! turns failures into HRESULTs logged with the module's name. No panic
//! crosses the boundary: each body runs under `catch_unwind`.

mod context;
mod global;
mod provider;
mod registration;
mod request;
mod response;
mod user;

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use riis_abi::{hr, riis_api, riis_context, riis_hresult};
use riis_pipeline::bytes::Bytes;
use riis_pipeline::HttpContext;

use crate::frame::{resolve, Frame};

/// The function table handed to every module (`riis_server.api`).
pub(crate) static API: riis_api = riis_api {
    size: std::mem::size_of::<riis_api>() as u32,

    set_request_notifications: registration::set_request_notifications,
    set_priority_for_request_notification: registration::set_priority_for_request_notification,
    set_priority_for_post_request_notification:
        registration::set_priority_for_post_request_notification,
    set_global_notifications: registration::set_global_notifications,
    set_priority_for_global_notification: registration::set_priority_for_global_notification,
    registration_name: registration::registration_name,
    registration_id: registration::registration_id,

    allocator_allocate: context::allocator_allocate,
    context_allocate: context::context_allocate,

    context_site_name: context::site_name,
    context_site_id: context::site_id,
    context_request_id: context::request_id,
    context_physical_path: context::physical_path,
    context_map_path: context::map_path,
    context_handler_name: context::handler_name,
    context_set_request_handled: context::set_request_handled,
    context_is_last_notification: context::is_last_notification,
    context_execution_stats: context::execution_stats,
    server_variable: context::server_variable,
    set_server_variable: context::set_server_variable,
    module_context: context::module_context,
    set_module_context: context::set_module_context,
    raise_custom_notification: context::raise_custom_notification,
    raise_global_custom_notification: context::raise_global_custom_notification,
    context_clone: context::clone,
    context_release_clone: context::release_clone,
    context_execute_request: context::execute_request,
    indicate_completion: context::indicate_completion,
    post_completion: context::post_completion,
    config_value: context::config_value,
    declare_section: registration::declare_section,
    log: context::log,

    request_method: request::method,
    request_set_method: request::set_method,
    request_url: request::url,
    request_query: request::query,
    request_set_url: request::set_url,
    request_header: request::header,
    request_set_header: request::set_header,
    request_delete_header: request::delete_header,
    request_header_names: request::header_names,
    request_http_version: request::http_version,
    request_address: request::address,
    request_read_entity_body: request::read_entity_body,
    request_insert_entity_body: request::insert_entity_body,
    request_remaining_entity_bytes: request::remaining_entity_bytes,

    response_status: response::status,
    response_set_status: response::set_status,
    response_set_error_description: response::set_error_description,
    response_header: response::header,
    response_set_header: response::set_header,
    response_delete_header: response::delete_header,
    response_clear: response::clear,
    response_clear_headers: response::clear_headers,
    response_write_entity_chunks: response::write_entity_chunks,
    response_flush: response::flush,
    response_disable_buffering: response::disable_buffering,
    response_redirect: response::redirect,
    response_suppress_headers: response::suppress_headers,
    response_set_need_disconnect: response::set_need_disconnect,
    response_reset_connection: response::reset_connection,
    response_set_try_skip_custom_errors: response::set_try_skip_custom_errors,
    response_headers_sent: response::headers_sent,

    user_present: user::present,
    user_name: user::name,
    user_authentication_type: user::authentication_type,
    user_is_in_role: user::is_in_role,
    set_user: user::set_user,

    provider_kind: provider::kind,
    send_headers_being_sent: provider::send_headers_being_sent,
    send_is_final: provider::send_is_final,
    send_flags: provider::send_flags,
    send_set_flags: provider::send_set_flags,
    read_entity: provider::read_entity,
    read_set_entity: provider::read_set_entity,
    map_path_url: provider::map_path_url,
    map_path_physical_path: provider::map_path_physical_path,
    map_path_set_physical_path: provider::map_path_set_physical_path,
    custom_type: provider::custom_type,
    custom_data: provider::custom_data,

    global_context: global::context,
    global_application: global::application,
    global_file_path: global::file_path,
    global_cache_operation: global::cache_operation,
    global_trace_event: global::trace_event,
    global_custom_type: global::custom_type,
    global_custom_data: global::custom_data,

    response_header_names: response::header_names,
    response_entity_chunk_count: response::entity_chunk_count,
    response_entity_chunk: response::entity_chunk_at,
    response_set_entity_chunks: response::set_entity_chunks,

    global_rsca_query: global::rsca_query,
    global_rsca_write: global::rsca_write,

    request_client_certificate: request::client_certificate,

    send_defer_after: provider::send_defer_after,
    send_is_flush: provider::send_is_flush,
    context_virtual_directory: context::virtual_directory,
    context_location_path: context::location_path,
    response_trailer: response::trailer,
    response_set_trailer: response::set_trailer,
    response_delete_trailer: response::delete_trailer,

    context_enable_full_duplex: context::enable_full_duplex,
    raise_custom_notification_with_flags: context::raise_custom_notification_with_flags,
    raise_global_custom_notification_with_flags:
        context::raise_global_custom_notification_with_flags,
    custom_flags: provider::custom_flags,
    global_custom_flags: global::custom_flags,
    context_on_response_delivered: context::on_response_delivered,
    global_application_module_context: global::application_module_context,
    global_application_set_module_context: global::application_set_module_context,
    set_user_with_role_check: user::set_user_with_role_check,
    user_role_check_data: user::role_check_data,
    connection_is_connected: context::connection_is_connected,
    registration_log_source: registration::registration_log_source,
    declare_section_keys: registration::declare_section_keys,
    log_from_source: context::log_from_source,
};

/// A C string argument as `&str`: NULL and invalid UTF-8 are refused.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char) -> Result<&'a str, riis_hresult> {
    if p.is_null() {
        return Err(hr::E_INVALIDARG);
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| hr::E_INVALIDARG)
}

/// A C string argument as its bytes, whatever their encoding (header
/// values may carry Latin-1 obs-text); NULL is refused.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const c_char) -> Result<&'a [u8], riis_hresult> {
    if p.is_null() {
        return Err(hr::E_INVALIDARG);
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// A copy of `len` bytes a module passed at `data` (NULL allowed when `len`
/// is 0). A length no buffer can have is refused, and a copy too large for
/// memory fails the call instead of aborting the server.
///
/// # Safety
/// `data` must point at `len` readable bytes when `len` is not 0.
pub(crate) unsafe fn copy_bytes(data: *const u8, len: usize) -> Result<Bytes, riis_hresult> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if data.is_null() || len > isize::MAX as usize {
        return Err(hr::E_INVALIDARG);
    }
    let mut copy = Vec::new();
    copy.try_reserve_exact(len).map_err(|_| hr::E_OUTOFMEMORY)?;
    // SAFETY: non-null, `len` readable bytes per the contract, and `len`
    // is within what a slice may span.
    copy.extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
    Ok(Bytes::from(copy))
}

/// Runs `body` without letting a panic cross the boundary.
pub(crate) fn no_unwind<R>(function: &'static str, fail: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(function, "riis_api function panicked; the call fails");
            fail
        }
    }
}

/// Runs `body` with the frame and context behind `handle`; a refused handle,
/// a failure or a panic becomes an HRESULT, logged with the module's name
/// when the handle is usable.
///
/// # Safety
/// `handle` must be NULL or a context pointer the server gave a module.
pub(crate) unsafe fn try_context<R>(
    function: &'static str,
    handle: *mut riis_context,
    body: impl FnOnce(&Frame, &mut HttpContext) -> Result<R, riis_hresult>,
) -> Result<R, riis_hresult> {
    let (frame, ctx) = resolve(handle).inspect_err(|code| {
        tracing::warn!(
            function,
            hresult = format_args!("0x{:08X}", *code as u32),
            "riis_api call refused: the context is NULL, used off its call's thread, or used after the call"
        );
    })?;
    match catch_unwind(AssertUnwindSafe(|| body(frame, ctx))) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(code)) => {
            tracing::debug!(
                module = %frame.module.name,
                function,
                hresult = format_args!("0x{:08X}", code as u32),
                "riis_api call failed"
            );
            Err(code)
        }
        Err(_) => {
            tracing::error!(module = %frame.module.name, function, "riis_api function panicked; the call fails");
            Err(hr::E_FAIL)
        }
    }
}

/// A change to the response: made now during the module's call, or, from
/// the module's own thread while its request is parked (the module returned
/// Pending and owes the signal) or while one of its calls runs (the thread
/// it starts may be quicker than the call's return), kept and made on the
/// request's thread when the signal resumes it, as IIS lets a module's
/// thread write the response before `IndicateCompletion`. Refused
/// otherwise, as any call off its thread is; also once the request ended
/// while the module was pending (`E_INVALID_STATE`: the write would go
/// nowhere), and past [`crate::frame::PARKED_LIMIT`] bytes of memory
/// (`E_OUTOFMEMORY`; `held` is what this change holds).
///
/// # Safety
/// `handle` must be NULL or a context pointer the server gave a module.
pub(crate) unsafe fn change_response(
    function: &'static str,
    handle: *mut riis_context,
    held: usize,
    change: impl FnOnce(&mut HttpContext) + Send + 'static,
) -> riis_hresult {
    let mut change = Some(change);
    if crate::frame::running_frame_of(handle).is_none() {
        let parked = crate::frame::with_live_frame(handle, |frame| {
            // SAFETY: live while `with_live_frame` runs this; only its
            // module description and completion slot (a Mutex) are touched.
            let frame = unsafe { &*frame };
            // A module built for an older ABI was told such calls fail.
            if frame.module.abi_minor < 9 {
                return None;
            }
            let mut slot = frame.lock_completion();
            let other_thread = slot
                .in_call
                .is_some_and(|call| call != crate::frame::this_thread());
            if slot.handle.is_none() && !other_thread {
                return None;
            }
            // The request ended while the module was pending (the client
            // left, `timeouts.execution`): nothing it writes goes anywhere.
            if slot.orphan.is_some() {
                return Some(hr::E_INVALID_STATE);
            }
            if !slot.parked_overflow && !slot.reserve_parked(held) {
                slot.parked_overflow = true;
                tracing::warn!(
                    module = %frame.module.name,
                    function,
                    "a write refused: the module's own thread wrote more into a parked request than the server holds before its signal (16 MiB a request, 256 MiB in all); the request fails"
                );
                // What the thread made cannot go out whole: the request
                // fails rather than send a short answer that looks complete
                // (a module ported from IIS may not look at the refusal).
                slot.parked_changes.push(Box::new(|ctx: &mut HttpContext| {
                    let response = ctx.response_mut();
                    response.clear();
                    response.set_error_status(
                        riis_pipeline::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                        0,
                        riis_pipeline::ModuleError::E_OUTOFMEMORY,
                    );
                }));
            }
            if slot.parked_overflow {
                return Some(hr::E_OUTOFMEMORY);
            }
            if let Some(change) = change.take() {
                slot.parked_changes.push(Box::new(change));
            }
            Some(hr::S_OK)
        });
        if let Some(Some(code)) = parked {
            return code;
        }
    }
    // SAFETY: forwarded from this function's contract.
    unsafe {
        context_hr(function, handle, |_, ctx| {
            if let Some(change) = change.take() {
                change(ctx);
            }
            Ok(())
        })
    }
}

/// [`try_context`] for functions returning a value: `fail` on failure.
///
/// # Safety
/// As for [`try_context`].
pub(crate) unsafe fn with_context<R>(
    function: &'static str,
    handle: *mut riis_context,
    fail: R,
    body: impl FnOnce(&Frame, &mut HttpContext) -> Result<R, riis_hresult>,
) -> R {
    // SAFETY: forwarded from this function's contract.
    unsafe { try_context(function, handle, body) }.unwrap_or(fail)
}

/// [`try_context`] for functions returning an HRESULT.
///
/// # Safety
/// As for [`try_context`].
pub(crate) unsafe fn context_hr(
    function: &'static str,
    handle: *mut riis_context,
    body: impl FnOnce(&Frame, &mut HttpContext) -> Result<(), riis_hresult>,
) -> riis_hresult {
    // SAFETY: forwarded from this function's contract.
    match unsafe { try_context(function, handle, body) } {
        Ok(()) => hr::S_OK,
        Err(code) => code,
    }
}
