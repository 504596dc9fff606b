//! OutputCache over real sockets: a URL asked for twice within the period
//! is kept and answered without its handler; the key varies by query
//! string and named headers; responses with cookies, private ones and
//! conditional requests pass by; a file's change ends its entry; a time
//! period ends one, and so does the response's own freshness (`max-age`,
//! `s-maxage`, `Expires`), which may keep it from being stored at all.

mod common;

use std::time::Duration;

use common::{Connection, InProcessServer};
use riis_pipeline::http::{header, HeaderName, HeaderValue};
use riis_pipeline::{
    HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification as N, RequestNotificationStatus as Status, RequestNotifications,
    ServerInfo,
};

/// How many times `Counter` ran, per path (the tests run in parallel, each
/// on paths of its own).
static RUNS: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> =
    std::sync::Mutex::new(None);

/// A handler that answers `run N`, counting its runs per path; `?cookie` adds a
/// cookie, `?private` a `Cache-Control: private`, and each request header
/// `X-Respond-<name>` a response header `<name>` with its value.
struct Counter;
impl HttpModule for Counter {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        let n = {
            let mut runs = RUNS.lock().unwrap();
            let count = runs
                .get_or_insert_with(Default::default)
                .entry(ctx.request().url().to_owned())
                .or_insert(0);
            *count += 1;
            *count
        };
        let query = ctx.request().query_string().to_owned();
        let respond: Vec<(HeaderName, HeaderValue)> = ctx
            .request()
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix("x-respond-")?;
                Some((HeaderName::try_from(name).ok()?, value.clone()))
            })
            .collect();
        let resp = ctx.response_mut();
        resp.set_header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if query.contains("cookie") {
            resp.set_header(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        }
        if query.contains("private") {
            resp.set_header(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
        for (name, value) in respond {
            resp.append_header(name, value);
        }
        resp.write(format!("run {n}"));
        // Continue, not FinishRequest: that would skip UpdateRequestCache.
        Status::Continue
    }
}

fn register_counter(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Counter,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] = &[("Counter", register_counter)];

const CONFIG: &str = r#"
[[modules]]
name = "BasicAuthentication"
[[modules]]
name = "AnonymousAuthentication"
[[modules]]
name = "OutputCache"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "Counter"

[[handlers]]
name = "Counter"
path = "/dyn/*"
modules = ["Counter"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]

[[sites]]
name = "s"
root = 'ROOT'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/dyn"
output_cache = { policy = "CacheForTimePeriod", duration = 600, vary_by_headers = ["Accept-Language"] }

[[sites.locations]]
path = "/dyn/named"
output_cache = { policy = "CacheForTimePeriod", duration = 600, vary_by_query_string = ["id"] }

[[sites.locations]]
path = "/dyn/brief"
output_cache = { policy = "CacheForTimePeriod", duration = 1 }

[[sites.locations]]
path = "/dyn/members"
basic_authentication = { enabled = true, user_file = "users" }
anonymous_authentication = { enabled = false }
output_cache = { policy = "CacheForTimePeriod", duration = 600, cache_authenticated = true }

[[sites.locations]]
path = "/short"
output_cache = { policy = "CacheForTimePeriod", duration = 1 }

[[sites.locations]]
path = "/files"
output_cache = { policy = "CacheUntilChange" }

[[sites.locations]]
path = "/dyn/until"
output_cache = { policy = "CacheUntilChange" }
"#;

fn get(conn: &mut Connection, path: &str, extra: &str) -> String {
    conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200, "{path}");
    resp.text()
}

/// The run number in a `Counter` answer.
fn run(text: &str) -> u64 {
    text.strip_prefix("run ").unwrap().parse().unwrap()
}

