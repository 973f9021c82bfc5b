//! The A/B analysis of an endpoint's variants: requests, errors, latency and, once labels
//! arrive, a quality metric per variant, with significance tests between them.
//!
//! The best variant by point estimate is tested against every other one: the two-proportion
//! z-test for the error rate and accuracy, DeLong's test for AUC, Welch's t-test on squared
//! errors (RMSE) or absolute errors (MAE). A metric has a winner only when every variant has
//! `min_samples` (requests for the error rate, labelled rows for quality) and every test
//! against the best variant has p < 1 − confidence.

use std::collections::BTreeMap;

use ghaf_serving::policy::VariantStats;
use serde::{Deserialize, Serialize};

use crate::canary::higher_is_better;
use crate::measure;
use crate::stats::{self, TestResult};

/// Threshold of the positive class for accuracy, the same as the monitoring reports use.
pub const CLASSIFICATION_THRESHOLD: f64 = ghaf_monitoring::report::CLASSIFICATION_THRESHOLD;

/// One variant's counters and labelled predictions over the analysed window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantSample {
    pub variant: String,
    pub model: String,
    pub version: i64,
    pub weight: u32,
    /// Request counters over the window.
    pub stats: VariantStats,
    /// Predictions logged in the window.
    pub logged: u64,
    /// (label, prediction) of each labelled prediction row.
    pub pairs: Vec<(f64, f64)>,
}

/// Settings of an analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisSettings {
    /// `accuracy`, `auc`, `rmse` or `mae`; without it only the error rate is compared.
    pub metric: Option<String>,
    pub min_samples: u64,
    pub confidence: f64,
}

/// Summary of one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub variant: String,
    pub model: String,
    pub version: i64,
    pub weight: u32,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Predictions logged in the window.
    pub logged: u64,
    /// Logged predictions that have a label.
    pub labelled: u64,
    /// The quality metric over the labelled predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<f64>,
}

/// A significance test of the best variant against another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// `error_rate` or the quality metric.
    pub metric: String,
    pub best: String,
    pub best_value: f64,
    pub other: String,
    pub other_value: f64,
    #[serde(flatten)]
    pub result: TestResult,
    /// Whether p < 1 − confidence.
    pub significant: bool,
}

/// The outcome of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricVerdict {
    pub metric: String,
    /// The variant that is significantly better than every other one.
    pub winner: Option<String>,
    /// Largest p-value of the tests against the best variant.
    pub p_value: Option<f64>,
    pub comparisons: Vec<Comparison>,
    /// More samples each variant needs before a winner can be called.
    pub samples_needed: BTreeMap<String, u64>,
    /// The verdict in words.
    pub message: String,
}

/// The A/B analysis of an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub confidence: f64,
    pub min_samples: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub variants: Vec<VariantSummary>,
    /// Error rate first, then the quality metric when one is set.
    pub verdicts: Vec<MetricVerdict>,
    /// Winner of the quality metric when one is set, else of the error rate.
    pub winner: Option<String>,
}

/// Computes a quality metric over (label, prediction) pairs; `None` when it is undefined
/// (no pairs, or a single class for AUC).
pub fn metric_value(metric: &str, pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let labels: Vec<f64> = pairs.iter().map(|(label, _)| *label).collect();
    let predictions: Vec<f64> = pairs.iter().map(|(_, prediction)| *prediction).collect();
    let value = match metric {
        "accuracy" => {
            ghaf_train::metrics::accuracy(&labels, &predictions, CLASSIFICATION_THRESHOLD)
        }
        "auc" => ghaf_train::metrics::auc(&labels, &predictions),
        "f1" => ghaf_train::metrics::f1(&labels, &predictions, CLASSIFICATION_THRESHOLD),
        "rmse" => ghaf_train::metrics::rmse(&labels, &predictions),
        "mae" => ghaf_train::metrics::mae(&labels, &predictions),
        _ => return None,
    };
    value.is_finite().then_some(value)
}

