"""Serving benchmark: one scikit-learn model behind Ghaf (REST and gRPC) and MLServer.

Run through bench/serving.sh, which prepares the venv and passes the paths. Steps:

1. Train a GradientBoostingClassifier (100 trees) on scikit-learn's breast_cancer data and
   convert it to ONNX with skl2onnx (zipmap off, FP32 input of 30 features).
2. Floor: ONNX Runtime evaluating one row in this process (Python onnxruntime bindings).
3. Start `ghaf server` on a free 127.0.0.1 port, log the ONNX model with mlflow.onnx to its
   MLflow-compatible API, create the endpoint `bc` and wait until it is ready.
4. Start MLServer with mlserver-sklearn serving the same fitted model (joblib).
5. Per server and protocol: latency of one client sending one row at a time (p50, p99),
   then throughput with CLIENTS processes sending as fast as they can.
6. With --rust-client: REST of both servers again with the Rust load generator
   (crates/ghaf-server/examples/oip_load.rs, one CPU, keep-alive connections), after
   checking that both servers answer the body with 200.

Both servers get identical request bodies, built once, and the same Python client loop, so
the client's own overhead is in every number, including for Ghaf against the floor.
Servers are started by PID and stopped by PID.

Results of a release build are recorded in BENCHMARKS.md.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import joblib
import mlflow
import mlflow.onnx
import numpy as np
import onnxruntime
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def wait_for(url, headers=None, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not return 200 within {timeout} s")


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


def rest_body(input_name, row):
    return json.dumps(
        {"inputs": [{"name": input_name, "shape": [1, 30], "datatype": "FP32", "data": row}]}
    ).encode()


def rest_loop(port, path, body, headers, count):
    """Sends `count` requests on one keep-alive connection; returns latencies in seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"REST {path}: {response.status} {payload[:300]!r}")
    connection.close()
    return latencies


def grpc_request(model, input_name, row):
    tensor = pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP32", shape=[1, 30])
    tensor.contents.fp32_contents.extend(row)
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def grpc_loop(port, request, metadata, count):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        stub.ModelInfer(request, metadata=metadata)
        latencies.append(time.perf_counter() - started)
    channel.close()
    return latencies


def run_target(target, count):
    kind, args = target
    if kind == "rest":
        return rest_loop(*args, count)
    return grpc_loop(*args, count)


def saturate_worker(target, seconds, results):
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        run_target(target, 50)
        done += 50
    results.put(done)


def measure(name, target, single, clients, seconds):
    run_target(target, 200)  # warm-up
    latencies = run_target(target, single)
    results = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=saturate_worker, args=(target, seconds, results))
        for _ in range(clients)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    total = sum(results.get() for _ in workers)
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    row = {
        "target": name,
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
        "throughput_rps": total / elapsed,
    }
    print(
        f"{name:<22} p50 {row['p50_us']:8.1f} us  p99 {row['p99_us']:8.1f} us  "
        f"{row['throughput_rps']:9.0f} req/s ({clients} clients)",
        flush=True,
    )
    return row


