//! The native module ABI of riis, as Rust declarations.
//!
//! This crate mirrors `include/riis_module.h` field for field: the server's
//! loader (`riis-native`) and the Rust module SDK (`riis-sdk`) both build on
//! it, so the two sides of the boundary cannot drift apart. The header is the
//! reference: every comment there applies here. A layout test in
//! `tests/layout.rs` compiles the header with the system C compiler and
//! compares sizes and offsets.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

/// ABI major version: a module built for another major is refused.
pub const ABI_MAJOR: u32 = 1;
/// ABI minor version: modules built for this or an older minor load.
pub const ABI_MINOR: u32 = 12;
/// Major in the high 16 bits, minor in the low 16 (`RIIS_ABI_VERSION`).
pub const ABI_VERSION: u32 = (ABI_MAJOR << 16) | ABI_MINOR;
/// The `server_version` RegisterModule receives.
pub const SERVER_VERSION: u32 = 10;

/// The symbol every module library exports: its `RIIS_ABI_VERSION`.
pub const ABI_SYMBOL: &[u8] = b"riis_module_abi";
/// The entry point of a C module (and of a Rust SDK module).
pub const REGISTER_SYMBOL: &[u8] = b"RegisterModule";
/// The entry point `httpserv.h` exports for a C++ module.
pub const CXX_REGISTER_SYMBOL: &[u8] = b"riis_cxx_register_module";

/// An HRESULT: 0 on success, negative on failure.
pub type riis_hresult = i32;
/// `REQUEST_NOTIFICATION_STATUS`.
pub type riis_status = u32;
/// `GLOBAL_NOTIFICATION_STATUS`.
pub type riis_global_status = u32;

/// Result codes (`RIIS_S_OK`, `RIIS_E_*`).
pub mod hr {
    use super::riis_hresult;
    pub const S_OK: riis_hresult = 0;
    pub const S_FALSE: riis_hresult = 1;
    pub const E_FAIL: riis_hresult = 0x8000_4005_u32 as i32;
    pub const E_OUTOFMEMORY: riis_hresult = 0x8007_000E_u32 as i32;
    pub const E_INVALIDARG: riis_hresult = 0x8007_0057_u32 as i32;
    pub const E_NOTIMPL: riis_hresult = 0x8000_4001_u32 as i32;
    pub const E_NOT_SUPPORTED: riis_hresult = 0x8007_0032_u32 as i32;
    pub const E_NOT_FOUND: riis_hresult = 0x8007_0490_u32 as i32;
    pub const E_INVALID_STATE: riis_hresult = 0x8007_139F_u32 as i32;
    /// `HRESULT_FROM_WIN32(ERROR_BUSY)` (since 1.7).
    pub const E_BUSY: riis_hresult = 0x8007_00AA_u32 as i32;
    /// `HRESULT_FROM_WIN32(ERROR_HANDLE_EOF)`: a body read after the end.
    pub const E_HANDLE_EOF: riis_hresult = 0x8007_0026_u32 as i32;
    pub const E_WRONG_THREAD: riis_hresult = 0x8007_05A4_u32 as i32;
    pub const E_REVISION_MISMATCH: riis_hresult = 0x8007_051A_u32 as i32;
    pub const E_ALREADY_ASSIGNED: riis_hresult = 0x8007_0055_u32 as i32;
}

/// Notification statuses.
pub const STATUS_CONTINUE: riis_status = 0;
pub const STATUS_PENDING: riis_status = 1;
pub const STATUS_FINISH_REQUEST: riis_status = 2;
pub const GLOBAL_CONTINUE: riis_global_status = 0;
pub const GLOBAL_HANDLED: riis_global_status = 1;

/// `HTTP_DATA_CHUNK_TYPE` values.
pub const CHUNK_FROM_MEMORY: u32 = 0;
pub const CHUNK_FROM_FILE_HANDLE: u32 = 1;
pub const CHUNK_FROM_FILE_NAME: u32 = 2;

/// SendResponse flags.
pub const SEND_FLAG_DISCONNECT: u32 = 0x1;
pub const SEND_FLAG_MORE_DATA: u32 = 0x2;

