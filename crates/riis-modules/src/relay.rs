//! How a backend's answer reaches a request: shared by the handlers that
//! run their exchange as a task beside the request (FastCgi, ReverseProxy),
//! or on a thread of their own (Cgi, through the `_blocking` calls).
//!
//! The task leaves the response head, body pieces and the end in a
//! [`Relay`], and wakes the request (parked, Pending) through its
//! completion handle. The request, in OnAsyncCompletion, takes them into
//! its response with a [`Receiver`]: whole while they fit under the
//! module's `response_buffer_limit`; past it the response streams, and
//! each take flushes what came (at most a [`STREAM_PIECE`]), so output
//! that trickles is not held back. Some answers stream from their head
//! on: gRPC's, server-sent events, and those whose backend says
//! `X-Accel-Buffering: no`; ReverseProxy's answers without a length stream
//! from their first body bytes on (see [`passing`]).
//!
//! The task stops reading from the backend while the request has
//! [`MAILBOX_LIMIT`] bytes it has not taken yet, so a slow client slows the
//! backend down instead of filling the server's memory; that wait is not
//! counted as the backend's silence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use riis_pipeline::bytes::{Bytes, BytesMut};
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{CompletionHandle, FlushOptions, HttpContext};
use tokio::sync::Notify;

use crate::gateway::ResponseHead;
use crate::internal_redirect::InternalRedirect;

/// Output bytes the request may leave untaken before the task stops
/// reading from the backend.
pub(crate) const MAILBOX_LIMIT: usize = 256 * 1024;
/// Once a response streams, the most output one flush carries (more
/// waits in the relay, which holds the backend back).
pub(crate) const STREAM_PIECE: u64 = 64 * 1024;
/// Request body the task may hold, not yet taken by the connection, before
/// the request stops reading from the client (a server that reads slowly
/// slows the client down instead of filling the server's memory).
pub(crate) const UPLOAD_LIMIT: usize = 256 * 1024;

/// Streamed request body kept, after the connection took it, until the
/// answer's head comes: a server that refuses the request unprocessed (an
/// HTTP/2 `REFUSED_STREAM`, a server at its limit of streams) gets it again
/// on another try. A gRPC call's first messages fit; a larger upload that
/// was refused fails as before.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;
/// Output pieces below this are copied together rather than kept as
/// slices of their read buffers (a slice keeps its whole buffer alive
/// while it waits).
const SMALL_PIECE: usize = 32 * 1024;

/// How an exchange ended.
pub(crate) enum End {
    /// The backend answered whole.
    Complete,
    /// It did not: the status the request gets (when no head went out yet)
    /// and why, for the log and the detailed error page.
    Failed(StatusCode, String),
}

/// What the task has for the request and has not been taken yet.
#[derive(Default)]
struct Inbox {
    /// The response head, once parsed.
    head: Option<ResponseHead>,
    /// Body pieces.
    chunks: Vec<Bytes>,
    /// Small pieces, copied together, to go after `chunks`.
    small: BytesMut,
    /// Their bytes.
    queued: usize,
    /// The answer's trailer fields (HTTP/2 servers: gRPC's status), taken
    /// with the end.
    trailers: Option<riis_pipeline::http::HeaderMap>,
    /// The exchange is over.
    end: Option<End>,
    /// The request waits (Pending) for news: the next one posts its
    /// completion (output only once `wake_at` bytes wait: the request would
    /// only take less and wait again).
    parked: bool,
    /// Set by the request when it parks.
    wake_at: usize,
    /// Request body on its way to the backend, when it streams
    /// (ReverseProxy's `request_buffering = false`): pieces the request
    /// read and the task has not given to the connection yet.
    upload: std::collections::VecDeque<Bytes>,
    /// Their bytes.
    upload_queued: usize,
    /// The whole body is in `upload` (or went).
    upload_end: bool,
    /// The request gave up sending the rest (the backend answered without
    /// taking it): the task's body waits for ever, without counting as the
    /// backend's silence.
    upload_abandoned: bool,
    /// The connection asked for the next piece and waits for it.
    upload_waker: Option<std::task::Waker>,
    /// A piece of a streamed body went to a connection (on this try).
    upload_started: bool,
    /// A copy of what the connection took, kept for another try (see
    /// [`REPLAY_LIMIT`]) unless `not_replayable`.
    taken: bytes::BytesMut,
    /// The body will not go again: the request cannot be tried again (see
    /// [`Relay::keep_for_replay`]), the answer's head came, or more than
    /// [`REPLAY_LIMIT`] went.
    not_replayable: bool,
    /// The try whose connection takes the pieces; a body of an earlier try
    /// takes none.
    attempt: u32,
    /// A try began after pieces that were not kept went: no try may send
    /// the body now.
    upload_lost: bool,
    /// The request stopped reading the client's body for want of room:
    /// the connection's next take posts its completion.
    wants_room: bool,
}

