//! `DefaultDocument`: answers a directory URL with the first default document
//! that exists there, through a child request, as IIS does.
//!
//! Registers for **ExecuteRequestHandler** only (it is a module of the static
//! handler, after StaticFile). For a URL that ends in `/` and maps to a
//! directory, it executes the first existing file of the list as a child
//! request whose response is buffered into this one (so a small one gets
//! its `Content-Length`; an application's answer that streams, or grows
//! past the server's `response_buffer_limit`, goes out as it comes, as at
//! its own URL: `ExecuteFlags::stream_past_buffer_limit`), and returns Pending; the
//! child's end comes back through OnAsyncCompletion. When no document exists
//! it leaves the response alone for the handler's next module. A folder's
//! URL without its trailing slash gets the courtesy redirect (301), which
//! StaticFile gives first when the handler lists it.
//!
//! StaticFile serves the document it picks, so it reads StaticFile's
//! section too (`share_section`): with
//! `static_file.follow_symlinks = false` a default document that is a
//! symbolic link is passed over, as nginx's `index` does under
//! `disable_symlinks`, instead of being chosen and then refused with 404.
//! A document the server may not read is passed over the same way, and so
//! is a name starting with `.` while `static_file.allow_hidden` is false
//! (StaticFile would answer 404.8). Entries of `files` are file names:
//! one with a `/`, or `.` / `..`, is a configuration error.
//!
//! A request with a body (a form that posts to `./`, to `/?task=login`)
//! has it read whole first and handed to the child (`insert_entity_body`),
//! as IIS's document gets the post: at most 30,000,000 bytes (IIS's
//! `maxAllowedContentLength`; RequestFiltering, when listed, may refuse
//! less), 413 past it. StaticFile leaves a folder's other methods to this
//! module rather than answering 405.
//!
//! The child request's `REQUEST_URI` server variable stays the URL the
//! client asked for (`/blog/`, not `/blog/index.php`), as nginx's `index`
//! passes it to applications (the engine keeps it across child requests).
//!
//! Configuration section `default_document`:
//! - `enabled` (default true);
//! - `files` (default `index.html`, `index.htm`, `default.htm`,
//!   `default.html`, `iisstart.htm`).

use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletionInfo, ExecuteFlags, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ResourceKind, Section,
    ServerInfo,
};

/// The most of a request body read for the document (IIS's default
/// `maxAllowedContentLength`).
const MAX_BODY: usize = 30_000_000;

/// Bytes asked for by each body read.
const READ_SIZE: usize = 64 * 1024;
use serde::Deserialize;

use crate::static_file::StaticFileConfig;

/// The `default_document` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultDocumentConfig {
    /// Whether default documents are served.
    pub enabled: bool,
    /// File names tried in order: names in the folder, not paths.
    #[serde(deserialize_with = "document_names")]
    pub files: Vec<String>,
}

/// `files`: each a file name in the folder; an empty name, a path (`/`)
/// or `.` / `..` could only ever fail, or name a file elsewhere.
fn document_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.contains('/') || *n == "." || *n == ".." || n.contains('\0'))
    {
        return Err(serde::de::Error::custom(format!(
            "`{}` is not a file name (default documents are names in the folder, without `/`)",
            bad.escape_debug()
        )));
    }
    Ok(names)
}

impl Default for DefaultDocumentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            files: [
                "index.html",
                "index.htm",
                "default.htm",
                "default.html",
                "iisstart.htm",
            ]
            .map(String::from)
            .into(),
        }
    }
}

/// The module instance.
pub struct DefaultDocument {
    config: Section<DefaultDocumentConfig>,
    static_file: Section<StaticFileConfig>,
    /// While the request's body is read for the document: the document's
    /// URL, and the body so far.
    reading: Option<(String, Vec<Bytes>, usize)>,
}

