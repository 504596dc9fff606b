//! One accepted connection: admission against the connection limits, the
//! I/O handle hyper drives, and the answer to a request hyper cannot parse.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::{Limits, Timeouts};
use crate::strict::{raw_response, Refusal};

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

impl ConnectionCounter {
    /// Admits a connection from `client` under `limits`, or says why not.
    pub fn admit(self: &Arc<Self>, client: IpAddr, limits: &Limits) -> Result<Admission, Refusal> {
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
        if limits.max_connections_per_client > 0 {
            let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(client).or_insert(0);
            *n += 1;
            admission.client = Some(client);
            if *n > limits.max_connections_per_client {
                return Err(Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "this client has limits.max_connections_per_client open connections",
                });
            }
        }
        Ok(admission)
    }
}

/// The server's coarse clock: whole seconds since it started, advanced by
/// the connection sweepers (reading it costs one relaxed load).
static CLOCK: AtomicU32 = AtomicU32::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now() -> u32 {
    CLOCK.load(Ordering::Relaxed)
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

/// Why the sweeper closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head did not arrive in full within `timeouts.header_read`
    /// (slowloris): 408.
    HeaderRead,
    /// Nothing happened on a kept-alive connection for `timeouts.keep_alive`.
    KeepAlive,
    /// The client did not take response bytes for `timeouts.send`.
    Send,
}

/// What one connection did, read by the sweeper to enforce the timeouts
/// without a timer per request. Updated with relaxed atomics on the I/O
/// path.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests being handled (several at once on HTTP/2).
    in_service: AtomicU32,
    /// When the connection last became idle (no request in service).
    idle_since: AtomicU32,
    read_total: AtomicU64,
    /// `read_total` when it became idle: more means a head is arriving.
    read_at_idle: AtomicU64,
    written_total: AtomicU64,
    written_at_request_start: AtomicU64,
    last_write: AtomicU32,
    /// The last write found the socket full.
    write_blocked: AtomicBool,
    expiry: Mutex<Option<Expiry>>,
    kill: tokio::sync::Notify,
}

impl Activity {
    /// A new connection: idle from now.
    pub fn new() -> Arc<Self> {
        let a = Arc::new(Self::default());
        let t = now();
        a.idle_since.store(t, Ordering::Relaxed);
        a.last_write.store(t, Ordering::Relaxed);
        a
    }

    /// A request reached the service; the returned guard marks its end.
    pub fn request_started(&self) -> InService<'_> {
        self.in_service.fetch_add(1, Ordering::Relaxed);
        self.written_at_request_start.store(
            self.written_total.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        InService(self)
    }

    /// `n` response bytes went out.
    fn wrote(&self, n: usize) {
        self.written_total.fetch_add(n as u64, Ordering::Relaxed);
        self.last_write.store(now(), Ordering::Relaxed);
        self.write_blocked.store(false, Ordering::Relaxed);
    }

    /// The socket took no more bytes.
    fn write_would_block(&self) {
        if !self.write_blocked.swap(true, Ordering::Relaxed) {
            self.last_write.store(now(), Ordering::Relaxed);
        }
    }

    /// Whether no byte was written since the current request started: a
    /// failure then may still be answered.
    pub fn nothing_sent_for_request(&self) -> bool {
        self.written_total.load(Ordering::Relaxed)
            == self.written_at_request_start.load(Ordering::Relaxed)
    }

    /// Resolves when the sweeper expires the connection, with the reason.
    pub async fn expired(&self) -> Expiry {
        loop {
            self.kill.notified().await;
            if let Some(e) = *self.expiry.lock().unwrap_or_else(|e| e.into_inner()) {
                return e;
            }
        }
    }

