//! The response a module builds (IIS's `IHttpResponse`).
//!
//! The response is buffered: writes append entity chunks, and nothing reaches
//! the client until a flush (explicit, or implied by disabled buffering or an
//! overflowing buffer) or the final send at the end of the request. Each send
//! raises SendResponse first.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

/// One piece of response entity (`HTTP_DATA_CHUNK`).
#[derive(Debug, Clone)]
pub enum EntityChunk {
    /// Bytes in memory (`HttpDataChunkFromMemory`).
    Memory(Bytes),
    /// A byte range of an open file (`HttpDataChunkFromFileHandle`); the
    /// server reads it when it sends.
    File {
        /// The open file.
        file: Arc<File>,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
}

impl EntityChunk {
    /// Number of bytes the chunk sends.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File { length, .. } => *length,
        }
    }

    /// Whether the chunk sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits an entity at byte `at`: `chunks` keeps the first `at` bytes and
/// the rest is returned (a chunk across the boundary is split: memory
/// without a copy, a file range into two ranges of the same file). See
/// [`crate::SendResponseProvider::defer_after`].
pub(crate) fn split_entity(chunks: &mut Vec<EntityChunk>, at: u64) -> Vec<EntityChunk> {
    let mut kept = 0u64;
    for i in 0..chunks.len() {
        let len = chunks[i].len();
        // Saturating: a module's absurd range lengths must not wrap.
        if kept.saturating_add(len) <= at {
            kept = kept.saturating_add(len);
            continue;
        }
        let inside = at - kept;
        let mut rest = chunks.split_off(i);
        if inside > 0 {
            let head = match &mut rest[0] {
                EntityChunk::Memory(bytes) => {
                    let tail = bytes.split_off(inside as usize);
                    EntityChunk::Memory(std::mem::replace(bytes, tail))
                }
                EntityChunk::File {
                    file,
                    offset,
                    length,
                } => {
                    let head = EntityChunk::File {
                        file: file.clone(),
                        offset: *offset,
                        length: inside,
                    };
                    *offset += inside;
                    *length -= inside;
                    head
                }
            };
            chunks.push(head);
        }
        return rest;
    }
    Vec::new()
}

impl From<Bytes> for EntityChunk {
    fn from(b: Bytes) -> Self {
        Self::Memory(b)
    }
}

impl From<&'static str> for EntityChunk {
    fn from(s: &'static str) -> Self {
        Self::Memory(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for EntityChunk {
    fn from(s: String) -> Self {
        Self::Memory(Bytes::from(s))
    }
}

impl From<Vec<u8>> for EntityChunk {
    fn from(v: Vec<u8>) -> Self {
        Self::Memory(Bytes::from(v))
    }
}

/// How a flush should complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushOptions {
    /// Complete through `OnAsyncCompletion` (when the module returns Pending).
    pub asynchronous: bool,
    /// More data follows (keeps the body open; it is sent chunked).
    pub more_data: bool,
}

/// The error a module attached to the response with its status
/// (the `hrErrorToReport` of `SetStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError {
    /// The HRESULT.
    pub hresult: u32,
    /// The module that set it (name it with [`crate::Pipeline::module_name`]).
    pub module: Option<crate::ModuleIndex>,
    /// The notification during which it was set.
    pub notification: &'static str,
}

