//! Running one request through the pipeline, without doing any I/O.
//!
//! [`RequestExecution`] is a resumable state machine. The server (or a test)
//! calls [`RequestExecution::resume`] and acts on the [`Step`] it returns:
//! send the [`Output`], read body bytes, or wait for a module's completion
//! signal, then reports the result and resumes. Nothing here blocks, so a
//! Pending request holds no thread, and the engine is tested without sockets.
//!
//! Choices the published semantics leave open (marked *inferred* in the
//! reference), made here and tested in `tests/`:
//! - FinishRequest ends the current event at once, skips its post-event and
//!   every event before LogRequest; in LogRequest and EndRequest it is Continue.
//! - The final send happens after PostEndRequest, so EndRequest modules can
//!   still change the response; LogRequest sees the final status.
//! - SendResponse runs in fully inverted order (priority and list order), and
//!   FinishRequest returned there skips the remaining SendResponse modules of
//!   that send (the send itself happens).
//! - FinishRequest returned from ReadEntity ends the body read: the module
//!   that asked for the bytes is not resumed, and the request goes on to
//!   LogRequest.
//! - A ReadEntity module that empties a read of body bytes (holding them
//!   back) does not end the body for the reader: the next bytes are read
//!   for it, and it sees an empty read only at the body's real end.
//! - Operations a module starts (flush, body read, child request, posted
//!   completion) run when its call returns. OnAsyncCompletion follows only if
//!   the module returned Pending; otherwise its status applies once the
//!   operation is done.
//! - A handler whose modules all leave the response untouched (and none calls
//!   `set_request_handled`) answers 404.
//! - Pending without an operation and without a completion handle, or with
//!   every handle dropped unsignalled, fails the request with 500.
//! - In full duplex ([`HttpContext::enable_full_duplex`]) a body read
//!   started with Pending stays under way while its module waits on its
//!   completion handle ([`Step::WaitWhileReading`]): the handle's signal,
//!   the module's flushes and the read each complete on their own, in the
//!   order they happen; a read and an asynchronous flush of one call
//!   complete flush first. Anything but Pending gives the read up.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::completion::{CompletionWaiter, ParkedChanges, Signal};
use crate::context::{AsyncOp, HttpContext, Running, SlotState};
use crate::global::{TraceEvent, TracePhase};
use crate::handler::{allowed_methods, choose_handler, needs_probe, MappingFailure};
use crate::module::{HttpModule, ModuleError};
use crate::pipeline::Pipeline;
use crate::provider::{
    CompletedOperation, CompletionInfo, ReadEntityProvider, SendFlags, SendResponseProvider,
};
use crate::registration::ModuleIndex;
use crate::response::{EntityChunk, HttpResponse, KeptHead};
use riis_notification::{
    GlobalNotification, RequestNotification as N, RequestNotificationStatus as Status,
};

const LOG_STAGE: u8 = 10;
/// LogRequest's event position (`stage * 2 + post`).
const LOG_POSITION: usize = LOG_STAGE as usize * 2;
const FINAL_SEND: u8 = 12;
const DONE: u8 = 13;
const EXECUTE_STAGE: usize = 7;

/// Runs `$walk` with the trait method of event `$stage` / post-event
/// `$post` as a closure, so each of the 24 walks is compiled with a direct
/// vtable call instead of a function pointer.
macro_rules! walk_event {
    ($stage:expr, $post:expr, |$invoke:ident| $walk:expr) => {
        match ($stage, $post) {
            (0, false) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_begin_request(c);
                $walk
            }
            (0, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_begin_request(c);
                $walk
            }
            (1, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_authenticate_request(c);
                $walk
            }
            (1, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_authenticate_request(c);
                $walk
            }
            (2, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_authorize_request(c);
                $walk
            }
            (2, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_authorize_request(c);
                $walk
            }
            (3, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_resolve_request_cache(c);
                $walk
            }
            (3, true) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_post_resolve_request_cache(c)
                };
                $walk
            }
            (4, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_map_request_handler(c);
                $walk
            }
            (4, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_map_request_handler(c);
                $walk
            }
            (5, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_acquire_request_state(c);
                $walk
            }
            (5, true) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_post_acquire_request_state(c)
                };
                $walk
            }
            (6, false) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_pre_execute_request_handler(c)
                };
                $walk
            }
            (6, true) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_post_pre_execute_request_handler(c)
                };
                $walk
            }
            (7, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_execute_request_handler(c);
                $walk
            }
            (7, true) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_post_execute_request_handler(c)
                };
                $walk
            }
            (8, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_release_request_state(c);
                $walk
            }
            (8, true) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| {
                    m.on_post_release_request_state(c)
                };
                $walk
            }
            (9, false) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_update_request_cache(c);
                $walk
            }
            (9, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_update_request_cache(c);
                $walk
            }
            (10, false) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_log_request(c);
                $walk
            }
            (10, true) => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_log_request(c);
                $walk
            }
            (11, false) => {
                let $invoke = |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_end_request(c);
                $walk
            }
            _ => {
                let $invoke =
                    |m: &mut dyn HttpModule, c: &mut HttpContext| m.on_post_end_request(c);
                $walk
            }
        }
    };
}

/// `HRESULT_FROM_WIN32(ERROR_CONNECTION_ABORTED)`: what a completion reports
/// when the client went away.
pub const E_CONNECTION_ABORTED: u32 = 0x8007_04D4;

/// `HRESULT_FROM_WIN32(ERROR_TIMEOUT)`: what a body read's completion reports
/// when the client sent the body too slowly (see
/// [`RequestExecution::expire_read`]).
pub const E_TIMEOUT: u32 = 0x8007_05B4;

/// `HRESULT_FROM_WIN32(ERROR_INVALID_DATA)`: what a body read's completion
/// reports when the client sent a body that is not valid HTTP (see
/// [`RequestExecution::reject_read`]).
pub const E_INVALID_DATA: u32 = 0x8007_000D;

/// What a request between two steps is waiting for (see
/// [`RequestExecution::activity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A module returned Pending and has not completed.
    Module,
    /// A module asked for request body bytes the client has not sent yet.
    RequestBody,
    /// A module in full duplex waits for its own news and for request body
    /// bytes at once (see [`HttpContext::enable_full_duplex`]).
    ModuleOrRequestBody,
    /// A send (a module's flush, or the final send) the client has not
    /// taken yet.
    Send,
    /// Nothing: the request is ready to run and waits for its thread.
    Nothing,
}

/// Where a request stands between two steps, for listings of the requests
/// in flight (IIS's `appcmd list requests`): the notification and module
/// of the call it waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// The notification being handled; `None` once the response's final
    /// send has begun.
    pub notification: Option<N>,
    /// Whether it is the post-event.
    pub is_post: bool,
    /// The module whose operation the request waits on, if it waits on one
    /// (see [`Pipeline::module_name`]).
    pub module: Option<ModuleIndex>,
    /// What the request waits for.
    pub waiting: Waiting,
    /// How many child requests deep the call is (0: the client's request).
    pub child_depth: u8,
    /// Response entity bytes handed to the server so far (a child's sends
    /// included: the response is shared).
    pub bytes_sent: u64,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Send [`RequestExecution::take_output`], then call
    /// [`RequestExecution::complete_send`] and resume.
    Send,
    /// Read up to `max` request body bytes, then call
    /// [`RequestExecution::complete_read`] and resume.
    ReadEntity {
        /// Most bytes wanted.
        max: usize,
    },
    /// A module returned Pending; await the waiter, then resume.
    Wait(CompletionWaiter),
    /// A module in full duplex returned Pending with a body read under way
    /// (see [`HttpContext::enable_full_duplex`]): await the waiter and read
    /// up to `max` request body bytes at the same time. Bytes first: call
    /// [`RequestExecution::complete_read`] and resume. The waiter first:
    /// resume; the read stays under way, and the next step that asks for
    /// it goes on with it (no bytes may be lost in between).
    WaitWhileReading {
        /// The module's completion.
        waiter: CompletionWaiter,
        /// Most bytes wanted.
        max: usize,
    },
    /// The pipeline has delivered [`YIELD_AFTER`] completions in a row
    /// without waiting for a module's signal or for body bytes (a module
    /// completing its own operations over and over, flushing from each
    /// flush's completion, or starting a child from each child's
    /// completion): let other work run, then resume. The request goes on;
    /// it just does not hold its thread.
    Yield,
    /// The request is complete; its module instances are disposed.
    Done,
}

/// Completions delivered in a row (across sends) before
/// [`RequestExecution::resume`] returns [`Step::Yield`].
pub const YIELD_AFTER: usize = 1024;

/// The status line and headers of a response, when they go out.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// Reason phrase a module set, if any.
    pub reason: Option<Cow<'static, str>>,
    /// Headers.
    pub headers: HeaderMap,
}

