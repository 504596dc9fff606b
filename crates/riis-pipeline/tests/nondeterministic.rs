//! The nondeterministic notifications a module raises or triggers: custom
//! notifications with their own providers, MapPath (and its effect on
//! choosing a handler), and ReadEntity replacing the request body a handler
//! reads.

mod common;

use std::any::Any;
use std::path::PathBuf;

use common::*;
use riis_pipeline::bytes::Bytes;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{CustomNotificationProvider, RequestExecution, RequestNotification as N, Step};

/// The payload of the `test.greeting` custom notification.
struct Greeting {
    words: Vec<String>,
}

impl CustomNotificationProvider for Greeting {
    fn notification_type(&self) -> &str {
        "test.greeting"
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A custom notification of another type, which listeners ignore.
struct Unrelated;

impl CustomNotificationProvider for Unrelated {
    fn notification_type(&self) -> &str {
        "test.unrelated"
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[tokio::test]
async fn a_custom_notification_reaches_listeners_who_change_its_payload() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Raiser",
            // Also a listener: it must not be re-entered for its own notification.
            Registration::events(N::BeginRequest | N::CustomNotification),
            script(move |ctx, call| {
                if let Call::Custom(_) = call {
                    log.push("Raiser re-entered");
                    return Status::Continue;
                }
                ctx.raise_custom_notification(&mut Unrelated);
                let mut greeting = Greeting {
                    words: vec!["hello".into()],
                };
                ctx.raise_custom_notification(&mut greeting);
                write(ctx, greeting.words.join(" "));
                Status::FinishRequest
            }),
        );
    }
    {
        let log = log.clone();
        t.module(
            "Listener",
            Registration::events(N::CustomNotification),
            script(move |ctx, call| {
                let Call::Custom(provider) = call else {
                    return Status::Continue;
                };
                log.push(format!("Listener saw {}", provider.notification_type()));
                if provider.notification_type() != "test.greeting" {
                    return Status::Continue;
                }
                let greeting = provider
                    .as_any_mut()
                    .downcast_mut::<Greeting>()
                    .expect("test.greeting carries a Greeting");
                greeting.words.push("from".into());
                greeting
                    .words
                    .push(ctx.current_execution_stats().unwrap().module.to_owned());
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        ["Listener saw test.unrelated", "Listener saw test.greeting"]
    );
    assert_eq!(outcome.body(), "hello from Listener");
}

/// Registers `Remap`, which moves `/virtual/…` to `/elsewhere/…` on disk.
fn add_remap(t: &mut TestPipeline) {
    t.module(
        "Remap",
        Registration::events(N::MapPath),
        script(|_, call| {
            if let Call::MapPath(provider) = call {
                if let Some(rest) = provider.url().strip_prefix("/virtual/") {
                    let replaced = PathBuf::from("/elsewhere").join(rest);
                    provider.set_physical_path(replaced);
                }
            }
            Status::Continue
        }),
    );
}

#[tokio::test]
async fn map_path_modules_replace_the_physical_path_a_module_asks_for() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_remap(&mut t);
    {
        let log = log.clone();
        t.module(
            "Asker",
            Registration::events(N::BeginRequest),
            script(move |ctx, _| {
                for url in ["/virtual/a.txt", "/plain/b.txt", "/"] {
                    log.push(ctx.map_path(url).display().to_string());
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    get(&pipeline, "/").await;

    assert_eq!(
        log.entries(),
        ["/elsewhere/a.txt", "/site/plain/b.txt", "/site"]
    );
}

#[tokio::test]
async fn a_file_handler_is_chosen_by_the_replaced_physical_path() {
    let mut t = TestPipeline::new();
    add_remap(&mut t);
    t.module(
        "Static",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let path = ctx.physical_path().display().to_string();
            write(ctx, path);
            Status::Continue
        }),
    )
    .handler(handler("StaticFile", "*", &["GET"], "File", &["Static"]))
    // Only the replaced path exists; the unreplaced one does not.
    .file("/elsewhere/a.txt");
    let fs = t.fs();
    let pipeline = t.build();

    let found = get(&pipeline, "/virtual/a.txt").await;
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(found.body(), "/elsewhere/a.txt");
    assert_eq!(fs.probes(), [PathBuf::from("/elsewhere/a.txt")]);

    let missing = get(&pipeline, "/virtual/missing.txt").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        fs.probes().last(),
        Some(&PathBuf::from("/elsewhere/missing.txt"))
    );

    // Without the rewrite the file would be looked for under the site root.
    let unmapped = get(&pipeline, "/a.txt").await;
    assert_eq!(unmapped.status(), StatusCode::NOT_FOUND);
    assert_eq!(fs.probes().last(), Some(&PathBuf::from("/site/a.txt")));
}

/// A MapPath module is not re-entered for the path it asks for itself, but
/// the path it got that way (without its rewrite) is not what the handler
/// is chosen by, nor what later modules see.
#[tokio::test]
async fn a_map_path_module_asking_for_the_path_does_not_fix_it_unmapped() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Remap",
            Registration::events(N::MapPath | N::AuthorizeRequest),
            script(move |ctx, call| {
                match call {
                    Call::MapPath(provider) => {
                        if let Some(rest) = provider.url().strip_prefix("/virtual/") {
                            let replaced = PathBuf::from("/elsewhere").join(rest);
                            provider.set_physical_path(replaced);
                        }
                    }
                    _ => log.push(format!("own call: {}", ctx.physical_path().display())),
                }
                Status::Continue
            }),
        );
    }
    t.module(
        "Static",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let path = ctx.physical_path().display().to_string();
            write(ctx, path);
            Status::Continue
        }),
    )
    .handler(handler("StaticFile", "*", &["GET"], "File", &["Static"]))
    .file("/elsewhere/a.txt");
    let pipeline = t.build();

