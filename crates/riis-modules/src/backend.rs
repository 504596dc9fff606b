//! Connections to backends, shared by the modules that pass requests on
//! (FastCgi to an application, ReverseProxy to another HTTP server): where
//! a backend listens ([`Address`]), opening a [`Connection`] to it, and the
//! idle connections kept for later requests ([`Pools`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UnixStream};

/// Milliseconds on a clock of the process's own (from 1, so that 0 can
/// mean "never"): a time that fits an atomic.
pub(crate) fn clock_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// The instant `ms` of [`clock_ms`] stands for.
pub(crate) fn clock_instant(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms.saturating_sub(1))
}

fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// How long an idle connection is kept.
const IDLE_TIME: Duration = Duration::from_secs(60);
/// The send buffer of a TCP connection to a backend.
const SEND_BUFFER: u32 = 128 * 1024;

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `host:port` (a name is resolved at each connection).
    Tcp(String),
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{text}`: a socket path after `unix:` must be absolute"
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let port = text
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok())
            .filter(|&port| port != 0);
        if port.is_none() || text.contains('/') {
            return Err(format!(
                "`{text}` is neither `host:port` nor `unix:/path/to/socket`"
            ));
        }
        Ok(Address::Tcp(text.to_owned()))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(host_port) => f.write_str(host_port),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A connection to a backend.
pub enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connection {
    /// Connects to `address` (a name is resolved now; each of its
    /// addresses is tried in turn).
    pub(crate) async fn open(address: &Address) -> std::io::Result<Self> {
        Ok(match address {
            Address::Tcp(host_port) => {
                let mut last_error = None;
                for addr in tokio::net::lookup_host(host_port.as_str()).await? {
                    let socket = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    // A small send buffer: a write that waits wakes as the
                    // application takes body, so a slow reader is seen
                    // taking it (a buffer grown to megabytes would look
                    // silent for many seconds at a time).
                    let _ = socket.set_send_buffer_size(SEND_BUFFER);
                    match socket.connect(addr).await {
                        Ok(stream) => {
                            // Records are written whole; waiting to fill a
                            // segment only delays the request.
                            let _ = stream.set_nodelay(true);
                            return Ok(Connection::Tcp(stream));
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                return Err(last_error.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host_port} has no address"),
                    )
                }));
            }
            Address::Unix(path) => Connection::Unix(UnixStream::connect(path).await?),
        })
    }
}

impl Connection {
    /// Whether the idle connection is as it was left: open, with nothing
    /// to read. Data would be a stray answer that the next request would
    /// take for its own; end of file, the application closed it.
    pub(crate) fn is_quiet(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = match self {
            Connection::Tcp(stream) => stream.as_raw_fd(),
            Connection::Unix(stream) => stream.as_raw_fd(),
        };
        let mut byte = [0u8; 1];
        matches!(
            recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN)
        )
    }
}

// A connection reads and writes as the stream it holds (both are `Unpin`),
// so that protocol layers such as hyper's client can run on either.
impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
            Connection::Unix(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(stream) => std::pin::Pin::new(stream).poll_write(cx, data),
            Connection::Unix(stream) => std::pin::Pin::new(stream).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, data),
            Connection::Unix(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, data),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => std::pin::Pin::new(stream).poll_flush(cx),
            Connection::Unix(stream) => std::pin::Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
            Connection::Unix(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// A connection that may be kept idle for a later request.
pub(crate) trait Reusable: Send + 'static {
    /// Whether the idle connection can still carry a request.
    fn is_reusable(&self) -> bool;

    /// Whether a pooled connection counts as idle for `riis status` (an
    /// HTTP/2 connection stays pooled while it carries streams).
    fn counts_as_idle(&self) -> bool {
        true
    }
}

impl Reusable for Connection {
    fn is_reusable(&self) -> bool {
        self.is_quiet()
    }
}

/// The pools' hasher: every request looks a thread and an address up
/// (twice, to take a connection and to put it back), and SipHash cost
/// about a thousand instructions of a proxied request. The keys are not
/// the client's, so flooding is not a concern.
type FastHash = foldhash::fast::RandomState;

/// One thread's idle connections.
struct ThreadPools<C, K> {
    /// Per address, each with when it went idle, oldest first.
    lists: HashMap<K, Vec<(C, Instant)>, FastHash>,
    /// A sweeper task runs for them.
    swept: bool,
}

/// The idle connections, per application address (or any key `K` that
/// tells which connections may serve which requests) and thread, for
/// `kept_connections`. Per thread, because a connection belongs to the
/// runtime (the event loop) of the thread it was made on: each riis worker
/// keeps its own.
pub(crate) struct Pools<C, K = Address> {
    idle: Mutex<HashMap<std::thread::ThreadId, ThreadPools<C, K>, FastHash>>,
    /// Idle connections, for `riis status`.
    count: AtomicUsize,
}

impl<C, K> Default for ThreadPools<C, K> {
    fn default() -> Self {
        Self {
            lists: HashMap::default(),
            swept: false,
        }
    }
}

impl<C, K> Default for Pools<C, K> {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
            count: AtomicUsize::new(0),
        }
    }
}

impl<C: Reusable, K: std::hash::Hash + Eq + Clone + Send + 'static> Pools<C, K> {
    #[allow(clippy::type_complexity)]
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<std::thread::ThreadId, ThreadPools<C, K>, FastHash>>
    {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection to `address` that is quiet
    /// and not too old; the others on the way are closed.
    pub(crate) fn take(&self, address: &K) -> Option<C> {
        loop {
            let (connection, since) = {
                let mut idle = self.lock();
                let list = idle
                    .get_mut(&std::thread::current().id())?
                    .lists
                    .get_mut(address)?;
                let popped = list.pop()?;
                self.count
                    .fetch_sub(usize::from(popped.0.counts_as_idle()), Ordering::Relaxed);
                popped
            };
            // Checked outside the lock every worker shares.
            if since.elapsed() < IDLE_TIME && connection.is_reusable() {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` (at most `most` per address on this thread),
    /// starting this thread's sweeper if none runs.
    pub(crate) fn put(self: &Arc<Self>, address: &K, connection: C, most: usize) {
        let thread = std::thread::current().id();
        let mut idle = self.lock();
        let ours = idle.entry(thread).or_default();
        let list = match ours.lists.get_mut(address) {
            Some(list) => list,
            None => ours.lists.entry(address.clone()).or_default(),
        };
        while list.len() >= most.max(1) {
            // The oldest goes: it is the likeliest to be closed by now.
            let (oldest, _) = list.remove(0);
            self.count
                .fetch_sub(usize::from(oldest.counts_as_idle()), Ordering::Relaxed);
        }
        self.count
            .fetch_add(usize::from(connection.counts_as_idle()), Ordering::Relaxed);
        list.push((connection, Instant::now()));
        if !std::mem::replace(&mut ours.swept, true) {
            tokio::spawn(self.clone().sweep(thread));
        }
    }

    /// Closes `thread`'s idle connections that expired or that the
    /// application closed (each holds one of its workers, or a file
    /// descriptor), a few times a minute, until none is left.
    async fn sweep(self: Arc<Self>, thread: std::thread::ThreadId) {
        loop {
            tokio::time::sleep(IDLE_TIME / 4).await;
            let mut idle = self.lock();
            let Some(ours) = idle.get_mut(&thread) else {
                return;
            };
            let mut closed = 0;
            for list in ours.lists.values_mut() {
                list.retain(|(connection, since)| {
                    let keep = since.elapsed() < IDLE_TIME && connection.is_reusable();
                    if !keep && connection.counts_as_idle() {
                        closed += 1;
                    }
                    keep
                });
            }
            self.count.fetch_sub(closed, Ordering::Relaxed);
            ours.lists.retain(|_, list| !list.is_empty());
            if ours.lists.is_empty() {
                ours.swept = false;
                return;
            }
        }
    }

    /// Idle connections now.
    pub(crate) fn idle_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Closes every idle connection (before the runtime they belong to
    /// goes).
    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_or_unix_paths() {
        assert_eq!(
            "127.0.0.1:9000".parse::<Address>(),
            Ok(Address::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            "[::1]:9000".parse::<Address>(),
            Ok(Address::Tcp("[::1]:9000".into()))
        );
        assert_eq!(
            "php:9000".parse::<Address>(),
            Ok(Address::Tcp("php:9000".into()))
        );
        assert_eq!(
            "unix:/run/php/php-fpm.sock".parse::<Address>(),
            Ok(Address::Unix("/run/php/php-fpm.sock".into()))
        );
        for bad in [
            "",
            "9000",
            ":9000",
            "host:",
            "host:0",
            "host:99999",
            "unix:relative.sock",
            "/run/php.sock",
            "http://host:9000",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
