//! Ghaf's default drift mode.
//!
//! - Tests are two-sample tests: KS for numeric columns with more than `max_discrete_values`
//!   distinct reference values, and Pearson's chi-square test of homogeneity on the 2×k
//!   contingency table for the other columns. Neither treats the reference as exact.
//! - p-values are adjusted with Benjamini–Hochberg across the tested columns, which bounds
//!   the expected share of false alarms among the flagged columns by `alpha`.
//! - A column drifts only when its adjusted p-value is below `alpha` and an effect size
//!   reaches a floor, so that tiny but significant shifts in large samples do not alarm.
//! - Histogram bins for PSI and Jensen–Shannon are frozen on the reference: quantile edges
//!   for numbers, and the reference labels plus one bin for unseen labels. The reference side
//!   is therefore computed once, and distances do not move with the current data's range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MonitorError;
use crate::column::{Column, ColumnKind};
use crate::drift::statistics::{jensen_shannon, ks_two_sample, population_std, psi, wasserstein};
use crate::drift::{
    CleanValues, ColumnDrift, DatasetDrift, Distances, DriftMethod, count_distinct_sorted,
};
use crate::special::chi2_sf;

/// Options of the default mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GhafOptions {
    /// False discovery rate for the Benjamini–Hochberg procedure across columns.
    pub alpha: f64,
    /// Share of drifted columns at or above which the dataset counts as drifted.
    pub drift_share: f64,
    /// Smallest normalised Wasserstein distance that counts as drift for a KS-tested column.
    pub min_wasserstein_normed: f64,
    /// Smallest Jensen–Shannon distance (base-2 logarithms) that counts as drift for a column
    /// tested with the contingency chi-square.
    pub min_jensen_shannon: f64,
    /// Number of quantile bins frozen on a numeric reference.
    pub numeric_bins: usize,
    /// Numeric columns with at most this many distinct reference values are tested as
    /// categorical.
    pub max_discrete_values: usize,
}

impl Default for GhafOptions {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            drift_share: 0.5,
            min_wasserstein_normed: 0.1,
            min_jensen_shannon: 0.05,
            numeric_bins: 10,
            max_discrete_values: 20,
        }
    }
}

/// Share used in place of an empty bin's share when computing PSI, so that the logarithm
/// stays finite.
const EMPTY_BIN_SHARE: f64 = 1e-4;

/// The reference side of one column, computed once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReferenceColumn {
    /// A numeric column tested with KS.
    Continuous {
        /// Column name.
        name: String,
        /// Finite reference values, sorted.
        sorted: Vec<f64>,
        /// Population standard deviation of the reference.
        std: f64,
        /// Interior bin edges: reference quantiles, deduplicated. Bins are (−∞, e₁],
        /// (e₁, e₂], …, (eₖ, ∞), so values outside the reference range land in the outer
        /// bins.
        edges: Vec<f64>,
        /// Reference share of each bin.
        shares: Vec<f64>,
    },
    /// A categorical column, or a numeric column with few distinct values, tested with the
    /// contingency chi-square.
    Discrete {
        /// Column name.
        name: String,
        /// Column kind of the input.
        kind: ColumnKind,
        /// Reference count of each label (numbers are keyed by their shortest decimal form).
        counts: BTreeMap<String, u64>,
        /// Number of non-missing reference values.
        total: u64,
    },
}

impl ReferenceColumn {
    /// Returns the column name.
    pub fn name(&self) -> &str {
        match self {
            Self::Continuous { name, .. } | Self::Discrete { name, .. } => name,
        }
    }

    /// Tests a current column against this reference. The result has no adjusted p-value and
    /// no decision yet: [`decide`] sets both across all tested columns.
    pub fn test(&self, current: &Column) -> Result<ColumnDrift, MonitorError> {
        column_drift(self, current)
    }

