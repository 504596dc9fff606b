//! Pending and its completions: IndicateCompletion and PostCompletion from
//! another thread, OnAsyncCompletion after an asynchronous flush, and the
//! failures that keep a Pending request from hanging.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use riis_pipeline::http::{Method, StatusCode};
use riis_pipeline::{
    Activity, CompletionHandle, FlushOptions, RequestExecution, RequestNotification as N,
    RequestNotifications, Step, Waiting,
};

/// Signals `handle` from a new thread after a short pause, so the request is
/// really parked when the signal arrives.
fn signal_later(handle: CompletionHandle, signal: impl FnOnce(&CompletionHandle) + Send + 'static) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        signal(&handle);
    });
}

#[tokio::test]
async fn indicate_completion_from_another_thread_continues_without_reentering_the_module() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Parker",
            Registration::events(N::AuthenticateRequest),
            script(move |ctx, call| {
                log.push(format!("Parker:{}", call.describe()));
                let handle = ctx.completion_handle();
                signal_later(handle, |h| h.indicate_completion(Status::Continue));
                Status::Pending
            }),
        );
    }
    t.module(
        "Recorder",
        Registration::events(N::AuthenticateRequest | N::AuthorizeRequest | N::EndRequest),
        recorder(&log),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "Parker:AuthenticateRequest",
            "AuthenticateRequest",
            "AuthorizeRequest",
            "EndRequest"
        ]
    );
    outcome.assert_completed();
}

#[tokio::test]
async fn indicate_completion_with_finish_request_skips_to_log_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Parker",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            write(ctx, "parked then finished");
            let handle = ctx.completion_handle();
            signal_later(handle, |h| h.indicate_completion(Status::FinishRequest));
            Status::Pending
        }),
    )
    .module(
        "Recorder",
        Registration::events(N::AuthorizeRequest | N::LogRequest),
        recorder(&log),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(log.entries(), ["LogRequest"]);
    assert_eq!(outcome.body(), "parked then finished");
}

#[tokio::test]
async fn post_completion_from_another_thread_reenters_on_async_completion_with_the_bytes() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Poster",
            Registration::default().with_post(N::AuthorizeRequest),
            script(move |ctx, call| match call {
                Call::AsyncCompletion {
                    notification,
                    is_post,
                    info,
                } => {
                    log.push(format!(
                        "completion {} bytes={} status={}",
                        event_name(notification, is_post),
                        info.bytes,
                        info.status
                    ));
                    write(ctx, "completed");
                    Status::Continue
                }
                other => {
                    log.push(other.describe());
                    let handle = ctx.completion_handle();
                    signal_later(handle, |h| h.post_completion(42));
                    Status::Pending
                }
            }),
        );
    }
    t.module(
        "Recorder",
        Registration::events(N::ResolveRequestCache),
        recorder(&log),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "PostAuthorizeRequest",
            "completion PostAuthorizeRequest bytes=42 status=0",
            "ResolveRequestCache"
        ]
    );
    assert_eq!(outcome.body(), "completed");
}

