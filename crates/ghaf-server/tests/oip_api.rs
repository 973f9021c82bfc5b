//! The Open Inference Protocol routes and gRPC service against a deployed endpoint: health,
//! metadata, readiness, JSON and binary inference, errors, and authentication.

mod common;
mod oip_support;

use axum::body::Body;
use axum::http::Request;
use common::TestApp;
use futures::StreamExt;
use ghaf_runtime::{DataType, TensorData};
use ghaf_server::oip::codec;
use ghaf_server::oip::grpc::InferenceService;
use ghaf_server::oip::proto::grpc_inference_service_server::GrpcInferenceService;
use ghaf_server::oip::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use ghaf_server::oip::proto::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    ServerLiveRequest, ServerMetadataRequest,
};
use oip_support::{Deployed, ENDPOINT};

const ROWS: [[f64; 2]; 3] = [[0.9, 30.0], [-0.4, 12.0], [0.6, 1.0]];

fn flat_rows() -> Vec<f64> {
    ROWS.iter().flatten().copied().collect()
}

async fn setup() -> (TestApp, Deployed) {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    (app, deployed)
}

async fn post_infer(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    header_length: Option<usize>,
) -> common::TestResponse {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {}", app.admin_token));
    if let Some(length) = header_length {
        request = request
            .header("inference-header-content-length", length.to_string())
            .header("content-type", "application/octet-stream");
    } else {
        request = request.header("content-type", "application/json");
    }
    app.send(request.body(Body::from(body)).unwrap()).await
}

fn output_data(json: &serde_json::Value) -> Vec<f64> {
    json["outputs"][0]["data"]
        .as_array()
        .expect("output data")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn health_and_server_metadata_are_public() {
    let app = TestApp::new().await;
    let live = app.call("GET", "/v2/health/live", None, None).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["live"], true);
    let ready = app.call("GET", "/v2/health/ready", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    let metadata = app.call("GET", "/v2", None, None).await;
    assert_eq!(metadata.status, 200);
    let metadata = metadata.json();
    assert_eq!(metadata["name"], "ghaf");
    assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        metadata["extensions"]
            .as_array()
            .unwrap()
            .contains(&"binary_tensor_data".into())
    );
}

#[tokio::test]
async fn model_metadata_and_readiness() {
    let (app, deployed) = setup().await;
    let token = Some(app.admin_token.as_str());

    let metadata = app
        .call("GET", &format!("/v2/models/{ENDPOINT}"), token, None)
        .await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let metadata = metadata.json();
    assert_eq!(metadata["name"], ENDPOINT);
    assert_eq!(metadata["versions"][0], deployed.version.to_string());
    assert_eq!(metadata["inputs"][0]["name"], deployed.input.as_str());
    assert_eq!(metadata["inputs"][0]["datatype"], "FP64");
    assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 2]));

    let versioned = app
        .call(
            "GET",
            &format!("/v2/models/{ENDPOINT}/versions/{}", deployed.version),
            token,
            None,
        )
        .await;
    assert_eq!(versioned.status, 200, "{}", versioned.text());

    let ready = app
        .call("GET", &format!("/v2/models/{ENDPOINT}/ready"), token, None)
        .await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json(),
        serde_json::json!({"name": ENDPOINT, "ready": true})
    );

    let missing = app
        .call("GET", "/v2/models/absent/ready", token, None)
        .await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("absent"));

    let wrong_version = app
        .call(
            "GET",
            &format!("/v2/models/{ENDPOINT}/versions/99"),
            token,
            None,
        )
        .await;
    assert_eq!(wrong_version.status, 404, "{}", wrong_version.text());
    assert!(wrong_version.json()["error"].is_string());
}

