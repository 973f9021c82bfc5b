//! Linear regression (squared error) and logistic regression (log loss) with L2
//! regularisation, fitted by Newton's method.
//!
//! Inputs are encoded before fitting:
//! - a numeric feature is standardised with the training mean and standard deviation (a
//!   constant feature gets scale 1), and a missing value becomes the training mean, so it
//!   contributes nothing beyond the intercept;
//! - a categorical feature with K categories becomes K one-hot columns, and a missing or
//!   unknown category becomes all zeros.
//!
//! The fit minimises `mean(loss) + l2 / 2 * |w|^2`, where the intercept is not penalised.
//! Newton's method solves the squared-error case in one step. For log loss it iterates, with a
//! backtracking line search, until the largest gradient component is below `tolerance`. Each
//! iteration costs O(n·p²) for n rows and p encoded columns, so this solver suits up to a few
//! hundred encoded columns.

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::{ColumnData, Dataset, Feature};
use crate::model::{Objective, sigmoid};

/// Training parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinearParams {
    pub objective: Objective,
    /// L2 penalty on the coefficients of the standardised inputs.
    pub l2: f64,
    /// Maximum Newton iterations.
    pub max_iterations: usize,
    /// Convergence threshold on the largest gradient component of the objective.
    pub tolerance: f64,
}

impl Default for LinearParams {
    fn default() -> Self {
        Self {
            objective: Objective::Binary,
            l2: 1e-4,
            max_iterations: 100,
            tolerance: 1e-10,
        }
    }
}

/// Encoding of one input feature as model columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Encoding {
    /// One column, `(x - mean) / scale`, and 0 for a missing value.
    Standardized { mean: f64, scale: f64 },
    /// `n_categories` columns, one-hot on the category code.
    OneHot { n_categories: usize },
}

impl Encoding {
    fn width(&self) -> usize {
        match self {
            Self::Standardized { .. } => 1,
            Self::OneHot { n_categories } => *n_categories,
        }
    }
}

/// A fitted linear or logistic regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub objective: Objective,
    pub features: Vec<Feature>,
    /// One encoding per feature, in feature order.
    pub encodings: Vec<Encoding>,
    /// One coefficient per encoded column.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Newton iterations the fit took.
    pub iterations: usize,
}

impl LinearModel {
    pub(crate) fn validate(&self) -> Result<(), TrainError> {
        let width: usize = self.encodings.iter().map(Encoding::width).sum();
        if self.features.is_empty()
            || self.encodings.len() != self.features.len()
            || width != self.coefficients.len()
        {
            return Err(TrainError::InvalidModel(
                "linear model encodings do not match its features and coefficients".into(),
            ));
        }
        Ok(())
    }

    /// Writes the encoded columns of `row` into `out`, which has one slot per coefficient.
    fn encode(&self, row: &[f64], out: &mut [f64]) {
        let mut column = 0;
        for (&value, encoding) in row.iter().zip(&self.encodings) {
            match encoding {
                Encoding::Standardized { mean, scale } => {
                    out[column] = if value.is_nan() {
                        0.0
                    } else {
                        (value - mean) / scale
                    };
                    column += 1;
                }
                Encoding::OneHot { n_categories } => {
                    out[column..column + n_categories].fill(0.0);
                    if value >= 0.0 && (value as usize) < *n_categories {
                        out[column + value as usize] = 1.0;
                    }
                    column += n_categories;
                }
            }
        }
    }

    /// Returns the linear predictor (log-odds for logistic regression) of one row.
    pub fn predict_raw(&self, row: &[f64]) -> f64 {
        assert_eq!(
            row.len(),
            self.features.len(),
            "row length differs from the feature count"
        );
        let mut encoded = vec![0.0; self.coefficients.len()];
        self.encode(row, &mut encoded);
        self.intercept + dot(&self.coefficients, &encoded)
    }