/// One send: headers (first send only), entity chunks, and whether it ends
/// the response.
#[derive(Debug)]
pub struct Output {
    /// Status and headers, on the first send unless headers are suppressed.
    pub head: Option<ResponseHead>,
    /// Entity to send now.
    pub chunks: Vec<EntityChunk>,
    /// Whether this is the final send of the response.
    pub is_final: bool,
    /// The response's trailer fields, on the final send (see
    /// [`HttpResponse::set_trailer`]).
    pub trailers: Option<Box<http::HeaderMap>>,
    /// On the final send: the calls to make once the connection is done
    /// with the response (see [`HttpContext::on_response_delivered`]).
    /// Dropped unmade, they are told the response was not sent.
    pub delivery: crate::DeliveryWatchers,
    /// A SendResponse module deferred part of the entity (see
    /// [`SendResponseProvider::defer_after`]): the next send is made from
    /// it. The server completes this send once the client has taken what
    /// was queued before it, so that a transformed entity is produced as
    /// the client takes it rather than held whole for a slow one.
    pub paced: bool,
    /// Close the connection after this response.
    pub disconnect: bool,
    /// Abort the connection instead of finishing the response.
    pub reset: bool,
    /// The request failed after its headers went out (a module panicked or
    /// failed, a wait or a body read timed out): the entity ends here,
    /// short, and the server ends the message so that the client can tell
    /// (an HTTP/1.1 chunked body without its last chunk, an HTTP/2 stream
    /// reset) rather than finishing it as if it were whole.
    pub truncated: bool,
}

impl Output {
    /// Total entity bytes in this send.
    pub fn len(&self) -> u64 {
        // Saturating: a module's absurd file-range lengths must not wrap
        // into a small Content-Length.
        self.chunks
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.len()))
    }

    /// Whether the send carries no entity.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
struct CallSite {
    module: ModuleIndex,
    notification: N,
    post: bool,
}

#[derive(Debug)]
enum Phase {
    /// Call the next module at the cursor.
    Run,
    /// Output is with the driver.
    Sending(AfterSend),
    /// A module's call returned and its flush is done: run its operation.
    AfterFlush(CallSite, Status),
    /// A body read is with the driver.
    Reading(CallSite, Status, usize),
    /// A child request runs in the frame above; the entity bytes the shared
    /// response held (buffered plus sent) when it started.
    Child(CallSite, Status, u64),
    /// Parked until the completion handle signals.
    Waiting(CallSite),
    /// Call the module's OnAsyncCompletion.
    Deliver(CallSite, CompletionInfo),
}

#[derive(Debug, Clone, Copy)]
enum AfterSend {
    Call {
        site: CallSite,
        status: Status,
        deliver: bool,
    },
    Final,
}

struct Frame {
    ctx: HttpContext,
    stage: u8,
    post: bool,
    pos: u16,
    entered: bool,
    phase: Phase,
    /// Output of this frame stays in the response (a buffered child, or any
    /// request nested in one).
    buffered: bool,
    /// A buffered frame whose output goes out past the response buffer
    /// (`ExecuteFlags::stream_past_buffer_limit`, allowed by every
    /// buffered frame it runs inside).
    spills: bool,
    /// A child's: the response's entity floor in the request it runs
    /// inside, given back when it ends (see `HttpResponse::entity_floor`).
    outer_entity_floor: usize,
    /// A child's run with `no_headers` (see [`NoHeaders`]); boxed, as
    /// most requests run no child.
    no_headers: Option<Box<NoHeaders>>,
}

/// A child run with `ExecuteFlags::no_headers`: the head of the response
/// it runs inside, put back when it ends or before a send during it, and
/// the child's own status once a send put that head back.
struct NoHeaders {
    kept: Option<KeptHead>,
    own_status: Option<(StatusCode, u16)>,
}

impl Frame {
    fn new(ctx: HttpContext, buffered: bool) -> Self {
        Self {
            ctx,
            stage: 0,
            post: false,
            pos: 0,
            entered: false,
            phase: Phase::Run,
            buffered,
            spills: false,
            outer_entity_floor: 0,
            no_headers: None,
        }
    }

    /// Moves the cursor to the first event with work at or after
    /// `position` (`stage * 2 + post`; see [`Pipeline::next_busy`]).
    fn go_to(&mut self, position: usize, next_busy: &[u8; 25]) {
        let to = next_busy[position];
        self.stage = to / 2;
        self.post = to % 2 == 1;
        self.pos = 0;
        self.entered = false;
    }

    /// Whether a body read of full duplex may stay under way while the
    /// module of `site` waits: a completion handle of its is alive to wait
    /// on, and the read's bytes are not here already (inserted, or the
    /// body's end).
    fn can_read_alongside(&self, site: CallSite) -> bool {
        let request = &self.ctx.request;
        self.has_live_handle(site)
            && request.inserted_entity.is_empty()
            && request.unread.is_empty()
            && !request.body_complete
    }

    /// Whether a completion handle of the module of `site` is alive.
    fn has_live_handle(&self, site: CallSite) -> bool {
        self.ctx.slots[site.module.get()]
            .completion
            .as_ref()
            .is_some_and(|state| state.has_handles())
    }

    /// Moves past the current event.
    fn advance(&mut self, next_busy: &[u8; 25]) {
        let here = self.stage as usize * 2 + self.post as usize;
        self.go_to(here + 1, next_busy);
    }
}

/// Why a request whose client went away ended.
const CLIENT_GONE: &str =
    "the client went away (its connection or stream closed) while a module was at work";

/// One request's run through the pipeline.
pub struct RequestExecution {
    pipeline: Arc<Pipeline>,
    /// The client's request, then its child requests, innermost last; child
    /// frames are rare, so the root lives inline and costs no allocation.
    frames: Frames,
    output: Option<Output>,
    /// What SendResponse modules deferred from the final send: the list
    /// position of the module and the rest of its entity, the last pushed
    /// sent first (it comes before what the modules before it produce
    /// next).
    deferred: Vec<(usize, Vec<EntityChunk>)>,
    /// Completions delivered since the request last waited for a module's
    /// signal or for body bytes. Sends do not reset it: a send may complete
    /// at once (nothing to send, nobody to send it to), and a module that
    /// flushes from each flush's completion must still yield.
    unbroken: usize,
}

struct Frames {
    root: Frame,
    children: Vec<Frame>,
}

impl Frames {
    fn len(&self) -> usize {
        1 + self.children.len()
    }

    fn push(&mut self, frame: Frame) {
        self.children.push(frame);
    }

    fn pop(&mut self) -> Option<Frame> {
        self.children.pop()
    }

    fn last_mut(&mut self) -> &mut Frame {
        self.children.last_mut().unwrap_or(&mut self.root)
    }

    fn last(&self) -> &Frame {
        self.children.last().unwrap_or(&self.root)
    }

    /// Frames `below` and `above` (`below < above`) at once.
    fn pair_mut(&mut self, below: usize, above: usize) -> (&mut Frame, &mut Frame) {
        if below == 0 {
            (&mut self.root, &mut self.children[above - 1])
        } else {
            let (lower, upper) = self.children.split_at_mut(above - 1);
            (&mut lower[below - 1], &mut upper[0])
        }
    }
}

impl std::ops::Index<usize> for Frames {
    type Output = Frame;
    fn index(&self, i: usize) -> &Frame {
        if i == 0 {
            &self.root
        } else {
            &self.children[i - 1]
        }
    }
}

impl std::ops::IndexMut<usize> for Frames {
    fn index_mut(&mut self, i: usize) -> &mut Frame {
        if i == 0 {
            &mut self.root
        } else {
            &mut self.children[i - 1]
        }
    }
}

impl std::fmt::Debug for RequestExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestExecution")
            .field("depth", &self.frames.len())
            .finish()
    }
}

impl RequestExecution {
    /// Starts a request's execution; nothing runs until the first resume.
    pub fn new(ctx: HttpContext) -> Self {
        let pipeline = ctx.pipeline.clone();
        Self {
            pipeline,
            frames: Frames {
                root: Frame::new(ctx, false),
                children: Vec::new(),
            },
            output: None,
            deferred: Vec::new(),
            unbroken: 0,
        }
    }

    /// Where the request stands: read between steps, while the driver
    /// awaits what the last [`Step`] asked for.
    pub fn activity(&self) -> Activity {
        let top = self.frames.len() - 1;
        let frame = &self.frames[top];
        let (site, waiting) = match frame.phase {
            Phase::Waiting(site) if frame.ctx.duplex_read.is_some() => {
                (Some(site), Waiting::ModuleOrRequestBody)
            }
            Phase::Waiting(site) => (Some(site), Waiting::Module),
            Phase::Reading(site, ..) => (Some(site), Waiting::RequestBody),
            Phase::Sending(AfterSend::Call { site, .. }) => (Some(site), Waiting::Send),
            Phase::Sending(AfterSend::Final) => (None, Waiting::Send),
            Phase::AfterFlush(site, _) | Phase::Deliver(site, _) | Phase::Child(site, ..) => {
                (Some(site), Waiting::Nothing)
            }
            Phase::Run => (None, Waiting::Nothing),
        };
        let at_stage = || {
            N::DETERMINISTIC
                .get(frame.stage as usize)
                .map(|&n| (n, frame.post))
        };
        let (notification, is_post) = match site {
            Some(site) => (Some(site.notification), site.post),
            // Between calls (or sending finally): the event it is at.
            None if waiting == Waiting::Send => (None, false),
            None => at_stage().map_or((None, false), |(n, post)| (Some(n), post)),
        };
        Activity {
            notification,
            is_post,
            module: site.map(|site| site.module),
            waiting,
            child_depth: u8::try_from(top).unwrap_or(u8::MAX),
            // The top frame holds the shared response while a child runs.
            bytes_sent: frame.ctx.response.bytes_sent,
        }
    }

