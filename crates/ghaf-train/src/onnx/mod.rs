//! ONNX export of the built-in models.
//!
//! Every exported model has one input, `input`, a `[N, n_features]` double tensor laid out as
//! the native prediction functions take rows: numeric values with NaN for missing, and
//! categorical features as whole-number category codes with NaN for missing. It has one
//! output, `[N, 1]`: `probability` (of class 1) for binary models and `prediction` for
//! regression models.
//!
//! - Tree ensembles use `ai.onnx.ml` `TreeEnsemble` (opset 5, run by ONNX Runtime 1.32 on
//!   double input). Numeric splits are `BRANCH_LEQ` nodes; categorical splits are
//!   `BRANCH_MEMBER` nodes listing the categories of the left branch, so any partition exports
//!   as one node. `nodes_missing_value_tracks_true` carries the learned missing direction. The
//!   base score is added to the leaves of the first tree, and binary models end in a
//!   `Sigmoid` node.
//! - Linear models gather the numeric columns, replace NaN by the training mean and
//!   standardise them in double precision. Categorical columns are one-hot encoded with
//!   `Equal` against the category codes. Logistic regression ends in `LinearClassifier` (on
//!   double, `LOGISTIC`, float output). Linear regression ends in `MatMul` and `Add` on
//!   double, because ONNX Runtime implements `LinearRegressor` for float only.

pub mod proto;

use prost::Message;

use crate::gbdt::GbdtModel;
use crate::gbdt::tree::{Split, Tree};
use crate::linear::{Encoding, LinearModel};
use crate::model::{Model, Objective};
use proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto, attribute_type, data_type,
};

const ML_DOMAIN: &str = "ai.onnx.ml";
/// ONNX IR version written; the export tests load it in ONNX Runtime 1.32.
const IR_VERSION: i64 = 10;
/// Opset of the default domain (`Gather`, `Where`, `Equal`, `Cast`, `Concat` and the rest).
const DEFAULT_OPSET: i64 = 21;
/// Opset of `ai.onnx.ml`; version 5 introduced `TreeEnsemble`.
const ML_OPSET: i64 = 5;

/// Name of the input tensor of every exported model.
pub const INPUT_NAME: &str = "input";

/// Returns the name of the output tensor of a model with `objective`.
pub fn output_name(objective: Objective) -> &'static str {
    match objective {
        Objective::Binary => "probability",
        Objective::Regression => "prediction",
    }
}

/// Encodes `model` as an ONNX model file.
pub fn export(model: &Model) -> Vec<u8> {
    let (graph, kind) = match model {
        Model::Gbdt(gbdt) => (gbdt_graph(gbdt), "gbdt"),
        Model::Linear(linear) => (linear_graph(linear), "linear"),
    };
    let features = serde_json::to_string(model.features()).expect("features serialise to JSON");
    let proto = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(DEFAULT_OPSET),
            },
            OperatorSetIdProto {
                domain: Some(ML_DOMAIN.into()),
                version: Some(ML_OPSET),
            },
        ],
        producer_name: Some("ghaf".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("Ghaf {kind} model")),
        graph: Some(graph),
        metadata_props: vec![
            StringStringEntryProto {
                key: Some("ghaf.model_kind".into()),
                value: Some(kind.into()),
            },
            StringStringEntryProto {
                key: Some("ghaf.features".into()),
                value: Some(features),
            },
        ],
    };
    proto.encode_to_vec()
}

