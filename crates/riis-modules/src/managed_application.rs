//! Applications that riis starts and watches itself, and passes requests
//! to: FastCgi's (IIS's `<fastCgi><application fullPath=…>`: PHP's
//! `php-cgi`, or any program that is a FastCGI responder when its standard
//! input is a listening socket, the FastCGI convention
//! `FCGI_LISTENSOCK_FILENO`), HttpPlatformHandler's (IIS's
//! `<httpPlatform processPath=…>`: any program that serves HTTP on the port
//! it is given, Node.js, Python, Java) and AspNetCoreModule's (IIS's
//! `<aspNetCore processPath=…>`: an ASP.NET Core application).
//! [`Endpoint`] tells them apart, and [`PortConvention`] the last two.
//!
//! **FastCGI** ([`Endpoint::ListeningSocket`]): at the first request that
//! needs it, riis makes a private temporary folder (mode 0700, each socket
//! 0600, whatever the umask: whoever can connect runs scripts as riis's
//! user) and starts `instances` processes, each with a Unix socket of its
//! own, listening, as its standard input. riis hands each process as many
//! requests at a time as it serves (one, IIS's FastCGI model; or
//! `PHP_FCGI_CHILDREN`, the children a `php-cgi` forks to share its
//! socket); the others wait in riis, where a request whose client left or
//! whose wait passed `activity_timeout` is dropped before any process saw
//! it (a queue in the sockets would run it later all the same), and past
//! `queue_length` waiting requests are refused (503, IIS's
//! `queueLength`). Knowing the process of each request, riis kills one
//! whose request passed `request_timeout` or `activity_timeout`, as IIS
//! does, and a new one takes its place: a script blocked on a database
//! that never answers holds its process, not the pool, for ever. A process
//! ended or started again gets a new socket, so that nothing sent to the
//! old one reaches it.
//!
//! **HTTP** ([`Endpoint::Port`]): each process is given a free loopback
//! port of its own, in the `HTTP_PLATFORM_PORT` environment variable and
//! wherever `%HTTP_PLATFORM_PORT%` appears in its arguments and
//! environment (IIS's HttpPlatformHandler does the same; for an ASP.NET
//! Core application, `ASPNETCORE_PORT`, with a pairing token in
//! `ASPNETCORE_TOKEN`). A process takes
//! requests once a connection to its port succeeds and every socket
//! listening on the port is its process group's (looked at every
//! [`CHECK_EVERY`]; see [`probe`]); one that does not listen within `startup_time_limit`
//! is killed and counts as failed, and after `startup_retry_count` such
//! starts in a row the application is stopped as rapid fail protection
//! stops it. Requests go to the listening processes in turn. A process
//! started again gets a new port. What the processes write to their
//! standard output is logged at `info`, their standard error at `warn`.
//!
//! For both: a process that exits is started again, and what it
//! forked is killed with it. One that fails (exits with an error or a
//! signal, or, for FastCGI, within a second of starting without the
//! application having taken a request up in the 30 seconds before; for
//! HTTP, exits at all) counts towards
//! `rapid_fails_per_minute`: past it, the application is stopped and its
//! requests get 503 for a minute, then the next request starts it again
//! (IIS's rapid fail protection). If a start fails (the program cannot be
//! run, no socket could be made), requests get 503 for a second, then the
//! next one tries again. The processes are stopped (SIGTERM to each one's
//! process group, SIGKILL two seconds later, or after an ASP.NET Core
//! application's `shutdown_time_limit`) when no configuration holds
//! them any more (killed at once when no configuration with the module is
//! left) or the server stops, and the server's stop waits for that (see
//! [`wait_for_stops`]); each process group holds the
//! processes a program forks (`PHP_FCGI_CHILDREN`). What they write to
//! their standard error is logged a line (of at most 1 KiB) at a time.
//!
//! Applications are the process's, not a configuration's: a
//! configuration takes one up ([`acquire`]) when it starts (the
//! applications its locations name, at ApplicationStart) or at its first
//! request for it, and lets it go ([`release`]) when it retires. A reload
//! whose application settings are the same takes the running processes
//! over (IIS recycles FastCGI processes when their `<application>`
//! changes, not for every change of the configuration): the old
//! configuration still holds them when the new one starts. Those of an
//! application no configuration names any more are stopped when the last
//! that held them retires. `monitor_changes_to` names a file (`php.ini`)
//! whose change recycles the processes, as IIS's attribute of that name
//! does.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;
use std::fmt::Write as _;

use crate::backend::Address;

/// The most `instances` an application may have.
const MAX_INSTANCES: usize = 256;

/// How often exited processes are looked for. Until the next one starts, a
/// FastCGI process that ended leaves its requests waiting: with `php-cgi`
/// recycling every few requests, a longer pause caps the application's
/// rate (200 ms gave 50 requests a second with `PHP_FCGI_MAX_REQUESTS =
/// 5`). A look is a `waitpid` per process.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// How long stopping processes get before they are killed, unless their
/// application says otherwise ([`ApplicationConfig::stop_grace`]).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);

/// The longest line of the processes' standard error that is logged, as
/// for `FCGI_STDERR`: the rest of a longer line is counted and dropped, so
/// that a line without an end fills neither riis's memory nor its log.
const MAX_LINE: usize = 1024;

/// The threads finishing stops (the SIGKILL after [`STOP_GRACE`], the
/// reaping), of every application: the server's stop waits for them.
static STOPPING: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// A process that ends cleanly this soon after it started counts as failed
/// unless the application took requests up lately (see [`TAKEN_BEFORE`]):
/// a program that exits at once, not a FastCGI application, would
/// otherwise be started again for ever, and serve nothing. With requests
/// taken up, such an exit is `php-cgi`'s recycling (every
/// `PHP_FCGI_MAX_REQUESTS` requests, several times a second under load),
/// started again as IIS recycles it, whether or not riis read the
/// answers: clients that leave before their answers must not make it look
/// like a crash.
const STAY_UP: Duration = Duration::from_secs(1);

/// How long before a process's start a request taken up counts as work of
/// the application's: requests handed over wait for a process, and one
/// that starts after clients left serves what they left behind (a test saw
/// processes start seconds after the last client left).
const TAKEN_BEFORE: Duration = Duration::from_secs(30);

/// When an application last took a request up: it answered, or it was
/// handed the request whole and the client left before the answer (riis
/// then reads none, but a client that always leaves must not make
/// `php-cgi`'s recycling look like crashes, and have rapid fail protection
/// stop the application).
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// Milliseconds since [`crate::process_start`], plus one; 0: never.
    last: AtomicU64,
}

impl Taken {
    fn stamp(at: Instant) -> u64 {
        at.saturating_duration_since(crate::process_start())
            .as_millis() as u64
            + 1
    }

    /// A request was taken up now.
    pub(crate) fn note(&self) {
        self.last
            .fetch_max(Self::stamp(Instant::now()), Ordering::Relaxed);
    }

    /// Whether one was taken up at `at` or later.
    fn since(&self, at: Instant) -> bool {
        self.last.load(Ordering::Relaxed) >= Self::stamp(at)
    }
}

/// How long rapid fail protection keeps an application stopped; the first
/// request after it starts the application again (IIS keeps it stopped
/// until the pool recycles; a cause that passed, a full disk, a database
/// back, should not need an operator).
const FAILED_FOR: Duration = Duration::from_secs(60);

/// How long after a start that failed (the program could not be run, no
/// socket could be made) requests get 503 without another try.
const START_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The `application` table of the `fastcgi` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationConfig {
    /// The program (IIS's `fullPath`), relative to the configuration's
    /// folder; it must be an executable file.
    #[serde(deserialize_with = "program")]
    pub path: PathBuf,
    /// Its arguments (IIS's `arguments`).
    #[serde(default, deserialize_with = "arguments")]
    pub arguments: Vec<String>,
    /// Variables added to the environment riis runs in (IIS's
    /// `environmentVariables`), such as `PHP_FCGI_MAX_REQUESTS`.
    #[serde(default, deserialize_with = "environment")]
    pub environment: BTreeMap<String, String>,
    /// How many processes run (IIS's `maxInstances`).
    #[serde(default = "default_instances", deserialize_with = "instances")]
    pub instances: usize,
    /// How many requests may wait for a process to be free; past it, 503
    /// (IIS's `queueLength`).
    #[serde(default = "default_queue_length")]
    pub queue_length: usize,
    /// How many requests a process serves before riis starts another in
    /// its place (IIS's `instanceMaxRequests`).
    #[serde(
        default = "default_instance_max_requests",
        deserialize_with = "instance_max_requests"
    )]
    pub instance_max_requests: u64,
    /// Failed exits within a minute past which the application is stopped
    /// (IIS's `rapidFailsPerMinute`).
    #[serde(default = "default_rapid_fails")]
    pub rapid_fails_per_minute: usize,
    /// A file whose change recycles the processes (IIS's
    /// `monitorChangesTo`), relative to the configuration's folder.
    #[serde(default, deserialize_with = "monitored")]
    pub monitor_changes_to: Option<PathBuf>,
    /// How requests reach the processes: FastCGI's listening socket for
    /// the `fastcgi` section's table; HttpPlatformHandler builds its own.
    #[serde(skip)]
    pub(crate) endpoint: Endpoint,
    /// The folder the processes start in; `None`: riis's own.
    #[serde(skip)]
    pub(crate) working_directory: Option<PathBuf>,
    /// How long stopping processes get, after SIGTERM, before they are
    /// killed (the ASP.NET Core Module's `shutdownTimeLimit`; FastCGI and
    /// HttpPlatformHandler have no setting: [`STOP_GRACE`]).
    #[serde(skip, default = "default_stop_grace")]
    pub(crate) stop_grace: Duration,
}

fn default_stop_grace() -> Duration {
    STOP_GRACE
}

/// How requests reach an application's processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    /// One Unix socket, listening, on every process's standard input
    /// (FastCGI's `FCGI_LISTENSOCK_FILENO`).
    #[default]
    ListeningSocket,
    /// A loopback TCP port per process, named in an environment variable
    /// ([`PortConvention`]).
    Port {
        /// How long a process may take to listen before it is killed
        /// (IIS's `startupTimeLimit`).
        startup_time_limit: Duration,
        /// Starts in a row that did not listen past which the application
        /// is stopped (IIS's `startupRetryCount`).
        startup_retry_count: usize,
        /// How the process is told its port, and whether it is paired.
        convention: PortConvention,
    },
}

impl Endpoint {
    /// What the log calls such an application.
    fn label(self) -> &'static str {
        match self {
            Self::ListeningSocket => "FastCGI",
            Self::Port { convention, .. } => convention.label(),
        }
    }
}

