//! Native evaluation of built-in models (`model.ghaf`) written by `ghaf-train`.
//!
//! Tree ensembles are copied into contiguous arrays: one node array for all trees, one leaf
//! array and one array of category bitsets. A batch is evaluated tree by tree, so one tree's
//! nodes stay in cache while every row walks it. Each row's raw score is still the base score
//! plus its leaf values added in tree order, the order `Model::predict` uses, so results are
//! bit-identical to it.

use std::borrow::Cow;

use ghaf_train::gbdt::tree::{Split, Tree};
use ghaf_train::linear::{Encoding, LinearModel};
use ghaf_train::{GbdtModel, Model, Objective};

use crate::validate::{check_inputs, check_outputs, invalid};
use crate::{DataType, ModelSignature, Predictor, RuntimeError, Tensor, TensorData, TensorMeta};

/// Platform name in the signature of native models.
pub const PLATFORM: &str = "ghaf_native";

/// Set in a child reference that points at a leaf; the low bits are the leaf index.
const LEAF: u32 = 1 << 31;
/// Set in [`Node::feature`] when rows with a missing value go left.
const DEFAULT_LEFT: u32 = 1 << 31;
/// [`Node::category_set`] of a numeric split.
const NUMERIC: u32 = u32::MAX;

/// A split node, 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f64,
    /// Feature index, with [`DEFAULT_LEFT`] as a flag.
    feature: u32,
    /// Index into [`Forest::category_sets`], or [`NUMERIC`].
    category_set: u32,
    left: u32,
    right: u32,
}

/// Location of one categorical split's bitset in [`Forest::bitsets`].
#[derive(Clone, Copy, Debug)]
struct CategorySet {
    start: u32,
    words: u32,
}

#[derive(Clone, Debug, Default)]
struct Forest {
    nodes: Vec<Node>,
    leaves: Vec<f64>,
    category_sets: Vec<CategorySet>,
    bitsets: Vec<u64>,
    /// Per tree, the reference of its root: a node index, or a leaf for one-leaf trees.
    roots: Vec<u32>,
    base_score: f64,
}

impl Forest {
    fn new(model: &GbdtModel) -> Result<Self, RuntimeError> {
        let mut forest = Forest {
            base_score: model.base_score(),
            ..Forest::default()
        };
        for tree in model.trees() {
            forest.add_tree(tree)?;
        }
        Ok(forest)
    }

    fn add_tree(&mut self, tree: &Tree) -> Result<(), RuntimeError> {
        let node_base = self.nodes.len();
        let leaf_base = self.leaves.len();
        if node_base + tree.nodes.len() >= LEAF as usize
            || leaf_base + tree.leaf_values.len() >= LEAF as usize
        {
            return Err(RuntimeError::Load(
                "the tree model has more than 2^31 nodes or leaves".into(),
            ));
        }
        // `GbdtModel` checked child references when it was read, so these stay in range.
        let reference = |child: i32| -> u32 {
            if child < 0 {
                LEAF | (leaf_base + (-(child as i64) - 1) as usize) as u32
            } else {
                (node_base + child as usize) as u32
            }
        };
        self.roots.push(if tree.nodes.is_empty() {
            LEAF | leaf_base as u32
        } else {
            node_base as u32
        });
        for node in &tree.nodes {
            if node.feature >= DEFAULT_LEFT {
                return Err(RuntimeError::Load(format!(
                    "feature index {} of a split is out of range",
                    node.feature
                )));
            }
            let (threshold, category_set) = match &node.split {
                Split::Numeric { threshold } => (*threshold, NUMERIC),
                Split::Categorical { categories } => (0.0, self.add_category_set(categories)),
            };
            let flags = if node.default_left { DEFAULT_LEFT } else { 0 };
            self.nodes.push(Node {
                threshold,
                feature: node.feature | flags,
                category_set,
                left: reference(node.left),
                right: reference(node.right),
            });
        }
        self.leaves.extend_from_slice(&tree.leaf_values);
        Ok(())
    }

