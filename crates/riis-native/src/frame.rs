//! What a `riis_context*` points at, and how the API finds the request behind
//! it.
//!
//! Each native module instance owns one [`Frame`] for its request. The frame
//! holds the per-request arena (strings the server returns and
//! `IModuleAllocator` memory), the context handle the module receives (the
//! same pointer for every call, as IIS modules expect), cloned child contexts,
//! and the completion slot another thread may signal.
//!
//! The engine's `HttpContext` is reachable only while the server is calling
//! the instance: the frame records it for the call and a thread-local marks
//! the frame as the one running on this thread. An API call through a handle
//! that is not the running frame's (another thread, or after the call
//! returned) fails with `RIIS_E_WRONG_THREAD` instead of touching freed or
//! shared state.
//!
//! The `riis_context*` a module gets is a token, not an address: an odd
//! number no other frame is ever given, which the server never dereferences.
//! It is compared with the running frame's during calls and looked up among
//! the live frames for a signal from another thread, so a stale or forged
//! pointer is refused (a late signal after its request ended fails with
//! `RIIS_E_INVALID_STATE` even when a newer frame reuses the memory). A
//! cloned context's pointer is the address of the clone, only ever compared
//! with the running frame's own clones.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use riis_abi::{hr, riis_hresult};
use riis_pipeline::{CompletionHandle, HttpContext, ModuleIndex, RequestNotificationStatus};

use crate::module::ModuleShared;

thread_local! {
    /// The frame whose module is being called on this thread.
    static RUNNING: Cell<*const Frame> = const { Cell::new(ptr::null()) };
    /// This thread's id, read once (`thread::current()` takes a reference
    /// to the thread's handle each time, and every native call asks).
    static THIS_THREAD: std::thread::ThreadId = std::thread::current().id();
}

/// The id of the calling thread.
pub(crate) fn this_thread() -> std::thread::ThreadId {
    THIS_THREAD.with(|id| *id)
}

/// Marks `frame` as running on this thread until dropped; restores the
/// previous one (nested notifications run other modules' frames inside).
pub(crate) struct RunningGuard {
    previous: *const Frame,
}

impl RunningGuard {
    pub(crate) fn enter(frame: &Frame) -> Self {
        let previous = RUNNING.with(|r| r.replace(frame as *const Frame));
        Self { previous }
    }

    /// Marks no frame as running until dropped: a global notification raised
    /// from inside a module call must not reach that call's request context
    /// (the engine holds it borrowed while the notification runs).
    pub(crate) fn none() -> Self {
        let previous = RUNNING.with(|r| r.replace(ptr::null()));
        Self { previous }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.previous));
    }
}

/// The frame being called on this thread, if any.
pub(crate) fn running_frame<'a>() -> Option<&'a Frame> {
    let frame = RUNNING.with(|r| r.get());
    // SAFETY: a frame is marked running only while its module is being
    // called on this thread, so it is alive for that call.
    (!frame.is_null()).then(|| unsafe { &*frame })
}

/// The arena behind `allocator` if it is that of the frame being called on
/// this thread (an allocator used from another thread, or after its request
/// ended, is refused rather than read).
pub(crate) fn running_arena<'a>(allocator: *const Arena) -> Option<&'a Arena> {
    let arena = &running_frame()?.arena;
    ptr::eq(arena, allocator).then_some(arena)
}

/// Whether `frame` is the one being called on this thread.
pub(crate) fn is_running(frame: *const Frame) -> bool {
    RUNNING.with(|r| r.get() == frame)
}

thread_local! {
    /// The module whose code runs on this thread outside a request frame:
    /// during RegisterModule and global notifications (for log lines).
    static RUNNING_MODULE: RefCell<Option<Arc<ModuleShared>>> = const { RefCell::new(None) };
}

/// Names `module` as running on this thread until dropped.
pub(crate) struct ModuleGuard {
    previous: Option<Arc<ModuleShared>>,
}

impl ModuleGuard {
    pub(crate) fn enter(module: &Arc<ModuleShared>) -> Self {
        let previous = RUNNING_MODULE.with(|m| m.replace(Some(module.clone())));
        Self { previous }
    }
}

impl Drop for ModuleGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        RUNNING_MODULE.with(|m| *m.borrow_mut() = previous);
    }
}

/// The name of the native module running on this thread, if any: the frame
/// being called, or the module in RegisterModule or a global notification.
pub(crate) fn running_module_name() -> Option<String> {
    if let Some(frame) = running_frame() {
        return Some(frame.module.name.clone());
    }
    RUNNING_MODULE.with(|m| m.borrow().as_ref().map(|s| s.name.clone()))
}

