//! C++ modules written in the IIS style (`examples/native/cpp`), compiled by
//! the test with `g++ -shared -fPIC` unchanged against `include/httpserv.h`,
//! loaded from `[[global_modules]]`, and checked over real sockets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{get, write_config, Connection, RunningBinary, TempDir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `g++ -std=c++11 -shared -fPIC -I include` on `sources`, unchanged.
fn gxx(sources: &[PathBuf], out: &Path) -> Option<()> {
    let sources: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    common::compile_shared("g++", &sources, out, &["-std=c++11"])
}

/// A folder holding `libmodule.so`, built from the test module
/// `crates/riis/tests/native/NAME`; `None` without g++ (outside CI).
fn library_dir(tag: &str, name: &str) -> Option<TempDir> {
    let dir = TempDir::new(tag);
    let source = repo().join("crates/riis/tests/native").join(name);
    gxx(&[source], &dir.path().join("libmodule.so"))?;
    Some(dir)
}

fn example(name: &str) -> PathBuf {
    repo().join("examples/native/cpp").join(name)
}

/// A server with one C++ example module (and StaticFile after it).
fn serve(source: &str) -> Option<(TempDir, RunningBinary)> {
    serve_with(source, "", "")
}

/// [`serve`], with more configuration after the module list, and `site`
/// after the site's own keys (its locations). The folder `shelf` is there
/// for a location to map to.
fn serve_with(source: &str, more: &str, site: &str) -> Option<(TempDir, RunningBinary)> {
    serve_source(example(source), more, site)
}

/// [`serve_with`], for a source file at `source`.
fn serve_source(source: PathBuf, more: &str, site: &str) -> Option<(TempDir, RunningBinary)> {
    let dir = TempDir::new("cpp");
    gxx(&[source], &dir.path().join("libmodule.so"))?;
    dir.write("www/hello.txt", "static hello\n");
    dir.write("shelf/book", "on the shelf\n");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &format!(
            r#"
[server]
pid_file = "riis.pid"

[[global_modules]]
name = "CppModule"
image = "libmodule.so"

[[modules]]
name = "CppModule"
[[modules]]
name = "StaticFile"
[[handlers]]
name = "StaticFile"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]
{more}"#
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}{site}")).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    Some((dir, server))
}

#[test]
fn the_iis_style_hello_world_compiles_unchanged_and_answers() {
    let Some((_dir, server)) = serve("hello_world.cpp") else {
        return;
    };
    for path in ["/", "/anything", "/hello.txt"] {
        let resp = get(server.addr, path);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert_eq!(resp.text(), "Hello from a C++ module!\n");
    }
}

#[test]
fn pending_and_on_async_completion_as_iis_documents_them() {
    let Some((_dir, server)) = serve("async_completion.cpp") else {
        return;
    };
    let resp = get(server.addr, "/any");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(
        resp.text(),
        "first line, written at once\nasync completion: 28 bytes, status 0x00000000\n"
    );
}

