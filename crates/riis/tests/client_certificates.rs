//! Client certificates over real TLS connections: a site with
//! `client_certificate_ca` asks for one and verifies it, requests see it in
//! the `CERT_*` server variables, `SslAccess` answers 403.4 and 403.7 per
//! location, and a connection made for one site's policy is not used for
//! another's (421).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{Capture, InProcessServer, TempDir};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ServerInfo,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Answers every request that gets past authentication with the `CERT_*`
/// server variables, one per line.
struct CertEcho;

impl HttpModule for CertEcho {
    fn on_authorize_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let mut text = String::new();
        for name in [
            "CERT_FLAGS",
            "CERT_SUBJECT",
            "CERT_ISSUER",
            "CERT_SERIALNUMBER",
            "CERT_COOKIE",
            "HTTPS",
            "AUTH_USER",
            "AUTH_TYPE",
        ] {
            let value = ctx.server_variable(name).unwrap_or_default().into_owned();
            text.push_str(&format!("{name}={value}\n"));
        }
        ctx.response_mut().write(text);
        RequestNotificationStatus::FinishRequest
    }
}

fn register_cert_echo(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || CertEcho,
        RequestNotification::AuthorizeRequest.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("CertEcho", register_cert_echo)];

/// A CA, a client certificate it issued, a client certificate nobody
/// trusts, and server certificates for `a.test` and `b.test`, as files.
struct Pki {
    dir: TempDir,
    /// SHA-256 of the issued client certificate, hex.
    client_sha256: String,
    client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    rogue: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// The CA, to sign revocation lists with.
    ca: (rcgen::CertificateParams, rcgen::KeyPair),
}

impl Pki {
    /// A revocation list of the CA (PEM) naming `revoked` serial numbers,
    /// whose next update is at the end of `until_year`.
    fn crl(&self, revoked: &[&[u8]], until_year: i32) -> String {
        crl_of(&self.ca.0, &self.ca.1, revoked, until_year)
    }

    /// Site B, on `b.test` (same address as A), asking for no certificate.
    fn site_b(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "[[sites]]\nname = \"B\"\nroot = 'ROOT'\nbindings = [\"https://127.0.0.1:0:b.test\"]\n\
             certificate = \"{d}/b.test.crt\"\ncertificate_key = \"{d}/b.test.key\""
        )
    }

    /// Site A, on `a.test`, asking for client certificates of the CA.
    fn site_a(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "[[sites]]\nname = \"A\"\nroot = 'ROOT'\nbindings = [\"https://127.0.0.1:0:a.test\"]\n\
             certificate = \"{d}/a.test.crt\"\ncertificate_key = \"{d}/a.test.key\"\n\
             client_certificate_ca = \"{d}/clients-ca.pem\""
        )
    }
}

fn pki() -> Pki {
    let dir = TempDir::new("mtls");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test Client CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params.clone(), &ca_key);
    dir.write("clients-ca.pem", ca.pem());

    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Contoso, Ltd");
    dn.push(rcgen::DnType::CommonName, "alice");
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab]));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = params.signed_by(&client_key, &ca_issuer).unwrap();

    let rogue_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mallory");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let rogue = params.self_signed(&rogue_key).unwrap();

    for name in ["a.test", "b.test"] {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        dir.write(&format!("{name}.crt"), c.cert.pem());
        dir.write(&format!("{name}.key"), c.signing_key.serialize_pem());
    }
    let pair = |cert: &rcgen::Certificate, key: &rcgen::KeyPair| {
        (
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    };
    use sha2::Digest;
    Pki {
        client_sha256: sha2::Sha256::digest(client.der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        client: pair(&client, &client_key),
        rogue: pair(&rogue, &rogue_key),
        ca: (ca_params, ca_key),
        dir,
    }
}

/// A revocation list signed by the CA of `params` and `key`.
fn crl_of(
    params: &rcgen::CertificateParams,
    key: &rcgen::KeyPair,
    revoked: &[&[u8]],
    until_year: i32,
) -> String {
    let list = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(until_year, 12, 31),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    list.signed_by(&rcgen::Issuer::new(params.clone(), key))
        .unwrap()
        .pem()
        .unwrap()
}

/// Site A asks for client certificates on `a.test` and requires one under
/// `/private`; site B on `b.test` (same address) asks for none.
fn start(pki: &Pki) -> InProcessServer {
    let d = pki.dir.path().display();
    let text = format!(
        r#"
[[modules]]
name = "SslAccess"
[[modules]]
name = "CertEcho"

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test", "https://127.0.0.1:0:b.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{d}/clients-ca.pem"

[[sites.locations]]
path = "/private"
access = {{ require_client_certificate = true }}
"#
    );
    InProcessServer::start(&text, TEST_MODULES)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection as `name`, presenting `identity` if given; `Err` if the
/// handshake fails.
fn connect(
    addr: SocketAddr,
    name: &str,
    identity: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Tls, std::io::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(Capture::default()));
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One request on `tls` (kept alive); the response's status line and body.
fn get(tls: &mut Tls, host: &str, path: &str) -> std::io::Result<(String, String)> {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                let status = head.lines().next().unwrap_or("").to_owned();
                return Ok((status, body));
            }
        }
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn variable<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} missing from {body}"))
}

