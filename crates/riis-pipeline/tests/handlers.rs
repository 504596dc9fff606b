//! Choosing and running a handler: only the chosen handler's modules run at
//! ExecuteRequestHandler, in the handler's order; mapping failures answer
//! 404.4 (no handler), 405 (verb) and 404 (missing resource); a handler that
//! leaves the response untouched answers 404.

mod common;

use common::*;
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{Priority, RequestNotification as N};

/// Registers a handler-capable module that logs its name and, if `answer` is
/// given, writes it.
fn add_handler_module(
    t: &mut TestPipeline,
    log: &Log,
    name: &'static str,
    answer: Option<&'static str>,
) {
    let log = log.clone();
    t.module(
        name,
        Registration::events(N::ExecuteRequestHandler)
            .priority(N::ExecuteRequestHandler, Priority::Medium),
        script(move |ctx, _| {
            log.push(name);
            if let Some(text) = answer {
                write(ctx, text);
            }
            Status::Continue
        }),
    );
}

#[tokio::test]
async fn only_the_chosen_handlers_modules_run_in_the_handlers_order() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Answer", Some("answered"));
    add_handler_module(&mut t, &log, "Passer", None);
    add_handler_module(&mut t, &log, "Other", Some("other"));
    // Module-list order (and FIRST priority) would put Answer first; the
    // handler's own order wins.
    t.module(
        "FirstEverywhere",
        Registration::events(N::ExecuteRequestHandler)
            .priority(N::ExecuteRequestHandler, Priority::First),
        recorder(&log),
    )
    .handler(handler("Php", "*.php", &["*"], "Unspecified", &["Other"]))
    .handler(handler(
        "Main",
        "*",
        &["*"],
        "Unspecified",
        &["Passer", "Answer"],
    ));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/index.html").await;

    assert_eq!(log.entries(), ["Passer", "Answer"]);
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "answered");
    assert_eq!(outcome.context().handler_name(), Some("Main"));

    log.take();
    let php = get(&pipeline, "/index.php").await;
    assert_eq!(log.entries(), ["Other"]);
    assert_eq!(php.body(), "other");
}

#[tokio::test]
async fn no_handler_for_the_path_answers_404_4() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Php", Some("php"));
    t.handler(handler("Php", "*.php", &["*"], "Unspecified", &["Php"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/page.html").await;

    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    assert_eq!(outcome.context().response().substatus(), 4);
    assert_eq!(outcome.context().handler_name(), None);
    assert!(log.entries().is_empty(), "no handler module ran");
    outcome.assert_completed();
}

#[tokio::test]
async fn a_site_without_handlers_answers_404_4() {
    let pipeline = TestPipeline::new().build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    assert_eq!(outcome.context().response().substatus(), 4);
}

#[tokio::test]
async fn a_path_match_with_the_wrong_verb_answers_405() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Api", Some("api"));
    t.handler(handler(
        "Api",
        "/api/*",
        &["GET", "HEAD"],
        "Unspecified",
        &["Api"],
    ));
    let pipeline = t.build();

    let refused = run(&pipeline, request(Method::DELETE, "/api/items")).await;
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(log.entries().is_empty());

    let allowed = get(&pipeline, "/api/items").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.body(), "api");
}

#[tokio::test]
async fn a_missing_resource_for_a_file_handler_answers_404() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Static", Some("file body"));
    t.handler(handler("StaticFile", "*", &["GET"], "File", &["Static"]))
        .file("/site/present.txt");
    let fs = t.fs();
    let pipeline = t.build();

    let missing = get(&pipeline, "/absent.txt").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.context().response().substatus(), 0);
    assert!(log.entries().is_empty());

    let present = get(&pipeline, "/present.txt").await;
    assert_eq!(present.status(), StatusCode::OK);
    assert_eq!(present.body(), "file body");
    assert_eq!(
        fs.probes(),
        [
            std::path::PathBuf::from("/site/absent.txt"),
            std::path::PathBuf::from("/site/present.txt")
        ]
    );
}

