//! Histogram-based gradient-boosted decision trees for binary classification (log loss) and
//! regression (L2 loss).
//!
//! Each feature is bucketed once into at most `max_bins` bins (see the `binning` module). Trees grow
//! leaf-wise on gradient/hessian histograms. Each split learns the direction of missing
//! values, and a categorical feature splits into a set of categories and the rest. Training
//! is deterministic: the same data and parameters give the same model, bit for bit.

mod binning;
mod grow;
pub mod tree;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::{ColumnData, Dataset, Feature};
use crate::model::Objective;
use grow::{BinnedData, TreeGrower};
use tree::{FlatForest, Split, Tree};

/// Training parameters. The defaults equal the values LightGBM 4.7.0 records for these
/// parameters in a model trained with default settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GbdtParams {
    pub objective: Objective,
    /// Maximum number of boosting rounds (trees).
    pub n_estimators: usize,
    /// Shrinkage applied to every leaf value.
    pub learning_rate: f64,
    /// Maximum leaves per tree.
    pub num_leaves: usize,
    /// Maximum tree depth; `None` is unlimited.
    pub max_depth: Option<usize>,
    /// Minimum rows in a leaf.
    pub min_data_in_leaf: usize,
    /// Minimum hessian sum in a leaf.
    pub min_sum_hessian_in_leaf: f64,
    /// Minimum gain a split must exceed.
    pub min_gain_to_split: f64,
    /// L2 regularisation of leaf values.
    pub lambda_l2: f64,
    /// Maximum bins per feature, including the bin for missing values; at most 255.
    pub max_bins: usize,
    /// Stop when the validation loss has not improved for this many rounds, and keep the
    /// trees up to the best round. Needs a validation set.
    pub early_stopping_rounds: Option<usize>,
    /// Categorical features with at most this many non-empty bins use one-vs-rest splits.
    pub max_cat_to_onehot: usize,
    /// Maximum categories on the left side of a sorted-partition split.
    pub max_cat_threshold: usize,
    /// Extra L2 regularisation for the gain of categorical splits.
    pub cat_l2: f64,
    /// Smoothing added to the hessian when categories are sorted by gradient ratio.
    pub cat_smooth: f64,
    /// Minimum rows a category needs to take part in a sorted-partition split.
    pub min_data_per_group: usize,
    /// Record the training-set loss of every round in the history. It costs about as much as
    /// the gradient computation, so it is off by default.
    pub record_train_loss: bool,
}

impl Default for GbdtParams {
    fn default() -> Self {
        Self {
            objective: Objective::Binary,
            n_estimators: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 20,
            min_sum_hessian_in_leaf: 1e-3,
            min_gain_to_split: 0.0,
            lambda_l2: 0.0,
            max_bins: 255,
            early_stopping_rounds: None,
            max_cat_to_onehot: 4,
            max_cat_threshold: 32,
            cat_l2: 10.0,
            cat_smooth: 10.0,
            min_data_per_group: 100,
            record_train_loss: false,
        }
    }
}

impl GbdtParams {
    fn validate(&self) -> Result<(), TrainError> {
        let invalid = |message: String| Err(TrainError::InvalidParameter(message));
        if self.n_estimators == 0 {
            return invalid("n_estimators must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return invalid(format!(
                "learning_rate is {}; it must be positive",
                self.learning_rate
            ));
        }
        if self.num_leaves < 2 {
            return invalid(format!(
                "num_leaves is {}; it must be at least 2",
                self.num_leaves
            ));
        }
        if !(4..=255).contains(&self.max_bins) {
            return invalid(format!(
                "max_bins is {}; it must be in 4..=255",
                self.max_bins
            ));
        }
        if self.min_data_in_leaf == 0 {
            return invalid("min_data_in_leaf must be at least 1".into());
        }
        if !(self.lambda_l2 >= 0.0 && self.cat_l2 >= 0.0 && self.cat_smooth >= 0.0) {
            return invalid("lambda_l2, cat_l2 and cat_smooth must be non-negative".into());
        }
        Ok(())
    }
}

/// Total split gain and number of splits per feature, over all kept trees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureImportance {
    pub gain: Vec<f64>,
    pub split_count: Vec<u64>,
}

