//! `ServerSideInclude`: pages with server-side include directives (`.stm`,
//! `.shtm`, `.shtml`), as IIS's ServerSideIncludeModule (`ssinc`) answers
//! them.
//!
//! Registers for **ExecuteRequestHandler** only: it is a handler module
//! (IIS maps `SSINC-stm`, `SSINC-shtm` and `SSINC-shtml` to it; riis's
//! default handlers do too when the module is listed). It reads the page
//! (at most [`MAX_PAGE`] bytes), sends its text as it is and replaces each
//! directive, an HTML comment of the form `<!--#name key="value" … -->`
//! (names and keys in any case; values in double or single quotes, or
//! bare; IIS also takes a space before `#`, which riis takes for the six
//! directives only, so that `<!-- #region -->` stays a comment), with what
//! it asks for:
//!
//! - `#include file="…"` / `virtual="…"`: the output of the named URL,
//!   run as a **child request** through the whole pipeline with the
//!   page's user. So an included file is subject to the usual access
//!   control (request filtering, authorization, address rules), an
//!   included `.shtml` is itself processed, and one a script handler maps
//!   is run, not shown as source. `file` is a path relative to the page's
//!   folder that cannot leave it (no `..`, no leading `/`), as IIS and
//!   Apache require; `virtual` is a URL path of the site, absolute or
//!   relative to the page's URL, with an optional query. The child is a
//!   GET without the client's `Range`, conditional and `Accept-Encoding`
//!   headers (only its entity goes into the page, so it must be the whole
//!   entity, uncompressed), and its status and headers do not reach the
//!   page (`ExecuteFlags::no_headers`). A child that ends with a status
//!   outside 2xx is replaced by the error message, as Apache and nginx do.
//! - `#exec cgi="…"`: the same for a program's URL (IIS's form, with the
//!   program's arguments in the query), refused when the location's
//!   `exec_disabled` (IIS's `ssiExecDisable`) is set. `#exec cmd` (a
//!   shell command) is refused always: IIS leaves it off unless a
//!   registry value allows it, and riis has no such switch.
//! - `#echo var="…"`: a server variable under its IIS name, or one of
//!   SSI's own, which describe the page the client asked for, as Apache's
//!   do, also in a page it includes: `DOCUMENT_NAME` (its file name; IIS
//!   gives its physical path), `DOCUMENT_URI`, `QUERY_STRING_UNESCAPED`,
//!   `DATE_LOCAL`, `DATE_GMT`, `LAST_MODIFIED`. A variable the server
//!   does not have echoes `(none)`. The variables that carry credentials
//!   ([`WITHHELD`]) are not shown, as CGI does not pass them. Unlike IIS, the value is
//!   HTML-escaped unless the directive says `encoding="none"` before `var`
//!   (Apache's attribute and its default): an echoed `HTTP_REFERER` must
//!   not put a client's markup into the page. `encoding="url"`
//!   percent-encodes it.
//! - `#config errmsg="…"` (at most 1,024 bytes, as IIS), `timefmt="…"`
//!   (`strftime` fields; default `%A, %d-%b-%Y %H:%M:%S %Z`, as Apache and
//!   nginx) and `sizefmt="bytes"` (`1,234,567`) or `"abbrev"` (the
//!   default: `1.2K`, `34M`), for what follows in the page.
//! - `#flastmod` and `#fsize` with `file` or `virtual`: the date or size
//!   of the file the URL maps to (through MapPath), once a HEAD child
//!   request for the URL has succeeded (its body dropped): only what the
//!   client could fetch is described. A page being answered (this one, in
//!   a "last modified" footer) is described without one.
//!
//! Includes are bounded for the whole request, the pages it includes
//! counted in: at most [`MAX_INCLUDES`] child requests (nginx caps its
//! subrequests too), none for a page that is already being answered
//! further up (a loop, refused at once as Apache refuses a recursive
//! include), none once the client has gone, and at most 10 deep (the cap
//! on child requests). The pages of one request share this through a
//! table keyed by the request's id, which its child requests carry.
//!
//! A directive that cannot be carried out (a missing file, a bad value,
//! an unknown name or key) is replaced by the error message, default
//! `[an error occurred while processing the directive]` (nginx's), and the
//! reason is logged (at most one line a second); the page still answers
//! 200, as every SSI engine does. The page's response is `text/html`, as
//! IIS's, without `Last-Modified` or `ETag` (its output changes with what
//! it includes), and OutputCache never keeps it: what it includes may be
//! the client's own (an address rule's, a cookie's). Once a page holds
//! [`PIECE`] bytes of output (its own, and what its includes left
//! buffered), it lets them go and waits for the client to take them: a
//! page that expands into much more than it is, or includes many large
//! files, is not held whole. An include that streams goes out through the
//! page's SendResponse modules (`no_headers`), so compression and outbound
//! rules see the page whole. A page that is missing answers 404, one the server may
//! not read 403; other methods than GET, HEAD and POST get 405. The
//! static file settings apply to the page as to a file StaticFile serves
//! (`static_file.allow_hidden`, `follow_symlinks`: shared with
//! `share_section`).
//!
//! Left out: Apache's and nginx's extensions (`#set`, `#if`, `#block`,
//! `#printenv`), which IIS's engine does not have either.
//!
//! Configuration section `server_side_include`:
//! - `exec_disabled` (default false): refuse `#exec`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use riis_pipeline::http::{header, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    escape_html, CompletionInfo, ExecuteFlags, FlushOptions, HttpContext, HttpModule, ModuleError,
    ModuleRegistration, RequestNotification, RequestNotificationStatus, RequestNotifications,
    ResourceKind, Section, ServerInfo,
};
use serde::Deserialize;

