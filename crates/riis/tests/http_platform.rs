//! HttpPlatformHandler over real sockets: riis starts a Node.js
//! application written here (outside CI a machine without `node` skips
//! these tests; in CI that is a failure: `.ci/run` installs it), gives it
//! its port, waits for it to listen and has ReverseProxy pass requests to
//! it; and a program that never listens, for the startup limits.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{fields, node, wait_for, Connection, RunningBinary, TempDir};

/// The application: answers with what it was started with and what it was
/// asked, one `key=value` a line; `/app/exit` answers, then exits with an
/// error; `/app/crash` exits without answering; `/app/stop-listening` answers, then closes its listening socket and
/// idle connections but runs on. `START_DELAY_MS` delays its listening, `LISTEN_HOST` chooses the
/// address it listens on, `EXIT_AFTER_MS` makes it exit cleanly that long
/// after it listens, and `SQUAT` first starts another program, outside its
/// process group, that listens on `[::1]` at its port (for 5 seconds) and
/// answers "squatter".
const APPLICATION: &str = r#"
const http = require("http");
const port = Number(process.env.HTTP_PLATFORM_PORT);
const server = http.createServer((request, response) => {
  if (request.url === "/app/exit") {
    response.end("bye\n", () => process.exit(3));
    return;
  }
  if (request.url === "/app/crash") {
    process.exit(3);
  }
  if (request.url === "/app/stop-listening") {
    response.writeHead(200, { Connection: "close" });
    response.end(`pid=${process.pid}\n`, () => {
      server.close();
      server.closeIdleConnections();
      setInterval(() => {}, 1000);
    });
    return;
  }
  const lines = [
    `port=${port}`,
    `argv=${process.argv.slice(2).join(" ")}`,
    `cwd=${process.cwd()}`,
    `greeting=${process.env.GREETING || ""}`,
    `forwarded=${request.headers["x-forwarded-for"] || ""}`,
    `url=${request.url}`,
    `pid=${process.pid}`,
  ];
  response.writeHead(200, { "Content-Type": "text/plain" });
  response.end(lines.join("\n") + "\n");
});
if (process.env.SQUAT) {
  const squatter = `require("http").createServer((q, r) => r.end("squatter\\n"))
    .listen(${port}, "::1"); setTimeout(() => process.exit(0), 5000);`;
  require("child_process")
    .spawn(process.execPath, ["-e", squatter], { detached: true, stdio: "ignore" })
    .unref();
}
setTimeout(() => {
  server.listen(port, process.env.LISTEN_HOST || "127.0.0.1");
  if (process.env.EXIT_AFTER_MS) {
    setTimeout(() => process.exit(0), Number(process.env.EXIT_AFTER_MS));
  }
}, Number(process.env.START_DELAY_MS || 0));
"#;

