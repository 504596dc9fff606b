//! HttpLogging over real sockets: one W3C line per request, with IIS's
//! default fields and the header block; values that cannot break a line;
//! a location that turns logging off; a child request logged once, as its
//! parent; `sc-bytes` and `cs-bytes` against the bytes on the wire; lines
//! written once a second and at shutdown; a renamed file followed by a
//! new one; bad fields as configuration errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

/// HttpLogging first (so its SendResponse runs last), then the static
/// handler's modules and ProtocolSupport for a custom header; `section`
/// holds the server-level `http_logging` keys.
fn config(dir: &TempDir, section: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "ProtocolSupport"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[protocol]
custom_headers = {{ "X-Frame-Options" = "DENY" }}

[http_logging]
{section}

[[sites]]
name = "Logged"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/quiet"
http_logging = {{ enabled = false }}
"#,
            root = root.display(),
        ),
    )
}

/// Every log file of site 1 under `logs`, concatenated in name order (a
/// run that crosses midnight UTC writes two).
fn log_text(logs: &Path) -> String {
    let folder = logs.join("W3SVC1");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// The log's request lines (not directives).
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// Waits until the log holds `n` request lines.
fn wait_for_lines(logs: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log_text(logs);
        if lines(&text).len() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "log so far:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_request_gets_a_line_with_the_default_fields() {
    let dir = TempDir::new("httplog");
    dir.write("www/a.txt", "alpha");
    dir.write("www/index.html", "<p>home</p>");
    dir.write("www/quiet/q.txt", "quiet");
    let config = config(&dir, "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let mut conn = Connection::open(server.addr);

    conn.send_raw(
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: Test Agent/1.0 (tab\there)\r\nReferer: http://t/from\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 200);
    assert_eq!(conn.get("/missing.txt?x=1&y=%0D%0A").status, 404);
    // Not logged: the location says so.
    assert_eq!(conn.get("/quiet/q.txt").status, 200);
    // A default document is a child request: one line, the client's URL.
    assert_eq!(conn.get("/").status, 200);

    // Written by the writer thread within a second or so, while the server
    // runs.
    let text = wait_for_lines(&logs, 3);
    let all = lines(&text);
    assert_eq!(all.len(), 3, "{text}");
    assert!(text.starts_with("#Software: riis/"), "{text}");
    assert!(text.contains("\n#Version: 1.0\n#Date: "), "{text}");
    assert!(
        text.contains(
            "\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port \
             cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus \
             sc-win32-status time-taken\n"
        ),
        "{text}"
    );
    let port = server.addr.port().to_string();
    let fields = |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let first = fields(all[0]);
    assert_eq!(first.len(), 15, "{}", all[0]);
    assert_eq!(first[0].len(), 10, "date: {}", first[0]);
    assert_eq!(first[1].len(), 8, "time: {}", first[1]);
    // The file is dated by its first line, not by the write a second later.
    assert!(
        text.contains(&format!("\n#Date: {} {}\n", first[0], first[1])),
        "{text}"
    );
    assert_eq!(
        first[2..14],
        [
            "127.0.0.1",
            "GET",
            "/a.txt",
            "-",
            &port,
            "-",
            "127.0.0.1",
            "Test+Agent/1.0+(tab%09here)",
            "http://t/from",
            "200",
            "0",
            "0"
        ]
    );
    assert!(
        first[14].parse::<u64>().is_ok(),
        "time-taken: {}",
        first[14]
    );

    let missing = fields(all[1]);
    assert_eq!(missing[4..6], ["/missing.txt", "x=1&y=%0D%0A"]);
    assert_eq!(missing[9..12], ["-", "-", "404"]);
    // StaticFile's 404 carries ERROR_FILE_NOT_FOUND.
    assert_eq!(missing[12..14], ["0", "2"]);

    let home = fields(all[2]);
    assert_eq!(home[4], "/");
    assert_eq!(home[11], "200");

    // More lines, then shutdown: they are written before the exit.
    assert_eq!(conn.get("/a.txt?after=1").status, 200);
    drop(conn);
    assert!(server.terminate().success());
    let text = log_text(&logs);
    let all = lines(&text);
    assert_eq!(all.len(), 4, "{text}");
    assert!(all[3].contains(" /a.txt after=1 "), "{}", all[3]);
    // The writer thread's lines and the shutdown's share one header block.
    assert_eq!(text.matches("#Fields:").count(), 1, "{text}");
}

/// Sends `request` on a fresh connection and reads one response with a
/// `Content-Length`: the bytes on the wire.
fn exchange(addr: SocketAddr, request: &[u8]) -> (usize, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            let is_head = request.starts_with(b"HEAD");
            let total = end + 4 + if is_head { 0 } else { length };
            while got.len() < total {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            return (total, head);
        }
    }
}

#[test]
fn byte_counts_match_the_wire_and_fields_are_chosen() {
    let dir = TempDir::new("httplog-bytes");
    dir.write("www/a.txt", "alpha beta gamma");
    let config = config(
        &dir,
        r#"fields = ["cs-method", "cs-uri-stem", "sc-status", "sc-bytes", "cs-bytes",
          "cs-version", "cs-host", "sc(Content-Type)", "s-sitename", "cs(X-Request-Id)"]
period = "hourly""#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");

    let get = b"GET /a.txt HTTP/1.1\r\nHost: example.test\r\nX-Request-Id: r-1\r\n\r\n";
    let (get_bytes, head) = exchange(server.addr, get);
    assert!(head.contains("x-frame-options: deny"), "{head}");
    let head_request = b"HEAD /a.txt HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let (head_bytes, _) = exchange(server.addr, head_request);
    let missing = b"GET /nope HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let (missing_bytes, _) = exchange(server.addr, missing);
    // The HTTP layer's `Connection` header is counted too.
    let closing = b"GET /a.txt HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";
    let (closing_bytes, head) = exchange(server.addr, closing);
    assert!(head.contains("connection: close"), "{head}");
    let old = b"GET /a.txt HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n";
    let (old_bytes, head) = exchange(server.addr, old);
    assert!(head.contains("connection: keep-alive"), "{head}");
    // An absolute-form target names the host the request is routed by,
    // whatever `Host` says (RFC 9112 §3.2.2).
    let absolute = b"GET http://routed.test:8081/a.txt HTTP/1.1\r\nHost: claimed.test\r\n\r\n";
    let (absolute_bytes, _) = exchange(server.addr, absolute);

    let text = wait_for_lines(&logs, 6);
    assert!(
        text.contains(
            "#Fields: cs-method cs-uri-stem sc-status sc-bytes cs-bytes cs-version \
             cs-host sc(Content-Type) s-sitename cs(X-Request-Id)\n"
        ),
        "{text}"
    );
    let all = lines(&text);
    assert_eq!(
        all,
        [
            format!(
                "GET /a.txt 200 {get_bytes} {} HTTP/1.1 example.test text/plain W3SVC1 r-1",
                get.len()
            ),
            format!(
                "HEAD /a.txt 200 {head_bytes} {} HTTP/1.1 example.test text/plain W3SVC1 -",
                head_request.len()
            ),
            format!(
                "GET /nope 404 {missing_bytes} {} HTTP/1.1 example.test - W3SVC1 -",
                missing.len()
            ),
            format!(
                "GET /a.txt 200 {closing_bytes} {} HTTP/1.1 example.test text/plain W3SVC1 -",
                closing.len()
            ),
            format!(
                "GET /a.txt 200 {old_bytes} {} HTTP/1.0 example.test text/plain W3SVC1 -",
                old.len()
            ),
            format!(
                "GET /a.txt 200 {absolute_bytes} {} HTTP/1.1 routed.test:8081 text/plain W3SVC1 -",
                absolute.len()
            ),
        ],
        "{text}"
    );
    // Hourly files: u_exYYMMDDHH.log.
    let names: Vec<String> = std::fs::read_dir(logs.join("W3SVC1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.len() == "u_ex26120418.log".len() && n.starts_with("u_ex")),
        "{names:?}"
    );
}

#[test]
fn a_renamed_log_file_is_followed_by_a_new_one_with_its_header() {
    let dir = TempDir::new("httplog-rotate");
    dir.write("www/a.txt", "alpha");
    let config = config(&dir, "period = \"monthly\"");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let folder = logs.join("W3SVC1");

    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt?n=1").status, 200);
    wait_for_lines(&logs, 1);
    // What a log rotator does: rename the file, signal nobody.
    let name = std::fs::read_dir(&folder)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rotated = dir.path().join("rotated.log");
    std::fs::rename(&name, &rotated).unwrap();

    assert_eq!(conn.get("/a.txt?n=2").status, 200);
    let text = wait_for_lines(&logs, 1);
    assert!(text.starts_with("#Software: "), "{text}");
    assert_eq!(lines(&text).len(), 1, "{text}");
    assert!(text.contains(" /a.txt n=2 "), "{text}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(lines(&old).len(), 1, "{old}");
    assert!(old.contains(" /a.txt n=1 "), "{old}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&name).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "{mode:o}");
}

/// A link put at a site's log folder while the server runs (in a log
/// folder others may write in, by anyone) is not written through: the
/// lines wait, and go into the folder once it is one again.
#[test]
fn a_link_at_the_site_folder_is_not_written_through() {
    let dir = TempDir::new("httplog-link");
    dir.write("www/a.txt", "alpha");
    let config = config(&dir, "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let folder = logs.join("W3SVC1");
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt?n=1").status, 200);
    wait_for_lines(&logs, 1);
    let aside = logs.join("kept");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(&folder, &aside).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &folder).unwrap();
    assert_eq!(conn.get("/a.txt?n=2").status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    assert_eq!(conn.get("/a.txt?n=3").status, 200);
    let text = wait_for_lines(&logs, 3);
    assert!(
        text.contains(" /a.txt n=2 ") && text.contains(" /a.txt n=3 "),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// A request whose connection a module reset sent nothing: 0 bytes and
/// ERROR_CONNECTION_ABORTED, whatever page it would have had.
#[test]
fn a_reset_connection_is_logged_as_aborted() {
    let dir = TempDir::new("httplog-reset");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write("www/a.txt", "alpha");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "IpRestriction"
[[modules]]
name = "CustomError"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

[http_logging]
fields = ["cs-uri-stem", "sc-status", "sc-substatus", "sc-win32-status", "sc-bytes"]

[[sites]]
name = "Reset"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/gone"
ip_security = {{ deny_action = "AbortRequest", rules = [{{ address = "127.0.0.1" }}] }}
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /gone/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(conn.is_closed_or_reset());
    let text = wait_for_lines(&dir.path().join("logs"), 1);
    assert_eq!(lines(&text), ["/gone/a.txt 403 503 1236 0"], "{text}");
}

#[test]
fn unknown_fields_are_configuration_errors() {
    let dir = TempDir::new("httplog-config");
    let bad_field = config(&dir, "fields = [\"date\", \"sc-bytez\"]");
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", bad_field.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("riis.toml"), "{err}");
    assert!(err.contains("http_logging.fields"), "{err}");
    assert!(err.contains("`sc-bytez` is not a log field"), "{err}");

    let bad_period = config(&dir, "period = \"yearly\"");
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", bad_period.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_logging.period"), "{err}");

    // A log folder that cannot be made is refused before the first
    // request would lose its line: a file where it would go.
    dir.write("a-file", "x");
    let blocked = config(&dir, "directory = \"a-file/logs\"");
    let out = common::riis_command("check-config", &blocked);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_logging.directory"), "{err}");
    assert!(err.contains("a-file is not a folder"), "{err}");
    // One this user cannot write in (as root, checked as `nobody`: root
    // writes anywhere).
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    for (path, mode) in [(dir.path(), 0o755), (locked.as_path(), 0o555)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let unwritable = config(&dir, "directory = \"locked/logs\"");
    std::fs::set_permissions(&unwritable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = common::riis_unprivileged(&dir)
        .args(["check-config", "--config", unwritable.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be written to by this user"), "{err}");
}

/// `riis status` shows what the operators' modules hold: log folders and
/// lines waiting, cache entries, clients counted, programs running.
#[test]
fn riis_status_reports_the_modules_state() {
    let dir = TempDir::new("httplog-status");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let page = dir.write("www/a.txt", "alpha");
    // Settled (OutputCache does not keep a file changed in the last two
    // seconds).
    std::fs::File::options()
        .write(true)
        .open(&page)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(10))
        .unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "HttpLogging"
[[modules]]
name = "IpRestriction"
[[modules]]
name = "OutputCache"
[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

[output_cache]
policy = "CacheUntilChange"

[dynamic_ip_security]
deny_by_request_rate = {{ enabled = true, max_requests = 100, request_interval_ms = 60000 }}

[[sites]]
name = "Status"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        assert_eq!(conn.get("/a.txt").status, 200);
    }
    let report = common::riis_status(&config);
    for line in [
        "http_logging_folders: 1",
        "http_logging_lines_dropped: 0",
        "output_cache_entries: 1",
        "ip_restriction_clients: 1",
        "cgi_programs_running: 0",
    ] {
        assert!(report.contains(line), "{line} in:\n{report}");
    }
    assert!(report.contains("http_logging_bytes_waiting: "), "{report}");
    drop(server);
}

/// A compressed response goes out a piece at a time; a client that leaves
/// in the middle still gets its line (the modules still get their final
/// send), with the bytes handed over until then.
#[test]
fn a_client_gone_in_the_middle_of_a_compressed_response_is_logged() {
    let dir = TempDir::new("httplog-gone");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    // 3 MB of text that compresses poorly enough to stall the client.
    let mut text = String::new();
    let mut n: u64 = 1;
    while text.len() < 3_000_000 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!("{:x}\n", n));
    }
    dir.write("www/big.txt", &text);
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "DynamicCompression"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

[http_logging]
fields = ["cs-uri-stem", "sc-status", "sc-bytes"]

[[sites]]
name = "Gone"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let mut first = [0u8; 1024];
    assert!(conn.read_raw(&mut first).unwrap() > 0);
    drop(conn);
    let logged = wait_for_lines(&dir.path().join("logs"), 1);
    let line = lines(&logged)[0].to_owned();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..2], ["/big.txt", "200"], "{line}");
    let bytes: u64 = fields[2].parse().unwrap();
    assert!(bytes > 0 && bytes < text.len() as u64, "{line}");
}

/// A line is written when the connection is done with the response, as
/// IIS logs once HTTP.sys has sent it: a large download the client leaves
/// halfway is logged with the bytes that went (not the file's size),
/// `sc-win32-status` 64 (ERROR_NETNAME_DELETED) and a `time-taken` that
/// runs until it left; a whole one with every byte and 0.
#[test]
fn a_download_is_logged_when_it_ends_with_what_went() {
    const SIZE: usize = 32 * 1024 * 1024;
    let dir = TempDir::new("httplog-delivery");
    dir.write("www/big.bin", vec![b'x'; SIZE]);
    let config = config(
        &dir,
        "fields = [\"cs-uri-stem\", \"sc-status\", \"sc-win32-status\", \"sc-bytes\", \"time-taken\"]\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");

    // Read a little, hold the rest back for a second, and leave.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 4096];
    assert!(conn.read_raw(&mut first).unwrap() > 0);
    std::thread::sleep(Duration::from_millis(1000));
    drop(conn);
    let logged = wait_for_lines(&logs, 1);
    let line = lines(&logged)[0].to_owned();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..3], ["/big.bin", "200", "64"], "{line}");
    let bytes: u64 = fields[3].parse().unwrap();
    assert!(bytes > 0 && bytes < SIZE as u64, "{line}");
    let taken: u64 = fields[4].parse().unwrap();
    assert!(taken >= 1000, "{line}");

    // The whole file.
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/big.bin");
    assert_eq!((resp.status, resp.body.len()), (200, SIZE));
    let logged = wait_for_lines(&logs, 2);
    let line = lines(&logged)[1].to_owned();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..3], ["/big.bin", "200", "0"], "{line}");
    let bytes: u64 = fields[3].parse().unwrap();
    assert!(bytes > SIZE as u64 && bytes < SIZE as u64 + 400, "{line}");
}

