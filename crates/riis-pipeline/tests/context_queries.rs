//! What a module can ask the context about the running pipeline:
//! `is_last_notification` and `current_execution_stats`.

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
