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
//!   request's lines would be the parent's twice) it writes the line.
//!   Among the First modules (ProtocolSupport, EventTrace) the one listed
//!   first runs last: list `HttpLogging` before them for `sc-bytes` to
//!   count the headers they add.
//!
//! The final send is where IIS hands its log data over too: it follows
//! EndRequest, so a status a module sets there is the one logged. A line
//! is written when the response is handed to the connection: `time-taken`
//! does not include the time the client takes to receive the rest of a
//! large response.
//!
//! Lines are gathered in memory per log folder and written by a thread of
//! the module's own (`riis-log`) once a second, or by the request that
//! fills 64 KiB (when no write is under way), so no request waits for the
//! disk. Past 8 MiB waiting (the disk does not keep up, or writes fail) a
//! request waits for the write; lines are dropped only when a write fails
//! and 8 MiB are already waiting, and then counted in an error. What is
//! gathered is written at reload (the replaced configuration's lines) and
//! at shutdown; a server that is killed loses up to a second of lines.
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
//!   (`u_exYYMMDDHH.log`) or `"monthly"` (`u_exYYMM.log`), by UTC;
//! - `fields`: the W3C fields of a line, in order. The default is IIS's:
//!   `date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username
//!   c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus
//!   sc-win32-status time-taken`. Also known: `s-sitename`,
//!   `s-computername`, `cs-version`, `cs-host`, `sc-bytes`, `cs-bytes`,
//!   and any request header as `cs(Name)` or response header as
//!   `sc(Name)`.
//!
//! Values follow IIS's conventions: an empty value is `-`, a space is `+`,
//! and control characters (and the bytes of a value that is not UTF-8) are
//! percent-escaped, so no value can end a line or forge one.
//! `cs-uri-stem` is the decoded path (after any rewrite), `time-taken` is
//! in milliseconds, `sc-win32-status` is the Win32 code of the error a
//! module set (0 when none). `sc-bytes` counts the response head as
//! HTTP/1.1 writes it (status line, headers, `Date`, and `Content-Length`
//! or `Transfer-Encoding`) and the entity, without chunk framing;
//! `cs-bytes` counts the request line and headers as received and the body
//! bytes read.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use riis_pipeline::http::header::{self, HeaderName};
use riis_pipeline::http::{Method, StatusCode, Version};
use riis_pipeline::{
    HttpContext, HttpModule, HttpModuleFactory, HttpResponse, ModuleError, ModuleRegistration,
    Priority, RequestNotification, RequestNotificationStatus, RequestNotifications, Section,
    SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

/// The `http_logging` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLoggingConfig {
    /// Whether requests under this location are logged.
    pub enabled: bool,
    /// The folder the sites' log folders go in.
    pub directory: PathBuf,
    /// How long one file collects lines.
    pub period: LogPeriod,
    /// The fields of a line.
    pub fields: LogFields,
}

impl Default for HttpLoggingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: PathBuf::from("logs"),
            period: LogPeriod::Daily,
            fields: LogFields::default(),
        }
    }
}

/// How long one log file collects lines (IIS's `period`), by UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogPeriod {
    /// `u_exYYMMDDHH.log`.
    Hourly,
    /// `u_exYYMMDD.log`.
    Daily,
    /// `u_exYYMM.log`.
    Monthly,
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
    /// `cs-host`: the `Host` header (HTTP/2's `:authority`).
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
        Self::NAMED
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(text))
            .map(|(_, f)| f.clone())
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a log field (known: {}, cs(Header), sc(Header))",
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

/// Bytes waiting for the disk, past which the request that adds a line
/// writes them itself when no write is under way.
const WRITE_AT: usize = 64 * 1024;
/// Bytes waiting past which a request waits for the write.
const WAIT_AT: usize = 8 * 1024 * 1024;
/// How often the writer thread writes what is waiting.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// What the module's factory, its instances and its writer thread share.
struct Shared {
    /// A relative `directory` is taken from here.
    folder: PathBuf,
    /// `s-computername`.
    computer: Box<str>,
    /// `#Software`.
    software: &'static str,
    sinks: Mutex<Sinks>,
    writer: std::sync::Once,
}

