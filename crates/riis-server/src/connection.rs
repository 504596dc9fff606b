//! One accepted connection: admission against the connection limits, the
//! I/O handle hyper drives, and the answer to a request hyper cannot parse.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use atomic_waker::AtomicWaker;
use std::sync::{Arc, Mutex, Weak};

use crate::h2_streams::StreamStall;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::{Limits, Timeouts};
use crate::driver::CurrentGeneration;
use crate::framing::FramingWatch;
use crate::strict::{raw_response, Refusal};
use riis_pipeline::ConnectionInfo;
use std::net::SocketAddr;

/// Counts open connections, server-wide and per client address.
#[derive(Debug, Default)]
pub struct ConnectionCounter {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// An admitted connection's place in the count, given back on drop.
#[derive(Debug)]
pub struct Admission {
    counter: Arc<ConnectionCounter>,
    client: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut map = self
                .counter
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Descriptors kept from connections when `max_connections` is 0: a fifth
/// of the open files limit, at least this many (at most half of it).
const RESERVED_DESCRIPTORS: usize = 128;

/// The connection limit when `max_connections` is 0: the open files limit
/// but a reserve. A flood of connections then meets a 503 while files,
/// backends, logs and the 503 itself still get descriptors; at the limit
/// itself every open fails and each accept fails again at once (a review
/// filled 20,000 descriptors from one address and nothing was served).
/// Read once: `riis serve` raised its soft limit to the hard one before.
fn implicit_connection_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) if soft != RLIM_INFINITY => {
                let soft = usize::try_from(soft).unwrap_or(usize::MAX);
                soft - (soft / 5).max(RESERVED_DESCRIPTORS).min(soft / 2)
            }
            _ => usize::MAX,
        }
    })
}

impl ConnectionCounter {
    /// Connections open now, server-wide.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a connection from `client` under `limits`, or says why not.
    /// `None` when the client is not known yet (a connection whose PROXY
    /// protocol header names it): it is counted with
    /// [`Admission::count_client`] once known.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Admission, Refusal> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        // From here on the admission gives the count back on drop.
        let mut admission = Admission {
            counter: self.clone(),
            client: None,
        };
        if limits.max_connections > 0 && total > limits.max_connections {
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "the server has limits.max_connections open connections",
            });
        }
        if limits.max_connections == 0 && total > implicit_connection_limit() {
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "the server's connections use its open files limit but a reserve",
            });
        }
        if let Some(client) = client {
            admission.count_client(client, limits)?;
        }
        Ok(admission)
    }
}

impl Admission {
    /// Counts the connection under `client` for
    /// `limits.max_connections_per_client`, or says why it is refused.
    pub fn count_client(&mut self, client: IpAddr, limits: &Limits) -> Result<(), Refusal> {
        if limits.max_connections_per_client == 0 || self.client.is_some() {
            return Ok(());
        }
        // One key per client, however its address was written (a PROXY
        // header's `TCP6 ::ffff:a.b.c.d` is `a.b.c.d`).
        let client = client.to_canonical();
        let mut map = self
            .counter
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = map.entry(client).or_insert(0);
        *n += 1;
        // From here on the drop gives this count back too.
        self.client = Some(client);
        if *n > limits.max_connections_per_client {
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "this client has limits.max_connections_per_client open connections",
            });
        }
        Ok(())
    }
}

/// The server's coarse clock: whole seconds since it started, advanced by
/// the connection sweepers (reading it costs one relaxed load).
static CLOCK: AtomicU32 = AtomicU32::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now() -> u32 {
    CLOCK.load(Ordering::Relaxed)
}

/// Starts the coarse clock, before the first connection reads it.
pub(crate) fn start_clock() {
    advance_clock();
}

fn advance_clock() -> u32 {
    let secs = EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    CLOCK.store(secs, Ordering::Relaxed);
    secs
}

/// Ticks of the coarse clock an HTTP/1.1 connection that keeps its parser
/// stays idle before it gives the parser's buffers back (between one and
/// two seconds). Parking at once would rebuild hyper's connection for every
/// request of a busy keep-alive client (about a quarter of the user-space
/// work of a small request); a connection that waits longer than this is
/// idle in earnest.
pub const PARK_AFTER: u32 = 1;

/// HTTP/1.1 connections per worker that may keep hyper's parser (about
/// 16 KB of buffers) while idle, for up to [`PARK_AFTER`]: at most 512 KB
/// per worker. Beyond this many, an idle connection parks at once, as nginx
/// frees its buffers: buffers freed at once are reused by the next
/// connection, where buffers freed later would stay resident (the allocator
/// keeps freed memory), so memory under thousands of connections stays what
/// the parked ones need.
pub const PARSERS_KEPT: usize = 32;

/// Why the sweeper closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Expiry {
    /// A request head did not arrive in full within `timeouts.header_read`
    /// (slowloris): 408.
    HeaderRead,
    /// Nothing happened on a kept-alive connection for `timeouts.keep_alive`.
    KeepAlive,
    /// The client did not take response bytes for `timeouts.send`.
    Send,
    /// The server is stopping and `shutdown_timeout` ran out before the
    /// connection's exchange finished.
    Shutdown,
}

/// What the sweeper decides for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Close it now.
    Expire(Expiry),
    /// Ask it to finish and close (HTTP/2's GOAWAY).
    Drain,
}

impl Expiry {
    const ALL: [Expiry; 4] = [
        Expiry::HeaderRead,
        Expiry::KeepAlive,
        Expiry::Send,
        Expiry::Shutdown,
    ];

    /// The value stored for it (0 is "none").
    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// What the sweeper told a connection, read by the connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// A timeout expired: close now.
    pub expired: Option<Expiry>,
    /// The worker is shutting down: finish the exchange under way, then
    /// close.
    pub draining: bool,
}

