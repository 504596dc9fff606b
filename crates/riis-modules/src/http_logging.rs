//! `HttpLogging`: one line per request in the W3C extended log format, as
//! IIS's HTTP logging module writes it: a file per site and per day (or
//! hour, or month), the fields IIS logs by default, times in UTC.
//!
//! Registers for one notification:
//!
//! - **SendResponse**, at First priority, which SendResponse's inverted
//!   order makes late: after CustomError, the compression modules and
//!   every module of lower priority, so the line has the status and entity
//!   length the client gets. On the send that carries the headers it notes
//!   their length; on the final send (the client's request only: a child
//!   request's lines would be the parent's twice) it makes the line.
//!   Among the First modules (ProtocolSupport, EventTrace) the one listed
//!   first runs last: list `HttpLogging` before them for `sc-bytes` to
//!   count the headers they add.
//!
//! The final send is where IIS hands its log data over too: it follows
//! EndRequest, so a status a module sets there is the one logged. The line
//! is finished and written once the connection is done with the response
//! ([`HttpContext::on_response_delivered`]), as HTTP.sys logs once it has
//! sent it: `date`, `time` and `time-taken` are the delivery's end,
//! `sc-bytes` counts what went, and a client that left early gets
//! `sc-win32-status` 64.
//!
//! Lines are formatted on the request's thread outside any lock and
//! gathered in memory per log folder; one thread for the process
//! (`riis-log`) writes them once a second, or when a folder has 64 KiB
//! waiting, so no request waits for the disk. A folder has one sink for
//! the process, whichever configuration writes to it, so a reload's old
//! and new lines stay in order. Past 8 MiB waiting (the disk does not keep
//! up, or writes fail) new lines are dropped and counted in an error; a
//! failed write keeps what it did not write, whole lines, for the next
//! second. What is gathered is written at reload (once the replaced
//! configuration's last request ended) and at shutdown; a server that is
//! killed loses up to a second of lines.
//!
//! Each write opens the file by name (`O_APPEND`), so a log rotator that
//! renames the file needs no signal: the next second's lines go to a new
//! file. A file gets the W3C header block (`#Software`, `#Version`,
//! `#Date`, `#Fields`) when it is empty, when this server first writes to
//! it, and when the fields change.
//!
//! Configuration section `http_logging` (IIS's `httpLogging` and a site's
//! `logFile`), per location:
//! - `enabled` (default true; IIS's `dontLog` the other way round);
//! - `directory` (default `logs`, relative to the configuration file's
//!   folder): the site's files go in `W3SVC<site id>` under it (created
//!   0750; files 0640);
//! - `period`: `"daily"` (default, `u_exYYMMDD.log`), `"hourly"`
//!   (`u_exYYMMDDHH.log`), `"weekly"` (`u_exYYMMWW.log`, the week of the
//!   month) or `"monthly"` (`u_exYYMM.log`), by UTC, or by local time
//!   with `local_time_rollover` (IIS's `localTimeRollover`); or
//!   `"size"` (IIS's `MaxSize`): `u_extend1.log`, `u_extend2.log`, …, a
//!   new one once the next batch of lines would take the file past
//!   `max_size` (bytes, default 20,971,520, IIS's `truncateSize`; only with
//!   `"size"`);
//! - `fields`: the W3C fields of a line, in order. The default is IIS's:
//!   `date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username
//!   c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus
//!   sc-win32-status time-taken`. Also known: `s-sitename`,
//!   `s-computername`, `cs-version`, `cs-host`, `sc-bytes`, `cs-bytes`,
//!   any request header as `cs(Name)` or response header as `sc(Name)`,
//!   and any server variable as `var(NAME)`.
//!
//! Values follow IIS's conventions: an empty value is `-`, a space is `+`;
//! control characters, Unicode spaces and separators, invisible
//! characters (and the bytes of a value that is not UTF-8) are
//! percent-escaped, so no value can end a line or a field or forge one.
//! `cs-uri-stem` is the decoded path the client asked for (before any
//! rewrite), `time-taken` is
//! in milliseconds, `sc-win32-status` is the Win32 code of the error a
//! module set (0 when none). `sc-bytes` counts the response head as
//! HTTP/1.1 writes it (status line, headers, `Date`, and `Content-Length`
//! or `Transfer-Encoding`) and the entity, without chunk framing;
//! `cs-bytes` counts the request line and headers as received and the body
//! bytes read.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use riis_pipeline::http::header::{self, HeaderName};
use riis_pipeline::http::{Method, StatusCode, Version};
use riis_pipeline::{
    HttpContext, HttpModule, HttpModuleFactory, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section,
    SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

use crate::lock;

/// The `http_logging` configuration section.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawHttpLoggingConfig")]
pub struct HttpLoggingConfig {
    /// Whether requests under this location are logged.
    pub enabled: bool,
    /// The folder the sites' log folders go in.
    pub directory: PathBuf,
    /// How long one file collects lines.
    pub period: LogPeriod,
    /// With [`LogPeriod::Size`]: the bytes a file grows to before the next
    /// one starts.
    pub max_size: u64,
    /// IIS's `localTimeRollover`: files by time are named, and roll over,
    /// by the server's local time instead of UTC (the lines' `date` and
    /// `time` stay UTC).
    pub local_time_rollover: bool,
    /// The fields of a line.
    pub fields: LogFields,
}

/// IIS's `truncateSize` default: 20 MiB.
const DEFAULT_MAX_SIZE: u64 = 20 * 1024 * 1024;

/// The smallest `max_size`.
const MIN_MAX_SIZE: u64 = 1024 * 1024;

/// The section as written: `max_size` only with `period = "size"`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttpLoggingConfig {
    enabled: bool,
    #[serde(deserialize_with = "log_directory")]
    directory: PathBuf,
    period: LogPeriod,
    max_size: Option<u64>,
    local_time_rollover: bool,
    fields: LogFields,
}

impl Default for RawHttpLoggingConfig {
    fn default() -> Self {
        let d = HttpLoggingConfig::default();
        Self {
            enabled: d.enabled,
            directory: d.directory,
            period: d.period,
            max_size: None,
            local_time_rollover: d.local_time_rollover,
            fields: d.fields,
        }
    }
}

impl TryFrom<RawHttpLoggingConfig> for HttpLoggingConfig {
    type Error = String;

    fn try_from(raw: RawHttpLoggingConfig) -> Result<Self, String> {
        // The default `logs` has had no deserializer look at it.
        if let Some(why) = log_directory_problem(&raw.directory) {
            return Err(format!("directory: {why}"));
        }
        let max_size = match (raw.period, raw.max_size) {
            // IIS's `truncateSize` starts at 1 MiB: below it a busy site
            // would make a file every few requests.
            (LogPeriod::Size, Some(size)) if size < MIN_MAX_SIZE => {
                return Err(format!(
                    "max_size is at least {MIN_MAX_SIZE} bytes (1 MiB, as IIS's truncateSize)"
                ))
            }
            (LogPeriod::Size, size) => size.unwrap_or(DEFAULT_MAX_SIZE),
            (_, Some(_)) => {
                return Err(
                    "max_size applies only with period = \"size\" (files by time roll over by the clock)"
                        .into(),
                )
            }
            (_, None) => DEFAULT_MAX_SIZE,
        };
        if raw.local_time_rollover && raw.period == LogPeriod::Size {
            return Err(
                "local_time_rollover applies only to files by time (hourly, daily, weekly, monthly)"
                    .into(),
            );
        }
        Ok(Self {
            enabled: raw.enabled,
            directory: raw.directory,
            period: raw.period,
            max_size,
            local_time_rollover: raw.local_time_rollover,
            fields: raw.fields,
        })
    }
}

/// `directory`: a folder this process can write in, or a path where one
/// can be made; something else already there (a file), or a folder it
/// cannot write in, is a configuration error, not a log lost at the first
/// request (checked as the user that checks the configuration, as the pid
/// file's folder is).
fn log_directory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    match log_directory_problem(&path) {
        Some(why) => Err(serde::de::Error::custom(why)),
        None => Ok(path),
    }
}

/// Why `directory` (as configured: relative to the configuration's folder)
/// cannot take the sites' lines, if it cannot. Checked for the default
/// `logs` too, which no deserializer sees.
fn log_directory_problem(path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return Some(
            "an empty path would put the logs in the configuration's own folder: name a folder (\"logs\", \".\")".into(),
        );
    }
    let full = riis_pipeline::configuration_folder().join(path);
    // The folder, or the nearest path above it that exists (where it would
    // be made).
    let existing = full.ancestors().find(|p| p.exists())?;
    if !existing.is_dir() {
        return Some(format!("{} is not a folder", existing.display()));
    }
    let writable = nix::unistd::access(
        existing,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok();
    if !writable {
        let why = if existing == full {
            format!("{} cannot be written to by this user", full.display())
        } else {
            format!(
                "{} cannot be made: {} cannot be written to by this user",
                full.display(),
                existing.display()
            )
        };
        return Some(format!(
            "{why} (access log lines would be lost from the first request)"
        ));
    }
    // The sites' own folders (`W3SVC1`, ...) made earlier, by another user
    // (a first run as root) or as something else: each must take lines too.
    if existing == full {
        for entry in std::fs::read_dir(&full).ok()?.flatten() {
            let name = entry.file_name();
            let is_site_folder = name
                .to_str()
                .and_then(|n| n.strip_prefix("W3SVC"))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
            if !is_site_folder {
                continue;
            }
            let site_folder = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                // Lines go into the site's folder only, never through a
                // link: in a log folder others may write in, one put there
                // would send them (as root) anywhere.
                return Some(format!(
                    "{} is a symbolic link: a site's log folder must be a folder (access log \
                     lines would be lost from the first request)",
                    site_folder.display()
                ));
            }
            let usable = site_folder.is_dir()
                && nix::unistd::access(
                    &site_folder,
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .is_ok();
            if !usable {
                return Some(format!(
                    "{} is not a folder this user can write in (made by another user?): \
                     give it to this user or remove it (access log lines would be lost \
                     from the first request)",
                    site_folder.display()
                ));
            }
        }
    }
    None
}