fn gbdt_graph(model: &GbdtModel) -> GraphProto {
    let mut nodes = TreeArrays::default();
    let mut leaf_base = 0usize;
    for (t, tree) in model.trees().iter().enumerate() {
        // The base score rides on the first tree's leaves, since TreeEnsemble has no base value.
        let offset = if t == 0 { model.base_score() } else { 0.0 };
        nodes.add_tree(tree, leaf_base, offset);
        leaf_base += tree.leaf_values.len();
    }
    if model.trees().is_empty() {
        let single = Tree {
            nodes: Vec::new(),
            leaf_values: vec![0.0],
        };
        nodes.add_tree(&single, 0, model.base_score());
    }

    let output = output_name(model.objective());
    // ONNX Runtime 1.32 ignores post_transform = LOGISTIC on a one-target TreeEnsemble, so the
    // sigmoid of binary models is a separate Sigmoid node.
    let scores = match model.objective() {
        Objective::Binary => "raw_score",
        Objective::Regression => output,
    };
    let attributes = vec![
        int_attribute("n_targets", 1),
        int_attribute("aggregate_function", 1),
        int_attribute("post_transform", 0),
        ints_attribute("tree_roots", nodes.tree_roots),
        ints_attribute("nodes_featureids", nodes.feature_ids),
        tensor_attribute(
            "nodes_splits",
            double_tensor(vec![nodes.splits.len() as i64], nodes.splits),
        ),
        tensor_attribute("nodes_modes", uint8_tensor(nodes.modes)),
        ints_attribute("nodes_truenodeids", nodes.true_ids),
        ints_attribute("nodes_trueleafs", nodes.true_is_leaf),
        ints_attribute("nodes_falsenodeids", nodes.false_ids),
        ints_attribute("nodes_falseleafs", nodes.false_is_leaf),
        ints_attribute("nodes_missing_value_tracks_true", nodes.missing_tracks_true),
        ints_attribute("leaf_targetids", vec![0; nodes.leaf_weights.len()]),
        tensor_attribute(
            "leaf_weights",
            double_tensor(vec![nodes.leaf_weights.len() as i64], nodes.leaf_weights),
        ),
    ];
    let mut attributes = attributes;
    if !nodes.membership_values.is_empty() {
        attributes.push(tensor_attribute(
            "membership_values",
            double_tensor(
                vec![nodes.membership_values.len() as i64],
                nodes.membership_values,
            ),
        ));
    }
    let mut graph_nodes = vec![NodeProto {
        input: vec![INPUT_NAME.into()],
        output: vec![scores.into()],
        name: Some("trees".into()),
        op_type: Some("TreeEnsemble".into()),
        domain: Some(ML_DOMAIN.into()),
        attribute: attributes,
    }];
    if model.objective() == Objective::Binary {
        graph_nodes.push(NodeProto {
            input: vec![scores.into()],
            output: vec![output.into()],
            name: Some("sigmoid".into()),
            op_type: Some("Sigmoid".into()),
            domain: Some(String::new()),
            attribute: Vec::new(),
        });
    }
    GraphProto {
        node: graph_nodes,
        name: Some("ghaf_gbdt".into()),
        initializer: Vec::new(),
        input: vec![tensor_value(
            INPUT_NAME,
            data_type::DOUBLE,
            model.features().len() as i64,
        )],
        output: vec![tensor_value(output, data_type::DOUBLE, 1)],
    }
}

/// The `nodes_*` and `leaf_*` arrays of a `TreeEnsemble` node. Node and leaf ids are positions
/// in these arrays across all trees.
#[derive(Default)]
struct TreeArrays {
    tree_roots: Vec<i64>,
    feature_ids: Vec<i64>,
    splits: Vec<f64>,
    modes: Vec<i32>,
    true_ids: Vec<i64>,
    true_is_leaf: Vec<i64>,
    false_ids: Vec<i64>,
    false_is_leaf: Vec<i64>,
    missing_tracks_true: Vec<i64>,
    membership_values: Vec<f64>,
    leaf_weights: Vec<f64>,
}

const MODE_BRANCH_LEQ: i32 = 0;
const MODE_BRANCH_MEMBER: i32 = 6;

