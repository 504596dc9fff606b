//! Shared helpers for the integration tests: start the real server (the
//! binary, or the library with test modules) on an ephemeral loopback port,
//! and a small HTTP/1.1 client over plain sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "riis-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes a file (creating folders) and returns its path.
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `riis` binary running as a child process; killed on drop.
pub struct RunningBinary {
    pub child: Child,
    pub addr: SocketAddr,
}

impl RunningBinary {
    /// Starts `riis serve ARGS --listen 127.0.0.1:0` and waits for its
    /// listening line.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_riis"));
        command
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// `riis serve ARGS` on the configuration's own addresses (no
    /// `--listen`); the address is the first one it prints.
    #[allow(dead_code)]
    pub fn start_as_configured(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_riis"));
        command.arg("serve").args(args);
        Self::spawn(command)
    }

    /// [`Self::start`] with the soft limit of open files lowered to `soft`
    /// (through `sh`'s `ulimit`, which then execs the server).
    #[allow(dead_code)]
    pub fn start_with_soft_nofile(args: &[&str], soft: u64) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -S -n {soft} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_riis"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// [`RunningBinary::start`] with soft and hard limits of open files
    /// both at `limit`.
    #[allow(dead_code)]
    pub fn start_with_nofile(args: &[&str], limit: u64) -> Self {
        Self::start_with_ulimit(args, &format!("-n {limit}"))
    }

    /// `riis serve --config CONFIG` at `RIIS_LOG=info`, its log appended to
    /// `log` (to read what it logged), once it listens.
    #[allow(dead_code)]
    pub fn start_logging_to(config: &Path, log: &Path) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("RIIS_LOG=info exec \"$0\" serve --config \"$1\" --listen 127.0.0.1:0 2>>\"$2\"")
            .arg(env!("CARGO_BIN_EXE_riis"))
            .arg(config)
            .arg(log);
        Self::from_command(command).expect("start the riis binary")
    }

    /// As [`RunningBinary::start`], under the shell's `ulimit {limit}`
    /// (`-n 100`: open files; `-f 16`: the largest file, in KiB).
    #[allow(dead_code)]
    pub fn start_with_ulimit(args: &[&str], limit: &str) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_riis"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// As [`RunningBinary::start`], under the shell's `umask {mask}`
    /// (`027`: files the server makes are not for others).
    #[allow(dead_code)]
    pub fn start_with_umask(args: &[&str], mask: &str) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_riis"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RIIS_LOG", "warn")
            .spawn()
            .expect("start the riis binary");
        let addr = listening_addr(&mut child);
        Self { child, addr }
    }

    /// A server started by the caller's own `command` (stdout piped), once
    /// it listens; `Err` if it could not be started.
    #[allow(dead_code)]
    pub fn from_command(mut command: Command) -> std::io::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RIIS_LOG", "warn")
            .spawn()?;
        let addr = listening_addr(&mut child);
        Ok(Self { child, addr })
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().unwrap()
    }
}

impl Drop for RunningBinary {
    /// Stops the server as an operator would (SIGTERM), so that what it
    /// started stops with it (a FastCgi application's php-cgi processes
    /// outlive a SIGKILLed riis); SIGKILL after 2 seconds, for a server
    /// still draining a request the test left hanging.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the first `riis: listening on …` line `child` prints on
/// its piped stdout; the rest of its output is drained from then on, so it
/// never blocks on a full pipe.
pub fn listening_addr(child: &mut std::process::Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .expect("riis printed nothing before exiting")
        .unwrap();
    let addr = line
        .strip_prefix("riis: listening on http://")
        .or_else(|| line.strip_prefix("riis: listening on https://"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .parse()
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, data: &[u8]) {
        self.reader.get_mut().write_all(data).unwrap();
    }

    /// A GET with Host and nothing else.
    pub fn get(&mut self, path: &str) -> Response {
        self.send_raw(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    /// Reads one response; `head_only` for HEAD requests.
    pub fn read_response(&mut self, head_only: bool) -> Response {
        self.read_response_after(String::new(), head_only)
    }

    /// Reads a response's status line alone (the rest follows with
    /// [`Connection::read_response_after`]).
    pub fn read_status_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// Reads the rest of a response whose first `read` bytes of head (its
    /// status line) were read already.
    pub fn read_response_after(&mut self, read: String, head_only: bool) -> Response {
        let mut head = read.into_bytes();
        loop {
            let n = self.reader.read_until(b'\n', &mut head).unwrap();
            assert!(n > 0, "connection closed before a full response head");
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        parsed.parse(&head).unwrap();
        let status = parsed.code.unwrap();
        let reason = parsed.reason.unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                let size =
                    usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).unwrap();
        } else {
            self.reader.read_to_end(&mut resp.body).unwrap();
        }
        resp
    }

    /// Ends the client's sending side (a half-close).
    #[allow(dead_code)]
    pub fn shutdown_write(&mut self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Write);
    }

    /// Reads the next line (through `\n`), as text; empty at the end.
    #[allow(dead_code)]
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// Reads whatever bytes come next, as they are.
    #[allow(dead_code)]
    pub fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }

    /// Writes raw bytes, reporting a connection the server closed.
    pub fn try_send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(data)
    }

