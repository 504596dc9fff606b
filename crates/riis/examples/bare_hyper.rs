//! The floor under riis's request benchmarks: hyper alone, on one tokio
//! thread, answering every request with `200 text/plain "Hello World!"`, as
//! `HelloWorld` does through the pipeline. `bench/run.sh hyper` measures it
//! against nginx in the same run, so the cost of everything riis adds (the
//! pipeline, the module API, the connection handling) can be read off the
//! difference.
//!
//!     cargo run --release -p riis --example bare_hyper -- 127.0.0.1:8081
//!
//! It uses the allocator, hyper settings (`writev`, keep-alive) and socket
//! option (`TCP_NODELAY`) riis uses, and nothing else of riis.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello World!")));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: bare_hyper ADDRESS:PORT");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(hello);
                let _ = hyper::server::conn::http1::Builder::new()
                    .writev(true)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
