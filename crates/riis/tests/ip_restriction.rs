//! IpRestriction over real sockets: address rules per location (403.503,
//! the first rule that contains the address deciding, `allow_unlisted`),
//! the other deny actions, `X-Forwarded-For` in proxy mode, a rewrite that
//! cannot lead past a location's rules, and the dynamic limits: requests in
//! flight (held by a test module until the test lets them go) and requests
//! per interval, with `logging_only`.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Connection, InProcessServer};
use riis_pipeline::{
    CompletionHandle, HttpContext, HttpModule, ModuleError, ModuleRegistration, RegisterModuleFn,
    RequestNotification as N, RequestNotificationStatus as Status, RequestNotifications,
    ServerInfo,
};

/// The completion handles of the requests `Hold` keeps waiting.
static HELD: Mutex<Vec<CompletionHandle>> = Mutex::new(Vec::new());

/// A handler that answers `held` once the test lets the request go.
struct Hold;
impl HttpModule for Hold {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        ctx.response_mut().write("held");
        HELD.lock().unwrap().push(ctx.completion_handle());
        Status::Pending
    }
}

fn register_hold(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Hold,
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
    )
}

/// Rewrites `/rewrite/...` to `/private/...` in BeginRequest, after
/// IpRestriction (both First, listed after it), as a URL rewriter does.
struct Rewriter;
impl HttpModule for Rewriter {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        let url = ctx.request().url().to_owned();
        if let Some(rest) = url.strip_prefix("/rewrite/") {
            ctx.request_mut()
                .set_url(&format!("/private/{rest}"))
                .unwrap();
        }
        Status::Continue
    }
}

fn register_rewriter(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_request_notifications(
        || Rewriter,
        N::BeginRequest.into(),
        RequestNotifications::NONE,
    )?;
    r.set_priority_for_request_notification(N::BeginRequest, riis_pipeline::Priority::First);
    Ok(())
}

const TEST_MODULES: &[(&str, RegisterModuleFn)] =
    &[("Hold", register_hold), ("Rewriter", register_rewriter)];

const MODULES: &str = r#"
[[modules]]
name = "IpRestriction"
[[modules]]
name = "Rewriter"
[[modules]]
name = "CustomError"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "Hold"

[[handlers]]
name = "Hold"
path = "/held/*"
modules = ["Hold"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]
"#;

fn start(site: &str) -> InProcessServer {
    let text = format!(
        "{MODULES}\n[[sites]]\nname = \"s\"\nroot = 'ROOT'\nbindings = [\"127.0.0.1:0\"]\n{site}"
    );
    let server = InProcessServer::start(&text, TEST_MODULES);
    for path in [
        "a.txt",
        "private/a.txt",
        "listed/a.txt",
        "proxied/a.txt",
        "gone/a.txt",
        "secret/index.html",
    ] {
        let file = server.dir().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "alpha").unwrap();
    }
    server
}