use crate::lock;
use crate::static_file::StaticFileConfig;

/// The `server_side_include` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSideIncludeConfig {
    /// IIS's `ssiExecDisable`: `#exec` directives are refused.
    pub exec_disabled: bool,
}

/// The largest page processed: a page is read whole before its directives
/// run (its includes are not counted). A larger one answers 500.
pub const MAX_PAGE: u64 = 4 * 1024 * 1024;

/// The most child requests (includes, `#exec cgi`, `#fsize` and
/// `#flastmod`) one request's pages start, the pages they include
/// counted in: pages that include several others, each of which does the
/// same, would otherwise start exponentially many.
pub const MAX_INCLUDES: u32 = 1000;

/// How much output a page makes before it lets what it has go out.
pub const PIECE: usize = 256 * 1024;

/// The longest `#config errmsg`, as IIS limits it.
pub const MAX_ERRMSG: usize = 1024;

/// What a failed directive is replaced with until `#config errmsg` says
/// otherwise.
pub const DEFAULT_ERRMSG: &str = "[an error occurred while processing the directive]";

/// The time format until `#config timefmt` says otherwise.
pub const DEFAULT_TIMEFMT: &str = "%A, %d-%b-%Y %H:%M:%S %Z";

/// The directives riis carries out.
const DIRECTIVES: [&str; 6] = ["include", "exec", "echo", "config", "flastmod", "fsize"];

/// Server variables `#echo` does not show: they carry the client's
/// credentials, which CGI does not pass on either.
pub const WITHHELD: [&str; 5] = [
    "HTTP_AUTHORIZATION",
    "HTTP_PROXY_AUTHORIZATION",
    "AUTH_PASSWORD",
    "ALL_RAW",
    "ALL_HTTP",
];

/// Whether the variable `upper` (its name in uppercase) is one of
/// [`WITHHELD`], however it is spelt: the server takes `-` for `_` in a
/// header's name, and IIS's `HEADER_` prefix for `HTTP_`.
fn is_withheld(upper: &str) -> bool {
    let name = upper.replace('-', "_");
    let name = match name.strip_prefix("HEADER_") {
        Some(rest) => format!("HTTP_{rest}"),
        None => name,
    };
    WITHHELD.contains(&name.as_str())
}

/// The server variable a page sets on the HEAD child request of its
/// `#fsize` and `#flastmod`: a page that answers it there is only asked
/// whether the client may fetch it, so it answers without running its
/// directives (which would run its includes for output nobody reads).
const DESCRIBE_VARIABLE: &str = "SSI_DESCRIBE";

/// One part of a page: text sent as it is, or a directive.
#[derive(Debug, PartialEq)]
enum Part {
    /// Bytes of the page.
    Text(Range<usize>),
    /// A directive, its name in lowercase and its keys in lowercase, in
    /// order.
    Directive {
        name: String,
        params: Vec<(String, String)>,
    },
    /// A directive that could not be read, and why.
    Malformed(&'static str),
}

/// The part of `page` that starts at `start`, and where the next one
/// starts; `None` at the end. Parts are read as the page is answered, not
/// all first: a page of directives would take several times its size as
/// a list. An opening `<!--#` without a closing `-->` is text: it is no
/// directive.
fn next_part(page: &[u8], start: usize) -> Option<(Part, usize)> {
    if start >= page.len() {
        return None;
    }
    let mut at = start;
    while let Some(found) = memchr::memmem::find(&page[at..], b"<!--") {
        let open = at + found;
        let mut inner = open + 4;
        while page.get(inner).is_some_and(u8::is_ascii_whitespace) {
            inner += 1;
        }
        if page.get(inner) != Some(&b'#')
            || (inner > open + 4 && !names_directive(&page[inner + 1..]))
        {
            at = open + 4;
            continue;
        }
        let Some(close) = memchr::memmem::find(&page[inner..], b"-->") else {
            break;
        };
        if start < open {
            return Some((Part::Text(start..open), open));
        }
        let body = &page[inner + 1..inner + close];
        return Some((parse_directive(body), inner + close + 3));
    }
    Some((Part::Text(start..page.len()), page.len()))
}

/// Whether `rest` (what follows a `#`) starts with the name of a
/// directive riis knows, in any case, and then ends the name.
fn names_directive(rest: &[u8]) -> bool {
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    DIRECTIVES
        .iter()
        .any(|d| d.as_bytes().eq_ignore_ascii_case(&rest[..end]))
}

/// One directive's name and keys: what lies between `<!--#` and `-->`.
fn parse_directive(body: &[u8]) -> Part {
    let Ok(body) = std::str::from_utf8(body) else {
        return Part::Malformed("the directive is not UTF-8 text");
    };
    let name_end = body
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(body.len());
    if name_end == 0 {
        return Part::Malformed("a directive starts with its name (`<!--#include …`)");
    }
    let name = body[..name_end].to_ascii_lowercase();
    let mut rest = &body[name_end..];
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let key_end = rest
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(rest.len());
        if key_end == 0 {
            return Part::Malformed("expected a key (`file=\"…\"`)");
        }
        let key = rest[..key_end].to_ascii_lowercase();
        rest = rest[key_end..].trim_start();
        let Some(after) = rest.strip_prefix('=') else {
            return Part::Malformed("a key without `=` and a value");
        };
        rest = after.trim_start();
        let value;
        if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let Some(end) = rest[1..].find(quote) else {
                return Part::Malformed("a value without its closing quote");
            };
            value = &rest[1..1 + end];
            rest = &rest[2 + end..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = &rest[end..];
        }
        params.push((key, value.to_owned()));
    }
    Part::Directive { name, params }
}

