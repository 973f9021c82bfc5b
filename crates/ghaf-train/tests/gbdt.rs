//! Training behaviour of the gradient-boosted trees.

mod common;

use ghaf_train::gbdt::tree::Split;
use ghaf_train::metrics::{auc, rmse};
use ghaf_train::{Column, Dataset, GbdtParams, Model, Objective, train_gbdt};

fn params(objective: Objective) -> GbdtParams {
    GbdtParams {
        objective,
        n_estimators: 60,
        min_data_per_group: 20,
        ..GbdtParams::default()
    }
}

#[test]
fn binary_learns_signal() {
    let data = common::synthetic(4_000, 1, false);
    let (train, valid) = data.train_validation_split(0.25, 3).unwrap();
    let params = GbdtParams {
        record_train_loss: true,
        ..params(Objective::Binary)
    };
    let result = train_gbdt(&train, Some(&valid), &params).unwrap();
    let score = auc(valid.label(), &result.validation_predictions);
    assert!(score > 0.80, "validation AUC {score}");
    let losses = &result.model.history().train_loss;
    assert!(
        losses.last().unwrap() < &losses[0],
        "training loss did not fall: {losses:?}"
    );
}

#[test]
fn regression_learns_signal() {
    let data = common::synthetic(4_000, 2, true);
    let (train, valid) = data.train_validation_split(0.25, 3).unwrap();
    let result = train_gbdt(&train, Some(&valid), &params(Objective::Regression)).unwrap();
    let error = rmse(valid.label(), &result.validation_predictions);
    let mean = valid.label().iter().sum::<f64>() / valid.n_rows() as f64;
    let baseline = rmse(valid.label(), &vec![mean; valid.n_rows()]);
    assert!(
        error < 0.5 * baseline,
        "rmse {error} against constant-model rmse {baseline}"
    );
}

#[test]
fn native_predictions_equal_training_predictions() {
    for objective in [Objective::Binary, Objective::Regression] {
        let data = common::synthetic(2_000, 4, objective == Objective::Regression);
        let (train, valid) = data.train_validation_split(0.3, 5).unwrap();
        let result = train_gbdt(&train, Some(&valid), &params(objective)).unwrap();
        let model = Model::Gbdt(result.model);
        let loaded = Model::from_bytes(&model.to_bytes()).unwrap();
        assert_eq!(loaded, model);

        let batch = loaded.predict_matrix(&valid.to_row_major());
        assert_eq!(batch, result.validation_predictions);

        for (set, expected) in [
            (&train, &result.train_predictions),
            (&valid, &result.validation_predictions),
        ] {
            for (row, trained) in expected.iter().enumerate() {
                let native = loaded.predict(&set.row(row));
                assert_eq!(
                    native.to_bits(),
                    trained.to_bits(),
                    "{objective:?} row {row}"
                );
            }
        }
    }
}

#[test]
fn training_is_deterministic() {
    let data = common::synthetic(1_500, 6, false);
    let first = train_gbdt(&data, None, &params(Objective::Binary)).unwrap();
    let second = train_gbdt(&data, None, &params(Objective::Binary)).unwrap();
    assert_eq!(first.model, second.model);
    assert_eq!(
        Model::Gbdt(first.model).to_bytes(),
        Model::Gbdt(second.model).to_bytes()
    );
}

#[test]
fn early_stopping_keeps_best_round() {
    let data = common::synthetic(1_500, 7, false);
    let (train, valid) = data.train_validation_split(0.3, 1).unwrap();
    let params = GbdtParams {
        n_estimators: 400,
        learning_rate: 0.3,
        num_leaves: 63,
        min_data_in_leaf: 2,
        early_stopping_rounds: Some(10),
        ..GbdtParams::default()
    };
    let result = train_gbdt(&train, Some(&valid), &params).unwrap();
    let history = &result.model.history();
    assert!(history.validation_loss.len() < 400, "did not stop early");
    assert_eq!(result.model.trees().len(), history.best_n_trees);
    assert_eq!(history.validation_loss.len(), history.best_n_trees + 10);
    let best = history
        .validation_loss
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    assert_eq!(history.validation_loss[history.best_n_trees - 1], best);
    let recomputed =
        ghaf_train::metrics::log_loss(valid.label(), &result.model.predict_dataset(&valid));
    assert!((recomputed - best).abs() < 1e-12);
}

