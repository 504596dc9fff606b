//! `RequestFiltering` over real sockets: every filter with its status and
//! substatus (read from the detailed error page of `CustomError`), ordinary
//! requests passing, and a chunked body over the limit.

mod common;

use std::net::SocketAddr;

use common::{Connection, InProcessServer, Response, RunningBinary, TempDir};
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    CompletionInfo, HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification as N, RequestNotificationStatus as Status, RequestNotifications,
    ServerInfo,
};

const CONFIG: &str = r#"
[[modules]]
name = "RequestFiltering"
[[modules]]
name = "CustomError"
[[modules]]
name = "StaticFile"

# A handler that takes `/setup.exe/x` as `/setup.exe` (allow_path_info).
[[handlers]]
name = "ExeWithPathInfo"
path = "*.exe"
resource_type = "File"
allow_path_info = true
modules = ["StaticFile"]

[[handlers]]
name = "StaticHandler"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]

[http_errors]
error_mode = "Detailed"

[[sites]]
name = "Test"
root = 'ROOT'
bindings = ["127.0.0.1:0"]

[sites.request_filtering]
verbs = { "TRACE" = false, "DELETE" = false }
file_extensions = { deny = [".exe"] }
header_limits = { "Content-Type" = 100 }

[[sites.locations]]
path = "/strict"
[sites.locations.request_filtering]
allow_unlisted_verbs = false
verbs = { "GET" = true }
allow_high_bit_characters = false
denied_url_sequences = ["~"]
denied_query_string_sequences = ["&", "~"]
file_extensions = { allow_unlisted = false, allow = [".txt"] }

[[sites.locations]]
path = "/nodots"
[sites.locations.request_filtering]
denied_url_sequences = ["./"]
file_extensions = { deny = [] }
verbs = { "put" = false }
"#;

