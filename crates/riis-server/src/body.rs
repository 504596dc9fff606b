//! The response body hyper sends: entity chunks from the pipeline, in memory
//! or as file ranges, either all known at once (the usual case, sent with a
//! `Content-Length`) or streamed from a channel after an early flush.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use riis_pipeline::{DeliveryWatchers, EntityChunk, ResponseDelivery};
use tokio::sync::mpsc;

use crate::connection::{ConnectionState, InService};

/// How much of a file range is read per step.
const FILE_READ_SIZE: u64 = 256 * 1024;

/// The same on HTTP/2 (and the size of the pieces an answer in memory is
/// handed over in), where hyper reads a body's next piece before the
/// stream's flow-control window has room for it, and holds it until it
/// has: a stream that waits pins at most this much, and a reader shows
/// progress to the stream's send timeout (see `h2_streams`) every this
/// many bytes: one DATA frame of the default size, as nginx's 8 KiB
/// `http2_chunk_size` does. (64 KiB pieces had a reader of 16 KiB/s reset
/// under a 3 s send timeout though data arrived every quarter second.)
const H2_FILE_READ_SIZE: u64 = 16 * 1024;

/// How much of a file range one sendfile placeholder stands for.
const FILE_SEND_SIZE: u64 = crate::connection::FILE_STEP as u64;

// File ranges are read on the worker thread, in the body's poll: for files
// in the page cache (the common case for a busy site) a 256 KiB `pread` costs
// far less than handing each step to the blocking pool, which halved the
// throughput of large files. A cold file can make the worker wait on the disk
// for one step, as nginx's workers do without `aio threads`.

/// The most request body bytes read and dropped after a response whose
/// modules left them unread, so that the connection can serve its next
/// request (Go's net/http reads the same 256 KiB). A longer body closes the
/// connection after the response instead: reading it would cost more than
/// a new connection.
pub const DISCARD_LIMIT: u64 = 256 * 1024;

/// The longest wait for more of a body being discarded (nginx's
/// `lingering_timeout`): a client that stops sending loses the connection.
pub const DISCARD_WAIT: Duration = Duration::from_secs(5);

/// Where a request's body waits until its response is sent: hyper closes a
/// connection whose half-read request body goes away, and would lose a
/// response that is not on its way yet. Once both the pipeline is done with
/// the body and the response is sent, what is left of the body is read and
/// dropped when the hold was made to discard it (HTTP/1.x; see
/// [`discard_rest`]), and let go otherwise (hyper then closes the
/// connection after the response).
#[derive(Clone, Default)]
pub struct RequestBodyHold(Arc<Mutex<HeldBody>>);

#[derive(Default)]
struct HeldBody {
    body: Option<Incoming>,
    /// The connection, when the rest of the body is to be discarded.
    discard: Option<Arc<ConnectionState>>,
    /// The response body was dropped: hyper is done with it.
    response_done: bool,
}

impl RequestBodyHold {
    /// Makes the hold discard what is left of the body on `state`'s
    /// connection (`None`: let it go).
    pub fn discard_on(&self, state: Option<Arc<ConnectionState>>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).discard = state;
    }

    /// The pipeline is done with the request body: it waits for the
    /// response, or is discarded now if the response was sent already.
    pub fn put(&self, body: Incoming) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.response_done {
            if let Some(state) = held.discard.take() {
                discard_rest(body, state);
            }
        } else {
            held.body = Some(body);
        }
    }

    /// The response was sent (its body dropped).
    fn response_done(&self) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.response_done = true;
        if let (Some(body), Some(state)) = (held.body.take(), held.discard.take()) {
            discard_rest(body, state);
        }
    }
}