/// How `#fsize` writes a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SizeFormat {
    /// `1,234,567`.
    Bytes,
    /// `1.2K`, `34M`.
    Abbrev,
}

/// `size` as `#fsize` writes it.
fn format_size(size: u64, format: SizeFormat) -> String {
    match format {
        SizeFormat::Bytes => {
            let digits = size.to_string();
            let mut out = String::with_capacity(digits.len() + digits.len() / 3);
            for (i, d) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(d);
            }
            out
        }
        SizeFormat::Abbrev => {
            const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
            // From 1,000 bytes on in units, as Apache writes 1000 as `1.0K`.
            if size < 1000 {
                return size.to_string();
            }
            let mut value = size as f64 / 1024.0;
            let mut unit = 0;
            while value >= 1024.0 && unit + 1 < UNITS.len() {
                value /= 1024.0;
                unit += 1;
            }
            if value < 9.95 {
                format!("{value:.1}{}", UNITS[unit])
            } else {
                format!("{}{}", value.round() as u64, UNITS[unit])
            }
        }
    }
}

/// `time` in `format` (`strftime` fields), in the server's time zone or
/// in UTC; `None` for a format with a field chrono does not know, or a
/// time chrono cannot hold (a file dated past the year 262,143).
fn format_time(time: SystemTime, format: &str, utc: bool) -> Option<String> {
    let since = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        Err(before) => i64::try_from(before.duration().as_secs())
            .ok()?
            .checked_neg()?,
    };
    use chrono::TimeZone;
    let utc_time = chrono::DateTime::from_timestamp(since, 0)?;
    let mut out = String::new();
    let written = if utc {
        write!(out, "{}", utc_time.format(format))
    } else {
        let local = chrono::Local.from_utc_datetime(&utc_time.naive_utc());
        write!(out, "{}", local.format(format))
    };
    written.is_ok().then_some(out)
}

/// What a directive asks of the module once its text is known.
enum Step {
    /// Text to put into the page.
    Write(String),
    /// A child request was started; its end comes back through
    /// OnAsyncCompletion.
    Started,
    /// The client has gone: the page stops.
    Stop,
    /// The directive failed; the error message goes into the page.
    Failed(String),
}

/// What the child request running now was started for.
enum ChildFor {
    /// Its output goes into the page.
    Include,
    /// `#fsize` (`true`) or `#flastmod` of the file at this decoded URL
    /// path, once the HEAD has shown the client may fetch it.
    Describe { path: String, size: bool },
}

/// The child request a page waits for.
struct Child {
    purpose: ChildFor,
    /// The page's chunks before it and the bytes sent: what the child
    /// wrote is dropped when it fails (or was a HEAD).
    chunks_before: usize,
    sent_before: u64,
    /// Its URL, for the log.
    url: String,
}

/// What one request's pages share, its child requests' pages included.
struct Scope {
    /// Child requests the request's pages may still start.
    includes_left: AtomicU32,
    /// The URLs of the pages being answered now, outermost first: the
    /// branch of includes that leads to the page running (a page waits
    /// for each of its includes).
    active: Mutex<Vec<String>>,
    /// The page the client asked for, which SSI's variables describe.
    document_uri: String,
    document_modified: Option<SystemTime>,
}

/// The scopes of the requests answering pages now, by request id.
static SCOPES: LazyLock<Mutex<HashMap<u64, Arc<Scope>>>> = LazyLock::new(Default::default);

/// A page's place in its request's scope, given back when the page's
/// instance goes (at the end of the request or child request it answers,
/// so before the page that included it goes on).
struct Joined {
    scope: Arc<Scope>,
    request_id: u64,
    /// Whether this page made the scope (the outermost page), which ends
    /// with it.
    owner: bool,
}

impl Joined {
    /// Joins the request's scope as the page at `url`, making it for the
    /// outermost page; `Err` when that page is being answered further up
    /// already (a loop that came through another module, such as
    /// DefaultDocument).
    fn join(
        request_id: u64,
        url: &str,
        modified: Option<SystemTime>,
    ) -> Result<Self, (Self, String)> {
        let mut scopes = lock(&SCOPES);
        let (scope, owner) = match scopes.get(&request_id) {
            Some(scope) => (scope.clone(), false),
            None => {
                let scope = Arc::new(Scope {
                    includes_left: AtomicU32::new(MAX_INCLUDES),
                    active: Mutex::new(Vec::new()),
                    document_uri: url.to_owned(),
                    document_modified: modified,
                });
                scopes.insert(request_id, scope.clone());
                (scope, true)
            }
        };
        drop(scopes);
        let mut active = lock(&scope.active);
        let looped = active.iter().any(|a| a == url);
        active.push(url.to_owned());
        drop(active);
        let joined = Self {
            scope,
            request_id,
            owner,
        };
        if looped {
            let why = format!(
                "`{}` is already being answered further up (a loop)",
                crate::log_excerpt(url)
            );
            return Err((joined, why));
        }
        Ok(joined)
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        lock(&self.scope.active).pop();
        if self.owner {
            lock(&SCOPES).remove(&self.request_id);
        }
    }
}

