//! FastCgi over real sockets, against a FastCGI application written here
//! (each script name a behaviour: the parameters echoed, its own 404,
//! overloaded, not FastCGI, silent, streaming, cut short, closing its kept
//! connection, a download larger than every buffer), so each protocol case
//! is exact and repeatable. `php-fpm`,
//! the application most users run, has its own file: `fastcgi_php.rs`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Connection, RunningBinary, TempDir};

/// One request as the application got it.
struct Request {
    params: HashMap<String, String>,
    body: Vec<u8>,
    keep_connection: bool,
}

/// What the application saw, for the tests to check.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Times `/dies.fcgi` was asked for.
    dies: AtomicUsize,
    /// `/stream/headfirst.fcgi` may send its body.
    go_body: (Mutex<bool>, Condvar),
    /// The connection of a `/hang.fcgi` request was closed by the server.
    hang_closed: AtomicBool,
    /// `/stream.fcgi` may send its second part.
    go: (Mutex<bool>, Condvar),
    /// `/download.fcgi` wrote its whole answer.
    download_done: AtomicBool,
    last: Mutex<Option<Request>>,
}

/// A FastCGI Responder on a loopback port, one thread per connection.
struct FakeApp {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl FakeApp {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let seen = shared.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        Self { addr, seen }
    }
}

fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, kind, 0, 1];
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    // Some padding, as applications may add.
    let padding = (8 - content.len() % 8) % 8;
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0, padding));
    out
}

const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const END_REQUEST: u8 = 3;

fn end(protocol_status: u8) -> Vec<u8> {
    record(END_REQUEST, &[0, 0, 0, 0, protocol_status, 0, 0, 0])
}

fn read_record(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).ok()?;
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut content = vec![0; len + usize::from(header[6])];
    stream.read_exact(&mut content).ok()?;
    content.truncate(len);
    Some((header[1], content))
}

fn pair_length(data: &[u8], at: &mut usize) -> usize {
    if data[*at] < 128 {
        *at += 1;
        usize::from(data[*at - 1])
    } else {
        let n = u32::from_be_bytes([data[*at], data[*at + 1], data[*at + 2], data[*at + 3]]);
        *at += 4;
        (n & 0x7fff_ffff) as usize
    }
}