#[test]
fn frequent_urls_are_answered_from_the_cache() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);

    // Asked for once: not kept. Twice: kept. Then answered from the cache.
    let first = run(&get(&mut conn, "/dyn/a", ""));
    let second = run(&get(&mut conn, "/dyn/a", ""));
    assert_eq!(second, first + 1);
    for _ in 0..3 {
        assert_eq!(run(&get(&mut conn, "/dyn/a", "")), second, "from the cache");
    }
    // Another query string is another entry.
    let other = run(&get(&mut conn, "/dyn/a?x=1", ""));
    assert!(other > second);
    // So is another value of a header the location varies by.
    let french = run(&get(&mut conn, "/dyn/a", "Accept-Language: fr\r\n"));
    assert!(french > other);
    // Conditional requests go to the handler.
    let conditional = run(&get(&mut conn, "/dyn/a", "If-None-Match: \"x\"\r\n"));
    assert!(conditional > french);
    // Responses with a cookie or marked private are never kept.
    for path in ["/dyn/a?cookie", "/dyn/a?private"] {
        let mut last = 0;
        for _ in 0..3 {
            let n = run(&get(&mut conn, path, ""));
            assert!(n > last, "{path} was served from the cache");
            last = n;
        }
    }

    // Named parameters: the others are ignored; names are matched as a
    // handler reads them, decoded and in any case.
    let named = run(&get(&mut conn, "/dyn/named?id=1", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/named?id=1", "")), named + 1);
    let kept = named + 1;
    assert_eq!(run(&get(&mut conn, "/dyn/named?id=1&x=y", "")), kept);
    // `%69d` is `id` decoded: the same entry.
    assert_eq!(run(&get(&mut conn, "/dyn/named?%69d=1", "")), kept);
    // `ID` counts (a case-insensitive handler reads it as `id`) but keys
    // apart: a case-sensitive handler's answer to `?ID=1` is not `?id=1`'s.
    assert!(run(&get(&mut conn, "/dyn/named?ID=1", "")) > kept);
    assert_eq!(run(&get(&mut conn, "/dyn/named?id=1", "")), kept);
    assert!(run(&get(&mut conn, "/dyn/named?%69d=2", "")) > kept);
    assert!(run(&get(&mut conn, "/dyn/named", "")) > kept);
    // `;` separates parameters too for some handlers (Rack before 3): an
    // `id` after one is keyed, and its answer is not the plain URL's.
    let cloaked = run(&get(&mut conn, "/dyn/named/c?utm=1;id=EVIL", ""));
    assert_eq!(
        run(&get(&mut conn, "/dyn/named/c?utm=1;id=EVIL", "")),
        cloaked + 1
    );
    assert!(run(&get(&mut conn, "/dyn/named/c", "")) > cloaked + 1);
    // And a handler that splits on `&` alone (PHP) reads `?id=a;b` as
    // `a;b`: not the answer for `?id=a;c`, nor for `?id=a`.
    let semi = run(&get(&mut conn, "/dyn/named/d?id=a;b", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/named/d?id=a;b", "")), semi + 1);
    assert!(run(&get(&mut conn, "/dyn/named/d?id=a;c", "")) > semi + 1);
    assert!(run(&get(&mut conn, "/dyn/named/d?id=a&x=1", "")) > semi + 1);
    // PHP reads ` id` as `id` and `id[]` as `id` (and `user.id` as
    // `user_id`): those key the entry too.
    let plain = run(&get(&mut conn, "/dyn/named/e", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/named/e", "")), plain + 1);
    assert!(run(&get(&mut conn, "/dyn/named/e?id[]=EVIL", "")) > plain + 1);
    assert!(run(&get(&mut conn, "/dyn/named/e?%20id=EVIL", "")) > plain + 1);
    assert_eq!(run(&get(&mut conn, "/dyn/named/e", "")), plain + 1);
    // `?id` and `?id=` are two answers (ASP.NET's null and empty).
    let bare = run(&get(&mut conn, "/dyn/named/f?id", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/named/f?id", "")), bare + 1);
    assert!(run(&get(&mut conn, "/dyn/named/f?id=", "")) > bare + 1);
    server.stop();
}

/// A HEAD is answered from its GET's entry (the head, with the body's
/// length), but never stores one nor counts towards storing one.
#[test]
fn head_requests_are_answered_from_the_get_entry() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let head = |conn: &mut Connection, path: &str| {
        conn.send_raw(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let resp = conn.read_response(true);
        assert_eq!(resp.status, 200, "{path}");
        resp
    };
    // HEADs alone: each goes to the handler, and none makes an entry.
    for _ in 0..3 {
        head(&mut conn, "/dyn/head");
    }
    let first = run(&get(&mut conn, "/dyn/head", ""));
    assert_eq!(first, 4, "three HEADs ran the handler and stored nothing");
    let kept = run(&get(&mut conn, "/dyn/head", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/head", "")), kept, "kept");
    // Now a HEAD is the entry's head: the handler does not run.
    let resp = head(&mut conn, "/dyn/head");
    assert_eq!(
        resp.header("content-length"),
        Some(format!("run {kept}").len().to_string().as_str())
    );
    assert!(resp.header("age").is_some(), "{:?}", resp.headers);
    assert_eq!(run(&get(&mut conn, "/dyn/head", "")), kept);
    server.stop();
}

#[test]
fn a_changed_file_and_a_time_period_end_an_entry() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let dir = server.dir().to_owned();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/a.txt"), "one").unwrap();
    let mut conn = Connection::open(server.addr);
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "/files/a.txt", ""), "one");
    }
    // Replaced: the cached copy is not served.
    std::fs::write(dir.join("files/a.txt"), "two, longer").unwrap();
    assert_eq!(get(&mut conn, "/files/a.txt", ""), "two, longer");
    // A file changed within the last two seconds may change again unseen
    // by its timestamps: not kept yet. Once settled, it is.
    let age_of = |conn: &mut Connection| {
        conn.send_raw(b"GET /files/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        conn.read_response(false).header("age").map(str::to_owned)
    };
    for _ in 0..3 {
        assert_eq!(age_of(&mut conn), None);
    }
    let settled = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(dir.join("files/a.txt"))
        .unwrap()
        .set_modified(settled)
        .unwrap();
    age_of(&mut conn);
    assert_eq!(age_of(&mut conn).as_deref(), Some("0"));
    // Each hit is checked against the file: its time in the cache is no
    // age (else clients keep it for `max-age` less that time).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(age_of(&mut conn).as_deref(), Some("0"));

    // A folder's default document is not kept: it comes from another URL.
    std::fs::write(dir.join("files/index.html"), "index one").unwrap();
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "/files/", ""), "index one");
    }
    std::fs::write(dir.join("files/index.html"), "index two").unwrap();
    assert_eq!(get(&mut conn, "/files/", ""), "index two");

    // A handler's answer at a file's path (a script's output) is stamped by
    // the file but not validated by it: its time in the cache is its age,
    // even when it is as long as the file ("run N", five bytes).
    std::fs::create_dir_all(dir.join("dyn/until")).unwrap();
    std::fs::write(dir.join("dyn/until/script.txt"), "abcde").unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.join("dyn/until/script.txt"))
        .unwrap()
        .set_modified(settled)
        .unwrap();
    for _ in 0..3 {
        get(&mut conn, "/dyn/until/script.txt", "");
    }
    std::thread::sleep(Duration::from_millis(1100));
    conn.send_raw(b"GET /dyn/until/script.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let aged = conn.read_response(false);
    let age: u64 = aged.header("age").expect("a hit").parse().unwrap();
    assert!(age >= 1, "{age}");

    // /short keeps responses for a second.
    std::fs::create_dir_all(dir.join("short")).unwrap();
    std::fs::write(dir.join("short/b.txt"), "old").unwrap();
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "/short/b.txt", ""), "old");
    }
    std::fs::write(dir.join("short/b.txt"), "new").unwrap();
    // Within the second, the kept copy is served (CacheForTimePeriod
    // does not look at the file).
    assert_eq!(get(&mut conn, "/short/b.txt", ""), "old");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&mut conn, "/short/b.txt", ""), "new");
    server.stop();
}

