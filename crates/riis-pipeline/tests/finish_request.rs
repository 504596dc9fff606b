//! FinishRequest: from any event or post-event before LogRequest it ends the
//! event and skips to LogRequest; LogRequest, EndRequest and their post-events
//! still run, and the response written so far is sent. In LogRequest and
//! EndRequest it behaves as Continue.

mod common;

use common::*;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{Priority, RequestNotification as N, RequestNotifications};

/// A pipeline where `Finisher` (FIRST priority) answers 201 "partial" and
/// returns FinishRequest in `(stop, stop_post)`, `Later` is registered for the
/// same event after it, and `Recorder` (the handler's second module) records
/// every event and post-event.
fn pipeline_finishing_in(
    stop: N,
    stop_post: bool,
    log: &Log,
) -> std::sync::Arc<riis_pipeline::Pipeline> {
    let mut t = TestPipeline::new();
    let set = RequestNotifications::from(stop);
    let registration = if stop_post {
        Registration::default()
            .with_post(set)
            .post_priority(stop, Priority::First)
    } else {
        Registration::events(set).priority(stop, Priority::First)
    };
    t.module(
        "Finisher",
        registration.clone(),
        script(|ctx, _| {
            let resp = ctx.response_mut();
            resp.clear();
            resp.set_status(StatusCode::CREATED, "Created");
            write(ctx, "partial");
            Status::FinishRequest
        }),
    );
    {
        let log = log.clone();
        t.module(
            "Later",
            registration,
            script(move |_, call| {
                log.push(format!("Later:{}", call.describe()));
                Status::Continue
            }),
        );
    }
    t.module("Recorder", Registration::everything(), recorder(log));
    // At ExecuteRequestHandler only the handler's modules run, in its order;
    // the finishing modules are part of the handler only when they finish
    // there (a scripted module would answer any call).
    if stop == N::ExecuteRequestHandler && !stop_post {
        t.handler(catch_all(&["Finisher", "Later", "Recorder"]));
    } else {
        t.handler(catch_all(&["Recorder"]));
    }
    t.build()
}

#[tokio::test]
async fn finish_request_before_log_request_skips_to_log_request_and_still_sends() {
    let log_stage = N::LogRequest.stage().unwrap();
    for (stop, stop_post) in all_events()
        .into_iter()
        .filter(|(n, _)| n.stage().unwrap() < log_stage)
    {
        let log = Log::new();
        let pipeline = pipeline_finishing_in(stop, stop_post, &log);
        let outcome = get(&pipeline, "/page").await;
        let what = event_name(stop, stop_post);

        // Everything the recorder saw before the finishing event, then the
        // four closing events.
        let mut expected: Vec<String> = all_events()
            .into_iter()
            .take_while(|&e| e != (stop, stop_post))
            .map(|(n, post)| event_name(n, post))
            .collect();
        expected.extend(
            [
                "LogRequest",
                "PostLogRequest",
                "EndRequest",
                "PostEndRequest",
            ]
            .map(String::from),
        );
        assert_eq!(log.entries(), expected, "FinishRequest in {what}");

        assert_eq!(
            outcome.status(),
            StatusCode::CREATED,
            "FinishRequest in {what}"
        );
        assert_eq!(outcome.body(), "partial", "FinishRequest in {what}");
        outcome.assert_completed();
    }
}

#[tokio::test]
async fn finish_request_in_log_request_and_end_request_behaves_as_continue() {
    for (stop, stop_post) in all_events()
        .into_iter()
        .filter(|(n, _)| matches!(n, N::LogRequest | N::EndRequest))
    {
        let log = Log::new();
        let pipeline = pipeline_finishing_in(stop, stop_post, &log);
        let outcome = get(&pipeline, "/page").await;
        let what = event_name(stop, stop_post);

        // The later module of the same event still runs.
        assert_eq!(
            log.count(&format!("Later:{what}")),
            1,
            "FinishRequest in {what}"
        );
        // And so does every later event.
        let recorded: Vec<String> = log
            .entries()
            .into_iter()
            .filter(|e| !e.starts_with("Later:"))
            .collect();
        assert_eq!(
            recorded,
            all_events()
                .into_iter()
                .map(|(n, post)| event_name(n, post))
                .collect::<Vec<_>>(),
            "FinishRequest in {what}"
        );
        assert_eq!(outcome.status(), StatusCode::CREATED);
        assert_eq!(outcome.body(), "partial");
        outcome.assert_completed();
    }
}

#[tokio::test]
async fn finish_request_sends_what_was_written_before_with_one_final_send() {
    let mut t = TestPipeline::new();
    t.module(
        "Early",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            write(ctx, "from begin; ");
            set_header(ctx, "x-early", "yes");
            Status::Continue
        }),
    )
    .module(
        "Stopper",
        Registration::events(N::AuthorizeRequest),
        script(|ctx, _| {
            write(ctx, "stopped");
            Status::FinishRequest
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.sends.len(), 1);
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.header("x-early"), Some("yes"));
    assert_eq!(outcome.body(), "from begin; stopped");
    outcome.assert_completed();
}
