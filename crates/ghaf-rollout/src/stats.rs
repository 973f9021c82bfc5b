//! Significance tests of the A/B analysis: the two-proportion z-test, Welch's t-test and
//! DeLong's test for the difference of two independent AUCs.
//!
//! Every test returns a two-sided p-value. The reference values in the unit tests come from
//! SciPy 1.17.1 (`scipy.stats.norm`, `scipy.stats.ttest_ind(equal_var=False)`,
//! `scipy.special.betainc`); the script is quoted next to each constant.

use ghaf_monitor::special::{erfc, ln_gamma};
use serde::{Deserialize, Serialize};

/// Result of one significance test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// `two_proportion_z`, `welch_t` or `delong`.
    pub test: String,
    /// The z or t statistic, positive when the first sample's value is larger.
    pub statistic: f64,
    /// Degrees of freedom of Welch's t-test; `None` for z-tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrees_of_freedom: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Two-sided p-value of a standard normal statistic.
fn normal_two_sided(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// Tests whether two proportions `successes_a / n_a` and `successes_b / n_b` differ, with the
/// pooled-variance z-test. Returns p = 1 when both proportions are 0 or both are 1, because
/// the samples then show no difference at all, and `None` when a sample is empty.
pub fn two_proportion_z(
    successes_a: u64,
    n_a: u64,
    successes_b: u64,
    n_b: u64,
) -> Option<TestResult> {
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let (pa, pb) = (successes_a as f64 / na, successes_b as f64 / nb);
    let pooled = (successes_a + successes_b) as f64 / (na + nb);
    let variance = pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb);
    let (statistic, p_value) = if variance <= 0.0 {
        (0.0, 1.0)
    } else {
        let z = (pa - pb) / variance.sqrt();
        (z, normal_two_sided(z))
    };
    Some(TestResult {
        test: "two_proportion_z".to_owned(),
        statistic,
        degrees_of_freedom: None,
        p_value,
    })
}

fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, squares / (n - 1.0))
}

/// Tests whether the means of two samples differ, with Welch's t-test (unequal variances).
/// `None` when a sample has fewer than two values, or a mean or variance is not finite (a
/// NaN or infinite value, or squares that overflow); p = 1 when both samples are constant
/// and equal.
pub fn welch_t(a: &[f64], b: &[f64]) -> Option<TestResult> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (mean_a, var_a) = mean_and_variance(a);
    let (mean_b, var_b) = mean_and_variance(b);
    if ![mean_a, var_a, mean_b, var_b].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (se_a, se_b) = (var_a / a.len() as f64, var_b / b.len() as f64);
    let se = se_a + se_b;
    if se <= 0.0 {
        let p_value = if mean_a == mean_b { 1.0 } else { 0.0 };
        return Some(TestResult {
            test: "welch_t".to_owned(),
            statistic: 0.0,
            degrees_of_freedom: None,
            p_value,
        });
    }
    let t = (mean_a - mean_b) / se.sqrt();
    let df =
        se * se / (se_a * se_a / (a.len() as f64 - 1.0) + se_b * se_b / (b.len() as f64 - 1.0));
    Some(TestResult {
        test: "welch_t".to_owned(),
        statistic: t,
        degrees_of_freedom: Some(df),
        p_value: student_t_two_sided(t, df),
    })
}

/// Two-sided p-value of Student's t distribution with `df` degrees of freedom:
/// P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2).
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// Computes the regularised incomplete beta function I_x(a, b) from its continued fraction
/// (modified Lentz method), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the
/// fraction converges slowly.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..1000 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + even * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + even / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        f *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + odd * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + odd / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    f
}

/// AUC of one sample with the variance of DeLong's method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AucEstimate {
    pub auc: f64,
    pub variance: f64,
}

/// Computes the AUC of `scores` against binary `labels` (1 = positive) and its DeLong
/// variance S10/m + S01/n, where S10 and S01 are the sample variances of the positives' and
/// negatives' placement values. `None` when either class has fewer than two rows.
pub fn delong_auc(labels: &[f64], scores: &[f64]) -> Option<AucEstimate> {
    let mut positives = Vec::new();
    let mut negatives = Vec::new();
    for (&label, &score) in labels.iter().zip(scores) {
        if !score.is_finite() {
            continue;
        }
        if label >= 0.5 {
            positives.push(score);
        } else {
            negatives.push(score);
        }
    }
    if positives.len() < 2 || negatives.len() < 2 {
        return None;
    }
    positives.sort_by(f64::total_cmp);
    negatives.sort_by(f64::total_cmp);
    // Placement of a value among sorted others: the share below it, ties counting half.
    let placement = |sorted: &[f64], value: f64| {
        let below = sorted.partition_point(|&other| other < value);
        let not_above = sorted.partition_point(|&other| other <= value);
        (below as f64 + 0.5 * (not_above - below) as f64) / sorted.len() as f64
    };
    let v10: Vec<f64> = positives
        .iter()
        .map(|&x| placement(&negatives, x))
        .collect();
    let v01: Vec<f64> = negatives
        .iter()
        .map(|&y| 1.0 - placement(&positives, y))
        .collect();
    let (auc, s10) = mean_and_variance(&v10);
    let (_, s01) = mean_and_variance(&v01);
    Some(AucEstimate {
        auc,
        variance: s10 / positives.len() as f64 + s01 / negatives.len() as f64,
    })
}

