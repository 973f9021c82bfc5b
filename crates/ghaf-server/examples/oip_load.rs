//! HTTP/1.1 load generator for Open Inference Protocol REST endpoints (used by bench/serving.py).
//!
//! ```text
//! oip_load URL BODY_FILE [-H 'name: value']... --requests N
//! oip_load URL BODY_FILE [-H 'name: value']... --connections C --seconds S
//! ```
//!
//! `--requests N` sends 200 warm-up requests and then N sequential POSTs on one keep-alive
//! connection and reports p50 and p99 latency in microseconds. `--connections C --seconds S`
//! keeps C keep-alive connections busy for S seconds and reports requests per second. Both
//! modes run on a current-thread tokio runtime, so the client uses at most one CPU. A response
//! whose status is not 200 counts as an error; a broken connection counts as one error and is
//! reopened. The result is one JSON line on stdout.
//!
//! The client writes HTTP/1.1 by hand on a `tokio::net::TcpStream`: ghaf-server's dependencies
//! do not include an HTTP client, and only responses with `Content-Length` are read (both
//! Ghaf and MLServer send it for JSON). A chunked response is reported as an error.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WARM_UP: usize = 200;

#[derive(Parser)]
#[command(about = "HTTP/1.1 load generator for Open Inference Protocol REST endpoints")]
struct Args {
    /// Target, such as http://127.0.0.1:8080/v2/models/bc/infer (plain HTTP only).
    url: String,
    /// File holding the JSON request body.
    body: std::path::PathBuf,
    /// Extra request header, `name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Sequential latency run of this many requests on one connection.
    #[arg(long, conflicts_with_all = ["connections", "seconds"])]
    requests: Option<usize>,
    /// Concurrent keep-alive connections of the saturation run.
    #[arg(long, requires = "seconds")]
    connections: Option<usize>,
    /// Length of the saturation run in seconds.
    #[arg(long, requires = "connections")]
    seconds: Option<f64>,
}

struct Target {
    address: String,
    request: Vec<u8>,
}

impl Target {
    fn new(url: &str, body: &[u8], headers: &[String]) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("URL {url:?} must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("URL {url:?} is missing a host");
        }
        let address = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\n",
            body.len()
        );
        let mut has_content_type = false;
        for header in headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("header {header:?} is not `name: value`"))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("header {header:?} has an invalid name");
            }
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
                bail!("header {name:?} is set by oip_load itself, so remove it from -H");
            }
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            head.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        if !has_content_type {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        Ok(Self { address, request })
    }
}

struct Connection {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(target: &Target) -> Result<Self> {
        let stream = TcpStream::connect(&target.address)
            .await
            .with_context(|| format!("cannot connect to {}", target.address))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends the request and reads the whole response, then returns its status code.
    async fn send(&mut self, target: &Target) -> Result<u16> {
        self.stream.get_mut().write_all(&target.request).await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("connection closed before the status line");
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("invalid status line {:?}", self.line.trim_end()))?;

        let mut length = None;
        let mut close = false;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed inside the response headers");
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(
                        value
                            .parse::<usize>()
                            .with_context(|| format!("invalid Content-Length {value:?}"))?,
                    );
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!(
                        "response uses Transfer-Encoding {value:?}, but oip_load reads only Content-Length bodies"
                    );
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }

        let length = length.context("response is missing Content-Length")?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        if close {
            bail!("server closed the keep-alive connection (status {status})");
        }
        Ok(status)
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((q / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1e6
}

async fn latency_run(target: &Target, requests: usize) -> Result<serde_json::Value> {
    let mut connection = Connection::open(target).await?;
    for _ in 0..WARM_UP {
        let status = connection.send(target).await?;
        if status != 200 {
            bail!("warm-up request returned status {status}");
        }
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0u64;
    for _ in 0..requests {
        let started = Instant::now();
        let status = connection.send(target).await?;
        latencies.push(started.elapsed());
        if status != 200 {
            errors += 1;
        }
    }
    latencies.sort_unstable();
    Ok(serde_json::json!({
        "mode": "latency",
        "requests": requests,
        "p50_us": percentile(&latencies, 50.0),
        "p99_us": percentile(&latencies, 99.0),
        "errors": errors,
    }))
}

async fn saturate_connection(target: &Target, deadline: Instant) -> (u64, u64) {
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut connection = None;
    while Instant::now() < deadline {
        if connection.is_none() {
            match Connection::open(target).await {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    eprintln!("{error:#}");
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        match open.send(target).await {
            Ok(200) => ok += 1,
            Ok(_) => errors += 1,
            Err(error) => {
                eprintln!("{error:#}");
                errors += 1;
                connection = None;
            }
        }
    }
    (ok, errors)
}

async fn saturation_run(
    target: &Target,
    connections: usize,
    seconds: f64,
) -> Result<serde_json::Value> {
    if connections == 0 || !(seconds > 0.0 && seconds.is_finite()) {
        bail!("--connections must be at least 1 and --seconds above 0");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let results =
        futures::future::join_all((0..connections).map(|_| saturate_connection(target, deadline)))
            .await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok: u64 = results.iter().map(|(ok, _)| ok).sum();
    let errors: u64 = results.iter().map(|(_, errors)| errors).sum();
    Ok(serde_json::json!({
        "mode": "saturation",
        "connections": connections,
        "seconds": elapsed,
        "requests": ok + errors,
        "throughput_rps": ok as f64 / elapsed,
        "errors": errors,
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let body = std::fs::read(&args.body)
        .with_context(|| format!("cannot read the body file {}", args.body.display()))?;
    let target = Target::new(&args.url, &body, &args.headers)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match (args.requests, args.connections, args.seconds) {
            (Some(requests), None, None) if requests > 0 => latency_run(&target, requests).await,
            (None, Some(connections), Some(seconds)) => {
                saturation_run(&target, connections, seconds).await
            }
            _ => bail!("give either --requests N (N > 0) or --connections C --seconds S"),
        }
    })?;
    println!("{result}");
    Ok(())
}
