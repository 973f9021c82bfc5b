//! The built-in trainer executor: reads the input dataset version, trains gradient-boosted
//! trees or a linear / logistic regression in the worker process, logs params, metrics and
//! artifacts to a tracking run, registers a signed model version with lineage to the dataset
//! version, and applies the quality gate before moving the alias.
//!
//! GBDT training writes a checkpoint (the trees so far) to the blob store every
//! `checkpoint_every` trees and when it is stopped; the next attempt of the job resumes from
//! the latest one and produces the same model as an uninterrupted run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::TryStreamExt;
use ghaf_tracking::{
    Lineage, Metric, NewRun, Param, RegisterVersion, RunStatus, RunUpdate, Scope, Tag,
    TrackingError,
};
use ghaf_train::metrics::{ClassificationReport, RegressionReport};
use ghaf_train::{
    Dataset, FeatureKind, GbdtCheckpoint, GbdtParams, LinearParams, Model, Objective, TrainError,
    TrainingControl,
};
use serde_json::{Value, json};

use super::{CheckpointEvent, ExecError, Executor, JobContext, StopReason, read_training_table};
use crate::gate::{self, GateDecision};
use crate::{CheckpointRef, Job, JobKind, RegisterSpec, Trainer};

/// Path of the native model file below a run's `model` artifact directory.
pub const MODEL_FILE: &str = "model.ghaf";
pub const ONNX_FILE: &str = "model.onnx";

/// Runs built-in training jobs in the worker process.
#[derive(Clone, Debug, Default)]
pub struct BuiltinExecutor;

/// The settings of a built-in job, taken from its spec.
struct Plan {
    trainer: Trainer,
    features: Vec<String>,
    validation_fraction: f64,
    seed: u64,
    checkpoint_every: usize,
    label: String,
}

/// A trained model with its holdout predictions.
struct Trained {
    model: Model,
    validation_predictions: Vec<f64>,
    params: Vec<(String, String)>,
    resumed_from: Option<usize>,
}

#[async_trait]
impl Executor for BuiltinExecutor {
    async fn run(&self, context: &JobContext) -> Result<Value, ExecError> {
        let job = &context.job;
        let plan = plan(job)?;
        let input = job
            .spec
            .inputs
            .first()
            .ok_or_else(|| ExecError::permanent("the job has no input"))?;

        context
            .log
            .system(format!("reading input {}", input.reference()));
        let (parquet, input_digest) = context.services.read_input(job, input).await?;
        let label = plan.label.clone();
        let features = plan.features.clone();
        let table =
            tokio::task::spawn_blocking(move || read_training_table(parquet, &label, &features))
                .await
                .map_err(|error| {
                    ExecError::transient(format!("the input reader panicked: {error}"))
                })??;
        context.log.system(format!(
            "read {} rows ({} without a label left out) with {} features{}",
            table.rows_read,
            table.rows_without_label,
            table.dataset.n_features(),
            if table.skipped_columns.is_empty() {
                String::new()
            } else {
                format!(
                    "; columns of other types skipped: {}",
                    table.skipped_columns.join(", ")
                )
            }
        ));
        let (train, validation) = table
            .dataset
            .train_validation_split(plan.validation_fraction, plan.seed)
            .map_err(|error| ExecError::permanent(error.to_string()))?;
        if train.n_rows() == 0 || validation.n_rows() == 0 {
            return Err(ExecError::permanent(format!(
                "the split left {} training and {} validation rows; the input needs more rows",
                train.n_rows(),
                validation.n_rows()
            )));
        }

        let train_rows = train.n_rows();
        let trained = train_model(context, &plan, train, &validation).await?;
        context.log.system(match trained.resumed_from {
            Some(rounds) => {
                format!("training finished, resumed from a checkpoint of {rounds} trees")
            }
            None => "training finished".to_owned(),
        });

        let metrics = holdout_metrics(
            trained.model.objective(),
            validation.label(),
            &trained.validation_predictions,
        );
        for (key, value) in metrics.iter().filter(|(key, _)| key != CALIBRATION_KEY) {
            context.log.system(format!("holdout {key} = {value:.6}"));
        }

        // A job cancelled or interrupted during training logs and registers nothing.
        if let Some(reason) = context.stop_reason() {
            return Err(ExecError::Stopped(reason));
        }
        let logged = log_run(context, &plan, &trained, &metrics, &input_digest).await?;
        let mut result = json!({
            "run_id": logged.run_id,
            "experiment_id": logged.experiment_id,
            "metrics": metrics.iter().cloned().collect::<serde_json::Map<String, Value>>(),
            "train_rows": train_rows,
            "validation_rows": validation.n_rows(),
            "resumed_from_trees": trained.resumed_from,
        });
        if let Some(register) = &job.spec.register {
            if let Some(reason) = context.stop_reason() {
                return Err(ExecError::Stopped(reason));
            }
            let registered = register_model(
                context,
                register,
                &logged,
                &trained.model,
                &validation,
                &metrics,
            )
            .await?;
            result["model"] = json!({"name": register.model, "version": registered.version});
            if let Some(decision) = registered.decision {
                result["gate"] = serde_json::to_value(&decision).unwrap_or(Value::Null);
            }
        }
        Ok(result)
    }
}

