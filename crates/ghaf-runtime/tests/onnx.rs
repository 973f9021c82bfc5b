//! The ONNX predictor on real ONNX Runtime, the onnxruntime 1.32.0 wheel of the venv that
//! tests/onnx/setup.sh creates. scikit-learn models converted by skl2onnx must give exactly
//! the outputs of Python ONNX Runtime. ghaf-train models must agree between the native and
//! the ONNX predictor, and bad requests must fail with errors that name the input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ghaf_runtime::{
    DataType, ExecutionProvider, Predictor, RuntimeError, RuntimeOptions, Tensor, TensorData,
    load_files, load_model,
};
use ghaf_train::{Column, Dataset, GbdtParams, Model, Objective, train_gbdt};
use serde::Deserialize;

/// Returns the venv with ONNX Runtime and scikit-learn, or `None` when tests/onnx/setup.sh
/// has not run on this machine.
fn venv() -> Option<PathBuf> {
    let venv = std::env::var_os("GHAF_ONNX_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/ghaf-onnx-venv"))
        })?;
    venv.join("bin/python").exists().then_some(venv)
}

fn library(venv: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(path);
    }
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).expect("venv lib directory") {
        let candidate = entry
            .unwrap()
            .path()
            .join("site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("libonnxruntime.so.1.32.0 not found below {}", lib.display());
}

fn options(venv: &Path) -> RuntimeOptions {
    RuntimeOptions {
        onnxruntime_library: Some(library(venv)),
        ..RuntimeOptions::default()
    }
}

macro_rules! require_venv {
    () => {
        match venv() {
            Some(venv) => venv,
            None => {
                println!(
                    "skipped: no ONNX venv at ~/.cache/ghaf-onnx-venv; run tests/onnx/setup.sh"
                );
                return;
            }
        }
    };
}

#[derive(Deserialize)]
struct Manifest {
    models: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    name: String,
    inputs: Vec<TensorEntry>,
    outputs: Vec<TensorEntry>,
}

#[derive(Deserialize)]
struct TensorEntry {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

fn read_tensor(path: &Path, entry: &TensorEntry) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let data = match entry.datatype.as_str() {
        "FP64" => TensorData::Fp64(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        "FP32" => TensorData::Fp32(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        "INT64" => TensorData::Int64(
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        "BYTES" => TensorData::Bytes(
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| line.as_bytes().to_vec())
                .collect(),
        ),
        other => panic!("unexpected datatype {other}"),
    };
    Tensor::new(entry.name.clone(), entry.shape.clone(), data)
}

static SKLEARN_MODELS: OnceLock<(PathBuf, Manifest)> = OnceLock::new();

/// Runs make_models.py once per test process, into a directory below the target directory
/// that each run overwrites, and returns that directory and the manifest.
fn sklearn_models(venv: &Path) -> (&'static Path, &'static Manifest) {
    let (dir, manifest) = SKLEARN_MODELS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ghaf-runtime-sklearn-models");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/onnx/make_models.py");
        let status = std::process::Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("run make_models.py");
        assert!(status.success(), "make_models.py failed: {status}");
        let manifest =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        (dir, manifest)
    });
    (dir, manifest)
}

/// Compares outputs element by element on their bit patterns.
fn assert_same(model: &str, got: &Tensor, expected: &Tensor) {
    assert_eq!(got.shape, expected.shape, "{model} output {}", got.name);
    assert_eq!(
        got.datatype(),
        expected.datatype(),
        "{model} output {}",
        got.name
    );
    match (&got.data, &expected.data) {
        (TensorData::Fp32(a), TensorData::Fp32(b)) => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "{model} {} [{index}]: {x} vs {y}",
                    got.name
                );
            }
        }
        (TensorData::Fp64(a), TensorData::Fp64(b)) => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "{model} {} [{index}]: {x} vs {y}",
                    got.name
                );
            }
        }
        (a, b) => assert_eq!(a, b, "{model} output {}", got.name),
    }
}

