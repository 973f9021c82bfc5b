//! Fits of the linear and logistic regression trainer against known solutions.

mod common;

use ghaf_train::linear::Encoding;
use ghaf_train::{Column, Dataset, LinearParams, Model, Objective, train_linear};

fn regression(l2: f64) -> LinearParams {
    LinearParams {
        objective: Objective::Regression,
        l2,
        ..LinearParams::default()
    }
}

#[test]
fn linear_regression_recovers_coefficients() {
    let mut rng = common::Rng::new(1);
    let n = 500;
    let x0: Vec<f64> = (0..n).map(|_| rng.normal() * 10.0 + 5.0).collect();
    let x1: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
    let label: Vec<f64> = x0
        .iter()
        .zip(&x1)
        .map(|(a, b)| 2.0 + 3.0 * a - 4.0 * b)
        .collect();
    let data = Dataset::new(vec![Column::f64("x0", x0), Column::f64("x1", x1)], label).unwrap();
    let model = train_linear(&data, &regression(0.0)).unwrap();
    for (row, expected) in [
        ([0.0, 0.0], 2.0),
        ([1.0, 0.0], 5.0),
        ([0.0, 1.0], -2.0),
        ([10.0, 0.5], 30.0),
    ] {
        let predicted = model.predict(&row);
        assert!(
            (predicted - expected).abs() < 1e-8,
            "{row:?}: {predicted} != {expected}"
        );
    }
    assert!(
        model.iterations <= 2,
        "squared error took {} Newton steps",
        model.iterations
    );
}

#[test]
fn l2_shrinks_coefficients() {
    let data = common::synthetic(1_000, 2, true);
    let loose = train_linear(&data, &regression(1e-6)).unwrap();
    let tight = train_linear(&data, &regression(10.0)).unwrap();
    let norm = |c: &[f64]| c.iter().map(|w| w * w).sum::<f64>();
    assert!(norm(&tight.coefficients) < 0.2 * norm(&loose.coefficients));
}

#[test]
fn logistic_regression_matches_group_rates() {
    // With one binary feature and no penalty, the maximum-likelihood fit reproduces the
    // observed rate of each group: 1/4 at x = 0 and 3/4 at x = 1.
    let x: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i >= 200))).collect();
    let label: Vec<f64> = (0..400)
        .map(|i| {
            let group_position = i % 200;
            let positive = if i < 200 {
                group_position < 50
            } else {
                group_position < 150
            };
            f64::from(u8::from(positive))
        })
        .collect();
    let data = Dataset::new(vec![Column::f64("x", x)], label).unwrap();
    let params = LinearParams {
        l2: 0.0,
        ..LinearParams::default()
    };
    let model = train_linear(&data, &params).unwrap();
    assert!((model.predict(&[0.0]) - 0.25).abs() < 1e-9);
    assert!((model.predict(&[1.0]) - 0.75).abs() < 1e-9);
    assert!(
        model.iterations > 1 && model.iterations < 30,
        "{} iterations",
        model.iterations
    );
}

#[test]
fn logistic_regression_learns_synthetic_signal() {
    let data = common::synthetic(3_000, 3, false);
    let (train, valid) = data.train_validation_split(0.25, 1).unwrap();
    let model = train_linear(&train, &LinearParams::default()).unwrap();
    let auc = ghaf_train::metrics::auc(valid.label(), &model.predict_dataset(&valid));
    assert!(auc > 0.8, "validation AUC {auc}");
}

#[test]
fn missing_values_are_mean_imputed() {
    let data = common::synthetic(500, 4, true);
    let model = train_linear(&data, &regression(1e-4)).unwrap();
    let Encoding::Standardized { mean, .. } = model.encodings[0] else {
        panic!("x0 is numeric")
    };
    let with_nan = model.predict(&[f64::NAN, 0.5, 10.0, 3.0, 1.0]);
    let with_mean = model.predict(&[mean, 0.5, 10.0, 3.0, 1.0]);
    assert!((with_nan - with_mean).abs() < 1e-12);
}

#[test]
fn categories_are_one_hot_encoded() {
    let data = common::synthetic(500, 5, true);
    let model = train_linear(&data, &regression(1e-4)).unwrap();
    assert_eq!(model.encodings[3], Encoding::OneHot { n_categories: 12 });
    assert_eq!(model.coefficients.len(), 3 + 12 + 3);
    // Missing and unknown categories both encode as all zeros.
    let missing = model.predict(&[0.0, 0.0, 10.0, f64::NAN, 1.0]);
    let unknown = model.predict(&[0.0, 0.0, 10.0, 40.0, 1.0]);
    assert_eq!(missing, unknown);
}

#[test]
fn iteration_limit_reports_failure() {
    let data = common::synthetic(500, 7, false);
    let params = LinearParams {
        max_iterations: 1,
        ..LinearParams::default()
    };
    let error = train_linear(&data, &params).unwrap_err().to_string();
    assert!(
        error.contains("did not converge in 1 iterations"),
        "{error}"
    );
    assert!(train_linear(&data, &LinearParams::default()).is_ok());
}

#[test]
fn separable_data_saturates_without_penalty() {
    let x: Vec<f64> = (0..100).map(f64::from).collect();
    let label: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i >= 50))).collect();
    let data = Dataset::new(vec![Column::f64("x", x)], label).unwrap();
    let params = LinearParams {
        l2: 0.0,
        ..LinearParams::default()
    };
    let model = train_linear(&data, &params).unwrap();
    assert!(model.predict(&[49.0]) < 1e-6);
    assert!(model.predict(&[50.0]) > 1.0 - 1e-6);
}

#[test]
fn linear_model_file_round_trips() {
    let data = common::synthetic(300, 6, false);
    let model = Model::Linear(train_linear(&data, &LinearParams::default()).unwrap());
    let loaded = Model::from_bytes(&model.to_bytes()).unwrap();
    assert_eq!(loaded, model);
    for row in 0..data.n_rows() {
        assert_eq!(
            loaded.predict(&data.row(row)).to_bits(),
            model.predict(&data.row(row)).to_bits()
        );
    }
}