/// Child request flags (IIS's `EXECUTE_FLAG_*` values).
pub const EXECUTE_FLAG_DISABLE_CUSTOM_ERROR: u32 = 0x08;
pub const EXECUTE_FLAG_SAME_URL: u32 = 0x10;
pub const EXECUTE_FLAG_BUFFER_RESPONSE: u32 = 0x20;
/// Since 1.9: the child's entity alone goes into the response.
pub const EXECUTE_FLAG_NO_HEADERS: u32 = 0x01;
/// Since 1.2, riis's own: the child runs as the user set on the clone and
/// skips authentication (IIS's `pHttpUser`).
pub const EXECUTE_FLAG_AS_USER: u32 = 0x1_0000;

/// `riis_completion_info::operation` values (`RIIS_OPERATION_*`).
pub const OPERATION_POSTED: u32 = 0;
pub const OPERATION_READ: u32 = 1;
pub const OPERATION_WRITE: u32 = 2;
pub const OPERATION_EXECUTE_REQUEST: u32 = 3;

/// Flags of a custom notification (since 1.7): `data` is an httpserv.h
/// `riis_cxx::CustomEnvelope`.
pub const CUSTOM_CXX_ENVELOPE: u32 = 0x1;
/// Set by the server: the raiser was built for an ABI before 1.7 and could
/// not say what its `data` is (an older httpserv.h's envelope, perhaps).
pub const CUSTOM_UNDECLARED: u32 = 0x2;

/// Module context scopes.
pub const SCOPE_REQUEST: u32 = 0;
pub const SCOPE_CONNECTION: u32 = 1;
pub const SCOPE_SITE: u32 = 2;

/// Log levels.
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;

/// Provider kinds.
pub const PROVIDER_SEND_RESPONSE: u32 = 1;
pub const PROVIDER_READ_ENTITY: u32 = 2;
pub const PROVIDER_MAP_PATH: u32 = 3;
pub const PROVIDER_CUSTOM: u32 = 4;
pub const PROVIDER_AUTHENTICATION: u32 = 5;

/// Cache operations.
pub const CACHE_ADD: u32 = 1;
pub const CACHE_REMOVE: u32 = 2;

/// Opaque handles: only pointers to them cross the boundary.
macro_rules! opaque {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}

opaque!(
    /// `riis_registration`.
    riis_registration,
    /// `riis_context`.
    riis_context,
    /// `riis_provider`.
    riis_provider,
    /// `riis_global_provider`.
    riis_global_provider,
    /// `riis_allocator`.
    riis_allocator,
);

/// `riis_server`.
#[repr(C)]
pub struct riis_server {
    pub size: u32,
    pub abi_version: u32,
    pub software: *const c_char,
    pub api: *const riis_api,
}

/// `riis_completion_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct riis_completion_info {
    pub size: u32,
    pub status: riis_hresult,
    pub bytes: u64,
    /// Since 1.6.
    pub operation: u32,
}

/// `riis_module_callbacks`.
#[repr(C)]
pub struct riis_module_callbacks {
    pub size: u32,
    pub on_notification: Option<
        unsafe extern "C" fn(
            module: *mut c_void,
            context: *mut riis_context,
            notification: u32,
            is_post: c_int,
            provider: *mut riis_provider,
        ) -> riis_status,
    >,
    pub on_async_completion: Option<
        unsafe extern "C" fn(
            module: *mut c_void,
            context: *mut riis_context,
            notification: u32,
            is_post: c_int,
            provider: *mut riis_provider,
            completion: *const riis_completion_info,
        ) -> riis_status,
    >,
    pub dispose: Option<unsafe extern "C" fn(module: *mut c_void)>,
}

/// `riis_module_instance`.
#[repr(C)]
pub struct riis_module_instance {
    pub callbacks: *const riis_module_callbacks,
    pub module: *mut c_void,
}

/// `riis_module_factory`.
#[repr(C)]
pub struct riis_module_factory {
    pub size: u32,
    pub user_data: *mut c_void,
    pub get_http_module: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            allocator: *mut riis_allocator,
            instance: *mut riis_module_instance,
        ) -> riis_hresult,
    >,
    pub terminate: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `riis_global_module`.
