//! FastCgi's `application`: riis starts the FastCGI processes itself, as
//! IIS does. With PHP's `php-cgi` (started by riis; outside CI a machine
//! without it skips that test, in CI it is a failure: `.ci/run` installs
//! it), also behind shell scripts that misbehave first (write junk to
//! standard error, ignore SIGTERM), and with a program that only fails, for
//! the rapid fail protection.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

/// `php-cgi`, or a versioned `php-cgi8.2`, on the `PATH`; outside CI a
/// machine without it skips the test (`None`), in CI that is a failure.
fn php_cgi() -> Option<PathBuf> {
    let found = common::find_versioned_program("php-cgi", &[]);
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "php-cgi is missing (CI installs it: apt-get install php-cgi)"
        );
        eprintln!("skipped: php-cgi is not installed");
    }
    found
}

fn config(dir: &TempDir, application: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "CustomError"
[[modules]]
name = "FastCgi"

[[handlers]]
name = "PHP"
path = "*.php"
resource_type = "File"
modules = ["FastCgi"]

[fastcgi]
activity_timeout = 2
application = {application}

[[sites]]
name = "PHP"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    )
}

fn is_running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// Waits until none of `pids` runs; fails with `what` past `within`.
fn wait_until_gone(pids: &[u32], within: Duration, what: &str) {
    let start = Instant::now();
    while pids.iter().any(|&pid| is_running(pid)) {
        assert!(start.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn riis_starts_php_cgi_and_starts_again_what_exits() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application");
    dir.write("www/pid.php", "<?php echo getmypid();");
    // Each process ends after three requests (PHP's own recycling); riis
    // starts another.
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 2, environment = {{ PHP_FCGI_MAX_REQUESTS = \"3\" }} }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let resp = Connection::open(server.addr).get("/pid.php");
        assert_eq!(resp.status, 200, "{}", resp.text());
        pids.insert(resp.text().parse::<u32>().unwrap());
    }
    assert!(pids.len() >= 4, "{pids:?}");
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_processes: 2"), "{status}");
    // Stopping the server stops them.
    let last = pids.clone();
    server.terminate();
    wait_until_gone(
        &last.iter().copied().collect::<Vec<_>>(),
        Duration::from_secs(10),
        "php-cgi outlived riis",
    );
}

/// The sockets' folder lives under the temp dir; when a cleaner (or an
/// operator) removes it, the process starts again on a new socket in a new
/// folder at the next request, instead of every request getting 502 until
/// a reload.
#[test]
fn a_removed_socket_starts_the_application_again() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let config = config(
        &dir,
        &format!("{{ path = '{}', instances = 1 }}", php.display()),
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_riis"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("TMPDIR", &temp);
    let server = RunningBinary::from_command(command).unwrap();
    let first = Connection::open(server.addr).get("/pid.php");
    assert_eq!(first.status, 200, "{}", first.text());
    let folders: Vec<_> = std::fs::read_dir(&temp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("riis-fastcgi-")
        })
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    std::fs::remove_dir_all(&folders[0]).unwrap();
    let second = Connection::open(server.addr).get("/pid.php");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_ne!(first.text(), second.text(), "a new process answers");
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_processes: 1"), "{status}");
    // The old process was set aside to finish what it had: nothing, so it
    // stops now (one with a request stops after it, as the reload test
    // shows).
    let old = first.text().parse::<u32>().unwrap();
    wait_until_gone(
        &[old],
        Duration::from_secs(10),
        "the idle retired process still runs",
    );
    server.terminate();
}

/// A script path that is not a file is not passed on, whatever the
/// handler's `resource_type`: php-cgi would run the file it finds along the
/// path (`cgi.fix_pathinfo`), an upload as PHP.
#[test]
fn a_script_path_that_is_no_file_is_not_found_even_without_a_resource_type() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-pathinfo");
    dir.write("www/up/pic.jpg", "GIF89a<?php echo 'RAN AS PHP';");
    dir.write("www/real.php", "<?php echo 'real';");
    let config = config(&dir, &format!("{{ path = '{}' }}", php.display()));
    // An application mounted at a path answers URLs, not scripts: every
    // URL below it reaches the application (one front script here).
    dir.write("www/app.php", "<?php echo 'app';");
    let app = dir.path().join("www/app.php");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("resource_type = \"File\"\n", "")
        + &format!(
            "\n[[sites.locations]]\npath = \"/mounted\"\n\
             fastcgi = {{ script_name = \"/mounted\", params = {{ SCRIPT_FILENAME = '{}' }} }}\n\
             [[sites.locations.handlers]]\nname = \"Mounted\"\npath = \"*\"\nmodules = [\"FastCgi\"]\n",
            app.display()
        );
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mounted = Connection::open(server.addr).get("/mounted/users/7");
    assert_eq!(mounted.status, 200, "{}", mounted.text());
    assert_eq!(mounted.text(), "app");
    for path in [
        "/up/pic.jpg/x.php",
        "/up/pic.jpg%2fx.php",
        "/up/pic.jpg/.php",
        "/nothing.php",
    ] {
        let resp = Connection::open(server.addr).get(path);
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
        assert!(!resp.text().contains("RAN AS PHP"), "{path}");
    }
    let resp = Connection::open(server.addr).get("/real.php");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "real");
    // Stopped, not killed: a killed riis leaves its processes running.
    server.terminate();
}

