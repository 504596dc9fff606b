//! `ProtocolSupport` over real sockets: custom and removed headers, OPTIONS
//! and TRACE through a handler, keep_alive = false.

mod common;

use std::process::Command;

use common::{Connection, Response, RunningBinary, TempDir};

const MODULES: &str = r#"
[[modules]]
name = "ProtocolSupport"
[[modules]]
name = "EventTrace"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

[[handlers]]
name = "OPTIONSVerbHandler"
path = "*"
verbs = ["OPTIONS", "TRACE"]
modules = ["ProtocolSupport"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]
"#;

const SITE: &str = r#"
[sites.protocol]
custom_headers = { "X-Frame-Options" = "DENY", "X-Custom" = "yes" }
remove_headers = ["X-Powered-By", "Server", "etag", "X-Riis-TRACE"]

[[sites.locations]]
path = "/plain"
protocol = { remove_headers = [] }

[[sites.locations]]
path = "/api"
protocol = { allow_trace = true, custom_headers = { "X-Frame-Options" = "SAMEORIGIN" } }

[[sites.locations.handlers]]
name = "OPTIONSVerbHandler"
path = "*"
verbs = ["OPTIONS", "TRACE"]
modules = ["ProtocolSupport"]

[[sites.locations.handlers]]
name = "Everything"
path = "*"
modules = ["StaticFile"]

[[sites.locations]]
path = "/close"
protocol = { keep_alive = false }

[[sites.locations]]
path = "/frameable"
protocol = { remove_headers = ["X-Frame-Options"], redirect_headers = { "X-Moved" = "yes" } }
"#;

fn config_text(root: &std::path::Path, site: &str) -> String {
    format!(
        "{MODULES}\n[[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{site}",
        root.display()
    )
}

fn site() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("protocol");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    dir.write("www/plain/p.txt", "plain");
    dir.write("www/api/x.txt", "api");
    dir.write("www/close/c.txt", "bye");
    dir.write("www/frameable/f.txt", "frame me");
    dir.write("www/frameable/sub/index.html", "sub");
    let config = dir.write("riis.toml", config_text(&root, SITE));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

fn request(conn: &mut Connection, head: &str) -> Response {
    conn.send_raw(head.as_bytes());
    conn.read_response(head.starts_with("HEAD "))
}

#[test]
fn headers_are_added_and_removed() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    // (path, status, header, expected value; None = absent)
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        ("/a.txt", 200, "x-frame-options", Some("DENY")),
        ("/a.txt", 200, "x-custom", Some("yes")),
        ("/a.txt", 200, "server", None),
        ("/a.txt", 200, "etag", None),
        // A header another module adds at SendResponse (EventTrace, First
        // priority, listed after ProtocolSupport) is removed as well.
        ("/a.txt", 200, "x-riis-trace", None),
        ("/a.txt", 200, "x-powered-by", None),
        // Errors get the headers too.
        ("/missing.txt", 404, "x-frame-options", Some("DENY")),
        ("/missing.txt", 404, "server", None),
        // A location that removes nothing; custom headers are inherited.
        ("/plain/p.txt", 200, "x-frame-options", Some("DENY")),
        ("/plain/p.txt", 200, "etag", Some("*")),
        ("/plain/p.txt", 200, "x-riis-trace", Some("*")),
        ("/plain/p.txt", 200, "server", Some("riis/*")),
        // Tables merge: one header replaced, the other inherited.
        ("/api/x.txt", 200, "x-frame-options", Some("SAMEORIGIN")),
        ("/api/x.txt", 200, "x-custom", Some("yes")),
        // A location drops an inherited custom header by removing it.
        ("/frameable/f.txt", 200, "x-frame-options", None),
        ("/frameable/f.txt", 200, "x-custom", Some("yes")),
        // Redirect headers go on redirects only (the folder's 301).
        ("/frameable/f.txt", 200, "x-moved", None),
        ("/frameable/sub", 301, "x-moved", Some("yes")),
    ];
    for &(path, status, name, expected) in cases {
        let resp = conn.get(path);
        assert_eq!(resp.status, status, "{path}");
        match expected {
            None => assert_eq!(resp.header(name), None, "{path} {name}"),
            Some(prefix) if prefix.ends_with('*') => assert!(
                resp.header(name)
                    .is_some_and(|v| v.starts_with(prefix.trim_end_matches('*'))),
                "{path} {name}: {:?}",
                resp.header(name)
            ),
            Some(value) => assert_eq!(resp.header(name), Some(value), "{path} {name}"),
        }
    }
    // A 304 is no redirect: a cache would take its headers into the page
    // it keeps (RFC 9111 §4.3.4).
    let resp = request(
        &mut conn,
        "GET /frameable/f.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n",
    );
    assert_eq!(resp.status, 304);
    assert_eq!(resp.header("x-moved"), None);
}

