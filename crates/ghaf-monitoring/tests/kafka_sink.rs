//! The Kafka sink against a real Kafka-protocol broker (tansu) started on a free 127.0.0.1
//! port: an alert event is produced and read back with its key, headers and payload.
//!
//! The broker binary is `GHAF_TANSU`, else the one `tests/kafka/setup.sh` installs under
//! `~/.cache/ghaf-tools`. Without it the test fails, unless `GHAF_SKIP_PEER_TESTS=1`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ghaf_monitoring::delivery::{AlertEvent, DeliveryConfig, Dispatcher};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;

const TOPIC: &str = "ghaf-alerts";

fn broker_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("GHAF_TANSU") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/ghaf-tools/tansu-0.6.0/bin/tansu");
    cached.exists().then_some(cached)
}

/// A broker child process, killed on drop.
struct Broker {
    child: Child,
    address: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_broker() -> Option<Broker> {
    let Some(binary) = broker_binary() else {
        if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: the tansu broker is not installed (GHAF_SKIP_PEER_TESTS=1)");
            return None;
        }
        panic!(
            "the tansu broker is not installed; run tests/kafka/setup.sh, set GHAF_TANSU, \
             or set GHAF_SKIP_PEER_TESTS=1 to skip"
        );
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
    let broker = Broker {
        child,
        address: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&broker.address)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "tansu did not start on {}",
            broker.address
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = Command::new(&binary)
        .args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "1",
            TOPIC,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "cannot create topic {TOPIC}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
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
