//! Property tests of the Open Inference Protocol decoders: arbitrary bytes and mutated valid
//! requests, in JSON, binary and gRPC form, never panic, and every rejection is a client
//! error with a message.

mod common;

use common::TestApp;
use ghaf_runtime::{DataType, TensorData};
use ghaf_server::oip::codec::{self, Limits};
use ghaf_server::oip::grpc::request_from_proto;
use ghaf_server::oip::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor,
};
use proptest::prelude::*;

/// Small limits, so that limit checks are reached by generated requests too.
fn limits() -> Limits {
    Limits {
        max_body_bytes: 1 << 20,
        max_tensor_elements: 64,
        max_json_depth: 4,
    }
}

fn datatype() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

/// A JSON element that fits `datatype` most of the time.
fn element(datatype: DataType) -> BoxedStrategy<serde_json::Value> {
    match datatype {
        DataType::Bool => any::<bool>().prop_map(serde_json::Value::from).boxed(),
        DataType::Bytes => ".{0,6}".prop_map(serde_json::Value::from).boxed(),
        DataType::Fp32 | DataType::Fp64 | DataType::Fp16 => {
            (-1e6f64..1e6).prop_map(serde_json::Value::from).boxed()
        }
        _ => (-300i64..70000).prop_map(serde_json::Value::from).boxed(),
    }
}

/// A valid-looking input: name, datatype, shape, and its elements as JSON.
fn input() -> impl Strategy<Value = (String, DataType, Vec<i64>, Vec<serde_json::Value>)> {
    (
        "[a-z]{1,4}",
        datatype(),
        prop::collection::vec(0i64..4, 0..3),
    )
        .prop_flat_map(|(name, datatype, shape)| {
            let count = shape.iter().product::<i64>() as usize;
            (
                Just(name),
                Just(datatype),
                Just(shape),
                prop::collection::vec(element(datatype), count..=count),
            )
        })
}

/// Builds a REST request from inputs; `binary[i]` sends input i as binary tensor data.
/// Returns the JSON part and the binary part.
fn rest_request(
    inputs: &[(String, DataType, Vec<i64>, Vec<serde_json::Value>)],
    binary: &[bool],
    nested: bool,
) -> (Vec<u8>, Vec<u8>) {
    let mut tail = Vec::new();
    let mut documents = Vec::new();
    for (index, (name, datatype, shape, values)) in inputs.iter().enumerate() {
        let mut document = serde_json::json!({
            "name": name, "datatype": datatype.as_str(), "shape": shape,
        });
        if binary.get(index).copied().unwrap_or(false) {
            let data = to_tensor_data(*datatype, values);
            let before = tail.len();
            codec::encode_binary(&data, &mut tail);
            document["parameters"] = serde_json::json!({"binary_data_size": tail.len() - before});
        } else if nested && shape.len() == 2 && shape[1] > 0 {
            let rows: Vec<serde_json::Value> = values
                .chunks(shape[1] as usize)
                .map(|row| serde_json::Value::from(row.to_vec()))
                .collect();
            document["data"] = rows.into();
        } else {
            document["data"] = values.clone().into();
        }
        documents.push(document);
    }
    let json = serde_json::json!({
        "id": "r",
        "inputs": documents,
        "parameters": {"binary_data_output": true},
    });
    (json.to_string().into_bytes(), tail)
}

/// Converts generated JSON elements to tensor data, clamping them into the datatype's range.
fn to_tensor_data(datatype: DataType, values: &[serde_json::Value]) -> TensorData {
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let float = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    match datatype {
        DataType::Bool => {
            TensorData::Bool(values.iter().map(|v| v.as_bool() == Some(true)).collect())
        }
        DataType::Bytes => TensorData::Bytes(
            values
                .iter()
                .map(|v| v.as_str().unwrap_or("").as_bytes().to_vec())
                .collect(),
        ),
        DataType::Uint8 => TensorData::Uint8(values.iter().map(|v| int(v) as u8).collect()),
        DataType::Uint16 => TensorData::Uint16(values.iter().map(|v| int(v) as u16).collect()),
        DataType::Uint32 => TensorData::Uint32(values.iter().map(|v| int(v) as u32).collect()),
        DataType::Uint64 => TensorData::Uint64(values.iter().map(|v| int(v) as u64).collect()),
        DataType::Int8 => TensorData::Int8(values.iter().map(|v| int(v) as i8).collect()),
        DataType::Int16 => TensorData::Int16(values.iter().map(|v| int(v) as i16).collect()),
        DataType::Int32 => TensorData::Int32(values.iter().map(|v| int(v) as i32).collect()),
        DataType::Int64 => TensorData::Int64(values.iter().map(int).collect()),
        DataType::Fp16 => TensorData::Fp16(values.iter().map(|v| int(v) as u16).collect()),
        DataType::Fp32 => TensorData::Fp32(values.iter().map(|v| float(v) as f32).collect()),
        DataType::Fp64 => TensorData::Fp64(values.iter().map(float).collect()),
    }
}

