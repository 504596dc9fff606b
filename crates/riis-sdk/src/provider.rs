//! Event providers: what the nondeterministic notifications hand a module
//! besides the context (`riis_provider`).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::path::Path;

use riis_abi::{self as abi, riis_api, riis_provider};

use crate::context::HttpContext;
use crate::error::ModuleError;
use crate::ffi;

/// Flags of one send (`RIIS_SEND_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendFlags {
    /// More response data follows this send.
    pub more_data: bool,
    /// The connection closes after this send.
    pub disconnect: bool,
}

impl SendFlags {
    /// The flags of a raw mask.
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            more_data: bits & abi::SEND_FLAG_MORE_DATA != 0,
            disconnect: bits & abi::SEND_FLAG_DISCONNECT != 0,
        }
    }

    /// The raw mask.
    pub const fn bits(self) -> u32 {
        let mut bits = 0;
        if self.more_data {
            bits |= abi::SEND_FLAG_MORE_DATA;
        }
        if self.disconnect {
            bits |= abi::SEND_FLAG_DISCONNECT;
        }
        bits
    }
}

/// A provider handle, valid for the call that received it. The proxies
/// holding one are built by the SDK for that call and handed to the module
/// by reference only.
#[derive(Clone, Copy)]
struct RawProvider {
    ptr: *mut riis_provider,
    api: &'static riis_api,
}

/// The provider of a SendResponse notification (`ISendResponseProvider`).
pub struct SendResponseProvider {
    raw: RawProvider,
}

impl SendResponseProvider {
    pub(crate) fn new(ptr: *mut riis_provider, api: &'static riis_api) -> Self {
        Self {
            raw: RawProvider { ptr, api },
        }
    }

    /// `GetHeadersBeingSent`: the status line and headers go out with this
    /// send, so they may still change.
    pub fn headers_being_sent(&self) -> bool {
        // SAFETY: the provider is valid during the current call (see
        // `RawProvider`) and of the SendResponse kind.
        unsafe { (self.raw.api.send_headers_being_sent)(self.raw.ptr) != 0 }
    }

    /// Whether this is the final send of the request.
    pub fn is_final_send(&self) -> bool {
        // SAFETY: as in `headers_being_sent`.
        unsafe { (self.raw.api.send_is_final)(self.raw.ptr) != 0 }
    }

    /// Keeps the first `at` bytes of this send's entity and defers the
    /// rest, handed to this module again in a later send once the client
    /// has taken this one, so that a module transforming the body
    /// (compressing, rewriting) never makes a large body's output at once.
    /// Call it before reading the entity. Returns whether a rest was
    /// deferred ([`Self::is_final_send`] is then false): nothing is when
    /// the entity holds at most `at` bytes, nor in a flush. riis's addition
    /// to `ISendResponseProvider` (ABI 1.4).
    pub fn defer_after(&mut self, ctx: &mut HttpContext, at: u64) -> Result<bool, ModuleError> {
        let mut deferred: std::ffi::c_int = 0;
        // SAFETY: as in `headers_being_sent`; `ctx` is the context of the
        // same call, and `deferred` a writable int.
        let code = unsafe {
            (self.raw.api.send_defer_after)(self.raw.ptr, ctx.raw_context(), at, &mut deferred)
        };
        ModuleError::check(code, "send_defer_after")?;
        Ok(deferred != 0)
    }

    /// Whether this send is a module's flush (where an encoder flushes its
    /// output), rather than the final send or a send of deferred rests
    /// (ABI 1.4).
    pub fn is_flush(&self) -> bool {
        // SAFETY: as in `headers_being_sent`.
        unsafe { (self.raw.api.send_is_flush)(self.raw.ptr) != 0 }
    }

    /// `GetFlags`.
    pub fn flags(&self) -> SendFlags {
        // SAFETY: as in `headers_being_sent`.
        SendFlags::from_bits(unsafe { (self.raw.api.send_flags)(self.raw.ptr) })
    }

    /// `SetFlags`: for example ask for the connection to close after this
    /// send.
    pub fn set_flags(&mut self, flags: SendFlags) -> Result<(), ModuleError> {
        // SAFETY: as in `headers_being_sent`.
        let code = unsafe { (self.raw.api.send_set_flags)(self.raw.ptr, flags.bits()) };
        ModuleError::check(code, "send_set_flags")
    }
}

/// The provider of a ReadEntity notification (`IReadEntityProvider`): the
/// bytes just read from the request body, replaceable.
pub struct ReadEntityProvider {
    raw: RawProvider,
}

