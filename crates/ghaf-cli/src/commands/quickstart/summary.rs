//! The quickstart's closing summary: model quality per version and month from the scores the
//! endpoint returned and their labels, the drift that fired the alert, the retraining and the canary
//! decisions, printed and optionally written as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::flights::{Flight, auc, month_name};
use super::replay::Replayed;
use super::thousands;

/// AUC of one model version on one month of replayed flights.
pub struct MonthQuality {
    pub version: i64,
    pub month: u32,
    pub rows: usize,
    pub auc: Option<f64>,
}

/// Computes the AUC of each version on each month from the scores the endpoint returned and
/// the labels posted for them.
pub fn quality(flights: &[Flight], replayed: &Replayed) -> Vec<MonthQuality> {
    let mut groups: BTreeMap<(i64, u32), (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    for scored in &replayed.scored {
        let flight = &flights[scored.flight];
        let Some(delayed) = flight.delayed else {
            continue;
        };
        let group = groups.entry((scored.version, flight.month)).or_default();
        group.0.push(scored.score);
        group.1.push(delayed);
    }
    groups
        .into_iter()
        .map(|((version, month), (scores, labels))| MonthQuality {
            version,
            month,
            rows: scores.len(),
            auc: auc(&scores, &labels),
        })
        .collect()
}

/// Prints one line per version with its AUC per month.
pub fn print_quality(quality: &[MonthQuality]) {
    let mut by_version: BTreeMap<i64, Vec<&MonthQuality>> = BTreeMap::new();
    for entry in quality {
        by_version.entry(entry.version).or_default().push(entry);
    }
    for (version, months) in by_version {
        let cells: Vec<String> = months
            .iter()
            .map(|m| {
                format!(
                    "{} {} ({} rows)",
                    month_name(m.month),
                    m.auc
                        .map_or_else(|| "n/a".to_owned(), |auc| format!("{auc:.3}")),
                    thousands(m.rows as u64)
                )
            })
            .collect();
        println!("       version {version}: {}", cells.join(", "));
    }
}

/// Returns the quality table as JSON.
pub fn quality_json(quality: &[MonthQuality]) -> Value {
    Value::Array(
        quality
            .iter()
            .map(|m| {
                json!({"version": m.version, "month": m.month, "labelled_rows": m.rows, "auc": m.auc})
            })
            .collect(),
    )
}

/// Returns a history entry as one line: time, decision, reason, traffic split and the
/// measurements the decision rests on.
pub fn describe_decision(entry: &Value) -> String {
    let action = entry["action"].as_str().unwrap_or("?");
    let decision = action.strip_prefix("endpoints.rollout.").unwrap_or(action);
    let details = &entry["details"];
    let mut parts = Vec::new();
    if let Some(reason) = details["rollout"]["reason"].as_str() {
        parts.push(reason.to_owned());
    }
    let weights: Vec<String> = details["weights"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| format!("v{} {}%", w["version"], w["weight"]))
        .collect();
    if !weights.is_empty() {
        parts.push(format!("traffic {}", weights.join(" / ")));
    }
    let measurements = &details["measurements"];
    if let Some(requests) = measurements["candidate"]["requests"].as_u64() {
        parts.push(format!(
            "candidate {requests} requests, error rate {}",
            measurements["candidate"]["error_rate"]
        ));
    }
    let quality = &measurements["quality"];
    if let (Some(candidate), Some(stable)) =
        (quality["candidate"].as_f64(), quality["stable"].as_f64())
    {
        parts.push(format!(
            "{} {candidate:.3} on {} labels vs {stable:.3} on {} labels",
            quality["metric"].as_str().unwrap_or("quality"),
            quality["candidate_labels"],
            quality["stable_labels"]
        ));
    }
    format!(
        "{} {decision}{}",
        entry["time"].as_str().unwrap_or(""),
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join("; "))
        }
    )
}
