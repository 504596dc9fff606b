//! The timeouts of `[timeouts]` over real sockets: slow request heads get 408
//! and a close (while other clients are served), idle keep-alive connections
//! are closed, and a client that stops reading is disconnected.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{get, write_config, RunningBinary, TempDir};

fn server(timeouts: &str) -> (TempDir, RunningBinary) {
    let dir = TempDir::new("timeouts");
    dir.write("www/a.txt", "alpha");
    dir.write("www/big.bin", vec![7u8; 32 * 1024 * 1024]);
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &format!("[timeouts]\n{timeouts}\n"),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// Reads until the server closes (or `limit` passes); returns what came.
fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn a_slow_request_head_gets_408_and_a_close_while_others_are_served() {
    let (_dir, server) = server("header_read = 2\nkeep_alive = 30");
    // Hundreds of connections each holding half a request head.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(format!("GET /a.txt?{i} HTTP/1.1\r\nHost: a\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    // A normal client is still served, repeatedly, while they hang.
    for _ in 0..20 {
        let resp = get(server.addr, "/a.txt");
        assert_eq!(resp.status, 200);
        // The slow ones trickle a byte now and then, as slowloris does.
        for s in slow.iter_mut().take(10) {
            let _ = s.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each slow connection ends with 408 and a close.
    for s in slow.iter_mut().step_by(50) {
        let (got, closed) = read_until_close(s, Duration::from_secs(20));
        assert!(closed, "the slow connection stayed open");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    }
}

/// A timeout never fires before its limit, though the sweep's clock counts
/// whole seconds: heads finished in well under `header_read = 1` are all
/// served, however their start falls against the clock's ticks.
#[test]
fn a_head_within_the_limit_is_never_cut_early() {
    let (_dir, server) = server("header_read = 1\nkeep_alive = 30");
    let heads: Vec<std::thread::JoinHandle<String>> = (0..10)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                // Spread over a second, so some start just before a tick.
                std::thread::sleep(Duration::from_millis(100 * i));
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n").unwrap();
                std::thread::sleep(Duration::from_millis(600));
                s.write_all(b"Connection: close\r\n\r\n").unwrap();
                let (got, _) = read_until_close(&mut s, Duration::from_secs(10));
                String::from_utf8_lossy(&got).into_owned()
            })
        })
        .collect();
    for head in heads {
        let text = head.join().unwrap();
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    }
}

/// A kept-alive connection's second head, arriving too slowly, gets its
/// 408 too (not only a connection's first request).
#[test]
fn a_slow_second_request_head_gets_408() {
    let (_dir, server) = server("header_read = 1\nkeep_alive = 30");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&first).ends_with("alpha") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        first.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n").unwrap();
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(20));
    assert!(closed, "the slow connection stayed open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
}

/// Part of a second head sent with the first request, in one write: that
/// head gets `header_read` from when the connection goes idle, and its 408,
/// not the (longer) keep-alive timeout and a silent close.
#[test]
fn a_partial_head_behind_a_request_gets_408() {
    let (_dir, server) = server("header_read = 1\nkeep_alive = 30");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(20));
    assert!(closed, "the connection stayed open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(text.contains("alphaHTTP/1.1 408 "), "{text:?}");
    // Not the keep-alive timeout (30 s).
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let (_dir, server) = server("keep_alive = 1");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(20));
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
    assert!(closed, "the idle connection was not closed");
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let (_dir, server) = server("send = 1");
    let mut s = TcpStream::connect(server.addr).unwrap();
    // A small receive window, so the server's writes block early.
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(20));
    assert!(closed);
    assert!(
        got.len() < 32 * 1024 * 1024,
        "the whole body arrived; the connection should have been cut"
    );
}
