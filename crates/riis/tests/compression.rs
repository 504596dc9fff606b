//! StaticCompression and DynamicCompression over real sockets: negotiation
//! with q-values, Vary, weak ETags, the size and type thresholds, cached
//! copies that follow file changes, and compression of a streamed response.

mod common;

use std::io::Read;

use common::{write_config, Connection, Response, RunningBinary, TempDir};

const MODULES: &str = r#"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "StaticCompression"
[[modules]]
name = "DynamicCompression"
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]
"#;

fn text(n: usize) -> String {
    (0..n)
        .map(|i| format!("line {i} of a compressible text\n"))
        .collect()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unzstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(data).unwrap()
}

fn fetch(conn: &mut Connection, path: &str, accept: Option<&str>) -> Response {
    let accept = accept.map_or(String::new(), |a| format!("Accept-Encoding: {a}\r\n"));
    conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{accept}\r\n").as_bytes());
    conn.read_response(false)
}

/// Sends `request` until its response comes encoded: a copy is made on
/// StaticCompression's thread after the first request for it, and the
/// responses before that go as they are (these tests turn
/// DynamicCompression off so that they do).
fn until_encoded(conn: &mut Connection, request: &str, head: bool) -> Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        conn.send_raw(request.as_bytes());
        let resp = conn.read_response(head);
        if resp.header("content-encoding").is_some() {
            return resp;
        }
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("vary"), Some("Accept-Encoding"));
        assert!(
            std::time::Instant::now() < deadline,
            "no copy was made for {request:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends `METHOD path` with `Accept-Encoding: gzip` and `If-None-Match:
/// etag`; the response's head (a 304 has no body).
fn revalidate(conn: &mut Connection, method: &str, path: &str, etag: &str) -> Response {
    conn.send_raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n\r\n"
        )
        .as_bytes(),
    );
    conn.read_response(true)
}

/// GETs `path` until StaticCompression sends its copy.
fn fetch_copy(conn: &mut Connection, path: &str, accept: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {accept}\r\n\r\n");
    until_encoded(conn, &request, false)
}

/// Turns DynamicCompression off, so a response not encoded from a copy goes
/// as it is.
const STATIC_ONLY: &str = "[dynamic_compression]\nenabled = false\n";

struct Site {
    dir: TempDir,
    server: RunningBinary,
    big: String,
}

fn site(extra: &str) -> Site {
    let dir = TempDir::new("compress");
    let big = text(400);
    dir.write("www/big.txt", &big);
    dir.write("www/small.txt", "too small to bother");
    dir.write("www/image.png", vec![7u8; 10_000]);
    let cache = dir.path().join("cache");
    let body = format!(
        "{MODULES}\n[static_compression]\ndirectory = '{}'\n{extra}",
        cache.display()
    );
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    Site { dir, server, big }
}

#[test]
fn static_files_are_negotiated_by_q_value() {
    let s = site("");
    let mut conn = Connection::open(s.server.addr);
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some("identity"), None),
        (Some("gzip"), Some("gzip")),
        (Some("gzip, br"), Some("br")),
        (Some("br;q=0.1, gzip;q=0.9"), Some("gzip")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("*"), Some("br")),
        (Some("gzip;q=0, br;q=0"), None),
        (Some("compress, deflate"), None),
        (Some("zstd"), Some("zstd")),
        (Some("gzip, zstd"), Some("zstd")),
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("br;q=0.5, zstd;q=0.8, gzip;q=0.8"), Some("zstd")),
        (Some("zstd;q=0, gzip"), Some("gzip")),
    ];
    for (accept, expected) in cases {
        let resp = fetch(&mut conn, "/big.txt", *accept);
        assert_eq!(resp.status, 200, "{accept:?}");
        assert_eq!(resp.header("content-encoding"), *expected, "{accept:?}");
        assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{accept:?}");
        let body = match expected {
            Some("gzip") => gunzip(&resp.body),
            Some("br") => unbrotli(&resp.body),
            Some("zstd") => unzstd(&resp.body),
            _ => resp.body.clone(),
        };
        assert_eq!(String::from_utf8(body).unwrap(), s.big, "{accept:?}");
        let etag = resp.header("etag").unwrap();
        assert_eq!(
            etag.starts_with("W/"),
            expected.is_some(),
            "{accept:?}: {etag}"
        );
        // Ranges are of the unencoded file: an encoded copy offers none.
        assert_eq!(
            resp.header("accept-ranges").is_some(),
            expected.is_none(),
            "{accept:?}"
        );
        if expected.is_some() {
            assert!(
                resp.body.len() < s.big.len() / 2,
                "{accept:?} did not shrink"
            );
        }
    }
}