    let found = get(&pipeline, "/virtual/a.txt").await;
    assert_eq!(log.entries(), ["own call: /site/virtual/a.txt"]);
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(found.body(), "/elsewhere/a.txt");
}

/// Registers `Echo`, a handler that reads the whole body `chunk` bytes at a
/// time through `read_entity_body` + Pending and writes back what it read,
/// logging each completion's byte count.
fn add_echo(t: &mut TestPipeline, chunk: usize, log: &Log) {
    let log = log.clone();
    t.module(
        "Echo",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            if let Call::AsyncCompletion { info, .. } = call {
                log.push(format!("read {}", info.bytes));
                if info.bytes == 0 {
                    assert!(ctx.request().is_body_complete());
                    if !ctx.response().is_touched() {
                        write(ctx, "");
                    }
                    return Status::Continue;
                }
                assert_eq!(ctx.request().read_data().len() as u64, info.bytes);
                let data = ctx.request().read_data().clone();
                ctx.response_mut().write(data);
            }
            ctx.read_entity_body(chunk).unwrap();
            Status::Pending
        }),
    );
    t.handler(catch_all(&["Echo"]));
}

/// Registers `Inserter`, which inserts `body` ahead of the request's own at
/// BeginRequest.
fn add_inserter(t: &mut TestPipeline, body: impl Into<Bytes>) {
    let body: Bytes = body.into();
    t.module(
        "Inserter",
        Registration::events(N::BeginRequest),
        script(move |ctx, _| {
            ctx.request_mut().insert_entity_body(body.clone());
            Status::Continue
        }),
    );
}

/// Registers `Upper`, a ReadEntity module that uppercases every read.
fn add_upper(t: &mut TestPipeline, log: &Log) {
    let log = log.clone();
    t.module(
        "Upper",
        Registration::events(N::ReadEntity),
        script(move |_, call| {
            if let Call::ReadEntity(provider) = call {
                log.push(format!(
                    "Upper saw {:?}",
                    String::from_utf8_lossy(provider.entity())
                ));
                let upper = provider.entity().to_ascii_uppercase();
                provider.set_entity(Bytes::from(upper));
            }
            Status::Continue
        }),
    );
}