/// How an HTTP application learns its port, and what else it is given:
/// the convention of the IIS module whose role riis plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PortConvention {
    /// HttpPlatformHandler's: `HTTP_PLATFORM_PORT`, in the environment and
    /// wherever `%HTTP_PLATFORM_PORT%` appears in arguments and
    /// environment values.
    HttpPlatform,
    /// The ASP.NET Core Module's: `ASPNETCORE_PORT`, and a pairing token in
    /// `ASPNETCORE_TOKEN` that every request carries (see
    /// [`Application::pairing_token`]), so that the application's IIS
    /// integration takes only requests passed by riis.
    AspNetCore,
}

impl PortConvention {
    /// The environment variable (and `%…%` placeholder) naming the port.
    pub(crate) fn port_variable(self) -> &'static str {
        match self {
            Self::HttpPlatform => "HTTP_PLATFORM_PORT",
            Self::AspNetCore => "ASPNETCORE_PORT",
        }
    }

    /// The environment variable holding the pairing token, if any.
    fn token_variable(self) -> Option<&'static str> {
        match self {
            Self::HttpPlatform => None,
            Self::AspNetCore => Some("ASPNETCORE_TOKEN"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::HttpPlatform => "HttpPlatform",
            Self::AspNetCore => "AspNetCore",
        }
    }
}

fn default_instances() -> usize {
    4
}

fn default_rapid_fails() -> usize {
    10
}

pub(crate) fn default_queue_length() -> usize {
    1000
}

pub(crate) fn default_instance_max_requests() -> u64 {
    200
}

fn instance_max_requests<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "at least 1 (a process serves this many requests, then another takes its place)",
        ));
    }
    Ok(n)
}

/// `PHP_FCGI_MAX_REQUESTS` as the processes of `config` get it (their
/// `environment`, else riis's own), when it is a count: `php-cgi` exits
/// after that many requests, without taking what waits in its socket.
fn php_max_requests(config: &ApplicationConfig) -> Option<u64> {
    environment_number(config, "PHP_FCGI_MAX_REQUESTS")
}

/// The number the processes of `config` get in environment variable
/// `name`: their `environment`'s, else riis's own (which they inherit).
fn environment_number<T: std::str::FromStr>(config: &ApplicationConfig, name: &str) -> Option<T> {
    let value = match config.environment.get(name) {
        Some(value) => Some(value.clone()),
        None => std::env::var(name).ok(),
    };
    value?.trim().parse().ok()
}

/// How many requests a FastCGI process of `config` gets: its
/// `instance_max_requests`, or fewer where `PHP_FCGI_MAX_REQUESTS` makes
/// `php-cgi` exit sooner (0 there: no limit of PHP's), so that no request
/// is handed to a process about to exit.
fn most_requests(config: &ApplicationConfig) -> u64 {
    match php_max_requests(config) {
        Some(php) if php > 0 => php.min(config.instance_max_requests),
        _ => config.instance_max_requests,
    }
}

/// How many requests a FastCGI process of `config` serves at a time: the
/// `PHP_FCGI_CHILDREN` its environment gives it (`php-cgi` forks that many
/// children, which share its socket), else one, as IIS hands each FastCGI
/// process one request at a time.
fn capacity(config: &ApplicationConfig) -> usize {
    environment_number::<usize>(config, "PHP_FCGI_CHILDREN")
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn instances<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if (1..=MAX_INSTANCES).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "from 1 to {MAX_INSTANCES} processes"
        )))
    }
}

/// `monitor_changes_to`, resolved against the configuration's folder. The
/// file need not exist yet: its appearing is a change too.
fn monitored<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Err(serde::de::Error::custom(
            "the path is empty (leave monitor_changes_to out to watch no file)",
        ));
    }
    let joined = riis_pipeline::configuration_folder().join(text);
    Ok(Some(std::path::absolute(&joined).unwrap_or(joined)))
}

/// What tells a monitored file's versions apart: its inode, size and
/// modification time (seconds, nanoseconds).
type FileVersion = (u64, u64, i64, i64);

/// The version of the file at `path`; `None` while there is no file.
fn file_version(path: &std::path::Path) -> Option<FileVersion> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// A new pairing token: 128 random bits, in hexadecimal.
fn pairing_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| format!("no random bytes for the application's pairing token: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(32), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    }))
}

/// How often a monitored file is looked at.
const MONITOR_EVERY: Duration = Duration::from_millis(500);

/// A program path, resolved and checked while the configuration loads.
pub(crate) fn program<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    resolve_program(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Environment variables as a configuration gives them: names that can be
/// names (not empty, without `=`), and neither names nor values holding
/// NUL, which no process's environment can (checked here, rather than
/// failing each start).
pub(crate) fn environment<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let variables = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &variables {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(serde::de::Error::custom(format!(
                "`{}` cannot be an environment variable's name (empty, or with `=` or NUL)",
                name.escape_debug()
            )));
        }
        if value.contains('\0') {
            return Err(serde::de::Error::custom(format!(
                "the value of {name} holds a NUL character, which an environment cannot"
            )));
        }
    }
    Ok(variables)
}

/// A program's arguments as a configuration gives them: none holding NUL,
/// which no argument can (checked here, rather than failing each start).
pub(crate) fn arguments<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let arguments = Vec::<String>::deserialize(d)?;
    match arguments.iter().position(|a| a.contains('\0')) {
        Some(at) => Err(serde::de::Error::custom(format!(
            "argument {} holds a NUL character, which no argument can",
            at + 1
        ))),
        None => Ok(arguments),
    }
}

/// [`program`], for a key that may be left out.
pub(crate) fn some_program<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    program(d).map(Some)
}

/// A program's path as a configuration gives it, resolved against the
/// configuration's folder; it must be an executable file.
fn resolve_program(text: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let joined = riis_pipeline::configuration_folder().join(text);
    // Absolute, so that it is never looked for on the `PATH` (a bare
    // `php-cgi` beside a configuration given as a bare file name).
    let path = std::path::absolute(&joined).unwrap_or(joined);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err(format!("{} is not an executable file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Where an application is in its life.
enum Phase {
    NotStarted,
    Running,
    /// Stopped by rapid fail protection, or could not be watched or
    /// started: why, and until when (the first request after that starts
    /// it again); `stopped` for rapid fail protection.
    Failed {
        why: String,
        until: Instant,
        stopped: bool,
    },
    Stopped,
}

/// One running process of an application.
struct Process {
    child: Child,
    started: Instant,
    /// The port it was given ([`Endpoint::Port`]); 0 for FastCGI's.
    port: u16,
    /// Where it took a connection on its port (HTTP applications; see
    /// [`probe`]).
    listening: Option<SocketAddr>,
    /// Another program was seen listening on its port (logged once).
    foreign_seen: bool,
    /// A FastCGI process's own socket and load ([`Endpoint::ListeningSocket`]).
    fastcgi: Option<FastCgiSocket>,
    /// When its port is looked at next: while it starts, at once (every
    /// [`CHECK_EVERY`]) unless another program was found there; once it
    /// takes requests, every [`RECHECK_EVERY`].
    next_look: Instant,
}

impl Process {
    /// Whether requests go to it: FastCGI's at once (a request sent before
    /// it accepts waits in its socket's queue), an HTTP one once its port
    /// took a connection.
    fn ready(&self) -> bool {
        self.port == 0 || self.listening.is_some()
    }
}

/// A FastCGI process's listening socket, made for it alone.
struct FastCgiSocket {
    path: PathBuf,
    /// The socket file riis made (device and inode): a file at its path
    /// that is not this one was put there by someone else.
    id: (u64, u64),
    load: Arc<Load>,
}

/// How many requests a FastCGI process has, shared with the leases of its
/// exchanges.
pub(crate) struct Load {
    in_flight: AtomicUsize,
    /// How many it serves at a time.
    capacity: usize,
    /// riis killed it (its request timed out): its end is not the
    /// application's failure.
    killed: AtomicBool,
    /// It closed a connection before taking a request up (it ends): no
    /// other request goes to it.
    closing: AtomicBool,
    /// Requests handed to it so far.
    handed: AtomicU64,
    /// How many it gets in all (`instance_max_requests`, or fewer where
    /// the environment's `PHP_FCGI_MAX_REQUESTS` says it ends sooner); then
    /// it is stopped once idle, and another takes its place.
    most_requests: u64,
    /// How it ended, once reaped: `Some(true)` for a clean exit.
    ended_cleanly: Mutex<Option<bool>>,
}

/// What a look at a process's port found.
enum Probe {
    /// Nothing takes connections on it yet.
    NotYet,
    /// The process listens: requests go to this address.
    Listening(SocketAddr),
    /// Something takes connections on the port, but no socket of the
    /// process's group listens there: another program's.
    Foreign,
}

/// Whether the process whose group is `group`, given `port`, takes
/// connections on it. A connection to the port on a loopback address tells
/// that something listens (cheap, every [`CHECK_EVERY`]); then
/// [`listener_of_group`] finds where the group itself listens, and requests
/// go to that address: never to a socket of another program, another
/// user's on `[::1]` while the process listens on `127.0.0.1`, say, or one
/// that took the port before the process did.
fn probe(port: u16, group: i32) -> Probe {
    let reached = [
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ]
    .iter()
    .any(|address| std::net::TcpStream::connect_timeout(address, PROBE_TIMEOUT).is_ok());
    if !reached {
        return Probe::NotYet;
    }
    listener_of_group(port, group).map_or(Probe::Foreign, Probe::Listening)
}

/// Where a process of the process group `group` listens on `port`, as the
/// address to connect to (`127.0.0.1` for a socket on `0.0.0.0`, `::1` for
/// one on `::`; IPv4 first): connections to an address a socket is bound to
/// reach only that socket, since no other user can bind the same address
/// and port while it listens. `None` when no socket of the group listens
/// there; `127.0.0.1` where `/proc/net` cannot be read (nothing to tell
/// sockets apart by). Reads `/proc/net/tcp{,6}`, and the `/proc/PID/fd` of
/// the group's processes.
fn listener_of_group(port: u16, group: i32) -> Option<SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let Some(listening) = listening_sockets(port) else {
        return Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    };
    if listening.is_empty() {
        return None;
    }
    let held = sockets_of_group(group);
    let target = |ip: IpAddr| match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let mut ours: Vec<IpAddr> = listening
        .iter()
        .filter(|(_, inode)| held.contains(inode))
        .map(|(ip, _)| target(*ip))
        .collect();
    ours.sort_by_key(|ip| ip.is_ipv6());
    ours.first().map(|ip| SocketAddr::new(*ip, port))
}

/// The TCP sockets listening on `port` (their address and inode); `None`
/// when neither table can be read.
fn listening_sockets(port: u16) -> Option<Vec<(std::net::IpAddr, u64)>> {
    /// `st` of a listening socket in `/proc/net/tcp` (`TCP_LISTEN`).
    const LISTEN: &str = "0A";
    let mut found = Vec::new();
    let mut read = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read = true;
        // `sl local_address rem_address st … uid timeout inode …`, the
        // address as hex `ADDRESS:PORT`.
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, _, _, _, _, _, inode, ..] = fields.as_slice() else {
                continue;
            };
            let Some((address, hex_port)) = local.rsplit_once(':') else {
                continue;
            };
            if *state != LISTEN || u16::from_str_radix(hex_port, 16).ok() != Some(port) {
                continue;
            }
            if let (Some(ip), Ok(inode)) = (proc_net_address(address), inode.parse()) {
                found.push((ip, inode));
            }
        }
    }
    read.then_some(found)
}

