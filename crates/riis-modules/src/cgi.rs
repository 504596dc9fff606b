//! `Cgi`: runs a CGI program (RFC 3875) for each request its handler
//! mapping sends to it, as IIS's CGI module does.
//!
//! Registers for **ExecuteRequestHandler**, as a handler module (map it
//! with `resource_type = "File"`, so the program exists):
//!
//! 1. The request body is read through the pipeline (ReadEntity modules
//!    see it, RequestFiltering's limit applies), one asynchronous read at a
//!    time, up to `max_request_body` bytes (413 past it); past 64 KiB it
//!    waits in a temporary file (see `spooled_body`).
//! 2. The program runs on one of the module's threads (`riis-cgi`), not on
//!    the request's worker: the request waits (Pending) and resumes
//!    through **OnAsyncCompletion**. The program gets the body on its
//!    standard input and the RFC 3875 variables in a clean environment
//!    (below); its standard error goes to the server's log; it runs in a
//!    process group of its own, in its folder.
//! 3. Its output is passed on as it comes, through a `relay` as FastCgi's:
//!    its header lines (`Status`, `Location`, `Content-Type`, others)
//!    become the response's status and headers, the rest the entity, kept
//!    until `response_buffer_limit` bytes wait and then flushed in pieces.
//!    While the client has not taken 256 KiB of it, the thread reads no
//!    more, so the program waits on its full pipe (and that wait does not
//!    count against its `timeout`).
//!
//! A program that runs past `timeout` seconds (from the request asking, not
//! counting waits for the client) is
//! killed with its process group and the request gets 502.1, as IIS's CGI
//! timeout; output without a valid header block (at most 1,000 lines, 64 KiB)
//! gets 502.2; a program that cannot start (or is not executable: 403.1;
//! outside the root, a symbolic link or under a hidden segment: 404) is
//! logged. At most `max_instances` programs run at once per
//! configuration, and 1,024 more wait; past that, 503. A request that ends
//! without waiting (the client left, `timeouts.execution`) cancels its
//! program (the instance's `Drop`); the factory's Terminate (shutdown, a
//! reload's retired configuration) ends the programs still running.
//!
//! The environment: `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`, `SERVER_NAME`,
//! `SERVER_PORT`, `SERVER_PROTOCOL`, `REQUEST_METHOD`, `REQUEST_URI`,
//! `SCRIPT_NAME`, `SCRIPT_FILENAME`, `DOCUMENT_ROOT`, `PATH_INFO` (what
//! follows the program's name when the handler has `allow_path_info`) and
//! `PATH_TRANSLATED` with it, `QUERY_STRING`, `REMOTE_ADDR`, `REMOTE_PORT`, `HTTPS`, `AUTH_TYPE`,
//! `REMOTE_USER`, `CONTENT_TYPE`, `CONTENT_LENGTH`, `REDIRECT_STATUS` (200,
//! which php-cgi wants), `PATH` (`/usr/local/bin:/usr/bin:/bin`), and an
//! `HTTP_*` variable per request header, except `Proxy` (its `HTTP_PROXY`
//! would set the program's outbound proxy: "httpoxy"), names holding `_`
//! (they would pass for the `-` names) and `Authorization` (the password,
//! unless `pass_authorization`); cookies join with `; `. The section's
//! `environment` comes first, so the request's variables win over it.
//!
//! Configuration section `cgi` (IIS's `cgi` section), per location:
//! - `timeout` (seconds, default 90; the pipeline's `timeouts.execution`
//!   also bounds the wait);
//! - `max_request_body` (bytes, default 30,000,000, RequestFiltering's
//!   default);
//! - `response_buffer_limit` (bytes, default 4,194,304, as FastCgi's):
//!   output kept before the response is flushed; `0` passes each piece on
//!   at once;
//! - `environment` (a table of names and values for the programs);
//! - `max_instances` (default: 4 per core; read from the location of the
//!   first request that runs a program, so set it at server level);
//! - `pass_authorization` (default false);
//! - `x_accel_redirect` (default true): a program's `X-Accel-Redirect` is
//!   followed, as nginx follows an application's (see
//!   `internal_redirect`); false drops the header.
//!
//! A local redirect (RFC 3875 §6.2.2: a `Location` that is a path, alone)
//! is answered by the server: the path runs as a child request, a GET
//! without the body, its output sent as it comes. `X-Accel-Redirect` does
//! the same with the program's other headers and status kept or dropped
//! as nginx does.
//!
//! A non-parsed-header program (`nph-…`) starts its output with an HTTP
//! status line, read as a `Status` line; its output goes on unbuffered.
//! Its bytes are not passed on as they are: riis frames the response.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU16};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riis_pipeline::bytes::{Buf, Bytes, BytesMut};
use riis_pipeline::http::{header, Method, StatusCode};
use riis_pipeline::{
    CompletionInfo, ExecuteFlags, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

use crate::gateway::{parse_head, BodyError, ErrorLog};
use crate::relay::{End, Receiver, Relay, Step};
use crate::spooled_body::{BodySpool, SpooledBody};

/// The `cgi` configuration section.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgiConfig {
    /// Seconds a program may run.
    #[serde(deserialize_with = "crate::at_least_one")]
    pub timeout: u64,
    /// The longest request body passed on.
    pub max_request_body: u64,
    /// Output kept before the response is flushed to the client.
    pub response_buffer_limit: u64,
    /// Programs running at once (0: 4 per core).
    pub max_instances: usize,
    /// Whether `Authorization` is passed as `HTTP_AUTHORIZATION`.
    pub pass_authorization: bool,
    /// Whether a program's `X-Accel-Redirect` is followed.
    pub x_accel_redirect: bool,
    /// Variables added to the programs' environment (the request's own
    /// meta-variables win over them).
    pub environment: std::collections::BTreeMap<String, String>,
    /// `max_response_size`, which the output's streaming replaced: named,
    /// so that an older configuration is told what became of it.
    #[serde(default)]
    #[allow(dead_code)] // Never read: its deserializer only refuses the key.
    max_response_size: ReplacedMaxResponseSize,
}

