//! What a module can ask the context about the running pipeline:
//! `is_last_notification`, `current_execution_stats` and server variables.

mod common;

use common::*;
use riis_pipeline::{RequestNotification as N, RequestNotifications};

/// Logs `is_last_notification` for Continue and FinishRequest at each call.
fn last_probe(log: &Log) -> Script {
    let log = log.clone();
    script(move |ctx, call| {
        log.push(format!(
            "{}: continue={} finish={}",
            call.describe(),
            ctx.is_last_notification(Status::Continue),
            ctx.is_last_notification(Status::FinishRequest)
        ));
        Status::Continue
    })
}

#[tokio::test]
async fn is_last_notification_looks_at_the_events_still_to_come() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Probe",
        Registration::events(N::BeginRequest | N::AuthorizeRequest | N::EndRequest),
        last_probe(&log),
    );
    let pipeline = t.build();

    get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            // AuthorizeRequest and EndRequest are still to come.
            "BeginRequest: continue=false finish=false",
            // EndRequest runs even after a FinishRequest.
            "AuthorizeRequest: continue=false finish=false",
            "EndRequest: continue=true finish=true",
        ]
    );
}

/// Before MapRequestHandler has chosen the handler, its modules are still to
/// come at ExecuteRequestHandler.
#[tokio::test]
async fn is_last_notification_counts_the_handler_before_it_is_chosen() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Probe",
        Registration::events(N::BeginRequest),
        last_probe(&log),
    )
    .module(
        "Handler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(catch_all(&["Handler"]));
    let pipeline = t.build();

    get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        // Only the handler's module is left.
        ["BeginRequest: continue=false finish=true"]
    );
}

#[tokio::test]
async fn is_last_notification_knows_finish_request_skips_to_log_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Probe",
        Registration::events(N::BeginRequest | N::ResolveRequestCache),
        last_probe(&log),
    );
    let pipeline = t.build();

    get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "BeginRequest: continue=false finish=true",
            "ResolveRequestCache: continue=true finish=true",
        ]
    );
}

#[tokio::test]
async fn is_last_notification_counts_post_events_and_other_modules() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Probe",
        Registration::events(N::UpdateRequestCache).with_post(N::UpdateRequestCache),
        last_probe(&log),
    )
    .module(
        "Logger",
        Registration::default().with_post(RequestNotifications::from(N::LogRequest)),
        recorder(&Log::new()),
    );
    let pipeline = t.build();

    get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "UpdateRequestCache: continue=false finish=false",
            "PostUpdateRequestCache: continue=false finish=false",
        ]
    );
}

#[tokio::test]
async fn current_execution_stats_names_the_running_module_and_notification() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    for name in ["Alpha", "Beta"] {
        let log = log.clone();
        t.module(
            name,
            Registration::events(N::BeginRequest | N::SendResponse | N::MapPath)
                .with_post(N::BeginRequest),
            script(move |ctx, call| {
                let describe = |ctx: &riis_pipeline::HttpContext| {
                    let stats = ctx.current_execution_stats().expect("inside a module call");
                    format!(
                        "{} {} post={}",
                        stats.module, stats.notification, stats.is_post
                    )
                };
                log.push(describe(ctx));
                if name == "Alpha" && call.is_event(N::BeginRequest) {
                    // A nested MapPath runs Beta only (Alpha is busy), and the
                    // stats are Alpha's again afterwards.
                    ctx.map_path("/x");
                    log.push(format!("after map_path: {}", describe(ctx)));
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "Alpha BeginRequest post=false",
            "Beta MapPath post=false",
            "after map_path: Alpha BeginRequest post=false",
            "Beta BeginRequest post=false",
            "Alpha BeginRequest post=true",
            "Beta BeginRequest post=true",
            "Beta SendResponse post=false",
            "Alpha SendResponse post=false",
        ]
    );
    // Between calls nothing is running.
    assert!(outcome.context().current_execution_stats().is_none());
}

/// The server variables `names` as a module sees them for `uri` with
/// `headers` (after it set `MY_VAR`).
async fn variables(
    uri: &str,
    headers: &[(&'static str, &'static str)],
    names: &[&'static str],
) -> Vec<(String, Option<String>)> {
    use riis_pipeline::http::{HeaderMap, HeaderValue, Method, Uri, Version};
    use riis_pipeline::HttpRequest;
    use std::sync::{Arc, Mutex};

    type Seen = Vec<(String, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let seen = seen.clone();
        let names = names.to_vec();
        t.module(
            "Vars",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                ctx.set_server_variable("MY_VAR", "set by a module");
                let mut seen = seen.lock().unwrap();
                for name in &names {
                    seen.push((
                        (*name).to_owned(),
                        ctx.server_variable(name).map(|v| v.into_owned()),
                    ));
                }
                Status::FinishRequest
            }),
        );
    }
    let pipeline = t.build();
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(*k, HeaderValue::from_static(v));
    }
    let uri: Uri = uri.parse().unwrap();
    let req = HttpRequest::new(
        Method::POST,
        uri,
        Version::HTTP_11,
        map,
        "127.0.0.1:8080".parse().unwrap(),
        "192.0.2.9:40000".parse().unwrap(),
    )
    .unwrap();
    run(&pipeline, req).await.assert_completed();
    let seen = seen.lock().unwrap().clone();
    seen
}