/// A decode result must be Ok with tensors that match their shapes, or an error with a
/// message.
fn check_decoded(
    result: Result<codec::DecodedRequest, codec::DecodeError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(decoded) => {
            for tensor in &decoded.request.inputs {
                prop_assert_eq!(tensor.shape_elements(), Some(tensor.data.len()));
            }
        }
        Err(error) => prop_assert!(!error.message.is_empty()),
    }
    Ok(())
}

/// A byte-level mutation of a request body.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    HeaderShift { by: i64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (-8i64..8).prop_map(|by| Mutation::HeaderShift { by }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decoded(codec::decode_request(&bytes, &[], &limits()))?;
    }

    #[test]
    fn arbitrary_header_and_tail_never_panic(
        header in ".{0,8}",
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        if let Ok((json, binary)) = codec::split_body(&body, Some(&header)) {
            check_decoded(codec::decode_request(json, binary, &limits()))?;
        }
    }

    #[test]
    fn valid_requests_decode(
        inputs in prop::collection::vec(input(), 1..4),
        binary in prop::collection::vec(any::<bool>(), 4),
        nested in any::<bool>(),
    ) {
        // Inputs need distinct names to be valid.
        let mut seen = std::collections::HashSet::new();
        let inputs: Vec<_> = inputs.into_iter().filter(|i| seen.insert(i.0.clone())).collect();
        let (json, tail) = rest_request(&inputs, &binary, nested);
        let result = codec::decode_request(&json, &tail, &limits());
        // FP16 as JSON numbers and out-of-range integers are rejected; the rest decodes.
        let rejectable = inputs.iter().enumerate().any(|(index, (_, datatype, _, values))| {
            let as_binary = binary[index];
            (!as_binary && *datatype == DataType::Fp16)
                || (!as_binary && !matches!(datatype, DataType::Int32 | DataType::Int64
                    | DataType::Fp32 | DataType::Fp64 | DataType::Bool | DataType::Bytes)
                    && !values.is_empty())
        });
        if !rejectable {
            let decoded = result.map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(decoded.request.inputs.len(), inputs.len());
            prop_assert!(decoded.output_is_binary("any"));
        } else {
            check_decoded(result)?;
        }
    }

    #[test]
    fn ragged_rows_are_rejected(
        rows in 1usize..5,
        columns in 1usize..5,
        ragged_row in 0usize..5,
        delta in prop::sample::select(vec![-1i64, 1, 2]),
    ) {
        // Rows of `columns` integers for shape [rows, columns], with one row changed in length.
        let ragged_row = ragged_row % rows;
        let length = (columns as i64 + delta).max(0) as usize;
        let data: Vec<Vec<i64>> = (0..rows)
            .map(|row| {
                let count = if row == ragged_row { length } else { columns };
                (0..count as i64).collect()
            })
            .collect();
        let json = serde_json::json!({"inputs": [{
            "name": "x", "shape": [rows, columns], "datatype": "INT64", "data": data,
        }]})
        .to_string();
        let error = codec::decode_request(json.as_bytes(), &[], &limits())
            .expect_err("ragged data must be rejected");
        prop_assert!(!error.too_large, "{}", error.message);
        prop_assert!(error.message.starts_with("input \"x\": "), "{}", error.message);
        prop_assert!(
            error.message.contains(&format!("dimension 1 of shape [{rows}, {columns}]")),
            "{}",
            error.message
        );
    }

    #[test]
    fn mutated_requests_never_panic(
        inputs in prop::collection::vec(input(), 1..3),
        binary in prop::collection::vec(any::<bool>(), 3),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (json, tail) = rest_request(&inputs, &binary, false);
        let mut header = json.len() as i64;
        let mut body = json;
        body.extend_from_slice(&tail);
        for mutation in mutations {
            match mutation {
                Mutation::Flip { at, bits } if !body.is_empty() => {
                    let at = at % body.len();
                    body[at] ^= bits;
                }
                Mutation::Truncate { at } => body.truncate(at % (body.len() + 1)),
                Mutation::Insert { at, byte } => {
                    let at = at % (body.len() + 1);
                    body.insert(at, byte);
                }
                Mutation::HeaderShift { by } => header += by,
                Mutation::Flip { .. } => {}
            }
        }
        let header = header.to_string();
        match codec::split_body(&body, Some(&header)) {
            Ok((json, binary)) => check_decoded(codec::decode_request(json, binary, &limits()))?,
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }

    #[test]
    fn arbitrary_binary_tensors_never_panic(
        datatype in datatype(),
        elements in 0usize..16,
        bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        match codec::decode_binary(datatype, elements, &bytes) {
            Ok(data) => {
                prop_assert_eq!(data.len(), elements);
                let mut encoded = Vec::new();
                codec::encode_binary(&data, &mut encoded);
                prop_assert_eq!(encoded, bytes);
            }
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }

    #[test]
    fn arbitrary_grpc_messages_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(message) = <ModelInferRequest as prost::Message>::decode(bytes.as_slice()) {
            match request_from_proto(message, &limits()) {
                Ok(request) => {
                    for tensor in &request.inputs {
                        prop_assert_eq!(tensor.shape_elements(), Some(tensor.data.len()));
                    }
                }
                Err(error) => prop_assert!(!error.message.is_empty()),
            }
        }
    }

    #[test]
    fn structured_grpc_requests_never_panic(
        datatypes in prop::collection::vec(datatype(), 1..3),
        shapes in prop::collection::vec(prop::collection::vec(-1i64..5, 0..3), 3),
        counts in prop::collection::vec(0usize..8, 8),
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..3),
        with_parameter in any::<bool>(),
    ) {
        let inputs: Vec<InferInputTensor> = datatypes
            .iter()
            .enumerate()
            .map(|(index, datatype)| InferInputTensor {
                name: format!("x{index}"),
                datatype: datatype.as_str().to_owned(),
                shape: shapes[index].clone(),
                parameters: if with_parameter {
                    [("p".to_owned(), InferParameter { parameter_choice: None })].into()
                } else {
                    Default::default()
                },
                contents: raw.is_empty().then(|| InferTensorContents {
                    bool_contents: vec![true; counts[0]],
                    int_contents: vec![300; counts[1]],
                    int64_contents: vec![-1; counts[2]],
                    uint_contents: vec![70000; counts[3]],
                    uint64_contents: vec![1; counts[4]],
                    fp32_contents: vec![0.5; counts[5]],
                    fp64_contents: vec![0.25; counts[6]],
                    bytes_contents: vec![b"ab".to_vec(); counts[7]],
                }),
            })
            .collect();
        let message = ModelInferRequest {
            model_name: "m".into(),
            inputs,
            raw_input_contents: raw,
            parameters: [(
                "q".to_owned(),
                InferParameter { parameter_choice: Some(ParameterChoice::Int64Param(1)) },
            )]
            .into(),
            ..Default::default()
        };
        match request_from_proto(message, &limits()) {
            Ok(request) => {
                for tensor in &request.inputs {
                    prop_assert_eq!(tensor.shape_elements(), Some(tensor.data.len()));
                }
            }
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Through the router: decoding errors are 400 or 413 with the protocol's error body;
    /// nothing is a 500.
    #[test]
    fn infer_route_never_fails_with_500(
        bodies in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..96),
                (prop::collection::vec(input(), 1..3), any::<bool>())
                    .prop_map(|(inputs, nested)| rest_request(&inputs, &[], nested).0),
            ],
            1..4,
        ),
        header in prop::option::of(0usize..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let app = TestApp::new().await;
            for body in &bodies {
                let mut request = axum::http::Request::builder()
                    .method("POST")
                    .uri("/v2/models/m/infer")
                    .header("authorization", format!("Bearer {}", app.admin_token));
                if let Some(length) = header {
                    request = request.header("inference-header-content-length", length.to_string());
                }
                let request = request.body(axum::body::Body::from(body.clone())).unwrap();
                let response = app.send(request).await;
                let status = response.status.as_u16();
                // 404: no endpoint `m`; 503: no serving service in this test server.
                prop_assert!(
                    matches!(status, 400 | 404 | 413 | 503),
                    "{status} {}",
                    response.text()
                );
                let error: serde_json::Value = serde_json::from_slice(&response.body)
                    .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
                prop_assert!(
                    error["error"].as_str().is_some_and(|m| !m.is_empty()),
                    "{error}"
                );
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
