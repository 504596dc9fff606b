//! `HttpRedirection` over real sockets: path and query carried over, exact
//! destinations, child_only, each status, location scoping, loop guard, and
//! invalid statuses refused by `riis check-config`.

mod common;

use std::process::Command;

use common::{Connection, RunningBinary, TempDir};

const MODULES: &str = r#"
[[modules]]
name = "HttpRedirection"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]
"#;

const LOCATIONS: &str = r#"
[[sites.locations]]
path = "/old"
http_redirect = { enabled = true, destination = "https://new.example/new" }

[[sites.locations]]
path = "/old/keep"
http_redirect = { enabled = false }

[[sites.locations]]
path = "/perm/"
http_redirect = { enabled = true, destination = "/target", status = 301 }

[[sites.locations]]
path = "/temp"
http_redirect = { enabled = true, destination = "/target/", status = 307 }

[[sites.locations]]
path = "/pr"
http_redirect = { enabled = true, destination = "/target", status = 308 }

[[sites.locations]]
path = "/named"
http_redirect = { enabled = true, destination = "/target", status = "Permanent" }

[[sites.locations]]
path = "/exact"
http_redirect = { enabled = true, destination = "/landing", exact_destination = true }

[[sites.locations]]
path = "/exactq"
http_redirect = { enabled = true, destination = "/landing?from=exact", exact_destination = true }

[[sites.locations]]
path = "/withq"
http_redirect = { enabled = true, destination = "/target?k=v" }

[[sites.locations]]
path = "/child"
http_redirect = { enabled = true, destination = "/elsewhere", child_only = true }

[[sites.locations]]
path = "/app"
http_redirect = { enabled = true, destination = "/app/v2" }

[[sites.locations]]
path = "/spaced"
http_redirect = { enabled = true, destination = "/spaced/new%20home", exact_destination = true }

[[sites.locations]]
path = "/home"
http_redirect = { enabled = true, destination = "/" }

[[sites.locations]]
path = "/shop"
http_redirect = { enabled = true, destination = "/shop/", exact_destination = true, child_only = true }

[[sites.locations]]
path = "/twice"
http_redirect = { enabled = true, destination = "/twice//v2" }

[[sites.locations]]
path = "/moved"
http_redirect = { enabled = true, destination = "https://new.example$S$Q", exact_destination = true }

[[sites.locations]]
path = "/frag"
http_redirect = { enabled = true, destination = "/doc#top" }

[[sites.locations]]
path = "/my docs"
http_redirect = { enabled = true, destination = "/docs" }
"#;

fn config_text(root: &std::path::Path, locations: &str) -> String {
    format!(
        "{MODULES}\n[[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{locations}",
        root.display()
    )
}

/// Asks for each path: (path, status, the `Location` of a redirect or the
/// body of a 200). A redirect carries IIS's "Object moved" note, but for
/// a folder's own 301 (DefaultDocument's, at `/child`).
fn check_cases(conn: &mut Connection, cases: &[(&str, u16, &str)]) {
    for &(path, status, expected) in cases {
        let resp = conn.get(path);
        assert_eq!(resp.status, status, "{path}");
        if (301..=308).contains(&status) {
            assert_eq!(resp.header("location"), Some(expected), "{path}");
            if status != 301 || path != "/child" {
                assert!(resp.text().contains("Object moved"), "{path}");
            }
        } else if status == 200 {
            assert_eq!(resp.text(), expected, "{path}");
        }
    }
}

