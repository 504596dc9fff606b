//! Module instances and failures: exactly one lazily created instance per
//! module per request, disposed when the request ends; a panicking module
//! fails only its own request with 500 and is not called again in it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{
    HttpContext, HttpModule, HttpModuleFactory, ModuleError, Priority, RequestNotification as N,
    RequestNotifications,
};

/// Creation and disposal counts of one module's instances.
#[derive(Clone, Default)]
struct Counts {
    created: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Counts {
    fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// A module that counts its calls and, when dropped, its disposal.
struct Counted {
    counts: Counts,
    calls: usize,
    log: Log,
    name: &'static str,
}

impl Counted {
    fn call(&mut self, what: &str) -> Status {
        self.calls += 1;
        self.log
            .push(format!("{} {what} call #{}", self.name, self.calls));
        Status::Continue
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl HttpModule for Counted {
    fn on_begin_request(&mut self, _: &mut HttpContext) -> Status {
        self.call("BeginRequest")
    }
    fn on_authorize_request(&mut self, _: &mut HttpContext) -> Status {
        self.call("AuthorizeRequest")
    }
    fn on_end_request(&mut self, _: &mut HttpContext) -> Status {
        self.call("EndRequest")
    }
    fn on_post_end_request(&mut self, _: &mut HttpContext) -> Status {
        self.call("PostEndRequest")
    }
}

/// The factory of [`Counted`], counting creations.
struct CountingFactory {
    counts: Counts,
    log: Log,
    name: &'static str,
}

impl HttpModuleFactory for CountingFactory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        self.counts.created.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Counted {
            counts: self.counts.clone(),
            calls: 0,
            log: self.log.clone(),
            name: self.name,
        }))
    }
}

/// Registers a [`Counted`] module for `notifications` (and `post`).
fn add_counted(
    t: &mut TestPipeline,
    name: &'static str,
    notifications: RequestNotifications,
    post: RequestNotifications,
    log: &Log,
) -> Counts {
    let counts = Counts::default();
    let factory = CountingFactory {
        counts: counts.clone(),
        log: log.clone(),
        name,
    };
    t.register(name, move |_, reg, _| {
        reg.set_request_notifications(factory, notifications, post)
    });
    counts
}