/// `folder` as one path however it was written (`x/../logs`, absolute or
/// relative, through a link): the part that exists resolved, the rest (made
/// later) with its `.` and `..` taken as written. Two spellings of one
/// folder must share one sink, or two writers would mix their lines.
fn folder_identity(folder: &Path) -> PathBuf {
    // A name that exists only once a `..` before it is taken (`x/../link`
    // with no `x`) is resolved on the next round.
    // Absolute first: a relative folder none of whose parts exists yet (a
    // first run's `logs` beside `riis.toml` named as `riis.toml`) would
    // otherwise stay relative, and become another folder's identity once
    // made (review K: two writers in one folder).
    let mut current = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    for _ in 0..8 {
        let next = resolve_existing_part(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// One round of [`folder_identity`].
fn resolve_existing_part(folder: &Path) -> PathBuf {
    for existing in folder.ancestors() {
        let Ok(mut real) = std::fs::canonicalize(existing) else {
            continue;
        };
        let rest = folder.strip_prefix(existing).unwrap_or(Path::new(""));
        for part in rest.components() {
            match part {
                std::path::Component::ParentDir => {
                    real.pop();
                }
                std::path::Component::Normal(name) => real.push(name),
                _ => {}
            }
        }
        return real;
    }
    folder.to_path_buf()
}

impl Default for HttpLoggingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: PathBuf::from("logs"),
            period: LogPeriod::Daily,
            max_size: DEFAULT_MAX_SIZE,
            local_time_rollover: false,
            fields: LogFields::default(),
        }
    }
}

/// How long one log file collects lines (IIS's `period`), by UTC (or local time), or
/// how large it grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogPeriod {
    /// `u_exYYMMDDHH.log`.
    Hourly,
    /// `u_exYYMMDD.log`.
    Daily,
    /// `u_exYYMMWW.log`, `WW` the week of the month: weeks start on Sunday,
    /// and the month's first days, up to its first Saturday, are week 01
    /// (so a month has up to six). Inferred: IIS names the week of the
    /// month without saying where weeks start; calendar weeks make a new
    /// file each Sunday and on the first of each month.
    Weekly,
    /// `u_exYYMM.log`.
    Monthly,
    /// IIS's `MaxSize`: `u_extend1.log`, `u_extend2.log`, …, each up to
    /// `max_size` bytes.
    Size,
}

/// One W3C field of a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogField {
    /// `date`: the UTC date of the line, `YYYY-MM-DD`.
    Date,
    /// `time`: the UTC time of the line, `HH:MM:SS`.
    Time,
    /// `s-sitename`: `W3SVC<site id>`.
    SiteName,
    /// `s-computername`: the host's name.
    ComputerName,
    /// `s-ip`: the address the request came in on.
    ServerIp,
    /// `cs-method`.
    Method,
    /// `cs-uri-stem`: the decoded path.
    UriStem,
    /// `cs-uri-query`.
    UriQuery,
    /// `s-port`.
    ServerPort,
    /// `cs-username`: the authenticated user, `-` for anonymous requests.
    UserName,
    /// `c-ip`: the client's address.
    ClientIp,
    /// `cs-version`: `HTTP/1.1`, `HTTP/2`, ….
    Version,
    /// `cs-host`: the host the request was routed by (an absolute-form
    /// target's or HTTP/2's `:authority`, else the `Host` header).
    Host,
    /// `sc-status`.
    Status,
    /// `sc-substatus`.
    Substatus,
    /// `sc-win32-status`.
    Win32Status,
    /// `sc-bytes`.
    BytesSent,
    /// `cs-bytes`.
    BytesReceived,
    /// `time-taken`, in milliseconds.
    TimeTaken,
    /// `cs(Name)`: a request header.
    RequestHeader(HeaderName),
    /// `sc(Name)`: a response header.
    ResponseHeader(HeaderName),
    /// `var(NAME)`: a server variable (IIS's custom fields of source type
    /// `ServerVariable`), upper case.
    ServerVariable(String),
}

impl LogField {
    const NAMED: [(&'static str, LogField); 19] = [
        ("date", Self::Date),
        ("time", Self::Time),
        ("s-sitename", Self::SiteName),
        ("s-computername", Self::ComputerName),
        ("s-ip", Self::ServerIp),
        ("cs-method", Self::Method),
        ("cs-uri-stem", Self::UriStem),
        ("cs-uri-query", Self::UriQuery),
        ("s-port", Self::ServerPort),
        ("cs-username", Self::UserName),
        ("c-ip", Self::ClientIp),
        ("cs-version", Self::Version),
        ("cs-host", Self::Host),
        ("sc-status", Self::Status),
        ("sc-substatus", Self::Substatus),
        ("sc-win32-status", Self::Win32Status),
        ("sc-bytes", Self::BytesSent),
        ("cs-bytes", Self::BytesReceived),
        ("time-taken", Self::TimeTaken),
    ];

    /// The field's name in a `#Fields` directive.
    fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::RequestHeader(h) => format!("cs({})", display_header(h)).into(),
            Self::ResponseHeader(h) => format!("sc({})", display_header(h)).into(),
            Self::ServerVariable(v) => format!("var({v})").into(),
            named => Self::NAMED
                .iter()
                .find(|(_, f)| f == named)
                .map_or("-", |(n, _)| n)
                .into(),
        }
    }
}

/// `user-agent` as IIS writes it in a field name: `User-Agent`.
fn display_header(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl std::str::FromStr for LogField {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let header = |inner: &str| {
            HeaderName::try_from(inner)
                .map_err(|_| format!("`{text}`: `{inner}` is not a header name"))
        };
        if let Some(inner) = text.strip_prefix("cs(").and_then(|t| t.strip_suffix(')')) {
            return header(inner).map(Self::RequestHeader);
        }
        if let Some(inner) = text.strip_prefix("sc(").and_then(|t| t.strip_suffix(')')) {
            return header(inner).map(Self::ResponseHeader);
        }
        let variable = text
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("var("))
            .and_then(|_| text[4..].strip_suffix(')'));
        if let Some(inner) = variable {
            if inner.is_empty()
                || !inner
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(format!(
                    "`{text}`: `{inner}` is not a server variable name (letters, digits and `_`)"
                ));
            }
            return Ok(Self::ServerVariable(inner.to_ascii_uppercase()));
        }
        Self::NAMED
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(text))
            .map(|(_, f)| f.clone())
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a log field (known: {}, cs(Header), sc(Header), var(NAME))",
                    Self::NAMED.map(|(n, _)| n).join(", ")
                )
            })
    }
}

/// The fields of a line, checked when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct LogFields(pub Arc<[LogField]>);

impl TryFrom<Vec<String>> for LogFields {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<Self, String> {
        if names.is_empty() {
            return Err("a line needs at least one field".into());
        }
        let fields = names
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<LogField>, String>>()?;
        Ok(Self(fields.into()))
    }
}

impl Default for LogFields {
    /// IIS's default fields.
    fn default() -> Self {
        use LogField::*;
        Self(Arc::from([
            Date,
            Time,
            ServerIp,
            Method,
            UriStem,
            UriQuery,
            ServerPort,
            UserName,
            ClientIp,
            RequestHeader(header::USER_AGENT),
            RequestHeader(header::REFERER),
            Status,
            Substatus,
            Win32Status,
            TimeTaken,
        ]))
    }
}

/// Bytes waiting for the disk past which the writer thread is woken
/// before its second is up.
const WRITE_AT: usize = 64 * 1024;
/// Bytes waiting per log folder past which new lines are dropped (and
/// counted): the disk does not keep up, or writes fail. A request never
/// waits for the disk.
const WAIT_AT: usize = 8 * 1024 * 1024;
/// How often the writer thread writes what is waiting.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// The largest batch: a write failure keeps what is unwritten of one.
const BATCH_BYTES: usize = 64 * 1024;

/// Lines dropped since the process started (disk too slow, or failing).
static LINES_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The log folders of the process, shared by every configuration (a
/// reload's old and new configurations write one folder through one
/// sink, in order), and the thread that writes them. A sink stays here
/// after the last configuration that used it is gone for as long as it has
/// lines waiting (a full disk during a reload): they are written when the
/// disk takes them, and the next configuration that logs to the folder
/// goes on after them, knowing of a line a failed write left unfinished.
struct Registry {
    sinks: Mutex<HashMap<PathBuf, Arc<Sink>>>,
    /// Set to wake the writer thread early.
    wake: Mutex<bool>,
    wakeup: Condvar,
    writer: std::sync::Once,
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        sinks: Mutex::new(HashMap::new()),
        wake: Mutex::new(false),
        wakeup: Condvar::new(),
        writer: std::sync::Once::new(),
    })
}