#[tokio::test]
async fn json_inference_nested_and_flat() {
    let (app, deployed) = setup().await;
    let expected = deployed.predict(&ROWS);

    let nested = serde_json::json!({
        "id": "req-7",
        "inputs": [{"name": deployed.input, "shape": [3, 2], "datatype": "FP64", "data": ROWS}],
    });
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        nested.to_string().into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.headers["content-type"], "application/json",
        "JSON requests without binary outputs get JSON"
    );
    let json = response.json();
    assert_eq!(json["id"], "req-7");
    assert_eq!(json["model_name"], ENDPOINT);
    assert_eq!(json["model_version"], deployed.version.to_string());
    assert_eq!(json["outputs"][0]["name"], deployed.output.as_str());
    assert_eq!(json["outputs"][0]["datatype"], "FP64");
    assert_eq!(json["outputs"][0]["shape"], serde_json::json!([3, 1]));
    assert_eq!(output_data(&json), expected);

    let flat = serde_json::json!({
        "inputs": [{"name": deployed.input, "shape": [3, 2], "datatype": "FP64", "data": flat_rows()}],
    });
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/versions/{}/infer", deployed.version),
        flat.to_string().into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(output_data(&response.json()), expected);
}

#[tokio::test]
async fn binary_inference_round_trip() {
    let (app, deployed) = setup().await;
    let expected = deployed.predict(&ROWS);

    let mut tail = Vec::new();
    codec::encode_binary(&TensorData::Fp64(flat_rows()), &mut tail);
    let json = serde_json::json!({
        "inputs": [{
            "name": deployed.input, "shape": [3, 2], "datatype": "FP64",
            "parameters": {"binary_data_size": tail.len()},
        }],
        "outputs": [{"name": deployed.output, "parameters": {"binary_data": true}}],
    })
    .to_string()
    .into_bytes();
    let header = json.len();
    let mut body = json;
    body.extend_from_slice(&tail);

    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        body,
        Some(header),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.headers["content-type"], "application/octet-stream");
    let length: usize = response.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&response.body[..length]).unwrap();
    let output = &document["outputs"][0];
    assert_eq!(output["parameters"]["binary_data_size"], 24);
    assert!(output.get("data").is_none());
    let data = codec::decode_binary(DataType::Fp64, 3, &response.body[length..]).unwrap();
    assert_eq!(data, TensorData::Fp64(expected.clone()));

    // The request-level parameter requests every output in binary.
    let json = serde_json::json!({
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": deployed.input, "shape": [3, 2], "datatype": "FP64", "data": ROWS}],
    });
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        json.to_string().into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .headers
            .contains_key("inference-header-content-length")
    );
}

