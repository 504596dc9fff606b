//! HTTP/2 defences and settings over raw frames (cleartext, prior
//! knowledge): a header block over `limits.max_header_bytes` is refused, a
//! CONTINUATION flood is cut off long before it costs memory, a rapid-reset
//! client gets GOAWAY, the configured flow-control windows are advertised,
//! and the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{write_config, RunningBinary, TempDir};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(first: u8, n: u8, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// `GET /a.txt` (indexed :method, :scheme, literal :path) plus one literal
/// header `x-big` whose value has `declared` bytes, of which `present` are
/// in the block.
fn request_block(declared: usize, present: usize) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing, indexed name 4
    hpack_int(0, 7, 6, &mut b);
    b.extend_from_slice(b"/a.txt");
    b.push(0x01); // :authority, literal without indexing, indexed name 1
    hpack_int(0, 7, 1, &mut b);
    b.push(b't');
    if declared > 0 {
        b.push(0x00); // literal without indexing, new name
        hpack_int(0, 7, 5, &mut b);
        b.extend_from_slice(b"x-big");
        hpack_int(0, 7, declared, &mut b);
        b.extend(std::iter::repeat_n(b'v', present));
    }
    b
}

/// A header block of `fields`, each a literal without indexing with a new
/// name (pseudo-header fields included).
fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        b.push(0x00);
        hpack_int(0, 7, name.len(), &mut b);
        b.extend_from_slice(name.as_bytes());
        hpack_int(0, 7, value.len(), &mut b);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

struct H2 {
    sock: TcpStream,
}

impl H2 {
    fn open(addr: SocketAddr) -> Self {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(PREFACE).unwrap();
        sock.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        Self { sock }
    }

    /// The next frame: (type, flags, stream, payload); `None` at the end.
    fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.sock.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7FFF_FFFF;
        let mut payload = vec![0u8; len];
        self.sock.read_exact(&mut payload).ok()?;
        if head[3] == SETTINGS && head[4] & ACK == 0 {
            let _ = self.sock.write_all(&frame(SETTINGS, ACK, 0, &[]));
        }
        Some((head[3], head[4], stream, payload))
    }

    /// Reads until a response HEADERS on `stream`, a RST_STREAM for it, a
    /// GOAWAY or the end; returns what ended it.
    fn outcome(&mut self, stream: u32) -> &'static str {
        while let Some((kind, _, s, payload)) = self.read_frame() {
            match kind {
                HEADERS if s == stream => {
                    // :status 200 is the static table's index 8.
                    return if payload.first() == Some(&0x88) {
                        "200"
                    } else {
                        "refused status"
                    };
                }
                RST_STREAM if s == stream => return "reset",
                GOAWAY => return "goaway",
                _ => {}
            }
        }
        "closed"
    }
}

fn server() -> (TempDir, RunningBinary) {
    server_with("max_header_bytes = 8192")
}

fn server_with(limits: &str) -> (TempDir, RunningBinary) {
    let dir = TempDir::new("h2");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &format!("[limits]\n{limits}\n"),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// Asks for `/a.txt` on a new connection and expects a 200.
fn assert_served(addr: SocketAddr) {
    assert_served_on(&mut H2::open(addr));
}

/// Asks for `/a.txt` on stream 1 of `h2` and expects a 200.
fn assert_served_on(h2: &mut H2) {
    h2.sock
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &request_block(0, 0),
        ))
        .unwrap();
    assert_eq!(h2.outcome(1), "200");
}

#[test]
fn a_normal_request_is_served_over_raw_frames() {
    let (_dir, server) = server();
    assert_served(server.addr);
}

#[test]
fn a_header_block_over_the_limit_is_refused() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    // 40 KiB of header value in 16 KiB frames: HEADERS, CONTINUATION, ...
    let block = request_block(40 * 1024, 40 * 1024);
    let mut chunks = block.chunks(16 * 1024).peekable();
    let first = chunks.next().unwrap();
    let flags = if chunks.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM | flags, 1, first))
        .unwrap();
    while let Some(c) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        if h2
            .sock
            .write_all(&frame(CONTINUATION, flags, 1, c))
            .is_err()
        {
            break;
        }
    }
    let outcome = h2.outcome(1);
    eprintln!("oversized header block: {outcome}");
    assert_ne!(outcome, "200", "an oversized header block was served");
    // The server goes on serving.
    assert_served(server.addr);
}

