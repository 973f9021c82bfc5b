//! The monitoring tables on SQLite and PostgreSQL: names unique per project, tenant
//! isolation, the claim of a due run, evaluations, rules, alerts and deliveries, and deletion
//! of a monitor with everything under it.

use ghaf_core::{Name, PrincipalId, ProjectId, TenantId};
use ghaf_meta::{MetaStore, SqlMetaStore};
use ghaf_monitoring::report::{Freshness, Report, WindowInfo};
use ghaf_monitoring::store::{AlertState, ReferenceRecord};
use ghaf_monitoring::{AlertRuleSpec, Delivery, MonitorSpec, MonitorStore, MonitoringError};

const T0: i64 = 1_800_000_000_000;

async fn setup(meta: &SqlMetaStore) -> (MonitorStore, TenantId, ProjectId, TenantId, ProjectId) {
    let creator = PrincipalId::from_stored("creator");
    let mut made = Vec::new();
    for (tenant, project) in [("acme", "p"), ("beta", "q")] {
        let tenant = TenantId::new(Name::parse(tenant).unwrap());
        meta.create_tenant(&tenant, "test tenant").await.unwrap();
        let project = meta
            .create_project(&tenant, &Name::parse(project).unwrap(), "", &creator)
            .await
            .unwrap();
        made.push((tenant, project.id));
    }
    let (beta, q) = made.pop().unwrap();
    let (acme, p) = made.pop().unwrap();
    (MonitorStore::new(meta.db().clone()), acme, p, beta, q)
}

fn report(rows: u64) -> Report {
    Report {
        evaluated_at: ghaf_core::format_millis(T0),
        dataset: "d".into(),
        reference: "d@1".into(),
        window: WindowInfo {
            start: None,
            end: ghaf_core::format_millis(T0),
            rows,
            segments: vec![1],
        },
        drift: None,
        prediction_drift: None,
        performance: None,
        missing: Vec::new(),
        freshness: Freshness {
            last_row_at: None,
            age_seconds: None,
        },
    }
}

