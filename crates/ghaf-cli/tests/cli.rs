//! End-to-end tests of the `ghaf` binary: a real server as a child process on 127.0.0.1, and
//! client commands run against it with a profile directory in a temporary directory.
//!
//! Every wait is bounded, and child servers are killed by a guard when a test ends or fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for a server to become ready and for one client command to finish.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

const BINARY: &str = env!("CARGO_BIN_EXE_ghaf");

/// Builds a `ghaf` command that inherits no `GHAF_*` variables and no `RUST_LOG`.
fn ghaf(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        let is_ours = name
            .to_str()
            .is_some_and(|name| name.starts_with("GHAF_") || name == "RUST_LOG");
        if is_ours {
            command.env_remove(&name);
        }
    }
    command
}

/// Result of a finished command.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Describes the command's result for assertion messages.
    fn describe(&self) -> String {
        format!(
            "exit status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` to completion, killing it after [`WAIT_LIMIT`].
fn run_bounded(command: Command) -> Finished {
    run_bounded_for(command, WAIT_LIMIT)
}

/// Runs `command` to completion, killing it after `limit`.
fn run_bounded_for(mut command: Command, limit: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ghaf");
    let stdout = read_all_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_all_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll ghaf") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {} s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all_in_background(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Sends `GET path` and returns the response status, or `None` when no server responds.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A `ghaf server` child process, killed by PID when dropped.
struct ServerProcess {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `ghaf server` on `data_dir` and waits until `/readyz` responds 200.
    fn start(data_dir: &Path) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = ghaf(&[
            "server",
            "--data-dir",
            path_str(data_dir),
            "--listen",
            &listen,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ghaf server");
        let stdout = collect_lines(child.stdout.take().expect("piped stdout"));
        let stderr = collect_lines(child.stderr.take().expect("piped stderr"));
        let mut server = Self {
            child,
            port,
            stdout,
            stderr,
        };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT_LIMIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                panic!(
                    "ghaf server exited with {status} before it was ready\n--- stderr ---\n{}",
                    self.stderr.lock().expect("stderr lock")
                );
            }
            if http_status(self.port, "/readyz") == Some(200) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ghaf server on port {} was not ready within {} s\n--- stderr ---\n{}",
            self.port,
            WAIT_LIMIT.as_secs(),
            self.stderr.lock().expect("stderr lock")
        );
    }

    /// Returns the one-time admin token from the bootstrap message on stdout.
    ///
    /// The server prints the message before it starts listening, so it is complete once
    /// `/readyz` responds; the short wait covers the reader thread.
    fn bootstrap_token(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stdout = self.stdout();
            let token = stdout.lines().find_map(|line| {
                line.split_once("--token ")
                    .map(|(_, token)| token.trim().to_owned())
            });
            if let Some(token) = token {
                return token;
            }
            assert!(
                Instant::now() < deadline,
                "no bootstrap token on the server's stdout:\n{stdout}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // `Child::kill` signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let collected = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&collected);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().expect("output lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    collected
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Runs a client command with profiles stored in `config_dir`.
fn client(config_dir: &Path, args: &[&str]) -> Finished {
    let mut command = ghaf(args);
    command.env("GHAF_CONFIG_DIR", config_dir);
    run_bounded(command)
}

/// Asserts that the command exited with 0 and returns its stdout.
fn expect_success(finished: &Finished, what: &str) -> String {
    assert_eq!(finished.code(), Some(0), "{what}: {}", finished.describe());
    finished.stdout.clone()
}

#[test]
fn server_login_and_commands() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let config_dir: PathBuf = temp.path().join("config");

    let server = ServerProcess::start(&data_dir);
    let token = server.bootstrap_token();
    assert!(token.starts_with("ghaf_"), "{token}");

    let login = client(
        &config_dir,
        &["login", "--url", &server.url(), "--token", &token],
    );
    let stdout = expect_success(&login, "login");
    assert!(stdout.contains("admin"), "{stdout}");
    let profiles = std::fs::read_to_string(config_dir.join("profiles.toml")).unwrap();
    assert!(profiles.contains(&server.url()), "{profiles}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(config_dir.join("profiles.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let whoami = client(&config_dir, &["whoami"]);
    let stdout = expect_success(&whoami, "whoami");
    assert!(stdout.contains("tenant_admin"), "{stdout}");

    let list = client(&config_dir, &["projects", "list"]);
    let stdout = expect_success(&list, "projects list");
    assert!(stdout.contains("default"), "{stdout}");

    let create = client(
        &config_dir,
        &[
            "projects",
            "create",
            "fraud",
            "--description",
            "Fraud models",
        ],
    );
    let stdout = expect_success(&create, "projects create");
    assert!(stdout.contains("fraud"), "{stdout}");

    let json = client(&config_dir, &["--output", "json", "projects", "list"]);
    let stdout = expect_success(&json, "projects list as JSON");
    let parsed: serde_json::Value =
        serde_json::from_str(&stdout).expect("projects list prints JSON");
    let names: Vec<&str> = parsed["projects"]
        .as_array()
        .expect("a projects array")
        .iter()
        .filter_map(|project| project["name"].as_str())
        .collect();
    assert!(names.contains(&"default"), "{names:?}");
    assert!(names.contains(&"fraud"), "{names:?}");

    let issue = client(
        &config_dir,
        &[
            "tokens",
            "create",
            "ci",
            "--project",
            "fraud",
            "--max-role",
            "viewer",
        ],
    );
    let stdout = expect_success(&issue, "tokens create");
    assert!(stdout.contains("viewer"), "{stdout}");
    let ci_token = stdout
        .split_whitespace()
        .find(|word| word.starts_with("ghaf_"))
        .expect("the token secret is printed")
        .to_owned();

    let scoped = client(&config_dir, &["--token", &ci_token, "projects", "list"]);
    let stdout = expect_success(&scoped, "projects list with the project-scoped token");
    assert!(stdout.contains("fraud"), "{stdout}");
    assert!(!stdout.contains("default"), "{stdout}");

    let verify = client(&config_dir, &["audit", "verify"]);
    let stdout = expect_success(&verify, "audit verify");
    assert!(stdout.contains("yes"), "{stdout}");

    let audit = client(
        &config_dir,
        &[
            "audit",
            "list",
            "--actor",
            "admin",
            "--action",
            "projects.create",
            "--all",
        ],
    );
    let stdout = expect_success(&audit, "audit list");
    assert!(stdout.contains("projects.create"), "{stdout}");

    let bad = client(
        &config_dir,
        &["--token", "ghaf_not_a_token", "projects", "list"],
    );
    assert_eq!(bad.code(), Some(1), "{}", bad.describe());
    assert!(bad.stderr.contains("unauthenticated"), "{}", bad.describe());
    assert!(bad.stderr.starts_with("error: "), "{}", bad.describe());
    assert!(bad.stderr.contains("request id: "), "{}", bad.describe());

    let missing = client(&config_dir, &["projects", "get", "nope"]);
    assert_eq!(missing.code(), Some(1), "{}", missing.describe());
    assert!(
        missing.stderr.contains("not_found"),
        "{}",
        missing.describe()
    );

    drop(server);
    let restarted = ServerProcess::start(&data_dir);
    let relogin = client(
        &config_dir,
        &["login", "--url", &restarted.url(), "--token", &token],
    );
    expect_success(&relogin, "login after restart");

    let list = client(&config_dir, &["projects", "list"]);
    let stdout = expect_success(&list, "projects list after restart");
    assert!(stdout.contains("fraud"), "{stdout}");
    let restart_stdout = restarted.stdout();
    assert!(
        !restart_stdout.contains("ghaf_"),
        "a token was printed again:\n{restart_stdout}"
    );
    assert!(!restart_stdout.contains("Admin token"), "{restart_stdout}");
}

#[test]
fn print_config_shows_defaults() {
    let finished = run_bounded(ghaf(&["server", "--print-config"]));
    let stdout = expect_success(&finished, "server --print-config");
    assert!(stdout.contains("listen = \"127.0.0.1:8080\""), "{stdout}");
    assert!(stdout.contains("[bootstrap]"), "{stdout}");
    assert!(stdout.contains("tenant = \"default\""), "{stdout}");
}

#[test]
fn closed_stdout_exits_quietly() {
    let mut child = ghaf(&["server", "--print-config"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ghaf");
    // Closes the read end before the child prints, as `ghaf ... | head -0` does.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for ghaf");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn print_config_applies_flags() {
    let finished = run_bounded(ghaf(&[
        "server",
        "--print-config",
        "--listen",
        "127.0.0.1:9999",
    ]));
    let stdout = expect_success(&finished, "server --print-config --listen");
    assert!(stdout.contains("listen = \"127.0.0.1:9999\""), "{stdout}");
}

#[test]
fn unknown_config_key_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("ghaf.toml");
    std::fs::write(&file, "[http]\nmax_body_byte = 5\n").unwrap();

    let finished = run_bounded(ghaf(&[
        "server",
        "--config",
        path_str(&file),
        "--print-config",
    ]));

    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished.stderr.contains("max_body_byte"),
        "{}",
        finished.describe()
    );
}

#[test]
fn missing_config_file_exits_2() {
    let finished = run_bounded(ghaf(&["server", "--config", "/nonexistent/ghaf.toml"]));
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished.stderr.contains("/nonexistent/ghaf.toml"),
        "{}",
        finished.describe()
    );
}

#[test]
fn init_prints_token_once() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");

    let first = run_bounded(ghaf(&["init", "--data-dir", path_str(&data_dir)]));
    let stdout = expect_success(&first, "first init");
    assert!(stdout.contains("ghaf_"), "{stdout}");

    let second = run_bounded(ghaf(&["init", "--data-dir", path_str(&data_dir)]));
    let stdout = expect_success(&second, "second init");
    assert!(stdout.contains("already has a tenant"), "{stdout}");
    assert!(!stdout.contains("ghaf_"), "{stdout}");
}

#[test]
fn missing_token_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let finished = client(temp.path(), &["projects", "list"]);
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished.stderr.contains("ghaf login"),
        "{}",
        finished.describe()
    );
}

#[test]
fn unknown_profile_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let finished = client(temp.path(), &["--profile", "prod", "whoami"]);
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished.stderr.contains("\"prod\""),
        "{}",
        finished.describe()
    );
}

