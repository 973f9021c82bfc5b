//! Judging an evaluation report against an alert rule's condition.

use std::collections::BTreeSet;

use serde_json::json;

use crate::report::{FeatureDrift, Report};
use crate::spec::{Condition, DriftStatistic};

/// Subject of rules that judge the whole window.
pub const DATASET_SUBJECT: &str = "dataset";

/// The outcome of judging one report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    /// Subjects whose condition holds, with the evidence.
    pub firing: Vec<(String, serde_json::Value)>,
    /// Every subject the report had numbers for; a firing alert of a judged subject that is
    /// not in `firing` resolves.
    pub judged: BTreeSet<String>,
}

impl Judgement {
    fn judge(&mut self, subject: String, holds: bool, evidence: serde_json::Value) {
        self.judged.insert(subject.clone());
        if holds {
            self.firing.push((subject, evidence));
        }
    }
}

fn crosses(value: f64, above: Option<f64>, below: Option<f64>) -> bool {
    match (above, below) {
        (Some(threshold), _) => value > threshold,
        (_, Some(threshold)) => value < threshold,
        (None, None) => false,
    }
}

fn statistic_value(drift: &FeatureDrift, statistic: DriftStatistic) -> Option<f64> {
    match statistic {
        DriftStatistic::Drifted => Some(if drift.drifted { 1.0 } else { 0.0 }),
        DriftStatistic::Score => Some(drift.score),
        DriftStatistic::PValue => drift.p_value,
        DriftStatistic::Psi => drift.psi,
        DriftStatistic::JensenShannon => drift.jensen_shannon,
        DriftStatistic::WassersteinNormed => drift.wasserstein_normed,
    }
}

