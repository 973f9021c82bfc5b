//! The store conformance suite on SQLite and on PostgreSQL.

use ghaf_meta::testing::{postgres_store, sqlite_store};
use ghaf_tracking::{SqlTrackingStore, conformance};

#[tokio::test]
async fn sqlite_store_conforms() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let (meta, guard) = postgres_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    conformance::run_all(&store).await;
    meta.db().close().await;
    guard.drop_database().await;
}
