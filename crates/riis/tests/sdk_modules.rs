//! One Rust module source (`crates/riis-sdk/examples/sdk_hello.rs`), two
//! ways: compiled into the server and registered through the C ABI in
//! process, and built as a shared library that `[[global_modules]]` loads.
//! Both behave the same over real sockets.

mod common;

#[path = "../../riis-sdk/examples/sdk_hello.rs"]
#[allow(dead_code)]
mod sdk_hello;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{get, write_config, Connection, InProcessServer, RunningBinary, TempDir};
use riis_pipeline::{ModuleError, ModuleRegistration, ServerInfo};

const MODULES: &str = r#"
[[modules]]
name = "SdkHello"
[[modules]]
name = "StaticFile"
[[handlers]]
name = "StaticFile"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]
"#;

/// What both ways must show.
fn check(addr: SocketAddr) {
    let resp = get(addr, "/sdk");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello from a Rust module library\n");
    assert_eq!(resp.header("x-module"), Some("sdk_hello"));
    let first: u64 = resp.header("x-site-requests").unwrap().parse().unwrap();

    let resp = get(addr, "/sdk/async");
    assert_eq!(resp.text(), "completed on another thread: 7 bytes\n");

    // SendResponse rewrites the buffered entity.
    assert_eq!(get(addr, "/sdk/shout").text(), "QUIET WORDS\n");

    let mut conn = Connection::open(addr);
    conn.send_raw(b"POST /sdk/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello there");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello there");

    // A panic in the module fails only its request.
    let failed = get(addr, "/sdk?panic=1");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("x-sdk-partial"), None);
    let resp = get(addr, "/sdk");
    assert_eq!(resp.status, 200);
    let later: u64 = resp.header("x-site-requests").unwrap().parse().unwrap();
    assert!(later > first, "the site-scope counter kept counting");
}

fn register_compiled_in(
    version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    let _ = version;
    riis_native::register_entry_point(sdk_hello::RegisterModule, registration, server)
}

#[test]
fn the_sdk_module_compiled_in() {
    let config = format!(
        "{MODULES}\n[[sites]]\nname = \"Test\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n"
    );
    let server = InProcessServer::start(&config, &[("SdkHello", register_compiled_in)]);
    check(server.addr);
    server.stop();
}

/// Builds the example as a shared library, in a target folder of its own so
/// it never waits on the lock of the build running these tests.
fn build_library() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-example");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "riis-sdk",
            "--example",
            "sdk_hello",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the sdk_hello example failed");
    target.join("debug/examples/libsdk_hello.so")
}

#[test]
fn the_sdk_module_as_a_shared_library() {
    let library = build_library();
    let dir = TempDir::new("sdk-so");
    dir.write("www/a.txt", "alpha");
    let config = write_config(
        &dir,
        &dir.path().join("www"),
        &format!(
            "[[global_modules]]\nname = \"SdkHello\"\nimage = '{}'\n{MODULES}",
            library.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    check(server.addr);
    assert_eq!(get(server.addr, "/a.txt").text(), "alpha");
    drop(server);

    // The logger the module keeps names it in the server's log, though
    // it writes without a request (ABI 1.11's log source).
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("RIIS_LOG", "info")
        .spawn()
        .unwrap();
    let addr = common::listening_addr(&mut child);
    check(addr);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("sdk_hello: the async thread completes"))
        .unwrap_or_else(|| panic!("{logged}"));
    assert!(line.contains("module=\"SdkHello\""), "{line}");
}