/// A proxied answer that streams (past `response_buffer_limit`) with its
/// server's `Content-Length` is logged whole: the connection stops asking
/// for a body of declared length once its last byte went.
#[test]
fn a_streamed_answer_of_declared_length_is_logged_whole() {
    const SIZE: usize = 300_000;
    let backend_dir = TempDir::new("httplog-backend");
    backend_dir.write("www/big.txt", vec![b'b'; SIZE]);
    let backend = RunningBinary::start(&[
        "--config",
        config(&backend_dir, "enabled = false").to_str().unwrap(),
    ]);
    let dir = TempDir::new("httplog-proxied");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let front = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "ReverseProxy"

[[handlers]]
name = "Proxy"
path = "*"
modules = ["ReverseProxy"]

[proxy]
servers = ["http://{backend}"]
response_buffer_limit = 65536

[http_logging]
fields = ["cs-uri-stem", "sc-status", "sc-win32-status", "sc-bytes"]

[[sites]]
name = "Front"
root = 'www'
bindings = ["127.0.0.1:0"]
"#,
            backend = backend.addr
        ),
    );
    let server = RunningBinary::start(&["--config", front.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/big.txt");
    assert_eq!((resp.status, resp.body.len()), (200, SIZE));
    assert_eq!(resp.header("content-length"), Some("300000"));
    let logged = wait_for_lines(&dir.path().join("logs"), 1);
    let line = lines(&logged)[0].to_owned();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..3], ["/big.txt", "200", "0"], "{line}");
    let bytes: u64 = fields[3].parse().unwrap();
    assert!(bytes > SIZE as u64, "{line}");
}

