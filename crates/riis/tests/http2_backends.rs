//! ReverseProxy with `http_version = "2"` over real sockets, against an
//! HTTP/2 server written here (cleartext, prior knowledge) that answers
//! the way gRPC servers do: `application/grpc`, messages as they are
//! ready, and the status in trailers. Clients speak HTTP/2 and HTTP/1.1.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use common::{RunningBinary, TempDir};

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: hyper::Version,
    uri: String,
    te: Option<String>,
    body: Vec<u8>,
    /// The body's read ended in an error (the stream was reset).
    body_failed: bool,
    /// The reset's reason, when the body's read ended in one.
    reset: Option<h2::Reason>,
}

/// The test's HTTP/2 server.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// `/stream` sends its second message once the test says so.
    go: Arc<tokio::sync::Notify>,
    _runtime: tokio::runtime::Runtime,
}

/// A runtime of its own for a test server, and a loopback port it listens
/// on.
fn listening() -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (runtime, listener, addr)
}

impl Backend {
    fn start() -> Self {
        let (runtime, listener, addr) = listening();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let go = Arc::new(tokio::sync::Notify::new());
        let (counted, noted, told) = (connections.clone(), seen.clone(), go.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let (noted, told) = (noted.clone(), told.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        answer(req, noted.clone(), told.clone())
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            connections,
            seen,
            go,
            _runtime: runtime,
        }
    }
}

/// A gRPC-style message: a flag byte, a 4-byte length, the bytes.
fn message(text: &str) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

fn grpc_trailers(status: &str, text: &str) -> hyper::HeaderMap {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    trailers.insert("grpc-message", text.parse().unwrap());
    trailers
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    go: Arc<tokio::sync::Notify>,
) -> Result<Response<Channel<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/early" {
        // The head at once; the body is read after (as a gRPC server that
        // answers while the client streams), its outcome noted.
        tokio::spawn(async move {
            let collected = body.collect().await;
            let reset = collected.as_ref().err().and_then(|e| {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(c) = cause {
                    if let Some(h2) = c.downcast_ref::<h2::Error>() {
                        return h2.reason();
                    }
                    cause = c.source();
                }
                None
            });
            seen.lock().unwrap().push(Seen {
                reset,
                body_failed: collected.is_err(),
                version: parts.version,
                uri: parts.uri.to_string(),
                te: None,
                body: Vec::new(),
            });
        });
        let (_tx, channel) = Channel::new(1);
        // The sender is dropped: the answer is a head and an empty body.
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(channel)
            .unwrap());
    }
    if parts.uri.path() == "/echo.Echo/Chat" {
        // A bidirectional call: each piece of the body comes back at once,
        // while the client still sends; the status once the body ends.
        let (mut tx, channel): (Sender<Bytes>, _) = Channel::new(4);
        tokio::spawn(async move {
            let mut body = body;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    if tx.send_data(data).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send_trailers(grpc_trailers("0", "chatted")).await;
        });
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(channel)
            .unwrap());
    }
    let collected = body.collect().await;
    let body_failed = collected.is_err();
    let body = collected.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        body_failed,
        reset: None,
        version: parts.version,
        uri: parts.uri.to_string(),
        te: parts
            .headers
            .get("te")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: body.clone(),
    });
    let (mut tx, channel): (Sender<Bytes>, _) = Channel::new(4);
    let path = parts.uri.path().to_owned();
    if path == "/echo.Echo/Stream" {
        // The first message is ready with the head, so that the two go
        // out together, as gRPC servers send them.
        let _ = tx.send_data(message("first")).await;
    }
    if path == "/hang" {
        // Never answers (the channel is kept open, the head never sent).
        std::future::pending::<()>().await;
    }
    tokio::spawn(async move {
        match path.as_str() {
            "/echo.Echo/Say" => {
                let _ = tx.send_data(Bytes::from(body)).await;
                let _ = tx.send_trailers(grpc_trailers("0", "done")).await;
            }
            "/echo.Echo/Stream" => {
                // The second message only once the client has the first:
                // a proxy that held the answer back would never pass.
                go.notified().await;
                let _ = tx.send_data(message("second")).await;
                let _ = tx.send_trailers(grpc_trailers("0", "streamed")).await;
            }
            _ => {
                let _ = tx
                    .send_trailers(grpc_trailers("12", "unknown method"))
                    .await;
            }
        }
    });
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(channel)
        .unwrap())
}

