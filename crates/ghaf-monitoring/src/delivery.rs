//! Delivery of alert events: webhooks (POST JSON with an HMAC-SHA256 signature, retried with
//! exponential backoff), NATS publishes and Kafka records.

use std::time::Duration;

use ghaf_core::UnixMillis;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Mutex;

/// Header with the signature: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`
/// keyed with the rule's secret.
pub const SIGNATURE_HEADER: &str = "X-Ghaf-Signature";
/// Header with the Unix time in seconds that the signature covers; receivers reject old
/// timestamps to stop replays.
pub const TIMESTAMP_HEADER: &str = "X-Ghaf-Timestamp";
/// Header with the event (`firing` or `resolved`).
pub const EVENT_HEADER: &str = "X-Ghaf-Event";

/// Settings of the sinks.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// NATS server for rules with a `nats_subject`; `None` fails those deliveries.
    pub nats_url: Option<String>,
    /// Kafka bootstrap servers for rules with a `kafka_topic`; `None` fails those deliveries.
    pub kafka_brokers: Option<String>,
    /// Time limit of one webhook request.
    pub webhook_timeout: Duration,
    /// Webhook attempts, counting the first.
    pub webhook_attempts: u32,
    /// Wait before the first retry; each later retry waits twice as long.
    pub webhook_backoff: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            kafka_brokers: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_attempts: 4,
            webhook_backoff: Duration::from_secs(1),
        }
    }
}

/// The JSON document every sink receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// `firing` or `resolved`.
    pub event: String,
    pub alert_id: String,
    pub project: String,
    pub monitor: String,
    pub rule: String,
    pub subject: String,
    /// The rule's condition.
    pub condition: serde_json::Value,
    pub fired_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    pub evidence: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// Outcome of one sink.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkOutcome {
    pub sink: &'static str,
    pub target: String,
    pub attempts: u32,
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// Computes the signature header value for a body sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header value in constant time.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A Kafka record as the sink produces it.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaMessage {
    pub topic: String,
    /// `<project>/<monitor>/<rule>/<subject>`, so events of one alert stay in one partition
    /// and in order.
    pub key: String,
    pub payload: Vec<u8>,
    /// Headers: `ghaf-event` and `ghaf-alert-id`.
    pub headers: Vec<(String, String)>,
}

/// Builds the Kafka record of an event.
pub fn kafka_message(topic: &str, event: &AlertEvent) -> KafkaMessage {
    KafkaMessage {
        topic: topic.to_owned(),
        key: format!(
            "{}/{}/{}/{}",
            event.project, event.monitor, event.rule, event.subject
        ),
        payload: serde_json::to_vec(event).expect("alert events serialise"),
        headers: vec![
            ("ghaf-event".to_owned(), event.event.clone()),
            ("ghaf-alert-id".to_owned(), event.alert_id.clone()),
        ],
    }
}

