//! Global provider functions, valid during the global notification that
//! received the provider.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use riis_abi::{hr, riis_context, riis_global_provider, riis_hresult};
use riis_pipeline::{CacheOperation, TracePhase};

use super::no_unwind;
use crate::global::{resolve_global, GlobalEvent, GlobalProviderHandle};
use crate::provider::NativeNotification;

/// Runs `body` with the global provider behind `p`; `fail` when it is not
/// usable or of another kind.
///
/// # Safety
/// `p` must be NULL or a pointer the server passed to a global callback.
unsafe fn with_global<R>(
    function: &'static str,
    p: *mut riis_global_provider,
    fail: R,
    body: impl FnOnce(&mut GlobalProviderHandle<'_>) -> Option<R>,
) -> R {
    no_unwind(function, None, || {
        // SAFETY: forwarded from this function's contract.
        match unsafe { resolve_global(p) } {
            Some(handle) => body(handle),
            None => {
                tracing::warn!(
                    function,
                    "riis_api global provider call outside its notification"
                );
                None
            }
        }
    })
    .unwrap_or(fail)
}

/// Writes `value` to `out` when `out` is not NULL.
///
/// # Safety
/// `out` must be NULL or writable.
unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null and writable per the contract.
        unsafe { *out = value };
    }
}

