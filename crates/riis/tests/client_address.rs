//! How riis learns the client's address behind proxies, over real sockets.
//!
//! - The PROXY protocol: a connection to an address listed in
//!   `[proxy_protocol]` starts with a version 1 or 2 header, whose client
//!   address every module sees as the remote address (server variables,
//!   IpRestriction, connection limits per client), over HTTP/1.1, HTTP/2
//!   and TLS; a connection without a valid header, or from a peer that is
//!   not trusted, is closed without an answer.
//! - `ForwardedFor`: a request from a trusted proxy takes its client from
//!   `X-Forwarded-For` (or the header configured), read from the right.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{Capture, InProcessServer, TempDir};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification as N, RequestNotificationStatus as Status, RequestNotifications,
    ServerInfo,
};

/// A handler that answers with the connection's addresses as modules see
/// them.
struct Addresses;
impl HttpModule for Addresses {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let var = |name: &str| ctx.server_variable(name).unwrap_or_default().into_owned();
        let body = format!(
            "{} {} {} {}",
            var("REMOTE_ADDR"),
            var("REMOTE_PORT"),
            var("LOCAL_ADDR"),
            var("HTTPS")
        );
        ctx.response_mut().write(body);
        Status::FinishRequest
    }
}

fn register_addresses(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Addresses,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("Addresses", register_addresses)];

/// A server whose one site answers with [`Addresses`] and denies
/// `203.0.113.0/24` under `/private`, with `more` above the site.
fn start(more: &str, site: &str) -> InProcessServer {
    let text = format!(
        r#"
{more}
# IpRestriction first: ForwardedFor's PreBeginRequest comes before any
# BeginRequest module, wherever the list puts it.
[[modules]]
name = "IpRestriction"
[[modules]]
name = "ForwardedFor"
[[modules]]
name = "Addresses"

[[handlers]]
name = "Addresses"
path = "*"
modules = ["Addresses"]

[[sites]]
name = "s"
root = 'ROOT'
{site}

[[sites.locations]]
path = "/private"
ip_security = {{ rules = [{{ address = "203.0.113.0/24", allowed = false }}] }}
"#
    );
    InProcessServer::start(&text, TEST_MODULES)
}

fn plain(trusted: &str) -> InProcessServer {
    start(
        &format!("[proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\ntrusted = [{trusted}]\n"),
        "bindings = [\"127.0.0.1:0\"]",
    )
}