/// A `max_response_size` key, which is refused with the reason.
#[derive(Debug, Default)]
struct ReplacedMaxResponseSize;

impl<'de> Deserialize<'de> for ReplacedMaxResponseSize {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "max_response_size is no longer a key: a program's output streams to the client \
             (response_buffer_limit says how much is held first); remove it",
        ))
    }
}

impl Default for CgiConfig {
    fn default() -> Self {
        Self {
            timeout: 90,
            max_request_body: 30_000_000,
            response_buffer_limit: 4_194_304,
            max_instances: 0,
            pass_authorization: false,
            x_accel_redirect: true,
            environment: std::collections::BTreeMap::new(),
            max_response_size: ReplacedMaxResponseSize,
        }
    }
}

/// How much of the body one read asks for.
const READ_SIZE: usize = 64 * 1024;
/// Programs that may wait for a thread.
const QUEUED_RUNS: usize = 1024;

/// How a run failed: the substatus of its 502, and why.
struct Failure(u16, String);

impl Failure {
    /// It could not start, or the request ended under it (502.0).
    fn other(why: impl Into<String>) -> Self {
        Self(0, why.into())
    }

    /// It ran past its time (502.1).
    fn timed_out(timeout: Duration) -> Self {
        Self(
            1,
            format!(
                "the program ran longer than cgi.timeout ({} s) and was ended",
                timeout.as_secs()
            ),
        )
    }

    /// Its output was no CGI response (502.2).
    fn bad_output(why: impl Into<String>) -> Self {
        Self(2, why.into())
    }
}

/// The process groups of the programs running now, so that shutdown (the
/// factory's Terminate) ends them: each runs in a group of its own, which
/// the server's exit would not end.
#[derive(Default)]
struct Running {
    groups: Mutex<std::collections::HashSet<i32>>,
    /// Runs waiting for a thread, oldest first, and the threads. While
    /// every thread is busy, the busy ones take out the runs whose time
    /// ran out (answered 502.1 at `timeout`, not once a thread is free)
    /// and those whose client left, so neither holds a place.
    queue: Mutex<RunQueue>,
    /// A run was queued, or the queue closed.
    queued: std::sync::Condvar,
    /// Terminate ran: no program starts any more.
    stopped: std::sync::atomic::AtomicBool,
}

/// See [`Running::queue`].
#[derive(Default)]
struct RunQueue {
    runs: std::collections::VecDeque<Run>,
    /// Threads running.
    threads: usize,
    /// The threads were started (with the first run: `max_instances` of
    /// its location).
    started: bool,
    /// The configuration that made the threads is gone: they run what is
    /// queued, then end.
    closed: bool,
}