impl Registry {
    /// The sink of `folder`, made if no configuration has it.
    fn sink(&'static self, folder: PathBuf, software: &'static str) -> Arc<Sink> {
        let mut sinks = lock(&self.sinks);
        if let Some(sink) = sinks.get(&folder) {
            return sink.clone();
        }
        let sink = Arc::new(Sink::new(folder.clone(), software));
        sinks.insert(folder, sink.clone());
        drop(sinks);
        self.start_writer();
        sink
    }

    /// Starts the thread that writes every folder once a second, or when
    /// one has [`WRITE_AT`] waiting.
    fn start_writer(&'static self) {
        self.writer.call_once(|| {
            let started = std::thread::Builder::new()
                .name("riis-log".into())
                .spawn(move || loop {
                    {
                        let woken = lock(&self.wake);
                        let (mut woken, _) = self
                            .wakeup
                            .wait_timeout_while(woken, WRITE_EVERY, |w| !*w)
                            .unwrap_or_else(|e| e.into_inner());
                        *woken = false;
                    }
                    let live: Vec<Arc<Sink>> = lock(&self.sinks).values().cloned().collect();
                    for sink in live {
                        // A panic loses that folder's round, not the thread:
                        // the thread is the only writer.
                        let written =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.write()));
                        if written.is_err() {
                            tracing::error!(
                                folder = %sink.folder.display(),
                                "HttpLogging: writing the log panicked"
                            );
                        }
                    }
                    // A folder no configuration uses any more goes once
                    // everything it had is written. Only the registry can
                    // hand out a sink nobody holds, under this lock.
                    lock(&self.sinks).retain(|_, s| Arc::strong_count(s) > 1 || !s.is_idle());
                });
            if let Err(e) = started {
                // Lines are then written at reload and shutdown only.
                tracing::error!("HttpLogging: cannot start the log writer thread: {e}");
            }
        });
    }

    fn wake(&self) {
        *lock(&self.wake) = true;
        self.wakeup.notify_one();
    }
}

/// A site and the address of one of its locations' sections.
type SinkKey = (u32, usize);

/// What one configuration's factory and instances share.
struct Shared {
    /// A relative `directory` is taken from here.
    folder: PathBuf,
    /// `s-computername`.
    computer: Box<str>,
    /// `#Software`.
    software: &'static str,
    /// The sinks of this configuration, by (site, section): found without
    /// building a path per request, and kept alive while it lives.
    /// A list: a configuration has a handful, and a look along it costs
    /// less than hashing the key.
    sinks: RwLock<Vec<(SinkKey, Arc<Sink>)>>,
}

impl Shared {
    /// The folder a site's lines go to under `config`.
    fn sink(&self, site_id: u32, config: &HttpLoggingConfig) -> Arc<Sink> {
        // The section's address is stable while this configuration (and so
        // this `Shared`) lives.
        let key = (site_id, config as *const HttpLoggingConfig as usize);
        if let Some((_, sink)) = self
            .sinks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
        {
            return sink.clone();
        }
        let folder = folder_identity(
            &self
                .folder
                .join(&config.directory)
                .join(format!("W3SVC{site_id}")),
        );
        let sink = registry().sink(folder, self.software);
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        if !sinks.iter().any(|(k, _)| *k == key) {
            sinks.push((key, sink.clone()));
        }
        sink
    }
}

/// [`lock`] unless another thread holds it.
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// One log folder (a site's, under one `directory`).
struct Sink {
    folder: PathBuf,
    software: &'static str,
    waiting: Mutex<Waiting>,
    /// Held while writing, so batches reach the files in order.
    file: Mutex<Written>,
}

/// Lines not yet written, in batches of one file and one field list.
#[derive(Default)]
struct Waiting {
    batches: VecDeque<Batch>,
    bytes: usize,
    /// Lines dropped since the last report.
    dropped: u64,
}

struct Batch {
    /// The file's name; for files that roll over by size, the stem until
    /// the writer numbers it.
    file: Box<str>,
    /// The size past which the file rolls over (`period = "size"`).
    max_size: Option<u64>,
    fields: Arc<[LogField]>,
    lines: Vec<u8>,
    /// The batch begins with the rest of a line a failed write left
    /// unfinished: it goes on without a header block.
    continues: bool,
    /// The second (since the epoch) its first line was made: a header
    /// block written before it says this in `#Date`, as IIS's file says
    /// when its first entry came, not when a batch reached the disk.
    started: u64,
}

/// What the writer knows of the files.
#[derive(Default)]
struct Written {
    /// The file and fields of the last batch written: the next batch needs
    /// no header block when it has the same.
    last: Option<(Box<str>, Arc<[LogField]>)>,
    /// A failed write left a line unfinished in `last`'s file.
    torn: bool,
    /// The last failure reported, so a failing disk is not reported once a
    /// second.
    failure: Option<String>,
    /// The number of the file lines that roll over by size go to, once
    /// known (the highest in the folder when the writer first looks).
    sized: Option<u64>,
}

impl Sink {
    fn new(folder: PathBuf, software: &'static str) -> Self {
        Self {
            folder,
            software,
            waiting: Mutex::new(Waiting::default()),
            file: Mutex::new(Written::default()),
        }
    }

    /// Adds one line (with its `\n`) for `file`, which rolls over past
    /// `max_size` bytes when given.
    fn append(
        &self,
        file: &str,
        max_size: Option<u64>,
        fields: &Arc<[LogField]>,
        line: &[u8],
        second: u64,
    ) {
        let mut waiting = lock(&self.waiting);
        if waiting.bytes + line.len() > WAIT_AT {
            waiting.dropped += 1;
            LINES_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let same = |b: &Batch| {
            &*b.file == file
                && b.max_size == max_size
                && b.lines.len() + line.len() <= BATCH_BYTES
                && (Arc::ptr_eq(&b.fields, fields) || *b.fields == **fields)
        };
        match waiting.batches.back_mut() {
            Some(b) if same(b) => b.lines.extend_from_slice(line),
            _ => waiting.batches.push_back(Batch {
                file: file.into(),
                max_size,
                fields: fields.clone(),
                lines: {
                    // Room for a batch: no reallocation while it fills.
                    let mut lines = Vec::with_capacity(BATCH_BYTES);
                    lines.extend_from_slice(line);
                    lines
                },
                continues: false,
                started: second,
            }),
        }
        let before = waiting.bytes;
        waiting.bytes += line.len();
        let crossed = before < WRITE_AT && waiting.bytes >= WRITE_AT;
        drop(waiting);
        if crossed {
            registry().wake();
        }
    }

    /// Nothing waits for the disk and no failed write left a line
    /// unfinished. Asked under the registry's lock, so it never waits: a
    /// sink being written (a slow disk, a reload's final write) counts as
    /// busy, and a request's first line elsewhere is not held up behind it.
    fn is_idle(&self) -> bool {
        let (Some(waiting), Some(file)) = (try_lock(&self.waiting), try_lock(&self.file)) else {
            return false;
        };
        waiting.batches.is_empty() && !file.torn
    }

    /// Writes what is waiting, in order.
    fn write(&self) {
        let mut written = lock(&self.file);
        let (batches, dropped) = {
            let mut waiting = lock(&self.waiting);
            waiting.bytes = 0;
            (
                std::mem::take(&mut waiting.batches),
                std::mem::take(&mut waiting.dropped),
            )
        };
        if dropped > 0 {
            tracing::error!(
                folder = %self.folder.display(),
                lines = dropped,
                "HttpLogging: log lines dropped: {WAIT_AT} bytes were waiting for the disk"
            );
        }
        let mut batches = batches;
        while let Some(mut batch) = batches.pop_front() {
            if let Some(max_size) = batch.max_size {
                // The lines that do not fit in the file go to the next.
                if let Some(rest) = self.number_sized(&mut written, &mut batch, max_size) {
                    batches.push_front(rest);
                }
            }
            if let Err((done, why)) = self.write_batch(&mut written, &batch) {
                if done > 0 {
                    batch.lines.drain(..done);
                    batch.continues = true;
                }
                batches.push_front(batch);
                self.keep(&mut written, batches, why);
                return;
            }
        }
        if let Some(old) = written.failure.take() {
            tracing::info!(folder = %self.folder.display(), "HttpLogging: writing again after: {old}");
        }
    }

    /// Puts batches that could not be written back in front of the waiting
    /// ones, dropping the oldest lines past [`WAIT_AT`].
    fn keep(&self, written: &mut Written, mut unwritten: VecDeque<Batch>, why: String) {
        let mut waiting = lock(&self.waiting);
        unwritten.append(&mut waiting.batches);
        let mut bytes: usize = unwritten.iter().map(|b| b.lines.len()).sum();
        let mut dropped = 0usize;
        while bytes > WAIT_AT {
            let Some(oldest) = unwritten.front_mut() else {
                break;
            };
            let excess = bytes - WAIT_AT;
            // Whole lines only: up to the end of the line holding the last
            // byte to go, or the whole batch when the excess is more.
            let cut = match oldest.lines.get(excess - 1..) {
                Some(rest) => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(oldest.lines.len(), |at| excess + at),
                None => oldest.lines.len(),
            };
            dropped += oldest.lines[..cut].iter().filter(|&&b| b == b'\n').count();
            oldest.lines.drain(..cut);
            oldest.continues = false;
            bytes -= cut;
            if oldest.lines.is_empty() {
                unwritten.pop_front();
            }
        }
        waiting.batches = unwritten;
        waiting.bytes = bytes;
        drop(waiting);
        if dropped > 0 {
            LINES_DROPPED.fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                folder = %self.folder.display(),
                lines = dropped,
                "HttpLogging: log lines dropped: {why}"
            );
        }
        if written.failure.as_deref() != Some(&why) {
            tracing::error!(folder = %self.folder.display(), "HttpLogging: {why}; retrying each second");
            written.failure = Some(why);
        }
    }

