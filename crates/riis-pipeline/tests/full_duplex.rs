//! Full duplex (`IHttpContext3::EnableFullDuplex`): a body read stays under
//! way while its module sends and is woken by other news, and each
//! completion says which operation it reports.
//!
//! The tests step the execution by hand, playing the server: what the
//! engine asks for, and when, is the behaviour under test.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use riis_pipeline::bytes::Bytes;
use riis_pipeline::{
    CompletedOperation, CompletionHandle, FlushOptions, RequestExecution, RequestNotification as N,
    Step, E_TIMEOUT,
};

const ASYNC_FLUSH: FlushOptions = FlushOptions {
    asynchronous: true,
    more_data: true,
};

/// Where a test finds the module's completion handle.
type HandleSlot = Arc<Mutex<Option<CompletionHandle>>>;

/// Registers `Duplex`, a handler in full duplex: it sends `head` at once
/// and reads the body meanwhile; each piece it reads is sent back with the
/// next read started in the same call; a posted completion sends `tick`;
/// the body's end ends the response. Each completion is logged as
/// `<operation> <bytes>`.
fn add_duplex(t: &mut TestPipeline, log: &Log, handle: &HandleSlot) {
    let (log, handle) = (log.clone(), handle.clone());
    t.module(
        "Duplex",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            let Call::AsyncCompletion { info, .. } = call else {
                ctx.enable_full_duplex();
                *handle.lock().unwrap() = Some(ctx.completion_handle());
                write(ctx, "head;");
                ctx.response_mut().flush(ASYNC_FLUSH);
                ctx.read_entity_body(64).unwrap();
                log.push("start");
                return Status::Pending;
            };
            log.push(format!("{:?} {}", info.operation, info.bytes));
            match info.operation {
                CompletedOperation::Read if info.status != 0 => {
                    log.push(format!("failed {:#x}", info.status));
                    Status::FinishRequest
                }
                CompletedOperation::Read if info.bytes == 0 => {
                    write(ctx, "end");
                    Status::Continue
                }
                CompletedOperation::Read => {
                    let data = ctx.request_mut().take_read_data();
                    ctx.response_mut().write(data);
                    ctx.response_mut().flush(ASYNC_FLUSH);
                    ctx.read_entity_body(64).unwrap();
                    Status::Pending
                }
                CompletedOperation::Posted => {
                    write(ctx, "tick;");
                    ctx.response_mut().flush(ASYNC_FLUSH);
                    Status::Pending
                }
                _ => Status::Pending,
            }
        }),
    );
    t.handler(catch_all(&["Duplex"]));
}

/// A request with `body` to `Duplex` (see [`add_duplex`]), stepped until its
/// head went out.
struct DuplexRun {
    log: Log,
    handle: HandleSlot,
    execution: RequestExecution,
    body: Vec<Bytes>,
}

fn start_duplex(body: &[&str]) -> DuplexRun {
    let (log, handle) = (Log::new(), HandleSlot::default());
    let mut t = TestPipeline::new();
    add_duplex(&mut t, &log, &handle);
    let (req, body) = post_request("/stream", body);
    let mut execution = RequestExecution::new(context(&t.build(), req));
    assert_eq!(expect_send(&mut execution), ("head;".to_owned(), false));
    DuplexRun {
        log,
        handle,
        execution,
        body,
    }
}

/// Signals the module through its completion handle, as its task would.
fn post(handle: &HandleSlot, bytes: u64) {
    let slot = handle.lock().unwrap();
    slot.as_ref()
        .expect("the module took a handle")
        .post_completion(bytes);
}

/// Takes the output of a [`Step::Send`] as text, and completes the send.
fn send(execution: &mut RequestExecution) -> (String, bool) {
    let output = execution.take_output().expect("a send has output");
    let mut text = String::new();
    for chunk in &output.chunks {
        match chunk {
            riis_pipeline::EntityChunk::Memory(b) => {
                text.push_str(std::str::from_utf8(b).unwrap());
            }
            riis_pipeline::EntityChunk::File { .. } => panic!("memory chunks only"),
        }
    }
    execution.complete_send(Ok(text.len() as u64));
    (text, output.is_final)
}