impl ReadEntityProvider {
    pub(crate) fn new(ptr: *mut riis_provider, api: &'static riis_api) -> Self {
        Self {
            raw: RawProvider { ptr, api },
        }
    }

    /// `GetEntity`: the bytes read (empty when the server reports none).
    pub fn entity(&self) -> &[u8] {
        let mut data: *const c_void = std::ptr::null();
        let mut length = 0usize;
        // SAFETY: the provider is valid during the current call and of the
        // ReadEntity kind; the out-pointers are valid locals.
        let code = unsafe { (self.raw.api.read_entity)(self.raw.ptr, &mut data, &mut length) };
        if code < 0 || data.is_null() || length == 0 {
            return &[];
        }
        // SAFETY: the server reports `length` readable bytes at `data`, valid
        // during the call; `set_entity` (which may replace them) takes
        // `&mut self`, so this borrow ends first.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) }
    }

    /// `SetEntity`: replace the bytes the reader will receive (copied).
    pub fn set_entity(&mut self, entity: &[u8]) -> Result<(), ModuleError> {
        // SAFETY: the provider is valid during the call; the bytes are valid
        // for the call, which copies them.
        let code = unsafe {
            (self.raw.api.read_set_entity)(self.raw.ptr, entity.as_ptr().cast(), entity.len())
        };
        ModuleError::check(code, "read_set_entity")
    }
}

/// The provider of a MapPath notification (`IMapPathProvider`): a URL and
/// the physical path the server mapped it to, replaceable.
pub struct MapPathProvider {
    raw: RawProvider,
}

impl MapPathProvider {
    pub(crate) fn new(ptr: *mut riis_provider, api: &'static riis_api) -> Self {
        Self {
            raw: RawProvider { ptr, api },
        }
    }

    /// `GetUrl`: the URL being mapped.
    pub fn url(&self) -> &str {
        // SAFETY: the provider is valid during the call and of the MapPath
        // kind.
        let ptr = unsafe { (self.raw.api.map_path_url)(self.raw.ptr) };
        // SAFETY: NULL or a server string valid during the call, which
        // outlives `&self`.
        unsafe { ffi::str_from(ptr) }.unwrap_or("")
    }

    /// `GetPhysicalPath`.
    pub fn physical_path(&self) -> &Path {
        // SAFETY: as in `url`.
        let ptr = unsafe { (self.raw.api.map_path_physical_path)(self.raw.ptr) };
        // SAFETY: as in `url`; `set_physical_path` takes `&mut self`, so
        // this borrow ends before the string can be replaced.
        unsafe { ffi::path_from(ptr) }.unwrap_or(Path::new(""))
    }

    /// `SetPhysicalPath`.
    pub fn set_physical_path(&mut self, path: impl AsRef<Path>) -> Result<(), ModuleError> {
        let path = ffi::path_cstring(path.as_ref(), "map_path_set_physical_path")?;
        // SAFETY: the provider is valid during the call; the string outlives
        // the call, which copies it.
        let code =
            unsafe { (self.raw.api.map_path_set_physical_path)(self.raw.ptr, path.as_ptr()) };
        ModuleError::check(code, "map_path_set_physical_path")
    }
}

// ------------------------------------------------------- typed payloads

/// One payload raised with a typed API, on this thread, while its raise
/// runs. `value` is `None` while a receiver borrows it.
struct PayloadEntry {
    type_name: String,
    value: Option<*mut dyn Any>,
}

thread_local! {
    /// The typed payloads being raised on this thread, innermost last.
    static PAYLOADS: RefCell<Vec<PayloadEntry>> = const { RefCell::new(Vec::new()) };
}

/// Runs `raise` (a server call that delivers a custom notification named
/// `type_name`, with NULL data, synchronously) with `payload` reachable from
/// receivers of this SDK on this thread through
/// [`CustomNotification::payload`].
///
/// The server gets NULL as the data, which every receiver must accept (the
/// header: NULL when a Rust module raised it), so receivers outside this
/// SDK never see the address of a Rust value.
pub(crate) fn with_payload<T: Any, R>(
    type_name: &str,
    payload: &mut T,
    raise: impl FnOnce() -> R,
) -> R {
    let value: *mut dyn Any = payload as &mut dyn Any;
    PAYLOADS.with(|p| {
        p.borrow_mut().push(PayloadEntry {
            type_name: type_name.to_owned(),
            value: Some(value),
        })
    });
    /// Pops the entry even if a panic unwinds through here.
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            let _ = PAYLOADS.try_with(|p| p.borrow_mut().pop());
        }
    }
    let _pop = Pop;
    raise()
}

