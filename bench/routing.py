"""Routing cost: the same model behind endpoints with each traffic policy.

Run through bench/routing.sh, which prepares the venv and passes the paths. Steps:

1. Train the serving benchmark's GradientBoostingClassifier on breast_cancer, convert it
   to ONNX and log it twice to a fresh `ghaf server` (versions 1 and 2 of `bc`).
2. Create four endpoints serving it: `single` (version 1), `ab` (versions 1 and 2 at 50/50,
   sticky by the header `x-user-id`), `canary` (a rollout to version 2 held at its first
   step of 50 %: a long interval and a large minimum sample keep the controller from moving
   it) and `shadow` (version 1, every request mirrored to version 2).
3. Measure each endpoint with the Rust load generator (oip_load, one connection, one row
   per request), ROUNDS times in turn so load changes hit every endpoint alike, and print
   the median p50 and p99 of each with its difference to `single`.

Every endpoint runs the same model on the same request body, so a difference in latency is
the cost of the policy: variant choice, the sticky hash, and for `shadow` the mirrored
request that runs after the response on the same two CPUs.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import urllib.request

import mlflow
import mlflow.onnx
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier

from serving import free_port, rest_body, rest_post, wait_for


def call(url, token, method, body):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def latency(binary, url, body_file, headers, requests):
    command = [binary, url, body_file, "--requests", str(requests)]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode != 0:
        raise RuntimeError(f"oip_load {url} failed: {output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ghaf", help="path of the ghaf release binary")
    parser.add_argument("--ort-library", required=True, help="libonnxruntime.so for Ghaf")
    parser.add_argument("--rust-client", required=True, help="path of the oip_load example binary")
    parser.add_argument("--requests", type=int, default=5000, help="requests per latency run")
    parser.add_argument("--rounds", type=int, default=5, help="latency runs per endpoint")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="ghaf-routing-bench-")
    features, labels = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    model = GradientBoostingClassifier(n_estimators=100, random_state=0).fit(features, labels)
    onnx_model = to_onnx(model, features[:1], options={id(model): {"zipmap": False}})
    input_name = onnx_model.graph.input[0].name
    body = rest_body(input_name, [float(v) for v in features[0]])
    body_file = f"{work}/body.json"
    with open(body_file, "wb") as f:
        f.write(body)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = dict(os.environ, ORT_DYLIB_PATH=args.ort_library, GHAF_LOG_LEVEL="warn")
    ghaf = subprocess.Popen(
        [args.ghaf, "server", "--data-dir", f"{work}/ghaf", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=open(f"{work}/ghaf.log", "wb"),
        env=environment,
        text=True,
    )
    try:
        token = None
        for line in ghaf.stdout:
            if line.strip().startswith("ghaf_"):
                token = line.strip()
                break
        if token is None:
            raise RuntimeError(f"ghaf server printed no admin token; see {work}/ghaf.log")
        wait_for(f"{base}/v2/health/ready")
        auth = {"Authorization": f"Bearer {token}"}

        os.environ["MLFLOW_TRACKING_URI"] = base
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
        for _ in range(2):
            with mlflow.start_run():
                mlflow.onnx.log_model(onnx_model, name="model", registered_model_name="bc")

        endpoints = f"{base}/api/v1/projects/default/endpoints"
        for name in ["single", "ab", "canary", "shadow"]:
            call(endpoints, token, "POST", {"name": name, "model": "bc", "version": 1})
        call(
            f"{endpoints}/ab/policy",
            token,
            "PUT",
            {
                "policy": {"kind": "ab", "sticky": {"from": "header", "name": "x-user-id"}},
                "variants": [
                    {"name": "primary", "model": "bc", "version": 1, "weight": 50},
                    {"name": "b", "model": "bc", "version": 2, "weight": 50},
                ],
            },
        )
        call(
            f"{endpoints}/canary/rollout",
            token,
            "POST",
            {
                "version": 2,
                "canary": {
                    "steps": [50, 100],
                    "interval_secs": 86400,
                    "min_requests": 1000000000,
                    "failure_threshold": 1,
                },
            },
        )
        call(
            f"{endpoints}/shadow/policy",
            token,
            "PUT",
            {
                "variants": [
                    {"name": "primary", "model": "bc", "version": 1, "weight": 100},
                    {"name": "mirror", "model": "bc", "version": 2, "weight": 0},
                ],
                "shadow": {"variant": "mirror", "percent": 100},
            },
        )
        for name in ["single", "ab", "canary", "shadow"]:
            wait_for(f"{base}/v2/models/{name}/ready", headers=auth)
            status, payload = rest_post(
                f"{base}/v2/models/{name}/infer", body, {"Content-Type": "application/json", **auth}
            )
            if status != 200:
                raise RuntimeError(f"{name} returned {status}: {payload[:300]!r}")

        headers = {
            "single": auth,
            "ab": {**auth, "x-user-id": "user-42"},
            "canary": auth,
            "shadow": auth,
        }
        runs = {name: [] for name in headers}
        for _ in range(args.rounds):
            for name, extra in headers.items():
                runs[name].append(
                    latency(
                        args.rust_client,
                        f"{base}/v2/models/{name}/infer",
                        body_file,
                        extra,
                        args.requests,
                    )
                )

        single_p50 = statistics.median(run["p50_us"] for run in runs["single"])
        results = []
        for name, samples in runs.items():
            p50 = statistics.median(run["p50_us"] for run in samples)
            p99 = statistics.median(run["p99_us"] for run in samples)
            errors = sum(run["errors"] for run in samples)
            results.append(
                {"endpoint": name, "p50_us": p50, "p99_us": p99, "p50_minus_single_us": p50 - single_p50, "errors": errors}
            )
            print(
                f"{name:<8} p50 {p50:8.1f} us  p99 {p99:8.1f} us  "
                f"p50 - single {p50 - single_p50:+7.1f} us  errors {errors}",
                flush=True,
            )
        print(json.dumps({"rounds": args.rounds, "requests": args.requests, "results": results}))
    finally:
        ghaf.send_signal(signal.SIGTERM)
        try:
            ghaf.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ghaf.kill()


if __name__ == "__main__":
    main()
