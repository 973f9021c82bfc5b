//! Evidently-compatible drift: the method choice, statistics, binning and thresholds of
//! Evidently 0.7.23's `DataDriftPreset` on the pandas engine, computed as SciPy 1.17 and
//! NumPy 2.4 compute them.
//!
//! Method choice depends on the column kind, the reference size after cleaning and the number
//! of distinct values in both samples together (the current size is never looked at):
//!
//! | reference size | numeric                                   | categorical               |
//! |----------------|-------------------------------------------|---------------------------|
//! | ≤ 1000         | ≤ 2 distinct: Z-test; 3–5: chi-square; else KS | ≤ 2: Z-test; else chi-square |
//! | > 1000         | ≤ 5 distinct: Jensen–Shannon; else Wasserstein (normed) | Jensen–Shannon |
//!
//! This mode keeps Evidently's known weaknesses on purpose, because its point is to give the
//! same numbers: the chi-square is a goodness-of-fit test against the reference proportions
//! taken as exact, so it raises false alarms when the current sample is large; the
//! Jensen–Shannon distance uses the natural log (range 0 to √ln 2); and the bins for
//! Jensen–Shannon and PSI depend on the current data.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use crate::MonitorError;
use crate::column::{Column, ColumnKind};
use crate::drift::statistics::{jensen_shannon, ks_two_sample, population_std, psi, wasserstein};
use crate::drift::{CleanValues, ColumnDrift, DatasetDrift, DriftMethod, count_distinct_sorted};
use crate::special::{chi2_sf, normal_cdf};

/// Options of the Evidently-compatible mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvidentlyOptions {
    /// Share of drifted columns at or above which the dataset counts as drifted (Evidently's
    /// default 0.5).
    pub drift_share: f64,
    /// Method for every column in place of the default choice, with its default threshold.
    /// `None` keeps Evidently's default choice.
    pub method: Option<DriftMethod>,
}

impl Default for EvidentlyOptions {
    fn default() -> Self {
        Self {
            drift_share: 0.5,
            method: None,
        }
    }
}

/// Computes drift for every column present in both datasets, in reference order.
///
/// Fails when a column is missing from the current data, has a different kind, or has no
/// finite value left in either sample, as Evidently does.
pub fn dataset_drift(
    reference: &[Column],
    current: &[Column],
    options: &EvidentlyOptions,
) -> Result<DatasetDrift, MonitorError> {
    let mut columns = Vec::with_capacity(reference.len());
    for reference_column in reference {
        let current_column = current
            .iter()
            .find(|column| column.name == reference_column.name)
            .ok_or_else(|| {
                MonitorError::InvalidInput(format!(
                    "column '{}' is missing from the current data",
                    reference_column.name
                ))
            })?;
        columns.push(column_drift(
            reference_column,
            current_column,
            options.method,
        )?);
    }
    Ok(DatasetDrift::from_columns(columns, options.drift_share))
}

/// Computes the drift of one column with Evidently's default method, or with `method` when
/// given.
pub fn column_drift(
    reference: &Column,
    current: &Column,
    method: Option<DriftMethod>,
) -> Result<ColumnDrift, MonitorError> {
    let kind = reference.values.kind();
    if current.values.kind() != kind {
        return Err(MonitorError::InvalidInput(format!(
            "column '{}' is {:?} in the reference but {:?} in the current data",
            reference.name,
            kind,
            current.values.kind()
        )));
    }
    let reference_values = CleanValues::from_values(&reference.values);
    let current_values = CleanValues::from_values(&current.values);
    if reference_values.len() == 0 {
        return Err(MonitorError::InvalidInput(format!(
            "column '{}' has no finite value in the reference data",
            reference.name
        )));
    }
    if current_values.len() == 0 {
        return Err(MonitorError::InvalidInput(format!(
            "column '{}' has no finite value in the current data",
            reference.name
        )));
    }
    let samples = Samples::new(&reference_values, &current_values);
    let method = match method {
        Some(method) => method,
        None => default_method(kind, reference_values.len(), samples.distinct_union()),
    };
    let (score, threshold, drifted) = match method {
        DriftMethod::Ks => {
            let (reference, current) = samples.numeric(&reference.name, method)?;
            let p_value = ks_two_sample(reference, current).p_value;
            (p_value, 0.05, p_value <= 0.05)
        }
        DriftMethod::ChiSquareGoodnessOfFit => {
            let p_value = chi_square_goodness_of_fit(&samples);
            (p_value, 0.05, p_value < 0.05)
        }
        DriftMethod::ZTest => {
            let p_value = z_test(&samples);
            (p_value, 0.05, p_value < 0.05)
        }
        DriftMethod::WassersteinNormed => {
            let (reference, current) = samples.numeric(&reference.name, method)?;
            let norm = population_std(reference).max(0.001);
            let value = wasserstein(reference, current) / norm;
            (value, 0.1, value >= 0.1)
        }
        DriftMethod::JensenShannon => {
            let (reference_shares, current_shares) = binned_shares(&samples, kind, false);
            let value = jensen_shannon(&reference_shares, &current_shares, 1.0);
            (value, 0.1, value >= 0.1)
        }
        DriftMethod::Psi => {
            let (reference_shares, current_shares) = binned_shares(&samples, kind, true);
            let value = psi(&reference_shares, &current_shares);
            (value, 0.1, value >= 0.1)
        }
        DriftMethod::ChiSquareContingency => {
            return Err(MonitorError::InvalidInput(
                "the contingency chi-square test is not an Evidently method; use the default mode"
                    .to_owned(),
            ));
        }
    };
    Ok(ColumnDrift {
        column: reference.name.clone(),
        kind,
        method,
        score,
        threshold,
        adjusted_p_value: None,
        distances: None,
        reference_count: reference_values.len(),
        current_count: current_values.len(),
        drifted,
    })
}