/// The log folders written to, found by (site, section) without building
/// a path for each request.
#[derive(Default)]
struct Sinks {
    by_section: HashMap<(u32, usize), Arc<Sink>>,
    by_folder: HashMap<PathBuf, Arc<Sink>>,
}

impl Shared {
    /// The folder a site's lines go to under `config`.
    fn sink(self: &Arc<Self>, site_id: u32, config: &HttpLoggingConfig) -> Arc<Sink> {
        // The section's address is stable while this configuration (and so
        // this `Shared`) lives.
        let key = (site_id, config as *const HttpLoggingConfig as usize);
        let mut sinks = lock(&self.sinks);
        if let Some(sink) = sinks.by_section.get(&key) {
            return sink.clone();
        }
        let folder = self
            .folder
            .join(&config.directory)
            .join(format!("W3SVC{site_id}"));
        let sink = sinks
            .by_folder
            .entry(folder.clone())
            .or_insert_with(|| Arc::new(Sink::new(folder, self.software)))
            .clone();
        sinks.by_section.insert(key, sink.clone());
        drop(sinks);
        self.start_writer();
        sink
    }

    /// Starts the thread that writes once a second; it ends when the
    /// configuration that owns `self` is gone.
    fn start_writer(self: &Arc<Self>) {
        self.writer.call_once(|| {
            let shared: Weak<Self> = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("riis-log".into())
                .spawn(move || loop {
                    std::thread::sleep(WRITE_EVERY);
                    match shared.upgrade() {
                        Some(shared) => shared.write_all(),
                        None => break,
                    }
                });
            if let Err(e) = started {
                // Requests then write once 64 KiB wait, and shutdown writes
                // the rest.
                tracing::error!("HttpLogging: cannot start the log writer thread: {e}");
            }
        });
    }

    /// Writes every folder's waiting lines.
    fn write_all(&self) {
        let sinks: Vec<Arc<Sink>> = lock(&self.sinks).by_folder.values().cloned().collect();
        for sink in sinks {
            sink.write(lock(&sink.file));
        }
    }
}

