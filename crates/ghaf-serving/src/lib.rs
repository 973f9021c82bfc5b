//! Endpoints of Ghaf: a named endpoint serves a registered model version, joins online
//! features, logs every prediction and accepts labels later.
//!
//! The Open Inference Protocol layer in `ghaf-server` calls [`ServingService`]; in the
//! protocol an endpoint is a "model" and a model version is a "version" of it.

pub mod batch;
pub mod features;
pub mod layout;
pub mod loader;
pub mod log;
pub mod policy;
pub mod routing;
pub mod rows;
mod shadow;
pub mod stats;
pub mod store;
mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use ghaf_core::{ErrorCode, Name, ProjectId, TenantId};
use ghaf_features::FeatureStore;
use ghaf_ingest::{IngestService, PushFormat};
use ghaf_runtime::{
    BatchLimits, BatchOptions, Batcher, InferRequest, InferResponse, ModelSignature, Parameter,
    RuntimeError, Tensor, TensorData, TensorMeta,
};
use serde::{Deserialize, Serialize};

use crate::features::FeatureBinding;
use crate::layout::{LogLayout, RowMeta};
use crate::loader::{LoadError, LoadedModel, ModelLoader};
use crate::log::{LogTarget, PredictionLog};
use crate::routing::Routing;
pub use crate::shadow::MAX_MIRRORS_IN_FLIGHT;
use crate::stats::{StatsKey, StatsRegistry, VariantCounters};
pub use crate::store::{Endpoint, EndpointStore, Variant};
pub use crate::traffic::{PolicyUpdate, VariantStatsView};

/// Tenant and project an endpoint lives in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointScope {
    pub tenant: TenantId,
    pub project: ProjectId,
}

/// Caller identity and request headers, used for routing and the prediction log.
#[derive(Clone, Debug, Default)]
pub struct InferContext {
    /// Principal id of the caller.
    pub principal: String,
    /// Request headers in lower case, for sticky routing by header.
    pub headers: Vec<(String, String)>,
}

/// Metadata of an endpoint in protocol terms.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointMetadata {
    /// Endpoint name, the protocol's model name.
    pub name: String,
    /// Model versions the endpoint serves, as decimal strings.
    pub versions: Vec<String>,
    pub signature: ModelSignature,
}

/// Errors the protocol layer maps to HTTP statuses and gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// 404 / NOT_FOUND.
    #[error("endpoint {endpoint:?} not found")]
    EndpointNotFound { endpoint: String },
    /// 404 / NOT_FOUND.
    #[error("endpoint {endpoint:?} does not serve version {version:?}; it serves {served}")]
    VersionNotFound {
        endpoint: String,
        version: String,
        served: String,
    },
    /// 400 / INVALID_ARGUMENT: names the input (or entity key) and the reason.
    #[error("input {input:?}: {reason}")]
    InvalidInput { input: String, reason: String },
    /// 400 / INVALID_ARGUMENT.
    #[error("output {output:?}: {reason}")]
    InvalidOutput { output: String, reason: String },
    /// 503 with Retry-After / UNAVAILABLE: the model is still loading.
    #[error("endpoint {endpoint:?} is not ready: {reason}")]
    NotReady {
        endpoint: String,
        reason: String,
        retry_after_secs: u32,
    },
    /// 503 / UNAVAILABLE: loading failed (for example the signature check) and will not be
    /// retried until the endpoint is redeployed.
    #[error("endpoint {endpoint:?} version {version} failed to load: {reason}")]
    LoadFailed {
        endpoint: String,
        version: i64,
        reason: String,
    },
    /// 500 / INTERNAL.
    #[error("{0}")]
    Internal(String),
}

/// Errors of endpoint management, labels and log reads (the management API, not the
/// inference protocol).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error(
        "endpoint {endpoint:?} already exists in this project; update it with PUT or choose another name"
    )]
    AlreadyExists { endpoint: String },
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Meta(#[from] ghaf_meta::MetaError),
}

impl From<sqlx::Error> for ServeError {
    fn from(error: sqlx::Error) -> Self {
        ServeError::Meta(error.into())
    }
}

impl ServeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServeError::NotFound { .. } => ErrorCode::NotFound,
            ServeError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ServeError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            ServeError::Conflict(_) => ErrorCode::FailedPrecondition,
            ServeError::Unavailable(_) => ErrorCode::Unavailable,
            ServeError::Internal(_) => ErrorCode::Internal,
            ServeError::Meta(error) => error.code(),
        }
    }

    /// Returns the request field an `InvalidArgument` names.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServeError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ServeError::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

/// Maximum endpoint name length, so the log dataset `<name>-predictions` stays a valid name.
pub const MAX_ENDPOINT_NAME: usize = Name::MAX_LEN - log::PREDICTIONS_SUFFIX.len();
/// Name of the one variant an endpoint has today.
pub const PRIMARY_VARIANT: &str = "primary";
/// Seconds of `Retry-After` sent while a model loads.
pub const RETRY_AFTER_SECS: u32 = 1;
/// How long a replica trusts its copy of an endpoint before reading it again, so an update
/// made through another replica reaches this one.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(5);
/// Maximum labels in one request.
pub const MAX_LABELS: usize = 10_000;
/// Most prediction rows one read returns.
pub const MAX_PREDICTION_ROWS: usize = 1000;
/// Maximum request id length in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 256;
/// Response parameter that carries the server-generated request id, the key of the
/// prediction log and of labels.
pub const REQUEST_ID_PARAMETER: &str = "ghaf_request_id";
/// First wait before a load that failed for a transient reason (store or runtime outage) is
/// tried again; the wait doubles up to [`LOAD_RETRY_MAX`].
pub const LOAD_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Maximum wait between two load attempts.
pub const LOAD_RETRY_MAX: Duration = Duration::from_secs(60);
/// Time between two attempts to create a missing prediction log or label dataset.
pub const DATASET_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Requests with at most this many rows have their log rows built on the calling task;
/// larger ones on the blocking pool.
pub const INLINE_LOG_ROWS: usize = 64;
/// Adaptive batching of each loaded model: concurrent requests of the same shape run as one
/// batch of at most this many rows, on the blocking thread pool.
pub const BATCH_MAX_ROWS: usize = 256;
/// Maximum time a request waits for other requests to batch with while the model is busy.
pub const BATCH_MAX_DELAY: Duration = Duration::from_millis(1);
/// Maximum requests queued per loaded model; further requests get a 503 response.
pub const BATCH_MAX_QUEUED: usize = 1024;

/// Deployment settings: the body of an endpoint create or update.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// Registered model name.
    pub model: String,
    /// Registered model version; 0 with `follow_alias` deploys the version the alias
    /// points at now.
    pub version: i64,
    /// Registered model alias (such as `champion`) the endpoint follows: the rollout
    /// controller moves the endpoint to each version the alias is set to.
    #[serde(default)]
    pub follow_alias: Option<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    /// `cpu` (the default), `cuda` or `cuda:N`.
    #[serde(default)]
    pub execution_provider: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Load state of one variant on this server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantStatus {
    pub name: String,
    pub model: String,
    pub version: i64,
    pub weight: u32,
    /// `loading`, `ready` or `failed`.
    pub state: String,
    /// Whether the variant is the endpoint's shadow, which only receives mirrored requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time to fetch, verify and load the model, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    /// Time of the warm-up prediction, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_ms: Option<u64>,
}

/// An endpoint with the status of its variants on this server.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointInfo {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub status: Vec<VariantStatus>,
    /// Inputs a request carries, once the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<TensorMeta>>,
    /// Outputs of the model, once it is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<TensorMeta>>,
    pub predictions_dataset: String,
    pub labels_dataset: String,
}

/// One label of a logged prediction.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelInput {
    pub request_id: String,
    #[serde(default)]
    pub row: i64,
    pub label: f64,
}

/// Result of posting labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelOutcome {
    pub received: u64,
    pub accepted: u64,
    /// Labels whose (request_id, row) was labelled before, or repeats in the request; the
    /// first label is kept.
    pub duplicates: u64,
    /// Accepted labels whose request id is not (yet) in the prediction log: unknown, or
    /// logged less than a second ago.
    pub unknown_request_ids: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_version: Option<i64>,
}

/// A request served by one variant, before the requested outputs are picked.
struct Served {
    response: InferResponse,
    /// The server-generated request id.
    request_id: String,
    rows: usize,
    ready: Arc<ReadyModel>,
}

