//! Drift report on 1,000,000 rows × 20 numeric columns: Evidently's data drift preset against
//! Ghaf's compatibility and default modes, in one run on the same data.
//!
//! `cargo bench -p ghaf-monitor --bench drift` builds this binary in release mode and runs
//! `bench/drift_vs_evidently.py` with the Python of the Evidently venv
//! (`~/.cache/ghaf-venv-evidently`, created by `tests/evidently/setup.sh`; `GHAF_EVIDENTLY_PYTHON`
//! overrides it). The script generates the data, then starts each contender as a child
//! process under GNU time: Evidently in Python, and this binary with the arguments
//! `FILE ROWS COLUMNS MODE`, in which case it computes the report like the `drift_report`
//! example. Arguments after `--` go to the script, such as `-- --rows 100000`.

#[path = "../examples/drift_report.rs"]
mod drift_report;

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.len() == 5 && matches!(arguments[4].as_str(), "evidently" | "ghaf") {
        return drift_report::main();
    }

    let python = match std::env::var("GHAF_EVIDENTLY_PYTHON") {
        Ok(path) => PathBuf::from(path),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/ghaf-venv-evidently/bin/python"),
    };
    if !python.exists() {
        return Err(format!(
            "{} does not exist; run tests/evidently/setup.sh or set GHAF_EVIDENTLY_PYTHON",
            python.display()
        )
        .into());
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/drift_vs_evidently.py"
    );
    // cargo passes `--bench`; everything else is for the script.
    let passed: Vec<&String> = arguments[1..]
        .iter()
        .filter(|argument| argument.as_str() != "--bench")
        .collect();
    let status = Command::new(&python)
        .arg(script)
        .arg("--binary")
        .arg(std::env::current_exe()?)
        .args(passed)
        .status()?;
    if !status.success() {
        return Err(format!("{script} failed with {status}").into());
    }
    Ok(())
}
