//! The request context (IIS's `IHttpContext`) as safe proxies over a
//! `riis_context*`: [`HttpContext`], [`HttpRequest`], [`HttpResponse`],
//! [`HttpUser`], and child requests ([`ChildContext`]).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use riis_abi::{self as abi, riis_context, riis_data_chunk, riis_execution_stats};

use crate::completion::{CallShared, CompletionHandle};
use crate::error::ModuleError;
use crate::ffi::{self, Raw};
use crate::provider;
use riis_notification::{RequestNotification, RequestNotificationStatus};

/// Which container a module context lives in (`RIIS_SCOPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContextScope {
    /// `RIIS_SCOPE_REQUEST`: the request; dropped when it ends.
    Request,
    /// `RIIS_SCOPE_CONNECTION`: the client connection, shared by its
    /// requests (which may run at once, with HTTP/2).
    Connection,
    /// `RIIS_SCOPE_SITE`: the site, shared by all its requests, while the
    /// server runs.
    Site,
}

impl ContextScope {
    /// The raw `RIIS_SCOPE_*` value.
    pub const fn raw(self) -> u32 {
        match self {
            Self::Request => abi::SCOPE_REQUEST,
            Self::Connection => abi::SCOPE_CONNECTION,
            Self::Site => abi::SCOPE_SITE,
        }
    }
}

/// A log level for [`HttpContext::log`] and [`crate::Logger`]
/// (`RIIS_LOG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// `RIIS_LOG_ERROR`.
    Error,
    /// `RIIS_LOG_WARN`.
    Warn,
    /// `RIIS_LOG_INFO`.
    Info,
    /// `RIIS_LOG_DEBUG`.
    Debug,
}

impl LogLevel {
    /// The raw `RIIS_LOG_*` value.
    pub const fn raw(self) -> u32 {
        match self {
            Self::Error => abi::LOG_ERROR,
            Self::Warn => abi::LOG_WARN,
            Self::Info => abi::LOG_INFO,
            Self::Debug => abi::LOG_DEBUG,
        }
    }
}

/// A configuration section the module declared
/// ([`crate::ModuleRegistration::declare_section`]); read its values with
/// [`HttpContext::config_value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Section(pub(crate) u32);

impl Section {
    /// The id the server gave the section.
    pub const fn id(self) -> u32 {
        self.0
    }
}

/// Flags of a child request (`RIIS_EXECUTE_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecuteFlags {
    /// `RIIS_EXECUTE_FLAG_BUFFER_RESPONSE`: the child's output stays in the
    /// shared response buffer.
    pub buffer_response: bool,
    /// `RIIS_EXECUTE_FLAG_DISABLE_CUSTOM_ERROR`: custom error pages leave the
    /// child's errors alone.
    pub disable_custom_error: bool,
    /// `RIIS_EXECUTE_FLAG_SAME_URL`: allow the child to have the parent's URL.
    pub same_url: bool,
    /// `RIIS_EXECUTE_FLAG_NO_HEADERS` (ABI 1.9): only the child's entity
    /// goes into the response; the status and headers stay the parent's.
    pub no_headers: bool,
}

impl ExecuteFlags {
    /// The raw mask.
    pub const fn bits(self) -> u32 {
        let mut bits = 0;
        if self.buffer_response {
            bits |= abi::EXECUTE_FLAG_BUFFER_RESPONSE;
        }
        if self.disable_custom_error {
            bits |= abi::EXECUTE_FLAG_DISABLE_CUSTOM_ERROR;
        }
        if self.same_url {
            bits |= abi::EXECUTE_FLAG_SAME_URL;
        }
        if self.no_headers {
            bits |= abi::EXECUTE_FLAG_NO_HEADERS;
        }
        bits
    }
}

/// How a flush completes (`response_flush`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushOptions {
    /// Complete through `on_async_completion` (return `Pending`).
    pub asynchronous: bool,
    /// More data follows (keeps the body open; it is sent chunked).
    pub more_data: bool,
}

/// What is running now (`GetCurrentExecutionStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionStats<'a> {
    /// The notification being handled.
    pub notification: RequestNotification,
    /// Whether it is the post-event.
    pub is_post: bool,
    /// The module being called.
    pub module: &'a str,
}

/// The buffer of `read_entity_body`: server memory from `context_allocate`,
/// valid until the request ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadState {
    pub(crate) buffer: *mut u8,
    pub(crate) capacity: usize,
    /// Bytes of the last completed read.
    pub(crate) length: usize,
    /// Bytes asked for by the read in flight, if any.
    pub(crate) pending: Option<usize>,
}

impl ReadState {
    pub(crate) const EMPTY: ReadState = ReadState {
        buffer: std::ptr::null_mut(),
        capacity: 0,
        length: 0,
        pending: None,
    };
}

/// Whether a context belongs to a module instance (request notifications)
/// or to a global notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    Request,
    Global,
}

// ---------------------------------------------------------------- request

/// The request (IIS's `IHttpRequest`), reached with [`HttpContext::request`]
/// and [`HttpContext::request_mut`] (or on a [`ChildContext`]).
///
/// Strings are borrowed from the server, which keeps them until the request
/// ends; text that is not UTF-8 reads as absent.
pub struct HttpRequest {
    raw: Raw,
    pub(crate) read: ReadState,
}

impl HttpRequest {
    /// The HTTP method.
    pub fn method(&self) -> &str {
        self.raw.string(self.raw.api.request_method).unwrap_or("")
    }