#[test]
fn unreachable_server_exits_1() {
    let temp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let finished = client(
        temp.path(),
        &["--url", &url, "--token", "ghaf_x_y", "whoami"],
    );
    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr.contains("not reachable"),
        "{}",
        finished.describe()
    );
    assert!(
        finished.stderr.contains("ghaf server"),
        "{}",
        finished.describe()
    );
}

#[test]
fn invalid_duration_is_usage_error() {
    let temp = tempfile::tempdir().unwrap();
    let finished = client(
        temp.path(),
        &[
            "--token",
            "t",
            "tokens",
            "create",
            "ci",
            "--expires-in",
            "30",
        ],
    );
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(finished.stderr.contains("unit"), "{}", finished.describe());
}

/// Rows per table that the quickstart tests ingest: enough July-December traffic for drift
/// to show and for a canary to collect requests and labels, in well under a minute.
const QUICKSTART_SAMPLE_ROWS: &str = "20000";

/// Upper bound for one sampled quickstart run.
const QUICKSTART_LIMIT: Duration = Duration::from_secs(240);

/// Runs a sampled quickstart on `data_dir`, writing its summary to `summary`.
fn run_quickstart(data_dir: &Path, summary: &Path) -> Finished {
    run_bounded_for(
        ghaf(&[
            "quickstart",
            "--sample",
            QUICKSTART_SAMPLE_ROWS,
            "--data-dir",
            path_str(data_dir),
            "--summary-json",
            path_str(summary),
        ]),
        QUICKSTART_LIMIT,
    )
}

