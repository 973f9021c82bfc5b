//! Maps feature values to histogram bins.
//!
//! Every feature has at most `max_bins` bins stored as `u8`, and the last bin of every feature
//! contains its missing values. A numeric feature's other bins are ranges between quantile edges:
//! value `x` falls in the first bin `k` with `x <= edges[k]`, or in the last value bin. A
//! categorical feature gives each of its most frequent categories a bin of its own, puts the
//! remaining categories into one "other" bin, and never sends "other" to the left branch of a
//! split, so split sets always list explicit categories.

use crate::data::{Column, ColumnData};

/// Rows sampled to find numeric bin edges; the edges of larger columns are estimates from an
/// evenly strided sample of this many rows.
const EDGE_SAMPLE_ROWS: usize = 200_000;

#[derive(Clone, Debug)]
pub(crate) enum BinMapper {
    Numeric {
        /// Upper edges of value bins `0..edges.len()`; the next bin takes larger values.
        edges: Vec<f64>,
    },
    Categorical {
        /// Bin of each category code; codes past the end and `OTHER` map to the other bin.
        bin_of_code: Vec<u8>,
        /// Category code of each explicit bin.
        code_of_bin: Vec<u32>,
    },
}

impl BinMapper {
    pub(crate) fn from_column(column: &Column, max_bins: usize) -> Self {
        match &column.data {
            ColumnData::Categorical { codes, categories } => {
                Self::categorical(codes, categories.len(), max_bins)
            }
            _ => {
                let n = column.len();
                let step = n.div_ceil(EDGE_SAMPLE_ROWS).max(1);
                let mut values: Vec<f64> = (0..n)
                    .step_by(step)
                    .map(|row| column.value(row))
                    .filter(|v| !v.is_nan())
                    .collect();
                values.sort_by(f64::total_cmp);
                Self::Numeric {
                    edges: quantile_edges(&values, max_bins - 1),
                }
            }
        }
    }

    fn categorical(codes: &[i32], n_categories: usize, max_bins: usize) -> Self {
        let mut counts = vec![0usize; n_categories];
        for &code in codes {
            if code >= 0 {
                counts[code as usize] += 1;
            }
        }
        let mut by_count: Vec<usize> = (0..n_categories).filter(|&c| counts[c] > 0).collect();
        by_count.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        // Two bins are reserved: "other" and missing.
        by_count.truncate(max_bins - 2);
        by_count.sort_unstable();
        let other = by_count.len() as u8;
        let mut bin_of_code = vec![other; n_categories];
        for (bin, &code) in by_count.iter().enumerate() {
            bin_of_code[code] = bin as u8;
        }
        Self::Categorical {
            bin_of_code,
            code_of_bin: by_count.iter().map(|&c| c as u32).collect(),
        }
    }

    /// Number of bins, including the missing bin.
    pub(crate) fn n_bins(&self) -> usize {
        match self {
            Self::Numeric { edges } => edges.len() + 2,
            Self::Categorical { code_of_bin, .. } => code_of_bin.len() + 2,
        }
    }

    pub(crate) fn missing_bin(&self) -> u8 {
        (self.n_bins() - 1) as u8
    }

    pub(crate) fn is_categorical(&self) -> bool {
        matches!(self, Self::Categorical { .. })
    }

    /// Returns the bin of a value as passed to prediction (NaN for missing).
    pub(crate) fn bin(&self, value: f64) -> u8 {
        if value.is_nan() {
            return self.missing_bin();
        }
        match self {
            Self::Numeric { edges } => edges.partition_point(|&edge| edge < value) as u8,
            Self::Categorical {
                bin_of_code,
                code_of_bin,
            } => {
                let other = code_of_bin.len() as u8;
                if value < 0.0 {
                    return self.missing_bin();
                }
                bin_of_code.get(value as usize).copied().unwrap_or(other)
            }
        }
    }
}

/// Returns at most `max_value_bins - 1` increasing edges that split sorted `values` into bins of
/// about equal count. Edges lie halfway between neighbouring distinct values, so each distinct
/// training value sits strictly inside its bin.
fn quantile_edges(sorted: &[f64], max_value_bins: usize) -> Vec<f64> {
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for &value in sorted {
        match distinct.last_mut() {
            Some((last, count)) if *last == value => *count += 1,
            _ => distinct.push((value, 1)),
        }
    }
    if distinct.len() <= 1 {
        return Vec::new();
    }
    let midpoint = |i: usize| {
        let (a, b) = (distinct[i].0, distinct[i + 1].0);
        let mid = a + (b - a) / 2.0;
        // Guard against a midpoint that rounds up to b for adjacent floats.
        if mid < b { mid } else { a }
    };
    if distinct.len() <= max_value_bins {
        return (0..distinct.len() - 1).map(midpoint).collect();
    }

    let total = sorted.len() as f64;
    let mut edges = Vec::with_capacity(max_value_bins - 1);
    let mut cumulative = 0usize;
    let mut next_bin = 1usize;
    for (i, &(_, count)) in distinct[..distinct.len() - 1].iter().enumerate() {
        cumulative += count;
        // Close the current bin once it reaches its share of the rows, skipping targets that
        // a single heavy value already passed.
        if cumulative as f64 >= total * next_bin as f64 / max_value_bins as f64 {
            edges.push(midpoint(i));
            while next_bin < max_value_bins
                && cumulative as f64 >= total * next_bin as f64 / max_value_bins as f64
            {
                next_bin += 1;
            }
            if edges.len() == max_value_bins - 1 {
                break;
            }
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let column = Column::f64("x", vec![3.0, 1.0, 2.0, 2.0, f64::NAN]);
        let mapper = BinMapper::from_column(&column, 255);
        assert_eq!(mapper.n_bins(), 4);
        assert_eq!(mapper.bin(1.0), 0);
        assert_eq!(mapper.bin(2.0), 1);
        assert_eq!(mapper.bin(3.0), 2);
        assert_eq!(mapper.bin(100.0), 2);
        assert_eq!(mapper.bin(f64::NAN), 3);
    }

    #[test]
    fn many_values_respect_max_bins() {
        let column = Column::f64("x", (0..10_000).map(|i| f64::from(i) * 0.5).collect());
        let mapper = BinMapper::from_column(&column, 16);
        assert!(mapper.n_bins() <= 16);
        assert!(mapper.n_bins() >= 12);
        let mut counts = vec![0usize; mapper.n_bins()];
        for i in 0..10_000 {
            counts[mapper.bin(f64::from(i) * 0.5) as usize] += 1;
        }
        let value_bins = &counts[..mapper.n_bins() - 1];
        assert!(
            value_bins.iter().all(|&c| c > 400 && c < 1_000),
            "{value_bins:?}"
        );
    }

    #[test]
    fn categorical_keeps_frequent_categories() {
        let codes = vec![0, 0, 0, 1, 1, 2, -1, 3];
        let column = Column::categorical(
            "c",
            codes,
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
        );
        let mapper = BinMapper::from_column(&column, 4);
        // Two explicit bins (codes 0 and 1), "other", missing.
        assert_eq!(mapper.n_bins(), 4);
        assert_eq!(mapper.bin(0.0), 0);
        assert_eq!(mapper.bin(1.0), 1);
        assert_eq!(mapper.bin(2.0), 2);
        assert_eq!(mapper.bin(17.0), 2);
        assert_eq!(mapper.bin(f64::NAN), 3);
    }
}