/// Memory that lives until the request ends: strings handed to the module and
/// `IModuleAllocator` blocks. Blocks never move once allocated.
///
/// Strings are kept once per value: a module that asks for the same one
/// again (its URL at every piece of a long stream) gets the same pointer,
/// so the arena grows with the values handed out, not with the calls.
#[derive(Default)]
pub(crate) struct Arena {
    blocks: RefCell<Vec<Box<[u128]>>>,
    strings: RefCell<HashSet<KeptString>>,
}

/// A string handed to a module: a `CString` given up with `into_raw`, so
/// that moving it (the set grows) is moving a pointer, never the owner of
/// bytes a module holds. Compared by its bytes.
struct KeptString(NonNull<c_char>);

// SAFETY: it owns its bytes, as the `CString` it was does.
unsafe impl Send for KeptString {}

impl KeptString {
    fn as_c_str(&self) -> &CStr {
        // SAFETY: from `CString::into_raw`, live until dropped.
        unsafe { CStr::from_ptr(self.0.as_ptr()) }
    }
}

impl std::borrow::Borrow<CStr> for KeptString {
    fn borrow(&self) -> &CStr {
        self.as_c_str()
    }
}

impl PartialEq for KeptString {
    fn eq(&self, other: &Self) -> bool {
        self.as_c_str() == other.as_c_str()
    }
}

impl Eq for KeptString {}

impl std::hash::Hash for KeptString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `CStr` hashes, which `Borrow` requires.
        self.as_c_str().hash(state);
    }
}

impl Drop for KeptString {
    fn drop(&mut self) {
        // SAFETY: from `CString::into_raw`, freed once, here.
        drop(unsafe { CString::from_raw(self.0.as_ptr()) });
    }
}

impl Arena {
    /// A zeroed, 16-byte aligned block of at least `bytes` bytes; NULL when
    /// the memory cannot be had (a module asking for too much must get
    /// NULL, as from `malloc`, not abort the server).
    pub(crate) fn allocate(&self, bytes: usize) -> *mut u8 {
        let words = bytes.div_ceil(16).max(1);
        let Ok(layout) = std::alloc::Layout::array::<u128>(words) else {
            return ptr::null_mut();
        };
        // Zeroed by the allocator (fresh pages of a large block are zero
        // already), not by writing every byte: a huge request the system
        // overcommits must not touch, and so commit, all of it.
        // SAFETY: the layout has a non-zero size (`words` is at least 1).
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u128>();
        if p.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `p` is a fresh, zeroed allocation of `words` u128s made
        // with the layout `Box<[u128]>` frees it with.
        let mut block: Box<[u128]> =
            unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, words)) };
        let p = block.as_mut_ptr().cast::<u8>();
        self.blocks.borrow_mut().push(block);
        p
    }

    /// A NUL-terminated copy of `bytes` (of any encoding); NULL when they
    /// hold a NUL byte.
    pub(crate) fn bytes(&self, bytes: Vec<u8>) -> *const c_char {
        let Ok(c) = CString::new(bytes) else {
            return ptr::null();
        };
        let mut strings = self.strings.borrow_mut();
        if let Some(kept) = strings.get(c.as_c_str()) {
            return kept.0.as_ptr();
        }
        let raw = c.into_raw();
        // SAFETY: `into_raw` never gives NULL.
        strings.insert(KeptString(unsafe { NonNull::new_unchecked(raw) }));
        raw
    }

    /// A NUL-terminated copy of `s`; NULL when `s` holds a NUL byte (nothing
    /// the server returns does: header values, paths and names cannot).
    pub(crate) fn string(&self, s: &str) -> *const c_char {
        self.bytes(s.into())
    }
}

/// A signal that arrived before the module's call returned Pending (another
/// thread was quicker than the worker).
#[derive(Clone, Copy)]
pub(crate) enum EarlySignal {
    Indicate(RequestNotificationStatus),
    Post(u64),
}

