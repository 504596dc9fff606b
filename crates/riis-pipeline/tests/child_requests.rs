//! Child requests: a module clones its context, changes the URL and executes
//! it; the child runs its own pipeline, its output is buffered into the
//! parent's response or sent directly, the parent resumes through
//! OnAsyncCompletion, and nesting stops at MAX_CHILD_REQUEST_DEPTH.

mod common;

use std::sync::Arc;

use common::*;
use riis_pipeline::http::StatusCode;
use riis_pipeline::{ExecuteFlags, Pipeline, RequestNotification as N, MAX_CHILD_REQUEST_DEPTH};

/// A pipeline where `/child` is answered by `ChildHandler` (writes "child",
/// sets `x-child`) and every other URL by `Parent`, which writes "pre:",
/// executes `/child` with `flags`, and on completion writes ":post". A
/// `Recorder` logs `depth:event` for every event of every request, a
/// `SendWatcher` logs every send as `send depth=… headers=… final=…`.
fn parent_and_child(flags: ExecuteFlags, log: &Log) -> Arc<Pipeline> {
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Parent",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion {
                    notification,
                    is_post,
                    info,
                } => {
                    log.push(format!(
                        "parent completion {} bytes={} depth={}",
                        event_name(notification, is_post),
                        info.bytes,
                        ctx.child_depth()
                    ));
                    write(ctx, ":post");
                    Status::Continue
                }
                _ => {
                    write(ctx, "pre:");
                    let mut child = ctx.clone_context().expect("depth 0 may clone");
                    child.request_mut().set_url("/child").unwrap();
                    ctx.execute_request(child, flags).unwrap();
                    Status::Pending
                }
            }),
        );
    }
    t.module(
        "ChildHandler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "child");
            set_header(ctx, "x-child", &ctx.child_depth().to_string());
            Status::Continue
        }),
    );
    {
        let log = log.clone();
        t.module(
            "Recorder",
            Registration::everything(),
            script(move |ctx, call| {
                log.push(format!("{}:{}", ctx.child_depth(), call.describe()));
                Status::Continue
            }),
        );
    }
    {
        let log = log.clone();
        t.module(
            "SendWatcher",
            Registration::events(N::SendResponse),
            script(move |ctx, call| {
                if let Call::SendResponse(p) = call {
                    log.push(format!(
                        "send depth={} headers={} final={}",
                        ctx.child_depth(),
                        p.headers_being_sent(),
                        p.is_final_send()
                    ));
                }
                Status::Continue
            }),
        );
    }
    t.handler(handler(
        "Child",
        "/child",
        &["*"],
        "Unspecified",
        &["ChildHandler"],
    ))
    .handler(catch_all(&["Parent"]));
    t.build()
}