impl Inbox {
    /// Moves the small pieces gathered so far to the end of `chunks`.
    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            let sealed = self.small.split().freeze();
            self.chunks.push(sealed);
        }
    }

    /// Takes body pieces, in order, up to `most` bytes (a piece is cut if
    /// need be); the rest stays for the next take.
    fn take_chunks(&mut self, most: usize) -> Vec<Bytes> {
        self.seal_small();
        if self.queued <= most {
            self.queued = 0;
            return std::mem::take(&mut self.chunks);
        }
        let mut taken = Vec::new();
        let mut size = 0;
        let mut left = Vec::new();
        for mut piece in std::mem::take(&mut self.chunks) {
            if size >= most {
                left.push(piece);
            } else if size + piece.len() > most {
                let first = piece.split_to(most - size);
                size += first.len();
                taken.push(first);
                left.push(piece);
            } else {
                size += piece.len();
                taken.push(piece);
            }
        }
        self.chunks = left;
        self.queued -= size;
        taken
    }

    /// Drops the output not taken yet (the exchange failed: the response is
    /// cut short, and a stalled client must not keep it alive).
    fn discard_output(&mut self) {
        self.chunks.clear();
        self.small.clear();
        self.queued = 0;
    }

    /// Whether there is anything for the request.
    fn is_empty(&self) -> bool {
        self.head.is_none() && self.chunks.is_empty() && self.small.is_empty() && self.end.is_none()
    }
}

/// Shared by a request (its module instance) and the task of its exchange.
pub(crate) struct Relay {
    inbox: Mutex<Inbox>,
    /// The request took output: the task may read on.
    space: Notify,
    /// The same, for a producer on a thread of its own (see
    /// [`Relay::wait_for_room_blocking`]); waited on with the inbox's lock.
    room: std::sync::Condvar,
    cancelled: AtomicBool,
    cancel: Notify,
    /// The request was cancelled with its backend to stop, not to read to
    /// its end ([`Relay::abandon`]).
    overran: AtomicBool,
    /// The exchange's task is done (or the request gone): a streamed body
    /// still waiting for the client ends in an error, so that an HTTP/2
    /// server gets its stream reset instead of waiting for the rest.
    over: AtomicBool,
    /// Wakes the request.
    done: CompletionHandle,
    /// The longest the backend may stay silent.
    activity_timeout: Duration,
    /// When the exchange began, and the last time the backend was heard
    /// from or took some of the body (milliseconds since `started`): a
    /// write that waits while it answers, or a read that waits while it
    /// reads the body, is not a silence.
    started: Instant,
    last_activity: AtomicU64,
    /// When the backend got the request (milliseconds since `started`):
    /// a deadline of the backend's counts from then, not from a wait for
    /// a process of its own (FastCgi's queue).
    backend_since: AtomicU64,
    /// The task waits for the client to take output (the backend is held
    /// back by riis, not silent).
    waiting_for_client: AtomicBool,
    /// Since when it waits (milliseconds since `started`), and how long the
    /// waits that ended took in all: the time a deadline of the backend's
    /// does not count (FastCgi's `request_timeout`).
    client_wait_since: AtomicU64,
    client_waited: AtomicU64,
    /// The whole request body went to the connection (ReverseProxy: a
    /// connection still sending one when the answer ended is not kept).
    body_given: AtomicBool,
    /// The connection waits for the client's next piece of a streamed body
    /// (the backend is not silent then).
    waiting_for_upload: AtomicBool,
}

