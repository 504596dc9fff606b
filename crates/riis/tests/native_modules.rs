//! Native modules over real sockets: a C module compiled by the test with the
//! system C compiler, loaded from `[[global_modules]]`, and every loader
//! error `riis check-config` must report.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{get, write_config, Connection, RunningBinary, TempDir};

/// Compiles C or C++ `sources` into the shared library `out`.
fn compile(compiler: &str, sources: &[&Path], out: &Path, flags: &[&str]) -> Option<()> {
    common::compile_shared(compiler, sources, out, flags)
}

fn test_module_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/test_module.c")
}

const C_MODULE_CONFIG: &str = r#"
[[global_modules]]
name = "CModule"
image = "libtest_module.so"
precondition = "bitness64,integratedMode"

[[global_modules]]
name = "CModule2"
image = "libtest_module.so"

[[modules]]
name = "CModule"
[[modules]]
name = "CModule2"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]

[c_module]
greeting = "good day"
"#;

/// Compiles the C test module into `dir` as `libtest_module.so`, with a
/// site folder holding `plain.txt`.
fn build_test_module(dir: &TempDir) -> Option<()> {
    compile(
        "cc",
        &[&test_module_source()],
        &dir.path().join("libtest_module.so"),
        &["-std=c99", "-D_POSIX_C_SOURCE=200809L"],
    )?;
    dir.write("www/plain.txt", "plain");
    Some(())
}

fn c_module_server() -> Option<(TempDir, RunningBinary)> {
    let dir = TempDir::new("native-c");
    build_test_module(&dir)?;
    let config = write_config(&dir, &dir.path().join("www"), C_MODULE_CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    Some((dir, server))
}

/// A native module that names its section's keys (ABI 1.12) has a
/// misspelt one refused by `check-config`, with file, line and key.
#[test]
fn a_native_sections_unknown_key_is_a_configuration_error() {
    let dir = TempDir::new("native-keys");
    let Some(()) = build_test_module(&dir) else {
        return;
    };
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &C_MODULE_CONFIG.replace("greeting = \"good day\"", "greting = \"good day\""),
    );
    let out = common::riis_command("check-config", &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("key `c_module.greting`") && err.contains("it reads: greeting"),
        "{err}"
    );

    // A reload registers the module from what it recorded: the limit
    // holds there too.
    let good = write_config(
        &dir,
        &dir.path().join("www"),
        &format!("[server]\npid_file = \"riis.pid\"\n{C_MODULE_CONFIG}"),
    );
    let server = RunningBinary::start(&["--config", good.to_str().unwrap()]);
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &good,
        text.replace("greeting = \"good day\"", "greting = \"good day\""),
    )
    .unwrap();
    // SIGHUP itself (`riis reload` checks the file in a process of its
    // own first, where the module registers anew).
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut status = String::new();
    common::wait_for("the reload to be judged", || {
        status = common::riis_status(&good);
        status.contains("last_reload: ")
    });
    assert!(status.contains("last_reload: refused"), "{status}");
    assert!(status.contains("greting"), "{status}");
    drop(server);
}

#[test]
fn a_c_module_answers_with_headers_server_variables_config_and_global_help() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/hello");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello from C\n");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-method"), Some("GET"));
    assert_eq!(resp.header("x-remote"), Some("127.0.0.1"));
    assert_eq!(resp.header("x-pre"), Some("seen"), "PreBeginRequest set it");
    assert_eq!(resp.header("x-greeting"), Some("good day"));
    assert_eq!(resp.header("x-send-seen"), Some("yes"));
    // The site-scope counter survives across requests and connections.
    let first: u32 = resp.header("x-site-count").unwrap().parse().unwrap();
    let again = get(server.addr, "/c/hello");
    let second: u32 = again.header("x-site-count").unwrap().parse().unwrap();
    assert!(second > first);
    // Other URLs pass through to the static handler.
    let plain = get(server.addr, "/plain.txt");
    assert_eq!(plain.text(), "plain");
    assert_eq!(plain.header("x-send-seen"), Some("yes"));
}

#[test]
fn a_shared_scope_keeps_its_first_context() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/assign-twice");
    assert_eq!(resp.text(), "stored already-assigned first\n");
}

#[test]
fn a_c_module_reads_the_body_asynchronously() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let body = "the quick brown fox jumps over the lazy dog";
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        format!(
            "POST /c/echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), body);
    // HRESULT_FROM_WIN32(ERROR_HANDLE_EOF), not another empty read.
    assert_eq!(resp.header("x-read-after-end"), Some("0x80070026"));
    // Both instances of the library double every byte at ReadEntity, so a
    // read brings four times what the 7-byte buffer asked for: the rest is
    // read next as it is (not doubled again), and the body still ends.
    conn.send_raw(
        format!(
            "POST /c/echo HTTP/1.1\r\nHost: t\r\nX-Double: 1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    let quadrupled: String = body.chars().flat_map(|c| [c; 4]).collect();
    assert_eq!(resp.text(), quadrupled);
}

/// Header values reach a native module as the bytes the client sent
/// (Latin-1 obs-text included), with their length, as IIS hands them
/// over; a module may set such a value too.
#[test]
fn header_values_are_the_bytes_as_received() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /c/raw-header HTTP/1.1\r\nHost: t\r\nX-Latin: caf\xe9\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "63 61 66 e9 (4) set:ok\n");
    assert_eq!(resp.header("x-latin-back"), Some("\u{fffd}t\u{fffd}"));
}

