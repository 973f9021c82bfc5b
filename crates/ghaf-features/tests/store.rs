//! Definitions, versions, training sets, materialisation and online reads on a small
//! hand-made dataset, on SQLite and on PostgreSQL.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use ghaf_features::online::FieldStatus;
use ghaf_features::{
    Change, Definitions, EntitySource, FeatureError, FeatureSelection, OnlineRequest,
    TrainingSetRequest,
};
use serde_json::json;

const DRIVER_SCHEMA: &str = "
columns:
  - {name: driver_id, type: integer, nullable: false}
  - {name: event_timestamp, type: timestamp, nullable: false}
  - {name: created, type: timestamp, nullable: false}
  - {name: rate, type: float}
  - {name: trips, type: integer}
event_time: event_timestamp
";

// Driver 1 has a tie at 12:00, which the later created time (0.3) wins. Driver 2 has a NULL
// rate, and driver 3 has only an early row.
const DRIVER_ROWS: &str = "driver_id,event_timestamp,created,rate,trips
1,2026-01-01T12:00:00Z,2026-01-01T12:30:00Z,0.3,13
1,2026-01-01T10:00:00Z,2026-01-01T10:05:00Z,0.1,10
1,2026-01-01T12:00:00Z,2026-01-01T12:01:00Z,0.2,12
2,2026-01-01T11:00:00Z,2026-01-01T11:00:00Z,,20
3,2026-01-01T08:00:00Z,2026-01-01T08:00:00Z,0.5,30
";

const RIDES_SCHEMA: &str = "
columns:
  - {name: driver_id, type: integer, nullable: false}
  - {name: event_timestamp, type: timestamp, nullable: false}
  - {name: label, type: string, nullable: false}
";

// Expected rate per row with a TTL of 2h: a 0.3, b 0.1, c 0.3 (duplicate of a), d 0.3.
// Row d matches because the lower TTL bound is inclusive, and e is one second past it (NULL).
// Row f has a NULL value, g an unknown key, and h comes before any data.
const RIDES_ROWS: &str = "driver_id,event_timestamp,label
1,2026-01-01T12:00:00Z,a
1,2026-01-01T11:59:59Z,b
1,2026-01-01T12:00:00Z,c
1,2026-01-01T14:00:00Z,d
1,2026-01-01T14:00:01Z,e
2,2026-01-01T11:30:00Z,f
4,2026-01-01T12:00:00Z,g
3,2026-01-01T07:00:00Z,h
";

