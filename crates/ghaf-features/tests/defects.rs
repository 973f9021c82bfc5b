//! Regression tests of fixed feature-store defects: untyped NULL in boolean expressions,
//! null entity keys in online reads, pushed rows with a null event time, entity
//! descriptions on re-apply, in-place updates of an old view version, concurrent loads of
//! one feature table, and the join keys and creator name stored with each view version. On
//! SQLite and on PostgreSQL.

mod common;

use arrow::array::{Array, AsArray};
use ghaf_features::online::FieldStatus;
use ghaf_features::{
    Change, Definitions, EntitySource, FeatureError, FeatureSelection, KeyType, OnlineRequest,
    PushTarget, StoredJoinKey, TrainingSetRequest,
};
use serde_json::json;

// The dataset declares no event time, so its timestamp column may hold NULLs; the view
// uses it as its event time.
const SCHEMA: &str = "
columns:
  - {name: driver_id, type: integer, nullable: false}
  - {name: event_timestamp, type: timestamp, nullable: true}
  - {name: trips, type: integer}
";

const ROWS: &str = "driver_id,event_timestamp,trips
1,2026-01-01T10:00:00Z,10
2,2026-01-01T11:00:00Z,20
";

const ENTITY_ROWS: &str = "driver_id,event_timestamp
1,2026-01-01T12:00:00Z
2,2026-01-01T12:00:00Z
";

const DEFINITIONS: &str = "
entities:
  - {name: driver, join_key: driver_id, value_type: integer, description: A driver of the fleet.}
