//! Keep-alive connections over real sockets, across the moments the server
//! parks them (gives hyper's buffers back while a connection waits for its
//! next request): pauses between requests, request heads that arrive in
//! pieces, pipelined bytes read ahead, request bodies left unread, and
//! shutdown while connections wait.

mod common;

use std::io::Read;
use std::thread::sleep;
use std::time::Duration;

use common::{write_config, Connection, RunningBinary, TempDir};

fn server() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("keepalive");
    dir.write("www/a.txt", "alpha");
    dir.write("www/b.txt", "beta");
    let config = write_config(&dir, &dir.path().join("www"), "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// A pause the connection is not parked in.
const PAUSE: Duration = Duration::from_millis(60);

/// A pause long enough for the sweeper to park the connection (it parks
/// connections idle for one to two seconds).
const PARK: Duration = Duration::from_millis(2600);

#[test]
fn one_connection_serves_requests_with_pauses_between() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    for i in 0..12 {
        let path = if i % 2 == 0 { "/a.txt" } else { "/b.txt" };
        let resp = conn.get(path);
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.text(), if i % 2 == 0 { "alpha" } else { "beta" });
        // Mostly short pauses (no parking), now and then a parked wait.
        sleep(if i % 4 == 3 { PARK } else { PAUSE });
    }
}

#[test]
fn a_request_head_arriving_in_pieces_is_served() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    // On a new connection, and again after a response (when it is parked);
    // in the last round the pieces come slower than the sweeper parks idle
    // connections (one partly arrived is not idle).
    for round in 0..3 {
        let between = if round == 2 { PARK } else { PAUSE };
        conn.send_raw(b"GET /a.txt HT");
        sleep(between);
        conn.send_raw(b"TP/1.1\r\nHo");
        sleep(PAUSE);
        conn.send_raw(b"st: t\r\n\r\n");
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200, "round {round}");
        assert_eq!(resp.text(), "alpha");
        sleep(PARK);
    }
}

#[test]
fn a_pipelined_request_cut_short_is_completed_later() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    // The second head's first half comes with the first request: the server
    // holds it while it waits for the rest.
    conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /b.txt HTTP/1.1\r\nHo");
    let first = conn.read_response(false);
    assert_eq!((first.status, first.text().as_str()), (200, "alpha"));
    sleep(PARK);
    conn.send_raw(b"st: t\r\n\r\n");
    let second = conn.read_response(false);
    assert_eq!((second.status, second.text().as_str()), (200, "beta"));
    // And the connection goes on.
    sleep(PARK);
    assert_eq!(conn.get("/a.txt").text(), "alpha");
}

#[test]
fn a_request_body_the_handler_did_not_read_is_skipped() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    // Static files refuse POST without reading the body; the whole body is
    // already here, so the connection stays usable.
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let refused = conn.read_response(false);
    assert_eq!(refused.status, 405);
    sleep(PARK);
    let resp = conn.get("/b.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "beta"));
}

#[test]
fn a_request_body_that_never_comes_gets_the_answer_then_a_close() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhe");
    let refused = conn.read_response(false);
    assert_eq!(refused.status, 405);
    // The server waits five seconds for the rest of the body (to discard
    // it), then closes the connection rather than leave it waiting (the
    // read would time out after 20 s and fail the test).
    assert!(conn.is_closed());
}