/// Returns Evidently's default method for a column.
pub fn default_method(
    kind: ColumnKind,
    reference_count: usize,
    distinct_union: usize,
) -> DriftMethod {
    match (kind, reference_count <= 1000) {
        (ColumnKind::Numeric, true) if distinct_union <= 2 => DriftMethod::ZTest,
        (ColumnKind::Numeric, true) if distinct_union <= 5 => DriftMethod::ChiSquareGoodnessOfFit,
        (ColumnKind::Numeric, true) => DriftMethod::Ks,
        (ColumnKind::Categorical, true) if distinct_union <= 2 => DriftMethod::ZTest,
        (ColumnKind::Categorical, true) => DriftMethod::ChiSquareGoodnessOfFit,
        (ColumnKind::Numeric, false) if distinct_union <= 5 => DriftMethod::JensenShannon,
        (ColumnKind::Numeric, false) => DriftMethod::WassersteinNormed,
        (ColumnKind::Categorical, false) => DriftMethod::JensenShannon,
    }
}

/// Both cleaned samples, with per-value counts computed on first use because the continuous
/// methods (KS, Wasserstein, Sturges bins) never need them.
struct Samples<'a> {
    reference: &'a CleanValues,
    current: &'a CleanValues,
    /// Reference and current count of each distinct value of the union, in value order.
    counts: OnceCell<Vec<(usize, usize)>>,
}

impl<'a> Samples<'a> {
    fn new(reference: &'a CleanValues, current: &'a CleanValues) -> Self {
        Self {
            reference,
            current,
            counts: OnceCell::new(),
        }
    }

    fn counts(&self) -> &[(usize, usize)] {
        self.counts
            .get_or_init(|| match (self.reference, self.current) {
                (CleanValues::Numeric(a), CleanValues::Numeric(b)) => numeric_counts(a, b),
                (CleanValues::Categorical(a), CleanValues::Categorical(b)) => label_counts(a, b),
                _ => Vec::new(),
            })
    }

    fn distinct_union(&self) -> usize {
        match (self.reference, self.current) {
            (CleanValues::Numeric(a), CleanValues::Numeric(b)) => {
                let mut distinct = 0;
                walk_distinct(a, b, |_, _| distinct += 1);
                distinct
            }
            _ => self.counts().len(),
        }
    }

    fn numeric(
        &self,
        column: &str,
        method: DriftMethod,
    ) -> Result<(&'a [f64], &'a [f64]), MonitorError> {
        match (self.reference, self.current) {
            (CleanValues::Numeric(a), CleanValues::Numeric(b)) => Ok((a, b)),
            _ => Err(MonitorError::InvalidInput(format!(
                "method {method:?} needs a numeric column, but column '{column}' is categorical"
            ))),
        }
    }
}