#[tokio::test]
async fn one_instance_per_module_per_request_created_lazily_and_disposed_at_the_end() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let busy = add_counted(
        &mut t,
        "Busy",
        N::BeginRequest | N::AuthorizeRequest | N::EndRequest,
        N::EndRequest.into(),
        &log,
    );
    let late = add_counted(
        &mut t,
        "Late",
        N::EndRequest.into(),
        RequestNotifications::NONE,
        &log,
    );
    let never = add_counted(
        &mut t,
        "Never",
        // Not the handler, so never dispatched.
        N::ExecuteRequestHandler.into(),
        RequestNotifications::NONE,
        &log,
    );
    // An observer that checks, at every event, what exists so far.
    let observed = Log::new();
    {
        let (busy, late, observed) = (busy.clone(), late.clone(), observed.clone());
        t.module(
            "Observer",
            Registration::everything()
                .priority(N::EndRequest, Priority::First)
                .post_priority(N::EndRequest, Priority::Last),
            script(move |_, call| {
                observed.push(format!(
                    "{}: busy {}/{} late {}/{}",
                    call.describe(),
                    busy.created(),
                    busy.dropped(),
                    late.created(),
                    late.dropped()
                ));
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();

    let observed = observed.entries();
    // Before EndRequest (the Observer runs FIRST there), Late does not exist yet.
    assert!(
        observed.contains(&"EndRequest: busy 1/0 late 0/0".to_owned()),
        "{observed:?}"
    );
    // At the very end both exist and neither is disposed yet.
    assert_eq!(
        observed.last().map(String::as_str),
        Some("PostEndRequest: busy 1/0 late 1/0")
    );
    // One instance served every notification of the request.
    assert_eq!(
        log.entries(),
        [
            "Busy BeginRequest call #1",
            "Busy AuthorizeRequest call #2",
            "Busy EndRequest call #3",
            "Late EndRequest call #1",
            "Busy PostEndRequest call #4",
        ]
    );
    // Disposed by the time Done was returned.
    assert_eq!((busy.created(), busy.dropped()), (1, 1));
    assert_eq!((late.created(), late.dropped()), (1, 1));
    assert_eq!(never.created(), 0);

    // A second request gets its own instances.
    get(&pipeline, "/again").await;
    assert_eq!((busy.created(), busy.dropped()), (2, 2));
    assert_eq!((late.created(), late.dropped()), (2, 2));
    assert_eq!(log.count("Busy BeginRequest call #1"), 2);
}

#[tokio::test]
async fn a_factory_error_fails_the_request_with_500() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.register("Broken", |_, reg, _| {
        reg.set_request_notifications(
            BrokenFactory,
            N::AuthenticateRequest.into(),
            RequestNotifications::NONE,
        )
    })
    .module(
        "Recorder",
        Registration::events(N::AuthorizeRequest | N::LogRequest),
        recorder(&log),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(log.entries(), ["LogRequest"]);
}

#[tokio::test]
async fn a_factory_error_in_a_nested_notification_fails_the_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.register("BrokenMapper", |_, reg, _| {
        reg.set_request_notifications(BrokenFactory, N::MapPath.into(), RequestNotifications::NONE)
    });
    file_handler_that_must_not_run(&mut t, &log);
    let pipeline = t.build();
    let outcome = get(&pipeline, "/a.txt").await;
    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(log.entries(), ["LogRequest"], "the handler never ran");
}

#[tokio::test]
async fn a_factory_that_panics_fails_only_its_request() {
    let mut t = TestPipeline::new();
    t.register("PanickingSender", |_, reg, _| {
        reg.set_request_notifications(
            PanickingFactory,
            N::SendResponse.into(),
            RequestNotifications::NONE,
        )
    })
    .module(
        "Page",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "page");
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(handler("Main", "*", &["*"], "Unspecified", &["Page"]));
    let pipeline = t.build();
    for _ in 0..2 {
        let outcome = get(&pipeline, "/").await;
        outcome.assert_completed();
        assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

/// A factory that panics instead of making its module.
struct PanickingFactory;

impl HttpModuleFactory for PanickingFactory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        panic!("no module today")
    }
}

/// A factory that cannot make its module.
struct BrokenFactory;

impl HttpModuleFactory for BrokenFactory {
    fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
        Err(ModuleError::new("out of widgets"))
    }
}

/// A pipeline where `Boom` panics at AuthorizeRequest for `/boom` and records
/// its other calls, and `Page` answers "page".
fn panicking_pipeline(log: &Log) -> Arc<riis_pipeline::Pipeline> {
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Boom",
            Registration::events(
                N::AuthorizeRequest | N::LogRequest | N::EndRequest | N::SendResponse,
            ),
            script(move |ctx, call| {
                if call.is_event(N::AuthorizeRequest) && ctx.request().url() == "/boom" {
                    panic!("boom in a test module");
                }
                log.push(format!("Boom {}", call.describe()));
                Status::Continue
            }),
        );
    }
    {
        let log = log.clone();
        t.module(
            "Page",
            Registration::events(N::ExecuteRequestHandler | N::EndRequest),
            script(move |ctx, call| {
                log.push(format!("Page {}", call.describe()));
                if call.is_event(N::ExecuteRequestHandler) {
                    write(ctx, "page");
                }
                Status::Continue
            }),
        );
    }
    t.handler(catch_all(&["Page"]));
    t.build()
}

#[tokio::test]
async fn a_panicking_module_fails_its_request_with_500_and_is_not_called_again() {
    let log = Log::new();
    let pipeline = panicking_pipeline(&log);

    let outcome = get(&pipeline, "/boom").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    outcome.assert_completed();
    // The handler was skipped, the closing events ran for the other module,
    // and Boom was not called again (not even for SendResponse).
    assert_eq!(log.entries(), ["Page EndRequest"]);
    let error = outcome
        .context()
        .response()
        .error()
        .expect("the 500 names its cause");
    assert_eq!(
        error.module.map(|m| pipeline.module_name(m).to_owned()),
        Some("Boom".to_owned())
    );
    assert_eq!(error.notification, "AuthorizeRequest");
}

#[tokio::test]
async fn requests_after_a_panic_on_the_same_pipeline_still_work() {
    let log = Log::new();
    let pipeline = panicking_pipeline(&log);

    assert_eq!(
        get(&pipeline, "/boom").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    log.take();
    let outcome = get(&pipeline, "/fine").await;

    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "page");
    assert_eq!(
        log.entries(),
        [
            "Boom AuthorizeRequest",
            "Page ExecuteRequestHandler",
            "Boom LogRequest",
            "Boom EndRequest",
            "Page EndRequest",
            "Boom SendResponse",
        ]
    );
}

#[tokio::test]
async fn a_panic_in_the_handler_yields_500_with_nothing_it_wrote() {
    let mut t = TestPipeline::new();
    t.module(
        "Crasher",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "half a page");
            panic!("handler crashed");
        }),
    )
    .handler(catch_all(&["Crasher"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!outcome.body().contains("half a page"));
    outcome.assert_completed();
}
