//! `DynamicCompression`: compresses generated responses as they are sent.
//!
//! Registers for **SendResponse** only (MEDIUM priority; StaticCompression,
//! at LOW, runs before it in SendResponse's inverted order, so a static file
//! it already encoded is left alone). On the send that carries the headers
//! it decides, from the client's `Accept-Encoding` (q-values honoured), the
//! response's type and, for a response sent in one piece, its size, whether
//! to encode with brotli, zstd or gzip; every later send of the same response goes
//! through the same encoder, and the final send closes the stream, so a
//! flushed response is compressed while it streams. A large entity is
//! encoded 64 KiB at a time, the rest deferred to later sends
//! (`SendResponseProvider::defer_after`), so that the encoded bytes are made
//! as the client takes them rather than held whole for a slow client.
//!
//! Never encoded: errors and other non-2xx statuses, 206 ranges, 204, HEAD,
//! bodies that already have a `Content-Encoding`, `Cache-Control:
//! no-transform`, bodies known to be smaller than `min_size` (2,700
//! bytes, IIS's threshold), responses whose first send carries more than
//! 4 MiB of file ranges (a large file is StaticCompression's business, or
//! none: encoding it here would cost its CPU on every request), and
//! the sends of child requests (a child buffered
//! into its parent, or without headers, is encoded with the parent's
//! response, even when it streams past the buffer, as a folder's default
//! document may: the engine raises the parent's SendResponse modules for
//! its sends; a direct child's own sends go as they are). A compressible response gets `Vary:
//! Accept-Encoding` whether or not this client is sent an encoded body (a
//! HEAD too), and an encoded one gets a weak ETag. A HEAD whose GET would
//! be encoded gets the GET's fields without a `Content-Length` (see
//! `choose`). A 304 for a URL of a
//! listed type (by extension) gets `Vary`, and the weak ETag when the
//! client would have been sent an encoding, as its 200 would; a 206 gets
//! the `Vary` its 200 would. File ranges written after the encoding
//! started are read in 64 KiB blocks; if one cannot be read, the response
//! is cut short rather than sent with a hole.
//!
//! Configuration section `dynamic_compression`:
//! - `enabled` (default true);
//! - `mime_types` (default: `text/*`, JSON, JavaScript, XML, SVG, WASM …);
//! - `min_size` (default 2700);
//! - `gzip_level` (default 4), `brotli_quality` (default 4) and `zstd_level`
//!   (default 3): fast levels, since this work is done for every response.

use bytes::Bytes;
use riis_pipeline::http::{header, Method, StatusCode};
use riis_pipeline::{
    EntityChunk, HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ResourceKind, Section,
    SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

use crate::content_encoding::{self, Coding, Encoder};

/// The `dynamic_compression` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicCompressionConfig {
    /// Whether generated responses are compressed here.
    pub enabled: bool,
    /// MIME types to compress (`type/*` matches a whole type).
    #[serde(deserialize_with = "content_encoding::mime_type_list")]
    pub mime_types: Vec<String>,
    /// Smallest body compressed, when its size is known.
    pub min_size: u64,
    /// gzip level, 0–9.
    #[serde(deserialize_with = "content_encoding::gzip_level")]
    pub gzip_level: u32,
    /// brotli quality, 0–11.
    #[serde(deserialize_with = "content_encoding::brotli_quality")]
    pub brotli_quality: u32,
    /// zstd level, 1–19.
    #[serde(deserialize_with = "content_encoding::zstd_level")]
    pub zstd_level: u32,
}

impl Default for DynamicCompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mime_types: content_encoding::default_types(),
            min_size: 2700,
            gzip_level: 4,
            brotli_quality: 4,
            zstd_level: 3,
        }
    }
}

/// The module instance: the encoder of this response, once chosen.
pub struct DynamicCompression {
    config: Section<DynamicCompressionConfig>,
    encoder: Option<Encoder>,
}