fn correct(pairs: &[(f64, f64)]) -> u64 {
    pairs
        .iter()
        .filter(|(label, prediction)| {
            (*prediction >= CLASSIFICATION_THRESHOLD) == (*label >= CLASSIFICATION_THRESHOLD)
        })
        .count() as u64
}

fn errors_of(metric: &str, pairs: &[(f64, f64)]) -> Vec<f64> {
    pairs
        .iter()
        .map(|(label, prediction)| {
            let error = prediction - label;
            if metric == "rmse" {
                error * error
            } else {
                error.abs()
            }
        })
        .collect()
}

/// Runs the test of `metric` between two variants' samples.
fn test_metric(metric: &str, best: &VariantSample, other: &VariantSample) -> Option<TestResult> {
    match metric {
        "error_rate" => stats::two_proportion_z(
            best.stats.errors,
            best.stats.requests,
            other.stats.errors,
            other.stats.requests,
        ),
        "accuracy" => stats::two_proportion_z(
            correct(&best.pairs),
            best.pairs.len() as u64,
            correct(&other.pairs),
            other.pairs.len() as u64,
        ),
        "auc" => {
            let estimate = |pairs: &[(f64, f64)]| {
                let labels: Vec<f64> = pairs.iter().map(|(label, _)| *label).collect();
                let scores: Vec<f64> = pairs.iter().map(|(_, score)| *score).collect();
                stats::delong_auc(&labels, &scores)
            };
            Some(stats::delong_independent(
                estimate(&best.pairs)?,
                estimate(&other.pairs)?,
            ))
        }
        "rmse" | "mae" => stats::welch_t(
            &errors_of(metric, &best.pairs),
            &errors_of(metric, &other.pairs),
        ),
        _ => None,
    }
}

/// Returns whether [`test_metric`] has a test for `metric`.
fn has_significance_test(metric: &str) -> bool {
    matches!(metric, "error_rate" | "accuracy" | "auc" | "rmse" | "mae")
}

/// Returns the index and value of the best defined value.
fn best_of(values: &[Option<f64>], higher: bool) -> Option<(usize, f64)> {
    values
        .iter()
        .enumerate()
        .filter_map(|(index, value)| value.map(|value| (index, value)))
        .reduce(|best, candidate| {
            let better = if higher {
                candidate.1 > best.1
            } else {
                candidate.1 < best.1
            };
            if better { candidate } else { best }
        })
}

/// Sets the winner when every test is significant, and returns the verdict in words.
fn verdict_message(
    result: &mut MetricVerdict,
    best_name: String,
    unit: &str,
    tested_all: bool,
    settings: &AnalysisSettings,
) -> String {
    let metric = result.metric.clone();
    let alpha = 1.0 - settings.confidence;
    if !result.samples_needed.is_empty() {
        let needs: Vec<String> = result
            .samples_needed
            .iter()
            .map(|(variant, more)| format!("{variant} needs {more} more {unit}"))
            .collect();
        return format!(
            "no winner yet: every variant needs {} {unit}; {}",
            settings.min_samples,
            needs.join(", ")
        );
    }
    if !has_significance_test(&metric) {
        return format!(
            "no winner: {metric} has no significance test; use accuracy, auc, rmse or mae to \
             call a winner"
        );
    }
    if !tested_all {
        return format!(
            "no winner: {metric} could not be tested for every variant (too few rows of a class \
             or fewer than two rows)"
        );
    }
    if result
        .comparisons
        .iter()
        .all(|comparison| comparison.significant)
    {
        let message = format!(
            "{best_name} wins on {metric} at {:.0}% confidence (largest p = {:.4})",
            settings.confidence * 100.0,
            result.p_value.unwrap_or(0.0)
        );
        result.winner = Some(best_name);
        return message;
    }
    format!(
        "no significant difference in {metric} at {:.0}% confidence (largest p = {:.4} ≥ \
         {alpha:.4}); the difference may be smaller than these samples can detect, so keep \
         the test running",
        settings.confidence * 100.0,
        result.p_value.unwrap_or(1.0)
    )
}