/// The status line, headers and buffered entity of a response, plus the
/// send-related switches modules can set.
///
/// Modules get the request's response from the context and cannot make one
/// to put in its place (the engine's own state about it would be lost):
///
/// ```compile_fail
/// let _ = riis_pipeline::HttpResponse::new();
/// ```
///
/// ```compile_fail
/// let _ = <riis_pipeline::HttpResponse as Default>::default();
/// ```
#[derive(Debug)]
pub struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) reason: Option<Cow<'static, str>>,
    pub(crate) substatus: u16,
    pub(crate) error: Option<ResponseError>,
    pub(crate) error_description: Option<String>,
    pub(crate) headers: HeaderMap,
    /// Fields sent after the entity (see [`HttpResponse::set_trailer`]);
    /// boxed, since few responses have any.
    pub(crate) trailers: Option<Box<HeaderMap>>,
    /// Calls waiting for the response's delivery (see
    /// [`crate::HttpContext::on_response_delivered`]); the final send
    /// hands them to the server.
    pub(crate) delivery: crate::DeliveryWatchers,
    pub(crate) chunks: Vec<EntityChunk>,
    /// Bytes held in memory chunks, for the buffer limit.
    pub(crate) buffered_memory: usize,
    /// Chunks before this index were written by the requests a child
    /// request runs inside, and not sent yet: the response is shared, but
    /// a child's handler that replaces "the entity" (StaticFile clears it
    /// before it writes the file) replaces its own output, not the page it
    /// is included in. Set by the engine when a child starts, zero at the
    /// top level, and reset by every send, since what went out is nobody's
    /// to clear.
    pub(crate) entity_floor: usize,
    /// Times the entity was thrown away ([`HttpResponse::clear_entity`]):
    /// in SendResponse that replaces the response, and what earlier
    /// modules deferred of it is dropped.
    pub(crate) entity_clears: u32,
    /// Past this many buffered bytes a write asks for a flush by itself
    /// (the pipeline's `response_buffer_limit`).
    pub(crate) buffer_limit: usize,
    pub(crate) buffering: bool,
    pub(crate) headers_sent: bool,
    /// The status (and substatus) the response had when its head went
    /// out (`None` before, or when a module wrote the head itself): one set
    /// after it reaches no client, so an access log reads this one.
    pub(crate) sent_status: Option<(StatusCode, u16)>,
    pub(crate) suppress_headers: bool,
    pub(crate) flush: Option<FlushOptions>,
    pub(crate) need_disconnect: bool,
    pub(crate) reset_connection: bool,
    /// The request failed after the headers went out: what was sent is all
    /// the client gets, and it must be able to tell the entity is cut short.
    pub(crate) truncated: bool,
    pub(crate) skip_custom_errors: bool,
    /// Whether any module changed status, headers or entity.
    pub(crate) touched: bool,
    /// Set with every flush, operation or failure a module call leaves for
    /// the engine (see `RequestExecution::after_call`), so the module walk
    /// tests one flag after a call instead of each of them. Cleared when
    /// the engine looks.
    pub(crate) attention: bool,
    /// Entity bytes handed to the client so far.
    pub(crate) bytes_sent: u64,
    /// The module and notification an error status is recorded with: noted
    /// when a module takes the response (`HttpContext::response_mut`), and
    /// by the engine before it sets an error status itself.
    pub(crate) current: (Option<crate::ModuleIndex>, &'static str),
}

/// A response's status line, error (with the module and notification that
/// set it, and its description) and headers, set aside while a child
/// request that must not change them runs (`EXECUTE_FLAG_NO_HEADERS`), or
/// by a module that puts them back after a child request it ran (a custom
/// error page's): the error stays the one the failing module set.
#[derive(Debug)]
pub struct KeptHead {
    status: StatusCode,
    reason: Option<Cow<'static, str>>,
    substatus: u16,
    error: Option<ResponseError>,
    error_description: Option<String>,
    headers: HeaderMap,
}

impl KeptHead {
    /// The kept status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The kept headers, to change before they are put back.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}

impl HttpResponse {
    /// A copy of the head, to put back with [`HttpResponse::restore_head`].
    pub fn keep_head(&self) -> KeptHead {
        KeptHead {
            status: self.status,
            reason: self.reason.clone(),
            substatus: self.substatus,
            error: self.error.clone(),
            error_description: self.error_description.clone(),
            headers: self.headers.clone(),
        }
    }