const DEFINITIONS: &str = "
entities:
  - {name: driver, join_key: driver_id, value_type: integer}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: {dataset: driver_stats}
    event_time: event_timestamp
    created_time: created
    ttl: 2h
    features:
      - {name: rate}
      - {name: trips}
      - {name: busy, expression: \"trips >= 12\"}
feature_services:
  - name: ranking
    features: [\"driver_stats:trips\", \"driver_stats:rate\"]
";

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

async fn setup(h: &common::Harness) {
    let options = common::csv_options();
    let drivers = h.write("drivers.csv", DRIVER_ROWS);
    h.dataset("driver_stats", DRIVER_SCHEMA, &drivers, &options)
        .await;
    let rides = h.write("rides.csv", RIDES_ROWS);
    h.dataset("rides", RIDES_SCHEMA, &rides, &options).await;
    let definitions = Definitions::from_yaml(DEFINITIONS).unwrap();
    h.apply(&definitions).await;
}

fn training_request(features: &[&str], output: &str) -> TrainingSetRequest {
    TrainingSetRequest {
        entities: EntitySource::Dataset {
            name: "rides".to_owned(),
            version: None,
        },
        selection: FeatureSelection {
            features: Some(features.iter().map(|f| f.to_string()).collect()),
            feature_service: None,
        },
        timestamp_column: None,
        full_feature_names: true,
        output_dataset: output.to_owned(),
    }
}

async fn training_set_semantics(h: &common::Harness) {
    let outcome = h
        .store
        .training_set(
            &h.tenant,
            &h.project,
            "p",
            training_request(
                &[
                    "driver_stats:rate",
                    "driver_stats:trips",
                    "driver_stats:busy",
                ],
                "rides_training",
            ),
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(outcome.rows, 8);
    assert!(
        outcome
            .source
            .starts_with("training-set:entities=rides@v1;"),
        "{}",
        outcome.source
    );
    let out = h.read_version(&outcome.version).await;
    let labels: Vec<&str> = out
        .column_by_name("label")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(labels, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    let rate = out
        .column_by_name("driver_stats__rate")
        .unwrap()
        .as_primitive::<Float64Type>();
    let rates: Vec<Option<f64>> = rate.iter().collect();
    assert_eq!(
        rates,
        [
            Some(0.3),
            Some(0.1),
            Some(0.3),
            Some(0.3),
            None,
            None,
            None,
            None
        ]
    );
    let trips = out.column_by_name("driver_stats__trips").unwrap();
    assert!(
        trips.is_valid(5),
        "driver 2 has a row with trips and a NULL rate"
    );
    assert!(trips.is_null(4), "row e is past the TTL");
    assert!(trips.is_null(6), "row g has an unknown key");
    assert!(trips.is_null(7), "row h comes before any data");
    let busy = out
        .column_by_name("driver_stats__busy")
        .unwrap()
        .as_boolean();
    assert_eq!(
        busy.iter().take(2).collect::<Vec<_>>(),
        [Some(true), Some(false)]
    );

    // Features of two view versions come back in the requested order, not view by view.
    let mixed = h
        .store
        .training_set(
            &h.tenant,
            &h.project,
            "p",
            training_request(
                &[
                    "driver_stats:rate",
                    "driver_stats@v1:trips",
                    "driver_stats:busy",
                ],
                "rides_mixed_order",
            ),
            "tester",
        )
        .await
        .unwrap();
    let features: Vec<&str> = mixed
        .columns
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        features,
        [
            "driver_stats__rate",
            "driver_stats@v1__trips",
            "driver_stats__busy"
        ]
    );
}

fn online_request(features: &[&str], drivers: &[i64]) -> OnlineRequest {
    OnlineRequest {
        selection: FeatureSelection {
            features: Some(features.iter().map(|f| f.to_string()).collect()),
            feature_service: None,
        },
        entities: [(
            "driver_id".to_owned(),
            drivers.iter().map(|d| json!(d)).collect(),
        )]
        .into(),
        full_feature_names: false,
    }
}

async fn materialize_and_read(h: &common::Harness) {
    let (tenant, project) = (&h.tenant, &h.project);
    // Two outputs with one name are refused online as in training sets.
    let error = h
        .store
        .get_online_features_at(
            tenant,
            project,
            &online_request(&["driver_stats:rate", "driver_stats@v1:rate"], &[1]),
            at("2026-01-01T12:00:00Z"),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("two output columns are named \"rate\""),
        "{error}"
    );
    let first = h
        .store
        .materialize(
            tenant,
            project,
            "driver_stats",
            None,
            Some(at("2026-01-01T10:00:00Z")),
            at("2026-01-01T11:00:00Z"),
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(first.record.keys_written, 2);

    // Incremental: continues from 11:00 and writes driver 1's tie winner.
    let incremental = h
        .store
        .materialize(
            tenant,
            project,
            "driver_stats",
            None,
            None,
            at("2026-01-01T13:00:00Z"),
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(incremental.record.start_micros, at("2026-01-01T11:00:00Z"));
    assert_eq!(incremental.record.keys_written, 2);

    // An older range never overwrites the newer row of driver 1.
    let older = h
        .store
        .materialize(
            tenant,
            project,
            "driver_stats",
            None,
            Some(at("2026-01-01T07:00:00Z")),
            at("2026-01-01T10:30:00Z"),
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(older.record.keys_written, 1, "only driver 3 is new");
    assert_eq!(
        older.record.keys_skipped, 1,
        "driver 1's 10:00 row is older"
    );

    let now = at("2026-01-01T12:30:00Z");
    let response = h
        .store
        .get_online_features_at(
            tenant,
            project,
            &online_request(&["driver_stats:rate", "driver_stats:trips"], &[1, 2, 3, 9]),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        response.metadata.feature_names,
        ["driver_id", "rate", "trips"]
    );
    assert_eq!(
        response.results[0].values,
        [json!(1), json!(2), json!(3), json!(9)]
    );
    let rate = &response.results[1];
    assert_eq!(
        rate.values,
        [json!(0.3), json!(null), json!(null), json!(null)]
    );
    assert_eq!(
        rate.statuses,
        [
            FieldStatus::Present,
            FieldStatus::NullValue,
            FieldStatus::OutsideMaxAge,
            FieldStatus::NotFound
        ]
    );
    assert_eq!(&*rate.event_timestamps[0], "2026-01-01T12:00:00Z");
    assert_eq!(&*rate.event_timestamps[3], "1970-01-01T00:00:00Z");
    assert_eq!(response.results[2].values[1], json!(20));

    // The requested order is kept, also through a feature service.
    let reversed = h
        .store
        .get_online_features_at(
            tenant,
            project,
            &online_request(&["driver_stats:trips", "driver_stats:rate"], &[1]),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        reversed.metadata.feature_names,
        ["driver_id", "trips", "rate"]
    );
    let mut by_service = online_request(&[], &[1]);
    by_service.selection = FeatureSelection {
        features: None,
        feature_service: Some("ranking".to_owned()),
    };
    by_service.full_feature_names = true;
    let service = h
        .store
        .get_online_features_at(tenant, project, &by_service, now)
        .await
        .unwrap();
    assert_eq!(
        service.metadata.feature_names,
        ["driver_id", "driver_stats__trips", "driver_stats__rate"]
    );
    assert_eq!(service.results[1].values, [json!(13)]);

    // Bad requests name the problem.
    let mut wrong_type = online_request(&["driver_stats:rate"], &[1]);
    wrong_type
        .entities
        .insert("driver_id".to_owned(), vec![json!("one")]);
    let error = h
        .store
        .get_online_features_at(tenant, project, &wrong_type, now)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("join key \"driver_id\" is integer"),
        "{error}"
    );
    let unknown = h
        .store
        .get_online_features_at(
            tenant,
            project,
            &online_request(&["driver_stats:speed"], &[1]),
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, FeatureError::InvalidReference { .. }),
        "{unknown}"
    );
}

async fn versions(h: &common::Harness) {
    let (tenant, project) = (&h.tenant, &h.project);
    let mut definitions = Definitions::from_yaml(DEFINITIONS).unwrap();

    // A TTL edit keeps the version.
    definitions.feature_views[0].ttl = Some("3h".to_owned());
    let plan = h.store.plan(tenant, project, &definitions).await.unwrap();
    let view = plan
        .changes
        .iter()
        .find(|c| c.kind == "feature_view")
        .unwrap();
    assert_eq!(view.change, Change::Update { version: Some(1) });
    assert_eq!(view.fields, ["ttl"]);
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();

    // A new expression makes version 2; version 1 stays resolvable.
    definitions.feature_views[0].features[0].expression = Some("rate * 100".to_owned());
    let plan = h.store.plan(tenant, project, &definitions).await.unwrap();
    assert!(
        plan.render()
            .contains("~ feature_view driver_stats v1 -> v2"),
        "{}",
        plan.render()
    );
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();
    let versions = h
        .store
        .db()
        .list_view_versions(tenant, project, "driver_stats")
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].spec.ttl.as_deref(), Some("3h"));

    let outcome = h
        .store
        .training_set(
            tenant,
            project,
            "p",
            training_request(
                &["driver_stats@v1:rate", "driver_stats:rate"],
                "versions_training",
            ),
            "tester",
        )
        .await
        .unwrap();
    let out = h.read_version(&outcome.version).await;
    let old = out
        .column_by_name("driver_stats@v1__rate")
        .unwrap()
        .as_primitive::<Float64Type>();
    let new = out
        .column_by_name("driver_stats__rate")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(old.value(0), 0.3);
    assert!((new.value(0) - 30.0).abs() < 1e-9);

    // Online rows belong to a version: v2 has none yet, v1 still serves.
    let now = at("2026-01-01T12:30:00Z");
    let mut both = online_request(&["driver_stats@v1:rate", "driver_stats:rate"], &[1]);
    both.full_feature_names = true;
    let response = h
        .store
        .get_online_features_at(tenant, project, &both, now)
        .await
        .unwrap();
    assert_eq!(
        response.metadata.feature_names,
        ["driver_id", "driver_stats@v1__rate", "driver_stats__rate"]
    );
    assert_eq!(response.results[1].statuses, [FieldStatus::Present]);
    assert_eq!(response.results[2].statuses, [FieldStatus::NotFound]);

    // A training set whose columns differ from an existing output dataset is rejected.
    let mismatch = h
        .store
        .training_set(
            tenant,
            project,
            "p",
            training_request(&["driver_stats:rate"], "rides_training"),
            "tester",
        )
        .await
        .unwrap_err();
    assert!(
        mismatch
            .to_string()
            .contains("choose another output dataset"),
        "{mismatch}"
    );

    // An unknown dataset column is rejected at plan time, naming the feature.
    definitions.feature_views[0].features[0].expression = Some("speed * 2".to_owned());
    let error = h
        .store
        .plan(tenant, project, &definitions)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("driver_stats:rate"), "{error}");
    assert!(
        error.to_string().contains("unknown column \"speed\""),
        "{error}"
    );
}

// DEFINITIONS with a new feature, which makes a new view version, and a service that
// names only that feature.
const DEFINITIONS_WITH_TRIPS_X2: &str = "
entities:
  - {name: driver, join_key: driver_id, value_type: integer}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: {dataset: driver_stats}
    event_time: event_timestamp
    created_time: created
    ttl: 2h
    features:
      - {name: rate}
      - {name: trips}
      - {name: busy, expression: \"trips >= 12\"}
      - {name: trips_x2, expression: \"trips * 2\"}
feature_services:
  - name: ranking
    features: [\"driver_stats:trips_x2\"]
";

/// Checks that the next online read after an apply uses the new definitions, on the store
/// that applied them and on a second store over the same database whose cache TTL is zero.
async fn online_reads_see_applied_definitions(h: &common::Harness) {
    let (tenant, project) = (&h.tenant, &h.project);
    let replica = ghaf_features::FeatureStore::new(
        h.store.db().clone(),
        h.ingest.clone(),
        h.store.online().clone(),
    )
    .with_definition_cache_ttl(std::time::Duration::ZERO);
    let now = at("2026-01-01T12:30:00Z");
    let new_feature = online_request(&["driver_stats:trips_x2"], &[1]);
    let mut by_service = online_request(&[], &[1]);
    by_service.selection = FeatureSelection {
        features: None,
        feature_service: Some("ranking".to_owned()),
    };
    by_service.full_feature_names = true;

    // Both stores resolve (and cache) the latest version, which lacks the feature.
    for store in [&h.store, &replica] {
        let error = store
            .get_online_features_at(tenant, project, &new_feature, now)
            .await
            .unwrap_err();
        assert!(
            matches!(error, FeatureError::InvalidReference { .. }),
            "{error}"
        );
        let service = store
            .get_online_features_at(tenant, project, &by_service, now)
            .await
            .unwrap();
        assert_eq!(
            service.metadata.feature_names,
            ["driver_id", "driver_stats__trips", "driver_stats__rate"]
        );
    }

    let definitions = Definitions::from_yaml(DEFINITIONS_WITH_TRIPS_X2).unwrap();
    let plan = h.store.plan(tenant, project, &definitions).await.unwrap();
    h.store
        .apply(tenant, project, &plan, "tester")
        .await
        .unwrap();

    for store in [&h.store, &replica] {
        // The new version has no online rows yet, so the feature resolves as NOT_FOUND.
        let response = store
            .get_online_features_at(tenant, project, &new_feature, now)
            .await
            .unwrap();
        assert_eq!(response.metadata.feature_names, ["driver_id", "trips_x2"]);
        assert_eq!(response.results[1].statuses, [FieldStatus::NotFound]);
        let service = store
            .get_online_features_at(tenant, project, &by_service, now)
            .await
            .unwrap();
        assert_eq!(
            service.metadata.feature_names,
            ["driver_id", "driver_stats__trips_x2"]
        );
    }
}

async fn run_all(h: common::Harness) {
    setup(&h).await;
    training_set_semantics(&h).await;
    materialize_and_read(&h).await;
    versions(&h).await;
    online_reads_see_applied_definitions(&h).await;
    h.finish().await;
}

#[tokio::test]
async fn feature_store_on_sqlite() {
    run_all(common::sqlite().await).await;
}

#[tokio::test]
async fn feature_store_on_postgres() {
    run_all(common::postgres().await).await;
}