/// With `cache_authenticated`, each user's responses are their own, and a
/// client refused by authentication never gets one; another host name is
/// another entry.
#[test]
fn kept_responses_are_each_users_own_and_each_hosts() {
    use base64::Engine as _;
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        server.dir().join("users"),
        format!("alice:{hash}\nbob:{hash}\n"),
    )
    .unwrap();
    let mut conn = Connection::open(server.addr);
    let as_user = |conn: &mut Connection, user: &str| {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
        run(&get(
            conn,
            "/dyn/members/page",
            &format!("Authorization: Basic {credentials}\r\n"),
        ))
    };
    let first = as_user(&mut conn, "alice");
    let kept = as_user(&mut conn, "alice");
    assert_eq!(kept, first + 1);
    assert_eq!(as_user(&mut conn, "alice"), kept, "alice's from the cache");
    // bob gets his own, never alice's.
    let bobs = as_user(&mut conn, "bob");
    assert!(bobs > kept);
    // Without credentials: refused, not served from anyone's entry.
    conn.send_raw(b"GET /dyn/members/page HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 401);

    // Another host name, another entry.
    let here = run(&get(&mut conn, "/dyn/hosts", ""));
    let kept = run(&get(&mut conn, "/dyn/hosts", ""));
    assert_eq!(kept, here + 1);
    assert_eq!(run(&get(&mut conn, "/dyn/hosts", "")), kept);
    conn.send_raw(b"GET /dyn/hosts HTTP/1.1\r\nHost: elsewhere\r\n\r\n");
    let elsewhere = run(&conn.read_response(false).text());
    assert!(elsewhere > kept, "another host's entry was served");
    // An absolute-form target names the host the handler sees (over
    // `Host`): its answer is kept under that host, never under `Host`'s.
    let victim = run(&get(&mut conn, "/dyn/absolute", ""));
    let victim_kept = run(&get(&mut conn, "/dyn/absolute", ""));
    assert_eq!(victim_kept, victim + 1);
    for _ in 0..3 {
        conn.send_raw(b"GET http://evil.example/dyn/absolute HTTP/1.1\r\nHost: t\r\n\r\n");
        let evil = run(&conn.read_response(false).text());
        assert!(evil > victim_kept, "t's entry was served for evil.example");
    }
    assert_eq!(run(&get(&mut conn, "/dyn/absolute", "")), victim_kept);
    server.stop();
}

