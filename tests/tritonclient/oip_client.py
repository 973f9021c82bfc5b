"""Drives a Ghaf server with NVIDIA's Triton client library over REST and gRPC.

Run by crates/ghaf-server/tests/oip_tritonclient.rs, which starts the server, deploys the
endpoint and passes the details in environment variables:

  GHAF_OIP_ADDRESS   host:port of the server (REST and gRPC share it)
  GHAF_OIP_TOKEN     bearer token
  GHAF_OIP_MODEL     endpoint name
  GHAF_OIP_VERSION   model version the endpoint serves
  GHAF_OIP_INPUT     input tensor name (FP64, shape [-1, 2])
  GHAF_OIP_OUTPUT    output tensor name
  GHAF_OIP_ROWS      JSON array of feature rows
  GHAF_OIP_EXPECTED  JSON array of the model's predictions for those rows

Prints "all checks passed" at the end; any failed check raises.
"""

import json
import os

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

address = os.environ["GHAF_OIP_ADDRESS"]
token = os.environ["GHAF_OIP_TOKEN"]
model = os.environ["GHAF_OIP_MODEL"]
version = os.environ["GHAF_OIP_VERSION"]
input_name = os.environ["GHAF_OIP_INPUT"]
output_name = os.environ["GHAF_OIP_OUTPUT"]
rows = np.array(json.loads(os.environ["GHAF_OIP_ROWS"]), dtype=np.float64)
expected = np.array(json.loads(os.environ["GHAF_OIP_EXPECTED"]), dtype=np.float64).reshape(-1, 1)

# gRPC metadata keys must be lower case; HTTP headers are case-insensitive. Every call gets a
# copy, because tritonclient.http adds its own headers to the dict it is given.
headers = {"authorization": f"Bearer {token}", "x-ghaf-project": "default"}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_http():
    client = httpclient.InferenceServerClient(url=address)
    check(client.is_server_live(), "HTTP: server not live")
    check(client.is_server_ready(), "HTTP: server not ready")
    metadata = client.get_server_metadata()
    check(metadata["name"] == "ghaf", f"HTTP: server metadata {metadata}")
    check("binary_tensor_data" in metadata["extensions"], f"HTTP: extensions {metadata}")

    model_metadata = client.get_model_metadata(model, headers=dict(headers))
    check(model_metadata["name"] == model, f"HTTP: model metadata {model_metadata}")
    check(model_metadata["inputs"][0]["name"] == input_name, f"HTTP: inputs {model_metadata}")
    check(model_metadata["inputs"][0]["datatype"] == "FP64", f"HTTP: inputs {model_metadata}")
    check(version in model_metadata["versions"], f"HTTP: versions {model_metadata}")
    check(client.is_model_ready(model, headers=dict(headers)), "HTTP: model not ready")
    check(
        client.is_model_ready(model, model_version=version, headers=dict(headers)),
        "HTTP: model version not ready",
    )
    check(not client.is_model_ready("absent", headers=dict(headers)), "HTTP: absent model ready")

    for binary_input in (False, True):
        for binary_output in (False, True):
            tensor = httpclient.InferInput(input_name, list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows, binary_data=binary_input)
            requested = httpclient.InferRequestedOutput(output_name, binary_data=binary_output)
            result = client.infer(
                model,
                [tensor],
                outputs=[requested],
                request_id=f"http-{binary_input}-{binary_output}",
                headers=dict(headers),
            )
            values = result.as_numpy(output_name)
            case = f"HTTP binary input {binary_input}, binary output {binary_output}"
            check(values.dtype == np.float64, f"{case}: dtype {values.dtype}")
            check(values.shape == expected.shape, f"{case}: shape {values.shape}")
            if binary_output:
                check(np.array_equal(values, expected), f"{case}: {values} != {expected}")
            else:
                check(np.allclose(values, expected, rtol=0, atol=1e-12), f"{case}: {values}")
            response = result.get_response()
            check(response["id"] == f"http-{binary_input}-{binary_output}", f"{case}: {response}")
            check(response["model_version"] == version, f"{case}: {response}")

    # Without requested outputs, tritonclient requests every output in binary.
    tensor = httpclient.InferInput(input_name, list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], model_version=version, headers=dict(headers))
    check(np.array_equal(result.as_numpy(output_name), expected), "HTTP: all outputs")

    wrong = httpclient.InferInput("wrong_input", list(rows.shape), "FP64")
    wrong.set_data_from_numpy(rows)
    try:
        client.infer(model, [wrong], headers=dict(headers))
        raise AssertionError("HTTP: an unknown input was accepted")
    except InferenceServerException as error:
        check("wrong_input" in error.message(), f"HTTP: error {error}")

    try:
        client.get_model_metadata(model)
        raise AssertionError("HTTP: metadata without a token was returned")
    except InferenceServerException as error:
        check(error.status() == "401", f"HTTP: status {error.status()}")
    client.close()


def check_grpc():
    client = grpcclient.InferenceServerClient(url=address)
    check(client.is_server_live(), "gRPC: server not live")
    check(client.is_server_ready(), "gRPC: server not ready")
    metadata = client.get_server_metadata(as_json=True)
    check(metadata["name"] == "ghaf", f"gRPC: server metadata {metadata}")
    check("binary_tensor_data" in metadata["extensions"], f"gRPC: extensions {metadata}")

    model_metadata = client.get_model_metadata(model, headers=dict(headers), as_json=True)
    check(model_metadata["inputs"][0]["name"] == input_name, f"gRPC: inputs {model_metadata}")
    check(model_metadata["inputs"][0]["shape"] == ["-1", "2"], f"gRPC: shape {model_metadata}")
    check(client.is_model_ready(model, headers=dict(headers)), "gRPC: model not ready")
    check(
        client.is_model_ready(model, model_version=version, headers=dict(headers)),
        "gRPC: model version not ready",
    )

    tensor = grpcclient.InferInput(input_name, list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    requested = grpcclient.InferRequestedOutput(output_name)
    result = client.infer(
        model, [tensor], outputs=[requested], request_id="grpc-1", headers=dict(headers)
    )
    values = result.as_numpy(output_name)
    check(np.array_equal(values, expected), f"gRPC: {values} != {expected}")
    response = result.get_response(as_json=True)
    check(response["id"] == "grpc-1", f"gRPC: {response}")
    check(response["model_version"] == version, f"gRPC: {response}")

    try:
        client.infer("absent", [tensor], headers=dict(headers))
        raise AssertionError("gRPC: an absent model answered")
    except InferenceServerException as error:
        check(error.status() == "StatusCode.NOT_FOUND", f"gRPC: status {error.status()}")

    try:
        client.infer(model, [tensor])
        raise AssertionError("gRPC: inference without a token was accepted")
    except InferenceServerException as error:
        check(error.status() == "StatusCode.UNAUTHENTICATED", f"gRPC: status {error.status()}")
    client.close()


check_http()
print("HTTP checks passed")
check_grpc()
print("gRPC checks passed")
print("all checks passed")