#[test]
fn a_continuation_flood_is_cut_off() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    h2.sock
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A header value announced as 1 GiB, sent 16 KiB per CONTINUATION and
    // never finished.
    let start = request_block(1 << 30, 0);
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM, 1, &start))
        .unwrap();
    let piece = vec![b'v'; 16 * 1024];
    let mut sent = 0usize;
    let mut cut_off = false;
    while sent < 16 * 1024 * 1024 {
        if h2
            .sock
            .write_all(&frame(CONTINUATION, 0, 1, &piece))
            .is_err()
        {
            cut_off = true;
            break;
        }
        sent += piece.len();
    }
    eprintln!("CONTINUATION flood: cut off after {sent} bytes: {cut_off}");
    if !cut_off {
        // Every write was accepted by the kernel's buffers: the server must
        // have ended the connection by now.
        let outcome = h2.outcome(1);
        assert!(
            outcome == "goaway" || outcome == "closed" || outcome == "reset",
            "after {sent} bytes of CONTINUATION the connection is still open ({outcome})"
        );
    }
    // The server goes on serving.
    assert_served(server.addr);
}

#[test]
fn a_rapid_reset_client_gets_goaway() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    // CVE-2023-44487: open a stream and cancel it at once, a thousand
    // times, in one write, so no stream is answered before its reset.
    let cancel = 0x8u32.to_be_bytes();
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &request_block(0, 0),
        ));
        flood.extend(frame(RST_STREAM, 0, stream, &cancel));
    }
    // The server may close while the flood is still being written.
    let _ = h2.sock.write_all(&flood);
    let mut goaway = None;
    while let Some((kind, _, _, payload)) = h2.read_frame() {
        if kind == GOAWAY {
            goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            break;
        }
    }
    // ENHANCE_YOUR_CALM.
    assert_eq!(
        goaway,
        Some(0xb),
        "no GOAWAY(ENHANCE_YOUR_CALM) for a rapid reset"
    );
    assert_served(server.addr);
}

#[test]
fn the_configured_flow_control_windows_are_advertised() {
    let (_dir, server) = server_with(
        "http2_initial_stream_window_size = 100000\nhttp2_initial_connection_window_size = 300000",
    );
    let mut h2 = H2::open(server.addr);
    let mut stream_window = None;
    let mut connection_increment = None;
    while stream_window.is_none() || connection_increment.is_none() {
        let Some((kind, flags, stream, payload)) = h2.read_frame() else {
            panic!("the connection ended before the server's settings and window update");
        };
        match kind {
            SETTINGS if flags & ACK == 0 => {
                for setting in payload.chunks(6) {
                    // SETTINGS_INITIAL_WINDOW_SIZE
                    if setting[..2] == [0, 4] {
                        stream_window = Some(u32::from_be_bytes(setting[2..6].try_into().unwrap()));
                    }
                }
                assert!(
                    stream_window.is_some(),
                    "the settings carry no initial window"
                );
            }
            WINDOW_UPDATE if stream == 0 => {
                connection_increment = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            _ => {}
        }
    }
    assert_eq!(stream_window, Some(100_000));
    // The connection window starts at the protocol's 65,535 and is raised
    // by WINDOW_UPDATE to the configured size.
    assert_eq!(connection_increment, Some(300_000 - 65_535));
    assert_served(server.addr);
}

/// `limits.max_requests_per_connection` holds on HTTP/2 too (nginx's
/// `keepalive_requests`): the last request is answered, and the connection
/// gets GOAWAY (there is no `Connection: close` in HTTP/2).
#[test]
fn the_last_request_of_an_http2_connection_gets_goaway() {
    let (_dir, server) = server_with("max_header_bytes = 8192\nmax_requests_per_connection = 2");
    let mut h2 = H2::open(server.addr);
    assert_served_on(&mut h2);
    h2.sock
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            3,
            &request_block(0, 0),
        ))
        .unwrap();
    let (mut answered, mut goaway) = (false, false);
    while let Some((kind, _, stream, payload)) = h2.read_frame() {
        answered |= kind == HEADERS && stream == 3 && payload.first() == Some(&0x88);
        goaway |= kind == GOAWAY;
        if answered && goaway {
            break;
        }
    }
    assert!(answered, "the last request was not answered");
    assert!(goaway, "no GOAWAY after the last request");
}