/// `local_time_rollover`: files are named by the server's local time (here
/// `TZ` 14 hours ahead of UTC, as in Kiribati), the lines' times stay UTC.
#[test]
fn files_roll_over_by_local_time_when_asked() {
    const TZ: &str = "<+14>-14";
    let dir = TempDir::new("httplog-local");
    dir.write("www/a.txt", "alpha");
    let config = config(
        &dir,
        "period = \"hourly\"\nlocal_time_rollover = true\nfields = [\"date\", \"time\", \"cs-uri-stem\"]\n",
    );
    let hour = |tz: &str, format: &str| {
        let out = std::process::Command::new("date")
            .env("TZ", tz)
            .arg(format)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_riis"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("TZ", TZ);
    let server = RunningBinary::from_command(command).unwrap();
    let before = (hour(TZ, "+u_ex%y%m%d%H.log"), hour("UTC", "+%Y-%m-%d %H"));
    assert_eq!(common::get(server.addr, "/a.txt").status, 200);
    let logs = dir.path().join("logs");
    let logged = wait_for_lines(&logs, 1);
    let after = (hour(TZ, "+u_ex%y%m%d%H.log"), hour("UTC", "+%Y-%m-%d %H"));
    let names: Vec<String> = std::fs::read_dir(logs.join("W3SVC1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0] == before.0 || names[0] == after.0,
        "{names:?} {before:?} {after:?}"
    );
    let line = lines(&logged)[0];
    assert!(
        line.starts_with(&before.1) || line.starts_with(&after.1),
        "{line} {before:?} {after:?}"
    );
}

/// `period = "size"`: the log goes to `u_extend1.log`, `u_extend2.log`, …,
/// each closed before a batch of lines would take it past `max_size`.
#[test]
fn a_log_by_size_rolls_over_to_numbered_files() {
    let dir = TempDir::new("httplog-size");
    dir.write("www/a.txt", "alpha");
    let config = config(
        &dir,
        "period = \"size\"\nmax_size = 1048576\nfields = [\"cs-uri-stem\", \"cs-uri-query\", \"sc-status\"]",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let mut sent = 0;
    // Lines of about 3 KB, 900 KB a round: each round's batches take a
    // file past the smallest max_size (1 MiB). A connection a round, well
    // under the requests a connection may carry.
    for _round in 0..4 {
        let mut conn = Connection::open(server.addr);
        for _ in 0..300 {
            let path = format!("/a.txt?{}", "x".repeat(3000));
            assert_eq!(conn.get(&path).status, 200);
            sent += 1;
        }
        wait_for_lines(&logs, sent);
    }
    let folder = logs.join("W3SVC1");
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("u_extend") && n.ends_with(".log")),
        "{names:?}"
    );
    assert!(names.contains(&"u_extend1.log".to_owned()), "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(folder.join(name)).unwrap();
        assert!(text.starts_with("#Software: riis/"), "{name}: {text}");
        assert!(text.len() <= 1048576, "{name}: {} bytes", text.len());
    }
    server.terminate();
}

/// A failed precondition is not an error of the server's: its line says
/// `412 0 0`, as IIS's (it carried E_FAIL's 2147500037).
#[test]
fn a_failed_precondition_logs_win32_status_zero() {
    let dir = TempDir::new("httplog");
    dir.write("www/a.txt", "alpha");
    let config = config(&dir, "");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Match: \"other\"\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 412);
    let text = wait_for_lines(&dir.path().join("logs"), 1);
    let line = lines(&text)[0];
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[11..14], ["412", "0", "0"], "{line}");
}

