//! Decoding and encoding of the REST form of the Open Inference Protocol: a JSON document,
//! optionally followed by binary tensor data (the `binary_tensor_data` extension).
//!
//! Decoders never panic on client input: every malformed, oversized or inconsistent request
//! becomes a [`DecodeError`], which the handlers send as `400` or `413`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ghaf_runtime::{
    DataType, InferRequest, InferResponse, Parameter, RequestedOutput, Tensor, TensorData,
};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Header that gives the length of the JSON part of a body followed by binary tensor data.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Input and output parameter: the number of bytes of the tensor in the binary part.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Requested-output parameter: return this output as binary data.
pub const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output without its own `binary_data` as binary data.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// Size limits on decoded requests, from the `oip.*` configuration keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `oip.max_body_bytes`: largest request body (REST) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// `oip.max_tensor_elements`: largest element count of one input tensor.
    pub max_tensor_elements: usize,
    /// `oip.max_json_depth`: deepest nesting of arrays in one input's JSON `data`.
    pub max_json_depth: usize,
}

impl Default for Limits {
    /// Returns the defaults of the `oip.*` configuration keys.
    fn default() -> Self {
        let config = crate::config::OipConfig::default();
        Self {
            max_body_bytes: config.max_body_bytes,
            max_tensor_elements: config.max_tensor_elements,
            max_json_depth: config.max_json_depth,
        }
    }
}

/// A request that cannot be decoded, always because of the client's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub message: String,
    /// The request exceeds a size limit (`413` on REST) rather than being malformed.
    pub too_large: bool,
}

impl DecodeError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            too_large: false,
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            too_large: true,
        }
    }

    fn for_input(name: &str, error: DecodeError) -> Self {
        Self {
            message: format!("input {name:?}: {}", error.message),
            too_large: error.too_large,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// A decoded request with the transport choices that do not go to the model.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DecodedRequest {
    pub request: InferRequest,
    /// Output encoding: binary for every output without its own `binary_data` parameter
    /// when the request parameter `binary_data_output` is true.
    pub binary_output_default: bool,
    /// Outputs whose requested-output parameter `binary_data` was given, with its value.
    pub binary_outputs: BTreeMap<String, bool>,
}

impl DecodedRequest {
    /// Returns whether the output `name` goes out as binary data.
    pub fn output_is_binary(&self, name: &str) -> bool {
        self.binary_outputs
            .get(name)
            .copied()
            .unwrap_or(self.binary_output_default)
    }
}

#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(borrow)]
    inputs: Vec<JsonInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<JsonRequestedOutput>>,
}

#[derive(Deserialize)]
struct JsonInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonRequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, serde_json::Value>>,
}