/// With `allow_path_info`, `/app/index.php/users/7` runs `index.php` with
/// the rest as PATH_INFO, as PHP front controllers expect, and a path past
/// a file that is no script still runs nothing.
#[test]
fn a_script_takes_the_path_after_it_as_path_info() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-allow-path-info");
    dir.write(
        "www/app/index.php",
        "<?php echo $_SERVER['SCRIPT_NAME'], '|', $_SERVER['PATH_INFO'] ?? '-', '|', \
         $_SERVER['PHP_SELF'], '|', $_SERVER['REQUEST_URI'], '|', \
         $_SERVER['SCRIPT_FILENAME'] === __FILE__ ? 'this file' : $_SERVER['SCRIPT_FILENAME'], '|', \
         $_SERVER['PATH_TRANSLATED'] ?? '-';",
    );
    dir.write("www/up/pic.jpg", "GIF89a<?php echo 'RAN AS PHP';");
    let config = config(&dir, &format!("{{ path = '{}' }}", php.display()));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "modules = [\"FastCgi\"]",
        "allow_path_info = true\nmodules = [\"FastCgi\"]",
    );
    std::fs::write(&config, text).unwrap();
    let root = dir.path().join("www");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    let resp = Connection::open(server.addr).get("/app/index.php/users/7?x=1");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.text(),
        format!(
            "/app/index.php|/users/7|/app/index.php/users/7|/app/index.php/users/7?x=1|this file|{}/users/7",
            root.display()
        )
    );
    let resp = Connection::open(server.addr).get("/app/index.php");
    assert_eq!(
        resp.text(),
        "/app/index.php||/app/index.php|/app/index.php|this file|-"
    );
    for path in ["/up/pic.jpg/x.php/y", "/app/missing.php/users/7"] {
        let resp = Connection::open(server.addr).get(path);
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
        assert!(!resp.text().contains("RAN AS PHP"), "{path}");
    }
    server.terminate();
}

/// php-cgi ending cleanly after its requests, again and again within a
/// second of starting (PHP's recycling under load), is not a failure: the
/// rapid fail protection counts crashes, and every request is answered.
#[test]
fn quick_clean_recycling_is_not_a_failure() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-recycling");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 1, rapid_fails_per_minute = 2, environment = {{ PHP_FCGI_MAX_REQUESTS = \"2\" }} }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..24 {
        let resp = Connection::open(server.addr).get("/pid.php");
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        pids.insert(resp.text().parse::<u32>().unwrap());
    }
    // Twelve processes or so, most of them up for well under a second.
    assert!(pids.len() >= 6, "{pids:?}");
    server.terminate();
}