#[test]
fn global_module_module_contexts_and_server_variables() {
    let Some((dir, server)) = serve_with(
        "global_and_context.cpp",
        "\n[cpp_context]\ngreeting = \"hello from riis.toml\"\n",
        "[[sites.locations]]\npath = \"/cpp/shelf\"\nphysical_path = \"shelf\"\n",
    ) else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/cpp/page");
    assert_eq!(resp.status, 200);
    // GetMetadata: the site's configuration path and root, then those of
    // a location that is a virtual directory.
    assert_eq!(
        resp.header("x-cpp-meta-path"),
        Some("MACHINE/WEBROOT/APPHOST/Test")
    );
    let www = dir.path().join("www");
    assert_eq!(resp.header("x-cpp-vr-path"), www.to_str());
    let shelved = conn.get("/cpp/shelf/book");
    assert_eq!(
        shelved.header("x-cpp-meta-path"),
        Some("MACHINE/WEBROOT/APPHOST/Test/cpp/shelf")
    );
    let shelf = dir.path().join("shelf");
    assert_eq!(shelved.header("x-cpp-vr-path"), shelf.to_str());
    assert_eq!(resp.header("x-cpp-pre-begin"), Some("seen"));
    assert_eq!(resp.header("x-cpp-remote-addr"), Some("127.0.0.1"));
    // Memory from the allocator GetHttpModule was given, kept by the
    // instance and used in OnBeginRequest.
    assert_eq!(resp.header("x-cpp-allocated"), Some("/cpp/page"));
    // The module's own section, declared through GetRiisRegistration.
    assert_eq!(resp.header("x-cpp-greeting"), Some("hello from riis.toml"));
    assert_eq!(
        resp.text(),
        "url: /cpp/page\nmethod: GET\nnote: stored at BeginRequest\n"
    );
    let n1: u32 = resp.header("x-cpp-site-requests").unwrap().parse().unwrap();
    let n2: u32 = conn
        .get("/cpp/other")
        .header("x-cpp-site-requests")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n2 > n1);
    // Other URLs go on to StaticFile.
    assert_eq!(conn.get("/hello.txt").text(), "static hello\n");
    // Each answered request's context was cleaned up once.
    let stats = conn.get("/cpp/stats").text();
    let cleaned: u32 = stats
        .trim()
        .strip_prefix("cleanups: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cleaned >= 2, "{stats}");

    // `riis status` raises GL_RSCA_QUERY; the module's answer follows the
    // server's report.
    let report = common::riis_status(&dir.path().join("riis.toml"));
    let answered: u32 = report
        .lines()
        .find_map(|l| l.strip_prefix("CppModule cleanups: "))
        .unwrap_or_else(|| panic!("no answer from the module: {report}"))
        .parse()
        .unwrap();
    assert!(answered >= cleaned, "{report}");
}

#[test]
fn the_header_links_into_a_module_of_several_translation_units() {
    let dir = TempDir::new("cpp-two-units");
    let second = dir.write(
        "second.cpp",
        "#include <windows.h>\n#include <sal.h>\n#include <httpserv.h>\n\
         DWORD SecondUnitValue() { return RQ_BEGIN_REQUEST; }\n",
    );
    let Some(()) = gxx(
        &[example("hello_world.cpp"), second],
        &dir.path().join("libtwo.so"),
    ) else {
        return;
    };
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(dir.path().join("libtwo.so"))
        .output()
        .expect("nm");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    for s in [
        "RegisterModule",
        "riis_cxx_register_module",
        "riis_module_abi",
    ] {
        assert!(
            symbols.lines().any(|l| l.ends_with(&format!(" {s}"))),
            "{s} is not exported:\n{symbols}"
        );
    }
    // The header's own machinery stays inside the library: exported (and
    // process-wide unique, as GCC makes inline functions' statics), two
    // modules' libraries would share one callback table and server slot.
    let demangled = Command::new("nm")
        .args(["-D", "--defined-only", "-C"])
        .arg(dir.path().join("libtwo.so"))
        .output()
        .expect("nm");
    let demangled = String::from_utf8_lossy(&demangled.stdout);
    assert!(
        !demangled.contains("riis_cxx::"),
        "header internals are exported:\n{demangled}"
    );
}

/// CloneContext and ExecuteRequest as IIS documents them: the child's
/// output is buffered into the parent's response; given a user
/// (`pHttpUser`), the child skips its AuthenticateRequest.
#[test]
fn a_child_request_runs_as_the_user_it_is_given() {
    let Some((_dir, server)) = serve("child_request.cpp") else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    let plain = conn.get("/cpp/wrap/hello.txt");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "static hello\n-- wrapped by a C++ module\n");
    assert_eq!(plain.header("x-cpp-authenticated"), Some("/hello.txt"));
    let guest = conn.get("/cpp/wrap/hello.txt?as=guest");
    assert_eq!(guest.status, 200);
    assert_eq!(guest.text(), "static hello\n-- wrapped by a C++ module\n");
    assert_eq!(guest.header("x-cpp-authenticated"), None);
}

