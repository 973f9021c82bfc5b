//! Building the router and running the server.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use ghaf_auth::{Bootstrap, TenancyService};
use ghaf_blob::BlobStore;
use ghaf_core::Name;
use ghaf_meta::{Db, MetaStore, SqlMetaStore};
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{self, ApiRouter, RouteInfo};
use crate::config::ServerConfig;
use crate::middleware;
use crate::state::AppState;

/// Builds the full router for `state`.
pub fn router(state: AppState) -> Router {
    let mut api = ApiRouter::new();
    api::register_all(&mut api);
    let body_limit = state.config().http.max_body_bytes;
    api.into_router(state.clone())
        // gRPC of the Open Inference Protocol shares the port; its paths name the service.
        .route_service(
            crate::oip::grpc::ROUTE,
            crate::oip::grpc::service(state.clone()),
        )
        .fallback(middleware::route_not_found)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Returns the route table of the full API, without building a router.
pub fn route_table() -> Vec<RouteInfo> {
    let mut api = ApiRouter::new();
    api::register_all(&mut api);
    api.routes().to_vec()
}

/// Opens the stores named by the configuration and returns the server state.
pub async fn open_state(config: &ServerConfig) -> anyhow::Result<AppState> {
    create_private_dir(&config.data_dir)?;
    let audit_key = load_or_create_key(&config.audit_key_path())?;
    let db = Db::connect(&config.metadata_url(), config.metadata.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open the metadata database {}",
                ghaf_meta::redact_url(&config.metadata_url())
            )
        })?;
    for file in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        restrict_to_owner(&config.data_dir.join(file));
    }
    let store: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::new(db.clone(), audit_key.clone()));
    check_audit_key(store.as_ref(), &audit_key, &config.audit_key_path()).await?;
    let blobs =
        BlobStore::from_config(&config.blob_config()).context("cannot open the blob store")?;
    let state = AppState::new(store, blobs.clone(), audit_key, config.clone());
    state.set_tracking(tracking_service(config, db.clone(), blobs.clone()));
    let ingest = ingest_service(config, db.clone(), blobs.clone());
    let features = feature_store(config, db.clone(), ingest.clone()).await?;
    state.set_features(features.clone());
    state.set_ingest(ingest.clone());
    if let Some(tracking) = state.tracking().cloned() {
        state.set_monitoring(monitoring_service(
            config,
            db.clone(),
            ingest.clone(),
            Some(tracking.clone()),
        ));
        let metrics = state.metrics().clone();
        ghaf_serving::loader::set_process_runtime_options(runtime_options(config));
        state.set_serving(serving_service(
            db.clone(),
            tracking.clone(),
            ingest.clone(),
            Some(features.clone()),
            Some(Arc::new(move |rows| metrics.prediction_log_dropped(rows))),
        ));
        state.set_job_services(crate::jobs::job_services(
            db,
            state.store_handle(),
            blobs,
            ingest,
            tracking,
            Some(features),
        ));
    }
    Ok(state)
}

/// Builds the rollout service over the server's serving, tracking and ingest services and the
/// metadata store's audit chain. Returns `None` when serving is not configured.
pub fn rollout_service(state: &AppState) -> Option<ghaf_rollout::RolloutService> {
    Some(ghaf_rollout::RolloutService::new(
        state.serving()?.clone(),
        state.tracking()?.clone(),
        state.store_handle(),
        state.ingest()?.clone(),
    ))
}

/// Builds the monitoring service on the metadata database, with the alert sinks of the
/// `monitoring` settings.
pub fn monitoring_service(
    config: &ServerConfig,
    db: Db,
    ingest: ghaf_ingest::IngestService,
    tracking: Option<ghaf_tracking::TrackingService>,
) -> ghaf_monitoring::MonitoringService {
    let settings = &config.monitoring;
    let non_empty = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    let delivery = ghaf_monitoring::delivery::DeliveryConfig {
        nats_url: non_empty(&settings.nats_url),
        kafka_brokers: non_empty(&settings.kafka_brokers),
        webhook_timeout: Duration::from_secs(settings.webhook_timeout_seconds.max(1)),
        webhook_attempts: settings.webhook_attempts.max(1),
        webhook_backoff: Duration::from_millis(settings.webhook_backoff_ms),
    };
    ghaf_monitoring::MonitoringService::new(
        ghaf_monitoring::MonitorStore::new(db.clone()),
        ingest,
        ghaf_jobs::JobStore::new(db),
        tracking,
        ghaf_monitoring::ServiceConfig {
            delivery,
            ..ghaf_monitoring::ServiceConfig::default()
        },
    )
}