#[test]
fn small_files_and_other_types_are_not_compressed() {
    let s = site("");
    let mut conn = Connection::open(s.server.addr);
    let resp = fetch(&mut conn, "/small.txt", Some("gzip"));
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.text(), "too small to bother");
    let resp = fetch(&mut conn, "/image.png", Some("gzip"));
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.header("vary"), None);
    assert_eq!(resp.body.len(), 10_000);
    // Their 304s are their 200s' too, even to a client that sends the
    // weak form of their tag (no copy of theirs ever went out with it).
    for path in ["/small.txt", "/image.png"] {
        let strong = fetch(&mut conn, path, None)
            .header("etag")
            .unwrap()
            .to_owned();
        let revalidated = revalidate(&mut conn, "GET", path, &format!("W/{strong}"));
        assert_eq!(revalidated.status, 304, "{path}");
        assert_eq!(revalidated.header("etag"), Some(strong.as_str()), "{path}");
        assert_eq!(revalidated.header("vary"), None, "{path}");
    }
}

/// The first request for a file is sent it as it is, with `Vary`, and
/// queues its copy, made in the background; later ones get the copy, which
/// is then on disk.
#[test]
fn a_copy_is_made_in_the_background_after_the_first_request() {
    let s = site(STATIC_ONLY);
    let mut conn = Connection::open(s.server.addr);
    let first = fetch(&mut conn, "/big.txt", Some("zstd"));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-encoding"), None);
    assert_eq!(first.header("vary"), Some("Accept-Encoding"));
    assert_eq!(first.text(), s.big);
    let later = fetch_copy(&mut conn, "/big.txt", "zstd");
    assert_eq!(later.header("content-encoding"), Some("zstd"));
    assert!(later.header("etag").unwrap().starts_with("W/\""));
    assert_eq!(unzstd(&later.body), s.big.as_bytes());
    let (names, _) = copy_directory(&s.dir.path().join("cache"));
    assert!(names.iter().any(|n| n.ends_with(".zst")), "{names:?}");
    // Served from the copy again, byte for byte.
    let again = fetch(&mut conn, "/big.txt", Some("zstd"));
    assert_eq!(again.body, later.body);
}