/// The header promises to build without C++ exceptions too (embedded and
/// game-style code bases turn them off): every example compiles so.
#[test]
fn the_examples_build_with_exceptions_turned_off() {
    let dir = TempDir::new("cpp-no-exceptions");
    for name in [
        "hello_world.cpp",
        "async_completion.cpp",
        "global_and_context.cpp",
        "child_request.cpp",
        "send_filter.cpp",
    ] {
        let source = example(name);
        let out = dir.path().join(format!("lib{name}.so"));
        let Some(()) =
            common::compile_shared("g++", &[&source], &out, &["-std=c++11", "-fno-exceptions"])
        else {
            return;
        };
        assert!(out.exists(), "{name}");
    }
}

/// `send_filter.cpp`: an IIS-style OnSendResponse that upper-cases text
/// bodies 64 KiB per send (DeferAfter), reading a static file's chunks with
/// pread. Every byte arrives transformed, and other types pass untouched.
#[test]
fn a_send_response_filter_transforms_a_large_file_a_piece_at_a_time() {
    let Some((dir, server)) = serve("send_filter.cpp") else {
        return;
    };
    let text: String = (0..20_000)
        .map(|i| format!("line {i} of notes\n"))
        .collect();
    assert!(text.len() > 300_000);
    std::fs::write(dir.path().join("www/notes.txt"), &text).unwrap();
    std::fs::write(dir.path().join("www/data.bin"), b"keep me as i am").unwrap();
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/notes.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("etag"), None);
    assert!(
        resp.text() == text.to_uppercase(),
        "{} bytes",
        resp.body.len()
    );
    // A small text in one piece, and another type as it is.
    assert_eq!(conn.get("/hello.txt").text(), "STATIC HELLO\n");
    assert_eq!(conn.get("/data.bin").text(), "keep me as i am");
}

/// IIS 10's `IHttpResponse4` (through `HttpGetExtendedInterface`): trailers
/// set, replaced, appended and deleted reach an HTTP/2 client after the
/// body; a field a trailer may not carry is refused.
#[test]
fn trailers_from_a_cpp_module_reach_an_http2_client() {
    let source = repo().join("crates/riis/tests/native/trailers.cpp");
    let Some((_dir, server)) = serve_source(source, "", "") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let mut client = common::http2_client(server.addr).await;
        let request = hyper::Request::post(format!("http://{}/echo", server.addr))
            .header("te", "trailers")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-trailer-status"], "0");
        assert_eq!(response.headers()["x-content-length-trailer"], "refused");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x02ok");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "fine");
        assert!(trailers.get("x-dropped").is_none());
        assert!(trailers.get("content-length").is_none());
    });
}

/// Custom notifications: a C++ receiver casts a C++ raiser's object back
/// to the raiser's class, and gets a number a C raiser passed as its data
/// without reading through it (it used to, and a number above 64 KiB
/// ended the server).
#[test]
fn custom_notifications_reach_cpp_modules_from_cpp_and_c_raisers() {
    let source = repo().join("crates/riis/tests/native/custom_notify.cpp");
    let second = "[[global_modules]]\nname = \"CppModule2\"\nimage = \"libmodule.so\"\n\
                  [[modules]]\nname = \"CppModule2\"\n";
    let Some((_dir, server)) = serve_source(source, second, "") else {
        return;
    };
    let resp = get(server.addr, "/notify");
    assert_eq!(resp.status, 200);
    assert_eq!(String::from_utf8_lossy(&resp.body), "bump=1 cookie=1");
    // The server lives on.
    assert_eq!(get(server.addr, "/hello.txt").status, 200);
}