/// Builds the feature store on the metadata database and the ingest service, with the
/// online store backend of `features.online_store`.
pub async fn feature_store(
    config: &ServerConfig,
    db: Db,
    ingest: ghaf_ingest::IngestService,
) -> anyhow::Result<Arc<ghaf_features::FeatureStore>> {
    use ghaf_features::online::{OnlineStore, RedbOnlineStore, RedisOnlineStore};
    let features = &config.features;
    let online: Arc<dyn OnlineStore> = match features.online_store.as_str() {
        "redis" => Arc::new(
            RedisOnlineStore::connect(&features.redis_url, &features.redis_key_prefix)
                .await
                .context("cannot open the Redis online feature store")?,
        ),
        _ => {
            let path = config.data_dir.join("features").join("online.redb");
            Arc::new(
                RedbOnlineStore::open(&path)
                    .context("cannot open the embedded online feature store")?,
            )
        }
    };
    let mut store =
        ghaf_features::FeatureStore::new(ghaf_features::FeatureDb::new(db), ingest, online);
    if features.table_cache_max_bytes > 0 {
        store = store.with_table_cache(ghaf_features::TableCache::new(
            config.data_dir.join("features").join("tables"),
            features.table_cache_max_bytes,
        ));
    }
    Ok(Arc::new(store))
}

/// Reads up to `features.online_warm_bytes` of the online store's rows into its cache in
/// this process, so the first online reads after a start need fewer file reads. `ghaf server`
/// calls it before it accepts requests. A failure only costs speed, so it is logged and
/// the server starts.
pub async fn warm_online_store(state: &AppState) {
    let max_bytes = state.config().features.online_warm_bytes;
    let Some(features) = state.features() else {
        return;
    };
    if max_bytes == 0 {
        return;
    }
    let online = features.online().clone();
    let backend = online.backend();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || online.warm(max_bytes)).await {
        Ok(Ok(warmed)) if warmed.tables > 0 => tracing::info!(
            backend,
            tables = warmed.tables,
            rows = warmed.rows,
            bytes = warmed.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read the online store into its cache"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(
            backend,
            %error,
            "failed to read the online store into its cache. The first reads fetch their rows from the store"
        ),
        Err(error) if error.is_panic() => tracing::error!(
            backend,
            %error,
            "the online store warm-up panicked. The first reads fetch their rows from the store"
        ),
        Err(error) => tracing::warn!(
            backend,
            %error,
            "the online store warm-up was cancelled. The first reads fetch their rows from the store"
        ),
    }
}

/// Runtime options of every model load (endpoints and batch scoring jobs) from the
/// `runtime` section; the execution provider comes from each endpoint or job.
pub fn runtime_options(config: &crate::ServerConfig) -> ghaf_runtime::RuntimeOptions {
    let library = config.runtime.onnxruntime_library.trim();
    ghaf_runtime::RuntimeOptions {
        onnxruntime_library: (!library.is_empty()).then(|| std::path::PathBuf::from(library)),
        intra_op_threads: config.runtime.intra_op_threads.max(1),
        ..ghaf_runtime::RuntimeOptions::default()
    }
}