    /// Whether the server closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }

    /// Whether the server closed the connection, with or without a reset
    /// (a close with unread bytes in the server's buffer resets), and sent
    /// nothing more before it.
    pub fn is_closed_or_reset(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A port free on every address at the moment (bound and let go), for a
/// test that needs the same port on two addresses.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Connection::open(addr).get(path)
}

/// Writes a configuration file whose site root is `root`.
/// `riis reload --config CONFIG`: checks the file, then signals the server
/// its `pid_file` names.
#[allow(dead_code)]
pub fn riis_reload(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["reload", "--config", config.to_str().unwrap()])
        .output()
        .unwrap()
}

pub fn write_config(dir: &TempDir, root: &Path, body: &str) -> PathBuf {
    let text = format!(
        "{body}\n[[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
        root.display()
    );
    dir.write("riis.toml", text)
}

/// The server library on its own runtime thread, with test modules compiled
/// in (for behaviour no built-in module shows). `ROOT` in the configuration
/// text is replaced by a fresh temporary folder. Stops, draining, on
/// [`InProcessServer::stop`] or drop.
pub struct InProcessServer {
    pub addr: SocketAddr,
    /// The runtime the server runs on (for work that must run there, as a
    /// reload does).
    pub runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: TempDir,
}

impl InProcessServer {
    pub fn start(
        config_text: &str,
        modules: &'static [(&'static str, riis_pipeline::RegisterModuleFn)],
    ) -> Self {
        let dir = TempDir::new("lib");
        let text = config_text.replace("ROOT", &dir.path().display().to_string());
        let path = dir.write("riis.toml", text);
        let config = riis_server::ServerConfig::load(&path).unwrap();
        let server = riis_server::Server::with_modules(config, modules).unwrap();
        Self::run(server, dir)
    }

    /// Runs `server`, made from a configuration in `dir`, which goes with it.
    pub fn run(server: riis_server::Server, dir: TempDir) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bound = server.bind(2).unwrap();
                addr_tx
                    .send((bound.local_addrs()[0], tokio::runtime::Handle::current()))
                    .unwrap();
                bound
                    .serve(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let (addr, runtime) = addr_rx.recv().unwrap();
        Self {
            addr,
            runtime,
            stop: Some(stop_tx),
            thread: Some(thread),
            dir,
        }
    }

    /// The folder `ROOT` stood for.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server and waits until it has drained.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// An HTTP/2 client connection to `addr` with prior knowledge (cleartext);
/// its connection task runs on the current runtime.
pub async fn http2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http2_connection(addr).await.0
}

/// Reads `body`'s data frames onto `got` until it holds `len` bytes; each
/// frame must come within 10 s (`waiting_for` says what the test waits for
/// when one does not).
pub async fn read_data_until<B>(body: &mut B, got: &mut Vec<u8>, len: usize, waiting_for: &str)
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    while got.len() < len {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .unwrap_or_else(|_| panic!("no data within 10 s: waiting for {waiting_for}"))
            .expect("the body goes on")
            .unwrap();
        got.extend_from_slice(&frame.into_data().expect("data, not the end"));
    }
}

/// [`http2_client`], with the connection's task, which ends when the
/// connection closes.
pub async fn http2_connection<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// The repository's `include/` folder (the native module headers).
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include")
}

/// The riis binary as a user permissions apply to: `nobody` through
/// setpriv when the tests run as root (who is denied nothing), the tests'
/// own user otherwise. Where `nobody` cannot reach the built binary (a
/// target folder under /root), a copy in `dir` runs instead.
#[allow(dead_code)]
pub fn riis_unprivileged(dir: &TempDir) -> Command {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Command::new(env!("CARGO_BIN_EXE_riis"));
    }
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        // By number: the group is `nogroup` on Debian, `nobody` elsewhere.
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c
    };
    let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_riis"));
    let reachable = as_nobody()
        .arg(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        let copy = dir.path().join("riis");
        std::fs::copy(&binary, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        binary = copy;
    }
    let mut c = as_nobody();
    c.arg(binary);
    c
}

/// `riis COMMAND --config CONFIG` (check-config, reload, status), run to
/// its end.
#[allow(dead_code)]
pub fn riis_command(command: &str, config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_riis"))
        .arg(command)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("run riis {command}: {e}"))
}