#[tokio::test]
async fn an_asynchronous_flush_completes_through_on_async_completion_with_the_bytes_sent() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Streamer",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion {
                    notification,
                    is_post,
                    info,
                } => {
                    log.push(format!(
                        "completion {} bytes={}",
                        event_name(notification, is_post),
                        info.bytes
                    ));
                    write(ctx, "second");
                    Status::Continue
                }
                _ => {
                    write(ctx, "first");
                    ctx.response_mut().flush(FlushOptions {
                        asynchronous: true,
                        more_data: true,
                    });
                    Status::Pending
                }
            }),
        );
    }
    {
        let log = log.clone();
        t.module(
            "SendWatcher",
            Registration::events(N::SendResponse),
            script(move |ctx, call| {
                if let Call::SendResponse(provider) = call {
                    log.push(format!(
                        "send headers={} final={} more={} buffered={}",
                        provider.headers_being_sent(),
                        provider.is_final_send(),
                        provider.flags().more_data,
                        ctx.response().buffered_len()
                    ));
                }
                Status::Continue
            }),
        );
    }
    t.handler(catch_all(&["Streamer"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/stream").await;

    assert_eq!(
        log.entries(),
        [
            "send headers=true final=false more=true buffered=5",
            "completion ExecuteRequestHandler bytes=5",
            "send headers=false final=true more=false buffered=6",
        ]
    );
    assert_eq!(outcome.sends.len(), 2);
    assert!(outcome.sends[0].head.is_some() && !outcome.sends[0].is_final);
    assert_eq!(outcome.sends[0].body, b"first");
    assert!(outcome.sends[1].head.is_none() && outcome.sends[1].is_final);
    assert_eq!(outcome.sends[1].body, b"second");
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.context().response().bytes_sent(), 11);
}

#[tokio::test]
async fn an_asynchronous_flush_in_a_post_event_reports_is_post() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Streamer",
            Registration::default().with_post(N::MapRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion {
                    notification,
                    is_post,
                    info,
                } => {
                    log.push(format!(
                        "{notification} post={is_post} bytes={}",
                        info.bytes
                    ));
                    Status::FinishRequest
                }
                _ => {
                    write(ctx, "early bytes");
                    ctx.response_mut().flush(FlushOptions {
                        asynchronous: true,
                        more_data: true,
                    });
                    Status::Pending
                }
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(log.entries(), ["MapRequestHandler post=true bytes=11"]);
    assert_eq!(outcome.body(), "early bytes");
    outcome.assert_completed();
}

#[tokio::test]
async fn pending_without_an_operation_or_completion_handle_fails_with_500() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Forgetful",
        Registration::events(N::AuthenticateRequest),
        script(|ctx, _| {
            write(ctx, "never sent");
            Status::Pending
        }),
    )
    .module(
        "Recorder",
        Registration::events(N::AuthorizeRequest | N::EndRequest),
        recorder(&log),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!outcome.body().contains("never sent"));
    // The request went on to its closing events instead of hanging.
    assert_eq!(log.entries(), ["EndRequest"]);
    outcome.assert_completed();
}

#[tokio::test]
async fn dropping_every_completion_handle_without_a_signal_fails_with_500() {
    let mut t = TestPipeline::new();
    t.module(
        "Dropper",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let handle = ctx.completion_handle();
            let copy = handle.clone();
            drop(handle);
            // The last handle goes away on another thread, unsignalled.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(copy);
            });
            Status::Pending
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    outcome.assert_completed();
}

/// A module may pend on a completion handle more than once in one request:
/// the handles of an earlier round, dropped after their signal was consumed,
/// must not fail a later round.
#[tokio::test]
async fn a_request_can_pend_on_completion_handles_twice() {
    let stash: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let stash = stash.clone();
        let log = log.clone();
        t.module(
            "TwicePending",
            Registration::events(N::BeginRequest | N::AuthorizeRequest).with_post(N::BeginRequest),
            script(move |ctx, call| {
                log.push(call.describe());
                if call.is_event(N::BeginRequest) {
                    // Signal at once and keep the handle alive past the signal.
                    let handle = ctx.completion_handle();
                    handle.indicate_completion(Status::Continue);
                    *stash.lock().unwrap() = Some(handle);
                    Status::Pending
                } else if call.is_post_event(N::BeginRequest) {
                    // The first round's handle goes away after it completed.
                    stash.lock().unwrap().take();
                    Status::Continue
                } else {
                    let handle = ctx.completion_handle();
                    signal_later(handle, |h| h.indicate_completion(Status::Continue));
                    Status::Pending
                }
            }),
        );
    }
    t.module(
        "Handler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "ok");
            Status::Continue
        }),
    )
    .handler(catch_all(&["Handler"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        ["BeginRequest", "PostBeginRequest", "AuthorizeRequest"]
    );
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "ok");
}

/// Pending a second time when every handle is already gone cannot complete:
/// it fails with 500 instead of waiting forever.
#[tokio::test]
async fn pending_again_after_every_handle_is_gone_fails_instead_of_hanging() {
    let mut t = TestPipeline::new();
    t.module(
        "Stale",
        Registration::events(N::BeginRequest | N::AuthenticateRequest),
        script(|ctx, call| {
            if call.is_event(N::BeginRequest) {
                // Signalled and dropped before the engine even parks.
                let handle = ctx.completion_handle();
                handle.indicate_completion(Status::Continue);
            }
            // In AuthenticateRequest: Pending with no live handle and no
            // operation.
            Status::Pending
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    outcome.assert_completed();
}

#[tokio::test]
async fn post_completion_requested_inside_the_call_reenters_on_async_completion() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "SelfPost",
            Registration::events(RequestNotifications::from(N::BeginRequest)),
            script(move |ctx, call| match call {
                Call::AsyncCompletion { info, .. } => {
                    log.push(format!("completion bytes={}", info.bytes));
                    Status::Continue
                }
                _ => {
                    ctx.post_completion(7).unwrap();
                    Status::Pending
                }
            }),
        );
    }
    let pipeline = t.build();

    get(&pipeline, "/").await.assert_completed();

    assert_eq!(log.entries(), ["completion bytes=7"]);
}

