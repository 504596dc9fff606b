//! AspNetCoreModule over real sockets. The application is a Node.js
//! program written here that keeps the contract an ASP.NET Core
//! application's IIS integration keeps (.NET is not in Debian's archive,
//! so the tests cannot run a real one): it listens on `127.0.0.1` at
//! `ASPNETCORE_PORT`, answers 400 to a request whose `MS-ASPNETCORE-TOKEN`
//! is not `ASPNETCORE_TOKEN`, and stops at a token-bearing
//! `POST {ASPNETCORE_APPL_PATH}/iisintegration` with
//! `MS-ASPNETCORE-EVENT: shutdown`. Outside CI a machine without `node`
//! skips these tests; in CI that is a failure (`.ci/run` installs it).

mod common;

use std::path::PathBuf;

use common::{fields, node, wait_for, Connection, RunningBinary, TempDir};

/// The application. On SIGTERM it takes a second to finish (as a host
/// stopping gracefully does), then writes `stopped-cleanly` and exits.
const APPLICATION: &str = r#"
const http = require("http");
const fs = require("fs");
const port = Number(process.env.ASPNETCORE_PORT);
const base = (process.env.ASPNETCORE_APPL_PATH || "/").replace(/\/$/, "");
const server = http.createServer((request, response) => {
  if (request.headers["ms-aspnetcore-token"] !== process.env.ASPNETCORE_TOKEN) {
    response.writeHead(400);
    response.end("the pairing token does not match\n");
    return;
  }
  if (request.method === "POST" && request.url === `${base}/iisintegration`
      && request.headers["ms-aspnetcore-event"] === "shutdown") {
    response.writeHead(202);
    response.end(() => process.exit(0));
    return;
  }
  if (request.url.endsWith("/accel")) {
    response.writeHead(200, { "X-Accel-Redirect": "/other/echo" });
    response.end();
    return;
  }
  const lines = [
    `port=${port}`,
    `token=${request.headers["ms-aspnetcore-token"] || ""}`,
    `path_base=${base}`,
    `environment=${process.env.ASPNETCORE_ENVIRONMENT || ""}`,
    `tenant=${request.headers["x-tenant"] || ""}`,
    `client_certificate=${request.headers["ms-aspnetcore-clientcert"] || ""}`,
    `forwarded_for=${request.headers["x-forwarded-for"] || ""}`,
    `forwarded_proto=${request.headers["x-forwarded-proto"] || ""}`,
    `url=${request.url}`,
    `pid=${process.pid}`,
  ];
  response.writeHead(200, { "Content-Type": "text/plain" });
  response.end(lines.join("\n") + "\n");
});
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  setTimeout(() => {
    fs.writeFileSync("stopped-cleanly", "yes\n");
    process.exit(0);
  }, 1000);
});
"#;

/// A configuration that passes `/shop/*` to the application `section`
/// describes (the `asp_net_core` table's keys).
fn config(dir: &TempDir, section: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write("app.js", APPLICATION);
    dir.write(
        "riis.toml",
        format!(
            r#"[server]
pid_file = "riis.pid"

[[modules]]
name = "AspNetCoreModule"
[[modules]]
name = "ReverseProxy"
[[modules]]
name = "CustomError"

[[handlers]]
name = "Shop"
path = "/shop/*"
modules = ["AspNetCoreModule", "ReverseProxy"]

[asp_net_core]
{section}

[[sites]]
name = "Shop"
root = '{root}'
bindings = ["127.0.0.1:0"]
"#,
            root = root.display()
        ),
    )
}

/// A request with the ASP.NET Core Module's own headers, as a client
/// might forge them.
fn forged(method: &str, path: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0\r\n\
         MS-ASPNETCORE-TOKEN: forged\r\nMS-ASPNETCORE-EVENT: shutdown\r\n\
         MS-ASPNETCORE-CLIENTCERT: Zm9yZ2Vk\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn riis_runs_the_application_as_the_asp_net_core_module_does() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core");
    let config = config(
        &dir,
        &format!(
            r#"process_path = '{}'
arguments = ["app.js"]
application_path = "/shop"
environment = {{ ASPNETCORE_ENVIRONMENT = "Staging" }}"#,
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    // The first request waits for the process to listen. The client's
    // pairing token, shutdown event and certificate are not passed: the
    // application takes the request as riis's (with riis's token) and
    // does not stop.
    let mut client = Connection::open(server.addr);
    client.send_raw(forged("POST", "/shop/iisintegration").as_bytes());
    let resp = client.read_response(false);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let first = fields(&resp.text());
    assert_eq!(first["path_base"], "/shop");
    assert_eq!(first["environment"], "Staging");
    assert_eq!(first["client_certificate"], "");
    assert_eq!(first["forwarded_for"], "127.0.0.1");
    assert_eq!(first["forwarded_proto"], "http");
    assert_eq!(first["url"], "/shop/iisintegration");
    // The same process answers the next request: it was not stopped.
    let resp = Connection::open(server.addr).get("/shop/cart?id=7");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let second = fields(&resp.text());
    assert_eq!(second["pid"], first["pid"]);
    assert_eq!(second["url"], "/shop/cart?id=7");
    // Another local program that connects to the application's port
    // without the token is refused by the application.
    let port: u16 = first["port"].parse().unwrap();
    let direct =
        Connection::open(std::net::SocketAddr::from(([127, 0, 0, 1], port))).get("/shop/x");
    assert_eq!(direct.status, 400);
    let status = common::riis_status(&config);
    assert!(status.contains("asp_net_core_processes: 1"), "{status}");
    assert!(
        status.contains("asp_net_core_applications_stopped: 0"),
        "{status}"
    );
    // The stop gives the application `shutdown_time_limit` (10 s by
    // default) to finish, and waits for it.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(
        dir.path().join("stopped-cleanly").exists(),
        "the application was killed before it finished stopping"
    );
}

/// With `shutdown_time_limit = 0` a stopping application is killed at
/// once: it never writes that it stopped cleanly.
#[test]
fn a_shutdown_time_limit_of_zero_kills_at_once() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core-kill");
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]\nshutdown_time_limit = 0",
            node.display()
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/shop/x");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let pid: u32 = fields(&resp.text())["pid"].parse().unwrap();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    wait_for("still running", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(!dir.path().join("stopped-cleanly").exists());
}

