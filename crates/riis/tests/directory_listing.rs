//! `DirectoryListing` over real sockets: 403.14 when off, HTML and JSON
//! listings with escaping, order, hidden entries, location scoping.

mod common;

use common::{Connection, RunningBinary, TempDir};

const MODULES: &str = r#"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "DirectoryListing"
[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument", "DirectoryListing"]
"#;

const SITE: &str = r#"
[[sites.locations]]
path = "/files"
directory_listing = { enabled = true }

[[sites.locations]]
path = "/files/c"
directory_listing = { enabled = false }

[[sites.locations]]
path = "/json"
directory_listing = { enabled = true, format = "json", show_hidden = true }

[[sites.locations]]
path = "/docs"
default_document = { files = [".index.html", "index.htm"] }

# Folder handlers without StaticFile: the courtesy redirect is theirs.
[[sites.locations]]
path = "/folders"
directory_listing = { enabled = true }
[[sites.locations.handlers]]
name = "Folders"
resource_type = "Directory"
modules = ["DefaultDocument", "DirectoryListing"]
[[sites.locations.handlers]]
name = "Files"
resource_type = "File"
modules = ["StaticFile"]

[[sites.locations]]
path = "/listed"
directory_listing = { enabled = true }
[[sites.locations.handlers]]
name = "Listed"
resource_type = "Directory"
modules = ["DirectoryListing"]
"#;

/// The awkward name: HTML specials and both quotes.
const WEIRD: &str = "<b>&\"'.txt";

fn populate(dir: &TempDir, base: &str) {
    dir.write(&format!("{base}/a.txt"), "alpha");
    dir.write(&format!("{base}/Zeta.txt"), "zz");
    dir.write(&format!("{base}/{WEIRD}"), "w");
    dir.write(&format!("{base}/ünï.txt"), "u");
    dir.write(&format!("{base}/.hidden"), "h");
    dir.write(&format!("{base}/.git/config"), "g");
    dir.write(&format!("{base}/riis.toml"), "# not for listing");
    dir.write(&format!("{base}/b dir/x.txt"), "x");
    std::fs::create_dir_all(dir.path().join(base).join("c")).unwrap();
}

fn site() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("listing");
    let root = dir.path().join("www");
    dir.write("www/top.txt", "top");
    dir.write("www/sub/index.html", "sub home");
    dir.write("www/docs/.index.html", "hidden home");
    dir.write("www/docs/index.htm", "docs home");
    dir.write("www/folders/d/index.html", "folder home");
    dir.write("www/listed/d/e.txt", "e");
    dir.write("www/files/bin/secret.txt", "not for listing");
    populate(&dir, "www/files");
    populate(&dir, "www/json");
    let config = dir.write(
        "riis.toml",
        format!(
            "{MODULES}\n[[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{SITE}",
            root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

#[test]
fn statuses_by_url() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    // (path, status, body contains)
    let cases: &[(&str, u16, Option<&str>)] = &[
        // Listing off at the site (the default): 403.14.
        ("/", 403, None),
        // A default document wins over the listing.
        ("/sub/", 200, Some("sub home")),
        // The same folder written with a dot segment: the document found
        // by its decoded path.
        ("/sub/.", 200, Some("sub home")),
        ("/sub/%2e", 200, Some("sub home")),
        // StaticFile redirects the slash-less directory URL first.
        ("/files", 301, None),
        ("/files/", 200, Some("a.txt")),
        // Files are still files.
        ("/files/a.txt", 200, Some("alpha")),
        // A location inside an enabled one turns it off again.
        ("/files/c/", 403, None),
        // Enabled, but nothing there.
        ("/files/nope/", 404, None),
        ("/json/c/", 200, Some("\"entries\":[]")),
        // A folder RequestFiltering hides is not listed, whether or not
        // RequestFiltering runs (it does not here).
        ("/files/bin/", 404, None),
        ("/files/.git/", 404, None),
        // Handlers of folder modules alone add the slash themselves.
        ("/folders/d", 301, None),
        ("/folders/d/", 200, Some("folder home")),
        ("/listed/d", 301, None),
        ("/listed/d/", 200, Some("e.txt")),
    ];
    for &(path, status, contains) in cases {
        let resp = conn.get(path);
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
        if status == 301 {
            assert_eq!(resp.header("location"), Some(format!("{path}/").as_str()));
        }
        if let Some(needle) = contains {
            assert!(resp.text().contains(needle), "{path}: {}", resp.text());
        }
        if status >= 400 {
            assert!(!resp.text().contains("a.txt"), "{path} leaked a listing");
            assert!(
                !resp.text().contains("secret.txt"),
                "{path} leaked a listing"
            );
            assert!(!resp.text().contains("config"), "{path} leaked a listing");
        }
    }
}

#[test]
fn html_listing_escapes_sorts_and_hides() {
    let (_dir, server) = site();
    let resp = Connection::open(server.addr).get("/files/");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = resp.text();
    // The name is escaped in text and percent-encoded in the link.
    assert!(
        html.contains("<a href=\"/files/%3Cb%3E%26%22%27.txt\">&lt;b&gt;&amp;&quot;&#39;.txt</a>"),
        "{html}"
    );
    assert!(!html.contains("<b>"), "unescaped name: {html}");
    // Directories first, then files, by name without regard to case.
    let order = [
        "href=\"/files/b%20dir/\"",
        "href=\"/files/c/\"",
        "href=\"/files/%3Cb%3E%26%22%27.txt\"",
        "href=\"/files/a.txt\"",
        "href=\"/files/Zeta.txt\"",
        "href=\"/files/%C3%BCn%C3%AF.txt\"",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|needle| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing: {html}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{html}");
    assert!(html.contains(">ünï.txt</a>"), "{html}");
    // Sizes and HTTP dates.
    assert!(html.contains("a.txt</a></td><td>5</td><td>"), "{html}");
    assert!(html.contains(" GMT</td>"), "{html}");
    assert!(html.contains("[To Parent Directory]"), "{html}");
    // Hidden entries are not listed by default.
    assert!(!html.contains(".hidden"), "{html}");
    assert!(!html.contains(".git"), "{html}");
    // Nor what request filtering hides (its default hidden segments).
    assert!(!html.contains("riis.toml"), "{html}");
}

#[test]
fn head_gets_the_length_without_the_listing() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"HEAD /files/ HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = conn.read_response(true);
    assert_eq!(resp.status, 200);
    let len: usize = resp.header("content-length").unwrap().parse().unwrap();
    assert!(len > 0);
    // No stray body: the next response on the connection parses.
    assert_eq!(conn.get("/files/a.txt").text(), "alpha");
}

/// A listing has no validators, but the request's preconditions still
/// apply to it (RFC 9110 §13.2.1): a tag it cannot have fails `If-Match`,
/// and `If-None-Match: *` matches it.
#[test]
fn preconditions_apply_to_a_listing() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    for (header, status) in [
        ("If-Match: \"x\"", 412),
        ("If-Match: *", 200),
        ("If-None-Match: *", 304),
        ("If-None-Match: \"x\"", 200),
    ] {
        conn.send_raw(format!("GET /files/ HTTP/1.1\r\nHost: t\r\n{header}\r\n\r\n").as_bytes());
        let resp = conn.read_response(status == 304);
        assert_eq!(resp.status, status, "{header}");
        if status == 304 {
            // What the 200 would carry for caches (RFC 9110 §15.4.5).
            assert_eq!(resp.header("cache-control"), Some("no-cache"));
        }
    }
    // A folder that does not exist is a 404 whatever the preconditions.
    conn.send_raw(b"GET /nowhere/ HTTP/1.1\r\nHost: t\r\nIf-Match: \"x\"\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 404);
}

#[test]
fn json_listing_parses_and_shows_hidden_entries() {
    let (_dir, server) = site();
    let resp = Connection::open(server.addr).get("/json/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&resp.body).expect("valid JSON");
    assert_eq!(doc["path"], "/json/");
    let entries = doc["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // `show_hidden` lists dot names, but not those request filtering
    // answers 404.8 for (`.git`, `riis.toml`).
    assert_eq!(
        names,
        [
            "b dir",
            "c",
            ".hidden",
            WEIRD,
            "a.txt",
            "Zeta.txt",
            "ünï.txt"
        ]
    );
    let expected: &[(&str, &str, Option<u64>, &str)] = &[
        ("b dir", "directory", None, "/json/b%20dir/"),
        (WEIRD, "file", Some(1), "/json/%3Cb%3E%26%22%27.txt"),
        ("a.txt", "file", Some(5), "/json/a.txt"),
        ("ünï.txt", "file", Some(1), "/json/%C3%BCn%C3%AF.txt"),
    ];
    for &(name, kind, size, url) in expected {
        let e = entries.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(e["type"], kind, "{name}");
        assert_eq!(e["size"].as_u64(), size, "{name}");
        assert_eq!(e["url"], url, "{name}");
        let modified = e["modified"].as_str().unwrap();
        // RFC 3339 in UTC: 2024-01-02T03:04:05Z.
        assert_eq!(modified.len(), 20, "{modified}");
        assert_eq!(&modified[4..5], "-");
        assert_eq!(&modified[10..11], "T");
        assert!(modified.ends_with('Z'), "{modified}");
    }
}

/// A listing shows nothing from outside the site's folder: links that lead
/// out are left out, and a folder reached through one is not listed; links
/// that stay inside are listed as what they point to.
#[test]
fn links_out_of_the_site_are_not_listed() {
    let (dir, server) = site();
    let outside = TempDir::new("listing-outside");
    outside.write("secret.txt", "secret");
    let files = dir.path().join("www/files");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), files.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), files.join("outdir")).unwrap();
    std::os::unix::fs::symlink(files.join("a.txt"), files.join("in.txt")).unwrap();
    let html = Connection::open(server.addr).get("/files/").text();
    assert!(!html.contains("out.txt"), "{html}");
    assert!(!html.contains("outdir"), "{html}");
    assert!(html.contains("href=\"/files/in.txt\""), "{html}");
    let resp = Connection::open(server.addr).get("/files/outdir/");
    assert_eq!(resp.status, 404);
    assert!(!resp.text().contains("secret"));
}

/// A default document StaticFile would refuse as hidden is passed over for
/// the next name; names that are paths are configuration errors.
#[test]
fn default_documents_pass_over_hidden_names_and_must_be_names() {
    let (dir, server) = site();
    let resp = Connection::open(server.addr).get("/docs/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "docs home");

    for bad in ["/etc/hostname", "../secret.txt", ""] {
        let config = dir.write(
            "bad.toml",
            format!(
                "{MODULES}\n[default_document]\nfiles = [\"{bad}\"]\n[[sites]]\nname = \"T\"\n\
                 root = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
                dir.path().join("www").display()
            ),
        );
        let out = common::riis_command("check-config", &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?}");
        assert!(
            err.contains("key `default_document.files`"),
            "{bad:?}: {err}"
        );
        assert!(err.contains("is not a file name"), "{bad:?}: {err}");
    }
}