/// Builds the serving service: endpoints on the metadata database, models verified and
/// loaded from the registry, the prediction log written through the ingest service.
pub fn serving_service(
    db: Db,
    tracking: ghaf_tracking::TrackingService,
    ingest: ghaf_ingest::IngestService,
    features: Option<Arc<ghaf_features::FeatureStore>>,
    on_log_drop: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Arc<ghaf_serving::ServingService> {
    let loader = Arc::new(
        ghaf_serving::loader::RegistryLoader::new(tracking)
            .with_options(ghaf_serving::loader::process_runtime_options()),
    );
    Arc::new(ghaf_serving::ServingService::new(
        db,
        loader,
        ingest,
        features,
        on_log_drop,
    ))
}

/// Builds the ingest service on the metadata database and blob store, with staging files
/// under `<data_dir>/ingest-staging`. Staging files older than a day, left by ingests whose
/// process died, are deleted here.
pub fn ingest_service(
    config: &ServerConfig,
    db: Db,
    blobs: BlobStore,
) -> ghaf_ingest::IngestService {
    let lineage_url =
        (!config.ingest.lineage_url.is_empty()).then(|| config.ingest.lineage_url.clone());
    let service = ghaf_ingest::IngestService::new(
        ghaf_ingest::DatasetStore::new(db),
        blobs,
        ghaf_ingest::staging_dir(&config.data_dir),
    )
    .with_lineage_endpoint(lineage_url)
    .with_limits(read_limits(config))
    .with_object_inputs(ghaf_ingest::ObjectInputConfig {
        allowed_prefixes: config.ingest.object_uri_prefixes.clone(),
        s3: match config.blob_config() {
            s3 @ ghaf_blob::BlobConfig::S3 { .. } => Some(s3),
            ghaf_blob::BlobConfig::Local { .. } => None,
        },
    });
    if let Err(error) = service.clean_staging(Duration::from_secs(24 * 3600)) {
        tracing::warn!(error = %error, "cannot clean the ingest staging directory");
    }
    service
}

/// Returns the ingest size limits of the configuration.
pub fn read_limits(config: &ServerConfig) -> ghaf_ingest::ReadLimits {
    ghaf_ingest::ReadLimits {
        max_field_bytes: config.ingest.max_field_bytes,
        max_row_bytes: config.ingest.max_row_bytes,
        max_batch_bytes: config.ingest.max_batch_bytes,
        max_row_group_bytes: config.ingest.max_row_group_bytes,
    }
}

/// Builds the tracking service on the metadata database and blob store, with the tenants'
/// signing keys under `<data_dir>/keys/signing`.
pub fn tracking_service(
    config: &ServerConfig,
    db: Db,
    blobs: BlobStore,
) -> ghaf_tracking::TrackingService {
    ghaf_tracking::TrackingService::new(
        Arc::new(ghaf_tracking::SqlTrackingStore::new(db)),
        blobs,
        ghaf_tracking::FileKeyStore::new(config.signing_keys_dir()),
    )
}

/// Bootstraps an empty store with the configured names; `None` when it is not empty.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<Option<Bootstrap>> {
    let names = &state.config().bootstrap;
    let parse = |key: &str, value: &str| {
        Name::parse(value).with_context(|| format!("invalid bootstrap.{key}"))
    };
    let tenancy: &TenancyService = state.tenancy();
    let created = tenancy
        .bootstrap(
            &parse("tenant", &names.tenant)?,
            &parse("project", &names.project)?,
            &parse("admin", &names.admin)?,
        )
        .await?;
    if let Some(created) = &created {
        tracing::info!(
            tenant = %created.tenant.id,
            project = %created.project.name,
            admin = %created.admin.name,
            token_id = %created.token.stored.id,
            "bootstrapped an empty store"
        );
    }
    Ok(created)
}

/// Prints the bootstrap result with the one-time token to stdout. A wildcard host in `url`
/// (`0.0.0.0`, `[::]`) is shown as the loopback address a local client can reach.
pub fn print_bootstrap(created: &Bootstrap, url: &str) {
    let url = url
        .replace("://0.0.0.0:", "://127.0.0.1:")
        .replace("://[::]:", "://[::1]:");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nGhaf bootstrapped an empty data directory:\n  tenant:  {}\n  project: {}\n  admin:   {}\n\n\
         Admin token (shown once; Ghaf stores only its hash):\n\n  {}\n\n\
         Log in with:\n  ghaf login --url {url} --token {}\n",
        created.tenant.id,
        created.project.name,
        created.admin.name,
        created.token.secret,
        created.token.secret
    );
}

/// Serves the API on the configured address until SIGINT or SIGTERM, then finishes in-flight
/// requests.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let listener = bind(state.config().listen).await?;
    serve_with(state, listener, shutdown_signal()).await
}

/// Binds the server's listening socket. Bind before bootstrapping, so a port that is in use
/// fails before anything is created.
pub async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {listen}: {error}. Another process may be using the port; \
             choose another with --listen HOST:PORT"
            )
        })
}