    /// `SetHttpMethod`.
    pub fn set_method(&mut self, method: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.request_set_method,
            method,
            "request_set_method",
        )
    }

    /// The URL path, percent-decoded as the server routes it.
    pub fn url(&self) -> &str {
        self.raw.string(self.raw.api.request_url).unwrap_or("")
    }

    /// The query string without `?` (empty when none).
    pub fn query_string(&self) -> &str {
        self.raw.string(self.raw.api.request_query).unwrap_or("")
    }

    /// `SetUrl`: a path and optional query. Possible before the pipeline
    /// starts (a PreBeginRequest global module) and on a [`ChildContext`].
    pub fn set_url(&mut self, path_and_query: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.request_set_url,
            path_and_query,
            "request_set_url",
        )
    }

    /// `GetHeader`: all values joined with `", "`; `None` when absent, or
    /// when the value is not UTF-8 (see [`Self::header_bytes`]).
    pub fn header(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header_bytes(name)?).ok()
    }

    /// `GetHeader` as bytes, as the client sent them (obs-text, such as
    /// Latin-1, included); `None` when absent.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = ffi::cstring(name, "request_header").ok()?;
        // SAFETY: the context is live during the call (see `Raw`); the name
        // is NUL-terminated; `length` may be NULL.
        let ptr = unsafe {
            (self.raw.api.request_header)(self.raw.ctx, name.as_ptr(), std::ptr::null_mut())
        };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::bytes_from(ptr) }
    }

    /// `SetHeader`: replaces every value of `name`.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), ModuleError> {
        set_header(
            self.raw,
            self.raw.api.request_set_header,
            name,
            value,
            true,
            "request_set_header",
        )
    }

    /// Adds a value to `name`, keeping the others.
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), ModuleError> {
        set_header(
            self.raw,
            self.raw.api.request_set_header,
            name,
            value,
            false,
            "request_set_header",
        )
    }

    /// Removes every value of `name`.
    pub fn delete_header(&mut self, name: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.request_delete_header,
            name,
            "request_delete_header",
        )
    }

    /// The names of all headers.
    pub fn header_names(&self) -> Vec<&str> {
        self.raw.names(self.raw.api.request_header_names)
    }

    /// `GetHttpVersion`: (major, minor).
    pub fn http_version(&self) -> (u16, u16) {
        let (mut major, mut minor) = (0u16, 0u16);
        // SAFETY: the context is live; the out-pointers are valid locals.
        unsafe { (self.raw.api.request_http_version)(self.raw.ctx, &mut major, &mut minor) };
        (major, minor)
    }

    fn address(&self, remote: bool) -> Option<SocketAddr> {
        let mut text: *const c_char = std::ptr::null();
        let mut port = 0u16;
        // SAFETY: the context is live; the out-pointers are valid locals.
        let code = unsafe {
            (self.raw.api.request_address)(self.raw.ctx, remote as i32, &mut text, &mut port)
        };
        if code < 0 {
            return None;
        }
        // SAFETY: NULL or a server string valid until the request ends.
        let text = unsafe { ffi::str_from(text) }?;
        let ip: IpAddr = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// The client's address and port.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.address(true)
    }

    /// The local address and port the request arrived on.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.address(false)
    }

    /// The certificate the client presented in the TLS handshake (DER),
    /// already verified against the site's `client_certificate_ca`; `None`
    /// when it presented none, or the connection is not TLS. IIS's
    /// `GetClientCertificate`; the server variables `CERT_SUBJECT`,
    /// `CERT_ISSUER`, `CERT_SERIALNUMBER` and `CERT_COOKIE` describe the
    /// same certificate.
    pub fn client_certificate(&self) -> Option<&[u8]> {
        self.client_certificate_call().and_then(|(der, _)| der)
    }

    /// Whether the connection's handshake asked for a client certificate
    /// (the site sets `client_certificate_ca`). riis asks in the handshake,
    /// so this is IIS's `NegotiateClientCertificate` answered at once: where
    /// it is `false`, no certificate will come on this connection.
    pub fn client_certificate_negotiated(&self) -> bool {
        self.client_certificate_call()
            .is_some_and(|(_, negotiated)| negotiated)
    }

    /// `request_client_certificate`: the DER (in the request's memory) and
    /// whether the handshake asked.
    fn client_certificate_call(&self) -> Option<(Option<&[u8]>, bool)> {
        let (mut der, mut length, mut negotiated) = (std::ptr::null(), 0usize, 0);
        // SAFETY: the context is live; the out-pointers are valid.
        let code = unsafe {
            (self.raw.api.request_client_certificate)(
                self.raw.ctx,
                &mut der,
                &mut length,
                &mut negotiated,
            )
        };
        if code < 0 {
            return None;
        }
        let der = (!der.is_null() && length > 0).then(|| {
            // SAFETY: the server copied `length` bytes into the request's
            // memory, which lives until the request ends (longer than the
            // borrow of `self`).
            unsafe { std::slice::from_raw_parts(der, length) }
        });
        Some((der, negotiated != 0))
    }

    /// `InsertEntityBody`: bytes handed to readers before the rest of the
    /// body (copied).
    pub fn insert_entity_body(&mut self, data: &[u8]) -> Result<(), ModuleError> {
        // SAFETY: the context is live; the bytes are valid for the call,
        // which copies them.
        let code = unsafe {
            (self.raw.api.request_insert_entity_body)(
                self.raw.ctx,
                data.as_ptr().cast(),
                data.len(),
            )
        };
        ModuleError::check(code, "request_insert_entity_body")
    }

    /// `GetRemainingEntityBytes`: `None` when unknown (chunked).
    pub fn remaining_entity_bytes(&self) -> Option<u64> {
        // SAFETY: the context is live.
        let remaining = unsafe { (self.raw.api.request_remaining_entity_bytes)(self.raw.ctx) };
        u64::try_from(remaining).ok()
    }

    /// The bytes of the last completed [`HttpContext::read_entity_body`]
    /// (empty before the first completes, while one is in flight, and at the
    /// end of the body).
    pub fn read_data(&self) -> &[u8] {
        let read = &self.read;
        if read.pending.is_some() || read.buffer.is_null() || read.length == 0 {
            return &[];
        }
        // SAFETY: `buffer` came from `context_allocate` with `capacity`
        // zeroed bytes, valid until the request ends; the server finished
        // writing `length <= capacity` of them before it reported the read's
        // completion, and writes again only after `read_entity_body`, which
        // takes `&mut` and so ends this borrow first.
        unsafe { std::slice::from_raw_parts(read.buffer, read.length.min(read.capacity)) }
    }
}

fn set_header(
    raw: Raw,
    f: unsafe extern "C" fn(*mut riis_context, *const c_char, *const c_char, i32) -> i32,
    name: &str,
    value: &str,
    replace: bool,
    operation: &str,
) -> Result<(), ModuleError> {
    let name = ffi::cstring(name, operation)?;
    let value = ffi::cstring(value, operation)?;
    // SAFETY: `f` is a header setter of the table taking a live context and
    // two NUL-terminated strings, which it copies.
    let code = unsafe { f(raw.ctx, name.as_ptr(), value.as_ptr(), replace as i32) };
    ModuleError::check(code, operation)
}

// --------------------------------------------------------------- response

/// The response (IIS's `IHttpResponse`), reached with
/// [`HttpContext::response`] and [`HttpContext::response_mut`].
pub struct HttpResponse {
    raw: Raw,
    /// The instance's call state (an asynchronous flush is an operation).
    shared: Arc<CallShared>,
}

impl HttpResponse {
    fn status_pair(&self) -> (u16, u16) {
        let (mut status, mut substatus) = (0u16, 0u16);
        // SAFETY: the context is live; the out-pointers are valid locals.
        unsafe { (self.raw.api.response_status)(self.raw.ctx, &mut status, &mut substatus) };
        (status, substatus)
    }

    /// `GetStatus`: the status code.
    pub fn status(&self) -> u16 {
        self.status_pair().0
    }

    /// The IIS substatus.
    pub fn substatus(&self) -> u16 {
        self.status_pair().1
    }

    /// `SetStatus`: `reason` empty for the standard phrase.
    pub fn set_status(&mut self, status: u16, reason: &str) -> Result<(), ModuleError> {
        self.set_error_status(status, reason, 0, 0)
    }

    /// `SetStatus` with a substatus and the HRESULT to report (0 for none).
    pub fn set_error_status(
        &mut self,
        status: u16,
        reason: &str,
        substatus: u16,
        hresult: u32,
    ) -> Result<(), ModuleError> {
        let reason = (!reason.is_empty())
            .then(|| ffi::cstring(reason, "response_set_status"))
            .transpose()?;
        let reason_ptr = reason.as_ref().map_or(std::ptr::null(), |r| r.as_ptr());
        // SAFETY: the context is live; `reason_ptr` is NULL or a
        // NUL-terminated string that outlives the call.
        let code = unsafe {
            (self.raw.api.response_set_status)(
                self.raw.ctx,
                status,
                reason_ptr,
                substatus,
                hresult as i32,
            )
        };
        ModuleError::check(code, "response_set_status")
    }

