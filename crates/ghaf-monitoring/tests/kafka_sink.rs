//! The Kafka sink against a real Kafka-protocol broker (tansu) started on a free 127.0.0.1
//! port: an alert event is produced and read back with its key, headers and payload.
//!
//! The broker binary is `GHAF_TANSU`, else the one `tests/kafka/setup.sh` installs under
//! `~/.cache/ghaf-tools`. Without it the test fails, unless `GHAF_SKIP_PEER_TESTS=1`.

use std::time::Duration;

use ghaf_ingest::testing::KafkaTestBroker;
use ghaf_monitoring::delivery::{AlertEvent, DeliveryConfig, Dispatcher};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;

const TOPIC: &str = "ghaf-alerts";

async fn start_broker() -> Option<KafkaTestBroker> {
    let broker = KafkaTestBroker::start().await?;
    broker.create_topic(TOPIC, 1);
    Some(broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_delivers_event() {
    let Some(broker) = start_broker().await else {
        return;
    };
    let dispatcher = Dispatcher::new(DeliveryConfig {
        kafka_brokers: Some(broker.address.clone()),
        ..DeliveryConfig::default()
    });
    let event = AlertEvent {
        event: "firing".into(),
        alert_id: "alert-1".into(),
        project: "p".into(),
        monitor: "m".into(),
        rule: "drift".into(),
        subject: "dataset".into(),
        condition: serde_json::json!({"type": "drift_share", "at_least": 0.5}),
        fired_at: "2026-01-01T00:00:00Z".into(),
        resolved_at: None,
        evidence: serde_json::json!({"share": 0.75}),
        job_id: Some("job-1".into()),
    };
    let outcome = dispatcher.kafka(TOPIC, &event).await;
    assert!(outcome.delivered, "{:?}", outcome.error);

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "ghaf-monitoring-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("the alert record arrives")
        .unwrap();
    assert_eq!(message.key(), Some(&b"p/m/drift/dataset"[..]));
    let payload: AlertEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(payload, event);
    let headers = message.headers().expect("the record has headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    assert_eq!(header("ghaf-event").as_deref(), Some("firing"));
    assert_eq!(header("ghaf-alert-id").as_deref(), Some("alert-1"));
}