/// The most file-range bytes a response may start with and be encoded.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Feeds the buffered entity to `encoder`: memory as it is, file ranges a
/// block at a time (so a large range never sits in memory whole).
fn encode_entity(encoder: &mut Encoder, chunks: &[EntityChunk]) -> std::io::Result<()> {
    crate::read_entity(chunks, |block| encoder.write(block))
}

impl DynamicCompression {
    /// Chooses the coding on the first send, or `None` to leave the
    /// response alone.
    fn choose(&self, ctx: &mut HttpContext, provider: &SendResponseProvider) -> Option<Coding> {
        let config = ctx.config(self.config);
        if !config.enabled || ctx.child_depth() > 0 {
            return None;
        }
        let response = ctx.response();
        let file_bytes: u64 = response
            .entity_chunks()
            .iter()
            .map(|c| match c {
                EntityChunk::File { length, .. } => *length,
                EntityChunk::Memory(_) => 0,
            })
            .sum();
        if file_bytes > MAX_FILE_BYTES {
            return None;
        }
        if !content_encoding::compressible_response(response.status(), response.headers())
            || !content_encoding::type_listed(
                response.header(header::CONTENT_TYPE),
                &config.mime_types,
            )
        {
            return None;
        }
        if ctx.request().method() == Method::HEAD {
            // No body to encode. A cache learns that the GET answer varies,
            // when it does (the length its GET would have is not under
            // `min_size`). When the GET would be encoded, the HEAD says so
            // (RFC 9110 §9.3.2: the fields GET would get) and carries no
            // `Content-Length`: the identity length is not what GET sends
            // (§8.6), and the encoded one is known only by encoding, which
            // §9.3.2 lets a HEAD leave out. nginx's gzip leaves HEAD alone.
            // The GET's length: announced, or the body a handler wrote for
            // the HEAD as for its GET (a listing, a page made in memory),
            // whole at the final send. Unknown (a program that sends no
            // body for HEAD, a stream), its GET may be small or streamed:
            // `Vary` only, and no coding the GET might not get.
            let announced = response
                .header(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .or_else(|| {
                    provider
                        .is_final_send()
                        .then(|| response.buffered_len())
                        .filter(|&len| len > 0)
                });
            let min_size = config.min_size;
            // (Past MAX_FILE_BYTES a file's GET goes as it is, without
            // `Vary`: the URL's file, as long as the length says; a body
            // made in memory is encoded whatever its length.)
            let large_file = |ctx: &mut HttpContext, len: u64| {
                len > MAX_FILE_BYTES
                    && ctx
                        .resource_info()
                        .is_some_and(|info| info.kind == ResourceKind::File && info.len == len)
            };
            let varies = match announced {
                Some(len) => len >= min_size && !large_file(ctx, len),
                None => true,
            };
            if varies {
                content_encoding::add_vary(ctx.response_mut().headers_mut());
            }
            let encoded_get = announced
                .filter(|&len| len >= min_size && !large_file(ctx, len))
                .and_then(|_| content_encoding::negotiate(ctx.request().headers()));
            if let Some(coding) = encoded_get {
                let response = ctx.response_mut();
                content_encoding::mark_encoded(response.headers_mut(), coding);
                // The identity body a handler made for the HEAD would give
                // it the identity length: it goes, as the length does.
                response.clear_entity();
            }
            return None;
        }
        let known_small = provider.is_final_send() && response.buffered_len() < config.min_size;
        if known_small {
            return None;
        }
        let coding = content_encoding::negotiate(ctx.request().headers());
        content_encoding::add_vary(ctx.response_mut().headers_mut());
        coding
    }
}

impl DynamicCompression {
    /// A 304 carries what its 200 would have (RFC 9110 §15.4.5). For a URL
    /// of a type this module encodes (by its extension: a 304 has no
    /// `Content-Type`), that is `Vary`, and, when the client would have
    /// got an encoding, the weak ETag; else a cache would give the encoded
    /// body it holds the strong ETag of the identity one, which `If-Range`
    /// would then splice identity bytes onto.
    ///
    /// Where neither tells (a folder's default document, a URL whose name
    /// has no extension of a listed type), what the client holds does: a
    /// weak form of the 304's strong ETag is one this module made, since it
    /// weakens the tag of what it encodes, so the 200 it revalidates was
    /// encoded.
    /// A range is never encoded, but its 206 carries the `Vary` its 200
    /// would (RFC 9110 §15.3.7): `Accept-Encoding` when this module would
    /// encode the whole answer, judged by its type (the URL's, for a
    /// multipart answer) and its length (`Content-Range`'s whole length,
    /// or the URL's file's).
    fn partial_content(&self, ctx: &mut HttpContext) {
        let config = ctx.config(self.config);
        if !config.enabled || ctx.child_depth() > 0 {
            return;
        }
        let response = ctx.response();
        if content_encoding::forbids_transform(response.headers())
            || response.headers().contains_key(header::CONTENT_ENCODING)
        {
            return;
        }
        let whole_of =
            |range: &str| -> Option<u64> { range.trim().rsplit_once('/')?.1.parse().ok() };
        let (whole, listed) = match response.header(header::CONTENT_RANGE) {
            Some(range) => (
                range.to_str().ok().and_then(whole_of),
                content_encoding::type_listed(
                    response.header(header::CONTENT_TYPE),
                    &config.mime_types,
                ),
            ),
            // Multipart: the first part's own fields say the type and the
            // whole length (a folder's default document has no extension
            // in the URL to tell the type by).
            None => match first_part_fields(response.entity_chunks()) {
                Some((content_type, range)) => (
                    range.as_deref().and_then(whole_of),
                    content_encoding::type_listed(
                        content_type
                            .and_then(|t| header::HeaderValue::from_str(&t).ok())
                            .as_ref(),
                        &config.mime_types,
                    ),
                ),
                None => {
                    let guessed = content_encoding::type_of_url(ctx.request().url());
                    (
                        None,
                        content_encoding::type_listed(guessed.as_ref(), &config.mime_types),
                    )
                }
            },
        };
        let file = ctx
            .resource_info()
            .filter(|info| info.kind == ResourceKind::File)
            .map(|info| info.len);
        let config = ctx.config(self.config);
        let encodes = match whole.or(file) {
            // Past MAX_FILE_BYTES the URL's own file goes as it is.
            Some(len) => len >= config.min_size && !(len > MAX_FILE_BYTES && file == Some(len)),
            None => true,
        };
        if listed && encodes {
            content_encoding::add_vary(ctx.response_mut().headers_mut());
        }
    }