    /// `SetErrorDescription`: text for detailed error pages.
    pub fn set_error_description(&mut self, text: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.response_set_error_description,
            text,
            "response_set_error_description",
        )
    }

    /// A response header; `None` when absent, or when the value is not
    /// UTF-8 (see [`Self::header_bytes`]).
    pub fn header(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header_bytes(name)?).ok()
    }

    /// A response header as bytes; `None` when absent.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = ffi::cstring(name, "response_header").ok()?;
        // SAFETY: the context is live; the name is NUL-terminated; `length`
        // may be NULL.
        let ptr = unsafe {
            (self.raw.api.response_header)(self.raw.ctx, name.as_ptr(), std::ptr::null_mut())
        };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::bytes_from(ptr) }
    }

    /// Sets a header, replacing its values.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), ModuleError> {
        set_header(
            self.raw,
            self.raw.api.response_set_header,
            name,
            value,
            true,
            "response_set_header",
        )
    }

    /// Adds a value to a header.
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), ModuleError> {
        set_header(
            self.raw,
            self.raw.api.response_set_header,
            name,
            value,
            false,
            "response_set_header",
        )
    }

    /// Removes a header.
    pub fn delete_header(&mut self, name: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.response_delete_header,
            name,
            "response_delete_header",
        )
    }

    /// A trailer field's values joined with `", "`; `None` when not set
    /// (or not UTF-8).
    pub fn trailer(&self, name: &str) -> Option<&str> {
        let name = ffi::cstring(name, "response_trailer").ok()?;
        // SAFETY: the context is live; the name is NUL-terminated; `length`
        // may be NULL.
        let ptr = unsafe {
            (self.raw.api.response_trailer)(self.raw.ctx, name.as_ptr(), std::ptr::null_mut())
        };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::str_from(ptr) }
    }

    /// `SetTrailer` (IIS 10's `IHttpResponse4`): a field sent after the
    /// body with the final send; `replace` or one more value. A field a
    /// trailer may not carry (RFC 9110 §6.5.1) is refused.
    pub fn set_trailer(
        &mut self,
        name: &str,
        value: &str,
        replace: bool,
    ) -> Result<(), ModuleError> {
        set_header(
            self.raw,
            self.raw.api.response_set_trailer,
            name,
            value,
            replace,
            "response_set_trailer",
        )
    }

    /// `DeleteTrailer`.
    pub fn delete_trailer(&mut self, name: &str) -> Result<(), ModuleError> {
        self.raw.call_str(
            self.raw.api.response_delete_trailer,
            name,
            "response_delete_trailer",
        )
    }

    /// `Clear`: status, headers and entity.
    pub fn clear(&mut self) -> Result<(), ModuleError> {
        self.raw.call(self.raw.api.response_clear, "response_clear")
    }

    /// `ClearHeaders`.
    pub fn clear_headers(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.response_clear_headers,
            "response_clear_headers",
        )
    }

    fn write_chunk(&mut self, chunk: &riis_data_chunk) -> Result<u64, ModuleError> {
        let mut written = 0u64;
        // SAFETY: the context is live; `chunk` is one valid chunk whose
        // memory or file name outlives the call (the server copies memory
        // and duplicates descriptors); `written` is a valid local.
        let code = unsafe {
            (self.raw.api.response_write_entity_chunks)(self.raw.ctx, chunk, 1, &mut written)
        };
        ModuleError::check(code, "response_write_entity_chunks").map(|()| written)
    }

    /// `WriteEntityChunks` with one memory chunk: appends `data` (copied) to
    /// the response. Returns the bytes taken.
    pub fn write(&mut self, data: impl AsRef<[u8]>) -> Result<u64, ModuleError> {
        let data = data.as_ref();
        self.write_chunk(&riis_data_chunk {
            r#type: abi::CHUNK_FROM_MEMORY,
            buffer: data.as_ptr().cast(),
            buffer_length: data.len() as u64,
            file_descriptor: -1,
            file_name: std::ptr::null(),
            offset: 0,
            length: 0,
        })
    }

    /// Appends a byte range of an open file (the server duplicates the
    /// descriptor). `length` `u64::MAX` means to the end.
    #[cfg(unix)]
    pub fn write_file_range(
        &mut self,
        file: &impl std::os::fd::AsFd,
        offset: u64,
        length: u64,
    ) -> Result<u64, ModuleError> {
        use std::os::fd::AsRawFd;
        self.write_chunk(&riis_data_chunk {
            r#type: abi::CHUNK_FROM_FILE_HANDLE,
            buffer: std::ptr::null(),
            buffer_length: 0,
            file_descriptor: file.as_fd().as_raw_fd(),
            file_name: std::ptr::null(),
            offset,
            length,
        })
    }

    /// Appends a byte range of a named file (absolute, or relative to the
    /// server's working directory). `length` `u64::MAX` means to the end.
    pub fn write_file_path_range(
        &mut self,
        path: impl AsRef<Path>,
        offset: u64,
        length: u64,
    ) -> Result<u64, ModuleError> {
        let name = ffi::path_cstring(path.as_ref(), "response_write_entity_chunks")?;
        self.write_chunk(&riis_data_chunk {
            r#type: abi::CHUNK_FROM_FILE_NAME,
            buffer: std::ptr::null(),
            buffer_length: 0,
            file_descriptor: -1,
            file_name: name.as_ptr(),
            offset,
            length,
        })
    }

    /// Flush when the module returns; with `asynchronous` and a `Pending`
    /// return, `on_async_completion` receives the bytes sent.
    pub fn flush(&mut self, options: FlushOptions) -> Result<(), ModuleError> {
        // SAFETY: the context is live.
        let code = unsafe {
            (self.raw.api.response_flush)(
                self.raw.ctx,
                options.asynchronous as i32,
                options.more_data as i32,
            )
        };
        ModuleError::check(code, "response_flush")?;
        if options.asynchronous {
            self.shared.note_operation();
        }
        Ok(())
    }

    /// `DisableBuffering`: every write is sent when the module returns.
    pub fn disable_buffering(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.response_disable_buffering,
            "response_disable_buffering",
        )
    }

    /// `Redirect` with `status` (301, 302, 303, 307 or 308).
    pub fn redirect(&mut self, url: &str, status: u16) -> Result<(), ModuleError> {
        let url = ffi::cstring(url, "response_redirect")?;
        // SAFETY: the context is live; the URL is NUL-terminated and copied.
        let code = unsafe { (self.raw.api.response_redirect)(self.raw.ctx, url.as_ptr(), status) };
        ModuleError::check(code, "response_redirect")
    }

    /// `SuppressHeaders`: send the entity without a status line and headers.
    pub fn suppress_headers(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.response_suppress_headers,
            "response_suppress_headers",
        )
    }

    /// `SetNeedDisconnect`: close the connection after the response.
    pub fn set_need_disconnect(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.response_set_need_disconnect,
            "response_set_need_disconnect",
        )
    }

    /// `ResetConnection`: abort the connection.
    pub fn reset_connection(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.response_reset_connection,
            "response_reset_connection",
        )
    }

    /// `SetTrySkipCustomErrors`.
    pub fn set_try_skip_custom_errors(&mut self, skip: bool) -> Result<(), ModuleError> {
        // SAFETY: the context is live.
        let code = unsafe {
            (self.raw.api.response_set_try_skip_custom_errors)(self.raw.ctx, skip as i32)
        };
        ModuleError::check(code, "response_set_try_skip_custom_errors")
    }

    /// Whether the status line and headers are already sent.
    pub fn headers_sent(&self) -> bool {
        // SAFETY: the context is live.
        unsafe { (self.raw.api.response_headers_sent)(self.raw.ctx) != 0 }
    }

    /// The names of all response headers.
    pub fn header_names(&self) -> Vec<&str> {
        self.raw.names(self.raw.api.response_header_names)
    }

    /// The buffered entity, not yet sent, as bytes: what a SendResponse
    /// module transforms. File ranges are read from their files.
    pub fn entity(&self) -> Result<Vec<u8>, ModuleError> {
        // SAFETY: the context is live.
        let count = unsafe { (self.raw.api.response_entity_chunk_count)(self.raw.ctx) };
        let mut out = Vec::new();
        for index in 0..count {
            let mut chunk = riis_data_chunk {
                r#type: abi::CHUNK_FROM_MEMORY,
                buffer: std::ptr::null(),
                buffer_length: 0,
                file_descriptor: -1,
                file_name: std::ptr::null(),
                offset: 0,
                length: 0,
            };
            // SAFETY: the context is live; `chunk` is a valid local.
            let code =
                unsafe { (self.raw.api.response_entity_chunk)(self.raw.ctx, index, &mut chunk) };
            ModuleError::check(code, "response_entity_chunk")?;
            match chunk.r#type {
                abi::CHUNK_FROM_MEMORY if chunk.buffer_length > 0 => {
                    // SAFETY: the server's buffer holds `buffer_length` bytes
                    // and stays valid until the entity changes or the call
                    // returns; it is copied at once.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(
                            chunk.buffer.cast::<u8>(),
                            chunk.buffer_length as usize,
                        )
                    };
                    out.extend_from_slice(bytes);
                }
                abi::CHUNK_FROM_MEMORY => {}
                #[cfg(unix)]
                abi::CHUNK_FROM_FILE_HANDLE => {
                    use std::os::unix::fs::FileExt;
                    // SAFETY: the server owns this open descriptor for the
                    // call; it is duplicated, never closed here.
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(chunk.file_descriptor) };
                    let file =
                        std::fs::File::from(fd.try_clone_to_owned().map_err(|e| {
                            ModuleError::new(format!("response_entity_chunk: {e}"))
                        })?);
                    let start = out.len();
                    // A range too large for memory fails this call, not the
                    // process.
                    let length = usize::try_from(chunk.length).unwrap_or(usize::MAX);
                    out.try_reserve_exact(length).map_err(|_| {
                        ModuleError::with_hresult(
                            format!("response_entity_chunk: {length} bytes do not fit in memory"),
                            abi::hr::E_OUTOFMEMORY as u32,
                        )
                    })?;
                    out.resize(start + length, 0);
                    file.read_exact_at(&mut out[start..], chunk.offset)
                        .map_err(|e| ModuleError::new(format!("response_entity_chunk: {e}")))?;
                }
                other => {
                    return Err(ModuleError::new(format!(
                        "response_entity_chunk: unknown chunk type {other}"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Replaces the buffered entity with `data` (copied).
    pub fn set_entity(&mut self, data: impl AsRef<[u8]>) -> Result<(), ModuleError> {
        let data = data.as_ref();
        let chunk = riis_data_chunk {
            r#type: abi::CHUNK_FROM_MEMORY,
            buffer: data.as_ptr().cast(),
            buffer_length: data.len() as u64,
            file_descriptor: -1,
            file_name: std::ptr::null(),
            offset: 0,
            length: 0,
        };
        // SAFETY: the context is live; the chunk points at `data`, which
        // the server copies before returning.
        let code = unsafe { (self.raw.api.response_set_entity_chunks)(self.raw.ctx, &chunk, 1) };
        ModuleError::check(code, "response_set_entity_chunks")
    }
}

// ------------------------------------------------------------------- user

/// The request's user (IIS's `IHttpUser`), from [`HttpContext::user`].
#[derive(Clone, Copy)]
pub struct HttpUser<'a> {
    raw: Raw,
    _ctx: PhantomData<&'a HttpContext>,
}

impl<'a> HttpUser<'a> {
    /// The user name.
    pub fn name(&self) -> &'a str {
        self.raw.string_for(self.raw.api.user_name).unwrap_or("")
    }

    /// How the user was authenticated (`Basic`, …).
    pub fn authentication_type(&self) -> &'a str {
        self.raw
            .string_for(self.raw.api.user_authentication_type)
            .unwrap_or("")
    }

    /// Whether the user is in `role`.
    pub fn is_in_role(&self, role: &str) -> bool {
        let Ok(role) = ffi::cstring(role, "user_is_in_role") else {
            return false;
        };
        // SAFETY: the context is live while `'a` (the borrow of the
        // `HttpContext`); the role is NUL-terminated.
        unsafe { (self.raw.api.user_is_in_role)(self.raw.ctx, role.as_ptr()) != 0 }
    }
}

