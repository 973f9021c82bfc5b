//! Shared state of the HTTP server.

use std::sync::Arc;

use ghaf_auth::TenancyService;
use ghaf_blob::BlobStore;
use ghaf_meta::MetaStore;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Entries of unauthenticated calls the system chain takes in a burst.
const SYSTEM_AUDIT_BURST: f64 = 200.0;
/// Entries per second the system chain takes once a burst is used up.
const SYSTEM_AUDIT_PER_SECOND: f64 = 50.0;

/// A token bucket: `try_acquire` succeeds while tokens remain; they refill at a fixed rate.
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateLimiter {
    pub fn new(capacity: f64, per_second: f64) -> Self {
        Self {
            capacity,
            per_second,
            bucket: std::sync::Mutex::new((capacity, std::time::Instant::now())),
        }
    }

    /// Takes one token; returns false when none is left.
    pub fn try_acquire(&self) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, refilled_at) = &mut *bucket;
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(*refilled_at).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.capacity);
        *refilled_at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything handlers need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn MetaStore>,
    tenancy: TenancyService,
    blobs: BlobStore,
    metrics: Metrics,
    audit_key: Vec<u8>,
    config: ServerConfig,
    system_audit_limiter: RateLimiter,
    /// Experiment tracking and the model registry, set once at start-up.
    tracking: std::sync::OnceLock<ghaf_tracking::TrackingService>,
    /// Datasets and ingestion, set once at start-up.
    ingest: std::sync::OnceLock<ghaf_ingest::IngestService>,
    /// The feature store, set once at start-up.
    features: std::sync::OnceLock<Arc<ghaf_features::FeatureStore>>,
    /// The job queue and the services its executors use, set once at start-up.
    jobs: std::sync::OnceLock<ghaf_jobs::executor::Services>,
    /// Endpoints and inference, set once at start-up.
    serving: std::sync::OnceLock<Arc<ghaf_serving::ServingService>>,
    /// Monitors, reports and alerts, set once at start-up.
    monitoring: std::sync::OnceLock<ghaf_monitoring::MonitoringService>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn MetaStore>,
        blobs: BlobStore,
        audit_key: Vec<u8>,
        config: ServerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tenancy: TenancyService::new(store.clone()),
                store,
                blobs,
                metrics: Metrics::new(),
                audit_key,
                config,
                system_audit_limiter: RateLimiter::new(SYSTEM_AUDIT_BURST, SYSTEM_AUDIT_PER_SECOND),
                tracking: std::sync::OnceLock::new(),
                ingest: std::sync::OnceLock::new(),
                features: std::sync::OnceLock::new(),
                jobs: std::sync::OnceLock::new(),
                serving: std::sync::OnceLock::new(),
                monitoring: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn store(&self) -> &dyn MetaStore {
        self.inner.store.as_ref()
    }

    /// Returns a shared handle to the metadata store.
    pub fn store_handle(&self) -> Arc<dyn MetaStore> {
        self.inner.store.clone()
    }

    pub fn tenancy(&self) -> &TenancyService {
        &self.inner.tenancy
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn audit_key(&self) -> &[u8] {
        &self.inner.audit_key
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Limits how many entries unauthenticated calls add to the system audit chain, so
    /// anonymous traffic cannot fill the append-only log.
    pub fn system_audit_limiter(&self) -> &RateLimiter {
        &self.inner.system_audit_limiter
    }

    /// Sets the tracking service; a second call keeps the first service.
    pub fn set_tracking(&self, tracking: ghaf_tracking::TrackingService) {
        let _ = self.inner.tracking.set(tracking);
    }

    /// Returns the tracking service, or `None` on a server started without one.
    pub fn tracking(&self) -> Option<&ghaf_tracking::TrackingService> {
        self.inner.tracking.get()
    }

    /// Sets the ingest service; a second call keeps the first service.
    pub fn set_ingest(&self, ingest: ghaf_ingest::IngestService) {
        let _ = self.inner.ingest.set(ingest);
    }

    /// Returns the ingest service, or `None` on a server started without one.
    pub fn ingest(&self) -> Option<&ghaf_ingest::IngestService> {
        self.inner.ingest.get()
    }

    /// Sets the feature store; a second call keeps the first store.
    pub fn set_features(&self, features: Arc<ghaf_features::FeatureStore>) {
        let _ = self.inner.features.set(features);
    }

    /// Returns the feature store, or `None` on a server started without one.
    pub fn features(&self) -> Option<&ghaf_features::FeatureStore> {
        self.inner.features.get().map(Arc::as_ref)
    }

    /// Sets the job system's services; a second call keeps the first.
    pub fn set_job_services(&self, services: ghaf_jobs::executor::Services) {
        let _ = self.inner.jobs.set(services);
    }

    /// Returns the job system's services, or `None` on a server started without them.
    pub fn job_services(&self) -> Option<&ghaf_jobs::executor::Services> {
        self.inner.jobs.get()
    }

    /// Sets the serving service; a second call keeps the first.
    pub fn set_serving(&self, serving: Arc<ghaf_serving::ServingService>) {
        let _ = self.inner.serving.set(serving);
    }

    /// Returns the serving service, or `None` on a server started without it.
    pub fn serving(&self) -> Option<&Arc<ghaf_serving::ServingService>> {
        self.inner.serving.get()
    }

    /// Sets the monitoring service; a second call keeps the first.
    pub fn set_monitoring(&self, monitoring: ghaf_monitoring::MonitoringService) {
        let _ = self.inner.monitoring.set(monitoring);
    }

    /// Returns the monitoring service, or `None` on a server started without it.
    pub fn monitoring(&self) -> Option<&ghaf_monitoring::MonitoringService> {
        self.inner.monitoring.get()
    }
}