/// A configuration that passes `/app/*` to the application `section`
/// describes (the `http_platform` table's keys).
fn config(dir: &TempDir, section: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write("app.js", APPLICATION);
    dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "HttpPlatformHandler"
[[modules]]
name = "ReverseProxy"

[[handlers]]
name = "Application"
path = "/app/*"
modules = ["HttpPlatformHandler", "ReverseProxy"]

[http_platform]
{section}

[[sites]]
name = "Application"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    )
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn riis_starts_the_application_and_passes_its_requests_to_it() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform");
    let config = config(
        &dir,
        &format!(
            r#"process_path = '{}'
arguments = ["app.js", "--port=%HTTP_PLATFORM_PORT%"]
environment = {{ GREETING = "port %HTTP_PLATFORM_PORT%" }}
processes_per_application = 2"#,
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // The first request waits for a process to listen; requests then go to
    // both processes in turn, once the second listens too.
    let mut pids = BTreeSet::new();
    let mut ports = BTreeSet::new();
    wait_for("requests went to two processes", || {
        let resp = Connection::open(server.addr).get("/app/hello?x=1");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = fields(&resp.text());
        let port = &seen["port"];
        assert_eq!(seen["argv"], format!("--port={port}"));
        assert_eq!(seen["greeting"], format!("port {port}"));
        assert_eq!(seen["forwarded"], "127.0.0.1");
        assert_eq!(seen["url"], "/app/hello?x=1");
        // The processes run in the configuration's folder.
        assert_eq!(
            std::fs::canonicalize(&seen["cwd"]).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap()
        );
        pids.insert(seen["pid"].parse::<u32>().unwrap());
        ports.insert(port.clone());
        pids.len() == 2
    });
    assert_eq!(ports.len(), 2, "each process has a port of its own");
    let status = common::riis_status(&config);
    assert!(status.contains("http_platform_processes: 2"), "{status}");
    // Stopping the server stops them.
    server.terminate();
    wait_for("the application outlived riis", || {
        !pids.iter().any(|&pid| is_running(pid))
    });
}

/// With `preload_enabled`, the application starts with the server, before
/// any request (IIS's `preloadEnabled`); without it, at the first request.
#[test]
fn a_preloaded_application_starts_with_the_server() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-preload");
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]\npreload_enabled = true",
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    wait_for("the application started before any request", || {
        common::riis_status(&config).contains("http_platform_processes: 1")
    });
    let resp = Connection::open(server.addr).get("/app/first");
    assert_eq!(resp.status, 200, "{}", resp.text());
    drop(server);

    let lazy = TempDir::new("http-platform-lazy");
    let config = self::config(
        &lazy,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]",
            node.display()
        ),
    );
    let _server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::riis_status(&config).contains("http_platform_processes: 0"));
    drop(_server);

    // Only what a handler of the module can reach starts: here the
    // location's settings, not the server's they change a key of (no
    // handler sends a request there).
    let layered = TempDir::new("http-platform-preload-layers");
    std::fs::create_dir_all(layered.path().join("www")).unwrap();
    layered.write("app.js", APPLICATION);
    let config = layered.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "HttpPlatformHandler"
[[modules]]
name = "ReverseProxy"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
modules = ["StaticFile"]

[http_platform]
process_path = '{node}'
arguments = ["app.js"]
preload_enabled = true

[[sites]]
name = "Layers"
root = "www"
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/api"
http_platform = {{ environment = {{ GREETING = "api" }} }}
handlers = [{{ name = "Application", path = "*", modules = ["HttpPlatformHandler", "ReverseProxy"] }}]
"#,
            node = node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    wait_for("the location's application started", || {
        common::riis_status(&config).contains("http_platform_processes: 1")
    });
    let resp = Connection::open(server.addr).get("/api/x");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fields(&resp.text())["greeting"], "api");
    std::thread::sleep(Duration::from_millis(300));
    let status = common::riis_status(&config);
    assert!(status.contains("http_platform_processes: 1"), "{status}");
}