#[test]
fn sklearn_models_match_python_ort() {
    let venv = require_venv!();
    let options = options(&venv);
    let (dir, manifest) = sklearn_models(&venv);
    assert_eq!(manifest.models.len(), 12);
    for (index, model) in manifest.models.iter().enumerate() {
        let onnx = std::fs::read(dir.join(format!("{}.onnx", model.name))).unwrap();
        // Half the models load through an mlflow.onnx MLmodel, half as a lone *.onnx file.
        let mut files = BTreeMap::new();
        if index % 2 == 0 {
            files.insert(
                "MLmodel".to_string(),
                b"flavors:\n  onnx:\n    model_data: model.onnx\n    onnx_version: 1.23.2\n  python_function:\n    loader_module: mlflow.onnx\n".to_vec(),
            );
            files.insert("model.onnx".to_string(), onnx);
        } else {
            files.insert(format!("{}.onnx", model.name), onnx);
        }
        let loaded = load_model(&files, &options)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", model.name));
        let signature = loaded.predictor.signature();
        assert_eq!(signature.platform, "onnxruntime_onnx");
        for meta in &signature.inputs {
            assert_eq!(meta.shape[0], -1, "{} input {}", model.name, meta.name);
        }

        let inputs: Vec<Tensor> = model
            .inputs
            .iter()
            .map(|entry| {
                read_tensor(
                    &dir.join(format!("{}.input.{}.bin", model.name, entry.name)),
                    entry,
                )
            })
            .collect();
        let outputs = loaded.predictor.predict(&inputs, &[]).unwrap();
        assert_eq!(outputs.len(), model.outputs.len(), "{}", model.name);
        for (got, entry) in outputs.iter().zip(&model.outputs) {
            assert_eq!(got.name, entry.name);
            let expected = read_tensor(
                &dir.join(format!("{}.output.{}.bin", model.name, entry.name)),
                entry,
            );
            assert_same(&model.name, got, &expected);
        }

        // One requested output returns only that output.
        let last = &model.outputs[model.outputs.len() - 1].name;
        let only = loaded
            .predictor
            .predict(&inputs, std::slice::from_ref(last))
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(&only[0].name, last);
    }

    // The default skl2onnx conversion of a classifier ends in ZipMap, a sequence of maps.
    let zipmap = std::fs::read(dir.join("logreg_zipmap.onnx")).unwrap();
    let files = BTreeMap::from([("model.onnx".to_string(), zipmap)]);
    let error = load_files(&files, &options).err().unwrap();
    assert!(
        matches!(&error, RuntimeError::Load(message) if message.contains("zipmap=False")),
        "{error}"
    );
}

fn categorical_dataset(rows: usize) -> Dataset {
    let x0: Vec<f64> = (0..rows)
        .map(|i| {
            if i % 9 == 0 {
                f64::NAN
            } else {
                (i as f64 * 0.37).sin() * 5.0
            }
        })
        .collect();
    let codes: Vec<i32> = (0..rows).map(|i| (i % 7) as i32 - 1).collect();
    let label: Vec<f64> = (0..rows)
        .map(|i| f64::from((i % 7 == 3) ^ ((i as f64 * 0.37).sin() > 0.3)))
        .collect();
    Dataset::new(
        vec![
            Column::f64("x0", x0),
            Column::categorical("kind", codes, (0..6).map(|c| format!("k{c}")).collect()),
        ],
        label,
    )
    .unwrap()
}

fn ghaf_model_files(model: &Model) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "MLmodel".to_string(),
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n    onnx_file: model.onnx\n".to_vec(),
        ),
        ("model.ghaf".to_string(), model.to_bytes()),
        ("model.onnx".to_string(), ghaf_train::onnx::export(model)),
    ])
}