/// The inodes of the sockets the processes of group `group` hold.
fn sockets_of_group(group: i32) -> Vec<u64> {
    use nix::unistd::{getpgid, Pid};
    let mut inodes = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return inodes;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if getpgid(Some(Pid::from_raw(pid))).map(Pid::as_raw) != Ok(group) {
            continue;
        }
        let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            let inode: Option<u64> =
                std::fs::read_link(descriptor.path())
                    .ok()
                    .and_then(|target| {
                        target
                            .to_str()?
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .parse()
                            .ok()
                    });
            inodes.extend(inode);
        }
    }
    inodes
}

/// An address as `/proc/net/tcp{,6}` writes it: the bytes of the address
/// in 32-bit words, each written as a number in the machine's byte order.
fn proc_net_address(hex: &str) -> Option<std::net::IpAddr> {
    let word = |at: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(at..at + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(std::net::Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i * 8)?);
            }
            Some(std::net::Ipv6Addr::from(bytes).into())
        }
        _ => None,
    }
}

/// How long after a look that found another program on a process's port
/// the next look is (the look reads `/proc`, whose TCP tables cost a few
/// milliseconds of the kernel's time on a busy machine).
const FOREIGN_LOOK_EVERY: Duration = Duration::from_secs(1);

/// How often a process taking requests is looked at again: a program that
/// closes its listening socket (a cluster's master whose last worker
/// died) leaves the port to whoever binds it next, and requests must stop
/// going there.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// How long the ports of processes that ended stay held by riis (see
/// [`bind_held_socket`]), so that a request already sent to one, still
/// reading its body, say, fails (502) rather than reaching a program that
/// took the port; at most [`RECENT_PORTS`] of an application's.
const HOLD_ENDED_PORTS: Duration = Duration::from_secs(300);

/// The port of a process that ended, held by riis on both loopback
/// addresses (see [`HOLD_ENDED_PORTS`]).
struct HeldPort {
    port: u16,
    since: Instant,
    /// IPv4's and IPv6's sockets; `None` while not bound yet.
    sockets: [Option<std::net::TcpListener>; 2],
    /// Whether a family is still to be tried (the ended process's group
    /// may hold the port for a moment after it is killed).
    pending: [bool; 2],
}

/// How long binding an ended process's port is tried again.
const HOLD_TRIES_FOR: Duration = Duration::from_secs(1);

/// Starts holding the port of a process that ended (HTTP applications).
fn hold_port(run: &mut Run, port: u16) {
    if port == 0 {
        return;
    }
    if run.held_ports.len() == RECENT_PORTS {
        run.held_ports.pop_front();
    }
    let mut held = HeldPort {
        port,
        since: Instant::now(),
        sockets: [None, None],
        pending: [true, true],
    };
    bind_held(&mut held);
    run.held_ports.push_back(held);
}

/// Binds what is still to be bound of `held`'s port.
fn bind_held(held: &mut HeldPort) {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let addresses = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for (family, ip) in addresses.into_iter().enumerate() {
        if !held.pending[family] {
            continue;
        }
        match bind_held_socket(SocketAddr::new(ip, held.port)) {
            Ok(socket) => {
                held.sockets[family] = Some(socket);
                held.pending[family] = false;
            }
            // Still the ended group's, or someone's who took it at once.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            // No IPv6 here, say: nothing to hold.
            Err(_) => held.pending[family] = false,
        }
    }
}

/// Tries again what is pending of the held ports, lets go of those held
/// long enough, and closes the connections they took: a request sent to a
/// process that ended fails at once (502) instead of waiting for an
/// answer.
fn keep_holding_ports(run: &mut Run, now: Instant) {
    while run
        .held_ports
        .front()
        .is_some_and(|held| now.duration_since(held.since) >= HOLD_ENDED_PORTS)
    {
        run.held_ports.pop_front();
    }
    for held in &mut run.held_ports {
        for socket in held.sockets.iter().flatten() {
            while socket.accept().is_ok() {}
        }
        if held.pending.iter().any(|p| *p) {
            if now.duration_since(held.since) < HOLD_TRIES_FOR {
                bind_held(held);
            } else {
                held.pending = [false, false];
            }
        }
    }
}

/// A listening socket on `address` that riis keeps for itself: no other
/// user's program can bind the address while it listens (a socket bound
/// without listening would not keep one that sets `SO_REUSEADDR` out).
/// Its connections are closed unanswered (see [`keep_holding_ports`]).
fn bind_held_socket(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// How long a look at whether a process listens waits for the connection
/// (a loopback connection is refused or taken at once, unless the
/// program's queue of connections is full).
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// How many of an application's latest ports a new process is not given:
/// one started again gets a port of its own, never its predecessor's,
/// which a request already sent there could still reach.
const RECENT_PORTS: usize = 64;

/// A loopback port free now on both loopback addresses (a program
/// listening on `[::1]:port` would take connections meant for the process
/// on `127.0.0.1`), and none of `avoid`. Another program may still take it
/// first; the process then fails to listen, or is not taken for ready (see
/// [`probe`]), counts as failed and is started again on another.
fn free_port(avoid: &[u16]) -> std::io::Result<u16> {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    for _ in 0..32 {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = v4.local_addr()?.port();
        if avoid.contains(&port) {
            continue;
        }
        match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            // No IPv6 here: nothing can listen on `::1`.
            Err(_) => return Ok(port),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no loopback port is free on both 127.0.0.1 and ::1",
    ))
}

/// An application's processes and their socket.
struct Run {
    phase: Phase,
    /// The private folder of the FastCGI processes' sockets (removed when
    /// dropped).
    folder: Option<tempfile::TempDir>,
    /// The folder riis made (device and inode).
    folder_id: Option<(u64, u64)>,
    /// Sockets made so far: each gets the next number.
    sockets_made: u64,
    /// The processes' standard error: one pipe, read into the log (not the
    /// server's own standard error: an orphan left holding that would keep
    /// whatever reads it, a terminal or a test, waiting).
    stderr: Option<OwnedFd>,
    /// The processes' standard output, likewise (HTTP applications';
    /// FastCGI's go nowhere).
    stdout: Option<OwnedFd>,
    processes: Vec<Process>,
    /// The next ready process a request goes to (HTTP applications).
    next: usize,
    /// Starts in a row whose process did not listen (HTTP applications).
    failed_starts: usize,
    /// The latest ports processes were given (HTTP applications), at most
    /// [`RECENT_PORTS`].
    recent_ports: VecDeque<u16>,
    /// The ports of processes that ended, bound for a while (see
    /// [`HOLD_ENDED_PORTS`]).
    held_ports: VecDeque<HeldPort>,
    /// When processes failed, within the last minute.
    fails: VecDeque<Instant>,
    /// Counts starts: a supervisor watches the start it was made for.
    generation: u64,
    /// Processes of an earlier start, left to finish the requests they
    /// have (each with when it was retired, and that start's uses);
    /// stopped once no exchange uses their start any more, after
    /// [`RETIRE_GRACE`] at the latest, or with the application.
    retiring: Vec<(Child, Instant, Weak<()>)>,
    /// This start's uses: every exchange given its address holds one
    /// ([`Lease`]).
    uses: Arc<()>,
    /// The monitored file's version when the processes started, and when
    /// it was last looked at.
    monitored: Option<(Option<FileVersion>, Instant)>,
    /// A different version seen at the last look, not yet acted on: a
    /// change counts once it holds for two looks, so that an editor's
    /// delete and write, or truncate and write, recycles once, with the
    /// file whole.
    monitored_change: Option<Option<FileVersion>>,
    /// The application's [`ApplicationConfig::stop_grace`].
    stop_grace: Duration,
    /// Told when a request waiting for the application may go on: a
    /// process listens, the application failed or stopped, or the server
    /// stops (see [`Application::changes`]).
    changes: tokio::sync::watch::Sender<()>,
    /// Requests waiting for a FastCGI process to be free, oldest first.
    queue: VecDeque<tokio::sync::oneshot::Sender<(Address, Lease)>>,
}

impl Run {
    /// Moves the application to `phase`, and wakes the requests waiting.
    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.changes.send_replace(());
        // Waiting FastCGI requests ask again, and learn what became of
        // the application (see `Application::wait_for_process`).
        self.queue.clear();
    }
}

/// One application of a configuration, started at its first request.
pub(crate) struct Application {
    config: ApplicationConfig,
    /// The secret every request to the processes carries, when their
    /// [`PortConvention`] pairs them (made once per application, so that a
    /// process started again gets the same; `Err` when the system gave no
    /// random bytes, and the application cannot start).
    pairing_token: Option<Result<String, String>>,
    run: Mutex<Run>,
    /// Wakes the supervisor when the application stops.
    stopping: Condvar,
    /// Requests the application began to answer (its first bytes came).
    taken: Arc<Taken>,
    /// How many requests a FastCGI process serves at a time ([`capacity`]).
    capacity: usize,
    /// How many requests a FastCGI process gets in all ([`most_requests`]).
    most_requests: u64,
}

