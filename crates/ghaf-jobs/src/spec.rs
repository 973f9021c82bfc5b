//! Job specifications: what a job runs, on which inputs, with which resources, priority and
//! retry policy. A specification is JSON (or the same shape in YAML on the command line) and
//! is checked once, at submission, by [`JobSpec::validate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::JobError;

/// Largest accepted `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Largest accepted backoff delay, in seconds (one day).
pub const MAX_BACKOFF_SECONDS: u64 = 86_400;

/// A job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Name shown in listings; lowercase letters, digits, `-`, `_` and `.`.
    pub name: String,
    pub kind: JobKind,
    /// Training data. Built-in trainers need exactly one input.
    #[serde(default)]
    pub inputs: Vec<JobInput>,
    /// Label column of the input, for built-in trainers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Trainer parameters (built-in jobs) or free-form values passed to the command as
    /// `GHAF_PARAMETERS` (JSON).
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub resources: Resources,
    /// Higher runs first; ties go to the older job. Range -1000 to 1000.
    #[serde(default)]
    pub priority: i32,
    /// Attempts before the job is failed for good, counting the first one. Interruptions by
    /// SIGTERM (spot reclaim, worker shutdown) do not count.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// Where a built-in job registers its model, and the quality gate for the alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<RegisterSpec>,
}

fn default_max_attempts() -> u32 {
    3
}

/// What runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobKind {
    /// A built-in trainer, run inside the worker process.
    Builtin {
        trainer: Trainer,
        /// Feature columns; empty means every column except the label.
        #[serde(default)]
        features: Vec<String>,
        /// Share of rows held out for validation and for the quality gate.
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
        /// Seed of the train/validation split.
        #[serde(default = "default_seed")]
        seed: u64,
        /// GBDT only: write a checkpoint after every this many trees; 0 writes none.
        #[serde(default = "default_checkpoint_every")]
        checkpoint_every: usize,
    },
    /// A program started by the worker, with the tracking URI and token in its environment.
    Command {
        /// Program and arguments; not run through a shell.
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Time limit in seconds; the program is stopped and the attempt fails after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<u64>,
    },
    /// A Kubernetes `batch/v1` Job created by the worker, which follows its status.
    Kubernetes {
        image: String,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Node labels the pod must match, such as a spot node pool's label.
        #[serde(default)]
        node_selector: BTreeMap<String, String>,
        /// Tolerations for tainted nodes, such as spot pools.
        #[serde(default)]
        tolerations: Vec<Toleration>,
        /// A persistent volume claim mounted for checkpoints, so an attempt on a new node
        /// resumes where a reclaimed one stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_volume: Option<CheckpointVolume>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_account: Option<String>,
    },
    /// Scores every row of a dataset version with a registered model version, verified
    /// before loading, and stores the scores as a new version of `output_dataset`.
    BatchScore {
        /// Input dataset of the job's project.
        dataset: String,
        /// Input version; the latest when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset_version: Option<i64>,
        /// Registered model name.
        model: String,
        /// Model version; give it or `model_alias`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_version: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_alias: Option<String>,
        /// Dataset that receives the scores; created when missing.
        output_dataset: String,
        /// Input columns copied to the output; every column when empty.
        #[serde(default)]
        passthrough: Vec<String>,
        /// Rows scored per chunk.
        #[serde(default = "default_chunk_rows")]
        chunk_rows: usize,
    },
}

fn default_chunk_rows() -> usize {
    10_000
}

fn default_validation_fraction() -> f64 {
    0.2
}

fn default_seed() -> u64 {
    42
}

fn default_checkpoint_every() -> usize {
    10
}

impl JobKind {
    /// Returns the name stored in the `kind` column: `builtin`, `command` or `kubernetes`.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Builtin { .. } => "builtin",
            JobKind::Command { .. } => "command",
            JobKind::Kubernetes { .. } => "kubernetes",
            JobKind::BatchScore { .. } => "batch_score",
        }
    }
}