/// IIS 8's full duplex (`IHttpContext3::EnableFullDuplex`, through
/// `HttpGetExtendedInterface`): the module echoes each piece of the body
/// while its next read is under way, and tells the completions apart with
/// `IHttpCompletionInfo2::GetCompletedOperation`. The client sends each
/// piece only once the echo of the one before came back.
#[test]
fn a_cpp_module_in_full_duplex_answers_while_the_body_still_comes() {
    let source = repo().join("crates/riis/tests/native/duplex_echo.cpp");
    let Some((_dir, server)) = serve_source(source, "", "") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::channel::Channel;
        use http_body_util::BodyExt;
        use hyper::body::Bytes;
        let mut client = common::http2_client::<Channel<Bytes>>(server.addr).await;
        let (mut to_server, body) = Channel::new(1);
        let request = hyper::Request::post(format!("http://{}/duplex", server.addr))
            .body(body)
            .unwrap();
        let wait = std::time::Duration::from_secs(10);
        let mut response = tokio::time::timeout(wait, client.send_request(request))
            .await
            .expect("the head came while the body was still open")
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut got = Vec::new();
        for (expected, next) in [
            ("ready\n", Some("hello")),
            ("ready\necho:hello\n", Some("world")),
            ("ready\necho:hello\necho:world\n", None),
        ] {
            let body = response.body_mut();
            let what = "the echo, before the next piece is sent";
            common::read_data_until(body, &mut got, expected.len(), what).await;
            assert_eq!(String::from_utf8_lossy(&got), expected);
            match next {
                Some(text) => to_server.send_data(Bytes::from(text)).await.unwrap(),
                None => break,
            }
        }
        drop(to_server);
        let rest = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(std::str::from_utf8(&rest).unwrap(), "bye\n");
    });
    // The instance was disposed with its request: only /live's own is
    // alive (a completion handle the adapter kept for the read would have
    // left it waiting for a signal that never comes).
    let live = get(server.addr, "/live");
    assert_eq!(String::from_utf8_lossy(&live.body), "live: 1\n");
}

#[test]
fn objects_iis_keeps_alive_stay_valid_after_the_call_that_gave_them() {
    // The registration info of RegisterModule and the application of
    // ApplicationStart, kept in globals as ported modules keep them: the
    // server used to free both when the call returned (a crash on the first
    // request that used them).
    let source = repo().join("crates/riis/tests/native/kept_objects.cpp");
    let Some((_dir, server)) = serve_source(source, "[[modules]]\nname = \"CustomError\"\n", "")
    else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    // What ApplicationStart stored in the application's container is what
    // the site's requests read (it stored nothing before ABI 1.9), and a
    // second store is refused with ERROR_ALREADY_ASSIGNED, as in IIS.
    for count in 1..=2 {
        let resp = conn.get("/kept");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.text(),
            format!(
                "id kept: yes\nname: CppModule\nstarted application kept: /LM/W3SVC/1/ROOT\n\
                 same application: yes\napplication id: /LM/W3SVC/1/ROOT\n\
                 late registration refused: yes\n\
                 application state: found, read back in start: yes, second store: 0x80070055, \
                 requests counted: {count}\n"
            )
        );
    }
    assert_eq!(conn.get("/hello.txt").text(), "static hello\n");
    // A child request's own status, read from the clone once it completed
    // (it read 0.0): the module falls back on the 404.
    let resp = conn.get("/fallback");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "fell back after 404.0\n");
    // A status set with SetStatus alone names its module and notification
    // on the detailed error page, as IIS's does (it said "(unknown)").
    let resp = conn.get("/gone");
    assert_eq!(resp.status, 410);
    let page = resp.text();
    assert!(page.contains("<th>Module</th><td>CppModule</td>"), "{page}");
    assert!(page.contains("<td>BeginRequest</td>"), "{page}");
    assert!(
        page.contains("<th>Error Code</th><td>0x00000000</td>"),
        "{page}"
    );
}