    /// The sweeper's verdict at time `t`.
    fn check(&self, t: u32, timeouts: &Timeouts) -> Option<Expiry> {
        let after =
            |since: u32, limit: u64| limit > 0 && u64::from(t.saturating_sub(since)) >= limit;
        if self.write_blocked.load(Ordering::Relaxed)
            && after(self.last_write.load(Ordering::Relaxed), timeouts.send)
        {
            return Some(Expiry::Send);
        }
        if self.in_service.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle_since = self
            .idle_since
            .load(Ordering::Relaxed)
            .max(self.last_write.load(Ordering::Relaxed));
        let head_arriving =
            self.read_total.load(Ordering::Relaxed) > self.read_at_idle.load(Ordering::Relaxed);
        if head_arriving && after(idle_since, timeouts.header_read) {
            Some(Expiry::HeaderRead)
        } else if !head_arriving && after(idle_since, timeouts.keep_alive) {
            Some(Expiry::KeepAlive)
        } else {
            None
        }
    }
}

/// A request in service; dropping it ends it.
#[derive(Debug)]
pub struct InService<'a>(&'a Activity);

impl Drop for InService<'_> {
    fn drop(&mut self) {
        let a = self.0;
        if a.in_service.fetch_sub(1, Ordering::Relaxed) == 1 {
            a.read_at_idle
                .store(a.read_total.load(Ordering::Relaxed), Ordering::Relaxed);
            a.idle_since.store(now(), Ordering::Relaxed);
        }
    }
}

/// The connections of one worker, swept once a second.
#[derive(Debug, Default)]
pub struct Sweeper {
    connections: Mutex<Vec<Arc<Activity>>>,
}