    /// The client request's context (the outermost frame).
    pub fn context(&self) -> &HttpContext {
        &self.frames[0].ctx
    }

    /// The client request's context, mutable (for the driver, between steps).
    pub fn context_mut(&mut self) -> &mut HttpContext {
        &mut self.frames[0].ctx
    }

    /// The client's connection switched protocols with the head the last
    /// [`Step::Send`] carried (a 101): the module that sent it finds
    /// `stream` through [`HttpContext::take_upgraded_stream`] once the send
    /// completes. For servers, before [`Self::complete_send`].
    pub fn set_upgraded_stream(&mut self, stream: crate::UpgradedStream) {
        self.frames[0].ctx.upgraded = Some(stream);
    }

    /// The output of the last [`Step::Send`].
    pub fn take_output(&mut self) -> Option<Output> {
        self.output.take()
    }

    /// Reports how the last send went: bytes sent, or `Err` when the client
    /// is gone (later sends are then dropped by the driver).
    pub fn complete_send(&mut self, result: Result<u64, ()>) {
        let frame = self.frames.last_mut();
        let Phase::Sending(after) = frame.phase else {
            return;
        };
        let (bytes, status) = match result {
            Ok(n) => (n, 0),
            Err(()) => {
                // Nobody takes the rest.
                drop_deferred(&mut self.deferred);
                self.note_client_gone();
                (0, E_CONNECTION_ABORTED)
            }
        };
        let frame = self.frames.last_mut();
        frame.ctx.response.bytes_sent = frame.ctx.response.bytes_sent.saturating_add(bytes);
        frame.phase = match after {
            AfterSend::Call {
                site,
                status: st,
                deliver: true,
            } => {
                let _ = st;
                Phase::Deliver(
                    site,
                    CompletionInfo {
                        bytes,
                        status,
                        operation: CompletedOperation::Write,
                    },
                )
            }
            AfterSend::Call {
                site, status: st, ..
            } => Phase::AfterFlush(site, st),
            AfterSend::Final => Phase::Run,
        };
    }

    /// Reports a body read: the bytes (empty at the end of the body), or `Err`
    /// when the client is gone.
    pub fn complete_read(&mut self, result: Result<Bytes, ()>) {
        let top = self.frames.len() - 1;
        let (site, status, max) = match self.frames[top].phase {
            Phase::Reading(site, status, max) => (site, status, max),
            // A read of full duplex: its module was Pending.
            Phase::Waiting(site) => match self.frames[top].ctx.duplex_read.take() {
                Some(max) => (site, Status::Pending, max.get()),
                None => return,
            },
            _ => return,
        };
        let (data, hresult) = match result {
            Ok(d) => (d, 0),
            Err(()) => {
                self.note_client_gone();
                (Bytes::new(), E_CONNECTION_ABORTED)
            }
        };
        self.frames[top].ctx.request.client_bytes_read += data.len() as u64;
        if self.finish_read(top, site, status, data, hresult, true) {
            // A ReadEntity module took every byte of this read (a filter
            // holding them back): the reader would take an empty read for
            // the end of the body, so the next bytes are read for it. The
            // read starts over as from the module's call, so bytes that
            // module inserted or gave back meanwhile come first.
            let frame = &mut self.frames[top];
            frame.ctx.op = Some(AsyncOp::ReadEntity { max });
            frame.phase = Phase::AfterFlush(site, status);
        }
    }

    /// Ends a body read the client is too slow to feed (the server's body
    /// timeouts): the response becomes 408 Request Timeout unless its
    /// headers are out, the connection closes after it either way (the rest
    /// of the body is never read), and the module that asked for the bytes
    /// gets its completion with no bytes and [`E_TIMEOUT`], as a failed
    /// asynchronous read completes in IIS. Returns false when no read is in
    /// progress (then nothing changes).
    pub fn expire_read(&mut self, description: &str) -> bool {
        self.fail_read(
            http::StatusCode::REQUEST_TIMEOUT,
            "Request Timeout",
            E_TIMEOUT,
            description,
        )
    }

    /// Ends a body read whose bytes are not valid HTTP (a malformed chunked
    /// body): as [`RequestExecution::expire_read`], with 400 Bad Request and
    /// [`E_INVALID_DATA`].
    pub fn reject_read(&mut self, description: &str) -> bool {
        self.fail_read(
            http::StatusCode::BAD_REQUEST,
            "Bad Request",
            E_INVALID_DATA,
            description,
        )
    }

    fn fail_read(
        &mut self,
        status_code: http::StatusCode,
        reason: &'static str,
        hresult: u32,
        description: &str,
    ) -> bool {
        let top = self.frames.len() - 1;
        let frame = &mut self.frames[top];
        let (site, status) = match frame.phase {
            Phase::Reading(site, status, _) => (site, status),
            Phase::Waiting(site) if frame.ctx.duplex_read.take().is_some() => {
                (site, Status::Pending)
            }
            _ => return false,
        };
        let name = self.pipeline.module_name(site.module);
        tracing::info!(module = %name, notification = %site.notification, "{description}; the request ends with {}", status_code.as_u16());
        // An HTTP/1.x connection cannot go on past a body it did not read
        // to its end; an HTTP/2 stream's unread body ends with its stream,
        // and the connection's other streams go on.
        let http1 = self.frames[top].ctx.request.http_version() < http::Version::HTTP_2;
        let response = &mut self.frames[top].ctx.response;
        response.current = (Some(site.module), site.notification.name());
        if response.headers_sent {
            response.cut_short();
        } else {
            response.need_disconnect = http1;
            response.clear();
            response.set_error_status(status_code, reason, 0, hresult);
            response.set_error_description(description.to_owned());
        }
        self.finish_read(top, site, status, Bytes::new(), hresult, true);
        true
    }

    /// Delivers a read's `data` through the ReadEntity modules (unless
    /// `filter` is false: bytes a reader gave back) to the reader; returns
    /// true, delivering nothing, when the modules emptied bytes that were
    /// not the end of the body (the read is to be made again).
    fn finish_read(
        &mut self,
        top: usize,
        site: CallSite,
        status: Status,
        data: Bytes,
        hresult: u32,
        filter: bool,
    ) -> bool {
        let ctx = &mut self.frames[top].ctx;
        let read_something = !data.is_empty();
        if data.is_empty() {
            ctx.request.body_complete = true;
        }
        let mut provider = ReadEntityProvider { entity: data };
        if filter && !provider.entity.is_empty() {
            let status = ctx.call_nested_list(
                |p| &p.read_entity,
                N::ReadEntity,
                true,
                0,
                |module, ctx, _| module.on_read_entity(ctx, &mut provider),
            );
            if status == Some(Status::FinishRequest) {
                // A ReadEntity module refused the body (a size limit, a
                // filter): the reader is not resumed and the request goes on
                // to LogRequest with the status that module set.
                ctx.finish_requested = true;
                ctx.response.attention = true;
            }
        }
        let data = provider.entity;
        if read_something && data.is_empty() && !ctx.finish_requested {
            return true;
        }
        let bytes = data.len() as u64;
        ctx.request.bytes_received += bytes;
        ctx.request.end_delivered = bytes == 0;
        ctx.request.read_data = data;
        if std::mem::take(&mut ctx.finish_requested) {
            // A ReadEntity module failed: the reader is not resumed.
            self.frames[top].phase = Phase::Run;
            self.apply(top, site, Status::FinishRequest);
            return false;
        }
        self.frames[top].phase = if status == Status::Pending {
            Phase::Deliver(
                site,
                CompletionInfo {
                    bytes,
                    status: hresult,
                    operation: CompletedOperation::Read,
                },
            )
        } else {
            self.apply(top, site, status);
            Phase::Run
        };
        false
    }

    /// Runs the pipeline until it needs the driver.
    pub fn resume(&mut self) -> Step {
        let step = self.run();
        if matches!(
            step,
            Step::Wait(_) | Step::WaitWhileReading { .. } | Step::ReadEntity { .. }
        ) {
            self.unbroken = 0;
        }
        step
    }