/// A page being answered: its bytes, how far it has got and the settings
/// `#config` changed.
struct Page {
    source: Bytes,
    /// Where the next part starts.
    at: usize,
    errmsg: String,
    timefmt: String,
    sizefmt: SizeFormat,
    joined: Joined,
    /// The child request the page waits for.
    child: Option<Child>,
    /// Output held since the page last let it go: its own, and what its
    /// includes left buffered.
    made: usize,
}

/// The module instance.
pub struct ServerSideInclude {
    config: Section<ServerSideIncludeConfig>,
    static_file: Section<StaticFileConfig>,
    page: Option<Page>,
}

/// Characters a `virtual` URL's query cannot hold as they are.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>');

/// The folder of the page's decoded URL path, with its trailing `/`.
fn folder_of(url: &str) -> &str {
    &url[..url.rfind('/').map_or(0, |i| i + 1)]
}

/// The decoded URL path and the query (as written) that a directive's
/// `file` or `virtual` names, from the page at decoded path `page_url`.
fn target(page_url: &str, key: &str, value: &str) -> Result<(String, Option<String>), String> {
    if value.is_empty() {
        return Err(format!("`{key}` is empty"));
    }
    if value.contains('\\') || value.chars().any(char::is_control) {
        return Err(format!("`{key}` holds a backslash or a control character"));
    }
    match key {
        "file" => {
            if value.starts_with('/') || value.split('/').any(|s| s == "..") {
                return Err(
                    "`file` is a path below the page's folder: no leading `/`, no `..` (use `virtual` for other folders)"
                        .into(),
                );
            }
            Ok((format!("{}{value}", folder_of(page_url)), None))
        }
        "virtual" => {
            let (path, query) = match value.split_once('?') {
                Some((p, q)) => (p, Some(q.to_owned())),
                None => (value, None),
            };
            let decoded = percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .map_err(|_| "`virtual` decodes to bytes that are not UTF-8".to_owned())?;
            let joined = if decoded.starts_with('/') {
                decoded.into_owned()
            } else {
                format!("{}{decoded}", folder_of(page_url))
            };
            // `..` resolved here, as a browser resolves a link; above the
            // root is an error, not the root.
            let mut segments: Vec<&str> = Vec::new();
            for segment in joined.split('/') {
                match segment {
                    "" | "." => {}
                    ".." => {
                        if segments.pop().is_none() {
                            return Err("`virtual` leads above the site's root".into());
                        }
                    }
                    s => segments.push(s),
                }
            }
            let mut path = String::from("/");
            path.push_str(&segments.join("/"));
            if joined.ends_with('/') && path.len() > 1 {
                path.push('/');
            }
            Ok((path, query))
        }
        _ => Err(format!("`{key}` is not `file` or `virtual`")),
    }
}

/// The one `file` or `virtual` key of a directive that takes a path.
fn path_key<'a>(name: &str, params: &'a [(String, String)]) -> Result<(&'a str, &'a str), String> {
    match params {
        [(key, value)] if key == "file" || key == "virtual" => Ok((key, value)),
        _ => Err(format!("`#{name}` takes one key, `file` or `virtual`")),
    }
}