    /// Fits the reference side of a column. Fails when no finite value remains.
    pub fn fit(column: &Column, options: &GhafOptions) -> Result<Self, MonitorError> {
        let clean = CleanValues::from_values(&column.values);
        if clean.len() == 0 {
            return Err(MonitorError::InvalidInput(format!(
                "column '{}' has no finite value in the reference data",
                column.name
            )));
        }
        match clean {
            CleanValues::Numeric(sorted)
                if count_distinct_sorted(&sorted) > options.max_discrete_values =>
            {
                let std = population_std(&sorted);
                let bins = options.numeric_bins.max(2);
                let mut edges: Vec<f64> = (1..bins)
                    .map(|i| {
                        let rank = ((i as f64 / bins as f64) * sorted.len() as f64).ceil() as usize;
                        sorted[rank.clamp(1, sorted.len()) - 1]
                    })
                    .collect();
                edges.dedup();
                let shares = bin_shares(&sorted, &edges);
                Ok(Self::Continuous {
                    name: column.name.clone(),
                    sorted,
                    std,
                    edges,
                    shares,
                })
            }
            CleanValues::Numeric(sorted) => Ok(Self::Discrete {
                name: column.name.clone(),
                kind: ColumnKind::Numeric,
                total: sorted.len() as u64,
                counts: count_labels(sorted.iter().map(|&value| number_key(value))),
            }),
            CleanValues::Categorical(labels) => Ok(Self::Discrete {
                name: column.name.clone(),
                kind: ColumnKind::Categorical,
                total: labels.len() as u64,
                counts: count_labels(labels.into_iter()),
            }),
        }
    }
}

/// The reference side of a dataset, computed once and reused for every current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Options the reference was fitted with.
    pub options: GhafOptions,
    /// Reference columns, in input order.
    pub columns: Vec<ReferenceColumn>,
}

impl Reference {
    /// Fits every column of a reference dataset.
    pub fn fit(columns: &[Column], options: GhafOptions) -> Result<Self, MonitorError> {
        let columns = columns
            .iter()
            .map(|column| ReferenceColumn::fit(column, &options))
            .collect::<Result<_, _>>()?;
        Ok(Self { options, columns })
    }

    /// Computes drift of a current dataset against this reference, for every reference
    /// column. Fails when a column is missing, has another kind, or has no finite value.
    pub fn dataset_drift(&self, current: &[Column]) -> Result<DatasetDrift, MonitorError> {
        let mut results = Vec::with_capacity(self.columns.len());
        for reference in &self.columns {
            let column = current
                .iter()
                .find(|column| column.name == reference.name())
                .ok_or_else(|| {
                    MonitorError::InvalidInput(format!(
                        "column '{}' is missing from the current data",
                        reference.name()
                    ))
                })?;
            results.push(reference.test(column)?);
        }
        Ok(decide(results, &self.options))
    }
}

/// Applies the Benjamini–Hochberg adjustment across per-column results from
/// [`ReferenceColumn::test`], sets each column's decision, and aggregates the dataset share.
pub fn decide(mut results: Vec<ColumnDrift>, options: &GhafOptions) -> DatasetDrift {
    let p_values: Vec<f64> = results.iter().map(|result| result.score).collect();
    let adjusted = benjamini_hochberg(&p_values);
    for (result, adjusted) in results.iter_mut().zip(adjusted) {
        result.adjusted_p_value = Some(adjusted);
        let large_enough = match result.distances {
            Some(Distances {
                wasserstein_normed: Some(wasserstein),
                ..
            }) => wasserstein >= options.min_wasserstein_normed,
            Some(distances) => distances.jensen_shannon >= options.min_jensen_shannon,
            None => true,
        };
        result.threshold = options.alpha;
        result.drifted = adjusted < options.alpha && large_enough;
    }
    DatasetDrift::from_columns(results, options.drift_share)
}

/// Computes drift between two datasets in the default mode: fits the reference, then tests
/// the current data against it.
pub fn dataset_drift(
    reference: &[Column],
    current: &[Column],
    options: GhafOptions,
) -> Result<DatasetDrift, MonitorError> {
    Reference::fit(reference, options)?.dataset_drift(current)
}