/// Reads what is left of a request body nobody read and drops it, in a task
/// of its own, so that hyper can go on to the connection's next request (as
/// nginx discards request bodies). Gives up, letting hyper close the
/// connection, past [`DISCARD_LIMIT`] bytes, after [`DISCARD_WAIT`] without
/// a byte, or when the body fails.
fn discard_rest(mut body: Incoming, state: Arc<ConnectionState>) {
    if body.is_end_stream() {
        // A module read exactly the body's length and never saw its end:
        // the body is read all the same (the connection may park).
        state.activity.request_body_read();
        return;
    }
    // Responses are dropped on the worker's runtime; at shutdown the
    // connection closes anyway.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut read = 0u64;
        loop {
            if body
                .size_hint()
                .exact()
                .is_some_and(|left| read + left > DISCARD_LIMIT)
            {
                return;
            }
            match tokio::time::timeout(DISCARD_WAIT, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        read += data.len() as u64;
                        if read > DISCARD_LIMIT {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    state.activity.request_body_read();
                    return;
                }
                Ok(Some(Err(_))) | Err(_) => return,
            }
            if body.is_end_stream() {
                state.activity.request_body_read();
                return;
            }
        }
    });
}

/// What a streamed response's channel carries: more entity (with the
/// final send, the response's trailer fields), or the failure that cuts
/// the message short (the body then ends in an error, so hyper does not
/// finish the message as if it were whole).
pub type StreamItem = io::Result<StreamPiece>;

/// One later send of a streamed response.
pub struct StreamPiece {
    /// The send's entity.
    pub chunks: Vec<EntityChunk>,
    /// The trailer fields, with the final send.
    pub trailers: Option<Box<http::HeaderMap>>,
}

/// A response body.
pub struct ResponseBody {
    chunks: VecDeque<EntityChunk>,
    /// Exact bytes left when every chunk is known; `None` while streaming.
    remaining: Option<u64>,
    stream: Option<mpsc::Receiver<StreamItem>>,
    /// Bytes the body may still send, when a streamed response declared its
    /// `Content-Length`: frames are cut to it here, so that hyper never cuts
    /// one (a cut file placeholder would leave its range in the sendfile
    /// queue for the connection's next response).
    declared_left: Option<u64>,
    /// The request body, held until this body is dropped (see
    /// [`RequestBodyHold`]).
    request_body: Option<RequestBodyHold>,
    /// File ranges go to the connection's sendfile queue instead of being
    /// read (see [`crate::connection::FILE_PLACEHOLDER`]).
    files: Option<Arc<ConnectionState>>,
    /// The request stays in service until hyper is done with its body.
    in_service: Option<InService>,
    /// Trailer fields, sent after the entity (a frame of their own).
    trailers: Option<Box<http::HeaderMap>>,
    /// HTTP/2 only (decided once, when the body joins its request): whether
    /// hyper holding back is watched for.
    watch_window: bool,
    /// Data is ready for hyper and hyper has not asked for it since (it
    /// waits for the client's flow-control window). Counted on the
    /// connection, whose send timeout ends a client that never opens it.
    awaiting_window: bool,
    /// What the delivery's calls will be told, for a response that has
    /// some (or may: one that streams). One pointer, since hyper moves the
    /// body by value on every request and most have none.
    delivery: Option<Box<DeliveryWatch>>,
}

/// What a body watched for its delivery keeps.
struct DeliveryWatch {
    /// Where the calls are, or will come (see [`DeliveryShare`]).
    share: Arc<DeliveryShare>,
    /// Entity bytes hyper took.
    taken: u64,
    /// hyper took the last frame (the end, or the trailers).
    ended: bool,
    /// The response never reached hyper (the client left before its head
    /// went): its delivery was not whole, even with nothing to send.
    not_sent: bool,
}

/// Where a response's delivery calls and its body's outcome meet. A body
/// made by the final send holds its calls from the start; a response that
/// streams gets them with its final send, later, which may find hyper
/// already done with the body (the client left), or leave them for the
/// body's end.
#[derive(Default)]
pub struct DeliveryShare(Mutex<SharedDelivery>);

#[derive(Default)]
struct SharedDelivery {
    watchers: DeliveryWatchers,
    outcome: Option<ResponseDelivery>,
}

impl DeliveryShare {
    /// A share that holds `watchers` already (a response whose final send
    /// made the body).
    pub fn holding(watchers: DeliveryWatchers) -> Self {
        Self(Mutex::new(SharedDelivery {
            watchers,
            outcome: None,
        }))
    }