/// A module that completes its own operation over and over does not keep
/// its thread: after YIELD_AFTER completions in a row the execution yields
/// to the driver, and goes on where it was when resumed.
#[tokio::test]
async fn a_long_run_of_completions_yields_the_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static ROUNDS: AtomicUsize = AtomicUsize::new(0);
    let mut t = TestPipeline::new();
    t.module(
        "Busy",
        Registration::events(RequestNotifications::from(N::BeginRequest)),
        script(|ctx, _| {
            if ROUNDS.fetch_add(1, Ordering::SeqCst) == 3 * riis_pipeline::YIELD_AFTER {
                return Status::Continue;
            }
            ctx.post_completion(1).unwrap();
            Status::Pending
        }),
    );
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    let mut yields = 0;
    loop {
        match execution.resume() {
            Step::Yield => yields += 1,
            Step::Send => {
                let out = execution.take_output().unwrap();
                execution.complete_send(Ok(out.len()));
            }
            Step::Done => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // 3 × YIELD_AFTER completions run in three stretches: two yields
    // between them.
    assert_eq!(yields, 2);
    assert_eq!(
        ROUNDS.load(Ordering::SeqCst),
        3 * riis_pipeline::YIELD_AFTER + 1
    );
}

/// The same for a module that flushes from each flush's completion: its
/// sends may complete at once (nothing to send, nobody to take it), so
/// they do not count as waits, and the run of completions yields across
/// them.
#[tokio::test]
async fn a_run_of_flushes_from_flush_completions_yields_the_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FLUSHES: AtomicUsize = AtomicUsize::new(0);
    let mut t = TestPipeline::new();
    t.module(
        "Flusher",
        Registration::events(RequestNotifications::from(N::BeginRequest)),
        script(|ctx, _| {
            if FLUSHES.fetch_add(1, Ordering::SeqCst) == 2 * riis_pipeline::YIELD_AFTER {
                return Status::FinishRequest;
            }
            ctx.response_mut().flush(FlushOptions {
                asynchronous: true,
                more_data: true,
            });
            Status::Pending
        }),
    );
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    let (mut yields, mut sends) = (0, 0);
    loop {
        match execution.resume() {
            Step::Yield => yields += 1,
            Step::Send => {
                sends += 1;
                let out = execution.take_output().unwrap();
                execution.complete_send(Ok(out.len()));
            }
            Step::Done => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(yields, 1);
    assert_eq!(sends, 2 * riis_pipeline::YIELD_AFTER + 1);
}

#[tokio::test]
async fn a_signal_nobody_waited_for_does_not_complete_a_later_pending() {
    let log = Log::new();
    let kept: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let kept = kept.clone();
        t.module(
            "Early",
            Registration::events(N::BeginRequest | N::AuthorizeRequest),
            script(move |ctx, call| {
                if call.is_event(N::BeginRequest) {
                    // Signalled while not pending: a stale signal.
                    let handle = ctx.completion_handle();
                    handle.indicate_completion(Status::Continue);
                    *kept.lock().unwrap() = Some(handle);
                    return Status::Continue;
                }
                let handle = ctx.completion_handle();
                signal_later(handle, |h| h.indicate_completion(Status::FinishRequest));
                Status::Pending
            }),
        );
    }
    t.module(
        "Recorder",
        Registration::events(N::ResolveRequestCache | N::LogRequest),
        recorder(&log),
    );
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    // The thread's FinishRequest decided, not the stale Continue.
    assert_eq!(log.entries(), ["LogRequest"]);
    drop(kept);
}

/// A completion handle a test module kept.
type Held = Arc<Mutex<Option<riis_pipeline::CompletionHandle>>>;

/// `Forgetful`: at BeginRequest writes, keeps a completion handle in the
/// returned slot, never signals, and returns Pending.
fn forgetful(t: &mut TestPipeline) -> Held {
    let held = Held::default();
    let kept = held.clone();
    t.module(
        "Forgetful",
        Registration::events(N::BeginRequest),
        script(move |ctx, _| {
            write(ctx, "never sent");
            *kept.lock().unwrap() = Some(ctx.completion_handle());
            Status::Pending
        }),
    );
    held
}

#[tokio::test]
async fn an_expired_wait_ends_the_request_with_503_and_still_runs_its_end() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let held = forgetful(&mut t);
    t.module(
        "Recorder",
        Registration::events(N::AuthorizeRequest | N::LogRequest | N::EndRequest),
        recorder(&log),
    );
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    // Driven by hand up to the wait, then expired as the server's execution
    // limit does.
    assert!(!execution.expire_wait("too early"), "not waiting yet");
    let Step::Wait(_waiter) = execution.resume() else {
        panic!("the request should wait for Forgetful");
    };
    assert!(execution.expire_wait("a module did not complete within the limit"));
    let outcome = drive(execution, Vec::new()).await;
    assert_eq!(outcome.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!outcome.body().contains("never sent"));
    assert_eq!(log.entries(), ["LogRequest", "EndRequest"]);
    // A signal after the end changes nothing.
    held.lock()
        .unwrap()
        .take()
        .unwrap()
        .indicate_completion(Status::Continue);
}