/// A HEAD gets the headers its GET would: the coding, the copy's length,
/// the weak ETag and `Vary`; before a GET made the copy, the file's.
#[test]
fn a_head_gets_what_its_get_would() {
    let s = site(STATIC_ONLY);
    let mut conn = Connection::open(s.server.addr);
    let get = fetch_copy(&mut conn, "/big.txt", "gzip");
    conn.send_raw(b"HEAD /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
    // A HEAD before any GET makes no copy: it has no body to make one from,
    // and the file's path, opened again on the compression thread, could
    // lead elsewhere by then (a folder swapped for a link where links are
    // not followed). It gets the file as it is; the next GET queues the
    // copy.
    let head_br = b"HEAD /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\n\r\n";
    conn.send_raw(head_br);
    assert_eq!(conn.read_response(true).header("content-encoding"), None);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (names, _) = copy_directory(&s.dir.path().join("cache"));
    assert!(!names.iter().any(|n| n.ends_with(".br")), "{names:?}");
    conn.send_raw(head_br);
    assert_eq!(conn.read_response(true).header("content-encoding"), None);
    let get = fetch_copy(&mut conn, "/big.txt", "br");
    assert_eq!(get.header("content-encoding"), Some("br"));
    conn.send_raw(head_br);
    let head = conn.read_response(true);
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

/// Revalidating a compressed copy (with the weak ETag it came with, or by
/// date) gets a 304 that names the same variant: the weak ETag, `Vary`, and
/// on HEAD the copy's length.
#[test]
fn a_304_for_a_compressed_copy_keeps_its_etag_and_vary() {
    let s = site(STATIC_ONLY);
    let mut conn = Connection::open(s.server.addr);
    let first = fetch_copy(&mut conn, "/big.txt", "gzip");
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/"), "{etag}");
    let revalidated = revalidate(&mut conn, "GET", "/big.txt", &etag);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    // The identity copy's own validator stays strong.
    let strong = etag.trim_start_matches("W/");
    conn.send_raw(
        format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {strong}\r\n\r\n").as_bytes(),
    );
    let revalidated = conn.read_response(true);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(strong));
    // The file has a copy, so the 200 varies: the 304 says so too.
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    // A cache that lists both variants' tags for a client that would get
    // the file is told the file's: it must not freshen the copy for it.
    conn.send_raw(
        format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {strong}, {etag}\r\n\r\n")
            .as_bytes(),
    );
    let revalidated = conn.read_response(true);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(strong));
    // By date alone, a client that would get the copy gets its validator.
    let date = first.header("last-modified").unwrap().to_owned();
    conn.send_raw(
        format!(
            "GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nIf-Modified-Since: {date}\r\n\r\n"
        )
        .as_bytes(),
    );
    let revalidated = conn.read_response(true);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    // A HEAD's 304 has the length its 200 would: the copy's.
    let revalidated = revalidate(&mut conn, "HEAD", "/big.txt", &etag);
    assert_eq!(revalidated.status, 304);
    assert_eq!(
        revalidated.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
}

/// A 304 carries the `Vary` and ETag its 200 would (RFC 9110 §15.4.5):
/// for a file StaticCompression would send copies of, `Vary` before any
/// copy exists; for a default document behind a query (which
/// DynamicCompression encodes, and whose type the URL does not say), the
/// weak ETag and `Vary` of the encoded 200 the client holds.
#[test]
fn a_304_says_what_its_200_would_before_a_copy_and_behind_a_query() {
    let s = site("");
    let mut conn = Connection::open(s.server.addr);
    // No copy yet: the 200 goes as the file, with `Vary`; so does its 304.
    s.dir.write("www/fresh.txt", &s.big);
    let plain = fetch(&mut conn, "/fresh.txt", None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let etag = plain.header("etag").unwrap().to_owned();
    conn.send_raw(
        format!("GET /fresh.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    let revalidated = conn.read_response(true);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));

    s.dir.write("www/home/index.html", &s.big);
    let first = fetch(&mut conn, "/home/?x=1", Some("gzip"));
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    let weak = first.header("etag").unwrap().to_owned();
    assert!(weak.starts_with("W/"), "{weak}");
    let revalidated = revalidate(&mut conn, "GET", "/home/?x=1", &weak);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(weak.as_str()));
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
}

/// A folder's default document (served through a child request, under the
/// folder's URL) is compressed like the file itself: `/` is the URL asked
/// for most.
#[test]
fn the_default_document_is_compressed_too() {
    let s = site(STATIC_ONLY);
    s.dir.write("www/home/index.html", &s.big);
    let mut conn = Connection::open(s.server.addr);
    let direct = fetch_copy(&mut conn, "/home/index.html", "br");
    assert_eq!(direct.header("content-encoding"), Some("br"));
    let home = fetch_copy(&mut conn, "/home/", "br");
    assert_eq!(home.status, 200);
    assert_eq!(home.header("content-encoding"), Some("br"));
    assert_eq!(home.header("vary"), Some("Accept-Encoding"));
    assert_eq!(unbrotli(&home.body), s.big.as_bytes());
    // Its 304 and 206 say what its 200 does: the copy's weak tag, and Vary.
    let etag = home.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/"), "{etag}");
    conn.send_raw(
        format!("GET /home/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\nIf-None-Match: {etag}\r\n\r\n")
            .as_bytes(),
    );
    let revalidated = conn.read_response(false);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    conn.send_raw(
        b"GET /home/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\nRange: bytes=0-9\r\n\r\n",
    );
    let ranged = conn.read_response(false);
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.header("vary"), Some("Accept-Encoding"));
    // Its HEAD gets what its GET does, and so does the HEAD's 304.
    conn.send_raw(b"HEAD /home/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert_eq!(
        head.header("content-length"),
        Some(home.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    conn.send_raw(
        format!("HEAD /home/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\nIf-None-Match: {etag}\r\n\r\n")
            .as_bytes(),
    );
    let revalidated = conn.read_response(true);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    assert_eq!(
        revalidated.header("content-length"),
        Some(home.body.len().to_string().as_str())
    );
    // A folder whose copy is not made yet: the HEAD gets the file's
    // length, and does not make the copy (it has no body to copy).
    s.dir.write("www/fresh/index.html", &s.big);
    conn.send_raw(b"HEAD /fresh/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        Some(s.big.len().to_string().as_str())
    );
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
    // With a query the answer for the folder could be anything's (a handler
    // may read it): no shared copy.
    let queried = fetch(&mut conn, "/home/?from=mail", Some("br"));
    assert_eq!(queried.status, 200);
    assert_eq!(queried.header("content-encoding"), None);
    // Changed, it gets a new copy.
    let changed = text(450);
    s.dir.write("www/home/index.html", &changed);
    let home = fetch_copy(&mut conn, "/home/", "br");
    assert_eq!(unbrotli(&home.body), changed.as_bytes());
}

/// A copy directory others may write to could hold planted bytes: it is
/// refused, and the file goes as it is.
#[test]
fn a_copy_directory_others_may_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("compress-open");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let big = text(400);
    dir.write("www/big.txt", &big);
    let body = format!(
        "{MODULES}\n[static_compression]\ndirectory = '{}'\n[dynamic_compression]\nenabled = false\n",
        cache.display()
    );
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for _ in 0..2 {
        let resp = fetch(&mut conn, "/big.txt", Some("gzip"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-encoding"), None);
        assert_eq!(resp.text(), big);
    }
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "a copy was written"
    );

    // Made private, it is used (a refused directory is looked at again
    // after a second).
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let resp = loop {
        let resp = fetch(&mut conn, "/big.txt", Some("gzip"));
        if resp.header("content-encoding").is_some() {
            break resp;
        }
        assert!(std::time::Instant::now() < deadline, "never used");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), big.as_bytes());
}

#[test]
fn compressed_copies_are_kept_on_disk_and_follow_changes() {
    let s = site(STATIC_ONLY);
    let mut conn = Connection::open(s.server.addr);
    let first = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&first.body), s.big.as_bytes());
    let copies: Vec<_> = std::fs::read_dir(s.dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(copies.iter().any(|n| n.ends_with(".gz")), "{copies:?}");

    let changed = text(500);
    s.dir.write("www/big.txt", &changed);
    let second = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&second.body), changed.as_bytes());
    assert_ne!(first.header("etag"), second.header("etag"));
}

