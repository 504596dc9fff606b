//! Module misbehaviour in the less common places: panics in nested
//! notifications and global modules, operations started where none may run,
//! and the configuration mistakes the builder refuses.

mod common;

use common::*;
use riis_pipeline::http::{header, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    GlobalModule, GlobalNotification, GlobalNotificationStatus, HttpContext, ModuleError,
    ModuleRegistration, RequestNotification as N, ServerInfo,
};

#[tokio::test]
async fn a_panic_in_map_path_fails_the_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "BadMapper",
        Registration::events(N::MapPath),
        script(|_, _| panic!("cannot map")),
    );
    file_handler_that_must_not_run(&mut t, &log);
    let pipeline = t.build();
    let outcome = get(&pipeline, "/a.txt").await;
    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(log.entries(), ["LogRequest"], "the handler never ran");
    // The server keeps serving: the next request fails the same way, cleanly.
    assert_eq!(
        get(&pipeline, "/a.txt").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn operations_started_in_nested_notifications_are_refused_or_ignored() {
    let mut t = TestPipeline::new();
    t.module(
        "Mapper",
        Registration::events(N::MapPath),
        script(|ctx, _| {
            // Not allowed here: refused at once, so nothing runs or leaks
            // into the caller; a flush (which cannot fail) is ignored.
            assert!(ctx.in_nested_notification());
            let refused = ctx.read_entity_body(10).expect_err("a read");
            assert_eq!(refused.hresult, ModuleError::E_INVALID_STATE);
            let refused = ctx.post_completion(1).expect_err("a post");
            assert_eq!(refused.hresult, ModuleError::E_INVALID_STATE);
            let child = ctx.clone_context().expect("a clone");
            let refused = ctx
                .execute_request(child, Default::default())
                .expect_err("a child request");
            assert_eq!(refused.hresult, ModuleError::E_INVALID_STATE);
            ctx.enable_full_duplex();
            let refused = ctx.read_entity_body(10).expect_err("a full-duplex read");
            assert_eq!(refused.hresult, ModuleError::E_INVALID_STATE);
            ctx.response_mut().flush(Default::default());
            Status::Continue
        }),
    );
    t.module(
        "Handler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            assert!(!ctx.in_nested_notification());
            let path = ctx.map_path("/elsewhere");
            write(ctx, path.display().to_string());
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Handler"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "/site/elsewhere");
    assert_eq!(outcome.final_sends(), 1);
}

#[tokio::test]
async fn an_operation_the_caller_started_survives_a_nested_notification() {
    let mut t = TestPipeline::new();
    t.module(
        "Mapper",
        Registration::events(N::MapPath),
        script(|ctx, _| {
            assert!(ctx.read_entity_body(10).is_err());
            Status::Continue
        }),
    );
    t.module(
        "Handler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "first;");
            // The flush is asked for before MapPath runs and must still
            // happen when this call returns.
            ctx.response_mut().flush(Default::default());
            let path = ctx.map_path("/x");
            write(ctx, path.display().to_string());
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Handler"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.sends.len(), 2, "the flush, then the final send");
    assert!(!outcome.sends[0].is_final);
    assert_eq!(outcome.body(), "first;/site/x");
}

/// Flushes part of the entity in ExecuteRequestHandler; in
/// ReleaseRequestState panics for `/panic` and asks for a disconnect for
/// `/close`.
fn flush_then(t: &mut TestPipeline) {
    t.module(
        "FlushThen",
        Registration::events(N::ExecuteRequestHandler | N::ReleaseRequestState),
        script(|ctx, call| {
            if call.is_event(N::ExecuteRequestHandler) {
                write(ctx, "part;");
                ctx.response_mut().flush(Default::default());
                ctx.set_request_handled();
            } else if ctx.request().url() == "/panic" {
                panic!("after the headers");
            } else if ctx.request().url() == "/close" {
                ctx.response_mut().set_need_disconnect();
            }
            Status::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["FlushThen"]));
}

#[tokio::test]
async fn a_failure_after_the_headers_marks_the_response_truncated() {
    let mut t = TestPipeline::new();
    flush_then(&mut t);
    let pipeline = t.build();

    let failed = get(&pipeline, "/panic").await;
    failed.assert_completed();
    assert_eq!(failed.status(), StatusCode::OK, "the head went out before");
    let last = failed.sends.last().unwrap();
    assert!(last.truncated && last.disconnect, "{:?}", failed.sends);
    assert!(!failed.sends[0].truncated);

    // A disconnect the module asks for ends a whole response.
    let closing = get(&pipeline, "/close").await;
    let last = closing.sends.last().unwrap();
    assert!(last.disconnect && !last.truncated, "{:?}", closing.sends);

    let fine = get(&pipeline, "/fine").await;
    assert!(fine.sends.iter().all(|s| !s.disconnect && !s.truncated));
    assert_eq!(fine.body(), "part;");
}

#[tokio::test]
async fn an_operation_started_with_a_flush_whose_send_response_fails_does_not_run() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "BadSender",
        Registration::events(N::SendResponse),
        script(|_, _| panic!("cannot send")),
    );
    {
        let log = log.clone();
        t.module(
            "Parent",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                log.push(format!("{} {}", ctx.request().url(), call.describe()));
                if ctx.request().url() == "/child" {
                    write(ctx, "child");
                    ctx.set_request_handled();
                    return Status::Continue;
                }
                if !call.is_event(N::ExecuteRequestHandler) {
                    return Status::Continue;
                }
                write(ctx, "parent;");
                ctx.response_mut().flush(Default::default());
                let child = ctx.clone_context_with_url("/child").unwrap();
                let flags = riis_pipeline::ExecuteFlags {
                    buffer_response: true,
                    ..Default::default()
                };
                ctx.execute_request(child, flags).unwrap();
                Status::Pending
            }),
        );
    }
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Parent"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!outcome.body().contains("child"), "{}", outcome.body());
    assert_eq!(
        log.entries(),
        ["/ ExecuteRequestHandler"],
        "neither the child nor the parent's completion ran"
    );
}