    /// [`Self::resume`], but for the count of deliveries in a row.
    fn run(&mut self) -> Step {
        loop {
            let top = self.frames.len() - 1;
            match std::mem::replace(&mut self.frames[top].phase, Phase::Run) {
                Phase::Run => {}
                Phase::Sending(after) => {
                    self.frames[top].phase = Phase::Sending(after);
                    return Step::Send;
                }
                Phase::Reading(site, status, max) => {
                    self.frames[top].phase = Phase::Reading(site, status, max);
                    return Step::ReadEntity { max };
                }
                Phase::AfterFlush(site, status) => {
                    if let Some(step) = self.after_flush(top, site, status) {
                        return step;
                    }
                    continue;
                }
                Phase::Deliver(site, info) => {
                    self.unbroken += 1;
                    if self.unbroken > YIELD_AFTER {
                        self.unbroken = 0;
                        self.frames[top].phase = Phase::Deliver(site, info);
                        return Step::Yield;
                    }
                    let status = self.call(top, site, Some(info));
                    if let Some(step) = self.after_call(top, site, status) {
                        return step;
                    }
                    continue;
                }
                Phase::Waiting(site) => {
                    let state = self.frames[top].ctx.slots[site.module.get()]
                        .completion
                        .clone()
                        .expect("a waiting module has a completion state");
                    match state.take() {
                        None => {
                            let frame = &mut self.frames[top];
                            frame.phase = Phase::Waiting(site);
                            let waiter = CompletionWaiter { state };
                            return match frame.ctx.duplex_read {
                                Some(max) => Step::WaitWhileReading {
                                    waiter,
                                    max: max.get(),
                                },
                                None => Step::Wait(waiter),
                            };
                        }
                        Some((Signal::Indicate(status), changes)) => {
                            let status = if self.make_parked_changes(top, &site, changes) {
                                status
                            } else {
                                Status::FinishRequest
                            };
                            self.apply(top, site, status)
                        }
                        Some((Signal::Post(bytes), changes)) => {
                            if self.make_parked_changes(top, &site, changes) {
                                self.frames[top].phase =
                                    Phase::Deliver(site, CompletionInfo::posted(bytes));
                            } else {
                                self.apply(top, site, Status::FinishRequest);
                            }
                        }
                        Some((Signal::Abandoned, _)) => {
                            let frame = &mut self.frames[top];
                            match frame.ctx.duplex_read.take() {
                                // Full duplex: nothing but the read is left
                                // to complete the wait.
                                Some(max) => {
                                    frame.phase = Phase::Reading(site, Status::Pending, max.get());
                                }
                                None => self.fail_pending(
                                    top,
                                    site,
                                    "dropped every completion handle without signalling",
                                ),
                            }
                        }
                    }
                    continue;
                }
                Phase::Child(..) => unreachable!("a frame with a running child is never on top"),
            }

            let frame = &mut self.frames[top];
            if frame.stage == FINAL_SEND {
                // Reached straight from BeginRequest (FinishRequest, no later
                // event with work): the URL is fixed from here on too.
                frame.ctx.start_pipeline();
                frame.stage = DONE;
                if self.send(top, true, false) {
                    self.frames[top].phase = Phase::Sending(AfterSend::Final);
                    return Step::Send;
                }
                continue;
            }
            if frame.stage == DONE {
                if top == 0 && !self.deferred.is_empty() {
                    self.send_deferred();
                    self.frames[0].phase = Phase::Sending(AfterSend::Final);
                    return Step::Send;
                }
                if top == 0 {
                    // Clean up and dispose now: the request has ended.
                    frame.ctx.end_request();
                    return Step::Done;
                }
                self.finish_child();
                continue;
            }
            if !frame.entered {
                frame.entered = true;
                self.enter(top);
                // `enter` may have moved the request on (an error in
                // PreBeginRequest goes to LogRequest, or past the last
                // event when nothing is registered there): start over from
                // where it is now.
                if !self.frames[top].entered {
                    continue;
                }
            }
            let (stage, post, pos) = {
                let f = &self.frames[top];
                (f.stage as usize, f.post, f.pos as usize)
            };
            let notification = N::DETERMINISTIC[stage];
            if (stage != EXECUTE_STAGE || post) && !self.pipeline.tracing {
                // Most events of most requests have no module (left) to
                // call: end them without setting up a walk.
                if pos >= self.pipeline.events[stage][post as usize].len() {
                    self.end_of_event(top);
                    continue;
                }
                if let Some(step) = self.run_event_list(top, stage, post) {
                    return step;
                }
                continue;
            }
            let Some(module) = self.module_at(top, stage, post, pos) else {
                self.end_of_event(top);
                continue;
            };
            self.frames[top].pos += 1;
            let site = CallSite {
                module,
                notification,
                post,
            };
            let status = self.call(top, site, None);
            if let Some(step) = self.after_call(top, site, status) {
                return step;
            }
        }
    }

    /// The hot loop: calls the modules of a deterministic event's list, from
    /// the cursor on, while they return Continue and start nothing. One
    /// panic guard covers the whole walk (a panic costs nothing until it
    /// happens, and the module that panicked is the one at the cursor), and
    /// the trait method is chosen once per event, not per call. Anything but
    /// a plain Continue leaves the loop for [`RequestExecution::after_call`].
    fn run_event_list(&mut self, top: usize, stage: usize, post: bool) -> Option<Step> {
        let pipeline = &*self.pipeline;
        let list = &pipeline.events[stage][post as usize];
        let notification = N::DETERMINISTIC[stage];
        let frame = &mut self.frames[top];
        if stage == 1 && frame.ctx.skip_authentication {
            self.end_of_event(top);
            return None;
        }
        let walk = walk_event!(stage, post, |invoke| walk_list(
            frame,
            list,
            notification,
            post,
            invoke
        ));
        let stopped = match walk {
            Ok(stopped) => stopped,
            Err(panic) => {
                // The instance was dropped while unwinding; the module at the
                // cursor is the one that panicked.
                let module = list[frame.pos as usize - 1];
                let ctx = &mut frame.ctx;
                ctx.current.clear_module();
                ctx.op = None;
                ctx.response.flush = None;
                ctx.module_panicked(module, notification, post, false, &*panic);
                let site = CallSite {
                    module,
                    notification,
                    post,
                };
                Some((site, Status::FinishRequest))
            }
        };
        match stopped {
            Some((site, status)) => self.after_call(top, site, status),
            None => {
                self.end_of_event(top);
                None
            }
        }
    }

    /// The module at `pos` of the current event's list, if any.
    fn module_at(&self, top: usize, stage: usize, post: bool, pos: usize) -> Option<ModuleIndex> {
        let ctx = &self.frames[top].ctx;
        if stage == EXECUTE_STAGE && !post {
            if ctx.request_handled {
                return None;
            }
            let h = ctx.handler?;
            return ctx.location().handlers[h].modules.get(pos).copied();
        }
        if stage == 1 && ctx.skip_authentication {
            return None;
        }
        self.pipeline.events[stage][post as usize].get(pos).copied()
    }