/// What another thread may touch: the completion handle of the current
/// Pending round, or the signal that came before it existed.
#[derive(Default)]
pub(crate) struct CompletionSlot {
    /// The signal the module owes: it returned Pending without starting an
    /// operation, so its own thread completes it.
    pub(crate) handle: Option<CompletionHandle>,
    /// In full duplex, the handle through which the module's own thread
    /// may wake it while its body read is under way. Unlike `handle` it is
    /// not owed: the request may end without it.
    pub(crate) duplex_handle: Option<CompletionHandle>,
    pub(crate) early: Option<EarlySignal>,
    /// What the module's own thread wrote into the response during the
    /// module's call or while the request was parked (`handle` owed), made
    /// when its signal resumes the request (see `api::change_response`).
    pub(crate) parked_changes: Vec<riis_pipeline::ParkedChanges>,
    /// The bytes of memory those writes hold (see [`PARKED_LIMIT`]).
    pub(crate) parked_bytes: usize,
    /// A write was refused for the limit: the response the thread made
    /// cannot go out whole.
    pub(crate) parked_overflow: bool,
    /// The thread of the module's call under way: another thread's writes
    /// are kept until the call ends (that thread itself, in a notification
    /// raised during the call, reaches only its own context).
    pub(crate) in_call: Option<std::thread::ThreadId>,
    /// The request ended while the module was pending: the module's own
    /// signal disposes the instance and frees the frame (see
    /// `NativeModule::drop` and `api::context::signal`).
    pub(crate) orphan: Option<Orphan>,
}

/// The most memory a module's own thread may write into a parked
/// request's response before its signal (16 MiB): past it a write fails
/// with `RIIS_E_OUTOFMEMORY`, so a thread that writes on and on without
/// completing cannot fill the server's memory. A module that streams
/// completes and flushes, as on its request's thread.
pub(crate) const PARKED_LIMIT: usize = 16 * 1024 * 1024;

/// The most memory the parked writes of all requests may hold together
/// (256 MiB): many requests each under [`PARKED_LIMIT`] cannot fill the
/// server's memory either.
pub(crate) const PARKED_TOTAL_LIMIT: usize = 256 * 1024 * 1024;

/// What the parked writes of all requests hold now.
static PARKED_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CompletionSlot {
    /// Keeps `held` bytes more of parked writes if both limits allow it.
    pub(crate) fn reserve_parked(&mut self, held: usize) -> bool {
        use std::sync::atomic::Ordering;
        if self.parked_bytes.saturating_add(held) > PARKED_LIMIT {
            return false;
        }
        let reserved = PARKED_TOTAL.fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
            total
                .checked_add(held)
                .filter(|&total| total <= PARKED_TOTAL_LIMIT)
        });
        if reserved.is_err() {
            return false;
        }
        self.parked_bytes += held;
        true
    }

    /// Takes the parked writes, to be made now.
    pub(crate) fn take_parked(&mut self) -> Vec<riis_pipeline::ParkedChanges> {
        self.release_parked();
        std::mem::take(&mut self.parked_changes)
    }

    fn release_parked(&mut self) {
        let held = std::mem::take(&mut self.parked_bytes);
        PARKED_TOTAL.fetch_sub(held, std::sync::atomic::Ordering::AcqRel);
        self.parked_overflow = false;
    }
}

impl Drop for CompletionSlot {
    /// Writes never made (the request ended) give their memory back to
    /// the process's budget.
    fn drop(&mut self) {
        self.release_parked();
    }
}

/// What an instance left when its request ended while it was pending.
pub(crate) struct Orphan {
    /// The frame, as `Box::into_raw` gave it up.
    pub(crate) frame: *mut Frame,
    /// The module's dispose callback and its instance, not called yet.
    pub(crate) dispose: Option<(
        unsafe extern "C" fn(*mut std::ffi::c_void),
        *mut std::ffi::c_void,
    )>,
    /// The request's pipeline, held until the orphan is released: its
    /// factories' Terminate waits for this dispose.
    pub(crate) _owner: Option<std::sync::Arc<riis_pipeline::Pipeline>>,
}

// SAFETY: an orphan is handed from the engine's thread to the thread of the
// module's completion signal, which alone uses it (under the slot's lock,
// then by value); the module's dispose may run on any thread.
unsafe impl Send for Orphan {}

/// The object behind the `riis_context*` of a clone made with
/// `context_clone`.
pub(crate) struct ClonedContext {
    /// The child context; `None` once executed.
    pub(crate) context: RefCell<Option<Box<HttpContext>>>,
    /// The status and substatus the executed child ended with, noted when
    /// its completion reaches the module: the child wrote them into the
    /// response it shares with its parent, and its own context is gone, but
    /// IIS modules read them from the clone (a "try this URL, else fall
    /// back" module).
    pub(crate) finished: Cell<Option<(u16, u16)>>,
}

