//! The real MLflow Python client against a Ghaf server on a free 127.0.0.1 port.
//!
//! The client (`mlflow==3.17.2` with scikit-learn) lives in a venv outside the clone that
//! `tests/mlflow/setup.sh` creates; `GHAF_MLFLOW_VENV` overrides its location. Without the
//! venv the test fails and names the setup script, unless `GHAF_SKIP_PEER_TESTS=1` is set.

use std::path::PathBuf;
use std::time::Duration;

use ghaf_server::ServerConfig;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("GHAF_MLFLOW_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache").join("ghaf-venv")
        },
        PathBuf::from,
    );
    venv.join("bin").join("python")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_client_flow() {
    let python = venv_python();
    if !python.exists() {
        if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no MLflow client venv at {}", python.display());
            return;
        }
        panic!(
            "no MLflow client venv at {}: run tests/mlflow/setup.sh, or set \
             GHAF_SKIP_PEER_TESTS=1 to skip this test",
            python.display()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let state = ghaf_server::open_state(&config).await.unwrap();
    let created = ghaf_server::bootstrap(&state)
        .await
        .unwrap()
        .expect("empty store bootstraps");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ghaf_server::serve_with(state, listener, async move {
        let _ = stopped.await;
    }));

    let script = repo_root().join("tests/mlflow/client_flow.py");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .current_dir(dir.path())
        .env("MLFLOW_TRACKING_URI", format!("http://{address}"))
        .env("MLFLOW_TRACKING_TOKEN", &created.token.secret)
        // A failed call should fail the test at once, not after minutes of retries.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the MLflow client script timed out after 600 s")
        .expect("cannot start the venv's python");

    let _ = stop.send(());
    let _ = server.await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "MLflow client script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