    /// Work the engine does when an event starts, before its modules.
    fn enter(&mut self, top: usize) {
        let frame = &mut self.frames[top];
        let ctx = &mut frame.ctx;
        // After BeginRequest's modules the URL is fixed: one rewritten in
        // BeginRequest is taken in here, once (during BeginRequest the
        // location follows it on the fly, see `HttpContext::location`).
        if (frame.stage, frame.post) != (0, false) {
            ctx.start_pipeline();
        }
        match (frame.stage, frame.post) {
            (0, false)
                if top == 0
                    && self
                        .pipeline
                        .has_global_listeners(GlobalNotification::PreBeginRequest) =>
            {
                let pipeline = self.pipeline.clone();
                let panicked = pipeline.raise_global(GlobalNotification::PreBeginRequest, |m| {
                    m.on_global_pre_begin_request(ctx)
                });
                if let Some(module) = panicked {
                    ctx.fail_request(
                        Some(module),
                        "PreBeginRequest",
                        crate::module::ModuleError::E_FAIL,
                        &format!(
                            "global module {} panicked in PreBeginRequest",
                            pipeline.module_name(module)
                        ),
                    );
                    ctx.start_pipeline();
                    frame.go_to(LOG_POSITION, &self.pipeline.next_busy);
                    return;
                }
                // A global module gets no completion: an operation it
                // started would complete into the first BeginRequest
                // module's call instead.
                let op = ctx.op.take();
                let flush = ctx.response.flush.take();
                if op.is_some() || flush.is_some() {
                    tracing::warn!(
                        "an asynchronous operation or flush started in PreBeginRequest is ignored"
                    );
                }
                // A global module that set an error status (`set_error_status`:
                // it refused the request, or it failed, as httpserv.h
                // reports a C++ exception) ends the request here, as a
                // panic does: BeginRequest's modules would otherwise serve
                // it as if nothing happened.
                if ctx.response.error.is_some() {
                    ctx.start_pipeline();
                    frame.go_to(LOG_POSITION, &self.pipeline.next_busy);
                    return;
                }
                // A PreBeginRequest module may have rewritten the URL.
                ctx.sync_url();
            }
            (4, false) => {
                ctx.mapped = true;
                let location = ctx.location();
                let (handlers, splits_paths) = (location.handlers.clone(), location.splits_paths);
                let chosen = if splits_paths {
                    // Each script a URL may name is probed in turn, which
                    // changes the context: the choice works on copies.
                    let url = ctx.request.url().to_owned();
                    let method = ctx.request.method().clone();
                    let chosen = choose_handler(&handlers, &url, &method, |script_end| {
                        ctx.probe_script(script_end)
                    });
                    ctx.set_script_end(chosen.ok().and_then(|c| c.script_end));
                    chosen
                } else {
                    // Probe the path first if a candidate will need it, so
                    // the choice itself only borrows the request.
                    let kind = needs_probe(&handlers, ctx.request.url(), ctx.request.method())
                        .then(|| ctx.resource_kind())
                        .flatten();
                    choose_handler(&handlers, ctx.request.url(), ctx.request.method(), |_| kind)
                };
                match chosen {
                    Ok(c) => ctx.handler = Some(c.index),
                    Err(f) => ctx.mapping_failure = Some(f),
                }
                if std::mem::take(&mut ctx.finish_requested) {
                    // A MapPath module failed while the handler was chosen.
                    frame.go_to(LOG_POSITION, &self.pipeline.next_busy);
                }
            }
            (7, false) => {
                // Only what the handler does counts for "answered nothing".
                ctx.response.touched = false;
                if let Some(failure) = ctx.mapping_failure {
                    ctx.handler = None;
                    // Not found, or there but not ours to read.
                    let denied =
                        failure == MappingFailure::ResourceNotFound && ctx.is_resource_denied();
                    let resp = &mut ctx.response;
                    resp.current = (None, "MapRequestHandler");
                    match failure {
                        MappingFailure::NoHandler => resp.set_error_status(
                            StatusCode::NOT_FOUND,
                            "Not Found",
                            4,
                            ModuleError::E_NOT_SUPPORTED,
                        ),
                        MappingFailure::VerbNotAllowed => {
                            resp.set_error_status(
                                StatusCode::METHOD_NOT_ALLOWED,
                                "Method Not Allowed",
                                0,
                                ModuleError::E_NOT_SUPPORTED,
                            );
                            let handlers = &ctx.site.location(ctx.location).handlers;
                            if let Some(allow) = allowed_methods(handlers, ctx.request.url()) {
                                if let Ok(v) = http::HeaderValue::try_from(allow) {
                                    ctx.response.headers.insert(http::header::ALLOW, v);
                                }
                            }
                        }
                        MappingFailure::ResourceNotFound if denied => resp.set_error_status(
                            StatusCode::FORBIDDEN,
                            "Forbidden",
                            0,
                            0x8007_0005,
                        ),
                        MappingFailure::ResourceNotFound => resp.set_error_status(
                            StatusCode::NOT_FOUND,
                            "Not Found",
                            0,
                            0x8007_0002,
                        ),
                    }
                }
            }
            _ => {}
        }
    }

    fn end_of_event(&mut self, top: usize) {
        let frame = &mut self.frames[top];
        if frame.stage as usize == EXECUTE_STAGE
            && !frame.post
            && frame.ctx.handler.is_some()
            && !frame.ctx.request_handled
            && !frame.ctx.response.touched
        {
            // The handler's modules all passed: nothing answers this URL.
            let resp = &mut frame.ctx.response;
            resp.current = (None, "ExecuteRequestHandler");
            resp.set_error_status(StatusCode::NOT_FOUND, "Not Found", 0, 0x8007_0002);
        }
        frame.advance(&self.pipeline.next_busy);
    }

    /// [`call_module`] for the frame `top`.
    fn call(&mut self, top: usize, site: CallSite, completion: Option<CompletionInfo>) -> Status {
        call_module(&self.pipeline, &mut self.frames[top].ctx, site, completion)
    }

    /// Acts on what a module call left behind: a flush, then an operation,
    /// then its status.
    fn after_call(&mut self, top: usize, site: CallSite, status: Status) -> Option<Step> {
        let limit = self.pipeline.settings.response_buffer_limit;
        let frame = &mut self.frames[top];
        // Each field the flag stands for is looked at below.
        frame.ctx.response.attention = false;
        if std::mem::take(&mut frame.ctx.finish_requested) {
            // A module failed in a notification this call raised: the
            // response is already the 500; nothing the call started runs.
            frame.ctx.op = None;
            frame.ctx.response.flush = None;
            self.apply(top, site, Status::FinishRequest);
            return None;
        }
        // `write` asks for this itself; an entity replaced whole with
        // `set_entity_chunks` is caught here.
        let resp = &mut frame.ctx.response;
        if resp.flush.is_none() && resp.buffered_memory > limit {
            resp.flush = Some(crate::response::FlushOptions {
                asynchronous: false,
                more_data: true,
            });
        }
        if let Some(flush) = resp.flush.take() {
            // An operation started after an asynchronous flush (the flush
            // cannot refuse) has the completion: the flush is then done
            // synchronously, first. In full duplex a body read is the
            // exception: it goes on under way, and the flush completes
            // first.
            let mut deliver = flush.asynchronous && status == Status::Pending;
            if deliver {
                if let Some(AsyncOp::ReadEntity { max }) = frame.ctx.op {
                    if frame.ctx.full_duplex && frame.has_live_handle(site) {
                        frame.ctx.op = None;
                        frame.ctx.duplex_read = std::num::NonZeroUsize::new(max);
                    }
                }
                deliver = frame.ctx.op.is_none();
            }
            if self.send(top, false, flush.more_data) {
                self.frames[top].phase = Phase::Sending(AfterSend::Call {
                    site,
                    status,
                    deliver,
                });
                return Some(Step::Send);
            }
            if deliver {
                self.frames[top].phase = Phase::Deliver(
                    site,
                    CompletionInfo {
                        operation: CompletedOperation::Write,
                        ..CompletionInfo::default()
                    },
                );
                return None;
            }
        }
        self.after_flush(top, site, status)
    }

    fn after_flush(&mut self, top: usize, site: CallSite, status: Status) -> Option<Step> {
        let frame = &mut self.frames[top];
        if std::mem::take(&mut frame.ctx.finish_requested) {
            // The flush's SendResponse failed the request: as after a failed
            // nested notification, nothing the call started runs.
            frame.ctx.op = None;
            self.apply(top, site, Status::FinishRequest);
            return None;
        }
        let mut op = frame.ctx.op.take();
        if let (None, Status::Pending, Some(max)) = (&op, status, frame.ctx.duplex_read) {
            // A read of full duplex that cannot stay under way while its
            // module waits: it has no completion handle (the read is all it
            // waits for), or the read's bytes are here already.
            if !frame.can_read_alongside(site) {
                frame.ctx.duplex_read = None;
                op = Some(AsyncOp::ReadEntity { max: max.get() });
            }
        }
        if let Some(op) = op {
            match op {
                AsyncOp::ReadEntity { max }
                    if status == Status::Pending
                        && frame.ctx.full_duplex
                        && frame.can_read_alongside(site) =>
                {
                    // Full duplex: the read stays under way while the
                    // module waits for its other news.
                    frame.ctx.duplex_read = std::num::NonZeroUsize::new(max);
                    frame.phase = Phase::Waiting(site);
                    return None;
                }
                // A loop, not a call of this function again: a ReadEntity
                // module that holds every piece back would otherwise nest
                // one call per piece of an inserted body, and a large one
                // would overflow the stack.
                AsyncOp::ReadEntity { max } => {
                    let mut pieces = 0usize;
                    loop {
                        pieces += 1;
                        if pieces > YIELD_AFTER {
                            // A module that holds pieces back by inserting them
                            // again would keep this loop going for ever: the
                            // driver gets its turn, and the read goes on after.
                            let frame = &mut self.frames[top];
                            frame.ctx.op = Some(AsyncOp::ReadEntity { max });
                            frame.phase = Phase::AfterFlush(site, status);
                            return Some(Step::Yield);
                        }
                        let frame = &mut self.frames[top];
                        let req = &mut frame.ctx.request;
                        if !req.unread.is_empty() {
                            // Given back by the last reader: filtered already.
                            let mut data = std::mem::take(&mut req.unread);
                            if data.len() > max {
                                req.unread = data.split_off(max);
                            }
                            self.finish_read(top, site, status, data, 0, false);
                            return None;
                        }
                        if let Some(mut data) = req.inserted_entity.pop_front() {
                            if data.len() > max {
                                let rest = data.split_off(max);
                                req.inserted_entity.push_front(rest);
                            }
                            if !self.finish_read(top, site, status, data, 0, true) {
                                return None;
                            }
                            // Emptied by a ReadEntity module: read on, unless
                            // that module failed the request.
                            let ctx = &mut self.frames[top].ctx;
                            if std::mem::take(&mut ctx.finish_requested) {
                                ctx.op = None;
                                self.apply(top, site, Status::FinishRequest);
                                return None;
                            }
                            continue;
                        }
                        if req.body_complete {
                            self.finish_read(top, site, status, Bytes::new(), 0, true);
                            return None;
                        }
                        frame.phase = Phase::Reading(site, status, max);
                        return Some(Step::ReadEntity { max });
                    }
                }
                AsyncOp::Child { mut child, .. } => {
                    let resp = &frame.ctx.response;
                    let before = resp.total_buffered_len() + resp.bytes_sent;
                    frame.phase = Phase::Child(site, status, before);
                    child.response =
                        std::mem::replace(&mut frame.ctx.response, HttpResponse::new());
                    // What the parent wrote and did not send is the page the
                    // child's output goes into, not the child's to clear.
                    let outer_entity_floor = std::mem::replace(
                        &mut child.response.entity_floor,
                        child.response.chunks.len(),
                    );
                    let buffered = frame.buffered || child.execute_flags.buffer_response;
                    let flags = child.execute_flags;
                    let spills = buffered
                        && (!flags.buffer_response || flags.stream_past_buffer_limit)
                        && (!frame.buffered || frame.spills);
                    let no_headers = (child.execute_flags.no_headers
                        && !child.response.headers_sent)
                        .then(|| {
                            Box::new(NoHeaders {
                                kept: Some(child.response.keep_head()),
                                own_status: None,
                            })
                        });
                    let mut child = Frame::new(*child, buffered);
                    child.spills = spills;
                    child.outer_entity_floor = outer_entity_floor;
                    child.no_headers = no_headers;
                    self.frames.push(child);
                    return None;
                }
                AsyncOp::PostCompletion { bytes } => {
                    if status == Status::Pending {
                        frame.phase = Phase::Deliver(site, CompletionInfo::posted(bytes));
                        return None;
                    }
                    tracing::warn!(
                        module = %self.pipeline.module_name(site.module),
                        "post_completion without returning Pending is ignored"
                    );
                }
            }
        }
        if status == Status::Pending {
            let frame = &mut self.frames[top];
            if frame.ctx.slots[site.module.get()].completion.is_some() {
                frame.phase = Phase::Waiting(site);
            } else {
                self.fail_pending(top, site, "returned Pending without starting an asynchronous operation or taking a completion handle");
            }
            return None;
        }
        self.apply(top, site, status);
        None
    }

