//! Event provider functions, valid during the call that received the
//! provider.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use riis_abi::{hr, riis_context, riis_hresult, riis_provider};
use riis_pipeline::SendFlags;

use super::{context_hr, no_unwind, text};
use crate::frame::Frame;
use crate::provider::{resolve_provider, NativeNotification, Provider};

/// Runs `body` with the provider behind `p`; `fail` when it is not usable.
///
/// # Safety
/// `p` must be NULL or a provider pointer the server passed to a callback.
unsafe fn with_provider<R>(
    function: &'static str,
    p: *mut riis_provider,
    fail: R,
    body: impl FnOnce(&Frame, &mut Provider<'_>) -> Option<R>,
) -> R {
    // Split so `fail` is still ours if the body panics.
    no_unwind(function, None, || {
        // SAFETY: forwarded from this function's contract.
        match unsafe { resolve_provider(p) } {
            Some((frame, provider)) => {
                let answer = body(frame, provider);
                if answer.is_none() {
                    tracing::warn!(
                        module = %frame.module.name,
                        function,
                        "riis_api provider call failed: a provider of another kind, a NULL argument, or nothing to return"
                    );
                }
                answer
            }
            None => {
                tracing::warn!(
                    function,
                    "riis_api provider call outside the provider's call, or of the wrong kind"
                );
                None
            }
        }
    })
    .unwrap_or(fail)
}

pub(super) unsafe extern "C" fn kind(p: *mut riis_provider) -> u32 {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider("provider_kind", p, 0, |_, provider| {
            Some(match provider {
                Provider::Event => 0,
                Provider::Authentication => riis_abi::PROVIDER_AUTHENTICATION,
                Provider::SendResponse(_) => riis_abi::PROVIDER_SEND_RESPONSE,
                Provider::ReadEntity(_) => riis_abi::PROVIDER_READ_ENTITY,
                Provider::MapPath(_) => riis_abi::PROVIDER_MAP_PATH,
                Provider::Custom(_) => riis_abi::PROVIDER_CUSTOM,
            })
        })
    }
}

