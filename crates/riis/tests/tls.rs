//! TLS over real sockets: SNI picks each site's certificate (generated here),
//! ALPN negotiates h2 or http/1.1, a failed handshake harms nobody, and a
//! replaced certificate file is served without a restart.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Capture, RunningBinary, TempDir};
use rustls::pki_types::ServerName;

/// A self-signed certificate for `name`: (certificate PEM, key PEM, DER).
fn certificate(name: &str) -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

struct TlsSite {
    _dir: TempDir,
    server: RunningBinary,
    a_der: Vec<u8>,
    b_der: Vec<u8>,
    c_der: Vec<u8>,
    dir_path: std::path::PathBuf,
}

fn two_sites() -> TlsSite {
    let dir = TempDir::new("tls");
    let (a_cert, a_key, a_der) = certificate("a.test");
    let (b_cert, b_key, b_der) = certificate("b.test");
    let (c_cert, c_key, c_der) = certificate("*.c.test");
    dir.write("c.crt", c_cert);
    dir.write("c.key", c_key);
    dir.write("c/index.txt", "site c");
    dir.write("a.crt", a_cert);
    dir.write("a.key", a_key);
    dir.write("b.crt", b_cert);
    dir.write("b.key", b_key);
    dir.write("a/index.txt", "site a");
    dir.write("b/index.txt", "site b");
    let config = dir.write(
        "riis.toml",
        r#"
[server]
certificate_check_interval = 1

[[sites]]
name = "A"
root = "a"
bindings = ["https://127.0.0.1:8443:a.test"]
certificate = "a.crt"
certificate_key = "a.key"
hsts = { max_age = 31536000, include_subdomains = true }

[[sites]]
name = "B"
root = "b"
bindings = ["https://127.0.0.1:8443:b.test"]
certificate = "b.crt"
certificate_key = "b.key"

[[sites]]
name = "C"
root = "c"
bindings = ["https://127.0.0.1:8443:*.c.test"]
certificate = "c.crt"
certificate_key = "c.key"
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    TlsSite {
        dir_path: dir.path().to_owned(),
        _dir: dir,
        server,
        a_der,
        b_der,
        c_der,
    }
}

/// Handshakes as `name` offering `alpn`; returns the certificate seen, the
/// protocol chosen and the connection.
fn connect(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> (
    Vec<u8>,
    Option<Vec<u8>>,
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) {
    let capture = Arc::new(Capture::default());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(capture.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let seen = capture.seen.lock().unwrap().clone().unwrap();
    let alpn = tls.conn.alpn_protocol().map(|p| p.to_vec());
    (seen, alpn, tls)
}

fn get_over(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    host: &str,
    path: &str,
) -> String {
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn sni_chooses_each_sites_certificate_and_site() {
    let t = two_sites();
    let (seen, alpn, mut tls) = connect(t.server.addr, "a.test", &[b"http/1.1"]);
    assert_eq!(seen, t.a_der, "a.test got another certificate");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let text = get_over(&mut tls, "a.test", "/index.txt");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("site a"), "{text}");
    // Site A sets hsts; B does not.
    assert!(
        text.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains\r\n"),
        "{text}"
    );

    let (seen, _, mut tls) = connect(t.server.addr, "b.test", &[b"http/1.1"]);
    assert_eq!(seen, t.b_der, "b.test got another certificate");
    let text = get_over(&mut tls, "b.test", "/index.txt");
    assert!(text.ends_with("site b"));
    assert!(!text
        .to_ascii_lowercase()
        .contains("strict-transport-security"));

    // An unknown name gets the default (the first certificate).
    let (seen, _, _) = connect(t.server.addr, "other.test", &[]);
    assert_eq!(seen, t.a_der);

    // A wildcard host's certificate answers the names below it, one label
    // deep or more, and its site serves them; the name itself is not
    // below it.
    for name in ["shop.c.test", "Eu.Shop.C.Test"] {
        let (seen, _, mut tls) = connect(t.server.addr, name, &[b"http/1.1"]);
        assert_eq!(seen, t.c_der, "{name} got another certificate");
        assert!(get_over(&mut tls, name, "/index.txt").ends_with("site c"));
    }
    let (seen, _, _) = connect(t.server.addr, "c.test", &[]);
    assert_eq!(seen, t.a_der);
}

/// `https://*:P` and `https://127.0.0.1:P` share one socket: a connection
/// to 127.0.0.1 is offered that binding's certificate and reaches its site;
/// one to any other address gets the wildcard's.
#[test]
fn an_address_binding_beside_a_tls_wildcard_offers_its_own_certificate() {
    let dir = TempDir::new("tls-shared");
    let (any_cert, any_key, any_der) = certificate("any.test");
    let (one_cert, one_key, one_der) = certificate("one.test");
    dir.write("any.crt", any_cert);
    dir.write("any.key", any_key);
    dir.write("one.crt", one_cert);
    dir.write("one.key", one_key);
    dir.write("any/index.txt", "site any");
    dir.write("one/index.txt", "site one");
    let port = common::free_port();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"
[[sites]]
name = "any"
root = "any"
bindings = ["https://*:{port}"]
certificate = "any.crt"
certificate_key = "any.key"

[[sites]]
name = "one"
root = "one"
bindings = ["https://127.0.0.1:{port}"]
certificate = "one.crt"
certificate_key = "one.key"
"#
        ),
    );
    let server = RunningBinary::start_as_configured(&["--config", config.to_str().unwrap()]);
    assert_eq!(server.addr, SocketAddr::from(([0, 0, 0, 0], port)));

    let (seen, _, mut tls) = connect(SocketAddr::from(([127, 0, 0, 1], port)), "x.test", &[]);
    assert_eq!(seen, one_der, "127.0.0.1 got another certificate");
    assert!(get_over(&mut tls, "x.test", "/index.txt").ends_with("site one"));

    let (seen, _, mut tls) = connect(SocketAddr::from(([127, 0, 0, 2], port)), "x.test", &[]);
    assert_eq!(seen, any_der, "127.0.0.2 got another certificate");
    assert!(get_over(&mut tls, "x.test", "/index.txt").ends_with("site any"));
}

#[test]
fn alpn_negotiates_http2() {
    let t = two_sites();
    let (_, alpn, tls) = connect(t.server.addr, "b.test", &[b"h2", b"http/1.1"]);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // Speak HTTP/2 on the negotiated connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    drop(tls);
    let addr = t.server.addr;
    let body = runtime.block_on(async move {
        use http_body_util::BodyExt;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture::default()))
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("b.test").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("https://b.test/index.txt")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(&body[..], b"site b");
}

#[test]
fn a_failed_handshake_is_logged_and_harmless() {
    let t = two_sites();
    let mut garbage = TcpStream::connect(t.server.addr).unwrap();
    // A handshake record with nothing a TLS server can read in it.
    garbage
        .write_all(b"\x16\x03\x01\x00\x05hello and more bytes")
        .unwrap();
    let mut sink = Vec::new();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = garbage.read_to_end(&mut sink);
    assert!(!sink.starts_with(b"HTTP/"), "{sink:?}");
    // The server still completes handshakes and serves.
    let (_, _, mut tls) = connect(t.server.addr, "a.test", &[b"http/1.1"]);
    assert!(get_over(&mut tls, "a.test", "/index.txt").ends_with("site a"));
}

/// `http://` typed for an `https://` site: the client reads a 400 that
/// says why (as from nginx or Caddy), not a connection closed without a
/// word, and the port goes on serving TLS.
#[test]
fn plain_http_to_a_tls_port_is_answered_400() {
    let t = two_sites();
    let mut plain = TcpStream::connect(t.server.addr).unwrap();
    plain
        .write_all(b"GET /index.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("expects HTTPS (TLS); the request came as plain HTTP\n"),
        "{answer}"
    );
    let (_, _, mut tls) = connect(t.server.addr, "a.test", &[b"http/1.1"]);
    assert!(get_over(&mut tls, "a.test", "/index.txt").ends_with("site a"));
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart() {
    let t = two_sites();
    let (cert, key, der) = certificate("a.test");
    assert_ne!(der, t.a_der);
    // Write the key first, then the certificate: a check between the two
    // finds a mismatched pair, keeps the old one, and tries again later.
    std::fs::write(t.dir_path.join("a.key"), key).unwrap();
    std::fs::write(t.dir_path.join("a.crt"), cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (seen, _, _) = connect(t.server.addr, "a.test", &[]);
        if seen == der {
            break;
        }
        assert_eq!(seen, t.a_der, "neither the old nor the new certificate");
        assert!(Instant::now() < deadline, "the new certificate never came");
        std::thread::sleep(Duration::from_millis(200));
    }
    // B is untouched.
    let (seen, _, _) = connect(t.server.addr, "b.test", &[]);
    assert_eq!(seen, t.b_der);
}

/// One site's broken pair (its key replaced by another's) keeps that
/// site's certificate as it was without holding back another site's
/// renewal on the same address.
#[test]
fn a_broken_pair_does_not_hold_back_another_sites_renewal() {
    let t = two_sites();
    let b_key = std::fs::read(t.dir_path.join("b.key")).unwrap();
    std::fs::write(t.dir_path.join("a.key"), b_key).unwrap();
    let (cert, key, der) = certificate("b.test");
    std::fs::write(t.dir_path.join("b.key"), key).unwrap();
    std::fs::write(t.dir_path.join("b.crt"), cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (seen, _, _) = connect(t.server.addr, "b.test", &[]);
        if seen == der {
            break;
        }
        assert_eq!(seen, t.b_der, "neither the old nor the new certificate");
        assert!(Instant::now() < deadline, "b's new certificate never came");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (seen, _, _) = connect(t.server.addr, "a.test", &[]);
    assert_eq!(seen, t.a_der, "a keeps its certificate");
}

#[test]
fn certificate_problems_are_configuration_errors() {
    let dir = TempDir::new("tls-config");
    dir.write("www/index.txt", "x");
    let (cert, _, _) = certificate("a.test");
    let (_, other_key, _) = certificate("a.test");
    dir.write("a.crt", cert);
    dir.write("wrong.key", other_key);
    dir.write("empty.crt", "not a certificate\n");
    nix::unistd::mkfifo(&dir.path().join("fifo.crt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A chain whose second certificate is not one.
    let (chain_cert, chain_key, _) = certificate("a.test");
    dir.write(
        "chain.crt",
        format!("{chain_cert}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    );
    dir.write("chain.key", chain_key);
    // The site's own certificate after its "intermediate".
    let (own_cert, own_key, _) = certificate("a.test");
    let (issuer_cert, _, _) = certificate("issuer.test");
    dir.write("reversed.crt", format!("{issuer_cert}{own_cert}"));
    dir.write("reversed.key", own_key);
    dir.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let cases = [
        (
            "certificate = \"a.crt\"\ncertificate_key = \"encrypted.key\"",
            "the key is encrypted, which riis does not read",
        ),
        (
            "certificate = \"chain.crt\"\ncertificate_key = \"chain.key\"",
            "certificate #2 does not parse",
        ),
        (
            "certificate = \"reversed.crt\"\ncertificate_key = \"reversed.key\"",
            "the private key belongs to certificate #2 of the file, not to the first",
        ),
        (
            "certificate = \"missing.crt\"\ncertificate_key = \"wrong.key\"",
            "cannot read",
        ),
        (
            "certificate = \"empty.crt\"\ncertificate_key = \"wrong.key\"",
            "holds no PEM certificate",
        ),
        (
            "certificate = \"a.crt\"\ncertificate_key = \"wrong.key\"",
            "do not make a usable certificate: the private key does not belong to the certificate",
        ),
        // Not files: a device and a FIFO are refused at once, not read
        // for ever or waited on.
        (
            "certificate = \"a.crt\"\ncertificate_key = \"/dev/zero\"",
            "not a regular file",
        ),
        (
            "certificate = \"fifo.crt\"\ncertificate_key = \"wrong.key\"",
            "not a regular file",
        ),
        ("", "an https binding needs the site's `certificate`"),
        ("certificate = \"a.crt\"", "needs its `certificate_key`"),
        ("hsts = { max_age = \"soon\" }\ncertificate = \"a.crt\"\ncertificate_key = \"wrong.key\"", "expected a whole number"),
    ];
    for (keys, expected) in cases {
        let config = dir.write(
            "riis.toml",
            format!(
                "[[sites]]\nname = \"A\"\nroot = \"www\"\nbindings = [\"https://127.0.0.1:0\"]\n{keys}\n"
            ),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keys}: accepted");
        assert!(stderr.contains("riis.toml:"), "{stderr}");
        assert!(
            stderr.contains(expected),
            "{keys}: expected `{expected}` in {stderr}"
        );
    }
    // Two sites on one address: the error names the one whose files fail.
    let (b_cert, b_key, _) = certificate("b.test");
    dir.write("b.crt", b_cert);
    dir.write("b.key", b_key);
    let config = dir.write(
        "riis.toml",
        "[[sites]]\nname = \"B\"\nroot = \"www\"\nbindings = [\"https://127.0.0.1:9444:b.test\"]\n\
         certificate = \"b.crt\"\ncertificate_key = \"b.key\"\n\
         [[sites]]\nname = \"A\"\nroot = \"www\"\nbindings = [\"https://127.0.0.1:9444:a.test\"]\n\
         certificate = \"a.crt\"\ncertificate_key = \"wrong.key\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The key is what does not match: its key is named.
    assert!(stderr.contains("sites[1].certificate_key"), "{stderr}");
    // Mixing TLS and plain HTTP on one address is refused.
    let config = dir.write(
        "riis.toml",
        "[[sites]]\nname = \"A\"\nroot = \"www\"\nbindings = [\"https://127.0.0.1:9443\", \"127.0.0.1:9443\"]\ncertificate = \"a.crt\"\ncertificate_key = \"wrong.key\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("both with and without TLS"));
}

/// An expired certificate loads (a renewal may be on its way, as nginx
/// has it) but is named in a warning: clients refuse it.
#[test]
fn an_expired_certificate_is_loaded_with_a_warning() {
    let dir = TempDir::new("tls-expired");
    dir.write("www/index.txt", "x");
    let mut params = rcgen::CertificateParams::new(vec!["old.test".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 2, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    dir.write("old.crt", cert.pem());
    dir.write("old.key", key.serialize_pem());
    let config = dir.write(
        "riis.toml",
        "[[sites]]\nname = \"A\"\nroot = \"www\"\nbindings = [\"https://127.0.0.1:9443\"]\ncertificate = \"old.crt\"\ncertificate_key = \"old.key\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the certificate has expired"), "{stderr}");
    assert!(stderr.contains("old.crt"), "{stderr}");
}

/// Reads one response with a `Content-Length` body from `tls`.
fn read_sized_response(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn a_large_response_reaches_a_slow_reader_whole_and_the_connection_goes_on() {
    let t = two_sites();
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.dir_path.join("a/big.bin"), &big).unwrap();
    let (_, _, mut tls) = connect(t.server.addr, "a.test", &[b"http/1.1"]);
    tls.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    // The server fills the socket and waits; the end of the response must
    // still come once the client reads.
    std::thread::sleep(Duration::from_millis(500));
    let (head, body) = read_sized_response(&mut tls);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == big, "the body differs from the file");
    std::thread::sleep(Duration::from_millis(100));
    tls.write_all(b"GET /index.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let (head, body) = read_sized_response(&mut tls);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"site a");
}

/// A client that ends its side of the connection after whole requests
/// gets every answer, whether it sent TLS's close_notify first or closed
/// TCP without it (many clients do; rustls reports that as a truncation,
/// which after whole requests it is not).
#[test]
fn a_client_that_half_closes_gets_every_answer_with_or_without_close_notify() {
    let site = two_sites();
    for round in 0..20 {
        let (_, _, mut tls) = connect(site.server.addr, "a.test", &[b"http/1.1"]);
        tls.write_all(&b"GET /index.txt HTTP/1.1\r\nHost: a.test\r\n\r\n".repeat(3))
            .unwrap();
        tls.flush().unwrap();
        if round % 2 == 1 {
            tls.conn.send_close_notify();
            while tls.conn.wants_write() {
                tls.conn.write_tls(&mut tls.sock).unwrap();
            }
        }
        tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("site a").count(), 3, "round {round}: {text}");
    }
}
