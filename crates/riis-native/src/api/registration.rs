//! Registration functions: valid during RegisterModule only.

use std::ffi::c_char;
use std::sync::Arc;

use riis_abi::{hr, riis_global_module, riis_hresult, riis_module_factory, riis_registration};
use riis_pipeline::{
    GlobalNotification, GlobalNotifications, Priority, RequestNotification, RequestNotifications,
};

use super::{no_unwind, text};
use crate::global::NativeGlobal;
use crate::module::NativeFactory;
use crate::registration::{resolve_registration, Recorded, RegistrationHandle};

/// Runs `body` with the registration behind `p`, recording why it failed.
///
/// # Safety
/// `p` must be NULL or the registration pointer RegisterModule received.
unsafe fn with_registration(
    function: &'static str,
    p: *mut riis_registration,
    body: impl FnOnce(&mut RegistrationHandle<'_, '_>) -> Result<(), (riis_hresult, String)>,
) -> riis_hresult {
    no_unwind(function, hr::E_FAIL, || {
        // SAFETY: forwarded from this function's contract.
        let Some(handle) = (unsafe { resolve_registration(p) }) else {
            tracing::warn!(
                function,
                "riis_api registration call outside RegisterModule"
            );
            return hr::E_INVALID_STATE;
        };
        match body(handle) {
            Ok(()) => hr::S_OK,
            Err((code, why)) => {
                tracing::error!(module = %handle.shared.name, function, "{why}");
                *handle.failure.borrow_mut() = Some(format!("{function}: {why}"));
                code
            }
        }
    })
}

fn request_notification(bit: u32) -> Result<RequestNotification, (riis_hresult, String)> {
    RequestNotification::from_bit(bit).ok_or_else(|| {
        (
            hr::E_INVALIDARG,
            format!("0x{bit:08X} is not one RQ_* notification"),
        )
    })
}

/// # Safety
/// `priority` must be NULL or a NUL-terminated string.
unsafe fn priority(priority: *const c_char) -> Result<Priority, (riis_hresult, String)> {
    // SAFETY: forwarded from this function's contract.
    let alias = unsafe { text(priority) }
        .map_err(|e| (e, "the priority is NULL or not UTF-8".to_owned()))?;
    Priority::from_alias(alias).ok_or_else(|| {
        (
            hr::E_INVALIDARG,
            format!("unknown priority `{alias}` (FIRST, HIGH, MEDIUM, LOW, LAST)"),
        )
    })
}