impl Application {
    pub(crate) fn new(config: ApplicationConfig) -> Arc<Self> {
        // The clock's start comes before any process's.
        let _ = crate::process_start();
        let pairing_token = match config.endpoint {
            Endpoint::Port { convention, .. } if convention.token_variable().is_some() => {
                Some(pairing_token())
            }
            _ => None,
        };
        Arc::new(Self {
            pairing_token,
            run: Mutex::new(Run {
                phase: Phase::NotStarted,
                folder: None,
                folder_id: None,
                sockets_made: 0,
                stderr: None,
                stdout: None,
                processes: Vec::new(),
                next: 0,
                failed_starts: 0,
                recent_ports: VecDeque::new(),
                held_ports: VecDeque::new(),
                fails: VecDeque::new(),
                generation: 0,
                retiring: Vec::new(),
                uses: Arc::new(()),
                monitored: None,
                monitored_change: None,
                stop_grace: config.stop_grace,
                changes: tokio::sync::watch::Sender::new(()),
                queue: VecDeque::new(),
            }),
            capacity: capacity(&config),
            most_requests: most_requests(&config),
            config,
            stopping: Condvar::new(),
            taken: Arc::default(),
        })
    }

    /// The pairing token requests to the processes carry, when their
    /// convention pairs them (the ASP.NET Core Module's `MS-ASPNETCORE-TOKEN`).
    pub(crate) fn pairing_token(&self) -> Option<&str> {
        self.pairing_token.as_ref()?.as_deref().ok()
    }

    /// When the application last took a request up; the exchange
    /// adds one when an answer's first bytes come.
    pub(crate) fn taken(&self) -> Arc<Taken> {
        self.taken.clone()
    }

    /// Whether this is the application of `config`.
    pub(crate) fn is_for(&self, config: &ApplicationConfig) -> bool {
        self.config == *config
    }

    fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the application if it does not run yet (a preloaded one);
    /// `Err`: it cannot (logged; its first request tries again).
    pub(crate) fn start_if_stopped(self: &Arc<Self>) -> Result<(), String> {
        self.with_running(|_, _| ())
    }

    /// Where an HTTP application's processes listen, starting it at the
    /// first call: the next in turn first, then the others that listen, in
    /// turn (a request that cannot reach the first, one that crashed since
    /// it last listened, goes to the next), and the lease the exchange holds
    /// while it talks to them. `Ok(None)`: no process listens yet (ask
    /// again). `Err`: it cannot serve (503, with why).
    pub(crate) fn listening_addresses(
        self: &Arc<Self>,
    ) -> Result<Option<(Vec<Address>, Lease)>, String> {
        self.with_running(|_, run| listening_processes(run))
    }

    /// `then` on the running application, starting it first if it is not
    /// running (or may start again); `Err` when it cannot serve (503, with
    /// why).
    fn with_running<T>(
        self: &Arc<Self>,
        then: impl FnOnce(&Arc<Self>, &mut Run) -> T,
    ) -> Result<T, String> {
        let label = self.config.endpoint.label();
        let mut run = self.lock();
        match &run.phase {
            Phase::Running => return Ok(then(self, &mut run)),
            Phase::Failed { why, until, .. } if Instant::now() < *until => return Err(why.clone()),
            Phase::Failed { stopped, .. } => {
                if *stopped {
                    tracing::info!(
                        program = %self.config.path.display(),
                        "the {label} application stopped by rapid fail protection starts again"
                    );
                }
                run.fails.clear();
                run.failed_starts = 0;
                run.set_phase(Phase::NotStarted);
            }
            Phase::Stopped => return Err(format!("the {label} application was stopped")),
            Phase::NotStarted => {}
        }
        if let Err(e) = self.start(&mut run) {
            // A request after [`START_AGAIN_AFTER`] tries again: the cause
            // may pass (a full disk, a fork refused for a moment); until
            // then requests get 503 at once, and a flood of them neither
            // forks nor logs one line each.
            let why = format!(
                "the {label} application {} could not start: {e}",
                self.config.path.display()
            );
            tracing::error!("{why}");
            stop_processes(&mut run);
            run.set_phase(Phase::Failed {
                why: why.clone(),
                until: Instant::now() + START_AGAIN_AFTER,
                stopped: false,
            });
            return Err(why);
        }
        run.set_phase(Phase::Running);
        run.generation += 1;
        let generation = run.generation;
        // The supervisor of an earlier start, if any, sees it is not its own.
        self.stopping.notify_all();
        let supervised = self.clone();
        let started = std::thread::Builder::new()
            .name("riis-app-watch".to_owned())
            .spawn(move || supervised.supervise(generation));
        if let Err(e) = started {
            let why = format!("cannot watch the {label} application: {e}");
            stop_processes(&mut run);
            run.set_phase(Phase::Failed {
                why: why.clone(),
                until: Instant::now() + FAILED_FOR,
                stopped: false,
            });
            return Err(why);
        }
        tracing::info!(
            program = %self.config.path.display(),
            processes = self.config.instances,
            "{label} application started"
        );
        Ok(then(self, &mut run))
    }

    /// The next FastCGI process with room for a request, in turn, and a
    /// lease that counts the request against it until the exchange ends.
    /// `None` while all are busy (the request waits, see
    /// [`Application::wait_for_process`]). One `stat` a request: the
    /// sockets' folder lives under the temp dir, which cleaners prune (the
    /// process would go on listening where nobody can connect), and a file
    /// another user put at the path must not be talked to; such a process
    /// is killed, and started again on a new socket.
    fn free_fastcgi_process(self: &Arc<Self>, run: &mut Run) -> Option<(Address, Lease)> {
        use nix::sys::signal::Signal;
        let count = run.processes.len();
        for offset in 0..count {
            let at = (run.next + offset) % count;
            let process = &run.processes[at];
            let Some(socket) = &process.fastcgi else {
                continue;
            };
            // A process riis killed, that is ending, or that served its
            // share, stays listed until it is reaped.
            let load = &socket.load;
            if load.killed.load(Ordering::SeqCst)
                || load.closing.load(Ordering::SeqCst)
                || load.handed.load(Ordering::SeqCst) >= load.most_requests
                || load.in_flight.load(Ordering::SeqCst) >= load.capacity
            {
                continue;
            }
            if !socket_is_ours(socket) {
                if signal_once(&process.child, load, Signal::SIGKILL) {
                    tracing::warn!(
                        program = %self.config.path.display(),
                        socket = %socket.path.display(),
                        "a FastCGI process's socket was removed or replaced; the process is started again on a new one"
                    );
                }
                continue;
            }
            load.in_flight.fetch_add(1, Ordering::SeqCst);
            load.handed.fetch_add(1, Ordering::SeqCst);
            run.next = (at + 1) % count;
            return Some((
                Address::Unix(socket.path.clone()),
                Lease {
                    _uses: run.uses.clone(),
                    process: Some((socket.load.clone(), Arc::downgrade(self))),
                },
            ));
        }
        None
    }

