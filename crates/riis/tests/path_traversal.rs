//! Path traversal over raw sockets: hundreds of encoded `..` payloads against
//! a site whose root is a subfolder, with marker files outside the root
//! (next to it, in its parent, and in a sibling folder whose name extends the
//! root's). Every answer must be 400 or 404, or a 301 whose target stays in
//! the root, and no answer may carry a marker.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{RunningBinary, TempDir};

const NEXT_TO_ROOT: &str = "MARKER-NEXT-TO-ROOT-7f3a";
const IN_PARENT: &str = "MARKER-IN-PARENT-91c2";
const IN_SIBLING: &str = "MARKER-IN-SIBLING-44d0";

/// Spellings of `..`.
const DOTDOTS: &[&str] = &[
    "..",
    ".%2e",
    "%2e.",
    "%2e%2e",
    "%2E%2E",
    "%2e%2E",
    "%252e%252e",
    "%c0%ae%c0%ae",
    "%e0%80%ae%e0%80%ae",
    "%c0%2e%c0%2e",
    "..%00",
    "%2e%2e%00",
    "...",
    "....",
    "..;",
    "..%3b",
    "%u002e%u002e",
    "..%20",
];

/// Spellings of `/` between the steps.
const SEPARATORS: &[&str] = &[
    "/", "%2f", "%2F", "%5c", "%5C", "\\", "%252f", "//", "/./", ";/", "%c0%af",
];

/// The files each depth aims at: at depth 1 the marker next to the root, at
/// depth 2 the one in the parent; deeper, both, plus system files.
fn targets(depth: usize) -> &'static [&'static str] {
    match depth {
        1 => &["secret.txt", "www-evil/secret.txt"],
        2 => &["secret.txt", "site/secret.txt"],
        _ => &["etc/passwd", "secret.txt"],
    }
}

fn payloads() -> Vec<String> {
    let mut out = Vec::new();
    for (i, dots) in DOTDOTS.iter().enumerate() {
        for (j, sep) in SEPARATORS.iter().enumerate() {
            for depth in 1..=6 {
                // Not every combination at every depth: enough to cover each
                // spelling at each depth and each separator with each
                // spelling.
                if (i + j + depth) % 3 != 0 && depth > 2 {
                    continue;
                }
                for target in targets(depth) {
                    let step = format!("{dots}{sep}");
                    let target = target.replace('/', sep);
                    out.push(format!("/{}{target}", step.repeat(depth)));
                    // The same from inside an existing folder.
                    if depth <= 2 {
                        out.push(format!("/sub/{}{}", step.repeat(depth + 1), target));
                    }
                }
            }
        }
    }
    // Hand-written ones.
    for p in [
        "/../secret.txt",
        "/../../secret.txt",
        "/sub/../../secret.txt",
        "/a.txt/../../secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/%2e%2e%5csecret.txt",
        "/%252e%252e%252fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%e0%80%ae%e0%80%ae/secret.txt",
        "/..%c0%afsecret.txt",
        "/..%00/secret.txt",
        "/secret.txt%00.html",
        "/a.txt%00",
        "/a.txt%00/../../secret.txt",
        "/../secret.txt%00.txt",
        "/../secret.txt.",
        "/../secret.txt...",
        "/..../secret.txt",
        "/.../.../secret.txt",
        "/..;/secret.txt",
        "/;/../secret.txt",
        "/sub;/../../secret.txt",
        "/..;jsessionid=1/secret.txt",
        "//../secret.txt",
        "///..//..//secret.txt",
        "/.//..//secret.txt",
        "/%2f%2e%2e%2fsecret.txt",
        "/%2F..%2F..%2Fsecret.txt",
        "//etc/passwd",
        // A folder named with a doubled slash: its redirect must not be a
        // protocol-relative URL.
        "//sub",
        "///sub",
        "/%2fetc%2fpasswd",
        "/%2Fetc/passwd",
        "/etc/passwd",
        "/\\etc\\passwd",
        "/%5cetc%5cpasswd",
        "/..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../www-evil/secret.txt",
        "/..%2fwww-evil%2fsecret.txt",
        "/sub/%2e%2e",
        "/sub/..",
        "/sub/.",
        "/sub/%2e",
        "/..",
        "/.",
        "/%2e%2e",
        "/%2e",
        "/%2E%2e%2F",
        "/sub%2f..%2f..%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/.%2e/.%2e/secret.txt",
        "/.%2e/.%2e/.%2e/.%2e/.%2e/.%2e/etc/passwd",
        "/%%32%65%%32%65/secret.txt",
        "/%252E%252E/%252E%252E/secret.txt",
        "/..%252f..%252fsecret.txt",
        "/..%255c..%255csecret.txt",
        "/%ef%bc%8e%ef%bc%8e/secret.txt",
        "/%u2216..%u2216secret.txt",
    ] {
        out.push(p.to_owned());
    }
    out
}