/// Streams opened after the last request (the connection's first GOAWAY,
/// which names no last stream, sent) are served, as many as the client may
/// have open at once: it may have opened them before it had the GOAWAY,
/// and a gRPC client fails a call refused so. This client never answers
/// the PING that would make hyper's GOAWAY final: past that many, its
/// streams are refused unprocessed with REFUSED_STREAM, and the connection
/// then closes instead of serving it for ever.
#[test]
fn streams_after_the_last_request_are_served_up_to_the_concurrency_then_refused() {
    const REFUSED_STREAM: u32 = 0x7;
    let (_dir, server) = server_with(
        "max_header_bytes = 8192\nmax_requests_per_connection = 2\nhttp2_max_concurrent_streams = 2",
    );
    let mut h2 = H2::open(server.addr);
    assert_served_on(&mut h2);
    let request = |h2: &mut H2, stream: u32| {
        h2.sock
            .write_all(&frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                stream,
                &request_block(0, 0),
            ))
            .unwrap();
    };
    // Stream 3 is the last request; 5 and 7 come after its GOAWAY.
    for stream in [3, 5, 7] {
        request(&mut h2, stream);
        loop {
            let Some((kind, _, s, payload)) = h2.read_frame() else {
                panic!("closed before stream {stream} was answered");
            };
            assert!(kind != RST_STREAM || s != stream, "stream {stream} reset");
            if kind == HEADERS && s == stream {
                assert_eq!(payload.first(), Some(&0x88), "stream {stream} is served");
                break;
            }
        }
    }
    request(&mut h2, 9);
    request(&mut h2, 11);
    let mut refused = Vec::new();
    while refused.len() < 2 {
        let Some((kind, _, stream, payload)) = h2.read_frame() else {
            panic!("closed before refusing streams 9 and 11: {refused:?}");
        };
        assert!(
            !(kind == HEADERS && stream >= 9),
            "stream {stream} was served past the concurrency"
        );
        if kind == RST_STREAM {
            let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
            assert_eq!(code, REFUSED_STREAM, "stream {stream}");
            refused.push(stream);
        }
    }
    assert_eq!(refused, [9, 11]);
    // Nothing left to finish: the connection closes (a read timeout here
    // would be a hang, not slowness).
    h2.sock
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while h2.read_frame().is_some() {}
}

/// A burst of streams across the request limit (a page of many resources)
/// gets the streams past it refused, and those before it answered whole:
/// refusals never close the connection under a response still going out.
#[test]
fn a_burst_past_the_limit_does_not_cut_the_streams_before_it() {
    const WINDOW_UPDATE_ALL: u32 = 0x7FFF_0000;
    const BIG: usize = 6_000_000;
    let (dir, server) = server_with("max_header_bytes = 8192\nmax_requests_per_connection = 2");
    dir.write("www/big.bin", "b".repeat(BIG));
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The largest windows, so the big answer flows without updates.
    let mut preface = PREFACE.to_vec();
    preface.extend(frame(SETTINGS, 0, 0, &[0, 4, 0x7F, 0xFF, 0xFF, 0xFF]));
    preface.extend(frame(WINDOW_UPDATE, 0, 0, &WINDOW_UPDATE_ALL.to_be_bytes()));
    let big = literal_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/big.bin"),
        (":authority", "t"),
    ]);
    preface.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &big));
    for stream in (3..=301).step_by(2) {
        preface.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &request_block(0, 0),
        ));
    }
    sock.write_all(&preface).unwrap();
    let mut h2 = H2 { sock };
    let (mut body, mut ended, mut refused) = (0usize, false, 0);
    while let Some((kind, flags, stream, payload)) = h2.read_frame() {
        match kind {
            DATA if stream == 1 => {
                body += payload.len();
                ended = flags & END_STREAM != 0;
            }
            RST_STREAM if stream == 1 => panic!("stream 1 was reset"),
            RST_STREAM => refused += 1,
            _ => {}
        }
        if ended {
            break;
        }
    }
    assert_eq!(body, BIG, "stream 1 was cut ({refused} streams refused)");
}

