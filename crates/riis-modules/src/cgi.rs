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
//! 3. Its output is read whole (at most `max_response_size` bytes; past
//!    that it is killed, 502), its header lines (`Status`, `Location`,
//!    `Content-Type`, others) become the response's status and headers,
//!    the rest the entity.
//!
//! A program that runs past `timeout` seconds (from the request asking) is
//! killed with its process group and the request gets 502.1, as IIS's CGI
//! timeout; output without a valid header block (at most 100 lines, 64 KiB)
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
//! unless `pass_authorization`); cookies join with `; `.
//!
//! Configuration section `cgi` (IIS's `cgi` section), per location:
//! - `timeout` (seconds, default 90; the pipeline's `timeouts.execution`
//!   also bounds the wait);
//! - `max_request_body` (bytes, default 30,000,000, RequestFiltering's
//!   default);
//! - `max_response_size` (bytes, default 64 MiB);
//! - `max_instances` (default: 4 per core; read from the location of the
//!   first request that runs a program, so set it at server level);
//! - `pass_authorization` (default false).
//!
//! Not done: local redirects (a `Location` that is a path is sent
//! to the client as a 302), non-parsed-header programs, and streaming: the
//! program's output goes out once it has ended.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use riis_pipeline::bytes::{Buf, Bytes};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletionHandle, CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RequestNotification, RequestNotificationStatus, RequestNotifications, Section, ServerInfo,
};
use serde::Deserialize;

use crate::background::Background;
use crate::gateway::{parse_output, BodyError, ErrorLog};
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
    /// The longest output read.
    pub max_response_size: u64,
    /// Programs running at once (0: 4 per core).
    pub max_instances: usize,
    /// Whether `Authorization` is passed as `HTTP_AUTHORIZATION`.
    pub pass_authorization: bool,
}

impl Default for CgiConfig {
    fn default() -> Self {
        Self {
            timeout: 90,
            max_request_body: 30_000_000,
            max_response_size: 64 * 1024 * 1024,
            max_instances: 0,
            pass_authorization: false,
        }
    }
}

/// How much of the body one read asks for.
const READ_SIZE: usize = 64 * 1024;
/// Programs that may wait for a thread.
const QUEUED_RUNS: usize = 1024;

/// What a run came to.
enum Outcome {
    /// The program's output, whole.
    Output(Vec<u8>),
    /// It ran past its time (502.1).
    TimedOut,
    /// It wrote more than it may (502).
    TooLarge,
    /// It could not start.
    Failed(String),
}

/// The process groups of the programs running now, so that shutdown (the
/// factory's Terminate) ends them: each runs in a group of its own, which
/// the server's exit would not end.
#[derive(Default)]
struct Running {
    groups: Mutex<std::collections::HashSet<i32>>,
    /// Terminate ran: no program starts any more.
    stopped: std::sync::atomic::AtomicBool,
}

