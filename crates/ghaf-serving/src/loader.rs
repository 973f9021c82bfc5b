//! Loading registered model versions into predictors, after verifying their signed
//! manifests, and the built-in model's predictor.

use std::sync::Arc;

use futures::TryStreamExt;
use ghaf_runtime::{
    ExecutionProvider, ModelFormat, Predictor, RuntimeError, RuntimeOptions, Tensor, TensorData,
};
use ghaf_tracking::{Scope, TrackingError, TrackingService};
use ghaf_train::model::Model;

/// Name of the one input of a built-in model: a matrix with one column per feature.
pub const NATIVE_INPUT: &str = ghaf_train::onnx::INPUT_NAME;

/// One input feature of a loaded model, in the model's column order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFeature {
    pub name: String,
    /// Category names of a categorical feature; the model receives their index.
    pub categories: Option<Vec<String>>,
}

/// A model version ready to evaluate.
pub struct LoadedModel {
    pub predictor: Arc<dyn Predictor>,
    /// Input features in the column order of the model's input matrix; empty for models
    /// whose inputs are raw tensors without feature names.
    pub features: Vec<ModelFeature>,
    /// Time of the runtime's warm-up prediction, when it ran one.
    pub warmup: Option<std::time::Duration>,
}

impl LoadedModel {
    /// Evaluates a row-major matrix with one column per feature through the predictor and
    /// returns every output.
    pub fn predict_matrix(
        &self,
        rows: usize,
        matrix: Vec<f64>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let input = self
            .predictor
            .signature()
            .inputs
            .first()
            .map(|meta| meta.name.clone())
            .unwrap_or_else(|| NATIVE_INPUT.to_owned());
        let columns = self.features.len() as i64;
        let tensor = Tensor::new(input, vec![rows as i64, columns], TensorData::Fp64(matrix));
        self.predictor.predict(&[tensor], &[])
    }
}

/// Error of loading a model version.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The model or version is not registered.
    #[error("{0}")]
    NotFound(String),
    /// The version exists but cannot be served: verification failed, a file is missing or
    /// unreadable. Loading again does not help until the version or endpoint changes.
    #[error("{0}")]
    Failed(String),
    /// The metadata store, the blob store or a runtime library failed; a later attempt can
    /// succeed.
    #[error("{0}")]
    Transient(String),
}

impl LoadError {
    /// Returns whether a later attempt can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Transient(_))
    }
}

/// Classifies a runtime error of loading: verification failures and bad model files are
/// permanent, store and runtime-library failures transient.
pub fn runtime_load_error(error: RuntimeError) -> LoadError {
    match error {
        RuntimeError::Verification(reason) => {
            LoadError::Failed(format!("signature verification failed: {reason}"))
        }
        other if other.is_transient() => LoadError::Transient(other.to_string()),
        other => LoadError::Failed(other.to_string()),
    }
}

static PROCESS_OPTIONS: std::sync::OnceLock<RuntimeOptions> = std::sync::OnceLock::new();

/// Sets the runtime options (ONNX Runtime library, threads) of every [`RegistryLoader`] this
/// process creates later: the server calls it once at start-up from its configuration, so
/// endpoints and batch scoring jobs load models the same way. Returns `false` when they were
/// set before (the first call wins).
pub fn set_process_runtime_options(options: RuntimeOptions) -> bool {
    PROCESS_OPTIONS.set(options).is_ok()
}

/// Returns the options set by [`set_process_runtime_options`], else the defaults.
pub fn process_runtime_options() -> RuntimeOptions {
    PROCESS_OPTIONS.get().cloned().unwrap_or_default()
}

/// Turns a registered model version into a [`LoadedModel`].
#[async_trait::async_trait]
pub trait ModelLoader: Send + Sync {
    /// Checks that the version is registered, without loading it.
    async fn check_exists(&self, scope: &Scope, model: &str, version: i64)
    -> Result<(), LoadError>;

    /// Returns the version a registered model's alias points at now; `NotFound` when the
    /// model or the alias does not exist.
    async fn resolve_alias(
        &self,
        scope: &Scope,
        model: &str,
        alias: &str,
    ) -> Result<i64, LoadError>;

    /// Verifies and loads the version for `execution_provider` (`cpu` for built-in models).
    async fn load(
        &self,
        scope: &Scope,
        model: &str,
        version: i64,
        execution_provider: &str,
    ) -> Result<LoadedModel, LoadError>;
}

/// Loads versions from the model registry through ghaf-runtime's verified loader: the
/// signed manifest (signature, file set and every file's digest) is checked before anything
/// is parsed, and files are read through digest-checked streams. Built-in models also have
/// their category names read, so string values can be turned into category indexes.
#[derive(Clone)]
pub struct RegistryLoader {
    tracking: TrackingService,
    options: RuntimeOptions,
}

impl RegistryLoader {
    /// Creates a loader with the process's runtime options (see
    /// [`set_process_runtime_options`]).
    pub fn new(tracking: TrackingService) -> Self {
        Self {
            tracking,
            options: process_runtime_options(),
        }
    }