fn start() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("reqfilter");
    let root = dir.path().join("www");
    for f in [
        "a.txt",
        "page.html",
        "setup.exe",
        "riis.toml",
        ".git/config",
        "sub/.Git/x.txt",
        "bin/app.txt",
        "App_Data/notes.txt",
        "strict/a.txt",
        "strict/page.html",
        "strict/x~y.txt",
        "nodots/a.txt",
        "nodots/tool.exe",
        "strict/café.txt",
        "café.txt",
        "a%2e.txt",
    ] {
        dir.write(&format!("www/{f}"), "content");
    }
    let config = dir.write(
        "riis.toml",
        CONFIG.replace("ROOT", &root.display().to_string()),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &str) -> Response {
    let mut conn = Connection::open(addr);
    conn.send_raw(format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").as_bytes());
    conn.read_response(method == "HEAD")
}

#[test]
fn every_filter_answers_with_its_status() {
    let (_dir, server) = start();
    let long_path = format!("/{}", "p".repeat(5000));
    let long_query = format!("/a.txt?q={}", "x".repeat(3000));
    let big_header = format!("X-Big: {}\r\n", "h".repeat(9000));
    let long_type = format!("Content-Type: text/{}\r\n", "t".repeat(150));
    // (method, target, extra headers, status, "status.substatus" shown on
    // the detailed page, or "" for a passing request)
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        // Ordinary requests pass.
        ("GET", "/a.txt", String::new(), 200, ""),
        ("GET", "/page.html?x=1&y=2", String::new(), 200, ""),
        ("HEAD", "/a.txt", String::new(), 200, ""),
        ("GET", "/strict/a.txt", String::new(), 200, ""),
        (
            "GET",
            "/a.txt",
            "Content-Type: text/plain\r\n".into(),
            200,
            "",
        ),
        ("GET", "/a.txt", "X-Fine: 1234\r\n".into(), 200, ""),
        // Non-ASCII is allowed by default.
        ("GET", "/caf%C3%A9.txt", String::new(), 200, ""),
        // `..` segments never reach a module: the engine answers 400.
        ("GET", "/strict/../a.txt", String::new(), 400, ""),
        // Verbs: denied by name, and unlisted where unlisted verbs are off.
        ("TRACE", "/a.txt", String::new(), 404, "404.6"),
        ("DELETE", "/strict/a.txt", String::new(), 404, "404.6"),
        // A denied method in any case: `delete` reaches a CGI program as
        // REQUEST_METHOD=delete, which frameworks upper-case into DELETE.
        ("delete", "/a.txt", String::new(), 404, "404.6"),
        ("Delete", "/a.txt", String::new(), 404, "404.6"),
        ("trace", "/a.txt", String::new(), 404, "404.6"),
        // ... and a deny entry written in lower case.
        ("PUT", "/nodots/a.txt", String::new(), 404, "404.6"),
        ("Put", "/nodots/a.txt", String::new(), 404, "404.6"),
        // An allow entry matches exactly: `get` is not listed in /strict.
        ("get", "/strict/a.txt", String::new(), 404, "404.6"),
        // Content length.
        (
            "POST",
            "/a.txt",
            "Content-Length: 30000001\r\n".into(),
            413,
            "413",
        ),
        // URL and query string length.
        ("GET", &long_path, String::new(), 404, "404.14"),
        ("GET", &long_query, String::new(), 404, "404.15"),
        // Header sizes.
        ("GET", "/a.txt", big_header.clone(), 431, "431"),
        ("GET", "/a.txt", long_type.clone(), 404, "404.10"),
        // Double escaping: %252e decodes once to %2e.
        ("GET", "/a%252e.txt", String::new(), 404, "404.11"),
        // High-bit characters where they are refused.
        ("GET", "/strict/caf%C3%A9.txt", String::new(), 404, "404.12"),
        // Denied sequences, in the path and in the query.
        ("GET", "/strict/x~y.txt", String::new(), 404, "404.5"),
        ("GET", "/strict/a.txt?x=1&y=2", String::new(), 404, "404.18"),
        // ... also escaped in the query.
        ("GET", "/strict/a.txt?x=1%26y", String::new(), 404, "404.18"),
        ("GET", "/strict/a.txt?x=%7E", String::new(), 404, "404.18"),
        // ... escaped in the path, and gone once the path is normalized.
        ("GET", "/strict/x%7ey.txt", String::new(), 404, "404.5"),
        ("GET", "/nodots/%2e/a.txt", String::new(), 404, "404.5"),
        ("GET", "/nodots/./a.txt", String::new(), 404, "404.5"),
        // The URL list does not apply to the query.
        ("GET", "/nodots/a.txt?p=./x", String::new(), 200, ""),
        // Hidden segments, any case, anywhere in the path.
        ("GET", "/riis.toml", String::new(), 404, "404.8"),
        ("GET", "/.git/config", String::new(), 404, "404.8"),
        ("GET", "/sub/.Git/x.txt", String::new(), 404, "404.8"),
        // IIS's defaults: an ASP.NET site's assemblies and data.
        ("GET", "/bin/app.txt", String::new(), 404, "404.8"),
        ("GET", "/app_data/notes.txt", String::new(), 404, "404.8"),
        // File extensions: denied, and not in the allow list.
        ("GET", "/setup.exe", String::new(), 404, "404.7"),
        ("GET", "/SETUP.EXE", String::new(), 404, "404.7"),
        ("GET", "/strict/page.html", String::new(), 404, "404.7"),
        // Doubled slashes and dot segments name the same location.
        ("GET", "//strict/page.html", String::new(), 404, "404.7"),
        ("GET", "/./strict//page.html", String::new(), 404, "404.7"),
        ("GET", "/%2fstrict/page.html", String::new(), 404, "404.7"),
    ];
    for (method, target, headers, status, shown) in &cases {
        let resp = request(server.addr, method, target, headers);
        let what = format!("{method} {}", &target[..target.len().min(60)]);
        assert_eq!(resp.status, *status, "{what}: {}", resp.text());
        if shown.is_empty() {
            continue;
        }
        let body = resp.text();
        assert!(
            body.contains(&format!("HTTP Error {shown} ")),
            "{what}: expected {shown}: {body}"
        );
        assert!(body.contains("RequestFiltering"), "{what}: {body}");
        assert!(body.contains("BeginRequest"), "{what}: {body}");
        if *status == 413 {
            assert_eq!(resp.header("connection"), Some("close"), "{what}");
        }
    }
}