/// Sends alert events; connections to NATS and Kafka are opened on first use and kept.
pub struct Dispatcher {
    config: DeliveryConfig,
    http: reqwest::Client,
    nats: Mutex<Option<async_nats::Client>>,
    kafka: Mutex<Option<rdkafka::producer::FutureProducer>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(config: DeliveryConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with rustls");
        Self {
            config,
            http,
            nats: Mutex::new(None),
            kafka: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// POSTs the event to a webhook, retrying network errors, 408, 429 and 5xx responses
    /// with exponential backoff.
    pub async fn webhook(&self, url: &str, secret: &str, event: &AlertEvent) -> SinkOutcome {
        let body = serde_json::to_vec(event).expect("alert events serialise");
        let mut outcome = SinkOutcome {
            sink: "webhook",
            target: url.to_owned(),
            attempts: 0,
            delivered: false,
            status_code: None,
            error: None,
        };
        let attempts = self.config.webhook_attempts.max(1);
        let mut backoff = self.config.webhook_backoff;
        for attempt in 1..=attempts {
            outcome.attempts = attempt;
            let timestamp = ghaf_core::now_millis() / 1000;
            let result = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, sign(secret, timestamp, &body))
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(EVENT_HEADER, &event.event)
                .body(body.clone())
                .send()
                .await;
            let retry = match result {
                Ok(response) => {
                    let status = response.status();
                    outcome.status_code = Some(status.as_u16());
                    if status.is_success() {
                        outcome.delivered = true;
                        outcome.error = None;
                        return outcome;
                    }
                    outcome.error = Some(format!("the receiver answered HTTP {status}"));
                    status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(error) => {
                    outcome.status_code = None;
                    outcome.error = Some(format!("the request failed: {error}"));
                    true
                }
            };
            if !retry || attempt == attempts {
                break;
            }
            tracing::warn!(
                alert_id = %event.alert_id,
                url,
                attempt,
                error = outcome.error.as_deref().unwrap_or(""),
                "webhook delivery failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        outcome
    }

    /// Publishes the event on a NATS subject and flushes.
    pub async fn nats(&self, subject: &str, event: &AlertEvent) -> SinkOutcome {
        let mut outcome = SinkOutcome {
            sink: "nats",
            target: subject.to_owned(),
            attempts: 1,
            delivered: false,
            status_code: None,
            error: None,
        };
        let Some(url) = &self.config.nats_url else {
            outcome.error = Some(
                "no NATS server is configured; set monitoring.nats_url in the server \
                 configuration"
                    .to_owned(),
            );
            return outcome;
        };
        let client = {
            let mut guard = self.nats.lock().await;
            if guard.is_none() {
                match async_nats::connect(url.as_str()).await {
                    Ok(client) => *guard = Some(client),
                    Err(error) => {
                        outcome.error = Some(format!("cannot connect to NATS at {url}: {error}"));
                        return outcome;
                    }
                }
            }
            guard.clone().expect("set above")
        };
        let payload = serde_json::to_vec(event).expect("alert events serialise");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Ghaf-Event", event.event.as_str());
        headers.insert("Ghaf-Alert-Id", event.alert_id.as_str());
        let published = client
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await;
        match published {
            Ok(()) => match client.flush().await {
                Ok(()) => outcome.delivered = true,
                Err(error) => outcome.error = Some(format!("NATS flush failed: {error}")),
            },
            Err(error) => outcome.error = Some(format!("NATS publish failed: {error}")),
        }
        outcome
    }

    /// Produces the event to a Kafka topic and waits for the broker's acknowledgement.
    pub async fn kafka(&self, topic: &str, event: &AlertEvent) -> SinkOutcome {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{FutureProducer, FutureRecord};

        let mut outcome = SinkOutcome {
            sink: "kafka",
            target: topic.to_owned(),
            attempts: 1,
            delivered: false,
            status_code: None,
            error: None,
        };
        let Some(brokers) = &self.config.kafka_brokers else {
            outcome.error = Some(
                "no Kafka brokers are configured; set monitoring.kafka_brokers in the server \
                 configuration"
                    .to_owned(),
            );
            return outcome;
        };
        let producer = {
            let mut guard = self.kafka.lock().await;
            if guard.is_none() {
                let created: Result<FutureProducer, _> = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("message.timeout.ms", "30000")
                    .create();
                match created {
                    Ok(producer) => *guard = Some(producer),
                    Err(error) => {
                        outcome.error = Some(format!(
                            "cannot create a Kafka producer for {brokers}: {error}"
                        ));
                        return outcome;
                    }
                }
            }
            guard.clone().expect("set above")
        };
        let message = kafka_message(topic, event);
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(headers);
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => outcome.delivered = true,
            Err((error, _)) => outcome.error = Some(format!("Kafka produce failed: {error}")),
        }
        outcome
    }
}

/// Formats a time for events.
pub fn format_time(millis: UnixMillis) -> String {
    ghaf_core::format_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AlertEvent {
        AlertEvent {
            event: "firing".into(),
            alert_id: "a1".into(),
            project: "p".into(),
            monitor: "m".into(),
            rule: "r".into(),
            subject: "x".into(),
            condition: serde_json::json!({"type": "drift_share", "at_least": 0.5}),
            fired_at: "2026-01-01T00:00:00Z".into(),
            resolved_at: None,
            evidence: serde_json::json!({"share": 1.0}),
            job_id: None,
        }
    }

    #[test]
    fn signature_round_trip() {
        let body = br#"{"a":1}"#;
        let header = sign("secret", 1_700_000_000, body);
        assert!(header.starts_with("sha256="));
        assert!(verify("secret", 1_700_000_000, body, &header));
        assert!(!verify("other", 1_700_000_000, body, &header));
        assert!(!verify("secret", 1_700_000_001, body, &header));
    }

    #[test]
    fn signature_known_value() {
        // HMAC-SHA256 of "1.x" keyed with "k", computed independently with Python's hmac.
        assert_eq!(
            sign("k", 1, b"x"),
            "sha256=976cb87e4f568d1c0f03f32859e90af8597cf00b978ba37c229c97d3a15b8449"
        );
    }

    #[test]
    fn kafka_message_layout() {
        let message = kafka_message("alerts", &event());
        assert_eq!(message.topic, "alerts");
        assert_eq!(message.key, "p/m/r/x");
        let payload: AlertEvent = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload, event());
        assert_eq!(
            message.headers,
            vec![
                ("ghaf-event".to_owned(), "firing".to_owned()),
                ("ghaf-alert-id".to_owned(), "a1".to_owned())
            ]
        );
    }
}