    /// Names the file of a batch that rolls over by size: the current one,
    /// or the next when not even the batch's first line fits in what is
    /// left of it below `max_size` (its header block counted). The lines
    /// past what fits are split off and returned, for the next file: a
    /// file passes `max_size` only with one line (and its header) alone.
    /// The rest of a line a failed write cut stays in the file it began
    /// in, with its batch.
    fn number_sized(
        &self,
        written: &mut Written,
        batch: &mut Batch,
        max_size: u64,
    ) -> Option<Batch> {
        let length = |number: u64| {
            std::fs::symlink_metadata(self.folder.join(sized_name(number))).map_or(0, |m| m.len())
        };
        let mut number = *written.sized.get_or_insert_with(|| self.last_sized());
        let header_len = || {
            let mut block = Vec::new();
            self.header(&mut block, &batch.fields, batch.started);
            block.len() as u64
        };
        let needs_header = |written: &Written, number: u64, current: u64| {
            current == 0
                || !written.last.as_ref().is_some_and(|(file, fields)| {
                    **file == *sized_name(number) && **fields == *batch.fields
                })
        };
        let first_line = memchr::memchr(b'\n', &batch.lines).map_or(batch.lines.len(), |i| i + 1);
        let mut current = length(number);
        let mut header = if needs_header(written, number, current) {
            header_len()
        } else {
            0
        };
        if !batch.continues && current > 0 && current + header + first_line as u64 > max_size {
            number += 1;
            current = 0;
            header = header_len();
        }
        written.sized = Some(number);
        batch.file = sized_name(number).into();
        if batch.continues {
            return None;
        }
        // Whole lines, as many as fit (one at least).
        let room = max_size.saturating_sub(current + header) as usize;
        if batch.lines.len() <= room {
            return None;
        }
        let cut = match batch.lines[..room.max(first_line)]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            Some(end) => (end + 1).max(first_line),
            None => first_line,
        };
        if cut >= batch.lines.len() {
            return None;
        }
        Some(Batch {
            file: batch.file.clone(),
            max_size: batch.max_size,
            fields: batch.fields.clone(),
            lines: batch.lines.split_off(cut),
            continues: false,
            started: batch.started,
        })
    }

    /// The highest number of a sized file in the folder (1 when none).
    fn last_sized(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.folder) else {
            return 1;
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let digits = name
                    .to_str()?
                    .strip_prefix("u_extend")?
                    .strip_suffix(".log")?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Writes one batch; on failure, how many of its bytes reached the file.
    fn write_batch(&self, written: &mut Written, batch: &Batch) -> Result<(), (usize, String)> {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.folder.join(&*batch.file);
        let open = || -> std::io::Result<std::fs::File> {
            // The site's folder is not taken through a link either (nor
            // the file, below): in a log folder others may write in, a
            // link put at `W3SVC1` would send the lines anywhere, with the
            // server's rights (review K).
            // `O_PATH`: a handle to name the file by, which needs no
            // right to read the folder (one made write-only for the server
            // takes lines as before: review O).
            let folder = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
                .open(&self.folder)?;
            let file = nix::fcntl::openat(
                &folder,
                &*batch.file,
                OFlag::O_WRONLY
                    | OFlag::O_APPEND
                    | OFlag::O_CREAT
                    | OFlag::O_CLOEXEC
                    | OFlag::O_NOFOLLOW
                    // Non-blocking: a FIFO put at the log's name must not
                    // hold the writer (and shutdown, which waits for it)
                    // until a reader comes; such a file is refused below.
                    | OFlag::O_NONBLOCK,
                nix::sys::stat::Mode::from_bits_truncate(0o640),
            )
            .map(std::fs::File::from)
            .map_err(std::io::Error::from)?;
            match file.metadata()?.is_file() {
                true => Ok(file),
                false => Err(std::io::Error::other("not a regular file")),
            }
        };
        let mut file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(&self.folder)
                    .map_err(|e| (0, format!("cannot create {}: {e}", self.folder.display())))?;
                open()
            }
            opened => opened,
        }
        .map_err(|e| (0, format!("cannot open {}: {e}", path.display())))?;
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        let same = written
            .last
            .as_ref()
            .is_some_and(|(f, fields)| *f == batch.file && **fields == *batch.fields);
        let mut head = Vec::new();
        if written.torn && !(batch.continues && same) && !empty {
            // End the line a failed write left unfinished (not in a new
            // file, which would start with an empty line).
            head.push(b'\n');
        }
        // The rest of a line a failed write cut, when the file it began in
        // is gone (a rotator renamed it to free space): it would start the
        // new file without its beginning. It is dropped, and counted.
        let mut skip = 0;
        if written.torn && batch.continues && same && empty {
            skip = memchr::memchr(b'\n', &batch.lines).map_or(batch.lines.len(), |i| i + 1);
            LINES_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                file = %path.display(),
                "HttpLogging: the rest of a line cut by a failed write is dropped: its file was replaced"
            );
        }
        if empty || !same {
            self.header(&mut head, &batch.fields, batch.started);
        }
        // The head goes whole or not at all (retried with the batch): a
        // part of it that went is cut off again. Of the lines, what went
        // is kept.
        if !head.is_empty() {
            let before = file.metadata().map(|m| m.len());
            if let Err(e) = file.write_all(&head) {
                let why = format!("cannot write {}: {e}", path.display());
                if !before.is_ok_and(|len| file.set_len(len).is_ok()) {
                    // Left as it is: the fragment is a line of its own,
                    // ended before anything else, and the header block
                    // is written whole after it.
                    written.torn = true;
                    written.last = None;
                }
                return Err((0, why));
            }
        }
        written.last = Some((batch.file.clone(), batch.fields.clone()));
        // The file's last line stays open while this batch continues it
        // and nothing of the batch has gone yet (a retry that writes
        // nothing leaves it so).
        written.torn = written.torn && batch.continues && same && skip == 0;
        let mut done = skip;
        while done < batch.lines.len() {
            match file.write(&batch.lines[done..]) {
                Ok(0) => {
                    if done > skip {
                        written.torn = batch.lines[done - 1] != b'\n';
                    }
                    return Err((done, format!("cannot write {}: no space", path.display())));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if done > skip {
                        written.torn = batch.lines[done - 1] != b'\n';
                    }
                    return Err((done, format!("cannot write {}: {e}", path.display())));
                }
            }
        }
        Ok(())
    }

    /// The W3C header block, dated `second`.
    fn header(&self, out: &mut Vec<u8>, fields: &[LogField], second: u64) {
        let date = stamp(second);
        out.extend_from_slice(b"#Software: ");
        out.extend_from_slice(self.software.as_bytes());
        out.extend_from_slice(b"\n#Version: 1.0\n#Date: ");
        out.extend_from_slice(&date);
        out.extend_from_slice(b"\n#Fields:");
        for field in fields {
            out.push(b' ');
            out.extend_from_slice(field.name().as_bytes());
        }
        out.push(b'\n');
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a UTC second since the epoch.
fn stamp(second: u64) -> [u8; 19] {
    let (year, month, day) = crate::civil_date((second / 86_400) as i64);
    let in_day = second % 86_400;
    let mut out = [0u8; 19];
    let mut w = &mut out[..];
    let _ = write!(
        w,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    out
}

/// The name of the sized file numbered `number`.
fn sized_name(number: u64) -> String {
    format!("u_extend{number}.log")
}

/// What follows `u_ex` in the names of files that roll over by size
/// (`u_extend3.log`).
const SIZED_STEM: &[u8] = b"tend";

/// The file a line written at `second` (since the epoch, on the clock the
/// files roll over by) goes to; for [`LogPeriod::Size`], the stem the
/// writer numbers.
fn file_name(period: LogPeriod, second: u64, out: &mut [u8; 20]) -> &str {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        out[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    put(b"u_ex");
    if period == LogPeriod::Size {
        // The writer numbers it (see `Sink::number_sized`).
        put(SIZED_STEM);
        return std::str::from_utf8(&out[..len]).expect("ASCII letters");
    }
    let stamp = stamp(second);
    put(&stamp[2..4]);
    put(&stamp[5..7]);
    match period {
        LogPeriod::Hourly => {
            put(&stamp[8..10]);
            put(&stamp[11..13]);
        }
        LogPeriod::Daily => put(&stamp[8..10]),
        LogPeriod::Weekly => {
            let days = (second / 86_400) as i64;
            let day_of_month = i64::from(crate::civil_date(days).2);
            // 1970-01-01 was a Thursday (4, counting Sunday as 0).
            let first_weekday = (days - (day_of_month - 1) + 4).rem_euclid(7);
            let week = (day_of_month - 1 + first_weekday) / 7 + 1;
            put(&[b'0', b'0' + week as u8]);
        }
        LogPeriod::Monthly | LogPeriod::Size => {}
    }
    put(b".log");
    std::str::from_utf8(&out[..len]).expect("ASCII digits and letters")
}

/// The second on the server's local clock (`TZ`, else `/etc/localtime`)
/// when it is `second` UTC, for files that roll over by local time.
fn local_second(second: u64) -> u64 {
    use chrono::{Offset, TimeZone};
    let Some(utc) = i64::try_from(second)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
    else {
        return second;
    };
    let offset = chrono::Local
        .offset_from_utc_datetime(&utc.naive_utc())
        .fix()
        .local_minus_utc();
    second.saturating_add_signed(i64::from(offset))
}

/// Writes a value as W3C logs carry it: `-` when empty, `+` for a space,
/// control characters (and every byte of a value that is not UTF-8 past
/// ASCII) percent-escaped.
fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        out.push(b'-');
        return;
    }
    // Most values need nothing done: printable ASCII without spaces.
    if value.iter().all(|&b| b > b' ' && b < 0x7f) {
        out.extend_from_slice(value);
        return;
    }
    let utf8 = value.is_ascii() || std::str::from_utf8(value).is_ok();
    let mut rest = value;
    while !rest.is_empty() {
        // Copy the run of plain bytes at once.
        let plain = rest
            .iter()
            .position(|&b| b <= b' ' || b >= 0x7f)
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..plain]);
        rest = &rest[plain..];
        let Some(&b) = rest.first() else { break };
        if b == b' ' {
            out.push(b'+');
            rest = &rest[1..];
        } else if b < 0x80 || !utf8 {
            put_escaped(out, b);
            rest = &rest[1..];
        } else {
            // A whole UTF-8 character: C1 controls (U+0080 to U+009F),
            // Unicode spaces and invisible characters are escaped too.
            let len = utf8_len(b).min(rest.len());
            let ch = &rest[..len];
            let hidden = std::str::from_utf8(ch)
                .ok()
                .and_then(|s| s.chars().next())
                .is_some_and(is_hidden);
            if hidden {
                ch.iter().for_each(|&c| put_escaped(out, c));
            } else {
                out.extend_from_slice(ch);
            }
            rest = &rest[len..];
        }
    }
}

