//! The `riis` binary over real sockets: defaults, static files, the example
//! modules, HTTP/1.1 keep-alive and pipelining, HTTP/2, the CLI, shutdown.

mod common;

use std::process::Command;

use common::{get, write_config, Connection, RunningBinary, TempDir};

const STATIC_MODULES: &str = r#"
[[modules]]
name = "EventTrace"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]
"#;

fn static_site() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("static");
    let root = dir.path().join("www");
    dir.write("www/index.html", "<h1>home</h1>");
    dir.write("www/a.txt", "alpha");
    dir.write("www/docs/index.html", "<h1>docs</h1>");
    dir.write("www/data.unknownext", "x");
    dir.write("www/nginx.conf", "server { listen 80; }");
    dir.write("www/my.cnf", "[client]\npassword=1");
    let config = write_config(&dir, &root, STATIC_MODULES);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

#[test]
fn with_no_configuration_the_example_site_is_served() {
    let server = RunningBinary::start(&[]);
    let resp = get(server.addr, "/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/html"));
    assert!(resp.text().contains("riis is running"));
    let resp = get(server.addr, "/hello.txt");
    assert_eq!(resp.text(), "Hello from riis.\n");
}

/// The configurations the README and the guide point at pass
/// `check-config` without a warning: a change of the configuration format
/// or of a module's section that breaks one fails here, not for a user.
#[test]
fn the_bundled_example_configurations_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for file in ["riis.toml", "defaults.toml"] {
        let out = common::riis_command("check-config", &examples.join(file));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("configuration is valid"),
            "{file}"
        );
        assert!(!stderr.contains("warning"), "{file}: {stderr}");
    }
}

/// SIGUSR2 (nginx's binary upgrade) is ignored, not the process's end;
/// SIGQUIT (nginx's graceful stop) drains and exits 0.
#[test]
fn nginx_signals_neither_kill_nor_hang_the_server() {
    let (_dir, mut server) = static_site();
    let kill = |signal: &str, pid: u32| {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let pid = server.child.id();
    kill("-USR2", pid);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(Connection::open(server.addr).get("/a.txt").status, 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGUSR2 ended it"
    );
    kill("-QUIT", pid);
    let mut status = None;
    common::wait_for("SIGQUIT to stop the server", || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
}

#[test]
fn static_files_have_type_length_and_validators() {
    let (_dir, server) = static_site();
    let resp = get(server.addr, "/a.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("content-length"), Some("5"));
    assert!(resp
        .header("last-modified")
        .is_some_and(|v| v.ends_with("GMT")));
    assert!(resp.header("etag").is_some_and(|v| v.starts_with('"')));
    assert!(resp
        .header("server")
        .is_some_and(|v| v.starts_with("riis/")));
    assert!(resp.header("date").is_some());
    assert_eq!(resp.text(), "alpha");
}

#[test]
fn changed_files_are_served_fresh_from_the_cache() {
    let (dir, server) = static_site();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").text(), "alpha");
    assert_eq!(conn.get("/a.txt").text(), "alpha");
    // Same length, new content: the file's change time tells them apart.
    dir.write("www/a.txt", "omega");
    assert_eq!(conn.get("/a.txt").text(), "omega");
    dir.write("www/a.txt", "a longer text");
    let resp = conn.get("/a.txt");
    assert_eq!(resp.header("content-length"), Some("13"));
    assert_eq!(resp.text(), "a longer text");
    std::fs::remove_file(dir.path().join("www/a.txt")).unwrap();
    assert_eq!(conn.get("/a.txt").status, 404);
}

/// A site root that is a symbolic link is followed at each request: an
/// atomic deploy (switching `current` to a new release) takes effect at
/// once, and the old release may be removed.
#[test]
fn a_symlinked_root_follows_the_link_when_it_is_switched() {
    let dir = TempDir::new("symlinked-root");
    dir.write("rel/v1/a.txt", "version one");
    dir.write("rel/v1/index.html", "home one");
    dir.write("rel/v2/a.txt", "version two");
    dir.write("rel/v2/index.html", "home two");
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(dir.path().join("rel/v1"), &current).unwrap();
    let config = write_config(&dir, &current, "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").text(), "version one");
    assert_eq!(conn.get("/").text(), "home one");
    // `ln -sfn` then `mv -T`: the link is replaced in one rename.
    let next = dir.path().join("current.next");
    std::os::unix::fs::symlink(dir.path().join("rel/v2"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    std::fs::remove_dir_all(dir.path().join("rel/v1")).unwrap();
    assert_eq!(conn.get("/a.txt").text(), "version two");
    assert_eq!(conn.get("/").text(), "home two");
}

/// Files and folders the server may not open answer 403, as nginx does,
/// not 404; a default document it may not read is passed over. As root
/// (where nothing is denied) the server runs as `nobody` through setpriv.
#[test]
fn files_the_server_may_not_read_are_forbidden() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("denied");
    dir.write("www/open.txt", "open");
    dir.write("www/secret.txt", "secret");
    dir.write("www/locked/a.txt", "locked");
    dir.write("www/dd/index.html", "unreadable index");
    dir.write("www/dd/default.htm", "readable default");
    let mode = |rel: &str, m: u32| {
        std::fs::set_permissions(dir.path().join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    let config = write_config(&dir, &dir.path().join("www"), "");
    // What the server must reach is open to others whatever the umask;
    // then three things are closed to it.
    for (rel, m) in [
        ("", 0o755),
        ("riis.toml", 0o644),
        ("www", 0o755),
        ("www/open.txt", 0o644),
        ("www/dd", 0o755),
        ("www/dd/default.htm", 0o644),
        ("www/secret.txt", 0o600),
        ("www/locked", 0o700),
        ("www/dd/index.html", 0o600),
    ] {
        mode(rel, m);
    }
    if !nix::unistd::geteuid().is_root() {
        mode("www/secret.txt", 0o000);
        mode("www/locked", 0o000);
        mode("www/dd/index.html", 0o000);
    }
    let mut command = common::riis_unprivileged(&dir);
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"]);
    let server = match RunningBinary::from_command(command) {
        Ok(server) => server,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: cannot start the server as another user ({e})");
            return;
        }
        Err(e) => panic!("setpriv is required in CI: {e}"),
    };
    let addr = server.addr;
    let mut conn = Connection::open(addr);
    let results: Vec<(u16, String)> = ["/open.txt", "/secret.txt", "/locked/a.txt", "/dd/"]
        .iter()
        .map(|path| {
            let resp = conn.get(path);
            (resp.status, resp.text())
        })
        .collect();
    drop(server);
    // Open again, so the folder can be removed.
    mode("www/locked", 0o755);
    assert_eq!(results[0], (200, "open".to_owned()));
    assert_eq!(results[1].0, 403, "{:?}", results[1]);
    assert_eq!(results[2].0, 403, "{:?}", results[2]);
    assert_eq!(results[3], (200, "readable default".to_owned()));
}

#[test]
fn head_sends_length_without_body() {
    let (_dir, server) = static_site();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("5"));
    // The connection is still usable: no stray body bytes were sent.
    assert_eq!(conn.get("/a.txt").text(), "alpha");
}

#[test]
fn missing_files_directories_and_unknown_types() {
    let (_dir, server) = static_site();
    assert_eq!(get(server.addr, "/missing.txt").status, 404);
    let resp = get(server.addr, "/docs");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("/docs/"));
    let resp = get(server.addr, "/docs/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "<h1>docs</h1>");
    // IIS refuses extensions without a MIME type (404.3).
    assert_eq!(get(server.addr, "/data.unknownext").status, 404);
    // Configuration files are not handed out as text (404.3), whatever
    // server's they are.
    assert_eq!(get(server.addr, "/nginx.conf").status, 404);
    assert_eq!(get(server.addr, "/my.cnf").status, 404);
    // Other methods than the handler's verbs: 405.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"DELETE /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
}

#[test]
fn encoded_traversal_is_refused() {
    let (_dir, server) = static_site();
    for path in [
        "/%2e%2e/riis.toml",
        "/docs/%2E%2E/%2e%2e/riis.toml",
        "/..%5criis.toml",
        "/a%00.txt",
    ] {
        let resp = get(server.addr, path);
        assert!(
            resp.status == 400 || resp.status == 404,
            "{path}: {}",
            resp.status
        );
        assert!(
            !resp.text().contains("[[sites]]"),
            "{path} leaked the config"
        );
    }
}

#[test]
fn event_trace_shows_the_pipeline_order() {
    let (_dir, server) = static_site();
    let resp = get(server.addr, "/a.txt");
    let trace = resp.header("x-riis-trace").expect("EventTrace header");
    // The server maps the URL while choosing the handler, as MapRequestHandler
    // starts: MapPath comes right before the modules' MapRequestHandler.
    assert!(
        trace.contains("PostResolveRequestCache,MapPath,MapRequestHandler"),
        "{trace}"
    );
    let events: Vec<&str> = trace.split(',').filter(|e| *e != "MapPath").collect();
    let expected_prefix = [
        "BeginRequest",
        "PostBeginRequest",
        "AuthenticateRequest",
        "PostAuthenticateRequest",
        "AuthorizeRequest",
        "PostAuthorizeRequest",
        "ResolveRequestCache",
        "PostResolveRequestCache",
        "MapRequestHandler",
    ];
    assert_eq!(&events[..9], &expected_prefix, "{trace}");
    // EventTrace is not the handler, so ExecuteRequestHandler is not in its
    // trace, but the post-event is.
    assert!(!events.contains(&"ExecuteRequestHandler"), "{trace}");
    let tail = [
        "PostExecuteRequestHandler",
        "ReleaseRequestState",
        "PostReleaseRequestState",
        "UpdateRequestCache",
        "PostUpdateRequestCache",
        "LogRequest",
        "PostLogRequest",
        "EndRequest",
        "PostEndRequest",
        "SendResponse",
    ];
    assert_eq!(&events[events.len() - tail.len()..], &tail, "{trace}");
}

#[test]
fn hello_world_finishes_at_begin_request() {
    let dir = TempDir::new("hello");
    let config = write_config(
        &dir,
        dir.path(),
        "[[modules]]\nname = \"EventTrace\"\n[[modules]]\nname = \"HelloWorld\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    for path in ["/", "/anything?x=1"] {
        let resp = get(server.addr, path);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert_eq!(resp.text(), "Hello World!");
        assert_eq!(
            resp.header("x-riis-trace"),
            Some("BeginRequest,LogRequest,PostLogRequest,EndRequest,PostEndRequest,SendResponse")
        );
    }
}

#[test]
fn async_hello_completes_through_on_async_completion() {
    let dir = TempDir::new("async");
    let config = write_config(&dir, dir.path(), "[[modules]]\nname = \"AsyncHello\"\n");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello World!");
    assert_eq!(
        resp.header("x-async-completion"),
        Some("BeginRequest bytes=12 status=0x00000000")
    );
    // Flushed before the end of the request, so the body was streamed.
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    // And the connection stays usable.
    assert_eq!(conn.get("/").text(), "Hello World!");
}

#[test]
fn keep_alive_and_pipelining() {
    let (_dir, server) = static_site();
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        assert_eq!(conn.get("/a.txt").text(), "alpha");
    }
    let batch: String = (0..16)
        .map(|i| {
            format!(
                "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
                if i % 2 == 0 { "a.txt" } else { "docs/" }
            )
        })
        .collect();
    conn.send_raw(batch.as_bytes());
    for i in 0..16 {
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200);
        let expected = if i % 2 == 0 { "alpha" } else { "<h1>docs</h1>" };
        assert_eq!(resp.text(), expected, "response {i} out of order");
    }
}

#[test]
fn http2_with_prior_knowledge() {
    let (_dir, server) = static_site();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let mut sender = common::http2_client(server.addr).await;
        let mut pending = Vec::new();
        for path in ["/a.txt", "/docs/", "/missing"] {
            let req = http::Request::get(format!("http://{}{path}", server.addr))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            pending.push(sender.send_request(req));
        }
        let mut results = Vec::new();
        for p in pending {
            let resp = p.await.unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            results.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        assert_eq!(results[0], (200, "alpha".into()));
        assert_eq!(results[1], (200, "<h1>docs</h1>".into()));
        assert_eq!(results[2].0, 404);
    });
}