/// Credentials that no module checked are the handler's business: such a
/// request is neither answered from the cache nor kept for others.
#[test]
fn requests_with_credentials_the_server_did_not_check_pass_by() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let bearer = "Authorization: Bearer alice-token\r\n";
    let first = run(&get(&mut conn, "/dyn/bearer", bearer));
    for i in 1..=3 {
        assert_eq!(run(&get(&mut conn, "/dyn/bearer", bearer)), first + i);
    }
    // Anonymous requests keep their own entry, which a bearer never gets.
    let anonymous = run(&get(&mut conn, "/dyn/bearer", ""));
    let kept = run(&get(&mut conn, "/dyn/bearer", ""));
    assert_eq!(kept, anonymous + 1);
    assert_eq!(run(&get(&mut conn, "/dyn/bearer", "")), kept);
    assert!(run(&get(&mut conn, "/dyn/bearer", bearer)) > kept);
    server.stop();
}

/// `X-Respond-…` request headers that make `Counter` answer with `headers`.
fn respond_with(headers: &[(&str, &str)]) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("X-Respond-{name}: {value}\r\n"))
        .collect()
}

/// A response stale by its own headers (RFC 9111 §4.2) is never kept,
/// whatever the location's `duration`; one fresh by them is, for the
/// shorter of the two.
#[test]
fn a_response_stale_by_its_own_freshness_is_not_kept() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let made_earlier =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100));
    let stale: &[(&str, &[(&str, &str)])] = &[
        ("max-age-0", &[("Cache-Control", "max-age=0")]),
        ("quoted", &[("Cache-Control", "public, MAX-AGE=\"0\"")]),
        // For a shared cache s-maxage comes before max-age.
        (
            "s-maxage-0",
            &[("Cache-Control", "s-maxage=0, max-age=600")],
        ),
        (
            "two-lines",
            &[("Cache-Control", "public"), ("Cache-Control", "max-age=0")],
        ),
        // Freshness that does not parse is stale (RFC 9111 §4.2.1).
        ("not-a-number", &[("Cache-Control", "max-age=soon")]),
        ("no-number", &[("Cache-Control", "max-age")]),
        ("expired", &[("Expires", &past)]),
        ("bad-expires", &[("Expires", "0")]),
        // Aged its whole lifetime in a cache before us.
        ("aged", &[("Cache-Control", "max-age=60"), ("Age", "60")]),
    ];
    for (name, headers) in stale {
        let path = format!("/dyn/stale/{name}");
        let extra = respond_with(headers);
        let mut last = 0;
        for _ in 0..3 {
            let n = run(&get(&mut conn, &path, &extra));
            assert!(n > last, "{path} was served from the cache");
            last = n;
        }
    }
    let fresh: &[(&str, &[(&str, &str)])] = &[
        ("s-maxage", &[("Cache-Control", "s-maxage=600, max-age=0")]),
        // max-age over Expires.
        (
            "max-age",
            &[("Cache-Control", "max-age=600"), ("Expires", &past)],
        ),
        ("expires", &[("Expires", &future)]),
        // Shorter than `duration`: kept (for that long).
        ("shorter", &[("Cache-Control", "max-age=300")]),
        (
            "age-left",
            &[("Cache-Control", "max-age=600"), ("Age", "60")],
        ),
        // Made 100 s ago: that is its age, whatever `Age` says.
        (
            "dated",
            &[("Cache-Control", "max-age=600"), ("Date", &made_earlier)],
        ),
    ];
    for (name, headers) in fresh {
        let path = format!("/dyn/fresh/{name}");
        let extra = respond_with(headers);
        let first = run(&get(&mut conn, &path, &extra));
        let kept = run(&get(&mut conn, &path, &extra));
        assert_eq!(kept, first + 1);
        conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
        let hit = conn.read_response(false);
        assert_eq!(run(&hit.text()), kept, "{path} not kept");
        // A hit says how old it is: the age it came with, and its time here.
        let age: u64 = hit
            .header("age")
            .expect("a hit has an Age")
            .parse()
            .unwrap();
        let came_with = match *name {
            "age-left" => 60,
            "dated" => 100,
            _ => 0,
        };
        assert!(
            (came_with..came_with + 30).contains(&age),
            "{path}: Age {age}"
        );
    }
    server.stop();
}

