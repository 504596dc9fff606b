//! `ServerSideInclude` over real sockets: IIS's `SSINC-*` handlers by
//! default, includes as child requests (nested, access-controlled, failed
//! ones replaced by the error message), `#echo`, `#config`, `#fsize`,
//! `#flastmod`, `#exec`, and what the page's response carries.

mod common;

use common::{Connection, RunningBinary, TempDir};

/// The module list, without `[[handlers]]`: the default handlers map
/// `*.stm`, `*.shtm` and `*.shtml` to ServerSideInclude.
const CONFIG: &str = r#"
[[modules]]
name = "RequestFiltering"
[[modules]]
name = "CustomError"
[[modules]]
name = "DynamicCompression"
[[modules]]
name = "OutputCache"
[[modules]]
name = "ServerSideInclude"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
"#;

const SITE: &str = r#"
request_filtering = { hidden_segments = ["private"] }
output_cache = { policy = "CacheForTimePeriod", frequent_hit_threshold = 1 }
dynamic_compression = { enabled = false }

[sites.http_errors]
error_mode = "Custom"
errors = [{ status = 404, path = "/err/404.shtml", response_mode = "ExecuteURL" }]

[[sites.locations]]
path = "/noexec"
server_side_include = { exec_disabled = true }

[[sites.locations]]
path = "/gz"
dynamic_compression = { enabled = true }

[[sites.locations]]
path = "/gz/dd"
default_document = { files = ["index.shtml"] }

[[sites.locations]]
path = "/nolinks"
static_file = { follow_symlinks = false }
"#;