/// A module reads the same `Host` and `Cookie` over HTTP/1.1 and HTTP/2,
/// as under IIS: HTTP/2's `:authority` is the `Host` header, and cookies
/// (HTTP/2 crumbs, or several `Cookie` lines) are one list joined by `; `.
#[test]
fn host_and_cookies_read_the_same_over_http1_and_http2() {
    let source = repo().join("crates/riis/tests/native/request_headers.cpp");
    let Some((_dir, server)) = serve_source(source, "", "") else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /headers HTTP/1.1\r\nHost: example.test\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    );
    let resp = conn.read_response(false);
    assert_eq!(
        resp.text(),
        "host by id: example.test\nhost by name: example.test\ncookie: a=1; b=2\n"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let mut client = common::http2_client(server.addr).await;
        // hyper sends the URI's authority as :authority and no Host; the
        // cookies go as browsers send them, one field each.
        let request = hyper::Request::get("http://example.test:8080/headers")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("cookie", "c=3")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            "host by id: example.test:8080\nhost by name: example.test:8080\n\
             cookie: a=1; b=2; c=3\n"
        );
    });
}

/// The Microsoft C runtime string functions of `windows.h` behave as
/// Microsoft documents them (a size query, cut text, the array forms), and
/// so do its Win32 Interlocked functions, critical sections (recursive),
/// last error and ids, in a program built with `g++` and run here; the
/// header also compiles as C.
#[test]
fn the_c_runtime_shims_behave_as_documented() {
    let dir = TempDir::new("crt");
    let program = dir.path().join("crt_shims");
    let source = repo().join("crates/riis/tests/native/crt_shims.cpp");
    let built = Command::new("g++")
        .args([
            "-std=c++11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-I",
        ])
        .arg(repo().join("include"))
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .status();
    match built {
        Ok(status) => assert!(status.success(), "g++ failed on {}", source.display()),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: g++ is not available ({e})");
            return;
        }
        Err(e) => panic!("g++ is required in CI: {e}"),
    }
    let out = Command::new(&program).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // OutputDebugString goes to standard error, as UTF-8 in any locale.
    assert!(stderr.contains("debug: café\ndebug: plain\n"), "{stderr}");
    // As C: the functions are file-local there.
    let c = dir.write(
        "uses.c",
        "#include <windows.h>\nint f(void) { char b[4]; return strcpy_s(b, sizeof b, \"a\") \
         + sprintf_s(b, sizeof b, \"%d\", 1) + _stricmp(\"a\", \"A\"); }\n",
    );
    let library = dir.path().join("libuses.so");
    // Fails the test when `cc` refuses it (warnings are errors).
    let _ = common::compile_shared("cc", &[c.as_path()], &library, &["-std=c11"]);
    // The Win32 part, in C with _GNU_SOURCE.
    let sync = dir.write(
        "sync.c",
        "#include <windows.h>\nint g(void) { volatile LONG n = 0; CRITICAL_SECTION cs; \
         InitializeCriticalSection(&cs); EnterCriticalSection(&cs); LeaveCriticalSection(&cs); \
         DeleteCriticalSection(&cs); SetLastError(5); \
         return (int)InterlockedIncrement(&n) + (int)GetLastError(); }\n",
    );
    let _ = common::compile_shared(
        "cc",
        &[sync.as_path()],
        &dir.path().join("libsync.so"),
        &["-std=c11", "-D_GNU_SOURCE"],
    );
}

