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
        .fallback(middleware::route_not_found)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The route table of the full API, without building a router.
pub fn route_table() -> Vec<RouteInfo> {
    let mut api = ApiRouter::new();
    api::register_all(&mut api);
    api.routes().to_vec()
}

/// Opens the stores named by the configuration and returns the server state.
pub async fn open_state(config: &ServerConfig) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let audit_key = load_or_create_key(&config.audit_key_path())?;
    let db = Db::connect(&config.metadata_url(), config.metadata.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open the metadata database {}",
                ghaf_meta::redact_url(&config.metadata_url())
            )
        })?;
    let store: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::new(db, audit_key.clone()));
    let blobs =
        BlobStore::from_config(&config.blob_config()).context("cannot open the blob store")?;
    Ok(AppState::new(store, blobs, audit_key, config.clone()))
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
    let listen = state.config().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another server using the port?"))?;
    serve_with(state, listener, shutdown_signal()).await
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve_with(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")?;
    tracing::info!("ghaf server stopped");
    Ok(())
}

async fn shutdown_signal() {
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
    tracing::info!("shutdown signal received, finishing in-flight requests");
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