/// Loss per boosting round on the training set (when `record_train_loss` is set) and the
/// validation set: log loss for binary classification, RMSE for regression.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingHistory {
    pub train_loss: Vec<f64>,
    pub validation_loss: Vec<f64>,
    /// Number of trees kept (the round with the best validation loss, when early stopping
    /// was on).
    pub best_n_trees: usize,
}

/// A trained tree ensemble.
///
/// The raw score of a row is `base_score` plus the sum of its leaf values, added in tree
/// order; binary models return `sigmoid(raw score)`.
///
/// Fields are private so the flattened copy of the trees that prediction walks cannot go stale;
/// deserialising validates the trees and rebuilds that copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "GbdtModelFields")]
pub struct GbdtModel {
    objective: Objective,
    features: Vec<Feature>,
    base_score: f64,
    trees: Vec<Tree>,
    feature_importance: FeatureImportance,
    history: TrainingHistory,
    #[serde(skip)]
    flat: FlatForest,
}

/// The serialised fields of [`GbdtModel`], read before validation.
#[derive(Deserialize)]
struct GbdtModelFields {
    objective: Objective,
    features: Vec<Feature>,
    base_score: f64,
    trees: Vec<Tree>,
    feature_importance: FeatureImportance,
    history: TrainingHistory,
}

impl TryFrom<GbdtModelFields> for GbdtModel {
    type Error = TrainError;

    fn try_from(fields: GbdtModelFields) -> Result<Self, TrainError> {
        let mut model = GbdtModel {
            objective: fields.objective,
            features: fields.features,
            base_score: fields.base_score,
            trees: fields.trees,
            feature_importance: fields.feature_importance,
            history: fields.history,
            flat: FlatForest::default(),
        };
        model.prepare()?;
        Ok(model)
    }
}

impl PartialEq for GbdtModel {
    fn eq(&self, other: &Self) -> bool {
        self.objective == other.objective
            && self.features == other.features
            && self.base_score.to_bits() == other.base_score.to_bits()
            && self.trees == other.trees
            && self.feature_importance == other.feature_importance
            && self.history == other.history
    }
}

impl GbdtModel {
    /// Checks the invariants prediction relies on and builds the flat forest.
    fn prepare(&mut self) -> Result<(), TrainError> {
        if self.features.is_empty() {
            return Err(TrainError::InvalidModel(
                "a tree model needs at least one feature".into(),
            ));
        }
        let n_features = self.features.len() as u32;
        for (t, tree) in self.trees.iter().enumerate() {
            let invalid = |what: &str| Err(TrainError::InvalidModel(format!("tree {t}: {what}")));
            if tree.leaf_values.len() != tree.nodes.len() + 1 {
                return invalid("a tree needs exactly one more leaf than split nodes");
            }
            for (index, node) in tree.nodes.iter().enumerate() {
                if node.feature >= n_features {
                    return invalid("split on a feature index past the feature list");
                }
                for child in [node.left, node.right] {
                    // Children come after their parent, which also rules out cycles.
                    let ok = if child >= 0 {
                        (child as usize) < tree.nodes.len() && child as usize > index
                    } else {
                        ((-child - 1) as usize) < tree.leaf_values.len()
                    };
                    if !ok {
                        return invalid("child reference out of range");
                    }
                }
                if let Split::Categorical { categories } = &node.split
                    && (categories.windows(2).any(|w| w[0] >= w[1])
                        || categories.last().is_some_and(|&c| c >= 64 * 255))
                {
                    return invalid("categorical split set must be sorted, unique and below 16320");
                }
            }
        }
        let total_nodes: usize = self
            .trees
            .iter()
            .map(|t| t.nodes.len() + t.leaf_values.len())
            .sum();
        if total_nodes >= 1 << 30 {
            return Err(TrainError::InvalidModel(format!(
                "{total_nodes} nodes and leaves exceed the limit of 2^30"
            )));
        }
        self.flat = FlatForest::new(&self.trees);
        Ok(())
    }

    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Returns the model input features, in the order prediction rows list them.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// Returns the raw score before any tree: the loss-minimising constant for the training
    /// labels.
    pub fn base_score(&self) -> f64 {
        self.base_score
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    pub fn feature_importance(&self) -> &FeatureImportance {
        &self.feature_importance
    }

    pub fn history(&self) -> &TrainingHistory {
        &self.history
    }

    /// Returns (feature name, total gain, split count) per feature, largest gain first.
    pub fn importance_by_name(&self) -> Vec<(String, f64, u64)> {
        let mut rows: Vec<(String, f64, u64)> = self
            .features
            .iter()
            .zip(&self.feature_importance.gain)
            .zip(&self.feature_importance.split_count)
            .map(|((feature, &gain), &count)| (feature.name.clone(), gain, count))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }

    /// Returns the raw score (log-odds for binary models) of one row.
    pub fn predict_raw(&self, row: &[f64]) -> f64 {
        assert_eq!(
            row.len(),
            self.features.len(),
            "row length differs from the feature count"
        );
        self.flat.sum(row, self.base_score)
    }

    /// Returns the probability of class 1 for binary models, and the prediction for
    /// regression models.
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.objective.transform(self.predict_raw(row))
    }

