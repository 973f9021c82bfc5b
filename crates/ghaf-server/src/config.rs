//! The server configuration: one typed struct read from defaults, then a TOML file, then
//! `GHAF_*` environment variables, then command-line flags, each overriding the one before.
//! Unknown keys are rejected by name, so a misspelt setting never goes unnoticed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ghaf_blob::BlobConfig;
use serde::{Deserialize, Serialize};

/// Environment variables with the `GHAF_` prefix that belong to the client or to tests, not
/// to the server configuration.
const NON_SERVER_ENV: &[&str] = &["URL", "TOKEN", "PROFILE", "OUTPUT", "CONFIG", "CONFIG_DIR"];

/// Complete server configuration. Every field has a default, so an empty file is valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port the HTTP server listens on. Env: `GHAF_LISTEN`.
    pub listen: SocketAddr,
    /// Directory for embedded state: the SQLite database, local blobs and key files.
    /// Created when missing. Env: `GHAF_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Log output format: `text` for people, `json` for log collectors.
    /// Env: `GHAF_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, such as `info` or `info,ghaf_server=debug`.
    /// `RUST_LOG` overrides it. Env: `GHAF_LOG_LEVEL`.
    pub log_level: String,
    /// Metadata database. Env: `GHAF_METADATA__URL`, `GHAF_METADATA__MAX_CONNECTIONS`.
    pub metadata: MetadataConfig,
    /// Blob storage for datasets, artifacts and models: `{ kind = "local", root = "…" }` or
    /// `{ kind = "s3", bucket = "…", … }`. Unset means local files under
    /// `<data_dir>/blobs`.
    pub blob: Option<BlobConfig>,
    /// HTTP limits. Env: `GHAF_HTTP__MAX_BODY_BYTES`, `GHAF_HTTP__REQUEST_TIMEOUT_SECONDS`.
    pub http: HttpConfig,
    /// Names of what `ghaf server` creates on an empty metadata store.
    pub bootstrap: BootstrapConfig,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Dataset ingestion. Env: `GHAF_INGEST__MAX_UPLOAD_BYTES`, `GHAF_INGEST__LINEAGE_URL`.
    pub ingest: IngestConfig,
    /// Feature store. Env: `GHAF_FEATURES__ONLINE_STORE`, `GHAF_FEATURES__REDIS_URL`.
    pub features: FeaturesConfig,
    /// Training jobs and the in-process worker. Env: `GHAF_JOBS__WORKER`, `GHAF_JOBS__SLOTS`.
    pub jobs: JobsConfig,
    /// Open Inference Protocol limits (REST `/v2` and gRPC). Env:
    /// `GHAF_OIP__MAX_BODY_BYTES`, `GHAF_OIP__MAX_TENSOR_ELEMENTS`, `GHAF_OIP__MAX_JSON_DEPTH`.
    pub oip: OipConfig,
    /// Monitors and alert delivery. Env: `GHAF_MONITORING__EVALUATOR`,
    /// `GHAF_MONITORING__NATS_URL`, `GHAF_MONITORING__KAFKA_BROKERS`.
    pub monitoring: MonitoringConfig,
    /// The rollout controller of canaries and alias-following endpoints. Env:
    /// `GHAF_ROLLOUTS__CONTROLLER`, `GHAF_ROLLOUTS__TICK_SECONDS`.
    pub rollouts: RolloutsConfig,
    /// Model runtime of endpoints and batch scoring jobs. Env:
    /// `GHAF_RUNTIME__ONNXRUNTIME_LIBRARY`, `GHAF_RUNTIME__INTRA_OP_THREADS`.
    pub runtime: RuntimeConfig,
}

/// Rollout controller settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutsConfig {
    /// Runs the rollout controller inside `ghaf server`: it advances canaries, rolls back
    /// failing candidates and moves endpoints that follow a model alias.
    pub controller: bool,
    /// Time between two controller passes, in seconds (at least 1).
    pub tick_seconds: u64,
}

impl Default for RolloutsConfig {
    fn default() -> Self {
        Self {
            controller: true,
            tick_seconds: 1,
        }
    }
}