#[tokio::test]
async fn a_later_handler_catches_what_a_file_handler_refuses() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Static", Some("static"));
    add_handler_module(&mut t, &log, "Dynamic", Some("dynamic"));
    t.handler(handler("StaticFile", "*", &["GET"], "File", &["Static"]))
        .handler(handler(
            "Fallback",
            "*",
            &["*"],
            "Unspecified",
            &["Dynamic"],
        ));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/generated").await;

    assert_eq!(outcome.body(), "dynamic");
    assert_eq!(outcome.context().handler_name(), Some("Fallback"));
}

#[tokio::test]
async fn a_handler_whose_modules_leave_the_response_untouched_answers_404() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "PassA", None);
    add_handler_module(&mut t, &log, "PassB", None);
    t.handler(catch_all(&["PassA", "PassB"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/nothing-here").await;

    assert_eq!(log.entries(), ["PassA", "PassB"]);
    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    assert_eq!(outcome.context().response().substatus(), 0);
    outcome.assert_completed();
}

#[tokio::test]
async fn a_module_may_replace_the_handler_during_map_request_handler() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_handler_module(&mut t, &log, "Normal", Some("normal"));
    add_handler_module(&mut t, &log, "Special", Some("special"));
    {
        let log = log.clone();
        t.module(
            "Chooser",
            Registration::events(N::MapRequestHandler | N::AuthorizeRequest),
            script(move |ctx, call| {
                let replaced = ctx.set_handler("SpecialHandler");
                log.push(format!("{} set_handler={replaced}", call.describe()));
                Status::Continue
            }),
        );
    }
    t.handler(handler(
        "SpecialHandler",
        "/special-only",
        &["*"],
        "Unspecified",
        &["Special"],
    ))
    .handler(catch_all(&["Normal"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/page").await;

    assert_eq!(
        log.entries(),
        [
            "AuthorizeRequest set_handler=false",
            "MapRequestHandler set_handler=true",
            "Special"
        ]
    );
    assert_eq!(outcome.body(), "special");
}

#[tokio::test]
async fn set_request_handled_skips_the_remaining_handler_modules_without_a_404() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Claimer",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, _| {
                log.push("Claimer");
                // Produces nothing, yet the request counts as handled.
                ctx.set_request_handled();
                Status::Continue
            }),
        );
    }
    add_handler_module(&mut t, &log, "Skipped", Some("should not run"));
    t.module(
        "Recorder",
        Registration::default().with_post(N::ExecuteRequestHandler | N::LogRequest),
        recorder(&log),
    )
    .handler(catch_all(&["Claimer", "Skipped"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/claimed").await;

    assert_eq!(
        log.entries(),
        ["Claimer", "PostExecuteRequestHandler", "PostLogRequest"]
    );
    assert_eq!(outcome.status(), StatusCode::OK);
    assert!(outcome.context().is_request_handled());
    assert_eq!(outcome.body(), "");
}

#[test]
fn a_handler_module_must_register_for_execute_request_handler() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "OnlyBegin",
        Registration::events(N::BeginRequest),
        recorder(&log),
    )
    .handler(handler("Main", "*", &["*"], "Unspecified", &["OnlyBegin"]));
    let err = t
        .try_build()
        .expect_err("a handler module without ExecuteRequestHandler");
    assert!(err.key.ends_with(".modules"), "{err}");
    assert!(err.message.contains("ExecuteRequestHandler"), "{err}");
}

#[test]
fn a_handler_must_name_a_module() {
    let mut t = TestPipeline::new();
    t.handler(handler("Empty", "*", &["*"], "Unspecified", &[]));
    let err = t.try_build().expect_err("a handler without modules");
    assert!(err.key.ends_with(".modules"), "{err}");
    assert!(err.message.contains("names no module"), "{err}");
}

/// A file that is there but may not be read answers 403 (E_ACCESSDENIED),
/// not 404, when no handler can take it.
#[tokio::test]
async fn a_file_the_server_may_not_read_is_forbidden_not_missing() {
    let mut t = TestPipeline::new();
    t.module(
        "Static",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "served");
            Status::Continue
        }),
    )
    .handler(handler("StaticFile", "*", &["GET"], "File", &["Static"]));
    let fs = t.fs();
    fs.add_denied("/site/secret.txt");
    let pipeline = t.build();

    let denied = get(&pipeline, "/secret.txt").await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let missing = get(&pipeline, "/missing.txt").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// `Script`, a handler module that writes what the pipeline says the
