//! The quality gate: a candidate model version gets an alias such as `champion` only if it
//! beats the version holding the alias, on the same holdout, by a configured margin. The
//! improvement must be above 0 and at least the margin.

use serde::{Deserialize, Serialize};

use crate::QualityGate;

/// Whether larger or smaller values of a metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

impl Direction {
    /// Returns the direction of a gate metric; `None` for a metric the gate does not know.
    pub fn of(metric: &str) -> Option<Direction> {
        match metric {
            "auc" | "accuracy" | "f1" => Some(Direction::HigherIsBetter),
            "log_loss" | "rmse" | "mae" => Some(Direction::LowerIsBetter),
            _ => None,
        }
    }
}

/// The gate's decision, recorded on the candidate version and in the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub metric: String,
    pub margin: f64,
    pub candidate_version: i64,
    pub candidate_score: f64,
    /// Version holding the alias when the gate ran; `None` when no version held it.
    pub champion_version: Option<i64>,
    /// The champion's score on the candidate's holdout.
    pub champion_score: Option<f64>,
    pub promoted: bool,
    /// Why the candidate was or was not promoted.
    pub reason: String,
}

/// Decides whether the candidate beats the champion by the gate's margin. Without a
/// champion the candidate is promoted.
pub fn decide(
    gate: &QualityGate,
    candidate_version: i64,
    candidate_score: f64,
    champion: Option<(i64, f64)>,
) -> GateDecision {
    let direction = Direction::of(&gate.metric).unwrap_or(Direction::HigherIsBetter);
    let (promoted, reason) = match champion {
        None => (true, "no version holds the alias yet".to_owned()),
        Some((_, champion_score)) => {
            let improvement = match direction {
                Direction::HigherIsBetter => candidate_score - champion_score,
                Direction::LowerIsBetter => champion_score - candidate_score,
            };
            if !candidate_score.is_finite() {
                (
                    false,
                    format!("the candidate's {} is not finite", gate.metric),
                )
            } else if improvement > 0.0 && improvement >= gate.margin {
                (
                    true,
                    format!(
                        "{} improves by {improvement:.6}, at least the margin {}",
                        gate.metric, gate.margin
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "{} improves by {improvement:.6}; the gate needs more than 0 and at \
                         least {}",
                        gate.metric, gate.margin
                    ),
                )
            }
        }
    };
    GateDecision {
        metric: gate.metric.clone(),
        margin: gate.margin,
        candidate_version,
        candidate_score,
        champion_version: champion.map(|(version, _)| version),
        champion_score: champion.map(|(_, score)| score),
        promoted,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(metric: &str, margin: f64) -> QualityGate {
        QualityGate {
            metric: metric.to_owned(),
            margin,
        }
    }

    #[test]
    fn first_candidate_is_promoted() {
        let decision = decide(&gate("auc", 0.01), 1, 0.7, None);
        assert!(decision.promoted);
        assert_eq!(decision.champion_version, None);
    }

    #[test]
    fn higher_is_better_needs_margin() {
        assert!(decide(&gate("auc", 0.01), 2, 0.72, Some((1, 0.70))).promoted);
        assert!(!decide(&gate("auc", 0.01), 2, 0.705, Some((1, 0.70))).promoted);
        assert!(!decide(&gate("auc", 0.0), 2, 0.70, Some((1, 0.70))).promoted);
    }

    #[test]
    fn lower_is_better_needs_margin() {
        assert!(decide(&gate("rmse", 0.5), 2, 9.0, Some((1, 10.0))).promoted);
        assert!(!decide(&gate("rmse", 0.5), 2, 9.8, Some((1, 10.0))).promoted);
        assert!(!decide(&gate("log_loss", 0.0), 2, 0.6, Some((1, 0.5))).promoted);
    }
}