/// Options every model load uses; the execution provider comes from each endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Path of the ONNX Runtime shared library, used when `ORT_DYLIB_PATH` is not set; empty
    /// for none.
    pub onnxruntime_library: String,
    /// Threads ONNX Runtime uses inside one operator, per model (at least 1).
    pub intra_op_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            onnxruntime_library: String::new(),
            intra_op_threads: 1,
        }
    }
}

/// Monitor evaluation and alert delivery settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Runs the evaluator that evaluates due monitors inside `ghaf server`.
    pub evaluator: bool,
    /// Time between the evaluator's checks for due monitors, in seconds.
    pub tick_seconds: u64,
    /// NATS server that alert events are published to, for rules with a `nats_subject`,
    /// such as `nats://127.0.0.1:4222`. Empty disables NATS delivery.
    pub nats_url: String,
    /// Kafka bootstrap servers that alert events are produced to, for rules with a
    /// `kafka_topic`, such as `127.0.0.1:9092`. Empty disables Kafka delivery.
    pub kafka_brokers: String,
    /// Time limit of one webhook request, in seconds.
    pub webhook_timeout_seconds: u64,
    /// Webhook attempts per alert event, counting the first.
    pub webhook_attempts: u32,
    /// Wait before the first webhook retry, in milliseconds; each later retry waits twice as
    /// long.
    pub webhook_backoff_ms: u64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            evaluator: true,
            tick_seconds: 10,
            nats_url: String::new(),
            kafka_brokers: String::new(),
            webhook_timeout_seconds: 10,
            webhook_attempts: 4,
            webhook_backoff_ms: 1000,
        }
    }
}

/// Training job settings, shared by `ghaf server` and `ghaf worker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Runs a job worker inside `ghaf server`. Set it to false when separate `ghaf worker`
    /// processes run the jobs.
    pub worker: bool,
    /// Jobs one worker runs at the same time.
    pub slots: usize,
    /// GPUs of the worker's machine; jobs that ask for more wait for another worker.
    pub gpus: u32,
    /// Lease of a running attempt, in seconds; a worker silent for this long loses the job,
    /// which goes back to the queue as a new attempt.
    pub lease_seconds: u64,
    /// Time between the heartbeats that renew a lease, in seconds; below `lease_seconds`.
    pub heartbeat_seconds: u64,
    /// Time between queue polls of an idle worker, in milliseconds.
    pub poll_ms: u64,
    /// Runs `command` jobs on this machine. Off by default, because a command job runs any
    /// program a project developer submits, as the user of the worker process, with access
    /// to the worker's files (such as the audit and signing keys under `data_dir`).
    pub allow_commands: bool,
    /// Tracking URI given to command and Kubernetes jobs as `MLFLOW_TRACKING_URI`. Empty
    /// means `http://` and the `listen` address (a wildcard host becomes 127.0.0.1).
    pub tracking_uri: String,
    /// Kubernetes API server for `kubernetes` jobs; unset runs no such jobs.
    pub kubernetes: Option<ghaf_jobs::executor::kubernetes::KubernetesConfig>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            worker: true,
            slots: 2,
            gpus: 0,
            lease_seconds: 60,
            heartbeat_seconds: 10,
            poll_ms: 1000,
            allow_commands: false,
            tracking_uri: String::new(),
            kubernetes: None,
        }
    }
}

/// Limits of the Open Inference Protocol routes; requests over them get `413` on REST and
/// `OUT_OF_RANGE` on gRPC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OipConfig {
    /// Largest inference request body (REST) or message (gRPC), in bytes. It replaces
    /// `http.max_body_bytes` on the `/v2` inference routes.
    pub max_body_bytes: usize,
    /// Largest element count of one input tensor, checked on the shape before any data is
    /// read.
    pub max_tensor_elements: usize,
    /// Deepest nesting of arrays in one input's JSON `data`.
    pub max_json_depth: usize,
}

impl Default for OipConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            max_tensor_elements: 16 * 1024 * 1024,
            max_json_depth: 32,
        }
    }
}