/// What one connection did, read by the sweeper to enforce the timeouts
/// without a timer per request. Updated with relaxed atomics on the I/O
/// path.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests being handled, from hyper's call of the service until their
    /// response body is done (several at once on HTTP/2).
    in_service: AtomicU32,
    /// Requests started on the connection.
    requests_started: AtomicU64,
    /// The current request has a body not yet read to its end: hyper then
    /// drains or closes the connection after the response, on its own.
    body_unread: AtomicBool,
    /// When the connection last became idle (no request in service).
    idle_since: AtomicU32,
    read_total: AtomicU64,
    /// `read_total` when it became idle: more means a head is arriving.
    read_at_idle: AtomicU64,
    /// Bytes of a request head begun but not finished, as the framing
    /// watch last saw (see [`FramingWatch::unfinished_head`]).
    partial_head: AtomicU64,
    /// No request is in service and the next has not started: what is sent
    /// now is the end of earlier responses (gathered, or behind a full
    /// socket), so each send moves `written_at_request_start` along, and a
    /// head that arrives (or already waits in the buffer) may still be
    /// refused with a status of its own.
    head_behind_response: AtomicBool,
    /// When the first byte after the connection became idle was read: the
    /// start of the head `timeouts.header_read` limits.
    head_started: AtomicU32,
    /// The connection speaks HTTP/2: its reads between requests are
    /// frames (PING, WINDOW_UPDATE), not a request head arriving.
    http2: AtomicBool,
    /// HTTP/2 response bodies holding data hyper has not asked for: their
    /// streams wait for the client's flow-control window.
    bodies_awaiting_window: AtomicU32,
    /// When hyper last took data from a response body (HTTP/2).
    body_taken_at: AtomicU32,
    /// The HTTP/2 streams whose bodies waited for window, each timed on
    /// its own (see [`crate::h2_streams`]). Boxed: HTTP/1.x connections,
    /// which never have one, carry one word instead of a `Vec`'s three (the
    /// extra allocation is for HTTP/2 connections with a stalled stream).
    #[allow(clippy::box_collection)]
    stalls: Mutex<Option<Box<Vec<Weak<StreamStall>>>>>,
    written_total: AtomicU64,
    written_at_request_start: AtomicU64,
    last_write: AtomicU32,
    /// When a write of at least [`PROGRESS_BYTES`] last went out: response
    /// data moving, not only control frames (a PING's answer).
    last_progress: AtomicU32,
    /// hyper's last write was refused: it holds response bytes.
    write_blocked: AtomicBool,
    /// Gathered response bytes (or TLS records) wait for the socket.
    flush_blocked: AtomicBool,
    /// The sweeper found the connection idle for a while: it may give its
    /// parser's buffers back (HTTP/1.1; see [`PARK_AFTER`]).
    park_requested: AtomicBool,
    /// The connection holds no parser and waits for the socket.
    parked: AtomicBool,
    /// [`Expiry::code`] of the sweeper's verdict, 0 while none.
    expiry: AtomicU8,
    /// The worker drains.
    draining: AtomicBool,
    /// The connection's task, woken by the sweeper.
    task: AtomicWaker,
    /// The number of the request whose head had both Content-Length and
    /// Transfer-Encoding ([`FramingWatch`]), 0 while none had.
    framing_conflict: AtomicU64,
    /// A response was cut short on this HTTP/1.x connection: it ends with
    /// a reset, not a close that would look like the end of the body.
    abort: AtomicBool,
    /// HTTP/2 streams refused since the connection went away.
    refused_streams: AtomicU32,
    /// HTTP/2 streams served since the connection went away.
    served_after_goaway: AtomicU32,
    /// The client ended its side of an HTTP/1.x connection (a half-close,
    /// or a close) after whole requests, while one was in service. See
    /// [`SharedIo`]'s `poll_read`.
    peer_closed: AtomicBool,
}

/// How many streams an HTTP/2 connection that went away may open (each
/// refused) before it is closed.
const MAX_REFUSED_STREAMS: u32 = 100;

/// Seconds an idle HTTP/2 connection that went away may wait for the
/// client's PING answer (which makes hyper's GOAWAY final) before it is
/// closed: a round trip takes milliseconds.
const DRAINED_HTTP2_GRACE: u64 = 2;

/// A write at least this large carries response data (HTTP/2 control
/// frames are a few dozen bytes): it counts as progress for a stream
/// waiting for its flow-control window.
const PROGRESS_BYTES: usize = 1024;

impl Activity {
    /// A new connection: idle from now.
    pub fn new() -> Self {
        let t = now();
        Self {
            idle_since: AtomicU32::new(t),
            last_write: AtomicU32::new(t),
            last_progress: AtomicU32::new(t),
            ..Self::default()
        }
    }

    /// A request reached the service. `has_body`: the request has a body.
    fn started(&self, has_body: bool) {
        self.in_service.fetch_add(1, Ordering::Relaxed);
        self.head_behind_response.store(false, Ordering::Relaxed);
        self.body_unread.store(has_body, Ordering::Relaxed);
        self.requests_started.fetch_add(1, Ordering::Relaxed);
        self.written_at_request_start.store(
            self.written_total.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// A request's response went out (or was abandoned).
    fn ended(&self) {
        // SeqCst with `note_peer_closed`: one of the two sees the other.
        if self.in_service.fetch_sub(1, Ordering::SeqCst) == 1 {
            if self.peer_closed.load(Ordering::SeqCst) {
                // hyper's read that found the end was told to wait; now
                // that nothing is in service it is given the end.
                self.task.wake();
            }
            // Part of the next head may have come with (or behind) this
            // request: the connection is then not idle, and that head's
            // header-read time starts now, as for one whose first bytes
            // arrive now.
            let read = self.read_total.load(Ordering::Relaxed);
            let partial = self.partial_head.load(Ordering::Relaxed).min(read);
            let t = now();
            self.read_at_idle.store(read - partial, Ordering::Relaxed);
            self.idle_since.store(t, Ordering::Relaxed);
            if partial > 0 {
                self.head_started.store(t, Ordering::Relaxed);
            }
            // Whatever is written from here until the next request starts
            // ends the responses before: a head already read (a whole
            // pipelined one that hyper fails to parse) is still owed its
            // refusal.
            self.written_at_request_start.store(
                self.written_total.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            self.head_behind_response.store(true, Ordering::Relaxed);
        }
    }

    /// The client ended its side of the connection after whole requests.
    /// Returns whether a request is in service: the end is then kept from
    /// hyper until none is. The connection's task is woken, so hyper polls
    /// what it waits for again: a reply or a streamed body that would have
    /// to wait for a module gives up then (see [`Activity::peer_closed`]).
    fn note_peer_closed(&self) -> bool {
        if !self.peer_closed.swap(true, Ordering::SeqCst) {
            self.task.wake();
        }
        self.in_service.load(Ordering::SeqCst) > 0
    }

    /// Whether the client ended its side of the connection (see
    /// [`SharedIo`]'s `poll_read`). A reply or response body that would
    /// wait for a module from then on fails instead, and the request is
    /// given up as one whose client left: a closed side cannot be told
    /// from a departed client. nginx gives up a request waiting on its
    /// upstream the same way (its 499).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed.load(Ordering::Relaxed)
    }

    /// The current request's body was read to its end.
    pub fn request_body_read(&self) {
        self.body_unread.store(false, Ordering::Relaxed);
    }

    /// Whether the current request's body was not read to its end yet (it
    /// may be being discarded after the response).
    pub fn request_body_unread(&self) -> bool {
        self.body_unread.load(Ordering::Relaxed)
    }

    /// Requests started on the connection so far.
    pub fn requests_started(&self) -> u64 {
        self.requests_started.load(Ordering::Relaxed)
    }

    /// Whether the request started last had both Content-Length and
    /// Transfer-Encoding in its head (hyper does not say; see
    /// [`FramingWatch`]).
    pub fn framing_conflict(&self) -> bool {
        self.framing_conflict.load(Ordering::Relaxed) == self.requests_started()
    }

    /// Whether the connection waits for its next request with nothing under
    /// way: no request in service (response bodies included), no request
    /// body left unread, no response byte stuck behind a full socket, no
    /// byte read since the last response ended.
    pub fn is_idle(&self) -> bool {
        self.in_service.load(Ordering::Relaxed) == 0
            && !self.body_unread.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.flush_blocked.load(Ordering::Relaxed)
            && self.read_total.load(Ordering::Relaxed) == self.read_at_idle.load(Ordering::Relaxed)
    }

    /// `n` response bytes went out.
    fn sent(&self, n: usize) {
        let written = self.written_total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.head_behind_response.load(Ordering::Relaxed) {
            // The end of the previous response, gathered before it was
            // done: still not a byte of an answer to the head behind it.
            self.written_at_request_start
                .store(written, Ordering::Relaxed);
        }
        let t = now();
        self.last_write.store(t, Ordering::Relaxed);
        if n >= PROGRESS_BYTES {
            self.last_progress.store(t, Ordering::Relaxed);
        }
    }

    /// A write on a connection lent after a 101 moved `n` bytes, or found
    /// the socket full (`None`): the send timeout watches it as hyper's.
    pub(crate) fn lent_write(&self, n: Option<usize>) {
        if let Some(n) = n {
            self.sent(n);
        }
        self.set_blocked(&self.write_blocked, n.is_none());
    }

    /// Records whether hyper's last write (`flag` = `write_blocked`) or the
    /// last send of gathered bytes (`flush_blocked`) found the socket full.
    fn set_blocked(&self, flag: &AtomicBool, blocked: bool) {
        if flag.load(Ordering::Relaxed) != blocked {
            flag.store(blocked, Ordering::Relaxed);
            self.last_write.store(now(), Ordering::Relaxed);
        }
    }

    /// Whether no byte was written since the current request started (or,
    /// between requests, since the next head began to arrive): a failure
    /// then may still be answered.
    pub fn nothing_sent_for_request(&self) -> bool {
        self.written_total.load(Ordering::Relaxed)
            == self.written_at_request_start.load(Ordering::Relaxed)
    }

    /// What the sweeper said; the task is woken when that changes.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Signal {
        self.task.register(cx.waker());
        Signal {
            expired: Expiry::from_code(self.expiry.load(Ordering::Acquire)),
            draining: self.draining.load(Ordering::Acquire),
        }
    }

    /// Whether the sweeper asked the connection to park.
    pub fn park_requested(&self) -> bool {
        self.park_requested.load(Ordering::Acquire)
    }

    /// The connection parked (`true`) or took up a parser again.
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
        if parked {
            self.park_requested.store(false, Ordering::Relaxed);
        }
    }

