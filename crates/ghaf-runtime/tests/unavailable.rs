//! Loading an ONNX model without a usable ONNX Runtime library fails with `Unavailable`, and
//! the message names the install command. ONNX Runtime is loaded once per process and
//! scripts/test may set `ORT_DYLIB_PATH`, so the checks run in a child process of this test
//! binary without it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ghaf_runtime::{RuntimeError, RuntimeOptions, load_files};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

const CHILD_ENV: &str = "GHAF_RUNTIME_UNAVAILABLE_CHILD";

fn onnx_files() -> BTreeMap<String, Vec<u8>> {
    let x: Vec<f64> = (0..100).map(|i| f64::from(i) / 10.0).collect();
    let label: Vec<f64> = x.iter().map(|&v| f64::from(v > 5.0)).collect();
    let data = Dataset::new(vec![Column::f64("x", x)], label).unwrap();
    let model = Model::Gbdt(
        train_gbdt(&data, None, &GbdtParams::default())
            .unwrap()
            .model,
    );
    BTreeMap::from([("model.onnx".to_string(), ghaf_train::onnx::export(&model))])
}

fn unavailable_message(options: &RuntimeOptions) -> String {
    match load_files(&onnx_files(), options) {
        Err(RuntimeError::Unavailable(message)) => message,
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("expected Unavailable, but the model loaded"),
    }
}

#[test]
fn missing_library_is_unavailable() {
    if std::env::var_os(CHILD_ENV).is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "missing_library_is_unavailable", "--nocapture"])
            .env(CHILD_ENV, "1")
            .env_remove("ORT_DYLIB_PATH")
            .status()
            .unwrap();
        assert!(status.success(), "the child test failed: {status}");
        return;
    }

    let not_configured = unavailable_message(&RuntimeOptions::default());
    assert!(
        not_configured.contains("ORT_DYLIB_PATH is not set"),
        "{not_configured}"
    );
    assert!(
        not_configured.contains("pip install onnxruntime==1.32.0"),
        "{not_configured}"
    );
    assert!(
        not_configured.contains("libonnxruntime.so.1.32.0"),
        "{not_configured}"
    );

    let missing = unavailable_message(&RuntimeOptions {
        onnxruntime_library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
        ..RuntimeOptions::default()
    });
    assert!(
        missing.contains("/nonexistent/libonnxruntime.so does not exist"),
        "{missing}"
    );
    assert!(
        missing.contains("pip install onnxruntime==1.32.0"),
        "{missing}"
    );
}