    /// Returns [`GbdtModel::predict`] for every row of `data`.
    pub fn predict_dataset(&self, data: &Dataset) -> Vec<f64> {
        let mut row = vec![0.0; data.n_features()];
        (0..data.n_rows())
            .map(|r| {
                for (value, column) in row.iter_mut().zip(data.columns()) {
                    *value = column.value(r);
                }
                self.predict(&row)
            })
            .collect()
    }
}

/// Output of [`train_gbdt`]: the model and the predictions the training loop computed for the
/// training and validation rows (after the same transform as [`GbdtModel::predict`]).
pub struct GbdtTraining {
    pub model: GbdtModel,
    pub train_predictions: Vec<f64>,
    pub validation_predictions: Vec<f64>,
}

/// Trains a tree ensemble on `train`. `validation`, when given, must have the same columns; its
/// loss is recorded every round and drives early stopping.
pub fn train_gbdt(
    train: &Dataset,
    validation: Option<&Dataset>,
    params: &GbdtParams,
) -> Result<GbdtTraining, TrainError> {
    train_gbdt_resumable(train, validation, params, &mut TrainingControl::default())
}

/// The state of a training run after some rounds: every tree grown so far, with what the
/// loop needs to continue exactly where it stopped.
///
/// A run resumed from a checkpoint of the same data and parameters produces the same model,
/// bit for bit, as a run that was never interrupted. Training has no random steps, and the
/// scores of the kept trees are recomputed by adding their leaf values in tree order, as
/// training does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbdtCheckpoint {
    /// Rounds completed: the number of trees in `trees`.
    pub rounds: usize,
    pub params: GbdtParams,
    pub features: Vec<Feature>,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub base_score: f64,
    pub trees: Vec<Tree>,
    /// (feature, gain) of every split, per tree.
    pub tree_splits: Vec<Vec<(usize, f64)>>,
    pub history: TrainingHistory,
    /// Best validation loss so far (early stopping); `None` before the first validated round.
    pub best_loss: Option<f64>,
    /// Number of trees at the round with the best validation loss.
    pub best_n_trees: usize,
}

impl GbdtCheckpoint {
    /// Serialises the checkpoint as JSON whose floats read back bit for bit.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint serialises to JSON")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TrainError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TrainError::InvalidModel(format!("invalid GBDT checkpoint: {e}")))
    }
}

/// Receives each checkpoint of a training run; an error stops training and is returned.
pub type CheckpointSink<'a> = &'a mut dyn FnMut(&GbdtCheckpoint) -> Result<(), TrainError>;

/// Hooks into a training run: resuming from a checkpoint, writing checkpoints, and stopping.
#[derive(Default)]
pub struct TrainingControl<'a> {
    /// Checkpoint to continue from; it must come from the same data and parameters.
    pub resume: Option<GbdtCheckpoint>,
    /// Calls `on_checkpoint` after every this many rounds; 0 writes none.
    pub checkpoint_every: usize,
    /// Receives each checkpoint. An error stops training and is returned.
    pub on_checkpoint: Option<CheckpointSink<'a>>,
    /// Checked before every round; returning true stops training with [`TrainError::Stopped`]
    /// after writing a checkpoint of the rounds completed (when `on_checkpoint` is set).
    pub should_stop: Option<&'a (dyn Fn() -> bool + Sync)>,
}

