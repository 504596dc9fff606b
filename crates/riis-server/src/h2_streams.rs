//! HTTP/2 streams as tasks that can be reset one by one.
//!
//! hyper runs each HTTP/2 stream as a task of its own, spawned through the
//! connection's executor, and reads a response body's next piece before the
//! client's flow-control window has room for it. A client that keeps a
//! stream's window shut therefore pins that piece, and it can do so on
//! every stream of a connection while it feeds one of them now and then,
//! which keeps the connection's own send timeout from ever running out.
//! nginx times each stream on its own; riis does the same: a stream whose
//! body waited for window longer than `timeouts.send` has its task aborted,
//! which drops hyper's end of the stream and resets it (RST_STREAM), and
//! frees what it held. The connection and its other streams go on.
//!
//! [`StreamExecutor`] spawns the stream tasks and files each one's abort
//! handle under its task id on the worker thread; a response body that
//! starts waiting for window claims its task's handle from there
//! ([`claim_current`]), and the connection's sweep aborts the streams that
//! stalled (`connection::Activity`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::task::{AbortHandle, Id};

thread_local! {
    /// The abort handles of this worker's stream tasks that no response body
    /// has claimed yet, by task id.
    static UNCLAIMED: RefCell<HashMap<Id, AbortHandle>> = RefCell::new(HashMap::new());
}

/// The executor hyper spawns HTTP/2 stream tasks with: tokio's, keeping
/// each task's abort handle for the stream's response body to claim.
///
/// riis runs a single-threaded runtime per worker, so a task runs on the
/// thread that spawned it and finds its handle there. Under a
/// multi-threaded runtime (a program that embeds riis) a task may find none;
/// its stream is then timed with its connection only.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let task = tokio::spawn(async move {
            stream.await;
            // Unclaimed (no body waited for window): the handle goes now.
            if let Some(id) = tokio::task::try_id() {
                UNCLAIMED.with_borrow_mut(|tasks| tasks.remove(&id));
            }
        });
        UNCLAIMED.with_borrow_mut(|tasks| tasks.insert(task.id(), task.abort_handle()));
    }
}

/// The abort handle of the stream task being polled, taken out of the
/// worker's list; `None` outside a stream task (hyper calls the service, which
/// makes the response body, from the connection's task; it polls the body
/// from the stream's).
pub(crate) fn claim_current() -> Option<AbortHandle> {
    let id = tokio::task::try_id()?;
    UNCLAIMED.with_borrow_mut(|tasks| tasks.remove(&id))
}

/// One HTTP/2 stream's wait for window, watched by the connection's sweep.
#[derive(Debug)]
pub struct StreamStall {
    /// The body holds data hyper has not taken yet.
    waiting: AtomicBool,
    /// Since when (the connection clock's second).
    since: AtomicU32,
    abort: AbortHandle,
}

impl StreamStall {
    pub(crate) fn new(abort: AbortHandle) -> Self {
        Self {
            waiting: AtomicBool::new(false),
            since: AtomicU32::new(0),
            abort,
        }
    }

    /// The body starts waiting at `now`, or stops.
    pub(crate) fn set_waiting(&self, waiting: bool, now: u32) {
        if waiting {
            self.since.store(now, Ordering::Relaxed);
        }
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// Resets the stream if it has waited `limit` seconds or more at `t`;
    /// returns whether it did.
    pub(crate) fn reset_if_stalled(&self, t: u32, limit: u64) -> bool {
        let stalled = self.waiting.load(Ordering::Relaxed)
            // More whole ticks than the limit, as the connection's own
            // timeouts: never early (see `Activity::check`).
            && u64::from(t.saturating_sub(self.since.load(Ordering::Relaxed))) > limit;
        if stalled {
            self.abort.abort();
        }
        stalled
    }
}