#[tokio::test]
async fn a_header_set_early_does_not_hide_an_unanswered_handler() {
    let mut t = TestPipeline::new();
    t.module(
        "Tagger",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            ctx.response_mut().set_header(
                header::HeaderName::from_static("x-tag"),
                HeaderValue::from_static("1"),
            );
            Status::Continue
        }),
    );
    t.module(
        "Passer",
        Registration::events(N::ExecuteRequestHandler),
        script(|_, _| Status::Continue),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Passer"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    assert_eq!(outcome.status(), StatusCode::NOT_FOUND);
    assert_eq!(outcome.header("x-tag"), Some("1"));
}

#[tokio::test]
async fn method_not_allowed_lists_the_allowed_methods() {
    let mut t = TestPipeline::new();
    t.module(
        "Static",
        Registration::events(N::ExecuteRequestHandler),
        script(|_, _| Status::Continue),
    );
    t.handler(handler(
        "Main",
        "*",
        &["GET", "HEAD"],
        "Unspecified",
        &["Static"],
    ));
    let pipeline = t.build();
    let outcome = run(&pipeline, request(Method::DELETE, "/x")).await;
    assert_eq!(outcome.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(outcome.header("allow"), Some("GET, HEAD"));
}

struct PanickyGlobal;

impl GlobalModule for PanickyGlobal {
    fn on_global_pre_begin_request(&self, _ctx: &mut HttpContext) -> GlobalNotificationStatus {
        panic!("global trouble")
    }
}

fn register_panicky(
    _: u32,
    r: &mut ModuleRegistration<'_>,
    _: &ServerInfo,
) -> Result<(), ModuleError> {
    r.set_global_notifications(PanickyGlobal, GlobalNotification::PreBeginRequest.into())
}

#[tokio::test]
async fn a_panic_in_a_global_module_fails_only_that_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.register("Panicky", register_panicky);
    t.module(
        "Recorder",
        Registration::events(N::BeginRequest | N::EndRequest),
        recorder(&log),
    );
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(log.entries(), ["EndRequest"]);
}

