//! `Cors` over real sockets: preflights answered before authentication,
//! allowed origins named (or `*`) on every answer, `Vary: Origin`, denied
//! and unlisted origins, methods and headers a rule does not list, `null`,
//! and configuration errors.

mod common;

use common::{Connection, Response, RunningBinary, TempDir};

/// `openssl passwd -6 -salt saltsalt secret`
const BOB_HASH: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

const CONFIG: &str = r#"
[[modules]]
name = "ProtocolSupport"
[[modules]]
name = "Cors"
[[modules]]
name = "AnonymousAuthentication"
[[modules]]
name = "BasicAuthentication"
[[modules]]
name = "UrlAuthorization"
[[modules]]
name = "StaticFile"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]
[[handlers]]
name = "OPTIONSVerbHandler"
verbs = ["OPTIONS"]
modules = ["ProtocolSupport"]
[[handlers]]
name = "StaticFile"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile"]

[basic_authentication]
user_file = "users"

[[sites]]
name = "Cors"
root = "www"
bindings = ["127.0.0.1:0"]

[sites.cors]
enabled = true
origins = [
  { origin = "*" },
  { origin = "https://app.example.test", allow_credentials = true, max_age = 600, allowed_methods = ["PUT", "DELETE"], allowed_headers = ["X-Token"], exposed_headers = ["X-Total"] },
  { origin = "https://*.partner.test" },
  { origin = "https://bad.partner.test", allowed = false },
]

[[sites.locations]]
path = "/private"
anonymous_authentication = { enabled = false }
basic_authentication = { enabled = true }
authorization = { rules = [{ access = "Allow", users = "*" }] }

[[sites.locations]]
path = "/strict"
cors = { fail_unlisted_origins = true, origins = [{ origin = "https://app.example.test" }] }
"#;

