//! The feature table cache across restarts: a restarted store reads the persisted table, a
//! damaged file is computed again, and a new dataset version or view version gets a table
//! of its own.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use ghaf_features::{
    Definitions, EntitySource, FeatureSelection, FeatureStore, TableCache, TrainingSetRequest,
};

const DRIVER_SCHEMA: &str = "
columns:
  - {name: driver_id, type: integer, nullable: false}
  - {name: event_timestamp, type: timestamp, nullable: false}
  - {name: created, type: timestamp, nullable: false}
  - {name: rate, type: float}
event_time: event_timestamp
";

// Driver 1 has a tie at 12:00 that the later created time (rate 0.3) wins.
const DRIVER_ROWS: &str = "driver_id,event_timestamp,created,rate
1,2026-01-01T12:00:00Z,2026-01-01T12:30:00Z,0.3
1,2026-01-01T10:00:00Z,2026-01-01T10:05:00Z,0.1
1,2026-01-01T12:00:00Z,2026-01-01T12:01:00Z,0.2
2,2026-01-01T11:00:00Z,2026-01-01T11:00:00Z,0.5
";

const NEW_DRIVER_ROWS: &str = "driver_id,event_timestamp,created,rate
1,2026-01-01T12:00:00Z,2026-01-01T12:30:00Z,0.7
2,2026-01-01T11:00:00Z,2026-01-01T11:00:00Z,0.9
";

const RIDES_SCHEMA: &str = "
columns:
  - {name: driver_id, type: integer, nullable: false}
  - {name: event_timestamp, type: timestamp, nullable: false}
";

const RIDES_ROWS: &str = "driver_id,event_timestamp
1,2026-01-01T12:00:00Z
1,2026-01-01T11:00:00Z
2,2026-01-01T11:30:00Z
3,2026-01-01T12:00:00Z
";

fn definitions(rate: &str) -> Definitions {
    Definitions::from_yaml(&format!(
        "
entities:
  - {{name: driver, join_key: driver_id, value_type: integer}}
feature_views:
  - name: stats
    entities: [driver]
    source: {{dataset: drivers}}
    event_time: event_timestamp
    created_time: created
    features:
      - {{name: rate, expression: \"{rate}\"}}
"
    ))
    .unwrap()
}

/// A store on the harness's database, blobs and online store, as after a restart: nothing
/// in memory, tables persisted in `dir`.
fn restarted(h: &common::Harness, dir: &Path) -> FeatureStore {
    FeatureStore::new(
        h.store.db().clone(),
        h.ingest.clone(),
        h.store.online().clone(),
    )
    .with_table_cache(TableCache::new(dir.to_owned(), 1 << 30))
}

async fn apply(h: &common::Harness, rate: &str) {
    h.apply(&definitions(rate)).await;
}

/// Builds a training set over every ride and returns its `stats__rate` column, once the
/// table cache file of a computed table is written.
async fn rates(h: &common::Harness, store: &FeatureStore, output: &str) -> Vec<Option<f64>> {
    let request = TrainingSetRequest {
        entities: EntitySource::Dataset {
            name: "rides".to_owned(),
            version: None,
        },
        selection: FeatureSelection {
            features: Some(vec!["stats:rate".to_owned()]),
            feature_service: None,
        },
        timestamp_column: None,
        full_feature_names: true,
        output_dataset: output.to_owned(),
    };
    let outcome = store
        .training_set(&h.tenant, &h.project, "p", request, "tester")
        .await
        .unwrap();
    store.wait_for_table_writes().await;
    let batch = h.read_version(&outcome.version).await;
    let column = batch.column_by_name("stats__rate").unwrap();
    column.as_primitive::<Float64Type>().iter().collect()
}

fn table_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "ftable"))
        .collect();
    files.sort();
    files
}

/// Deletes the blob file of a digest from the local blob store under `root`.
fn delete_blob(root: &Path, digest: &str) -> bool {
    let mut deleted = false;
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            deleted |= delete_blob(&path, digest);
        } else if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains(digest))
        {
            std::fs::remove_file(&path).unwrap();
            deleted = true;
        }
    }
    deleted
}

#[tokio::test]
async fn table_cache_across_restarts() {
    let h = common::sqlite().await;
    let options = common::csv_options();
    let drivers = h.write("drivers.csv", DRIVER_ROWS);
    let first_version = h
        .dataset("drivers", DRIVER_SCHEMA, &drivers, &options)
        .await;
    let rides = h.write("rides.csv", RIDES_ROWS);
    h.dataset("rides", RIDES_SCHEMA, &rides, &options).await;
    apply(&h, "rate").await;
    let expected = vec![Some(0.3), Some(0.1), Some(0.5), None];

    // The first load computes the table and writes one file.
    let dir = h.dir.path().join("tables");
    let first = restarted(&h, &dir);
    assert_eq!(rates(&h, &first, "out_computed").await, expected);
    let files = table_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");

    // A damaged file is deleted, computed again and rewritten.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let second = restarted(&h, &dir);
    assert_eq!(rates(&h, &second, "out_damaged").await, expected);
    assert_eq!(table_files(&dir), files);
    let rewritten = std::fs::read(&files[0]).unwrap();
    assert_ne!(rewritten, bytes);

    // A truncated file is computed again too.
    std::fs::write(&files[0], &rewritten[..rewritten.len() - 30]).unwrap();
    let third = restarted(&h, &dir);
    assert_eq!(rates(&h, &third, "out_truncated").await, expected);
    assert_eq!(std::fs::read(&files[0]).unwrap(), rewritten);

    // With the dataset version's blob gone, only the persisted table can give the
    // features: a restarted store reads it.
    assert!(delete_blob(
        &h.dir.path().join("blobs"),
        &first_version.content_digest
    ));
    let restarted_store = restarted(&h, &dir);
    assert_eq!(rates(&h, &restarted_store, "out_persisted").await, expected);

    // A new dataset version is computed from its own rows into a second file.
    let new_rows = h.write("drivers-2.csv", NEW_DRIVER_ROWS);
    h.dataset("drivers", DRIVER_SCHEMA, &new_rows, &options)
        .await;
    assert_eq!(
        rates(&h, &restarted_store, "out_new_dataset").await,
        vec![Some(0.7), None, Some(0.9), None]
    );
    assert_eq!(table_files(&dir).len(), 2);

    // A new view version gets a third file with its own values.
    apply(&h, "rate * 10").await;
    assert_eq!(
        rates(&h, &restarted_store, "out_new_view").await,
        vec![Some(7.0), None, Some(9.0), None]
    );
    assert_eq!(table_files(&dir).len(), 3);

    // A restart reads the new view version's file as well.
    let last = restarted(&h, &dir);
    assert_eq!(
        rates(&h, &last, "out_new_view_restarted").await,
        vec![Some(7.0), None, Some(9.0), None]
    );
    assert_eq!(table_files(&dir).len(), 3);
    h.finish().await;
}