#[test]
fn ghaf_model_native_equals_onnx() {
    let venv = require_venv!();
    let data = categorical_dataset(400);
    let params = GbdtParams {
        objective: Objective::Binary,
        n_estimators: 25,
        ..GbdtParams::default()
    };
    let model = Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model);
    let files = ghaf_model_files(&model);

    let native = load_model(&files, &options(&venv)).unwrap();
    let onnx_options = RuntimeOptions {
        prefer_onnx: true,
        ..options(&venv)
    };
    let onnx = load_model(&files, &onnx_options).unwrap();
    assert_eq!(native.model_file, "model.ghaf");
    assert_eq!(onnx.model_file, "model.onnx");
    // Both endpoints look alike: same input and output names, datatypes and shapes.
    assert_eq!(
        native.predictor.signature().inputs,
        onnx.predictor.signature().inputs
    );
    assert_eq!(
        native.predictor.signature().outputs,
        onnx.predictor.signature().outputs
    );

    let mut matrix = Vec::new();
    for row in 0..data.n_rows() {
        matrix.push(data.columns()[0].value(row));
        matrix.push(data.columns()[1].value(row));
    }
    matrix.extend_from_slice(&[f64::NAN, f64::NAN, 1e9, -1.0, -0.0, 6.0]);
    let rows = (matrix.len() / 2) as i64;
    let input = [Tensor::new(
        "input",
        vec![rows, 2],
        TensorData::Fp64(matrix),
    )];
    let from_native = native.predictor.predict(&input, &[]).unwrap();
    let from_onnx = onnx.predictor.predict(&input, &[]).unwrap();
    assert_eq!(from_native[0].shape, from_onnx[0].shape);
    // The raw scores are the same sums in the same order, but ONNX Runtime's Sigmoid rounds
    // differently from f64::exp in the last bit or two, so probabilities agree within 1e-15.
    let (TensorData::Fp64(a), TensorData::Fp64(b)) = (&from_native[0].data, &from_onnx[0].data)
    else {
        panic!("both outputs are FP64");
    };
    let mut largest = 0.0f64;
    for (row, (x, y)) in a.iter().zip(b).enumerate() {
        let difference = (x - y).abs();
        largest = largest.max(difference);
        assert!(difference <= 1e-15, "row {row}: native {x}, ONNX {y}");
    }
    println!(
        "largest difference native vs ONNX: {largest:e} over {} rows",
        a.len()
    );
}

fn column_transformer(venv: &Path) -> (Arc<dyn Predictor>, Vec<Tensor>) {
    let (dir, manifest) = sklearn_models(venv);
    let model = manifest
        .models
        .iter()
        .find(|m| m.name == "column_transformer_logreg")
        .unwrap();
    let bytes = std::fs::read(dir.join("column_transformer_logreg.onnx")).unwrap();
    let files = BTreeMap::from([("model.onnx".to_string(), bytes)]);
    let predictor = load_files(&files, &options(venv)).unwrap();
    let inputs = model
        .inputs
        .iter()
        .map(|entry| {
            let path = dir.join(format!(
                "column_transformer_logreg.input.{}.bin",
                entry.name
            ));
            read_tensor(&path, entry)
        })
        .collect();
    (predictor, inputs)
}