#[test]
fn a_verified_certificate_reaches_the_request_as_cert_variables() {
    let pki = pki();
    let server = start(&pki);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).expect("handshake");
    let (status, body) = get(&mut tls, "a.test", "/private/x").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "CERT_FLAGS"), "1");
    assert_eq!(
        variable(&body, "CERT_SUBJECT"),
        "O=\"Contoso, Ltd\", CN=alice"
    );
    assert_eq!(variable(&body, "CERT_ISSUER"), "CN=Test Client CA");
    assert_eq!(variable(&body, "CERT_SERIALNUMBER"), "01-ab");
    let cookie = variable(&body, "CERT_COOKIE");
    assert_eq!(cookie.len(), 64, "{cookie}");
    assert!(cookie.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(variable(&body, "HTTPS"), "on");
    // The same connection serves the next request with the same identity.
    let (status, again) = get(&mut tls, "a.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(again, body);
}

#[test]
fn a_location_requiring_a_certificate_answers_403_7_without_one() {
    let pki = pki();
    let server = start(&pki);
    let mut tls = connect(server.addr, "a.test", None).expect("a certificate is optional");
    let (status, _) = get(&mut tls, "a.test", "/private/x").unwrap();
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    // Outside the location, the request goes on, without a certificate.
    let (status, body) = get(&mut tls, "a.test", "/public").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(variable(&body, "CERT_FLAGS"), "0");
    assert_eq!(variable(&body, "CERT_SUBJECT"), "");
}

#[test]
fn a_certificate_from_an_untrusted_issuer_fails_the_handshake() {
    let pki = pki();
    let server = start(&pki);
    let outcome = connect(server.addr, "a.test", Some(&pki.rogue))
        .and_then(|mut tls| get(&mut tls, "a.test", "/").map(|_| ()));
    assert!(outcome.is_err(), "an untrusted certificate was accepted");
    // The server goes on serving.
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    assert_eq!(get(&mut tls, "a.test", "/").unwrap().0, "HTTP/1.1 200 OK");
}

#[test]
fn a_connection_made_for_another_sites_policy_is_misdirected() {
    let pki = pki();
    let site_a = pki.site_a();
    let text = format!(
        r#"
[[modules]]
name = "CertEcho"

{site_a}

{site_b}
"#,
        site_b = pki.site_b()
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    // Made for b.test (no certificate asked), then asked for a.test.
    let mut tls = connect(server.addr, "b.test", None).unwrap();
    let (status, body) = get(&mut tls, "b.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(variable(&body, "CERT_FLAGS"), "0");
    let (status, _) = get(&mut tls, "a.test", "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 421"), "{status}");
    // Made for a.test with a certificate, then asked for b.test.
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, _) = get(&mut tls, "b.test", "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 421"), "{status}");
    let (status, body) = get(&mut tls, "a.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(variable(&body, "CERT_FLAGS"), "1");
}

#[test]
fn plain_http_to_a_location_requiring_tls_answers_403_4() {
    let text = r#"
[[modules]]
name = "SslAccess"
[[modules]]
name = "CertEcho"

[[sites]]
name = "plain"
root = 'ROOT'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/secure"
access = { require_ssl = true }

[[sites.locations]]
path = "/certs"
access = { require_client_certificate = true }
"#;
    let server = InProcessServer::start(text, TEST_MODULES);
    for path in ["/secure/a", "/certs/a"] {
        let r = common::get(server.addr, path);
        assert_eq!(r.status, 403, "{path}");
    }
    let r = common::get(server.addr, "/open");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("HTTPS=off"), "{}", r.text());
}

