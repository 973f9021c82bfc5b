//! A NATS JetStream consumer that feeds a dataset: it fetches messages from a durable pull
//! consumer in batches, commits each batch as a pushed segment, and acknowledges the
//! messages only after the segment is stored. A crash between the commit and the
//! acknowledgements makes the server redeliver the batch, and the dataset's message keys
//! drop the redelivered rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;

pub use crate::consumer::ConsumerTarget;
use crate::consumer::commit_batch;
use crate::{IngestError, IngestService, PushOutcome};

/// Source and batching settings of a consumer.
#[derive(Clone, Debug)]
pub struct NatsConsumerConfig {
    /// Server URL, such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// Name of an existing JetStream stream.
    pub stream: String,
    /// Subject filter of the consumer, such as `events.>`.
    pub subject: String,
    /// Durable consumer name; the server keeps its position across restarts.
    pub durable: String,
    /// Maximum number of messages per batch, and so per segment.
    pub batch_size: usize,
    /// Maximum wait for a batch to fill.
    pub max_wait: Duration,
    /// Time after which the server redelivers a message that was not acknowledged.
    pub ack_wait: Duration,
}

/// A running JetStream consumer for one dataset.
pub struct NatsConsumer {
    service: IngestService,
    target: ConsumerTarget,
    config: NatsConsumerConfig,
    lag: Arc<AtomicU64>,
}

fn broker(context: &str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> IngestError + '_ {
    move |error| IngestError::Broker(format!("{context}: {error}"))
}

impl NatsConsumer {
    pub fn new(service: IngestService, target: ConsumerTarget, config: NatsConsumerConfig) -> Self {
        Self {
            service,
            target,
            config,
            lag: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Messages of the consumer's subject not yet delivered, as of the last batch: the
    /// consumer lag. Shared, so a metrics exporter can read it while the consumer runs.
    pub fn lag(&self) -> Arc<AtomicU64> {
        self.lag.clone()
    }

    /// Connects and creates the durable consumer when it does not exist.
    pub async fn connect(&self) -> Result<PullConsumer, IngestError> {
        let client = async_nats::connect(&self.config.url)
            .await
            .map_err(|error| broker("cannot connect to NATS")(error.into()))?;
        let context = jetstream::new(client);
        let stream = context
            .get_stream(&self.config.stream)
            .await
            .map_err(|error| broker("cannot open the JetStream stream")(error.into()))?;
        let consumer_config = jetstream::consumer::pull::Config {
            durable_name: Some(self.config.durable.clone()),
            filter_subject: self.config.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&self.config.durable, consumer_config)
            .await
            .map_err(|error| broker("cannot create the JetStream consumer")(error.into()))
    }

    /// Fetches one batch, commits it and acknowledges it. Returns the push outcome, or
    /// `None` when no message arrived within `max_wait`.
    pub async fn poll_batch(
        &self,
        consumer: &PullConsumer,
    ) -> Result<Option<PushOutcome>, IngestError> {
        let mut fetched = consumer
            .fetch()
            .max_messages(self.config.batch_size)
            .expires(self.config.max_wait)
            .messages()
            .await
            .map_err(|error| broker("cannot fetch messages")(error.into()))?;
        let mut messages = Vec::new();
        while let Some(message) = fetched.next().await {
            messages.push(message.map_err(|error| broker("cannot receive a message")(error))?);
        }
        if messages.is_empty() {
            self.update_lag(consumer).await;
            return Ok(None);
        }

        let actor = format!("nats:{}", self.config.durable);
        let payloads = messages.iter().map(|message| message.payload.as_ref());
        let outcome = commit_batch(&self.service, &self.target, payloads, &actor).await?;

        // The segment is committed, so acknowledging cannot lose a message.
        for message in &messages {
            message
                .ack()
                .await
                .map_err(|error| broker("cannot acknowledge a message")(error))?;
        }
        self.update_lag(consumer).await;
        Ok(Some(outcome))
    }

    async fn update_lag(&self, consumer: &PullConsumer) {
        let mut consumer = consumer.clone();
        match consumer.info().await {
            Ok(info) => self.lag.store(info.num_pending, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(durable = %self.config.durable, error = %error, "cannot read the consumer lag")
            }
        }
    }

    /// Consumes until `shutdown` completes. A failed batch is logged and retried after a
    /// pause; its messages are redelivered by the server after `ack_wait`.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), IngestError> {
        let consumer = self.connect().await?;
        self.update_lag(&consumer).await;
        tracing::info!(durable = %self.config.durable, dataset = %self.target.dataset, "nats consumer started");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                result = self.poll_batch(&consumer) => {
                    if let Err(error) = result {
                        tracing::warn!(durable = %self.config.durable, dataset = %self.target.dataset, error = %error, "nats batch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        tracing::info!(durable = %self.config.durable, "nats consumer stopped");
        Ok(())
    }
}