/// A reload keeps the processes of an application whose settings did not
/// change (IIS recycles them only when their `<application>` changes), and
/// replaces those whose settings did; `monitor_changes_to` recycles them
/// when its file changes.
#[test]
fn reloads_keep_the_processes_and_a_monitored_file_recycles_them() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-reload");
    dir.write(
        "www/pid.php",
        "<?php echo getmypid(), ' ', ini_get('memory_limit');",
    );
    dir.write("www/slow.php", "<?php sleep(2); echo getmypid();");
    dir.write("php.ini", "memory_limit = 64M\n");
    let ini = dir.path().join("php.ini");
    let application = |instances: usize| {
        format!(
            "{{ path = '{}', arguments = ['-c', '{}'], instances = {instances}, \
             monitor_changes_to = 'php.ini' }}",
            php.display(),
            ini.display()
        )
    };
    let config = config(&dir, &application(1));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let pid_and_limit = || {
        let resp = Connection::open(server.addr).get("/pid.php");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let text = resp.text();
        let (pid, limit) = text.split_once(' ').unwrap();
        (pid.parse::<u32>().unwrap(), limit.to_owned())
    };
    let reload = || {
        let out = common::riis_reload(&config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let (first, limit) = pid_and_limit();
    assert_eq!(limit, "64M");

    // A change elsewhere in the file: the same process answers.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("activity_timeout = 2", "activity_timeout = 3"),
    )
    .unwrap();
    reload();
    // Taken up when the configuration started, before any request of its.
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_processes: 1"), "{status}");
    assert_eq!(pid_and_limit().0, first);

    // The monitored file changes while a request runs: new processes read
    // it, and the request finishes on its process, which then stops.
    let addr = server.addr;
    let slow = std::thread::spawn(move || Connection::open(addr).get("/slow.php"));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.path().join("php.ini"), "memory_limit = 96M\n").unwrap();
    let start = Instant::now();
    let recycled = loop {
        let (pid, limit) = pid_and_limit();
        if pid != first {
            assert_eq!(limit, "96M");
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no recycling 10 s after php.ini changed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(slow.text().parse::<u32>().unwrap(), first);
    wait_until_gone(
        &[first],
        Duration::from_secs(10),
        "the retired process outlived its last request by 10 s",
    );

    // The application's settings change: new processes.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&application(1), &application(2))).unwrap();
    reload();
    let (pid, _) = pid_and_limit();
    assert_ne!(pid, recycled);
    server.terminate();
    let start = Instant::now();
    // The recycled process too, which had its requests' grace.
    while [first, recycled, pid].into_iter().any(is_running) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "php-cgi outlived riis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A script that goes on after its client left (`ignore_user_abort`)
/// keeps its process through a recycle: the process is retired, not
/// stopped, until the request could have ended.
#[test]
fn a_request_whose_client_left_finishes_through_a_recycle() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-abandoned");
    let done = dir.path().join("done");
    dir.write(
        "www/job.php",
        format!(
            // A signal cuts `sleep` short: the loop runs its whole time
            // unless the process is killed.
            "<?php ignore_user_abort(true); $end = microtime(true) + 6; \
             while (microtime(true) < $end) {{ usleep(20000); }} file_put_contents('{}', 'done');",
            done.display()
        ),
    );
    dir.write("php.ini", "memory_limit = 64M\n");
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', arguments = ['-c', '{}'], instances = 1, monitor_changes_to = 'php.ini' }}",
            php.display(),
            dir.path().join("php.ini").display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // The client sends the request whole and leaves.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /job.php HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("php.ini"), "memory_limit = 96M\n").unwrap();
    let start = Instant::now();
    while !done.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the script was stopped with its process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.terminate();
}

/// A reload that takes FastCgi out of the module list leaves no
/// configuration to take the processes over: they stop then, not when a
/// wait for one ends, and a server stopped right after leaves none behind.
#[test]
fn a_reload_without_fastcgi_leaves_no_process_behind() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-removed");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config(
        &dir,
        &format!("{{ path = '{}', instances = 1 }}", php.display()),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/pid.php");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let pid: u32 = resp.text().parse().unwrap();
    // The same site, served by StaticFile alone.
    let text = std::fs::read_to_string(&config).unwrap();
    let site = &text[text.find("[[sites]]").unwrap()..];
    std::fs::write(
        &config,
        format!(
            "[server]\npid_file = \"riis.pid\"\n[[modules]]\nname = \"StaticFile\"\n\
             [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n{site}"
        ),
    )
    .unwrap();
    let out = common::riis_reload(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    wait_until_gone(&[pid], Duration::from_secs(10), "php-cgi outlived riis");
}

/// A process that exits with an error, or at once with success before the
/// application answered anything, counts as failed.
#[test]
fn an_application_that_keeps_failing_is_stopped_with_503() {
    for script in ["#!/bin/sh\nexit 3\n", "#!/bin/sh\nexit 0\n"] {
        keeps_failing(script);
    }
}

fn keeps_failing(script: &str) {
    let dir = TempDir::new("fastcgi-application-fails");
    dir.write("www/any.php", "");
    let program = dir.write("fails.sh", script);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = config(
        &dir,
        "{ path = 'fails.sh', instances = 1, rapid_fails_per_minute = 2 }",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let start = Instant::now();
    loop {
        let resp = Connection::open(server.addr).get("/any.php");
        if resp.status == 503 {
            assert!(
                resp.text().contains("rapid_fails_per_minute"),
                "{}",
                resp.text()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still {} after 20 s",
            resp.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_processes: 0"), "{status}");
    assert!(
        status.contains("fastcgi_applications_stopped: 1"),
        "{status}"
    );
}

#[test]
fn a_program_that_is_not_there_is_a_configuration_error() {
    let dir = TempDir::new("fastcgi-application-missing");
    let config = config(&dir, "{ path = 'nowhere/php-cgi' }");
    let out = common::riis_command("check-config", &config);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("application") && said.contains("nowhere/php-cgi"),
        "{said}"
    );
}

/// The workers a process forks (`PHP_FCGI_CHILDREN`) end with it: left
/// running, they would go on taking connections no one watches.
#[test]
fn what_a_process_forked_ends_with_it() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-forks");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 1, environment = {{ PHP_FCGI_CHILDREN = \"2\" }} }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let worker: u32 = Connection::open(server.addr)
        .get("/pid.php")
        .text()
        .parse()
        .unwrap();
    // The worker's parent is the process riis started.
    let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    let master: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(master, worker);
    std::process::Command::new("kill")
        .args(["-KILL", &master.to_string()])
        .status()
        .unwrap();
    wait_until_gone(
        &[worker],
        Duration::from_secs(10),
        "a worker outlived its master",
    );
    // A new master and its workers serve.
    let resp = Connection::open(server.addr).get("/pid.php");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_ne!(resp.text(), worker.to_string());
    // Stopped with riis (a SIGKILL of riis would leave them running).
    server.terminate();
}

/// Makes `path` executable.
fn executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The processes' standard error goes on being read and logged whatever it
/// holds: bytes that are not UTF-8, and a line without an end (logged cut
/// to 1 KiB). A reader that stopped would leave every later write to fail
/// (SIGPIPE), and the processes dying of it.
#[test]
fn standard_error_is_logged_whatever_it_holds() {
    use std::io::BufRead;
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-stderr");
    dir.write(
        "www/pid.php",
        "<?php file_put_contents('php://stderr', 'served by ' . getmypid() . \"\\n\"); echo getmypid();",
    );
    // Not UTF-8, then 4 MB without a newline, then a line that must still
    // be logged; then php-cgi itself.
    let program = dir.write(
        "noisy.sh",
        format!(
            "#!/bin/sh\nprintf 'not utf-8: \\377\\376\\n' >&2\nhead -c 4000000 /dev/zero | tr '\\0' x >&2\nprintf '\\nafter the long line\\n' >&2\nexec '{}'\n",
            php.display()
        ),
    );
    executable(&program);
    let config = config(&dir, "{ path = 'noisy.sh', instances = 1 }");
    // The server's log is read here.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_riis"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("RIIS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let log = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(log).split(b'\n') {
            let Ok(line) = line else { break };
            // Echoed, for a failure's report.
            eprintln!("{}", String::from_utf8_lossy(&line));
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = common::listening_addr(&mut child);
    let server = RunningBinary { child, addr };
    let mut served = Vec::new();
    for _ in 0..3 {
        let resp = Connection::open(server.addr).get("/pid.php");
        assert_eq!(resp.status, 200, "{}", resp.text());
        served.push(format!("served by {}", resp.text()));
    }
    let mut wanted = vec![
        "not utf-8: \u{fffd}\u{fffd}".to_owned(),
        "after the long line".to_owned(),
    ];
    wanted.extend(served);
    let mut long_line = false;
    while !wanted.is_empty() {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("not logged: {wanted:?}"));
        // Cut to 1 KiB (and the log line's own words).
        assert!(line.len() < 2048, "a log line of {} bytes", line.len());
        let text = String::from_utf8_lossy(&line);
        long_line |= text.contains(&"x".repeat(1024));
        wanted.retain(|w| !text.contains(w.as_str()));
    }
    assert!(long_line, "the long line's first KiB was not logged");
    server.terminate();
}

/// The socket's folder and the socket are the server's user's alone, whatever
/// the umask riis runs with: whoever can connect runs scripts as that user.
#[test]
fn the_socket_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-umask");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let temp = dir.path().join("tmp");
    std::fs::create_dir_all(&temp).unwrap();
    let config = config(
        &dir,
        &format!("{{ path = '{}', instances = 1 }}", php.display()),
    );
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("TMPDIR", &temp);
    let server = RunningBinary::from_command(command).unwrap();
    let resp = Connection::open(server.addr).get("/pid.php");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let folders: Vec<PathBuf> = std::fs::read_dir(&temp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("riis-fastcgi-"))
        })
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let (folder, socket) = (mode(&folders[0]), mode(&folders[0].join("socket-1")));
    // Stopped first, so that a failure leaves no process behind.
    server.terminate();
    assert_eq!(folder, 0o700, "the folder's mode");
    assert_eq!(socket, 0o600, "the socket's mode");
}

