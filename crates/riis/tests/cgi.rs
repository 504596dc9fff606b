//! Cgi over real sockets, with `/bin/sh` programs: the RFC 3875
//! environment (without `HTTP_PROXY` or the password), the request body on
//! standard input, `Status` and other header lines, a program that is not
//! executable (403.1), one that runs too long (502.1, its process group
//! ended), bad output (502.2), output that streams as the program writes
//! it, and git's smart HTTP (`git http-backend`) behind it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

fn program(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write(&format!("www/cgi/{name}"), text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(dir: &TempDir) -> PathBuf {
    let root = dir.path().join("www");
    program(
        dir,
        "env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nX-Program: env\\r\\n\\r\\n'\n\
         echo \"method=$REQUEST_METHOD query=$QUERY_STRING script=$SCRIPT_NAME\"\n\
         echo \"agent=$HTTP_USER_AGENT proxy=${HTTP_PROXY-unset} auth=${HTTP_AUTHORIZATION-unset}\"\n\
         echo \"type=$CONTENT_TYPE length=$CONTENT_LENGTH gateway=$GATEWAY_INTERFACE\"\n\
         echo \"remote=$REMOTE_ADDR server=$SERVER_NAME https=${HTTPS-unset} pwd=$(pwd)\"\n\
         echo \"home=${HOME-unset} xff=$HTTP_X_FORWARDED_FOR cookie=$HTTP_COOKIE\"\n\
         cat\n",
    );
    program(
        dir,
        "status.cgi",
        "#!/bin/sh\nprintf 'Status: 203 Not Quite Mine\\nContent-Type: text/plain\\n\\nmirrored'\n",
    );
    program(
        dir,
        "redirect.cgi",
        "#!/bin/sh\nprintf 'Location: https://example.test/\\n\\n'\n",
    );
    program(dir, "bad.cgi", "#!/bin/sh\necho 'no headers here'\n");
    program(
        dir,
        "slow.cgi",
        "#!/bin/sh\n(sleep 30; touch \"$DOCUMENT_ROOT/../child-survived\") &\nsleep 30\n",
    );
    program(
        dir,
        "big.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 200000 /dev/zero\n",
    );
    // Exits at once, but leaves a descendant outside its process group
    // holding its output open.
    program(
        dir,
        "daemon.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nbye'\nsetsid sleep 3 &\n",
    );
    // Ends its output, then goes on running.
    program(
        dir,
        "lingers.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ndone'\nexec >&-\nsleep 10\n",
    );
    // A link to a program outside the site.
    let outside = program(
        dir,
        "../../outside.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nout'\n",
    );
    std::os::unix::fs::symlink(&outside, dir.path().join("www/cgi/link.cgi")).unwrap();
    dir.write("www/cgi/plain.cgi", "#!/bin/sh\necho hi\n");
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "CustomError"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[cgi]
timeout = 1
response_buffer_limit = 100000

[[sites]]
name = "Cgi"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    )
}

/// [`config`] with `line` of it replaced by `by`.
fn config_changed(dir: &TempDir, line: &str, by: &str) -> PathBuf {
    let config = config(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(line), "{line}");
    std::fs::write(&config, text.replace(line, by)).unwrap();
    config
}

#[test]
fn behind_a_proxy_programs_see_the_client_and_the_scheme_it_used() {
    // ForwardedFor trusts the test's loopback address (its default), and
    // IIS's rule for TLS ended at a balancer sets HTTPS.
    let dir = TempDir::new("cgi-behind-proxy");
    let config = config_changed(
        &dir,
        "[cgi]\n",
        r#"[[rewrite.rules]]
name = "TLS ended at the balancer"
pattern = ".*"
conditions = [{ input = "{HTTP_X_FORWARDED_PROTO}", pattern = "^https$" }]
server_variables = [{ name = "HTTPS", value = "on" }]
action = { type = "None" }

[cgi]
"#,
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[[modules]]\nname = \"CustomError\"\n",
        "[[modules]]\nname = \"ForwardedFor\"\n[[modules]]\nname = \"UrlRewrite\"\n\
         [[modules]]\nname = \"CustomError\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /cgi/env.cgi HTTP/1.1\r\nHost: cgi.test\r\n\
          X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    let text = conn.read_response(false).text();
    assert!(
        text.contains("remote=203.0.113.7 server=cgi.test https=on "),
        "{text}"
    );
    let text = conn.get("/cgi/env.cgi").text();
    assert!(
        text.contains("remote=127.0.0.1 server=test https=unset "),
        "{text}"
    );
}

/// The status with its substatus, from CustomError's detailed page.
fn status_of(resp: &common::Response) -> String {
    if resp.status < 400 {
        return resp.status.to_string();
    }
    let text = resp.text();
    let code = resp.status.to_string();
    let at = text.find(&format!("HTTP Error {code}")).expect(&text) + 11;
    text[at..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn programs_get_the_request_and_make_the_response() {
    let dir = TempDir::new("cgi");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    conn.send_raw(
        b"POST /cgi/env.cgi?a=1&b=2 HTTP/1.1\r\nHost: cgi.test:8080\r\nUser-Agent: tester\r\n\
          Proxy: http://evil.test/\r\nAuthorization: Basic c2VjcmV0\r\n\
          X-Forwarded-For: good\r\nX_Forwarded_For: evil\r\nCookie: a=1\r\nCookie: b=2\r\n\
          Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-program"), Some("env"));
    let text = resp.text();
    let folder = dir.path().join("www/cgi").canonicalize().unwrap();
    for expected in [
        "method=POST query=a=1&b=2 script=/cgi/env.cgi".to_owned(),
        "agent=tester proxy=unset auth=unset".to_owned(),
        "type=text/plain length=11 gateway=CGI/1.1".to_owned(),
        format!(
            "remote=127.0.0.1 server=cgi.test https=unset pwd={}",
            folder.display()
        ),
        "home=unset xff=good cookie=a=1; b=2".to_owned(),
        "hello world".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} in:\n{text}");
    }

    let mirrored = conn.get("/cgi/status.cgi");
    assert_eq!(
        (mirrored.status, mirrored.reason.as_str()),
        (203, "Not Quite Mine")
    );
    assert_eq!(mirrored.text(), "mirrored");
    let redirect = conn.get("/cgi/redirect.cgi");
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("https://example.test/"));

    assert_eq!(status_of(&conn.get("/cgi/plain.cgi")), "403.1");
    assert_eq!(conn.get("/cgi/link.cgi").status, 404);
    // Output that ended is served, the program that lingers ended.
    let lingers = conn.get("/cgi/lingers.cgi");
    assert_eq!((lingers.status, lingers.text().as_str()), (200, "done"));
    assert_eq!(status_of(&conn.get("/cgi/bad.cgi")), "502.2");
    // Past response_buffer_limit the output streams: none of it is held
    // whole, and none is refused for its size.
    let big = conn.get("/cgi/big.cgi");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 200_000);
    assert!(big.body.iter().all(|&b| b == 0));
}

