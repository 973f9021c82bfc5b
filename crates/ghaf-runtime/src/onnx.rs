//! ONNX models on ONNX Runtime, which the `ort` crate opens with `dlopen` at run time.
//!
//! The library is found from `ORT_DYLIB_PATH`, else from [`RuntimeOptions::onnxruntime_library`].
//! It is loaded once per process, and later loads reuse it even when their options name
//! another path.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use crate::validate::{check_inputs, check_outputs, invalid};
use crate::{
    DataType, ExecutionProvider, ModelSignature, Predictor, RuntimeError, RuntimeOptions, Tensor,
    TensorData, TensorMeta,
};

/// Platform name in the signature of ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Environment variable with the path of the ONNX Runtime shared library.
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

const INSTALL_HINT: &str = "install it with `pip install onnxruntime==1.32.0` and set \
     ORT_DYLIB_PATH (or the runtime's onnxruntime_library option) to \
     site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0";

/// ONNX Runtime once it is loaded: the library path and the process-wide environment.
struct OrtRuntime {
    library: PathBuf,
    environment: Environment,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime on first use. A failed attempt is not remembered, so a later load with
/// a corrected path or environment can succeed.
fn runtime(options: &RuntimeOptions) -> Result<&'static OrtRuntime, RuntimeError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let library = library_path(options)?;
    if !library.is_file() {
        return Err(RuntimeError::Unavailable(format!(
            "ONNX Runtime library {} does not exist; {INSTALL_HINT}",
            library.display()
        )));
    }
    let builder = ort::init_from(&library).map_err(|error| {
        RuntimeError::Unavailable(format!(
            "ONNX Runtime library {} cannot be loaded: {error}; {INSTALL_HINT}",
            library.display()
        ))
    })?;
    let environment = builder.with_name("ghaf").build().map_err(|error| {
        RuntimeError::Unavailable(format!(
            "ONNX Runtime from {} failed to start: {error}",
            library.display()
        ))
    })?;
    tracing::info!(library = %library.display(), "loaded ONNX Runtime");
    Ok(RUNTIME.get_or_init(|| OrtRuntime {
        library,
        environment,
    }))
}

fn library_path(options: &RuntimeOptions) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = &options.onnxruntime_library {
        return Ok(path.clone());
    }
    Err(RuntimeError::Unavailable(format!(
        "ONNX Runtime is not configured: {LIBRARY_ENV} is not set and no library path is \
         configured; {INSTALL_HINT}"
    )))
}

/// Returns the path of the loaded ONNX Runtime library, or `None` before the first ONNX load.
pub fn loaded_library() -> Option<PathBuf> {
    RUNTIME.get().map(|runtime| runtime.library.clone())
}

/// Predictor of an ONNX model on ONNX Runtime.
///
/// Calls on one predictor run one at a time, because `ort` needs exclusive access to a session
/// to run it. Concurrent callers queue on a mutex; the [`crate::Batcher`] merges them.
pub struct OnnxPredictor {
    session: Mutex<Session>,
    signature: ModelSignature,
    /// Per input, the symbol of a variable first dimension (empty when unnamed); `None` when
    /// the first dimension is fixed or the input is a scalar.
    row_symbols: Vec<Option<String>>,
}

