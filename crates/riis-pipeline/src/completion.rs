//! Completing a Pending request from anywhere: IIS's `IndicateCompletion` and
//! `PostCompletion`.
//!
//! A module that returns Pending without starting a server operation takes a
//! [`CompletionHandle`] first, hands it to its own thread or task, and that
//! side signals once. The request holds no thread while it waits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::context::HttpContext;
use crate::context_container::ConnectionLiveness;

use riis_notification::RequestNotificationStatus;

/// How a parked request is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `IndicateCompletion(status)`: continue with this status; the module is
    /// not re-entered.
    Indicate(RequestNotificationStatus),
    /// `PostCompletion(bytes)`: re-enter the module through OnAsyncCompletion.
    Post(u64),
    /// Every handle was dropped without a signal: the module can never
    /// complete the request.
    Abandoned,
}

/// Changes a module's own thread made to a parked request (what it wrote
/// into the response), applied on the request's thread before its signal is
/// acted on.
pub type ParkedChanges = Box<dyn FnOnce(&mut HttpContext) + Send>;

/// A signal and the changes that came with it, under one lock: whoever
/// takes the signal finds its changes.
#[derive(Default)]
struct Signalled {
    signal: Option<Signal>,
    changes: Option<ParkedChanges>,
}

#[derive(Default)]
pub(crate) struct CompletionState {
    signalled: Mutex<Signalled>,
    notify: Notify,
    handles: AtomicUsize,
    /// The request's connection, for [`CompletionHandle::is_client_connected`].
    connection: Option<ConnectionLiveness>,
    /// The request no longer listens: it ended, or gave up the wait this
    /// state was for (the client left, a timeout).
    detached: AtomicBool,
}

impl std::fmt::Debug for CompletionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionState")
            .field("signal", &self.lock().signal)
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl CompletionState {
    /// The state for a module of a request on `connection`.
    pub(crate) fn new(connection: ConnectionLiveness) -> Self {
        Self {
            connection: Some(connection),
            ..Self::default()
        }
    }

    /// The request stopped listening to this state's handles (see
    /// [`CompletionHandle::is_client_connected`]).
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Signalled> {
        self.signalled.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, signal: Signal, changes: Option<ParkedChanges>) {
        let mut slot = self.lock();
        if slot.signal.is_none() || slot.signal == Some(Signal::Abandoned) {
            slot.signal = Some(signal);
            slot.changes = changes;
        }
        drop(slot);
        self.notify.notify_one();
    }

    /// Forgets a signal nobody waited for (given while the request was not
    /// parked), so it cannot end a later Pending early.
    pub(crate) fn discard_stale(&self) {
        let mut slot = self.lock();
        if slot.signal != Some(Signal::Abandoned) {
            slot.signal = None;
            slot.changes = None;
        }
    }

    /// Whether a handle is alive: something may still signal.
    pub(crate) fn has_handles(&self) -> bool {
        self.handles.load(Ordering::Acquire) > 0
    }

    /// The signal to act on, if any. Whether the request is abandoned is
    /// decided by the live handle count, not only by the marker the last
    /// handle leaves: one request may pend several times on the same state, so
    /// a marker left by an earlier round's handles is stale while a new handle
    /// is alive, and no marker is left when the last handle went away after
    /// its signal (a later Pending with no live handle could never complete).
    /// With it come the changes its handle gave, taken under the same lock.
    pub(crate) fn take(&self) -> Option<(Signal, Option<ParkedChanges>)> {
        let mut slot = self.lock();
        match slot.signal.take() {
            None | Some(Signal::Abandoned) => {
                (self.handles.load(Ordering::Acquire) == 0).then_some((Signal::Abandoned, None))
            }
            Some(signal) => Some((signal, slot.changes.take())),
        }
    }
}

/// Resumes a parked request from any thread. Cloneable; the first signal
/// wins, later ones are ignored until the request parks again.
#[derive(Debug)]
pub struct CompletionHandle {
    state: Arc<CompletionState>,
}

impl CompletionHandle {
    pub(crate) fn new(state: Arc<CompletionState>) -> Self {
        state.handles.fetch_add(1, Ordering::AcqRel);
        Self { state }
    }

    /// `IndicateCompletion`: the pipeline continues with `status`, without
    /// calling the module again.
    pub fn indicate_completion(&self, status: RequestNotificationStatus) {
        self.state.set(Signal::Indicate(status), None);
    }

    /// `PostCompletion`: the module's `OnAsyncCompletion` runs with `bytes`
    /// as the completion's byte count.
    pub fn post_completion(&self, bytes: u64) {
        self.state.set(Signal::Post(bytes), None);
    }

    /// [`CompletionHandle::indicate_completion`], with `changes` to the
    /// request made first, on its thread: what the module's own thread
    /// wrote while the request was parked (IIS lets that thread write the
    /// response). Dropped, not made, when the signal is ignored.
    pub fn indicate_completion_with(
        &self,
        status: RequestNotificationStatus,
        changes: ParkedChanges,
    ) {
        self.state.set(Signal::Indicate(status), Some(changes));
    }

    /// [`CompletionHandle::post_completion`], with `changes` made first (see
    /// [`CompletionHandle::indicate_completion_with`]).
    pub fn post_completion_with(&self, bytes: u64, changes: ParkedChanges) {
        self.state.set(Signal::Post(bytes), Some(changes));
    }

    /// `IHttpConnection::IsConnected`, asked from the module's own thread:
    /// false once the request's connection closed, or once the request no
    /// longer listens to this handle (it ended, or it gave up the wait:
    /// its client left, or a timeout ran out). A thread producing a long
    /// answer asks it to learn when to stop.
    pub fn is_client_connected(&self) -> bool {
        !self.state.detached.load(Ordering::Relaxed)
            && self
                .state
                .connection
                .as_ref()
                .is_some_and(|c| c.is_connected())
    }
}

impl Clone for CompletionHandle {
    fn clone(&self) -> Self {
        Self::new(self.state.clone())
    }
}

impl Drop for CompletionHandle {
    fn drop(&mut self) {
        if self.state.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle is gone: if nothing was signalled the request
            // would wait forever, so wake it to fail instead.
            let mut slot = self.state.lock();
            if slot.signal.is_none() {
                slot.signal = Some(Signal::Abandoned);
            }
            drop(slot);
            self.state.notify.notify_one();
        }
    }
}

/// What the driver awaits when the pipeline is parked.
#[derive(Debug)]
pub struct CompletionWaiter {
    pub(crate) state: Arc<CompletionState>,
}

impl CompletionWaiter {
    /// Resolves once the request can resume.
    pub async fn wait(&self) {
        loop {
            let notified = self.state.notify.notified();
            if self.state.lock().signal.is_some() {
                return;
            }
            notified.await;
        }
    }
}
