//! Options of loading a model: where ONNX Runtime is, its threads and execution provider.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Hardware an ONNX model runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA, on the GPU with this device id. Needs a CUDA build of ONNX Runtime (the
    /// `onnxruntime-gpu` wheel) with matching CUDA and cuDNN libraries.
    Cuda { device_id: i32 },
}

impl ExecutionProvider {
    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { device_id: 0 }),
            _ => match text.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(device_id)) if device_id >= 0 => Ok(Self::Cuda { device_id }),
                _ => Err(format!(
                    "execution provider {text:?} is not supported; use cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

/// Options of loading one model. They are part of the model cache key, so one model version
/// loaded with two sets of options is two cache entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    /// Path of the ONNX Runtime shared library, used when `ORT_DYLIB_PATH` is not set. ONNX
    /// Runtime is loaded once per process, so only the first ONNX load picks the library.
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one operator (`intra_op_num_threads`).
    pub intra_op_threads: usize,
    pub execution_provider: ExecutionProvider,
    /// Runs a built-in model through its ONNX export (`onnx_file` in the `ghaf` flavor of
    /// `MLmodel`) instead of the native predictor.
    pub prefer_onnx: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            onnxruntime_library: None,
            intra_op_threads: 1,
            execution_provider: ExecutionProvider::Cpu,
            prefer_onnx: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_provider_parses() {
        assert_eq!(ExecutionProvider::parse("cpu"), Ok(ExecutionProvider::Cpu));
        assert_eq!(
            ExecutionProvider::parse("cuda"),
            Ok(ExecutionProvider::Cuda { device_id: 0 })
        );
        assert_eq!(
            ExecutionProvider::parse("cuda:3"),
            Ok(ExecutionProvider::Cuda { device_id: 3 })
        );
        assert!(ExecutionProvider::parse("cuda:-1").is_err());
        assert!(ExecutionProvider::parse("tpu").is_err());
    }
}