#[test]
fn a_c_module_completes_from_its_own_thread() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "finished by another thread\n");
    let resp = get(server.addr, "/c/post-thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "completed 42, status 0\n");
    // Pending from AuthenticateRequest (which has a provider, unlike the
    // other deterministic events) waits for the thread too.
    let resp = get(server.addr, "/c/auth-thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "authenticated by another thread\n");
}

#[test]
fn a_c_module_misbehaving_fails_only_its_request() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/bad-status");
    assert_eq!(resp.status, 500);
    // During the call, another thread's write to the response is kept and
    // made as the call ends (a module's thread may answer for it, as in
    // IIS); its reads are refused.
    let resp = get(server.addr, "/c/wrong-thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "0x00000000 url:refused\n");
    assert_eq!(resp.header("x-bad"), Some("1"));
    // A global notification raised from a module call cannot reach that
    // call's request context.
    let resp = get(server.addr, "/c/global-reach");
    assert_eq!(resp.text(), "0x800705A4\n");
    assert_eq!(resp.header("x-reached"), None);
    // The allocator serves the instance's calls, and refuses other threads.
    let resp = get(server.addr, "/c/alloc-thread");
    assert_eq!(resp.text(), "here refused\n");
    // A clone handed to itself is refused, and stays usable.
    let resp = get(server.addr, "/c/self-clone");
    assert_eq!(resp.text(), "refused usable\n");
    // An allocation no machine can satisfy is refused, not fatal.
    assert_eq!(get(server.addr, "/c/huge-insert").text(), "refused\n");
    let resp = get(server.addr, "/c/huge-alloc");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "null\n");
    // An interim status is not a response's; a file chunk must name a
    // regular file: a folder has no bytes to send, and opening a FIFO would
    // wait for a writer with the worker held.
    let fifo = _dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut conn = common::Connection::open(server.addr);
    conn.send_raw(
        format!(
            "GET /c/odd-chunks HTTP/1.1\r\nHost: t\r\nX-Fifo: {}\r\n\r\n",
            fifo.display()
        )
        .as_bytes(),
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    // A status of 103, a folder, a FIFO, a file opened for writing alone,
    // a user name with a line break: each refused.
    assert_eq!(
        resp.text(),
        "0x80070057 0x80070057 0x80070057 0x80070057 0x80070057\n"
    );
    // A second completion signal after the request ended is refused, not
    // taken into freed memory, nor by a newer request whose instance took
    // the freed memory: requests keep coming while it is made (300 ms
    // later), and each is answered in full.
    assert_eq!(get(server.addr, "/c/twice").text(), "signalled twice\n");
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1000);
    while std::time::Instant::now() < until {
        let resp = get(server.addr, "/c/hello");
        assert_eq!(resp.status, 200);
        assert!(resp.text().starts_with("hello from C\n"), "{}", resp.text());
    }
    assert_eq!(get(server.addr, "/c/twice-result").text(), "0x8007139F\n");
    // One signal per Pending: a second one before it is refused, and the
    // first completes the Pending that follows.
    assert_eq!(
        get(server.addr, "/c/early-twice").text(),
        "0x00000000 0x800700AA\n"
    );
    // A clone's cleanup may use another clone of the request.
    assert_eq!(
        get(server.addr, "/c/clone-cleanup").text(),
        "cleanup saw /c/clone-cleanup\n"
    );
    // A string asked for again is the one handed out before.
    assert_eq!(get(server.addr, "/c/same-string").text(), "same\n");
    // Nothing waits in SendResponse: a read, a post, a flush and a child
    // request started there are refused at once (RIIS_E_INVALID_STATE),
    // and the response goes out whole.
    let resp = get(server.addr, "/c/nested-ops");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "nested\n");
    assert_eq!(
        resp.header("x-nested-ops"),
        Some("0x8007139F 0x8007139F 0x8007139F 0x8007139F")
    );
    // The server keeps serving.
    assert_eq!(get(server.addr, "/c/hello").status, 200);
}

#[test]
fn a_c_module_raises_custom_notifications_and_runs_child_requests() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/custom");
    assert_eq!(
        resp.text(),
        "pings=1\n",
        "the second module counted it once"
    );
    let resp = get(server.addr, "/c/child");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "parent before\nhello from C\nparent after\n");
    // A child given a user (RIIS_EXECUTE_FLAG_AS_USER) skips its
    // AuthenticateRequest; one without runs it (in both module instances).
    let resp = get(server.addr, "/c/child-as");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "plain authentications=0\n");
    let resp = get(server.addr, "/c/child-plain");
    assert_eq!(resp.text(), "plain authentications=2\n");
}

/// ABI 1.8: a C module is told, on a server thread after the request,
/// how its response's delivery ended.
#[test]
fn a_c_module_learns_how_its_response_was_delivered() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/delivered");
    assert_eq!((resp.status, resp.text().as_str()), (200, "0123456789"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let told = get(server.addr, "/c/delivered-result").text();
        if told != "-1 -1" {
            assert_eq!(told, "10 1");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never told");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_c_module_rewrites_the_entity_at_send_response() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let resp = get(server.addr, "/c/upper");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "MAKE ME LOUD");
    assert_eq!(resp.header("content-length"), Some("12"));
    // ABI 1.4: the same a piece at a time, each piece a send of its own.
    let resp = get(server.addr, "/c/pieces");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "MAKE ME LOUD".repeat(1000));
    // The instance that runs first deferred; the second, listed before it
    // (SendResponse's order is inverted), got 5 bytes, not the last.
    let pieces: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-pieces"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        pieces,
        ["deferred=1 flush=0 final=0", "deferred=0 flush=0 final=0"]
    );
    assert_eq!(resp.header("content-length"), None);
    // Content-Type and X-Send-Seen at least.
    let count: u32 = resp.header("x-header-count").unwrap().parse().unwrap();
    assert!(count >= 2);
}

