//! NATS JetStream consumer against a real nats-server started on a free 127.0.0.1 port:
//! Ghaf is stopped mid-stream and restarted, and every valid message ends up stored exactly
//! once.
//!
//! The server binary is `GHAF_NATS_SERVER`, else the one `tests/nats/setup.sh` installs
//! under `~/.cache/ghaf-tools`, else `nats-server` on the PATH.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use async_nats::jetstream;
use ghaf_ingest::nats::{ConsumerTarget, NatsConsumer, NatsConsumerConfig};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const MESSAGES: i64 = 600;
const SCHEMA: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: score, type: float, min: 0}
unique_key: [id]
"#;

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

/// A nats-server child process, stopped on drop.
struct NatsServer {
    child: Child,
    url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(dir: &std::path::Path) -> NatsServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = server_binary();
    let child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start {}: {error}; run tests/nats/setup.sh or set GHAF_NATS_SERVER",
                binary.display()
            )
        });
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while async_nats::connect(&url).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not start on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    NatsServer { child, url }
}

fn config(url: &str) -> NatsConsumerConfig {
    NatsConsumerConfig {
        url: url.to_owned(),
        stream: "EVENTS".into(),
        subject: "events.>".into(),
        durable: "ghaf-events".into(),
        batch_size: 50,
        max_wait: Duration::from_millis(300),
        ack_wait: Duration::from_secs(2),
    }
}

/// Reads every stored id of the dataset, across all segments.
async fn stored_ids(h: &common::Harness) -> Vec<i64> {
    let dataset = h.dataset("events").await;
    let mut ids = Vec::new();
    for segment in h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap()
    {
        let digest = ghaf_ingest::IngestService::digest(&segment.content_digest).unwrap();
        let content = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(content)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            ids.extend(column.values().iter().copied());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_restart_loses_and_duplicates_nothing() {
    let h = common::harness().await;
    h.create("events", SCHEMA).await;
    let server = start_server(h.dir.path()).await;

    let client = async_nats::connect(&server.url).await.unwrap();
    let context = jetstream::new(client);
    context
        .create_stream(jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Every 20th message has a negative score and belongs in the dead-letter dataset.
    for id in 1..=MESSAGES {
        let score = if id % 20 == 0 { -1.0 } else { 0.5 };
        let payload = serde_json::json!({"id": id, "score": score}).to_string();
        context
            .publish("events.in", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let valid = MESSAGES - MESSAGES / 20;
    let target = ConsumerTarget {
        tenant: h.tenant.clone(),
        project: h.project.clone(),
        project_name: "p".into(),
        dataset: "events".into(),
    };

    // A batch committed but never acknowledged, as when Ghaf dies between the two steps.
    let first = NatsConsumer::new(h.service.clone(), target.clone(), config(&server.url));
    let consumer = first.connect().await.unwrap();
    let mut batch = consumer.fetch().max_messages(50).messages().await.unwrap();
    let mut body = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut batch).await {
        body.extend_from_slice(&message.unwrap().payload);
        body.push(b'\n');
    }
    let dataset = h.dataset("events").await;
    h.service
        .push(
            &dataset,
            "p",
            &body,
            ghaf_ingest::PushFormat::Ndjson,
            "test",
        )
        .await
        .unwrap();
    drop(consumer);

    // A consumer stopped mid-stream at an arbitrary point.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        first
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    running.abort();
    drop(stop);
    let _ = running.await;

    // Ghaf restarts: a new service on the same stores and the same durable consumer.
    let (service, _, _) = common::open(h.dir.path()).await;
    let second = NatsConsumer::new(service, target, config(&server.url));
    let lag = second.lag();
    let consumer = second.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        second.poll_batch(&consumer).await.unwrap();
        let mut info_consumer = consumer.clone();
        let info = info_consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer did not drain: {info:?}"
        );
    }
    assert_eq!(
        lag.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "lag after draining"
    );

    let ids = stored_ids(&h).await;
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no id is stored twice");
    assert_eq!(ids.len() as i64, valid, "every valid message is stored");
    assert!(
        unique.iter().all(|id| id % 20 != 0),
        "invalid messages are not stored"
    );

    let letters = h.dataset("events.dead-letter").await;
    let dead: u64 = h
        .service
        .store()
        .list_versions(&h.tenant, &letters.id)
        .await
        .unwrap()
        .iter()
        .map(|version| version.row_count)
        .sum();
    assert!(
        dead >= (MESSAGES / 20) as u64,
        "every invalid message is dead-lettered at least once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_dead_lettered_and_acked() {
    let h = common::harness().await;
    h.create("events", SCHEMA).await;
    let server = start_server(h.dir.path()).await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let context = jetstream::new(client);
    context
        .create_stream(jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let oversized = format!(
        "{{\"id\": 2, \"score\": 1, \"pad\": \"{}\"}}",
        "x".repeat(4096)
    );
    for payload in [r#"{"id": 1, "score": 1}"#.to_owned(), oversized] {
        context
            .publish("events.in", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let service = h.service.clone().with_limits(ghaf_ingest::ReadLimits {
        max_field_bytes: 1024,
        ..ghaf_ingest::ReadLimits::default()
    });
    let target = ConsumerTarget {
        tenant: h.tenant.clone(),
        project: h.project.clone(),
        project_name: "p".into(),
        dataset: "events".into(),
    };
    let mut settings = config(&server.url);
    settings.ack_wait = Duration::from_secs(1);
    let nats = NatsConsumer::new(service, target, settings);
    let consumer = nats.connect().await.unwrap();

    let outcome = nats.poll_batch(&consumer).await.unwrap().unwrap();

    assert_eq!(outcome.received, 2);
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.dead_lettered, 1);
    // Past the ack wait, nothing is redelivered: both messages were acknowledged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(nats.poll_batch(&consumer).await.unwrap().is_none());
    let mut info_consumer = consumer.clone();
    let info = info_consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
}
