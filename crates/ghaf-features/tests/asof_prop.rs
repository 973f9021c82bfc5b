//! The as-of join against a brute-force reference on random data with ties, duplicate
//! lookups, TTL edges, missing and null keys and unsorted input, and the same lookups on the
//! rows re-read in index order.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, UInt32Array};
use arrow::compute::take;
use ghaf_features::AsOfIndex;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct FeatureRow {
    key: Option<i64>,
    event: Option<i64>,
    created: Option<i64>,
}

#[derive(Clone, Debug)]
struct Lookup {
    key: Option<i64>,
    time: Option<i64>,
}

fn feature_row() -> impl Strategy<Value = FeatureRow> {
    (
        prop::option::weighted(0.95, 0i64..5),
        prop::option::weighted(0.95, 0i64..20),
        prop::option::weighted(0.8, 0i64..3),
    )
        .prop_map(|(key, event, created)| FeatureRow {
            key,
            event,
            created,
        })
}

fn lookup() -> impl Strategy<Value = Lookup> {
    (
        prop::option::weighted(0.95, 0i64..7),
        prop::option::weighted(0.95, -2i64..25),
    )
        .prop_map(|(key, time)| Lookup { key, time })
}

/// Returns the latest row of the key with `time - ttl <= event <= time`, by (event, created, row).
fn reference(rows: &[FeatureRow], lookup: &Lookup, ttl: Option<i64>) -> Option<u32> {
    let (key, time) = (lookup.key?, lookup.time?);
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.key == Some(key))
        .filter_map(|(i, r)| r.event.map(|e| (i, e, r.created.unwrap_or(i64::MIN))))
        .filter(|&(_, e, _)| e <= time && ttl.is_none_or(|ttl| e >= time - ttl))
        .max_by_key(|&(i, e, c)| (e, c, i))
        .map(|(i, _, _)| i as u32)
}

fn text_keys(keys: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(StringArray::from(
        keys.map(|k| k.map(|k| format!("k{k}"))).collect::<Vec<_>>(),
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn asof_matches_reference(
        rows in prop::collection::vec(feature_row(), 0..60),
        lookups in prop::collection::vec(lookup(), 0..40),
        ttl in prop::option::of(0i64..8),
        composite in any::<bool>(),
    ) {
        let events: Vec<Option<i64>> = rows.iter().map(|r| r.event).collect();
        let created: Vec<Option<i64>> = rows.iter().map(|r| r.created).collect();
        let times: Vec<Option<i64>> = lookups.iter().map(|l| l.time).collect();

        // One integer key takes the hashed path; a composite (integer, text) key goes through
        // Arrow's row format.
        let int_keys = |keys: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(keys)) };
        let feature_keys: Vec<ArrayRef> = if composite {
            vec![
                int_keys(rows.iter().map(|r| r.key).collect()),
                text_keys(rows.iter().map(|r| r.key)),
            ]
        } else {
            vec![int_keys(rows.iter().map(|r| r.key).collect())]
        };
        let lookup_keys: Vec<ArrayRef> = if composite {
            vec![
                int_keys(lookups.iter().map(|l| l.key).collect()),
                text_keys(lookups.iter().map(|l| l.key)),
            ]
        } else {
            vec![int_keys(lookups.iter().map(|l| l.key).collect())]
        };

        let index = AsOfIndex::build(&feature_keys, &events, Some(&created)).unwrap();
        let found = index.lookup(&lookup_keys, &times, ttl).unwrap();
        prop_assert_eq!(found.len(), lookups.len());
        for (row, lookup) in lookups.iter().enumerate() {
            let expected = reference(&rows, lookup, ttl);
            let actual = found.iter().nth(row).flatten();
            prop_assert_eq!(actual, expected, "lookup row {} {:?}", row, lookup);
        }

        // The rows taken in index order, as the table cache stores them, rebuild an index
        // that finds the same rows under their sorted positions.
        let order = UInt32Array::from(index.sorted_rows().to_vec());
        let sorted_keys: Vec<ArrayRef> = feature_keys
            .iter()
            .map(|column| take(column.as_ref(), &order, None).unwrap())
            .collect();
        let sorted_events: Vec<i64> = order
            .values()
            .iter()
            .map(|&row| events[row as usize].unwrap())
            .collect();
        let sorted_created: Vec<Option<i64>> =
            order.values().iter().map(|&row| created[row as usize]).collect();
        let sorted = AsOfIndex::from_sorted(&sorted_keys, &sorted_events, Some(&sorted_created))
            .unwrap();
        let found_sorted = sorted.lookup(&lookup_keys, &times, ttl).unwrap();
        for row in 0..lookups.len() {
            let expected = found.iter().nth(row).flatten();
            let actual = found_sorted
                .iter()
                .nth(row)
                .flatten()
                .map(|position| order.value(position as usize));
            prop_assert_eq!(actual, expected, "sorted lookup row {}", row);
        }
    }
}