#[test]
fn a_program_past_its_time_is_ended_with_its_children() {
    let dir = TempDir::new("cgi-slow");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let started = Instant::now();
    let resp = Connection::open(server.addr).get("/cgi/slow.cgi");
    assert_eq!(status_of(&resp), "502.1");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The program's background child was ended too: it never touches its
    // file, even after the time it would have.
    let marker: &Path = &dir.path().join("child-survived");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists());
    // A descendant that left the group and holds the output open cannot
    // hold the request past the timeout (here shorter than the second of
    // grace a finished program gets).
    let started = Instant::now();
    let resp = Connection::open(server.addr).get("/cgi/daemon.cgi");
    assert_eq!(status_of(&resp), "502.1");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The server goes on.
    assert_eq!(
        Connection::open(server.addr).get("/cgi/status.cgi").status,
        203
    );
}

/// A program's descendant that holds its pipes costs no thread, and at
/// shutdown the programs still running are ended with their groups, though
/// they run in groups of their own.
#[test]
fn shutdown_ends_the_programs_still_running() {
    let dir = TempDir::new("cgi-stop");
    let root = dir.path().join("www");
    program(
        &dir,
        "long.cgi",
        "#!/bin/sh\ntouch \"$DOCUMENT_ROOT/../started\"\nsleep 3\ntouch \"$DOCUMENT_ROOT/../survived\"\n",
    );
    program(
        &dir,
        "daemon.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nbye'\nsetsid sleep 4 &\n",
    );
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[server]
shutdown_timeout = 1

[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[cgi]
timeout = 30

[[sites]]
name = "Cgi"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    // A program that exits but leaves a descendant (outside its group)
    // holding its output and error open: its output is served after the
    // second of grace, and no thread is left behind per request.
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
            .unwrap()
            .count()
    };
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/cgi/daemon.cgi").text(), "bye");
    let before = threads();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(conn.get("/cgi/daemon.cgi").text(), "bye");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(
        threads() <= before + 1,
        "{before} threads, then {}",
        threads()
    );

    conn.send_raw(b"GET /cgi/long.cgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the program never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.terminate();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !dir.path().join("survived").exists(),
        "the program outlived the server"
    );
}

