//! The native predictor against `ghaf_train::Model::predict`: every row bit for bit, on
//! random tree and linear models with numeric and categorical features and missing values.

use ghaf_runtime::{
    DataType, NativePredictor, Predictor, RuntimeError, Tensor, TensorData, load_files,
};
use ghaf_train::{
    Column, Dataset, GbdtParams, LinearParams, Model, Objective, train_gbdt, train_linear,
};
use proptest::prelude::*;

/// Builds a dataset of `rows` rows: two numeric columns with some NaN and one categorical
/// column with missing codes, from a seed.
fn dataset(seed: u64, rows: usize, objective: Objective) -> Dataset {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut x0 = Vec::with_capacity(rows);
    let mut x1 = Vec::with_capacity(rows);
    let mut codes = Vec::with_capacity(rows);
    let mut label = Vec::with_capacity(rows);
    for _ in 0..rows {
        let a = (next() % 2000) as f64 / 100.0 - 10.0;
        let b = (next() % 1000) as f64 / 37.0;
        let code = (next() % 6) as i32 - 1;
        x0.push(if next() % 11 == 0 { f64::NAN } else { a });
        x1.push(if next() % 13 == 0 { f64::NAN } else { b });
        codes.push(code);
        let signal = a * 0.3 + if code == 2 { 2.0 } else { 0.0 } - b * 0.05;
        label.push(match objective {
            Objective::Binary => f64::from(signal + (next() % 100) as f64 / 50.0 > 0.5),
            Objective::Regression => signal + (next() % 100) as f64 / 100.0,
        });
    }
    let categories = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    Dataset::new(
        vec![
            Column::f64("x0", x0),
            Column::f64("x1", x1),
            Column::categorical("color", codes, categories),
        ],
        label,
    )
    .unwrap()
}

/// Rows to predict: the training rows plus edge values (NaN, infinities, negative and huge
/// category codes, fractional codes).
fn probe_rows(data: &Dataset) -> Vec<f64> {
    let mut matrix = Vec::new();
    for row in 0..data.n_rows() {
        for column in data.columns() {
            matrix.push(column.value(row));
        }
    }
    let edges = [
        [f64::NAN, f64::NAN, f64::NAN],
        [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY],
        [0.0, -0.0, -1.0],
        [1e300, -1e300, 1e12],
        [2.5, 3.0, 2.7],
        [-3.0, 10.0, 4.0],
    ];
    for edge in edges {
        matrix.extend_from_slice(&edge);
    }
    matrix
}

