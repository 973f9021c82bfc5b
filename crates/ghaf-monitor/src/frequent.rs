//! Frequent items: a mergeable Misra–Gries summary over string values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default number of counters.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Misra–Gries counters with median-based purging.
///
/// While a column has at most `capacity` distinct values, every count is exact and
/// `max_error` is 0. Beyond that, when the counters overflow, the median count is subtracted
/// from every counter and counters that reach zero are dropped. For every item,
/// `estimate ≤ true count ≤ estimate + max_error`, and `max_error ≤ 2·total / capacity`,
/// because each purge that subtracts c removes at least c·capacity/2 from the counters' sum.
/// Merging adds the counters and the errors and then purges, which keeps the same bound for
/// the combined total (Agarwal et al., "Mergeable summaries", 2012).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequentItems {
    capacity: usize,
    total: u64,
    max_error: u64,
    counters: BTreeMap<String, u64>,
}

impl FrequentItems {
    /// Creates an empty summary with `capacity` counters (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            total: 0,
            max_error: 0,
            counters: BTreeMap::new(),
        }
    }

    /// Returns the number of values summarised.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Returns the largest amount by which any estimate can fall short of the true count.
    pub fn max_error(&self) -> u64 {
        self.max_error
    }

    /// Returns whether every count is exact, which is true until the first purge.
    pub fn is_exact(&self) -> bool {
        self.max_error == 0
    }

    /// Adds one occurrence of `item`.
    pub fn update(&mut self, item: &str) {
        self.update_weighted(item, 1);
    }

    /// Adds `weight` occurrences of `item`.
    pub fn update_weighted(&mut self, item: &str, weight: u64) {
        if weight == 0 {
            return;
        }
        self.total += weight;
        match self.counters.get_mut(item) {
            Some(count) => *count += weight,
            None => {
                self.counters.insert(item.to_owned(), weight);
                self.purge_if_full();
            }
        }
    }

    /// Merges another summary into this one. The result keeps this summary's capacity.
    pub fn merge(&mut self, other: &Self) {
        self.total += other.total;
        self.max_error += other.max_error;
        for (item, &count) in &other.counters {
            *self.counters.entry(item.clone()).or_insert(0) += count;
        }
        self.purge_if_full();
    }

    fn purge_if_full(&mut self) {
        while self.counters.len() > self.capacity {
            let mut counts: Vec<u64> = self.counters.values().copied().collect();
            let middle = counts.len() / 2;
            let (_, &mut median, _) = counts.select_nth_unstable(middle);
            self.counters.retain(|_, count| {
                *count = count.saturating_sub(median);
                *count > 0
            });
            self.max_error += median;
        }
    }

    /// Returns the estimated count of `item`, a lower bound on its true count.
    pub fn estimate(&self, item: &str) -> u64 {
        self.counters.get(item).copied().unwrap_or(0)
    }

    /// Returns the tracked items with their estimated counts, most frequent first and ties in
    /// item order.
    pub fn top(&self, limit: usize) -> Vec<(String, u64)> {
        let mut items: Vec<(String, u64)> = self
            .counters
            .iter()
            .map(|(item, &count)| (item.clone(), count))
            .collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        items.truncate(limit);
        items
    }

    /// Returns every tracked item with its estimated count, in item order.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn exact_counts(items: &[String]) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for item in items {
            *counts.entry(item.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn check_bounds(summary: &FrequentItems, items: &[String]) -> Result<(), TestCaseError> {
        let exact = exact_counts(items);
        prop_assert_eq!(summary.total(), items.len() as u64);
        prop_assert!(summary.max_error() * summary.capacity as u64 <= 2 * summary.total());
        for (item, &count) in &exact {
            let estimate = summary.estimate(item);
            prop_assert!(
                estimate <= count,
                "{} estimated {} > true {}",
                item,
                estimate,
                count
            );
            prop_assert!(count <= estimate + summary.max_error());
        }
        Ok(())
    }

    #[test]
    fn small_cardinality_counts_are_exact() {
        let mut summary = FrequentItems::new(DEFAULT_CAPACITY);
        for i in 0..10_000 {
            summary.update(["a", "b", "c"][i % 3]);
        }
        assert!(summary.is_exact());
        assert_eq!(summary.estimate("a"), 3334);
        assert_eq!(summary.top(1), vec![("a".to_owned(), 3334)]);
    }

    #[test]
    fn heavy_hitter_survives_many_distinct_values() {
        let mut summary = FrequentItems::new(16);
        for i in 0..10_000 {
            summary.update("heavy");
            summary.update(&format!("rare-{i}"));
        }
        assert!(!summary.is_exact());
        assert_eq!(summary.top(1)[0].0, "heavy");
        assert!(summary.estimate("heavy") + summary.max_error() >= 10_000);
    }

    proptest! {
        #[test]
        fn merge_keeps_error_bounds(
            a in prop::collection::vec(0u32..60, 0..400),
            b in prop::collection::vec(0u32..60, 0..400),
        ) {
            let a: Vec<String> = a.iter().map(|i| format!("v{}", i * i % 61)).collect();
            let b: Vec<String> = b.iter().map(|i| format!("v{}", i % 13)).collect();
            let mut left = FrequentItems::new(8);
            a.iter().for_each(|item| left.update(item));
            let mut right = FrequentItems::new(8);
            b.iter().for_each(|item| right.update(item));
            left.merge(&right);
            let all: Vec<String> = a.iter().chain(&b).cloned().collect();
            check_bounds(&left, &all)?;
        }

        #[test]
        fn merge_is_exact_below_capacity(
            a in prop::collection::vec(0u32..20, 0..300),
            b in prop::collection::vec(0u32..20, 0..300),
        ) {
            let a: Vec<String> = a.iter().map(|i| i.to_string()).collect();
            let b: Vec<String> = b.iter().map(|i| i.to_string()).collect();
            let mut left = FrequentItems::new(64);
            a.iter().for_each(|item| left.update(item));
            let mut right = FrequentItems::new(64);
            b.iter().for_each(|item| right.update(item));
            left.merge(&right);
            let mut whole = FrequentItems::new(64);
            a.iter().chain(&b).for_each(|item| whole.update(item));
            prop_assert_eq!(left, whole);
        }
    }
}