/// An application that does not listen within `startup_time_limit` gets
/// the ASP.NET Core Module's 502.5 "process failure".
#[test]
fn an_application_that_does_not_start_gets_502_5() {
    let dir = TempDir::new("asp-net-core-deaf");
    let config = config(
        &dir,
        r#"process_path = "/bin/sh"
arguments = ["-c", "exec sleep 60"]
startup_time_limit = 1"#,
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/shop/x");
    assert_eq!(resp.status, 502);
    // CustomError's detailed page (the client is local) names the
    // substatus.
    assert!(resp.text().contains("502.5"), "{}", resp.text());
    assert_eq!(Connection::open(server.addr).get("/other").status, 404);
}

/// The pairing token goes on the request sent to the application alone: a
/// child request (here the application's `X-Accel-Redirect` to a location
/// that ReverseProxy passes to another server) does not carry it.
#[test]
fn the_token_does_not_reach_another_server_through_a_child_request() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core-child");
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]",
            node.display()
        ),
    );
    // Another server, the same program without a token of its own.
    let other_port = common::free_port();
    let mut other = std::process::Command::new(&node)
        .arg(dir.path().join("app.js"))
        .env("ASPNETCORE_PORT", other_port.to_string())
        .env_remove("ASPNETCORE_TOKEN")
        .spawn()
        .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[sites.locations]]\npath = \"/other\"\nproxy = {{ servers = [\"http://127.0.0.1:{other_port}\"] }}\n\
         [[sites.locations.handlers]]\nname = \"Other\"\npath = \"*\"\nmodules = [\"ReverseProxy\"]\n"
    ));
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    wait_for("the other server", || {
        std::net::TcpStream::connect(("127.0.0.1", other_port)).is_ok()
    });
    let resp = Connection::open(server.addr).get("/shop/accel");
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = fields(&resp.text());
    assert_eq!(seen["url"], "/other/echo");
    assert_eq!(seen["token"], "", "the other server got the token");
}

/// The section written at a location only, as `import-web-config
/// --location /shop` writes it: the levels above name no application, and
/// the location's does. A location whose handler lists the module but
/// whose levels name no program answers 500, naming the key.
#[test]
fn an_application_set_at_a_location_only() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core-location");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    dir.write("app.js", APPLICATION);
    let config = dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "AspNetCoreModule"
[[modules]]
name = "ReverseProxy"
[[modules]]
name = "CustomError"

[[sites]]
name = "Shop"
root = '{root}'
bindings = ["127.0.0.1:0"]

[[sites.locations]]
path = "/shop"
[[sites.locations.handlers]]
name = "aspNetCore"
path = "*"
modules = ["AspNetCoreModule", "ReverseProxy"]
[sites.locations.asp_net_core]
process_path = '{node}'
arguments = ["app.js"]
application_path = "/shop"

[[sites.locations]]
path = "/nothing"
[[sites.locations.handlers]]
name = "aspNetCore"
path = "*"
modules = ["AspNetCoreModule", "ReverseProxy"]
"#,
            root = root.display(),
            node = node.display()
        ),
    );
    let out = common::riis_command("check-config", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let resp = Connection::open(server.addr).get("/shop/cart");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fields(&resp.text())["path_base"], "/shop");
    let resp = Connection::open(server.addr).get("/nothing/x");
    assert_eq!(resp.status, 500);
    assert!(
        resp.text().contains("asp_net_core.process_path is not set"),
        "{}",
        resp.text()
    );
}