#[test]
fn lower_case_standard_methods_are_refused() {
    let mut t = TestPipeline::new();
    t.module(
        "Static",
        Registration::events(N::ExecuteRequestHandler),
        script(|_, _| Status::Continue),
    );
    t.handler(handler("Main", "*", &["get"], "Unspecified", &["Static"]));
    let err = t.try_build().expect_err("`get` is refused");
    assert!(err.key.ends_with(".verbs"), "{err}");
    assert!(err.message.contains("case-sensitive"), "{err}");
}

#[tokio::test]
async fn finish_request_from_read_entity_ends_the_read() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Limiter",
            Registration::events(N::ReadEntity | N::LogRequest),
            script(move |ctx, call| {
                log.push(format!("Limiter:{}", call.describe()));
                if call.describe() == "ReadEntity" {
                    ctx.response_mut().set_error_status(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Payload Too Large",
                        0,
                        ModuleError::E_INVALIDARG,
                    );
                    return Status::FinishRequest;
                }
                Status::Continue
            }),
        );
    }
    {
        let log = log.clone();
        t.module(
            "Reader",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                log.push(format!("Reader:{}", call.describe()));
                if ctx.read_entity_body(1024).is_ok() {
                    Status::Pending
                } else {
                    Status::FinishRequest
                }
            }),
        );
    }
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Reader"]));
    let pipeline = t.build();
    let (req, body) = post_request("/upload", &["0123456789"]);
    let outcome = run_with_body(&pipeline, req, body).await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        log.entries(),
        [
            "Reader:ExecuteRequestHandler",
            "Limiter:ReadEntity",
            "Limiter:LogRequest"
        ],
        "the reader is not resumed"
    );
}

/// A module whose `Drop` panics: on its own, and while its handler's panic
/// unwinds (which would abort the process if the instance were dropped
/// during the unwind).
struct DropsBadly {
    panic_in_handler: bool,
}

impl riis_pipeline::HttpModule for DropsBadly {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> Status {
        if self.panic_in_handler {
            panic!("handler trouble");
        }
        write(ctx, "served");
        ctx.set_request_handled();
        Status::Continue
    }
}

impl Drop for DropsBadly {
    fn drop(&mut self) {
        panic!("drop trouble");
    }
}

/// A pipeline whose handler is `DropsBadly`.
fn drops_badly_pipeline(panic_in_handler: bool) -> std::sync::Arc<riis_pipeline::Pipeline> {
    let mut t = TestPipeline::new();
    t.register("DropsBadly", move |_, r, _| {
        r.set_request_notifications(
            move || DropsBadly { panic_in_handler },
            N::ExecuteRequestHandler.into(),
            riis_pipeline::RequestNotifications::NONE,
        )
    });
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["DropsBadly"]));
    t.build()
}

#[tokio::test]
async fn a_panicking_drop_fails_nothing_but_is_contained() {
    let pipeline = drops_badly_pipeline(false);
    // Disposed at the request end: the response stands.
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "served");
}

/// Counts its drops.
struct CountsDrops;

static DROPS_COUNTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl riis_pipeline::HttpModule for CountsDrops {}

impl Drop for CountsDrops {
    fn drop(&mut self) {
        DROPS_COUNTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Instances are dropped at the request end under one guard: those after
/// one whose drop panics are dropped too, each once.
#[tokio::test]
async fn instances_after_one_that_panics_when_dropped_are_dropped() {
    let mut t = TestPipeline::new();
    for name in ["First", "Second"] {
        t.register(name, |_, r, _| {
            r.set_request_notifications(
                || CountsDrops,
                N::BeginRequest.into(),
                riis_pipeline::RequestNotifications::NONE,
            )
        });
    }
    t.register("DropsBadly", |_, r, _| {
        r.set_request_notifications(
            || DropsBadly {
                panic_in_handler: false,
            },
            N::BeginRequest | N::ExecuteRequestHandler,
            riis_pipeline::RequestNotifications::NONE,
        )
    });
    for name in ["Third", "Fourth"] {
        t.register(name, |_, r, _| {
            r.set_request_notifications(
                || CountsDrops,
                N::BeginRequest.into(),
                riis_pipeline::RequestNotifications::NONE,
            )
        });
    }
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["DropsBadly"]));
    let pipeline = t.build();
    let before = DROPS_COUNTED.load(std::sync::atomic::Ordering::SeqCst);
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.body(), "served");
    assert_eq!(
        DROPS_COUNTED.load(std::sync::atomic::Ordering::SeqCst) - before,
        4
    );
}

