//! Decision trees as stored in the native model format, and the flattened forest that
//! prediction walks.

use serde::{Deserialize, Serialize};

/// A split test on one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Split {
    /// Rows with `value <= threshold` go left.
    Numeric { threshold: f64 },
    /// Rows whose category code is in `categories` (sorted) go left; other, unknown and
    /// negative codes go right.
    Categorical { categories: Vec<u32> },
}

/// An internal node. A child reference `c >= 0` is node `c`; `c < 0` is leaf `-c - 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitNode {
    pub feature: u32,
    pub split: Split,
    /// Direction of rows whose value is missing (NaN).
    pub default_left: bool,
    pub left: i32,
    pub right: i32,
}

/// One regression tree. Node 0 is the root; a tree without nodes is a single leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<SplitNode>,
    pub leaf_values: Vec<f64>,
}

pub(crate) fn node_child(index: usize) -> i32 {
    index as i32
}

pub(crate) fn leaf_child(index: usize) -> i32 {
    -(index as i32) - 1
}

impl Tree {
    /// Returns the leaf index that `row` reaches.
    pub fn leaf_index(&self, row: &[f64]) -> usize {
        if self.nodes.is_empty() {
            return 0;
        }
        let mut current = 0i32;
        loop {
            let node = &self.nodes[current as usize];
            let value = row[node.feature as usize];
            let go_left = match &node.split {
                _ if value.is_nan() => node.default_left,
                Split::Numeric { threshold } => value <= *threshold,
                // Negative codes match no category and go right, as in the ONNX export.
                Split::Categorical { categories } => {
                    value >= 0.0 && categories.binary_search(&(value as u32)).is_ok()
                }
            };
            current = if go_left { node.left } else { node.right };
            if current < 0 {
                return (-current - 1) as usize;
            }
        }
    }

    /// Returns the value of the leaf that `row` reaches.
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.leaf_values[self.leaf_index(row)]
    }
}

/// High bit of a flat child reference: set for a leaf, whose index is in the low bits.
const LEAF_FLAG: u32 = 1 << 31;
/// Marks a numeric node in [`FlatNode::category_words`].
const NUMERIC: u32 = u32::MAX;

/// A node of the flat forest, 24 bytes, so most of a small tree fits in a few cache lines.
#[derive(Clone, Copy, Debug)]
struct FlatNode {
    threshold: f64,
    feature: u32,
    /// For categorical nodes: start of the category bitset in `FlatForest::bitsets`, with the
    /// bitset length in words in the top 8 bits; [`NUMERIC`] otherwise.
    category_words: u32,
    /// Child references, node or leaf indices below 2^30. Bit 30 of `right` stores the
    /// missing direction.
    left: u32,
    right: u32,
}

const DEFAULT_LEFT_FLAG: u32 = 1 << 30;

/// All trees of an ensemble in one node array, one leaf array and one bitset array, built from
/// the serialised trees for prediction.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlatForest {
    nodes: Vec<FlatNode>,
    leaves: Vec<f64>,
    bitsets: Vec<u64>,
    /// Per tree: the root reference (a node index, or a leaf reference for one-leaf trees).
    roots: Vec<u32>,
}

impl FlatForest {
    pub(crate) fn new(trees: &[Tree]) -> Self {
        let mut forest = FlatForest::default();
        for tree in trees {
            let node_base = forest.nodes.len() as u32;
            let leaf_base = forest.leaves.len() as u32;
            let reference = |child: i32| {
                if child < 0 {
                    LEAF_FLAG | (leaf_base + (-child - 1) as u32)
                } else {
                    node_base + child as u32
                }
            };
            forest.roots.push(if tree.nodes.is_empty() {
                LEAF_FLAG | leaf_base
            } else {
                node_base
            });
            for node in &tree.nodes {
                let (threshold, category_words) = match &node.split {
                    Split::Numeric { threshold } => (*threshold, NUMERIC),
                    Split::Categorical { categories } => {
                        let words = categories.last().map_or(1, |&max| max as usize / 64 + 1);
                        let start = forest.bitsets.len();
                        forest.bitsets.resize(start + words, 0);
                        for &category in categories {
                            forest.bitsets[start + category as usize / 64] |= 1 << (category % 64);
                        }
                        // Category codes beyond 64 * 255 do not fit the packed length; such
                        // models are rejected when they are loaded.
                        (0.0, (start as u32) | ((words as u32) << 24))
                    }
                };
                let mut right = reference(node.right);
                if node.default_left {
                    right |= DEFAULT_LEFT_FLAG;
                }
                forest.nodes.push(FlatNode {
                    threshold,
                    feature: node.feature,
                    category_words,
                    left: reference(node.left),
                    right,
                });
            }
            forest.leaves.extend_from_slice(&tree.leaf_values);
        }
        forest
    }

    /// Adds the leaf value that `row` reaches in every tree to `start`, in tree order.
    pub(crate) fn sum(&self, row: &[f64], start: f64) -> f64 {
        let mut total = start;
        for &root in &self.roots {
            total += self.leaves[self.walk(root, row) as usize];
        }
        total
    }

    fn walk(&self, mut reference: u32, row: &[f64]) -> u32 {
        while reference & LEAF_FLAG == 0 {
            let node = &self.nodes[reference as usize];
            let value = row[node.feature as usize];
            let default_left = node.right & DEFAULT_LEFT_FLAG != 0;
            let go_left = if value.is_nan() {
                default_left
            } else if node.category_words == NUMERIC {
                value <= node.threshold
            } else if value < 0.0 {
                false
            } else {
                let start = (node.category_words & 0x00FF_FFFF) as usize;
                let words = (node.category_words >> 24) as usize;
                let code = value as usize;
                code / 64 < words && self.bitsets[start + code / 64] & (1 << (code % 64)) != 0
            };
            reference = if go_left {
                node.left
            } else {
                node.right & !DEFAULT_LEFT_FLAG
            };
        }
        reference & !LEAF_FLAG
    }
}