impl Drop for Shared {
    /// A reload replaced the configuration and its last request is done:
    /// what it logged goes to disk.
    fn drop(&mut self) {
        self.write_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
struct Waiting {
    batches: Vec<Batch>,
    bytes: usize,
    /// The UTC second `stamp` shows.
    second: u64,
    /// `YYYY-MM-DD HH:MM:SS`.
    stamp: [u8; 19],
}

struct Batch {
    file: Box<str>,
    fields: Arc<[LogField]>,
    lines: Vec<u8>,
}

/// What the writer knows of the files.
#[derive(Default)]
struct Written {
    /// The file and fields of the last batch written: the next batch needs
    /// no header block when it has the same.
    last: Option<(Box<str>, Arc<[LogField]>)>,
    /// The last failure reported, so a failing disk is not reported once a
    /// second.
    failure: Option<String>,
}

impl Sink {
    fn new(folder: PathBuf, software: &'static str) -> Self {
        Self {
            folder,
            software,
            waiting: Mutex::new(Waiting {
                batches: Vec::new(),
                bytes: 0,
                second: u64::MAX,
                stamp: [b'0'; 19],
            }),
            file: Mutex::new(Written::default()),
        }
    }

    /// Adds one line, written by `line` after the line's time stamp.
    fn append(
        &self,
        period: LogPeriod,
        fields: &Arc<[LogField]>,
        line: impl FnOnce(&mut Vec<u8>, &[u8; 19]),
    ) {
        let mut waiting = lock(&self.waiting);
        let second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != waiting.second {
            waiting.second = second;
            waiting.stamp = stamp(second);
        }
        let stamp = waiting.stamp;
        let mut name = [0u8; 20];
        let file = file_name(period, &stamp, &mut name);
        let same = |b: &Batch| {
            &*b.file == file && (Arc::ptr_eq(&b.fields, fields) || *b.fields == **fields)
        };
        let batch = match waiting.batches.last() {
            Some(b) if same(b) => waiting.batches.last_mut().expect("just seen"),
            _ => {
                waiting.batches.push(Batch {
                    file: file.into(),
                    fields: fields.clone(),
                    lines: Vec::with_capacity(4096),
                });
                waiting.batches.last_mut().expect("just pushed")
            }
        };
        let before = batch.lines.len();
        line(&mut batch.lines, &stamp);
        // A line must not start like a directive.
        if batch.lines.get(before) == Some(&b'#') {
            batch.lines.splice(before..before + 1, *b"%23");
        }
        batch.lines.push(b'\n');
        let added = batch.lines.len() - before;
        waiting.bytes += added;
        let total = waiting.bytes;
        drop(waiting);
        if total >= WAIT_AT {
            self.write(lock(&self.file));
        } else if total >= WRITE_AT {
            if let Ok(file) = self.file.try_lock() {
                self.write(file);
            }
        }
    }

    /// Writes what is waiting, in order (the caller holds the file lock).
    fn write(&self, mut written: MutexGuard<'_, Written>) {
        let batches = {
            let mut waiting = lock(&self.waiting);
            waiting.bytes = 0;
            std::mem::take(&mut waiting.batches)
        };
        if batches.is_empty() {
            return;
        }
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            if let Err(why) = self.write_batch(&mut written, &batch) {
                let mut unwritten: Vec<Batch> = std::iter::once(batch).chain(batches).collect();
                self.keep(&mut written, &mut unwritten, why);
                return;
            }
        }
        if let Some(old) = written.failure.take() {
            tracing::info!(folder = %self.folder.display(), "HttpLogging: writing again after: {old}");
        }
    }

    /// Puts batches that could not be written back in front of the waiting
    /// ones, dropping the oldest past [`WAIT_AT`].
    fn keep(&self, written: &mut Written, unwritten: &mut Vec<Batch>, why: String) {
        let mut waiting = lock(&self.waiting);
        unwritten.append(&mut waiting.batches);
        let mut bytes: usize = unwritten.iter().map(|b| b.lines.len()).sum();
        let mut dropped = 0usize;
        let mut keep_from = 0;
        while bytes > WAIT_AT && keep_from < unwritten.len() {
            let b = &unwritten[keep_from];
            bytes -= b.lines.len();
            dropped += b.lines.iter().filter(|&&c| c == b'\n').count();
            keep_from += 1;
        }
        unwritten.drain(..keep_from);
        waiting.batches = std::mem::take(unwritten);
        waiting.bytes = bytes;
        drop(waiting);
        if dropped > 0 {
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

    fn write_batch(&self, written: &mut Written, batch: &Batch) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.folder)
            .map_err(|e| format!("cannot create {}: {e}", self.folder.display()))?;
        let path = self.folder.join(&*batch.file);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        let known = written
            .last
            .as_ref()
            .is_some_and(|(f, fields)| *f == batch.file && **fields == *batch.fields);
        let mut out = Vec::with_capacity(batch.lines.len() + 256);
        if empty || !known {
            self.header(&mut out, &batch.fields);
        }
        out.extend_from_slice(&batch.lines);
        file.write_all(&out)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.last = Some((batch.file.clone(), batch.fields.clone()));
        Ok(())
    }

    /// The W3C header block.
    fn header(&self, out: &mut Vec<u8>, fields: &[LogField]) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = stamp(now);
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
    let (year, month, day) = civil_date((second / 86_400) as i64);
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

/// The proleptic Gregorian date of a day counted from 1970-01-01: the
/// calendar repeats every 400 years (146,097 days), and counting years from
/// March puts the leap day at the end of each year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The file a line stamped `stamp` goes to.
fn file_name<'a>(period: LogPeriod, stamp: &[u8; 19], out: &'a mut [u8; 20]) -> &'a str {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        out[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    put(b"u_ex");
    put(&stamp[2..4]);
    put(&stamp[5..7]);
    if period != LogPeriod::Monthly {
        put(&stamp[8..10]);
    }
    if period == LogPeriod::Hourly {
        put(&stamp[11..13]);
    }
    put(b".log");
    std::str::from_utf8(&out[..len]).expect("ASCII digits and letters")
}

