//! When the response goes out: the final send after PostEndRequest, sends
//! forced by the buffer limit or by disabled buffering, and FinishRequest
//! inside SendResponse.

mod common;

use common::*;
use riis_pipeline::http::Method;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{PipelineSettings, Priority, RequestExecution, RequestNotification as N, Step};

/// Registers `SendWatcher`, logging each send as `send headers=… final=…`.
fn add_send_watcher(t: &mut TestPipeline, log: &Log) {
    let log = log.clone();
    t.module(
        "SendWatcher",
        Registration::events(N::SendResponse),
        script(move |_, call| {
            if let Call::SendResponse(p) = call {
                log.push(format!(
                    "send headers={} final={}",
                    p.headers_being_sent(),
                    p.is_final_send()
                ));
            }
            Status::Continue
        }),
    );
}

#[tokio::test]
async fn the_final_send_happens_after_post_end_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Late",
            Registration::events(N::LogRequest | N::EndRequest).with_post(N::EndRequest),
            script(move |ctx, call| {
                log.push(format!(
                    "{} status={}",
                    call.describe(),
                    ctx.response().status().as_u16()
                ));
                if call.is_post_event(N::EndRequest) {
                    ctx.response_mut()
                        .set_status(StatusCode::ACCEPTED, "Accepted");
                    write(ctx, "set at PostEndRequest");
                }
                Status::Continue
            }),
        )
        .module(
            "Early",
            Registration::events(N::BeginRequest),
            script(|ctx, _| {
                ctx.response_mut()
                    .set_status(StatusCode::CREATED, "Created");
                Status::FinishRequest
            }),
        );
    }
    add_send_watcher(&mut t, &log);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "LogRequest status=201",
            "EndRequest status=201",
            "PostEndRequest status=201",
            "send headers=true final=true",
        ]
    );
    assert_eq!(outcome.status(), StatusCode::ACCEPTED);
    assert_eq!(outcome.body(), "set at PostEndRequest");
}

#[tokio::test]
async fn overflowing_the_response_buffer_sends_early() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.builder_mut().settings(PipelineSettings {
        response_buffer_limit: 8,
        ..PipelineSettings::default()
    });
    t.module(
        "Writer",
        Registration::events(N::BeginRequest | N::AuthorizeRequest),
        script(|ctx, call| {
            if call.is_event(N::BeginRequest) {
                write(ctx, "more than eight bytes");
            } else {
                write(ctx, "; rest");
            }
            Status::Continue
        }),
    );
    add_send_watcher(&mut t, &log);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "send headers=true final=false",
            "send headers=false final=true"
        ]
    );
    assert_eq!(outcome.sends[0].body, b"more than eight bytes");
    assert_eq!(outcome.sends[1].body, b"; rest");
    outcome.assert_completed();
}

#[tokio::test]
async fn with_buffering_disabled_each_call_sends_its_writes() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Streamer",
        Registration::events(N::BeginRequest | N::AuthorizeRequest),
        script(|ctx, call| {
            if call.is_event(N::BeginRequest) {
                ctx.response_mut().disable_buffering();
                write(ctx, "a");
                write(ctx, "b");
            } else {
                write(ctx, "c");
            }
            Status::Continue
        }),
    );
    add_send_watcher(&mut t, &log);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    let bodies: Vec<&[u8]> = outcome.sends.iter().map(|s| s.body.as_slice()).collect();
    assert_eq!(bodies, [&b"ab"[..], b"c", b""]);
    assert_eq!(log.entries().len(), 3);
    outcome.assert_completed();
}