/// An HTTP/2 connection with no stream open for `timeouts.keep_alive` gets
/// GOAWAY and is closed, even while its client sends PINGs (frames between
/// requests are no request head arriving).
#[test]
fn an_idle_connection_gets_goaway_despite_pings() {
    const PING: u8 = 0x6;
    let (_dir, server) = server_with("max_header_bytes = 8192\n[timeouts]\nkeep_alive = 1");
    let mut h2 = H2::open(server.addr);
    assert_served_on(&mut h2);
    h2.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut goaway = false;
    while started.elapsed() < Duration::from_secs(15) {
        if h2.sock.write_all(&frame(PING, 0, 0, &[0; 8])).is_err() {
            break;
        }
        let mut head = [0u8; 9];
        match h2.sock.read(&mut head[..1]) {
            Ok(0) => break,
            Ok(_) => {
                let _ = h2.sock.read_exact(&mut head[1..]);
                let len = (usize::from(head[0]) << 16)
                    | (usize::from(head[1]) << 8)
                    | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                let _ = h2.sock.read_exact(&mut payload);
                goaway |= head[3] == GOAWAY;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    assert!(goaway, "no GOAWAY before the close");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the idle connection stayed open"
    );
}

/// A client that reads the connection but never gives its stream a
/// flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE)
/// is disconnected after `timeouts.send`, as one that stops reading is: its
/// response would otherwise be held for ever.
#[test]
fn a_stream_never_given_a_window_times_out() {
    const PING: u8 = 0x6;
    // Two seconds: PINGs every 300 ms would keep a stalled stream alive if
    // their answers counted as progress.
    let (_dir, server) = server_with("max_header_bytes = 8192\n[timeouts]\nsend = 2");
    // PINGs (whose answers the server writes) do not count as progress.
    for pings in [false, true] {
        let mut sock = TcpStream::connect(server.addr).unwrap();
        sock.write_all(PREFACE).unwrap();
        // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
        sock.write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]))
            .unwrap();
        sock.write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &request_block(0, 0),
        ))
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        let closed = loop {
            if started.elapsed() > Duration::from_secs(20) {
                break false;
            }
            if pings && sock.write_all(&frame(PING, 0, 0, &[1; 8])).is_err() {
                break true;
            }
            match sock.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break true,
            }
        };
        assert!(
            closed,
            "the stalled stream's connection stayed open (pings: {pings})"
        );
    }
    // The server still serves others.
    assert_served(server.addr);
}

#[test]
fn a_request_without_authority_or_host_is_refused() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    let block = literal_block(&[(":method", "GET"), (":scheme", "http"), (":path", "/a.txt")]);
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .unwrap();
    assert_eq!(h2.outcome(1), "refused status");
    // With a Host instead of :authority, it is served.
    let block = literal_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/a.txt"),
        ("host", "t"),
    ]);
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &block))
        .unwrap();
    assert_eq!(h2.outcome(3), "200");
    // Host is held to what HTTP/1.1 holds it to, and to :authority; a
    // value with whitespace at an end is malformed (RFC 9113 §8.2.1), and a
    // scheme other than http(s) names no resource of this server.
    for (stream, fields) in [
        (5, vec![("host", "good.test@evil.test")]),
        (7, vec![("host", "evil.test/x?")]),
        (9, vec![(":authority", "t"), ("host", "evil.test")]),
        (11, vec![(":authority", "t"), ("x-a", "  padded\t ")]),
        (13, vec![(":authority", "t"), ("x-a", "padded ")]),
    ] {
        let mut all = vec![(":method", "GET"), (":scheme", "http"), (":path", "/a.txt")];
        all.extend(fields);
        h2.sock
            .write_all(&frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                stream,
                &literal_block(&all),
            ))
            .unwrap();
        assert_eq!(h2.outcome(stream), "refused status", "stream {stream}");
    }
    let block = literal_block(&[
        (":method", "GET"),
        (":scheme", "ftp"),
        (":path", "/a.txt"),
        (":authority", "t"),
    ]);
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 15, &block))
        .unwrap();
    assert_eq!(h2.outcome(15), "refused status");
}

#[test]
fn options_asterisk_is_answered_over_http2_too() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    let block = literal_block(&[
        (":method", "OPTIONS"),
        (":scheme", "http"),
        (":path", "*"),
        (":authority", "t"),
    ]);
    h2.sock
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .unwrap();
    assert_eq!(h2.outcome(1), "200");
}