/// A response whose own lifetime is shorter than `duration` is kept only
/// that long; a longer one does not stretch `duration`.
#[test]
fn an_entry_lasts_no_longer_than_the_response_says() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(1));
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("/dyn/life/max-age", &[("Cache-Control", "max-age=1")]),
        (
            "/dyn/life/s-maxage",
            &[("Cache-Control", "S-MaxAge=1, max-age=600")],
        ),
        ("/dyn/life/expires", &[("Expires", &soon)]),
        // 601 s less the 600 spent in a cache before us.
        (
            "/dyn/life/age",
            &[("Cache-Control", "max-age=601"), ("Age", "600")],
        ),
        // `duration` (1 s here) is the upper bound.
        ("/dyn/brief/long", &[("Cache-Control", "max-age=600")]),
    ];
    let mut stored = Vec::new();
    for (path, headers) in cases {
        let extra = respond_with(headers);
        run(&get(&mut conn, path, &extra));
        // Kept now, if its lifetime has not already run out.
        stored.push(run(&get(&mut conn, path, &extra)));
    }
    std::thread::sleep(Duration::from_secs(2));
    for ((path, headers), stored) in cases.iter().zip(stored) {
        let n = run(&get(&mut conn, path, &respond_with(headers)));
        assert!(n > stored, "{path} was served past its lifetime");
    }
    server.stop();
}