/// [`train_gbdt`] with checkpoints, resumption and a stop check (see [`TrainingControl`]).
pub fn train_gbdt_resumable(
    train: &Dataset,
    validation: Option<&Dataset>,
    params: &GbdtParams,
    control: &mut TrainingControl<'_>,
) -> Result<GbdtTraining, TrainError> {
    params.validate()?;
    check_inputs(train, validation, params)?;

    let features = train.features();
    let binned = BinnedData::new(train, params.max_bins);
    let labels = train.label();
    let objective = params.objective;
    let base_score = objective.base_score(labels);

    let mut train_scores = vec![base_score; train.n_rows()];
    let train_rows: Vec<Vec<f64>> = match &control.resume {
        Some(_) => (0..train.n_rows()).map(|r| train.row(r)).collect(),
        None => Vec::new(),
    };
    let validation_rows: Vec<Vec<f64>> = validation
        .map(|v| (0..v.n_rows()).map(|r| v.row(r)).collect())
        .unwrap_or_default();
    let validation_labels = validation.map(|v| v.label()).unwrap_or(&[]);
    let mut validation_scores = vec![base_score; validation_rows.len()];
    // Scores as of the best round, kept so the returned predictions match the kept trees.
    let mut best_train_scores = train_scores.clone();
    let mut best_validation_scores = validation_scores.clone();

    let mut grower = TreeGrower::new(&binned, params);
    let mut gradients = vec![[0.0; 2]; train.n_rows()];
    let mut trees: Vec<Tree> = Vec::new();
    let mut tree_splits: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut history = TrainingHistory::default();
    let mut best_loss = f64::INFINITY;
    let mut best_n_trees = 0;

    if let Some(checkpoint) = control.resume.take() {
        check_checkpoint(
            &checkpoint,
            params,
            &features,
            train,
            validation,
            base_score,
        )?;
        for (n, tree) in checkpoint.trees.iter().enumerate() {
            for (score, row) in train_scores.iter_mut().zip(&train_rows) {
                *score += tree.predict(row);
            }
            for (score, row) in validation_scores.iter_mut().zip(&validation_rows) {
                *score += tree.predict(row);
            }
            if n + 1 == checkpoint.best_n_trees {
                best_train_scores.clone_from(&train_scores);
                best_validation_scores.clone_from(&validation_scores);
            }
        }
        trees = checkpoint.trees;
        tree_splits = checkpoint.tree_splits;
        history = checkpoint.history;
        best_loss = checkpoint.best_loss.unwrap_or(f64::INFINITY);
        best_n_trees = checkpoint.best_n_trees;
    }

    let make_checkpoint = |trees: &Vec<Tree>,
                           tree_splits: &Vec<Vec<(usize, f64)>>,
                           history: &TrainingHistory,
                           best_loss: f64,
                           best_n_trees: usize| GbdtCheckpoint {
        rounds: trees.len(),
        params: params.clone(),
        features: features.clone(),
        train_rows: train.n_rows(),
        validation_rows: validation_rows.len(),
        base_score,
        trees: trees.clone(),
        tree_splits: tree_splits.clone(),
        history: history.clone(),
        best_loss: best_loss.is_finite().then_some(best_loss),
        best_n_trees,
    };

    let mut stopped_early = false;
    while trees.len() < params.n_estimators && !stopped_early {
        if control.should_stop.is_some_and(|stop| stop()) {
            if let Some(on_checkpoint) = control.on_checkpoint.as_mut() {
                on_checkpoint(&make_checkpoint(
                    &trees,
                    &tree_splits,
                    &history,
                    best_loss,
                    best_n_trees,
                ))?;
            }
            return Err(TrainError::Stopped {
                rounds: trees.len(),
            });
        }

        for ((gradient, &score), &label) in gradients.iter_mut().zip(&train_scores).zip(labels) {
            *gradient = objective.gradient(score, label);
        }
        let grown = grower.grow(&gradients);
        for (score, &leaf) in train_scores.iter_mut().zip(&grown.row_leaf) {
            *score += grown.tree.leaf_values[leaf as usize];
        }
        for (score, row) in validation_scores.iter_mut().zip(&validation_rows) {
            *score += grown.tree.predict(row);
        }
        trees.push(grown.tree);
        tree_splits.push(grown.split_gains);

        if params.record_train_loss {
            history
                .train_loss
                .push(objective.loss(labels, &train_scores));
        }
        if validation.is_some() {
            let loss = objective.loss(validation_labels, &validation_scores);
            history.validation_loss.push(loss);
            if params.early_stopping_rounds.is_some() {
                if loss < best_loss {
                    best_loss = loss;
                    best_n_trees = trees.len();
                    best_train_scores.clone_from(&train_scores);
                    best_validation_scores.clone_from(&validation_scores);
                } else if params
                    .early_stopping_rounds
                    .is_some_and(|rounds| trees.len() - best_n_trees >= rounds)
                {
                    stopped_early = true;
                }
            }
        }

        if control.checkpoint_every > 0
            && trees.len().is_multiple_of(control.checkpoint_every)
            && trees.len() < params.n_estimators
            && !stopped_early
            && let Some(on_checkpoint) = control.on_checkpoint.as_mut()
        {
            on_checkpoint(&make_checkpoint(
                &trees,
                &tree_splits,
                &history,
                best_loss,
                best_n_trees,
            ))?;
        }
    }

    if params.early_stopping_rounds.is_some() && validation.is_some() {
        trees.truncate(best_n_trees);
        tree_splits.truncate(best_n_trees);
        train_scores = best_train_scores;
        validation_scores = best_validation_scores;
    }
    history.best_n_trees = trees.len();

    let mut importance = FeatureImportance {
        gain: vec![0.0; features.len()],
        split_count: vec![0; features.len()],
    };
    for &(feature, gain) in tree_splits.iter().flatten() {
        importance.gain[feature] += gain;
        importance.split_count[feature] += 1;
    }

    let mut model = GbdtModel {
        objective,
        features,
        base_score,
        trees,
        feature_importance: importance,
        history,
        flat: FlatForest::default(),
    };
    model.prepare()?;
    Ok(GbdtTraining {
        model,
        train_predictions: train_scores
            .into_iter()
            .map(|s| objective.transform(s))
            .collect(),
        validation_predictions: validation_scores
            .into_iter()
            .map(|s| objective.transform(s))
            .collect(),
    })
}