/// A body longer than what is kept in memory (64 KiB) goes through a
/// temporary file and reaches the program's input byte for byte.
#[test]
fn a_large_body_reaches_the_program_whole() {
    let dir = TempDir::new("cgi-large-body");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let body: Vec<u8> = (0..90_001u32).map(|i| b'!' + (i % 89) as u8).collect();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        format!(
            "POST /cgi/env.cgi HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert!(resp.body.ends_with(&body), "the body arrived changed");
}

/// With `allow_path_info` on the handler, a URL past the program's name
/// runs the program with the rest as PATH_INFO (RFC 3875 §4.1.5) and that
/// rest under the document root as PATH_TRANSLATED.
#[test]
fn a_program_takes_the_path_after_it_as_path_info() {
    let dir = TempDir::new("cgi-path-info");
    let config = config_changed(
        &dir,
        "modules = [\"Cgi\"]",
        "allow_path_info = true\nmodules = [\"Cgi\"]",
    );
    program(
        &dir,
        "info.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         echo \"script=$SCRIPT_NAME info=$PATH_INFO translated=${PATH_TRANSLATED-unset}\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let root = dir.path().join("www");

    let resp = Connection::open(server.addr).get("/cgi/info.cgi/a/b.txt?q=1");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.text().trim_end(),
        format!(
            "script=/cgi/info.cgi info=/a/b.txt translated={}/a/b.txt",
            root.display()
        )
    );
    let resp = Connection::open(server.addr).get("/cgi/info.cgi");
    assert_eq!(
        resp.text().trim_end(),
        "script=/cgi/info.cgi info= translated=unset"
    );
    // Past a program that is not there: nothing runs.
    let resp = Connection::open(server.addr).get("/cgi/none.cgi/a");
    assert_eq!(resp.status, 404);
}

/// Output goes to the client as the program writes it: with
/// `response_buffer_limit = 0`, the first line arrives while the program
/// waits for the test to let it write the second.
#[test]
fn output_streams_as_the_program_writes_it() {
    use std::io::Write;
    let dir = TempDir::new("cgi-stream");
    let config = config_changed(
        &dir,
        "response_buffer_limit = 100000",
        "response_buffer_limit = 0",
    );
    program(
        &dir,
        "stream.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nfirst\\n'\n\
         i=0\nwhile [ ! -e \"$DOCUMENT_ROOT/../go\" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n\
         echo second\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /cgi/stream.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"first\n");
    assert!(
        !got.windows(6).any(|w| w == b"second"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    std::fs::write(dir.path().join("go"), "").unwrap();
    read_until(&mut stream, &mut got, b"second\n");
    read_until(&mut stream, &mut got, b"0\r\n\r\n");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
}

/// At the configured `response_buffer_limit`: server-sent events go on
/// from the head on, and once output streams, a short line after a pause
/// goes when it is written, not when 64 KiB more have gathered.
#[test]
fn events_and_output_after_a_pause_are_not_held_back() {
    use std::io::Write;
    let dir = TempDir::new("cgi-events");
    let config = config(&dir);
    let wait_for = |file: &str| {
        format!(
            "i=0\nwhile [ ! -e \"$DOCUMENT_ROOT/../{file}\" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n"
        )
    };
    program(
        &dir,
        "events.cgi",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/event-stream\\n\\ndata: first\\n\\n'\n{}\
             printf 'data: second\\n\\n'\n",
            wait_for("go-events")
        ),
    );
    program(
        &dir,
        "pause.cgi",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 150000 /dev/zero | tr '\\0' a\n\
             {}echo tail\n{}echo end\n",
            wait_for("go-tail"),
            wait_for("go-end")
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let open = |path: &str| {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        stream
    };

    let mut events = open("/cgi/events.cgi");
    let mut got = Vec::new();
    read_until(&mut events, &mut got, b"data: first\n\n");
    std::fs::write(dir.path().join("go-events"), "").unwrap();
    read_until(&mut events, &mut got, b"data: second\n\n");
    read_until(&mut events, &mut got, b"0\r\n\r\n");

    // A HEAD gets its head at once, and the program, which would run on
    // for as long as its stream lasts, is ended.
    program(
        &dir,
        "endless.cgi",
        "#!/bin/sh\necho $$ > \"$DOCUMENT_ROOT/../endless.pid\"\n\
         printf 'Content-Type: text/event-stream\\n\\n'\n\
         while true; do printf 'data: tick\\n\\n'; sleep 0.1; done\n",
    );
    let mut head = Connection::open(server.addr);
    head.send_raw(b"HEAD /cgi/endless.cgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = head.read_response(true);
    assert_eq!(resp.status, 200);
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(dir.path().join("endless.pid")) {
            break pid.trim().to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the program runs on after its HEAD"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The connection serves the next request.
    assert_eq!(head.get("/cgi/status.cgi").status, 203);

    let mut pause = open("/cgi/pause.cgi");
    let mut got = Vec::new();
    read_until(&mut pause, &mut got, b"aaaaaaaaaa");
    std::fs::write(dir.path().join("go-tail"), "").unwrap();
    read_until(&mut pause, &mut got, b"tail\n");
    std::fs::write(dir.path().join("go-end"), "").unwrap();
    read_until(&mut pause, &mut got, b"end\n");
    read_until(&mut pause, &mut got, b"0\r\n\r\n");
}

/// Reads from `stream` onto `got` until it holds `what`.
fn read_until(stream: &mut std::net::TcpStream, got: &mut Vec<u8>, what: &[u8]) {
    use std::io::Read;
    let mut buffer = [0u8; 4096];
    while !got.windows(what.len()).any(|w| w == what) {
        let n = stream.read(&mut buffer).unwrap_or(0);
        assert!(
            n > 0,
            "the response ended before {:?}: {}",
            String::from_utf8_lossy(what),
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buffer[..n]);
    }
}

/// `git http-backend`, Git's own CGI program, behind Cgi: a push over
/// smart HTTP (the pack in the request body) and a clone of what was
/// pushed (a pack of several MiB streamed back), with the repository path
/// after the program's name as PATH_INFO and the section's `environment`
/// telling it where the repositories are. Outside CI a machine without git
/// skips the test; in CI that is a failure.
#[test]
fn git_clones_and_pushes_through_git_http_backend() {
    let backend = Path::new("/usr/lib/git-core/git-http-backend");
    let git = common::find_versioned_program("git", &[]);
    let Some(git) = git.filter(|_| backend.is_file()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "git or git-http-backend is missing (CI installs it: apt-get install git)"
        );
        eprintln!("skipped: git is not installed");
        return;
    };
    let dir = TempDir::new("cgi-git");
    let repos = dir.path().join("repos");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&git)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.test"])
            .args(["-c", "http.proxy=", "-c", "init.defaultBranch=main"])
            .args(args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let bare = repos.join("project.git");
    run(&["init", "--bare", bare.to_str().unwrap()]);
    run(&[
        "-C",
        bare.to_str().unwrap(),
        "config",
        "http.receivepack",
        "true",
    ]);
    let work = dir.path().join("work");
    run(&["init", work.to_str().unwrap()]);
    // Several MiB that do not compress: the pack streams back in pieces.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(work.join("noise.bin"), &noise).unwrap();
    std::fs::write(work.join("README"), "pushed through riis\n").unwrap();
    run(&["-C", work.to_str().unwrap(), "add", "."]);
    run(&["-C", work.to_str().unwrap(), "commit", "-q", "-m", "first"]);

    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "CustomError"
[[modules]]
name = "Cgi"

[[sites]]
name = "Git"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/git"
physical_path = '/usr/lib/git-core'
cgi = {{ response_buffer_limit = 65536, environment = {{ GIT_PROJECT_ROOT = '{repos}', GIT_HTTP_EXPORT_ALL = "1" }} }}
[[sites.locations.handlers]]
name = "GitHttpBackend"
path = "git-http-backend"
resource_type = "File"
allow_path_info = true
modules = ["Cgi"]
"#,
            root = root.display(),
            repos = repos.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let url = format!("http://{}/git/git-http-backend/project.git", server.addr);
    run(&[
        "-C",
        work.to_str().unwrap(),
        "push",
        "-q",
        &url,
        "HEAD:refs/heads/main",
    ]);
    let clone = dir.path().join("clone");
    run(&["clone", "-q", &url, clone.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "pushed through riis\n"
    );
    assert!(std::fs::read(clone.join("noise.bin")).unwrap() == noise);
    server.terminate();
}

/// A `Location` that is a path, alone (RFC 3875 §6.2.2's local redirect),
/// has the server answer that path instead, as a GET without the body; a
/// program that redirects to itself gets 500, not a loop.
#[test]
fn a_local_redirect_is_answered_by_the_server() {
    let dir = TempDir::new("cgi-local-redirect");
    let config = config(&dir);
    program(
        &dir,
        "local.cgi",
        "#!/bin/sh\nprintf 'Location: /cgi/env.cgi?from=local\\n\\nignored body'\n",
    );
    program(
        &dir,
        "self.cgi",
        "#!/bin/sh\nprintf 'Location: /cgi/self.cgi\\n\\n'\n",
    );
    program(
        &dir,
        "see-other.cgi",
        "#!/bin/sh\nprintf 'Status: 303 See Other\\nLocation: /cgi/env.cgi\\n\\n'\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /cgi/local.cgi HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
          Content-Length: 5\r\n\r\nhello",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-program"), Some("env"));
    let text = resp.text();
    assert!(
        text.contains("method=GET query=from=local script=/cgi/env.cgi"),
        "{text}"
    );
    assert!(text.contains("type= length= "), "{text}");
    assert!(
        !text.contains("ignored body") && !text.contains("hello"),
        "{text}"
    );
    // The connection goes on.
    assert_eq!(conn.get("/cgi/status.cgi").status, 203);

    assert_eq!(status_of(&conn.get("/cgi/self.cgi")), "500");
    // A Location with a status, or with other header lines, goes to the
    // client.
    assert_eq!(conn.get("/cgi/redirect.cgi").status, 302);
    let see_other = conn.get("/cgi/see-other.cgi");
    assert_eq!(see_other.status, 303);
    assert_eq!(see_other.header("location"), Some("/cgi/env.cgi"));
}

/// A local redirect goes where the program's `Location` says, and that is
/// often the client's choice (`?next=`): a location kept for the server's
/// own requests (`internal`) stays closed to it, as to the client, while
/// the program's deliberate `X-Accel-Redirect` opens it.
#[test]
fn a_local_redirect_does_not_open_an_internal_location() {
    let dir = TempDir::new("cgi-local-internal");
    let config = config_changed(
        &dir,
        "[[modules]]\nname = \"Cgi\"\n",
        "[[modules]]\nname = \"RequestFiltering\"\n[[modules]]\nname = \"Cgi\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[[sites.locations]]\npath = \"/cgi/hidden\"\nrequest_filtering = { internal = true }\n";
    std::fs::write(&config, text).unwrap();
    program(
        &dir,
        "next.cgi",
        "#!/bin/sh\nprintf 'Location: %s\\n\\n' \"$QUERY_STRING\"\n",
    );
    program(
        &dir,
        "accel-hidden.cgi",
        "#!/bin/sh\nprintf 'X-Accel-Redirect: /cgi/hidden/secret.cgi\\n\\n'\n",
    );
    program(
        &dir,
        "hidden/secret.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsecret'\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/cgi/hidden/secret.cgi").status, 404);
    let redirected = conn.get("/cgi/next.cgi?/cgi/hidden/secret.cgi");
    assert_eq!(redirected.status, 404, "{}", redirected.text());
    assert_ne!(redirected.text(), "secret");
    // The refusal gets its error page, as the client's own request does.
    assert!(
        redirected.text().contains("HTTP Error 404"),
        "{}",
        redirected.text()
    );
    // An open location still answers through a local redirect.
    let open = conn.get("/cgi/next.cgi?/cgi/status.cgi");
    assert_eq!(open.status, 203, "{}", open.text());
    let accel = conn.get("/cgi/accel-hidden.cgi");
    assert_eq!(accel.status, 200, "{}", accel.text());
    assert_eq!(accel.text(), "secret");
}

/// A local redirect's URL meets UrlRewrite's rules as the client's own
/// request would: a rule that blocks a path is not one `?next=` away.
#[test]
fn a_local_redirect_meets_the_rewrite_rules() {
    let dir = TempDir::new("cgi-local-rules");
    let config = config_changed(
        &dir,
        "[[modules]]\nname = \"Cgi\"\n",
        "[[modules]]\nname = \"UrlRewrite\"\n[[modules]]\nname = \"Cgi\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[[rewrite.rules]]\nname = \"block admin\"\npattern = \"^cgi/admin/\"\n\
           action = { type = \"CustomResponse\", status_code = 403, status_reason = \"Forbidden\" }\n\
           \n[[rewrite.rules]]\nname = \"block private\"\npattern = \".*\"\n\
           conditions = [{ input = \"{REQUEST_URI}\", pattern = \"^/cgi/private/\" }]\n\
           action = { type = \"CustomResponse\", status_code = 403, status_reason = \"Forbidden\" }\n";
    std::fs::write(&config, text).unwrap();
    program(
        &dir,
        "next.cgi",
        "#!/bin/sh\nprintf 'Location: %s\\n\\n' \"$QUERY_STRING\"\n",
    );
    for secret in ["admin/secret.cgi", "private/secret.cgi"] {
        program(
            &dir,
            secret,
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsecret'\n",
        );
    }
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/cgi/admin/secret.cgi").status, 403);
    let redirected = conn.get("/cgi/next.cgi?/cgi/admin/secret.cgi");
    assert_eq!(redirected.status, 403, "{}", redirected.text());
    // A rule on the URL the client asked for (`REQUEST_URI`, IIS's usual
    // blocking rule) sees the redirect's, as a new request's.
    assert_eq!(conn.get("/cgi/private/secret.cgi").status, 403);
    let redirected = conn.get("/cgi/next.cgi?/cgi/private/secret.cgi");
    assert_eq!(redirected.status, 403, "{}", redirected.text());
    let open = conn.get("/cgi/next.cgi?/cgi/status.cgi");
    assert_eq!(open.status, 203, "{}", open.text());
}

/// A local redirect to a URL a rule rewrites (a front controller's) is
/// judged by the location it asked for too, as the client's own request
/// is: a logon that location needs is not skipped by the rewrite.
#[test]
fn a_local_redirect_rewritten_keeps_the_logon_of_its_location() {
    let dir = TempDir::new("cgi-local-logon");
    let config = config_changed(
        &dir,
        "[[modules]]\nname = \"Cgi\"\n",
        "[[modules]]\nname = \"UrlRewrite\"\n[[modules]]\nname = \"BasicAuthentication\"\n\
         [[modules]]\nname = \"AnonymousAuthentication\"\n[[modules]]\nname = \"Cgi\"\n",
    );
    dir.write("users", "alice:$2y$04$abcdefghijklmnopqrstuu\n");
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[[rewrite.rules]]\nname = \"front\"\npattern = \"^cgi/members/\"\n\
           action = { type = \"Rewrite\", url = \"/cgi/status.cgi\" }\n\
           \n[[sites.locations]]\npath = \"/cgi/members\"\n\
           basic_authentication = { enabled = true, user_file = \"users\" }\n\
           anonymous_authentication = { enabled = false }\n";
    std::fs::write(&config, text).unwrap();
    program(
        &dir,
        "next.cgi",
        "#!/bin/sh\nprintf 'Location: %s\\n\\n' \"$QUERY_STRING\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/cgi/members/list").status, 401);
    let redirected = conn.get("/cgi/next.cgi?/cgi/members/list");
    assert_eq!(redirected.status, 401, "{}", redirected.text());
}

/// A program's `X-Accel-Redirect` is answered by the URL it names, as a
/// GET, whatever the program's status and body; with `x_accel_redirect =
/// false` the header is dropped and the program's answer goes.
#[test]
fn an_x_accel_redirect_is_answered_by_the_server() {
    let dir = TempDir::new("cgi-accel-redirect");
    program(
        &dir,
        "accel.cgi",
        "#!/bin/sh\nprintf 'Status: 404 Not Found\\nX-Accel-Redirect: /cgi/env.cgi?from=accel\\n\
         Content-Type: text/html\\nX-Program: accel\\n\\nthe program body'\n",
    );
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /cgi/accel.cgi HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
          Content-Length: 5\r\n\r\nhello",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-program"), Some("env"));
    let text = resp.text();
    assert!(
        text.contains("method=GET query=from=accel script=/cgi/env.cgi"),
        "{text}"
    );
    assert!(!text.contains("program body"), "{text}");
    drop(server);

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("timeout = 1\n", "timeout = 1\nx_accel_redirect = false\n"),
    )
    .unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/cgi/accel.cgi");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-program"), Some("accel"));
    assert_eq!(resp.header("x-accel-redirect"), None);
}

