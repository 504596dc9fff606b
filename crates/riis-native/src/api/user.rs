//! User functions.

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use std::sync::Arc;

use riis_abi::{hr, riis_context, riis_hresult, riis_role_check_fn};
use riis_pipeline::{HttpUser, RoleCheck};

use super::{context_hr, text, with_context};

pub(super) unsafe extern "C" fn present(ctx: *mut riis_context) -> c_int {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("user_present", ctx, 0, |_, ctx| {
            Ok(c_int::from(ctx.user().is_some()))
        })
    }
}

pub(super) unsafe extern "C" fn name(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("user_name", ctx, ptr::null(), |frame, ctx| {
            Ok(ctx
                .user()
                .map_or(ptr::null(), |u| frame.arena.string(u.name())))
        })
    }
}

pub(super) unsafe extern "C" fn authentication_type(ctx: *mut riis_context) -> *const c_char {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context(
            "user_authentication_type",
            ctx,
            ptr::null(),
            |frame, ctx| {
                Ok(ctx
                    .user()
                    .map_or(ptr::null(), |u| frame.arena.string(u.authentication_type())))
            },
        )
    }
}

pub(super) unsafe extern "C" fn is_in_role(ctx: *mut riis_context, role: *const c_char) -> c_int {
    // SAFETY: the handle is checked by with_context; `role` is a C string.
    unsafe {
        with_context("user_is_in_role", ctx, 0, |_, ctx| {
            let role = text(role)?;
            Ok(c_int::from(ctx.user().is_some_and(|u| u.is_in_role(role))))
        })
    }
}

pub(super) unsafe extern "C" fn set_user(
    ctx: *mut riis_context,
    name: *const c_char,
    authentication_type: *const c_char,
    roles: *const *const c_char,
    role_count: usize,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the strings are C strings
    // and `roles` holds `role_count` of them.
    unsafe {
        context_hr("set_user", ctx, |_, ctx| {
            ctx.set_user(user_of(name, authentication_type, roles, role_count)?);
            Ok(())
        })
    }
}

/// The user a module describes: name, authentication type and roles.
///
/// # Safety
/// The strings are NULL or C strings; `roles` holds `role_count` of them.
unsafe fn user_of(
    name: *const c_char,
    authentication_type: *const c_char,
    roles: *const *const c_char,
    role_count: usize,
) -> Result<HttpUser, riis_hresult> {
    // SAFETY: forwarded from this function's contract.
    let (name, kind) = unsafe { (text(name)?, text(authentication_type)?) };
    // Names reach logs (cs-username), CGI variables and headers a gateway
    // sets: control characters (CR, LF, NUL) are refused.
    let plain = |t: &str| !t.chars().any(char::is_control);
    if !plain(name) || !plain(kind) {
        return Err(hr::E_INVALIDARG);
    }
    if roles.is_null() && role_count > 0 {
        return Err(hr::E_INVALIDARG);
    }
    let mut list = Vec::new();
    list.try_reserve_exact(role_count)
        .map_err(|_| hr::E_OUTOFMEMORY)?;
    for i in 0..role_count {
        // SAFETY: `roles` holds `role_count` C strings.
        let role = unsafe { text(*roles.add(i))? };
        if !plain(role) {
            return Err(hr::E_INVALIDARG);
        }
        list.push(role.to_owned());
    }
    Ok(HttpUser::new(name, kind).with_roles(list))
}

/// A native module's IsInRole, and the release of its user object once
/// nothing holds the user.
struct NativeRoleCheck {
    is_in_role: riis_role_check_fn,
    data: *mut c_void,
    release: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: the ABI requires the module's role check and release to be
// callable from any thread (riis_module.h, set_user_with_role_check); the
// server only passes `data` back to them.
unsafe impl Send for NativeRoleCheck {}
// SAFETY: as above.
unsafe impl Sync for NativeRoleCheck {}

impl RoleCheck for NativeRoleCheck {
    fn is_in_role(&self, role: &str) -> bool {
        // A role with a NUL cannot be passed as a C string: no module role.
        let Ok(role) = CString::new(role) else {
            return false;
        };
        // SAFETY: the module's own function with its own data, which it
        // keeps valid until `release`.
        unsafe { (self.is_in_role)(self.data, role.as_ptr()) != 0 }
    }
}

impl Drop for NativeRoleCheck {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the module's release for its own data, once.
            unsafe { release(self.data) }
        }
    }
}

#[allow(clippy::too_many_arguments)] // the C signature
pub(super) unsafe extern "C" fn set_user_with_role_check(
    ctx: *mut riis_context,
    name: *const c_char,
    authentication_type: *const c_char,
    roles: *const *const c_char,
    role_count: usize,
    is_in_role: Option<riis_role_check_fn>,
    data: *mut c_void,
    release: Option<unsafe extern "C" fn(*mut c_void)>,
) -> riis_hresult {
    // SAFETY: the handle is checked by context_hr; the strings are C strings
    // and `roles` holds `role_count` of them.
    unsafe {
        context_hr("set_user_with_role_check", ctx, |_, ctx| {
            let is_in_role = is_in_role.ok_or(hr::E_INVALIDARG)?;
            let user = user_of(name, authentication_type, roles, role_count)?;
            // Made last: from here on `release` runs when it drops.
            let check = NativeRoleCheck {
                is_in_role,
                data,
                release,
            };
            ctx.set_user(user.with_role_check(Arc::new(check)));
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn role_check_data(
    ctx: *mut riis_context,
    is_in_role: Option<riis_role_check_fn>,
) -> *mut c_void {
    // SAFETY: the handle is checked by with_context.
    unsafe {
        with_context("user_role_check_data", ctx, ptr::null_mut(), |_, ctx| {
            let Some(wanted) = is_in_role else {
                return Ok(ptr::null_mut());
            };
            let check = ctx.user().and_then(|u| u.role_check());
            Ok(check
                .and_then(|c| {
                    let any: &dyn std::any::Any = &**c;
                    any.downcast_ref::<NativeRoleCheck>()
                })
                .filter(|c| std::ptr::fn_addr_eq(c.is_in_role, wanted))
                .map_or(ptr::null_mut(), |c| c.data))
        })
    }
}