    /// A FastCGI process for a request: at once if one has room and no
    /// request waits, else once one has room for it, first come first
    /// served (a process freed or started goes to the oldest waiting
    /// request, see [`Application::hand_out`]), within `wait`. `Err` with
    /// the status and why: the application cannot serve (503),
    /// `queue_length` requests wait already (503), or none was free in
    /// time (504). `Ok(None)`: `gone` resolved first (the client left).
    pub(crate) async fn wait_for_process(
        self: &Arc<Self>,
        wait: Duration,
        gone: impl std::future::Future<Output = ()>,
    ) -> Result<Option<(Address, Lease)>, (riis_pipeline::http::StatusCode, String)> {
        use riis_pipeline::http::StatusCode;
        let unavailable = |why| (StatusCode::SERVICE_UNAVAILABLE, why);
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(gone);
        loop {
            if SERVER_STOPPING.load(Ordering::SeqCst) {
                return Err(unavailable("the server is stopping".to_owned()));
            }
            let queue_length = self.config.queue_length;
            let reserved = self
                .with_running(|application, run| {
                    // Requests that gave up do not count as waiting.
                    run.queue.retain(|waiter| !waiter.is_closed());
                    if run.queue.is_empty() {
                        if let Some(found) = application.free_fastcgi_process(run) {
                            return Ok(Ok(found));
                        }
                    }
                    if run.queue.len() >= queue_length {
                        return Err(run.queue.len());
                    }
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    run.queue.push_back(sender);
                    Ok(Err(receiver))
                })
                .map_err(unavailable)?;
            let receiver = match reserved {
                Ok(Ok(found)) => return Ok(Some(found)),
                Ok(Err(receiver)) => receiver,
                Err(waiting) => {
                    return Err(unavailable(format!(
                        "{waiting} requests wait for a process of the FastCGI application {} (queue_length)",
                        self.config.path.display()
                    )))
                }
            };
            tokio::select! {
                handed = receiver => match handed {
                    Ok(found) => return Ok(Some(found)),
                    // The queue was emptied: the application stopped,
                    // failed or started again, or the server stops.
                    // Asked again, it says which.
                    Err(_) => continue,
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err((
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "no process of the FastCGI application {} was free within fastcgi.activity_timeout ({} s)",
                            self.config.path.display(),
                            wait.as_secs()
                        ),
                    ));
                }
                () = &mut gone => return Ok(None),
            }
        }
    }

    /// Gives the processes with room to the oldest waiting requests (called
    /// with the lock, whenever a process is freed or started).
    fn hand_out(self: &Arc<Self>, run: &mut Run) {
        while let Some(waiter) = run.queue.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            let Some(found) = self.free_fastcgi_process(run) else {
                run.queue.push_front(waiter);
                return;
            };
            // Its request gave up meanwhile: the process goes to the next.
            if let Err((_, lease)) = waiter.send(found) {
                if let Some(load) = lease.disarm() {
                    self.release(run, &load);
                }
            }
        }
    }

    /// A request is done with the FastCGI process `load` counts for: one
    /// that served its share (`instance_max_requests`) and has no other
    /// request is stopped (SIGTERM to its group, as a recycle, not a
    /// failure); another may take its place.
    fn release(&self, run: &mut Run, load: &Arc<Load>) {
        let left = load.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && load.handed.load(Ordering::SeqCst) >= load.most_requests {
            signal_process_of(run, load, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Kills the FastCGI process `load` counts for (its request timed out),
    /// if it still runs; the supervisor starts another in its place.
    fn kill_process_of(&self, load: &Arc<Load>) {
        signal_process_of(&self.lock(), load, nix::sys::signal::Signal::SIGKILL);
    }

    /// The program the processes run.
    pub(crate) fn program(&self) -> &std::path::Path {
        &self.config.path
    }

    /// What tells a waiting request to look at the application again
    /// ([`Application::starting`]): it changes when a process starts to
    /// listen, when the application fails or stops, and when the server
    /// stops.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.lock().changes.subscribe()
    }

    /// Whether a request would wait for the application: it runs, and
    /// none of its processes listens yet (an HTTP application starting).
    pub(crate) fn starting(&self) -> bool {
        let run = self.lock();
        matches!(run.phase, Phase::Running) && !run.processes.iter().any(Process::ready)
    }

    /// Makes the sockets' folder (FastCGI's) and the output pipes, and
    /// starts the processes.
    fn start(&self, run: &mut Run) -> std::io::Result<()> {
        let label = self.config.endpoint.label();
        if self.config.endpoint == Endpoint::ListeningSocket {
            make_socket_folder(run)?;
        } else {
            run.stdout = Some(self.output_pipe(label, "standard output", tracing::Level::INFO)?);
        }
        run.stderr = Some(self.output_pipe(label, "standard error", tracing::Level::WARN)?);
        run.failed_starts = 0;
        for _ in 0..self.config.instances {
            let process = self.spawn(run)?;
            run.processes.push(process);
        }
        run.monitored = self
            .config
            .monitor_changes_to
            .as_deref()
            .map(|file| (file_version(file), Instant::now()));
        run.monitored_change = None;
        Ok(())
    }

    /// A pipe whose lines a thread of its own logs at `level`; the end the
    /// processes write to.
    fn output_pipe(
        &self,
        label: &'static str,
        stream: &'static str,
        level: tracing::Level,
    ) -> std::io::Result<OwnedFd> {
        // Close-on-exec: no other program riis starts may hold it.
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let program = self.config.path.display().to_string();
        std::thread::Builder::new()
            .name("riis-app-log".to_owned())
            .spawn(move || log_lines(read, &program, label, stream, level))?;
        Ok(write)
    }

    /// Starts one process: on the listening socket (FastCGI), or on a port
    /// of its own (HTTP); its output to the run's pipes.
    fn spawn(&self, run: &mut Run) -> std::io::Result<Process> {
        // While the server drains no request waits for a process (503): a
        // new one would only start (an ASP.NET Core start costs seconds of
        // CPU, and may migrate a database) to be stopped.
        if SERVER_STOPPING.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the server is stopping"));
        }
        let missing = || std::io::Error::other("the application's pipes are closed");
        let stderr = run.stderr.as_ref().ok_or_else(missing)?;
        let mut command = Command::new(&self.config.path);
        command
            // The service manager's notices are riis's to send: an
            // application that speaks sd_notify must not report for it.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .stderr(Stdio::from(stderr.try_clone()?))
            // A group of its own: what it forks stops with it.
            .process_group(0);
        if let Some(folder) = &self.config.working_directory {
            command.current_dir(folder);
        }
        let mut fastcgi = None;
        let port = match self.config.endpoint {
            Endpoint::ListeningSocket => {
                use std::fs::Permissions;
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                // A cleaner of the temp dir (or an operator) may have
                // removed it: the new process gets a new one.
                if !socket_folder_is_ours(run) {
                    make_socket_folder(run)?;
                }
                let folder = run.folder.as_ref().ok_or_else(missing)?;
                run.sockets_made += 1;
                let path = folder.path().join(format!("socket-{}", run.sockets_made));
                let listener = UnixListener::bind(&path)?;
                std::fs::set_permissions(&path, Permissions::from_mode(0o600))?;
                let made = std::fs::symlink_metadata(&path)?;
                // The process's alone: riis keeps no copy, so the socket
                // closes when the process (and what it forked) ends, and a
                // request sent to it then fails at once, before any
                // process saw it.
                let socket: OwnedFd = listener.into();
                command
                    .args(&self.config.arguments)
                    .envs(&self.config.environment)
                    .stdin(Stdio::from(socket))
                    .stdout(Stdio::null());
                // php-cgi recycles itself (500 requests by default); told
                // riis's count, it never ends before riis stops sending to
                // it. Other programs ignore the variable.
                if php_max_requests(&self.config).is_none() {
                    command.env(
                        "PHP_FCGI_MAX_REQUESTS",
                        self.config.instance_max_requests.to_string(),
                    );
                }
                fastcgi = Some(FastCgiSocket {
                    path,
                    id: (made.dev(), made.ino()),
                    load: Arc::new(Load {
                        in_flight: AtomicUsize::new(0),
                        capacity: self.capacity,
                        killed: AtomicBool::new(false),
                        closing: AtomicBool::new(false),
                        handed: AtomicU64::new(0),
                        most_requests: self.most_requests,
                        ended_cleanly: Mutex::new(None),
                    }),
                });
                0
            }
            Endpoint::Port { convention, .. } => {
                let stdout = run.stdout.as_ref().ok_or_else(missing)?;
                let avoid: Vec<u16> = (run.recent_ports.iter())
                    .chain(run.processes.iter().map(|p| &p.port))
                    .copied()
                    .collect();
                let port = free_port(&avoid)?;
                if run.recent_ports.len() == RECENT_PORTS {
                    run.recent_ports.pop_front();
                }
                run.recent_ports.push_back(port);
                let text = port.to_string();
                let variable = convention.port_variable();
                let placeholder = format!("%{variable}%");
                let expand = |value: &String| value.replace(&placeholder, &text);
                command
                    .args(self.config.arguments.iter().map(expand))
                    .envs(self.config.environment.iter().map(|(k, v)| (k, expand(v))))
                    .env(variable, &text)
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(stdout.try_clone()?));
                if let (Some(variable), Some(token)) =
                    (convention.token_variable(), &self.pairing_token)
                {
                    let token = token
                        .as_deref()
                        .map_err(|e| std::io::Error::other(e.clone()))?;
                    command.env(variable, token);
                }
                port
            }
        };
        let child = command.spawn();
        if let (Err(_), Some(socket)) = (&child, &fastcgi) {
            let _ = std::fs::remove_file(&socket.path);
        }
        Ok(Process {
            child: child?,
            started: Instant::now(),
            port,
            listening: None,
            foreign_seen: false,
            next_look: Instant::now(),
            fastcgi,
        })
    }

    /// Starts processes again as they end, keeping `instances` running,
    /// until the application stops or fails too often.
    fn supervise(self: Arc<Self>, mut generation: u64) {
        use nix::sys::signal::{killpg, Signal};
        let label = self.config.endpoint.label();
        let program = self.config.path.display().to_string();
        let rapid = self.config.rapid_fails_per_minute;
        let mut run = self.lock();
        loop {
            run = self
                .stopping
                .wait_timeout(run, CHECK_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if !matches!(run.phase, Phase::Running) || run.generation != generation {
                return;
            }
            // HTTP processes' ports due for a look (see [`Process::next_look`])
            // are looked at without the lock (a connection may wait, `/proc`
            // is read).
            let due = Instant::now();
            let looked_at: Vec<(u16, i32, bool)> = run
                .processes
                .iter()
                .filter(|p| p.port != 0 && p.next_look <= due)
                .map(|p| (p.port, p.child.id() as i32, p.listening.is_some()))
                .collect();
            if !looked_at.is_empty() {
                drop(run);
                let found = look_at_ports(looked_at);
                run = self.lock();
                if !matches!(run.phase, Phase::Running) || run.generation != generation {
                    return;
                }
                note_looks(&mut run, found, &program, label);
            }
            let now = Instant::now();
            let mut index = 0;
            while index < run.processes.len() {
                let exited = match run.processes[index].child.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) | Err(_) => {
                        index += 1;
                        continue;
                    }
                };
                // Reaped by `try_wait` above.
                #[allow(clippy::zombie_processes)]
                let ended = run.processes.swap_remove(index);
                // What it forked goes with it: a master's orphaned workers
                // (`PHP_FCGI_CHILDREN`) would go on taking connections.
                let _ = killpg(group(&ended.child), Signal::SIGKILL);
                hold_port(&mut run, ended.port);
                let since = ended.started;
                let killed = ended.fastcgi.as_ref().is_some_and(|socket| {
                    // Its socket goes with it; an exchange that found it
                    // closed learns how it ended (see `Lease::process_end`).
                    let _ = std::fs::remove_file(&socket.path);
                    *socket
                        .load
                        .ended_cleanly
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(exited.success());
                    socket.load.killed.load(Ordering::SeqCst)
                });
                let failed = match self.config.endpoint {
                    // Killed by riis (its request timed out, or its socket
                    // was replaced): not the application's failure.
                    Endpoint::ListeningSocket if killed => false,
                    Endpoint::ListeningSocket => {
                        let served = self
                            .taken
                            .since(since.checked_sub(TAKEN_BEFORE).unwrap_or(since));
                        !exited.success() || (now.duration_since(since) < STAY_UP && !served)
                    }
                    // An HTTP server is not meant to end, however it ends
                    // (IIS counts each exit as a crash): one that listens
                    // and exits cleanly at once would otherwise be started
                    // again for ever.
                    Endpoint::Port { .. } => true,
                };
                if !ended.ready() {
                    run.failed_starts += 1;
                }
                if killed {
                    tracing::info!(
                        program,
                        "a process of the {label} application was killed by riis; it is started again"
                    );
                } else if failed {
                    tracing::warn!(
                        program,
                        "a process of the {label} application ended: {exited}"
                    );
                    run.fails.push_back(now);
                } else {
                    tracing::debug!(
                        program,
                        "a process of the {label} application ended cleanly; it is started again"
                    );
                }
            }
            if let Endpoint::Port {
                startup_time_limit,
                startup_retry_count,
                convention,
            } = self.config.endpoint
            {
                let mut index = 0;
                while index < run.processes.len() {
                    let process = &run.processes[index];
                    if process.ready() || now.duration_since(process.started) < startup_time_limit {
                        index += 1;
                        continue;
                    }
                    let late = run.processes.swap_remove(index);
                    tracing::warn!(
                        program,
                        port = late.port,
                        "a process of the {label} application did not listen on its port ({}) within {} s (startup_time_limit); it is killed",
                        convention.port_variable(),
                        startup_time_limit.as_secs()
                    );
                    let _ = killpg(group(&late.child), Signal::SIGKILL);
                    hold_port(&mut run, late.port);
                    stop_children(vec![late.child], run.stop_grace);
                    run.fails.push_back(now);
                    run.failed_starts += 1;
                }
                if run.failed_starts > startup_retry_count {
                    let why = format!(
                        "the {label} application {program} did not listen on its port in {} starts in a row{}; it stays stopped for {} s",
                        run.failed_starts,
                        match convention {
                            // The only convention with the setting.
                            PortConvention::HttpPlatform => {
                                format!(" (startup_retry_count = {startup_retry_count})")
                            }
                            PortConvention::AspNetCore => String::new(),
                        },
                        FAILED_FOR.as_secs()
                    );
                    stop_for_failures(&mut run, why);
                    return;
                }
            }
            while run
                .fails
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                run.fails.pop_front();
            }
            // Back to `instances`; a process that cannot start counts as
            // one that failed, so this ends.
            while run.processes.len() < self.config.instances
                && run.fails.len() <= rapid
                && !SERVER_STOPPING.load(Ordering::SeqCst)
            {
                match self.spawn(&mut run) {
                    Ok(process) => {
                        run.processes.push(process);
                        // It takes the oldest waiting FastCGI request.
                        self.hand_out(&mut run);
                    }
                    Err(e) => {
                        tracing::warn!(
                            program,
                            "a process of the {label} application could not start: {e}"
                        );
                        run.fails.push_back(now);
                        // One try a look: a program that cannot be run
                        // fails as often as it is started.
                        break;
                    }
                }
            }
            finish_retired(&mut run, now);
            keep_holding_ports(&mut run, now);
            if self.monitored_file_changed(&mut run, now) {
                // The processes finish what they have, and new ones, with
                // the file as it is now, take the new connections on a new
                // socket; this supervisor watches them.
                retire_processes(&mut run);
                if let Err(e) = self.start(&mut run) {
                    tracing::error!(
                        program,
                        "the {label} application could not start again after a monitored file changed: {e}"
                    );
                    stop_processes(&mut run);
                    run.set_phase(Phase::NotStarted);
                    return;
                }
                run.generation += 1;
                generation = run.generation;
                tracing::info!(
                    program,
                    "a monitored file changed (monitor_changes_to); the {label} application's processes were recycled"
                );
                // The new processes take the waiting FastCGI requests.
                self.hand_out(&mut run);
                continue;
            }
            if run.fails.len() > rapid {
                let why = format!(
                    "the {label} application {program} failed {} times within a minute (rapid_fails_per_minute = {rapid}); it stays stopped for {} s",
                    run.fails.len(),
                    FAILED_FOR.as_secs()
                );
                stop_for_failures(&mut run, why);
                return;
            }
        }
    }

    /// Whether `monitor_changes_to` changed since the processes started,
    /// and stayed as it is for a look (looked at once per
    /// [`MONITOR_EVERY`]).
    fn monitored_file_changed(&self, run: &mut Run, now: Instant) -> bool {
        let (Some(file), Some((version, looked))) = (
            self.config.monitor_changes_to.as_deref(),
            run.monitored.as_mut(),
        ) else {
            return false;
        };
        if now.duration_since(*looked) < MONITOR_EVERY {
            return false;
        }
        *looked = now;
        let seen = file_version(file);
        if seen == *version {
            run.monitored_change = None;
            return false;
        }
        let settled = run.monitored_change == Some(seen);
        run.monitored_change = Some(seen);
        settled
    }

    /// Kills the processes at once (SIGKILL to each group), and the
    /// retired ones: no configuration is left to send them requests, and
    /// the server may end before a grace would.
    fn kill(&self) {
        use nix::sys::signal::{killpg, Signal};
        let mut run = self.lock();
        let processes = take_processes(&mut run);
        for child in &processes {
            let _ = killpg(group(child), Signal::SIGKILL);
        }
        run.set_phase(Phase::Stopped);
        self.stopping.notify_all();
        drop(run);
        // Reaped on a thread of its own, as stops are.
        stop_children(processes, STOP_GRACE);
    }

    /// Stops the processes (no configuration holds the application any
    /// more, or the server stops).
    fn stop(&self) {
        let mut run = self.lock();
        stop_processes(&mut run);
        run.set_phase(Phase::Stopped);
        self.stopping.notify_all();
    }

    /// Processes running (their leaders).
    pub(crate) fn processes(&self) -> usize {
        self.lock().processes.len()
    }

    /// Requests waiting for a FastCGI process.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.iter().filter(|w| !w.is_closed()).count()
    }

    /// Whether rapid fail protection keeps the application stopped now.
    fn stopped_for_failures(&self) -> bool {
        matches!(
            self.lock().phase,
            Phase::Failed { stopped: true, until, .. } if Instant::now() < until
        )
    }
}