    /// Returns the probability of class 1 (logistic) or the prediction (linear).
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.objective.transform(self.predict_raw(row))
    }

    /// Returns [`LinearModel::predict`] for every row of `data`.
    pub fn predict_dataset(&self, data: &Dataset) -> Vec<f64> {
        (0..data.n_rows())
            .map(|r| self.predict(&data.row(r)))
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fits a linear (regression objective) or logistic (binary objective) model on `train`.
pub fn train_linear(train: &Dataset, params: &LinearParams) -> Result<LinearModel, TrainError> {
    if !(params.l2 >= 0.0 && params.l2.is_finite()) {
        return Err(TrainError::InvalidParameter(format!(
            "l2 is {}; it must be >= 0",
            params.l2
        )));
    }
    if train.n_rows() == 0 || train.n_features() == 0 {
        return Err(TrainError::InvalidData(
            "the training set needs at least one row and one feature".into(),
        ));
    }
    if params.objective == Objective::Binary
        && let Some(label) = train.label().iter().find(|&&y| y != 0.0 && y != 1.0)
    {
        return Err(TrainError::InvalidData(format!(
            "logistic regression needs labels 0 or 1, found {label}"
        )));
    }

    let encodings = fit_encodings(train);
    let mut model = LinearModel {
        objective: params.objective,
        features: train.features(),
        coefficients: vec![0.0; encodings.iter().map(Encoding::width).sum()],
        encodings,
        intercept: params.objective.base_score(train.label()),
        iterations: 0,
    };

    // Encoded design matrix, row-major, with a trailing 1 for the intercept.
    let p = model.coefficients.len() + 1;
    let n = train.n_rows();
    let mut design = vec![0.0; n * p];
    for r in 0..n {
        let row = &mut design[r * p..(r + 1) * p];
        model.encode(&train.row(r), &mut row[..p - 1]);
        row[p - 1] = 1.0;
    }

    let labels = train.label();
    let mut theta: Vec<f64> = model
        .coefficients
        .iter()
        .copied()
        .chain([model.intercept])
        .collect();
    let mut converged = false;
    for iteration in 1..=params.max_iterations {
        let (gradient, hessian) = gradient_and_hessian(&design, labels, &theta, params);
        if gradient.iter().all(|g| g.abs() < params.tolerance) {
            converged = true;
            model.iterations = iteration - 1;
            break;
        }
        let step = cholesky_solve(hessian, &gradient, p).ok_or_else(|| {
            TrainError::Failed(
                "the Hessian is not positive definite; set l2 above 0 to regularise".into(),
            )
        })?;
        // Backtracking line search on the objective; squared error accepts the full step.
        let current = objective_value(&design, labels, &theta, params);
        let mut scale = 1.0;
        loop {
            let candidate: Vec<f64> = theta
                .iter()
                .zip(&step)
                .map(|(t, s)| t - scale * s)
                .collect();
            if objective_value(&design, labels, &candidate, params) <= current || scale < 1e-10 {
                theta = candidate;
                break;
            }
            scale *= 0.5;
        }
        model.iterations = iteration;
    }
    if !converged {
        let (gradient, _) = gradient_and_hessian(&design, labels, &theta, params);
        let largest = gradient.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        if largest >= params.tolerance.max(1e-8) {
            return Err(TrainError::Failed(format!(
                "Newton's method did not converge in {} iterations (largest gradient component \
                 {largest:e}); raise l2 or max_iterations",
                params.max_iterations
            )));
        }
    }
    model.intercept = theta[p - 1];
    model.coefficients = theta[..p - 1].to_vec();
    Ok(model)
}

fn fit_encodings(train: &Dataset) -> Vec<Encoding> {
    train
        .columns()
        .iter()
        .map(|column| match &column.data {
            ColumnData::Categorical { categories, .. } => Encoding::OneHot {
                n_categories: categories.len(),
            },
            _ => {
                let values: Vec<f64> = (0..column.len())
                    .map(|r| column.value(r))
                    .filter(|v| !v.is_nan())
                    .collect();
                if values.is_empty() {
                    return Encoding::Standardized {
                        mean: 0.0,
                        scale: 1.0,
                    };
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
                    / values.len() as f64;
                let scale = if variance > 0.0 { variance.sqrt() } else { 1.0 };
                Encoding::Standardized { mean, scale }
            }
        })
        .collect()
}

/// Returns the gradient and the Hessian (row-major, p × p) of the objective at `theta`.
fn gradient_and_hessian(
    design: &[f64],
    labels: &[f64],
    theta: &[f64],
    params: &LinearParams,
) -> (Vec<f64>, Vec<f64>) {
    let p = theta.len();
    let n = labels.len() as f64;
    let mut gradient = vec![0.0; p];
    let mut hessian = vec![0.0; p * p];
    for (row, &label) in design.chunks_exact(p).zip(labels) {
        let score = dot(row, theta);
        let (residual, weight) = match params.objective {
            Objective::Regression => (score - label, 1.0),
            Objective::Binary => {
                let probability = sigmoid(score);
                (probability - label, probability * (1.0 - probability))
            }
        };
        for (g, &x) in gradient.iter_mut().zip(row) {
            *g += residual * x;
        }
        // Lower triangle only; mirrored below.
        for i in 0..p {
            let wx = weight * row[i];
            if wx == 0.0 {
                continue;
            }
            let hessian_row = &mut hessian[i * p..i * p + i + 1];
            for (h, &x) in hessian_row.iter_mut().zip(&row[..=i]) {
                *h += wx * x;
            }
        }
    }
    for i in 0..p {
        gradient[i] /= n;
        for j in 0..=i {
            hessian[i * p + j] /= n;
            hessian[j * p + i] = hessian[i * p + j];
        }
    }
    // The intercept, the last entry, is not penalised.
    for i in 0..p - 1 {
        gradient[i] += params.l2 * theta[i];
        hessian[i * p + i] += params.l2;
    }
    (gradient, hessian)
}

fn objective_value(design: &[f64], labels: &[f64], theta: &[f64], params: &LinearParams) -> f64 {
    let p = theta.len();
    let loss: f64 = design
        .chunks_exact(p)
        .zip(labels)
        .map(|(row, &label)| {
            let score = dot(row, theta);
            match params.objective {
                Objective::Regression => 0.5 * (score - label) * (score - label),
                // log(1 + e^s) - y·s, written to avoid overflow for large |s|.
                Objective::Binary => score.max(0.0) + (-score.abs()).exp().ln_1p() - label * score,
            }
        })
        .sum();
    let penalty: f64 = theta[..p - 1].iter().map(|w| w * w).sum();
    loss / labels.len() as f64 + 0.5 * params.l2 * penalty
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major, p × p) by Cholesky
/// factorisation; returns `None` when `a` is not positive definite.
fn cholesky_solve(mut a: Vec<f64>, b: &[f64], p: usize) -> Option<Vec<f64>> {
    for j in 0..p {
        let mut diagonal = a[j * p + j];
        for k in 0..j {
            diagonal -= a[j * p + k] * a[j * p + k];
        }
        if diagonal <= 1e-300 {
            return None;
        }
        let diagonal = diagonal.sqrt();
        a[j * p + j] = diagonal;
        for i in j + 1..p {
            let mut value = a[i * p + j];
            for k in 0..j {
                value -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = value / diagonal;
        }
    }
    // Forward substitution with L, then back substitution with L transposed.
    let mut y = b.to_vec();
    for i in 0..p {
        for k in 0..i {
            y[i] -= a[i * p + k] * y[k];
        }
        y[i] /= a[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            y[i] -= a[k * p + i] * y[k];
        }
        y[i] /= a[i * p + i];
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_small_system() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(a, &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12);
        assert!(x[1].abs() < 1e-12);
        assert!(cholesky_solve(vec![1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }
}
