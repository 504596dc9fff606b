//! Conversions at the boundary: C strings in and out, paths, panics.

use std::any::Any;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

use riis_abi::{riis_api, riis_context, riis_hresult};

use crate::error::ModuleError;

/// A context handle with the function table: what every proxy carries.
///
/// A `Raw` lives only inside the proxies the SDK builds for one call
/// (`HttpContext`, `HttpRequest`, `HttpResponse`, `ChildContext`), which
/// module code receives by reference and cannot keep, so `ctx` is valid
/// whenever a `Raw` is used.
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    pub(crate) ctx: *mut riis_context,
    pub(crate) api: &'static riis_api,
}

/// The signature of the server functions that take a context and return a
/// string.
pub(crate) type CtxStrFn = unsafe extern "C" fn(*mut riis_context) -> *const c_char;
/// A context and one string in, an HRESULT out.
pub(crate) type CtxStrHrFn = unsafe extern "C" fn(*mut riis_context, *const c_char) -> riis_hresult;
/// A context in, an HRESULT out.
pub(crate) type CtxHrFn = unsafe extern "C" fn(*mut riis_context) -> riis_hresult;

impl Raw {
    /// A string getter of `riis_api` called on this context. `f` must be one
    /// of the table's `(riis_context*) -> const char*` functions.
    pub(crate) fn string(&self, f: CtxStrFn) -> Option<&str> {
        // SAFETY: `f` comes from the server's table and takes a context;
        // `self.ctx` is the live context of the current call (see `Raw`).
        let ptr = unsafe { f(self.ctx) };
        // SAFETY: the server returns NULL or a NUL-terminated string that
        // stays valid until the request ends, which outlives `&self`.
        unsafe { str_from(ptr) }
    }

    /// An HRESULT function of `riis_api` taking only the context.
    pub(crate) fn call(&self, f: CtxHrFn, operation: &str) -> Result<(), ModuleError> {
        // SAFETY: `f` comes from the server's table and takes a context;
        // `self.ctx` is the live context of the current call.
        ModuleError::check(unsafe { f(self.ctx) }, operation)
    }

    /// An HRESULT function of `riis_api` taking the context and a string.
    pub(crate) fn call_str(
        &self,
        f: CtxStrHrFn,
        value: &str,
        operation: &str,
    ) -> Result<(), ModuleError> {
        let value = cstring(value, operation)?;
        // SAFETY: `f` comes from the server's table; the context is live and
        // the string is NUL-terminated and outlives the call (the server
        // copies what it keeps).
        ModuleError::check(unsafe { f(self.ctx, value.as_ptr()) }, operation)
    }
}

/// A server string as `&str`: `None` for NULL or text that is not UTF-8.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn str_from<'a>(ptr: *const c_char) -> Option<&'a str> {
    // SAFETY: forwarded from this function's contract.
    std::str::from_utf8(unsafe { bytes_from(ptr) }?).ok()
}

/// The bytes of a server string, whatever their encoding (header values).
///
/// # Safety
///
/// As [`str_from`].
pub(crate) unsafe fn bytes_from<'a>(ptr: *const c_char) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated and valid for 'a (the caller's promise).
    Some(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// A server path as `&Path` (any bytes on Unix).
///
/// # Safety
///
/// As [`str_from`].
pub(crate) unsafe fn path_from<'a>(ptr: *const c_char) -> Option<&'a Path> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated and valid for 'a (the caller's promise).
    let text = unsafe { CStr::from_ptr(ptr) };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Some(Path::new(std::ffi::OsStr::from_bytes(text.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        text.to_str().ok().map(Path::new)
    }
}

/// A string for the server; an interior NUL is `E_INVALIDARG`.
pub(crate) fn cstring(value: &str, operation: &str) -> Result<CString, ModuleError> {
    CString::new(value).map_err(|_| {
        ModuleError::with_hresult(
            format!("{operation}: the text contains a NUL character"),
            ModuleError::E_INVALIDARG,
        )
    })
}

/// A path for the server; an interior NUL is `E_INVALIDARG`.
pub(crate) fn path_cstring(path: &Path, operation: &str) -> Result<CString, ModuleError> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    CString::new(bytes).map_err(|_| {
        ModuleError::with_hresult(
            format!("{operation}: the path contains a NUL character"),
            ModuleError::E_INVALIDARG,
        )
    })
}

/// A log line for the server: interior NULs become spaces rather than
/// losing the message.
pub(crate) fn log_cstring(message: &str) -> CString {
    CString::new(message.replace('\0', " ")).unwrap_or_default()
}

/// The text a panic carried; the payload is dropped here, under a guard.
pub(crate) fn panic_message(panic: Box<dyn Any + Send>) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    // A payload's own drop may panic too; outside a guard that would
    // unwind into the server through the callback that caught the first.
    if let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)))
    {
        std::mem::forget(again);
    }
    message
}