fn expect_send(execution: &mut RequestExecution) -> (String, bool) {
    match execution.resume() {
        Step::Send => send(execution),
        other => panic!("expected a send, got {other:?}"),
    }
}

fn expect_wait_while_reading(execution: &mut RequestExecution) {
    match execution.resume() {
        Step::WaitWhileReading { max, .. } => assert_eq!(max, 64),
        other => panic!("expected a wait with the read under way, got {other:?}"),
    }
    // `riis requests` tells such a wait from a module's or a read's alone.
    assert_eq!(
        execution.activity().waiting,
        riis_pipeline::Waiting::ModuleOrRequestBody
    );
}

#[tokio::test]
async fn a_read_stays_under_way_while_the_module_sends_and_is_woken() {
    // The head goes out before a byte of the body is read, and its flush
    // completes on its own while the read waits.
    let DuplexRun {
        log,
        handle,
        mut execution,
        ..
    } = start_duplex(&["abc"]);
    expect_wait_while_reading(&mut execution);

    // News from elsewhere (a backend's answer) is sent; the read stays.
    post(&handle, 0);
    assert_eq!(expect_send(&mut execution), ("tick;".to_owned(), false));
    expect_wait_while_reading(&mut execution);

    // The body's bytes come: sent back, and the next read starts with the
    // flush; the flush completes first.
    execution.complete_read(Ok(Bytes::from_static(b"abc")));
    assert_eq!(expect_send(&mut execution), ("abc".to_owned(), false));
    expect_wait_while_reading(&mut execution);

    execution.complete_read(Ok(Bytes::new()));
    assert_eq!(expect_send(&mut execution), ("end".to_owned(), true));
    assert!(matches!(execution.resume(), Step::Done));
    assert_eq!(
        log.entries(),
        ["start", "Write 5", "Posted 0", "Write 5", "Read 3", "Write 3", "Read 0"]
    );
    assert_eq!(execution.context().request().bytes_received(), 3);
}

#[tokio::test]
async fn a_completion_that_comes_first_is_delivered_before_the_read() {
    let DuplexRun {
        log,
        handle,
        mut execution,
        body,
    } = start_duplex(&["xy"]);
    // Posted before the engine asks: the next step delivers it rather than
    // waiting, and the read is still under way after.
    post(&handle, 7);
    assert_eq!(expect_send(&mut execution), ("tick;".to_owned(), false));

    let outcome = drive(execution, body).await;
    assert_eq!(outcome.body(), "xyend");
    assert_eq!(
        log.entries(),
        ["start", "Write 5", "Posted 7", "Write 5", "Read 2", "Write 2", "Read 0"]
    );
}

#[tokio::test]
async fn a_module_whose_handles_are_gone_waits_for_its_read_alone() {
    let DuplexRun {
        log,
        handle,
        mut execution,
        ..
    } = start_duplex(&["ab"]);
    expect_wait_while_reading(&mut execution);

    // Its task lets the handle go without a signal: only the read can end
    // the wait now, and it does (no 500 for a handle-less Pending).
    drop(handle.lock().unwrap().take());
    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    execution.complete_read(Ok(Bytes::from_static(b"ab")));
    // Without a handle the next flush is made first and the read has the
    // completion, as without full duplex.
    assert_eq!(expect_send(&mut execution), ("ab".to_owned(), false));
    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    execution.complete_read(Ok(Bytes::new()));
    assert_eq!(expect_send(&mut execution), ("end".to_owned(), true));
    assert!(matches!(execution.resume(), Step::Done));
    assert_eq!(log.entries(), ["start", "Write 5", "Read 2", "Read 0"]);
}

