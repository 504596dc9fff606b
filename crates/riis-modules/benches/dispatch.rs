//! What the engine costs per module call, without sockets: requests run
//! through `RequestExecution` on one thread with 0 and with 20 `NoOp`
//! modules (each registered for every notification and post-event), and the
//! difference is divided by the calls it added.
//!
//! `cargo bench -p riis-modules --bench dispatch` (a plain program, not a
//! test: it prints figures and asserts nothing about them). For numbers that
//! do not move with the machine's load, run the binary under
//! `valgrind --tool=callgrind` once with `NOOPS=0` and once with `NOOPS=20`
//! (each runs `REQUESTS` requests of that one configuration) and compare
//! instruction counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use riis_modules::noop;
use riis_pipeline::http::{HeaderMap, Method, Uri, Version};
use riis_pipeline::{
    ConnectionInfo, HandlerDefinition, HttpContext, HttpModule, HttpRequest, Pipeline,
    PipelineBuilder, RequestExecution, RequestNotification, RequestNotificationStatus,
    RequestNotifications, SiteDefinition, Step,
};

/// Answers every request at ExecuteRequestHandler, as a handler does.
struct Answer;

impl HttpModule for Answer {
    fn on_execute_request_handler(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        ctx.response_mut().write("hello");
        ctx.set_request_handled();
        RequestNotificationStatus::Continue
    }
}

fn pipeline(noops: usize) -> Arc<Pipeline> {
    let mut builder = PipelineBuilder::new();
    let mut modules = Vec::new();
    for i in 0..noops {
        let name = format!("NoOp{i}");
        builder
            .register_module(&name, noop::register_module)
            .expect("NoOp registers");
        modules.push(name);
    }
    builder
        .register_module("Answer", |_, r, _| {
            r.set_request_notifications(
                || Answer,
                RequestNotification::ExecuteRequestHandler.into(),
                RequestNotifications::NONE,
            )
        })
        .expect("Answer registers");
    builder.site(SiteDefinition {
        id: 1,
        name: "Bench".to_owned(),
        physical_root: std::env::temp_dir(),
        key: "sites[0]".to_owned(),
        handlers: Some(vec![HandlerDefinition {
            name: "Answer".to_owned(),
            path: "*".to_owned(),
            verbs: vec!["*".to_owned()],
            resource_type: "Unspecified".to_owned(),
            modules: vec!["Answer".to_owned()],
            allow_path_info: false,
            key: "handlers[0]".to_owned(),
        }]),
        ..SiteDefinition::default()
    });
    Arc::new(builder.build().expect("the bench pipeline builds"))
}

/// Runs `n` GET requests to completion; returns nanoseconds per request.
fn run(pipeline: &Arc<Pipeline>, n: u64) -> f64 {
    let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let connection = Arc::new(ConnectionInfo::new(1, local, remote));
    let uri: Uri = "/index.html".parse().unwrap();
    let started = Instant::now();
    for id in 0..n {
        let request = HttpRequest::new(
            Method::GET,
            uri.clone(),
            Version::HTTP_11,
            HeaderMap::new(),
            local,
            remote,
        )
        .expect("a valid request");
        let ctx = HttpContext::new(
            pipeline.clone(),
            pipeline.sites()[0].clone(),
            connection.clone(),
            request,
            id,
        );
        let mut exec = RequestExecution::new(ctx);
        loop {
            match exec.resume() {
                Step::Send => {
                    let out = exec.take_output().expect("a send has output");
                    exec.complete_send(Ok(out.len()));
                }
                Step::Done => break,
                step => panic!("the bench request should not {step:?}"),
            }
        }
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let requests: u64 = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    if let Some(noops) = std::env::var("NOOPS").ok().and_then(|v| v.parse().ok()) {
        let ns = run(&pipeline(noops), requests);
        println!("{noops} NoOp: {requests} requests, {ns:.0} ns per request");
        return;
    }
    let bare = pipeline(0);
    let twenty = pipeline(20);
    // Warm up both, then alternate, keeping the best of five.
    run(&bare, requests / 10);
    run(&twenty, requests / 10);
    let (mut best_bare, mut best_twenty) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        best_bare = best_bare.min(run(&bare, requests / 5));
        best_twenty = best_twenty.min(run(&twenty, requests / 5));
    }
    // 12 events + 12 post-events + SendResponse per module per request
    // (ExecuteRequestHandler runs the handler's modules only, so a NoOp
    // gets 11 + 12 deterministic calls, plus SendResponse).
    let calls_per_request = 20.0 * (11.0 + 12.0 + 1.0);
    let added = best_twenty - best_bare;
    println!(
        "requests through the engine, best of 5 runs of {}",
        requests / 5
    );
    println!("  no modules:    {best_bare:8.0} ns per request");
    println!("  20 NoOp:       {best_twenty:8.0} ns per request");
    println!(
        "  added:         {added:8.0} ns per request, {:.2} ns per module call ({calls_per_request} calls)",
        added / calls_per_request
    );
}
