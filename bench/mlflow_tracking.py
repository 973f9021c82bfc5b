"""Times the same MLflow client calls against three tracking servers.

Usage (the venv from tests/mlflow/setup.sh has the pinned client):

    ~/.cache/ghaf-venv/bin/python bench/mlflow_tracking.py URI [TOKEN]

URI is a tracking server such as http://127.0.0.1:8080 (Ghaf; pass its token),
http://127.0.0.1:5000 (`mlflow server`), or `stub` to start a do-nothing HTTP server that
returns `{}` for every request, which measures the client's own cost.

Measured, each repeated and reported as the median:
  - 1,000 sequential MlflowClient.log_metric calls;
  - one log_batch of 1,000 metrics;
  - search_runs over 1,000 runs (one page of 1,000), unfiltered and with
    "metrics.acc > 0.5 and params.model = 'rf'" (not against the stub).
"""

import json
import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402


class Stub(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


def median_seconds(action, reps):
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


def report(label, result):
    median, low, high = result
    print(f"{label}: median {median:.3f} s (range {low:.3f} to {high:.3f})", flush=True)


def main():
    uri = sys.argv[1]
    if len(sys.argv) > 2:
        os.environ["MLFLOW_TRACKING_TOKEN"] = sys.argv[2]
    stub = uri == "stub"
    if stub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{server.server_address[1]}"
    client = MlflowClient(uri)
    now = int(time.time() * 1000)

    if stub:
        run_id = "0" * 32
    else:
        experiment = f"bench-{now}"
        experiment_id = client.create_experiment(experiment)
        run_id = client.create_run(experiment_id).info.run_id

    def sequential():
        for step in range(1000):
            client.log_metric(run_id, "seq", step * 0.001, timestamp=now, step=step)

    report("1,000 sequential log_metric", median_seconds(sequential, 3))

    batch_counter = [0]

    def batch():
        batch_counter[0] += 1
        metrics = [
            Metric(f"batch{batch_counter[0]}", i * 0.001, now, i) for i in range(1000)
        ]
        client.log_batch(run_id, metrics=metrics)

    report("log_batch of 1,000 metrics", median_seconds(batch, 5))

    if stub:
        return
    models = ["rf", "gbm", "logreg", "mlp"]
    for i in range(1000):
        run = client.create_run(experiment_id)
        client.log_batch(
            run.info.run_id,
            metrics=[
                Metric("acc", (i * 7919 % 1000) / 1000, now, 0),
                Metric("loss", (i * 104729 % 1000) / 1000, now, 0),
            ],
            params=[Param("model", models[i % 4]), Param("depth", str(i % 12))],
        )
    report(
        "search_runs, 1,000 runs, one page",
        median_seconds(lambda: client.search_runs([experiment_id], max_results=1000), 5),
    )
    report(
        "search_runs, filtered",
        median_seconds(
            lambda: client.search_runs(
                [experiment_id],
                "metrics.acc > 0.5 and params.model = 'rf'",
                max_results=1000,
            ),
            5,
        ),
    )


if __name__ == "__main__":
    main()