/// The log names the URL the client asked for, as IIS logs it, when a rule
/// rewrote it, unless the rule has `log_rewritten_url`; `var(URL)` and
/// `var(QUERY_STRING)` name the rewritten one.
/// The same run checks what rules see of the original URL: IIS's
/// `UNENCODED_URL` and `HTTP_X_ORIGINAL_URL` (never the client's own
/// header), a Wildcard `?`, and the query a chain of rewrites carries.
#[test]
fn rewritten_requests_are_logged_under_the_clients_url() {
    let dir = TempDir::new("httplog-rewrite");
    dir.write("www/new/a b.txt", "b");
    dir.write("www/new/foo.txt", "foo");
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "UrlRewrite"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
modules = ["StaticFile"]

[http_logging]
fields = ["cs-uri-stem", "cs-uri-query", "sc-status", "var(URL)", "var(QUERY_STRING)",
          "var(UNENCODED_URL)", "var(HTTP_X_ORIGINAL_URL)"]

[[rewrite.rules]]
name = "old"
pattern = "^old/(.*)"
action = {{ type = "Rewrite", url = "new/{{R:1}}?from=rule" }}

[[rewrite.rules]]
name = "chain-1"
pattern = "^chain/(.*)"
action = {{ type = "Rewrite", url = "step/{{R:1}}?added=1" }}

[[rewrite.rules]]
name = "chain-2"
pattern = "^step/(.*)"
action = {{ type = "Rewrite", url = "new/{{R:1}}?final=1" }}

[[rewrite.rules]]
name = "logged"
pattern = "^logged/(.*)"
action = {{ type = "Rewrite", url = "new/{{R:1}}?via=logged", log_rewritten_url = true }}

[[rewrite.rules]]
name = "wild"
pattern = "w/*_in.???"
pattern_syntax = "Wildcard"
action = {{ type = "Rewrite", url = "new/{{R:1}}.txt" }}

[[sites]]
name = "Logged"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display(),
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/old/a%20b.txt?x=1").text(), "b");
    assert_eq!(conn.get("/chain/foo.txt?x=1").text(), "foo");
    assert_eq!(conn.get("/w/foo_in.asp").text(), "foo");
    assert_eq!(conn.get("/w/foo_in.aspx").status, 404);
    conn.send_raw(b"GET /new/foo.txt HTTP/1.1\r\nHost: t\r\nX-Original-URL: /admin\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 200);
    assert_eq!(conn.get("/logged/foo.txt?x=1").text(), "foo");
    let text = wait_for_lines(&logs, 6);
    assert_eq!(
        lines(&text),
        [
            "/old/a+b.txt x=1 200 /new/a+b.txt from=rule&x=1 /old/a%20b.txt?x=1 /old/a%20b.txt?x=1",
            // The second rewrite appends the query the first one left.
            "/chain/foo.txt x=1 200 /new/foo.txt final=1&added=1&x=1 /chain/foo.txt?x=1 /chain/foo.txt?x=1",
            "/w/foo_in.asp - 200 /new/foo.txt - /w/foo_in.asp /w/foo_in.asp",
            "/w/foo_in.aspx - 404 /w/foo_in.aspx - /w/foo_in.aspx -",
            "/new/foo.txt - 200 /new/foo.txt - /new/foo.txt -",
            // `log_rewritten_url`: IIS's `logRewrittenUrl`.
            "/new/foo.txt via=logged&x=1 200 /new/foo.txt via=logged&x=1 /logged/foo.txt?x=1 /logged/foo.txt?x=1",
        ],
        "{text}"
    );
}

/// A client that leaves in the middle of its request body is logged with
/// the gateway's 400 and the code of a connection that went away (64), not
/// as a failure of the backend (E_FAIL).
#[test]
fn a_client_that_leaves_mid_upload_is_logged_as_gone() {
    let dir = TempDir::new("httplog-upload");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "HttpLogging"
[[modules]]
name = "ReverseProxy"

[[handlers]]
name = "Proxy"
path = "*"
modules = ["ReverseProxy"]

[proxy]
servers = ["http://{backend}"]

[http_logging]
fields = ["cs-method", "cs-uri-stem", "sc-status", "sc-win32-status"]

[[sites]]
name = "Logged"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            backend = common::refusing_address(),
            root = root.display(),
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let logs = dir.path().join("logs");
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nonly a part")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    let text = wait_for_lines(&logs, 1);
    assert_eq!(lines(&text), ["POST /upload 400 64"], "{text}");
}

/// Lines the disk did not take yet outlive a reload: the next
/// configuration writes them once it can, before its own, under the
/// header block the file already has (a full disk during `logrotate`'s
/// reload lost them, unreported).
#[test]
fn lines_waiting_for_the_disk_outlive_a_reload() {
    let dir = TempDir::new("http-logging-reload-waiting");
    let config = config(&dir, "directory = \"logs\"");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[server]\npid_file = \"riis.pid\"\n{text}"),
    )
    .unwrap();
    dir.write("www/a.txt", "a");
    // Today's file is a folder: every write fails until it is removed.
    let today = Command::new("date")
        .args(["-u", "+%y%m%d"])
        .output()
        .unwrap();
    let today = String::from_utf8(today.stdout).unwrap();
    let blocked = dir
        .path()
        .join(format!("logs/W3SVC1/u_ex{}.log", today.trim()));
    std::fs::create_dir_all(&blocked).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for n in 1..=3 {
        assert_eq!(conn.get(&format!("/a.txt?before={n}")).status, 200);
    }
    drop(conn);
    // The writer tried (once a second) and failed.
    std::thread::sleep(Duration::from_millis(1500));
    let out = common::riis_reload(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_dir(&blocked).unwrap();
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt?after=1").status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = dir.path().join("logs");
    loop {
        let text = log_text(&logs);
        if text.contains("after=1") || Instant::now() > deadline {
            let lines = lines(&text);
            let order: Vec<&str> = lines
                .iter()
                .filter_map(|l| {
                    ["before=1", "before=2", "before=3", "after=1"]
                        .into_iter()
                        .find(|q| l.contains(q))
                })
                .collect();
            assert_eq!(
                order,
                ["before=1", "before=2", "before=3", "after=1"],
                "{text}"
            );
            assert_eq!(lines.len(), 4, "{text}");
            assert_eq!(text.matches("#Software").count(), 1, "{text}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Under a file size limit (`ulimit -f`, systemd's `LimitFSIZE=`), the
/// access log reaching it does not end the server (SIGXFSZ's default
/// action): the write fails, is reported, and the server goes on serving.
#[test]
fn a_log_reaching_the_file_size_limit_does_not_stop_the_server() {
    let dir = TempDir::new("http-logging-fsize");
    let config = config(
        &dir,
        "directory = \"logs\"\nfields = [\"cs-uri-stem\", \"cs-uri-query\"]",
    );
    dir.write("www/a.txt", "a");
    let mut server =
        RunningBinary::start_with_ulimit(&["--config", config.to_str().unwrap()], "-f 8");
    let mut conn = Connection::open(server.addr);
    let padding = "x".repeat(200);
    // About 2 KiB a second of lines, for long enough to pass 8 KiB.
    for n in 0..8 {
        for i in 0..10 {
            assert_eq!(conn.get(&format!("/a.txt?n={n}-{i}&{padding}")).status, 200);
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server ended"
    );
    assert_eq!(conn.get("/a.txt?after").status, 200);
    let logs = dir.path().join("logs");
    let text = log_text(&logs);
    assert!(text.len() <= 8 * 1024, "{} bytes", text.len());
    assert!(lines(&text).len() > 10, "{text}");
}