/// request's script and path info are.
fn path_info_pipeline(
    allow_path_info: bool,
) -> (
    std::sync::Arc<riis_pipeline::Pipeline>,
    std::sync::Arc<FakeFs>,
) {
    let mut t = TestPipeline::new();
    let log = Log::new();
    add_handler_module(&mut t, &log, "Static", Some("static"));
    t.module(
        "Script",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let path = ctx.physical_path().display().to_string();
            let text = format!(
                "script={} info={} URL={} SCRIPT_NAME={} PATH_INFO={} path={}",
                ctx.script_name(),
                ctx.path_info(),
                ctx.server_variable("URL").unwrap_or_default(),
                ctx.server_variable("SCRIPT_NAME").unwrap_or_default(),
                ctx.server_variable("PATH_INFO").unwrap_or_default(),
                path,
            );
            write(ctx, text);
            Status::Continue
        }),
    );
    let mut php = handler("Php", "*.php", &["GET"], "File", &["Script"]);
    php.allow_path_info = allow_path_info;
    t.handler(php)
        .handler(handler("StaticFile", "*", &["GET"], "Either", &["Static"]))
        .file("/site/index.php")
        .file("/site/a.php/b.php")
        .file("/site/notes.txt/x");
    t.fs().add_dir("/site/a.php");
    let fs = t.fs();
    (t.build(), fs)
}

#[tokio::test]
async fn a_handler_with_allow_path_info_takes_the_script_and_leaves_the_rest_as_path_info() {
    let (pipeline, fs) = path_info_pipeline(true);

    let outcome = get(&pipeline, "/index.php/users/7").await;
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(
        outcome.body(),
        "script=/index.php info=/users/7 URL=/index.php SCRIPT_NAME=/index.php \
         PATH_INFO=/users/7 path=/site/index.php"
    );
    assert_eq!(outcome.context().handler_name(), Some("Php"));
    // Only the script is looked at: `*.php` does not match the whole URL.
    assert_eq!(fs.probes(), [std::path::PathBuf::from("/site/index.php")]);

    // The first leading part that is a file: `/a.php` is a folder.
    let outcome = get(&pipeline, "/a.php/b.php/c").await;
    assert!(
        outcome.body().starts_with("script=/a.php/b.php info=/c "),
        "{}",
        outcome.body()
    );

    // A script named whole has no path info; IIS's PATH_INFO is then the
    // whole path.
    let outcome = get(&pipeline, "/index.php").await;
    assert!(
        outcome.body().starts_with(
            "script=/index.php info= URL=/index.php SCRIPT_NAME=/index.php PATH_INFO=/index.php "
        ),
        "{}",
        outcome.body()
    );

    // No such script: the next handler, on the whole URL.
    let outcome = get(&pipeline, "/missing.php/x").await;
    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    let outcome = get(&pipeline, "/notes.txt/x").await;
    assert_eq!(outcome.body(), "static");

    // Another method: 405, with what the script's handler allows.
    let outcome = run(&pipeline, request(Method::POST, "/index.php/users/7")).await;
    assert_eq!(outcome.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(outcome.header("allow"), Some("GET"));
}

#[tokio::test]
async fn without_allow_path_info_a_url_past_a_script_is_not_the_script() {
    let (pipeline, _) = path_info_pipeline(false);
    let outcome = get(&pipeline, "/index.php/users/7").await;
    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    assert_eq!(outcome.context().handler_name(), None);
}

#[test]
fn allow_path_info_needs_a_pattern_for_the_scripts_segment() {
    for path in ["*", "*.", "/api/*"] {
        let mut t = TestPipeline::new();
        let log = Log::new();
        add_handler_module(&mut t, &log, "Script", None);
        let mut h = handler("Any", path, &["*"], "Unspecified", &["Script"]);
        h.allow_path_info = true;
        t.handler(h);
        let err = t.try_build().expect_err("allow_path_info on every path");
        assert!(err.key.ends_with(".allow_path_info"), "{err}");
        assert!(err.message.contains("*.php"), "{err}");
    }
}
