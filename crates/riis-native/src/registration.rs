//! Calling a module's entry point, and what a `riis_registration*` points at.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::{Arc, OnceLock};

use riis_abi::{riis_register_module_fn, riis_registration, riis_server, SERVER_VERSION};
use riis_pipeline::{ModuleError, ModuleRegistration, Section, ServerInfo};

use crate::module::ModuleShared;

thread_local! {
    /// The registration whose entry point is running on this thread.
    static RUNNING_REGISTRATION: Cell<*const c_void> = const { Cell::new(ptr::null()) };
}

/// The object behind a `riis_registration*`, alive during RegisterModule.
pub(crate) struct RegistrationHandle<'a, 'b> {
    pub(crate) registration: &'a mut ModuleRegistration<'b>,
    pub(crate) shared: Arc<ModuleShared>,
    pub(crate) sections: RefCell<Vec<Section<toml::Table>>>,
    /// Why a call failed, for the error the server reports.
    pub(crate) failure: RefCell<Option<String>>,
}

/// Resolves a registration pointer during RegisterModule.
///
/// # Safety
/// `p` must be NULL or the pointer the server passed to RegisterModule.
pub(crate) unsafe fn resolve_registration<'a>(
    p: *mut riis_registration,
) -> Option<&'a mut RegistrationHandle<'a, 'a>> {
    if p.is_null() || RUNNING_REGISTRATION.with(|r| r.get()) != p.cast_const().cast() {
        return None;
    }
    // SAFETY: it is the handle of the entry point running on this thread
    // (checked above), which lives on the stack of `register_entry_point`.
    Some(unsafe { &mut *p.cast::<RegistrationHandle<'a, 'a>>() })
}

/// `riis_server`, shared by every module: software name and function table.
struct StaticServer(riis_server);

// SAFETY: the pointers inside refer to immutable statics.
unsafe impl Sync for StaticServer {}

const SOFTWARE: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
    concat!("riis/", env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(s) => s,
    Err(_) => panic!("the software name has no interior NUL"),
};

static SERVER: StaticServer = StaticServer(riis_server {
    size: std::mem::size_of::<riis_server>() as u32,
    abi_version: riis_abi::ABI_VERSION,
    software: SOFTWARE.as_ptr(),
    api: &crate::api::API,
});

/// Registers a module through a C-ABI entry point: one loaded from a library
/// ([`crate::NativeLibrary`]) or compiled into the program (a Rust SDK
/// module's `module_entry!`, a C module linked statically).
pub fn register_entry_point(
    entry: riis_register_module_fn,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    register_built_for(entry, riis_abi::ABI_MINOR, registration, server)
}

/// [`register_entry_point`] for a module built for ABI 1.`abi_minor`.
pub(crate) fn register_built_for(
    entry: riis_register_module_fn,
    abi_minor: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let name = registration.name().to_owned();
    let shared = Arc::new(ModuleShared {
        index: registration.id(),
        name_c: CString::new(name.clone()).map_err(|_| {
            ModuleError::with_hresult(
                "the module name holds a NUL byte",
                ModuleError::E_INVALIDARG,
            )
        })?,
        name,
        sections: OnceLock::new(),
        abi_minor,
    });
    let mut handle = RegistrationHandle {
        registration,
        shared: shared.clone(),
        sections: RefCell::new(Vec::new()),
        failure: RefCell::new(None),
    };
    let p: *mut riis_registration = (&mut handle as *mut RegistrationHandle<'_, '_>).cast();
    let previous = RUNNING_REGISTRATION.with(|r| r.replace(p.cast_const().cast()));
    let _named = crate::frame::ModuleGuard::enter(&shared);
    // SAFETY: the entry point has the riis_register_module_fn signature (the
    // loader checked the library's ABI stamp); the registration handle and
    // the server description are valid for the call.
    let result = unsafe { entry(SERVER_VERSION, p, &SERVER.0) };
    RUNNING_REGISTRATION.with(|r| r.set(previous));
    let _ = shared.sections.set(handle.sections.into_inner());
    if result < 0 {
        let detail = handle
            .failure
            .into_inner()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        return Err(ModuleError::with_hresult(
            // The HRESULT itself follows in the error's text.
            format!("RegisterModule failed{detail}"),
            result as u32,
        ));
    }
    Ok(())
}
