//! Synthetic datasets shared by the integration tests.

#![allow(dead_code)]

use ghaf_train::{Column, Dataset};

/// A small deterministic generator (64-bit LCG with an xorshift output step).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.0;
        (x ^ (x >> 33)).wrapping_mul(0xff51afd7ed558ccd) ^ (x >> 29)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Rows with three numeric features (about 10% missing in `x1`), a categorical feature with
/// 12 categories whose effect is not monotone in the code, and one with 3 categories.
/// Returns the dataset for the requested target: binary (`regression == false`) or
/// regression.
pub fn synthetic(n: usize, seed: u64, regression: bool) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut x0 = Vec::with_capacity(n);
    let mut x1 = Vec::with_capacity(n);
    let mut x2 = Vec::with_capacity(n);
    let mut city = Vec::with_capacity(n);
    let mut tier = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    let city_effect = [
        0.8, -1.2, 0.1, 1.5, -0.4, 0.0, -1.5, 0.9, 0.3, -0.7, 1.1, -0.2,
    ];
    let tier_effect = [-0.5, 0.0, 0.7];
    for _ in 0..n {
        let a = rng.normal();
        let b = if rng.uniform() < 0.1 {
            f64::NAN
        } else {
            rng.normal()
        };
        let c = (rng.uniform() * 100.0).round();
        let city_code = (rng.next_u64() % 13) as i32 - 1; // -1 is missing
        let tier_code = (rng.next_u64() % 3) as i32;
        let mut signal = 1.2 * a + if b.is_nan() { 0.8 } else { -0.9 * b } + 0.01 * (c - 50.0);
        signal += if city_code < 0 {
            0.5
        } else {
            city_effect[city_code as usize]
        };
        signal += tier_effect[tier_code as usize];
        let y = if regression {
            signal + 0.3 * rng.normal()
        } else {
            let p = 1.0 / (1.0 + (-signal).exp());
            f64::from(u8::from(rng.uniform() < p))
        };
        x0.push(a);
        x1.push(b);
        x2.push(c as f32);
        city.push(city_code);
        tier.push(tier_code);
        label.push(y);
    }
    let cities = (0..12).map(|i| format!("city{i}")).collect();
    let tiers = vec!["bronze".into(), "silver".into(), "gold".into()];
    Dataset::new(
        vec![
            Column::f64("x0", x0),
            Column::f64("x1", x1),
            Column::f32("x2", x2),
            Column::categorical("city", city, cities),
            Column::categorical("tier", tier, tiers),
        ],
        label,
    )
    .unwrap()
}
