//! Quickstart stage: drift of the model's numeric features and its score between January to
//! June and each later month, in Ghaf's default mode and in the Evidently-compatible mode.

use ghaf_monitor::Column;
use ghaf_monitor::drift::evidently::{self, EvidentlyOptions};
use ghaf_monitor::drift::ghaf::{GhafOptions, Reference};
use ghaf_monitor::drift::{ColumnDrift, DatasetDrift};
use ghaf_train::ColumnData;

use super::model::{Flights, LAST_TRAINING_MONTH, NUMERIC_FEATURES, month_name, rows_where};

/// Name of the prediction score among the drift columns.
const SCORE: &str = "score";

/// Drift of one month against the reference period, in both modes.
pub struct MonthDrift {
    pub month: i64,
    pub default_mode: DatasetDrift,
    pub evidently_mode: DatasetDrift,
}

/// Computes drift for every month after the training period. `scores` has one prediction
/// per row of `flights.dataset`.
pub fn monthly_drift(flights: &Flights, scores: &[f64]) -> anyhow::Result<Vec<MonthDrift>> {
    let reference_rows = rows_where(&flights.months, |m| m <= LAST_TRAINING_MONTH);
    let reference = drift_columns(flights, scores, &reference_rows);
    // The default mode fits the reference once: sorted values and frozen bins.
    let fitted = Reference::fit(&reference, GhafOptions::default())?;
    let mut months = Vec::new();
    for month in (LAST_TRAINING_MONTH + 1)..=12 {
        let rows = rows_where(&flights.months, |m| m == month);
        if rows.is_empty() {
            continue;
        }
        let current = drift_columns(flights, scores, &rows);
        months.push(MonthDrift {
            month,
            default_mode: fitted.dataset_drift(&current)?,
            evidently_mode: evidently::dataset_drift(
                &reference,
                &current,
                &EvidentlyOptions::default(),
            )?,
        });
    }
    Ok(months)
}

fn drift_columns(flights: &Flights, scores: &[f64], rows: &[usize]) -> Vec<Column> {
    let mut columns: Vec<Column> = flights
        .dataset
        .columns()
        .iter()
        .filter(|column| NUMERIC_FEATURES.contains(&column.name.as_str()))
        .filter_map(|column| match &column.data {
            ColumnData::F64(values) => Some(Column::numeric(
                &column.name,
                rows.iter().map(|&row| values[row]).collect(),
            )),
            _ => None,
        })
        .collect();
    columns.push(Column::numeric(
        SCORE,
        rows.iter().map(|&row| scores[row]).collect(),
    ));
    columns
}

/// Effect size used to rank columns: the normalised Wasserstein distance for KS-tested
/// columns and the Jensen–Shannon distance for the others.
fn default_effect(column: &ColumnDrift) -> f64 {
    column
        .distances
        .map_or(0.0, |d| d.wasserstein_normed.unwrap_or(d.jensen_shannon))
}

fn describe_default(column: &ColumnDrift) -> String {
    let effect = match column.distances {
        Some(d) if d.wasserstein_normed.is_some() => {
            format!(
                "Wasserstein {:.3}",
                d.wasserstein_normed.unwrap_or_default()
            )
        }
        Some(d) => format!("JS {:.3}", d.jensen_shannon),
        None => "no distance".to_owned(),
    };
    format!(
        "{} ({effect}, PSI {:.3})",
        column.column,
        column.distances.map_or(0.0, |d| d.psi)
    )
}

/// Prints, per month, how many columns drifted in each mode and the top three columns.
pub fn print_drift(months: &[MonthDrift]) {
    println!(
        "       (month drifts in every window by construction: the reference has months 1-6 only)"
    );
    for month in months {
        let mut by_effect: Vec<&ColumnDrift> = month.default_mode.columns.iter().collect();
        by_effect.sort_by(|a, b| default_effect(b).total_cmp(&default_effect(a)));
        let top: Vec<String> = by_effect
            .iter()
            .take(3)
            .map(|c| describe_default(c))
            .collect();
        println!(
            "       {} default:   {}/{} drifted; top {}",
            month_name(month.month),
            month.default_mode.drifted_columns,
            month.default_mode.columns.len(),
            top.join(", ")
        );

        // Evidently's scores are distances here (the reference has more than 1,000 rows),
        // so larger means more drift; p-value methods rank by their smallest score.
        let mut by_score: Vec<&ColumnDrift> = month.evidently_mode.columns.iter().collect();
        by_score.sort_by(|a, b| {
            let key = |c: &ColumnDrift| {
                if c.method.is_p_value() {
                    -c.score
                } else {
                    c.score
                }
            };
            key(b).total_cmp(&key(a))
        });
        let top: Vec<String> = by_score
            .iter()
            .take(3)
            .map(|c| {
                let method = c.method.evidently_name().unwrap_or("?");
                format!("{} ({method} {:.3})", c.column, c.score)
            })
            .collect();
        println!(
            "           evidently: {}/{} drifted; top {}",
            month.evidently_mode.drifted_columns,
            month.evidently_mode.columns.len(),
            top.join(", ")
        );
    }
}