impl Running {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, RunQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for one of `threads` threads (started with the first
    /// job); false (and the job dropped) when [`QUEUED_RUNS`] wait, or no
    /// thread starts.
    fn queue(self: &Arc<Self>, job: Run, threads: usize) -> bool {
        let mut queue = self.lock_queue();
        if queue.runs.len() >= QUEUED_RUNS {
            expire(&mut queue);
        }
        if queue.runs.len() >= QUEUED_RUNS {
            return false;
        }
        while !queue.started && queue.threads < threads.max(1) {
            let running = self.clone();
            let spawned = std::thread::Builder::new()
                .name("riis-cgi".into())
                .spawn(move || {
                    while let Some(job) = running.next() {
                        // A panic loses that run only.
                        let done =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job)));
                        if done.is_err() {
                            tracing::error!("CGI: a run panicked");
                        }
                    }
                });
            match spawned {
                Ok(_) => queue.threads += 1,
                Err(e) => {
                    tracing::error!("CGI: cannot start a thread: {e}");
                    break;
                }
            }
        }
        if queue.threads == 0 {
            return false;
        }
        queue.started = true;
        queue.runs.push_back(job);
        drop(queue);
        self.queued.notify_one();
        true
    }

    /// The next run for a thread; `None` once the queue is closed and
    /// empty.
    fn next(&self) -> Option<Run> {
        let mut queue = self.lock_queue();
        loop {
            if let Some(job) = queue.runs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                queue.threads -= 1;
                return None;
            }
            queue = self.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The configuration is gone: the threads end once the queue is empty.
    fn close(&self) {
        self.lock_queue().closed = true;
        self.queued.notify_all();
    }

    /// Takes out the queued runs whose time ran out (answering them) or
    /// whose client left. Called by the busy threads about ten times a
    /// second.
    fn expire_queued(&self) {
        expire(&mut self.lock_queue());
    }

    fn end_all(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for &group in self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

/// Takes out of `queue` the runs whose time ran out (answering them with
/// 502.1, IIS's for a program that ran too long) or whose request ended.
fn expire(queue: &mut RunQueue) {
    let now = Instant::now();
    queue.runs.retain(|job| {
        if job.cancelled.load(SeqCst) {
            return false;
        }
        if now < job.deadline() {
            return true;
        }
        let why = format!(
            "the program waited for a thread longer than cgi.timeout ({} s): \
             every one of cgi.max_instances was busy",
            job.timeout.as_secs()
        );
        job.substatus.store(1, SeqCst);
        job.relay.end_upload();
        job.relay.finish(End::Failed(StatusCode::BAD_GATEWAY, why));
        false
    });
}

/// One program to run on the module's threads.
struct Run {
    command: Command,
    program: PathBuf,
    body: SpooledBody,
    /// `cgi.timeout`: the time the program may take from when the request
    /// asked (time spent waiting for a thread counts), not counting the
    /// time it waits for the client to take its output.
    timeout: Duration,
    /// The output goes to the request through it.
    relay: Arc<Relay>,
    /// The substatus of a failure's 502, for the request to read.
    substatus: Arc<AtomicU16>,
    /// Where a local redirect sends the request.
    redirect: Arc<Mutex<Option<String>>>,
    /// Set when the request ended without waiting for the program (the
    /// client went away, `timeouts.execution`, shutdown).
    cancelled: Arc<AtomicBool>,
    running: Arc<Running>,
}

impl Run {
    /// When the program's time runs out.
    fn deadline(&self) -> Instant {
        self.relay.deadline_for_backend(self.timeout)
    }
}

/// Runs a program to its end (or its deadline), passing its output on as
/// it comes.
fn run(mut job: Run) {
    let end = match execute(&mut job) {
        Ok(()) => End::Complete,
        Err(Failure(substatus, why)) => {
            job.substatus.store(substatus, SeqCst);
            End::Failed(StatusCode::BAD_GATEWAY, why)
        }
    };
    job.relay.end_upload();
    job.relay.finish(end);
}

/// How long a program that ended its output may take to exit before its
/// group is ended and its output served.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How often a running program's request is looked at for cancellation.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// How long the thread waits at once for the client to take output while
/// the program's other pipes are open.
const ROOM_CHECK: Duration = Duration::from_millis(10);

fn execute(job: &mut Run) -> Result<(), Failure> {
    if job.cancelled.load(SeqCst) || job.running.stopped.load(SeqCst) {
        return Err(Failure::other(
            "the request ended before the program started",
        ));
    }
    if Instant::now() >= job.deadline() {
        return Err(Failure::timed_out(job.timeout));
    }
    let mut child = job
        .command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::other(format!("cannot start {}: {e}", job.program.display())))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    job.running
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid.as_raw());
    // The group and the leader itself (it may have left the group): sent
    // while the leader is unreaped, so neither id can be anyone else's.
    let kill = || {
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::SIGKILL);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
    };
    // Terminate may have run between the check above and the registration.
    if job.running.stopped.load(SeqCst) {
        kill();
    }
    let mut pipes = Pipes {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    let ended = pump(job, pid, &mut pipes);
    if ended.is_ok() {
        // The output ended: the program has a moment to exit, then its
        // group goes.
        wait_for_exit(
            pid,
            (Instant::now() + EXIT_GRACE).min(job.deadline()),
            &job.cancelled,
        );
    }
    // Our ends of the pipes close here: nothing is left to block on them.
    drop(pipes);
    kill();
    job.running
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid.as_raw());
    let _ = child.wait();
    ended
}

