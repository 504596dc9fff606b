//! Global modules: PreBeginRequest sees every request and may still rewrite
//! its URL; Handled hides a notification from later global modules; TraceEvent
//! reports the start and end of every module call.

mod common;

use common::*;
use riis_pipeline::http::StatusCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use riis_pipeline::{
    Application, GlobalModule, GlobalNotification as G, GlobalNotificationStatus, HttpContext,
    HttpModule, LocationDefinition, Priority, RequestNotification as N, TraceEvent, TracePhase,
    UrlError,
};

/// A PreBeginRequest module that logs each URL and rewrites `/old…` to `/new…`.
struct Rewriter {
    log: Log,
}

impl GlobalModule for Rewriter {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        let url = ctx.request().url().to_owned();
        self.log.push(format!("Rewriter saw {url}"));
        if let Some(rest) = url.strip_prefix("/old") {
            ctx.request_mut()
                .set_url(&format!("/new{rest}"))
                .expect("the URL may change before the pipeline starts");
        }
        GlobalNotificationStatus::Continue
    }
}

/// Registers a handler that writes the URL and its location, and checks
/// that a rewrite after BeginRequest is refused.
fn add_url_echo(t: &mut TestPipeline) {
    t.module(
        "UrlEcho",
        Registration::events(N::ExecuteRequestHandler).with_post(N::BeginRequest),
        script(|ctx, call| {
            if call.is_post_event(N::BeginRequest) {
                let late = ctx.request_mut().set_url("/too-late");
                assert_eq!(late, Err(UrlError::PipelineStarted));
                return Status::Continue;
            }
            let text = format!("{} in {}", ctx.request().url(), ctx.location().path());
            write(ctx, text);
            Status::Continue
        }),
    )
    .handler(catch_all(&["UrlEcho"]));
}

#[tokio::test]
async fn pre_begin_request_sees_every_request_and_may_rewrite_the_url() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.register("Rewriter", move |_, reg, _| {
            reg.set_global_notifications(Rewriter { log }, G::PreBeginRequest.into())
        });
    }
    add_url_echo(&mut t);
    t.site_mut().locations.push(LocationDefinition {
        path: "/new".into(),
        key: "sites[0].locations[0]".into(),
        ..LocationDefinition::default()
    });
    let pipeline = t.build();

    let rewritten = get(&pipeline, "/old/page").await;
    let plain = get(&pipeline, "/other").await;

    assert_eq!(
        log.entries(),
        ["Rewriter saw /old/page", "Rewriter saw /other"]
    );
    // The location is resolved again for the rewritten URL.
    assert_eq!(rewritten.body(), "/new/page in /new");
    assert_eq!(plain.body(), "/other in /");
}

/// A BeginRequest module (at FIRST priority, as a rewriter registers) may
/// rewrite the URL too: the modules after it, in BeginRequest already, see
/// the new URL's location.
#[tokio::test]
async fn begin_request_may_rewrite_the_url_for_the_modules_after_it() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "ShopRewriter",
        Registration::events(N::BeginRequest).priority(N::BeginRequest, Priority::First),
        script(|ctx, _| {
            let url = ctx.request().url().to_owned();
            if let Some(rest) = url.strip_prefix("/shop") {
                ctx.request_mut().set_url(&format!("/store{rest}")).unwrap();
            }
            Status::Continue
        }),
    );
    {
        let log = log.clone();
        t.module(
            "Observer",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                log.push(format!(
                    "{} in {}",
                    ctx.request().url(),
                    ctx.location().path()
                ));
                Status::Continue
            }),
        );
    }
    add_url_echo(&mut t);
    t.site_mut().locations.push(LocationDefinition {
        path: "/store".into(),
        key: "sites[0].locations[0]".into(),
        ..LocationDefinition::default()
    });
    let pipeline = t.build();

    let rewritten = get(&pipeline, "/shop/item").await;

    assert_eq!(log.entries(), ["/store/item in /store"]);
    assert_eq!(rewritten.body(), "/store/item in /store");
}

/// A PreBeginRequest module that logs its name and returns `status`.
struct Named {
    name: &'static str,
    status: GlobalNotificationStatus,
    log: Log,
}

impl GlobalModule for Named {
    fn on_global_pre_begin_request(&self, _: &mut HttpContext) -> GlobalNotificationStatus {
        self.log.push(self.name);
        self.status
    }
}