fn read_summary(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the quickstart wrote its summary");
    serde_json::from_str(&text).expect("the summary is JSON")
}

#[test]
fn quickstart_runs_every_stage() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let summary_path = temp.path().join("summary.json");

    let finished = run_quickstart(&data_dir, &summary_path);
    let stdout = expect_success(&finished, "quickstart");
    let summary = read_summary(&summary_path);

    assert!(stdout.contains("All steps passed"), "{stdout}");
    assert!(stdout.contains("all intact"), "{stdout}");

    // Ingestion: five new versions, with the problems of the data and how they were handled.
    for table in ["flights", "weather", "planes", "airports", "airlines"] {
        assert!(
            stdout.contains(&format!("{table:<9} v1 (new version)")),
            "{table} was not ingested as a new version:\n{stdout}"
        );
    }
    let tables = summary["tables"].as_array().unwrap();
    let flights = tables.iter().find(|t| t["name"] == "flights").unwrap();
    assert!(
        flights["rows_accepted"].as_u64().unwrap() > 10_000,
        "{flights}"
    );
    let cancelled = flights["null_counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "dep_time")
        .unwrap_or_else(|| panic!("no cancelled flights kept as null: {flights}"));
    assert!(cancelled["nulls"].as_u64().unwrap() > 0, "{cancelled}");
    let weather = tables.iter().find(|t| t["name"] == "weather").unwrap();
    assert!(
        weather["null_counts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["column"] == "wind_gust"),
        "no missing weather readings kept as null: {weather}"
    );
    for table in tables {
        let quarantined = table["rows_quarantined"].as_u64().unwrap();
        let reasons = table["quarantine_reasons"].as_array().unwrap();
        assert_eq!(
            quarantined > 0,
            !reasons.is_empty(),
            "quarantined rows without reasons: {table}"
        );
    }
    assert!(
        stdout.contains("flights have no departure time (cancelled)"),
        "{stdout}"
    );

    // Feature store and the training job.
    assert_eq!(summary["entity_table"]["dataset"], "flight-entities");
    assert!(summary["training_set"]["version"].as_i64().unwrap() >= 1);
    assert!(
        stdout.contains("built the point-in-time training set"),
        "{stdout}"
    );

    // The registered model is signed.
    assert_eq!(summary["model"]["initial_version"], 1);
    let signing_key = summary["model"]["signing_key_id"].as_str().unwrap_or("");
    assert!(!signing_key.is_empty(), "{}", summary["model"]);
    assert!(summary["model"]["manifest_files"].as_u64().unwrap() > 0);

    // The endpoint served July to December, and labels were posted for it.
    let replay = &summary["replay"];
    assert!(replay["rows"].as_u64().unwrap() > 5_000, "{replay}");
    assert!(replay["labels"].as_u64().unwrap() > 0, "{replay}");
    let served = replay["served_versions"].as_array().unwrap();
    assert!(served.contains(&serde_json::json!(1)), "{replay}");
    let aucs = summary["auc"].as_array().unwrap();
    let first_version_auc = aucs
        .iter()
        .filter(|a| a["version"] == 1)
        .filter_map(|a| a["auc"].as_f64())
        .fold(f64::NAN, f64::max);
    assert!(first_version_auc > 0.5, "{aucs:?}");

    // Drift raised an alert, whose action started a retraining job that the gate judged.
    let alerts = summary["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty(), "no drift alert: {}", summary["weeks"]);
    assert!(alerts[0]["job_id"].is_string(), "{}", alerts[0]);
    let retraining = &summary["retraining"];
    assert!(retraining["promoted"].is_boolean(), "{retraining}");

    // The canary records decisions on a server with traffic policies, once a retrained
    // version passed the gate.
    if summary["endpoint"]["canary_policy"] == true && retraining["promoted"] == true {
        let history = summary["canary_history"].as_array().unwrap();
        let decisions = history
            .iter()
            .filter(|entry| {
                entry["action"]
                    .as_str()
                    .is_some_and(|action| action.starts_with("endpoints.rollout."))
            })
            .count();
        assert!(decisions > 0, "no canary decision recorded: {history:?}");
    }

    // Lineage from the newest prediction back to the shipped flights file.
    let datasets = summary["lineage"]["datasets"].as_array().unwrap();
    let source = datasets
        .iter()
        .find(|d| d["dataset"] == "flights")
        .unwrap_or_else(|| panic!("the lineage does not reach flights: {datasets:?}"));
    assert!(
        source["source"]
            .as_str()
            .unwrap()
            .contains("flights.csv.gz"),
        "{source}"
    );
}

#[test]
fn quickstart_reuses_its_data_dir() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let first_summary = temp.path().join("first.json");
    let second_summary = temp.path().join("second.json");
    let first = run_quickstart(&data_dir, &first_summary);
    expect_success(&first, "first quickstart");

    let second = run_quickstart(&data_dir, &second_summary);
    let stdout = expect_success(&second, "second quickstart");
    let summary = read_summary(&second_summary);

    assert!(
        stdout.contains("reused the store of an earlier quickstart"),
        "{stdout}"
    );
    assert!(stdout.contains("reused project quickstart"), "{stdout}");
    for table in ["flights", "weather", "planes", "airports", "airlines"] {
        assert!(
            stdout.contains(&format!(
                "{table:<9} v1 (same content as the existing version, reused)"
            )),
            "{table} got a new version on the second run:\n{stdout}"
        );
    }
    assert!(stdout.contains("definitions unchanged"), "{stdout}");
    assert_eq!(summary["entity_table"]["version"], 1);
    assert!(
        stdout.contains("holds champion from an earlier quickstart"),
        "{stdout}"
    );
    assert!(stdout.contains("reused endpoint flights-delay"), "{stdout}");
    assert_eq!(summary["replay"]["reused"], true);
    assert!(stdout.contains("All steps passed"), "{stdout}");
}

#[test]
fn quickstart_rejects_used_data_dir() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let init = run_bounded(ghaf(&["init", "--data-dir", path_str(&data_dir)]));
    expect_success(&init, "init");

    let finished = run_bounded(ghaf(&["quickstart", "--data-dir", path_str(&data_dir)]));

    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr.contains("already contains a Ghaf store"),
        "{}",
        finished.describe()
    );
}

