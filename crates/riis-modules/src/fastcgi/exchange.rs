//! One request's conversation with a FastCGI application, run as a task on
//! the request's own worker runtime (or the module's fallback thread). Its
//! output reaches the request through a [`Relay`].
//!
//! The task writes the request while it reads the answer (an application
//! may answer before it has read the whole body), parses the header block,
//! and passes the body on in pieces.
//!
//! `request_timeout` counts the application's time, not the client's: its
//! clock stops while the task waits for a slow client to take the output
//! (as nginx's FastCGI timeouts only count the time the application takes).
//!
//! For an application riis started, the task first waits for one of its
//! processes to be free (see `managed_application`). A request that passes
//! `request_timeout` or `activity_timeout` there has its process killed,
//! as IIS does, since the process would otherwise stay busy with it. A
//! request whose client left has its answer read to the end (and dropped)
//! before its process takes another, up to `request_timeout`: the process
//! is busy until then, and a request handed to it meanwhile would wait
//! behind the one nobody reads. A process that closed a new connection
//! without a word because it ended cleanly (a `php-cgi` recycling at
//! `PHP_FCGI_MAX_REQUESTS`) never took the request up: it goes to another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use riis_pipeline::bytes::{Bytes, BytesMut};
use riis_pipeline::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{self, protocol_status, Record};
use crate::backend::{Address, Connection, Pools};
use crate::gateway::{parse_head, ErrorLog};
use crate::managed_application::{Application, Taken};
use crate::relay::{End, Relay};
use crate::spooled_body::SpooledBody;

/// How much one read from the application asks for.
const READ_SIZE: usize = 64 * 1024;

/// One request for the task.
pub(super) struct Job {
    /// Where the request goes: an address, or an application riis runs,
    /// whose process is found by the task.
    pub(super) target: Target,
    /// `FCGI_BEGIN_REQUEST` and the parameters, encoded; with the body
    /// and its end too when `body` is `None`.
    pub(super) head: Bytes,
    /// A request body too large to copy into `head`.
    pub(super) body: Option<SpooledBody>,
    /// Idle connections kept (0: none; the application closes each).
    pub(super) kept_connections: usize,
    /// How long the exchange may take (`request_timeout`), not counting
    /// the time it waits for a slow client.
    pub(super) request_timeout: Duration,
    /// The script, for log lines.
    pub(super) script: String,
    /// Whether the request may be sent again (RFC 9110 §9.2.2: GET, HEAD,
    /// PUT, DELETE, OPTIONS, TRACE), when a kept connection fails before
    /// any answer.
    pub(super) idempotent: bool,
    /// Where the answer goes.
    pub(super) relay: Arc<Relay>,
    pub(super) pools: Arc<Pools<Connection>>,
    /// For an application riis started: when it last took a request up.
    pub(super) taken: Option<Arc<Taken>>,
    /// The request went to the application whole.
    pub(super) handed_over: std::sync::atomic::AtomicBool,
    /// It was sent again once already after a process closed its
    /// connection without a word (see `after_failure`).
    pub(super) sent_again: std::sync::atomic::AtomicBool,
    /// For an application riis started: held until the exchange ends, so
    /// that processes a new start retired finish this request first, and
    /// its process takes no other request meanwhile.
    pub(super) lease: Option<crate::managed_application::Lease>,
}

/// Where a request goes.
pub(super) enum Target {
    /// A FastCGI server at an address (`fastcgi.address`).
    Address(Address),
    /// An application riis started (`fastcgi.application`).
    Application(Arc<Application>),
}

/// How long a request whose client left may keep its process busy, when
/// the application took it up whole (it may go on, as PHP's
/// `ignore_user_abort` scripts do) and `request_timeout` sets no bound of
/// its own.
const ABANDONED_FOR: Duration = Duration::from_secs(15 * 60);

/// How many processes of an application a request is sent to in turn when
/// each closed its connection before taking the request up.
const ATTEMPTS: usize = 4;

