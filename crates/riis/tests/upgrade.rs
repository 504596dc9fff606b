//! Connections that switch protocols (101) over real sockets, with a test
//! module that speaks a line protocol on the switched connection: the
//! connection is handed to the module with the bytes the client sent right
//! behind its request, reads and writes both work, the execution limit does
//! not cut it, and a 101 the client did not ask for is refused.

mod common;

use std::time::Duration;

use common::{Connection, InProcessServer};
use riis_pipeline::http::{header, HeaderValue, StatusCode};
use riis_pipeline::{
    CompletionInfo, FlushOptions, HttpContext, HttpModule, ModuleError, ModuleRegistration,
    RegisterModuleFn, RequestNotification as N, RequestNotificationStatus as Status,
    RequestNotifications, ServerInfo,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `/switch…`: answers 101 (`Upgrade: line-echo`), then on the connection
/// says `ready`, answers each line in capitals, and at `bye` says `bye`
/// and closes. Any other URL: 200 `plain`.
#[derive(Default)]
struct LineEcho {
    switching: bool,
}

/// The status LogRequest saw for the last `/switch-logged` request (a URL
/// of its own: tests run at once).
static LOGGED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

impl HttpModule for LineEcho {
    fn on_log_request(&mut self, ctx: &mut HttpContext) -> Status {
        if ctx.request().url() == "/switch-logged" {
            LOGGED.store(
                ctx.response().status().as_u16(),
                std::sync::atomic::Ordering::SeqCst,
            );
        }
        Status::Continue
    }

    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        if !ctx.request().url().starts_with("/switch") {
            ctx.response_mut().write("plain");
            return Status::Continue;
        }
        let resp = ctx.response_mut();
        resp.set_status(StatusCode::SWITCHING_PROTOCOLS, "Switching Protocols");
        resp.set_header(header::UPGRADE, HeaderValue::from_static("line-echo"));
        resp.set_header(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        resp.flush(FlushOptions {
            asynchronous: true,
            more_data: true,
        });
        self.switching = true;
        Status::Pending
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        _: &CompletionInfo,
    ) -> Status {
        if !std::mem::take(&mut self.switching) {
            return Status::Continue;
        }
        let Some(stream) = ctx.take_upgraded_stream() else {
            return Status::Continue;
        };
        let done = ctx.completion_handle();
        tokio::spawn(async move {
            let (reader, mut writer) = tokio::io::split(stream);
            let mut lines = BufReader::new(reader).lines();
            let _ = writer.write_all(b"ready\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "bye" {
                    let _ = writer.write_all(b"bye\n").await;
                    break;
                }
                let answer = format!("{}\n", line.to_uppercase());
                if writer.write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
            done.indicate_completion(Status::Continue);
        });
        Status::Pending
    }
}

fn register_line_echo(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        LineEcho::default,
        N::ExecuteRequestHandler | N::LogRequest,
        RequestNotifications::NONE,
    )
}

static TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("LineEcho", register_line_echo)];

fn start() -> InProcessServer {
    InProcessServer::start(
        "[timeouts]\nexecution = 1\n\
         [[modules]]\nname = \"LineEcho\"\n\
         [[handlers]]\nname = \"h\"\npath = \"*\"\nmodules = [\"LineEcho\"]\n\
         [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n",
        TEST_MODULES,
    )
}

const ASK: &str =
    "GET /switch HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n";

#[test]
fn a_module_switches_protocols_and_talks_on_the_connection() {
    let server = start();
    let mut conn = Connection::open(server.addr);
    // The first line comes right behind the request, in the same write.
    conn.send_raw(format!("{ASK}early\n").as_bytes());
    let head = conn.read_response(true);
    assert_eq!(head.status, 101);
    assert_eq!(head.header("upgrade"), Some("line-echo"));
    assert_eq!(head.header("connection"), Some("Upgrade"));
    assert_eq!(head.header("content-length"), None);
    assert_eq!(head.header("transfer-encoding"), None);
    assert_eq!(conn.read_line(), "ready\n");
    assert_eq!(conn.read_line(), "EARLY\n");
    conn.send_raw(b"ping\n");
    assert_eq!(conn.read_line(), "PING\n");
    // Longer than `timeouts.execution`: the switched connection lasts.
    std::thread::sleep(Duration::from_millis(2500));
    conn.send_raw(b"late\n");
    assert_eq!(conn.read_line(), "LATE\n");
    conn.send_raw(b"bye\n");
    assert_eq!(conn.read_line(), "bye\n");
    assert!(
        conn.is_closed(),
        "the connection ends with the module's use"
    );
    // The server goes on serving.
    assert_eq!(Connection::open(server.addr).get("/other").text(), "plain");
    server.stop();
}

