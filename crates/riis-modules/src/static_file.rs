//! `StaticFile`: serves files from the site's physical root.
//!
//! Registers for **ExecuteRequestHandler** only: it runs when a handler
//! mapping lists it (the default static handler does). For a file it answers
//! GET and HEAD with `Content-Type` by extension, `Content-Length`,
//! `Last-Modified` and a strong `ETag`; other methods get 405 with `Allow`.
//! A directory URL without its trailing slash is redirected (301) to the
//! slash form; a directory URL with it is left to the handler's next module
//! (DefaultDocument). A served file marks the request handled and returns
//! Continue, so ReleaseRequestState and UpdateRequestCache still run; errors
//! finish the request. Like IIS, it refuses extensions it has no MIME type
//! for with 404.3 unless the location sets `default_mime_type`.
//!
//! Configuration section `static_file`:
//! - `mime_types`: extra or overriding extension → type pairs (`{ "md" = "text/markdown" }`);
//! - `default_mime_type`: type for unknown extensions (unset: 404.3);
//! - `max_age`: when set, `Cache-Control: max-age=N` (seconds).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::UNIX_EPOCH;

use riis_pipeline::http::{header, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
    RequestNotificationStatus, RequestNotifications, ResourceKind, Section, ServerInfo,
};
use serde::Deserialize;

/// Files up to this size are read into memory in one call; larger ones are
/// handed to the server as a file range and streamed.
const READ_INTO_MEMORY_LIMIT: u64 = 64 * 1024;

/// The `static_file` configuration section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticFileConfig {
    /// Extension (without dot, any case) → MIME type, consulted first.
    pub mime_types: HashMap<String, String>,
    /// MIME type for extensions nobody knows; `None` refuses them with 404.3.
    pub default_mime_type: Option<String>,
    /// Seconds for `Cache-Control: max-age`.
    pub max_age: Option<u64>,
}

/// The module instance.
pub struct StaticFile {
    config: Section<StaticFileConfig>,
}

fn status(
    ctx: &mut HttpContext,
    code: StatusCode,
    substatus: u16,
    hresult: u32,
) -> RequestNotificationStatus {
    // Headers earlier modules set are kept; the entity is replaced.
    let resp = ctx.response_mut();
    resp.clear_entity();
    resp.set_error_status(
        code,
        code.canonical_reason().unwrap_or(""),
        substatus,
        hresult,
    );
    RequestNotificationStatus::FinishRequest
}

/// Content types of the extensions sites serve most, ready as header values,
/// so the common request needs neither a lookup in the full table nor an
/// allocation.
static COMMON_TYPES: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    [
        ("html", "text/html"),
        ("htm", "text/html"),
        ("css", "text/css"),
        ("js", "text/javascript"),
        ("mjs", "text/javascript"),
        ("json", "application/json"),
        ("map", "application/json"),
        ("txt", "text/plain"),
        ("xml", "text/xml"),
        ("csv", "text/csv"),
        ("md", "text/markdown"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
        ("ico", "image/x-icon"),
        ("woff", "font/woff"),
        ("woff2", "font/woff2"),
        ("ttf", "font/ttf"),
        ("otf", "font/otf"),
        ("wasm", "application/wasm"),
        ("pdf", "application/pdf"),
        ("zip", "application/zip"),
        ("gz", "application/gzip"),
        ("mp4", "video/mp4"),
        ("webm", "video/webm"),
        ("mp3", "audio/mpeg"),
        ("ogg", "audio/ogg"),
    ]
    .into_iter()
    .map(|(ext, t)| (ext, HeaderValue::from_static(t)))
    .collect()
});

impl StaticFile {
    /// The Content-Type for `path`: the location's own map, the common
    /// table, the full table, then the location's default.
    fn content_type(&self, ctx: &HttpContext, path: &Path) -> Option<HeaderValue> {
        let config = ctx.config(self.config);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !config.mime_types.is_empty() {
            if let Some((_, t)) = config
                .mime_types
                .iter()
                .find(|(k, _)| k.trim_start_matches('.').eq_ignore_ascii_case(ext))
            {
                return HeaderValue::try_from(t.as_str()).ok();
            }
        }
        if ext.is_empty() {
            return config
                .default_mime_type
                .as_deref()
                .and_then(|t| HeaderValue::try_from(t).ok());
        }
        if let Some(t) = COMMON_TYPES.get(ext) {
            return Some(t.clone());
        }
        if let Some(t) = COMMON_TYPES.get(ext.to_ascii_lowercase().as_str()) {
            return Some(t.clone());
        }
        mime_guess::from_ext(ext)
            .first_raw()
            .map(HeaderValue::from_static)
            .or_else(|| {
                config
                    .default_mime_type
                    .as_deref()
                    .and_then(|t| HeaderValue::try_from(t).ok())
            })
    }
}

