//! The `riis` command: serve sites, check a configuration, reload or ask
//! the status of a running server, convert an IIS `web.config`.

mod web_config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use riis_server::{defaults, Server, ServerConfig};

/// mimalloc's thread-local free lists suit a server that allocates and frees
/// small objects per request on every worker thread; glibc's allocator costs
/// about 3% of a small static request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// riis: the IIS integrated pipeline, as a web server for Linux.
#[derive(Debug, Parser)]
#[command(name = "riis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured sites (with no options: the example site on
    /// http://127.0.0.1:8080).
    Serve {
        /// The configuration file.
        #[arg(long, short, conflicts_with = "root")]
        config: Option<PathBuf>,
        /// Serve this folder with the default modules, no file needed.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Listen here instead of every configured binding (host names are
        /// kept): `127.0.0.1:8080`, `[::1]:8080`, `*:8080`, `localhost:8080`.
        #[arg(long, value_parser = listen_address)]
        listen: Option<SocketAddr>,
    },
    /// Check a configuration file and exit: 0 when it is valid, 1 with the
    /// error otherwise.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file, then ask the server running it (found
    /// through `[server] pid_file`) to reload it: SIGHUP.
    Reload {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the runtime status of the server running a configuration (found
    /// through `[server] pid_file`): its connections, requests and modules,
    /// and what global modules answer to the RscaQuery `status`.
    Status {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Convert the `system.webServer` settings of an IIS `web.config` to
    /// riis configuration (URL Rewrite rules and maps, default documents,
    /// custom headers, HTTP redirection, static content, error pages,
    /// request filtering, IP rules, the applications of httpPlatform and
    /// aspNetCore and their handlers, WebDAV authoring and its handler):
    /// printed to standard output; what has
    /// no equivalent is named on standard error and in comments.
    ImportWebConfig {
        /// The `web.config` file.
        file: PathBuf,
        /// The URL path of the folder the file is in (`/blog`), when not
        /// the site's root: the output is then a `[[sites.locations]]`
        /// entry, whose rules keep their meaning there.
        #[arg(long)]
        location: Option<String>,
    },
    /// List the requests in flight of the server running a configuration,
    /// as IIS's `appcmd list requests` does: for each request that waits,
    /// how long it has run and the notification, module and thing it waits
    /// for; and any worker thread a module call holds.
    Requests {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// List only requests that have run for at least this many
        /// milliseconds (IIS's `/elapsed`).
        #[arg(long, default_value_t = 0)]
        elapsed: u64,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIIS_LOG")
        // h2 warns once per connection it closes for a client's error, and
        // rustls once per alert it sends (a refused renegotiation), without
        // the client and without a limit; riis logs what matters of those
        // itself, rate-limited.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=error,rustls=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (the terminal riis started from
        // closed: EIO; the program reading it exited: EPIPE) loses its
        // lines and nothing else: the subscriber's own report of the
        // failure goes to standard error through `eprintln!`, which panics
        // there, and would end the server at its next log line.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Loads the configuration the way `serve` was asked to: a file, a folder
/// with the defaults, or the embedded defaults, with `--listen` applied. A
/// reload runs the same steps again.
fn load(
    config: Option<&Path>,
    root: Option<&Path>,
    listen: Option<SocketAddr>,
) -> Result<ServerConfig, riis_server::ConfigError> {
    let mut loaded = match (config, root) {
        (Some(path), _) => ServerConfig::load(path),
        (None, Some(root)) => defaults::root_config(root),
        (None, None) => defaults::default_config(),
    }?;
    if let Some(addr) = listen {
        loaded.override_listen(addr)?;
    }
    Ok(loaded)
}

/// `n` things, in the singular for one: `1 site`, `2 sites`.
fn counted(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `--listen`'s value, written as a binding's address and port are.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let binding = riis_server::config::Binding::parse(text)?;
    if binding.tls || binding.host.is_some() || text.contains("://") {
        return Err(format!(
            "`{text}`: --listen takes an address and a port (`127.0.0.1:8080`), \
             without a scheme or host name"
        ));
    }
    Ok(binding.addr)
}

/// `riis reload`: validate, then signal the running server.
fn reload(config: &Path) -> Result<String, String> {
    let loaded = ServerConfig::load(config).map_err(|e| e.to_string())?;
    let pid_file = loaded.pid_file();
    let report = riis_server::status_file(&loaded);
    let checked = Server::new(loaded).map_err(|e| e.to_string())?;
    for warning in checked.warnings() {
        eprintln!("riis: warning: {warning}");
    }
    if let Some(warning) = checked.discard() {
        eprintln!("riis: warning: {warning}");
    }
    let pid = running_pid(config, pid_file)?;
    // The server reloads the file it was started with: validating another
    // one (a copy sharing the pid file) and reporting success would check
    // nothing it will read.
    let mut before = None;
    if let Some(report) = &report {
        let text = ask_status(pid, report)?;
        if text.lines().any(|l| l == "state: stopping") {
            return Err(format!(
                "riis (process {pid}) is shutting down and takes no reload"
            ));
        }
        before = report_number(&text, "reloads").zip(report_number(&text, "reloads_refused"));
        let running = text
            .lines()
            .find_map(|l| l.strip_prefix("configuration: "))
            .map(PathBuf::from);
        let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if let Some(running) = running.filter(|running| !same(running, config)) {
            return Err(format!(
                "riis (process {pid}) runs {}, not {}: a reload reads its own file; \
                 edit that one, or start a server for this one",
                running.display(),
                config.display()
            ));
        }
    }
    signal(pid, nix::sys::signal::Signal::SIGHUP)?;
    // Wait for the outcome, as `caddy reload` does: a refused reload is a
    // failure of this command (for `systemctl reload` too), not only a line
    // in the server's log.
    if let (Some(report), Some((finished, refused))) = (report, before) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut under_way = None;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let text = ask_status(pid, &report)?;
            under_way = report_number(&text, "reload_under_way_ms");
            if report_number(&text, "reloads").is_some_and(|n| n > finished) {
                if report_number(&text, "reloads_refused").is_some_and(|n| n > refused) {
                    let why = text
                        .lines()
                        .find_map(|l| l.strip_prefix("last_reload_refusal: "))
                        .unwrap_or("see its log");
                    return Err(format!(
                        "riis (process {pid}) refused the reload and keeps its configuration: {why}"
                    ));
                }
                // Applied, but not all of it: `[server]` is read at start
                // only, and someone reading this (or `systemctl reload`'s
                // output) must not take the change for done.
                let kept = text
                    .lines()
                    .find_map(|l| l.strip_prefix("last_reload_kept: "))
                    .map(|keys| {
                        format!("; [server] changes need a restart and were not applied: {keys}")
                    })
                    .unwrap_or_default();
                return Ok(format!(
                    "riis (process {pid}) reloaded {}{kept}",
                    config.display()
                ));
            }
        }
        return Err(match under_way {
            // A module's ConfigurationChange or ApplicationStart that does
            // not return, most likely.
            Some(ms) => format!(
                "riis (process {pid}) has been reloading for {} s and has not finished; \
                 a module of the new configuration may be holding it up (its log may say which)",
                ms / 1000
            ),
            None => format!(
                "riis (process {pid}) did not finish the reload within 30 seconds; its log says how it went"
            ),
        });
    }
    Ok(format!(
        "asked riis (process {pid}) to reload {}; its log says whether the new configuration is in force",
        config.display()
    ))
}

/// The number on a `name: N` line of a status report.
fn report_number(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(": ")?
            .trim()
            .parse()
            .ok()
    })
}