#[test]
fn client_ca_problems_are_configuration_errors_naming_the_key() {
    let pki = pki();
    let d = pki.dir.path().display();
    pki.dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    pki.dir.write("empty.pem", "");
    // A user's certificate, an expired CA after a good one, a CA whose key
    // may not sign certificates, a PEM section cut short.
    let user = rcgen::generate_simple_self_signed(vec!["user.test".to_owned()]).unwrap();
    pki.dir.write("user.pem", user.cert.pem());
    let ca = |configure: &dyn Fn(&mut rcgen::CertificateParams)| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        configure(&mut params);
        params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    };
    let good = std::fs::read_to_string(pki.dir.path().join("clients-ca.pem")).unwrap();
    let expired = ca(&|p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    pki.dir.write("expired-ca.pem", format!("{good}{expired}"));
    pki.dir.write(
        "signs-nothing.pem",
        ca(&|p| p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature]),
    );
    let cut = good.replace("-----END CERTIFICATE-----\n", "");
    pki.dir.write("unterminated.pem", cut);
    let site = |binding: &str, ca: &str| {
        format!(
            "[[sites]]\nname = \"A\"\nroot = \"{d}\"\nbindings = [\"{binding}\"]\n\
             certificate = \"{d}/a.test.crt\"\ncertificate_key = \"{d}/a.test.key\"\n\
             client_certificate_ca = \"{ca}\"\n"
        )
    };
    let plain = format!(
        "[[sites]]\nname = \"A\"\nroot = \"{d}\"\nbindings = [\"127.0.0.1:9445\"]\n\
         client_certificate_ca = \"{d}/clients-ca.pem\"\n"
    );
    let cases = [
        (plain, "sites[0].client_certificate_ca", "https binding"),
        (
            site("https://127.0.0.1:9445", &format!("{d}/missing.pem")),
            "sites[0].client_certificate_ca",
            "cannot read",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/garbage.pem")),
            "sites[0].client_certificate_ca",
            "certificate #1 does not parse",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/user.pem")),
            "sites[0].client_certificate_ca",
            "certificate #1 is not a CA certificate",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/expired-ca.pem")),
            "sites[0].client_certificate_ca",
            "certificate #2 is not valid now",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/signs-nothing.pem")),
            "sites[0].client_certificate_ca",
            "lacks keyCertSign",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/unterminated.pem")),
            "sites[0].client_certificate_ca",
            "has no end marker",
        ),
        (
            site("https://127.0.0.1:9445", &format!("{d}/empty.pem")),
            "sites[0].client_certificate_ca",
            "holds no PEM certificate",
        ),
    ];
    for (text, key, message) in cases {
        assert_refused(&pki.dir, &text, key, message);
    }
    let good = site("https://127.0.0.1:9445", &format!("{d}/clients-ca.pem"));
    check_config(&pki.dir, &good).unwrap();
}

/// `riis check-config` on `text`, written to `riis.toml` in `dir`: `Ok`, or
/// the error it printed.
fn check_config(dir: &TempDir, text: &str) -> Result<(), String> {
    let config = dir.write("riis.toml", text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr)
    }
}

/// `text` is refused with an error naming the file, `key` and `message`.
fn assert_refused(dir: &TempDir, text: &str, key: &str, message: &str) {
    let error = check_config(dir, text).expect_err(text);
    assert!(error.contains("riis.toml:"), "{error}");
    assert!(error.contains(key), "expected `{key}` in {error}");
    assert!(error.contains(message), "expected `{message}` in {error}");
}

