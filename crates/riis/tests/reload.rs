//! Live reload over real sockets, under continuous load: `riis reload`
//! (SIGHUP) applies a new configuration to new and kept-alive connections
//! with zero failed requests; a broken file is refused and the running
//! configuration stays; `[limits]` and `[timeouts]` change with a reload,
//! `[server]` does not.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{riis_reload, Connection, RunningBinary, TempDir};

fn config_text(root: &std::path::Path, generation: u32) -> String {
    format!(
        r#"
[server]
pid_file = "riis.pid"

# The kept-alive connection of the test lives through every reload.
[limits]
max_requests_per_connection = 0

[protocol]
custom_headers = {{ "X-Generation" = "{generation}" }}

[[sites]]
name = "Test"
root = '{}'
bindings = ["127.0.0.1:0"]
"#,
        root.display()
    )
}

#[test]
fn reload_under_load_fails_no_request() {
    let dir = TempDir::new("reload");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let config = dir.write("riis.toml", config_text(&root, 1));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    // The generation the kept-alive connection saw last.
    let seen = Arc::new(Mutex::new(String::new()));
    let mut load = Vec::new();
    // One kept-alive connection, and clients opening a connection each time.
    for kind in 0..3 {
        let (stop, served, failures, seen) =
            (stop.clone(), served.clone(), failures.clone(), seen.clone());
        load.push(std::thread::spawn(move || {
            let mut keep = Connection::open(addr);
            while !stop.load(Ordering::Relaxed) {
                let resp = if kind == 0 {
                    keep.get("/a.txt")
                } else {
                    Connection::open(addr).get("/a.txt")
                };
                if resp.status != 200 || resp.text() != "alpha" {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", resp.status, resp.text()));
                }
                if kind == 0 {
                    *seen.lock().unwrap() = resp.header("x-generation").unwrap_or("").to_owned();
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let wait_for = |generation: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while *seen.lock().unwrap() != generation {
            assert!(
                Instant::now() < deadline,
                "generation {generation} never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("1");

    // A new configuration, through `riis reload`.
    std::fs::write(&config, config_text(&root, 2)).unwrap();
    let out = riis_reload(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("2");

    // A broken file: `riis reload` refuses it before signalling...
    std::fs::write(&config, "[[sites]\nname = ").unwrap();
    let out = riis_reload(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("riis.toml:"));
    // ...and a SIGHUP with it leaves the running configuration in place.
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));

    // Once more, to generation 3.
    std::fs::write(&config, config_text(&root, 3)).unwrap();
    assert!(riis_reload(&config).status.success());
    wait_for("3");

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(served.load(Ordering::Relaxed) > 50);
    // The server is still up, on generation 3.
    let resp = common::get(addr, "/a.txt");
    assert_eq!(resp.header("x-generation"), Some("3"));
}

#[test]
fn limits_and_timeouts_follow_a_reload() {
    let dir = TempDir::new("reload-limits");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let text = |limits: &str| {
        format!(
            "[server]\npid_file = \"riis.pid\"\n{limits}\n\
             [[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        )
    };
    let config = dir.write("riis.toml", text(""));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let long = format!("/a.txt?{}", "q".repeat(300));

    // Under the defaults a 307-byte target is fine, on a connection that
    // stays open through the reload.
    let mut kept = Connection::open(server.addr);
    assert_eq!(kept.get(&long).status, 200);
    let mut idle = Connection::open(server.addr);
    assert_eq!(idle.get("/a.txt").status, 200);

    // `[server]` changes too; it needs a restart, so the running values,
    // the Server header included, stay.
    std::fs::write(
        &config,
        text("[limits]\nmax_url_length = 100\n[timeouts]\nkeep_alive = 1").replace(
            "pid_file = \"riis.pid\"\n",
            "pid_file = \"riis.pid\"\nserver_header = \"changed\"\n",
        ),
    )
    .unwrap();
    let out = riis_reload(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The command says what it did not apply, not only the server's log.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("reloaded")
            && said.contains("[server] changes need a restart and were not applied: server_header"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(300));

    // The kept-alive connection's next request meets the new limit.
    let resp = kept.get(&long);
    assert_eq!(resp.status, 414);
    assert!(kept.is_closed());
    // So does a new connection; short targets still pass.
    assert_eq!(Connection::open(server.addr).get(&long).status, 414);
    let resp = Connection::open(server.addr).get("/a.txt");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("server")
            .is_some_and(|s| s.starts_with("riis/")),
        "{:?}",
        resp.header("server")
    );
    // The idle connection opened before the reload is closed by the new
    // keep-alive timeout (1 s, swept once a second).
    let started = Instant::now();
    assert!(idle.is_closed(), "the idle connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn proxy_protocol_follows_a_reload() {
    let dir = TempDir::new("reload-proxy-protocol");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let text = |table: &str| {
        format!(
            "[server]\npid_file = \"riis.pid\"\n{table}\n\
             [[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        )
    };
    let config = dir.write("riis.toml", text(""));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(Connection::open(server.addr).get("/a.txt").status, 200);

    std::fs::write(
        &config,
        text("[proxy_protocol]\nlisten = [\"127.0.0.1:0\"]"),
    )
    .unwrap();
    let out = riis_reload(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));

    // New connections must start with the header now.
    let mut bare = Connection::open(server.addr);
    bare.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(bare.is_closed_or_reset());
    let mut proxied = Connection::open(server.addr);
    proxied.send_raw(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n");
    assert_eq!(proxied.get("/a.txt").status, 200);
}

/// `riis status` asks the running server (SIGUSR1) for its report.
#[test]
fn status_reports_connections_requests_and_modules() {
    let dir = TempDir::new("status");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let config = dir.write("riis.toml", config_text(&root, 1));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut kept = Connection::open(server.addr);
    assert_eq!(kept.get("/a.txt").status, 200);
    assert_eq!(kept.get("/a.txt").status, 200);

    let text = common::riis_status(&config);
    assert!(
        text.contains(&format!("process: {}", server.child.id())),
        "{text}"
    );
    assert!(text.contains("connections_open: 1"), "{text}");
    let started: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("requests_started: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count: {text}"));
    assert!(started >= 2, "{text}");
    assert!(text.contains("modules: "), "{text}");
    assert!(text.contains("requests_refused_total: 0\n"), "{text}");
    // Owner-only: the report lists URLs with their query strings.
    use std::os::unix::fs::PermissionsExt;
    let report = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".status"))
        .expect("the status file");
    let mode = report.metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A reload asked for as soon as the pid file appears (as `systemctl start`
/// then `systemctl reload` do) is not lost: SIGHUP is watched from before
/// the pid file is written.
#[test]
fn a_reload_right_after_start_is_applied() {
    let dir = TempDir::new("reload-early");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let pid_file = dir.path().join("riis.pid");
    for _ in 0..5 {
        let _ = std::fs::remove_file(&pid_file);
        let config = dir.write("riis.toml", config_text(&root, 1));
        let mut child = Command::new(env!("CARGO_BIN_EXE_riis"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .env("RIIS_LOG", "warn")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "no pid file");
            std::thread::sleep(Duration::from_millis(1));
        }
        dir.write("riis.toml", config_text(&root, 2));
        let hup = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let addr = common::listening_addr(&mut child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let applied = loop {
            let resp = common::get(addr, "/a.txt");
            if resp.header("x-generation") == Some("2") {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(applied, "the reload was lost");
    }
}

/// `riis status` and `riis requests` list the requests that wait, with the
/// notification and module they wait on (IIS's `appcmd list requests`):
/// one waits on a backend that never answers, one on an upload the client
/// stopped sending; a request answered at once is not listed.
#[test]
fn status_lists_the_requests_that_wait_and_what_for() {
    let dir = TempDir::new("status-requests");
    // A backend that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = proxy_site(&dir, silent.local_addr().unwrap());
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(common::get(server.addr, "/a.txt").status, 200);
    let mut waiting = Connection::open(server.addr);
    waiting.send_raw(b"GET /api/slow?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut uploading = Connection::open(server.addr);
    uploading.send_raw(
        b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789",
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = common::riis_status(&config);
        if text.contains("requests_waiting: 2") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains("requests_waiting: 2"), "{text}");
    let line = |url: &str| {
        text.lines()
            .find(|l| l.starts_with("request: ") && l.ends_with(url))
            .unwrap_or_else(|| panic!("no line for {url}: {text}"))
            .to_owned()
    };
    let slow = line("method=GET url=/api/slow?x=1");
    assert!(
        slow.contains(" site=1 worker=riis-worker-")
            && slow.contains(" proto=HTTP/1.1 stage=ExecuteRequestHandler module=ReverseProxy state=waiting_module "),
        "{slow}"
    );
    let upload = line("method=POST url=/api/upload");
    assert!(
        upload.contains(
            " stage=ExecuteRequestHandler module=ReverseProxy state=waiting_request_body "
        ),
        "{upload}"
    );
    assert!(!text.contains("url=/a.txt"), "{text}");
    assert!(text.contains("\nworkers_held: 0\n"), "{text}");

    // `riis requests` shows only those lines; `--elapsed` filters them.
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["requests", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert_eq!(lines[0], "requests_waiting: 2");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("request: ")),
        "{listed}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["requests", "--config", config.to_str().unwrap()])
        .args(["--elapsed", "3600000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "requests_waiting: 2\n"
    );

    // Once they end, they leave the list.
    drop(waiting);
    drop(uploading);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = common::riis_status(&config);
        if text.contains("requests_waiting: 0") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
}

/// Under a `Type=notify` (or `notify-reload`) systemd unit, riis tells the
/// service manager when it is ready, when a reload begins and ends (with
/// its outcome), and when it stops, and pings the watchdog while its
/// workers run (`WatchdogSec=`): here the test plays systemd's part on a
/// socket of its own.
#[test]
fn the_service_manager_hears_ready_reloading_stopping_and_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("sd-notify");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    let config = dir.write("riis.toml", config_text(&root, 1));
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = common::started_as_by_systemd(&config, &socket_path, 400_000);
    let mut buf = [0u8; 4096];
    let mut next = |what: &str| -> String {
        // Watchdog pings come between the notices: skip them unless asked.
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} notice: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if what == "WATCHDOG=1" || text != "WATCHDOG=1\n" {
                return text;
            }
        }
    };
    let ready = next("READY");
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=serving on {}", server.addr)),
        "{ready}"
    );
    assert_eq!(next("WATCHDOG=1"), "WATCHDOG=1\n");

    dir.write("riis.toml", config_text(&root, 2));
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloading = next("RELOADING");
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let reloaded = next("READY after the reload");
    assert_eq!(
        reloaded,
        "READY=1\nSTATUS=serving; configuration reloaded\n"
    );

    // A refused reload is reported as such, and the server stays ready.
    dir.write("riis.toml", "[server\n");
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(next("RELOADING").starts_with("RELOADING=1\n"));
    let refused = next("READY after the refusal");
    assert!(
        refused.starts_with("READY=1\nSTATUS=serving; reload refused: "),
        "{refused}"
    );

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let stopping = next("STOPPING");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
}

/// A site whose `/api/*` goes to `backend` through ReverseProxy, the rest
/// to StaticFile (`www/a.txt`), with a pid file for `riis status`.
fn proxy_site(dir: &TempDir, backend: std::net::SocketAddr) -> std::path::PathBuf {
    dir.write("www/a.txt", "alpha");
    dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"
shutdown_timeout = 10

[[modules]]
name = "ReverseProxy"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "Proxy"
path = "/api/*"
modules = ["ReverseProxy"]

[[handlers]]
name = "Static"
path = "*"
modules = ["StaticFile"]

[proxy]
servers = ["http://{backend}"]
timeout = 60

[[sites]]
name = "Listed"
root = 'www'
bindings = ["127.0.0.1:0"]
"#
        ),
    )
}

/// Through the drain, `riis status` still answers (`state: stopping`) and
/// lists what is still in flight; `riis reload` fails at once.
#[test]
fn status_answers_through_the_drain() {
    let dir = TempDir::new("status-drain");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = proxy_site(&dir, silent.local_addr().unwrap());
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert!(common::riis_status(&config).contains("\nstate: serving\n"));
    let mut waiting = Connection::open(server.addr);
    waiting.send_raw(b"GET /api/slow HTTP/1.1\r\nHost: a\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::riis_status(&config).contains("requests_waiting: 1") {
        assert!(Instant::now() < deadline, "the request was never listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = common::riis_status(&config);
        if text.contains("\nstate: stopping\n") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains("\nstate: stopping\n"), "{text}");
    assert!(text.contains("method=GET url=/api/slow"), "{text}");
    assert!(!text.contains("worker_held"), "{text}");
    let out = riis_reload(&config);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("is shutting down and takes no reload"),
        "{said}"
    );
    drop(waiting);
    drop(silent);
}

/// Sites in files `include` names are served, found by host name beside
/// the main file's, and a reload reads the files again.
#[test]
fn included_sites_are_served_and_reloaded() {
    let dir = TempDir::new("include");
    dir.write("www/a.txt", "main");
    dir.write("shop/a.txt", "shop");
    let site = |generation: u32| {
        format!(
            "[[sites]]\nname = \"Shop\"\nroot = \"shop\"\nbindings = [\"127.0.0.1:0:shop.test\"]\n\
             protocol = {{ custom_headers = {{ \"X-Generation\" = \"{generation}\" }} }}\n"
        )
    };
    dir.write("sites.d/shop.toml", site(1));
    let config = dir.write(
        "riis.toml",
        "include = [\"sites.d/*.toml\"]\n[server]\npid_file = \"riis.pid\"\n\
         [[sites]]\nname = \"Main\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").text(), "main");
    let shop = |conn: &mut Connection| {
        conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: shop.test\r\n\r\n");
        conn.read_response(false)
    };
    let resp = shop(&mut conn);
    assert_eq!(resp.text(), "shop");
    assert_eq!(resp.header("x-generation"), Some("1"));

    // A broken included file is refused, naming itself; the running
    // configuration stays.
    dir.write(
        "sites.d/shop.toml",
        "[[sites]]\nname = \"Shop\"\nroot = \"nowhere\"\n",
    );
    let out = riis_reload(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shop.toml"), "{err}");
    assert_eq!(shop(&mut conn).header("x-generation"), Some("1"));

    dir.write("sites.d/shop.toml", site(2));
    assert!(riis_reload(&config).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while shop(&mut conn).header("x-generation") != Some("2") {
        assert!(
            Instant::now() < deadline,
            "the reload did not read the file again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