impl ClonedContext {
    /// Whether `handle` is this clone's (its address is the handle; only
    /// compared, never dereferenced).
    pub(crate) fn is(&self, handle: *mut riis_abi::riis_context) -> bool {
        ptr::eq(self, handle.cast::<ClonedContext>())
    }
}

/// The status an executed clone of the running frame ended with, for a
/// handle that is one; `None` otherwise (the handle is then resolved as
/// usual).
pub(crate) fn executed_clone_status(handle: *mut riis_abi::riis_context) -> Option<(u16, u16)> {
    let frame = running_frame()?;
    let clones = frame.clones.try_borrow().ok()?;
    clones.iter().find(|c| c.is(handle))?.finished.get()
}

/// One native module instance's view of its request.
pub(crate) struct Frame {
    pub(crate) module: Arc<ModuleShared>,
    /// The request's context, set for the duration of each call.
    pub(crate) ctx: Cell<*mut HttpContext>,
    pub(crate) arena: Arena,
    /// The `riis_context*` passed to the module, as a number (see the
    /// module's documentation).
    pub(crate) token: usize,
    /// Boxed: each clone's address is the module's handle to it and must
    /// not move when the list grows.
    #[allow(clippy::vec_box)]
    pub(crate) clones: RefCell<Vec<Box<ClonedContext>>>,
    /// An asynchronous operation (flush, read, child request, post) was
    /// started during the current call.
    pub(crate) op_started: Cell<bool>,
    /// The module's buffer for the body read in flight.
    pub(crate) read_buffer: Cell<Option<(*mut u8, usize)>>,
    pub(crate) completion: Mutex<CompletionSlot>,
    /// Whether the request's connection is open, for
    /// `connection_is_connected` from the module's own thread (set at the
    /// module's first call).
    pub(crate) connection: std::sync::OnceLock<riis_pipeline::ConnectionLiveness>,
}

/// Owns a [`Frame`] through the raw pointer its allocation was made with,
/// never through a `Box`: the live-frame table and the running-frame
/// thread-local keep that pointer, and a `Box` or `&mut Frame` taken later
/// would, under Rust's aliasing rules, invalidate it. Reads go through
/// `&Frame` (its mutable parts are cells); the arena is taken out through a
/// pointer to that field only.
pub(crate) struct FrameBox(NonNull<Frame>);

impl FrameBox {
    /// A new frame for a module (see [`Frame`]).
    pub(crate) fn new(module: Arc<ModuleShared>) -> Self {
        Frame::allocate(module)
    }

    /// Gives up ownership: the pointer is to be freed with `Box::from_raw`.
    pub(crate) fn into_raw(self) -> *mut Frame {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        raw
    }

    /// Takes the frame's arena, leaving an empty one.
    pub(crate) fn take_arena(&mut self) -> Arena {
        // SAFETY: the frame is live and owned here; the `&mut` covers the
        // arena field only, which nothing else borrows now.
        unsafe { std::mem::take(&mut (*self.0.as_ptr()).arena) }
    }
}

impl std::ops::Deref for FrameBox {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        // SAFETY: live until this owner drops it.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for FrameBox {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` in `Frame::allocate`, freed once, here.
        unsafe { free_frame(self.0.as_ptr()) };
    }
}

/// A frame's address in the live-frame table.
#[derive(Clone, Copy)]
struct LiveFrame(*const Frame);

// SAFETY: only an address here; it is dereferenced under the table's lock,
// where the frame cannot be freed (see `with_live_frame`).
unsafe impl Send for LiveFrame {}

/// The frames alive now, by token. Sharded, so the workers creating and
/// freeing frames for their requests seldom wait on one another.
static LIVE_FRAMES: [Mutex<BTreeMap<usize, LiveFrame>>; 16] =
    [const { Mutex::new(BTreeMap::new()) }; 16];

/// The next token to give out. Tokens are odd (a clone's address, the only
/// other `riis_context*`, is even) and not given twice: at one per frame a
/// 64-bit counter does not wrap (a 32-bit one may, after 2^31 frames, and
/// then skips the tokens still in use).
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(0x1001);

/// The shard of [`LIVE_FRAMES`] that holds `token`, locked.
fn live_frames(token: usize) -> std::sync::MutexGuard<'static, BTreeMap<usize, LiveFrame>> {
    LIVE_FRAMES[(token >> 1) % LIVE_FRAMES.len()]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with the frame whose context pointer is `handle`, from any
