//! FastCgi with `php-fpm`, started by the test on a Unix socket of its own:
//! PHP sees the request (`$_SERVER`, `$_GET`, `$_POST`), sets status and
//! headers, streams with `flush()`, and fails the way PHP fails. Outside CI
//! a machine without `php-fpm` skips these tests; in CI (`CI=true`) that
//! is a failure (`.ci/run` installs it).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

/// The `php-fpm` program: `php-fpm` or a versioned `php-fpm8.2`, on the
/// `PATH` or in the `sbin` folders Debian puts it in.
fn php_fpm() -> Option<PathBuf> {
    common::find_versioned_program("php-fpm", &["/usr/sbin", "/usr/local/sbin", "/sbin"])
}

/// `php-fpm` in the foreground, killed on drop.
struct PhpFpm {
    child: Child,
    socket: PathBuf,
}

impl PhpFpm {
    fn start(dir: &TempDir) -> Option<Self> {
        let Some(program) = php_fpm() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "php-fpm is missing (CI installs it: apt-get install php-fpm)"
            );
            eprintln!("skipped: php-fpm is not installed");
            return None;
        };
        let socket = dir.path().join("php.sock");
        let config = dir.write(
            "php-fpm.conf",
            format!(
                "[global]\nerror_log = {log}\ndaemonize = no\n\n[www]\nlisten = {socket}\n\
                 pm = static\npm.max_children = 2\ncatch_workers_output = yes\n\
                 php_admin_value[output_buffering] = 0\n",
                log = dir.path().join("php-fpm.log").display(),
                socket = socket.display()
            ),
        );
        let mut command = Command::new(&program);
        command
            .arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(&config)
            .arg("--prefix")
            .arg(dir.path())
            // Its own log file has what it says; its workers must not hold
            // the test's output open.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so that the workers go with the master.
            .process_group(0);
        // As root, php-fpm wants to be told that running as root is meant.
        if nix_is_root() {
            command.arg("--allow-to-run-as-root");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let fpm = Self { child, socket };
        let start = Instant::now();
        while !fpm.socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "php-fpm did not listen: {}",
                std::fs::read_to_string(dir.path().join("php-fpm.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(fpm)
    }
}

impl Drop for PhpFpm {
    /// SIGTERM to the whole group (the master ends its workers), then
    /// SIGKILL to whatever is left of it.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn nix_is_root() -> bool {
    // The effective uid, from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn site(dir: &TempDir, socket: &Path) -> PathBuf {
    let root = dir.path().join("www");
    dir.write(
        "www/info.php",
        r#"<?php
header('X-Powered-By: riis-test');
echo "method=", $_SERVER['REQUEST_METHOD'], "\n";
echo "uri=", $_SERVER['REQUEST_URI'], "\n";
echo "script=", $_SERVER['SCRIPT_NAME'], "\n";
echo "file=", basename($_SERVER['SCRIPT_FILENAME']), "\n";
echo "https=", $_SERVER['HTTPS'] ?? 'unset', "\n";
echo "agent=", $_SERVER['HTTP_USER_AGENT'] ?? 'unset', "\n";
echo "get=", json_encode($_GET), "\n";
echo "post=", json_encode($_POST), "\n";
echo "cookie=", json_encode($_COOKIE), "\n";
echo "raw=", file_get_contents('php://input'), "\n";
"#,
    );
    dir.write(
        "www/created.php",
        "<?php http_response_code(201); header('Location: /things/7'); \
         setcookie('made', 'yes'); echo 'made';",
    );
    dir.write(
        "www/fatal.php",
        "<?php ini_set('display_errors', '0'); undefined_function();",
    );
    dir.write(
        "www/live/stream.php",
        // The second part waits until the test has seen the first.
        "<?php echo \"part 0\\n\"; flush();\n\
         $go = __DIR__ . '/../go'; $until = microtime(true) + 10;\n\
         while (!file_exists($go) && microtime(true) < $until) { usleep(10000); }\n\
         echo \"part 1\\n\"; flush(); echo \"part 2\\n\";",
    );
    dir.write(
        "www/index.php",
        "<?php echo 'the default document at ', $_SERVER['REQUEST_URI'];",
    );
    dir.write(
        "www/router.php",
        "<?php echo $_SERVER['REQUEST_URI'], ' ', $_SERVER['SCRIPT_NAME'], ' ', json_encode($_GET);",
    );
    dir.write(
        "www/body.php",
        "<?php $in = file_get_contents('php://input'); echo strlen($in), ' ', md5($in);",
    );
    // A download the application allows, which the server then sends.
    dir.write(
        "www/download.php",
        "<?php if (($_GET['key'] ?? '') !== 'ok') { http_response_code(403); exit('no'); }\n\
         header('Content-Type: application/pdf');\n\
         header('Content-Disposition: attachment; filename=\"doc.pdf\"');\n\
         header('X-Accel-Redirect: /private/' . $_GET['file']);",
    );
    dir.write("www/private/doc", "%PDF-1.4 not really");
    dir.write("www/private/notes.txt", "notes");
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "CustomError"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "FastCgi"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "PHP"
path = "*.php"
resource_type = "File"
modules = ["FastCgi"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile", "DefaultDocument"]

[default_document]
files = ["index.php"]

[fastcgi]
address = "unix:{socket}"
kept_connections = 1

[[sites]]
name = "PHP"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/live"
fastcgi = {{ response_buffer_limit = 0 }}

[[sites.locations]]
path = "/private"
[[sites.locations.handlers]]
name = "Files"
path = "*"
modules = ["StaticFile"]

# A front controller: what is not a file goes to router.php.
[[sites.locations]]
path = "/app"
[[sites.locations.rewrite.rules]]
name = "front controller"
pattern = "^app/"
conditions = [{{ input = "{{REQUEST_FILENAME}}", match_type = "IsFile", negate = true }}]
action = {{ type = "Rewrite", url = "/router.php" }}
"#,
            socket = socket.display(),
            root = root.display()
        ),
    )
}