#[test]
fn serve_root_serves_a_folder_without_a_file() {
    let dir = TempDir::new("root");
    dir.write("index.html", "folder home");
    let server = RunningBinary::start(&["--root", dir.path().to_str().unwrap()]);
    assert_eq!(get(server.addr, "/").text(), "folder home");
    // OPTIONS lists what the static handler answers, nothing more.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"OPTIONS /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"PUT /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = TempDir::new("check");
    let good = write_config(&dir, dir.path(), STATIC_MODULES);
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.write(
        "bad.toml",
        "[[modules]]\nname = \"StaticFile\"\n\n[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\nstatic_file = { max_age = \"soon\" }\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:8:"), "{err}");
    assert!(err.contains("sites[0].static_file.max_age"), "{err}");

    let typo = dir.write(
        "typo.toml",
        "[[modules]]\nname = \"StaticFile\"\n[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n[sites.static_file]\nmax_agee = 5\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo.toml:8: key `sites[0].static_file.max_agee`: unknown field"),
        "{err}"
    );

    let header = dir.write(
        "header.toml",
        "[server]\nserver_header = \"bad\\u0001\"\n[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", header.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("header.toml:2: key `server.server_header`"),
        "{err}"
    );

    let unknown = dir.write("unknown.toml", "[[modules]]\nname = \"NoSuchModule\"\n[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", unknown.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown.toml:2:") && err.contains("NoSuchModule"),
        "{err}"
    );

    // Location paths are matched against decoded, normalized URLs: one
    // that could never match is an error, and so is a second `/api/`.
    let site = "[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n";
    for (name, locations, expected) in [
        (
            "slashes.toml",
            "[[sites.locations]]\npath = \"/a//b\"\n",
            "slashes.toml:6: key `sites[0].locations[0].path`: location path `/a//b` never matches a request",
        ),
        (
            "escaped.toml",
            "[[sites.locations]]\npath = \"/a%20b\"\n",
            "write `/a b`",
        ),
        (
            "twice.toml",
            "[[sites.locations]]\npath = \"/api\"\n[[sites.locations]]\npath = \"/api/\"\n",
            "location `/api/` is defined twice",
        ),
        // A pattern, as handler paths are written, would be taken literally
        // and never apply.
        (
            "pattern.toml",
            "[[sites.locations]]\npath = \"/admin/*\"\n",
            "location path `/admin/*` holds `*`: a location is a path prefix, not a pattern; write `/admin`",
        ),
        (
            "query.toml",
            "[[sites.locations]]\npath = \"/a?x=1\"\n",
            "holds `?`",
        ),
    ] {
        refused(&dir, name, format!("{site}{locations}"), expected);
    }

    // serde would read a settings table from an array, field by field
    // (`limits = [5]` made every URL too long); an empty root would serve
    // the configuration's own folder.
    for (name, text, expected) in [
        (
            "array-limits.toml",
            format!("limits = [5]\n{site}"),
            "array-limits.toml:1: key `limits`: expected a table",
        ),
        (
            "array-section.toml",
            format!("static_file = [{{}}]\n[[modules]]\nname = \"StaticFile\"\n{site}"),
            "key `static_file`: expected a table",
        ),
        (
            "array-hsts.toml",
            format!("{site}hsts = [1]\n"),
            "key `sites[0].hsts`: expected a table",
        ),
        (
            "empty-root.toml",
            site.replace("root = \".\"", "root = \"\""),
            "empty-root.toml:3: key `sites[0].root`: the root is empty",
        ),
        (
            "duplicate.toml",
            format!("{site}name = \"y\"\n"),
            "duplicate.toml:5: duplicate key `name`",
        ),
        (
            "relative-pattern.toml",
            format!("[[handlers]]\nname = \"api\"\npath = \"api/*\"\nmodules = [\"StaticFile\"]\n{site}"),
            "relative-pattern.toml:3: key `handlers[0].path`: `api/*` has a `/`",
        ),
    ] {
        refused(&dir, name, text, expected);
    }

    // Module sections refuse values they could only clamp or ignore.
    let modules = "[[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"StaticCompression\"\n\
                   [[modules]]\nname = \"RequestFiltering\"\n[[modules]]\nname = \"CustomError\"\n";
    for (name, section, expected) in [
        (
            "mime.toml",
            "static_file = { mime_types = { md = \"text/plain\\nX: 1\" } }",
            "key `sites[0].static_file.mime_types`: `text/plain\\nX: 1` (for `md`) is not a media type",
        ),
        (
            "gzip.toml",
            "static_compression = { gzip_level = 99 }",
            "key `sites[0].static_compression.gzip_level`: 99 is not a gzip level (0 to 9)",
        ),
        (
            "disk.toml",
            "static_compression = { max_disk_space_usage = 0 }",
            "key `sites[0].static_compression.max_disk_space_usage`: 0 is not a size in megabytes",
        ),
        (
            "crossed.toml",
            "static_compression = { min_size = 5000, max_size = 4000 }",
            "key `sites[0].static_compression`: min_size (5000) is larger than max_size (4000)",
        ),
        (
            "max_url.toml",
            "request_filtering = { max_url = 0 }",
            "key `sites[0].request_filtering.max_url`: 0 would refuse every URL",
        ),
        (
            "status.toml",
            "http_errors = { errors = [{ status = 200, path = \"/x\" }] }",
            "key `sites[0].http_errors.errors[0].status`: 200 is not an error status",
        ),
    ] {
        refused(&dir, name, format!("{modules}{site}{section}\n"), expected);
    }

    // A pid file beside a configuration named without a folder is fine.
    let bare = dir.write(
        "bare/riis.toml",
        format!("[server]\npid_file = \"riis.pid\"\n{site}"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .current_dir(bare.parent().unwrap())
        .args(["check-config", "--config", "riis.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What `serve` would fail on only after binding.
    refused(
        &dir,
        "pid.toml",
        format!("[server]\npid_file = \"nowhere/riis.pid\"\n{site}"),
        "pid.toml:2: key `server.pid_file`: the folder of",
    );
    dir.write("occupied/keep.txt", "a folder where the pid file would go");
    refused(
        &dir,
        "pid-folder.toml",
        format!("[server]\npid_file = \"occupied\"\n{site}"),
        "pid-folder.toml:2: key `server.pid_file`: ",
    );
    refused(
        &dir,
        "pid-folder.toml",
        format!("[server]\npid_file = \"occupied\"\n{site}"),
        "occupied exists and is not a file",
    );
}

/// Writes `text` as `name` and expects `riis check-config` to refuse it
/// with `expected` in its message.
fn refused(dir: &TempDir, name: &str, text: String, expected: &str) {
    let path = dir.write(name, text);
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{name}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expected), "{name}: {err}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let (_dir, server) = static_site();
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn serve_raises_the_soft_open_files_limit_to_the_hard_one() {
    // Start the server with a low soft limit, as a login shell often has.
    let dir = TempDir::new("nofile");
    dir.write("www/a.txt", "a");
    let config = write_config(&dir, &dir.path().join("www"), "");
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .unwrap();
    let soft_limit = hard.parse::<u64>().map_or(256, |h| h.min(256));
    let server =
        RunningBinary::start_with_soft_nofile(&["--config", config.to_str().unwrap()], soft_limit);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft and hard differ: {line}");
    assert_eq!(fields[4], hard);
}

/// A site with `www/a.txt` and `pid_file = "riis.pid"`, bound to `binding`:
/// its folder and its configuration file.
fn pid_file_site(tag: &str, binding: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    dir.write("www/a.txt", "a");
    let config = dir.write(
        "riis.toml",
        format!(
            "[server]\npid_file = \"riis.pid\"\n[[sites]]\nname = \"Test\"\nroot = '{}'\n\
             bindings = [\"{binding}\"]\n",
            dir.path().join("www").display()
        ),
    );
    (dir, config)
}

#[test]
fn a_second_server_that_cannot_bind_leaves_the_pid_file_alone() {
    let port = common::free_port();
    let (dir, config) = pid_file_site("pidfile", &format!("127.0.0.1:{port}"));
    let first = RunningBinary::start_as_configured(&["--config", config.to_str().unwrap()]);
    let pid_file = dir.path().join("riis.pid");
    let first_pid = first.child.id().to_string();
    // Written before the listening line.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );

    let second = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RIIS_LOG", "off")
        .output()
        .unwrap();
    assert!(!second.status.success());
    // Named where the file asks for the address.
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("riis.toml:6: key `sites[0].bindings[0]`: cannot listen on"),
        "{stderr}"
    );
    // The running server can still be found (and reloaded).
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );
    assert_eq!(get(first.addr, "/a.txt").status, 200);
    // It removes its own file when it stops.
    assert!(first.terminate().success());
    assert!(!pid_file.exists());
}

/// A pid file that no running riis holds is stale: its number may belong to
/// another program by now, so `riis reload` and `riis status` refuse it
/// instead of signalling that program.
#[test]
fn reload_and_status_refuse_a_stale_pid_file() {
    let (dir, config) = pid_file_site("stale-pid", "127.0.0.1:0");
    // A process that is not riis, under the stale pid file's number: the
    // signals would end it.
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    dir.write("riis.pid", format!("{}\n", bystander.id()));
    for command in ["reload", "status"] {
        let out = common::riis_command(command, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("no riis holds it: the pid file is stale"),
            "{command}: {stderr}"
        );
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the process named by the stale pid file was signalled"
    );
    // 0 would signal the command's own process group, -1 every process.
    for number in ["0", "-1"] {
        dir.write("riis.pid", format!("{number}\n"));
        let out = common::riis_command("reload", &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("does not hold a process id"), "{stderr}");
    }
    let _ = bystander.kill();
    let _ = bystander.wait();

    // A server started over the stale file takes it over and can be found.
    let server = RunningBinary::start_as_configured(&["--config", config.to_str().unwrap()]);
    let out = common::riis_command("reload", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    // The status report is staged under a name of its own: a link planted
    // there (the pid file's folder may be shared) is replaced, and its
    // target left alone.
    let victim = dir.write("victim.txt", "keep me");
    std::os::unix::fs::symlink(&victim, dir.path().join("riis.pid.status.tmp")).unwrap();
    let report = common::riis_status(&config);
    assert!(report.contains("riis.toml"), "{report}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    // The file being edited (broken for now): status still finds the
    // server, from `[server] pid_file` alone.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[[sites]]\nname = ")).unwrap();
    assert!(common::riis_status(&config).contains("riis.toml"));
    std::fs::write(&config, &text).unwrap();
    // Another file that names the same pid file: the server would reload
    // its own, so validating this one proves nothing.
    let other = dir.write("other.toml", std::fs::read_to_string(&config).unwrap());
    let out = common::riis_command("reload", &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not ") && stderr.contains("other.toml"),
        "{stderr}"
    );
    assert!(server.terminate().success());
}

/// Two servers that share a pid file (different addresses): the second
/// stops with an error naming the first, which stays findable.
#[test]
fn a_second_server_does_not_take_a_held_pid_file() {
    let (dir, config) = pid_file_site("held-pid", "127.0.0.1:0");
    let first = RunningBinary::start_as_configured(&["--config", config.to_str().unwrap()]);
    let first_pid = first.child.id().to_string();
    // Port 0: the second server binds, then finds the pid file held.
    let second = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RIIS_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("is held by another riis (process {first_pid})")),
        "{stderr}"
    );
    let pid_file = dir.path().join("riis.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );
    // No staged file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("riis.pid."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(first.terminate().success());
    assert!(!pid_file.exists());
}

/// Servers started at the same moment with one pid file: exactly one
/// keeps it and runs; the others stop, naming it (a file renamed into
/// place let each replace the one before, and all ran).
#[test]
fn of_servers_started_at_once_one_holds_the_pid_file() {
    let (dir, config) = pid_file_site("pid-race", "127.0.0.1:0");
    for _ in 0..3 {
        let mut children: Vec<std::process::Child> = (0..3)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_riis"))
                    .args(["serve", "--config", config.to_str().unwrap()])
                    .env("RIIS_LOG", "off")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pid_file = dir.path().join("riis.pid");
        common::wait_for("a server to hold the pid file", || {
            std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty())
        });
        // The others stop within moments of binding.
        let mut stopped = 0;
        common::wait_for("all but one to stop", || {
            stopped = children
                .iter_mut()
                .map(|c| c.try_wait().unwrap().is_some())
                .filter(|&ended| ended)
                .count();
            stopped >= 2
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let running: Vec<u32> = children
            .iter_mut()
            .filter_map(|c| c.try_wait().unwrap().is_none().then(|| c.id()))
            .collect();
        assert_eq!(running.len(), 1, "servers running with one pid file");
        let holder = running[0].to_string();
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), holder);
        for child in &mut children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        assert!(!pid_file.exists());
    }
}

/// A script that reads nothing of the server's stdout (or reads the first
/// line and goes away) does not stop the server.
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let port = common::free_port();
    let (dir, config) = pid_file_site("closed-stdout", &format!("127.0.0.1:{port}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RIIS_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the server stopped");
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(get(addr, "/a.txt").status, 200);
    assert!(child.try_wait().unwrap().is_none(), "the server stopped");
    let server = RunningBinary { child, addr };
    assert!(server.terminate().success());
    assert!(!dir.path().join("riis.pid").exists());
}

#[test]
fn command_line_errors_name_the_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--root", "/nonexistent/riis-root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("riis: --root: `/nonexistent/riis-root` is not a directory"),
        "{err}"
    );

    // Two sites without host names cannot share the one --listen address.
    let dir = TempDir::new("listen");
    let root = dir.path().display().to_string();
    let config = dir.write(
        "two.toml",
        format!(
            "[[sites]]\nname = \"a\"\nroot = '{root}'\nbindings = [\"127.0.0.1:80\"]\n\
             [[sites]]\nname = \"b\"\nroot = '{root}'\nbindings = [\"127.0.0.1:81\"]\n"
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("riis: --listen 127.0.0.1:0: sites `a` and `b` both bind 127.0.0.1:0"),
        "{err}"
    );
}