/// Writes a value as W3C logs carry it: `-` when empty, `+` for a space,
/// control characters (and every byte of a value that is not UTF-8 past
/// ASCII) percent-escaped.
fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        out.push(b'-');
        return;
    }
    let utf8 = std::str::from_utf8(value).is_ok();
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b' ' {
            out.push(b'+');
            rest = tail;
        } else if b < 0x20 || b == 0x7f || (b >= 0x80 && !utf8) {
            let _ = write!(out, "%{b:02X}");
            rest = tail;
        } else if b >= 0x80 {
            // A whole UTF-8 character: C1 controls (U+0080 to U+009F) are
            // escaped too.
            let len = utf8_len(b);
            let ch = &rest[..len];
            let control = std::str::from_utf8(ch)
                .ok()
                .and_then(|s| s.chars().next())
                .is_some_and(char::is_control);
            if control {
                for c in ch {
                    let _ = write!(out, "%{c:02X}");
                }
            } else {
                out.extend_from_slice(ch);
            }
            rest = &rest[len..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

/// The length of a response head as HTTP/1.1 writes it, for `sc-bytes`.
fn head_length(resp: &HttpResponse, final_length: Option<u64>) -> u64 {
    let status = resp.status();
    let reason = resp
        .reason()
        .or(status.canonical_reason())
        .map_or(0, str::len);
    // `HTTP/1.1 200 OK\r\n` … `\r\n`
    let mut n = 9 + 3 + 1 + reason + 2 + 2;
    for (name, value) in resp.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    // `date: Fri, 04 Dec 2026 18:00:00 GMT\r\n`
    n += 37;
    let framed = resp.headers().contains_key(header::CONTENT_LENGTH)
        || resp.headers().contains_key(header::TRANSFER_ENCODING);
    if !bodiless(status) && !framed {
        n += match final_length {
            // `content-length: N\r\n`
            Some(len) => 16 + decimal_digits(len) + 2,
            // `transfer-encoding: chunked\r\n`
            None => 28,
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
    /// The length of the head, noted on the send that carries it.
    head_bytes: u64,
}

impl HttpModule for HttpLogging {
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if ctx.child_depth() != 0 {
            return RequestNotificationStatus::Continue;
        }
        let resp = ctx.response();
        if provider.headers_being_sent() {
            let whole = provider
                .is_final_send()
                .then(|| resp.bytes_sent() + resp.buffered_len());
            self.head_bytes = head_length(resp, whole);
        }
        if !provider.is_final_send() {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        if !config.enabled {
            return RequestNotificationStatus::Continue;
        }
        let sink = self.shared.sink(ctx.site().site_id, config);
        let head_bytes = self.head_bytes;
        let computer = &*self.shared.computer;
        sink.append(config.period, &config.fields.0, |out, stamp| {
            write_line(out, &config.fields.0, ctx, stamp, computer, head_bytes);
        });
        RequestNotificationStatus::Continue
    }
}

/// Writes the fields of `ctx`'s request, separated by spaces.
fn write_line(
    out: &mut Vec<u8>,
    fields: &[LogField],
    ctx: &HttpContext,
    stamp: &[u8; 19],
    computer: &str,
    head_bytes: u64,
) {
    let req = ctx.request();
    let resp = ctx.response();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let _ = match field {
            LogField::Date => out.write_all(&stamp[..10]),
            LogField::Time => out.write_all(&stamp[11..]),
            LogField::SiteName => write!(out, "W3SVC{}", ctx.site().site_id),
            LogField::ComputerName => {
                put_value(out, computer.as_bytes());
                Ok(())
            }
            LogField::ServerIp => write!(out, "{}", req.local_address().ip().to_canonical()),
            LogField::ServerPort => write!(out, "{}", req.local_address().port()),
            LogField::ClientIp => write!(out, "{}", req.remote_address().ip().to_canonical()),
            LogField::Method => {
                put_value(out, req.method().as_str().as_bytes());
                Ok(())
            }
            LogField::UriStem => {
                put_value(out, req.url().as_bytes());
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
                let host = req
                    .header(header::HOST)
                    .map(|v| v.as_bytes())
                    .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()))
                    .unwrap_or_default();
                put_value(out, host);
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
            LogField::Status => write!(out, "{}", resp.status().as_u16()),
            LogField::Substatus => write!(out, "{}", resp.substatus()),
            LogField::Win32Status => {
                write!(out, "{}", resp.error().map_or(0, |e| win32(e.hresult)))
            }
            LogField::BytesSent => {
                let entity = if *req.method() == Method::HEAD || bodiless(resp.status()) {
                    0
                } else {
                    resp.bytes_sent().saturating_add(resp.buffered_len())
                };
                write!(out, "{}", head_bytes.saturating_add(entity))
            }
            LogField::BytesReceived => write!(out, "{}", request_length(ctx)),
            LogField::TimeTaken => write!(out, "{}", ctx.start_time().elapsed().as_millis()),
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
            head_bytes: 0,
        }))
    }

    fn terminate(&self) {
        self.shared.write_all();
    }
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
        sinks: Mutex::new(Sinks::default()),
        writer: std::sync::Once::new(),
    });
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

    #[test]
    fn dates_are_proleptic_gregorian_in_utc() {
        assert_eq!(&stamp(0), b"1970-01-01 00:00:00");
        // 2000-02-29 (a leap day of a century divisible by 400).
        assert_eq!(&stamp(951_782_400 + 3_661), b"2000-02-29 01:01:01");
        // 2100 is not a leap year: 2100-02-28 is followed by 2100-03-01.
        assert_eq!(&stamp(4_107_456_000), b"2100-02-28 00:00:00");
        assert_eq!(&stamp(4_107_456_000 + 86_400), b"2100-03-01 00:00:00");
        assert_eq!(&stamp(1_796_399_999), b"2026-12-04 15:59:59");
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn file_names_follow_the_period() {
        let s = stamp(1_796_399_999);
        let mut buf = [0; 20];
        assert_eq!(file_name(LogPeriod::Daily, &s, &mut buf), "u_ex261204.log");
        assert_eq!(
            file_name(LogPeriod::Hourly, &s, &mut buf),
            "u_ex26120415.log"
        );
        assert_eq!(file_name(LogPeriod::Monthly, &s, &mut buf), "u_ex2612.log");
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
        // C1 controls, as UTF-8.
        assert_eq!(put("x\u{85}y".as_bytes()), "x%C2%85y");
        // Not UTF-8: every high byte escaped.
        assert_eq!(put(b"\xff\xfe/"), "%FF%FE/");
    }

    #[test]
    fn fields_are_checked_when_the_configuration_loads() {
        let parse = |names: &[&str]| {
            LogFields::try_from(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let fields = parse(&["date", "cs(X-Request-Id)", "sc(content-type)", "SC-BYTES"]).unwrap();
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

    #[test]
    fn win32_codes_come_out_of_their_hresults() {
        assert_eq!(win32(0x8007_0002), 2);
        assert_eq!(win32(0x8007_0005), 5);
        assert_eq!(win32(0x8000_4005), 0x8000_4005);
    }
}
