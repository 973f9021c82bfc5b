//! HTTP responder with no application logic, for measuring the latency floor of a benchmark
//! client (used by bench/feast/run.py).
//!
//! ```text
//! http_floor --listen 127.0.0.1:PORT --body RESPONSE_FILE
//! ```
//!
//! The responder reads every request to the end, whatever its method and path, and returns
//! status 200 with the bytes of `RESPONSE_FILE` as `application/json`. It handles HTTP/1
//! connections as `ghaf server` does: hyper's server on a multi-thread tokio runtime,
//! `TCP_NODELAY` on every connection and the same header read timeout. No routing,
//! authentication, store read or JSON work happens. A client's latency against this process
//! is therefore the part of its latency against Ghaf that no handler can remove: the
//! client's own work, the loopback round trip and the wake-ups of both processes.
//!
//! The process prints `listening on ADDRESS` once the socket is bound and serves until it is
//! killed.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;

#[derive(Parser)]
#[command(about = "HTTP responder with no application logic, for latency floors")]
struct Args {
    /// Address to listen on, such as 127.0.0.1:8099.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// File whose bytes are the body of every response.
    #[arg(long)]
    body: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let body = Bytes::from(
        std::fs::read(&args.body)
            .with_context(|| format!("cannot read the response body {}", args.body.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        let (stream, _) = listener.accept().await?;
        if let Err(error) = stream.set_nodelay(true) {
            eprintln!("failed to set TCP_NODELAY on a connection, serving it without: {error}");
        }
        let body = body.clone();
        let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let body = body.clone();
            async move {
                // Reading the request to the end keeps the connection usable for the next one.
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body))
                        .expect("a static status and header make a valid response"),
                )
            }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}
