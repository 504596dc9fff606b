//! Module context containers: per-request values live until the request ends
//! and are cleaned up exactly once; connection- and site-level values are
//! shared by the requests of a connection or a site.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use riis_pipeline::http::Method;
use riis_pipeline::{
    ConnectionInfo, HttpContext, HttpModule, RequestExecution, RequestNotification as N,
    RequestNotificationStatus, RequestNotifications,
};

/// Counts its drops: the cleanup of a stored context.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn request_contexts_are_cleaned_up_exactly_once_at_request_end() {
    let drops = Arc::new(AtomicUsize::new(0));
    let seen_later = Arc::new(AtomicUsize::new(0));
    let mut t = TestPipeline::new();
    {
        let drops = drops.clone();
        let seen_later = seen_later.clone();
        t.module(
            "Keeper",
            Registration::events(N::BeginRequest | N::EndRequest),
            script(move |ctx, call| {
                let me = ctx.current_module().expect("called as a module");
                if call.is_event(N::BeginRequest) {
                    // A replaced value is cleaned up at once, the new one later.
                    ctx.module_contexts_mut().set(me, Tracked(drops.clone()));
                    ctx.module_contexts_mut().set(me, Tracked(drops.clone()));
                    assert_eq!(drops.load(Ordering::SeqCst), 1);
                } else if ctx.module_contexts().get::<Tracked>(me).is_some() {
                    seen_later.fetch_add(1, Ordering::SeqCst);
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(
        seen_later.load(Ordering::SeqCst),
        1,
        "the value lives across notifications"
    );
    drop(outcome);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "each stored value dropped exactly once"
    );
}

#[tokio::test]
async fn connection_and_site_contexts_are_shared_between_requests() {
    let mut t = TestPipeline::new();
    t.module(
        "Counter",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let me = ctx.current_module().expect("called as a module");
            let per_conn = ctx
                .connection_contexts()
                .get_or_insert_with(me, || AtomicUsize::new(0));
            let per_site = ctx
                .site_contexts()
                .get_or_insert_with(me, || AtomicUsize::new(0));
            let c = per_conn.fetch_add(1, Ordering::SeqCst) + 1;
            let s = per_site.fetch_add(1, Ordering::SeqCst) + 1;
            write(ctx, format!("{c}/{s}"));
            Status::FinishRequest
        }),
    );
    let pipeline = t.build();
    let connection = Arc::new(ConnectionInfo::new(
        900,
        "127.0.0.1:80".parse().unwrap(),
        "192.0.2.1:1".parse().unwrap(),
    ));
    let on = |conn: Arc<ConnectionInfo>| {
        let ctx = HttpContext::new(
            pipeline.clone(),
            pipeline.sites()[0].clone(),
            conn,
            request(Method::GET, "/"),
            1,
        );
        drive(RequestExecution::new(ctx), Vec::new())
    };
    assert_eq!(on(connection.clone()).await.body(), "1/1");
    assert_eq!(on(connection.clone()).await.body(), "2/2");
    // Another connection starts its own count; the site's keeps going.
    let other = Arc::new(ConnectionInfo::new(
        901,
        "127.0.0.1:80".parse().unwrap(),
        "192.0.2.2:2".parse().unwrap(),
    ));
    assert_eq!(on(other).await.body(), "1/3");
}

/// Notes in `log` when it is dropped.
struct NotesDrop(Log, &'static str);

impl Drop for NotesDrop {
    fn drop(&mut self) {
        self.0.push(self.1);
    }
}

/// Stores a request context at BeginRequest; its instance notes its own
/// disposal.
struct Storer(NotesDrop);

impl HttpModule for Storer {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        let me = ctx.current_module().expect("called as a module");
        let log = self.0 .0.clone();
        ctx.module_contexts_mut()
            .set(me, NotesDrop(log.clone(), "context cleaned up"));
        ctx.keep_until_request_end(NotesDrop(log, "kept value dropped"));
        RequestNotificationStatus::Continue
    }
}

#[tokio::test]
async fn request_contexts_are_cleaned_up_before_instances_are_disposed() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.register("Storer", move |_, reg, _| {
            let log = log.clone();
            reg.set_request_notifications(
                move || Storer(NotesDrop(log.clone(), "instance disposed")),
                N::BeginRequest.into(),
                RequestNotifications::NONE,
            )
        });
    }
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    // A stored context may point into what its instance or a kept value
    // owns (a native module's allocator memory): it goes first.
    assert_eq!(
        log.entries(),
        [
            "context cleaned up",
            "instance disposed",
            "kept value dropped"
        ]
    );
    drop(outcome);
}