/// A model version loaded for one variant, with what inference needs around it.
pub(crate) struct ReadyModel {
    model: LoadedModel,
    /// Runs every prediction of this model on the blocking pool, batching concurrent ones.
    batcher: Batcher,
    binding: Option<FeatureBinding>,
    layout: LogLayout,
    load_ms: u64,
    warmup_ms: u64,
    /// Whether the prediction log and label datasets exist with this layout.
    datasets_ready: AtomicBool,
    /// Last attempt to create them.
    datasets_tried: Mutex<Instant>,
}

pub(crate) enum VariantState {
    Loading,
    Ready(Arc<ReadyModel>),
    /// A load failed for a transient reason; the next attempt starts at `next_at`.
    Retrying {
        reason: String,
        attempt: u32,
        next_at: Instant,
    },
    Failed {
        reason: String,
        load_ms: u64,
    },
}

/// A model version loaded on this server for an endpoint. Generations of the endpoint that
/// serve the same model, version, execution provider and feature service share one slot,
/// so a weight change does not load the model again.
pub(crate) struct ModelSlot {
    model: String,
    version: i64,
    execution_provider: String,
    feature_service: Option<String>,
    state: RwLock<VariantState>,
}

impl ModelSlot {
    /// Returns whether this slot can serve `variant` of `endpoint` without a new load: same
    /// model settings, and not failed (a failed load is tried again on redeployment).
    fn serves(&self, endpoint: &Endpoint, variant: &Variant) -> bool {
        self.model == variant.model
            && self.version == variant.version
            && self.execution_provider == endpoint.execution_provider
            && self.feature_service == endpoint.feature_service
            && !matches!(&*lock_read(&self.state), VariantState::Failed { .. })
    }
}

pub(crate) struct VariantRuntime {
    variant: Variant,
    slot: Arc<ModelSlot>,
    counters: Arc<VariantCounters>,
}

pub(crate) struct EndpointRuntime {
    record: Endpoint,
    variants: Vec<Arc<VariantRuntime>>,
    routing: Routing,
    checked_at: Mutex<Instant>,
    /// Set while reading the record again fails, so the failure is logged once.
    revalidate_failing: AtomicBool,
    /// Whether the shadow comparison dataset exists, and the last attempt to create it.
    shadow_dataset: Mutex<(bool, Option<Instant>)>,
}

type RuntimeKey = (TenantId, ProjectId, String);

struct Inner {
    store: EndpointStore,
    loader: Arc<dyn ModelLoader>,
    ingest: IngestService,
    features: Option<Arc<FeatureStore>>,
    log: PredictionLog,
    endpoints: RwLock<HashMap<RuntimeKey, Arc<EndpointRuntime>>>,
    /// Failed attempts to create a prediction log or label dataset.
    dataset_failures: AtomicU64,
    /// Log row builds running on the blocking pool, which a flush waits for.
    building_logs: std::sync::atomic::AtomicUsize,
    /// Mirrored requests whose shadow prediction still runs, which a flush waits for.
    mirroring: std::sync::atomic::AtomicUsize,
    /// Requests not mirrored because [`MAX_MIRRORS_IN_FLIGHT`] were running.
    skipped_mirrors: AtomicU64,
    stats: StatsRegistry,
}

/// The serving side of Ghaf.
pub struct ServingService {
    inner: Arc<Inner>,
}

fn lock_read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Returns whether a runtime built from `cached` can serve the stored record `stored`: the
/// same endpoint at the same or a newer generation. An endpoint deleted and created again
/// under its name starts over at generation 1, so the creation time distinguishes it from
/// the deleted one that this server may still cache.
fn is_up_to_date(cached: &Endpoint, stored: &Endpoint) -> bool {
    cached.created_at == stored.created_at && cached.generation >= stored.generation
}

fn tracking_scope(scope: &EndpointScope) -> ghaf_tracking::Scope {
    ghaf_tracking::Scope {
        tenant: scope.tenant.clone(),
        project: scope.project.clone(),
    }
}

fn key(scope: &EndpointScope, name: &str) -> RuntimeKey {
    (scope.tenant.clone(), scope.project.clone(), name.to_owned())
}

/// Name of an endpoint's prediction log dataset.
pub fn predictions_dataset(endpoint: &str) -> String {
    format!("{endpoint}{}", log::PREDICTIONS_SUFFIX)
}

/// Name of an endpoint's label dataset.
pub fn labels_dataset(endpoint: &str) -> String {
    format!("{endpoint}{}", log::LABELS_SUFFIX)
}

/// Name of an endpoint's shadow comparison dataset.
pub fn shadow_dataset(endpoint: &str) -> String {
    format!("{endpoint}{}", shadow::SHADOW_SUFFIX)
}

