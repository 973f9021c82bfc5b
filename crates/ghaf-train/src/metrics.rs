//! Evaluation metrics for binary classification and regression.
//!
//! Classification metrics take labels in {0, 1} and predicted probabilities of class 1. Every
//! function returns NaN when its input is empty or when the metric is undefined for it (for
//! example AUC with only one class present).

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to [EPS, 1 - EPS] before taking logarithms, so a confident wrong
/// prediction costs about 34.5 nats instead of infinity.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Area under the ROC curve. Tied scores count one half, which equals the Mann-Whitney U
/// statistic with average ranks.
pub fn auc(labels: &[f64], scores: &[f64]) -> f64 {
    assert_eq!(
        labels.len(),
        scores.len(),
        "labels and scores differ in length"
    );
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));

    let n_positive = labels.iter().filter(|&&y| y > 0.5).count() as f64;
    let n_negative = labels.len() as f64 - n_positive;
    if n_positive == 0.0 || n_negative == 0.0 {
        return f64::NAN;
    }

    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let positives_in_group = order[start..end]
            .iter()
            .filter(|&&i| labels[i] > 0.5)
            .count();
        positive_rank_sum += average_rank * positives_in_group as f64;
        start = end;
    }
    (positive_rank_sum - n_positive * (n_positive + 1.0) / 2.0) / (n_positive * n_negative)
}

/// Mean binary cross-entropy in nats.
pub fn log_loss(labels: &[f64], probabilities: &[f64]) -> f64 {
    assert_eq!(
        labels.len(),
        probabilities.len(),
        "labels and probabilities differ in length"
    );
    if labels.is_empty() {
        return f64::NAN;
    }
    let total: f64 = labels
        .iter()
        .zip(probabilities)
        .map(|(&y, &p)| {
            let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    total / labels.len() as f64
}

/// Share of rows whose predicted class (probability >= `threshold`) equals the label.
pub fn accuracy(labels: &[f64], probabilities: &[f64], threshold: f64) -> f64 {
    assert_eq!(
        labels.len(),
        probabilities.len(),
        "labels and probabilities differ in length"
    );
    if labels.is_empty() {
        return f64::NAN;
    }
    let correct = labels
        .iter()
        .zip(probabilities)
        .filter(|&(&y, &p)| (p >= threshold) == (y > 0.5))
        .count();
    correct as f64 / labels.len() as f64
}

/// F1 score of class 1 at `threshold`: 2·TP / (2·TP + FP + FN). Returns NaN when there are
/// no predicted and no actual positives.
pub fn f1(labels: &[f64], probabilities: &[f64], threshold: f64) -> f64 {
    assert_eq!(
        labels.len(),
        probabilities.len(),
        "labels and probabilities differ in length"
    );
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&y, &p) in labels.iter().zip(probabilities) {
        match (p >= threshold, y > 0.5) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denominator = 2 * tp + fp + fn_;
    if denominator == 0 {
        return f64::NAN;
    }
    (2 * tp) as f64 / denominator as f64
}

/// Root mean squared error.
pub fn rmse(labels: &[f64], predictions: &[f64]) -> f64 {
    assert_eq!(
        labels.len(),
        predictions.len(),
        "labels and predictions differ in length"
    );
    if labels.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = labels
        .iter()
        .zip(predictions)
        .map(|(y, p)| (y - p) * (y - p))
        .sum();
    (sum / labels.len() as f64).sqrt()
}

/// Mean absolute error.
pub fn mae(labels: &[f64], predictions: &[f64]) -> f64 {
    assert_eq!(
        labels.len(),
        predictions.len(),
        "labels and predictions differ in length"
    );
    if labels.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = labels
        .iter()
        .zip(predictions)
        .map(|(y, p)| (y - p).abs())
        .sum();
    sum / labels.len() as f64
}

/// One bin of a calibration table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the probability range (inclusive).
    pub lower: f64,
    /// Upper edge of the probability range (exclusive, except 1.0 in the last bin).
    pub upper: f64,
    /// Number of rows whose probability falls in the range.
    pub count: usize,
    /// Mean predicted probability of those rows; NaN for an empty bin.
    pub mean_predicted: f64,
    /// Share of those rows with label 1; NaN for an empty bin.
    pub observed_rate: f64,
}

/// Groups predictions into `n_bins` equal-width probability bins over [0, 1] and compares the
/// mean prediction with the observed positive rate in each.
pub fn calibration_table(
    labels: &[f64],
    probabilities: &[f64],
    n_bins: usize,
) -> Vec<CalibrationBin> {
    assert_eq!(
        labels.len(),
        probabilities.len(),
        "labels and probabilities differ in length"
    );
    assert!(n_bins > 0, "n_bins must be positive");
    let mut counts = vec![0usize; n_bins];
    let mut predicted_sums = vec![0.0; n_bins];
    let mut positive_counts = vec![0usize; n_bins];
    for (&y, &p) in labels.iter().zip(probabilities) {
        let bin = ((p.clamp(0.0, 1.0) * n_bins as f64) as usize).min(n_bins - 1);
        counts[bin] += 1;
        predicted_sums[bin] += p;
        if y > 0.5 {
            positive_counts[bin] += 1;
        }
    }
    (0..n_bins)
        .map(|bin| {
            let count = counts[bin];
            let (mean_predicted, observed_rate) = if count == 0 {
                (f64::NAN, f64::NAN)
            } else {
                (
                    predicted_sums[bin] / count as f64,
                    positive_counts[bin] as f64 / count as f64,
                )
            };
            CalibrationBin {
                lower: bin as f64 / n_bins as f64,
                upper: (bin + 1) as f64 / n_bins as f64,
                count,
                mean_predicted,
                observed_rate,
            }
        })
        .collect()
}

/// Classification metrics at the 0.5 threshold, with a 10-bin calibration table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub auc: f64,
    pub log_loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub calibration: Vec<CalibrationBin>,
}