impl ServerSideInclude {
    /// Reads the page the request maps to, or answers the error.
    fn read_page(&self, ctx: &mut HttpContext) -> Result<Bytes, RequestNotificationStatus> {
        let follow_symlinks = ctx.config(self.static_file).follow_symlinks;
        if follow_symlinks {
            if let Some(content) = ctx.take_cached_content() {
                return Ok(content);
            }
        }
        let path = ctx.physical_path().to_path_buf();
        let opened = if follow_symlinks {
            crate::open_nonblocking(&path)
        } else {
            let root = ctx.virtual_directory().physical_path.clone();
            crate::static_file::open_without_symlinks(&root, &path)
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) => return Err(crate::static_file::open_failure(ctx, &e)),
        };
        match crate::read_regular(file, MAX_PAGE) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) => {
                log_failure(ctx, "the page", &e.to_string());
                Err(crate::end_with_error(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    ModuleError::E_FAIL,
                ))
            }
        }
    }

    /// Sends the page's parts from where it stopped, until the end, a
    /// child request, or a piece of output to let go.
    fn run(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let exec_disabled = ctx.config(self.config).exec_disabled;
        let follow_symlinks = ctx.config(self.static_file).follow_symlinks;
        let Some(page) = self.page.as_mut() else {
            return RequestNotificationStatus::Continue;
        };
        while let Some((part, next)) = next_part(&page.source, page.at) {
            if page.made >= PIECE {
                // Sent as the client takes it; the page goes on from the
                // completion.
                page.made = 0;
                ctx.response_mut().flush(FlushOptions {
                    asynchronous: true,
                    more_data: true,
                });
                return RequestNotificationStatus::Pending;
            }
            page.at = next;
            let step = match part {
                Part::Text(range) => {
                    page.made += range.len();
                    ctx.response_mut().write(page.source.slice(range));
                    continue;
                }
                Part::Malformed(why) => Step::Failed(why.to_owned()),
                Part::Directive { name, params } => {
                    page.directive(ctx, &name, &params, exec_disabled, follow_symlinks)
                }
            };
            match step {
                Step::Write(text) => {
                    page.made += text.len();
                    ctx.response_mut().write(text);
                }
                Step::Started => return RequestNotificationStatus::Pending,
                Step::Stop => break,
                Step::Failed(why) => {
                    log_failure(ctx, "a directive", &why);
                    page.made += page.errmsg.len();
                    ctx.response_mut().write(page.errmsg.clone());
                }
            }
        }
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

impl Page {
    /// Carries out one directive.
    fn directive(
        &mut self,
        ctx: &mut HttpContext,
        name: &str,
        params: &[(String, String)],
        exec_disabled: bool,
        follow_symlinks: bool,
    ) -> Step {
        let result = match name {
            "include" => path_key(name, params)
                .and_then(|(k, v)| target(ctx.request().url(), k, v))
                .and_then(|(path, query)| self.start_child(ctx, path, query, ChildFor::Include)),
            "exec" => match params {
                [(key, value)] if key == "cgi" => {
                    if exec_disabled {
                        Err("`#exec` is disabled here (`server_side_include.exec_disabled`)".into())
                    } else {
                        target(ctx.request().url(), "virtual", value).and_then(|(path, query)| {
                            self.start_child(ctx, path, query, ChildFor::Include)
                        })
                    }
                }
                [(key, _)] if key == "cmd" => Err(
                    "`#exec cmd` (a shell command) is not enabled in riis; run programs through `#exec cgi`".into(),
                ),
                _ => Err("`#exec` takes one key, `cgi` or `cmd`".into()),
            },
            "echo" => self.echo(ctx, params).map(Step::Write),
            "config" => self.config(params).map(|()| Step::Write(String::new())),
            "flastmod" | "fsize" => self.file_info(ctx, name, params, follow_symlinks),
            _ => Err(format!("`#{name}` is not a directive riis knows")),
        };
        result.unwrap_or_else(Step::Failed)
    }

    /// `#fsize` and `#flastmod`: the HEAD child request that checks the
    /// client may fetch the URL, or the answer at once for a page being
    /// answered (this one: a "last modified" footer), which the client
    /// may fetch and a HEAD of which would be refused as a loop.
    fn file_info(
        &mut self,
        ctx: &mut HttpContext,
        name: &str,
        params: &[(String, String)],
        follow_symlinks: bool,
    ) -> Result<Step, String> {
        let (key, value) = path_key(name, params)?;
        let (path, query) = target(ctx.request().url(), key, value)?;
        let size = name == "fsize";
        if lock(&self.joined.scope.active).contains(&path) {
            return self
                .describe(ctx, &path, size, follow_symlinks)
                .map(Step::Write);
        }
        let purpose = ChildFor::Describe {
            path: path.clone(),
            size,
        };
        self.start_child(ctx, path, query, purpose)
    }

    /// Starts the child request of an include, an `#exec cgi`, or (a HEAD)
    /// of `#fsize` and `#flastmod`.
    fn start_child(
        &mut self,
        ctx: &mut HttpContext,
        path: String,
        query: Option<String>,
        purpose: ChildFor,
    ) -> Result<Step, String> {
        if !ctx.is_client_connected() {
            return Ok(Step::Stop);
        }
        if lock(&self.joined.scope.active).contains(&path) {
            return Err(format!(
                "`{}` is being answered further up: a page cannot include itself",
                crate::log_excerpt(&path)
            ));
        }
        let left = &self.joined.scope.includes_left;
        if left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(format!(
                "the request's pages have started {MAX_INCLUDES} child requests, the most they may"
            ));
        }
        let mut url = crate::canonical_url_path(&path);
        if let Some(query) = query {
            url.push('?');
            url.extend(percent_encoding::utf8_percent_encode(&query, QUERY));
        }
        let mut child = ctx
            .clone_context_with_url(&url)
            .map_err(|e| e.to_string())?;
        let describe = matches!(purpose, ChildFor::Describe { .. });
        if describe {
            child.set_server_variable(DESCRIBE_VARIABLE, "1");
        }
        let request = child.request_mut();
        request.set_method(if describe { Method::HEAD } else { Method::GET });
        // The whole entity, uncompressed, of a request without a body.
        let more = [
            header::ACCEPT_ENCODING,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::TRANSFER_ENCODING,
        ];
        for name in crate::RANGE_AND_CONDITIONAL_HEADERS.into_iter().chain(more) {
            request.delete_header(name);
        }
        let chunks_before = ctx.response().entity_chunks().len();
        let sent_before = ctx.response().bytes_sent();
        ctx.execute_request(
            child,
            ExecuteFlags {
                buffer_response: true,
                no_headers: true,
                disable_custom_error: true,
                // A HEAD's output (an application that answers one with a
                // body) is dropped: held, never sent.
                stream_past_buffer_limit: !describe,
                ..ExecuteFlags::default()
            },
        )
        .map_err(|e| format!("`{}`: {e}", crate::log_excerpt(&url)))?;
        self.child = Some(Child {
            purpose,
            chunks_before,
            sent_before,
            url,
        });
        Ok(Step::Started)
    }

    /// The child request the page waited for ended: an include's output
    /// stays, a HEAD's leads to the file's size or date; a failed one's
    /// output is replaced by the error message.
    fn child_ended(&mut self, ctx: &mut HttpContext, produced: u64, follow_symlinks: bool) {
        let Some(child) = self.child.take() else {
            return;
        };
        // What is held now: the child's output on top of the page's, or,
        // when the child sent for itself (which takes everything held),
        // what it left.
        self.made = if ctx.response().bytes_sent() == child.sent_before {
            self.made
                .saturating_add(usize::try_from(produced).unwrap_or(usize::MAX))
        } else {
            usize::try_from(ctx.response().buffered_len()).unwrap_or(usize::MAX)
        };
        let status = ctx.child_status().map(|(s, _)| s);
        let succeeded = status.is_some_and(|s| s.is_success());
        if succeeded && matches!(child.purpose, ChildFor::Include) {
            return;
        }
        let response = ctx.response_mut();
        // What the child wrote, if it is all still here (a child that
        // streamed has had its output sent).
        if response.bytes_sent() == child.sent_before
            && response.entity_chunks().len() >= child.chunks_before
        {
            let kept = response.entity_chunks()[..child.chunks_before].to_vec();
            response.set_entity_chunks(kept);
        }
        let text = if !succeeded {
            let status = status.map_or_else(|| "no status".to_owned(), |s| s.as_u16().to_string());
            Err(format!(
                "`{}` answered {status}",
                crate::log_excerpt(&child.url)
            ))
        } else if let ChildFor::Describe { path, size } = &child.purpose {
            self.describe(ctx, path, *size, follow_symlinks)
        } else {
            return;
        };
        let text = text.unwrap_or_else(|why| {
            log_failure(ctx, "a directive", &why);
            self.errmsg.clone()
        });
        self.made += text.len();
        ctx.response_mut().write(text);
    }

    /// `#fsize` and `#flastmod`: the size or date of the file `path` maps
    /// to, not following links where StaticFile does not.
    fn describe(
        &self,
        ctx: &mut HttpContext,
        path: &str,
        size: bool,
        follow_symlinks: bool,
    ) -> Result<String, String> {
        let physical = ctx.map_path(path);
        let meta = if follow_symlinks {
            std::fs::metadata(&physical)
        } else {
            let root = ctx.virtual_directory_for_url(path).physical_path.clone();
            crate::static_file::open_without_symlinks(&root, &physical)
                .and_then(|file| file.metadata())
        }
        .map_err(|e| format!("`{}`: {e}", crate::log_excerpt(path)))?;
        if !meta.is_file() {
            return Err(format!("`{}` is not a file", crate::log_excerpt(path)));
        }
        if size {
            return Ok(format_size(meta.len(), self.sizefmt));
        }
        meta.modified()
            .ok()
            .and_then(|t| format_time(t, &self.timefmt, false))
            .map(|t| escape_html(&t))
            .ok_or_else(|| "the file's date cannot be written".to_owned())
    }

    /// `#echo`: the variable's value, encoded.
    fn echo(&self, ctx: &HttpContext, params: &[(String, String)]) -> Result<String, String> {
        let mut encoding = "entity".to_owned();
        let mut out = String::new();
        let mut echoed = false;
        for (key, value) in params {
            match key.as_str() {
                "encoding" => {
                    let lower = value.to_ascii_lowercase();
                    if !matches!(lower.as_str(), "entity" | "none" | "url") {
                        return Err(format!(
                            "`encoding` is `entity`, `none` or `url`, not `{value}`"
                        ));
                    }
                    encoding = lower;
                }
                "var" => {
                    let text = self.variable(ctx, value);
                    match encoding.as_str() {
                        "none" => out.push_str(&text),
                        "url" => out.extend(percent_encoding::utf8_percent_encode(
                            &text,
                            percent_encoding::NON_ALPHANUMERIC,
                        )),
                        _ => out.push_str(&escape_html(&text)),
                    }
                    echoed = true;
                }
                _ => return Err(format!("`#echo` takes `var` and `encoding`, not `{key}`")),
            }
        }
        if !echoed {
            return Err("`#echo` names no `var`".into());
        }
        Ok(out)
    }

    /// A variable `#echo` shows: SSI's own, then the server variables.
    fn variable(&self, ctx: &HttpContext, name: &str) -> String {
        const NONE: &str = "(none)";
        let time = |t: Option<SystemTime>, utc: bool| {
            t.and_then(|t| format_time(t, &self.timefmt, utc))
                .unwrap_or_else(|| NONE.to_owned())
        };
        let scope = &self.joined.scope;
        let name = name.to_ascii_uppercase();
        match name.as_str() {
            "DOCUMENT_NAME" => {
                let url = &scope.document_uri;
                url[url.rfind('/').map_or(0, |i| i + 1)..].to_owned()
            }
            "DOCUMENT_URI" => scope.document_uri.clone(),
            "QUERY_STRING_UNESCAPED" => {
                percent_encoding::percent_decode_str(ctx.request().query_string())
                    .decode_utf8_lossy()
                    .into_owned()
            }
            "DATE_LOCAL" => time(Some(SystemTime::now()), false),
            "DATE_GMT" => time(Some(SystemTime::now()), true),
            "LAST_MODIFIED" => time(scope.document_modified, false),
            _ if is_withheld(&name) => NONE.to_owned(),
            _ => ctx
                .server_variable(&name)
                .map_or_else(|| NONE.to_owned(), |v| v.into_owned()),
        }
    }

    /// `#config`: changes the settings for the rest of the page.
    fn config(&mut self, params: &[(String, String)]) -> Result<(), String> {
        if params.is_empty() {
            return Err("`#config` names no setting".into());
        }
        for (key, value) in params {
            match key.as_str() {
                "errmsg" => {
                    if value.len() > MAX_ERRMSG {
                        return Err(format!("`errmsg` is longer than {MAX_ERRMSG} bytes"));
                    }
                    self.errmsg = value.clone();
                }
                "timefmt" => {
                    if format_time(SystemTime::UNIX_EPOCH, value, true).is_none() {
                        return Err("`timefmt` has a field strftime does not know".into());
                    }
                    self.timefmt = value.clone();
                }
                "sizefmt" => {
                    self.sizefmt = match value.to_ascii_lowercase().as_str() {
                        "bytes" => SizeFormat::Bytes,
                        "abbrev" => SizeFormat::Abbrev,
                        _ => return Err("`sizefmt` is `bytes` or `abbrev`".into()),
                    };
                }
                _ => {
                    return Err(format!(
                        "`#config` takes `errmsg`, `timefmt` and `sizefmt`, not `{key}`"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Logs why a directive or a page failed, at most one line a second, on
/// one line however the page wrote it.
fn log_failure(ctx: &HttpContext, what: &str, why: &str) {
    static FAILURES: crate::LogGate = crate::LogGate::new();
    if let Some(held_back) = FAILURES.pass() {
        let why = why.escape_debug().to_string();
        tracing::warn!(
            url = %crate::log_excerpt(ctx.request().url()),
            reason = %crate::log_excerpt(&why),
            held_back,
            "ServerSideInclude: {what} failed"
        );
    }
}

impl HttpModule for ServerSideInclude {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let static_file = ctx.config(self.static_file);
        if !static_file.allow_hidden && crate::static_file::is_hidden(ctx.request().url()) {
            // StaticFile's hidden namespace.
            return crate::end_with_error(ctx, StatusCode::NOT_FOUND, 8, 0x8007_0002);
        }
        let method = ctx.request().method();
        if *method != Method::GET && *method != Method::HEAD && *method != Method::POST {
            let code = crate::end_with_error(
                ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                0,
                ModuleError::E_NOT_SUPPORTED,
            );
            ctx.response_mut()
                .set_header(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return code;
        }
        let info = match ctx.resource_info() {
            Some(info) => info,
            None if ctx.is_resource_denied() => {
                return crate::end_with_error(ctx, StatusCode::FORBIDDEN, 0, 0x8007_0005)
            }
            None => return crate::end_with_error(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
        };
        if info.kind == ResourceKind::Directory {
            // A folder is the next handler module's (or handler's).
            return RequestNotificationStatus::Continue;
        }
        if ctx.child_depth() > 0
            && *ctx.request().method() == Method::HEAD
            && ctx.server_variable(DESCRIBE_VARIABLE).is_some()
        {
            // A page's `#fsize` asks whether the client may fetch this one:
            // it may.
            ctx.set_request_handled();
            return RequestNotificationStatus::Continue;
        }
        let joined = match Joined::join(ctx.request_id(), ctx.request().url(), info.modified) {
            Ok(joined) => joined,
            Err((joined, why)) => {
                // Only a child request can get here; its parent writes the
                // error message.
                log_failure(ctx, "a page", &why);
                drop(joined);
                return crate::end_with_error(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    ModuleError::E_FAIL,
                );
            }
        };
        let source = match self.read_page(ctx) {
            Ok(source) => source,
            Err(code) => return code,
        };
        // What the page includes may be this client's alone.
        ctx.disable_user_cache();
        let response = ctx.response_mut();
        // A page run as an error page (CustomError's ExecuteURL) starts
        // from the error's status.
        response.set_status(StatusCode::OK, "OK");
        response.set_header(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        self.page = Some(Page {
            source,
            at: 0,
            errmsg: DEFAULT_ERRMSG.to_owned(),
            timefmt: DEFAULT_TIMEFMT.to_owned(),
            sizefmt: SizeFormat::Abbrev,
            joined,
            child: None,
            made: 0,
        });
        self.run(ctx)
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        let follow_symlinks = ctx.config(self.static_file).follow_symlinks;
        if let Some(page) = self.page.as_mut() {
            page.child_ended(ctx, completion.bytes, follow_symlinks);
        }
        self.run(ctx)
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<ServerSideIncludeConfig>("server_side_include")?;
    let static_file = registration.share_section::<StaticFileConfig>("static_file")?;
    registration.set_request_notifications(
        move || ServerSideInclude {
            config,
            static_file,
            page: None,
        },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of `page`, in order.
    fn parse(page: &[u8]) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut at = 0;
        while let Some((part, next)) = next_part(page, at) {
            parts.push(part);
            at = next;
        }
        parts
    }

    fn directive(name: &str, params: &[(&str, &str)]) -> Part {
        Part::Directive {
            name: name.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn pages_split_into_text_and_directives() {
        let page =
            b"a<!--#include file=\"x.inc\"-->b<!-- #ECHO VAR = 'DATE_LOCAL' -->c<!-- plain -->d";
        assert_eq!(
            parse(page),
            vec![
                Part::Text(0..1),
                directive("include", &[("file", "x.inc")]),
                Part::Text(29..30),
                directive("echo", &[("var", "DATE_LOCAL")]),
                Part::Text(63..79),
            ]
        );
        assert_eq!(&page[63..79], b"c<!-- plain -->d");
        // Bare values, several keys, a directive at the very end.
        assert_eq!(
            parse(b"<!--#config timefmt=%Y sizefmt=bytes-->"),
            vec![directive(
                "config",
                &[("timefmt", "%Y"), ("sizefmt", "bytes")]
            )]
        );
        // No closing `-->`: text, not a directive.
        assert_eq!(parse(b"x<!--#include file=\"a\""), vec![Part::Text(0..22)]);
        assert_eq!(
            parse(b"<!--#include file=\"a-->"),
            vec![Part::Malformed("a value without its closing quote")]
        );
        assert_eq!(
            parse(b"<!--#include file-->"),
            vec![Part::Malformed("a key without `=` and a value")]
        );
        // A space before `#` only for the directives riis knows: other
        // comments stay comments.
        assert_eq!(
            parse(b"<!-- #region nav --><!-- #Include file=a -->"),
            vec![Part::Text(0..20), directive("include", &[("file", "a")])]
        );
        assert_eq!(
            parse(b"<!--# -->"),
            vec![Part::Malformed(
                "a directive starts with its name (`<!--#include …`)"
            )]
        );
    }

    #[test]
    fn targets_stay_in_the_site_and_file_in_the_folder() {
        let page = "/docs/a/page.shtml";
        assert_eq!(
            target(page, "file", "inc/head.html"),
            Ok(("/docs/a/inc/head.html".into(), None))
        );
        assert!(target(page, "file", "../head.html").is_err());
        assert!(target(page, "file", "/head.html").is_err());
        assert!(target(page, "file", "a\\b").is_err());
        assert!(target(page, "file", "").is_err());
        assert_eq!(
            target(page, "virtual", "/cgi-bin/x.cgi?a+b c"),
            Ok(("/cgi-bin/x.cgi".into(), Some("a+b c".into())))
        );
        assert_eq!(
            target(page, "virtual", "../b/./%41.html"),
            Ok(("/docs/b/A.html".into(), None))
        );
        assert_eq!(
            target(page, "virtual", "sub/"),
            Ok(("/docs/a/sub/".into(), None))
        );
        assert!(target(page, "virtual", "../../../x").is_err());
        assert!(target(page, "virtual", "/%ff").is_err());
        assert!(target(page, "name", "x").is_err());
    }

    #[test]
    fn credentials_are_withheld_however_they_are_spelt() {
        for name in [
            "HTTP_AUTHORIZATION",
            "HTTP_PROXY-AUTHORIZATION",
            "HEADER_AUTHORIZATION",
            "HEADER_PROXY-AUTHORIZATION",
            "ALL_RAW",
            "AUTH_PASSWORD",
        ] {
            assert!(is_withheld(name), "{name}");
        }
        for name in ["HTTP_COOKIE", "AUTH_USER", "HTTP_USER_AGENT"] {
            assert!(!is_withheld(name), "{name}");
        }
    }

    #[test]
    fn sizes_are_written_as_bytes_or_abbreviated() {
        assert_eq!(format_size(0, SizeFormat::Bytes), "0");
        assert_eq!(format_size(999, SizeFormat::Bytes), "999");
        assert_eq!(format_size(1000, SizeFormat::Bytes), "1,000");
        assert_eq!(format_size(1_234_567, SizeFormat::Bytes), "1,234,567");
        assert_eq!(format_size(999, SizeFormat::Abbrev), "999");
        assert_eq!(format_size(1000, SizeFormat::Abbrev), "1.0K");
        assert_eq!(format_size(1024, SizeFormat::Abbrev), "1.0K");
        assert_eq!(format_size(1260, SizeFormat::Abbrev), "1.2K");
        assert_eq!(format_size(35 * 1024 * 1024, SizeFormat::Abbrev), "35M");
        assert_eq!(format_size(u64::MAX, SizeFormat::Abbrev), "16384P");
    }

    #[test]
    fn times_use_strftime_fields_and_refuse_unknown_ones() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 366);
        assert_eq!(
            format_time(t, DEFAULT_TIMEFMT, true).as_deref(),
            Some("Saturday, 02-Jan-1971 00:00:00 UTC")
        );
        assert_eq!(
            format_time(t, "%m/%d/%y", true).as_deref(),
            Some("01/02/71")
        );
        assert_eq!(format_time(t, "%Q", true), None);
        // Past what chrono holds: no date, not a panic.
        let far = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(99_999_999_999_999);
        assert_eq!(format_time(far, "%Y", false), None);
    }
}