/// The processes in `group` that are still running (zombies are not).
fn group_members(group: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's name: state, ppid, pgrp.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string() {
            found.push(pid);
        }
    }
    found
}

/// Kills the process groups it holds when dropped: a failed test leaves no
/// process behind.
struct Groups(Vec<u32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for group in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Processes that ignore SIGTERM are killed (two seconds later) and reaped
/// before the server exits: none outlives it.
#[test]
fn processes_that_ignore_sigterm_do_not_outlive_the_server() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-stubborn");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let pids = dir.path().join("pids");
    // A shell that ignores SIGTERM (and so do the `sleep`s it starts) runs
    // php-cgi, which ends on SIGTERM; the shell stays.
    let program = dir.write(
        "stubborn.sh",
        format!(
            "#!/bin/sh\ntrap '' TERM\necho $$ >> '{}'\n'{}'\nwhile :; do sleep 1; done\n",
            pids.display(),
            php.display()
        ),
    );
    executable(&program);
    let config = config(&dir, "{ path = 'stubborn.sh', instances = 2 }");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/pid.php");
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Both shells note their pid as they start (one of them may not have
    // yet when the other answers).
    let start = Instant::now();
    let leaders: Vec<u32> = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text.lines().map(|l| l.parse().unwrap()).collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the processes did not start: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    let _cleanup = Groups(leaders.clone());
    server.terminate();
    // The processes riis started were reaped before it exited.
    for &leader in &leaders {
        assert!(!is_running(leader), "process {leader} outlived riis");
    }
    // What they started was killed with them (its last moments may still
    // be under way; a survivor stays for good).
    let start = Instant::now();
    for &leader in &leaders {
        while !group_members(leader).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "processes of group {leader} outlived riis: {:?}",
                group_members(leader)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Clients that leave before their answers do not make the application's
/// recycling look like crashes: `php-cgi` ends cleanly every
/// PHP_FCGI_MAX_REQUESTS requests, and when every client of those requests
/// had left (HTTP/2 streams whose connection closed), riis read no answer
/// and counted each such end as a failure, so rapid fail protection stopped
/// PHP (503) for anyone (found by a denial-of-service review).
#[test]
fn clients_that_leave_do_not_stop_the_application() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-leavers");
    dir.write("www/slow.php", "<?php usleep(100000); echo 'late';");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 1, rapid_fails_per_minute = 2, environment = {{ PHP_FCGI_MAX_REQUESTS = \"2\" }} }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..12 {
            let (mut sender, connection) =
                common::http2_connection::<http_body_util::Empty<bytes::Bytes>>(server.addr).await;
            let mut sent = Vec::new();
            for _ in 0..4 {
                let request = http::Request::get(format!("http://{}/slow.php", server.addr))
                    .body(http_body_util::Empty::new())
                    .unwrap();
                sent.push(sender.send_request(request));
            }
            // Sent; then the client goes, answers unread.
            tokio::time::sleep(Duration::from_millis(150)).await;
            drop(sent);
            drop(sender);
            connection.abort();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    // Stopped by rapid fail protection, the application would answer 503
    // for a minute. Still running, it answers, once it has worked through
    // what the clients left behind (on a busy machine that can outlast
    // `activity_timeout`: a 504, asked again).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let resp = Connection::open(server.addr).get("/pid.php");
        if resp.status == 504 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        assert_eq!(resp.status, 200, "{}", resp.text());
        break;
    }
}

/// A request that passes `activity_timeout` (or `request_timeout`) gets
/// 504 and its process is killed, as IIS kills it: a script blocked on
/// something that never answers holds one process, and the next request is
/// served by the process started in its place, not sent into a queue
/// behind it.
#[test]
fn a_request_past_its_timeout_has_its_process_killed() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-timeout-kill");
    let sleeper = dir.path().join("sleeper.pid");
    dir.write(
        "www/sleep.php",
        format!(
            "<?php file_put_contents('{}', getmypid()); sleep(60); echo 'slept';",
            sleeper.display()
        ),
    );
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config(
        &dir,
        &format!("{{ path = '{}', instances = 1 }}", php.display()),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let slow = Connection::open(server.addr).get("/sleep.php");
    assert_eq!(slow.status, 504, "{}", slow.text());
    let killed: u32 = std::fs::read_to_string(&sleeper).unwrap().parse().unwrap();
    wait_until_gone(
        &[killed],
        Duration::from_secs(10),
        "the process of the request that timed out still runs",
    );
    let next = Connection::open(server.addr).get("/pid.php");
    assert_eq!(next.status, 200, "{}", next.text());
    assert_ne!(next.text(), killed.to_string());
    // Killed by riis: not a failure the rapid fail protection counts.
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_processes: 1"), "{status}");
    server.terminate();
}

/// Requests wait for a busy process in riis, not in its socket: one whose
/// wait passes `activity_timeout` gets 504 and never runs (a queue in the
/// socket would run it after its client was told it failed, a POST too),
/// and past `queue_length` waiting requests a request gets 503 at once.
#[test]
fn requests_wait_for_a_process_in_riis_and_never_run_after_their_504() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-queue");
    let marks = dir.path().join("marks");
    // Busy for four seconds, never silent for `activity_timeout` (2 s).
    dir.write(
        "www/busy.php",
        "<?php while (ob_get_level() > 0) { ob_end_flush(); } \
         for ($i = 0; $i < 16; $i++) { echo \"$i\\n\"; flush(); usleep(250000); }",
    );
    dir.write(
        "www/mark.php",
        format!(
            "<?php file_put_contents('{}', $_SERVER['REQUEST_METHOD'] . \"\\n\", FILE_APPEND); echo 'marked';",
            marks.display()
        ),
    );
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 1, queue_length = 1 }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let busy = std::thread::spawn(move || Connection::open(addr).get("/busy.php"));
    std::thread::sleep(Duration::from_millis(500));
    let waiting = std::thread::spawn(move || {
        let mut conn = Connection::open(addr);
        conn.send_raw(
            b"POST /mark.php HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\namount=100",
        );
        conn.read_response(false)
    });
    std::thread::sleep(Duration::from_millis(500));
    // The queue holds one request: a third is refused at once.
    let refused = Connection::open(addr).get("/mark.php");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("queue_length"),
        "{}",
        refused.text()
    );
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_requests_waiting: 1"), "{status}");
    let waited = waiting.join().unwrap();
    assert_eq!(waited.status, 504, "{}", waited.text());
    let busy = busy.join().unwrap();
    assert_eq!(busy.status, 200, "{}", busy.text());
    assert!(busy.text().contains("15"), "{}", busy.text());
    // The process is free again, and the POST that got 504 never ran.
    let after = Connection::open(addr).get("/mark.php");
    assert_eq!(after.text(), "marked");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "GET\n");
    server.terminate();
}

