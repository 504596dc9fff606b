//! Completing a pending request from another thread: [`CompletionHandle`]
//! (`indicate_completion`, `post_completion` of the C ABI).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use riis_abi::{riis_api, riis_context};

use crate::error::ModuleError;
use crate::notification::RequestNotificationStatus;

/// A signal given through a handle while the module was still inside its
/// call: the trampoline delivers it when the call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Indicate(RequestNotificationStatus),
    Post(u64),
}

#[derive(Debug)]
struct CallState {
    /// The instance exists (its dispose has not run): the context is valid.
    alive: bool,
    /// The module is inside a call of this instance.
    in_call: bool,
    /// A signal given during the call.
    deferred: Option<Signal>,
}

/// What the handles of one module instance share with the instance.
pub(crate) struct CallShared {
    ctx: *mut riis_context,
    api: &'static riis_api,
    state: Mutex<CallState>,
}

impl std::fmt::Debug for CallShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallShared")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

// SAFETY: `ctx` is only passed to the server while `state` is locked and
// `alive` is true (the instance's dispose clears it under the same lock, so
// the context is valid), and only to `indicate_completion` and
// `post_completion`, which the header allows from any thread. `api` is a
// table of plain function pointers, valid for the life of the process.
unsafe impl Send for CallShared {}
// SAFETY: as for `Send`: every access to the pointer is under the mutex.
unsafe impl Sync for CallShared {}

impl CallShared {
    /// The shared state of a request instance, whose context is `ctx`.
    pub(crate) fn new(ctx: *mut riis_context, api: &'static riis_api) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            api,
            state: Mutex::new(CallState {
                alive: true,
                in_call: false,
                deferred: None,
            }),
        })
    }

    /// A state whose handles never reach the server (global notifications
    /// cannot pend).
    pub(crate) fn dead(ctx: *mut riis_context, api: &'static riis_api) -> Arc<Self> {
        let shared = Self::new(ctx, api);
        shared.lock().alive = false;
        shared
    }

    fn lock(&self) -> MutexGuard<'_, CallState> {
        // No code that can panic runs under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn context(&self) -> *mut riis_context {
        self.ctx
    }

    /// The module is about to be called.
    pub(crate) fn enter_call(&self) {
        let mut state = self.lock();
        state.in_call = true;
        state.deferred = None;
    }

    /// The module's call returned: the signal given during it, if any.
    pub(crate) fn leave_call(&self) -> Option<Signal> {
        let mut state = self.lock();
        state.in_call = false;
        state.deferred.take()
    }

    /// The instance is being disposed: handles fail from now on. Waits for a
    /// handle that is talking to the server.
    pub(crate) fn kill(&self) {
        self.lock().alive = false;
    }

    fn signal(&self, signal: Signal) -> Result<(), ModuleError> {
        let mut state = self.lock();
        if !state.alive {
            return Err(ModuleError::with_hresult(
                "the request this completion handle belongs to has ended, or cannot pend",
                ModuleError::E_INVALID_STATE,
            ));
        }
        if state.in_call {
            // The module has not returned Pending yet: the trampoline
            // delivers the signal when it does.
            if state.deferred.is_some() {
                return Err(ModuleError::with_hresult(
                    "the request was already signalled during this call",
                    ModuleError::E_INVALID_STATE,
                ));
            }
            state.deferred = Some(signal);
            return Ok(());
        }
        // The lock stays held across the call so that dispose (which takes
        // it) cannot end the context meanwhile.
        let code = match signal {
            // SAFETY: the context is valid while `alive` (checked under the
            // lock, held until the call returns); the header allows this
            // function from any thread after the module returned Pending.
            Signal::Indicate(status) => unsafe {
                (self.api.indicate_completion)(self.ctx, status.raw())
            },
            // SAFETY: as above, for post_completion.
            Signal::Post(bytes) => unsafe { (self.api.post_completion)(self.ctx, bytes) },
        };
        drop(state);
        ModuleError::check(
            code,
            match signal {
                Signal::Indicate(_) => "indicate_completion",
                Signal::Post(_) => "post_completion",
            },
        )
    }
}

/// Resumes a request whose module returned
/// [`RequestNotificationStatus::Pending`], from any thread (IIS's
/// `IndicateCompletion` and `PostCompletion`).
///
/// Take one with [`crate::HttpContext::completion_handle`] during a call,
/// hand it to a thread or task, return `Pending`, and signal once. A signal
/// given before the module's call returned is held and delivered when it
/// returns `Pending`. Once the request has ended the handle's functions
/// return an error instead of reaching the server.
///
/// The SDK holds a lock of the instance while it calls the server, so the
/// server must not run the module synchronously inside these calls.
#[derive(Clone, Debug)]
pub struct CompletionHandle {
    pub(crate) shared: Arc<CallShared>,
}

impl CompletionHandle {
    /// `IndicateCompletion`: the request continues with `status`, without
    /// calling the module again. `status` must not be `Pending`.
    pub fn indicate_completion(
        &self,
        status: RequestNotificationStatus,
    ) -> Result<(), ModuleError> {
        if status == RequestNotificationStatus::Pending {
            return Err(ModuleError::with_hresult(
                "indicate_completion needs Continue or FinishRequest",
                ModuleError::E_INVALIDARG,
            ));
        }
        self.shared.signal(Signal::Indicate(status))
    }

    /// `PostCompletion`: the module's
    /// [`crate::HttpModule::on_async_completion`] runs with `bytes` as the
    /// completion's byte count.
    pub fn post_completion(&self, bytes: u64) -> Result<(), ModuleError> {
        self.shared.signal(Signal::Post(bytes))
    }
}
