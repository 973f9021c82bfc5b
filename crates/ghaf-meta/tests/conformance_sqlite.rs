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

#[tokio::test]
async fn tracking_layout_migration_keeps_rows() {
    use ghaf_meta::rusqlite::Connection;
    use sqlx::Row;

    // A database at the tracking schema of version 100, with one run and its details.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE ghaf_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at BIGINT NOT NULL)",
    )
    .unwrap();
    for migration in ghaf_meta::MIGRATIONS.iter().filter(|m| m.version <= 100) {
        conn.execute_batch(migration.sqlite).unwrap();
        conn.execute(
            "INSERT INTO ghaf_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
            (migration.version, migration.name),
        )
        .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO tracking_runs VALUES ('t', 'p', 'run-1', 7, 'name', 'user', 'RUNNING', \
             1000, NULL, 'active', 'uri');
         INSERT INTO tracking_params VALUES ('t', 'p', 'run-1', 'depth', '4');
         INSERT INTO tracking_run_tags VALUES ('t', 'p', 'run-1', 'team', 'a');
         INSERT INTO tracking_latest_metrics VALUES ('t', 'p', 'run-1', 'acc', 3, 2000, 0.5, 0);
         INSERT INTO tracking_run_outputs VALUES ('t', 'p', 'run-1', 'model-1', 3);",
    )
    .unwrap();
    drop(conn);

    let url = format!("sqlite://{}", path.display());
    let db = ghaf_meta::Db::connect(&url, 2).await.unwrap();
    let row = sqlx::query(
        "SELECT r.run_name, r.start_time, p.value, t.value, m.value, o.model_id, r.end_time, \
         r.status, r.lifecycle_stage, r.experiment_id, m.step, m.timestamp, m.is_nan, o.step FROM \
         tracking_runs r JOIN tracking_params p ON p.run_id = r.run_id JOIN tracking_run_tags \
         t ON t.run_id = r.run_id JOIN tracking_latest_metrics m ON m.run_id = r.run_id JOIN \
         tracking_run_outputs o ON o.run_id = r.run_id WHERE r.tenant_id = 't'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "name");
    assert_eq!(row.get::<i64, _>(1), 1000);
    assert_eq!(row.get::<String, _>(2), "4");
    assert_eq!(row.get::<String, _>(3), "a");
    assert_eq!(row.get::<f64, _>(4), 0.5);
    assert_eq!(row.get::<String, _>(5), "model-1");
    assert_eq!(row.get::<Option<i64>, _>(6), None);
    assert_eq!(row.get::<String, _>(7), "RUNNING");
    assert_eq!(row.get::<String, _>(8), "active");
    assert_eq!(row.get::<i64, _>(9), 7);
    assert_eq!(row.get::<i64, _>(10), 3);
    assert_eq!(row.get::<i64, _>(11), 2000);
    assert_eq!(row.get::<i64, _>(12), 0);
    assert_eq!(row.get::<i64, _>(13), 3);

    // Param and tag rows repeat their run's experiment and start time.
    for table in ["tracking_params", "tracking_run_tags"] {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT experiment_id, start_time FROM {table} WHERE run_id = 'run-1'"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(row.get::<i64, _>(0), 7, "{table}");
        assert_eq!(row.get::<i64, _>(1), 1000, "{table}");
    }

    for table in [
        "tracking_runs",
        "tracking_params",
        "tracking_run_tags",
        "tracking_latest_metrics",
        "tracking_run_outputs",
    ] {
        let sql: String = sqlx::query("SELECT sql FROM sqlite_master WHERE name = ?")
            .bind(table)
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
    }
    // Key columns of each index, with `-` before a descending one.
    for (index, expected) in [
        (
            "tracking_runs_by_experiment",
            "tenant_id project_id experiment_id lifecycle_stage -start_time run_id",
        ),
        (
            "tracking_params_by_value",
            "tenant_id project_id experiment_id key value -start_time run_id",
        ),
        (
            "tracking_run_tags_by_value",
            "tenant_id project_id experiment_id key value -start_time run_id",
        ),
        (
            "tracking_latest_metrics_by_value",
            "tenant_id project_id key value is_nan",
        ),
    ] {
        let columns: Vec<String> = sqlx::query(
            "SELECT CASE WHEN \"desc\" = 1 THEN '-' ELSE '' END || name FROM \
             pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno",
        )
        .bind(index)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
        assert_eq!(columns.join(" "), expected, "{index}");
    }
    db.close().await;
}