/// Splits a REST body into its JSON part and binary part. `header_length` is the value of
/// the `Inference-Header-Content-Length` header, when present.
pub fn split_body<'b>(
    body: &'b [u8],
    header_length: Option<&str>,
) -> Result<(&'b [u8], &'b [u8]), DecodeError> {
    let Some(value) = header_length else {
        return Ok((body, &[]));
    };
    let length: usize = value.trim().parse().map_err(|_| {
        DecodeError::invalid(format!(
            "the Inference-Header-Content-Length header must be a byte count, found {value:?}"
        ))
    })?;
    if length > body.len() {
        return Err(DecodeError::invalid(format!(
            "the Inference-Header-Content-Length header is {length} but the body has only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// Decodes a REST inference request: `json` is the JSON document, `binary` the bytes after
/// it (empty without the `Inference-Header-Content-Length` header).
pub fn decode_request(
    json: &[u8],
    binary: &[u8],
    limits: &Limits,
) -> Result<DecodedRequest, DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed: JsonRequest<'_> =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path.is_empty() || path == "." {
                DecodeError::invalid(format!("invalid inference request JSON: {inner}"))
            } else {
                DecodeError::invalid(format!("invalid inference request JSON at {path}: {inner}"))
            }
        })?;
    deserializer.end().map_err(|error| {
        DecodeError::invalid(format!(
            "invalid inference request JSON: {error}; when binary tensor data follows the JSON, \
             send its length in the Inference-Header-Content-Length header"
        ))
    })?;

    let mut parameters = convert_parameters("request", parsed.parameters)?;
    let binary_output_default = match parameters.remove(BINARY_DATA_OUTPUT) {
        None => false,
        Some(Parameter::Bool(value)) => value,
        Some(other) => {
            return Err(DecodeError::invalid(format!(
                "request parameter {BINARY_DATA_OUTPUT:?} must be true or false, found {other:?}"
            )));
        }
    };

    let mut names = HashSet::new();
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    let mut remaining = binary;
    for input in parsed.inputs {
        if !names.insert(input.name.clone()) {
            return Err(DecodeError::invalid(format!(
                "input {:?} appears more than once",
                input.name
            )));
        }
        let name = input.name.clone();
        let tensor = decode_json_input(input, &mut remaining, limits)
            .map_err(|error| DecodeError::for_input(&name, error))?;
        inputs.push(tensor);
    }
    if !remaining.is_empty() {
        return Err(DecodeError::invalid(format!(
            "{} bytes of binary tensor data follow the JSON but no input's binary_data_size \
             accounts for them; the sizes must add up to the bytes after the JSON",
            remaining.len()
        )));
    }

    let mut binary_outputs = BTreeMap::new();
    let mut outputs = Vec::new();
    let mut output_names = HashSet::new();
    for output in parsed.outputs.unwrap_or_default() {
        if output.name.is_empty() {
            return Err(DecodeError::invalid("a requested output has an empty name"));
        }
        if !output_names.insert(output.name.clone()) {
            return Err(DecodeError::invalid(format!(
                "output {:?} is requested more than once",
                output.name
            )));
        }
        let what = format!("output {:?}", output.name);
        let mut parameters = convert_parameters(&what, output.parameters)?;
        match parameters.remove(BINARY_DATA) {
            None => {}
            Some(Parameter::Bool(value)) => {
                binary_outputs.insert(output.name.clone(), value);
            }
            Some(other) => {
                return Err(DecodeError::invalid(format!(
                    "{what}: parameter {BINARY_DATA:?} must be true or false, found {other:?}"
                )));
            }
        }
        outputs.push(RequestedOutput {
            name: output.name,
            parameters,
        });
    }

    Ok(DecodedRequest {
        request: InferRequest {
            id: parsed.id,
            parameters,
            inputs,
            outputs,
        },
        binary_output_default,
        binary_outputs,
    })
}

/// Converts one JSON input; binary inputs take their bytes from the front of `remaining`.
fn decode_json_input(
    input: JsonInput<'_>,
    remaining: &mut &[u8],
    limits: &Limits,
) -> Result<Tensor, DecodeError> {
    if input.name.is_empty() {
        return Err(DecodeError::invalid("the input name is empty"));
    }
    let datatype = parse_datatype(&input.datatype)?;
    let elements = checked_elements(&input.shape, limits)?;
    let mut parameters = convert_parameters("input", input.parameters)?;
    let binary_size = match parameters.remove(BINARY_DATA_SIZE) {
        None => None,
        Some(Parameter::Int(size)) if size >= 0 => usize::try_from(size).ok(),
        Some(Parameter::Uint(size)) => usize::try_from(size).ok(),
        Some(other) => {
            return Err(DecodeError::invalid(format!(
                "parameter {BINARY_DATA_SIZE:?} must be a non-negative integer, found {other:?}"
            )));
        }
    };

    let data = match (binary_size, input.data) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::invalid(format!(
                "has both \"data\" and the {BINARY_DATA_SIZE:?} parameter; send one of them"
            )));
        }
        (None, None) => {
            return Err(DecodeError::invalid(format!(
                "has neither \"data\" nor the {BINARY_DATA_SIZE:?} parameter"
            )));
        }
        (Some(size), None) => {
            if size > remaining.len() {
                return Err(DecodeError::invalid(format!(
                    "{BINARY_DATA_SIZE} is {size} but only {} bytes of binary data are left \
                     after the JSON and the inputs before it",
                    remaining.len()
                )));
            }
            let (bytes, rest) = remaining.split_at(size);
            *remaining = rest;
            decode_binary(datatype, elements, bytes)?
        }
        (None, Some(raw)) => decode_json_data(datatype, &input.shape, elements, raw, limits)?,
    };
    Ok(Tensor {
        name: input.name,
        shape: input.shape,
        data,
        parameters,
    })
}

/// Parses a datatype name, with an error that lists the valid names.
pub fn parse_datatype(name: &str) -> Result<DataType, DecodeError> {
    DataType::parse(name).ok_or_else(|| {
        let valid: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
        DecodeError::invalid(format!(
            "unknown datatype {name:?}; valid datatypes are {}",
            valid.join(", ")
        ))
    })
}

/// Returns the element count of a request shape, rejecting negative dimensions, overflow and
/// counts above `oip.max_tensor_elements`.
pub fn checked_elements(shape: &[i64], limits: &Limits) -> Result<usize, DecodeError> {
    let mut count: usize = 1;
    for &dim in shape {
        let dim = usize::try_from(dim).map_err(|_| {
            DecodeError::invalid(format!(
                "shape {shape:?} has a negative dimension; request shapes must be concrete"
            ))
        })?;
        count = count.checked_mul(dim).ok_or_else(|| {
            DecodeError::too_large(format!("shape {shape:?} has too many elements to count"))
        })?;
    }
    if count > limits.max_tensor_elements {
        return Err(DecodeError::too_large(format!(
            "shape {shape:?} has {count} elements, more than the limit of {} \
             (oip.max_tensor_elements)",
            limits.max_tensor_elements
        )));
    }
    Ok(count)
}