/// `%XX`.
fn put_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Characters escaped in values besides ASCII controls: C1 controls,
/// Unicode spaces and line and paragraph separators (a reader may take
/// them for field or line ends), and the invisible ones that reorder or
/// hide text (bidirectional controls, zero-width characters), so a log
/// shows what was sent.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        // Unicode's Default_Ignorable_Code_Point (soft hyphen, Hangul
        // fillers, variation selectors, tags, ...), which takes in the
        // bidirectional controls but one, and that one (U+061C); and the
        // interlinear annotation marks.
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

/// The length of a response head as HTTP/1.1 writes it, for `sc-bytes`:
/// with the `Date`, framing and `Connection` headers the HTTP layer adds
/// after SendResponse.
fn head_length(ctx: &HttpContext, final_length: Option<u64>) -> u64 {
    let resp = ctx.response();
    let status = resp.status();
    let reason = resp
        .reason()
        .or(status.canonical_reason())
        .map_or(0, str::len);
    // `HTTP/1.1 200 OK\r\n` … `\r\n`
    let mut n = 9 + 3 + 1 + reason + 2 + 2;
    let (mut framed, mut connection) = (false, false);
    for (name, value) in resp.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
        framed |= name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        connection |= name == header::CONNECTION;
    }
    // `date: Fri, 04 Dec 2026 18:00:00 GMT\r\n`
    n += 37;
    // A HEAD answered with no body and no length goes without one (the
    // server does not claim a 0 it cannot know: DynamicCompression's).
    let head_without_length = *ctx.request().method() == Method::HEAD && final_length == Some(0);
    if !bodiless(status) && !framed && !head_without_length {
        n += match final_length {
            // `content-length: N\r\n`
            Some(len) => 16 + decimal_digits(len) + 2,
            // `transfer-encoding: chunked\r\n`
            None => 28,
        };
    }
    if !connection {
        let asks = |token: &str| {
            ctx.request()
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let closing = resp.need_disconnect() || asks("close");
        n += match ctx.request().http_version() {
            // `connection: close\r\n`
            Version::HTTP_11 if closing => 19,
            // `connection: keep-alive\r\n`
            Version::HTTP_10 if !closing && asks("keep-alive") => 24,
            _ => 0,
        };
    }
    n as u64
}

fn decimal_digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Statuses whose responses carry no entity.
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The module instance: one per request.
pub struct HttpLogging {
    config: Section<HttpLoggingConfig>,
    shared: Arc<Shared>,
    /// The length of the head, noted on the send that carries it (`None`
    /// until then, or when a child request's send carried it).
    head_bytes: Option<u64>,
}

thread_local! {
    /// The line being made, and the time stamp of the second it was last
    /// made in: a line is formatted outside any lock, into a buffer each
    /// worker thread keeps.
    static LINE: std::cell::RefCell<LineBuffer> = const {
        std::cell::RefCell::new(LineBuffer {
            line: Vec::new(),
            second: u64::MAX,
            stamp: [b'0'; 19],
            file: None,
        })
    };
}

/// A worker thread's line buffer, with what it last worked out of the clock.
struct LineBuffer {
    line: Vec<u8>,
    /// The UTC second `stamp` shows.
    second: u64,
    /// `YYYY-MM-DD HH:MM:SS`.
    stamp: [u8; 19],
    /// The file name for `second` under a period, by UTC or local time.
    file: Option<(LogPeriod, bool, String)>,
}

impl HttpModule for HttpLogging {
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        // A child request's instance sees its own sends only; the parent
        // writes the line, for the client's request.
        if ctx.child_depth() != 0 {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        // The head's length is worked out only for `sc-bytes`.
        let counts_bytes = config.fields.0.contains(&LogField::BytesSent);
        if provider.headers_being_sent() && counts_bytes {
            let resp = ctx.response();
            let whole = provider
                .is_final_send()
                .then(|| resp.bytes_sent() + resp.buffered_len());
            self.head_bytes = Some(head_length(ctx, whole));
        }
        if !provider.is_final_send() || !config.enabled {
            return RequestNotificationStatus::Continue;
        }
        // The head went out with a child request's send: as it is now, and
        // streamed.
        let head_bytes = match self.head_bytes {
            Some(n) => n,
            None if !counts_bytes || ctx.response().headers_suppressed() => 0,
            None => head_length(ctx, None),
        };
        // The line is made now, but for what only the delivery tells: it is
        // written once the connection is done with the response.
        let mut pending = PendingLine {
            text: Vec::with_capacity(256),
            head_bytes,
            counts_entity: !(*ctx.request().method() == Method::HEAD
                || bodiless(ctx.response().status())),
            reset: ctx.response().is_connection_reset(),
            win32: ctx.response().error().map_or(0, |e| win32(e.hresult)),
            started: ctx.start_time(),
            sink: self.shared.sink(ctx.site().site_id, config),
            fields: config.fields.0.clone(),
            period: config.period,
            local: config.local_time_rollover,
            max_size: (config.period == LogPeriod::Size).then_some(config.max_size),
        };
        write_line(&mut pending, &config.fields.0, ctx, &self.shared.computer);
        ctx.on_response_delivered(move |delivery| pending.finish(delivery));
        RequestNotificationStatus::Continue
    }
}

/// A line made at the final send, with holes for the values the delivery
/// decides: when it ended (`date`, `time`, the file), how long it took,
/// the bytes that went and whether all did (`sc-win32-status`).
struct PendingLine {
    /// The line, each hole a control byte ([`Hole`]'s value): escaping
    /// leaves no other control byte in a line.
    text: Vec<u8>,
    head_bytes: u64,
    /// The response has an entity (not HEAD, not a status without one).
    counts_entity: bool,
    /// A module reset the connection.
    reset: bool,
    /// The Win32 code of the error a module set (0 when none).
    win32: u32,
    started: std::time::Instant,
    sink: Arc<Sink>,
    fields: Arc<[LogField]>,
    period: LogPeriod,
    /// Files roll over by local time.
    local: bool,
    max_size: Option<u64>,
}

/// A value filled in at the delivery, marked in the line by its byte.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Hole {
    Date = 1,
    Time,
    Win32Status,
    BytesSent,
    TimeTaken,
}

impl Hole {
    /// The hole a line's byte marks, if any.
    fn at(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Date,
            2 => Self::Time,
            3 => Self::Win32Status,
            4 => Self::BytesSent,
            5 => Self::TimeTaken,
            _ => return None,
        })
    }
}

