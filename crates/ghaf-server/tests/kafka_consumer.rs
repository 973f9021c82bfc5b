//! A configured `[[ingest.kafka]]` consumer, run by the server against a real Kafka-protocol
//! broker (tansu) on a free 127.0.0.1 port: produced messages become dataset segments and the
//! lag metric reaches zero.
//!
//! The broker binary is `GHAF_TANSU`, else the one `tests/kafka/setup.sh` installs under
//! `~/.cache/ghaf-tools`. Without it the test fails, unless `GHAF_SKIP_PEER_TESTS=1`.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use ghaf_ingest::testing::KafkaTestBroker;
use ghaf_server::ServerConfig;
use ghaf_server::config::KafkaConsumerSettings;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_kafka_consumer_fills_dataset() {
    let Some(broker) = KafkaTestBroker::start().await else {
        return;
    };
    broker.create_topic("clicks", 1);
    let address = broker.address.clone();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .create()
        .unwrap();
    for id in 1..=120 {
        let payload = serde_json::json!({"id": id, "page": "/home"}).to_string();
        producer
            .send(
                FutureRecord::to("clicks")
                    .key(&id.to_string())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .expect("message delivered");
    }

    let mut config = ServerConfig::default();
    config.ingest.kafka.push(KafkaConsumerSettings {
        brokers: address.clone(),
        topics: vec!["clicks".into()],
        group_id: "ghaf-clicks".into(),
        tenant: "default".into(),
        project: "default".into(),
        dataset: "clicks".into(),
        batch_size: 50,
        max_wait_ms: 200,
        session_timeout_seconds: 10,
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

    let deadline = Instant::now() + Duration::from_secs(90);
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
