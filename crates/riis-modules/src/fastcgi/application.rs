//! FastCGI applications that riis starts itself, as IIS's FastCGI module
//! does with the `<application fullPath=…>` of its `<fastCgi>` section: PHP's
//! `php-cgi`, or any program that is a FastCGI responder when its standard
//! input is a listening socket (the FastCGI convention,
//! `FCGI_LISTENSOCK_FILENO`).
//!
//! At the first request that needs it, riis makes a Unix socket in a
//! private temporary folder, listens on it, and starts `instances`
//! processes, each with the listening socket as its standard input: they
//! take connections from it in turn, and the exchange connects to it as to
//! any `unix:` address. A process that exits is started again, and what it
//! forked is killed with it. One that fails (exits with an error or a
//! signal, or within a second of starting without the application having
//! answered a request meanwhile, or cannot start) counts towards
//! `rapid_fails_per_minute`: past it, the application is stopped and its
//! requests get 503 until the configuration is loaded again (IIS's rapid
//! fail protection). If the first start fails (no socket could be made),
//! each request tries again. The processes are stopped (SIGTERM to each one's
//! process group, SIGKILL two seconds later) when the configuration that
//! started them retires or the server stops; each process group holds the
//! processes a program forks (`PHP_FCGI_CHILDREN`).
//!
//! Each configuration keeps its own processes: a reload starts new ones at
//! its first request, and the old ones stop once the old configuration's
//! requests are done, as IIS recycles its FastCGI processes on a change.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::backend::Address;

/// The most `instances` an application may have.
const MAX_INSTANCES: usize = 256;

/// How often exited processes are looked for. A process that ended leaves
/// its connections waiting in the socket's queue until the next one starts:
/// with `php-cgi` recycling every few requests, a longer pause caps the
/// application's rate (200 ms gave 50 requests a second with
/// `PHP_FCGI_MAX_REQUESTS = 5`). A look is a `waitpid` per process.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// How long stopping processes get before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A process that ends sooner than this after it started counts as failed
/// unless the application answered requests meanwhile: one that exits at
/// once would otherwise be started again for ever, and serve nothing, while
/// `php-cgi` under load ends as often as its `PHP_FCGI_MAX_REQUESTS` say,
/// cleanly, and is started again as IIS recycles it.
const STAY_UP: Duration = Duration::from_secs(1);

/// The `application` table of the `fastcgi` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationConfig {
    /// The program (IIS's `fullPath`), relative to the configuration's
    /// folder; it must be an executable file.
    #[serde(deserialize_with = "program")]
    pub path: PathBuf,
    /// Its arguments (IIS's `arguments`).
    #[serde(default)]
    pub arguments: Vec<String>,
    /// Variables added to the environment riis runs in (IIS's
    /// `environmentVariables`), such as `PHP_FCGI_MAX_REQUESTS`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// How many processes run (IIS's `maxInstances`).
    #[serde(default = "default_instances", deserialize_with = "instances")]
    pub instances: usize,
    /// Failed exits within a minute past which the application is stopped
    /// (IIS's `rapidFailsPerMinute`).
    #[serde(default = "default_rapid_fails")]
    pub rapid_fails_per_minute: usize,
}

fn default_instances() -> usize {
    4
}

fn default_rapid_fails() -> usize {
    10
}

fn instances<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if (1..=MAX_INSTANCES).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "from 1 to {MAX_INSTANCES} processes"
        )))
    }
}

/// A program path, resolved and checked while the configuration loads.
fn program<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    use std::os::unix::fs::PermissionsExt;
    let text = String::deserialize(d)?;
    let joined = riis_pipeline::configuration_folder().join(text);
    // Absolute, so that it is never looked for on the `PATH` (a bare
    // `php-cgi` beside a configuration given as a bare file name).
    let path = std::path::absolute(&joined).unwrap_or(joined);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err(serde::de::Error::custom(format!(
            "{} is not an executable file",
            path.display()
        ))),
        Err(e) => Err(serde::de::Error::custom(format!("{}: {e}", path.display()))),
    }
}

/// Where an application is in its life.
enum Phase {
    NotStarted,
    Running,
    /// Stopped by rapid fail protection, or could not start: why.
    Failed(String),
    Stopped,
}

/// An application's processes and their socket.
struct Run {
    phase: Phase,
    /// The private folder of the socket (removed when dropped).
    folder: Option<tempfile::TempDir>,
    socket: PathBuf,
    listener: Option<UnixListener>,
    /// The processes' standard error: one pipe, read into the log (not the
    /// server's own standard error: an orphan left holding that would keep
    /// whatever reads it, a terminal or a test, waiting).
    stderr: Option<OwnedFd>,
    /// Each with when it started and [`Application::answered`] then.
    processes: Vec<(Child, Instant, u64)>,
    /// When processes failed, within the last minute.
    fails: VecDeque<Instant>,
}