impl ClassificationReport {
    /// Computes every classification metric.
    pub fn compute(labels: &[f64], probabilities: &[f64]) -> Self {
        Self {
            auc: auc(labels, probabilities),
            log_loss: log_loss(labels, probabilities),
            accuracy: accuracy(labels, probabilities, 0.5),
            f1: f1(labels, probabilities, 0.5),
            calibration: calibration_table(labels, probabilities, 10),
        }
    }
}

/// Regression metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub rmse: f64,
    pub mae: f64,
}

impl RegressionReport {
    /// Computes every regression metric.
    pub fn compute(labels: &[f64], predictions: &[f64]) -> Self {
        Self {
            rmse: rmse(labels, predictions),
            mae: mae(labels, predictions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// AUC by comparing every positive with every negative, ties counting one half.
    fn auc_by_pairs(labels: &[f64], scores: &[f64]) -> f64 {
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for i in 0..labels.len() {
            for j in 0..labels.len() {
                if labels[i] > 0.5 && labels[j] < 0.5 {
                    pairs += 1.0;
                    if scores[i] > scores[j] {
                        wins += 1.0;
                    } else if scores[i] == scores[j] {
                        wins += 0.5;
                    }
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_known_values() {
        // The scikit-learn documentation example for roc_auc_score: 0.75.
        assert_eq!(auc(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.4, 0.35, 0.8]), 0.75);
        assert_eq!(auc(&[0.0, 1.0], &[0.2, 0.9]), 1.0);
        assert_eq!(auc(&[0.0, 1.0], &[0.9, 0.2]), 0.0);
    }

    #[test]
    fn auc_ties_count_half() {
        assert_eq!(auc(&[0.0, 1.0, 0.0, 1.0], &[0.5, 0.5, 0.5, 0.5]), 0.5);
        assert_eq!(auc(&[0.0, 1.0, 1.0], &[0.3, 0.3, 0.9]), 0.75);
    }

    #[test]
    fn auc_one_class_is_nan() {
        assert!(auc(&[1.0, 1.0], &[0.1, 0.2]).is_nan());
    }

    #[test]
    fn log_loss_known_values() {
        let expected = -(0.9f64.ln() + 0.8f64.ln()) / 2.0;
        assert!((log_loss(&[1.0, 0.0], &[0.9, 0.2]) - expected).abs() < 1e-15);
        assert!((log_loss(&[1.0], &[0.5]) - std::f64::consts::LN_2).abs() < 1e-15);
        assert!(log_loss(&[1.0], &[0.0]).is_finite());
    }

    #[test]
    fn accuracy_and_f1_known_values() {
        let labels = [1.0, 1.0, 0.0, 0.0, 1.0];
        let probabilities = [0.9, 0.4, 0.6, 0.1, 0.5];
        // Predicted: 1, 0, 1, 0, 1. TP 2, FP 1, FN 1, TN 1.
        assert_eq!(accuracy(&labels, &probabilities, 0.5), 0.6);
        assert_eq!(f1(&labels, &probabilities, 0.5), 4.0 / 6.0);
        assert!(f1(&[0.0], &[0.1], 0.5).is_nan());
    }

    #[test]
    fn rmse_and_mae_known_values() {
        assert_eq!(
            rmse(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]),
            (4.0f64 / 3.0).sqrt()
        );
        assert_eq!(mae(&[1.0, 2.0, 3.0], &[2.0, 2.0, 5.0]), 1.0);
        assert!(rmse(&[], &[]).is_nan());
    }

    #[test]
    fn calibration_table_bins() {
        let labels = [0.0, 1.0, 1.0, 0.0, 1.0];
        let probabilities = [0.05, 0.15, 0.95, 1.0, 0.55];
        let table = calibration_table(&labels, &probabilities, 2);
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].count, 2);
        assert_eq!(table[0].observed_rate, 0.5);
        assert!((table[0].mean_predicted - 0.1).abs() < 1e-12);
        assert_eq!(table[1].count, 3);
        assert!((table[1].observed_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(table[1].upper, 1.0);
        let empty = calibration_table(&[], &[], 3);
        assert!(
            empty
                .iter()
                .all(|bin| bin.count == 0 && bin.observed_rate.is_nan())
        );
    }

    proptest! {
        #[test]
        fn auc_matches_pairwise_count(
            rows in proptest::collection::vec((0u8..2, 0u8..5), 2..40)
        ) {
            let labels: Vec<f64> = rows.iter().map(|r| f64::from(r.0)).collect();
            let scores: Vec<f64> = rows.iter().map(|r| f64::from(r.1)).collect();
            let has_both = labels.contains(&0.0) && labels.contains(&1.0);
            prop_assume!(has_both);
            prop_assert!((auc(&labels, &scores) - auc_by_pairs(&labels, &scores)).abs() < 1e-12);
        }

        #[test]
        fn auc_is_invariant_under_monotone_maps(
            rows in proptest::collection::vec((0u8..2, -100i32..100), 2..40)
        ) {
            let labels: Vec<f64> = rows.iter().map(|r| f64::from(r.0)).collect();
            let scores: Vec<f64> = rows.iter().map(|r| f64::from(r.1)).collect();
            prop_assume!(labels.contains(&0.0) && labels.contains(&1.0));
            let mapped: Vec<f64> = scores.iter().map(|s| (s / 10.0).exp()).collect();
            prop_assert!((auc(&labels, &scores) - auc(&labels, &mapped)).abs() < 1e-12);
        }
    }
}