/// `riis status`: ask the running server for its report (SIGUSR1) and
/// show it.
fn status(config: &Path) -> Result<String, String> {
    // Only `[server] pid_file` is read: the running server can be asked
    // while its file is being edited.
    let pid_file = ServerConfig::pid_file_of(config).map_err(|e| e.to_string())?;
    let pid = running_pid(config, pid_file.clone())?;
    let report = pid_file
        .map(|p| riis_server::status_file_for(&p))
        .ok_or("riis status needs [server] pid_file")?;
    ask_status(pid, &report)
}

/// Prints what `riis status` or `riis requests` got, or the error.
fn print_report(report: Result<String, String>) -> ExitCode {
    match report {
        Ok(report) => {
            // A reader that stops early (`| head`) is not an error of
            // ours: what it did not take is simply not written.
            use std::io::Write;
            if !report.is_empty() {
                let _ = writeln!(std::io::stdout(), "{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("riis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `riis requests`: the `requests_waiting` count of the status report, its
/// `request:` lines for requests that have run for at least `elapsed`
/// milliseconds, and its `worker_held:` lines.
fn requests(config: &Path, elapsed: u64) -> Result<String, String> {
    let report = status(config)?;
    let lines: Vec<&str> = report
        .lines()
        .filter(|line| {
            line.starts_with("requests_waiting: ")
                || line.starts_with("worker_held:")
                || line.strip_prefix("request: ").is_some_and(|fields| {
                    fields
                        .split(' ')
                        .find_map(|f| f.strip_prefix("elapsed_ms="))
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .is_some_and(|ms| ms >= elapsed)
                })
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Asks process `pid` for its status report (SIGUSR1) and reads it from
/// `report`, where it writes it.
fn ask_status(pid: i32, report: &Path) -> Result<String, String> {
    // A report from before this request does not count.
    let _ = std::fs::remove_file(report);
    signal(pid, nix::sys::signal::Signal::SIGUSR1)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(report) {
            return Ok(text.trim_end().to_owned());
        }
        // A server that stopped meanwhile (it removes its report as it
        // exits) answers no more.
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return Err(format!("riis (process {pid}) stopped"));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "process {pid} wrote no status to {} within 5 seconds",
                report.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The process id in the pid file of `config`'s server, if a running riis
/// holds that file. A server keeps its pid file locked for as long as it
/// runs, so a file nobody holds is stale (the server was killed, or the
/// machine restarted) and its number may now belong to another program:
/// signalling it would be wrong.
fn running_pid(config: &Path, pid_file: Option<PathBuf>) -> Result<i32, String> {
    let Some(pid_file) = pid_file else {
        return Err(format!(
            "{}: set [server] pid_file so riis can find the running server",
            config.display()
        ));
    };
    let cannot_read =
        |e: std::io::Error| format!("cannot read {}: {e} (is riis running?)", pid_file.display());
    let file = std::fs::File::open(&pid_file).map_err(cannot_read)?;
    let text = std::io::read_to_string(&file).map_err(cannot_read)?;
    // 0 and negative numbers would signal process groups (kill(2)).
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| format!("{} does not hold a process id", pid_file.display()))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: no server is running under this pid file.
        Ok(_unlocked_on_drop) => Err(format!(
            "{} names process {pid}, but no riis holds it: the pid file is stale (is riis running?)",
            pid_file.display()
        )),
        Err((_, Errno::EWOULDBLOCK)) => Ok(pid),
        // A file system without locks: the file is all there is to go by.
        Err((_, e)) => {
            tracing::debug!(error = %e, "cannot test the pid file's lock");
            Ok(pid)
        }
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) -> Result<(), String> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| format!("cannot signal process {pid}: {e}"))
}

/// Writes this process's id to `path` and holds the file locked until the
/// process ends (`riis reload` and `riis status` refuse a file that no
/// process holds). Called once the addresses are bound, so a second
/// `riis serve` that cannot bind (the first one holds the address) never
/// replaces the running server's pid file; one that can bind (other
/// addresses, same pid file) stops here instead of taking the file over.
///
/// The file is opened at its name (made if missing, never through a
/// symbolic link: one planted in a shared folder would have the server
/// truncate its target), locked, and only then written: of two servers
/// started at once with the same pid file, exactly one gets the lock (a
/// file made under another name and renamed into place let the second
/// replace the first's). A stale file (no process holds it) is taken over.
fn write_pid_file(path: &Path) -> Result<PidFile, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let cannot =
        |e: &dyn std::fmt::Display| format!("cannot write the pid file {}: {e}", path.display());
    // A riis that stops removes its file, then lets go of the lock: a file
    // locked just after that is no longer the one at the name, and is
    // opened again. A lock held for a moment (`riis status` and `riis
    // reload` take a shared one to see whether a server holds the file) is
    // waited out, up to a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Non-blocking: a FIFO at the name must not hold the start.
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == Errno::ELOOP as i32 => {
                    cannot(&"it is a symbolic link; name the file itself")
                }
                _ => cannot(&e),
            })?;
        let opened = file.metadata().map_err(|e| cannot(&e))?;
        if !opened.is_file() {
            return Err(cannot(&"it is not a regular file"));
        }
        let mut content = Vec::new();
        let _ = (&mut file).take(64).read_to_end(&mut content);
        let pid = String::from_utf8_lossy(&content).into_owned();
        // A number, even one no process has (`-1`, a stale one), is an old
        // pid file's, to be replaced.
        if !(pid.trim().is_empty() || pid.trim().parse::<i64>().is_ok()) {
            // Something else lives at that name (the configuration itself,
            // once): replacing it, then removing it at exit, would lose it.
            return Err(format!(
                "the pid file {} exists and holds no process id: it is not a pid file; \
                 choose another path or remove it",
                path.display()
            ));
        }
        let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((_, Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                let pid = pid.trim();
                return Err(if pid.is_empty() {
                    format!(
                        "the pid file {} is locked by another process (a riis starting, or one reading it)",
                        path.display()
                    )
                } else {
                    format!(
                        "the pid file {} is held by another riis (process {pid})",
                        path.display()
                    )
                });
            }
            Err((_, e)) => return Err(cannot(&e)),
        };
        let still_there = std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.dev() == opened.dev() && m.ino() == opened.ino());
        if !still_there {
            if std::time::Instant::now() >= deadline {
                return Err(cannot(
                    &"it was removed or replaced each time riis opened it",
                ));
            }
            continue;
        }
        held.set_len(0).map_err(|e| cannot(&e))?;
        held.rewind().map_err(|e| cannot(&e))?;
        writeln!(held, "{}", std::process::id()).map_err(|e| cannot(&e))?;
        return Ok(PidFile {
            path: path.to_owned(),
            _held: held,
        });
    }
}

/// This process's pid file, held locked. Dropping it (at exit, or while a
/// panic unwinds) removes the file if it still names this process.
struct PidFile {
    path: PathBuf,
    _held: Flock<std::fs::File>,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            // The status report `riis status` last asked for goes too.
            let _ = std::fs::remove_file(riis_server::status_file_for(&self.path));
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Raises the soft limit of open files to the hard limit. Every connection,
/// and every file the file cache keeps open, is a descriptor; the usual soft
/// limit (1,024) would cap a server far below what it can hold. Go servers
/// such as Caddy do the same at start; the hard limit (systemd's
/// `LimitNOFILE`) stays the operator's.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}

fn main() -> ExitCode {
    // No transparent huge pages: with them, the allocator's arenas are
    // backed 2 MiB at a time, and a server holding many small per-connection
    // objects pays for whole huge pages it barely uses. Failure (an old
    // kernel) changes nothing else.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve {
            config,
            root,
            listen,
        } => {
            raise_open_files_limit();
            let loaded = match load(config.as_deref(), root.as_deref(), listen) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("riis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let pid_file = loaded.pid_file();
            let mut server = match Server::new(loaded) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("riis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for warning in server.warnings() {
                tracing::warn!("{warning}");
            }
            server.set_config_source(Arc::new(move || {
                load(config.as_deref(), root.as_deref(), listen)
            }));
            let mut written = None;
            let result = server.run_with(|| {
                if let Some(path) = &pid_file {
                    written = Some(write_pid_file(path)?);
                }
                Ok(())
            });
            drop(written);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("riis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => {
            match ServerConfig::load(&config).and_then(Server::new) {
                Ok(server) => {
                    for warning in server.warnings() {
                        eprintln!("riis: warning: {warning}");
                    }
                    println!(
                        "{}: configuration is valid ({}, {})",
                        config.display(),
                        counted(server.pipeline().module_names().count(), "module"),
                        counted(server.pipeline().sites().len(), "site")
                    );
                    if let Some(warning) = server.discard() {
                        eprintln!("riis: warning: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("riis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { config } => match reload(&config) {
            Ok(done) => {
                println!("riis: {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("riis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::ImportWebConfig { file, location } => {
            let converted = std::fs::read_to_string(&file)
                .map_err(|e| {
                    // Visual Studio and IIS Manager may save UTF-16.
                    let hint = if e.kind() == std::io::ErrorKind::InvalidData {
                        " (a file saved as UTF-16: `iconv -f UTF-16 -t UTF-8` first)"
                    } else {
                        ""
                    };
                    format!("{}: {e}{hint}", file.display())
                })
                .and_then(|xml| {
                    web_config::convert(&xml, location.as_deref())
                        .map_err(|e| format!("{}: {e}", file.display()))
                });
            match converted {
                Ok(converted) => {
                    print!("{}", converted.text);
                    for line in &converted.left_out {
                        eprintln!("riis: not converted: {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("riis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Requests { config, elapsed } => print_report(requests(&config, elapsed)),
        Command::Status { config } => print_report(status(&config)),
    }
}