/// Reads one request off the connection: `None` when it closed.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let (kind, begin) = read_record(stream)?;
    assert_eq!(kind, 1, "a request starts with FCGI_BEGIN_REQUEST");
    assert_eq!(&begin[..2], &[0, 1], "the Responder role");
    let mut params = Vec::new();
    let mut body = Vec::new();
    loop {
        let (kind, content) = read_record(stream)?;
        match kind {
            // An application that reads no body: stops after the
            // parameters.
            4 if content.is_empty()
                && (contains(&params, b"/noread.fcgi")
                    || contains(&params, b"/talker.fcgi")
                    || contains(&params, b"/slowreader.fcgi")) =>
            {
                return Some(Request {
                    params: decode(&params),
                    body,
                    keep_connection: begin[2] & 1 == 1,
                })
            }
            4 => params.extend_from_slice(&content),
            5 if content.is_empty() => break,
            5 => body.extend_from_slice(&content),
            other => panic!("unexpected record type {other}"),
        }
    }
    Some(Request {
        params: decode(&params),
        body,
        keep_connection: begin[2] & 1 == 1,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn decode(params: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut at = 0;
    while at < params.len() {
        let name_len = pair_length(params, &mut at);
        let value_len = pair_length(params, &mut at);
        let name = String::from_utf8_lossy(&params[at..at + name_len]).into_owned();
        at += name_len;
        let value = String::from_utf8_lossy(&params[at..at + value_len]).into_owned();
        at += value_len;
        map.insert(name, value);
    }
    map
}

fn serve(mut stream: TcpStream, seen: &Seen) {
    while let Some(request) = read_request(&mut stream) {
        // The behaviour is the script's file name, in any location.
        let script = request
            .params
            .get("SCRIPT_NAME")
            .cloned()
            .unwrap_or_default();
        let script = format!("/{}", script.rsplit('/').next().unwrap_or(""));
        let keep = request.keep_connection;
        let mut out = Vec::new();
        match script.as_str() {
            "/echo.fcgi" => {
                let mut text = String::new();
                for name in [
                    "GATEWAY_INTERFACE",
                    "REQUEST_METHOD",
                    "REQUEST_URI",
                    "QUERY_STRING",
                    "SCRIPT_FILENAME",
                    "CONTENT_TYPE",
                    "CONTENT_LENGTH",
                    "HTTP_USER_AGENT",
                    "HTTP_PROXY",
                    "HTTP_AUTHORIZATION",
                    "HTTP_PROXY_AUTHORIZATION",
                    "APP_ENV",
                    "SERVER_SOFTWARE",
                    "HTTP_HOST",
                    "HTTPS",
                    "DOCUMENT_ROOT",
                    "HTTP_X_ORIGINAL_URL",
                    "HTTP_TRANSFER_ENCODING",
                    "SCRIPT_NAME",
                    "PATH_INFO",
                ] {
                    let value = request.params.get(name).map_or("unset", |v| v.as_str());
                    text.push_str(&format!("{name}={value}\n"));
                }
                text.push_str(&format!(
                    "keep={keep}\nbody={}",
                    String::from_utf8_lossy(&request.body)
                ));
                // The head is cut across two records.
                out.extend(record(STDOUT, b"Content-Type: text/pl"));
                out.extend(record(STDOUT, b"ain\r\nX-App: fake\r\n\r\n"));
                out.extend(record(STDERR, b"a warning from the application\n"));
                for part in text.as_bytes().chunks(65_535) {
                    out.extend(record(STDOUT, part));
                }
                out.extend(record(STDOUT, b""));
                out.extend(end(0));
            }
            "/status.fcgi" => {
                out.extend(record(
                    STDOUT,
                    b"Status: 404 Not Here\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\r\nthe application's own 404",
                ));
                out.extend(end(0));
            }
            "/overloaded.fcgi" => out.extend(end(2)),
            "/garbage.fcgi" => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nhello"),
            "/nohead.fcgi" => {
                out.extend(record(STDOUT, b"just some text\n\n"));
                out.extend(end(0));
            }
            "/silent.fcgi" => {
                std::thread::sleep(Duration::from_secs(3));
                return;
            }
            "/big.fcgi" => {
                out.extend(record(
                    STDOUT,
                    b"Content-Type: application/octet-stream\r\n\r\n",
                ));
                let size: usize = request.params["QUERY_STRING"].parse().unwrap();
                let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                for piece in data.chunks(65_535) {
                    out.extend(record(STDOUT, piece));
                }
                out.extend(end(0));
            }
            "/download.fcgi" => {
                // A large answer written as fast as riis takes it, piece
                // by piece (nothing held in memory here).
                let size: usize = request.params["QUERY_STRING"].parse().unwrap();
                let head = b"Content-Type: application/octet-stream\r\n\r\n";
                if stream.write_all(&record(STDOUT, head)).is_err() {
                    return;
                }
                let mut piece = Vec::with_capacity(65_528);
                for at in (0..size).step_by(65_528) {
                    piece.clear();
                    piece.extend((at..size.min(at + 65_528)).map(|i| (i % 251) as u8));
                    if stream.write_all(&record(STDOUT, &piece)).is_err() {
                        return;
                    }
                }
                seen.download_done.store(true, Ordering::SeqCst);
                out.extend(end(0));
            }
            "/stream.fcgi" => {
                stream
                    .write_all(&record(STDOUT, b"Content-Type: text/plain\r\n\r\nfirst\n"))
                    .unwrap();
                let (lock, cv) = &seen.go;
                let go = cv
                    .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |go| !*go)
                    .unwrap()
                    .0;
                assert!(*go, "the client never saw the first part");
                out.extend(record(STDOUT, b"second\n"));
                out.extend(end(0));
            }
            "/cut.fcgi" => {
                let _ =
                    stream.write_all(&record(STDOUT, b"Content-Type: text/plain\r\n\r\npartial"));
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            "/hang.fcgi" => {
                let _ =
                    stream.write_all(&record(STDOUT, b"Content-Type: text/plain\r\n\r\nwaiting"));
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut byte = [0u8; 1];
                if matches!(stream.read(&mut byte), Ok(0)) {
                    seen.hang_closed.store(true, Ordering::SeqCst);
                }
                return;
            }
            "/stray.fcgi" => {
                // Answers, then writes more on the kept connection: an
                // answer nobody asked for, which must not reach the next
                // request.
                out.extend(record(STDOUT, b"Content-Type: text/plain\r\n\r\nfirst"));
                out.extend(end(0));
                let _ = stream.write_all(&out);
                std::thread::sleep(Duration::from_millis(50));
                let mut forged = record(
                    STDOUT,
                    b"Content-Type: text/plain\r\nX-Forged: 1\r\n\r\nFORGED",
                );
                forged.extend(end(0));
                let _ = stream.write_all(&forged);
                *seen.last.lock().unwrap() = Some(request);
                // Stays open, as a kept connection does.
                std::thread::sleep(Duration::from_secs(5));
                return;
            }
            "/dies.fcgi" => {
                // Takes the request, then dies without a word.
                seen.dies.fetch_add(1, Ordering::SeqCst);
                return;
            }
            "/head.fcgi" => {
                out.extend(record(
                    STDOUT,
                    b"Content-Type: text/plain\r\nContent-Length: 1200\r\n\r\n",
                ));
                out.extend(end(0));
            }
            "/nolength.fcgi" => {
                out.extend(record(STDOUT, b"Content-Type: text/plain\r\n\r\n"));
                out.extend(end(0));
            }
            "/talker.fcgi" => {
                // Answers slowly without ever reading the body: it is not
                // silent, so the request waits for it.
                let _ = stream.write_all(&record(STDOUT, b"Content-Type: text/plain\r\n\r\n"));
                for i in 0..8 {
                    std::thread::sleep(Duration::from_millis(250));
                    let _ = stream.write_all(&record(STDOUT, format!("line {i}\n").as_bytes()));
                }
                let _ = stream.write_all(&end(0));
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            "/slowreader.fcgi" => {
                // Takes the body slowly (16 KiB every 50 ms) for 2.5 s,
                // saying nothing, then answers: it is never silent.
                let started = std::time::Instant::now();
                let mut taken = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while started.elapsed() < Duration::from_millis(2500) {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => taken += n,
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let text = format!("Content-Type: text/plain\r\n\r\ntook {}", taken > 0);
                let _ = stream.write_all(&record(STDOUT, text.as_bytes()));
                let _ = stream.write_all(&end(0));
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            "/bodyhead.fcgi" => {
                // Sends its body even for HEAD, without a length.
                out.extend(record(STDOUT, b"Content-Type: text/plain\r\n\r\n12345"));
                out.extend(end(0));
            }
            "/noread.fcgi" => {
                std::thread::sleep(Duration::from_secs(3));
                return;
            }
            "/headfirst.fcgi" => {
                stream
                    .write_all(&record(STDOUT, b"Content-Type: text/plain\r\n\r\n"))
                    .unwrap();
                let (lock, cv) = &seen.go_body;
                let go = cv
                    .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |go| !*go)
                    .unwrap()
                    .0;
                assert!(*go, "the client never saw the head");
                out.extend(record(STDOUT, b"late body"));
                out.extend(end(0));
            }
            "/closes.fcgi" => {
                // Answers, then closes the connection it was asked to keep.
                out.extend(record(STDOUT, b"Content-Type: text/plain\r\n\r\nbye"));
                out.extend(end(0));
                let _ = stream.write_all(&out);
                *seen.last.lock().unwrap() = Some(request);
                return;
            }
            other => panic!("no behaviour for {other}"),
        }
        *seen.last.lock().unwrap() = Some(request);
        if stream.write_all(&out).is_err() || !keep {
            return;
        }
    }
}

fn config(dir: &TempDir, app: SocketAddr, unreachable: SocketAddr) -> PathBuf {
    let root = dir.path().join("www");
    for name in [
        "echo",
        "status",
        "overloaded",
        "garbage",
        "nohead",
        "silent",
        "big",
        "closes",
        "stream/stream",
        "stream/cut",
        "stream/hang",
        "nokeep/echo",
        "down/echo",
        "small/big",
        "stray",
        "dies",
        "head",
        "nolength",
        "upload/noread",
        "upload/talker",
        "upload/slowreader",
        "upload/echo",
        "bodyhead",
        "stream/echo",
        "stream/headfirst",
        "slowclient/download",
        "deadline/talker",
        "unlimited/talker",
        "unlimited/silent",
    ] {
        dir.write(&format!("www/{name}.fcgi"), "");
    }
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
name = "FastCGI"
path = "*.fcgi"
resource_type = "File"
modules = ["FastCgi"]

[fastcgi]
address = "{app}"
activity_timeout = 1
max_request_body = 1000
kept_connections = 4
params = {{ APP_ENV = "testing", SERVER_SOFTWARE = "replaced" }}

[[sites]]
name = "FastCGI"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/stream"
fastcgi = {{ address = "{app}", response_buffer_limit = 0 }}

[[sites.locations]]
path = "/small"
fastcgi = {{ address = "{app}", response_buffer_limit = 65536 }}

[[sites.locations]]
path = "/nokeep"
fastcgi = {{ address = "{app}", kept_connections = 0 }}

[[sites.locations]]
path = "/upload"
fastcgi = {{ address = "{app}", max_request_body = 20000000 }}

[[sites.locations]]
path = "/slowclient"
fastcgi = {{ address = "{app}", request_timeout = 2, response_buffer_limit = 65536 }}

[[sites.locations]]
path = "/deadline"
fastcgi = {{ address = "{app}", request_timeout = 1 }}

[[sites.locations]]
path = "/unlimited"
fastcgi = {{ address = "{app}", request_timeout = 0 }}

# An application mounted at a path (WSGI's SCRIPT_NAME), files or not.
[[sites.locations]]
path = "/wsgi"
fastcgi = {{ address = "{app}", script_name = "/wsgi/echo.fcgi" }}
[[sites.locations.handlers]]
name = "Mounted"
path = "*"
modules = ["FastCgi"]

[[sites.locations]]
path = "/down"
fastcgi = {{ address = "{unreachable}" }}

# A handler that does not ask for a file: FastCgi asks for one itself.
[[sites.locations]]
path = "/loose"
[[sites.locations.handlers]]
name = "Loose"
path = "*.fcgi"
modules = ["FastCgi"]

# An application with files this machine does not have.
[[sites.locations]]
path = "/elsewhere"
fastcgi = {{ script_must_exist = false }}
[[sites.locations.handlers]]
name = "Elsewhere"
path = "*.fcgi"
modules = ["FastCgi"]
"#,
            root = root.display()
        ),
    )
}

/// An address nothing listens on.
fn unreachable() -> SocketAddr {
    common::refusing_address()
}

fn start() -> (TempDir, FakeApp, RunningBinary) {
    let dir = TempDir::new("fastcgi");
    let app = FakeApp::start();
    let config = config(&dir, app.addr, unreachable());
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, app, server)
}

#[test]
fn the_application_gets_the_request_and_makes_the_response() {
    let (_dir, app, server) = start();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /echo.fcgi?a=1 HTTP/1.1\r\nHost: fcgi.test\r\nUser-Agent: tester\r\n\
          Proxy: http://evil.test/\r\nAuthorization: Basic c2VjcmV0\r\n\
          Proxy-Authorization: Basic c2VjcmV0\r\n\
          X-Original-URL: /admin/delete\r\n\
          Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-app"), Some("fake"));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    let text = resp.text();
    for line in [
        "GATEWAY_INTERFACE=CGI/1.1",
        "REQUEST_METHOD=POST",
        "REQUEST_URI=/echo.fcgi?a=1",
        "QUERY_STRING=a=1",
        "CONTENT_TYPE=text/plain",
        "CONTENT_LENGTH=11",
        "HTTP_USER_AGENT=tester",
        // httpoxy, the password and a client's X-Original-URL stay out;
        // `params` add and replace.
        "HTTP_PROXY=unset",
        "HTTP_X_ORIGINAL_URL=unset",
        "HTTP_AUTHORIZATION=unset",
        "HTTP_PROXY_AUTHORIZATION=unset",
        "APP_ENV=testing",
        "SERVER_SOFTWARE=replaced",
        "keep=true",
        "body=hello world",
    ] {
        assert!(
            text.contains(&format!("{line}\n")) || text.ends_with(line),
            "{line} in {text}"
        );
    }
    assert!(
        text.contains("SCRIPT_FILENAME=/") && text.contains("/www/echo.fcgi\n"),
        "{text}"
    );

    // A chunked body arrives whole, with its length and without the
    // client's framing (a WSGI server told it is chunked reads nothing).
    conn.send_raw(
        b"POST /echo.fcgi HTTP/1.1\r\nHost: fcgi.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let chunked = conn.read_response(false).text();
    for line in [
        "CONTENT_LENGTH=11\n",
        "HTTP_TRANSFER_ENCODING=unset\n",
        "body=hello world",
    ] {
        assert!(chunked.contains(line), "{line} in {chunked}");
    }

    // An application mounted at a path routes on PATH_INFO, the rest.
    let mounted = conn.get("/wsgi/echo.fcgi/hello/wor%20ld?x=1").text();
    for line in [
        "SCRIPT_NAME=/wsgi/echo.fcgi\n",
        "PATH_INFO=/hello/wor ld\n",
        "QUERY_STRING=x=1\n",
    ] {
        assert!(mounted.contains(line), "{line} in {mounted}");
    }
    assert!(!mounted.contains("PATH_TRANSLATED"), "{mounted}");

    // The connection was kept: a second request reuses it.
    let again = conn.get("/echo.fcgi");
    assert_eq!(again.status, 200);
    assert!(again.text().contains("REQUEST_METHOD=GET\n"));
    assert_eq!(app.seen.connections.load(Ordering::SeqCst), 1);

    // Without kept_connections, each request has a connection of its own
    // and does not ask to keep it.
    let first = conn.get("/nokeep/echo.fcgi");
    assert!(first.text().contains("keep=false"), "{}", first.text());
    conn.get("/nokeep/echo.fcgi");
    assert_eq!(app.seen.connections.load(Ordering::SeqCst), 3);
}

/// A script that is no file is not passed on, whatever the handler's
/// `resource_type`: an upload at `/up/pic.jpg` is not run for
/// `/up/pic.jpg/x.fcgi` (`cgi.fix_pathinfo`), unless the application is
/// said to have files of its own.
#[test]
fn a_script_that_is_no_file_gets_404_before_the_application() {
    let (dir, app, server) = start();
    dir.write("www/loose/echo.fcgi", "");
    dir.write("www/loose/pic.jpg", "GIF89a");
    let mut conn = Connection::open(server.addr);
    let last_script = || {
        let last = app.seen.last.lock().unwrap();
        last.as_ref()
            .and_then(|r| r.params.get("SCRIPT_NAME").cloned())
    };
    assert_eq!(conn.get("/loose/echo.fcgi").status, 200);
    assert_eq!(last_script().as_deref(), Some("/loose/echo.fcgi"));
    for path in ["/loose/missing/echo.fcgi", "/loose/pic.jpg/echo.fcgi"] {
        assert_eq!(conn.get(path).status, 404, "{path}");
    }
    assert_eq!(last_script().as_deref(), Some("/loose/echo.fcgi"));
    let elsewhere = conn.get("/elsewhere/echo.fcgi");
    assert_eq!(elsewhere.status, 200);
    assert!(elsewhere
        .text()
        .contains("SCRIPT_NAME=/elsewhere/echo.fcgi\n"));
}

#[test]
fn a_kept_connection_the_application_closed_is_replaced() {
    let (_dir, app, server) = start();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/closes.fcgi").text(), "bye");
    // The kept connection is closed now: the next request finds that out
    // and goes again on a new one.
    std::thread::sleep(Duration::from_millis(100));
    let resp = conn.get("/echo.fcgi");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(app.seen.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn a_stray_answer_on_a_kept_connection_reaches_nobody() {
    let (_dir, app, server) = start();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/stray.fcgi").text(), "first");
    // The application wrote an answer nobody asked for on the kept
    // connection: that connection is not used again.
    std::thread::sleep(Duration::from_millis(300));
    let resp = conn.get("/echo.fcgi");
    assert_eq!(resp.status, 200);
    assert!(resp.header("x-forged").is_none());
    assert!(
        resp.text().contains("REQUEST_METHOD=GET"),
        "{}",
        resp.text()
    );
    assert_eq!(app.seen.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn only_idempotent_requests_are_sent_again() {
    let (_dir, app, server) = start();
    let mut conn = Connection::open(server.addr);
    // A kept connection, then a request the application takes and dies
    // on without answering: a GET goes again on a new connection (and
    // fails there too), a POST is not run twice.
    assert_eq!(conn.get("/echo.fcgi").status, 200);
    assert_eq!(conn.get("/dies.fcgi").status, 502);
    assert_eq!(app.seen.dies.load(Ordering::SeqCst), 2);
    assert_eq!(conn.get("/echo.fcgi").status, 200);
    conn.send_raw(b"POST /dies.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(conn.read_response(false).status, 502);
    assert_eq!(app.seen.dies.load(Ordering::SeqCst), 3);
}

#[test]
fn head_requests_keep_the_applications_length_or_none() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"HEAD /head.fcgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1200"));
    // No length from the application: none made up (not 0).
    conn.send_raw(b"HEAD /nolength.fcgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(resp.status, 200);
    assert_ne!(resp.header("content-length"), Some("0"), "{resp:?}");
    // An application that sends a body for HEAD: the length GET would get.
    conn.send_raw(b"HEAD /bodyhead.fcgi HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(resp.header("content-length"), Some("5"), "{resp:?}");
    // The connection goes on.
    assert_eq!(conn.get("/echo.fcgi").status, 200);
}

#[test]
fn the_host_is_the_one_the_request_was_routed_by() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET http://good.test/echo.fcgi HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    let text = conn.read_response(false).text();
    assert!(text.contains("HTTP_HOST=good.test\n"), "{text}");
    // Plain HTTP: no HTTPS variable at all.
    assert!(text.contains("HTTPS=unset\n"), "{text}");
}

#[test]
fn an_application_that_takes_no_body_times_out() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    let body = vec![b'x'; 16_000_000];
    conn.send_raw(
        format!(
            "POST /upload/noread.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(resp.text().contains("activity_timeout"), "{}", resp.text());
}

#[test]
fn an_application_that_answers_before_reading_the_body_is_waited_for() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    let body = vec![b'x'; 16_000_000];
    conn.send_raw(
        format!(
            "POST /upload/talker.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    // Two seconds of answering against an activity_timeout of one.
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().ends_with("line 7\n"), "{}", resp.text());
}

#[test]
fn an_application_that_reads_the_body_slowly_is_waited_for() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    let body = vec![b'x'; 8_000_000];
    conn.send_raw(
        format!(
            "POST /upload/slowreader.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    // It read for 2.5 s, against an activity_timeout of one.
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "took true");
}

#[test]
fn failures_get_the_gateway_statuses() {
    let (_dir, _app, server) = start();
    let mut conn = Connection::open(server.addr);
    // The application's own error passes through, with its headers.
    let own = conn.get("/status.fcgi");
    assert_eq!((own.status, own.reason.as_str()), (404, "Not Here"));
    assert_eq!(own.text(), "the application's own 404");
    assert_eq!(own.header("set-cookie"), Some("a=1"));

    for (path, status, says) in [
        ("/overloaded.fcgi", 503, "FCGI_OVERLOADED"),
        ("/garbage.fcgi", 502, "not FastCGI"),
        ("/nohead.fcgi", 502, "not a header line"),
        ("/silent.fcgi", 504, "fastcgi.activity_timeout (1 s)"),
        ("/down/echo.fcgi", 502, "cannot connect to"),
    ] {
        let resp = conn.get(path);
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
        assert!(resp.text().contains(says), "{path}: {}", resp.text());
        assert!(resp.header("set-cookie").is_none());
    }

    // A body declared longer than max_request_body: 413 at once, without
    // waiting for the body, and the connection closes.
    conn.send_raw(b"POST /echo.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 413);
    assert!(resp.text().contains("fastcgi.max_request_body"));
}

#[test]
fn output_streams_past_the_buffer_limit() {
    let (_dir, app, server) = start();
    // With response_buffer_limit = 0, the first part reaches the client
    // while the application still holds back the second.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /stream/stream.fcgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    {
        let (lock, cv) = &app.seen.go;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    while !got.ends_with(b"0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("second\n"));

    // At limit 0, an answer that came whole still goes out with its length.
    let mut conn = Connection::open(server.addr);
    let whole = conn.get("/stream/echo.fcgi");
    assert!(whole.header("content-length").is_some(), "{whole:?}");

    // With the limit at 0 the head goes out before any body comes.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /stream/headfirst.fcgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    {
        let (lock, cv) = &app.seen.go_body;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    while !got.ends_with(b"0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("late body"));

    // Large answers arrive whole: below the default limit with a length,
    // past a small limit in chunks.
    let mut conn = Connection::open(server.addr);
    for (path, size, chunked) in [
        ("/big.fcgi", 3_000_000usize, false),
        ("/small/big.fcgi", 1_000_000, true),
    ] {
        let resp = conn.get(&format!("{path}?{size}"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("transfer-encoding").is_some(),
            chunked,
            "{path}"
        );
        assert_eq!(resp.body.len(), size);
        assert!(resp
            .body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8));
    }
}

#[test]
fn a_response_cut_short_is_not_passed_off_as_whole() {
    let (_dir, app, server) = start();
    // The application dies after part of a streamed answer: the client's
    // chunked body never gets its last chunk.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /stream/cut.fcgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("partial"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");

    // A client that leaves: the application's connection is dropped.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"GET /stream/hang.fcgi HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("waiting") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let start = std::time::Instant::now();
    while !app.seen.hang_closed.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the application's connection stayed open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn http2_requests_go_through_too() {
    let (_dir, _app, server) = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let mut client = common::http2_client(server.addr).await;
        let request = hyper::Request::post(format!("http://{}/echo.fcgi?h2", server.addr))
            .header("content-type", "text/plain")
            .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                b"over h2",
            )))
            .unwrap();
        let resp = client.send_request(request).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("QUERY_STRING=h2\n"), "{text}");
        // HTTP/2 has no Host header: the variable comes from :authority.
        assert!(
            text.contains(&format!("HTTP_HOST={}\n", server.addr)),
            "{text}"
        );
        assert!(text.contains("body=over h2"), "{text}");
    });
}

#[test]
fn riis_status_and_configuration_errors() {
    let (dir, _app, server) = start();
    let config = dir.path().join("riis.toml");
    common::get(server.addr, "/echo.fcgi");
    let status = common::riis_status(&config);
    assert!(status.contains("fastcgi_requests_running: 0"), "{status}");
    assert!(status.contains("fastcgi_connections_idle: 1"), "{status}");

    let site = format!(
        "[[sites]]\nname = \"S\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
        dir.path().join("www").display()
    );
    let bad = dir.write(
        "bad.toml",
        format!(
            "[[modules]]\nname = \"FastCgi\"\n\n[fastcgi]\naddress = \"/run/php.sock\"\n\n{site}"
        ),
    );
    let out = common::riis_command("check-config", &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("address") && err.contains("unix:/path"),
        "{err}"
    );

    // The PHP example's configuration is valid.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/php/riis.toml");
    let out = common::riis_command("check-config", &example);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A location where the handler is mapped but no address is set.
    let unset = dir.write(
        "unset.toml",
        format!(
            "[[modules]]\nname = \"CustomError\"\n[[modules]]\nname = \"FastCgi\"\n\n\
             [[handlers]]\nname = \"F\"\npath = \"*.fcgi\"\nmodules = [\"FastCgi\"]\n\n{site}"
        ),
    );
    let server = RunningBinary::start(&["--config", unset.to_str().unwrap()]);
    let resp = common::get(server.addr, "/echo.fcgi");
    assert_eq!(resp.status, 500);
    assert!(
        resp.text()
            .contains("neither fastcgi.address nor fastcgi.application is set"),
        "{}",
        resp.text()
    );
}

/// A body longer than what is kept in memory (64 KiB) goes through a
/// temporary file and reaches the application byte for byte.
#[test]
fn a_large_body_reaches_the_application_whole() {
    let (_dir, _app, server) = start();
    let body: Vec<u8> = (0..1_000_003u32).map(|i| b'!' + (i % 89) as u8).collect();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        format!(
            "POST /upload/echo.fcgi HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(
        text.contains("CONTENT_LENGTH=1000003\n"),
        "{}",
        &text[..400]
    );
    let sent = text.split("\nbody=").nth(1).unwrap();
    assert!(sent.as_bytes() == body, "the body arrived changed");
}

/// `request_timeout` is the application's time, not the client's: a
/// download that a slow client takes longer than it over is not cut short
/// (nginx's FastCGI timeouts count only the application's time too).
#[test]
fn a_slow_client_download_outlasts_the_request_timeout() {
    let (_dir, app, server) = start();
    // A small receive buffer, so that the answer waits in riis (which holds
    // the application back) rather than in this side's kernel.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Far more than the sockets' and riis's buffers hold together.
    let size = 64 * 1024 * 1024;
    stream
        .write_all(
            format!(
                "GET /slowclient/download.fcgi?{size} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    // The client takes nothing for longer than request_timeout (2 s).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !app.seen.download_done.load(Ordering::SeqCst),
        "the whole answer fit in the buffers: the test needs a larger one"
    );
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(read.is_ok(), "the download was cut short: {read:?}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&got[head_end..]).expect("the chunked body ends with its last chunk")
    } else {
        got[head_end..].to_vec()
    };
    assert_eq!(body.len(), size);
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "the body arrived changed"
    );
}

/// The application's own slowness still counts: one that talks for two
/// seconds (never silent) outlasts a `request_timeout` of one.
#[test]
fn a_slow_application_outlasts_the_request_timeout() {
    let (_dir, _app, server) = start();
    let resp = Connection::open(server.addr).get("/deadline/talker.fcgi");
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(resp.text().contains("request_timeout"), "{}", resp.text());
    // `request_timeout = 0`: no limit (for streams that last), while
    // `activity_timeout` (1 s here) still ends a silent application.
    let resp = Connection::open(server.addr).get("/unlimited/talker.fcgi");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = Connection::open(server.addr).get("/unlimited/silent.fcgi");
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(resp.text().contains("activity_timeout"), "{}", resp.text());
}

/// A chunked body's content: `None` if it does not end with its last chunk.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `realpath_root`: a site whose root is a `current` link to a release
/// names the release's own paths to the application, so a deploy that
/// switches the link reaches it at the next request.
#[test]
fn realpath_root_names_the_release_a_link_points_to() {
    let dir = TempDir::new("fastcgi-realpath");
    let app = FakeApp::start();
    for release in ["rel1", "rel2"] {
        dir.write(&format!("{release}/echo.fcgi"), "");
        dir.write(&format!("{release}/plain/echo.fcgi"), "");
    }
    std::os::unix::fs::symlink(dir.path().join("rel1"), dir.path().join("current")).unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "FastCgi"

[[handlers]]
name = "FastCGI"
path = "*.fcgi"
resource_type = "File"
modules = ["FastCgi"]

[fastcgi]
address = "{app}"
realpath_root = true

[[sites]]
name = "Linked"
root = "current"
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/plain"
fastcgi = {{ realpath_root = false }}
"#,
            app = app.addr
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let real = |release: &str| std::fs::canonicalize(dir.path().join(release)).unwrap();
    let text = common::get(server.addr, "/echo.fcgi").text();
    let rel1 = real("rel1");
    assert!(
        text.contains(&format!("SCRIPT_FILENAME={}/echo.fcgi\n", rel1.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("DOCUMENT_ROOT={}\n", rel1.display())),
        "{text}"
    );
    // The link switched: the next request names the new release.
    std::fs::remove_file(dir.path().join("current")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("rel2"), dir.path().join("current")).unwrap();
    let text = common::get(server.addr, "/echo.fcgi").text();
    assert!(
        text.contains(&format!(
            "SCRIPT_FILENAME={}/echo.fcgi\n",
            real("rel2").display()
        )),
        "{text}"
    );
    // Without it, the link's own path.
    let text = common::get(server.addr, "/plain/echo.fcgi").text();
    assert!(text.contains("/current/plain/echo.fcgi\n"), "{text}");
}