/// The recorder's entries for one depth, without the `depth:` prefix.
fn events_at_depth(log: &Log, depth: u8) -> Vec<String> {
    let prefix = format!("{depth}:");
    log.entries()
        .iter()
        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// A response a child request helped build is not kept by a user cache
/// (OutputCache): a hit would skip the child's pipeline, the access rules
/// of the child's location among them. The child need not ask.
#[tokio::test]
async fn a_child_request_makes_its_parent_uncacheable() {
    let seen = Log::new();
    let mut t = TestPipeline::new();
    {
        let seen = seen.clone();
        t.module(
            "Parent",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| match call {
                Call::AsyncCompletion { .. } => {
                    seen.push(format!("parent {}", ctx.is_user_cache_disabled()));
                    Status::Continue
                }
                _ => {
                    seen.push(format!("before {}", ctx.is_user_cache_disabled()));
                    let child = ctx.clone_context_with_url("/child").unwrap();
                    let flags = ExecuteFlags {
                        buffer_response: true,
                        ..ExecuteFlags::default()
                    };
                    ctx.execute_request(child, flags).unwrap();
                    Status::Pending
                }
            }),
        );
    }
    t.module(
        "ChildHandler",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            write(ctx, "private");
            Status::Continue
        }),
    );
    t.handler(handler(
        "Child",
        "/child",
        &["*"],
        "Unspecified",
        &["ChildHandler"],
    ))
    .handler(catch_all(&["Parent"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/parent").await;
    assert_eq!(outcome.body(), "private");
    assert_eq!(seen.entries(), ["before false", "parent true"]);
}

#[tokio::test]
async fn a_buffered_child_runs_its_own_pipeline_and_the_parent_resumes_with_its_output() {
    let log = Log::new();
    let flags = ExecuteFlags {
        buffer_response: true,
        ..ExecuteFlags::default()
    };
    let pipeline = parent_and_child(flags, &log);

    let outcome = get(&pipeline, "/parent").await;

    // The child saw every event, ExecuteRequestHandler excluded (the
    // recorder is not its handler).
    let child: Vec<String> = events_at_depth(&log, 1);
    let expected: Vec<String> = all_events()
        .into_iter()
        .filter(|&(n, post)| post || n != N::ExecuteRequestHandler)
        .map(|(n, post)| event_name(n, post))
        .collect();
    assert_eq!(child, expected);

    // The child ran entirely inside the parent's ExecuteRequestHandler, and
    // the parent was resumed right after it.
    let entries = log.entries();
    let first_child = entries.iter().position(|e| e.starts_with("1:")).unwrap();
    let last_child = entries.iter().rposition(|e| e.starts_with("1:")).unwrap();
    assert_eq!(entries[first_child - 1], "0:PostPreExecuteRequestHandler");
    assert!(entries[last_child + 1].starts_with("parent completion ExecuteRequestHandler"));
    assert_eq!(entries[last_child + 2], "0:PostExecuteRequestHandler");
    assert!(
        entries[last_child + 1].ends_with("depth=0"),
        "{}",
        entries[last_child + 1]
    );

    // One send, by the parent only, carrying the child's body and headers.
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.starts_with("send"))
            .collect::<Vec<_>>(),
        ["send depth=0 headers=true final=true"]
    );
    assert_eq!(outcome.sends.len(), 1);
    assert_eq!(outcome.body(), "pre:child:post");
    assert_eq!(outcome.header("x-child"), Some("1"));
    assert_eq!(outcome.status(), StatusCode::OK);
    outcome.assert_completed();
}

#[tokio::test]
async fn the_child_completion_reports_the_bytes_the_child_produced() {
    let log = Log::new();
    let flags = ExecuteFlags {
        buffer_response: true,
        ..ExecuteFlags::default()
    };
    let pipeline = parent_and_child(flags, &log);

    get(&pipeline, "/parent").await;

    // "child" is 5 bytes; the parent's own "pre:" is not the child's output.
    assert!(
        log.entries()
            .contains(&"parent completion ExecuteRequestHandler bytes=5 depth=0".to_owned()),
        "{:?}",
        log.entries()
    );
}

#[tokio::test]
async fn a_direct_child_sends_its_output_before_the_parent_finishes() {
    let log = Log::new();
    let pipeline = parent_and_child(ExecuteFlags::default(), &log);

    let outcome = get(&pipeline, "/parent").await;

    let sends: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("send"))
        .collect();
    assert_eq!(
        sends,
        [
            "send depth=1 headers=true final=false",
            "send depth=0 headers=false final=true"
        ]
    );
    assert_eq!(outcome.sends.len(), 2);
    let first = &outcome.sends[0];
    assert!(first.head.is_some() && !first.is_final);
    assert_eq!(first.body, b"pre:child");
    let last = &outcome.sends[1];
    assert!(last.head.is_none() && last.is_final);
    assert_eq!(last.body, b":post");
    assert_eq!(outcome.header("x-child"), Some("1"));
    assert_eq!(outcome.body(), "pre:child:post");
    // The parent's "pre:" went out with the child's send but is not the
    // child's output.
    assert!(log
        .entries()
        .contains(&"parent completion ExecuteRequestHandler bytes=5 depth=0".to_owned()));
}