#[test]
fn address_rules_apply_per_location() {
    let server = start(
        r#"
[[sites.locations]]
path = "/private"
ip_security = { rules = [{ address = "127.0.0.0/8", allowed = false }] }

[[sites.locations]]
path = "/listed"
ip_security = { allow_unlisted = false, rules = [
    { address = "127.0.0.1", allowed = true },
    { address = "127.0.0.0", subnet_mask = "255.0.0.0", allowed = false },
] }

[[sites.locations]]
path = "/gone"
ip_security = { deny_action = "NotFound", rules = [{ address = "::/0" }, { address = "0.0.0.0/0" }] }

[[sites.locations]]
path = "/secret/index.html"
ip_security = { rules = [{ address = "::ffff:127.0.0.0/104" }] }

[[sites.locations]]
path = "/proxied"
ip_security = { proxy_mode = true, rules = [{ address = "203.0.113.0/24", allowed = false }] }
"#,
    );
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/a.txt").status, 200);
    let denied = conn.get("/private/a.txt");
    assert_eq!(denied.status, 403);
    // CustomError's detailed page (a local client) names the substatus.
    assert!(denied.text().contains("403.503"), "{}", denied.text());
    assert!(denied.text().contains("IpRestriction"), "{}", denied.text());
    // The first rule containing 127.0.0.1 allows it.
    assert_eq!(conn.get("/listed/a.txt").status, 200);
    let gone = conn.get("/gone/a.txt");
    assert_eq!(gone.status, 404);
    assert!(gone.text().contains("404.503"), "{}", gone.text());

    // The default document's child request is checked in its own
    // location; the rule written IPv4-mapped matches the IPv4 client.
    assert_eq!(conn.get("/secret/index.html").status, 403);
    assert_eq!(conn.get("/secret/").status, 403);

    // A rewrite into /private is checked against /private's rules.
    assert_eq!(conn.get("/rewrite/a.txt").status, 403);

    // Proxy mode: any denied address in X-Forwarded-For denies.
    assert_eq!(conn.get("/proxied/a.txt").status, 200);
    for forwarded in [
        "203.0.113.9",
        "198.51.100.1, 203.0.113.9",
        "203.0.113.9:4711",
        "unknown, 203.0.113.200",
        // Spaces separate entries too, as for ForwardedFor (and nginx).
        "203.0.113.9 10.0.0.1",
    ] {
        conn.send_raw(
            format!(
                "GET /proxied/a.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(conn.read_response(false).status, 403, "{forwarded}");
    }
    // An entry that is not text hides no other (a proxy appends the real
    // address to the client's own header).
    conn.send_raw(
        b"GET /proxied/a.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: \xff, 203.0.113.9\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 403);
    conn.send_raw(
        b"GET /proxied/a.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.1, unknown, [2001:db8::1]\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 200);
    // Outside proxy mode the header is not looked at.
    conn.send_raw(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 200);
    server.stop();
}

#[test]
fn abort_request_resets_the_connection_without_a_response() {
    let server = start(
        r#"
[[sites.locations]]
path = "/private"
ip_security = { deny_action = "AbortRequest", rules = [{ address = "127.0.0.1" }] }
"#,
    );
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /private/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(conn.is_closed_or_reset());
    // The server goes on.
    assert_eq!(Connection::open(server.addr).get("/a.txt").status, 200);
    server.stop();
}

/// Waits until `n` requests are held.
fn wait_held(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while HELD.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "requests never reached the handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn release_all() {
    for handle in HELD.lock().unwrap().drain(..) {
        handle.indicate_completion(Status::Continue);
    }
}

#[test]
fn dynamic_limits_count_requests_in_flight_and_per_interval() {
    let server = start(
        r#"
dynamic_ip_security = { deny_by_concurrent_requests = { enabled = true, max_concurrent_requests = 2 } }

[[sites.locations]]
path = "/rated"
dynamic_ip_security = { deny_by_request_rate = { enabled = true, max_requests = 3, request_interval_ms = 600000 } }

[[sites.locations]]
path = "/watched"
dynamic_ip_security = { logging_only = true, deny_by_request_rate = { enabled = true, max_requests = 1, request_interval_ms = 600000 } }
"#,
    );
    // Two requests held in flight; a third from the same address is refused.
    let mut first = Connection::open(server.addr);
    let mut second = Connection::open(server.addr);
    first.send_raw(b"GET /held/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    second.send_raw(b"GET /held/2 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_held(2);
    let refused = Connection::open(server.addr).get("/a.txt");
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("403.501"), "{}", refused.text());
    // Let them go: both answer, and the count is back to none.
    release_all();
    assert_eq!(first.read_response(false).text(), "held");
    assert_eq!(second.read_response(false).text(), "held");
    // The count drops when each request's instance is disposed, just after
    // its response: wait for that instead of racing it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = Connection::open(server.addr);
    loop {
        let status = conn.get("/a.txt").status;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Three in the interval, then 403.502 for the rest of it.
    for _ in 0..3 {
        assert_eq!(conn.get("/rated/a.txt").status, 404);
    }
    let over = conn.get("/rated/a.txt");
    assert_eq!(over.status, 403);
    assert!(over.text().contains("403.502"), "{}", over.text());

    // logging_only: over the rate, and let through.
    for _ in 0..3 {
        assert_eq!(conn.get("/watched/a.txt").status, 404);
    }
    server.stop();
}

/// Behind a proxy, a client is counted under the entry the nearest proxy
/// wrote last in `X-Forwarded-For`; when that entry is no address, under
/// the proxy's own: never under an earlier entry, which the client may
/// have written (and could change at every request to dodge the limit).
#[test]
fn rates_behind_a_proxy_count_what_the_nearest_proxy_wrote() {
    // A site id of its own: counts are per site and client, and the other
    // tests' servers count 127.0.0.1 under site 1.
    let server = start(
        r#"id = 77

[[sites.locations]]
path = "/behind"
dynamic_ip_security = { proxy_mode = true, deny_by_request_rate = { enabled = true, max_requests = 2, request_interval_ms = 600000 } }
"#,
    );
    let get = |forwarded: &str| {
        let mut conn = Connection::open(server.addr);
        conn.send_raw(
            format!(
                "GET /behind/a.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
            )
            .as_bytes(),
        );
        conn.read_response(false)
    };
    // A client-written address before the proxy's `unknown`, new each time.
    assert_eq!(get("198.51.100.1, unknown").status, 404);
    assert_eq!(get("198.51.100.2, unknown").status, 404);
    let over = get("198.51.100.3, unknown");
    assert_eq!(over.status, 403, "{}", over.text());
    assert!(over.text().contains("403.502"), "{}", over.text());
    // An address the proxy wrote is a client of its own.
    assert_eq!(get("unknown, 203.0.113.7").status, 404);
    server.stop();
}
