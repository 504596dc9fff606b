//! `StaticCompression`: serves compressed copies of static files, made once
//! and kept on disk.
//!
//! Registers for **SendResponse** (LOW priority, so in SendResponse's
//! inverted order it runs before DynamicCompression and leaves it nothing to
//! do). On the final send of a whole static file (a 200 for a file the
//! engine probed, sent in one piece, with the file's ETag), it picks brotli,
//! zstd or gzip from `Accept-Encoding` and replaces the body with the compressed
//! copy. Copies live in `directory`, named by a hash of the file's path,
//! length and modification time and the coding, so a changed file gets
//! a new copy and the old one is never served again; they are written once
//! (to a temporary name, then renamed) and kept in memory for files that fit
//! the server's file cache size limit.
//!
//! Never encoded: files under `min_size` (2,700 bytes) or over `max_size`
//! (4 MiB: a copy is made while the first request waits), types not listed,
//! ranges, HEAD, and responses that already have a `Content-Encoding`.
//! Compressible files always get `Vary: Accept-Encoding`; encoded ones a
//! weak ETag.
//!
//! Configuration section `static_compression`:
//! - `enabled` (default true);
//! - `mime_types` (default: `text/*`, JSON, JavaScript, XML, SVG, WASM …);
//! - `min_size` (2700) and `max_size` (4194304);
//! - `directory` (default: `riis-compressed` under the system temp dir);
//! - `gzip_level` (9), `brotli_quality` (9) and `zstd_level` (19, the
//!   highest whose window browsers accept): paid once per file.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use riis_pipeline::http::{header, Method, StatusCode};
use riis_pipeline::{
    EntityChunk, HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ResourceInfo,
    ResourceKind, Section, SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

use crate::content_encoding::{self, Coding};

/// The `static_compression` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticCompressionConfig {
    /// Whether static files are served compressed.
    pub enabled: bool,
    /// MIME types to compress (`type/*` matches a whole type).
    pub mime_types: Vec<String>,
    /// Smallest file compressed.
    pub min_size: u64,
    /// Largest file compressed.
    pub max_size: u64,
    /// Where compressed copies are kept; empty for the default.
    pub directory: PathBuf,
    /// gzip level, 0–9.
    pub gzip_level: u32,
    /// brotli quality, 0–11.
    pub brotli_quality: u32,
    /// zstd level, 1–19.
    pub zstd_level: u32,
}

impl Default for StaticCompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mime_types: content_encoding::default_types(),
            min_size: 2700,
            max_size: 4 * 1024 * 1024,
            directory: PathBuf::new(),
            gzip_level: 9,
            brotli_quality: 9,
            zstd_level: content_encoding::ZSTD_MAX_LEVEL,
        }
    }
}

/// Copies held in memory, by the name of their file on disk, and their total
/// size; shared by every request (the module's factory holds it).
#[derive(Default)]
struct Copies {
    memory: Mutex<(HashMap<PathBuf, Bytes>, usize)>,
}

/// Compressed copies larger than this are read from disk per request rather
/// than kept in memory.
const MEMORY_COPY_LIMIT: usize = 256 * 1024;

/// Memory all in-memory copies may take together; past it, copies are read
/// from disk.
const MEMORY_TOTAL_LIMIT: usize = 64 * 1024 * 1024;

/// The module instance.
pub struct StaticCompression {
    config: Section<StaticCompressionConfig>,
    copies: Arc<Copies>,
}

fn default_directory() -> PathBuf {
    std::env::temp_dir().join("riis-compressed")
}

impl StaticCompression {
    /// The file name of the copy of `path` as the engine saw it (length and
    /// modification time) in `coding`.
    fn copy_name(dir: &Path, path: &Path, info: &ResourceInfo, coding: Coding) -> Option<PathBuf> {
        let mtime = info.modified?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        // SipHash with fixed keys: names stay the same across restarts.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(path.as_os_str().as_encoded_bytes());
        h.write_u64(info.len);
        h.write_u128(mtime);
        Some(dir.join(format!("{:016x}.{}", h.finish(), coding.suffix())))
    }

