//! Conformance suite of [`DatasetStore`]: every function runs against an empty metadata
//! database and panics on a failed expectation. The crate's tests run it on SQLite and on
//! PostgreSQL.

use ghaf_core::{Name, PrincipalId, ProjectId, TenantId};
use ghaf_meta::{MetaStore, SqlMetaStore};

use crate::IngestError;
use crate::pipeline::IngestReport;
use crate::profile::Profile;
use crate::schema::DatasetSchema;
use crate::store::{DatasetStore, DatasetVersion, LineageFilter, StoredLineageEvent};

const SCHEMA: &str =
    "columns:\n  - {name: id, type: integer, nullable: false}\n  - {name: label, type: string}\n";

/// Creates tenant `acme` with project `p` and tenant `beta` with project `q`.
async fn setup(meta: &SqlMetaStore) -> (DatasetStore, TenantId, ProjectId, TenantId, ProjectId) {
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
    (DatasetStore::new(meta.db().clone()), acme, p, beta, q)
}

fn version(dataset_id: &str, digest: &str, rows: u64) -> DatasetVersion {
    DatasetVersion {
        dataset_id: dataset_id.to_owned(),
        version: 0,
        schema_version: 1,
        content_digest: digest.to_owned(),
        content_size: 100,
        row_count: rows,
        quarantined_rows: 0,
        quarantine_digest: None,
        report: IngestReport {
            rows_read: rows,
            rows_accepted: rows,
            rows_quarantined: 0,
            failure_share: 0.0,
            checks: Vec::new(),
            sample: Vec::new(),
        },
        profile: Profile {
            row_count: rows,
            columns: Vec::new(),
        },
        source: "test".into(),
        created_at: 1,
        created_by: "creator".into(),
    }
}

/// Datasets are unique by name within a project and invisible to other projects and tenants.
pub async fn datasets_are_scoped(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    let schema = DatasetSchema::from_yaml(SCHEMA).unwrap();
    let created = store
        .create_dataset(&acme, &p, "events", "d", &schema, "creator")
        .await
        .unwrap();
    assert_eq!(created.schema_version, 1);

    let duplicate = store
        .create_dataset(&acme, &p, "events", "", &schema, "creator")
        .await;
    assert!(
        matches!(duplicate, Err(IngestError::AlreadyExists { .. })),
        "{duplicate:?}"
    );
    store
        .create_dataset(&beta, &q, "events", "", &schema, "creator")
        .await
        .unwrap();

    let found = store.get_dataset(&acme, &p, "events").await.unwrap();
    assert_eq!(found, created);
    let hidden = store.get_dataset(&beta, &p, "events").await;
    assert!(
        matches!(hidden, Err(IngestError::NotFound { .. })),
        "{hidden:?}"
    );
    assert_eq!(store.list_datasets(&acme, &p).await.unwrap().len(), 1);
    assert!(store.list_datasets(&acme, &q).await.unwrap().is_empty());
}

/// Schema versions count up and the dataset follows the newest; a stale update conflicts.
pub async fn schema_versions(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let schema = DatasetSchema::from_yaml(SCHEMA).unwrap();
    let dataset = store
        .create_dataset(&acme, &p, "events", "", &schema, "creator")
        .await
        .unwrap();
    let mut next = schema.clone();
    next.columns[1].description = "changed".into();
    let added = store
        .add_schema_version(&dataset, &next, "creator")
        .await
        .unwrap();
    assert_eq!(added.version, 2);

    let stale = store.add_schema_version(&dataset, &next, "creator").await;
    assert!(stale.is_err(), "an update based on version 1 must conflict");

    let current = store.get_dataset(&acme, &p, "events").await.unwrap();
    assert_eq!(current.schema_version, 2);
    assert_eq!(current.schema, next);
    let versions = store.list_schemas(&current).await.unwrap();
    let numbers: Vec<i64> = versions.iter().map(|version| version.version).collect();
    assert_eq!(numbers, [1, 2]);
}