fn plan(job: &Job) -> Result<Plan, ExecError> {
    let JobKind::Builtin {
        trainer,
        features,
        validation_fraction,
        seed,
        checkpoint_every,
    } = &job.spec.kind
    else {
        return Err(ExecError::permanent(
            "the built-in executor got a job of another kind",
        ));
    };
    Ok(Plan {
        trainer: *trainer,
        features: features.clone(),
        validation_fraction: *validation_fraction,
        seed: *seed,
        checkpoint_every: *checkpoint_every,
        label: job.spec.label.clone().unwrap_or_default(),
    })
}

/// Reads trainer parameters from the spec, rejecting keys the trainer does not have.
fn parse_params<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
    parameters: &serde_json::Map<String, Value>,
    ignored: &[&str],
) -> Result<T, ExecError> {
    let known = serde_json::to_value(T::default()).unwrap_or(Value::Null);
    let known = known.as_object().cloned().unwrap_or_default();
    for key in parameters.keys() {
        if !known.contains_key(key) || ignored.contains(&key.as_str()) {
            let mut names: Vec<&str> = known
                .keys()
                .map(String::as_str)
                .filter(|k| !ignored.contains(k))
                .collect();
            names.sort_unstable();
            return Err(ExecError::permanent(format!(
                "unknown trainer parameter {key:?}; this trainer takes {}",
                names.join(", ")
            )));
        }
    }
    serde_json::from_value(Value::Object(parameters.clone()))
        .map_err(|error| ExecError::permanent(format!("invalid trainer parameters: {error}")))
}

fn is_binary(labels: &[f64]) -> bool {
    labels.iter().all(|&y| y == 0.0 || y == 1.0)
}

