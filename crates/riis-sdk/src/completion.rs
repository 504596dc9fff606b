//! Completing a pending request from another thread: [`CompletionHandle`]
//! (`indicate_completion`, `post_completion` of the C ABI).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use riis_abi::{riis_api, riis_context};

use crate::error::ModuleError;
use riis_notification::RequestNotificationStatus;

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
    /// The module started an operation (a body read, an asynchronous
    /// flush, a child request, a posted completion) during the call.
    operation: bool,
    /// Live [`CompletionHandle`]s.
    handles: usize,
    /// The module returned Pending with no operation: a handle's signal is
    /// what resumes the request.
    waiting: bool,
    /// The last handle was dropped while waiting: the completion posted
    /// then fails the request instead of reaching the module.
    abandoned: bool,
}

/// What a module's call left behind, for the trampoline.
pub(crate) struct CallEnd {
    /// The signal given during the call.
    pub(crate) deferred: Option<Signal>,
    /// An operation was started during the call.
    pub(crate) operation: bool,
    /// Completion handles alive when the call returned.
    pub(crate) handles: usize,
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
// the context is valid), and only to `indicate_completion`,
// `post_completion` and `connection_is_connected`, which the header allows
// from the module's own thread. `api` is a
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
                operation: false,
                handles: 0,
                waiting: false,
                abandoned: false,
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
        state.operation = false;
        state.waiting = false;
        state.abandoned = false;
    }

    /// The module's call returned (`pending`: with Pending): the signal
    /// given during it, whether it started an operation, and how many
    /// handles are alive. Pending with no operation and no signal leaves
    /// the request waiting for the live handles, decided under the lock a
    /// handle's drop takes, so a drop on another thread cannot slip between.
    /// Not with `reading` (full duplex: a body read of an earlier call is
    /// under way): the read completes the wait if no handle does.
    pub(crate) fn leave_call(&self, pending: bool, reading: bool) -> CallEnd {
        let mut state = self.lock();
        state.in_call = false;
        let end = CallEnd {
            deferred: state.deferred.take(),
            operation: state.operation,
            handles: state.handles,
        };
        state.waiting =
            pending && end.deferred.is_none() && !end.operation && !reading && end.handles > 0;
        end
    }

    /// The module started an operation in this call.
    pub(crate) fn note_operation(&self) {
        self.lock().operation = true;
    }

    /// Whether this completion is the one posted for abandoned handles
    /// (taken once).
    pub(crate) fn take_abandoned(&self) -> bool {
        std::mem::take(&mut self.lock().abandoned)
    }

    fn handle(self: &Arc<Self>) -> CompletionHandle {
        self.lock().handles += 1;
        CompletionHandle {
            shared: self.clone(),
        }
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
        state.waiting = false;
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
/// returns `Pending`. Once the request has ended and its instance is
/// disposed, the handle's functions return an error instead of reaching the
/// server. A request ended by the server while the module still owes its
/// signal (the execution limit, a client gone) waits for that signal to
/// dispose the instance: that one signal succeeds.
///
/// The SDK holds a lock of the instance while it calls the server, so the
/// server must not run the module synchronously inside these calls.
///
/// If every handle is dropped without a signal while the request waits for
/// one, the request fails with 500 (the module is not called again), as in
/// the in-process API; a module that returns `Pending` with no operation
/// and no handle fails its request at once.
#[derive(Debug)]
pub struct CompletionHandle {
    shared: Arc<CallShared>,
}

impl CompletionHandle {
    /// A new handle on `shared`, counted.
    pub(crate) fn new(shared: &Arc<CallShared>) -> Self {
        shared.handle()
    }
}

impl Clone for CompletionHandle {
    fn clone(&self) -> Self {
        self.shared.handle()
    }
}

impl Drop for CompletionHandle {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.handles -= 1;
        if state.handles > 0 || !state.waiting || !state.alive || state.in_call {
            return;
        }
        // The last handle went without a signal: nothing will resume the
        // request. A posted completion brings it back to its thread, where
        // the trampoline fails it (see `take_abandoned`).
        state.waiting = false;
        state.abandoned = true;
        // SAFETY: the context is valid while `alive` (checked under the
        // lock, held until the call returns); post_completion is allowed
        // from any thread after the module returned Pending.
        let code = unsafe { (self.shared.api.post_completion)(self.shared.ctx, 0) };
        if code < 0 {
            state.abandoned = false;
        }
    }
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

    /// `IHttpConnection::IsConnected`, from the module's own thread: false
    /// once the request's client left (its connection closed, or the
    /// request stopped waiting for the module because the client left or a
    /// timeout ran out) or the request ended. A thread producing a long
    /// answer asks it to learn when to stop.
    pub fn is_client_connected(&self) -> bool {
        let state = self.shared.lock();
        if !state.alive {
            return false;
        }
        // SAFETY: the context is valid while `alive` (checked under the
        // lock, held until the call returns); the header allows this
        // function from the module's own thread.
        let connected = unsafe { (self.shared.api.connection_is_connected)(self.shared.ctx) };
        drop(state);
        connected != 0
    }
}