#[tokio::test]
async fn a_drop_that_panics_after_its_handler_panicked_does_not_abort() {
    let pipeline = drops_badly_pipeline(true);
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // And the next request too.
    assert_eq!(
        get(&pipeline, "/").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("context trouble");
    }
}

#[tokio::test]
async fn a_stored_context_or_kept_value_that_panics_when_dropped_is_contained() {
    let mut t = TestPipeline::new();
    t.module(
        "Keeper",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let me = ctx.current_module().expect("a module call");
            ctx.module_contexts_mut().set(me, PanicsOnDrop);
            ctx.keep_until_request_end(PanicsOnDrop);
            Status::Continue
        }),
    );
    t.module(
        "Handler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "fine");
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Handler"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.body(), "fine");
}

struct TerminatesBadly(Log);

impl riis_pipeline::HttpModuleFactory for TerminatesBadly {
    fn get_http_module(&self) -> Result<Box<dyn riis_pipeline::HttpModule>, ModuleError> {
        Err(ModuleError::new("never asked"))
    }

    fn terminate(&self) {
        self.0.push("terminate");
        panic!("terminate trouble");
    }
}

#[test]
fn a_panic_in_terminate_or_register_is_contained() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    for name in ["First", "Second"] {
        let log = log.clone();
        t.register(name, move |_, r, _| {
            r.set_request_notifications(
                TerminatesBadly(log),
                N::LogRequest.into(),
                riis_pipeline::RequestNotifications::NONE,
            )
        });
    }
    let err = t
        .builder_mut()
        .register_module("Broken", |_, _, _| panic!("register trouble"))
        .expect_err("a panicking entry point is an error");
    assert!(
        err.message
            .contains("panicked while registering: register trouble"),
        "{err}"
    );
    let pipeline = t.build();
    pipeline.terminate();
    // Both terminated, though the first panicked.
    assert_eq!(log.entries(), ["terminate", "terminate"]);
}

/// A module that fills the response's header map to its limit gets no
/// `Server` header, not a panic in the engine's send.
#[tokio::test]
async fn a_full_header_map_does_not_panic_the_send() {
    let mut t = TestPipeline::new();
    t.module(
        "Filler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let headers = ctx.response_mut().headers_mut();
            for i in 0.. {
                let name = riis_pipeline::http::HeaderName::try_from(format!("x-h{i}")).unwrap();
                if headers
                    .try_insert(name, HeaderValue::from_static("v"))
                    .is_err()
                {
                    break;
                }
            }
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(catch_all(&["Filler"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.status(), StatusCode::OK);
}

/// The same in a deterministic event's walk (BeginRequest) and in a nested
/// notification (SendResponse): the paths that held the instance inside the
/// unwind.
struct PanicsTwice;

impl riis_pipeline::HttpModule for PanicsTwice {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        if ctx.request().url() == "/begin" {
            panic!("begin trouble");
        }
        Status::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        _: &mut riis_pipeline::SendResponseProvider,
    ) -> Status {
        if ctx.request().url() == "/send" {
            panic!("send trouble");
        }
        Status::Continue
    }
}

impl Drop for PanicsTwice {
    fn drop(&mut self) {
        panic!("drop trouble");
    }
}

#[tokio::test]
async fn drops_that_panic_after_a_walk_or_nested_panic_do_not_abort() {
    let mut t = TestPipeline::new();
    t.register("PanicsTwice", |_, r, _| {
        r.set_request_notifications(
            || PanicsTwice,
            N::BeginRequest | N::SendResponse,
            riis_pipeline::RequestNotifications::NONE,
        )
    });
    let pipeline = t.build();
    for url in ["/begin", "/send"] {
        let outcome = get(&pipeline, url).await;
        outcome.assert_completed();
        assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR, "{url}");
        // The 500 that replaced the response in its final send has the
        // Server header the send had given the old one.
        assert!(
            outcome
                .header("server")
                .is_some_and(|s| s.starts_with("riis")),
            "{url}: {:?}",
            outcome.head().headers
        );
    }
}
