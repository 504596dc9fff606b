//! FailedRequestsTracing over real sockets: a request that fails by its
//! status leaves a trace file of its module calls (the final send's
//! included), one that succeeds none;
//! the location's section turns it off; old files go past `max_log_files`;
//! numbering goes on after a restart; bad rules are configuration errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Connection, RunningBinary, TempDir};

/// The configuration: tracing first, then StaticFile as the handler and
/// ProtocolSupport (for a SendResponse call), with
/// `section` as the server-level `failed_requests_tracing` keys.
fn config(dir: &TempDir, section: &str) -> PathBuf {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let traces = dir.path().join("traces");
    dir.write(
        "riis.toml",
        format!(
            r#"[[modules]]
name = "FailedRequestsTracing"
[[modules]]
name = "UrlRewrite"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "ProtocolSupport"

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
modules = ["StaticFile", "DefaultDocument"]

[failed_requests_tracing]
directory = '{traces}'
{section}

[[sites]]
name = "Traced"
root = '{root}'
bindings = ["127.0.0.1:0"]
rewrite = {{ rules = [{{ name = "public", pattern = "^public/(.*)$", action = {{ type = "Rewrite", url = "/quiet/{{R:1}}" }} }}] }}

[[sites.locations]]
path = "/quiet"
failed_requests_tracing = {{ enabled = false }}
"#,
            traces = traces.display(),
            root = root.display(),
        ),
    )
}

