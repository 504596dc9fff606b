//! One request's exchange with a server, run as a task on the request's
//! own worker runtime: choosing the server, a kept connection or a new one
//! (hyper's HTTP/1.1 client on it), sending the request, and relaying the
//! answer through the [`Relay`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::header::{self, HeaderMap, HeaderValue};
use riis_pipeline::http::{Method, Request, Response, StatusCode, Uri};

use super::farm::Server;
use super::ReverseProxyConfig;
use crate::backend::{Connection, Pools, Reusable};
use crate::gateway::ResponseHead;
use crate::relay::{End, Relay};

/// How much of the request body hyper is given at a time: each piece it
/// takes counts as the server's activity.
const BODY_PIECE: usize = 64 * 1024;

/// A kept connection: hyper's handle to send on it.
pub(super) struct Kept(SendRequest<RequestBody>);

impl Reusable for Kept {
    fn is_reusable(&self) -> bool {
        // The connection's task ends (and closes it) when the server
        // closes it or sends anything unasked for.
        !self.0.is_closed()
    }
}

/// One request for the task.
pub(super) struct Job {
    pub(super) method: Method,
    /// Path and query, as the request has them now.
    pub(super) target: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// `scheme://host` as the client reached riis, for `Location` headers
    /// that name the server (none: left as they are).
    pub(super) client_origin: Option<String>,
    /// Whether the request may be sent again (RFC 9110 §9.2.2) when a kept
    /// connection fails after it was sent.
    pub(super) idempotent: bool,
    /// The one server this request goes to ([`super::PROXY_SERVER`]),
    /// instead of the section's.
    pub(super) only: Option<Server>,
    pub(super) config: Arc<ReverseProxyConfig>,
    pub(super) relay: Arc<Relay>,
    pub(super) pools: Arc<Pools<Kept>>,
}