/// One request on its own connection (the server may close after a 400),
/// read to the end. Returns the status and the whole raw response.
fn raw_request(addr: SocketAddr, target: &str) -> (Option<u16>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A reset after the answer is fine: what was read counts.
    let _ = stream.read_to_end(&mut raw);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = match parsed.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => parsed.code,
        _ => None,
    };
    (status, raw)
}

fn location(raw: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(raw).ok()?;
    parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("location"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
}

/// Whether a redirect target stays inside the site: a path of the site
/// (not `//host`), without `..` segments in any decoding.
fn stays_inside(location: &str) -> bool {
    if !location.starts_with('/') || location.starts_with("//") {
        return false;
    }
    let mut s = location.to_owned();
    for _ in 0..3 {
        let lower = s.to_ascii_lowercase();
        s = lower
            .replace("%2e", ".")
            .replace("%2f", "/")
            .replace("%5c", "/")
            .replace("%25", "%")
            .replace('\\', "/");
    }
    !s.split('/').any(|seg| seg == "..")
}

#[test]
fn encoded_traversal_payloads_never_leave_the_root() {
    let dir = TempDir::new("traversal");
    // dir/secret.txt                 (the root's grandparent)
    // dir/site/secret.txt            (next to the root)
    // dir/site/www-evil/secret.txt   (a sibling whose name extends the root's)
    // dir/site/www/                  (the root)
    dir.write("secret.txt", IN_PARENT);
    dir.write("site/secret.txt", NEXT_TO_ROOT);
    dir.write("site/www-evil/secret.txt", IN_SIBLING);
    dir.write("site/www/a.txt", "inside");
    dir.write("site/www/index.html", "<h1>home</h1>");
    dir.write("site/www/sub/b.txt", "inside too");
    let root = dir.path().join("site/www");
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"StaticFile\"\n[[modules]]\nname = \"DefaultDocument\"\n\
             [[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n\
             static_file = {{ default_mime_type = \"text/plain\" }}\n",
            root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    // The site works, so refusals below are not an accident.
    let (status, raw) = raw_request(server.addr, "/a.txt");
    assert_eq!(status, Some(200));
    assert!(raw.ends_with(b"inside"));

    let payloads = payloads();
    assert!(payloads.len() >= 200, "only {} payloads", payloads.len());
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for p in &payloads {
        let (status, raw) = raw_request(server.addr, p);
        let text = String::from_utf8_lossy(&raw);
        for marker in [NEXT_TO_ROOT, IN_PARENT, IN_SIBLING, "root:x:0:0"] {
            if text.contains(marker) {
                failures.push(format!("{p}: leaked {marker}"));
            }
        }
        match status {
            Some(400) | Some(404) => {}
            // A dot segment that resolves to the root itself (`/.`,
            // `/%2e`) gets the root's own default document.
            Some(200) if text.ends_with("<h1>home</h1>") => {}
            Some(301) => match location(&raw) {
                Some(l) if stays_inside(&l) => {}
                l => failures.push(format!("{p}: 301 to {l:?}")),
            },
            other => failures.push(format!("{p}: status {other:?}")),
        }
        *seen.entry(status).or_insert(0usize) += 1;
    }
    eprintln!("{} payloads, statuses {seen:?}", payloads.len());
    assert!(
        failures.is_empty(),
        "{} of {} payloads failed (statuses {seen:?}):\n{}",
        failures.len(),
        payloads.len(),
        failures.join("\n")
    );
}

/// A control character in the decoded path is refused with 400, as
/// http.sys refuses it: `/admin%0a` would otherwise fall outside a
/// location `/admin`, slip past a rule `^admin/.*$` (the `regex` crate's
/// `$` does not match before a final newline), and reach an application
/// that trims it.
#[test]
fn control_characters_in_the_path_are_refused() {
    let dir = TempDir::new("traversal-controls");
    dir.write("www/admin/users", "users");
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"StaticFile\"\n\
             [[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n\
             static_file = {{ default_mime_type = \"text/plain\" }}\n",
            root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(raw_request(server.addr, "/admin/users").0, Some(200));
    for target in [
        "/admin%0a/users",
        "/admin/users%0a",
        "/admin/users%0d",
        "/admin/users%0D%0A",
        "/admin%09/users",
        "/admin/users%7f",
        "/admin/users%1b",
        "/admin/users%00",
    ] {
        assert_eq!(raw_request(server.addr, target).0, Some(400), "{target}");
    }
    // In the query it is the application's to read.
    assert_eq!(raw_request(server.addr, "/admin/users?a=%0a").0, Some(200));
}
