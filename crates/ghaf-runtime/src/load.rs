//! Turning a model directory into a warmed-up predictor.
//!
//! The `MLmodel` file's flavors pick the format:
//! - `ghaf` (written by Ghaf's trainers): `model_file` (default `model.ghaf`) runs natively,
//!   or `onnx_file` on ONNX Runtime when [`RuntimeOptions::prefer_onnx`] is set;
//! - `onnx` (written by `mlflow.onnx`): `model_data` (default `model.onnx`) on ONNX Runtime.
//!
//! Without `MLmodel`, a directory with `model.ghaf` runs natively and one with exactly one
//! `*.onnx` file runs on ONNX Runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::validate::zeros;
use crate::{NativePredictor, OnnxPredictor, Predictor, RuntimeError, RuntimeOptions, Tensor};

/// Name of the MLflow model description file.
pub const MLMODEL_FILE: &str = "MLmodel";
/// Default file of the `ghaf` flavor.
pub const NATIVE_MODEL_FILE: &str = "model.ghaf";
/// Default file of the `onnx` flavor.
pub const ONNX_MODEL_FILE: &str = "model.onnx";

const SUPPORTED: &str = "supported are the ghaf flavor (model.ghaf, trained by Ghaf) and the \
     onnx flavor (log the model with mlflow.onnx.log_model); convert a scikit-learn model to \
     ONNX with skl2onnx (options zipmap=False for classifiers) and log it with mlflow.onnx";

/// Evaluation path of a loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// A built-in model evaluated by [`NativePredictor`].
    Native,
    /// An ONNX model on ONNX Runtime.
    Onnx,
}

/// A loaded and warmed-up model.
#[derive(Clone)]
pub struct LoadedModel {
    pub predictor: Arc<dyn Predictor>,
    pub format: ModelFormat,
    /// Path of the model file that was loaded, relative to the model directory.
    pub model_file: String,
    /// Time to parse the model and build the predictor or ONNX Runtime session.
    pub load_duration: Duration,
    /// Time of the warm-up request.
    pub warmup_duration: Duration,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("format", &self.format)
            .field("model_file", &self.model_file)
            .field("signature", self.predictor.signature())
            .field("load_duration", &self.load_duration)
            .field("warmup_duration", &self.warmup_duration)
            .finish()
    }
}

#[derive(Deserialize)]
struct MlModel {
    #[serde(default)]
    flavors: BTreeMap<String, Flavor>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Flavor {
    model_file: Option<String>,
    onnx_file: Option<String>,
    model_data: Option<String>,
}

/// Loads the model in `files` (keys are paths relative to the model directory), runs the
/// warm-up request and returns the predictor.
pub fn load_files(
    files: &BTreeMap<String, Vec<u8>>,
    options: &RuntimeOptions,
) -> Result<Arc<dyn Predictor>, RuntimeError> {
    load_model(files, options).map(|model| model.predictor)
}

/// Loads the model in `files` like [`load_files`] and returns it with its format and timings.
pub fn load_model(
    files: &BTreeMap<String, Vec<u8>>,
    options: &RuntimeOptions,
) -> Result<LoadedModel, RuntimeError> {
    let (format, model_file) = choose_model_file(files, options)?;
    let Some(bytes) = files.get(&model_file) else {
        return Err(RuntimeError::Load(format!(
            "{model_file} is named by {MLMODEL_FILE} but missing; the files are {}",
            list(files)
        )));
    };

    let started = Instant::now();
    let predictor: Arc<dyn Predictor> = match format {
        ModelFormat::Native => Arc::new(NativePredictor::from_bytes(bytes)?),
        ModelFormat::Onnx => Arc::new(OnnxPredictor::from_bytes(bytes, options)?),
    };
    let load_duration = started.elapsed();

    let started = Instant::now();
    warm_up(predictor.as_ref())?;
    let warmup_duration = started.elapsed();
    tracing::debug!(
        model_file,
        ?format,
        load_ms = load_duration.as_secs_f64() * 1e3,
        warmup_ms = warmup_duration.as_secs_f64() * 1e3,
        "loaded model"
    );
    Ok(LoadedModel {
        predictor,
        format,
        model_file,
        load_duration,
        warmup_duration,
    })
}

/// Runs one request of zeros, with every variable dimension 1, through the predictor.
pub fn warm_up(predictor: &dyn Predictor) -> Result<(), RuntimeError> {
    let inputs: Vec<Tensor> = predictor.signature().inputs.iter().map(zeros).collect();
    predictor.predict(&inputs, &[]).map_err(|error| {
        RuntimeError::Load(format!(
            "the warm-up request (zeros, variable dimensions 1) failed: {error}"
        ))
    })?;
    Ok(())
}

fn choose_model_file(
    files: &BTreeMap<String, Vec<u8>>,
    options: &RuntimeOptions,
) -> Result<(ModelFormat, String), RuntimeError> {
    let Some(mlmodel) = files.get(MLMODEL_FILE) else {
        return choose_without_mlmodel(files, options);
    };
    let text = std::str::from_utf8(mlmodel)
        .map_err(|_| RuntimeError::Load(format!("{MLMODEL_FILE} is not UTF-8 text")))?;
    let description: MlModel = serde_saphyr::from_str(text)
        .map_err(|error| RuntimeError::Load(format!("{MLMODEL_FILE} is not valid: {error}")))?;

    if let Some(ghaf) = description.flavors.get("ghaf") {
        if options.prefer_onnx {
            let Some(onnx_file) = &ghaf.onnx_file else {
                return Err(RuntimeError::Load(format!(
                    "ONNX was requested, but the ghaf flavor in {MLMODEL_FILE} has no onnx_file"
                )));
            };
            return Ok((ModelFormat::Onnx, relative(onnx_file)));
        }
        let file = ghaf.model_file.as_deref().unwrap_or(NATIVE_MODEL_FILE);
        return Ok((ModelFormat::Native, relative(file)));
    }
    if let Some(onnx) = description.flavors.get("onnx") {
        let file = onnx.model_data.as_deref().unwrap_or(ONNX_MODEL_FILE);
        return Ok((ModelFormat::Onnx, relative(file)));
    }
    let flavors: Vec<&str> = description.flavors.keys().map(String::as_str).collect();
    Err(RuntimeError::Load(format!(
        "{MLMODEL_FILE} has flavors [{}], none of which the runtime can load; {SUPPORTED}; the \
         files are {}",
        flavors.join(", "),
        list(files)
    )))
}

fn choose_without_mlmodel(
    files: &BTreeMap<String, Vec<u8>>,
    options: &RuntimeOptions,
) -> Result<(ModelFormat, String), RuntimeError> {
    let onnx_files: Vec<&String> = files
        .keys()
        .filter(|path| path.ends_with(".onnx"))
        .collect();
    let has_native = files.contains_key(NATIVE_MODEL_FILE);
    match (has_native, onnx_files.as_slice()) {
        (true, [onnx]) if options.prefer_onnx => Ok((ModelFormat::Onnx, (*onnx).clone())),
        (true, _) => Ok((ModelFormat::Native, NATIVE_MODEL_FILE.into())),
        (false, [onnx]) => Ok((ModelFormat::Onnx, (*onnx).clone())),
        (false, []) => Err(RuntimeError::Load(format!(
            "no {MLMODEL_FILE}, {NATIVE_MODEL_FILE} or *.onnx file; {SUPPORTED}; the files are {}",
            list(files)
        ))),
        (false, _) => Err(RuntimeError::Load(format!(
            "no {MLMODEL_FILE} and several *.onnx files, so the model file is ambiguous; add an \
             {MLMODEL_FILE} with the onnx flavor; the files are {}",
            list(files)
        ))),
    }
}

fn relative(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

fn list(files: &BTreeMap<String, Vec<u8>>) -> String {
    if files.is_empty() {
        return "none".into();
    }
    files
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(path, content)| ((*path).to_owned(), content.as_bytes().to_vec()))
            .collect()
    }