#[tokio::test]
async fn server_variables_use_the_iis_names() {
    let seen = variables(
        "/a%20b/page?x=1&y=2",
        &[
            ("host", "example.test:8080"),
            ("accept-language", "en"),
            ("accept-language", "fr;q=0.5"),
            // Headers named like variables do not stand in for them.
            ("url", "/spoofed"),
            ("version", "HTTP/9"),
            // Cookies split over lines (as HTTP/2 sends them) join with `; `.
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ],
        &[
            "REQUEST_METHOD",
            "URL",
            "QUERY_STRING",
            "UNENCODED_URL",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "SERVER_PORT",
            "SERVER_NAME",
            "SERVER_PROTOCOL",
            "HTTPS",
            "HTTP_ACCEPT_LANGUAGE",
            "HTTP_X_MISSING",
            "HTTP_URL",
            "HTTP_VERSION",
            "HTTP_COOKIE",
            "HTTP_HOST",
            "CACHE_URL",
            "INSTANCE_ID",
            "INSTANCE_META_PATH",
            "APP_POOL_ID",
            "PATH_TRANSLATED",
            "my_var",
            "NO_SUCH_VARIABLE",
        ],
    )
    .await;
    let value = |name: &str| {
        seen.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(value("REQUEST_METHOD").as_deref(), Some("POST"));
    assert_eq!(value("URL").as_deref(), Some("/a b/page"));
    assert_eq!(value("QUERY_STRING").as_deref(), Some("x=1&y=2"));
    assert_eq!(
        value("UNENCODED_URL").as_deref(),
        Some("/a%20b/page?x=1&y=2")
    );
    assert_eq!(value("REMOTE_ADDR").as_deref(), Some("192.0.2.9"));
    assert_eq!(value("REMOTE_PORT").as_deref(), Some("40000"));
    assert_eq!(value("SERVER_PORT").as_deref(), Some("8080"));
    assert_eq!(value("SERVER_NAME").as_deref(), Some("example.test"));
    assert_eq!(value("SERVER_PROTOCOL").as_deref(), Some("HTTP/1.1"));
    assert_eq!(value("HTTPS").as_deref(), Some("off"));
    assert_eq!(
        value("HTTP_ACCEPT_LANGUAGE").as_deref(),
        Some("en, fr;q=0.5")
    );
    assert_eq!(value("HTTP_X_MISSING"), None);
    assert_eq!(value("HTTP_URL").as_deref(), Some("/a%20b/page?x=1&y=2"));
    assert_eq!(value("HTTP_VERSION").as_deref(), Some("HTTP/1.1"));
    assert_eq!(value("HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
    assert_eq!(value("HTTP_HOST").as_deref(), Some("example.test:8080"));
    assert_eq!(
        value("CACHE_URL").as_deref(),
        Some("http://example.test:8080/a%20b/page?x=1&y=2")
    );
    assert_eq!(value("INSTANCE_ID").as_deref(), Some("1"));
    assert_eq!(value("INSTANCE_META_PATH").as_deref(), Some("/LM/W3SVC/1"));
    assert_eq!(value("APP_POOL_ID").as_deref(), Some("riis"));
    // Asked in BeginRequest, before the path is mapped: the site's mapping
    // of the URL (it was missing).
    let translated = value("PATH_TRANSLATED").expect("PATH_TRANSLATED before mapping");
    assert!(translated.ends_with("/a b/page"), "{translated}");
    assert_eq!(value("my_var").as_deref(), Some("set by a module"));
    assert_eq!(value("NO_SUCH_VARIABLE"), None);
}

/// The host comes from the request target's authority when it has one
/// (HTTP/2's `:authority`, an absolute-form target), over `Host`; a
/// malformed `Host` is passed along, not a panic.
#[tokio::test]
async fn the_host_variables_prefer_the_authority() {
    let names = &["SERVER_NAME", "HTTP_HOST"];
    let seen = variables("http://auth.test:9000/p", &[("host", "other.test")], names).await;
    assert_eq!(seen[0].1.as_deref(), Some("auth.test"));
    assert_eq!(seen[1].1.as_deref(), Some("auth.test:9000"));
    // Userinfo in an absolute-form target is not the host.
    let seen = variables("http://evil.test:1@good.test/p", &[], names).await;
    assert_eq!(seen[0].1.as_deref(), Some("good.test"));
    assert_eq!(seen[1].1.as_deref(), Some("good.test"));
    let seen = variables("/p", &[("host", "[")], names).await;
    assert_eq!(seen[0].1.as_deref(), Some("["));
    let seen = variables("/p", &[("host", "[::1]:80")], names).await;
    assert_eq!(seen[0].1.as_deref(), Some("[::1]"));
}

/// `AUTH_TYPE` names how a user logged on; the anonymous user (no name) did
/// not, so it is empty, as IIS and CGI give it.
#[tokio::test]
async fn auth_type_is_empty_for_the_anonymous_user() {
    use riis_pipeline::http::{HeaderMap, Method, Version};
    use riis_pipeline::{HttpRequest, HttpUser};
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let seen = seen.clone();
        t.module(
            "Users",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                let mut seen = seen.lock().unwrap();
                for user in [
                    HttpUser::new("", "Anonymous"),
                    HttpUser::new("alice", "Basic"),
                ] {
                    ctx.set_user(user);
                    for name in ["AUTH_TYPE", "AUTH_USER"] {
                        seen.push(ctx.server_variable(name).unwrap_or_default().into_owned());
                    }
                }
                Status::FinishRequest
            }),
        );
    }
    let pipeline = t.build();
    let req = HttpRequest::new(
        Method::GET,
        "/".parse().unwrap(),
        Version::HTTP_11,
        HeaderMap::new(),
        "127.0.0.1:8080".parse().unwrap(),
        "192.0.2.9:40000".parse().unwrap(),
    )
    .unwrap();
    run(&pipeline, req).await.assert_completed();
    assert_eq!(*seen.lock().unwrap(), ["", "", "Basic", "alice"]);
}