/// A copy directory removed while the server runs (a temp cleaner ages
/// out files the server keeps serving from memory) is made again with the
/// next copy, instead of every later file going uncompressed until a
/// reload.
#[test]
fn a_removed_copy_directory_is_made_again() {
    let s = site(STATIC_ONLY);
    s.dir.write("www/second.txt", text(300));
    let mut conn = Connection::open(s.server.addr);
    let first = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&first.body), s.big.as_bytes());
    let cache = s.dir.path().join("cache");
    std::fs::remove_dir_all(&cache).unwrap();
    let second = fetch_copy(&mut conn, "/second.txt", "gzip");
    assert_eq!(gunzip(&second.body), text(300).as_bytes());
    let (names, _) = copy_directory(&cache);
    assert!(names.iter().any(|n| n.ends_with(".gz")), "{names:?}");
}

/// Bytes no coding shrinks, so a copy is as large as its file.
fn incompressible(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The files in the copy directory and the bytes they take.
fn copy_directory(dir: &std::path::Path) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        total += entry.metadata().unwrap().len();
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    (names, total)
}

/// What `copies` finds in `dir` once they take at most `limit` bytes
/// (pruning runs on the compression thread, just after a copy appears).
fn within_limit(
    copies: &dyn Fn(&std::path::Path) -> (Vec<String>, u64),
    dir: &std::path::Path,
    limit: u64,
) -> (Vec<String>, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found = copies(dir);
        if found.1 <= limit {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "copies were never pruned: {found:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn copies_past_max_disk_space_usage_are_pruned_oldest_first() {
    const MB: u64 = 1024 * 1024;
    let s = site(&format!(
        "max_disk_space_usage = 1\nmax_size = 1048576\n{STATIC_ONLY}"
    ));
    let files: Vec<Vec<u8>> = (0..3u64).map(|i| incompressible(600_000, i + 7)).collect();
    for (i, data) in files.iter().enumerate() {
        s.dir.write(&format!("www/r{i}.txt"), data);
    }
    let cache = s.dir.path().join("cache");
    let mut conn = Connection::open(s.server.addr);
    // The first request makes the directory; a file riis did not make is
    // put there, old and large, and must survive every prune.
    let warm = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(warm.header("content-encoding"), Some("gzip"));
    let foreign = cache.join("operator-notes.txt");
    std::fs::write(&foreign, vec![b'n'; 700_000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&foreign)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
    let copies = |dir: &std::path::Path| {
        let (names, total) = copy_directory(dir);
        let foreign_len = std::fs::metadata(dir.join("operator-notes.txt"))
            .unwrap()
            .len();
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| n != "operator-notes.txt")
            .collect();
        (names, total - foreign_len)
    };
    let mut copies_after = Vec::new();
    for (i, data) in files.iter().enumerate() {
        let r = fetch_copy(&mut conn, &format!("/r{i}.txt"), "gzip");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(gunzip(&r.body), *data);
        // The copy is served once renamed into place; the prune it sets
        // off follows on the compression thread.
        copies_after.push(within_limit(&copies, &cache, MB));
        // Copies are ordered by their files' modification times, which
        // the kernel keeps to a clock tick.
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    // The warm-up copy and one more fit; the next passes the limit, and
    // the oldest copies go (never the foreign file, though older).
    assert_eq!(copies_after[0].0.len(), 2, "{:?}", copies_after[0]);
    let first_copy = copies_after[0]
        .0
        .iter()
        .find(|n| !copies_after[1].0.contains(n))
        .cloned()
        .unwrap_or_default();
    for (names, total) in &copies_after[1..] {
        assert!(*total <= MB, "{names:?} take {total} bytes");
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(!names.contains(&first_copy), "{names:?}");
    }
    // The newest copy stays and is the one served. A pruned one is not
    // made again for a while: the file goes as it is, and the compression
    // thread is not kept busy remaking copies that do not fit (it was, by
    // a client asking for them in turn).
    assert_ne!(copies_after[1].0, copies_after[2].0);
    let before = copies(&cache);
    for _ in 0..3 {
        conn.send_raw(b"GET /r0.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
        let again = conn.read_response(false);
        assert_eq!(again.header("content-encoding"), None);
        assert_eq!(again.body, files[0]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(copies(&cache), before, "a pruned copy was made again");
    assert!(foreign.exists());
}

#[test]
fn without_disk_space_limiting_copies_stay() {
    let s = site(&format!(
        "max_disk_space_usage = 1\ndo_disk_space_limiting = false\nmax_size = 1048576\n{STATIC_ONLY}"
    ));
    let mut conn = Connection::open(s.server.addr);
    for i in 0..3u64 {
        s.dir
            .write(&format!("www/r{i}.txt"), incompressible(600_000, i + 7));
        let r = fetch_copy(&mut conn, &format!("/r{i}.txt"), "gzip");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
    }
    let (names, total) = copy_directory(&s.dir.path().join("cache"));
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(total > 1024 * 1024);
}

#[test]
fn dynamic_compression_takes_over_when_static_is_off() {
    let dir = TempDir::new("dynamic");
    let big = text(300);
    dir.write("www/page.txt", &big);
    let body = format!("{MODULES}\n[static_compression]\nenabled = false\n");
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = fetch(&mut conn, "/page.txt", Some("gzip"));
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), big.as_bytes());
    let resp = fetch(&mut conn, "/page.txt", Some("zstd"));
    assert_eq!(resp.header("content-encoding"), Some("zstd"));
    assert_eq!(unzstd(&resp.body), big.as_bytes());
}

/// A range of a file StaticCompression would encode carries the `Vary`
/// its 200 would (RFC 9110 §15.3.7), single or multipart.
#[test]
fn a_range_of_a_compressible_file_varies_as_its_200() {
    let site = site(STATIC_ONLY);
    let mut conn = Connection::open(site.server.addr);
    for range in ["bytes=0-1", "bytes=0-1,4-5"] {
        conn.send_raw(
            format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nRange: {range}\r\n\r\n").as_bytes(),
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 206, "{range}");
        assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{range}");
    }
    // An image is not encoded: no Vary on its ranges either.
    conn.send_raw(b"GET /image.png HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("vary"), None);
}

/// A range of an answer DynamicCompression would encode (a folder's
/// default document under a URL with a query, which StaticCompression
/// leaves alone) carries the `Vary` its 200 does, single or multipart (whose
/// type and length its first part says).
#[test]
fn a_range_of_an_answer_dynamic_compression_encodes_varies_as_its_200() {
    let site = site("");
    site.dir
        .write("www/dir/index.html", "<p>dynamic</p>\n".repeat(400));
    let mut conn = Connection::open(site.server.addr);
    let whole = fetch(&mut conn, "/dir/?x=1", Some("gzip"));
    assert_eq!(whole.header("content-encoding"), Some("gzip"));
    assert_eq!(whole.header("vary"), Some("Accept-Encoding"));
    for range in ["bytes=0-3", "bytes=0-1,5-6"] {
        conn.send_raw(
            format!("GET /dir/?x=1 HTTP/1.1\r\nHost: t\r\nRange: {range}\r\n\r\n").as_bytes(),
        );
        let ranged = conn.read_response(false);
        assert_eq!(ranged.status, 206, "{range}");
        assert_eq!(ranged.header("vary"), Some("Accept-Encoding"), "{range}");
    }
}

/// A file replaced by another of the same length and modification time
/// (`cp -p`, an archive, a build with fixed dates) gets a new ETag, so
/// neither conditional requests nor StaticCompression's copies (named by
/// the ETag) keep the old version.
#[test]
fn a_file_replaced_with_the_same_length_and_time_is_not_served_stale() {
    let site = site(STATIC_ONLY);
    let path = site.dir.path().join("www/big.txt");
    let mut conn = Connection::open(site.server.addr);
    let first = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&first.body), site.big.as_bytes());
    let old_etag = fetch(&mut conn, "/big.txt", None)
        .header("etag")
        .unwrap()
        .to_owned();

    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let replacement = site.big.replace("line", "LINE");
    assert_eq!(replacement.len(), site.big.len());
    let staged = site.dir.path().join("www/big.txt.new");
    std::fs::write(&staged, &replacement).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::rename(&staged, &path).unwrap();

    let plain = fetch(&mut conn, "/big.txt", None);
    assert_eq!(plain.body, replacement.as_bytes());
    let new_etag = plain.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, old_etag);
    // The old validator no longer matches.
    conn.send_raw(
        format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {old_etag}\r\n\r\n").as_bytes(),
    );
    assert_eq!(conn.read_response(false).status, 200);
    // Gzip clients get the new text (as it is, then from a new copy).
    let copy = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&copy.body), replacement.as_bytes());
}

