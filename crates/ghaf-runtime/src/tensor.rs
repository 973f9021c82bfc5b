//! Tensors, requests and responses in the terms of the Open Inference Protocol v2.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Element type of a tensor, named as the Open Inference Protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "UINT16")]
    Uint16,
    #[serde(rename = "UINT32")]
    Uint32,
    #[serde(rename = "UINT64")]
    Uint64,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT16")]
    Int16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// Returns the protocol name, such as `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name; returns `None` for names the protocol does not define.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Size of one element in the binary layout; `None` for BYTES, whose elements carry a
    /// 4-byte length prefix each.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Elements of a tensor, row-major. FP16 elements are kept as their IEEE 754 bit patterns.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<u16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Uint16(v) => v.len(),
            TensorData::Uint32(v) => v.len(),
            TensorData::Uint64(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Int16(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp16(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request or response parameter value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

/// A named tensor with its shape and elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// Dimensions; their product equals the number of elements.
    pub shape: Vec<i64>,
    pub data: TensorData,
    pub parameters: BTreeMap<String, Parameter>,
}

impl Tensor {
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: TensorData) -> Self {
        Self {
            name: name.into(),
            shape,
            data,
            parameters: BTreeMap::new(),
        }
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Returns the element count the shape implies, or `None` when a dimension is negative
    /// or the product overflows.
    pub fn shape_elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &dim| {
            usize::try_from(dim).ok().and_then(|d| acc.checked_mul(d))
        })
    }
}

/// Name, datatype and shape of a model input or output; `-1` marks a variable dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// An output the caller asks for, with its parameters (such as `binary_data`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RequestedOutput {
    pub name: String,
    pub parameters: BTreeMap<String, Parameter>,
}

/// An inference request after decoding, whatever the wire format.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InferRequest {
    /// Caller's request id, echoed in the response; the server assigns one when empty.
    pub id: Option<String>,
    pub parameters: BTreeMap<String, Parameter>,
    pub inputs: Vec<Tensor>,
    /// Outputs to return; all of them when empty.
    pub outputs: Vec<RequestedOutput>,
}

/// An inference response before encoding.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: Option<String>,
    pub id: Option<String>,
    pub parameters: BTreeMap<String, Parameter>,
    pub outputs: Vec<Tensor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for datatype in DataType::ALL {
            assert_eq!(DataType::parse(datatype.as_str()), Some(datatype));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn shape_elements_rejects_negative() {
        let tensor = Tensor::new("x", vec![2, -1], TensorData::Fp32(vec![]));
        assert_eq!(tensor.shape_elements(), None);
        let tensor = Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6]));
        assert_eq!(tensor.shape_elements(), Some(6));
    }
}