async fn train_model(
    context: &JobContext,
    plan: &Plan,
    train: Dataset,
    validation: &Dataset,
) -> Result<Trained, ExecError> {
    let job = &context.job;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let stop_reason = Arc::new(std::sync::Mutex::new(None::<StopReason>));
    let watcher = {
        let stop_flag = stop_flag.clone();
        let stop_reason = stop_reason.clone();
        let mut stop = context.stop.clone();
        tokio::spawn(async move {
            loop {
                let reason = *stop.borrow_and_update();
                if let Some(reason) = reason {
                    *stop_reason
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                    stop_flag.store(true, Ordering::SeqCst);
                    return;
                }
                if stop.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let reason = || {
        stop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(StopReason::Interrupted)
    };

    let result = match plan.trainer {
        Trainer::Gbdt => train_gbdt(context, plan, train, validation, stop_flag.clone()).await,
        Trainer::Linear | Trainer::Logistic => {
            let objective = if plan.trainer == Trainer::Logistic {
                if !is_binary(train.label()) {
                    return Err(ExecError::permanent(format!(
                        "logistic regression needs labels 0 or 1 in column {:?}",
                        plan.label
                    )));
                }
                Objective::Binary
            } else {
                Objective::Regression
            };
            let mut params: LinearParams = parse_params(&job.spec.parameters, &["objective"])?;
            params.objective = objective;
            let validation = validation.clone();
            let params_list = vec![
                ("l2".to_owned(), params.l2.to_string()),
                (
                    "max_iterations".to_owned(),
                    params.max_iterations.to_string(),
                ),
                ("tolerance".to_owned(), params.tolerance.to_string()),
            ];
            tokio::task::spawn_blocking(move || {
                let model = ghaf_train::train_linear(&train, &params)?;
                let predictions = model.predict_dataset(&validation);
                Ok(Trained {
                    model: Model::Linear(model),
                    validation_predictions: predictions,
                    params: params_list,
                    resumed_from: None,
                })
            })
            .await
            .map_err(|error| ExecError::transient(format!("training panicked: {error}")))?
            .map_err(|error: TrainError| ExecError::permanent(error.to_string()))
        }
    };
    watcher.abort();
    match result {
        Err(ExecError::Stopped(_)) => Err(ExecError::Stopped(reason())),
        other if stop_flag.load(Ordering::SeqCst) && other.is_err() => {
            Err(ExecError::Stopped(reason()))
        }
        other => other,
    }
}

async fn train_gbdt(
    context: &JobContext,
    plan: &Plan,
    train: Dataset,
    validation: &Dataset,
    stop_flag: Arc<AtomicBool>,
) -> Result<Trained, ExecError> {
    let job = context.job.clone();
    let mut params: GbdtParams = parse_params(&job.spec.parameters, &[])?;
    if !job.spec.parameters.contains_key("objective") {
        params.objective = if is_binary(train.label()) {
            Objective::Binary
        } else {
            Objective::Regression
        };
        context.log.system(format!(
            "objective {} chosen from the label values; set parameters.objective to override",
            if params.objective == Objective::Binary {
                "binary"
            } else {
                "regression"
            }
        ));
    }

    let resume = match &job.checkpoint {
        Some(reference) => match load_checkpoint(context, reference).await {
            Ok(checkpoint) => {
                context.log.system(format!(
                    "resuming from the checkpoint of attempt {} with {} trees",
                    reference.attempt, checkpoint.rounds
                ));
                Some(checkpoint)
            }
            Err(error) => {
                context.log.system(format!(
                    "cannot load the checkpoint, training from the start: {error}"
                ));
                tracing::warn!(job = %job.id, tenant = %job.tenant, %error, "cannot load a job checkpoint");
                None
            }
        },
        None => None,
    };
    let resumed_from = resume.as_ref().map(|checkpoint| checkpoint.rounds);

    let handle = tokio::runtime::Handle::current();
    let services = context.services.clone();
    let lease = context.lease.clone();
    let log = context.log.clone();
    let validation = validation.clone();
    let checkpoint_every = plan.checkpoint_every;
    let params_list: Vec<(String, String)> = serde_json::to_value(&params)
        .ok()
        .and_then(|value| value.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect();

    let outcome = tokio::task::spawn_blocking(move || {
        // NOTE: checkpoint blobs stay in the tenant's blob store after the job ends; nothing
        // deletes superseded ones yet.
        let mut store_checkpoint = |checkpoint: &GbdtCheckpoint| -> Result<(), TrainError> {
            let bytes = checkpoint.to_bytes();
            let size = bytes.len() as u64;
            let saved = handle.block_on(async {
                let blob = services
                    .blobs
                    .put_bytes(&job.tenant, bytes::Bytes::from(bytes))
                    .await
                    .map_err(|error| error.to_string())?;
                let reference = CheckpointRef {
                    digest: blob.digest.to_hex(),
                    size,
                    progress: checkpoint.rounds as u64,
                    attempt: lease.attempt,
                    created_at: ghaf_core::now_millis(),
                };
                services
                    .jobs
                    .save_checkpoint(&lease, &reference, ghaf_core::now_millis())
                    .await
                    .map_err(|error| error.to_string())
            });
            if let Err(error) = saved {
                return Err(TrainError::Failed(format!(
                    "cannot store the checkpoint: {error}"
                )));
            }
            log.system(format!(
                "checkpoint stored after {} trees",
                checkpoint.rounds
            ));
            if let Some(observer) = &services.checkpoint_observer {
                observer(&CheckpointEvent {
                    job: &job,
                    progress: checkpoint.rounds as u64,
                    stop_requested: &stop_flag,
                });
            }
            Ok(())
        };
        let should_stop = || stop_flag.load(Ordering::SeqCst);
        let mut control = TrainingControl {
            resume,
            checkpoint_every,
            on_checkpoint: Some(&mut store_checkpoint),
            should_stop: Some(&should_stop),
        };
        ghaf_train::train_gbdt_resumable(&train, Some(&validation), &params, &mut control)
    })
    .await
    .map_err(|error| ExecError::transient(format!("training panicked: {error}")))?;

    match outcome {
        Ok(training) => Ok(Trained {
            model: Model::Gbdt(training.model),
            validation_predictions: training.validation_predictions,
            params: params_list,
            resumed_from,
        }),
        Err(TrainError::Stopped { rounds }) => {
            context
                .log
                .system(format!("training stopped after {rounds} trees"));
            Err(ExecError::Stopped(StopReason::Interrupted))
        }
        Err(TrainError::Failed(message)) => Err(ExecError::transient(message)),
        Err(error) => Err(ExecError::permanent(error.to_string())),
    }
}

async fn load_checkpoint(
    context: &JobContext,
    reference: &CheckpointRef,
) -> Result<GbdtCheckpoint, String> {
    let digest = reference
        .digest
        .parse()
        .map_err(|_| format!("invalid checkpoint digest {:?}", reference.digest))?;
    let bytes = context
        .services
        .blobs
        .get(&context.job.tenant, &digest)
        .await
        .map_err(|error| error.to_string())?;
    GbdtCheckpoint::from_bytes(&bytes).map_err(|error| error.to_string())
}

/// Key of the calibration table among the holdout metrics; it is stored as the run artifact
/// `calibration.json`, not as a metric.
const CALIBRATION_KEY: &str = "calibration";

/// Returns the expected calibration error: the mean, weighted by row count, of the gap
/// between the mean predicted probability and the observed positive rate of each bin.
fn calibration_error(bins: &[ghaf_train::metrics::CalibrationBin], rows: usize) -> f64 {
    if rows == 0 {
        return f64::NAN;
    }
    bins.iter()
        .filter(|bin| bin.count > 0)
        .map(|bin| bin.count as f64 * (bin.mean_predicted - bin.observed_rate).abs())
        .sum::<f64>()
        / rows as f64
}

/// Returns the holdout metrics: AUC, log loss, accuracy, F1, the expected calibration error
/// and the 10-bin calibration table (binary), or RMSE and MAE.
fn holdout_metrics(
    objective: Objective,
    labels: &[f64],
    predictions: &[f64],
) -> Vec<(String, Value)> {
    match objective {
        Objective::Binary => {
            let report = ClassificationReport::compute(labels, predictions);
            vec![
                ("auc".to_owned(), json!(report.auc)),
                ("log_loss".to_owned(), json!(report.log_loss)),
                ("accuracy".to_owned(), json!(report.accuracy)),
                ("f1".to_owned(), json!(report.f1)),
                (
                    "calibration_error".to_owned(),
                    json!(calibration_error(&report.calibration, labels.len())),
                ),
                (CALIBRATION_KEY.to_owned(), json!(report.calibration)),
            ]
        }
        Objective::Regression => {
            let report = RegressionReport::compute(labels, predictions);
            vec![
                ("rmse".to_owned(), json!(report.rmse)),
                ("mae".to_owned(), json!(report.mae)),
            ]
        }
    }
}

fn metric_value(metrics: &[(String, Value)], key: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_f64())
}

/// Computes one gate metric of `predictions`.
fn score(metric: &str, labels: &[f64], predictions: &[f64]) -> f64 {
    use ghaf_train::metrics;
    match metric {
        "auc" => metrics::auc(labels, predictions),
        "log_loss" => metrics::log_loss(labels, predictions),
        "accuracy" => metrics::accuracy(labels, predictions, 0.5),
        "f1" => metrics::f1(labels, predictions, 0.5),
        "rmse" => metrics::rmse(labels, predictions),
        "mae" => metrics::mae(labels, predictions),
        _ => f64::NAN,
    }
}

struct LoggedRun {
    scope: Scope,
    run_id: String,
    experiment_id: i64,
    input_reference: String,
}

fn tracking_error(what: &str) -> impl Fn(TrackingError) -> ExecError + '_ {
    move |error| {
        let message = format!("cannot {what}: {error}");
        match error.code() {
            ghaf_core::ErrorCode::InvalidArgument | ghaf_core::ErrorCode::NotFound => {
                ExecError::permanent(message)
            }
            _ => ExecError::transient(message),
        }
    }
}

/// Creates the run in the experiment named after the job and logs params, metrics, the
/// model files, the ONNX export and the feature importance.
async fn log_run(
    context: &JobContext,
    plan: &Plan,
    trained: &Trained,
    metrics: &[(String, Value)],
    input_digest: &str,
) -> Result<LoggedRun, ExecError> {
    let job = &context.job;
    let tracking = &context.services.tracking;
    let store = tracking.store();
    let scope = Scope {
        tenant: job.tenant.clone(),
        project: job.project.clone(),
    };
    let experiment_name = format!("job-{}", job.spec.name);
    let experiment = match store.get_experiment_by_name(&scope, &experiment_name).await {
        Ok(experiment) => experiment,
        Err(TrackingError::NotFound { .. }) => match store
            .create_experiment(&scope, &experiment_name, None, &[])
            .await
        {
            Ok(experiment) => experiment,
            Err(TrackingError::AlreadyExists { .. }) => store
                .get_experiment_by_name(&scope, &experiment_name)
                .await
                .map_err(tracking_error("read the experiment"))?,
            Err(error) => return Err(tracking_error("create the experiment")(error)),
        },
        Err(error) => return Err(tracking_error("read the experiment")(error)),
    };
    let input = job
        .spec
        .inputs
        .first()
        .map(|i| i.reference())
        .unwrap_or_default();
    let tag = |key: &str, value: &str| Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    };
    let run = store
        .create_run(
            &scope,
            &NewRun {
                experiment_id: experiment.experiment_id,
                user_id: job.created_by.clone(),
                run_name: Some(format!("{}-attempt-{}", job.spec.name, job.attempt)),
                start_time: Some(ghaf_core::now_millis()),
                tags: vec![
                    tag("ghaf.job_id", &job.id),
                    tag("ghaf.input", &input),
                    tag("ghaf.input_digest", input_digest),
                ],
            },
        )
        .await
        .map_err(tracking_error("create the run"))?;
    let run_id = run.info.run_id.clone();
    context.log.system(format!(
        "logging to run {run_id} of experiment {experiment_name:?}"
    ));

    let trainer = match plan.trainer {
        Trainer::Gbdt => "gbdt",
        Trainer::Linear => "linear",
        Trainer::Logistic => "logistic",
    };
    let features = trained.model.features();
    let mut params = vec![
        ("trainer".to_owned(), trainer.to_owned()),
        ("label".to_owned(), plan.label.clone()),
        ("input".to_owned(), input.clone()),
        ("n_features".to_owned(), features.len().to_string()),
        (
            "validation_fraction".to_owned(),
            plan.validation_fraction.to_string(),
        ),
        ("seed".to_owned(), plan.seed.to_string()),
    ];
    params.extend(trained.params.iter().cloned());
    let params: Vec<Param> = params
        .into_iter()
        .map(|(key, value)| Param { key, value })
        .collect();
    let now = ghaf_core::now_millis();
    let mut logged_metrics: Vec<Metric> = metrics
        .iter()
        .filter_map(|(key, value)| {
            value
                .as_f64()
                .filter(|v| v.is_finite())
                .map(|value| Metric {
                    key: key.clone(),
                    value,
                    timestamp: now,
                    step: 0,
                    model_id: String::new(),
                })
        })
        .collect();
    let mut importance = Value::Null;
    if let Model::Gbdt(model) = &trained.model {
        for (step, loss) in model.history().validation_loss.iter().enumerate() {
            if loss.is_finite() {
                logged_metrics.push(Metric {
                    key: "validation_loss".to_owned(),
                    value: *loss,
                    timestamp: now,
                    step: step as i64 + 1,
                    model_id: String::new(),
                });
            }
        }
        logged_metrics.push(Metric {
            key: "n_trees".to_owned(),
            value: model.trees().len() as f64,
            timestamp: now,
            step: 0,
            model_id: String::new(),
        });
        importance = Value::Array(
            model
                .importance_by_name()
                .into_iter()
                .map(
                    |(name, gain, splits)| json!({"feature": name, "gain": gain, "splits": splits}),
                )
                .collect(),
        );
    }
    for batch in logged_metrics.chunks(ghaf_tracking::MAX_BATCH_METRICS) {
        store
            .log_batch(&scope, &run_id, batch, &[], &[])
            .await
            .map_err(tracking_error("log metrics"))?;
    }
    for batch in params.chunks(ghaf_tracking::MAX_BATCH_PARAMS) {
        store
            .log_batch(&scope, &run_id, &[], batch, &[])
            .await
            .map_err(tracking_error("log params"))?;
    }

    let root = ghaf_tracking::artifact_uri_path(&run.info.artifact_uri)
        .map_err(tracking_error("read the run's artifact location"))?;
    let mlmodel = mlmodel_file(&trained.model, &run_id);
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{root}/model/{MODEL_FILE}"),
            trained.model.to_bytes(),
        ),
        (
            format!("{root}/model/{ONNX_FILE}"),
            ghaf_train::onnx::export(&trained.model),
        ),
        (format!("{root}/model/MLmodel"), mlmodel.into_bytes()),
        (
            format!("{root}/feature_importance.json"),
            serde_json::to_vec_pretty(&importance).unwrap_or_default(),
        ),
    ];
    let mut files = files;
    if let Some((_, table)) = metrics.iter().find(|(key, _)| key == CALIBRATION_KEY) {
        files.push((
            format!("{root}/calibration.json"),
            serde_json::to_vec_pretty(table).unwrap_or_default(),
        ));
    }
    for (path, content) in files {
        let stream =
            futures::stream::once(
                async move { Ok::<_, std::io::Error>(bytes::Bytes::from(content)) },
            );
        tracking
            .put_artifact(&scope, &path, stream)
            .await
            .map_err(tracking_error("store an artifact"))?;
    }
    store
        .update_run(
            &scope,
            &run_id,
            &RunUpdate {
                status: Some(RunStatus::Finished),
                end_time: Some(ghaf_core::now_millis()),
                run_name: None,
            },
        )
        .await
        .map_err(tracking_error("finish the run"))?;
    Ok(LoggedRun {
        scope,
        run_id,
        experiment_id: experiment.experiment_id,
        input_reference: input,
    })
}

