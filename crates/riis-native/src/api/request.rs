//! Request functions.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use riis_abi::{hr, riis_context, riis_hresult};
use riis_pipeline::http::{HeaderName, HeaderValue, Method, Version};

use super::{bytes, context_hr, text, with_context};
use crate::frame::Frame;

/// A header name from a C string.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
pub(super) unsafe fn header_name(name: *const c_char) -> Result<HeaderName, riis_hresult> {
    // SAFETY: forwarded from this function's contract.
    HeaderName::from_bytes(unsafe { text(name) }?.as_bytes()).map_err(|_| hr::E_INVALIDARG)
}

/// A header name and value from C strings.
///
/// # Safety
/// Both must be NULL or NUL-terminated strings.
pub(super) unsafe fn header_pair(
    name: *const c_char,
    value: *const c_char,
) -> Result<(HeaderName, HeaderValue), riis_hresult> {
    // SAFETY: forwarded from this function's contract.
    let name = unsafe { header_name(name) }?;
    // SAFETY: as above. The value's bytes as they are: IIS takes Latin-1
    // obs-text too.
    let value = HeaderValue::from_bytes(unsafe { bytes(value) }?).map_err(|_| hr::E_INVALIDARG)?;
    Ok((name, value))
}

/// All values of a header joined with ", ", as a string of the frame's arena.
pub(super) fn joined_header(
    frame: &Frame,
    headers: &riis_pipeline::http::HeaderMap,
    name: &str,
    length: *mut usize,
) -> *const c_char {
    // Fields of one name are one list joined by commas (RFC 9110 §5.3),
    // except cookies, whose list separator is `; ` (RFC 6265 §5.4).
    let separator: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b", "
    };
    let mut joined = Vec::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(separator);
        }
        // The bytes as received, obs-text (Latin-1) included, as IIS
        // hands them over; a value never holds a NUL.
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.is_empty() && headers.get(name).is_none() {
        return ptr::null();
    }
    if !length.is_null() {
        // SAFETY: the module passed NULL or a writable size_t.
        unsafe { *length = joined.len() };
    }
    frame.arena.bytes(joined)
}

/// Fills `names` (room for `capacity`, or NULL) with the header names, as
/// strings of the frame's arena; returns how many names there are.
///
/// # Safety
/// `names` must be NULL or have room for `capacity` pointers.
pub(super) unsafe fn names_into(
    frame: &Frame,
    headers: &riis_pipeline::http::HeaderMap,
    names: *mut *const c_char,
    capacity: usize,
) -> usize {
    if !names.is_null() {
        for (i, name) in headers.keys().take(capacity).enumerate() {
            // SAFETY: `i < capacity`, within the caller's array.
            unsafe { *names.add(i) = frame.arena.string(name.as_str()) };
        }
    }
    headers.keys_len()
}

pub(super) unsafe extern "C" fn method(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("request_method", ctx, ptr::null(), |frame, ctx| {
            Ok(frame.arena.string(ctx.request().method().as_str()))
        })
    }
}

