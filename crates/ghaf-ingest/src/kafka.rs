//! A Kafka consumer that feeds a dataset: it reads the configured topics as a member of a
//! consumer group, commits each micro-batch as a pushed segment, and commits the group's
//! offsets only after the segment is stored. A crash between the two makes the group resume
//! from the last committed offsets, and the dataset's message keys drop the rows of the
//! batch that were already stored.
//!
//! The message key that drops duplicates is the dataset's `unique_key`, as for pushes and the
//! NATS consumer; the Kafka record key is not used.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

pub use crate::consumer::ConsumerTarget;
use crate::consumer::commit_batch;
use crate::{IngestError, IngestService, PushOutcome};

/// Timeout of the metadata, watermark and committed-offset requests behind the lag.
const LAG_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Source and batching settings of a consumer.
#[derive(Clone, Debug)]
pub struct KafkaConsumerConfig {
    /// Bootstrap servers, such as `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group id; the brokers keep the group's committed offsets across restarts.
    pub group_id: String,
    /// Existing topics to read.
    pub topics: Vec<String>,
    /// Maximum number of messages per batch, and so per segment.
    pub batch_size: usize,
    /// Maximum wait for a batch to fill.
    pub max_wait: Duration,
    /// Time after which the group coordinator removes a member that sent no heartbeat.
    pub session_timeout: Duration,
}

/// A connected group member, from [`KafkaConsumer::connect`].
pub type KafkaSource = Arc<StreamConsumer>;

/// A running Kafka consumer for one dataset.
pub struct KafkaConsumer {
    service: IngestService,
    target: ConsumerTarget,
    config: KafkaConsumerConfig,
    lag: Arc<AtomicU64>,
}

fn broker(context: &'static str) -> impl Fn(KafkaError) -> IngestError {
    move |error| IngestError::Broker(format!("{context}: {error}"))
}

/// Runs a blocking librdkafka call on the blocking thread pool.
async fn blocking<T: Send + 'static>(
    source: &KafkaSource,
    call: impl FnOnce(&StreamConsumer) -> Result<T, IngestError> + Send + 'static,
) -> Result<T, IngestError> {
    let source = source.clone();
    tokio::task::spawn_blocking(move || call(&source))
        .await
        .map_err(|error| IngestError::Broker(format!("kafka client task failed: {error}")))?
}