/// Two spellings of one path that the server decodes alike are two
/// entries: a proxied backend gets the path raw and may answer them apart,
/// so one's answer must not be stored for the other (`a%2Fb` and `a/b`).
/// An encoded answer whose key does not vary by `Accept-Encoding` is not
/// kept, whatever its `Vary` forgot.
#[test]
fn spellings_of_a_path_and_encoded_answers_are_kept_apart() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);

    let first = run(&get(&mut conn, "/dyn/spell/a%2Fb", ""));
    let kept = run(&get(&mut conn, "/dyn/spell/a%2Fb", ""));
    assert_eq!(run(&get(&mut conn, "/dyn/spell/a%2Fb", "")), kept);
    assert_eq!(kept, first + 1);
    // The same decoded path, spelt otherwise: its own handler run.
    assert_eq!(run(&get(&mut conn, "/dyn/spell/a/b", "")), kept + 1);

    let gzip = "X-Respond-Content-Encoding: gzip\r\n";
    let runs: Vec<u64> = (0..3)
        .map(|_| run(&get(&mut conn, "/dyn/encoded", gzip)))
        .collect();
    assert_eq!(runs[2], runs[0] + 2, "an encoded answer was kept");
    // `identity` on a first line does not make a second line's gzip
    // readable to every client.
    let lines = "X-Respond-Content-Encoding: identity\r\nX-Respond-Content-Encoding: gzip\r\n";
    let runs: Vec<u64> = (0..3)
        .map(|_| run(&get(&mut conn, "/dyn/encoded-twice", lines)))
        .collect();
    assert_eq!(runs[2], runs[0] + 2, "an encoded answer was kept");

    // Values that decode to no text, and a raw byte against its escape,
    // are told apart: each its own entry.
    for (a, b) in [
        ("/dyn/named/bytes?id=%FF", "/dyn/named/bytes?id=%FE"),
        ("/dyn/named/bytes?id=%EF%BF%BD", "/dyn/named/bytes?id=%FD"),
    ] {
        let first = run(&get(&mut conn, a, ""));
        let kept = run(&get(&mut conn, a, ""));
        assert_eq!(run(&get(&mut conn, a, "")), kept, "{a} kept");
        assert!(
            run(&get(&mut conn, b, "")) > kept.max(first),
            "{b} answered as {a}"
        );
    }
    conn.send_raw(b"GET /dyn/lang HTTP/1.1\r\nHost: t\r\nAccept-Language: \xe9\r\n\r\n");
    let raw = conn.read_response(false);
    conn.send_raw(b"GET /dyn/lang HTTP/1.1\r\nHost: t\r\nAccept-Language: \xe9\r\n\r\n");
    let kept = run(&conn.read_response(false).text());
    assert!(kept > run(&raw.text()));
    let escaped = run(&get(&mut conn, "/dyn/lang", "Accept-Language: %E9\r\n"));
    assert!(escaped > kept, "`%E9` answered as the byte 0xE9");
}

