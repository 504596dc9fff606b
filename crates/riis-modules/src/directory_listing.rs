//! `DirectoryListing`: lists the contents of a directory URL, or refuses with
//! 403.14 when listing is off, as IIS's directory browsing does.
//!
//! Registers for **ExecuteRequestHandler** only: it is a module of the static
//! handler, listed after `StaticFile` and `DefaultDocument`, so it sees only
//! the directory URLs ending in `/` that have no default document (StaticFile
//! redirects the slash-less form, DefaultDocument answers when a document
//! exists). A folder's URL without the trailing slash gets the courtesy
//! redirect (301) from whichever of the three meets it first, so a handler
//! of DirectoryListing alone gives it too. Anything else (a file, a missing
//! path) is passed on with Continue.
//!
//! With the section's `enabled = false` (the default) it answers
//! `403.14 Forbidden` (directory listing denied) and finishes the request.
//! Enabled, it answers with a listing, directories first and then files,
//! each group by name (ASCII case ignored, then byte order), with sizes and
//! modification times, as HTML (names HTML-escaped, links percent-encoded)
//! or JSON (names JSON-escaped). Entries whose names start with `.` are
//! left out unless `show_hidden`; names RequestFiltering hides
//! (`request_filtering.hidden_segments`, shared with `share_section`) are
//! left out always, since a request for them would get 404.8. Symbolic
//! links are left out where StaticFile does not follow them
//! (`static_file.follow_symlinks = false`, shared too: the link would lead
//! to a 404); else they are listed as what they
//! point to, and only when that lies in the site's folder (a folder reached
//! through a link to outside it is not listed at all: 404; a folder a
//! MapPath module mapped elsewhere is listed, its links held to it);
//! entries that cannot be examined are left out. Links are absolute, built
//! from the decoded path. At most [`MAX_ENTRIES`] entries are listed, the
//! first in the listing's order; the page (or the JSON's `more`) says how
//! many more there are. Folders are read on two threads of the module's
//! own ([`LISTING_THREADS`]; the request waits Pending meanwhile), so a
//! huge folder does not hold up the worker; past [`QUEUED_LISTINGS`]
//! waiting, a request gets 503. A folder whose path holds a name
//! RequestFiltering hides is not listed (404.8).
//!
//! Configuration section `directory_listing`:
//! - `enabled` (default false);
//! - `format`: `"html"` (default) or `"json"`;
//! - `show_hidden` (default false).

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use riis_pipeline::http::{header, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    escape_html, HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, ResourceKind, Section, ServerInfo,
};
use serde::Deserialize;

use crate::background::Background;
use crate::request_filtering::RequestFilteringConfig;
use crate::static_file::StaticFileConfig;

/// The output format of a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListingFormat {
    /// An HTML page with a table.
    #[default]
    Html,
    /// A JSON document: `{ "path": …, "entries": [ … ] }`.
    Json,
}

/// The `directory_listing` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryListingConfig {
    /// Whether directories are listed; when false they get 403.14.
    pub enabled: bool,
    /// HTML or JSON.
    pub format: ListingFormat,
    /// Whether names starting with `.` are listed.
    pub show_hidden: bool,
}

/// The module instance.
pub struct DirectoryListing {
    config: Section<DirectoryListingConfig>,
    request_filtering: Section<RequestFilteringConfig>,
    static_file: Section<StaticFileConfig>,
    /// The threads that read folders, shared by the instances.
    listings: Arc<Background<ListingJob>>,
    /// The listing being made for this request, and its format.
    made: Option<(Made, ListingFormat)>,
}

/// Which entries a listing leaves out, besides what cannot be examined.
struct Shown<'a> {
    /// Names starting with `.`.
    dot_names: bool,
    /// Symbolic links (StaticFile would not follow them).
    symlinks: bool,
    /// Names RequestFiltering hides, compared ignoring ASCII case.
    hidden_segments: &'a [String],
}