const V1_CLIENT: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n";

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `GET path` on `stream` (keeping it open) and reads the answer:
/// its status and body.
fn get(stream: &mut impl ReadWrite, path: &str) -> (u16, String) {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
        .unwrap();
    read_response(stream)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_response(stream: &mut impl Read) -> (u16, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(n, 1, "the connection closed in the head: {got:?}");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Whether the server closed `stream` without writing a byte.
fn closed_without_answer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn version_1_names_the_client_for_every_request_of_the_connection() {
    let server = plain("");
    let mut stream = connect(server.addr);
    stream.write_all(V1_CLIENT).unwrap();
    let local = server.addr.ip();
    assert_eq!(
        get(&mut stream, "/"),
        (200, format!("203.0.113.7 51000 {local} off"))
    );
    // Kept alive: the next request is the same client's.
    assert_eq!(
        get(&mut stream, "/again"),
        (200, format!("203.0.113.7 51000 {local} off"))
    );
    // IpRestriction judges the client, not the balancer.
    assert_eq!(get(&mut stream, "/private/a").0, 403);

    // The header and the request in one write, as balancers send them.
    let mut stream = connect(server.addr);
    stream
        .write_all(&[V1_CLIENT, b"GET /private/a HTTP/1.1\r\nHost: a\r\n\r\n"].concat())
        .unwrap();
    assert_eq!(read_response(&mut stream).0, 403);

    // The balancer's own connection (`UNKNOWN`): the peer is the client.
    let mut stream = connect(server.addr);
    stream.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(get(&mut stream, "/private/a").0, 200);
}

#[test]
fn version_2_names_the_client_and_local_names_none() {
    use ppp::v2::{Builder, Command, Protocol, Type, Version};
    let server = plain("\"127.0.0.0/8\"");
    let addresses: ppp::v2::Addresses = (
        "[2001:db8::7]:4711".parse::<SocketAddr>().unwrap(),
        "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
    )
        .into();
    let header =
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
            .write_tlv(Type::UniqueId, b"connection-42")
            .unwrap()
            .build()
            .unwrap();
    let mut stream = connect(server.addr);
    stream.write_all(&header).unwrap();
    let (status, body) = get(&mut stream, "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("2001:db8::7 4711 "), "{body}");

    // TLS ended at the balancer, which says so: the request is HTTPS.
    let ssl = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .write_tlv(Type::SSL, &[0x01, 0, 0, 0, 0])
        .unwrap()
        .build()
        .unwrap();
    let mut stream = connect(server.addr);
    stream.write_all(&ssl).unwrap();
    let (status, body) = get(&mut stream, "/");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("2001:db8::7 4711 ") && body.ends_with(" on"),
        "{body}"
    );

    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    let mut stream = connect(server.addr);
    stream.write_all(&local).unwrap();
    let (status, body) = get(&mut stream, "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("127.0.0.1 "), "{body}");
}

#[test]
fn a_connection_without_a_header_or_from_an_untrusted_peer_is_closed() {
    let server = plain("");
    // A client that talks HTTP at once, as one that bypassed the balancer.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(closed_without_answer(&mut stream));
    // A header that is not one.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"PROXY TCP4 203.0.113.7 elsewhere 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(closed_without_answer(&mut stream));
    // The server goes on.
    let mut stream = connect(server.addr);
    stream.write_all(V1_CLIENT).unwrap();
    assert_eq!(get(&mut stream, "/").0, 200);

    // Only the balancers in `trusted` may connect, header or not.
    let server = plain("\"10.0.0.0/8\", \"192.0.2.1\"");
    let mut stream = connect(server.addr);
    // The server may close before the request is written (it judges the
    // peer on accepting): a write refused then is the answer too.
    let mut request = V1_CLIENT.to_vec();
    request.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    match stream.write_all(&request) {
        Ok(()) => assert!(closed_without_answer(&mut stream)),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
}

#[test]
fn a_header_that_never_ends_is_given_up_after_header_read() {
    let server = start(
        "[timeouts]\nheader_read = 1\n[proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\n",
        "bindings = [\"127.0.0.1:0\"]",
    );
    let mut stream = connect(server.addr);
    stream.write_all(b"PROXY TCP4 203.0.113.7").unwrap();
    let started = std::time::Instant::now();
    assert!(closed_without_answer(&mut stream));
    assert!(started.elapsed() < Duration::from_secs(9));
}

#[test]
fn connections_per_client_count_the_client_the_header_names() {
    let server = start(
        "[limits]\nmax_connections_per_client = 1\n[proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\n",
        "bindings = [\"127.0.0.1:0\"]",
    );
    let mut first = connect(server.addr);
    first.write_all(V1_CLIENT).unwrap();
    assert_eq!(get(&mut first, "/").0, 200);
    // The same client again: over its limit.
    let mut second = connect(server.addr);
    second.write_all(V1_CLIENT).unwrap();
    let mut refused = String::new();
    second.read_to_string(&mut refused).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    // Another client behind the same balancer is not.
    let mut other = connect(server.addr);
    other
        .write_all(b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 80\r\n")
        .unwrap();
    let (status, body) = get(&mut other, "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("198.51.100.9 40000 "), "{body}");
}

#[test]
fn http2_with_prior_knowledge_follows_the_header() {
    let server = plain("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(V1_CLIENT).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::builder()
            .uri(format!("http://{}/", server.addr))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"203.0.113.7 51000 "), "{body:?}");
    });
}

#[test]
fn tls_follows_the_header() {
    let certs = TempDir::new("proxy-tls");
    let c = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let cert = certs.write("a.crt", c.cert.pem());
    let key = certs.write("a.key", c.signing_key.serialize_pem());
    let server = start(
        "[proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\n",
        &format!(
            "bindings = [\"https://127.0.0.1:0\"]\ncertificate = '{}'\ncertificate_key = '{}'",
            cert.display(),
            key.display()
        ),
    );
    let mut tcp = connect(server.addr);
    tcp.write_all(V1_CLIENT).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(Capture::default()))
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("a.test").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let (status, body) = get(&mut tls, "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("203.0.113.7 51000 "), "{body}");
    assert!(body.ends_with(" on"), "{body}");
    assert_eq!(get(&mut tls, "/private/a").0, 403);
}

/// A server with `ForwardedFor` configured by `section` (a
/// `forwarded_for = …` line, or none for the defaults).
fn behind_proxy(section: &str) -> InProcessServer {
    start(section, "bindings = [\"127.0.0.1:0\"]")
}

/// `GET /` (or `path`) from the test's loopback address with the header
/// lines `headers`: the status and what `Addresses` answered.
fn get_with(server: &InProcessServer, path: &str, headers: &str) -> (u16, String) {
    let mut stream = connect(server.addr);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n{headers}\r\n").as_bytes())
        .unwrap();
    read_response(&mut stream)
}

#[test]
fn forwarded_for_believes_a_trusted_proxy_from_the_right() {
    // By default a proxy on the same machine is trusted.
    let server = behind_proxy("");
    let local = server.addr.ip();
    assert_eq!(
        get_with(&server, "/", "X-Forwarded-For: 203.0.113.7\r\n"),
        (200, format!("203.0.113.7 0 {local} off"))
    );
    // The last entry is what the proxy wrote; the first is the client's
    // own claim.
    assert_eq!(
        get_with(&server, "/", "X-Forwarded-For: 10.9.9.9, 203.0.113.7\r\n").1,
        format!("203.0.113.7 0 {local} off")
    );
    assert_eq!(
        get_with(
            &server,
            "/",
            "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: [2001:db8::7]:4711\r\n"
        )
        .1,
        format!("2001:db8::7 4711 {local} off")
    );
    // IpRestriction, after it, judges the client.
    assert_eq!(
        get_with(&server, "/private/a", "X-Forwarded-For: 203.0.113.7\r\n").0,
        403
    );
    assert_eq!(get_with(&server, "/private/a", "").0, 200);
    // Empty entries are skipped, and spaces separate as commas do.
    assert_eq!(
        get_with(&server, "/", "X-Forwarded-For: 10.9.9.9 203.0.113.7,, \r\n").1,
        format!("203.0.113.7 0 {local} off")
    );
    // A last entry that is not an address leaves the peer.
    let (_, body) = get_with(&server, "/", "X-Forwarded-For: 203.0.113.7, unknown\r\n");
    assert!(
        body.starts_with("127.0.0.1 ") && !body.starts_with("127.0.0.1 0 "),
        "{body}"
    );
}

#[test]
fn forwarded_for_ignores_an_untrusted_peer_and_follows_its_settings() {
    // The test's loopback peer is not among these proxies.
    let server = behind_proxy("forwarded_for = { trusted_proxies = [\"10.0.0.0/8\"] }");
    let (_, body) = get_with(&server, "/private/a", "X-Forwarded-For: 203.0.113.7\r\n");
    assert!(body.starts_with("127.0.0.1 "), "{body}");

    // Recursive: trusted entries are passed over to the first that is not.
    let server = behind_proxy(
        "forwarded_for = { trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"], recursive = true }",
    );
    let (_, body) = get_with(
        &server,
        "/",
        "X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.0.0.2\r\n",
    );
    assert!(body.starts_with("203.0.113.7 0 "), "{body}");
    // Not recursive: the last entry, trusted or not.
    let server =
        behind_proxy("forwarded_for = { trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"] }");
    let (_, body) = get_with(
        &server,
        "/",
        "X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.0.0.2\r\n",
    );
    assert!(body.starts_with("10.0.0.2 0 "), "{body}");

    // Another header.
    let server = behind_proxy("forwarded_for = { header = \"X-Real-IP\" }");
    let (_, body) = get_with(
        &server,
        "/",
        "X-Forwarded-For: 198.51.100.1\r\nX-Real-IP: 203.0.113.9\r\n",
    );
    assert!(body.starts_with("203.0.113.9 0 "), "{body}");
}

#[test]
fn forwarded_for_settings_are_checked() {
    let dir = TempDir::new("forwarded-for-config");
    dir.write("www/a.txt", "a");
    let config = dir.write(
        "riis.toml",
        "[[modules]]\nname = \"ForwardedFor\"\n\n[[sites]]\nname = \"s\"\nroot = \"www\"\n\
         bindings = [\"127.0.0.1:0\"]\n\
         forwarded_for = { trusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"] }\n",
    );
    let out = common::riis_command("check-config", &config);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("riis.toml:8")
            && said.contains("sites[0].forwarded_for.trusted_proxies[1]")
            && said.contains("`proxy.internal` is not an IP address or network"),
        "{said}"
    );
    // RFC 7239's header has no address entries to read.
    std::fs::write(
        &config,
        "[[modules]]\nname = \"ForwardedFor\"\n[forwarded_for]\nheader = \"Forwarded\"\n\
         [[sites]]\nname = \"s\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let out = common::riis_command("check-config", &config);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("riis.toml:4") && said.contains("syntax of its own"),
        "{said}"
    );
}
