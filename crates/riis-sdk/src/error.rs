//! [`ModuleError`]: a failure with an HRESULT, both ways across the ABI.

use riis_abi::{hr, riis_hresult};

/// A failure: what a factory or registration reports to the server, and what
/// a server function reported to the module.
///
/// `hresult` is the HRESULT as an unsigned number, as the engine's
/// `ModuleError` carries it (`0x80004005` for `E_FAIL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    /// What went wrong.
    pub message: String,
    /// The HRESULT that goes with it (`E_FAIL` unless more is known).
    pub hresult: u32,
}

impl ModuleError {
    /// `E_FAIL`.
    pub const E_FAIL: u32 = hr::E_FAIL as u32;
    /// `E_OUTOFMEMORY`.
    pub const E_OUTOFMEMORY: u32 = hr::E_OUTOFMEMORY as u32;
    /// `E_INVALIDARG`.
    pub const E_INVALIDARG: u32 = hr::E_INVALIDARG as u32;
    /// `E_NOTIMPL`.
    pub const E_NOTIMPL: u32 = hr::E_NOTIMPL as u32;
    /// `HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)`.
    pub const E_NOT_SUPPORTED: u32 = hr::E_NOT_SUPPORTED as u32;
    /// `HRESULT_FROM_WIN32(ERROR_NOT_FOUND)`.
    pub const E_NOT_FOUND: u32 = hr::E_NOT_FOUND as u32;
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_STATE)`: called outside its moment.
    pub const E_INVALID_STATE: u32 = hr::E_INVALID_STATE as u32;
    /// `HRESULT_FROM_WIN32(ERROR_HANDLE_EOF)`: a body read asked for after
    /// one completed with 0 bytes at the end of the body.
    pub const E_HANDLE_EOF: u32 = hr::E_HANDLE_EOF as u32;
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_THREAD_ID)`: a context used off its call.
    pub const E_WRONG_THREAD: u32 = hr::E_WRONG_THREAD as u32;
    /// `HRESULT_FROM_WIN32(ERROR_REVISION_MISMATCH)`: ABI versions differ.
    pub const E_REVISION_MISMATCH: u32 = hr::E_REVISION_MISMATCH as u32;

    /// An error with `E_FAIL`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hresult: Self::E_FAIL,
        }
    }

    /// An error with a given HRESULT.
    pub fn with_hresult(message: impl Into<String>, hresult: u32) -> Self {
        Self {
            message: message.into(),
            hresult,
        }
    }

    /// The HRESULT to hand the server: always a failure code (a success or
    /// zero `hresult` becomes `E_FAIL`).
    pub fn failure_code(&self) -> riis_hresult {
        let code = self.hresult as riis_hresult;
        if code < 0 {
            code
        } else {
            hr::E_FAIL
        }
    }

    /// `Ok` for a success HRESULT, an error naming `operation` otherwise.
    pub(crate) fn check(code: riis_hresult, operation: &str) -> Result<(), ModuleError> {
        if code >= 0 {
            Ok(())
        } else {
            Err(Self::with_hresult(
                format!("{operation} failed"),
                code as u32,
            ))
        }
    }
}

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:08X})", self.message, self.hresult)
    }
}

impl std::error::Error for ModuleError {}