/// One listed entry.
struct Entry {
    /// The name as bytes (for the link) and as text (for display).
    raw: Vec<u8>,
    name: String,
    is_dir: bool,
    len: u64,
    modified: Option<SystemTime>,
}

/// The most entries a listing shows: a folder of hundreds of thousands of
/// files would take the worker for seconds and megabytes of page.
pub const MAX_ENTRIES: usize = 10_000;

/// A folder's entries, and how many were left out past [`MAX_ENTRIES`].
struct Listing {
    entries: Vec<Entry>,
    more: usize,
}

fn read_entries(dir: &Path, root: &Path, shown: &Shown<'_>) -> std::io::Result<Listing> {
    // Names and kinds first (no `stat` but for symbolic links), one
    // allocation per name: only the first MAX_ENTRIES in the listing's
    // order are examined, so a folder of hundreds of thousands of files
    // costs a sort of names, not a `stat` of each.
    let mut found: Vec<(bool, Vec<u8>)> = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let file_name = item.file_name();
        let raw = file_name.as_bytes();
        if !shown.dot_names && raw.first() == Some(&b'.') {
            continue;
        }
        if shown
            .hidden_segments
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(raw))
        {
            continue;
        }
        let kind = item.file_type().ok();
        let is_link = kind.is_some_and(|t| t.is_symlink());
        if is_link && !shown.symlinks {
            continue;
        }
        let is_dir = if is_link {
            // A symbolic link is listed as what it points to, and only
            // when that lies in the site's folder: a listing shows nothing
            // outside it (names, sizes, dates), whatever links were
            // planted. Resolved now, so a link to a folder sorts with the
            // folders and one left out is not counted.
            let path = item.path();
            if !std::fs::canonicalize(&path).is_ok_and(|p| p.starts_with(root)) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() || meta.is_file() => meta.is_dir(),
                _ => continue,
            }
        } else {
            kind.is_some_and(|t| t.is_dir())
        };
        found.push((is_dir, raw.to_vec()));
    }
    found.sort_unstable_by(listing_order);
    let total = found.len();
    let mut entries = Vec::with_capacity(total.min(MAX_ENTRIES));
    let mut examined = 0;
    for (_, raw) in found {
        if entries.len() == MAX_ENTRIES {
            break;
        }
        examined += 1;
        // Skip what cannot be examined, and what is neither a file nor a
        // folder (a FIFO, a socket).
        let Ok(meta) = std::fs::metadata(dir.join(std::ffi::OsStr::from_bytes(&raw))) else {
            continue;
        };
        if !meta.is_dir() && !meta.is_file() {
            continue;
        }
        entries.push(Entry {
            name: String::from_utf8_lossy(&raw).into_owned(),
            raw,
            is_dir: meta.is_dir(),
            len: if meta.is_dir() { 0 } else { meta.len() },
            modified: meta.modified().ok(),
        });
    }
    let more = total - examined;
    Ok(Listing { entries, more })
}

/// The listing's order of (is a directory, name): directories first, then
/// by name with ASCII case ignored, then by bytes.
fn listing_order(a: &(bool, Vec<u8>), b: &(bool, Vec<u8>)) -> std::cmp::Ordering {
    b.0.cmp(&a.0)
        .then_with(|| {
            a.1.iter()
                .map(u8::to_ascii_lowercase)
                .cmp(b.1.iter().map(u8::to_ascii_lowercase))
        })
        .then_with(|| a.1.cmp(&b.1))
}

/// Percent-encodes every byte but RFC 3986's unreserved characters, so the
/// result is a safe relative reference (no `:` to read as a scheme, no `?`,
/// `#` or `/`).
fn encode_segment(raw: &[u8], out: &mut String) {
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Escapes text for a JSON string literal (RFC 8259 §7).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whole seconds since the epoch, rounded down: a time half a second
/// before it is -1.
fn epoch_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s - i64::from(d.subsec_nanos() > 0))
        }
    }
}