    /// The compressed copy, made now from `source()` if there is none (the
    /// file's bytes are gathered only then: a request served from a copy
    /// reads nothing of the file).
    fn copy(
        &self,
        name: &Path,
        source: impl FnOnce() -> Option<Vec<u8>>,
        coding: Coding,
        level: u32,
    ) -> Option<Bytes> {
        if let Some(b) = self.copies.memory.lock().ok()?.0.get(name) {
            return Some(b.clone());
        }
        let data = match std::fs::read(name) {
            Ok(d) => d,
            Err(_) => {
                let data = coding.compress(&source()?, level);
                let dir = name.parent()?;
                std::fs::create_dir_all(dir).ok()?;
                let tmp = dir.join(format!(
                    ".{}.{}.tmp",
                    name.file_name()?.to_string_lossy(),
                    std::process::id()
                ));
                std::fs::write(&tmp, &data).ok()?;
                std::fs::rename(&tmp, name).ok()?;
                data
            }
        };
        let data = Bytes::from(data);
        if data.len() <= MEMORY_COPY_LIMIT {
            if let Ok(mut memory) = self.copies.memory.lock() {
                if memory.1 + data.len() <= MEMORY_TOTAL_LIMIT
                    && memory.0.insert(name.to_owned(), data.clone()).is_none()
                {
                    memory.1 += data.len();
                }
            }
        }
        Some(data)
    }

    /// The whole file body, if the response is exactly the probed file.
    fn file_body(ctx: &HttpContext, len: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let chunks = ctx.response().entity_chunks();
        if ctx.response().buffered_len() != len {
            return None;
        }
        let mut out = Vec::with_capacity(len as usize);
        for chunk in chunks {
            match chunk {
                EntityChunk::Memory(b) => out.extend_from_slice(b),
                EntityChunk::File {
                    file,
                    offset,
                    length,
                } => {
                    let start = out.len();
                    out.resize(start + *length as usize, 0);
                    file.read_exact_at(&mut out[start..], *offset).ok()?;
                }
            }
        }
        Some(out)
    }
}

impl HttpModule for StaticCompression {
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        if !config.enabled
            || !provider.headers_being_sent()
            || !provider.is_final_send()
            || ctx.request().method() != Method::GET
            || ctx.response().status() != StatusCode::OK
            || !ctx.response().headers().contains_key(header::ETAG)
        {
            return RequestNotificationStatus::Continue;
        }
        let Some(info) = ctx.resource_info() else {
            return RequestNotificationStatus::Continue;
        };
        let config = ctx.config(self.config);
        let response = ctx.response();
        if info.kind != ResourceKind::File
            || info.len < config.min_size
            || info.len > config.max_size
            || !content_encoding::compressible_response(response.status(), response.headers())
            || !content_encoding::type_listed(
                response.header(header::CONTENT_TYPE),
                &config.mime_types,
            )
        {
            return RequestNotificationStatus::Continue;
        }
        let coding = content_encoding::negotiate(ctx.request().headers());
        content_encoding::add_vary(ctx.response_mut().headers_mut());
        let Some(coding) = coding else {
            return RequestNotificationStatus::Continue;
        };
        let config = ctx.config(self.config);
        let level = match coding {
            Coding::Gzip => config.gzip_level,
            Coding::Brotli => config.brotli_quality,
            Coding::Zstd => config.zstd_level,
        };
        let dir = if config.directory.as_os_str().is_empty() {
            default_directory()
        } else {
            config.directory.clone()
        };
        let Some(path) = ctx.mapped_path().map(Path::to_path_buf) else {
            return RequestNotificationStatus::Continue;
        };
        let Some(name) = Self::copy_name(&dir, &path, &info, coding) else {
            return RequestNotificationStatus::Continue;
        };
        if ctx.response().buffered_len() != info.len {
            // Not exactly the probed file (a range, a rewritten body).
            return RequestNotificationStatus::Continue;
        }
        let source = || Self::file_body(ctx, info.len);
        match self.copy(&name, source, coding, level) {
            Some(compressed) => {
                let response = ctx.response_mut();
                content_encoding::mark_encoded(response.headers_mut(), coding);
                response.set_entity_chunks(vec![EntityChunk::Memory(compressed)]);
            }
            None => tracing::warn!(
                copy = %name.display(),
                "StaticCompression: no compressed copy (the file or the copy could not be read or written); sending the file as it is"
            ),
        }
        RequestNotificationStatus::Continue
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<StaticCompressionConfig>("static_compression")?;
    let copies = Arc::new(Copies::default());
    registration.set_request_notifications(
        move || StaticCompression {
            config,
            copies: copies.clone(),
        },
        RequestNotification::SendResponse.into(),
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::Low);
    Ok(())
}