#[tokio::test]
async fn finish_request_in_send_response_skips_the_remaining_send_response_modules_only() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    // Inverted order: Last runs first, then Medium, then First.
    for (name, priority, status) in [
        ("RunsLast", Priority::First, Status::Continue),
        ("Stopper", Priority::Medium, Status::FinishRequest),
        ("RunsFirst", Priority::Last, Status::Continue),
    ] {
        let log = log.clone();
        t.module(
            name,
            Registration::events(N::SendResponse).priority(N::SendResponse, priority),
            script(move |ctx, _| {
                log.push(name);
                write(ctx, format!("[{name}]"));
                status
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(log.entries(), ["RunsFirst", "Stopper"]);
    assert_eq!(outcome.body(), "[RunsFirst][Stopper]");
    outcome.assert_completed();
}

/// Registers a SendResponse module at `priority` that logs each send it
/// sees as `NAME:LENGTH:final` and makes its entity upper case; with
/// `piece`, it takes the entity `piece` bytes at a time, deferring the
/// rest.
fn add_transformer(
    t: &mut TestPipeline,
    log: &Log,
    name: &'static str,
    priority: Priority,
    piece: Option<u64>,
) {
    let log = log.clone();
    t.module(
        name,
        Registration::events(N::SendResponse).priority(N::SendResponse, priority),
        script(move |ctx, call| {
            let Call::SendResponse(p) = call else {
                return Status::Continue;
            };
            if let Some(piece) = piece {
                p.defer_after(ctx.response_mut(), piece);
            }
            let mut text = String::new();
            for chunk in ctx.response().entity_chunks() {
                if let riis_pipeline::EntityChunk::Memory(b) = chunk {
                    text.push_str(std::str::from_utf8(b).unwrap());
                }
            }
            log.push(format!("{name}:{}:{}", text.len(), p.is_final_send()));
            ctx.response_mut()
                .set_entity_chunks(vec![riis_pipeline::EntityChunk::Memory(
                    text.to_uppercase().into(),
                )]);
            Status::Continue
        }),
    );
}

/// `defer_after`: a SendResponse module takes a large entity a piece at a
/// time. The modules before it see the whole entity once; it and the
/// modules after it see each piece in a send of its own, the last one
/// final; every send but the last is paced.
#[tokio::test]
async fn a_send_response_module_may_take_the_entity_a_piece_at_a_time() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    // SendResponse's order is inverted: Last runs first.
    add_transformer(&mut t, &log, "Before", Priority::Last, None);
    add_transformer(&mut t, &log, "Piecer", Priority::Medium, Some(4096));
    add_transformer(&mut t, &log, "After", Priority::First, None);
    add_writer(&mut t);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        [
            "Before:10000:true",
            "Piecer:4096:false",
            "After:4096:false",
            "Piecer:4096:false",
            "After:4096:false",
            "Piecer:1808:true",
            "After:1808:true",
        ]
    );
    assert_eq!(outcome.body(), body().to_uppercase());
    let shape: Vec<(bool, bool, bool)> = outcome
        .sends
        .iter()
        .map(|s| (s.head.is_some(), s.is_final, s.paced))
        .collect();
    assert_eq!(
        shape,
        [
            (true, false, true),
            (false, false, true),
            (false, true, false)
        ]
    );
    outcome.assert_completed();
}

/// A deferral in a flush is refused (the flush's data must all go out
/// before its module resumes) and leaves the entity whole.
#[tokio::test]
async fn a_flush_cannot_defer() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Deferrer",
            Registration::events(N::SendResponse),
            script(move |ctx, call| {
                if let Call::SendResponse(p) = call {
                    let deferred = p.defer_after(ctx.response_mut(), 4096);
                    log.push(format!("final={} deferred={deferred}", p.is_final_send()));
                }
                Status::Continue
            }),
        );
    }
    t.module(
        "Flusher",
        Registration::events(N::BeginRequest | N::EndRequest),
        script(|ctx, call| {
            if call.is_event(N::BeginRequest) {
                write(ctx, "early");
                ctx.response_mut().flush(Default::default());
            } else {
                write(ctx, "late ".repeat(1000));
            }
            Status::Continue
        }),
    );
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    // The flush goes whole; the final send (5,000 bytes) in two pieces.
    assert_eq!(
        log.entries(),
        [
            "final=false deferred=false",
            "final=false deferred=true",
            "final=true deferred=false",
        ]
    );
    assert_eq!(outcome.body(), format!("early{}", "late ".repeat(1000)));
    outcome.assert_completed();
}

/// When the client is gone in the middle of the pieces, the rest is not
/// made, but the modules from the one that deferred on still get their
/// final send (empty), so that each finishes what it keeps: the encoder
/// closes, the log line is written.
#[tokio::test]
async fn a_client_gone_between_pieces_still_gets_the_modules_a_final_send() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_transformer(&mut t, &log, "Piecer", Priority::Medium, Some(4096));
    add_transformer(&mut t, &log, "After", Priority::First, None);
    add_writer(&mut t);
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(&pipeline, request(Method::GET, "/")));

    assert!(matches!(execution.resume(), Step::Send));
    assert!(!execution.take_output().unwrap().is_final);
    execution.complete_send(Err(()));
    assert!(matches!(execution.resume(), Step::Send));
    let last = execution.take_output().unwrap();
    assert!(last.is_final && !last.paced);
    assert_eq!(last.len(), 0);
    execution.complete_send(Err(()));
    assert!(matches!(execution.resume(), Step::Done));
    assert_eq!(
        log.entries(),
        [
            "Piecer:4096:false",
            "After:4096:false",
            "Piecer:0:true",
            "After:0:true"
        ]
    );
}