fn start(backend: &Backend) -> (TempDir, RunningBinary) {
    start_with_timeout(backend, 10)
}

fn start_with_timeout(backend: &Backend, timeout: u32) -> (TempDir, RunningBinary) {
    start_with(backend, timeout, "")
}

fn start_with(backend: &Backend, timeout: u32, more: &str) -> (TempDir, RunningBinary) {
    let server = format!("http://{}", backend.addr);
    start_proxy(&server, &format!("timeout = {timeout}\n{more}"))
}

/// riis with one worker, its ReverseProxy speaking HTTP/2 to `server`, and
/// `more` in its `[proxy]` section.
fn start_proxy(server: &str, more: &str) -> (TempDir, RunningBinary) {
    let dir = TempDir::new("h2-backend");
    let config = common::write_config(
        &dir,
        dir.path(),
        &format!(
            r#"[server]
worker_threads = 1
pid_file = "riis.pid"
[[modules]]
name = "ReverseProxy"
[[handlers]]
name = "Proxy"
path = "*"
verbs = ["*"]
modules = ["ReverseProxy"]
[proxy]
servers = ["{server}"]
http_version = "2"
{more}
"#
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// A gRPC call to `path` on `addr` (as a gRPC client sends it: an HTTP/2
/// POST asking for trailers) with `body`.
fn grpc_request<B>(addr: SocketAddr, path: &str, body: B) -> Request<B> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

/// Sends a gRPC-style POST and gives the response head, each data frame,
/// and the trailers.
async fn call(
    client: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    body: &'static [u8],
) -> (Response<Incoming>, Vec<Bytes>, Option<hyper::HeaderMap>) {
    let request = grpc_request(addr, path, Full::new(Bytes::from_static(body)));
    let mut response = client.send_request(request).await.unwrap();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = response.body_mut().frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.push(d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (response, data, trailers)
}

#[test]
fn a_grpc_call_passes_through_with_its_trailers() {
    let backend = Backend::start();
    let (_dir, server) = start(&backend);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = common::http2_client(server.addr).await;
        for _ in 0..3 {
            let (response, data, trailers) = call(
                &mut client,
                server.addr,
                "/echo.Echo/Say",
                b"\0\0\0\0\x05hello",
            )
            .await;
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers().get("content-type").unwrap(),
                "application/grpc"
            );
            assert_eq!(data.concat(), b"\0\0\0\0\x05hello");
            let trailers = trailers.expect("the server's trailers");
            assert_eq!(trailers.get("grpc-status").unwrap(), "0");
            assert_eq!(trailers.get("grpc-message").unwrap(), "done");
        }
        // An error status alone, in trailers after no message.
        let (response, data, trailers) = call(&mut client, server.addr, "/nope", b"").await;
        assert_eq!(response.status(), 200);
        assert!(data.concat().is_empty());
        assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "12");
    });
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_eq!(request.version, hyper::Version::HTTP_2);
        assert_eq!(request.te.as_deref(), Some("trailers"));
    }
    assert_eq!(seen[0].body, b"\0\0\0\0\x05hello");
    // The client's authority, as the client's Host is passed on.
    assert_eq!(seen[0].uri, format!("http://{}/echo.Echo/Say", server.addr));
    // Every call went on one connection (one worker, one server).
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_streamed_answer_goes_on_message_by_message_and_calls_share_the_connection() {
    let backend = Backend::start();
    let (_dir, server) = start(&backend);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = common::http2_client(server.addr).await;
        let request = grpc_request(server.addr, "/echo.Echo/Stream", Full::new(Bytes::new()));
        let mut streamed = client.send_request(request).await.unwrap();
        // A unary call while the stream is open goes on the same
        // connection, as a stream of its own.
        let (_, data, trailers) =
            call(&mut client, server.addr, "/echo.Echo/Say", b"\0\0\0\0\x01x").await;
        assert_eq!(data.concat(), b"\0\0\0\0\x01x");
        assert!(trailers.is_some());
        let first = tokio::time::timeout(Duration::from_secs(20), streamed.body_mut().frame())
            .await
            .expect("the first message arrives before the answer ends")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(first, message("first"));
        backend.go.notify_one();
        let mut rest = Vec::new();
        let mut trailers = None;
        while let Some(frame) = streamed.body_mut().frame().await {
            match frame.unwrap().into_data() {
                Ok(d) => rest.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(rest, message("second"));
        assert_eq!(trailers.unwrap().get("grpc-message").unwrap(), "streamed");
    });
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn an_http1_client_gets_the_body_and_the_connection_goes_on() {
    let backend = Backend::start();
    let (_dir, server) = start(&backend);
    let mut conn = common::Connection::open(server.addr);
    for _ in 0..2 {
        conn.send_raw(
            b"POST /echo.Echo/Say HTTP/1.1\r\nHost: t\r\nContent-Type: application/grpc\r\n\
              Content-Length: 6\r\n\r\n\0\0\0\0\x01y",
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"\0\0\0\0\x01y");
    }
    let seen = backend.seen.lock().unwrap().clone();
    // No `TE: trailers` from this client, so none is passed on; the
    // request's authority is its Host.
    assert_eq!(seen[0].te, None);
    assert_eq!(seen[0].uri, "http://t/echo.Echo/Say");
}

/// The server's silence is judged per request: one request the server
/// never answers gets its 504 while other requests keep the shared
/// connection busy.
#[test]
fn a_request_the_server_never_answers_times_out_beside_busy_ones() {
    let backend = Backend::start();
    let (_dir, server) = start_with_timeout(&backend, 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = common::http2_client(server.addr).await;
        let hang = Request::get(format!("http://{}/hang", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut hanging = Box::pin(client.send_request(hang));
        // Traffic on the same backend connection meanwhile, for as long as
        // the hanging request lasts (at most 30 s).
        let mut calls = 0;
        let status = loop {
            tokio::select! {
                response = &mut hanging => break response.unwrap().status(),
                _ = call(&mut client, server.addr, "/echo.Echo/Say", b"\0\0\0\0\x01z") => {
                    calls += 1;
                    assert!(calls < 3000, "the silent request never ended");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        assert_eq!(status, 504);
    });
}

/// After a burst that opened connections side by side, one is kept.
#[test]
fn one_http2_connection_is_kept_per_server() {
    let backend = Backend::start();
    let (dir, server) = start(&backend);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut calls = Vec::new();
        for _ in 0..20 {
            let addr = server.addr;
            calls.push(tokio::spawn(async move {
                let mut client = common::http2_client(addr).await;
                call(&mut client, addr, "/echo.Echo/Say", b"\0\0\0\0\x01b")
                    .await
                    .1
            }));
        }
        for c in calls {
            assert_eq!(c.await.unwrap().concat(), b"\0\0\0\0\x01b");
        }
    });
    // Calls that came while the first connection was being opened waited
    // for it rather than open their own.
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    // The kept one is counted open, not idle.
    let figure = |status: &str, name: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .expect(status)
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = common::riis_status(&dir.path().join("riis.toml"));
        assert_eq!(figure(&status, "proxy_connections_idle: "), 0, "{status}");
        if figure(&status, "proxy_http2_connections: ") == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP/2 server that refuses its first stream (`REFUSED_STREAM`) once
/// it has read `read_first` body bytes, and answers the others with
/// "try N: " and the body it read; `attempts` counts the streams.
fn refusing_backend(attempts: Arc<AtomicUsize>, read_first: usize) -> Backend {
    let (runtime, listener, addr) = listening();
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        let mut read = Vec::new();
                        while attempt > 1 || read.len() < read_first {
                            match body.data().await {
                                Some(Ok(data)) => {
                                    let _ = body.flow_control().release_capacity(data.len());
                                    read.extend_from_slice(&data);
                                }
                                _ => break,
                            }
                        }
                        if attempt == 1 {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            return;
                        }
                        let response = Response::builder().status(200).body(()).unwrap();
                        if let Ok(mut out) = respond.send_response(response, false) {
                            let mut answer = format!("try {attempt}: ").into_bytes();
                            answer.extend_from_slice(&read);
                            let _ = out.send_data(Bytes::from(answer), true);
                        }
                    });
                }
            });
        }
    });
    Backend {
        addr,
        connections: Arc::default(),
        seen: Arc::default(),
        go: Arc::default(),
        _runtime: runtime,
    }
}

