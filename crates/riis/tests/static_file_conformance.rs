//! StaticFile against RFC 9110 over real sockets: conditional requests and
//! their precedence (§13), byte ranges and multipart/byteranges (§14),
//! client cache headers (IIS `clientCache` modes), hidden files and symbolic
//! links. Every case is a row of a table, run against the `riis` binary with
//! the file cache on and with it off (so both the cached-bytes and the
//! file-range paths answer each row).

mod common;

use std::io::Write;
use std::net::SocketAddr;

use common::{Connection, Response, RunningBinary, TempDir};

const OLD_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const FUTURE_DATE: &str = "Fri, 01 Jan 2100 00:00:00 GMT";
const EXPIRES: &str = "Thu, 01 Jan 2099 12:00:00 GMT";
/// Larger than the file cache's per-file limit and the module's in-memory
/// read limit: always sent as file ranges.
const BIG_LEN: usize = 1024 * 1024 + 512 * 1024 + 7;

fn small_content() -> Vec<u8> {
    (0..200u32).map(|i| b'a' + (i % 26) as u8).collect()
}

fn big_content() -> Vec<u8> {
    (0..BIG_LEN)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 9)) as u8)
        .collect()
}

struct Site {
    _dir: TempDir,
    servers: Vec<RunningBinary>,
}

fn site() -> Site {
    let dir = TempDir::new("sfconf");
    let root = dir.path().join("www");
    // Written an hour "ago": a Last-Modified in the second of the response
    // is no strong validator, and If-Range dates would never match.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (name, content) in [("small.txt", small_content()), ("big.bin", big_content())] {
        let file = dir.write(&format!("www/{name}"), content);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    dir.write("www/empty.txt", "");
    dir.write("www/data.unknownext", "x");
    dir.write("www/app.php", "<?php $secret = 1;");
    dir.write("www/web.config", "<configuration/>");
    dir.write("www/dump.SQL", "drop table x;");
    dir.write("www/dir/index.html", "<h1>dir</h1>");
    dir.write("www/dir/inner.txt", "inner");
    dir.write("www/odd/home page 100%.html", "<h1>odd</h1>");
    dir.write("www/dir/.secret.txt", "SECRET-IN-DIR");
    dir.write("www/.hidden.txt", "SECRET-HIDDEN");
    dir.write("www/.git/config.txt", "SECRET-GIT");
    dir.write("www/.git/index.html", "SECRET-GIT-INDEX");
    dir.write("www/hidden-ok/.well.txt", "well known");
    for loc in ["maxage", "usemaxage", "nocache", "expires", "nocontrol"] {
        dir.write(&format!("www/{loc}/f.txt"), "cached?");
    }
    dir.write("www/strict/real.txt", "real");
    dir.write("www/strict/sub/f.txt", "sub");
    dir.write("www/strict/docs/index.htm", "strict index");
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(root.join(target), root.join(name)).unwrap();
    };
    link("small.txt", "link.txt");
    link("dir", "linkdir");
    link("strict/real.txt", "strict/link.txt");
    link("strict/sub", "strict/ldir");
    link("strict/real.txt", "strict/docs/index.html");

    let mut servers = Vec::new();
    for server in ["", "[server]\nfile_cache_size = 0\n"] {
        let text = format!(
            r#"{server}
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

[[sites]]
name = "Test"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/maxage"
static_file = {{ max_age = 120 }}

[[sites.locations]]
path = "/usemaxage"
static_file = {{ cache_control_mode = "UseMaxAge", max_age = 30 }}

[[sites.locations]]
path = "/nocache"
static_file = {{ cache_control_mode = "DisableCache", max_age = 30 }}

[[sites.locations]]
path = "/expires"
static_file = {{ cache_control_mode = "UseExpires", expires = "{EXPIRES}" }}

[[sites.locations]]
path = "/nocontrol"
static_file = {{ cache_control_mode = "NoControl", max_age = 5 }}

[[sites.locations]]
path = "/hidden-ok"
static_file = {{ allow_hidden = true }}

[[sites.locations]]
path = "/strict"
static_file = {{ follow_symlinks = false }}

[[sites.locations]]
path = "/odd"
default_document = {{ files = ["home page 100%.html"] }}
"#,
            root = root.display()
        );
        let config = dir.write("riis.toml", text);
        servers.push(RunningBinary::start(&[
            "--config",
            config.to_str().unwrap(),
        ]));
    }
    Site { _dir: dir, servers }
}

