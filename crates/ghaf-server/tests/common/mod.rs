//! A server on a fresh SQLite store, driven through `tower::ServiceExt::oneshot` without a
//! socket.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use ghaf_auth::TenancyService;
use ghaf_blob::BlobStore;
use ghaf_meta::{Db, MetaStore, SqlMetaStore};
use ghaf_server::{AppState, ServerConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const AUDIT_KEY: &[u8] = b"server-test-audit-key-0123456789abcdef";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    /// Token of the bootstrap admin: platform admin, tenant admin and auditor of `default`.
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(mut config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        config.data_dir = dir.path().to_owned();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let db = Db::connect(&url, 4).await.expect("open sqlite");
        let store: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::new(db.clone(), AUDIT_KEY.to_vec()));
        let blobs = BlobStore::from_config(&config.blob_config()).expect("blob store");
        let tracking = ghaf_server::app::tracking_service(&config, db.clone(), blobs.clone());
        let ingest = ghaf_server::app::ingest_service(&config, db.clone(), blobs.clone());
        let db_for_jobs = db.clone();
        let features = ghaf_server::app::feature_store(&config, db, ingest.clone())
            .await
            .expect("feature store");
        let state = AppState::new(store, blobs, AUDIT_KEY.to_vec(), config);
        state.set_tracking(tracking);
        state.set_ingest(ingest);
        state.set_features(features.clone());
        let serving_features = features.clone();
        state.set_job_services(ghaf_server::jobs::job_services(
            db_for_jobs,
            state.store_handle(),
            state.blobs().clone(),
            state.ingest().cloned().expect("ingest service"),
            state.tracking().cloned().expect("tracking service"),
            Some(features),
        ));
        state.set_serving(ghaf_server::app::serving_service(
            state
                .job_services()
                .expect("job services")
                .jobs
                .db()
                .clone(),
            state.tracking().cloned().expect("tracking service"),
            state.ingest().cloned().expect("ingest service"),
            Some(serving_features),
            None,
        ));
        state.set_monitoring(ghaf_server::app::monitoring_service(
            state.config(),
            state
                .job_services()
                .expect("job services")
                .jobs
                .db()
                .clone(),
            state.ingest().cloned().expect("ingest service"),
            state.tracking().cloned(),
        ));
        let created = ghaf_server::bootstrap(&state)
            .await
            .expect("bootstrap")
            .expect("empty store bootstraps");
        Self {
            router: ghaf_server::router(state.clone()),
            state,
            admin_token: created.token.secret,
            _dir: dir,
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn tenancy(&self) -> &TenancyService {
        self.state.tenancy()
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        TestResponse::read(response).await
    }

    /// Sends a JSON request (or none, for `body = None`) with an optional bearer token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("valid request");
        self.send(request).await
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    async fn read(response: Response<Body>) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body is readable")
            .to_bytes()
            .to_vec();
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "response ({}) is not JSON: {error}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of an error body. MLflow-compatible routes answer with
    /// `{"error_code": ...}`; their codes are mapped back to Ghaf's, so one check covers both.
    pub fn code(&self) -> String {
        let json = self.json();
        if let Some(mlflow) = json["error_code"].as_str() {
            return match mlflow {
                "RESOURCE_DOES_NOT_EXIST" => "not_found",
                "PERMISSION_DENIED" => "permission_denied",
                "UNAUTHENTICATED" => "unauthenticated",
                "RESOURCE_ALREADY_EXISTS" => "already_exists",
                "INVALID_PARAMETER_VALUE" => "invalid_argument",
                other => other,
            }
            .to_owned();
        }
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}