/// How many times `Echo` went on with a body RequestFiltering had cut off.
static RESUMED_AFTER_413: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Reads the body and echoes it with an explicit 200, as a handler that
/// does not know about request filtering would.
#[derive(Default)]
struct Echo {
    body: Vec<u8>,
}

impl Echo {
    fn read_more(&mut self, ctx: &mut HttpContext) -> Status {
        match ctx.read_entity_body(4096) {
            Ok(()) => Status::Pending,
            Err(_) => Status::FinishRequest,
        }
    }
}

impl HttpModule for Echo {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        self.read_more(ctx)
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        _: N,
        _: bool,
        info: &CompletionInfo,
    ) -> Status {
        if info.bytes > 0 {
            self.body.extend_from_slice(ctx.request().read_data());
            return self.read_more(ctx);
        }
        if ctx.response().status() == StatusCode::PAYLOAD_TOO_LARGE {
            // Resumed after RequestFiltering refused the body: what was
            // read is only part of it.
            RESUMED_AFTER_413.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let mut body = b"echo:".to_vec();
        body.append(&mut self.body);
        let resp = ctx.response_mut();
        resp.set_status(StatusCode::OK, "OK");
        resp.write(body);
        ctx.set_request_handled();
        Status::Continue
    }
}

fn register_echo(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        Echo::default,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("Echo", register_echo)];

const ECHO_CONFIG: &str = r#"
[[modules]]
name = "RequestFiltering"
[[modules]]
name = "Echo"
[[handlers]]
name = "h"
path = "*"
modules = ["Echo"]
[request_filtering]
max_allowed_content_length = 10
[[sites]]
name = "s"
root = 'ROOT'
bindings = ["127.0.0.1:0"]
"#;

fn chunked(parts: &[&str]) -> String {
    let mut text =
        String::from("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for p in parts {
        text.push_str(&format!("{:x}\r\n{p}\r\n", p.len()));
    }
    text.push_str("0\r\n\r\n");
    text
}