fn verdict(
    metric: &str,
    samples: &[VariantSample],
    values: &[Option<f64>],
    counts: &[u64],
    settings: &AnalysisSettings,
) -> MetricVerdict {
    let mut result = MetricVerdict {
        metric: metric.to_owned(),
        winner: None,
        p_value: None,
        comparisons: Vec::new(),
        samples_needed: BTreeMap::new(),
        message: String::new(),
    };
    let unit = if metric == "error_rate" {
        "requests"
    } else {
        "labelled rows"
    };
    if samples.len() < 2 {
        result.message =
            "one variant serves the endpoint; an A/B analysis needs two or more".to_owned();
        return result;
    }
    for (sample, &count) in samples.iter().zip(counts) {
        if count < settings.min_samples {
            result
                .samples_needed
                .insert(sample.variant.clone(), settings.min_samples - count);
        }
    }
    let higher = metric != "error_rate" && higher_is_better(metric).unwrap_or(true);
    let Some((best_index, best_value)) = best_of(values, higher) else {
        result.message = format!("no variant has {unit} with a {metric} value yet");
        return result;
    };
    let alpha = 1.0 - settings.confidence;
    let mut tested_all = true;
    for (index, other) in samples.iter().enumerate() {
        if index == best_index {
            continue;
        }
        let (Some(other_value), Some(test)) = (
            values[index],
            test_metric(metric, &samples[best_index], other),
        ) else {
            tested_all = false;
            continue;
        };
        result.comparisons.push(Comparison {
            metric: metric.to_owned(),
            best: samples[best_index].variant.clone(),
            best_value,
            other: other.variant.clone(),
            other_value,
            significant: test.p_value < alpha,
            result: test,
        });
    }
    result.p_value = result
        .comparisons
        .iter()
        .map(|comparison| comparison.result.p_value)
        .reduce(f64::max);
    let best_name = samples[best_index].variant.clone();
    result.message = verdict_message(&mut result, best_name, unit, tested_all, settings);
    result
}