/// Headers a rule gives the application through `PROXY_REQUEST_HEADERS`
/// go along, less any of the module's own names (a rule may pass on what a
/// client sent); the variable is emptied once ReverseProxy read it, so an
/// access log that names it never shows the token.
#[test]
fn a_rules_request_headers_go_along_without_the_modules_names() {
    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core-rule");
    let config = config(
        &dir,
        &format!(
            "process_path = '{}'\narguments = [\"app.js\"]",
            node.display()
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[asp_net_core]",
        r#"[[modules]]
name = "UrlRewrite"
[[modules]]
name = "HttpLogging"

[http_logging]
fields = ["cs-uri-stem", "sc-status", "var(PROXY_REQUEST_HEADERS)"]

[[rewrite.rules]]
name = "extra"
pattern = "^shop/"
server_variables = [{ name = "PROXY_REQUEST_HEADERS", value = "{HTTP_X_EXTRA}" }]
action = { type = "None" }

[asp_net_core]"#,
    );
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut tokens = Vec::new();
    for (extra, forged) in [
        ("X-Tenant: blue", false),
        ("MS-ASPNETCORE-CLIENTCERT: Zm9yZ2Vk", true),
    ] {
        let mut client = Connection::open(server.addr);
        client.send_raw(
            format!("GET /shop/x HTTP/1.1\r\nHost: shop.test\r\nX-Extra: {extra}\r\n\r\n")
                .as_bytes(),
        );
        let resp = client.read_response(false);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = fields(&resp.text());
        assert_eq!(seen["client_certificate"], "", "{extra}");
        if !forged {
            assert_eq!(seen["tenant"], "blue");
        }
        tokens.push(seen["token"].clone());
    }
    assert!(
        tokens[0].len() == 32 && tokens[0] == tokens[1],
        "{tokens:?}"
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let mut logged = String::new();
    for entry in walk(&dir.path().join("logs")) {
        logged.push_str(&std::fs::read_to_string(entry).unwrap());
    }
    assert!(logged.contains("/shop/x 200"), "{logged}");
    assert!(!logged.contains(&tokens[0]), "{logged}");
}

/// The files under `folder`, at any depth.
fn walk(folder: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// `examples/aspnetcore/`: its `riis.toml` holds what `import-web-config`
/// writes from its `web.config`, and runs, with this file's program in
/// place of `dotnet` (which Debian's archive lacks).
#[test]
fn the_aspnetcore_example_is_what_the_import_writes_and_runs() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/aspnetcore");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .arg("import-web-config")
        .arg(example.join("web.config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    let text = std::fs::read_to_string(example.join("riis.toml")).unwrap();
    let mut written: toml::Table = text.parse().unwrap();
    assert_eq!(written["handlers"], imported["handlers"]);
    let section = written["asp_net_core"].as_table_mut().unwrap();
    // The one key the example adds.
    assert_eq!(
        section.remove("preload_enabled"),
        Some(toml::Value::Boolean(true))
    );
    assert_eq!(section, imported["asp_net_core"].as_table().unwrap());

    let Some(node) = node() else {
        return;
    };
    let dir = TempDir::new("asp-net-core-example");
    dir.write("app.js", APPLICATION);
    dir.write("web.config", "<configuration />");
    let config = dir.write(
        "riis.toml",
        text.replace("/usr/bin/dotnet", &node.display().to_string())
            .replace("./Shop.dll", "app.js"),
    );
    let out = common::riis_command("check-config", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    wait_for("not preloaded", || {
        common::riis_status(&config).contains("asp_net_core_processes: 1")
    });
    let resp = Connection::open(server.addr).get("/");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fields(&resp.text())["environment"], "Production");
    assert_eq!(Connection::open(server.addr).get("/web.config").status, 404);
}

#[test]
fn check_config_names_the_key_and_warns_of_a_handler_without_reverse_proxy() {
    let dir = TempDir::new("asp-net-core-config");
    let bad = config(
        &dir,
        "process_path = \"/bin/sh\"\nenvironment = { ASPNETCORE_PORT = \"80\" }",
    );
    let out = common::riis_command("check-config", &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("environment"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("riis.toml:{line}: ")), "{stderr}");
    assert!(
        stderr.contains("ASPNETCORE_PORT is set by riis"),
        "{stderr}"
    );

    let alone = config(&dir, "process_path = \"/bin/sh\"");
    let text = std::fs::read_to_string(&alone).unwrap().replace(
        r#"modules = ["AspNetCoreModule", "ReverseProxy"]"#,
        r#"modules = ["AspNetCoreModule"]"#,
    );
    std::fs::write(&alone, text).unwrap();
    let out = common::riis_command("check-config", &alone);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("handler `Shop` lists AspNetCoreModule without ReverseProxy after it"),
        "{stderr}"
    );
    // Two modules that start an application in one handler.
    let text = std::fs::read_to_string(&alone).unwrap().replace(
        r#"modules = ["AspNetCoreModule"]"#,
        "modules = [\"AspNetCoreModule\", \"HttpPlatformHandler\", \"ReverseProxy\"]\n\
         [[modules]]\nname = \"HttpPlatformHandler\"",
    );
    std::fs::write(&alone, text).unwrap();
    let out = common::riis_command("check-config", &alone);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("handler `Shop` lists more than one module that starts an application"),
        "{stderr}"
    );
}