/// Writes an MLmodel file with the input and output signature, which the registry copies
/// onto the model version.
fn mlmodel_file(model: &Model, run_id: &str) -> String {
    let inputs: Vec<Value> = model
        .features()
        .iter()
        .map(|feature| {
            let kind = match &feature.kind {
                FeatureKind::Numeric => "numeric",
                FeatureKind::Categorical { .. } => "category code",
            };
            json!({"type": "double", "name": feature.name, "required": false, "ghaf_kind": kind})
        })
        .collect();
    let output = ghaf_train::onnx::output_name(model.objective());
    let outputs = json!([{"type": "double", "name": output, "required": true}]);
    let quote = |value: &Value| value.to_string().replace('\'', "''");
    format!(
        "artifact_path: model\nflavors:\n  ghaf:\n    model_file: {MODEL_FILE}\n    onnx_file: {ONNX_FILE}\n    \
         format_version: {}\nrun_id: {run_id}\nsignature:\n  inputs: '{}'\n  outputs: '{}'\n  params: null\n",
        ghaf_train::model::FORMAT_VERSION,
        quote(&Value::Array(inputs)),
        quote(&outputs),
    )
}

struct Registered {
    version: i64,
    decision: Option<GateDecision>,
}

/// Registers the run's model as a signed version with lineage to the input, then moves the
/// alias when the quality gate passes. The decision and both scores go on the version's tags
/// and into the audit log.
async fn register_model(
    context: &JobContext,
    register: &RegisterSpec,
    logged: &LoggedRun,
    model: &Model,
    validation: &Dataset,
    metrics: &[(String, Value)],
) -> Result<Registered, ExecError> {
    let job = &context.job;
    let tracking = &context.services.tracking;
    let store = tracking.store();
    let scope = &logged.scope;
    match store
        .create_registered_model(scope, &register.model, "", &job.created_by, &[])
        .await
    {
        Ok(_) | Err(TrackingError::AlreadyExists { .. }) => {}
        Err(error) => return Err(tracking_error("create the registered model")(error)),
    }
    let version = tracking
        .register_version(
            scope,
            &RegisterVersion {
                name: register.model.clone(),
                source: format!("runs:/{}/model", logged.run_id),
                run_id: logged.run_id.clone(),
                model_id: String::new(),
                description: format!("trained by job {} ({})", job.spec.name, job.id),
                user_id: job.created_by.clone(),
                tags: vec![Tag {
                    key: "ghaf.job_id".to_owned(),
                    value: job.id.clone(),
                }],
                lineage: Lineage {
                    training_set: Some(format!("dataset:{}", logged.input_reference)),
                    feature_service: None,
                },
            },
        )
        .await
        .map_err(tracking_error("register the model version"))?;
    context.log.system(format!(
        "registered {} version {}",
        register.model, version.version
    ));

    let Some(alias) = &register.alias else {
        return Ok(Registered {
            version: version.version,
            decision: None,
        });
    };
    let resource = format!(
        "projects/{}/models/{}/versions/{}",
        job.project.as_str(),
        register.model,
        version.version
    );
    let decision = match &register.gate {
        None => None,
        Some(gate_spec) => {
            let candidate_score = metric_value(metrics, &gate_spec.metric).unwrap_or_else(|| {
                score(
                    &gate_spec.metric,
                    validation.label(),
                    &model.predict_matrix(&validation.to_row_major()),
                )
            });
            let champion = champion_score(
                context,
                scope,
                &register.model,
                alias,
                &gate_spec.metric,
                validation,
            )
            .await;
            let decision = match champion {
                Ok(champion) => gate::decide(gate_spec, version.version, candidate_score, champion),
                Err(reason) => GateDecision {
                    metric: gate_spec.metric.clone(),
                    margin: gate_spec.margin,
                    candidate_version: version.version,
                    candidate_score,
                    champion_version: None,
                    champion_score: None,
                    promoted: false,
                    reason,
                },
            };
            for (key, value) in [
                ("ghaf.gate.promoted", decision.promoted.to_string()),
                ("ghaf.gate.metric", decision.metric.clone()),
                (
                    "ghaf.gate.candidate_score",
                    decision.candidate_score.to_string(),
                ),
                (
                    "ghaf.gate.champion_score",
                    decision
                        .champion_score
                        .map_or_else(|| "none".to_owned(), |s| s.to_string()),
                ),
                (
                    "ghaf.gate.champion_version",
                    decision
                        .champion_version
                        .map_or_else(|| "none".to_owned(), |v| v.to_string()),
                ),
                ("ghaf.gate.reason", decision.reason.clone()),
            ] {
                store
                    .set_model_version_tag(
                        scope,
                        &register.model,
                        version.version,
                        &Tag {
                            key: key.to_owned(),
                            value,
                        },
                    )
                    .await
                    .map_err(tracking_error("record the gate decision"))?;
            }
            context
                .services
                .audit(
                    job,
                    "jobs.quality_gate",
                    resource.clone(),
                    json!({
                        "alias": alias,
                        "decision": decision,
                    }),
                )
                .await;
            context.log.system(format!(
                "quality gate on {}: candidate {:.6}, champion {}: {}",
                decision.metric,
                decision.candidate_score,
                decision
                    .champion_score
                    .map_or_else(|| "none".to_owned(), |s| format!("{s:.6}")),
                if decision.promoted {
                    "promoted"
                } else {
                    "not promoted"
                }
            ));
            Some(decision)
        }
    };
    if decision.as_ref().is_none_or(|d| d.promoted) {
        store
            .set_alias(scope, &register.model, alias, version.version)
            .await
            .map_err(tracking_error("set the alias"))?;
        context
            .services
            .audit(
                job,
                "models.alias.set",
                resource,
                json!({
                    "alias": alias,
                    "version": version.version,
                }),
            )
            .await;
        context.log.system(format!(
            "alias {alias} now points at version {}",
            version.version
        ));
    }
    Ok(Registered {
        version: version.version,
        decision,
    })
}

