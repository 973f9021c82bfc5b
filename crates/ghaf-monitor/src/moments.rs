//! Count, mean, variance, minimum and maximum of a numeric column, mergeable.

use serde::{Deserialize, Serialize};

/// Streaming moments: Welford's update for single values and the parallel update of Chan,
/// Golub and LeVeque (1979) for merging, so that neither loses precision to cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Arithmetic mean; 0 when `count` is 0.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest value; +∞ when `count` is 0.
    pub min: f64,
    /// Largest value; −∞ when `count` is 0.
    pub max: f64,
}

impl Moments {
    /// Creates empty moments.
    pub fn new() -> Self {
        Self {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds one finite value. Callers filter out NaN and infinities first.
    pub fn push(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Merges moments computed on another part of the data.
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Returns the population variance (divisor n), or `None` when empty.
    pub fn population_variance(&self) -> Option<f64> {
        (self.count > 0).then(|| self.m2 / self.count as f64)
    }

    /// Returns the sample variance (divisor n − 1), or `None` with fewer than two values.
    pub fn sample_variance(&self) -> Option<f64> {
        (self.count > 1).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// Returns the population standard deviation, or `None` when empty.
    pub fn population_std(&self) -> Option<f64> {
        self.population_variance().map(f64::sqrt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn moments_of(values: &[f64]) -> Moments {
        let mut moments = Moments::new();
        for &value in values {
            moments.push(value);
        }
        moments
    }

    #[test]
    fn variance_survives_large_offset() {
        // A naive sum of squares loses every digit here: the values differ by 1 around 1e9.
        let values: Vec<f64> = (0..1000).map(|i| 1e9 + f64::from(i % 2)).collect();
        let moments = moments_of(&values);
        assert_eq!(moments.count, 1000);
        assert!((moments.mean - (1e9 + 0.5)).abs() < 1e-6);
        assert!((moments.population_variance().unwrap() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn empty_moments_have_no_variance() {
        let moments = Moments::new();
        assert_eq!(moments.population_variance(), None);
        assert_eq!(moments.sample_variance(), None);
    }

    proptest! {
        #[test]
        fn merge_equals_whole(
            values in prop::collection::vec(-1e6f64..1e6, 0..200),
            split in 0usize..200,
        ) {
            let split = split.min(values.len());
            let mut left = moments_of(&values[..split]);
            let right = moments_of(&values[split..]);
            left.merge(&right);
            let whole = moments_of(&values);
            prop_assert_eq!(left.count, whole.count);
            prop_assert_eq!(left.min, whole.min);
            prop_assert_eq!(left.max, whole.max);
            let scale = 1.0 + whole.mean.abs();
            prop_assert!((left.mean - whole.mean).abs() <= 1e-9 * scale);
            let m2_scale = 1.0 + whole.m2.abs();
            prop_assert!((left.m2 - whole.m2).abs() <= 1e-9 * m2_scale);
        }
    }
}