/// Tests one column; `drifted` and the adjusted p-value are set by the dataset-level step.
fn column_drift(
    reference: &ReferenceColumn,
    current: &Column,
) -> Result<ColumnDrift, MonitorError> {
    let clean = CleanValues::from_values(&current.values);
    if clean.len() == 0 {
        return Err(MonitorError::InvalidInput(format!(
            "column '{}' has no finite value in the current data",
            current.name
        )));
    }
    let current_count = clean.len();
    let mismatch = |expected: ColumnKind| {
        MonitorError::InvalidInput(format!(
            "column '{}' is {:?} in the reference but {:?} in the current data",
            current.name,
            expected,
            current.values.kind()
        ))
    };
    match (reference, clean) {
        (
            ReferenceColumn::Continuous {
                sorted,
                std,
                edges,
                shares,
                ..
            },
            CleanValues::Numeric(current_sorted),
        ) => {
            let ks = ks_two_sample(sorted, &current_sorted);
            let current_shares = bin_shares(&current_sorted, edges);
            let distances = Distances {
                wasserstein_normed: Some(wasserstein(sorted, &current_sorted) / std.max(0.001)),
                psi: psi_with_floor(shares, &current_shares),
                jensen_shannon: jensen_shannon(shares, &current_shares, std::f64::consts::LN_2),
            };
            Ok(result(
                current,
                ColumnKind::Numeric,
                DriftMethod::Ks,
                ks.p_value,
                distances,
                sorted.len(),
                current_count,
            ))
        }
        (
            ReferenceColumn::Discrete {
                kind,
                counts,
                total,
                ..
            },
            clean,
        ) => {
            let current_counts = match (kind, clean) {
                (ColumnKind::Numeric, CleanValues::Numeric(values)) => {
                    count_labels(values.iter().map(|&value| number_key(value)))
                }
                (ColumnKind::Categorical, CleanValues::Categorical(labels)) => {
                    count_labels(labels.into_iter())
                }
                _ => return Err(mismatch(*kind)),
            };
            let p_value = chi_square_contingency(counts, &current_counts);
            let (reference_shares, current_shares) =
                frozen_label_shares(counts, *total, &current_counts);
            let distances = Distances {
                wasserstein_normed: None,
                psi: psi_with_floor(&reference_shares, &current_shares),
                jensen_shannon: jensen_shannon(
                    &reference_shares,
                    &current_shares,
                    std::f64::consts::LN_2,
                ),
            };
            Ok(result(
                current,
                *kind,
                DriftMethod::ChiSquareContingency,
                p_value,
                distances,
                *total as usize,
                current_count,
            ))
        }
        (ReferenceColumn::Continuous { .. }, CleanValues::Categorical(_)) => {
            Err(mismatch(ColumnKind::Numeric))
        }
    }
}

fn result(
    current: &Column,
    kind: ColumnKind,
    method: DriftMethod,
    p_value: f64,
    distances: Distances,
    reference_count: usize,
    current_count: usize,
) -> ColumnDrift {
    ColumnDrift {
        column: current.name.clone(),
        kind,
        method,
        score: p_value,
        threshold: 0.0,
        adjusted_p_value: None,
        distances: Some(distances),
        reference_count,
        current_count,
        drifted: false,
    }
}

/// Keys a number by its shortest round-trip decimal form, with −0 folded onto 0.
fn number_key(value: f64) -> String {
    let value = if value == 0.0 { 0.0 } else { value };
    format!("{value}")
}

fn count_labels(labels: impl Iterator<Item = String>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for label in labels {
        *counts.entry(label).or_insert(0) += 1;
    }
    counts
}

/// Shares of a sorted sample in the bins (−∞, e₁], (e₁, e₂], …, (eₖ, ∞).
fn bin_shares(sorted: &[f64], edges: &[f64]) -> Vec<f64> {
    let n = sorted.len() as f64;
    let mut shares = Vec::with_capacity(edges.len() + 1);
    let mut previous = 0;
    for &edge in edges {
        let below = sorted.partition_point(|&value| value <= edge);
        shares.push((below - previous) as f64 / n);
        previous = below;
    }
    shares.push((sorted.len() - previous) as f64 / n);
    shares
}

