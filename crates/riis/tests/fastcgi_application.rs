//! FastCgi's `application`: riis starts the FastCGI processes itself, as
//! IIS does. With PHP's `php-cgi` (started by riis; outside CI a machine
//! without it skips that test, in CI it is a failure: `.ci/run` installs
//! it), and with a program that only fails, for the rapid fail protection.

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
    let start = Instant::now();
    while last.iter().any(|&pid| is_running(pid)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "php-cgi outlived riis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("resource_type = \"File\"\n", "");
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
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
    let start = Instant::now();
    while is_running(worker) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a worker outlived its master"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new master and its workers serve.
    let resp = Connection::open(server.addr).get("/pid.php");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_ne!(resp.text(), worker.to_string());
    // Stopped with riis (a SIGKILL of riis would leave them running).
    server.terminate();
}
