//! Point-in-time join benchmark on synthetic data shaped like the Feast comparison harness:
//! `keys × rows_per_key` feature rows spread over 30 days with created = event + 0–1 h,
//! 8 float features and one integer, a TTL of 7 days, and random (key, time) lookups.
//!
//! cargo run --release -p ghaf-features --example asof_bench -- KEYS ROWS_PER_KEY LOOKUPS
//!
//! Prints the build and join times of the as-of index and the peak RSS of the process.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::compute::take;
use ghaf_features::AsOfIndex;
use rand::{Rng, SeedableRng};

const SPAN_SECONDS: i64 = 30 * 86_400;
const TTL_MICROS: i64 = 7 * 86_400 * 1_000_000;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integer argument"))
        .collect();
    let (keys, per_key, lookups) = match args.as_slice() {
        [k, r, l] => (*k, *r, *l as usize),
        _ => (100_000, 10, 100_000),
    };
    let rows = (keys * per_key) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let end = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let start = end - SPAN_SECONDS * 1_000_000;

    let ids: Vec<i64> = (0..rows as i64).map(|i| i / per_key + 1).collect();
    let events: Vec<Option<i64>> = (0..rows)
        .map(|_| Some(start + rng.random_range(0..SPAN_SECONDS) * 1_000_000))
        .collect();
    let created: Vec<Option<i64>> = events
        .iter()
        .map(|e| e.map(|e| e + rng.random_range(0..3_600) * 1_000_000))
        .collect();
    let mut features: Vec<ArrayRef> = Vec::with_capacity(9);
    for _ in 0..8 {
        features.push(Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|_| rng.random::<f64>()),
        )));
    }
    features.push(Arc::new(Int64Array::from_iter_values(
        (0..rows).map(|_| rng.random_range(0..1000i64)),
    )));
    let key_columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids))];

    let lookup_keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        (0..lookups).map(|_| rng.random_range(1..=keys)),
    ))];
    let times: Vec<Option<i64>> = (0..lookups)
        .map(|_| Some(start + rng.random_range(0..SPAN_SECONDS) * 1_000_000))
        .collect();

    let started = Instant::now();
    let index = AsOfIndex::build(&key_columns, &events, Some(&created)).unwrap();
    let built = started.elapsed();
    let matches = index
        .lookup(&lookup_keys, &times, Some(TTL_MICROS))
        .unwrap();
    let joined: Vec<ArrayRef> = features
        .iter()
        .map(|f| take(f, &matches, None).unwrap())
        .collect();
    let total = started.elapsed();

    let nulls = joined[0].null_count();
    println!(
        "keys={keys} rows_per_key={per_key} feature_rows={rows} lookups={lookups}: index {:.3}s, \
         total join {:.3}s, out_rows={} null_frac={:.4}, peak_rss={:.0}MB",
        built.as_secs_f64(),
        total.as_secs_f64(),
        joined[0].len(),
        nulls as f64 / lookups as f64,
        peak_rss_mb()
    );
}