    /// Puts a kept head back; the entity stays as it is.
    pub fn restore_head(&mut self, kept: KeptHead) {
        self.status = kept.status;
        self.reason = kept.reason;
        self.substatus = kept.substatus;
        self.error = kept.error;
        self.error_description = kept.error_description;
        self.headers = kept.headers;
    }
    /// An untouched response that flushes by itself once more than `limit`
    /// bytes of memory entity are buffered.
    pub(crate) fn with_buffer_limit(limit: usize) -> Self {
        Self {
            buffer_limit: limit,
            ..Self::new()
        }
    }

    /// An untouched 200 response with no headers and no entity. Only the
    /// engine makes responses: one a module could make and put in place of
    /// the request's (`*ctx.response_mut() = …`) would drop what the engine
    /// keeps there (whether the head went out, whether the entity was cut
    /// short) and let a failed response end as if whole. A module starts
    /// over with [`HttpResponse::clear`].
    pub(crate) fn new() -> Self {
        Self {
            status: StatusCode::OK,
            reason: None,
            substatus: 0,
            error: None,
            error_description: None,
            headers: HeaderMap::new(),
            trailers: None,
            delivery: crate::DeliveryWatchers::default(),
            chunks: Vec::new(),
            buffered_memory: 0,
            entity_floor: 0,
            entity_clears: 0,
            buffer_limit: usize::MAX,
            buffering: true,
            headers_sent: false,
            sent_status: None,
            suppress_headers: false,
            flush: None,
            need_disconnect: false,
            reset_connection: false,
            truncated: false,
            skip_custom_errors: false,
            touched: false,
            attention: false,
            bytes_sent: 0,
            current: (None, ""),
        }
    }

    /// `GetStatus`: the status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason phrase set with the status, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The IIS substatus (`404.3` has substatus 3).
    pub fn substatus(&self) -> u16 {
        self.substatus
    }

    /// The error attached with [`HttpResponse::set_error_status`], if any.
    pub fn error(&self) -> Option<&ResponseError> {
        self.error.as_ref()
    }

    /// Text describing the error for detailed error pages.
    pub fn error_description(&self) -> Option<&str> {
        self.error_description.as_deref()
    }

    /// `SetStatus(status, reason)`.
    pub fn set_status(&mut self, status: StatusCode, reason: impl Into<Cow<'static, str>>) {
        self.status = status;
        self.reason = Some(reason.into());
        self.substatus = 0;
        self.touched = true;
    }

    /// `SetStatus(status, reason, substatus, hrError)`: a status with an IIS
    /// substatus and the error that caused it, recorded with the module and
    /// notification that set it.
    pub fn set_error_status(
        &mut self,
        status: StatusCode,
        reason: impl Into<Cow<'static, str>>,
        substatus: u16,
        hresult: u32,
    ) {
        self.set_status(status, reason);
        self.substatus = substatus;
        self.error = Some(ResponseError {
            hresult,
            module: self.current.0,
            notification: self.current.1,
        });
    }

    /// `SetErrorDescription`: text for detailed error pages.
    pub fn set_error_description(&mut self, text: impl Into<String>) {
        self.error_description = Some(text.into());
    }

    /// All headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `GetHeader`: the first value of a header.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&HeaderValue> {
        self.headers.get(name)
    }