impl OnnxPredictor {
    /// Creates a session for the ONNX model in `bytes` with the threads and execution
    /// provider of `options`.
    pub fn from_bytes(bytes: &[u8], options: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let runtime = runtime(options)?;
        let load = |error: String| RuntimeError::Load(format!("ONNX model: {error}"));
        let mut builder = Session::builder(&runtime.environment)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(options.intra_op_threads.max(1))
            .map_err(|e| load(e.to_string()))?;
        if let ExecutionProvider::Cuda { device_id } = options.execution_provider {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_device_id(device_id)
                    .build()
                    .error_on_failure()])
                .map_err(|error| {
                    RuntimeError::Unavailable(format!(
                        "CUDA execution provider not built/available in the ONNX Runtime \
                         library {}: {error}; use a CUDA build of ONNX Runtime (the \
                         onnxruntime-gpu wheel) with matching CUDA and cuDNN libraries, or \
                         the cpu execution provider",
                        runtime.library.display()
                    ))
                })?;
        }
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| load(e.to_string()))?;

        let mut inputs = Vec::with_capacity(session.inputs().len());
        let mut row_symbols = Vec::with_capacity(session.inputs().len());
        for outlet in session.inputs() {
            let meta = tensor_meta(outlet.name(), outlet.dtype(), "input")?;
            row_symbols.push(match outlet.dtype() {
                ValueType::Tensor {
                    dimension_symbols, ..
                } if meta.shape.first() == Some(&-1) => {
                    Some(dimension_symbols.first().cloned().unwrap_or_default())
                }
                _ => None,
            });
            inputs.push(meta);
        }
        let mut outputs = Vec::with_capacity(session.outputs().len());
        for outlet in session.outputs() {
            outputs.push(tensor_meta(outlet.name(), outlet.dtype(), "output")?);
        }
        Ok(Self {
            session: Mutex::new(session),
            signature: ModelSignature {
                platform: PLATFORM.into(),
                inputs,
                outputs,
            },
            row_symbols,
        })
    }

    /// Checks that inputs whose first dimension is variable with the same symbol have the same
    /// number of rows. Unnamed variable first dimensions count as one symbol, the batch
    /// dimension, as skl2onnx writes them.
    ///
    /// NOTE: the rule is a convention, not part of ONNX. A model whose inputs have unnamed
    /// variable first dimensions that may legitimately differ is rejected here.
    fn check_rows(&self, ordered: &[&Tensor]) -> Result<(), RuntimeError> {
        let mut seen: Vec<(&str, i64, &str)> = Vec::new();
        for (tensor, symbol) in ordered.iter().zip(&self.row_symbols) {
            let (Some(symbol), Some(&rows)) = (symbol, tensor.shape.first()) else {
                continue;
            };
            match seen.iter().find(|(s, _, _)| s == symbol) {
                Some((_, first_rows, first_input)) if *first_rows != rows => {
                    return Err(invalid(
                        &tensor.name,
                        format!(
                            "has {rows} rows in dimension 0, but input {first_input:?} has {first_rows}; \
                             inputs with a variable first dimension must have the same \
                             number of rows"
                        ),
                    ));
                }
                Some(_) => {}
                None => seen.push((symbol, rows, &tensor.name)),
            }
        }
        Ok(())
    }
}

fn tensor_meta(name: &str, value_type: &ValueType, role: &str) -> Result<TensorMeta, RuntimeError> {
    let ValueType::Tensor { ty, shape, .. } = value_type else {
        let hint = if role == "output" {
            "; a scikit-learn classifier converted by skl2onnx returns probabilities as a \
             sequence of maps (ZipMap) unless it is converted with options {id(model): \
             {\"zipmap\": False}}, so convert it again with zipmap=False"
        } else {
            ""
        };
        return Err(RuntimeError::Load(format!(
            "{role} {name:?} is a {value_type}, not a tensor; only tensor inputs and outputs \
             are supported{hint}"
        )));
    };
    let Some(datatype) = datatype_of(*ty) else {
        return Err(RuntimeError::Load(format!(
            "{role} {name:?} has element type {ty}, which the runtime does not support"
        )));
    };
    Ok(TensorMeta {
        name: name.to_owned(),
        datatype,
        shape: shape
            .iter()
            .map(|&dim| if dim < 0 { -1 } else { dim })
            .collect(),
    })
}

/// Maps an ONNX element type to its protocol datatype. Returns `None` for FP16 and BF16,
/// which would need the `half` crate, and for complex types, which have no protocol datatype.
pub fn datatype_of(element: TensorElementType) -> Option<DataType> {
    Some(match element {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Maps a protocol datatype to the ONNX element type; `None` for FP16, which is not supported.
pub fn element_type_of(datatype: DataType) -> Option<TensorElementType> {
    Some(match datatype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
        DataType::Fp16 => return None,
    })
}

fn no_conversion(_meta: &TensorMeta, _datatype: DataType) -> bool {
    false
}

/// Wraps a tensor's elements in an ONNX Runtime value without copying them, except strings,
/// which ONNX Runtime copies into its own layout.
fn input_value<'a>(tensor: &'a Tensor) -> Result<SessionInputValue<'a>, RuntimeError> {
    let shape = tensor.shape.clone();
    let failed = |error: ort::Error| {
        invalid(
            &tensor.name,
            format!("ONNX Runtime rejected the tensor: {error}"),
        )
    };
    macro_rules! view {
        ($values:expr) => {
            TensorRef::from_array_view((shape, &$values[..]))
                .map_err(failed)?
                .into_dyn()
                .into()
        };
    }
    Ok(match &tensor.data {
        TensorData::Bool(v) => view!(v),
        TensorData::Uint8(v) => view!(v),
        TensorData::Uint16(v) => view!(v),
        TensorData::Uint32(v) => view!(v),
        TensorData::Uint64(v) => view!(v),
        TensorData::Int8(v) => view!(v),
        TensorData::Int16(v) => view!(v),
        TensorData::Int32(v) => view!(v),
        TensorData::Int64(v) => view!(v),
        TensorData::Fp32(v) => view!(v),
        TensorData::Fp64(v) => view!(v),
        TensorData::Fp16(_) => {
            return Err(invalid(&tensor.name, "FP16 tensors are not supported"));
        }
        TensorData::Bytes(elements) => {
            let mut strings = Vec::with_capacity(elements.len());
            for (index, element) in elements.iter().enumerate() {
                let Ok(text) = std::str::from_utf8(element) else {
                    return Err(invalid(
                        &tensor.name,
                        format!("element {index} is not valid UTF-8, which ONNX strings need"),
                    ));
                };
                strings.push(text.to_owned());
            }
            ort::value::Tensor::from_string_array((shape, &strings[..]))
                .map_err(failed)?
                .into_dyn()
                .into()
        }
    })
}

