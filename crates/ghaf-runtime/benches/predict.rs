//! In-process prediction latency and throughput of the native predictor and ONNX Runtime.
//!
//! Run with `cargo bench -p ghaf-runtime --bench predict`. ONNX Runtime is found through
//! `ORT_DYLIB_PATH` or the venv of tests/onnx/setup.sh; without it only native numbers are
//! printed. The scikit-learn model comes from tests/onnx/make_models.py in that venv.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ghaf_runtime::{Predictor, RuntimeOptions, Tensor, TensorData, load_files};
use ghaf_train::{Column, Dataset, GbdtParams, Model, Objective, train_gbdt};

const SINGLE_ROW_CALLS: usize = 20_000;
const WARM_UP_CALLS: usize = 500;
const BATCH_ROWS: usize = 256;
const BATCH_CALLS: usize = 400;

fn venv() -> PathBuf {
    std::env::var_os("GHAF_ONNX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/ghaf-onnx-venv")
        })
}

fn onnx_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(path));
    }
    let lib = venv().join("lib");
    std::fs::read_dir(lib).ok()?.find_map(|entry| {
        let path = entry
            .ok()?
            .path()
            .join("site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0");
        path.exists().then_some(path)
    })
}

fn synthetic_data(rows: usize, features: usize) -> Dataset {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f64 / 1000.0 - 5.0
    };
    let columns: Vec<Vec<f64>> = (0..features)
        .map(|_| (0..rows).map(|_| next()).collect())
        .collect();
    let label: Vec<f64> = (0..rows)
        .map(|r| {
            f64::from(
                columns[0][r] + columns[1][r] * 0.5 - columns[2][r].abs() + next() * 0.3 > 0.0,
            )
        })
        .collect();
    let columns = columns
        .into_iter()
        .enumerate()
        .map(|(i, values)| Column::f64(format!("f{i}"), values))
        .collect();
    Dataset::new(columns, label).unwrap()
}

fn matrix(data: &Dataset) -> Vec<f64> {
    let mut values = Vec::with_capacity(data.n_rows() * data.n_features());
    for row in 0..data.n_rows() {
        for column in data.columns() {
            values.push(column.value(row));
        }
    }
    values
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

/// Times single-row calls over the rows of `rows`, cycling through them.
fn single_row_latency(predictor: &dyn Predictor, rows: &[Vec<Tensor>]) -> Latency {
    for inputs in rows.iter().cycle().take(WARM_UP_CALLS) {
        predictor.predict(inputs, &[]).unwrap();
    }
    let mut times = Vec::with_capacity(SINGLE_ROW_CALLS);
    for inputs in rows.iter().cycle().take(SINGLE_ROW_CALLS) {
        let started = Instant::now();
        let outputs = predictor.predict(inputs, &[]).unwrap();
        times.push(started.elapsed());
        std::hint::black_box(outputs);
    }
    times.sort();
    Latency {
        p50: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
    }
}

/// Returns rows per second of calls with `BATCH_ROWS` rows each.
fn batch_throughput(predictor: &dyn Predictor, batch: &[Tensor]) -> f64 {
    for _ in 0..10 {
        predictor.predict(batch, &[]).unwrap();
    }
    let started = Instant::now();
    for _ in 0..BATCH_CALLS {
        std::hint::black_box(predictor.predict(batch, &[]).unwrap());
    }
    (BATCH_CALLS * BATCH_ROWS) as f64 / started.elapsed().as_secs_f64()
}

fn fp64_rows(values: &[f64], columns: usize, rows: usize) -> Vec<Vec<Tensor>> {
    values
        .chunks_exact(columns)
        .take(rows)
        .map(|row| {
            vec![Tensor::new(
                "input",
                vec![1, columns as i64],
                TensorData::Fp64(row.to_vec()),
            )]
        })
        .collect()
}

fn report(name: &str, predictor: &dyn Predictor, rows: &[Vec<Tensor>], batch: &[Tensor]) {
    let latency = single_row_latency(predictor, rows);
    let throughput = batch_throughput(predictor, batch);
    println!(
        "| {name} | {:.2} | {:.2} | {:.0} |",
        latency.p50.as_secs_f64() * 1e6,
        latency.p99.as_secs_f64() * 1e6,
        throughput
    );
}

fn main() {
    let features = 20;
    let data = synthetic_data(20_000, features);
    let params = GbdtParams {
        objective: Objective::Binary,
        n_estimators: 100,
        num_leaves: 31,
        ..GbdtParams::default()
    };
    let model = Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model);
    let values = matrix(&data);
    let rows = fp64_rows(&values, features, 1000);
    let batch = vec![Tensor::new(
        "input",
        vec![BATCH_ROWS as i64, features as i64],
        TensorData::Fp64(values[..BATCH_ROWS * features].to_vec()),
    )];

    let files = BTreeMap::from([
        (
            "MLmodel".to_string(),
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n    onnx_file: model.onnx\n".to_vec(),
        ),
        ("model.ghaf".to_string(), model.to_bytes()),
        ("model.onnx".to_string(), ghaf_train::onnx::export(&model)),
    ]);
    let library = onnx_library();
    let options = RuntimeOptions {
        onnxruntime_library: library.clone(),
        ..RuntimeOptions::default()
    };

    println!("ghaf GBDT: 100 trees, up to 31 leaves, 20 features; one thread");
    println!(
        "single row: {SINGLE_ROW_CALLS} calls after {WARM_UP_CALLS} warm-up calls; batch: {BATCH_CALLS} calls of {BATCH_ROWS} rows"
    );
    println!("| predictor | p50 µs | p99 µs | batched rows/s |");
    println!("|---|---|---|---|");
    let native = load_files(&files, &options).unwrap();
    report("native, ghaf GBDT", native.as_ref(), &rows, &batch);

    if library.is_none() {
        println!("ONNX Runtime not found: set ORT_DYLIB_PATH or run tests/onnx/setup.sh");
        return;
    }
    let onnx_options = RuntimeOptions {
        prefer_onnx: true,
        ..options.clone()
    };
    let onnx = load_files(&files, &onnx_options).unwrap();
    report(
        "ONNX Runtime, ghaf GBDT export",
        onnx.as_ref(),
        &rows,
        &batch,
    );

    let dir = std::env::temp_dir().join(format!("ghaf-bench-models-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/onnx/make_models.py");
    let status = std::process::Command::new(venv().join("bin/python"))
        .arg(script)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "make_models.py failed");
    for (name, columns) in [
        ("random_forest_binary", 30usize),
        ("gradient_boosting_binary", 30),
    ] {
        let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
        let predictor: Arc<dyn Predictor> = load_files(
            &BTreeMap::from([("model.onnx".to_string(), bytes)]),
            &options,
        )
        .unwrap();
        let input = std::fs::read(dir.join(format!("{name}.input.input.bin"))).unwrap();
        let floats: Vec<f32> = input
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let sk_rows: Vec<Vec<Tensor>> = floats
            .chunks_exact(columns)
            .map(|row| {
                vec![Tensor::new(
                    "input",
                    vec![1, columns as i64],
                    TensorData::Fp32(row.to_vec()),
                )]
            })
            .collect();
        let repeated: Vec<f32> = floats
            .iter()
            .copied()
            .cycle()
            .take(BATCH_ROWS * columns)
            .collect();
        let sk_batch = vec![Tensor::new(
            "input",
            vec![BATCH_ROWS as i64, columns as i64],
            TensorData::Fp32(repeated),
        )];
        report(
            &format!("ONNX Runtime, scikit-learn {name}"),
            predictor.as_ref(),
            &sk_rows,
            &sk_batch,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