/// DynamicCompression's 304 and HEAD say what the GET's 200 would: `Vary`,
/// and on a 304 the weak ETag of the encoded body; a client that weighs
/// `identity` above the codings gets the body as it is.
#[test]
fn dynamic_compression_304_head_and_identity() {
    let dir = TempDir::new("dynamic-304");
    let big = text(300);
    dir.write("www/page.txt", &big);
    dir.write("www/small.txt", "too small to bother");
    dir.write("www/image.png", vec![7u8; 10_000]);
    let body = format!("{MODULES}\n[static_compression]\nenabled = false\n");
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    let full = fetch(&mut conn, "/page.txt", Some("gzip"));
    assert_eq!(full.header("content-encoding"), Some("gzip"));
    let weak = full.header("etag").unwrap().to_owned();
    assert!(weak.starts_with("W/\""), "{weak}");
    let not_modified = revalidate(&mut conn, "GET", "/page.txt", &weak);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(weak.as_str()));
    assert_eq!(not_modified.header("vary"), Some("Accept-Encoding"));

    // A type this module leaves alone keeps its strong ETag and no Vary.
    let image = fetch(&mut conn, "/image.png", Some("gzip"));
    let strong = image.header("etag").unwrap().to_owned();
    let not_modified = revalidate(&mut conn, "GET", "/image.png", &strong);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(strong.as_str()));
    assert_eq!(not_modified.header("vary"), None);

    // HEAD gets the fields GET does, but no length: the identity length
    // is not what GET sends, and the encoded one is known only by encoding.
    conn.send_raw(b"HEAD /page.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(head.header("etag"), Some(weak.as_str()));
    assert_eq!(head.header("content-length"), None);
    let not_modified = revalidate(&mut conn, "HEAD", "/page.txt", &weak);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("content-length"), None);
    // Without an encoding the client takes, HEAD has the file's length.
    conn.send_raw(b"HEAD /page.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        Some(big.len().to_string().as_str())
    );

    // A file under `min_size` is never encoded: its 304 and HEAD say so too.
    let small = fetch(&mut conn, "/small.txt", Some("gzip"));
    assert_eq!(small.header("vary"), None);
    let strong = small.header("etag").unwrap().to_owned();
    let not_modified = revalidate(&mut conn, "GET", "/small.txt", &strong);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(strong.as_str()));
    assert_eq!(not_modified.header("vary"), None);
    conn.send_raw(b"HEAD /small.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_eq!(conn.read_response(true).header("vary"), None);

    let identity = fetch(&mut conn, "/page.txt", Some("identity;q=1, gzip;q=0.1"));
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body, big.as_bytes());
}

