//! A batch logged with its audit entry in one transaction, on SQLite and on PostgreSQL. The
//! entry extends the chain, and a chain that cannot be extended rolls the batch back. An
//! append by another store instance in between is picked up. On SQLite files the steady
//! state writes on a direct connection, and falls back to sqlx when the database is locked.

use ghaf_core::audit::{AuditOutcome, NewAuditEntry};
use ghaf_core::{ProjectId, TenantId};
use ghaf_meta::testing::{TEST_AUDIT_KEY, postgres_store, sqlite_store};
use ghaf_meta::{AuditFilter, MetaStore, SqlMetaStore, SqliteDirect, TransactionalAudit};
use ghaf_tracking::{
    Batch, DEFAULT_EXPERIMENT_ID, LifecycleStage, Metric, NewRun, Param, SqlTrackingStore, Tag,
    TrackingError, TrackingStore,
};

fn scope() -> ghaf_tracking::Scope {
    ghaf_tracking::Scope {
        tenant: TenantId::from_stored("acme"),
        project: ProjectId::from_stored("audited"),
    }
}

fn entry(request_id: &str) -> NewAuditEntry {
    NewAuditEntry {
        tenant: "acme".into(),
        actor: "alice".into(),
        action: "tracking.write".into(),
        resource: "mlflow/runs/log-metric".into(),
        outcome: AuditOutcome::Success,
        status: 200,
        request_id: request_id.into(),
        time: 1,
        details: serde_json::json!({ "metrics": ["loss"] }),
    }
}

fn metric(step: i64) -> Metric {
    Metric {
        key: "loss".into(),
        value: step as f64 / 10.0,
        timestamp: 1,
        step,
        model_id: String::new(),
    }
}

async fn new_run(store: &SqlTrackingStore) -> String {
    store
        .create_run(
            &scope(),
            &NewRun {
                experiment_id: DEFAULT_EXPERIMENT_ID,
                user_id: "alice".into(),
                run_name: None,
                start_time: Some(1),
                tags: vec![],
            },
        )
        .await
        .unwrap()
        .info
        .run_id
}

async fn log_step(
    store: &SqlTrackingStore,
    audit: &dyn TransactionalAudit,
    run_id: &str,
    step: i64,
) -> Result<(), TrackingError> {
    let metrics = [metric(step)];
    let batch = Batch {
        run_id,
        metrics: &metrics,
        params: &[],
        tags: &[],
    };
    store
        .log_batch_audited(&scope(), &batch, audit, &entry(&format!("request-{step}")))
        .await
        .map(|_| ())
}

async fn history_len(store: &SqlTrackingStore, run_id: &str) -> usize {
    store
        .metric_history(&scope(), run_id, "loss", 1000, 0)
        .await
        .unwrap()
        .items
        .len()
}

async fn audit_requests(meta: &SqlMetaStore) -> Vec<String> {
    let filter = AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    };
    meta.list_audit("acme", &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.request_id)
        .collect()
}

/// Verifies the whole chain of tenant `acme` from its first entry and returns its length.
async fn verified_chain_len(meta: &SqlMetaStore) -> i64 {
    let report = ghaf_auth::audit::verify_chain(meta, "acme", TEST_AUDIT_KEY)
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
    report.entries_checked
}

fn direct_of(meta: &SqlMetaStore) -> &SqliteDirect {
    meta.db()
        .sqlite_direct()
        .expect("SQLite file databases have direct connections")
}

