//! The learning objectives and the versioned native model format.
//!
//! A model file is JSON: `{"format": "ghaf-model", "version": 1, "model": {...}}`. Floats are
//! written with enough digits to read back bit for bit, so a loaded model predicts exactly
//! what the trained one did.

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::gbdt::GbdtModel;
use crate::linear::LinearModel;

/// Loss function being minimised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Binary classification with log loss; labels are 0 or 1 and predictions are the
    /// probability of 1.
    #[default]
    Binary,
    /// Regression with squared error.
    Regression,
}

impl Objective {
    /// Returns the constant raw score that minimises the loss: the log-odds of the mean label
    /// (binary) or the mean label (regression).
    pub(crate) fn base_score(self, labels: &[f64]) -> f64 {
        let mean = labels.iter().sum::<f64>() / labels.len().max(1) as f64;
        match self {
            Self::Binary => {
                let p = mean.clamp(1e-15, 1.0 - 1e-15);
                (p / (1.0 - p)).ln()
            }
            Self::Regression => mean,
        }
    }

    /// Returns the gradient and hessian of the loss with respect to the raw score.
    pub(crate) fn gradient(self, score: f64, label: f64) -> [f64; 2] {
        match self {
            Self::Binary => {
                let p = sigmoid(score);
                // A floor on the hessian keeps leaf values finite for fully separated leaves.
                [p - label, (p * (1.0 - p)).max(1e-16)]
            }
            Self::Regression => [score - label, 1.0],
        }
    }

    /// Maps a raw score to a prediction.
    pub fn transform(self, score: f64) -> f64 {
        match self {
            Self::Binary => sigmoid(score),
            Self::Regression => score,
        }
    }

    /// Returns the loss reported during training: log loss (binary) or RMSE (regression).
    pub(crate) fn loss(self, labels: &[f64], scores: &[f64]) -> f64 {
        let predictions: Vec<f64> = scores.iter().map(|&s| self.transform(s)).collect();
        match self {
            Self::Binary => crate::metrics::log_loss(labels, &predictions),
            Self::Regression => crate::metrics::rmse(labels, &predictions),
        }
    }
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A trained model of any built-in kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    Gbdt(GbdtModel),
    Linear(LinearModel),
}

/// Name written in the `format` field of every model file.
pub const FORMAT_NAME: &str = "ghaf-model";
/// Version of the native format this build writes; it reads this version only.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct FileRef<'a> {
    format: &'a str,
    version: u32,
    model: &'a Model,
}

#[derive(Deserialize)]
struct FileHeader {
    format: String,
    version: u32,
}

#[derive(Deserialize)]
struct FileOwned {
    model: Model,
}

impl Model {
    /// Serialises the model in the native format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let file = FileRef {
            format: FORMAT_NAME,
            version: FORMAT_VERSION,
            model: self,
        };
        serde_json::to_vec(&file).expect("a model serialises to JSON")
    }

    /// Reads a model in the native format, checking the format name, the version and the
    /// model's internal references.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, TrainError> {
        let header: FileHeader = serde_json::from_slice(bytes)
            .map_err(|e| TrainError::InvalidModel(format!("not a Ghaf model file: {e}")))?;
        if header.format != FORMAT_NAME {
            return Err(TrainError::InvalidModel(format!(
                "format is {:?}, expected {FORMAT_NAME:?}",
                header.format
            )));
        }
        if header.version != FORMAT_VERSION {
            return Err(TrainError::InvalidModel(format!(
                "format version {} is not supported; this build reads version {FORMAT_VERSION}",
                header.version
            )));
        }
        let file: FileOwned = serde_json::from_slice(bytes)
            .map_err(|e| TrainError::InvalidModel(format!("invalid model contents: {e}")))?;
        // Tree models validate themselves while deserialising.
        if let Model::Linear(linear) = &file.model {
            linear.validate()?;
        }
        Ok(file.model)
    }

    /// Returns the probability of class 1 (binary) or the prediction (regression) for one row.
    pub fn predict(&self, row: &[f64]) -> f64 {
        match self {
            Model::Gbdt(model) => model.predict(row),
            Model::Linear(model) => model.predict(row),
        }
    }

    /// Returns [`Model::predict`] for every row of a row-major matrix with one value per
    /// feature per row.
    pub fn predict_matrix(&self, matrix: &[f64]) -> Vec<f64> {
        let n_features = self.features().len();
        assert_eq!(
            matrix.len() % n_features,
            0,
            "matrix length is not a multiple of the feature count"
        );
        matrix
            .chunks_exact(n_features)
            .map(|row| self.predict(row))
            .collect()
    }

    pub fn objective(&self) -> Objective {
        match self {
            Model::Gbdt(model) => model.objective(),
            Model::Linear(model) => model.objective,
        }
    }

    pub fn features(&self) -> &[crate::Feature] {
        match self {
            Model::Gbdt(model) => model.features(),
            Model::Linear(model) => &model.features,
        }
    }
}