/// Rejects a checkpoint that was written for other data or parameters, because resuming
/// from it would not reproduce an uninterrupted run.
fn check_checkpoint(
    checkpoint: &GbdtCheckpoint,
    params: &GbdtParams,
    features: &[Feature],
    train: &Dataset,
    validation: Option<&Dataset>,
    base_score: f64,
) -> Result<(), TrainError> {
    let mismatch = |what: &str| {
        Err(TrainError::InvalidParameter(format!(
            "the checkpoint was written for other {what}; delete it to train from the start"
        )))
    };
    if &checkpoint.params != params {
        return mismatch("training parameters");
    }
    if checkpoint.features != features {
        return mismatch("features");
    }
    if checkpoint.train_rows != train.n_rows()
        || checkpoint.validation_rows != validation.map_or(0, Dataset::n_rows)
        || checkpoint.base_score.to_bits() != base_score.to_bits()
    {
        return mismatch("training data");
    }
    if checkpoint.rounds != checkpoint.trees.len()
        || checkpoint.tree_splits.len() != checkpoint.trees.len()
        || checkpoint.trees.len() > params.n_estimators
        || checkpoint.best_n_trees > checkpoint.trees.len()
    {
        return Err(TrainError::InvalidModel(
            "the checkpoint's tree count, split list and best round disagree".into(),
        ));
    }
    Ok(())
}

fn check_inputs(
    train: &Dataset,
    validation: Option<&Dataset>,
    params: &GbdtParams,
) -> Result<(), TrainError> {
    if train.n_rows() == 0 || train.n_features() == 0 {
        return Err(TrainError::InvalidData(
            "the training set needs at least one row and one feature".into(),
        ));
    }
    if params.objective == Objective::Binary
        && let Some(label) = train.label().iter().find(|&&y| y != 0.0 && y != 1.0)
    {
        return Err(TrainError::InvalidData(format!(
            "binary classification needs labels 0 or 1, found {label}"
        )));
    }
    for column in train.columns() {
        if let ColumnData::Categorical { categories, .. } = &column.data
            && categories.len() > 64 * 255
        {
            return Err(TrainError::InvalidData(format!(
                "categorical column {:?} has {} categories; at most 16320 are supported",
                column.name,
                categories.len()
            )));
        }
    }
    if let Some(validation) = validation
        && validation.features() != train.features()
    {
        return Err(TrainError::InvalidData(
            "the validation set's columns differ from the training set's (names, order, types or categories)"
                .into(),
        ));
    }
    if params.early_stopping_rounds.is_some() && validation.is_none_or(|v| v.n_rows() == 0) {
        return Err(TrainError::InvalidParameter(
            "early_stopping_rounds needs a non-empty validation set".into(),
        ));
    }
    Ok(())
}
