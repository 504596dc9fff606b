//! `riis.toml`: the server's configuration file.
//!
//! The file names sites with their bindings and roots, the module list (its
//! order is the tie-break order of dispatch), handler mappings, and module
//! sections at server, site and location level. Every error names the file,
//! the line and the key.
//!
//! ```toml
//! [server]
//! worker_threads = 0          # 0: one per core
//! shutdown_timeout = 30       # seconds to drain in-flight requests
//!
//! [[modules]]
//! name = "StaticFile"
//!
//! [[handlers]]
//! name = "StaticFile"
//! path = "*"
//! verbs = ["GET", "HEAD"]
//! resource_type = "Either"
//! modules = ["StaticFile"]
//!
//! [[sites]]
//! name = "Default Web Site"
//! root = "site"
//! bindings = ["127.0.0.1:8080"]
//!
//! [[sites.locations]]
//! path = "/assets"
//! static_file = { max_age = 3600 }
//!
//! [[sites.locations]]
//! path = "/downloads"
//! physical_path = "/srv/downloads"   # a virtual directory
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use riis_pipeline::{
    BuildError, HandlerDefinition, LocationDefinition, SectionSource, SiteDefinition,
};
use serde::Deserialize;

/// A configuration error: file, line (when known), key (when known), message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: Option<usize>,
    /// Dotted key path (`sites[0].bindings[1]`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            f.write_str("key `")?;
            write_escaped(f, key)?;
            f.write_str("`: ")?;
        }
        write_escaped(f, &plain_words(&self.message))
    }
}

/// Writes `text` with its control characters (but line breaks) escaped: a
/// key or value quoted back from the file may hold them, and an escape
/// sequence must not drive the terminal.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return f.write_str(text);
    }
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfigError {}

/// A message of the TOML and serde crates in the words of a configuration
/// file rather than of Rust's types (`expected u64` is "expected a whole
/// number of 0 or more", a sequence an array, a map a table).
fn plain_words(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, plain) in [
        // With their ranges: "0 or more" would not explain why a large
        // number is refused.
        ("expected usize", "expected a whole number of 0 or more"),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        (
            "expected i32",
            "expected a whole number from -2147483648 to 2147483647",
        ),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        (
            "invalid type: floating point",
            "invalid type: number with a fraction",
        ),
    ] {
        if out.contains(rust) {
            out = out.replace(rust, plain);
        }
    }
    out
}

/// The most worker threads `server.worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The longest time, in seconds, a timeout or interval may be (a year).
pub const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// The largest `max_url_length` or `max_header_bytes`.
pub const MAX_HEAD_LIMIT: usize = 1 << 30;

/// The largest `max_header_count`.
pub const MAX_HEADER_COUNT: usize = 10_000;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_timeout: u64,
    /// Seconds between HealthCheck notifications; 0 turns them off.
    pub health_check_interval: u64,
    /// Bytes a response buffers before it is flushed on its own.
    pub response_buffer_limit: usize,
    /// The `Server` header value; empty to send none.
    pub server_header: String,
    /// Bytes of small-file content the file cache holds; 0 turns it off.
    pub file_cache_size: u64,
    /// Largest file the file cache holds (IIS's `maxResponseSize`).
    pub file_cache_max_file_size: u64,
    /// Seconds between file cache sweeps, which drop entries unused since the
    /// previous sweep.
    pub file_cache_cleanup_interval: u64,
    /// Seconds between checks of the TLS certificate files; a changed file
    /// is loaded without a restart. 0: only on SIGHUP.
    pub certificate_check_interval: u64,
    /// Where `riis serve` writes its process id (for `riis reload`); empty
    /// for none.
    pub pid_file: PathBuf,
}

impl ServerSettings {
    /// The `[server]` keys whose values differ from `other`'s.
    pub fn changed_keys(&self, other: &ServerSettings) -> Vec<&'static str> {
        // Destructured: a new setting must be named here to compile.
        let ServerSettings {
            worker_threads,
            shutdown_timeout,
            health_check_interval,
            response_buffer_limit,
            server_header,
            file_cache_size,
            file_cache_max_file_size,
            file_cache_cleanup_interval,
            certificate_check_interval,
            pid_file,
        } = self;
        [
            ("worker_threads", *worker_threads != other.worker_threads),
            (
                "shutdown_timeout",
                *shutdown_timeout != other.shutdown_timeout,
            ),
            (
                "health_check_interval",
                *health_check_interval != other.health_check_interval,
            ),
            (
                "response_buffer_limit",
                *response_buffer_limit != other.response_buffer_limit,
            ),
            ("server_header", *server_header != other.server_header),
            ("file_cache_size", *file_cache_size != other.file_cache_size),
            (
                "file_cache_max_file_size",
                *file_cache_max_file_size != other.file_cache_max_file_size,
            ),
            (
                "file_cache_cleanup_interval",
                *file_cache_cleanup_interval != other.file_cache_cleanup_interval,
            ),
            (
                "certificate_check_interval",
                *certificate_check_interval != other.certificate_check_interval,
            ),
            ("pid_file", *pid_file != other.pid_file),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            shutdown_timeout: 30,
            health_check_interval: 30,
            response_buffer_limit: 4 * 1024 * 1024,
            server_header: concat!("riis/", env!("CARGO_PKG_VERSION")).to_owned(),
            file_cache_size: 64 * 1024 * 1024,
            file_cache_max_file_size: 256 * 1024,
            file_cache_cleanup_interval: 60,
            certificate_check_interval: 10,
            pid_file: PathBuf::new(),
        }
    }
}

/// `[limits]`: what one client may ask of the server. The defaults follow
/// nginx where IIS has no single equivalent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest request target (path and query) in bytes; longer gets 414.
    pub max_url_length: usize,
    /// Most header fields in a request; more gets 431.
    pub max_header_count: usize,
    /// Most bytes of header fields (each counted as name, value and 4); more
    /// gets 431.
    pub max_header_bytes: usize,
    /// Open connections the server accepts at once (0: no limit); over it a
    /// new connection gets 503 and is closed.
    pub max_connections: usize,
    /// Open connections one client address may hold (0: no limit); over it
    /// 503 and close.
    pub max_connections_per_client: usize,
    /// Requests served on one HTTP/1.1 keep-alive connection before it is
    /// closed (0: no limit); nginx's `keepalive_requests`.
    pub max_requests_per_connection: u64,
    /// Streams one HTTP/2 connection may have open at once (nginx's
    /// `http2_max_concurrent_streams`).
    pub http2_max_concurrent_streams: u32,
    /// Bytes of request body one HTTP/2 stream may send before the server
    /// reads them (the stream's initial flow-control window, advertised in
    /// SETTINGS). Between 65,535 (the protocol's default) and 2^31 - 1.
    pub http2_initial_stream_window_size: u32,
    /// Bytes of request body all streams of one HTTP/2 connection together
    /// may send before the server reads them (the connection window).
    /// Between 65,535 and 2^31 - 1.
    pub http2_initial_connection_window_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_url_length: 8192,
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            max_connections: 0,
            max_connections_per_client: 0,
            max_requests_per_connection: 1000,
            http2_max_concurrent_streams: 128,
            // A stream can fill a 1 MiB upload without waiting a round
            // trip for WINDOW_UPDATE; the connection's window is four of
            // those, so that a stream whose module does not read (a
            // WebSocket whose server stopped reading, an upload nobody
            // takes yet) does not hold up the connection's other streams.
            http2_initial_stream_window_size: 1024 * 1024,
            http2_initial_connection_window_size: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The longest HTTP/1.x request line: a target of `max_url_length`
    /// with 1 KiB for the method, the version and the spaces between.
    /// Longer is answered with 414 as soon as it is seen.
    pub fn max_request_line(&self) -> usize {
        self.max_url_length.saturating_add(1024)
    }
}

/// `[timeouts]`, in seconds; 0 turns one off. The defaults are nginx's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (slowloris); then
    /// 408 and close. nginx's `client_header_timeout`.
    pub header_read: u64,
    /// An idle keep-alive connection is closed after this. nginx's
    /// `keepalive_timeout`.
    pub keep_alive: u64,
    /// A client that takes no response bytes for this long is disconnected.
    /// nginx's `send_timeout`.
    pub send: u64,
    /// Longest wait between two reads of a request body a module asked for;
    /// then the read fails and the connection closes. nginx's
    /// `client_body_timeout`.
    pub body_read: u64,
    /// The slowest a request body may arrive while a module waits for it,
    /// in bytes per second averaged over the waits (0: no floor). A client
    /// trickling a byte just often enough to beat `body_read` is cut off by
    /// this one. Kestrel's `MinRequestBodyDataRate` (240 bytes/s).
    pub body_min_rate: u64,
    /// Seconds of waiting on a request body before `body_min_rate` applies,
    /// so a slow start (TCP slow start, a client's think time) is forgiven.
    pub body_min_rate_grace: u64,
    /// Longest a request waits for a module that returned Pending to
    /// complete; then 503 and the request ends (LogRequest, EndRequest still
    /// run). IIS's ASP.NET `executionTimeout`.
    pub execution: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: 60,
            keep_alive: 75,
            send: 60,
            body_read: 60,
            body_min_rate: 240,
            body_min_rate_grace: 5,
            execution: 110,
        }
    }
}

/// `[[modules]]`: one entry of the module list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// The module's name in this server (unique).
    pub name: String,
    /// The built-in module it instantiates, when it differs from `name`
    /// (several `NoOp` modules, say).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl ModuleEntry {
    /// The module it instantiates: `type`, or else its `name`.
    pub fn type_name(&self) -> &str {
        self.kind.as_deref().unwrap_or(&self.name)
    }
}

