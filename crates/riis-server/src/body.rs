//! The response body hyper sends: entity chunks from the pipeline, in memory
//! or as file ranges, either all known at once (the usual case, sent with a
//! `Content-Length`) or streamed from a channel after an early flush.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use riis_pipeline::EntityChunk;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How much of a file range is read per step.
const FILE_READ_SIZE: u64 = 256 * 1024;

/// Where a request's body waits until its response is sent: hyper closes a
/// connection whose half-read request body goes away, and would lose a
/// response that is not on its way yet.
pub type RequestBodyHold = std::sync::Arc<std::sync::Mutex<Option<hyper::body::Incoming>>>;

/// A response body.
pub struct ResponseBody {
    chunks: VecDeque<EntityChunk>,
    /// Exact bytes left when every chunk is known; `None` while streaming.
    remaining: Option<u64>,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    stream: Option<mpsc::Receiver<Vec<EntityChunk>>>,
    /// The request body, dropped with this body (see [`RequestBodyHold`]).
    _request_body: Option<RequestBodyHold>,
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
            reading: None,
            stream: None,
            _request_body: None,
        }
    }

    /// A body that starts with `first` and continues with what arrives on
    /// `rx` until its sender is dropped.
    pub fn streaming(first: Vec<EntityChunk>, rx: mpsc::Receiver<Vec<EntityChunk>>) -> Self {
        Self {
            chunks: first.into(),
            remaining: None,
            reading: None,
            stream: Some(rx),
            _request_body: None,
        }
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
            if let Some(reading) = &mut this.reading {
                let result = ready!(Pin::new(reading).poll(cx));
                this.reading = None;
                let data = match result {
                    Ok(Ok(data)) => data,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                };
                if let Some(r) = &mut this.remaining {
                    *r = r.saturating_sub(data.len() as u64);
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
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
                    let step = length.min(FILE_READ_SIZE);
                    if length > step {
                        this.chunks.push_front(EntityChunk::File {
                            file: file.clone(),
                            offset: offset + step,
                            length: length - step,
                        });
                    }
                    this.reading = Some(tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; step as usize];
                        file.read_exact_at(&mut buf, offset)?;
                        Ok(Bytes::from(buf))
                    }));
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
        self.remaining == Some(0) && self.stream.is_none() && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) if self.stream.is_none() => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

use std::future::Future;
