//! False-alarm rates on unchanged categorical columns, without Python: Evidently's
//! goodness-of-fit chi-square (reproduced by the compatibility mode, whose parity with
//! Evidently is checked in `evidently_parity.rs`) against the default mode's contingency test.

use ghaf_monitor::Column;
use ghaf_monitor::drift::evidently::{self, EvidentlyOptions};
use ghaf_monitor::drift::ghaf::{self, GhafOptions};

/// xorshift64* generator, enough for drawing labels in tests.
struct Generator(u64);

impl Generator {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn labels(&mut self, n: usize) -> Column {
        // Shares 0.1, 0.2, 0.3, 0.4 for labels p, q, r, s.
        let values = (0..n)
            .map(|_| {
                let u = self.next_unit();
                let label = if u < 0.1 {
                    "p"
                } else if u < 0.3 {
                    "q"
                } else if u < 0.6 {
                    "r"
                } else {
                    "s"
                };
                Some(label.to_owned())
            })
            .collect();
        Column::categorical("segment", values)
    }
}

#[test]
fn unchanged_categorical_false_alarm_rates() {
    const REPLICATES: u64 = 40;
    let mut evidently_alarms = 0;
    let mut default_alarms = 0;
    let mut default_rejections = 0;
    for seed in 1..=REPLICATES {
        let mut generator = Generator(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Evidently picks its chi-square for references of at most 1,000 rows.
        let reference = vec![generator.labels(1_000)];
        let current = vec![generator.labels(100_000)];

        let compatible =
            evidently::dataset_drift(&reference, &current, &EvidentlyOptions::default()).unwrap();
        assert_eq!(
            compatible.columns[0].method.evidently_name(),
            Some("chi-square p_value")
        );
        evidently_alarms += usize::from(compatible.columns[0].drifted);

        let default = ghaf::dataset_drift(&reference, &current, GhafOptions::default()).unwrap();
        default_alarms += usize::from(default.columns[0].drifted);
        default_rejections += usize::from(default.columns[0].score < 0.05);
    }
    // The goodness-of-fit statistic is inflated about 101-fold here, so it alarms almost
    // always; the contingency test rejects at about its nominal 5% rate.
    assert!(
        evidently_alarms >= 38,
        "Evidently's chi-square alarmed on {evidently_alarms} of {REPLICATES}"
    );
    assert!(
        default_rejections <= 6,
        "contingency test rejected {default_rejections} of {REPLICATES}"
    );
    assert_eq!(
        default_alarms, 0,
        "default mode alarmed on {default_alarms} of {REPLICATES}"
    );
}
