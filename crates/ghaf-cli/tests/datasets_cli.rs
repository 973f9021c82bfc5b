//! `ghaf datasets` end to end: a real server as a child process on a free 127.0.0.1 port,
//! the shipped airlines table created from its schema file, ingested, and read back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ghaf");

/// A `ghaf server` child process, killed on drop.
struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ghaf(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("GHAF_") || name == "RUST_LOG")
        {
            command.env_remove(&name);
        }
    }
    command
}

fn start_server(data_dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = ghaf(&["server", "--listen", &listen, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ghaf server");
    // The bootstrap prints the admin token once on stdout.
    let stdout = child.stdout.take().unwrap();
    let token = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .strip_prefix("ghaf_")
                .map(|rest| format!("ghaf_{rest}"))
        })
        .expect("the server prints an admin token");
    let server = Server {
        child,
        url: format!("http://{listen}"),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn run(server: &Server, args: &[&str]) -> Output {
    let output = ghaf(args)
        .args(["--url", &server.url, "--token", &server.token])
        .output()
        .expect("run ghaf");
    assert!(
        output.status.success(),
        "ghaf {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/nycflights13")
        .join(name)
}

#[test]
fn datasets_create_ingest_and_profile() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let schema = data_file("airlines.schema.yaml");
    let input = data_file("airlines.csv.gz");

    run(
        &server,
        &[
            "datasets",
            "create",
            "airlines",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let ingested = run(
        &server,
        &[
            "datasets",
            "ingest",
            "airlines",
            input.to_str().unwrap(),
            "--null",
            "NA",
        ],
    );
    let text = String::from_utf8_lossy(&ingested.stdout);
    assert!(
        text.contains("Created version 1 of airlines: 16 rows stored, 0 rows quarantined."),
        "{text}"
    );

    let again = run(
        &server,
        &[
            "datasets",
            "ingest",
            "airlines",
            input.to_str().unwrap(),
            "--null",
            "NA",
        ],
    );
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("already has this content"), "{text}");

    let profile = run(
        &server,
        &["datasets", "profile", "airlines", "1", "--output", "json"],
    );
    let body: serde_json::Value = serde_json::from_slice(&profile.stdout).unwrap();
    assert_eq!(body["row_count"], 16);
    assert_eq!(body["profile"]["columns"][0]["distinct_estimate"], 16);

    let versions = run(&server, &["datasets", "versions", "airlines"]);
    assert!(String::from_utf8_lossy(&versions.stdout).contains("upload:airlines.csv.gz"));

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "carrier,name\nXX,Good\nx,bad code\n").unwrap();
    let rejected = ghaf(&["datasets", "ingest", "airlines", bad.to_str().unwrap()])
        .args(["--url", &server.url, "--token", &server.token])
        .output()
        .unwrap();
    assert!(!rejected.status.success());
    let message = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        message.contains("rejected by the acceptance policy"),
        "{message}"
    );
}