    /// Whether `timeouts.execution` applies to the request's current wait:
    /// not when a module said it keeps its own
    /// ([`HttpContext::set_own_timeout`]).
    pub fn wait_has_execution_limit(&self) -> bool {
        let frame = &self.frames[self.frames.len() - 1];
        match frame.phase {
            Phase::Waiting(site) => site.module.0 != frame.ctx.own_timeout,
            _ => true,
        }
    }

    /// Gives up waiting for the module whose Pending parked the request
    /// (the server's execution limit): the response becomes 503 (or, if its
    /// headers are out, the connection closes after it), and the request
    /// goes on to LogRequest and EndRequest as after FinishRequest. The
    /// module is not called again for this wait; a completion it signals
    /// later is ignored. Returns false when the request is not waiting on a
    /// module (then nothing changes).
    pub fn expire_wait(&mut self, description: &str) -> bool {
        self.end_wait(description, false)
    }

    /// Whether the client's response has gone out whole by its declared
    /// length: its head went with a `Content-Length` and that many body
    /// bytes were sent. The connection then takes nothing more of it (hyper
    /// lets go of the body), while its module may still be finishing: that
    /// is no sign that the client left.
    ///
    /// The client's response is the running frame's: a child request
    /// (DefaultDocument's) holds it while it runs.
    pub fn response_sent_whole(&self) -> bool {
        let response = &self.frames.last().ctx.response;
        response.headers_sent
            && response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .is_some_and(|length| response.bytes_sent >= length)
    }

    /// [`Self::expire_wait`] for a request whose client went away (its
    /// connection, or its HTTP/2 stream, closed): nobody reads the answer.
    /// Logged at debug level, as nginx logs a client that closed its
    /// connection early at info: clients leave all the time.
    pub fn abandon_wait(&mut self) -> bool {
        self.note_client_gone();
        self.end_wait(CLIENT_GONE, true)
    }

    /// [`Self::expire_busy`] for a request whose client went away.
    pub fn abandon_busy(&mut self) -> bool {
        self.note_client_gone();
        self.end_busy(CLIENT_GONE, true)
    }

    /// The client left: [`HttpContext::is_client_connected`] says so from
    /// now on, in the request and every child under way, and so do the
    /// completion handles their modules hold.
    fn note_client_gone(&mut self) {
        let frames = std::iter::once(&mut self.frames.root).chain(&mut self.frames.children);
        for frame in frames {
            frame.ctx.client_gone = true;
            for slot in &frame.ctx.slots {
                if let Some(state) = &slot.completion {
                    state.detach();
                }
            }
        }
    }

    /// [`Self::expire_wait`] and [`Self::abandon_wait`].
    fn end_wait(&mut self, description: &str, quiet: bool) -> bool {
        let top = self.frames.len() - 1;
        let Phase::Waiting(site) = self.frames[top].phase else {
            return false;
        };
        self.frames[top].phase = Phase::Run;
        self.expire(top, site, description, quiet);
        true
    }

    /// [`Self::expire_busy`] and [`Self::abandon_busy`].
    fn end_busy(&mut self, description: &str, quiet: bool) -> bool {
        let top = self.frames.len() - 1;
        let Phase::Deliver(site, _) = self.frames[top].phase else {
            return false;
        };
        self.frames[top].phase = Phase::Run;
        self.expire(top, site, description, quiet);
        true
    }

    /// Ends a request that returned [`Step::Yield`] because a module keeps
    /// completing its own operations (posting a completion from each
    /// completion) and never waits: the same as [`Self::expire_wait`], for
    /// the driver to call when that has gone on past the execution limit
    /// or the client left. Without it such a request would run for as long
    /// as the module liked, shutdown included. `false` when the request is
    /// not at such a completion.
    pub fn expire_busy(&mut self, description: &str) -> bool {
        self.end_busy(description, false)
    }

    /// The end of [`Self::expire_wait`] and the others: 503 (or a response
    /// cut short), FinishRequest for the module's call. `quiet`: logged at
    /// debug level.
    fn expire(&mut self, top: usize, site: CallSite, description: &str, quiet: bool) {
        // The expired wait's handles stay with its module. Detached from the
        // request, what they signal later cannot resume a later wait of the
        // same module, and their being alive does not let its next Pending
        // without a handle of its own park instead of failing.
        if let Some(state) = self.frames[top].ctx.slots[site.module.get()]
            .completion
            .take()
        {
            state.detach();
        }
        let name = self.pipeline.module_name(site.module).to_owned();
        if quiet {
            tracing::debug!(module = %name, notification = %site.notification, "{description}; the request ends (logged as 503)");
        } else {
            tracing::warn!(module = %name, notification = %site.notification, "{description}; the request ends with 503");
        }
        let response = &mut self.frames[top].ctx.response;
        response.current = (Some(site.module), site.notification.name());
        if response.headers_sent {
            response.cut_short();
        } else {
            response.clear();
            response.set_error_status(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                0,
                ModuleError::E_FAIL,
            );
            response.set_error_description(format!(
                "{description} (module {name} returned Pending in {})",
                site.notification
            ));
        }
        self.apply(top, site, Status::FinishRequest);
    }

    fn fail_pending(&mut self, top: usize, site: CallSite, what: &str) {
        let name = self.pipeline.module_name(site.module).to_owned();
        tracing::error!(module = %name, notification = %site.notification, "module {what}; the request fails with 500");
        let ctx = &mut self.frames[top].ctx;
        ctx.fail_request(
            Some(site.module),
            site.notification.name(),
            ModuleError::E_FAIL,
            &format!("module {name} {what} in {}", site.notification),
        );
        self.apply(top, site, Status::FinishRequest);
    }

    /// Applies a final status to the cursor.
    fn apply(&mut self, top: usize, site: CallSite, status: Status) {
        let frame = &mut self.frames[top];
        // The module's call is over: a read of full duplex it left under
        // way is given up (its bytes stay for the next reader).
        frame.ctx.duplex_read = None;
        let status = if std::mem::take(&mut frame.ctx.finish_requested) {
            Status::FinishRequest
        } else {
            status
        };
        if status == Status::FinishRequest {
            if let Some(stage) = site.notification.stage() {
                if (stage as u8) < LOG_STAGE {
                    frame.go_to(LOG_POSITION, &self.pipeline.next_busy);
                }
            }
        }
    }

