//! Kafka consumer against a real Kafka-protocol broker (tansu) started on a free 127.0.0.1
//! port: valid, invalid and repeated messages are consumed, Ghaf's consumer is stopped
//! mid-stream twice and restarted, and every valid message ends up stored exactly once.
//!
//! The broker binary is `GHAF_TANSU`, else the one `tests/kafka/setup.sh` installs under
//! `~/.cache/ghaf-tools`. Without it the test fails, unless `GHAF_SKIP_PEER_TESTS=1`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use ghaf_ingest::kafka::{ConsumerTarget, KafkaConsumer, KafkaConsumerConfig};
use ghaf_ingest::testing::KafkaTestBroker;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "events";
const MESSAGES: i64 = 600;
/// Ids 1 to `RESENT` are produced a second time, as a producer retry would.
const RESENT: i64 = 10;
const SCHEMA: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: score, type: float, min: 0}
unique_key: [id]
"#;

/// Starts a broker and creates `topic` with two partitions. Returns `None` when the binary is
/// missing and `GHAF_SKIP_PEER_TESTS=1`.
async fn start_broker(topic: &str) -> Option<KafkaTestBroker> {
    let broker = KafkaTestBroker::start().await?;
    broker.create_topic(topic, 2);
    Some(broker)
}

async fn produce(producer: &FutureProducer, key: &str, payload: &str) {
    producer
        .send(
            FutureRecord::to(TOPIC).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("message delivered");
}

fn config(address: &str) -> KafkaConsumerConfig {
    KafkaConsumerConfig {
        brokers: address.to_owned(),
        group_id: "ghaf-events".into(),
        topics: vec![TOPIC.into()],
        batch_size: 25,
        max_wait: Duration::from_millis(300),
        session_timeout: Duration::from_secs(10),
    }
}

/// Reads every batch of every version of a dataset.
async fn read_batches(h: &common::Harness, name: &str) -> Vec<RecordBatch> {
    let dataset = h.dataset(name).await;
    let mut batches = Vec::new();
    for version in h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap()
    {
        let digest = ghaf_ingest::IngestService::digest(&version.content_digest).unwrap();
        let content = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(content)
            .unwrap()
            .build()
            .unwrap()
        {
            batches.push(batch.unwrap());
        }
    }
    batches
}

async fn stored_ids(h: &common::Harness) -> Vec<i64> {
    let mut ids = Vec::new();
    for batch in read_batches(h, "events").await {
        let column = batch
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        ids.extend(column.values().iter().copied());
    }
    ids
}

async fn segment_count(h: &common::Harness) -> usize {
    let dataset = h.dataset("events").await;
    h.service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_restart_loses_and_duplicates_nothing() {
    let Some(broker) = start_broker(TOPIC).await else {
        return;
    };
    let h = common::harness().await;
    h.create("events", SCHEMA).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    // Every 20th message has a negative score, and one is not JSON: both belong in the
    // dead-letter dataset.
    for id in 1..=MESSAGES {
        let score = if id % 20 == 0 { -1.0 } else { 0.5 };
        let payload = serde_json::json!({"id": id, "score": score}).to_string();
        produce(&producer, &id.to_string(), &payload).await;
    }
    produce(&producer, "garbage", "{not json").await;
    for id in 1..=RESENT {
        let payload = serde_json::json!({"id": id, "score": 0.5}).to_string();
        produce(&producer, &id.to_string(), &payload).await;
    }
    let valid = MESSAGES - MESSAGES / 20;
    let target = ConsumerTarget {
        tenant: h.tenant.clone(),
        project: h.project.clone(),
        project_name: "p".into(),
        dataset: "events".into(),
    };

    // A batch committed as a segment whose offsets were never committed, as when Ghaf dies
    // between the two steps.
    let first = KafkaConsumer::new(h.service.clone(), target.clone(), config(&broker.address));
    let source = first.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let messages = first.receive_batch(&source).await.unwrap();
        if !messages.is_empty() {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "no message received from the group"
        );
    };
    let outcome = first.commit_segment(&messages).await.unwrap();
    assert!(outcome.accepted > 0, "first batch accepted: {outcome:?}");
    drop(source);

    // A consumer stopped mid-stream, after at least two more segments.
    let running = tokio::spawn(async move { first.run(std::future::pending()).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while segment_count(&h).await < 3 {
        assert!(
            Instant::now() < deadline,
            "the running consumer stored no batch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
    let _ = running.await;
    let stored_before_restart = stored_ids(&h).await.len() as i64;
    assert!(
        stored_before_restart < valid,
        "the consumer was stopped before the end of the stream"
    );

    // Ghaf restarts: a new service on the same stores and the same consumer group.
    let (service, _, _) = common::open(h.dir.path()).await;
    let second = KafkaConsumer::new(service, target, config(&broker.address));
    let lag = second.lag();
    let source = second.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let outcome = second.poll_batch(&source).await.unwrap();
        if outcome.is_none() && second.measure_lag(&source).await.unwrap() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer did not drain; lag {}",
            lag.load(Ordering::Relaxed)
        );
    }
    assert_eq!(lag.load(Ordering::Relaxed), 0, "lag after draining");

    let ids = stored_ids(&h).await;
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no id is stored twice");
    assert_eq!(ids.len() as i64, valid, "every valid message is stored");
    assert!(
        unique.iter().all(|id| id % 20 != 0),
        "invalid messages are not stored"
    );

    let mut dead_messages = Vec::new();
    for batch in read_batches(&h, "events.dead-letter").await {
        let messages = batch
            .column_by_name("message")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let reasons = batch
            .column_by_name("reasons")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for row in 0..batch.num_rows() {
            assert!(
                !reasons.value(row).is_empty() && reasons.value(row) != "[]",
                "dead letter without reason: {}",
                messages.value(row)
            );
            dead_messages.push(messages.value(row).to_owned());
        }
    }
    for id in (20..=MESSAGES).step_by(20) {
        let expected = serde_json::json!({"id": id, "score": -1.0}).to_string();
        assert!(
            dead_messages.contains(&expected),
            "message {id} is dead-lettered"
        );
    }
    assert!(
        dead_messages.iter().any(|message| message == "{not json"),
        "the message that is not JSON is dead-lettered"
    );
    drop(broker);
}
