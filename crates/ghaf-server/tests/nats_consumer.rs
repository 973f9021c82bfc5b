//! A configured `[[ingest.nats]]` consumer, run by the server against a real nats-server on a
//! free 127.0.0.1 port: published messages become a dataset segment and the lag metric
//! reaches zero.
//!
//! The server binary is `GHAF_NATS_SERVER`, else the one `tests/nats/setup.sh` installs
//! under `~/.cache/ghaf-tools`, else `nats-server` on the PATH.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::TestApp;
use ghaf_server::ServerConfig;
use ghaf_server::config::NatsConsumerSettings;

struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("GHAF_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/ghaf-tools/nats-server-2.15.1/nats-server");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("nats-server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_consumer_fills_dataset() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let binary = server_binary();
    let _server = NatsServer(
        Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error}; run tests/nats/setup.sh",
                    binary.display()
                )
            }),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        if let Ok(client) = async_nats::connect(&url).await {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not start on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let context = jetstream::new(client);
    context
        .create_stream(jetstream::stream::Config {
            name: "CLICKS".into(),
            subjects: vec!["clicks.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for id in 1..=120 {
        let payload = serde_json::json!({"id": id, "page": "/home"}).to_string();
        context
            .publish("clicks.web", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut config = ServerConfig::default();
    config.ingest.nats.push(NatsConsumerSettings {
        url: url.clone(),
        stream: "CLICKS".into(),
        subject: "clicks.>".into(),
        durable: "ghaf-clicks".into(),
        tenant: "default".into(),
        project: "default".into(),
        dataset: "clicks".into(),
        batch_size: 50,
        max_wait_ms: 200,
        ack_wait_seconds: 5,
    });
    let app = TestApp::with_config(config).await;
    let schema = serde_json::json!({
        "columns": [{"name": "id", "type": "integer", "nullable": false}, {"name": "page", "type": "string"}],
        "unique_key": ["id"],
    });
    let created = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "clicks", "schema": schema})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(ghaf_server::serve_with(
        app.state.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let versions = app
            .call(
                "GET",
                "/api/v1/projects/default/datasets/clicks/versions",
                Some(&app.admin_token),
                None,
            )
            .await;
        let rows: u64 = versions.json()["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|version| version["row_count"].as_u64().unwrap())
            .sum();
        let metrics = app.call("GET", "/metrics", None, None).await.text();
        let drained =
            metrics.contains("ghaf_ingest_consumer_lag_messages{consumer=\"ghaf-clicks\"} 0");
        if rows == 120 && drained {
            break;
        }
        assert!(rows <= 120, "rows stored twice: {rows}");
        assert!(
            Instant::now() < deadline,
            "consumer stored {rows} of 120 rows; metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(());
    let _ = serving.await;
}
