//! Column and dataset profiles: mergeable summaries stored once per reference dataset and
//! built incrementally for windows of live traffic.

use serde::{Deserialize, Serialize};

use crate::MonitorError;
use crate::column::{Column, ColumnKind, ColumnValues};
use crate::frequent::{self, FrequentItems};
use crate::hash::{hash_bytes, hash_f64};
use crate::hll::{self, HyperLogLog};
use crate::kll;
use crate::moments::Moments;
use crate::quantiles::QuantileSummary;

/// Sketch parameters of a profile. Profiles merge only with equal parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileOptions {
    /// KLL parameter for numeric quantiles once a column exceeds the exact limit.
    pub kll_k: u16,
    /// HyperLogLog precision (2^p registers).
    pub hll_precision: u8,
    /// Number of frequent-item counters for categorical columns.
    pub frequent_items: usize,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self {
            kll_k: kll::DEFAULT_K,
            hll_precision: hll::DEFAULT_PRECISION,
            frequent_items: frequent::DEFAULT_CAPACITY,
        }
    }
}

/// Summary of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Column kind.
    pub kind: ColumnKind,
    /// Number of rows, nulls included.
    pub rows: u64,
    /// Number of missing values: null, and NaN in numeric columns.
    pub nulls: u64,
    /// Number of ±∞ values in a numeric column; they count in `rows` but not in the moments
    /// or quantiles.
    pub infinities: u64,
    /// Moments of the finite values of a numeric column.
    pub moments: Option<Moments>,
    /// Quantiles of the finite values of a numeric column.
    pub quantiles: Option<QuantileSummary>,
    /// Frequent values of a categorical column.
    pub frequent_items: Option<FrequentItems>,
    /// Distinct-count sketch over the non-missing values.
    pub distinct: HyperLogLog,
}

impl ColumnProfile {
    /// Creates an empty profile for a column.
    pub fn empty(name: &str, kind: ColumnKind, options: &ProfileOptions) -> Self {
        let numeric = kind == ColumnKind::Numeric;
        Self {
            name: name.to_owned(),
            kind,
            rows: 0,
            nulls: 0,
            infinities: 0,
            moments: numeric.then(Moments::new),
            quantiles: numeric.then(|| QuantileSummary::new(options.kll_k)),
            frequent_items: (!numeric).then(|| FrequentItems::new(options.frequent_items)),
            distinct: HyperLogLog::new(options.hll_precision),
        }
    }

    /// Profiles a column.
    pub fn from_column(column: &Column, options: &ProfileOptions) -> Self {
        let mut profile = Self::empty(&column.name, column.values.kind(), options);
        profile.update(&column.values);
        profile
    }

    /// Adds values to the profile. Values of the other kind are ignored: callers check
    /// the kind first, as [`DatasetProfile::update`] does.
    pub fn update(&mut self, values: &ColumnValues) {
        match values {
            ColumnValues::Numeric(values) => {
                let (Some(moments), Some(quantiles)) = (&mut self.moments, &mut self.quantiles)
                else {
                    return;
                };
                for &value in values {
                    self.rows += 1;
                    if value.is_nan() {
                        self.nulls += 1;
                    } else if value.is_infinite() {
                        self.infinities += 1;
                        self.distinct.update_hash(hash_f64(value));
                    } else {
                        moments.push(value);
                        quantiles.update(value);
                        self.distinct.update_hash(hash_f64(value));
                    }
                }
            }
            ColumnValues::Categorical(values) => {
                let Some(frequent_items) = &mut self.frequent_items else {
                    return;
                };
                for value in values {
                    self.rows += 1;
                    match value {
                        None => self.nulls += 1,
                        Some(value) => {
                            frequent_items.update(value);
                            self.distinct.update_hash(hash_bytes(value.as_bytes()));
                        }
                    }
                }
            }
        }
    }