impl TreeArrays {
    fn add_tree(&mut self, tree: &Tree, leaf_base: usize, leaf_offset: f64) {
        let node_base = self.feature_ids.len() as i64;
        self.tree_roots.push(node_base);
        self.leaf_weights
            .extend(tree.leaf_values.iter().map(|v| v + leaf_offset));
        if tree.nodes.is_empty() {
            // A one-leaf tree becomes a split whose branches both reach the leaf.
            self.push_node(0, MODE_BRANCH_LEQ, 0.0, false);
            let leaf = leaf_base as i64;
            self.true_ids.push(leaf);
            self.true_is_leaf.push(1);
            self.false_ids.push(leaf);
            self.false_is_leaf.push(1);
            return;
        }
        for node in &tree.nodes {
            match &node.split {
                Split::Numeric { threshold } => {
                    self.push_node(node.feature, MODE_BRANCH_LEQ, *threshold, node.default_left);
                }
                // A set with no categories sends only missing values left. ONNX Runtime rejects
                // empty member sets, so this exports as `value <= -inf`, which holds for no
                // number while NaN still follows the missing direction.
                Split::Categorical { categories } if categories.is_empty() => {
                    self.push_node(
                        node.feature,
                        MODE_BRANCH_LEQ,
                        f64::NEG_INFINITY,
                        node.default_left,
                    );
                }
                Split::Categorical { categories } => {
                    self.push_node(node.feature, MODE_BRANCH_MEMBER, 0.0, node.default_left);
                    self.membership_values
                        .extend(categories.iter().map(|&c| f64::from(c)));
                    self.membership_values.push(f64::NAN);
                }
            }
            for (child, ids, is_leaf) in [
                (node.left, &mut self.true_ids, &mut self.true_is_leaf),
                (node.right, &mut self.false_ids, &mut self.false_is_leaf),
            ] {
                if child < 0 {
                    ids.push(leaf_base as i64 + i64::from(-child - 1));
                    is_leaf.push(1);
                } else {
                    ids.push(node_base + i64::from(child));
                    is_leaf.push(0);
                }
            }
        }
    }

    fn push_node(&mut self, feature: u32, mode: i32, split: f64, missing_tracks_true: bool) {
        self.feature_ids.push(i64::from(feature));
        self.modes.push(mode);
        self.splits.push(split);
        self.missing_tracks_true
            .push(i64::from(missing_tracks_true));
    }
}