    fn choice(
        entries: &[(&str, &str)],
        prefer_onnx: bool,
    ) -> Result<(ModelFormat, String), String> {
        let options = RuntimeOptions {
            prefer_onnx,
            ..RuntimeOptions::default()
        };
        choose_model_file(&files(entries), &options).map_err(|e| e.to_string())
    }

    #[test]
    fn ghaf_flavor_picks_native_file() {
        let mlmodel = "flavors:\n  ghaf:\n    model_file: model.ghaf\n    onnx_file: model.onnx\n";
        assert_eq!(
            choice(&[("MLmodel", mlmodel)], false),
            Ok((ModelFormat::Native, "model.ghaf".into()))
        );
        assert_eq!(
            choice(&[("MLmodel", mlmodel)], true),
            Ok((ModelFormat::Onnx, "model.onnx".into()))
        );
    }

    #[test]
    fn onnx_flavor_picks_model_data() {
        let mlmodel = "artifact_path: model\nflavors:\n  onnx:\n    code: null\n    \
                       model_data: ./model.onnx\n    onnx_version: 1.23.2\n    \
                       providers: [CPUExecutionProvider]\n  python_function:\n    \
                       env:\n      conda: conda.yaml\n    loader_module: mlflow.onnx\n";
        assert_eq!(
            choice(&[("MLmodel", mlmodel)], false),
            Ok((ModelFormat::Onnx, "model.onnx".into()))
        );
    }

    #[test]
    fn sklearn_flavor_is_rejected() {
        let mlmodel = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n  python_function: {}\n";
        let error = choice(&[("MLmodel", mlmodel), ("model.pkl", "x")], false).unwrap_err();
        assert!(error.contains("[python_function, sklearn]"), "{error}");
        assert!(error.contains("skl2onnx"), "{error}");
        assert!(error.contains("model.pkl"), "{error}");
    }

    #[test]
    fn directory_without_mlmodel() {
        assert_eq!(
            choice(&[("clf.onnx", "")], false),
            Ok((ModelFormat::Onnx, "clf.onnx".into()))
        );
        assert_eq!(
            choice(&[("model.ghaf", ""), ("model.onnx", "")], false),
            Ok((ModelFormat::Native, "model.ghaf".into()))
        );
        assert!(choice(&[("a.onnx", ""), ("b.onnx", "")], false).is_err());
        assert!(choice(&[("model.pkl", "")], false).is_err());
    }

    #[test]
    fn missing_model_file_is_named() {
        let mlmodel = "flavors:\n  onnx:\n    model_data: model.onnx\n";
        let error = load_files(&files(&[("MLmodel", mlmodel)]), &RuntimeOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("model.onnx is named by MLmodel but missing"),
            "{error}"
        );
    }
}
