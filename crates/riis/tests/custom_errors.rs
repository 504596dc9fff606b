//! `CustomError` over real sockets: the detailed page local clients get by
//! default, Custom mode with File, Redirect and ExecuteURL rules, and
//! `existing_response` with a module that writes its own error body.
//!
//! The tests connect from 127.0.0.1, a local client; the remote view is
//! what `error_mode = "Custom"` gives everybody.

mod common;

use std::net::SocketAddr;

use common::{Connection, InProcessServer, Response, RunningBinary, TempDir};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification as N, RequestNotificationStatus as Status, RequestNotifications,
    ServerInfo,
};

const MODULES: &str = r#"
[[modules]]
name = "CustomError"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticHandler"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]

[[sites]]
name = "Test"
root = 'ROOT'
bindings = ["127.0.0.1:0"]
"#;

const CUSTOM: &str = r#"
[sites.http_errors]
error_mode = "Custom"
errors = [
    { status = 404, path = "/errors/404.html" },
    { status = 404, substatus = 3, path = "/moved", response_mode = "Redirect" },
]

[[sites.locations]]
path = "/exec"
http_errors = { errors = [
    { status = 404, path = "/errors/404.html", response_mode = "ExecuteURL" },
    { status = 404, substatus = 3, path = "/errors/none.html", response_mode = "ExecuteURL" },
] }

[[sites.locations]]
path = "/generic"
http_errors = { errors = [] }

[[sites.locations]]
path = "/loop"
http_errors = { errors = [
    { status = 404, path = "/loop/gone.html", response_mode = "Redirect" },
] }

[[sites.locations]]
path = "/absloop"
http_errors = { errors = [
    { status = 404, path = "http://TEST:80/absloop/gone.html", response_mode = "Redirect" },
] }

[[sites.locations]]
path = "/utf"
http_errors = { errors = [
    { status = 404, path = "/errors/é.html", response_mode = "Redirect" },
] }

[[sites.locations]]
path = "/detailed"
http_errors = { error_mode = "Detailed" }
"#;

const PAGE_404: &str = "<h1>custom 404</h1>";