    /// Asks a connection idle since before `t - PARK_AFTER` to park, once.
    fn ask_to_park(&self, t: u32) {
        if self.parked.load(Ordering::Relaxed)
            || self.park_requested.load(Ordering::Relaxed)
            || !self.is_idle()
        {
            return;
        }
        let idle_since = self
            .idle_since
            .load(Ordering::Relaxed)
            .max(self.last_write.load(Ordering::Relaxed));
        if t.saturating_sub(idle_since) >= PARK_AFTER {
            self.park_requested.store(true, Ordering::Release);
            self.task.wake();
        }
    }

    /// Expires the connection (the first verdict stands).
    fn expire(&self, e: Expiry) {
        if self
            .expiry
            .compare_exchange(0, e.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.task.wake();
        }
    }

    /// Asks the connection to finish and close.
    fn drain(&self) {
        self.close_after_exchange();
    }

    /// A response went out cut short: on HTTP/1.x the connection is to end
    /// with a reset (TCP RST), because to a client reading to the end of
    /// the connection (HTTP/1.0, or a response without a length) a plain
    /// close would look like the end of a whole body. HTTP/2 resets the
    /// stream instead, and the connection goes on.
    pub fn abort_on_close(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.abort.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the connection is to end with a reset.
    pub fn aborts(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Asks the connection to close once the exchange under way is done
    /// (hyper's graceful shutdown: HTTP/1.x after the current response,
    /// HTTP/2 with GOAWAY after its open streams). For a response that must
    /// close but whose head went out without `Connection: close`.
    pub fn close_after_exchange(&self) {
        self.draining.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Whether the connection was asked to close
    /// ([`Self::close_after_exchange`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether an HTTP/2 stream opened after the connection went away is
    /// served: the client opened it before it had the GOAWAY (hyper's
    /// first GOAWAY names no last stream; its final one, once the client
    /// answers the PING that follows, names the last served), so it is
    /// owed an answer, as gRPC clients expect (refused, they fail the
    /// call). Up to `most` such streams, the client's concurrent streams:
    /// a client that never answers the PING and keeps opening streams has
    /// the rest refused.
    pub fn serves_after_goaway(&self, most: u32) -> bool {
        self.served_after_goaway.fetch_add(1, Ordering::Relaxed) < most
    }

    /// An HTTP/2 stream was refused because the connection went away. A
    /// client that goes on opening streams regardless is cut off once the
    /// streams it is owed are done (the sweeper's, see [`Activity::check`]),
    /// as it would otherwise keep the connection from ever becoming idle.
    pub fn stream_refused(&self) {
        self.refused_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes were read from the connection.
    fn received(&self, n: usize) {
        let before = self.read_total.fetch_add(n as u64, Ordering::Relaxed);
        if before == self.read_at_idle.load(Ordering::Relaxed) {
            // The first bytes since the connection went idle: the next
            // request's head. What was written before them answered
            // earlier requests, so a 408 for this head is still ours to
            // send while nothing more goes out.
            self.head_started.store(now(), Ordering::Relaxed);
            self.written_at_request_start.store(
                self.written_total.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    /// The connection speaks HTTP/2 from now on.
    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Resets the HTTP/2 streams whose bodies have waited for the client's
    /// flow-control window for `send` seconds or more at `t`: each stream
    /// on its own, so a client that feeds one stream cannot keep the others
    /// (and what they hold) alive with it.
    /// Streams that ended leave the list here too.
    fn reset_stalled_streams(&self, t: u32, send: u64) {
        if !self.http2.load(Ordering::Relaxed) {
            return;
        }
        let mut stalls = self.stalls.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stalls) = stalls.as_mut() else {
            return;
        };
        stalls.retain(|stall| {
            let Some(stall) = stall.upgrade() else {
                return false;
            };
            if send > 0 && stall.reset_if_stalled(t, send) {
                tracing::info!(
                    timeout = send,
                    "an HTTP/2 stream waited for the client's flow-control window past timeouts.send; reset"
                );
                return false;
            }
            true
        });
    }

    /// The sweeper's verdict at time `t`.
    fn check(&self, t: u32, timeouts: &Timeouts) -> Option<Verdict> {
        // The clock counts whole seconds: `limit` whole ticks may be a
        // little less than `limit` seconds, one more never is. A timeout
        // fires between its limit and two seconds after it, never early.
        let after =
            |since: u32, limit: u64| limit > 0 && u64::from(t.saturating_sub(since)) > limit;
        let blocked = self.write_blocked.load(Ordering::Relaxed)
            || self.flush_blocked.load(Ordering::Relaxed);
        if blocked && after(self.last_write.load(Ordering::Relaxed), timeouts.send) {
            return Some(Verdict::Expire(Expiry::Send));
        }
        if self.in_service.load(Ordering::Relaxed) > 0 {
            // A client that reads the socket but never opens its streams'
            // flow-control windows holds their bodies for ever: it gets
            // the send timeout too, as one that does not read at all.
            // Progress is hyper taking more data, or a write large enough
            // to carry some: the answers to a client's PINGs or SETTINGS
            // do not keep a stalled stream alive.
            let stalled = self.bodies_awaiting_window.load(Ordering::Relaxed) > 0
                && after(
                    self.body_taken_at
                        .load(Ordering::Relaxed)
                        .max(self.last_progress.load(Ordering::Relaxed)),
                    timeouts.send,
                );
            return stalled.then_some(Verdict::Expire(Expiry::Send));
        }
        if self.http2.load(Ordering::Relaxed) {
            // Idle since its last stream ended, whatever control frames
            // come and go meanwhile (a client's PINGs do not keep it open),
            // or since response data last went out: the end of a body
            // hyper queued whole reaches a slow client after the stream
            // left the service. GOAWAY first; a connection still open a
            // tick later is closed.
            let idle_since = self
                .idle_since
                .load(Ordering::Relaxed)
                .max(self.last_progress.load(Ordering::Relaxed));
            // One that went away (its GOAWAY sent, new streams refused)
            // and has nothing left to finish is closed soon: its final
            // GOAWAY waits for the client's answer to a PING, which a
            // client may never send. One whose client keeps opening
            // streams (each refused, each keeping it from being idle) is
            // closed at once.
            if self.draining.load(Ordering::Relaxed)
                && (after(idle_since, DRAINED_HTTP2_GRACE)
                    || self.refused_streams.load(Ordering::Relaxed) >= MAX_REFUSED_STREAMS)
            {
                return Some(Verdict::Expire(Expiry::KeepAlive));
            }
            if !after(idle_since, timeouts.keep_alive) {
                return None;
            }
            return Some(if self.draining.load(Ordering::Relaxed) {
                Verdict::Expire(Expiry::KeepAlive)
            } else {
                Verdict::Drain
            });
        }
        let idle_since = self
            .idle_since
            .load(Ordering::Relaxed)
            .max(self.last_write.load(Ordering::Relaxed));
        let head_arriving =
            self.read_total.load(Ordering::Relaxed) > self.read_at_idle.load(Ordering::Relaxed);
        // A head is timed from its first byte, not from when the connection
        // went idle: a client that sends its next request after a long
        // pause gets the whole `header_read` for it.
        let head_started = self.head_started.load(Ordering::Relaxed).max(idle_since);
        if head_arriving && after(head_started, timeouts.header_read) {
            Some(Verdict::Expire(Expiry::HeaderRead))
        } else if !head_arriving && after(idle_since, timeouts.keep_alive) {
            Some(Verdict::Expire(Expiry::KeepAlive))
        } else {
            None
        }
    }
}

/// A request in service; dropping it ends it.
pub struct InService {
    state: Arc<ConnectionState>,
    /// HTTP/2: the stream's wait for window, once its body waited in the
    /// stream's own task.
    stall: Option<Arc<StreamStall>>,
}

impl InService {
    /// The configured `Server` header, for a response the server makes
    /// itself.
    pub fn server_header(&self) -> Option<HeaderValue> {
        self.state
            .current
            .load()
            .pipeline
            .settings()
            .server_header
            .clone()
    }

    /// Whether the client ended its side of the connection
    /// ([`Activity::peer_closed`]).
    pub fn peer_closed(&self) -> bool {
        self.state.activity.peer_closed()
    }

    /// `timeouts.send` of the configuration the connection runs under
    /// (`None` for no limit).
    pub fn send_timeout(&self) -> Option<std::time::Duration> {
        let send = self.state.current.load().timeouts.send;
        (send > 0).then(|| std::time::Duration::from_secs(send))
    }

    /// The response goes out cut short ([`Activity::abort_on_close`]).
    pub fn abort_on_close(&self) {
        self.state.activity.abort_on_close();
    }

    /// Whether the request came on an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        self.state.activity.http2.load(Ordering::Relaxed)
    }

    /// The response body holds data hyper has not asked for (`true`), or
    /// hyper just asked (`false`): see [`Activity::check`].
    pub fn awaiting_window(&mut self, awaiting: bool) {
        let activity = &self.state.activity;
        if awaiting && self.stall.is_none() {
            // The first wait in the stream's task: the stream is timed on
            // its own from now on.
            if let Some(abort) = crate::h2_streams::claim_current() {
                let stall = Arc::new(StreamStall::new(abort));
                activity
                    .stalls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(Box::default)
                    .push(Arc::downgrade(&stall));
                self.stall = Some(stall);
            }
        }
        if let Some(stall) = &self.stall {
            stall.set_waiting(awaiting, now());
        }
        if awaiting {
            activity
                .bodies_awaiting_window
                .fetch_add(1, Ordering::Relaxed);
        } else {
            activity
                .bodies_awaiting_window
                .fetch_sub(1, Ordering::Relaxed);
            activity.body_taken_at.store(now(), Ordering::Relaxed);
        }
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        self.state.activity.ended();
    }
}

/// Everything a connection's requests and its I/O share, in one allocation
/// per connection.
pub struct ConnectionState {
    /// The configuration, read afresh by every request (so a reload applies
    /// to kept-alive connections too).
    pub current: CurrentGeneration,
    /// The configured address of the listener the connection came on.
    pub listener: SocketAddr,
    /// The connection.
    pub connection: Arc<ConnectionInfo>,
    /// Requests started on the connection.
    requests: AtomicU64,
    /// What the connection did, for the timeouts.
    pub activity: Activity,
    /// Where file ranges queue for `sendfile`: `Some(None)` on connections
    /// that do not use it, unset until the first file range on those that
    /// do (an idle connection that sent no file holds no queue).
    sendfile: std::sync::OnceLock<Option<Box<SendfileQueue>>>,
    /// Where the connection goes once hyper has written a 101 head: to the
    /// module that switched it (see [`crate::upgrade`]).
    upgrade: Mutex<Option<UpgradeSender>>,
}

/// Hands a connection that switched protocols to its module.
pub(crate) type UpgradeSender = tokio::sync::oneshot::Sender<Box<dyn riis_pipeline::UpgradedIo>>;

impl ConnectionState {
    /// The state of a new connection; `sendfile`: file ranges may go out
    /// with `sendfile`.
    pub fn new(
        current: CurrentGeneration,
        listener: SocketAddr,
        connection: Arc<ConnectionInfo>,
        sendfile: bool,
    ) -> Self {
        Self {
            current,
            listener,
            connection,
            requests: AtomicU64::new(0),
            activity: Activity::new(),
            sendfile: if sendfile {
                std::sync::OnceLock::new()
            } else {
                std::sync::OnceLock::from(None)
            },
            upgrade: Mutex::new(None),
        }
    }

    /// The request under way answers 101: once hyper has written the head,
    /// the connection goes to the returned stream.
    pub fn expect_upgrade(&self) -> riis_pipeline::UpgradedStream {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        riis_pipeline::UpgradedStream::new(rx)
    }

    /// Where the connection goes after a 101, if a request switched it.
    pub(crate) fn take_upgrade(&self) -> Option<UpgradeSender> {
        self.upgrade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Counts the connection in service, without a request (a connection
    /// lent after a 101): only the send timeout applies to it.
    pub(crate) fn hold_in_service(self: &Arc<Self>) -> InService {
        self.activity.in_service.fetch_add(1, Ordering::Relaxed);
        InService {
            state: self.clone(),
            stall: None,
        }
    }

    /// A request reached the service; the returned guard, dropped with the
    /// response body, marks its end. `has_body`: the request has a body.
    pub fn request_started(self: &Arc<Self>, has_body: bool) -> InService {
        self.activity.started(has_body);
        InService {
            state: self.clone(),
            stall: None,
        }
    }

    /// Whether the request being started is the last this connection serves
    /// (`limits.max_requests_per_connection` of the request's configuration).
    pub fn is_last_request(&self, limits: &Limits) -> bool {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let max = limits.max_requests_per_connection;
        max > 0 && n >= max
    }

    /// Whether file ranges go out with `sendfile` on this connection.
    pub fn sends_files(&self) -> bool {
        self.sendfile.get().is_none_or(Option::is_some)
    }

    /// The queue of file ranges for `sendfile`, made at the first range, on
    /// connections that use it.
    pub fn sendfile(&self) -> Option<&SendfileQueue> {
        self.sendfile
            .get_or_init(|| Some(Box::default()))
            .as_deref()
    }

    /// The queue, if a file range was ever queued on this connection.
    fn queued_files(&self) -> Option<&SendfileQueue> {
        self.sendfile.get().and_then(Option::as_deref)
    }
}

/// The connections of one worker, swept once a second.
#[derive(Default)]
pub struct Sweeper {
    connections: Mutex<Vec<Arc<ConnectionState>>>,
    draining: AtomicBool,
    /// HTTP/1.1 connections of the worker holding hyper's parser.
    parsers: AtomicUsize,
}

/// A connection's hold on a parser, counted until it drops.
pub struct ParserHold(Arc<Sweeper>);

impl Drop for ParserHold {
    fn drop(&mut self) {
        self.0.parsers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sweeper {
    /// Counts a connection holding hyper's parser until the hold drops.
    pub fn hold_parser(self: &Arc<Self>) -> ParserHold {
        self.parsers.fetch_add(1, Ordering::Relaxed);
        ParserHold(self.clone())
    }

    /// Whether more connections hold a parser than [`PARSERS_KEPT`].
    pub fn parsers_crowded(&self) -> bool {
        self.parsers.load(Ordering::Relaxed) > PARSERS_KEPT
    }

    /// Tracks a new connection (told to drain at once if the worker does).
    pub fn track(&self, connection: Arc<ConnectionState>) {
        let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if self.draining.load(Ordering::Acquire) {
            connection.activity.drain();
        }
        list.push(connection);
    }

    /// Expires what overran its timeout, until `stop`. The timeouts are
    /// those of the current configuration at each sweep, so a reload
    /// applies to open connections too.
    pub async fn run(
        &self,
        current: CurrentGeneration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => {
                    crate::in_flight::note_sweeps_end();
                    return;
                }
            }
            let t = advance_clock();
            crate::in_flight::note_sweep();
            let generation = current.load();
            let timeouts = &generation.timeouts;
            let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            // A connection whose task ended holds the only other reference.
            list.retain(|a| Arc::strong_count(a) > 1);
            for c in list.iter() {
                c.activity.reset_stalled_streams(t, timeouts.send);
                match c.activity.check(t, timeouts) {
                    Some(Verdict::Expire(e)) => c.activity.expire(e),
                    Some(Verdict::Drain) => c.activity.drain(),
                    None => c.activity.ask_to_park(t),
                }
            }
        }
    }

    /// Closes every connection of the worker now: the drain's deadline
    /// passed. Their tasks end at their next poll (they are woken), which
    /// drops what they were serving, so a program that embeds riis keeps
    /// no connection of it once `serve` returns.
    pub async fn close_all(&self) {
        {
            let list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            for c in list.iter() {
                c.activity.expire(Expiry::Shutdown);
            }
        }
        // A connection ends within a turn or two of being woken; do not
        // wait on one that cannot (its task is already gone with its
        // runtime, or stuck in a module's own code).
        for _ in 0..50 {
            {
                let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
                list.retain(|a| Arc::strong_count(a) > 1);
                if list.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells every connection to finish (an idle one closes at once, a busy
    /// one after its response) and resolves when all have closed.
    pub async fn drain(&self) {
        {
            let list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            self.draining.store(true, Ordering::Release);
            for c in list.iter() {
                c.activity.drain();
            }
        }
        loop {
            {
                let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
                list.retain(|a| Arc::strong_count(a) > 1);
                if list.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Stands in for file bytes in the body hyper sends on a plain HTTP/1.x
/// connection: hyper moves these (never read) slices to the connection's
/// I/O, which sends the file range queued for them with `sendfile` instead,
/// so large files go from the page cache to the socket without a copy in
/// riis (nginx's `sendfile on`). hyper passes body slices through unchanged
/// with its vectored (queue) write strategy, which riis sets.
pub static FILE_PLACEHOLDER: [u8; FILE_STEP] = [0; FILE_STEP];

/// The largest file range one placeholder stands for: one `sendfile` call
/// may move this much (the placeholder is never touched, so its size costs
/// no memory).
pub const FILE_STEP: usize = 4 * 1024 * 1024;

fn is_placeholder(slice: &[u8]) -> bool {
    let start = FILE_PLACEHOLDER.as_ptr() as usize;
    let p = slice.as_ptr() as usize;
    !slice.is_empty() && p >= start && p + slice.len() <= start + FILE_STEP
}

/// The file ranges a connection's placeholders stand for, in body order.
#[derive(Debug, Default)]
pub struct SendfileQueue {
    ranges: Mutex<VecDeque<(Arc<std::fs::File>, u64, u64)>>,
}

impl SendfileQueue {
    /// Queues `length` bytes of `file` from `offset`; returns the
    /// placeholder hyper sends in their place (`length <= FILE_STEP`).
    pub fn push(&self, file: Arc<std::fs::File>, offset: u64, length: usize) -> bytes::Bytes {
        self.ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((file, offset, length as u64));
        bytes::Bytes::from_static(&FILE_PLACEHOLDER[..length])
    }
}

/// Sending a file range straight to the socket.
pub trait Sendfile {
    /// Writes `buf`, a response head or body bytes that a file range
    /// follows at once: the kernel is told more is coming (`MSG_MORE`), so
    /// the bytes leave in the same segments as the file's instead of a small
    /// segment of their own (which cost a quarter of the server's CPU time on
    /// 100 KiB files: a transmit, and a wakeup of the client, per response).
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// `sendfile` of up to `len` bytes of `file` from `offset`.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>>;
}

impl Sendfile for tokio::net::TcpStream {
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&*self).send_with_flags(buf, libc::MSG_MORE)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsFd;
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                let mut at = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
                nix::sys::sendfile::sendfile64(self.as_fd(), file.as_fd(), Some(&mut at), len)
                    .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sendfile for tokio_rustls::server::TlsStream<S> {
    /// TLS never sends file ranges (below): a plain write.
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    /// TLS encrypts in user space: riis never queues placeholders on TLS.
    fn poll_sendfile(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _offset: u64,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// Ending a connection at once: with a reset (TCP RST) instead of a close,
/// or under whoever is using it.
pub trait AbortiveClose {
    /// Makes the socket's close send a reset (`SO_LINGER` of 0): bytes not
    /// yet sent are dropped, and the peer sees the connection fail.
    fn set_abortive_close(&self);

    /// Shuts the socket down both ways now: whoever reads it (a module
    /// holding a connection that switched protocols) sees its end, and
    /// writes fail.
    fn shut_down_now(&self);
}

impl AbortiveClose for tokio::net::TcpStream {
    fn set_abortive_close(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }

    fn shut_down_now(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

impl AbortiveClose for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn set_abortive_close(&self) {
        self.get_ref().0.set_abortive_close();
    }

    fn shut_down_now(&self) {
        self.get_ref().0.shut_down_now();
    }
}

/// Waiting for a parked connection's next request without reading it: only
/// readiness is awaited, so the bytes stay in the kernel until hyper reads
/// them, and the wait costs no buffer.
pub trait WaitReadable {
    /// Ready when the client sent something (or closed).
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WaitReadable for tokio::net::TcpStream {
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl WaitReadable for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    /// hyper's last read drained rustls's plaintext before the connection
    /// parked (it parks only after a read found nothing), so readiness of
    /// the socket underneath is the signal.
    fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Response bytes smaller than this are gathered and sent together at the
/// end of the connection task's turn; larger writes go straight out.
const COALESCE: usize = 64 * 1024;

/// The socket (plain or TLS) and the response bytes gathered during the
/// current turn of the connection task.
pub struct IoState<T> {
    io: T,
    pending: Vec<u8>,
    /// A send of gathered bytes failed: every later write fails the same
    /// way (they would be gathered and dropped, and a streaming response
    /// would go on to a peer that is gone).
    failed: Option<io::ErrorKind>,
    /// Follows the HTTP/1.x request stream for what hyper does not report.
    framing: FramingWatch,
    /// On an HTTP/2 connection: follows its frames for a flood of frames
    /// that carry nothing ([`crate::h2_flood`]).
    flood: Option<Box<crate::h2_flood::FloodWatch>>,
    /// Reading stopped at a request line over the limit.
    request_line_refused: bool,
}

impl<T> IoState<T> {
    /// The connection speaks HTTP/2: its bytes are not HTTP/1.x requests,
    /// but frames, watched for a flood from `read` on (the bytes read so
    /// far, the preface's at least, which hyper gets again).
    pub fn stop_framing_watch(&mut self, read: &[u8]) {
        self.framing.stop();
        let mut flood = Box::<crate::h2_flood::FloodWatch>::default();
        flood.feed(read);
        self.flood = Some(flood);
    }

    /// Whether reading stopped at a request line longer than the limit
    /// ([`FramingWatch::unfinished_request_line`]), with
    /// no response under way: 414 is owed.
    pub fn request_line_refused(&self) -> bool {
        self.request_line_refused
    }

    /// The socket, for a connection lent to a module after a 101.
    pub(crate) fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Whether gathered bytes wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Gives back the gathering buffer of a connection that goes idle.
    pub fn release_buffers(&mut self) {
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }
}

impl<T: AsyncWrite + Unpin> IoState<T> {
    /// Writes out the gathered bytes.
    pub fn poll_send_pending(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
    ) -> Poll<io::Result<()>> {
        self.poll_send_pending_with(cx, activity, |io, cx, buf| Pin::new(io).poll_write(cx, buf))
    }

    /// [`Self::poll_send_pending`] with `write` for each send.
    fn poll_send_pending_with(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
        mut write: impl FnMut(&mut T, &mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let mut sent = 0;
        let result = loop {
            if sent == self.pending.len() {
                // TLS keeps records its socket did not take; they go now.
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Pending => break Poll::Pending,
                    done => break done,
                }
            }
            match write(&mut self.io, cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    sent += n;
                    activity.sent(n);
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        activity.set_blocked(&activity.flush_blocked, result.is_pending());
        self.pending.drain(..sent);
        if let Poll::Ready(Err(e)) = &result {
            self.failed = Some(e.kind());
        }
        if result.is_ready() {
            // Written, or the connection failed: either way nothing is left
            // to send (hyper meets the failure at its next write).
            self.pending.clear();
            // A connection that goes idle keeps no large buffer.
            if self.pending.capacity() > 8 * 1024 {
                self.pending = Vec::new();
            }
        }
        result
    }
}

/// The connection's I/O as hyper drives it, shared with riis: riis still
/// answers on it after hyper gave up on a request it cannot parse, and
/// gathers hyper's small writes of one task turn into one send (pipelined
/// responses go out together, as nginx sends them; see [`Flushing`]). The
/// lock is never contended: hyper and the flushing wrapper run in the same
/// task, and riis writes only after hyper is done.
pub struct SharedIo<T> {
    inner: Arc<Mutex<IoState<T>>>,
    conn: Arc<ConnectionState>,
}

impl<T> SharedIo<T> {
    /// Wraps `io`; the returned handle reaches it after hyper is done.
    pub fn new(io: T, conn: Arc<ConnectionState>) -> (Self, Arc<Mutex<IoState<T>>>) {
        let inner = Arc::new(Mutex::new(IoState {
            io,
            pending: Vec::new(),
            failed: None,
            framing: FramingWatch::default(),
            flood: None,
            request_line_refused: false,
        }));
        (
            Self {
                inner: inner.clone(),
                conn,
            },
            inner,
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, IoState<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> SharedIo<T> {
    /// Gives back the buffers of a connection that goes idle.
    pub fn release_buffers(&self) {
        self.state().release_buffers();
        if let Some(queue) = self.conn.queued_files() {
            let mut ranges = queue.ranges.lock().unwrap_or_else(|e| e.into_inner());
            if ranges.is_empty() {
                *ranges = VecDeque::new();
            }
        }
    }
}

impl<T: WaitReadable> SharedIo<T> {
    /// Ready when the client sent something (see [`WaitReadable`]).
    pub fn poll_wait_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state().io.poll_wait_readable(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let mut state = self.state();
        let mut r = Pin::new(&mut state.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        let ended = match &r {
            Poll::Ready(Ok(())) => read.is_empty() && buf.remaining() > 0,
            // A TLS client that closed TCP without close_notify: rustls
            // calls that a truncation, but after whole requests nothing
            // was cut short (many clients never send close_notify), so it
            // is the end of the client's side like any other.
            Poll::Ready(Err(e)) => e.kind() == io::ErrorKind::UnexpectedEof,
            Poll::Pending => false,
        };
        if ended && state.framing.between_requests() {
            if self.conn.activity.note_peer_closed() {
                // The client ended its side after whole requests (a
                // half-close: `shutdown(SHUT_WR)`, `nc -N`, HTTP/1.0 tools)
                // while one is in service. hyper, told now, would close the
                // connection at once and drop the answers it owes. They go
                // out first: the end is kept from hyper until no request is
                // in service (`Activity::ended` wakes the connection), and
                // hyper then closes after the last response, as nginx does.
                // The socket reports the end again when read again.
                // Requests that wait on a module are given up meanwhile, as
                // before (`Activity::peer_closed`): a client that closed may
                // as well have left.
                return Poll::Pending;
            }
            // Nothing in service: hyper closes the idle connection.
            r = Poll::Ready(Ok(()));
        }
        if !read.is_empty() {
            if let Some(flood) = &mut state.flood {
                if flood.feed(read) {
                    static FLOOD_LOGGED: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    if crate::server::first_this_second(&FLOOD_LOGGED) {
                        tracing::info!(
                            "HTTP/2 flood: a client sent more than eight times in frames what it asked for; its connection is closed"
                        );
                    }
                    return Poll::Ready(Err(io::Error::other(
                        "HTTP/2 flood: frames that carry nothing",
                    )));
                }
            }
            let activity = &self.conn.activity;
            activity.received(read.len());
            if let Some(head) = state.framing.feed(read) {
                activity.framing_conflict.store(head, Ordering::Relaxed);
            }
            activity
                .partial_head
                .store(state.framing.unfinished_head(), Ordering::Relaxed);
        }
        // Only once every request before the line was served and its
        // response left hyper (nothing held behind a full socket): a
        // response still going out is not cut short. Checked on every read,
        // with bytes or without: a line that arrived pipelined behind
        // requests is refused when hyper next reads, after their responses.
        // The limit is the current configuration's, as the parsed head's is.
        if state.framing.unfinished_request_line().is_some_and(|len| {
            let activity = &self.conn.activity;
            activity.in_service.load(Ordering::Relaxed) == 0
                && !activity.write_blocked.load(Ordering::Relaxed)
                && !activity.flush_blocked.load(Ordering::Relaxed)
                && activity.requests_started() == state.framing.heads()
                && len > self.conn.current.load().limits.max_request_line()
        }) {
            // hyper would read on until its buffer is full and answer 431
            // (or wait for the rest of a line shorter than its buffer); the
            // connection ends here, answered with 414 when it closes
            // (`Open::close`).
            state.request_line_refused = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request line is longer than limits.max_url_length",
            )));
        }
        r
    }
}

impl<T: AsyncWrite + Sendfile + Unpin> SharedIo<T> {
    /// Writes slices that include file placeholders: what comes before a
    /// placeholder goes out first, then the placeholder's file range with
    /// `sendfile`. Returns the bytes consumed, stopping at the first partial
    /// write.
    fn write_with_files(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        // Gathered bytes (a response head) go ahead of the file's, in the
        // same segments.
        std::task::ready!(
            state.poll_send_pending_with(cx, &self.conn.activity, |io, cx, buf| {
                io.poll_write_more(cx, buf)
            })
        )?;
        // Slices before the last file range go with MSG_MORE too.
        let last_file = bufs.iter().rposition(|b| is_placeholder(b));
        let mut consumed = 0usize;
        for (i, slice) in bufs.iter().enumerate() {
            let slice: &[u8] = slice;
            if slice.is_empty() {
                continue;
            }
            let result = if is_placeholder(slice) {
                let Some(queue) = self.conn.queued_files() else {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a file placeholder on a connection without sendfile",
                    )));
                };
                let mut ranges = queue.ranges.lock().unwrap_or_else(|e| e.into_inner());
                let Some((file, offset, left)) = ranges.front_mut() else {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a file placeholder without its file range",
                    )));
                };
                let len = slice
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                let r = state.io.poll_sendfile(cx, file, *offset, len);
                if let Poll::Ready(Ok(n)) = r {
                    *offset += n as u64;
                    *left -= n as u64;
                    if *left == 0 {
                        ranges.pop_front();
                    }
                }
                r
            } else if last_file.is_some_and(|last| i < last) {
                state.io.poll_write_more(cx, slice)
            } else {
                Pin::new(&mut state.io).poll_write(cx, slice)
            };
            match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.conn.activity.sent(n);
                    consumed += n;
                    if n < slice.len() {
                        return Poll::Ready(Ok(consumed));
                    }
                }
                Poll::Ready(Err(e)) if consumed == 0 => return Poll::Ready(Err(e)),
                // What went out counts; the error comes back on the next write.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(consumed)),
                Poll::Pending => {
                    return if consumed > 0 {
                        Poll::Ready(Ok(consumed))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
        Poll::Ready(Ok(consumed))
    }

    /// Gathers small writes; sends a large one at once, together with what
    /// is gathered (headers and body in one `writev`); hands file
    /// placeholders to [`SharedIo::write_with_files`].
    fn write_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().any(|b| is_placeholder(b)) {
            return self.write_with_files(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let mut state = self.state();
        if let Some(kind) = state.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if let Some(flood) = &mut state.flood {
            // A client taking answers sends WINDOW_UPDATE as it reads.
            flood.credit_sent(len);
        }
        if state.pending.len() + len > COALESCE && len <= COALESCE {
            std::task::ready!(state.poll_send_pending(cx, &self.conn.activity))?;
        }
        if state.pending.len() + len <= COALESCE {
            for b in bufs {
                state.pending.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        loop {
            let IoState { io, pending, .. } = &mut *state;
            let gathered = pending.len();
            let result = if gathered == 0 {
                Pin::new(io).poll_write_vectored(cx, bufs)
            } else {
                let mut all = Vec::with_capacity(bufs.len() + 1);
                all.push(io::IoSlice::new(pending));
                all.extend_from_slice(bufs);
                Pin::new(io).poll_write_vectored(cx, &all)
            };
            match result {
                Poll::Ready(Ok(0)) if len > 0 => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.conn.activity.sent(n);
                    if n > gathered || (n == gathered && len == 0) {
                        pending.clear();
                        return Poll::Ready(Ok(n - gathered));
                    }
                    // Only gathered bytes went out: try again for the new ones.
                    pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncWrite + Sendfile + Unpin> AsyncWrite for SharedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = self.write_bufs(cx, bufs);
        let activity = &self.conn.activity;
        activity.set_blocked(&activity.write_blocked, written.is_pending());
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred: [`Flushing`] sends the gathered bytes when the task's turn
    /// ends, so responses written in one turn leave in one send.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends what is gathered only: riis closes the socket itself once hyper
    /// is done (see [`finish_connection`]), after it had the chance to
    /// answer a request hyper gave up on.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = self.conn.clone();
        self.state().poll_send_pending(cx, &conn.activity)
    }
}

/// Drives a connection future, then sends what it wrote during the turn
/// before the task goes to sleep (or finishes).
pub struct Flushing<F: Future, T> {
    inner: Pin<Box<F>>,
    io: Arc<Mutex<IoState<T>>>,
    conn: Arc<ConnectionState>,
    done: Option<F::Output>,
}

impl<F: Future, T> Flushing<F, T> {
    /// The wrapped future.
    pub fn inner_mut(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }

    /// Wraps `inner`, whose writes go through the [`SharedIo`] of `io`.
    pub fn new(inner: F, io: Arc<Mutex<IoState<T>>>, conn: Arc<ConnectionState>) -> Self {
        Self {
            inner: Box::pin(inner),
            io,
            conn,
            done: None,
        }
    }
}

impl<F: Future, T: AsyncWrite + Unpin> Future for Flushing<F, T>
where
    F::Output: Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.as_mut().get_mut();
        if this.done.is_none() {
            if let Poll::Ready(out) = this.inner.as_mut().poll(cx) {
                this.done = Some(out);
            }
        }
        let sent = this
            .io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_send_pending(cx, &this.conn.activity);
        if sent.is_pending() {
            // Woken when the socket can take more.
            return Poll::Pending;
        }
        match self.done.take() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

/// Sends `refusal` as a complete HTTP/1.1 response on `io`, then closes.
pub async fn answer_and_close<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T, refusal: Refusal) {
    let bytes = raw_response(refusal);
    let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
    linger_close(io).await;
}

/// The longest a closing connection reads and drops what its client still
/// sends (nginx's `lingering_time`).
const LINGERING_TIME: Duration = Duration::from_secs(30);
/// The longest it waits for the next bytes meanwhile (nginx's
/// `lingering_timeout`).
const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes gracefully: the write side first, then what the client still
/// sends is read and dropped (nginx's lingering close), so the close does
/// not turn into a reset that destroys the end of the last response before
/// the client reads it: a client still sending a body nobody read (a large
/// upload answered early) reads its whole answer. Until the client closes
/// its side, stops sending for [`LINGERING_TIMEOUT`], or
/// [`LINGERING_TIME`] has passed; the bytes are not kept.
pub async fn linger_close<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    linger_close_within(io, LINGERING_TIMEOUT).await;
}

/// How long a connection drained while idle waits for its client's next
/// bytes: its last response may still be in the send buffer, but the
/// server is stopping, and a client that keeps a connection open without
/// sending must not hold the stop for [`LINGERING_TIMEOUT`].
const BRIEF_LINGERING_TIMEOUT: Duration = Duration::from_secs(1);

/// How a connection hyper is done with closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lingering {
    /// nginx's lingering close ([`linger_close`]).
    Full,
    /// The same, waiting at most [`BRIEF_LINGERING_TIMEOUT`] for the
    /// client's next bytes: drained while idle, after serving requests.
    Brief,
    /// Shut and closed at once: drained before a byte was ever sent on it
    /// (a preconnected socket), so no response can be lost.
    None,
}

/// [`linger_close`], waiting at most `quiet` for each next read.
async fn linger_close_within<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T, quiet: Duration) {
    let _ = tokio::time::timeout(LINGERING_TIME, async {
        io.shutdown().await?;
        loop {
            // The buffer lives in the poll, not in every connection's future.
            let read = std::future::poll_fn(|cx| {
                let mut sink = [0u8; 8192];
                let mut buf = ReadBuf::new(&mut sink);
                std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            });
            match tokio::time::timeout(quiet, read).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Ends a connection hyper is done with: answers `refusal` when hyper gave up
/// on a request without answering it, and closes gracefully, as `lingering`
/// says.
pub async fn finish_connection<T: AsyncRead + AsyncWrite + AbortiveClose + Unpin>(
    io: Arc<Mutex<IoState<T>>>,
    refusal: Option<Refusal>,
    abort: bool,
    lingering: Lingering,
) {
    // hyper dropped its handle when the connection future ended; a module
    // may still hold a connection that switched protocols, and is cut off.
    let state = match Arc::try_unwrap(io) {
        Ok(state) => state,
        Err(io) => {
            io.lock()
                .unwrap_or_else(|e| e.into_inner())
                .io
                .shut_down_now();
            return;
        }
    };
    let state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    let (mut io, pending) = (state.io, state.pending);
    if !pending.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&pending)).await;
    }
    if abort {
        // Dropped now, the socket closes with a reset.
        io.set_abortive_close();
        return;
    }
    match refusal {
        Some(r) => answer_and_close(&mut io, r).await,
        None => match lingering {
            Lingering::Full => linger_close(&mut io).await,
            Lingering::Brief => linger_close_within(&mut io, BRIEF_LINGERING_TIMEOUT).await,
            Lingering::None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(header_read: u64, keep_alive: u64) -> Timeouts {
        Timeouts {
            header_read,
            keep_alive,
            ..Timeouts::default()
        }
    }

    /// A socket whose peer is gone.
    struct Broken;
    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_failed_send_fails_every_later_one() {
        let mut state = IoState {
            io: Broken,
            pending: b"HTTP/1.1 200 OK\r\n".to_vec(),
            failed: None,
            framing: FramingWatch::default(),
            flood: None,
            request_line_refused: false,
        };
        let activity = Activity::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = state.poll_send_pending(&mut cx, &activity);
        assert!(matches!(first, Poll::Ready(Err(_))));
        // Nothing gathered since, and still a failure: the gathered bytes
        // of a later write would be dropped, not sent.
        let later = state.poll_send_pending(&mut cx, &activity);
        assert!(
            matches!(&later, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "{later:?}"
        );
    }

    #[test]
    fn a_request_head_is_timed_from_its_first_byte() {
        let activity = Activity::new();
        let t = now();
        let limits = timeouts(10, 75);
        // Idle for 60 seconds, then the next head starts to arrive.
        activity.read_total.store(40, Ordering::Relaxed);
        activity.head_started.store(t + 60, Ordering::Relaxed);
        assert_eq!(activity.check(t + 61, &limits), None);
        // Ten whole ticks may be a little less than ten seconds: the
        // eleventh is past them.
        assert_eq!(activity.check(t + 70, &limits), None);
        assert_eq!(
            activity.check(t + 71, &limits),
            Some(Verdict::Expire(Expiry::HeaderRead))
        );
    }

    #[test]
    fn an_idle_http2_connection_gets_goaway_then_closes() {
        let activity = Activity::new();
        activity.set_http2();
        let t = now();
        let limits = timeouts(10, 75);
        // Frames read while idle (a client's PINGs) are no request head.
        activity.received(17);
        assert_eq!(activity.check(t + 30, &limits), None);
        assert_eq!(activity.check(t + 75, &limits), None);
        assert_eq!(activity.check(t + 76, &limits), Some(Verdict::Drain));
        activity.drain();
        assert_eq!(
            activity.check(t + 77, &limits),
            Some(Verdict::Expire(Expiry::KeepAlive))
        );
    }

    #[test]
    fn an_idle_connection_is_asked_to_park_once_after_a_while() {
        let activity = Activity::new();
        let t = now();
        // Just idle: not yet.
        activity.ask_to_park(t);
        assert!(!activity.park_requested());
        // Idle for PARK_AFTER ticks: asked, once.
        activity.ask_to_park(t + PARK_AFTER);
        assert!(activity.park_requested());
        // Parking clears the request; a parked connection is not asked again.
        activity.set_parked(true);
        assert!(!activity.park_requested());
        activity.ask_to_park(t + 10);
        assert!(!activity.park_requested());
        // Back at work, a request in service is never asked.
        activity.set_parked(false);
        activity.started(false);
        activity.ask_to_park(t + 20);
        assert!(!activity.park_requested());
    }

    #[test]
    fn parser_holds_are_counted_until_dropped() {
        let sweeper = Arc::new(Sweeper::default());
        let holds: Vec<ParserHold> = (0..PARSERS_KEPT).map(|_| sweeper.hold_parser()).collect();
        assert!(!sweeper.parsers_crowded());
        let one_more = sweeper.hold_parser();
        assert!(sweeper.parsers_crowded());
        drop(one_more);
        assert!(!sweeper.parsers_crowded());
        drop(holds);
        assert_eq!(sweeper.parsers.load(Ordering::Relaxed), 0);
    }
}