impl Raw {
    /// A list of names from a `*_header_names` function: the count first,
    /// then the names.
    fn names<'a>(
        &self,
        f: unsafe extern "C" fn(*mut riis_context, *mut *const c_char, usize) -> usize,
    ) -> Vec<&'a str> {
        // SAFETY: the context is live; a NULL array with capacity 0 asks
        // for the count only.
        let count = unsafe { f(self.ctx, std::ptr::null_mut(), 0) };
        let mut names: Vec<*const c_char> = vec![std::ptr::null(); count];
        // SAFETY: `names` has room for `count` pointers.
        let total = unsafe { f(self.ctx, names.as_mut_ptr(), count) };
        names.truncate(total.min(count));
        names
            .into_iter()
            // SAFETY: each is NULL or a server string valid until the
            // request ends, which outlives the proxy's borrow 'a.
            .filter_map(|p| unsafe { ffi::str_from(p) })
            .collect()
    }

    /// [`Raw::string`] with the lifetime of a proxy that borrows the context
    /// for `'a`.
    fn string_for<'a>(&self, f: ffi::CtxStrFn) -> Option<&'a str> {
        // SAFETY: `f` is a string getter of the table; the context is live
        // (the caller holds a borrow of the `HttpContext` for 'a).
        let ptr = unsafe { f(self.ctx) };
        // SAFETY: NULL or a server string valid until the request ends,
        // which outlives 'a.
        unsafe { ffi::str_from(ptr) }
    }
}

// -------------------------------------------------------- module contexts

/// What the SDK stores in a module's context slot: the slot is owned by the
/// SDK, so every non-NULL pointer in it is a `Box<Stored>`.
pub(crate) enum Stored {
    /// A value only the request's own calls reach (request scope).
    Owned(Box<dyn Any + Send>),
    /// A value shared with other requests or threads.
    Shared(Arc<dyn Any + Send + Sync>),
}

/// Serializes reading and replacing connection- and site-scope slots, which
/// requests on other threads reach at the same time: a value read under the
/// lock cannot be freed by a replacement before its `Arc` is cloned.
static SHARED_SLOTS: Mutex<()> = Mutex::new(());

thread_local! {
    /// Values whose cleanup ran on this thread while it held `SHARED_SLOTS`:
    /// dropped after the lock is released, so that a `Drop` that uses module
    /// contexts does not deadlock.
    static DEFERRED_DROPS: RefCell<Option<Vec<Stored>>> = const { RefCell::new(None) };
}

pub(crate) fn with_shared_slots<R>(f: impl FnOnce() -> R) -> R {
    let guard = SHARED_SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = DEFERRED_DROPS.try_with(|d| *d.borrow_mut() = Some(Vec::new()));
    let result = f();
    let deferred = DEFERRED_DROPS
        .try_with(|d| d.borrow_mut().take())
        .ok()
        .flatten();
    drop(guard);
    drop(deferred);
    result
}

/// The shared value of type `T` behind a slot pointer the server returned.
/// For a shared scope the caller holds `SHARED_SLOTS` (see
/// [`with_shared_slots`]); a request's slot only its own call reaches.
pub(crate) fn shared_in_slot<T: Any + Send + Sync>(slot: *mut c_void) -> Option<Arc<T>> {
    if slot.is_null() {
        return None;
    }
    // SAFETY: the module's slot holds only `Box<Stored>` pointers (the SDK
    // owns it), and no other thread can replace (and free) the value before
    // the `Arc` is cloned (see above).
    match unsafe { &*slot.cast::<Stored>() } {
        Stored::Shared(value) => value.clone().downcast::<T>().ok(),
        Stored::Owned(_) => None,
    }
}