#[repr(C)]
pub struct riis_global_module {
    pub size: u32,
    pub user_data: *mut c_void,
    pub on_global_notification: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            notification: u32,
            provider: *mut riis_global_provider,
        ) -> riis_global_status,
    >,
    pub terminate: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `riis_data_chunk`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct riis_data_chunk {
    pub r#type: u32,
    pub buffer: *const c_void,
    pub buffer_length: u64,
    pub file_descriptor: c_int,
    pub file_name: *const c_char,
    pub offset: u64,
    pub length: u64,
}

/// `riis_execution_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct riis_execution_stats {
    pub size: u32,
    pub notification: u32,
    pub is_post: c_int,
    pub module: *const c_char,
}

/// `riis_register_module_fn`.
pub type riis_register_module_fn = unsafe extern "C" fn(
    server_version: u32,
    registration: *mut riis_registration,
    server: *const riis_server,
) -> riis_hresult;

type Ctx = *mut riis_context;
type Reg = *mut riis_registration;
type Prov = *mut riis_provider;
type GProv = *mut riis_global_provider;
type Str = *const c_char;

/// `riis_api`: every function of the server, in header order.
#[repr(C)]
pub struct riis_api {
    pub size: u32,

    pub set_request_notifications:
        unsafe extern "C" fn(Reg, *const riis_module_factory, u32, u32) -> riis_hresult,
    pub set_priority_for_request_notification: unsafe extern "C" fn(Reg, u32, Str) -> riis_hresult,
    pub set_priority_for_post_request_notification:
        unsafe extern "C" fn(Reg, u32, Str) -> riis_hresult,
    pub set_global_notifications:
        unsafe extern "C" fn(Reg, *const riis_global_module, u32) -> riis_hresult,
    pub set_priority_for_global_notification: unsafe extern "C" fn(Reg, u32, Str) -> riis_hresult,
    pub registration_name: unsafe extern "C" fn(Reg) -> Str,
    pub registration_id: unsafe extern "C" fn(Reg) -> u32,

    pub allocator_allocate: unsafe extern "C" fn(*mut riis_allocator, usize) -> *mut c_void,
    pub context_allocate: unsafe extern "C" fn(Ctx, usize) -> *mut c_void,

