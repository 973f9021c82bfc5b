//! Measurements over the cumulative per-variant counters: the difference since a baseline,
//! the error rate and latency quantiles from the histogram.

use ghaf_serving::policy::VariantStats;

/// Finds the counters of the variant named `variant` serving `version`.
pub fn find<'a>(
    stats: &'a [VariantStats],
    variant: &str,
    version: i64,
) -> Option<&'a VariantStats> {
    stats
        .iter()
        .find(|entry| entry.variant == variant && entry.version == version)
}

/// Returns the counters of `current` minus those of `baseline`. A baseline of another model
/// version, or none, counts as zero, so a variant that started serving after the baseline
/// was read is measured from its start.
pub fn delta(current: &VariantStats, baseline: Option<&VariantStats>) -> VariantStats {
    match baseline.filter(|base| base.model == current.model && base.version == current.version) {
        Some(base) => current.delta(base),
        None => current.clone(),
    }
}

/// Returns whether a counter of `current` is below the same counter of `baseline` for the
/// same model version. Summed counters go back when stats rows are deleted, such as the
/// rows of replicas that stopped long ago, and a difference against that baseline then
/// undercounts the window.
pub fn went_back(current: &VariantStats, baseline: Option<&VariantStats>) -> bool {
    let Some(base) =
        baseline.filter(|base| base.model == current.model && base.version == current.version)
    else {
        return false;
    };
    let bucket_went_back = base
        .latency_buckets
        .iter()
        .enumerate()
        .any(|(index, &count)| count > current.latency_buckets.get(index).copied().unwrap_or(0));
    current.requests < base.requests || current.errors < base.errors || bucket_went_back
}

/// Share of requests that failed; `None` without requests.
pub fn error_rate(stats: &VariantStats) -> Option<f64> {
    stats.error_rate()
}

/// Returns the latency quantile `q` (0 < q ≤ 1) in milliseconds: the upper bound of the
/// histogram bucket that contains it, so the true quantile is at most this value. Requests
/// slower than the last bound (5 s) give infinity, which JSON evidence shows as `null` and
/// which fails every latency check. `None` when the histogram is empty.
pub fn latency_quantile_ms(stats: &VariantStats, q: f64) -> Option<f64> {
    stats.latency_quantile_ms(q)
}

/// Index of the histogram bucket a latency falls into.
pub fn bucket_of(latency_us: u64) -> usize {
    ghaf_serving::policy::latency_bucket(latency_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    use ghaf_serving::policy::LATENCY_BOUNDS_US;

    fn stats(requests: u64, errors: u64, latencies_us: &[u64]) -> VariantStats {
        let mut buckets = vec![0; LATENCY_BOUNDS_US.len() + 1];
        for &latency in latencies_us {
            buckets[bucket_of(latency)] += 1;
        }
        VariantStats {
            variant: "candidate".into(),
            model: "m".into(),
            version: 2,
            requests,
            errors,
            latency_buckets: buckets,
            ..VariantStats::default()
        }
    }

    #[test]
    fn delta_subtracts_baseline() {
        let before = stats(10, 1, &[100; 10]);
        let after = stats(25, 4, &[100; 25]);
        let window = delta(&after, Some(&before));
        assert_eq!(window.requests, 15);
        assert_eq!(window.errors, 3);
        assert_eq!(window.latency_buckets.iter().sum::<u64>(), 15);
    }

    #[test]
    fn delta_ignores_other_version() {
        let mut before = stats(10, 1, &[100; 10]);
        before.version = 1;
        let after = stats(25, 4, &[100; 25]);
        assert_eq!(delta(&after, Some(&before)).requests, 25);
    }

    #[test]
    fn quantile_reports_bucket_bound() {
        let mut latencies = vec![400; 99];
        latencies.push(40_000);
        let window = stats(100, 0, &latencies);
        assert_eq!(latency_quantile_ms(&window, 0.99), Some(0.5));
        assert_eq!(latency_quantile_ms(&window, 1.0), Some(50.0));
    }

    #[test]
    fn quantile_of_overflow_bucket() {
        let window = stats(1, 0, &[60_000_000]);
        assert_eq!(latency_quantile_ms(&window, 0.99), Some(f64::INFINITY));
    }

    #[test]
    fn went_back_after_reset() {
        let before = stats(10, 1, &[100; 10]);
        let after = stats(3, 0, &[100; 3]);
        assert!(went_back(&after, Some(&before)));
    }

    #[test]
    fn went_back_ignores_growth() {
        let before = stats(10, 1, &[100; 10]);
        let after = stats(25, 4, &[100; 25]);
        assert!(!went_back(&after, Some(&before)));
    }

    #[test]
    fn went_back_ignores_other_version() {
        let mut before = stats(10, 1, &[100; 10]);
        before.version = 1;
        let after = stats(3, 0, &[100; 3]);
        assert!(!went_back(&after, Some(&before)));
    }

    #[test]
    fn error_rate_without_requests() {
        assert_eq!(error_rate(&stats(0, 0, &[])), None);
    }
}