fn start() -> (TempDir, RunningBinary) {
    let dir = TempDir::new("cors");
    dir.write("users", format!("bob:{BOB_HASH}\n"));
    for file in ["www/a.txt", "www/private/a.txt", "www/strict/a.txt"] {
        dir.write(file, "a");
    }
    // An application that sends CORS headers of its own.
    let app = dir.write(
        "www/app/cred.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nAccess-Control-Allow-Credentials: true\\r\\nAccess-Control-Expose-Headers: X-Secret\\r\\n\\r\\nsecret'\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write("riis.toml", CONFIG);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

fn send(server: &RunningBinary, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: cors.test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = Connection::open(server.addr);
    conn.send_raw(head.as_bytes());
    conn.read_response(method == "HEAD")
}

#[test]
fn allowed_origins_are_named_on_every_answer() {
    let (_dir, server) = start();
    // A rule that allows credentials names the origin, and varies by it.
    let app = send(
        &server,
        "GET",
        "/a.txt",
        &[("Origin", "https://app.example.test")],
    );
    assert_eq!(app.status, 200);
    assert_eq!(
        app.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(app.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(app.header("access-control-expose-headers"), Some("x-total"));
    assert!(
        app.header("vary").is_some_and(|v| v.contains("Origin")),
        "{:?}",
        app.headers
    );
    // `*` without credentials: `*`, the same for everyone.
    let any = send(
        &server,
        "GET",
        "/a.txt",
        &[("Origin", "http://elsewhere.test")],
    );
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    assert!(any.header("access-control-allow-credentials").is_none());
    // A wildcard below a domain; the most specific rule decides.
    let partner = send(
        &server,
        "GET",
        "/a.txt",
        &[("Origin", "https://shop.partner.test")],
    );
    assert_eq!(
        partner.header("access-control-allow-origin"),
        Some("https://shop.partner.test")
    );
    let bad = send(
        &server,
        "GET",
        "/a.txt",
        &[("Origin", "https://bad.partner.test")],
    );
    // Denied: no CORS headers (a 403 only with fail_unlisted_origins, as
    // in IIS), and the answer says it depends on the origin.
    assert_eq!(bad.status, 200);
    assert!(bad.header("access-control-allow-origin").is_none());
    assert!(bad.header("vary").is_some_and(|v| v.contains("Origin")));
    // Values no browser sends match no rule, not even `*`.
    for odd in [
        "https://evil.test x.partner.test",
        "https://u@x.partner.test",
        "nothing",
    ] {
        let r = send(&server, "GET", "/a.txt", &[("Origin", odd)]);
        assert!(r.header("access-control-allow-origin").is_none(), "{odd}");
    }
    // The application's own credentials do not go out beside the module's
    // Allow-Origin for a rule that gives none.
    let app = send(
        &server,
        "GET",
        "/app/cred.cgi",
        &[("Origin", "https://x.partner.test")],
    );
    assert_eq!(
        app.header("access-control-allow-origin"),
        Some("https://x.partner.test")
    );
    assert!(
        app.header("access-control-allow-credentials").is_none(),
        "{:?}",
        app.headers
    );
    assert!(app.header("access-control-expose-headers").is_none());
    // Nor for an origin the rules deny.
    let denied = send(
        &server,
        "GET",
        "/app/cred.cgi",
        &[("Origin", "https://bad.partner.test")],
    );
    assert_eq!(denied.status, 200);
    assert!(denied.header("access-control-allow-credentials").is_none());
    // An error answer carries it too, so the page can read why.
    let missing = send(
        &server,
        "GET",
        "/missing.txt",
        &[("Origin", "https://app.example.test")],
    );
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    // No Origin, no CORS headers, but the answer varies by it (a cache
    // must not give it to a page of another origin); `null` is not `*`'s.
    let plain = send(&server, "GET", "/a.txt", &[]);
    assert!(plain.header("access-control-allow-origin").is_none());
    assert!(plain.header("vary").is_some_and(|v| v.contains("Origin")));
    let null = send(&server, "GET", "/a.txt", &[("Origin", "null")]);
    assert_eq!(null.status, 200);
    assert!(null.header("access-control-allow-origin").is_none());
}

#[test]
fn preflights_are_answered_before_authentication() {
    let (_dir, server) = start();
    let preflight = |path: &str, origin: &str, method: &str, headers: Option<&str>| {
        let mut h = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
        ];
        if let Some(asked) = headers {
            h.push(("Access-Control-Request-Headers", asked));
        }
        send(&server, "OPTIONS", path, &h)
    };
    // The location needs a logon; its preflight does not.
    let ok = preflight(
        "/private/a.txt",
        "https://app.example.test",
        "PUT",
        Some("X-Token, content-type"),
    );
    let refused = |r: &Response| r.header("access-control-allow-origin").is_none();
    assert_eq!(
        ok.status, 403,
        "content-type is not listed: {:?}",
        ok.headers
    );
    assert!(refused(&ok));
    let ok = preflight(
        "/private/a.txt",
        "https://app.example.test",
        "PUT",
        Some("X-Token"),
    );
    assert_eq!(ok.status, 204, "{:?}", ok.headers);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(ok.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(ok.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    assert!(ok
        .header("vary")
        .is_some_and(|v| v.contains("Access-Control-Request-Method")));
    // The actual request still needs the logon.
    let actual = send(
        &server,
        "GET",
        "/private/a.txt",
        &[("Origin", "https://app.example.test")],
    );
    assert_eq!(actual.status, 401);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    // A method the rule does not list; the simple ones need no listing.
    let patch = preflight("/a.txt", "https://app.example.test", "PATCH", None);
    assert_eq!(patch.status, 403);
    assert!(refused(&patch));
    // Refused, it depends on the same request headers as when allowed.
    let vary: Vec<&str> = patch
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("vary"))
        .map(|(_, value)| value.as_str())
        .collect();
    let vary = vary.join(", ");
    for token in [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ] {
        assert!(vary.contains(token), "{vary}");
    }
    let post = preflight("/a.txt", "http://elsewhere.test", "POST", None);
    assert_eq!(post.status, 204);
    assert_eq!(post.header("access-control-allow-origin"), Some("*"));
    // An OPTIONS without Access-Control-Request-Method is no preflight.
    let options = send(
        &server,
        "OPTIONS",
        "/a.txt",
        &[("Origin", "http://elsewhere.test")],
    );
    assert_eq!(options.status, 200);
    assert!(options.header("allow").is_some());
}

#[test]
fn unlisted_origins_fail_where_the_location_says_so() {
    let (_dir, server) = start();
    let listed = send(
        &server,
        "GET",
        "/strict/a.txt",
        &[("Origin", "https://app.example.test")],
    );
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    // The location's list replaces the site's: `*` is not in it.
    let unlisted = send(
        &server,
        "GET",
        "/strict/a.txt",
        &[("Origin", "http://elsewhere.test")],
    );
    assert_eq!(unlisted.status, 403);
    // Without an Origin it is no cross-origin request.
    assert_eq!(send(&server, "GET", "/strict/a.txt", &[]).status, 200);
}

#[test]
fn origins_that_could_never_match_are_configuration_errors() {
    let dir = TempDir::new("cors-config");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    for (origin, expected) in [
        ("https://app.example.test/", "browsers send no path"),
        ("app.example.test", "no scheme"),
        ("https://app.example.test:x", "the port"),
        ("https://app.example.test:443", "default port"),
    ] {
        let config = dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"Cors\"\n[[modules]]\nname = \"StaticFile\"\n\
                 [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n\
                 cors = {{ enabled = true, origins = [{{ origin = \"{origin}\" }}] }}\n"
            ),
        );
        let out = common::riis_command("check-config", &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{origin}");
        assert!(
            err.contains("key `sites[0].cors.origins[0].origin`") && err.contains(expected),
            "{origin}: {err}"
        );
    }
    // Credentials for every origin is the misconfiguration CORS warns of.
    for (rule, expected) in [
        (
            "{ origin = \"*\", allow_credentials = true }",
            "allow_credentials with a rule for every origin",
        ),
        (
            "{ origin = \"https://*\", allow_credentials = true }",
            "allow_credentials with a rule for every origin",
        ),
        // Any page can send `Origin: null` from a sandboxed frame.
        (
            "{ origin = \"null\", allow_credentials = true }",
            "or for `null`",
        ),
        (
            "{ origin = \"https://a.test\", allowed_methods = [\"*\"] }",
            "there is no `*`",
        ),
    ] {
        let config = dir.write(
            "riis.toml",
            format!(
                "[[modules]]\nname = \"Cors\"\n[[modules]]\nname = \"StaticFile\"\n\
                 [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n\
                 cors = {{ enabled = true, origins = [{rule}] }}\n"
            ),
        );
        let out = common::riis_command("check-config", &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{rule}: {err}"
        );
    }
}

/// IIS's `<cors>` in a `web.config` converts to a section that serves the
/// same answers.
#[test]
fn an_iis_cors_section_converts() {
    let dir = TempDir::new("cors-web-config");
    dir.write("www/a.txt", "a");
    let web_config = dir.write(
        "web.config",
        r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <cors enabled="true" failUnlistedOrigins="true">
      <add origin="https://*.example.test" allowCredentials="true" maxAge="-1">
        <allowMethods><add method="DELETE" /><add method="PUT" /><remove method="PUT" /></allowMethods>
        <allowHeaders allowAllRequestedHeaders="false"><add header="X-Token" /></allowHeaders>
      </add>
      <add origin="https://bad.example.test" allowed="false" />
    </cors>
  </system.webServer>
</configuration>
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .arg("import-web-config")
        .arg(&web_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = String::from_utf8(out.stdout).unwrap();
    assert!(
        !converted.contains("max_age"),
        "IIS's -1 sends none: {converted}"
    );
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"Cors\"\n[[modules]]\nname = \"StaticFile\"\n{converted}\n\
             [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n"
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let preflight = |origin: &str, method: &str| {
        send(
            &server,
            "OPTIONS",
            "/a.txt",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", "x-token"),
            ],
        )
    };
    let ok = preflight("https://shop.example.test", "DELETE");
    assert_eq!(ok.status, 204, "{:?}", ok.headers);
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(preflight("https://shop.example.test", "PUT").status, 403);
    assert_eq!(preflight("https://bad.example.test", "DELETE").status, 403);
    let unlisted = send(
        &server,
        "GET",
        "/a.txt",
        &[("Origin", "https://other.test")],
    );
    assert_eq!(unlisted.status, 403);
}