impl Sweeper {
    /// Tracks a new connection.
    pub fn track(&self, activity: Arc<Activity>) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(activity);
    }

    /// Expires what overran its timeout, until `stop`.
    pub async fn run(&self, timeouts: Timeouts, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            let t = advance_clock();
            let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            // A connection whose task ended holds the only other reference.
            list.retain(|a| Arc::strong_count(a) > 1);
            for a in list.iter() {
                if let Some(e) = a.check(t, &timeouts) {
                    let mut expiry = a.expiry.lock().unwrap_or_else(|e| e.into_inner());
                    if expiry.is_none() {
                        *expiry = Some(e);
                        a.kill.notify_one();
                    }
                }
            }
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

impl<S> Sendfile for tokio_rustls::server::TlsStream<S> {
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

/// Response bytes smaller than this are gathered and sent together at the
/// end of the connection task's turn; larger writes go straight out.
const COALESCE: usize = 64 * 1024;

/// The socket (plain or TLS) and the response bytes gathered during the
/// current turn of the connection task.
pub struct IoState<T> {
    io: T,
    pending: Vec<u8>,
}

impl<T: AsyncWrite + Unpin> IoState<T> {
    /// Writes out the gathered bytes.
    fn poll_send_pending(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
    ) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.pending.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    sent += n;
                    activity.wrote(n);
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => {
                    activity.write_would_block();
                    break Poll::Pending;
                }
            }
        };
        self.pending.drain(..sent);
        if result.is_ready() {
            // Written, or the connection failed: either way nothing is left
            // to send (hyper sees the failure on its own next write).
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
    activity: Arc<Activity>,
    sendfile: Arc<SendfileQueue>,
}

impl<T> SharedIo<T> {
    /// Wraps `io`; the returned handle reaches it after hyper is done.
    pub fn new(
        io: T,
        activity: Arc<Activity>,
        sendfile: Arc<SendfileQueue>,
    ) -> (Self, Arc<Mutex<IoState<T>>>) {
        let inner = Arc::new(Mutex::new(IoState {
            io,
            pending: Vec::new(),
        }));
        (
            Self {
                inner: inner.clone(),
                activity,
                sendfile,
            },
            inner,
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, IoState<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.state().io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity
                .read_total
                .fetch_add(n as u64, Ordering::Relaxed);
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
        std::task::ready!(state.poll_send_pending(cx, &self.activity))?;
        let mut consumed = 0usize;
        for slice in bufs {
            let slice: &[u8] = slice;
            if slice.is_empty() {
                continue;
            }
            let result = if is_placeholder(slice) {
                let mut ranges = self
                    .sendfile
                    .ranges
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
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
            } else {
                Pin::new(&mut state.io).poll_write(cx, slice)
            };
            match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.activity.wrote(n);
                    consumed += n;
                    if n < slice.len() {
                        return Poll::Ready(Ok(consumed));
                    }
                }
                Poll::Ready(Err(e)) if consumed == 0 => return Poll::Ready(Err(e)),
                // What went out counts; the error comes back on the next write.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(consumed)),
                Poll::Pending => {
                    self.activity.write_would_block();
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
        if state.pending.len() + len > COALESCE && len <= COALESCE {
            std::task::ready!(state.poll_send_pending(cx, &self.activity))?;
        }
        if state.pending.len() + len <= COALESCE {
            for b in bufs {
                state.pending.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        loop {
            let IoState { io, pending } = &mut *state;
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
                    self.activity.wrote(n);
                    if n > gathered || (n == gathered && len == 0) {
                        pending.clear();
                        return Poll::Ready(Ok(n - gathered));
                    }
                    // Only gathered bytes went out: try again for the new ones.
                    pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.activity.write_would_block();
                    return Poll::Pending;
                }
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
        self.write_bufs(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_bufs(cx, bufs)
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
        let activity = self.activity.clone();
        self.state().poll_send_pending(cx, &activity)
    }
}

/// Drives a connection future, then sends what it wrote during the turn
/// before the task goes to sleep (or finishes).
pub struct Flushing<F: Future, T> {
    inner: Pin<Box<F>>,
    io: Arc<Mutex<IoState<T>>>,
    activity: Arc<Activity>,
    done: Option<F::Output>,
}

impl<F: Future, T> Flushing<F, T> {
    /// Wraps `inner`, whose writes go through the [`SharedIo`] of `io`.
    pub fn new(inner: F, io: Arc<Mutex<IoState<T>>>, activity: Arc<Activity>) -> Self {
        Self {
            inner: Box::pin(inner),
            io,
            activity,
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
        if self.done.is_none() {
            if let Poll::Ready(out) = self.inner.as_mut().poll(cx) {
                self.done = Some(out);
            }
        }
        let activity = self.activity.clone();
        let sent = self
            .io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_send_pending(cx, &activity);
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

/// Closes gracefully: the write side first, then what the client still
/// sends is read and dropped for a moment (nginx's lingering close), so the
/// close does not turn into a reset that could destroy the last response
/// before the client reads it. At most two seconds and 256 KiB.
pub async fn linger_close<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            match io.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Ends a connection hyper is done with: answers `refusal` when hyper gave up
/// on a request without answering it, and closes gracefully.
pub async fn finish_connection<T: AsyncRead + AsyncWrite + Unpin>(
    io: Arc<Mutex<IoState<T>>>,
    refusal: Option<Refusal>,
) {
    // hyper dropped its handle when the connection future ended.
    let Ok(state) = Arc::try_unwrap(io) else {
        return;
    };
    let state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    let (mut io, pending) = (state.io, state.pending);
    if !pending.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&pending)).await;
    }
    match refusal {
        Some(r) => answer_and_close(&mut io, r).await,
        None => linger_close(&mut io).await,
    }
}

/// What every connection of a server shares: the limits, the timeouts and
/// the count of open connections.
#[derive(Debug)]
pub struct Transport {
    /// `[limits]`.
    pub limits: Limits,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// Open connections.
    pub counter: Arc<ConnectionCounter>,
}

impl Transport {
    /// The transport state for `limits` and `timeouts`.
    pub fn new(limits: Limits, timeouts: Timeouts) -> Self {
        advance_clock();
        Self {
            limits,
            timeouts,
            counter: Arc::default(),
        }
    }
}