#[test]
fn runs_and_models_commands() {
    let temp = tempfile::tempdir().unwrap();
    let config_dir: PathBuf = temp.path().join("config");
    let server = ServerProcess::start(&temp.path().join("data"));
    let token = server.bootstrap_token();
    let login = client(
        &config_dir,
        &["login", "--url", &server.url(), "--token", &token],
    );
    expect_success(&login, "login");

    let runs = client(
        &config_dir,
        &[
            "runs",
            "list",
            "--filter",
            "metrics.acc > 0.5",
            "--order-by",
            "metrics.acc DESC",
        ],
    );
    expect_success(&runs, "runs list");
    assert!(
        runs.stderr.contains("No runs in project default match."),
        "{}",
        runs.describe()
    );

    let invalid = client(
        &config_dir,
        &[
            "runs",
            "list",
            "--filter",
            "metrics.acc > 0.5 OR params.a = 'b'",
        ],
    );
    assert_ne!(invalid.code(), Some(0), "{}", invalid.describe());
    assert!(invalid.stderr.contains("OR"), "{}", invalid.describe());

    let models = client(&config_dir, &["--output", "json", "models", "list"]);
    let stdout = expect_success(&models, "models list");
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("models list JSON");
    assert_eq!(parsed["models"], serde_json::json!([]));

    let alias = client(
        &config_dir,
        &["models", "alias", "set", "fraud", "champion", "1"],
    );
    assert_ne!(alias.code(), Some(0), "{}", alias.describe());
    assert!(alias.stderr.contains("not found"), "{}", alias.describe());
}