/// How long an exchange whose new connection closed without a word waits
/// to learn whether its process ended cleanly (it is reaped within a few
/// milliseconds; see [`crate::managed_application::Lease::process_end`]).
const LEARN_END_FOR: Duration = Duration::from_secs(1);

/// Runs a request's exchange to its end and tells the request.
pub(super) async fn run(mut job: Job) {
    let application = match &job.target {
        Target::Address(address) => {
            let address = address.clone();
            if let Finish::End(end) = exchange_end(&job, &address).await {
                job.relay.finish(end);
            }
            return;
        }
        Target::Application(application) => application.clone(),
    };
    // A request waits for a process no longer than either timeout allows;
    // its process's time counts from when it gets one.
    let wait = match job.request_timeout {
        limit if limit.is_zero() => job.relay.activity_timeout(),
        limit => limit.min(job.relay.activity_timeout()),
    };
    for _ in 0..ATTEMPTS {
        let found = application
            .wait_for_process(wait, job.relay.cancelled())
            .await;
        let address = match found {
            Ok(Some((address, lease))) => {
                job.lease = Some(lease);
                job.relay.start_backend_clock();
                address
            }
            // The client left while the request waited: no process saw it.
            Ok(None) => return,
            Err((status, why)) => {
                job.relay.finish(End::Failed(status, why));
                return;
            }
        };
        job.handed_over
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match exchange_end(&job, &address).await {
            Finish::End(end) => {
                job.relay.finish(end);
                return;
            }
            Finish::Cancelled => return,
            // Its process ended before taking it up: another one.
            Finish::Again => job.lease = None,
        }
    }
    job.relay.finish(End::Failed(
        StatusCode::BAD_GATEWAY,
        format!(
            "{ATTEMPTS} processes of the FastCGI application {} refused or closed the request's connection before taking it up",
            application.program().display()
        ),
    ));
}

/// How an exchange ended.
enum Finish {
    /// With this end, for the request.
    End(End),
    /// The request was gone first (its answer, if any, was read to the
    /// end and dropped; see [`drain`]).
    Cancelled,
    /// The application's process ended before it took the request up: it
    /// may go to another.
    Again,
}

/// The exchange's end with the server at `address`.
async fn exchange_end(job: &Job, address: &Address) -> Finish {
    let exchange = exchange_with_retry(job, address);
    tokio::pin!(exchange);
    // `request_timeout = 0`: no limit on the whole exchange.
    let limited = !job.request_timeout.is_zero();
    loop {
        let due = job.relay.deadline_for_backend(job.request_timeout);
        let overdue = async {
            if limited {
                tokio::time::sleep_until(due.into()).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            end = &mut exchange => return match end {
                Ok(()) => Finish::End(End::Complete),
                Err(failure) => after_failure(job, address, failure).await,
            },
            () = overdue => {
                // A wait for the client since then put the deadline off.
                if job.relay.deadline_for_backend(job.request_timeout) <= Instant::now() {
                    kill_process(job);
                    return Finish::End(End::Failed(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("{address} took longer than fastcgi.request_timeout"),
                    ));
                }
            }
            _ = job.relay.cancelled() => break,
        }
    }
    // The request is gone: nobody reads the end. Handed over whole, it is
    // the application's to serve (see `Taken`).
    if job.handed_over.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(taken) = &job.taken {
            taken.note();
        }
    }
    if job.relay.overran() {
        // It answered past its Content-Length, or a HEAD's head went out
        // while it runs on (it may go on for ever): stopped, not read to
        // its end.
        kill_process(job);
    } else if job.lease.is_some() {
        drain(job, exchange).await;
    }
    Finish::Cancelled
}

/// Reads the answer of a request whose client left to its end, its
/// output dropped, so that its process counts as busy until it is free
/// again; kills the process when it passes `request_timeout` (or
/// [`ABANDONED_FOR`] without one). Silence does not count: nobody waits
/// for the answer, and a script that goes on quietly after its client left
/// (PHP's `ignore_user_abort`) is not stuck.
async fn drain(job: &Job, exchange: impl std::future::Future<Output = Result<(), Failure>>) {
    let deadline = if job.request_timeout.is_zero() {
        Instant::now() + ABANDONED_FOR
    } else {
        job.relay.deadline_for_backend(job.request_timeout)
    };
    if tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .is_err()
    {
        kill_process(job);
    }
}

