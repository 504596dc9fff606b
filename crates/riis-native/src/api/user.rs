//! User functions.

use std::ffi::{c_char, c_int};
use std::ptr;

use riis_abi::{hr, riis_context, riis_hresult};
use riis_pipeline::HttpUser;

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
            let name = text(name)?;
            let kind = text(authentication_type)?;
            // Names reach logs (cs-username), CGI variables and headers a
            // gateway sets: control characters (CR, LF, NUL) are refused.
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
                let role = text(*roles.add(i))?;
                if !plain(role) {
                    return Err(hr::E_INVALIDARG);
                }
                list.push(role.to_owned());
            }
            ctx.set_user(HttpUser::new(name, kind).with_roles(list));
            Ok(())
        })
    }
}
