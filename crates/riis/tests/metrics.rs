//! Metrics over real sockets: requests counted by site and status code,
//! the duration histogram and byte counts against what the client did; the
//! page in the Prometheus text format; the server's and the modules'
//! status figures on it; counts kept across a reload; the page's location
//! restricted like any other.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

const FILE: &str = "twenty-four bytes here\r\n";

/// Metrics first, IpRestriction guarding `/metrics` (local clients only)
/// and `/private` (nobody), StaticFile for the rest.
fn config(dir: &TempDir, site: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write("www/a.txt", FILE);
    dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "Metrics"
[[modules]]
name = "IpRestriction"
[[modules]]
name = "StaticFile"

[[sites]]
name = '{site}'
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/metrics"
ip_security = {{ allow_unlisted = false, rules = [{{ address = "127.0.0.1", allowed = true }}] }}
[[sites.locations.handlers]]
name = "Metrics"
verbs = ["GET", "HEAD"]
modules = ["Metrics"]

[[sites.locations]]
path = "/private"
ip_security = {{ allow_unlisted = false }}
"#,
            root = root.display(),
        ),
    )
}

/// The page's samples by their full name with labels, after checking the
/// text format: every sample's family was declared with `# TYPE` once,
/// before it, and every value is a number.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut declared: Vec<String> = Vec::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(!declared.contains(&name), "{name} declared twice:\n{text}");
            declared.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').unwrap();
        let name = sample.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| declared.iter().any(|d| d == f))
            .unwrap_or(name);
        assert!(
            declared.iter().any(|d| d == family),
            "{name} not declared before its sample:\n{text}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(
            out.insert(sample.to_owned(), value).is_none(),
            "{sample} twice"
        );
    }
    out
}