/// A request a UrlRewrite rule sent to another server goes there, as ARR
/// takes such a request over in IIS: the application is not started for
/// it.
#[test]
fn a_rules_rewrite_to_another_server_goes_there() {
    let dir = TempDir::new("http-platform-rule");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let answering = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = other.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            request.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nother")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let config = config(
        &dir,
        "process_path = \"/bin/sh\"\narguments = [\"-c\", \"exec sleep 60\"]",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[http_platform]",
        &format!(
            "[[modules]]\nname = \"UrlRewrite\"\n\n[[rewrite.rules]]\nname = \"elsewhere\"\n\
             pattern = \"^app/elsewhere\"\naction = {{ type = \"Rewrite\", url = \"http://{other_addr}/app/moved\" }}\n\n\
             [http_platform]"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/app/elsewhere");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "other");
    assert!(answering.join().unwrap().starts_with("GET /app/moved "));
    assert!(common::riis_status(&config).contains("http_platform_processes: 0"));
}

#[test]
fn a_process_that_exits_is_started_again_on_a_new_port() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-restart");
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]",
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let first = fields(&Connection::open(server.addr).get("/app/one").text());
    let resp = Connection::open(server.addr).get("/app/exit");
    assert_eq!(resp.text(), "bye\n");
    let old: u32 = first["pid"].parse().unwrap();
    wait_for("the process exited", || !is_running(old));
    // riis holds the old port for a while, so that no other program takes
    // it and gets requests that were on their way there; a connection to
    // it is closed unanswered.
    let old_port: u16 = first["port"].parse().unwrap();
    wait_for("riis holds the old port", || {
        std::net::TcpListener::bind(("127.0.0.1", old_port)).is_err()
    });
    let mut stale = Connection::open(std::net::SocketAddr::from(([127, 0, 0, 1], old_port)));
    stale.send_raw(b"GET /app/late HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(stale.is_closed_or_reset());
    // Requests that come while the new process starts wait for it (one
    // may still find the old port closed before riis saw the exit: 502).
    wait_for("a new process answered", || {
        let resp = Connection::open(server.addr).get("/app/two");
        assert!(matches!(resp.status, 200 | 502), "{}", resp.status);
        resp.status == 200 && {
            let second = fields(&resp.text());
            assert_ne!(second["pid"], first["pid"]);
            assert_ne!(second["port"], first["port"]);
            true
        }
    });
}

/// A server whose application runs two processes, once requests went to
/// both, and their ids.
fn two_processes(dir: &TempDir, node: &std::path::Path) -> (RunningBinary, Vec<u32>) {
    let config = config(
        dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]\nprocesses_per_application = 2",
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut pids = BTreeSet::new();
    wait_for("requests went to both processes", || {
        let resp = Connection::open(server.addr).get("/app/hello");
        assert_eq!(resp.status, 200, "{}", resp.text());
        pids.insert(fields(&resp.text())["pid"].parse::<u32>().unwrap());
        pids.len() == 2 && pids.iter().all(|&pid| is_running(pid))
    });
    (server, pids.into_iter().collect())
}

/// A request whose process cannot be reached (it crashed, and riis has not
/// seen it yet) goes to another of the application's processes, whatever
/// its method, since nothing was sent (nginx's `proxy_next_upstream
/// error`), instead of failing with 502.
#[test]
fn a_request_goes_to_another_process_when_its_own_refuses_the_connection() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-next");
    let (server, _) = two_processes(&dir, &node);
    let closed = fields(
        &Connection::open(server.addr)
            .get("/app/stop-listening")
            .text(),
    )["pid"]
        .parse::<u32>()
        .unwrap();
    // riis's kept connections to it see their end.
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..8 {
        let resp = Connection::open(server.addr).get(&format!("/app/get-{n}"));
        assert_eq!(resp.status, 200, "GET {n}: {}", resp.text());
        assert_ne!(fields(&resp.text())["pid"].parse::<u32>().unwrap(), closed);
        let mut connection = Connection::open(server.addr);
        connection.send_raw(
            format!("POST /app/post-{n} HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi")
                .as_bytes(),
        );
        let resp = connection.read_response(false);
        assert_eq!(resp.status, 200, "POST {n}: {}", resp.text());
        assert_ne!(fields(&resp.text())["pid"].parse::<u32>().unwrap(), closed);
    }
}

/// A request that made its process fail after it was sent (a crash it
/// caused) goes to no other: it would take them all down in turn.
#[test]
fn a_request_that_crashed_its_process_goes_to_no_other() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-crash");
    let (server, before) = two_processes(&dir, &node);
    let crashed = Connection::open(server.addr).get("/app/crash");
    assert_eq!(crashed.status, 502, "{}", crashed.text());
    let alive = before.iter().filter(|&&pid| is_running(pid)).count();
    assert_eq!(alive, 1, "the crash went to more than one process");
}