/// Over HTTP/2 a WebSocket's extended CONNECT (RFC 8441) reaches the
/// module as the HTTP/1.1 handshake; its 101 goes out as a 200, and the
/// stream is the module's, past `timeouts.execution` and `keep_alive`
/// (the connection counts in service while the stream is open), until the
/// module ends it. The connection's other streams go on.
#[test]
fn a_module_switches_a_websocket_over_http2_and_talks_on_its_stream() {
    let server = InProcessServer::start(
        "[timeouts]\nexecution = 1\nkeep_alive = 1\n\
         [[modules]]\nname = \"LineEcho\"\n\
         [[handlers]]\nname = \"h\"\npath = \"*\"\nmodules = [\"LineEcho\"]\n\
         [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n",
        TEST_MODULES,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = common::http2_websocket_client(server.addr).await;
        let ask = common::extended_connect("http://t/switch", "websocket");
        let (response, mut send) = client.send_request(ask, false).unwrap();
        send.send_data(bytes::Bytes::from_static(b"early\n"), false)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get(header::UPGRADE).is_none());
        let mut body = response.into_body();
        let mut got = String::new();
        common::read_stream_until(&mut body, "EARLY\n", &mut got).await;
        assert_eq!(got, "ready\nEARLY\n");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        send.send_data(bytes::Bytes::from_static(b"late\n"), false)
            .unwrap();
        common::read_stream_until(&mut body, "LATE\n", &mut got).await;
        send.send_data(bytes::Bytes::from_static(b"bye\n"), false)
            .unwrap();
        common::read_stream_until(&mut body, "bye\n", &mut got).await;
        common::expect_stream_end(&mut body).await;
        let plain = riis_pipeline::http::Request::builder()
            .uri("http://t/other")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(plain, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
    });
    server.stop();
}

#[test]
fn a_101_the_client_did_not_ask_for_is_refused() {
    let server = start();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/switch-logged").status, 500);
    // Logged as what went out.
    assert_eq!(LOGGED.load(std::sync::atomic::Ordering::SeqCst), 500);
    // The connection serves the next request.
    assert_eq!(conn.get("/other").text(), "plain");
    // HTTP/1.0 has no upgrades (RFC 9110 §7.8).
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /switch HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 500);
    // Nor does a request with a body switch: its connection's next bytes
    // are the body's.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /switch HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(conn.read_response(false).status, 500);
    // HTTP/2 has no 101 (RFC 9113 §8.6).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = common::http2_client(server.addr).await;
        let request = riis_pipeline::http::Request::get(format!("http://{}/switch", server.addr))
            .body(http_body_util::Empty::<riis_pipeline::bytes::Bytes>::new())
            .unwrap();
        let resp = client.send_request(request).await.unwrap();
        assert_eq!(resp.status(), 500);
    });
    // Its connection closes with its runtime, before the server drains.
    drop(rt);
    server.stop();
}

#[test]
fn a_switched_connection_is_closed_when_the_server_stops() {
    let server = InProcessServer::start(
        "[server]\nshutdown_timeout = 1\n\
         [[modules]]\nname = \"LineEcho\"\n\
         [[handlers]]\nname = \"h\"\npath = \"*\"\nmodules = [\"LineEcho\"]\n\
         [[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n",
        TEST_MODULES,
    );
    let mut conn = Connection::open(server.addr);
    conn.send_raw(ASK.as_bytes());
    assert_eq!(conn.read_response(true).status, 101);
    assert_eq!(conn.read_line(), "ready\n");
    let started = std::time::Instant::now();
    server.stop();
    // Cut off at the drain's deadline, not left open.
    assert!(conn.is_closed());
    assert!(started.elapsed() < Duration::from_secs(20));
}
