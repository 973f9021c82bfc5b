//! Two-sample statistics shared by both drift modes. Inputs are finite, sorted samples.

use crate::special::{gcd, kolmogorov_two_sided_sf, ks_two_sample_exact_sf};

/// Largest sample size for which the two-sample KS test computes the exact p-value, as in
/// SciPy's `ks_2samp(method="auto")`.
pub const KS_EXACT_MAX_N: usize = 10_000;

/// Result of a two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// Largest absolute difference between the two empirical CDFs.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Runs the two-sided two-sample KS test the way SciPy 1.17's `ks_2samp` does with
/// `method="auto"`: the exact distribution when both samples have at most 10,000 values,
/// otherwise `kstwo.sf(D, round(n1·n2/(n1+n2)))`.
pub fn ks_two_sample(sorted_a: &[f64], sorted_b: &[f64]) -> KsResult {
    let (n1, n2) = (sorted_a.len(), sorted_b.len());
    let (nf1, nf2) = (n1 as f64, n2 as f64);
    // Walk both samples once; at each distinct value the CDF difference is
    // count_a(≤ v)/n1 − count_b(≤ v)/n2, computed with the same operations as SciPy.
    let (mut i, mut j) = (0, 0);
    let mut max_difference = f64::NEG_INFINITY;
    let mut min_difference = f64::INFINITY;
    while i < n1 || j < n2 {
        let value = match (sorted_a.get(i), sorted_b.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < n1 && sorted_a[i] <= value {
            i += 1;
        }
        while j < n2 && sorted_b[j] <= value {
            j += 1;
        }
        let difference = i as f64 / nf1 - j as f64 / nf2;
        max_difference = max_difference.max(difference);
        min_difference = min_difference.min(difference);
    }
    let min_statistic = (-min_difference).clamp(0.0, 1.0);
    let mut statistic = if min_statistic > max_difference {
        min_statistic
    } else {
        max_difference
    };

    if n1.max(n2) <= KS_EXACT_MAX_N {
        let g = gcd(n1 as u64, n2 as u64);
        let lcm = (n1 as u64 / g) * n2 as u64;
        let h = (statistic * lcm as f64).round_ties_even();
        statistic = h / lcm as f64;
        if let Some(p_value) = ks_two_sample_exact_sf(n1 as u64, n2 as u64, h as u64) {
            return KsResult {
                statistic,
                p_value: p_value.clamp(0.0, 1.0),
            };
        }
    }
    let (m, n) = if nf1 >= nf2 { (nf1, nf2) } else { (nf2, nf1) };
    let effective_n = (m * n / (m + n)).round_ties_even();
    let p_value = kolmogorov_two_sided_sf(effective_n as u64, statistic).clamp(0.0, 1.0);
    KsResult { statistic, p_value }
}

/// Computes the first Wasserstein distance ∫|F_a − F_b| dx between two empirical
/// distributions, as SciPy's `wasserstein_distance` does.
pub fn wasserstein(sorted_a: &[f64], sorted_b: &[f64]) -> f64 {
    let (n1, n2) = (sorted_a.len() as f64, sorted_b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut previous: Option<(f64, f64)> = None;
    let mut total = 0.0;
    // Visit each distinct value of the merged sample once. Between consecutive distinct
    // values both CDFs are constant, so each gap contributes |F_a − F_b| times its width.
    while i < sorted_a.len() || j < sorted_b.len() {
        let value = match (sorted_a.get(i), sorted_b.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        if let Some((last_value, last_difference)) = previous {
            total += last_difference * (value - last_value);
        }
        while i < sorted_a.len() && sorted_a[i] <= value {
            i += 1;
        }
        while j < sorted_b.len() && sorted_b[j] <= value {
            j += 1;
        }
        previous = Some((value, (i as f64 / n1 - j as f64 / n2).abs()));
    }
    total
}

/// Returns the population standard deviation (divisor n) with a two-pass computation.
pub fn population_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let squares: f64 = values
        .iter()
        .map(|value| (value - mean).abs().powi(2))
        .sum();
    (squares / n).sqrt()
}

/// Computes the Jensen–Shannon distance between two histograms, √(JS divergence), after
/// normalising each to sum to 1. `ln_base` is the natural log of the logarithm base
/// (1 for nats as SciPy's default, ln 2 for bits). Bins where one side is zero contribute
/// only through the other side.
pub fn jensen_shannon(p: &[f64], q: &[f64], ln_base: f64) -> f64 {
    let p_total: f64 = p.iter().sum();
    let q_total: f64 = q.iter().sum();
    let mut left = 0.0;
    let mut right = 0.0;
    for (&p, &q) in p.iter().zip(q) {
        let p = p / p_total;
        let q = q / q_total;
        let m = (p + q) / 2.0;
        left += relative_entropy_term(p, m);
        right += relative_entropy_term(q, m);
    }
    let divergence = (left + right) / ln_base;
    (divergence / 2.0).sqrt()
}

/// Computes x·ln(x/y), with 0 for x = 0, as `scipy.special.rel_entr` does.
fn relative_entropy_term(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y > 0.0 {
        x * (x / y).ln()
    } else {
        f64::INFINITY
    }
}

/// Computes the population stability index Σ (r − c)·ln(r/c) over bin shares that have no
/// zeros.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| (r - c) * (r / c).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shift_is_shift() {
        let a = [0.0, 1.0, 2.0, 3.0];
        let b = [0.5, 1.5, 2.5, 3.5];
        assert!((wasserstein(&a, &b) - 0.5).abs() < 1e-15);
        assert_eq!(wasserstein(&a, &a), 0.0);
    }

    #[test]
    fn wasserstein_handles_duplicates() {
        // F_a − F_b is 0.5 on [0, 1) and 0 elsewhere.
        let a = [0.0, 0.0, 1.0, 1.0];
        let b = [1.0, 1.0];
        assert!((wasserstein(&a, &b) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn ks_identical_samples() {
        let a = [1.0, 2.0, 3.0];
        let result = ks_two_sample(&a, &a);
        assert_eq!(result.statistic, 0.0);
        assert_eq!(result.p_value, 1.0);
    }

    #[test]
    fn jensen_shannon_disjoint_is_maximal() {
        let distance = jensen_shannon(&[1.0, 0.0], &[0.0, 1.0], std::f64::consts::LN_2);
        assert!((distance - 1.0).abs() < 1e-15);
        let nats = jensen_shannon(&[1.0, 0.0], &[0.0, 1.0], 1.0);
        assert!((nats - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }
}