/// A first request waits while the application gets ready, however it
/// listens: here late, and on IPv6's loopback address only (as Node.js
/// listens on `localhost` where that is `::1`).
#[test]
fn requests_wait_for_an_application_that_is_slow_to_listen() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-slow");
    let config = config(
        &dir,
        &format!(
            r#"process_path = '{}'
arguments = ["app.js"]
environment = {{ START_DELAY_MS = "1500", LISTEN_HOST = "::1" }}"#,
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/app/late");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fields(&resp.text())["url"], "/app/late");
}

/// A program that never listens: each start is killed after
/// `startup_time_limit`, its requests get 503, and after
/// `startup_retry_count` more starts the application stays stopped (503
/// at once, and no process left).
#[test]
fn an_application_that_never_listens_gets_503_and_is_stopped() {
    let dir = TempDir::new("http-platform-deaf");
    let config = config(
        &dir,
        r#"process_path = "/bin/sh"
arguments = ["-c", "exec sleep 60"]
startup_time_limit = 1
startup_retry_count = 1"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/app/x");
    assert_eq!(resp.status, 503);
    wait_for("the application was stopped", || {
        let status = common::riis_status(&config);
        status.contains("http_platform_processes: 0")
            && status.contains("http_platform_applications_stopped: 1")
    });
    let resp = Connection::open(server.addr).get("/app/y");
    assert_eq!(resp.status, 503);
    // The server still answers what is not the application's.
    assert_eq!(Connection::open(server.addr).get("/other").status, 404);
}

#[test]
fn check_config_names_the_key_of_a_bad_section() {
    let dir = TempDir::new("http-platform-config");
    for (section, key) in [
        (
            "process_path = \"/bin/sh\"\nstartup_time_limit = 0",
            "startup_time_limit",
        ),
        ("process_path = \"no-such-program\"", "process_path"),
    ] {
        let config = config(&dir, section);
        let out = common::riis_command("check-config", &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}");
        // The key's own line, or the section's for a key left out.
        let text = std::fs::read_to_string(&config).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with(key))
            .or_else(|| text.lines().position(|l| l == "[http_platform]"))
            .unwrap()
            + 1;
        assert!(
            stderr.contains(&format!("riis.toml:{line}: ")),
            "{section}: {stderr}"
        );
        assert!(stderr.contains(key), "{section}: {stderr}");
    }
}

/// A handler with HttpPlatformHandler and no ReverseProxy after it never
/// passes a request to the application: check-config says so (the
/// configuration is still valid).
#[test]
fn check_config_warns_of_a_handler_without_reverse_proxy() {
    let dir = TempDir::new("http-platform-alone");
    let config = config(&dir, "process_path = \"/bin/sh\"");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"modules = ["HttpPlatformHandler", "ReverseProxy"]"#,
        r#"modules = ["ReverseProxy", "HttpPlatformHandler"]"#,
    );
    std::fs::write(&config, text).unwrap();
    let out = common::riis_command("check-config", &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "key `handlers[0]`: handler `Application` lists HttpPlatformHandler without ReverseProxy after it"
        ),
        "{stderr}"
    );
}

/// `examples/node/` works as its README says.
#[test]
fn the_node_example_runs() {
    if node().is_none() {
        return;
    }
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node/riis.toml");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/app/hello");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.text()
            .contains(r#""greeting": "hello from riis.toml""#),
        "{}",
        resp.text()
    );
    let resp = Connection::open(server.addr).get("/");
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("riis and Node.js"));
}