/// A GET that read the resource before a POST changed it, and ends after
/// the POST, is not kept: the client that wrote reads its write back at
/// once (RFC 9111 §4.4), not what the slow GET read before it.
#[test]
fn an_answer_older_than_a_change_made_while_it_ran_is_not_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::TempDir::new("cache-race");
    let data = dir.write("www/data.txt", "old");
    let program = dir.write(
        "www/item.cgi",
        format!(
            "#!/bin/sh\n\
             if [ \"$REQUEST_METHOD\" = POST ]; then cat > '{data}'; printf 'Content-Type: text/plain\\n\\nsaved\\n'; exit; fi\n\
             value=$(cat '{data}')\nsleep 1\nprintf 'Content-Type: text/plain\\n\\nvalue=%s\\n' \"$value\"\n",
            data = data.display()
        ),
    );
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = common::write_config(
        &dir,
        &dir.path().join("www"),
        r#"
[[modules]]
name = "OutputCache"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[output_cache]
policy = "CacheForTimePeriod"
duration = 60
frequent_hit_threshold = 1
"#,
    );
    let server = common::RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut slow = Connection::open(server.addr);
    slow.send_raw(b"GET /item.cgi HTTP/1.1\r\nHost: test\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let mut writer = Connection::open(server.addr);
    writer.send_raw(b"POST /item.cgi HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nnew");
    assert_eq!(writer.read_response(false).text(), "saved\n");
    assert_eq!(slow.read_response(false).text(), "value=old\n");
    // (`get` asks for host `test` too: the same entry.)
    let after = Connection::open(server.addr).get("/item.cgi");
    assert_eq!(after.text(), "value=new\n");
    assert_eq!(after.header("age"), None);
}

/// What a key cannot hold keeps a request from the cache: a GET's content
/// (the gateways pass it on, and PHP's `php://input` reads it), a
/// parameter name PHP cuts at a NUL (`id%00x` is its `id`), and the
/// parameters past the thousand PHP and ASP.NET read (`?a&…&id=8` has no
/// `id` for them). Each would otherwise store an answer that `?id=1` or
/// `?id=8` alone then gets.
#[test]
fn what_the_key_cannot_hold_is_neither_kept_nor_answered() {
    let server = InProcessServer::start(CONFIG, TEST_MODULES);
    let mut conn = Connection::open(server.addr);
    let with_body = "Content-Length: 4\r\n\r\nEVIL";
    let head = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
    for _ in 0..3 {
        conn.send_raw(format!("{}{with_body}", head("/dyn/body")).as_bytes());
        assert_eq!(conn.read_response(false).status, 200);
    }
    let plain = run(&get(&mut conn, "/dyn/body", ""));
    assert_eq!(plain, 4, "a GET with content was answered from the cache");
    // The content's requests stored nothing either: the plain GET's entry
    // needs two runs of its own.
    assert_eq!(run(&get(&mut conn, "/dyn/body", "")), 5);
    assert_eq!(run(&get(&mut conn, "/dyn/body", "")), 5);

    let nul = "/dyn/named/n?id=1&id%00x=EVIL";
    let first = run(&get(&mut conn, nul, ""));
    assert_eq!(run(&get(&mut conn, nul, "")), first + 1);
    assert_eq!(run(&get(&mut conn, nul, "")), first + 1, "kept");
    assert_eq!(
        run(&get(&mut conn, "/dyn/named/n?id=1", "")),
        first + 2,
        "?id=1 got the answer of a request whose PHP `id` was another"
    );

    // Empty parameters are none to PHP: `?id=1&&…` is `?id=1`, answered
    // from its entry (a client cannot make every request run the handler).
    let kept = run(&get(&mut conn, "/dyn/named/n?id=1", ""));
    assert_eq!(
        run(&get(
            &mut conn,
            &format!("/dyn/named/n?id=1{}", "&".repeat(1200)),
            ""
        )),
        kept
    );

    let many = format!("/dyn/named/m?{}id=8", "a&".repeat(1000));
    for _ in 0..3 {
        get(&mut conn, &many, "");
    }
    assert_eq!(
        run(&get(&mut conn, "/dyn/named/m?id=8", "")),
        4,
        "?id=8 got the answer of a request whose handler read no `id`"
    );
    server.stop();
}