/// A built-in trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainer {
    /// Gradient-boosted trees; `parameters` are `GbdtParams` fields.
    Gbdt,
    /// Linear regression; `parameters` are `LinearParams` fields except `objective`.
    Linear,
    /// Logistic regression; `parameters` are `LinearParams` fields except `objective`.
    Logistic,
}

/// A Kubernetes toleration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default = "default_operator")]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; unset matches every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

fn default_operator() -> String {
    "Equal".to_owned()
}

/// A persistent volume claim mounted for checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointVolume {
    pub claim_name: String,
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
}

fn default_mount_path() -> String {
    "/checkpoints".to_owned()
}

/// One input of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobInput {
    /// A version of a dataset of the job's project, used as the training set.
    DatasetVersion { dataset: String, version: i64 },
    /// Features from a feature service joined point-in-time onto an entity table (a dataset
    /// version). The worker builds the training set as a new version of the dataset
    /// `<feature_service>-training-set` and trains on it.
    FeatureService {
        feature_service: String,
        entity_dataset: String,
        entity_version: i64,
    },
}

impl JobInput {
    /// Returns the `dataset@version` reference recorded in lineage.
    pub fn reference(&self) -> String {
        match self {
            JobInput::DatasetVersion { dataset, version } => format!("{dataset}@{version}"),
            JobInput::FeatureService {
                feature_service,
                entity_dataset,
                entity_version,
            } => format!("{feature_service}({entity_dataset}@{entity_version})"),
        }
    }
}

/// Resources a job needs while it runs; tenant quotas count them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPU cores, fractions allowed (0.5 is half a core), counted in thousandths.
    pub cpus: f64,
    pub memory_mb: u64,
    pub gpus: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: 1.0,
            memory_mb: 1024,
            gpus: 0,
        }
    }
}

impl Resources {
    /// Returns the CPU request in thousandths of a core.
    pub fn millicpus(&self) -> i64 {
        // Validation admits any positive request; it never counts as zero against a quota.
        ((self.cpus * 1000.0).round() as i64).max(1)
    }
}

/// Delay before a failed attempt is retried: `initial_seconds * multiplier^(failures - 1)`,
/// at most `max_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_seconds: u64,
    pub multiplier: f64,
    pub max_seconds: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_seconds: 10,
            multiplier: 2.0,
            max_seconds: 600,
        }
    }
}

impl Backoff {
    /// Returns the delay in milliseconds after the `failures`-th failed attempt (1-based).
    pub fn delay_millis(&self, failures: u32) -> i64 {
        let exponent = failures.saturating_sub(1).min(63) as i32;
        let seconds = self.initial_seconds as f64 * self.multiplier.powi(exponent);
        let capped = seconds.min(self.max_seconds as f64);
        (capped * 1000.0).round() as i64
    }
}

/// Registration of a built-in job's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// Registered model name; created when missing.
    pub model: String,
    /// Alias given to the new version when it passes the gate, such as `champion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The gate for the alias; without one, the alias always moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<QualityGate>,
}

/// A candidate gets the alias only if it beats the version holding it, on the same holdout,
/// by at least `margin` of `metric`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityGate {
    /// `auc`, `accuracy`, `f1` (higher is better), `log_loss`, `rmse` or `mae` (lower is
    /// better).
    pub metric: String,
    /// Required improvement, in the metric's units; 0 accepts any improvement.
    #[serde(default)]
    pub margin: f64,
}