/// Certificates log clients on: one-to-one by fingerprint, many-to-one by
/// the names' attributes, and a deny mapping answers 403.12; the mapped
/// user is what UrlAuthorization checks.
#[test]
fn certificates_map_to_users_that_authorization_checks() {
    let pki = pki();
    let site_a = pki.site_a();
    let site = |mappings: &str| {
        format!(
            r#"
[[modules]]
name = "SslAccess"
[[modules]]
name = "ClientCertificateMappingAuthentication"
[[modules]]
name = "AnonymousAuthentication"
[[modules]]
name = "UrlAuthorization"
[[modules]]
name = "CertEcho"

{site_a}

[sites.client_certificate_mapping]
enabled = true
{mappings}

[[sites.locations]]
path = "/admin"
authorization = {{ rules = [{{ access = "Allow", users = "alice" }}] }}

[[sites.locations]]
path = "/staff"
authorization = {{ rules = [{{ access = "Allow", roles = "staff" }}] }}
"#
        )
    };
    // Many-to-one: Contoso's certificates are `contoso`, in role staff.
    let many = r#"
[[sites.client_certificate_mapping.many_to_one]]
name = "contoso"
user = "contoso"
roles = ["staff"]
rules = [
  { field = "subject", sub_field = "O", pattern = "contoso*", case_sensitive = false },
  { field = "issuer", sub_field = "CN", pattern = "Test Client CA" },
]
"#;
    let server = InProcessServer::start(&site(many), TEST_MODULES);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, body) = get(&mut tls, "a.test", "/staff/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "AUTH_USER"), "contoso");
    assert_eq!(variable(&body, "AUTH_TYPE"), "SSL/PCT");
    let (status, _) = get(&mut tls, "a.test", "/admin/").unwrap();
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    // Without a certificate: anonymous, refused where a user is needed.
    let mut anonymous = connect(server.addr, "a.test", None).unwrap();
    let (status, body) = get(&mut anonymous, "a.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(variable(&body, "AUTH_USER"), "");
    assert!(get(&mut anonymous, "a.test", "/staff/")
        .unwrap()
        .0
        .starts_with("HTTP/1.1 401"));
    server.stop();

    // One-to-one (written with colons and in upper case) before the
    // many-to-one deny that would match the same certificate.
    let colons: Vec<String> = pki
        .client_sha256
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mappings = format!(
        r#"one_to_one = [{{ sha256 = "{}", user = "alice" }}]
[[sites.client_certificate_mapping.many_to_one]]
name = "everyone at contoso"
permission = "deny"
rules = [{{ field = "subject", sub_field = "O", pattern = "Contoso*" }}]
"#,
        colons.join(":")
    );
    let server = InProcessServer::start(&site(&mappings), TEST_MODULES);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, body) = get(&mut tls, "a.test", "/admin/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "AUTH_USER"), "alice");
    server.stop();

    // The deny mapping alone: 403.
    let deny = r#"
[[sites.client_certificate_mapping.many_to_one]]
name = "everyone at contoso"
permission = "deny"
rules = [{ field = "subject", sub_field = "O", pattern = "Contoso*" }]
"#;
    let server = InProcessServer::start(&site(deny), TEST_MODULES);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, _) = get(&mut tls, "a.test", "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    server.stop();

    // A deny refuses the certificate even when BasicAuthentication, listed
    // first (the same priority), logged a user on with a good password.
    let with_basic = site(deny).replacen(
        "[[modules]]\nname = \"ClientCertificateMappingAuthentication\"",
        "[[modules]]\nname = \"BasicAuthentication\"\n\
         [[modules]]\nname = \"ClientCertificateMappingAuthentication\"",
        1,
    ) + "\n[basic_authentication]\nenabled = true\nuser_file = \"users\"\n";
    let server = InProcessServer::start(&with_basic, TEST_MODULES);
    // `openssl passwd -6 -salt saltsalt secret`
    std::fs::write(
        server.dir().join("users"),
        "bob:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n",
    )
    .unwrap();
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let authorization = "Authorization: Basic Ym9iOnNlY3JldA==";
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: a.test\r\n{authorization}\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = [0u8; 64];
    let n = tls.read(&mut answer).unwrap();
    let status = String::from_utf8_lossy(&answer[..n]);
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    // Without the certificate the same credentials log bob on.
    let mut plain = connect(server.addr, "a.test", None).unwrap();
    plain
        .write_all(format!("GET / HTTP/1.1\r\nHost: a.test\r\n{authorization}\r\n\r\n").as_bytes())
        .unwrap();
    let n = plain.read(&mut answer).unwrap();
    let status = String::from_utf8_lossy(&answer[..n]);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// An IIS-style C++ module (`examples/native/cpp/client_certificate.cpp`,
/// compiled unchanged) reads the certificate with
/// `IHttpRequest::GetClientCertificate`, as it would in IIS.
#[test]
fn a_cpp_module_reads_the_certificate_with_get_client_certificate() {
    let pki = pki();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/native/cpp/client_certificate.cpp");
    let library = pki.dir.path().join("libcert.so");
    let Some(()) = common::compile_shared("g++", &[&source], &library, &["-std=c++11"]) else {
        return;
    };
    let d = pki.dir.path().display();
    let text = format!(
        r#"
[[global_modules]]
name = "CppCertificate"
image = "{d}/libcert.so"

[[modules]]
name = "CppCertificate"

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test", "https://127.0.0.1:0:b.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{d}/clients-ca.pem"
"#
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let der = pki.client.0[0].as_ref();
    let sum = der.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    let head: String = der[..8].iter().map(|b| format!("{b:02x}")).collect();

    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, body) = get(&mut tls, "a.test", "/cpp/cert").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "negotiated"), "1");
    assert_eq!(variable(&body, "present"), "1");
    assert_eq!(variable(&body, "size"), der.len().to_string());
    assert_eq!(variable(&body, "sum"), format!("{sum:08x}"));
    assert_eq!(variable(&body, "der"), head);
    assert_eq!(variable(&body, "subject"), "O=\"Contoso, Ltd\", CN=alice");
    assert_eq!(variable(&body, "renegotiate"), "ok");

    let mut tls = connect(server.addr, "a.test", None).unwrap();
    let (_, body) = get(&mut tls, "a.test", "/cpp/cert").unwrap();
    assert_eq!(variable(&body, "negotiated"), "1");
    assert_eq!(variable(&body, "present"), "0");
    assert_eq!(variable(&body, "size"), "0");
    assert_eq!(variable(&body, "der"), "");
    server.stop();

    // A site that asks for no certificate: not negotiated, and
    // NegotiateClientCertificate says it cannot (ERROR_NOT_SUPPORTED).
    let plain = text.replace(
        &format!("client_certificate_ca = \"{d}/clients-ca.pem\"\n"),
        "",
    );
    let server = InProcessServer::start(&plain, TEST_MODULES);
    let mut tls = connect(server.addr, "a.test", None).unwrap();
    let (_, body) = get(&mut tls, "a.test", "/cpp/cert").unwrap();
    assert_eq!(variable(&body, "negotiated"), "0");
    assert_eq!(variable(&body, "present"), "0");
    assert_eq!(variable(&body, "renegotiate"), "80070032");
}

