//! Benchmarks the GBDT trainer against LightGBM on nycflights13, predicting `arr_delay > 15`.
//!
//! Both trainers get the same rows, features and 80/20 split (seed 42), at default parameters
//! (100 rounds, 31 leaves, learning rate 0.1, 255 bins). Flights without an arrival delay
//! (cancelled or diverted) are dropped. Features known at scheduling time: month, day, day of
//! week, scheduled departure and arrival time, hour, minute, distance, and carrier, origin
//! and destination as categorical columns.
//!
//! ```sh
//! cargo build --release -p ghaf-train --example flights_benchmark
//! $CARGO_TARGET_DIR/release/examples/flights_benchmark [FLIGHTS_CSV_GZ] [REPEATS]
//! ```
//!
//! LightGBM runs in the Python at `GHAF_BENCH_PYTHON` (default
//! `$HOME/.cache/ghaf-bench-venv/bin/python`, with `lightgbm==4.7.0` and `numpy` installed).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ghaf_train::metrics::auc;
use ghaf_train::{Column, ColumnData, Dataset, GbdtParams, train_gbdt};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let csv_path = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("data/nycflights13/flights.csv.gz"));
    let repeats: usize = args
        .get(2)
        .map_or(3, |r| r.parse().expect("REPEATS is a number"));

    let data = load_flights(&csv_path);
    let (train, valid) = data.train_validation_split(0.2, 42).expect("valid split");
    let positive_rate = data.label().iter().sum::<f64>() / data.n_rows() as f64;
    println!(
        "rows {} (train {}, validation {}), features {}, positive rate {positive_rate:.4}",
        data.n_rows(),
        train.n_rows(),
        valid.n_rows(),
        data.n_features()
    );

    let mut ghaf_times = Vec::new();
    let mut model = None;
    for _ in 0..repeats {
        let start = Instant::now();
        let result = train_gbdt(&train, None, &GbdtParams::default()).expect("training succeeds");
        ghaf_times.push(start.elapsed().as_secs_f64());
        model = Some(result.model);
    }
    let model = model.expect("at least one repeat");
    let ghaf_auc = auc(valid.label(), &model.predict_dataset(&valid));

    let (lightgbm_times, lightgbm_auc, version) = run_lightgbm(&train, &valid, repeats);
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let ghaf_median = median(&mut ghaf_times);
    let lightgbm_median = median(&mut lightgbm_times.clone());
    println!("| trainer | validation AUC | training seconds (median of {repeats}) |");
    println!("|---|---|---|");
    println!("| ghaf-train GBDT | {ghaf_auc:.4} | {ghaf_median:.2} |");
    println!("| LightGBM {version} | {lightgbm_auc:.4} | {lightgbm_median:.2} |");
    println!(
        "AUC difference {:+.4}, time ratio {:.2}",
        ghaf_auc - lightgbm_auc,
        ghaf_median / lightgbm_median
    );
    println!("ghaf times {ghaf_times:?}, LightGBM times {lightgbm_times:?}");
}

fn load_flights(path: &Path) -> Dataset {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
    )
    .read_to_string(&mut text)
    .expect("gzip CSV");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("header row").clone();
    let index = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let numeric = [
        "month",
        "day",
        "sched_dep_time",
        "sched_arr_time",
        "hour",
        "minute",
        "distance",
    ];
    let categorical = ["carrier", "origin", "dest"];
    let (year, month, day, arr_delay) = (
        index("year"),
        index("month"),
        index("day"),
        index("arr_delay"),
    );

    let mut numeric_values: Vec<Vec<f64>> = vec![Vec::new(); numeric.len()];
    let mut weekday = Vec::new();
    let mut category_codes: Vec<Vec<i32>> = vec![Vec::new(); categorical.len()];
    let mut category_maps: Vec<HashMap<String, i32>> = vec![HashMap::new(); categorical.len()];
    let mut category_names: Vec<Vec<String>> = vec![Vec::new(); categorical.len()];
    let mut label = Vec::new();
    for record in reader.records() {
        let record = record.expect("CSV record");
        let Ok(delay) = record[arr_delay].parse::<f64>() else {
            continue;
        };
        label.push(f64::from(u8::from(delay > 15.0)));
        for (values, name) in numeric_values.iter_mut().zip(numeric) {
            values.push(record[index(name)].parse().unwrap_or(f64::NAN));
        }
        let date: Vec<i64> = [year, month, day]
            .iter()
            .map(|&i| record[i].parse().expect("date"))
            .collect();
        weekday.push(day_of_week(date[0], date[1], date[2]) as f64);
        for (k, name) in categorical.iter().enumerate() {
            let value = &record[index(name)];
            let next = category_maps[k].len() as i32;
            let code = *category_maps[k]
                .entry(value.to_string())
                .or_insert_with(|| {
                    category_names[k].push(value.to_string());
                    next
                });
            category_codes[k].push(code);
        }
    }

    let mut columns: Vec<Column> = numeric
        .iter()
        .zip(numeric_values)
        .map(|(n, v)| Column::f64(*n, v))
        .collect();
    columns.push(Column::f64("day_of_week", weekday));
    for ((name, codes), names) in categorical.iter().zip(category_codes).zip(category_names) {
        columns.push(Column::categorical(*name, codes, names));
    }
    Dataset::new(columns, label).expect("consistent columns")
}

/// Returns 0 for Monday through 6 for Sunday (days since 1970-01-01, a Thursday).
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
    let days = era * 146_097 + day_of_era - 719_468;
    (days + 3).rem_euclid(7)
}

fn write_matrix(path: &Path, data: &Dataset) {
    let bytes: Vec<u8> = data
        .to_row_major()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).expect("write matrix");
}

fn run_lightgbm(train: &Dataset, valid: &Dataset, repeats: usize) -> (Vec<f64>, f64, String) {
    let dir = std::env::temp_dir().join(format!("ghaf-flights-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    write_matrix(&dir.join("train.f64"), train);
    write_matrix(&dir.join("valid.f64"), valid);
    let label: Vec<u8> = train.label().iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("train_label.f64"), label).expect("write labels");
    let categorical: Vec<usize> = train
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.data, ColumnData::Categorical { .. }))
        .map(|(i, _)| i)
        .collect();
    let meta = format!(
        "{{\"columns\": {}, \"categorical\": {categorical:?}}}",
        train.n_features()
    );
    std::fs::write(dir.join("meta.json"), meta).expect("write meta");

    let python = std::env::var_os("GHAF_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME"))
                .join(".cache/ghaf-bench-venv/bin/python")
        });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lightgbm_flights.py");
    let output = Command::new(&python)
        .arg(script)
        .arg(&dir)
        .arg(repeats.to_string())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "LightGBM failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).expect("UTF-8 output");
    let report: serde_json::Value = serde_json::from_str(line.trim()).expect("JSON report");
    let times = report["train_seconds"]
        .as_array()
        .expect("times")
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    let predictions: Vec<f64> = std::fs::read(dir.join("valid_pred.f64"))
        .expect("predictions")
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    (
        times,
        auc(valid.label(), &predictions),
        report["lightgbm_version"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    )
}