impl JobSpec {
    /// Parses a specification from JSON, naming the field of the first error.
    pub fn from_json(value: serde_json::Value) -> Result<Self, JobError> {
        let spec: JobSpec = serde_json::from_value(value)
            .map_err(|error| JobError::invalid("spec", error.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field; the first problem is returned with the field's path.
    pub fn validate(&self) -> Result<(), JobError> {
        ghaf_core::Name::parse(&self.name)
            .map_err(|error| JobError::invalid("name", error.to_string()))?;
        if !(-1000..=1000).contains(&self.priority) {
            return Err(JobError::invalid(
                "priority",
                format!("priority is {}; use -1000 to 1000", self.priority),
            ));
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(JobError::invalid(
                "max_attempts",
                format!(
                    "max_attempts is {}; use 1 to {MAX_ATTEMPTS_LIMIT}",
                    self.max_attempts
                ),
            ));
        }
        self.validate_backoff()?;
        self.validate_resources()?;
        for (index, input) in self.inputs.iter().enumerate() {
            validate_input(index, input)?;
        }
        match &self.kind {
            JobKind::Builtin {
                validation_fraction,
                ..
            } => self.validate_builtin(*validation_fraction)?,
            JobKind::Command { command, .. } => {
                if command.is_empty() || command[0].is_empty() {
                    return Err(JobError::invalid(
                        "kind.command",
                        "the command is empty; give the program and its arguments as a list",
                    ));
                }
            }
            JobKind::Kubernetes {
                image, tolerations, ..
            } => {
                if image.trim().is_empty() {
                    return Err(JobError::invalid("kind.image", "the image is empty"));
                }
                for toleration in tolerations {
                    if !matches!(toleration.operator.as_str(), "Equal" | "Exists") {
                        return Err(JobError::invalid(
                            "kind.tolerations",
                            format!(
                                "toleration operator {:?} is invalid; use Equal or Exists",
                                toleration.operator
                            ),
                        ));
                    }
                }
            }
            JobKind::BatchScore { .. } => {}
        }
        if let JobKind::BatchScore {
            dataset,
            dataset_version,
            model,
            model_version,
            model_alias,
            output_dataset,
            chunk_rows,
            ..
        } = &self.kind
        {
            validate_batch_score(
                dataset,
                *dataset_version,
                model,
                *model_version,
                model_alias.as_deref(),
                output_dataset,
                *chunk_rows,
            )?;
            if !self.inputs.is_empty() {
                return Err(JobError::invalid(
                    "inputs",
                    "batch_score jobs name their input in kind.dataset; leave inputs empty",
                ));
            }
        }
        if let Some(register) = &self.register {
            validate_register(register, &self.kind)?;
        }
        Ok(())
    }

    fn validate_backoff(&self) -> Result<(), JobError> {
        let backoff = &self.backoff;
        if !(backoff.multiplier >= 1.0 && backoff.multiplier <= 10.0) {
            return Err(JobError::invalid(
                "backoff.multiplier",
                format!("multiplier is {}; use 1 to 10", backoff.multiplier),
            ));
        }
        if backoff.initial_seconds > backoff.max_seconds
            || backoff.max_seconds > MAX_BACKOFF_SECONDS
        {
            return Err(JobError::invalid(
                "backoff",
                format!(
                    "initial_seconds ({}) must not exceed max_seconds ({}), and max_seconds must \
                     be at most {MAX_BACKOFF_SECONDS}",
                    backoff.initial_seconds, backoff.max_seconds
                ),
            ));
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), JobError> {
        let resources = &self.resources;
        if !(resources.cpus > 0.0 && resources.cpus <= 1024.0) {
            return Err(JobError::invalid(
                "resources.cpus",
                format!(
                    "cpus is {}; use more than 0 and at most 1024",
                    resources.cpus
                ),
            ));
        }
        if resources.memory_mb == 0 || resources.gpus > 64 {
            return Err(JobError::invalid(
                "resources",
                "memory_mb must be at least 1 and gpus at most 64",
            ));
        }
        Ok(())
    }

    fn validate_builtin(&self, validation_fraction: f64) -> Result<(), JobError> {
        if self.inputs.len() != 1 {
            return Err(JobError::invalid(
                "inputs",
                format!(
                    "a built-in training job takes exactly one input, got {}",
                    self.inputs.len()
                ),
            ));
        }
        if self.label.as_deref().is_none_or(str::is_empty) {
            return Err(JobError::invalid(
                "label",
                "a built-in training job needs the label column in `label`",
            ));
        }
        if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
            return Err(JobError::invalid(
                "kind.validation_fraction",
                format!(
                    "validation_fraction is {validation_fraction}; use a value between 0 and 1, \
                     because the holdout gives the metrics and the quality gate"
                ),
            ));
        }
        if self.resources.gpus > 0 {
            return Err(JobError::invalid(
                "resources.gpus",
                "built-in trainers run on CPUs; request gpus only for command or kubernetes jobs",
            ));
        }
        Ok(())
    }
}

fn validate_input(index: usize, input: &JobInput) -> Result<(), JobError> {
    match input {
        JobInput::DatasetVersion { dataset, version } => {
            ghaf_core::Name::parse(dataset).map_err(|error| {
                JobError::invalid(format!("inputs[{index}].dataset"), error.to_string())
            })?;
            if *version < 1 {
                return Err(JobError::invalid(
                    format!("inputs[{index}].version"),
                    format!("version is {version}; dataset versions start at 1"),
                ));
            }
            Ok(())
        }
        JobInput::FeatureService {
            feature_service,
            entity_dataset,
            entity_version,
        } => {
            ghaf_core::Name::parse(feature_service).map_err(|error| {
                JobError::invalid(
                    format!("inputs[{index}].feature_service"),
                    error.to_string(),
                )
            })?;
            ghaf_core::Name::parse(entity_dataset).map_err(|error| {
                JobError::invalid(format!("inputs[{index}].entity_dataset"), error.to_string())
            })?;
            if *entity_version < 1 {
                return Err(JobError::invalid(
                    format!("inputs[{index}].entity_version"),
                    format!("entity_version is {entity_version}; dataset versions start at 1"),
                ));
            }
            Ok(())
        }
    }
}

fn validate_batch_score(
    dataset: &str,
    dataset_version: Option<i64>,
    model: &str,
    model_version: Option<i64>,
    model_alias: Option<&str>,
    output_dataset: &str,
    chunk_rows: usize,
) -> Result<(), JobError> {
    if dataset.trim().is_empty() {
        return Err(JobError::invalid("kind.dataset", "name the input dataset"));
    }
    if dataset_version.is_some_and(|v| v < 1) {
        return Err(JobError::invalid(
            "kind.dataset_version",
            "dataset versions start at 1; leave it out for the latest",
        ));
    }
    if model.trim().is_empty() || model.len() > 256 {
        return Err(JobError::invalid(
            "kind.model",
            "the model name must have 1 to 256 characters",
        ));
    }
    match (model_version, model_alias) {
        (Some(version), None) if version >= 1 => {}
        (None, Some(alias)) if !alias.trim().is_empty() => {}
        _ => {
            return Err(JobError::invalid(
                "kind.model_version",
                "give either model_version (1 or more) or model_alias, not both",
            ));
        }
    }
    if ghaf_core::Name::parse(output_dataset).is_err() {
        return Err(JobError::invalid(
            "kind.output_dataset",
            format!(
                "output dataset {output_dataset:?} is not a valid name; use 1 to 63 lowercase letters, digits and '-'"
            ),
        ));
    }
    if !(1..=1_000_000).contains(&chunk_rows) {
        return Err(JobError::invalid(
            "kind.chunk_rows",
            format!("chunk_rows is {chunk_rows}; use 1 to 1000000"),
        ));
    }
    Ok(())
}

fn validate_register(register: &RegisterSpec, kind: &JobKind) -> Result<(), JobError> {
    if !matches!(kind, JobKind::Builtin { .. }) {
        return Err(JobError::invalid(
            "register",
            "only built-in jobs register models; other jobs register through the MLflow API",
        ));
    }
    if register.model.trim().is_empty() || register.model.len() > 256 {
        return Err(JobError::invalid(
            "register.model",
            "the model name must have 1 to 256 characters",
        ));
    }
    if let Some(alias) = &register.alias
        && (alias.is_empty()
            || alias.len() > 255
            || !alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(JobError::invalid(
            "register.alias",
            format!("alias {alias:?} is invalid; use letters, digits, '_' and '-'"),
        ));
    }
    if let Some(gate) = &register.gate {
        if register.alias.is_none() {
            return Err(JobError::invalid(
                "register.gate",
                "a quality gate needs the alias it guards in register.alias",
            ));
        }
        if crate::gate::Direction::of(&gate.metric).is_none() {
            return Err(JobError::invalid(
                "register.gate.metric",
                format!(
                    "metric {:?} is unknown; use auc, accuracy, f1, log_loss, rmse or mae",
                    gate.metric
                ),
            ));
        }
        if !(gate.margin.is_finite() && gate.margin >= 0.0) {
            return Err(JobError::invalid(
                "register.gate.margin",
                format!("margin is {}; use a finite value of 0 or more", gate.margin),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> serde_json::Value {
        serde_json::json!({
            "name": "flights-gbdt",
            "kind": {"type": "builtin", "trainer": "gbdt"},
            "inputs": [{"type": "dataset_version", "dataset": "flights", "version": 1}],
            "label": "delayed",
        })
    }

    #[test]
    fn builtin_spec_gets_defaults() {
        let spec = JobSpec::from_json(builtin()).unwrap();
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(spec.resources, Resources::default());
        assert_eq!(spec.backoff, Backoff::default());
        let JobKind::Builtin {
            checkpoint_every,
            validation_fraction,
            ..
        } = spec.kind
        else {
            panic!("builtin kind expected");
        };
        assert_eq!(checkpoint_every, 10);
        assert_eq!(validation_fraction, 0.2);
    }

    #[test]
    fn feature_service_input_is_checked() {
        let mut value = builtin();
        value["inputs"] = serde_json::json!([{
            "type": "feature_service", "feature_service": "fraud", "entity_dataset": "tx",
            "entity_version": 2,
        }]);
        JobSpec::from_json(value.clone()).unwrap();
        value["inputs"][0]["entity_version"] = serde_json::json!(0);
        let error = JobSpec::from_json(value).unwrap_err();
        assert!(error.to_string().contains("entity_version"), "{error}");
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            ("priority", serde_json::json!(5000)),
            ("max_attempts", serde_json::json!(0)),
            ("label", serde_json::json!("")),
        ];
        for (field, value) in cases {
            let mut spec = builtin();
            spec[field] = value;
            let error = JobSpec::from_json(spec).unwrap_err();
            assert_eq!(error.field(), Some(field), "{error}");
        }
        let mut unknown = builtin();
        unknown["colour"] = serde_json::json!("red");
        assert!(
            JobSpec::from_json(unknown)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let backoff = Backoff {
            initial_seconds: 10,
            multiplier: 2.0,
            max_seconds: 60,
        };
        let delays: Vec<i64> = (1..=5).map(|n| backoff.delay_millis(n)).collect();
        assert_eq!(delays, vec![10_000, 20_000, 40_000, 60_000, 60_000]);
    }

    #[test]
    fn gate_needs_known_metric_and_alias() {
        let mut spec = builtin();
        spec["register"] = serde_json::json!({"model": "m", "alias": "champion",
            "gate": {"metric": "precision", "margin": 0.01}});
        assert_eq!(
            JobSpec::from_json(spec).unwrap_err().field(),
            Some("register.gate.metric")
        );
        let mut spec = builtin();
        spec["register"] = serde_json::json!({"model": "m", "gate": {"metric": "auc"}});
        assert_eq!(
            JobSpec::from_json(spec).unwrap_err().field(),
            Some("register.gate")
        );
    }
}