/// Names and values that would break what they end up in (a log line, the
/// listening line, a status line) or silently match nothing are
/// configuration errors naming their key.
#[test]
fn names_and_values_that_cannot_work_are_refused() {
    let dir = TempDir::new("check-values");
    dir.write("a-file", "not a folder");
    let site = "[[sites]]\nname = \"x\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n";
    let cases = [
        (
            "[[sites]]\nname = \"s\\u001b[31m\\nX\"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n"
                .to_owned(),
            "key `sites[0].name`: a name cannot hold control characters",
        ),
        (
            "[[sites]]\nname = \" \"\nroot = \".\"\nbindings = [\"127.0.0.1:80\"]\n".to_owned(),
            "key `sites[0].name`: a name cannot be empty",
        ),
        (
            format!("[[modules]]\nname = \"\"\ntype = \"StaticFile\"\n{site}"),
            "key `modules[0].name`: a name cannot be empty",
        ),
        (
            format!(
                "[[modules]]\nname = \"RequestFiltering\"\n{site}[sites.request_filtering.file_extensions]\ndeny = [\"\"]\n"
            ),
            "an extension cannot be empty",
        ),
        (
            format!("[[modules]]\nname = \"HttpLogging\"\n{site}[sites.http_logging]\ndirectory = \"a-file\"\n"),
            "is not a folder",
        ),
        (
            format!(
                "[[modules]]\nname = \"UrlRewrite\"\n{site}[[sites.rewrite.rules]]\nname = \"r\"\npattern = \"x\"\naction = {{ type = \"CustomResponse\", status_code = 404, status_reason = \"a\\r\\nb\" }}\n"
            ),
            "status_reason cannot hold line breaks",
        ),
        // Past TOML's 64 bits: its own key and line, not its section's.
        (
            format!(
                "[[modules]]\nname = \"IpRestriction\"\n{site}[sites.dynamic_ip_security.deny_by_request_rate]\nenabled = true\nrequest_interval_ms = 18446744073709551615\n"
            ),
            "riis.toml:9: key `sites[0].dynamic_ip_security.deny_by_request_rate.request_interval_ms`: the number is out of range",
        ),
    ];
    for (text, expected) in cases {
        let config = dir.write("riis.toml", &text);
        let out = Command::new(env!("CARGO_BIN_EXE_riis"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains("riis.toml:"), "{err}");
        assert!(
            err.contains(expected),
            "{text}: expected `{expected}` in {err}"
        );
    }
}

/// A location path holds the decoded form of the URLs it matches: a `%`
/// that starts no escape is a literal one, and matches a request that
/// sends it escaped.
#[test]
fn a_location_path_may_hold_a_literal_percent() {
    let dir = TempDir::new("percent-location");
    dir.write("www/100%/a.txt", "all of it");
    let config = dir.write(
        "riis.toml",
        format!(
            "{STATIC_MODULES}\n[[sites]]\nname = \"T\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n\
             [[sites.locations]]\npath = \"/100%\"\nstatic_file = {{ max_age = 60 }}\n",
            dir.path().join("www").display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/100%25/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "all of it"));
    assert!(
        resp.header("cache-control")
            .is_some_and(|c| c.contains("max-age=60")),
        "{resp:?}"
    );
}

/// A client that goes on sending a large body nobody reads (a POST to a
/// static file, answered without it) still reads its whole answer: the
/// connection closes with a lingering close, not a reset that would throw
/// away the end of the answer.
#[test]
fn an_answer_to_a_large_unread_upload_arrives_whole() {
    use std::io::Read as _;
    let dir = TempDir::new("linger");
    let file: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    dir.write("big.bin", &file);
    let server = RunningBinary::start(&["--root", dir.path().to_str().unwrap()]);
    for _ in 0..3 {
        let stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let body_len = 8 * 1024 * 1024;
        let sender = common::send_in_background(
            &stream,
            format!("GET /big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n"),
            body_len,
        );
        let mut answer = Vec::new();
        let mut reader = stream;
        let mut buf = [0u8; 65536];
        // Read slowly at first, so the answer waits in the server's socket
        // while the body keeps coming.
        std::thread::sleep(std::time::Duration::from_millis(300));
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the answer broke off after {} bytes: {e}", answer.len()),
            }
        }
        let _ = sender.join();
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", &answer[..40]);
        assert_eq!(&answer[head_end..], &file[..]);
    }
}

