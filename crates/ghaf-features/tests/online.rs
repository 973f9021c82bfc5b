//! One conformance suite for the online store backends: the embedded redb store and Redis
//! on 127.0.0.1:6379 (`GHAF_TEST_REDIS_URL` overrides it). Every Redis test uses a key
//! prefix of its own.

use std::collections::BTreeMap;

use ghaf_core::{Name, ProjectId, TenantId};
use ghaf_features::online::{
    EntityKey, FieldStatus, KeyValue, OnlineRow, OnlineScope, OnlineStore, PickedRow,
    RedbOnlineStore, RedisOnlineStore, resolve,
};
use serde_json::json;

const HOUR: i64 = 3_600_000_000;

fn scope(tenant: &str, project: &str, version: i64) -> OnlineScope {
    OnlineScope {
        tenant: TenantId::new(Name::parse(tenant).unwrap()),
        project: ProjectId::from_stored(project),
        view: "driver_stats".to_owned(),
        version,
    }
}

fn key(id: i64) -> EntityKey {
    EntityKey::new([("driver_id".to_owned(), KeyValue::Int(id))])
}

fn row(event_hours: i64, created: i64, value: serde_json::Value) -> OnlineRow {
    OnlineRow {
        event_micros: event_hours * HOUR,
        created_micros: created,
        values: BTreeMap::from([("rate".to_owned(), value)]),
    }
}

async fn rate(store: &dyn OnlineStore, scope: &OnlineScope, id: i64) -> serde_json::Value {
    let rows = store.read(scope, &[key(id)]).await.unwrap();
    rows[0]
        .as_ref()
        .map(|r| r.values["rate"].clone())
        .unwrap_or(serde_json::Value::Null)
}

async fn round_trip(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 1);
    let counts = store
        .write(
            &scope,
            vec![
                (key(1), row(10, 0, json!(0.5))),
                (key(2), row(11, 0, json!(null))),
            ],
        )
        .await
        .unwrap();
    assert_eq!(counts.written, 2);
    let rows = store.read(&scope, &[key(2), key(3), key(1)]).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_ref().unwrap().event_micros, 11 * HOUR);
    assert!(rows[1].is_none());
    assert_eq!(rows[2].as_ref().unwrap().values["rate"], json!(0.5));
}

async fn older_write_never_overwrites(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 1);
    store
        .write(&scope, vec![(key(7), row(20, 0, json!(13)))])
        .await
        .unwrap();
    let counts = store
        .write(&scope, vec![(key(7), row(10, 5, json!(12)))])
        .await
        .unwrap();
    assert_eq!(counts.written, 0);
    assert_eq!(counts.skipped, 1);
    assert_eq!(rate(store, &scope, 7).await, json!(13));

    // Same event time: the later created time wins, an earlier one is skipped.
    store
        .write(&scope, vec![(key(7), row(20, 9, json!(14)))])
        .await
        .unwrap();
    assert_eq!(rate(store, &scope, 7).await, json!(14));
    let counts = store
        .write(&scope, vec![(key(7), row(20, 3, json!(15)))])
        .await
        .unwrap();
    assert_eq!(counts.skipped, 1);
    assert_eq!(rate(store, &scope, 7).await, json!(14));

    // Replaying the same row is accepted, and a newer one replaces it.
    let counts = store
        .write(&scope, vec![(key(7), row(20, 9, json!(14)))])
        .await
        .unwrap();
    assert_eq!(counts.written, 1);
    store
        .write(&scope, vec![(key(7), row(21, 0, json!(16)))])
        .await
        .unwrap();
    assert_eq!(rate(store, &scope, 7).await, json!(16));
}

async fn ttl_applies_on_read(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 1);
    store
        .write(
            &scope,
            vec![
                (key(20), row(10, 0, json!(1.5))),
                (key(21), row(10, 0, json!(null))),
            ],
        )
        .await
        .unwrap();
    let rows = store
        .read(&scope, &[key(20), key(21), key(22)])
        .await
        .unwrap();
    let ttl = Some(2 * HOUR);

    let fresh = resolve(rows[0].as_ref(), "rate", ttl, 12 * HOUR);
    assert_eq!(fresh.status, FieldStatus::Present);
    assert_eq!(fresh.value, json!(1.5));
    assert_eq!(fresh.event_micros, Some(10 * HOUR));

    let stale = resolve(rows[0].as_ref(), "rate", ttl, 12 * HOUR + 1);
    assert_eq!(stale.status, FieldStatus::OutsideMaxAge);
    assert_eq!(stale.value, json!(null));

    let no_ttl = resolve(rows[0].as_ref(), "rate", None, 1_000 * HOUR);
    assert_eq!(no_ttl.status, FieldStatus::Present);

    let null = resolve(rows[1].as_ref(), "rate", ttl, 11 * HOUR);
    assert_eq!(null.status, FieldStatus::NullValue);

    let missing = resolve(rows[2].as_ref(), "rate", ttl, 11 * HOUR);
    assert_eq!(missing.status, FieldStatus::NotFound);
    let unknown_feature = resolve(rows[0].as_ref(), "speed", ttl, 11 * HOUR);
    assert_eq!(unknown_feature.status, FieldStatus::NotFound);
}