fn scrape(connection: &mut Connection) -> (common::Response, HashMap<String, f64>) {
    let response = connection.get("/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    let figures = samples(&response.text());
    (response, figures)
}

#[test]
fn requests_are_counted_by_site_and_status() {
    let dir = TempDir::new("metrics-count");
    let config = config(&dir, "Shop \"North\"");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut client = Connection::open(server.addr);
    for _ in 0..3 {
        let r = client.get("/a.txt");
        assert_eq!((r.status, r.text().as_str()), (200, FILE));
    }
    for _ in 0..2 {
        assert_eq!(client.get("/missing.txt").status, 404);
    }
    assert_eq!(client.get("/private/a.txt").status, 403);
    client.send_raw(b"POST /a.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.read_response(false).status, 405);

    let (response, figures) = scrape(&mut client);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    // The site's name is a label value: its quotes are escaped.
    let site = r#"site="Shop \"North\"""#;
    let count = |code: u16| figures.get(&format!("riis_requests_total{{{site},code=\"{code}\"}}"));
    assert_eq!(count(200), Some(&3.0), "{figures:?}");
    assert_eq!(count(404), Some(&2.0));
    assert_eq!(count(403), Some(&1.0));
    assert_eq!(count(405), Some(&1.0));
    // The scrape is counted once its response is sent, not before.
    let requests = figures[&format!("riis_request_duration_seconds_count{{{site}}}")];
    assert_eq!(requests, 7.0);
    assert_eq!(
        figures[&format!("riis_request_duration_seconds_bucket{{{site},le=\"+Inf\"}}")],
        7.0
    );
    // Buckets are cumulative.
    let mut last = 0.0;
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    ] {
        let n = figures[&format!("riis_request_duration_seconds_bucket{{{site},le=\"{le}\"}}")];
        assert!(n >= last, "bucket {le}");
        last = n;
    }
    assert!(figures[&format!("riis_request_duration_seconds_sum{{{site}}}")] > 0.0);
    // Three files, and the error pages' entities.
    let sent = figures[&format!("riis_response_body_bytes_total{{{site}}}")];
    assert!(sent >= 3.0 * FILE.len() as f64, "{sent}");

    let (_, again) = scrape(&mut client);
    assert_eq!(
        again[&format!("riis_requests_total{{{site},code=\"200\"}}")],
        4.0,
        "the first scrape counted"
    );
    let _ = server.terminate();
}

#[test]
fn the_page_carries_the_server_and_module_status_and_process_figures() {
    let dir = TempDir::new("metrics-status");
    let config = config(&dir, "Status");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // Requests refused before any module saw them: by riis's own checks
    // (Content-Length and Transfer-Encoding together), and by hyper's (a
    // field name with a space).
    for bad in [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    ] {
        let mut refused = Connection::open(server.addr);
        refused.send_raw(bad.as_bytes());
        assert_eq!(refused.read_response(false).status, 400, "{bad:?}");
        assert!(refused.is_closed_or_reset());
    }
    let mut client = Connection::open(server.addr);
    assert_eq!(client.get("/a.txt").status, 200);
    // Counted, as no access-log line shows them; a counter by its name.
    // (The one hyper answers is counted when its connection's task ends,
    // which may come just after the client saw the close.)
    let mut scraped = scrape(&mut client);
    common::wait_for("both refusals to be counted", || {
        scraped = scrape(&mut client);
        scraped.1["riis_requests_refused_total"] == 2.0
    });
    let (page, figures) = scraped;
    assert!(page
        .text()
        .contains("# TYPE riis_requests_refused_total counter\n"));
    // The server's own lines, as `riis status` shows them.
    assert!(figures["riis_connections_open"] >= 1.0, "{figures:?}");
    assert!(figures["riis_requests_started"] >= 2.0);
    assert!(figures.contains_key("riis_uptime_seconds"));
    // The scrape itself is answered at once: nothing waits.
    assert_eq!(figures["riis_requests_waiting"], 0.0, "{figures:?}");
    assert_eq!(figures["riis_workers_held"], 0.0, "{figures:?}");
    // IpRestriction answers the status query with its client count.
    assert!(
        figures.contains_key("riis_ip_restriction_clients"),
        "{figures:?}"
    );
    assert!(figures["process_resident_memory_bytes"] > 1e6);
    assert!(figures["process_open_fds"] >= 3.0);
    assert!(figures["process_max_fds"] >= figures["process_open_fds"]);
    assert!(figures["process_cpu_seconds_total"] > 0.0);
    let version = format!(
        "riis_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(figures.get(&version), Some(&1.0));

    // HEAD gets the head alone; another method is not the handler's.
    client.send_raw(b"HEAD /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = client.read_response(true);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 1000, "the page's length: {length}");
    client.send_raw(b"DELETE /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.read_response(false).status, 405);
    let _ = server.terminate();
}

#[test]
fn the_page_is_refused_to_clients_its_location_does_not_allow() {
    let dir = TempDir::new("metrics-refused");
    let config = config(&dir, "Refused");
    // Only 127.0.0.2 may read the page now.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("address = \"127.0.0.1\"", "address = \"127.0.0.2\"");
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut client = Connection::open(server.addr);
    let refused = client.get("/metrics");
    assert_eq!(refused.status, 403);
    assert!(!refused.text().contains("riis_requests_total"));
    let _ = server.terminate();
}

#[test]
fn a_reload_keeps_the_counts() {
    let dir = TempDir::new("metrics-reload");
    let config = config(&dir, "Kept");
    dir.write("www/private/a.txt", FILE);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut client = Connection::open(server.addr);
    for _ in 0..5 {
        assert_eq!(client.get("/a.txt").status, 200);
    }
    assert_eq!(client.get("/private/a.txt").status, 403);
    drop(client);
    wait_for_pid_file(&dir.path().join("riis.pid"));
    // The new configuration lets everyone into /private: a new pipeline
    // with new module instances, and a way to see that it is in force.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("ip_security = { allow_unlisted = false }\n", "");
    std::fs::write(&config, text).unwrap();
    let out = common::riis_command("reload", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = Connection::open(server.addr);
    while client.get("/private/a.txt").status != 200 {
        assert!(Instant::now() < deadline, "the reload was not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, figures) = scrape(&mut client);
    let ok = figures[r#"riis_requests_total{site="Kept",code="200"}"#];
    assert_eq!(ok, 6.0, "{figures:?}");
    assert!(figures[r#"riis_requests_total{site="Kept",code="403"}"#] >= 1.0);
    let _ = server.terminate();
}

fn wait_for_pid_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request counts when its response's delivery ends: an abandoned
/// download counts the bytes that went, not the whole file, and a whole one
/// counts every byte.
#[test]
fn downloads_count_what_went_when_they_end() {
    const SIZE: usize = 32 * 1024 * 1024;
    let dir = TempDir::new("metrics-delivery");
    let config = config(&dir, "Downloads");
    dir.write("www/big.bin", vec![b'x'; SIZE]);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let site = r#"site="Downloads""#;
    let figures_when = |done: &dyn Fn(&HashMap<String, f64>) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, figures) = scrape(&mut Connection::open(server.addr));
            if done(&figures) {
                return figures;
            }
            assert!(Instant::now() < deadline, "never counted: {figures:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let big = |figures: &HashMap<String, f64>| {
        figures
            .get(&format!("riis_requests_total{{{site},code=\"200\"}}"))
            .copied()
            .unwrap_or(0.0)
    };

    // Read a little and leave.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 4096];
    assert!(conn.read_raw(&mut first).unwrap() > 0);
    drop(conn);
    let figures = figures_when(&|f| big(f) >= 1.0);
    let sent = figures[&format!("riis_response_body_bytes_total{{{site}}}")];
    assert!(sent > 0.0 && sent < SIZE as f64, "{sent}");

    // The whole file.
    let resp = Connection::open(server.addr).get("/big.bin");
    assert_eq!((resp.status, resp.body.len()), (200, SIZE));
    // The scrapes before counted as 200s too: wait for the download's.
    let before = big(&figures);
    let figures = figures_when(&|f| {
        f[&format!("riis_response_body_bytes_total{{{site}}}")] >= sent + SIZE as f64
    });
    assert!(big(&figures) > before);
    let _ = server.terminate();
}