pub(super) unsafe extern "C" fn set_request_notifications(
    p: *mut riis_registration,
    factory: *const riis_module_factory,
    notifications: u32,
    post_notifications: u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by with_registration; the factory is
    // read within its declared size.
    unsafe {
        with_registration("set_request_notifications", p, |handle| {
            if notifications & !RequestNotifications::ALL.bits() != 0 {
                return Err((
                    hr::E_INVALIDARG,
                    format!("unknown notification bits 0x{notifications:08X}"),
                ));
            }
            let factory = NativeFactory::from_raw(Arc::clone(&handle.shared), factory)
                .map_err(|why| (hr::E_INVALIDARG, why.to_owned()))?;
            // `factory` itself (no hold) is what the registration keeps.
            let held = factory.copy_for(Arc::clone(&handle.shared), handle.hold.clone());
            let notifications = RequestNotifications::from_bits_truncate(notifications);
            let post = RequestNotifications::from_bits_truncate(post_notifications);
            handle
                .registration
                .set_request_notifications_boxed(Box::new(held), notifications, post)
                .map_err(|e| (e.hresult as i32, e.message))?;
            handle.registered_part();
            handle.record(Recorded::Request {
                factory,
                notifications,
                post,
            });
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn set_priority_for_request_notification(
    p: *mut riis_registration,
    notification: u32,
    alias: *const c_char,
) -> riis_hresult {
    // SAFETY: the handle is checked by with_registration; `alias` is a C
    // string per the ABI.
    unsafe {
        with_registration("set_priority_for_request_notification", p, |handle| {
            let n = request_notification(notification)?;
            let priority = priority(alias)?;
            handle
                .registration
                .set_priority_for_request_notification(n, priority);
            handle.record(Recorded::RequestPriority(n, priority));
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn set_priority_for_post_request_notification(
    p: *mut riis_registration,
    notification: u32,
    alias: *const c_char,
) -> riis_hresult {
    // SAFETY: as for set_priority_for_request_notification.
    unsafe {
        with_registration("set_priority_for_post_request_notification", p, |handle| {
            let n = request_notification(notification)?;
            let priority = priority(alias)?;
            handle
                .registration
                .set_priority_for_post_request_notification(n, priority)
                .map_err(|e| (e.hresult as i32, e.message))?;
            handle.record(Recorded::PostRequestPriority(n, priority));
            Ok(())
        })
    }
}

fn global_notification(bit: u32) -> Result<GlobalNotification, (riis_hresult, String)> {
    GlobalNotification::ALL
        .into_iter()
        .find(|n| n.bit() == bit)
        .ok_or_else(|| {
            (
                hr::E_INVALIDARG,
                format!("0x{bit:08X} is not one GL_* notification"),
            )
        })
}

pub(super) unsafe extern "C" fn set_global_notifications(
    p: *mut riis_registration,
    module: *const riis_global_module,
    notifications: u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by with_registration; the module is read
    // within its declared size.
    unsafe {
        with_registration("set_global_notifications", p, |handle| {
            let known = GlobalNotification::ALL.iter().fold(0, |m, n| m | n.bit());
            if notifications & !known != 0 {
                return Err((
                    hr::E_INVALIDARG,
                    format!("unknown global notification bits 0x{notifications:08X}"),
                ));
            }
            let global = NativeGlobal::from_raw(Arc::clone(&handle.shared), module)
                .map_err(|why| (hr::E_INVALIDARG, why.to_owned()))?;
            let held = global.copy_for(Arc::clone(&handle.shared), handle.hold.clone());
            let notifications = GlobalNotifications::from_bits_truncate(notifications);
            handle
                .registration
                .set_global_notifications_arc(Arc::new(held), notifications)
                .map_err(|e| (e.hresult as i32, e.message))?;
            handle.registered_part();
            handle.record(Recorded::Global {
                module: global,
                notifications,
            });
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn set_priority_for_global_notification(
    p: *mut riis_registration,
    notification: u32,
    alias: *const c_char,
) -> riis_hresult {
    // SAFETY: as for set_priority_for_request_notification.
    unsafe {
        with_registration("set_priority_for_global_notification", p, |handle| {
            let n = global_notification(notification)?;
            let priority = priority(alias)?;
            handle
                .registration
                .set_priority_for_global_notification(n, priority);
            handle.record(Recorded::GlobalPriority(n, priority));
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn registration_name(p: *mut riis_registration) -> *const c_char {
    no_unwind("registration_name", std::ptr::null(), || {
        // SAFETY: checked against the running registration.
        match unsafe { resolve_registration(p) } {
            // The name lives in the module's shared state, for the life of
            // the pipeline.
            Some(handle) => handle.shared.name_c.as_ptr(),
            None => std::ptr::null(),
        }
    })
}

pub(super) unsafe extern "C" fn registration_log_source(p: *mut riis_registration) -> u32 {
    no_unwind("registration_log_source", 0, || {
        // SAFETY: checked against the running registration.
        match unsafe { resolve_registration(p) } {
            Some(handle) => super::context::log_source_of(&handle.shared.name),
            None => 0,
        }
    })
}

pub(super) unsafe extern "C" fn registration_id(p: *mut riis_registration) -> u32 {
    no_unwind("registration_id", u32::MAX, || {
        // SAFETY: checked against the running registration.
        match unsafe { resolve_registration(p) } {
            Some(handle) => handle.shared.index.get() as u32,
            None => u32::MAX,
        }
    })
}

/// The most keys one `declare_section_keys` names.
const MAX_SECTION_KEYS: usize = 4096;

pub(super) unsafe extern "C" fn declare_section_keys(
    p: *mut riis_registration,
    section: u32,
    keys: *const *const c_char,
    count: usize,
) -> riis_hresult {
    // SAFETY: the handle is checked by with_registration; `keys` holds
    // `count` C strings per the ABI.
    unsafe {
        with_registration("declare_section_keys", p, |handle| {
            if keys.is_null() && count > 0 {
                return Err((hr::E_INVALIDARG, "`keys` is NULL".to_owned()));
            }
            if count > MAX_SECTION_KEYS {
                return Err((
                    hr::E_INVALIDARG,
                    format!("{count} keys: a section names at most {MAX_SECTION_KEYS}"),
                ));
            }
            let mut names = Vec::new();
            for i in 0..count {
                let key = text(*keys.add(i))
                    .map_err(|e| (e, format!("key {i} of the list is NULL or not UTF-8")))?;
                names.push(key);
            }
            let declared = handle.sections.borrow().get(section as usize).copied();
            let Some(declared) = declared else {
                return Err((
                    hr::E_INVALIDARG,
                    format!("section {section} was not declared by this module"),
                ));
            };
            handle
                .registration
                .limit_section_keys(declared, &names)
                .map_err(|e| (e.hresult as i32, e.message))?;
            // Replayed when a reload registers the module again.
            handle.record(Recorded::SectionKeys(
                section,
                names.iter().map(|k| (*k).to_owned()).collect(),
            ));
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn declare_section(
    p: *mut riis_registration,
    name: *const c_char,
    section: *mut u32,
) -> riis_hresult {
    // SAFETY: the handle is checked by with_registration; `name` is a C
    // string and `section` writable per the ABI.
    unsafe {
        with_registration("declare_section", p, |handle| {
            let name =
                text(name).map_err(|e| (e, "the section name is NULL or not UTF-8".to_owned()))?;
            if section.is_null() {
                return Err((hr::E_INVALIDARG, "`section` is NULL".to_owned()));
            }
            let declared = handle
                .registration
                .declare_section::<toml::Table>(name)
                .map_err(|e| (e.hresult as i32, e.message))?;
            let mut sections = handle.sections.borrow_mut();
            *section = sections.len() as u32;
            sections.push(declared);
            drop(sections);
            handle.record(Recorded::Section(name.to_owned()));
            Ok(())
        })
    }
}