#[tokio::test]
async fn without_a_completion_handle_the_module_waits_for_its_read_alone() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Reader",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                if let Call::AsyncCompletion { info, .. } = call {
                    log.push(format!("{:?} {}", info.operation, info.bytes));
                    if info.bytes == 0 {
                        write(ctx, "done");
                        return Status::Continue;
                    }
                }
                ctx.enable_full_duplex();
                ctx.read_entity_body(64).unwrap();
                Status::Pending
            }),
        );
    }
    t.handler(catch_all(&["Reader"]));
    let pipeline = t.build();
    let (req, _) = post_request("/upload", &["abcd"]);
    let mut execution = RequestExecution::new(context(&pipeline, req));

    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    execution.complete_read(Ok(Bytes::from_static(b"abcd")));
    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    execution.complete_read(Ok(Bytes::new()));
    assert_eq!(expect_send(&mut execution), ("done".to_owned(), true));
    assert!(matches!(execution.resume(), Step::Done));
    assert_eq!(log.entries(), ["Read 4", "Read 0"]);
}

#[tokio::test]
async fn returning_continue_gives_up_the_read_under_way() {
    let (log, handle) = (Log::new(), HandleSlot::default());
    let mut t = TestPipeline::new();
    {
        let (log, handle) = (log.clone(), handle.clone());
        t.module(
            "Answerer",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                if let Call::AsyncCompletion { info, .. } = call {
                    log.push(format!("{:?}", info.operation));
                    // A second read while one is under way is refused.
                    let refused = ctx.read_entity_body(16).unwrap_err();
                    log.push(refused.to_string());
                    write(ctx, "answered without the body");
                    return Status::Continue;
                }
                ctx.enable_full_duplex();
                *handle.lock().unwrap() = Some(ctx.completion_handle());
                ctx.read_entity_body(64).unwrap();
                Status::Pending
            }),
        );
    }
    t.handler(catch_all(&["Answerer"]));
    let pipeline = t.build();
    let (req, _) = post_request("/upload", &["never read"]);
    let mut execution = RequestExecution::new(context(&pipeline, req));

    expect_wait_while_reading(&mut execution);
    post(&handle, 0);
    // No read is asked for again: the response ends.
    assert_eq!(
        expect_send(&mut execution),
        ("answered without the body".to_owned(), true)
    );
    assert!(matches!(execution.resume(), Step::Done));
    let entries = log.entries();
    assert_eq!(entries[0], "Posted");
    assert!(
        entries[1].contains("a body read is already under way"),
        "{entries:?}"
    );
    assert!(!execution.context().request().is_body_complete());
    assert_eq!(execution.context().request().bytes_received(), 0);
}

#[tokio::test]
async fn a_read_under_way_that_times_out_completes_with_e_timeout_and_cuts_the_response_short() {
    let DuplexRun {
        log, mut execution, ..
    } = start_duplex(&["abc"]);
    expect_wait_while_reading(&mut execution);

    assert!(execution.expire_read("no request body bytes within timeouts.body_read"));
    // The module hears of it as a failed read, and fails the request: the
    // head went out, so the response ends short.
    let output = loop {
        match execution.resume() {
            Step::Send => {
                let output = execution.take_output().unwrap();
                execution.complete_send(Ok(0));
                if output.is_final {
                    break output;
                }
            }
            other => panic!("expected the final send, got {other:?}"),
        }
    };
    assert!(output.truncated);
    assert!(matches!(execution.resume(), Step::Done));
    assert_eq!(
        log.entries(),
        [
            "start".to_owned(),
            "Write 5".to_owned(),
            "Read 0".to_owned(),
            format!("failed {E_TIMEOUT:#x}")
        ]
    );
}

#[tokio::test]
async fn a_read_and_a_flush_of_one_call_without_full_duplex_complete_once() {
    // The rule without full duplex, for contrast: the flush is made first
    // and the read has the call's only completion.
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Halfduplex",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                if let Call::AsyncCompletion { info, .. } = call {
                    log.push(format!("{:?} {}", info.operation, info.bytes));
                    return Status::Continue;
                }
                write(ctx, "head;");
                ctx.read_entity_body(64).unwrap();
                ctx.response_mut().flush(ASYNC_FLUSH);
                Status::Pending
            }),
        );
    }
    t.handler(catch_all(&["Halfduplex"]));
    let pipeline = t.build();
    let (req, body) = post_request("/upload", &["abc"]);
    let outcome = run_with_body(&pipeline, req, body).await;
    assert_eq!(outcome.body(), "head;");
    assert_eq!(log.entries(), ["Read 3"]);
}