impl HttpModule for DefaultDocument {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let enabled = ctx.config(self.config).enabled;
        // In a handler without StaticFile, the courtesy redirect is ours.
        if enabled && crate::needs_trailing_slash(ctx) {
            return crate::add_trailing_slash(ctx);
        }
        if !enabled
            || !ctx.request().url().ends_with('/')
            || ctx.resource_kind() != Some(ResourceKind::Directory)
        {
            return RequestNotificationStatus::Continue;
        }
        let dir = ctx.physical_path().to_path_buf();
        // StaticFile has walked the folder itself without links already.
        // A name StaticFile would refuse as hidden (`.index.html` while
        // `allow_hidden = false`) is passed over for the next one.
        let static_file = ctx.config(self.static_file);
        let (follow_symlinks, allow_hidden) =
            (static_file.follow_symlinks, static_file.allow_hidden);
        let is_document = |name: &String| {
            (allow_hidden || !name.starts_with('.'))
                && openable_file(&dir.join(name), follow_symlinks)
        };
        let Some(file) = ctx
            .config(self.config)
            .files
            .iter()
            .find(|f| is_document(f))
            .cloned()
        else {
            return RequestNotificationStatus::Continue;
        };
        // From the decoded path (`/dir/.` is `/dir/`), with the file name
        // escaped as a URL wants it (`100%.html`, `home page.html`).
        let mut url = crate::canonical_url_path(ctx.request().url());
        url.extend(percent_encoding::utf8_percent_encode(
            &file,
            crate::URL_PATH,
        ));
        if let Some(q) = ctx.request().uri().query() {
            url.push('?');
            url.push_str(q);
        }
        if !ctx.request().is_body_complete() {
            // A post to the folder: the document gets its body.
            self.reading = Some((url, Vec::new(), 0));
            return read_more(ctx);
        }
        start_child(ctx, &url, Vec::new())
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        _completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        if let Some((_, pieces, length)) = &mut self.reading {
            let piece = ctx.request_mut().take_read_data();
            *length += piece.len();
            if *length > MAX_BODY {
                self.reading = None;
                ctx.response_mut().set_error_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                    0,
                    ModuleError::E_INVALIDARG,
                );
                ctx.response_mut().set_need_disconnect();
                ctx.set_request_handled();
                return RequestNotificationStatus::FinishRequest;
            }
            if !piece.is_empty() {
                pieces.push(piece);
            }
            if !ctx.request().is_body_complete() {
                return read_more(ctx);
            }
            let (url, pieces, _) = self.reading.take().expect("reading");
            return start_child(ctx, &url, pieces);
        }
        // The child produced the response; the handler is done.
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

/// Asks for the next piece of the request's body.
fn read_more(ctx: &mut HttpContext) -> RequestNotificationStatus {
    match ctx.read_entity_body(READ_SIZE) {
        Ok(()) => RequestNotificationStatus::Pending,
        Err(e) => {
            ctx.response_mut().set_error_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                0,
                e.hresult,
            );
            RequestNotificationStatus::FinishRequest
        }
    }
}

/// Runs the document at `url` in the request's place, with `body` as its
/// request body.
fn start_child(ctx: &mut HttpContext, url: &str, body: Vec<Bytes>) -> RequestNotificationStatus {
    let started = ctx.clone_context_with_url(url).and_then(|mut child| {
        for piece in body {
            child.request_mut().insert_entity_body(piece);
        }
        crate::internal_redirect::pass_on(ctx, &mut child);
        ctx.execute_request(
            child,
            ExecuteFlags {
                buffer_response: true,
                // A document an application answers at length (an
                // export at `/reports/`) goes out as it comes.
                stream_past_buffer_limit: true,
                ..ExecuteFlags::default()
            },
        )
    });
    match started {
        Ok(()) => RequestNotificationStatus::Pending,
        Err(e) => {
            // At the nesting cap every level of a page refuses one (a
            // looped include: 67 lines for one request in review J):
            // one line a second.
            static REFUSED_LOG: crate::LogGate = crate::LogGate::new();
            if let Some(held_back) = REFUSED_LOG.pass() {
                tracing::warn!(error = %e, url = %crate::log_excerpt(url), held_back, "default document child request refused");
            }
            RequestNotificationStatus::Continue
        }
    }
}

/// Whether `path` is a regular file the server may open for reading (one
/// it may not read, or a link where links are not followed, is passed over
/// for the next name, as nginx's `index` does, rather than chosen and
/// refused). Opened non-blocking: a FIFO swapped in must not stall the
/// worker.
fn openable_file(path: &std::path::Path, follow_symlinks: bool) -> bool {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = OFlag::O_NONBLOCK;
    if !follow_symlinks {
        flags |= OFlag::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .and_then(|file| file.metadata())
        .is_ok_and(|meta| meta.is_file())
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<DefaultDocumentConfig>("default_document")?;
    let static_file = registration.share_section::<StaticFileConfig>("static_file")?;
    registration.set_request_notifications(
        move || DefaultDocument {
            config,
            static_file,
            reading: None,
        },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}