#[test]
fn bodies_are_limited_while_they_are_read() {
    let server = InProcessServer::start(ECHO_CONFIG, TEST_MODULES);
    // (request, status, body) — each on a connection of its own. Where
    // more of the body follows the overflow, unread, the response still
    // reaches the client: the connection closes after it without a reset.
    let more = "m".repeat(100_000);
    let cases = [
        (chunked(&["01234", "56789"]), 200, "echo:0123456789"),
        (chunked(&["01234", "56789", "a"]), 413, ""),
        (chunked(&["0123456789abc", "more", "andmore"]), 413, ""),
        (chunked(&["0123456789abc", &more]), 413, ""),
        (chunked(&["0123456789abcdefghij"]), 413, ""),
        (
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd".to_owned(),
            200,
            "echo:abcd",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n".to_owned(),
            413,
            "",
        ),
    ];
    for (raw, status, body) in &cases {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(raw.as_bytes());
        let resp = conn.read_response(false);
        assert_eq!(resp.status, *status, "{raw:?}: {}", resp.text());
        assert_eq!(resp.text(), *body, "{raw:?}");
        if *status == 413 {
            assert_eq!(resp.header("connection"), Some("close"), "{raw:?}");
            assert!(conn.is_closed(), "{raw:?}");
        }
    }
    // The handler never went on with part of a body as if it were whole.
    assert_eq!(
        RESUMED_AFTER_413.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// A custom error page for the 413 of a body read past the limit: the
/// page CustomError runs (ExecuteURL) is what the client gets, not an
/// empty body under the page's headers.
#[test]
fn a_body_read_past_the_limit_gets_its_custom_error_page() {
    let config = ECHO_CONFIG.replace(
        "[[modules]]\nname = \"Echo\"\n",
        "[[modules]]\nname = \"Echo\"\n[[modules]]\nname = \"CustomError\"\n\
         [[modules]]\nname = \"StaticFile\"\n",
    )
    .replace(
        "[[handlers]]\nname = \"h\"\npath = \"*\"\n",
        "[[handlers]]\nname = \"pages\"\npath = \"*.html\"\nmodules = [\"StaticFile\"]\n\
         [[handlers]]\nname = \"h\"\npath = \"*\"\n",
    ) + "[http_errors]\nerror_mode = \"Custom\"\n\
         errors = [{ status = 413, path = \"/errors/413.html\", response_mode = \"ExecuteURL\" }]\n";
    let server = InProcessServer::start(&config, TEST_MODULES);
    std::fs::create_dir_all(server.dir().join("errors")).unwrap();
    std::fs::write(server.dir().join("errors/413.html"), "too much").unwrap();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(chunked(&["01234", "56789", "a"]).as_bytes());
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.text(), "too much");
    assert_eq!(resp.header("content-length"), Some("8"));
}

/// `riis check-config` on a `request_filtering` section holding `line`
/// (line 5 of the file, or line 13 for a location's): the exit status and
/// what it wrote.
fn check_config(dir: &TempDir, line: &str, in_location: bool) -> (bool, String) {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let (global, location) = if in_location { ("", line) } else { (line, "") };
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"RequestFiltering\"\n\n[request_filtering]\n{global}\n\n\
             [[sites]]\nname = \"s\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n\
             [[sites.locations]]\npath = \"/x\"\nrequest_filtering = {{ {location} }}\n",
            root.display()
        ),
    );
    let out = common::riis_command("check-config", &config);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Settings that could never match a request are refused when the
/// configuration loads, with the file, line and key, instead of being
/// accepted and doing nothing.
#[test]
fn settings_that_can_never_match_are_configuration_errors() {
    let dir = TempDir::new("reqfilter-check");
    for good in [
        r#"hidden_segments = [".git", "bin", "App_Data"]"#,
        r#"file_extensions = { deny = [".exe", "bak"], allow = [".", ".TXT"] }"#,
        r#"header_limits = { "Content-Type" = 100, "x-api-key" = 64 }"#,
        r#"verbs = { "GET" = true, "M-SEARCH" = false, "delete" = false }"#,
    ] {
        let (ok, err) = check_config(&dir, good, false);
        assert!(ok, "{good}: {err}");
    }
    // (setting, key under `request_filtering`, message)
    let cases = [
        (
            r#"hidden_segments = ["files/setup.exe", "/admin"]"#,
            "hidden_segments",
            "`files/setup.exe` holds a `/`",
        ),
        (
            r#"hidden_segments = ['bin\secret']"#,
            "hidden_segments",
            "an entry is one path segment",
        ),
        (
            r#"file_extensions = { deny = ["*.exe"] }"#,
            "file_extensions.deny",
            "`*.exe` is not an extension",
        ),
        (
            r#"file_extensions = { allow_unlisted = false, allow = [".tar.gz"] }"#,
            "file_extensions.allow",
            "`.tar.gz` is not an extension",
        ),
        (
            r#"header_limits = { "X Big" = 1 }"#,
            "header_limits",
            "`X Big` is not a header name",
        ),
        (
            r#"header_limits = { "User_Agent" = 3 }"#,
            "header_limits",
            "`User_Agent` is not a header name",
        ),
        (
            r#"verbs = { " GET" = false }"#,
            "verbs",
            "` GET` is not a method",
        ),
        (
            r#"verbs = { "GET POST" = false }"#,
            "verbs",
            "`GET POST` is not a method",
        ),
    ];
    for (setting, key, message) in cases {
        let (ok, err) = check_config(&dir, setting, false);
        assert!(!ok, "{setting} was accepted");
        assert!(
            err.contains(&format!("riis.toml:5: key `request_filtering.{key}`")),
            "{setting}: {err}"
        );
        assert!(err.contains(message), "{setting}: {err}");
    }
    // In a location too.
    let (ok, err) = check_config(&dir, r#"verbs = { "GET POST" = false }"#, true);
    assert!(!ok);
    assert!(
        err.contains("riis.toml:13: key `sites[0].locations[0].request_filtering.verbs`"),
        "{err}"
    );
}

/// A handler that takes a leading part of the URL as its script
/// (`allow_path_info`) does not lead past `file_extensions`: the script's
/// extension meets the rules too, once the handler is chosen.
#[test]
fn a_script_before_path_info_meets_the_extension_rules() {
    let (_dir, server) = start();
    for target in ["/setup.exe", "/setup.exe/x", "/setup.exe/x/y.txt"] {
        let resp = request(server.addr, "GET", target, "");
        assert_eq!(resp.status, 404, "{target}: {}", resp.text());
        let body = resp.text();
        assert!(body.contains("HTTP Error 404.7 "), "{target}: {body}");
        assert!(body.contains("RequestFiltering"), "{target}: {body}");
    }
    // Where `.exe` is not denied, the split serves the script's file.
    let resp = request(server.addr, "GET", "/nodots/tool.exe/x", "");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "content");
}

