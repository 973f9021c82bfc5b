//! NVIDIA's Triton client library (`tritonclient[http,grpc]` 2.73.0) against a Ghaf server
//! on a free 127.0.0.1 port, with an endpoint that serves a model trained by ghaf-train.
//!
//! The client lives in a venv outside the clone that `tests/tritonclient/setup.sh` creates;
//! `GHAF_TRITONCLIENT_VENV` overrides its location. Without the venv the test fails and
//! names the setup script, unless `GHAF_SKIP_PEER_TESTS=1` is set.

mod common;
mod oip_support;

use std::path::PathBuf;
use std::time::Duration;

use common::TestApp;
use oip_support::ENDPOINT;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("GHAF_TRITONCLIENT_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home)
                .join(".cache")
                .join("ghaf-tritonclient-venv")
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
async fn tritonclient_http_and_grpc() {
    let python = venv_python();
    if !python.exists() {
        if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no tritonclient venv at {}", python.display());
            return;
        }
        panic!(
            "no tritonclient venv at {}: run tests/tritonclient/setup.sh, or set \
             GHAF_SKIP_PEER_TESTS=1 to skip this test",
            python.display()
        );
    }

    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let rows = [[0.9, 30.0], [-0.4, 12.0], [0.6, 1.0], [0.1, 49.0]];
    let expected = deployed.predict(&rows);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ghaf_server::serve_with(
        app.state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    let script = repo_root().join("tests/tritonclient/oip_client.py");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .env("GHAF_OIP_ADDRESS", address.to_string())
        .env("GHAF_OIP_TOKEN", &app.admin_token)
        .env("GHAF_OIP_MODEL", ENDPOINT)
        .env("GHAF_OIP_VERSION", deployed.version.to_string())
        .env("GHAF_OIP_INPUT", &deployed.input)
        .env("GHAF_OIP_OUTPUT", &deployed.output)
        .env("GHAF_OIP_ROWS", serde_json::to_string(&rows).unwrap())
        .env(
            "GHAF_OIP_EXPECTED",
            serde_json::to_string(&expected).unwrap(),
        )
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the tritonclient script timed out after 300 s")
        .expect("cannot start the venv's python");

    let _ = stop.send(());
    let _ = server.await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
