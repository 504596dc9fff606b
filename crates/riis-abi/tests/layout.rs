//! The Rust declarations match `include/riis_module.h`: the test compiles a
//! C program that prints the header's sizes and offsets, and compares them
//! with the Rust layout field by field.

use std::path::Path;
use std::process::Command;

use riis_abi::*;

/// `(name, size or offset)` for every checked item, in Rust.
macro_rules! layout {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {{
        let mut v: Vec<(String, usize)> = Vec::new();
        $(
            v.push((format!("sizeof({})", stringify!($ty)), std::mem::size_of::<$ty>()));
            $(v.push((
                format!("offsetof({}, {})", stringify!($ty), stringify!($field)),
                std::mem::offset_of!($ty, $field),
            ));)*
        )*
        v
    }};
}

fn rust_layout() -> Vec<(String, usize)> {
    layout! {
        riis_server { size, abi_version, software, api }
        riis_completion_info { size, status, bytes, operation }
        riis_module_callbacks { size, on_notification, on_async_completion, dispose }
        riis_module_instance { callbacks, module }
        riis_module_factory { size, user_data, get_http_module, terminate }
        riis_global_module { size, user_data, on_global_notification, terminate }
        riis_data_chunk { r#type, buffer, buffer_length, file_descriptor, file_name, offset, length }
        riis_execution_stats { size, notification, is_post, module }
        riis_api {
        size,
        set_request_notifications,
        set_priority_for_request_notification,
        set_priority_for_post_request_notification,
        set_global_notifications,
        set_priority_for_global_notification,
        registration_name,
        registration_id,
        allocator_allocate,
        context_allocate,
        context_site_name,
        context_site_id,
        context_request_id,
        context_physical_path,
        context_map_path,
        context_handler_name,
        context_set_request_handled,
        context_is_last_notification,
        context_execution_stats,
        server_variable,
        set_server_variable,
        module_context,
        set_module_context,
        raise_custom_notification,
        raise_global_custom_notification,
        context_clone,
        context_release_clone,
        context_execute_request,
        indicate_completion,
        post_completion,
        config_value,
        declare_section,
        log,
        request_method,
        request_set_method,
        request_url,
        request_query,
        request_set_url,
        request_header,
        request_set_header,
        request_delete_header,
        request_header_names,
        request_http_version,
        request_address,
        request_read_entity_body,
        request_insert_entity_body,
        request_remaining_entity_bytes,
        response_status,
        response_set_status,
        response_set_error_description,
        response_header,
        response_set_header,
        response_delete_header,
        response_clear,
        response_clear_headers,
        response_write_entity_chunks,
        response_flush,
        response_disable_buffering,
        response_redirect,
        response_suppress_headers,
        response_set_need_disconnect,
        response_reset_connection,
        response_set_try_skip_custom_errors,
        response_headers_sent,
        user_present,
        user_name,
        user_authentication_type,
        user_is_in_role,
        set_user,
        provider_kind,
        send_headers_being_sent,
        send_is_final,
        send_flags,
        send_set_flags,
        read_entity,
        read_set_entity,
        map_path_url,
        map_path_physical_path,
        map_path_set_physical_path,
        custom_type,
        custom_data,
        global_context,
        global_application,
        global_file_path,
        global_cache_operation,
        global_trace_event,
        global_custom_type,
        global_custom_data,
        response_header_names,
        response_entity_chunk_count,
        response_entity_chunk,
        response_set_entity_chunks,
        global_rsca_query,
        global_rsca_write,
        request_client_certificate,
        send_defer_after,
        send_is_flush,
        context_virtual_directory,
        context_location_path,
        response_trailer,
        response_set_trailer,
        response_delete_trailer,
        context_enable_full_duplex,
        raise_custom_notification_with_flags,
        raise_global_custom_notification_with_flags,
        custom_flags,
        global_custom_flags,
        context_on_response_delivered,
        global_application_module_context,
        global_application_set_module_context,
        set_user_with_role_check,
        user_role_check_data,
        connection_is_connected,
        registration_log_source,
        log_from_source,
        declare_section_keys
        }
    }
}

/// The result codes and other constants, by their C names without
/// `RIIS_`.
const HRESULTS: &[(&str, i64)] = &[
    ("S_OK", hr::S_OK as i64),
    ("S_FALSE", hr::S_FALSE as i64),
    ("E_FAIL", hr::E_FAIL as i64),
    ("E_OUTOFMEMORY", hr::E_OUTOFMEMORY as i64),
    ("E_INVALIDARG", hr::E_INVALIDARG as i64),
    ("E_NOTIMPL", hr::E_NOTIMPL as i64),
    ("E_NOT_SUPPORTED", hr::E_NOT_SUPPORTED as i64),
    ("E_NOT_FOUND", hr::E_NOT_FOUND as i64),
    ("E_INVALID_STATE", hr::E_INVALID_STATE as i64),
    ("E_BUSY", hr::E_BUSY as i64),
    ("E_HANDLE_EOF", hr::E_HANDLE_EOF as i64),
    ("E_WRONG_THREAD", hr::E_WRONG_THREAD as i64),
    ("E_REVISION_MISMATCH", hr::E_REVISION_MISMATCH as i64),
    ("E_ALREADY_ASSIGNED", hr::E_ALREADY_ASSIGNED as i64),
    ("OPERATION_POSTED", OPERATION_POSTED as i64),
    ("OPERATION_READ", OPERATION_READ as i64),
    ("OPERATION_WRITE", OPERATION_WRITE as i64),
    (
        "OPERATION_EXECUTE_REQUEST",
        OPERATION_EXECUTE_REQUEST as i64,
    ),
    ("CUSTOM_CXX_ENVELOPE", CUSTOM_CXX_ENVELOPE as i64),
    ("CUSTOM_UNDECLARED", CUSTOM_UNDECLARED as i64),
];

#[test]
fn the_rust_mirror_matches_the_c_header() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include");
    let dir = std::env::temp_dir().join(format!("riis-abi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let expected = rust_layout();
    let mut program =
        String::from("#include <stdio.h>\n#include \"riis_module.h\"\nint main(void) {\n");
    for (name, _) in &expected {
        let c_name = name.replace("r#type", "type");
        program.push_str(&format!("    printf(\"%zu\\n\", (size_t){c_name});\n"));
    }
    program.push_str("    printf(\"%u\\n\", (unsigned)RIIS_ABI_VERSION);\n");
    for (name, _) in HRESULTS {
        program.push_str(&format!(
            "    printf(\"%lld\\n\", (long long)RIIS_{name});\n"
        ));
    }
    program.push_str("    return 0;\n}\n");
    let source = dir.join("layout.c");
    std::fs::write(&source, program).unwrap();
    let binary = dir.join("layout");
    let status = Command::new("cc")
        .arg("-std=c99")
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: no C compiler ({e})");
            return;
        }
        Err(e) => panic!("cc is required in CI: {e}"),
    };
    assert!(status.success(), "the layout program did not compile");
    let out = Command::new(&binary).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (sizes, codes) = lines.split_at(lines.len() - HRESULTS.len());
    for ((name, rust), c) in HRESULTS.iter().zip(codes) {
        assert_eq!(c.parse::<i64>().unwrap(), *rust, "RIIS_{name}");
    }
    let values: Vec<usize> = sizes.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), expected.len() + 1);
    for ((name, rust), c) in expected.iter().zip(&values) {
        assert_eq!(rust, c, "{name}: Rust {rust}, C {c}");
    }
    assert_eq!(
        values[expected.len()],
        ABI_VERSION as usize,
        "RIIS_ABI_VERSION"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn constants_match_the_iis_values() {
    assert_eq!(STATUS_CONTINUE, 0);
    assert_eq!(STATUS_PENDING, 1);
    assert_eq!(STATUS_FINISH_REQUEST, 2);
    assert_eq!(hr::E_FAIL as u32, 0x8000_4005);
    // The HRESULT_FROM_WIN32 codes, from their Win32 error numbers.
    let from_win32 = |code: u32| (0x8007_0000 | code) as i32;
    assert_eq!(hr::E_OUTOFMEMORY, from_win32(14)); // ERROR_OUTOFMEMORY
    assert_eq!(hr::E_INVALIDARG, from_win32(87)); // ERROR_INVALID_PARAMETER
    assert_eq!(hr::E_NOT_SUPPORTED, from_win32(50)); // ERROR_NOT_SUPPORTED
    assert_eq!(hr::E_ALREADY_ASSIGNED, from_win32(85)); // ERROR_ALREADY_ASSIGNED
    assert_eq!(hr::E_NOT_FOUND, from_win32(1168)); // ERROR_NOT_FOUND
    assert_eq!(hr::E_REVISION_MISMATCH, from_win32(1306)); // ERROR_REVISION_MISMATCH
    assert_eq!(hr::E_WRONG_THREAD, from_win32(1444)); // ERROR_INVALID_THREAD_ID
    assert_eq!(hr::E_INVALID_STATE, from_win32(5023)); // ERROR_INVALID_STATE
    assert_eq!(hr::E_BUSY, from_win32(170)); // ERROR_BUSY
    assert_eq!(hr::E_HANDLE_EOF, from_win32(38)); // ERROR_HANDLE_EOF
    assert_eq!(ABI_VERSION, 0x0001_000C);
    // EXECUTE_FLAG_* as IIS defines them.
    assert_eq!(EXECUTE_FLAG_DISABLE_CUSTOM_ERROR, 0x08);
    assert_eq!(EXECUTE_FLAG_SAME_URL, 0x10);
    assert_eq!(EXECUTE_FLAG_BUFFER_RESPONSE, 0x20);
    assert_eq!(EXECUTE_FLAG_NO_HEADERS, 0x01);
}