/// Kills the process of an application riis started that has the
/// request (it timed out), if the request went to one.
fn kill_process(job: &Job) {
    if let Some(lease) = &job.lease {
        lease.kill_process();
    }
}

/// What a failed exchange ends with, for an application riis started: a
/// request its process refused the connection for never reached it, and
/// goes to another (a process that refuses connections and does not end is
/// killed: it takes no request); one it closed without a word goes to
/// another, once, only if the process ended cleanly (it ended without
/// taking the request up, most likely) and the request may run twice (RFC
/// 9110 §9.2.2), since a script may also have run and ended its process; a
/// process that went silent is killed.
async fn after_failure(job: &Job, address: &Address, failure: Failure) -> Finish {
    if let Some(lease) = &job.lease {
        match &failure {
            Failure::Connect(_) => {
                lease.process_closing();
                if lease.process_end(LEARN_END_FOR).await.is_none() {
                    lease.kill_process();
                }
                return Finish::Again;
            }
            Failure::Nothing(_) => {
                lease.process_closing();
                match lease.process_end(LEARN_END_FOR).await {
                    // Once: a script that ran and ended its process would
                    // otherwise run again on each.
                    Some(true)
                        if job.idempotent
                            && !job
                                .sent_again
                                .swap(true, std::sync::atomic::Ordering::Relaxed) =>
                    {
                        return Finish::Again
                    }
                    Some(_) => {}
                    None => lease.reopen_process(),
                }
            }
            Failure::Quiet => lease.kill_process(),
            _ => {}
        }
    }
    Finish::End(failure.into_end(job, address))
}

/// Why an exchange failed.
enum Failure {
    /// The connection gave nothing back at all: for a reused one, the
    /// application closed it while it was idle, and a new one is tried.
    Nothing(std::io::Error),
    /// Connecting failed.
    Connect(std::io::Error),
    /// The application went quiet for `activity_timeout`.
    Quiet,
    /// The application is overloaded (`FCGI_OVERLOADED`).
    Overloaded,
    /// The application broke the protocol or the connection.
    Broken(String),
}

impl Failure {
    fn into_end(self, job: &Job, address: &Address) -> End {
        match self {
            Failure::Connect(e) => End::Failed(
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to {address}: {e}"),
            ),
            Failure::Nothing(e) => End::Failed(
                StatusCode::BAD_GATEWAY,
                format!("{address} closed the connection without answering: {e}"),
            ),
            Failure::Quiet => End::Failed(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{address} sent nothing for fastcgi.activity_timeout ({} s)",
                    job.relay.activity_timeout().as_secs()
                ),
            ),
            Failure::Overloaded => End::Failed(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{address} is overloaded (FCGI_OVERLOADED)"),
            ),
            Failure::Broken(why) => {
                End::Failed(StatusCode::BAD_GATEWAY, format!("{address}: {why}"))
            }
        }
    }
}

/// Runs the exchange on an idle connection if there is one, and, for an
/// idempotent request, once more on a new one if the idle one fails before
/// any answer.
async fn exchange_with_retry(job: &Job, address: &Address) -> Result<(), Failure> {
    if job.kept_connections > 0 {
        if let Some(mut connection) = job.pools.take(address) {
            match exchange(&mut connection, job).await {
                Ok(reusable) => {
                    if reusable {
                        job.pools.put(address, connection, job.kept_connections);
                    }
                    return Ok(());
                }
                // Nothing came back. The connection was quiet when taken,
                // so the application most likely closed it just then; but
                // it may have run the request and died, so only a request
                // that may run twice goes again (as nginx and HTTP
                // clients do).
                Err(Failure::Nothing(_)) if job.idempotent => {}
                Err(other) => return Err(other),
            }
        }
    }
    let mut connection =
        tokio::time::timeout(job.relay.activity_timeout(), Connection::open(address))
            .await
            .map_err(|_| Failure::Quiet)?
            .map_err(Failure::Connect)?;
    let reusable = exchange(&mut connection, job).await?;
    if reusable && job.kept_connections > 0 {
        job.pools.put(address, connection, job.kept_connections);
    }
    Ok(())
}