fn start(sections: &str) -> (TempDir, RunningBinary) {
    let dir = TempDir::new("customerr");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    dir.write("www/errors/404.html", PAGE_404);
    for d in ["", "exec/", "generic/", "detailed/"] {
        dir.write(&format!("www/{d}data.unknownext"), "x");
    }
    let text = format!("{MODULES}{sections}").replace("ROOT", &root.display().to_string());
    let config = dir.write("riis.toml", text);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

fn send(addr: SocketAddr, method: &str, target: &str) -> Response {
    let mut conn = Connection::open(addr);
    conn.send_raw(
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    conn.read_response(method == "HEAD")
}

/// A 416 answered with a page keeps `Content-Range: bytes */length`,
/// which tells the client the file's length (RFC 9110 §15.5.17), whether
/// the page comes from a file or an executed URL.
#[test]
fn a_416_page_keeps_the_unsatisfied_range() {
    let (dir, server) = start(
        r#"
[sites.http_errors]
error_mode = "Custom"
errors = [{ status = 416, path = "/errors/404.html", response_mode = "ExecuteURL" }]

[[sites.locations]]
path = "/exec"
http_errors = { errors = [{ status = 416, path = "errors/404.html" }] }
"#,
    );
    dir.write("www/exec/b.txt", "bb");
    for target in ["/a.txt", "/exec/b.txt"] {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nRange: bytes=99-\r\n\r\n").as_bytes(),
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 416, "{target}");
        assert_eq!(resp.text(), PAGE_404, "{target}");
        let length = if target == "/a.txt" { 5 } else { 2 };
        assert_eq!(
            resp.header("content-range"),
            Some(format!("bytes */{length}").as_str()),
            "{target}"
        );
    }
}

#[test]
fn local_clients_get_the_detailed_page_by_default() {
    let (_dir, server) = start("");
    let resp = send(server.addr, "GET", "/data.unknownext");
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = resp.text();
    for expected in [
        "HTTP Error 404.3 - Not Found",
        "<th>Module</th><td>StaticFile</td>",
        "<th>Notification</th><td>ExecuteRequestHandler</td>",
        "<th>Handler</th><td>StaticHandler</td>",
        "<th>Error Code</th><td>0x80070032</td>",
        "<th>Requested URL</th><td>/data.unknownext</td>",
        "data.unknownext</td>",
        "MIME type",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in {body}");
    }
    let physical = body
        .lines()
        .find(|l| l.contains("<th>Physical Path</th>"))
        .unwrap();
    assert!(physical.contains("www/data.unknownext"), "{physical}");
    // Success passes untouched.
    let resp = send(server.addr, "GET", "/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "alpha"));
    // A HEAD gets the status and no body, and the length its GET's page has.
    let get = send(server.addr, "GET", "/data.unknownext");
    let resp = send(server.addr, "HEAD", "/data.unknownext");
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[test]
fn the_detailed_page_escapes_what_the_client_sent() {
    let (_dir, server) = start(CUSTOM);
    let resp = send(server.addr, "GET", "/detailed/%3Cb%3Ex%3C%2Fb%3E.txt");
    assert_eq!(resp.status, 404);
    let body = resp.text();
    assert!(body.contains("HTTP Error 404 - Not Found"), "{body}");
    assert!(body.contains("&lt;b&gt;x&lt;/b&gt;.txt"), "{body}");
    assert!(!body.contains("<b>"), "{body}");
    // Handler mapping found no file: the server set the error, not a module.
    assert!(
        body.contains("<th>Module</th><td>(the server)</td>"),
        "{body}"
    );
}

#[test]
fn custom_mode_serves_files_redirects_and_urls() {
    let (_dir, server) = start(CUSTOM);
    // (method, URL, status, Location, body check)
    enum Body {
        Exact(&'static str),
        Generic(&'static str),
        Any,
    }
    let cases = [
        ("GET", "/a.txt", 200, None, Body::Exact("alpha")),
        // File: the page, the original status.
        ("GET", "/missing.txt", 404, None, Body::Exact(PAGE_404)),
        // Redirect for 404.3 only.
        ("GET", "/data.unknownext", 302, Some("/moved"), Body::Any),
        // No rule: the short generic page, no details.
        (
            "GET",
            "/generic/missing.txt",
            404,
            None,
            Body::Generic("404 - Not Found"),
        ),
        (
            "GET",
            "/generic/data.unknownext",
            404,
            None,
            Body::Generic("404 - Not Found"),
        ),
        // ExecuteURL: the page through a child request, status kept; the
        // child fetches it with GET whatever the method was.
        ("GET", "/exec/missing.txt", 404, None, Body::Exact(PAGE_404)),
        (
            "POST",
            "/exec/missing.txt",
            404,
            None,
            Body::Exact(PAGE_404),
        ),
        // A redirect to the failing URL itself would loop: the generic
        // page instead.
        (
            "GET",
            "/loop/other.txt",
            302,
            Some("/loop/gone.html"),
            Body::Any,
        ),
        (
            "GET",
            "/loop/gone.html",
            404,
            None,
            Body::Generic("404 - Not Found"),
        ),
        // The same for an absolute URL naming this host (as the client
        // wrote it) and its scheme and port.
        (
            "GET",
            "/absloop/other.txt",
            302,
            Some("http://TEST:80/absloop/gone.html"),
            Body::Any,
        ),
        (
            "GET",
            "/absloop/gone.html",
            404,
            None,
            Body::Generic("404 - Not Found"),
        ),
        // A Location is ASCII.
        (
            "GET",
            "/utf/x.txt",
            302,
            Some("/errors/%C3%A9.html"),
            Body::Any,
        ),
        // ExecuteURL to a page that does not exist: the generic page.
        (
            "GET",
            "/exec/data.unknownext",
            404,
            None,
            Body::Generic("404 - Not Found"),
        ),
    ];
    for (method, url, status, location, body) in cases {
        let resp = send(server.addr, method, url);
        let text = resp.text();
        assert_eq!(resp.status, status, "{method} {url}: {text}");
        assert_eq!(resp.header("location"), location, "{method} {url}");
        match body {
            Body::Exact(b) => assert_eq!(text, b, "{method} {url}"),
            Body::Generic(title) => {
                assert!(text.contains(title), "{method} {url}: {text}");
                assert!(!text.contains("Detailed"), "{method} {url}: {text}");
                assert!(!text.contains("StaticFile"), "{method} {url}: {text}");
            }
            Body::Any => {}
        }
        if status == 404 {
            assert!(
                resp.header("content-type")
                    .is_some_and(|t| t.starts_with("text/html")),
                "{method} {url}"
            );
        }
    }
    // HEAD gets the length its GET would: the page's, not 0.
    let get = send(server.addr, "GET", "/exec/missing.txt");
    let head = send(server.addr, "HEAD", "/exec/missing.txt");
    assert_eq!(head.status, 404);
    assert_eq!(
        head.header("content-length"),
        get.header("content-length"),
        "HEAD /exec/missing.txt"
    );
    assert_eq!(
        get.header("content-length"),
        Some(PAGE_404.len().to_string().as_str())
    );
    // The client's range and validators were about the missing resource:
    // the page comes whole, with the error's status.
    for extra in [
        "Range: bytes=0-4\r\n",
        "If-None-Match: *\r\n",
        "If-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT\r\n",
    ] {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(
            format!("GET /exec/missing.txt HTTP/1.1\r\nHost: test\r\n{extra}\r\n").as_bytes(),
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 404, "{extra}");
        assert_eq!(resp.text(), PAGE_404, "{extra}");
        assert_eq!(resp.header("content-range"), None, "{extra}");
    }
    // The ExecuteURL page came through StaticFile (its Content-Type), the
    // File page from the module itself. The page's validators and range
    // support are the page's, not the error's: a cache must not keep the
    // 404 as if it were the page.
    let resp = send(server.addr, "GET", "/exec/missing.txt");
    assert_eq!(resp.header("content-type"), Some("text/html"));
    for name in ["etag", "last-modified", "accept-ranges"] {
        assert_eq!(resp.header(name), None, "{name}");
    }
    let resp = send(server.addr, "GET", "/missing.txt");
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.header("etag").is_none());
}

/// Answers with an error status and, depending on the last URL segment, a
/// body of its own and a request to skip custom errors.
struct Oops;

impl HttpModule for Oops {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let kind = ctx
            .request()
            .url()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let resp = ctx.response_mut();
        resp.set_error_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            0,
            ModuleError::E_FAIL,
        );
        if kind == "encoded" {
            // Headers that describe this (failed) entity only.
            for (name, value) in [
                ("content-encoding", "gzip"),
                ("etag", "\"failed\""),
                ("content-disposition", "attachment; filename=\"x.bin\""),
                ("x-kept", "yes"),
            ] {
                resp.set_header(
                    name.parse().unwrap(),
                    riis_pipeline::http::HeaderValue::from_static(value),
                );
            }
        }
        if kind != "emptyskip" {
            resp.write("module body");
        }
        if kind != "noskip" {
            resp.set_try_skip_custom_errors(true);
        }
        Status::FinishRequest
    }
}

fn register_oops(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Oops,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("Oops", register_oops)];

const OOPS_CONFIG: &str = r#"
[[modules]]
name = "CustomError"
[[modules]]
name = "Oops"
[[handlers]]
name = "h"
path = "*"
modules = ["Oops"]
[http_errors]
error_mode = "Custom"
[[sites]]
name = "s"
root = 'ROOT'
bindings = ["127.0.0.1:0"]
[[sites.locations]]
path = "/replace"
http_errors = { existing_response = "Replace" }
[[sites.locations]]
path = "/pass"
http_errors = { existing_response = "PassThrough" }
[[sites.locations]]
path = "/detailed"
http_errors = { error_mode = "Detailed" }
"#;

#[test]
fn existing_response_decides_about_module_bodies() {
    let server = InProcessServer::start(OOPS_CONFIG, TEST_MODULES);
    const GENERIC: &str = "500 - Internal Server Error";
    // (URL, body: Some(exact) or None for the generic page)
    let cases = [
        // Auto: the module's body stays only when it asked to skip.
        ("/auto/skip", Some("module body")),
        ("/auto/noskip", None),
        ("/auto/emptyskip", None),
        // Replace: always the custom page.
        ("/replace/skip", None),
        ("/replace/noskip", None),
        // PassThrough: never.
        ("/pass/skip", Some("module body")),
        ("/pass/noskip", Some("module body")),
        ("/pass/emptyskip", Some("")),
    ];
    for (url, body) in cases {
        let resp = send(server.addr, "GET", url);
        assert_eq!(resp.status, 500, "{url}");
        let text = resp.text();
        match body {
            Some(b) => assert_eq!(text, b, "{url}"),
            None => {
                assert!(text.contains(GENERIC), "{url}: {text}");
                assert!(!text.contains("module body"), "{url}: {text}");
            }
        }
    }
    // A module's error shows on the detailed page with its module name.
    let text = send(server.addr, "GET", "/detailed/noskip").text();
    assert!(
        text.contains("HTTP Error 500 - Internal Server Error"),
        "{text}"
    );
    assert!(text.contains("<th>Module</th><td>Oops</td>"), "{text}");
    assert!(text.contains("<th>Handler</th><td>h</td>"), "{text}");
    assert!(
        text.contains("<th>Error Code</th><td>0x80004005</td>"),
        "{text}"
    );
}

/// An error page sent as a file is read as StaticFile would serve it: a
/// FIFO, or a device behind a link, is not read (it would stall a worker,
/// or never end), and a link is not followed where the location does not
/// follow links; the generic page goes out instead.
#[test]
fn error_files_are_regular_files_under_the_locations_link_rule() {
    let sections = r#"
[sites.http_errors]
error_mode = "Custom"
errors = [{ status = 404, path = "/errors/fifo.html" }]

[[sites.locations]]
path = "/zero"
http_errors = { errors = [{ status = 404, path = "/errors/zero.html" }] }

[[sites.locations]]
path = "/nolinks"
static_file = { follow_symlinks = false }
http_errors = { errors = [{ status = 404, path = "/errors/link.html" }] }

[[sites.locations]]
path = "/links"
http_errors = { errors = [{ status = 404, path = "/errors/link.html" }] }
"#;
    let (dir, server) = start(sections);
    let errors = dir.path().join("www/errors");
    nix::unistd::mkfifo(&errors.join("fifo.html"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", errors.join("zero.html")).unwrap();
    let outside = dir.write("outside.html", "outside the site");
    std::os::unix::fs::symlink(&outside, errors.join("link.html")).unwrap();

    for url in ["/missing", "/zero/missing", "/nolinks/missing"] {
        let resp = send(server.addr, "GET", url);
        assert_eq!(resp.status, 404, "{url}");
        assert!(resp.body.len() < 10_000, "{url}: {} bytes", resp.body.len());
        assert!(!resp.text().contains("outside the site"), "{url}");
    }
    // Where links are followed (the default), the link's file is the page.
    let resp = send(server.addr, "GET", "/links/missing");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (404, "outside the site")
    );
    // The server still answers.
    assert_eq!(send(server.addr, "GET", "/a.txt").text(), "alpha");
}

/// An ExecuteURL page replaces a failed response whose headers described
/// its own entity: the page goes out without that entity's encoding (a
/// browser would fail to decode it), validators or disposition; the
/// response's other headers stay.
#[test]
fn an_executed_page_drops_the_failed_entitys_headers() {
    let config = r#"
[[modules]]
name = "CustomError"
[[modules]]
name = "Oops"
[[modules]]
name = "StaticFile"
[[handlers]]
name = "pages"
path = "*.html"
modules = ["StaticFile"]
[[handlers]]
name = "h"
path = "*"
modules = ["Oops"]
[http_errors]
error_mode = "Custom"
existing_response = "Replace"
errors = [{ status = 500, path = "/errors/500.html", response_mode = "ExecuteURL" }]
[[sites]]
name = "s"
root = 'ROOT'
bindings = ["127.0.0.1:0"]
"#;
    let server = InProcessServer::start(config, TEST_MODULES);
    std::fs::create_dir_all(server.dir().join("errors")).unwrap();
    std::fs::write(server.dir().join("errors/500.html"), "<h1>sorry</h1>").unwrap();
    let resp = send(server.addr, "GET", "/x/encoded");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "<h1>sorry</h1>");
    for gone in ["content-encoding", "etag", "content-disposition"] {
        assert_eq!(resp.header(gone), None, "{gone}");
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
    assert_eq!(resp.header("content-type"), Some("text/html"));
}

/// An ExecuteURL page that is an application (a front controller) runs as
/// its own URL: a refused URL's route is not run behind the refusal.
#[test]
fn an_execute_url_application_does_not_run_the_refused_route() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("custom-errors-app");
    let script = dir.write(
        "www/index.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"route=$REQUEST_URI\"\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "RequestFiltering"
[[modules]]
name = "CustomError"
[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

[http_errors]
error_mode = "Custom"
errors = [{{ status = 404, path = "/index.cgi", response_mode = "ExecuteURL" }}]

[request_filtering]
denied_url_sequences = ["/internal/"]

[[sites]]
name = "App"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = dir.path().join("www").display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let refused = common::get(server.addr, "/internal/delete-user?id=1");
    assert_eq!(refused.status, 404);
    assert_eq!(refused.text().trim(), "route=/index.cgi");
}

/// A 405 turned into a redirect carries no `Allow`: that header names the
/// methods of the resource that refused, not of the page it sends the
/// client to.
#[test]
fn a_405_redirected_carries_no_allow() {
    let (dir, server) = start(
        r#"
[[sites.locations]]
path = "/moved405"
http_errors = { error_mode = "Custom", errors = [
    { status = 405, path = "/elsewhere", response_mode = "Redirect" },
] }
"#,
    );
    dir.write("www/moved405/a.txt", "a");
    let plain = send(server.addr, "DELETE", "/a.txt");
    assert_eq!(plain.status, 405);
    assert!(plain.header("allow").is_some());
    let moved = send(server.addr, "DELETE", "/moved405/a.txt");
    assert_eq!(moved.status, 302, "{}", moved.text());
    assert_eq!(moved.header("location"), Some("/elsewhere"));
    assert_eq!(moved.header("allow"), None);
}