/// `[[global_modules]]`: a native module library, as IIS's
/// `<globalModules>` lists DLLs. Enabling it in `[[modules]]` loads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalModuleEntry {
    /// The module's name; `[[modules]]` refers to it.
    pub name: String,
    /// The shared library, relative to the configuration file's folder.
    pub image: PathBuf,
    /// `bitness64`, `bitness32`, `integratedMode` (comma-separated, all must
    /// hold); the module is skipped when the precondition does not hold.
    pub precondition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: String,
    #[serde(default = "star")]
    path: String,
    #[serde(default = "star_list")]
    verbs: Vec<String>,
    #[serde(default = "unspecified")]
    resource_type: String,
    modules: Vec<String>,
    #[serde(default)]
    allow_path_info: bool,
}

fn star() -> String {
    "*".into()
}
fn star_list() -> Vec<String> {
    vec!["*".into()]
}
fn unspecified() -> String {
    "Unspecified".into()
}

#[derive(Debug, Deserialize)]
struct RawLocation {
    path: String,
    handlers: Option<Vec<RawHandler>>,
    physical_path: Option<PathBuf>,
    #[serde(flatten)]
    sections: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawSite {
    name: String,
    id: Option<u32>,
    root: PathBuf,
    bindings: Vec<String>,
    certificate: Option<PathBuf>,
    certificate_key: Option<PathBuf>,
    client_certificate_ca: Option<PathBuf>,
    client_certificate_crl: Option<PathBuf>,
    hsts: Option<Hsts>,
    handlers: Option<Vec<RawHandler>>,
    #[serde(default)]
    locations: Vec<RawLocation>,
    #[serde(flatten)]
    sections: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    proxy_protocol: crate::proxy_protocol::ProxyProtocolSettings,
    modules: Option<Vec<ModuleEntry>>,
    #[serde(default)]
    global_modules: Vec<GlobalModuleEntry>,
    handlers: Option<Vec<RawHandler>>,
    #[serde(default)]
    sites: Vec<RawSite>,
    /// Files whose `[[sites]]` join this file's (`include`).
    #[serde(default)]
    include: Vec<String>,
    #[serde(flatten)]
    sections: BTreeMap<String, toml::Value>,
}

/// A file `include` names: sites only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncluded {
    #[serde(default)]
    sites: Vec<RawSite>,
}

/// Where the sites of an included file are among the configuration's, and
/// the lines of its keys, for errors about them.
#[derive(Debug, Clone)]
struct IncludedFile {
    file: PathBuf,
    /// The index of its first site among all (`sites[first]` is its
    /// `sites[0]`), and how many it has.
    first: usize,
    count: usize,
    key_lines: BTreeMap<String, usize>,
}

/// Where a site listens: an address and port, and optionally the host name
/// the site answers to there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Address and port.
    pub addr: SocketAddr,
    /// Host name (lower case), or `None` to answer any host. A name that
    /// starts with `*.` (IIS 10's wildcard host) answers every name below
    /// the rest (`*.example.com`: `a.example.com`, `a.b.example.com`, not
    /// `example.com`).
    pub host: Option<String>,
    /// An `https://` binding: TLS, the certificate chosen by host name.
    pub tls: bool,
}

impl Binding {
    /// Parses IIS's binding form `address:port[:host]`, where the address is
    /// an IPv4 address, `[IPv6]`, `*` (all IPv4 addresses) or `localhost`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        // A scheme is case-insensitive (RFC 3986 §3.1): `HTTPS://` too.
        let scheme = |name: &str| {
            s.get(..name.len())
                .filter(|p| p.eq_ignore_ascii_case(name))
                .map(|_| &s[name.len()..])
        };
        let (s, tls) = match scheme("https://") {
            Some(rest) => (rest, true),
            None => (scheme("http://").unwrap_or(s), false),
        };
        // `::1:8080` (an IPv6 address without its brackets) would read as
        // an empty address and port `:1:8080`.
        let unbracketed = |a: &str| a.parse::<Ipv6Addr>().is_ok();
        if unbracketed(s) || s.rsplit_once(':').is_some_and(|(a, _)| unbracketed(a)) {
            return Err(format!(
                "`{s}`: an IPv6 address goes in brackets, `[::1]:8080`"
            ));
        }
        let (addr, rest) = if let Some(v6) = s.strip_prefix('[') {
            let (a, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: missing `]` after the IPv6 address"))?;
            let ip: Ipv6Addr = a
                .parse()
                .map_err(|_| format!("`{a}` is not an IPv6 address"))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("`{s}` is not `[address]:port[:host]`"))?;
            (IpAddr::V6(ip), rest)
        } else {
            let (a, rest) = s
                .split_once(':')
                .ok_or_else(|| format!("`{s}` is not `address:port[:host]`"))?;
            let ip = match a {
                "*" | "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                a => a
                    .parse()
                    .map_err(|_| format!("`{a}` is not an IP address, `*` or `localhost`"))?,
            };
            (ip, rest)
        };
        let (port, host) = match rest.split_once(':') {
            Some((p, h)) => (p, Some(h)),
            None => (rest, None),
        };
        // Digits only, without leading zeros (`+80` and `080` parse as
        // numbers, but nginx and IIS refuse them).
        let plain = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port == "0" || !port.starts_with('0'));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|_| plain)
            .ok_or_else(|| format!("`{port}` is not a port number (0 to 65535)"))?;
        let host = match host.filter(|h| !h.is_empty()) {
            None => None,
            // Compared with the request's host, which loses its port and a
            // trailing dot the same way: anything else could never match.
            Some(h) => {
                let name = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
                // IIS 10's wildcard host: `*` as the whole left-most label.
                let below = name.strip_prefix("*.").unwrap_or(&name);
                let valid = !below.is_empty()
                    && !below.starts_with('.')
                    && !below.ends_with('.')
                    && !below.contains("..")
                    && below
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                if !valid {
                    return Err(format!(
                        "`{h}` is not a host name (letters, digits, `-`, `_` and `.`, \
                         or `*.` and such a name for every name below it; \
                         no port or IPv6 literal; an internationalized name \
                         in its `xn--` form, as DNS has it)"
                    ));
                }
                Some(name)
            }
        };
        Ok(Self {
            addr: SocketAddr::new(addr, port),
            host,
            tls,
        })
    }
}

/// A site's bindings, next to its definition for the pipeline.
#[derive(Debug, Clone)]
pub struct SiteBindings {
    /// Index of the site in [`ServerConfig::sites`].
    pub site: usize,
    /// Where it listens.
    pub bindings: Vec<Binding>,
    /// Its certificate for `https://` bindings.
    pub tls: Option<SiteCertificate>,
    /// Its `hsts` setting.
    pub hsts: Option<Hsts>,
}

/// A site's `hsts`: the `Strict-Transport-Security` header its responses
/// carry on TLS connections (RFC 6797).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// `max-age`, seconds.
    pub max_age: u64,
    /// `includeSubDomains`.
    #[serde(default)]
    pub include_subdomains: bool,
    /// `preload`.
    #[serde(default)]
    pub preload: bool,
}

impl Hsts {
    /// The header value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// A site's certificate: PEM files, resolved against the configuration's
/// folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCertificate {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `client_certificate_ca`: the handshake asks clients for a
    /// certificate, and one they present must chain to these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    /// `client_certificate_crl`: revocation lists (PEM) that every client
    /// certificate, and every intermediate CA of its chain, is checked
    /// against.
    pub client_crl: Option<PathBuf>,
}