    /// Merges the profile of another part of the same column.
    pub fn merge(&mut self, other: &Self) -> Result<(), MonitorError> {
        if self.kind != other.kind {
            return Err(MonitorError::IncompatibleSketches(format!(
                "column '{}' is {:?} in one profile and {:?} in the other",
                self.name, self.kind, other.kind
            )));
        }
        self.distinct.merge(&other.distinct)?;
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.infinities += other.infinities;
        if let (Some(moments), Some(others)) = (&mut self.moments, &other.moments) {
            moments.merge(others);
        }
        if let (Some(quantiles), Some(others)) = (&mut self.quantiles, &other.quantiles) {
            quantiles.merge(others);
        }
        if let (Some(items), Some(others)) = (&mut self.frequent_items, &other.frequent_items) {
            items.merge(others);
        }
        Ok(())
    }

    /// Returns the share of missing values, or `None` for an empty column.
    pub fn null_share(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.nulls as f64 / self.rows as f64)
    }

    /// Returns the estimated number of distinct non-missing values.
    pub fn distinct_estimate(&self) -> f64 {
        self.distinct.estimate()
    }
}

/// Profiles of every column of a dataset, in column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetProfile {
    /// Sketch parameters shared by all columns.
    pub options: ProfileOptions,
    /// Number of rows.
    pub rows: u64,
    /// Column profiles.
    pub columns: Vec<ColumnProfile>,
}

impl DatasetProfile {
    /// Profiles a dataset. Fails when the columns have different lengths or a name repeats.
    pub fn from_columns(columns: &[Column], options: ProfileOptions) -> Result<Self, MonitorError> {
        let mut profile = Self {
            options,
            rows: 0,
            columns: columns
                .iter()
                .map(|column| ColumnProfile::empty(&column.name, column.values.kind(), &options))
                .collect(),
        };
        for (i, column) in columns.iter().enumerate() {
            if columns[..i]
                .iter()
                .any(|earlier| earlier.name == column.name)
            {
                return Err(MonitorError::InvalidInput(format!(
                    "column '{}' appears twice",
                    column.name
                )));
            }
        }
        profile.update(columns)?;
        Ok(profile)
    }