/// `riis status --config CONFIG`: the running server's report (the command
/// must succeed).
#[allow(dead_code)]
pub fn riis_status(config: &Path) -> String {
    let out = riis_command("status", config);
    assert!(
        out.status.success(),
        "riis status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test application's answer: its `key=value` lines.
#[allow(dead_code)]
pub fn fields(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Waits until `done` holds; fails with `what` after 20 seconds.
#[allow(dead_code)]
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `node` (or Debian's older `nodejs`) on the `PATH`; outside CI a machine
/// without it skips the test (`None`), in CI that is a failure.
#[allow(dead_code)]
pub fn node() -> Option<PathBuf> {
    let found =
        find_versioned_program("node", &[]).or_else(|| find_versioned_program("nodejs", &[]));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node is missing (CI installs it: apt-get install nodejs)"
        );
        eprintln!("skipped: node is not installed");
    }
    found
}

/// Builds a shared library from C or C++ `sources` with `compiler` (`cc`,
/// `g++`), warnings as errors, against `include/`. `None` when the compiler
/// is missing outside CI; in CI (`CI=true`) a missing compiler fails the
/// test.
pub fn compile_shared(compiler: &str, sources: &[&Path], out: &Path, flags: &[&str]) -> Option<()> {
    let status = Command::new(compiler)
        .args([
            "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread",
        ])
        .arg("-I")
        .arg(include_dir())
        .args(flags)
        .args(sources)
        .arg("-o")
        .arg(out)
        .status();
    match status {
        Ok(s) => {
            assert!(s.success(), "{compiler} failed on {sources:?}");
            Some(())
        }
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: {compiler} is not available ({e})");
            None
        }
        Err(e) => panic!("{compiler} is required in CI: {e}"),
    }
}

/// A program named `name`, or `name` with a version after it (`php-fpm8.2`),
/// the newest found, on the `PATH` or in `more` folders.
#[allow(dead_code)]
pub fn find_versioned_program(name: &str, more: &[&str]) -> Option<PathBuf> {
    let mut folders: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    folders.extend(more.iter().map(PathBuf::from));
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n == name
                        || n.strip_prefix(name)
                            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                })
            })
            .collect();
        found.sort();
        if let Some(program) = found.pop() {
            return Some(program);
        }
    }
    None
}

/// Accepts any certificate and remembers the one the server presented: the
/// tests check *which* certificate came, not a chain of trust.
#[derive(Debug, Default)]
pub struct Capture {
    pub seen: std::sync::Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A loopback address where connections are refused, for as long as the
/// test process runs: a socket bound there that never listens keeps the
/// port from anyone else (a port merely found free and released could be
/// taken by another test's server before it is connected to).
pub fn refusing_address() -> SocketAddr {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .expect("an IP address");
    // Kept open (and so reserved) until the process ends.
    std::mem::forget(socket);
    addr
}

/// Writes `head`, then a body of `body_len` bytes, to `stream` from a
/// thread of its own, ignoring write errors (the server may answer and
/// close before it has read the body): the caller reads the answer
/// meanwhile.
#[allow(dead_code)]
pub fn send_in_background(
    stream: &std::net::TcpStream,
    head: String,
    body_len: usize,
) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'x'; body_len]);
    })
}

/// `riis serve --config CONFIG --listen 127.0.0.1:0` as systemd starts a
/// `Type=notify` unit with `WatchdogSec=`: `NOTIFY_SOCKET` names `notify`
/// (a datagram socket the test binds) and the watchdog wants a ping every
/// `watchdog_usec`. systemd names the process it watches
/// (`WATCHDOG_PID`); `sh`'s `exec` keeps the shell's.
#[allow(dead_code)]
pub fn started_as_by_systemd(config: &Path, notify: &Path, watchdog_usec: u64) -> RunningBinary {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", watchdog_usec.to_string());
    RunningBinary::from_command(command).unwrap()
}

/// An HTTP/2 client (prior knowledge) on `addr`, once the server's
/// settings say it takes extended CONNECT (RFC 8441). The connection runs
/// in a task of the current runtime.
#[allow(dead_code)]
pub async fn http2_websocket_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let client = client.ready().await.unwrap();
    for _ in 0..500 {
        if client.is_extended_connect_protocol_enabled() {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server's settings never allowed extended CONNECT");
}

/// An HTTP/2 extended CONNECT for `protocol` at `url` (`http://host/path`).
#[allow(dead_code)]
pub fn extended_connect(url: &str, protocol: &str) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(url)
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from(protocol))
        .body(())
        .unwrap()
}

/// Reads `body` on until what was read ends with `want`, releasing the
/// flow-control window as it goes.
#[allow(dead_code)]
pub async fn read_stream_until(body: &mut h2::RecvStream, want: &str, got: &mut String) {
    while !got.ends_with(want) {
        let Some(data) = body.data().await else {
            panic!("the stream ended before {want:?}: {got:?}");
        };
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
        got.push_str(std::str::from_utf8(&data).unwrap());
    }
}

/// Reads `body` to its end, which must bring no more bytes (an empty
/// DATA frame may carry END_STREAM).
#[allow(dead_code)]
pub async fn expect_stream_end(body: &mut h2::RecvStream) {
    while let Some(data) = body.data().await {
        assert_eq!(data.unwrap(), "", "nothing more before the stream's end");
    }
}