fn site() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("ssi");
    let root = dir.path().join("www");
    dir.write("www/inc/head.html", "<h1>Head & title</h1>");
    dir.write("www/inc/1k.bin", vec![b'x'; 1260]);
    dir.write("www/private/secret.html", "SECRET");
    dir.write(
        "www/inc/nested.shtml",
        "[nested <!--#echo var=\"DOCUMENT_NAME\"-->: <!--#include file=\"head.html\"-->]",
    );
    dir.write(
        "www/page.shtml",
        concat!(
            "<p><!--#include file=\"inc/head.html\"--></p>\n",
            "<p><!-- #INCLUDE VIRTUAL = '/inc/nested.shtml' --></p>\n",
            "<p>uri=<!--#echo var=\"DOCUMENT_URI\"--> q=<!--#echo var=\"QUERY_STRING\"--></p>\n",
            "<p>agent=<!--#echo var=\"HTTP_USER_AGENT\"--> raw=<!--#echo encoding=\"none\" var=\"HTTP_X_RAW\"--></p>\n",
            "<p>size=<!--#fsize file=\"inc/1k.bin\"--> ",
            "<!--#config sizefmt=\"bytes\"-->bytes=<!--#fsize virtual=\"/inc/1k.bin\"--></p>\n",
            "<p>year=<!--#config timefmt=\"%Y\"--><!--#flastmod file=\"inc/head.html\"--></p>\n",
            "<p>missing=<!--#include file=\"inc/missing.html\"--></p>\n",
            "<!--#config errmsg=\"[oops]\"-->",
            "<p>hidden=<!--#include virtual=\"/private/secret.html\"--></p>\n",
            "<p>up=<!--#include file=\"../x.html\"--></p>\n",
            "<p>unknown=<!--#printenv--></p>\n",
            "<p>cmd=<!--#exec cmd=\"/bin/echo hi\"--></p>\n",
            "<p>cgi=<!--#exec cgi=\"/inc/head.html?a+b\"--></p>\n",
            "<p>self=<!--#include file=\"page.shtml\"--></p>\n",
            "<!-- an ordinary comment stays -->\n",
        ),
    );
    dir.write(
        "www/loop.shtml",
        "[<!--#include virtual=\"/loop2.shtml\"-->]",
    );
    dir.write(
        "www/loop2.shtml",
        "(<!--#include virtual=\"/loop.shtml\"-->)",
    );
    dir.write(
        "www/noexec/page.stm",
        "exec=<!--#exec cgi=\"/inc/head.html\"--> include=<!--#include virtual=\"/inc/head.html\"-->",
    );
    dir.write("www/plain.html", "<!--#include file=\"inc/head.html\"-->");
    // Pages that include each other several times: refused at the first
    // repeat, not 4^10 requests.
    let four = |target: &str| format!("<!--#include virtual=\"{target}\"-->").repeat(4);
    dir.write("www/rec_a.shtml", format!("A({})", four("/rec_b.shtml")));
    dir.write("www/rec_b.shtml", format!("B({})", four("/rec_a.shtml")));
    // More includes than a request's pages may start.
    dir.write(
        "www/many.shtml",
        "<!--#include file=\"inc/x.txt\"-->".repeat(1001),
    );
    dir.write("www/inc/x.txt", "x");
    // Output much larger than the page: sent in pieces, not held whole.
    dir.write(
        "www/big.shtml",
        format!(
            "<!--#config errmsg=\"{}\"-->{}",
            "e".repeat(1000),
            "<!--#x-->".repeat(2000)
        ),
    );
    dir.write(
        "www/err/404.shtml",
        "not here: <!--#echo var=\"DOCUMENT_URI\"-->",
    );
    dir.write(
        "www/who.shtml",
        "<!--#echo var=\"HTTP_COOKIE\"--> <!--#echo var=\"HTTP_AUTHORIZATION\"-->",
    );
    // A page past 256 KiB lets output go, compressed, then includes a page
    // that does the same: all of it must come through the one encoder.
    dir.write(
        "www/gz/big.shtml",
        format!("{}<!--#config sizefmt=\"bytes\"-->END", "b".repeat(600_000)),
    );
    dir.write(
        "www/gz/page.shtml",
        format!(
            "{}<!--#include file=\"big.shtml\"-->TAIL",
            "a".repeat(300_000)
        ),
    );
    // An include that streams before the page let anything go: the page
    // is still compressed whole.
    dir.write("www/gz/early.shtml", "S<!--#include file=\"big.shtml\"-->T");
    // The same through a request the include runs in turn (the folder's
    // default document), after the page let output go.
    dir.write(
        "www/gz/dd/index.shtml",
        format!("{}<!--#config sizefmt=\"bytes\"-->END", "b".repeat(600_000)),
    );
    dir.write(
        "www/gz/nested.shtml",
        format!(
            "{}<!--#include virtual=\"/gz/dd/\"-->TAIL",
            "a".repeat(300_000)
        ),
    );
    // Sizes of the page itself (a "last modified" footer's idiom) and of a
    // page a HEAD would run.
    dir.write(
        "www/gz/sizes.shtml",
        "<!--#config sizefmt=bytes-->self=<!--#fsize file=\"sizes.shtml\"--> big=<!--#fsize file=\"big.shtml\"-->",
    );
    dir.write("outside.txt", "outside the root");
    dir.write("www/nolinks/real.txt", "12345");
    std::os::unix::fs::symlink(
        dir.path().join("outside.txt"),
        root.join("nolinks/link.txt"),
    )
    .unwrap();
    dir.write(
        "www/nolinks/sizes.shtml",
        "<!--#config sizefmt=bytes-->real=<!--#fsize file=\"real.txt\"--> link=<!--#fsize file=\"link.txt\"--> hidden=<!--#fsize virtual=\"/private/secret.html\"-->",
    );
    let config = dir.write(
        "riis.toml",
        format!(
            "{CONFIG}\n[[sites]]\nname = \"Test\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n{SITE}",
            root.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// A gzip body, decoded: it must be one valid stream.
fn gunzip(body: &[u8]) -> String {
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut plain)
        .expect("one valid gzip stream of text");
    plain
}

fn get_with(conn: &mut Connection, path: &str, headers: &str) -> common::Response {
    conn.send_raw(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").as_bytes());
    conn.read_response(false)
}

#[test]
fn directives_are_replaced_by_what_they_ask_for() {
    let (_dir, server) = site();
    let mut conn = Connection::open(server.addr);
    // The client's range, validators and encodings do not reach the
    // includes (each must give its whole, plain entity) nor the page.
    let resp = get_with(
        &mut conn,
        "/page.shtml?x=1",
        "User-Agent: <b>bot</b>\r\nX-Raw: <i>raw</i>\r\nRange: bytes=0-3\r\nIf-None-Match: *\r\nAccept-Encoding: gzip\r\n",
    );
    let text = resp.text();
    assert_eq!(resp.status, 200, "{text}");
    assert_eq!(resp.header("content-type"), Some("text/html"));
    assert_eq!(resp.header("last-modified"), None);
    assert_eq!(resp.header("etag"), None);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "<p><h1>Head & title</h1></p>");
    // The nested page was processed in its own right, relative to its
    // URL; SSI's variables describe the page asked for, as Apache's.
    assert_eq!(
        lines[1],
        "<p>[nested page.shtml: <h1>Head & title</h1>]</p>"
    );
    assert_eq!(lines[2], "<p>uri=/page.shtml q=x=1</p>");
    // Echoed values are HTML-escaped unless the page says otherwise.
    assert_eq!(
        lines[3],
        "<p>agent=&lt;b&gt;bot&lt;/b&gt; raw=<i>raw</i></p>"
    );
    assert_eq!(lines[4], "<p>size=1.2K bytes=1,260</p>");
    let year = lines[5]
        .strip_prefix("<p>year=")
        .and_then(|y| y.strip_suffix("</p>"))
        .unwrap();
    assert!(
        year.len() == 4 && year.parse::<u32>().is_ok_and(|y| y >= 2024),
        "{year}"
    );
    // A missing include: the default message, and nothing of the 404
    // (neither CustomError's page nor the status).
    assert_eq!(
        lines[6],
        "<p>missing=[an error occurred while processing the directive]</p>"
    );
    // From `#config errmsg` on, its message.
    assert_eq!(lines[7], "<p>hidden=[oops]</p>", "RequestFiltering applies");
    assert_eq!(lines[8], "<p>up=[oops]</p>");
    assert_eq!(lines[9], "<p>unknown=[oops]</p>");
    assert_eq!(lines[10], "<p>cmd=[oops]</p>");
    assert_eq!(lines[11], "<p>cgi=<h1>Head & title</h1></p>");
    // A page including itself: refused, not a loop.
    assert_eq!(lines[12], "<p>self=[oops]</p>");
    assert_eq!(lines[13], "<!-- an ordinary comment stays -->");
    assert!(!text.contains("SECRET"));
    assert!(!text.contains("#include"));

    // Pages that include each other: the include of a page being answered
    // further up is refused.
    let resp = conn.get("/loop.shtml");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "[([an error occurred while processing the directive])]"
    );

    // Pages that include each other: each repeat refused at once.
    let resp = conn.get("/rec_a.shtml");
    assert_eq!(resp.status, 200);
    let err = "[an error occurred while processing the directive]";
    assert_eq!(
        resp.text(),
        format!("A({})", format!("B({})", err.repeat(4)).repeat(4))
    );

    // At most 1,000 child requests for one request's pages.
    let resp = conn.get("/many.shtml");
    assert_eq!(resp.text(), format!("{}{err}", "x".repeat(1000)));

    // 2 MB of output from a 20 KB page goes out in pieces (chunked),
    // whole.
    let resp = conn.get("/big.shtml");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.body.len(), 2000 * 1000);

    // HEAD: the page's head, no body.
    conn.send_raw(b"HEAD /page.shtml HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/html"));
}