/// One exchange on `connection`: whether the connection may be used again.
async fn exchange(connection: &mut Connection, job: &Job) -> Result<bool, Failure> {
    match connection {
        Connection::Tcp(stream) => {
            let (read, write) = stream.split();
            converse(read, write, job).await
        }
        Connection::Unix(stream) => {
            let (read, write) = stream.split();
            converse(read, write, job).await
        }
    }
}

async fn converse(
    mut read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    job: &Job,
) -> Result<bool, Failure> {
    let sending = send(&mut write, job);
    tokio::pin!(sending);
    let receiving = receive(&mut read, job);
    tokio::pin!(receiving);
    let mut sent = None;
    loop {
        tokio::select! {
            result = &mut sending, if sent.is_none() => {
                if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::TimedOut) {
                    return Err(Failure::Quiet);
                }
                if result.is_ok() {
                    job.handed_over.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                sent = Some(result.is_ok());
            }
            result = &mut receiving => {
                // An application may answer without reading the whole body
                // (and close): the answer counts, the connection does not.
                let clean = result?;
                return Ok(clean && sent == Some(true));
            }
        }
    }
}

/// Writes the request: begin, parameters, body, end of body (one write,
/// unless the body is large). A write that makes no progress for
/// `activity_timeout` fails only if the application is silent too (it
/// stopped reading and answers nothing); one that answers while it does
/// not read yet is waited for.
async fn send(write: &mut (impl AsyncWrite + Unpin), job: &Job) -> std::io::Result<()> {
    async fn write_all(
        write: &mut (impl AsyncWrite + Unpin),
        mut data: &[u8],
        job: &Job,
    ) -> std::io::Result<()> {
        while !data.is_empty() {
            match tokio::time::timeout_at(job.relay.silence_deadline(), write.write(data)).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => {
                    data = &data[n..];
                    job.relay.mark_activity();
                }
                Ok(Err(e)) => return Err(e),
                Err(_) if job.relay.is_silent() => return Err(std::io::ErrorKind::TimedOut.into()),
                Err(_) => {}
            }
        }
        Ok(())
    }
    write_all(write, &job.head, job).await?;
    let Some(body) = &job.body else {
        return Ok(());
    };
    let mut record = BytesMut::with_capacity(READ_SIZE + 16);
    for piece in body.pieces(READ_SIZE) {
        let piece = piece?;
        record.clear();
        protocol::input(&mut record, &piece);
        write_all(write, &record, job).await?;
    }
    record.clear();
    protocol::end_of_input(&mut record);
    write_all(write, &record, job).await
}

/// Whether the head, grown from `from` bytes to `pending`, may now hold its
/// end (an empty line) or be past its longest: only then is it parsed.
fn may_end_head(pending: &[u8], from: usize) -> bool {
    if pending.len() > crate::gateway::MAX_HEADER_BYTES
        || pending.starts_with(b"\n")
        || pending.starts_with(b"\r\n")
    {
        return true;
    }
    let new = &pending[from.saturating_sub(2)..];
    memchr::memmem::find(new, b"\n\n").is_some() || memchr::memmem::find(new, b"\n\r\n").is_some()
}

