//! Stream consumers the server runs for datasets (`[[ingest.nats]]` and `[[ingest.kafka]]` in
//! the configuration), with their lag exported as the `ghaf_ingest_consumer_lag_messages`
//! metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ghaf_core::TenantId;
use ghaf_ingest::IngestError;
use ghaf_ingest::kafka::{KafkaConsumer, KafkaConsumerConfig};
use ghaf_ingest::nats::{ConsumerTarget, NatsConsumer, NatsConsumerConfig};
use tokio::task::JoinHandle;

use crate::config::{KafkaConsumerSettings, NatsConsumerSettings};
use crate::state::AppState;

/// How often the lag metric is refreshed from the consumers.
const LAG_EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Starts every configured consumer. A consumer whose project cannot be found is logged and
/// skipped; the others run until their task is aborted.
pub async fn start_nats_consumers(state: &AppState) -> Vec<JoinHandle<()>> {
    let Some(service) = state.ingest() else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    for settings in &state.config().ingest.nats {
        match target_of(
            state,
            &settings.tenant,
            &settings.project,
            &settings.dataset,
        )
        .await
        {
            Ok(target) => {
                let consumer =
                    NatsConsumer::new(service.clone(), target, consumer_config(settings));
                tasks.push(spawn_consumer(
                    state.clone(),
                    settings.durable.clone(),
                    StreamConsumer::Nats(consumer),
                ));
            }
            Err(message) => {
                tracing::error!(durable = %settings.durable, error = %message, "nats consumer not started");
            }
        }
    }
    tasks
}

fn consumer_config(settings: &NatsConsumerSettings) -> NatsConsumerConfig {
    NatsConsumerConfig {
        url: settings.url.clone(),
        stream: settings.stream.clone(),
        subject: settings.subject.clone(),
        durable: settings.durable.clone(),
        batch_size: settings.batch_size.max(1),
        max_wait: Duration::from_millis(settings.max_wait_ms.max(1)),
        ack_wait: Duration::from_secs(settings.ack_wait_seconds.max(1)),
    }
}

/// Starts every configured Kafka consumer, as [`start_nats_consumers`] does for NATS.
pub async fn start_kafka_consumers(state: &AppState) -> Vec<JoinHandle<()>> {
    let Some(service) = state.ingest() else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    for settings in &state.config().ingest.kafka {
        match target_of(
            state,
            &settings.tenant,
            &settings.project,
            &settings.dataset,
        )
        .await
        {
            Ok(target) => {
                let consumer = KafkaConsumer::new(service.clone(), target, kafka_config(settings));
                tasks.push(spawn_consumer(
                    state.clone(),
                    settings.group_id.clone(),
                    StreamConsumer::Kafka(consumer),
                ));
            }
            Err(message) => {
                tracing::error!(group = %settings.group_id, error = %message, "kafka consumer not started");
            }
        }
    }
    tasks
}

fn kafka_config(settings: &KafkaConsumerSettings) -> KafkaConsumerConfig {
    KafkaConsumerConfig {
        brokers: settings.brokers.clone(),
        group_id: settings.group_id.clone(),
        topics: settings.topics.clone(),
        batch_size: settings.batch_size.max(1),
        max_wait: Duration::from_millis(settings.max_wait_ms.max(1)),
        session_timeout: Duration::from_secs(settings.session_timeout_seconds.max(1)),
    }
}

async fn target_of(
    state: &AppState,
    tenant: &str,
    project: &str,
    dataset: &str,
) -> Result<ConsumerTarget, String> {
    let tenant_id = TenantId::from_stored(tenant.to_owned());
    let found = state
        .store()
        .get_project_by_name(&tenant_id, project)
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("project {project:?} of tenant {tenant:?} not found"))?;
    Ok(ConsumerTarget {
        tenant: tenant_id,
        project: found.id,
        project_name: found.name,
        dataset: dataset.to_owned(),
    })
}

/// A configured consumer of either kind.
enum StreamConsumer {
    Nats(NatsConsumer),
    Kafka(KafkaConsumer),
}

impl StreamConsumer {
    fn kind(&self) -> &'static str {
        match self {
            Self::Nats(_) => "nats",
            Self::Kafka(_) => "kafka",
        }
    }

    fn lag(&self) -> Arc<AtomicU64> {
        match self {
            Self::Nats(consumer) => consumer.lag(),
            Self::Kafka(consumer) => consumer.lag(),
        }
    }

    async fn run(&self) -> Result<(), IngestError> {
        match self {
            Self::Nats(consumer) => consumer.run(std::future::pending()).await,
            Self::Kafka(consumer) => consumer.run(std::future::pending()).await,
        }
    }
}

/// Runs `consumer` and exports its lag with `label` as the `consumer` label.
fn spawn_consumer(state: AppState, label: String, consumer: StreamConsumer) -> JoinHandle<()> {
    let lag = consumer.lag();
    tokio::spawn(async move {
        let export = async {
            loop {
                state
                    .metrics()
                    .set_consumer_lag(&label, lag.load(Ordering::Relaxed));
                tokio::time::sleep(LAG_EXPORT_INTERVAL).await;
            }
        };
        // The consumer stops when the task is aborted. Aborting is safe at any point,
        // because messages are acknowledged, or their offsets committed, only after their
        // segment is stored.
        let run = async {
            loop {
                if let Err(error) = consumer.run().await {
                    tracing::error!(consumer = %label, kind = consumer.kind(), error = %error, "stream consumer failed; restarting in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        tokio::join!(export, run);
    })
}
