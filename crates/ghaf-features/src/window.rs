//! Rolling aggregations per key: at each source row, the aggregate over the rows of the same
//! key whose event time lies in `(row time - window, row time]`. Rows that share the row's
//! event time are all inside, so every row of one key and event time gets the same value.
//!
//! One pass per key over the rows in event-time order, with two pointers for the window
//! edges: running sums for mean, sum and count, and a monotonic queue for min and max.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};

use crate::FeatureError;
use crate::asof::AsOfIndex;
use crate::definition::AggregateFunction;

/// Computes `function` over `values` (one per source row of `index`) in windows of
/// `window` microseconds. Returns Float64 values, or Int64 for `count`; rows the index
/// skipped and windows without a non-null value get NULL (`count` gives 0). A NaN input is
/// treated as NULL: it is skipped and not counted, so it affects no window.
pub fn rolling(
    index: &AsOfIndex,
    values: &ArrayRef,
    function: AggregateFunction,
    window: i64,
) -> Result<ArrayRef, FeatureError> {
    let values = cast(values, &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    let row_count = values.len();
    let mut out: Vec<Option<f64>> = vec![None; row_count];

    for (events, rows) in index.runs() {
        let mut left = 0usize;
        let mut right = 0usize;
        // Finite values are summed; infinities are counted apart, because subtracting an
        // infinity that leaves the window would turn the running sum into NaN for good.
        let mut sum = 0.0f64;
        let mut count = 0u64;
        let mut infinities = [0u64; 2];
        let mut extremes: VecDeque<usize> = VecDeque::new();
        // NaN is treated as NULL: skipped by every function and not counted.
        let value = |position: usize| {
            let row = rows[position] as usize;
            values
                .is_valid(row)
                .then(|| values.value(row))
                .filter(|v| !v.is_nan())
        };
        let add = |sum: &mut f64, infinities: &mut [u64; 2], v: f64, sign: i64| {
            if v.is_finite() {
                *sum += sign as f64 * v;
            } else {
                let slot = usize::from(v < 0.0);
                if sign > 0 {
                    infinities[slot] += 1;
                } else {
                    infinities[slot] -= 1;
                }
            }
        };
        let better = |candidate: f64, kept: f64| match function {
            AggregateFunction::Min => candidate <= kept,
            _ => candidate >= kept,
        };

        let mut group_start = 0usize;
        while group_start < events.len() {
            let time = events[group_start];
            let mut group_end = group_start;
            while group_end < events.len() && events[group_end] == time {
                group_end += 1;
            }
            while right < group_end {
                if let Some(v) = value(right) {
                    add(&mut sum, &mut infinities, v, 1);
                    count += 1;
                    while let Some(&back) = extremes.back() {
                        let kept = value(back).unwrap_or(f64::NAN);
                        if better(v, kept) {
                            extremes.pop_back();
                        } else {
                            break;
                        }
                    }
                    extremes.push_back(right);
                }
                right += 1;
            }
            let lower = time.saturating_sub(window);
            while left < right && events[left] <= lower {
                if let Some(v) = value(left) {
                    add(&mut sum, &mut infinities, v, -1);
                    count -= 1;
                }
                if extremes.front() == Some(&left) {
                    extremes.pop_front();
                }
                left += 1;
            }
            let total = match infinities {
                [0, 0] => sum,
                [_, 0] => f64::INFINITY,
                [0, _] => f64::NEG_INFINITY,
                // Both signs in one window: the sum is undefined for this window only.
                _ => f64::NAN,
            };
            let aggregate = match function {
                AggregateFunction::Count => Some(count as f64),
                _ if count == 0 => None,
                AggregateFunction::Sum => Some(total),
                AggregateFunction::Mean => Some(total / count as f64),
                AggregateFunction::Min | AggregateFunction::Max => {
                    extremes.front().and_then(|&p| value(p))
                }
            };
            for position in group_start..group_end {
                out[rows[position] as usize] = aggregate;
            }
            // An empty window restarts the running sum at zero, which drops the float error
            // that adding and subtracting left behind.
            if count == 0 {
                sum = 0.0;
            }
            group_start = group_end;
        }
    }

    if function == AggregateFunction::Count {
        let counts: Int64Array = (0..row_count)
            .map(|row| index.position(row).map(|_| out[row].unwrap_or(0.0) as i64))
            .collect();
        return Ok(Arc::new(counts));
    }
    Ok(Arc::new(Float64Array::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        function: AggregateFunction,
        keys: Vec<i64>,
        events: Vec<i64>,
        values: Vec<Option<f64>>,
        window: i64,
    ) -> Vec<Option<f64>> {
        let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(keys))];
        let events: Vec<Option<i64>> = events.into_iter().map(Some).collect();
        let index = AsOfIndex::build(&keys, &events, None).unwrap();
        let values: ArrayRef = Arc::new(Float64Array::from(values));
        let result = rolling(&index, &values, function, window).unwrap();
        let result = cast(&result, &DataType::Float64).unwrap();
        result.as_primitive::<Float64Type>().iter().collect()
    }

    #[test]
    fn mean_over_window_per_key() {
        let result = run(
            AggregateFunction::Mean,
            vec![1, 1, 1, 2, 1],
            vec![0, 10, 20, 10, 10],
            vec![Some(1.0), Some(2.0), Some(4.0), Some(100.0), Some(6.0)],
            10,
        );
        // Key 1 at time 10: rows at 10 (2 and 6); time 0 lies on the open lower edge.
        assert_eq!(
            result,
            vec![Some(1.0), Some(4.0), Some(4.0), Some(100.0), Some(4.0)]
        );
    }

    #[test]
    fn nan_is_skipped_like_null() {
        // A NaN used to make the running sum NaN for every later window of the key.
        let keys = vec![1, 1, 1, 1, 1];
        let events = vec![0, 1, 2, 3, 4];
        let values = vec![Some(1.0), Some(f64::NAN), Some(3.0), Some(5.0), None];
        assert_eq!(
            run(
                AggregateFunction::Sum,
                keys.clone(),
                events.clone(),
                values.clone(),
                2
            ),
            vec![Some(1.0), Some(1.0), Some(3.0), Some(8.0), Some(5.0)]
        );
        assert_eq!(
            run(
                AggregateFunction::Mean,
                keys.clone(),
                events.clone(),
                values.clone(),
                2
            ),
            vec![Some(1.0), Some(1.0), Some(3.0), Some(4.0), Some(5.0)]
        );
        assert_eq!(
            run(
                AggregateFunction::Count,
                keys.clone(),
                events.clone(),
                values.clone(),
                2
            ),
            vec![Some(1.0), Some(1.0), Some(1.0), Some(2.0), Some(1.0)]
        );
        assert_eq!(
            run(
                AggregateFunction::Max,
                keys.clone(),
                events.clone(),
                values.clone(),
                2
            ),
            vec![Some(1.0), Some(1.0), Some(3.0), Some(5.0), Some(5.0)]
        );
        assert_eq!(
            run(AggregateFunction::Min, keys, events, values, 2),
            vec![Some(1.0), Some(1.0), Some(3.0), Some(3.0), Some(5.0)]
        );
        // A window of NaN only has no value.
        assert_eq!(
            run(
                AggregateFunction::Mean,
                vec![1, 1],
                vec![0, 5],
                vec![Some(f64::NAN), Some(2.0)],
                2
            ),
            vec![None, Some(2.0)]
        );
    }

    #[test]
    fn infinities_leave_the_window() {
        let keys = vec![1, 1, 1, 1];
        let events = vec![0, 1, 2, 3];
        let values = vec![
            Some(f64::INFINITY),
            Some(1.0),
            Some(f64::NEG_INFINITY),
            Some(2.0),
        ];
        let sums = run(AggregateFunction::Sum, keys, events, values, 2);
        assert_eq!(sums[0], Some(f64::INFINITY));
        assert_eq!(sums[1], Some(f64::INFINITY));
        // The +inf at time 0 has left the window (1, 3]: no NaN from inf - inf.
        assert_eq!(sums[2], Some(f64::NEG_INFINITY));
        assert_eq!(sums[3], Some(f64::NEG_INFINITY));
        let later = run(
            AggregateFunction::Sum,
            vec![1, 1, 1],
            vec![0, 1, 5],
            vec![Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(2.0)],
            2,
        );
        assert!(later[1].unwrap().is_nan());
        // Once both infinities have left, the sum is finite again.
        assert_eq!(later[2], Some(2.0));
    }

    #[test]
    fn min_max_and_count_skip_nulls() {
        let keys = vec![1, 1, 1, 1];
        let events = vec![0, 1, 2, 3];
        let values = vec![Some(5.0), None, Some(3.0), Some(4.0)];
        assert_eq!(
            run(
                AggregateFunction::Max,
                keys.clone(),
                events.clone(),
                values.clone(),
                2
            ),
            vec![Some(5.0), Some(5.0), Some(3.0), Some(4.0)]
        );
        assert_eq!(
            run(
                AggregateFunction::Min,
                keys.clone(),
                events.clone(),
                values.clone(),
                3
            ),
            vec![Some(5.0), Some(5.0), Some(3.0), Some(3.0)]
        );
        assert_eq!(
            run(AggregateFunction::Count, keys, events, values, 2),
            vec![Some(1.0), Some(1.0), Some(1.0), Some(2.0)]
        );
    }
}