#[tokio::test]
async fn handled_hides_a_global_notification_from_later_global_modules() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    for (name, status, priority) in [
        ("Third", GlobalNotificationStatus::Continue, Priority::Low),
        ("First", GlobalNotificationStatus::Continue, Priority::High),
        (
            "Second",
            GlobalNotificationStatus::Handled,
            Priority::Medium,
        ),
    ] {
        let log = log.clone();
        t.register(name, move |_, reg, _| {
            reg.set_global_notifications(Named { name, status, log }, G::PreBeginRequest.into())?;
            reg.set_priority_for_global_notification(G::PreBeginRequest, priority);
            Ok(())
        });
    }
    t.module(
        "Recorder",
        Registration::events(N::BeginRequest),
        recorder(&log),
    );
    let pipeline = t.build();

    get(&pipeline, "/").await;

    // Handled stops the global modules only; the request goes on.
    assert_eq!(log.entries(), ["First", "Second", "BeginRequest"]);
}

/// A TraceEvent module that logs module start/end events.
struct Tracer {
    log: Log,
}

impl GlobalModule for Tracer {
    fn on_global_trace_event(&self, event: &TraceEvent<'_>) -> GlobalNotificationStatus {
        let phase = match event.phase {
            TracePhase::ModuleStart => "start".to_owned(),
            TracePhase::ModuleEnd { status, .. } => format!("end {status:?}"),
            TracePhase::Custom { message } => format!("custom {message}"),
        };
        self.log.push(format!(
            "{} {} {phase} {}",
            event.module,
            event_name(event.notification, event.is_post),
            event.url
        ));
        GlobalNotificationStatus::Continue
    }
}

#[tokio::test]
async fn trace_event_reports_module_start_and_end() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.register("Tracer", move |_, reg, _| {
            reg.set_global_notifications(Tracer { log }, G::TraceEvent.into())
        });
    }
    t.module(
        "Worker",
        Registration::events(N::BeginRequest | N::SendResponse).with_post(N::AuthorizeRequest),
        script(|ctx, call| {
            if call.is_event(N::BeginRequest) {
                ctx.raise_trace_event("working");
                return Status::Continue;
            }
            if let Call::SendResponse(_) = call {
                return Status::Continue;
            }
            Status::FinishRequest
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/traced").await;

    // The nondeterministic SendResponse of the final send is traced too.
    assert_eq!(
        log.entries(),
        [
            "Worker BeginRequest start /traced",
            "Worker BeginRequest custom working /traced",
            "Worker BeginRequest end Continue /traced",
            "Worker PostAuthorizeRequest start /traced",
            "Worker PostAuthorizeRequest end FinishRequest /traced",
            "Worker SendResponse start /traced",
            "Worker SendResponse end Continue /traced",
        ]
    );
    assert_eq!(outcome.status(), StatusCode::OK);
}

/// A PreBeginRequest module that starts a body read and an asynchronous
/// flush (a global module gets no completion).
struct EagerReader;

impl GlobalModule for EagerReader {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        let _ = ctx.read_entity_body(16);
        // And an asynchronous flush: both are ignored, not one.
        ctx.response_mut().flush(riis_pipeline::FlushOptions {
            asynchronous: true,
            more_data: true,
        });
        GlobalNotificationStatus::Continue
    }
}

/// An operation started in PreBeginRequest is ignored: it does not complete
/// into the first BeginRequest module's call.
#[tokio::test]
async fn an_operation_started_in_pre_begin_request_is_ignored() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.register("EagerReader", |_, reg, _| {
        reg.set_global_notifications(EagerReader, G::PreBeginRequest.into())
    });
    {
        // Starts its own read, and must get that read's completion.
        let log = log.clone();
        t.module(
            "Begin",
            Registration::events(N::BeginRequest),
            script(move |ctx, call| match call {
                Call::AsyncCompletion { info, .. } => {
                    log.push(format!("own read completed, {} bytes", info.bytes));
                    Status::Continue
                }
                _ => match ctx.read_entity_body(8) {
                    Ok(()) => Status::Pending,
                    Err(e) => {
                        log.push(format!("own read refused: {e}"));
                        Status::Continue
                    }
                },
            }),
        );
    }
    add_url_echo(&mut t);
    let pipeline = t.build();
    let resp = get(&pipeline, "/page").await;
    assert_eq!(resp.body(), "/page in /");
    assert_eq!(log.entries(), ["own read completed, 0 bytes"]);
}

/// Answers the runtime status query `status`.
struct StatusAnswer;

impl GlobalModule for StatusAnswer {
    fn on_global_rsca_query(
        &self,
        query: &mut riis_pipeline::RscaQuery<'_>,
    ) -> GlobalNotificationStatus {
        if query.function() == "status" {
            query.write("cache_entries: 3\n");
        }
        GlobalNotificationStatus::Continue
    }
}

#[test]
fn global_modules_answer_runtime_status_queries() {
    let mut t = TestPipeline::new();
    t.register("StatusAnswer", |_, reg, _| {
        reg.set_global_notifications(StatusAnswer, G::RscaQuery.into())
    });
    let pipeline = t.build();
    let mut query = riis_pipeline::RscaQuery::new("status", "");
    pipeline.raise_rsca_query(&mut query);
    assert_eq!(query.output(), "cache_entries: 3\n");
    let mut other = riis_pipeline::RscaQuery::new("something-else", "x");
    pipeline.raise_rsca_query(&mut other);
    assert_eq!(other.output(), "");
}

