//! BasicAuthentication, AnonymousAuthentication and UrlAuthorization over
//! real sockets: the challenge, 401.1 for wrong credentials and 401.2 for
//! none where anonymous access is off, bcrypt and SHA-crypt users, roles
//! from the group file, a changed user file taking effect without a
//! reload, a child request keeping its parent's user, and a missing user
//! file refusing everything (500).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Connection, Response, RunningBinary, TempDir};

/// `openssl passwd -6 -salt saltsalt secret`
const BOB_HASH: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

fn config(dir: &TempDir) -> PathBuf {
    // Cost 4: the lowest bcrypt takes, so the tests stay quick.
    let alice = bcrypt::hash("wonderland", 4).unwrap();
    // Cost 10 for erin: a check that takes long enough for requests to
    // come together while it runs.
    let erin = bcrypt::hash("meadow", 10).unwrap();
    dir.write(
        "users",
        format!("alice:{alice}\nbob:{BOB_HASH}\nerin:{erin}\n"),
    );
    dir.write("groups", "admins: alice\n");
    dir.write("other-users", format!("bob:{BOB_HASH}\n"));
    dir.write("other-groups", "admins: bob\n");
    for file in [
        "www/a.txt",
        "www/members/a.txt",
        "www/members/index.html",
        "www/admin/a.txt",
        "www/broken/a.txt",
        "www/pub/index.html",
        "www/other/index.html",
    ] {
        dir.write(file, "alpha");
    }
    let root = dir.path().join("www");
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "IpRestriction"
[[modules]]
name = "BasicAuthentication"
[[modules]]
name = "AnonymousAuthentication"
[[modules]]
name = "UrlAuthorization"
[[modules]]
name = "CustomError"
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

[basic_authentication]
user_file = "users"          # beside this file
group_file = "groups"

[[sites]]
name = "Auth"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/members"
basic_authentication = {{ enabled = true, realm = "Members \"only\"" }}
anonymous_authentication = {{ enabled = false }}

[[sites.locations]]
path = "/admin"
basic_authentication = {{ enabled = true }}
authorization = {{ rules = [
    {{ access = "Allow", roles = "admins" }},
    {{ access = "Deny", users = "?" }},
] }}

# Only the default document of /pub needs a logon.
[[sites.locations]]
path = "/pub/index.html"
basic_authentication = {{ enabled = true }}
anonymous_authentication = {{ enabled = false }}

# Refused by address, as 401: no challenge, a logon cannot help.
[[sites.locations]]
path = "/members/blocked"
ip_security = {{ deny_action = "Unauthorized", rules = [{{ address = "127.0.0.0/8" }}] }}

# A folder whose page has users of its own: /other/'s default document
# is a child request into it.
[[sites.locations]]
path = "/other"
basic_authentication = {{ enabled = true }}
anonymous_authentication = {{ enabled = false }}

[[sites.locations]]
path = "/other/index.html"
basic_authentication = {{ enabled = true, user_file = "other-users", group_file = "other-groups" }}
anonymous_authentication = {{ enabled = false }}
authorization = {{ rules = [{{ access = "Allow", roles = "admins" }}] }}

[[sites.locations]]
path = "/broken"
basic_authentication = {{ enabled = true, user_file = "missing-users" }}
"#,
            root = root.display()
        ),
    )
}