    fn add_category_set(&mut self, categories: &[u32]) -> u32 {
        // `GbdtModel` keeps category codes below 16,320, so a bitset has at most 255 words.
        let words = categories
            .iter()
            .max()
            .map_or(0, |&max| max as usize / 64 + 1);
        let start = self.bitsets.len();
        self.bitsets.resize(start + words, 0);
        for &category in categories {
            self.bitsets[start + category as usize / 64] |= 1u64 << (category % 64);
        }
        self.category_sets.push(CategorySet {
            start: start as u32,
            words: words as u32,
        });
        (self.category_sets.len() - 1) as u32
    }

    /// Writes the raw score of every row of `matrix` into `scores`.
    fn scores(&self, matrix: &[f64], n_features: usize, scores: &mut [f64]) {
        scores.fill(self.base_score);
        for &root in &self.roots {
            for (score, row) in scores.iter_mut().zip(matrix.chunks_exact(n_features)) {
                *score += self.leaves[self.leaf(root, row) as usize];
            }
        }
    }

    /// Returns the leaf index that `row` reaches from `reference`.
    fn leaf(&self, mut reference: u32, row: &[f64]) -> u32 {
        while reference & LEAF == 0 {
            let node = &self.nodes[reference as usize];
            let value = row[(node.feature & !DEFAULT_LEFT) as usize];
            let go_left = if value.is_nan() {
                node.feature & DEFAULT_LEFT != 0
            } else if node.category_set == NUMERIC {
                value <= node.threshold
            } else {
                // Negative codes match no category; `as u32` saturates, so huge values and
                // infinity fall outside every bitset.
                value >= 0.0 && self.contains(node.category_set, value as u32)
            };
            reference = if go_left { node.left } else { node.right };
        }
        reference & !LEAF
    }

    fn contains(&self, set: u32, code: u32) -> bool {
        let set = self.category_sets[set as usize];
        let word = code / 64;
        word < set.words && self.bitsets[(set.start + word) as usize] & (1u64 << (code % 64)) != 0
    }
}

/// A linear model with its encodings in one array, evaluated without allocating per row.
#[derive(Clone, Debug)]
struct Linear {
    encodings: Vec<Encoding>,
    coefficients: Vec<f64>,
    intercept: f64,
}

impl Linear {
    fn new(model: &LinearModel) -> Self {
        Self {
            encodings: model.encodings.clone(),
            coefficients: model.coefficients.clone(),
            intercept: model.intercept,
        }
    }