#[tokio::test]
async fn bad_requests_name_the_input() {
    let (app, deployed) = setup().await;
    let path = format!("/v2/models/{ENDPOINT}/infer");

    let cases = [
        (
            serde_json::json!({"inputs": [{"name": "nope", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}),
            "nope",
        ),
        (
            serde_json::json!({"inputs": [{"name": deployed.input, "shape": [2, 2], "datatype": "FP64", "data": [1, 2]}]}),
            "implies 4",
        ),
        (
            serde_json::json!({"inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}]}),
            "FP16",
        ),
        (
            serde_json::json!({"inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "DOUBLE", "data": [1, 2]}]}),
            "unknown datatype",
        ),
        (
            serde_json::json!({"inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP64", "data": [1, "x"]}]}),
            "element 1",
        ),
    ];
    for (body, fragment) in cases {
        let response = post_infer(&app, &path, body.to_string().into_bytes(), None).await;
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let message = response.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(fragment), "{body}: {message}");
    }

    let truncated = post_infer(&app, &path, b"{\"inputs\": [".to_vec(), None).await;
    assert_eq!(truncated.status, 400);
    let wrong_length = post_infer(&app, &path, b"{}".to_vec(), Some(10)).await;
    assert_eq!(wrong_length.status, 400);
    assert!(
        wrong_length.json()["error"]
            .as_str()
            .unwrap()
            .contains("Inference-Header-Content-Length")
    );
}

#[tokio::test]
async fn body_limit_names_the_key() {
    let mut config = ghaf_server::ServerConfig::default();
    config.oip.max_body_bytes = 64;
    let app = TestApp::with_config(config).await;
    let body = vec![b' '; 65];
    let response = post_infer(&app, "/v2/models/any/infer", body, None).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response.json()["error"]
            .as_str()
            .unwrap()
            .contains("oip.max_body_bytes")
    );
}

#[tokio::test]
async fn credentials_and_project_are_checked() {
    let (app, deployed) = setup().await;
    let body = serde_json::json!({
        "inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}],
    });

    let anonymous = app
        .call(
            "POST",
            &format!("/v2/models/{ENDPOINT}/infer"),
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.json()["error"].is_string(),
        "{}",
        anonymous.text()
    );

    let request = Request::builder()
        .method("POST")
        .uri(format!("/v2/models/{ENDPOINT}/infer"))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("x-ghaf-project", "elsewhere")
        .body(Body::from(body.to_string()))
        .unwrap();
    let other_project = app.send(request).await;
    assert_eq!(other_project.status, 404, "{}", other_project.text());
    assert!(
        other_project.json()["error"]
            .as_str()
            .unwrap()
            .contains("elsewhere")
    );

    let request = Request::builder()
        .method("POST")
        .uri(format!("/v2/models/{ENDPOINT}/infer"))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("x-ghaf-project", "default")
        .body(Body::from(body.to_string()))
        .unwrap();
    let named_project = app.send(request).await;
    assert_eq!(named_project.status, 200, "{}", named_project.text());
}

fn grpc_request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn grpc_service_answers_like_rest() {
    let (app, deployed) = setup().await;
    let service = InferenceService::new(app.state.clone());
    let token = Some(app.admin_token.as_str());

    let live = service
        .server_live(grpc_request(ServerLiveRequest {}, None))
        .await
        .unwrap();
    assert!(live.get_ref().live);
    let metadata = service
        .server_metadata(grpc_request(ServerMetadataRequest {}, None))
        .await
        .unwrap();
    assert_eq!(metadata.get_ref().extensions, vec!["binary_tensor_data"]);

    let ready = service
        .model_ready(grpc_request(
            ModelReadyRequest {
                name: ENDPOINT.into(),
                version: String::new(),
            },
            token,
        ))
        .await
        .unwrap();
    assert!(ready.get_ref().ready);

    let model = service
        .model_metadata(grpc_request(
            ModelMetadataRequest {
                name: ENDPOINT.into(),
                version: deployed.version.to_string(),
            },
            token,
        ))
        .await
        .unwrap();
    assert_eq!(model.get_ref().inputs[0].datatype, "FP64");
    assert_eq!(model.get_ref().inputs[0].shape, vec![-1, 2]);

    let typed = ModelInferRequest {
        model_name: ENDPOINT.into(),
        id: "g-1".into(),
        inputs: vec![InferInputTensor {
            name: deployed.input.clone(),
            datatype: "FP64".into(),
            shape: vec![3, 2],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp64_contents: flat_rows(),
                ..Default::default()
            }),
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: deployed.output.clone(),
            parameters: Default::default(),
        }],
        ..Default::default()
    };
    let response = service
        .model_infer(grpc_request(typed.clone(), token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.id, "g-1");
    assert_eq!(response.model_version, deployed.version.to_string());
    assert_eq!(response.outputs[0].shape, vec![3, 1]);
    let data = codec::decode_binary(DataType::Fp64, 3, &response.raw_output_contents[0]).unwrap();
    assert_eq!(data, TensorData::Fp64(deployed.predict(&ROWS)));

    let mut raw = typed.clone();
    raw.inputs[0].contents = None;
    let mut bytes = Vec::new();
    codec::encode_binary(&TensorData::Fp64(flat_rows()), &mut bytes);
    raw.raw_input_contents = vec![bytes];
    let response = service
        .model_infer(grpc_request(raw, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        codec::decode_binary(DataType::Fp64, 3, &response.raw_output_contents[0]).unwrap(),
        data
    );

    let anonymous = service
        .model_infer(grpc_request(typed.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    let mut unknown = typed.clone();
    unknown.model_name = "absent".into();
    let status = service
        .model_infer(grpc_request(unknown, token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let mut invalid = typed;
    invalid.inputs[0].shape = vec![4, 2];
    let status = service
        .model_infer(grpc_request(invalid, token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("implies 8"),
        "{}",
        status.message()
    );
}

/// Returns a gRPC request to `method` whose body sends one chunk and then never ends, so the
/// call can only complete if the server answers without reading the body.
fn endless_grpc_request(method: &str, token: Option<&str>) -> Request<Body> {
    let first = bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]);
    let chunks =
        futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending());
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("/inference.GRPCInferenceService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::from_stream(chunks)).unwrap()
}

/// Returns the `grpc-status` and `grpc-message` of a response, from its headers
/// (trailers-only) or its trailers.
async fn grpc_status(response: axum::http::Response<Body>) -> (String, String) {
    use http_body_util::BodyExt;
    let headers = response.headers().clone();
    let trailers = response
        .into_body()
        .collect()
        .await
        .expect("body is readable")
        .trailers()
        .cloned()
        .unwrap_or_default();
    let field = |name: &str| {
        headers
            .get(name)
            .or_else(|| trailers.get(name))
            .map(|value| {
                percent_encoding::percent_decode(value.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    (field("grpc-status"), field("grpc-message"))
}

#[tokio::test]
async fn grpc_rejects_bad_tokens_before_reading_the_body() {
    use tower::ServiceExt;
    let app = TestApp::new().await;
    for token in [None, Some("not-a-ghaf-token")] {
        let request = endless_grpc_request("ModelInfer", token);
        // Without the header check this call would wait for the body forever; the timeout
        // turns that into a failure.
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            app.router.clone().oneshot(request),
        )
        .await
        .expect("the server answers without reading the body")
        .unwrap();
        let (code, message) = grpc_status(response).await;
        assert_eq!(
            code,
            (tonic::Code::Unauthenticated as i32).to_string(),
            "{token:?}: {message}"
        );
    }
}

#[tokio::test]
async fn grpc_message_limit_is_oip_max_body_bytes() {
    use prost::Message;
    use tower::ServiceExt;
    let mut config = ghaf_server::ServerConfig::default();
    config.oip.max_body_bytes = 64;
    let app = TestApp::with_config(config).await;
    let message = ModelInferRequest {
        model_name: "m".repeat(100),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let request = Request::builder()
        .method("POST")
        .uri("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .body(Body::from(frame))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (code, message) = grpc_status(response).await;
    assert_eq!(
        code,
        (tonic::Code::OutOfRange as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("the limit is: 64 bytes"), "{message}");
}

#[tokio::test]
async fn rest_rejects_ragged_data_naming_the_dimension() {
    let (app, deployed) = setup().await;
    let ragged = format!(
        r#"{{"inputs":[{{"name":"{}","shape":[2,2],"datatype":"FP64","data":[[1,2,3],[4]]}}]}}"#,
        deployed.input
    );
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        ragged.into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!("input {:?}", deployed.input)),
        "{error}"
    );
    assert!(error.contains("dimension 1 of shape [2, 2]"), "{error}");
}

#[tokio::test]
async fn large_rest_bodies_decode_off_the_async_thread() {
    let (app, deployed) = setup().await;
    // Whitespace takes the body past the 1 MiB threshold of the blocking pool.
    let padding = " ".repeat(1_200_000);
    let body = format!(
        r#"{{"inputs":[{{"name":"{}","shape":[3,2],"datatype":"FP64","data":{}}}]{padding}}}"#,
        deployed.input,
        serde_json::to_string(&ROWS).unwrap()
    );
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        body.into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(output_data(&response.json()), deployed.predict(&ROWS));

    let ragged = format!(
        r#"{{"inputs":[{{"name":"{}","shape":[3,2],"datatype":"FP64","data":[[1,2],[3],[5,6]]}}]{padding}}}"#,
        deployed.input
    );
    let response = post_infer(
        &app,
        &format!("/v2/models/{ENDPOINT}/infer"),
        ragged.into_bytes(),
        None,
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("data[1] has length 1"), "{error}");
}