/// The applications configurations hold, with how many hold each.
static REGISTRY: Mutex<Vec<(Arc<Application>, usize)>> = Mutex::new(Vec::new());

fn lock_registry() -> MutexGuard<'static, Vec<(Arc<Application>, usize)>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The application of `config` for a configuration that takes it up: the
/// one another configuration holds, with its processes as they are; else
/// a new one (started at its first request). One that failed or stopped
/// is not taken over: a reload is a new start. Each call is answered by
/// one [`release`].
pub(crate) fn acquire(config: &ApplicationConfig) -> Arc<Application> {
    let mut held = lock_registry();
    let reusable = |a: &Arc<Application>| {
        a.is_for(config) && matches!(a.lock().phase, Phase::NotStarted | Phase::Running)
    };
    if let Some((found, holders)) = held.iter_mut().find(|(a, _)| reusable(a)) {
        *holders += 1;
        return found.clone();
    }
    let made = Application::new(config.clone());
    held.push((made.clone(), 1));
    made
}

/// How a configuration lets its applications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// It retires after its last request, or the server stops: the last
    /// to let an application go stops its processes (SIGTERM, SIGKILL
    /// after [`STOP_GRACE`]).
    Stop,
    /// It was the last configuration with FastCgi, and the server may end
    /// before a grace would: the processes are killed at once (none of
    /// the configuration's requests is left).
    Kill,
}

/// A configuration lets `application` go. The last to hold it stops its
/// processes; a configuration that started meanwhile and names it holds
/// it already (it took it up at its start), so a reload never gets here
/// for an application it keeps.
pub(crate) fn release(application: &Arc<Application>, how: Release) {
    let mut held = lock_registry();
    let Some(i) = held.iter().position(|(a, _)| Arc::ptr_eq(a, application)) else {
        return;
    };
    held[i].1 -= 1;
    if held[i].1 > 0 {
        return;
    }
    let (application, _) = held.swap_remove(i);
    drop(held);
    match how {
        Release::Stop => application.stop(),
        Release::Kill => application.kill(),
    }
}

/// The applications one configuration of a module holds (FastCgi's, or
/// HttpPlatformHandler's), and what its retirement does with them.
pub(crate) struct Holdings {
    /// Those this configuration started, or will at their first request.
    applications: Mutex<Vec<Arc<Application>>>,
    /// The server is stopping (StopListening came): [`Holdings::release_all`]
    /// waits for the processes to be gone. Not at a reload's retirement,
    /// which runs on a thread that serves other work meanwhile.
    server_stopping: AtomicBool,
    /// [`Holdings::release_all`] ran: this configuration no longer counts
    /// in `live`.
    retired: AtomicBool,
    /// The module's configurations that have not retired. When the last
    /// one retires (a reload took the module out), none is left to be told
    /// the server stops, so its applications are killed at once rather
    /// than given a grace the server's end could cut short.
    live: &'static AtomicUsize,
}

/// The server stops: StopListening came to a configuration of a module
/// with applications. One server runs in a riis process at a time; the
/// first configuration of a module after all had retired (a new server in
/// a program that embeds riis) clears it.
static SERVER_STOPPING: AtomicBool = AtomicBool::new(false);

impl Drop for Holdings {
    /// A configuration dropped without retiring (its build failed after
    /// ApplicationStart) lets its applications go too.
    fn drop(&mut self) {
        self.release_all();
    }
}

impl Holdings {
    /// A new configuration's, counted in `live` (the module's own static).
    pub(crate) fn new(live: &'static AtomicUsize) -> Self {
        if live.fetch_add(1, Ordering::SeqCst) == 0 {
            // The module's first configuration: a server starts (a program
            // embedding riis may run one after another).
            SERVER_STOPPING.store(false, Ordering::SeqCst);
        }
        Self {
            applications: Mutex::default(),
            server_stopping: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            live,
        }
    }

    /// The application of `config`, taken up when this configuration
    /// started or at its first request for it (see [`acquire`]).
    pub(crate) fn application(&self, config: &ApplicationConfig) -> Arc<Application> {
        let mut list = self.applications.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = list.iter().find(|a| a.is_for(config)) {
            return found.clone();
        }
        let taken = acquire(config);
        list.push(taken.clone());
        taken
    }

    /// The server stops (StopListening).
    pub(crate) fn server_stops(&self) {
        self.server_stopping.store(true, Ordering::SeqCst);
        SERVER_STOPPING.store(true, Ordering::SeqCst);
        // Requests waiting for an application end now (503), whichever
        // configuration they came under.
        for (application, _) in lock_registry().iter() {
            let mut run = application.lock();
            run.changes.send_replace(());
            run.queue.clear();
        }
    }

    /// Whether the server stops: requests no longer wait for a process.
    /// The process's, not only this configuration's: a request of a
    /// configuration a reload replaced still waits on that configuration's
    /// applications, and the server tells only the one in force.
    pub(crate) fn stopping(&self) -> bool {
        SERVER_STOPPING.load(Ordering::Relaxed)
    }

    /// How many processes the applications run, for `riis status`.
    pub(crate) fn processes(&self) -> usize {
        self.summed(Application::processes)
    }

    /// How many requests wait for a process of the applications, for
    /// `riis status`.
    pub(crate) fn waiting(&self) -> usize {
        self.summed(Application::waiting)
    }

    /// How many of the applications rapid fail protection keeps stopped,
    /// for `riis status`: their requests get 503.
    pub(crate) fn stopped_for_failures(&self) -> usize {
        self.summed(|a| usize::from(a.stopped_for_failures()))
    }

    /// `figure` of each application, added up.
    fn summed(&self, figure: impl Fn(&Application) -> usize) -> usize {
        self.applications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|a| figure(a))
            .sum()
    }

    /// The configuration retires: lets its applications go (see
    /// [`release`]). When the server stops, waits (up to the processes'
    /// grace and their reaping) until they are gone: the process would
    /// otherwise exit before the SIGKILL of those that ignore SIGTERM.
    pub(crate) fn release_all(&self) {
        let stopping = self.server_stopping.load(Ordering::SeqCst);
        let last = !self.retired.swap(true, Ordering::SeqCst)
            && self.live.fetch_sub(1, Ordering::SeqCst) == 1;
        let how = if last && !stopping {
            Release::Kill
        } else {
            Release::Stop
        };
        let applications =
            std::mem::take(&mut *self.applications.lock().unwrap_or_else(|e| e.into_inner()));
        for application in applications {
            release(&application, how);
        }
        if stopping {
            wait_for_stops();
        }
    }
}