    /// Writes the linear predictor of every row into `scores`. The encoded columns and the dot
    /// product follow `LinearModel::predict_raw` step for step, so the sums round the same way.
    fn scores(&self, matrix: &[f64], n_features: usize, scores: &mut [f64]) {
        let mut encoded = vec![0.0; self.coefficients.len()];
        for (score, row) in scores.iter_mut().zip(matrix.chunks_exact(n_features)) {
            let mut column = 0;
            for (&value, encoding) in row.iter().zip(&self.encodings) {
                match encoding {
                    Encoding::Standardized { mean, scale } => {
                        encoded[column] = if value.is_nan() {
                            0.0
                        } else {
                            (value - mean) / scale
                        };
                        column += 1;
                    }
                    Encoding::OneHot { n_categories } => {
                        encoded[column..column + n_categories].fill(0.0);
                        if value >= 0.0 && (value as usize) < *n_categories {
                            encoded[column + value as usize] = 1.0;
                        }
                        column += n_categories;
                    }
                }
            }
            let dot: f64 = self
                .coefficients
                .iter()
                .zip(&encoded)
                .map(|(c, x)| c * x)
                .sum();
            *score = self.intercept + dot;
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Trees(Forest),
    Linear(Linear),
}

/// Predictor of a built-in model. Input: `input`, `[N, n_features]`, FP64 (FP32, INT64 and
/// INT32 are converted to FP64). Output: `probability` (binary) or `prediction` (regression),
/// FP64 `[N, 1]`, the names and shapes of the model's ONNX export.
pub struct NativePredictor {
    kind: Kind,
    objective: Objective,
    n_features: usize,
    features: Vec<ghaf_train::Feature>,
    feature_names: Vec<String>,
    signature: ModelSignature,
}

impl NativePredictor {
    /// Builds the predictor from a model file in the native format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let model = Model::from_bytes(bytes)
            .map_err(|error| RuntimeError::Load(format!("model.ghaf: {error}")))?;
        Self::new(&model)
    }

    pub fn new(model: &Model) -> Result<Self, RuntimeError> {
        let kind = match model {
            Model::Gbdt(gbdt) => Kind::Trees(Forest::new(gbdt)?),
            Model::Linear(linear) => Kind::Linear(Linear::new(linear)),
        };
        let n_features = model.features().len();
        if n_features == 0 {
            return Err(RuntimeError::Load("the model has no features".into()));
        }
        let objective = model.objective();
        let signature = ModelSignature {
            platform: PLATFORM.into(),
            inputs: vec![TensorMeta {
                name: ghaf_train::onnx::INPUT_NAME.into(),
                datatype: DataType::Fp64,
                shape: vec![-1, n_features as i64],
            }],
            outputs: vec![TensorMeta {
                name: ghaf_train::onnx::output_name(objective).into(),
                datatype: DataType::Fp64,
                shape: vec![-1, 1],
            }],
        };
        Ok(Self {
            kind,
            objective,
            n_features,
            features: model.features().to_vec(),
            feature_names: model.features().iter().map(|f| f.name.clone()).collect(),
            signature,
        })
    }

    /// Returns the model's features, with the category names of categorical features, in
    /// input column order.
    pub fn features(&self) -> &[ghaf_train::Feature] {
        &self.features
    }

    /// Returns the prediction of every row of a row-major `[rows, n_features]` matrix: the
    /// probability of class 1 (binary) or the predicted value (regression).
    pub fn predict_matrix(&self, matrix: &[f64]) -> Result<Vec<f64>, RuntimeError> {
        if !matrix.len().is_multiple_of(self.n_features) {
            return Err(invalid(
                ghaf_train::onnx::INPUT_NAME,
                format!(
                    "{} values are not a whole number of rows of {} features",
                    matrix.len(),
                    self.n_features
                ),
            ));
        }
        let mut scores = vec![0.0; matrix.len() / self.n_features];
        match &self.kind {
            Kind::Trees(forest) => forest.scores(matrix, self.n_features, &mut scores),
            Kind::Linear(linear) => linear.scores(matrix, self.n_features, &mut scores),
        }
        for score in &mut scores {
            *score = self.objective.transform(*score);
        }
        Ok(scores)
    }
}

fn accepts(_meta: &TensorMeta, datatype: DataType) -> bool {
    matches!(datatype, DataType::Fp32 | DataType::Int64 | DataType::Int32)
}

/// Returns the input values as f64, borrowing FP64 data and converting the other accepted
/// types. INT64 values beyond 2^53 round to the nearest f64.
fn as_f64<'a>(name: &str, data: &'a TensorData) -> Result<Cow<'a, [f64]>, RuntimeError> {
    Ok(match data {
        TensorData::Fp64(values) => Cow::Borrowed(values),
        TensorData::Fp32(values) => Cow::Owned(values.iter().map(|&v| f64::from(v)).collect()),
        TensorData::Int64(values) => Cow::Owned(values.iter().map(|&v| v as f64).collect()),
        TensorData::Int32(values) => Cow::Owned(values.iter().map(|&v| f64::from(v)).collect()),
        other => {
            return Err(invalid(
                name,
                format!(
                    "datatype is {}, expected FP64, FP32, INT64 or INT32",
                    other.datatype()
                ),
            ));
        }
    })
}

impl Predictor for NativePredictor {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn predict(&self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        let ordered = check_inputs(&self.signature, inputs, accepts)?;
        check_outputs(&self.signature, outputs)?;
        let input = ordered[0];
        let matrix = as_f64(&input.name, &input.data)?;
        let predictions = self.predict_matrix(&matrix)?;
        let rows = predictions.len() as i64;
        Ok(vec![Tensor::new(
            self.signature.outputs[0].name.clone(),
            vec![rows, 1],
            TensorData::Fp64(predictions),
        )])
    }

    fn feature_names(&self) -> Option<&[String]> {
        Some(&self.feature_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 24);
    }
}