#[test]
fn a_request_body_sent_after_the_answer_is_discarded_and_the_connection_kept() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    // Static files refuse POST without reading the body, so the answer comes
    // before the body is sent; the server reads the body after its answer
    // and drops it, and the connection serves the next request.
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
    for _ in 0..10 {
        conn.send_raw(&[b'x'; 10_000]);
        sleep(Duration::from_millis(10));
    }
    let resp = conn.get("/b.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "beta"));

    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
    for _ in 0..10 {
        conn.send_raw(b"2710\r\n");
        conn.send_raw(&[b'y'; 10_000]);
        conn.send_raw(b"\r\n");
    }
    conn.send_raw(b"0\r\n\r\n");
    let resp = conn.get("/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "alpha"));
}

#[test]
fn a_request_pipelined_behind_an_unread_body_is_served() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    // Head, a 100,000-byte body no module reads, and the next request, in
    // one write: the body is discarded from what was read ahead.
    let mut bytes = b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[b'x'; 100_000]);
    bytes.extend_from_slice(b"GET /b.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.send_raw(&bytes);
    assert_eq!(conn.read_response(false).status, 405);
    let resp = conn.read_response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "beta"));
}

#[test]
fn a_request_body_too_long_to_discard_gets_the_answer_then_a_close() {
    let (_dir, server) = server();
    // A Content-Length over 256 KiB is not read at all.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\nhe");
    assert_eq!(conn.read_response(false).status, 405);
    assert!(conn.is_closed());
    // A chunked body is read up to 256 KiB, then the connection closes.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
    let chunk = [b"2710\r\n".as_slice(), &[b'z'; 10_000], b"\r\n"].concat();
    let mut refused_at = None;
    for i in 0..40 {
        if conn.try_send_raw(&chunk).is_err() {
            refused_at = Some(i);
            break;
        }
    }
    assert!(conn.is_closed_or_reset());
    // Whether a send failed depends on socket buffers; if one did, it was
    // past the limit.
    assert!(refused_at.is_none_or(|i| i >= 20), "{refused_at:?}");
}

#[test]
fn a_request_body_held_back_for_100_continue_is_not_asked_for_after_the_answer() {
    let (_dir, server) = server();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    );
    // The final answer, never a late 100 (which the client would take for
    // the answer to its next request); the body was never sent, so the
    // connection closes, and the answer says so (RFC 9110 §9.6).
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.is_closed());
}

/// A client that ends its sending side once its requests are out (a
/// half-close: `shutdown(SHUT_WR)`, `nc -N`, HTTP/1.0 tools) gets every
/// answer, then the close. hyper, told of the end while a request was in
/// service, used to close at once: whether such a client got its answer
/// depended on whether the end came before the response was written.
#[test]
fn a_client_that_half_closes_after_its_requests_gets_every_answer() {
    let (_dir, server) = server();
    for round in 0..40 {
        let mut conn = Connection::open(server.addr);
        match round % 3 {
            0 => conn.send_raw(b"GET /a.txt HTTP/1.0\r\n\r\n"),
            1 => conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n"),
            _ => conn.send_raw(
                b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /b.txt HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
            ),
        }
        conn.shutdown_write();
        let answers: &[&str] = if round % 3 == 2 {
            &["alpha", "beta", "alpha"]
        } else {
            &["alpha"]
        };
        for (i, want) in answers.iter().enumerate() {
            let resp = conn.read_response(false);
            assert_eq!(resp.status, 200, "round {round}, answer {i}");
            assert_eq!(resp.text(), *want, "round {round}, answer {i}");
        }
        assert!(conn.is_closed(), "round {round}: closed after the answers");
        // Some rounds after a pause long enough for the file cache to look
        // at the file again.
        if round % 10 == 9 {
            sleep(Duration::from_millis(1100));
        }
    }
}

#[test]
fn shutdown_closes_waiting_connections_and_exits() {
    let (_dir, server) = server();
    let addr = server.addr;
    let mut waiting: Vec<Connection> = (0..20)
        .map(|_| {
            let mut c = Connection::open(addr);
            assert_eq!(c.get("/a.txt").status, 200);
            c
        })
        .collect();
    // One connection that never sent a byte.
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Half of them parked, half not.
    sleep(PARK);
    for c in waiting.iter_mut().step_by(2) {
        assert_eq!(c.get("/b.txt").status, 200);
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    for c in waiting.iter_mut() {
        assert!(c.is_closed());
    }
    let mut buf = [0u8; 16];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
}