/// Feature store settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Online store backend: `embedded` (a redb file at `<data_dir>/features/online.redb`)
    /// or `redis`.
    pub online_store: String,
    /// Redis server of the `redis` backend, such as `redis://127.0.0.1:6379/0`.
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one server.
    pub redis_key_prefix: String,
    /// Maximum bytes of computed feature tables kept in `<data_dir>/features/tables`. The
    /// first training set or materialisation after a restart reads a table from there
    /// instead of the dataset version. The files used longest ago are deleted first, and 0
    /// turns the cache off.
    pub table_cache_max_bytes: u64,
    /// Bytes of keys and rows that `ghaf server` reads from the embedded online store at
    /// start, before it accepts requests, so that the first online reads find their pages
    /// in memory. The pages take more memory than the rows they contain. 0 turns it off.
    pub online_warm_bytes: u64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            online_store: "embedded".into(),
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_key_prefix: "ghaf:features:".into(),
            table_cache_max_bytes: 4 * 1024 * 1024 * 1024,
            // The pages took an estimated 1.3-3x the bytes of their rows in the Feast
            // benchmark (RSS before and after), so this stays within redb's default cache of
            // 1 GiB. The cache contains no writes at start, but later the write buffer shares it.
            online_warm_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Metadata database settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`. Empty means SQLite at
    /// `<data_dir>/meta.db`.
    pub url: String,
    /// Maximum number of pooled database connections.
    pub max_connections: u32,
}

/// HTTP request limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted by JSON routes, in bytes; larger bodies get `413`.
    pub max_body_bytes: usize,
    /// Time limit for one request, in seconds; slower requests get `503`.
    pub request_timeout_seconds: u64,
}

/// Names used when bootstrapping an empty store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Creates the first tenant, project and admin token at start when the store is empty.
    /// When false, run `ghaf init` once instead.
    pub enabled: bool,
    /// Name of the first tenant.
    pub tenant: String,
    /// Name of the first project.
    pub project: String,
    /// Name of the first admin user, who is also the platform administrator.
    pub admin: String,
}

/// Audit log settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// File with the key that seals audit chain heads. Created with 32 random bytes when
    /// missing. Empty means `<data_dir>/keys/audit.key`. Keep it away from the database host,
    /// because anyone with the key and database access can reseal a rewritten chain.
    pub key_file: String,
}

/// Dataset ingestion settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest file accepted by the dataset upload route, in bytes; larger uploads get `413`.
    /// Uploads stream to a staging file under `<data_dir>/ingest-staging`, so this bounds
    /// disk use, not memory.
    pub max_upload_bytes: u64,
    /// Time limit of one dataset upload with its ingest, in seconds; it replaces
    /// `http.request_timeout_seconds` on the upload route. A slower upload gets `503` and
    /// its ingest stops without storing a version.
    pub upload_timeout_seconds: u64,
    /// Largest CSV field or NDJSON line (also a pushed message), in bytes; a larger one
    /// fails its row.
    pub max_field_bytes: usize,
    /// Largest CSV record, in bytes; a larger one fails its row and is skipped without
    /// being held in memory.
    pub max_row_bytes: usize,
    /// Largest decoded batch read from a Parquet file, in bytes.
    pub max_batch_bytes: usize,
    /// Largest decoded Parquet row group (the columns the schema reads), in bytes; a file
    /// with a larger one is rejected.
    pub max_row_group_bytes: u64,
    /// Object-store URI prefixes, such as `s3://landing/sales/`, whose objects the upload
    /// route may ingest (`?uri=`). Empty disables object-store inputs. The objects are read
    /// with the S3 settings of `blob` when it is S3, else with the `AWS_*` variables.
    pub object_uri_prefixes: Vec<String>,
    /// OpenLineage HTTP endpoint that receives a copy of every ingest run event, such as
    /// `http://127.0.0.1:5000/api/v1/lineage`. Empty sends none; Ghaf stores the events and
    /// serves them at `/api/v1/lineage` either way.
    pub lineage_url: String,
    /// NATS JetStream consumers that feed datasets, one `[[ingest.nats]]` table each.
    pub nats: Vec<NatsConsumerSettings>,
    /// Kafka consumers that feed datasets, one `[[ingest.kafka]]` table each.
    pub kafka: Vec<KafkaConsumerSettings>,
}