/// Reads the answer to its `FCGI_END_REQUEST`: whether the connection
/// ended clean (nothing more on it).
async fn receive(read: &mut (impl AsyncRead + Unpin), job: &Job) -> Result<bool, Failure> {
    // Most answers are small: reads start at 8 KiB and double, up to 64
    // KiB, while they fill the buffer.
    let mut want = 8 * 1024;
    let mut buf = BytesMut::with_capacity(want);
    // The head as it comes, until it is whole.
    let mut head: Option<BytesMut> = Some(BytesMut::new());
    let mut errors = ErrorLog::new("FastCGI", &job.script);
    let mut received = false;
    loop {
        while let Some(record) = protocol::next_record(&mut buf).map_err(Failure::Broken)? {
            match record {
                Record::Output(data) => match head.as_mut() {
                    Some(pending) => {
                        let from = pending.len();
                        pending.extend_from_slice(&data);
                        // Parsed once it can be whole, not again per record.
                        if !data.is_empty() && !may_end_head(pending, from) {
                            continue;
                        }
                        match parse_head(pending) {
                            Ok(Some((parsed, used))) => {
                                let rest = pending.split_off(used).freeze();
                                head = None;
                                job.relay.deliver_head(parsed);
                                job.relay.deliver_body(rest).await;
                            }
                            Ok(None) if data.is_empty() => {
                                return Err(Failure::Broken(
                                    "the output ended inside the response header block".into(),
                                ))
                            }
                            Ok(None) => {}
                            Err(why) => return Err(Failure::Broken(why)),
                        }
                    }
                    None => job.relay.deliver_body(data).await,
                },
                Record::ErrorOutput(data) => errors.take(&data),
                Record::End {
                    app_status,
                    protocol_status,
                } => {
                    match protocol_status {
                        protocol_status::REQUEST_COMPLETE => {}
                        protocol_status::OVERLOADED => return Err(Failure::Overloaded),
                        protocol_status::CANT_MPX_CONN => {
                            return Err(Failure::Broken(
                                "the application refused the request (FCGI_CANT_MPX_CONN)".into(),
                            ))
                        }
                        protocol_status::UNKNOWN_ROLE => {
                            return Err(Failure::Broken(
                                "the application is not a Responder (FCGI_UNKNOWN_ROLE)".into(),
                            ))
                        }
                        other => {
                            return Err(Failure::Broken(format!(
                                "the application ended the request with protocol status {other}"
                            )))
                        }
                    }
                    if head.is_some() {
                        return Err(Failure::Broken(
                            "the application ended the request without a response header block"
                                .into(),
                        ));
                    }
                    if app_status != 0 {
                        tracing::debug!(script = %job.script, app_status, "FastCGI: request ended");
                    }
                    return Ok(buf.is_empty());
                }
                Record::Other => {}
            }
        }
        buf.reserve(want);
        let spare = buf.capacity() - buf.len();
        let read_once =
            tokio::time::timeout_at(job.relay.silence_deadline(), read.read_buf(&mut buf));
        match read_once.await {
            // Still taking in the body: not silent.
            Err(_) if !job.relay.is_silent() => continue,
            Err(_) => return Err(Failure::Quiet),
            Ok(Ok(0)) if !received => {
                return Err(Failure::Nothing(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(Ok(0)) => {
                return Err(Failure::Broken(
                    "the application closed the connection before FCGI_END_REQUEST".into(),
                ))
            }
            Ok(Ok(n)) => {
                if !received {
                    // The application took the request up (a process
                    // accepted it): what tells recycling from a crash,
                    // also when the client leaves before the end.
                    if let Some(taken) = &job.taken {
                        taken.note();
                    }
                }
                received = true;
                job.relay.mark_activity();
                if n == spare {
                    want = (want * 2).min(READ_SIZE);
                }
            }
            Ok(Err(e)) if !received => return Err(Failure::Nothing(e)),
            Ok(Err(e)) => return Err(Failure::Broken(format!("reading the answer failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_parsed_only_once_it_can_be_whole() {
        let head = b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody";
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // Fed a byte at a time, only the byte that ends the empty line
        // says the head may be whole.
        let ready: Vec<usize> = (1..=head.len())
            .filter(|&n| may_end_head(&head[..n], n - 1))
            .collect();
        assert_eq!(ready.first(), Some(&end));
        assert!(may_end_head(b"X: 1\n\n", 5));
        assert!(may_end_head(b"\r\nbody", 2));
        assert!(!may_end_head(b"X: 1\r\nY: 2\r\n", 8));
    }
}
