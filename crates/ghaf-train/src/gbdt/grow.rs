//! Grows one regression tree on gradient histograms, leaf by leaf.
//!
//! The leaf with the largest split gain is split next until the tree has `num_leaves` leaves
//! or no leaf has a split with positive gain. A split's children get one histogram built from
//! rows (the smaller child) and one by subtracting it from the parent's.

use super::GbdtParams;
use super::binning::BinMapper;
use super::tree::{Split, SplitNode, Tree, leaf_child, node_child};

/// Gradient, hessian and row count summed over the rows of one bin.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BinStats {
    pub(crate) gradient: f64,
    pub(crate) hessian: f64,
    pub(crate) count: f64,
}

impl BinStats {
    fn add(&mut self, other: &BinStats) {
        self.gradient += other.gradient;
        self.hessian += other.hessian;
        self.count += other.count;
    }

    fn minus(&self, other: &BinStats) -> BinStats {
        BinStats {
            gradient: self.gradient - other.gradient,
            hessian: self.hessian - other.hessian,
            count: self.count - other.count,
        }
    }
}

/// Training rows in bin form. `bins` is column-major: feature `f`'s bins are
/// `bins[f * n_rows..(f + 1) * n_rows]`.
pub(crate) struct BinnedData {
    pub(crate) n_rows: usize,
    pub(crate) mappers: Vec<BinMapper>,
    pub(crate) bins: Vec<u8>,
    /// The same bins row-major, `n_features` per row, for building histograms of row subsets:
    /// one pass over a row touches its gradient once and its bins in one cache line.
    pub(crate) row_bins: Vec<u8>,
    /// Start of each feature's bins in a histogram.
    pub(crate) hist_offsets: Vec<usize>,
    pub(crate) hist_len: usize,
}

impl BinnedData {
    pub(crate) fn new(data: &crate::Dataset, max_bins: usize) -> Self {
        let n_rows = data.n_rows();
        let mappers: Vec<BinMapper> = data
            .columns()
            .iter()
            .map(|c| BinMapper::from_column(c, max_bins))
            .collect();
        let mut bins = Vec::with_capacity(n_rows * mappers.len());
        for (column, mapper) in data.columns().iter().zip(&mappers) {
            bins.extend((0..n_rows).map(|row| mapper.bin(column.value(row))));
        }
        let n_features = mappers.len();
        let mut row_bins = vec![0u8; n_rows * n_features];
        for feature in 0..n_features {
            for (row, &bin) in bins[feature * n_rows..(feature + 1) * n_rows]
                .iter()
                .enumerate()
            {
                row_bins[row * n_features + feature] = bin;
            }
        }
        let mut hist_offsets = Vec::with_capacity(mappers.len());
        let mut hist_len = 0;
        for mapper in &mappers {
            hist_offsets.push(hist_len);
            hist_len += mapper.n_bins();
        }
        Self {
            n_rows,
            mappers,
            bins,
            row_bins,
            hist_offsets,
            hist_len,
        }
    }

    fn feature_bins(&self, feature: usize) -> &[u8] {
        &self.bins[feature * self.n_rows..(feature + 1) * self.n_rows]
    }
}

/// Best split found for one leaf.
#[derive(Clone, Debug)]
struct Candidate {
    gain: f64,
    feature: usize,
    /// Bins that go to the left child.
    left_bins: LeftBins,
    default_left: bool,
    left: BinStats,
    right: BinStats,
}

#[derive(Clone, Debug)]
enum LeftBins {
    /// Value bins `0..=k`.
    UpTo(usize),
    /// An explicit set of category bins.
    Set(Vec<usize>),
}

struct Leaf {
    /// Range of this leaf's rows in the shared row-index buffer.
    start: usize,
    end: usize,
    depth: usize,
    total: BinStats,
    histogram: Vec<BinStats>,
    best: Option<Candidate>,
    /// Position of this leaf in its parent node (node index, whether it is the left child), or
    /// `None` for the root.
    parent_slot: Option<(usize, bool)>,
}

/// Result of growing one tree: the tree, the leaf of every training row, and the gain and
/// feature of every split for feature importance.
pub(crate) struct GrownTree {
    pub(crate) tree: Tree,
    /// Leaf index per training row.
    pub(crate) row_leaf: Vec<u32>,
    pub(crate) split_gains: Vec<(usize, f64)>,
}

pub(crate) struct TreeGrower<'a> {
    data: &'a BinnedData,
    params: &'a GbdtParams,
    /// Row indices, partitioned so that each leaf owns one contiguous range.
    rows: Vec<u32>,
    scratch: Vec<u32>,
}