/// A ReadEntity module that takes every byte of a read (here: the chunks
/// that are all digits) does not end the body for the reader: the next
/// bytes are read for it, and an empty read comes only at the real end.
#[tokio::test]
async fn a_read_emptied_by_a_read_entity_module_is_read_on() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "DropDigits",
        Registration::events(N::ReadEntity),
        script(|_, call| {
            if let Call::ReadEntity(provider) = call {
                if provider.entity().iter().all(u8::is_ascii_digit) {
                    provider.set_entity(Bytes::new());
                }
            }
            Status::Continue
        }),
    );
    // Inserted bytes go through ReadEntity too, and may be taken as well.
    t.module(
        "Prefix",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            ctx.request_mut().insert_entity_body("0000");
            Status::Continue
        }),
    );
    add_echo(&mut t, 4, &log);
    let pipeline = t.build();
    let (req, body) = post_request("/echo", &["abcd", "1234", "5678", "efgh"]);

    let outcome = run_with_body(&pipeline, req, body).await;

    assert_eq!(outcome.body(), "abcdefgh");
    assert_eq!(log.entries(), ["read 4", "read 4", "read 0"]);
}

/// Runs `chunks` through `Doubler`, a ReadEntity module that doubles every
/// byte, to `Bounded`, a reader with a buffer of 4 bytes (a native
/// module's) that keeps `keep` bytes of each read and gives the rest back.
/// Gives the body it echoed, its log, and the bytes received.
async fn doubled_through_a_bounded_reader(
    keep: usize,
    chunks: &[&str],
) -> (String, Vec<String>, u64) {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Doubler",
        Registration::events(N::ReadEntity),
        script(|_, call| {
            if let Call::ReadEntity(provider) = call {
                let doubled: Vec<u8> = provider.entity().iter().flat_map(|&b| [b, b]).collect();
                provider.set_entity(Bytes::from(doubled));
            }
            Status::Continue
        }),
    );
    let reads = log.clone();
    t.module(
        "Bounded",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            if let Call::AsyncCompletion { .. } = call {
                let mut data = ctx.request_mut().take_read_data();
                if data.is_empty() {
                    assert!(ctx.request().is_body_complete());
                    reads.push("end".to_owned());
                    return Status::Continue;
                }
                let rest = data.split_off(data.len().min(keep));
                let gave_back = rest.len();
                ctx.request_mut().return_unread(rest);
                reads.push(format!(
                    "took {:?}, gave back {gave_back}, remaining {:?}",
                    String::from_utf8_lossy(&data),
                    ctx.request().remaining_entity_bytes()
                ));
                ctx.response_mut().write(data);
            }
            ctx.read_entity_body(4).unwrap();
            Status::Pending
        }),
    );
    t.handler(catch_all(&["Bounded"]));
    let pipeline = t.build();
    let (req, body) = post_request("/echo", chunks);
    let outcome = run_with_body(&pipeline, req, body).await;
    let received = outcome.context().request().bytes_received();
    (outcome.body(), log.entries(), received)
}

/// A reader with a bounded buffer gives back what a ReadEntity module made
/// past its room: the next read returns it as it is, not filtered again, so
/// a filter that grows the bytes still comes to the end of the body.
#[tokio::test]
async fn bytes_a_reader_gives_back_are_read_next_without_filtering_again() {
    let (body, log, received) = doubled_through_a_bounded_reader(4, &["abc", "def"]).await;
    assert_eq!(body, "aabbccddeeff");
    assert_eq!(
        log,
        [
            "took \"aabb\", gave back 2, remaining Some(5)",
            "took \"cc\", gave back 0, remaining Some(3)",
            "took \"ddee\", gave back 2, remaining Some(2)",
            "took \"ff\", gave back 0, remaining Some(0)",
            "end",
        ]
    );
    assert_eq!(received, 12);
}