/// A configuration of its own, for timeouts the shared one does not have.
fn config_with(dir: &TempDir, fastcgi: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write(
        "riis.toml",
        format!(
            "[server]\npid_file = \"riis.pid\"\n\n[[modules]]\nname = \"FastCgi\"\n\n\
             [[handlers]]\nname = \"PHP\"\npath = \"*.php\"\nresource_type = \"File\"\nmodules = [\"FastCgi\"]\n\n\
             [fastcgi]\n{fastcgi}\n\n\
             [[sites]]\nname = \"PHP\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        ),
    )
}

/// A request's `request_timeout` counts from when its process gets it,
/// not from when it began to wait for one: a request that waited most of
/// its timeout behind a slow one still runs to its end (before, it got 504
/// after its script had run, and its process was killed).
#[test]
fn request_timeout_counts_from_when_a_process_takes_the_request() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-request-clock");
    dir.write("www/slow.php", "<?php usleep(2500000); echo 'slow';");
    dir.write("www/work.php", "<?php usleep(1000000); echo 'done';");
    let config = config_with(
        &dir,
        &format!(
            "activity_timeout = 10\nrequest_timeout = 3\napplication = {{ path = '{}', instances = 1 }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || Connection::open(addr).get("/slow.php"));
    std::thread::sleep(Duration::from_millis(300));
    // Waits about 2.2 s for the process, then runs for 1 s: 3.2 s in all.
    let work = Connection::open(addr).get("/work.php");
    assert_eq!((work.status, work.text().as_str()), (200, "done"));
    assert_eq!(slow.join().unwrap().text(), "slow");
    server.terminate();
}

/// A process that closed a request's connection without a word and then
/// ended cleanly may have run it (a script that ended its process): a POST
/// is not sent again (502, the script ran once), a GET once.
#[test]
fn a_post_whose_process_ended_without_answering_is_not_sent_again() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-no-resend");
    let marks = dir.path().join("marks");
    dir.write(
        "www/exec.php",
        format!(
            "<?php file_put_contents('{}', \"ran\\n\", FILE_APPEND); pcntl_exec('/bin/true');",
            marks.display()
        ),
    );
    let config = config(
        &dir,
        &format!("{{ path = '{}', instances = 2 }}", php.display()),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"POST /exec.php HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\na=1");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "ran\n");
    // A GET may run twice, and is sent again once.
    let resp = Connection::open(server.addr).get("/exec.php");
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "ran\nran\nran\n");
    server.terminate();
}