fn get_as(conn: &mut Connection, path: &str, credentials: Option<&str>) -> Response {
    let authorization = credentials.map_or(String::new(), |c| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    conn.send_raw(
        format!("GET {path} HTTP/1.1\r\nHost: auth.test:8080\r\n{authorization}\r\n").as_bytes(),
    );
    conn.read_response(false)
}

/// The status with its substatus, from CustomError's detailed page
/// (the test client is local).
fn status(resp: &Response) -> String {
    if resp.status == 200 {
        return "200".into();
    }
    let text = resp.text();
    let code = resp.status.to_string();
    let at = text.find(&format!("HTTP Error {code}")).expect(&text) + 11;
    text[at..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn basic_logons_anonymous_access_and_url_rules() {
    let dir = TempDir::new("auth");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    // Public: no credentials needed, no challenge.
    let public = get_as(&mut conn, "/a.txt", None);
    assert_eq!(public.status, 200);
    assert_eq!(public.header("www-authenticate"), None);

    // Credentials without base64's `=` padding are taken, as nginx and
    // Apache take them ("bob:secret" is `Ym9iOnNlY3JldA==`).
    conn.send_raw(
        b"GET /members/a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic Ym9iOnNlY3JldA\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 200);

    // /members: anonymous access off.
    let none = get_as(&mut conn, "/members/a.txt", None);
    assert_eq!(status(&none), "401.2");
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Basic realm="Members \"only\"", charset="UTF-8""#)
    );
    for wrong in [
        "alice:Wonderland",
        "alice:",
        "mallory:wonderland",
        "bob:wonderland",
    ] {
        let resp = get_as(&mut conn, "/members/a.txt", Some(wrong));
        assert_eq!(status(&resp), "401.1", "{wrong}");
        assert!(resp.header("www-authenticate").is_some());
    }
    // Malformed credentials.
    conn.send_raw(b"GET /members/a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic !!!\r\n\r\n");
    assert_eq!(status(&conn.read_response(false)), "401.1");
    // Two sets of credentials, a good one first: which one counts would
    // be for each reader to guess, so neither does (as nginx: 400).
    conn.send_raw(
        format!(
            "GET /members/a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {}\r\n\
             Authorization: Basic {}\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode("bob:secret"),
            base64::engine::general_purpose::STANDARD.encode("admin:x"),
        )
        .as_bytes(),
    );
    let twice = conn.read_response(false);
    assert_eq!(status(&twice), "400");
    assert_eq!(twice.header("www-authenticate"), None);
    // bcrypt and SHA-512-crypt users; the scheme in any case.
    assert_eq!(
        get_as(&mut conn, "/members/a.txt", Some("alice:wonderland")).status,
        200
    );
    assert_eq!(
        get_as(&mut conn, "/members/a.txt", Some("bob:secret")).status,
        200
    );
    conn.send_raw(
        format!(
            "GET /members/a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: bAsIc {}\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode("bob:secret")
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_response(false).status, 200);
    // Again: remembered, same answer.
    assert_eq!(
        get_as(&mut conn, "/members/a.txt", Some("alice:wonderland")).status,
        200
    );
    // The default document's child request keeps the user.
    let home = get_as(&mut conn, "/members/", Some("bob:secret"));
    assert_eq!(home.status, 200);
    assert_eq!(home.text(), "alpha");

    let blocked = get_as(&mut conn, "/members/blocked/a.txt", Some("bob:secret"));
    assert_eq!(status(&blocked), "401.503");
    assert_eq!(blocked.header("www-authenticate"), None);

    // A child request into a location with other users logs on against
    // them: alice of the site's file (an admin there) is nobody in
    // /other/index.html's, whose admin is bob.
    assert_eq!(
        get_as(&mut conn, "/other/", Some("alice:wonderland")).status,
        401
    );
    let other = get_as(&mut conn, "/other/", Some("bob:secret"));
    assert_eq!(other.status, 200);
    assert_eq!(other.text(), "alpha");

    // A password too long to check; a name in another case is another
    // (unknown) user.
    let long = format!("bob:{}", "x".repeat(513));
    assert_eq!(
        status(&get_as(&mut conn, "/members/a.txt", Some(&long))),
        "401.1"
    );
    assert_eq!(
        status(&get_as(&mut conn, "/members/a.txt", Some("Bob:secret"))),
        "401.1"
    );

    // An anonymous request's child request into a location that needs a
    // logon needs one too.
    assert_eq!(status(&get_as(&mut conn, "/pub/", None)), "401.2");
    assert_eq!(get_as(&mut conn, "/pub/", Some("bob:secret")).status, 200);

    // /admin: anonymous allowed in, but the rules want an admin.
    let anonymous = get_as(&mut conn, "/admin/a.txt", None);
    assert_eq!(status(&anonymous), "401.2");
    // The realm defaults to the host name.
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Basic realm="auth.test", charset="UTF-8""#)
    );
    assert_eq!(
        status(&get_as(&mut conn, "/admin/a.txt", Some("bob:secret"))),
        "401.2"
    );
    assert_eq!(
        get_as(&mut conn, "/admin/a.txt", Some("alice:wonderland")).status,
        200
    );

    // A user file that cannot be read refuses everything with credentials.
    let broken = get_as(&mut conn, "/broken/a.txt", Some("alice:wonderland"));
    assert_eq!(broken.status, 500);
    assert!(broken.text().contains("missing-users"), "{}", broken.text());

    // A new user, and a removed one, without a reload.
    let carol = bcrypt::hash("c4rol", 4).unwrap();
    std::fs::write(
        dir.path().join("users"),
        format!("carol:{carol}\nbob:{BOB_HASH}\n"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_as(&mut conn, "/members/a.txt", Some("carol:c4rol")).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the new user file was never read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // alice is gone, remembered logon or not.
    assert_eq!(
        status(&get_as(
            &mut conn,
            "/members/a.txt",
            Some("alice:wonderland")
        )),
        "401.1"
    );
}

#[test]
fn bad_rules_are_configuration_errors() {
    let dir = TempDir::new("auth-config");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"UrlAuthorization\"\n\n[authorization]\nrules = [{{ access = \"Allow\" }}]\n\n\
             [[sites]]\nname = \"s\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("riis.toml:5"), "{err}");
    assert!(err.contains("names `users`, `roles` or both"), "{err}");

    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"BasicAuthentication\"\n\n[basic_authentication]\nrealm = \"a\\nb\"\n\n\
             [[sites]]\nname = \"s\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n",
            root.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("basic_authentication.realm"), "{err}");
    assert!(err.contains("control characters"), "{err}");
}

/// An IIS site's web.config that requires a logon (anonymous access off,
/// Basic on, IIS's allow-everyone rule removed, two users allowed, one
/// user denied, a folder open to anonymous readers) converts with `riis
/// import-web-config` into a configuration that, given a user file, lets
/// in and refuses whom IIS would.
#[test]
fn an_iis_sites_logon_rules_convert_from_its_web_config() {
    let dir = TempDir::new("auth-web-config");
    let alice = bcrypt::hash("wonderland", 4).unwrap();
    dir.write(
        "users",
        format!("alice:{alice}\nbob:{BOB_HASH}\nmallory:{BOB_HASH}\n"),
    );
    dir.write("www/a.txt", "alpha");
    dir.write("www/public/a.txt", "open");
    let web_config = dir.write(
        "web.config",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <system.webServer>
    <security>
      <authentication>
        <anonymousAuthentication enabled="false" userName="" />
        <basicAuthentication enabled="true" realm="Members" />
        <windowsAuthentication enabled="false" />
      </authentication>
      <authorization>
        <remove users="*" roles="" verbs="" />
        <add accessType="Allow" users="alice,bob" />
        <add accessType="Deny" users="bob" verbs="POST" />
      </authorization>
    </security>
  </system.webServer>
  <location path="public">
    <system.webServer><security>
      <authentication><anonymousAuthentication enabled="true" /></authentication>
      <authorization><add accessType="Allow" users="?" verbs="GET" /></authorization>
    </security></system.webServer>
  </location>
</configuration>
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["import-web-config", web_config.to_str().unwrap()])
        .args(["--location", "/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = String::from_utf8(out.stdout).unwrap();
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("basic_authentication.user_file"), "{notes}");
    // Windows authentication turned off is what riis does: no note.
    assert!(!notes.contains("windowsAuthentication"), "{notes}");
    let root = dir.path().join("www");
    let site = converted.replacen(
        "[[sites.locations]]\npath = \"/\"\n",
        &format!(
            "[[sites]]\nname = \"Converted\"\nroot = '{}'\nbindings = [\"127.0.0.1:0\"]\n\n\
             [[sites.locations]]\npath = \"/\"\n",
            root.display()
        ),
        1,
    );
    assert_ne!(site, converted, "{converted}");
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"BasicAuthentication\"\n[[modules]]\nname = \"AnonymousAuthentication\"\n\
             [[modules]]\nname = \"UrlAuthorization\"\n[[modules]]\nname = \"StaticFile\"\n\n\
             [basic_authentication]\nuser_file = \"users\"\n\n{site}"
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    let anonymous = get_as(&mut conn, "/a.txt", None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"Members\", charset=\"UTF-8\"")
    );
    assert_eq!(
        get_as(&mut conn, "/a.txt", Some("alice:wonderland")).status,
        200
    );
    assert_eq!(get_as(&mut conn, "/a.txt", Some("bob:secret")).status, 200);
    // Logged on, but no rule allows mallory.
    assert_eq!(
        get_as(&mut conn, "/a.txt", Some("mallory:secret")).status,
        401
    );
    // bob's POST is denied (the static handler would answer 405).
    conn.send_raw(
        format!(
            "POST /a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {}\r\nContent-Length: 0\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode("bob:secret")
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_response(false).status, 401);
    // The folder opens reading to anonymous clients, and keeps the file's
    // users.
    assert_eq!(get_as(&mut conn, "/public/a.txt", None).text(), "open");
    assert_eq!(
        get_as(&mut conn, "/public/a.txt", Some("alice:wonderland")).status,
        200
    );
    assert_eq!(
        get_as(&mut conn, "/public/a.txt", Some("mallory:secret")).status,
        401
    );
}

/// A browser opens several connections at once with the same credentials
/// (six for a page's parts): one check answers them all, rather than each
/// taking one of the client's four checks at once and the rest getting 503.
#[test]
fn logons_with_the_same_credentials_at_once_share_one_check() {
    let dir = TempDir::new("auth-together");
    let config = config(&dir);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // Six connections at once, each asking with `credentials`: the statuses.
    let at_once = |credentials: &'static str| -> Vec<u16> {
        let addr = server.addr;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        (0..6)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut conn = Connection::open(addr);
                    barrier.wait();
                    get_as(&mut conn, "/members/a.txt", Some(credentials)).status
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    };
    assert_eq!(at_once("erin:meadow"), [200; 6]);
    // A wrong password shares its check's failure the same way.
    assert_eq!(at_once("erin:meadows"), [401; 6]);
    // So does an unknown name's: answered as a known one's wrong password
    // is, not 503 past the client's four checks (which would tell the
    // names apart).
    assert_eq!(at_once("nobody:meadows"), [401; 6]);
}