/// A reload keeps the registration a library's module made while a
/// configuration still uses it, as IIS calls RegisterModule once in a
/// worker process: a module whose RegisterModule makes process-wide state
/// and whose Terminate frees it (the usual IIS shape) keeps working across
/// reloads (the first request after a reload crashed the server: the old
/// configuration's Terminate freed what the new RegisterModule had made).
/// Terminate runs when the last configuration that used the registration
/// retired, and a configuration that lists the module after that registers
/// it anew.
#[test]
fn a_reload_keeps_the_registration_of_a_module_in_use() {
    let dir = TempDir::new("cpp-reload");
    let events = dir.path().join("events.log");
    let define = format!("-DEVENTS_LOG=\"{}\"", events.display());
    let source = repo().join("crates/riis/tests/native/process_state.cpp");
    let built = common::compile_shared(
        "g++",
        &[source.as_path()],
        &dir.path().join("libmodule.so"),
        &["-std=c++11", &define],
    );
    if built.is_none() {
        return;
    }
    dir.write("www/hello.txt", "static hello\n");
    let with_module = |listed: bool| {
        let module = if listed {
            "[[global_modules]]\nname = \"State\"\nimage = \"libmodule.so\"\n\
             [[modules]]\nname = \"State\"\n"
        } else {
            ""
        };
        write_config(
            &dir,
            &dir.path().join("www"),
            &format!(
                "[server]\npid_file = \"riis.pid\"\n{module}\
                 [[modules]]\nname = \"StaticFile\"\n\
                 [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n"
            ),
        )
    };
    let config = with_module(true);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let reload = |config: &Path| {
        let out = common::riis_reload(config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let log = || std::fs::read_to_string(&events).unwrap_or_default();
    assert_eq!(get(server.addr, "/state").text(), "served 1\n");
    // The same module in the next configuration: the registration is kept
    // (one RegisterModule in all), and so is its state.
    reload(&config);
    assert_eq!(get(server.addr, "/state").text(), "served 2\n");
    reload(&config);
    assert_eq!(get(server.addr, "/state").text(), "served 3\n");
    assert_eq!(get(server.addr, "/hello.txt").text(), "static hello\n");
    // (`riis reload` checks the file in a process of its own first, which
    // registers and terminates there: its lines are in the log too, before
    // the server's.)
    // A configuration without the module: the old one retires once its
    // requests are done, and the module's Terminate runs then, once.
    let without = with_module(false);
    reload(&without);
    assert_eq!(get(server.addr, "/state").status, 404);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log().ends_with("terminate factory\nterminate global\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "the retired configuration's module was not terminated:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Listed again: registered anew, with new state.
    let config = with_module(true);
    reload(&config);
    assert_eq!(get(server.addr, "/state").text(), "served 1\n");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        log().ends_with("register\nterminate factory\nterminate global\n"),
        "{}",
        log()
    );
}

/// A server-side include as IIS modules write one: the included URL runs as
/// a child with EXECUTE_FLAG_NO_HEADERS, from a clone made with
/// CLONE_FLAG_NO_PRECONDITION. The page keeps its own status and
/// `text/html`, and the client's conditional and range headers (meant for
/// the page) neither reach the included file nor turn the page into its
/// 304 or 206: before, the page went out as `text/plain` with the file's
/// validators, as a bodiless 304, or as a 206 whose Content-Range
/// contradicted its length.
#[test]
fn an_include_without_headers_keeps_the_pages_head() {
    let Some(dir) = library_dir("cpp-include", "include_page.cpp") else {
        return;
    };
    dir.write("www/hello.txt", "static hello\n");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[[global_modules]]\nname = \"Include\"\nimage = \"libmodule.so\"\n\
         [[modules]]\nname = \"Include\"\n[[modules]]\nname = \"StaticFile\"\n\
         [[handlers]]\nname = \"Include\"\npath = \"*.shtm\"\nmodules = [\"Include\"]\n\
         [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let file = get(server.addr, "/hello.txt");
    let etag = file.header("etag").expect("the file's ETag").to_owned();
    let page = "<h1>page</h1>static hello\n<p>included 200.0</p>";
    for extra in [
        String::new(),
        format!("If-None-Match: {etag}\r\n"),
        "Range: bytes=0-3\r\n".to_owned(),
    ] {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(format!("GET /page.shtm HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200, "{extra}");
        assert_eq!(resp.header("content-type"), Some("text/html"), "{extra}");
        for absent in ["etag", "last-modified", "content-range", "accept-ranges"] {
            assert_eq!(resp.header(absent), None, "{absent} with {extra}");
        }
        assert_eq!(resp.text(), page, "{extra}");
    }
}

/// An authentication module's own IHttpUser is the user, as in IIS: URL
/// authorization asks the object IsInRole (it had only the roles a module
/// listed, so a module that decides roles itself let nobody in), GetUser
/// gives the module its object back (it gave a copy), and the object is
/// released once nothing holds it.
#[test]
fn a_modules_own_user_object_answers_for_the_user() {
    let Some(dir) = library_dir("cpp-user", "token_user.cpp") else {
        return;
    };
    dir.write("www/admin/report.txt", "report\n");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[[global_modules]]\nname = \"Token\"\nimage = \"libmodule.so\"\n\
         [[modules]]\nname = \"Token\"\n[[modules]]\nname = \"UrlAuthorization\"\n\
         [[handlers]]\nname = \"Token\"\npath = \"*\"\nmodules = [\"Token\"]\n",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}[[sites.locations]]\npath = \"/admin\"\n\
             authorization = {{ rules = [{{ access = \"Allow\", roles = \"admins\" }}] }}\n"
        ),
    )
    .unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let ask = |path: &str, token: &str| {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Token: {token}\r\n\r\n").as_bytes(),
        );
        conn.read_response(false)
    };
    let alice = ask("/whoami", "alice");
    assert_eq!(alice.text(), "alice own:yes admin:yes\n");
    assert_eq!(ask("/whoami", "bob").text(), "bob own:yes admin:no\n");
    // The role comes from the module's IsInRole, not from a list.
    let admin = ask("/admin/report.txt", "alice");
    assert_eq!(
        (admin.status, admin.text().as_str()),
        (200, "alice own:yes admin:yes\n")
    );
    assert_eq!(ask("/admin/report.txt", "bob").status, 401);
    // Every user object made so far is released (the one of the asking
    // request is still held while it runs), at the latest as its request's
    // context goes.
    let mut live = String::new();
    for _ in 0..100 {
        live = ask("/live", "carol").text();
        if live == "live 1\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(live, "live 1\n");
}

/// A module's own thread answers its parked request, as IIS lets it: the
/// status, headers and body it writes before IndicateCompletion or
/// PostCompletion are the response (they were refused off the request's
/// thread, and the client got an empty 200).
#[test]
fn a_modules_thread_writes_the_response_of_its_parked_request() {
    let Some((_dir, server)) = serve_source(
        repo().join("crates/riis/tests/native/thread_answer.cpp"),
        "",
        "",
    ) else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    for (path, body) in [
        ("/indicate", "written by the module's thread\n"),
        (
            "/post",
            "written by the module's thread\nand completed on the request's thread\n",
        ),
    ] {
        let resp = conn.get(path);
        assert_eq!(resp.status, 201, "{path}");
        assert_eq!(resp.header("x-from-thread"), Some("1"), "{path}");
        assert_eq!(resp.text(), body, "{path}");
    }
}

/// `IHttpConnection::IsConnected` tells the truth: TRUE on the request's
/// thread while the client waits, and, asked from the module's own thread
/// while the request is parked, TRUE until the client leaves and FALSE
/// after (it always said TRUE, so a streaming module never stopped).
#[test]
fn is_connected_turns_false_when_the_client_leaves() {
    let Some((_dir, server)) = serve_source(
        repo().join("crates/riis/tests/native/client_watch.cpp"),
        "",
        "",
    ) else {
        return;
    };
    assert_eq!(get(server.addr, "/check").text(), "connected 1\n");
    let mut leaving = Connection::open(server.addr);
    leaving.send_raw(b"GET /watch HTTP/1.1\r\nHost: test\r\n\r\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get(server.addr, "/seen").text(), "watching\n");
    drop(leaving);
    let mut seen = String::new();
    for _ in 0..250 {
        seen = get(server.addr, "/seen").text();
        if seen != "watching\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let count: u32 = seen
        .strip_prefix("seen ")
        .and_then(|s| s.strip_suffix(" gone\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the thread never saw the client leave: {seen:?}"));
    // It saw the client connected while it was (about 300 ms of 10 ms polls).
    assert!(count >= 5, "{seen:?}");
    // The server is fine afterwards.
    assert_eq!(get(server.addr, "/check").text(), "connected 1\n");
}