/// Over HTTP/2 a body over the limit ends its own stream with its 413: the
/// connection and its other streams go on (it used to get GOAWAY, which
/// ended them all). HTTP/1.1 closes, since the body is not read.
#[test]
fn an_oversized_body_over_http2_ends_only_its_stream() {
    let (_dir, server) = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::channel::Channel;
        use http_body_util::BodyExt;
        use hyper::body::Bytes;
        let (mut client, connection) =
            common::http2_connection::<Channel<Bytes>>(server.addr).await;
        // A stream that is still going when the 413 comes.
        let (_still_open, body) = Channel::new(1);
        let slow = hyper::Request::get(format!("http://{}/a.txt", server.addr))
            .body(body)
            .unwrap();
        let (mut uploader, body) = Channel::new(1);
        let upload = hyper::Request::post(format!("http://{}/a.txt", server.addr))
            .header("content-length", "30000001")
            .body(body)
            .unwrap();
        let slow = client.send_request(slow);
        let response = client.send_request(upload).await.unwrap();
        assert_eq!(response.status(), 413);
        // The client may go on sending; the stream is over either way.
        let _ = uploader.send_data(Bytes::from_static(b"more")).await;
        let _ = response.into_body().collect().await;
        let (_, body) = Channel::new(1);
        let next = hyper::Request::get(format!("http://{}/a.txt", server.addr))
            .body(body)
            .unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut sender = client.clone();
            sender.ready().await.unwrap();
            sender.send_request(next).await
        })
        .await
        .expect("the connection answers the next stream");
        assert_eq!(next.unwrap().status(), 200);
        // The stream opened before the 413 is answered too.
        let slow = tokio::time::timeout(std::time::Duration::from_secs(10), slow)
            .await
            .expect("the earlier stream is answered");
        assert_eq!(slow.unwrap().status(), 200);
        assert!(!connection.is_finished());
    });
}

