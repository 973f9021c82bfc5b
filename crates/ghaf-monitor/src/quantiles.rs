//! Quantile summary that is exact for small columns and a KLL sketch beyond.

use serde::{Deserialize, Serialize};

use crate::kll::{DEFAULT_K, KllSketch};

/// Number of values up to which a summary stores every value, so quantiles are exact.
pub const EXACT_LIMIT: usize = 8192;

/// Quantiles of a numeric column: every value while there are at most [`EXACT_LIMIT`], a KLL
/// sketch with parameter `k` after that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuantileSummary {
    /// Every value, unsorted, with the `k` to use once the summary turns into a sketch.
    Exact { k: u16, values: Vec<f64> },
    /// A KLL sketch.
    Sketch(KllSketch),
}

impl Default for QuantileSummary {
    fn default() -> Self {
        Self::new(DEFAULT_K)
    }
}

impl QuantileSummary {
    /// Creates an empty summary whose sketch, once needed, has parameter `k`.
    pub fn new(k: u16) -> Self {
        Self::Exact {
            k,
            values: Vec::new(),
        }
    }

    /// Returns whether quantiles and ranks are exact.
    pub fn is_exact(&self) -> bool {
        matches!(self, Self::Exact { .. })
    }

    /// Returns the number of values summarised.
    pub fn count(&self) -> u64 {
        match self {
            Self::Exact { values, .. } => values.len() as u64,
            Self::Sketch(sketch) => sketch.count(),
        }
    }

    /// Adds one value; NaN is ignored.
    pub fn update(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        match self {
            Self::Exact { values, .. } => {
                values.push(value);
                self.spill_if_large();
            }
            Self::Sketch(sketch) => sketch.update(value),
        }
    }

    fn spill_if_large(&mut self) {
        if let Self::Exact { k, values } = self
            && values.len() > EXACT_LIMIT
        {
            let mut sketch = KllSketch::new(*k);
            for &value in values.iter() {
                sketch.update(value);
            }
            *self = Self::Sketch(sketch);
        }
    }

    /// Merges another summary: exact stays exact while the combined size is at most
    /// [`EXACT_LIMIT`]; otherwise the result is a sketch.
    pub fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Exact { values, .. }, Self::Exact { values: others, .. }) => {
                values.extend_from_slice(others);
                self.spill_if_large();
            }
            (Self::Sketch(sketch), Self::Exact { values, .. }) => {
                for &value in values {
                    sketch.update(value);
                }
            }
            (Self::Exact { values, .. }, Self::Sketch(other_sketch)) => {
                let mut sketch = other_sketch.clone();
                for &value in values.iter() {
                    sketch.update(value);
                }
                *self = Self::Sketch(sketch);
            }
            (Self::Sketch(sketch), Self::Sketch(other_sketch)) => sketch.merge(other_sketch),
        }
    }

    /// Returns the q-quantile with the inverted-CDF definition: the smallest value whose rank
    /// (fraction of values ≤ it) is at least q. Exact while [`Self::is_exact`]; otherwise
    /// within the sketch's rank error. Returns `None` when empty or q is outside [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles(&[q]).map(|values| values[0])
    }

    /// Returns several quantiles; see [`Self::quantile`].
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        match self {
            Self::Exact { values, .. } => {
                if values.is_empty() || qs.iter().any(|q| !(0.0..=1.0).contains(q)) {
                    return None;
                }
                let mut sorted = values.clone();
                sorted.sort_by(f64::total_cmp);
                let n = sorted.len();
                let picks = qs
                    .iter()
                    .map(|&q| {
                        let rank = (q * n as f64).ceil() as usize;
                        sorted[rank.clamp(1, n) - 1]
                    })
                    .collect();
                Some(picks)
            }
            Self::Sketch(sketch) => sketch.quantiles(qs),
        }
    }

    /// Returns the fraction of values ≤ `value`, exact while [`Self::is_exact`].
    pub fn rank(&self, value: f64) -> f64 {
        match self {
            Self::Exact { values, .. } => {
                if values.is_empty() {
                    return f64::NAN;
                }
                values.iter().filter(|&&x| x <= value).count() as f64 / values.len() as f64
            }
            Self::Sketch(sketch) => sketch.rank(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_quantiles_use_inverted_cdf() {
        let mut summary = QuantileSummary::default();
        for value in [5.0, 1.0, 4.0, 2.0, 3.0] {
            summary.update(value);
        }
        assert!(summary.is_exact());
        assert_eq!(summary.quantile(0.5), Some(3.0));
        assert_eq!(summary.quantile(0.2), Some(1.0));
        assert_eq!(summary.quantile(0.21), Some(2.0));
        assert_eq!(summary.quantile(0.0), Some(1.0));
        assert_eq!(summary.quantile(1.0), Some(5.0));
        assert_eq!(summary.rank(2.0), 0.4);
    }

    #[test]
    fn turns_into_sketch_past_limit() {
        let mut left = QuantileSummary::default();
        let mut right = QuantileSummary::default();
        for i in 0..5000 {
            left.update(f64::from(i));
            right.update(f64::from(i + 5000));
        }
        assert!(left.is_exact());
        left.merge(&right);
        assert!(!left.is_exact());
        assert_eq!(left.count(), 10_000);
        let median = left.quantile(0.5).unwrap();
        let bound = KllSketch::normalized_rank_error(DEFAULT_K) * 10_000.0;
        assert!((median - 4999.0).abs() <= bound, "median {median}");
    }
}