/// Tests whether two AUCs measured on independent samples differ: z = (A − B) / √(Var A +
/// Var B) with DeLong variances.
pub fn delong_independent(a: AucEstimate, b: AucEstimate) -> TestResult {
    let variance = a.variance + b.variance;
    let (statistic, p_value) = if variance <= 0.0 {
        (0.0, if a.auc == b.auc { 1.0 } else { 0.0 })
    } else {
        let z = (a.auc - b.auc) / variance.sqrt();
        (z, normal_two_sided(z))
    };
    TestResult {
        test: "delong".to_owned(),
        statistic,
        degrees_of_freedom: None,
        p_value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance * expected.abs().max(1e-300)
    }

    #[test]
    fn proportion_test_matches_scipy() {
        // 30 errors in 1000 against 50 in 1000:
        // p = (80/2000); se = sqrt(p*(1-p)*(2/1000)); z = (0.03-0.05)/se
        let result = two_proportion_z(30, 1000, 50, 1000).unwrap();
        assert!(
            close(result.statistic, -2.282_177_322_938_192_5, 1e-12),
            "{result:?}"
        );
        assert!(
            close(result.p_value, EXPECTED_PROPORTION_P, 1e-9),
            "{result:?}"
        );
    }

    #[test]
    fn proportion_test_without_errors() {
        let result = two_proportion_z(0, 500, 0, 700).unwrap();
        assert_eq!(result.p_value, 1.0);
    }

    #[test]
    fn proportion_test_needs_samples() {
        assert!(two_proportion_z(0, 0, 3, 10).is_none());
    }

    #[test]
    fn welch_matches_scipy() {
        // scipy.stats.ttest_ind(A, B, equal_var=False) with the samples below.
        let a = [1.2, 2.3, 3.1, 4.8, 5.0, 2.2, 3.3];
        let b = [2.1, 3.9, 4.4, 5.6, 6.1, 4.0];
        let result = welch_t(&a, &b).unwrap();
        assert!(
            close(result.statistic, EXPECTED_WELCH_T, 1e-10),
            "{result:?}"
        );
        assert!(
            close(result.degrees_of_freedom.unwrap(), EXPECTED_WELCH_DF, 1e-10),
            "{result:?}"
        );
        assert!(close(result.p_value, EXPECTED_WELCH_P, 1e-8), "{result:?}");
    }

    #[test]
    fn welch_rejects_nan_sample() {
        assert!(welch_t(&[f64::NAN, 1.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn welch_rejects_overflowing_sample() {
        assert!(welch_t(&[1e200, 3e200, 1.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn incomplete_beta_matches_scipy() {
        for (a, b, x, expected) in EXPECTED_BETAINC {
            let actual = incomplete_beta(a, b, x);
            assert!(
                close(actual, expected, 1e-10),
                "I_{x}({a}, {b}) = {actual}, expected {expected}"
            );
        }
    }

    #[test]
    fn student_t_tail_matches_scipy() {
        // 2 * scipy.stats.t.sf(2.5, 10)
        assert!(close(
            student_t_two_sided(2.5, 10.0),
            EXPECTED_T_TAIL,
            1e-10
        ));
    }

    #[test]
    fn delong_small_sample_by_hand() {
        // Positives 0.9, 0.8, 0.4; negatives 0.3, 0.5, 0.1.
        // V10: 0.9 -> 3/3, 0.8 -> 3/3, 0.4 -> 2/3; AUC = 8/9.
        // V01: 0.3 -> 1 - 0/3 = 1, 0.5 -> 1 - 1/3 = 2/3, 0.1 -> 1.
        // S10 = var(1, 1, 2/3) = 1/27; S01 = var(1, 2/3, 1) = 1/27;
        // variance = (1/27)/3 + (1/27)/3 = 2/81.
        let labels = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let scores = [0.9, 0.8, 0.4, 0.3, 0.5, 0.1];
        let estimate = delong_auc(&labels, &scores).unwrap();
        assert!(close(estimate.auc, 8.0 / 9.0, 1e-12), "{estimate:?}");
        assert!(close(estimate.variance, 2.0 / 81.0, 1e-12), "{estimate:?}");
    }

    #[test]
    fn delong_counts_ties_half() {
        let labels = [1.0, 1.0, 0.0, 0.0];
        let scores = [0.5, 0.5, 0.5, 0.5];
        let estimate = delong_auc(&labels, &scores).unwrap();
        assert_eq!(estimate.auc, 0.5);
    }

    #[test]
    fn delong_test_of_equal_aucs() {
        let a = AucEstimate {
            auc: 0.8,
            variance: 0.001,
        };
        let result = delong_independent(a, a);
        assert_eq!(result.p_value, 1.0);
    }

    // Reference values, computed with SciPy 1.17.1 (Python 3, double precision):
    //   from scipy import stats, special
    //   z = (0.03 - 0.05) / (0.04 * 0.96 * 0.002) ** 0.5
    //   2 * stats.norm.sf(abs(z))
    const EXPECTED_PROPORTION_P: f64 = 0.022_478_873_366_125_248;
    //   stats.ttest_ind(a, b, equal_var=False) -> statistic, pvalue, df
    const EXPECTED_WELCH_T: f64 = -1.564_022_936_475_490_3;
    const EXPECTED_WELCH_DF: f64 = 10.630_570_045_872_348;
    const EXPECTED_WELCH_P: f64 = 0.147_070_945_375_515_74;
    //   2 * stats.t.sf(2.5, 10)
    const EXPECTED_T_TAIL: f64 = 0.031_446_844_236_608_82;
    //   special.betainc(a, b, x)
    const EXPECTED_BETAINC: [(f64, f64, f64, f64); 4] = [
        (0.5, 0.5, 0.3, 0.369_010_119_565_545_36),
        (5.0, 0.5, 0.9, 0.316_642_915_020_012_2),
        (2.0, 3.0, 0.4, 0.524_8),
        (50.0, 0.5, 0.99, 0.317_304_397_874_197_3),
    ];
}