/// `internal`: a client's own request for the location gets 404; a URL a
/// rewrite rule led there passes, as nginx lets a `rewrite` into an
/// internal location.
#[test]
fn an_internal_location_answers_only_what_riis_asks_itself() {
    let dir = TempDir::new("reqfilter-internal");
    dir.write("www/private/a.txt", "private");
    dir.write("www/private/index.html", "index");
    let config = dir.write(
        "riis.toml",
        r#"[[modules]]
name = "RequestFiltering"
[[modules]]
name = "UrlRewrite"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

[[handlers]]
name = "StaticHandler"
path = "*"
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[[sites]]
name = "Test"
root = 'www'
bindings = ["127.0.0.1:0"]

[[sites.rewrite.rules]]
name = "downloads"
pattern = "^download/(.*)$"
action = { type = "Rewrite", url = "/private/{R:1}" }

[[sites.locations]]
path = "/private"
request_filtering = { internal = true }
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/private/a.txt").status, 404);
    assert_eq!(conn.get("/private/").status, 404);
    let rewritten = conn.get("/download/a.txt");
    assert_eq!(
        (rewritten.status, rewritten.text().as_str()),
        (200, "private")
    );
    // DefaultDocument's child request for the rewritten folder passes too.
    let index = conn.get("/download/");
    assert_eq!((index.status, index.text().as_str()), (200, "index"));
}

/// An `Allow` header never offers a method `verbs` refuses: a 405's (the
/// engine's, from the handler list) and an OPTIONS answer's
/// (ProtocolSupport's) leave out what the location would answer 404.6.
#[test]
fn allow_leaves_out_the_verbs_refused_here() {
    let dir = TempDir::new("reqfilter-allow");
    dir.write("www/a.txt", "a");
    dir.write("www/ro/a.txt", "a");
    dir.write("www/none/a.txt", "a");
    let config = dir.write(
        "riis.toml",
        r#"[[modules]]
name = "RequestFiltering"
[[modules]]
name = "ProtocolSupport"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "OPTIONSVerbHandler"
path = "*"
verbs = ["OPTIONS"]
modules = ["ProtocolSupport"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "File"
modules = ["StaticFile"]

[[sites]]
name = "Test"
root = 'www'
bindings = ["127.0.0.1:0"]
request_filtering = { verbs = { "head" = false } }

[[sites.locations]]
path = "/ro"
request_filtering = { allow_unlisted_verbs = false, verbs = { "GET" = true, "OPTIONS" = true } }

[[sites.locations]]
path = "/none"
request_filtering = { allow_unlisted_verbs = false, verbs = { "POST" = true } }
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let allow = |method: &str, target: &str| {
        let resp = request(server.addr, method, target, "Content-Length: 0\r\n");
        (resp.status, resp.header("allow").map(str::to_owned))
    };
    assert_eq!(allow("PUT", "/a.txt"), (405, Some("GET, OPTIONS".into())));
    assert_eq!(
        allow("OPTIONS", "/a.txt"),
        (200, Some("GET, OPTIONS".into()))
    );
    assert_eq!(
        allow("OPTIONS", "/ro/a.txt"),
        (200, Some("GET, OPTIONS".into()))
    );
    // Nothing the handlers answer is let through here: an empty Allow
    // (RFC 9110 §10.2.1: no method is allowed).
    assert_eq!(allow("POST", "/none/a.txt"), (405, Some("".into())));
}

/// Answers 405 with its `Allow` in two lines, as a backend may.
struct TwoAllowLines;

impl HttpModule for TwoAllowLines {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        use riis_pipeline::http::{header, HeaderValue};
        let resp = ctx.response_mut();
        resp.set_status(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        resp.append_header(header::ALLOW, HeaderValue::from_static("GET, POST"));
        resp.append_header(header::ALLOW, HeaderValue::from_static("PUT, DELETE"));
        ctx.set_request_handled();
        Status::Continue
    }
}

/// Every `Allow` line is one list (RFC 9110 §5.3): a refused method in the
/// second line is taken out too, and the lines become one.
#[test]
fn allow_in_several_lines_is_filtered_as_one_list() {
    fn register(_: u32, r: &mut ModuleRegistration<'_>, _: &ServerInfo) -> Result<(), ModuleError> {
        r.set_request_notifications(
            || TwoAllowLines,
            N::ExecuteRequestHandler.into(),
            RequestNotifications::NONE,
        )
    }
    let config = ECHO_CONFIG
        .replace("\"Echo\"", "\"TwoAllowLines\"")
        .replace(
            "max_allowed_content_length = 10",
            "verbs = { \"DELETE\" = false }",
        );
    let server = InProcessServer::start(&config, &[("TwoAllowLines", register)]);
    let resp = request(server.addr, "PATCH", "/x", "");
    assert_eq!(resp.status, 405);
    let allow: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("allow"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(allow, ["GET, POST, PUT"]);
}