impl PendingLine {
    /// Fills the holes and hands the line to the folder's sink.
    fn finish(self, delivery: riis_pipeline::ResponseDelivery) {
        let taken = self.started.elapsed().as_millis();
        LINE.with_borrow_mut(|buffer| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if now != buffer.second {
                buffer.second = now;
                buffer.stamp = stamp(now);
                buffer.file = None;
            }
            let line = &mut buffer.line;
            line.clear();
            let mut from = 0;
            for (at, hole) in self
                .text
                .iter()
                .enumerate()
                .filter_map(|(at, &byte)| Some((at, Hole::at(byte)?)))
            {
                line.extend_from_slice(&self.text[from..at]);
                from = at + 1;
                match hole {
                    Hole::Date => line.extend_from_slice(&buffer.stamp[..10]),
                    Hole::Time => line.extend_from_slice(&buffer.stamp[11..]),
                    Hole::Win32Status => {
                        // A reset connection got nothing:
                        // ERROR_CONNECTION_ABORTED; a client that left
                        // before the end: ERROR_NETNAME_DELETED, as IIS
                        // logs them (what ended the delivery, rather than
                        // an error a module set on the way).
                        let code = if self.reset {
                            1236
                        } else if !delivery.whole {
                            64
                        } else {
                            self.win32
                        };
                        put_number(line, code);
                    }
                    Hole::BytesSent => {
                        let entity = if self.counts_entity {
                            delivery.body_bytes
                        } else {
                            0
                        };
                        let bytes = if self.reset && entity == 0 {
                            0
                        } else {
                            self.head_bytes.saturating_add(entity)
                        };
                        put_number(line, bytes);
                    }
                    Hole::TimeTaken => put_number(line, taken),
                }
            }
            line.extend_from_slice(&self.text[from..]);
            // A line must not start like a directive.
            if line.first() == Some(&b'#') {
                line.splice(0..1, *b"%23");
            }
            line.push(b'\n');
            let file = match &buffer.file {
                Some((period, local, name)) if *period == self.period && *local == self.local => {
                    name
                }
                _ => {
                    let rollover = if self.local {
                        local_second(buffer.second)
                    } else {
                        buffer.second
                    };
                    let mut name = [0u8; 20];
                    let name = file_name(self.period, rollover, &mut name).to_owned();
                    &buffer.file.insert((self.period, self.local, name)).2
                }
            };
            self.sink.append(
                file,
                self.max_size,
                &self.fields,
                &buffer.line,
                buffer.second,
            );
        });
    }
}

/// The server variable that makes `cs-uri-stem` and `cs-uri-query` the
/// URL a module rewrote the request to, not the one the client sent (any
/// value; URL Rewrite's `logRewrittenUrl` sets it). IIS logs the client's
/// URL unless a rule asks otherwise.
pub const LOG_REWRITTEN_URL: &str = "LOG_REWRITTEN_URL";

/// Whether a module asked for the rewritten URL in the log.
fn logs_rewritten_url(ctx: &HttpContext) -> bool {
    ctx.server_variable(LOG_REWRITTEN_URL).is_some()
}

/// Writes the fields of `ctx`'s request, separated by spaces, into
/// `line`'s text, leaving its holes for the delivery.
fn write_line(line: &mut PendingLine, fields: &[LogField], ctx: &HttpContext, computer: &str) {
    let req = ctx.request();
    let resp = ctx.response();
    let out = &mut line.text;
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let _ = match field {
            LogField::Date => {
                out.push(Hole::Date as u8);
                Ok(())
            }
            LogField::Time => {
                out.push(Hole::Time as u8);
                Ok(())
            }
            LogField::SiteName => {
                out.extend_from_slice(b"W3SVC");
                put_number(out, ctx.site().site_id);
                Ok(())
            }
            LogField::ComputerName => {
                put_value(out, computer.as_bytes());
                Ok(())
            }
            LogField::ServerIp => {
                crate::put_address(out, req.local_address().ip());
                Ok(())
            }
            LogField::ServerPort => {
                put_number(out, req.local_address().port());
                Ok(())
            }
            LogField::ClientIp => {
                crate::put_address(out, req.remote_address().ip());
                Ok(())
            }
            LogField::Method => {
                put_value(out, req.method().as_str().as_bytes());
                Ok(())
            }
            // The URL the client asked for, as IIS logs it (URL Rewrite's
            // `logRewrittenUrl` is off by default, and a default document
            // is logged under `/`); `var(URL)` gives the rewritten path.
            LogField::UriStem if req.url_changes() > 0 && !logs_rewritten_url(ctx) => {
                // Prepared as the request's own path is (decoded, `//`
                // and `.` segments folded), so one URL logs one way
                // whether a rule fired or not; the client's path was
                // refused before any rewrite if it could not be.
                let raw = req.client_url().split('?').next().unwrap_or("");
                match riis_pipeline::prepare_url_path(raw) {
                    Ok(path) => put_value(out, path.as_bytes()),
                    Err(_) => put_value(out, raw.as_bytes()),
                }
                Ok(())
            }
            LogField::UriStem => {
                put_value(out, req.url().as_bytes());
                Ok(())
            }
            LogField::UriQuery if req.url_changes() > 0 && !logs_rewritten_url(ctx) => {
                let query = req.client_url().split_once('?').map_or("", |(_, q)| q);
                put_value(out, query.as_bytes());
                Ok(())
            }
            LogField::UriQuery => {
                put_value(out, req.query_string().as_bytes());
                Ok(())
            }
            LogField::UserName => {
                put_value(out, ctx.user().map_or("", |u| u.name()).as_bytes());
                Ok(())
            }
            LogField::Version => out.write_all(version_name(req.http_version()).as_bytes()),
            LogField::Host => {
                // The host the request was routed by, as HTTP_HOST gives it:
                // an absolute-form target (or HTTP/2's `:authority`)
                // overrides `Host` (RFC 9112 §3.2.2), and its userinfo is
                // left out. A client cannot make one site's log name
                // another host.
                match req.uri().host() {
                    Some(host) => {
                        put_value(out, host.as_bytes());
                        if let Some(port) = req.uri().port_u16() {
                            out.push(b':');
                            put_number(out, port);
                        }
                    }
                    None => put_value(
                        out,
                        req.header(header::HOST).map_or(&b""[..], |v| v.as_bytes()),
                    ),
                }
                Ok(())
            }
            LogField::RequestHeader(name) => {
                put_value(out, header_bytes(req.headers().get_all(name)).as_ref());
                Ok(())
            }
            LogField::ResponseHeader(name) => {
                put_value(out, header_bytes(resp.headers().get_all(name)).as_ref());
                Ok(())
            }
            LogField::ServerVariable(name) => {
                put_value(
                    out,
                    ctx.server_variable(name).unwrap_or_default().as_bytes(),
                );
                Ok(())
            }
            // The status the client got, and its substatus: one a module
            // set after the head went out reached nobody.
            LogField::Status => {
                let status = resp.sent_status().map_or_else(|| resp.status(), |(s, _)| s);
                put_number(out, status.as_u16());
                Ok(())
            }
            LogField::Substatus => {
                let substatus = resp
                    .sent_status()
                    .map_or_else(|| resp.substatus(), |(_, sub)| sub);
                put_number(out, substatus);
                Ok(())
            }
            LogField::Win32Status => {
                out.push(Hole::Win32Status as u8);
                Ok(())
            }
            LogField::BytesSent => {
                out.push(Hole::BytesSent as u8);
                Ok(())
            }
            LogField::BytesReceived => {
                put_number(out, request_length(ctx));
                Ok(())
            }
            LogField::TimeTaken => {
                out.push(Hole::TimeTaken as u8);
                Ok(())
            }
        };
    }
}

/// A header's values, joined with `,` as one field (most have one).
fn header_bytes(
    values: header::GetAll<'_, riis_pipeline::http::HeaderValue>,
) -> std::borrow::Cow<'_, [u8]> {
    let mut iter = values.iter();
    let Some(first) = iter.next() else {
        return std::borrow::Cow::Borrowed(&[]);
    };
    let mut rest = iter.peekable();
    if rest.peek().is_none() {
        return std::borrow::Cow::Borrowed(first.as_bytes());
    }
    let mut joined = first.as_bytes().to_vec();
    for v in rest {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    std::borrow::Cow::Owned(joined)
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Writes a number (faster than `core::fmt`, which a line would call a
/// dozen times).
fn put_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The Win32 error code in an HRESULT (`HRESULT_FROM_WIN32` reversed); an
/// HRESULT of another facility as it is.
fn win32(hresult: u32) -> u32 {
    if hresult & 0xFFFF_0000 == 0x8007_0000 {
        hresult & 0xFFFF
    } else {
        hresult
    }
}

/// The request line and headers as HTTP/1.1 carries them, and the body
/// bytes read.
fn request_length(ctx: &HttpContext) -> u64 {
    let req = ctx.request();
    // `GET /path?q HTTP/1.1\r\n` … `\r\n`
    let mut n = req.method().as_str().len() + 1 + req.raw_url().len() + 1 + 8 + 2 + 2;
    // An absolute-form target (`http://host:port/path`) came with its
    // scheme and authority on the request line.
    if req.http_version() < riis_pipeline::http::Version::HTTP_2 {
        if let (Some(scheme), Some(authority)) = (req.uri().scheme_str(), req.uri().authority()) {
            n += scheme.len() + 3 + authority.as_str().len();
        }
    }
    for (name, value) in req.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    (n as u64).saturating_add(req.bytes_received())
}

/// Makes the instances, and writes what is waiting at shutdown.
struct Factory {
    config: Section<HttpLoggingConfig>,
    shared: Arc<Shared>,
}

impl HttpModuleFactory for Factory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(HttpLogging {
            config: self.config,
            shared: self.shared.clone(),
            head_bytes: None,
        }))
    }

    /// The configuration ends (a reload replaced it, or the server
    /// stops): every folder's waiting lines are written now, those a
    /// configuration before it left included.
    fn terminate(&self) {
        let sinks: Vec<Arc<Sink>> = lock(&registry().sinks).values().cloned().collect();
        for sink in sinks {
            sink.write();
        }
    }
}