/// Hands `value` to the server through `set`, which stores the pointer it
/// is given with [`drop_stored`] as its cleanup; a value the server refused
/// is dropped here. Returns `set`'s code.
pub(crate) fn give_shared(
    value: Arc<dyn Any + Send + Sync>,
    set: impl FnOnce(*mut c_void) -> abi::riis_hresult,
) -> abi::riis_hresult {
    let data = Box::into_raw(Box::new(Stored::Shared(value)));
    let code = set(data.cast());
    if code < 0 {
        // SAFETY: `data` came from `Box::into_raw` above and the server did
        // not take it.
        drop(unsafe { Box::from_raw(data) });
    }
    code
}

/// The cleanup the server runs once for every value the SDK stored.
pub(crate) unsafe extern "C" fn drop_stored(data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: the SDK stores only `Box<Stored>` pointers with this cleanup,
    // and the server runs it exactly once per stored value.
    let stored = unsafe { Box::from_raw(data.cast::<Stored>()) };
    let stored = DEFERRED_DROPS
        .try_with(|d| match d.borrow_mut().as_mut() {
            Some(later) => {
                later.push(*stored);
                None
            }
            None => Some(stored),
        })
        .unwrap_or(None);
    // A panicking Drop must not unwind into the server.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stored)));
}

// ---------------------------------------------------------------- context

/// How the connection finished with a response (see
/// [`HttpContext::on_response_delivered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseDelivery {
    /// Entity bytes the connection took (the head not counted); a client
    /// that left may have received less by what the connection held.
    pub body_bytes: u64,
    /// All of the response went.
    pub whole: bool,
}

/// The request context (IIS's `IHttpContext`) handed to every module call.
///
/// A proxy over the server's `riis_context`: it exists for one call only and
/// the module receives it by reference. Strings and bytes it returns are
/// borrowed from the server, which keeps them until the request ends.
pub struct HttpContext {
    raw: Raw,
    request: HttpRequest,
    response: HttpResponse,
    pub(crate) kind: CallKind,
    shared: Arc<CallShared>,
}

impl HttpContext {
    /// The server's handle of the call's context.
    pub(crate) fn raw_context(&self) -> *mut riis_context {
        self.raw.ctx
    }

    pub(crate) fn new(
        ctx: *mut riis_context,
        api: &'static abi::riis_api,
        kind: CallKind,
        shared: Arc<CallShared>,
        read: ReadState,
    ) -> Self {
        let raw = Raw { ctx, api };
        Self {
            raw,
            request: HttpRequest { raw, read },
            response: HttpResponse {
                raw,
                shared: shared.clone(),
            },
            kind,
            shared,
        }
    }

    pub(crate) fn read_state(&self) -> ReadState {
        self.request.read
    }

    /// The request.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// The request, to change it.
    pub fn request_mut(&mut self) -> &mut HttpRequest {
        &mut self.request
    }

    /// The response.
    pub fn response(&self) -> &HttpResponse {
        &self.response
    }

    /// The response, to change it.
    pub fn response_mut(&mut self) -> &mut HttpResponse {
        &mut self.response
    }

