//! A batch logged with its audit entry in one transaction, on SQLite and on PostgreSQL. The
//! entry extends the chain, and a chain that cannot be extended rolls the batch back. An
//! append by another store instance in between is picked up.

use ghaf_core::audit::{AuditOutcome, NewAuditEntry};
use ghaf_core::{ProjectId, TenantId};
use ghaf_meta::testing::{TEST_AUDIT_KEY, postgres_store, sqlite_store};
use ghaf_meta::{AuditFilter, MetaStore, SqlMetaStore, TransactionalAudit};
use ghaf_tracking::{
    Batch, DEFAULT_EXPERIMENT_ID, LifecycleStage, Metric, NewRun, SqlTrackingStore, TrackingError,
    TrackingStore,
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
    let db = meta.db().clone();
    check_audited_batches(meta).await;
    db.close().await;
    guard.drop_database().await;
}
