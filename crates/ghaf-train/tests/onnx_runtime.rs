//! Runs every built-in model kind, exported to ONNX, in ONNX Runtime and compares its output
//! with the native predictions.
//!
//! ONNX Runtime comes from the Python venv that `tests/onnx/setup.sh` creates (default
//! `$HOME/.cache/ghaf-onnx-venv`, or `GHAF_ONNX_VENV`). Without it the test fails, unless
//! `GHAF_SKIP_PEER_TESTS=1` is set, in which case it prints that it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ghaf_train::{
    Dataset, GbdtParams, LinearParams, Model, Objective, onnx, train_gbdt, train_linear,
};

/// Largest allowed difference between ONNX Runtime and native predictions.
const TOLERANCE: f64 = 1e-5;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns the venv's Python, or `None` when the test should be skipped.
fn onnx_python() -> Option<PathBuf> {
    let venv = std::env::var_os("GHAF_ONNX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/ghaf-onnx-venv")
        });
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
        println!(
            "skipped: no ONNX Runtime venv at {} and GHAF_SKIP_PEER_TESTS=1",
            venv.display()
        );
        return None;
    }
    panic!(
        "no ONNX Runtime venv at {}: run tests/onnx/setup.sh first, or set GHAF_SKIP_PEER_TESTS=1 to skip",
        venv.display()
    );
}

/// Exports `model`, runs it on every row of `data` in ONNX Runtime and returns the outputs.
fn run_in_onnx_runtime(python: &Path, model: &Model, data: &Dataset) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.onnx");
    let input_path = dir.path().join("input.f64");
    let output_path = dir.path().join("output.f64");
    std::fs::write(&model_path, onnx::export(model)).unwrap();
    let input: Vec<u8> = data
        .to_row_major()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&input_path, input).unwrap();

    let result = Command::new(python)
        .arg(repo_root().join("tests/onnx/run_model.py"))
        .arg(&model_path)
        .arg(&input_path)
        .arg(data.n_rows().to_string())
        .arg(data.n_features().to_string())
        .arg(&output_path)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "ONNX Runtime failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read(&output_path)
        .unwrap()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn assert_matches_native(python: &Path, name: &str, model: &Model, data: &Dataset) {
    let from_onnx = run_in_onnx_runtime(python, model, data);
    assert_eq!(from_onnx.len(), data.n_rows(), "{name}: output length");
    let mut largest = 0.0f64;
    for (row, onnx_value) in from_onnx.iter().enumerate() {
        let native = model.predict(&data.row(row));
        let difference = (native - onnx_value).abs();
        largest = largest.max(difference);
        assert!(
            difference <= TOLERANCE,
            "{name} row {row}: native {native}, ONNX Runtime {onnx_value}"
        );
    }
    println!(
        "{name}: largest difference {largest:e} over {} rows",
        data.n_rows()
    );
}

/// Test rows: the validation split plus rows with missing values everywhere and with unknown
/// category codes.
fn test_rows(data: &Dataset) -> Dataset {
    let (_, valid) = data.train_validation_split(0.2, 99).unwrap();
    valid
}

#[test]
fn every_model_kind_matches_onnx_runtime() {
    let Some(python) = onnx_python() else { return };

    for objective in [Objective::Binary, Objective::Regression] {
        let data = common::synthetic(3_000, 21, objective == Objective::Regression);
        let (train, valid) = data.train_validation_split(0.2, 99).unwrap();

        let params = GbdtParams {
            objective,
            n_estimators: 80,
            min_data_per_group: 20,
            early_stopping_rounds: Some(20),
            ..GbdtParams::default()
        };
        let gbdt = Model::Gbdt(train_gbdt(&train, Some(&valid), &params).unwrap().model);
        assert_matches_native(
            &python,
            &format!("gbdt {objective:?}"),
            &gbdt,
            &test_rows(&data),
        );

        let linear = Model::Linear(
            train_linear(
                &train,
                &LinearParams {
                    objective,
                    ..LinearParams::default()
                },
            )
            .unwrap(),
        );
        assert_matches_native(
            &python,
            &format!("linear {objective:?}"),
            &linear,
            &test_rows(&data),
        );
    }
}

#[test]
fn large_regression_targets_match_onnx_runtime() {
    let Some(python) = onnx_python() else { return };
    let data = common::synthetic(2_000, 23, true);
    let scaled: Vec<f64> = data
        .label()
        .iter()
        .map(|y| 1_000.0 * y + 50_000.0)
        .collect();
    let data = Dataset::new(data.columns().to_vec(), scaled).unwrap();
    let objective = Objective::Regression;

    let gbdt_params = GbdtParams {
        objective,
        n_estimators: 40,
        ..GbdtParams::default()
    };
    let gbdt = Model::Gbdt(train_gbdt(&data, None, &gbdt_params).unwrap().model);
    assert_matches_native(&python, "gbdt large targets", &gbdt, &test_rows(&data));

    let linear_params = LinearParams {
        objective,
        ..LinearParams::default()
    };
    let linear = Model::Linear(train_linear(&data, &linear_params).unwrap());
    assert_matches_native(&python, "linear large targets", &linear, &test_rows(&data));
}

#[test]
fn edge_rows_match_onnx_runtime() {
    let Some(python) = onnx_python() else { return };
    let data = common::synthetic(2_000, 22, false);
    let gbdt = Model::Gbdt(
        train_gbdt(
            &data,
            None,
            &GbdtParams {
                n_estimators: 30,
                min_data_per_group: 20,
                ..GbdtParams::default()
            },
        )
        .unwrap()
        .model,
    );
    let linear = Model::Linear(train_linear(&data, &LinearParams::default()).unwrap());

    // All missing, unknown category codes, and values beyond the training range.
    let edges = ghaf_train::Dataset::new(
        vec![
            ghaf_train::Column::f64("x0", vec![f64::NAN, 1e9, -1e9, 0.0]),
            ghaf_train::Column::f64("x1", vec![f64::NAN, f64::NAN, 5.0, -5.0]),
            ghaf_train::Column::f32("x2", vec![f32::NAN, 1e6, -3.0, 50.0]),
            ghaf_train::Column::categorical(
                "city",
                vec![-1, 11, 0, 5],
                (0..12).map(|i| format!("city{i}")).collect(),
            ),
            ghaf_train::Column::categorical(
                "tier",
                vec![-1, 2, 1, 0],
                vec!["bronze".into(), "silver".into(), "gold".into()],
            ),
        ],
        vec![0.0; 4],
    )
    .unwrap();
    assert_matches_native(&python, "gbdt edge rows", &gbdt, &edges);
    assert_matches_native(&python, "linear edge rows", &linear, &edges);
}