fn expect_invalid(result: Result<Vec<Tensor>, RuntimeError>, input_name: &str, reason_part: &str) {
    match result {
        Err(RuntimeError::InvalidInput { input, reason }) => {
            assert_eq!(input, input_name, "{reason}");
            assert!(
                reason.contains(reason_part),
                "{reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected InvalidInput for {input_name}, got {other:?}"),
    }
}

#[test]
fn onnx_rejects_bad_inputs() {
    let venv = require_venv!();
    let (predictor, inputs) = column_transformer(&venv);
    let signature = predictor.signature();
    assert_eq!(signature.inputs[0].datatype, DataType::Bytes);
    assert_eq!(signature.inputs[2].datatype, DataType::Fp32);
    assert!(predictor.predict(&inputs, &[]).is_ok());

    let with = |index: usize, tensor: Tensor| {
        let mut changed = inputs.clone();
        changed[index] = tensor;
        changed
    };
    let rows = inputs[2].shape[0];

    let renamed = with(
        2,
        Tensor::new("x9", inputs[2].shape.clone(), inputs[2].data.clone()),
    );
    expect_invalid(
        predictor.predict(&renamed, &[]),
        "x9",
        "no input with this name",
    );

    let fp64 = with(
        2,
        Tensor::new(
            "x0",
            vec![rows, 1],
            TensorData::Fp64(vec![0.0; rows as usize]),
        ),
    );
    expect_invalid(
        predictor.predict(&fp64, &[]),
        "x0",
        "datatype is FP64, expected FP32",
    );

    let rank = with(
        2,
        Tensor::new("x0", vec![rows], TensorData::Fp32(vec![0.0; rows as usize])),
    );
    expect_invalid(predictor.predict(&rank, &[]), "x0", "rank 1");

    let dims = with(
        2,
        Tensor::new(
            "x0",
            vec![rows / 2, 2],
            TensorData::Fp32(vec![0.0; rows as usize]),
        ),
    );
    expect_invalid(
        predictor.predict(&dims, &[]),
        "x0",
        "dimension 1 is 2, expected 1",
    );

    let count = with(
        2,
        Tensor::new("x0", vec![rows, 1], TensorData::Fp32(vec![0.0; 3])),
    );
    expect_invalid(predictor.predict(&count, &[]), "x0", "elements");

    let mut strings = vec![b"red".to_vec(); rows as usize];
    strings[3] = vec![0xff, 0xfe];
    let not_utf8 = with(
        0,
        Tensor::new("color", vec![rows, 1], TensorData::Bytes(strings)),
    );
    expect_invalid(predictor.predict(&not_utf8, &[]), "color", "UTF-8");

    let mut missing = inputs.clone();
    missing.remove(1);
    expect_invalid(predictor.predict(&missing, &[]), "size", "missing input");

    let mut twice = inputs.clone();
    twice.push(inputs[4].clone());
    expect_invalid(predictor.predict(&twice, &[]), "x2", "more than once");

    let short = with(
        2,
        Tensor::new("x0", vec![1, 1], TensorData::Fp32(vec![0.0])),
    );
    expect_invalid(predictor.predict(&short, &[]), "x0", "has 1 rows");

    // NaN is a value, not an error.
    let nan = with(
        2,
        Tensor::new(
            "x0",
            vec![rows, 1],
            TensorData::Fp32(vec![f32::NAN; rows as usize]),
        ),
    );
    assert!(predictor.predict(&nan, &[]).is_ok());

    let unknown_output = predictor.predict(&inputs, &["scores".into()]);
    assert!(
        matches!(unknown_output, Err(RuntimeError::InvalidOutput { ref output, .. }) if output == "scores"),
        "{unknown_output:?}"
    );
}

#[test]
fn cuda_without_gpu_build_is_unavailable() {
    let venv = require_venv!();
    let data = categorical_dataset(100);
    let model = Model::Gbdt(
        train_gbdt(&data, None, &GbdtParams::default())
            .unwrap()
            .model,
    );
    let options = RuntimeOptions {
        prefer_onnx: true,
        execution_provider: ExecutionProvider::Cuda { device_id: 0 },
        ..options(&venv)
    };
    let error = load_files(&ghaf_model_files(&model), &options)
        .err()
        .unwrap();
    assert!(
        matches!(&error, RuntimeError::Unavailable(message) if message.contains("CUDA execution provider")),
        "{error}"
    );
}

/// An ONNX Runtime session serves one run at a time, so the batcher keeps one run of it in
/// flight, and concurrent requests through the batcher still get their unbatched results.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batcher_serialises_onnx_runs() {
    let venv = require_venv!();
    let data = categorical_dataset(200);
    let params = GbdtParams {
        objective: Objective::Binary,
        n_estimators: 10,
        ..GbdtParams::default()
    };
    let model = Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model);
    let onnx_options = RuntimeOptions {
        prefer_onnx: true,
        ..options(&venv)
    };
    let onnx = load_model(&ghaf_model_files(&model), &onnx_options).unwrap();
    assert_eq!(onnx.predictor.max_concurrent_runs(), Some(1));
    let batcher = ghaf_runtime::Batcher::new(
        onnx.predictor.clone(),
        ghaf_runtime::BatchOptions::default(),
    );
    assert_eq!(batcher.limits().max_concurrent_runs, 1);

    let request = |seed: usize, rows: usize| {
        let mut matrix = Vec::with_capacity(rows * 2);
        for row in 0..rows {
            let index = (seed * 7 + row) % data.n_rows();
            matrix.push(data.columns()[0].value(index));
            matrix.push(data.columns()[1].value(index));
        }
        vec![Tensor::new(
            "input",
            vec![rows as i64, 2],
            TensorData::Fp64(matrix),
        )]
    };
    let mut tasks = Vec::new();
    for seed in 0..24 {
        let batcher = batcher.clone();
        let inputs = request(seed, 1 + seed % 5);
        tasks.push(tokio::spawn(async move {
            let outputs = batcher.predict(inputs.clone(), Vec::new()).await;
            (inputs, outputs)
        }));
    }
    for task in tasks {
        let (inputs, outputs) = task.await.unwrap();
        assert_eq!(
            outputs.unwrap(),
            onnx.predictor.predict(&inputs, &[]).unwrap()
        );
    }
    while batcher.running() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(batcher.queued(), 0);
}