async fn scopes_are_isolated(store: &dyn OnlineStore) {
    let own = scope("acme", "p1", 1);
    store
        .write(&own, vec![(key(30), row(1, 0, json!(1)))])
        .await
        .unwrap();
    for other in [
        scope("other", "p1", 1),
        scope("acme", "p2", 1),
        scope("acme", "p1", 2),
    ] {
        let rows = store.read(&other, &[key(30)]).await.unwrap();
        assert!(rows[0].is_none(), "{other:?} sees a row of {own:?}");
    }
    let text_key = EntityKey::new([("driver_id".to_owned(), KeyValue::Text("30".to_owned()))]);
    assert!(store.read(&own, &[text_key]).await.unwrap()[0].is_none());
}

async fn large_batch(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 3);
    let rows: Vec<_> = (0..2_500).map(|i| (key(i), row(i, 0, json!(i)))).collect();
    let counts = store.write(&scope, rows).await.unwrap();
    assert_eq!(counts.written, 2_500);
    let keys: Vec<_> = (0..2_500).map(key).collect();
    let read = store.read(&scope, &keys).await.unwrap();
    for (i, row) in read.iter().enumerate() {
        assert_eq!(row.as_ref().unwrap().values["rate"], json!(i));
    }
}

/// Checks that a batch of the size of a typical online request (120 keys, which the redb
/// store reads on the calling task), with stored and missing keys mixed, comes back in
/// request order.
async fn request_sized_batch(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 4);
    let rows: Vec<_> = (0..60).map(|i| (key(i), row(i, 0, json!(i)))).collect();
    store.write(&scope, rows).await.unwrap();
    let keys: Vec<_> = (0..60).flat_map(|i| [key(i), key(1_000_000 + i)]).collect();

    let read = store.read(&scope, &keys).await.unwrap();

    assert_eq!(read.len(), 120);
    for (i, pair) in read.chunks(2).enumerate() {
        assert_eq!(pair[0].as_ref().unwrap().values["rate"], json!(i));
        assert!(pair[1].is_none(), "missing key {} has a row", 1_000_000 + i);
    }
    let few = store.read(&scope, &[key(59), key(5)]).await.unwrap();
    assert_eq!(few[0].as_ref().unwrap().values["rate"], json!(59));
    assert_eq!(few[1].as_ref().unwrap().values["rate"], json!(5));
}

/// Checks that reads of chosen features return what picking from whole rows returns, for a
/// batch read on the calling task and one large enough for redb's blocking pool. Values come
/// in request order, a feature requested twice fills both places, and a missing feature or
/// key gives `None`.
async fn picked_reads_match_whole_rows(store: &dyn OnlineStore) {
    let scope = scope("acme", "p1", 5);
    let rows: Vec<_> = (0..200)
        .map(|i| {
            let mut values = BTreeMap::from([
                ("rate".to_owned(), json!(i as f64 / 4.0)),
                ("name".to_owned(), json!(format!("driver {i}"))),
                ("trips".to_owned(), json!(i)),
            ]);
            // Every third row lacks a feature, so rows store different names.
            if i % 3 == 0 {
                values.remove("name");
            }
            (
                key(i),
                OnlineRow {
                    event_micros: i * HOUR,
                    created_micros: 0,
                    values,
                },
            )
        })
        .collect();
    store.write(&scope, rows).await.unwrap();
    let features = ["trips", "absent", "name", "rate", "trips"];
    for count in [10, 200] {
        let keys: Vec<_> = (0..count).flat_map(|i| [key(i), key(5_000 + i)]).collect();
        let whole = store.read(&scope, &keys).await.unwrap();
        let picked = store.read_features(&scope, &keys, &features).await.unwrap();
        let expected: Vec<Option<PickedRow>> = whole
            .iter()
            .map(|row| row.as_ref().map(|row| PickedRow::pick(row, &features)))
            .collect();
        assert_eq!(picked, expected, "{count} keys");
        let first = picked[2].as_ref().unwrap();
        assert_eq!(
            first.values,
            vec![
                Some(json!(1)),
                None,
                Some(json!("driver 1")),
                Some(json!(0.25)),
                Some(json!(1))
            ]
        );
        assert!(picked[0].as_ref().unwrap().values[2].is_none());
        assert!(picked[1].is_none());
    }
}

async fn run_all(store: &dyn OnlineStore) {
    round_trip(store).await;
    older_write_never_overwrites(store).await;
    ttl_applies_on_read(store).await;
    scopes_are_isolated(store).await;
    large_batch(store).await;
    request_sized_batch(store).await;
    picked_reads_match_whole_rows(store).await;
}

#[tokio::test]
async fn redb_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online").join("features.redb");
    let store = RedbOnlineStore::open(&path).unwrap();
    run_all(&store).await;
    drop(store);

    // Rows survive a reopen of the file.
    let reopened = RedbOnlineStore::open(&path).unwrap();
    assert_eq!(rate(&reopened, &scope("acme", "p1", 1), 7).await, json!(16));
}

#[tokio::test]
async fn redis_conformance() {
    let url = std::env::var("GHAF_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("ghaf-test-{}:", uuid::Uuid::new_v4().simple());
    let store = RedisOnlineStore::connect(&url, &prefix)
        .await
        .unwrap_or_else(|error| panic!("start Redis at {url} or set GHAF_TEST_REDIS_URL: {error}"));
    run_all(&store).await;

    // Clean up this test's keys.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}