#[tokio::test]
async fn child_requests_nest_at_most_max_child_request_depth() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Recurse",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                let depth = ctx.child_depth();
                if let Call::AsyncCompletion { .. } = call {
                    write(ctx, format!("<{depth}"));
                    return Status::Continue;
                }
                match ctx.clone_context() {
                    Ok(mut child) => {
                        log.push(format!("spawn at {depth}"));
                        child
                            .request_mut()
                            .set_url(&format!("/level{}", depth + 1))
                            .unwrap();
                        let flags = ExecuteFlags {
                            buffer_response: true,
                            ..ExecuteFlags::default()
                        };
                        ctx.execute_request(child, flags).unwrap();
                        Status::Pending
                    }
                    Err(e) => {
                        log.push(format!("refused at {depth}"));
                        write(ctx, format!("deepest={depth} ({})", e.message));
                        Status::Continue
                    }
                }
            }),
        );
    }
    t.handler(catch_all(&["Recurse"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/level0").await;

    let mut expected: Vec<String> = (0..MAX_CHILD_REQUEST_DEPTH)
        .map(|d| format!("spawn at {d}"))
        .collect();
    expected.push(format!("refused at {MAX_CHILD_REQUEST_DEPTH}"));
    assert_eq!(log.entries(), expected);
    assert_eq!(outcome.status(), StatusCode::OK);
    let body = outcome.body();
    assert!(body.starts_with("deepest=10 ("), "{body}");
    assert!(body.ends_with("<9<8<7<6<5<4<3<2<1<0"), "{body}");
    outcome.assert_completed();
}

#[tokio::test]
async fn a_clone_kept_from_a_shallower_request_does_not_reset_the_depth() {
    let log = Log::new();
    let stored: Arc<std::sync::Mutex<Vec<riis_pipeline::HttpContext>>> = Arc::default();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Hoarder",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, call| {
                let depth = ctx.child_depth();
                if let Call::AsyncCompletion { .. } = call {
                    return Status::Continue;
                }
                let mut kept = stored.lock().unwrap();
                if depth == 0 {
                    // Every clone is made here, at depth 0.
                    for i in 0..(MAX_CHILD_REQUEST_DEPTH as usize + 2) {
                        let mut child = ctx.clone_context().unwrap();
                        child.request_mut().set_url(&format!("/kept{i}")).unwrap();
                        kept.push(child);
                    }
                }
                let child = kept.pop().expect("a kept clone");
                drop(kept);
                let flags = ExecuteFlags {
                    buffer_response: true,
                    ..ExecuteFlags::default()
                };
                match ctx.execute_request(child, flags) {
                    Ok(()) => {
                        log.push(format!("ran a child from {depth}"));
                        Status::Pending
                    }
                    Err(_) => {
                        log.push(format!("refused at {depth}"));
                        ctx.set_request_handled();
                        Status::Continue
                    }
                }
            }),
        );
    }
    t.handler(catch_all(&["Hoarder"]));
    let pipeline = t.build();
    let outcome = get(&pipeline, "/").await;
    outcome.assert_completed();
    let mut expected: Vec<String> = (0..MAX_CHILD_REQUEST_DEPTH)
        .map(|d| format!("ran a child from {d}"))
        .collect();
    expected.push(format!("refused at {MAX_CHILD_REQUEST_DEPTH}"));
    assert_eq!(log.entries(), expected);
}