feature_views:
  - name: stats
    entities: [driver]
    source: {dataset: stats}
    event_time: event_timestamp
    features:
      - {name: trips}
      - {name: unknown_busy, expression: \"NULL AND trips > 1\"}
      - {name: maybe, expression: \"CASE WHEN NULL OR trips > 15 THEN 1 ELSE 0 END\"}
";

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

async fn setup(h: &common::Harness) -> Definitions {
    let options = common::csv_options();
    let rows = h.write("stats.csv", ROWS);
    h.dataset("stats", SCHEMA, &rows, &options).await;
    let entity_rows = h.write("entity_rows.csv", ENTITY_ROWS);
    h.dataset(
        "entity_rows",
        "columns:\n  - {name: driver_id, type: integer}\n  - {name: event_timestamp, type: timestamp}\n",
        &entity_rows,
        &options,
    )
    .await;
    let definitions = Definitions::from_yaml(DEFINITIONS).unwrap();
    h.apply(&definitions).await;
    definitions
}

/// `NULL AND x` used to fail at evaluation with a 500 that named no feature.
async fn untyped_null_in_boolean_expression(h: &common::Harness) {
    let outcome = h
        .store
        .training_set(
            &h.tenant,
            &h.project,
            "p",
            TrainingSetRequest {
                entities: EntitySource::Dataset {
                    name: "entity_rows".to_owned(),
                    version: None,
                },
                selection: FeatureSelection {
                    features: Some(vec![
                        "stats:unknown_busy".to_owned(),
                        "stats:maybe".to_owned(),
                    ]),
                    feature_service: None,
                },
                timestamp_column: None,
                full_feature_names: false,
                output_dataset: "null_logic".to_owned(),
            },
            "tester",
        )
        .await
        .unwrap();
    let out = h.read_version(&outcome.version).await;
    // NULL AND (10 > 1) is NULL; NULL AND (20 > 1) is NULL.
    let busy = out.column_by_name("unknown_busy").unwrap().as_boolean();
    assert_eq!(busy.null_count(), 2);
    // CASE WHEN NULL OR trips > 15: driver 1 (10) takes ELSE 0, driver 2 (20) takes 1.
    let maybe = out
        .column_by_name("maybe")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(maybe.values().to_vec(), vec![0, 1]);
}

/// A null entity key used to reject the whole online read.
async fn null_entity_keys_are_not_found(h: &common::Harness) {
    let (tenant, project) = (&h.tenant, &h.project);
    h.store
        .materialize(
            tenant,
            project,
            "stats",
            None,
            Some(at("2026-01-01T00:00:00Z")),
            at("2026-01-02T00:00:00Z"),
            "tester",
        )
        .await
        .unwrap();
    let request = OnlineRequest {
        selection: FeatureSelection {
            features: Some(vec!["stats:trips".to_owned()]),
            feature_service: None,
        },
        entities: [(
            "driver_id".to_owned(),
            vec![json!(1), json!(null), json!(2), json!(null)],
        )]
        .into(),
        full_feature_names: false,
    };
    let response = h
        .store
        .get_online_features_at(tenant, project, &request, at("2026-01-01T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(response.metadata.feature_names, ["driver_id", "trips"]);
    assert_eq!(
        response.results[0].statuses,
        [
            FieldStatus::Present,
            FieldStatus::NullValue,
            FieldStatus::Present,
            FieldStatus::NullValue
        ]
    );
    assert_eq!(
        response.results[1].values,
        [json!(10), json!(null), json!(20), json!(null)]
    );
    assert_eq!(
        response.results[1].statuses,
        [
            FieldStatus::Present,
            FieldStatus::NotFound,
            FieldStatus::Present,
            FieldStatus::NotFound
        ]
    );
    // A key of the wrong type is still an error that names the join key.
    let mut wrong = request.clone();
    wrong
        .entities
        .insert("driver_id".to_owned(), vec![json!("one")]);
    let error = h
        .store
        .get_online_features_at(tenant, project, &wrong, at("2026-01-01T12:00:00Z"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("join key \"driver_id\""),
        "{error}"
    );
}

/// Pushed rows with a null event time used to vanish from the online write unreported.
async fn pushed_rows_without_event_time_are_reported(h: &common::Harness) {
    let df = json!({
        "driver_id": [1, 3, 4],
        "event_timestamp": ["2026-01-01T13:00:00Z", null, "2026-01-01T13:00:00Z"],
        "trips": [11, 30, 40],
    });
    let report = h
        .store
        .push(
            &h.tenant,
            &h.project,
            "p",
            "stats",
            df.as_object().unwrap(),
            PushTarget::Online,
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(report.online.len(), 1);
    let online = &report.online[0];
    assert_eq!(online.written, 2);
    assert_eq!(online.rejected, 1);
    assert_eq!(online.rejected_rows.len(), 1);
    assert_eq!(online.rejected_rows[0].row, 2);
    assert!(
        online.rejected_rows[0]
            .reason
            .contains("event time \"event_timestamp\" is null"),
        "{:?}",
        online.rejected_rows
    );
    let serialized = serde_json::to_value(online).unwrap();
    assert_eq!(serialized["rejected"], json!(1));
}

/// Re-applying an entity without a description used to clear the stored one.
async fn entity_description_is_kept(h: &common::Harness, definitions: &Definitions) {
    let (tenant, project) = (&h.tenant, &h.project);
    let mut again = definitions.clone();
    again.entities[0].description = String::new();
    let plan = h.store.plan(tenant, project, &again).await.unwrap();
    let entity = plan.changes.iter().find(|c| c.kind == "entity").unwrap();
    assert_eq!(entity.change, Change::Unchanged, "{}", plan.render());
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();
    let stored = h.store.db().list_entities(tenant, project).await.unwrap();
    assert_eq!(stored[0].description, "A driver of the fleet.");

    // A new description still replaces it.
    again.entities[0].description = "Drivers.".to_owned();
    let plan = h.store.plan(tenant, project, &again).await.unwrap();
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();
    let stored = h.store.db().list_entities(tenant, project).await.unwrap();
    assert_eq!(stored[0].description, "Drivers.");
}

/// An in-place update planned against version 1 used to rewrite version 1 after another
/// apply had made version 2.
async fn stale_in_place_update_conflicts(h: &common::Harness, definitions: &Definitions) {
    let (tenant, project) = (&h.tenant, &h.project);
    let mut ttl_edit = definitions.clone();
    ttl_edit.feature_views[0].ttl = Some("5h".to_owned());
    let stale = h.store.plan(tenant, project, &ttl_edit).await.unwrap();
    let view = stale
        .changes
        .iter()
        .find(|c| c.kind == "feature_view")
        .unwrap();
    assert_eq!(view.change, Change::Update { version: Some(1) });

    let mut new_version = definitions.clone();
    new_version.feature_views[0].features[0].expression = Some("trips * 2".to_owned());
    let plan = h.store.plan(tenant, project, &new_version).await.unwrap();
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();

    let error = h
        .store
        .apply(tenant, project, &stale, "tester")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FeatureError::VersionConflict {
                planned: 1,
                latest: 2,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), ghaf_core::ErrorCode::FailedPrecondition);
    let message = error.to_string();
    assert!(
        message.contains("version 1") && message.contains("version 2"),
        "{message}"
    );
    // Version 1 kept its definition.
    let v1 = h
        .store
        .db()
        .get_view(tenant, project, "stats", Some(1))
        .await
        .unwrap();
    assert_eq!(v1.spec.ttl, None);
}

/// View versions used to resolve their join keys through the current entities, so
/// re-declaring an entity changed how an old version was keyed.
async fn versions_keep_their_join_keys(h: &common::Harness) {
    let (tenant, project) = (&h.tenant, &h.project);
    // A principal named like a person, for the creator column of `ghaf features versions`.
    sqlx::query(h.store.db().db().sql(
        "INSERT INTO principals (id, tenant_id, kind, name, created_at) VALUES (?, ?, ?, ?, ?)",
    ))
    .bind("p-alice")
    .bind(h.tenant.as_str())
    .bind("user")
    .bind("alice")
    .bind(0i64)
    .execute(h.store.db().db().pool())
    .await
    .unwrap();
    let mut definitions = Definitions::from_yaml(DEFINITIONS).unwrap();
    definitions.feature_views[0].features[0].expression = Some("trips + 1".to_owned());
    let plan = h.store.plan(tenant, project, &definitions).await.unwrap();
    h.store
        .apply(tenant, project, &plan, "p-alice")
        .await
        .unwrap();
    let versions = h
        .store
        .db()
        .list_view_versions(tenant, project, "stats")
        .await
        .unwrap();
    let latest = versions.last().unwrap();
    assert_eq!(
        latest.join_keys,
        [StoredJoinKey {
            entity: "driver".to_owned(),
            column: "driver_id".to_owned(),
            value_type: KeyType::Integer,
        }]
    );
    assert_eq!(latest.created_by, "p-alice");
    assert_eq!(latest.created_by_name.as_deref(), Some("alice"));
    assert_eq!(
        versions[0].created_by_name, None,
        "created by an unknown id"
    );
    let version = latest.version;
    h.store
        .materialize(
            tenant,
            project,
            "stats",
            None,
            Some(at("2026-01-01T00:00:00Z")),
            at("2026-01-02T00:00:00Z"),
            "tester",
        )
        .await
        .unwrap();

    // Re-declare the entity with another join key, without touching the view.
    let redeclared = Definitions::from_yaml(
        "entities:\n  - {name: driver, join_key: driver_key, value_type: string}\n",
    )
    .unwrap();
    let plan = h.store.plan(tenant, project, &redeclared).await.unwrap();
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();

    // The stored version still reads and serves by its own key column and type.
    let request = OnlineRequest {
        selection: FeatureSelection {
            features: Some(vec![format!("stats@v{version}:trips")]),
            feature_service: None,
        },
        entities: [("driver_id".to_owned(), vec![json!(2)])].into(),
        full_feature_names: false,
    };
    let response = h
        .store
        .get_online_features_at(tenant, project, &request, at("2026-01-01T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(response.results[1].values, [json!(21)]);
    assert_eq!(response.results[1].statuses, [FieldStatus::Present]);
    let loaded = h
        .store
        .load_view(tenant, project, "stats", Some(version))
        .await
        .unwrap();
    assert_eq!(loaded.view.keys[0].column, "driver_id");
}

/// Two requests for a view version whose table is not in memory wait for one load and
/// share its result, instead of each computing the table.
async fn concurrent_loads_share_one_table(h: &common::Harness) {
    let definitions = Definitions::from_yaml(
        "feature_views:\n  - name: shared\n    entities: [driver]\n    source: {dataset: stats}\n    \
         event_time: event_timestamp\n    features:\n      - {name: trips}\n",
    )
    .unwrap();
    h.apply(&definitions).await;

    let (first, second) = tokio::join!(
        h.store.load_view(&h.tenant, &h.project, "shared", None),
        h.store.load_view(&h.tenant, &h.project, "shared", None),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "the second request computed the table again"
    );
    assert_eq!(first.table.row_count(), 2);
}

async fn run_all(h: common::Harness) {
    let definitions = setup(&h).await;
    untyped_null_in_boolean_expression(&h).await;
    null_entity_keys_are_not_found(&h).await;
    pushed_rows_without_event_time_are_reported(&h).await;
    entity_description_is_kept(&h, &definitions).await;
    stale_in_place_update_conflicts(&h, &definitions).await;
    concurrent_loads_share_one_table(&h).await;
    versions_keep_their_join_keys(&h).await;
    h.finish().await;
}

#[tokio::test]
async fn defects_on_sqlite() {
    run_all(common::sqlite().await).await;
}

#[tokio::test]
async fn defects_on_postgres() {
    run_all(common::postgres().await).await;
}