impl HttpModule for StaticFile {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let method = ctx.request().method().clone();
        if method != Method::GET && method != Method::HEAD {
            let code = status(
                ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                0,
                ModuleError::E_NOT_SUPPORTED,
            );
            ctx.response_mut()
                .set_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return code;
        }
        // The engine probed the path while choosing the handler; no second stat.
        let info = match ctx.resource_info() {
            Some(info) => info,
            None => return status(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
        };
        if info.kind == ResourceKind::Directory {
            if ctx.request().url().ends_with('/') {
                // Left to the handler's next module (default document, listing).
                return RequestNotificationStatus::Continue;
            }
            let mut location = ctx.request().uri().path().to_owned();
            location.push('/');
            if let Some(q) = ctx.request().uri().query() {
                location.push('?');
                location.push_str(q);
            }
            let resp = ctx.response_mut();
            if resp
                .redirect(&location, StatusCode::MOVED_PERMANENTLY)
                .is_err()
            {
                return status(ctx, StatusCode::BAD_REQUEST, 0, ModuleError::E_INVALIDARG);
            }
            return RequestNotificationStatus::FinishRequest;
        }
        let path = ctx.mapped_path().unwrap_or(Path::new(""));
        let Some(content_type) = self.content_type(ctx, path) else {
            return status(ctx, StatusCode::NOT_FOUND, 3, 0x8007_0032);
        };
        let (len, modified) = (info.len, info.modified);
        let max_age = ctx.config(self.config).max_age;

        let resp = ctx.response_mut();
        resp.clear_entity();
        resp.set_status(StatusCode::OK, "OK");
        resp.set_header(header::CONTENT_TYPE, content_type);
        if let Some(m) = modified {
            if let Ok(v) = HeaderValue::try_from(httpdate::fmt_http_date(m)) {
                resp.set_header(header::LAST_MODIFIED, v);
            }
            let nanos = m
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            if let Ok(v) = HeaderValue::try_from(format!("\"{nanos:x}-{len:x}\"")) {
                resp.set_header(header::ETAG, v);
            }
        }
        if let Some(age) = max_age {
            if let Ok(v) = HeaderValue::try_from(format!("max-age={age}")) {
                resp.set_header(header::CACHE_CONTROL, v);
            }
        }
        if method == Method::HEAD {
            resp.set_header(header::CONTENT_LENGTH, HeaderValue::from(len));
            ctx.set_request_handled();
            return RequestNotificationStatus::Continue;
        }
        if let Some(content) = ctx.take_cached_content() {
            // The server's file cache already holds this version of the file.
            ctx.response_mut().write(content);
            ctx.set_request_handled();
            return RequestNotificationStatus::Continue;
        }
        let opened = match ctx.take_opened_file() {
            Some(f) => Ok(f),
            // Another module took the probe's descriptor: open the path again.
            None => File::open(ctx.physical_path()),
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return status(ctx, StatusCode::FORBIDDEN, 0, 0x8007_0005)
            }
            Err(_) => return status(ctx, StatusCode::NOT_FOUND, 0, 0x8007_0002),
        };
        if len <= READ_INTO_MEMORY_LIMIT {
            // One positioned read of the length the probe saw: no seek, no
            // extra read to find the end.
            let mut data = vec![0; len as usize];
            if file.read_exact_at(&mut data, 0).is_err() {
                return status(
                    ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    ModuleError::E_FAIL,
                );
            }
            ctx.response_mut().write(data);
        } else {
            ctx.response_mut().write_file_range(Arc::new(file), 0, len);
        }
        // Handled: the static handler's next modules do not run, but the rest
        // of the pipeline (caching, logging) does.
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
    let config = registration.declare_section::<StaticFileConfig>("static_file")?;
    registration.set_request_notifications(
        move || StaticFile { config },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}