    /// Raises SendResponse and moves the buffered response into the output.
    /// Returns false when the frame's output stays buffered (child requests
    /// executed with `buffer_response`).
    ///
    /// A buffered child started with
    /// `ExecuteFlags::stream_past_buffer_limit` goes out from its first
    /// flush on (through its parent's SendResponse modules): its module's (an event
    /// stream, `response_buffer_limit = 0`) or the server's, once its
    /// output outgrows the server's `response_buffer_limit` in memory. So
    /// a default document or an `X-Accel-Redirect` answered by an
    /// application streams as the application's own URL would, and holds
    /// no more (a 10 GB export would otherwise be held whole), while one
    /// that ends without a flush stays the parent's, whole. What it sent
    /// can no longer be replaced by the module that started it, so the
    /// rest goes as it comes too; files held as ranges do not count, so a
    /// static file never spills.
    fn send(&mut self, top: usize, is_final: bool, more_data: bool) -> bool {
        let pipeline = &*self.pipeline;
        if self.frames[top].buffered {
            let frame = &self.frames[top];
            let flushed = !is_final
                || frame.ctx.response.buffered_memory > pipeline.settings.response_buffer_limit;
            if !frame.spills || !flushed {
                return false;
            }
            self.frames[top].buffered = false;
        }
        // A child without headers (or a request nested in one) sends the
        // head of the request it runs inside.
        if !self.frames[top].ctx.response.headers_sent {
            let keeper = (1..=top).rev().find(|&i| {
                self.frames[i]
                    .no_headers
                    .as_ref()
                    .is_some_and(|n| n.kept.is_some())
            });
            if let Some(i) = keeper {
                let response = &self.frames[top].ctx.response;
                let sent_over = (response.status, response.substatus);
                let no_headers = self.frames[i].no_headers.as_deref_mut();
                if let Some(no_headers) = no_headers {
                    no_headers.own_status = Some(sent_over);
                    if let Some(kept) = no_headers.kept.take() {
                        self.frames[top].ctx.response.restore_head(kept);
                    }
                }
            }
        }
        let frame = &mut self.frames[top];
        // A direct child's last send is not the end of the client's response.
        let is_final = is_final && top == 0;
        let ctx = &mut frame.ctx;
        if !ctx.response.headers_sent {
            if let Some(server) = &pipeline.settings.server_header {
                // One lookup: a module's own Server header stays. A map a
                // module filled to its limit gets none (and no panic).
                if let Ok(entry) = ctx.response.headers.try_entry(http::header::SERVER) {
                    entry.or_insert_with(|| server.clone());
                }
            }
        }
        // The output of a buffered child (one that spills past the buffer:
        // a folder's default document, a CGI program's local redirect) or
        // of a child without headers (an include), and of any request it
        // runs in turn, is part of the response of the request the
        // outermost such child runs inside: that request's SendResponse
        // modules see it, as they see the rest of that response, and as
        // they would have seen it had it stayed buffered (an encoder that
        // started on a page's first send must encode the include too, and
        // `/app/` must be compressed and rewritten as `/app/index.php` is,
        // however long it streams), not the child's own. Only a direct
        // child's output is its own.
        let owner = (1..=top)
            .find(|&i| {
                let flags = self.frames[i].ctx.execute_flags;
                flags.no_headers || flags.buffer_response
            })
            .map_or(top, |outermost| outermost - 1);
        if owner == top {
            self.raise_send_response(top, is_final, more_data, is_final, 0);
        } else {
            // The owner holds a placeholder while its child runs: it lends
            // it to the child for the walk.
            self.swap_responses(owner, top);
            self.raise_send_response(owner, false, more_data, false, 0);
            self.swap_responses(owner, top);
        }
        true
    }

    /// Swaps the responses of frames `below` and `above` (`below < above`).
    fn swap_responses(&mut self, below: usize, above: usize) {
        let (lower, upper) = self.frames.pair_mut(below, above);
        std::mem::swap(&mut lower.ctx.response, &mut upper.ctx.response);
    }

    /// Sends the last rest a SendResponse module deferred (see
    /// [`SendResponseProvider::defer_after`]), raising SendResponse from
    /// that module on.
    fn send_deferred(&mut self) {
        let (start, rest) = self.deferred.pop().expect("a deferred rest");
        self.frames[0].ctx.response.chunks.extend(rest);
        let is_final = self.deferred.is_empty();
        self.raise_send_response(0, is_final, !is_final, true, start);
    }

    /// Raises SendResponse for frame `top`'s send, from the module at
    /// `start` of the list on, and moves the response's entity into the
    /// output.
    fn raise_send_response(
        &mut self,
        top: usize,
        is_final: bool,
        more_data: bool,
        may_defer: bool,
        start: usize,
    ) {
        let ctx = &mut self.frames[top].ctx;
        // Everything buffered goes out, the enclosing requests' output too:
        // the SendResponse modules see all of it, and none of it is a
        // child's to clear after this.
        ctx.response.entity_floor = 0;
        let deferred = &mut self.deferred;
        let mut provider = SendResponseProvider {
            headers_being_sent: !ctx.response.headers_sent && !ctx.response.suppress_headers,
            final_send: is_final,
            flags: SendFlags {
                more_data: more_data || !is_final,
                disconnect: ctx.response.need_disconnect,
            },
            may_defer,
            deferred: None,
        };
        // The entity's clears when the last rest was deferred: one since,
        // in the send that carries the headers, means the response was
        // replaced (later, a module may empty a piece, not the response).
        // Looked at only while something is deferred, so a send without
        // deferrals pays two branches per module.
        let mut seen_clears = ctx.response.entity_clears;
        let replaceable = provider.headers_being_sent;
        let was_truncated = ctx.response.truncated;
        ctx.call_nested_list(
            |p| &p.send_response,
            N::SendResponse,
            true,
            start,
            |module, ctx, position| {
                let status = module.on_send_response(ctx, &mut provider);
                if provider.deferred.is_some() || !deferred.is_empty() {
                    let own = provider.deferred.take();
                    if replaceable
                        && !deferred.is_empty()
                        && ctx.response.entity_clears != seen_clears
                    {
                        // The module replaced the response (an error page):
                        // the rest of the old one is not sent, and unless
                        // it deferred a rest of its own, the modules after
                        // it see the final send this now is.
                        deferred.clear();
                        if own.is_none() {
                            provider.final_send = is_final || may_defer;
                            provider.flags.more_data = more_data || !provider.final_send;
                        }
                    }
                    if let Some(rest) = own {
                        // Later sends carry it, from this module on (for
                        // the modules after it, this send is not the last
                        // either).
                        deferred.push((position, rest));
                        seen_clears = ctx.response.entity_clears;
                    }
                }
                status
            },
        );
        let resp: &mut HttpResponse = &mut ctx.response;
        if replaceable && !deferred.is_empty() && resp.entity_clears != seen_clears {
            // Replaced after the walk: a module panicked, and its request
            // failed with an error page.
            deferred.clear();
        }
        if resp.reset_connection || resp.truncated {
            // The response ends here: nothing deferred is sent.
            drop_deferred(deferred);
        }
        if resp.truncated && !was_truncated {
            // A module failed in this walk, after the headers went out: the
            // entity is half transformed (the modules after it never saw
            // it), and must not go out as if it were data.
            resp.chunks.clear();
        }
        // The final send, or the last of the sends it became.
        let is_final = (is_final || may_defer) && deferred.is_empty();
        let sends_head = !resp.headers_sent && !resp.suppress_headers;
        if sends_head {
            resp.sent_status = Some((resp.status, resp.substatus));
        }
        let head = sends_head.then(|| ResponseHead {
            status: resp.status,
            reason: resp.reason.clone(),
            headers: if is_final {
                std::mem::take(&mut resp.headers)
            } else {
                resp.headers.clone()
            },
        });
        resp.headers_sent = true;
        resp.buffered_memory = 0;
        self.output = Some(Output {
            head,
            chunks: std::mem::take(&mut resp.chunks),
            trailers: if is_final {
                resp.trailers.take().filter(|t| !t.is_empty())
            } else {
                None
            },
            delivery: if is_final {
                std::mem::take(&mut resp.delivery)
            } else {
                crate::DeliveryWatchers::default()
            },
            is_final,
            // An abort goes out at once, not after what is queued.
            paced: !deferred.is_empty() && !resp.reset_connection && !resp.truncated,
            disconnect: provider.flags.disconnect || resp.need_disconnect,
            reset: resp.reset_connection,
            truncated: resp.truncated,
        });
    }