#[test]
fn redirect_rules() {
    let dir = TempDir::new("redirect");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    dir.write("www/child/index.html", "child home");
    dir.write("www/old/keep/k.txt", "kept");
    let config = dir.write("riis.toml", config_text(&root, LOCATIONS));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    // (request, status, Location, or the body when not redirected)
    let cases: &[(&str, u16, &str)] = &[
        // The path below the location and the query string are carried over.
        (
            "/old/a/b.html?x=1&y=2",
            302,
            "https://new.example/new/a/b.html?x=1&y=2",
        ),
        ("/old", 302, "https://new.example/new"),
        ("/old/", 302, "https://new.example/new/"),
        ("/old/a%20b.txt", 302, "https://new.example/new/a%20b.txt"),
        // Raw UTF-8 in the request line goes out percent-encoded: a
        // Location is ASCII.
        ("/old/é?q=é", 302, "https://new.example/new/%C3%A9?q=%C3%A9"),
        // Locations match at segment boundaries.
        ("/oldish/x", 404, ""),
        // A nested location turns the rule off.
        ("/old/keep/k.txt", 200, "kept"),
        // Each status; a trailing `/` on a location or destination is no matter.
        ("/perm/p?q", 301, "/target/p?q"),
        ("/temp/p", 307, "/target/p"),
        ("/pr/p", 308, "/target/p"),
        ("/named/p", 301, "/target/p"),
        // Exact destinations drop the path; the query is kept unless the
        // destination has its own.
        ("/exact/deep/x?q=1", 302, "/landing?q=1"),
        ("/exact", 302, "/landing"),
        ("/exactq/deep?q=1", 302, "/landing?from=exact"),
        // A destination query is joined with the request's.
        ("/withq/p?x=1", 302, "/target/p?k=v&x=1"),
        ("/withq/p", 302, "/target/p?k=v"),
        // child_only: the location itself is served (its default document,
        // through a child request that is not redirected either), and so
        // are its subfolders; only the content directly in it moves.
        ("/child/", 200, "child home"),
        ("/child", 301, "/child/"),
        ("/child/x?z=9", 302, "/elsewhere/x?z=9"),
        ("/child/sub/x", 404, ""),
        // IIS's variables: the path below the location and the query,
        // each once.
        ("/moved/a/b%20c?q=1", 302, "https://new.example/a/b%20c?q=1"),
        ("/moved/a", 302, "https://new.example/a"),
        // A destination inside the location does not redirect itself.
        ("/app/x", 302, "/app/v2/x"),
        ("/app/v2/x", 404, ""),
        // ... also when it is written with escapes (the request's URL is
        // compared decoded).
        ("/spaced/x", 302, "/spaced/new%20home"),
        ("/spaced/new%20home", 404, ""),
        // Never a protocol-relative Location, whatever the path holds.
        ("/home/a", 302, "/a"),
        ("/home//evil.example", 302, "/evil.example"),
        // An exact destination inside the location: every page directly in
        // it goes to it; the destination itself and subfolders stay.
        ("/shop/item", 302, "/shop/"),
        ("/shop/item/42", 404, ""),
        ("/shop/", 404, ""),
        // A destination written with `//` is compared normalized, as the
        // request is: no endless redirect.
        ("/twice/x", 302, "/twice//v2/x"),
        ("/twice/v2/x", 404, ""),
        // The destination's fragment stays last; the request's escaping of
        // the carried path is kept (`%3B` is not a `;` parameter).
        ("/frag/a?x=1", 302, "/doc/a?x=1#top"),
        ("/old/a%3Bb%2Bc", 302, "https://new.example/new/a%3Bb%2Bc"),
        ("/my%20docs/a%3Bb", 302, "/docs/a%3Bb"),
        // Outside every rule.
        ("/a.txt", 200, "alpha"),
    ];
    check_cases(&mut conn, cases);

    // Other methods are redirected too; 307 and 308 keep them.
    conn.send_raw(b"POST /temp/form HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 307);
    assert_eq!(resp.header("location"), Some("/target/form"));
}

/// IIS's wildcard rules, matched against the request's whole URL: the
/// site's send `*.asp` to `*.aspx` (one rule sends its URLs to themselves,
/// which is no redirect), in every location that inherits them;
/// `/legacy`'s replace them with their own.
const WILDCARDS: &str = r#"
http_redirect = { enabled = true, exact_destination = true, wildcards = [
    { wildcard = "/*.asp", destination = "/$0.aspx" },
    { wildcard = "/*.txt", destination = "/$0.txt" },
    { wildcard = "/go*", destination = "https://new.example$0" },
] }

[[sites.locations]]
path = "/plain"
static_file = { max_age = 60 }

[[sites.locations]]
path = "/legacy"

[sites.locations.http_redirect]
status = "Permanent"
wildcards = [
    { wildcard = "/legacy/old.html", destination = "/legacy/index.html" },
    { wildcard = "/legacy/*.asp", destination = "/legacy/new/$0.aspx" },
    { wildcard = "/legacy/docs/*", destination = "https://docs.example/$0" },
    { wildcard = "/legacy/find/*/*", destination = "/search?q=$1&in=$0" },
]

[[sites.locations]]
path = "/docs"
http_redirect = { wildcards = [{ wildcard = "/docs/*.htm", destination = "/docs/$0.html" }] }

[[sites.locations]]
path = "/loop"
http_redirect = { wildcards = [
    { wildcard = "/loop/a/*", destination = "/loop/b/$0" },
    { wildcard = "/loop/b/*", destination = "/loop/a/$0" },
    { wildcard = "/loop/grow/*", destination = "/loop/grow/x-$0" },
] }
"#;

#[test]
fn wildcard_rules() {
    let dir = TempDir::new("redirect-wildcards");
    let root = dir.path().join("www");
    dir.write("www/a.txt", "alpha");
    dir.write("www/legacy/page.html", "new page");
    let config = dir.write("riis.toml", config_text(&root, WILDCARDS));
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let cases: &[(&str, u16, &str)] = &[
        // The site's rules: what `*` stood for goes where `$0` is; the
        // query is kept (the destination has none).
        ("/shop/cart.asp?id=3", 302, "/shop/cart.aspx?id=3"),
        ("/shop/CART.ASP", 302, "/shop/CART.aspx"),
        ("/shop/cart.aspx", 404, ""),
        // A location that only inherits them: the same URL, the same
        // redirect.
        ("/plain/cart.asp", 302, "/plain/cart.aspx"),
        // A rule that sends a URL to itself does not redirect it.
        ("/a.txt", 200, "alpha"),
        // Right after the host, what `*` stood for starts the path: the
        // client cannot add to the host.
        ("/go.evil.example", 302, "https://new.example/.evil.example"),
        ("/go@evil.example", 302, "https://new.example/@evil.example"),
        ("/go/a", 302, "https://new.example/a"),
        // The location's rules replace the site's, first match wins, with
        // the location's status and the site's exact_destination.
        ("/legacy/old.html", 301, "/legacy/index.html"),
        ("/legacy/OLD.html", 301, "/legacy/index.html"),
        ("/legacy/shop/cart.asp", 301, "/legacy/new/shop/cart.aspx"),
        ("/legacy/docs/a%20b/c", 301, "https://docs.example/a%20b/c"),
        (
            "/legacy/find/books/rust%26c",
            301,
            "/search?q=rust%26c&in=books",
        ),
        // No rule matches: served.
        ("/legacy/page.html", 200, "new page"),
        ("/legacy/other.html", 404, ""),
        // A rule whose destination is in its own folder.
        ("/docs/a.htm", 302, "/docs/a.html"),
        // Redirects that would lead back, or on for ever, are not made.
        ("/loop/a/x", 404, ""),
        ("/loop/grow/x", 404, ""),
    ];
    check_cases(&mut conn, cases);
}

fn check_config(dir: &TempDir, name: &str, text: &str) -> (bool, String) {
    let path = dir.write(name, text);
    let out = Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_bad_statuses_and_destinations() {
    let dir = TempDir::new("redirect-check");
    let (ok, err) = check_config(&dir, "good.toml", &config_text(dir.path(), LOCATIONS));
    assert!(ok, "{err}");

    // The location block starts on the line after the site; the section is
    // its second line.
    let site_lines = config_text(dir.path(), "").lines().count();
    let cases: &[(&str, &str, &str)] = &[
        (
            "http_redirect = { enabled = true, destination = \"/x\", status = 303 }",
            "http_redirect.status",
            "`303` is not a redirect status",
        ),
        (
            "http_redirect = { destination = \"/x\", status = \"SeeOther\" }",
            "http_redirect.status",
            "`SeeOther` is not a redirect status",
        ),
        (
            "http_redirect = { destination = \"relative/x\" }",
            "http_redirect.destination",
            "not an absolute URL",
        ),
        (
            "http_redirect = { destinaton = \"/x\" }",
            "http_redirect.destinaton",
            "unknown field",
        ),
        // Protocol-relative: another host to a browser, a local path here.
        (
            "http_redirect = { destination = \"//cdn.example/assets\" }",
            "http_redirect.destination",
            "without its scheme: write it out (`https://cdn.example/assets`)",
        ),
        (
            "http_redirect = { destination = '/\\cdn.example/assets' }",
            "http_redirect.destination",
            "without its scheme",
        ),
        // IIS reads no wildcard rule while a destination is set.
        (
            "http_redirect = { destination = \"/x\", wildcards = [{ wildcard = \"*\", destination = \"/y\" }] }",
            "http_redirect",
            "the destination takes every request and the rules are never read",
        ),
        (
            "http_redirect = { wildcards = [{ wildcard = \"*.asp\", destination = \"/$1.aspx\" }] }",
            "http_redirect.wildcards[0]",
            "uses `$1`, but the wildcard `*.asp` has 1 `*`",
        ),
        (
            "http_redirect = { wildcards = [{ wildcard = \"*.asp?x\", destination = \"/\" }] }",
            "http_redirect.wildcards[0].wildcard",
            "cannot match a path",
        ),
        (
            "http_redirect = { wildcards = [{ wildcard = \"/sub/*\", destination = \"https://$0.example.com/\" }] }",
            "http_redirect.wildcards[0]",
            "would let a client choose the host",
        ),
    ];
    for (i, &(section, key, message)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let text = config_text(
            dir.path(),
            &format!("[[sites.locations]]\npath = \"/r\"\n{section}\n"),
        );
        let (ok, err) = check_config(&dir, &name, &text);
        assert!(!ok, "{section} was accepted");
        let line = site_lines + 3;
        assert!(
            err.contains(&format!("{name}:{line}: key `sites[0].locations[0].{key}`")),
            "{section}: {err}"
        );
        assert!(err.contains(message), "{section}: {err}");
    }
}