/// A PreBeginRequest module that refuses `/refused` with an error status.
struct Refuser;

impl GlobalModule for Refuser {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        if ctx.request().url() == "/refused" {
            ctx.response_mut()
                .set_error_status(StatusCode::FORBIDDEN, "Forbidden", 0, 0x8007_0005);
        }
        GlobalNotificationStatus::Continue
    }
}

/// An error status a global module sets in PreBeginRequest ends the
/// request: BeginRequest's modules and the handler do not run (and would
/// have served it), LogRequest and EndRequest do.
#[tokio::test]
async fn an_error_status_set_in_pre_begin_request_ends_the_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.register("Refuser", |_, reg, _| {
        reg.set_global_notifications(Refuser, G::PreBeginRequest.into())
    });
    {
        let log = log.clone();
        t.module(
            "Watcher",
            Registration::events(N::BeginRequest | N::LogRequest | N::EndRequest),
            script(move |_, call| {
                log.push(call.describe());
                Status::Continue
            }),
        );
    }
    add_url_echo(&mut t);
    let pipeline = t.build();
    let refused = get(&pipeline, "/refused").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.body(), "");
    let seen = log.take();
    assert!(!seen.iter().any(|e| e.contains("BeginRequest")), "{seen:?}");
    assert!(seen.iter().any(|e| e.contains("EndRequest")), "{seen:?}");
    assert_eq!(get(&pipeline, "/fine").await.body(), "/fine in /");
}

/// The same with no module at LogRequest or EndRequest: the request ends
/// with its error status (it once ran past the last event and panicked).
#[tokio::test]
async fn an_error_status_in_pre_begin_request_ends_a_request_with_nothing_after() {
    let mut t = TestPipeline::new();
    t.register("Refuser", |_, reg, _| {
        reg.set_global_notifications(Refuser, G::PreBeginRequest.into())
    });
    add_url_echo(&mut t);
    let pipeline = t.build();
    let refused = get(&pipeline, "/refused").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&pipeline, "/fine").await.body(), "/fine in /");
}

/// Keeps application state from ApplicationStart, which its requests read
/// from the site's container, as IIS modules keep theirs in the
/// application's container.
struct AppState;

impl GlobalModule for AppState {
    fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        let label = format!("{} #{}", app.site_name, app.site_id);
        app.module_contexts()
            .set(app.module(), Arc::new((label, AtomicUsize::new(0))));
        GlobalNotificationStatus::Continue
    }

    fn on_global_application_stop(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        let state = app
            .module_contexts()
            .get::<(String, AtomicUsize)>(app.module())
            .expect("ApplicationStop sees what ApplicationStart stored");
        STOP_SAW.store(state.1.load(Ordering::SeqCst), Ordering::SeqCst);
        GlobalNotificationStatus::Continue
    }
}

/// The count ApplicationStop found in the site's container.
static STOP_SAW: AtomicUsize = AtomicUsize::new(0);

struct AppStateReader;

impl HttpModule for AppStateReader {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> Status {
        let me = ctx.current_module().expect("called as a module");
        let text = match ctx.site_contexts().get::<(String, AtomicUsize)>(me) {
            Some(state) => format!(
                "{}: {}",
                state.0,
                state.1.fetch_add(1, Ordering::SeqCst) + 1
            ),
            None => "no state".to_owned(),
        };
        write(ctx, text);
        Status::FinishRequest
    }
}

#[tokio::test]
async fn application_start_keeps_state_the_sites_requests_read() {
    let mut t = TestPipeline::new();
    t.register("AppState", |_, reg, _| {
        reg.set_request_notifications(
            || AppStateReader,
            N::BeginRequest.into(),
            riis_pipeline::RequestNotifications::NONE,
        )?;
        reg.set_global_notifications(AppState, G::ApplicationStart | G::ApplicationStop)
    });
    let pipeline = t.build();
    // Before ApplicationStart the container is empty.
    assert_eq!(get(&pipeline, "/").await.body(), "no state");
    pipeline.raise_application_start();
    let site = pipeline.sites()[0].info().clone();
    let label = format!("{} #{}", site.site_name, site.site_id);
    assert_eq!(get(&pipeline, "/").await.body(), format!("{label}: 1"));
    assert_eq!(get(&pipeline, "/a").await.body(), format!("{label}: 2"));
    pipeline.raise_application_stop();
    // ApplicationStop saw the same value; then the site's container let go
    // of it (before the modules' terminate, as IIS cleans up an
    // application's container when it stops).
    assert_eq!(STOP_SAW.load(Ordering::SeqCst), 2);
    assert_eq!(get(&pipeline, "/").await.body(), "no state");
}