#[test]
fn options_lists_the_handler_verbs() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    let cases: &[(&str, &str)] = &[
        // The static handler's verbs, OPTIONS; TRACE is not allowed here.
        ("/a.txt", "GET, HEAD, OPTIONS"),
        // A handler for every method stands for the common set; TRACE is
        // allowed in /api.
        (
            "/api/x.txt",
            "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE",
        ),
    ];
    for &(path, allow) in cases {
        let resp = request(
            &mut conn,
            &format!("OPTIONS {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("allow"), Some(allow), "{path}");
        assert_eq!(resp.header("content-length"), Some("0"), "{path}");
        assert!(resp.body.is_empty(), "{path}");
        // The SendResponse part applies to these answers as well.
        assert!(resp.header("x-frame-options").is_some(), "{path}");
    }
    // The connection is still in step.
    assert_eq!(conn.get("/a.txt").text(), "alpha");
    // `OPTIONS *` asks about the server: 200, no body, kept alive; `*`
    // with another method is not a request target.
    let resp = request(&mut conn, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_eq!(conn.get("/a.txt").text(), "alpha");
    let mut other = Connection::open(server.addr);
    assert_eq!(
        request(&mut other, "GET * HTTP/1.1\r\nHost: t\r\n\r\n").status,
        400
    );
    // The server's 405 lists the same: no TRACE where it is refused.
    let resp = request(
        &mut conn,
        "PUT /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(resp.status, 405);
    // In the same order as OPTIONS lists them (it listed the handler
    // mappings' order: OPTIONS first).
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn trace_is_refused_unless_allowed_and_hides_credentials() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    let resp = request(
        &mut conn,
        "TRACE /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));

    let resp = request(
        &mut conn,
        "TRACE /api/x.txt?q=1 HTTP/1.1\r\nHost: t\r\nX-Test: 1\r\n\
         Cookie: session=secret1\r\nAuthorization: Basic c2VjcmV0Mg==\r\n\
         Proxy-Authorization: Basic c2VjcmV0Mw==\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("message/http"));
    let echo = resp.text();
    assert!(
        echo.starts_with("TRACE /api/x.txt?q=1 HTTP/1.1\r\n"),
        "{echo}"
    );
    assert!(echo.contains("\r\nx-test: 1\r\n"), "{echo}");
    assert!(echo.contains("\r\nhost: t\r\n"), "{echo}");
    assert!(echo.ends_with("\r\n\r\n"), "{echo}");
    let lower = echo.to_ascii_lowercase();
    for hidden in ["cookie", "authorization", "secret1", "c2vjcmv0"] {
        assert!(!lower.contains(hidden), "{hidden} echoed: {echo}");
    }
}

#[test]
fn keep_alive_false_closes_the_connection() {
    let (_dir, server) = site();
    // Elsewhere the connection stays open for a second request.
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").text(), "alpha");
    let resp = conn.get("/a.txt");
    assert_eq!(resp.header("connection"), None);
    // Under /close the server ends the connection after the response.
    let resp = conn.get("/close/c.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "bye");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.is_closed(), "the connection stayed open");

    // Errors too.
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/close/missing.txt");
    assert_eq!(resp.status, 404);
    assert!(conn.is_closed(), "the connection stayed open after a 404");
}

/// Keep-alive is HTTP/1.x's: under `keep_alive = false` an HTTP/2
/// connection goes on serving its streams.
#[test]
fn keep_alive_false_leaves_http2_connections_open() {
    use http_body_util::{BodyExt, Empty};
    let (_dir, server) = site();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sender = common::http2_client(server.addr).await;
        for _ in 0..3 {
            sender.ready().await.expect("the connection is open");
            let request = http::Request::get(format!("http://{}/close/c.txt", server.addr))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(request).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"bye");
        }
    });
}

#[test]
fn check_config_refuses_bad_header_names() {
    let dir = TempDir::new("protocol-check");
    let cases: &[(&str, &str)] = &[
        (
            "protocol = { custom_headers = { \"Bad Name\" = \"x\" } }",
            "`Bad Name` is not a valid header name",
        ),
        (
            "protocol = { remove_headers = [\"no:colon\"] }",
            "`no:colon` is not a valid header name",
        ),
        ("protocol = { keep_alive = \"no\" }", "invalid type"),
        (
            "protocol = { custom_headers = { \"Transfer-Encoding\" = \"gzip\" } }",
            "`Transfer-Encoding` is the HTTP layer's",
        ),
        (
            "protocol = { redirect_headers = { \"Date\" = \"x\" } }",
            "`Date` is the HTTP layer's",
        ),
        // The HTTP layer writes it after every module: no removal holds.
        (
            "protocol = { remove_headers = [\"Date\"] }",
            "`Date` is the HTTP layer's",
        ),
    ];
    let site_lines = config_text(dir.path(), "").lines().count();
    for (i, &(section, message)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let path = dir.write(&name, config_text(dir.path(), &format!("{section}\n")));
        let out = Command::new(env!("CARGO_BIN_EXE_riis"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{section}");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = site_lines + 1;
        assert!(
            err.contains(&format!("{name}:{line}: key `sites[0].protocol")),
            "{section}: {err}"
        );
        assert!(err.contains(message), "{section}: {err}");
    }
}

/// A `Vary` in `custom_headers` joins the response's own (here
/// StaticCompression's `Accept-Encoding`) instead of replacing it, which
/// would let caches hand a compressed body to any client.
#[test]
fn a_custom_vary_adds_to_the_responses_own() {
    let dir = TempDir::new("protocol-vary");
    let root = dir.path().join("www");
    let text: String = (0..400).map(|i| format!("line {i} of text\n")).collect();
    dir.write("www/big.txt", &text);
    let site = format!(
        "[sites.protocol]\ncustom_headers = {{ Vary = \"Origin, accept-encoding\" }}\n\
         [sites.static_compression]\ndirectory = '{}'\n",
        dir.path().join("copies").display()
    );
    let config = config_text(&root, &site).replace(
        "[[modules]]\nname = \"StaticFile\"",
        "[[modules]]\nname = \"StaticCompression\"\n[[modules]]\nname = \"StaticFile\"",
    );
    let config = dir.write("riis.toml", config);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for accept in ["gzip", "identity"] {
        let resp = request(
            &mut conn,
            &format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {accept}\r\n\r\n"),
        );
        assert_eq!(resp.status, 200);
        let vary: Vec<String> = resp
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("vary"))
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .collect();
        assert_eq!(vary, ["accept-encoding", "origin"], "{accept}");
    }
}