/// A PHP script decides who may download a file and names it in
/// `X-Accel-Redirect`; riis sends the file with the script's
/// `Content-Type` and `Content-Disposition`, as nginx does (PHP's default
/// `text/html` included, as with nginx).
#[test]
fn php_lets_riis_send_the_file_it_chose() {
    let dir = TempDir::new("php-accel");
    let Some(fpm) = PhpFpm::start(&dir) else {
        return;
    };
    let config = site(&dir, &fpm.socket);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    let refused = conn.get("/download.php?file=doc");
    assert_eq!((refused.status, refused.text().as_str()), (403, "no"));
    let doc = conn.get("/download.php?key=ok&file=doc");
    assert_eq!(doc.status, 200, "{}", doc.text());
    assert_eq!(doc.text(), "%PDF-1.4 not really");
    assert_eq!(doc.header("content-type"), Some("application/pdf"));
    assert_eq!(
        doc.header("content-disposition"),
        Some("attachment; filename=\"doc.pdf\"")
    );
    assert_eq!(doc.header("content-length"), Some("19"));
    // Resumable, as a file riis sends is.
    conn.send_raw(
        b"GET /download.php?key=ok&file=doc HTTP/1.1\r\nHost: t\r\nRange: bytes=-6\r\n\r\n",
    );
    let tail = conn.read_response(false);
    assert_eq!((tail.status, tail.text().as_str()), (206, "really"));
    let notes = conn.get("/download.php?key=ok&file=notes.txt");
    assert_eq!(notes.text(), "notes");
    assert_eq!(notes.header("content-type"), Some("application/pdf"));
}

#[test]
fn php_runs_behind_riis() {
    let dir = TempDir::new("php");
    let Some(fpm) = PhpFpm::start(&dir) else {
        return;
    };
    let config = site(&dir, &fpm.socket);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    conn.send_raw(
        b"POST /info.php?x=1&y=two HTTP/1.1\r\nHost: php.test\r\nUser-Agent: tester\r\n\
          Cookie: a=1\r\nCookie: b=2\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nname=riis&n=3",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-powered-by"), Some("riis-test"));
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let text = resp.text();
    for line in [
        "method=POST",
        "uri=/info.php?x=1&y=two",
        "script=/info.php",
        "file=info.php",
        "https=unset",
        "agent=tester",
        r#"get={"x":"1","y":"two"}"#,
        r#"post={"name":"riis","n":"3"}"#,
        r#"cookie={"a":"1","b":"2"}"#,
        "raw=name=riis&n=3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }

    // A body larger than one record, and than one write.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    conn.send_raw(
        format!(
            "POST /body.php HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send_raw(&body);
    let resp = conn.read_response(false);
    let md5 = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&body)?;
            child.wait_with_output()
        })
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout);
    assert_eq!(
        resp.text(),
        format!("300000 {}", md5.split_whitespace().next().unwrap())
    );

    // Status, Location and cookies set by PHP.
    let created = conn.get("/created.php");
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/things/7"));
    assert!(created
        .header("set-cookie")
        .unwrap()
        .starts_with("made=yes"));
    assert_eq!(created.text(), "made");

    // A fatal error is PHP's 500, passed through.
    let fatal = conn.get("/fatal.php");
    assert_eq!(fatal.status, 500);

    // A script that is not there is riis's 404: php-fpm is not asked.
    assert_eq!(conn.get("/missing.php").status, 404);

    // UrlRewrite's front controller: PHP sees the URL the client asked for.
    let routed = conn.get("/app/posts/7?sort=new");
    assert_eq!(routed.status, 200, "{}", routed.text());
    assert_eq!(
        routed.text(),
        r#"/app/posts/7?sort=new /router.php {"sort":"new"}"#
    );

    // DefaultDocument's index.php runs through the PHP handler.
    let index = conn.get("/");
    assert_eq!(index.status, 200);
    // It sees the URL the client asked for, as under nginx's `index`.
    assert_eq!(index.text(), "the default document at /");

    // With response_buffer_limit = 0, each flush() goes out as it comes.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /live/stream.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("part 0") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // The script holds the rest back until the first part was seen.
    assert!(!String::from_utf8_lossy(&got).contains("part 1"));
    dir.write("www/go", "");
    let _ = stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked"));
    assert!(
        text.contains("part 1\n") && text.contains("part 2\n"),
        "{text}"
    );
}