fn linear_graph(model: &LinearModel) -> GraphProto {
    let mut graph = GraphBuilder::default();
    let n_features = model.features.len() as i64;

    // Encoded columns in export order: all standardised features first, then each one-hot
    // block; coefficients are permuted to match.
    let mut numeric = Vec::new();
    let mut means = Vec::new();
    let mut scales = Vec::new();
    let mut numeric_coefficients = Vec::new();
    let mut one_hot = Vec::new();
    let mut one_hot_coefficients = Vec::new();
    let mut column = 0;
    for (feature, encoding) in model.encodings.iter().enumerate() {
        match encoding {
            Encoding::Standardized { mean, scale } => {
                numeric.push(feature as i64);
                means.push(*mean);
                scales.push(*scale);
                numeric_coefficients.push(model.coefficients[column]);
                column += 1;
            }
            Encoding::OneHot { n_categories } => {
                one_hot.push((feature as i64, *n_categories));
                one_hot_coefficients
                    .extend_from_slice(&model.coefficients[column..column + n_categories]);
                column += n_categories;
            }
        }
    }

    let mut parts = Vec::new();
    if !numeric.is_empty() {
        let width = numeric.len() as i64;
        let indices = graph.initializer(int64_tensor(vec![width], numeric));
        let mean = graph.initializer(double_tensor(vec![1, width], means));
        let scale = graph.initializer(double_tensor(vec![1, width], scales));
        let gathered = graph.node(
            "Gather",
            &[INPUT_NAME, &indices],
            vec![int_attribute("axis", 1)],
        );
        let is_missing = graph.node("IsNaN", &[&gathered], Vec::new());
        let imputed = graph.node("Where", &[&is_missing, &mean, &gathered], Vec::new());
        let centred = graph.node("Sub", &[&imputed, &mean], Vec::new());
        parts.push(graph.node("Div", &[&centred, &scale], Vec::new()));
    }
    for &(feature, n_categories) in &one_hot {
        let index = graph.initializer(int64_tensor(vec![1], vec![feature]));
        let codes = graph.initializer(double_tensor(
            vec![1, n_categories as i64],
            (0..n_categories).map(|c| c as f64).collect(),
        ));
        let gathered = graph.node(
            "Gather",
            &[INPUT_NAME, &index],
            vec![int_attribute("axis", 1)],
        );
        let equal = graph.node("Equal", &[&gathered, &codes], Vec::new());
        parts.push(graph.node(
            "Cast",
            &[&equal],
            vec![int_attribute("to", i64::from(data_type::DOUBLE))],
        ));
    }
    // Training and loading reject models without features, so `parts` is never empty.
    let encoded = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        graph.node("Concat", &inputs, vec![int_attribute("axis", 1)])
    };
    let coefficients: Vec<f64> = numeric_coefficients
        .into_iter()
        .chain(one_hot_coefficients)
        .collect();

    let output = output_name(model.objective);
    match model.objective {
        // ONNX Runtime implements LinearRegressor for float only, whose output rounds
        // predictions above about 100 in magnitude by more than 1e-5. MatMul and Add keep the
        // whole computation in double.
        Objective::Regression => {
            let width = coefficients.len() as i64;
            let weights = graph.initializer(double_tensor(vec![width, 1], coefficients));
            let bias = graph.initializer(double_tensor(vec![1], vec![model.intercept]));
            let product = graph.node("MatMul", &[&encoded, &weights], Vec::new());
            graph.push(NodeProto {
                input: vec![product, bias],
                output: vec![output.into()],
                name: Some("intercept".into()),
                op_type: Some("Add".into()),
                domain: Some(String::new()),
                attribute: Vec::new(),
            });
            graph.finish(n_features, output, data_type::DOUBLE)
        }
        Objective::Binary => {
            // Two score rows, -w and w, so that the LOGISTIC output's second column is
            // sigmoid(w·x + b) whatever ONNX Runtime does for single-row binary models.
            let negated = coefficients.iter().map(|&c| -c as f32);
            let both: Vec<f32> = negated
                .chain(coefficients.iter().map(|&c| c as f32))
                .collect();
            let scores = graph.fresh_name();
            let labels = graph.fresh_name();
            graph.push(NodeProto {
                input: vec![encoded],
                output: vec![labels, scores.clone()],
                name: Some("linear".into()),
                op_type: Some("LinearClassifier".into()),
                domain: Some(ML_DOMAIN.into()),
                attribute: vec![
                    floats_attribute("coefficients", both),
                    floats_attribute(
                        "intercepts",
                        vec![-model.intercept as f32, model.intercept as f32],
                    ),
                    ints_attribute("classlabels_ints", vec![0, 1]),
                    string_attribute("post_transform", "LOGISTIC"),
                ],
            });
            let second = graph.initializer(int64_tensor(vec![1], vec![1]));
            graph.push(NodeProto {
                input: vec![scores, second],
                output: vec![output.into()],
                name: Some("probability_of_one".into()),
                op_type: Some("Gather".into()),
                domain: Some(String::new()),
                attribute: vec![int_attribute("axis", 1)],
            });
            graph.finish(n_features, output, data_type::FLOAT)
        }
    }
}

/// Collects nodes and initializers under generated unique names.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    fn fresh_name(&mut self) -> String {
        self.counter += 1;
        format!("t{}", self.counter)
    }

    fn initializer(&mut self, mut tensor: TensorProto) -> String {
        let name = self.fresh_name();
        tensor.name = Some(name.clone());
        self.initializers.push(tensor);
        name
    }

    /// Adds a default-domain node with one output and returns the output's name.
    fn node(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = self.fresh_name();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: vec![output.clone()],
            name: Some(format!("{op_type}_{output}")),
            op_type: Some(op_type.into()),
            domain: Some(String::new()),
            attribute,
        });
        output
    }

    fn push(&mut self, node: NodeProto) {
        self.nodes.push(node);
    }

    fn finish(self, n_features: i64, output: &str, output_type: i32) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some("ghaf_linear".into()),
            initializer: self.initializers,
            input: vec![tensor_value(INPUT_NAME, data_type::DOUBLE, n_features)],
            output: vec![tensor_value(output, output_type, 1)],
        }
    }
}

fn tensor_value(name: &str, elem_type: i32, columns: i64) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension {
                            dim_value: None,
                            dim_param: Some("N".into()),
                        },
                        Dimension {
                            dim_value: Some(columns),
                            dim_param: None,
                        },
                    ],
                }),
            }),
        }),
    }
}