#[test]
fn request_contexts_of_a_c_module_are_cleaned_up() {
    let Some((_dir, server)) = c_module_server() else {
        return;
    };
    let mut conn = Connection::open(server.addr);
    for _ in 0..5 {
        assert_eq!(conn.get("/plain.txt").status, 200);
    }
    // Each request stored a context in both module instances; all released.
    let text = conn.get("/c/stats").text();
    let n: u32 = text
        .trim()
        .strip_prefix("cleanups=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 10, "{text}");

    // Storing the stored pointer again does not free it: the server is
    // still there (a double free would have aborted it) and counts one
    // cleanup for it.
    for _ in 0..3 {
        assert_eq!(conn.get("/c/store-same").text(), "stored twice same\n");
    }
    assert_eq!(conn.get("/plain.txt").status, 200);
}

/// Runs `riis check-config` on a configuration naming `image`.
fn check_config_with_image(dir: &TempDir, image: &str, precondition: &str) -> (bool, String) {
    dir.write("www/index.html", "x");
    let config = write_config(
        dir,
        &dir.path().join("www"),
        &format!(
            "[[global_modules]]\nname = \"Broken\"\nimage = \"{image}\"\n{precondition}\n\n[[modules]]\nname = \"Broken\"\n"
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An image loaded under a built-in handler's name replaces the built-in
/// module; when it is no handler, the default handler riis would add for
/// that name is refused, and the error points at the module's entry.
#[test]
fn an_image_under_a_built_in_handlers_name_is_refused_at_its_entry() {
    let dir = TempDir::new("native-shadow");
    let Some(()) = build_test_module(&dir) else {
        return;
    };
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[[global_modules]]\nname = \"DefaultDocument\"\nimage = \"libtest_module.so\"\n\n\
         [[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"DefaultDocument\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(":7: key `modules[1]`"), "{stderr}");
    assert!(
        stderr.contains("module `DefaultDocument` did not register"),
        "{stderr}"
    );
}

/// A line a module writes through its log source (ABI 1.11) names the
/// module, and a line break in it is escaped, not a line of its own.
#[test]
fn a_log_source_names_the_module_and_escapes_line_breaks() {
    let dir = TempDir::new("native-log-source");
    let Some(()) = build_test_module(&dir) else {
        return;
    };
    let config = write_config(&dir, &dir.path().join("www"), C_MODULE_CONFIG);
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("RIIS_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("c_module registered"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("c_module registered\\nriis: a forged line"),
        "{line}"
    );
    assert!(line.contains("module=\"CModule\""), "{line}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("riis: a forged line")),
        "{stderr}"
    );
}

#[test]
fn loader_errors_name_the_module_and_the_reason() {
    let dir = TempDir::new("native-errors");
    let Some(()) = compile(
        "cc",
        &[&dir.write("no_entry.c", "int unrelated(void) { return 1; }\n")],
        &dir.path().join("no_entry.so"),
        &[],
    ) else {
        return;
    };
    let unstamped = dir.write(
        "unstamped.c",
        "#include <stdint.h>\nint RegisterModule(uint32_t v, void *r, const void *s) { (void)v; (void)r; (void)s; return 0; }\n",
    );
    compile("cc", &[&unstamped], &dir.path().join("unstamped.so"), &[]).unwrap();
    let future = dir.write(
        "future.c",
        "#include <stdint.h>\n__attribute__((visibility(\"default\"))) const uint32_t riis_module_abi = (2u << 16);\nint RegisterModule(uint32_t v, void *r, const void *s) { (void)v; (void)r; (void)s; return 0; }\n",
    );
    compile("cc", &[&future], &dir.path().join("future.so"), &[]).unwrap();
    let newer_minor = dir.write(
        "newer_minor.c",
        "#include <stdint.h>\n__attribute__((visibility(\"default\"))) const uint32_t riis_module_abi = (1u << 16) | 99u;\nint RegisterModule(uint32_t v, void *r, const void *s) { (void)v; (void)r; (void)s; return 0; }\n",
    );
    compile(
        "cc",
        &[&newer_minor],
        &dir.path().join("newer_minor.so"),
        &[],
    )
    .unwrap();
    let failing = dir.write(
        "failing.c",
        "#include \"riis_module.h\"\nRIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) { (void)v; (void)r; (void)s; return RIIS_E_OUTOFMEMORY; }\n",
    );
    compile("cc", &[&failing], &dir.path().join("failing.so"), &[]).unwrap();
    let bad_registration = dir.write(
        "bad_registration.c",
        "#include \"riis_module.h\"\nRIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) { (void)v; return s->api->set_request_notifications(r, NULL, RIIS_RQ_BEGIN_REQUEST, 0); }\n",
    );
    compile(
        "cc",
        &[&bad_registration],
        &dir.path().join("bad_registration.so"),
        &[],
    )
    .unwrap();
    let unresolved = dir.write(
        "unresolved.c",
        "#include \"riis_module.h\"\nextern int riis_test_nowhere(void);\nRIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) { (void)v; (void)r; (void)s; return riis_test_nowhere(); }\n",
    );
    compile("cc", &[&unresolved], &dir.path().join("unresolved.so"), &[]).unwrap();
    dir.write("not_a_library.so", "this is text, not ELF\n");

    let cases: &[(&str, &str, &[&str])] = &[
        ("missing.so", "", &["does not exist"]),
        ("not_a_library.so", "", &["not a loadable shared library"]),
        // Refused when loaded, not the server's death at the first call.
        (
            "unresolved.so",
            "",
            &["not a loadable shared library", "riis_test_nowhere"],
        ),
        ("no_entry.so", "", &["does not export `RegisterModule`"]),
        ("unstamped.so", "", &["no `riis_module_abi` symbol"]),
        ("future.so", "", &["ABI 2.0", "hosts 1.0 to 1.12"]),
        ("newer_minor.so", "", &["ABI 1.99"]),
        ("failing.so", "", &["RegisterModule failed (0x8007000E)"]),
        (
            "bad_registration.so",
            "",
            &["set_request_notifications", "factory is NULL"],
        ),
        (
            "failing.so",
            "precondition = \"bitness128\"",
            &["unknown precondition `bitness128`"],
        ),
    ];
    for (image, precondition, expected) in cases {
        let (ok, stderr) = check_config_with_image(&dir, image, precondition);
        assert!(!ok, "{image}: check-config accepted it");
        assert!(
            stderr.contains("native module `Broken`"),
            "{image}: {stderr}"
        );
        assert!(
            stderr.contains("riis.toml:"),
            "{image}: no file:line in {stderr}"
        );
        for e in *expected {
            assert!(stderr.contains(e), "{image}: expected `{e}` in {stderr}");
        }
    }
    // A precondition that does not hold skips the module: the config is fine.
    let (ok, stderr) = check_config_with_image(&dir, "failing.so", "precondition = \"bitness32\"");
    assert!(ok, "{stderr}");
    // A handler naming it then says why it is missing.
    let (ok, stderr) = check_config_with_image(
        &dir,
        "failing.so",
        "precondition = \"bitness32\"\n[[handlers]]\nname = \"h\"\nmodules = [\"Broken\"]",
    );
    assert!(!ok);
    assert!(
        stderr.contains("native module `Broken` is skipped: its precondition does not hold"),
        "{stderr}"
    );
}

#[test]
fn an_image_is_found_next_to_a_configuration_named_without_a_folder() {
    let dir = TempDir::new("native-relative");
    let Some(()) = compile(
        "cc",
        &[&test_module_source()],
        &dir.path().join("libtest_module.so"),
        &["-std=c99", "-D_POSIX_C_SOURCE=200809L"],
    ) else {
        return;
    };
    dir.write("www/a.txt", "a");
    write_config(&dir, &dir.path().join("www"), C_MODULE_CONFIG);
    // `--config riis.toml` from inside the folder: the image path must not
    // become a bare file name that the dynamic loader looks up elsewhere.
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", "riis.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_module_that_never_completes_meets_the_execution_limit() {
    let dir = TempDir::new("native-never");
    let Some(()) = build_test_module(&dir) else {
        return;
    };
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &format!("[timeouts]\nexecution = 1\n{C_MODULE_CONFIG}"),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = get(server.addr, "/c/never");
    assert_eq!(resp.status, 503);
    assert!(!resp.text().contains("never sent"));
    // The request ran to its end (its request context was cleaned up), and
    // the server goes on.
    assert_eq!(get(server.addr, "/c/hello").status, 200);

    // A module whose request ended while it was pending is disposed only
    // once its own thread signalled (it may use its context until then),
    // and then it is disposed rather than leaked.
    // A thread that writes on and on into its parked request is refused
    // past 16 MiB (RIIS_E_OUTOFMEMORY), and the request fails rather than
    // send what fitted as if it were whole.
    let flood = get(server.addr, "/c/flood");
    assert_eq!(flood.status, 500);
    assert!(flood.body.len() < 1 << 20);
    assert_eq!(
        get(server.addr, "/c/flooded").text().trim(),
        "refused_at=16 hr=0x8007000E"
    );
    assert_eq!(get(server.addr, "/c/orphan").status, 503);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = get(server.addr, "/c/orphans").text();
        // Not called again while pending either (SendResponse of the 503,
        // LogRequest, EndRequest).
        // Its thread's write after the request ended was refused
        // (RIIS_E_INVALID_STATE): it would have gone nowhere.
        if text.trim() == "disposed=1,0 called=0 late_write=0x8007139F" {
            break;
        }
        assert_eq!(
            text.trim(),
            "disposed=0,0 called=0 late_write=0x00000000",
            "disposed before its signal, or called while pending"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned module was never disposed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A factory that returns an instance without `on_notification` fails the
/// request, and the instance goes back to the module's dispose. The same
/// server answers `riis status` with the C module's RscaQuery answer.
#[test]
fn an_unusable_instance_is_disposed_and_a_c_module_answers_status() {
    let dir = TempDir::new("native-unusable");
    let Some(()) = build_test_module(&dir) else {
        return;
    };
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        r#"
[server]
pid_file = "riis.pid"
[[global_modules]]
name = "CModule"
image = "libtest_module.so"
[[global_modules]]
name = "CUnusable"
image = "libtest_module.so"
[[modules]]
name = "CModule"
[[modules]]
name = "CUnusable"
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(get(server.addr, "/c/unusable-disposed").text(), "0");
    // `riis status` (RscaQuery): the C module answers through
    // global_rsca_write; bytes that are not UTF-8 are refused.
    let report = common::riis_status(&config);
    assert!(
        report.contains("c-module: function=status parameters=[] non-utf8=0x80070057\n"),
        "{report}"
    );
    // CModule lets this URL through; CUnusable's instance is refused.
    assert_eq!(get(server.addr, "/elsewhere").status, 500);
    assert_eq!(get(server.addr, "/elsewhere").status, 500);
    assert_eq!(get(server.addr, "/c/unusable-disposed").text(), "2");
}

/// A reload that never finishes (a RegisterModule that hangs, as a file on
/// a hung mount would) does not hold up SIGTERM: the server stops without
/// waiting for it.
#[test]
fn a_hanging_reload_does_not_hold_up_shutdown() {
    let dir = TempDir::new("slow-reload");
    let marker = dir.path().join("slow-now");
    let source = dir.write(
        "slow.c",
        "#include \"riis_module.h\"\n#include <unistd.h>\n\
         RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {\n\
         (void)v; (void)r; (void)s;\n if (access(MARKER, F_OK) == 0) sleep(120);\n return RIIS_S_OK;\n}\n",
    );
    let define = format!("-DMARKER=\"{}\"", marker.display());
    let Some(()) = compile("cc", &[&source], &dir.path().join("slow.so"), &[&define]) else {
        return;
    };
    dir.write("www/a.txt", "a");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[[global_modules]]\nname = \"Slow\"\nimage = \"slow.so\"\n\n[[modules]]\nname = \"Slow\"\n[[modules]]\nname = \"StaticFile\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    std::fs::write(&marker, "").unwrap();
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    // The reload is under way (RegisterModule sleeps); the server still
    // serves, and stops at once when asked.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(60),
        "shutdown waited for the reload"
    );
}

/// A module call that holds its worker thread (here a C module sleeping in
/// EndRequest, after a wait in BeginRequest) keeps that worker from its
/// once-a-second sweep; `riis status` names the worker and how long it has
/// been held, lists the request as running there, the other worker goes on
/// serving, and systemd's watchdog stops being pinged.
#[test]
fn status_names_a_worker_a_module_call_holds() {
    let dir = TempDir::new("held-worker");
    let source = dir.write(
        "holder.c",
        "#include \"riis_module.h\"\n#include <pthread.h>\n#include <unistd.h>\n\
         static const riis_api *api;\n\
         static void *later(void *c) {\n\
         usleep(50000); api->indicate_completion((riis_context *)c, RIIS_STATUS_CONTINUE); return NULL;\n}\n\
         static riis_status on_notification(void *m, riis_context *c, uint32_t n, int p, riis_provider *pr) {\n\
         (void)m; (void)p; (void)pr;\n\
         if (n == RIIS_RQ_BEGIN_REQUEST) {\n\
         pthread_t t; pthread_create(&t, NULL, later, c); pthread_detach(t); return RIIS_STATUS_PENDING;\n}\n\
         sleep(5); return RIIS_STATUS_CONTINUE;\n}\n\
         static const riis_module_callbacks callbacks = {sizeof(riis_module_callbacks), on_notification, NULL, NULL};\n\
         static riis_hresult make(void *u, riis_allocator *a, riis_module_instance *out) {\n\
         (void)u; (void)a; out->callbacks = &callbacks; out->module = NULL; return RIIS_S_OK;\n}\n\
         static const riis_module_factory factory = {sizeof(riis_module_factory), NULL, make, NULL};\n\
         RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {\n\
         (void)v; api = s->api;\n\
         return api->set_request_notifications(r, &factory, RIIS_RQ_BEGIN_REQUEST | RIIS_RQ_END_REQUEST, 0);\n}\n",
    );
    let Some(()) = compile("cc", &[&source], &dir.path().join("holder.so"), &[]) else {
        return;
    };
    dir.write("www/a.txt", "a");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[server]\npid_file = \"riis.pid\"\nworker_threads = 2\n\n\
         [[global_modules]]\nname = \"Holder\"\nimage = \"holder.so\"\n\n\
         [[modules]]\nname = \"Holder\"\n[[modules]]\nname = \"StaticFile\"\n",
    );
    // systemd's watchdog (WatchdogSec=1.5): the test listens for the pings.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let server = common::started_as_by_systemd(&config, &notify_path, 1_500_000);
    let report = common::riis_status(&config);
    assert!(!report.contains("worker_held:"), "{report}");
    let pings = std::thread::spawn(move || {
        // The longest gap between watchdog pings over 6 seconds.
        notify
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let (started, mut last, mut gap) = (
            std::time::Instant::now(),
            std::time::Instant::now(),
            std::time::Duration::ZERO,
        );
        let mut buf = [0u8; 512];
        while started.elapsed() < std::time::Duration::from_secs(6) {
            if let Ok(n) = notify.recv(&mut buf) {
                if &buf[..n] == b"WATCHDOG=1\n" {
                    gap = gap.max(last.elapsed());
                    last = std::time::Instant::now();
                }
            }
        }
        gap
    });
    let addr = server.addr;
    let held = std::thread::spawn(move || get(addr, "/a.txt"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let report = loop {
        let report = common::riis_status(&config);
        if report.contains("worker_held:") || std::time::Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let line = report
        .lines()
        .find(|l| l.starts_with("worker_held: riis-worker-"))
        .unwrap_or_else(|| panic!("no held worker: {report}"));
    let held_ms: u64 = line
        .split(' ')
        .find_map(|f| f.strip_prefix("held_ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((3000..15000).contains(&held_ms), "{line}");
    // The request had waited (BeginRequest's Pending) before the call that
    // holds the worker: it is listed as running there, with the hold.
    let request = report
        .lines()
        .find(|l| l.starts_with("request: "))
        .unwrap_or_else(|| panic!("the request is not listed: {report}"));
    assert!(
        request.contains(" stage=BeginRequest module=Holder state=running held_ms="),
        "{request}"
    );
    let resp = held.join().unwrap();
    assert_eq!(resp.status, 200);
    // Pings (every 0.75 s) stopped while the worker was held past 1.5 s.
    let gap = pings.join().unwrap();
    assert!(gap > std::time::Duration::from_millis(1500), "{gap:?}");
}

/// A site with `www/a.txt` and the global module `name`, built from C:
/// for the notifications `mask` it runs `body` (statements with `n`, the
/// notification, `p`, its provider, and `api` in scope), and its Terminate
/// makes the file `terminated` in `dir`; `server` goes in `[server]`. The
/// configuration, or `None` without a C compiler.
fn global_module_site(
    dir: &TempDir,
    name: &str,
    mask: &str,
    body: &str,
    server: &str,
) -> Option<PathBuf> {
    let source = dir.write(
        &format!("{name}.c"),
        format!(
            "#include \"riis_module.h\"\n#include <stdio.h>\n#include <string.h>\n#include <time.h>\n#include <unistd.h>\n\
             static const riis_api *api;\n\
             static riis_global_status on_global(void *u, uint32_t n, riis_global_provider *p) {{\n\
             (void)u; (void)n; (void)p;\n{body}\
             return RIIS_GLOBAL_CONTINUE;\n}}\n\
             static void terminate(void *u) {{\n\
             (void)u; FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f);\n}}\n\
             static const riis_global_module global = {{sizeof(riis_global_module), NULL, on_global, terminate}};\n\
             RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {{\n\
             (void)v; api = s->api;\n\
             return api->set_global_notifications(r, &global, {mask});\n}}\n",
            dir.path().join("terminated").display()
        ),
    );
    compile(
        "cc",
        &[&source],
        &dir.path().join(format!("{name}.so")),
        &[],
    )?;
    dir.write("www/a.txt", "a");
    Some(write_config(
        dir,
        &dir.path().join("www"),
        &format!(
            "[server]\npid_file = \"riis.pid\"\n{server}\n\n\
             [[global_modules]]\nname = \"{name}\"\nimage = \"{name}.so\"\n\n\
             [[modules]]\nname = \"{name}\"\n[[modules]]\nname = \"StaticFile\"\n"
        ),
    ))
}

/// A global module whose HealthCheck never returns (here: sleeps 60 s)
/// holds neither `riis status` nor the stop: the call runs off the
/// thread that takes signals, the ticks after it are skipped rather than
/// stacked on more threads, and SIGTERM ends the server once
/// `shutdown_timeout` has passed, without stopping modules (no terminate)
/// under the call still running.
#[test]
fn a_health_check_that_never_returns_holds_neither_status_nor_the_stop() {
    let dir = TempDir::new("slow-health");
    let terminated = dir.path().join("terminated");
    let Some(config) = global_module_site(
        &dir,
        "SlowHealth",
        "RIIS_GL_HEALTH_CHECK | RIIS_GL_RSCA_QUERY",
        "static volatile int calls;\n\
         if (n == RIIS_GL_HEALTH_CHECK) {\n\
         /* Signals (SIGUSR1, SIGTERM) may cut a sleep short: it goes on. */\n\
         time_t end = time(NULL) + 60; calls++; while (time(NULL) < end) sleep(1);\n}\n\
         if (n == RIIS_GL_RSCA_QUERY) {\n\
         char line[64]; snprintf(line, sizeof line, \"health_calls=%d\\n\", calls);\n\
         api->global_rsca_write(p, line, strlen(line));\n}\n",
        "health_check_interval = 1\nshutdown_timeout = 2",
    ) else {
        return;
    };
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // The first HealthCheck starts after 1 s; two more ticks pass while it
    // sleeps.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let report = common::riis_status(&config);
    assert!(report.contains("health_calls=1\n"), "{report}");
    assert_eq!(get(server.addr, "/a.txt").text(), "a");
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(30),
        "the stop waited for the HealthCheck"
    );
    assert!(
        !terminated.exists(),
        "terminate ran under the HealthCheck's call"
    );
}

/// A global module slow to answer RscaQuery (here: 60 s) holds neither
/// the stop nor a reload: `riis status` asks it off the thread that takes
/// signals, as HealthCheck is.
#[test]
fn a_status_query_that_never_returns_holds_neither_reload_nor_stop() {
    let dir = TempDir::new("slow-rsca");
    let terminated = dir.path().join("terminated");
    let Some(config) = global_module_site(
        &dir,
        "SlowRsca",
        "RIIS_GL_RSCA_QUERY",
        "/* Signals may cut a sleep short: it goes on. */\n\
         if (n == RIIS_GL_RSCA_QUERY) { time_t end = time(NULL) + 60; while (time(NULL) < end) sleep(1); }\n",
        "shutdown_timeout = 2",
    ) else {
        return;
    };
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A reload (by signal: `riis reload` reads the status) still goes
    // through, to a configuration serving another folder.
    dir.write("www2/a.txt", "b");
    let body = std::fs::read_to_string(&config).unwrap().replace(
        &*dir.path().join("www").to_string_lossy(),
        &dir.path().join("www2").to_string_lossy(),
    );
    std::fs::write(&config, body).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    common::wait_for("the reload", || get(server.addr, "/a.txt").text() == "b");
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(30),
        "the stop waited for the RscaQuery"
    );
    // Nor were its modules stopped under the call still running.
    assert!(!terminated.exists(), "terminate ran under the RscaQuery");
}

/// A reload held up by a module (here: a ConfigurationChange that waits
/// while a file exists) shows in the status report as under way, and
/// `riis reload` says so rather than time out in silence.
#[test]
fn a_reload_held_up_by_a_module_shows_as_under_way() {
    let dir = TempDir::new("held-reload");
    let hold = dir.path().join("hold");
    let Some(config) = global_module_site(
        &dir,
        "HeldReload",
        "RIIS_GL_CONFIGURATION_CHANGE",
        &format!(
            "if (n == RIIS_GL_CONFIGURATION_CHANGE) while (access(\"{}\", F_OK) == 0) usleep(20000);\n",
            hold.display()
        ),
        "",
    ) else {
        return;
    };
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    std::fs::write(&hold, "").unwrap();
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    common::wait_for("the reload to show as under way", || {
        common::riis_status(&config).contains("reload_under_way_ms: ")
    });
    assert_eq!(get(server.addr, "/a.txt").text(), "a");
    std::fs::remove_file(&hold).unwrap();
    common::wait_for("the reload to end", || {
        let report = common::riis_status(&config);
        report.contains("reloads: 1\n") && !report.contains("reload_under_way_ms")
    });
}

/// A request module whose call never returns (here: sleeps 120 s in
/// BeginRequest) holds its worker thread, and that worker's drain cannot
/// even start; the stop still ends, `shutdown_timeout` and a few seconds
/// after SIGTERM, with an error naming the held worker, and without
/// stopping modules (no terminate) under the call still running.
#[test]
fn a_request_call_that_never_returns_does_not_hold_the_stop_for_good() {
    let dir = TempDir::new("held-worker");
    let terminated = dir.path().join("terminated");
    let holding = dir.path().join("holding");
    let source = dir.write(
        "hold.c",
        format!(
            "#include \"riis_module.h\"\n#include <stdio.h>\n#include <string.h>\n#include <time.h>\n#include <unistd.h>\n\
             static const riis_api *api;\n\
             static void mark(const char *path) {{ FILE *f = fopen(path, \"w\"); if (f) fclose(f); }}\n\
             static riis_status on_notification(void *m, riis_context *c, uint32_t n, int p, riis_provider *pr) {{\n\
             (void)m; (void)n; (void)p; (void)pr;\n\
             const char *url = api->request_url(c);\n\
             /* Signals may cut a sleep short: it goes on. */\n\
             if (url != NULL && strcmp(url, \"/hold\") == 0) {{ mark(\"{holding}\"); time_t end = time(NULL) + 120; while (time(NULL) < end) sleep(1); }}\n\
             return RIIS_STATUS_CONTINUE;\n}}\n\
             static const riis_module_callbacks callbacks = {{sizeof(riis_module_callbacks), on_notification, NULL, NULL}};\n\
             static riis_hresult get_module(void *u, riis_allocator *a, riis_module_instance *out) {{\n\
             (void)u; (void)a; out->callbacks = &callbacks; out->module = NULL; return RIIS_S_OK;\n}}\n\
             static void terminate(void *u) {{ (void)u; mark(\"{terminated}\"); }}\n\
             static const riis_module_factory factory = {{sizeof(riis_module_factory), NULL, get_module, terminate}};\n\
             RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {{\n\
             (void)v; api = s->api;\n\
             return api->set_request_notifications(r, &factory, RIIS_RQ_BEGIN_REQUEST, 0);\n}}\n",
            holding = holding.display(),
            terminated = terminated.display()
        ),
    );
    let Some(()) = compile("cc", &[&source], &dir.path().join("hold.so"), &[]) else {
        return;
    };
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[server]\nshutdown_timeout = 1\n\n\
         [[global_modules]]\nname = \"Hold\"\nimage = \"hold.so\"\n\n\
         [[modules]]\nname = \"Hold\"\n[[modules]]\nname = \"StaticFile\"\n",
    );
    dir.write("www/a.txt", "a");
    let start = |log: &std::path::Path| {
        let server = RunningBinary::start_logging_to(&config, log);
        assert_eq!(get(server.addr, "/a.txt").text(), "a");
        let _ = std::fs::remove_file(&holding);
        let mut held = Connection::open(server.addr);
        held.send_raw(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
        common::wait_for("the module to hold its worker", || holding.exists());
        (server, held)
    };

    let log = dir.path().join("riis.log");
    let (server, _held) = start(&log);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("a worker thread was still held"), "{text}");
    assert!(
        !terminated.exists(),
        "terminate ran under the call still running"
    );

    // A second stop signal during the drain ends the process at once,
    // with status 1; one right after the first (`timeout(1)` sends the
    // program's and its group's) is the same stop.
    let log = dir.path().join("riis-again.log");
    let (mut server, _held) = start(&log);
    let pid = server.child.id().to_string();
    let term = || {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    term();
    common::wait_for("the drain to begin", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("shutting down"))
    });
    term();
    common::wait_for("the echo to be logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("taken as the same stop"))
    });
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "a signal right after the first stopped it at once"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    term();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("a second stop signal"), "{text}");
}

/// A second completion signal for a Pending that the first one already
/// ended is refused (RIIS_E_INVALID_STATE) when it comes while the module
/// is in no call of its own: kept, it would have ended the module's next
/// Pending before that work was done. Here it comes while another module
/// (the same library under a second name) runs AuthenticateRequest, which
/// waits for it and reports its HRESULT.
#[test]
fn a_second_signal_for_one_pending_is_refused() {
    let dir = TempDir::new("stray-signal");
    let source = dir.write(
        "stray.c",
        "#include \"riis_module.h\"\n#include <pthread.h>\n#include <stdio.h>\n#include <string.h>\n#include <unistd.h>\n\
         static const riis_api *api;\n\
         static volatile int holder_waiting;\n\
         static volatile riis_hresult first = 1, second = 1;\n\
         static void *signal_twice(void *c) {\n\
         first = api->indicate_completion((riis_context *)c, RIIS_STATUS_CONTINUE);\n\
         for (int i = 0; i < 400 && !holder_waiting; i++) usleep(5000);\n\
         second = api->indicate_completion((riis_context *)c, RIIS_STATUS_CONTINUE);\n\
         return NULL;\n}\n\
         static riis_status stray(void *m, riis_context *c, uint32_t n, int p, riis_provider *pr) {\n\
         (void)m; (void)n; (void)p; (void)pr;\n\
         pthread_t t; pthread_create(&t, NULL, signal_twice, c); pthread_detach(t);\n\
         return RIIS_STATUS_PENDING;\n}\n\
         static riis_status holder(void *m, riis_context *c, uint32_t n, int p, riis_provider *pr) {\n\
         (void)m; (void)n; (void)p; (void)pr;\n\
         holder_waiting = 1;\n\
         for (int i = 0; i < 400 && second == 1; i++) usleep(5000);\n\
         char line[32]; snprintf(line, sizeof line, \"0x%08X 0x%08X\", (unsigned)first, (unsigned)second);\n\
         api->response_set_header(c, \"X-Signals\", line, 1);\n\
         return RIIS_STATUS_CONTINUE;\n}\n\
         static const riis_module_callbacks stray_calls = {sizeof(riis_module_callbacks), stray, NULL, NULL};\n\
         static const riis_module_callbacks holder_calls = {sizeof(riis_module_callbacks), holder, NULL, NULL};\n\
         static riis_hresult make(void *u, riis_allocator *a, riis_module_instance *out) {\n\
         (void)a; out->callbacks = (const riis_module_callbacks *)u; out->module = NULL; return RIIS_S_OK;\n}\n\
         static const riis_module_factory stray_factory = {sizeof(riis_module_factory), (void *)&stray_calls, make, NULL};\n\
         static const riis_module_factory holder_factory = {sizeof(riis_module_factory), (void *)&holder_calls, make, NULL};\n\
         RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {\n\
         (void)v; api = s->api;\n\
         if (strcmp(api->registration_name(r), \"Stray\") == 0)\n\
         return api->set_request_notifications(r, &stray_factory, RIIS_RQ_BEGIN_REQUEST, 0);\n\
         return api->set_request_notifications(r, &holder_factory, RIIS_RQ_AUTHENTICATE_REQUEST, 0);\n}\n",
    );
    let Some(()) = compile("cc", &[&source], &dir.path().join("stray.so"), &[]) else {
        return;
    };
    dir.write("www/a.txt", "a");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[[global_modules]]\nname = \"Stray\"\nimage = \"stray.so\"\n\
         [[global_modules]]\nname = \"Holder\"\nimage = \"stray.so\"\n\n\
         [[modules]]\nname = \"Stray\"\n[[modules]]\nname = \"Holder\"\n\
         [[modules]]\nname = \"StaticFile\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = get(server.addr, "/a.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "a");
    assert_eq!(resp.header("x-signals"), Some("0x00000000 0x8007139F"));
}

/// A module whose Terminate never returns does not keep a stop, nor
/// `check-config`, from ending: past `shutdown_timeout` the server names
/// the module and goes on without it, as IIS ends a worker process past
/// `shutdownTimeLimit`.
#[test]
fn a_terminate_that_never_returns_does_not_hold_up_the_end() {
    let dir = TempDir::new("stuck-terminate");
    let source = dir.write(
        "stuck.c",
        "#include \"riis_module.h\"\n#include <unistd.h>\n\
         static riis_global_status on_global(void *d, uint32_t n, riis_global_provider *p) {\n\
         (void)d; (void)n; (void)p; return RIIS_GLOBAL_CONTINUE;\n}\n\
         static void never_ends(void *d) { (void)d; sleep(600); }\n\
         static riis_global_module stuck = { sizeof(riis_global_module), NULL, on_global, never_ends };\n\
         RIIS_EXPORT riis_hresult RegisterModule(uint32_t v, riis_registration *r, const riis_server *s) {\n\
         (void)v; return s->api->set_global_notifications(r, &stuck, RIIS_GL_PRE_BEGIN_REQUEST);\n}\n",
    );
    let Some(()) = compile("cc", &[&source], &dir.path().join("stuck.so"), &[]) else {
        return;
    };
    dir.write("www/a.txt", "a");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        "[server]\nshutdown_timeout = 1\n\n[[global_modules]]\nname = \"Stuck\"\nimage = \"stuck.so\"\n\n\
         [[modules]]\nname = \"Stuck\"\n[[modules]]\nname = \"StaticFile\"\n",
    );
    let started = std::time::Instant::now();
    let out = common::riis_command("check-config", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Stuck") && err.contains("Terminate"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(get(server.addr, "/a.txt").status, 200);
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(60),
        "the stop waited for the module's Terminate"
    );
}