impl KafkaConsumer {
    pub fn new(
        service: IngestService,
        target: ConsumerTarget,
        config: KafkaConsumerConfig,
    ) -> Self {
        Self {
            service,
            target,
            config,
            lag: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Messages of the consumer's topics after the group's committed offsets, as of the last
    /// batch: the consumer lag. Shared, so a metrics exporter can read it while the consumer
    /// runs.
    pub fn lag(&self) -> Arc<AtomicU64> {
        self.lag.clone()
    }

    /// Creates the group member and subscribes it to the topics. Offsets are committed only
    /// by [`KafkaConsumer::commit_offsets`]; a group without committed offsets starts at the
    /// earliest message.
    pub fn connect(&self) -> Result<KafkaSource, IngestError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(broker("failed to create the Kafka consumer"))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(broker("failed to subscribe to the Kafka topics"))?;
        Ok(Arc::new(consumer))
    }

    /// Receives up to `batch_size` messages, waiting at most `max_wait` in total. Returns an
    /// empty batch when none arrived.
    pub async fn receive_batch(
        &self,
        source: &KafkaSource,
    ) -> Result<Vec<OwnedMessage>, IngestError> {
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        let mut messages = Vec::new();
        while messages.len() < self.config.batch_size {
            match tokio::time::timeout_at(deadline, source.recv()).await {
                Err(_elapsed) => break,
                Ok(received) => messages.push(
                    received
                        .map_err(broker("failed to receive a Kafka message"))?
                        .detach(),
                ),
            }
        }
        Ok(messages)
    }

    /// Commits the messages as a pushed segment of the target dataset.
    pub async fn commit_segment(
        &self,
        messages: &[OwnedMessage],
    ) -> Result<PushOutcome, IngestError> {
        let actor = format!("kafka:{}", self.config.group_id);
        let payloads = messages
            .iter()
            .map(|message| message.payload().unwrap_or_default());
        commit_batch(&self.service, &self.target, payloads, &actor).await
    }

    /// Commits the group offsets past the messages, synchronously.
    pub async fn commit_offsets(
        &self,
        source: &KafkaSource,
        messages: &[OwnedMessage],
    ) -> Result<(), IngestError> {
        // The committed offset of a partition is the offset of the next message to read.
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in messages {
            let entry = next
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(0);
            *entry = (*entry).max(message.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            offsets
                .add_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(broker("invalid Kafka offset"))?;
        }
        blocking(source, move |consumer| {
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(broker("failed to commit the Kafka offsets"))
        })
        .await
    }

    /// Receives one batch, commits it as a segment and then commits its offsets. Returns the
    /// push outcome, or `None` when no message arrived within `max_wait`.
    pub async fn poll_batch(
        &self,
        source: &KafkaSource,
    ) -> Result<Option<PushOutcome>, IngestError> {
        let messages = self.receive_batch(source).await?;
        if messages.is_empty() {
            self.update_lag(source).await;
            return Ok(None);
        }
        let outcome = self.commit_segment(&messages).await?;

        // The segment is committed, so moving the offsets past it cannot lose a message.
        self.commit_offsets(source, &messages).await?;
        self.update_lag(source).await;
        Ok(Some(outcome))
    }

    /// Computes the group's lag: over every partition of the topics, the high watermark minus
    /// the committed offset, or minus the low watermark where the group committed none.
    pub async fn measure_lag(&self, source: &KafkaSource) -> Result<u64, IngestError> {
        let topics = self.config.topics.clone();
        blocking(source, move |consumer| {
            let mut partitions = TopicPartitionList::new();
            for topic in &topics {
                let metadata = consumer
                    .fetch_metadata(Some(topic), LAG_REQUEST_TIMEOUT)
                    .map_err(broker("failed to read the Kafka topic metadata"))?;
                for found in metadata.topics() {
                    for partition in found.partitions() {
                        partitions.add_partition(found.name(), partition.id());
                    }
                }
            }
            let committed = consumer
                .committed_offsets(partitions, LAG_REQUEST_TIMEOUT)
                .map_err(broker("failed to read the committed Kafka offsets"))?;
            let mut lag = 0u64;
            for element in committed.elements() {
                let (low, high) = consumer
                    .fetch_watermarks(element.topic(), element.partition(), LAG_REQUEST_TIMEOUT)
                    .map_err(broker("failed to read the Kafka watermarks"))?;
                let position = match element.offset() {
                    Offset::Offset(offset) => offset.max(low),
                    _ => low,
                };
                lag += u64::try_from(high - position).unwrap_or(0);
            }
            Ok(lag)
        })
        .await
    }

    async fn update_lag(&self, source: &KafkaSource) {
        match self.measure_lag(source).await {
            Ok(lag) => self.lag.store(lag, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(group = %self.config.group_id, error = %error, "failed to read the consumer lag")
            }
        }
    }

    /// Consumes until `shutdown` completes. A failed batch is logged and retried after a
    /// pause with a new group member, which resumes at the committed offsets. The failed
    /// batch is read again, because its offsets were not committed.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), IngestError> {
        let mut source = self.connect()?;
        self.update_lag(&source).await;
        tracing::info!(group = %self.config.group_id, dataset = %self.target.dataset, topics = ?self.config.topics, "kafka consumer started");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                result = self.poll_batch(&source) => {
                    if let Err(error) = result {
                        tracing::warn!(group = %self.config.group_id, dataset = %self.target.dataset, error = %error, "kafka batch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        source = self.connect()?;
                    }
                }
            }
        }
        tracing::info!(group = %self.config.group_id, "kafka consumer stopped");
        Ok(())
    }
}