/// HttpLogging's `var(NAME)` fields log server variables: here who
/// presented which certificate.
#[test]
fn the_access_log_names_the_certificate() {
    let pki = pki();
    let d = pki.dir.path().display();
    let site_a = pki.site_a();
    let text = format!(
        r#"
[[modules]]
name = "HttpLogging"
[[modules]]
name = "CertEcho"

[http_logging]
directory = "{d}/logs"
fields = ["cs-uri-stem", "var(CERT_SUBJECT)", "var(cert_serialnumber)", "sc-status"]

{site_a}
"#
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    assert_eq!(
        get(&mut tls, "a.test", "/with").unwrap().0,
        "HTTP/1.1 200 OK"
    );
    let mut tls = connect(server.addr, "a.test", None).unwrap();
    assert_eq!(
        get(&mut tls, "a.test", "/without").unwrap().0,
        "HTTP/1.1 200 OK"
    );
    server.stop();
    let folder = pki.dir.path().join("logs/W3SVC1");
    let log: String = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        log.contains("#Fields: cs-uri-stem var(CERT_SUBJECT) var(CERT_SERIALNUMBER) sc-status\n"),
        "{log}"
    );
    assert!(
        log.contains("/with O=\"Contoso,+Ltd\",+CN=alice 01-ab 200\n"),
        "{log}"
    );
    assert!(log.contains("/without - - 200\n"), "{log}");
}

/// A client chain of `depth` intermediates under a new root (written to
/// `root.pem` in `dir`): the leaf and its intermediates, leaf first.
fn chain(dir: &TempDir, depth: usize) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_params = |name: String| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p
    };
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root_params = ca_params("Deep Root".to_owned());
    let root = root_params.clone().self_signed(&root_key).unwrap();
    dir.write("root.pem", root.pem());
    let mut issuer_params = root_params;
    let mut issuer_key = root_key;
    let mut intermediates = Vec::new();
    for i in 0..depth {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = ca_params(format!("Intermediate {i}"));
        let issuer = rcgen::Issuer::new(issuer_params, &issuer_key);
        let cert = params.clone().signed_by(&key, &issuer).unwrap();
        intermediates.push(cert.der().clone());
        issuer_params = params;
        issuer_key = key;
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "deep");
    let issuer = rcgen::Issuer::new(issuer_params, &issuer_key);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let mut certs = vec![leaf.der().clone()];
    certs.extend(intermediates.into_iter().rev());
    (certs, PrivateKeyDer::try_from(key.serialize_der()).unwrap())
}

/// A client may send a few intermediate certificates, not a pile of them
/// for the verifier to try paths through.
#[test]
fn long_client_chains_are_refused_before_any_path_is_built() {
    let pki = pki();
    for (depth, accepted) in [
        (2, true),
        (riis_server::tls::MAX_CLIENT_INTERMEDIATES + 1, false),
    ] {
        let dir = TempDir::new("deep");
        let identity = chain(&dir, depth);
        let d = pki.dir.path().display();
        let root = dir.path().join("root.pem");
        let text = format!(
            r#"
[[modules]]
name = "CertEcho"

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{}"
"#,
            root.display()
        );
        let server = InProcessServer::start(&text, TEST_MODULES);
        let outcome = connect(server.addr, "a.test", Some(&identity))
            .and_then(|mut tls| get(&mut tls, "a.test", "/"));
        match outcome {
            Ok((status, body)) => {
                assert!(accepted, "{depth} intermediates were accepted");
                assert_eq!(status, "HTTP/1.1 200 OK");
                assert_eq!(variable(&body, "CERT_SUBJECT"), "CN=deep");
            }
            Err(e) => assert!(!accepted, "{depth} intermediates were refused: {e}"),
        }
    }
}