/// DynamicCompression does not take on a large file: compressing it on
/// every request would cost its CPU each time. Up to 4 MiB of file it does
/// (above).
#[test]
fn dynamic_compression_leaves_a_large_file_alone() {
    let dir = TempDir::new("dynamic-large");
    let big = text(150_000);
    assert!(big.len() > 4 * 1024 * 1024);
    dir.write("www/large.txt", &big);
    let body = format!("{MODULES}\n[static_compression]\nenabled = false\n");
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = fetch(&mut conn, "/large.txt", Some("gzip"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body.len(), big.len());
    // Its HEAD says the same.
    conn.send_raw(b"HEAD /large.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        Some(big.len().to_string().as_str())
    );
}

#[test]
fn a_streamed_response_is_compressed_as_it_goes() {
    let dir = TempDir::new("stream");
    let config = write_config(
        &dir,
        dir.path(),
        "[[modules]]\nname = \"AsyncHello\"\n[[modules]]\nname = \"DynamicCompression\"\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = fetch(&mut conn, "/", Some("br"));
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&resp.body), b"Hello World!");
    let resp = fetch(&mut conn, "/", Some("zstd"));
    assert_eq!(resp.header("content-encoding"), Some("zstd"));
    assert_eq!(unzstd(&resp.body), b"Hello World!");
    // Without Accept-Encoding the same response is sent as it is.
    let resp = fetch(&mut conn, "/", None);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.text(), "Hello World!");
}