/// One application of a configuration, started at its first request.
pub(super) struct Application {
    config: ApplicationConfig,
    run: Mutex<Run>,
    /// Wakes the supervisor when the application stops.
    stopping: Condvar,
    /// Requests the application began to answer (its first bytes came).
    answered: Arc<AtomicU64>,
}

impl Application {
    pub(super) fn new(config: ApplicationConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            run: Mutex::new(Run {
                phase: Phase::NotStarted,
                folder: None,
                socket: PathBuf::new(),
                listener: None,
                stderr: None,
                processes: Vec::new(),
                fails: VecDeque::new(),
            }),
            stopping: Condvar::new(),
            answered: Arc::default(),
        })
    }

    /// What counts the requests the application answered; the exchange
    /// adds one when an answer's first bytes come.
    pub(super) fn answered(&self) -> Arc<AtomicU64> {
        self.answered.clone()
    }

    /// Whether this is the application of `config`.
    pub(super) fn is_for(&self, config: &ApplicationConfig) -> bool {
        self.config == *config
    }

    fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the application listens, starting it at the first call.
    /// `Err`: it cannot serve (503, with why).
    pub(super) fn address(self: &Arc<Self>) -> Result<Address, String> {
        let mut run = self.lock();
        match &run.phase {
            Phase::Running => return Ok(Address::Unix(run.socket.clone())),
            Phase::Failed(why) => return Err(why.clone()),
            Phase::Stopped => return Err("the FastCGI application was stopped".to_owned()),
            Phase::NotStarted => {}
        }
        if let Err(e) = self.start(&mut run) {
            // The next request tries again: the cause may pass (a full
            // disk, a fork refused for a moment).
            let why = format!(
                "the FastCGI application {} could not start: {e}",
                self.config.path.display()
            );
            tracing::error!("{why}");
            stop_processes(&mut run);
            return Err(why);
        }
        run.phase = Phase::Running;
        let supervised = self.clone();
        let started = std::thread::Builder::new()
            .name("riis-fastcgi-app".to_owned())
            .spawn(move || supervised.supervise());
        if let Err(e) = started {
            let why = format!("cannot watch the FastCGI application: {e}");
            stop_processes(&mut run);
            run.phase = Phase::Failed(why.clone());
            return Err(why);
        }
        tracing::info!(
            program = %self.config.path.display(),
            processes = self.config.instances,
            "FastCGI application started"
        );
        Ok(Address::Unix(run.socket.clone()))
    }

    /// Makes the socket and starts the processes.
    fn start(&self, run: &mut Run) -> std::io::Result<()> {
        let folder = tempfile::Builder::new().prefix("riis-fastcgi-").tempdir()?;
        let socket = folder.path().join("socket");
        let listener = UnixListener::bind(&socket)?;
        run.folder = Some(folder);
        run.socket = socket;
        // Close-on-exec: no other program riis starts may hold it.
        let (errors, stderr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let program = self.config.path.display().to_string();
        std::thread::Builder::new()
            .name("riis-fastcgi-log".to_owned())
            .spawn(move || log_lines(errors, &program))?;
        for _ in 0..self.config.instances {
            let process = self.spawn(&listener, &stderr)?;
            let answered = self.answered.load(Ordering::Relaxed);
            run.processes.push((process, Instant::now(), answered));
        }
        run.listener = Some(listener);
        run.stderr = Some(stderr);
        Ok(())
    }

    /// Starts one process on `listener`, its standard error to `stderr`.
    fn spawn(&self, listener: &UnixListener, stderr: &OwnedFd) -> std::io::Result<Child> {
        let socket: OwnedFd = listener.try_clone()?.into();
        Command::new(&self.config.path)
            .args(&self.config.arguments)
            .envs(&self.config.environment)
            .stdin(Stdio::from(socket))
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr.try_clone()?))
            // A group of its own: what it forks stops with it.
            .process_group(0)
            .spawn()
    }

    /// Starts processes again as they end, keeping `instances` running,
    /// until the application stops or fails too often.
    fn supervise(self: Arc<Self>) {
        use nix::sys::signal::{killpg, Signal};
        let rapid = self.config.rapid_fails_per_minute;
        let mut run = self.lock();
        loop {
            run = self
                .stopping
                .wait_timeout(run, CHECK_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if !matches!(run.phase, Phase::Running) {
                return;
            }
            let now = Instant::now();
            let mut index = 0;
            while index < run.processes.len() {
                let exited = match run.processes[index].0.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) | Err(_) => {
                        index += 1;
                        continue;
                    }
                };
                // Reaped by `try_wait` above.
                #[allow(clippy::zombie_processes)]
                let (ended, since, answered_then) = run.processes.swap_remove(index);
                // What it forked goes with it: a master's orphaned workers
                // (`PHP_FCGI_CHILDREN`) would go on taking connections.
                let _ = killpg(group(&ended), Signal::SIGKILL);
                let served = self.answered.load(Ordering::Relaxed) > answered_then;
                if !exited.success() || (now.duration_since(since) < STAY_UP && !served) {
                    tracing::warn!(
                        program = %self.config.path.display(),
                        "a FastCGI application process ended: {exited}"
                    );
                    run.fails.push_back(now);
                } else {
                    tracing::debug!(
                        program = %self.config.path.display(),
                        "a FastCGI application process ended cleanly; it is started again"
                    );
                }
            }
            while run
                .fails
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                run.fails.pop_front();
            }
            // Back to `instances`; a process that cannot start counts as
            // one that failed, so this ends.
            while run.processes.len() < self.config.instances && run.fails.len() <= rapid {
                let (Some(listener), Some(stderr)) = (&run.listener, &run.stderr) else {
                    break;
                };
                let started = self.spawn(listener, stderr);
                match started {
                    Ok(process) => {
                        let answered = self.answered.load(Ordering::Relaxed);
                        run.processes.push((process, now, answered));
                    }
                    Err(e) => {
                        tracing::warn!(
                            program = %self.config.path.display(),
                            "a FastCGI application process could not start: {e}"
                        );
                        run.fails.push_back(now);
                    }
                }
            }
            if run.fails.len() > rapid {
                let why = format!(
                    "the FastCGI application {} failed {} times within a minute (rapid_fails_per_minute = {rapid}); it stays stopped until the configuration is loaded again",
                    self.config.path.display(),
                    run.fails.len()
                );
                tracing::error!("{why}");
                stop_processes(&mut run);
                run.phase = Phase::Failed(why);
                return;
            }
        }
    }

    /// Stops the processes (the configuration retires, or the server
    /// stops).
    pub(super) fn stop(&self) {
        let mut run = self.lock();
        stop_processes(&mut run);
        run.phase = Phase::Stopped;
        self.stopping.notify_all();
    }

    /// Processes running (their leaders).
    pub(super) fn processes(&self) -> usize {
        self.lock().processes.len()
    }
}