/// A custom notification (`ICustomNotificationProvider`), request-level or
/// global.
///
/// Every module registered for custom notifications receives every one and
/// checks [`CustomNotification::notification_type`]. The raiser's data is
/// [`CustomNotification::data`], an opaque pointer. When a module of the
/// same library raised it with
/// [`crate::HttpContext::raise_custom_notification_with`], the data is NULL
/// and the typed payload is reached safely with
/// [`CustomNotification::payload`].
pub struct CustomNotification<'a> {
    type_name: &'a str,
    data: *mut c_void,
    /// The payload entry this receiver borrowed, returned on drop.
    borrowed: Option<(usize, *mut dyn Any)>,
    _call: PhantomData<&'a ()>,
}

impl<'a> CustomNotification<'a> {
    pub(crate) fn new(type_name: &'a str, data: *mut c_void) -> Self {
        Self {
            type_name,
            data,
            borrowed: None,
            _call: PhantomData,
        }
    }

    /// `QueryNotificationType`: the type name that identifies the
    /// notification.
    pub fn notification_type(&self) -> &str {
        self.type_name
    }

    /// The raiser's data as an opaque pointer (NULL when a Rust module
    /// raised it). Dereferencing it is up to the module, and `unsafe`.
    pub fn data(&self) -> *mut c_void {
        self.data
    }

    /// The typed payload, when a module using this SDK in the same library
    /// raised the notification with
    /// [`crate::HttpContext::raise_custom_notification_with`] (or the global
    /// variant) on this thread and `T` is its type; `None` otherwise.
    pub fn payload<T: Any>(&mut self) -> Option<&mut T> {
        if self.borrowed.is_none() && self.data.is_null() {
            let type_name = self.type_name;
            self.borrowed = PAYLOADS
                .try_with(|p| {
                    let mut payloads = p.borrow_mut();
                    // The innermost raise of this name is the one being
                    // delivered: delivery is synchronous.
                    let (index, entry) = payloads
                        .iter_mut()
                        .enumerate()
                        .rev()
                        .find(|(_, e)| e.type_name == type_name)?;
                    entry.value.take().map(|v| (index, v))
                })
                .ok()
                .flatten();
        }
        let (_, value) = self.borrowed?;
        // SAFETY: `value` was pushed by `with_payload` from a `&mut T` that
        // stays borrowed (and unused by its owner) until the raise returns,
        // which is after this receiver's call ends and this provider is
        // dropped. Taking it out of the entry makes this provider its only
        // user until then, and the returned borrow is tied to `&mut self`.
        let value = unsafe { &mut *value };
        value.downcast_mut::<T>()
    }
}

impl Drop for CustomNotification<'_> {
    fn drop(&mut self) {
        if let Some((index, value)) = self.borrowed.take() {
            let _ = PAYLOADS.try_with(|p| {
                if let Some(entry) = p.borrow_mut().get_mut(index) {
                    if entry.value.is_none() {
                        entry.value = Some(value);
                    }
                }
            });
        }
    }
}

/// A runtime status query (`RIIS_GL_RSCA_QUERY`, IIS's
/// `IGlobalRSCAQueryProvider`): `riis status` asks for the function
/// `status` with empty parameters, and what the module writes follows the
/// server's own report.
pub struct RscaQuery<'a> {
    function: &'a str,
    parameters: &'a str,
    api: &'static riis_api,
    provider: *mut abi::riis_global_provider,
}

impl<'a> RscaQuery<'a> {
    pub(crate) fn new(
        function: &'a str,
        parameters: &'a str,
        api: &'static riis_api,
        provider: *mut abi::riis_global_provider,
    ) -> Self {
        Self {
            function,
            parameters,
            api,
            provider,
        }
    }

    /// `GetFunctionName`.
    pub fn function(&self) -> &str {
        self.function
    }

    /// `GetFunctionParameters`.
    pub fn parameters(&self) -> &str {
        self.parameters
    }

    /// Appends `text` to the answer (`GetOutputBuffer` and `SetResult`).
    pub fn write(&mut self, text: &str) -> Result<(), ModuleError> {
        // SAFETY: the provider of the RscaQuery notification running now
        // (this value lives only during it); the text is copied.
        let code = unsafe {
            (self.api.global_rsca_write)(self.provider, text.as_ptr().cast(), text.len())
        };
        ModuleError::check(code, "global_rsca_write")
    }
}
