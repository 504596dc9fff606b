//! Calling a module's entry point, and what a `riis_registration*` points at.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use riis_abi::{riis_register_module_fn, riis_registration, riis_server, SERVER_VERSION};
use riis_pipeline::{
    GlobalNotification, GlobalNotifications, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotifications, Section, ServerInfo,
};

use crate::global::NativeGlobal;
use crate::module::{ModuleShared, NativeFactory};

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
    /// For a library's module: the configuration's hold on the
    /// registration, given to the factory and global module it registers.
    pub(crate) hold: Option<Arc<Hold>>,
    /// The calls that succeeded, to make them again for later
    /// configurations ([`Registered`]).
    pub(crate) recorded: RefCell<Vec<Recorded>>,
}

impl RegistrationHandle<'_, '_> {
    /// Keeps a call that succeeded.
    pub(crate) fn record(&self, call: Recorded) {
        self.recorded.borrow_mut().push(call);
    }

    /// A factory or global module holding [`RegistrationHandle::hold`] was
    /// registered.
    pub(crate) fn registered_part(&self) {
        if let Some(hold) = &self.hold {
            hold.add_part();
        }
    }
}

/// A registration call RegisterModule made, as a later configuration's
/// pipeline gets it again without a new RegisterModule.
pub(crate) enum Recorded {
    Request {
        factory: NativeFactory,
        notifications: RequestNotifications,
        post: RequestNotifications,
    },
    RequestPriority(RequestNotification, Priority),
    PostRequestPriority(RequestNotification, Priority),
    Global {
        module: NativeGlobal,
        notifications: GlobalNotifications,
    },
    GlobalPriority(GlobalNotification, Priority),
    Section(String),
    /// The keys a declared section may hold (ABI 1.12), by its number.
    SectionKeys(u32, Vec<String>),
}

/// What a library module's RegisterModule registered, shared by every
/// configuration that lists the module while one of them is in use.
///
/// IIS calls `RegisterModule` once in a worker process, and `Terminate`
/// when the process ends; a configuration change recycles the process. A
/// riis reload keeps the process (and the library, with its globals), so
/// calling `RegisterModule` again for the new configuration and the old
/// configuration's `Terminate` after it would free, in the old `Terminate`,
/// what the new `RegisterModule` had just set up (a work queue in a global:
/// the next request crashed the server). Instead, a reload whose
/// configuration lists the same module (the same entry point under the
/// same name) while an earlier configuration still uses it registers what
/// the first `RegisterModule` registered, and the module's `Terminate`
/// callbacks run once, when the last configuration that used the
/// registration retired (or at shutdown).
pub(crate) struct Registered {
    key: (usize, String),
    calls: Vec<Recorded>,
}

/// The live registrations, each with how many configurations hold it.
/// One whose count reached 0 stays listed until its `Terminate` callbacks
/// returned: a configuration that lists the module meanwhile waits for them
/// ([`TERMINATED`]) before its new RegisterModule, which they would undo.
static REGISTERED: Mutex<Vec<(Arc<Registered>, usize)>> = Mutex::new(Vec::new());

/// Signalled when a registration's `Terminate` callbacks have run.
static TERMINATED: std::sync::Condvar = std::sync::Condvar::new();

fn registered() -> std::sync::MutexGuard<'static, Vec<(Arc<Registered>, usize)>> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registered {
    /// A configuration no longer holds the registration; after the last,
    /// the module's `Terminate` callbacks run, in the order they were
    /// registered.
    fn release(self: &Arc<Self>) {
        let last = {
            let mut live = registered();
            match live.iter_mut().find(|(r, _)| Arc::ptr_eq(r, self)) {
                Some((_, users)) if *users > 0 => {
                    *users -= 1;
                    *users == 0
                }
                _ => false,
            }
        };
        if !last {
            return;
        }
        // Listed (with no user) until the callbacks returned.
        let _listed_until_done = Terminating(self);
        for call in &self.calls {
            match call {
                Recorded::Request { factory, .. } => factory.ending.now(&factory.shared),
                Recorded::Global { module, .. } => module.ending.now(&module.shared),
                _ => {}
            }
        }
    }
}

/// How a factory or global module ends: the module's `terminate` callback
/// with its user data, and the configuration's hold on a registration that
/// later configurations share (the hold then decides when the callback
/// runs).
#[derive(Clone)]
pub(crate) struct Ending {
    callback: Option<unsafe extern "C" fn(*mut c_void)>,
    user_data: *mut c_void,
    hold: Option<Arc<Hold>>,
}

impl Ending {
    /// The callback a module handed over (its struct's `terminate`).
    pub(crate) fn new(
        callback: Option<unsafe extern "C" fn(*mut c_void)>,
        user_data: *mut c_void,
    ) -> Self {
        Self {
            callback,
            user_data,
            hold: None,
        }
    }

    /// The same callback, under `hold` (or none: as a registration keeps
    /// it).
    pub(crate) fn held(&self, hold: Option<Arc<Hold>>) -> Self {
        Self {
            hold,
            ..self.clone()
        }
    }

    /// The callback, now.
    pub(crate) fn now(&self, shared: &Arc<ModuleShared>) {
        if let Some(callback) = self.callback {
            let _named = crate::frame::ModuleGuard::enter(shared);
            // SAFETY: the module's own terminate callback with its user data,
            // called once: at shutdown, or when the last configuration that
            // uses the registration retired.
            unsafe { callback(self.user_data) }
        }
    }

    /// The engine's `terminate`: the callback now, or the part of the hold
    /// ends.
    pub(crate) fn end(&self, shared: &Arc<ModuleShared>) {
        match &self.hold {
            Some(hold) => hold.end_part(|| self.now(shared)),
            None => self.now(shared),
        }
    }
}

