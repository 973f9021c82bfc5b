//! Data drift between a reference sample and a current sample, per column and per dataset.
//!
//! Two modes:
//! - [`evidently`] reproduces the data drift preset of Evidently 0.7 (pandas engine): its
//!   method choice, statistics, binning and thresholds, so that results can be compared
//!   one to one with reports users already have.
//! - [`ghaf`] is the default: two-sample tests with Benjamini–Hochberg correction across
//!   columns, an effect-size floor, and histogram bins frozen on the reference.

pub mod evidently;
pub mod ghaf;
pub mod statistics;

use serde::{Deserialize, Serialize};

use crate::column::{ColumnKind, ColumnValues};

/// Statistic that decides whether a column drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMethod {
    /// Two-sample Kolmogorov–Smirnov test; the score is the p-value.
    Ks,
    /// Evidently's chi-square: a goodness-of-fit test of the current counts against the
    /// reference proportions taken as exact; the score is the p-value.
    ChiSquareGoodnessOfFit,
    /// Pearson's chi-square test of homogeneity on the 2×k contingency table of both
    /// samples; the score is the p-value.
    ChiSquareContingency,
    /// Pooled two-proportion z-test; the score is the p-value.
    ZTest,
    /// Wasserstein-1 distance divided by the reference standard deviation.
    WassersteinNormed,
    /// Jensen–Shannon distance between binned distributions.
    JensenShannon,
    /// Population stability index between binned distributions.
    Psi,
}

impl DriftMethod {
    /// Returns the method's display name in Evidently 0.7 reports, for methods Evidently has.
    pub fn evidently_name(self) -> Option<&'static str> {
        match self {
            Self::Ks => Some("K-S p_value"),
            Self::ChiSquareGoodnessOfFit => Some("chi-square p_value"),
            Self::ZTest => Some("Z-test p_value"),
            Self::WassersteinNormed => Some("Wasserstein distance (normed)"),
            Self::JensenShannon => Some("Jensen-Shannon distance"),
            Self::Psi => Some("PSI"),
            Self::ChiSquareContingency => None,
        }
    }

    /// Returns whether the score is a p-value, where small values mean drift, rather than a
    /// distance, where large values do.
    pub fn is_p_value(self) -> bool {
        matches!(
            self,
            Self::Ks | Self::ChiSquareGoodnessOfFit | Self::ChiSquareContingency | Self::ZTest
        )
    }
}

/// Distances between the reference and current distributions of a column, reported next to
/// the test in the default mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distances {
    /// Wasserstein-1 distance over the reference standard deviation (numeric columns).
    pub wasserstein_normed: Option<f64>,
    /// Population stability index on the frozen reference bins.
    pub psi: f64,
    /// Jensen–Shannon distance in bits (range 0 to 1) on the frozen reference bins.
    pub jensen_shannon: f64,
}

/// Drift result for one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// Column name.
    pub column: String,
    /// Column kind.
    pub kind: ColumnKind,
    /// Method that produced `score`.
    pub method: DriftMethod,
    /// The method's p-value or distance.
    pub score: f64,
    /// Threshold that `score` is compared against, or in the default mode the false
    /// discovery rate that `adjusted_p_value` is compared against.
    pub threshold: f64,
    /// p-value after Benjamini–Hochberg adjustment across the tested columns (default mode).
    pub adjusted_p_value: Option<f64>,
    /// Distances between the two distributions (default mode).
    pub distances: Option<Distances>,
    /// Number of non-missing reference values used.
    pub reference_count: usize,
    /// Number of non-missing current values used.
    pub current_count: usize,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// Dataset-level drift: the per-column results and the share of drifted columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDrift {
    /// Per-column results, in input order.
    pub columns: Vec<ColumnDrift>,
    /// Number of drifted columns.
    pub drifted_columns: usize,
    /// Drifted columns over tested columns; 0 when no column was tested.
    pub share: f64,
    /// Share at or above which the dataset counts as drifted.
    pub drift_share: f64,
    /// Whether `share ≥ drift_share`.
    pub dataset_drifted: bool,
}

impl DatasetDrift {
    /// Aggregates per-column results into the dataset-level share and decision.
    pub fn from_columns(columns: Vec<ColumnDrift>, drift_share: f64) -> Self {
        let drifted_columns = columns.iter().filter(|column| column.drifted).count();
        let share = if columns.is_empty() {
            0.0
        } else {
            drifted_columns as f64 / columns.len() as f64
        };
        Self {
            dataset_drifted: !columns.is_empty() && share >= drift_share,
            columns,
            drifted_columns,
            share,
            drift_share,
        }
    }
}

/// Non-missing values of one column, ready for the tests.
#[derive(Debug, Clone)]
pub(crate) enum CleanValues {
    /// Finite numbers, sorted ascending.
    Numeric(Vec<f64>),
    /// Labels.
    Categorical(Vec<String>),
}

impl CleanValues {
    /// Drops missing values and ±∞ and sorts numbers, as Evidently does before any test.
    pub(crate) fn from_values(values: &ColumnValues) -> Self {
        match values {
            ColumnValues::Numeric(values) => {
                let mut finite: Vec<f64> = values
                    .iter()
                    .copied()
                    .filter(|value| value.is_finite())
                    .collect();
                finite.sort_unstable_by(f64::total_cmp);
                Self::Numeric(finite)
            }
            ColumnValues::Categorical(values) => {
                Self::Categorical(values.iter().flatten().cloned().collect())
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Numeric(values) => values.len(),
            Self::Categorical(values) => values.len(),
        }
    }
}

/// Counts the distinct values of a sorted slice, with −0.0 equal to 0.0.
pub(crate) fn count_distinct_sorted(sorted: &[f64]) -> usize {
    let mut count = 0;
    let mut last: Option<f64> = None;
    for &value in sorted {
        if last != Some(value) {
            count += 1;
            last = Some(value);
        }
    }
    count
}