/// 10,000 bytes of lower-case letters.
fn body() -> String {
    (0..10_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// Registers `Writer`, which writes [`body`] at BeginRequest and finishes
/// the request.
fn add_writer(t: &mut TestPipeline) {
    t.module(
        "Writer",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            write(ctx, body());
            Status::FinishRequest
        }),
    );
}

/// A module after one that deferred replaces the response (an error page,
/// as CustomError makes): the rest of the old response is dropped, and the
/// modules after it see the final send it now is (the replacing module was
/// called with the send as it was). A module that panics there is the
/// same: its 500 goes out alone.
#[tokio::test]
async fn replacing_the_response_drops_what_was_deferred_of_it() {
    for panics in [false, true] {
        let log = Log::new();
        let mut t = TestPipeline::new();
        add_transformer(&mut t, &log, "Piecer", Priority::Last, Some(4096));
        {
            let log = log.clone();
            t.module(
                "Replacer",
                Registration::events(N::SendResponse).priority(N::SendResponse, Priority::High),
                script(move |ctx, call| {
                    if let Call::SendResponse(p) = call {
                        if p.headers_being_sent() {
                            assert!(!panics, "the replacer fails");
                            let resp = ctx.response_mut();
                            resp.clear_entity();
                            resp.write("the error page");
                        }
                        log.push(format!("Replacer:final={}", p.is_final_send()));
                    }
                    Status::Continue
                }),
            );
        }
        add_transformer(&mut t, &log, "After", Priority::First, None);
        add_writer(&mut t);
        let pipeline = t.build();

        let outcome = get(&pipeline, "/").await;

        assert_eq!(outcome.sends.len(), 1, "panics={panics}");
        assert!(outcome.sends[0].is_final);
        if panics {
            assert_eq!(outcome.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(!outcome.body().contains("ABCD"), "{}", outcome.body());
            assert_eq!(log.entries(), ["Piecer:4096:false"]);
        } else {
            assert_eq!(outcome.body(), "THE ERROR PAGE");
            assert_eq!(
                log.entries(),
                ["Piecer:4096:false", "Replacer:final=false", "After:14:true"]
            );
        }
        outcome.assert_completed();
    }
}

/// A module that defers twice in one call (at 8 KiB, then at 4 KiB of
/// what it kept) gets both rests back, in order.
#[tokio::test]
async fn deferring_twice_in_one_call_keeps_both_rests() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Twice",
            Registration::events(N::SendResponse),
            script(move |ctx, call| {
                if let Call::SendResponse(p) = call {
                    let first = p.defer_after(ctx.response_mut(), 8192);
                    let second = p.defer_after(ctx.response_mut(), 4096);
                    log.push(format!(
                        "{first} {second} {}",
                        ctx.response().buffered_len()
                    ));
                }
                Status::Continue
            }),
        );
    }
    add_writer(&mut t);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.body(), body());
    assert_eq!(
        log.entries(),
        ["true true 4096", "false true 4096", "false false 1808"]
    );
}

/// A module that replaces the response and defers its own new body in the
/// same call: the old rests are dropped, its own comes in later sends, and
/// the modules after it see one final send, the last.
#[tokio::test]
async fn a_replacement_that_defers_its_own_body_ends_once() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_transformer(&mut t, &log, "Piecer", Priority::Last, Some(4096));
    t.module(
        "ReplaceDefer",
        Registration::events(N::SendResponse).priority(N::SendResponse, Priority::High),
        script(|ctx, call| {
            if let Call::SendResponse(p) = call {
                if p.headers_being_sent() {
                    let resp = ctx.response_mut();
                    resp.clear_entity();
                    resp.write(body());
                }
                p.defer_after(ctx.response_mut(), 4096);
            }
            Status::Continue
        }),
    );
    add_transformer(&mut t, &log, "After", Priority::First, None);
    add_writer(&mut t);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.body(), body().to_uppercase());
    assert_eq!(
        log.entries(),
        [
            "Piecer:4096:false",
            "After:4096:false",
            "After:4096:false",
            "After:1808:true"
        ]
    );
}

