//! Shared state of the HTTP server.

use std::sync::Arc;

use ghaf_auth::TenancyService;
use ghaf_blob::BlobStore;
use ghaf_meta::MetaStore;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

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
            }),
        }
    }

    pub fn store(&self) -> &dyn MetaStore {
        self.inner.store.as_ref()
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
}