/// One NATS JetStream consumer that the server runs for a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConsumerSettings {
    /// Server URL, such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// Name of an existing JetStream stream.
    pub stream: String,
    /// Subject filter of the consumer, such as `events.>`.
    pub subject: String,
    /// Durable consumer name; also the `consumer` label of the lag metric.
    pub durable: String,
    /// Tenant, project and dataset that receive the messages.
    pub tenant: String,
    pub project: String,
    pub dataset: String,
    /// Maximum number of messages per committed segment.
    #[serde(default = "default_nats_batch_size")]
    pub batch_size: usize,
    /// Maximum wait for a batch to fill, in milliseconds.
    #[serde(default = "default_nats_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Seconds after which the server redelivers a message that was not acknowledged.
    #[serde(default = "default_nats_ack_wait_seconds")]
    pub ack_wait_seconds: u64,
}

/// One Kafka consumer that the server runs for a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConsumerSettings {
    /// Bootstrap servers, such as `127.0.0.1:9092`.
    pub brokers: String,
    /// Existing topics to read.
    pub topics: Vec<String>,
    /// Consumer group id; also the `consumer` label of the lag metric.
    pub group_id: String,
    /// Tenant, project and dataset that receive the messages.
    pub tenant: String,
    pub project: String,
    pub dataset: String,
    /// Maximum number of messages per committed segment.
    #[serde(default = "default_nats_batch_size")]
    pub batch_size: usize,
    /// Maximum wait for a batch to fill, in milliseconds.
    #[serde(default = "default_nats_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Seconds after which the group coordinator removes a member that sent no heartbeat.
    #[serde(default = "default_kafka_session_timeout_seconds")]
    pub session_timeout_seconds: u64,
}

fn default_kafka_session_timeout_seconds() -> u64 {
    45
}

fn default_nats_batch_size() -> usize {
    500
}

fn default_nats_max_wait_ms() -> u64 {
    1000
}

