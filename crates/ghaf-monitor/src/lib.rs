//! Monitoring statistics for Ghaf: mergeable column profiles and data drift tests.
//!
//! - [`profile`]: per-column counts, missing values, moments, quantiles (exact, then KLL),
//!   frequent items and a HyperLogLog distinct count; every part merges, so profiles of
//!   windows combine into the profile of their union.
//! - [`drift`]: per-column and dataset-level drift between a reference and a current sample,
//!   in an Evidently-compatible mode and in Ghaf's default mode.

pub mod column;
pub mod drift;
pub mod frequent;
pub mod hash;
pub mod hll;
pub mod kll;
pub mod moments;
pub mod profile;
pub mod quantiles;
pub mod special;

pub use column::{Column, ColumnKind, ColumnValues};
pub use profile::{ColumnProfile, DatasetProfile, ProfileOptions};

/// Errors of profile and drift computations.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Input data that no statistic can be computed on, such as an empty column.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Sketches or profiles built with different parameters or column kinds.
    #[error("incompatible sketches: {0}")]
    IncompatibleSketches(String),
}