#[tokio::test]
async fn handles_of_an_expired_wait_do_not_reach_later_waits() {
    let mut t = TestPipeline::new();
    let held = forgetful(&mut t);
    t.module(
        "Handleless",
        Registration::events(N::EndRequest),
        // Pending with no operation and no handle of its own: a failure,
        // however many handles other modules still hold.
        script(|_, _| Status::Pending),
    );
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    let Step::Wait(_waiter) = execution.resume() else {
        panic!("the request should wait for Forgetful");
    };
    assert!(execution.expire_wait("a module did not complete within the limit"));
    let outcome = drive(execution, Vec::new()).await;
    outcome.assert_completed();
    assert!(outcome.status().is_server_error(), "{}", outcome.status());
    drop(held);
}

/// A completion handle belongs to the module that took it: a module that
/// kept its handle past its own call and signals during another module's
/// wait does not resume that wait.
#[tokio::test]
async fn a_kept_handle_of_one_module_does_not_resume_another_modules_wait() {
    let log = Log::new();
    let kept: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let waiter: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let kept = kept.clone();
        t.module(
            "Keeper",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                *kept.lock().unwrap() = Some(ctx.completion_handle());
                Status::Continue
            }),
        );
    }
    {
        let waiter = waiter.clone();
        t.module(
            "Waiter",
            Registration::events(N::AuthorizeRequest),
            script(move |ctx, _| {
                *waiter.lock().unwrap() = Some(ctx.completion_handle());
                Status::Pending
            }),
        );
    }
    t.module(
        "Recorder",
        Registration::events(N::ResolveRequestCache | N::LogRequest),
        recorder(&log),
    );
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));

    let Step::Wait(_) = execution.resume() else {
        panic!("the request should wait for Waiter");
    };
    // Keeper's signal is not for this wait: the request stays parked.
    let keeper = kept.lock().unwrap().take().unwrap();
    keeper.indicate_completion(Status::FinishRequest);
    let Step::Wait(_) = execution.resume() else {
        panic!("Keeper's handle resumed Waiter's wait");
    };
    drop(keeper);
    let Step::Wait(_) = execution.resume() else {
        panic!("dropping Keeper's last handle abandoned Waiter's wait");
    };
    waiter
        .lock()
        .unwrap()
        .take()
        .unwrap()
        .indicate_completion(Status::Continue);
    let outcome = drive(execution, Vec::new()).await;

    outcome.assert_completed();
    assert_eq!(log.entries(), ["ResolveRequestCache", "LogRequest"]);
}