/// thread, while that frame cannot be freed (its shard stays locked: `f`
/// must not free a frame itself). `None` when no live frame has that
/// pointer: its request ended, or it never was one.
pub(crate) fn with_live_frame<R>(
    handle: *mut riis_abi::riis_context,
    f: impl FnOnce(*const Frame) -> R,
) -> Option<R> {
    let token = handle as usize;
    let live = live_frames(token);
    let frame = live.get(&token)?.0;
    let result = f(frame);
    drop(live);
    Some(result)
}

/// The frame being called on this thread, if `handle` is its context
/// pointer.
pub(crate) fn running_frame_of<'a>(handle: *mut riis_abi::riis_context) -> Option<&'a Frame> {
    running_frame().filter(|frame| frame.token == handle as usize)
}

/// Frees a frame given up with [`FrameBox::into_raw`] (or owned by a
/// `FrameBox`), unregistering it first.
///
/// # Safety
/// `frame` came from `Box::into_raw` in `Frame::allocate` and is freed once.
pub(crate) unsafe fn free_frame(frame: *mut Frame) {
    // SAFETY: live until freed below, as the caller promises.
    let token = unsafe { (*frame).token };
    live_frames(token).remove(&token);
    // SAFETY: as the caller promises.
    drop(unsafe { Box::from_raw(frame) });
}

impl Frame {
    /// A frame on the heap (its address is the module's context handle, so
    /// it must not move).
    fn allocate(module: Arc<ModuleShared>) -> FrameBox {
        let raw = Box::into_raw(Box::new(Frame {
            module,
            ctx: Cell::new(ptr::null_mut()),
            arena: Arena::default(),
            token: 0,
            clones: RefCell::new(Vec::new()),
            op_started: Cell::new(false),
            read_buffer: Cell::new(None),
            completion: Mutex::new(CompletionSlot::default()),
            connection: std::sync::OnceLock::new(),
        }));
        // The pointer stays valid for the frame's life: nothing takes a
        // `Box` or `&mut Frame` of the whole frame again (see `FrameBox`).
        loop {
            let token = NEXT_TOKEN.fetch_add(2, Ordering::Relaxed);
            let mut live = live_frames(token);
            if let std::collections::btree_map::Entry::Vacant(entry) = live.entry(token) {
                // SAFETY: the live allocation just made, not shared yet.
                unsafe { (*raw).token = token };
                entry.insert(LiveFrame(raw));
                break;
            }
        }
        // SAFETY: non-null, from `Box::into_raw`.
        FrameBox(unsafe { NonNull::new_unchecked(raw) })
    }

    /// The module's id, for module contexts.
    pub(crate) fn module_index(&self) -> ModuleIndex {
        self.module.index
    }

    /// The `riis_context*` of this frame: its token, never dereferenced.
    pub(crate) fn context_pointer(&self) -> *mut riis_abi::riis_context {
        ptr::without_provenance_mut(self.token)
    }

    pub(crate) fn lock_completion(&self) -> std::sync::MutexGuard<'_, CompletionSlot> {
        self.completion.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves a handle for an API call on the calling thread: the running
/// frame's own context, or one of its clones.
///
/// Returns the frame and the context the handle designates, or the HRESULT
/// that explains why it cannot be used now. The handle itself is only
/// compared, never dereferenced.
pub(crate) fn resolve<'a>(
    handle: *mut riis_abi::riis_context,
) -> Result<(&'a Frame, &'a mut HttpContext), riis_hresult> {
    if handle.is_null() {
        return Err(hr::E_INVALIDARG);
    }
    // Its context pointer is the engine's exclusive borrow for the call.
    let frame = running_frame().ok_or(hr::E_WRONG_THREAD)?;
    let ctx = if handle as usize == frame.token {
        frame.ctx.get()
    } else {
        // Borrowed already only while a clone is being dropped, whose
        // cleanup (module code) may call back: refused, not a panic.
        let clones = frame.clones.try_borrow().map_err(|_| hr::E_INVALID_STATE)?;
        let clone = clones
            .iter()
            .find(|c| c.is(handle))
            .ok_or(hr::E_WRONG_THREAD)?;
        let mut context = clone.context.borrow_mut();
        match context.as_mut() {
            // The child's box does not move while it stays in the clone,
            // which only this call could take or drop.
            Some(c) => &mut **c as *mut HttpContext,
            None => return Err(hr::E_INVALID_STATE),
        }
    };
    if ctx.is_null() {
        return Err(hr::E_INVALID_STATE);
    }
    // SAFETY: non-null, and valid for the call as explained above; the
    // module is single-threaded within a call, so no other reference to the
    // context is used while this one lives.
    Ok((frame, unsafe { &mut *ctx }))
}