/// Scores the version holding `alias` on the candidate's holdout. `Ok(None)` when no version
/// holds it; `Err` with the reason when the champion cannot be scored, which keeps the alias
/// where it is.
async fn champion_score(
    context: &JobContext,
    scope: &Scope,
    model_name: &str,
    alias: &str,
    metric: &str,
    validation: &Dataset,
) -> Result<Option<(i64, f64)>, String> {
    let tracking = &context.services.tracking;
    let champion = match tracking
        .store()
        .get_version_by_alias(scope, model_name, alias)
        .await
    {
        Ok(version) => version,
        Err(TrackingError::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(format!("cannot read the version holding {alias}: {error}")),
    };
    tracking
        .verify_version(scope, &champion)
        .await
        .map_err(|error| {
            format!(
                "the champion version {} failed verification: {error}",
                champion.version
            )
        })?;
    let path = format!("{}/{MODEL_FILE}", champion.artifact_prefix);
    let content = tracking
        .open_artifact(scope, &path)
        .await
        .map_err(|error| {
            format!(
                "the champion version {} has no built-in model file: {error}",
                champion.version
            )
        })?;
    let bytes: Vec<u8> = content
        .stream
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await
        .map_err(|error| format!("cannot read the champion's model file: {error}"))?;
    let model = Model::from_bytes(&bytes).map_err(|error| error.to_string())?;
    let rows = rows_for_model(&model, validation).ok_or_else(|| {
        format!(
            "the champion version {} uses features the holdout does not have, so the two cannot be compared on it",
            champion.version
        )
    })?;
    let predictions = model.predict_matrix(&rows);
    Ok(Some((
        champion.version,
        score(metric, validation.label(), &predictions),
    )))
}

/// Builds the rows a model expects from `data`, by feature name. Categories are matched by
/// name, because two dataset versions can number them differently; a category the model
/// never saw is passed as missing. `None` when a feature is absent or has another type.
fn rows_for_model(model: &Model, data: &Dataset) -> Option<Vec<f64>> {
    let features = model.features();
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(features.len());
    for feature in features {
        let column = data.columns().iter().find(|c| c.name == feature.name)?;
        let values: Vec<f64> = match (&feature.kind, &column.data) {
            (
                FeatureKind::Numeric,
                ghaf_train::ColumnData::F64(_) | ghaf_train::ColumnData::F32(_),
            ) => (0..column.len()).map(|row| column.value(row)).collect(),
            (
                FeatureKind::Categorical {
                    categories: model_categories,
                },
                ghaf_train::ColumnData::Categorical { codes, categories },
            ) => {
                let index: std::collections::HashMap<&str, usize> = model_categories
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.as_str(), i))
                    .collect();
                let mapping: Vec<f64> = categories
                    .iter()
                    .map(|name| {
                        index
                            .get(name.as_str())
                            .map_or(f64::NAN, |&code| code as f64)
                    })
                    .collect();
                codes
                    .iter()
                    .map(|&code| {
                        if code < 0 {
                            f64::NAN
                        } else {
                            mapping[code as usize]
                        }
                    })
                    .collect()
            }
            _ => return None,
        };
        columns.push(values);
    }
    let mut rows = Vec::with_capacity(data.n_rows() * features.len());
    for row in 0..data.n_rows() {
        for column in &columns {
            rows.push(column[row]);
        }
    }
    Some(rows)
}
