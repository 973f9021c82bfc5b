//! Columnar training data: numeric and categorical feature columns plus a label.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Values of one feature column.
///
/// Numeric columns mark a missing value as NaN. Categorical columns store an index into
/// `categories` per row, and a negative code marks a missing value.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    F64(Vec<f64>),
    F32(Vec<f32>),
    Categorical {
        codes: Vec<i32>,
        categories: Vec<String>,
    },
}

/// A named feature column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

impl Column {
    /// Creates an f64 numeric column.
    pub fn f64(name: impl Into<String>, values: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            data: ColumnData::F64(values),
        }
    }

    /// Creates an f32 numeric column.
    pub fn f32(name: impl Into<String>, values: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            data: ColumnData::F32(values),
        }
    }

    /// Creates a categorical column from codes into `categories`; a negative code is missing.
    pub fn categorical(name: impl Into<String>, codes: Vec<i32>, categories: Vec<String>) -> Self {
        Self {
            name: name.into(),
            data: ColumnData::Categorical { codes, categories },
        }
    }

    /// Creates a categorical column from string values, assigning codes in order of first
    /// appearance. `None` is missing.
    pub fn categorical_from_strings<S: AsRef<str>>(
        name: impl Into<String>,
        values: &[Option<S>],
    ) -> Self {
        let mut categories: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let codes = values
            .iter()
            .map(|value| match value {
                None => -1,
                Some(text) => {
                    let text = text.as_ref();
                    *index.entry(text.to_string()).or_insert_with(|| {
                        categories.push(text.to_string());
                        (categories.len() - 1) as i32
                    })
                }
            })
            .collect();
        Self::categorical(name, codes, categories)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match &self.data {
            ColumnData::F64(values) => values.len(),
            ColumnData::F32(values) => values.len(),
            ColumnData::Categorical { codes, .. } => codes.len(),
        }
    }

    /// Returns whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the value of `row` as f64: numeric values as they are, category codes as
    /// numbers, and NaN for a missing value.
    pub fn value(&self, row: usize) -> f64 {
        match &self.data {
            ColumnData::F64(values) => values[row],
            ColumnData::F32(values) => f64::from(values[row]),
            ColumnData::Categorical { codes, .. } => {
                let code = codes[row];
                if code < 0 { f64::NAN } else { f64::from(code) }
            }
        }
    }

    /// Returns the feature type and category names, as stored in a trained model.
    pub fn feature_kind(&self) -> FeatureKind {
        match &self.data {
            ColumnData::F64(_) | ColumnData::F32(_) => FeatureKind::Numeric,
            ColumnData::Categorical { categories, .. } => FeatureKind::Categorical {
                categories: categories.clone(),
            },
        }
    }

    fn take(&self, rows: &[usize]) -> Column {
        let data = match &self.data {
            ColumnData::F64(values) => ColumnData::F64(rows.iter().map(|&r| values[r]).collect()),
            ColumnData::F32(values) => ColumnData::F32(rows.iter().map(|&r| values[r]).collect()),
            ColumnData::Categorical { codes, categories } => ColumnData::Categorical {
                codes: rows.iter().map(|&r| codes[r]).collect(),
                categories: categories.clone(),
            },
        };
        Column {
            name: self.name.clone(),
            data,
        }
    }
}

/// The type of a model input feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureKind {
    Numeric,
    /// Category codes index `categories`; models receive codes, not names.
    Categorical {
        categories: Vec<String>,
    },
}

/// A model input feature: its name and type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub kind: FeatureKind,
}

/// Feature columns of equal length and one label per row.
///
/// Binary classification labels are 0.0 or 1.0; regression labels are any finite number.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    columns: Vec<Column>,
    label: Vec<f64>,
}