/// Analyses the variants' samples.
pub fn analyse(samples: &[VariantSample], settings: &AnalysisSettings) -> Analysis {
    let variants: Vec<VariantSummary> = samples
        .iter()
        .map(|sample| VariantSummary {
            variant: sample.variant.clone(),
            model: sample.model.clone(),
            version: sample.version,
            weight: sample.weight,
            requests: sample.stats.requests,
            errors: sample.stats.errors,
            error_rate: measure::error_rate(&sample.stats),
            p50_ms: measure::latency_quantile_ms(&sample.stats, 0.5),
            p99_ms: measure::latency_quantile_ms(&sample.stats, 0.99),
            logged: sample.logged,
            labelled: sample.pairs.len() as u64,
            metric_value: settings
                .metric
                .as_deref()
                .and_then(|metric| metric_value(metric, &sample.pairs)),
        })
        .collect();

    let mut verdicts = Vec::new();
    let error_rates: Vec<Option<f64>> = variants.iter().map(|v| v.error_rate).collect();
    let requests: Vec<u64> = variants.iter().map(|v| v.requests).collect();
    verdicts.push(verdict(
        "error_rate",
        samples,
        &error_rates,
        &requests,
        settings,
    ));
    if let Some(metric) = &settings.metric {
        let values: Vec<Option<f64>> = variants.iter().map(|v| v.metric_value).collect();
        let labelled: Vec<u64> = variants.iter().map(|v| v.labelled).collect();
        verdicts.push(verdict(metric, samples, &values, &labelled, settings));
    }
    let winner = verdicts.last().and_then(|verdict| verdict.winner.clone());
    Analysis {
        confidence: settings.confidence,
        min_samples: settings.min_samples,
        metric: settings.metric.clone(),
        variants,
        verdicts,
        winner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(variant: &str, requests: u64, errors: u64, pairs: Vec<(f64, f64)>) -> VariantSample {
        VariantSample {
            variant: variant.into(),
            model: "m".into(),
            version: 1,
            weight: 50,
            stats: VariantStats {
                variant: variant.into(),
                requests,
                errors,
                ..VariantStats::default()
            },
            logged: requests,
            pairs,
        }
    }

    fn settings(metric: Option<&str>, min_samples: u64) -> AnalysisSettings {
        AnalysisSettings {
            metric: metric.map(str::to_owned),
            min_samples,
            confidence: 0.95,
        }
    }

    #[test]
    fn error_rate_winner_when_significant() {
        let samples = [
            sample("a", 5000, 50, vec![]),
            sample("b", 5000, 100, vec![]),
        ];
        let analysis = analyse(&samples, &settings(None, 1000));
        assert_eq!(analysis.winner.as_deref(), Some("a"));
    }

    #[test]
    fn no_winner_below_min_samples() {
        let samples = [sample("a", 500, 0, vec![]), sample("b", 800, 100, vec![])];
        let analysis = analyse(&samples, &settings(None, 1000));
        assert_eq!(analysis.winner, None);
        assert_eq!(analysis.verdicts[0].samples_needed.get("a"), Some(&500));
        assert_eq!(analysis.verdicts[0].samples_needed.get("b"), Some(&200));
    }

    #[test]
    fn no_winner_without_significance() {
        let samples = [sample("a", 2000, 20, vec![]), sample("b", 2000, 22, vec![])];
        let analysis = analyse(&samples, &settings(None, 1000));
        assert_eq!(analysis.winner, None);
        assert!(analysis.verdicts[0].p_value.unwrap() > 0.05);
    }

    #[test]
    fn accuracy_winner_from_labels() {
        // a: 90% correct, b: 60% correct, 300 labelled rows each.
        let pairs = |correct: usize| -> Vec<(f64, f64)> {
            (0..300)
                .map(|i| if i < correct { (1.0, 0.9) } else { (1.0, 0.1) })
                .collect()
        };
        let samples = [
            sample("a", 300, 0, pairs(270)),
            sample("b", 300, 0, pairs(180)),
        ];
        let analysis = analyse(&samples, &settings(Some("accuracy"), 200));
        assert_eq!(analysis.winner.as_deref(), Some("a"));
        assert_eq!(analysis.variants[0].metric_value, Some(0.9));
    }

    #[test]
    fn rmse_prefers_smaller_errors() {
        let pairs = |spread: f64| -> Vec<(f64, f64)> {
            (0..400)
                .map(|i| {
                    let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                    (10.0, 10.0 + sign * spread * (1.0 + (i % 7) as f64 / 7.0))
                })
                .collect()
        };
        let samples = [
            sample("a", 400, 0, pairs(3.0)),
            sample("b", 400, 0, pairs(1.0)),
        ];
        let analysis = analyse(&samples, &settings(Some("rmse"), 100));
        assert_eq!(analysis.winner.as_deref(), Some("b"));
        assert_eq!(analysis.verdicts[1].comparisons[0].result.test, "welch_t");
    }

    #[test]
    fn f1_reports_missing_test() {
        let pairs: Vec<(f64, f64)> = (0..300).map(|i| (f64::from(i % 2), 0.9)).collect();
        let samples = [
            sample("a", 300, 0, pairs.clone()),
            sample("b", 300, 0, pairs),
        ];
        let analysis = analyse(&samples, &settings(Some("f1"), 100));
        let message = &analysis.verdicts[1].message;
        assert!(message.contains("no significance test"), "{message}");
    }

    #[test]
    fn single_variant_has_no_winner() {
        let samples = [sample("a", 5000, 50, vec![])];
        let analysis = analyse(&samples, &settings(None, 10));
        assert_eq!(analysis.winner, None);
    }
}