fn double_tensor(dims: Vec<i64>, values: Vec<f64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(data_type::DOUBLE),
        double_data: values,
        ..Default::default()
    }
}

fn int64_tensor(dims: Vec<i64>, values: Vec<i64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(data_type::INT64),
        int64_data: values,
        ..Default::default()
    }
}

fn uint8_tensor(values: Vec<i32>) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: Some(data_type::UINT8),
        int32_data: values,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: values,
        ..Default::default()
    }
}

fn floats_attribute(name: &str, values: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::FLOATS),
        floats: values,
        ..Default::default()
    }
}

fn string_attribute(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn tensor_attribute(name: &str, tensor: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::TENSOR),
        t: Some(tensor),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, Dataset, GbdtParams, LinearParams, train_gbdt, train_linear};

    fn categorical_data() -> Dataset {
        let n = 2_000;
        let codes: Vec<i32> = (0..n).map(|i| i % 10 - 1).collect();
        let x: Vec<f64> = (0..n).map(|i| f64::from(i % 17)).collect();
        let label = codes
            .iter()
            .zip(&x)
            .map(|(c, v)| f64::from(u8::from([1, 4, 7].contains(c) || *v > 12.0)))
            .collect();
        let categories = (0..9).map(|i| format!("c{i}")).collect();
        Dataset::new(
            vec![
                Column::f64("x", x),
                Column::categorical("c", codes, categories),
            ],
            label,
        )
        .unwrap()
    }

    fn attribute<'a>(node: &'a NodeProto, name: &str) -> &'a AttributeProto {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .unwrap()
    }

    #[test]
    fn tree_export_uses_member_nodes() {
        let params = GbdtParams {
            n_estimators: 5,
            min_data_per_group: 10,
            ..GbdtParams::default()
        };
        let model = train_gbdt(&categorical_data(), None, &params)
            .unwrap()
            .model;
        let member_nodes = model
            .trees()
            .iter()
            .flat_map(|t| &t.nodes)
            .filter(
                |n| matches!(&n.split, Split::Categorical { categories } if !categories.is_empty()),
            )
            .count();
        assert!(member_nodes > 0, "the data needs categorical splits");

        let bytes = export(&Model::Gbdt(model));
        let decoded = ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = decoded.graph.unwrap();
        let ops: Vec<&str> = graph
            .node
            .iter()
            .map(|n| n.op_type.as_deref().unwrap())
            .collect();
        assert_eq!(ops, ["TreeEnsemble", "Sigmoid"]);
        let ensemble = &graph.node[0];
        let modes = attribute(ensemble, "nodes_modes").t.as_ref().unwrap();
        let member_modes = modes
            .int32_data
            .iter()
            .filter(|&&m| m == MODE_BRANCH_MEMBER)
            .count();
        assert_eq!(member_modes, member_nodes);
        let values = &attribute(ensemble, "membership_values")
            .t
            .as_ref()
            .unwrap()
            .double_data;
        assert_eq!(values.iter().filter(|v| v.is_nan()).count(), member_nodes);
        assert_eq!(graph.output[0].name.as_deref(), Some("probability"));
    }

    #[test]
    fn linear_export_one_hot_encodes() {
        let params = LinearParams::default();
        let model = train_linear(&categorical_data(), &params).unwrap();
        let decoded = ModelProto::decode(export(&Model::Linear(model)).as_slice()).unwrap();
        let graph = decoded.graph.unwrap();
        let ops: Vec<&str> = graph
            .node
            .iter()
            .map(|n| n.op_type.as_deref().unwrap())
            .collect();
        assert!(ops.contains(&"Equal"), "{ops:?}");
        assert!(ops.contains(&"LinearClassifier"), "{ops:?}");
        let classifier = graph
            .node
            .iter()
            .find(|n| n.op_type.as_deref() == Some("LinearClassifier"))
            .unwrap();
        // One standardised column plus nine one-hot columns, for each of the two classes.
        assert_eq!(
            attribute(classifier, "coefficients").floats.len(),
            2 * (1 + 9)
        );
    }
}