impl Dataset {
    /// Creates a dataset, checking that every column has one value per label and that names
    /// are unique and category codes are in range.
    pub fn new(columns: Vec<Column>, label: Vec<f64>) -> Result<Self, TrainError> {
        let mut names = std::collections::HashSet::new();
        for column in &columns {
            if column.len() != label.len() {
                return Err(TrainError::InvalidData(format!(
                    "column {:?} has {} rows but the label has {}",
                    column.name,
                    column.len(),
                    label.len()
                )));
            }
            if !names.insert(column.name.as_str()) {
                return Err(TrainError::InvalidData(format!(
                    "column name {:?} appears more than once",
                    column.name
                )));
            }
            if let ColumnData::Categorical { codes, categories } = &column.data
                && let Some(code) = codes.iter().find(|&&c| c >= categories.len() as i32)
            {
                return Err(TrainError::InvalidData(format!(
                    "column {:?} has category code {code} but only {} categories",
                    column.name,
                    categories.len()
                )));
            }
        }
        if let Some(row) = label.iter().position(|y| !y.is_finite()) {
            return Err(TrainError::InvalidData(format!(
                "label of row {row} is {}; labels must be finite",
                label[row]
            )));
        }
        Ok(Self { columns, label })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn label(&self) -> &[f64] {
        &self.label
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.label.len()
    }

    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    /// Returns the model input features, in column order.
    pub fn features(&self) -> Vec<Feature> {
        self.columns
            .iter()
            .map(|column| Feature {
                name: column.name.clone(),
                kind: column.feature_kind(),
            })
            .collect()
    }

    /// Returns row `row` as the f64 vector that prediction functions take (see
    /// [`Column::value`]).
    pub fn row(&self, row: usize) -> Vec<f64> {
        self.columns
            .iter()
            .map(|column| column.value(row))
            .collect()
    }

    /// Returns all rows as one row-major f64 matrix with `n_features` values per row.
    pub fn to_row_major(&self) -> Vec<f64> {
        let n_features = self.n_features();
        let mut matrix = vec![0.0; self.n_rows() * n_features];
        for (j, column) in self.columns.iter().enumerate() {
            for row in 0..self.n_rows() {
                matrix[row * n_features + j] = column.value(row);
            }
        }
        matrix
    }

    /// Returns the rows at `rows`, in that order.
    pub fn take(&self, rows: &[usize]) -> Dataset {
        Dataset {
            columns: self
                .columns
                .iter()
                .map(|column| column.take(rows))
                .collect(),
            label: rows.iter().map(|&r| self.label[r]).collect(),
        }
    }

    /// Splits the rows at random into a training and a validation set, with
    /// `validation_fraction` of the rows (rounded) in the validation set. The same seed always
    /// gives the same split.
    pub fn train_validation_split(
        &self,
        validation_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset), TrainError> {
        if !(0.0..1.0).contains(&validation_fraction) {
            return Err(TrainError::InvalidParameter(format!(
                "validation_fraction is {validation_fraction}; it must be in [0, 1)"
            )));
        }
        let mut rows: Vec<usize> = (0..self.n_rows()).collect();
        let mut rng = SplitMix64::new(seed);
        // Fisher-Yates shuffle.
        for i in (1..rows.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            rows.swap(i, j);
        }
        let n_validation = (self.n_rows() as f64 * validation_fraction).round() as usize;
        let (validation_rows, train_rows) = rows.split_at(n_validation);
        let mut train_rows = train_rows.to_vec();
        let mut validation_rows = validation_rows.to_vec();
        train_rows.sort_unstable();
        validation_rows.sort_unstable();
        Ok((self.take(&train_rows), self.take(&validation_rows)))
    }
}

/// SplitMix64, a small seeded generator whose output is fixed by its definition, so splits
/// stay the same across dependency upgrades.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a uniform integer in `0..bound` (Lemire's multiply-shift; the bias is below
    /// 2^-32 for the row counts used here).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Dataset {
        let n = 100;
        Dataset::new(
            vec![
                Column::f64("x", (0..n).map(f64::from).collect()),
                Column::categorical(
                    "c",
                    (0..n).map(|i| i % 3 - 1).collect(),
                    vec!["a".into(), "b".into()],
                ),
            ],
            (0..n).map(|i| f64::from(i % 2)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let data = small();
        let (train_a, valid_a) = data.train_validation_split(0.2, 7).unwrap();
        let (train_b, valid_b) = data.train_validation_split(0.2, 7).unwrap();
        assert_eq!(train_a, train_b);
        assert_eq!(valid_a, valid_b);
        assert_eq!(valid_a.n_rows(), 20);
        assert_eq!(train_a.n_rows(), 80);
        let mut all: Vec<f64> = train_a.columns()[0]
            .clone()
            .take(&(0..80).collect::<Vec<_>>())
            .value_vec();
        all.extend(
            valid_a.columns()[0]
                .take(&(0..20).collect::<Vec<_>>())
                .value_vec(),
        );
        all.sort_by(f64::total_cmp);
        assert_eq!(all, (0..100).map(f64::from).collect::<Vec<_>>());
    }

    #[test]
    fn split_depends_on_seed() {
        let data = small();
        let (_, valid_a) = data.train_validation_split(0.2, 1).unwrap();
        let (_, valid_b) = data.train_validation_split(0.2, 2).unwrap();
        assert_ne!(valid_a, valid_b);
    }

    #[test]
    fn categorical_missing_reads_as_nan() {
        let data = small();
        assert!(data.columns()[1].value(0).is_nan());
        assert_eq!(data.columns()[1].value(1), 0.0);
    }

    #[test]
    fn new_rejects_bad_input() {
        let short = Dataset::new(vec![Column::f64("x", vec![1.0])], vec![0.0, 1.0]);
        assert!(matches!(short, Err(TrainError::InvalidData(_))));
        let code = Dataset::new(
            vec![Column::categorical("c", vec![2], vec!["a".into()])],
            vec![0.0],
        );
        assert!(matches!(code, Err(TrainError::InvalidData(_))));
        let label = Dataset::new(vec![Column::f64("x", vec![1.0])], vec![f64::NAN]);
        assert!(matches!(label, Err(TrainError::InvalidData(_))));
    }

    #[test]
    fn categorical_from_strings_assigns_codes() {
        let column =
            Column::categorical_from_strings("c", &[Some("b"), None, Some("a"), Some("b")]);
        assert_eq!(
            column.data,
            ColumnData::Categorical {
                codes: vec![0, -1, 1, 0],
                categories: vec!["b".into(), "a".into()]
            }
        );
    }

    impl Column {
        fn value_vec(&self) -> Vec<f64> {
            (0..self.len()).map(|row| self.value(row)).collect()
        }
    }
}