    pub context_site_name: unsafe extern "C" fn(Ctx) -> Str,
    pub context_site_id: unsafe extern "C" fn(Ctx) -> u32,
    pub context_request_id: unsafe extern "C" fn(Ctx) -> u64,
    pub context_physical_path: unsafe extern "C" fn(Ctx) -> Str,
    pub context_map_path: unsafe extern "C" fn(Ctx, Str) -> Str,
    pub context_handler_name: unsafe extern "C" fn(Ctx) -> Str,
    pub context_set_request_handled: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub context_is_last_notification: unsafe extern "C" fn(Ctx, riis_status) -> c_int,
    pub context_execution_stats:
        unsafe extern "C" fn(Ctx, *mut riis_execution_stats) -> riis_hresult,
    pub server_variable: unsafe extern "C" fn(Ctx, Str, *mut usize) -> Str,
    pub set_server_variable: unsafe extern "C" fn(Ctx, Str, Str) -> riis_hresult,
    pub module_context: unsafe extern "C" fn(Ctx, u32) -> *mut c_void,
    pub set_module_context: unsafe extern "C" fn(
        Ctx,
        u32,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> riis_hresult,
    pub raise_custom_notification: unsafe extern "C" fn(Ctx, Str, *mut c_void) -> riis_hresult,
    pub raise_global_custom_notification:
        unsafe extern "C" fn(Ctx, Str, *mut c_void) -> riis_hresult,
    pub context_clone: unsafe extern "C" fn(Ctx) -> Ctx,
    pub context_release_clone: unsafe extern "C" fn(Ctx, Ctx),
    pub context_execute_request: unsafe extern "C" fn(Ctx, Ctx, u32) -> riis_hresult,
    pub indicate_completion: unsafe extern "C" fn(Ctx, riis_status) -> riis_hresult,
    pub post_completion: unsafe extern "C" fn(Ctx, u64) -> riis_hresult,
    pub config_value: unsafe extern "C" fn(Ctx, u32, Str) -> Str,
    pub declare_section: unsafe extern "C" fn(Reg, Str, *mut u32) -> riis_hresult,
    pub log: unsafe extern "C" fn(Ctx, u32, Str),

    pub request_method: unsafe extern "C" fn(Ctx) -> Str,
    pub request_set_method: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,
    pub request_url: unsafe extern "C" fn(Ctx) -> Str,
    pub request_query: unsafe extern "C" fn(Ctx) -> Str,
    pub request_set_url: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,
    pub request_header: unsafe extern "C" fn(Ctx, Str, *mut usize) -> Str,
    pub request_set_header: unsafe extern "C" fn(Ctx, Str, Str, c_int) -> riis_hresult,
    pub request_delete_header: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,
    pub request_header_names: unsafe extern "C" fn(Ctx, *mut Str, usize) -> usize,
    pub request_http_version: unsafe extern "C" fn(Ctx, *mut u16, *mut u16),
    pub request_address: unsafe extern "C" fn(Ctx, c_int, *mut Str, *mut u16) -> riis_hresult,
    pub request_read_entity_body: unsafe extern "C" fn(Ctx, *mut c_void, usize) -> riis_hresult,
    pub request_insert_entity_body: unsafe extern "C" fn(Ctx, *const c_void, usize) -> riis_hresult,
    pub request_remaining_entity_bytes: unsafe extern "C" fn(Ctx) -> i64,

    pub response_status: unsafe extern "C" fn(Ctx, *mut u16, *mut u16),
    pub response_set_status: unsafe extern "C" fn(Ctx, u16, Str, u16, riis_hresult) -> riis_hresult,
    pub response_set_error_description: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,
    pub response_header: unsafe extern "C" fn(Ctx, Str, *mut usize) -> Str,
    pub response_set_header: unsafe extern "C" fn(Ctx, Str, Str, c_int) -> riis_hresult,
    pub response_delete_header: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,
    pub response_clear: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_clear_headers: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_write_entity_chunks:
        unsafe extern "C" fn(Ctx, *const riis_data_chunk, u32, *mut u64) -> riis_hresult,
    pub response_flush: unsafe extern "C" fn(Ctx, c_int, c_int) -> riis_hresult,
    pub response_disable_buffering: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_redirect: unsafe extern "C" fn(Ctx, Str, u16) -> riis_hresult,
    pub response_suppress_headers: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_set_need_disconnect: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_reset_connection: unsafe extern "C" fn(Ctx) -> riis_hresult,
    pub response_set_try_skip_custom_errors: unsafe extern "C" fn(Ctx, c_int) -> riis_hresult,
    pub response_headers_sent: unsafe extern "C" fn(Ctx) -> c_int,

    pub user_present: unsafe extern "C" fn(Ctx) -> c_int,
    pub user_name: unsafe extern "C" fn(Ctx) -> Str,
    pub user_authentication_type: unsafe extern "C" fn(Ctx) -> Str,
    pub user_is_in_role: unsafe extern "C" fn(Ctx, Str) -> c_int,
    pub set_user: unsafe extern "C" fn(Ctx, Str, Str, *const Str, usize) -> riis_hresult,

    pub provider_kind: unsafe extern "C" fn(Prov) -> u32,
    pub send_headers_being_sent: unsafe extern "C" fn(Prov) -> c_int,
    pub send_is_final: unsafe extern "C" fn(Prov) -> c_int,
    pub send_flags: unsafe extern "C" fn(Prov) -> u32,
    pub send_set_flags: unsafe extern "C" fn(Prov, u32) -> riis_hresult,
    pub read_entity: unsafe extern "C" fn(Prov, *mut *const c_void, *mut usize) -> riis_hresult,
    pub read_set_entity: unsafe extern "C" fn(Prov, *const c_void, usize) -> riis_hresult,
    pub map_path_url: unsafe extern "C" fn(Prov) -> Str,
    pub map_path_physical_path: unsafe extern "C" fn(Prov) -> Str,
    pub map_path_set_physical_path: unsafe extern "C" fn(Prov, Str) -> riis_hresult,
    pub custom_type: unsafe extern "C" fn(Prov) -> Str,
    pub custom_data: unsafe extern "C" fn(Prov) -> *mut c_void,

    pub global_context: unsafe extern "C" fn(GProv) -> Ctx,
    pub global_application:
        unsafe extern "C" fn(GProv, *mut Str, *mut u32, *mut Str) -> riis_hresult,
    pub global_file_path: unsafe extern "C" fn(GProv) -> Str,
    pub global_cache_operation:
        unsafe extern "C" fn(GProv, *mut u32, *mut Str, *mut u64) -> riis_hresult,
    pub global_trace_event: unsafe extern "C" fn(
        GProv,
        *mut Str,
        *mut u32,
        *mut c_int,
        *mut Str,
        *mut u32,
        *mut u64,
    ) -> riis_hresult,
    pub global_custom_type: unsafe extern "C" fn(GProv) -> Str,
    pub global_custom_data: unsafe extern "C" fn(GProv) -> *mut c_void,

    pub response_header_names: unsafe extern "C" fn(Ctx, *mut Str, usize) -> usize,
    pub response_entity_chunk_count: unsafe extern "C" fn(Ctx) -> u32,
    pub response_entity_chunk: unsafe extern "C" fn(Ctx, u32, *mut riis_data_chunk) -> riis_hresult,
    pub response_set_entity_chunks:
        unsafe extern "C" fn(Ctx, *const riis_data_chunk, u32) -> riis_hresult,

    // Since 1.1.
    pub global_rsca_query: unsafe extern "C" fn(GProv, *mut Str, *mut Str) -> riis_hresult,
    pub global_rsca_write: unsafe extern "C" fn(GProv, *const c_char, usize) -> riis_hresult,

    // Since 1.3.
    pub request_client_certificate:
        unsafe extern "C" fn(Ctx, *mut *const u8, *mut usize, *mut c_int) -> riis_hresult,

    // Since 1.4.
    pub send_defer_after: unsafe extern "C" fn(Prov, Ctx, u64, *mut c_int) -> riis_hresult,
    pub send_is_flush: unsafe extern "C" fn(Prov) -> c_int,

    // Since 1.5.
    pub context_virtual_directory: unsafe extern "C" fn(Ctx, *mut Str, *mut Str) -> riis_hresult,
    pub context_location_path: unsafe extern "C" fn(Ctx) -> Str,
    pub response_trailer: unsafe extern "C" fn(Ctx, Str, *mut usize) -> Str,
    pub response_set_trailer: unsafe extern "C" fn(Ctx, Str, Str, c_int) -> riis_hresult,
    pub response_delete_trailer: unsafe extern "C" fn(Ctx, Str) -> riis_hresult,

    // Since 1.6.
    pub context_enable_full_duplex: unsafe extern "C" fn(Ctx) -> riis_hresult,

    // Since 1.7.
    pub raise_custom_notification_with_flags:
        unsafe extern "C" fn(Ctx, Str, *mut c_void, u32) -> riis_hresult,
    pub raise_global_custom_notification_with_flags:
        unsafe extern "C" fn(Ctx, Str, *mut c_void, u32) -> riis_hresult,
    pub custom_flags: unsafe extern "C" fn(Prov) -> u32,
    pub global_custom_flags: unsafe extern "C" fn(GProv) -> u32,

    // Since 1.8.
    pub context_on_response_delivered:
        unsafe extern "C" fn(Ctx, Option<riis_delivered_fn>, *mut c_void) -> riis_hresult,

    // Since 1.9.
    pub global_application_module_context: unsafe extern "C" fn(GProv) -> *mut c_void,
    pub global_application_set_module_context: unsafe extern "C" fn(
        GProv,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> riis_hresult,
    pub set_user_with_role_check: unsafe extern "C" fn(
        Ctx,
        Str,
        Str,
        *const Str,
        usize,
        Option<riis_role_check_fn>,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> riis_hresult,
    pub user_role_check_data: unsafe extern "C" fn(Ctx, Option<riis_role_check_fn>) -> *mut c_void,

    // Since 1.10.
    pub connection_is_connected: unsafe extern "C" fn(Ctx) -> c_int,

    // Since 1.11.
    pub registration_log_source: unsafe extern "C" fn(Reg) -> u32,
    pub log_from_source: unsafe extern "C" fn(u32, u32, Str),

    // Since 1.12.
    pub declare_section_keys: unsafe extern "C" fn(Reg, u32, *const Str, usize) -> riis_hresult,
}

/// `riis_role_check_fn`: a module's IsInRole for a user it set.
pub type riis_role_check_fn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// `riis_delivered_fn`: told how a response's delivery ended (the
/// module's data, the entity bytes the connection took, whether all went).
pub type riis_delivered_fn = unsafe extern "C" fn(*mut c_void, u64, c_int);