/// A module that panics in a later piece, after the headers went out: the
/// message is cut short (truncated), and the piece it failed on is not sent
/// half transformed.
#[tokio::test]
async fn a_panic_in_a_later_piece_sends_nothing_of_it() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_transformer(&mut t, &log, "Piecer", Priority::Last, Some(4096));
    t.module(
        "Panicker",
        Registration::events(N::SendResponse).priority(N::SendResponse, Priority::First),
        script(|_, call| {
            if let Call::SendResponse(p) = call {
                assert!(p.headers_being_sent(), "the second piece fails");
            }
            Status::Continue
        }),
    );
    add_writer(&mut t);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(outcome.sends[0].body.len(), 4096);
    assert!(outcome.sends[1].truncated);
    assert!(outcome.sends[1..].iter().all(|s| s.body.is_empty()));
}

/// Trailer fields a module sets go with the final send, after a flush
/// too; a field a trailer must not carry is refused; `clear` drops them.
#[tokio::test]
async fn trailers_go_with_the_final_send() {
    use http::header::{HeaderName, HeaderValue};
    let status = HeaderName::from_static("grpc-status");
    let mut t = TestPipeline::new();
    {
        let status = status.clone();
        t.module(
            "Trailing",
            Registration::events(N::BeginRequest | N::AuthorizeRequest),
            script(move |ctx, call| {
                let resp = ctx.response_mut();
                if call.is_event(N::BeginRequest) {
                    resp.set_trailer(status.clone(), HeaderValue::from_static("1"))
                        .unwrap();
                    let refused = resp
                        .set_trailer(http::header::CONTENT_LENGTH, HeaderValue::from_static("3"));
                    assert!(refused.unwrap_err().contains("content-length"));
                    write(ctx, "first");
                    ctx.response_mut().flush(riis_pipeline::FlushOptions {
                        asynchronous: false,
                        more_data: true,
                    });
                } else {
                    // Replaced, then one more value.
                    resp.set_trailer(status.clone(), HeaderValue::from_static("0"))
                        .unwrap();
                    resp.append_trailer(
                        HeaderName::from_static("grpc-message"),
                        HeaderValue::from_static("ok"),
                    )
                    .unwrap();
                    assert_eq!(resp.trailer(&status).unwrap(), "0");
                    write(ctx, "; last");
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    assert_eq!(outcome.sends.len(), 2);
    assert!(outcome.sends[0].trailers.is_none());
    let trailers = outcome.sends[1].trailers.as_ref().expect("trailers");
    assert_eq!(trailers.get(&status).unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok");
    assert_eq!(trailers.len(), 2);

    let mut t = TestPipeline::new();
    t.module(
        "Cleared",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            let resp = ctx.response_mut();
            resp.set_trailer(
                HeaderName::from_static("x-checksum"),
                HeaderValue::from_static("abc"),
            )
            .unwrap();
            resp.clear();
            assert!(resp.trailers().is_none());
            write(ctx, "plain");
            Status::Continue
        }),
    );
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    assert!(outcome.sends.iter().all(|s| s.trailers.is_none()));
}

/// A module's delivery watchers go to the server with the final send only,
/// also one a child request registered (its response is the client's),
/// and each is called exactly once: with the server's outcome, or as not
/// sent when the server drops them.
#[tokio::test]
async fn delivery_watchers_go_with_the_final_send() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Watcher",
            Registration::events(N::BeginRequest | N::EndRequest),
            script(move |ctx, call| {
                let (log, at) = (log.clone(), call.describe());
                if ctx.child_depth() == 0 && call.is_event(N::BeginRequest) {
                    write(ctx, "early");
                    ctx.response_mut().flush(Default::default());
                    let child = ctx.clone_context_with_url("/child").unwrap();
                    ctx.execute_request(child, Default::default()).unwrap();
                }
                let depth = ctx.child_depth();
                ctx.on_response_delivered(move |d| {
                    log.push(format!("{at} depth={depth}: {} {}", d.body_bytes, d.whole))
                });
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let mut outcome = get(&pipeline, "/").await;

    assert!(log.entries().is_empty(), "nobody is told before the server");
    outcome.assert_completed();
    assert!(outcome
        .sends
        .iter()
        .all(|s| s.is_final || s.delivery.is_empty()));
    let last = outcome.sends.pop().unwrap();
    last.delivery.delivered(riis_pipeline::ResponseDelivery {
        body_bytes: 5,
        whole: true,
    });
    let mut told = log.take();
    told.sort();
    assert_eq!(
        told,
        [
            "BeginRequest depth=0: 5 true",
            "BeginRequest depth=1: 5 true",
            "EndRequest depth=0: 5 true",
            "EndRequest depth=1: 5 true",
        ]
    );

    // Dropped by a server that never sent the response.
    let outcome = get(&pipeline, "/").await;
    drop(outcome);
    assert_eq!(log.entries().len(), 4);
    assert!(log.entries().iter().all(|e| e.ends_with(": 0 false")));
}
