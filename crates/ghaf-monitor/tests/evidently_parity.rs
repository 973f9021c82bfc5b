//! Parity of the Evidently-compatible drift mode with Evidently itself.
//!
//! `tests/evidently/drift_parity.py` (repository root) generates data with fixed seeds, runs
//! Evidently's data drift preset and writes inputs and results to JSON; these tests recompute
//! every column with Ghaf and compare. The Python environment comes from
//! `tests/evidently/setup.sh`. Set `GHAF_SKIP_PEER_TESTS=1` to skip when it is absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ghaf_monitor::drift::evidently::{self, EvidentlyOptions};
use ghaf_monitor::drift::{DriftMethod, ghaf};
use ghaf_monitor::{Column, ColumnKind};
use serde_json::Value;

/// Relative tolerance for scores, from the acceptance criterion of the compatibility mode.
const RELATIVE_TOLERANCE: f64 = 1e-9;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("GHAF_EVIDENTLY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/ghaf-venv-evidently")
        });
    venv.join("bin/python")
}

/// Runs the Python script once per test binary and returns its output, or `None` when the
/// venv is missing and `GHAF_SKIP_PEER_TESTS=1` is set.
fn evidently_output() -> Option<&'static Value> {
    static OUTPUT: OnceLock<Option<Value>> = OnceLock::new();
    OUTPUT
        .get_or_init(|| {
            let python = venv_python();
            if !python.exists() {
                if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
                    eprintln!(
                        "skipped: the Evidently venv {} is missing and GHAF_SKIP_PEER_TESTS=1",
                        python.display()
                    );
                    return None;
                }
                panic!(
                    "the Evidently venv {} is missing; run tests/evidently/setup.sh first, \
                     or set GHAF_SKIP_PEER_TESTS=1 to skip this test",
                    python.display()
                );
            }
            let directory = tempfile::tempdir().expect("create a temporary directory");
            let output_path = directory.path().join("parity.json");
            let script = repository_root().join("tests/evidently/drift_parity.py");
            let output = Command::new(&python)
                .arg(&script)
                .arg(&output_path)
                .env("PYTHONWARNINGS", "ignore")
                .output()
                .expect("start the Evidently parity script");
            assert!(
                output.status.success(),
                "{} failed with {}:\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let text =
                std::fs::read_to_string(&output_path).expect("read the parity script's output");
            Some(serde_json::from_str(&text).expect("parse the parity script's output"))
        })
        .as_ref()
}

fn decode_column(column: &Value, side: &str) -> Column {
    let name = column["name"].as_str().unwrap();
    let values = column[side].as_array().unwrap();
    match column["kind"].as_str().unwrap() {
        "numeric" => Column::numeric(
            name,
            values
                .iter()
                .map(|bits| f64::from_bits(bits.as_u64().unwrap()))
                .collect(),
        ),
        "categorical" => Column::categorical(
            name,
            values
                .iter()
                .map(|label| label.as_str().map(str::to_owned))
                .collect(),
        ),
        other => panic!("unknown column kind {other}"),
    }
}

fn scenario_columns(scenario: &Value) -> (Vec<Column>, Vec<Column>) {
    let columns = scenario["columns"].as_array().unwrap();
    (
        columns
            .iter()
            .map(|column| decode_column(column, "reference"))
            .collect(),
        columns
            .iter()
            .map(|column| decode_column(column, "current"))
            .collect(),
    )
}

fn method_override(name: Option<&str>) -> Option<DriftMethod> {
    match name {
        None => None,
        Some("psi") => Some(DriftMethod::Psi),
        Some("jensenshannon") => Some(DriftMethod::JensenShannon),
        Some(other) => panic!("the parity test does not map method override {other}"),
    }
}

fn relative_error(actual: f64, expected: f64) -> f64 {
    if actual == expected {
        return 0.0;
    }
    (actual - expected).abs() / expected.abs().max(actual.abs())
}

fn scenario<'a>(output: &'a Value, name: &str) -> &'a Value {
    output["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|scenario| scenario["name"] == name)
        .unwrap()
}

