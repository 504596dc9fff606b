//! The response body hyper sends: entity chunks from the pipeline, in memory
//! or as file ranges, either all known at once (the usual case, sent with a
//! `Content-Length`) or streamed from a channel after an early flush.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use riis_pipeline::EntityChunk;
use tokio::sync::mpsc;

use crate::connection::{ConnectionState, InService};

/// How much of a file range is read per step.
const FILE_READ_SIZE: u64 = 256 * 1024;

/// How much of a file range one sendfile placeholder stands for.
const FILE_SEND_SIZE: u64 = crate::connection::FILE_STEP as u64;

// File ranges are read on the worker thread, in the body's poll: for files
// in the page cache (the common case for a busy site) a 256 KiB `pread` costs
// far less than handing each step to the blocking pool, which halved the
// throughput of large files. A cold file can make the worker wait on the disk
// for one step, as nginx's workers do without `aio threads`.

/// Where a request's body waits until its response is sent: hyper closes a
/// connection whose half-read request body goes away, and would lose a
/// response that is not on its way yet.
pub type RequestBodyHold = std::sync::Arc<std::sync::Mutex<Option<hyper::body::Incoming>>>;

/// A response body.
pub struct ResponseBody {
    chunks: VecDeque<EntityChunk>,
    /// Exact bytes left when every chunk is known; `None` while streaming.
    remaining: Option<u64>,
    stream: Option<mpsc::Receiver<Vec<EntityChunk>>>,
    /// The request body, dropped with this body (see [`RequestBodyHold`]).
    _request_body: Option<RequestBodyHold>,
    /// File ranges go to the connection's sendfile queue instead of being
    /// read (see [`crate::connection::FILE_PLACEHOLDER`]).
    files: Option<Arc<ConnectionState>>,
    /// The request stays in service until hyper is done with its body.
    _in_service: Option<InService>,
}

impl ResponseBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::from_chunks(Vec::new())
    }

    /// A body of fully known chunks.
    pub fn from_chunks(chunks: Vec<EntityChunk>) -> Self {
        let remaining = chunks.iter().map(EntityChunk::len).sum();
        Self {
            chunks: chunks.into(),
            remaining: Some(remaining),
            stream: None,
            _request_body: None,
            files: None,
            _in_service: None,
        }
    }

    /// Sends file ranges through the sendfile queue of `conn` rather than
    /// reading them (when it has one).
    pub fn with_files(mut self, conn: Option<Arc<ConnectionState>>) -> Self {
        self.files = conn.filter(|c| c.sendfile().is_some());
        self
    }

    /// A body that starts with `first` and continues with what arrives on
    /// `rx` until its sender is dropped.
    pub fn streaming(first: Vec<EntityChunk>, rx: mpsc::Receiver<Vec<EntityChunk>>) -> Self {
        Self {
            chunks: first.into(),
            remaining: None,
            stream: Some(rx),
            _request_body: None,
            files: None,
            _in_service: None,
        }
    }

    /// Keeps the request in service until this body is dropped: a
    /// connection is idle (and may give up its buffers) only once hyper has
    /// sent the whole response.
    pub fn in_service(&mut self, guard: InService) {
        self._in_service = Some(guard);
    }

    /// Keeps the request body alive until this body is dropped.
    pub fn holding(mut self, hold: RequestBodyHold) -> Self {
        self._request_body = Some(hold);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.chunks.pop_front() {
                Some(EntityChunk::Memory(b)) => {
                    if b.is_empty() {
                        continue;
                    }
                    if let Some(r) = &mut this.remaining {
                        *r = r.saturating_sub(b.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(EntityChunk::File {
                    file,
                    offset,
                    length,
                }) => {
                    if length == 0 {
                        continue;
                    }
                    let step = length.min(if this.files.is_some() {
                        FILE_SEND_SIZE
                    } else {
                        FILE_READ_SIZE
                    });
                    if length > step {
                        this.chunks.push_front(EntityChunk::File {
                            file: file.clone(),
                            offset: offset + step,
                            length: length - step,
                        });
                    }
                    if let Some(r) = &mut this.remaining {
                        *r = r.saturating_sub(step);
                    }
                    if let Some(queue) = this.files.as_ref().and_then(|c| c.sendfile()) {
                        let placeholder = queue.push(file, offset, step as usize);
                        return Poll::Ready(Some(Ok(Frame::data(placeholder))));
                    }
                    let mut buf = vec![0u8; step as usize];
                    if let Err(e) = file.read_exact_at(&mut buf, offset) {
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                }
                None => {
                    let Some(rx) = &mut this.stream else {
                        return Poll::Ready(None);
                    };
                    match ready!(rx.poll_recv(cx)) {
                        Some(more) => this.chunks.extend(more),
                        None => {
                            this.stream = None;
                            return Poll::Ready(None);
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) && self.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) if self.stream.is_none() => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