/// One asynchronous operation per call: after an asynchronous flush a body
/// read is refused, and a read started before an asynchronous flush keeps
/// the completion (the flush is then done synchronously, first).
#[tokio::test]
async fn an_asynchronous_flush_and_a_read_never_share_a_completion() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Both",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion { info, .. } => {
                    log.push(format!(
                        "completion bytes={} read={}",
                        info.bytes,
                        ctx.request().read_data().len()
                    ));
                    Status::Continue
                }
                _ => {
                    let flush = FlushOptions {
                        asynchronous: true,
                        more_data: true,
                    };
                    write(ctx, "head");
                    if ctx.request().url() == "/flush-first" {
                        ctx.response_mut().flush(flush);
                        let refused = ctx.read_entity_body(4).is_err();
                        log.push(format!("read after flush refused={refused}"));
                    } else {
                        ctx.read_entity_body(4).unwrap();
                        ctx.response_mut().flush(flush);
                    }
                    Status::Pending
                }
            }),
        );
    }
    t.handler(catch_all(&["Both"]));
    let pipeline = t.build();

    let flushed = get(&pipeline, "/flush-first").await;
    assert_eq!(flushed.status(), StatusCode::OK);
    // The read is the completion (0 bytes: the end of an empty body), not
    // the flush's 4 bytes.
    let read = get(&pipeline, "/read-first").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        log.entries(),
        [
            "read after flush refused=true",
            "completion bytes=4 read=0",
            "completion bytes=0 read=0",
        ]
    );
}

/// What a listing of requests in flight shows: the notification and module
/// a parked request waits on, and what for.
#[tokio::test]
async fn activity_names_the_call_a_parked_request_waits_on() {
    let held = Held::default();
    let mut t = TestPipeline::new();
    {
        let held = held.clone();
        t.module(
            "Waiter",
            Registration::events(N::AuthorizeRequest),
            script(move |ctx, _| {
                *held.lock().unwrap() = Some(ctx.completion_handle());
                Status::Pending
            }),
        );
    }
    t.module(
        "Reader",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, call| match call {
            Call::AsyncCompletion { info, .. } if info.bytes == 0 => Status::Continue,
            _ => {
                ctx.read_entity_body(64).unwrap();
                Status::Pending
            }
        }),
    );
    t.handler(catch_all(&["Reader"]));
    let pipeline = t.build();
    let (req, _) = post_request("/upload", &["0123456789"]);
    let mut execution = RequestExecution::new(context(&pipeline, req));
    let name = |a: Activity| a.module.map(|m| pipeline.module_name(m).to_owned());

    // Before anything ran: at the first event, waiting for its thread.
    let before = execution.activity();
    assert_eq!(before.notification, Some(N::BeginRequest));
    assert_eq!((before.module, before.waiting), (None, Waiting::Nothing));

    let Step::Wait(_) = execution.resume() else {
        panic!("the request should wait for Waiter");
    };
    let waiting = execution.activity();
    assert_eq!(waiting.notification, Some(N::AuthorizeRequest));
    assert!(!waiting.is_post);
    assert_eq!(waiting.waiting, Waiting::Module);
    assert_eq!(name(waiting).as_deref(), Some("Waiter"));
    assert_eq!(waiting.child_depth, 0);

    held.lock()
        .unwrap()
        .take()
        .unwrap()
        .indicate_completion(Status::Continue);
    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    let reading = execution.activity();
    assert_eq!(reading.notification, Some(N::ExecuteRequestHandler));
    assert_eq!(reading.waiting, Waiting::RequestBody);
    assert_eq!(name(reading).as_deref(), Some("Reader"));

    execution.complete_read(Ok(riis_pipeline::bytes::Bytes::new()));
    assert!(matches!(execution.resume(), Step::Send));
    let sending = execution.activity();
    assert_eq!(
        (sending.notification, sending.module, sending.waiting),
        (None, None, Waiting::Send)
    );
}

/// A module's own thread writes the response of its parked request and then
/// signals, as IIS lets that thread do: the changes are made on the
/// request's thread, before the signal is acted on.
#[tokio::test]
async fn changes_sent_with_a_signal_are_made_before_it() {
    let mut t = TestPipeline::new();
    t.module(
        "Worker",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let handle = ctx.completion_handle();
            signal_later(handle, |h| {
                h.indicate_completion_with(
                    Status::FinishRequest,
                    Box::new(|ctx| {
                        let response = ctx.response_mut();
                        response.set_status(StatusCode::CREATED, "Created");
                        response.write("written by the module's thread");
                    }),
                )
            });
            Status::Pending
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::CREATED);
    assert_eq!(outcome.body(), "written by the module's thread");
}