/// What a row expects of the body.
enum Body {
    /// Not checked.
    Any,
    /// No bytes.
    Empty,
    /// Exactly these bytes.
    Exact(Vec<u8>),
    /// A multipart/byteranges body of these inclusive ranges of `data`,
    /// each part of `part_type`.
    Multipart {
        data: Vec<u8>,
        part_type: &'static str,
        ranges: Vec<(usize, usize)>,
    },
}

struct Case {
    name: String,
    method: &'static str,
    path: String,
    request_headers: Vec<(&'static str, String)>,
    status: u16,
    /// `Some(v)`: the header has value `v`; `None`: it is absent.
    headers: Vec<(&'static str, Option<String>)>,
    body: Body,
}

fn case(
    name: &str,
    method: &'static str,
    path: &str,
    request_headers: &[(&'static str, &str)],
) -> Case {
    Case {
        name: name.to_owned(),
        method,
        path: path.to_owned(),
        request_headers: request_headers
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect(),
        status: 0,
        headers: Vec::new(),
        body: Body::Any,
    }
}

impl Case {
    fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, Some(value.to_owned())));
        self
    }
    fn no_header(mut self, name: &'static str) -> Self {
        self.headers.push((name, None));
        self
    }
    fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
    fn exact(self, bytes: &[u8]) -> Self {
        self.body(Body::Exact(bytes.to_vec()))
    }
}

fn multipart_body(
    boundary: &str,
    part_type: &str,
    data: &[u8],
    ranges: &[(usize, usize)],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        write!(
            out,
            "--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
            data.len()
        )
        .unwrap();
        out.extend_from_slice(&data[a..=b]);
    }
    write!(out, "\r\n--{boundary}--\r\n").unwrap();
    out
}

fn send(addr: SocketAddr, c: &Case) -> Response {
    let mut conn = Connection::open(addr);
    let mut req = format!("{} {} HTTP/1.1\r\nHost: test\r\n", c.method, c.path);
    for (k, v) in &c.request_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if c.method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    conn.send_raw(req.as_bytes());
    conn.read_response(c.method == "HEAD")
}

fn check(c: &Case, resp: &Response, server: usize) -> Result<(), String> {
    let who = format!("[{}] server {server}: {} {}", c.name, c.method, c.path);
    if resp.status != c.status {
        return Err(format!(
            "{who}: status {} (want {}), headers {:?}",
            resp.status, c.status, resp.headers
        ));
    }
    for (name, want) in &c.headers {
        let got = resp.header(name);
        if got != want.as_deref() {
            return Err(format!("{who}: header {name} = {got:?}, want {want:?}"));
        }
    }
    let head = c.method == "HEAD";
    match &c.body {
        Body::Any => {}
        Body::Empty => {
            if !resp.body.is_empty() {
                return Err(format!(
                    "{who}: body of {} bytes, want none",
                    resp.body.len()
                ));
            }
            if (c.status == 412 || c.status == 416)
                && resp.header("content-length").is_some_and(|v| v != "0")
            {
                return Err(format!("{who}: non-zero Content-Length"));
            }
        }
        Body::Exact(want) => {
            if head {
                if resp.header("content-length") != Some(&want.len().to_string()) {
                    return Err(format!(
                        "{who}: HEAD Content-Length {:?}, want {}",
                        resp.header("content-length"),
                        want.len()
                    ));
                }
            } else if &resp.body != want {
                return Err(format!(
                    "{who}: body of {} bytes differs from the {} expected",
                    resp.body.len(),
                    want.len()
                ));
            }
        }
        Body::Multipart {
            data,
            part_type,
            ranges,
        } => {
            let ct = resp.header("content-type").unwrap_or("");
            let Some(boundary) = ct.strip_prefix("multipart/byteranges; boundary=") else {
                return Err(format!("{who}: content-type {ct:?}"));
            };
            let want = multipart_body(boundary, part_type, data, ranges);
            if head {
                if resp.header("content-length") != Some(&want.len().to_string()) {
                    return Err(format!(
                        "{who}: HEAD multipart length {:?}",
                        resp.header("content-length")
                    ));
                }
            } else if resp.body != want {
                return Err(format!(
                    "{who}: multipart body differs:\n{}\nwant\n{}",
                    String::from_utf8_lossy(&resp.body),
                    String::from_utf8_lossy(&want)
                ));
            }
        }
    }
    Ok(())
}