/// Converts a JSON parameter map. Values must be strings, numbers or booleans.
fn convert_parameters(
    owner: &str,
    parameters: Option<BTreeMap<String, serde_json::Value>>,
) -> Result<BTreeMap<String, Parameter>, DecodeError> {
    let mut converted = BTreeMap::new();
    for (name, value) in parameters.unwrap_or_default() {
        let parameter = match value {
            serde_json::Value::Bool(value) => Parameter::Bool(value),
            serde_json::Value::String(value) => Parameter::String(value),
            serde_json::Value::Number(number) => {
                if let Some(value) = number.as_i64() {
                    Parameter::Int(value)
                } else if let Some(value) = number.as_u64() {
                    Parameter::Uint(value)
                } else {
                    Parameter::Double(number.as_f64().unwrap_or(f64::NAN))
                }
            }
            other => {
                return Err(DecodeError::invalid(format!(
                    "{owner} parameter {name:?} must be a string, number or boolean, found {other}"
                )));
            }
        };
        converted.insert(name, parameter);
    }
    Ok(converted)
}

// ---------------------------------------------------------------------------------------
// Binary tensor data
// ---------------------------------------------------------------------------------------

/// Decodes the binary layout of one tensor: little-endian, row-major, no padding; BOOL is
/// one byte (0 or 1); each BYTES element is a 4-byte little-endian length and the bytes.
/// The byte count must match `elements` exactly.
pub fn decode_binary(
    datatype: DataType,
    elements: usize,
    bytes: &[u8],
) -> Result<TensorData, DecodeError> {
    if let Some(size) = datatype.element_size() {
        let expected = elements.saturating_mul(size);
        if bytes.len() != expected {
            return Err(DecodeError::invalid(format!(
                "{datatype} tensor of {elements} elements needs {expected} bytes of binary \
                 data, found {}",
                bytes.len()
            )));
        }
    }
    Ok(match datatype {
        DataType::Bool => {
            let mut values = Vec::with_capacity(bytes.len());
            for (index, &byte) in bytes.iter().enumerate() {
                values.push(match byte {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(DecodeError::invalid(format!(
                            "BOOL element {index} is the byte {other}; it must be 0 or 1"
                        )));
                    }
                });
            }
            TensorData::Bool(values)
        }
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => TensorData::Uint16(le_chunks(bytes, u16::from_le_bytes)),
        DataType::Int16 => TensorData::Int16(le_chunks(bytes, i16::from_le_bytes)),
        DataType::Fp16 => TensorData::Fp16(le_chunks(bytes, u16::from_le_bytes)),
        DataType::Uint32 => TensorData::Uint32(le_chunks(bytes, u32::from_le_bytes)),
        DataType::Int32 => TensorData::Int32(le_chunks(bytes, i32::from_le_bytes)),
        DataType::Fp32 => TensorData::Fp32(le_chunks(bytes, f32::from_le_bytes)),
        DataType::Uint64 => TensorData::Uint64(le_chunks(bytes, u64::from_le_bytes)),
        DataType::Int64 => TensorData::Int64(le_chunks(bytes, i64::from_le_bytes)),
        DataType::Fp64 => TensorData::Fp64(le_chunks(bytes, f64::from_le_bytes)),
        DataType::Bytes => TensorData::Bytes(decode_binary_bytes(elements, bytes)?),
    })
}

/// Reads fixed-size little-endian values; the caller has checked that the length divides.
fn le_chunks<const N: usize, T>(bytes: &[u8], convert: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            convert(array)
        })
        .collect()
}

fn decode_binary_bytes(elements: usize, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    // Every element takes at least its 4-byte length, which bounds the allocation.
    let mut values = Vec::with_capacity(elements.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let index = values.len();
        if index == elements {
            return Err(DecodeError::invalid(format!(
                "BYTES binary data has {} bytes left after the {elements} elements the shape \
                 implies",
                bytes.len()
            )));
        }
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(DecodeError::invalid(format!(
                "BYTES element {index} is cut off inside its 4-byte length prefix"
            )));
        };
        let length = u32::from_le_bytes(*prefix) as usize;
        if length > rest.len() {
            return Err(DecodeError::invalid(format!(
                "BYTES element {index} has length {length} but only {} bytes follow",
                rest.len()
            )));
        }
        let (value, rest) = rest.split_at(length);
        values.push(value.to_vec());
        bytes = rest;
    }
    if values.len() != elements {
        return Err(DecodeError::invalid(format!(
            "BYTES binary data has {} elements but the shape implies {elements}",
            values.len()
        )));
    }
    Ok(values)
}