    /// `SetHeader` with replace. A header past what a header map holds
    /// (about 24,000 fields) is dropped, logged.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        if self.headers.try_insert(name, value).is_err() {
            crate::request::header_map_full("response");
        }
        self.touched = true;
    }

    /// `SetHeader` without replace: one more value (dropped, logged, past
    /// what a header map holds).
    pub fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        if self.headers.try_append(name, value).is_err() {
            crate::request::header_map_full("response");
        }
        self.touched = true;
    }

    /// `DeleteHeader`.
    pub fn delete_header(&mut self, name: impl http::header::AsHeaderName) {
        self.headers.remove(name);
        self.touched = true;
    }

    /// Headers, mutable, for modules that rewrite many at once.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.touched = true;
        &mut self.headers
    }

    /// `SetTrailer` (IIS 10's `IHttpResponse4`) with replace: a field sent
    /// after the entity, with the final send (gRPC's `grpc-status`, say).
    /// HTTP/2 clients get the trailers in a HEADERS frame after the data.
    /// On HTTP/1.1 they go out only as hyper allows them: in a chunked
    /// body, to a client that sent `TE: trailers`, for names the response's
    /// `Trailer` header lists; a response whose whole entity is known has
    /// a `Content-Length` and no trailers there. A field a trailer must not
    /// carry (RFC 9110 §6.5.1: framing, routing, authentication, caching
    /// and content controls, such as `Content-Length`, `Host` or
    /// `Content-Type`) is refused.
    pub fn set_trailer(&mut self, name: HeaderName, value: HeaderValue) -> Result<(), String> {
        check_trailer(&name)?;
        self.trailers
            .get_or_insert_with(Default::default)
            .insert(name, value);
        self.touched = true;
        Ok(())
    }

    /// `SetTrailer` without replace: one more value.
    pub fn append_trailer(&mut self, name: HeaderName, value: HeaderValue) -> Result<(), String> {
        check_trailer(&name)?;
        self.trailers
            .get_or_insert_with(Default::default)
            .append(name, value);
        self.touched = true;
        Ok(())
    }

    /// `DeleteTrailer`.
    pub fn delete_trailer(&mut self, name: impl http::header::AsHeaderName) {
        if let Some(trailers) = &mut self.trailers {
            trailers.remove(name);
            self.touched = true;
        }
    }

    /// `GetTrailer`: the first value of a trailer field.
    pub fn trailer(&self, name: impl http::header::AsHeaderName) -> Option<&HeaderValue> {
        self.trailers.as_ref()?.get(name)
    }

    /// The trailer fields set so far, if any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_deref().filter(|t| !t.is_empty())
    }

    /// `Clear`: drop headers and buffered entity, back to 200.
    pub fn clear(&mut self) {
        self.status = StatusCode::OK;
        self.reason = None;
        self.substatus = 0;
        self.error = None;
        self.error_description = None;
        self.headers.clear();
        self.trailers = None;
        self.clear_entity();
        self.touched = true;
    }

    /// `ClearHeaders`.
    pub fn clear_headers(&mut self) {
        self.headers.clear();
        self.touched = true;
    }

    /// Drop the buffered entity, keeping status and headers. In
    /// SendResponse this replaces the response: what modules before this
    /// one deferred of it (see [`crate::SendResponseProvider::defer_after`])
    /// is dropped too. A module that transforms the entity sets its output
    /// with [`Self::set_entity_chunks`] instead.
    ///
    /// In a child request, only what the child wrote is dropped: what the
    /// requests it runs inside wrote before it started stays.
    pub fn clear_entity(&mut self) {
        if self.entity_floor == 0 {
            // Keeps the list's room for what is written next.
            self.chunks.clear();
            self.buffered_memory = 0;
        } else {
            self.set_chunks_above_floor(Vec::new());
        }
        self.entity_clears = self.entity_clears.wrapping_add(1);
    }

    /// `WriteEntityChunks` (synchronous): append to the buffered entity.
    pub fn write(&mut self, chunk: impl Into<EntityChunk>) {
        let chunk = chunk.into();
        if let EntityChunk::Memory(b) = &chunk {
            self.buffered_memory += b.len();
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
        self.touched = true;
        if !self.buffering || self.buffered_memory > self.buffer_limit {
            self.request_flush(FlushOptions {
                asynchronous: false,
                more_data: true,
            });
        }
    }

    /// `WriteEntityChunks` for a set of chunks.
    pub fn write_chunks(&mut self, chunks: impl IntoIterator<Item = EntityChunk>) {
        for c in chunks {
            self.write(c);
        }
    }

    /// Append a byte range of an open file.
    pub fn write_file_range(&mut self, file: Arc<File>, offset: u64, length: u64) {
        self.write(EntityChunk::File {
            file,
            offset,
            length,
        });
    }

    /// The buffered entity chunks not yet sent. In SendResponse, all that
    /// this send carries; elsewhere in a child request, what the child
    /// wrote (the output of the requests it runs inside comes before it).
    pub fn entity_chunks(&self) -> &[EntityChunk] {
        self.chunks.get(self.entity_floor..).unwrap_or_default()
    }

    /// Replace the buffered entity (compression and error pages do this in
    /// SendResponse): the chunks [`Self::entity_chunks`] returns.
    pub fn set_entity_chunks(&mut self, chunks: Vec<EntityChunk>) {
        self.set_own_chunks(chunks);
        self.touched = true;
    }

    /// Replaces the chunks above the floor, keeping the memory count.
    #[inline]
    fn set_own_chunks(&mut self, chunks: Vec<EntityChunk>) {
        if self.entity_floor == 0 {
            self.buffered_memory = memory_len(&chunks);
            self.chunks = chunks;
        } else {
            self.set_chunks_above_floor(chunks);
        }
    }

    /// [`Self::set_own_chunks`] in a child request that has output of the
    /// requests it runs inside below it.
    #[cold]
    fn set_chunks_above_floor(&mut self, chunks: Vec<EntityChunk>) {
        self.chunks.truncate(self.entity_floor);
        self.chunks.extend(chunks);
        self.buffered_memory = memory_len(&self.chunks);
    }

    /// Bytes of entity buffered and not yet sent, of the chunks
    /// [`Self::entity_chunks`] returns.
    pub fn buffered_len(&self) -> u64 {
        entity_len(self.entity_chunks())
    }

    /// Bytes buffered and not yet sent, the enclosing requests' included.
    pub(crate) fn total_buffered_len(&self) -> u64 {
        entity_len(&self.chunks)
    }

    /// `Flush`: send what is buffered when the calling module returns. With
    /// `asynchronous` and a Pending return, the module's `OnAsyncCompletion`
    /// receives the bytes sent.
    pub fn flush(&mut self, options: FlushOptions) {
        self.request_flush(options);
    }

    fn request_flush(&mut self, options: FlushOptions) {
        let merged = match self.flush {
            Some(prev) => FlushOptions {
                asynchronous: prev.asynchronous || options.asynchronous,
                more_data: prev.more_data || options.more_data,
            },
            None => options,
        };
        self.flush = Some(merged);
        self.attention = true;
    }

    /// `DisableBuffering`: every later write is sent when the module returns.
    pub fn disable_buffering(&mut self) {
        self.buffering = false;
    }

    /// Whether writes are buffered.
    pub fn is_buffering(&self) -> bool {
        self.buffering
    }

    /// `Redirect`: 302 (or `status`) to `location`, entity replaced by a short
    /// note, as IIS does. What a URI cannot hold (spaces, non-ASCII, `<>"`…)
    /// is percent-encoded; a line break is refused.
    pub fn redirect(&mut self, location: &str, status: StatusCode) -> Result<(), http::Error> {
        // A URI holds neither spaces nor bytes past ASCII, nor `"<>^`{|}`
        // (RFC 3986 §2): they are percent-encoded, as a browser would
        // before following it; `%` stays, so an encoded URL is kept as is.
        // `\` stays too: browsers read it as `/` in http(s) URLs, and `%5C`
        // would turn `https://a\@b/` from host `a` into host `b`.
        // CR and LF stay, for the header to refuse: a line break in a
        // redirect target is an injection attempt, not a URL.
        const NOT_IN_URIS: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
            .remove(b'\r')
            .remove(b'\n')
            .add(b' ')
            .add(b'"')
            .add(b'<')
            .add(b'>')
            .add(b'^')
            .add(b'`')
            .add(b'{')
            .add(b'|')
            .add(b'}');
        let location: std::borrow::Cow<'_, str> =
            percent_encoding::utf8_percent_encode(location, NOT_IN_URIS).into();
        let location = &*location;
        let value = HeaderValue::try_from(location)?;
        self.clear_entity();
        self.status = status;
        self.reason = None;
        self.substatus = 0;
        self.headers.insert(http::header::LOCATION, value);
        self.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let body = format!(
            "<html><head><title>Object moved</title></head><body><h1>Object moved</h1>\
             <p>This document may be found <a href=\"{}\">here</a>.</p></body></html>",
            escape_html(location)
        );
        self.write(body);
        Ok(())
    }

    /// `SuppressHeaders`: send the entity without status line and headers
    /// (for modules that write a complete raw response themselves).
    pub fn suppress_headers(&mut self) {
        self.suppress_headers = true;
    }

    /// `GetHeadersSuppressed`.
    pub fn headers_suppressed(&self) -> bool {
        self.suppress_headers
    }

    /// Whether the status line and headers already went to the client.
    pub fn headers_sent(&self) -> bool {
        self.headers_sent
    }

    /// The status the client got, with the substatus the response had
    /// then, once the head went out with one: what an access log writes.
    /// [`HttpResponse::status`] may differ when a module set another after
    /// the head went (it reaches nobody).
    pub fn sent_status(&self) -> Option<(StatusCode, u16)> {
        self.sent_status
    }

    /// The request failed after the headers went out: what was sent is all
    /// the client gets, the message ends short (no last chunk, or fewer
    /// bytes than its length), and the connection closes, so the client and
    /// any proxy see a failed response rather than a complete one. For a
    /// module that fails after a flush.
    pub fn cut_short(&mut self) {
        self.need_disconnect = true;
        self.truncated = true;
    }

    /// `SetNeedDisconnect`: close the connection after this response (on
    /// HTTP/2, GOAWAY: the connection ends once its open streams are done).
    pub fn set_need_disconnect(&mut self) {
        self.need_disconnect = true;
    }

    /// Whether the connection closes after this response.
    pub fn need_disconnect(&self) -> bool {
        self.need_disconnect
    }

    /// `ResetConnection`: abort the connection instead of completing the response.
    pub fn reset_connection(&mut self) {
        self.reset_connection = true;
    }

    /// Whether the connection is to be aborted.
    pub fn is_connection_reset(&self) -> bool {
        self.reset_connection
    }

    /// `GetStatus(... pfSkipCustomErrors)` / the `fTrySkipCustomErrors` flag:
    /// ask the custom error module to leave this response's body alone.
    pub fn set_try_skip_custom_errors(&mut self, skip: bool) {
        self.skip_custom_errors = skip;
    }

    /// Whether custom errors should leave this response alone.
    pub fn try_skip_custom_errors(&self) -> bool {
        self.skip_custom_errors
    }

    /// Entity bytes sent to the client so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Whether any module changed the response.
    pub fn is_touched(&self) -> bool {
        self.touched
    }
}

