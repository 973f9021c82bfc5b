"""Times the same MLflow client calls against three tracking servers.

Usage (the venv from tests/mlflow/setup.sh has the pinned client):

    ~/.cache/ghaf-venv/bin/python bench/mlflow_tracking.py --all GHAF_BINARY
    ~/.cache/ghaf-venv/bin/python bench/mlflow_tracking.py --server-cpu GHAF_BINARY
    ~/.cache/ghaf-venv/bin/python bench/mlflow_tracking.py URI [TOKEN]

With --all, the script starts `ghaf server` (GHAF_BINARY, fresh data directory),
`mlflow server` (defaults, fresh sqlite file) and the stub itself, and measures the logging
calls on all three side by side: repetition k runs on the stub, then Ghaf, then
`mlflow server`, so a change in machine load affects all three alike.

With --server-cpu, the script starts `ghaf server` alone and sends 1,000 raw log-metric
requests on one kept-alive connection, without the MLflow client, five times. It reports the
server's CPU time per call (user plus system time of the `ghaf` process from
/proc/PID/stat) and the wall time per call, as medians.

Otherwise URI is a tracking server such as http://127.0.0.1:8080 (Ghaf; pass its token),
http://127.0.0.1:5000 (`mlflow server`), or `stub` to start a do-nothing HTTP server that
returns `{}` for every request, which measures the client's own cost. The stub speaks
HTTP/1.1 and keeps connections open, as both servers do, so its time is the client's cost
plus one local round trip.

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
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY the separate writes of head and body meet the client's delayed
    # ACK on a kept-alive connection and each call waits about 40 ms.
    disable_nagle_algorithm = True

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


def start_stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def logging_target(client, run_id, now):
    """Returns the two logging measurements for one server as callables."""
    batch_counter = [0]

    def sequential():
        for step in range(1000):
            client.log_metric(run_id, "seq", step * 0.001, timestamp=now, step=step)

    def batch():
        batch_counter[0] += 1
        metrics = [
            Metric(f"batch{batch_counter[0]}", i * 0.001, now, i) for i in range(1000)
        ]
        client.log_batch(run_id, metrics=metrics)

    return sequential, batch


def side_by_side(ghaf_binary, reps):
    import tempfile

    from tracking_servers import GhafServer, MlflowServer, client_for, load_average

    workdir = tempfile.mkdtemp(prefix="ghaf-logging-bench-")
    now = int(time.time() * 1000)
    print(f"load average before: {load_average()}", flush=True)
    with GhafServer(ghaf_binary, f"{workdir}/ghaf") as ghaf, MlflowServer(
        f"{workdir}/mlflow"
    ) as mlflow:
        targets = {}
        stub_client = MlflowClient(start_stub())
        targets["stub"] = logging_target(stub_client, "0" * 32, now)
        for name, server in (("ghaf", ghaf), ("mlflow", mlflow)):
            client = client_for(server)
            experiment_id = client.create_experiment(f"bench-{now}")
            run_id = client.create_run(experiment_id).info.run_id
            targets[name] = logging_target(client, run_id, now)
        times = {(name, kind): [] for name in targets for kind in ("sequential", "batch")}
        for rep in range(reps):
            for name, (sequential, batch) in targets.items():
                for kind, action in (("sequential", sequential), ("batch", batch)):
                    started = time.perf_counter()
                    action()
                    times[(name, kind)].append(time.perf_counter() - started)
            print(f"repetition {rep + 1} done, load average {load_average()}", flush=True)
    print()
    print("| Measurement (median, range) | Stub | Ghaf | `mlflow server` | Ghaf / stub |")
    print("|---|---|---|---|---|")
    for kind, label in (
        ("sequential", "1,000 sequential `log_metric`"),
        ("batch", "one `log_batch` of 1,000 metrics"),
    ):
        cells = []
        for name in ("stub", "ghaf", "mlflow"):
            values = times[(name, kind)]
            cells.append(
                f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"
            )
        ratio = statistics.median(times[("ghaf", kind)]) / statistics.median(
            times[("stub", kind)]
        )
        print(f"| {label} | {' | '.join(cells)} | {ratio:.2f} |")


def process_cpu_seconds(pid):
    """Returns the user plus system CPU time of a process and its finished threads."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name in field 2 may contain spaces; fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def server_cpu(ghaf_binary, reps):
    """Measures the server's CPU time per log-metric call with raw HTTP requests."""
    import http.client
    import tempfile
    import urllib.parse

    from tracking_servers import GhafServer, client_for, load_average

    workdir = tempfile.mkdtemp(prefix="ghaf-cpu-bench-")
    now = int(time.time() * 1000)
    print(f"load average before: {load_average()}", flush=True)
    with GhafServer(ghaf_binary, f"{workdir}/ghaf") as ghaf:
        client = client_for(ghaf)
        experiment_id = client.create_experiment(f"bench-{now}")
        run_id = client.create_run(experiment_id).info.run_id
        address = urllib.parse.urlparse(ghaf.url)
        connection = http.client.HTTPConnection(address.hostname, address.port)
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {ghaf.token}",
        }
        step = 0

        def log_metric():
            nonlocal step
            step += 1
            body = json.dumps({
                "run_id": run_id, "key": "raw", "value": step * 0.001,
                "timestamp": now, "step": step,
            })
            connection.request("POST", "/api/2.0/mlflow/runs/log-metric", body, headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"log-metric failed with {response.status}: {data[:300]!r}")

        for _ in range(100):
            log_metric()
        cpu_per_call, wall_per_call = [], []
        for _ in range(reps):
            cpu_before = process_cpu_seconds(ghaf.process.pid)
            started = time.perf_counter()
            for _ in range(1000):
                log_metric()
            wall_per_call.append((time.perf_counter() - started) / 1000)
            cpu_per_call.append((process_cpu_seconds(ghaf.process.pid) - cpu_before) / 1000)
        connection.close()
    print(
        f"server CPU per log-metric call: median {statistics.median(cpu_per_call) * 1000:.3f} ms "
        f"(range {min(cpu_per_call) * 1000:.3f} to {max(cpu_per_call) * 1000:.3f}); "
        f"wall time per call: median {statistics.median(wall_per_call) * 1000:.3f} ms; "
        f"load average after: {load_average()}",
        flush=True,
    )


def main():
    if sys.argv[1] == "--server-cpu":
        server_cpu(sys.argv[2], int(os.environ.get("BENCH_REPS", "5")))
        return
    if sys.argv[1] == "--all":
        side_by_side(sys.argv[2], int(os.environ.get("BENCH_REPS", "5")))
        return
    uri = sys.argv[1]
    if len(sys.argv) > 2:
        os.environ["MLFLOW_TRACKING_TOKEN"] = sys.argv[2]
    stub = uri == "stub"
    if stub:
        uri = start_stub()
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