    fn not_modified(&self, ctx: &mut HttpContext) {
        let config = ctx.config(self.config);
        if !config.enabled || ctx.child_depth() > 0 {
            return;
        }
        let file_len = ctx
            .resource_info()
            .filter(|info| info.kind == ResourceKind::File)
            .map(|info| info.len);
        let config = ctx.config(self.config);
        let guessed = content_encoding::type_of_url(ctx.request().url());
        let encoded = match file_len {
            // A file's 304: its 200 was encoded only at `min_size` or more.
            Some(len) if len < config.min_size => return,
            // A file whose name says its type: this module encodes it if
            // that type is listed, and never otherwise.
            Some(len) if guessed.is_some() => {
                if !content_encoding::type_listed(guessed.as_ref(), &config.mime_types) {
                    return;
                }
                content_encoding::negotiate(ctx.request().headers()).is_some()
                    && len <= MAX_FILE_BYTES
            }
            _ if holds_weak_form(ctx) => {
                content_encoding::negotiate(ctx.request().headers()).is_some()
            }
            _ => return,
        };
        let head = ctx.request().method() == Method::HEAD;
        let headers = ctx.response_mut().headers_mut();
        content_encoding::add_vary(headers);
        if encoded {
            content_encoding::weaken_etag(headers);
            if head {
                // The 200 would have no length (see `choose`).
                headers.remove(header::CONTENT_LENGTH);
            }
        }
    }
}

/// Whether the request's `If-None-Match` lists the weak form (`W/"…"`) of
/// the response's strong ETag.
fn holds_weak_form(ctx: &HttpContext) -> bool {
    ctx.response()
        .header(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| e.starts_with('"'))
        .is_some_and(|etag| content_encoding::lists_weak_form(ctx.request().headers(), etag))
}

impl HttpModule for DynamicCompression {
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if provider.headers_being_sent() && ctx.response().status() == StatusCode::NOT_MODIFIED {
            self.not_modified(ctx);
            return RequestNotificationStatus::Continue;
        }
        if provider.headers_being_sent() && ctx.response().status() == StatusCode::PARTIAL_CONTENT {
            self.partial_content(ctx);
            return RequestNotificationStatus::Continue;
        }
        if provider.headers_being_sent() {
            if let Some(coding) = self.choose(ctx, provider) {
                let config = ctx.config(self.config);
                let level = match coding {
                    Coding::Gzip => config.gzip_level,
                    Coding::Brotli => config.brotli_quality,
                    Coding::Zstd => config.zstd_level,
                };
                self.encoder = Some(Encoder::streaming(coding, level));
                content_encoding::mark_encoded(ctx.response_mut().headers_mut(), coding);
            }
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return RequestNotificationStatus::Continue;
        };
        // A large entity is encoded a piece at a time, the rest deferred
        // to later sends: its encoded bytes are made as the client takes
        // them, never held whole for a slow client.
        provider.defer_after(ctx.response_mut(), crate::TRANSFORM_PIECE);
        if let Err(e) = encode_entity(encoder, ctx.response().entity_chunks()) {
            tracing::error!(error = %e, url = %ctx.request().url(), "DynamicCompression: a file range could not be read; the response is cut short");
            self.encoder = None;
            let response = ctx.response_mut();
            response.set_entity_chunks(Vec::new());
            response.reset_connection();
            return RequestNotificationStatus::Continue;
        }
        // Each piece is flushed too: without, brotli would hold its output
        // back for megabytes of input, and the pieces would be made
        // without waiting for the client to take any.
        let output = if provider.is_final_send() {
            self.encoder.take().map(Encoder::finish).unwrap_or_default()
        } else {
            encoder.take_flushed()
        };
        let chunks = if output.is_empty() {
            Vec::new()
        } else {
            vec![EntityChunk::Memory(Bytes::from(output))]
        };
        ctx.response_mut().set_entity_chunks(chunks);
        RequestNotificationStatus::Continue
    }
}

/// The `Content-Type` and `Content-Range` of a multipart/byteranges body's
/// first part, read from the start of the body held in memory (RFC 9110
/// §14.6: each part names them); `None` without such a start.
fn first_part_fields(chunks: &[EntityChunk]) -> Option<(Option<String>, Option<String>)> {
    let Some(EntityChunk::Memory(start)) = chunks.first() else {
        return None;
    };
    let start = std::str::from_utf8(&start[..start.len().min(1024)]).ok()?;
    // Past the boundary line, the part's fields up to its empty line.
    let mut lines = start.trim_start_matches(['\r', '\n']).split("\r\n");
    if !lines.next()?.starts_with("--") {
        return None;
    }
    let (mut content_type, mut range) = (None, None);
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("content-range") {
            range = Some(value.trim().to_owned());
        }
    }
    Some((content_type, range))
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<DynamicCompressionConfig>("dynamic_compression")?;
    registration.set_request_notifications(
        move || DynamicCompression {
            config,
            encoder: None,
        },
        RequestNotification::SendResponse.into(),
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::Medium);
    Ok(())
}