/// Bytes given back from a read of given-back bytes come before what that
/// read left: the body keeps its order however little the reader takes.
#[tokio::test]
async fn bytes_given_back_twice_keep_their_order() {
    let (body, log, received) = doubled_through_a_bounded_reader(1, &["abc", "def"]).await;
    assert_eq!(body, "aabbccddeeff");
    assert_eq!(log.len(), 13, "{log:?}");
    assert_eq!(received, 12);
}

/// A ReadEntity module that takes a whole read and inserts it again (holding
/// it back for a moment) gets it read next, before the client's later bytes.
#[tokio::test]
async fn bytes_a_filter_inserts_while_emptying_a_read_come_before_later_ones() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    t.module(
        "HoldOnce",
        Registration::events(N::ReadEntity),
        script(move |ctx, call| {
            if let Call::ReadEntity(provider) = call {
                if !held.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let piece = provider.entity().clone();
                    provider.set_entity(Bytes::new());
                    ctx.request_mut().insert_entity_body(piece);
                }
            }
            Status::Continue
        }),
    );
    add_echo(&mut t, 64, &log);
    let pipeline = t.build();
    let (req, body) = post_request("/echo", &["abc", "def"]);

    let outcome = run_with_body(&pipeline, req, body).await;

    assert_eq!(outcome.body(), "abcdef");
    assert_eq!(log.entries(), ["read 3", "read 3", "read 0"]);
}

#[tokio::test]
async fn read_entity_modules_replace_the_body_a_handler_reads() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_upper(&mut t, &log);
    add_echo(&mut t, 4, &log);
    let pipeline = t.build();
    let (req, body) = post_request("/echo", &["hello ", "world"]);

    let outcome = run_with_body(&pipeline, req, body).await;

    assert_eq!(outcome.body(), "HELLO WORLD");
    assert_eq!(
        log.entries(),
        [
            "Upper saw \"hell\"",
            "read 4",
            "Upper saw \"o \"",
            "read 2",
            "Upper saw \"worl\"",
            "read 4",
            "Upper saw \"d\"",
            "read 1",
            "read 0",
        ]
    );
    assert_eq!(outcome.context().request().bytes_received(), 11);
}

#[tokio::test]
async fn a_body_read_the_server_gives_up_on_completes_with_a_timeout_and_408() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let seen = log.clone();
    t.module(
        "Reader",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            if let Call::AsyncCompletion { info, .. } = call {
                seen.push(format!("read {} status {:#x}", info.bytes, info.status));
                if info.status != 0 {
                    return Status::FinishRequest;
                }
            }
            ctx.read_entity_body(64).unwrap();
            Status::Pending
        }),
    );
    t.handler(catch_all(&["Reader"]));
    let pipeline = t.build();
    let (req, _) = post_request("/upload", &["0123456789"]);
    let mut execution = RequestExecution::new(context(&pipeline, req));

    // The first read gets bytes; the second waits on a client that stalls.
    assert!(matches!(execution.resume(), Step::ReadEntity { max: 64 }));
    execution.complete_read(Ok(Bytes::from_static(b"01234")));
    assert!(matches!(execution.resume(), Step::ReadEntity { .. }));
    assert!(execution.expire_read("test: body too slow"));
    assert!(!execution.expire_read("no read in progress any more"));
    let outcome = drive(execution, Vec::new()).await;

    assert_eq!(
        log.entries(),
        ["read 5 status 0x0", "read 0 status 0x800705b4"]
    );
    assert_eq!(outcome.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(outcome.context().response().need_disconnect());
    outcome.assert_completed();
}