/// The trace files in `dir`, by name.
fn traces(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `dir` holds `n` trace files (a trace is written at
/// EndRequest, which may run after the client has its response).
fn wait_for_traces(dir: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = traces(dir);
        if names.len() == n && names.iter().all(|f| f.ends_with(".json")) {
            return names;
        }
        assert!(Instant::now() < deadline, "traces: {names:?}, want {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failed_request_leaves_a_trace_of_its_module_calls() {
    let dir = TempDir::new("fr-trace");
    dir.write("www/a.txt", "alpha");
    dir.write("www/quiet/q.txt", "quiet");
    let config = config(&dir, "status_codes = [\"404\", \"500-599\"]");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let trace_dir = dir.path().join("traces");
    let mut conn = Connection::open(server.addr);

    // A success, and a failure where tracing is off: nothing, also when
    // the request was rewritten into that location.
    assert_eq!(conn.get("/a.txt").status, 200);
    assert_eq!(conn.get("/quiet/missing.txt").status, 404);
    assert_eq!(conn.get("/public/missing.txt?token=x").status, 404);
    // A failure: one trace.
    conn.send_raw(
        b"GET /missing.txt?x=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Basic c2VjcmV0\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 404);
    assert_eq!(wait_for_traces(&trace_dir, 1), ["fr000001.json"]);

    let text = std::fs::read_to_string(trace_dir.join("fr000001.json")).unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["url"], "/missing.txt");
    assert_eq!(trace["query"], "x=1");
    assert_eq!(trace["method"], "GET");
    assert_eq!(trace["site"], "Traced");
    assert_eq!(trace["status"], 404);
    assert_eq!(trace["failure"], "status 404");
    assert_eq!(trace["events_dropped"], 0);
    // Traces show URLs and headers: for the owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(trace_dir.join("fr000001.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    assert_eq!(trace["error"]["code"], "0x80070002");
    assert_eq!(trace["error"]["module"], "StaticFile");
    assert_eq!(trace["error"]["notification"], "ExecuteRequestHandler");
    assert!(
        !text.contains("c2VjcmV0"),
        "the credentials are in the trace"
    );
    assert!(text.contains("(hidden)"), "{text}");
    let events = trace["events"].as_array().unwrap();
    let handler_end = events
        .iter()
        .find(|e| {
            e["module"] == "StaticFile"
                && e["notification"] == "ExecuteRequestHandler"
                && e["phase"] == "end"
        })
        .unwrap_or_else(|| panic!("no StaticFile call in {events:?}"));
    // A 404 finishes the request.
    assert_eq!(handler_end["status"], "FinishRequest");
    assert!(handler_end["elapsed_ms"].as_f64().unwrap() >= 0.0);
    // Calls start and end in pairs: the request is followed from before
    // its first module call.
    let starts = events.iter().filter(|e| e["phase"] == "start").count();
    let ends = events.iter().filter(|e| e["phase"] == "end").count();
    assert_eq!(starts, ends, "{events:#?}");
    assert_eq!(events[0]["phase"], "start");
    // The final send comes after EndRequest: its SendResponse calls are
    // traced too.
    let end_request = events
        .iter()
        .position(|e| e["notification"] == "EndRequest")
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["module"], "ProtocolSupport", "{events:#?}");
    assert_eq!(last["notification"], "SendResponse");
    assert_eq!(last["phase"], "end");
    assert!(end_request < events.len() - 1);
    let times: Vec<f64> = events
        .iter()
        .map(|e| e["at_ms"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// A child request (DefaultDocument's, for a folder URL) shares its
/// parent's request id: its calls go into the parent's one trace.
/// A custom error page (ExecuteURL) does not change whose error the
/// trace names: the module that failed the request, not CustomError.
#[test]
fn an_error_page_leaves_the_error_to_the_module_that_set_it() {
    let dir = TempDir::new("fr-error-page");
    dir.write("www/errors/404.html", "<p>not here</p>");
    let config = config(&dir, "status_codes = [\"404\"]");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(
            "[[modules]]\nname = \"StaticFile\"",
            "[[modules]]\nname = \"CustomError\"\n[[modules]]\nname = \"StaticFile\"",
            1,
        )
        + "\n[sites.http_errors]\nerror_mode = \"Custom\"\n\
           errors = [{ status = 404, path = \"/errors/404.html\", response_mode = \"ExecuteURL\" }]\n";
    std::fs::write(&config, text).unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let trace_dir = dir.path().join("traces");
    let resp = common::get(server.addr, "/missing.txt");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.text(), "<p>not here</p>");
    assert_eq!(wait_for_traces(&trace_dir, 1), ["fr000001.json"]);
    let text = std::fs::read_to_string(trace_dir.join("fr000001.json")).unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["error"]["code"], "0x80070002", "{text}");
    assert_eq!(trace["error"]["module"], "StaticFile", "{text}");
    assert_eq!(trace["error"]["notification"], "ExecuteRequestHandler");
}

#[test]
fn a_child_requests_calls_are_in_its_parents_trace() {
    let dir = TempDir::new("fr-child");
    dir.write("www/docs/index.html", "<p>docs</p>");
    let config = config(&dir, "status_codes = [\"200\"]");
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let trace_dir = dir.path().join("traces");
    let resp = common::get(server.addr, "/docs/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "<p>docs</p>");
    assert_eq!(wait_for_traces(&trace_dir, 1), ["fr000001.json"]);
    let text = std::fs::read_to_string(trace_dir.join("fr000001.json")).unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["url"], "/docs/");
    let events = trace["events"].as_array().unwrap();
    let handler_ends = events
        .iter()
        .filter(|e| {
            e["module"] == "StaticFile"
                && e["notification"] == "ExecuteRequestHandler"
                && e["phase"] == "end"
        })
        .count();
    // The folder's (passed on to DefaultDocument) and the child's (the file).
    assert_eq!(handler_ends, 2, "{events:#?}");
    assert!(events.iter().any(|e| e["module"] == "DefaultDocument"));
}

/// A request that a module listed before FailedRequestsTracing ends in its
/// BeginRequest (RequestFiltering's rejections, IIS's 404.x) is traced
/// too: the module follows requests from before their first module call.
#[test]
fn a_request_refused_before_tracing_is_listed_is_traced() {
    let dir = TempDir::new("fr-refused");
    let config = config(&dir, "status_codes = [\"404.7\"]");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[[modules]]\nname = \"RequestFiltering\"\n{text}\n[request_filtering]\nfile_extensions = {{ deny = [\".exe\"] }}\n"),
    )
    .unwrap();
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let trace_dir = dir.path().join("traces");
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/setup.exe").status, 404);
    assert_eq!(wait_for_traces(&trace_dir, 1), ["fr000001.json"]);
    let text = std::fs::read_to_string(trace_dir.join("fr000001.json")).unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["status"], 404);
    assert_eq!(trace["substatus"], 7);
    assert_eq!(trace["failure"], "status 404.7");
    let events = trace["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["module"] == "RequestFiltering" && e["notification"] == "BeginRequest"),
        "{text}"
    );
    // A refusal where tracing is off leaves nothing: the next trace is
    // the next followed request's.
    assert_eq!(conn.get("/quiet/setup.exe").status, 404);
    assert_eq!(conn.get("/setup.exe?again").status, 404);
    assert_eq!(wait_for_traces(&trace_dir, 2).len(), 2);
    let second = std::fs::read_to_string(trace_dir.join("fr000002.json")).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["query"], "again");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(traces(&trace_dir).len(), 2);
}