pub(super) unsafe extern "C" fn send_headers_being_sent(p: *mut riis_provider) -> c_int {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "send_headers_being_sent",
            p,
            0,
            |_, provider| match provider {
                Provider::SendResponse(s) => Some(c_int::from(s.headers_being_sent())),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn send_is_final(p: *mut riis_provider) -> c_int {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider("send_is_final", p, 0, |_, provider| match provider {
            Provider::SendResponse(s) => Some(c_int::from(s.is_final_send())),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn send_is_flush(p: *mut riis_provider) -> c_int {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider("send_is_flush", p, 0, |_, provider| match provider {
            Provider::SendResponse(s) => Some(c_int::from(s.is_flush())),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn send_defer_after(
    p: *mut riis_provider,
    c: *mut riis_context,
    at: u64,
    deferred: *mut c_int,
) -> riis_hresult {
    // SAFETY: the context is checked by context_hr, the provider by
    // with_provider (the two are distinct objects of the same call);
    // `deferred` is NULL or writable per the ABI.
    unsafe {
        context_hr("send_defer_after", c, |_, ctx| {
            with_provider(
                "send_defer_after",
                p,
                Err(hr::E_INVALIDARG),
                |_, provider| match provider {
                    Provider::SendResponse(s) => {
                        let done = s.defer_after(ctx.response_mut(), at);
                        if !deferred.is_null() {
                            *deferred = c_int::from(done);
                        }
                        Some(Ok(()))
                    }
                    _ => None,
                },
            )
        })
    }
}

pub(super) unsafe extern "C" fn send_flags(p: *mut riis_provider) -> u32 {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider("send_flags", p, 0, |_, provider| match provider {
            Provider::SendResponse(s) => {
                let f = s.flags();
                Some(
                    if f.disconnect {
                        riis_abi::SEND_FLAG_DISCONNECT
                    } else {
                        0
                    } | if f.more_data {
                        riis_abi::SEND_FLAG_MORE_DATA
                    } else {
                        0
                    },
                )
            }
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn send_set_flags(p: *mut riis_provider, flags: u32) -> riis_hresult {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "send_set_flags",
            p,
            hr::E_INVALIDARG,
            |_, provider| match provider {
                Provider::SendResponse(s) => {
                    s.set_flags(SendFlags {
                        disconnect: flags & riis_abi::SEND_FLAG_DISCONNECT != 0,
                        more_data: flags & riis_abi::SEND_FLAG_MORE_DATA != 0,
                    });
                    Some(hr::S_OK)
                }
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn read_entity(
    p: *mut riis_provider,
    data: *mut *const c_void,
    length: *mut usize,
) -> riis_hresult {
    // SAFETY: checked by with_provider; the outputs are writable per the ABI.
    unsafe {
        with_provider(
            "read_entity",
            p,
            hr::E_INVALIDARG,
            |_, provider| match provider {
                Provider::ReadEntity(r) if !data.is_null() && !length.is_null() => {
                    // The bytes stay in the provider for the call.
                    *data = r.entity().as_ptr().cast();
                    *length = r.entity().len();
                    Some(hr::S_OK)
                }
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn read_set_entity(
    p: *mut riis_provider,
    data: *const c_void,
    length: usize,
) -> riis_hresult {
    // SAFETY: checked by with_provider; `data` holds `length` bytes.
    unsafe {
        with_provider(
            "read_set_entity",
            p,
            hr::E_INVALIDARG,
            |_, provider| match provider {
                Provider::ReadEntity(r) => match super::copy_bytes(data.cast::<u8>(), length) {
                    Ok(bytes) => {
                        r.set_entity(bytes);
                        Some(hr::S_OK)
                    }
                    Err(e) => Some(e),
                },
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn map_path_url(p: *mut riis_provider) -> *const c_char {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "map_path_url",
            p,
            ptr::null(),
            |frame, provider| match provider {
                Provider::MapPath(m) => Some(frame.arena.string(m.url())),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn map_path_physical_path(p: *mut riis_provider) -> *const c_char {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "map_path_physical_path",
            p,
            ptr::null(),
            |frame, provider| match provider {
                Provider::MapPath(m) => m.physical_path().to_str().map(|s| frame.arena.string(s)),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn map_path_set_physical_path(
    p: *mut riis_provider,
    path: *const c_char,
) -> riis_hresult {
    // SAFETY: checked by with_provider; `path` is a C string.
    unsafe {
        with_provider(
            "map_path_set_physical_path",
            p,
            hr::E_INVALIDARG,
            |_, provider| match provider {
                Provider::MapPath(m) => {
                    let path = text(path).ok()?;
                    m.set_physical_path(path);
                    Some(hr::S_OK)
                }
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn custom_type(p: *mut riis_provider) -> *const c_char {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "custom_type",
            p,
            ptr::null(),
            |frame, provider| match provider {
                Provider::Custom(c) => Some(frame.arena.string(c.notification_type())),
                _ => None,
            },
        )
    }
}

pub(super) unsafe extern "C" fn custom_flags(p: *mut riis_provider) -> u32 {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider("custom_flags", p, 0, |_, provider| match provider {
            Provider::Custom(c) => Some(
                c.as_any_mut()
                    .downcast_mut::<NativeNotification>()
                    .map_or(0, |n| n.flags()),
            ),
            _ => None,
        })
    }
}

pub(super) unsafe extern "C" fn custom_data(p: *mut riis_provider) -> *mut c_void {
    // SAFETY: checked by with_provider.
    unsafe {
        with_provider(
            "custom_data",
            p,
            ptr::null_mut(),
            |_, provider| match provider {
                Provider::Custom(c) => Some(
                    c.as_any_mut()
                        .downcast_mut::<NativeNotification>()
                        .map_or(ptr::null_mut(), |n| n.data()),
                ),
                _ => None,
            },
        )
    }
}