fn validators(addr: SocketAddr, path: &str) -> (String, String) {
    let resp = Connection::open(addr).get(path);
    assert_eq!(resp.status, 200, "{path}");
    (
        resp.header("etag").unwrap().to_owned(),
        resp.header("last-modified").unwrap().to_owned(),
    )
}

fn run(cases: &[Case], site: &Site) {
    let mut failures = Vec::new();
    for (i, server) in site.servers.iter().enumerate() {
        for c in cases {
            let resp = send(server.addr, c);
            if let Err(e) = check(c, &resp, i) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conditional_requests_follow_rfc_9110_section_13() {
    let site = site();
    let (etag, lm) = validators(site.servers[0].addr, "/small.txt");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let weak = format!("W/{etag}");
    let small = small_content();
    let list = format!("\"aaa\", {etag}, \"zzz\"");
    let p = "/small.txt";
    let not_modified = |c: Case| {
        c.status(304)
            .header("etag", &etag)
            .header("last-modified", &lm)
            .no_header("content-type")
            .no_header("content-range")
            .body(Body::Empty)
    };
    let failed = |c: Case| {
        c.status(412)
            .no_header("etag")
            .no_header("content-type")
            .body(Body::Empty)
    };
    let full = |c: Case| {
        c.status(200)
            .header("accept-ranges", "bytes")
            .header("etag", &etag)
            .header("content-type", "text/plain")
            .exact(&small)
    };
    let cases = vec![
        full(case("plain GET", "GET", p, &[]))
            .header("last-modified", &lm)
            .header("content-length", "200"),
        full(case("plain HEAD", "HEAD", p, &[])),
        // If-None-Match: weak comparison.
        not_modified(case("INM own tag", "GET", p, &[("If-None-Match", &etag)])),
        not_modified(case(
            "INM weak form of own tag",
            "GET",
            p,
            &[("If-None-Match", &weak)],
        )),
        not_modified(case("INM in a list", "GET", p, &[("If-None-Match", &list)])),
        not_modified(case("INM star", "GET", p, &[("If-None-Match", "*")])),
        not_modified(case("INM on HEAD", "HEAD", p, &[("If-None-Match", &etag)]))
            .header("content-length", "200"),
        full(case(
            "INM other tag",
            "GET",
            p,
            &[("If-None-Match", "\"other\"")],
        )),
        full(case(
            "INM unquoted junk",
            "GET",
            p,
            &[("If-None-Match", "nonsense")],
        )),
        // If-Match: strong comparison.
        full(case("IM own tag", "GET", p, &[("If-Match", &etag)])),
        full(case("IM in a list", "GET", p, &[("If-Match", &list)])),
        full(case("IM star", "GET", p, &[("If-Match", "*")])),
        failed(case(
            "IM weak never matches",
            "GET",
            p,
            &[("If-Match", &weak)],
        )),
        failed(case("IM other tag", "GET", p, &[("If-Match", "\"other\"")])),
        failed(case(
            "IM other tag on HEAD",
            "HEAD",
            p,
            &[("If-Match", "\"other\"")],
        )),
        // Precedence (§13.2.2).
        failed(case(
            "failing IM beats a matching INM",
            "GET",
            p,
            &[("If-Match", "\"other\""), ("If-None-Match", &etag)],
        )),
        full(case(
            "IUS ignored when IM present",
            "GET",
            p,
            &[("If-Match", &etag), ("If-Unmodified-Since", OLD_DATE)],
        )),
        not_modified(case(
            "passing IM then matching INM",
            "GET",
            p,
            &[("If-Match", &etag), ("If-None-Match", &etag)],
        )),
        failed(case(
            "IUS before modification",
            "GET",
            p,
            &[("If-Unmodified-Since", OLD_DATE)],
        )),
        full(case(
            "IUS at modification",
            "GET",
            p,
            &[("If-Unmodified-Since", &lm)],
        )),
        full(case(
            "IUS unparseable is ignored",
            "GET",
            p,
            &[("If-Unmodified-Since", "yesterday")],
        )),
        failed(case(
            "IUS failing beats INM",
            "GET",
            p,
            &[("If-Unmodified-Since", OLD_DATE), ("If-None-Match", &etag)],
        )),
        not_modified(case(
            "IMS at modification",
            "GET",
            p,
            &[("If-Modified-Since", &lm)],
        )),
        not_modified(case(
            "IMS in the future",
            "GET",
            p,
            &[("If-Modified-Since", FUTURE_DATE)],
        )),
        not_modified(case(
            "IMS on HEAD",
            "HEAD",
            p,
            &[("If-Modified-Since", &lm)],
        )),
        full(case(
            "IMS before modification",
            "GET",
            p,
            &[("If-Modified-Since", OLD_DATE)],
        )),
        full(case(
            "IMS unparseable is ignored",
            "GET",
            p,
            &[("If-Modified-Since", "not a date")],
        )),
        full(case(
            "IMS ignored when INM present",
            "GET",
            p,
            &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)],
        )),
        // Conditionals do not apply where the method is refused.
        case("POST with INM", "POST", p, &[("If-None-Match", "*")])
            .status(405)
            .header("allow", "GET, HEAD"),
        // 304 keeps the cache headers of the location.
        case(
            "304 keeps Cache-Control",
            "GET",
            "/maxage/f.txt",
            &[("If-Modified-Since", FUTURE_DATE)],
        )
        .status(304)
        .header("cache-control", "max-age=120")
        .body(Body::Empty),
        case(
            "304 keeps Expires",
            "GET",
            "/expires/f.txt",
            &[("If-Modified-Since", FUTURE_DATE)],
        )
        .status(304)
        .header("expires", EXPIRES)
        .body(Body::Empty),
    ];
    assert!(cases.len() >= 30);
    run(&cases, &site);
}

#[test]
fn byte_ranges_follow_rfc_9110_section_14() {
    let site = site();
    let (etag, lm) = validators(site.servers[0].addr, "/small.txt");
    let (big_etag, big_lm) = validators(site.servers[0].addr, "/big.bin");
    let small = small_content();
    let big = big_content();
    let p = "/small.txt";
    let part = |c: Case, a: usize, b: usize, data: &[u8], len: usize| {
        c.status(206)
            .header("content-range", &format!("bytes {a}-{b}/{len}"))
            .header("content-length", &(b - a + 1).to_string())
            .exact(&data[a..=b])
    };
    let small_part = |c: Case, a: usize, b: usize| {
        part(c, a, b, &small, 200)
            .header("content-type", "text/plain")
            .header("etag", &etag)
    };
    let full = |c: Case| {
        c.status(200)
            .no_header("content-range")
            .header("content-length", "200")
            .exact(&small)
    };
    let unsatisfiable = |c: Case, len: usize| {
        c.status(416)
            .header("content-range", &format!("bytes */{len}"))
            .body(Body::Empty)
    };
    let multi = |c: Case, ranges: &[(usize, usize)]| {
        c.status(206)
            .no_header("content-range")
            .body(Body::Multipart {
                data: small.clone(),
                part_type: "text/plain",
                ranges: ranges.to_vec(),
            })
    };
    let too_many = format!(
        "bytes={}",
        (0..101)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let hundred = format!(
        "bytes={}",
        (0..100)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",")
    );
    let hundred_ranges: Vec<(usize, usize)> = (0..100).map(|i| (i * 2, i * 2)).collect();
    let cases = vec![
        small_part(
            case("first bytes", "GET", p, &[("Range", "bytes=0-9")]),
            0,
            9,
        ),
        small_part(case("one byte", "GET", p, &[("Range", "bytes=0-0")]), 0, 0),
        small_part(
            case("last byte", "GET", p, &[("Range", "bytes=199-199")]),
            199,
            199,
        ),
        small_part(
            case("suffix", "GET", p, &[("Range", "bytes=-10")]),
            190,
            199,
        ),
        small_part(
            case(
                "suffix longer than file",
                "GET",
                p,
                &[("Range", "bytes=-1000")],
            ),
            0,
            199,
        ),
        small_part(
            case("open range", "GET", p, &[("Range", "bytes=190-")]),
            190,
            199,
        ),
        small_part(
            case("whole file as a range", "GET", p, &[("Range", "bytes=0-")]),
            0,
            199,
        ),
        small_part(
            case("clipped end", "GET", p, &[("Range", "bytes=150-999")]),
            150,
            199,
        ),
        small_part(
            case(
                "huge last-pos",
                "GET",
                p,
                &[("Range", "bytes=5-99999999999999999999999")],
            ),
            5,
            199,
        ),
        small_part(
            case("unit case-insensitive", "GET", p, &[("Range", "Bytes=3-4")]),
            3,
            4,
        ),
        small_part(
            case(
                "unsatisfiable part dropped",
                "GET",
                p,
                &[("Range", "bytes=0-1,250-300")],
            ),
            0,
            1,
        ),
        small_part(
            case(
                "overlaps coalesced",
                "GET",
                p,
                &[("Range", "bytes=0-4,3-8")],
            ),
            0,
            8,
        ),
        small_part(
            case(
                "adjacent overlaps coalesced",
                "GET",
                p,
                &[("Range", "bytes=5-9,0-5,10-12")],
            ),
            0,
            12,
        ),
        small_part(
            case("HEAD single range", "HEAD", p, &[("Range", "bytes=0-9")]),
            0,
            9,
        ),
        unsatisfiable(
            case("start at length", "GET", p, &[("Range", "bytes=200-")]),
            200,
        ),
        unsatisfiable(
            case("start past end", "GET", p, &[("Range", "bytes=500-600")]),
            200,
        ),
        unsatisfiable(
            case("empty suffix", "GET", p, &[("Range", "bytes=-0")]),
            200,
        ),
        unsatisfiable(
            case(
                "all unsatisfiable",
                "GET",
                p,
                &[("Range", "bytes=300-400, 500-")],
            ),
            200,
        ),
        unsatisfiable(
            case("HEAD unsatisfiable", "HEAD", p, &[("Range", "bytes=300-")]),
            200,
        ),
        unsatisfiable(
            case("empty file", "GET", "/empty.txt", &[("Range", "bytes=0-")]),
            0,
        ),
        full(case("unknown unit", "GET", p, &[("Range", "items=0-9")])),
        full(case(
            "reversed range is invalid",
            "GET",
            p,
            &[("Range", "bytes=9-0")],
        )),
        full(case(
            "letters are invalid",
            "GET",
            p,
            &[("Range", "bytes=abc")],
        )),
        full(case("no equals sign", "GET", p, &[("Range", "bytes 0-9")])),
        full(case("empty set", "GET", p, &[("Range", "bytes=")])),
        full(case(
            "one invalid spec spoils all",
            "GET",
            p,
            &[("Range", "bytes=0-1,x-2")],
        )),
        full(case(
            "more than 100 ranges",
            "GET",
            p,
            &[("Range", &too_many)],
        )),
        full(case(
            "If-Range other tag",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
        )),
        full(case(
            "If-Range weak tag",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-Range", &format!("W/{etag}"))],
        )),
        full(case(
            "If-Range old date",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-Range", OLD_DATE)],
        )),
        full(case(
            "If-Range later date",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-Range", FUTURE_DATE)],
        )),
        full(case(
            "If-Range garbage",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-Range", "soon")],
        )),
        full(case(
            "If-Range failing suppresses 416",
            "GET",
            p,
            &[("Range", "bytes=500-"), ("If-Range", "\"x\"")],
        )),
        small_part(
            case(
                "If-Range own tag",
                "GET",
                p,
                &[("Range", "bytes=0-9"), ("If-Range", &etag)],
            ),
            0,
            9,
        ),
        small_part(
            case(
                "If-Range exact date",
                "GET",
                p,
                &[("Range", "bytes=0-9"), ("If-Range", &lm)],
            ),
            0,
            9,
        ),
        case(
            "INM 304 wins over Range",
            "GET",
            p,
            &[("Range", "bytes=0-9"), ("If-None-Match", &etag)],
        )
        .status(304)
        .no_header("content-range")
        .body(Body::Empty),
        multi(
            case("two ranges", "GET", p, &[("Range", "bytes=0-1,4-5")]),
            &[(0, 1), (4, 5)],
        ),
        // -3 and 198- overlap: everything is sorted and coalesced.
        multi(
            case(
                "suffix and open overlap",
                "GET",
                p,
                &[("Range", "bytes=-3, 10-12, 198-")],
            ),
            &[(10, 12), (197, 199)],
        ),
        multi(
            case("suffix and open", "GET", p, &[("Range", "bytes=-3,10-12")]),
            &[(197, 199), (10, 12)],
        ),
        multi(
            case(
                "out of order kept",
                "GET",
                p,
                &[("Range", "bytes=10-19,0-4")],
            ),
            &[(10, 19), (0, 4)],
        ),
        multi(
            case(
                "overlap sorts and coalesces",
                "GET",
                p,
                &[("Range", "bytes=50-60,0-4,55-70")],
            ),
            &[(0, 4), (50, 70)],
        ),
        multi(
            case("100 ranges", "GET", p, &[("Range", &hundred)]),
            &hundred_ranges,
        ),
        multi(
            case("HEAD multipart", "HEAD", p, &[("Range", "bytes=0-1,4-5")]),
            &[(0, 1), (4, 5)],
        ),
        multi(
            case(
                "If-Range tag multipart",
                "GET",
                p,
                &[("Range", "bytes=0-1,4-5"), ("If-Range", &etag)],
            ),
            &[(0, 1), (4, 5)],
        ),
        // The large file: file ranges, never read into memory whole.
        part(
            case(
                "big: middle",
                "GET",
                "/big.bin",
                &[("Range", "bytes=1048570-1048590")],
            ),
            1048570,
            1048590,
            &big,
            BIG_LEN,
        )
        .header("content-type", "application/octet-stream"),
        part(
            case("big: suffix", "GET", "/big.bin", &[("Range", "bytes=-5")]),
            BIG_LEN - 5,
            BIG_LEN - 1,
            &big,
            BIG_LEN,
        ),
        part(
            case(
                "big: open across read steps",
                "GET",
                "/big.bin",
                &[("Range", "bytes=100000-")],
            ),
            100000,
            BIG_LEN - 1,
            &big,
            BIG_LEN,
        ),
        part(
            case(
                "big: If-Range date",
                "GET",
                "/big.bin",
                &[("Range", "bytes=7-70"), ("If-Range", &big_lm)],
            ),
            7,
            70,
            &big,
            BIG_LEN,
        ),
        part(
            case(
                "big: HEAD range",
                "HEAD",
                "/big.bin",
                &[("Range", "bytes=0-262144")],
            ),
            0,
            262144,
            &big,
            BIG_LEN,
        ),
        case(
            "big: multipart",
            "GET",
            "/big.bin",
            &[("Range", "bytes=0-9,1000000-1000009,-3")],
        )
        .status(206)
        .body(Body::Multipart {
            data: big.clone(),
            part_type: "application/octet-stream",
            ranges: vec![(0, 9), (1000000, 1000009), (BIG_LEN - 3, BIG_LEN - 1)],
        }),
        case("big: full", "GET", "/big.bin", &[])
            .status(200)
            .header("accept-ranges", "bytes")
            .header("etag", &big_etag)
            .exact(&big),
        case(
            "big: If-Range other tag",
            "GET",
            "/big.bin",
            &[("Range", "bytes=0-9"), ("If-Range", "\"nope\"")],
        )
        .status(200)
        .exact(&big),
        unsatisfiable(
            case(
                "big: past the end",
                "GET",
                "/big.bin",
                &[("Range", &format!("bytes={BIG_LEN}-"))],
            ),
            BIG_LEN,
        ),
    ];
    assert!(cases.len() >= 45);
    run(&cases, &site);
}

#[test]
fn cache_headers_hidden_files_and_symlinks() {
    let site = site();
    let small = small_content();
    let ok = |c: Case, body: &[u8]| c.status(200).exact(body);
    let gone = |c: Case| c.status(404);
    let cases = vec![
        ok(
            case("site default: no cache header", "GET", "/small.txt", &[]),
            &small,
        )
        .no_header("cache-control")
        .no_header("expires"),
        ok(
            case("max_age alone is UseMaxAge", "GET", "/maxage/f.txt", &[]),
            b"cached?",
        )
        .header("cache-control", "max-age=120"),
        ok(
            case("UseMaxAge", "GET", "/usemaxage/f.txt", &[]),
            b"cached?",
        )
        .header("cache-control", "max-age=30"),
        ok(
            case("UseMaxAge on HEAD", "HEAD", "/usemaxage/f.txt", &[]),
            b"cached?",
        )
        .header("cache-control", "max-age=30"),
        ok(
            case("DisableCache", "GET", "/nocache/f.txt", &[]),
            b"cached?",
        )
        .header("cache-control", "no-cache"),
        ok(case("UseExpires", "GET", "/expires/f.txt", &[]), b"cached?")
            .header("expires", EXPIRES)
            .no_header("cache-control"),
        ok(
            case("NoControl ignores max_age", "GET", "/nocontrol/f.txt", &[]),
            b"cached?",
        )
        .no_header("cache-control")
        .no_header("expires"),
        ok(
            case(
                "range keeps the cache header",
                "GET",
                "/usemaxage/f.txt",
                &[("Range", "bytes=0-1")],
            ),
            b"ca",
        )
        .status(206)
        .header("cache-control", "max-age=30"),
        gone(case("hidden file", "GET", "/.hidden.txt", &[])),
        gone(case("hidden file HEAD", "HEAD", "/.hidden.txt", &[])),
        // The static handler takes GET and HEAD only: a POST is refused at
        // handler mapping, for any path, so nothing about the file shows.
        case("hidden file with POST", "POST", "/.hidden.txt", &[]).status(405),
        gone(case(
            "file in hidden directory",
            "GET",
            "/.git/config.txt",
            &[],
        )),
        gone(case("hidden directory with slash", "GET", "/.git/", &[])),
        gone(case("hidden directory without slash", "GET", "/.git", &[])).no_header("location"),
        gone(case(
            "hidden file in a directory",
            "GET",
            "/dir/.secret.txt",
            &[],
        )),
        gone(case("encoded dot", "GET", "/%2egit/config.txt", &[])),
        gone(case(
            "encoded dot, upper case",
            "GET",
            "/dir/%2Esecret.txt",
            &[],
        )),
        // Dot segments and doubled slashes are removed before anything else
        // (RFC 3986 §5.2.4; nginx and IIS do the same): the file itself.
        ok(case("dot segment", "GET", "/./small.txt", &[]), &small),
        ok(case("doubled slash", "GET", "//small.txt", &[]), &small),
        gone(case(
            "dot segment to a hidden file",
            "GET",
            "/./.hidden.txt",
            &[],
        )),
        gone(case("hidden missing file", "GET", "/.nothing", &[])),
        ok(
            case("allow_hidden location", "GET", "/hidden-ok/.well.txt", &[]),
            b"well known",
        ),
        ok(
            case("symlinked file followed", "GET", "/link.txt", &[]),
            &small,
        ),
        ok(
            case(
                "symlinked directory followed",
                "GET",
                "/linkdir/inner.txt",
                &[],
            ),
            b"inner",
        ),
        ok(
            case(
                "symlinked directory default document",
                "GET",
                "/linkdir/",
                &[],
            ),
            b"<h1>dir</h1>",
        ),
        ok(
            case("no symlink under strict", "GET", "/strict/real.txt", &[]),
            b"real",
        ),
        // The first default document is a link: passed over for the next.
        ok(
            case(
                "linked default document passed over",
                "GET",
                "/strict/docs/",
                &[],
            ),
            b"strict index",
        ),
        ok(
            case(
                "plain subfolder under strict",
                "GET",
                "/strict/sub/f.txt",
                &[],
            ),
            b"sub",
        ),
        gone(case(
            "symlinked file refused",
            "GET",
            "/strict/link.txt",
            &[],
        )),
        gone(case(
            "symlinked file refused on HEAD",
            "HEAD",
            "/strict/link.txt",
            &[],
        )),
        gone(case(
            "symlinked directory refused",
            "GET",
            "/strict/ldir/f.txt",
            &[],
        )),
        gone(case(
            "symlinked directory URL refused",
            "GET",
            "/strict/ldir/",
            &[],
        )),
        gone(case(
            "symlinked directory no redirect",
            "GET",
            "/strict/ldir",
            &[],
        ))
        .no_header("location"),
        case("directory redirect kept", "GET", "/dir", &[])
            .status(301)
            .header("location", "/dir/"),
        ok(
            case("default document kept", "GET", "/dir/", &[]),
            b"<h1>dir</h1>",
        ),
        ok(
            case(
                "default document named with a space and %",
                "GET",
                "/odd/",
                &[],
            ),
            b"<h1>odd</h1>",
        ),
        case("405 kept", "POST", "/small.txt", &[])
            .status(405)
            .header("allow", "GET, HEAD"),
        gone(case("404.3 kept", "GET", "/data.unknownext", &[])),
        // Source, configuration and data the type table knows are not
        // served as files (IIS's 404.3).
        gone(case("php source", "GET", "/app.php", &[])),
        gone(case("web.config", "GET", "/web.config", &[])),
        gone(case("sql dump, any case", "GET", "/dump.SQL", &[])),
        gone(case("missing file", "GET", "/missing.txt", &[])),
        ok(case("empty file", "GET", "/empty.txt", &[]), b"").header("content-length", "0"),
    ];
    assert!(cases.len() >= 30);
    run(&cases, &site);
}

/// HEAD announces the length its GET sends, also for multipart ranges
/// (each response has a boundary of its own).
#[test]
fn a_multipart_head_announces_its_gets_length() {
    let site = site();
    let mut conn = Connection::open(site.servers[0].addr);
    for _ in 0..20 {
        let request = |method: &str| {
            format!("{method} /small.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1,4-5\r\n\r\n")
        };
        conn.send_raw(request("HEAD").as_bytes());
        let head = conn.read_response(true);
        conn.send_raw(request("GET").as_bytes());
        let get = conn.read_response(false);
        assert_eq!(get.status, 206);
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str())
        );
    }
}