    /// Adds a batch of rows, given column by column with the same names and kinds as the
    /// profile.
    pub fn update(&mut self, columns: &[Column]) -> Result<(), MonitorError> {
        let rows = columns.first().map_or(0, |column| column.values.len());
        if let Some(column) = columns.iter().find(|column| column.values.len() != rows) {
            return Err(MonitorError::InvalidInput(format!(
                "column '{}' has {} rows, but the first column has {rows}",
                column.name,
                column.values.len()
            )));
        }
        if columns.len() != self.columns.len() {
            return Err(MonitorError::InvalidInput(format!(
                "batch has {} columns, but the profile has {}",
                columns.len(),
                self.columns.len()
            )));
        }
        for column in columns {
            let profile = self.column(&column.name).ok_or_else(|| {
                MonitorError::InvalidInput(format!(
                    "column '{}' is not in the profile",
                    column.name
                ))
            })?;
            if profile.kind != column.values.kind() {
                return Err(MonitorError::InvalidInput(format!(
                    "column '{}' is {:?} in the profile but {:?} in the batch",
                    column.name,
                    profile.kind,
                    column.values.kind()
                )));
            }
        }
        for column in columns {
            if let Some(profile) = self
                .columns
                .iter_mut()
                .find(|profile| profile.name == column.name)
            {
                profile.update(&column.values);
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Returns the profile of a column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// Merges the profile of other rows of the same dataset. Columns missing on one side are
    /// kept as they are.
    pub fn merge(&mut self, other: &Self) -> Result<(), MonitorError> {
        if self.options != other.options {
            return Err(MonitorError::IncompatibleSketches(format!(
                "profile options differ: {:?} and {:?}",
                self.options, other.options
            )));
        }
        for theirs in &other.columns {
            match self
                .columns
                .iter_mut()
                .find(|ours| ours.name == theirs.name)
            {
                Some(ours) => ours.merge(theirs)?,
                None => self.columns.push(theirs.clone()),
            }
        }
        self.rows += other.rows;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn columns(numbers: &[f64], labels: &[Option<String>]) -> Vec<Column> {
        vec![
            Column::numeric("x", numbers.to_vec()),
            Column::categorical("c", labels.to_vec()),
        ]
    }

    fn label_strategy() -> impl Strategy<Value = Option<String>> {
        prop_oneof![Just(None), (0u8..6).prop_map(|i| Some(format!("l{i}")))]
    }

    fn number_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => -1e4f64..1e4,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
        ]
    }

    #[test]
    fn counts_nulls_and_infinities() {
        let profile = DatasetProfile::from_columns(
            &columns(
                &[1.0, f64::NAN, f64::INFINITY, 3.0],
                &[Some("a".into()), None, Some("a".into()), Some("b".into())],
            ),
            ProfileOptions::default(),
        )
        .unwrap();
        let x = profile.column("x").unwrap();
        assert_eq!(x.rows, 4);
        assert_eq!(x.nulls, 1);
        assert_eq!(x.infinities, 1);
        assert_eq!(x.moments.unwrap().mean, 2.0);
        assert_eq!(x.quantiles.as_ref().unwrap().quantile(1.0), Some(3.0));
        let c = profile.column("c").unwrap();
        assert_eq!(c.null_share(), Some(0.25));
        assert_eq!(c.frequent_items.as_ref().unwrap().estimate("a"), 2);
        assert!((c.distinct_estimate() - 2.0).abs() < 0.1);
    }

    #[test]
    fn rejects_ragged_columns() {
        let result = DatasetProfile::from_columns(
            &columns(&[1.0, 2.0], &[Some("a".into())]),
            ProfileOptions::default(),
        );
        assert!(matches!(result, Err(MonitorError::InvalidInput(_))));
    }

    #[test]
    fn serde_round_trip_is_exact() {
        let numbers: Vec<f64> = (0..20_000)
            .map(|i| (f64::from(i) * 0.37).sin() * 1e3)
            .collect();
        let labels: Vec<Option<String>> =
            (0..20_000).map(|i| Some(format!("k{}", i % 7))).collect();
        let profile =
            DatasetProfile::from_columns(&columns(&numbers, &labels), ProfileOptions::default())
                .unwrap();
        let json = serde_json::to_string(&profile).unwrap();
        let back: DatasetProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, profile);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merge_equals_profile_of_union(
            numbers in prop::collection::vec(number_strategy(), 0..300),
            labels in prop::collection::vec(label_strategy(), 300),
            split in 0usize..300,
        ) {
            let labels = &labels[..numbers.len()];
            let split = split.min(numbers.len());
            let options = ProfileOptions::default();
            let mut left = DatasetProfile::from_columns(&columns(&numbers[..split], &labels[..split]), options).unwrap();
            let right = DatasetProfile::from_columns(&columns(&numbers[split..], &labels[split..]), options).unwrap();
            left.merge(&right).unwrap();
            let whole = DatasetProfile::from_columns(&columns(&numbers, labels), options).unwrap();

            prop_assert_eq!(left.rows, whole.rows);
            let (x, x_whole) = (left.column("x").unwrap(), whole.column("x").unwrap());
            prop_assert_eq!(x.rows, x_whole.rows);
            prop_assert_eq!(x.nulls, x_whole.nulls);
            prop_assert_eq!(x.infinities, x_whole.infinities);
            prop_assert_eq!(&x.distinct, &x_whole.distinct);
            let (m, m_whole) = (x.moments.unwrap(), x_whole.moments.unwrap());
            prop_assert_eq!(m.count, m_whole.count);
            prop_assert!((m.mean - m_whole.mean).abs() <= 1e-9 * (1.0 + m_whole.mean.abs()));
            prop_assert!((m.m2 - m_whole.m2).abs() <= 1e-9 * (1.0 + m_whole.m2));
            for q in [0.0, 0.1, 0.5, 0.9, 1.0] {
                prop_assert_eq!(
                    x.quantiles.as_ref().unwrap().quantile(q),
                    x_whole.quantiles.as_ref().unwrap().quantile(q)
                );
            }
            let (c, c_whole) = (left.column("c").unwrap(), whole.column("c").unwrap());
            prop_assert_eq!(c, c_whole);
        }
    }
}