/// Shares over the reference labels plus one bin for labels the reference does not have.
fn frozen_label_shares(
    reference: &BTreeMap<String, u64>,
    reference_total: u64,
    current: &BTreeMap<String, u64>,
) -> (Vec<f64>, Vec<f64>) {
    let current_total: u64 = current.values().sum();
    let mut reference_shares = Vec::with_capacity(reference.len() + 1);
    let mut current_shares = Vec::with_capacity(reference.len() + 1);
    for (label, &count) in reference {
        reference_shares.push(count as f64 / reference_total as f64);
        current_shares.push(current.get(label).copied().unwrap_or(0) as f64 / current_total as f64);
    }
    let unseen: u64 = current
        .iter()
        .filter(|(label, _)| !reference.contains_key(*label))
        .map(|(_, &count)| count)
        .sum();
    reference_shares.push(0.0);
    current_shares.push(unseen as f64 / current_total as f64);
    (reference_shares, current_shares)
}

fn psi_with_floor(reference: &[f64], current: &[f64]) -> f64 {
    let floor = |shares: &[f64]| {
        shares
            .iter()
            .map(|&share| share.max(EMPTY_BIN_SHARE))
            .collect::<Vec<f64>>()
    };
    psi(&floor(reference), &floor(current))
}

/// Pearson's chi-square test of homogeneity on the 2×k table of label counts, without
/// continuity correction. Returns 1 when only one label occurs.
///
/// NOTE: like every chi-square approximation, the p-value is unreliable when expected counts
/// fall below about 5; labels that rare have little weight in the statistic unless the
/// current sample is much larger than the reference.
pub fn chi_square_contingency(
    reference: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
) -> f64 {
    let reference_total: u64 = reference.values().sum();
    let current_total: u64 = current.values().sum();
    let total = (reference_total + current_total) as f64;
    let mut labels: Vec<&String> = reference.keys().chain(current.keys()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        return 1.0;
    }
    let mut statistic = 0.0;
    for label in &labels {
        let r = reference.get(*label).copied().unwrap_or(0) as f64;
        let c = current.get(*label).copied().unwrap_or(0) as f64;
        let column_total = r + c;
        let expected_r = reference_total as f64 * column_total / total;
        let expected_c = current_total as f64 * column_total / total;
        statistic += (r - expected_r).powi(2) / expected_r + (c - expected_c).powi(2) / expected_c;
    }
    chi2_sf(statistic, (labels.len() - 1) as f64)
}

