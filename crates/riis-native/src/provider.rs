//! What a `riis_provider*` points at: the event provider of one call.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;

use riis_pipeline::{
    CustomNotificationProvider, MapPathProvider, ReadEntityProvider, SendResponseProvider,
};

use crate::frame::{is_running, Frame};

/// The provider of the notification being delivered.
pub(crate) enum Provider<'a> {
    /// A deterministic notification: no provider (NULL to the module).
    Event,
    /// AuthenticateRequest: the module may set the user.
    Authentication,
    SendResponse(&'a mut SendResponseProvider),
    ReadEntity(&'a mut ReadEntityProvider),
    MapPath(&'a mut MapPathProvider),
    Custom(&'a mut dyn CustomNotificationProvider),
}

/// The object behind a `riis_provider*`, valid for one call.
pub(crate) struct ProviderHandle<'a> {
    pub(crate) frame: *const Frame,
    pub(crate) provider: Provider<'a>,
}

impl<'a> ProviderHandle<'a> {
    pub(crate) fn new(frame: &Frame, provider: Provider<'a>) -> Self {
        Self { frame, provider }
    }

    /// Whether there is nothing to hand over (a deterministic event).
    pub(crate) fn is_event(&self) -> bool {
        matches!(self.provider, Provider::Event)
    }

    /// Whether the call is a nondeterministic notification raised inside
    /// another call (SendResponse, ReadEntity, MapPath, a custom one), as
    /// opposed to a step of the pipeline (AuthenticateRequest, with its
    /// provider, included).
    pub(crate) fn is_nested(&self) -> bool {
        matches!(
            self.provider,
            Provider::SendResponse(_)
                | Provider::ReadEntity(_)
                | Provider::MapPath(_)
                | Provider::Custom(_)
        )
    }

    pub(crate) fn as_raw(&mut self) -> *mut riis_abi::riis_provider {
        (self as *mut Self).cast()
    }
}

thread_local! {
    /// The provider of the module call running on this thread.
    static RUNNING_PROVIDER: Cell<*const ()> = const { Cell::new(ptr::null()) };
}

/// Marks `p` as the provider of the call running on this thread until
/// dropped; restores the previous one (nested notifications pass their own).
pub(crate) struct ProviderGuard {
    previous: *const (),
}

impl ProviderGuard {
    pub(crate) fn enter(p: *mut riis_abi::riis_provider) -> Self {
        let previous = RUNNING_PROVIDER.with(|r| r.replace(p.cast_const().cast()));
        Self { previous }
    }
}

impl Drop for ProviderGuard {
    fn drop(&mut self) {
        RUNNING_PROVIDER.with(|r| r.set(self.previous));
    }
}

/// Resolves a provider pointer during its call.
///
/// # Safety
/// `p` must be NULL or a provider pointer the server passed to a callback.
pub(crate) unsafe fn resolve_provider<'a>(
    p: *mut riis_abi::riis_provider,
) -> Option<(&'a Frame, &'a mut Provider<'a>)> {
    if p.is_null() || RUNNING_PROVIDER.with(|r| r.get()) != p.cast_const().cast() {
        return None;
    }
    // SAFETY: `p` is the provider of the call running on this thread
    // (checked above): a ProviderHandle alive on that call's stack.
    let handle = unsafe { &mut *p.cast::<ProviderHandle<'a>>() };
    if !is_running(handle.frame) {
        return None;
    }
    // SAFETY: the frame is running, hence alive.
    let frame = unsafe { &*handle.frame };
    Some((frame, &mut handle.provider))
}

/// The payload of a custom notification a native module raised: its type
/// name and data pointer. Rust modules receive it like any custom
/// notification and may downcast to read the pointer.
pub struct NativeNotification {
    type_name: String,
    data: *mut c_void,
    flags: u32,
}

// SAFETY: the pointer is the raising module's; the server never dereferences
// it and hands it only to modules called on the raising thread, during the
// raise.
unsafe impl Send for NativeNotification {}

impl NativeNotification {
    pub(crate) fn new(type_name: String, data: *mut c_void, flags: u32) -> Self {
        Self {
            type_name,
            data,
            flags,
        }
    }

    /// The data pointer the raising module passed.
    pub fn data(&self) -> *mut c_void {
        self.data
    }

    /// What the raiser said the data is (`RIIS_CUSTOM_*`; 0 when it did
    /// not say).
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

impl CustomNotificationProvider for NativeNotification {
    fn notification_type(&self) -> &str {
        &self.type_name
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
