//! Column data handed to profiles and drift tests.

use serde::{Deserialize, Serialize};

/// Statistical kind of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Real-valued; NaN marks a missing value.
    Numeric,
    /// Labels compared for equality only; binary columns are categorical columns with two
    /// labels.
    Categorical,
}

/// Values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Numbers; NaN is missing, ±∞ is kept in profiles and dropped by drift tests.
    Numeric(Vec<f64>),
    /// Labels; `None` is missing.
    Categorical(Vec<Option<String>>),
}

impl ColumnValues {
    /// Returns the column kind.
    pub fn kind(&self) -> ColumnKind {
        match self {
            Self::Numeric(_) => ColumnKind::Numeric,
            Self::Categorical(_) => ColumnKind::Categorical,
        }
    }

    /// Returns the number of rows, missing values included.
    pub fn len(&self) -> usize {
        match self {
            Self::Numeric(values) => values.len(),
            Self::Categorical(values) => values.len(),
        }
    }

    /// Returns whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column values.
    pub values: ColumnValues,
}

impl Column {
    /// Creates a numeric column.
    pub fn numeric(name: &str, values: Vec<f64>) -> Self {
        Self {
            name: name.to_owned(),
            values: ColumnValues::Numeric(values),
        }
    }

    /// Creates a categorical column.
    pub fn categorical(name: &str, values: Vec<Option<String>>) -> Self {
        Self {
            name: name.to_owned(),
            values: ColumnValues::Categorical(values),
        }
    }
}