/// What a program wrote before it exited reaches a client that stalls
/// first, whole (the second of grace after the exit counts silence, not
/// the client's); a program whose time runs out after its output began
/// streaming ends the response cut short, and before that its 502.1
/// carries none of its headers; a program's own error page goes through
/// CustomError.
#[test]
fn streamed_output_ends_whole_or_visibly_cut() {
    use std::io::{Read, Write};
    let dir = TempDir::new("cgi-stream-ends");
    let config = config(&dir);
    program(
        &dir,
        "large.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nhead -c 5130000 /dev/zero\n",
    );
    program(
        &dir,
        "stalls.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 150000 /dev/zero\nsleep 30\n",
    );
    program(
        &dir,
        "late.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nSet-Cookie: s=1\\nCache-Control: public, max-age=3600\\n\\nsome'\nsleep 30\n",
    );
    program(
        &dir,
        "oops.cgi",
        "#!/bin/sh\nprintf 'Status: 500\\nContent-Type: text/plain\\n\\nTraceback: secret stuff'\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /cgi/large.cgi HTTP/1.1\r\nHost: t\r\n\r\n");
    // The program has written all and exited long before the client reads.
    std::thread::sleep(Duration::from_secs(3));
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 5_130_000);

    // Past response_buffer_limit (100,000) the output streamed; then the
    // program ran past its second: the response ends without its last
    // chunk, and the connection closes.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /cgi/stalls.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(got.len() > 100_000, "{} bytes", got.len());
    assert!(!got.ends_with(b"0\r\n\r\n"), "the response looks whole");

    let late = Connection::open(server.addr).get("/cgi/late.cgi");
    assert_eq!(status_of(&late), "502.1");
    assert_eq!(late.header("set-cookie"), None);
    assert_ne!(late.header("cache-control"), Some("public, max-age=3600"));

    let oops = Connection::open(server.addr).get("/cgi/oops.cgi");
    assert_eq!(oops.status, 500);
    assert!(!oops.text().contains("secret stuff"), "{}", oops.text());
}