fn default_nats_ack_wait_seconds() -> u64 {
    30
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 10 * 1024 * 1024 * 1024,
            upload_timeout_seconds: 3600,
            max_field_bytes: ghaf_ingest::DEFAULT_MAX_FIELD_BYTES,
            max_row_bytes: ghaf_ingest::DEFAULT_MAX_ROW_BYTES,
            max_batch_bytes: ghaf_ingest::DEFAULT_MAX_BATCH_BYTES,
            max_row_group_bytes: ghaf_ingest::DEFAULT_MAX_ROW_GROUP_BYTES,
            object_uri_prefixes: Vec::new(),
            lineage_url: String::new(),
            nats: Vec::new(),
            kafka: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("ghaf-data"),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metadata: MetadataConfig::default(),
            blob: None,
            http: HttpConfig::default(),
            bootstrap: BootstrapConfig::default(),
            audit: AuditConfig::default(),
            ingest: IngestConfig::default(),
            features: FeaturesConfig::default(),
            jobs: JobsConfig::default(),
            oip: OipConfig::default(),
            monitoring: MonitoringConfig::default(),
            rollouts: RolloutsConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout_seconds: 60,
        }
    }
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant: "default".into(),
            project: "default".into(),
            admin: "admin".into(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Error of loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found; check --config or GHAF_CONFIG")]
    FileNotFound { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Loads the configuration: defaults < `file` < `GHAF_*` environment < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, Env::prefixed("GHAF_"))
    }

    fn load_with_env(
        file: Option<&Path>,
        overrides: &ConfigOverrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::FileNotFound {
                    path: path.to_owned(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env
            .filter(|key| {
                let key = key.as_str().to_ascii_uppercase();
                !NON_SERVER_ENV.contains(&key.as_str()) && !key.starts_with("TEST_")
            })
            .split("__");
        figment = figment
            .merge(env)
            .merge(Serialized::defaults(overrides.clone()));
        let config: ServerConfig = figment
            .extract()
            .map_err(|error| ConfigError::Invalid(describe_figment_error(&error)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("bootstrap.tenant", &self.bootstrap.tenant),
            ("bootstrap.project", &self.bootstrap.project),
            ("bootstrap.admin", &self.bootstrap.admin),
        ] {
            ghaf_core::Name::parse(value)
                .map_err(|error| ConfigError::Invalid(format!("{key}: {error}")))?;
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::Invalid(format!(
                "log_level {:?} is not a valid filter: {error}; use a level such as `info` or `info,ghaf_server=debug`",
                self.log_level
            )));
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "http.max_body_bytes must be at least 1".into(),
            ));
        }
        if self.http.request_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "http.request_timeout_seconds must be at least 1".into(),
            ));
        }
        if !matches!(self.features.online_store.as_str(), "embedded" | "redis") {
            return Err(ConfigError::Invalid(format!(
                "features.online_store is {:?}; use \"embedded\" or \"redis\"",
                self.features.online_store
            )));
        }
        if self.ingest.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid(
                "ingest.max_upload_bytes must be at least 1".into(),
            ));
        }
        if let Some(prefix) = self
            .ingest
            .object_uri_prefixes
            .iter()
            .find(|prefix| !prefix.starts_with("s3://") || prefix.len() <= "s3://".len())
        {
            return Err(ConfigError::Invalid(format!(
                "ingest.object_uri_prefixes: {prefix:?} is not an s3:// URI prefix such as \
                 s3://landing/sales/"
            )));
        }
        if self.ingest.upload_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "ingest.upload_timeout_seconds must be at least 1".into(),
            ));
        }
        if self.ingest.max_field_bytes == 0 {
            return Err(ConfigError::Invalid(
                "ingest.max_field_bytes must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("ingest.max_row_bytes", self.ingest.max_row_bytes as u64),
            ("ingest.max_batch_bytes", self.ingest.max_batch_bytes as u64),
            (
                "ingest.max_row_group_bytes",
                self.ingest.max_row_group_bytes,
            ),
        ] {
            if value < 1024 {
                return Err(ConfigError::Invalid(format!(
                    "{key} is {value}; it must be at least 1024"
                )));
            }
        }
        if self.metadata.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "metadata.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Returns the metadata URL in force: the configured one, or SQLite in the data directory.
    pub fn metadata_url(&self) -> String {
        if self.metadata.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("meta.db").display())
        } else {
            self.metadata.url.clone()
        }
    }

    /// Returns the blob configuration in force: the configured one, or local files in the data
    /// directory.
    pub fn blob_config(&self) -> BlobConfig {
        self.blob
            .clone()
            .unwrap_or_else(|| BlobConfig::local_default(&self.data_dir))
    }

    /// Directory of the tenants' Ed25519 keys that sign model artifact manifests.
    pub fn signing_keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys").join("signing")
    }

    pub fn audit_key_path(&self) -> PathBuf {
        if self.audit.key_file.is_empty() {
            self.data_dir.join("keys").join("audit.key")
        } else {
            PathBuf::from(&self.audit.key_file)
        }
    }

    /// Renders the effective configuration as TOML with defaults filled in and secrets
    /// replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.metadata.url = ghaf_meta_redact(&self.metadata_url());
        resolved.features.redis_url = ghaf_meta_redact(&self.features.redis_url);
        let mut blob = self.blob_config();
        if let BlobConfig::S3 {
            secret_access_key,
            endpoint,
            ..
        } = &mut blob
        {
            if secret_access_key.is_some() {
                *secret_access_key = Some("***".into());
            }
            if let Some(url) = endpoint {
                *url = ghaf_meta_redact(url);
            }
        }
        resolved.blob = Some(blob);
        resolved.audit.key_file = self.audit_key_path().display().to_string();
        toml::to_string_pretty(&resolved)
            .unwrap_or_else(|error| format!("# cannot render: {error}"))
    }
}

fn ghaf_meta_redact(url: &str) -> String {
    ghaf_meta::redact_url(url)
}