/// A running program's pipes; each is dropped (closed) when done with.
struct Pipes {
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
}

/// Feeds the program its input and passes its output on until the output
/// ends (or the program exited and `EXIT_GRACE` passed: a descendant may
/// hold the output open), its time runs out, or the request ends. All three
/// pipes are served from this thread with poll(2), none blocking: no thread
/// outlives the run, whatever a descendant holds.
fn pump(job: &mut Run, pid: nix::unistd::Pid, pipes: &mut Pipes) -> Result<(), Failure> {
    use std::os::fd::AsFd;
    for fd in [
        pipes.stdin.as_ref().map(|p| p.as_fd()),
        pipes.stdout.as_ref().map(|p| p.as_fd()),
        pipes.stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(fd);
    }
    let body = std::mem::take(&mut job.body);
    let mut fed = 0u64;
    // The part of the body read back and not yet taken by the program.
    let mut piece = Bytes::new();
    if body.is_empty() {
        pipes.stdin = None;
    }
    let program = job.program.display().to_string();
    let mut errors = ErrorLog::new("CGI", &program);
    let mut output = Output {
        redirect: job.redirect.clone(),
        status_line_due: is_nph(&job.program),
        ..Output::default()
    };
    let mut buffer = vec![0u8; 64 * 1024];
    // Set once the leader has exited: the response ends once the output
    // has been silent this long (while the client had room for more), even
    // if a descendant holds it open. What the program wrote before it
    // exited is all read first, however slowly the client takes it.
    let mut grace_until: Option<Instant> = None;
    let mut expiry_checked = Instant::now();
    job.running.expire_queued();
    while pipes.stdout.is_some() {
        if job.cancelled.load(SeqCst) {
            return Err(Failure::other("the request ended while the program ran"));
        }
        if expiry_checked.elapsed() >= CANCEL_CHECK {
            expiry_checked = Instant::now();
            job.running.expire_queued();
        }
        // Read no more while the client has not taken enough: the
        // program then waits on its full pipe, and the wait does not count
        // against its time.
        let mut room = job.relay.has_room();
        if !room {
            let others = pipes.stdin.is_some() || pipes.stderr.is_some();
            room = job
                .relay
                .wait_for_room_blocking(if others { ROOM_CHECK } else { CANCEL_CHECK });
        }
        let now = Instant::now();
        let deadline = job.deadline();
        if now >= deadline {
            return Err(Failure::timed_out(job.timeout));
        }
        if !room && grace_until.is_some() {
            // Held back by the client: not the output's silence.
            grace_until = Some(now + EXIT_GRACE);
        }
        if grace_until.is_none() && has_exited(pid) {
            grace_until = Some(now + EXIT_GRACE);
        }
        if grace_until.is_some_and(|t| now >= t) {
            break;
        }
        let limit = grace_until.map_or(deadline, |t| t.min(deadline));
        let wait = if room {
            limit.saturating_duration_since(now).min(CANCEL_CHECK)
        } else {
            Duration::ZERO
        };
        let wait = nix::poll::PollTimeout::try_from(wait.as_millis() as i32)
            .unwrap_or(nix::poll::PollTimeout::ZERO);
        let watch_out = if room { pipes.stdout.as_ref() } else { None };
        let (ready_out, ready_err, ready_in) = {
            let mut fds = Vec::with_capacity(3);
            let mut at = [None; 3];
            for (i, (fd, flags)) in [
                (watch_out.map(|p| p.as_fd()), nix::poll::PollFlags::POLLIN),
                (
                    pipes.stderr.as_ref().map(|p| p.as_fd()),
                    nix::poll::PollFlags::POLLIN,
                ),
                (
                    pipes.stdin.as_ref().map(|p| p.as_fd()),
                    nix::poll::PollFlags::POLLOUT,
                ),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(fd) = fd {
                    at[i] = Some(fds.len());
                    fds.push(nix::poll::PollFd::new(fd, flags));
                }
            }
            if fds.is_empty() {
                continue;
            }
            match nix::poll::poll(&mut fds, wait) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(Failure::other(format!("poll: {e}"))),
            }
            let ready = |i: usize| {
                at[i]
                    .and_then(|i| fds.get(i))
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1), ready(2))
        };
        if ready_in {
            if let Some(pipe) = &mut pipes.stdin {
                if piece.is_empty() {
                    piece = body.piece(fed, 64 * 1024).map_err(|e| {
                        Failure::other(format!("the request body could not be read back: {e}"))
                    })?;
                }
                match pipe.write(&piece) {
                    Ok(n) => {
                        fed += n as u64;
                        piece.advance(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // The program closed its input: the rest is not wanted.
                    Err(_) => fed = body.len(),
                }
            }
            if fed >= body.len() {
                pipes.stdin = None; // end of input
            }
        }
        if ready_err {
            if let Some(pipe) = &mut pipes.stderr {
                match pipe.read(&mut buffer) {
                    Ok(0) => pipes.stderr = None,
                    Ok(n) => errors.take(&buffer[..n]),
                    Err(e) if is_retry(&e) => {}
                    Err(_) => pipes.stderr = None,
                }
            }
        }
        if ready_out {
            if let Some(pipe) = &mut pipes.stdout {
                match pipe.read(&mut buffer) {
                    Ok(0) => pipes.stdout = None,
                    Ok(n) => {
                        output.take(&buffer[..n], &job.relay)?;
                        if grace_until.is_some() {
                            grace_until = Some(Instant::now() + EXIT_GRACE);
                        }
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(_) => pipes.stdout = None,
                }
            }
        }
    }
    output.end()
}

/// Whether `program` is a non-parsed-header program: its name starts with
/// `nph-`, as Apache and IIS tell them.
fn is_nph(program: &std::path::Path) -> bool {
    program
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"nph-"))
}

