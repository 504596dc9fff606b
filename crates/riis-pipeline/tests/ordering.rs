//! The order of notifications and of modules within a notification: the
//! deterministic event sequence, priorities with list-order ties, separate
//! post-event priorities, and SendResponse's inverted order.

mod common;

use common::*;
use riis_pipeline::{Priority, RequestNotification as N, RequestNotifications};

/// The names of every event and post-event in order, optionally without the
/// ExecuteRequestHandler event itself.
fn expected_sequence(with_execute: bool) -> Vec<String> {
    all_events()
        .into_iter()
        .filter(|&(n, post)| with_execute || post || n != N::ExecuteRequestHandler)
        .map(|(n, post)| event_name(n, post))
        .collect()
}

#[tokio::test]
async fn events_and_post_events_run_in_pipeline_order_for_the_handler_module() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module("Recorder", Registration::everything(), recorder(&log))
        .handler(catch_all(&["Recorder"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/page").await;

    assert_eq!(log.entries(), expected_sequence(true));
    assert_eq!(
        log.entries().first().map(String::as_str),
        Some("BeginRequest")
    );
    assert_eq!(
        log.entries().last().map(String::as_str),
        Some("PostEndRequest")
    );
    outcome.assert_completed();
}

#[tokio::test]
async fn execute_request_handler_is_skipped_for_a_module_that_is_not_the_handler() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module("Recorder", Registration::everything(), recorder(&log))
        .module(
            "Handler",
            Registration::events(N::ExecuteRequestHandler),
            script(|ctx, _| {
                write(ctx, "handled");
                Status::Continue
            }),
        )
        .handler(catch_all(&["Handler"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/page").await;

    // The post-event still runs for every module registered for it.
    assert_eq!(log.entries(), expected_sequence(false));
    assert_eq!(outcome.body(), "handled");
}

/// Registers `name` for BeginRequest at `priority`, logging its name.
fn ranked(t: &mut TestPipeline, log: &Log, name: &'static str, priority: Priority) {
    let log = log.clone();
    t.module(
        name,
        Registration::events(N::BeginRequest).priority(N::BeginRequest, priority),
        script(move |_, _| {
            log.push(name);
            Status::Continue
        }),
    );
}

#[tokio::test]
async fn higher_priorities_run_first_and_ties_keep_module_list_order() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    ranked(&mut t, &log, "LowA", Priority::Low);
    ranked(&mut t, &log, "MediumA", Priority::Medium);
    ranked(&mut t, &log, "Last", Priority::Last);
    ranked(&mut t, &log, "First", Priority::First);
    ranked(&mut t, &log, "MediumB", Priority::Medium);
    ranked(&mut t, &log, "High", Priority::High);
    ranked(&mut t, &log, "LowB", Priority::Low);
    let pipeline = t.build();
    let expected = [
        "First", "High", "MediumA", "MediumB", "LowA", "LowB", "Last",
    ];

    assert_eq!(pipeline.dispatch_order(N::BeginRequest, false), expected);
    get(&pipeline, "/").await;
    assert_eq!(log.entries(), expected);
}

#[tokio::test]
async fn post_event_priority_is_set_separately_from_the_event_priority() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let both = RequestNotifications::from(N::AuthorizeRequest);
    for (name, event, post) in [
        ("A", Priority::First, Priority::Last),
        ("B", Priority::Medium, Priority::Medium),
        ("C", Priority::Last, Priority::First),
    ] {
        let log = log.clone();
        t.module(
            name,
            Registration::events(both)
                .with_post(both)
                .priority(N::AuthorizeRequest, event)
                .post_priority(N::AuthorizeRequest, post),
            script(move |_, call| {
                log.push(format!("{}:{name}", call.describe()));
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    assert_eq!(
        pipeline.dispatch_order(N::AuthorizeRequest, false),
        ["A", "B", "C"]
    );
    assert_eq!(
        pipeline.dispatch_order(N::AuthorizeRequest, true),
        ["C", "B", "A"]
    );
    get(&pipeline, "/").await;
    assert_eq!(
        log.entries(),
        [
            "AuthorizeRequest:A",
            "AuthorizeRequest:B",
            "AuthorizeRequest:C",
            "PostAuthorizeRequest:C",
            "PostAuthorizeRequest:B",
            "PostAuthorizeRequest:A",
        ]
    );
}

#[test]
fn a_post_event_priority_for_a_notification_without_post_event_is_refused() {
    let mut t = TestPipeline::new();
    t.register("Sender", |_, reg, _| {
        let result =
            reg.set_priority_for_post_request_notification(N::SendResponse, Priority::First);
        assert!(result.is_err(), "SendResponse has no post-event");
        Ok(())
    });
}

#[tokio::test]
async fn send_response_runs_in_fully_inverted_order() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    for (name, priority) in [
        ("FirstA", Priority::First),
        ("MediumA", Priority::Medium),
        ("FirstB", Priority::First),
        ("MediumB", Priority::Medium),
        ("Last", Priority::Last),
    ] {
        let log = log.clone();
        t.module(
            name,
            Registration::events(N::SendResponse).priority(N::SendResponse, priority),
            script(move |_, _| {
                log.push(name);
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();
    // Normal order would be FirstA, FirstB, MediumA, MediumB, Last; SendResponse
    // inverts both the priority and the module-list order within a priority.
    let expected = ["Last", "MediumB", "MediumA", "FirstB", "FirstA"];

    assert_eq!(pipeline.dispatch_order(N::SendResponse, false), expected);
    get(&pipeline, "/").await;
    assert_eq!(log.entries(), expected);
}

#[tokio::test]
async fn a_first_priority_send_response_module_runs_last_and_sees_the_final_headers() {
    let seen = Log::new();
    let mut t = TestPipeline::new();
    {
        let seen = seen.clone();
        t.module(
            "Finalizer",
            Registration::events(N::SendResponse).priority(N::SendResponse, Priority::First),
            script(move |ctx, _| {
                let high = response_header(ctx, "x-high").unwrap_or_default();
                let low = response_header(ctx, "x-low").unwrap_or_default();
                seen.push(format!("high={high} low={low}"));
                set_header(ctx, "x-summary", &format!("{high}+{low}"));
                Status::Continue
            }),
        );
    }
    t.module(
        "HighHeaders",
        Registration::events(N::SendResponse).priority(N::SendResponse, Priority::High),
        script(|ctx, _| {
            // Runs after LowHeaders (inverted order): overrides its value.
            set_header(ctx, "x-low", "overridden-by-high");
            set_header(ctx, "x-high", "1");
            Status::Continue
        }),
    )
    .module(
        "LowHeaders",
        Registration::events(N::SendResponse).priority(N::SendResponse, Priority::Low),
        script(|ctx, _| {
            set_header(ctx, "x-low", "1");
            Status::Continue
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(seen.entries(), ["high=1 low=overridden-by-high"]);
    assert_eq!(outcome.header("x-summary"), Some("1+overridden-by-high"));
    assert_eq!(outcome.header("x-low"), Some("overridden-by-high"));
}