/// Takes a terminated registration off the list when dropped (also when a
/// Terminate callback panicked), and wakes who waits for it.
struct Terminating<'a>(&'a Arc<Registered>);

impl Drop for Terminating<'_> {
    fn drop(&mut self) {
        registered().retain(|(r, _)| !Arc::ptr_eq(r, self.0));
        TERMINATED.notify_all();
    }
}

/// One configuration's hold on a library module's registration: its
/// factory and global module each end their part when terminated, and the
/// last part ends the hold.
pub(crate) struct Hold {
    /// Set once RegisterModule succeeded (or a registration was shared).
    registered: OnceLock<Arc<Registered>>,
    /// Parts (factory, global module) not terminated yet.
    parts: AtomicUsize,
}

impl Hold {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            registered: OnceLock::new(),
            parts: AtomicUsize::new(0),
        })
    }

    /// A factory or global module was registered with this hold.
    pub(crate) fn add_part(&self) {
        self.parts.fetch_add(1, Ordering::AcqRel);
    }

    /// A part's `terminate`. `own` runs the part's callback at once when
    /// nothing is shared (its RegisterModule failed).
    pub(crate) fn end_part(&self, own: impl FnOnce()) {
        match self.registered.get() {
            None => own(),
            Some(registered) => {
                if self.parts.fetch_sub(1, Ordering::AcqRel) == 1 {
                    registered.release();
                }
            }
        }
    }
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

/// Registers a library's module: the registration an earlier, still used
/// configuration made for the same entry point and name, or a new one
/// through RegisterModule (see [`Registered`]).
pub(crate) fn register_library_module(
    entry: riis_register_module_fn,
    abi_minor: u32,
    registration: &mut ModuleRegistration<'_>,
) -> Result<(), ModuleError> {
    let key = (entry as usize, registration.name().to_owned());
    let live = {
        let mut list = registered();
        // One being terminated: its Terminate would undo a new
        // RegisterModule, so that waits for it.
        while list.iter().any(|(r, users)| r.key == key && *users == 0) {
            list = TERMINATED.wait(list).unwrap_or_else(|e| e.into_inner());
        }
        list.iter_mut()
            .find(|(r, _)| r.key == key)
            .map(|(r, users)| {
                *users += 1;
                r.clone()
            })
    };
    let hold = Hold::new();
    let Some(live) = live else {
        let recorded = run_entry_point(entry, abi_minor, registration, Some(hold.clone()))?;
        let made = Arc::new(Registered {
            key,
            calls: recorded,
        });
        registered().push((made.clone(), 1));
        let _ = hold.registered.set(made);
        return Ok(());
    };
    let _ = hold.registered.set(live.clone());
    let replayed = replay(&live, abi_minor, registration, &hold);
    if replayed.is_err() {
        // The pipeline drops, unterminated, what a failed registration
        // registered (riis_module.h promises Terminate only after a
        // RegisterModule that succeeded): nothing of this configuration's
        // will end the hold.
        live.release();
    }
    replayed
}

/// Makes a registration's calls again for another configuration.
fn replay(
    live: &Registered,
    abi_minor: u32,
    registration: &mut ModuleRegistration<'_>,
    hold: &Arc<Hold>,
) -> Result<(), ModuleError> {
    let shared = module_shared(registration, abi_minor)?;
    let mut sections = Vec::new();
    for call in &live.calls {
        match call {
            Recorded::Request {
                factory,
                notifications,
                post,
            } => {
                registration.set_request_notifications_boxed(
                    Box::new(factory.copy_for(shared.clone(), Some(hold.clone()))),
                    *notifications,
                    *post,
                )?;
                // Counted once registered: only then will it be terminated.
                hold.add_part();
            }
            Recorded::RequestPriority(n, p) => {
                registration.set_priority_for_request_notification(*n, *p)
            }
            Recorded::PostRequestPriority(n, p) => {
                registration.set_priority_for_post_request_notification(*n, *p)?
            }
            Recorded::Global {
                module,
                notifications,
            } => {
                registration.set_global_notifications_arc(
                    Arc::new(module.copy_for(shared.clone(), Some(hold.clone()))),
                    *notifications,
                )?;
                hold.add_part();
            }
            Recorded::GlobalPriority(n, p) => {
                registration.set_priority_for_global_notification(*n, *p)
            }
            Recorded::Section(name) => {
                sections.push(registration.declare_section::<toml::Table>(name)?)
            }
            // Replayed as called: a reload keeps the module's key limits.
            Recorded::SectionKeys(section, keys) => {
                if let Some(declared) = sections.get(*section as usize).copied() {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    registration.limit_section_keys(declared, &keys)?;
                }
            }
        }
    }
    let _ = shared.sections.set(sections);
    Ok(())
}

/// What the objects of a module in one configuration share.
fn module_shared(
    registration: &ModuleRegistration<'_>,
    abi_minor: u32,
) -> Result<Arc<ModuleShared>, ModuleError> {
    let name = registration.name().to_owned();
    Ok(Arc::new(ModuleShared {
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
    }))
}

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
    run_entry_point(entry, abi_minor, registration, None).map(drop)
}

/// Calls the entry point; what it registered, on success.
fn run_entry_point(
    entry: riis_register_module_fn,
    abi_minor: u32,
    registration: &mut ModuleRegistration<'_>,
    hold: Option<Arc<Hold>>,
) -> Result<Vec<Recorded>, ModuleError> {
    let shared = module_shared(registration, abi_minor)?;
    let mut handle = RegistrationHandle {
        registration,
        shared: shared.clone(),
        sections: RefCell::new(Vec::new()),
        failure: RefCell::new(None),
        hold,
        recorded: RefCell::new(Vec::new()),
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
    Ok(handle.recorded.into_inner())
}
