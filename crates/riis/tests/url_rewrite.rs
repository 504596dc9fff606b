//! UrlRewrite over real sockets: a front controller (every URL that is no
//! file or folder goes to `index.cgi`, which sees the URL the client asked
//! for), back-references from the rule and from conditions, redirects,
//! custom responses, aborts, `stop_processing`, rules per location, and
//! configuration errors.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

fn config(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.path().join("www");
    let index = dir.write(
        "www/index.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"uri=$REQUEST_URI script=$SCRIPT_NAME query=$QUERY_STRING\"\n",
    );
    std::fs::create_dir_all(dir.path().join("www/cgidocs")).unwrap();
    std::fs::copy(&index, dir.path().join("www/cgidocs/index.cgi")).unwrap();
    std::fs::set_permissions(
        dir.path().join("www/cgidocs/index.cgi"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dir.write("www/files/100%25.txt", "percent file");
    std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.write("www/static.txt", "a file");
    dir.write("www/new/a.txt", "new a");
    dir.write("www/agents/crawler.txt", "for crawlers");
    dir.write("www/first.txt", "first");
    dir.write("www/second.txt", "second");
    dir.write("www/app/local.txt", "local");
    dir.write("www/docs/index.html", "docs index");
    dir.write(
        "riis.toml",
        format!(
            r#"# Listed after UrlRewrite, RequestFiltering and IpRestriction still judge
# the URL the client asked for (they run at First priority).
[[modules]]
name = "UrlRewrite"
[[modules]]
name = "RequestFiltering"
[[modules]]
name = "IpRestriction"
[[modules]]
name = "CustomError"
[[modules]]
name = "OutputCache"
[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"

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
modules = ["StaticFile", "DefaultDocument"]

[request_filtering]
denied_url_sequences = ["wp-admin"]
allow_double_escaping = true

[output_cache]
policy = "CacheForTimePeriod"
duration = 60

[default_document]
files = ["index.html", "index.cgi"]

[[rewrite.rules]]
name = "trailing slash"
pattern = "^(.+)/$"
conditions = [{{ input = "{{REQUEST_FILENAME}}", match_type = "IsDirectory", negate = true }}]
action = {{ type = "Redirect", url = "{{R:1}}" }}

[[rewrite.rules]]
name = "return to"
pattern = "^login$"
conditions = [{{ input = "{{QUERY_STRING}}", pattern = "^r=(.*)$" }}]
action = {{ type = "Redirect", url = "{{C:1}}", append_query_string = false }}

[[rewrite.rules]]
name = "all captures"
pattern = "^both$"
track_all_captures = true
conditions = [
  {{ input = "{{HTTP_X_A}}", pattern = "^a-(\\w+)$" }},
  {{ input = "{{HTTP_X_B}}", pattern = "^b-(\\w+)-(\\w+)$" }},
]
action = {{ type = "Redirect", url = "/got/{{C:1}}/{{C:2}}/{{C:3}}", append_query_string = false }}

[[rewrite.rules]]
name = "keep the protocol"
pattern = "^www/(.*)$"
conditions = [{{ input = "{{CACHE_URL}}", pattern = "^(https?)://" }}]
action = {{ type = "Redirect", url = "{{C:1}}://www.example.test/{{R:1}}" }}

[[rewrite.rules]]
name = "forwarded protocol"
pattern = "^xfp$"
action = {{ type = "Redirect", url = "{{HTTP_X_FORWARDED_PROTO}}://good.test/", append_query_string = false }}

[[rewrite.rules]]
name = "to https"
pattern = "^hp/"
action = {{ type = "Redirect", url = "https://{{HTTP_HOST}}{{REQUEST_URI}}", append_query_string = false }}

[[rewrite.rules]]
name = "fragment"
pattern = "^frag$"
action = {{ type = "Redirect", url = "/new/page#top" }}

[[rewrite.rules]]
name = "after the host"
pattern = "^host/(.*)$"
action = {{ type = "Redirect", url = "https://example.test{{R:1}}", append_query_string = false }}

[[rewrite.rules]]
name = "chained conditions"
pattern = "^cc/"
conditions = [{{ input = "{{URL}}", pattern = "^/cc/(.*)$" }}, {{ input = "{{C:1}}", pattern = "^(.*)$" }}]
action = {{ type = "Rewrite", url = "files/{{C:1}}" }}

[[rewrite.rules]]
name = "query route"
pattern = "^q/(.*)$"
action = {{ type = "Rewrite", url = "index.cgi?route={{R:1}}", append_query_string = false }}

[[rewrite.rules]]
name = "agent in query"
pattern = "^ua$"
action = {{ type = "Rewrite", url = "index.cgi?ua={{HTTP_USER_AGENT}}" }}

[[rewrite.rules]]
name = "from the URL"
pattern = "^cr/"
conditions = [{{ input = "{{URL}}", pattern = "^/cr/(.*)$" }}]
action = {{ type = "Rewrite", url = "files/{{C:1}}" }}

[[rewrite.rules]]
name = "folder"
pattern = "^folder$"
action = {{ type = "Rewrite", url = "cgidocs/" }}

[[rewrite.rules]]
name = "old to new"
pattern = "^old/(.*)$"
action = {{ type = "Rewrite", url = "new/{{R:1}}" }}

[[rewrite.rules]]
name = "moved"
pattern = "^moved/(.*)$"
action = {{ type = "Redirect", url = "https://{{HTTP_HOST}}/new/{{R:1}}", redirect_type = "Found" }}

[[rewrite.rules]]
name = "secret"
pattern = "^secret"
action = {{ type = "CustomResponse", status_code = 403, sub_status_code = 7, status_reason = "Go Away" }}

[[rewrite.rules]]
name = "evil"
pattern = "^evil"
action = {{ type = "AbortRequest" }}

[[rewrite.rules]]
name = "crawlers"
pattern = "^agent$"
conditions = [{{ input = "{{HTTP_USER_AGENT}}", pattern = "^bot-(\\w+)$" }}]
action = {{ type = "Rewrite", url = "agents/{{C:1}}.txt" }}

[[rewrite.rules]]
name = "stop here"
pattern = "^order$"
stop_processing = true
action = {{ type = "Rewrite", url = "first.txt" }}

[[rewrite.rules]]
name = "never after a stop"
pattern = "^(order|first\\.txt)$"
action = {{ type = "Rewrite", url = "second.txt" }}

[[rewrite.rules]]
name = "front controller"
pattern = "^(.*)$"
conditions = [
    {{ input = "{{REQUEST_FILENAME}}", match_type = "IsFile", negate = true }},
    {{ input = "{{REQUEST_FILENAME}}", match_type = "IsDirectory", negate = true }},
]
action = {{ type = "Rewrite", url = "/index.cgi?route={{R:1}}" }}

[[sites]]
name = "Rewrite"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/admin"
ip_security = {{ allow_unlisted = false }}

[[sites.locations]]
path = "/cached"
[[sites.locations.rewrite.rules]]
name = "one script for every route"
pattern = "^cached/"
action = {{ type = "Rewrite", url = "/index.cgi" }}

[[sites.locations]]
path = "/app"
[sites.locations.rewrite]
clear_rules = true
[[sites.locations.rewrite.rules]]
name = "app only"
pattern = "^app/hidden$"
action = {{ type = "Rewrite", url = "app/local.txt" }}
"#,
            root = root.display()
        ),
    )
}

#[test]
fn rules_rewrite_redirect_answer_and_abort() {
    let dir = TempDir::new("rewrite");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    // Rewrite with a back-reference; patterns ignore case by default.
    assert_eq!(conn.get("/old/a.txt").text(), "new a");
    assert_eq!(conn.get("/OLD/a.txt").text(), "new a");

    // A file is served as it is; anything else goes to the front
    // controller, which sees the URL the client asked for.
    assert_eq!(conn.get("/static.txt").text(), "a file");
    let front = conn.get("/blog/hello%20world?x=1");
    assert_eq!(front.status, 200, "{}", front.text());
    assert_eq!(
        front.text().trim(),
        "uri=/blog/hello%20world?x=1 script=/index.cgi query=route=blog/hello%20world&x=1"
    );
    // A folder is left to DefaultDocument (no rewrite of its child).
    assert_eq!(conn.get("/docs/").text(), "docs index");

    // Redirect, with a server variable and the query appended.
    conn.send_raw(b"GET /moved/x?q=1 HTTP/1.1\r\nHost: rewrite.test\r\n\r\n");
    let moved = conn.read_response(false);
    assert_eq!(moved.status, 302);
    assert_eq!(
        moved.header("location"),
        Some("https://rewrite.test/new/x?q=1")
    );

    // A status of the rule's own.
    let secret = conn.get("/secret/plans");
    assert_eq!((secret.status, secret.reason.as_str()), (403, "Go Away"));
    assert!(secret.text().contains("403.7"), "{}", secret.text());

    // A condition's group.
    conn.send_raw(b"GET /agent HTTP/1.1\r\nHost: t\r\nUser-Agent: bot-crawler\r\n\r\n");
    assert_eq!(conn.read_response(false).text(), "for crawlers");

    // stop_processing: the second matching rule is not applied.
    assert_eq!(conn.get("/order").text(), "first");

    // A location's own rules, those it inherits cleared (the front
    // controller would take the URL first).
    assert_eq!(conn.get("/app/hidden").text(), "local");

    // A Redirect to a path stays on this site, whatever the capture holds.
    let slash = conn.get("/a/b/");
    assert_eq!(slash.status, 301);
    assert_eq!(slash.header("location"), Some("/a/b"));
    let evil = conn.get("/https:evil.test/");
    assert_eq!(evil.header("location"), Some("/https:evil.test"));

    // trackAllCaptures: the groups of every matching condition, in order
    // ({C:1} the first's, {C:2} and {C:3} the second's).
    conn.send_raw(b"GET /both HTTP/1.1\r\nHost: t\r\nX-A: a-one\r\nX-B: b-two-three\r\n\r\n");
    let both = conn.read_response(false);
    assert_eq!(
        both.header("location"),
        Some("/got/one/two/three"),
        "{both:?}"
    );

    // A backslash from a variable cannot make the path another host.
    let back = conn.get("/login?r=\\evil.test");
    assert_eq!(back.header("location"), Some("/%5Cevil.test"), "{back:?}");
    // A scheme from a condition group or a header: http or https only.
    let proto = conn.get("/www/a");
    assert_eq!(proto.header("location"), Some("http://www.example.test/a"));
    conn.send_raw(b"GET /xfp HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\n\r\n");
    let xfp = conn.read_response(false);
    assert_eq!(xfp.header("location"), Some("https://good.test/"));
    // A value that holds a `://` of its own names another host whatever
    // comes before it.
    for evil in ["//evil.test", "https://evil.test/?", "http://evil.test#"] {
        conn.send_raw(
            format!("GET /xfp HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: {evil}\r\n\r\n").as_bytes(),
        );
        let xfp = conn.read_response(false);
        assert_eq!(xfp.status, 500, "{evil}: {xfp:?}");
        assert!(xfp.header("location").is_none(), "{evil}");
    }
    // A server variable keeps its own encoding, its query too: IIS's
    // HTTPS redirect `https://{HTTP_HOST}{REQUEST_URI}` keeps the query.
    conn.send_raw(b"GET /hp/x?a=1&b=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    let hp = conn.read_response(false);
    assert_eq!(
        hp.header("location"),
        Some("https://t/hp/x?a=1&b=2"),
        "{hp:?}"
    );
    // The client's query goes before the template's fragment.
    let frag = conn.get("/frag?x=1");
    assert_eq!(frag.header("location"), Some("/new/page?x=1#top"));
    // A capture right after the template's host cannot make that host
    // user information (`https://example.test@evil.test/`).
    let host = conn.get("/host/@evil.test/x");
    let location = host.header("location").unwrap_or("");
    assert!(!location.contains('@'), "{host:?}");
    // Nor lengthen it into another host: the capture starts the path.
    let longer = conn.get("/host/.evil.test");
    assert_eq!(
        longer.header("location"),
        Some("https://example.test/.evil.test")
    );
    // A group of a condition on another condition's decoded group.
    assert_eq!(conn.get("/cc/100%2525.txt").text(), "percent file");

    // A decoded capture in a query stays one value.
    let query = conn.get("/q/a%26admin%3D1");
    assert!(
        query.text().contains("query=route=a%26admin%3D1"),
        "{}",
        query.text()
    );
    // A server variable's `#` does not end the query.
    conn.send_raw(b"GET /ua HTTP/1.1\r\nHost: t\r\nUser-Agent: a#b\r\n\r\n");
    let ua = conn.read_response(false).text();
    assert!(ua.contains("query=ua=a%23b"), "{ua}");
    // A condition's group from the decoded {URL} is encoded once more, not
    // decoded twice.
    assert_eq!(conn.get("/cr/100%2525.txt").text(), "percent file");
    // A default document's child request sees the client's URL too.
    let folder = conn.get("/folder");
    assert!(folder.text().contains("uri=/folder "), "{}", folder.text());

    // Every route through one script has its own cache entry.
    for _ in 0..3 {
        assert!(conn.get("/cached/1").text().contains("uri=/cached/1 "));
    }
    let other = conn.get("/cached/2").text();
    assert!(other.contains("uri=/cached/2 "), "{other}");

    // RequestFiltering and IpRestriction judged the client's URL, though
    // the front controller would have made it /index.cgi.
    assert_eq!(conn.get("/wp-admin/x").status, 404);
    assert_eq!(conn.get("/admin/users").status, 403);

    // AbortRequest: no answer at all.
    let mut evil = Connection::open(server.addr);
    evil.send_raw(b"GET /evil HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(evil.is_closed_or_reset());
}

/// The configuration of a site (`www` under `dir`) with UrlRewrite,
/// DynamicCompression, Cgi (for `*.cgi`) and StaticFile: `rewrite`, the
/// rewrite tables, before the site; `site_extra`, what follows its
/// `[[sites]]` entry (locations).
fn rewrite_site(dir: &TempDir, rewrite: &str, site_extra: &str) -> PathBuf {
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "DynamicCompression"
[[modules]]
name = "Cgi"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

{rewrite}
[[sites]]
name = "Rewrite"
root = '{root}'
bindings = ["127.0.0.1:0"]
{site_extra}"#,
            root = dir.path().join("www").display()
        ),
    )
}

/// Rewrite maps, template functions, wildcard and exact patterns, and
/// server variables set by rules: the parts of IIS URL Rewrite that
/// migrated rule sets lean on (a map of legacy URLs, the lower-case
/// redirect, `X-Original-Host` for a backend).
#[test]
fn maps_functions_pattern_syntaxes_and_server_variables() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rewrite-maps");
    let script = dir.write(
        "www/index.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"query=$QUERY_STRING host=$HTTP_X_ORIGINAL_HOST lang=$HTTP_ACCEPT_LANGUAGE keep=$HTTP_X_KEEP\"\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.write("www/new/a.txt", "new a");
    dir.write("www/first.txt", "first");
    let config = rewrite_site(
        &dir,
        r#"[rewrite.maps.Redirects.entries]
"/old-page" = "/new/a.txt"
"/away" = "https://example.test/landing"
"/Shop?id=7" = "/index.cgi?id=7"
"/area/old" = "/new/a.txt"

[rewrite.maps.Rewrites]
entries = { "/product/7" = "/index.cgi?product=seven" }

[rewrite.maps.Exact]
ignore_case = false
default_value = "none"
entries = { "Key" = "upper" }

[[rewrite.rules]]
name = "legacy redirects"
pattern = ".*"
conditions = [{ input = "{Redirects:{REQUEST_URI}}", pattern = "(.+)" }]
action = { type = "Redirect", url = "{C:1}", append_query_string = false, redirect_type = "Found" }

[[rewrite.rules]]
name = "legacy rewrites"
pattern = "^product/"
conditions = [{ input = "{Rewrites:{URL}}", pattern = "(.+)" }]
action = { type = "Rewrite", url = "{C:1}" }

[[rewrite.rules]]
name = "case-sensitive map"
pattern = "^exact/(.*)$"
action = { type = "Rewrite", url = "/index.cgi?v={Exact:{R:1}}", append_query_string = false }

[[rewrite.rules]]
name = "lower case"
pattern = "^lower/.*[A-Z]"
ignore_case = false
action = { type = "Redirect", url = "{ToLower:{URL}}" }

[[rewrite.rules]]
name = "form-encoded"
pattern = "^enc$"
action = { type = "Rewrite", url = "/index.cgi?next={UrlEncode:{HTTP_X_NEXT}}", append_query_string = false }

[[rewrite.rules]]
name = "escaped"
pattern = "^esc$"
action = { type = "Rewrite", url = "/index.cgi?next={EscapeDataString:{HTTP_X_NEXT}}", append_query_string = false }

[[rewrite.rules]]
name = "decoded"
pattern = "^dec$"
conditions = [{ input = "{UrlDecode:{QUERY_STRING}}", pattern = "^q=hello world$" }]
action = { type = "Rewrite", url = "first.txt" }

[[rewrite.rules]]
name = "wildcard"
pattern_syntax = "Wildcard"
pattern = "wild/*/file-*.txt"
action = { type = "Rewrite", url = "/index.cgi?a={R:1}&b={R:2}", append_query_string = false }

[[rewrite.rules]]
name = "exact"
pattern_syntax = "ExactMatch"
pattern = "Exact.TXT"
action = { type = "Rewrite", url = "first.txt" }

[[rewrite.rules]]
name = "variables"
pattern = "^vars/(.*)$"
server_variables = [
    { name = "HTTP_X_ORIGINAL_HOST", value = "{HTTP_HOST}" },
    { name = "HTTP_ACCEPT_LANGUAGE", value = "" },
    { name = "HTTP_X_KEEP", value = "rule", replace = false },
    { name = "ROUTE", value = "{R:1}" },
]
action = { type = "Rewrite", url = "/index.cgi" }

[[rewrite.rules]]
name = "a variable a rule set"
pattern = "^index\\.cgi$"
conditions = [{ input = "{ROUTE}", pattern = "^(.+)$" }]
action = { type = "Rewrite", url = "/index.cgi?route={C:1}", append_query_string = false }
"#,
        r#"# A location's own rules, on the server's map.
[[sites.locations]]
path = "/area"
[sites.locations.rewrite]
clear_rules = true
[[sites.locations.rewrite.rules]]
name = "area"
pattern = ".*"
conditions = [{ input = "{Redirects:{URL}}", pattern = "(.+)" }]
action = { type = "Redirect", url = "{C:1}", redirect_type = "Temporary" }
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    // A map of legacy URLs: by the client's path and query, without case.
    for (asked, to) in [
        ("/old-page", "/new/a.txt"),
        ("/OLD-Page", "/new/a.txt"),
        ("/shop?id=7", "/index.cgi?id=7"),
        // A map's value is the configuration's: it may name another site.
        ("/away", "https://example.test/landing"),
    ] {
        let r = conn.get(asked);
        assert_eq!(r.status, 302, "{asked}: {r:?}");
        assert_eq!(r.header("location"), Some(to), "{asked}");
    }
    // A location's rule reads the map the server level defines.
    let area = conn.get("/area/old");
    assert_eq!(area.status, 307, "{area:?}");
    assert_eq!(area.header("location"), Some("/new/a.txt"));
    // Not in the map: the default value (empty) matches no `(.+)`.
    assert_eq!(conn.get("/new/a.txt").text(), "new a");
    assert_eq!(conn.get("/shop?id=8").status, 404);
    // A map's value as a Rewrite target, its query included.
    assert!(conn
        .get("/product/7")
        .text()
        .contains("query=product=seven "));
    // A map with ignore_case = false, and its default value.
    assert!(conn.get("/exact/Key").text().contains("query=v=upper "));
    assert!(conn.get("/exact/key").text().contains("query=v=none "));

    // {ToLower:…}: IIS's lower-case redirect.
    let lower = conn.get("/lower/Some/PAGE");
    assert_eq!(lower.status, 301);
    assert_eq!(lower.header("location"), Some("/lower/some/page"));
    // {UrlEncode:…} and {EscapeDataString:…}: a header as one query value.
    let next = "a b&c=d/\u{e9}";
    conn.send_raw(format!("GET /enc HTTP/1.1\r\nHost: t\r\nX-Next: {next}\r\n\r\n").as_bytes());
    let enc = conn.read_response(false).text();
    assert!(enc.contains("query=next=a+b%26c%3Dd%2F%C3%A9 "), "{enc}");
    conn.send_raw(format!("GET /esc HTTP/1.1\r\nHost: t\r\nX-Next: {next}\r\n\r\n").as_bytes());
    let esc = conn.read_response(false).text();
    assert!(esc.contains("query=next=a%20b%26c%3Dd%2F%C3%A9 "), "{esc}");
    // {UrlDecode:…}: `%20` and `+` are spaces.
    assert_eq!(conn.get("/dec?q=hello%20world").text(), "first");
    assert_eq!(conn.get("/dec?q=hello+world").text(), "first");
    assert_eq!(conn.get("/dec?q=hello").status, 404);

    // Wildcard: each `*` is a group; the whole path must match.
    let wild = conn.get("/wild/x/y/file-9.txt").text();
    assert!(wild.contains("query=a=x/y&b=9 "), "{wild}");
    assert_eq!(conn.get("/wild/x/file-9.txtz").status, 404);
    // ExactMatch: the whole path, without case by default.
    assert_eq!(conn.get("/exact.txt").text(), "first");
    assert_eq!(conn.get("/an-exact.txt").status, 404);

    // Server variables: HTTP_* are request headers (empty removes one,
    // replace = false keeps the client's), others are variables that the
    // next rules read.
    conn.send_raw(
        b"GET /vars/abc HTTP/1.1\r\nHost: maps.test\r\nAccept-Language: de\r\nX-Keep: client\r\n\r\n",
    );
    let vars = conn.read_response(false).text();
    assert_eq!(
        vars.trim(),
        "query=route=abc host=maps.test lang= keep=client",
        "{vars}"
    );
    conn.send_raw(b"GET /vars/xyz HTTP/1.1\r\nHost: maps.test\r\n\r\n");
    let vars = conn.read_response(false).text();
    assert!(vars.contains("keep=rule"), "{vars}");
    // A line break never reaches a rule: the decoded path is refused at
    // the door (a value holding one would be no header: 500.50).
    let broken = Connection::open(server.addr).get("/vars/a%0dX-Evil:%201");
    assert_eq!(broken.status, 400, "{broken:?}");
}

/// Outbound rules: response headers rewritten, added and removed, and the
/// links of an HTML body rewritten as it is sent (ARR's classic: a
/// backend's absolute links made the site's own), with a precondition on
/// the response's type.
#[test]
fn outbound_rules_rewrite_headers_and_html_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rewrite-outbound");
    let script = dir.write(
        "www/moved.cgi",
        "#!/bin/sh\nprintf 'Status: 302 Found\\r\\nLocation: http://backend.internal:8080/app/next?a=1\\r\\n\
         Set-Cookie: id=1; Path=/\\r\\nSet-Cookie: theme=dark; HttpOnly\\r\\nContent-Type: text/plain\\r\\n\\r\\nmoved'\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let page = "<html><body>\
        <a href=\"http://backend.internal:8080/docs/x?y=1&amp;z=2\">docs</a>\
        <a href='http://elsewhere.test/'>other</a>\
        <IMG SRC=http://backend.internal:8080/i.png alt=\"http://backend.internal:8080/alt\">\
        <video src=\"http://backend.internal:8080/v.mp4\"></video>\
        <script>var u = \"<a href='http://backend.internal:8080/js'>\";</script>\
        </body></html>";
    dir.write("www/page.html", page);
    dir.write("www/page.txt", page);
    dir.write("www/inner/page.html", page);
    // A link across two of the 64 KiB blocks a file is read in (a file
    // larger than the file cache's 256 KiB is sent from the file).
    let boundary = 5 * 65536;
    let mut big = "<p>filler</p>".repeat(boundary / 13);
    big.truncate(boundary - 20);
    big.push_str("<a href=\"http://backend.internal:8080/far\">far</a>");
    big.push_str(&"<p>more</p>".repeat(1000));
    dir.write("www/big.html", &big);
    let mut huge = "<p>filler</p>".repeat(5 * 1024 * 1024 / 13);
    huge.push_str("<a href=\"http://backend.internal:8080/huge\">huge</a>");
    dir.write("www/huge.html", &huge);
    let config = rewrite_site(
        &dir,
        r#"[rewrite.preconditions.IsHTML]
conditions = [{ input = "{RESPONSE_CONTENT_TYPE}", pattern = "^text/html" }]

[[rewrite.outbound_rules]]
name = "backend redirects"
server_variable = "RESPONSE_Location"
pattern = "^http://backend\\.internal:8080/app/(.*)$"
action = { type = "Rewrite", value = "http://{HTTP_HOST}/{R:1}" }

[[rewrite.outbound_rules]]
name = "HttpOnly cookies"
server_variable = "RESPONSE_Set_Cookie"
pattern = ".+"
conditions = [{ input = "{R:0}", pattern = "; *HttpOnly", negate = true }]
action = { type = "Rewrite", value = "{R:0}; HttpOnly" }

[[rewrite.outbound_rules]]
name = "frame options"
server_variable = "RESPONSE_X_Frame_Options"
pattern = "^$"
action = { type = "Rewrite", value = "DENY" }

[[rewrite.outbound_rules]]
name = "no server name"
server_variable = "RESPONSE_Server"
pattern = ".*"
action = { type = "Rewrite", value = "" }

[[rewrite.outbound_rules]]
name = "backend links"
precondition = "IsHTML"
filter_by_tags = ["A", "Img"]
custom_tags = [{ tag = "video", attribute = "src" }]
pattern = "^http://backend\\.internal:8080/(.*)$"
action = { type = "Rewrite", value = "/app/{R:1}" }
"#,
        // A location adds a rule after those it inherits, and a
        // precondition named before the site's, which the inherited rules
        // must still find.
        r#"[[sites.locations]]
path = "/inner"
[sites.locations.rewrite.preconditions.AnImage]
conditions = [{ input = "{RESPONSE_CONTENT_TYPE}", pattern = "^image/" }]
[[sites.locations.rewrite.outbound_rules]]
name = "inner marker"
precondition = "IsHTML"
server_variable = "RESPONSE_X_Inner"
pattern = "^$"
action = { type = "Rewrite", value = "yes" }
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    // Headers: the backend's Location made this site's, each cookie
    // without HttpOnly given it, a header added, one removed.
    conn.send_raw(b"GET /moved.cgi HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let moved = conn.read_response(false);
    assert_eq!(moved.status, 302, "{moved:?}");
    assert_eq!(moved.header("location"), Some("http://site.test/next?a=1"));
    let cookies: Vec<&str> = moved
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["id=1; Path=/; HttpOnly", "theme=dark; HttpOnly"]);
    assert_eq!(moved.header("x-frame-options"), Some("DENY"));
    assert_eq!(moved.header("server"), None);

    // The HTML body: the listed tags' attributes, nothing else (not the
    // alt text, not a script's text, not another host).
    let html = conn.get("/page.html");
    assert_eq!(html.status, 200);
    let body = html.text();
    assert!(
        body.contains("<a href=\"/app/docs/x?y=1&amp;z=2\">"),
        "{body}"
    );
    assert!(body.contains("<a href='http://elsewhere.test/'>"), "{body}");
    assert!(body.contains("SRC=\"/app/i.png\""), "{body}");
    assert!(
        body.contains("alt=\"http://backend.internal:8080/alt\""),
        "{body}"
    );
    assert!(body.contains("<video src=\"/app/v.mp4\">"), "{body}");
    assert!(
        body.contains("<a href='http://backend.internal:8080/js'>"),
        "{body}"
    );
    assert_eq!(
        html.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(html.header("accept-ranges").is_none());
    // The file's validators do not describe the rewritten page.
    assert!(html.header("etag").is_none());
    assert!(html.header("last-modified").is_none());
    assert_eq!(html.header("x-inner"), None);
    // Below the location: the site's rules, then its own.
    let inner = conn.get("/inner/page.html");
    assert_eq!(inner.text(), body);
    assert_eq!(inner.header("x-frame-options"), Some("DENY"));
    assert_eq!(inner.header("x-inner"), Some("yes"));
    // Not HTML: the precondition does not hold.
    assert_eq!(conn.get("/page.txt").text(), page);
    // A link that straddles two reads of the file.
    let far = conn.get("/big.html").text();
    assert!(
        far.contains("<a href=\"/app/far\">far</a>"),
        "{}",
        far.len()
    );
    assert_eq!(
        far.len(),
        big.len() - "http://backend.internal:8080".len() + "/app".len()
    );
    // HEAD and ranges say what the rewritten 200 does: no validators, no
    // ranges; a range of such a page, or a copy validated by the file's
    // tag, is answered whole and fresh, rewritten.
    conn.send_raw(b"HEAD /page.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-frame-options"), Some("DENY"));
    assert!(head.header("etag").is_none());
    assert!(head.header("accept-ranges").is_none());
    // Not the file's length, which is not the page's (known only by
    // rewriting it).
    assert_eq!(head.header("content-length"), None);
    assert_eq!(head.header("transfer-encoding"), None);
    // (A date after the file's: the file itself would answer 304.)
    conn.send_raw(
        b"GET /page.html HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n",
    );
    let fresh = conn.read_response(false);
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.text(), body);
    conn.send_raw(
        b"GET /page.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n",
    );
    assert_eq!(conn.read_response(true).status, 304);
    conn.send_raw(b"GET /page.html HTTP/1.1\r\nHost: t\r\nRange: bytes=0-40\r\n\r\n");
    let ranged = conn.read_response(false);
    assert_eq!(ranged.status, 200);
    assert_eq!(ranged.text(), body);
    // Other types keep their ranges.
    conn.send_raw(b"GET /page.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-5\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 206);
    // A large page is rewritten too, a piece at a time.
    let rewritten = conn.get("/huge.html");
    assert_eq!(rewritten.status, 200);
    assert_eq!(
        rewritten.text(),
        huge.replace("http://backend.internal:8080/huge", "/app/huge")
    );
}

/// `stop_processing` on a header rule stops later rules on that header
/// only: other headers and bodies are still rewritten.
#[test]
fn an_outbound_stop_holds_for_its_own_header() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rewrite-outbound-stop");
    dir.write("www/page.html", "<a href=\"http://old.test/x\">x</a>");
    for (name, script) in [
        (
            "moved.cgi",
            "#!/bin/sh\nprintf 'Status: 302 Found\\r\\nLocation: /page.html\\r\\n\\r\\n'\n",
        ),
        (
            "ae.cgi",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
             echo \"the script saw ae=[$HTTP_ACCEPT_ENCODING]\"\nhead -c 4000 /dev/zero | tr '\\0' 'z'\n",
        ),
    ] {
        let path = dir.write(&format!("www/{name}"), script);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = rewrite_site(
        &dir,
        r#"[[rewrite.outbound_rules]]
name = "marker"
server_variable = "RESPONSE_X_Marker"
pattern = ".*"
stop_processing = true
action = { type = "Rewrite", value = "first" }

[[rewrite.outbound_rules]]
name = "marker again"
server_variable = "RESPONSE_X_Marker"
pattern = ".*"
action = { type = "Rewrite", value = "second" }

[[rewrite.outbound_rules]]
name = "links"
filter_by_tags = ["A"]
pattern = "^http://old\\.test/(.*)$"
action = { type = "Rewrite", value = "/{R:1}" }

[[rewrite.outbound_rules]]
name = "other"
server_variable = "RESPONSE_X_Other"
pattern = ".*"
action = { type = "Rewrite", value = "set" }

[[rewrite.outbound_rules]]
name = "switched off"
enabled = false
server_variable = "RESPONSE_X_Off"
pattern = ".*"
action = { type = "Rewrite", value = "on" }

[rewrite.preconditions.IsRedirection]
conditions = [{ input = "{RESPONSE_STATUS}", pattern = "^3\\d\\d$" }]

[[rewrite.outbound_rules]]
name = "redirects"
precondition = "IsRedirection"
server_variable = "RESPONSE_X_Was_Redirect"
pattern = ".*"
action = { type = "Rewrite", value = "{RESPONSE_STATUS}" }

[[rewrite.rules]]
name = "keep the encodings aside"
pattern = "^ae\\.cgi$"
server_variables = [
    { name = "ORIGINAL_ACCEPT_ENCODING", value = "{HTTP_ACCEPT_ENCODING}" },
    { name = "HTTP_ACCEPT_ENCODING", value = "" },
]
action = { type = "None" }

[rewrite.preconditions.NeedsRestoring]
conditions = [{ input = "{ORIGINAL_ACCEPT_ENCODING}", pattern = ".+" }]

[[rewrite.outbound_rules]]
name = "give the encodings back"
precondition = "NeedsRestoring"
server_variable = "HTTP_ACCEPT_ENCODING"
pattern = ".*"
action = { type = "Rewrite", value = "{ORIGINAL_ACCEPT_ENCODING}" }
"#,
        "",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = common::get(server.addr, "/page.html");
    assert_eq!(resp.header("x-marker"), Some("first"));
    assert_eq!(resp.header("x-other"), Some("set"));
    assert_eq!(resp.text(), "<a href=\"/x\">x</a>");
    // A rule switched off does nothing.
    assert_eq!(resp.header("x-off"), None);
    // `{RESPONSE_STATUS}`: IIS's IsRedirection precondition.
    assert_eq!(resp.header("x-was-redirect"), None);
    let moved = common::get(server.addr, "/moved.cgi");
    assert_eq!(moved.status, 302);
    assert_eq!(moved.header("x-was-redirect"), Some("302"));
    // IIS's recipe for a backend that must answer uncompressed: the
    // inbound rule keeps the client's Accept-Encoding aside, the outbound
    // rule gives it back, and DynamicCompression still compresses.
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /ae.cgi HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let compressed = conn.read_response(false);
    assert_eq!(compressed.status, 200);
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed.body[..]),
        &mut plain,
    )
    .unwrap();
    assert!(plain.starts_with("the script saw ae=[]"), "{plain}");
}

#[test]
fn bad_rules_are_configuration_errors() {
    let dir = TempDir::new("rewrite-bad");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let site = format!(
        "[[sites]]\nname = \"S\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
        dir.path().join("www").display()
    );
    for (rule, says) in [
        (
            r#"pattern = "^(unclosed"
action = { type = "None" }"#,
            "not a valid regular expression",
        ),
        (
            r#"pattern = "^x$"
action = { type = "Rewrite", url = "ftp://elsewhere.test/" }"#,
            "or `https://host[:port]/…`",
        ),
        (
            r#"pattern = "^x$"
action = { type = "Rewrite", url = "http://{HTTP_HOST}/x" }"#,
            "written out",
        ),
        (
            r#"pattern = "^(x)$"
action = { type = "Rewrite", url = "{Nowhere:{R:1}}" }"#,
            "names no function and no rewrite map",
        ),
        (
            r#"pattern = "^x$"
server_variables = [{ name = "HTTP_CONTENT_LENGTH", value = "0" }]
action = { type = "None" }"#,
            "framing",
        ),
        (
            r#"pattern = "^x$"
server_variables = [{ name = "X-Y", value = "0" }]
action = { type = "None" }"#,
            "letters, digits and `_`",
        ),
        (
            r#"pattern = "^x$"
server_variables = [{ name = "PROXY_SERVER", value = "{HTTP_X_BACKEND}" }]
action = { type = "None" }"#,
            "so that no request chooses it",
        ),
        (
            r#"pattern = "^x$"
server_variables = [{ name = "proxy_server", value = "ftp://elsewhere" }]
action = { type = "None" }"#,
            "server variable `PROXY_SERVER`:",
        ),
        (
            r#"pattern = "x"
pattern_syntax = "Glob"
action = { type = "None" }"#,
            "pattern_syntax",
        ),
        (
            r#"pattern = "^x$"
action = { type = "None" }

[[rewrite.outbound_rules]]
name = "o"
server_variable = "RESPONSE_Content_Length"
pattern = ".*"
action = { type = "Rewrite", value = "1" }"#,
            "HTTP layer",
        ),
        (
            r#"pattern = "^x$"
action = { type = "None" }

[[rewrite.outbound_rules]]
name = "o"
filter_by_tags = ["Blink"]
pattern = ".*"
action = { type = "Rewrite", value = "1" }"#,
            "custom_tags",
        ),
        (
            r#"pattern = "^x$"
action = { type = "None" }

[[rewrite.outbound_rules]]
name = "o"
precondition = "Nope"
server_variable = "RESPONSE_Location"
pattern = ".*"
action = { type = "Rewrite", value = "1" }"#,
            "no precondition `Nope`",
        ),
        (
            r#"pattern = "^x$"
action = { type = "None" }

[[rewrite.outbound_rules]]
name = "o"
pattern = ".*"
negate = true
action = { type = "Rewrite", value = "1" }"#,
            "cannot be negated",
        ),
        (
            r#"pattern = "^x$"
action = { type = "None" }

[rewrite.maps.Old.entries]
"/a" = "/b"
"/A" = "/c""#,
            "compared without case",
        ),
        (
            r#"pattern = "^x$"
conditions = [{ input = "{HTTP_HOST}" }]
action = { type = "None" }"#,
            "no pattern",
        ),
        (
            r#"pattern = "^x$"
action = { type = "CustomResponse" }"#,
            "status_code",
        ),
        (
            r#"pattern = "^(x)$"
action = { type = "Rewrite", url = "/y/{R:2}" }"#,
            "{R:2}: the rule's pattern has 1 group",
        ),
        (
            r#"pattern = "^x$"
action = { url = "/y" }"#,
            "has a url but no type",
        ),
        (
            r#"pattern = "^x$"
action = { type = "Redirect", url = "//cdn.test/x" }"#,
            "protocol-relative",
        ),
        (
            r#"pattern = "^x$"
action = { type = "Redirect", url = "/y", log_rewritten_url = true }"#,
            "log_rewritten_url is for a Rewrite action, not Redirect",
        ),
    ] {
        let path = dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"UrlRewrite\"\n\n[[rewrite.rules]]\nname = \"r\"\n{rule}\n\n{site}"
            ),
        );
        let out = common::riis_command("check-config", &path);
        assert!(!out.status.success(), "{rule}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("riis.toml") && err.contains("rewrite"),
            "{err}"
        );
        assert!(err.contains(says), "{says} in {err}");
    }

    // A rule that names what its neighbours define (a map, a
    // precondition) is reported at its own line and key, not the
    // section's first; a bad pattern at the pattern's.
    let three_rules = "[[modules]]\nname = \"UrlRewrite\"\n\n\
        [[rewrite.rules]]\nname = \"one\"\npattern = \"^a$\"\naction = { type = \"None\" }\n\n\
        [[rewrite.rules]]\nname = \"two\"\npattern = \"^(c$\"\naction = { type = \"None\" }\n\n\
        [[rewrite.rules]]\nname = \"three\"\npattern = \"^(e)$\"\n\
        action = { type = \"Rewrite\", url = \"{ToUpper:{R:1}}\" }\n\n\
        [[rewrite.outbound_rules]]\nname = \"o\"\nserver_variable = \"RESPONSE_X\"\n\
        pattern = \"a\"\nprecondition = \"nope\"\naction = { type = \"Rewrite\", value = \"b\" }\n\n";
    let fix_two = |t: String| t.replace("^(c$", "^c$");
    let fix_three = |t: String| t.replace("{ToUpper:", "{ToLower:");
    for (text, says) in [
        (
            three_rules.to_owned(),
            "riis.toml:11: key `rewrite.rules[1].pattern`: rule `two`",
        ),
        (
            fix_two(three_rules.to_owned()),
            "riis.toml:14: key `rewrite.rules[2]`: rule `three`: `{ToUpper:…}`",
        ),
        (
            fix_three(fix_two(three_rules.to_owned())),
            "riis.toml:23: key `rewrite.outbound_rules[0].precondition`",
        ),
    ] {
        let path = dir.write("riis.toml", format!("{text}{site}"));
        let out = common::riis_command("check-config", &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{says} in {err}");
    }
}

/// A front controller's rewrite (every URL that is no file goes to one
/// script, which routes on the client's URL) does not lead a client past
/// the logon or the authorization rules of the location it asked for:
/// access modules apply the stricter of that location and the one the
/// URL was rewritten into.
#[test]
fn a_rewrite_does_not_skip_the_access_rules_of_the_clients_location() {
    let dir = TempDir::new("rewrite-access");
    let alice = bcrypt::hash("wonderland", 4).unwrap();
    dir.write("users", format!("alice:{alice}\nbob:{alice}\n"));
    dir.write("groups", "admins: alice\n");
    dir.write("vault-users", format!("root:{alice}\n"));
    dir.write("www/front.txt", "front");
    dir.write("www/members/real.txt", "real");
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "BasicAuthentication"
[[modules]]
name = "AnonymousAuthentication"
[[modules]]
name = "UrlAuthorization"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile"]

[basic_authentication]
enabled = true
user_file = "users"
group_file = "groups"

[[rewrite.rules]]
name = "front controller"
pattern = "^(.*)$"
conditions = [{{ input = "{{REQUEST_FILENAME}}", match_type = "IsFile", negate = true }}]
action = {{ type = "Rewrite", url = "/front.txt" }}

[[sites]]
name = "Access"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/members"
basic_authentication = {{ enabled = true }}
anonymous_authentication = {{ enabled = false }}

[[sites.locations]]
path = "/admin"
basic_authentication = {{ enabled = true }}
authorization = {{ rules = [{{ access = "Allow", roles = "admins" }}] }}

# A logon of its own: the site's users (enabled at the site's level above
# for every URL) are not its users.
[[sites.locations]]
path = "/vault"
basic_authentication = {{ enabled = true, user_file = "vault-users", realm = "Vault" }}
anonymous_authentication = {{ enabled = false }}
"#,
            root = root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let get = |path: &str, user: Option<&str>| {
        use base64::Engine as _;
        let authorization = user.map_or(String::new(), |u| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:wonderland"));
            format!("Authorization: Basic {token}\r\n")
        });
        let mut conn = Connection::open(server.addr);
        conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{authorization}\r\n").as_bytes());
        conn.read_response(false)
    };
    // Outside the protected locations the front controller answers anyone.
    assert_eq!(get("/blog/post", None).text(), "front");
    // A route under /members needs the logon /members asks for, with its
    // challenge, though the rewrite led to /front.txt.
    let anonymous = get("/members/delete-user?id=1", None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic ")),
        "{anonymous:?}"
    );
    assert_eq!(get("/members/delete-user", Some("alice")).text(), "front");
    // A file that exists answers the same way: no telling files from routes.
    assert_eq!(get("/members/real.txt", None).status, 401);
    // /admin's rules hold for its routes: only admins.
    assert_eq!(get("/admin/users", None).status, 401);
    assert_eq!(get("/admin/users", Some("bob")).status, 401);
    assert_eq!(get("/admin/users", Some("alice")).text(), "front");
    // A route under /vault is logged on with /vault's users, not with those
    // of the location the rewrite led to.
    assert_eq!(get("/vault/open", Some("bob")).status, 401);
    let vault = get("/vault/open", None);
    assert!(
        vault
            .header("www-authenticate")
            .is_some_and(|c| c.contains("Vault")),
        "{vault:?}"
    );
    assert_eq!(get("/vault/open", Some("root")).text(), "front");
}

/// A large rewritten page goes out as the client takes it: while the
/// client reads nothing, the server has rewritten and handed its connection
/// only a first part of the page (a slow client's page is never held whole
/// in memory), and `riis status` shows the request waiting for the client.
/// Once the client reads, the whole page arrives, rewritten.
#[test]
fn a_large_rewritten_page_is_made_as_the_client_takes_it() {
    let dir = TempDir::new("rewrite-paced");
    let mut page = "<p>filler</p>".repeat(32 * 1024 * 1024 / 13);
    page.push_str("<a href=\"http://backend.internal:8080/end\">end</a>");
    dir.write("www/big.html", &page);
    let config = rewrite_site(
        &dir,
        r#"[server]
pid_file = "riis.pid"

[[rewrite.outbound_rules]]
name = "backend links"
filter_by_tags = ["A"]
pattern = "^http://backend\\.internal:8080/(.*)$"
action = { type = "Rewrite", value = "/app/{R:1}" }
"#,
        "",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    conn.send_raw(b"GET /big.html HTTP/1.1\r\nHost: t\r\n\r\n");

    // Until the bytes handed over stop growing: the client takes nothing.
    let bytes_sent = |text: &str| -> Option<(u64, String)> {
        let line = text
            .lines()
            .find(|l| l.starts_with("request: ") && l.ends_with("method=GET url=/big.html"))?;
        let sent = line
            .split(' ')
            .find_map(|f| f.strip_prefix("bytes_sent="))?
            .parse()
            .ok()?;
        Some((sent, line.to_owned()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let (sent, line) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let text = common::riis_status(&config);
        let now = bytes_sent(&text).unwrap_or_else(|| panic!("not listed: {text}"));
        if last.as_ref().is_some_and(|(n, _)| *n == now.0) {
            break now;
        }
        assert!(Instant::now() < deadline, "still sending: {text}");
        last = Some(now);
    };
    assert!(
        line.contains(" stage=SendResponse state=waiting_client "),
        "{line}"
    );
    assert!(
        sent < page.len() as u64 / 2,
        "{sent} of {} bytes handed over before the client read any",
        page.len()
    );

    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert!(
        resp.text() == page.replace("http://backend.internal:8080/end", "/app/end"),
        "the page arrived altered ({} bytes)",
        resp.body.len()
    );
}

/// An error page replaces a large failing page whose body outbound rules
/// take a piece at a time, and one whose output went out with a flush
/// (past response_buffer_limit): the client gets the page, not the rest of
/// the script's output with its details.
#[test]
fn an_error_page_replaces_a_large_page_being_rewritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rewrite-error-page");
    let script = dir.write(
        "www/err.cgi",
        "#!/bin/sh\nprintf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/html\\r\\n\\r\\n'\n\
         echo '<h1>SECRET STACK TRACE</h1>'\n\
         i=0; while [ $i -lt 4000 ]; do echo '<p><a href=\"http://backend.internal:8080/x\">frame</a></p>'; i=$((i+1)); done\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Past response_buffer_limit (4 MiB) the output goes out with a flush.
    let big = dir.write(
        "www/err-big.cgi",
        "#!/bin/sh\nprintf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/html\\r\\n\\r\\n'\n\
         echo '<h1>SECRET STACK TRACE</h1>'\n\
         head -c 5000000 /dev/zero | tr '\\000' 'x'\n",
    );
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "CustomError"
[[modules]]
name = "UrlRewrite"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[http_errors]
error_mode = "Custom"
existing_response = "Replace"

[[rewrite.outbound_rules]]
name = "backend links"
filter_by_tags = ["A"]
pattern = "^http://backend\\.internal:8080/(.*)$"
action = {{ type = "Rewrite", value = "/app/{{R:1}}" }}

[[sites]]
name = "Rewrite"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = dir.path().join("www").display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    for url in ["/err.cgi", "/err-big.cgi"] {
        let mut conn = Connection::open(server.addr);
        let resp = conn.get(url);
        assert_eq!(resp.status, 500, "{url}");
        let text = resp.text();
        assert!(!text.contains("SECRET"), "{url}: {} bytes", text.len());
        assert!(!text.contains("frame"), "{url}: {} bytes", text.len());
        assert!(text.len() < 4096, "{url}: {text}");
        // The connection goes on, its response ended cleanly.
        assert_eq!(conn.get(url).status, 500, "{url}");
    }
}

/// ECMAScript's look-around and back-references, which IIS rules use
/// ("everything but /api/"), work; a backtracking match that runs away on
/// a client's URL ends the request with 500.50 instead of letting the URL
/// past a rule that denies it.
#[test]
fn look_around_patterns_work_and_a_runaway_match_fails_the_request() {
    let dir = TempDir::new("rewrite-lookaround");
    dir.write("www/index.html", "app shell");
    dir.write("www/api/data.txt", "api data");
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
modules = ["StaticFile"]

[[rewrite.rules]]
name = "deny doubled"
pattern = '^((?!x)a+)+b'
action = {{ type = "CustomResponse", status_code = 403 }}

[[rewrite.rules]]
name = "spa"
pattern = '^(?!api/)(?!index\.html$).+$'
action = {{ type = "Rewrite", url = "index.html" }}

[[sites]]
name = "S"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display(),
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/some/route").text(), "app shell");
    assert_eq!(conn.get("/api/data.txt").text(), "api data");
    assert_eq!(conn.get("/aab").status, 403);
    let runaway = conn.get(&format!("/{}", "a".repeat(40)));
    assert_eq!(runaway.status, 500);
    assert_eq!(conn.get("/some/route").text(), "app shell");
}

/// A folder's `web.config` rules port as they are with `folder`: they
/// match the path below the folder and a relative `url` is from it, as IIS
/// runs a folder's distributed rules (WordPress installed in `/blog`).
#[test]
fn rules_written_for_a_folder_match_below_it_and_rewrite_from_it() {
    let dir = TempDir::new("rewrite-folder");
    dir.write("www/index.txt", "the site's front page");
    dir.write("www/blog/index.txt", "the blog's front controller");
    dir.write("www/blog/style.css", "a file of the blog");
    let root = dir.path().join("www");
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "StaticFile"

[[handlers]]
name = "StaticFile"
path = "*"
modules = ["StaticFile"]

[[sites]]
name = "S"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/blog"

[sites.locations.rewrite]
folder = "/blog"

[[sites.locations.rewrite.rules]]
name = "old feed"
pattern = "^feed$"
action = {{ type = "Redirect", url = "rss/" }}

[[sites.locations.rewrite.rules]]
name = "WordPress"
pattern = ".*"
conditions = [
  {{ input = "{{REQUEST_FILENAME}}", match_type = "IsFile", negate = true }},
  {{ input = "{{REQUEST_FILENAME}}", match_type = "IsDirectory", negate = true }},
]
action = {{ type = "Rewrite", url = "index.txt" }}
"#,
            root = root.display(),
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(
        conn.get("/blog/2024/hello/").text(),
        "the blog's front controller"
    );
    assert_eq!(conn.get("/blog/style.css").text(), "a file of the blog");
    // `^feed$` is the path below the folder; the redirect is from it too.
    conn.send_raw(b"GET /blog/feed HTTP/1.1\r\nHost: t\r\n\r\n");
    let moved = conn.read_response(false);
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/blog/rss/"));
    // Outside the folder the rules do not apply.
    assert_eq!(conn.get("/index.txt").text(), "the site's front page");

    // A folder is a path.
    let bad = dir.write(
        "bad.toml",
        format!(
            "[[modules]]\nname = \"UrlRewrite\"\n[rewrite]\nfolder = \"blog/\"\n\
             [[sites]]\nname = \"S\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        ),
    );
    let out = common::riis_command("check-config", &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4: key `rewrite.folder`"), "{err}");
}

/// IIS runs the rules of a site's root before a folder's, each against the
/// path below the folder it was written for; `clear_rules` is its
/// `<clear />`.
#[test]
fn rules_add_up_from_the_sites_root_to_a_folder() {
    let dir = TempDir::new("rewrite-inherit");
    dir.write("www/wp/page.txt", "the blog's page");
    dir.write("www/first.txt", "first");
    dir.write("www/second.txt", "second");
    let config = rewrite_site(
        &dir,
        "",
        r#"[[sites.rewrite.rules]]
name = "maintenance"
pattern = ".*"
conditions = [{ input = "{HTTP_X_MAINTENANCE}", pattern = "^on$" }]
action = { type = "CustomResponse", status_code = 503, status_reason = "Down for maintenance" }

[[sites.rewrite.rules]]
name = "z map"
pattern = "zz$"
conditions = [{ input = "{Zmap:{URL}}", pattern = "(.+)" }]
action = { type = "Rewrite", url = "{C:1}" }

[sites.rewrite.maps.Zmap]
entries = { "/wp/zz" = "/first.txt" }

[[sites.rewrite.rules]]
name = "out of the folder"
pattern = "^wp/away$"
action = { type = "Rewrite", url = "/nowhere" }

[[sites.locations]]
path = "/wp"
[sites.locations.rewrite]
folder = "/wp"
[[sites.locations.rewrite.rules]]
name = "a map"
pattern = "^aa$"
conditions = [{ input = "{Amap:{URL}}", pattern = "(.+)" }]
action = { type = "Rewrite", url = "{C:1}" }
[[sites.locations.rewrite.rules]]
name = "front controller"
pattern = "^(.*)$"
conditions = [{ input = "{REQUEST_FILENAME}", match_type = "IsFile", negate = true }]
action = { type = "Rewrite", url = "page.txt" }
# Before the site's map in name order: the site's rule must still find its own.
[sites.locations.rewrite.maps.Amap]
entries = { "/wp/aa" = "/second.txt" }

[[sites.locations]]
path = "/wp/feed"
[sites.locations.rewrite]
remove_rules = ["FRONT controller"]
[[sites.locations.rewrite.rules]]
name = "front controller"
pattern = "^feed$"
action = { type = "Rewrite", url = "/second.txt" }

[[sites.locations]]
path = "/wp/admin"
[sites.locations.rewrite]
clear_rules = true
[[sites.locations.rewrite.rules]]
name = "admin"
pattern = "^admin/x$"
action = { type = "Rewrite", url = "/first.txt" }

[[sites.locations]]
path = "/wp/admin/deeper"
[[sites.locations.rewrite.rules]]
name = "deeper"
pattern = "^admin/deeper/y$"
action = { type = "Rewrite", url = "/second.txt" }
"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let maintained = |conn: &mut Connection, path: &str| {
        conn.send_raw(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Maintenance: on\r\n\r\n").as_bytes(),
        );
        conn.read_response(false)
    };

    // The folder's own rule, against the path below it.
    assert_eq!(conn.get("/wp/2024/hello").text(), "the blog's page");
    // The site's rule runs first, below the folder as elsewhere.
    assert_eq!(maintained(&mut conn, "/wp/2024/hello").status, 503);
    assert_eq!(maintained(&mut conn, "/first.txt").status, 503);
    // An inherited rule taken out and replaced by one of the same name;
    // the others still run.
    assert_eq!(conn.get("/wp/feed").text(), "second");
    assert_eq!(conn.get("/wp/feed/x").status, 404);
    assert_eq!(maintained(&mut conn, "/wp/feed").status, 503);
    // Rewritten out of the folder, the URL is not the folder's rules' to
    // match (its catch-all would make it the blog's page).
    assert_eq!(conn.get("/wp/away").status, 404);
    // The site's rule reads the site's map, the folder's its own.
    assert_eq!(conn.get("/wp/zz").text(), "first");
    assert_eq!(conn.get("/wp/aa").text(), "second");
    // Cleared: neither the site's rule nor the blog's, for the location
    // and those below it, which add their own after.
    assert_eq!(maintained(&mut conn, "/wp/admin/x").text(), "first");
    assert_eq!(maintained(&mut conn, "/wp/admin/deeper/y").text(), "second");
    assert_eq!(conn.get("/wp/admin/deeper/x").status, 404);
    assert_eq!(conn.get("/wp/admin/x").text(), "first");

    // A rule named as an inherited one is refused where it is written.
    let twice = dir.write(
        "twice.toml",
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("name = \"deeper\"", "name = \"ADMIN\""),
    );
    let out = common::riis_command("check-config", &twice);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("twice.toml:86: key `sites[0].locations[3].rewrite.rules[0].name`"),
        "{err}"
    );
    assert!(err.contains("inherited from an enclosing level"), "{err}");
    // So is one named as a rule switched off there, and two of one level;
    // and taking out a rule that is not inherited.
    for (base, from, to, key) in [
        (
            &twice,
            "name = \"admin\"\n",
            "name = \"admin\"\nenabled = false\n",
            "sites[0].locations[3].rewrite.rules[0].name",
        ),
        (
            &twice,
            "name = \"a map\"",
            "name = \"Front Controller\"",
            "sites[0].locations[0].rewrite.rules[1].name",
        ),
        (
            &config,
            "remove_rules = [\"FRONT controller\"]",
            "remove_rules = [\"nowhere\"]",
            "sites[0].locations[1].rewrite.remove_rules[0]",
        ),
    ] {
        let text = std::fs::read_to_string(base).unwrap().replace(from, to);
        let again = dir.write("again.toml", text);
        let out = common::riis_command("check-config", &again);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("key `{key}`")), "{err}");
    }
}

/// An outbound rule without `server_variable` or tags rewrites the whole
/// body of a text response, every match, as IIS's rule without tags does.
#[test]
fn an_outbound_rule_over_the_whole_body_replaces_every_match() {
    let dir = TempDir::new("rewrite-whole-body");
    let data = r#"{"self": "http://backend.internal:8080/a", "next": "http://backend.internal:8080/b", "version": "7"}"#;
    dir.write("www/data.json", data);
    dir.write("www/image.png", data);
    dir.write(
        "www/page.html",
        "<a href=\"http://backend.internal:8080/x\">see http://backend.internal:8080/y</a>",
    );
    // A match across the 64 KiB pieces of a file sent from disk.
    let mut long = "x".repeat(5 * 65536 - 10);
    long.push_str("http://backend.internal:8080/far");
    dir.write("www/long.txt", &long);
    let mut huge = "y".repeat(9 * 1024 * 1024);
    huge.push_str("http://backend.internal:8080/");
    dir.write("www/huge.txt", &huge);
    let config = rewrite_site(
        &dir,
        r#"[[rewrite.outbound_rules]]
name = "links"
filter_by_tags = ["A"]
pattern = "^http://backend\\.internal:8080/(.*)$"
action = { type = "Rewrite", value = "/tagged/{R:1}" }

[[rewrite.outbound_rules]]
name = "backend host"
pattern = "http://backend\\.internal:8080/(\\w*)"
conditions = [{ input = "{R:1}", pattern = "^nope$", negate = true }]
action = { type = "Rewrite", value = "https://{HTTP_HOST}/{R:1}" }

[[rewrite.outbound_rules]]
name = "version"
pattern = "\"version\": \"(\\d+)\""
action = { type = "Rewrite", value = "\"version\": \"v{R:1}\"" }
"#,
        "",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let get = |conn: &mut Connection, request: &str| {
        conn.send_raw(format!("{request}\r\nHost: site.test\r\n\r\n").as_bytes());
        conn.read_response(request.starts_with("HEAD"))
    };

    let json = get(&mut conn, "GET /data.json HTTP/1.1");
    assert_eq!(
        json.text(),
        r#"{"self": "https://site.test/a", "next": "https://site.test/b", "version": "v7"}"#
    );
    assert!(json.header("etag").is_none());
    // Not text: never rewritten.
    assert_eq!(get(&mut conn, "GET /image.png HTTP/1.1").text(), data);
    // HTML: the attribute rule on the tag, then the body rule on the rest.
    assert_eq!(
        get(&mut conn, "GET /page.html HTTP/1.1").text(),
        "<a href=\"/tagged/x\">see https://site.test/y</a>"
    );
    let far = get(&mut conn, "GET /long.txt HTTP/1.1").text();
    assert!(far.ends_with("xxhttps://site.test/far"), "{}", far.len());
    assert_eq!(
        far.len(),
        long.len() - "http://backend.internal:8080".len() + "https://site.test".len()
    );
    // A range of such a text is answered whole, rewritten; HEAD says what
    // GET sends without a length.
    let whole = get(&mut conn, "GET /data.json HTTP/1.1\r\nRange: bytes=0-9");
    assert_eq!((whole.status, whole.text()), (200, json.text()));
    let head = get(&mut conn, "HEAD /data.json HTTP/1.1");
    assert_eq!(head.header("content-length"), None);
    // Longer than the rules may hold: sent as it is, whole.
    let big = get(&mut conn, "GET /huge.txt HTTP/1.1");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), huge.len());
    assert!(big.text().ends_with("yhttp://backend.internal:8080/"));
    // The connection goes on.
    assert_eq!(
        get(&mut conn, "GET /data.json HTTP/1.1").text(),
        json.text()
    );
}

/// A rule over the whole body cannot be made to take the worker's time or
/// memory: a pattern whose searches cost the square of the body stops at
/// the time limit, a value that grows the body past its limit is not
/// applied, and event streams are never held. A look-ahead rule works on
/// a long body.
#[test]
fn a_whole_body_rule_is_bounded_in_time_and_size() {
    let dir = TempDir::new("rewrite-whole-body-bounds");
    let mut far = "http://backend.internal:8080/page ".to_owned();
    far.push_str(&"z".repeat(200_000));
    far.push_str(" http://backend.internal:8080/static/x");
    dir.write("www/far.txt", &far);
    let runaway = "a".repeat(100_000);
    dir.write("www/runaway.txt", &runaway);
    let hosts = "http://backend.internal:8080/ ".repeat(10_000);
    dir.write("www/hosts.txt", &hosts);
    let events = "data: http://backend.internal:8080/page\n\n";
    dir.write("www/events.sse", events);
    let config = rewrite_site(
        &dir,
        r#"[rewrite.preconditions.Runaway]
conditions = [{ input = "{URL}", pattern = "^/runaway" }]

[rewrite.preconditions.Hosts]
conditions = [{ input = "{URL}", pattern = "^/hosts" }]

[[rewrite.outbound_rules]]
name = "not the static ones"
pattern = "http://backend\\.internal:8080/(?!static/)"
action = { type = "Rewrite", value = "https://site.test/" }

[[rewrite.outbound_rules]]
name = "runaway"
precondition = "Runaway"
pattern = "a*b|a"
action = { type = "Rewrite", value = "X" }

[[rewrite.outbound_rules]]
name = "hosts"
precondition = "Hosts"
pattern = "https://site\\.test/"
action = { type = "Rewrite", value = "https://{HTTP_HOST}/" }
"#,
        r#"static_file = { mime_types = { sse = "text/event-stream" } }"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    let mut expected = far.replacen("http://backend.internal:8080/", "https://site.test/", 1);
    assert_eq!(conn.get("/far.txt").text(), expected);
    assert_eq!(conn.get("/runaway.txt").text(), runaway);
    // Each of the 10,000 links would grow by the client's long Host.
    let host = "h".repeat(2000);
    conn.send_raw(format!("GET /hosts.txt HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    expected = hosts.replace("http://backend.internal:8080/", "https://site.test/");
    assert_eq!(conn.read_response(false).text(), expected);
    let stream = conn.get("/events.sse");
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.text(), events);
}

/// The rule configuration.md gives for a location guarding a backend that
/// ignores case: the path in any other case is refused, the path itself
/// passes.
#[test]
fn a_rule_refuses_a_guarded_path_in_another_case() {
    let dir = TempDir::new("rewrite-case");
    dir.write("www/private/a.txt", "private a");
    let config = rewrite_site(
        &dir,
        r#"[[rewrite.rules]]
name = "private, in another case"
pattern = "^private(/|$)"
conditions = [{ input = "{URL}", pattern = "^/private(/|$)", ignore_case = false, negate = true }]
action = { type = "CustomResponse", status_code = 404 }
"#,
        "",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/private/a.txt").text(), "private a");
    for other in ["/PRIVATE/a.txt", "/Private/a.txt", "/pRiVaTe"] {
        assert_eq!(conn.get(other).status, 404, "{other}");
    }
}

/// IIS's rewrite map recipes that keep the client's scheme in a redirect:
/// the map gives the scheme before a literal `://`, or the scheme and its
/// `://` at the start of the URL. Both redirect to the other host, as IIS
/// does (not to a path on this site, which redirected in a loop); a map
/// value that is not a scheme leaves the redirect on this site.
#[test]
fn a_rewrite_map_may_give_a_redirects_scheme() {
    let dir = TempDir::new("rewrite-map-scheme");
    dir.write("www/a.txt", "a");
    let config = rewrite_site(
        &dir,
        r#"[rewrite.maps.MapProtocol]
entries = { "on" = "https", "off" = "http" }

[rewrite.maps.MapSSL]
entries = { "on" = "https://", "off" = "http://" }

[rewrite.maps.NotAScheme]
entries = { "off" = "evil.test/" }

[[rewrite.rules]]
name = "www with protocol map"
pattern = "(.*)"
conditions = [{ input = "{HTTP_HOST}", pattern = "^example\\.com$" }]
action = { type = "Redirect", url = "{MapProtocol:{HTTPS}}://www.example.com/{R:1}" }

[[rewrite.rules]]
name = "scheme and host from a map"
pattern = "^ssl/(.*)"
action = { type = "Redirect", url = "{MapSSL:{HTTPS}}{HTTP_HOST}/{R:1}", append_query_string = false }

[[rewrite.rules]]
name = "a map value that is no scheme"
pattern = "^odd/(.*)"
action = { type = "Redirect", url = "{NotAScheme:{HTTPS}}{R:1}", append_query_string = false }

[[rewrite.rules]]
name = "a map's scheme before a host from the path"
pattern = "^open/(.*)"
action = { type = "Redirect", url = "{MapSSL:{HTTPS}}{R:1}", append_query_string = false }

[[rewrite.rules]]
name = "a host of two captures"
pattern = "^t/([a-z]+)/([a-z]+)$"
action = { type = "Redirect", url = "https://{R:1}-{R:2}.example.com/", append_query_string = false }

[[rewrite.rules]]
name = "a query value after the host"
pattern = "^q$"
conditions = [{ input = "{QUERY_STRING}", pattern = "^p=(.*)$" }]
action = { type = "Redirect", url = "https://example.com{C:1}", append_query_string = false }

[[rewrite.rules]]
name = "a capture in the host and one after it"
pattern = "^h/([a-z]+)(.*)$"
action = { type = "Redirect", url = "https://{R:1}.example.com{R:2}", append_query_string = false }

[[rewrite.rules]]
name = "a name from the path"
pattern = "^n/(.*)$"
action = { type = "Redirect", url = "https://{R:1}.example.com/", append_query_string = false }

[[rewrite.rules]]
name = "an empty capture before another"
pattern = "^e/(\\d*)(.*)$"
action = { type = "Redirect", url = "https://example.com{R:1}{R:2}", append_query_string = false }

[[rewrite.rules]]
name = "host and port from the Host header"
pattern = "^k/(.*)$"
conditions = [{ input = "{HTTP_HOST}", pattern = "^([^:]+)(:\\d+)?$" }]
action = { type = "Redirect", url = "https://{C:1}{C:2}/{R:1}", append_query_string = false }

[[rewrite.rules]]
name = "a port from a header"
pattern = "^p/(.*)$"
action = { type = "Redirect", url = "https://example.com:{HTTP_X_FORWARDED_PORT}/{R:1}", append_query_string = false }

[rewrite.maps.Tenants]
entries = { "shop.test" = "shop.example.com" }

[[rewrite.rules]]
name = "a host from a map with no entry"
pattern = "^g/(.*)$"
action = { type = "Redirect", url = "https://{Tenants:{HTTP_HOST}}/{R:1}", append_query_string = false }
"#,
        "",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    // The status and `Location` of `target` asked with `head` lines.
    let mut redirect = |target: &str, head: &str| {
        conn.send_raw(format!("GET {target} HTTP/1.1\r\n{head}\r\n\r\n").as_bytes());
        let resp = conn.read_response(false);
        (resp.status, resp.header("location").map(str::to_owned))
    };
    let location = |(_, location): (u16, Option<String>)| location;
    let shop = "Host: shop.test";
    assert_eq!(
        redirect("/Path/x?q=1", "Host: example.com"),
        (301, Some("http://www.example.com/Path/x?q=1".to_owned()))
    );
    assert_eq!(
        location(redirect("/ssl/a/b", shop)).as_deref(),
        Some("http://shop.test/a/b")
    );
    assert_eq!(
        location(redirect("/odd/x", shop)).as_deref(),
        Some("/evil.test/x")
    );
    // The host after a map's scheme never comes from the path: a path on
    // this site, not an open redirect.
    let open = location(redirect("/open/evil.test/x", shop)).unwrap_or_default();
    assert!(open.starts_with('/'), "{open}");
    for (target, head, expected) in [
        // Captures that make a host together stay one host.
        ("/t/abc/def", shop, "https://abc-def.example.com/"),
        // A value from the query right after a whole host starts the path.
        (
            "/q?p=.evil.test/x",
            shop,
            "https://example.com/.evil.test/x",
        ),
        ("/q?p=@evil.test", shop, "https://example.com/@evil.test"),
        ("/q?p=/fine", shop, "https://example.com/fine"),
        // A capture in the host does not let the next one lengthen it.
        (
            "/h/abc.evil.test",
            shop,
            "https://abc.example.com/.evil.test",
        ),
        ("/h/abc/x", shop, "https://abc.example.com/x"),
        // Nor does an empty capture.
        ("/e/.evil.test", shop, "https://example.com/.evil.test"),
        // A capture that would end the host stays in its name.
        ("/n/evil.test/x", shop, "https://evil.test%2Fx.example.com/"),
        ("/n/shop", shop, "https://shop.example.com/"),
        // A host and its port from the Host header.
        ("/k/x", "Host: shop.test:8443", "https://shop.test:8443/x"),
        // After a `:`, only a port.
        (
            "/p/x",
            "Host: shop.test\r\nX-Forwarded-Port: 8443",
            "https://example.com:8443/x",
        ),
        (
            "/p/x",
            "Host: shop.test\r\nX-Forwarded-Port: @evil.test",
            "https://example.com:/@evil.test/x",
        ),
    ] {
        assert_eq!(
            location(redirect(target, head)).as_deref(),
            Some(expected),
            "{target}"
        );
    }
    // A URL that would have no host is refused, not sent.
    assert_eq!(redirect("/g/evil.test/x", "Host: other.test"), (500, None));
}
