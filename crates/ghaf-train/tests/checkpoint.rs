//! Checkpoints of the gradient-boosted trees: a run stopped part-way and resumed from its
//! checkpoint ends with the same model as a run that was never interrupted.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use ghaf_train::{
    GbdtCheckpoint, GbdtParams, Model, Objective, TrainError, TrainingControl, train_gbdt,
    train_gbdt_resumable,
};

/// Trains with a stop after `stop_after` stop checks, then resumes from the last checkpoint
/// (passed through its byte form) and returns the resumed result and the checkpoints written.
fn interrupted_then_resumed(
    train: &ghaf_train::Dataset,
    validation: Option<&ghaf_train::Dataset>,
    params: &GbdtParams,
    stop_after: usize,
) -> (ghaf_train::gbdt::GbdtTraining, Vec<GbdtCheckpoint>) {
    let mut written = Vec::new();
    let checks = AtomicUsize::new(0);
    let stop = || checks.fetch_add(1, Ordering::SeqCst) >= stop_after;
    let mut keep = |checkpoint: &GbdtCheckpoint| {
        written.push(GbdtCheckpoint::from_bytes(&checkpoint.to_bytes()).unwrap());
        Ok(())
    };
    let mut control = TrainingControl {
        checkpoint_every: 7,
        on_checkpoint: Some(&mut keep),
        should_stop: Some(&stop),
        ..TrainingControl::default()
    };
    let stopped = train_gbdt_resumable(train, validation, params, &mut control);
    match stopped {
        Err(TrainError::Stopped { rounds }) => assert_eq!(rounds, stop_after),
        Err(other) => panic!("expected a stop, got {other}"),
        Ok(_) => panic!("expected a stop, training finished"),
    }
    let last = written.last().cloned().expect("a checkpoint was written");
    assert_eq!(last.rounds, stop_after);

    let mut resume = TrainingControl {
        resume: Some(last),
        ..TrainingControl::default()
    };
    let resumed = train_gbdt_resumable(train, validation, params, &mut resume).unwrap();
    (resumed, written)
}

#[test]
fn resumed_binary_equals_uninterrupted() {
    let data = common::synthetic(3_000, 11, false);
    let params = GbdtParams {
        objective: Objective::Binary,
        n_estimators: 40,
        min_data_per_group: 20,
        record_train_loss: true,
        ..GbdtParams::default()
    };
    let full = train_gbdt(&data, None, &params).unwrap();
    let (resumed, written) = interrupted_then_resumed(&data, None, &params, 23);

    assert_eq!(
        written.iter().map(|c| c.rounds).collect::<Vec<_>>(),
        vec![7, 14, 21, 23]
    );
    assert_eq!(resumed.model, full.model);
    assert_eq!(
        Model::Gbdt(resumed.model).to_bytes(),
        Model::Gbdt(full.model).to_bytes()
    );
    assert_eq!(resumed.train_predictions, full.train_predictions);
}

#[test]
fn resumed_regression_with_early_stopping_equals_uninterrupted() {
    let data = common::synthetic(2_000, 12, true);
    let (train, validation) = data.train_validation_split(0.25, 3).unwrap();
    let params = GbdtParams {
        objective: Objective::Regression,
        n_estimators: 300,
        learning_rate: 0.3,
        num_leaves: 63,
        min_data_in_leaf: 2,
        early_stopping_rounds: Some(8),
        min_data_per_group: 20,
        ..GbdtParams::default()
    };
    let full = train_gbdt(&train, Some(&validation), &params).unwrap();
    let stop_after = full.model.history().validation_loss.len() / 2;
    let (resumed, _) = interrupted_then_resumed(&train, Some(&validation), &params, stop_after);
    assert_eq!(resumed.model, full.model);
    assert_eq!(resumed.validation_predictions, full.validation_predictions);
}

#[test]
fn checkpoint_of_other_parameters_is_rejected() {
    let data = common::synthetic(1_000, 13, false);
    let params = GbdtParams {
        n_estimators: 10,
        min_data_per_group: 20,
        ..GbdtParams::default()
    };
    let (_, written) = interrupted_then_resumed(&data, None, &params, 8);
    let other = GbdtParams {
        learning_rate: 0.05,
        ..params
    };
    let mut control = TrainingControl {
        resume: written.last().cloned(),
        ..TrainingControl::default()
    };
    let error = train_gbdt_resumable(&data, None, &other, &mut control)
        .err()
        .expect("a mismatched checkpoint is rejected");
    assert!(error.to_string().contains("training parameters"), "{error}");
}
