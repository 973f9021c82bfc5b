//! `ghaf features` end to end: a real server as a child process on a free 127.0.0.1 port,
//! the shipped weather table ingested, a view applied from a definitions directory,
//! materialised, read online and joined into a training set.

use std::io::Write;
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

const DEFINITIONS: &str = "
entities:
  - {name: origin, value_type: string}
feature_views:
  - name: origin_weather
    entities: [origin]
    source: {dataset: weather}
    event_time: time_hour
    ttl: 3h
    features:
      - {name: temp}
      - {name: windy, expression: \"wind_speed > 20\"}
";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn features_apply_materialize_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let schema = data_file("weather.schema.yaml");
    let input = data_file("weather.csv.gz");
    run(
        &server,
        &[
            "datasets",
            "create",
            "weather",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    run(
        &server,
        &[
            "datasets",
            "ingest",
            "weather",
            input.to_str().unwrap(),
            "--null",
            "NA",
            "--null",
            "",
        ],
    );

    let definitions = dir.path().join("features");
    std::fs::create_dir_all(&definitions).unwrap();
    std::fs::File::create(definitions.join("weather.yaml"))
        .unwrap()
        .write_all(DEFINITIONS.as_bytes())
        .unwrap();
    let definitions = definitions.to_str().unwrap();

    // Without a terminal and without --yes, apply prints the plan and stops.
    let unconfirmed = ghaf(&["features", "apply", definitions])
        .args(["--url", &server.url, "--token", &server.token])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!unconfirmed.status.success());
    assert!(
        stdout(&unconfirmed).contains("+ feature_view origin_weather v1"),
        "{}",
        stdout(&unconfirmed)
    );
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));

    let applied = run(&server, &["features", "apply", definitions, "--yes"]);
    assert!(
        stdout(&applied).contains("Applied 2 change(s)"),
        "{}",
        stdout(&applied)
    );
    let again = run(&server, &["features", "apply", definitions, "--plan-only"]);
    assert!(
        stdout(&again).contains("= feature_view origin_weather unchanged"),
        "{}",
        stdout(&again)
    );
    let listed = run(&server, &["features", "list"]);
    assert!(
        stdout(&listed).contains("origin_weather"),
        "{}",
        stdout(&listed)
    );

    let materialized = run(
        &server,
        &[
            "features",
            "materialize",
            "origin_weather",
            "--end",
            "2013-01-01T12:00:00Z",
        ],
    );
    assert!(
        stdout(&materialized).contains("3 key(s) written"),
        "{}",
        stdout(&materialized)
    );

    // JFK's 12:00 observation on 2013-01-01 has temp 39.02 in weather.csv.gz; the reads
    // happen now, years after, so the 3h TTL withholds the values.
    let online = run(
        &server,
        &[
            "--output",
            "json",
            "features",
            "get-online",
            "--features",
            "origin_weather:temp",
            "--entity",
            "origin=JFK,XXX",
        ],
    );
    let body: serde_json::Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(
        body["metadata"]["feature_names"],
        serde_json::json!(["origin", "temp"])
    );
    assert_eq!(
        body["results"][1]["statuses"],
        serde_json::json!(["OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );

    let training = run(
        &server,
        &[
            "features",
            "training-set",
            "--entities",
            "weather@v1",
            "--features",
            "origin_weather:temp,origin_weather:windy",
            "--timestamp-column",
            "time_hour",
            "--output-dataset",
            "weather_training",
            "--full-names",
        ],
    );
    let text = stdout(&training);
    assert!(text.contains("as weather_training@v1"), "{text}");
    assert!(text.contains("origin_weather__windy"), "{text}");
}