#[test]
fn compatibility_mode_matches_evidently() {
    let Some(output) = evidently_output() else {
        return;
    };
    eprintln!("Evidently parity against {}", output["versions"]);
    let mut checked = 0;
    let mut worst_error: f64 = 0.0;
    for scenario in output["scenarios"].as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let override_name = scenario["method"].as_str();
        let options = EvidentlyOptions {
            drift_share: 0.5,
            method: method_override(override_name),
        };
        let (reference, current) = scenario_columns(scenario);
        let report = evidently::dataset_drift(&reference, &current, &options).unwrap();
        let expected = &scenario["evidently"];

        for column in &report.columns {
            let label = format!("{name}/{}", column.column);
            let theirs = &expected["columns"][&column.column];
            let expected_method = theirs["method"].as_str().unwrap();
            let method = override_name.or(column.method.evidently_name()).unwrap();
            assert_eq!(method, expected_method, "{label}: method");
            let expected_score = theirs["score"].as_f64().unwrap();
            let error = relative_error(column.score, expected_score);
            assert!(
                error <= RELATIVE_TOLERANCE,
                "{label}: score {:e}, Evidently {expected_score:e}, relative error {error:e}",
                column.score
            );
            worst_error = worst_error.max(error);
            assert_eq!(
                column.threshold,
                theirs["threshold"].as_f64().unwrap(),
                "{label}: threshold"
            );
            assert_eq!(
                column.drifted,
                theirs["drifted"].as_bool().unwrap(),
                "{label}: drift flag"
            );
            checked += 1;
        }
        assert_eq!(
            report.drifted_columns as f64,
            expected["drifted_count"].as_f64().unwrap(),
            "{name}: drifted count"
        );
        assert_eq!(
            report.share,
            expected["share"].as_f64().unwrap(),
            "{name}: share"
        );
        assert_eq!(
            report.dataset_drifted,
            expected["dataset_drifted"].as_bool().unwrap(),
            "{name}: dataset drift"
        );
    }
    eprintln!("{checked} columns compared, largest relative score error {worst_error:e}");
    assert!(checked >= 20, "only {checked} columns compared");
}

#[test]
fn parity_data_covers_every_method_branch() {
    let Some(output) = evidently_output() else {
        return;
    };
    let mut methods = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for scenario in output["scenarios"].as_array().unwrap() {
        for column in scenario["evidently"]["columns"]
            .as_object()
            .unwrap()
            .values()
        {
            methods.insert(column["method"].as_str().unwrap().to_owned());
        }
        for column in scenario["columns"].as_array().unwrap() {
            kinds.insert(column["kind"].as_str().unwrap().to_owned());
        }
    }
    for method in [
        "K-S p_value",
        "chi-square p_value",
        "Z-test p_value",
        "Wasserstein distance (normed)",
        "Jensen-Shannon distance",
        "psi",
        "jensenshannon",
    ] {
        assert!(
            methods.contains(method),
            "no column exercises {method}: {methods:?}"
        );
    }
    assert_eq!(kinds.len(), 2);
}

#[test]
fn default_mode_quiet_where_evidently_alarms() {
    let Some(output) = evidently_output() else {
        return;
    };
    // 1,000 reference rows and 100,000 current rows drawn from the same distribution.
    let scenario = scenario(output, "small_reference_large_current");
    let theirs = &scenario["evidently"]["columns"]["cat_unchanged"];
    assert_eq!(theirs["method"], "chi-square p_value");
    assert_eq!(
        theirs["drifted"], true,
        "Evidently no longer alarms on the unchanged column"
    );
    assert!(theirs["score"].as_f64().unwrap() < 1e-10);

    let (reference, current) = scenario_columns(scenario);
    let pick = |columns: &[Column]| {
        columns
            .iter()
            .filter(|column| column.name == "cat_unchanged")
            .cloned()
            .collect::<Vec<_>>()
    };
    let (reference, current) = (pick(&reference), pick(&current));
    assert_eq!(reference[0].values.kind(), ColumnKind::Categorical);

    let compatible =
        evidently::dataset_drift(&reference, &current, &EvidentlyOptions::default()).unwrap();
    assert!(
        compatible.columns[0].drifted,
        "compatibility mode must alarm as Evidently does"
    );

    let default = ghaf::dataset_drift(&reference, &current, ghaf::GhafOptions::default()).unwrap();
    let column = &default.columns[0];
    assert_eq!(column.method, DriftMethod::ChiSquareContingency);
    assert!(
        column.score > 0.05,
        "contingency p-value {} on unchanged data",
        column.score
    );
    assert!(
        !column.drifted,
        "default mode alarms on an unchanged column: {column:?}"
    );
}