    /// The user an authentication module set, if any.
    pub fn user(&self) -> Option<HttpUser<'_>> {
        // SAFETY: the context is live during the call.
        let present = unsafe { (self.raw.api.user_present)(self.raw.ctx) != 0 };
        present.then_some(HttpUser {
            raw: self.raw,
            _ctx: PhantomData,
        })
    }

    /// Sets the request's user (what an authentication module does).
    pub fn set_user(
        &mut self,
        name: &str,
        authentication_type: &str,
        roles: &[&str],
    ) -> Result<(), ModuleError> {
        let name = ffi::cstring(name, "set_user")?;
        let kind = ffi::cstring(authentication_type, "set_user")?;
        let roles = roles
            .iter()
            .map(|r| ffi::cstring(r, "set_user"))
            .collect::<Result<Vec<CString>, _>>()?;
        let role_ptrs: Vec<*const c_char> = roles.iter().map(|r| r.as_ptr()).collect();
        // SAFETY: the context is live; every string is NUL-terminated and
        // outlives the call, which copies them; the array holds
        // `role_ptrs.len()` pointers.
        let code = unsafe {
            (self.raw.api.set_user)(
                self.raw.ctx,
                name.as_ptr(),
                kind.as_ptr(),
                role_ptrs.as_ptr(),
                role_ptrs.len(),
            )
        };
        ModuleError::check(code, "set_user")
    }

    /// The site's name.
    pub fn site_name(&self) -> &str {
        self.raw
            .string(self.raw.api.context_site_name)
            .unwrap_or("")
    }

    /// The site's id.
    pub fn site_id(&self) -> u32 {
        // SAFETY: the context is live during the call.
        unsafe { (self.raw.api.context_site_id)(self.raw.ctx) }
    }

    /// The request's id, unique for the life of the server.
    pub fn request_id(&self) -> u64 {
        // SAFETY: the context is live during the call.
        unsafe { (self.raw.api.context_request_id)(self.raw.ctx) }
    }

    /// The physical path of the request URL (after MapPath modules).
    pub fn physical_path(&self) -> Option<&Path> {
        // SAFETY: the context is live during the call.
        let ptr = unsafe { (self.raw.api.context_physical_path)(self.raw.ctx) };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::path_from(ptr) }
    }

    /// `MapPath`: the physical path of any URL of the site.
    pub fn map_path(&self, url: &str) -> Option<&Path> {
        let url = ffi::cstring(url, "context_map_path").ok()?;
        // SAFETY: the context is live; the URL is NUL-terminated.
        let ptr = unsafe { (self.raw.api.context_map_path)(self.raw.ctx, url.as_ptr()) };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::path_from(ptr) }
    }

    /// The virtual directory the request URL maps into (IIS's
    /// `IMetadataInfo::GetVrPath`): its URL path (`/` for the site's root)
    /// and its folder. A module that keeps what it serves inside the folder
    /// the URL maps into starts from here.
    pub fn virtual_directory(&self) -> Option<(&str, &Path)> {
        let mut path = std::ptr::null();
        let mut folder = std::ptr::null();
        // SAFETY: the context is live during the call; both outputs are
        // writable.
        let code = unsafe {
            (self.raw.api.context_virtual_directory)(self.raw.ctx, &mut path, &mut folder)
        };
        ModuleError::check(code, "context_virtual_directory").ok()?;
        // SAFETY: server strings valid until the request ends.
        unsafe { Some((ffi::str_from(path)?, ffi::path_from(folder)?)) }
    }

    /// The path of the location whose configuration applies to the request
    /// (`/` for the site itself).
    pub fn location_path(&self) -> Option<&str> {
        self.raw.string(self.raw.api.context_location_path)
    }

    /// The handler mapped to the request (`None` before MapRequestHandler or
    /// when none matched).
    pub fn handler_name(&self) -> Option<&str> {
        self.raw.string(self.raw.api.context_handler_name)
    }

    /// `SetRequestHandled`: the handler's remaining modules are skipped.
    pub fn set_request_handled(&mut self) -> Result<(), ModuleError> {
        self.raw.call(
            self.raw.api.context_set_request_handled,
            "context_set_request_handled",
        )
    }

    /// `IHttpConnection::IsConnected`: whether the client may still take
    /// this request's response (false once its connection closed or the
    /// server learned that it left this request). From the module's own
    /// thread, ask [`CompletionHandle::is_client_connected`].
    pub fn is_client_connected(&self) -> bool {
        // SAFETY: the context is live during the call.
        unsafe { (self.raw.api.connection_is_connected)(self.raw.ctx) != 0 }
    }

    /// `GetIsLastNotification`: whether no module is left to run for a later
    /// notification if this one returns `status`.
    pub fn is_last_notification(&self, status: RequestNotificationStatus) -> bool {
        // SAFETY: the context is live during the call.
        unsafe { (self.raw.api.context_is_last_notification)(self.raw.ctx, status.raw()) != 0 }
    }

    /// `GetCurrentExecutionStats`: the notification and module running now.
    pub fn current_execution_stats(&self) -> Option<ExecutionStats<'_>> {
        let mut stats = riis_execution_stats {
            size: std::mem::size_of::<riis_execution_stats>() as u32,
            notification: 0,
            is_post: 0,
            module: std::ptr::null(),
        };
        // SAFETY: the context is live; `stats` is a valid, sized record.
        let code = unsafe { (self.raw.api.context_execution_stats)(self.raw.ctx, &mut stats) };
        if code < 0 {
            return None;
        }
        Some(ExecutionStats {
            notification: RequestNotification::from_bit(stats.notification)?,
            is_post: stats.is_post != 0,
            // SAFETY: NULL or a server string valid until the request ends.
            module: unsafe { ffi::str_from(stats.module) }.unwrap_or(""),
        })
    }

    /// `GetServerVariable` under the IIS names (`REMOTE_ADDR`, `URL`,
    /// `HTTP_HOST`, …).
    pub fn server_variable(&self, name: &str) -> Option<&str> {
        let name = ffi::cstring(name, "server_variable").ok()?;
        // SAFETY: the context is live; the name is NUL-terminated; `length`
        // may be NULL.
        let ptr = unsafe {
            (self.raw.api.server_variable)(self.raw.ctx, name.as_ptr(), std::ptr::null_mut())
        };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::str_from(ptr) }
    }

    /// `SetServerVariable`.
    pub fn set_server_variable(&mut self, name: &str, value: &str) -> Result<(), ModuleError> {
        let name = ffi::cstring(name, "set_server_variable")?;
        let value = ffi::cstring(value, "set_server_variable")?;
        // SAFETY: the context is live; both strings are NUL-terminated and
        // copied.
        let code = unsafe {
            (self.raw.api.set_server_variable)(self.raw.ctx, name.as_ptr(), value.as_ptr())
        };
        ModuleError::check(code, "set_server_variable")
    }

    /// A value of a section the module declared, at `key` (a dotted path),
    /// resolved for the request's location, as text (strings unquoted, other
    /// values in TOML form). `None` when absent.
    pub fn config_value(&self, section: Section, key: &str) -> Option<&str> {
        let key = ffi::cstring(key, "config_value").ok()?;
        // SAFETY: the context is live; the key is NUL-terminated.
        let ptr = unsafe { (self.raw.api.config_value)(self.raw.ctx, section.0, key.as_ptr()) };
        // SAFETY: NULL or a server string valid until the request ends.
        unsafe { ffi::str_from(ptr) }
    }

    /// Writes a line to the server log, tagged with the module's name.
    pub fn log(&self, level: LogLevel, message: &str) {
        let message = ffi::log_cstring(message);
        // SAFETY: the context is live; the message is NUL-terminated.
        unsafe { (self.raw.api.log)(self.raw.ctx, level.raw(), message.as_ptr()) };
    }

    // -- module contexts ----------------------------------------------------

    /// The raw slot pointer of this module at `scope`.
    fn slot(&self, scope: ContextScope) -> *mut Stored {
        // SAFETY: the context is live during the call.
        unsafe { (self.raw.api.module_context)(self.raw.ctx, scope.raw()) }.cast()
    }

    /// Stores `stored` in the slot; on failure the value is dropped here.
    fn store(&mut self, scope: ContextScope, stored: Option<Stored>) -> Result<(), ModuleError> {
        let data = stored.map_or(std::ptr::null_mut(), |s| Box::into_raw(Box::new(s)));
        let set = || {
            // SAFETY: the context is live; `data` is NULL or a
            // `Box<Stored>` the server now owns, released through
            // `drop_stored` exactly once.
            unsafe {
                (self.raw.api.set_module_context)(
                    self.raw.ctx,
                    scope.raw(),
                    data.cast(),
                    Some(drop_stored),
                )
            }
        };
        let code = if scope == ContextScope::Request {
            set()
        } else {
            with_shared_slots(set)
        };
        if code < 0 && !data.is_null() {
            // The server did not take the value: it is still ours.
            // SAFETY: `data` came from `Box::into_raw` above and was not
            // stored.
            drop(unsafe { Box::from_raw(data) });
        }
        ModuleError::check(code, "set_module_context")
    }

    /// Reads a shared value of this module at `scope`.
    fn shared_value<T: Any + Send + Sync>(&self, scope: ContextScope) -> Option<Arc<T>> {
        // At request scope only this call reaches the slot; shared scopes
        // read under `SHARED_SLOTS`.
        let read = || shared_in_slot(self.slot(scope).cast());
        if scope == ContextScope::Request {
            read()
        } else {
            with_shared_slots(read)
        }
    }

    /// `SetModuleContext`: stores `value` as this module's context at
    /// `scope`. At request scope it replaces (and drops) what was there; at
    /// connection and site scope, shared by concurrent requests, a value
    /// already stored stays and this fails with `ERROR_ALREADY_ASSIGNED`, as
    /// in IIS (use [`HttpContext::module_context_or_insert_with`]). Returns
    /// the stored value. Values are shared (`Arc`): use interior mutability (atomics,
    /// `Mutex`) to change them; for a plain mutable per-request value see
    /// [`HttpContext::set_request_context`].
    pub fn set_module_context<T: Any + Send + Sync>(
        &mut self,
        scope: ContextScope,
        value: T,
    ) -> Result<Arc<T>, ModuleError> {
        let value = Arc::new(value);
        self.store(scope, Some(Stored::Shared(value.clone())))?;
        Ok(value)
    }

    /// `GetModuleContext`: this module's context at `scope`, when one of
    /// type `T` was stored with [`HttpContext::set_module_context`].
    pub fn module_context<T: Any + Send + Sync>(&self, scope: ContextScope) -> Option<Arc<T>> {
        self.shared_value(scope)
    }

    /// This module's context at `scope`, stored first with `init` when there
    /// is none of type `T`. With connection and site scope, requests racing
    /// to insert all get the same value.
    pub fn module_context_or_insert_with<T: Any + Send + Sync>(
        &mut self,
        scope: ContextScope,
        init: impl FnOnce() -> T,
    ) -> Result<Arc<T>, ModuleError> {
        if let Some(value) = self.shared_value(scope) {
            return Ok(value);
        }
        // `init` runs outside the lock; the check is repeated under it.
        let value = Arc::new(init());
        let insert = || {
            if let Some(existing) = shared_in_slot::<T>(self.slot(scope).cast()) {
                return Ok(existing);
            }
            let code = give_shared(value.clone(), |data| {
                // SAFETY: the context is live; the server owns `data` from
                // now on and releases it through `drop_stored`.
                unsafe {
                    (self.raw.api.set_module_context)(
                        self.raw.ctx,
                        scope.raw(),
                        data,
                        Some(drop_stored),
                    )
                }
            });
            ModuleError::check(code, "set_module_context").map(|()| value.clone())
        };
        if scope == ContextScope::Request {
            insert()
        } else {
            with_shared_slots(insert)
        }
    }

    /// Removes this module's request-scope context (dropping it). A
    /// connection or site value stays until its scope ends (another request
    /// may be using it): clearing one is refused.
    pub fn clear_module_context(&mut self, scope: ContextScope) -> Result<(), ModuleError> {
        if scope != ContextScope::Request {
            return Err(ModuleError::with_hresult(
                "connection and site contexts stay until their scope ends",
                ModuleError::E_NOT_SUPPORTED,
            ));
        }
        self.store(scope, None)
    }

    /// Stores a plain, mutable request-scope value (the module's context at
    /// [`ContextScope::Request`]), replacing what was there. It is dropped
    /// when the request ends. Useful to hand state from a global module's
    /// PreBeginRequest to the request's instance, or between child and
    /// parent code of the same module.
    pub fn set_request_context<T: Any + Send>(&mut self, value: T) -> Result<(), ModuleError> {
        self.store(ContextScope::Request, Some(Stored::Owned(Box::new(value))))
    }

    /// The request-scope value stored with
    /// [`HttpContext::set_request_context`], when it is a `T`.
    pub fn request_context<T: Any + Send>(&self) -> Option<&T> {
        let slot = self.slot(ContextScope::Request);
        if slot.is_null() {
            return None;
        }
        // SAFETY: the slot holds a `Box<Stored>` (the SDK owns it); only
        // this request's calls reach it, one at a time, and replacing it
        // takes `&mut self`, so it outlives this borrow.
        match unsafe { &*slot } {
            Stored::Owned(value) => value.downcast_ref::<T>(),
            Stored::Shared(_) => None,
        }
    }

    /// The request-scope value, mutably.
    pub fn request_context_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        let slot = self.slot(ContextScope::Request);
        if slot.is_null() {
            return None;
        }
        // SAFETY: as in `request_context`; `&mut self` makes this the only
        // borrow of the value.
        match unsafe { &mut *slot } {
            Stored::Owned(value) => value.downcast_mut::<T>(),
            Stored::Shared(_) => None,
        }
    }

    /// Removes the request-scope value and returns it, when it is a `T`.
    pub fn take_request_context<T: Any + Send>(&mut self) -> Option<T> {
        let slot = self.slot(ContextScope::Request);
        if slot.is_null() {
            return None;
        }
        // SAFETY: as in `request_context_mut`.
        let stored = unsafe { &mut *slot };
        let Stored::Owned(value) = stored else {
            return None;
        };
        if !value.is::<T>() {
            return None;
        }
        // Leave a unit behind for the cleanup the clearing below runs.
        let value = std::mem::replace(value, Box::new(()));
        let _ = self.clear_module_context(ContextScope::Request);
        value.downcast::<T>().ok().map(|b| *b)
    }

    // -- notifications -------------------------------------------------------

    /// `NotifyCustomNotification` with a typed payload: every module
    /// registered for custom notifications sees `type_name`; receivers using
    /// this SDK in the same library reach `payload` with
    /// [`crate::CustomNotification::payload`], others see NULL data. Delivery
    /// is synchronous: the receivers run before this returns.
    pub fn raise_custom_notification_with<T: Any>(
        &mut self,
        type_name: &str,
        payload: &mut T,
    ) -> Result<(), ModuleError> {
        let name = ffi::cstring(type_name, "raise_custom_notification")?;
        provider::with_payload(type_name, payload, || {
            // SAFETY: the context is live; the name is NUL-terminated; NULL
            // data is valid for every receiver.
            let code = unsafe {
                (self.raw.api.raise_custom_notification)(
                    self.raw.ctx,
                    name.as_ptr(),
                    std::ptr::null_mut(),
                )
            };
            ModuleError::check(code, "raise_custom_notification")
        })
    }

    /// `NotifyCustomNotification` with an opaque pointer, for receivers
    /// outside this SDK (C modules) that expect `data` for `type_name`.
    ///
    /// # Safety
    ///
    /// `data` must be what the receivers of `type_name` expect (valid for
    /// the reads and writes they make, for the duration of this call). C++
    /// receivers built with an `httpserv.h` older than ABI 1.7 compare the
    /// first 8 bytes of an aligned `data` from 64 KiB up with their own
    /// marker: for them, pass NULL or at least 8 readable bytes (newer
    /// ones never read `data`).
    pub unsafe fn raise_custom_notification_raw(
        &mut self,
        type_name: &str,
        data: *mut c_void,
    ) -> Result<(), ModuleError> {
        let name = ffi::cstring(type_name, "raise_custom_notification")?;
        // SAFETY: the context is live; the name is NUL-terminated; `data` is
        // valid for the receivers (the caller's promise).
        let code =
            unsafe { (self.raw.api.raise_custom_notification)(self.raw.ctx, name.as_ptr(), data) };
        ModuleError::check(code, "raise_custom_notification")
    }

    /// A global custom notification (`RIIS_GL_CUSTOM_NOTIFICATION`) with a
    /// typed payload, as [`HttpContext::raise_custom_notification_with`].
    pub fn raise_global_custom_notification_with<T: Any>(
        &mut self,
        type_name: &str,
        payload: &mut T,
    ) -> Result<(), ModuleError> {
        let name = ffi::cstring(type_name, "raise_global_custom_notification")?;
        provider::with_payload(type_name, payload, || {
            // SAFETY: as in `raise_custom_notification_with`.
            let code = unsafe {
                (self.raw.api.raise_global_custom_notification)(
                    self.raw.ctx,
                    name.as_ptr(),
                    std::ptr::null_mut(),
                )
            };
            ModuleError::check(code, "raise_global_custom_notification")
        })
    }

    /// A global custom notification with an opaque pointer.
    ///
    /// # Safety
    ///
    /// As [`HttpContext::raise_custom_notification_raw`].
    pub unsafe fn raise_global_custom_notification_raw(
        &mut self,
        type_name: &str,
        data: *mut c_void,
    ) -> Result<(), ModuleError> {
        let name = ffi::cstring(type_name, "raise_global_custom_notification")?;
        // SAFETY: as in `raise_custom_notification_raw`.
        let code = unsafe {
            (self.raw.api.raise_global_custom_notification)(self.raw.ctx, name.as_ptr(), data)
        };
        ModuleError::check(code, "raise_global_custom_notification")
    }

    // -- asynchronous operations ---------------------------------------------

    fn request_only(&self, operation: &str) -> Result<(), ModuleError> {
        match self.kind {
            CallKind::Request => Ok(()),
            CallKind::Global => Err(ModuleError::with_hresult(
                format!("{operation} is for request notifications"),
                ModuleError::E_INVALID_STATE,
            )),
        }
    }

    /// `ReadEntityBody`, asynchronous: reads up to `max` body bytes when the
    /// module returns [`RequestNotificationStatus::Pending`]. Then
    /// `on_async_completion` gets the byte count (0 at the end of the body)
    /// and [`HttpContext::read_data`] the bytes. ReadEntity modules see them
    /// first.
    pub fn read_entity_body(&mut self, max: usize) -> Result<(), ModuleError> {
        self.request_only("read_entity_body")?;
        if self.request.read.pending.is_some() {
            // The buffer is the server's until that read completes.
            return Err(ModuleError::with_hresult(
                "a body read is already under way",
                ModuleError::E_INVALIDARG,
            ));
        }
        let max = max.max(1);
        let read = &mut self.request.read;
        if read.buffer.is_null() || read.capacity < max {
            // SAFETY: the context is live; the server returns NULL or `max`
            // zeroed bytes that live until the request ends.
            let buffer = unsafe { (self.raw.api.context_allocate)(self.raw.ctx, max) };
            if buffer.is_null() {
                return Err(ModuleError::with_hresult(
                    "context_allocate failed",
                    ModuleError::E_OUTOFMEMORY,
                ));
            }
            read.buffer = buffer.cast();
            read.capacity = max;
        }
        read.length = 0;
        // SAFETY: the context is live; `buffer` has room for `max` bytes and
        // stays valid until the request ends, as the server requires.
        let code = unsafe {
            (self.raw.api.request_read_entity_body)(self.raw.ctx, read.buffer.cast(), max)
        };
        ModuleError::check(code, "request_read_entity_body")?;
        read.pending = Some(max);
        self.shared.note_operation();
        Ok(())
    }

    /// The bytes of the last completed read (see [`HttpRequest::read_data`]).
    pub fn read_data(&self) -> &[u8] {
        self.request.read_data()
    }

    /// `IHttpContext3::EnableFullDuplex`: from now on, a body read started
    /// with `Pending` stays under way while the module sends and is woken
    /// through its [`CompletionHandle`]; an asynchronous flush may go with
    /// the read in the same call. Each completion's
    /// [`CompletionInfo::operation`](crate::CompletionInfo::operation)
    /// says which operation it reports; [`HttpContext::read_data`] holds
    /// the bytes once the read's has come. Returning anything but `Pending`
    /// gives the read up.
    pub fn enable_full_duplex(&mut self) -> Result<(), ModuleError> {
        self.request_only("enable_full_duplex")?;
        self.raw.call(
            self.raw.api.context_enable_full_duplex,
            "context_enable_full_duplex",
        )
    }

    /// Calls `watch` once the connection is done with this request's
    /// response: with the entity bytes it took and whether all of it went
    /// (C ABI 1.8 `context_on_response_delivered`). The call comes after
    /// the request's pipeline, often after this instance is disposed, on a
    /// server thread, exactly once (also, not whole and with no bytes, for
    /// a response that never reached a connection). What an access log
    /// needs: IIS logs once HTTP.sys has sent the response.
    pub fn on_response_delivered(
        &mut self,
        watch: impl FnOnce(ResponseDelivery) + Send + 'static,
    ) -> Result<(), ModuleError> {
        type Watch = Box<dyn FnOnce(ResponseDelivery) + Send>;
        unsafe extern "C" fn deliver(data: *mut c_void, body_bytes: u64, whole: std::ffi::c_int) {
            // SAFETY: `data` is the box made below, which the server gives
            // back exactly once.
            let watch = unsafe { Box::from_raw(data.cast::<Watch>()) };
            let delivery = ResponseDelivery {
                body_bytes,
                whole: whole != 0,
            };
            // A panic must not unwind into the server.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || watch(delivery)))
                .is_err()
            {
                eprintln!("riis-sdk: a response delivery watcher panicked");
            }
        }
        self.request_only("on_response_delivered")?;
        let data = Box::into_raw(Box::new(Box::new(watch) as Watch)).cast::<c_void>();
        // SAFETY: the context is live; this is the calling thread; `deliver`
        // and `data` may be used from any thread once.
        let code = unsafe {
            (self.raw.api.context_on_response_delivered)(self.raw.ctx, Some(deliver), data)
        };
        if code < 0 {
            // Refused: the server will not call; the box is still ours.
            // SAFETY: made above and not given away.
            drop(unsafe { Box::from_raw(data.cast::<Watch>()) });
        }
        ModuleError::check(code, "context_on_response_delivered")
    }

    /// `PostCompletion`: `on_async_completion` runs with `bytes` once the
    /// module returns `Pending`.
    pub fn post_completion(&mut self, bytes: u64) -> Result<(), ModuleError> {
        self.request_only("post_completion")?;
        // SAFETY: the context is live; this is the calling thread.
        let code = unsafe { (self.raw.api.post_completion)(self.raw.ctx, bytes) };
        ModuleError::check(code, "post_completion")?;
        self.shared.note_operation();
        Ok(())
    }

    /// A handle to resume this request from another thread after returning
    /// `Pending` (see [`CompletionHandle`]). In a global notification the
    /// handle's functions fail.
    pub fn completion_handle(&self) -> CompletionHandle {
        CompletionHandle::new(&self.shared)
    }

    /// `CloneContext`: a child context with the parent's method, URL,
    /// headers and user. Change its URL with [`HttpRequest::set_url`] on
    /// [`ChildContext::request_mut`], then run it with
    /// [`HttpContext::execute_request`]; dropped unexecuted, it is released.
    pub fn clone_context(&self) -> Result<ChildContext<'_>, ModuleError> {
        // SAFETY: the context is live during the call.
        let child = unsafe { (self.raw.api.context_clone)(self.raw.ctx) };
        if child.is_null() {
            return Err(ModuleError::with_hresult(
                "context_clone failed (child requests nest only so deep)",
                ModuleError::E_NOT_SUPPORTED,
            ));
        }
        Ok(ChildContext {
            parent: self.raw,
            request: HttpRequest {
                raw: Raw {
                    ctx: child,
                    api: self.raw.api,
                },
                read: ReadState::EMPTY,
            },
            _parent: PhantomData,
        })
    }

    /// [`HttpContext::clone_context`] with the child's URL (path and query)
    /// set.
    pub fn clone_context_with_url(
        &self,
        path_and_query: &str,
    ) -> Result<ChildContext<'_>, ModuleError> {
        let mut child = self.clone_context()?;
        child.request.set_url(path_and_query)?;
        Ok(child)
    }

    /// `ExecuteRequest`: `child` runs through the pipeline when the module
    /// returns; with a `Pending` return, `on_async_completion` follows the
    /// child's end.
    pub fn execute_request(
        &self,
        mut child: ChildContext<'_>,
        flags: ExecuteFlags,
    ) -> Result<(), ModuleError> {
        if child.parent.ctx != self.raw.ctx {
            return Err(ModuleError::with_hresult(
                "the child context was cloned from another context",
                ModuleError::E_INVALIDARG,
            ));
        }
        let handle = std::mem::replace(&mut child.request.raw.ctx, std::ptr::null_mut());
        // SAFETY: both contexts are live; the server consumes the child
        // handle, which `child` no longer releases.
        let code =
            unsafe { (self.raw.api.context_execute_request)(self.raw.ctx, handle, flags.bits()) };
        ModuleError::check(code, "context_execute_request")?;
        self.shared.note_operation();
        Ok(())
    }
}

/// A child request context from [`HttpContext::clone_context`], before it
/// runs. It borrows the parent context, so it lives within the call; dropped
/// without [`HttpContext::execute_request`], it is released.
pub struct ChildContext<'a> {
    parent: Raw,
    request: HttpRequest,
    _parent: PhantomData<&'a HttpContext>,
}

impl ChildContext<'_> {
    /// The child's request.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// The child's request, to set its URL, method or headers.
    pub fn request_mut(&mut self) -> &mut HttpRequest {
        &mut self.request
    }
}

impl Drop for ChildContext<'_> {
    fn drop(&mut self) {
        let child = self.request.raw.ctx;
        if !child.is_null() {
            // SAFETY: the parent is live (borrowed for 'a) and the child
            // handle was neither executed nor released.
            unsafe { (self.parent.api.context_release_clone)(self.parent.ctx, child) };
        }
    }
}
