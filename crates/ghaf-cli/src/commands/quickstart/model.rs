//! Quickstart stage: read the flights version's Parquet file, train gradient-boosted trees
//! for `arr_delay > 15` on January to June, and evaluate them on each later month.

use anyhow::{Context as _, bail};
use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use ghaf_train::metrics::auc;
use ghaf_train::{Column, Dataset, GbdtParams, train_gbdt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Numeric features, all known when the flight is scheduled. `day_of_week` is derived from
/// the date; the others are columns of the flights table.
pub const NUMERIC_FEATURES: [&str; 8] = [
    "month",
    "day",
    "day_of_week",
    "sched_dep_time",
    "sched_arr_time",
    "hour",
    "minute",
    "distance",
];

/// Categorical features, columns of the flights table.
const CATEGORICAL_FEATURES: [&str; 3] = ["carrier", "origin", "dest"];

/// Last month of the training period; later months are evaluated one by one.
pub const LAST_TRAINING_MONTH: i64 = 6;

/// Share of the training period's rows held out for validation, and the split's seed.
const VALIDATION_FRACTION: f64 = 0.2;
const SPLIT_SEED: u64 = 42;

/// Rounds without a better validation loss after which training stops.
const EARLY_STOPPING_ROUNDS: usize = 10;

/// The labelled flights with their features, in Parquet row order.
pub struct Flights {
    pub dataset: Dataset,
    /// Month of each row, 1 to 12.
    pub months: Vec<i64>,
    /// Rows read from the version, including those without an arrival delay.
    pub rows_read: usize,
}

/// Evaluation of one month after the training period.
pub struct MonthResult {
    pub month: i64,
    pub rows: usize,
    pub positive_rate: f64,
    pub auc: f64,
}

/// The trained model and its evaluation.
pub struct Trained {
    pub model_bytes: Vec<u8>,
    pub n_trees: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub validation_auc: f64,
    pub months: Vec<MonthResult>,
    /// Predicted probability for every row of [`Flights::dataset`].
    pub scores: Vec<f64>,
    /// Features by total split gain, largest first.
    pub importance: Vec<(String, f64)>,
}

/// Decodes a flights version's Parquet file into features and labels. Rows without
/// `arr_delay` (cancelled or diverted flights) have no label and are left out.
pub fn read_flights(parquet: Bytes) -> anyhow::Result<Flights> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(parquet)
        .context("the flights version is not a readable Parquet file")?
        .build()?;

    let mut numeric: Vec<Vec<f64>> = vec![Vec::new(); NUMERIC_FEATURES.len()];
    let mut categorical: Vec<Vec<Option<String>>> = vec![Vec::new(); CATEGORICAL_FEATURES.len()];
    let mut label = Vec::new();
    let mut months = Vec::new();
    let mut rows_read = 0;
    for batch in reader {
        let batch = batch.context("cannot decode the flights Parquet file")?;
        rows_read += batch.num_rows();
        let int = |name: &str| int_column(&batch, name);
        let (year, month, day) = (int("year")?, int("month")?, int("day")?);
        let arr_delay = int("arr_delay")?;
        let raw: Vec<&Int64Array> = vec![
            month,
            day,
            int("sched_dep_time")?,
            int("sched_arr_time")?,
            int("hour")?,
            int("minute")?,
            int("distance")?,
        ];
        let strings = CATEGORICAL_FEATURES
            .iter()
            .map(|name| string_column(&batch, name))
            .collect::<anyhow::Result<Vec<_>>>()?;

        for row in 0..batch.num_rows() {
            if arr_delay.is_null(row) {
                continue;
            }
            label.push(f64::from(u8::from(arr_delay.value(row) > 15)));
            months.push(month.value(row));
            let weekday = day_of_week(year.value(row), month.value(row), day.value(row));
            // NUMERIC_FEATURES order: month, day, day_of_week, then the rest of `raw`.
            let values = [
                raw[0].value(row) as f64,
                raw[1].value(row) as f64,
                weekday as f64,
                raw[2].value(row) as f64,
                raw[3].value(row) as f64,
                raw[4].value(row) as f64,
                raw[5].value(row) as f64,
                raw[6].value(row) as f64,
            ];
            for (column, value) in numeric.iter_mut().zip(values) {
                column.push(value);
            }
            for (column, array) in categorical.iter_mut().zip(&strings) {
                column.push(Some(array.value(row).to_owned()));
            }
        }
    }

    let mut columns: Vec<Column> = NUMERIC_FEATURES
        .iter()
        .zip(numeric)
        .map(|(name, values)| Column::f64(*name, values))
        .collect();
    for (name, values) in CATEGORICAL_FEATURES.iter().zip(categorical) {
        columns.push(Column::categorical_from_strings(*name, &values));
    }
    let dataset = Dataset::new(columns, label)?;
    Ok(Flights {
        dataset,
        months,
        rows_read,
    })
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a Int64Array> {
    batch
        .column_by_name(name)
        .with_context(|| format!("the flights version has no column {name}"))?
        .as_any()
        .downcast_ref::<Int64Array>()
        .with_context(|| format!("column {name} of the flights version is not a 64-bit integer"))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a StringArray> {
    let array = batch
        .column_by_name(name)
        .with_context(|| format!("the flights version has no column {name}"))?
        .as_any()
        .downcast_ref::<StringArray>()
        .with_context(|| format!("column {name} of the flights version is not a string"))?;
    if array.null_count() > 0 {
        bail!(
            "column {name} of the flights version has nulls; its schema declares it non-nullable"
        );
    }
    Ok(array)
}

/// Returns 0 for Monday through 6 for Sunday, from the proleptic Gregorian date.
fn day_of_week(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days_since_1970 = era * 146_097 + day_of_era - 719_468;
    // 1970-01-01 was a Thursday, day 3.
    (days_since_1970 + 3).rem_euclid(7)
}

/// Trains on January to June with a validation split and evaluates every later month.
pub fn train_and_evaluate(flights: &Flights) -> anyhow::Result<Trained> {
    let training_rows: Vec<usize> = rows_where(&flights.months, |m| m <= LAST_TRAINING_MONTH);
    if training_rows.is_empty() {
        bail!("no labelled flight in January to June; the model has nothing to learn from");
    }
    let period = flights.dataset.take(&training_rows);
    let (train, validation) = period.train_validation_split(VALIDATION_FRACTION, SPLIT_SEED)?;
    let params = GbdtParams {
        early_stopping_rounds: Some(EARLY_STOPPING_ROUNDS),
        ..GbdtParams::default()
    };
    let training = train_gbdt(&train, Some(&validation), &params)?;
    let model = training.model;
    let validation_auc = auc(validation.label(), &model.predict_dataset(&validation));

    let scores = model.predict_dataset(&flights.dataset);
    let mut months = Vec::new();
    for month in (LAST_TRAINING_MONTH + 1)..=12 {
        let rows = rows_where(&flights.months, |m| m == month);
        if rows.is_empty() {
            continue;
        }
        let labels: Vec<f64> = rows.iter().map(|&r| flights.dataset.label()[r]).collect();
        let month_scores: Vec<f64> = rows.iter().map(|&r| scores[r]).collect();
        months.push(MonthResult {
            month,
            rows: rows.len(),
            positive_rate: labels.iter().sum::<f64>() / labels.len() as f64,
            auc: auc(&labels, &month_scores),
        });
    }

    let importance = model
        .importance_by_name()
        .into_iter()
        .map(|(name, gain, _)| (name, gain))
        .collect();
    Ok(Trained {
        n_trees: model.trees().len(),
        model_bytes: ghaf_train::Model::Gbdt(model).to_bytes(),
        train_rows: train.n_rows(),
        validation_rows: validation.n_rows(),
        validation_auc,
        months,
        scores,
        importance,
    })
}

pub fn rows_where(months: &[i64], keep: impl Fn(i64) -> bool) -> Vec<usize> {
    months
        .iter()
        .enumerate()
        .filter(|(_, month)| keep(**month))
        .map(|(row, _)| row)
        .collect()
}

/// Returns the English three-letter abbreviation of a month number.
pub fn month_name(month: i64) -> &'static str {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    usize::try_from(month - 1)
        .ok()
        .and_then(|index| NAMES.get(index))
        .copied()
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_week_of_known_dates() {
        // 2013-01-01 was a Tuesday, 2013-06-30 a Sunday.
        assert_eq!(day_of_week(2013, 1, 1), 1);
        assert_eq!(day_of_week(2013, 6, 30), 6);
        assert_eq!(day_of_week(1970, 1, 1), 3);
    }

    #[test]
    fn month_names() {
        assert_eq!(month_name(1), "Jan");
        assert_eq!(month_name(12), "Dec");
        assert_eq!(month_name(13), "?");
    }
}