/// An HTTP/1.0 client that asks for keep-alive is promised it only when the
/// connection stays: a compressed page has no length, so its body ends
/// with the connection and the head says nothing of keep-alive (HTTP/1.0's
/// default is to close); a page with a length keeps the connection; a
/// response that closes says `close` alone.
#[test]
fn an_http10_client_is_promised_keep_alive_only_when_it_is_kept() {
    let dir = TempDir::new("http10");
    let big = text(3000);
    dir.write("www/page.txt", &big);
    let body = format!("{MODULES}\n[static_compression]\nenabled = false\n");
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);

    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /page.txt HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("connection"), None, "{:?}", resp.headers);
    // (read_response read to the end: the server closed.)
    assert_eq!(gunzip(&resp.body), big.as_bytes());

    // With a length, the connection stays and says so.
    let mut conn = Connection::open(server.addr);
    for _ in 0..2 {
        conn.send_raw(b"GET /page.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let resp = conn.read_response(false);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert_eq!(resp.body, big.as_bytes());
    }

    // A body too long to discard closes the connection: `close`, alone.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"POST /page.txt HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 100000000\r\n\r\nabc",
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("connection"), Some("close"));
}

/// A HEAD carries the coding fields its GET gets (RFC 9110 §9.3.2): a
/// listing made in memory is measured for both, so a small one has neither
/// `Vary` nor a coding, and a large one both.
#[test]
fn a_listing_head_gets_the_coding_fields_of_its_get() {
    let dir = TempDir::new("compress-listing");
    dir.write("www/small/a.txt", "a");
    for i in 0..200 {
        dir.write(&format!("www/large/file-with-a-long-name-{i:03}.txt"), "x");
    }
    let body = r#"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DirectoryListing"
[[modules]]
name = "DynamicCompression"
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DirectoryListing"]
[directory_listing]
enabled = true
"#;
    let config = write_config(&dir, &dir.path().join("www"), body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for (path, encoded) in [("/small/", false), ("/large/", true)] {
        let mut fields = Vec::new();
        for method in ["GET", "HEAD"] {
            conn.send_raw(
                format!("{method} {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
                    .as_bytes(),
            );
            let resp = conn.read_response(method == "HEAD");
            assert_eq!(resp.status, 200, "{method} {path}");
            fields.push((
                resp.header("vary").map(str::to_owned),
                resp.header("content-encoding").map(str::to_owned),
            ));
            if method == "HEAD" && encoded {
                // Not the identity length, which is not what GET sends.
                assert_eq!(resp.header("content-length"), None, "{path}");
            }
        }
        assert_eq!(fields[0], fields[1], "{path}: GET, then HEAD");
        assert_eq!(fields[0].1.is_some(), encoded, "{path}");
    }
}

/// A copy directory removed and made again by someone else (here, open to
/// every user) is not trusted: nothing is written to it and no copy in it
/// is served, as for such a directory at first use.
#[test]
fn a_copy_directory_made_again_by_someone_else_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = site(STATIC_ONLY);
    s.dir.write("www/second.txt", text(300));
    let mut conn = Connection::open(s.server.addr);
    let first = fetch_copy(&mut conn, "/big.txt", "gzip");
    assert_eq!(gunzip(&first.body), s.big.as_bytes());
    let cache = s.dir.path().join("cache");
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    for _ in 0..5 {
        let resp = fetch(&mut conn, "/second.txt", Some("gzip"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-encoding"), None);
        assert_eq!(resp.text(), text(300));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (names, _) = copy_directory(&cache);
    assert!(names.is_empty(), "{names:?}");
}

/// A file past 4 MiB goes as it is, without `Vary`; its HEAD, whose length
/// is known, says the same (it said `Vary`).
#[test]
fn a_large_file_head_has_no_vary_as_its_get() {
    let s = site("enabled = false\n");
    let large = "line of text\n".repeat(5 * 1024 * 1024 / 13 + 1);
    s.dir.write("www/large.txt", &large);
    let mut conn = Connection::open(s.server.addr);
    let get = fetch(&mut conn, "/large.txt", Some("gzip"));
    assert_eq!(get.status, 200);
    assert_eq!(get.body.len(), large.len());
    assert_eq!(get.header("content-encoding"), None);
    assert_eq!(get.header("vary"), None);
    conn.send_raw(b"HEAD /large.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(head.header("vary"), None);
}

/// A folder's default document that streams (here a CGI program with
/// `response_buffer_limit = 0`, as an application that flushes) is
/// compressed as its own URL is: its output is the folder's response,
/// whether it ends within the buffer or streams past it.
#[test]
fn a_default_document_that_streams_is_compressed_as_its_own_url_is() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("compress-streamed-document");
    let big = text(3000);
    dir.write("www/app/page.txt", &big);
    let program = dir.path().join("www/app/index.cgi");
    std::fs::write(
        &program,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat \"$DOCUMENT_ROOT/app/page.txt\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The CGI handler goes before the static one, which catches the rest.
    let body = r#"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "DynamicCompression"
[[modules]]
name = "Cgi"
[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["DefaultDocument"]

[default_document]
files = ["index.cgi"]

[cgi]
response_buffer_limit = 0
"#;
    let config = write_config(&dir, &dir.path().join("www"), body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for path in ["/app/index.cgi", "/app/"] {
        let resp = fetch(&mut conn, path, Some("gzip"));
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"), "{path}");
        assert_eq!(resp.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{path}");
        assert_eq!(gunzip(&resp.body), big.as_bytes(), "{path}");
    }
    let resp = fetch(&mut conn, "/app/", None);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body, big.as_bytes());
}

/// An answer OutputCache keeps is sent as StaticFile's own would be, from
/// the compressed copy, on GET and HEAD, whatever the cache's policy: a hit
/// skips the handler and its mapping of the path, which StaticCompression
/// needs to find the copy (before, hits went out as the file is, without
/// `Vary`, and the URL's ETag went strong and weak by turns).
#[test]
fn an_output_cache_hit_is_compressed_as_the_file_would_be() {
    for policy in ["CacheForTimePeriod", "CacheUntilChange"] {
        let s = site(&format!(
            "{STATIC_ONLY}[output_cache]\npolicy = \"{policy}\"\nduration = 60\n\
             [[modules]]\nname = \"OutputCache\"\n"
        ));
        // Settled: a file changed within the last seconds is not kept yet.
        std::fs::File::options()
            .write(true)
            .open(s.dir.path().join("www/big.txt"))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(10))
            .unwrap();
        let mut conn = Connection::open(s.server.addr);
        let copy = fetch_copy(&mut conn, "/big.txt", "gzip");
        assert_eq!(gunzip(&copy.body), s.big.as_bytes());
        let mut hits = 0;
        for _ in 0..4 {
            let resp = fetch(&mut conn, "/big.txt", Some("gzip"));
            hits += usize::from(resp.header("age").is_some());
            assert_eq!(resp.header("content-encoding"), Some("gzip"), "{policy}");
            assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{policy}");
            assert_eq!(resp.header("etag"), copy.header("etag"), "{policy}");
            assert_eq!(resp.body, copy.body, "{policy}");
        }
        assert!(hits > 0, "{policy}: no answer came from the cache");
        conn.send_raw(b"HEAD /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
        let head = conn.read_response(true);
        assert_eq!(head.header("content-encoding"), Some("gzip"), "{policy}");
        assert_eq!(
            head.header("content-length"),
            Some(copy.body.len().to_string().as_str()),
            "{policy}"
        );
        assert_eq!(head.header("vary"), Some("Accept-Encoding"), "{policy}");
        // A client that takes no gzip gets the file, told it varies.
        let plain = fetch(&mut conn, "/big.txt", None);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        assert_eq!(plain.body, s.big.as_bytes());
    }
}

/// A server behind ReverseProxy that answers the site's root, one answer
/// per `X-User` under one strong ETag (which it should not reuse).
fn backend_by_user() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut user = String::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-user:") {
                            user = v.trim().to_owned();
                        }
                    }
                    let body = format!("for {user}\n").repeat(600);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"same\"\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An answer OutputCache kept from another server is no file's: its hits
/// are not taken for the folder or file at the URL's path, so no copy is
/// made of one client's answer and sent for another's (here the server
/// reuses one strong ETag for each user's page).
#[test]
fn an_output_cache_hit_of_a_proxied_answer_is_not_the_files() {
    let backend = backend_by_user();
    let dir = TempDir::new("compress-proxied-hit");
    dir.write("www/index.html", "home");
    let body = format!(
        "[[modules]]\nname = \"OutputCache\"\n[[modules]]\nname = \"ReverseProxy\"\n\
         [[modules]]\nname = \"StaticCompression\"\n\
         [[handlers]]\nname = \"Proxy\"\npath = \"*\"\nmodules = [\"ReverseProxy\"]\n\
         [static_compression]\ndirectory = '{}'\n\
         [proxy]\nservers = [\"http://{backend}\"]\n\
         [output_cache]\npolicy = \"CacheForTimePeriod\"\nduration = 60\nvary_by_headers = [\"X-User\"]\n",
        dir.path().join("cache").display()
    );
    let config = write_config(&dir, &dir.path().join("www"), &body);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let as_user = |conn: &mut Connection, user: &str| {
        conn.send_raw(
            format!("GET / HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nX-User: {user}\r\n\r\n")
                .as_bytes(),
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 200);
        match resp.header("content-encoding") {
            Some("gzip") => String::from_utf8(gunzip(&resp.body)).unwrap(),
            _ => resp.text(),
        }
    };
    for _ in 0..6 {
        assert!(as_user(&mut conn, "alice").starts_with("for alice\n"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..4 {
        assert!(as_user(&mut conn, "bob").starts_with("for bob\n"));
    }
}