/// A file modified "in the future" (a clock set wrong where it was made)
/// goes out with a Last-Modified no later than the response's Date (RFC
/// 9110 §8.8.2.1), and validates against it.
#[test]
fn a_future_modification_time_is_sent_as_now() {
    let dir = TempDir::new("future-mtime");
    let file = dir.write("www/future.txt", "from tomorrow");
    let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(tomorrow)
        .unwrap();
    let config = common::write_config(
        &dir,
        &dir.path().join("www"),
        "[[modules]]\nname = \"StaticFile\"\n[[handlers]]\nname = \"StaticFile\"\npath = \"*\"\n\
         modules = [\"StaticFile\"]\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let resp = conn.get("/future.txt");
    assert_eq!(resp.text(), "from tomorrow");
    let parse = |name: &str| {
        httpdate::parse_http_date(resp.header(name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
    };
    let (modified, date) = (parse("last-modified"), parse("date"));
    assert!(modified <= date, "{modified:?} after {date:?}");
    // The date sent validates: not modified since then.
    let since = resp.header("last-modified").unwrap().to_owned();
    conn.send_raw(
        format!("GET /future.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {since}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(conn.read_response(true).status, 304);
    // But that date is no strong validator (RFC 9110 §8.8.2.2): it says
    // nothing of a write later in the same second, so an If-Range with it
    // gets the whole file, never a range that might not fit what the
    // client holds.
    conn.send_raw(
        format!(
            "GET /future.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\nIf-Range: {since}\r\n\r\n"
        )
        .as_bytes(),
    );
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "from tomorrow");
}

/// A file that reads shorter than its size (here one of /sys, which says
/// 4096 bytes and holds a few; a file rewritten in place does the same
/// for a moment) gets a 500 that carries nothing of the file: no
/// validators, no range of it, no cache lifetime.
#[test]
fn a_file_that_reads_short_gets_an_error_without_its_validators() {
    let short = std::path::Path::new("/sys/devices/system/cpu/online");
    let dir = TempDir::new("short-read");
    dir.write("www/index.html", "x");
    std::os::unix::fs::symlink(short, dir.path().join("www/short.txt")).unwrap();
    let config = common::write_config(
        &dir,
        &dir.path().join("www"),
        "[[modules]]\nname = \"StaticFile\"\n[[handlers]]\nname = \"StaticFile\"\npath = \"*\"\n\
         modules = [\"StaticFile\"]\n\
         [static_file]\ncache_control_mode = \"UseMaxAge\"\nmax_age = 3600\n",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for range in ["", "Range: bytes=0-3\r\n"] {
        conn.send_raw(format!("GET /short.txt HTTP/1.1\r\nHost: t\r\n{range}\r\n").as_bytes());
        let resp = conn.read_response(false);
        assert_eq!(resp.status, 500, "{range:?}");
        for name in [
            "etag",
            "last-modified",
            "accept-ranges",
            "content-range",
            "cache-control",
        ] {
            assert_eq!(resp.header(name), None, "{name} ({range:?})");
        }
        if resp.header("connection") == Some("close") {
            conn = Connection::open(server.addr);
        }
    }
}