/// Appends the binary layout of `data` (see [`decode_binary`]) to `out`.
pub fn encode_binary(data: &TensorData, out: &mut Vec<u8>) {
    fn extend<T, const N: usize>(out: &mut Vec<u8>, values: &[T], convert: fn(&T) -> [u8; N]) {
        out.reserve(values.len() * N);
        for value in values {
            out.extend_from_slice(&convert(value));
        }
    }
    match data {
        TensorData::Bool(values) => out.extend(values.iter().map(|&v| u8::from(v))),
        TensorData::Uint8(values) => out.extend_from_slice(values),
        TensorData::Int8(values) => out.extend(values.iter().map(|&v| v as u8)),
        TensorData::Uint16(values) | TensorData::Fp16(values) => {
            extend(out, values, |v| v.to_le_bytes())
        }
        TensorData::Int16(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Uint32(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Int32(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Fp32(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Uint64(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Int64(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Fp64(values) => extend(out, values, |v| v.to_le_bytes()),
        TensorData::Bytes(values) => {
            for value in values {
                // Outputs come from the model; an element over 4 GiB cannot be framed.
                let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(&value[..length as usize]);
            }
        }
    }
}

/// Returns the byte count of [`encode_binary`]'s output for `data`.
pub fn binary_size(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(values) => values.iter().map(|v| 4 + v.len()).sum(),
        other => other.len() * other.datatype().element_size().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------
// JSON tensor data
// ---------------------------------------------------------------------------------------

/// Decodes an input's JSON `data`, flat or nested to any depth up to `oip.max_json_depth`,
/// into `elements` values of `datatype`.
pub fn decode_json_data(
    datatype: DataType,
    shape: &[i64],
    elements: usize,
    raw: &RawValue,
    limits: &Limits,
) -> Result<TensorData, DecodeError> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(raw, shape, elements, limits)?),
        DataType::Uint8 => TensorData::Uint8(flatten(raw, shape, elements, limits)?),
        DataType::Uint16 => TensorData::Uint16(flatten(raw, shape, elements, limits)?),
        DataType::Uint32 => TensorData::Uint32(flatten(raw, shape, elements, limits)?),
        DataType::Uint64 => TensorData::Uint64(flatten(raw, shape, elements, limits)?),
        DataType::Int8 => TensorData::Int8(flatten(raw, shape, elements, limits)?),
        DataType::Int16 => TensorData::Int16(flatten(raw, shape, elements, limits)?),
        DataType::Int32 => TensorData::Int32(flatten(raw, shape, elements, limits)?),
        DataType::Int64 => TensorData::Int64(flatten(raw, shape, elements, limits)?),
        DataType::Fp32 => TensorData::Fp32(flatten(raw, shape, elements, limits)?),
        DataType::Fp64 => TensorData::Fp64(flatten(raw, shape, elements, limits)?),
        DataType::Bytes => {
            let strings: Vec<JsonBytes> = flatten(raw, shape, elements, limits)?;
            TensorData::Bytes(strings.into_iter().map(|s| s.0).collect())
        }
        DataType::Fp16 => {
            return Err(DecodeError::invalid(
                "FP16 data cannot be sent as JSON numbers; send it as binary tensor data \
                 (the binary_data_size parameter) or as gRPC raw_input_contents",
            ));
        }
    })
}

/// A scalar that JSON `data` can carry, converted to one element type.
trait JsonElement: Sized {
    const DATATYPE: DataType;

    fn from_bool(_value: bool) -> Result<Self, String> {
        Err(format!("expected {}, found a boolean", Self::expected()))
    }
    fn from_u64(value: u64) -> Result<Self, String> {
        Err(format!(
            "expected {}, found the number {value}",
            Self::expected()
        ))
    }
    fn from_i64(value: i64) -> Result<Self, String> {
        Err(format!(
            "expected {}, found the number {value}",
            Self::expected()
        ))
    }
    fn from_f64(value: f64) -> Result<Self, String> {
        Err(format!(
            "expected {}, found the number {value}",
            Self::expected()
        ))
    }
    fn from_str(_value: &str) -> Result<Self, String> {
        Err(format!("expected {}, found a string", Self::expected()))
    }
    fn expected() -> String {
        format!("a {} number", Self::DATATYPE)
    }
}

impl JsonElement for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn from_bool(value: bool) -> Result<Self, String> {
        Ok(value)
    }
    fn expected() -> String {
        "true or false".into()
    }
}

macro_rules! integer_element {
    ($($ty:ty => $datatype:ident),* $(,)?) => {$(
        impl JsonElement for $ty {
            const DATATYPE: DataType = DataType::$datatype;
            fn from_u64(value: u64) -> Result<Self, String> {
                <$ty>::try_from(value).map_err(|_| out_of_range::<Self>(&value))
            }
            fn from_i64(value: i64) -> Result<Self, String> {
                <$ty>::try_from(value).map_err(|_| out_of_range::<Self>(&value))
            }
            fn expected() -> String {
                format!("an integer in the {} range", Self::DATATYPE)
            }
        }
    )*};
}

integer_element!(
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
);

fn out_of_range<T: JsonElement>(value: &dyn fmt::Display) -> String {
    format!("{value} is outside the {} range", T::DATATYPE)
}

impl JsonElement for f32 {
    const DATATYPE: DataType = DataType::Fp32;
    fn from_u64(value: u64) -> Result<Self, String> {
        Ok(value as f32)
    }
    fn from_i64(value: i64) -> Result<Self, String> {
        Ok(value as f32)
    }
    fn from_f64(value: f64) -> Result<Self, String> {
        if value.is_finite() && value.abs() > f64::from(f32::MAX) {
            return Err(out_of_range::<Self>(&value));
        }
        Ok(value as f32)
    }
}

impl JsonElement for f64 {
    const DATATYPE: DataType = DataType::Fp64;
    fn from_u64(value: u64) -> Result<Self, String> {
        Ok(value as f64)
    }
    fn from_i64(value: i64) -> Result<Self, String> {
        Ok(value as f64)
    }
    fn from_f64(value: f64) -> Result<Self, String> {
        Ok(value)
    }
}

/// A BYTES element sent as a JSON string, stored as its UTF-8 bytes.
struct JsonBytes(Vec<u8>);

impl JsonElement for JsonBytes {
    const DATATYPE: DataType = DataType::Bytes;
    fn from_str(value: &str) -> Result<Self, String> {
        Ok(JsonBytes(value.as_bytes().to_vec()))
    }
    fn expected() -> String {
        "a string".into()
    }
}

fn flatten<T: JsonElement>(
    raw: &RawValue,
    shape: &[i64],
    elements: usize,
    limits: &Limits,
) -> Result<Vec<T>, DecodeError> {
    // `checked_elements` has already rejected negative dimensions.
    let dims: Vec<usize> = shape
        .iter()
        .map(|&dim| usize::try_from(dim).unwrap_or(usize::MAX))
        .collect();
    let mut out = Vec::with_capacity(elements.min(raw.get().len() / 2 + 1));
    let mut path = Vec::new();
    let mut layout = Layout::Unknown;
    let seed = Flatten {
        out: &mut out,
        path: &mut path,
        layout: &mut layout,
        dims: &dims,
        max_depth: limits.max_json_depth,
        max_len: elements,
    };
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    seed.deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| {
            // serde_json appends a position inside `data`, which helps little; keep it short.
            let message = error.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            let message = if message.starts_with("data") {
                message
            } else {
                format!("data: {message}")
            };
            if message.contains("oip.max_json_depth") {
                DecodeError::too_large(message)
            } else {
                DecodeError::invalid(message)
            }
        })?;
    if out.len() != elements {
        return Err(DecodeError::invalid(format!(
            "data has {} elements but the shape implies {elements}",
            out.len()
        )));
    }
    Ok(out)
}

/// How the top-level `data` array is laid out, set by its first element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The array is empty so far.
    Unknown,
    /// Scalars only, in row-major order, as many as the shape's element count.
    Flat,
    /// Arrays nested to match the shape: the array at depth `d` has `shape[d]` elements, and
    /// only the innermost arrays contain scalars.
    Nested,
}