    /// The final send's calls: made now if the body is done, else when it
    /// is.
    pub fn watch(&self, watchers: DeliveryWatchers) {
        if watchers.is_empty() {
            return;
        }
        let mut shared = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match shared.outcome {
            Some(outcome) => {
                drop(shared);
                watchers.delivered(outcome);
            }
            None => shared.watchers = watchers,
        }
    }

    /// The body is done: the calls waiting are made, later ones at once.
    fn delivered(&self, outcome: ResponseDelivery) {
        let mut shared = self.0.lock().unwrap_or_else(|e| e.into_inner());
        shared.outcome = Some(outcome);
        let watchers = std::mem::take(&mut shared.watchers);
        drop(shared);
        watchers.delivered(outcome);
    }
}

impl ResponseBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::from_chunks(Vec::new())
    }

    /// A body of fully known chunks.
    pub fn from_chunks(chunks: Vec<EntityChunk>) -> Self {
        let remaining = chunks
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.len()));
        Self {
            chunks: chunks.into(),
            remaining: Some(remaining),
            stream: None,
            declared_left: None,
            request_body: None,
            files: None,
            in_service: None,
            trailers: None,
            watch_window: false,
            awaiting_window: false,
            delivery: None,
        }
    }

    /// Marks a body whose response never reached hyper.
    pub fn not_sent(&mut self) {
        if let Some(watch) = &mut self.delivery {
            watch.not_sent = true;
        }
    }

    /// Whether hyper took the whole entity: a declared length's every
    /// byte (hyper drops such a body once its length went, without asking
    /// for the end, and fails one that ends short), else the end of a
    /// streamed body or every byte of a known one. Trailers do not count:
    /// HTTP/1.1 sends a known body with `Content-Length` and drops them.
    fn entity_went_whole(&self, ended: bool) -> bool {
        match self.declared_left {
            Some(left) => left == 0,
            None => ended || (self.remaining == Some(0) && self.stream.is_none()),
        }
    }

    /// Makes `watchers`' calls when hyper is done with this body. In
    /// place: a body moved by value costs a copy of it, on every request.
    #[inline]
    pub fn deliver_to(&mut self, watchers: DeliveryWatchers) {
        if !watchers.is_empty() {
            self.share_delivery(Arc::new(DeliveryShare::holding(watchers)));
        }
    }

    /// Tells `share` how the delivery ended when hyper is done with this
    /// body.
    pub fn share_delivery(&mut self, share: Arc<DeliveryShare>) {
        self.delivery = Some(Box::new(DeliveryWatch {
            share,
            taken: 0,
            ended: false,
            not_sent: false,
        }));
    }

    /// Sends file ranges through the sendfile queue of `conn` rather than
    /// reading them (when it has one).
    pub fn with_files(mut self, conn: Option<Arc<ConnectionState>>) -> Self {
        self.files = conn.filter(|c| c.sends_files());
        self
    }

    /// A body that starts with `first` and continues with what arrives on
    /// `rx` until its sender is dropped.
    pub fn streaming(first: Vec<EntityChunk>, rx: mpsc::Receiver<StreamItem>) -> Self {
        Self {
            chunks: first.into(),
            remaining: None,
            stream: Some(rx),
            declared_left: None,
            request_body: None,
            files: None,
            in_service: None,
            trailers: None,
            watch_window: false,
            awaiting_window: false,
            delivery: None,
        }
    }

    /// Sends `trailers` after the entity.
    pub fn with_trailers(mut self, trailers: Option<Box<http::HeaderMap>>) -> Self {
        self.trailers = trailers;
        self
    }

    /// Ends the body after `length` bytes (a streamed response's declared
    /// `Content-Length`); what a module writes beyond it is dropped.
    pub fn declared_length(mut self, length: Option<u64>) -> Self {
        self.declared_left = length;
        self
    }

    /// The declared length is sent: the body ends, and whatever else comes
    /// is dropped.
    fn end_at_declared_length(&mut self) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.chunks.clear();
        self.stream = None;
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    /// Keeps the request in service until this body is dropped: a
    /// connection is idle (and may give up its buffers) only once hyper has
    /// sent the whole response.
    pub fn in_service(&mut self, guard: InService) {
        self.watch_window = guard.is_http2();
        self.in_service = Some(guard);
        if !self.chunks.is_empty() {
            self.set_awaiting_window(true);
        }
    }

    /// Notes (HTTP/2 only) whether this body holds data hyper has not asked
    /// for yet.
    fn set_awaiting_window(&mut self, awaiting: bool) {
        if !self.watch_window || self.awaiting_window == awaiting {
            return;
        }
        if let Some(guard) = &mut self.in_service {
            guard.awaiting_window(awaiting);
            self.awaiting_window = awaiting;
        }
    }

    /// Keeps the request body alive until this body is dropped.
    pub fn holding(mut self, hold: RequestBodyHold) -> Self {
        self.request_body = Some(hold);
        self
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.set_awaiting_window(false);
        if let Some(hold) = &self.request_body {
            hold.response_done();
        }
        if let Some(watch) = &self.delivery {
            watch.share.delivered(ResponseDelivery {
                body_bytes: watch.taken,
                whole: !watch.not_sent && self.entity_went_whole(watch.ended),
            });
        }
    }
}