/// The global side of a module whose requests go to applications riis
/// starts (FastCgi, HttpPlatformHandler).
pub(crate) struct ApplicationsGlobal<C: 'static, S> {
    /// The module's section, where the applications are named.
    pub(crate) section: riis_pipeline::Section<C>,
    /// The application a section names, if any.
    pub(crate) application_of: fn(&C) -> Option<&ApplicationConfig>,
    /// Whether a section's application starts with its configuration
    /// rather than at its first request (IIS's `preloadEnabled`).
    pub(crate) preload: fn(&C) -> bool,
    /// The applications of the configuration.
    pub(crate) holdings: Arc<Holdings>,
    /// The module's `riis status` lines.
    pub(crate) status: S,
}

impl<C, S> riis_pipeline::GlobalModule for ApplicationsGlobal<C, S>
where
    C: Send + Sync + 'static,
    S: Fn() -> String + Send + Sync + 'static,
{
    fn on_global_rsca_query(
        &self,
        query: &mut riis_pipeline::RscaQuery<'_>,
    ) -> riis_pipeline::GlobalNotificationStatus {
        if query.function() == "status" {
            query.write(&(self.status)());
        }
        riis_pipeline::GlobalNotificationStatus::Continue
    }

    /// A configuration starts (the server's first, or a reload's): it takes
    /// up the applications its locations name at once, so that processes
    /// an earlier configuration runs with the same settings are taken over
    /// whenever its first request for them comes (they are not started
    /// before it).
    fn on_global_application_start(
        &self,
        app: &riis_pipeline::Application<'_>,
    ) -> riis_pipeline::GlobalNotificationStatus {
        for config in app.configs(self.section) {
            if let Some(application) = (self.application_of)(config) {
                self.holdings.application(application);
            }
        }
        // Preloaded: the applications a handler of the module can send
        // requests to (a location's settings that no handler of it reads,
        // the site root's beside a location that changes a key, start
        // nothing).
        for config in app.handled_configs(self.section) {
            if let Some(application) =
                (self.application_of)(config).filter(|_| (self.preload)(config))
            {
                // Starts it, if it does not run yet (a reload with the
                // same settings keeps it); a start that fails is logged,
                // and its first request tries again.
                let _ = self.holdings.application(application).start_if_stopped();
            }
        }
        riis_pipeline::GlobalNotificationStatus::Continue
    }

    /// The server stops: requests stop waiting for processes, and the
    /// configuration's retirement waits for them to be gone.
    fn on_global_stop_listening(&self) -> riis_pipeline::GlobalNotificationStatus {
        self.holdings.server_stops();
        riis_pipeline::GlobalNotificationStatus::Continue
    }
}

impl<C, S> ApplicationsGlobal<C, S>
where
    C: Send + Sync + 'static,
    S: Fn() -> String + Send + Sync + 'static,
{
    /// Registers it for RscaQuery, StopListening and ApplicationStart.
    pub(crate) fn register(
        self,
        registration: &mut riis_pipeline::ModuleRegistration<'_>,
    ) -> Result<(), riis_pipeline::ModuleError> {
        use riis_pipeline::GlobalNotification as G;
        registration
            .set_global_notifications(self, G::RscaQuery | G::StopListening | G::ApplicationStart)
    }
}

/// Where an HTTP application's running start listens: the next of its
/// processes that listen, in turn, then the others that listen (`None`
/// while none does), and a lease of them for an exchange.
fn listening_processes(run: &mut Run) -> Option<(Vec<Address>, Lease)> {
    let count = run.processes.len();
    let start = run.next;
    let mut addresses = Vec::new();
    for offset in 0..count {
        if let Some(at) = run.processes[(start + offset) % count].listening {
            if addresses.is_empty() {
                run.next = (start + offset + 1) % count;
            }
            addresses.push(Address::Tcp(at.to_string()));
        }
    }
    if addresses.is_empty() {
        return None;
    }
    Some((
        addresses,
        Lease {
            _uses: run.uses.clone(),
            process: None,
        },
    ))
}

/// Makes the private folder of a FastCGI application's sockets. Whoever can
/// connect runs scripts as riis's user: the folder is riis's alone from
/// the start, whatever the umask (which may only take bits away; the mode
/// is then set exactly).
fn make_socket_folder(run: &mut Run) -> std::io::Result<()> {
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let folder = tempfile::Builder::new()
        .prefix("riis-fastcgi-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir()?;
    std::fs::set_permissions(folder.path(), Permissions::from_mode(0o700))?;
    let made = std::fs::symlink_metadata(folder.path())?;
    run.folder_id = Some((made.dev(), made.ino()));
    run.folder = Some(folder);
    Ok(())
}

/// Whether the sockets' folder is still the one riis made.
fn socket_folder_is_ours(run: &Run) -> bool {
    use std::os::unix::fs::MetadataExt;
    run.folder.as_ref().is_some_and(|folder| {
        std::fs::symlink_metadata(folder.path())
            .is_ok_and(|m| m.is_dir() && run.folder_id == Some((m.dev(), m.ino())))
    })
}

/// Sends `signal` to the group of the FastCGI process `load` counts for,
/// once, while it is listed (not reaped yet, so its id is still its own),
/// marking it killed by riis: no request goes to it any more, and its end
/// is no failure of the application's.
fn signal_process_of(run: &Run, load: &Arc<Load>, signal: nix::sys::signal::Signal) {
    let found = run.processes.iter().find(|p| {
        p.fastcgi
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.load, load))
    });
    if let Some(process) = found {
        signal_once(&process.child, load, signal);
    }
}

/// Sends `signal` to the group of a listed FastCGI process (its `load`'s),
/// unless riis did already, and marks it killed by riis; whether it sent
/// it.
fn signal_once(child: &Child, load: &Load, signal: nix::sys::signal::Signal) -> bool {
    if load.killed.swap(true, Ordering::SeqCst) {
        return false;
    }
    let _ = nix::sys::signal::killpg(group(child), signal);
    true
}

/// Whether the file at a FastCGI process's socket path is still the
/// socket riis made.
fn socket_is_ours(socket: &FastCgiSocket) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(&socket.path).is_ok_and(|m| socket.id == (m.dev(), m.ino()))
}

/// What an exchange holds while it talks to an application's processes:
/// processes a new start retired are stopped once no exchange holds a
/// lease of theirs (they finish the requests they have, however long). A
/// FastCGI lease also counts its request against its process until it is
/// dropped.
pub(crate) struct Lease {
    _uses: Arc<()>,
    /// The FastCGI process's load, and its application.
    process: Option<(Arc<Load>, Weak<Application>)>,
}

impl Lease {
    /// Kills the FastCGI process the request went to: its request passed
    /// `request_timeout` or `activity_timeout`, and the process would
    /// otherwise stay busy with it (a script blocked on a database that
    /// never answers), as IIS kills it. Another takes its place.
    pub(crate) fn kill_process(&self) {
        if let Some((load, application)) = &self.process {
            if let Some(application) = application.upgrade() {
                application.kill_process_of(load);
            }
        }
    }

    /// The request's FastCGI process refused or closed a connection before
    /// taking the request up: it is ending, and gets no other request.
    pub(crate) fn process_closing(&self) {
        if let Some((load, _)) = &self.process {
            load.closing.store(true, Ordering::SeqCst);
        }
    }