/// Bytes held in the memory chunks of `chunks`.
fn memory_len(chunks: &[EntityChunk]) -> usize {
    chunks
        .iter()
        .map(|c| match c {
            EntityChunk::Memory(b) => b.len(),
            EntityChunk::File { .. } => 0,
        })
        .sum()
}

/// Bytes of entity in `chunks`, saturating.
fn entity_len(chunks: &[EntityChunk]) -> u64 {
    chunks
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.len()))
}

/// Escapes text for an HTML body.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Refuses a field a trailer must not carry (RFC 9110 §6.5.1): what frames
/// or routes the message, authenticates it, controls caching or says how to
/// process the content; also the connection's own fields (RFC 9113
/// §8.2.2) and pseudo-headers.
fn check_trailer(name: &HeaderName) -> Result<(), String> {
    use http::header::*;
    const FORBIDDEN: [HeaderName; 24] = [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        TE,
        UPGRADE,
        TRAILER,
        AUTHORIZATION,
        PROXY_AUTHORIZATION,
        WWW_AUTHENTICATE,
        PROXY_AUTHENTICATE,
        SET_COOKIE,
        CACHE_CONTROL,
        EXPIRES,
        AGE,
        DATE,
        LOCATION,
        RETRY_AFTER,
        VARY,
        CONTENT_ENCODING,
        CONTENT_TYPE,
        CONTENT_RANGE,
        ETAG,
        LAST_MODIFIED,
    ];
    let hop_by_hop = ["keep-alive", "proxy-connection"];
    if FORBIDDEN.contains(name) || hop_by_hop.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` cannot be a trailer field (RFC 9110 §6.5.1)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_target_is_made_a_uri() {
        let mut response = HttpResponse::new();
        response.redirect("/é x?<a>", StatusCode::FOUND).unwrap();
        assert_eq!(
            response.header(http::header::LOCATION).unwrap(),
            "/%C3%A9%20x?%3Ca%3E"
        );
        // Kept as written: an encoded URL, and a scheme's characters.
        response
            .redirect("https://a.example/b%20c?d=e&f#g", StatusCode::FOUND)
            .unwrap();
        assert_eq!(
            response.header(http::header::LOCATION).unwrap(),
            "https://a.example/b%20c?d=e&f#g"
        );
        assert!(response
            .redirect("/a\r\nSet-Cookie: x", StatusCode::FOUND)
            .is_err());
        response
            .redirect(r"https://a.example\@b.example/", StatusCode::FOUND)
            .unwrap();
        assert_eq!(
            response.header(http::header::LOCATION).unwrap(),
            r"https://a.example\@b.example/"
        );
    }

    #[test]
    fn headers_past_what_a_map_holds_are_dropped_not_a_panic() {
        let mut response = HttpResponse::new();
        for i in 0..40_000 {
            let name = HeaderName::try_from(format!("x-h{i}")).unwrap();
            response.set_header(name.clone(), HeaderValue::from_static("v"));
            response.append_header(name, HeaderValue::from_static("w"));
        }
        assert!(response.headers().len() < 80_000);
    }

    #[test]
    fn an_entity_splits_inside_memory_and_file_ranges() {
        let file = Arc::new(File::open("/dev/null").unwrap());
        let range = |offset, length| EntityChunk::File {
            file: file.clone(),
            offset,
            length,
        };
        let describe = |chunks: &[EntityChunk]| -> Vec<(char, u64, u64)> {
            chunks
                .iter()
                .map(|c| match c {
                    EntityChunk::Memory(b) => ('m', b.len() as u64, u64::from(b[0])),
                    EntityChunk::File { offset, length, .. } => ('f', *length, *offset),
                })
                .collect()
        };
        let mut chunks = vec![
            EntityChunk::Memory(Bytes::from_static(b"abcd")),
            range(100, 10),
        ];
        // Inside the file range.
        let rest = split_entity(&mut chunks, 7);
        assert_eq!(describe(&chunks), [('m', 4, b'a' as u64), ('f', 3, 100)]);
        assert_eq!(describe(&rest), [('f', 7, 103)]);
        // Inside memory, with nothing left of the chunk after it.
        let mut chunks = vec![
            EntityChunk::Memory(Bytes::from_static(b"abcd")),
            range(0, 5),
        ];
        let rest = split_entity(&mut chunks, 1);
        assert_eq!(describe(&chunks), [('m', 1, b'a' as u64)]);
        assert_eq!(describe(&rest), [('m', 3, b'b' as u64), ('f', 5, 0)]);
        // On a boundary, and past the end.
        let mut chunks = vec![EntityChunk::Memory(Bytes::from_static(b"ab")), range(0, 5)];
        let rest = split_entity(&mut chunks, 2);
        assert_eq!((chunks.len(), rest.len()), (1, 1));
        assert!(split_entity(&mut chunks, 2).is_empty());
        assert!(split_entity(&mut chunks, 99).is_empty());
        assert_eq!(describe(&chunks), [('m', 2, b'a' as u64)]);
    }
}