/// Formats the position of a value inside `data`, such as `data[1][0]`.
fn data_path(path: &[usize]) -> String {
    let mut text = String::from("data");
    for index in path {
        text.push_str(&format!("[{index}]"));
    }
    text
}

/// Deserialization seed that appends every scalar of `data` to `out`, row-major, and checks
/// that nested arrays match the shape `dims`.
struct Flatten<'o, T> {
    out: &'o mut Vec<T>,
    /// Index of the current value in each enclosing array; empty for `data` itself.
    path: &'o mut Vec<usize>,
    layout: &'o mut Layout,
    dims: &'o [usize],
    max_depth: usize,
    max_len: usize,
}

impl<T: JsonElement> Flatten<'_, T> {
    /// Records the kind of the first top-level element, and rejects a value whose kind (array
    /// or scalar) does not fit its position.
    fn check_position<E: de::Error>(&mut self, is_array: bool) -> Result<(), E> {
        let depth = self.path.len();
        if depth == 0 {
            return if is_array {
                Ok(())
            } else {
                Err(E::custom("data must be a JSON array"))
            };
        }
        if *self.layout == Layout::Unknown {
            *self.layout = if is_array {
                Layout::Nested
            } else {
                Layout::Flat
            };
        }
        let rank = self.dims.len();
        let (index, parent) = self.path.split_last().expect("depth is at least 1");
        if *self.layout == Layout::Nested && depth <= rank && *index >= self.dims[depth - 1] {
            return Err(E::custom(format!(
                "{} is longer than dimension {} of shape {:?}, which is {}",
                data_path(parent),
                depth - 1,
                self.dims,
                self.dims[depth - 1]
            )));
        }
        // Built only for an error, because this check runs for every element.
        let position = || data_path(self.path);
        match *self.layout {
            Layout::Flat if is_array => Err(E::custom(format!(
                "{} is an array but data[0] is a scalar; send either flat data with the \
                 shape's {} elements, or arrays nested to match shape {:?}",
                position(),
                self.max_len,
                self.dims
            ))),
            Layout::Nested if is_array && depth >= rank => Err(E::custom(format!(
                "{} is an array but shape {:?} has {rank} dimensions, so arrays nest \
                 at most {rank} deep",
                position(),
                self.dims
            ))),
            Layout::Nested if !is_array && depth < rank => Err(E::custom(format!(
                "{} is a scalar but dimension {depth} of shape {:?} needs an array of {} \
                 elements there; nested data must be arrays at every level above the last",
                position(),
                self.dims,
                self.dims[depth]
            ))),
            _ => Ok(()),
        }
    }

    fn push<E: de::Error>(mut self, value: Result<T, String>) -> Result<(), E> {
        self.check_position(false)?;
        let index = self.out.len();
        if index >= self.max_len {
            return Err(E::custom(format!(
                "data has more elements than the {} the shape implies",
                self.max_len
            )));
        }
        let value = value.map_err(|reason| E::custom(format!("element {index}: {reason}")))?;
        self.out.push(value);
        Ok(())
    }
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or an array of them", T::expected())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.push(T::from_bool(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.push(T::from_u64(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.push(T::from_i64(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.push(T::from_f64(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.push(T::from_str(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        let index = self.out.len();
        Err(E::custom(format!(
            "element {index}: expected {}, found null",
            T::expected()
        )))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        let index = self.out.len();
        Err(de::Error::custom(format!(
            "element {index}: expected {}, found an object",
            T::expected()
        )))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.check_position(true)?;
        let depth = self.path.len();
        if depth >= self.max_depth {
            return Err(de::Error::custom(format!(
                "arrays nest deeper than {} levels (oip.max_json_depth)",
                self.max_depth
            )));
        }
        let Flatten {
            out,
            path,
            layout,
            dims,
            max_depth,
            max_len,
        } = self;
        let mut count = 0;
        loop {
            path.push(count);
            let element = seq.next_element_seed(Flatten {
                out: &mut *out,
                path: &mut *path,
                layout: &mut *layout,
                dims,
                max_depth,
                max_len,
            });
            path.pop();
            if element?.is_none() {
                break;
            }
            count += 1;
        }
        // Flat data is checked against the element count once it is complete.
        if *layout == Layout::Nested && count != dims[depth] {
            return Err(de::Error::custom(format!(
                "{} has length {count} but dimension {depth} of shape {dims:?} is {}",
                data_path(path),
                dims[depth]
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// An encoded REST response body.
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    /// Length of the JSON part when binary outputs follow it; `None` for a JSON-only body.
    pub json_length: Option<usize>,
}

#[derive(Serialize)]
struct JsonResponse<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    parameters: &'a BTreeMap<String, Parameter>,
    outputs: Vec<JsonOutput<'a>>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    parameters: BTreeMap<String, Parameter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// Tensor elements written as a flat JSON array.
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn all<S: Serializer, T: Serialize>(
            serializer: S,
            values: &[T],
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(values.len()))?;
            for value in values {
                seq.serialize_element(value)?;
            }
            seq.end()
        }
        match self.0 {
            TensorData::Bool(v) => all(serializer, v),
            TensorData::Uint8(v) => all(serializer, v),
            TensorData::Uint16(v) => all(serializer, v),
            TensorData::Uint32(v) => all(serializer, v),
            TensorData::Uint64(v) => all(serializer, v),
            TensorData::Int8(v) => all(serializer, v),
            TensorData::Int16(v) => all(serializer, v),
            TensorData::Int32(v) => all(serializer, v),
            TensorData::Int64(v) => all(serializer, v),
            TensorData::Fp32(v) => all(serializer, v),
            TensorData::Fp64(v) => all(serializer, v),
            TensorData::Bytes(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&String::from_utf8_lossy(value))?;
                }
                seq.end()
            }
            // `output_goes_binary` sends FP16 as binary; never reached with JSON.
            TensorData::Fp16(v) => all(serializer, v),
        }
    }
}