#[test]
fn missing_values_learn_direction() {
    // The label is 1 exactly when x is missing, so the only useful split sends NaN one way.
    let n = 400;
    let x: Vec<f64> = (0..n)
        .map(|i| {
            if i % 4 == 0 {
                f64::NAN
            } else {
                f64::from(i % 7)
            }
        })
        .collect();
    let label: Vec<f64> = x.iter().map(|v| f64::from(u8::from(v.is_nan()))).collect();
    let data = Dataset::new(vec![Column::f64("x", x)], label).unwrap();

    let params = GbdtParams {
        n_estimators: 20,
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;
    let missing = model.predict(&[f64::NAN]);
    let present = model.predict(&[3.0]);
    assert!(missing > 0.9, "P(y=1 | missing) = {missing}");
    assert!(present < 0.1, "P(y=1 | 3.0) = {present}");

    // The first tree isolates missing values from every present value.
    let first = &model.trees()[0];
    let missing_leaf = first.leaf_index(&[f64::NAN]);
    for value in 0..7 {
        assert_ne!(
            first.leaf_index(&[f64::from(value)]),
            missing_leaf,
            "value {value}"
        );
    }
}

#[test]
fn categorical_partition_split() {
    // Categories 1, 4 and 7 have label 1; a numeric threshold on the code cannot separate them.
    let n = 3_000;
    let codes: Vec<i32> = (0..n).map(|i| i % 10).collect();
    let label: Vec<f64> = codes
        .iter()
        .map(|c| f64::from(u8::from([1, 4, 7].contains(c))))
        .collect();
    let categories = (0..10).map(|i| format!("c{i}")).collect();
    let data = Dataset::new(vec![Column::categorical("c", codes, categories)], label).unwrap();

    let params = GbdtParams {
        n_estimators: 10,
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;

    let root = &model.trees()[0].nodes[0];
    let Split::Categorical { categories } = &root.split else {
        panic!("root split is not categorical")
    };
    let mut left = categories.clone();
    left.sort_unstable();
    assert!(
        left == vec![1, 4, 7] || left == vec![0, 2, 3, 5, 6, 8, 9],
        "left set {left:?}"
    );
    assert_eq!(
        model.trees()[0].nodes.len(),
        1,
        "one split separates the classes"
    );

    for code in 0..10 {
        let p = model.predict(&[f64::from(code)]);
        assert_eq!(p > 0.5, [1, 4, 7].contains(&code), "code {code}: {p}");
    }
    // An unknown category takes the right branch of the root.
    assert!(root.right < 0, "the root's right child is a leaf");
    let right_leaf = (-root.right - 1) as usize;
    assert_eq!(model.trees()[0].leaf_index(&[99.0]), right_leaf);
}

#[test]
fn feature_importance_ranks_informative_feature() {
    let mut rng = common::Rng::new(11);
    let n = 2_000;
    let signal: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let noise: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let label: Vec<f64> = signal
        .iter()
        .map(|s| f64::from(u8::from(*s > 0.3)))
        .collect();
    let data = Dataset::new(
        vec![Column::f64("noise", noise), Column::f64("signal", signal)],
        label,
    )
    .unwrap();
    let model = train_gbdt(
        &data,
        None,
        &GbdtParams {
            n_estimators: 20,
            ..GbdtParams::default()
        },
    )
    .unwrap()
    .model;
    let importance = &model.feature_importance();
    assert!(
        importance.gain[1] > 10.0 * importance.gain[0],
        "{importance:?}"
    );
    assert!(importance.split_count[1] > 0);
    let ranked = model.importance_by_name();
    assert_eq!(ranked[0].0, "signal");
    assert_eq!(ranked[0].2, importance.split_count[1]);

    let total_splits: usize = model.trees().iter().map(|t| t.nodes.len()).sum();
    assert_eq!(
        importance.split_count.iter().sum::<u64>() as usize,
        total_splits
    );
}

#[test]
fn depth_and_leaf_limits_hold() {
    let data = common::synthetic(2_000, 8, false);
    let params = GbdtParams {
        n_estimators: 5,
        num_leaves: 7,
        max_depth: Some(2),
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;
    for tree in model.trees() {
        assert!(
            tree.leaf_values.len() <= 4,
            "depth 2 allows at most 4 leaves"
        );
    }
    let params = GbdtParams {
        n_estimators: 5,
        num_leaves: 5,
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;
    assert!(model.trees().iter().all(|t| t.leaf_values.len() <= 5));
}

#[test]
fn min_data_in_leaf_holds() {
    let data = common::synthetic(1_000, 9, false);
    let params = GbdtParams {
        n_estimators: 3,
        min_data_in_leaf: 150,
        ..GbdtParams::default()
    };
    let result = train_gbdt(&data, None, &params).unwrap();
    for tree in result.model.trees() {
        let mut counts = vec![0usize; tree.leaf_values.len()];
        for row in 0..data.n_rows() {
            counts[tree.leaf_index(&data.row(row))] += 1;
        }
        assert!(counts.iter().all(|&c| c >= 150), "leaf sizes {counts:?}");
    }
}

#[test]
fn invalid_inputs_are_rejected() {
    let data = common::synthetic(100, 10, true);
    let binary = train_gbdt(&data, None, &GbdtParams::default());
    assert!(
        binary.is_err(),
        "regression labels accepted for binary training"
    );
    let no_validation = GbdtParams {
        early_stopping_rounds: Some(5),
        ..GbdtParams::default()
    };
    assert!(train_gbdt(&common::synthetic(100, 10, false), None, &no_validation).is_err());
    let bins = GbdtParams {
        max_bins: 300,
        ..GbdtParams::default()
    };
    assert!(train_gbdt(&common::synthetic(100, 10, false), None, &bins).is_err());
}

#[test]
fn model_file_rejects_other_versions() {
    let data = common::synthetic(300, 12, false);
    let model = Model::Gbdt(
        train_gbdt(
            &data,
            None,
            &GbdtParams {
                n_estimators: 3,
                ..GbdtParams::default()
            },
        )
        .unwrap()
        .model,
    );
    let text = String::from_utf8(model.to_bytes()).unwrap();
    let newer = text.replacen("\"version\":1", "\"version\":2", 1);
    let error = Model::from_bytes(newer.as_bytes()).unwrap_err().to_string();
    assert!(error.contains("version 2"), "{error}");
    assert!(Model::from_bytes(b"{}").is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Random columns with missing values, ties and categories: the loaded model reproduces
    /// the training loop's predictions bit for bit.
    #[test]
    fn random_data_predictions_round_trip(
        rows in proptest::collection::vec(
            (proptest::option::of(-5i32..5), proptest::option::of(0i32..6), 0u8..2),
            40..160,
        ),
        seed in 0u64..1_000,
    ) {
        let numeric: Vec<f64> = rows.iter().map(|r| r.0.map_or(f64::NAN, f64::from)).collect();
        let codes: Vec<i32> = rows.iter().map(|r| r.1.unwrap_or(-1)).collect();
        let label: Vec<f64> = rows.iter().map(|r| f64::from(r.2)).collect();
        let categories = (0..6).map(|i| format!("c{i}")).collect();
        let data = Dataset::new(
            vec![Column::f64("x", numeric), Column::categorical("c", codes, categories)],
            label,
        )
        .unwrap();
        let (train, valid) = data.train_validation_split(0.25, seed).unwrap();
        let params = GbdtParams {
            n_estimators: 8,
            min_data_in_leaf: 3,
            min_data_per_group: 1,
            max_cat_to_onehot: 2,
            ..GbdtParams::default()
        };
        let result = train_gbdt(&train, Some(&valid), &params).unwrap();
        let model = Model::from_bytes(&Model::Gbdt(result.model).to_bytes()).unwrap();
        for (row, trained) in result.train_predictions.iter().enumerate() {
            proptest::prop_assert_eq!(model.predict(&train.row(row)).to_bits(), trained.to_bits());
        }
        for (row, trained) in result.validation_predictions.iter().enumerate() {
            proptest::prop_assert_eq!(model.predict(&valid.row(row)).to_bits(), trained.to_bits());
        }
    }
}

#[test]
fn deserialised_tree_model_predicts() {
    let data = common::synthetic(500, 13, false);
    let params = GbdtParams {
        n_estimators: 5,
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;
    let json = serde_json::to_string(&model).unwrap();

    let loaded: ghaf_train::GbdtModel = serde_json::from_str(&json).unwrap();
    for row in 0..data.n_rows() {
        assert_eq!(
            loaded.predict(&data.row(row)),
            model.predict(&data.row(row))
        );
    }
}

#[test]
fn corrupt_tree_references_are_rejected() {
    let data = common::synthetic(500, 14, false);
    let params = GbdtParams {
        n_estimators: 2,
        ..GbdtParams::default()
    };
    let model = train_gbdt(&data, None, &params).unwrap().model;
    let mut value = serde_json::to_value(&model).unwrap();

    // A child that points back at the root would make prediction loop forever.
    value["trees"][0]["nodes"][0]["left"] = serde_json::json!(0);
    let error = serde_json::from_value::<ghaf_train::GbdtModel>(value)
        .unwrap_err()
        .to_string();
    assert!(error.contains("child reference out of range"), "{error}");
}