/// A relative `directory` is taken from the configuration file's folder,
/// as site roots are, not from wherever the server was started.
#[test]
fn a_relative_directory_is_beside_the_configuration() {
    let dir = TempDir::new("fr-relative");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let config = dir.write(
        "riis.toml",
        "[[modules]]\nname = \"FailedRequestsTracing\"\n[[modules]]\nname = \"StaticFile\"\n\
         [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\
         [failed_requests_tracing]\nstatus_codes = [\"404\"]\ndirectory = \"relative-traces\"\n\
         [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n",
    );
    let elsewhere = TempDir::new("fr-cwd");
    let mut command = Command::new(env!("CARGO_BIN_EXE_riis"));
    command
        .current_dir(elsewhere.path())
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"]);
    let server = RunningBinary::from_command(command).unwrap();
    assert_eq!(common::get(server.addr, "/missing").status, 404);
    assert_eq!(
        wait_for_traces(&dir.path().join("relative-traces"), 1),
        ["fr000001.json"]
    );
    assert!(!elsewhere.path().join("relative-traces").exists());
}

/// A trace folder others may write to is refused by `check-config`, not
/// found out at the first failing request (whose trace is then lost).
#[test]
fn a_folder_others_may_write_to_is_a_configuration_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("fr-open-folder");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let open = dir.path().join("open-traces");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.write(
        "riis.toml",
        "[[modules]]\nname = \"FailedRequestsTracing\"\n[[modules]]\nname = \"StaticFile\"\n\
         [[handlers]]\nname = \"StaticFile\"\npath = \"*\"\nmodules = [\"StaticFile\"]\n\
         [failed_requests_tracing]\nstatus_codes = [\"404\"]\ndirectory = \"open-traces\"\n\
         [[sites]]\nname = \"S\"\nroot = \"www\"\nbindings = [\"127.0.0.1:0\"]\n",
    );
    let out = common::riis_command("check-config", &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("key `failed_requests_tracing.directory`")
            && err.contains("may be written by others (mode 777"),
        "{err}"
    );
}

#[test]
fn old_traces_go_and_numbering_survives_a_restart() {
    let dir = TempDir::new("fr-keep");
    let config = config(&dir, "status_codes = [\"404\"]\nmax_log_files = 2");
    let trace_dir = dir.path().join("traces");
    for round in 0..2 {
        let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
        let mut conn = Connection::open(server.addr);
        for i in 0..3 {
            assert_eq!(conn.get(&format!("/gone{i}")).status, 404);
            // One at a time, so the numbers follow the requests.
            let written = round * 3 + i + 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !trace_dir.join(format!("fr{written:06}.json")).exists() {
                assert!(Instant::now() < deadline, "trace {written} never written");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let last = round * 3 + 3;
        assert_eq!(
            wait_for_traces(&trace_dir, 2),
            [
                format!("fr{:06}.json", last - 1),
                format!("fr{last:06}.json")
            ]
        );
    }
}

#[test]
fn status_rules_that_are_not_status_codes_are_refused() {
    let dir = TempDir::new("fr-bad");
    for (rules, message) in [
        ("status_codes = [\"4o4\"]", "`4o4` is not a status code"),
        ("status_codes = [\"500-400\"]", "ends before it starts"),
        ("max_log_files = 0", "must be at least 1"),
    ] {
        let config = config(&dir, rules);
        let out = Command::new(env!("CARGO_BIN_EXE_riis"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rules} accepted");
        assert!(err.contains(message), "{rules}: {err}");
        assert!(err.contains("failed_requests_tracing."), "{rules}: {err}");
        assert!(err.contains("riis.toml:"), "{rules}: no line in {err}");
    }
}

/// Secrets an application carries elsewhere than in `Authorization` and
/// cookies stay out of traces when the operator names them.
#[test]
fn named_headers_and_the_query_string_can_be_hidden() {
    let dir = TempDir::new("fr-hidden");
    let config = config(
        &dir,
        "status_codes = [\"404\"]\nhidden_headers = [\"X-Api-Key\"]\nhide_query_string = true",
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let trace_dir = dir.path().join("traces");
    let mut conn = Connection::open(server.addr);
    conn.send_raw(
        b"GET /missing?access_token=T0KEN HTTP/1.1\r\nHost: t\r\nX-Api-Key: K3Y\r\nX-Other: shown\r\n\r\n",
    );
    assert_eq!(conn.read_response(false).status, 404);
    assert_eq!(wait_for_traces(&trace_dir, 1), ["fr000001.json"]);
    let text = std::fs::read_to_string(trace_dir.join("fr000001.json")).unwrap();
    assert!(!text.contains("T0KEN") && !text.contains("K3Y"), "{text}");
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["query"], "(hidden)");
    assert!(text.contains("shown"), "{text}");

    // A name that is not a header name is a configuration error.
    let bad = self::config(&dir, "hidden_headers = [\"X Api\"]");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riis"))
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("failed_requests_tracing.hidden_headers"),
        "{err}"
    );
}