pub(super) unsafe extern "C" fn context(p: *mut riis_global_provider) -> *mut riis_context {
    // SAFETY: checked by with_global.
    unsafe {
        with_global("global_context", p, ptr::null_mut(), |h| match &h.event {
            GlobalEvent::PreBeginRequest(frame) => Some(frame.context_pointer()),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn application(
    p: *mut riis_global_provider,
    site_name: *mut *const c_char,
    site_id: *mut u32,
    physical_root: *mut *const c_char,
) -> riis_hresult {
    // SAFETY: checked by with_global; outputs are NULL or writable.
    unsafe {
        with_global("global_application", p, hr::E_INVALIDARG, |h| {
            match &h.event {
                GlobalEvent::Application(app) => {
                    put(site_name, h.arena.string(&app.site_name));
                    put(site_id, app.site_id);
                    put(
                        physical_root,
                        app.physical_root
                            .to_str()
                            .map_or(ptr::null(), |s| h.arena.string(s)),
                    );
                    Some(hr::S_OK)
                }
                _ => None,
            }
        })
    }
}

pub(super) unsafe extern "C" fn application_module_context(
    p: *mut riis_global_provider,
) -> *mut c_void {
    // SAFETY: checked by with_global.
    unsafe {
        with_global(
            "global_application_module_context",
            p,
            ptr::null_mut(),
            |h| match &h.event {
                GlobalEvent::Application(app) => Some(super::context::site_module_context(app)),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn application_set_module_context(
    p: *mut riis_global_provider,
    data: *mut c_void,
    cleanup: Option<unsafe extern "C" fn(*mut c_void)>,
) -> riis_hresult {
    // SAFETY: checked by with_global.
    unsafe {
        with_global(
            "global_application_set_module_context",
            p,
            hr::E_INVALIDARG,
            |h| match &h.event {
                GlobalEvent::Application(app) => Some(
                    match super::context::set_site_module_context(app, data, cleanup) {
                        Ok(()) => hr::S_OK,
                        Err(code) => code,
                    },
                ),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn file_path(p: *mut riis_global_provider) -> *const c_char {
    // SAFETY: checked by with_global.
    unsafe {
        with_global("global_file_path", p, ptr::null(), |h| match &h.event {
            GlobalEvent::FileChange(path) => path.to_str().map(|s| h.arena.string(s)),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn cache_operation(
    p: *mut riis_global_provider,
    operation: *mut u32,
    key: *mut *const c_char,
    bytes: *mut u64,
) -> riis_hresult {
    // SAFETY: checked by with_global; outputs are NULL or writable.
    unsafe {
        with_global(
            "global_cache_operation",
            p,
            hr::E_INVALIDARG,
            |h| match &h.event {
                GlobalEvent::Cache(op) => {
                    match op {
                        CacheOperation::Add { key: k, bytes: b } => {
                            put(operation, riis_abi::CACHE_ADD);
                            put(key, h.arena.string(k));
                            put(bytes, *b);
                        }
                        CacheOperation::Remove { key: k } => {
                            put(operation, riis_abi::CACHE_REMOVE);
                            put(key, h.arena.string(k));
                            put(bytes, 0);
                        }
                    }
                    Some(hr::S_OK)
                }
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn trace_event(
    p: *mut riis_global_provider,
    module: *mut *const c_char,
    notification: *mut u32,
    is_post: *mut c_int,
    url: *mut *const c_char,
    phase: *mut u32,
    elapsed_us: *mut u64,
) -> riis_hresult {
    // SAFETY: checked by with_global; outputs are NULL or writable.
    unsafe {
        with_global("global_trace_event", p, hr::E_INVALIDARG, |h| {
            match &h.event {
                GlobalEvent::Trace(e) => {
                    put(module, h.arena.string(e.module));
                    put(notification, e.notification.bit());
                    put(is_post, c_int::from(e.is_post));
                    put(url, h.arena.string(e.url));
                    let (ph, us) = match e.phase {
                        TracePhase::ModuleStart => (0, 0),
                        TracePhase::ModuleEnd { elapsed, .. } => {
                            (1, u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
                        }
                        TracePhase::Custom { .. } => (2, 0),
                    };
                    put(phase, ph);
                    put(elapsed_us, us);
                    Some(hr::S_OK)
                }
                _ => None,
            }
        })
    }
}

pub(super) unsafe extern "C" fn custom_type(p: *mut riis_global_provider) -> *const c_char {
    // SAFETY: checked by with_global.
    unsafe {
        with_global("global_custom_type", p, ptr::null(), |h| {
            let GlobalProviderHandle { event, arena } = h;
            match event {
                GlobalEvent::Custom(c) => Some(arena.string(c.notification_type())),
                _ => None,
            }
        })
    }
}

pub(super) unsafe extern "C" fn custom_flags(p: *mut riis_global_provider) -> u32 {
    // SAFETY: checked by with_global.
    unsafe {
        with_global("global_custom_flags", p, 0, |h| match &mut h.event {
            GlobalEvent::Custom(c) => Some(
                c.as_any_mut()
                    .downcast_mut::<NativeNotification>()
                    .map_or(0, |n| n.flags()),
            ),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn custom_data(p: *mut riis_global_provider) -> *mut c_void {
    // SAFETY: checked by with_global.
    unsafe {
        with_global("global_custom_data", p, ptr::null_mut(), |h| {
            match &mut h.event {
                GlobalEvent::Custom(c) => Some(
                    c.as_any_mut()
                        .downcast_mut::<NativeNotification>()
                        .map_or(ptr::null_mut(), |n| n.data()),
                ),
                _ => None,
            }
        })
    }
}

pub(super) unsafe extern "C" fn rsca_query(
    p: *mut riis_global_provider,
    function: *mut *const c_char,
    parameters: *mut *const c_char,
) -> riis_hresult {
    // SAFETY: checked by with_global; outputs are NULL or writable.
    unsafe {
        with_global("global_rsca_query", p, hr::E_INVALIDARG, |h| {
            let GlobalProviderHandle { event, arena } = h;
            match event {
                GlobalEvent::Rsca {
                    function: f,
                    parameters: params,
                    ..
                } => {
                    put(function, arena.string(f));
                    put(parameters, arena.string(params));
                    Some(hr::S_OK)
                }
                _ => None,
            }
        })
    }
}

pub(super) unsafe extern "C" fn rsca_write(
    p: *mut riis_global_provider,
    text: *const c_char,
    length: usize,
) -> riis_hresult {
    // SAFETY: checked by with_global; `text` holds `length` readable bytes
    // (the caller's promise), copied before the call returns.
    unsafe {
        with_global("global_rsca_write", p, hr::E_INVALIDARG, |h| {
            let GlobalEvent::Rsca { output, .. } = &mut h.event else {
                return None;
            };
            let bytes = match super::copy_bytes(text.cast(), length) {
                Ok(bytes) => bytes,
                Err(code) => return Some(code),
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return Some(hr::E_INVALIDARG);
            };
            if output.try_reserve(text.len()).is_err() {
                return Some(hr::E_OUTOFMEMORY);
            }
            output.push_str(text);
            Some(hr::S_OK)
        })
    }
}