/// A stream the server refuses (`REFUSED_STREAM`, RFC 9113 §8.7) was not
/// processed: riis sends the request again, a POST too.
#[test]
fn a_refused_stream_is_sent_again() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let backend = refusing_backend(attempts.clone(), 0);
    let (_dir, server) = start(&backend);
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(b"POST /anything HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "try 2: body");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

/// The same for a streamed body the server read part of before it refused
/// the stream (a gRPC server at its limit of streams): what went is kept
/// until the answer's head, and goes again first.
#[test]
fn a_streamed_body_goes_again_whole_after_a_refused_stream() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let backend = refusing_backend(attempts.clone(), 6);
    let (_dir, server) = start_with(&backend, 10, "request_buffering = false");
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(
        b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst;\r\n",
    );
    // The rest once the first try has taken the first piece.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while attempts.load(Ordering::SeqCst) < 1 {
        assert!(std::time::Instant::now() < deadline, "the body never went");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    conn.send_raw(b"6\r\nsecond\r\n0\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "try 2: first;second");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn an_unknown_http_version_is_a_configuration_error() {
    let dir = TempDir::new("h2-config");
    for (value, says) in [
        (
            "\"3\"",
            "`3` is not a version riis speaks to servers: \"1.1\" or \"2\"",
        ),
        ("2", "expected a string"),
    ] {
        let config = common::write_config(
            &dir,
            dir.path(),
            &format!(
                "[[modules]]\nname = \"ReverseProxy\"\n[proxy]\nservers = [\"http://127.0.0.1:9\"]\n\
                 http_version = {value}\n"
            ),
        );
        let out = common::riis_command("check-config", &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}");
        assert!(
            err.contains("riis.toml:5: key `proxy.http_version`"),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }
}

/// A streamed upload whose client goes away before the end, after the
/// server answered its head: the server's stream is reset, so it stops
/// waiting for the rest of the body (on a connection that other requests
/// share, nothing else would end it).
#[test]
fn an_upload_given_up_by_its_client_resets_the_stream() {
    let backend = Backend::start();
    let (_dir, server) = start_with(&backend, 30, "request_buffering = false");
    {
        let mut conn = common::Connection::open(server.addr);
        conn.send_raw(
            b"POST /early HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nonly a start\r\n",
        );
        // Until the server has the connection (and the first bytes).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while backend.connections.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing reached the server"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
    } // The client leaves.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(seen) = backend.seen.lock().unwrap().first() {
            assert!(seen.body_failed, "{seen:?}");
            assert_eq!(seen.reset, Some(h2::Reason::CANCEL), "{seen:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server still waits for the body"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bidirectional call over a client's request: each message is sent
/// only once the answer to the one before came back, which a proxy that
/// held the answer until the body ended could never pass. Gives the
/// trailers.
async fn chat(
    mut to_server: Sender<Bytes>,
    response: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
) -> Option<hyper::HeaderMap> {
    let said = ["one", "two", "three"];
    to_server.send_data(message(said[0])).await.unwrap();
    let mut response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the answer's head came while the body was still open")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut to_server = Some(to_server);
    for (i, text) in said.iter().enumerate() {
        let expected = message(text);
        let mut got = Vec::new();
        let what = "the answer to a message, before the next is sent";
        common::read_data_until(response.body_mut(), &mut got, expected.len(), what).await;
        assert_eq!(got, expected);
        match said.get(i + 1) {
            Some(next) => {
                let sender = to_server.as_mut().unwrap();
                sender.send_data(message(next)).await.unwrap();
            }
            // The body ends: the server's status follows.
            None => to_server = None,
        }
    }
    let mut trailers = None;
    while let Some(frame) = response.body_mut().frame().await {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    trailers
}

#[test]
fn a_bidirectional_call_is_answered_while_its_client_still_sends() {
    let backend = Backend::start();
    let (_dir, server) = start_with(&backend, 10, "request_buffering = false");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An HTTP/2 client, as gRPC's are.
        let mut client = common::http2_client::<Channel<Bytes>>(server.addr).await;
        let (to_server, body) = Channel::new(1);
        let request = grpc_request(server.addr, "/echo.Echo/Chat", body);
        let trailers = chat(to_server, client.send_request(request)).await;
        let trailers = trailers.expect("the server's trailers");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert_eq!(trailers.get("grpc-message").unwrap(), "chatted");

        // An HTTP/1.1 client streams its body chunked; the answer comes
        // chunked while it does.
        let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let (mut client, conn) = hyper::client::conn::http1::handshake::<_, Channel<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let (to_server, body) = Channel::new(1);
        let request = Request::post("/echo.Echo/Chat")
            .header("host", "t")
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap();
        chat(to_server, client.send_request(request)).await;
    });
}

/// Long-lived calls fill a connection up to `http2_max_concurrent_streams`;
/// the next call opens a new connection, which the calls after it share,
/// rather than waiting behind them.
#[test]
fn a_connection_with_all_its_streams_busy_is_joined_by_another() {
    let backend = Backend::start();
    let more = "request_buffering = false\nhttp2_max_concurrent_streams = 2";
    let (_dir, server) = start_with(&backend, 10, more);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = common::http2_client::<Channel<Bytes>>(server.addr).await;
        let mut open = Vec::new();
        for i in 0..4 {
            // Each call stays open (its body too) once its first echo came.
            let (mut to_server, body) = Channel::new(1);
            let request = grpc_request(server.addr, "/echo.Echo/Chat", body);
            let said = message(&format!("call {i}"));
            to_server.send_data(said.clone()).await.unwrap();
            let wait = Duration::from_secs(10);
            let mut response = tokio::time::timeout(wait, client.send_request(request))
                .await
                .expect("the call was answered while the others stay open")
                .unwrap();
            let mut got = Vec::new();
            let what = "the echo while the other calls stay open";
            common::read_data_until(response.body_mut(), &mut got, said.len(), what).await;
            assert_eq!(got, said);
            open.push((to_server, response));
        }
        // Two calls on each of two connections.
        assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
        for (to_server, mut response) in open {
            drop(to_server);
            let mut trailers = None;
            while let Some(frame) = response.body_mut().frame().await {
                if let Ok(t) = frame.unwrap().into_trailers() {
                    trailers = Some(t);
                }
            }
            assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
        }
    });
}

/// Requests that waited for a connection being opened fail with it when it
/// cannot be opened, rather than each try again after it: a server whose
/// TLS handshake never comes is connected to once for a burst of calls.
#[test]
fn requests_waiting_for_a_connection_that_fails_fail_with_it() {
    let (runtime, listener, addr) = listening();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    runtime.spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            // Never answers the ClientHello.
            held.push(stream);
        }
    });
    let (_dir, server) = start_proxy(
        &format!("https://127.0.0.1:{}", addr.port()),
        "connect_timeout = 1",
    );
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || common::Connection::open(addr).get("/call").status)
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().unwrap(), 502);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    drop(runtime);
}
