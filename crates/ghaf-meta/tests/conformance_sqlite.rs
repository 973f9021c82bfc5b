//! Runs the metadata-store conformance suite on SQLite.

use ghaf_meta::testing as common;

macro_rules! sqlite_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, _dir) = common::sqlite_store().await;
            ghaf_meta::conformance::$name(&store).await;
        }
    )*};
}

sqlite_case!(
    tenants,
    projects_are_tenant_scoped,
    principals,
    role_bindings,
    tokens,
    audit_log,
    audit_concurrent_appends,
);

#[tokio::test]
async fn sqlite_uses_wal_and_survives_reopen() {
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let db = ghaf_meta::Db::connect(&url, 2).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    db.close().await;

    // Reconnecting applies no migration twice.
    let db = ghaf_meta::Db::connect(&url, 2).await.unwrap();
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM ghaf_migrations")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, i64::try_from(ghaf_meta::MIGRATIONS.len()).unwrap());
}

#[tokio::test]
async fn unsupported_url_is_rejected() {
    let error = ghaf_meta::Db::connect("mysql://root:pw@localhost/x", 1)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("mysql://root:***@localhost/x"),
        "{message}"
    );
    assert!(!message.contains("pw"), "{message}");
}