/// SIGTERM to each process's group and the socket and its folder gone
/// now; then, on a thread of its own (so that no worker waits, nor a
/// request for the application's lock), SIGKILL to those still there after
/// [`STOP_GRACE`].
fn stop_processes(run: &mut Run) {
    use nix::sys::signal::{killpg, Signal};
    let processes: Vec<Child> = std::mem::take(&mut run.processes)
        .into_iter()
        .map(|(child, _, _)| child)
        .collect();
    for child in &processes {
        let _ = killpg(group(child), Signal::SIGTERM);
    }
    run.listener = None;
    run.stderr = None;
    run.folder = None;
    if processes.is_empty() {
        return;
    }
    // Shared with the thread, so that the caller still has them if the
    // thread cannot start.
    let ending = Arc::new(Mutex::new(Some(processes)));
    let taken = ending.clone();
    let spawned = std::thread::Builder::new()
        .name("riis-fastcgi-stop".to_owned())
        .spawn(move || {
            let work = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(processes) = work {
                finish_stopping(processes);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("stopping FastCGI processes on the caller's thread: {e}");
        let work = ending.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(processes) = work {
            finish_stopping(processes);
        }
    }
}

/// Logs what the processes write to their standard error, a line at a
/// time, until the last of them (and riis's own end) is closed.
fn log_lines(errors: OwnedFd, program: &str) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(std::fs::File::from(errors)).lines() {
        let Ok(line) = line else { break };
        if !line.trim().is_empty() {
            tracing::warn!(program, "FastCGI application: {line}");
        }
    }
}

/// The process group a child leads (it was started in one of its own).
fn group(child: &Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(child.id() as i32)
}

/// Waits up to [`STOP_GRACE`] for `processes` to end, then kills what is
/// left of their groups (a leader that ended may leave what it forked),
/// and reaps them all.
fn finish_stopping(mut processes: Vec<Child>) {
    use nix::sys::signal::{killpg, Signal};
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline
        && processes
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut child in processes {
        let _ = killpg(group(&child), Signal::SIGKILL);
        let _ = child.wait();
    }
}