fn assert_bit_identical(model: &Model, matrix: &[f64]) {
    let predictor = NativePredictor::new(model).unwrap();
    let native = predictor.predict_matrix(matrix).unwrap();
    for (index, row) in matrix.chunks_exact(3).enumerate() {
        let expected = model.predict(row);
        assert_eq!(
            native[index].to_bits(),
            expected.to_bits(),
            "row {index} {row:?}: native {} vs Model::predict {expected}",
            native[index]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn gbdt_matches_model_predict(
        seed in any::<u64>(),
        rows in 40usize..300,
        binary in any::<bool>(),
        estimators in 1usize..30,
        leaves in 2usize..16,
    ) {
        let objective = if binary { Objective::Binary } else { Objective::Regression };
        let data = dataset(seed, rows, objective);
        let params = GbdtParams {
            objective,
            n_estimators: estimators,
            num_leaves: leaves,
            min_data_in_leaf: 3,
            ..GbdtParams::default()
        };
        let trained = train_gbdt(&data, None, &params).unwrap();
        // Round trip through the file format, as serving reads it.
        let model = Model::from_bytes(&Model::Gbdt(trained.model).to_bytes()).unwrap();
        assert_bit_identical(&model, &probe_rows(&data));
    }

    #[test]
    fn linear_matches_model_predict(
        seed in any::<u64>(),
        rows in 20usize..200,
        binary in any::<bool>(),
    ) {
        let objective = if binary { Objective::Binary } else { Objective::Regression };
        let data = dataset(seed, rows, objective);
        let params = LinearParams { objective, ..LinearParams::default() };
        let model = Model::Linear(train_linear(&data, &params).unwrap());
        let model = Model::from_bytes(&model.to_bytes()).unwrap();
        assert_bit_identical(&model, &probe_rows(&data));
    }
}

fn gbdt_model() -> Model {
    let data = dataset(42, 200, Objective::Binary);
    let params = GbdtParams {
        n_estimators: 10,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

#[test]
fn signature_matches_onnx_export() {
    let predictor = NativePredictor::new(&gbdt_model()).unwrap();
    let signature = predictor.signature();
    assert_eq!(signature.platform, "ghaf_native");
    assert_eq!(signature.inputs[0].name, "input");
    assert_eq!(signature.inputs[0].datatype, DataType::Fp64);
    assert_eq!(signature.inputs[0].shape, vec![-1, 3]);
    assert_eq!(signature.outputs[0].name, "probability");
    assert_eq!(signature.outputs[0].datatype, DataType::Fp64);
    assert_eq!(signature.outputs[0].shape, vec![-1, 1]);
    assert_eq!(
        predictor.feature_names().unwrap(),
        ["x0".to_string(), "x1".into(), "color".into()]
    );
}

#[test]
fn converted_inputs_match_fp64() {
    let model = gbdt_model();
    let predictor = NativePredictor::new(&model).unwrap();
    let rows: Vec<[i32; 3]> = vec![[1, 2, 3], [-4, 0, 2], [7, 30, 0]];
    let fp64: Vec<f64> = rows.iter().flatten().map(|&v| f64::from(v)).collect();
    let expected = predictor
        .predict(
            &[Tensor::new("input", vec![3, 3], TensorData::Fp64(fp64))],
            &[],
        )
        .unwrap();
    let variants = [
        TensorData::Fp32(rows.iter().flatten().map(|&v| v as f32).collect()),
        TensorData::Int64(rows.iter().flatten().map(|&v| i64::from(v)).collect()),
        TensorData::Int32(rows.iter().flatten().copied().collect()),
    ];
    for data in variants {
        let datatype = data.datatype();
        let got = predictor
            .predict(&[Tensor::new("input", vec![3, 3], data)], &[])
            .unwrap();
        assert_eq!(got, expected, "{datatype}");
    }
}

#[test]
fn native_rejects_bad_inputs() {
    let predictor = NativePredictor::new(&gbdt_model()).unwrap();
    let cases = [
        (
            Tensor::new("x", vec![1, 3], TensorData::Fp64(vec![0.0; 3])),
            "x",
            "no input with this name",
        ),
        (
            Tensor::new("input", vec![1, 3], TensorData::Bool(vec![false; 3])),
            "input",
            "datatype is BOOL",
        ),
        (
            Tensor::new("input", vec![3], TensorData::Fp64(vec![0.0; 3])),
            "input",
            "rank 1",
        ),
        (
            Tensor::new("input", vec![1, 4], TensorData::Fp64(vec![0.0; 4])),
            "input",
            "dimension 1 is 4, expected 3",
        ),
        (
            Tensor::new("input", vec![2, 3], TensorData::Fp64(vec![0.0; 5])),
            "input",
            "needs 6 elements, but 5",
        ),
        (
            Tensor::new("input", vec![-1, 3], TensorData::Fp64(vec![0.0; 3])),
            "input",
            "negative",
        ),
    ];
    for (tensor, input_name, reason_part) in cases {
        match predictor.predict(&[tensor], &[]) {
            Err(RuntimeError::InvalidInput { input, reason }) => {
                assert_eq!(input, input_name);
                assert!(reason.contains(reason_part), "{reason}");
            }
            other => panic!("expected InvalidInput containing {reason_part:?}, got {other:?}"),
        }
    }
    match predictor.predict(&[], &[]) {
        Err(RuntimeError::InvalidInput { input, reason }) => {
            assert_eq!(input, "input");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected a missing input error, got {other:?}"),
    }
    let output = predictor.predict(
        &[Tensor::new(
            "input",
            vec![1, 3],
            TensorData::Fp64(vec![0.0; 3]),
        )],
        &["label".into()],
    );
    assert!(
        matches!(output, Err(RuntimeError::InvalidOutput { ref output, .. }) if output == "label"),
        "{output:?}"
    );
}

#[test]
fn load_files_reads_model_ghaf() {
    let model = gbdt_model();
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "MLmodel".to_string(),
        b"flavors:\n  ghaf:\n    model_file: model.ghaf\n    onnx_file: model.onnx\n".to_vec(),
    );
    files.insert("model.ghaf".to_string(), model.to_bytes());
    let predictor = load_files(&files, &Default::default()).unwrap();
    let row = vec![1.0, f64::NAN, 2.0];
    let outputs = predictor
        .predict(
            &[Tensor::new(
                "input",
                vec![1, 3],
                TensorData::Fp64(row.clone()),
            )],
            &[],
        )
        .unwrap();
    assert_eq!(outputs[0].data, TensorData::Fp64(vec![model.predict(&row)]));
    assert_eq!(outputs[0].shape, vec![1, 1]);

    files.insert(
        "model.ghaf".to_string(),
        b"{\"format\": \"other\"}".to_vec(),
    );
    let error = load_files(&files, &Default::default()).err().unwrap();
    assert!(
        matches!(error, RuntimeError::Load(ref message) if message.contains("model.ghaf")),
        "{error}"
    );
}