/// `riis status` lines: the folders written to, the bytes waiting for the
/// disk, the lines dropped.
fn status_lines() -> String {
    let live: Vec<Arc<Sink>> = lock(&registry().sinks).values().cloned().collect();
    let waiting: usize = live.iter().map(|s| lock(&s.waiting).bytes).sum();
    format!(
        "http_logging_folders: {}\nhttp_logging_bytes_waiting: {waiting}\nhttp_logging_lines_dropped: {}\n",
        live.len(),
        LINES_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
    )
}

/// The host's name, for `s-computername`.
fn computer_name() -> Box<str> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_default()
        .into()
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<HttpLoggingConfig>("http_logging")?;
    let shared = Arc::new(Shared {
        folder: server.configuration_folder.clone(),
        computer: computer_name(),
        software: server.software,
        sinks: RwLock::new(Vec::new()),
    });
    registration.set_global_notifications(
        crate::StatusLines(status_lines),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
    registration.set_request_notifications(
        Factory { config, shared },
        RequestNotification::SendResponse.into(),
        RequestNotifications::NONE,
    )?;
    // Inverted in SendResponse: First runs after the modules that change
    // the status or the entity.
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::First);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x/../logs`, `logs` and a link to it are one folder, one sink.
    #[test]
    fn one_folder_has_one_identity_however_written() {
        let base = std::env::temp_dir().join(format!("riis-log-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("logs")).unwrap();
        std::os::unix::fs::symlink(base.join("logs"), base.join("link")).unwrap();
        let plain = folder_identity(&base.join("logs/W3SVC1"));
        for other in [
            "x/../logs/W3SVC1",
            "./logs/./W3SVC1",
            "link/W3SVC1",
            "x/../link/W3SVC1",
        ] {
            assert_eq!(folder_identity(&base.join(other)), plain, "{other}");
        }
        std::fs::remove_dir_all(&base).unwrap();
        // A relative folder that does not exist yet is taken from the
        // working folder, as it will be once made.
        let missing = format!("riis-log-id-missing-{}/W3SVC1", std::process::id());
        assert_eq!(
            folder_identity(Path::new(&missing)),
            std::env::current_dir().unwrap().join(&missing)
        );
    }

    /// A site's folder that is not one (a file named `W3SVC1`) is a
    /// configuration error, not a log lost at the first request.
    #[test]
    fn a_site_folder_that_cannot_take_lines_is_refused() {
        let base = std::env::temp_dir().join(format!("riis-log-w3svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("logs")).unwrap();
        std::fs::write(base.join("logs/W3SVC1"), "").unwrap();
        let parse = |dir: &str| {
            log_directory(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(dir))
        };
        let e = parse(base.join("logs").to_str().unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("W3SVC1 is not a folder this user can write in"),
            "{e}"
        );
        std::fs::remove_file(base.join("logs/W3SVC1")).unwrap();
        std::fs::create_dir(base.join("logs/W3SVC1")).unwrap();
        assert!(parse(base.join("logs").to_str().unwrap()).is_ok());
        // A link at a site's folder (in a log folder others may write in,
        // anyone's): refused, and never written through.
        std::fs::create_dir(base.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("logs/W3SVC2")).unwrap();
        let e = parse(base.join("logs").to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("W3SVC2 is a symbolic link"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn dates_are_proleptic_gregorian_in_utc() {
        assert_eq!(&stamp(0), b"1970-01-01 00:00:00");
        // 2000-02-29 (a leap day of a century divisible by 400).
        assert_eq!(&stamp(951_782_400 + 3_661), b"2000-02-29 01:01:01");
        // 2100 is not a leap year: 2100-02-28 is followed by 2100-03-01.
        assert_eq!(&stamp(4_107_456_000), b"2100-02-28 00:00:00");
        assert_eq!(&stamp(4_107_456_000 + 86_400), b"2100-03-01 00:00:00");
        assert_eq!(&stamp(1_796_399_999), b"2026-12-04 15:59:59");
        assert_eq!(crate::civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn file_names_follow_the_period() {
        // 2026-12-04 15:59:59 UTC, a Friday.
        let s = 1_796_399_999;
        let mut buf = [0; 20];
        assert_eq!(file_name(LogPeriod::Daily, s, &mut buf), "u_ex261204.log");
        assert_eq!(
            file_name(LogPeriod::Hourly, s, &mut buf),
            "u_ex26120415.log"
        );
        assert_eq!(file_name(LogPeriod::Monthly, s, &mut buf), "u_ex2612.log");
        // December 2026 starts on a Tuesday: the 1st to the 5th are week
        // 01, each Sunday starts the next.
        let day = |d: u64| 1_796_083_200 + (d - 1) * 86_400; // 2026-12-01 00:00
        let weekly = |second| {
            let mut buf = [0; 20];
            file_name(LogPeriod::Weekly, second, &mut buf).to_owned()
        };
        assert_eq!(weekly(s), "u_ex261201.log");
        assert_eq!(weekly(day(1)), "u_ex261201.log");
        assert_eq!(weekly(day(6) - 1), "u_ex261201.log");
        assert_eq!(weekly(day(6)), "u_ex261202.log");
        assert_eq!(weekly(day(31)), "u_ex261205.log");
        // A new month starts week 01 again, whatever the day: 2027-01-01
        // is a Friday; 2027-01-31, a Sunday, is in its sixth week.
        assert_eq!(weekly(day(32)), "u_ex270101.log");
        assert_eq!(weekly(day(62)), "u_ex270106.log");
    }

    #[test]
    fn values_cannot_break_a_line() {
        let put = |v: &[u8]| {
            let mut out = Vec::new();
            put_value(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(put(b""), "-");
        assert_eq!(put(b"Mozilla/5.0 (X11)"), "Mozilla/5.0+(X11)");
        assert_eq!(put(b"a\r\nb\tc\x7f"), "a%0D%0Ab%09c%7F");
        assert_eq!(put("/caf\u{e9}".as_bytes()), "/caf\u{e9}");
        // C1 controls, Unicode separators and spaces, invisible
        // characters, as UTF-8.
        assert_eq!(put("x\u{85}y".as_bytes()), "x%C2%85y");
        assert_eq!(
            put("x\u{2028}#Fields:\u{a0}y\u{202e}".as_bytes()),
            "x%E2%80%A8#Fields:%C2%A0y%E2%80%AE"
        );
        // Default ignorable characters: the Arabic letter mark (a
        // bidirectional control), a soft hyphen, a Hangul filler, a
        // variation selector, a tag.
        assert_eq!(
            put("a\u{61c}b\u{ad}c\u{3164}d\u{fe0f}e\u{e0041}f".as_bytes()),
            "a%D8%9Cb%C2%ADc%E3%85%A4d%EF%B8%8Fe%F3%A0%81%81f"
        );
        // Not UTF-8: every high byte escaped.
        assert_eq!(put(b"\xff\xfe/"), "%FF%FE/");
    }

    #[test]
    fn fields_are_checked_when_the_configuration_loads() {
        let parse = |names: &[&str]| {
            LogFields::try_from(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let fields = parse(&["date", "cs(X-Request-Id)", "sc(content-type)", "SC-BYTES"]).unwrap();
        let variables = parse(&["var(cert_subject)", "VAR(HTTPS)"]).unwrap();
        assert_eq!(
            variables.0.iter().map(|f| f.name()).collect::<Vec<_>>(),
            ["var(CERT_SUBJECT)", "var(HTTPS)"]
        );
        for bad in ["var()", "var(a b)", "var(x-y)"] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
        assert_eq!(
            fields.0.iter().map(|f| f.name()).collect::<Vec<_>>(),
            ["date", "cs(X-Request-Id)", "sc(Content-Type)", "sc-bytes"]
        );
        assert!(parse(&["date", "bogus"])
            .unwrap_err()
            .contains("`bogus` is not a log field"));
        assert!(parse(&["cs(bad header)"])
            .unwrap_err()
            .contains("not a header name"));
        assert!(parse(&[]).is_err());
        let names: Vec<_> = LogFields::default().0.iter().map(|f| f.name()).collect();
        assert_eq!(
            names.join(" "),
            "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip \
             cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken"
        );
    }

    /// A folder that cannot be made keeps the lines waiting; past the
    /// limit the oldest whole lines go; once the folder can be made, what
    /// was kept is written, in order, under one header block.
    #[test]
    fn a_failing_folder_keeps_the_newest_lines() {
        let base = std::env::temp_dir().join(format!("riis-log-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A file where the folder's parent should be: creating it fails.
        std::fs::write(base.join("blocked"), "").unwrap();
        let folder = base.join("blocked").join("W3SVC1");
        let sink = Sink::new(folder.clone(), "riis/test");
        let fields = LogFields::default().0;
        let line = |i: usize| format!("{i:08} {}\n", "x".repeat(1000));
        let count = WAIT_AT / 1010 + 500;
        for i in 0..count / 2 {
            sink.append("u_ex.log", None, &fields, line(i).as_bytes(), 0);
        }
        sink.write(); // fails: everything is kept
        assert!(lock(&sink.file).failure.is_some());
        for i in count / 2..count {
            sink.append("u_ex.log", None, &fields, line(i).as_bytes(), 0);
        }
        // Over the limit: later appends were dropped and counted.
        let dropped = lock(&sink.waiting).dropped;
        assert!(dropped > 0);
        std::fs::remove_file(base.join("blocked")).unwrap();
        sink.write();
        let text = std::fs::read_to_string(folder.join("u_ex.log")).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(text.matches("#Fields:").count(), 1);
        assert!(lines.iter().all(|l| l.len() == 1009), "whole lines only");
        let numbers: Vec<usize> = lines.iter().map(|l| l[..8].parse().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, none lost between"
        );
        assert_eq!(*numbers.last().unwrap() as u64, count as u64 - 1 - dropped);
        assert!(lock(&sink.file).failure.is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// The rest of a line a failed write cut goes on in the same file, but
    /// not at the top of a new one: a rotator renamed the file meanwhile.
    #[test]
    fn a_cut_line_does_not_continue_in_a_new_file() {
        let folder = std::env::temp_dir().join(format!("riis-log-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        let sink = Sink::new(folder.clone(), "riis/test");
        let fields: Arc<[LogField]> = LogFields::default().0;
        let rest = Batch {
            file: "u_ex.log".into(),
            max_size: None,
            fields: fields.clone(),
            lines: b"dex.html 200\nnext line\n".to_vec(),
            continues: true,
            started: 0,
        };
        // The file the line began in is still there: the rest follows it.
        std::fs::write(folder.join("u_ex.log"), "#Fields: x\n/in").unwrap();
        let mut written = Written {
            last: Some(("u_ex.log".into(), fields.clone())),
            torn: true,
            failure: None,
            sized: None,
        };
        assert!(sink.write_batch(&mut written, &rest).is_ok());
        let text = std::fs::read_to_string(folder.join("u_ex.log")).unwrap();
        assert_eq!(text, "#Fields: x\n/index.html 200\nnext line\n");
        // Renamed away: the new file starts with its header and whole lines.
        std::fs::rename(folder.join("u_ex.log"), folder.join("old.log")).unwrap();
        let mut written = Written {
            last: Some(("u_ex.log".into(), fields.clone())),
            torn: true,
            failure: None,
            sized: None,
        };
        assert!(sink.write_batch(&mut written, &rest).is_ok());
        let text = std::fs::read_to_string(folder.join("u_ex.log")).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(body, ["next line"], "{text}");
        // A batch of new lines after the cut one, in a new file: no empty
        // line ends the cut one there.
        std::fs::remove_file(folder.join("u_ex.log")).unwrap();
        let mut written = Written {
            last: Some(("u_ex.log".into(), fields.clone())),
            torn: true,
            failure: None,
            sized: None,
        };
        let fresh = Batch {
            continues: false,
            started: 0,
            lines: b"new line\n".to_vec(),
            ..rest
        };
        assert!(sink.write_batch(&mut written, &fresh).is_ok());
        let text = std::fs::read_to_string(folder.join("u_ex.log")).unwrap();
        assert!(text.starts_with('#'), "{text:?}");
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn max_size_goes_with_period_size_only() {
        let parse =
            |text: &str| toml::from_str::<HttpLoggingConfig>(text).map_err(|e| e.to_string());
        let sized = parse("period = \"size\"").unwrap();
        assert_eq!(
            (sized.period, sized.max_size),
            (LogPeriod::Size, 20 * 1024 * 1024)
        );
        assert_eq!(
            parse("period = \"size\"\nmax_size = 1048576")
                .unwrap()
                .max_size,
            1_048_576
        );
        let e = parse("period = \"daily\"\nmax_size = 1048576").unwrap_err();
        assert!(
            e.contains("max_size applies only with period = \"size\""),
            "{e}"
        );
        assert!(parse("max_size = 5").is_err());
        assert!(parse("period = \"size\"\nmax_size = 0").is_err());
        // A file every few lines: refused below 1 MiB, as IIS does.
        assert!(parse("period = \"size\"\nmax_size = 10")
            .unwrap_err()
            .contains("at least 1048576"));
        assert!(parse("directory = \"\"")
            .unwrap_err()
            .contains("empty path"));
        assert!(parse("period = \"yearly\"").is_err());
        assert_eq!(
            parse("period = \"weekly\"").unwrap().period,
            LogPeriod::Weekly
        );
        assert!(
            parse("period = \"hourly\"\nlocal_time_rollover = true")
                .unwrap()
                .local_time_rollover
        );
        let e = parse("period = \"size\"\nlocal_time_rollover = true").unwrap_err();
        assert!(e.contains("local_time_rollover applies only"), "{e}");
    }

    /// `period = "size"`: files numbered from the highest already there,
    /// each closed before a batch would take it past `max_size`.
    #[test]
    fn sized_files_roll_over_before_they_pass_their_size() {
        let folder = std::env::temp_dir().join(format!("riis-log-sized-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        // An older file numbered 7, nearly full.
        std::fs::write(folder.join("u_extend7.log"), "x".repeat(900)).unwrap();
        std::fs::write(folder.join("u_extend.log"), "not ours").unwrap();
        let sink = Sink::new(folder.clone(), "riis/test");
        let fields = LogFields::default().0;
        let mut stem = [0u8; 20];
        let stem = file_name(LogPeriod::Size, 0, &mut stem).to_owned();
        assert_eq!(stem, "u_extend");
        for round in 0..4 {
            for i in 0..5 {
                let line = format!("{round}-{i} {}\n", "y".repeat(90));
                sink.append(&stem, Some(1000), &fields, line.as_bytes(), 0);
            }
            sink.write();
        }
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "u_extend.log",
                "u_extend10.log",
                "u_extend7.log",
                "u_extend8.log",
                "u_extend9.log"
            ]
        );
        // Each file holds its header and the whole lines that fit below
        // 1,000 bytes: a batch that does not fit is split between files.
        let mut lines = 0;
        for number in 8..=10 {
            let text =
                std::fs::read_to_string(folder.join(format!("u_extend{number}.log"))).unwrap();
            assert!(text.starts_with("#Software"), "{text}");
            assert!(
                text.len() <= 1000,
                "u_extend{number}.log: {} bytes",
                text.len()
            );
            lines += text.lines().filter(|l| !l.starts_with('#')).count();
        }
        assert_eq!(lines, 20, "every line, once");
        assert_eq!(
            std::fs::read_to_string(folder.join("u_extend7.log"))
                .unwrap()
                .len(),
            900
        );
        std::fs::remove_dir_all(&folder).unwrap();
    }

    /// A batch that would fit in a file of its own but not with the header
    /// block a new file starts with is split too: no file passes
    /// `max_size` but with one line alone.
    #[test]
    fn a_header_block_counts_toward_the_size() {
        let folder =
            std::env::temp_dir().join(format!("riis-log-sized-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        let sink = Sink::new(folder.clone(), "riis/test");
        let fields = LogFields::default().0;
        let line = format!("{}\n", "z".repeat(99));
        for _ in 0..9 {
            sink.append("u_extend", Some(1000), &fields, line.as_bytes(), 0);
        }
        sink.write();
        // A line longer than the file may be is written alone.
        sink.append(
            "u_extend",
            Some(1000),
            &fields,
            format!("{}\n", "w".repeat(1500)).as_bytes(),
            0,
        );
        sink.write();
        let mut total = 0;
        for entry in std::fs::read_dir(&folder).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert!(
                text.len() <= 1000 || body.len() == 1,
                "{} bytes",
                text.len()
            );
            total += body.len();
        }
        assert_eq!(total, 10, "every line, once");
        std::fs::remove_dir_all(&folder).unwrap();
    }

    /// Lines kept after a failed write and lines gathered meanwhile may be
    /// far more than a batch over the limit: whole batches go.
    #[test]
    fn keeping_drops_whole_batches_when_far_over() {
        let sink = Sink::new(std::env::temp_dir().join("riis-log-unused"), "riis/test");
        let fields = LogFields::default().0;
        let batch = |n: usize| Batch {
            file: "u_ex.log".into(),
            max_size: None,
            fields: fields.clone(),
            lines: b"x\n".repeat(n),
            continues: false,
            started: 0,
        };
        // 12 MiB that failed, in batches of 64 KiB, and 8 MiB waiting.
        let unwritten: VecDeque<Batch> = (0..192).map(|_| batch(BATCH_BYTES / 2)).collect();
        lock(&sink.waiting)
            .batches
            .extend((0..128).map(|_| batch(BATCH_BYTES / 2)));
        let mut written = Written::default();
        sink.keep(&mut written, unwritten, "disk full".into());
        let waiting = lock(&sink.waiting);
        assert!(waiting.bytes <= WAIT_AT);
        assert_eq!(
            waiting.bytes,
            waiting.batches.iter().map(|b| b.lines.len()).sum::<usize>()
        );
        assert!(waiting.bytes > WAIT_AT - BATCH_BYTES);
        assert_eq!(written.failure.as_deref(), Some("disk full"));
    }

    #[test]
    fn win32_codes_come_out_of_their_hresults() {
        assert_eq!(win32(0x8007_0002), 2);
        assert_eq!(win32(0x8007_0005), 5);
        assert_eq!(win32(0x8000_4005), 0x8000_4005);
    }
}