/// A loaded configuration, ready to build a pipeline from.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The file it came from (for errors), or a description of where the
    /// defaults came from.
    pub file: PathBuf,
    /// The folder relative paths are taken from: the file's own (for
    /// modules, [`riis_pipeline::ServerInfo::configuration_folder`]).
    pub folder: PathBuf,
    /// `[server]`.
    pub settings: ServerSettings,
    /// `[limits]`.
    pub limits: Limits,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[proxy_protocol]`: the listening addresses whose connections start
    /// with a PROXY protocol header, and who may send it.
    pub proxy_protocol: crate::proxy_protocol::ProxyProtocol,
    /// The module list, in order.
    pub modules: Vec<ModuleEntry>,
    /// Native module libraries, images resolved against the file's folder.
    pub global_modules: Vec<GlobalModuleEntry>,
    /// Server-level handlers.
    pub handlers: Vec<HandlerDefinition>,
    /// Server-level module sections.
    pub sections: Vec<SectionSource>,
    /// Sites for the pipeline.
    pub sites: Vec<SiteDefinition>,
    /// Their bindings.
    pub bindings: Vec<SiteBindings>,
    /// Key path → line, to place errors found after parsing.
    key_lines: BTreeMap<String, usize>,
    /// The files `include` named, in the order their sites come.
    included: Vec<IncludedFile>,
    /// `--listen` replaced every binding's address: the file's bindings
    /// are not where the server listens.
    listen_overridden: bool,
}

/// The module list when the file gives none: IIS's standard set for a
/// static site, in the order that breaks ties between them.
pub const DEFAULT_MODULES: &[&str] = &[
    "RequestFiltering",
    "AnonymousAuthentication",
    "HttpRedirection",
    "ProtocolSupport",
    "CustomError",
    "StaticCompression",
    "StaticFile",
    "DefaultDocument",
    "DirectoryListing",
];

/// Why a site's or module's name cannot be used, if it cannot: names go
/// into log lines, traces, the listening line scripts read, and headers
/// (`X-Riis-Trace`), so they are never empty and hold no control
/// characters.
fn bad_name(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("a name cannot be empty")
    } else if name.chars().any(char::is_control) {
        Some("a name cannot hold control characters (line breaks, tabs, escapes)")
    } else {
        None
    }
}

/// The handlers when the file gives none: OPTIONS and TRACE to
/// ProtocolSupport, IIS's `SSINC-*` pages to ServerSideInclude, then the
/// static handler catching everything, each with those of its modules
/// that are in the list.
fn default_handlers(modules: &[ModuleEntry]) -> Vec<HandlerDefinition> {
    let listed = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|m| modules.iter().any(|e| e.name == **m))
            .map(|m| (*m).to_owned())
            .collect()
    };
    let mut handlers = Vec::new();
    let protocol = listed(&["ProtocolSupport"]);
    if !protocol.is_empty() {
        handlers.push(HandlerDefinition {
            name: "OPTIONSVerbHandler".into(),
            path: "*".into(),
            verbs: vec!["OPTIONS".into(), "TRACE".into()],
            resource_type: "Unspecified".into(),
            modules: protocol,
            allow_path_info: false,
            key: "handlers".into(),
        });
    }
    if !listed(&["ServerSideInclude"]).is_empty() {
        // IIS's applicationHost.config maps these three, before StaticFile.
        for extension in ["stm", "shtm", "shtml"] {
            handlers.push(HandlerDefinition {
                name: format!("SSINC-{extension}"),
                path: format!("*.{extension}"),
                verbs: vec!["GET".into(), "HEAD".into(), "POST".into()],
                resource_type: "File".into(),
                modules: vec!["ServerSideInclude".into()],
                allow_path_info: false,
                key: "handlers".into(),
            });
        }
    }
    let static_modules = listed(&["StaticFile", "DefaultDocument", "DirectoryListing"]);
    if !static_modules.is_empty() {
        handlers.push(HandlerDefinition {
            name: "StaticFile".into(),
            path: "*".into(),
            // What its modules answer: OPTIONS then lists only these.
            verbs: vec!["GET".into(), "HEAD".into()],
            resource_type: "Either".into(),
            modules: static_modules,
            allow_path_info: false,
            key: "handlers".into(),
        });
    }
    handlers
}

fn handlers(raw: Vec<RawHandler>, key: &str) -> Vec<HandlerDefinition> {
    raw.into_iter()
        .enumerate()
        .map(|(i, h)| HandlerDefinition {
            name: h.name,
            path: h.path,
            verbs: h.verbs,
            resource_type: h.resource_type,
            modules: h.modules,
            allow_path_info: h.allow_path_info,
            key: format!("{key}[{i}]"),
        })
        .collect()
}

fn sections(raw: BTreeMap<String, toml::Value>, prefix: &str) -> Vec<SectionSource> {
    raw.into_iter()
        .map(|(name, value)| SectionSource {
            key: if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            },
            name,
            value,
        })
        .collect()
}

/// The largest configuration file read.
const MAX_CONFIG_FILE: u64 = 16 << 20;

impl ServerConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// The `[server] pid_file` of the configuration at `path`, read without
    /// checking the rest: `riis status` must find the running server while
    /// its file is being edited (a typo, a root not made yet).
    pub fn pid_file_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let text = read_text(path)?;
        let named = match toml::from_str::<toml::Table>(&text) {
            Ok(doc) => doc
                .get("server")
                .and_then(|s| s.get("pid_file"))
                .and_then(toml::Value::as_str)
                .map(str::to_owned),
            // A file that does not parse now (an edit under way): its
            // `pid_file = "…"` line under `[server]`, if it has a plain one.
            Err(e) => Some(pid_file_line(&text).ok_or_else(|| ConfigError {
                file: path.to_owned(),
                line: e.span().map(|s| text[..s.start].matches('\n').count() + 1),
                key: None,
                message: e.message().to_owned(),
            })?),
        };
        Ok(named
            .filter(|p| !p.is_empty())
            .map(|p| resolve_beside(path, Path::new(&p))))
    }
}

/// The value of a `pid_file = "…"` (or `'…'`) line in the `[server]` table
/// of a file that does not parse as a whole.
fn pid_file_line(text: &str) -> Option<String> {
    let mut in_server = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_server = line == "[server]";
            continue;
        }
        let Some(value) = line
            .strip_prefix("pid_file")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::trim)
            .filter(|_| in_server)
        else {
            continue;
        };
        let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'')?;
        let inner = &value[1..];
        return inner.find(quote).map(|end| inner[..end].to_owned());
    }
    None
}

/// `file` as a path: as it is when absolute, else beside the configuration
/// at `config`.
fn resolve_beside(config: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(file)
    }
}

/// `path` without `..` components: the part up to its last `..` is
/// resolved as the file system does (a link before a `..` is followed, so
/// `/etc/riis/../www` is right when `/etc/riis` is a link), and the rest is
/// kept as written, so a link after it (a `current` release link) is still
/// followed at each request. Programs refuse such paths (php-cgi and
/// php-fpm answer "No input file specified" to a `SCRIPT_FILENAME` with
/// `..`), and `..` has no place in what a request maps to. `path` as it is
/// when it has no `..` or the part cannot be resolved.
fn without_parent_steps(path: PathBuf) -> PathBuf {
    use std::path::Component;
    let Some(last) = path
        .components()
        .enumerate()
        .filter(|(_, c)| *c == Component::ParentDir)
        .map(|(i, _)| i)
        .last()
    else {
        return path;
    };
    let head: PathBuf = path.components().take(last + 1).collect();
    let rest: PathBuf = path.components().skip(last + 1).collect();
    match std::fs::canonicalize(&head) {
        // (`join` of an empty path would add a trailing `/`.)
        Ok(resolved) if rest.as_os_str().is_empty() => resolved,
        Ok(resolved) => resolved.join(rest),
        Err(_) => path,
    }
}

/// The text of the configuration file at `path`.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let cannot = |message: String| ConfigError {
        file: path.to_owned(),
        line: None,
        key: None,
        message,
    };
    // A regular file of reasonable size: a FIFO or a device named by
    // mistake (or left at the name) would hold `check-config`, or a
    // reload, forever.
    let file = crate::fs::open_nonblocking(path)
        .map_err(|e| cannot(format!("cannot read the file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| cannot(format!("cannot read the file: {e}")))?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".to_owned()));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(cannot(format!(
            "the file is larger than {} MiB",
            MAX_CONFIG_FILE >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, MAX_CONFIG_FILE + 1),
        &mut bytes,
    )
    .map_err(|e| cannot(format!("cannot read the file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // The line of the first byte that is not UTF-8.
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError {
            file: path.to_owned(),
            line: Some(line),
            key: None,
            message: "the file is not UTF-8 text".to_owned(),
        }
    })?;
    Ok(text)
}

/// A TOML document read into `T`, with the line of each key path; errors
/// name `file`, the line and the innermost key.
fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<(T, BTreeMap<String, usize>), ConfigError> {
    let error = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
        file: file.to_owned(),
        line,
        key,
        message,
    };
    let lines = Lines::new(text);
    let (key_lines, value_spans, too_large) = index_keys(text, &lines).map_err(|e| {
        let line = e.span().map(|s| lines.of(s.start));
        let mut message = e.message().to_owned();
        // The toml crate's "duplicate key" names no key: the span does.
        if message == "duplicate key" {
            if let Some(name) = e
                .span()
                .and_then(|s| text.get(s))
                .map(|k| k.trim().trim_matches(['[', ']']).trim())
                .filter(|k| !k.is_empty() && !k.contains('\n'))
            {
                message = format!("duplicate key `{name}`");
            }
        }
        error(line, None, message)
    })?;
    if let Some((key, line)) = too_large {
        return Err(error(
            Some(line),
            Some(key),
            "the number is out of range (TOML integers are 64-bit: -9223372036854775808 to 9223372036854775807)".to_owned(),
        ));
    }
    let parsed: T = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let line = span.as_ref().map(|s| lines.of(s.start));
        // The innermost key whose value holds the error (a value inside
        // an inline table names its own key, not the table's last one).
        let innermost = span.and_then(|span| {
            value_spans
                .iter()
                .filter(|(_, v)| v.start <= span.start && span.end <= v.end)
                .min_by_key(|(_, v)| v.len())
                .map(|(key, _)| key.clone())
        });
        // An array of tables named whole, for a field missing in one of
        // its tables (the first `[[sites]]` without a `name`): that table.
        let missing_field = e.message().starts_with("missing field");
        let innermost = innermost.map(|key| {
            line.filter(|_| missing_field)
                .and_then(|line| {
                    key_lines
                        .iter()
                        .find(|(element, at)| {
                            **at == line
                                && element.strip_prefix(key.as_str()).is_some_and(|rest| {
                                    rest.starts_with('[')
                                        && rest.ends_with(']')
                                        && !rest.contains('.')
                                })
                        })
                        .map(|(element, _)| element.clone())
                })
                .unwrap_or(key)
        });
        // Else the key written on that line (the deepest).
        let key = innermost.or_else(|| {
            let line = line?;
            key_lines
                .iter()
                .filter(|(_, at)| **at == line)
                .map(|(key, _)| key)
                .max_by_key(|key| key.len())
                .cloned()
        });
        // An unknown field holding an array or a table: the key found
        // is inside its value; name the field itself.
        let key = match unknown_field(e.message()) {
            Some(field) => key.map(|key| cut_after_field(&key, field)),
            None => key,
        };
        error(line, key, e.message().to_owned())
    })?;
    Ok((parsed, key_lines))
}

impl ServerConfig {
    /// Parses configuration text; relative site roots are taken from `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        let (mut raw, key_lines): (RawConfig, _) =
            parse_document(text, file).map_err(|mut e| {
                if e.key.as_deref().is_some_and(is_misplaced_include) {
                    e.message = MISPLACED_INCLUDE.to_owned();
                }
                e
            })?;
        let included = include_sites(&mut raw, file, base, &key_lines)?;

        let modules = raw.modules.unwrap_or_else(|| {
            DEFAULT_MODULES
                .iter()
                .map(|m| ModuleEntry {
                    name: (*m).to_owned(),
                    kind: None,
                })
                .collect()
        });
        let server_handlers = match raw.handlers {
            Some(h) => handlers(h, "handlers"),
            None => default_handlers(&modules),
        };
        let mut sites = Vec::new();
        let mut bindings = Vec::new();
        let mut config = Self {
            file: file.to_owned(),
            folder: std::path::absolute(base).unwrap_or_else(|_| base.to_owned()),
            settings: raw.server,
            limits: raw.limits,
            timeouts: raw.timeouts,
            proxy_protocol: Default::default(),
            modules,
            global_modules: raw
                .global_modules
                .into_iter()
                .map(|g| GlobalModuleEntry {
                    // Absolute, so the dynamic loader never searches its
                    // library path for a bare file name.
                    image: std::path::absolute(base.join(&g.image)).unwrap_or(g.image),
                    ..g
                })
                .collect(),
            handlers: server_handlers,
            sections: sections(raw.sections, ""),
            sites: Vec::new(),
            bindings: Vec::new(),
            key_lines,
            included,
            listen_overridden: false,
        };
        // serde reads a struct from an array as well, field by field
        // (`limits = [5]` set the first limit): the settings tables must be
        // tables.
        if let Ok(doc) = toml::from_str::<toml::Table>(text) {
            let sites = doc.get("sites").and_then(toml::Value::as_array);
            let site_tables = sites
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, site)| Some((format!("sites[{i}].hsts"), site.get("hsts")?)));
            let tables = ["server", "limits", "timeouts", "proxy_protocol"]
                .into_iter()
                .filter_map(|key| Some((key.to_owned(), doc.get(key)?)))
                .chain(site_tables);
            for (key, value) in tables {
                if !value.is_table() {
                    return Err(config.error_at(
                        &key,
                        &format!(
                            "expected a table (`[{key}]` or `{key} = {{ … }}`), found {}",
                            value.type_str()
                        ),
                    ));
                }
            }
        }
        if raw.sites.is_empty() {
            return Err(config.error_at(
                "sites",
                "the configuration defines no site (add a [[sites]] table)",
            ));
        }
        for (i, module) in config.modules.iter().enumerate() {
            if let Some(why) = bad_name(&module.name) {
                return Err(config.error_at(&format!("modules[{i}].name"), why));
            }
        }
        for (i, site) in raw.sites.into_iter().enumerate() {
            let key = format!("sites[{i}]");
            if let Some(why) = bad_name(&site.name) {
                return Err(config.error_at(&format!("{key}.name"), why));
            }
            if site.bindings.is_empty() {
                return Err(config.error_at(
                    &format!("{key}.bindings"),
                    "a site needs at least one binding",
                ));
            }
            let parsed = site
                .bindings
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    Binding::parse(b)
                        .map_err(|m| config.error_at(&format!("{key}.bindings[{j}]"), &m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if site.root.as_os_str().is_empty() {
                // It would serve the configuration's own folder; `"."`
                // says that on purpose.
                return Err(config.error_at(
                    &format!("{key}.root"),
                    "the root is empty (write `.` to serve the configuration's folder)",
                ));
            }
            let folder = |path: &Path, key: &str| -> Result<PathBuf, ConfigError> {
                let absolute = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    base.join(path)
                };
                match std::fs::metadata(&absolute) {
                    // Not canonicalized: a folder that is a symbolic link is
                    // followed at each request, as nginx and IIS do, so
                    // switching the link (an atomic deploy) takes effect at
                    // once.
                    Ok(meta) if meta.is_dir() => Ok(without_parent_steps(
                        std::path::absolute(&absolute).unwrap_or(absolute),
                    )),
                    Ok(_) => Err(config
                        .error_at(key, &format!("`{}` is not a directory", absolute.display()))),
                    // The real reason: missing, not allowed, a link loop.
                    Err(e) => Err(config.error_at(
                        key,
                        &format!("`{}` is not a usable directory: {e}", absolute.display()),
                    )),
                }
            };
            let root = folder(&site.root, &format!("{key}.root"))?;
            let locations = site
                .locations
                .into_iter()
                .enumerate()
                .map(|(j, l)| {
                    let lkey = format!("{key}.locations[{j}]");
                    let physical_path = match &l.physical_path {
                        Some(p) if p.as_os_str().is_empty() => {
                            return Err(config.error_at(
                                &format!("{lkey}.physical_path"),
                                "the physical path is empty",
                            ))
                        }
                        Some(p) => Some(folder(p, &format!("{lkey}.physical_path"))?),
                        None => None,
                    };
                    Ok(LocationDefinition {
                        path: l.path,
                        handlers: l.handlers.map(|h| handlers(h, &format!("{lkey}.handlers"))),
                        physical_path,
                        sections: sections(l.sections, &lkey),
                        key: lkey,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            sites.push(SiteDefinition {
                id: site.id.unwrap_or(i as u32 + 1),
                name: site.name,
                physical_root: root,
                handlers: site
                    .handlers
                    .map(|h| handlers(h, &format!("{key}.handlers"))),
                sections: sections(site.sections, &key),
                locations,
                key: key.clone(),
            });
            let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
            let tls = match (site.certificate, site.certificate_key) {
                (Some(c), Some(k)) => Some(SiteCertificate {
                    certificate: resolve(c),
                    key: resolve(k),
                    client_ca: site.client_certificate_ca.clone().map(resolve),
                    client_crl: site.client_certificate_crl.clone().map(resolve),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(config.error_at(
                        &format!("{key}.certificate"),
                        "a certificate needs its `certificate_key`",
                    ))
                }
                (None, Some(_)) => {
                    return Err(config.error_at(
                        &format!("{key}.certificate_key"),
                        "a `certificate_key` needs its `certificate`",
                    ))
                }
            };
            let https = parsed.iter().position(|b| b.tls);
            match (https, &tls) {
                (Some(j), None) => {
                    return Err(config.error_at(
                        &format!("{key}.bindings[{j}]"),
                        "an https binding needs the site's `certificate` and `certificate_key`",
                    ))
                }
                (None, Some(_)) => {
                    return Err(config.error_at(
                        &format!("{key}.certificate"),
                        "the site has no https binding to use the certificate with",
                    ))
                }
                _ => {}
            }
            if site.client_certificate_ca.is_some() && https.is_none() {
                return Err(config.error_at(
                    &format!("{key}.client_certificate_ca"),
                    "client certificates need an https binding (and the site's certificate)",
                ));
            }
            if site.client_certificate_crl.is_some() && site.client_certificate_ca.is_none() {
                return Err(config.error_at(
                    &format!("{key}.client_certificate_crl"),
                    "revocation lists need the site's `client_certificate_ca`",
                ));
            }
            if site.hsts.is_some() && https.is_none() {
                return Err(config.error_at(
                    &format!("{key}.hsts"),
                    "hsts needs an https binding (and the site's certificate)",
                ));
            }
            if site
                .hsts
                .as_ref()
                .is_some_and(|h| h.preload && (h.max_age < 31_536_000 || !h.include_subdomains))
            {
                // The browsers' preload list refuses such a header: the
                // site would be sent as asking for what it cannot get.
                return Err(config.error_at(
                    &format!("{key}.hsts.preload"),
                    "preload needs max_age of at least 31536000 (a year) and \
                     include_subdomains = true, as the browsers' preload list requires",
                ));
            }
            for (j, b) in parsed.iter().enumerate() {
                if parsed[..j].contains(b) {
                    return Err(config.error_at(
                        &format!("{key}.bindings[{j}]"),
                        &format!("`{}` is listed twice", site.bindings[j]),
                    ));
                }
            }
            if site.id == Some(0) {
                return Err(config.error_at(
                    &format!("{key}.id"),
                    "site ids start at 1 (IIS's Default Web Site is 1)",
                ));
            }
            bindings.push(SiteBindings {
                site: i,
                bindings: parsed,
                tls,
                hsts: site.hsts,
            });
        }
        for (i, a) in sites.iter().enumerate() {
            if sites[..i].iter().any(|b| b.id == a.id) {
                return Err(config.error_at(
                    &format!("{}.id", a.key),
                    &format!("site id {} is used twice", a.id),
                ));
            }
            if sites[..i].iter().any(|b| b.name == a.name) {
                return Err(config.error_at(
                    &format!("{}.name", a.key),
                    &format!("site name `{}` is used twice", a.name),
                ));
            }
        }
        config.sites = sites;
        config.bindings = bindings;
        config.check_limits()?;
        config.check_binding_conflicts()?;
        config.proxy_protocol = config.check_proxy_protocol(&raw.proxy_protocol)?;
        Ok(config)
    }

    /// Where `[server] pid_file` puts the process id (relative to this
    /// file's folder), if anywhere.
    pub fn pid_file(&self) -> Option<PathBuf> {
        let path = &self.settings.pid_file;
        if path.as_os_str().is_empty() {
            return None;
        }
        Some(resolve_beside(&self.file, path))
    }

    /// Replaces the address of every binding (`--listen`), keeping host names.
    pub fn override_listen(&mut self, addr: SocketAddr) -> Result<(), ConfigError> {
        // The PROXY protocol moves with the bindings when every address
        // expected it; when only some did, one socket cannot be both.
        if self.proxy_protocol.is_enabled() {
            let every = self.bindings.iter().all(|sb| {
                sb.bindings
                    .iter()
                    .all(|b| self.proxy_protocol.expects_header(b.addr))
            });
            if !every {
                return Err(ConfigError {
                    file: PathBuf::from(format!("--listen {addr}")),
                    line: None,
                    key: None,
                    message: format!(
                        "[proxy_protocol] of {} lists some listening addresses but not all, \
                         and every binding moves to this one address",
                        self.file.display()
                    ),
                });
            }
            self.proxy_protocol = self.proxy_protocol.moved_to(addr);
        }
        self.listen_overridden = true;
        for b in &mut self.bindings {
            for binding in &mut b.bindings {
                binding.addr = addr;
            }
            // Bindings that differed only in their address are one now,
            // wherever they stood in the list.
            let mut seen = Vec::with_capacity(b.bindings.len());
            b.bindings.retain(|binding| {
                let first = !seen.contains(binding);
                if first {
                    seen.push(binding.clone());
                }
                first
            });
        }
        // A conflict now is the option's doing, not the file's: say so
        // (every binding shares the one address).
        self.check_binding_conflicts().map_err(|e| ConfigError {
            file: PathBuf::from(format!("--listen {addr}")),
            line: None,
            key: None,
            message: format!(
                "{} (every binding of {} moves to this one address)",
                e.message,
                self.file.display()
            ),
        })
    }

    /// `[proxy_protocol]`, checked against the bindings: each address it
    /// lists is one a site listens on, and an address that shares a
    /// wildcard's socket agrees with the wildcard (the header is there or
    /// not before riis knows which address a connection came to).
    fn check_proxy_protocol(
        &self,
        settings: &crate::proxy_protocol::ProxyProtocolSettings,
    ) -> Result<crate::proxy_protocol::ProxyProtocol, ConfigError> {
        use crate::proxy_protocol::ProxyProtocol;
        let checked = ProxyProtocol::from_settings(settings)
            .map_err(|(key, m)| self.error_at(&format!("proxy_protocol.{key}"), &m))?;
        let bound = |addr: SocketAddr| {
            self.bindings
                .iter()
                .any(|sb| sb.bindings.iter().any(|b| b.addr == addr))
        };
        for (i, listened) in checked.listen().iter().enumerate() {
            let addr = &listened.addr;
            if !bound(*addr) {
                return Err(self.error_at(
                    &format!("proxy_protocol.listen[{i}]"),
                    &format!("no site has a binding on {addr}"),
                ));
            }
            // A scheme written before the address is the bindings' own.
            let serves_tls = self
                .bindings
                .iter()
                .flat_map(|sb| &sb.bindings)
                .any(|b| b.addr == *addr && b.tls);
            if let Some(tls) = listened.scheme.filter(|tls| *tls != serves_tls) {
                let (written, served) = if tls {
                    ("https://", "plain HTTP")
                } else {
                    ("http://", "TLS")
                };
                return Err(self.error_at(
                    &format!("proxy_protocol.listen[{i}]"),
                    &format!("{written}{addr}: the bindings on {addr} serve {served}"),
                ));
            }
        }
        for (specific, wildcard) in self.wildcard_sharing() {
            if checked.expects_header(specific) != checked.expects_header(wildcard) {
                let listed = if checked.expects_header(specific) {
                    specific
                } else {
                    wildcard
                };
                let i = checked
                    .listen()
                    .iter()
                    .position(|l| l.addr == listed)
                    .unwrap_or(0);
                return Err(self.error_at(
                    &format!("proxy_protocol.listen[{i}]"),
                    &format!(
                        "{specific} shares the socket of {wildcard}: list both or neither \
                         (a connection's first bytes are read before its address is known)"
                    ),
                ));
            }
        }
        Ok(checked)
    }

    /// `[server] server_header` as a header value; `None` for no `Server`
    /// header. Checked at load, so a reload (which keeps the running
    /// `[server]`) refuses a value a restart would refuse.
    pub fn server_header(&self) -> Result<Option<http::HeaderValue>, ConfigError> {
        let invalid = || {
            self.error_at(
                "server.server_header",
                "not a valid header value (visible ASCII and spaces only)",
            )
        };
        match self.settings.server_header.as_str() {
            "" => Ok(None),
            // http accepts obs-text (bytes over 0x7F) in values, which RFC
            // 9110 keeps only for old senders; a product name has no need.
            text if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => Err(invalid()),
            text => http::HeaderValue::try_from(text)
                .map(Some)
                .map_err(|_| invalid()),
        }
    }

    /// Values serde accepts but the protocols do not.
    fn check_limits(&self) -> Result<(), ConfigError> {
        self.server_header()?;
        // RFC 9113 §6.9.2: a window is at least the initial 65,535 here (a
        // smaller one would stall uploads) and at most 2^31 - 1.
        const WINDOW: std::ops::RangeInclusive<u32> = 65_535..=0x7fff_ffff;
        for (key, value) in [
            (
                "limits.http2_initial_stream_window_size",
                self.limits.http2_initial_stream_window_size,
            ),
            (
                "limits.http2_initial_connection_window_size",
                self.limits.http2_initial_connection_window_size,
            ),
        ] {
            if !WINDOW.contains(&value) {
                return Err(self.error_at(
                    key,
                    &format!("{value} is not a flow-control window (65535 to 2147483647)"),
                ));
            }
        }
        if self.limits.http2_max_concurrent_streams == 0 {
            return Err(self.error_at(
                "limits.http2_max_concurrent_streams",
                "0 would refuse every HTTP/2 request",
            ));
        }
        for (key, value) in [
            ("limits.max_url_length", self.limits.max_url_length),
            ("limits.max_header_count", self.limits.max_header_count),
            ("limits.max_header_bytes", self.limits.max_header_bytes),
        ] {
            if value == 0 {
                return Err(self.error_at(key, "0 would refuse every request"));
            }
            // The head buffer is sized from these; a value near usize::MAX
            // would wrap around when they are added up.
            if value > MAX_HEAD_LIMIT {
                return Err(self.error_at(
                    key,
                    &format!("{value} is more than {MAX_HEAD_LIMIT} (1 GiB)"),
                ));
            }
        }
        // The parser sets aside room for this many fields on every read of
        // a head.
        if self.limits.max_header_count > MAX_HEADER_COUNT {
            return Err(self.error_at(
                "limits.max_header_count",
                &format!(
                    "{} is more than {MAX_HEADER_COUNT} header fields",
                    self.limits.max_header_count
                ),
            ));
        }
        if self.settings.worker_threads > MAX_WORKER_THREADS {
            return Err(self.error_at(
                "server.worker_threads",
                &format!(
                    "{} is more than {MAX_WORKER_THREADS} worker threads (0: one per core)",
                    self.settings.worker_threads
                ),
            ));
        }
        let t = &self.timeouts;
        let s = &self.settings;
        for (key, value) in [
            ("server.shutdown_timeout", s.shutdown_timeout),
            ("server.health_check_interval", s.health_check_interval),
            (
                "server.file_cache_cleanup_interval",
                s.file_cache_cleanup_interval,
            ),
            (
                "server.certificate_check_interval",
                s.certificate_check_interval,
            ),
            ("timeouts.header_read", t.header_read),
            ("timeouts.keep_alive", t.keep_alive),
            ("timeouts.send", t.send),
            ("timeouts.body_read", t.body_read),
            ("timeouts.body_min_rate_grace", t.body_min_rate_grace),
            ("timeouts.execution", t.execution),
        ] {
            // Deadlines are instants from now: a number of seconds near
            // u64::MAX cannot be added to one.
            if value > MAX_SECONDS {
                return Err(self.error_at(
                    key,
                    &format!("{value} seconds is more than a year ({MAX_SECONDS})"),
                ));
            }
        }
        // Checked here, so `check-config` catches what `serve` would fail
        // on only after binding its addresses.
        if let Some(pid_file) = self.pid_file() {
            // `riis.pid` beside a `riis.toml` named without a folder: here.
            let folder = pid_file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let usable = folder.is_dir()
                && nix::unistd::access(folder, nix::unistd::AccessFlags::W_OK).is_ok();
            if !usable {
                return Err(self.error_at(
                    "server.pid_file",
                    &format!(
                        "the folder of {} does not exist or cannot be written to",
                        pid_file.display()
                    ),
                ));
            }
            // A pid file is replaced whole; a folder (or a device) there
            // cannot be.
            let occupied =
                std::fs::symlink_metadata(&pid_file).is_ok_and(|m| !m.file_type().is_file());
            if occupied {
                return Err(self.error_at(
                    "server.pid_file",
                    &format!("{} exists and is not a file", pid_file.display()),
                ));
            }
        }
        Ok(())
    }

    fn check_binding_conflicts(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(&Binding, usize)> = Vec::new();
        for sb in &self.bindings {
            for (j, b) in sb.bindings.iter().enumerate() {
                if seen.iter().any(|(o, _)| o.addr == b.addr && o.tls != b.tls) {
                    return Err(self.error_at(
                        &format!("sites[{}].bindings[{j}]", sb.site),
                        &format!("{} is bound both with and without TLS", b.addr),
                    ));
                }
                if let Some((_, other)) = seen
                    .iter()
                    .find(|(o, s)| o.addr == b.addr && o.host == b.host && *s != sb.site)
                {
                    let what = b
                        .host
                        .as_deref()
                        .map_or(String::new(), |h| format!(" for host `{h}`"));
                    return Err(self.error_at(
                        &format!("sites[{}].bindings", sb.site),
                        &format!(
                            "sites `{}` and `{}` both bind {}{what}",
                            self.sites[*other].name, self.sites[sb.site].name, b.addr
                        ),
                    ));
                }
                seen.push((b, sb.site));
            }
        }
        // An address-specific binding on a wildcard's port is served from
        // the wildcard's socket, so both must speak the same protocol.
        let shared = self.wildcard_sharing();
        for sb in &self.bindings {
            for (j, b) in sb.bindings.iter().enumerate() {
                let Some(wildcard) = shared.get(&b.addr) else {
                    continue;
                };
                let mismatch = self
                    .bindings
                    .iter()
                    .flat_map(|o| &o.bindings)
                    .any(|o| o.addr == *wildcard && o.tls != b.tls);
                if mismatch {
                    return Err(self.error_at(
                        &format!("sites[{}].bindings[{j}]", sb.site),
                        &format!(
                            "{} shares port {} with the wildcard binding {wildcard}, which is \
                             bound {} TLS; both must be `https://` or neither",
                            b.addr,
                            b.addr.port(),
                            if b.tls { "without" } else { "with" }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Address-specific binding addresses that share a socket with a
    /// wildcard binding (`*:80` beside `10.0.0.1:80`), mapped to that
    /// wildcard address. As with IIS and nginx, riis then listens on the
    /// wildcard address only and tells the two apart by the address each
    /// connection arrived at. Port 0 (an ephemeral port for each binding)
    /// shares nothing.
    pub(crate) fn wildcard_sharing(&self) -> BTreeMap<SocketAddr, SocketAddr> {
        let addrs: std::collections::BTreeSet<SocketAddr> = self
            .bindings
            .iter()
            .flat_map(|sb| sb.bindings.iter().map(|b| b.addr))
            .collect();
        addrs
            .iter()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
            .filter_map(|a| {
                let unspecified = match a.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                let wildcard = SocketAddr::new(unspecified, a.port());
                addrs.contains(&wildcard).then_some((*a, wildcard))
            })
            .collect()
    }

    /// An error about listening on `addr`, placed at the first binding of
    /// the file that names it (`None` under `--listen`, where no binding
    /// of the file is the one that failed).
    pub fn binding_error(&self, addr: SocketAddr, message: &str) -> Option<ConfigError> {
        if self.listen_overridden {
            return None;
        }
        self.bindings.iter().find_map(|sb| {
            let j = sb.bindings.iter().position(|b| b.addr == addr)?;
            Some(self.error_at(&format!("sites[{}].bindings[{j}]", sb.site), message))
        })
    }

    /// An error about a key, placed on the key's line (or the nearest
    /// enclosing key that has one), in the file that holds it: a site of
    /// an included file is named as that file numbers it.
    pub fn error_at(&self, key: &str, message: &str) -> ConfigError {
        if let Some((included, local)) = self.included_key(key) {
            return ConfigError {
                file: included.file.clone(),
                line: line_in(&included.key_lines, &local),
                key: Some(local),
                message: message.to_owned(),
            };
        }
        ConfigError {
            file: self.file.clone(),
            line: self.line_of_key(key),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.to_owned(),
        }
    }

    /// The included file that holds `sites[n]…`, and the key as that file
    /// numbers its sites.
    fn included_key(&self, key: &str) -> Option<(&IncludedFile, String)> {
        let (n, tail) = key.strip_prefix("sites[")?.split_once(']')?;
        let n: usize = n.parse().ok()?;
        let included = self
            .included
            .iter()
            .find(|f| (f.first..f.first + f.count).contains(&n))?;
        Some((included, format!("sites[{}]{tail}", n - included.first)))
    }

    /// A pipeline build error, placed in the file.
    pub fn build_error(&self, e: &BuildError) -> ConfigError {
        if is_misplaced_include(&e.key) {
            return self.error_at(&e.key, MISPLACED_INCLUDE);
        }
        // serde reports an unknown field on the table that holds it; point at
        // the field itself when the message names it.
        let mut key = e.key.clone();
        // A key in no file (the default handlers riis adds without
        // `[[handlers]]`) gives way to the entry of the module the error is
        // about, which the file has.
        if self.line_of_key(&key).is_none() {
            if let Some(i) = e
                .module
                .as_deref()
                .and_then(|name| self.modules.iter().position(|m| m.name == name))
            {
                key = format!("modules[{i}]");
            }
        }
        if let Some(field) = unknown_field(&e.message) {
            let already = key == field || key.ends_with(&format!(".{field}"));
            if !already {
                key = if key.is_empty() {
                    field.to_owned()
                } else {
                    format!("{key}.{field}")
                };
            }
        }
        self.error_at(&key, &e.message)
    }

    pub(crate) fn line_of_key(&self, key: &str) -> Option<usize> {
        line_in(&self.key_lines, key)
    }
}

/// The line of `key` in a file's key index, or of the nearest enclosing key
/// that has one.
fn line_in(key_lines: &BTreeMap<String, usize>, key: &str) -> Option<usize> {
    let mut k = key;
    loop {
        if let Some(line) = key_lines.get(k) {
            return Some(*line);
        }
        let cut = k.rfind(['.', '['])?;
        k = &k[..cut];
    }
}

/// `include` written after a table belongs to that table (TOML's rule):
/// a section of a site, or an unknown field of `[server]`.
fn is_misplaced_include(key: &str) -> bool {
    key.ends_with(".include")
}

const MISPLACED_INCLUDE: &str =
    "`include` is a top-level key: write it before the first table (`[server]`, `[[sites]]`, …)";

/// Reads the files `raw.include` names (relative to `base`; `*` in a file
/// name matches any run of characters, as nginx's `include` does, in name
/// order) and appends their sites to `raw.sites`. Their relative paths are
/// taken from `base`, as the main file's are.
fn include_sites(
    raw: &mut RawConfig,
    file: &Path,
    base: &Path,
    key_lines: &BTreeMap<String, usize>,
) -> Result<Vec<IncludedFile>, ConfigError> {
    let mut included = Vec::new();
    // Files compared as the file system names them: `./a.toml` and
    // `a.toml` are one file, as is the main file under another spelling.
    let identity = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let main = identity(file);
    let mut seen = Vec::new();
    for (n, pattern) in std::mem::take(&mut raw.include).iter().enumerate() {
        let error = |message: String| ConfigError {
            file: file.to_owned(),
            line: line_in(key_lines, &format!("include[{n}]")),
            key: Some(format!("include[{n}]")),
            message,
        };
        for path in expand_include(base, pattern).map_err(error)? {
            let real = identity(&path);
            if real == main {
                return Err(error(format!(
                    "`{}` is this configuration file itself",
                    path.display()
                )));
            }
            if seen.contains(&real) {
                return Err(error(format!("`{}` is included twice", path.display())));
            }
            seen.push(real);
            let text = read_text(&path)?;
            let (doc, lines): (RawIncluded, _) = parse_document(&text, &path)?;
            included.push(IncludedFile {
                file: path,
                first: raw.sites.len(),
                count: doc.sites.len(),
                key_lines: lines,
            });
            raw.sites.extend(doc.sites);
        }
    }
    Ok(included)
}

/// The files an `include` pattern names: one file, or with `*` in its file
/// name the files of that folder whose names match, in name order (names
/// starting with `.` only when the pattern does).
fn expand_include(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = base.join(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("`{pattern}` names no file"))?
        .to_owned();
    // (`riis.toml` as `--config`: its folder is the current one.)
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    if folder.to_string_lossy().contains('*') {
        return Err(format!(
            "`{pattern}`: `*` matches file names only, not folders"
        ));
    }
    if !name.contains('*') {
        // A file named alone must be there.
        return match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(vec![path]),
            Ok(_) => Err(format!("`{}` is not a regular file", path.display())),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        };
    }
    let entries = std::fs::read_dir(folder)
        .map_err(|e| format!("cannot read the folder `{}`: {e}", folder.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", folder.display()))?;
        // By bytes: a name that is not UTF-8 is matched too, not skipped.
        let candidate = entry.file_name();
        let candidate = candidate.as_encoded_bytes();
        let hidden = candidate.first() == Some(&b'.') && !name.starts_with('.');
        // Followed through links, as the file is read.
        if !hidden && wildcard_matches(name.as_bytes(), candidate) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `name` matches `pattern`, where each `*` stands for any run of
/// bytes.
fn wildcard_matches(pattern: &[u8], name: &[u8]) -> bool {
    let mut parts = pattern.split(|&b| b == b'*');
    let first = parts.next().unwrap_or(b"");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&[u8]> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest
            .windows(part.len().max(1))
            .position(|w| part.is_empty() || w == *part)
        {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The field an "unknown field `x`" message names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
}

/// `key` up to its last component named `field` (`limits.bogus[2]` with
/// `bogus` is `limits.bogus`); `key` as it is if no component is.
fn cut_after_field(key: &str, field: &str) -> String {
    let ends = key.match_indices(field).filter_map(|(at, _)| {
        let end = at + field.len();
        let starts_component = at == 0 || key[..at].ends_with('.');
        let ends_component = matches!(key.as_bytes().get(end), None | Some(b'.' | b'['));
        (starts_component && ends_component).then_some(end)
    });
    match ends.last() {
        Some(end) => key[..end].to_owned(),
        None => key.to_owned(),
    }
}

/// Where a document's lines start, so the line of an offset is a binary
/// search: a large file (thousands of sites) has a key every few bytes, and
/// counting newlines from the start for each key made loading quadratic.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Self(memchr::memchr_iter(b'\n', text.as_bytes()).collect())
    }

    /// The 1-based line that holds byte `offset`.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|newline| *newline < offset) + 1
    }
}

/// Every key path of a document: the line it is written on, and where
/// its value lies in the text.
type KeyIndex = (
    BTreeMap<String, usize>,
    Vec<(String, std::ops::Range<usize>)>,
    // The first integer too large for TOML's 64 bits: its key and line.
    Option<(String, usize)>,
);

/// Indexes every key path of the document (see [`KeyIndex`]).
fn index_keys(text: &str, lines: &Lines) -> Result<KeyIndex, toml::de::Error> {
    use toml::de::{DeTable, DeValue};
    /// A TOML integer is a signed 64-bit one: a number out of that range would only
    /// be found out while the whole section it is in is read, and be
    /// blamed on that section's first line.
    fn check_integer(
        lines: &Lines,
        key: &str,
        value: &toml::Spanned<DeValue<'_>>,
        out: &mut KeyIndex,
    ) {
        if let DeValue::Integer(n) = value.get_ref() {
            if out.2.is_none() && i64::from_str_radix(n.as_str(), n.radix()).is_err() {
                out.2 = Some((key.to_owned(), lines.of(value.span().start)));
            }
        }
    }
    fn walk(lines: &Lines, prefix: &str, value: &DeValue<'_>, out: &mut KeyIndex) {
        match value {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let key = if prefix.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{prefix}.{}", k.get_ref())
                    };
                    out.0
                        .entry(key.clone())
                        .or_insert_with(|| lines.of(k.span().start));
                    out.1.push((key.clone(), v.span()));
                    check_integer(lines, &key, v, out);
                    walk(lines, &key, v.get_ref(), out);
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let key = format!("{prefix}[{i}]");
                    out.0
                        .entry(key.clone())
                        .or_insert_with(|| lines.of(v.span().start));
                    out.1.push((key.clone(), v.span()));
                    check_integer(lines, &key, v, out);
                    walk(lines, &key, v.get_ref(), out);
                }
            }
            _ => {}
        }
    }
    let root = DeTable::parse(text)?;
    let mut out = (BTreeMap::new(), Vec::new(), None);
    walk(lines, "", &DeValue::Table(root.into_inner()), &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_server_settings_are_named() {
        let running = ServerSettings::default();
        let mut edited = running.clone();
        edited.shutdown_timeout = 5;
        edited.pid_file = PathBuf::from("run/riis.pid");
        assert_eq!(
            edited.changed_keys(&running),
            ["shutdown_timeout", "pid_file"]
        );
        assert!(running.changed_keys(&running).is_empty());
    }

    #[test]
    fn bindings_parse_like_iis() {
        let b = Binding::parse("*:8080:Example.com").unwrap();
        assert_eq!(b.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(b.host.as_deref(), Some("example.com"));
        let b = Binding::parse("[::1]:80").unwrap();
        assert_eq!(b.addr, "[::1]:80".parse().unwrap());
        assert!(Binding::parse("127.0.0.1").is_err());
        assert!(Binding::parse("127.0.0.1:http").is_err());
        assert!(Binding::parse("127.0.0.1:+8080").is_err());
        assert!(Binding::parse("127.0.0.1:08080").is_err());
        assert!(Binding::parse("127.0.0.1:65536").is_err());
        assert!(Binding::parse("127.0.0.1:0").is_ok());
        // Schemes in any case; an IPv6 address needs its brackets.
        assert!(Binding::parse("HTTPS://127.0.0.1:443").unwrap().tls);
        assert!(!Binding::parse("Http://127.0.0.1:80").unwrap().tls);
        for bare in ["::1:8080", "::1", "2001:db8::5:443"] {
            let err = Binding::parse(bare).unwrap_err();
            assert!(err.contains("goes in brackets"), "{bare}: {err}");
        }
        // Host names as requests carry them: lower case, no trailing dot.
        let b = Binding::parse("*:80:Example.COM.").unwrap();
        assert_eq!(b.host.as_deref(), Some("example.com"));
        // IIS 10's wildcard host: `*` as the whole left-most label.
        let b = Binding::parse("*:80:*.Example.com").unwrap();
        assert_eq!(b.host.as_deref(), Some("*.example.com"));
        for never_matches in [
            "*:443:example.com:443",
            "*:80:a..b",
            "*:80:.",
            "*:80:*",
            "*:80:*.",
            "*:80:*example.com",
            "*:80:www.*.example.com",
            "*:80:*.*.example.com",
            "*:80:**.example.com",
            "*:80:*.x..",
            "*:80:example.com..",
        ] {
            assert!(Binding::parse(never_matches).is_err(), "{never_matches}");
        }
    }

    #[test]
    fn an_address_on_a_wildcards_port_shares_its_socket_and_protocol() {
        let dir = std::env::temp_dir();
        let text = "[[sites]]\nname = \"any\"\nroot = \".\"\nbindings = [\"*:8080\", \"[::]:8080\"]\n\
            [[sites]]\nname = \"one\"\nroot = \".\"\nbindings = [\"127.0.0.1:8080\", \"[::1]:8080\", \"127.0.0.1:9090\", \"127.0.0.1:0\"]\n";
        let config = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap();
        let shared: Vec<(String, String)> = config
            .wildcard_sharing()
            .into_iter()
            .map(|(a, w)| (a.to_string(), w.to_string()))
            .collect();
        assert_eq!(
            shared,
            [
                ("127.0.0.1:8080".to_owned(), "0.0.0.0:8080".to_owned()),
                ("[::1]:8080".to_owned(), "[::]:8080".to_owned()),
            ]
        );

        let text = "[[sites]]\nname = \"any\"\nroot = \".\"\nbindings = [\"*:8443\"]\n\
            [[sites]]\nname = \"one\"\nroot = \".\"\nbindings = [\"https://127.0.0.1:8443\"]\ncertificate = \"a.crt\"\ncertificate_key = \"a.key\"\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sites[1].bindings[0]"), "{e}");
        assert!(e.message.contains("wildcard binding 0.0.0.0:8443"), "{e}");
    }

    #[test]
    fn proxy_protocol_names_bound_addresses() {
        let dir = std::env::temp_dir();
        let site = "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"*:8080\", \"127.0.0.1:8080\", \"127.0.0.1:9090\"]\n";
        let parse = |table: &str| {
            ServerConfig::parse(&format!("{table}{site}"), Path::new("riis.toml"), &dir)
        };
        let config = parse(
            "[proxy_protocol]\nlisten = [\"*:8080\", \"127.0.0.1:8080\"]\ntrusted = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert!(config
            .proxy_protocol
            .expects_header("0.0.0.0:8080".parse().unwrap()));
        assert!(!config
            .proxy_protocol
            .expects_header("127.0.0.1:9090".parse().unwrap()));
        assert!(!parse("").unwrap().proxy_protocol.is_enabled());

        for (table, key, line, says) in [
            (
                "[proxy_protocol]\nlisten = [\"*:8080\",\n  \"127.0.0.1:7070\"]\n",
                "proxy_protocol.listen[1]",
                3,
                "no site has a binding on 127.0.0.1:7070",
            ),
            (
                "[proxy_protocol]\nlisten = [\"*:8080:a.test\"]\n",
                "proxy_protocol.listen[0]",
                2,
                "not a host name",
            ),
            (
                "[proxy_protocol]\nlisten = [\"*:8080\"]\n",
                "proxy_protocol.listen[0]",
                2,
                "shares the socket of 0.0.0.0:8080",
            ),
            (
                "[proxy_protocol]\nlisten = [\"127.0.0.1:9090\"]\ntrusted = [\"10.0.0.0/33\"]\n",
                "proxy_protocol.trusted[0]",
                3,
                "not an IP address or network",
            ),
            (
                "[proxy_protocol]\nlisten = [\"https://127.0.0.1:9090\"]\n",
                "proxy_protocol.listen[0]",
                2,
                "the bindings on 127.0.0.1:9090 serve plain HTTP",
            ),
            (
                "[proxy_protocol]\ntrusted = [\"10.0.0.0/8\"]\n",
                "proxy_protocol.trusted",
                2,
                "`listen` names none",
            ),
            (
                "proxy_protocol = []\n",
                "proxy_protocol",
                1,
                "expected a table",
            ),
            (
                "[proxy_protocol]\nlisen = []\n",
                "proxy_protocol.lisen",
                2,
                "lisen",
            ),
        ] {
            let e = parse(table).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(says), "{e}");
        }

        // `--listen` takes the PROXY protocol along when every address
        // expected it, and refuses to merge addresses that disagree.
        let one = "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:9090\", \"127.0.0.1:9091:a.test\"]\n";
        let mut config = ServerConfig::parse(
            &format!("[proxy_protocol]\nlisten = [\"127.0.0.1:9090\", \"127.0.0.1:9091\"]\n{one}"),
            Path::new("riis.toml"),
            &dir,
        )
        .unwrap();
        config
            .override_listen("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert!(config
            .proxy_protocol
            .expects_header("127.0.0.1:0".parse().unwrap()));
        let mut config = ServerConfig::parse(
            &format!("[proxy_protocol]\nlisten = [\"127.0.0.1:9090\"]\n{one}"),
            Path::new("riis.toml"),
            &dir,
        )
        .unwrap();
        let e = config
            .override_listen("127.0.0.1:0".parse().unwrap())
            .unwrap_err();
        assert!(
            e.message.contains("some listening addresses but not all"),
            "{e}"
        );
    }

    #[test]
    fn listen_leaves_one_binding_per_host() {
        let dir = std::env::temp_dir();
        let text = "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = \
            [\"127.0.0.1:8001:x.test\", \"127.0.0.1:8002\", \"127.0.0.1:8003:x.test\"]\n";
        let mut config = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap();
        config
            .override_listen("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let hosts: Vec<Option<&str>> = config.bindings[0]
            .bindings
            .iter()
            .map(|b| b.host.as_deref())
            .collect();
        assert_eq!(hosts, [Some("x.test"), None]);
    }

    #[test]
    fn an_unknown_field_with_an_array_or_table_value_is_named_itself() {
        let dir = std::env::temp_dir();
        for (text, key) in [
            ("[limits]\nbogus = [1, 2, 3]\n", "limits.bogus"),
            ("[timeouts]\nextra = { a = 1 }\n", "timeouts.extra"),
            ("[[handlers]]\nverb = [\"GET\"]\n", "handlers[0].verb"),
            ("[limits]\nbogus = \"abc\"\n", "limits.bogus"),
        ] {
            let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(2), "{e}");
        }
        assert_eq!(
            cut_after_field("a.bogusx.bogus[1].c", "bogus"),
            "a.bogusx.bogus"
        );
        assert_eq!(cut_after_field("a.b", "bogus"), "a.b");
    }

    #[test]
    fn lines_of_offsets() {
        let lines = Lines::new("a\nbc\n\nd");
        let found: Vec<usize> = (0..8).map(|offset| lines.of(offset)).collect();
        assert_eq!(found, [1, 1, 2, 2, 2, 3, 4, 4]);
    }

    /// A folder of its own under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("riis-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sites.d")).unwrap();
        dir
    }

    #[test]
    fn included_files_add_their_sites_and_errors_name_them() {
        let dir = scratch("include");
        std::fs::write(
            dir.join("sites.d/10-shop.toml"),
            "[[sites]]\nname = \"shop\"\nroot = \".\"\nbindings = [\"127.0.0.1:0:shop.test\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sites.d/20-blog.toml"),
            "# the blog\n[[sites]]\nname = \"blog\"\nroot = \".\"\nbindings = [\"127.0.0.1:0:blog.test\"]\n",
        )
        .unwrap();
        // Not matched: another extension, and an editor's hidden copy.
        std::fs::write(dir.join("sites.d/notes.txt"), "not toml").unwrap();
        std::fs::write(dir.join("sites.d/.30-old.toml"), "not = [toml").unwrap();
        let main = dir.join("riis.toml");
        let text = "include = [\"sites.d/*.toml\"]\n[[sites]]\nname = \"main\"\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n";
        let config = ServerConfig::parse(text, &main, &dir).unwrap();
        let names: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["main", "shop", "blog"]);

        // An error in an included file names that file, its line and its
        // own key.
        std::fs::write(
            dir.join("sites.d/20-blog.toml"),
            "# the blog\n[[sites]]\nname = \"blog\"\nroot = \".\"\nbindings = [\"nope\"]\n",
        )
        .unwrap();
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.file, dir.join("sites.d/20-blog.toml"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("sites[0].bindings[0]"), "{e}");
        // So does one the pipeline finds later (a duplicate site name).
        std::fs::write(
            dir.join("sites.d/20-blog.toml"),
            "[[sites]]\nname = \"shop\"\nroot = \".\"\nbindings = [\"127.0.0.1:0:x.test\"]\n",
        )
        .unwrap();
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.file, dir.join("sites.d/20-blog.toml"), "{e}");
        assert_eq!(e.key.as_deref(), Some("sites[0].name"), "{e}");
        // Anything but sites, in an included file.
        std::fs::write(
            dir.join("sites.d/20-blog.toml"),
            "[server]\nworker_threads = 2\n",
        )
        .unwrap();
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.file, dir.join("sites.d/20-blog.toml"), "{e}");
        assert!(e.message.contains("unknown field `server`"), "{e}");
        // A file that is not there, named alone.
        let text = "include = [\"sites.d/*.toml\", \"extra.toml\"]\n";
        std::fs::remove_file(dir.join("sites.d/20-blog.toml")).unwrap();
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("include[1]"), "{e}");
        assert!(e.message.contains("extra.toml"), "{e}");
        // The main file itself, however it is spelled; a file twice.
        std::fs::write(&main, "").unwrap();
        let text = "include = [\"./riis.toml\"]\n";
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert!(e.message.contains("this configuration file itself"), "{e}");
        let text = "include = [\"sites.d/*.toml\", \"./sites.d/10-shop.toml\"]\n";
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("include[1]"), "{e}");
        assert!(e.message.contains("included twice"), "{e}");
        // `*` in a folder; `include` written under a table.
        let text = "include = [\"*/site.toml\"]\n";
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert!(e.message.contains("file names only"), "{e}");
        let text = "[server]\ninclude = [\"sites.d/*.toml\"]\n";
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert!(e.message.contains("before the first table"), "{e}");
        // A folder that is not there.
        let text = "include = [\"conf.d/*.toml\"]\n";
        let e = ServerConfig::parse(text, &main, &dir).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("include[0]"), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        let matches = |p: &str, n: &str| wildcard_matches(p.as_bytes(), n.as_bytes());
        assert!(matches("*.toml", "a.toml"));
        assert!(matches("*.toml", ".toml"));
        assert!(!matches("*.toml", "a.toml.bak"));
        assert!(matches("site-*-on.toml", "site-shop-on.toml"));
        assert!(!matches("site-*-on.toml", "site-shop-off.toml"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*bc*c", "abc"));
        assert!(matches("*", "anything"));
        assert!(matches("**.toml", "x.toml"));
        assert!(wildcard_matches(b"*.toml", b"caf\xe9.toml"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = std::env::temp_dir();
        let text =
            "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\", \"nope\"]\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("sites[0].bindings[1]"));
        assert!(
            e.to_string()
                .starts_with("riis.toml:4: key `sites[0].bindings[1]`"),
            "{e}"
        );

        // A control character quoted back is escaped, not sent to the
        // terminal.
        let text =
            "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:80:a\\u001b[2Jb\"]\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e:?}");
        assert!(e.to_string().contains("\\u{1b}[2J"), "{e}");
        // In a key too.
        let text = "[server]\n\"x\\u001b[31mRED\" = 1\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e:?}");

        let text = "[server]\nworker_threads = \"many\"\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("server.worker_threads"), "{e}");

        // A field missing in the first of an array of tables names that
        // table, as it does for the others.
        let text = "[[sites]]\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n\
                    [[sites]]\nroot = \".\"\nbindings = [\"127.0.0.1:0:b\"]\n";
        let e = ServerConfig::parse(text, Path::new("riis.toml"), &dir).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert_eq!(e.key.as_deref(), Some("sites[0]"), "{e}");
        assert!(e.message.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn protocol_limits_are_checked_where_they_are_written() {
        let dir = std::env::temp_dir();
        let site = "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n";
        for (limit, key) in [
            (
                "http2_initial_stream_window_size = 1024",
                "limits.http2_initial_stream_window_size",
            ),
            (
                "http2_initial_connection_window_size = 2147483648",
                "limits.http2_initial_connection_window_size",
            ),
            (
                "http2_max_concurrent_streams = 0",
                "limits.http2_max_concurrent_streams",
            ),
            ("max_url_length = 0", "limits.max_url_length"),
            ("max_header_count = 0", "limits.max_header_count"),
            ("max_header_bytes = 0", "limits.max_header_bytes"),
        ] {
            let text = format!("[limits]\n{limit}\n{site}");
            let e = ServerConfig::parse(&text, Path::new("riis.toml"), &dir).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(2), "{e}");
        }
        let text = format!("[limits]\nhttp2_initial_stream_window_size = 65535\n{site}");
        let config = ServerConfig::parse(&text, Path::new("riis.toml"), &dir).unwrap();
        assert_eq!(config.limits.http2_initial_stream_window_size, 65_535);
    }

    #[test]
    fn values_the_server_cannot_run_with_are_errors() {
        let dir = std::env::temp_dir();
        let site = "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n";
        for (text, key, line) in [
            (
                "[server]\nworker_threads = 9223372036854775807\n".to_owned() + site,
                "server.worker_threads",
                2,
            ),
            (
                "[timeouts]\nbody_read = 9223372036854775807\n".to_owned() + site,
                "timeouts.body_read",
                2,
            ),
            (
                "[server]\nhealth_check_interval = 9223372036854775807\n".to_owned() + site,
                "server.health_check_interval",
                2,
            ),
            (
                "[limits]\nmax_header_bytes = 18446744073709551615\n".to_owned() + site,
                "limits.max_header_bytes",
                2,
            ),
            (format!("{site}id = 0\n"), "sites[0].id", 5),
            // Refused by the file's own check, so a reload refuses it too
            // (it keeps the running `[server]` and builds without it).
            (
                "[server]\nserver_header = \"bad\\u0001\"\n".to_owned() + site,
                "server.server_header",
                2,
            ),
            (
                format!("{site}[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:81\"]\n"),
                "sites[1].name",
                6,
            ),
            (
                "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n"
                    .to_owned(),
                "sites[0].bindings[1]",
                4,
            ),
            (
                format!("{site}certificate = \"a.crt\"\ncertificate_key = \"a.key\"\n"),
                "sites[0].certificate",
                5,
            ),
            (
                "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"[::1]8080\"]\n".to_owned(),
                "sites[0].bindings[0]",
                4,
            ),
        ] {
            let e = ServerConfig::parse(&text, Path::new("riis.toml"), &dir).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert_eq!(e.line, Some(line), "{text}: {e}");
        }
        // The ceilings themselves are fine.
        let text = format!(
            "[server]\nworker_threads = {MAX_WORKER_THREADS}\n[timeouts]\nexecution = {MAX_SECONDS}\n{site}"
        );
        ServerConfig::parse(&text, Path::new("riis.toml"), &dir).unwrap();
    }

    #[test]
    fn an_error_inside_an_inline_table_names_its_own_key() {
        let dir = std::env::temp_dir();
        let site =
            "[[sites]]\nname = \"a\"\nroot = \".\"\nbindings = [\"https://127.0.0.1:443\"]\n\
                    certificate = \"a.crt\"\ncertificate_key = \"a.key\"\n";
        for (hsts, key) in [
            (
                "hsts = { max_age = \"x\", include_subdomains = true }",
                "sites[0].hsts.max_age",
            ),
            (
                "hsts = { max_age = 5, include_subdomains = true, preload = \"yes\" }",
                "sites[0].hsts.preload",
            ),
            (
                "hsts = { max_age = 86400, include_subdomains = true, preload = true }",
                "sites[0].hsts.preload",
            ),
            (
                "hsts = { max_age = 63072000, preload = true }",
                "sites[0].hsts.preload",
            ),
        ] {
            let text = format!("{site}{hsts}\n");
            let e = ServerConfig::parse(&text, Path::new("riis.toml"), &dir).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(7), "{e}");
        }
    }
}