pub(super) unsafe extern "C" fn set_method(
    ctx: *mut riis_context,
    method: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `method` is a C string.
    unsafe {
        context_hr("request_set_method", ctx, |_, ctx| {
            let m = Method::from_bytes(text(method)?.as_bytes()).map_err(|_| hr::E_INVALIDARG)?;
            ctx.request_mut().set_method(m);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn url(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("request_url", ctx, ptr::null(), |frame, ctx| {
            Ok(frame.arena.string(ctx.request().url()))
        })
    }
}

pub(super) unsafe extern "C" fn query(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("request_query", ctx, ptr::null(), |frame, ctx| {
            Ok(frame.arena.string(ctx.request().query_string()))
        })
    }
}

pub(super) unsafe extern "C" fn set_url(
    ctx: *mut riis_context,
    path_and_query: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the URL is a C string.
    unsafe {
        context_hr("request_set_url", ctx, |_, ctx| {
            ctx.request_mut()
                .set_url(text(path_and_query)?)
                .map_err(|e| match e {
                    riis_pipeline::UrlError::PipelineStarted => hr::E_INVALID_STATE,
                    _ => hr::E_INVALIDARG,
                })
        })
    }
}

pub(super) unsafe extern "C" fn header(
    ctx: *mut riis_context,
    name: *const c_char,
    length: *mut usize,
) -> *const c_char {
    // SAFETY: the handle is checked by with_context; `name` is a C string.
    unsafe {
        with_context("request_header", ctx, ptr::null(), |frame, ctx| {
            let name = text(name)?;
            Ok(joined_header(frame, ctx.request().headers(), name, length))
        })
    }
}

pub(super) unsafe extern "C" fn set_header(
    ctx: *mut riis_context,
    name: *const c_char,
    value: *const c_char,
    replace: c_int,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; name and value are C
    // strings.
    unsafe {
        context_hr("request_set_header", ctx, |_, ctx| {
            let (name, value) = header_pair(name, value)?;
            if replace != 0 {
                ctx.request_mut().set_header(name, value);
            } else {
                ctx.request_mut().append_header(name, value);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn delete_header(
    ctx: *mut riis_context,
    name: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `name` is a C string.
    unsafe {
        context_hr("request_delete_header", ctx, |_, ctx| {
            let name = header_name(name)?;
            ctx.request_mut().delete_header(name);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn header_names(
    ctx: *mut riis_context,
    names: *mut *const c_char,
    capacity: usize,
) -> usize {
    // SAFETY: the handle is checked by with_context; `names` has room for
    // `capacity` pointers (or is NULL with capacity 0).
    unsafe {
        with_context("request_header_names", ctx, 0, |frame, ctx| {
            Ok(names_into(frame, ctx.request().headers(), names, capacity))
        })
    }
}

pub(super) unsafe extern "C" fn http_version(
    ctx: *mut riis_context,
    major: *mut u16,
    minor: *mut u16,
) {
    // SAFETY: the handle is checked by with_context; the outputs are NULL or
    // writable.
    unsafe {
        with_context("request_http_version", ctx, (), |_, ctx| {
            let (a, b) = match ctx.request().http_version() {
                Version::HTTP_09 => (0, 9),
                Version::HTTP_10 => (1, 0),
                Version::HTTP_2 => (2, 0),
                Version::HTTP_3 => (3, 0),
                _ => (1, 1),
            };
            if !major.is_null() {
                *major = a;
            }
            if !minor.is_null() {
                *minor = b;
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn address(
    ctx: *mut riis_context,
    remote: c_int,
    address: *mut *const c_char,
    port: *mut u16,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the outputs are NULL or
    // writable.
    unsafe {
        context_hr("request_address", ctx, |frame, ctx| {
            let a = if remote != 0 {
                ctx.request().remote_address()
            } else {
                ctx.request().local_address()
            };
            if !address.is_null() {
                *address = frame.arena.string(&a.ip().to_string());
            }
            if !port.is_null() {
                *port = a.port();
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn read_entity_body(
    ctx: *mut riis_context,
    buffer: *mut c_void,
    capacity: usize,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the buffer is only written
    // when the read completes (see module.rs, deliver_read).
    unsafe {
        context_hr("request_read_entity_body", ctx, |frame, ctx| {
            if buffer.is_null() || capacity == 0 {
                return Err(hr::E_INVALIDARG);
            }
            ctx.read_entity_body(capacity)
                .map_err(|e| e.hresult as i32)?;
            frame.read_buffer.set(Some((buffer.cast(), capacity)));
            frame.op_started.set(true);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn insert_entity_body(
    ctx: *mut riis_context,
    data: *const c_void,
    length: usize,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `data` holds `length`
    // readable bytes.
    unsafe {
        context_hr("request_insert_entity_body", ctx, |_, ctx| {
            let bytes = super::copy_bytes(data.cast::<u8>(), length)?;
            if !bytes.is_empty() {
                ctx.request_mut().insert_entity_body(bytes);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn remaining_entity_bytes(ctx: *mut riis_context) -> i64 {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("request_remaining_entity_bytes", ctx, -1, |_, ctx| {
            Ok(ctx
                .request()
                .remaining_entity_bytes()
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)))
        })
    }
}

pub(super) unsafe extern "C" fn client_certificate(
    ctx: *mut riis_context,
    der: *mut *const u8,
    length: *mut usize,
    negotiated: *mut c_int,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the outputs are NULL or
    // writable.
    unsafe {
        context_hr("request_client_certificate", ctx, |frame, ctx| {
            let asked = ctx.connection().client_certificate_ca.is_some();
            let (p, n) = match ctx.client_certificate() {
                Some(cert) => {
                    // A copy in the request's memory: valid until it ends.
                    let p = frame.arena.allocate(cert.der.len());
                    if p.is_null() {
                        return Err(hr::E_OUTOFMEMORY);
                    }
                    // SAFETY: `p` is a fresh block of at least `len` bytes.
                    std::ptr::copy_nonoverlapping(cert.der.as_ptr(), p, cert.der.len());
                    (p.cast_const(), cert.der.len())
                }
                None => (std::ptr::null(), 0),
            };
            if !der.is_null() {
                *der = p;
            }
            if !length.is_null() {
                *length = n;
            }
            if !negotiated.is_null() {
                *negotiated = c_int::from(asked);
            }
            Ok(())
        })
    }
}