impl ResponseBody {
    /// The next frame (see [`Body::poll_frame`]).
    fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self;
        loop {
            match this.chunks.pop_front() {
                Some(EntityChunk::Memory(mut b)) => {
                    if b.is_empty() {
                        continue;
                    }
                    if this.watch_window && b.len() as u64 > H2_FILE_READ_SIZE {
                        // On HTTP/2 in pieces, as a file: hyper queues what
                        // it is given in the stream whole, and this body,
                        // which keeps the request in service (and the
                        // connection from counting as idle), would end
                        // while a slow client still waits for most of it.
                        let rest = b.split_off(H2_FILE_READ_SIZE as usize);
                        this.chunks.push_front(EntityChunk::Memory(rest));
                    }
                    if let Some(left) = &mut this.declared_left {
                        if *left == 0 {
                            return this.end_at_declared_length();
                        }
                        b.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= b.len() as u64;
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
                    let mut step = length.min(if this.files.is_some() {
                        FILE_SEND_SIZE
                    } else if this.watch_window {
                        H2_FILE_READ_SIZE
                    } else {
                        FILE_READ_SIZE
                    });
                    if let Some(left) = &mut this.declared_left {
                        if *left == 0 {
                            return this.end_at_declared_length();
                        }
                        step = step.min(*left);
                        *left -= step;
                    }
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
                        return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                    };
                    let Poll::Ready(next) = rx.poll_recv(cx) else {
                        // The client ended its side of the connection and
                        // the rest waits for a module: given up as if the
                        // client had left (see `Activity::peer_closed`).
                        // What was ready went out first.
                        let Some(guard) = this.in_service.as_ref().filter(|g| g.peer_closed())
                        else {
                            return Poll::Pending;
                        };
                        // Ended with a reset: to a client reading to the
                        // close, a plain one would look like the end of a
                        // whole body.
                        guard.abort_on_close();
                        this.stream = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the client ended its side of the connection",
                        ))));
                    };
                    match next {
                        Some(Ok(more)) => {
                            this.chunks.extend(more.chunks);
                            if more.trailers.is_some() {
                                this.trailers = more.trailers;
                            }
                        }
                        Some(Err(e)) => {
                            this.stream = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                        None => {
                            this.stream = None;
                            return Poll::Ready(
                                this.trailers.take().map(|t| Ok(Frame::trailers(*t))),
                            );
                        }
                    }
                }
            }
        }
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
        let frame = if !this.watch_window {
            this.next_frame(cx)
        } else {
            // Asked now (the connection notes when); once data is handed
            // out, hyper asks again only when the stream has window for
            // more.
            this.set_awaiting_window(false);
            let frame = this.next_frame(cx);
            if matches!(frame, Poll::Ready(Some(Ok(_)))) {
                this.set_awaiting_window(true);
            }
            frame
        };
        // What the delivery's watchers are told.
        if let Some(watch) = &mut this.delivery {
            match &frame {
                Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                    Some(data) => watch.taken += data.len() as u64,
                    // Trailers come last.
                    None => watch.ended = true,
                },
                Poll::Ready(None) => watch.ended = true,
                _ => {}
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) && self.stream.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) if self.stream.is_none() => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