    /// How the request's FastCGI process ended, waiting up to `most` for
    /// it to be reaped: `Some(true)` for a clean exit, `Some(false)` for a
    /// crash, `None` while it still runs (or the request had no such
    /// process). A fresh connection closed without a word by a process
    /// that then ended cleanly was most likely never taken up (a process
    /// ending between requests), though a script may also have ended it.
    pub(crate) async fn process_end(&self, most: Duration) -> Option<bool> {
        let (load, _) = self.process.as_ref()?;
        let deadline = Instant::now() + most;
        loop {
            if let Some(clean) = *load.ended_cleanly.lock().unwrap_or_else(|e| e.into_inner()) {
                return Some(clean);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// The request's FastCGI process, set aside by
    /// [`Lease::process_closing`], still runs: it takes requests again, the
    /// oldest waiting one first.
    pub(crate) fn reopen_process(&self) {
        if let Some((load, application)) = &self.process {
            load.closing.store(false, Ordering::SeqCst);
            if let Some(application) = application.upgrade() {
                application.hand_out(&mut application.lock());
            }
        }
    }
}

impl Lease {
    /// The process's load, taken out so that dropping the lease no longer
    /// releases it (the caller does, holding the lock).
    fn disarm(mut self) -> Option<Arc<Load>> {
        self.process.take().map(|(load, _)| load)
    }
}

impl Drop for Lease {
    /// The request is done with its FastCGI process: it goes to the oldest
    /// waiting request, if any.
    fn drop(&mut self) {
        let Some((load, application)) = self.process.take() else {
            return;
        };
        match application.upgrade() {
            Some(application) => {
                let mut run = application.lock();
                application.release(&mut run, &load);
                application.hand_out(&mut run);
            }
            None => {
                load.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The longest processes of an earlier start keep requests they still
/// have once a new start took over (nothing new reaches them): a bound for
/// an exchange that never ends. A request of `request_timeout = 0` (no
/// limit), or of more than this, is cut then.
const RETIRE_GRACE: Duration = Duration::from_secs(15 * 60);

/// Sets the processes aside for a new start: they finish the requests they
/// have (their connections are open; no new one can reach them) and are
/// stopped by the next supervisor once no exchange uses them, or after
/// [`RETIRE_GRACE`].
fn retire_processes(run: &mut Run) {
    let now = Instant::now();
    // Those whose requests are done, or that ended, go first: they must
    // not count against the cap below.
    finish_retired(run, now);
    let processes = std::mem::take(&mut run.processes);
    let instances = processes.len().max(1);
    // The new start's exchanges hold leases of their own.
    let uses = Arc::downgrade(&std::mem::replace(&mut run.uses, Arc::new(())));
    run.retiring.extend(
        processes
            .into_iter()
            .map(|process| (process.child, now, uses.clone())),
    );
    // Restarts in a row (a socket replaced again and again) must not pile
    // up processes: past two earlier starts' worth, the oldest are stopped
    // at once.
    let keep = instances * 2;
    if run.retiring.len() > keep {
        let excess = run.retiring.len() - keep;
        let oldest: Vec<Child> = run
            .retiring
            .drain(..excess)
            .map(|(child, _, _)| child)
            .collect();
        stop_children(oldest, run.stop_grace);
    }
    close_endpoint(run);
}

/// Reaps retired processes that ended, and stops those past their grace.
fn finish_retired(run: &mut Run, now: Instant) {
    let mut due = Vec::new();
    let mut index = 0;
    while index < run.retiring.len() {
        let (child, since, uses) = &mut run.retiring[index];
        let ended = matches!(child.try_wait(), Ok(Some(_)));
        let unused = uses.strong_count() == 0;
        if ended || unused || now.duration_since(*since) >= RETIRE_GRACE {
            // Reaped by `try_wait` when it ended; stopped below if not.
            // In order: the oldest stay first, for the cap.
            #[allow(clippy::zombie_processes)]
            let (child, _, _) = run.retiring.remove(index);
            if !ended {
                due.push(child);
            }
        } else {
            index += 1;
        }
    }
    stop_children(due, run.stop_grace);
}

/// SIGTERM to each process's group (retired ones too) and the socket and
/// its folder gone now; then, on a thread of its own (so that no worker
/// waits, nor a request for the application's lock), SIGKILL to those
/// still there after [`STOP_GRACE`].
fn stop_processes(run: &mut Run) {
    let processes = take_processes(run);
    stop_children(processes, run.stop_grace);
}

/// The processes, retired ones too, taken from `run`, with the socket and
/// its folder gone.
fn take_processes(run: &mut Run) -> Vec<Child> {
    let processes = std::mem::take(&mut run.processes)
        .into_iter()
        .map(|process| process.child)
        .chain(
            std::mem::take(&mut run.retiring)
                .into_iter()
                .map(|(child, _, _)| child),
        )
        .collect();
    close_endpoint(run);
    processes
}

/// Rapid fail protection: stops the processes, and the application for
/// [`FAILED_FOR`], logging `why`.
fn stop_for_failures(run: &mut Run, why: String) {
    tracing::error!("{why}");
    stop_processes(run);
    run.set_phase(Phase::Failed {
        why,
        until: Instant::now() + FAILED_FOR,
        stopped: true,
    });
}

/// Looks at the ports of processes (port, process group, whether it took
/// requests until now): where a process that took requests listens now, if
/// it still does; whether a starting one listens (see [`probe`]).
fn look_at_ports(looked_at: Vec<(u16, i32, bool)>) -> Vec<(u16, Probe)> {
    looked_at
        .into_iter()
        .map(|(port, group, listened)| {
            let found = if listened {
                listener_of_group(port, group).map_or(Probe::NotYet, Probe::Listening)
            } else {
                probe(port, group)
            };
            (port, found)
        })
        .collect()
}

/// Takes what [`look_at_ports`] found into the processes it looked at.
fn note_looks(run: &mut Run, found: Vec<(u16, Probe)>, program: &str, label: &str) {
    for (port, found) in found {
        let Some(process) = run.processes.iter_mut().find(|p| p.port == port) else {
            continue;
        };
        let listened = process.listening.is_some();
        match found {
            Probe::NotYet if listened => {
                process.listening = None;
                // It gets `startup_time_limit` to listen again (a cluster's
                // master forking a new worker) before it is killed.
                process.started = Instant::now();
                tracing::warn!(
                    program,
                    port,
                    "a process of the {label} application no longer listens on its port; requests wait for one that does"
                );
            }
            Probe::NotYet => {}
            Probe::Listening(address) => {
                if !listened {
                    tracing::info!(program, port, %address, "{label} application process listens");
                    run.failed_starts = 0;
                    run.changes.send_replace(());
                }
                process.listening = Some(address);
                process.next_look = Instant::now() + RECHECK_EVERY;
            }
            Probe::Foreign => {
                process.next_look = Instant::now() + FOREIGN_LOOK_EVERY;
                if !process.foreign_seen {
                    process.foreign_seen = true;
                    tracing::warn!(
                        program,
                        port,
                        "another program listens on the port of a process of the {label} application; no request goes there, and the process is started again on another port after startup_time_limit"
                    );
                }
            }
        }
    }
}

/// Lets go of what the processes of a start were given: the socket and
/// its folder, the output pipes (their log threads end with the last
/// process that holds them).
fn close_endpoint(run: &mut Run) {
    run.stderr = None;
    run.stdout = None;
    run.folder = None;
    run.folder_id = None;
    run.next = 0;
    // Nothing drains their connections once the supervisor is gone.
    run.held_ports.clear();
}

/// [`stop_processes`] for `processes`.
fn stop_children(processes: Vec<Child>, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    for child in &processes {
        let _ = killpg(group(child), Signal::SIGTERM);
    }
    if processes.is_empty() {
        return;
    }
    // Shared with the thread, so that the caller still has them if the
    // thread cannot start.
    let ending = Arc::new(Mutex::new(Some(processes)));
    let taken = ending.clone();
    let spawned = std::thread::Builder::new()
        .name("riis-app-stop".to_owned())
        .spawn(move || {
            let work = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(processes) = work {
                finish_stopping(processes, grace);
            }
        });
    match spawned {
        Ok(thread) => {
            let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
            // Those done need no waiting for.
            stopping.retain(|t| !t.is_finished());
            stopping.push(thread);
        }
        Err(e) => {
            tracing::warn!("stopping application processes on the caller's thread: {e}");
            let work = ending.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(processes) = work {
                finish_stopping(processes, grace);
            }
        }
    }
}

/// Waits until the processes of every stopped application are gone
/// (killed at the end of their [`STOP_GRACE`], and reaped): at the server's
/// stop, so that none outlives it. Bounded by the grace and the reaping.
pub(crate) fn wait_for_stops() {
    let threads = std::mem::take(&mut *STOPPING.lock().unwrap_or_else(|e| e.into_inner()));
    for thread in threads {
        let _ = thread.join();
    }
}

/// Logs what the processes write to their standard error, a line at a
/// time, until the last of them (and riis's own end) is closed. Whatever
/// comes, it reads on: once nothing reads the pipe, each process's next
/// write fails with EPIPE, or kills it (SIGPIPE).
fn log_lines(pipe: OwnedFd, program: &str, label: &str, stream: &str, level: tracing::Level) {
    use std::io::Read;
    let mut pipe = std::fs::File::from(pipe);
    let mut buf = vec![0; 8 * 1024];
    let mut lines = Lines::default();
    let mut log = |line: &[u8], dropped: usize| log_line(program, label, level, line, dropped);
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.take(&buf[..n], &mut log),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(
                    program,
                    "the {label} application's {stream} cannot be read: {e}"
                );
                break;
            }
        }
    }
    lines.finish(&mut log);
}

/// One line of the processes' output to the log, at `level` (`warn` for
/// standard error, `info` for standard output): decoded lossily
/// and escaped, as `FCGI_STDERR` lines are (no control characters reach the
/// log), with the count of bytes dropped past [`MAX_LINE`].
fn log_line(program: &str, label: &str, level: tracing::Level, line: &[u8], dropped: usize) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let text = if dropped > 0 {
        format!(
            "{}… ({dropped} more bytes of this line dropped)",
            text.escape_debug()
        )
    } else if text.trim().is_empty() {
        return;
    } else {
        text.escape_debug().to_string()
    };
    if level == tracing::Level::INFO {
        tracing::info!(program, "{label} application: {text}");
    } else {
        tracing::warn!(program, "{label} application: {text}");
    }
}

/// Cuts a byte stream into lines, keeping at most [`MAX_LINE`] bytes of
/// each and counting the rest.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    dropped: usize,
}

impl Lines {
    /// Takes more of the stream, passing each line that ends in it (and the
    /// bytes it dropped) to `emit`.
    fn take(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8], usize)) {
        while !bytes.is_empty() {
            let newline = memchr::memchr(b'\n', bytes);
            let part = &bytes[..newline.unwrap_or(bytes.len())];
            let kept = part.len().min(MAX_LINE - self.line.len());
            self.line.extend_from_slice(&part[..kept]);
            self.dropped = self.dropped.saturating_add(part.len() - kept);
            match newline {
                Some(at) => {
                    self.end_line(emit);
                    bytes = &bytes[at + 1..];
                }
                None => break,
            }
        }
    }

    /// The stream ended: what is left is a last line.
    fn finish(&mut self, emit: &mut impl FnMut(&[u8], usize)) {
        if !self.line.is_empty() || self.dropped > 0 {
            self.end_line(emit);
        }
    }

    fn end_line(&mut self, emit: &mut impl FnMut(&[u8], usize)) {
        emit(&self.line, self.dropped);
        self.line.clear();
        self.dropped = 0;
    }
}

/// The process group a child leads (it was started in one of its own).
fn group(child: &Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(child.id() as i32)
}

/// Waits up to `grace` for `processes` to end, then kills what is
/// left of their groups (a leader that ended may leave what it forked),
/// and reaps them all.
fn finish_stopping(mut processes: Vec<Child>, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && processes
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut child in processes {
        let _ = killpg(group(&child), Signal::SIGKILL);
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines [`Lines`] passes on for `input`, fed in pieces of `piece`
    /// bytes.
    fn lines_of(input: &[u8], piece: usize) -> Vec<(Vec<u8>, usize)> {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        let mut emit = |line: &[u8], dropped: usize| got.push((line.to_vec(), dropped));
        for part in input.chunks(piece) {
            lines.take(part, &mut emit);
        }
        lines.finish(&mut emit);
        got
    }

    /// Addresses as a little-endian machine's `/proc/net/tcp{,6}` write
    /// them.
    #[cfg(target_endian = "little")]
    #[test]
    fn proc_net_addresses_are_read() {
        use std::net::IpAddr;
        let read = |hex| proc_net_address(hex);
        assert_eq!(read("0100007F"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(read("00000000"), Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(
            read("00000000000000000000000001000000"),
            Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(read("0100007"), None);
        assert_eq!(read("zz00007F"), None);
    }

    /// The sockets this test listens on are found where they listen, and
    /// as this process group's.
    #[test]
    fn a_groups_listener_is_found_where_it_listens() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let group = nix::unistd::getpgrp().as_raw();
        assert_eq!(
            listener_of_group(port, group),
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        );
        // Another group's: not found.
        assert_eq!(listener_of_group(port, i32::MAX), None);
        drop(listener);
        assert_eq!(listener_of_group(port, group), None);
    }

    #[test]
    fn standard_error_lines_are_capped_and_go_on_after_bad_bytes() {
        let mut input = b"not utf-8: \xff\xfe\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3_000_000));
        input.extend_from_slice(b"\nafter\nno end");
        for piece in [1, 7, 8 * 1024, input.len()] {
            let got = lines_of(&input, piece);
            assert_eq!(got.len(), 4, "pieces of {piece}");
            assert_eq!(got[0], (b"not utf-8: \xff\xfe".to_vec(), 0));
            assert_eq!(got[1], (vec![b'x'; MAX_LINE], 3_000_000 - MAX_LINE));
            assert_eq!(got[2], (b"after".to_vec(), 0));
            assert_eq!(got[3], (b"no end".to_vec(), 0));
        }
    }
}