/// Calls `visit(reference_count, current_count)` for each distinct value of the union of two
/// sorted samples, in ascending order.
fn walk_distinct(reference: &[f64], current: &[f64], mut visit: impl FnMut(usize, usize)) {
    let (mut i, mut j) = (0, 0);
    while i < reference.len() || j < current.len() {
        let value = match (reference.get(i), current.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let (start_i, start_j) = (i, j);
        while i < reference.len() && reference[i] == value {
            i += 1;
        }
        while j < current.len() && current[j] == value {
            j += 1;
        }
        visit(i - start_i, j - start_j);
    }
}

fn numeric_counts(reference: &[f64], current: &[f64]) -> Vec<(usize, usize)> {
    let mut counts = Vec::new();
    walk_distinct(reference, current, |r, c| counts.push((r, c)));
    counts
}

fn label_counts(reference: &[String], current: &[String]) -> Vec<(usize, usize)> {
    let mut map: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for label in reference {
        map.entry(label).or_default().0 += 1;
    }
    for label in current {
        map.entry(label).or_default().1 += 1;
    }
    map.into_values().collect()
}

/// Evidently's chi-square: expected counts are the reference counts scaled by
/// n_current / n_reference, observed counts are the current counts, dof = k − 1.
fn chi_square_goodness_of_fit(samples: &Samples) -> f64 {
    let n_reference = samples.reference.len() as f64;
    let n_current = samples.current.len() as f64;
    let scale = n_current / n_reference;
    let mut statistic = 0.0;
    let counts = samples.counts();
    for &(reference_count, current_count) in counts {
        let expected = reference_count as f64 * scale;
        let observed = current_count as f64;
        statistic += (observed - expected).powi(2) / expected;
    }
    chi2_sf(statistic, (counts.len() - 1) as f64)
}

/// Evidently's Z-test: a pooled two-proportion z-test on the indicator "value differs from
/// the smallest value", with p = 2·(1 − Φ(|z|)) and p = 1 when both samples hold the same
/// single value.
fn z_test(samples: &Samples) -> f64 {
    let counts = samples.counts();
    if counts.len() == 1 {
        return 1.0;
    }
    let n1 = samples.reference.len() as f64;
    let n2 = samples.current.len() as f64;
    // The first key in sort order is the value the indicator compares against.
    let (reference_first, current_first) = counts[0];
    let p1 = (samples.reference.len() - reference_first) as f64 / n1;
    let p2 = (samples.current.len() - current_first) as f64 / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - normal_cdf(z.abs()))
}

/// Evidently's `get_binned_data`: Sturges bins over the combined data for numeric columns
/// with more than 20 distinct reference values, one bin per distinct value otherwise. Shares
/// are counts over the sample size. With `fill_zeros`, zero shares become m/10⁶ when the
/// smallest non-zero share m is at most 10⁻⁴, and 10⁻⁴ otherwise.
fn binned_shares(samples: &Samples, kind: ColumnKind, fill_zeros: bool) -> (Vec<f64>, Vec<f64>) {
    let n_reference = samples.reference.len() as f64;
    let n_current = samples.current.len() as f64;
    let (mut reference_shares, mut current_shares): (Vec<f64>, Vec<f64>) =
        match (samples.reference, samples.current) {
            (CleanValues::Numeric(reference), CleanValues::Numeric(current))
                if kind == ColumnKind::Numeric && count_distinct_sorted(reference) > 20 =>
            {
                let edges = sturges_edges(reference, current);
                let reference_counts = histogram(reference, &edges);
                let current_counts = histogram(current, &edges);
                (
                    reference_counts
                        .iter()
                        .map(|&count| count as f64 / n_reference)
                        .collect(),
                    current_counts
                        .iter()
                        .map(|&count| count as f64 / n_current)
                        .collect(),
                )
            }
            _ => samples
                .counts()
                .iter()
                .map(|&(r, c)| (r as f64 / n_reference, c as f64 / n_current))
                .unzip(),
        };
    if fill_zeros {
        fill_zero_shares(&mut reference_shares);
        fill_zero_shares(&mut current_shares);
    }
    (reference_shares, current_shares)
}

fn fill_zero_shares(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|&share| share != 0.0)
        .fold(f64::INFINITY, f64::min);
    let fill = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    for share in shares.iter_mut().filter(|share| **share == 0.0) {
        *share = fill;
    }
}

/// Bin edges of `numpy.histogram_bin_edges(concat(reference, current), bins="sturges")` for
/// float data: ⌈range / width⌉ equal-width bins with width = range / (log₂ n + 1), and edges
/// computed as `numpy.linspace` does (start + i·step, the last edge set to the maximum).
///
/// NOTE: NumPy raises the width to 1 for integer arrays; this function sees floats only, so
/// it matches Evidently on columns that pandas stores as floats.
fn sturges_edges(reference: &[f64], current: &[f64]) -> Vec<f64> {
    let min = reference[0].min(current[0]);
    let max = reference[reference.len() - 1].max(current[current.len() - 1]);
    let size = (reference.len() + current.len()) as f64;
    let (first, last) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let width = (max - min) / (size.log2() + 1.0);
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    edges
}

