//! One accepted connection: admission against the connection limits, the
//! I/O handle hyper drives, and the answer to a request hyper cannot parse.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::Limits;
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

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// The connection's I/O, shared between hyper and riis: after hyper gives
/// up on a request it cannot parse, riis still answers on it. The lock is
/// never contended (hyper polls from one task; riis writes after hyper is
/// done).
pub struct SharedIo<T> {
    inner: Arc<Mutex<T>>,
    written: Arc<WriteMark>,
}

/// Bytes written on a connection, and how many had been when the current
/// request started: when both are equal at a failure, nothing of that
/// request's response went out and riis may still answer it.
#[derive(Debug, Default)]
pub struct WriteMark {
    total: AtomicU64,
    at_request_start: AtomicU64,
}

impl WriteMark {
    /// A request starts.
    pub fn request_started(&self) {
        self.at_request_start
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Whether no byte was written since the current request started.
    pub fn nothing_sent_for_request(&self) -> bool {
        self.total.load(Ordering::Relaxed) == self.at_request_start.load(Ordering::Relaxed)
    }
}

impl<T> SharedIo<T> {
    /// Wraps `io`; the returned handle reaches it after hyper is done.
    pub fn new(io: T, written: Arc<WriteMark>) -> (Self, Arc<Mutex<T>>) {
        let inner = Arc::new(Mutex::new(io));
        (
            Self {
                inner: inner.clone(),
                written,
            },
            inner,
        )
    }

    fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = r {
            self.written.total.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn with<R>(&self, f: impl FnOnce(Pin<&mut T>) -> R) -> R
    where
        T: Unpin,
    {
        let mut io = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(Pin::new(&mut *io))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|io| io.poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SharedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.with(|io| io.poll_write(cx, buf));
        self.count(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.with(|io| io.poll_write_vectored(cx, bufs));
        self.count(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.with(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|io| io.poll_flush(cx))
    }

    /// Flushes only: riis closes the socket itself once hyper is done (see
    /// [`finish_connection`]), after it had the chance to answer a request
    /// hyper gave up on.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|io| io.poll_flush(cx))
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
    io: Arc<Mutex<T>>,
    refusal: Option<Refusal>,
) {
    // hyper dropped its handle when the connection future ended.
    let Ok(io) = Arc::try_unwrap(io) else {
        return;
    };
    let mut io = io.into_inner().unwrap_or_else(|e| e.into_inner());
    match refusal {
        Some(r) => answer_and_close(&mut io, r).await,
        None => linger_close(&mut io).await,
    }
}

/// What every connection of a server shares: the limits and the count of
/// open connections.
#[derive(Debug)]
pub struct Transport {
    /// `[limits]`.
    pub limits: Limits,
    /// Open connections.
    pub counter: Arc<ConnectionCounter>,
}

impl Transport {
    /// The transport state for `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counter: Arc::default(),
        }
    }
}