impl Relay {
    /// A relay whose request waits from the start.
    pub(crate) fn new(done: CompletionHandle, activity_timeout: Duration) -> Self {
        Self {
            inbox: Mutex::new(Inbox {
                parked: true,
                ..Inbox::default()
            }),
            space: Notify::new(),
            room: std::sync::Condvar::new(),
            cancelled: AtomicBool::new(false),
            overran: AtomicBool::new(false),
            over: AtomicBool::new(false),
            body_given: AtomicBool::new(false),
            waiting_for_upload: AtomicBool::new(false),
            cancel: Notify::new(),
            done,
            activity_timeout,
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            backend_since: AtomicU64::new(0),
            waiting_for_client: AtomicBool::new(false),
            client_wait_since: AtomicU64::new(0),
            client_waited: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request ended: the task stops and drops its connection (or, for
    /// FastCgi's own processes, reads the answer to its end, see
    /// `fastcgi::exchange`). What the request did not take is dropped, and
    /// so is what the task delivers from now on: nobody reads it.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.lock().discard_output();
        // A producer waiting for room goes on (its pieces are dropped).
        self.space.notify_one();
        self.cancel.notify_one();
        self.room.notify_all();
        self.end_upload();
    }

    /// The exchange is over, or the request gone: what is left of a
    /// streamed body will never come (see `over`).
    pub(crate) fn end_upload(&self) {
        self.over.store(true, Ordering::SeqCst);
        let waker = self.lock().upload_waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether [`Relay::end_upload`] was called.
    pub(crate) fn upload_ended(&self) -> bool {
        self.over.load(Ordering::SeqCst)
    }

    /// Whether the request was cancelled with its backend to be stopped,
    /// not read to its end ([`Relay::abandon`]).
    pub(crate) fn overran(&self) -> bool {
        self.overran.load(Ordering::SeqCst)
    }

    /// Cancels the request and has its backend stopped (a program killed,
    /// a FastCGI process of riis's own killed) rather than read to its
    /// end: an answer that ran past its length, or a HEAD's whose head
    /// went out while the backend runs on.
    pub(crate) fn abandon(&self) {
        self.overran.store(true, Ordering::SeqCst);
        self.cancel();
    }

    /// Resolves once the request has ended.
    pub(crate) async fn cancelled(&self) {
        while !self.cancelled.load(Ordering::SeqCst) {
            self.cancel.notified().await;
        }
    }

    /// The longest the backend may stay silent.
    pub(crate) fn activity_timeout(&self) -> Duration {
        self.activity_timeout
    }

    /// Leaves news for the request, waking it if it waits.
    fn deliver(&self, fill: impl FnOnce(&mut Inbox)) {
        let mut inbox = self.lock();
        fill(&mut inbox);
        if std::mem::take(&mut inbox.parked) {
            drop(inbox);
            self.done.post_completion(0);
        }
    }

    /// Passes the response head on.
    pub(crate) fn deliver_head(&self, head: ResponseHead) {
        self.deliver(|inbox| {
            inbox.head = Some(head);
            // Answered: the body will not go again.
            inbox.not_replayable = true;
            inbox.taken = bytes::BytesMut::new();
        });
    }

    /// Keeps the answer's trailer fields for the request's final send (they
    /// come after the last body piece, before the end).
    pub(crate) fn deliver_trailers(&self, trailers: riis_pipeline::http::HeaderMap) {
        self.lock().trailers = Some(trailers);
    }

    /// Tells the request how the exchange ended (after the last body piece).
    pub(crate) fn finish(&self, end: End) {
        self.deliver(|inbox| inbox.end = Some(end));
    }

    /// Passes a body piece on, then waits while the request has too much
    /// untaken. Small pieces are copied together.
    pub(crate) async fn deliver_body(&self, piece: Bytes) {
        self.queue_body(piece);
        if self.lock().queued >= MAILBOX_LIMIT {
            let since = self.start_client_wait();
            while self.lock().queued >= MAILBOX_LIMIT {
                self.space.notified().await;
            }
            self.end_client_wait(since);
        }
    }

    /// [`Relay::deliver_body`] for a producer on a thread of its own, which
    /// has more to watch than the request: passes the piece on without
    /// waiting. While [`Relay::has_room`] is false, it should read no more
    /// and call [`Relay::wait_for_room_blocking`].
    pub(crate) fn deliver_body_blocking(&self, piece: Bytes) {
        self.queue_body(piece);
    }

    /// Whether the request has taken enough that the producer may read on.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().queued < MAILBOX_LIMIT
    }

    /// Waits up to `most` for the request to make room; the wait counts
    /// as the client's, not the backend's (see
    /// [`Relay::deadline_for_backend`]). Whether there is room now.
    pub(crate) fn wait_for_room_blocking(&self, most: Duration) -> bool {
        let since = self.start_client_wait();
        let inbox = self.lock();
        let (inbox, _) = self
            .room
            .wait_timeout_while(inbox, most, |inbox| {
                inbox.queued >= MAILBOX_LIMIT && !self.cancelled.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|e| e.into_inner());
        let room = inbox.queued < MAILBOX_LIMIT;
        drop(inbox);
        self.end_client_wait(since);
        room
    }

    /// Notes that the producer waits for the client to take output; the
    /// time it started (milliseconds since `started`).
    fn start_client_wait(&self) -> u64 {
        let since = self.started.elapsed().as_millis() as u64;
        self.client_wait_since.store(since, Ordering::Relaxed);
        self.waiting_for_client.store(true, Ordering::Relaxed);
        since
    }

    /// The wait that started at `since` is over.
    fn end_client_wait(&self, since: u64) {
        self.waiting_for_client.store(false, Ordering::Relaxed);
        let waited = (self.started.elapsed().as_millis() as u64).saturating_sub(since);
        self.client_waited.fetch_add(waited, Ordering::Relaxed);
        self.mark_activity();
    }

    /// Queues a body piece for the request, waking it once enough waits.
    fn queue_body(&self, piece: Bytes) {
        if piece.is_empty() || self.cancelled.load(Ordering::SeqCst) {
            return;
        }
        let wake = {
            let mut inbox = self.lock();
            let wake_at = inbox.wake_at.clamp(1, MAILBOX_LIMIT);
            inbox.queued += piece.len();
            if piece.len() < SMALL_PIECE {
                inbox.small.extend_from_slice(&piece);
            } else {
                inbox.seal_small();
                inbox.chunks.push(piece);
            }
            inbox.queued >= wake_at && std::mem::take(&mut inbox.parked)
        };
        if wake {
            self.done.post_completion(0);
        }
    }

    /// The request's side of a streamed body: queues a piece the client
    /// sent (and, with `end`, notes that the body is whole), waking the
    /// connection if it waits.
    pub(crate) fn send_upload(&self, piece: Bytes, end: bool) {
        let waker = {
            let mut inbox = self.lock();
            if !piece.is_empty() {
                inbox.upload_queued += piece.len();
                inbox.upload.push_back(piece);
            }
            inbox.upload_end |= end;
            inbox.upload_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the connection has room for more of a streamed body, so
    /// that the request may read on. Without room, the request is woken
    /// (its completion posted) once the connection has taken some.
    pub(crate) fn has_upload_room(&self) -> bool {
        let mut inbox = self.lock();
        if inbox.upload_queued < UPLOAD_LIMIT {
            return true;
        }
        inbox.wants_room = true;
        false
    }

    /// The request stops sending the body (see `upload_abandoned`).
    pub(crate) fn abandon_upload(&self) {
        let mut inbox = self.lock();
        inbox.upload_abandoned = true;
        inbox.upload.clear();
        inbox.upload_queued = 0;
        self.waiting_for_upload.store(false, Ordering::Relaxed);
    }

    /// Whether what a connection takes of a streamed body is kept for
    /// another try (see [`REPLAY_LIMIT`]): only for a request that may be
    /// tried again at all.
    pub(crate) fn keep_for_replay(&self, keep: bool) {
        let mut inbox = self.lock();
        inbox.not_replayable |= !keep;
    }

    /// Whether a streamed body may go (again) on a new try: none of it
    /// went, or what went is kept (see [`REPLAY_LIMIT`]).
    pub(crate) fn can_restart_upload(&self) -> bool {
        let inbox = self.lock();
        !inbox.upload_started || !inbox.not_replayable
    }

    /// Starts a try of a streamed body: what an earlier try's connection
    /// took goes first again, and that try's body takes no more. Gives the
    /// try's number for [`Relay::poll_upload`].
    pub(crate) fn restart_upload(&self) -> u32 {
        let mut inbox = self.lock();
        inbox.attempt = inbox.attempt.wrapping_add(1);
        if !std::mem::take(&mut inbox.upload_started) {
            return inbox.attempt;
        }
        if inbox.not_replayable {
            // Not kept (callers ask `can_restart_upload` first): the try
            // fails rather than send the body without its beginning.
            inbox.upload_lost = true;
            return inbox.attempt;
        }
        let taken = std::mem::take(&mut inbox.taken).freeze();
        if !taken.is_empty() {
            inbox.upload_queued += taken.len();
            inbox.upload.push_front(taken);
        }
        inbox.attempt
    }

    /// The connection's side of a streamed body, for try `attempt`: the
    /// next piece, `None` at its end, Pending until the client sends more,
    /// or `Some(Err(()))` for a try that is over.
    pub(crate) fn poll_upload(
        &self,
        cx: &mut std::task::Context<'_>,
        attempt: u32,
    ) -> std::task::Poll<Option<Result<Bytes, ()>>> {
        use std::task::Poll;
        let mut inbox = self.lock();
        if inbox.attempt != attempt || inbox.upload_lost {
            return Poll::Ready(Some(Err(())));
        }
        if let Some(piece) = inbox.upload.pop_front() {
            inbox.upload_queued -= piece.len();
            inbox.upload_started = true;
            if !inbox.not_replayable {
                if inbox.taken.len() + piece.len() <= REPLAY_LIMIT {
                    // A copy: the piece's own buffer may be far larger.
                    inbox.taken.extend_from_slice(&piece);
                } else {
                    inbox.not_replayable = true;
                    inbox.taken = bytes::BytesMut::new();
                }
            }
            // A request that stopped reading the body for want of room
            // reads on.
            let wake = !inbox.upload_end
                && !inbox.upload_abandoned
                && inbox.upload_queued < UPLOAD_LIMIT
                && std::mem::take(&mut inbox.wants_room);
            drop(inbox);
            self.waiting_for_upload.store(false, Ordering::Relaxed);
            self.mark_activity();
            if wake {
                self.done.post_completion(0);
            }
            return Poll::Ready(Some(Ok(piece)));
        }
        if inbox.upload_end && !inbox.upload_abandoned {
            drop(inbox);
            // The body is whole: from now on silence is the backend's.
            self.waiting_for_upload.store(false, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        inbox.upload_waker = Some(cx.waker().clone());
        let abandoned = inbox.upload_abandoned;
        drop(inbox);
        if !abandoned {
            self.waiting_for_upload.store(true, Ordering::Relaxed);
        }
        Poll::Pending
    }

    /// Notes whether the whole request body went to the connection.
    pub(crate) fn set_body_given(&self, given: bool) {
        self.body_given.store(given, Ordering::Relaxed);
    }

    /// Whether the whole request body went to the connection.
    pub(crate) fn body_given(&self) -> bool {
        self.body_given.load(Ordering::Relaxed)
    }

    /// The backend gets the request now: its deadlines (`request_timeout`,
    /// `activity_timeout`) count from here, not from the time the request
    /// waited for a process.
    pub(crate) fn start_backend_clock(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.backend_since.store(ms, Ordering::Relaxed);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    /// Notes that the backend was heard from (or took some of the body)
    /// now.
    pub(crate) fn mark_activity(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    /// Notes that the backend was active at `at` (seen by its connection,
    /// which outlives this exchange), if that is later than what is known.
    pub(crate) fn note_activity_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.started).as_millis() as u64;
        self.last_activity.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether riis, not the backend, holds the exchange up: a slow client
    /// has not taken the output, or has not sent the next piece of a
    /// streamed body.
    fn held_back(&self) -> bool {
        self.waiting_for_client.load(Ordering::Relaxed)
            || self.waiting_for_upload.load(Ordering::Relaxed)
            // Nobody waits for the answer of a request whose client left:
            // a backend is not silent to anyone then (FastCgi reads such an
            // answer to its end, bounded by `request_timeout` alone).
            || self.cancelled.load(Ordering::Relaxed)
    }

    /// When `limit`, counted from the exchange's start, runs out if the
    /// time the task waited (and waits) for the client to take output is
    /// not counted: a deadline for the backend, not for a slow client.
    pub(crate) fn deadline_for_backend(&self, limit: Duration) -> Instant {
        let mut waited = self.client_waited.load(Ordering::Relaxed);
        if self.waiting_for_client.load(Ordering::Relaxed) {
            let since = self.client_wait_since.load(Ordering::Relaxed);
            waited += (self.started.elapsed().as_millis() as u64).saturating_sub(since);
        }
        let since = self.backend_since.load(Ordering::Relaxed);
        self.started
            .checked_add(limit + Duration::from_millis(waited + since))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
    }

    /// When the backend will have been silent for `activity_timeout`,
    /// counted from its last activity (from now while riis holds it back).
    pub(crate) fn silence_deadline(&self) -> tokio::time::Instant {
        let from = if self.held_back() {
            Instant::now()
        } else {
            self.started + Duration::from_millis(self.last_activity.load(Ordering::Relaxed))
        };
        (from + self.activity_timeout).into()
    }

    /// Whether the backend went quiet for `activity_timeout`: nothing read
    /// from it and none of the body taken for that long, and not because
    /// riis held it back for a slow client.
    pub(crate) fn is_silent(&self) -> bool {
        if self.held_back() {
            return false;
        }
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) >= self.activity_timeout
    }
}

/// What the request should do after taking what the relay had.
pub(crate) enum Step {
    /// Wait (Pending) for the next completion: the relay wakes the request
    /// when it has more.
    Wait,
    /// Wait (Pending) for the asynchronous flush just started; take again
    /// once it completes.
    Flushing,
    /// The answer is whole in the response: the handler is done.
    Done,
    /// The exchange failed: end the request with this status (or reset
    /// the connection if part of the response went out).
    Failed(StatusCode, String),
    /// The answer named a URL to answer with instead (`X-Accel-Redirect`):
    /// the exchange was stopped and nothing of the answer is in the
    /// response. The module runs it (see [`InternalRedirect::run`]).
    Redirect(InternalRedirect),
}

/// The request's side of a relay.
#[derive(Default)]
pub(crate) struct Receiver {
    /// The response has been flushed once: it streams.
    streaming: bool,
    /// A HEAD request whose answer came without `Content-Length`.
    head_without_length: bool,
    /// The answer's exact length, for the response's head (taken when
    /// the head is applied).
    exact_length: Option<riis_pipeline::http::HeaderValue>,
    /// The answer goes on as it comes, whatever the limit (see
    /// [`passing`]).
    unbuffered: bool,
    /// The backend's error pages go through CustomError like the server's
    /// (Cgi, as IIS's CGI); otherwise they are its answer and pass.
    custom_errors_apply: bool,
    /// An answer that declares no length goes on as it comes (ReverseProxy:
    /// see [`Receiver::streaming_unsized_answers`]).
    streams_unsized: bool,
    /// What this response holds of [`BUFFERED_BUDGET`] while it buffers.
    reserved: u64,
    /// An answer's `X-Accel-Redirect` is acted on (the module's
    /// `x_accel_redirect`); otherwise the header is dropped.
    follows_accel_redirect: bool,
    /// The answer has a body to send (not one to HEAD, nor a 1xx, 204 or
    /// 304).
    body_expected: bool,
    /// The body bytes the answer may still bring: what its `Content-Length`
    /// promised and has not come yet (to HEAD too), none for a status
    /// without a body. What comes past it ends the answer and stops the
    /// backend; an answer with a body that ends short of it failed (a
    /// download script that died half-way), and is not passed on as whole.
    body_room: Option<u64>,
}

/// The most all answers of the process may buffer up to their first flush
/// together (each up to its module's `response_buffer_limit`), counted
/// until the answer ends, since what a flush hands over may still wait for
/// a client that does not read. Past it, an answer streams from its head
/// on, as with `response_buffer_limit = 0`: clients that do not read
/// (HTTP/2 streams with a closed window, a slow reader) would otherwise
/// make each of their answers hold the whole limit, 4 MiB by default, and a
/// few connections hold gigabytes.
pub(crate) const BUFFERED_BUDGET: u64 = 256 * 1024 * 1024;

/// Log lines of a full budget (see `Receiver::budgeted`).
static BUDGET_LOG: crate::LogGate = crate::LogGate::new();

/// Log lines of answers longer than their `Content-Length`.
static OVERRUN_LOG: crate::LogGate = crate::LogGate::new();

/// What answers hold of [`BUFFERED_BUDGET`] now.
static BUFFERED: AtomicU64 = AtomicU64::new(0);

/// Takes `bytes` of the budget, if they are there.
fn reserve(bytes: u64) -> bool {
    crate::take_from_budget(&BUFFERED, bytes, BUFFERED_BUDGET)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.release();
    }
}

impl Receiver {
    /// `limit`, as far as [`BUFFERED_BUDGET`] has room for this response,
    /// which holds `buffered` bytes, to take what the inbox may hold on top
    /// (up to the limit); 0 (stream from now) when it has not.
    fn budgeted(&mut self, limit: u64, buffered: u64) -> u64 {
        let want = (buffered + MAILBOX_LIMIT as u64 + STREAM_PIECE).min(limit);
        if self.streaming || limit == 0 || self.reserved >= want {
            return limit;
        }
        if reserve(want - self.reserved) {
            self.reserved = want;
            return limit;
        }
        if let Some(held_back) = BUDGET_LOG.pass() {
            tracing::warn!(
                budget = BUFFERED_BUDGET,
                held_back,
                "answers held before their first flush reached the budget; this one streams at once"
            );
        }
        0
    }

    /// Gives back what this response held of the budget.
    fn release(&mut self) {
        if self.reserved > 0 {
            BUFFERED.fetch_sub(std::mem::take(&mut self.reserved), Ordering::AcqRel);
        }
    }

    /// A receiver for a server whose answers without a length are streams
    /// (ReverseProxy): they go on as they come, as Caddy and Go's reverse
    /// proxy pass them and as nginx sends what it has read. An application
    /// that streams (a generator, NDJSON, a long export) declares no
    /// length, while an ordinary page comes with one and is held up to the
    /// limit as before. `X-Accel-Buffering: yes` holds one all the same.
    pub(crate) fn streaming_unsized_answers() -> Self {
        let mut receiver = Self::default();
        receiver.streams_unsized = true;
        receiver
    }

    /// A receiver whose backend's error pages CustomError may replace (see
    /// `custom_errors_apply`).
    pub(crate) fn applying_custom_errors() -> Self {
        let mut receiver = Self::default();
        receiver.custom_errors_apply = true;
        receiver
    }

    /// Whether an answer's `X-Accel-Redirect` is acted on (the module's
    /// `x_accel_redirect`, set before the answer comes).
    pub(crate) fn follow_accel_redirect(&mut self, follow: bool) {
        self.follows_accel_redirect = follow;
    }

    /// Takes what the task left into the response: done when the exchange
    /// is over, flushing past `limit` (the module's
    /// `response_buffer_limit`), waiting for more otherwise.
    pub(crate) fn take(&mut self, ctx: &mut HttpContext, relay: &Relay, limit: u64) -> Step {
        if self.streaming && ctx.request().method() == Method::HEAD {
            // A HEAD's head went out, and it has no body to wait for: a
            // backend still answering (an event stream, a program that
            // runs on) is stopped rather than run to its end or timeout.
            if relay.lock().end.is_none() {
                relay.abandon();
            }
            return Step::Done;
        }
        loop {
            let mut limit = if self.unbuffered {
                0
            } else {
                self.budgeted(limit, ctx.response().buffered_len())
            };
            // Output held before a flush: the configured limit; once the
            // response streams, none: what came goes (output that arrives
            // while a flush is on its way gathers for the next), so a
            // backend that trickles after a large answer is not held back
            // waiting for a full piece.
            let mut threshold = if self.streaming { 0 } else { limit };
            let (head, mut chunks, mut end, trailers) = {
                let mut inbox = relay.lock();
                if inbox.is_empty() {
                    let buffered = ctx.response().buffered_len();
                    inbox.wake_at = threshold.saturating_sub(buffered).max(1) as usize;
                    inbox.parked = true;
                    return Step::Wait;
                }
                // Once streaming, one flush's worth at a time: the rest
                // waits in the inbox (which holds the backend back).
                let most = if self.streaming {
                    STREAM_PIECE as usize
                } else {
                    usize::MAX
                };
                // A failure ends the response now: what is left of the
                // output is not worth sending.
                if matches!(inbox.end, Some(End::Failed(..))) {
                    inbox.discard_output();
                }
                let chunks = inbox.take_chunks(most);
                // The end only once all output is taken.
                let end = if inbox.chunks.is_empty() {
                    inbox.end.take()
                } else {
                    None
                };
                let trailers = match end {
                    Some(End::Complete) => inbox.trailers.take(),
                    _ => None,
                };
                (inbox.head.take(), chunks, end, trailers)
            };
            if !chunks.is_empty() {
                relay.space.notify_one();
                relay.room.notify_all();
            }
            let mut send_head = false;
            if let Some(mut head) = head {
                if self.follows_accel_redirect {
                    if let Some(redirect) = InternalRedirect::of_head(&head) {
                        // Nothing of this answer goes to the client: what
                        // came of its body is dropped, the rest not read.
                        if end.is_none() {
                            relay.cancel();
                        }
                        self.release();
                        return Step::Redirect(redirect);
                    }
                }
                self.head_without_length =
                    ctx.request().method() == Method::HEAD && head.content_length.is_none();
                let bodiless_status = head.status.is_informational()
                    || head.status == StatusCode::NO_CONTENT
                    || head.status == StatusCode::NOT_MODIFIED;
                self.body_expected = ctx.request().method() != Method::HEAD && !bodiless_status;
                // A status without a body has room for none; a HEAD's
                // answer, for the length it declares (its body, when a
                // program writes one, sizes the HEAD as GET's would).
                self.body_room = if bodiless_status {
                    Some(0)
                } else {
                    head.content_length
                        .as_ref()
                        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                };
                self.exact_length = head.content_length.clone().filter(|_| head.length_is_exact);
                // Unsized and with a body to stream: not an answer to HEAD,
                // nor one without a body (204, 304), nor an error page,
                // which is best held whole (CustomError may replace it, and
                // a backend failing in it is a 502 rather than a reset).
                let status = head.status;
                let streamable = self.streams_unsized
                    && head.content_length.is_none()
                    && ctx.request().method() != Method::HEAD
                    && (status.is_success() || status.is_redirection())
                    && status != StatusCode::NO_CONTENT
                    && status != StatusCode::NOT_MODIFIED;
                if let Some(expires) = take_accel_headers(&mut head) {
                    ctx.set_server_variable(X_ACCEL_EXPIRES, expires);
                }
                match passing(&mut head, streamable) {
                    Passing::FromHead => {
                        // From this head on, the first message included.
                        self.unbuffered = true;
                        limit = 0;
                        threshold = 0;
                    }
                    Passing::FromBody => {
                        // The first body bytes that come without the end
                        // start the stream; the head does not go alone.
                        self.unbuffered = true;
                        threshold = 0;
                    }
                    Passing::AsLimited => {}
                }
                // At limit 0 the head goes out as soon as it is here, unless
                // the whole answer is; a 101 at once, since what follows it
                // is another protocol's, passed on outside the response.
                send_head =
                    (limit == 0 || head.status == StatusCode::SWITCHING_PROTOCOLS) && end.is_none();
                head.apply(ctx);
                // The answer to an X-Accel-Redirect keeps the headers of
                // the application that named it.
                crate::internal_redirect::put_kept_from_parent(ctx);
                // The answer's exact length goes on the head now, as nginx
                // passes it on: the response may stream from any write
                // (the server flushes a response that outgrows its own
                // `response_buffer_limit`, whatever the module's), and the
                // client should learn the size of a large download. An
                // answer that ends whole is sized by the server anyway; a
                // module that changes the body (compression) removes it.
                if let Some(length) = self.exact_length.take() {
                    if ctx.request().method() != Method::HEAD {
                        ctx.response_mut()
                            .set_header(riis_pipeline::http::header::CONTENT_LENGTH, length);
                    }
                }
                if !self.custom_errors_apply {
                    // The backend's own error pages are its answer.
                    ctx.response_mut().set_try_skip_custom_errors(true);
                }
            }
            if let Some(left) = &mut self.body_room {
                // What comes past the promised length is dropped, as nginx
                // drops it ("upstream sent more data than specified in
                // Content-Length header"): the client was told the length
                // (it may already be on the head), and a cache would keep
                // the rest as the start of the next answer.
                let mut room = *left;
                let mut over = 0u64;
                for chunk in &mut chunks {
                    let len = chunk.len() as u64;
                    if len <= room {
                        room -= len;
                    } else {
                        over += len - room;
                        chunk.truncate(room as usize);
                        room = 0;
                    }
                }
                *left = room;
                if over > 0 {
                    chunks.retain(|chunk| !chunk.is_empty());
                    // (A body for a 204 or 304 is the program's mistake too,
                    // but no length was promised for it.)
                    if self.body_expected {
                        if let Some(held_back) = OVERRUN_LOG.pass() {
                            tracing::warn!(
                                url = %ctx.request().url(),
                                held_back,
                                "the application's answer is longer than its Content-Length; the rest is dropped and the application stopped"
                            );
                        }
                    }
                    // The answer is whole: it ends now, and the backend is
                    // stopped (its program or process, as nginx stops
                    // reading), rather than read to its end for nothing.
                    relay.abandon();
                    end = Some(End::Complete);
                }
            }
            ctx.response_mut()
                .write_chunks(chunks.into_iter().map(Into::into));
            if let Some(trailers) = trailers {
                set_trailers(ctx, trailers);
            }
            match end {
                Some(End::Complete)
                    if self.body_expected && self.body_room.is_some_and(|left| left > 0) =>
                {
                    // Before a head went out, a 502; after, the response
                    // is cut (the connection reset), so the client and any
                    // cache see it incomplete, as nginx and Apache do.
                    let left = self.body_room.unwrap_or_default();
                    return Step::Failed(
                        StatusCode::BAD_GATEWAY,
                        format!("the answer ended {left} bytes short of its Content-Length"),
                    );
                }
                Some(End::Complete) => {
                    // A HEAD answer with neither a length nor a body goes
                    // out as a stream, so that no length (0) is made up for
                    // the body GET would have; with a body, its length is
                    // the one GET gets.
                    let resp = ctx.response();
                    let bodiless_head = self.head_without_length
                        && !resp.headers_sent()
                        && resp.buffered_len() == 0;
                    if !bodiless_head {
                        return Step::Done;
                    }
                    // The head goes out first; the end is taken again after.
                    relay.lock().end = Some(End::Complete);
                    send_head = true;
                }
                Some(End::Failed(status, why)) => return Step::Failed(status, why),
                None => {}
            }
            let buffered = ctx.response().buffered_len();
            if send_head || (buffered > 0 && buffered >= threshold) {
                // What it held stays counted until the answer ends: the
                // flush may wait for a client that does not read.
                self.streaming = true;
                ctx.response_mut().flush(FlushOptions {
                    asynchronous: true,
                    more_data: true,
                });
                return Step::Flushing;
            }
        }
    }
}

/// The server variable that holds an answer's `X-Accel-Expires` for
/// OutputCache (nginx's header: how long a proxy may keep the answer, `0`
/// for not at all, whatever `Cache-Control` tells browsers).
pub const X_ACCEL_EXPIRES: &str = "X_ACCEL_EXPIRES";

/// Takes nginx's `X-Accel-*` headers out of an answer's head, as nginx
/// does: they are for the server in front, not the client.
/// `X-Accel-Buffering` is left for [`passing`], and an `X-Accel-Redirect`
/// was followed already (or is one `x_accel_redirect = false` ignores).
/// Returns `X-Accel-Expires`'s value, if any.
fn take_accel_headers(head: &mut ResponseHead) -> Option<String> {
    let mut expires = None;
    head.headers.retain(|(name, value)| {
        let name = name.as_str();
        if !name.starts_with("x-accel-") || name == "x-accel-buffering" {
            return true;
        }
        if name == "x-accel-expires" {
            expires = value.to_str().ok().map(|v| v.trim().to_owned());
        }
        false
    });
    expires
}

/// How an answer goes on, whatever the module's `response_buffer_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passing {
    /// As it comes, from its head on.
    FromHead,
    /// As it comes, from its first body bytes on: an answer of a server
    /// whose unsized answers stream (see
    /// [`Receiver::streaming_unsized_answers`]). One that comes whole at
    /// once still goes whole.
    FromBody,
    /// Held as the limit says.
    AsLimited,
}

/// How an answer goes on. gRPC's messages always go from their head
/// (`application/grpc…`, as nginx's `grpc_pass` passes them): a
/// bidirectional call held until 4 MiB would never go on. Otherwise the
/// backend may say itself with nginx's `X-Accel-Buffering` (`no`, or
/// `yes` to be held as the limit says; other values are ignored, as nginx
/// ignores them), a header meant for the server and so taken out of the
/// head, as nginx does; without it, server-sent events
/// (`text/event-stream`, as Caddy flushes them) go on from their head,
/// since a client waits for them one by one, and an answer that is
/// `streamable` from its first body bytes.
fn passing(head: &mut ResponseHead, streamable: bool) -> Passing {
    let mut said = None;
    head.headers.retain(|(name, value)| {
        if name != "x-accel-buffering" {
            return true;
        }
        let value = value.as_bytes().trim_ascii();
        if value.eq_ignore_ascii_case(b"no") {
            said = Some(true);
        } else if value.eq_ignore_ascii_case(b"yes") {
            said = Some(false);
        }
        false
    });
    let media_type = head
        .headers
        .iter()
        .find(|(name, _)| *name == riis_pipeline::http::header::CONTENT_TYPE)
        .map_or("", |(_, value)| crate::content_encoding::media_type(value));
    // `application/grpc`, `application/grpc+proto`, …
    let grpc = media_type
        .get(..16)
        .is_some_and(|kind| kind.eq_ignore_ascii_case("application/grpc"));
    match said {
        _ if grpc => Passing::FromHead,
        Some(true) => Passing::FromHead,
        Some(false) => Passing::AsLimited,
        None if media_type.eq_ignore_ascii_case("text/event-stream") => Passing::FromHead,
        None if streamable => Passing::FromBody,
        None => Passing::AsLimited,
    }
}

/// Gives the response the answer's trailer fields; one a trailer may not
/// carry (RFC 9110 §6.5.1) is left out, and logged.
fn set_trailers(ctx: &mut HttpContext, trailers: riis_pipeline::http::HeaderMap) {
    let mut name = None;
    for (next, value) in trailers {
        if next.is_some() {
            name = next;
        }
        let Some(name) = name.clone() else {
            continue;
        };
        if let Err(why) = ctx.response_mut().append_trailer(name, value) {
            tracing::debug!("a trailer field of the answer was left out: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riis_pipeline::http::{HeaderName, HeaderValue};

    /// Answers hold the budget as they buffer, give it back when they end,
    /// and one that finds it full streams at once.
    #[test]
    fn buffering_answers_share_one_budget() {
        let limit = 4 * 1024 * 1024;
        let mut first = Receiver::default();
        assert_eq!(first.budgeted(limit, 0), limit);
        let small = first.reserved;
        assert!(
            small < limit,
            "a fresh answer holds what it may take next, not the limit"
        );
        assert_eq!(first.budgeted(limit, limit - 1), limit);
        assert_eq!(first.reserved, limit);
        // Everything else of the budget taken: the next answer streams.
        let rest = BUFFERED_BUDGET - BUFFERED.load(Ordering::Acquire);
        assert!(reserve(rest));
        let mut second = Receiver::default();
        assert_eq!(second.budgeted(limit, 0), 0);
        assert_eq!(second.reserved, 0);
        BUFFERED.fetch_sub(rest, Ordering::AcqRel);
        // The first one's share comes back when it ends.
        let before = BUFFERED.load(Ordering::Acquire);
        drop(first);
        assert_eq!(BUFFERED.load(Ordering::Acquire), before - limit);
        assert_eq!(second.budgeted(limit, 0), limit);
    }

    fn head(headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status: StatusCode::OK,
            reason: None,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            content_length: None,
            length_is_exact: false,
            local_redirect: None,
        }
    }

    #[test]
    fn which_answers_stream_from_their_head() {
        let unbuffered = |headers: &[(&str, &str)]| {
            let mut head = head(headers);
            let answer = passing(&mut head, false) == Passing::FromHead;
            assert!(
                head.headers.iter().all(|(n, _)| n != "x-accel-buffering"),
                "the header is the server's"
            );
            answer
        };
        assert!(unbuffered(&[("content-type", "text/event-stream")]));
        // An answer without a length, for a receiver that streams those,
        // unless the backend asks for it to be held.
        let html = &[("content-type", "text/html")];
        assert_eq!(passing(&mut head(html), true), Passing::FromBody);
        assert_eq!(passing(&mut head(html), false), Passing::AsLimited);
        let held = &[("content-type", "text/html"), ("x-accel-buffering", "yes")];
        assert_eq!(passing(&mut head(held), true), Passing::AsLimited);
        let events = &[("content-type", "text/event-stream")];
        assert_eq!(passing(&mut head(events), true), Passing::FromHead);
        assert!(unbuffered(&[(
            "content-type",
            "Text/Event-Stream; charset=utf-8"
        )]));
        assert!(!unbuffered(&[("content-type", "text/event-streams")]));
        assert!(!unbuffered(&[("content-type", "text/html")]));
        assert!(unbuffered(&[
            ("content-type", "text/html"),
            ("x-accel-buffering", "no")
        ]));
        assert!(!unbuffered(&[
            ("content-type", "text/event-stream"),
            ("x-accel-buffering", "yes")
        ]));
        // Values nginx does not know are ignored.
        assert!(unbuffered(&[
            ("content-type", "text/event-stream"),
            ("x-accel-buffering", "off")
        ]));
        // gRPC goes on as it comes, whatever the header says.
        assert!(unbuffered(&[("content-type", "application/grpc+proto")]));
        assert!(unbuffered(&[
            ("content-type", "application/grpc"),
            ("x-accel-buffering", "yes")
        ]));
    }
}