#[tokio::test]
async fn a_child_with_the_parents_url_needs_same_url() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Loop",
            Registration::events(N::ExecuteRequestHandler),
            script(move |ctx, _| {
                let child = ctx.clone_context().unwrap();
                let refused = ctx.execute_request(child, ExecuteFlags::default()).is_err();
                log.push(format!("refused={refused}"));
                write(ctx, "done");
                Status::Continue
            }),
        );
    }
    t.handler(catch_all(&["Loop"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/same").await;

    assert_eq!(log.entries(), ["refused=true"]);
    assert_eq!(outcome.body(), "done");
}

/// An operation started on a clone before it runs belongs to nobody in the
/// child's pipeline: executing such a clone is refused.
#[tokio::test]
async fn a_clone_with_an_operation_started_on_it_is_not_executed() {
    let mut t = TestPipeline::new();
    t.module(
        "Parent",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let mut child = ctx.clone_context().unwrap();
            child.read_entity_body(8).unwrap();
            let refused = ctx.execute_request(child, ExecuteFlags::default()).is_err();
            write(ctx, if refused { "refused" } else { "ran" });
            Status::Continue
        }),
    )
    .handler(catch_all(&["Parent"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/").await;

    outcome.assert_completed();
    assert_eq!(outcome.body(), "refused");
}

/// A child given a user (IIS's `pHttpUser`) runs as that user and skips
/// AuthenticateRequest; one executed without runs it, even when it carries
/// the parent's user (which the clone copies) or one set on it.
#[tokio::test]
async fn a_child_skips_authentication_only_when_given_a_user() {
    use riis_pipeline::HttpUser;
    let log = Log::new();
    let mut t = TestPipeline::new();
    {
        let log = log.clone();
        t.module(
            "Auth",
            Registration::events(N::AuthenticateRequest | N::ExecuteRequestHandler),
            script(move |ctx, call| {
                let user = ctx.user().map_or("none", |u| u.name()).to_owned();
                if call.is_event(N::AuthenticateRequest) {
                    log.push(format!("{} authenticates {user}", ctx.request().url()));
                    if ctx.child_depth() == 0 {
                        ctx.set_user(HttpUser::new("alice", "Basic"));
                    }
                    return Status::Continue;
                }
                if ctx.child_depth() > 0 {
                    log.push(format!("{} runs as {user}", ctx.request().url()));
                    ctx.set_request_handled();
                    return Status::Continue;
                }
                if let Call::AsyncCompletion { .. } = call {
                    return Status::Continue;
                }
                let mut plain = ctx.clone_context_with_url("/plain").unwrap();
                plain.set_user(HttpUser::new("carol", "Basic"));
                let given = ctx.clone_context_with_url("/given").unwrap();
                let child = match ctx.request().url() {
                    "/go-plain" => ctx.execute_request(plain, ExecuteFlags::default()),
                    _ => ctx.execute_request_as(
                        given,
                        ExecuteFlags::default(),
                        HttpUser::new("bob", "Forms"),
                    ),
                };
                child.unwrap();
                Status::Pending
            }),
        );
    }
    t.handler(catch_all(&["Auth"]));
    let pipeline = t.build();

    get(&pipeline, "/go-plain").await;
    get(&pipeline, "/as-bob").await;

    assert_eq!(
        log.entries(),
        [
            "/go-plain authenticates none",
            "/plain authenticates carol",
            "/plain runs as carol",
            "/as-bob authenticates none",
            "/given runs as bob",
        ]
    );
}

/// A clone kept from an earlier request cannot run as a later request's
/// child: its module slots and site are the earlier request's.
#[tokio::test]
async fn a_clone_of_another_request_is_refused() {
    use std::sync::Mutex;
    static KEPT: Mutex<Option<riis_pipeline::HttpContext>> = Mutex::new(None);
    let mut t = TestPipeline::new();
    t.module(
        "Keeper",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            let kept = KEPT.lock().unwrap().take();
            match kept {
                None => {
                    *KEPT.lock().unwrap() = Some(ctx.clone_context().unwrap());
                    write(ctx, "kept");
                }
                Some(earlier) => {
                    let refused = ctx
                        .execute_request(earlier, ExecuteFlags::default())
                        .expect_err("another request's clone");
                    write(ctx, format!("0x{:08X}", refused.hresult));
                }
            }
            ctx.set_request_handled();
            Status::Continue
        }),
    );
    t.handler(catch_all(&["Keeper"]));
    let pipeline = t.build();
    assert_eq!(get(&pipeline, "/").await.body(), "kept");
    let second = get(&pipeline, "/").await;
    second.assert_completed();
    assert_eq!(second.body(), "0x80070057");
}

/// A page that includes `/inc`, which includes `/leaf`: each level writes
/// around its child's output, and each child's handler first clears the
/// entity, as StaticFile does before it writes a file. Children run
/// buffered, or with `direct` run directly, and then `/leaf` flushes, and
/// `/inc`, back from it, writes a stray piece and clears it.
fn includes(direct: bool, log: &Log) -> Arc<Pipeline> {
    let mut t = TestPipeline::new();
    let log = log.clone();
    let flags = ExecuteFlags {
        buffer_response: !direct,
        ..ExecuteFlags::default()
    };
    t.module(
        "Include",
        Registration::events(N::ExecuteRequestHandler),
        script(move |ctx, call| {
            let url = ctx.request().url().to_owned();
            let (open, close, child) = match url.as_str() {
                "/page" => ("<page>", "</page>", Some("/inc")),
                "/inc" => ("<inc>", "</inc>", Some("/leaf")),
                _ => ("leaf", "", None),
            };
            if let Call::AsyncCompletion { .. } = call {
                if url == "/inc" && direct {
                    write(ctx, "stray");
                    ctx.response_mut().clear_entity();
                }
                log.push(format!(
                    "{url} sees {} bytes of its own",
                    ctx.response().buffered_len()
                ));
                write(ctx, close);
                return Status::Continue;
            }
            if url != "/page" {
                ctx.response_mut().clear_entity();
                log.push(format!(
                    "{url} starts with {} chunks",
                    ctx.response().entity_chunks().len()
                ));
            }
            write(ctx, open);
            let Some(child_url) = child else {
                if direct {
                    ctx.response_mut().flush(riis_pipeline::FlushOptions {
                        asynchronous: false,
                        more_data: true,
                    });
                }
                return Status::Continue;
            };
            let mut child = ctx.clone_context().unwrap();
            child.request_mut().set_url(child_url).unwrap();
            ctx.execute_request(child, flags).unwrap();
            Status::Pending
        }),
    );
    t.handler(catch_all(&["Include"]));
    t.build()
}

#[tokio::test]
async fn a_child_that_clears_the_entity_clears_only_its_own_output() {
    let log = Log::new();
    let outcome = get(&includes(false, &log), "/page").await;

    outcome.assert_completed();
    assert_eq!(outcome.body(), "<page><inc>leaf</inc></page>");
    assert_eq!(outcome.sends.len(), 1);
    assert_eq!(
        log.entries(),
        [
            "/inc starts with 0 chunks",
            "/leaf starts with 0 chunks",
            // Back in each request, its own output, its children's
            // included, is all it sees.
            "/inc sees 9 bytes of its own",
            "/page sees 21 bytes of its own",
        ]
    );
}

#[tokio::test]
async fn after_a_childs_flush_nothing_buffered_is_kept_from_a_clear() {
    let log = Log::new();
    let outcome = get(&includes(true, &log), "/page").await;

    outcome.assert_completed();
    // The flush took the page's and the included request's starts with it;
    // the stray piece written after it was cleared.
    assert_eq!(outcome.sends[0].body, b"<page><inc>leaf");
    assert_eq!(outcome.body(), "<page><inc>leaf</inc></page>");
    assert_eq!(
        log.entries(),
        [
            "/inc starts with 0 chunks",
            "/leaf starts with 0 chunks",
            "/inc sees 0 bytes of its own",
            // A direct child's output goes out when it ends.
            "/page sees 0 bytes of its own",
        ]
    );
}

/// `EXECUTE_FLAG_NO_HEADERS`: only the child's entity goes into the page.
/// The parent's status and headers stay (the included file's 404 and
/// `text/plain` do not replace the page's), whether the child's output is
/// buffered or sent as it ends, and the parent still learns how the child
/// ended.
#[tokio::test]
async fn a_child_without_headers_adds_its_entity_alone() {
    for buffer_response in [true, false] {
        let log = Log::new();
        let mut t = TestPipeline::new();
        {
            let log = log.clone();
            t.module(
                "Include",
                Registration::events(N::ExecuteRequestHandler),
                script(move |ctx, call| match call {
                    Call::AsyncCompletion { .. } => {
                        let (status, substatus) = ctx.child_status().expect("the child ended");
                        log.push(format!("child ended {}.{substatus}", status.as_u16()));
                        write(ctx, ":post");
                        Status::Continue
                    }
                    _ => {
                        set_header(ctx, "content-type", "text/html");
                        set_header(ctx, "x-page", "kept");
                        write(ctx, "pre:");
                        let mut child = ctx.clone_context().unwrap();
                        child.request_mut().set_url("/child").unwrap();
                        let flags = ExecuteFlags {
                            buffer_response,
                            no_headers: true,
                            ..ExecuteFlags::default()
                        };
                        ctx.execute_request(child, flags).unwrap();
                        Status::Pending
                    }
                }),
            );
        }
        t.module(
            "ChildHandler",
            Registration::events(N::ExecuteRequestHandler),
            script(|ctx, _| {
                ctx.response_mut()
                    .set_status(StatusCode::NOT_FOUND, "Not Found");
                set_header(ctx, "content-type", "text/plain");
                set_header(ctx, "x-child", "1");
                write(ctx, "child");
                Status::Continue
            }),
        );
        t.handler(handler(
            "Child",
            "/child",
            &["*"],
            "Unspecified",
            &["ChildHandler"],
        ))
        .handler(catch_all(&["Include"]));
        let pipeline = t.build();

        let outcome = get(&pipeline, "/page").await;

        assert_eq!(
            outcome.status(),
            StatusCode::OK,
            "buffered {buffer_response}"
        );
        assert_eq!(outcome.header("content-type"), Some("text/html"));
        assert_eq!(outcome.header("x-page"), Some("kept"));
        assert_eq!(outcome.header("x-child"), None);
        assert_eq!(outcome.body(), "pre:child:post");
        assert_eq!(log.entries(), ["child ended 404.0"]);
    }
}

/// A request nested in a child without headers (an include of a folder,
/// whose default document runs as a grandchild) that sends on its own
/// sends the kept head too, not the grandchild's.
#[tokio::test]
async fn a_request_nested_in_a_child_without_headers_sends_the_kept_head() {
    let mut t = TestPipeline::new();
    t.module(
        "Include",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, call| match call {
            Call::AsyncCompletion { .. } => {
                write(ctx, ":post");
                Status::Continue
            }
            _ => {
                set_header(ctx, "content-type", "text/html");
                write(ctx, "pre:");
                let mut child = ctx.clone_context().unwrap();
                child.request_mut().set_url("/folder/").unwrap();
                let flags = ExecuteFlags {
                    no_headers: true,
                    ..ExecuteFlags::default()
                };
                ctx.execute_request(child, flags).unwrap();
                Status::Pending
            }
        }),
    );
    // The folder's handler runs the document as a child of its own,
    // which sends what it wrote (a flush) with a head of its own.
    t.module(
        "Folder",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, call| match call {
            Call::AsyncCompletion { .. } => Status::Continue,
            _ => {
                let mut child = ctx.clone_context().unwrap();
                child.request_mut().set_url("/folder/index.txt").unwrap();
                ctx.execute_request(child, ExecuteFlags::default()).unwrap();
                Status::Pending
            }
        }),
    );
    t.module(
        "Document",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            set_header(ctx, "content-type", "text/plain");
            set_header(ctx, "x-document", "1");
            write(ctx, "document");
            ctx.response_mut().flush(riis_pipeline::FlushOptions {
                asynchronous: false,
                more_data: true,
            });
            Status::Continue
        }),
    );
    t.handler(handler(
        "Document",
        "/folder/index.txt",
        &["*"],
        "Unspecified",
        &["Document"],
    ))
    .handler(handler(
        "Folder",
        "/folder/",
        &["*"],
        "Unspecified",
        &["Folder"],
    ))
    .handler(catch_all(&["Include"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/page").await;

    assert_eq!(outcome.status(), StatusCode::OK);
    assert_eq!(outcome.header("content-type"), Some("text/html"));
    assert_eq!(outcome.header("x-document"), None);
    assert_eq!(outcome.body(), "pre:document:post");
}

/// A buffered child whose output streams past the buffer (a folder's
/// default document that an application answers at length) sends through
/// the SendResponse modules of the request it is buffered into, as its
/// output would have gone out had it stayed buffered: they see its head and
/// every piece, so a module that transforms the top request's response
/// (here one that upper-cases it, as an encoder encodes it) transforms all
/// of it. The child's own SendResponse modules see none of it, buffered or
/// not.
#[tokio::test]
async fn a_buffered_child_that_streams_sends_through_its_parents_modules() {
    let log = Log::new();
    let mut t = TestPipeline::new();
    t.module(
        "Folder",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, call| match call {
            Call::AsyncCompletion { .. } => {
                write(ctx, ":post");
                Status::Continue
            }
            _ => {
                write(ctx, "pre:");
                let child = ctx.clone_context_with_url("/folder/index").unwrap();
                let flags = ExecuteFlags {
                    buffer_response: true,
                    stream_past_buffer_limit: true,
                    ..ExecuteFlags::default()
                };
                ctx.execute_request(child, flags).unwrap();
                Status::Pending
            }
        }),
    );
    t.module(
        "Document",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            set_header(ctx, "x-document", "1");
            write(ctx, "document");
            ctx.response_mut().flush(riis_pipeline::FlushOptions {
                asynchronous: false,
                more_data: true,
            });
            write(ctx, ":rest");
            Status::Continue
        }),
    );
    {
        let log = log.clone();
        t.module(
            "UpperCase",
            Registration::events(N::SendResponse),
            script(move |ctx, call| {
                let Call::SendResponse(p) = call else {
                    return Status::Continue;
                };
                log.push(format!(
                    "send depth={} headers={} final={} x-document={:?}",
                    ctx.child_depth(),
                    p.headers_being_sent(),
                    p.is_final_send(),
                    response_header(ctx, "x-document"),
                ));
                if ctx.child_depth() == 0 {
                    let mut text = String::new();
                    for chunk in ctx.response().entity_chunks() {
                        if let riis_pipeline::EntityChunk::Memory(bytes) = chunk {
                            text.push_str(std::str::from_utf8(bytes).unwrap());
                        }
                    }
                    ctx.response_mut().clear_entity();
                    write(ctx, text.to_uppercase());
                }
                Status::Continue
            }),
        );
    }
    t.handler(handler(
        "Document",
        "/folder/index",
        &["*"],
        "Unspecified",
        &["Document"],
    ))
    .handler(catch_all(&["Folder"]));
    let pipeline = t.build();

    let outcome = get(&pipeline, "/folder/").await;

    outcome.assert_completed();
    assert_eq!(
        log.entries(),
        [
            // The child's flush, and its end (once it streams, the rest
            // goes as it comes).
            "send depth=0 headers=true final=false x-document=Some(\"1\")",
            "send depth=0 headers=false final=false x-document=Some(\"1\")",
            "send depth=0 headers=false final=true x-document=Some(\"1\")",
        ]
    );
    assert_eq!(outcome.body(), "PRE:DOCUMENT:REST:POST");
    assert_eq!(outcome.header("x-document"), Some("1"));
}
