//! KLL quantile sketch (Karnin, Lang and Liberty, 2016) over `f64`, mergeable.

use serde::{Deserialize, Serialize};

/// Smallest level capacity, as in the DataSketches implementation.
const MIN_LEVEL_CAPACITY: usize = 8;

/// Default `k`; with k = 1024 the normalised rank error is about 0.27% at 99% confidence.
pub const DEFAULT_K: u16 = 1024;

/// A KLL sketch. Level h stores items of weight 2^h, and level capacities shrink by a factor
/// 2/3 per level below the top, so the sketch keeps O(k) items for any stream length.
///
/// Compaction picks the even- or odd-indexed items of a sorted level at random. The random
/// source is a xorshift generator stored in the sketch, so a given sequence of updates and
/// merges always yields the same sketch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KllSketch {
    k: u16,
    n: u64,
    min: f64,
    max: f64,
    levels: Vec<Vec<f64>>,
    rng_state: u64,
}

impl KllSketch {
    /// Creates an empty sketch with parameter `k`; values below 8 are raised to 8.
    pub fn new(k: u16) -> Self {
        Self {
            k: k.max(MIN_LEVEL_CAPACITY as u16),
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            levels: vec![Vec::new()],
            rng_state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Returns the parameter `k`.
    pub fn k(&self) -> u16 {
        self.k
    }

    /// Returns the number of values the sketch summarises.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Returns the number of items the sketch stores.
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// Returns the smallest value seen, or `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }

    /// Returns the largest value seen, or `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }

    /// Returns the normalised rank error that a sketch with parameter `k` stays within with
    /// 99% confidence for a single rank query: 2.296 / k^0.9723, the empirical fit published
    /// with the DataSketches KLL implementation.
    pub fn normalized_rank_error(k: u16) -> f64 {
        2.296 / f64::from(k).powf(0.9723)
    }

    /// Adds one value. NaN is ignored, because it has no rank.
    pub fn update(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.n += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.levels[0].push(value);
        self.compress();
    }

    /// Merges another sketch into this one. The result keeps this sketch's `k`.
    pub fn merge(&mut self, other: &Self) {
        if other.n == 0 {
            return;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        while self.levels.len() < other.levels.len() {
            self.levels.push(Vec::new());
        }
        for (level, items) in other.levels.iter().enumerate() {
            self.levels[level].extend_from_slice(items);
        }
        self.rng_state ^= other.rng_state.rotate_left(17);
        if self.rng_state == 0 {
            self.rng_state = 0x9E37_79B9_7F4A_7C15;
        }
        self.compress();
    }

    fn level_capacity(&self, level: usize) -> usize {
        let depth = self.levels.len() - 1 - level;
        let capacity = (f64::from(self.k) * (2.0f64 / 3.0).powi(depth as i32)).ceil() as usize;
        capacity.max(MIN_LEVEL_CAPACITY)
    }

    fn total_capacity(&self) -> usize {
        (0..self.levels.len())
            .map(|level| self.level_capacity(level))
            .sum()
    }

    fn next_bit(&mut self) -> bool {
        let mut x = self.rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng_state = x;
        x & 1 == 1
    }

    /// Compacts the lowest full level until the sketch fits its total capacity.
    fn compress(&mut self) {
        while self.retained() > self.total_capacity() {
            let level = (0..self.levels.len())
                .find(|&level| self.levels[level].len() >= self.level_capacity(level))
                .unwrap_or(0);
            if level + 1 == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let mut items = std::mem::take(&mut self.levels[level]);
            items.sort_by(f64::total_cmp);
            // An odd item out stays at its level with its weight unchanged.
            let leftover = if items.len() % 2 == 1 {
                items.pop()
            } else {
                None
            };
            let offset = usize::from(self.next_bit());
            let promoted: Vec<f64> = items.iter().skip(offset).step_by(2).copied().collect();
            self.levels[level + 1].extend(promoted);
            if let Some(item) = leftover {
                self.levels[level].push(item);
            }
        }
    }

    /// Returns the stored items with their weights, sorted by value.
    fn weighted_items(&self) -> Vec<(f64, u64)> {
        let mut items: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(level, values)| values.iter().map(move |&value| (value, 1u64 << level)))
            .collect();
        items.sort_by(|a, b| a.0.total_cmp(&b.0));
        items
    }

    /// Returns the estimated fraction of values ≤ `value`.
    pub fn rank(&self, value: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let weight: u64 = self
            .levels
            .iter()
            .enumerate()
            .map(|(level, values)| {
                (values.iter().filter(|&&item| item <= value).count() as u64) << level
            })
            .sum();
        weight as f64 / self.n as f64
    }

    /// Returns the estimated q-quantile: the smallest stored value whose estimated rank is at
    /// least q (the inverted-CDF definition). Returns `None` when empty or q is outside [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles(&[q]).map(|values| values[0])
    }

    /// Returns several quantiles with one sort of the stored items.
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        if self.n == 0 || qs.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return None;
        }
        let items = self.weighted_items();
        let total: u64 = items.iter().map(|item| item.1).sum();
        let mut out = Vec::with_capacity(qs.len());
        for &q in qs {
            if q == 0.0 {
                out.push(self.min);
                continue;
            }
            if q == 1.0 {
                out.push(self.max);
                continue;
            }
            let target = q * total as f64;
            let mut cumulative = 0u64;
            let mut chosen = self.max;
            for &(value, weight) in &items {
                cumulative += weight;
                if cumulative as f64 >= target {
                    chosen = value;
                    break;
                }
            }
            out.push(chosen);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uniform_stream(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
            })
            .collect()
    }

    fn max_rank_error(sketch: &KllSketch, sorted: &[f64]) -> f64 {
        let n = sorted.len() as f64;
        let mut worst: f64 = 0.0;
        for i in 1..100 {
            let value = sorted[(i * sorted.len()) / 100];
            let true_rank = sorted.partition_point(|&x| x <= value) as f64 / n;
            worst = worst.max((sketch.rank(value) - true_rank).abs());
        }
        worst
    }

    #[test]
    fn rank_error_within_documented_bound() {
        let bound = KllSketch::normalized_rank_error(DEFAULT_K);
        assert!(bound < 0.003, "bound for k=1024 is {bound}");
        for seed in 1..=3 {
            let values = uniform_stream(seed, 200_000);
            let mut sketch = KllSketch::new(DEFAULT_K);
            for &value in &values {
                sketch.update(value);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let error = max_rank_error(&sketch, &sorted);
            assert!(
                error <= bound,
                "seed {seed}: max rank error {error} exceeds {bound}"
            );
            assert!(sketch.retained() < 4 * usize::from(DEFAULT_K));
        }
    }

    #[test]
    fn merged_rank_error_within_bound() {
        let bound = KllSketch::normalized_rank_error(DEFAULT_K);
        let values = uniform_stream(7, 240_000);
        let mut merged = KllSketch::new(DEFAULT_K);
        for chunk in values.chunks(30_000) {
            let mut part = KllSketch::new(DEFAULT_K);
            for &value in chunk {
                part.update(value);
            }
            merged.merge(&part);
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(merged.count(), 240_000);
        let error = max_rank_error(&merged, &sorted);
        assert!(error <= bound, "max rank error {error} exceeds {bound}");
    }

    #[test]
    fn small_stream_is_exact() {
        let mut sketch = KllSketch::new(DEFAULT_K);
        for i in 1..=100 {
            sketch.update(f64::from(i));
        }
        assert_eq!(sketch.quantile(0.5), Some(50.0));
        assert_eq!(sketch.quantile(0.0), Some(1.0));
        assert_eq!(sketch.quantile(1.0), Some(100.0));
        assert_eq!(sketch.rank(10.0), 0.1);
    }

    #[test]
    fn empty_sketch_has_no_quantiles() {
        let sketch = KllSketch::new(DEFAULT_K);
        assert_eq!(sketch.quantile(0.5), None);
        assert!(sketch.rank(1.0).is_nan());
    }

    proptest! {
        #[test]
        fn merge_keeps_count_and_extremes(
            a in prop::collection::vec(-1e3f64..1e3, 0..3000),
            b in prop::collection::vec(-1e3f64..1e3, 0..3000),
        ) {
            let mut left = KllSketch::new(64);
            a.iter().for_each(|&v| left.update(v));
            let mut right = KllSketch::new(64);
            b.iter().for_each(|&v| right.update(v));
            left.merge(&right);
            prop_assert_eq!(left.count(), (a.len() + b.len()) as u64);
            let all: Vec<f64> = a.iter().chain(&b).copied().collect();
            let min = all.iter().copied().fold(f64::INFINITY, f64::min);
            let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(left.min(), (!all.is_empty()).then_some(min));
            prop_assert_eq!(left.max(), (!all.is_empty()).then_some(max));
            if !all.is_empty() {
                // Every rank estimate stays within a loose bound for k = 64.
                let mut sorted = all.clone();
                sorted.sort_by(f64::total_cmp);
                let error = max_rank_error(&left, &sorted);
                prop_assert!(error <= 3.0 * KllSketch::normalized_rank_error(64), "error {}", error);
            }
        }
    }
}