/// Whether a pipe's error only says "not now".
fn is_retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// The program's output on its way: its header block until that is
/// whole, then body pieces, each passed on as it comes.
#[derive(Default)]
struct Output {
    /// The header block so far; `None` once it was passed on.
    head: Option<BytesMut>,
    /// The head was passed on, or was a local redirect.
    answered: bool,
    /// A local redirect's path, for the request; what follows it is
    /// dropped.
    redirect: Arc<Mutex<Option<String>>>,
    /// The head was a local redirect.
    redirected: bool,
    /// A non-parsed-header program (`nph-…`): its head starts with an
    /// HTTP status line, which is not read yet.
    status_line_due: bool,
}

impl Output {
    fn take(&mut self, bytes: &[u8], relay: &Relay) -> Result<(), Failure> {
        if self.redirected {
            return Ok(());
        }
        if self.answered {
            relay.deliver_body_blocking(Bytes::copy_from_slice(bytes));
            return Ok(());
        }
        let pending = self.head.get_or_insert_with(BytesMut::new);
        pending.extend_from_slice(bytes);
        if self.status_line_due {
            let Some(end) = memchr::memchr(b'\n', pending) else {
                if pending.len() > crate::gateway::MAX_HEADER_BYTES {
                    return Err(Failure::bad_output("the status line never ends"));
                }
                return Ok(());
            };
            let status = status_of_line(&pending[..end]).ok_or_else(|| {
                Failure::bad_output(format!(
                    "`{}` is not an HTTP status line, which a non-parsed-header program starts with",
                    String::from_utf8_lossy(&pending[..end]).escape_debug()
                ))
            })?;
            // The status line becomes the `Status` line of a CGI head; the
            // rest of the head is read as any program's.
            let mut head = BytesMut::from(&b"Status: "[..]);
            head.extend_from_slice(status);
            head.extend_from_slice(&pending[end..]);
            *pending = head;
            self.status_line_due = false;
        }
        match parse_head(pending).map_err(Failure::bad_output)? {
            Some((head, used)) => {
                let rest = pending.split_off(used).freeze();
                self.head = None;
                self.answered = true;
                if let Some(path) = head.local_redirect {
                    // RFC 3875 §6.2.2: the server answers the path
                    // instead; the program's response ends here.
                    *self.redirect.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
                    self.redirected = true;
                    return Ok(());
                }
                relay.deliver_head(head);
                relay.deliver_body_blocking(rest);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The output ended: whether it was a response.
    fn end(self) -> Result<(), Failure> {
        if self.answered {
            Ok(())
        } else {
            Err(Failure::bad_output(
                "the output has no complete header block",
            ))
        }
    }
}

/// The status code and reason of an HTTP/1.x status line
/// (`HTTP/1.1 201 Created`), as a `Status` line has them.
fn status_of_line(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    (code.iter().all(u8::is_ascii_digit) && rest.get(3).is_none_or(|&b| b == b' ')).then_some(rest)
}

/// Makes a pipe end non-blocking, for the poll loop.
fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

/// Whether the process `pid` has exited (without reaping it).
fn has_exited(pid: nix::unistd::Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
}

/// Waits (without reaping) until the process `pid` has exited, `until`,
/// or the request is cancelled.
fn wait_for_exit(pid: nix::unistd::Pid, until: Instant, cancelled: &std::sync::atomic::AtomicBool) {
    let mut pause = Duration::from_micros(200);
    while !has_exited(pid)
        && Instant::now() < until
        && !cancelled.load(std::sync::atomic::Ordering::SeqCst)
    {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// What the module's instances share: the runs and their threads.
struct Shared {
    running: Arc<Running>,
}

impl Drop for Shared {
    /// The configuration is gone: its threads run what is queued, then end.
    fn drop(&mut self) {
        self.running.close();
    }
}

/// Where the instance is.
enum State {
    Idle,
    /// Reading the request body.
    Reading(BodySpool),
    /// The program runs; its output arrives through the relay.
    Running(Arc<Relay>),
    /// The program asked for a local redirect: its path runs as a child
    /// request.
    Redirected,
    /// The program's `X-Accel-Redirect` runs as a child request.
    AccelRedirected(crate::internal_redirect::Redirected),
}

/// The module instance: one per request.
pub struct Cgi {
    config: Section<CgiConfig>,
    shared: Arc<Shared>,
    state: State,
    /// Takes the program's output into the response.
    receiver: Receiver,
    /// The substatus of the run's failure (see `Failure`).
    substatus: Arc<AtomicU16>,
    /// Where the program's local redirect sends the request.
    redirect: Arc<Mutex<Option<String>>>,
    /// The program is a non-parsed-header one (`nph-…`).
    nph: bool,
    /// Tells the program's thread the request is gone.
    cancelled: Arc<AtomicBool>,
}

impl Drop for Cgi {
    /// The request ended: a program still queued does not start, one still
    /// running is ended.
    fn drop(&mut self) {
        self.cancelled.store(true, SeqCst);
        if let State::Running(relay) = &self.state {
            relay.cancel();
        }
    }
}

impl Cgi {
    /// Reads the next piece of the body, or starts the program once it is
    /// all here.
    fn go_on(&mut self, ctx: &mut HttpContext, body: BodySpool) -> RequestNotificationStatus {
        if !ctx.request().is_body_complete() {
            if let Err(e) = ctx.read_entity_body(READ_SIZE) {
                return fail(ctx, StatusCode::INTERNAL_SERVER_ERROR, 0, &e.to_string());
            }
            self.state = State::Reading(body);
            return RequestNotificationStatus::Pending;
        }
        self.start(ctx, body.finish())
    }

    fn start(&mut self, ctx: &mut HttpContext, body: SpooledBody) -> RequestNotificationStatus {
        let program = ctx.physical_path().to_path_buf();
        self.nph = is_nph(&program);
        let config = ctx.config(self.config);
        let (timeout, max_instances) = (Duration::from_secs(config.timeout), config.max_instances);
        self.receiver.follow_accel_redirect(config.x_accel_redirect);
        let command = command(ctx, config, &program, body.len());
        let relay = Arc::new(Relay::new(ctx.completion_handle(), timeout));
        let job = Run {
            command,
            program,
            body,
            timeout,
            relay: relay.clone(),
            substatus: self.substatus.clone(),
            redirect: self.redirect.clone(),
            cancelled: self.cancelled.clone(),
            running: self.shared.running.clone(),
        };
        let threads = if max_instances == 0 {
            4 * std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            max_instances
        };
        if !self.shared.running.queue(job, threads) {
            return fail(
                ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                "too many CGI programs running and waiting",
            );
        }
        self.state = State::Running(relay);
        RequestNotificationStatus::Pending
    }

    /// Takes what the program wrote into the response.
    fn answer(&mut self, ctx: &mut HttpContext, relay: Arc<Relay>) -> RequestNotificationStatus {
        // A non-parsed-header program's output goes on as it comes.
        let limit = if self.nph {
            0
        } else {
            ctx.config(self.config).response_buffer_limit
        };
        match self.receiver.take(ctx, &relay, limit) {
            Step::Wait | Step::Flushing => {
                self.state = State::Running(relay);
                RequestNotificationStatus::Pending
            }
            Step::Done => {
                let redirect = self
                    .redirect
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(path) = redirect {
                    return self.redirect_locally(ctx, &path);
                }
                ctx.set_request_handled();
                RequestNotificationStatus::Continue
            }
            Step::Failed(status, why) => {
                let substatus = self.substatus.load(SeqCst);
                fail(ctx, status, substatus, &why)
            }
            Step::Redirect(redirect) => {
                // The rest of the program's output is not wanted: it ends.
                self.cancelled.store(true, SeqCst);
                self.redirect_accel(ctx, redirect)
            }
        }
    }

    /// Runs the program's `X-Accel-Redirect` in its answer's place.
    fn redirect_accel(
        &mut self,
        ctx: &mut HttpContext,
        redirect: crate::internal_redirect::InternalRedirect,
    ) -> RequestNotificationStatus {
        match redirect.run(ctx, "CGI") {
            Ok(redirected) => {
                self.state = State::AccelRedirected(redirected);
                RequestNotificationStatus::Pending
            }
            Err(failed) => failed,
        }
    }

    /// A local redirect (RFC 3875 §6.2.2): the request is answered by
    /// `path` instead, as a GET without a body (Apache does the same), run
    /// as a child request whose output goes to the client as it comes. A
    /// redirect to the program's own URL, or redirects nested past
    /// `MAX_CHILD_REQUEST_DEPTH`, fail with 500.
    fn redirect_locally(&mut self, ctx: &mut HttpContext, path: &str) -> RequestNotificationStatus {
        let started = ctx.clone_context_with_url(path).and_then(|mut child| {
            crate::internal_redirect::pass_on(ctx, &mut child);
            let request = child.request_mut();
            request.set_method(Method::GET);
            for name in [
                header::CONTENT_LENGTH,
                header::CONTENT_TYPE,
                header::TRANSFER_ENCODING,
            ] {
                request.delete_header(name);
            }
            // Held as an X-Accel-Redirect's answer is (a large one streams
            // past the buffer): an error the child ends with then gets its
            // page from the request's own CustomError.
            let flags = ExecuteFlags {
                client_chosen_url: true,
                buffer_response: true,
                stream_past_buffer_limit: true,
                ..ExecuteFlags::default()
            };
            ctx.execute_request(child, flags)
        });
        match started {
            Ok(()) => {
                self.state = State::Redirected;
                RequestNotificationStatus::Pending
            }
            Err(e) => fail(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                &format!("the local redirect to {path} cannot run: {}", e.message),
            ),
        }
    }
}

/// Why a program path is not run: it lies outside the folder its URL maps into (through
/// a symbolic link), is a link itself, or has a hidden segment.
fn refused_path(root: &std::path::Path, program: &std::path::Path) -> Option<String> {
    let Ok(relative) = program.strip_prefix(root) else {
        return Some(format!(
            "{} lies outside the folder its URL maps into",
            program.display()
        ));
    };
    if relative
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().first() == Some(&b'.'))
    {
        return Some(format!("{} has a hidden segment", program.display()));
    }
    if std::fs::symlink_metadata(program).is_ok_and(|m| m.file_type().is_symlink()) {
        return Some(format!("{} is a symbolic link", program.display()));
    }
    let inside = match (program.canonicalize(), root.canonicalize()) {
        (Ok(real), Ok(root)) => real.starts_with(root),
        _ => false,
    };
    (!inside).then(|| {
        format!(
            "{} lies outside the folder its URL maps into",
            program.display()
        )
    })
}

/// Ends the request with an error, logged and described for the detailed
/// error page.
fn fail(
    ctx: &mut HttpContext,
    status: StatusCode,
    substatus: u16,
    why: &str,
) -> RequestNotificationStatus {
    crate::gateway::fail_with_substatus(ctx, "CGI", status, substatus, why)
}

/// The program's command: its path, folder and environment (the
/// section's `environment`, then the RFC 3875 meta-variables).
fn command(
    ctx: &HttpContext,
    config: &CgiConfig,
    program: &std::path::Path,
    body_len: u64,
) -> Command {
    let mut command = Command::new(program);
    if let Some(folder) = program.parent() {
        command.current_dir(folder);
    }
    command.env_clear();
    command.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    command.envs(&config.environment);
    let root = &ctx.virtual_directory().physical_path;
    crate::gateway::meta_variables(
        ctx,
        program,
        root,
        body_len,
        config.pass_authorization,
        |name, value| {
            command.env(name, OsString::from_vec(value.to_vec()));
        },
    );
    command
}

impl HttpModule for Cgi {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        use std::os::unix::fs::PermissionsExt;
        let program = ctx.physical_path().to_path_buf();
        // Programs run from inside the folder the URL maps into (the site's
        // root, or a virtual directory's).
        let root = ctx.virtual_directory().physical_path.clone();
        if let Some(why) = refused_path(&root, &program) {
            return fail(ctx, StatusCode::NOT_FOUND, 0, &why);
        }
        let executable = std::fs::metadata(&program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            // IIS's 403.1: execute access forbidden.
            return fail(
                ctx,
                StatusCode::FORBIDDEN,
                1,
                &format!("{} is not an executable file", program.display()),
            );
        }
        self.go_on(ctx, BodySpool::default())
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => RequestNotificationStatus::Continue,
            State::Reading(mut body) => {
                let limit = ctx.config(self.config).max_request_body;
                match crate::gateway::take_body_piece(ctx, &mut body, limit, completion) {
                    Ok(()) => self.go_on(ctx, body),
                    Err(BodyError::TooLarge) => fail(
                        ctx,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        0,
                        &format!(
                            "the request body is longer than cgi.max_request_body ({limit} bytes)"
                        ),
                    ),
                    Err(other) => {
                        let (status, why) = other.status_and_reason();
                        fail(ctx, status, 0, &why)
                    }
                }
            }
            State::Running(relay) => self.answer(ctx, relay),
            State::Redirected => {
                ctx.set_request_handled();
                RequestNotificationStatus::Continue
            }
            State::AccelRedirected(redirected) => redirected.finish(ctx),
        }
    }
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    _server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<CgiConfig>("cgi")?;
    let shared = Arc::new(Shared {
        running: Arc::default(),
    });
    let running = shared.running.clone();
    registration.set_global_notifications(
        crate::StatusLines(move || {
            let count = running
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len();
            format!("cgi_programs_running: {count}\n")
        }),
        riis_pipeline::GlobalNotification::RscaQuery.into(),
    )?;
    registration.set_request_notifications(
        Factory { config, shared },
        RequestNotification::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Makes the instances; at shutdown (and once a reload's replaced
/// configuration has no requests left) ends the programs still running.
struct Factory {
    config: Section<CgiConfig>,
    shared: Arc<Shared>,
}

impl riis_pipeline::HttpModuleFactory for Factory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Ok(Box::new(Cgi {
            config: self.config,
            shared: self.shared.clone(),
            state: State::Idle,
            // A program's error pages go through CustomError, as in IIS.
            receiver: Receiver::applying_custom_errors(),
            substatus: Arc::default(),
            redirect: Arc::default(),
            nph: false,
            cancelled: Arc::default(),
        }))
    }

    fn terminate(&self) {
        self.shared.running.end_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_as_status_lines_have_them() {
        assert_eq!(status_of_line(b"HTTP/1.1 200 OK\r"), Some(&b"200 OK"[..]));
        assert_eq!(status_of_line(b"HTTP/1.0 404"), Some(&b"404"[..]));
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000",
            b"Status: 200",
            b"HTTP/1.1 abc",
        ] {
            assert_eq!(
                status_of_line(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(is_nph(std::path::Path::new("/srv/cgi/nph-report.cgi")));
        assert!(!is_nph(std::path::Path::new("/srv/nph-cgi/report.cgi")));
    }
}