impl<'a> TreeGrower<'a> {
    pub(crate) fn new(data: &'a BinnedData, params: &'a GbdtParams) -> Self {
        Self {
            data,
            params,
            rows: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Grows a tree for `gradients` (gradient, hessian per row). Leaf values are
    /// `-learning_rate * G / (H + lambda_l2)`.
    pub(crate) fn grow(&mut self, gradients: &[[f64; 2]]) -> GrownTree {
        let data = self.data;
        self.rows.clear();
        self.rows.extend(0..data.n_rows as u32);

        let mut root_histogram = vec![BinStats::default(); data.hist_len];
        self.build_histogram(0, data.n_rows, gradients, &mut root_histogram);
        // Any feature's histogram sums to the leaf totals; training rejects data without
        // features, so the first one exists.
        let mut total = BinStats::default();
        for stats in &root_histogram[..data.mappers[0].n_bins()] {
            total.add(stats);
        }

        let mut leaves = vec![Leaf {
            start: 0,
            end: data.n_rows,
            depth: 0,
            total,
            histogram: root_histogram,
            best: None,
            parent_slot: None,
        }];
        leaves[0].best = self.find_best_split(&leaves[0]);

        let mut nodes: Vec<SplitNode> = Vec::new();
        let mut split_gains = Vec::new();
        while leaves.len() < self.params.num_leaves {
            // Largest gain first; ties go to the lowest leaf index, for determinism.
            let mut chosen: Option<usize> = None;
            for (index, leaf) in leaves.iter().enumerate() {
                if let Some(best) = &leaf.best
                    && chosen
                        .is_none_or(|c| best.gain > leaves[c].best.as_ref().map_or(0.0, |b| b.gain))
                {
                    chosen = Some(index);
                }
            }
            let Some(leaf_index) = chosen else { break };
            self.split_leaf(
                &mut leaves,
                leaf_index,
                &mut nodes,
                &mut split_gains,
                gradients,
            );
        }

        let mut leaf_values = Vec::with_capacity(leaves.len());
        let mut row_leaf = vec![0u32; data.n_rows];
        for (index, leaf) in leaves.iter().enumerate() {
            leaf_values.push(self.leaf_value(&leaf.total));
            for &row in &self.rows[leaf.start..leaf.end] {
                row_leaf[row as usize] = index as u32;
            }
            if let Some((node, is_left)) = leaf.parent_slot {
                let child = leaf_child(index);
                if is_left {
                    nodes[node].left = child;
                } else {
                    nodes[node].right = child;
                }
            }
        }
        GrownTree {
            tree: Tree { nodes, leaf_values },
            row_leaf,
            split_gains,
        }
    }

    fn leaf_value(&self, stats: &BinStats) -> f64 {
        -self.params.learning_rate * stats.gradient / (stats.hessian + self.params.lambda_l2)
    }

    fn split_leaf(
        &mut self,
        leaves: &mut Vec<Leaf>,
        leaf_index: usize,
        nodes: &mut Vec<SplitNode>,
        split_gains: &mut Vec<(usize, f64)>,
        gradients: &[[f64; 2]],
    ) {
        let data = self.data;
        let candidate = leaves[leaf_index]
            .best
            .take()
            .expect("chosen leaf has a split");
        let feature = candidate.feature;
        let mapper = &data.mappers[feature];
        let missing_bin = mapper.missing_bin() as usize;

        // Which bins go left, as a lookup table over this feature's bins.
        let mut goes_left = vec![false; mapper.n_bins()];
        match &candidate.left_bins {
            LeftBins::UpTo(k) => goes_left[..=*k].iter_mut().for_each(|b| *b = true),
            LeftBins::Set(set) => set.iter().for_each(|&b| goes_left[b] = true),
        }
        goes_left[missing_bin] = candidate.default_left;

        // Stable partition of the leaf's rows: left rows first, then right rows.
        let (start, end) = (leaves[leaf_index].start, leaves[leaf_index].end);
        let column = data.feature_bins(feature);
        self.scratch.clear();
        let mut write = start;
        for read in start..end {
            let row = self.rows[read];
            if goes_left[column[row as usize] as usize] {
                self.rows[write] = row;
                write += 1;
            } else {
                self.scratch.push(row);
            }
        }
        self.rows[write..end].copy_from_slice(&self.scratch);
        let middle = write;

        let split = match (&candidate.left_bins, mapper) {
            (LeftBins::UpTo(k), BinMapper::Numeric { edges }) => Split::Numeric {
                threshold: edges[*k],
            },
            (LeftBins::Set(set), BinMapper::Categorical { code_of_bin, .. }) => {
                let mut categories: Vec<u32> = set
                    .iter()
                    .filter(|&&b| b < code_of_bin.len())
                    .map(|&b| code_of_bin[b])
                    .collect();
                categories.sort_unstable();
                Split::Categorical { categories }
            }
            _ => unreachable!("split kind matches the feature kind"),
        };
        let node_index = nodes.len();
        nodes.push(SplitNode {
            feature: feature as u32,
            split,
            default_left: candidate.default_left,
            left: 0,
            right: 0,
        });
        split_gains.push((feature, candidate.gain));
        if let Some((parent, is_left)) = leaves[leaf_index].parent_slot {
            if is_left {
                nodes[parent].left = node_child(node_index);
            } else {
                nodes[parent].right = node_child(node_index);
            }
        }

        // Histogram of the smaller child from rows; the larger one by subtraction.
        let parent_histogram = std::mem::take(&mut leaves[leaf_index].histogram);
        let left_rows = middle - start;
        let right_rows = end - middle;
        let mut small_histogram = vec![BinStats::default(); data.hist_len];
        let left_is_small = left_rows <= right_rows;
        if left_is_small {
            self.build_histogram(start, middle, gradients, &mut small_histogram);
        } else {
            self.build_histogram(middle, end, gradients, &mut small_histogram);
        }
        let mut large_histogram = parent_histogram;
        for (large, small) in large_histogram.iter_mut().zip(&small_histogram) {
            *large = large.minus(small);
        }
        let (left_histogram, right_histogram) = if left_is_small {
            (small_histogram, large_histogram)
        } else {
            (large_histogram, small_histogram)
        };

        let depth = leaves[leaf_index].depth + 1;
        let left_leaf = Leaf {
            start,
            end: middle,
            depth,
            total: candidate.left,
            histogram: left_histogram,
            best: None,
            parent_slot: Some((node_index, true)),
        };
        let right_leaf = Leaf {
            start: middle,
            end,
            depth,
            total: candidate.right,
            histogram: right_histogram,
            best: None,
            parent_slot: Some((node_index, false)),
        };
        leaves[leaf_index] = left_leaf;
        leaves.push(right_leaf);
        let right_index = leaves.len() - 1;
        leaves[leaf_index].best = self.find_best_split(&leaves[leaf_index]);
        leaves[right_index].best = self.find_best_split(&leaves[right_index]);
    }

    // NOTE: single-threaded. Spreading features over 2 rayon threads made training slower
    // (4.2 s against 2.4 s) on the shared 2-core benchmark machine; see BENCHMARKS.md.
    fn build_histogram(
        &self,
        start: usize,
        end: usize,
        gradients: &[[f64; 2]],
        histogram: &mut [BinStats],
    ) {
        let rows = &self.rows[start..end];
        if rows.len() == self.data.n_rows {
            // The root reads columns in order, without the row-index indirection.
            for feature in 0..self.data.mappers.len() {
                let offset = self.data.hist_offsets[feature];
                let n_bins = self.data.mappers[feature].n_bins();
                let feature_histogram = &mut histogram[offset..offset + n_bins];
                let column = self.data.feature_bins(feature);
                for (&bin, &[gradient, hessian]) in column.iter().zip(gradients) {
                    let stats = &mut feature_histogram[bin as usize];
                    stats.gradient += gradient;
                    stats.hessian += hessian;
                    stats.count += 1.0;
                }
            }
            return;
        }
        let n_features = self.data.mappers.len();
        let offsets = &self.data.hist_offsets;
        for &row in rows {
            let row = row as usize;
            let [gradient, hessian] = gradients[row];
            let bins = &self.data.row_bins[row * n_features..(row + 1) * n_features];
            for (&bin, &offset) in bins.iter().zip(offsets) {
                let stats = &mut histogram[offset + bin as usize];
                stats.gradient += gradient;
                stats.hessian += hessian;
                stats.count += 1.0;
            }
        }
    }

    fn find_best_split(&self, leaf: &Leaf) -> Option<Candidate> {
        let params = self.params;
        if params.max_depth.is_some_and(|max| leaf.depth >= max)
            || leaf.total.count < 2.0 * params.min_data_in_leaf as f64
        {
            return None;
        }
        let mut best: Option<Candidate> = None;
        for (feature, mapper) in self.data.mappers.iter().enumerate() {
            let offset = self.data.hist_offsets[feature];
            let histogram = &leaf.histogram[offset..offset + mapper.n_bins()];
            let candidate = if mapper.is_categorical() {
                self.best_categorical_split(feature, histogram, &leaf.total)
            } else {
                self.best_numeric_split(feature, histogram, &leaf.total)
            };
            if let Some(candidate) = candidate
                && best.as_ref().is_none_or(|b| candidate.gain > b.gain)
            {
                best = Some(candidate);
            }
        }
        best
    }

    fn is_valid_child(&self, stats: &BinStats) -> bool {
        stats.count >= self.params.min_data_in_leaf as f64
            && stats.hessian >= self.params.min_sum_hessian_in_leaf
    }

    fn score(&self, stats: &BinStats, lambda: f64) -> f64 {
        stats.gradient * stats.gradient / (stats.hessian + lambda)
    }

    /// Tries every threshold between value bins, with missing values sent left and then right,
    /// and keeps the best. Without missing values in the leaf only the right default is tried,
    /// so unseen missing values at prediction time go right.
    fn best_numeric_split(
        &self,
        feature: usize,
        histogram: &[BinStats],
        total: &BinStats,
    ) -> Option<Candidate> {
        let lambda = self.params.lambda_l2;
        let missing = histogram[histogram.len() - 1];
        let value_bins = histogram.len() - 1;
        let parent_score = self.score(total, lambda);
        let mut best: Option<Candidate> = None;
        let defaults: &[bool] = if missing.count > 0.0 {
            &[false, true]
        } else {
            &[false]
        };
        for &default_left in defaults {
            let mut left = if default_left {
                missing
            } else {
                BinStats::default()
            };
            // The last value bin cannot be the split point: everything would go left.
            for (k, stats) in histogram[..value_bins.saturating_sub(1)].iter().enumerate() {
                left.add(stats);
                let right = total.minus(&left);
                if !self.is_valid_child(&left) || !self.is_valid_child(&right) {
                    continue;
                }
                let gain = self.score(&left, lambda) + self.score(&right, lambda) - parent_score;
                if gain > self.params.min_gain_to_split
                    && best.as_ref().is_none_or(|b| gain > b.gain)
                {
                    best = Some(Candidate {
                        gain,
                        feature,
                        left_bins: LeftBins::UpTo(k),
                        default_left,
                        left,
                        right,
                    });
                }
            }
        }
        best
    }

    /// Categorical split search. With at most `max_cat_to_onehot` non-empty bins, each bin is
    /// tried alone on the left (one-vs-rest). Otherwise bins with at least `min_data_per_group`
    /// rows are sorted by `G / (H + cat_smooth)` and every prefix of up to `max_cat_threshold`
    /// bins, taken from either end of that order, is tried as the left set. The missing bin
    /// takes part like a category, which learns the default direction; the "other" bin always
    /// goes right. Gains of these splits use `lambda_l2 + cat_l2`.
    fn best_categorical_split(
        &self,
        feature: usize,
        histogram: &[BinStats],
        total: &BinStats,
    ) -> Option<Candidate> {
        let params = self.params;
        let missing_bin = histogram.len() - 1;
        let other_bin = histogram.len() - 2;
        let used: Vec<usize> = (0..histogram.len())
            .filter(|&b| b != other_bin && histogram[b].count > 0.0)
            .collect();
        let lambda = params.lambda_l2 + params.cat_l2;
        let parent_score = self.score(total, lambda);

        let mut best: Option<Candidate> = None;
        let mut consider = |set: &[usize], left: BinStats| {
            let right = total.minus(&left);
            if !self.is_valid_child(&left) || !self.is_valid_child(&right) {
                return;
            }
            let gain = self.score(&left, lambda) + self.score(&right, lambda) - parent_score;
            if gain > params.min_gain_to_split && best.as_ref().is_none_or(|b| gain > b.gain) {
                best = Some(Candidate {
                    gain,
                    feature,
                    left_bins: LeftBins::Set(set.to_vec()),
                    default_left: set.contains(&missing_bin),
                    left,
                    right,
                });
            }
        };

        if used.len() <= params.max_cat_to_onehot {
            for &bin in &used {
                consider(&[bin], histogram[bin]);
            }
            return best;
        }

        let mut sorted: Vec<usize> = used
            .into_iter()
            .filter(|&b| histogram[b].count >= params.min_data_per_group as f64)
            .collect();
        let ratio = |b: usize| histogram[b].gradient / (histogram[b].hessian + params.cat_smooth);
        sorted.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b)));
        let max_size = params.max_cat_threshold.min(sorted.len().saturating_sub(1));
        for order in [sorted.clone(), sorted.into_iter().rev().collect::<Vec<_>>()] {
            let mut left = BinStats::default();
            for size in 1..=max_size {
                left.add(&histogram[order[size - 1]]);
                consider(&order[..size], left);
            }
        }
        best
    }
}