/// Another user's program listening on `[::1]` at an application process's
/// port (here one the process starts outside its group, before the process
/// listens on `127.0.0.1`) never gets the application's requests: they go
/// to the address the process itself listens on.
#[test]
fn another_program_on_the_port_gets_no_request() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-squat");
    let config = config(
        &dir,
        &format!(
            r#"process_path = '{}'
arguments = ["app.js"]
environment = {{ SQUAT = "1", START_DELAY_MS = "500" }}"#,
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/app/secret");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fields(&resp.text())["url"], "/app/secret");
}

/// An HTTP application that listens and then exits, cleanly, again and
/// again counts each exit as a failure: rapid fail protection stops it.
#[test]
fn an_application_that_keeps_exiting_cleanly_is_stopped() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-exits");
    let config = config(
        &dir,
        &format!(
            r#"process_path = '{}'
arguments = ["app.js"]
rapid_fails_per_minute = 2
environment = {{ EXIT_AFTER_MS = "100" }}"#,
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let _ = Connection::open(server.addr).get("/app/first");
    wait_for("the application was stopped", || {
        Connection::open(server.addr).get("/app/again").status == 503
            && common::riis_status(&config).contains("http_platform_processes: 0")
    });
}

/// Requests waiting for a process when the server stops get 503 at once,
/// rather than holding the stop until `startup_time_limit`; also those of
/// a configuration a reload replaced.
#[test]
fn a_stop_ends_the_waits() {
    for reload in [false, true] {
        stop_ends_the_waits(reload);
    }
}

fn stop_ends_the_waits(reload: bool) {
    let dir = TempDir::new("http-platform-stop");
    let config = config(
        &dir,
        r#"process_path = "/bin/sh"
arguments = ["-c", "exec sleep 60"]
startup_time_limit = 3600"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let waiting = std::thread::spawn(move || Connection::open(addr).get("/app/x").status);
    std::thread::sleep(Duration::from_millis(500));
    if reload {
        let out = common::riis_reload(&config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(waiting.join().unwrap(), 503);
}

/// While the server drains, an application that failed to start is not
/// started again: no request could use it (they get 503), and a start can
/// cost seconds of CPU or run a migration.
#[test]
fn a_draining_server_starts_no_application() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("http-platform-drain");
    let starts = dir.path().join("starts.log");
    // An application that takes requests and never answers: one in flight
    // holds the drain (and the configuration's applications with it).
    dir.write(
        "hang.js",
        "require('http').createServer(() => {}).listen(Number(process.env.HTTP_PLATFORM_PORT), '127.0.0.1');\n",
    );
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"hang.js\"]",
            node.display()
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "\n[[sites.locations]]\npath = \"/app/deaf\"\nhttp_platform = {{ process_path = \"/bin/sh\", \
             arguments = [\"-c\", \"echo start >> '{}'; exec sleep 60\"], startup_time_limit = 1, \
             startup_retry_count = 100 }}\n",
            starts.display()
        );
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr;
    let mut held = Connection::open(addr);
    held.send_raw(b"GET /app/hang HTTP/1.1\r\nHost: t\r\n\r\n");
    let waiting = std::thread::spawn(move || Connection::open(addr).get("/app/deaf/x").status);
    wait_for("the deaf application to start", || {
        std::fs::read_to_string(&starts).is_ok_and(|s| s.lines().count() >= 1)
    });
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(waiting.join().unwrap(), 503);
    let at_stop = std::fs::read_to_string(&starts).unwrap().lines().count();
    // Three startup limits' time: the failed start would have been
    // retried about three times.
    std::thread::sleep(Duration::from_millis(3500));
    let later = std::fs::read_to_string(&starts).unwrap().lines().count();
    assert_eq!(later, at_stop, "started during the drain");
    drop(held);
    drop(server);
}

/// A program the system cannot run (a script without its `#!` line) gets
/// its requests 503, and the server goes on.
#[test]
fn a_program_that_cannot_run_gets_503() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("http-platform-noexec");
    let script = dir.write("not-a-program", "echo hello\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = config(&dir, "process_path = \"not-a-program\"");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    for _ in 0..3 {
        let resp = Connection::open(server.addr).get("/app/x");
        assert_eq!(resp.status, 503);
    }
    assert_eq!(Connection::open(server.addr).get("/other").status, 404);
}