#[test]
fn handlers_locations_and_errors() {
    let (dir, server) = site();
    let mut conn = Connection::open(server.addr);
    // `exec_disabled` refuses `#exec`; `#include` still works there.
    let resp = conn.get("/noexec/page.stm");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "exec=[an error occurred while processing the directive] include=<h1>Head & title</h1>"
    );
    // Pages of other extensions are files.
    let resp = conn.get("/plain.html");
    assert_eq!(resp.text(), "<!--#include file=\"inc/head.html\"-->");
    // A missing page is StaticFile's 404 through CustomError; other methods
    // than the handler's get 405 at handler mapping.
    assert_eq!(conn.get("/none.shtml").status, 404);
    conn.send_raw(b"DELETE /page.shtml HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 405);
    // A page as CustomError's ExecuteURL page: its own output, under the
    // error's status.
    let resp = conn.get("/gone.html");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.text(), "not here: /err/404.shtml");
    // `#fsize` describes only what the client could fetch: not through a
    // link StaticFile would not follow, not what RequestFiltering hides.
    let err = "[an error occurred while processing the directive]";
    let resp = conn.get("/nolinks/sizes.shtml");
    assert_eq!(resp.text(), format!("real=5 link={err} hidden={err}"));
    // Never kept by OutputCache (a page may show each client its own), and
    // no credentials echoed.
    for user in ["alice", "bob", "carol"] {
        let resp = get_with(&mut conn, "/who.shtml", &format!("Cookie: sid={user}\r\n"));
        assert_eq!(resp.text(), format!("sid={user} (none)"));
    }
    let resp = get_with(
        &mut conn,
        "/who.shtml",
        "Authorization: Basic YWxpY2U6cHc=\r\n",
    );
    assert_eq!(resp.text(), "(none) (none)");
    // Compressed output stays one stream when the page and what it
    // includes both let output go.
    let resp = get_with(&mut conn, "/gz/page.shtml", "Accept-Encoding: gzip\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&resp.body),
        format!("{}{}ENDTAIL", "a".repeat(300_000), "b".repeat(600_000))
    );
    let resp = get_with(&mut conn, "/gz/early.shtml", "Accept-Encoding: gzip\r\n");
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&resp.body), format!("S{}ENDT", "b".repeat(600_000)));
    let resp = get_with(&mut conn, "/gz/nested.shtml", "Accept-Encoding: gzip\r\n");
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&resp.body),
        format!("{}{}ENDTAIL", "a".repeat(300_000), "b".repeat(600_000))
    );
    let resp = conn.get("/gz/sizes.shtml");
    let own = std::fs::metadata(dir.path().join("www/gz/sizes.shtml"))
        .unwrap()
        .len();
    assert_eq!(
        resp.text(),
        format!("self={own} big=600,033"),
        "a HEAD's body stays out of the page"
    );
    // POST is one of IIS's verbs for SSI pages.
    conn.send_raw(b"POST /noexec/page.stm HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert!(resp.text().ends_with("include=<h1>Head & title</h1>"));
}

