//! HyperLogLog distinct-count sketch with Ertl's improved estimator, mergeable.

use serde::{Deserialize, Serialize};

/// Default precision: 2^12 = 4,096 registers, a relative standard error of about 1.6%.
pub const DEFAULT_PRECISION: u8 = 12;

/// A HyperLogLog sketch over 64-bit hashes with one byte per register.
///
/// The estimate uses the improved raw estimator of Ertl (2017, "New cardinality estimation
/// algorithms for HyperLogLog sketches"), which needs neither bias tables nor a switch to
/// linear counting for small cardinalities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HyperLogLog {
    precision: u8,
    registers: Vec<u8>,
}

impl HyperLogLog {
    /// Creates an empty sketch with 2^precision registers; precision is clamped to 4..=18.
    pub fn new(precision: u8) -> Self {
        let precision = precision.clamp(4, 18);
        Self {
            precision,
            registers: vec![0; 1 << precision],
        }
    }

    /// Returns the precision p.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Returns the relative standard error 1.04/√m of the estimate for m registers.
    pub fn relative_standard_error(&self) -> f64 {
        1.04 / (self.registers.len() as f64).sqrt()
    }

    /// Adds a 64-bit hash of a value.
    pub fn update_hash(&mut self, hash: u64) {
        let p = u32::from(self.precision);
        let index = (hash >> (64 - p)) as usize;
        let remainder = hash << p;
        // Rank of the first set bit in the remaining 64 − p bits, capped at 64 − p + 1.
        let rank = (remainder.leading_zeros() + 1).min(64 - p + 1) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    /// Merges another sketch by taking the register-wise maximum.
    ///
    /// Fails with [`crate::MonitorError::IncompatibleSketches`] when the precisions differ.
    pub fn merge(&mut self, other: &Self) -> Result<(), crate::MonitorError> {
        if self.precision != other.precision {
            return Err(crate::MonitorError::IncompatibleSketches(format!(
                "HyperLogLog precision {} cannot merge with precision {}",
                self.precision, other.precision
            )));
        }
        for (register, &value) in self.registers.iter_mut().zip(&other.registers) {
            *register = (*register).max(value);
        }
        Ok(())
    }

    /// Returns the estimated number of distinct values.
    pub fn estimate(&self) -> f64 {
        let p = u32::from(self.precision);
        let q = 64 - p as usize;
        let m = self.registers.len() as f64;
        let mut histogram = vec![0u64; q + 2];
        for &register in &self.registers {
            histogram[usize::from(register)] += 1;
        }
        let mut z = m * tau(1.0 - histogram[q + 1] as f64 / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + histogram[k] as f64);
        }
        z += m * sigma(histogram[0] as f64 / m);
        let alpha_infinity = 1.0 / (2.0 * std::f64::consts::LN_2);
        alpha_infinity * m * m / z
    }
}

fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut x = x;
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut x = x;
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_u64;

    fn sketch_of(range: std::ops::Range<u64>) -> HyperLogLog {
        let mut sketch = HyperLogLog::new(DEFAULT_PRECISION);
        for value in range {
            sketch.update_hash(hash_u64(value));
        }
        sketch
    }

    #[test]
    fn estimates_within_three_standard_errors() {
        for n in [1u64, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let sketch = sketch_of(0..n);
            let estimate = sketch.estimate();
            let error = (estimate - n as f64).abs() / n as f64;
            assert!(
                error <= 3.0 * sketch.relative_standard_error(),
                "n = {n}: estimate {estimate}, relative error {error}"
            );
        }
    }

    #[test]
    fn empty_sketch_estimates_zero() {
        assert_eq!(HyperLogLog::new(DEFAULT_PRECISION).estimate(), 0.0);
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        let mut left = sketch_of(0..60_000);
        let right = sketch_of(40_000..100_000);
        left.merge(&right).unwrap();
        assert_eq!(left, sketch_of(0..100_000));
    }

    #[test]
    fn merge_rejects_other_precision() {
        let mut left = HyperLogLog::new(12);
        assert!(left.merge(&HyperLogLog::new(10)).is_err());
    }
}