/// CGI programs (and FastCGI applications) get the certificate as IIS's
/// FastCGI passes it, in the CERT_* variables.
#[test]
fn a_cgi_program_gets_the_cert_variables() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pki();
    let site_a = pki.site_a();
    let text = format!(
        r#"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

{site_a}
"#
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let script = server.dir().join("env.cgi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         echo \"CERT_FLAGS=${CERT_FLAGS-unset}\"\n\
         echo \"CERT_SUBJECT=${CERT_SUBJECT-unset}\"\n\
         echo \"CERT_SERIALNUMBER=${CERT_SERIALNUMBER-unset}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, body) = get(&mut tls, "a.test", "/env.cgi").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "CERT_FLAGS"), "1");
    assert_eq!(
        variable(&body, "CERT_SUBJECT"),
        "O=\"Contoso, Ltd\", CN=alice"
    );
    assert_eq!(variable(&body, "CERT_SERIALNUMBER"), "01-ab");
    let mut tls = connect(server.addr, "a.test", None).unwrap();
    let (_, body) = get(&mut tls, "a.test", "/env.cgi").unwrap();
    assert_eq!(variable(&body, "CERT_FLAGS"), "unset");
}

/// Over HTTP/2 (ALPN h2) the certificate reaches every stream, and a
/// stream for another site's host name on the same connection (a browser
/// coalescing connections) gets 421.
#[test]
fn http2_streams_see_the_certificate_and_coalesced_hosts_get_421() {
    let pki = pki();
    let site_a = pki.site_a();
    let text = format!(
        r#"
[[modules]]
name = "CertEcho"

{site_a}

{site_b}
"#,
        site_b = pki.site_b()
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let addr = server.addr;
    let identity = (pki.client.0.clone(), pki.client.1.clone_key());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = runtime.block_on(async move {
        use http_body_util::BodyExt;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture::default()))
        .with_client_auth_cert(identity.0, identity.1)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut answers = Vec::new();
        for uri in [
            "https://a.test/one",
            "https://a.test/two",
            "https://b.test/",
        ] {
            let req = http::Request::get(uri)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            answers.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        answers
    });
    for (status, body) in &answers[..2] {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            variable(body, "CERT_SUBJECT"),
            "O=\"Contoso, Ltd\", CN=alice"
        );
    }
    assert_eq!(answers[2].0, 421, "{}", answers[2].1);
}