#[tokio::test]
async fn inserted_entity_body_is_read_before_the_clients_body() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Inserter",
        Registration::events(N::BeginRequest),
        script(|ctx, _| {
            ctx.request_mut().insert_entity_body("PREFIX:");
            assert!(!ctx.request().is_body_complete());
            Status::Continue
        }),
    );
    add_echo(&mut t, 64, &log);
    let pipeline = t.build();
    let (req, body) = post_request("/echo", &["client body"]);

    let outcome = run_with_body(&pipeline, req, body).await;

    assert_eq!(outcome.body(), "PREFIX:client body");
    assert_eq!(log.entries(), ["read 7", "read 11", "read 0"]);
}

/// `remaining_entity_bytes` counts inserted bytes not read yet along with
/// the client's: a handler that checks it before reading (IIS's usual
/// `GetRemainingEntityBytes() == 0` guard) still reads a body another
/// module inserted.
#[tokio::test]
async fn remaining_entity_bytes_counts_inserted_bytes() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_inserter(&mut t, "PREFIX:");
    {
        let log = log.clone();
        t.module(
            "Remaining",
            Registration::events(N::BeginRequest | N::ExecuteRequestHandler),
            script(move |ctx, call| {
                let remaining = ctx.request().remaining_entity_bytes();
                let done = ctx.request().is_body_complete();
                match call {
                    Call::AsyncCompletion { info, .. } if info.bytes == 0 => {
                        log.push(format!("end {remaining:?} {done}"));
                        write(ctx, "");
                        return Status::Continue;
                    }
                    Call::AsyncCompletion { info, .. } => {
                        log.push(format!("read {} left {remaining:?}", info.bytes))
                    }
                    _ => log.push(format!("left {remaining:?}")),
                }
                if matches!(
                    call,
                    Call::Event {
                        notification: N::BeginRequest,
                        ..
                    }
                ) {
                    return Status::Continue;
                }
                ctx.read_entity_body(8).unwrap();
                Status::Pending
            }),
        );
    }
    t.handler(catch_all(&["Remaining"]));
    let pipeline = t.build();
    let (req, body) = post_request("/echo", &["client body"]);

    run_with_body(&pipeline, req, body).await;

    assert_eq!(
        log.entries(),
        [
            "left Some(18)",
            "left Some(18)",
            "read 7 left Some(11)",
            "read 8 left Some(3)",
            "read 3 left Some(0)",
            "end Some(0) true"
        ]
    );
}

/// A large inserted body that a ReadEntity module takes every piece of (it
/// holds them back) is read on piece after piece without the stack growing
/// with each: 16 MiB in 1 KiB reads is 16,384 pieces, which used to
/// overflow the stack.
#[tokio::test]
async fn an_inserted_body_held_back_piece_by_piece_does_not_grow_the_stack() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_inserter(&mut t, vec![b'x'; 16 * 1024 * 1024]);
    t.module(
        "HoldBack",
        Registration::events(N::ReadEntity),
        script(|_, call| {
            if let Call::ReadEntity(provider) = call {
                provider.set_entity(Bytes::new());
            }
            Status::Continue
        }),
    );
    add_echo(&mut t, 1024, &log);
    let pipeline = t.build();
    let outcome = get(&pipeline, "/echo").await;
    outcome.assert_completed();
    // Every piece was held back: the reader saw only the end.
    assert_eq!(log.entries(), ["read 0"]);
}

#[tokio::test]
async fn a_request_without_a_body_reads_zero_bytes_at_once() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    add_upper(&mut t, &log);
    add_echo(&mut t, 16, &log);
    let pipeline = t.build();

    let outcome = get(&pipeline, "/echo").await;

    // ReadEntity does not fire for an empty read.
    assert_eq!(log.entries(), ["read 0"]);
    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.body(), "");
}