    /// Makes the changes a module's thread sent with its signal; `false`
    /// when they panicked: the request then fails as when a module call
    /// panics (an empty 500 naming the module, straight to LogRequest).
    fn make_parked_changes(
        &mut self,
        top: usize,
        site: &CallSite,
        changes: Option<ParkedChanges>,
    ) -> bool {
        let Some(changes) = changes else {
            return true;
        };
        let ctx = &mut self.frames[top].ctx;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| changes(ctx))) {
            Ok(()) => true,
            Err(panic) => {
                // What the changes started (a flush) is not made.
                ctx.op = None;
                ctx.response.flush = None;
                ctx.module_panicked(site.module, site.notification, site.post, false, &*panic);
                // A payload may panic when dropped too: let go of unread.
                std::mem::forget(panic);
                false
            }
        }
    }

    /// A child request reached its end: hand the shared response back and
    /// resume the parent module that started it.
    fn finish_child(&mut self) {
        let mut child = self.frames.pop().expect("a child frame");
        child.ctx.end_request();
        let top = self.frames.len() - 1;
        let parent = &mut self.frames[top];
        let produced = child.ctx.response.total_buffered_len() + child.ctx.response.bytes_sent;
        let no_headers = child.no_headers.take();
        parent.ctx.child_status = Some(
            no_headers
                .as_ref()
                .and_then(|n| n.own_status)
                .unwrap_or((child.ctx.response.status, child.ctx.response.substatus)),
        );
        parent.ctx.response = std::mem::replace(&mut child.ctx.response, HttpResponse::new());
        // The child's output is part of the parent's response, and a copy
        // of that response served later would skip the child's pipeline:
        // the access rules of its location (a CGI program's local
        // redirect into a folder kept to some addresses) and the changes
        // of its file. What a child helped build is not kept.
        parent.ctx.disable_user_cache();
        let response = &mut parent.ctx.response;
        if let Some(kept) = no_headers.and_then(|n| n.kept) {
            if !response.headers_sent {
                response.restore_head(kept);
            }
        }
        // A send during the child took the parent's unsent output with it
        // (and set the floor to zero): nothing of the parent's is left.
        if response.entity_floor != 0 {
            response.entity_floor = child.outer_entity_floor;
        }
        let Phase::Child(site, status, before) = std::mem::replace(&mut parent.phase, Phase::Run)
        else {
            unreachable!("a child's parent waits in Phase::Child");
        };
        // The response is shared: what the parent wrote before is not the
        // child's output.
        let produced = produced.saturating_sub(before);
        if status == Status::Pending {
            parent.phase = Phase::Deliver(
                site,
                CompletionInfo {
                    bytes: produced,
                    status: 0,
                    operation: CompletedOperation::ExecuteRequest,
                },
            );
        } else {
            self.apply(top, site, status);
        }
    }
}

/// What modules deferred will not be sent (the client is gone, or the
/// response ends here): it is dropped, but the modules from the first that
/// deferred on still get their final send, empty, so that each finishes
/// what it keeps for it (an encoder, a log line, a count).
fn drop_deferred(deferred: &mut Vec<(usize, Vec<EntityChunk>)>) {
    if let Some(first) = deferred.iter().map(|&(position, _)| position).min() {
        deferred.clear();
        deferred.push((first, Vec::new()));
    }
}

/// Calls a module for the notification of `site`, or its OnAsyncCompletion
/// when `completion` is given. A module that is unavailable (failed
/// earlier) counts as Continue; one whose factory fails now, or that
/// panics, fails the request.
#[inline]
fn call_module(
    pipeline: &Pipeline,
    ctx: &mut HttpContext,
    site: CallSite,
    completion: Option<CompletionInfo>,
) -> Status {
    let was_empty = ctx.slots[site.module.get()].state == SlotState::NotCreated;
    let Some(mut module) = ctx.take_instance(site.module) else {
        return if was_empty {
            Status::FinishRequest
        } else {
            Status::Continue
        };
    };
    if completion.is_none() {
        if let Some(state) = &ctx.slots[site.module.get()].completion {
            // A signal from an earlier round that nobody waited for must
            // not complete whatever this call starts.
            state.discard_stale();
        }
    }
    ctx.current = Running::call(site.module, site.notification, site.post);
    let started = pipeline.tracing.then(|| {
        trace(pipeline, ctx, site, TracePhase::ModuleStart);
        Instant::now()
    });
    let in_completion = completion.is_some();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match completion {
        Some(info) => module.on_async_completion(ctx, site.notification, site.post, &info),
        None => dispatch(&mut *module, ctx, site.notification, site.post),
    }));
    ctx.current.clear_module();
    match outcome {
        Ok(status) => {
            ctx.slots[site.module.get()].instance = Some(module);
            if let Some(t) = started {
                trace(
                    pipeline,
                    ctx,
                    site,
                    TracePhase::ModuleEnd {
                        status,
                        elapsed: t.elapsed(),
                    },
                );
            }
            status
        }
        Err(panic) => {
            let name = pipeline.module_name(site.module);
            crate::context::drop_guarded(module, || format!("module {name}'s instance"));
            ctx.op = None;
            ctx.response.flush = None;
            ctx.module_panicked(
                site.module,
                site.notification,
                site.post,
                in_completion,
                &*panic,
            );
            Status::FinishRequest
        }
    }
}

/// What one walk of an event's list ended with: the call that stopped it
/// (with its status), or `None` when every module returned Continue.
type WalkResult = std::thread::Result<Option<(CallSite, Status)>>;

/// Walks an event's list from the frame's cursor, calling each module through
/// `invoke` (one trait method, statically chosen by [`walk_event!`]).
#[inline(always)]
fn walk_list<F>(
    frame: &mut Frame,
    list: &[ModuleIndex],
    notification: N,
    post: bool,
    invoke: F,
) -> WalkResult
where
    F: Fn(&mut dyn HttpModule, &mut HttpContext) -> Status,
{
    // The cursor is counted in a local and written back once: the frame
    // would otherwise be reloaded and stored around every module call.
    let mut cursor = frame.pos as usize;
    let ctx = &mut frame.ctx;
    ctx.current.notification = notification;
    ctx.current.post = post;
    // The running instance lives out here, so a panic does not drop it
    // while unwinding (a second panic, in its Drop, would abort the
    // process); it is dropped, guarded, below.
    let mut running: Option<Box<dyn HttpModule>> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while let Some(&module) = list.get(cursor) {
            cursor += 1;
            let site = CallSite {
                module,
                notification,
                post,
            };
            // One look at the slot for the instance and its completion
            // state (a module that never took a completion handle has none).
            let slot = &mut ctx.slots[module.get()];
            let taken = slot.instance.take();
            let has_completion = slot.completion.is_some();
            let instance = match taken {
                Some(instance) => instance,
                None => {
                    // First call of this module in the request, or it failed.
                    let created = slot.state != SlotState::NotCreated;
                    match ctx.take_instance(module) {
                        Some(instance) => instance,
                        None if created => continue, // failed earlier: skipped
                        None => return Some((site, Status::FinishRequest)), // factory failed
                    }
                }
            };
            if has_completion {
                if let Some(state) = &ctx.slots[module.get()].completion {
                    state.discard_stale();
                }
            }
            ctx.current.set_module(module);
            let status = invoke(&mut **running.insert(instance), ctx);
            // The slot is empty while its module runs (nothing else fills
            // it: a nested notification skips a busy module), so the put-back
            // has no old instance to drop.
            let previous = std::mem::replace(&mut ctx.slots[module.get()].instance, running.take());
            debug_assert!(previous.is_none(), "a running module's slot was filled");
            std::mem::forget(previous);
            // A flush (an overflowing buffer asks for its own when it is
            // written to, see `HttpResponse::write`), an operation or a
            // failure in a nested notification raised the one flag.
            if status != Status::Continue || ctx.response.attention {
                ctx.current.clear_module();
                return Some((site, status));
            }
            debug_assert!(
                ctx.op.is_none() && ctx.response.flush.is_none() && !ctx.finish_requested,
                "a flush, an operation or a failure did not raise the attention flag"
            );
        }
        ctx.current.clear_module();
        None
    }));
    // On a panic too: the cursor then names the module that panicked.
    frame.pos = cursor as u16;
    if let Some(instance) = running {
        let ctx = &frame.ctx;
        let name = list
            .get(cursor.wrapping_sub(1))
            .map_or("?", |&m| ctx.pipeline().module_name(m));
        crate::context::drop_guarded(instance, || format!("module {name}'s instance"));
    }
    outcome
}

fn trace(pipeline: &Pipeline, ctx: &HttpContext, site: CallSite, phase: TracePhase) {
    pipeline.raise_trace(&TraceEvent {
        request_id: ctx.request_id,
        url: ctx.request.url(),
        module: pipeline.module_name(site.module),
        notification: site.notification,
        is_post: site.post,
        phase,
    });
}

/// Calls the trait method for a deterministic notification.
fn dispatch(m: &mut dyn HttpModule, ctx: &mut HttpContext, n: N, post: bool) -> Status {
    match n.stage() {
        Some(stage) => walk_event!(stage, post, |invoke| invoke(m, ctx)),
        // Nondeterministic notifications are raised with their providers
        // elsewhere, never through the deterministic cursor.
        None => Status::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module's absurd file-range lengths do not wrap into a small
    /// length (and so a small `Content-Length`).
    #[test]
    fn an_output_length_saturates() {
        let file = Arc::new(std::fs::File::open("/dev/null").unwrap());
        let huge = |offset| EntityChunk::File {
            file: file.clone(),
            offset,
            length: u64::MAX / 2 + 1,
        };
        let out = Output {
            head: None,
            chunks: vec![
                huge(0),
                huge(1),
                EntityChunk::Memory(Bytes::from_static(b"x")),
            ],
            is_final: true,
            trailers: None,
            delivery: crate::DeliveryWatchers::default(),
            paced: false,
            disconnect: false,
            reset: false,
            truncated: false,
        };
        assert_eq!(out.len(), u64::MAX);
    }
}
