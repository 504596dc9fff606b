//! Response functions.

use std::ffi::{c_char, c_int};
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr;
use std::sync::Arc;

use riis_abi::{hr, riis_context, riis_data_chunk, riis_hresult};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{EntityChunk, FlushOptions};

use super::request::{header_name, header_pair, joined_header, names_into};
use super::{change_response, context_hr, text, with_context};

pub(super) unsafe extern "C" fn status(
    ctx: *mut riis_context,
    status: *mut u16,
    substatus: *mut u16,
) {
    // An executed clone: the status its child ended with (its own context
    // is gone). Only compared with the running frame's clones.
    if let Some((code, sub)) = crate::frame::executed_clone_status(ctx) {
        // SAFETY: outputs are NULL or writable, as for any call.
        unsafe {
            if !status.is_null() {
                *status = code;
            }
            if !substatus.is_null() {
                *substatus = sub;
            }
        }
        return;
    }
    // SAFETY: the handle is checked by with_context; outputs are NULL or
    // writable.
    unsafe {
        with_context("response_status", ctx, (), |_, ctx| {
            if !status.is_null() {
                *status = ctx.response().status().as_u16();
            }
            if !substatus.is_null() {
                *substatus = ctx.response().substatus();
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn set_status(
    ctx: *mut riis_context,
    status: u16,
    reason: *const c_char,
    substatus: u16,
    error: riis_hresult,
) -> riis_hresult {
    let Ok(code) = StatusCode::from_u16(status) else {
        return hr::E_INVALIDARG;
    };
    // An interim status is not a response's: the client got a bare 500 and
    // lost the connection. 101 is the exception, a switch.
    if code.is_informational() && code != StatusCode::SWITCHING_PROTOCOLS {
        return hr::E_INVALIDARG;
    }
    let reason = if reason.is_null() {
        code.canonical_reason().unwrap_or("").to_owned()
    } else {
        // SAFETY: a C string per the ABI.
        match unsafe { text(reason) } {
            Ok(r) if !r.bytes().any(|b| b.is_ascii_control()) => r.to_owned(),
            Ok(_) => return hr::E_INVALIDARG,
            Err(code) => return code,
        }
    };
    // SAFETY: the handle is checked by change_response.
    unsafe {
        change_response("response_set_status", ctx, 0, move |ctx| {
            let response = ctx.response_mut();
            // An error status records who set it, with `S_OK` too: IIS's
            // detailed error page names the module and notification of a
            // module's `SetStatus(404, …)` (it showed "(unknown)").
            if substatus != 0 || error != 0 || code.is_client_error() || code.is_server_error() {
                response.set_error_status(code, reason, substatus, error as u32);
            } else {
                response.set_status(code, reason);
            }
        })
    }
}

pub(super) unsafe extern "C" fn set_error_description(
    ctx: *mut riis_context,
    description: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the text is a C string.
    unsafe {
        context_hr("response_set_error_description", ctx, |_, ctx| {
            ctx.response_mut().set_error_description(text(description)?);
            Ok(())
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
        with_context("response_header", ctx, ptr::null(), |frame, ctx| {
            let name = text(name)?;
            Ok(joined_header(frame, ctx.response().headers(), name, length))
        })
    }
}

pub(super) unsafe extern "C" fn set_header(
    ctx: *mut riis_context,
    name: *const c_char,
    value: *const c_char,
    replace: c_int,
) -> riis_hresult {
    // SAFETY: name and value are C strings per the ABI.
    let (name, value) = match unsafe { header_pair(name, value) } {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    // SAFETY: the handle is checked by change_response.
    unsafe {
        change_response("response_set_header", ctx, 0, move |ctx| {
            if replace != 0 {
                ctx.response_mut().set_header(name, value);
            } else {
                ctx.response_mut().append_header(name, value);
            }
        })
    }
}

pub(super) unsafe extern "C" fn delete_header(
    ctx: *mut riis_context,
    name: *const c_char,
) -> riis_hresult {
    // SAFETY: `name` is a C string per the ABI.
    let name = match unsafe { header_name(name) } {
        Ok(name) => name,
        Err(code) => return code,
    };
    // SAFETY: the handle is checked by change_response.
    unsafe {
        change_response("response_delete_header", ctx, 0, move |ctx| {
            ctx.response_mut().delete_header(name);
        })
    }
}

pub(super) unsafe extern "C" fn trailer(
    ctx: *mut riis_context,
    name: *const c_char,
    length: *mut usize,
) -> *const c_char {
    // SAFETY: the handle is checked by with_context; `name` is a C string.
    unsafe {
        with_context("response_trailer", ctx, ptr::null(), |frame, ctx| {
            let name = text(name)?;
            let empty = riis_pipeline::http::HeaderMap::new();
            let trailers = ctx.response().trailers().unwrap_or(&empty);
            Ok(joined_header(frame, trailers, name, length))
        })
    }
}

pub(super) unsafe extern "C" fn set_trailer(
    ctx: *mut riis_context,
    name: *const c_char,
    value: *const c_char,
    replace: c_int,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; name and value are C
    // strings.
    unsafe {
        context_hr("response_set_trailer", ctx, |frame, ctx| {
            let (name, value) = header_pair(name, value)?;
            let response = ctx.response_mut();
            let set = if replace != 0 {
                response.set_trailer(name, value)
            } else {
                response.append_trailer(name, value)
            };
            set.map_err(|why| {
                tracing::warn!(module = %frame.module.name, "response_set_trailer: {why}");
                hr::E_INVALIDARG
            })
        })
    }
}

pub(super) unsafe extern "C" fn delete_trailer(
    ctx: *mut riis_context,
    name: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `name` is a C string.
    unsafe {
        context_hr("response_delete_trailer", ctx, |_, ctx| {
            let name = header_name(name)?;
            ctx.response_mut().delete_trailer(name);
            Ok(())
        })
    }
}

/// Declares a response function that takes no argument but the context.
macro_rules! simple {
    ($($name:ident => $function:literal, |$ctx:ident| $body:expr;)*) => {$(
        pub(super) unsafe extern "C" fn $name(ctx: *mut riis_context) -> riis_hresult {
            // SAFETY: the handle is checked by context_hr.
            unsafe {
                context_hr($function, ctx, |_, $ctx| {
                    $body;
                    Ok(())
                })
            }
        }
    )*};
}

/// Declares a response change that takes no argument but the context, which
/// a module's thread may also make while its request is parked.
macro_rules! simple_change {
    ($($name:ident => $function:literal, |$ctx:ident| $body:expr;)*) => {$(
        pub(super) unsafe extern "C" fn $name(ctx: *mut riis_context) -> riis_hresult {
            // SAFETY: the handle is checked by change_response.
            unsafe { change_response($function, ctx, 0, |$ctx| $body) }
        }
    )*};
}

simple_change! {
    clear => "response_clear", |ctx| ctx.response_mut().clear();
    clear_headers => "response_clear_headers", |ctx| ctx.response_mut().clear_headers();
}

simple! {
    disable_buffering => "response_disable_buffering", |ctx| ctx.response_mut().disable_buffering();
    suppress_headers => "response_suppress_headers", |ctx| ctx.response_mut().suppress_headers();
    set_need_disconnect => "response_set_need_disconnect", |ctx| ctx.response_mut().set_need_disconnect();
    reset_connection => "response_reset_connection", |ctx| ctx.response_mut().reset_connection();
}

/// One chunk as the engine's entity chunk.
///
/// # Safety
/// The chunk's pointers must be valid as the ABI describes.
unsafe fn to_entity_chunk(chunk: &riis_data_chunk) -> Result<EntityChunk, riis_hresult> {
    match chunk.r#type {
        riis_abi::CHUNK_FROM_MEMORY => {
            let len = usize::try_from(chunk.buffer_length).map_err(|_| hr::E_INVALIDARG)?;
            // SAFETY: the module passed `len` readable bytes; they are
            // copied before the call returns.
            Ok(EntityChunk::Memory(unsafe {
                super::copy_bytes(chunk.buffer.cast::<u8>(), len)
            }?))
        }
        riis_abi::CHUNK_FROM_FILE_HANDLE | riis_abi::CHUNK_FROM_FILE_NAME => {
            let file = if chunk.r#type == riis_abi::CHUNK_FROM_FILE_HANDLE {
                if chunk.file_descriptor < 0 {
                    return Err(hr::E_INVALIDARG);
                }
                // SAFETY: the module passed an open descriptor, valid for the
                // call; it is duplicated, so the module may close its own.
                let fd = unsafe { BorrowedFd::borrow_raw(chunk.file_descriptor) };
                // A descriptor opened for writing alone cannot be read: the
                // response would promise its length and be cut short.
                // SAFETY: F_GETFL on a descriptor the module passed reads its
                // flags only; a bad descriptor gives -1.
                let flags = unsafe { libc::fcntl(chunk.file_descriptor, libc::F_GETFL) };
                if flags < 0 || flags & libc::O_ACCMODE == libc::O_WRONLY {
                    return Err(hr::E_INVALIDARG);
                }
                File::from(fd.try_clone_to_owned().map_err(|_| hr::E_INVALIDARG)?)
            } else {
                // SAFETY: a C string per the ABI.
                let path = unsafe { text(chunk.file_name) }?;
                // Non-blocking: opening a FIFO would wait for a writer and
                // hold the worker; it is refused just below.
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => hr::E_NOT_FOUND,
                        _ => hr::E_FAIL,
                    })?
            };
            let meta = file.metadata().map_err(|_| hr::E_FAIL)?;
            // A directory, a FIFO or a device has no bytes to send as a
            // range (a directory sent a length of 4096 and no bytes).
            if !meta.is_file() {
                return Err(hr::E_INVALIDARG);
            }
            let size = meta.len();
            if chunk.offset > size {
                return Err(hr::E_INVALIDARG);
            }
            let length = if chunk.length == u64::MAX {
                size - chunk.offset
            } else if chunk.length > size - chunk.offset {
                return Err(hr::E_INVALIDARG);
            } else {
                chunk.length
            };
            Ok(EntityChunk::File {
                file: Arc::new(file),
                offset: chunk.offset,
                length,
            })
        }
        _ => Err(hr::E_INVALIDARG),
    }
}

/// Converts `count` chunks from the module, all or none.
///
/// # Safety
/// `chunks` must hold `count` chunks valid as the ABI describes.
unsafe fn entity_chunks(
    chunks: *const riis_data_chunk,
    count: u32,
) -> Result<Vec<EntityChunk>, riis_hresult> {
    if chunks.is_null() && count > 0 {
        return Err(hr::E_INVALIDARG);
    }
    let mut converted = Vec::new();
    converted
        .try_reserve_exact(count as usize)
        .map_err(|_| hr::E_OUTOFMEMORY)?;
    for i in 0..count as usize {
        // SAFETY: `chunks` holds `count` chunks per the contract.
        converted.push(unsafe { to_entity_chunk(&*chunks.add(i)) }?);
    }
    Ok(converted)
}

pub(super) unsafe extern "C" fn header_names(
    ctx: *mut riis_context,
    names: *mut *const c_char,
    capacity: usize,
) -> usize {
    // SAFETY: the handle is checked by with_context; `names` has room for
    // `capacity` pointers (or is NULL).
    unsafe {
        with_context("response_header_names", ctx, 0, |frame, ctx| {
            Ok(names_into(frame, ctx.response().headers(), names, capacity))
        })
    }
}

pub(super) unsafe extern "C" fn entity_chunk_count(ctx: *mut riis_context) -> u32 {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("response_entity_chunk_count", ctx, 0, |_, ctx| {
            Ok(u32::try_from(ctx.response().entity_chunks().len()).unwrap_or(u32::MAX))
        })
    }
}

pub(super) unsafe extern "C" fn entity_chunk_at(
    ctx: *mut riis_context,
    index: u32,
    out: *mut riis_data_chunk,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `out` is writable.
    unsafe {
        context_hr("response_entity_chunk", ctx, |_, ctx| {
            if out.is_null() {
                return Err(hr::E_INVALIDARG);
            }
            let chunk = ctx
                .response()
                .entity_chunks()
                .get(index as usize)
                .ok_or(hr::E_INVALIDARG)?;
            let mut c = riis_data_chunk {
                r#type: riis_abi::CHUNK_FROM_MEMORY,
                buffer: ptr::null(),
                buffer_length: 0,
                file_descriptor: -1,
                file_name: ptr::null(),
                offset: 0,
                length: 0,
            };
            match chunk {
                EntityChunk::Memory(b) => {
                    c.buffer = b.as_ptr().cast();
                    c.buffer_length = b.len() as u64;
                }
                EntityChunk::File {
                    file,
                    offset,
                    length,
                } => {
                    use std::os::fd::AsRawFd;
                    c.r#type = riis_abi::CHUNK_FROM_FILE_HANDLE;
                    c.file_descriptor = file.as_raw_fd();
                    c.offset = *offset;
                    c.length = *length;
                }
            }
            *out = c;
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn set_entity_chunks(
    ctx: *mut riis_context,
    chunks: *const riis_data_chunk,
    count: u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `chunks` holds `count`
    // chunks.
    unsafe {
        context_hr("response_set_entity_chunks", ctx, |_, ctx| {
            let converted = entity_chunks(chunks, count)?;
            ctx.response_mut().set_entity_chunks(converted);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn write_entity_chunks(
    ctx: *mut riis_context,
    chunks: *const riis_data_chunk,
    count: u32,
    bytes: *mut u64,
) -> riis_hresult {
    // Convert all first: a bad chunk leaves the response untouched.
    // SAFETY: `chunks` holds `count` chunks per the ABI.
    let converted = match unsafe { entity_chunks(chunks, count) } {
        Ok(converted) => converted,
        Err(code) => return code,
    };
    let total: u64 = converted.iter().map(EntityChunk::len).sum();
    // What the write holds in memory while parked (a file range holds a
    // descriptor).
    let held: usize = converted
        .iter()
        .map(|c| match c {
            EntityChunk::Memory(bytes) => bytes.len(),
            EntityChunk::File { .. } => 0,
        })
        .sum();
    // SAFETY: the handle is checked by change_response.
    let result = unsafe {
        change_response("response_write_entity_chunks", ctx, held, move |ctx| {
            ctx.response_mut().write_chunks(converted);
        })
    };
    if result >= 0 && !bytes.is_null() {
        // SAFETY: NULL or writable per the ABI.
        unsafe { *bytes = total };
    }
    result
}

pub(super) unsafe extern "C" fn flush(
    ctx: *mut riis_context,
    asynchronous: c_int,
    more_data: c_int,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("response_flush", ctx, |frame, ctx| {
            if ctx.in_nested_notification() {
                // The engine would drop it: said now, not found out later.
                return Err(hr::E_INVALID_STATE);
            }
            ctx.response_mut().flush(FlushOptions {
                asynchronous: asynchronous != 0,
                more_data: more_data != 0,
            });
            if asynchronous != 0 {
                frame.op_started.set(true);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn redirect(
    ctx: *mut riis_context,
    url: *const c_char,
    status: u16,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; `url` is a C string.
    unsafe {
        context_hr("response_redirect", ctx, |_, ctx| {
            let code = match status {
                0 => StatusCode::FOUND,
                301 | 302 | 303 | 307 | 308 => {
                    StatusCode::from_u16(status).map_err(|_| hr::E_INVALIDARG)?
                }
                _ => return Err(hr::E_INVALIDARG),
            };
            ctx.response_mut()
                .redirect(text(url)?, code)
                .map_err(|_| hr::E_INVALIDARG)
        })
    }
}

pub(super) unsafe extern "C" fn set_try_skip_custom_errors(
    ctx: *mut riis_context,
    skip: c_int,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr.
    unsafe {
        context_hr("response_set_try_skip_custom_errors", ctx, |_, ctx| {
            ctx.response_mut().set_try_skip_custom_errors(skip != 0);
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn headers_sent(ctx: *mut riis_context) -> c_int {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("response_headers_sent", ctx, 0, |_, ctx| {
            Ok(c_int::from(ctx.response().headers_sent()))
        })
    }
}