/// A request queued behind busy programs gets its 502.1 when its time runs
/// out, not once a thread is free: here the only thread streams to a
/// client that does not read (a wait that does not count against that
/// program's own time).
#[test]
fn a_run_waiting_for_a_thread_times_out_in_the_queue() {
    let (_dir, server, stalled) = one_thread_held("cgi-queued");
    // The program fills what the server holds for the client, then waits.
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let queued = Connection::open(server.addr).get("/cgi/status.cgi");
    assert_eq!(status_of(&queued), "502.1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    drop(stalled);
}

/// A non-parsed-header program (`nph-…`) starts its output with an HTTP
/// status line: its status, reason and headers are the response's, and its
/// output goes on as it comes; one without a status line gets 502.2.
#[test]
fn a_non_parsed_header_program_answers_with_its_status_line() {
    let dir = TempDir::new("cgi-nph");
    let config = config(&dir);
    program(
        &dir,
        "nph-made.cgi",
        "#!/bin/sh\nprintf 'HTTP/1.1 201 Made Here\\r\\nContent-Type: text/plain\\r\\nX-Nph: yes\\r\\n\\r\\nnph body'\n",
    );
    program(
        &dir,
        "nph-plain.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nno status line'\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let made = conn.get("/cgi/nph-made.cgi");
    assert_eq!((made.status, made.reason.as_str()), (201, "Made Here"));
    assert_eq!(made.header("x-nph"), Some("yes"));
    assert_eq!(made.text(), "nph body");
    assert_eq!(status_of(&conn.get("/cgi/nph-plain.cgi")), "502.2");
}

/// Requests whose clients left while they waited for a thread give their
/// places back while every thread stays busy: 1,100 of them (more than the
/// 1,024 that may wait) do not leave the next request a 503.
#[test]
fn requests_that_left_the_queue_free_their_places() {
    use std::io::Write;
    let (_dir, server, stalled) = one_thread_held("cgi-queue-left");
    for _ in 0..1100 {
        let mut left = std::net::TcpStream::connect(server.addr).unwrap();
        left.write_all(b"GET /cgi/status.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let next = Connection::open(server.addr).get("/cgi/status.cgi");
    assert_eq!(status_of(&next), "502.1");
    drop(stalled);
}

/// A server with one CGI thread (`max_instances = 1`, `timeout = 1`), held
/// by a program that streams for ever to a client that does not read (a
/// wait that does not count against the program's time); the client goes
/// with it, to be dropped when the test is done.
fn one_thread_held(name: &str) -> (TempDir, RunningBinary, std::net::TcpStream) {
    use std::io::Write;
    let dir = TempDir::new(name);
    let config = config_changed(&dir, "timeout = 1\n", "timeout = 1\nmax_instances = 1\n");
    program(
        &dir,
        "endless.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat /dev/zero\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    stalled
        .write_all(b"GET /cgi/endless.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    (dir, server, stalled)
}

/// A site whose folders' default document is `index.cgi`.
fn default_document_site(dir: &TempDir) -> PathBuf {
    let root = dir.path().join("www");
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "Static"
path = "*"
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[default_document]
files = ["index.cgi"]

[cgi]
timeout = 60

[[sites]]
name = "Cgi"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    )
}

/// A default document answered by a program holds at most the response
/// buffer: past it, its output goes to the client while the program still
/// runs (it was held whole in memory until the program ended, so a large
/// export through `/dir/` took as much memory as its size).
#[test]
fn a_large_default_document_goes_out_as_it_comes() {
    use std::io::{Read, Write};
    let dir = TempDir::new("cgi-default-document");
    let go = dir.path().join("go");
    program(
        &dir,
        "index.cgi",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\n\
             head -c 6000000 /dev/zero\n\
             i=0; while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
             printf end\n",
            go = go.display()
        ),
    );
    let config = default_document_site(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    // A guard against a hang, not a measure: the first part comes long
    // before the program would give up waiting.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /cgi/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while received.len() < 5_000_000 {
        let n = stream
            .read(&mut buffer)
            .expect("the output came while the program ran");
        assert!(n > 0, "the response ended early");
        received.extend_from_slice(&buffer[..n]);
    }
    std::fs::write(&go, "").unwrap();
    stream.read_to_end(&mut received).unwrap();
    let text = String::from_utf8_lossy(&received[..200]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        received.ends_with(b"end\r\n0\r\n\r\n"),
        "chunked to its end"
    );
}

/// A default document that streams (server-sent events) reaches the
/// client event by event, as the program's own URL does; one that ends
/// without a flush is held whole and goes with its `Content-Length`.
#[test]
fn a_default_document_streams_as_its_own_url_does() {
    use std::io::{Read, Write};
    let dir = TempDir::new("cgi-default-document-stream");
    let go = dir.path().join("go");
    program(
        &dir,
        "events/index.cgi",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/event-stream\\n\\ndata: one\\n\\n'\n\
             i=0; while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
             printf 'data: two\\n\\n'\n",
            go = go.display()
        ),
    );
    program(
        &dir,
        "small/index.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsmall page'\n",
    );
    let config = default_document_site(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let small = Connection::open(server.addr).get("/cgi/small/");
    assert_eq!(small.text(), "small page");
    assert_eq!(small.header("content-length"), Some("10"));

    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    // A guard against a hang, not a measure.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /cgi/events/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("data: one") {
        let n = stream
            .read(&mut buffer)
            .expect("the first event came while the program ran");
        assert!(n > 0, "the response ended early");
        received.extend_from_slice(&buffer[..n]);
    }
    std::fs::write(&go, "").unwrap();
    stream.read_to_end(&mut received).unwrap();
    assert!(String::from_utf8_lossy(&received).contains("data: two"));
}

/// A custom error page larger than the response buffer, made by a
/// program (`ExecuteURL`), still goes out under the error's status: such a
/// child's output is held whole, since CustomError puts the error's head
/// back on it when it ends (a default document's goes out past the
/// buffer; the page's must not, or the client would get a 200).
#[test]
fn a_large_custom_error_page_keeps_the_errors_status() {
    let dir = TempDir::new("cgi-large-error-page");
    program(
        &dir,
        "page.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/html\\n\\n'\nhead -c 300000 /dev/zero | tr '\\0' x\n",
    );
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[server]
response_buffer_limit = 65536

[[modules]]
name = "CustomError"
[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "Static"
path = "*"
modules = ["StaticFile"]

[http_errors]
error_mode = "Custom"
errors = [{{ status = 404, path = "/cgi/page.cgi", response_mode = "ExecuteURL" }}]

[[sites]]
name = "Cgi"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let missing = Connection::open(server.addr).get("/missing.txt");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body.len(), 300_000);
    assert!(missing.body.iter().all(|&b| b == b'x'));
}

/// A local redirect's answer is never kept by OutputCache: a hit would skip
/// the target's pipeline, so a client the target's location refuses would
/// get another client's copy, and a change of the target would not show.
#[test]
fn a_local_redirect_is_not_served_from_the_output_cache() {
    let dir = TempDir::new("cgi-local-cache");
    let config = config_changed(
        &dir,
        "[[modules]]\nname = \"Cgi\"\n",
        "[[modules]]\nname = \"OutputCache\"\n[[modules]]\nname = \"Cgi\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + "output_cache = { policy = \"CacheForTimePeriod\", duration = 60, frequent_hit_threshold = 1 }\n";
    std::fs::write(&config, text).unwrap();
    program(
        &dir,
        "go.cgi",
        "#!/bin/sh\nprintf 'Location: /cgi/data.cgi\\n\\n'\n",
    );
    program(
        &dir,
        "data.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat \"$DOCUMENT_ROOT/../data.txt\"\n",
    );
    dir.write("data.txt", "v1");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    // The target alone is kept (a control for the cache's settings).
    assert_eq!(conn.get("/cgi/data.cgi").text(), "v1");
    assert_eq!(conn.get("/cgi/data.cgi").header("age"), Some("0"));
    for _ in 0..3 {
        let resp = conn.get("/cgi/go.cgi");
        assert_eq!(resp.text(), "v1");
        assert_eq!(resp.header("age"), None);
    }
    dir.write("data.txt", "v2");
    assert_eq!(conn.get("/cgi/go.cgi").text(), "v2");
}

/// An answer that ends short of the `Content-Length` it declared (a
/// download script that died half-way) is not passed on as whole: before
/// its head went out it is a 502, after, the connection is reset, so the
/// client (and any cache) sees it incomplete, as nginx and Apache do. One
/// longer than it declared is cut to the length, as nginx cuts it.
#[test]
fn an_answer_short_of_its_content_length_fails() {
    use std::io::Read;
    let dir = TempDir::new("cgi-short");
    let config = config(&dir);
    program(
        &dir,
        "short.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 1000\\n\\nshort'\n",
    );
    program(
        &dir,
        "cut.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\nContent-Length: 300000\\n\\n'\n\
         head -c 150000 /dev/zero\nsleep 0.5\nexit 1\n",
    );
    program(
        &dir,
        "exact.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 5\\n\\nexact'\n",
    );
    program(
        &dir,
        "long.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 5\\n\\n0123456789'\n",
    );
    program(
        &dir,
        "endless.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 5\\n\\n'\nexec yes\n",
    );
    program(
        &dir,
        "huge.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 99999999999999999999999\\n\\n'\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/cgi/short.cgi").status, 502);
    assert_eq!(conn.get("/cgi/exact.cgi").text(), "exact");
    // Longer than it said: what is past the length is dropped (nginx).
    let long = conn.get("/cgi/long.cgi");
    assert_eq!(
        (long.text().as_str(), long.header("content-length")),
        ("01234", Some("5"))
    );
    // One that goes on for ever ends with its length, and is stopped.
    let endless = conn.get("/cgi/endless.cgi");
    assert_eq!((endless.status, endless.text().as_str()), (200, "y\ny\ny"));
    // A HEAD's, and a 204's, answer that runs on is stopped as well.
    program(
        &dir,
        "empty.cgi",
        "#!/bin/sh\nprintf 'Status: 204\\nContent-Length: 5\\n\\n'\nexec yes\n",
    );
    conn.send_raw(b"HEAD /cgi/endless.cgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5"))
    );
    assert_eq!(conn.get("/cgi/empty.cgi").status, 204);
    assert_eq!(conn.get("/cgi/exact.cgi").text(), "exact");
    common::wait_for("no `yes` left running", || {
        !std::process::Command::new("pgrep")
            .args(["-x", "yes"])
            .status()
            .is_ok_and(|s| s.success())
    });
    // A length no number can hold is not passed on, to HEAD either.
    conn.send_raw(b"HEAD /cgi/huge.cgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let huge = conn.read_response(true);
    assert_ne!(
        huge.header("content-length"),
        Some("99999999999999999999999")
    );
    // Past response_buffer_limit (100,000 here) the head went out first.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut stream, b"GET /cgi/cut.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got[..got.len().min(200)]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    // Chunked (riis frames a program's answer itself), and cut: no last
    // chunk ends it.
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(got.len() > 100_000, "{}", got.len());
    assert!(!got.ends_with(b"0\r\n\r\n"));
}

/// An `X-Accel-Redirect` keeps the application's `Set-Cookie` and
/// `Cache-Control` when the URL it names answers through a request of its
/// own (here a CGI local redirect), even once that answer streams.
#[test]
fn an_x_accel_redirect_keeps_its_headers_through_a_local_redirect() {
    let dir = TempDir::new("cgi-accel-local");
    let config = config(&dir);
    program(
        &dir,
        "accel-local.cgi",
        "#!/bin/sh\nprintf 'Set-Cookie: session=abc\\nCache-Control: private, no-store\\n\
         X-Accel-Redirect: /cgi/local-stream.cgi\\n\\n'\n",
    );
    program(
        &dir,
        "local-stream.cgi",
        "#!/bin/sh\nprintf 'Location: /cgi/stream-long.cgi\\n\\n'\n",
    );
    program(
        &dir,
        "stream-long.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 150000 /dev/zero\nsleep 0.3\necho end\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/cgi/accel-local.cgi");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("set-cookie"), Some("session=abc"));
    assert_eq!(resp.header("cache-control"), Some("private, no-store"));
    assert!(resp.body.ends_with(b"end\n"));
}

/// A form that posts to its folder (`./`, `/?task=login`) reaches the
/// folder's default document with its body, as on IIS, where the static
/// handler takes every method: StaticFile leaves a folder's POST to
/// DefaultDocument, which reads the body and hands it to the document. A
/// POST to a file is still 405.
#[test]
fn a_post_to_a_folder_reaches_its_default_document_with_its_body() {
    let dir = TempDir::new("cgi-folder-post");
    let root = dir.path().join("www");
    program(
        &dir,
        "index.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"method=$REQUEST_METHOD length=$CONTENT_LENGTH query=$QUERY_STRING\"\ncat\n",
    );
    dir.write("www/a.txt", "alpha");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD", "POST"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[default_document]
files = ["index.cgi"]

[[sites]]
name = "Cgi"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /cgi/?_task=login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nuser=a&pass=b",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.text(),
        "method=POST length=13 query=_task=login\nuser=a&pass=b"
    );
    // Chunked too; and the connection goes on.
    conn.send_raw(
        b"POST /cgi/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.text(), "method=POST length=5 query=\nabcde");
    let resp = conn.get("/cgi/");
    assert_eq!(resp.text(), "method=GET length= query=\n");
    // A file's POST is the file's to refuse.
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD"));
}