/// `examples/ssi/` works as its README says (run from a copy).
#[test]
fn the_example_pages_share_their_header_and_footer() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ssi");
    let dir = TempDir::new("ssi-example");
    for file in [
        "riis.toml",
        "www/index.shtml",
        "www/about.shtml",
        "www/inc/header.shtml",
        "www/inc/footer.shtml",
    ] {
        dir.write(file, std::fs::read(example.join(file)).unwrap());
    }
    let config = dir.path().join("riis.toml");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    for (path, title) in [
        ("/", "<h1>Welcome</h1>"),
        ("/about.shtml", "<h1>About</h1>"),
    ] {
        let resp = conn.get(path);
        assert_eq!(resp.status, 200, "{path}");
        let text = resp.text();
        assert!(text.starts_with("<!DOCTYPE html>"), "{path}: {text}");
        assert!(text.contains(title), "{path}: {text}");
        assert!(
            text.contains("<footer>This page was changed 2"),
            "{path}: {text}"
        );
        assert!(text.trim_end().ends_with("</html>"), "{path}: {text}");
        assert!(!text.contains("[an error occurred"), "{path}: {text}");
    }
    assert!(conn.get("/").text().contains("from\n127.0.0.1."));
    // The fragments are the pages' alone.
    assert_eq!(conn.get("/inc/header.shtml").status, 404);
}
