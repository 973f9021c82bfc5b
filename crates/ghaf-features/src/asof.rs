//! The point-in-time (as-of) join.
//!
//! The feature rows are sorted once by (key, event time, created time, row number). For each
//! lookup row, a hash lookup finds the key's run and a binary search finds the last feature
//! row with `event time <= lookup time`. Sorting by created time within one event time makes
//! that row the one with the latest created time, and the row number makes the last row of
//! the source win a full tie. The cost is O(F log F + E log F) for F feature rows and E
//! lookup rows, whatever the number of rows per key.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, Rows, SortField};

use crate::FeatureError;

/// Maps key tuples to dense ids. One integer key is hashed directly; other keys go through
/// Arrow's row format, whose bytes are equal exactly when the key tuples are equal.
enum KeyMap {
    Int(HashMap<i64, u32, KeyHasher>),
    Bytes {
        converter: RowConverter,
        ids: HashMap<Box<[u8]>, u32, KeyHasher>,
    },
}

/// Hasher of the key maps: a fast non-cryptographic hash, because every feature row and
/// every lookup hashes its key once.
type KeyHasher = foldhash::fast::RandomState;

/// Row encodings of one table's key columns, for lookups in a [`KeyMap`].
enum EncodedKeys<'a> {
    Int(&'a arrow::array::Int64Array),
    Rows(Rows),
}

impl EncodedKeys<'_> {
    /// Returns whether rows `a` and `b` have the same key tuple.
    fn same_key(&self, a: usize, b: usize) -> bool {
        match self {
            EncodedKeys::Int(values) => values.value(a) == values.value(b),
            EncodedKeys::Rows(rows) => rows.row(a) == rows.row(b),
        }
    }
}

impl KeyMap {
    fn new(columns: &[ArrayRef]) -> Result<Self, FeatureError> {
        if columns.len() == 1 && columns[0].data_type() == &DataType::Int64 {
            return Ok(KeyMap::Int(HashMap::default()));
        }
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        Ok(KeyMap::Bytes {
            converter: RowConverter::new(fields)?,
            ids: HashMap::default(),
        })
    }

    fn encode<'a>(&self, columns: &'a [ArrayRef]) -> Result<EncodedKeys<'a>, FeatureError> {
        match self {
            KeyMap::Int(_) => Ok(EncodedKeys::Int(columns[0].as_primitive::<Int64Type>())),
            KeyMap::Bytes { converter, .. } => {
                Ok(EncodedKeys::Rows(converter.convert_columns(columns)?))
            }
        }
    }

    /// Returns the id of row `row`, adding the key when it is new.
    fn intern(&mut self, keys: &EncodedKeys<'_>, row: usize) -> u32 {
        match (self, keys) {
            (KeyMap::Int(ids), EncodedKeys::Int(values)) => {
                let next = ids.len() as u32;
                *ids.entry(values.value(row)).or_insert(next)
            }
            (KeyMap::Bytes { ids, .. }, EncodedKeys::Rows(rows)) => {
                let bytes = rows.row(row);
                let bytes: &[u8] = bytes.as_ref();
                if let Some(id) = ids.get(bytes) {
                    return *id;
                }
                let next = ids.len() as u32;
                ids.insert(bytes.into(), next);
                next
            }
            _ => unreachable!("keys are encoded by the map that interns them"),
        }
    }

    fn get(&self, keys: &EncodedKeys<'_>, row: usize) -> Option<u32> {
        match (self, keys) {
            (KeyMap::Int(ids), EncodedKeys::Int(values)) => ids.get(&values.value(row)).copied(),
            (KeyMap::Bytes { ids, .. }, EncodedKeys::Rows(rows)) => {
                let bytes = rows.row(row);
                ids.get(bytes.as_ref()).copied()
            }
            _ => unreachable!("keys are encoded by the map that looks them up"),
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Int(ids) => ids.len(),
            KeyMap::Bytes { ids, .. } => ids.len(),
        }
    }
}

fn any_null(columns: &[ArrayRef], row: usize) -> bool {
    columns.iter().any(|c| c.is_null(row))
}

/// Feature rows sorted for as-of lookups.
pub struct AsOfIndex {
    keys: KeyMap,
    key_types: Vec<DataType>,
    /// `starts[k]..starts[k + 1]` is the run of key id `k` in the sorted arrays.
    starts: Vec<u32>,
    events: Vec<i64>,
    rows: Vec<u32>,
    /// Sorted position of each source row; `u32::MAX` for rows without a key or event time.
    positions: Vec<u32>,
}

