//! Large files over real sockets: on plain HTTP/1.x riis sends file ranges
//! with `sendfile`; the bytes must arrive exactly, for whole files, single
//! and multiple ranges, HEAD, HTTP/1.0 and pipelined requests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{write_config, Connection, RunningBinary, TempDir};

/// Bytes that differ at every offset (a zero in the wrong place shows).
fn content(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn server(file: &[u8]) -> (TempDir, RunningBinary) {
    let dir = TempDir::new("large");
    dir.write("www/big.bin", file);
    // A tiny file cache limit, so every file here is read from disk.
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[server]\nfile_cache_max_file_size = 1024\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

#[test]
fn a_large_file_arrives_byte_for_byte() {
    let file = content(3 * 1024 * 1024 + 12345);
    let (_dir, server) = server(&file);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/big.bin");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), file.len());
    assert!(resp.body == file, "the body differs from the file");
    // Again on the same connection, then a single range.
    assert!(conn.get("/big.bin").body == file);
    conn.send_raw(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000000-2600000\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 206);
    assert!(resp.body == file[1_000_000..=2_600_000]);
    // HEAD has the length and no body.
    conn.send_raw(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(
        resp.header("content-length"),
        Some(&*file.len().to_string())
    );
}

#[test]
fn multiple_ranges_mix_file_bytes_and_part_headers() {
    let file = content(2 * 1024 * 1024);
    let (_dir, server) = server(&file);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99, 500000-1500000, 2000000-\r\n\r\n",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 206);
    let ctype = resp.header("content-type").unwrap().to_owned();
    let boundary = ctype.split("boundary=").nth(1).unwrap();
    let body = resp.body;
    // Each part's bytes follow its headers' blank line, in order.
    let mut parts = Vec::new();
    let marker = format!("--{boundary}");
    let text_positions: Vec<usize> = body
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(i, _)| i)
        .collect();
    for pair in text_positions.windows(2) {
        let part = &body[pair[0]..pair[1]];
        let start = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // Strip the CRLF before the next boundary.
        parts.push(&part[start..part.len() - 2]);
    }
    assert_eq!(parts.len(), 3);
    assert!(parts[0] == &file[0..100]);
    assert!(parts[1] == &file[500_000..=1_500_000]);
    assert!(parts[2] == &file[2_000_000..]);
}

#[test]
fn http10_and_pipelined_requests_get_the_exact_bytes() {
    let file = content(1024 * 1024 + 7);
    let (_dir, server) = server(&file);
    // HTTP/1.0: the body ends with the connection.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(all[head_end..] == file[..]);
    // Three pipelined requests on one connection.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-1000\r\n\r\n",
    );
    assert!(conn.read_response(false).body == file);
    assert!(conn.read_response(false).body == file);
    assert!(conn.read_response(false).body == file[file.len() - 1000..]);
}

#[test]
fn a_cached_file_kept_open_is_sent_whole_and_follows_changes() {
    // 100 KiB: within the default file cache, large enough to be kept open
    // and sent with sendfile from the cached descriptor.
    let dir = TempDir::new("cached-open");
    let first = content(100 * 1024);
    dir.write("www/mid.bin", &first);
    let config = write_config(&dir, &dir.path().join("www"), "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        let resp = conn.get("/mid.bin");
        assert_eq!(resp.status, 200);
        assert!(resp.body == first, "the body differs from the file");
    }
    // Pipelined, with a range between two whole responses.
    conn.send_raw(
        b"GET /mid.bin HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /mid.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=5000-70000\r\n\r\n\
          GET /mid.bin HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(conn.read_response(false).body == first);
    let ranged = conn.read_response(false);
    assert_eq!(ranged.status, 206);
    assert!(ranged.body == first[5000..=70000]);
    assert!(conn.read_response(false).body == first);
    // Replaced with other bytes of another length: the new file is sent,
    // not the descriptor the cache held.
    let second = content(120 * 1024 + 7)
        .into_iter()
        .rev()
        .collect::<Vec<u8>>();
    std::fs::write(dir.path().join("www/mid.bin"), &second).unwrap();
    let resp = conn.get("/mid.bin");
    assert_eq!(resp.body.len(), second.len());
    assert!(resp.body == second, "the changed file was not served");
}