/// Versions are numbered in order, deduplicated by content digest and tenant-scoped.
pub async fn versions_dedup_by_digest(meta: &SqlMetaStore) {
    let (store, acme, p, beta, _) = setup(meta).await;
    let schema = DatasetSchema::from_yaml(SCHEMA).unwrap();
    let dataset = store
        .create_dataset(&acme, &p, "events", "", &schema, "creator")
        .await
        .unwrap();

    let (first, created) = store
        .insert_version(&acme, &version(&dataset.id, "aa", 3))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.version, 1);
    let (second, created) = store
        .insert_version(&acme, &version(&dataset.id, "bb", 4))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(second.version, 2);
    let (again, created) = store
        .insert_version(&acme, &version(&dataset.id, "aa", 3))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);

    let listed = store.list_versions(&acme, &dataset.id).await.unwrap();
    let numbers: Vec<i64> = listed.iter().map(|version| version.version).collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(
        store.get_version(&acme, &dataset.id, 2).await.unwrap(),
        second
    );
    assert!(store.get_version(&beta, &dataset.id, 2).await.is_err());
    assert!(
        store
            .list_versions(&beta, &dataset.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Concurrent inserts of different content get distinct numbers; of equal content, one version.
pub async fn concurrent_version_inserts(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let schema = DatasetSchema::from_yaml(SCHEMA).unwrap();
    let dataset = store
        .create_dataset(&acme, &p, "events", "", &schema, "creator")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for index in 0..8 {
        let store = store.clone();
        let acme = acme.clone();
        let digest = format!("digest-{}", index % 4);
        let candidate = version(&dataset.id, &digest, 1);
        tasks.push(tokio::spawn(async move {
            store.insert_version(&acme, &candidate).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let listed = store.list_versions(&acme, &dataset.id).await.unwrap();
    let mut numbers: Vec<i64> = listed.iter().map(|version| version.version).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

/// Lineage events are listed in order, filtered by project, dataset and run, and paged.
pub async fn lineage_events(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    for (index, (tenant, project, dataset)) in
        [(&acme, &p, "a"), (&acme, &p, "b"), (&beta, &q, "a")]
            .into_iter()
            .enumerate()
    {
        for kind in ["START", "COMPLETE"] {
            let event = StoredLineageEvent {
                id: uuid::Uuid::now_v7().simple().to_string(),
                project: project.clone(),
                run_id: format!("run-{index}"),
                event_type: kind.into(),
                event_time: 10,
                job_name: format!("ingest.{dataset}"),
                dataset: dataset.into(),
                event: serde_json::json!({ "eventType": kind }),
            };
            store.insert_lineage_event(tenant, &event).await.unwrap();
        }
    }
    let all = LineageFilter {
        limit: 100,
        ..LineageFilter::default()
    };
    let events = store.list_lineage_events(&acme, &all).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].event_type, "START");
    assert_eq!(events[1].event_type, "COMPLETE");

    let by_dataset = LineageFilter {
        dataset: Some("b".into()),
        ..all.clone()
    };
    assert_eq!(
        store
            .list_lineage_events(&acme, &by_dataset)
            .await
            .unwrap()
            .len(),
        2
    );
    let by_run = LineageFilter {
        run_id: Some("run-0".into()),
        ..all.clone()
    };
    assert_eq!(
        store
            .list_lineage_events(&acme, &by_run)
            .await
            .unwrap()
            .len(),
        2
    );
    let other_project = LineageFilter {
        projects: Some(vec![q.clone()]),
        ..all.clone()
    };
    assert!(
        store
            .list_lineage_events(&acme, &other_project)
            .await
            .unwrap()
            .is_empty()
    );
    let no_project = LineageFilter {
        projects: Some(Vec::new()),
        ..all.clone()
    };
    assert!(
        store
            .list_lineage_events(&acme, &no_project)
            .await
            .unwrap()
            .is_empty()
    );
    let first_page = LineageFilter {
        limit: 3,
        ..all.clone()
    };
    let page = store.list_lineage_events(&acme, &first_page).await.unwrap();
    assert_eq!(page.len(), 3);
    let next_page = LineageFilter {
        after: Some(page[2].id.clone()),
        ..all
    };
    let rest = store.list_lineage_events(&acme, &next_page).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        store
            .list_lineage_events(
                &beta,
                &LineageFilter {
                    limit: 10,
                    ..LineageFilter::default()
                }
            )
            .await
            .unwrap()
            .len(),
        2
    );
}
