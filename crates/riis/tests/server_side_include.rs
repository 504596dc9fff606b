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
name = "ServerSideInclude"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
"#;

const SITE: &str = r#"
request_filtering = { hidden_segments = ["private"] }

[[sites.locations]]
path = "/noexec"
server_side_include = { exec_disabled = true }
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
    // The nested page was processed in its own right, relative to its URL.
    assert_eq!(
        lines[1],
        "<p>[nested nested.shtml: <h1>Head & title</h1>]</p>"
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

    // Pages that include each other stop at the nesting cap.
    let resp = conn.get("/loop.shtml");
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(
        text.starts_with("[([([(")
            && text.contains("[an error occurred while processing the directive]"),
        "{text}"
    );

    // HEAD: the page's head, no body.
    conn.send_raw(b"HEAD /page.shtml HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/html"));
}

#[test]
fn handlers_locations_and_errors() {
    let (_dir, server) = site();
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
    // POST is one of IIS's verbs for SSI pages.
    conn.send_raw(b"POST /noexec/page.stm HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 200);
    assert!(resp.text().ends_with("include=<h1>Head & title</h1>"));
}