/// Changes from a module's thread that panic fail the request as a
/// panicking call does: a 500, and the events after the wait do not run
/// (LogRequest does).
#[tokio::test]
async fn changes_that_panic_fail_the_request() {
    let later = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestPipeline::new();
    t.module(
        "Worker",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let handle = ctx.completion_handle();
            signal_later(handle, |h| {
                h.indicate_completion_with(
                    Status::Continue,
                    Box::new(|_ctx| panic!("a bug in the thread's changes")),
                )
            });
            Status::Pending
        }),
    );
    {
        let later = later.clone();
        t.module(
            "Later",
            Registration::events(N::MapRequestHandler | N::LogRequest),
            script(move |ctx, call| {
                if let Call::Event { notification, .. } = call {
                    later.lock().unwrap().push(notification);
                    if notification == N::MapRequestHandler {
                        ctx.response_mut().write("too late");
                    }
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!outcome.body().contains("too late"), "{}", outcome.body());
    assert_eq!(*later.lock().unwrap(), [N::LogRequest]);
}

/// `IsConnected` from a module's own thread: a kept handle says the client
/// is connected while the request waits for it, and not once the request
/// gave the wait up because the client left; the modules that still run
/// (EndRequest) see the client gone on the request's thread too.
#[tokio::test]
async fn a_handle_reports_the_client_gone_once_its_wait_is_abandoned() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestPipeline::new();
    let held = forgetful(&mut t);
    {
        let seen = seen.clone();
        t.module(
            "Watcher",
            Registration::events(N::EndRequest),
            script(move |ctx, _| {
                seen.lock().unwrap().push(ctx.is_client_connected());
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    let Step::Wait(_waiter) = execution.resume() else {
        panic!("the request should wait for Forgetful");
    };
    let handle = held.lock().unwrap().clone().unwrap();
    assert!(handle.is_client_connected());
    assert!(execution.abandon_wait());
    assert!(!handle.is_client_connected());
    drive(execution, Vec::new()).await.assert_completed();
    assert_eq!(*seen.lock().unwrap(), [false]);
    assert!(!handle.is_client_connected(), "the request ended");
}

/// The connection's state reaches the request, and a request that ends
/// detaches the handles its modules kept.
#[tokio::test]
async fn is_client_connected_follows_the_connection_and_the_request() {
    let kept: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestPipeline::new();
    {
        let (kept, seen) = (kept.clone(), seen.clone());
        t.module(
            "Keeper",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                seen.lock().unwrap().push(ctx.is_client_connected());
                *kept.lock().unwrap() = Some(ctx.completion_handle());
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    // Open: a request ends, and the handle its module kept goes quiet.
    drive(
        RequestExecution::new(context(&pipeline, request(Method::GET, "/"))),
        Vec::new(),
    )
    .await
    .assert_completed();
    assert_eq!(*seen.lock().unwrap(), [true]);
    let handle = kept.lock().unwrap().take().unwrap();
    assert!(!handle.is_client_connected());

    // On a closed connection the request's modules see the client gone.
    let ctx = context(&pipeline, request(Method::GET, "/"));
    ctx.connection().mark_closed();
    assert!(!ctx.connection().is_connected());
    drive(RequestExecution::new(ctx), Vec::new())
        .await
        .assert_completed();
    assert_eq!(*seen.lock().unwrap(), [true, false]);
}

/// A send the client cannot take (it left) tells the module through its
/// completion, and from then on the request, and the handle a module
/// kept, say the client is gone.
#[tokio::test]
async fn a_failed_send_marks_the_client_gone() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept: Arc<Mutex<Option<CompletionHandle>>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let (seen, kept) = (seen.clone(), kept.clone());
        t.module(
            "Streamer",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion { info, .. } => {
                    seen.lock()
                        .unwrap()
                        .push((info.status, ctx.is_client_connected()));
                    Status::Continue
                }
                _ => {
                    *kept.lock().unwrap() = Some(ctx.completion_handle());
                    write(ctx, "first");
                    ctx.response_mut().flush(FlushOptions {
                        asynchronous: true,
                        more_data: true,
                    });
                    Status::Pending
                }
            }),
        );
    }
    t.handler(catch_all(&["Streamer"]));
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));
    assert!(matches!(execution.resume(), Step::Send));
    let handle = kept.lock().unwrap().clone().unwrap();
    assert!(handle.is_client_connected());
    execution.complete_send(Err(()));
    let _ = execution.resume();
    assert_eq!(
        *seen.lock().unwrap(),
        [(riis_pipeline::E_CONNECTION_ABORTED, false)]
    );
    assert!(!handle.is_client_connected());
}