impl AsOfIndex {
    /// Builds the index over feature rows. `events[i]` is the event time of row `i` in
    /// microseconds (`None` skips the row); `created[i]` breaks ties on event time, a missing
    /// created time sorting first. Rows with a null key are skipped.
    pub fn build(
        key_columns: &[ArrayRef],
        events: &[Option<i64>],
        created: Option<&[Option<i64>]>,
    ) -> Result<Self, FeatureError> {
        let row_count = events.len();
        if row_count > u32::MAX as usize - 1 {
            return Err(FeatureError::InvalidArgument {
                argument: "feature rows",
                message: format!(
                    "{row_count} feature rows exceed the index maximum of {}; pin a smaller \
                     dataset version or split the view",
                    u32::MAX as usize - 1
                ),
            });
        }
        let mut keys = KeyMap::new(key_columns)?;
        let encoded = keys.encode(key_columns)?;

        let mut order: Vec<(u32, i64, i64, u32)> = Vec::with_capacity(row_count);
        for (row, event) in events.iter().enumerate() {
            let Some(event) = event else { continue };
            if any_null(key_columns, row) {
                continue;
            }
            let id = keys.intern(&encoded, row);
            let created = created.and_then(|c| c[row]).unwrap_or(i64::MIN);
            order.push((id, *event, created, row as u32));
        }
        drop(encoded);
        order.sort_unstable();

        let mut starts = vec![0u32; keys.len() + 1];
        for entry in &order {
            starts[entry.0 as usize + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut positions = vec![u32::MAX; row_count];
        for (position, entry) in order.iter().enumerate() {
            positions[entry.3 as usize] = position as u32;
        }
        Ok(AsOfIndex {
            keys,
            key_types: key_columns.iter().map(|c| c.data_type().clone()).collect(),
            starts,
            events: order.iter().map(|e| e.1).collect(),
            rows: order.iter().map(|e| e.3).collect(),
            positions,
        })
    }

    /// Builds the index over feature rows that are already in index order: sorted by key
    /// run, then event time, then created time, with no null key. This is the order of
    /// [`AsOfIndex::sorted_rows`], so row `i` of the input is sorted position `i`. The
    /// build is one linear pass. Input out of that order, such as a damaged cache file,
    /// fails with `Corrupt`.
    pub fn from_sorted(
        key_columns: &[ArrayRef],
        events: &[i64],
        created: Option<&[Option<i64>]>,
    ) -> Result<Self, FeatureError> {
        let row_count = events.len();
        if row_count > u32::MAX as usize - 1 {
            return Err(FeatureError::Corrupt {
                what: "feature table",
                message: format!("{row_count} rows exceed the index maximum"),
            });
        }
        let unsorted = |row: usize, reason: &str| FeatureError::Corrupt {
            what: "feature table",
            message: format!("row {row} is out of index order: {reason}"),
        };
        let mut keys = KeyMap::new(key_columns)?;
        let encoded = keys.encode(key_columns)?;
        let mut starts = Vec::new();
        let nullable = key_columns.iter().any(|column| column.null_count() > 0);
        for row in 0..row_count {
            if nullable && any_null(key_columns, row) {
                return Err(unsorted(row, "its key is null"));
            }
            let created_at = created.and_then(|c| c[row]).unwrap_or(i64::MIN);
            if row > 0 && encoded.same_key(row - 1, row) {
                let previous = created.and_then(|c| c[row - 1]).unwrap_or(i64::MIN);
                if (events[row - 1], previous) > (events[row], created_at) {
                    return Err(unsorted(row, "its event or created time is earlier"));
                }
                continue;
            }
            let known = keys.len();
            if keys.intern(&encoded, row) as usize != known {
                return Err(unsorted(row, "its key also has an earlier run"));
            }
            starts.push(row as u32);
        }
        drop(encoded);
        starts.push(row_count as u32);
        let identity: Vec<u32> = (0..row_count as u32).collect();
        Ok(AsOfIndex {
            keys,
            key_types: key_columns.iter().map(|c| c.data_type().clone()).collect(),
            starts,
            events: events.to_vec(),
            rows: identity.clone(),
            positions: identity,
        })
    }

    /// Source rows in sorted order: the rows of each key run, by event time and created
    /// time. Skipped rows are not included.
    pub fn sorted_rows(&self) -> &[u32] {
        &self.rows
    }

    /// Returns the index over the rows taken in [`AsOfIndex::sorted_rows`] order: the
    /// same keys, runs and times, with sorted position `i` as source row `i`.
    pub fn into_sorted(self) -> Self {
        let identity: Vec<u32> = (0..self.rows.len() as u32).collect();
        AsOfIndex {
            rows: identity.clone(),
            positions: identity,
            ..self
        }
    }

    /// Arrow types of the key columns, which lookup columns must have.
    pub fn key_types(&self) -> &[DataType] {
        &self.key_types
    }

    /// Returns, for each lookup row, the source row of the latest feature row of the same
    /// key with `lookup - ttl <= event time <= lookup` (both bounds inclusive), or null when
    /// there is none. A null key or lookup time gives null.
    pub fn lookup(
        &self,
        key_columns: &[ArrayRef],
        times: &[Option<i64>],
        ttl: Option<i64>,
    ) -> Result<UInt32Array, FeatureError> {
        for (column, expected) in key_columns.iter().zip(&self.key_types) {
            if column.data_type() != expected {
                return Err(FeatureError::InvalidArgument {
                    argument: "entity keys",
                    message: format!(
                        "a key column has type {}, the feature rows have {expected}",
                        column.data_type()
                    ),
                });
            }
        }
        let encoded = self.keys.encode(key_columns)?;
        let nullable = key_columns.iter().any(|column| column.null_count() > 0);
        let mut result = Vec::with_capacity(times.len());
        for (row, time) in times.iter().enumerate() {
            let found = match time {
                Some(time) if !(nullable && any_null(key_columns, row)) => self
                    .keys
                    .get(&encoded, row)
                    .and_then(|id| self.find(id, *time, ttl)),
                _ => None,
            };
            result.push(found);
        }
        Ok(UInt32Array::from(result))
    }

    fn find(&self, id: u32, time: i64, ttl: Option<i64>) -> Option<u32> {
        let start = self.starts[id as usize] as usize;
        let end = self.starts[id as usize + 1] as usize;
        let run = &self.events[start..end];
        let after = run.partition_point(|&event| event <= time);
        if after == 0 {
            return None;
        }
        let position = start + after - 1;
        if let Some(ttl) = ttl
            && self.events[position] < time.saturating_sub(ttl)
        {
            return None;
        }
        Some(self.rows[position])
    }

    /// Source rows in sorted order, with each key's run as `(start, end)`, for the windowed
    /// aggregations.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (&[i64], &[u32])> {
        self.starts.windows(2).map(|w| {
            let (start, end) = (w[0] as usize, w[1] as usize);
            (&self.events[start..end], &self.rows[start..end])
        })
    }

    /// Sorted position of a source row, `None` when the row was skipped.
    pub fn position(&self, row: usize) -> Option<usize> {
        let position = self.positions[row];
        (position != u32::MAX).then_some(position as usize)
    }

    /// For each distinct key, the source row of its latest feature row by (event time,
    /// created time), restricted to rows with `start <= event time <= end`.
    pub fn latest_in_range(&self, start: i64, end: i64) -> Vec<u32> {
        let mut latest = Vec::new();
        for (events, rows) in self.runs() {
            let after = events.partition_point(|&event| event <= end);
            if after > 0 && events[after - 1] >= start {
                latest.push(rows[after - 1]);
            }
        }
        latest
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn ints(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn bounds_are_inclusive() {
        let keys = vec![ints(&[Some(1), Some(1)])];
        let index = AsOfIndex::build(&keys, &[Some(10), Some(20)], None).unwrap();
        let lookup = vec![ints(&[Some(1); 5])];
        let found = index
            .lookup(
                &lookup,
                &[Some(9), Some(10), Some(19), Some(20), Some(30)],
                Some(10),
            )
            .unwrap();
        assert_eq!(
            found.iter().collect::<Vec<_>>(),
            vec![None, Some(0), Some(0), Some(1), Some(1)]
        );
        let late = index
            .lookup(&[ints(&[Some(1)])], &[Some(31)], Some(10))
            .unwrap();
        assert_eq!(late.iter().collect::<Vec<_>>(), vec![None]);
    }

    #[test]
    fn later_created_time_wins_tie() {
        let keys: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["a", "a", "a"]))];
        let created = [Some(5), Some(7), Some(6)];
        let index =
            AsOfIndex::build(&keys, &[Some(10), Some(10), Some(10)], Some(&created)).unwrap();
        let lookup: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["a", "b"]))];
        let found = index.lookup(&lookup, &[Some(10), Some(10)], None).unwrap();
        assert_eq!(found.iter().collect::<Vec<_>>(), vec![Some(1), None]);
    }

    #[test]
    fn null_keys_never_match() {
        let keys = vec![ints(&[None, Some(2)])];
        let index = AsOfIndex::build(&keys, &[Some(1), Some(1)], None).unwrap();
        let found = index
            .lookup(
                &[ints(&[None, Some(2), Some(2)])],
                &[Some(5), Some(5), None],
                None,
            )
            .unwrap();
        assert_eq!(found.iter().collect::<Vec<_>>(), vec![None, Some(1), None]);
    }
}
