//! Checks of requests against a model signature, shared by every predictor.

use crate::{DataType, ModelSignature, RuntimeError, Tensor, TensorData, TensorMeta};

/// Checks `inputs` against the signature and returns them in signature order.
///
/// Every signature input must be present exactly once and no other input may be given. A
/// tensor's datatype must equal the signature's, or be one that `accepts` allows for that
/// input. Its rank must match, fixed dimensions must be equal, no dimension may be negative,
/// and the element count must equal the product of the shape.
pub fn check_inputs<'a>(
    signature: &ModelSignature,
    inputs: &'a [Tensor],
    accepts: impl Fn(&TensorMeta, DataType) -> bool,
) -> Result<Vec<&'a Tensor>, RuntimeError> {
    for (index, tensor) in inputs.iter().enumerate() {
        if !signature.inputs.iter().any(|meta| meta.name == tensor.name) {
            return Err(invalid(
                &tensor.name,
                format!(
                    "the model has no input with this name; its inputs are {}",
                    names(&signature.inputs)
                ),
            ));
        }
        if inputs[..index]
            .iter()
            .any(|other| other.name == tensor.name)
        {
            return Err(invalid(&tensor.name, "the input is given more than once"));
        }
    }
    let mut ordered = Vec::with_capacity(signature.inputs.len());
    for meta in &signature.inputs {
        let Some(tensor) = inputs.iter().find(|tensor| tensor.name == meta.name) else {
            return Err(invalid(
                &meta.name,
                format!(
                    "missing input; the model needs {} {:?}",
                    meta.datatype, meta.shape
                ),
            ));
        };
        check_tensor(meta, tensor, &accepts)?;
        ordered.push(tensor);
    }
    Ok(ordered)
}

fn check_tensor(
    meta: &TensorMeta,
    tensor: &Tensor,
    accepts: &impl Fn(&TensorMeta, DataType) -> bool,
) -> Result<(), RuntimeError> {
    let datatype = tensor.datatype();
    if datatype != meta.datatype && !accepts(meta, datatype) {
        return Err(invalid(
            &meta.name,
            format!("datatype is {datatype}, expected {}", meta.datatype),
        ));
    }
    if tensor.shape.len() != meta.shape.len() {
        return Err(invalid(
            &meta.name,
            format!(
                "shape {:?} has rank {}, expected rank {} as in {:?}",
                tensor.shape,
                tensor.shape.len(),
                meta.shape.len(),
                meta.shape
            ),
        ));
    }
    for (axis, (&got, &expected)) in tensor.shape.iter().zip(&meta.shape).enumerate() {
        if got < 0 {
            return Err(invalid(
                &meta.name,
                format!("dimension {axis} of shape {:?} is negative", tensor.shape),
            ));
        }
        if expected >= 0 && got != expected {
            return Err(invalid(
                &meta.name,
                format!(
                    "dimension {axis} is {got}, expected {expected} (model shape {:?})",
                    meta.shape
                ),
            ));
        }
    }
    let Some(elements) = tensor.shape_elements() else {
        return Err(invalid(
            &meta.name,
            format!("shape {:?} has too many elements", tensor.shape),
        ));
    };
    if elements != tensor.data.len() {
        return Err(invalid(
            &meta.name,
            format!(
                "shape {:?} needs {elements} elements, but {} were given",
                tensor.shape,
                tensor.data.len()
            ),
        ));
    }
    Ok(())
}

/// Returns the positions in `signature.outputs` of the requested outputs, or of all outputs
/// when `requested` is empty.
pub fn check_outputs(
    signature: &ModelSignature,
    requested: &[String],
) -> Result<Vec<usize>, RuntimeError> {
    if requested.is_empty() {
        return Ok((0..signature.outputs.len()).collect());
    }
    let mut positions = Vec::with_capacity(requested.len());
    for name in requested {
        let Some(position) = signature.outputs.iter().position(|meta| &meta.name == name) else {
            return Err(RuntimeError::InvalidOutput {
                output: name.clone(),
                reason: format!(
                    "the model has no output with this name; its outputs are {}",
                    names(&signature.outputs)
                ),
            });
        };
        positions.push(position);
    }
    Ok(positions)
}

/// Builds a tensor of zeros (empty strings for BYTES) with the shape of `meta`, where every
/// variable dimension is 1. Warm-up runs one request of these.
pub fn zeros(meta: &TensorMeta) -> Tensor {
    let shape: Vec<i64> = meta
        .shape
        .iter()
        .map(|&dim| if dim < 0 { 1 } else { dim })
        .collect();
    let count = shape.iter().product::<i64>().max(0) as usize;
    let data = match meta.datatype {
        DataType::Bool => TensorData::Bool(vec![false; count]),
        DataType::Uint8 => TensorData::Uint8(vec![0; count]),
        DataType::Uint16 => TensorData::Uint16(vec![0; count]),
        DataType::Uint32 => TensorData::Uint32(vec![0; count]),
        DataType::Uint64 => TensorData::Uint64(vec![0; count]),
        DataType::Int8 => TensorData::Int8(vec![0; count]),
        DataType::Int16 => TensorData::Int16(vec![0; count]),
        DataType::Int32 => TensorData::Int32(vec![0; count]),
        DataType::Int64 => TensorData::Int64(vec![0; count]),
        DataType::Fp16 => TensorData::Fp16(vec![0; count]),
        DataType::Fp32 => TensorData::Fp32(vec![0.0; count]),
        DataType::Fp64 => TensorData::Fp64(vec![0.0; count]),
        DataType::Bytes => TensorData::Bytes(vec![Vec::new(); count]),
    };
    Tensor::new(meta.name.clone(), shape, data)
}

pub(crate) fn invalid(input: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidInput {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

fn names(metas: &[TensorMeta]) -> String {
    metas
        .iter()
        .map(|meta| format!("{:?}", meta.name))
        .collect::<Vec<_>>()
        .join(", ")
}