impl Running {
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

/// One program to run on the module's threads.
struct Run {
    command: Command,
    program: PathBuf,
    body: SpooledBody,
    /// From when the request asked: time spent waiting for a thread counts.
    deadline: Instant,
    max_output: u64,
    result: Arc<Mutex<Option<Outcome>>>,
    done: CompletionHandle,
    /// Set when the request ended without waiting for the program (the
    /// client went away, `timeouts.execution`, shutdown).
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    running: Arc<Running>,
}

/// Runs a program to its end (or its deadline) and reads its output.
fn run(mut job: Run) {
    let outcome = execute(&mut job);
    *job.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    job.done.post_completion(0);
}

/// How long a program that ended its output may take to exit before its
/// group is ended and its output served.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How often a running program's request is looked at for cancellation.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

fn execute(job: &mut Run) -> Outcome {
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering::SeqCst;
    if job.cancelled.load(SeqCst) || job.running.stopped.load(SeqCst) {
        return Outcome::Failed("the request ended before the program started".into());
    }
    if Instant::now() >= job.deadline {
        return Outcome::TimedOut;
    }
    let mut child = match job
        .command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot start {}: {e}", job.program.display())),
    };
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
    // All three pipes are served from this thread with poll(2), none
    // blocking: no thread outlives the run, whatever a descendant holds.
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|p| p.as_fd()),
        stdout.as_ref().map(|p| p.as_fd()),
        stderr.as_ref().map(|p| p.as_fd()),
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
        stdin = None;
    }
    let program = job.program.display().to_string();
    let mut errors = ErrorLog::new("CGI", &program);
    let mut output = Vec::new();
    let mut ending = None;
    let mut buffer = vec![0u8; 64 * 1024];
    // Set once the leader has exited: what it wrote is served after this,
    // even if a descendant holds the output open.
    let mut grace_until: Option<Instant> = None;
    while stdout.is_some() {
        if job.cancelled.load(SeqCst) {
            ending = Some(Outcome::Failed(
                "the request ended while the program ran".into(),
            ));
            break;
        }
        let now = Instant::now();
        if now >= job.deadline {
            ending = Some(Outcome::TimedOut);
            break;
        }
        if grace_until.is_none() && has_exited(pid) {
            grace_until = Some(now + EXIT_GRACE);
        }
        if grace_until.is_some_and(|t| now >= t) {
            break;
        }
        let limit = grace_until.map_or(job.deadline, |t| t.min(job.deadline));
        let wait = nix::poll::PollTimeout::try_from(
            limit
                .saturating_duration_since(now)
                .min(CANCEL_CHECK)
                .as_millis() as i32,
        )
        .unwrap_or(nix::poll::PollTimeout::ZERO);
        let (ready_out, ready_err, ready_in) = {
            let mut fds = Vec::with_capacity(3);
            if let Some(p) = &stdout {
                fds.push(nix::poll::PollFd::new(
                    p.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
            if let Some(p) = &stderr {
                fds.push(nix::poll::PollFd::new(
                    p.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
            if let Some(p) = &stdin {
                fds.push(nix::poll::PollFd::new(
                    p.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                ));
            }
            match nix::poll::poll(&mut fds, wait) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => break,
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let err_at = 1;
            let in_at = 1 + usize::from(stderr.is_some());
            (
                ready(0),
                stderr.is_some() && ready(err_at),
                stdin.is_some() && ready(in_at),
            )
        };
        if ready_in {
            if let Some(pipe) = &mut stdin {
                if piece.is_empty() {
                    match body.piece(fed, 64 * 1024) {
                        Ok(next) => piece = next,
                        Err(e) => {
                            ending = Some(Outcome::Failed(format!(
                                "the request body could not be read back: {e}"
                            )));
                            break;
                        }
                    }
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
                stdin = None; // end of input
            }
        }
        if ready_err {
            if let Some(pipe) = &mut stderr {
                match pipe.read(&mut buffer) {
                    Ok(0) => stderr = None,
                    Ok(n) => errors.take(&buffer[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => stderr = None,
                }
            }
        }
        if ready_out {
            if let Some(pipe) = &mut stdout {
                match pipe.read(&mut buffer) {
                    Ok(0) => stdout = None,
                    Ok(n) => {
                        output.extend_from_slice(&buffer[..n]);
                        if output.len() as u64 > job.max_output {
                            ending = Some(Outcome::TooLarge);
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => stdout = None,
                }
            }
        }
    }
    if ending.is_none() && grace_until.is_none() {
        // The output ended: the program has a moment to exit, then its
        // group goes and what it wrote is served.
        wait_for_exit(
            pid,
            (Instant::now() + EXIT_GRACE).min(job.deadline),
            &job.cancelled,
        );
    }
    // Our ends of the pipes close here: nothing is left to block on them.
    drop((stdin, stdout, stderr));
    kill();
    job.running
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid.as_raw());
    let _ = child.wait();
    ending.unwrap_or(Outcome::Output(output))
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

/// The module's threads, made with the first run.
struct Shared {
    runs: OnceLock<Background<Run>>,
    running: Arc<Running>,
}

impl Shared {
    fn runs(&self, max_instances: usize) -> &Background<Run> {
        self.runs.get_or_init(|| {
            let threads = if max_instances == 0 {
                4 * std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                max_instances
            };
            Background::with_threads("riis-cgi", threads, QUEUED_RUNS, run)
        })
    }
}

/// Where the instance is.
enum State {
    Idle,
    /// Reading the request body.
    Reading(BodySpool),
    /// The program runs; its outcome arrives here.
    Running(Arc<Mutex<Option<Outcome>>>),
}

/// The module instance: one per request.
pub struct Cgi {
    config: Section<CgiConfig>,
    shared: Arc<Shared>,
    state: State,
    /// Tells the program's thread the request is gone.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Cgi {
    /// The request ended: a program still queued does not start, one still
    /// running is ended.
    fn drop(&mut self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
        let config = ctx.config(self.config);
        let (timeout, max_output, max_instances, pass_authorization) = (
            Duration::from_secs(config.timeout),
            config.max_response_size,
            config.max_instances,
            config.pass_authorization,
        );
        let program = ctx.physical_path().to_path_buf();
        let command = command(ctx, &program, body.len(), pass_authorization);
        let result = Arc::new(Mutex::new(None));
        let now = Instant::now();
        let job = Run {
            command,
            program,
            body,
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400)),
            max_output,
            result: result.clone(),
            done: ctx.completion_handle(),
            cancelled: self.cancelled.clone(),
            running: self.shared.running.clone(),
        };
        if self.shared.runs(max_instances).queue(job).is_err() {
            return fail(
                ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                "too many CGI programs running and waiting",
            );
        }
        self.state = State::Running(result);
        RequestNotificationStatus::Pending
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
    tracing::warn!(url = %ctx.request().raw_url(), "CGI: {why}");
    let finished = crate::end_with_error(ctx, status, substatus, ModuleError::E_FAIL);
    ctx.response_mut()
        .set_error_description(format!("CGI: {why}"));
    finished
}

/// The program's command: its path, folder and RFC 3875 environment.
fn command(
    ctx: &HttpContext,
    program: &std::path::Path,
    body_len: u64,
    pass_authorization: bool,
) -> Command {
    let mut command = Command::new(program);
    if let Some(folder) = program.parent() {
        command.current_dir(folder);
    }
    command.env_clear();
    command.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    let root = &ctx.virtual_directory().physical_path;
    crate::gateway::meta_variables(
        ctx,
        program,
        root,
        body_len,
        pass_authorization,
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
            State::Running(result) => {
                let outcome = result.lock().unwrap_or_else(|e| e.into_inner()).take();
                match outcome {
                    Some(Outcome::Output(output)) => match parse_output(output) {
                        Ok((head, body)) => {
                            head.apply(ctx);
                            ctx.response_mut().write(body);
                            RequestNotificationStatus::Continue
                        }
                        Err(why) => fail(ctx, StatusCode::BAD_GATEWAY, 2, &why),
                    },
                    Some(Outcome::TimedOut) => {
                        let timeout = ctx.config(self.config).timeout;
                        fail(
                            ctx,
                            StatusCode::BAD_GATEWAY,
                            1,
                            &format!("the program ran longer than cgi.timeout ({timeout} s) and was ended"),
                        )
                    }
                    Some(Outcome::TooLarge) => {
                        let max = ctx.config(self.config).max_response_size;
                        fail(
                            ctx,
                            StatusCode::BAD_GATEWAY,
                            0,
                            &format!("the program wrote more than cgi.max_response_size ({max} bytes) and was ended"),
                        )
                    }
                    Some(Outcome::Failed(why)) => fail(ctx, StatusCode::BAD_GATEWAY, 0, &why),
                    None => fail(
                        ctx,
                        StatusCode::BAD_GATEWAY,
                        0,
                        "the program's outcome was lost",
                    ),
                }
            }
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
        runs: OnceLock::new(),
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
            cancelled: Arc::default(),
        }))
    }

    fn terminate(&self) {
        self.shared.running.end_all();
    }
}