/// riis hands a process `instance_max_requests` requests (IIS's
/// `instanceMaxRequests`), then stops it and starts another; with
/// `PHP_FCGI_MAX_REQUESTS` lower, that many, so that no request waits in
/// the socket of a `php-cgi` about to exit: POSTs from concurrent clients
/// through processes that recycle after every request all succeed, each
/// run once.
#[test]
fn processes_are_recycled_after_their_share_and_no_request_is_lost() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-recycle-count");
    let marks = dir.path().join("marks");
    dir.write("www/pid.php", "<?php echo getmypid();");
    dir.write(
        "www/mark.php",
        format!(
            "<?php file_put_contents('{}', $_GET['id'] . \"\\n\", FILE_APPEND); echo getmypid();",
            marks.display()
        ),
    );
    // riis's own count: two requests a process.
    let config = config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 1, instance_max_requests = 2 }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut pids = Vec::new();
    for _ in 0..6 {
        let resp = Connection::open(server.addr).get("/pid.php");
        assert_eq!(resp.status, 200, "{}", resp.text());
        pids.push(resp.text());
    }
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
    assert_eq!(pids[2], pids[3]);
    assert_ne!(pids[3], pids[4]);
    server.terminate();

    // PHP's count, lower: one request a process, under concurrent POSTs.
    let config = self::config(
        &dir,
        &format!(
            "{{ path = '{}', instances = 3, environment = {{ PHP_FCGI_MAX_REQUESTS = \"1\" }} }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let clients: Vec<_> = (0..6)
        .map(|client| {
            std::thread::spawn(move || {
                for n in 0..8 {
                    let mut conn = Connection::open(addr);
                    conn.send_raw(
                        format!(
                            "POST /mark.php?id={client}-{n} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
                        )
                        .as_bytes(),
                    );
                    let resp = conn.read_response(false);
                    assert_eq!(resp.status, 200, "{client}-{n}: {}", resp.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let text = std::fs::read_to_string(&marks).unwrap();
    let mut ids: Vec<&str> = text.lines().collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (48, 48), "{text}");
    server.terminate();
}

/// `kept_connections` is for `address`: riis's own processes get a new
/// connection per request, since a kept one holds its `php-cgi` (which
/// honours FCGI_KEEP_CONN) from the requests of other worker threads
/// (before: a third of the requests waited for it, got 504, and had their
/// process killed).
#[test]
fn kept_connections_do_not_hold_riis_own_processes() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-kept");
    dir.write("www/pid.php", "<?php echo getmypid();");
    let config = config_with(
        &dir,
        &format!(
            "activity_timeout = 3\nkept_connections = 1\napplication = {{ path = '{}', instances = 4 }}",
            php.display()
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[server]\n", "[server]\nworker_threads = 2\n"),
    )
    .unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let resp = Connection::open(addr).get("/pid.php");
                    assert_eq!(resp.status, 200, "{}", resp.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.terminate();
}

/// A request waiting for a process when `monitor_changes_to` recycles the
/// processes goes to a new one at once, not after the old ones finish what
/// they have (before: it waited behind a long answer on a retired process,
/// and got 504).
#[test]
fn a_recycle_hands_the_new_processes_to_waiting_requests() {
    let Some(php) = php_cgi() else {
        return;
    };
    let dir = TempDir::new("fastcgi-application-recycle-waiting");
    dir.write(
        "www/stream.php",
        "<?php while (ob_get_level() > 0) { ob_end_flush(); } \
         for ($i = 0; $i < 40; $i++) { echo \"$i\\n\"; flush(); usleep(250000); }",
    );
    dir.write("www/q.php", "<?php echo 'quick';");
    dir.write("php.ini", "; first\n");
    let config = config_with(
        &dir,
        &format!(
            "activity_timeout = 6\napplication = {{ path = '{}', instances = 1, monitor_changes_to = 'php.ini' }}",
            php.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let stream = std::thread::spawn(move || Connection::open(addr).get("/stream.php"));
    std::thread::sleep(Duration::from_millis(500));
    let waiting = std::thread::spawn(move || Connection::open(addr).get("/q.php"));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("php.ini"), "; second\n").unwrap();
    // The stream takes ten seconds; the waiting request six at most.
    let waited = waiting.join().unwrap();
    assert_eq!((waited.status, waited.text().as_str()), (200, "quick"));
    assert!(stream.join().unwrap().text().contains("39"));
    server.terminate();
}