/// Time a client has to send a request's headers before its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves the API on `listener` until `shutdown` completes, then gives in-flight requests up
/// to 30 s to finish.
pub async fn serve_with(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let local = listener.local_addr()?;
    tracing::info!(address = %local, "ghaf server listening");
    let blobs = state.blobs().clone();
    tokio::spawn(async move {
        // Uploads interrupted by a crash leave staging objects behind; remove the old ones.
        match blobs.clean_staging(Duration::from_secs(24 * 3600)).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "removed abandoned staging blobs"),
            Err(error) => tracing::warn!(%error, "cannot clean staging blobs"),
        }
    });

    let mut consumers = crate::consumers::start_nats_consumers(&state).await;
    consumers.extend(crate::consumers::start_kafka_consumers(&state).await);
    let shutdown_state = state.clone();
    let worker = crate::jobs::start_in_process_worker(&state)?;
    let (evaluator_stop, evaluator_stopped) = tokio::sync::watch::channel(false);
    let evaluator = match state.monitoring() {
        Some(monitoring) if state.config().monitoring.evaluator => {
            Some(monitoring.spawn_evaluator(
                Duration::from_secs(state.config().monitoring.tick_seconds.max(1)),
                evaluator_stopped,
            ))
        }
        _ => None,
    };
    let rollout_controller = match rollout_service(&state) {
        Some(service) if state.config().rollouts.controller => {
            Some(ghaf_rollout::RolloutController::spawn(
                service,
                Duration::from_secs(state.config().rollouts.tick_seconds.max(1)),
                evaluator_stop.subscribe(),
            ))
        }
        _ => None,
    };
    if let Some(serving) = state.serving() {
        match serving.load_all().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "loading deployed endpoints"),
            Err(error) => {
                tracing::error!(%error, "cannot list the deployed endpoints to load them")
            }
        }
    }
    let app = router(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually too many open files; pause instead of spinning.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Responses go out at once instead of waiting for the client's ACK of the
                // previous segment (Nagle), which can stall small responses by ~40 ms.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                let service = TowerToHyperService::new(app.clone());
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection closed with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    tracing::info!("shutdown signal received, finishing in-flight requests");
    // Running ingests stop between two batches and store nothing, instead of holding the
    // shutdown until they finish.
    if let Some(ingest) = shutdown_state.ingest() {
        ingest.cancel_running();
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(
                seconds = SHUTDOWN_GRACE.as_secs(),
                "connections still open after the shutdown grace period; closing them"
            );
        }
    }
    for consumer in consumers {
        consumer.abort();
    }
    let _ = evaluator_stop.send(true);
    if let Some(evaluator) = evaluator
        && let Err(error) = evaluator.await
    {
        tracing::error!(%error, "the monitor evaluator task failed");
    }
    if let Some(controller) = rollout_controller
        && let Err(error) = controller.await
    {
        tracing::error!(%error, "the rollout controller task failed");
    }
    if let Some(worker) = worker {
        // Running attempts go back to the queue; another worker resumes them.
        worker.stop().await;
    }
    if let Some(serving) = shutdown_state.serving() {
        // Predictions answered before the shutdown are written to the log.
        serving.flush_log().await;
        // The last second of variant counters reaches the stats table.
        if let Err(error) = serving.flush_stats().await {
            tracing::error!(%error, replica_id = serving.replica_id(), "cannot write the final variant stats");
        }
    }
    if let Some(features) = shutdown_state.features() {
        // Feature tables computed before the shutdown reach the table cache directory, so
        // the next start reads them instead of computing them again.
        features.wait_for_table_writes().await;
    }
    tracing::info!("ghaf server stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Refuses to start when the stored chain heads were sealed with another key: several
/// servers on one database must share the audit key file, or each would report the others'
/// entries as tampered.
async fn check_audit_key(store: &dyn MetaStore, key: &[u8], key_path: &Path) -> anyhow::Result<()> {
    let chains = store.audit_chains().await?;
    let mut sealed = 0;
    let mut matching = 0;
    for chain in chains.iter().take(20) {
        if let Some(head) = store.audit_head(chain).await? {
            sealed += 1;
            if ghaf_core::audit::head_mac(key, chain, head.seq, &head.hash) == head.mac {
                matching += 1;
            }
        }
    }
    anyhow::ensure!(
        sealed == 0 || matching > 0,
        "the audit key {} does not match the key that sealed the stored audit chains; \
         every server on this database must use the same key file (audit.key_file)",
        key_path.display()
    );
    Ok(())
}

/// Creates a directory readable only by its owner on Unix.
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))?;
    restrict_to_owner(path);
    Ok(())
}

/// Limits an existing file or directory to its owner (0600 or 0700) on Unix; a failure is
/// logged, not fatal, because the path may be managed by the operator.
fn restrict_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(metadata) = std::fs::metadata(path) else {
            return;
        };
        let mode = if metadata.is_dir() { 0o700 } else { 0o600 };
        if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), %error, "cannot restrict permissions");
        }
    }
}

/// Reads the audit key, creating it with 32 random bytes (owner-only permissions) when the
/// file is missing.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let key = std::fs::read(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        anyhow::ensure!(
            key.len() >= 32,
            "key file {} holds {} bytes; it needs at least 32",
            path.display(),
            key.len()
        );
        return Ok(key);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create key directory {}", parent.display()))?;
    }
    let mut key = vec![0u8; 32];
    rand::fill(&mut key[..]);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "created audit key");
    Ok(key)
}