/// Judges a report against a condition. `now` is the evaluation time in Unix milliseconds,
/// for freshness.
pub fn judge(condition: &Condition, report: &Report) -> Judgement {
    let mut judgement = Judgement::default();
    let window = json!({
        "start": report.window.start,
        "end": report.window.end,
        "rows": report.window.rows,
        "segments": report.window.segments,
    });
    match condition {
        Condition::DriftShare { at_least } => {
            if let Some(drift) = &report.drift
                && drift.tested > 0
            {
                let drifted: Vec<&str> = drift
                    .features
                    .iter()
                    .filter(|feature| feature.drifted)
                    .map(|feature| feature.feature.as_str())
                    .collect();
                judgement.judge(
                    DATASET_SUBJECT.to_owned(),
                    drift.share >= *at_least,
                    json!({
                        "share": drift.share,
                        "at_least": at_least,
                        "drifted": drift.drifted,
                        "tested": drift.tested,
                        "drifted_features": drifted,
                        "mode": drift.mode,
                        "window": window,
                    }),
                );
            }
        }
        Condition::FeatureDrift {
            feature,
            statistic,
            above,
            below,
        } => {
            let mut candidates: Vec<&FeatureDrift> = Vec::new();
            if let Some(drift) = &report.drift {
                candidates.extend(drift.features.iter());
            }
            if let Some(prediction) = &report.prediction_drift {
                candidates.push(prediction);
            }
            for drift in candidates {
                if feature != "*" && drift.feature != *feature {
                    continue;
                }
                let Some(value) = statistic_value(drift, *statistic) else {
                    continue;
                };
                let holds = match statistic {
                    DriftStatistic::Drifted => drift.drifted,
                    _ => crosses(value, *above, *below),
                };
                judgement.judge(
                    drift.feature.clone(),
                    holds,
                    json!({
                        "feature": drift.feature,
                        "statistic": statistic,
                        "value": value,
                        "above": above,
                        "below": below,
                        "method": drift.method,
                        "score": drift.score,
                        "p_value": drift.p_value,
                        "drifted": drift.drifted,
                        "reference_count": drift.reference_count,
                        "current_count": drift.current_count,
                        "window": window,
                    }),
                );
            }
        }
        Condition::Performance {
            metric,
            above,
            below,
            min_labels,
        } => {
            if let Some(performance) = &report.performance {
                for group in &performance.groups {
                    if group.labelled < *min_labels {
                        continue;
                    }
                    let Some(value) = group.metric(*metric) else {
                        continue;
                    };
                    judgement.judge(
                        group.subject(),
                        crosses(value, *above, *below),
                        json!({
                            "metric": metric,
                            "value": value,
                            "above": above,
                            "below": below,
                            "variant": group.variant,
                            "model_version": group.model_version,
                            "predictions": group.predictions,
                            "labelled": group.labelled,
                            "label_coverage": group.label_coverage,
                            "window": window,
                        }),
                    );
                }
            }
        }
        Condition::NullShare { feature, above } => {
            for missing in &report.missing {
                if feature != "*" && missing.feature != *feature {
                    continue;
                }
                if missing.rows == 0 {
                    continue;
                }
                judgement.judge(
                    missing.feature.clone(),
                    missing.null_share > *above,
                    json!({
                        "feature": missing.feature,
                        "null_share": missing.null_share,
                        "nulls": missing.nulls,
                        "rows": missing.rows,
                        "above": above,
                        "window": window,
                    }),
                );
            }
        }
        Condition::Freshness { max_age_seconds } => {
            let age = report.freshness.age_seconds;
            let holds = age.is_none_or(|age| age > *max_age_seconds as f64);
            judgement.judge(
                "freshness".to_owned(),
                holds,
                json!({
                    "last_row_at": report.freshness.last_row_at,
                    "age_seconds": age,
                    "max_age_seconds": max_age_seconds,
                    "window": window,
                }),
            );
        }
    }
    judgement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DriftSummary, Freshness, MissingValues, WindowInfo};
    use crate::spec::DriftMode;
    use ghaf_monitor::ColumnKind;
    use ghaf_monitor::drift::DriftMethod;

    fn report() -> Report {
        let feature = |name: &str, drifted: bool, score: f64| FeatureDrift {
            feature: name.to_owned(),
            kind: ColumnKind::Numeric,
            method: DriftMethod::Ks,
            score,
            threshold: 0.05,
            p_value: Some(score),
            psi: Some(0.3),
            jensen_shannon: Some(0.2),
            wasserstein_normed: Some(0.4),
            reference_count: 100,
            current_count: 100,
            drifted,
        };
        Report {
            evaluated_at: "2026-01-01T00:00:00Z".into(),
            dataset: "d".into(),
            reference: "r@1".into(),
            window: WindowInfo {
                start: None,
                end: "2026-01-01T00:00:00Z".into(),
                rows: 100,
                segments: vec![1],
            },
            drift: Some(DriftSummary {
                mode: DriftMode::Default,
                tested: 2,
                drifted: 1,
                share: 0.5,
                drift_share: 0.5,
                dataset_drifted: true,
                features: vec![feature("a", true, 0.001), feature("b", false, 0.6)],
                skipped: Vec::new(),
            }),
            prediction_drift: None,
            performance: None,
            missing: vec![MissingValues {
                feature: "a".into(),
                rows: 100,
                nulls: 20,
                null_share: 0.2,
            }],
            freshness: Freshness {
                last_row_at: None,
                age_seconds: Some(120.0),
            },
        }
    }

    #[test]
    fn drift_share_fires_at_threshold() {
        let judgement = judge(&Condition::DriftShare { at_least: 0.5 }, &report());
        assert_eq!(judgement.firing.len(), 1);
        assert_eq!(judgement.firing[0].1["share"], 0.5);
        let quiet = judge(&Condition::DriftShare { at_least: 0.6 }, &report());
        assert!(quiet.firing.is_empty());
        assert!(quiet.judged.contains(DATASET_SUBJECT));
    }

    #[test]
    fn feature_drift_per_subject() {
        let every = judge(
            &Condition::FeatureDrift {
                feature: "*".into(),
                statistic: DriftStatistic::Drifted,
                above: None,
                below: None,
            },
            &report(),
        );
        assert_eq!(every.firing.len(), 1);
        assert_eq!(every.firing[0].0, "a");
        assert_eq!(every.judged.len(), 2);
        let p_value = judge(
            &Condition::FeatureDrift {
                feature: "b".into(),
                statistic: DriftStatistic::PValue,
                above: None,
                below: Some(0.7),
            },
            &report(),
        );
        assert_eq!(p_value.firing.len(), 1);
    }

    #[test]
    fn null_share_and_freshness() {
        let nulls = judge(
            &Condition::NullShare {
                feature: "*".into(),
                above: 0.1,
            },
            &report(),
        );
        assert_eq!(nulls.firing.len(), 1);
        let fresh = judge(
            &Condition::Freshness {
                max_age_seconds: 300,
            },
            &report(),
        );
        assert!(fresh.firing.is_empty());
        let stale = judge(
            &Condition::Freshness {
                max_age_seconds: 60,
            },
            &report(),
        );
        assert_eq!(stale.firing.len(), 1);
    }
}