/// A replaced `client_certificate_ca` file is loaded without a restart
/// (`certificate_check_interval`): the new CA's certificates get in, the
/// old one's no longer do.
#[test]
fn a_replaced_client_ca_file_is_used_without_a_restart() {
    let pki = pki();
    let other = TempDir::new("mtls-other");
    let other_identity = chain(&other, 0);
    let d = pki.dir.path().display();
    let ca = pki.dir.path().join("live-ca.pem");
    std::fs::copy(pki.dir.path().join("clients-ca.pem"), &ca).unwrap();
    let text = format!(
        r#"
[server]
certificate_check_interval = 1

[[modules]]
name = "CertEcho"

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{}"
"#,
        ca.display()
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let works = |identity| {
        connect(server.addr, "a.test", Some(identity))
            .and_then(|mut tls| get(&mut tls, "a.test", "/"))
            .is_ok_and(|(status, _)| status == "HTTP/1.1 200 OK")
    };
    assert!(works(&pki.client));
    assert!(!works(&other_identity));
    // The other root replaces the file (a new name, renamed over it, as
    // deployment tools write files).
    let next = pki.dir.path().join("live-ca.pem.new");
    std::fs::copy(other.path().join("root.pem"), &next).unwrap();
    std::fs::rename(&next, &ca).unwrap();
    let waited = std::time::Instant::now();
    while !works(&other_identity) {
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "the new CA file was not loaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!works(&pki.client));
}

/// Alice's serial number (`pki`).
const ALICE: &[u8] = &[0x01, 0xab];

/// Site A checks client certificates against `client_certificate_crl` as
/// well: a revoked one fails the handshake, and a replaced list is used
/// without a restart. A connection verified under site B's policy (the
/// same CA, no list) is not used for site A (421).
#[test]
fn a_revoked_certificate_fails_the_handshake_and_new_lists_load_live() {
    let pki = pki();
    let d = pki.dir.path().display();
    let crl = pki.dir.write("live.crl", pki.crl(&[&[0x77]], 2099));
    let text = format!(
        r#"
[server]
certificate_check_interval = 1

[[modules]]
name = "CertEcho"

{site_a}
client_certificate_crl = "{crl}"

[[sites]]
name = "B"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:b.test"]
certificate = "{d}/b.test.crt"
certificate_key = "{d}/b.test.key"
client_certificate_ca = "{d}/clients-ca.pem"
"#,
        site_a = pki.site_a(),
        crl = crl.display()
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    let works = |name: &str| {
        connect(server.addr, name, Some(&pki.client))
            .and_then(|mut tls| get(&mut tls, name, "/"))
            .is_ok_and(|(status, _)| status == "HTTP/1.1 200 OK")
    };
    assert!(works("a.test"), "alice is not on the list");
    assert!(connect(server.addr, "a.test", Some(&pki.rogue))
        .and_then(|mut tls| get(&mut tls, "a.test", "/"))
        .is_err());

    // The list now names alice (a new file renamed over the old one).
    let next = pki
        .dir
        .write("live.crl.new", pki.crl(&[&[0x77], ALICE], 2099));
    std::fs::rename(&next, &crl).unwrap();
    let waited = std::time::Instant::now();
    while works("a.test") {
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "the new revocation list was not loaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Site B checks no list: alice still gets in there, but that
    // connection does not serve site A.
    assert!(works("b.test"));
    let mut tls = connect(server.addr, "b.test", Some(&pki.client)).unwrap();
    let (status, _) = get(&mut tls, "a.test", "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 421"), "{status}");
}

/// As nginx's `ssl_crl`: a certificate whose issuer has no list in the
/// file, or whose list is past its next update, is refused, not let in
/// unchecked.
#[test]
fn a_certificate_without_a_current_list_for_its_issuer_is_refused() {
    let pki = pki();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    other
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Another CA");
    for (name, list, accepted) in [
        ("current.crl", pki.crl(&[], 2099), true),
        ("expired.crl", pki.crl(&[], 2021), false),
        ("others.crl", crl_of(&other, &other_key, &[], 2099), false),
    ] {
        let crl = pki.dir.write(name, list);
        let text = format!(
            "[[modules]]\nname = \"CertEcho\"\n\n{}\nclient_certificate_crl = \"{}\"\n",
            pki.site_a(),
            crl.display()
        );
        let server = InProcessServer::start(&text, TEST_MODULES);
        let outcome = connect(server.addr, "a.test", Some(&pki.client))
            .and_then(|mut tls| get(&mut tls, "a.test", "/"));
        assert_eq!(
            outcome.as_ref().is_ok_and(|(s, _)| s == "HTTP/1.1 200 OK"),
            accepted,
            "{name}: {outcome:?}"
        );
        // A client without a certificate is not affected by the list.
        let mut tls = connect(server.addr, "a.test", None).unwrap();
        assert_eq!(get(&mut tls, "a.test", "/").unwrap().0, "HTTP/1.1 200 OK");
    }
}

#[test]
fn revocation_list_problems_are_configuration_errors_naming_the_key() {
    let pki = pki();
    let d = pki.dir.path().display();
    pki.dir.write(
        "garbage.crl",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    pki.dir.write("empty.crl", "");
    let site = |ca: bool, crl: &str| {
        let ca = if ca {
            format!("client_certificate_ca = \"{d}/clients-ca.pem\"\n")
        } else {
            String::new()
        };
        format!(
            "[[sites]]\nname = \"A\"\nroot = \"{d}\"\nbindings = [\"https://127.0.0.1:9445\"]\n\
             certificate = \"{d}/a.test.crt\"\ncertificate_key = \"{d}/a.test.key\"\n\
             {ca}client_certificate_crl = \"{d}/{crl}\"\n"
        )
    };
    for (text, message) in [
        (
            site(false, "empty.crl"),
            "need the site's `client_certificate_ca`",
        ),
        (site(true, "missing.crl"), "cannot read"),
        (
            site(true, "garbage.crl"),
            "revocation list #1 is not a usable",
        ),
        (site(true, "empty.crl"), "holds no PEM revocation list"),
        // A certificate where a list belongs.
        (site(true, "clients-ca.pem"), "holds no PEM revocation list"),
    ] {
        assert_refused(&pki.dir, &text, "sites[0].client_certificate_crl", message);
    }
    pki.dir.write("good.crl", pki.crl(&[ALICE], 2099));
    check_config(&pki.dir, &site(true, "good.crl")).unwrap();
}

/// A Rust module on the SDK (through the C ABI, as a module library would
/// be): answers with whether the handshake asked for a certificate and
/// the SHA-256 of the one presented.
mod sdk_cert {
    use riis_sdk::{
        HttpContext, HttpModule, ModuleError, ModuleRegistration, RequestNotification,
        RequestNotificationStatus, RequestNotifications, ServerInfo,
    };
    use sha2::Digest;

    #[derive(Default)]
    pub struct SdkCert;

    impl HttpModule for SdkCert {
        fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
            let request = ctx.request();
            let fingerprint: String = request
                .client_certificate()
                .map(|der| {
                    sha2::Sha256::digest(der)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                })
                .unwrap_or_default();
            let text = format!(
                "negotiated={}\nsha256={fingerprint}\n",
                request.client_certificate_negotiated()
            );
            let response = ctx.response_mut();
            let written = response
                .clear()
                .and_then(|()| response.set_header("Content-Type", "text/plain"))
                .and_then(|()| response.write(text).map(|_| ()));
            assert!(written.is_ok(), "{written:?}");
            RequestNotificationStatus::FinishRequest
        }
    }

    fn register(
        _server_version: u32,
        registration: &mut ModuleRegistration,
        _server: &ServerInfo,
    ) -> Result<(), ModuleError> {
        registration.set_request_notifications(
            SdkCert::default,
            RequestNotification::BeginRequest.into(),
            RequestNotifications::NONE,
        )
    }

    riis_sdk::module_entry!(pub entry, register);
}

fn register_sdk_cert(
    _version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    riis_native::register_entry_point(sdk_cert::entry, registration, server)
}

#[test]
fn an_sdk_module_reads_the_certificate() {
    let pki = pki();
    let text = format!("[[modules]]\nname = \"SdkCert\"\n\n{}\n", pki.site_a());
    let server = InProcessServer::start(&text, &[("SdkCert", register_sdk_cert)]);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).unwrap();
    let (status, body) = get(&mut tls, "a.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "negotiated"), "true");
    assert_eq!(variable(&body, "sha256"), pki.client_sha256);
    // Without a certificate: the handshake asked, none came.
    let mut tls = connect(server.addr, "a.test", None).unwrap();
    let (_, body) = get(&mut tls, "a.test", "/").unwrap();
    assert_eq!(variable(&body, "negotiated"), "true");
    assert_eq!(variable(&body, "sha256"), "");
}

/// AspNetCoreModule passes the certificate a client presented to the
/// ASP.NET Core application in `MS-ASPNETCORE-CLIENTCERT` (base64 DER), as
/// IIS's ASP.NET Core Module does; a client's own value of that header
/// never reaches it.
#[test]
fn an_asp_net_core_application_gets_the_client_certificate() {
    use base64::Engine as _;
    let Some(node) = common::node() else {
        return;
    };
    let pki = pki();
    let d = pki.dir.path().display();
    let app = pki.dir.write(
        "app.js",
        r#"require("http").createServer((request, response) => {
  const token = request.headers["ms-aspnetcore-token"] === process.env.ASPNETCORE_TOKEN;
  response.end(`token=${token}\ncertificate=${request.headers["ms-aspnetcore-clientcert"] || ""}\nproto=${request.headers["x-forwarded-proto"]}\n`);
}).listen(Number(process.env.ASPNETCORE_PORT), "127.0.0.1");
"#,
    );
    let text = format!(
        r#"
[[modules]]
name = "AspNetCoreModule"
[[modules]]
name = "ReverseProxy"

[[handlers]]
name = "aspNetCore"
path = "*"
modules = ["AspNetCoreModule", "ReverseProxy"]

[asp_net_core]
process_path = '{node}'
arguments = ['{app}']

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{d}/clients-ca.pem"
"#,
        node = node.display(),
        app = app.display(),
    );
    let server = InProcessServer::start(&text, &[]);
    let mut tls = connect(server.addr, "a.test", Some(&pki.client)).expect("handshake");
    let (status, body) = get(&mut tls, "a.test", "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(variable(&body, "token"), "true");
    assert_eq!(variable(&body, "proto"), "https");
    let der = base64::engine::general_purpose::STANDARD.encode(pki.client.0[0].as_ref());
    assert_eq!(variable(&body, "certificate"), der);

    // Without a certificate, a forged header is removed.
    let mut tls = connect(server.addr, "a.test", None).expect("a certificate is optional");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nMS-ASPNETCORE-CLIENTCERT: Zm9yZ2Vk\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(6).any(|w| w == b"proto=") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("\ncertificate=\n"), "{text}");
}

/// A client certificate no module turned into a user is the application's
/// to read (`CERT_SUBJECT`): OutputCache neither keeps an answer to such a
/// request nor answers one from its entries, as it treats credentials it
/// did not check.
#[test]
fn answers_to_a_client_certificate_are_not_shared_by_the_output_cache() {
    let pki = pki();
    let d = pki.dir.path().display();
    let text = format!(
        r#"
[[modules]]
name = "OutputCache"
[[modules]]
name = "StaticFile"

[output_cache]
policy = "CacheForTimePeriod"
duration = 60
frequent_hit_threshold = 1

[[sites]]
name = "A"
root = 'ROOT'
bindings = ["https://127.0.0.1:0:a.test"]
certificate = "{d}/a.test.crt"
certificate_key = "{d}/a.test.key"
client_certificate_ca = "{d}/clients-ca.pem"
"#
    );
    let server = InProcessServer::start(&text, &[]);
    std::fs::write(server.dir().join("page.txt"), "page").unwrap();
    let age_of = |identity| {
        let mut tls = connect(server.addr, "a.test", identity).expect("handshake");
        tls.write_all(b"GET /page.txt HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        text.contains("\r\nage: ")
    };
    // Without a certificate the page is kept, and the next answer is the
    // cache's.
    age_of(None);
    assert!(age_of(None));
    // With one, never.
    for _ in 0..2 {
        assert!(!age_of(Some(&pki.client)));
    }
}