/// A configuration "file" that is a FIFO (or a device) is refused at once:
/// reading it would hold `check-config`, or a reload, forever.
#[test]
fn a_configuration_that_is_not_a_regular_file_is_refused() {
    let dir = TempDir::new("config-fifo");
    let fifo = dir.path().join("riis.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = Command::new("timeout")
        .args(["10", env!("CARGO_BIN_EXE_riis"), "check-config", "--config"])
        .arg(&fifo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// A `pid_file` that names a file holding something else (the
/// configuration itself, once) is refused: the server would replace it
/// with its process id, then remove it at exit.
#[test]
fn a_pid_file_naming_another_file_is_refused() {
    let (dir, config) = pid_file_site("pid-foreign", "127.0.0.1:0");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("pid_file = \"riis.pid\"", "pid_file = \"riis.toml\"");
    std::fs::write(&config, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("holds no process id"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "the configuration was touched"
    );
    drop(dir);
}

/// `--listen` takes an address as bindings write it (`localhost:PORT`
/// too), and refuses a scheme or a host name, which it would drop.
#[test]
fn listen_takes_a_bindings_address() {
    let dir = TempDir::new("listen-forms");
    dir.write("www/a.txt", "a");
    let server = RunningBinary::start_as_configured(&[
        "--root",
        dir.path().join("www").to_str().unwrap(),
        "--listen",
        "localhost:0",
    ]);
    assert_eq!(get(server.addr, "/a.txt").text(), "a");
    assert!(server.addr.ip().is_loopback());
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--listen", "https://127.0.0.1:0:site.test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--listen takes an address and a port"),
        "{stderr}"
    );
}

/// `riis reload` waits for the server's verdict: a reload the server
/// refuses (here, one that moves a binding, which needs a restart) fails
/// the command with the reason, as it would fail `systemctl reload`.
#[test]
fn reload_reports_the_servers_verdict() {
    let (dir, config) = pid_file_site("reload-verdict", "127.0.0.1:0");
    let server = RunningBinary::start_as_configured(&["--config", config.to_str().unwrap()]);
    let out = common::riis_command("reload", &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded"), "{stdout}");

    let text = std::fs::read_to_string(&config).unwrap();
    let port = common::free_port();
    std::fs::write(
        &config,
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let out = common::riis_command("reload", &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refused the reload"), "{stderr}");
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    // The status says whether the latest reload was applied; the reason
    // of the last refusal stays.
    let status = common::riis_status(&config);
    assert!(status.contains("last_reload: refused\n"), "{status}");
    std::fs::write(&config, &text).unwrap();
    assert!(common::riis_command("reload", &config).status.success());
    let status = common::riis_status(&config);
    assert!(status.contains("last_reload: applied\n"), "{status}");
    assert!(status.contains("last_reload_refusal: "), "{status}");
    assert!(server.terminate().success());
    // A clean exit leaves neither the pid file nor the status file.
    let pid = config.with_file_name("riis.pid");
    assert!(!pid.exists());
    assert!(!config.with_file_name("riis.pid.status").exists());
    drop(dir);
}

/// Without `max_connections`, connections may use the open files limit but
/// a reserve (a fifth, at least 128, at most half): past it a new one gets
/// 503, and the files the server must open are still there for the
/// connections it has (at the limit itself every open failed, and each
/// accept at once again).
#[test]
fn connections_leave_descriptors_for_the_rest() {
    let dir = TempDir::new("nofile-reserve");
    dir.write("www/a.txt", "a");
    let config = write_config(&dir, &dir.path().join("www"), "");
    // 300 descriptors: 172 for connections, 128 kept.
    let server = RunningBinary::start_with_nofile(&["--config", config.to_str().unwrap()], 300);
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let mut conn = Connection::open(server.addr);
        // Each is admitted (or refused) when accepted: a request tells.
        let resp = conn.get("/a.txt");
        if resp.status == 503 {
            refused = Some(i);
            break;
        }
        assert_eq!(resp.status, 200, "connection {i}");
        held.push(conn);
    }
    assert_eq!(refused, Some(172), "the first connection refused");
    // The held connections still open files.
    assert_eq!(held[0].get("/a.txt").text(), "a");
    drop(held);
    // Counted until the server has closed them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(server.addr, "/a.txt").status != 200 {
        assert!(std::time::Instant::now() < deadline, "still refused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Out of descriptors (here: connections allowed past the open files
/// limit), a file that cannot be opened is the server's failure, 500, not
/// a 404 that would tell a cache the file is gone.
#[test]
fn a_file_the_server_cannot_open_for_want_of_descriptors_is_500_not_404() {
    let dir = TempDir::new("nofile-500");
    dir.write("www/a.txt", "a");
    dir.write("www/b.txt", "b");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[limits]\nmax_connections = 10000\n",
    );
    let server = RunningBinary::start_with_nofile(&["--config", config.to_str().unwrap()], 100);
    let mut first = Connection::open(server.addr);
    assert_eq!(first.get("/a.txt").status, 200);
    // More connections than the limit leaves room for: the server accepts
    // until it has no descriptor left (the rest wait in the backlog).
    let mut idle: Vec<_> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(server.addr).ok())
        .collect();
    let fds = format!("/proc/{}/fd", server.child.id());
    // (It once failed to get there within wait_for's 20 s while the
    // machine ran the whole suite: the counts say how far it got.)
    let start = std::time::Instant::now();
    loop {
        idle.extend(std::net::TcpStream::connect(server.addr).ok());
        let open = std::fs::read_dir(&fds).map_or(0, |d| d.count());
        if open >= 100 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the server has {open} descriptors open after {} connections",
            idle.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let resp = first.get("/b.txt");
    assert_eq!(resp.status, 500, "{}", resp.text());
    assert!(resp.text().contains("0x80070004"), "{}", resp.text());
    drop(idle);
}

/// `riis import-web-config`, on standard output.
fn import_web_config(file: &std::path::Path, location: Option<&str>) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_riis"));
    command.arg("import-web-config").arg(file);
    if let Some(path) = location {
        command.args(["--location", path]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A site's `web.config` and a folder's, converted, serve as they did on
/// IIS: rewrite rules and maps, default documents, headers, MIME types and
/// the client cache; what has no conversion is named.
#[test]
fn an_iis_web_config_converts_to_a_working_configuration() {
    let dir = TempDir::new("web-config");
    let root = dir.path().join("www");
    dir.write("www/new/a.txt", "new a");
    dir.write("www/home.html", "home");
    dir.write("www/missing.html", "no such page");
    dir.write("www/private/a.txt", "hidden");
    dir.write("www/a.bak", "old");
    dir.write("www/app.webmanifest", "{}");
    dir.write("www/blog/index.html", "blog front controller");
    dir.write(
        "www/links.html",
        "<a href=\"http://old.test/a\">OLD-NAME</a><video src=\"http://old.test/v.mp4\"></video>",
    );
    let site_config = dir.write(
        "web.config",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <system.web><compilation debug="false" /></system.web>
  <location path="admin&#10;[[sites]]"><system.webServer><httpRedirect enabled="true" destination="/" /></system.webServer></location>
  <system.webServer>
    <handlers><add name="PHP" path="*.php" verb="*" modules="FastCgiModule" /></handlers>
    <defaultDocument><files><clear /><add value="home.html" /></files></defaultDocument>
    <security>
      <requestFiltering allowDoubleEscaping="false">
        <requestLimits maxAllowedContentLength="1000" />
        <hiddenSegments><add segment="private" /></hiddenSegments>
        <fileExtensions><add fileExtension=".bak" allowed="false" /></fileExtensions>
        <filteringRules />
      </requestFiltering>
      <ipSecurity allowUnlisted="true"><add ipAddress="10.0.0.0" subnetMask="255.0.0.0" /></ipSecurity>
      <authentication><anonymousAuthentication enabled="true" /></authentication>
    </security>
    <httpRedirect enabled="false"><add wildcard="*.php" destination="/index.html" /></httpRedirect>
    <httpErrors errorMode="Custom" existingResponse="Replace">
      <remove statusCode="404" subStatusCode="-1" />
      <error statusCode="404" path="/missing.html" responseMode="ExecuteURL" />
      <error statusCode="500" path="%SystemDrive%\inetpub\custerr\500.htm" />
      <error statusCode="401" prefixLanguageFilePath="%SystemDrive%\inetpub\custerr" path="401.htm" />
    </httpErrors>
    <httpProtocol>
      <customHeaders>
        <remove name="X-Frame-Options" />
        <add name="X-Frame-Options" value="SAMEORIGIN" />
      </customHeaders>
    </httpProtocol>
    <staticContent>
      <mimeMap fileExtension=".webmanifest" mimeType="application/manifest+json" />
      <clientCache cacheControlMode="useMaxAge" cacheControlMaxAge="7.00:00:00" setEtag="false" />
    </staticContent>
    <rewrite>
      <rewriteMaps>
        <rewriteMap name="Legacy">
          <add key="/old-page" value="/home.html" />
          <add key="/blog/legacy" value="/home.html" />
        </rewriteMap>
      </rewriteMaps>
      <rules>
        <rule name="legacy pages" stopProcessing="true">
          <match url=".*" />
          <conditions><add input="{Legacy:{REQUEST_URI}}" pattern="(.+)" /></conditions>
          <action type="Redirect" url="{C:1}" appendQueryString="false" redirectType="Found" />
        </rule>
        <rule name="old to new">
          <match url="^old/(.*)$" ignoreCase="true" />
          <serverVariables><set name="HTTP_X_MOVED" value="yes" /></serverVariables>
          <action type="Rewrite" url="new/{R:1}" logRewrittenUrl="true" />
        </rule>
        <rule name="switched off" enabled="false">
          <match url=".*" />
          <action type="AbortRequest" />
        </rule>
      </rules>
      <outboundRules rewriteBeforeCache="true">
        <preConditions>
          <preCondition name="IsHTML"><add input="{RESPONSE_CONTENT_TYPE}" pattern="^text/html" /></preCondition>
        </preConditions>
        <customTags><tags name="Media"><tag name="video" attribute="src" /></tags></customTags>
        <rule name="x"><match serverVariable="RESPONSE_Server" pattern=".*" /><action type="Rewrite" /></rule>
        <rule name="negated"><match filterByTags="None" pattern="x" negate="true" /><action type="Rewrite" value="y" /></rule>
        <rule name="links" preCondition="IsHTML">
          <match filterByTags="A, CustomTags" customTags="Media" pattern="^http://old\.test/(.*)" />
          <action type="Rewrite" value="/{R:1}" />
        </rule>
        <rule name="text" preCondition="IsHTML">
          <match filterByTags="None" pattern="OLD-NAME" />
          <action type="Rewrite" value="New Name" />
        </rule>
      </outboundRules>
    </rewrite>
  </system.webServer>
</configuration>"#,
    );
    let blog_config = dir.write(
        "blog.web.config",
        r#"<configuration><system.webServer><rewrite><rules>
  <rule name="gone with the clear"><match url=".*" /><action type="AbortRequest" /></rule>
  <clear />
  <rule name="WordPress">
    <match url=".*" />
    <conditions>
      <add input="{REQUEST_FILENAME}" matchType="IsFile" negate="true" />
      <add input="{REQUEST_FILENAME}" matchType="IsDirectory" negate="true" />
    </conditions>
    <action type="Rewrite" url="index.html" />
  </rule>
  <rule name="temporary"><match url="^x$" /><action type="AbortRequest" /></rule>
  <remove name="temporary" />
</rules></rewrite></system.webServer></configuration>"#,
    );
    let (site_text, left_out) = import_web_config(&site_config, None);
    for named in [
        "system.web",
        "system.webServer/handlers",
        "the page for 500 is IIS's own or at the Windows path",
        "the page for 401 is IIS's own",
        "attribute `setEtag` has no conversion",
        "<location> (path \"admin\\n[[sites]]\"",
        "system.webServer/security/requestFiltering/filteringRules",
        "attribute `rewriteBeforeCache` has no conversion",
        "outbound rule `negated` over the whole body is negated",
    ] {
        assert!(left_out.contains(named), "{named} in:\n{left_out}");
        assert!(site_text.contains(named), "{named} in:\n{site_text}");
    }
    // httpRedirect's wildcard rule is converted (the section stays off).
    assert!(
        site_text.contains("wildcards = [{ destination = \"/index.html\", wildcard = \"*.php\" }]"),
        "{site_text}"
    );
    assert!(
        site_text.contains(
            "# List these modules in [[modules]] for the sections below: DefaultDocument, \
             RequestFiltering, IpRestriction, AnonymousAuthentication, HttpRedirection, \
             CustomError, ProtocolSupport, StaticFile, UrlRewrite."
        ),
        "{site_text}"
    );
    let converted: toml::Table = site_text.parse().unwrap();
    // A disabled rule stays, switched off.
    let rules = converted["rewrite"]["rules"].as_array().unwrap();
    assert_eq!(rules[2]["enabled"].as_bool(), Some(false), "{site_text}");
    assert_eq!(
        rules[1]["action"]["log_rewritten_url"].as_bool(),
        Some(true),
        "{site_text}"
    );
    let filtering = &converted["request_filtering"];
    assert_eq!(
        filtering["file_extensions"]["deny"].as_array().unwrap(),
        &[toml::Value::String(".bak".into())]
    );
    assert_eq!(
        filtering["max_allowed_content_length"].as_integer(),
        Some(1000)
    );
    let rules = converted["ip_security"]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["subnet_mask"].as_str(), Some("255.0.0.0"));
    let (blog_text, _) = import_web_config(&blog_config, Some("/blog/"));
    assert!(
        blog_text.contains("[[sites.locations]]\npath = \"/blog\""),
        "{blog_text}"
    );
    // `<clear />`: the site's rules do not run in the folder, nor the
    // file's own before it.
    assert!(blog_text.contains("clear_rules = true"), "{blog_text}");
    assert!(!blog_text.contains("gone with the clear"), "{blog_text}");
    // `<remove>` of the file's own rule drops it.
    assert!(!blog_text.contains("temporary"), "{blog_text}");

    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"RequestFiltering\"\n[[modules]]\nname = \"IpRestriction\"\n\
             [[modules]]\nname = \"UrlRewrite\"\n[[modules]]\nname = \"ProtocolSupport\"\n\
             [[modules]]\nname = \"CustomError\"\n[[modules]]\nname = \"HttpRedirection\"\n\
             [[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"DefaultDocument\"\n\
             [[modules]]\nname = \"AnonymousAuthentication\"\n\
             [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nresource_type = \"Either\"\n\
             modules = [\"StaticFile\", \"DefaultDocument\"]\n\
             {site_text}\n\
             [[sites]]\nname = \"s\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{blog_text}",
            root.display()
        ),
    );
    let out = common::riis_command("check-config", &config);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&config).unwrap()
    );
    // A line break in a name stays in its comment: no site was added.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 site)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let moved = get(server.addr, "/old/a.txt");
    assert_eq!((moved.status, moved.text().as_str()), (200, "new a"));
    assert_eq!(moved.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(moved.header("cache-control"), Some("max-age=604800"));
    // Outbound rules: a header removed, links and a custom tag's, and the
    // whole body's text.
    let links = get(server.addr, "/links.html");
    assert_eq!(
        links.text(),
        "<a href=\"/a\">New Name</a><video src=\"/v.mp4\"></video>"
    );
    assert_eq!(links.header("server"), None);
    let legacy = get(server.addr, "/old-page");
    assert_eq!(legacy.status, 302);
    assert_eq!(legacy.header("location"), Some("/home.html"));
    assert_eq!(get(server.addr, "/").text(), "home");
    assert_eq!(
        get(server.addr, "/app.webmanifest").header("content-type"),
        Some("application/manifest+json")
    );
    assert_eq!(get(server.addr, "/private/a.txt").status, 404);
    assert_eq!(get(server.addr, "/a.bak").status, 404);
    let missing = get(server.addr, "/nowhere.txt");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "no such page")
    );
    let post = get(server.addr, "/blog/2024/hello-world");
    assert_eq!(
        (post.status, post.text().as_str()),
        (200, "blog front controller")
    );
    // The site's map redirect would take it, but the folder cleared the
    // site's rules.
    let legacy = get(server.addr, "/blog/legacy");
    assert_eq!(
        (legacy.status, legacy.text().as_str()),
        (200, "blog front controller")
    );
}

#[test]
fn a_web_config_that_cannot_be_read_is_an_error() {
    let dir = TempDir::new("web-config-bad");
    for (text, says) in [
        ("<configuration><system.webServer>", "not a valid XML file"),
        ("<appSettings />", "not <configuration>"),
        (
            "<configuration><system.webServer><rewrite><rules><rule name=\"r\"><action type=\"None\" /></rule></rules></rewrite></system.webServer></configuration>",
            "rule `r` has no <match>",
        ),
        (
            "<configuration><system.webServer><rewrite><outboundRules><preConditions><preCondition name=\"P\" /><preCondition name=\"P\" /></preConditions></outboundRules></rewrite></system.webServer></configuration>",
            "two <preCondition> elements are named `P`",
        ),
        (
            "<configuration><system.webServer><defaultDocument /></system.webServer><system.webServer><defaultDocument /></system.webServer></configuration>",
            "<defaultDocument> is set twice",
        ),
        (
            "<configuration><system.webServer><staticContent><clientCache cacheControlMaxAge=\"999999999999999999.00:00:00\" /></staticContent></system.webServer></configuration>",
            "is not d.hh:mm:ss",
        ),
    ]
    .into_iter()
    .map(|(t, s)| (t.to_owned(), s))
    .chain(std::iter::once((
        format!(
            "<configuration>{}{}</configuration>",
            "<a>".repeat(5000),
            "</a>".repeat(5000)
        ),
        "nested deeper than",
    ))) {
        let file = dir.write("web.config", text);
        let out = Command::new(env!("CARGO_BIN_EXE_riis"))
            .arg("import-web-config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("web.config") && said.contains(says), "{said}");
    }
}

/// `<location path="wp-admin">` elements of a web.config become locations
/// of their own below the file's (`--location /` for a site's root), which
/// inherit the file's settings as IIS's folders inherit their parent's.
#[test]
fn location_elements_of_a_web_config_become_locations() {
    let dir = TempDir::new("web-config-locations");
    let root = dir.path().join("www");
    dir.write("www/index.html", "front");
    dir.write("www/wp-admin/a.txt", "admin");
    let file = dir.write(
        "web.config",
        r#"<configuration>
  <system.webServer>
    <httpProtocol><customHeaders><add name="X-Site" value="all" /></customHeaders></httpProtocol>
    <rewrite><rules><rule name="front">
      <match url=".*" />
      <conditions><add input="{REQUEST_FILENAME}" matchType="IsFile" negate="true" /></conditions>
      <action type="Rewrite" url="index.html" />
    </rule></rules></rewrite>
  </system.webServer>
  <location path="wp-admin">
    <system.webServer>
      <security><ipSecurity allowUnlisted="false"><add ipAddress="10.0.0.0" subnetMask="255.0.0.0" allowed="true" /></ipSecurity></security>
      <rewrite><rules><remove name="front" /></rules></rewrite>
    </system.webServer>
  </location>
  <location path="../outside"><system.webServer /></location>
</configuration>"#,
    );
    // At a site's root without `--location`, they are named, with the way.
    let (_, left_out) = import_web_config(&file, None);
    assert!(
        left_out.contains("convert with `--location /`"),
        "{left_out}"
    );
    let (text, left_out) = import_web_config(&file, Some("/"));
    // `<remove>` of an inherited rule.
    assert!(text.contains("remove_rules = [\"front\"]"), "{text}");
    assert!(
        left_out.contains("path \"../outside\" is not a folder below this one"),
        "{left_out}"
    );
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"IpRestriction\"\n[[modules]]\nname = \"UrlRewrite\"\n\
             [[modules]]\nname = \"ProtocolSupport\"\n[[modules]]\nname = \"StaticFile\"\n\
             [[sites]]\nname = \"s\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{text}",
            root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let admin = get(server.addr, "/wp-admin/a.txt");
    assert_eq!(admin.status, 403);
    assert_eq!(admin.header("x-site"), Some("all"));
    let post = get(server.addr, "/2024/hello");
    assert_eq!((post.status, post.text().as_str()), (200, "front"));
}

/// A module that takes part in requests only as a handler, listed in
/// `[[modules]]` but in no handler's `modules`, never handles a request:
/// check-config warns at its entry, and passes.
#[test]
fn check_config_warns_of_a_handler_module_no_handler_lists() {
    let dir = TempDir::new("handler-module-unlisted");
    let with = |handler_modules: &str| {
        dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"DirectoryListing\"\n\n\
                 [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nverbs = [\"GET\", \"HEAD\"]\n\
                 resource_type = \"Either\"\nmodules = {handler_modules}\n\n\
                 [[sites]]\nname = \"S\"\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n"
            ),
        )
    };
    let out = common::riis_command("check-config", &with(r#"["StaticFile"]"#));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "riis.toml:4: key `modules[1].name`: module `DirectoryListing` takes part in requests only as a handler"
        ),
        "{stderr}"
    );
    let out = common::riis_command(
        "check-config",
        &with(r#"["StaticFile", "DirectoryListing"]"#),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // Without `[[modules]]` the default list's entries are in no file: the
    // warning says whose they are rather than name a key nobody wrote.
    let defaults = dir.write(
        "riis.toml",
        "[[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\n\
         [[sites]]\nname = \"S\"\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n",
    );
    let out = common::riis_command("check-config", &defaults);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "module `DefaultDocument` of the default module list (the file has no `[[modules]]`)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("modules[1]"), "{stderr}");
}

/// A user file, group file or certificate key inside a folder a site
/// serves, at a URL nothing refuses, may be downloaded: check-config warns
/// at the key that names it, and passes. `.htpasswd` is hidden by default;
/// files outside the sites' folders are no concern.
#[test]
fn check_config_warns_of_secrets_inside_a_served_folder() {
    let dir = TempDir::new("secrets-served");
    dir.write("www/index.html", "home");
    dir.write("www/users", "alice:$2y$04$abcdefghijklmnopqrstuu\n");
    dir.write("www/.htpasswd", "bob:$2y$04$abcdefghijklmnopqrstuu\n");
    dir.write("www/users.secret", "bob:$2y$04$abcdefghijklmnopqrstuu\n");
    dir.write("private/groups", "admins: alice\n");
    let config = |user_file: &str, more: &str| {
        dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"RequestFiltering\"\n[[modules]]\nname = \"StaticFile\"\n\
                 [[modules]]\nname = \"BasicAuthentication\"\n\n\
                 [request_filtering]\nfile_extensions = {{ deny = [\".secret\"] }}\n\n\
                 [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\n\
                 [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n\n\
                 [[sites.locations]]\npath = \"/members\"\n\
                 basic_authentication = {{ enabled = true, user_file = \"{user_file}\", group_file = \"private/groups\" }}\n\
                 {more}"
            ),
        )
    };
    let out = common::riis_command("check-config", &config("www/users", ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("key `sites[0].locations[0].basic_authentication.user_file`")
            && stderr.contains("is inside a folder site `S` serves, as `/users`"),
        "{stderr}"
    );
    assert!(!stderr.contains("groups"), "{stderr}");
    for hidden in ["www/.htpasswd", "private/groups", "www/users.secret"] {
        let out = common::riis_command("check-config", &config(hidden, ""));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("serves, as"), "{hidden}: {stderr}");
    }
    // Another site that serves the folder serves the file too.
    let out = common::riis_command(
        "check-config",
        &config(
            "www/.htpasswd",
            "\n[[sites]]\nname = \"T\"\nroot = \"private\"\nbindings = [\"127.0.0.2:0\"]\n",
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("basic_authentication.group_file")
            && stderr.contains("is inside a folder site `T` serves, as `/groups`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("with RequestFiltering in [[modules]]"),
        "{stderr}"
    );
    // Without RequestFiltering listed, hiding the name needs it listed:
    // the advice says so (its section alone would be a configuration error).
    let text = std::fs::read_to_string(config("www/users", "")).unwrap();
    let text = text
        .replace("[[modules]]\nname = \"RequestFiltering\"\n", "")
        .replace(
            "[request_filtering]\nfile_extensions = { deny = [\".secret\"] }\n",
            "",
        );
    let out = common::riis_command("check-config", &dir.write("riis.toml", text));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("(request_filtering.hidden_segments, with RequestFiltering in [[modules]])"),
        "{stderr}"
    );
}

/// A UrlRewrite rule that sends requests to a server (a Rewrite to
/// `http://…`, or `PROXY_SERVER` set) where no handler passes them on fails
/// every request it takes: check-config warns at the rule, and passes. The
/// handler comes from the location of the request's new URL: for a Rewrite
/// to a server, the path the rule gives it (`/assets/…` falls in location
/// `/assets`; `/{R:1}` in the site's root, whatever the rule matched), for
/// `PROXY_SERVER` alone the request's own (any location the rule applies
/// in).
#[test]
fn check_config_warns_of_a_rewrite_to_a_server_no_handler_passes_on() {
    let dir = TempDir::new("rewrite-to-server-unpassed");
    let with = |more_locations: &str| {
        dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"UrlRewrite\"\n[[modules]]\nname = \"ReverseProxy\"\n\
                 [[modules]]\nname = \"StaticFile\"\n\n\
                 [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\n\
                 [[sites]]\nname = \"S\"\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n\n\
                 [[sites.rewrite.rules]]\nname = \"to backend\"\npattern = \"^api/(.*)\"\n\
                 action = {{ type = \"Rewrite\", url = \"http://127.0.0.1:9/{{R:1}}\" }}\n\n\
                 [[sites.rewrite.rules]]\nname = \"api query\"\npattern = \"^old/(.*)\"\n\
                 action = {{ type = \"Rewrite\", url = \"http://127.0.0.1:9/%61pi?x={{R:1}}\" }}\n\n\
                 [[sites.rewrite.rules]]\nname = \"named server\"\npattern = \"^app/\"\n\
                 server_variables = [{{ name = \"PROXY_SERVER\", value = \"http://127.0.0.1:9\" }}]\n\
                 action = {{ type = \"None\" }}\n\n\
                 [[sites.locations]]\npath = \"/static\"\n\
                 [[sites.locations.rewrite.rules]]\nname = \"assets\"\npattern = \"(.*)\"\n\
                 action = {{ type = \"Rewrite\", url = \"http://127.0.0.1:9/assets/{{R:1}}\" }}\n\
                 {more_locations}"
            ),
        )
    };
    let out = common::riis_command("check-config", &with(""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (line, key, what) in [
        (
            18,
            "sites[0].rewrite.rules[0]",
            "rule `to backend` (site `S`) sends requests to a server as `/…`, a path of location `/`, where no handler runs ReverseProxy",
        ),
        (
            23,
            "sites[0].rewrite.rules[1]",
            "rule `api query` (site `S`) sends requests to a server as `/api…`, a path of location `/`, where no handler runs ReverseProxy",
        ),
        (
            28,
            "sites[0].rewrite.rules[2]",
            "rule `named server` (site `S`) sends requests to a server, but no handler where it applies runs ReverseProxy",
        ),
        (
            36,
            "sites[0].locations[0].rewrite.rules[0]",
            "rule `assets` (site `S`) sends requests to a server as `/assets/…`, a path of location `/`, where no handler runs ReverseProxy",
        ),
    ] {
        assert!(
            stderr.contains(&format!("riis.toml:{line}: key `{key}`: {what}")),
            "{stderr}"
        );
    }
    // ReverseProxy in `/api` and `/assets`: `assets` lands in `/assets`,
    // `api query` in `/api` (its path is `/%61pi`, decoded, before the
    // query), and `named server` applies in `/api`; `to backend` still
    // lands in the root (its `/api/x` becomes `/x`), which passes nothing
    // on.
    let proxying = |path: &str| {
        format!(
            "\n[[sites.locations]]\npath = \"{path}\"\n\
             [[sites.locations.handlers]]\nname = \"proxy\"\npath = \"*\"\nmodules = [\"ReverseProxy\"]\n"
        )
    };
    let out = common::riis_command(
        "check-config",
        &with(&format!("{}{}", proxying("/api"), proxying("/assets"))),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rule `to backend`"), "{stderr}");
    assert!(!stderr.contains("rule `named server`"), "{stderr}");
    assert!(!stderr.contains("rule `assets`"), "{stderr}");
    assert!(!stderr.contains("rule `api query`"), "{stderr}");
}

/// FailedRequestsTracing's and StaticCompression's default folders have
/// names known in advance in the shared temp dir: one another user made
/// first (here: one that others may write to) is refused at every use, and
/// check-config warns about it at the module's entry, and passes.
#[test]
fn check_config_warns_of_a_default_folder_another_user_could_have_made() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("default-folder-squatted");
    let temp = dir.path().join("tmp");
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    for name in ["riis-failed-requests", "riis-compressed"] {
        let squatted = temp.join(format!("{name}-{}", uid.trim()));
        std::fs::create_dir_all(&squatted).unwrap();
        std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let config = dir.write(
        "riis.toml",
        "[[modules]]\nname = \"FailedRequestsTracing\"\n[[modules]]\nname = \"StaticCompression\"\n\
         [[modules]]\nname = \"StaticFile\"\n\n\
         [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\n\
         [failed_requests_tracing]\nstatus_codes = [\"500-599\"]\n\n\
         [[sites]]\nname = \"S\"\nroot = \".\"\nbindings = [\"127.0.0.1:0\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "riis.toml:2: key `modules[0].name`: FailedRequestsTracing's default directory cannot be used"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("may be written by others"), "{stderr}");
    assert!(
        stderr.contains(
            "riis.toml:4: key `modules[1].name`: StaticCompression's default directory cannot be used"
        ),
        "{stderr}"
    );
    // Their own folders: no warning.
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("default directory"), "{stderr}");
}

/// A log that can no longer be written (the terminal riis was started from
/// closed, the program reading its standard error exited: `| head`) does
/// not stop the server: the lines are lost, the requests, reloads and the
/// stop's drain go on, as nginx's do.
#[test]
fn a_broken_standard_error_does_not_stop_the_server() {
    let dir = TempDir::new("broken-stderr");
    dir.write("www/a.txt", "a");
    let config = write_config(&dir, &dir.path().join("www"), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("RIIS_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening_addr(&mut child);
    // The reading end goes: each log line now meets EPIPE.
    drop(child.stderr.take());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    for _ in 0..3 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(get(addr, "/a.txt").status, 200);
        assert_eq!(get(addr, "/missing").status, 404);
    }
    assert!(child.try_wait().unwrap().is_none(), "riis exited");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}