/// Rewrites figment's error into one line that names the key and, for environment
/// variables, the variable.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let mut message = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => format!(
                    "unknown key `{field}`; expected one of: {}",
                    expected.join(", ")
                ),
                kind => kind.to_string(),
            };
            if !e.path.is_empty() {
                message = format!("{}: {message}", e.path.join("."));
            }
            if let Some(metadata) = &e.metadata {
                message = format!("{message} (from {})", metadata.name);
            }
            message
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)]
    fn load_from(
        toml: &str,
        env: &[(&str, &str)],
        overrides: &ConfigOverrides,
    ) -> Result<ServerConfig, ConfigError> {
        // Jail isolates the working directory and environment of each test.
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            jail.create_file("ghaf.toml", toml)?;
            for (key, value) in env {
                jail.set_env(key, value);
            }
            loaded = Some(ServerConfig::load(Some(Path::new("ghaf.toml")), overrides));
            Ok(())
        });
        loaded.expect("the jail ran")
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = load_from("", &[], &ConfigOverrides::default()).unwrap();
        assert_eq!(config, ServerConfig::default());
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let toml = "listen = \"127.0.0.1:7000\"\ndata_dir = \"/from-file\"\nlog_level = \"warn\"\n";
        let env = [
            ("GHAF_DATA_DIR", "/from-env"),
            ("GHAF_LISTEN", "127.0.0.1:7001"),
        ];
        let flags = ConfigOverrides {
            listen: Some("127.0.0.1:7002".parse().unwrap()),
            ..ConfigOverrides::default()
        };
        let config = load_from(toml, &env, &flags).unwrap();
        assert_eq!(config.log_level, "warn", "file beats default");
        assert_eq!(
            config.data_dir,
            PathBuf::from("/from-env"),
            "env beats file"
        );
        assert_eq!(config.listen.port(), 7002, "flag beats env");
    }

    #[test]
    fn nested_env_keys_use_double_underscore() {
        let env = [
            ("GHAF_METADATA__URL", "postgres://u@h/db"),
            ("GHAF_HTTP__MAX_BODY_BYTES", "1024"),
        ];
        let config = load_from("", &env, &ConfigOverrides::default()).unwrap();
        assert_eq!(config.metadata.url, "postgres://u@h/db");
        assert_eq!(config.http.max_body_bytes, 1024);
    }

    #[test]
    fn unknown_file_key_is_named() {
        let error = load_from(
            "[http]\nmax_body_byte = 5\n",
            &[],
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("max_body_byte"), "{error}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let error = load_from("", &[("GHAF_LISTN", "x")], &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.to_lowercase().contains("listn"), "{error}");
    }

    #[test]
    fn client_env_vars_are_ignored() {
        let env = [
            ("GHAF_URL", "http://x"),
            ("GHAF_TOKEN", "t"),
            ("GHAF_TEST_POSTGRES_URL", "p"),
        ];
        assert!(load_from("", &env, &ConfigOverrides::default()).is_ok());
    }

    #[test]
    fn wrong_type_is_reported() {
        let error = load_from(
            "[http]\nmax_body_bytes = \"big\"\n",
            &[],
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("max_body_bytes"), "{error}");
    }

    #[test]
    fn invalid_bootstrap_name_is_rejected() {
        let error = load_from(
            "[bootstrap]\ntenant = \"Bad Name\"\n",
            &[],
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("bootstrap.tenant"), "{error}");
    }

    #[test]
    fn invalid_log_level_is_rejected() {
        let error = load_from("log_level = \"loud=[\"\n", &[], &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("log_level"), "{error}");
    }

    #[test]
    fn redacted_toml_hides_secrets() {
        let mut config = ServerConfig::default();
        config.metadata.url = "postgres://ghaf:hunter2@db/ghaf".into();
        let rendered = config.to_redacted_toml();
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(rendered.contains("[blob]"), "{rendered}");
        let reparsed: ServerConfig = toml::from_str(&rendered).unwrap();
        assert_eq!(reparsed.listen, config.listen);
    }
}