/// Returns Benjamini–Hochberg adjusted p-values: for the i-th smallest of m p-values,
/// min over j ≥ i of p₍ⱼ₎·m/j, capped at 1. NaN p-values stay NaN and do not count in m.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| !p_values[i].is_nan())
        .collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len() as f64;
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running_min: f64 = 1.0;
    for (rank, &index) in order.iter().enumerate().rev() {
        let value = p_values[index] * m / (rank + 1) as f64;
        running_min = running_min.min(value);
        adjusted[index] = running_min;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benjamini_hochberg_matches_hand_computation() {
        // Sorted p: 0.01, 0.02, 0.03, 0.5 with m = 4 → 0.04, 0.04, 0.04, 0.5.
        let adjusted = benjamini_hochberg(&[0.5, 0.01, 0.03, 0.02]);
        let expected = [0.5, 0.04, 0.04, 0.04];
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-15, "{adjusted:?}");
        }
    }

    #[test]
    fn contingency_matches_scipy() {
        // scipy.stats.chi2_contingency([[10, 20, 30], [20, 20, 20]], correction=False).pvalue
        // with SciPy 1.17.1.
        let reference = BTreeMap::from([
            ("a".to_owned(), 10),
            ("b".to_owned(), 20),
            ("c".to_owned(), 30),
        ]);
        let current = BTreeMap::from([
            ("a".to_owned(), 20),
            ("b".to_owned(), 20),
            ("c".to_owned(), 20),
        ]);
        let p_value = chi_square_contingency(&reference, &current);
        assert!(
            (p_value - 0.069_483_451_222_801_5).abs() < 1e-12,
            "{p_value}"
        );
    }

    #[test]
    fn bins_are_frozen_on_reference() {
        let reference: Vec<f64> = (0..1000).map(f64::from).collect();
        let fitted =
            ReferenceColumn::fit(&Column::numeric("x", reference), &GhafOptions::default())
                .unwrap();
        let ReferenceColumn::Continuous { edges, shares, .. } = fitted else {
            panic!("expected a continuous reference");
        };
        assert_eq!(edges.len(), 9);
        for share in shares {
            assert!((share - 0.1).abs() < 1e-12);
        }
    }

    #[test]
    fn shifted_numeric_column_drifts() {
        let reference: Vec<f64> = (0..2000).map(|i| f64::from(i % 100)).collect();
        let current: Vec<f64> = (0..2000).map(|i| f64::from(i % 100) + 30.0).collect();
        let report = dataset_drift(
            &[Column::numeric("x", reference.clone())],
            &[Column::numeric("x", current)],
            GhafOptions::default(),
        )
        .unwrap();
        assert!(report.columns[0].drifted);
        let unchanged = dataset_drift(
            &[Column::numeric("x", reference.clone())],
            &[Column::numeric("x", reference)],
            GhafOptions::default(),
        )
        .unwrap();
        assert!(!unchanged.columns[0].drifted);
        assert_eq!(unchanged.columns[0].score, 1.0);
    }

    fn labels(name: &str, values: &[&str]) -> Column {
        Column::categorical(
            name,
            values
                .iter()
                .map(|value| Some((*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn kind_mismatch_is_rejected() {
        let reference =
            Reference::fit(&[labels("c", &["a", "b"])], GhafOptions::default()).unwrap();
        let result = reference.dataset_drift(&[Column::numeric("c", vec![1.0, 2.0])]);
        assert!(matches!(result, Err(MonitorError::InvalidInput(_))));
    }

    #[test]
    fn missing_current_column_is_rejected() {
        let reference =
            Reference::fit(&[labels("c", &["a", "b"])], GhafOptions::default()).unwrap();
        let result = reference.dataset_drift(&[labels("other", &["a"])]);
        assert!(
            matches!(result, Err(MonitorError::InvalidInput(message)) if message.contains("'c'"))
        );
    }

    #[test]
    fn correction_spans_all_columns() {
        // Twenty unchanged columns and one strongly shifted column: only the shifted one
        // survives the adjustment, and its adjusted p-value is at least its raw p-value.
        let mut reference = Vec::new();
        let mut current = Vec::new();
        for index in 0..20 {
            let values: Vec<f64> = (0..500)
                .map(|i| f64::from((i * 37 + index) % 101))
                .collect();
            reference.push(Column::numeric(&format!("same{index}"), values.clone()));
            current.push(Column::numeric(&format!("same{index}"), values));
        }
        let base: Vec<f64> = (0..500).map(|i| f64::from((i * 37) % 101)).collect();
        reference.push(Column::numeric("shifted", base.clone()));
        current.push(Column::numeric(
            "shifted",
            base.iter().map(|value| value + 40.0).collect(),
        ));

        let report = dataset_drift(&reference, &current, GhafOptions::default()).unwrap();
        assert_eq!(report.drifted_columns, 1);
        let shifted = report
            .columns
            .iter()
            .find(|column| column.column == "shifted")
            .unwrap();
        assert!(shifted.drifted);
        assert!(shifted.adjusted_p_value.unwrap() >= shifted.score);
        assert!((report.share - 1.0 / 21.0).abs() < 1e-15);
        assert!(!report.dataset_drifted);
    }

    #[test]
    fn reference_serde_round_trip() {
        let columns = [
            Column::numeric("x", (0..200).map(f64::from).collect()),
            labels("c", &["a", "b", "a"]),
        ];
        let reference = Reference::fit(&columns, GhafOptions::default()).unwrap();
        let json = serde_json::to_string(&reference).unwrap();
        let back: Reference = serde_json::from_str(&json).unwrap();
        assert_eq!(back, reference);
    }

    #[test]
    fn unseen_label_goes_to_other_bin() {
        let reference = BTreeMap::from([("a".to_owned(), 5)]);
        let current = BTreeMap::from([("a".to_owned(), 1), ("z".to_owned(), 3)]);
        let (r, c) = frozen_label_shares(&reference, 5, &current);
        assert_eq!(r, vec![1.0, 0.0]);
        assert_eq!(c, vec![0.25, 0.75]);
    }
}