#[test]
fn cookie_crumbs_count_as_one_header_field() {
    let (_dir, server) = server_with("max_header_count = 20\nmax_header_bytes = 65536");
    let mut h2 = H2::open(server.addr);
    // 30 crumbs, as browsers split a Cookie over HTTP/2, and 4 pseudo-
    // header fields: one field of 20 allowed.
    let crumbs: Vec<(String, String)> = (0..30)
        .map(|i| ("cookie".to_owned(), format!("c{i}=v{i}")))
        .collect();
    let mut fields: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/a.txt"),
        (":authority", "t"),
    ];
    fields.extend(crumbs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    h2.sock
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &literal_block(&fields),
        ))
        .unwrap();
    assert_eq!(h2.outcome(1), "200");
    // 30 other fields are still too many.
    let others: Vec<(String, String)> = (0..30)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let mut fields: Vec<(&str, &str)> = fields[..4].to_vec();
    fields.extend(others.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    h2.sock
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            3,
            &literal_block(&fields),
        ))
        .unwrap();
    assert_eq!(h2.outcome(3), "refused status");
}

/// A client that shuts the flow-control window of some streams while it
/// feeds another cannot keep the shut ones (and the file pieces they hold)
/// alive: each stream is timed on its own, and those that waited past
/// `timeouts.send` are reset while the fed one, a slow reader, finishes.
#[test]
fn streams_left_without_window_are_reset_one_by_one() {
    let (dir, server) = server_with("max_header_bytes = 8192\n[timeouts]\nsend = 3");
    // Larger than the file cache holds, so it is read in pieces.
    let size = 256 * 1024 + 1;
    dir.write("www/big.bin", vec![b'x'; size]);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    sock.write_all(PREFACE).unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may be sent anything.
    sock.write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .unwrap();
    sock.write_all(&frame(WINDOW_UPDATE, 0, 0, &(16u32 << 20).to_be_bytes()))
        .unwrap();
    let block = literal_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/big.bin"),
        (":authority", "t"),
    ]);
    for stream in [1, 3, 5] {
        sock.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, stream, &block))
            .unwrap();
    }
    // Frames are read on a thread of their own, so the window updates go
    // out on time whatever arrives.
    let mut writer = sock.try_clone().unwrap();
    sock.set_read_timeout(None).unwrap();
    let (frames, arrived) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut h2 = H2 { sock };
        while let Some(f) = h2.read_frame() {
            if frames.send(f).is_err() {
                break;
            }
        }
        h2
    });
    let mut received = 0usize;
    let mut finished = false;
    let mut reset: Vec<u32> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(finished && reset.len() == 2) && std::time::Instant::now() < deadline {
        // Stream 1 reads slowly, 32 KiB a second (8 KiB of window four
        // times a second): it still makes progress within the send
        // timeout, and is not reset.
        if !finished {
            writer
                .write_all(&frame(WINDOW_UPDATE, 0, 1, &(8u32 << 10).to_be_bytes()))
                .unwrap();
        }
        let until = std::time::Instant::now() + Duration::from_millis(250);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let Ok((kind, flags, stream, payload)) = arrived.recv_timeout(left) else {
                break;
            };
            match (kind, stream) {
                (DATA, 1) => {
                    received += payload.len();
                    finished |= flags & END_STREAM != 0;
                }
                (RST_STREAM, 3 | 5) => reset.push(stream),
                (RST_STREAM, 1) | (GOAWAY, _) => panic!("the fed stream was ended ({kind})"),
                _ => {}
            }
        }
    }
    reset.sort_unstable();
    assert_eq!(reset, [3, 5], "the shut streams were not reset");
    assert!(finished, "the fed stream did not finish ({received} bytes)");
    assert_eq!(received, size);
    // The connection goes on serving (a response's window is the
    // client's to give: stream 7 gets one).
    let block = literal_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/a.txt"),
        (":authority", "t"),
    ]);
    writer
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 7, &block))
        .unwrap();
    writer
        .write_all(&frame(WINDOW_UPDATE, 0, 7, &1024u32.to_be_bytes()))
        .unwrap();
    let served = loop {
        match arrived.recv_timeout(Duration::from_secs(5)) {
            Ok((DATA, flags, 7, payload)) if flags & END_STREAM != 0 => break payload,
            Ok(_) => continue,
            Err(e) => panic!("no answer on stream 7: {e}"),
        }
    };
    assert_eq!(served, b"alpha");
    drop(writer);
    let h2 = reader;
    drop(h2);
}