/// Counts sorted values per bin as `numpy.histogram` does with explicit edges: bins are
/// [eᵢ, eᵢ₊₁) except the last, which is closed.
fn histogram(sorted: &[f64], edges: &[f64]) -> Vec<usize> {
    let below = |edge: f64| sorted.partition_point(|&value| value < edge);
    let at_or_below = |edge: f64| sorted.partition_point(|&value| value <= edge);
    let bins = edges.len() - 1;
    let mut counts = Vec::with_capacity(bins);
    for i in 0..bins {
        let upper = if i + 1 == bins {
            at_or_below(edges[i + 1])
        } else {
            below(edges[i + 1])
        };
        counts.push(upper - below(edges[i]));
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(values: &[f64]) -> Column {
        Column::numeric("x", values.to_vec())
    }

    fn labels(values: &[&str]) -> Column {
        Column::categorical(
            "c",
            values
                .iter()
                .map(|value| Some((*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn method_choice_follows_evidently_table() {
        use ColumnKind::{Categorical, Numeric};
        assert_eq!(default_method(Numeric, 1000, 2), DriftMethod::ZTest);
        assert_eq!(
            default_method(Numeric, 1000, 5),
            DriftMethod::ChiSquareGoodnessOfFit
        );
        assert_eq!(default_method(Numeric, 1000, 6), DriftMethod::Ks);
        assert_eq!(default_method(Numeric, 1001, 5), DriftMethod::JensenShannon);
        assert_eq!(
            default_method(Numeric, 1001, 6),
            DriftMethod::WassersteinNormed
        );
        assert_eq!(default_method(Categorical, 1000, 2), DriftMethod::ZTest);
        assert_eq!(
            default_method(Categorical, 1000, 3),
            DriftMethod::ChiSquareGoodnessOfFit
        );
        assert_eq!(
            default_method(Categorical, 1001, 2),
            DriftMethod::JensenShannon
        );
    }

    #[test]
    fn sturges_edges_match_numpy() {
        // numpy.histogram_bin_edges([0, 1, …, 9, 10], bins="sturges"): 11 values, 5 bins.
        let reference: Vec<f64> = (0..=5).map(f64::from).collect();
        let current: Vec<f64> = (6..=10).map(f64::from).collect();
        assert_eq!(
            sturges_edges(&reference, &current),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(
            histogram(&reference, &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
            vec![2, 2, 2, 0, 0]
        );
        assert_eq!(
            histogram(&current, &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
            vec![0, 0, 0, 2, 3]
        );
    }

    #[test]
    fn z_test_same_single_value_is_one() {
        let drift = column_drift(&labels(&["a", "a"]), &labels(&["a"]), None).unwrap();
        assert_eq!(drift.method, DriftMethod::ZTest);
        assert_eq!(drift.score, 1.0);
        assert!(!drift.drifted);
    }

    #[test]
    fn unseen_category_gives_zero_p_value() {
        let drift = column_drift(
            &labels(&["a", "b", "c", "a"]),
            &labels(&["a", "b", "d"]),
            None,
        )
        .unwrap();
        assert_eq!(drift.method, DriftMethod::ChiSquareGoodnessOfFit);
        assert_eq!(drift.score, 0.0);
        assert!(drift.drifted);
    }

    #[test]
    fn empty_column_is_rejected() {
        let result = column_drift(&numbers(&[f64::NAN, f64::INFINITY]), &numbers(&[1.0]), None);
        assert!(matches!(result, Err(MonitorError::InvalidInput(_))));
    }

    #[test]
    fn dataset_drift_counts_share_at_or_above() {
        let reference = vec![labels(&["a"; 10]), numbers(&[1.0; 10])];
        let mut current_labels = labels(&["b"; 10]);
        current_labels.name = "c".to_owned();
        let current = vec![current_labels, numbers(&[1.0; 10])];
        let report = dataset_drift(&reference, &current, &EvidentlyOptions::default()).unwrap();
        assert_eq!(report.drifted_columns, 1);
        assert_eq!(report.share, 0.5);
        assert!(report.dataset_drifted);
    }
}