/// A ReadEntity module that holds a piece back by inserting it again makes
/// an endless read; the execution still yields to its driver instead of
/// holding the thread.
#[tokio::test]
async fn a_piece_inserted_again_for_ever_still_yields() {
    let mut t = TestPipeline::new();
    add_inserter(&mut t, "piece");
    t.module(
        "Reinserter",
        Registration::events(N::ReadEntity),
        script(|ctx, call| {
            if let Call::ReadEntity(provider) = call {
                let piece = provider.entity().clone();
                ctx.request_mut().insert_entity_body(piece);
                provider.set_entity(Bytes::new());
            }
            Status::Continue
        }),
    );
    let log = Log::new();
    add_echo(&mut t, 64, &log);
    let pipeline = t.build();
    let mut execution = RequestExecution::new(context(
        &pipeline,
        request(riis_pipeline::http::Method::GET, "/echo"),
    ));
    for _ in 0..3 {
        assert!(matches!(execution.resume(), Step::Yield));
    }
}

/// Once a read has completed empty at the end of the body, another read
/// fails at once with `HRESULT_FROM_WIN32(ERROR_HANDLE_EOF)`, as IIS's
/// `ReadEntityBody` does: a reader that missed the end does not read empty
/// for ever. Bytes inserted after the end are read again, and then the end
/// comes once more.
#[tokio::test]
async fn a_read_past_the_end_of_the_body_fails_with_handle_eof() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    let seen = log.clone();
    t.module(
        "Reader",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            if let Call::AsyncCompletion { info, .. } = call {
                seen.push(format!("read {}", info.bytes));
                let data = ctx.request().read_data().clone();
                ctx.response_mut().write(data);
                if info.bytes == 0 {
                    let again = ctx.read_entity_body(8).expect_err("a read past the end");
                    assert_eq!(again.hresult, riis_pipeline::ModuleError::E_HANDLE_EOF);
                    seen.push("past the end".to_owned());
                    if seen.entries().len() > 3 {
                        return Status::Continue;
                    }
                    ctx.request_mut().insert_entity_body("+more");
                }
            }
            ctx.read_entity_body(8).unwrap();
            Status::Pending
        }),
    );
    t.handler(catch_all(&["Reader"]));
    let pipeline = t.build();
    let (req, body) = post_request("/read", &["abcde"]);

    let outcome = run_with_body(&pipeline, req, body).await;

    assert_eq!(outcome.body(), "abcde+more");
    assert_eq!(
        log.entries(),
        [
            "read 5",
            "read 0",
            "past the end",
            "read 5",
            "read 0",
            "past the end"
        ]
    );
}

/// *Inferred:* FinishRequest from a MapPath module ends the request once
/// the call that raised MapPath returns, with the response that module set
/// (as its failure there would): the modules after it in MapPath and the
/// rest of the pipeline up to LogRequest are not called.
#[tokio::test]
async fn finish_request_from_map_path_ends_the_request() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Refuser",
        Registration::events(N::MapPath),
        script(|ctx, call| {
            if let Call::MapPath(provider) = call {
                if provider.url().starts_with("/secret/") {
                    ctx.response_mut()
                        .set_status(StatusCode::FORBIDDEN, "Forbidden");
                    return Status::FinishRequest;
                }
            }
            Status::Continue
        }),
    );
    add_remap(&mut t);
    {
        let log = log.clone();
        t.module(
            "Asker",
            Registration::events(N::BeginRequest | N::AuthenticateRequest),
            script(move |ctx, call| {
                if call.is_event(N::BeginRequest) {
                    let url = ctx.request().url().to_owned();
                    log.push(ctx.map_path(&url).display().to_string());
                } else {
                    log.push("AuthenticateRequest");
                }
                Status::Continue
            }),
        );
    }
    let pipeline = t.build();

    let refused = get(&pipeline, "/secret/a.txt").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(log.take().len(), 1, "nothing after the raising call");
    let open = get(&pipeline, "/virtual/b.txt").await;
    assert_ne!(open.status(), StatusCode::FORBIDDEN);
    assert_eq!(log.take().len(), 2);
}