/// An answer from memory (a cached file) goes to a slow HTTP/2 reader
/// whole: it used to be handed to hyper in one piece, which ended the
/// stream's service at once, so the connection counted as idle and its
/// keep-alive timeout cut the rest of the download.
#[test]
fn a_slow_reader_of_an_answer_from_memory_gets_all_of_it() {
    let (dir, server) = server_with("max_header_bytes = 8192\n[timeouts]\nkeep_alive = 2");
    // Small enough for the file cache; fetched once, so it is in memory.
    let size = 200_000;
    dir.write("www/mid.bin", vec![b'm'; size]);
    assert_eq!(common::get(server.addr, "/mid.bin").body.len(), size);

    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.write_all(PREFACE).unwrap();
    sock.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    let block = literal_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/mid.bin"),
        (":authority", "t"),
    ]);
    sock.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .unwrap();
    let mut writer = sock.try_clone().unwrap();
    let (frames, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut h2 = H2 { sock };
        while let Some(f) = h2.read_frame() {
            if frames.send(f).is_err() {
                break;
            }
        }
    });
    // 32 KiB a second past the first 64 KiB: about four seconds, twice
    // the keep-alive timeout.
    let mut received = 0usize;
    let mut finished = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !finished && std::time::Instant::now() < deadline {
        for stream in [0u32, 1] {
            writer
                .write_all(&frame(
                    WINDOW_UPDATE,
                    0,
                    stream,
                    &(16u32 << 10).to_be_bytes(),
                ))
                .unwrap();
        }
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let Ok((kind, flags, stream, payload)) = arrived.recv_timeout(left) else {
                break;
            };
            match (kind, stream) {
                (DATA, 1) => {
                    received += payload.len();
                    finished |= flags & END_STREAM != 0;
                }
                (RST_STREAM, 1) | (GOAWAY, _) => {
                    panic!("the download was ended at {received} bytes ({kind})")
                }
                _ => {}
            }
        }
    }
    assert!(finished, "the download did not finish ({received} bytes)");
    assert_eq!(received, size);
}

/// `limits.max_url_length` bounds the request target alike over HTTP/2 and
/// HTTP/1.1: a path of exactly that length is served (here a 404), one
/// byte more gets 414. HTTP/2's `:authority` is a field of its own, not
/// part of the target.
#[test]
fn the_url_length_limit_is_the_same_over_both_versions() {
    let (_dir, server) = server_with("max_url_length = 100");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (length, status) in [(100, 404), (101, 414)] {
        let path = format!("/{}", "a".repeat(length - 1));
        let mut conn = common::Connection::open(server.addr);
        conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(
            conn.read_response(false).status,
            status,
            "HTTP/1.1, {length}"
        );
        let got = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.unwrap();
            let request = http::Request::builder()
                .uri(format!("http://t{path}"))
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            response.await.unwrap().status().as_u16()
        });
        assert_eq!(got, status, "HTTP/2, {length}");
    }
}

/// A client that sends frames carrying nothing (here `WINDOW_UPDATE +1`,
/// valid each) as fast as it can has its connection closed once they pass
/// eight times what it asked for, and 8 MiB (nginx's flood rule), rather
/// than keep a worker busy for as long as the connection lives. Others are
/// served meanwhile and after.
#[test]
fn a_flood_of_frames_that_carry_nothing_is_closed() {
    let (_dir, server) = server();
    let mut h2 = H2::open(server.addr);
    assert_served_on(&mut h2);
    let mut writer = h2.sock.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let update = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1]);
        let batch: Vec<u8> = update.repeat(4096);
        // 24 MiB at most; a write fails once the server closed.
        for _ in 0..(24 * 1024 * 1024 / batch.len()) {
            if writer.write_all(&batch).is_err() {
                break;
            }
        }
    });
    // The server closes: the reads end (EOF, or a reset), not time out.
    h2.sock
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut sink = [0u8; 65536];
    let ended = loop {
        match h2.sock.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("the flooding connection was not closed: {e}"),
        }
    };
    assert!(ended);
    let _ = flood.join();
    assert_served(server.addr);
}