fn output_tensor(name: &str, value: &DynValue) -> Result<Tensor, RuntimeError> {
    let internal = |error: ort::Error| {
        RuntimeError::Internal(format!("output {name:?} cannot be read: {error}"))
    };
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(RuntimeError::Internal(format!(
            "output {name:?} is a {}, not a tensor",
            value.dtype()
        )));
    };
    macro_rules! extract {
        ($variant:ident, $type:ty) => {{
            let (shape, values) = value.try_extract_tensor::<$type>().map_err(internal)?;
            (shape.to_vec(), TensorData::$variant(values.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => extract!(Bool, bool),
        TensorElementType::Uint8 => extract!(Uint8, u8),
        TensorElementType::Uint16 => extract!(Uint16, u16),
        TensorElementType::Uint32 => extract!(Uint32, u32),
        TensorElementType::Uint64 => extract!(Uint64, u64),
        TensorElementType::Int8 => extract!(Int8, i8),
        TensorElementType::Int16 => extract!(Int16, i16),
        TensorElementType::Int32 => extract!(Int32, i32),
        TensorElementType::Int64 => extract!(Int64, i64),
        TensorElementType::Float32 => extract!(Fp32, f32),
        TensorElementType::Float64 => extract!(Fp64, f64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(internal)?;
            (
                shape.to_vec(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(RuntimeError::Internal(format!(
                "output {name:?} has element type {other}, which the runtime does not support"
            )));
        }
    };
    Ok(Tensor::new(name, shape, data))
}

/// `predict` blocks the calling thread: it waits for the session's lock, held by any call in
/// progress, and then for ONNX Runtime to finish the run, which takes as long as the model
/// needs. From async code, call it on a blocking thread, through [`crate::Batcher::predict`]
/// (which keeps at most one run of this predictor in flight) or
/// `tokio::task::spawn_blocking`, never directly on a tokio worker thread.
impl Predictor for OnnxPredictor {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// Runs one request. Blocks the calling thread for the whole run; see the notes on this
    /// impl.
    fn predict(&self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        let ordered = check_inputs(&self.signature, inputs, no_conversion)?;
        let positions = check_outputs(&self.signature, outputs)?;
        self.check_rows(&ordered)?;
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(ordered.len());
        for tensor in &ordered {
            values.push((tensor.name.as_str(), input_value(tensor)?));
        }

        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let results = session.run(values).map_err(|error| match error.code() {
            // ONNX Runtime checks shapes between inputs and inside the graph, such as two
            // inputs with different row counts.
            ort::ErrorCode::InvalidArgument => invalid(
                &ordered.first().map_or(String::new(), |t| t.name.clone()),
                format!("ONNX Runtime rejected the request: {}", error.message()),
            ),
            _ => RuntimeError::Internal(format!("ONNX Runtime failed: {error}")),
        })?;
        let mut tensors = Vec::with_capacity(positions.len());
        for position in positions {
            let name = &self.signature.outputs[position].name;
            let Some(value) = results.get(name) else {
                return Err(RuntimeError::Internal(format!(
                    "ONNX Runtime returned no output {name:?}"
                )));
            };
            tensors.push(output_tensor(name, value)?);
        }
        Ok(tensors)
    }

    /// One session serves one run at a time.
    fn max_concurrent_runs(&self) -> Option<usize> {
        Some(1)
    }
}