async fn check_audited_batches(meta: SqlMetaStore) {
    let store = SqlTrackingStore::new(meta.db().clone());
    let run_id = new_run(&store).await;
    let audit = meta
        .transactional_audit()
        .expect("SQL stores append in transactions");

    // The first append reads the empty chain; later ones extend the head they wrote.
    for step in 0..3 {
        log_step(&store, audit, &run_id, step).await.unwrap();
    }
    assert_eq!(history_len(&store, &run_id).await, 3);
    assert_eq!(
        audit_requests(&meta).await,
        ["request-0", "request-1", "request-2"]
    );
    meta.check_audit_chain("acme").await.unwrap();

    // Another store on the same database appends, so the first store's known head is stale.
    let other = SqlMetaStore::new(meta.db().clone(), TEST_AUDIT_KEY.to_vec());
    other.append_audit(&entry("other")).await.unwrap();
    log_step(&store, audit, &run_id, 3).await.unwrap();
    assert_eq!(history_len(&store, &run_id).await, 4);
    assert_eq!(audit_requests(&meta).await.len(), 5);
    meta.check_audit_chain("acme").await.unwrap();
    assert_eq!(verified_chain_len(&meta).await, 5);

    // A batch for a missing run writes neither the batch nor an entry.
    let missing = log_step(&store, audit, "no-such-run", 4).await;
    assert!(
        matches!(missing, Err(TrackingError::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(audit_requests(&meta).await.len(), 5);

    // A metrics-only batch for a deleted run is refused and writes nothing either.
    let deleted_run = new_run(&store).await;
    store
        .set_run_stage(&scope(), &deleted_run, LifecycleStage::Deleted)
        .await
        .unwrap();
    let deleted = log_step(&store, audit, &deleted_run, 4).await;
    assert!(
        matches!(deleted, Err(TrackingError::InvalidState(_))),
        "{deleted:?}"
    );
    assert_eq!(history_len(&store, &deleted_run).await, 0);
    assert_eq!(audit_requests(&meta).await.len(), 5);

    // Logging the same value twice is accepted and keeps one history row.
    log_step(&store, audit, &run_id, 3).await.unwrap();
    assert_eq!(history_len(&store, &run_id).await, 4);
    assert_eq!(audit_requests(&meta).await.len(), 6);
    assert_eq!(verified_chain_len(&meta).await, 6);

    // Moving the sealed head past the newest entry breaks the chain: the batch is refused
    // and rolled back.
    sqlx::query("UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = 'acme'")
        .execute(meta.db().pool())
        .await
        .unwrap();
    let refused = log_step(&store, audit, &run_id, 5).await;
    assert!(
        matches!(refused, Err(TrackingError::AuditRefused { .. })),
        "{refused:?}"
    );
    assert_eq!(history_len(&store, &run_id).await, 4);
    assert_eq!(audit_requests(&meta).await.len(), 6);
}

#[tokio::test]
async fn sqlite_audited_batches() {
    let (meta, _dir) = sqlite_store().await;
    check_audited_batches(meta).await;
}

#[tokio::test]
async fn postgres_audited_batches() {
    let (meta, guard) = postgres_store().await;
    assert!(meta.db().sqlite_direct().is_none());
    let db = meta.db().clone();
    check_audited_batches(meta).await;
    db.close().await;
    guard.drop_database().await;
}

#[tokio::test]
async fn sqlite_steady_state_writes_directly() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    let audit = meta.transactional_audit().unwrap();
    let direct = direct_of(&meta);
    let run_id = new_run(&store).await;

    // The first append reads the empty chain through sqlx; the ones after it extend the head
    // it wrote on a direct connection.
    log_step(&store, audit, &run_id, 0).await.unwrap();
    let (committed, skipped) = direct.write_counts();
    for step in 1..=10 {
        log_step(&store, audit, &run_id, step).await.unwrap();
    }
    assert_eq!(direct.write_counts(), (committed + 10, skipped));
    assert_eq!(history_len(&store, &run_id).await, 11);
    let run = store.get_run(&scope(), &run_id).await.unwrap();
    assert_eq!(run.metrics, [metric(10)]);

    // A batch of params, tags and metrics takes the same path.
    let params = [Param {
        key: "depth".into(),
        value: "3".into(),
    }];
    let tags = [
        Tag {
            key: "team".into(),
            value: "fraud".into(),
        },
        Tag {
            key: "mlflow.runName".into(),
            value: "renamed".into(),
        },
    ];
    let metrics = [metric(11), metric(12)];
    let batch = Batch {
        run_id: &run_id,
        metrics: &metrics,
        params: &params,
        tags: &tags,
    };
    store
        .log_batch_audited(&scope(), &batch, audit, &entry("mixed"))
        .await
        .unwrap();
    assert_eq!(direct.write_counts(), (committed + 11, skipped));
    let run = store.get_run(&scope(), &run_id).await.unwrap();
    assert_eq!(run.params, params);
    assert!(run.tags.contains(&tags[0]), "{:?}", run.tags);
    assert_eq!(run.info.run_name, "renamed");
    assert_eq!(run.metrics, [metric(12)]);
    assert_eq!(history_len(&store, &run_id).await, 13);
    // The param and tag rows repeat the run's experiment and start time.
    for table in ["tracking_params", "tracking_run_tags"] {
        let statement = store.db().sql(&format!(
            "SELECT COUNT(*) FROM {table} WHERE run_id = ? AND experiment_id = ? AND \
             start_time = 1"
        ));
        let placed: i64 = sqlx::query_scalar(statement)
            .bind(&run_id)
            .bind(DEFAULT_EXPERIMENT_ID)
            .fetch_one(store.db().pool())
            .await
            .unwrap();
        let expected = if table == "tracking_params" { 1 } else { 2 };
        assert_eq!(placed, expected, "{table}");
    }

    // A param that would change is rejected and rolls back its metric and audit entry.
    let changed = [Param {
        key: "depth".into(),
        value: "4".into(),
    }];
    let rejected_metrics = [metric(13)];
    let rejected = Batch {
        run_id: &run_id,
        metrics: &rejected_metrics,
        params: &changed,
        tags: &[],
    };
    let outcome = store
        .log_batch_audited(&scope(), &rejected, audit, &entry("rejected"))
        .await;
    assert!(
        matches!(outcome, Err(TrackingError::InvalidArgument { .. })),
        "{outcome:?}"
    );
    assert_eq!(history_len(&store, &run_id).await, 13);
    assert_eq!(audit_requests(&meta).await.len(), 12);
    assert_eq!(verified_chain_len(&meta).await, 12);
}

#[tokio::test]
async fn sqlite_locked_database_falls_back_to_sqlx() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    let audit = meta.transactional_audit().unwrap();
    let direct = direct_of(&meta);
    let run_id = new_run(&store).await;
    log_step(&store, audit, &run_id, 0).await.unwrap();
    log_step(&store, audit, &run_id, 1).await.unwrap();

    // Another connection holds the write lock until the direct write has been skipped. The
    // sqlx path then waits for the lock and writes the batch and its entry.
    let holder = ghaf_meta::rusqlite::Connection::open(direct.path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (committed, skipped) = direct.write_counts();
    let release = async {
        while direct.write_counts().1 == skipped {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        holder.execute_batch("COMMIT").unwrap();
    };
    let (logged, ()) = tokio::join!(log_step(&store, audit, &run_id, 2), release);
    logged.unwrap();
    assert_eq!(direct.write_counts(), (committed, skipped + 1));
    assert_eq!(history_len(&store, &run_id).await, 3);
    assert_eq!(verified_chain_len(&meta).await, 3);

    // The sqlx path remembered the head it wrote, so the next write is direct again.
    log_step(&store, audit, &run_id, 3).await.unwrap();
    assert_eq!(direct.write_counts(), (committed + 1, skipped + 1));
    assert_eq!(verified_chain_len(&meta).await, 4);
}

#[tokio::test]
async fn sqlite_mixed_appends_keep_chain_valid() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    let audit = meta.transactional_audit().unwrap();
    let direct = direct_of(&meta);
    let other = SqlMetaStore::new(meta.db().clone(), TEST_AUDIT_KEY.to_vec());
    let run_id = new_run(&store).await;

    // Direct batches alternate with sqlx appends of this store and of another instance,
    // whose appends make this store's known head stale.
    for step in 0..6 {
        log_step(&store, audit, &run_id, step).await.unwrap();
        if step % 3 == 0 {
            meta.append_audit(&entry(&format!("own-{step}")))
                .await
                .unwrap();
        } else if step % 3 == 1 {
            other
                .append_audit(&entry(&format!("other-{step}")))
                .await
                .unwrap();
        }
    }
    assert_eq!(history_len(&store, &run_id).await, 6);
    assert_eq!(verified_chain_len(&meta).await, 10);
    // Step 0 finds no known head, and steps 2 and 5 find the head the other instance moved,
    // so those three go through sqlx and the other three are direct.
    assert_eq!(direct.write_counts(), (3, 0));
}