/// Returns whether an output goes out as binary data: when requested, and always for FP16
/// (JSON has no 16-bit float) and for BYTES elements that are not UTF-8 (JSON strings
/// cannot carry them).
pub fn output_goes_binary(tensor: &Tensor, requested_binary: bool) -> bool {
    requested_binary
        || match &tensor.data {
            TensorData::Fp16(_) => true,
            TensorData::Bytes(values) => values.iter().any(|v| std::str::from_utf8(v).is_err()),
            _ => false,
        }
}

/// Encodes a response. Outputs for which `binary(tensor)` is true follow the JSON as binary
/// data, with `binary_data_size` in their parameters.
pub fn encode_response(
    response: &InferResponse,
    binary: impl Fn(&Tensor) -> bool,
) -> Result<EncodedResponse, serde_json::Error> {
    let mut tail = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for tensor in &response.outputs {
        let mut parameters = tensor.parameters.clone();
        let data = if binary(tensor) {
            let size = binary_size(&tensor.data);
            parameters.insert(
                BINARY_DATA_SIZE.to_owned(),
                Parameter::Uint(u64::try_from(size).unwrap_or(u64::MAX)),
            );
            encode_binary(&tensor.data, &mut tail);
            None
        } else {
            Some(JsonData(&tensor.data))
        };
        outputs.push(JsonOutput {
            name: &tensor.name,
            datatype: tensor.datatype().as_str(),
            shape: &tensor.shape,
            parameters,
            data,
        });
    }
    let document = JsonResponse {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        parameters: &response.parameters,
        outputs,
    };
    let mut body = serde_json::to_vec(&document)?;
    if tail.is_empty() && !response.outputs.iter().any(&binary) {
        return Ok(EncodedResponse {
            body,
            json_length: None,
        });
    }
    let json_length = body.len();
    body.extend_from_slice(&tail);
    Ok(EncodedResponse {
        body,
        json_length: Some(json_length),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn decode(json: &str) -> Result<DecodedRequest, DecodeError> {
        decode_request(json.as_bytes(), &[], &limits())
    }

    #[test]
    fn nested_and_flat_data_agree() {
        let nested = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3.5,4]]}]}"#,
        )
        .unwrap();
        let flat = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3.5,4]}]}"#,
        )
        .unwrap();
        assert_eq!(nested, flat);
        assert_eq!(
            nested.request.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.0, 3.5, 4.0])
        );
    }

    #[test]
    fn ragged_nested_data_is_rejected() {
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2,3],[4]]}]}"#,
        )
        .unwrap_err();
        assert!(!error.too_large);
        assert!(error.message.starts_with("input \"x\": "), "{error}");
        assert!(
            error
                .message
                .contains("data[0] is longer than dimension 1 of shape [2, 2], which is 2"),
            "{error}"
        );

        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4],[]]}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("data is longer than dimension 0 of shape [2, 2], which is 2"),
            "{error}"
        );

        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2,1],"datatype":"INT32","data":[[[1],[2]],[[3]]]}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("data[1] has length 1 but dimension 1 of shape [2, 2, 1] is 2"),
            "{error}"
        );
    }

    #[test]
    fn short_nested_row_names_the_dimension() {
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3]]}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("input \"x\": data[1] has length 1 but dimension 1 of shape [2, 2] is 2"),
            "{error}"
        );
    }

    #[test]
    fn nested_data_must_reach_every_dimension() {
        // Rows of four scalars for shape [2, 2, 2] skip dimension 1's arrays.
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2,2],"datatype":"INT32","data":[[1,2,3,4],[5,6,7,8]]}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("data[0][0] is a scalar but dimension 2 of shape [2, 2, 2]"),
            "{error}"
        );
        // Arrays deeper than the shape.
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[[1],[2]]}]}"#)
                .unwrap_err();
        assert!(
            error
                .message
                .contains("data[0] is an array but shape [2] has 1 dimensions"),
            "{error}"
        );
    }

    #[test]
    fn mixed_nesting_is_rejected() {
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,[3,4]]}]}"#,
        )
        .unwrap_err();
        assert!(error.message.starts_with("input \"x\": "), "{error}");
        assert!(
            error
                .message
                .contains("data[2] is an array but data[0] is a scalar"),
            "{error}"
        );
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],3,4]}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("data[1] is a scalar but dimension 1 of shape [2, 2]"),
            "{error}"
        );
        let error = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,[2]],[3,4]]}]}"#,
        )
        .unwrap_err();
        assert!(error.message.contains("data[0][1] is an array"), "{error}");
    }

    #[test]
    fn empty_dimensions_decode_flat_or_nested() {
        for data in ["[]", "[[],[]]"] {
            let json = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2,0],"datatype":"INT32","data":{data}}}]}}"#
            );
            let decoded = decode(&json).unwrap_or_else(|error| panic!("{data}: {error}"));
            assert_eq!(
                decoded.request.inputs[0].data,
                TensorData::Int32(Vec::new())
            );
        }
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[2,0],"datatype":"INT32","data":[[]]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("dimension 0"), "{error}");
    }

    #[test]
    fn scalar_shape_takes_one_flat_element() {
        let decoded =
            decode(r#"{"inputs":[{"name":"x","shape":[],"datatype":"INT64","data":[7]}]}"#)
                .unwrap();
        assert_eq!(decoded.request.inputs[0].data, TensorData::Int64(vec![7]));
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[],"datatype":"INT64","data":[[7]]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("has 0 dimensions"), "{error}");
    }

    #[test]
    fn element_count_must_match_shape() {
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("input \"x\""), "{error}");
        assert!(error.message.contains("implies 3"), "{error}");
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1,2]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("more elements"), "{error}");
    }

    #[test]
    fn integer_ranges_are_checked() {
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#)
                .unwrap_err();
        assert!(
            error.message.contains("300 is outside the INT8 range"),
            "{error}"
        );
        let error =
            decode(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT32","data":[1.5]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("expected an integer"), "{error}");
    }

    #[test]
    fn fp16_json_is_rejected() {
        let error =
            decode(r#"{"inputs":[{"name":"h","shape":[1],"datatype":"FP16","data":[1.0]}]}"#)
                .unwrap_err();
        assert!(error.message.contains("FP16"), "{error}");
        assert!(error.message.contains("binary"), "{error}");
    }

    #[test]
    fn bytes_are_strings() {
        let decoded =
            decode(r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab","ü"]}]}"#)
                .unwrap();
        assert_eq!(
            decoded.request.inputs[0].data,
            TensorData::Bytes(vec![b"ab".to_vec(), "ü".as_bytes().to_vec()])
        );
    }

    #[test]
    fn depth_limit_names_key() {
        let limits = Limits {
            max_json_depth: 2,
            ..Limits::default()
        };
        let json = r#"{"inputs":[{"name":"x","shape":[1,1,1],"datatype":"INT32","data":[[[1]]]}]}"#;
        let error = decode_request(json.as_bytes(), &[], &limits).unwrap_err();
        assert!(error.message.contains("oip.max_json_depth"), "{error}");
        assert!(error.too_large);
    }

    #[test]
    fn element_limit_names_key() {
        let json =
            r#"{"inputs":[{"name":"x","shape":[100000,100000],"datatype":"INT32","data":[]}]}"#;
        let error = decode(json).unwrap_err();
        assert!(error.message.contains("oip.max_tensor_elements"), "{error}");
    }

    #[test]
    fn binary_inputs_consume_exact_sizes() {
        let json = r#"{"inputs":[
            {"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"b","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}]}"#;
        let mut binary = Vec::new();
        binary.extend_from_slice(&1.5f32.to_le_bytes());
        binary.extend_from_slice(&(-2.0f32).to_le_bytes());
        binary.extend_from_slice(&2u32.to_le_bytes());
        binary.extend_from_slice(b"hi");
        binary.extend_from_slice(&1u32.to_le_bytes());
        binary.push(b'!');
        let decoded = decode_request(json.as_bytes(), &binary, &limits()).unwrap();
        assert_eq!(
            decoded.request.inputs[0].data,
            TensorData::Fp32(vec![1.5, -2.0])
        );
        assert_eq!(
            decoded.request.inputs[1].data,
            TensorData::Bytes(vec![b"hi".to_vec(), b"!".to_vec()])
        );
        assert!(decoded.request.inputs[0].parameters.is_empty());

        let mut extra = binary.clone();
        extra.push(0);
        let error = decode_request(json.as_bytes(), &extra, &limits()).unwrap_err();
        assert!(
            error.message.contains("1 bytes of binary tensor data"),
            "{error}"
        );

        let error = decode_request(json.as_bytes(), &binary[..18], &limits()).unwrap_err();
        assert!(error.message.contains("binary_data_size is 11"), "{error}");
    }

    #[test]
    fn binary_bool_must_be_zero_or_one() {
        let error = decode_binary(DataType::Bool, 2, &[1, 2]).unwrap_err();
        assert!(error.message.contains("must be 0 or 1"), "{error}");
        assert_eq!(
            decode_binary(DataType::Bool, 2, &[1, 0]).unwrap(),
            TensorData::Bool(vec![true, false])
        );
    }

    #[test]
    fn binary_round_trips_every_datatype() {
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![9, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-3, 3]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Fp16(vec![0x3c00, 0xc000]),
            TensorData::Fp32(vec![0.25, -1e30]),
            TensorData::Fp64(vec![1e-300, -0.0]),
            TensorData::Bytes(vec![vec![], vec![0, 159, 146, 150]]),
        ];
        for data in samples {
            let mut bytes = Vec::new();
            encode_binary(&data, &mut bytes);
            assert_eq!(bytes.len(), binary_size(&data));
            let decoded = decode_binary(data.datatype(), data.len(), &bytes).unwrap();
            assert_eq!(decoded, data);
        }
    }

    #[test]
    fn header_length_is_validated() {
        let error = split_body(b"{}", Some("10")).unwrap_err();
        assert!(error.message.contains("only 2 bytes"), "{error}");
        let error = split_body(b"{}", Some("-1")).unwrap_err();
        assert!(error.message.contains("byte count"), "{error}");
        assert_eq!(
            split_body(b"{}xy", Some("2")).unwrap(),
            (&b"{}"[..], &b"xy"[..])
        );
    }

    #[test]
    fn output_binary_flags() {
        let decoded = decode(
            r#"{"id":"7","parameters":{"binary_data_output":true,"k":1},
                "inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[true]}],
                "outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(decoded.request.id.as_deref(), Some("7"));
        assert!(!decoded.output_is_binary("a"));
        assert!(decoded.output_is_binary("b"));
        assert_eq!(
            decoded.request.parameters.get("k"),
            Some(&Parameter::Int(1))
        );
        assert!(!decoded.request.parameters.contains_key(BINARY_DATA_OUTPUT));
    }

    #[test]
    fn response_with_binary_outputs() {
        let response = InferResponse {
            model_name: "m".into(),
            model_version: Some("3".into()),
            id: Some("r1".into()),
            parameters: BTreeMap::new(),
            outputs: vec![
                Tensor::new("label", vec![2], TensorData::Int64(vec![0, 1])),
                Tensor::new("p", vec![2, 1], TensorData::Fp32(vec![0.5, 0.25])),
            ],
        };
        let encoded = encode_response(&response, |t| t.name == "p").unwrap();
        let length = encoded.json_length.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encoded.body[..length]).unwrap();
        assert_eq!(json["model_version"], "3");
        assert_eq!(json["id"], "r1");
        assert_eq!(json["outputs"][0]["data"], serde_json::json!([0, 1]));
        assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][1].get("data").is_none());
        assert_eq!(
            decode_binary(DataType::Fp32, 2, &encoded.body[length..]).unwrap(),
            TensorData::Fp32(vec![0.5, 0.25])
        );

        let plain = encode_response(&response, |_| false).unwrap();
        assert!(plain.json_length.is_none());
    }
}