/// The request body as hyper takes it: in pieces, each one taken marking
/// the server active (a server that reads a large body slowly is not
/// silent).
pub(super) struct RequestBody {
    rest: Bytes,
    relay: Option<Arc<Relay>>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(relay) = &self.relay {
            relay.mark_activity();
        }
        let size = self.rest.len().min(BODY_PIECE);
        let piece = self.rest.split_to(size);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// Why an exchange failed.
enum Failure {
    /// No server could be connected to.
    Unreachable(String),
    /// A server went quiet for `timeout`.
    Quiet(String),
    /// A server broke the protocol or the connection.
    Broken(String),
}

impl Failure {
    fn into_end(self) -> End {
        match self {
            Failure::Unreachable(why) | Failure::Broken(why) => {
                End::Failed(StatusCode::BAD_GATEWAY, why)
            }
            Failure::Quiet(why) => End::Failed(StatusCode::GATEWAY_TIMEOUT, why),
        }
    }
}

/// Runs a request's exchange to its end and tells the request.
pub(super) async fn run(job: Job) {
    let end = tokio::select! {
        result = exchange(&job) => match result {
            Ok(()) => End::Complete,
            Err(failure) => failure.into_end(),
        },
        // The request is gone: nobody reads the end (and dropping the
        // exchange drops its connection mid-answer).
        _ = job.relay.cancelled() => return,
    };
    job.relay.finish(end);
}

/// What sending on one connection came to.
enum Attempt {
    /// The server answered.
    Answer(Response<Incoming>),
    /// The request was not sent (the kept connection had closed): any
    /// request may go on another.
    Unsent,
    /// The connection failed after the request went (or may have gone):
    /// only an idempotent one may go again.
    Failed(hyper::Error),
    Quiet,
}

impl Job {
    /// The request, made afresh for each connection it is tried on.
    fn request(&self, server: &Server) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody {
            rest: self.body.clone(),
            relay: Some(self.relay.clone()),
        });
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.clone();
        let mut headers = self.headers.clone();
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, server.host.clone());
        }
        // A body of none is announced for methods that usually carry one,
        // so the server does not wait for it.
        if !self.body.is_empty()
            || !matches!(
                self.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
            )
        {
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(self.body.len() as u64),
            );
        }
        *request.headers_mut() = headers;
        request
    }

    /// Sends on `sender`, waiting while the server is active.
    async fn send(&self, sender: &mut SendRequest<RequestBody>, server: &Server) -> Attempt {
        let sending = sender.try_send_request(self.request(server));
        tokio::pin!(sending);
        loop {
            match tokio::time::timeout_at(self.relay.silence_deadline(), &mut sending).await {
                Ok(Ok(response)) => return Attempt::Answer(response),
                Ok(Err(e)) if e.message().is_some() => return Attempt::Unsent,
                Ok(Err(e)) => return Attempt::Failed(e.into_error()),
                Err(_) if self.relay.is_silent() => return Attempt::Quiet,
                Err(_) => {}
            }
        }
    }

    /// Opens a connection to `server` and starts hyper on it.
    async fn connect(&self, server: &Server) -> Result<SendRequest<RequestBody>, String> {
        let connect_timeout = std::time::Duration::from_secs(self.config.connect_timeout);
        let connection =
            match tokio::time::timeout(connect_timeout, Connection::open(&server.address)).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", server.name)),
                Err(_) => {
                    return Err(format!(
                        "cannot connect to {} within proxy.connect_timeout ({} s)",
                        server.name, self.config.connect_timeout
                    ))
                }
            };
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(connection))
            .await
            .map_err(|e| format!("{}: {e}", server.name))?;
        // The connection's own task, on this worker's runtime: it ends
        // when the connection closes or the last sender is dropped.
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!("ReverseProxy: connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// Tries the servers in turn until one answers, then relays its answer.
async fn exchange(job: &Job) -> Result<(), Failure> {
    let kept = job.config.kept_connections;
    let mut unreachable = Vec::new();
    let farm = job
        .only
        .is_none()
        .then(|| job.config.servers.order())
        .into_iter()
        .flatten();
    for server in job.only.iter().chain(farm) {
        // An idle connection first, while there is one that takes the
        // request.
        if kept > 0 {
            while let Some(Kept(mut sender)) = job.pools.take(&server.address) {
                // A connection whose last answer just ended may not be
                // ready yet (its task has not run since): it is waited for,
                // not dropped. One that closed meanwhile is dropped.
                let ready = tokio::time::timeout_at(job.relay.silence_deadline(), sender.ready());
                if !matches!(ready.await, Ok(Ok(()))) {
                    continue;
                }
                match job.send(&mut sender, server).await {
                    Attempt::Answer(response) => {
                        return relay_answer(job, server, response, sender).await;
                    }
                    Attempt::Unsent => continue,
                    Attempt::Quiet => return Err(quiet(job, server)),
                    // It had most likely closed as the request went; but
                    // the server may have run it, so only a request that
                    // may run twice goes again (as nginx and HTTP clients
                    // do).
                    Attempt::Failed(_) if job.idempotent => break,
                    Attempt::Failed(e) => {
                        return Err(Failure::Broken(format!(
                            "{} failed on a kept connection: {e}",
                            server.name
                        )))
                    }
                }
            }
        }
        let mut sender = match job.connect(server).await {
            Ok(sender) => sender,
            Err(why) => {
                server.mark_down(std::time::Duration::from_secs(job.config.fail_timeout));
                unreachable.push(why);
                continue;
            }
        };
        return match job.send(&mut sender, server).await {
            Attempt::Answer(response) => relay_answer(job, server, response, sender).await,
            Attempt::Unsent => Err(Failure::Broken(format!(
                "{} closed the connection at once",
                server.name
            ))),
            Attempt::Quiet => Err(quiet(job, server)),
            Attempt::Failed(e) => Err(Failure::Broken(format!("{}: {e}", server.name))),
        };
    }
    Err(Failure::Unreachable(unreachable.join("; ")))
}

fn quiet(job: &Job, server: &Server) -> Failure {
    Failure::Quiet(format!(
        "{} sent nothing for proxy.timeout ({} s)",
        server.name, job.config.timeout
    ))
}

/// Passes the answer's head and body on; keeps the connection if it may
/// carry another request.
async fn relay_answer(
    job: &Job,
    server: &Server,
    response: Response<Incoming>,
    sender: SendRequest<RequestBody>,
) -> Result<(), Failure> {
    server.mark_up();
    job.relay.mark_activity();
    let (parts, mut body) = response.into_parts();
    job.relay.deliver_head(response_head(job, server, parts));
    loop {
        let frame = match tokio::time::timeout_at(job.relay.silence_deadline(), body.frame()).await
        {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Failure::Broken(format!(
                    "{}: the answer broke off: {e}",
                    server.name
                )))
            }
            Err(_) if job.relay.is_silent() => return Err(quiet(job, server)),
            Err(_) => continue,
        };
        job.relay.mark_activity();
        // Trailers are dropped: riis sends none.
        if let Ok(data) = frame.into_data() {
            job.relay.deliver_body(data).await;
        }
    }
    if job.config.kept_connections > 0 && !sender.is_closed() {
        job.pools
            .put(&server.address, Kept(sender), job.config.kept_connections);
    }
    Ok(())
}

/// The answer's head as the client gets it.
fn response_head(
    job: &Job,
    server: &Server,
    parts: riis_pipeline::http::response::Parts,
) -> ResponseHead {
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
        .filter(|r| Some(*r) != parts.status.canonical_reason())
        .map(str::to_owned);
    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut content_length = None;
    for (next, value) in parts.headers.iter() {
        if *next == header::CONTENT_LENGTH {
            content_length = Some(value.clone());
            continue;
        }
        if super::is_hop_by_hop(next, &parts.headers)
            || *next == header::DATE
            || *next == header::SERVER
        {
            continue;
        }
        let value = if *next == header::LOCATION || *next == header::CONTENT_LOCATION {
            reverse_rewrite(job, server, value).unwrap_or_else(|| value.clone())
        } else {
            value.clone()
        };
        headers.push((next.clone(), value));
    }
    ResponseHead {
        status: parts.status,
        reason,
        headers,
        content_length,
    }
}

/// `value` with the server's origin (`http://` and its `Host`) replaced by
/// the client's, when it starts with it.
fn reverse_rewrite(job: &Job, server: &Server, value: &HeaderValue) -> Option<HeaderValue> {
    let client = job.client_origin.as_deref()?;
    let text = value.to_str().ok()?;
    let rest = text.strip_prefix("http://")?;
    let host = server.host.to_str().ok()?;
    let after = rest
        .get(..host.len())
        .filter(|h| h.eq_ignore_ascii_case(host))
        .map(|_| &rest[host.len()..])?;
    if !(after.is_empty() || after.starts_with(['/', '?', '#'])) {
        return None;
    }
    HeaderValue::from_str(&format!("{client}{after}")).ok()
}