def rest_post(url, body, headers):
    """One POST; returns (status, body) without raising on a non-2xx status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def rust_measure(binary, name, url, body_file, headers, requests, connections, seconds):
    """Latency and saturation runs of the Rust load generator (one CPU) against one server."""

    def run(*extra):
        command = [binary, url, body_file]
        for key, value in headers.items():
            command += ["-H", f"{key}: {value}"]
        output = subprocess.run(command + list(extra), capture_output=True, text=True)
        if output.returncode != 0:
            raise RuntimeError(f"oip_load {url} {' '.join(extra)} failed: {output.stderr[-2000:]}")
        return json.loads(output.stdout.strip().splitlines()[-1])

    latency = run("--requests", str(requests))
    saturation = run("--connections", str(connections), "--seconds", str(seconds))
    row = {
        "target": name,
        "p50_us": latency["p50_us"],
        "p99_us": latency["p99_us"],
        "throughput_rps": saturation["throughput_rps"],
        "errors": latency["errors"] + saturation["errors"],
    }
    print(
        f"{name + ' (Rust)':<22} p50 {row['p50_us']:8.1f} us  p99 {row['p99_us']:8.1f} us  "
        f"{row['throughput_rps']:9.0f} req/s ({connections} connections, "
        f"{row['errors']} errors)",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ghaf", help="path of the ghaf release binary")
    parser.add_argument("--ort-library", required=True, help="libonnxruntime.so for Ghaf")
    parser.add_argument("--requests", type=int, default=2000, help="requests of the latency run")
    parser.add_argument("--clients", type=int, default=8, help="client processes at saturation")
    parser.add_argument("--seconds", type=float, default=10, help="length of a saturation run")
    parser.add_argument(
        "--rust-client",
        help="path of the oip_load example binary; when given, REST is measured with it as well",
    )
    parser.add_argument(
        "--rust-connections", type=int, default=8, help="keep-alive connections of oip_load"
    )
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="ghaf-serving-bench-")
    features, labels = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    model = GradientBoostingClassifier(n_estimators=100, random_state=0).fit(features, labels)
    onnx_model = to_onnx(model, features[:1], options={id(model): {"zipmap": False}})
    input_name = onnx_model.graph.input[0].name
    row = [float(v) for v in features[0]]

    # Floor: ONNX Runtime in this process, one row per call.
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString())
    one = features[:1]
    for _ in range(200):
        session.run(None, {input_name: one})
    floor = []
    for _ in range(args.requests):
        started = time.perf_counter()
        session.run(None, {input_name: one})
        floor.append(time.perf_counter() - started)
    print(
        f"{'onnxruntime in-process':<22} p50 {percentile(floor, 50) * 1e6:8.1f} us  "
        f"p99 {percentile(floor, 99) * 1e6:8.1f} us",
        flush=True,
    )

    processes = []
    try:
        # Ghaf.
        ghaf_port = free_port()
        environment = dict(os.environ, ORT_DYLIB_PATH=args.ort_library, GHAF_LOG_LEVEL="warn")
        ghaf = subprocess.Popen(
            [args.ghaf, "server", "--data-dir", f"{work}/ghaf", "--listen", f"127.0.0.1:{ghaf_port}"],
            stdout=subprocess.PIPE,
            stderr=open(f"{work}/ghaf.log", "wb"),
            env=environment,
            text=True,
        )
        processes.append(ghaf)
        token = None
        for line in ghaf.stdout:
            if line.strip().startswith("ghaf_"):
                token = line.strip()
                break
        if token is None:
            raise RuntimeError(f"ghaf server printed no admin token; see {work}/ghaf.log")
        wait_for(f"http://127.0.0.1:{ghaf_port}/v2/health/ready")
        auth = {"Authorization": f"Bearer {token}"}

        os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{ghaf_port}"
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
        with mlflow.start_run():
            info = mlflow.onnx.log_model(onnx_model, name="model", registered_model_name="bc")
        version = int(info.registered_model_version)
        request = urllib.request.Request(
            f"http://127.0.0.1:{ghaf_port}/api/v1/projects/default/endpoints",
            data=json.dumps({"name": "bc", "model": "bc", "version": version}).encode(),
            headers={**auth, "Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request).read()
        wait_for(f"http://127.0.0.1:{ghaf_port}/v2/models/bc/ready", headers=auth)

        # MLServer with the same fitted model.
        mlserver_dir = f"{work}/mlserver"
        os.makedirs(mlserver_dir)
        joblib.dump(model, f"{mlserver_dir}/model.joblib")
        mlserver_http, mlserver_grpc, mlserver_metrics = free_port(), free_port(), free_port()
        with open(f"{mlserver_dir}/settings.json", "w") as f:
            json.dump(
                {
                    "host": "127.0.0.1",
                    "http_port": mlserver_http,
                    "grpc_port": mlserver_grpc,
                    "metrics_port": mlserver_metrics,
                    # MLServer 1.7.1's worker processes fail to start here ("There is no
                    # current event loop in thread 'MainThread'", Python 3.11), so the model
                    # runs in the server process.
                    "parallel_workers": 0,
                },
                f,
            )
        with open(f"{mlserver_dir}/model-settings.json", "w") as f:
            json.dump(
                {
                    "name": "bc",
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib"},
                },
                f,
            )
        mlserver = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "mlserver"), "start", mlserver_dir],
            stdout=open(f"{work}/mlserver.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(mlserver)
        wait_for(f"http://127.0.0.1:{mlserver_http}/v2/models/bc/ready")

        body = rest_body(input_name, row)
        json_headers = {"Content-Type": "application/json"}
        targets = [
            (
                "ghaf REST",
                ("rest", (ghaf_port, "/v2/models/bc/infer", body, {**json_headers, **auth})),
            ),
            (
                "ghaf gRPC",
                (
                    "grpc",
                    (
                        ghaf_port,
                        grpc_request("bc", input_name, row),
                        [("authorization", f"Bearer {token}")],
                    ),
                ),
            ),
            (
                "mlserver REST",
                ("rest", (mlserver_http, "/v2/models/bc/infer", body, json_headers)),
            ),
            ("mlserver gRPC", ("grpc", (mlserver_grpc, grpc_request("bc", input_name, row), []))),
        ]
        rows = [measure(name, target, args.requests, args.clients, args.seconds) for name, target in targets]
        print(json.dumps({"floor_p50_us": percentile(floor, 50) * 1e6, "results": rows}))

        if args.rust_client:
            body_file = f"{work}/body.json"
            with open(body_file, "wb") as f:
                f.write(body)
            rust_targets = [
                ("ghaf REST", f"http://127.0.0.1:{ghaf_port}/v2/models/bc/infer", auth),
                ("mlserver REST", f"http://127.0.0.1:{mlserver_http}/v2/models/bc/infer", {}),
            ]
            rust_rows = []
            for name, url, headers in rust_targets:
                status, payload = rest_post(url, body, {**json_headers, **headers})
                if status != 200:
                    raise RuntimeError(f"{name} returned {status} for the request body: {payload[:300]!r}")
                rust_rows.append(
                    rust_measure(
                        args.rust_client, name, url, body_file, headers, args.requests,
                        args.rust_connections, args.seconds,
                    )
                )
            print(json.dumps({"client": "oip_load", "results": rust_rows}))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