/// Returns whether an inference error is the server's fault (counted in a variant's
/// errors), not the caller's.
fn is_server_error(error: &ServingError) -> bool {
    !matches!(
        error,
        ServingError::InvalidInput { .. }
            | ServingError::InvalidOutput { .. }
            | ServingError::EndpointNotFound { .. }
            | ServingError::VersionNotFound { .. }
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn runtime_error(endpoint: &str, error: RuntimeError) -> ServingError {
    match error {
        RuntimeError::InvalidInput { input, reason } => {
            ServingError::InvalidInput { input, reason }
        }
        RuntimeError::InvalidOutput { output, reason } => {
            ServingError::InvalidOutput { output, reason }
        }
        // The batching queue is full or ONNX Runtime is unavailable: retry later.
        RuntimeError::Unavailable(reason) => ServingError::NotReady {
            endpoint: endpoint.to_owned(),
            reason,
            retry_after_secs: RETRY_AFTER_SECS,
        },
        other => ServingError::Internal(other.to_string()),
    }
}

impl ServingService {
    /// Creates the service and starts the prediction log writer on the current Tokio
    /// runtime. `on_log_drop` is called with the number of log rows dropped.
    pub fn new(
        db: ghaf_meta::Db,
        loader: Arc<dyn ModelLoader>,
        ingest: IngestService,
        features: Option<Arc<FeatureStore>>,
        on_log_drop: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    ) -> Self {
        let log = PredictionLog::start(ingest.clone(), on_log_drop);
        let inner = Arc::new(Inner {
            store: EndpointStore::new(db.clone()),
            loader,
            ingest,
            features,
            log,
            endpoints: RwLock::new(HashMap::new()),
            dataset_failures: AtomicU64::new(0),
            building_logs: std::sync::atomic::AtomicUsize::new(0),
            mirroring: std::sync::atomic::AtomicUsize::new(0),
            skipped_mirrors: AtomicU64::new(0),
            stats: StatsRegistry::new(db),
        });
        tokio::spawn(flush_stats_periodically(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// UUIDv7 this server picked at start; its rows in `endpoint_variant_stats` carry it.
    pub fn replica_id(&self) -> &str {
        self.inner.stats.replica_id()
    }

    /// Writes this replica's variant counters to the database now, as the background flush
    /// does every [`stats::STATS_FLUSH_INTERVAL`].
    pub async fn flush_stats(&self) -> Result<(), ServeError> {
        self.inner.stats.flush().await
    }

    pub fn store(&self) -> &EndpointStore {
        &self.inner.store
    }

    /// Prediction log rows dropped since start because the log queue was full or the
    /// dataset could not be written.
    pub fn dropped_log_rows(&self) -> u64 {
        self.inner.log.dropped()
    }

    /// Failed attempts to create a prediction log or label dataset since start. Inference
    /// goes on meanwhile; the creation is tried again every [`DATASET_RETRY_AFTER`].
    pub fn log_dataset_failures(&self) -> u64 {
        self.inner.dataset_failures.load(Ordering::Relaxed)
    }

    /// Requests not mirrored to a shadow since start because [`MAX_MIRRORS_IN_FLIGHT`]
    /// mirrored requests were still running.
    pub fn skipped_mirrors(&self) -> u64 {
        self.inner.skipped_mirrors.load(Ordering::Relaxed)
    }

    /// Writes every queued prediction log row; call at shutdown.
    pub async fn flush_log(&self) {
        // Rows still being built on the blocking pool and shadow predictions still running
        // are waited for, up to 5 seconds.
        let started = Instant::now();
        while (self.inner.building_logs.load(Ordering::Acquire) > 0
            || self.inner.mirroring.load(Ordering::Acquire) > 0)
            && started.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.log.flush().await;
    }

    /// Starts loading every stored endpoint; call once at start-up.
    pub async fn load_all(&self) -> Result<usize, ServeError> {
        let endpoints = self.inner.store.list_all().await?;
        let count = endpoints.len();
        for endpoint in endpoints {
            self.deploy_runtime(endpoint);
        }
        Ok(count)
    }

    fn validate(&self, name: &str, spec: &DeploySpec) -> Result<(), ServeError> {
        Name::parse(name).map_err(|error| ServeError::invalid("name", error.to_string()))?;
        if name.len() > MAX_ENDPOINT_NAME {
            return Err(ServeError::invalid(
                "name",
                format!(
                    "endpoint name {name:?} has {} characters; use at most {MAX_ENDPOINT_NAME}, so that its log dataset {:?} is a valid name",
                    name.len(),
                    predictions_dataset(name)
                ),
            ));
        }
        if spec.model.trim().is_empty() {
            return Err(ServeError::invalid(
                "model",
                "name the registered model to serve",
            ));
        }
        if spec.version < 0 || (spec.version == 0 && spec.follow_alias.is_none()) {
            return Err(ServeError::invalid(
                "version",
                format!(
                    "version is {}; model versions start at 1 (omit the version only together with follow_alias)",
                    spec.version
                ),
            ));
        }
        if let Some(alias) = &spec.follow_alias {
            traffic::validate_alias(alias)?;
        }
        if let Some(provider) = &spec.execution_provider {
            ghaf_runtime::ExecutionProvider::parse(provider)
                .map_err(|message| ServeError::invalid("execution_provider", message))?;
        }
        Ok(())
    }

    async fn check_references(
        &self,
        scope: &EndpointScope,
        spec: &DeploySpec,
    ) -> Result<(), ServeError> {
        match self
            .inner
            .loader
            .check_exists(&tracking_scope(scope), &spec.model, spec.version)
            .await
        {
            Ok(()) => {}
            Err(LoadError::NotFound(_)) => {
                return Err(ServeError::NotFound {
                    what: "model version",
                    name: format!("{} version {}", spec.model, spec.version),
                });
            }
            Err(LoadError::Failed(reason)) => return Err(ServeError::Internal(reason)),
            Err(LoadError::Transient(reason)) => {
                return Err(ServeError::Unavailable(format!(
                    "cannot check model {} version {}: {reason}; retry later",
                    spec.model, spec.version
                )));
            }
        }
        if let Some(service) = &spec.feature_service {
            let features = self.inner.features.as_ref().ok_or_else(|| {
                ServeError::invalid(
                    "feature_service",
                    "this server has no feature store, so endpoints cannot join online features",
                )
            })?;
            let registry = features
                .registry(&scope.tenant, &scope.project)
                .await
                .map_err(|error| {
                    ServeError::Internal(format!("cannot read the feature registry: {error}"))
                })?;
            if !registry.feature_services.iter().any(|s| &s.name == service) {
                return Err(ServeError::NotFound {
                    what: "feature service",
                    name: service.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates an endpoint and starts loading its model.
    pub async fn create(
        &self,
        scope: &EndpointScope,
        project_name: &str,
        name: &str,
        spec: &DeploySpec,
        actor: &str,
    ) -> Result<EndpointInfo, ServeError> {
        self.validate(name, spec)?;
        let mut spec = spec.clone();
        if let Some(alias) = &spec.follow_alias
            && spec.version == 0
        {
            spec.version = self.resolve_alias(scope, &spec.model, alias).await?;
        }
        let spec = &spec;
        self.check_references(scope, spec).await?;
        let now = ghaf_core::now_millis();
        let endpoint = Endpoint {
            tenant: scope.tenant.clone(),
            project: scope.project.clone(),
            project_name: project_name.to_owned(),
            name: name.to_owned(),
            description: spec.description.clone().unwrap_or_default(),
            feature_service: spec.feature_service.clone(),
            execution_provider: spec
                .execution_provider
                .clone()
                .unwrap_or_else(|| "cpu".to_owned()),
            variants: vec![Variant {
                name: PRIMARY_VARIANT.to_owned(),
                model: spec.model.clone(),
                version: spec.version,
                weight: 100,
            }],
            policy: policy::TrafficPolicy::Single,
            shadow: None,
            follow_alias: spec.follow_alias.clone(),
            rollout: None,
            generation: 1,
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
            updated_by: actor.to_owned(),
        };
        self.inner.store.insert(&endpoint).await?;
        let runtime = self.deploy_runtime(endpoint);
        Ok(self.info(&runtime))
    }

    /// Changes the model version (or other settings) an endpoint serves and reloads it.
    pub async fn update(
        &self,
        scope: &EndpointScope,
        name: &str,
        spec: &DeploySpec,
        actor: &str,
    ) -> Result<EndpointInfo, ServeError> {
        self.validate(name, spec)?;
        if spec.version == 0 {
            return Err(ServeError::invalid(
                "version",
                "name the model version to deploy; an update does not resolve follow_alias",
            ));
        }
        let current = self
            .inner
            .store
            .get(&scope.tenant, &scope.project, name)
            .await?
            .ok_or_else(|| ServeError::NotFound {
                what: "endpoint",
                name: name.to_owned(),
            })?;
        self.check_references(scope, spec).await?;
        let mut endpoint = current.clone();
        endpoint.description = spec
            .description
            .clone()
            .unwrap_or(current.description.clone());
        endpoint.feature_service = spec.feature_service.clone();
        endpoint.execution_provider = spec
            .execution_provider
            .clone()
            .unwrap_or_else(|| "cpu".to_owned());
        if current
            .rollout
            .as_ref()
            .is_some_and(policy::RolloutState::is_active)
        {
            return Err(ServeError::Conflict(format!(
                "endpoint {name:?} has a rollout in progress; abort it before deploying another version directly"
            )));
        }
        // A direct deployment replaces every variant, so the traffic policy goes back to a
        // single variant and the shadow is removed.
        endpoint.variants = vec![Variant {
            name: PRIMARY_VARIANT.to_owned(),
            model: spec.model.clone(),
            version: spec.version,
            weight: 100,
        }];
        endpoint.policy = policy::TrafficPolicy::Single;
        endpoint.shadow = None;
        if spec.follow_alias.is_some() {
            endpoint.follow_alias = spec.follow_alias.clone();
        }
        endpoint.generation = current.generation + 1;
        endpoint.updated_at = ghaf_core::now_millis();
        endpoint.updated_by = actor.to_owned();
        self.inner
            .store
            .update(&endpoint, current.generation)
            .await?;
        let runtime = self.deploy_runtime(endpoint);
        Ok(self.info(&runtime))
    }

    /// Returns an endpoint with its status on this server.
    pub async fn get(&self, scope: &EndpointScope, name: &str) -> Result<EndpointInfo, ServeError> {
        let runtime = self
            .runtime_for(scope, name)
            .await?
            .ok_or_else(|| ServeError::NotFound {
                what: "endpoint",
                name: name.to_owned(),
            })?;
        Ok(self.info(&runtime))
    }

    /// Lists a project's endpoints with their status on this server.
    pub async fn list(&self, scope: &EndpointScope) -> Result<Vec<EndpointInfo>, ServeError> {
        let endpoints = self.inner.store.list(&scope.tenant, &scope.project).await?;
        let mut infos = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let runtime = self.current_runtime(endpoint);
            infos.push(self.info(&runtime));
        }
        Ok(infos)
    }

    /// Deletes an endpoint and unloads its model. Its prediction log and label datasets
    /// stay.
    pub async fn delete(&self, scope: &EndpointScope, name: &str) -> Result<(), ServeError> {
        let deleted = self
            .inner
            .store
            .delete(&scope.tenant, &scope.project, name)
            .await?;
        lock_write(&self.inner.endpoints).remove(&key(scope, name));
        if !deleted {
            return Err(ServeError::NotFound {
                what: "endpoint",
                name: name.to_owned(),
            });
        }
        if let Err(error) = self
            .inner
            .stats
            .forget(&scope.tenant, &scope.project, name)
            .await
        {
            tracing::warn!(
                tenant = %scope.tenant,
                project = %scope.project,
                endpoint = name,
                %error,
                "endpoint deleted, but its variant stats could not be deleted; they are pruned after 7 days"
            );
        }
        Ok(())
    }

    fn info(&self, runtime: &EndpointRuntime) -> EndpointInfo {
        let mut inputs = None;
        let mut outputs = None;
        let shadow_index = runtime.routing.shadow_index();
        let status = runtime
            .variants
            .iter()
            .enumerate()
            .map(|(index, variant)| {
                let mut status = VariantStatus {
                    name: variant.variant.name.clone(),
                    model: variant.variant.model.clone(),
                    version: variant.variant.version,
                    weight: variant.variant.weight,
                    state: String::new(),
                    shadow: shadow_index == Some(index),
                    reason: None,
                    load_ms: None,
                    warmup_ms: None,
                };
                match &*lock_read(&variant.slot.state) {
                    VariantState::Loading => status.state = "loading".to_owned(),
                    VariantState::Ready(ready) => {
                        status.state = "ready".to_owned();
                        status.load_ms = Some(ready.load_ms);
                        status.warmup_ms = Some(ready.warmup_ms);
                        if inputs.is_none() && !status.shadow {
                            let signature = endpoint_signature(ready);
                            inputs = Some(signature.inputs);
                            outputs = Some(signature.outputs);
                        }
                    }
                    VariantState::Retrying {
                        reason, attempt, ..
                    } => {
                        status.state = "loading".to_owned();
                        status.reason = Some(format!(
                            "attempt {attempt} failed for a transient reason and is retried: {reason}"
                        ));
                    }
                    VariantState::Failed { reason, load_ms } => {
                        status.state = "failed".to_owned();
                        status.reason = Some(reason.clone());
                        status.load_ms = Some(*load_ms);
                    }
                }
                status
            })
            .collect();
        EndpointInfo {
            predictions_dataset: predictions_dataset(&runtime.record.name),
            labels_dataset: labels_dataset(&runtime.record.name),
            endpoint: runtime.record.clone(),
            status,
            inputs,
            outputs,
        }
    }

    /// Replaces this server's runtime of the endpoint and starts loading the models it
    /// does not hold yet.
    fn deploy_runtime(&self, endpoint: Endpoint) -> Arc<EndpointRuntime> {
        self.install_runtime(endpoint, false)
    }

    /// Installs a runtime for `endpoint` and starts loading the models that no variant of
    /// the previous runtime serves. A variant whose model, version, execution provider and
    /// feature service did not change keeps the previous runtime's loaded model, so a
    /// weight change serves every request without a reload or warm-up. With
    /// `only_if_newer`, the generation is checked again under the write lock: when the map
    /// already holds this generation or a newer one (another request deployed it first),
    /// that runtime is returned and nothing is loaded, so concurrent requests load a
    /// version once.
    fn install_runtime(&self, endpoint: Endpoint, only_if_newer: bool) -> Arc<EndpointRuntime> {
        let runtime_key = (
            endpoint.tenant.clone(),
            endpoint.project.clone(),
            endpoint.name.clone(),
        );
        let mut map = lock_write(&self.inner.endpoints);
        let previous = map.get(&runtime_key).cloned();
        if only_if_newer
            && let Some(existing) = &previous
            && is_up_to_date(&existing.record, &endpoint)
        {
            *existing
                .checked_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            return existing.clone();
        }
        let mut to_load: Vec<Arc<ModelSlot>> = Vec::new();
        let mut variants: Vec<Arc<VariantRuntime>> = Vec::with_capacity(endpoint.variants.len());
        for variant in &endpoint.variants {
            let reused = previous
                .iter()
                .flat_map(|runtime| runtime.variants.iter())
                .chain(variants.iter())
                .find(|old| old.slot.serves(&endpoint, variant))
                .map(|old| old.slot.clone());
            let slot = match reused {
                Some(slot) => slot,
                None => {
                    let slot = Arc::new(ModelSlot {
                        model: variant.model.clone(),
                        version: variant.version,
                        execution_provider: endpoint.execution_provider.clone(),
                        feature_service: endpoint.feature_service.clone(),
                        state: RwLock::new(VariantState::Loading),
                    });
                    to_load.push(slot.clone());
                    slot
                }
            };
            let counters = self.inner.stats.counters(StatsKey {
                tenant: endpoint.tenant.clone(),
                project: endpoint.project.clone(),
                endpoint: endpoint.name.clone(),
                variant: variant.name.clone(),
                model: variant.model.clone(),
                version: variant.version,
            });
            variants.push(Arc::new(VariantRuntime {
                variant: variant.clone(),
                slot,
                counters,
            }));
        }
        let routing = Routing::new(
            &endpoint.name,
            &endpoint.policy,
            &endpoint.variants,
            endpoint.shadow.as_ref(),
        );
        let runtime = Arc::new(EndpointRuntime {
            record: endpoint.clone(),
            variants,
            routing,
            checked_at: Mutex::new(Instant::now()),
            revalidate_failing: AtomicBool::new(false),
            shadow_dataset: Mutex::new((false, None)),
        });
        map.insert(runtime_key, runtime.clone());
        drop(map);
        for slot in to_load {
            let inner = self.inner.clone();
            let endpoint = endpoint.clone();
            let slot = Arc::downgrade(&slot);
            tokio::spawn(async move {
                load_variant(inner, endpoint, slot).await;
            });
        }
        runtime
    }

    /// Returns the runtime for a stored record: the current one when its generation
    /// matches (or is newer), else a new deployment.
    fn current_runtime(&self, endpoint: Endpoint) -> Arc<EndpointRuntime> {
        let runtime_key = (
            endpoint.tenant.clone(),
            endpoint.project.clone(),
            endpoint.name.clone(),
        );
        if let Some(existing) = lock_read(&self.inner.endpoints).get(&runtime_key)
            && is_up_to_date(&existing.record, &endpoint)
        {
            *existing
                .checked_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            existing.revalidate_failing.store(false, Ordering::Relaxed);
            return existing.clone();
        }
        self.install_runtime(endpoint, true)
    }

    /// Returns the endpoint's runtime, read again from the store when this server's copy is
    /// older than [`REVALIDATE_AFTER`]; `None` when the endpoint does not exist.
    async fn runtime_for(
        &self,
        scope: &EndpointScope,
        name: &str,
    ) -> Result<Option<Arc<EndpointRuntime>>, ServeError> {
        let runtime_key = key(scope, name);
        let cached = lock_read(&self.inner.endpoints).get(&runtime_key).cloned();
        if let Some(existing) = &cached {
            let checked = *existing
                .checked_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.elapsed() < REVALIDATE_AFTER {
                return Ok(cached);
            }
        }
        let stored = match self
            .inner
            .store
            .get(&scope.tenant, &scope.project, name)
            .await
        {
            Ok(stored) => stored,
            // The store is unreachable: keep serving what this server has, and log once
            // until a read succeeds again.
            Err(error) => match cached {
                Some(existing) => {
                    if !existing.revalidate_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            tenant = %scope.tenant,
                            project = %scope.project,
                            endpoint = name,
                            generation = existing.record.generation,
                            %error,
                            "cannot read the endpoint again; serving the copy this server holds"
                        );
                    }
                    return Ok(Some(existing));
                }
                None => return Err(error),
            },
        };
        match stored {
            Some(endpoint) => Ok(Some(self.current_runtime(endpoint))),
            None => {
                lock_write(&self.inner.endpoints).remove(&runtime_key);
                Ok(None)
            }
        }
    }

    async fn protocol_runtime(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
    ) -> Result<Arc<EndpointRuntime>, ServingError> {
        match self.runtime_for(scope, endpoint).await {
            Ok(Some(runtime)) => Ok(runtime),
            Ok(None) => Err(ServingError::EndpointNotFound {
                endpoint: endpoint.to_owned(),
            }),
            Err(error) => {
                tracing::error!(
                    tenant = %scope.tenant,
                    project = %scope.project,
                    endpoint,
                    %error,
                    "cannot read the endpoint"
                );
                if error.code() == ErrorCode::Unavailable {
                    Err(ServingError::NotReady {
                        endpoint: endpoint.to_owned(),
                        reason: format!("cannot read the endpoint: {error}"),
                        retry_after_secs: RETRY_AFTER_SECS,
                    })
                } else {
                    Err(ServingError::Internal(format!(
                        "cannot read endpoint {endpoint:?}: {error}"
                    )))
                }
            }
        }
    }

    /// Picks the variant for a request: the one serving `version` when it is given, else
    /// the one the endpoint's traffic policy routes the request to (by its sticky key when
    /// the policy has one and the request carries it). A variant named by `version` is
    /// looked up among the routed variants first, then the shadow.
    fn select(
        runtime: &EndpointRuntime,
        version: Option<&str>,
        request: Option<&InferRequest>,
        context: &InferContext,
    ) -> Result<Arc<VariantRuntime>, ServingError> {
        if let Some(version) = version {
            let wanted = version.trim().parse::<i64>().ok();
            let shadow = runtime.routing.shadow_index();
            let matches =
                |(_, v): &(usize, &Arc<VariantRuntime>)| Some(v.variant.version) == wanted;
            let found = runtime
                .variants
                .iter()
                .enumerate()
                .filter(|(index, _)| Some(*index) != shadow)
                .find(matches)
                .or_else(|| runtime.variants.iter().enumerate().find(matches));
            return found.map(|(_, variant)| variant.clone()).ok_or_else(|| {
                ServingError::VersionNotFound {
                    endpoint: runtime.record.name.clone(),
                    version: version.to_owned(),
                    served: runtime
                        .variants
                        .iter()
                        .map(|v| v.variant.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            });
        }
        runtime
            .routing
            .route(request, context)
            .and_then(|index| runtime.variants.get(index))
            .cloned()
            .ok_or_else(|| {
                ServingError::Internal(format!(
                    "endpoint {:?} has no variant to route requests to",
                    runtime.record.name
                ))
            })
    }

    /// Returns the variant that serves a routed request. A routed variant that cannot serve,
    /// because its model is still loading or its load failed, hands the request to the
    /// endpoint's first variant when that one is ready, so callers do not see a new
    /// variant's load problems. A failed load still counts as one failed request of the
    /// routed variant, so a canary's error check sees it and rolls the candidate back; a
    /// model that is still loading counts nothing.
    fn serving_variant(
        runtime: &EndpointRuntime,
        routed: Arc<VariantRuntime>,
    ) -> Arc<VariantRuntime> {
        let Some(first) = runtime
            .routing
            .first()
            .and_then(|index| runtime.variants.get(index))
        else {
            return routed;
        };
        if Arc::ptr_eq(first, &routed) {
            return routed;
        }
        let (ready, failed) = match &*lock_read(&routed.slot.state) {
            VariantState::Ready(_) => (true, false),
            VariantState::Failed { .. } => (false, true),
            VariantState::Loading | VariantState::Retrying { .. } => (false, false),
        };
        if ready {
            return routed;
        }
        if !matches!(&*lock_read(&first.slot.state), VariantState::Ready(_)) {
            return routed;
        }
        if failed {
            routed.counters.record(0, true);
        }
        first.clone()
    }

    fn ready(
        runtime: &EndpointRuntime,
        variant: &VariantRuntime,
    ) -> Result<Arc<ReadyModel>, ServingError> {
        slot_ready(&runtime.record.name, &variant.slot)
    }

    /// Returns whether the endpoint can serve requests: with `version`, whether that
    /// version is loaded; without, whether every variant the traffic policy routes to is
    /// loaded.
    pub async fn model_ready(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        version: Option<&str>,
    ) -> Result<bool, ServingError> {
        let runtime = self.protocol_runtime(scope, endpoint).await?;
        if version.is_some() {
            let variant = Self::select(&runtime, version, None, &InferContext::default())?;
            return Ok(matches!(
                &*lock_read(&variant.slot.state),
                VariantState::Ready(_)
            ));
        }
        let ready = runtime
            .variants
            .iter()
            .enumerate()
            .filter(|(index, _)| runtime.routing.is_routed(*index))
            .all(|(_, variant)| matches!(&*lock_read(&variant.slot.state), VariantState::Ready(_)));
        Ok(ready)
    }

    /// Returns the endpoint's metadata, of one version when `version` is given, else of the
    /// first variant the traffic policy routes to.
    pub async fn model_metadata(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        version: Option<&str>,
    ) -> Result<EndpointMetadata, ServingError> {
        let runtime = self.protocol_runtime(scope, endpoint).await?;
        let variant = match version {
            Some(_) => Self::select(&runtime, version, None, &InferContext::default())?,
            None => runtime
                .variants
                .iter()
                .enumerate()
                .find(|(index, _)| runtime.routing.is_routed(*index))
                .map(|(_, variant)| variant.clone())
                .map_or_else(
                    || Self::select(&runtime, None, None, &InferContext::default()),
                    Ok,
                )?,
        };
        let ready = Self::ready(&runtime, &variant)?;
        Ok(EndpointMetadata {
            name: runtime.record.name.clone(),
            versions: runtime
                .variants
                .iter()
                .map(|v| v.variant.version.to_string())
                .collect(),
            signature: endpoint_signature(&ready),
        })
    }

    /// Evaluates a request on the endpoint, on one version when `version` is given, else on
    /// the variant the traffic policy picks. Joins online features when the endpoint is
    /// bound to a feature service, logs the prediction and counts it in the variant's
    /// stats. When the endpoint has a shadow, a share of the requests routed by the policy
    /// is mirrored to it after this answer is ready; the caller never waits for the shadow.
    pub async fn infer(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        version: Option<&str>,
        mut request: InferRequest,
        context: &InferContext,
    ) -> Result<InferResponse, ServingError> {
        let started = Instant::now();
        let runtime = self.protocol_runtime(scope, endpoint).await?;
        let variant = Self::select(&runtime, version, Some(&request), context)?;
        let variant = match version {
            Some(_) => variant,
            None => Self::serving_variant(&runtime, variant),
        };
        let mirror = match version {
            Some(_) => None,
            None => runtime
                .routing
                .mirror()
                .and_then(|index| runtime.variants.get(index).cloned()),
        };
        let mirrored_inputs = mirror.as_ref().map(|_| request.inputs.clone());
        let requested = std::mem::take(&mut request.outputs);
        let result = self
            .serve(
                scope, endpoint, &runtime, &variant, request, &requested, context, started,
            )
            .await;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => variant.counters.record(latency_us, false),
            Err(error) => variant.counters.record(latency_us, is_server_error(error)),
        }
        let served = result?;
        let mut response = served.response;
        if let (Some(shadow), Some(inputs)) = (mirror, mirrored_inputs) {
            shadow::spawn(shadow::Mirror {
                inner: self.inner.clone(),
                scope: scope.clone(),
                runtime: runtime.clone(),
                primary: variant.clone(),
                primary_ready: served.ready,
                shadow,
                request_id: served.request_id,
                inputs,
                primary_outputs: response.outputs.clone(),
                rows: served.rows,
            });
        }
        if !requested.is_empty() {
            response.outputs = requested
                .iter()
                .filter_map(|wanted| {
                    response
                        .outputs
                        .iter()
                        .find(|o| o.name == wanted.name)
                        .cloned()
                })
                .collect();
        }
        Ok(response)
    }

    /// Runs one request on `variant` and logs it; the response carries every output.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        runtime: &Arc<EndpointRuntime>,
        variant: &Arc<VariantRuntime>,
        request: InferRequest,
        requested: &[ghaf_runtime::RequestedOutput],
        context: &InferContext,
        started: Instant,
    ) -> Result<Served, ServingError> {
        let ready = Self::ready(runtime, variant)?;
        let signature = ready.model.predictor.signature();

        let server_id = uuid::Uuid::now_v7().to_string();
        let client_id = match request.id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => {
                if id.len() > MAX_REQUEST_ID_BYTES {
                    return Err(ServingError::InvalidInput {
                        input: "id".to_owned(),
                        reason: format!(
                            "the request id has {} bytes; use at most {MAX_REQUEST_ID_BYTES}",
                            id.len()
                        ),
                    });
                }
                Some(id.to_owned())
            }
            _ => None,
        };
        for output in requested {
            if !signature.outputs.iter().any(|o| o.name == output.name) {
                return Err(ServingError::InvalidOutput {
                    output: output.name.clone(),
                    reason: format!(
                        "not an output of this model; its outputs are {}",
                        signature
                            .outputs
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }

        let mut parameters = BTreeMap::new();
        parameters.insert(
            REQUEST_ID_PARAMETER.to_owned(),
            Parameter::String(server_id.clone()),
        );
        let log_has_room = self.inner.log.has_room(1);
        let (model_inputs, outputs, rows) = match &ready.binding {
            Some(binding) => {
                let features = self.inner.features.as_ref().ok_or_else(|| {
                    ServingError::Internal("the feature store is not configured".to_owned())
                })?;
                let joined = features::join(
                    features,
                    &scope.tenant,
                    &scope.project,
                    binding,
                    &ready.model.features,
                    &request.inputs,
                )
                .await
                .map_err(|error| match error {
                    ServingError::NotReady {
                        reason,
                        retry_after_secs,
                        ..
                    } => {
                        tracing::warn!(
                            tenant = %scope.tenant,
                            project = %scope.project,
                            endpoint,
                            request_id = %server_id,
                            %reason,
                            "online feature read failed; answering 503"
                        );
                        ServingError::NotReady {
                            endpoint: endpoint.to_owned(),
                            reason,
                            retry_after_secs,
                        }
                    }
                    other => other,
                })?;
                let missing_rows = joined.missing.iter().filter(|m| !m.is_empty()).count();
                parameters.insert(
                    "missing_features".to_owned(),
                    Parameter::String(
                        serde_json::to_string(&joined.missing).unwrap_or_else(|_| "[]".to_owned()),
                    ),
                );
                parameters.insert(
                    "missing_rows".to_owned(),
                    Parameter::Int(missing_rows as i64),
                );
                let rows = joined.rows;
                let model = ready.clone();
                let input_name = signature
                    .inputs
                    .first()
                    .map(|meta| meta.name.clone())
                    .unwrap_or_else(|| loader::NATIVE_INPUT.to_owned());
                let tensor = Tensor::new(
                    input_name,
                    vec![rows as i64, ready.model.features.len() as i64],
                    TensorData::Fp64(joined.matrix),
                );
                let inputs = vec![tensor];
                let (inputs, outputs) = predict(endpoint, model, inputs, log_has_room).await?;
                (inputs, outputs, rows)
            }
            None => {
                let (inputs, outputs) =
                    predict(endpoint, ready.clone(), request.inputs, log_has_room).await?;
                let rows = output_rows(&outputs);
                (inputs, outputs, rows)
            }
        };
        let latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);

        self.log_prediction(
            scope,
            runtime,
            variant,
            &ready,
            RowMeta {
                request_id: server_id.clone(),
                client_request_id: client_id.clone(),
                principal: context.principal.clone(),
                endpoint: runtime.record.name.clone(),
                variant: variant.variant.name.clone(),
                model_name: variant.variant.model.clone(),
                model_version: variant.variant.version,
                latency_us,
            },
            rows,
            model_inputs,
            &outputs,
        );
        tracing::debug!(
            endpoint,
            request_id = %server_id,
            client_request_id = client_id.as_deref().unwrap_or(""),
            principal = %context.principal,
            rows,
            latency_us,
            "inference served"
        );

        Ok(Served {
            response: InferResponse {
                model_name: runtime.record.name.clone(),
                model_version: Some(variant.variant.version.to_string()),
                // The protocol echoes the caller's id; the server id is in the parameters.
                id: Some(client_id.unwrap_or_else(|| server_id.clone())),
                parameters,
                outputs,
            },
            request_id: server_id,
            rows,
            ready,
        })
    }

    /// Queues the log rows of one request without making the request wait: at most
    /// [`log::MAX_ROWS_PER_REQUEST`] rows, built on the blocking pool when there are more
    /// than [`INLINE_LOG_ROWS`]. `inputs` is `None` when the log had no room at predict time.
    #[allow(clippy::too_many_arguments)]
    fn log_prediction(
        &self,
        scope: &EndpointScope,
        runtime: &EndpointRuntime,
        variant: &VariantRuntime,
        ready: &Arc<ReadyModel>,
        meta: RowMeta,
        rows: usize,
        inputs: Option<Vec<Tensor>>,
        outputs: &[Tensor],
    ) {
        self.ensure_datasets_later(runtime, variant, ready);
        let logged = rows.min(log::MAX_ROWS_PER_REQUEST);
        let capped = (rows - logged) as u64;
        let inputs = match inputs {
            Some(inputs) if self.inner.log.has_room(logged) => inputs,
            _ => {
                // The queue is full: count the rows without building them.
                self.inner.log.count_dropped(rows as u64);
                return;
            }
        };
        if capped > 0 {
            self.inner.log.count_dropped(capped);
            tracing::warn!(
                tenant = %scope.tenant,
                project = %scope.project,
                endpoint = %meta.endpoint,
                request_id = %meta.request_id,
                client_request_id = meta.client_request_id.as_deref().unwrap_or(""),
                rows,
                logged,
                "request has more rows than the prediction log keeps per request; the rest are not logged"
            );
        }
        let target = LogTarget {
            tenant: scope.tenant.clone(),
            project: scope.project.clone(),
            project_name: runtime.record.project_name.clone(),
            dataset: predictions_dataset(&runtime.record.name),
        };
        if logged <= INLINE_LOG_ROWS {
            let log_rows = ready.layout.rows(&meta, rows, logged, &inputs, outputs);
            self.inner.log.record(target, log_rows);
            return;
        }
        let inner = self.inner.clone();
        let ready = ready.clone();
        let outputs = outputs.to_vec();
        inner.building_logs.fetch_add(1, Ordering::AcqRel);
        tokio::task::spawn_blocking(move || {
            let log_rows = ready.layout.rows(&meta, rows, logged, &inputs, &outputs);
            inner.log.record(target, log_rows);
            inner.building_logs.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Starts creating the prediction log and label datasets again when a load could not
    /// create them, at most every [`DATASET_RETRY_AFTER`].
    fn ensure_datasets_later(
        &self,
        runtime: &EndpointRuntime,
        variant: &VariantRuntime,
        ready: &Arc<ReadyModel>,
    ) {
        if ready.datasets_ready.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut tried = ready
                .datasets_tried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if tried.elapsed() < DATASET_RETRY_AFTER {
                return;
            }
            *tried = Instant::now();
        }
        let inner = self.inner.clone();
        let endpoint = runtime.record.clone();
        let variant = variant.variant.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if ensure_log_datasets(
                &inner,
                &endpoint,
                &variant.model,
                variant.version,
                &ready.layout,
            )
            .await
            {
                ready.datasets_ready.store(true, Ordering::Relaxed);
            }
        });
    }

    /// Stores labels of logged predictions in `<endpoint>-labels`.
    pub async fn post_labels(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        labels: &[LabelInput],
        actor: &str,
    ) -> Result<LabelOutcome, ServeError> {
        if labels.is_empty() {
            return Err(ServeError::invalid("labels", "no labels given"));
        }
        if labels.len() > MAX_LABELS {
            return Err(ServeError::invalid(
                "labels",
                format!(
                    "{} labels in one request; send at most {MAX_LABELS}",
                    labels.len()
                ),
            ));
        }
        for (index, label) in labels.iter().enumerate() {
            if label.request_id.trim().is_empty() || label.request_id.len() > MAX_REQUEST_ID_BYTES {
                return Err(ServeError::invalid(
                    "labels",
                    format!(
                        "label {index}: request_id must have 1 to {MAX_REQUEST_ID_BYTES} bytes"
                    ),
                ));
            }
            if label.row < 0 {
                return Err(ServeError::invalid(
                    "labels",
                    format!("label {index}: row is {}; rows start at 0", label.row),
                ));
            }
            if !label.label.is_finite() {
                return Err(ServeError::invalid(
                    "labels",
                    format!("label {index}: the label must be a finite number"),
                ));
            }
        }
        let record = self
            .inner
            .store
            .get(&scope.tenant, &scope.project, endpoint)
            .await?
            .ok_or_else(|| ServeError::NotFound {
                what: "endpoint",
                name: endpoint.to_owned(),
            })?;
        let dataset_name = labels_dataset(endpoint);
        log::ensure_dataset(
            &self.inner.ingest,
            &scope.tenant,
            &scope.project,
            &dataset_name,
            &format!("Ground-truth labels of endpoint {endpoint}'s predictions"),
            &log::labels_schema(),
            actor,
        )
        .await
        .map_err(ServeError::Internal)?;
        let dataset = self
            .inner
            .ingest
            .store()
            .get_dataset(&scope.tenant, &scope.project, &dataset_name)
            .await
            .map_err(|error| ServeError::Internal(error.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut body = Vec::new();
        for label in labels {
            let line = serde_json::json!({
                "request_id": label.request_id,
                "row": label.row,
                "label": label.label,
                "labelled_at": now,
            });
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
        let outcome = self
            .inner
            .ingest
            .push(
                &dataset,
                &record.project_name,
                &body,
                PushFormat::Ndjson,
                actor,
            )
            .await
            .map_err(|error| ServeError::Internal(format!("cannot store the labels: {error}")))?;

        let keys: Vec<String> = labels
            .iter()
            .map(|l| serde_json::json!([l.request_id, l.row]).to_string())
            .collect();
        let logged = match self
            .inner
            .ingest
            .store()
            .get_dataset(
                &scope.tenant,
                &scope.project,
                &predictions_dataset(endpoint),
            )
            .await
        {
            Ok(predictions) => self
                .inner
                .ingest
                .store()
                .stored_message_keys(&predictions.id, &keys)
                .await
                .map_err(|error| ServeError::Internal(error.to_string()))?,
            Err(ghaf_ingest::IngestError::NotFound { .. }) => Default::default(),
            Err(error) => return Err(ServeError::Internal(error.to_string())),
        };
        let unknown = keys.iter().filter(|k| !logged.contains(*k)).count() as u64;
        Ok(LabelOutcome {
            received: outcome.received,
            accepted: outcome.accepted,
            duplicates: outcome.duplicates_dropped,
            unknown_request_ids: unknown.min(outcome.accepted),
            dataset_version: outcome.segment.map(|segment| segment.version),
        })
    }

    /// Returns the newest prediction log rows, newest first.
    pub async fn recent_predictions(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ServeError> {
        self.recent_rows(scope, endpoint, &predictions_dataset(endpoint), limit)
            .await
    }

    /// Returns the newest rows of the shadow comparison dataset, newest first.
    pub async fn recent_shadow_comparisons(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ServeError> {
        self.recent_rows(scope, endpoint, &shadow_dataset(endpoint), limit)
            .await
    }

    /// Returns the newest rows of one of an endpoint's datasets, newest first; none when
    /// the dataset does not exist yet.
    async fn recent_rows(
        &self,
        scope: &EndpointScope,
        endpoint: &str,
        dataset_name: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ServeError> {
        if !(1..=MAX_PREDICTION_ROWS).contains(&limit) {
            return Err(ServeError::invalid(
                "limit",
                format!("limit is {limit}; use 1 to {MAX_PREDICTION_ROWS}"),
            ));
        }
        if self
            .inner
            .store
            .get(&scope.tenant, &scope.project, endpoint)
            .await?
            .is_none()
        {
            return Err(ServeError::NotFound {
                what: "endpoint",
                name: endpoint.to_owned(),
            });
        }
        let store = self.inner.ingest.store();
        let dataset = match store
            .get_dataset(&scope.tenant, &scope.project, dataset_name)
            .await
        {
            Ok(dataset) => dataset,
            Err(ghaf_ingest::IngestError::NotFound { .. }) => return Ok(Vec::new()),
            Err(error) => return Err(ServeError::Internal(error.to_string())),
        };
        // NOTE: this lists every log segment's record to find the newest, so an endpoint with
        // hundreds of thousands of segments makes this read slow.
        let versions = store
            .list_versions(&scope.tenant, &dataset.id)
            .await
            .map_err(|error| ServeError::Internal(error.to_string()))?;
        let mut rows = Vec::new();
        for version in versions {
            let digest = IngestService::digest(&version.content_digest)
                .map_err(|error| ServeError::Internal(error.to_string()))?;
            let bytes = self
                .inner
                .ingest
                .blobs()
                .get(&scope.tenant, &digest)
                .await
                .map_err(|error| {
                    ServeError::Internal(format!(
                        "cannot read log segment {}: {error}",
                        version.version
                    ))
                })?;
            let mut segment = rows::parquet_rows(bytes).map_err(|error| {
                ServeError::Internal(format!(
                    "cannot decode log segment {}: {error}",
                    version.version
                ))
            })?;
            segment.reverse();
            rows.extend(segment);
            if rows.len() >= limit {
                break;
            }
        }
        rows.truncate(limit);
        Ok(rows)
    }
}

/// Runs the prediction through the model's batcher, on the blocking pool, never on a Tokio
/// worker. Returns the inputs too when `keep_inputs` (for the prediction log).
async fn predict(
    endpoint: &str,
    ready: Arc<ReadyModel>,
    inputs: Vec<Tensor>,
    keep_inputs: bool,
) -> Result<(Option<Vec<Tensor>>, Vec<Tensor>), ServingError> {
    let logged_inputs = keep_inputs.then(|| inputs.clone());
    let outputs = ready
        .batcher
        .predict(inputs, Vec::new())
        .await
        .map_err(|error| runtime_error(endpoint, error))?;
    Ok((logged_inputs, outputs))
}

fn output_rows(outputs: &[Tensor]) -> usize {
    outputs
        .first()
        .and_then(|t| t.shape.first())
        .map_or(1, |&n| usize::try_from(n).unwrap_or(0))
}

/// Returns the protocol signature of a loaded variant. A feature-bound endpoint takes the
/// join keys and request-time features instead of the model's matrix.
fn endpoint_signature(ready: &ReadyModel) -> ModelSignature {
    let mut signature = ready.model.predictor.signature().clone();
    if let Some(binding) = &ready.binding {
        signature.inputs = binding.inputs();
    }
    signature
}

/// Loads one variant and records the outcome in its state. A transient failure (store or
/// runtime outage) is retried with a doubling backoff while the variant is still deployed;
/// requests meanwhile get `NotReady` with the time to the next attempt.
async fn load_variant(inner: Arc<Inner>, endpoint: Endpoint, slot: Weak<ModelSlot>) {
    let mut attempt: u32 = 0;
    let mut backoff = LOAD_RETRY_FIRST;
    loop {
        attempt += 1;
        let Some(current) = slot.upgrade() else {
            // The endpoint was redeployed or deleted while this load waited.
            return;
        };
        let started = Instant::now();
        let scope = ghaf_tracking::Scope {
            tenant: endpoint.tenant.clone(),
            project: endpoint.project.clone(),
        };
        let result = prepare(&inner, &endpoint, &current, &scope, started).await;
        let load_ms = millis(started.elapsed());
        let state = match result {
            Ok(ready) => {
                tracing::info!(
                    tenant = %endpoint.tenant,
                    project = %endpoint.project,
                    endpoint = %endpoint.name,
                    model = %current.model,
                    version = current.version,
                    attempt,
                    load_ms = ready.load_ms,
                    warmup_ms = ready.warmup_ms,
                    "endpoint model loaded"
                );
                VariantState::Ready(Arc::new(ready))
            }
            Err(LoadError::Transient(reason)) => {
                tracing::warn!(
                    tenant = %endpoint.tenant,
                    project = %endpoint.project,
                    endpoint = %endpoint.name,
                    model = %current.model,
                    version = current.version,
                    attempt,
                    retry_in_ms = millis(backoff),
                    %reason,
                    "endpoint model failed to load for a transient reason; retrying"
                );
                *lock_write(&current.state) = VariantState::Retrying {
                    reason,
                    attempt,
                    next_at: Instant::now() + backoff,
                };
                drop(current);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LOAD_RETRY_MAX);
                continue;
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(
                    tenant = %endpoint.tenant,
                    project = %endpoint.project,
                    endpoint = %endpoint.name,
                    model = %current.model,
                    version = current.version,
                    attempt,
                    %reason,
                    "endpoint model failed to load"
                );
                VariantState::Failed { reason, load_ms }
            }
        };
        *lock_write(&current.state) = state;
        return;
    }
}

/// Returns the loaded model of a slot, or the protocol error with the reason it cannot
/// serve yet.
fn slot_ready(endpoint: &str, slot: &ModelSlot) -> Result<Arc<ReadyModel>, ServingError> {
    match &*lock_read(&slot.state) {
        VariantState::Ready(ready) => Ok(ready.clone()),
        VariantState::Loading => Err(ServingError::NotReady {
            endpoint: endpoint.to_owned(),
            reason: format!("model {} version {} is loading", slot.model, slot.version),
            retry_after_secs: RETRY_AFTER_SECS,
        }),
        VariantState::Retrying {
            reason, next_at, ..
        } => Err(ServingError::NotReady {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "model {} version {} is loading again after a transient failure: {reason}",
                slot.model, slot.version
            ),
            retry_after_secs: u32::try_from(
                next_at.saturating_duration_since(Instant::now()).as_secs(),
            )
            .unwrap_or(u32::MAX)
            .max(RETRY_AFTER_SECS),
        }),
        VariantState::Failed { reason, .. } => Err(ServingError::LoadFailed {
            endpoint: endpoint.to_owned(),
            version: slot.version,
            reason: reason.clone(),
        }),
    }
}

/// Writes the service's variant counters every [`stats::STATS_FLUSH_INTERVAL`] until the
/// service is dropped. A failure is logged once until a flush succeeds again.
async fn flush_stats_periodically(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(stats::STATS_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.stats.flush().await {
            Ok(()) => {
                if failing {
                    tracing::info!(
                        replica_id = inner.stats.replica_id(),
                        "variant stats are written again"
                    );
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::error!(
                        replica_id = inner.stats.replica_id(),
                        %error,
                        "cannot write variant stats; counting goes on and the write is retried every second"
                    );
                }
                failing = true;
            }
        }
    }
}

/// Creates (or extends) the prediction log and label datasets; returns whether both exist.
/// A failure is logged and counted, never fatal: inference works without them and the rows
/// wait in the log writer's retry buffer.
async fn ensure_log_datasets(
    inner: &Inner,
    endpoint: &Endpoint,
    model: &str,
    version: i64,
    layout: &LogLayout,
) -> bool {
    let predictions = log::ensure_dataset(
        &inner.ingest,
        &endpoint.tenant,
        &endpoint.project,
        &predictions_dataset(&endpoint.name),
        &format!("Prediction log of endpoint {}", endpoint.name),
        &layout.schema(),
        &endpoint.updated_by,
    )
    .await;
    let labels = log::ensure_dataset(
        &inner.ingest,
        &endpoint.tenant,
        &endpoint.project,
        &labels_dataset(&endpoint.name),
        &format!(
            "Ground-truth labels of endpoint {}'s predictions",
            endpoint.name
        ),
        &log::labels_schema(),
        &endpoint.updated_by,
    )
    .await;
    let mut ok = true;
    for error in [predictions.err(), labels.err()].into_iter().flatten() {
        ok = false;
        inner.dataset_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            model,
            version,
            %error,
            "cannot prepare the endpoint's log datasets; inference goes on and creation is retried"
        );
    }
    ok
}

async fn prepare(
    inner: &Inner,
    endpoint: &Endpoint,
    slot: &ModelSlot,
    scope: &ghaf_tracking::Scope,
    started: Instant,
) -> Result<ReadyModel, LoadError> {
    let model = inner
        .loader
        .load(scope, &slot.model, slot.version, &slot.execution_provider)
        .await?;
    let load_ms = millis(started.elapsed());
    let binding = match &slot.feature_service {
        Some(service) => {
            let features = inner
                .features
                .as_ref()
                .ok_or_else(|| LoadError::Failed("this server has no feature store".to_owned()))?;
            if model.features.is_empty() {
                return Err(LoadError::Failed(format!(
                    "feature service {service:?} cannot feed this model: the model does not name its input features"
                )));
            }
            Some(
                FeatureBinding::resolve(
                    features,
                    &scope.tenant,
                    &scope.project,
                    service,
                    &model.features,
                )
                .await
                .map_err(LoadError::Failed)?,
            )
        }
        None => None,
    };
    let model = Arc::new(model);
    let warmup_ms = match model.warmup {
        Some(warmup) => millis(warmup),
        None => {
            let warm = Instant::now();
            if !model.features.is_empty() {
                let columns = model.features.len();
                let model = model.clone();
                tokio::task::spawn_blocking(move || {
                    model.predict_matrix(1, vec![f64::NAN; columns])
                })
                .await
                .map_err(|error| LoadError::Failed(format!("the warm-up task failed: {error}")))?
                .map_err(|error| {
                    LoadError::Failed(format!("the warm-up prediction failed: {error}"))
                })?;
            }
            millis(warm.elapsed())
        }
    };
    let model = Arc::try_unwrap(model)
        .map_err(|_| LoadError::Transient("the warm-up task still holds the model".to_owned()))?;
    let layout = LogLayout::new(&model);
    let datasets_ready =
        ensure_log_datasets(inner, endpoint, &slot.model, slot.version, &layout).await;
    let batcher = Batcher::with_limits(
        model.predictor.clone(),
        BatchOptions {
            max_batch_rows: BATCH_MAX_ROWS,
            max_delay: BATCH_MAX_DELAY,
        },
        BatchLimits {
            max_queued: BATCH_MAX_QUEUED,
            ..BatchLimits::default()
        },
    );
    Ok(ReadyModel {
        model,
        batcher,
        binding,
        layout,
        load_ms,
        warmup_ms,
        datasets_ready: AtomicBool::new(datasets_ready),
        datasets_tried: Mutex::new(Instant::now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench_runtime(policy: policy::TrafficPolicy, weights: &[(&str, u32)]) -> EndpointRuntime {
        let variants: Vec<Variant> = weights
            .iter()
            .enumerate()
            .map(|(index, (name, weight))| Variant {
                name: (*name).to_owned(),
                model: "m".to_owned(),
                version: index as i64 + 1,
                weight: *weight,
            })
            .collect();
        let runtime_variants = variants
            .iter()
            .map(|variant| {
                Arc::new(VariantRuntime {
                    variant: variant.clone(),
                    slot: Arc::new(ModelSlot {
                        model: variant.model.clone(),
                        version: variant.version,
                        execution_provider: "cpu".to_owned(),
                        feature_service: None,
                        state: RwLock::new(VariantState::Loading),
                    }),
                    counters: Arc::new(VariantCounters::default()),
                })
            })
            .collect();
        EndpointRuntime {
            routing: Routing::new("bench", &policy, &variants, None),
            record: Endpoint {
                tenant: TenantId::from_stored("t"),
                project: ProjectId::from_stored("p"),
                project_name: "p".to_owned(),
                name: "bench".to_owned(),
                description: String::new(),
                feature_service: None,
                execution_provider: "cpu".to_owned(),
                variants,
                policy,
                shadow: None,
                follow_alias: None,
                rollout: None,
                generation: 1,
                created_at: 0,
                created_by: String::new(),
                updated_at: 0,
                updated_by: String::new(),
            },
            variants: runtime_variants,
            checked_at: Mutex::new(Instant::now()),
            revalidate_failing: AtomicBool::new(false),
            shadow_dataset: Mutex::new((false, None)),
        }
    }

    /// Prints the cost of `select` per call for each policy kind. Run with
    /// `cargo test -p ghaf-serving --lib select_cost -- --ignored --nocapture`; the numbers
    /// depend on the build profile and the machine.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn select_cost_per_call() {
        use policy::{AbSpec, CanarySpec, StickyKey, TrafficPolicy};
        let sticky = Some(StickyKey::Header {
            name: "x-user-id".to_owned(),
        });
        let cases = [
            (
                "single",
                bench_runtime(TrafficPolicy::Single, &[("primary", 100)]),
            ),
            (
                "ab sticky header",
                bench_runtime(
                    TrafficPolicy::Ab(AbSpec {
                        sticky: sticky.clone(),
                        ..AbSpec::default()
                    }),
                    &[("primary", 50), ("b", 50)],
                ),
            ),
            (
                "ab random",
                bench_runtime(
                    TrafficPolicy::Ab(AbSpec::default()),
                    &[("primary", 50), ("b", 50)],
                ),
            ),
            (
                "canary random",
                bench_runtime(
                    TrafficPolicy::Canary(CanarySpec {
                        steps: vec![5, 25, 50, 100],
                        interval_secs: 60,
                        min_requests: 100,
                        failure_threshold: 1,
                        checks: Default::default(),
                        sticky: None,
                    }),
                    &[("primary", 75), (policy::CANDIDATE_VARIANT, 25)],
                ),
            ),
        ];
        let context = InferContext {
            principal: "bench".to_owned(),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-user-id".to_owned(), "user-1234567".to_owned()),
            ],
        };
        let request = InferRequest::default();
        let calls = 1_000_000u32;
        for (name, runtime) in &cases {
            let started = Instant::now();
            for _ in 0..calls {
                let variant =
                    ServingService::select(runtime, None, Some(&request), &context).unwrap();
                std::hint::black_box(variant);
            }
            let per_call = started.elapsed().as_nanos() as f64 / f64::from(calls);
            println!("select {name}: {per_call:.1} ns per call over {calls} calls");
        }
    }

    #[test]
    fn unavailable_runtime_is_not_ready() {
        let error = runtime_error(
            "live",
            RuntimeError::Unavailable("the batching queue is full".into()),
        );
        match error {
            ServingError::NotReady {
                endpoint,
                retry_after_secs,
                reason,
            } => {
                assert_eq!(endpoint, "live");
                assert!(retry_after_secs >= 1);
                assert!(reason.contains("queue is full"), "{reason}");
            }
            other => panic!("expected NotReady, got {other}"),
        }
        assert!(matches!(
            runtime_error("live", RuntimeError::Internal("boom".into())),
            ServingError::Internal(_)
        ));
    }

    #[test]
    fn load_errors_are_classified() {
        use crate::loader::runtime_load_error;
        assert!(
            !runtime_load_error(RuntimeError::Verification("bad digest".into())).is_transient()
        );
        assert!(!runtime_load_error(RuntimeError::Load("not a model".into())).is_transient());
        assert!(
            runtime_load_error(RuntimeError::Internal("blob store down".into())).is_transient()
        );
        assert!(runtime_load_error(RuntimeError::Unavailable("no library".into())).is_transient());
    }
}
