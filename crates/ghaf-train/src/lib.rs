//! Built-in CPU trainers for Ghaf: histogram-based gradient-boosted trees, linear and
//! logistic regression, evaluation metrics, a versioned native model format and ONNX export.
//!
//! Prediction functions take one row as an f64 slice in feature order. Numeric features are
//! passed as they are, with NaN for missing; categorical features are passed as their
//! category code (see [`data::Column::value`]), with NaN for missing. The exported ONNX
//! models take the same values as a `[N, n_features]` double tensor.

pub mod data;
pub mod gbdt;
pub mod linear;
pub mod metrics;
pub mod model;
pub mod onnx;

pub use data::{Column, ColumnData, Dataset, Feature, FeatureKind};
pub use gbdt::{
    GbdtCheckpoint, GbdtModel, GbdtParams, TrainingControl, train_gbdt, train_gbdt_resumable,
};
pub use linear::{LinearModel, LinearParams, train_linear};
pub use model::{Model, Objective};

/// Errors from validating inputs, training, loading and exporting models.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training data: {0}")]
    InvalidData(String),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("training failed: {0}")]
    Failed(String),
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    /// The stop check of [`TrainingControl`] asked training to stop.
    #[error("training stopped after {rounds} rounds")]
    Stopped { rounds: usize },
}