    /// Uses `options` (ONNX Runtime library, threads) for every load; the execution provider
    /// comes from each endpoint.
    pub fn with_options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// Reads the category names of a built-in model from `model_file`, checking the bytes
    /// against the digest in the version's signed manifest, so the names come from the same
    /// verified content the predictor was built from.
    async fn native_features(
        &self,
        scope: &Scope,
        model: &str,
        version: i64,
        model_file: &str,
    ) -> Result<Vec<ModelFeature>, LoadError> {
        let stored = self
            .tracking
            .store()
            .get_model_version(scope, model, version)
            .await
            .map_err(tracking_failure)?;
        let manifest = self
            .tracking
            .verify_version(scope, &stored)
            .await
            .map_err(tracking_failure)?;
        let signed = manifest
            .files
            .iter()
            .find(|file| file.path == model_file)
            .ok_or_else(|| {
                LoadError::Failed(format!(
                    "signature verification failed: {model_file} is not in the signed manifest"
                ))
            })?;
        let path = format!("{}/{model_file}", stored.artifact_prefix);
        let content = self
            .tracking
            .open_artifact(scope, &path)
            .await
            .map_err(tracking_failure)?;
        if content.entry.digest != signed.sha256 {
            return Err(LoadError::Failed(format!(
                "signature verification failed: {model_file} has digest {}, the manifest signs {}",
                content.entry.digest, signed.sha256
            )));
        }
        // The stream checks the bytes against the digest compared above.
        let bytes: Vec<u8> = content
            .stream
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .map_err(|error| match error {
                ghaf_blob::BlobError::DigestMismatch { .. } => LoadError::Failed(format!(
                    "signature verification failed: {model_file} does not match its digest: {error}"
                )),
                other => LoadError::Transient(format!("cannot read {model_file}: {other}")),
            })?;
        let file = model_file.to_owned();
        tokio::task::spawn_blocking(move || {
            Model::from_bytes(&bytes)
                .map(|parsed| model_features(&parsed))
                .map_err(|error| LoadError::Failed(format!("{file} is invalid: {error}")))
        })
        .await
        .map_err(|error| LoadError::Transient(format!("the parse task failed: {error}")))?
    }
}

fn tracking_failure(error: TrackingError) -> LoadError {
    match error {
        TrackingError::NotFound { .. } => LoadError::NotFound(error.to_string()),
        TrackingError::VerificationFailed { reason, .. } => {
            LoadError::Failed(format!("signature verification failed: {reason}"))
        }
        other => LoadError::Transient(other.to_string()),
    }
}

#[async_trait::async_trait]
impl ModelLoader for RegistryLoader {
    async fn check_exists(
        &self,
        scope: &Scope,
        model: &str,
        version: i64,
    ) -> Result<(), LoadError> {
        self.tracking
            .store()
            .get_model_version(scope, model, version)
            .await
            .map(|_| ())
            .map_err(tracking_failure)
    }

    async fn resolve_alias(
        &self,
        scope: &Scope,
        model: &str,
        alias: &str,
    ) -> Result<i64, LoadError> {
        self.tracking
            .store()
            .get_version_by_alias(scope, model, alias)
            .await
            .map(|version| version.version)
            .map_err(tracking_failure)
    }

    async fn load(
        &self,
        scope: &Scope,
        model: &str,
        version: i64,
        execution_provider: &str,
    ) -> Result<LoadedModel, LoadError> {
        let mut options = self.options.clone();
        options.execution_provider =
            ExecutionProvider::parse(execution_provider).map_err(LoadError::Failed)?;
        let loaded = ghaf_runtime::load_verified(&self.tracking, scope, model, version, &options)
            .await
            .map_err(runtime_load_error)?;
        let features = match loaded.format {
            ModelFormat::Native => {
                self.native_features(scope, model, version, &loaded.model_file)
                    .await?
            }
            _ => loaded
                .predictor
                .feature_names()
                .unwrap_or_default()
                .iter()
                .map(|name| ModelFeature {
                    name: name.clone(),
                    categories: None,
                })
                .collect(),
        };
        Ok(LoadedModel {
            predictor: loaded.predictor,
            features,
            warmup: Some(loaded.warmup_duration),
        })
    }
}

/// The input features of a built-in model, with category names.
pub fn model_features(model: &Model) -> Vec<ModelFeature> {
    model
        .features()
        .iter()
        .map(|feature| ModelFeature {
            name: feature.name.clone(),
            categories: match &feature.kind {
                ghaf_train::FeatureKind::Numeric => None,
                ghaf_train::FeatureKind::Categorical { categories } => Some(categories.clone()),
            },
        })
        .collect()
}

/// Returns a tensor's elements as f64; `None` for BYTES and FP16.
pub fn tensor_f64(data: &TensorData) -> Option<Vec<f64>> {
    tensor_f64_prefix(data, usize::MAX)
}

/// Returns the first `limit` elements of a tensor as f64; `None` for BYTES and FP16.
pub fn tensor_f64_prefix(data: &TensorData, limit: usize) -> Option<Vec<f64>> {
    fn take<T: Copy>(v: &[T], limit: usize, f: impl Fn(T) -> f64) -> Vec<f64> {
        v.iter().take(limit).map(|&x| f(x)).collect()
    }
    Some(match data {
        TensorData::Bool(v) => take(v, limit, |x| if x { 1.0 } else { 0.0 }),
        TensorData::Uint8(v) => take(v, limit, f64::from),
        TensorData::Uint16(v) => take(v, limit, f64::from),
        TensorData::Uint32(v) => take(v, limit, f64::from),
        TensorData::Uint64(v) => take(v, limit, |x| x as f64),
        TensorData::Int8(v) => take(v, limit, f64::from),
        TensorData::Int16(v) => take(v, limit, f64::from),
        TensorData::Int32(v) => take(v, limit, f64::from),
        TensorData::Int64(v) => take(v, limit, |x| x as f64),
        TensorData::Fp32(v) => take(v, limit, f64::from),
        TensorData::Fp64(v) => take(v, limit, |x| x),
        TensorData::Fp16(_) | TensorData::Bytes(_) => return None,
    })
}