async fn scenario(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    let spec = MonitorSpec::from_json(serde_json::json!({
        "name": "m",
        "target": {"type": "dataset", "name": "d"},
        "reference": {"dataset": "d", "version": 1},
        "window": {"type": "latest_version"},
        "interval_seconds": 60,
    }))
    .unwrap();
    let reference = ReferenceRecord {
        dataset: "d".into(),
        version: 1,
        rows: 10,
        features: vec!["x".into()],
        digest: "0".repeat(64),
    };
    let monitor = store
        .insert_monitor(&acme, &p, &spec, &reference, "alice", T0)
        .await
        .unwrap();
    assert_eq!(monitor.reference, reference);
    assert_eq!(monitor.next_run_at, T0);
    let twice = store
        .insert_monitor(&acme, &p, &spec, &reference, "alice", T0)
        .await;
    assert!(matches!(twice, Err(MonitoringError::AlreadyExists { .. })));
    // The same name in another tenant's project is another monitor.
    store
        .insert_monitor(&beta, &q, &spec, &reference, "bob", T0)
        .await
        .unwrap();
    assert!(matches!(
        store.get_monitor(&beta, &p, "m").await,
        Err(MonitoringError::NotFound { .. })
    ));

    // One of two evaluators claims a due run.
    let due = store.due_monitors(T0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(store.claim_run(&monitor, T0, T0 + 60_000).await.unwrap());
    assert!(!store.claim_run(&monitor, T0, T0 + 60_000).await.unwrap());
    let due = store.due_monitors(T0, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].tenant, beta);

    store
        .set_last_result(&monitor, T0, Some("boom"))
        .await
        .unwrap();
    let reloaded = store.get_monitor(&acme, &p, "m").await.unwrap();
    assert_eq!(reloaded.last_error.as_deref(), Some("boom"));
    store.set_prediction_reference(&monitor, "a").await.unwrap();
    store.set_prediction_reference(&monitor, "b").await.unwrap();
    let reloaded = store.get_monitor(&acme, &p, "m").await.unwrap();
    assert_eq!(reloaded.prediction_reference.as_deref(), Some("a"));

    let first = store
        .insert_evaluation(&monitor, T0, None, Some(T0), &report(5))
        .await
        .unwrap();
    let second = store
        .insert_evaluation(&monitor, T0 + 1, None, Some(T0 + 1), &report(6))
        .await
        .unwrap();
    let listed = store.list_evaluations(&monitor, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, second.id);
    assert_eq!(listed[1].report, first.report);

    let rule_spec = AlertRuleSpec::from_json(serde_json::json!({
        "name": "r",
        "condition": {"type": "drift_share", "at_least": 0.5},
    }))
    .unwrap();
    let rule = store
        .insert_rule(&monitor, &rule_spec, "secret", "alice", T0)
        .await
        .unwrap();
    assert_eq!(rule.secret, "secret");
    assert!(matches!(
        store
            .insert_rule(&monitor, &rule_spec, "s", "alice", T0)
            .await,
        Err(MonitoringError::AlreadyExists { .. })
    ));

    let evidence = serde_json::json!({"share": 0.5});
    let alert = store
        .insert_alert(&monitor, &rule, "dataset", &first.id, &evidence, T0)
        .await
        .unwrap();
    assert_eq!(alert.state, AlertState::Firing);
    store
        .record_repeat(
            &acme,
            &alert,
            &second.id,
            &serde_json::json!({"share": 1.0}),
            T0 + 5,
        )
        .await
        .unwrap();
    let latest = store
        .latest_alert(&acme, &rule.id, "dataset")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.repeats, 1);
    assert_eq!(latest.evidence["share"], 1.0);
    assert_eq!(latest.evaluation_id, second.id);
    assert!(
        store
            .latest_alert(&beta, &rule.id, "dataset")
            .await
            .unwrap()
            .is_none()
    );

    store
        .set_alert_action(&acme, &alert.id, Some("job-1"), None)
        .await
        .unwrap();
    store.resolve_alert(&acme, &latest, T0 + 10).await.unwrap();
    assert!(
        store
            .firing_alerts(&acme, &rule.id)
            .await
            .unwrap()
            .is_empty()
    );
    let acknowledged = store
        .acknowledge_alert(&monitor, &alert.id, "carol", T0 + 20)
        .await
        .unwrap();
    assert_eq!(acknowledged.state, AlertState::Resolved);
    assert_eq!(acknowledged.job_id.as_deref(), Some("job-1"));
    assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("carol"));
    let again = store
        .acknowledge_alert(&monitor, &alert.id, "dave", T0 + 30)
        .await
        .unwrap();
    assert_eq!(again.acknowledged_by.as_deref(), Some("carol"));
    let resolved = store
        .list_alerts(&monitor, Some(AlertState::Resolved), 10)
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);

    let delivery = Delivery {
        id: MonitorStore::new_delivery_id(),
        alert_id: alert.id.clone(),
        event: "firing".into(),
        sink: "webhook".into(),
        target: "http://127.0.0.1:9/x".into(),
        attempts: 3,
        outcome: "failed".into(),
        status_code: Some(503),
        error: Some("the receiver answered HTTP 503".into()),
        finished_at: T0,
    };
    store.insert_delivery(&acme, &delivery).await.unwrap();
    assert_eq!(
        store.list_deliveries(&acme, &alert.id).await.unwrap(),
        vec![delivery]
    );

    store.delete_monitor(&monitor).await.unwrap();
    assert!(matches!(
        store.get_monitor(&acme, &p, "m").await,
        Err(MonitoringError::NotFound { .. })
    ));
    assert!(
        store
            .list_deliveries(&acme, &alert.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_monitor(&beta, &q, "m").await.is_ok());
}

#[tokio::test]
async fn store_scenario_sqlite() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    scenario(&meta).await;
}

#[tokio::test]
async fn store_scenario_postgres() {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    scenario(&meta).await;
    guard.drop_database().await;
}
