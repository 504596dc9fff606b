//! Malformed and smuggling-shaped HTTP/1.1 requests over real sockets: each
//! gets its status and a closed connection (RFC 9112 §2.2, §3, §5, §6), and
//! the limits of `[limits]` answer 414 and 431.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{write_config, RunningBinary, TempDir};

const CONFIG: &str = r#"
[limits]
max_url_length = 2048
max_header_count = 50
max_header_bytes = 8192
"#;

/// Sends `raw` on a new connection; returns the status of the first
/// response and whether the server closed the connection after it.
fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    let text = String::from_utf8_lossy(&got);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

fn headers(n: usize, value_len: usize) -> String {
    (0..n)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(value_len)))
        .collect()
}

#[test]
fn malformed_requests_get_their_status_and_a_closed_connection() {
    let dir = TempDir::new("strict");
    dir.write("www/index.html", "home");
    dir.write("www/a.txt", "alpha");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    let long_url = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(3000));
    let many = format!("GET /a.txt HTTP/1.1\r\nHost: a\r\n{}\r\n", headers(60, 1));
    let big = format!("GET /a.txt HTTP/1.1\r\nHost: a\r\n{}\r\n", headers(20, 600));
    let huge = format!(
        "GET /a.txt HTTP/1.1\r\nHost: a\r\n{}\r\n",
        headers(40, 2000)
    );
    let very_long_url = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Request line.
        ("no version", b"GET /a.txt\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("HTTP/1.2", b"GET /a.txt HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0 on h1", b"GET /a.txt HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("lower-case version", b"GET /a.txt http/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("two spaces", b"GET  /a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("tab separator", b"GET\t/a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("bad method token", b"G(T /a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("NUL in target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("DEL in target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("empty target", b"GET  HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("bad percent-escape", b"GET /a%zz.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("cut percent-escape", b"GET /a.txt%2 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
        // Header fields.
        ("obs-fold", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n".to_vec(), 400),
        ("space in name", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n".to_vec(), 400),
        ("no colon", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n".to_vec(), 400),
        ("empty name", b"GET /a.txt HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n".to_vec(), 400),
        ("control byte in value", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n".to_vec(), 400),
        ("NUL in value", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n".to_vec(), 400),
        ("bare CR in value", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n".to_vec(), 400),
        ("non-token in name", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX{A}: b\r\n\r\n".to_vec(), 400),
        // Host.
        ("missing Host", b"GET /a.txt HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("two equal Hosts", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("Host with userinfo", b"GET /a.txt HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(), 400),
        ("Host with space", b"GET /a.txt HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), 400),
        ("Host with path", b"GET /a.txt HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(), 400),
        ("Host with bad port", b"GET /a.txt HTTP/1.1\r\nHost: a:x\r\n\r\n".to_vec(), 400),
        ("userinfo in absolute form", b"GET http://u@a/a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("another scheme in absolute form", b"GET ftp://a/a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("bad port in absolute form", b"GET http://a:x/a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("long port in absolute form", b"GET http://a:99999999999/a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("HTTP/1.0 with two Hosts", b"GET /a.txt HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        // Framing (smuggling shapes).
        ("two different Content-Lengths", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        ("Content-Length list", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!".to_vec(), 400),
        ("negative Content-Length", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("signed Content-Length", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(), 400),
        ("hex Content-Length", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello".to_vec(), 400),
        ("huge Content-Length", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), 400),
        ("Content-Length then Transfer-Encoding", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("Transfer-Encoding then Content-Length", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("both, other case", b"POST /a.txt HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 0\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("both, Content-Length without space", b"GET /a.txt HTTP/1.1\r\nContent-Length:0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("Transfer-Encoding not chunked", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("chunked not last", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        ("Transfer-Encoding on HTTP/1.0", b"POST /a.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("unknown coding", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n".to_vec(), 400),
        // hyper takes these (the last coding is chunked); modules would read
        // a body still gzip-coded or chunk-framed.
        ("empty Host", b"GET /a.txt HTTP/1.1\r\nHost: \r\n\r\n".to_vec(), 400),
        ("a coding before chunked", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), 501),
        ("chunked twice", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("chunked on two lines", b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        // Limits.
        ("target over max_url_length", long_url.into_bytes(), 414),
        ("more than max_header_count", many.into_bytes(), 431),
        ("over max_header_bytes", big.into_bytes(), 431),
        ("head over the read buffer", huge.into_bytes(), 431),
        ("request line over the read buffer", very_long_url.into_bytes(), 414),
    ];
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for (name, raw, want) in &cases {
        let (status, closed) = exchange(server.addr, raw);
        if status != *want || !closed {
            failures.push(format!(
                "{name}: got {status} (closed: {closed}), want {want} and close"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A well-formed request on the same server is served and kept alive.
    let (status, closed) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status, closed), (200, false));
    // An empty port is the default one (RFC 3986 `port = *DIGIT`).
    let (status, closed) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a:\r\n\r\n");
    assert_eq!((status, closed), (200, false));
}

#[test]
fn requests_per_connection_are_capped_and_connections_limited() {
    let dir = TempDir::new("limits");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[limits]\nmax_requests_per_connection = 3\nmax_connections_per_client = 2\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut c = common::Connection::open(server.addr);
    assert_eq!(c.get("/a.txt").header("connection"), None);
    assert_eq!(c.get("/a.txt").header("connection"), None);
    let third = c.get("/a.txt");
    assert_eq!(third.status, 200);
    assert_eq!(third.header("connection"), Some("close"));
    assert!(c.is_closed());

    // Two connections are allowed from 127.0.0.1; a third gets 503.
    let _a = common::Connection::open(server.addr);
    let _b = common::Connection::open(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    let (status, closed) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status, closed), (503, true));
    drop(_a);
    // Freed once the server has seen the close (on a loaded machine that
    // may take more than a moment).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_wide_connection_limit_answers_503_and_frees_up() {
    let dir = TempDir::new("max-conns");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[limits]\nmax_connections = 3\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut open: Vec<_> = (0..3)
        .map(|_| common::Connection::open(server.addr))
        .collect();
    for c in &mut open {
        assert_eq!(c.get("/a.txt").status, 200);
    }
    let (status, closed) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status, closed), (503, true));
    // The connections already open are still served.
    assert_eq!(open[0].get("/a.txt").status, 200);
    // One closes: a new connection is admitted again.
    open.pop();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = exchange(server.addr, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status, 200);
}

/// A flood of connections over `max_connections` is answered 503 only up
/// to a bound of refusals in progress; the rest are closed at once, so the
/// refusals themselves cannot hold the descriptors the limit protects.
#[test]
fn a_flood_over_the_connection_limit_is_refused_within_bounds() {
    let dir = TempDir::new("flood");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[limits]\nmax_connections = 1\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut held = common::Connection::open(server.addr);
    assert_eq!(held.get("/a.txt").status, 200);
    // Clients that neither read nor close keep each refusal lingering.
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let (mut answered, mut unanswered) = (0, 0);
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                assert!(buf.starts_with(b"HTTP/1.1 503"), "{:?}", &buf[..n]);
                answered += 1;
            }
            Ok(_) => unanswered += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => unanswered += 1,
            Err(e) => panic!("a refused connection was left open: {e}"),
        }
    }
    assert!(answered > 0, "no refusal was answered");
    assert!(
        unanswered > 0,
        "all {answered} refusals were answered at once"
    );
    // The connection within the limit is still served.
    assert_eq!(held.get("/a.txt").status, 200);
}

/// A request line longer than `max_url_length` allows is answered with 414
/// as soon as it is seen, whether or not it fits the read buffer, and on a
/// kept-alive connection after the requests before it were answered.
#[test]
fn an_endless_request_line_gets_414_not_431() {
    let dir = TempDir::new("long-line");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[limits]\nmax_url_length = 100\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // In the first read (while the protocol is sniffed), and beyond the
    // read buffer (max_header_bytes + max_url_length + 1 KiB).
    for len in [3_000, 200_000] {
        let line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(len));
        assert_eq!(exchange(server.addr, line.as_bytes()), (414, true), "{len}");
    }
    // A target over the limit whose line still fits: the parsed head's check.
    let short = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(300));
    assert_eq!(exchange(server.addr, short.as_bytes()), (414, true));

    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    let first = conn.read_response(false);
    assert_eq!((first.status, first.text().as_str()), (200, "alpha"));
    conn.send_raw(format!("GET /{} HTTP/1.1\r\n", "b".repeat(50_000)).as_bytes());
    let early = conn.read_response(false);
    assert_eq!(early.status, 414);
    // The connection layer's own answer dates itself, as hyper's do
    // (RFC 9110 §6.6.1).
    let date = early.header("date").expect("a Date on the early 414");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(conn.is_closed());

    // Pipelined behind a request, in the same write, shorter than hyper's
    // buffer: the request is answered, then the line.
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(
        format!(
            "GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /{}",
            "c".repeat(5_000)
        )
        .as_bytes(),
    );
    let first = conn.read_response(false);
    assert_eq!((first.status, first.text().as_str()), (200, "alpha"));
    assert_eq!(conn.read_response(false).status, 414);
    assert!(conn.is_closed());

    // Behind a large response the client is slow to read: the response
    // goes out whole before the 414.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    dir.write("www/big.bin", &big);
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(
        format!(
            "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\nGET /{}",
            "d".repeat(50_000)
        )
        .as_bytes(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let first = conn.read_response(false);
    assert_eq!(first.status, 200);
    assert!(first.body == big, "the large response was cut short");
    assert_eq!(conn.read_response(false).status, 414);
    assert!(conn.is_closed());
}

/// A body too long to discard (more than 256 KiB announced, unread): the
/// response says the connection closes (RFC 9112 §9.6), so a proxy does not
/// send its next request down it; a short unread body is discarded and the
/// connection kept.
#[test]
fn an_undiscardable_body_gets_connection_close() {
    let dir = TempDir::new("strict-discard");
    dir.write("www/a.txt", "alpha");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("connection"), None);
    assert_eq!(conn.get("/a.txt").status, 200);

    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.is_closed());
}

/// An answer the server makes before the pipeline (a refused request)
/// names the server as the pipeline's answers do.
#[test]
fn refusals_carry_the_server_header() {
    let dir = TempDir::new("strict-server-header");
    dir.write("www/a.txt", "alpha");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let head = |raw: &[u8]| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(raw).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    };
    let refused = head(b"GET /a.txt HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert!(refused.starts_with("http/1.1 400"), "{refused}");
    assert!(refused.contains("\r\nserver: riis/"), "{refused}");
    let served = head(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(served.matches("\r\nserver: ").count(), 1, "{served}");
}

/// A request hyper cannot parse after others on the same connection gets
/// one 400, pipelined behind them or sent after their answers: so does an
/// HTTP/2 preface that does not start the connection, with why.
#[test]
fn a_malformed_request_after_others_gets_its_400() {
    let dir = TempDir::new("strict-after");
    dir.write("www/index.html", "alpha");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // The default document: answered through a child request.
    let good: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let bad: [&[u8]; 3] = [
        b"GET /a.txt HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for bad in bad {
        for pause in [false, true] {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(good).unwrap();
            s.write_all(good).unwrap();
            if pause {
                // Both answers are out before the next head arrives.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while got.windows(5).filter(|w| w == b"alpha").count() < 2 {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(bad).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                got.extend_from_slice(&rest);
                check(&got, bad);
            } else {
                s.write_all(bad).unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                check(&got, bad);
            }
        }
    }
    fn check(got: &[u8], bad: &[u8]) {
        let text = String::from_utf8_lossy(got);
        assert_eq!(
            text.matches("HTTP/1.1 200 OK\r\n").count(),
            2,
            "{bad:?}: {text}"
        );
        assert!(
            text.contains("alphaHTTP/1.1 400 Bad Request\r\n"),
            "{bad:?}: {text}"
        );
        // One answer: hyper's own, or riis's where hyper gives none.
        assert_eq!(text.matches("HTTP/1.1 4").count(), 1, "{bad:?}: {text}");
        if bad.starts_with(b"PRI") {
            assert!(
                text.contains(
                    "the HTTP/2 connection preface comes only at the start of a connection"
                ),
                "{text}"
            );
        }
    }
}

/// A head too large for hyper behind a request on the same connection
/// gets one 431 (hyper's), not a second one from riis.
#[test]
fn a_pipelined_head_too_large_gets_one_answer() {
    let dir = TempDir::new("strict-one-431");
    dir.write("www/a.txt", "alpha");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut raw = b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    raw.extend_from_slice(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-Long: ");
    raw.extend(std::iter::repeat_n(b'a', 70_000));
    raw.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(&raw);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 1, "{text}");
    assert_eq!(text.matches("HTTP/1.1 431 ").count(), 1, "{text}");
}

/// A request refused before the pipeline is logged with what it asked for
/// (method, target and host, as HTTP.sys's error log records them), so
/// that a probe can be told from a broken client; a control character in
/// it cannot start a line of its own.
#[test]
fn a_refusal_is_logged_with_what_the_request_asked_for() {
    let dir = TempDir::new("strict-refusal-log");
    dir.write("www/index.html", "home");
    let config = write_config(&dir, &dir.path().join("www"), CONFIG);
    let log = dir.path().join("riis.log");
    let server = RunningBinary::start_logging_to(&config, &log);
    let (status, _) = exchange(
        server.addr,
        b"GET /a/../../etc/passwd?x=%0d%0aforged HTTP/1.1\r\nHost: probe.test\r\n\r\n",
    );
    assert_eq!(status, 400);
    // An absolute form is logged whole: its scheme may be what was refused.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, _) = exchange(
        server.addr,
        b"GET ftp://evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(status, 400);
    common::wait_for("the refusals' log lines", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.matches("refused before the pipeline").count() >= 2)
    });
    server.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("refused before the pipeline"))
        .unwrap();
    assert!(line.contains("method=\"GET\""), "{line}");
    assert!(
        line.contains("target=\"/a/../../etc/passwd?x=%0d%0aforged\""),
        "{line}"
    );
    assert!(line.contains("host=\"probe.test\""), "{line}");
    assert!(text.contains("target=\"ftp://evil.example/x\""), "{text}");
}
