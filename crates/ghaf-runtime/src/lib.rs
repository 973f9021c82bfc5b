//! Model runtime of Ghaf: loads model files into predictors and evaluates them in process.
//!
//! Built-in models (`model.ghaf`) are evaluated natively; ONNX models run on ONNX Runtime,
//! loaded dynamically. The types here are protocol-neutral: the Open Inference Protocol
//! layer in `ghaf-server` converts JSON, binary and gRPC tensors to and from [`Tensor`].

pub mod batch;
pub mod cache;
pub mod load;
pub mod native;
pub mod onnx;
pub mod options;
pub mod registry;
pub mod tensor;
pub mod validate;

pub use batch::{BatchLimits, BatchOptions, Batcher};
pub use cache::{ModelCache, ModelKey, ModelState, RetryBackoff};
pub use load::{LoadedModel, ModelFormat, load_files, load_model};
pub use native::NativePredictor;
pub use onnx::OnnxPredictor;
pub use options::{ExecutionProvider, RuntimeOptions};
pub use registry::load_verified;
pub use tensor::{
    DataType, InferRequest, InferResponse, Parameter, RequestedOutput, Tensor, TensorData,
    TensorMeta,
};

/// Input and output signature of a loaded model, in Open Inference Protocol terms.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSignature {
    /// `ghaf_native` for built-in models, `onnxruntime_onnx` for ONNX models.
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// Errors of loading and evaluating models.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request does not match the model: wrong name, shape, datatype or value.
    #[error("input {input:?}: {reason}")]
    InvalidInput { input: String, reason: String },
    /// A requested output does not exist.
    #[error("output {output:?}: {reason}")]
    InvalidOutput { output: String, reason: String },
    /// The model files cannot be turned into a predictor.
    #[error("model cannot be loaded: {0}")]
    Load(String),
    /// ONNX Runtime or a requested execution provider is not available on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// Evaluation failed for a reason the caller cannot fix.
    #[error("model evaluation failed: {0}")]
    Internal(String),
    /// A registered model version failed its signature or digest check, so it was not loaded.
    #[error("signature check failed: {0}")]
    Verification(String),
}

impl RuntimeError {
    /// Returns whether a later attempt can succeed without changing the model files: true for
    /// [`RuntimeError::Unavailable`] and [`RuntimeError::Internal`] (the metadata store, the
    /// blob store or a runtime library failed), false for errors of the files or the request.
    /// The model cache retries transient load failures after a backoff and keeps permanent
    /// ones until they are invalidated.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
    }
}

/// A loaded model that evaluates requests. Implementations are thread-safe and cheap to
/// share behind an `Arc`; `predict` runs on the caller's thread and may block it for the
/// whole evaluation, so async code calls it through [`Batcher::predict`] or
/// `tokio::task::spawn_blocking`.
pub trait Predictor: Send + Sync {
    fn signature(&self) -> &ModelSignature;

    /// Evaluates one request. `inputs` are checked against the signature; `outputs` names
    /// the outputs to return, all of them when empty, in signature order.
    fn predict(&self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError>;

    /// Names of the model's features in input column order, for models whose single input is
    /// a `[N, n_features]` matrix of named features (native models); `None` otherwise.
    fn feature_names(&self) -> Option<&[String]> {
        None
    }

    /// Maximum number of `predict` calls that make progress at once; `None` when calls run
    /// in parallel without limit. A predictor that serialises calls internally (an ONNX
    /// Runtime session behind a mutex) returns `Some(1)`, so a [`Batcher`] keeps at most one
    /// run in flight instead of parking blocking threads on the lock.
    fn max_concurrent_runs(&self) -> Option<usize> {
        None
    }
}