/// A time in UTC: year, month (1-12), day, hour, minute, second, and the
/// weekday (0 for Sunday).
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    weekday: i64,
}

fn civil(t: SystemTime) -> Civil {
    let secs = epoch_seconds(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::civil_date(days);
    Civil {
        year,
        month: i64::from(month),
        day: i64::from(day),
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7),
    }
}

/// `2024-03-05T07:08:09Z` (RFC 3339, UTC, whole seconds).
fn iso8601(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `Tue, 05 Mar 2024 07:08:09 GMT` (the IMF-fixdate of HTTP), for any
/// time, 1970 or before included.
fn listing_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

fn html_listing(url: &str, base: &str, listing: &Listing) -> String {
    let entries = &listing.entries;
    let title = escape_html(url);
    let mut out = String::with_capacity(512 + entries.len() * 160);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if url != "/" {
        // Absolute links, from the canonical path: relative ones would
        // follow the URL as sent (`/list%2F` has no `list/` to be under).
        let parent = &base[..base.trim_end_matches('/').rfind('/').map_or(0, |i| i) + 1];
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}\">[To Parent Directory]</a></td><td></td><td></td></tr>",
            escape_html(parent)
        );
    }
    for e in entries {
        let mut href = base.to_owned();
        encode_segment(&e.raw, &mut href);
        if e.is_dir {
            href.push('/');
        }
        let size = if e.is_dir {
            "&lt;dir&gt;".to_owned()
        } else {
            e.len.to_string()
        };
        let date = e.modified.map(listing_date).unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}\">{}{}</a></td><td>{size}</td><td>{date}</td></tr>",
            escape_html(&href),
            escape_html(&e.name),
            if e.is_dir { "/" } else { "" },
        );
    }
    out.push_str("</table>\n");
    if listing.more > 0 {
        let _ = writeln!(
            out,
            "<p>{} more entries are not listed (at most {MAX_ENTRIES}).</p>",
            listing.more
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn json_listing(url: &str, base: &str, listing: &Listing) -> String {
    let entries = &listing.entries;
    let mut out = String::with_capacity(64 + entries.len() * 128);
    out.push_str("{\"path\":");
    json_string(url, &mut out);
    out.push_str(",\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut href = base.to_owned();
        encode_segment(&e.raw, &mut href);
        if e.is_dir {
            href.push('/');
        }
        out.push_str("{\"name\":");
        json_string(&e.name, &mut out);
        out.push_str(",\"type\":");
        out.push_str(if e.is_dir {
            "\"directory\""
        } else {
            "\"file\""
        });
        if !e.is_dir {
            let _ = write!(out, ",\"size\":{}", e.len);
        }
        out.push_str(",\"modified\":");
        match e.modified {
            Some(m) => json_string(&iso8601(m), &mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"url\":");
        json_string(&href, &mut out);
        out.push('}');
    }
    out.push(']');
    if listing.more > 0 {
        // Entries past MAX_ENTRIES that are not in the list.
        let _ = write!(out, ",\"more\":{}", listing.more);
    }
    out.push_str("}\n");
    out
}

fn fail(
    ctx: &mut HttpContext,
    code: StatusCode,
    substatus: u16,
    hresult: u32,
) -> RequestNotificationStatus {
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.set_error_status(
        code,
        code.canonical_reason().unwrap_or(""),
        substatus,
        hresult,
    );
    ctx.set_request_handled();
    RequestNotificationStatus::FinishRequest
}

/// Threads that read folders for listings.
const LISTING_THREADS: usize = 2;
/// Listings that may wait for one of those threads; past that a request
/// gets 503.
const QUEUED_LISTINGS: usize = 64;

/// A listing to make on the module's threads.
struct ListingJob {
    dir: std::path::PathBuf,
    root: std::path::PathBuf,
    dot_names: bool,
    symlinks: bool,
    hidden_segments: Vec<String>,
    url: String,
    format: ListingFormat,
    /// Where the body (or the error) goes, for the module's completion.
    made: Made,
    done: riis_pipeline::CompletionHandle,
}

/// A listing's body, or why the folder could not be read.
type Made = Arc<Mutex<Option<std::io::Result<String>>>>;

impl ListingJob {
    fn run(self) {
        // A request whose client left, or whose wait ended (a timeout),
        // while this job was queued gets no listing: it would only keep the
        // threads from the requests still waiting.
        if !self.done.is_client_connected() {
            return;
        }
        let shown = Shown {
            dot_names: self.dot_names,
            symlinks: self.symlinks,
            hidden_segments: &self.hidden_segments,
        };
        // Checked again now, and the folder read by the path checked: it
        // may have been swapped for a link to outside the site while the
        // job waited.
        let body = match std::fs::canonicalize(&self.dir) {
            Ok(real) if real.starts_with(&self.root) => Ok(real),
            Ok(_) => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            Err(e) => Err(e),
        };
        let body = body
            .and_then(|real| read_entries(&real, &self.root, &shown))
            .map(|listing| {
                let base = crate::canonical_url_path(&self.url);
                match self.format {
                    ListingFormat::Html => html_listing(&self.url, &base, &listing),
                    ListingFormat::Json => json_listing(&self.url, &base, &listing),
                }
            });
        if let Err(e) = &body {
            // A flood of requests for an unreadable folder is one line a
            // second.
            static FAILURE_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = FAILURE_LOG.pass() {
                tracing::warn!(error = %e, dir = %self.dir.display(), held_back, "directory listing failed");
            }
        }
        *self.made.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        self.done.post_completion(0);
    }
}

impl HttpModule for DirectoryListing {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        // In a handler without StaticFile or DefaultDocument, the courtesy
        // redirect is ours.
        if crate::needs_trailing_slash(ctx) {
            return crate::add_trailing_slash(ctx);
        }
        let method = ctx.request().method();
        if (method != Method::GET && method != Method::HEAD)
            || !ctx.request().url().ends_with('/')
            || ctx.resource_kind() != Some(ResourceKind::Directory)
        {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let (enabled, format, show_hidden) = (config.enabled, config.format, config.show_hidden);
        if !enabled {
            // IIS 403.14: directory listing denied.
            return fail(ctx, StatusCode::FORBIDDEN, 14, 0x8007_0005);
        }
        // A folder RequestFiltering would hide (`/bin/`) is not listed,
        // whether or not RequestFiltering runs: its entries are left out of
        // every listing for the same reason.
        let hidden_segments = &ctx.config(self.request_filtering).hidden_segments;
        if ctx.request().url().split('/').any(|segment| {
            !segment.is_empty()
                && hidden_segments
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(segment))
        }) {
            return fail(ctx, StatusCode::NOT_FOUND, 8, 0x8007_0002);
        }
        let hidden_segments = hidden_segments.clone();
        let dir = ctx.physical_path().to_path_buf();
        // Never a folder outside the site's (or its virtual directory's)
        // reached through a link: its contents are not the site's to show.
        // A folder a MapPath module put elsewhere is trusted as configured,
        // and then bounds what its links may show.
        let site_root = &ctx.virtual_directory().physical_path;
        let root = if dir.starts_with(site_root) {
            let root = std::fs::canonicalize(site_root).unwrap_or_else(|_| site_root.clone());
            if !std::fs::canonicalize(&dir).is_ok_and(|d| d.starts_with(&root)) {
                return fail(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002);
            }
            root
        } else {
            std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone())
        };
        // The listing would be a 200: the request's preconditions apply
        // (RFC 9110 §13.2.1). It has no validators of its own, so only
        // `If-Match` and `If-None-Match: *` can decide anything, and they
        // do before the folder is read.
        match crate::static_file::preconditions_without_validators(
            ctx.request().headers(),
            ctx.request().method(),
        ) {
            Some(StatusCode::NOT_MODIFIED) => {
                let resp = ctx.response_mut();
                resp.clear_entity();
                resp.set_status(StatusCode::NOT_MODIFIED, "Not Modified");
                // What the 200 would carry for caches (RFC 9110 §15.4.5).
                resp.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                ctx.set_request_handled();
                return RequestNotificationStatus::Continue;
            }
            Some(code) => return fail(ctx, code, 0, ModuleError::E_FAIL),
            None => {}
        }
        // Reading a folder of many thousand entries takes a while: it is
        // done on the module's threads, and the worker serves other
        // requests meanwhile.
        let made = Made::default();
        let job = ListingJob {
            dir,
            root,
            dot_names: show_hidden,
            symlinks: ctx.config(self.static_file).follow_symlinks,
            hidden_segments,
            url: ctx.request().url().to_owned(),
            format,
            made: made.clone(),
            done: ctx.completion_handle(),
        };
        if self.listings.queue(job).is_err() {
            static BUSY_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = BUSY_LOG.pass() {
                tracing::warn!(
                    held_back,
                    "DirectoryListing: too many listings waiting to be made"
                );
            }
            // ERROR_NO_SYSTEM_RESOURCES
            return fail(ctx, StatusCode::SERVICE_UNAVAILABLE, 0, 0x8007_05AA);
        }
        self.made = Some((made, format));
        RequestNotificationStatus::Pending
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        _completion: &riis_pipeline::CompletionInfo,
    ) -> RequestNotificationStatus {
        let Some((made, format)) = self.made.take() else {
            return RequestNotificationStatus::Continue;
        };
        let body = made.lock().unwrap_or_else(|e| e.into_inner()).take();
        let body = match body {
            Some(Ok(body)) => body,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return fail(ctx, StatusCode::FORBIDDEN, 0, 0x8007_0005);
            }
            // Not readable, or the job was lost (a panic, logged there).
            _ => return fail(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
        };
        let content_type = match format {
            ListingFormat::Html => "text/html; charset=utf-8",
            ListingFormat::Json => "application/json",
        };
        let resp = ctx.response_mut();
        resp.clear_entity();
        resp.set_status(StatusCode::OK, "OK");
        resp.set_header(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        // A listing changes whenever the folder does: never reuse it unchecked.
        resp.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp.write(body);
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<DirectoryListingConfig>("directory_listing")?;
    let request_filtering =
        registration.share_section::<RequestFilteringConfig>("request_filtering")?;
    let static_file = registration.share_section::<StaticFileConfig>("static_file")?;
    let listings = Arc::new(Background::with_threads(
        "riis-listing",
        LISTING_THREADS,
        QUEUED_LISTINGS,
        ListingJob::run,
    ));
    registration.set_request_notifications(
        move || DirectoryListing {
            config,
            request_filtering,
            static_file,
            listings: listings.clone(),
            made: None,
        },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29
        assert_eq!(iso8601(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(iso8601(t), "2024-12-31T23:59:59Z");
        assert_eq!(listing_date(t), "Tue, 31 Dec 2024 23:59:59 GMT");
        assert_eq!(listing_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        // Before 1970 a time is rounded down to its second, as after.
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(iso8601(t), "1969-12-31T23:59:59Z");
        assert_eq!(listing_date(t), "Wed, 31 Dec 1969 23:59:59 GMT");
        let t = UNIX_EPOCH - Duration::from_secs(315_619_200) + Duration::from_millis(500);
        assert_eq!(iso8601(t), "1960-01-01T00:00:00Z");
        assert_eq!(listing_date(t), "Fri, 01 Jan 1960 00:00:00 GMT");
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        encode_segment("a b:c/é%".as_bytes(), &mut s);
        assert_eq!(s, "a%20b%3Ac%2F%C3%A9%25");
        let mut j = String::new();
        json_string("<\"\\\n\u{1}>", &mut j);
        assert_eq!(j, "\"<\\\"\\\\\\n\\u0001>\"");
    }

    /// What a listing shows with the sections' defaults: no dot names,
    /// links followed, and `hidden`.
    fn shown(hidden: &[String]) -> Shown<'_> {
        Shown {
            dot_names: false,
            symlinks: true,
            hidden_segments: hidden,
        }
    }

    #[test]
    fn names_request_filtering_hides_and_unfollowed_links_are_left_out() {
        let base = std::env::temp_dir().join(format!("riis-listing-hide-{}", std::process::id()));
        let root = base.join("site");
        std::fs::create_dir_all(&root).unwrap();
        for name in ["a.txt", "riis.toml", "Web.Config", ".env"] {
            std::fs::write(root.join(name), "x").unwrap();
        }
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("b_link")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let hidden = vec![
            "riis.toml".to_owned(),
            "web.config".to_owned(),
            ".env".to_owned(),
        ];
        let names = |shown: &Shown<'_>| -> Vec<String> {
            let listing = read_entries(&root, &root, shown).unwrap();
            listing.entries.into_iter().map(|e| e.name).collect()
        };
        assert_eq!(names(&shown(&hidden)), ["a.txt", "b_link"]);
        // Shown hidden dot names still leave out what filtering refuses.
        let all_dots = Shown {
            dot_names: true,
            ..shown(&hidden)
        };
        assert_eq!(names(&all_dots), ["a.txt", "b_link"]);
        let no_links = Shown {
            symlinks: false,
            ..shown(&hidden)
        };
        assert_eq!(names(&no_links), ["a.txt"]);
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A link to a folder inside the site sorts with the folders; links
    /// leading outside, dangling links and FIFOs are left out.
    #[test]
    fn links_are_listed_as_what_they_point_to() {
        let base = std::env::temp_dir().join(format!("riis-listing-{}", std::process::id()));
        let root = base.join("site");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("b_dir")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(root.join("b_dir"), root.join("c_link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d_out")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("e_dangling")).unwrap();
        nix::unistd::mkfifo(&root.join("f_fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let listing = read_entries(&root, &root, &shown(&[])).unwrap();
        let names: Vec<(&str, bool)> = listing
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.is_dir))
            .collect();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(names, [("b_dir", true), ("c_link", true), ("a.txt", false)]);
        assert_eq!(listing.more, 0);
    }

    /// Past MAX_ENTRIES, the listing holds the first MAX_ENTRIES entries
    /// that are shown, in the listing's order (a link to a folder among the
    /// folders), and counts the rest.
    #[test]
    fn a_long_listing_is_cut_after_leaving_out_what_is_not_shown() {
        let base = std::env::temp_dir().join(format!("riis-long-listing-{}", std::process::id()));
        let root = base.join("site");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for i in 0..MAX_ENTRIES {
            std::fs::write(root.join(format!("f{i:05}")), "").unwrap();
        }
        std::os::unix::fs::symlink(root.join("sub"), root.join("zz_link")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("aa_dangling")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let listing = read_entries(&root, &root, &shown(&[])).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(listing.entries.len(), MAX_ENTRIES);
        assert_eq!(listing.entries[0].name, "sub");
        assert_eq!(listing.entries[1].name, "zz_link");
        assert_eq!(listing.entries[2].name, "f00000");
        // Two folders and 9,998 files are shown; f09998 and f09999 are not.
        assert_eq!(listing.entries[MAX_ENTRIES - 1].name, "f09997");
        assert_eq!(listing.more, 2);
    }

    #[test]
    fn directories_sort_first() {
        let e = |name: &str, is_dir| (is_dir, name.as_bytes().to_vec());
        let mut v = [
            e("b", false),
            e("Z", true),
            e("a", false),
            e("c", true),
            e("B", false),
        ];
        v.sort_unstable_by(listing_order);
        let names: Vec<&[u8]> = v.iter().map(|e| e.1.as_slice()).collect();
        assert_eq!(names, [&b"c"[..], b"Z", b"a", b"B", b"b"]);
    }
}
